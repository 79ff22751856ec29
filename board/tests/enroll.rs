//! Few-shot enrolment on the device: `enroll` from the configured camera, the
//! daemon's enrolment button, the daemon picking up a changed store, and the
//! bad cases that must leave the store on flash untouched.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clip_edge_board::enroll::{self, EnrollError};
use clip_edge_board::events::{Event, EventSink, SharedEvents};
use clip_edge_board::notify::Notifier;
use clip_edge_board::trigger::SimTrigger;
use clip_edge_board::Config;
use clip_edge_runtime::PromptStore;

/// A copy of the emoji model's prompt store in a temporary folder.
fn store_copy(dir: &Path) -> PathBuf {
    let path = dir.join("prompts.store");
    std::fs::copy(common::root().join("models/emoji/prompts.store"), &path).expect("copy store");
    path
}

fn config_with(frames: &Path, store: &Path, extra: &str) -> Config {
    let mut c = common::config(frames, extra);
    c.prompts = Some(store.to_path_buf());
    c
}

fn wait_until(events: &SharedEvents, what: &str, pred: impl Fn(&Event) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !events.lock().expect("events").iter().any(&pred) {
        assert!(std::time::Instant::now() < deadline, "no {what} event in 120 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn enroll_stores_an_image_only_class_and_the_running_daemon_reloads_it() {
    let frames = common::frames();
    let dir = tempfile::tempdir().expect("tmp");
    let store = store_copy(dir.path());
    let before = PromptStore::open(&store).expect("store");
    let config = config_with(frames.path(), &store, "");

    let (trigger, handle) = SimTrigger::new("test".into());
    let (sink, seen) = EventSink::memory_shared();
    let (mut d, _pin) = common::start(config.clone(), trigger, None, sink).expect("start");
    let enrol_config = config.clone();
    let thread = std::thread::spawn(move || {
        handle.fire();
        wait_until(&seen, "first", |e| matches!(e, Event::Event { .. }));
        let done = enroll::run_once(&enrol_config, "our van", 3, Duration::ZERO).expect("enrol");
        handle.fire();
        wait_until(&seen, "second", |e| matches!(e, Event::Event { seq: 2, .. }));
        done
    });
    d.run(Some(2));
    let done = thread.join().expect("thread");
    assert_eq!((done.added, done.new_class, done.class_shots, done.store_shots), (3, true, 3, 3));

    let after = PromptStore::open(&store).expect("store after");
    assert_eq!(after.len(), before.len() + 1);
    let van = after.find("our van").expect("new class");
    assert!(!after.entries()[van].text);
    assert_eq!(after.shot_count(van), 3);
    assert_eq!(done.file_len, std::fs::metadata(&store).expect("meta").len());
    for i in 0..before.len() {
        assert_eq!(before.row_f32(i), after.row_f32(i), "text row {i} changed");
    }

    let evs = d.events();
    let reload = evs.iter().position(|e| matches!(e, Event::Store { shots: 3, .. }));
    let second = evs.iter().position(|e| matches!(e, Event::Event { seq: 2, .. }));
    assert!(reload.is_some() && reload < second, "store reloaded before the second event: {evs:?}");
}

#[test]
fn camera_failure_mid_enrolment_stores_nothing() {
    let frames = common::frames();
    std::fs::write(frames.path().join("h_broken.png"), b"\x89PNG\r\n\x1a\nnot really").expect("broken");
    let dir = tempfile::tempdir().expect("tmp");
    let store = store_copy(dir.path());
    let bytes = std::fs::read(&store).expect("read");
    let config = config_with(frames.path(), &store, "");
    let err = enroll::run_once(&config, "dog", 5, Duration::ZERO).expect_err("broken frame");
    assert!(matches!(err, EnrollError::Camera { captured: 2, wanted: 5, .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("stopped after 2 of 5 frames; nothing was stored"), "{text}");
    assert!(text.contains("h_broken.png"), "{text}");
    assert_eq!(std::fs::read(&store).expect("read"), bytes);
}

#[test]
fn background_label_foreign_store_and_full_store_are_refused_untouched() {
    let frames = common::frames();
    let dir = tempfile::tempdir().expect("tmp");
    let store = store_copy(dir.path());
    let bytes = std::fs::read(&store).expect("read");
    let config = config_with(frames.path(), &store, "");

    let err =
        enroll::run_once(&config, "empty scene", 1, Duration::ZERO).expect_err("background").to_string();
    assert!(err.contains("'empty scene' is a background entry"), "{err}");
    assert_eq!(std::fs::read(&store).expect("read"), bytes);

    let full = dir.path().join("full.store");
    let mut b = PromptStore::open(&store).expect("store").to_builder().shot_caps(2, 2).expect("caps");
    let e = vec![0.05f32; 384];
    b.add_shot("dog", &e, 1).expect("shot");
    b.add_shot("dog", &e, 2).expect("shot");
    b.write(&full).expect("write");
    let full_bytes = std::fs::read(&full).expect("read");
    let err = enroll::run_once(&config_with(frames.path(), &full, ""), "cat", 1, Duration::ZERO)
        .expect_err("full")
        .to_string();
    assert!(err.contains("holds 2 shots, its cap"), "{err}");
    assert_eq!(std::fs::read(&full).expect("read"), full_bytes);

    let foreign = dir.path().join("foreign.store");
    let mut f = clip_edge_runtime::store::StoreBuilder::new(
        384,
        [9; 32],
        10.0,
        clip_edge_runtime::store::ElementType::F16,
    );
    f.push("x", clip_edge_runtime::store::EntryKind::Class, &e).expect("push");
    f.write(&foreign).expect("write");
    let foreign_bytes = std::fs::read(&foreign).expect("read");
    let err = enroll::run_once(&config_with(frames.path(), &foreign, ""), "cat", 1, Duration::ZERO)
        .expect_err("foreign")
        .to_string();
    assert!(err.contains("foreign.store") && err.contains("built for model"), "{err}");
    assert_eq!(std::fs::read(&foreign).expect("read"), foreign_bytes);
}

/// The longest step the daemon takes without looking at the clock: one frame
/// through the model, measured on this machine (seconds under qemu-user).
fn one_frame(config: &Config) -> Duration {
    use std::time::Instant;
    let bundle = clip_edge_runtime::Bundle::load(&config.bundle).expect("bundle");
    let mut clf = clip_edge_runtime::Classifier::load(&bundle, config.precision, config.prompts.as_deref())
        .expect("model");
    let size = bundle.preprocess.size;
    let frame = image::RgbImage::from_pixel(size, size, image::Rgb([128, 128, 128]));
    (0..3)
        .map(|_| {
            let t = Instant::now();
            clf.encoder.encode(&frame).expect("encode");
            t.elapsed()
        })
        .max()
        .unwrap_or_default()
}

#[test]
fn a_long_enrolment_keeps_pinging_the_watchdog() {
    use std::os::unix::net::UnixDatagram;
    use std::time::Instant;
    let frames = common::frames();
    let dir = tempfile::tempdir().expect("tmp");
    let store = store_copy(dir.path());
    let socket = dir.path().join("notify");
    let systemd = UnixDatagram::bind(&socket).expect("bind");
    let listener = std::thread::spawn(move || {
        let mut pings = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n) = systemd.recv(&mut buf) {
            match &buf[..n] {
                b"WATCHDOG=1" => pings.push(Instant::now()),
                b"STOPPING=1" => break,
                _ => {}
            }
        }
        pings
    });
    // Pinged every half period, so a gap is at most half a period plus the
    // longest step (a frame, twice for capture and noise, or the 0.6 s
    // blink): the period must be more than twice that step. 2 s on a host,
    // longer under emulation.
    let step = (2 * one_frame(&config_with(frames.path(), &store, ""))).max(Duration::from_millis(600));
    let watchdog = (3 * step).max(Duration::from_millis(2000));
    // 6 frames half a period apart: two and a half watchdog periods of enrolment.
    let extra =
        format!("[enroll]\nclass = \"dog\"\nframes = 6\ninterval_ms = {}", (watchdog / 2).as_millis());
    let config = config_with(frames.path(), &store, &extra);
    let (trigger, handle) = SimTrigger::new("test".into());
    let (button, press) = SimTrigger::new("button".into());
    let (sink, seen) = EventSink::memory_shared();
    let service = Notifier::to(Some(socket.display().to_string()), Some(watchdog));
    let (mut d, _pin) = common::start_notifying(config, trigger, Some(button), sink, service).expect("start");
    let driver = std::thread::spawn(move || {
        press.fire();
        wait_until(&seen, "enrolled", |e| matches!(e, Event::Enrolled { frames: 6, .. }));
        handle.fire();
        wait_until(&seen, "event", |e| matches!(e, Event::Event { .. }));
        (press, handle)
    });
    let started = Instant::now();
    d.run(Some(1));
    let took = started.elapsed();
    let _ = driver.join().expect("driver");
    let pings = listener.join().expect("listener");
    assert!(took > 2 * watchdog, "the enrolment took {took:?}, too short for a {watchdog:?} watchdog");
    let mut last = started;
    for p in pings.iter().chain([&Instant::now()]) {
        let gap = p.duration_since(last);
        assert!(
            gap < watchdog,
            "{gap:?} without a watchdog ping ({} pings in {took:?}, watchdog {watchdog:?}, step {step:?})",
            pings.len()
        );
        last = *p;
    }
}

#[test]
fn the_enrolment_button_captures_while_held_and_blinks_the_pin() {
    let frames = common::frames();
    let dir = tempfile::tempdir().expect("tmp");
    let store = store_copy(dir.path());
    let config = config_with(frames.path(), &store, "[enroll]\nclass = \"dog\"\nframes = 4\ninterval_ms = 0");
    let (trigger, handle) = SimTrigger::new("test".into());
    let (button, press) = SimTrigger::new("button".into());
    let (sink, seen) = EventSink::memory_shared();
    let (mut d, pin) = common::start(config, trigger, Some(button), sink).expect("start");
    let thread = std::thread::spawn(move || {
        // A source without a level: one press captures `frames` frames.
        press.fire();
        wait_until(&seen, "enrolled", |e| matches!(e, Event::Enrolled { .. }));
        // Released right away: the hold ends after the first frame.
        press.set_active(false);
        press.fire();
        wait_until(&seen, "second enrolment", |e| matches!(e, Event::Enrolled { class_shots: 5, .. }));
        handle.fire();
        wait_until(&seen, "event", |e| matches!(e, Event::Event { .. }));
        (press, handle)
    });
    d.run(Some(1));
    let _ = thread.join().expect("thread");
    let enrolled: Vec<(u32, u32)> = d
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Enrolled { frames, class_shots, new_class: false, class, .. } if class == "dog" => {
                Some((*frames, *class_shots))
            }
            _ => None,
        })
        .collect();
    assert_eq!(enrolled, vec![(4, 4), (1, 5)]);
    let s = PromptStore::open(&store).expect("store");
    assert_eq!(s.shot_count(s.find("dog").expect("dog")), 5);
    let highs = pin.transitions().iter().filter(|h| **h).count();
    assert!(highs >= 6, "two enrolments blink three times each: {highs} highs");
}

#[test]
fn a_store_that_cannot_be_edited_fails_the_self_check_with_enrolment_configured() {
    let frames = common::frames();
    let dir = tempfile::tempdir().expect("tmp");
    let store = store_copy(dir.path());
    // A folder where the lock file must go: it cannot be opened for writing,
    // as on a read-only mount (tests/tests/vboard.rs checks a real one).
    std::fs::create_dir(dir.path().join("prompts.store.lock")).expect("mkdir");
    let before = std::fs::read(&store).expect("read");
    let config = config_with(frames.path(), &store, "[enroll]\nclass = \"dog\"");
    let (trigger, _handle) = SimTrigger::new("test".into());
    let err = common::start(config, trigger, None, EventSink::memory()).expect_err("refused");
    let text = err.to_string();
    assert!(text.starts_with("enroll: the prompt store") && text.contains("prompts.store.lock"), "{text}");
    assert!(text.contains("/var/lib/clip-edge"), "{text}");
    // Without [enroll] the same store serves classification.
    let (trigger, _handle) = SimTrigger::new("test".into());
    let config = config_with(frames.path(), &store, "");
    common::start(config, trigger, None, EventSink::memory()).expect("classification only");
    assert_eq!(std::fs::read(&store).expect("read"), before);
}
