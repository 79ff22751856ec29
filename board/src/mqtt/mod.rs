//! Events to an MQTT broker (`docs/mqtt.md`): at least once, through an
//! on-flash outbox, with snapshots, stats and Home Assistant discovery.
//!
//! The daemon's thread appends each event to the [`outbox`] (synced) and, when
//! the link is up and the event is next in line, hands it straight to the
//! client; the worker thread ([`worker`]) drives the connection, replays what
//! is owed after a reconnect, trims the outbox on acknowledgements, and
//! publishes everything else (state, snapshots, stats, discovery). A broker
//! that is down or refuses us never stops classification.

pub mod command;
pub mod discovery;
pub mod outbox;
mod worker;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rumqttc::{Client, QoS};
use serde::Serialize;

use crate::config::MqttConfig;
use crate::events::Event;
use outbox::{Outbox, OutboxError};

/// Events in flight to the broker at once.
const WINDOW: usize = 64;
/// Latency samples kept for the stats percentiles.
const LATENCIES: usize = 1000;
/// Longest a stopping daemon waits for the broker to take what is owed.
const DRAIN: Duration = Duration::from_secs(5);

/// Starting the MQTT side failed: the outbox or a TLS file.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The outbox.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// A TLS file that cannot be read or holds no usable certificate or key.
    #[error("mqtt: {}: {message}", path.display())]
    Tls {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The commands' state file.
    #[error("mqtt.commands: {0}")]
    Commands(String),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a publish is, so the broker's acknowledgement can be matched to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Event(u64),
    Other,
}

/// The client side of the connection. Requests reach rumqttc's channel in
/// the order they are made under this lock, which is the order it reports
/// them as sent: so `fifo` pairs each sent packet id with its tag.
#[derive(Default)]
struct Link {
    client: Option<Client>,
    connected: bool,
    fifo: VecDeque<Tag>,
    inflight: BTreeMap<u16, u64>,
    /// The last event handed to the client.
    cursor: u64,
}

impl Link {
    fn send(&mut self, topic: &str, qos: QoS, retain: bool, payload: Vec<u8>, tag: Tag) -> bool {
        let Some(c) = &self.client else { return false };
        match c.try_publish(topic, qos, retain, payload) {
            Ok(()) => {
                self.fifo.push_back(tag);
                true
            }
            Err(e) => {
                log::debug!("mqtt: {topic} not queued: {e}");
                false
            }
        }
    }

    fn busy(&self) -> usize {
        self.fifo.len() + self.inflight.len()
    }
}

/// Counters for `<prefix>/stats`.
#[derive(Default)]
struct Counters {
    events: u64,
    errors: u64,
    coalesced: u64,
    latencies: VecDeque<f64>,
    reconnects: u64,
}

/// What waits for the worker to publish, newest wins.
#[derive(Default)]
struct Pending {
    state: Option<Vec<u8>>,
    detected: BTreeMap<String, Instant>,
    snapshots: BTreeMap<String, image::RgbImage>,
    store: Option<(Vec<String>, String)>,
    commands: VecDeque<command::Admitted>,
    replies: Vec<Vec<u8>>,
}

struct Shared {
    cfg: MqttConfig,
    model: String,
    output_labels: Vec<String>,
    started: Instant,
    tls: Option<Arc<rustls::ClientConfig>>,
    link: Mutex<Link>,
    outbox: Mutex<Outbox>,
    pending: Mutex<Pending>,
    counters: Mutex<Counters>,
    gate: Option<Mutex<command::Gate>>,
    stop: AtomicBool,
}

impl Shared {
    fn topic(&self, leaf: &str) -> String {
        format!("{}/{leaf}", self.cfg.prefix)
    }

    /// Queues a reply on `<prefix>/cmd/result`.
    fn reply(
        &self,
        id: Option<&str>,
        cmd: Option<serde_json::Value>,
        result: Result<serde_json::Value, String>,
    ) {
        let mut v =
            serde_json::json!({ "device": self.cfg.device, "id": id, "cmd": cmd, "ok": result.is_ok() });
        match result {
            Ok(serde_json::Value::Object(details)) => {
                if let Some(o) = v.as_object_mut() {
                    o.extend(details);
                }
            }
            Ok(_) => {}
            Err(e) => {
                log::warn!("mqtt: command {} refused: {e}", id.unwrap_or("(unsigned)"));
                v["error"] = e.into();
            }
        }
        lock(&self.pending).replies.push(serde_json::to_vec(&v).unwrap_or_default());
    }

    /// Hands owed events to the client, in order, while the window has room.
    fn pump(&self) {
        let mut link = lock(&self.link);
        if !link.connected {
            return;
        }
        let outbox = lock(&self.outbox);
        let topic = self.topic("event");
        while link.busy() < WINDOW {
            let Some(r) = outbox.next_after(link.cursor) else { break };
            let (seq, payload) = (r.seq, r.payload.clone());
            if !link.send(&topic, QoS::AtLeastOnce, false, payload, Tag::Event(seq)) {
                break;
            }
            link.cursor = seq;
        }
    }
}

/// An event as published: the `docs/events.md` object with the board's name.
#[derive(Serialize)]
struct Published<'a> {
    device: &'a str,
    #[serde(flatten)]
    event: &'a Event,
}

/// The MQTT side of a running daemon.
pub struct Mqtt {
    shared: Arc<Shared>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Mqtt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mqtt").field("prefix", &self.shared.cfg.prefix).finish_non_exhaustive()
    }
}

/// The self-check's part: the TLS files load (the outbox belongs to the
/// running daemon and is not opened).
pub fn check_files(cfg: &MqttConfig) -> Result<(), MqttError> {
    cfg.broker.tls.as_ref().map(worker::tls_config).transpose().map(|_| ())
}

impl Mqtt {
    /// Opens the outbox and the TLS files and starts the worker, which
    /// connects in the background. `output_labels` are the labels that get a
    /// binary sensor and a camera in Home Assistant (empty: every class).
    pub fn start(cfg: &MqttConfig, model: &str, output_labels: &[String]) -> Result<Mqtt, MqttError> {
        let outbox = Outbox::open(&cfg.outbox, cfg.outbox_max_bytes)?;
        let tls = cfg.broker.tls.as_ref().map(worker::tls_config).transpose()?;
        let gate = cfg
            .commands
            .as_ref()
            .map(|c| command::Gate::open(c, &cfg.device).map(Mutex::new))
            .transpose()
            .map_err(MqttError::Commands)?;
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            model: model.to_string(),
            output_labels: output_labels.to_vec(),
            started: Instant::now(),
            tls,
            link: Mutex::default(),
            outbox: Mutex::new(outbox),
            pending: Mutex::default(),
            counters: Mutex::default(),
            gate,
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let worker = std::thread::Builder::new()
            .name("mqtt".into())
            .spawn(move || worker::run(&s))
            .map_err(|e| OutboxError::Io { path: cfg.outbox.clone(), source: e })?;
        log::info!(
            "mqtt: reporting to {}:{} as '{}' under {} (outbox {})",
            cfg.broker.host,
            cfg.broker.port,
            cfg.device,
            cfg.prefix,
            cfg.outbox.display()
        );
        Ok(Mqtt { shared, worker: Some(worker) })
    }

    /// The last sequence number used on this board (events continue after it).
    pub fn last_seq(&self) -> u64 {
        lock(&self.shared.outbox).last_seq()
    }

    /// Reports one event: those with a sequence number go through the
    /// outbox to `<prefix>/event`; a handled trigger also updates the state
    /// and, on a match, the label's binary sensor. An outbox that cannot be
    /// written is logged (the local event file still has the event).
    pub fn event(&self, event: &Event) {
        let seq = match event {
            Event::Event { seq, .. } | Event::Error { seq, .. } | Event::Enrolled { seq, .. } => *seq,
            _ => return,
        };
        self.count(event);
        let published = Published { device: &self.shared.cfg.device, event };
        let payload = match serde_json::to_vec(&published) {
            Ok(p) => p,
            Err(e) => return log::error!("mqtt: cannot serialise event {seq}: {e}"),
        };
        if let Err(e) = lock(&self.shared.outbox).append(seq, &payload) {
            log::error!("mqtt: event {seq} not stored for the broker: {e}");
        }
        self.shared.pump();
    }

    fn count(&self, event: &Event) {
        let mut c = lock(&self.shared.counters);
        match event {
            Event::Event {
                seq,
                decision,
                label,
                score,
                similarity,
                timing_ms,
                coalesced,
                trigger_ts_ns,
                ..
            } => {
                c.events += 1;
                c.coalesced += coalesced;
                c.latencies.push_back(timing_ms.total);
                if c.latencies.len() > LATENCIES {
                    c.latencies.pop_front();
                }
                let state = serde_json::json!({
                    "seq": seq, "decision": decision, "label": label, "score": score,
                    "similarity": similarity, "trigger_ts_ns": trigger_ts_ns,
                });
                let mut p = lock(&self.shared.pending);
                p.state = serde_json::to_vec(&state).ok();
                if let Some(l) = label {
                    p.detected.insert(l.clone(), Instant::now());
                }
            }
            Event::Error { .. } => c.errors += 1,
            _ => {}
        }
    }

    /// The decisive frame of a match, published (retained, as JPEG) on
    /// `<prefix>/<label>/snapshot` by the worker.
    pub fn snapshot(&self, label: &str, frame: &image::RgbImage) {
        if self.shared.cfg.snapshot_max_bytes > 0 {
            lock(&self.shared.pending).snapshots.insert(label.to_string(), frame.clone());
        }
    }

    /// The store's classes and fingerprint, at start and after a reload.
    pub fn store_changed(&self, classes: Vec<String>, fingerprint: String) {
        lock(&self.shared.pending).store = Some((classes, fingerprint));
    }

    /// The next fleet command that passed the gate, for the daemon to run.
    pub fn take_command(&self) -> Option<command::Admitted> {
        lock(&self.shared.pending).commands.pop_front()
    }

    /// Replies to a command on `<prefix>/cmd/result`: `ok` with `details`
    /// merged in, or the error.
    pub fn reply(&self, cmd: &command::Admitted, result: Result<serde_json::Value, String>) {
        let action = serde_json::to_value(&cmd.header.action).ok();
        let name = action.as_ref().and_then(|a| a.get("cmd")).cloned();
        self.shared.reply(Some(&cmd.header.id), name, result);
    }

    /// Bytes in the outbox now and at most since start, and events owed.
    pub fn outbox_usage(&self) -> (u64, u64, usize) {
        let o = lock(&self.shared.outbox);
        (o.file_len(), o.peak_len(), o.owed())
    }
}

impl Drop for Mqtt {
    /// Gives the broker up to five seconds to take what is owed, publishes
    /// `offline` and disconnects.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.worker.take() {
            if w.join().is_err() {
                log::error!("mqtt: the worker thread panicked");
            }
        }
    }
}
