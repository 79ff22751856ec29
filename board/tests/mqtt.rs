//! `clip-edge-board` against a real mosquitto broker on loopback
//! (`docs/mqtt.md`). Ignored by a plain `cargo test` (they need `mosquitto`
//! and `mosquitto_passwd` on the PATH, from Debian's `mosquitto` package);
//! `.ci/run` installs it and runs them with `--ignored`. Fleet commands are
//! in `fleet.rs`, the shared broker helpers in `common/broker.rs`.
//! `CLIP_EDGE_MQTT_EVENTS=10000` makes the outage run the full campaign.
//! CI runs them one at a time (`--test-threads 1`): each starts
//! brokers and daemons, and timing figures mean more without the others.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::broker::{
    config, consumer, daemon, events_of, free_port, json, local_events, wait_for, Broker, Inbox, NEEDS,
};

/// Keys every entity of ours has (Home Assistant's MQTT entity basics).
const COMMON_KEYS: [&str; 6] =
    ["name", "unique_id", "device", "availability_topic", "payload_available", "payload_not_available"];

/// Home Assistant's documented keys for the components we announce
/// (home-assistant.io/integrations/{sensor,binary_sensor,camera}.mqtt/).
fn documented_keys(component: &str) -> &'static [&'static str] {
    match component {
        "sensor" => &["state_topic", "value_template", "json_attributes_topic", "icon", "state_class"],
        "binary_sensor" => &["state_topic", "payload_on", "off_delay"],
        "camera" => &["topic"],
        other => panic!("unexpected component {other}"),
    }
}

#[test]
#[ignore = "needs mosquitto (apt install mosquitto mosquitto-clients); .ci/run runs it with --ignored"]
fn events_state_snapshots_stats_and_discovery_reach_the_broker() {
    let dir = tempfile::tempdir().expect("tmp");
    let broker = Broker::start(dir.path(), "");
    let inbox = consumer(broker.port, "watcher", &["clip-edge/porch/#", "homeassistant/#"]);
    std::thread::sleep(Duration::from_millis(300));
    let cfg = config(dir.path(), broker.port, "source = \"interval\"\nperiod_ms = 20\ncount = 100", "");
    let out = daemon(&cfg).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let made = local_events(dir.path());
    assert!(made >= 50, "{made} of 100 triggers made events: {}", String::from_utf8_lossy(&out.stderr));
    let until = Instant::now() + Duration::from_secs(20);
    while (events_of(&inbox, "clip-edge/porch/event").len() as u64) < made {
        let got = events_of(&inbox, "clip-edge/porch/event").len();
        assert!(
            Instant::now() < until,
            "{got} of {made} events arrived; the daemon said:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let local: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("events.jsonl"))
        .expect("events file")
        .lines()
        .map(|l| json(l.as_bytes()))
        .filter(|e| e["type"] == "event")
        .collect();
    let got = events_of(&inbox, "clip-edge/porch/event");
    let seqs: Vec<u64> = got.iter().map(|(e, _)| e["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs, (1..=made).collect::<Vec<_>>());
    for ((e, _), l) in got.iter().zip(&local) {
        assert_eq!(e["device"], "porch");
        let mut e = e.clone();
        e.as_object_mut().expect("object").remove("device");
        assert_eq!(&e, l, "the broker's event is the local event plus device");
    }
    let latency: Vec<f64> = got
        .iter()
        .map(|(e, at)| {
            let decided = e["trigger_ts_ns"].as_u64().expect("ts") as f64
                + e["timing_ms"]["total"].as_f64().expect("t") * 1e6;
            (*at as f64 - decided) / 1e6
        })
        .collect();
    let mut sorted = latency.clone();
    sorted.sort_by(f64::total_cmp);
    let at = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    let slow: Vec<(usize, f64)> = latency.iter().copied().enumerate().filter(|(_, l)| *l > 3.0).collect();
    eprintln!("events over 3 ms (index, ms): {slow:?}");
    eprintln!(
        "decision to consumer on loopback: median {:.2} ms, p99 {:.2} ms ({} events)",
        at(0.5),
        at(0.99),
        sorted.len()
    );

    // The goodbye comes after the last event: it may still be on its way.
    let offline = || {
        let all = inbox.lock().expect("inbox");
        all.iter()
            .rev()
            .find(|(t, ..)| t == "clip-edge/porch/status")
            .is_some_and(|(_, p, _)| p == b"offline")
    };
    wait_for("offline at the end", 10, offline);
    let all = inbox.lock().expect("inbox").clone();
    let last = |topic: &str| all.iter().rev().find(|(t, ..)| t == topic).map(|(_, p, _)| p.clone());
    assert!(all.iter().any(|(t, p, _)| t == "clip-edge/porch/status" && p == b"online"));
    let state = json(&last("clip-edge/porch/state").expect("state"));
    assert_eq!(state["seq"], made);
    let stats = json(&last("clip-edge/porch/stats").expect("stats"));
    for k in ["events", "errors", "coalesced", "uptime_s", "model", "store", "latency_ms", "outbox"] {
        assert!(!stats[k].is_null(), "stats.{k} missing: {stats}");
    }
    assert_eq!(stats["model"], "clip-edge-default-emoji-cnn");
    let matched: BTreeSet<&str> = local.iter().filter_map(|e| e["label"].as_str()).collect();
    for label in ["cat", "dog"].iter().filter(|l| matched.contains(**l)) {
        let jpeg = last(&format!("clip-edge/porch/{label}/snapshot")).expect("snapshot");
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "a JPEG");
        assert!(jpeg.len() <= 256 << 10);
        image::load_from_memory(&jpeg).expect("a decodable snapshot");
        assert!(all.iter().any(|(t, p, _)| t == &format!("clip-edge/porch/{label}/detected") && p == b"ON"));
    }

    let configs: BTreeMap<&str, serde_json::Value> = all
        .iter()
        .filter(|(t, p, _)| t.starts_with("homeassistant/") && !p.is_empty())
        .map(|(t, p, _)| (t.as_str(), json(p)))
        .collect();
    for id in [
        "sensor/clip_edge_porch/last_label",
        "sensor/clip_edge_porch/score",
        "binary_sensor/clip_edge_porch/cat",
        "binary_sensor/clip_edge_porch/dog",
        "camera/clip_edge_porch/dog_snapshot",
    ] {
        assert!(configs.contains_key(format!("homeassistant/{id}/config").as_str()), "{id} not announced");
    }
    for (topic, c) in &configs {
        let component = topic.split('/').nth(1).expect("component");
        for k in c.as_object().expect("object").keys() {
            assert!(
                COMMON_KEYS.contains(&k.as_str()) || documented_keys(component).contains(&k.as_str()),
                "{topic}: {k}"
            );
        }
        assert_eq!(c["availability_topic"], "clip-edge/porch/status");
        assert_eq!(c["device"]["identifiers"][0], "clip_edge_porch");
    }

    // A restart continues the sequence.
    let out = daemon(&cfg).output().expect("run");
    assert!(out.status.success());
    let made = local_events(dir.path());
    wait_for("the second run's events", 20, || {
        events_of(&inbox, "clip-edge/porch/event").len() as u64 >= made
    });
    let seqs: Vec<u64> = events_of(&inbox, "clip-edge/porch/event")
        .iter()
        .map(|(e, _)| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=made).collect::<Vec<_>>());
}

#[test]
#[ignore = "needs mosquitto (apt install mosquitto mosquitto-clients); .ci/run runs it with --ignored"]
fn nothing_is_lost_across_broker_restarts_and_daemon_kills() {
    let total: u64 = std::env::var("CLIP_EDGE_MQTT_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(600);
    let dir = tempfile::tempdir().expect("tmp");
    let dir = dir.path();
    let mut broker = Broker::start(dir, "");
    let inbox = consumer(broker.port, "ledger", &["clip-edge/porch/event", "clip-edge/porch/stats"]);
    std::thread::sleep(Duration::from_millis(300));
    let trigger = "source = \"interval\"\nperiod_ms = 2\ncount = 0";
    let cfg = config(dir, broker.port, trigger, "snapshot_max_bytes = 0");
    let t0 = Instant::now();
    let received = |inbox: &Inbox| events_of(inbox, "clip-edge/porch/event").len() as u64;
    let local_seq = |dir: &Path| -> u64 {
        std::fs::read_to_string(dir.join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|e| e["seq"].as_u64())
            .max()
            .unwrap_or(0)
    };
    let log = |n: u32| std::fs::File::create(dir.join(format!("daemon{n}.log"))).expect("log");
    let mut run = daemon(&cfg).stderr(log(0)).spawn().expect("daemon");
    let (mut kills, mut restarts) = (0, 0);
    // Three rounds: let events flow, stop the broker for a second while the
    // daemon goes on, start it again; then kill -9 the daemon and start it
    // again. The last run stops by itself once `total` events exist.
    for round in 0..3 {
        let target = local_seq(dir) + total / 8;
        wait_for("events while the broker is up", 120, || local_seq(dir) >= target);
        broker.stop();
        std::thread::sleep(Duration::from_millis(1000));
        broker.restart();
        restarts += 1;
        let target = local_seq(dir) + total / 8;
        wait_for("events after the broker restart", 120, || local_seq(dir) >= target);
        if round < 2 {
            run.kill().expect("kill -9");
            run.wait().expect("reap");
            kills += 1;
            let mut next = daemon(&cfg);
            if round == 1 {
                // Enough for the last round, whose outage alone lasts a second.
                let rest = total.saturating_sub(local_seq(dir)).max(total / 2 + 500);
                next.arg("--max-events").arg(rest.to_string());
            }
            run = next.stderr(log(kills)).spawn().expect("daemon");
        }
    }
    let status = run.wait().expect("last run");
    assert!(status.success());
    let last = local_seq(dir);
    wait_for("every event at the consumer", 60, || {
        events_of(&inbox, "clip-edge/porch/event").iter().filter_map(|(e, _)| e["seq"].as_u64()).max()
            >= Some(last)
    });
    let got = events_of(&inbox, "clip-edge/porch/event");
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for (e, _) in &got {
        assert_eq!(e["device"], "porch");
        let s = e["seq"].as_u64().expect("seq");
        if seen.insert(s) {
            order.push(s);
        }
    }
    let missing: Vec<u64> = (1..=last).filter(|s| !seen.contains(s)).collect();
    assert!(missing.is_empty(), "lost after dedup: {missing:?}");
    assert!(order.windows(2).all(|w| w[0] < w[1]), "out of order after dedup");
    let peak = events_of(&inbox, "clip-edge/porch/stats")
        .iter()
        .filter_map(|(s, _)| s["outbox"]["peak_bytes"].as_u64())
        .max()
        .unwrap_or(0);
    // The default cap, 1 MiB: acknowledged records are compacted away, nothing owed was dropped.
    assert!(peak <= 1 << 20, "the outbox passed its cap: {peak}");
    let dropped = events_of(&inbox, "clip-edge/porch/stats")
        .iter()
        .filter_map(|(s, _)| s["outbox"]["dropped"].as_u64())
        .max();
    assert_eq!(dropped, Some(0));
    eprintln!(
        "{last} events, {} received ({} duplicates), {restarts} broker restarts, {kills} kill -9, {:.1} s, outbox peak {peak} B",
        got.len(),
        got.len() as u64 - last,
        t0.elapsed().as_secs_f64()
    );
    assert!(received(&inbox) >= last);
}

#[test]
#[ignore = "needs mosquitto (apt install mosquitto mosquitto-clients); .ci/run runs it with --ignored"]
fn a_wrong_password_is_logged_and_classification_goes_on() {
    let dir = tempfile::tempdir().expect("tmp");
    let pw = dir.path().join("passwd");
    let ok = Command::new("mosquitto_passwd").args(["-b", "-c"]).arg(&pw).args(["cam", "right"]).status();
    assert!(ok.expect(NEEDS).success());
    let broker = Broker::start(dir.path(), &format!("allow_anonymous false\npassword_file {}", pw.display()));
    let cfg = config(
        dir.path(),
        broker.port,
        "source = \"interval\"\nperiod_ms = 100\ncount = 10",
        "username = \"cam\"\npassword = \"wrong\"",
    );
    let out = daemon(&cfg).output().expect("run");
    assert!(out.status.success(), "the daemon goes on without its broker");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains(&format!("mqtt: 127.0.0.1:{}", broker.port)) && log.contains("events wait in"),
        "{log}"
    );
    assert!(
        log.to_lowercase().contains("refused")
            || log.contains("NotAuthorized")
            || log.contains("BadUserNamePassword"),
        "{log}"
    );
    assert_eq!(local_events(dir.path()), 10);
}

/// Runs `openssl` with `args` (split at spaces) in `dir`.
fn openssl(dir: &Path, args: &str) {
    let ok = Command::new("openssl").args(args.split(' ')).current_dir(dir).stderr(Stdio::null()).status();
    assert!(ok.expect("openssl").success(), "openssl {args}");
}

const EC: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

/// A self-signed CA, `NAME.pem` and `NAME.key` (P-256).
fn make_ca(dir: &Path, name: &str) {
    openssl(dir, &format!("req -x509 {EC} -keyout {name}.key -out {name}.pem -days 2 -subj /CN={name}"));
}

#[test]
#[ignore = "needs mosquitto (apt install mosquitto mosquitto-clients); .ci/run runs it with --ignored"]
fn tls_with_the_right_ca_delivers_and_a_wrong_ca_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    make_ca(d, "ca");
    make_ca(d, "other-ca");
    std::fs::write(d.join("ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
    openssl(d, &format!("req {EC} -keyout server.key -out server.csr -subj /CN=127.0.0.1"));
    openssl(d, "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.join("server.key"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let plain = free_port();
    let extra = format!(
        "cafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\nlistener {plain} 127.0.0.1\nallow_anonymous true",
        d.display()
    );
    let broker = Broker::start(d, &extra);
    let inbox = consumer(plain, "tls-watcher", &["clip-edge/porch/event"]);
    std::thread::sleep(Duration::from_millis(300));
    let trigger = "source = \"interval\"\nperiod_ms = 50\ncount = 5";
    let tls_cfg = |ca: &str| {
        let cfg = config(d, broker.port, trigger, &format!("ca_file = \"{}/{ca}\"", d.display()));
        let text = std::fs::read_to_string(&cfg).expect("cfg").replace("mqtt://", "mqtts://");
        std::fs::write(&cfg, text).expect("cfg");
        cfg
    };
    let out = daemon(&tls_cfg("ca.pem")).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("5 events over TLS", 20, || events_of(&inbox, "clip-edge/porch/event").len() >= 5);

    // A broker that asks for client certificates: the board's, signed by the CA, gets in.
    openssl(d, &format!("req {EC} -keyout board.key -out board.csr -subj /CN=porch"));
    std::fs::write(d.join("client-ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
    openssl(d, "x509 -req -in board.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out board.pem -days 2 -extfile client-ext");
    let strict_dir = d.join("strict");
    std::fs::create_dir(&strict_dir).expect("dir");
    let mut strict = Broker::start(
        &strict_dir,
        &format!("require_certificate true\n{extra}").replace(
            &format!("listener {plain} 127.0.0.1\n"),
            &format!("listener {} 127.0.0.1\n", free_port()),
        ),
    );
    let with_cert = |cert: bool| {
        let cfg = tls_cfg("ca.pem");
        let mut text = std::fs::read_to_string(&cfg)
            .expect("cfg")
            .replace(&format!(":{}", broker.port), &format!(":{}", strict.port));
        if cert {
            text = text.replace(
                "stats_interval_s = 1",
                &format!(
                    "stats_interval_s = 1\nclient_cert = \"{0}/board.pem\"\nclient_key = \"{0}/board.key\"",
                    d.display()
                ),
            );
        }
        std::fs::write(&cfg, text).expect("cfg");
        daemon(&cfg).output().expect("run")
    };
    let out = with_cert(false);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("mqtt: 127.0.0.1:{}", strict.port)),
        "refused without a certificate"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("mqtt: connected to"), "in without a certificate");
    let out = with_cert(true);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && log.contains("mqtt: connected to"), "{log}");
    strict.stop();

    let out = daemon(&tls_cfg("other-ca.pem")).output().expect("run");
    assert!(out.status.success(), "a wrong CA does not stop the daemon");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("mqtt: 127.0.0.1:") && log.contains("UnknownIssuer"), "{log}");
    assert_eq!(local_events(d), 20, "every run classified");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(events_of(&inbox, "clip-edge/porch/event").len(), 5, "nothing arrived without trust");
}

#[test]
#[ignore = "needs mosquitto (apt install mosquitto mosquitto-clients); .ci/run runs it with --ignored"]
fn a_bridge_carries_a_boards_events_to_the_fleet_broker() {
    let (edge_dir, fleet_dir) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let fleet = Broker::start(fleet_dir.path(), "");
    let inbox = consumer(fleet.port, "fleet-watcher", &["clip-edge/+/event", "clip-edge/+/status"]);
    let bridge = format!(
        "allow_anonymous true\nconnection fleet\naddress 127.0.0.1:{}\ntopic clip-edge/# out 1\nrestart_timeout 1",
        fleet.port
    );
    let edge = Broker::start(edge_dir.path(), &bridge);
    std::thread::sleep(Duration::from_millis(500));
    let cfg = config(edge_dir.path(), edge.port, "source = \"interval\"\nperiod_ms = 50\ncount = 10", "");
    let out = daemon(&cfg).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let made = local_events(edge_dir.path());
    wait_for("the events at the fleet broker", 20, || {
        events_of(&inbox, "clip-edge/porch/event").len() as u64 >= made
    });
    let seqs: Vec<u64> = events_of(&inbox, "clip-edge/porch/event")
        .iter()
        .map(|(e, _)| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=made).collect::<Vec<_>>());
    let all = inbox.lock().expect("inbox").clone();
    assert!(all.iter().any(|(t, p, _)| t == "clip-edge/porch/status" && p == b"online"));
}

#[test]
#[ignore = "needs mosquitto (apt install mosquitto mosquitto-clients); .ci/run runs it with --ignored"]
fn entities_of_labels_no_longer_reported_are_removed_after_a_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let broker = Broker::start(dir.path(), "");
    let cfg = config(dir.path(), broker.port, "source = \"interval\"\nperiod_ms = 50\ncount = 3", "");
    assert!(daemon(&cfg).output().expect("run").status.success());
    let text = std::fs::read_to_string(&cfg)
        .expect("cfg")
        .replace("labels = [\"cat\", \"dog\"]", "labels = [\"cat\"]");
    std::fs::write(&cfg, text).expect("cfg");
    assert!(daemon(&cfg).output().expect("run").status.success());
    // A new consumer sees only what is retained now.
    let inbox = consumer(broker.port, "late-watcher", &["homeassistant/#"]);
    let cat = "homeassistant/binary_sensor/clip_edge_porch/cat/config";
    wait_for("the retained configs", 10, || inbox.lock().expect("inbox").iter().any(|(t, ..)| t == cat));
    std::thread::sleep(Duration::from_millis(300));
    let topics: BTreeSet<String> = inbox.lock().expect("inbox").iter().map(|(t, ..)| t.clone()).collect();
    assert!(!topics.iter().any(|t| t.contains("/dog")), "dog's entities are still retained: {topics:?}");
    assert!(topics.contains("homeassistant/camera/clip_edge_porch/cat_snapshot/config"));
}
