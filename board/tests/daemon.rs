//! The loop end to end with the simulated trigger, replay camera and the emoji model.

mod common;

use std::sync::Arc;
use std::time::Duration;

use clip_edge_board::camera::{CameraError, CameraErrorKind, Frame, FrameSource};
use clip_edge_board::decision::Verdict;
use clip_edge_board::events::{Event, EventSink, SharedEvents};
use clip_edge_board::notify::Notifier;
use clip_edge_board::trigger::SimTrigger;
use clip_edge_board::{Daemon, Devices, Model};
use clip_edge_runtime::frame::load_rgb;
use clip_edge_runtime::{Bundle, Classifier, Decision, DecisionRule};

fn events(d: &Daemon) -> Vec<Event> {
    d.events()
}

/// Waits until the daemon has written `n` event or error records: the tests
/// pace their triggers by the daemon's progress, not by the clock, so they
/// hold however slow inference is (a 0.4 GFLOPs model takes ~1 s under qemu).
fn wait_for(events: &SharedEvents, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done = events
            .lock()
            .expect("events")
            .iter()
            .filter(|e| matches!(e, Event::Event { .. } | Event::Error { .. }))
            .count();
        if done >= n {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the daemon wrote {done} of {n} records in 120 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn each_trigger_classifies_the_next_frame_like_the_runtime_does() {
    let frames = common::frames();
    let config = common::config(frames.path(), "");
    let (trigger, handle) = SimTrigger::new("test".into());
    let (sink, seen) = EventSink::memory_shared();
    let (mut d, pin) = common::start(config, trigger, None, sink).expect("start");

    // What the runtime says for each frame, in the replay camera's (name) order.
    let bundle = Bundle::load(common::root().join("models/emoji")).expect("bundle");
    let mut clf = Classifier::load(&bundle, None, None).expect("classifier");
    let mut names: Vec<_> =
        std::fs::read_dir(frames.path()).expect("dir").map(|e| e.expect("e").path()).collect();
    names.sort();
    let expected: Vec<Option<String>> = names
        .iter()
        .map(|p| {
            let emb = clf.encoder.encode(&load_rgb(p).expect("image")).expect("encode");
            match clf.score(&emb, 3, &DecisionRule::default()).expect("score").decision {
                Decision::Match(i) => Some(clf.label(i).to_string()),
                _ => None,
            }
        })
        .collect();

    let thread = std::thread::spawn(move || {
        for i in 0..names.len() {
            handle.fire();
            wait_for(&seen, i + 1);
        }
    });
    let stats = d.run(Some(expected.len() as u64));
    thread.join().expect("fired");
    assert_eq!(stats.events, expected.len() as u64);
    let evs = events(&d);
    let n_labels = clf.store().len();
    assert!(matches!(evs[0], Event::Ready { labels, .. } if labels == n_labels), "{:?}", evs[0]);
    let got: Vec<Option<String>> = evs
        .iter()
        .filter_map(|e| match e {
            Event::Event { label, .. } => Some(label.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(got, expected);
    let mut last_ts = 0;
    for e in &evs {
        if let Event::Event { seq, trigger_ts_ns, timing_ms, coalesced, top, frames, .. } = e {
            assert!(*trigger_ts_ns > last_ts, "timestamps increase");
            last_ts = *trigger_ts_ns;
            assert!(*seq >= 1 && *coalesced == 0 && *frames == 1 && top.len() == 3);
            assert!(timing_ms.infer > 0.0 && timing_ms.total >= timing_ms.infer);
        }
    }
    assert!(matches!(evs.last(), Some(Event::Stopped { events: 4, .. })));
    // Every match pulsed the simulated pin: high then low, once per event (any label fires).
    let pin = pin.transitions();
    assert_eq!(pin.first(), Some(&false));
    assert_eq!(pin.iter().filter(|h| **h).count() as u64, stats.pulses);
    assert_eq!(pin.last(), Some(&false), "pin released at shutdown");
}

#[test]
fn camera_loss_is_an_error_event_and_the_daemon_recovers() {
    let frames = common::frames();
    let config = common::config(frames.path(), "");
    let (trigger, handle) = SimTrigger::new("test".into());
    let (sink, seen) = EventSink::memory_shared();
    let (mut d, _pin) = common::start(config, trigger, None, sink).expect("start");
    let folder = frames.path().to_path_buf();
    let stash = tempfile::tempdir().expect("stash");
    let moved = stash.path().join("frames");
    let thread = std::thread::spawn(move || {
        handle.fire();
        wait_for(&seen, 1);
        std::fs::rename(&folder, &moved).expect("unplug");
        handle.fire();
        wait_for(&seen, 2);
        std::fs::rename(&moved, &folder).expect("replug");
        // Longer than the camera's first back-off (0.2 s).
        std::thread::sleep(Duration::from_millis(400));
        handle.fire();
        wait_for(&seen, 3);
    });
    let stats = d.run(Some(3));
    thread.join().expect("thread");
    let kinds: Vec<&str> = events(&d)
        .iter()
        .filter_map(|e| match e {
            Event::Event { .. } => Some("event"),
            Event::Error { kind, .. } => Some(kind),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, vec!["event", "camera", "event"], "{:?}", events(&d));
    assert_eq!((stats.events, stats.errors), (2, 1));
}

/// One triggered burst over the emoji model's samples `shown` (in this
/// order, one per frame) with `agree`: the event's decision, label, votes and frames.
fn burst(shown: &[&str], agree: u32) -> (Verdict, Option<String>, u32, u32) {
    let frames = tempfile::tempdir().expect("tmp");
    for (i, name) in shown.iter().enumerate() {
        let sample = common::root().join("models/emoji/samples").join(name);
        std::fs::copy(sample, frames.path().join(format!("{i:02}.png"))).expect("copy sample");
    }
    let (trigger, handle) = SimTrigger::new("test".into());
    let extra = format!("[decision]\nburst = {}\nagree = {agree}\n", shown.len());
    let config = common::config(frames.path(), &extra);
    let (mut d, _pin) = common::start(config, trigger, None, EventSink::memory()).expect("start");
    handle.fire();
    d.run(Some(1));
    match events(&d).into_iter().find(|e| matches!(e, Event::Event { .. })) {
        Some(Event::Event { decision, label, votes, frames, .. }) => (decision, label, votes, frames),
        other => panic!("no event: {other:?}"),
    }
}

#[test]
fn a_burst_needs_k_of_n_agreeing_frames() {
    // Each sample alone is a confident match for its own class (or background).
    let three_dogs = ["dog-google.png", "dog-twitter.png", "cat-google.png", "dog-google.png"];
    let dog = Some("dog".to_string());
    assert_eq!(burst(&three_dogs, 3), (Verdict::Match, dog.clone(), 3, 4));
    assert_eq!(burst(&three_dogs, 2), (Verdict::Match, dog, 3, 4));
    assert_eq!(burst(&three_dogs, 4), (Verdict::Unknown, None, 0, 4));
    let mostly_empty = ["empty_scene-1.png", "cat-google.png", "empty_scene-2.png", "empty_scene-1.png"];
    assert_eq!(burst(&mostly_empty, 2), (Verdict::Background, None, 3, 4));
    // A tie with enough votes goes to the lower store row: dog (row 2) before cat (row 3).
    let tie = ["cat-google.png", "dog-google.png", "cat-twitter.png", "dog-twitter.png"];
    assert_eq!(burst(&tie, 2), (Verdict::Match, Some("dog".to_string()), 2, 4));
}

#[test]
fn triggers_within_the_cooldown_are_merged_into_the_next_event() {
    let frames = common::frames();
    let (trigger, handle) = SimTrigger::new("test".into());
    let config = common::config(frames.path(), "").clone();
    let mut config = config;
    config.trigger.cooldown = Duration::from_millis(300);
    let (sink, seen) = EventSink::memory_shared();
    let (mut d, _pin) = common::start(config, trigger, None, sink).expect("start");
    let thread = std::thread::spawn(move || {
        // Two triggers 60 and 120 ms after the first (by their own timestamps)
        // fall in its cooldown, however long the first event takes.
        handle.fire();
        std::thread::sleep(Duration::from_millis(60));
        handle.fire();
        std::thread::sleep(Duration::from_millis(60));
        handle.fire();
        wait_for(&seen, 1);
        std::thread::sleep(Duration::from_millis(400));
        handle.fire();
    });
    let stats = d.run(Some(2));
    thread.join().expect("thread");
    assert_eq!(stats.events, 2);
    let coalesced: Vec<u64> = events(&d)
        .iter()
        .filter_map(|e| if let Event::Event { coalesced, .. } = e { Some(*coalesced) } else { None })
        .collect();
    assert_eq!(coalesced, vec![0, 2]);
}

#[test]
fn start_up_fails_cleanly_on_a_store_for_another_model() {
    let frames = common::frames();
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("other.store");
    let mut b = clip_edge_runtime::store::StoreBuilder::new(
        64,
        [1; 32],
        10.0,
        clip_edge_runtime::store::ElementType::F32,
    );
    b.push("x", clip_edge_runtime::store::EntryKind::Class, &[1.0; 64]).expect("push");
    b.write(&store).expect("write");
    let mut config = common::config(frames.path(), "");
    config.prompts = Some(store);
    let (trigger, _h) = SimTrigger::new("test".into());
    let err = common::start(config, trigger, None, EventSink::memory()).expect_err("refused").to_string();
    assert!(err.contains("other.store") && err.contains("built for model"), "{err}");
}

/// A camera whose every frame is undecodable.
struct Garbled;

impl FrameSource for Garbled {
    fn capture(&mut self) -> Result<Frame, CameraError> {
        Err(CameraError {
            kind: CameraErrorKind::Decode,
            device: "garbled".into(),
            message: "bad frame".into(),
        })
    }

    fn describe(&self) -> String {
        "garbled camera".into()
    }
}

#[test]
fn injected_devices_drive_the_daemon() {
    let frames = common::frames();
    let config = common::config(frames.path(), "");
    let (trigger, handle) = SimTrigger::new("test".into());
    let model = Model::load(&config).expect("model");
    let devices = Devices {
        trigger: Box::new(trigger),
        camera: Box::new(Garbled),
        pin: None,
        button: None,
        service: Notifier::none(),
    };
    let (sink, seen) = EventSink::memory_shared();
    let mut d = Daemon::start(config, model, devices, sink, Arc::default()).expect("start");
    handle.fire();
    let stats = d.run(Some(1));
    assert_eq!((stats.events, stats.errors, stats.pulses), (0, 1, 0));
    let evs = seen.lock().expect("events").clone();
    assert!(matches!(&evs[0], Event::Ready { camera, .. } if camera == "garbled camera"), "{evs:?}");
    assert!(
        matches!(&evs[1], Event::Error { kind: "camera", message, .. } if message == "garbled: bad frame"),
        "{evs:?}"
    );
}
