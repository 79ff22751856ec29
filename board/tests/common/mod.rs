//! Shared helpers for the board's integration tests.
#![allow(dead_code)]

pub mod broker;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clip_edge_board::camera::Supervised;
use clip_edge_board::events::EventSink;
use clip_edge_board::notify::Notifier;
use clip_edge_board::output::{Pulser, SimPin};
use clip_edge_board::trigger::SimTrigger;
use clip_edge_board::{Config, Daemon, Devices, Model, StartError};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("root").to_path_buf()
}

/// A configuration on the emoji model with a replay camera over `frames`.
pub fn config(frames: &Path, extra: &str) -> Config {
    let text = format!(
        r#"
[model]
bundle = "{bundle}"
[trigger]
source = "stdin"
[camera]
source = "replay"
folder = "{frames}"
[output.pin]
simulated = true
line = 5
pulse_ms = 50
{extra}
"#,
        bundle = root().join("models/emoji").display(),
        frames = frames.display(),
    );
    Config::parse(Path::new("/test/config.toml"), &text).expect("valid test config")
}

/// A folder with copies of the RGB test images.
pub fn frames() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    for name in ["checker_224x224.png", "grey_50x77.png", "noise_100x333.png", "scene_640x480.png"] {
        std::fs::copy(root().join("tests/data/images").join(name), dir.path().join(name)).expect("copy");
    }
    dir
}

/// Starts a daemon on `config`'s model with the test's `trigger` and
/// enrolment `button`, the replay camera `config` names (supervised, as
/// [`Devices::open`] opens it) and a simulated pin, returned for watching.
pub fn start(
    config: Config,
    trigger: SimTrigger,
    button: Option<SimTrigger>,
    sink: EventSink,
) -> Result<(Daemon, SimPin), StartError> {
    start_notifying(config, trigger, button, sink, Notifier::none())
}

/// [`start`], telling `service` what systemd would be told.
pub fn start_notifying(
    config: Config,
    trigger: SimTrigger,
    button: Option<SimTrigger>,
    sink: EventSink,
    service: Notifier,
) -> Result<(Daemon, SimPin), StartError> {
    let model = Model::load(&config)?;
    let pin_config = config.pin.as_ref().expect("the test config has a pin");
    let pin = SimPin::new(pin_config.line);
    let devices = Devices {
        trigger: Box::new(trigger),
        camera: Box::new(Supervised::open(&config.camera, 2 * model.bundle().preprocess.size)?),
        pin: Some(Pulser::with_pin(pin_config, Box::new(pin.clone()))?),
        button: button.map(|b| Box::new(b) as _),
        service,
    };
    Ok((Daemon::start(config, model, devices, sink, Arc::default())?, pin))
}
