//! Signed fleet commands against real mosquitto brokers (`docs/mqtt.md`,
//! "Fleet commands"): `clip-edge publish-store` to three daemons, and the
//! payloads every board must refuse. Ignored by a plain `cargo test`, like
//! `mqtt.rs`; `.ci/run` runs it with `--ignored`.

mod common;

use std::path::Path;
use std::process::{Child, Command};

use common::broker::{config, consumer, daemon, json, wait_for, Broker};
use rumqttc::{Client, MqttOptions, QoS};

/// Children killed when the test ends, also by a panic.
struct Reaper(Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The host CLI, built by `cargo test --workspace` next to this test.
fn host_cli() -> Command {
    let exe = std::env::current_exe().expect("exe");
    let bin = exe.parent().and_then(Path::parent).expect("target dir").join("clip-edge");
    assert!(bin.exists(), "{} missing: cargo build -p clip-edge-tools first", bin.display());
    Command::new(bin)
}

fn publish(broker: u16, store: &Path, key: &Path, devices: &str) -> (bool, serde_json::Value) {
    let out = host_cli()
        .args(["publish-store", "--json", "--timeout-s", "10", "--broker"])
        .arg(format!("mqtt://127.0.0.1:{broker}"))
        .arg("--prompts")
        .arg(store)
        .arg("--key")
        .arg(key)
        .args(["--devices", devices])
        .output()
        .expect("publish-store");
    (out.status.success(), json(&out.stdout))
}

#[test]
#[ignore = "needs mosquitto (apt install mosquitto mosquitto-clients); .ci/run runs it with --ignored"]
fn a_signed_store_is_taken_by_three_boards_and_bad_ones_by_none() {
    use clip_edge_runtime::signed::{self, Action, Header};
    use clip_edge_runtime::store::{ElementType, EntryKind, StoreBuilder};
    let root = tempfile::tempdir().expect("tmp");
    let r = root.path();
    let broker = Broker::start(r, "");
    for name in ["fleet", "stranger"] {
        let out = host_cli().args(["keygen", "--out"]).arg(r.join(name)).output().expect("keygen");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let results = consumer(broker.port, "results", &["clip-edge/+/cmd/result", "clip-edge/+/status"]);
    let boards = ["cam1", "cam2", "cam3"];
    let mut daemons = Reaper(Vec::new());
    for b in boards {
        let dir = r.join(b);
        std::fs::create_dir(&dir).expect("dir");
        let extra = format!(
            "[mqtt.commands]\nenabled = true\npublic_key = \"{}\"\nmax_store_bytes = 65536",
            r.join("fleet.pub").display()
        );
        let cfg = config(&dir, broker.port, "source = \"interval\"\nperiod_ms = 200\ncount = 0", &extra);
        let text = std::fs::read_to_string(&cfg)
            .expect("cfg")
            .replace("device = \"porch\"", &format!("device = \"{b}\""));
        std::fs::write(&cfg, text).expect("cfg");
        daemons.0.push(
            daemon(&cfg)
                .stderr(std::fs::File::create(dir.join("log")).expect("log"))
                .spawn()
                .expect("daemon"),
        );
    }
    wait_for("three boards online", 30, || {
        let m = results.lock().expect("inbox");
        boards
            .iter()
            .all(|b| m.iter().any(|(t, p, _)| t == &format!("clip-edge/{b}/status") && p == b"online"))
    });

    let original = std::fs::read(common::root().join("models/emoji/prompts.store")).expect("store");
    let store = clip_edge_runtime::PromptStore::open(common::root().join("models/emoji/prompts.store"))
        .expect("open");
    let mut more = store.to_builder();
    let mut row = vec![0f32; store.dim()];
    row[0] = 1.0;
    more.push("lighthouse", EntryKind::Class, &row).expect("push");
    let mut offsets = store.meta().similarity_offsets.clone();
    if !offsets.is_empty() {
        offsets.push(0.0);
        more.set_similarity_offsets(offsets).expect("offsets");
    }
    let new = r.join("new.store");
    more.write(&new).expect("write");
    let mut foreign = StoreBuilder::new(store.dim(), [9; 32], 100.0, ElementType::F32);
    foreign.push("lighthouse", EntryKind::Class, &row).expect("push");
    let foreign_path = r.join("foreign.store");
    foreign.write(&foreign_path).expect("write");
    let held = |b: &str| std::fs::read(r.join(b).join("prompts.store")).expect("held");

    let (ok, report) = publish(broker.port, &new, &r.join("fleet"), "cam1,cam2,cam3");
    assert!(ok, "{report}");
    assert_eq!(report["replies"].as_array().expect("replies").len(), 3, "{report}");
    for reply in report["replies"].as_array().expect("replies") {
        assert_eq!(
            (reply["took"].as_bool(), reply["labels"].as_u64()),
            (Some(true), Some(store.len() as u64 + 1))
        );
    }
    let pushed = std::fs::read(&new).expect("new");
    assert!(boards.iter().all(|b| held(b) == pushed), "every board holds the pushed store");

    for (path, key, why) in
        [(&foreign_path, "fleet", "pushed store refused"), (&new, "stranger", "bad signature")]
    {
        let (ok, report) = publish(broker.port, path, &r.join(key), "cam1,cam2,cam3");
        assert!(!ok, "{why}: {report}");
        let replies = report["replies"].as_array().expect("replies");
        assert_eq!(replies.len(), 3, "{why}: {report}");
        assert!(replies.iter().all(|x| x["took"] == false), "{why}: {report}");
        assert!(
            replies.iter().all(|x| x["error"].as_str().is_some_and(|e| e.contains(why))),
            "{why}: {report}"
        );
        assert!(boards.iter().all(|b| held(b) == pushed), "{why} changed a store");
    }

    // Unsigned, replayed and oversized payloads, sent by hand.
    let key = signed::read_signing_key(&r.join("fleet")).expect("key");
    let header = |issued_ms: u64| Header {
        id: format!("h{issued_ms}"),
        issued_ms,
        devices: vec![],
        expires_ms: None,
        action: Action::Store,
    };
    let mut o = MqttOptions::new("attacker", "127.0.0.1", broker.port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = Client::new(o, 16);
    std::thread::spawn(move || for _ in conn.iter() {});
    let before = results.lock().expect("inbox").len();
    for payload in [
        original.clone(),
        signed::sign(&key, &header(1), &original),
        signed::sign(&key, &header(u64::MAX / 2), &vec![0; 70_000]),
    ] {
        client.publish("clip-edge/all/cmd", QoS::AtLeastOnce, false, payload).expect("publish");
    }
    wait_for("nine refusals", 20, || {
        results.lock().expect("inbox")[before..].iter().filter(|(t, ..)| t.ends_with("/cmd/result")).count()
            >= 9
    });
    let refusals: Vec<serde_json::Value> = results.lock().expect("inbox")[before..]
        .iter()
        .filter(|(t, ..)| t.ends_with("/cmd/result"))
        .map(|(_, p, _)| json(p))
        .collect();
    for needle in ["not a signed clip-edge command", "replayed or stale", "over the limit"] {
        let n = refusals
            .iter()
            .filter(|v| v["ok"] == false && v["error"].as_str().is_some_and(|e| e.contains(needle)))
            .count();
        assert_eq!(n, 3, "{needle}: {refusals:?}");
    }
    assert!(boards.iter().all(|b| held(b) == pushed), "a refused payload changed a store");

    // Reload and enrol, addressed to one board.
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
    let before = results.lock().expect("inbox").len();
    for (i, action) in
        [Action::Reload, Action::Enroll { class: "porch cat".into(), frames: 2 }].into_iter().enumerate()
    {
        let h = Header {
            id: format!("c{i}"),
            issued_ms: now + 1000 + i as u64,
            devices: vec!["cam2".into()],
            expires_ms: Some(now + 60_000),
            action,
        };
        client
            .publish("clip-edge/cam2/cmd", QoS::AtLeastOnce, false, signed::sign(&key, &h, b""))
            .expect("publish");
    }
    wait_for("two replies from cam2", 20, || {
        results.lock().expect("inbox")[before..]
            .iter()
            .filter(|(t, ..)| t == "clip-edge/cam2/cmd/result")
            .count()
            >= 2
    });
    let replies: Vec<serde_json::Value> = results.lock().expect("inbox")[before..]
        .iter()
        .filter(|(t, ..)| t == "clip-edge/cam2/cmd/result")
        .map(|(_, p, _)| json(p))
        .collect();
    assert_eq!(
        (replies[0]["cmd"].as_str(), replies[0]["ok"].as_bool()),
        (Some("reload"), Some(true)),
        "{replies:?}"
    );
    assert_eq!(
        (replies[1]["cmd"].as_str(), replies[1]["class_shots"].as_u64()),
        (Some("enroll"), Some(2)),
        "{replies:?}"
    );
    let enrolled = clip_edge_runtime::PromptStore::open(r.join("cam2/prompts.store")).expect("store");
    assert!(enrolled.find("porch cat").is_some(), "the enrolled class is on flash");
    for d in &mut daemons.0 {
        let _ = Command::new("kill").arg("-TERM").arg(d.id().to_string()).status();
        assert!(d.wait().expect("wait").success());
    }
}
