//! The loop: wait for a trigger, capture, classify, decide, act, report.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clip_edge_runtime::store::EntryKind;
use clip_edge_runtime::{round3, Bundle, Classification, Classifier, ErrorKind};

use crate::camera::{self, FrameSource};
use crate::config::Config;
use crate::decision;
use crate::devices::Devices;
use crate::events::{Event, EventSink, RankedLabel, Timing};
use crate::notify::Notifier;
use crate::output::Pulser;
use crate::trigger::{self, monotonic_ns, Trigger, TriggerEvent, Wait};

mod remote;

/// Longest sleep of the loop, so shutdown and pulses stay responsive.
const TICK: Duration = Duration::from_millis(100);
/// Longest wait between looks at the enrolment button.
const BUTTON_POLL: Duration = Duration::from_millis(20);
/// Blinks of the output pin that confirm a stored enrolment.
const ENROLL_BLINKS: u32 = 3;
/// On and off time of each confirming blink.
const ENROLL_BLINK: Duration = Duration::from_millis(100);

/// Start-up failures: each names the file or device.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bundle, model or prompt store.
    #[error(transparent)]
    Model(#[from] clip_edge_runtime::Error),
    /// Trigger source.
    #[error(transparent)]
    Trigger(#[from] trigger::TriggerError),
    /// Camera.
    #[error(transparent)]
    Camera(#[from] camera::CameraError),
    /// Output pin.
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    /// The MQTT outbox or TLS files.
    #[error(transparent)]
    Mqtt(#[from] crate::mqtt::MqttError),
    /// Event file.
    #[error("{0}: cannot open the events file: {1}")]
    Events(std::path::PathBuf, std::io::Error),
    /// `[enroll]` is configured but the prompt store cannot be edited where it lies.
    #[error(
        "enroll: the prompt store {} cannot be edited where it lies ({source}); keep it in a writable \
         folder such as /var/lib/clip-edge (model.prompts)",
        path.display()
    )]
    StoreNotEditable {
        /// The prompt store.
        path: std::path::PathBuf,
        /// Why not.
        #[source]
        source: clip_edge_runtime::Error,
    },
}

/// Totals of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Triggers handled.
    pub events: u64,
    /// Errors reported.
    pub errors: u64,
    /// Triggers merged into handled ones.
    pub coalesced: u64,
    /// Output pulses.
    pub pulses: u64,
}

/// The daemon with its model, devices and outputs.
pub struct Daemon {
    config: Config,
    bundle: Bundle,
    clf: Classifier,
    trigger: Box<dyn Trigger>,
    camera: Box<dyn FrameSource>,
    pulser: Option<Pulser>,
    sink: EventSink,
    notifier: Notifier,
    shutdown: Arc<AtomicBool>,
    seq: u64,
    stats: Stats,
    last_accepted_ns: Option<u64>,
    carried: u64,
    button: Option<Box<dyn Trigger>>,
    store_stamp: Option<FileStamp>,
}

/// What identifies one version of the store file: atomic writes replace the
/// inode, so a changed store always differs here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    len: u64,
    mtime: Option<std::time::SystemTime>,
}

fn stamp(path: &std::path::Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp { ino: m.ino(), len: m.len(), mtime: m.modified().ok() })
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("config", &self.config.path).field("stats", &self.stats).finish()
    }
}

/// The model half of the start-up self-check: the bundle, its image encoder
/// and the prompt store (checked to belong to the model), with one frame run
/// through the model.
#[derive(Debug)]
pub struct Model {
    bundle: Bundle,
    clf: Classifier,
}

impl Model {
    /// Loads the bundle, encoder and prompt store `config` names and runs a
    /// grey frame through the model. With `[enroll]`, checks that the store
    /// can be edited where it lies ([`clip_edge_runtime::store::check_editable`]).
    pub fn load(config: &Config) -> Result<Model, StartError> {
        let bundle = Bundle::load(&config.bundle)?;
        let mut clf = Classifier::load(&bundle, config.precision, config.prompts.as_deref())?;
        if config.enroll.is_some() {
            let path = clf.store().path();
            clip_edge_runtime::store::check_editable(path)
                .map_err(|source| StartError::StoreNotEditable { path: path.to_path_buf(), source })?;
        }
        clf.encoder.set_threads(config.threads)?;
        let size = bundle.preprocess.size;
        let probe = image::RgbImage::from_pixel(size, size, image::Rgb([128, 128, 128]));
        clf.encoder.encode(&probe)?;
        Ok(Model { bundle, clf })
    }

    /// The bundle.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The encoder and the prompt store.
    pub fn classifier(&self) -> &Classifier {
        &self.clf
    }
}

impl Daemon {
    /// Starts the daemon on a loaded `model` (see [`Model::load`]) and opened
    /// `devices` (see [`Devices::open`]; tests bring their own): the end of
    /// the self-check. Writes the `ready` event; the trigger is armed by [`Daemon::run`].
    pub fn start(
        config: Config,
        model: Model,
        devices: Devices,
        sink: EventSink,
        shutdown: Arc<AtomicBool>,
    ) -> Result<Daemon, StartError> {
        let Model { bundle, clf } = model;
        let Devices { trigger, camera, pin: pulser, button, service: notifier } = devices;
        if let Some(p) = &pulser {
            for label in p.labels() {
                if !clf.store().entries().iter().any(|e| &e.label == label && e.kind == EntryKind::Class) {
                    log::warn!(
                        "output.pin.labels: '{label}' is not a class of {}",
                        clf.store().path().display()
                    );
                }
            }
        }
        let mut d = Daemon {
            bundle,
            clf,
            trigger,
            camera,
            pulser,
            sink,
            notifier,
            shutdown,
            seq: 0,
            stats: Stats::default(),
            last_accepted_ns: None,
            carried: 0,
            button: None,
            store_stamp: None,
            config,
        };
        d.store_stamp = stamp(d.clf.store().path());
        // With MQTT, `seq` continues from the outbox, so it survives restarts.
        d.seq = d.sink.mqtt().map_or(0, crate::mqtt::Mqtt::last_seq);
        d.report_store();
        let load_ms = d.clf.encoder.load_timing().total().as_secs_f64() * 1e3;
        let ready = Event::Ready {
            model: d.bundle.name.clone(),
            precision: d.clf.encoder.precision().to_string(),
            prompts: d.clf.store().path().display().to_string(),
            labels: d.clf.store().len(),
            trigger: d.trigger.describe(),
            camera: d.camera.describe(),
            load_ms: round3(load_ms),
        };
        log::info!("ready: {} on {}, {}", d.bundle.name, d.trigger.describe(), d.camera.describe());
        d.sink.emit(ready);
        d.notifier.send("READY=1");
        if let Some(b) = button {
            // A press captures frames for `enroll.class` while it is held (see [`crate::enroll`]).
            match &d.config.enroll {
                Some(e) => log::info!("enrolment button armed: {} enrols '{}'", b.describe(), e.class),
                None => log::warn!("enrolment button ignored: the configuration has no [enroll] section"),
            }
            d.button = Some(b);
        }
        Ok(d)
    }

    /// Events written so far (memory sinks only).
    pub fn events(&self) -> Vec<Event> {
        self.sink.kept()
    }

    /// Runs until the trigger source ends, a signal arrives, or `max_events` triggers were handled.
    pub fn run(&mut self, max_events: Option<u64>) -> Stats {
        let reason = loop {
            if self.shutdown.load(Ordering::Relaxed) {
                break "signal".to_string();
            }
            if max_events.is_some_and(|m| self.stats.events + self.stats.errors >= m) {
                break format!("--max-events {} reached", max_events.unwrap_or_default());
            }
            let now = Instant::now();
            self.service_pin(now);
            self.notifier.ping_if_due();
            let mut timeout = TICK;
            if let Some(deadline) = self.pulser.as_ref().and_then(Pulser::deadline) {
                timeout = timeout.min(deadline.saturating_duration_since(now));
            }
            if let Some(i) = self.notifier.interval() {
                timeout = timeout.min(i);
            }
            if self.button.is_some() {
                timeout = timeout.min(BUTTON_POLL);
                self.poll_button();
            }
            self.poll_commands();
            match self.trigger.wait(timeout) {
                Ok(Wait::Timeout) => {}
                Ok(Wait::Ended) => break "trigger source ended".to_string(),
                Ok(Wait::Event(ev)) => self.on_trigger(ev),
                Err(e) => {
                    self.error(None, "trigger", e.to_string());
                    break format!("trigger failed: {e}");
                }
            }
        };
        self.notifier.send("STOPPING=1");
        if let Some(p) = &mut self.pulser {
            if let Err(e) = p.release() {
                log::error!("{e}");
            }
            self.stats.pulses = p.pulses();
        }
        log::info!("stopping: {reason}");
        self.sink.emit(Event::Stopped {
            events: self.stats.events,
            errors: self.stats.errors,
            coalesced: self.stats.coalesced,
            reason,
        });
        self.stats
    }

    fn service_pin(&mut self, now: Instant) {
        let result = self.pulser.as_mut().map(|p| p.poll(now));
        if let Some(Err(e)) = result {
            self.error(None, "output", e.to_string());
        }
    }

    fn on_trigger(&mut self, ev: TriggerEvent) {
        let pending = match self.trigger.drain() {
            Ok(n) => n,
            Err(e) => {
                self.error(Some(ev.ts_ns), "trigger", e.to_string());
                0
            }
        };
        let cooldown = self.config.trigger.cooldown.as_nanos() as u64;
        if let Some(last) = self.last_accepted_ns {
            if cooldown > 0 && ev.ts_ns.saturating_sub(last) < cooldown {
                self.carried += 1 + pending;
                return;
            }
        }
        self.last_accepted_ns = Some(ev.ts_ns);
        let coalesced = pending + std::mem::take(&mut self.carried);
        self.stats.coalesced += coalesced;
        self.handle(ev, coalesced);
    }

    /// Swaps in the prompt store if its file changed since it was loaded (an
    /// enrolment, or a new store copied over). A store that fails to load or
    /// belongs to another model is reported and the loaded one is kept.
    fn refresh_store(&mut self) {
        let path = self.clf.store().path().to_path_buf();
        let now = stamp(&path);
        if now == self.store_stamp {
            return;
        }
        self.store_stamp = now;
        let clf = &mut self.clf;
        let loaded = clip_edge_runtime::PromptStore::open(&path).and_then(|s| {
            let (labels, shots) = (s.len(), s.shots().len());
            clf.replace_store(s).map(|()| (labels, shots))
        });
        match loaded {
            Ok((labels, shots)) => {
                log::info!("prompt store reloaded: {} ({labels} labels, {shots} shots)", path.display());
                self.report_store();
                self.sink.emit(Event::Store {
                    prompts: path.display().to_string(),
                    labels,
                    shots,
                    reason: "changed on disk",
                });
            }
            Err(e) => self.error(None, "store", format!("{e}; keeping the store loaded before")),
        }
    }

    /// Tells the MQTT side the store's classes and a fingerprint of its file.
    fn report_store(&self) {
        let Some(m) = self.sink.mqtt() else { return };
        let store = self.clf.store();
        let classes =
            store.entries().iter().filter(|e| e.kind == EntryKind::Class).map(|e| e.label.clone()).collect();
        let fingerprint = std::fs::read(store.path())
            .map(|b| format!("{:08x}-{}", crc32fast::hash(&b), b.len()))
            .unwrap_or_default();
        m.store_changed(classes, fingerprint);
    }

    fn poll_button(&mut self) {
        let Some(button) = self.button.as_mut() else { return };
        let pressed = match button.wait(Duration::ZERO) {
            Ok(Wait::Event(ev)) => Some(ev),
            Ok(Wait::Timeout) => None,
            Ok(Wait::Ended) => {
                log::info!("enrolment button source ended");
                self.button = None;
                None
            }
            Err(e) => {
                self.button = None;
                self.error(None, "trigger", format!("enrolment button disabled: {e}"));
                None
            }
        };
        if let Some(ev) = pressed {
            self.enroll(ev);
        }
    }

    fn enroll(&mut self, ev: TriggerEvent) {
        let Some(cfg) = self.config.enroll.clone() else { return };
        let Some(mut button) = self.button.take() else { return };
        let (camera, encoder, notifier) = (&mut self.camera, &mut self.clf.encoder, &mut self.notifier);
        let captured = crate::enroll::capture(
            &cfg.class,
            &mut || camera.capture(),
            encoder,
            cfg.frames,
            cfg.interval,
            &mut || button.is_active().ok().flatten() != Some(false),
            &mut || notifier.ping_if_due(),
        );
        // Edges that came while capturing (the release, bounces) end this
        // enrolment; they must not start another.
        let _ = button.drain();
        self.button = Some(button);
        let path = self.clf.store().path().to_path_buf();
        let result = captured.and_then(|shots| {
            crate::enroll::save(&path, &self.bundle, &cfg.class, &shots).map(|done| (done, shots.len()))
        });
        match result {
            Ok((done, frames)) => {
                self.seq += 1;
                log::info!("enrolled {done}");
                self.sink.emit(Event::Enrolled {
                    seq: self.seq,
                    trigger_ts_ns: ev.ts_ns,
                    class: done.class.clone(),
                    frames: frames as u32,
                    replaced: done.replaced as u32,
                    new_class: done.new_class,
                    class_shots: done.class_shots as u32,
                    store_shots: done.store_shots as u32,
                    store_bytes: done.file_len,
                });
                self.notifier.ping_if_due();
                if let Some(p) = &mut self.pulser {
                    if let Err(e) = p.blink(ENROLL_BLINKS, ENROLL_BLINK) {
                        self.error(Some(ev.ts_ns), "output", e.to_string());
                    }
                }
                self.notifier.ping_if_due();
                self.refresh_store();
            }
            Err(e) => {
                let kind = match &e {
                    crate::enroll::EnrollError::Camera { .. } => "camera",
                    crate::enroll::EnrollError::Model { .. } => "model",
                    crate::enroll::EnrollError::Store { .. } => "store",
                };
                self.error(Some(ev.ts_ns), kind, e.to_string());
            }
        }
    }

    fn handle(&mut self, ev: TriggerEvent, coalesced: u64) {
        self.refresh_store();
        let burst = self.config.decision.burst;
        let mut timing = Timing::default();
        let mut frames = Vec::with_capacity(burst as usize);
        let mut last: Option<Classification> = None;
        let mut images = Vec::new();
        for i in 0..burst {
            self.notifier.ping_if_due();
            let frame = match self.camera.capture() {
                Ok(f) => f,
                Err(e) => return self.error(Some(ev.ts_ns), "camera", e.to_string()),
            };
            if i == 0 {
                timing.trigger_to_frame = ms_since_ns(ev.ts_ns);
            }
            timing.decode += frame.decode.as_secs_f64() * 1e3;
            let (emb, t) = match self.clf.encoder.encode_timed(&frame.image) {
                Ok(x) => x,
                Err(e) => return self.error(Some(ev.ts_ns), kind_of(&e), e.to_string()),
            };
            timing.preprocess += t.preprocess.as_secs_f64() * 1e3;
            timing.infer += t.infer.as_secs_f64() * 1e3;
            let t0 = Instant::now();
            let c = match self.clf.score(&emb, self.config.decision.top, &self.config.decision.rule) {
                Ok(c) => c,
                Err(e) => return self.error(Some(ev.ts_ns), kind_of(&e), e.to_string()),
            };
            frames.push(c.decision);
            if self.sink.mqtt().is_some() {
                images.push(frame.image);
            }
            timing.decide += t0.elapsed().as_secs_f64() * 1e3;
            last = Some(c);
        }
        let t0 = Instant::now();
        let Some(last) = last else { return };
        let outcome = decision::vote(&frames, self.config.decision.agree);
        let (decision, n_votes) = (outcome.verdict(), outcome.votes());
        let label = outcome.index().map(|i| self.clf.label(i).to_string());
        let mut fired = false;
        if let (Some(l), Some(p)) = (&label, self.pulser.as_mut()) {
            if p.fires_for(l) {
                match p.start(Instant::now()) {
                    Ok(()) => fired = true,
                    Err(e) => self.error(Some(ev.ts_ns), "output", e.to_string()),
                }
            }
        }
        timing.decide += t0.elapsed().as_secs_f64() * 1e3;
        timing.total = ms_since_ns(ev.ts_ns);
        if let (Some(m), Some(l), Some(i)) = (self.sink.mqtt(), &label, outcome.index()) {
            // The decisive frame: the last one that voted for the label.
            let decisive = frames.iter().rposition(|d| *d == clip_edge_runtime::Decision::Match(i));
            if let Some(img) = decisive.and_then(|k| images.get(k)) {
                m.snapshot(l, img);
            }
        }
        let top = last
            .top
            .iter()
            .map(|r| RankedLabel {
                label: self.clf.label(r.index).to_string(),
                kind: match self.clf.store().entries()[r.index].kind {
                    EntryKind::Class => "class",
                    EntryKind::Background => "background",
                },
                score: r.score,
                similarity: r.similarity,
            })
            .collect();
        self.seq += 1;
        self.stats.events += 1;
        log::info!(
            "event {}: {decision}{} ({:.0} ms, {coalesced} coalesced)",
            self.seq,
            label.as_deref().map(|l| format!(" {l}")).unwrap_or_default(),
            timing.total
        );
        self.sink.emit(Event::Event {
            seq: self.seq,
            trigger_ts_ns: ev.ts_ns,
            decision,
            label,
            score: last.top[0].score,
            similarity: last.top[0].similarity,
            top,
            timing_ms: round_timing(timing),
            coalesced,
            frames: burst,
            votes: n_votes,
            output: fired,
        });
    }

    fn error(&mut self, trigger_ts_ns: Option<u64>, kind: &'static str, message: String) {
        self.seq += 1;
        self.stats.errors += 1;
        log::error!("{kind}: {message}");
        self.sink.emit(Event::Error { seq: self.seq, trigger_ts_ns, kind, message });
    }
}

fn kind_of(e: &clip_edge_runtime::Error) -> &'static str {
    match e.kind() {
        ErrorKind::Store => "store",
        _ => "model",
    }
}

fn ms_since_ns(ts_ns: u64) -> f64 {
    monotonic_ns().saturating_sub(ts_ns) as f64 / 1e6
}

fn round_timing(t: Timing) -> Timing {
    let r = round3;
    Timing {
        trigger_to_frame: r(t.trigger_to_frame),
        decode: r(t.decode),
        preprocess: r(t.preprocess),
        infer: r(t.infer),
        decide: r(t.decide),
        total: r(t.total),
    }
}
