//! The daemon's configuration (TOML), parsed once into a validated [`Config`].
//!
//! Relative paths are resolved against the configuration file's folder, so a
//! config and the bundle it names can move together. See `board/examples/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clip_edge_runtime::{DecisionRule, Precision};
use serde::Deserialize;

/// A configuration error, naming the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// The configuration file.
    pub path: PathBuf,
    /// What is wrong, naming the key.
    pub message: String,
}

/// Which edges of a GPIO line trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// Inactive to active.
    Rising,
    /// Active to inactive.
    Falling,
    /// Both.
    Both,
}

/// Pull resistor of an input line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bias {
    /// Leave as configured.
    AsIs,
    /// No pull.
    Disabled,
    /// Pull up.
    PullUp,
    /// Pull down.
    PullDown,
}

/// Where triggers come from.
#[derive(Debug, Clone, PartialEq)]
pub enum TriggerSource {
    /// A GPIO line through the Linux character device (uAPI v2).
    Gpio {
        /// Chip device, e.g. `/dev/gpiochip0`.
        chip: PathBuf,
        /// Line offset on the chip.
        line: u32,
        /// Edges that trigger.
        edge: Edge,
        /// Pull resistor.
        bias: Bias,
        /// Kernel debounce period (zero: none).
        debounce: Duration,
        /// Line is active-low.
        active_low: bool,
    },
    /// A trigger every `period`, `count` times (0: forever).
    Interval {
        /// Time between triggers.
        period: Duration,
        /// Number of triggers, 0 for no limit.
        count: u64,
    },
    /// One trigger per line read from standard input.
    Stdin,
    /// One trigger per line written to a FIFO (created if missing).
    Fifo {
        /// The FIFO's path.
        path: PathBuf,
    },
}

/// Trigger settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerConfig {
    /// The source.
    pub source: TriggerSource,
    /// Triggers within this time after an accepted one are merged into it.
    pub cooldown: Duration,
}

/// Camera pixel format to negotiate: the runtime's `frame::CameraFormat`, which decodes it.
pub use clip_edge_runtime::frame::CameraFormat as PixelFormat;

/// Where frames come from.
#[derive(Debug, Clone, PartialEq)]
pub enum CameraConfig {
    /// A V4L2 device.
    V4l2 {
        /// Device node, e.g. `/dev/video0`.
        device: PathBuf,
        /// Pixel format.
        format: PixelFormat,
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
        /// Frames to drop after a trigger so the frame is from after it.
        skip_frames: u32,
        /// How long to wait for a frame.
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
#[derive(Debug, Clone, PartialEq)]
pub struct EventsConfig {
    /// JSON lines on standard output.
    pub stdout: bool,
    /// JSON lines appended to this file.
    pub file: Option<PathBuf>,
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
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollConfig {
    /// The class the button enrols frames for.
    pub class: String,
    /// Most frames captured per press.
    pub frames: u32,
    /// Time between frames while the button is held.
    pub interval: Duration,
    /// The enrolment button, if any (press and hold to capture).
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    model: RawModel,
    trigger: RawTrigger,
    camera: RawCamera,
    output: Option<RawOutput>,
    #[serde(default)]
    events: RawEvents,
    #[serde(default)]
    decision: RawDecision,
    enroll: Option<RawEnroll>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnroll {
    class: String,
    frames: Option<u32>,
    interval_ms: Option<u64>,
    button: Option<RawTrigger>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    bundle: String,
    precision: Option<String>,
    prompts: Option<String>,
    threads: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    source: String,
    chip: Option<String>,
    line: Option<u32>,
    edge: Option<String>,
    bias: Option<String>,
    debounce_ms: Option<u64>,
    active_low: Option<bool>,
    period_ms: Option<u64>,
    count: Option<u64>,
    path: Option<String>,
    #[serde(default)]
    cooldown_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCamera {
    source: String,
    device: Option<String>,
    format: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    skip_frames: Option<u32>,
    timeout_ms: Option<u64>,
    folder: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    pin: Option<RawPin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPin {
    chip: Option<String>,
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
#[serde(deny_unknown_fields)]
struct RawEvents {
    stdout: bool,
    file: Option<String>,
}

impl Default for RawEvents {
    fn default() -> Self {
        RawEvents { stdout: true, file: None }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDecision {
    min_score: Option<f32>,
    min_similarity: Option<f32>,
    shot_weight: Option<f32>,
    shot_sharpness: Option<f32>,
    burst: Option<u32>,
    agree: Option<u32>,
    top: Option<usize>,
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
        let err = |message: String| ConfigError { path: path.into(), message };
        let raw: Raw = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    format!(" (line {})", before.matches('\n').count() + 1)
                })
                .unwrap_or_default();
            err(format!("{}{at}", e.message().trim()))
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &str| if Path::new(p).is_absolute() { PathBuf::from(p) } else { base.join(p) };
        let key = |k: &str, m: String| err(format!("key '{k}': {m}"));
        let need = |k: &str, what: &str| err(format!("key '{k}' is required for {what}"));

        let precision = raw
            .model
            .precision
            .as_deref()
            .map(|p| p.parse::<Precision>().map_err(|m| key("model.precision", m)))
            .transpose()?;

        let source = parse_source(&raw.trigger, "trigger", &err, &resolve)?;

        let c = &raw.camera;
        let camera = match c.source.as_str() {
            "v4l2" => {
                let width = c.width.unwrap_or(640);
                let height = c.height.unwrap_or(480);
                if !(16..=8192).contains(&width) || !(16..=8192).contains(&height) {
                    return Err(key("camera.width", format!("{width}x{height} is out of range 16..=8192")));
                }
                CameraConfig::V4l2 {
                    device: resolve(c.device.as_deref().unwrap_or("/dev/video0")),
                    format: match c.format.as_deref().unwrap_or("mjpeg") {
                        "mjpeg" => PixelFormat::Mjpeg,
                        "yuyv" => PixelFormat::Yuyv,
                        o => return Err(key("camera.format", format!("'{o}' is not mjpeg or yuyv"))),
                    },
                    width,
                    height,
                    skip_frames: c.skip_frames.unwrap_or(2),
                    timeout: Duration::from_millis(c.timeout_ms.unwrap_or(2000).max(1)),
                }
            }
            "replay" => CameraConfig::Replay {
                folder: resolve(
                    c.folder.as_deref().ok_or_else(|| need("camera.folder", "source = \"replay\""))?,
                ),
            },
            o => return Err(key("camera.source", format!("'{o}' is not v4l2 or replay"))),
        };

        let pin = match raw.output.and_then(|o| o.pin) {
            None => None,
            Some(p) => {
                if p.pulse_ms == 0 || p.pulse_ms > 60_000 {
                    return Err(key(
                        "output.pin.pulse_ms",
                        format!("{} is out of range 1..=60000", p.pulse_ms),
                    ));
                }
                let chip = match (p.simulated, p.chip) {
                    (true, None) => None,
                    (true, Some(_)) => {
                        return Err(key("output.pin.chip", "a simulated pin takes no chip".into()));
                    }
                    (false, Some(c)) => Some(resolve(&c)),
                    (false, None) => {
                        return Err(need("output.pin.chip", "a real pin (or set simulated = true)"));
                    }
                };
                Some(PinConfig {
                    chip,
                    line: p.line,
                    pulse: Duration::from_millis(p.pulse_ms),
                    labels: p.labels,
                    active_low: p.active_low,
                })
            }
        };

        let d = raw.decision;
        let rule = DecisionRule {
            min_score: d.min_score.unwrap_or(0.0),
            min_similarity: d.min_similarity.unwrap_or(-1.0),
            shot_weight: d.shot_weight.unwrap_or(clip_edge_runtime::score::DEFAULT_SHOT_WEIGHT),
            shot_sharpness: d.shot_sharpness.unwrap_or(clip_edge_runtime::score::DEFAULT_SHOT_SHARPNESS),
        };
        rule.validate().map_err(|e| key("decision", e.to_string()))?;
        let burst = d.burst.unwrap_or(1);
        let agree = d.agree.unwrap_or(1);
        if !(1..=16).contains(&burst) {
            return Err(key("decision.burst", format!("{burst} is out of range 1..=16")));
        }
        if agree == 0 || agree > burst {
            return Err(key("decision.agree", format!("{agree} must be between 1 and burst ({burst})")));
        }
        let top = d.top.unwrap_or(3);
        if !(1..=clip_edge_runtime::score::MAX_TOP).contains(&top) {
            return Err(key("decision.top", format!("{top} is out of range 1..=16")));
        }

        let threads = raw.model.threads.unwrap_or(1);
        if !(1..=clip_edge_runtime::encoder::MAX_THREADS).contains(&threads) {
            return Err(key(
                "model.threads",
                format!("{threads} is out of range 1..={}", clip_edge_runtime::encoder::MAX_THREADS),
            ));
        }
        let enroll = match &raw.enroll {
            None => None,
            Some(e) => {
                if e.class.trim().is_empty() {
                    return Err(key("enroll.class", "must not be empty".into()));
                }
                let frames = e.frames.unwrap_or(8);
                if !(1..=MAX_ENROLL_FRAMES).contains(&frames) {
                    return Err(key(
                        "enroll.frames",
                        format!("{frames} is out of range 1..={MAX_ENROLL_FRAMES}"),
                    ));
                }
                let interval = e.interval_ms.unwrap_or(200);
                if interval > 10_000 {
                    return Err(key("enroll.interval_ms", format!("{interval} is out of range 0..=10000")));
                }
                let button = e
                    .button
                    .as_ref()
                    .map(|b| parse_source(b, "enroll.button", &err, &resolve))
                    .transpose()?;
                if button.is_some() && e.button.as_ref().is_some_and(|b| b.cooldown_ms != 0) {
                    return Err(key(
                        "enroll.button.cooldown_ms",
                        "does not apply to the enrolment button".into(),
                    ));
                }
                Some(EnrollConfig {
                    class: e.class.clone(),
                    frames,
                    interval: Duration::from_millis(interval),
                    button,
                })
            }
        };

        Ok(Config {
            path: path.into(),
            bundle: resolve(&raw.model.bundle),
            precision,
            prompts: raw.model.prompts.as_deref().map(resolve),
            threads,
            trigger: TriggerConfig { source, cooldown: Duration::from_millis(raw.trigger.cooldown_ms) },
            camera,
            pin,
            events: EventsConfig { stdout: raw.events.stdout, file: raw.events.file.as_deref().map(resolve) },
            decision: DecisionConfig { rule, burst, agree, top },
            enroll,
        })
    }
}

fn parse_source(
    t: &RawTrigger,
    prefix: &str,
    err: &dyn Fn(String) -> ConfigError,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<TriggerSource, ConfigError> {
    let key = |k: &str, m: String| err(format!("key '{k}': {m}"));
    let need = |k: &str, what: &str| err(format!("key '{k}' is required for {what}"));
    let source = match t.source.as_str() {
        "gpio" => TriggerSource::Gpio {
            chip: resolve(
                t.chip.as_deref().ok_or_else(|| need(&format!("{prefix}.chip"), "source = \"gpio\""))?,
            ),
            line: t.line.ok_or_else(|| need(&format!("{prefix}.line"), "source = \"gpio\""))?,
            edge: match t.edge.as_deref().unwrap_or("rising") {
                "rising" => Edge::Rising,
                "falling" => Edge::Falling,
                "both" => Edge::Both,
                o => {
                    return Err(key(
                        &format!("{prefix}.edge"),
                        format!("'{o}' is not rising, falling or both"),
                    ))
                }
            },
            bias: match t.bias.as_deref().unwrap_or("as-is") {
                "as-is" => Bias::AsIs,
                "disabled" => Bias::Disabled,
                "pull-up" => Bias::PullUp,
                "pull-down" => Bias::PullDown,
                o => {
                    return Err(key(
                        &format!("{prefix}.bias"),
                        format!("'{o}' is not as-is, disabled, pull-up or pull-down"),
                    ))
                }
            },
            debounce: Duration::from_millis(t.debounce_ms.unwrap_or(0)),
            active_low: t.active_low.unwrap_or(false),
        },
        "interval" => {
            let ms =
                t.period_ms.ok_or_else(|| need(&format!("{prefix}.period_ms"), "source = \"interval\""))?;
            if ms == 0 {
                return Err(key(&format!("{prefix}.period_ms"), "must be at least 1".into()));
            }
            TriggerSource::Interval { period: Duration::from_millis(ms), count: t.count.unwrap_or(0) }
        }
        "stdin" => TriggerSource::Stdin,
        "fifo" => TriggerSource::Fifo {
            path: resolve(
                t.path.as_deref().ok_or_else(|| need(&format!("{prefix}.path"), "source = \"fifo\""))?,
            ),
        },
        o => {
            return Err(key(
                &format!("{prefix}.source"),
                format!("'{o}' is not gpio, interval, stdin or fifo"),
            ));
        }
    };
    let unused: &[(&str, bool)] = match source {
        TriggerSource::Gpio { .. } => &[("period_ms", t.period_ms.is_some()), ("path", t.path.is_some())],
        _ => &[("chip", t.chip.is_some()), ("line", t.line.is_some()), ("edge", t.edge.is_some())],
    };
    if let Some((k, _)) = unused.iter().find(|(_, set)| *set) {
        return Err(key(&format!("{prefix}.{k}"), format!("does not apply to source = \"{}\"", t.source)));
    }
    Ok(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIM: &str = r#"
[model]
bundle = "../../models/default"
[trigger]
source = "interval"
period_ms = 100
count = 3
[camera]
source = "replay"
folder = "frames"
[output.pin]
simulated = true
line = 4
pulse_ms = 200
labels = ["person"]
[decision]
min_score = 0.2
burst = 3
agree = 2
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/clip/sim.toml"), text)
    }

    #[test]
    fn parses_and_resolves_relative_paths() {
        let c = parse(SIM).expect("valid");
        assert_eq!(c.bundle, Path::new("/etc/clip/../../models/default"));
        assert_eq!(c.camera, CameraConfig::Replay { folder: "/etc/clip/frames".into() });
        assert_eq!(
            c.trigger.source,
            TriggerSource::Interval { period: Duration::from_millis(100), count: 3 }
        );
        let pin = c.pin.expect("pin");
        assert_eq!((pin.chip, pin.line, pin.pulse), (None, 4, Duration::from_millis(200)));
        assert_eq!((c.decision.burst, c.decision.agree), (3, 2));
        assert!(c.events.stdout);
    }

    #[test]
    fn every_bad_key_is_named() {
        let cases = [
            ("source = \"interval\"", "source = \"laser\"", "'trigger.source'"),
            ("period_ms = 100", "period_ms = 0", "'trigger.period_ms'"),
            ("count = 3", "count = 3\nline = 3", "'trigger.line': does not apply"),
            ("source = \"replay\"", "source = \"webcam\"", "'camera.source'"),
            ("folder = \"frames\"", "device = \"/dev/video0\"", "'camera.folder' is required"),
            ("pulse_ms = 200", "pulse_ms = 0", "'output.pin.pulse_ms'"),
            ("simulated = true", "simulated = false", "'output.pin.chip' is required"),
            ("agree = 2", "agree = 4", "'decision.agree'"),
            ("burst = 3", "burst = 40", "'decision.burst'"),
            ("min_score = 0.2", "min_score = 2.0", "'decision'"),
            ("bundle = \"../../models/default\"", "bundle = \"x\"\nprecision = \"f64\"", "'model.precision'"),
            ("count = 3", "count = 3\nspeed = 2", "unknown field `speed`"),
            ("agree = 2", "agree = 2\nshot_weight = -1.0", "shot_weight"),
            ("bundle = \"../../models/default\"", "bundle = \"x\"\nthreads = 0", "'model.threads'"),
            ("[decision]", "[enroll]\nclass = \"van\"\nframes = 0\n[decision]", "'enroll.frames'"),
            ("[decision]", "[enroll]\nclass = \" \"\n[decision]", "'enroll.class'"),
            (
                "[decision]",
                "[enroll]\nclass = \"van\"\n[enroll.button]\nsource = \"gpio\"\nline = 3\n[decision]",
                "'enroll.button.chip' is required",
            ),
        ];
        for (from, to, want) in cases {
            let text = SIM.replacen(from, to, 1);
            assert_ne!(text, SIM, "{from}");
            let e = parse(&text).expect_err(want).to_string();
            assert!(e.starts_with("/etc/clip/sim.toml: "), "{e}");
            assert!(e.contains(want), "want {want} in {e}");
        }
    }

    #[test]
    fn gpio_trigger_and_v4l2_camera() {
        let text = SIM
            .replace(
                "source = \"interval\"\nperiod_ms = 100\ncount = 3",
                "source = \"gpio\"\nchip = \"/dev/gpiochip0\"\nline = 17\nedge = \"both\"\nbias = \"pull-down\"\ndebounce_ms = 20",
            )
            .replace("source = \"replay\"\nfolder = \"frames\"", "source = \"v4l2\"\nformat = \"yuyv\"");
        let c = parse(&text).expect("valid");
        assert_eq!(
            c.trigger.source,
            TriggerSource::Gpio {
                chip: "/dev/gpiochip0".into(),
                line: 17,
                edge: Edge::Both,
                bias: Bias::PullDown,
                debounce: Duration::from_millis(20),
                active_low: false
            }
        );
        assert!(matches!(
            c.camera,
            CameraConfig::V4l2 { format: PixelFormat::Yuyv, width: 640, height: 480, .. }
        ));
    }

    #[test]
    fn enrol_button_uses_the_trigger_keys() {
        let text = SIM.replace(
            "[decision]",
            "[enroll]\nclass = \"our van\"\nframes = 4\ninterval_ms = 50\n[enroll.button]\nsource = \"gpio\"\nchip = \"/dev/gpiochip0\"\nline = 3\nedge = \"both\"\n[decision]",
        );
        let c = parse(&text).expect("valid");
        let e = c.enroll.expect("enroll");
        assert_eq!((e.class.as_str(), e.frames, e.interval), ("our van", 4, Duration::from_millis(50)));
        assert!(matches!(e.button, Some(TriggerSource::Gpio { line: 3, edge: Edge::Both, .. })));
        assert!(parse(SIM).expect("valid").enroll.is_none());
        assert_eq!(
            parse(SIM).expect("valid").decision.rule.shot_weight,
            clip_edge_runtime::score::DEFAULT_SHOT_WEIGHT
        );
    }

    #[test]
    fn the_shipped_examples_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        for name in ["sim.toml", "raspberry-pi.toml"] {
            let c = Config::load(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(c.bundle.ends_with("models/default"), "{name}");
        }
        let pi = Config::load(&dir.join("raspberry-pi.toml")).expect("pi");
        let button = pi.enroll.and_then(|e| e.button).expect("enrolment button");
        assert!(matches!(button, TriggerSource::Gpio { line: 23, active_low: true, edge: Edge::Rising, .. }));
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let e = parse("[model]\nbundle = \n").expect_err("syntax").to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = Config::load(Path::new("/nonexistent/x.toml")).expect_err("missing").to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
