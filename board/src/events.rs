//! JSON-lines events (schema in `docs/events.md`), written to stdout and/or a file.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::decision::Verdict;

/// One ranked label of an event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankedLabel {
    /// The label.
    pub label: String,
    /// `class` or `background`.
    pub kind: &'static str,
    /// Softmax probability.
    pub score: f32,
    /// Cosine similarity.
    pub similarity: f32,
}

/// Stage timings of one event, in milliseconds (summed over a burst).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timing {
    /// From the trigger's timestamp to the first frame in hand.
    pub trigger_to_frame: f64,
    /// Frame decoding.
    pub decode: f64,
    /// Resize, crop, normalise.
    pub preprocess: f64,
    /// Image encoder.
    pub infer: f64,
    /// Scoring and the decision.
    pub decide: f64,
    /// From the trigger's timestamp to the decision.
    pub total: f64,
}

/// Everything the daemon reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    /// The daemon passed its self-check and armed the trigger.
    Ready {
        /// Bundle name.
        model: String,
        /// Encoder precision.
        precision: String,
        /// Prompt store file.
        prompts: String,
        /// Number of labels.
        labels: usize,
        /// Trigger description.
        trigger: String,
        /// Camera description.
        camera: String,
        /// Model load time.
        load_ms: f64,
    },
    /// A trigger was handled.
    Event {
        /// Sequence number (shared with errors).
        seq: u64,
        /// CLOCK_MONOTONIC ns of the trigger (the kernel's for GPIO).
        trigger_ts_ns: u64,
        /// `match`, `unknown` or `background`.
        decision: Verdict,
        /// The matched label; null unless `decision` is `match`.
        label: Option<String>,
        /// Top score (softmax probability).
        score: f32,
        /// Top cosine similarity.
        similarity: f32,
        /// Best labels of the last frame, best first.
        top: Vec<RankedLabel>,
        /// Stage timings.
        timing_ms: Timing,
        /// Triggers merged into this event (arrived while busy, or within the cooldown).
        coalesced: u64,
        /// Frames classified for this event.
        frames: u32,
        /// Frames that voted for the reported label.
        votes: u32,
        /// Whether the output pin was pulsed.
        output: bool,
    },
    /// Something failed; the daemon carries on where it can.
    Error {
        /// Sequence number.
        seq: u64,
        /// The trigger it concerned, if any.
        trigger_ts_ns: Option<u64>,
        /// `camera`, `trigger`, `model`, `store` or `output`.
        kind: &'static str,
        /// One line naming the device or file.
        message: String,
    },
    /// Frames captured with the enrolment button were stored as shots.
    Enrolled {
        /// Sequence number (shared with events and errors).
        seq: u64,
        /// CLOCK_MONOTONIC ns of the button press.
        trigger_ts_ns: u64,
        /// The class enrolled.
        class: String,
        /// Frames captured and stored.
        frames: u32,
        /// Older shots of the class replaced (per-class cap).
        replaced: u32,
        /// Whether the class was created (image-only) by this enrolment.
        new_class: bool,
        /// Shots the class holds now.
        class_shots: u32,
        /// Shots the store holds now.
        store_shots: u32,
        /// Size of the store file now.
        store_bytes: u64,
    },
    /// The prompt store file changed and was reloaded without a restart.
    Store {
        /// The store file.
        prompts: String,
        /// Labels now.
        labels: usize,
        /// Shots now.
        shots: usize,
        /// Why it was reloaded.
        reason: &'static str,
    },
    /// The daemon stopped.
    Stopped {
        /// Events handled.
        events: u64,
        /// Errors reported.
        errors: u64,
        /// Triggers coalesced in total.
        coalesced: u64,
        /// Why it stopped.
        reason: String,
    },
}

/// Events kept in memory by a sink, shared with whoever watches them (tests,
/// or a program that embeds the daemon and reads its events from another thread).
pub type SharedEvents = std::sync::Arc<std::sync::Mutex<Vec<Event>>>;

/// Writes events as JSON lines, flushing each one.
pub struct EventSink {
    stdout: bool,
    file: Option<std::fs::File>,
    memory: Option<SharedEvents>,
    mqtt: Option<crate::mqtt::Mqtt>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink").field("stdout", &self.stdout).finish_non_exhaustive()
    }
}

impl EventSink {
    /// A sink to stdout and/or `file` (appended, created if missing).
    pub fn open(stdout: bool, file: Option<&Path>) -> std::io::Result<EventSink> {
        let file = file.map(|p| std::fs::OpenOptions::new().create(true).append(true).open(p)).transpose()?;
        Ok(EventSink { stdout, file, memory: None, mqtt: None })
    }

    /// A sink that keeps events in memory (tests).
    pub fn memory() -> EventSink {
        Self::memory_shared().0
    }

    /// A memory sink and a handle on its events that another thread can watch.
    pub fn memory_shared() -> (EventSink, SharedEvents) {
        let shared = SharedEvents::default();
        (EventSink { stdout: false, file: None, memory: Some(shared.clone()), mqtt: None }, shared)
    }

    /// The same sink, also reporting to an MQTT broker.
    pub fn with_mqtt(mut self, mqtt: crate::mqtt::Mqtt) -> EventSink {
        self.mqtt = Some(mqtt);
        self
    }

    /// The MQTT side, if any.
    pub fn mqtt(&self) -> Option<&crate::mqtt::Mqtt> {
        self.mqtt.as_ref()
    }

    /// A copy of the events kept by a memory sink (none for other sinks).
    pub fn kept(&self) -> Vec<Event> {
        self.memory.as_ref().map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).clone()).unwrap_or_default()
    }

    /// Writes one event. A write failure is logged, never fatal.
    pub fn emit(&mut self, event: Event) {
        let line = match serde_json::to_string(&event) {
            Ok(l) => l,
            Err(e) => return log::error!("cannot serialise event: {e}"),
        };
        // The outbox first: once an event is anywhere, it is owed to the broker.
        if let Some(m) = &self.mqtt {
            m.event(&event);
        }
        if self.stdout {
            if let Err(e) = clip_edge_runtime::process::print_line(&line) {
                log::error!("cannot write events to stdout: {e}");
            }
        }
        if let Some(f) = &mut self.file {
            if let Err(e) = writeln!(f, "{line}") {
                log::error!("cannot append event to file: {e}");
            }
        }
        if let Some(m) = &self.memory {
            m.lock().unwrap_or_else(|e| e.into_inner()).push(event);
        }
    }
}
