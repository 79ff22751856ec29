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
    assert_eq!(c.trigger.source, TriggerSource::Interval { period: Duration::from_millis(100), count: 3 });
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
        ("count = 3", "count = 3\nline = 3", "key 'trigger.line': unknown field `line`"),
        ("period_ms = 100", "period_ms = \"fast\"", "key 'trigger.period_ms': invalid type"),
        ("source = \"interval\"", "source = \"stdin\"", "key 'trigger.period_ms': unknown field"),
        ("source = \"replay\"", "source = \"webcam\"", "'camera.source'"),
        ("folder = \"frames\"", "", "key 'camera.folder': missing field `folder`"),
        ("folder = \"frames\"", "folder = \"f\"\nwidth = 640", "key 'camera.width': unknown field"),
        ("source = \"replay\"", "source = \"v4l2\"\nformat = \"rgb\"", "key 'camera.format'"),
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
            "key 'enroll.button.chip': missing field `chip`",
        ),
        (
            "[decision]",
            "[enroll]\nclass = \"van\"\n[enroll.button]\nsource = \"stdin\"\ncooldown_ms = 5\n[decision]",
            "key 'enroll.button.cooldown_ms': unknown field",
        ),
        ("[decision]", "[decision]\nburst = 2\nagree = 2\n[decision]", "duplicate key"),
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
fn errors_found_by_the_reader_give_line_column_and_key() {
    let text = SIM.replacen("count = 3", "count = 3\nedge = \"both\"", 1);
    let e = parse(&text).expect_err("edge on an interval").to_string();
    assert!(
        e.starts_with("/etc/clip/sim.toml: line 8 col 1: key 'trigger.edge': unknown field `edge`"),
        "{e}"
    );
    let text =
        SIM.replacen("source = \"interval\"", "source = \"gpio\"\nchip = \"c\"\nline = 1\nedge = \"up\"", 1);
    let text = text.replacen("period_ms = 100\ncount = 3\n", "", 1);
    let e = parse(&text).expect_err("bad edge").to_string();
    assert!(e.contains("line 8 col 1: key 'trigger.edge': unknown variant `up`"), "{e}");
    let text = SIM.replacen("bundle = \"../../models/default\"", "bundle = \"x\"\nthreads = \"two\"", 1);
    let e = parse(&text).expect_err("threads").to_string();
    assert!(e.contains("line 4 col 11: key 'model.threads': invalid type"), "{e}");
    let e = parse(&SIM.replacen("[camera]\nsource = \"replay\"\nfolder = \"frames\"\n", "", 1))
        .expect_err("no camera")
        .to_string();
    assert!(e.ends_with("line 1 col 1: missing field `camera`"), "{e}");
}

/// `threads` > 1 needs the thread pool: a lean build (`--no-default-features`)
/// refuses it naming the key and the feature; the default build takes it.
#[test]
fn threads_above_one_need_the_thread_pool() {
    let text = SIM.replacen("bundle = \"../../models/default\"", "bundle = \"x\"\nthreads = 2", 1);
    let parsed = parse(&text);
    if clip_edge_runtime::encoder::HAS_THREAD_POOL {
        assert_eq!(parsed.expect("threads = 2 with the pool").threads, 2);
    } else {
        let e = parsed.expect_err("threads = 2 without the pool").to_string();
        assert!(e.contains("key 'model.threads': 2 needs the thread pool") && e.contains("`threads`"), "{e}");
    }
}

#[test]
fn the_shipped_configs_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    assert!(files.len() >= 2, "{files:?}");
    files.push(dir.join("../../tools/vboard/board.toml"));
    for path in &files {
        let c = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
        // models/default, or models/emoji on the virtual board (tools/vboard/board.toml)
        assert!(c.bundle.parent().is_some_and(|p| p.ends_with("models")), "{}", path.display());
    }
    let pi = Config::load(&dir.join("raspberry-pi.toml")).expect("pi");
    // What the daemon writes (the store it enrols into, the events file) must be
    // under the unit's only writable path: ProtectSystem=strict mounts the rest read-only.
    let unit = std::fs::read_to_string(dir.join("../deploy/clip-edge.service")).expect("unit");
    let writable = unit.lines().find_map(|l| l.strip_prefix("ReadWritePaths=")).expect("ReadWritePaths");
    assert!(unit.contains("ProtectSystem=strict"));
    let store = pi.prompts.clone().expect("the Pi example names its own prompt store");
    assert!(store.starts_with(writable), "{} is not under {writable}", store.display());
    let events = pi.events.file.clone().expect("events file");
    assert!(events.starts_with(writable), "{} is not under {writable}", events.display());
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
