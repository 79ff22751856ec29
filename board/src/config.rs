//! The daemon's configuration (TOML), parsed once into a validated [`Config`].
//!
//! The file's layout is declared with serde: tagged enums for the trigger and
//! camera sources (`source = "..."`), unknown keys refused, so a key that does
//! not apply to the chosen source is an error naming it. [`Config::parse`]
//! adds what serde cannot say: ranges, cross-field rules, and relative paths
//! resolved against the configuration file's folder, so a config and the
//! bundle it names can move together. See `board/examples/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clip_edge_runtime::toml_error::TomlErrorAt;
use clip_edge_runtime::{DecisionRule, Precision};
use serde::{Deserialize, Deserializer};

mod mqtt;
pub use mqtt::{Broker, Commands, Discovery, MqttConfig, TlsFiles};

/// A configuration error, naming the file and the key (and for what the
/// TOML reader found, the line and column).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// The configuration file.
    pub path: PathBuf,
    /// What is wrong, naming the key.
    pub message: String,
}

/// Which edges of a GPIO line trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Edge {
    /// Inactive to active.
    #[default]
    Rising,
    /// Active to inactive.
    Falling,
    /// Both.
    Both,
}

/// Pull resistor of an input line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bias {
    /// Leave as configured.
    #[default]
    AsIs,
    /// No pull.
    Disabled,
    /// Pull up.
    PullUp,
    /// Pull down.
    PullDown,
}

/// Where triggers come from (`source = "gpio" | "interval" | "stdin" | "fifo"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase", deny_unknown_fields)]
pub enum TriggerSource {
    /// A GPIO line through the Linux character device (uAPI v2).
    Gpio {
        /// Chip device, e.g. `/dev/gpiochip0`.
        chip: PathBuf,
        /// Line offset on the chip.
        line: u32,
        /// Edges that trigger (default rising).
        #[serde(default)]
        edge: Edge,
        /// Pull resistor (default as-is).
        #[serde(default)]
        bias: Bias,
        /// Kernel debounce period (zero: none).
        #[serde(rename = "debounce_ms", default, deserialize_with = "millis")]
        debounce: Duration,
        /// Line is active-low.
        #[serde(default)]
        active_low: bool,
    },
    /// A trigger every `period`, `count` times (0: forever).
    Interval {
        /// Time between triggers.
        #[serde(rename = "period_ms", deserialize_with = "millis")]
        period: Duration,
        /// Number of triggers, 0 for no limit.
        #[serde(default)]
        count: u64,
    },
    /// One trigger per line read from standard input.
    Stdin {},
    /// One trigger per line written to a FIFO (created if missing).
    Fifo {
        /// The FIFO's path.
        path: PathBuf,
    },
}

/// Trigger settings: `[trigger]`, the source's keys and `cooldown_ms`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TriggerConfig {
    /// The source.
    #[serde(flatten)]
    pub source: TriggerSource,
    /// Triggers within this time after an accepted one are merged into it.
    #[serde(rename = "cooldown_ms", default, deserialize_with = "millis")]
    pub cooldown: Duration,
}

/// Camera pixel format to negotiate: the runtime's `frame::CameraFormat`, which decodes it.
pub use clip_edge_runtime::frame::CameraFormat as PixelFormat;

/// [`PixelFormat`]'s names in the file.
#[derive(Deserialize)]
#[serde(remote = "PixelFormat", rename_all = "lowercase")]
enum PixelFormatName {
    Mjpeg,
    Yuyv,
}

/// Where frames come from (`source = "v4l2" | "replay"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase", deny_unknown_fields)]
pub enum CameraConfig {
    /// A V4L2 device.
    V4l2 {
        /// Device node (default `/dev/video0`).
        #[serde(default = "default_video")]
        device: PathBuf,
        /// Pixel format (default mjpeg).
        #[serde(with = "PixelFormatName", default = "default_format")]
        format: PixelFormat,
        /// Requested width (default 640).
        #[serde(default = "int::<640>")]
        width: u32,
        /// Requested height (default 480).
        #[serde(default = "int::<480>")]
        height: u32,
        /// Frames to drop after a trigger so the frame is from after it (default 2).
        #[serde(default = "int::<2>")]
        skip_frames: u32,
        /// How long to wait for a frame (default 2 s, at most 10 s: one wait
        /// must stay well inside the service's `WatchdogSec`).
        #[serde(rename = "timeout_ms", default = "ms::<2000>", deserialize_with = "millis")]
        timeout: Duration,
    },
    /// Images from a folder, in name order, cycling.
    Replay {
        /// The folder.
        folder: PathBuf,
    },
}

/// A GPIO output pulsed when chosen labels win.
#[derive(Debug, Clone, PartialEq)]
pub struct PinConfig {
    /// Chip device; `None` for a simulated pin that only logs.
    pub chip: Option<PathBuf>,
    /// Line offset.
    pub line: u32,
    /// Pulse length.
    pub pulse: Duration,
    /// Labels that fire the pin (empty: any match).
    pub labels: Vec<String>,
    /// Drive low for active.
    pub active_low: bool,
}

/// Where events go.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// JSON lines on standard output.
    pub stdout: bool,
    /// JSON lines appended to this file.
    pub file: Option<PathBuf>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig { stdout: true, file: None }
    }
}

/// How frames become decisions.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionConfig {
    /// Thresholds.
    pub rule: DecisionRule,
    /// Frames captured per trigger.
    pub burst: u32,
    /// Frames of the burst that must agree on a label for a match.
    pub agree: u32,
    /// Ranked labels reported per event.
    pub top: usize,
}

/// Few-shot enrolment from the device's own camera.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollConfig {
    /// The class the button enrols frames for.
    pub class: String,
    /// Most frames captured per press (default 8).
    #[serde(default = "int::<8>")]
    pub frames: u32,
    /// Time between frames while the button is held (default 200 ms).
    #[serde(rename = "interval_ms", default = "ms::<200>", deserialize_with = "millis")]
    pub interval: Duration,
    /// The enrolment button, if any (press and hold to capture): the trigger's keys, without `cooldown_ms`.
    pub button: Option<TriggerSource>,
}

/// Most frames one enrolment may capture.
pub const MAX_ENROLL_FRAMES: u32 = 64;

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// Bundle folder.
    pub bundle: PathBuf,
    /// Encoder precision (bundle default if `None`).
    pub precision: Option<Precision>,
    /// Prompt store (bundle default if `None`).
    pub prompts: Option<PathBuf>,
    /// Threads for the image encoder's matrix products.
    pub threads: usize,
    /// Trigger settings.
    pub trigger: TriggerConfig,
    /// Camera settings.
    pub camera: CameraConfig,
    /// Output pin, if any.
    pub pin: Option<PinConfig>,
    /// Event outputs.
    pub events: EventsConfig,
    /// Decision settings.
    pub decision: DecisionConfig,
    /// Few-shot enrolment, if configured.
    pub enroll: Option<EnrollConfig>,
    /// The MQTT broker events also go to, if any (`docs/mqtt.md`).
    pub mqtt: Option<MqttConfig>,
}

/// The file as written; the sections without a public twin are below.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    model: ModelSection,
    trigger: TriggerConfig,
    camera: CameraConfig,
    #[serde(default)]
    output: OutputSection,
    #[serde(default)]
    events: EventsConfig,
    #[serde(default)]
    decision: DecisionSection,
    enroll: Option<EnrollConfig>,
    mqtt: Option<mqtt::MqttSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSection {
    bundle: PathBuf,
    #[serde(default)]
    precision: Option<Precision>,
    prompts: Option<PathBuf>,
    #[serde(default = "one")]
    threads: usize,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct OutputSection {
    pin: Option<PinSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinSection {
    chip: Option<PathBuf>,
    line: u32,
    pulse_ms: u64,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    active_low: bool,
    #[serde(default)]
    simulated: bool,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct DecisionSection {
    min_score: f32,
    min_similarity: f32,
    shot_weight: f32,
    shot_sharpness: f32,
    burst: u32,
    agree: u32,
    top: usize,
}

impl Default for DecisionSection {
    fn default() -> Self {
        let rule = DecisionRule::default();
        DecisionSection {
            min_score: rule.min_score,
            min_similarity: rule.min_similarity,
            shot_weight: rule.shot_weight,
            shot_sharpness: rule.shot_sharpness,
            burst: 1,
            agree: 1,
            top: 3,
        }
    }
}

fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

fn int<const N: u32>() -> u32 {
    N
}

fn ms<const N: u64>() -> Duration {
    Duration::from_millis(N)
}

fn one() -> usize {
    1
}

fn default_video() -> PathBuf {
    PathBuf::from("/dev/video0")
}

fn default_format() -> PixelFormat {
    PixelFormat::Mjpeg
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.into(),
            message: if e.kind() == std::io::ErrorKind::NotFound {
                "configuration file does not exist".into()
            } else {
                e.to_string()
            },
        })?;
        Self::parse(path, &text)
    }

    /// Parses configuration text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        let err = |message: String| ConfigError { path: path.into(), message };
        let key = |k: &str, m: String| err(format!("key '{k}': {m}"));
        let base = path.parent().unwrap_or(Path::new(""));
        // `join` keeps an absolute path as it is.
        let resolve = |p: &Path| base.join(p);
        let out_of_range =
            |k: &str, v: &dyn std::fmt::Display, range: &str| key(k, format!("{v} is out of range {range}"));

        let mut trigger = file.trigger;
        trigger.source = checked_source(trigger.source, "trigger", &key, &resolve)?;

        let mut camera = file.camera;
        match &mut camera {
            CameraConfig::V4l2 { device, width, height, timeout, .. } => {
                if !(16..=8192).contains(width) || !(16..=8192).contains(height) {
                    return Err(out_of_range("camera.width", &format!("{width}x{height}"), "16..=8192"));
                }
                if *timeout > Duration::from_secs(10) {
                    return Err(out_of_range("camera.timeout_ms", &timeout.as_millis(), "1..=10000"));
                }
                *device = resolve(device);
                *timeout = (*timeout).max(Duration::from_millis(1));
            }
            CameraConfig::Replay { folder } => *folder = resolve(folder),
        }

        let pin = match file.output.pin {
            None => None,
            Some(p) => {
                if !(1..=60_000).contains(&p.pulse_ms) {
                    return Err(out_of_range("output.pin.pulse_ms", &p.pulse_ms, "1..=60000"));
                }
                let chip = match (p.simulated, p.chip) {
                    (true, None) => None,
                    (true, Some(_)) => {
                        return Err(key("output.pin.chip", "a simulated pin takes no chip".into()))
                    }
                    (false, Some(c)) => Some(resolve(&c)),
                    (false, None) => {
                        return Err(err(
                            "key 'output.pin.chip' is required for a real pin (or set simulated = true)"
                                .into(),
                        ))
                    }
                };
                let (line, labels, active_low) = (p.line, p.labels, p.active_low);
                Some(PinConfig { chip, line, pulse: Duration::from_millis(p.pulse_ms), labels, active_low })
            }
        };

        let d = file.decision;
        let rule = DecisionRule {
            min_score: d.min_score,
            min_similarity: d.min_similarity,
            shot_weight: d.shot_weight,
            shot_sharpness: d.shot_sharpness,
        };
        rule.validate().map_err(|e| key("decision", e.to_string()))?;
        if !(1..=16).contains(&d.burst) {
            return Err(out_of_range("decision.burst", &d.burst, "1..=16"));
        }
        if d.agree == 0 || d.agree > d.burst {
            return Err(key(
                "decision.agree",
                format!("{} must be between 1 and burst ({})", d.agree, d.burst),
            ));
        }
        if !(1..=clip_edge_runtime::score::MAX_TOP).contains(&d.top) {
            return Err(out_of_range("decision.top", &d.top, "1..=16"));
        }

        let m = file.model;
        if m.threads > 1 && !clip_edge_runtime::encoder::HAS_THREAD_POOL {
            return Err(key(
                "model.threads",
                format!(
                    "{} needs the thread pool, and this binary was built without it (cargo feature `threads`); use 1",
                    m.threads
                ),
            ));
        }
        if !(1..=clip_edge_runtime::encoder::MAX_THREADS).contains(&m.threads) {
            let range = format!("1..={}", clip_edge_runtime::encoder::MAX_THREADS);
            return Err(out_of_range("model.threads", &m.threads, &range));
        }

        let enroll = match file.enroll {
            None => None,
            Some(mut e) => {
                if e.class.trim().is_empty() {
                    return Err(key("enroll.class", "must not be empty".into()));
                }
                if !(1..=MAX_ENROLL_FRAMES).contains(&e.frames) {
                    let range = format!("1..={MAX_ENROLL_FRAMES}");
                    return Err(out_of_range("enroll.frames", &e.frames, &range));
                }
                if e.interval > Duration::from_secs(10) {
                    return Err(out_of_range("enroll.interval_ms", &e.interval.as_millis(), "0..=10000"));
                }
                e.button =
                    e.button.map(|b| checked_source(b, "enroll.button", &key, &resolve)).transpose()?;
                Some(e)
            }
        };

        let mqtt = file.mqtt.map(|m| m.validate(path, &resolve)).transpose()?;

        Ok(Config {
            path: path.into(),
            bundle: resolve(&m.bundle),
            precision: m.precision,
            prompts: m.prompts.as_deref().map(resolve),
            threads: m.threads,
            trigger,
            camera,
            pin,
            events: EventsConfig {
                file: file.events.file.as_deref().map(resolve),
                stdout: file.events.stdout,
            },
            decision: DecisionConfig { rule, burst: d.burst, agree: d.agree, top: d.top },
            enroll,
            mqtt,
        })
    }
}

/// What serde cannot check of a trigger source (`prefix`: its table), with its paths resolved.
fn checked_source(
    mut source: TriggerSource,
    prefix: &str,
    key: &dyn Fn(&str, String) -> ConfigError,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<TriggerSource, ConfigError> {
    match &mut source {
        TriggerSource::Gpio { chip, .. } => *chip = resolve(chip),
        TriggerSource::Interval { period, .. } if period.is_zero() => {
            return Err(key(&format!("{prefix}.period_ms"), "must be at least 1".into()));
        }
        TriggerSource::Fifo { path } => *path = resolve(path),
        TriggerSource::Interval { .. } | TriggerSource::Stdin {} => {}
    }
    Ok(source)
}

/// The board's rendering of a TOML error: `file: ` and the runtime's
/// [`TomlErrorAt`].
pub(crate) fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    ConfigError { path: path.into(), message: TomlErrorAt::new(text, e).to_string() }
}

#[cfg(test)]
mod tests;
