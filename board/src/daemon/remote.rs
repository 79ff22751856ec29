//! Fleet commands the MQTT gate admitted (`docs/mqtt.md`), run on the
//! daemon's thread between triggers.

use std::time::Duration;

use clip_edge_runtime::signed::Action;
use clip_edge_runtime::PromptStore;
use serde_json::{json, Value};

use super::Daemon;
use crate::mqtt::command::Admitted;

impl Daemon {
    /// Runs the next admitted command, if any, and replies.
    pub(super) fn poll_commands(&mut self) {
        let Some(cmd) = self.sink.mqtt().and_then(crate::mqtt::Mqtt::take_command) else { return };
        let result = match &cmd.header.action {
            Action::Reload => self.reload_store("reload command"),
            Action::Enroll { class, frames } => self.enroll_remote(class, *frames),
            Action::Store => self.install_store(&cmd),
        };
        if let Some(m) = self.sink.mqtt() {
            m.reply(&cmd, result);
        }
    }

    /// Reloads the store from flash now.
    fn reload_store(&mut self, reason: &'static str) -> Result<Value, String> {
        let path = self.clf.store().path().to_path_buf();
        let store = PromptStore::open(&path).map_err(|e| e.to_string())?;
        let (labels, shots) = (store.len(), store.shots().len());
        self.clf.replace_store(store).map_err(|e| e.to_string())?;
        self.store_stamp = super::stamp(&path);
        self.report_store();
        log::info!("prompt store reloaded ({reason}): {} ({labels} labels, {shots} shots)", path.display());
        self.sink.emit(crate::events::Event::Store {
            prompts: path.display().to_string(),
            labels,
            shots,
            reason,
        });
        Ok(json!({ "labels": labels, "shots": shots }))
    }

    /// A pushed store: checked (format, CRC, this model) in memory, then
    /// written over the store atomically and loaded. A refused store changes nothing.
    fn install_store(&mut self, cmd: &Admitted) -> Result<Value, String> {
        let path = self.clf.store().path().to_path_buf();
        let store =
            PromptStore::from_bytes(&path, &cmd.body).map_err(|e| format!("pushed store refused: {e}"))?;
        self.clf.check_store(&store).map_err(|e| format!("pushed store refused: {e}"))?;
        clip_edge_runtime::store::write_atomic(&path, &cmd.body).map_err(|e| e.to_string())?;
        self.reload_store("pushed over MQTT")
    }

    /// Captures `frames` frames now and stores them as shots of `class`.
    fn enroll_remote(&mut self, class: &str, frames: u32) -> Result<Value, String> {
        let frames = frames.clamp(1, crate::config::MAX_ENROLL_FRAMES);
        let interval = self.config.enroll.as_ref().map_or(Duration::from_millis(200), |e| e.interval);
        let (camera, encoder, notifier) = (&mut self.camera, &mut self.clf.encoder, &mut self.notifier);
        let shots = crate::enroll::capture(
            class,
            &mut || camera.capture(),
            encoder,
            frames,
            interval,
            &mut || true,
            &mut || notifier.ping_if_due(),
        )
        .map_err(|e| e.to_string())?;
        let path = self.clf.store().path().to_path_buf();
        let done = crate::enroll::save(&path, &self.bundle, class, &shots).map_err(|e| e.to_string())?;
        self.reload_store("enrol command")?;
        Ok(
            json!({ "class": class, "frames": shots.len(), "class_shots": done.class_shots, "store_shots": done.store_shots }),
        )
    }
}
