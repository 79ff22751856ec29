//! Real mosquitto brokers for the MQTT tests (`board/tests/mqtt.rs`,
//! `board/tests/fleet.rs`), a consumer that records what arrives, and a
//! daemon configuration that reports to a broker.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

pub const NEEDS: &str =
    "needs mosquitto (apt install mosquitto mosquitto-clients); .ci/run runs it with --ignored";

/// A mosquitto on 127.0.0.1, stopped (SIGTERM, so it saves its state) when dropped.
pub struct Broker {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    extra: String,
    child: Option<Child>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl Broker {
    /// Starts a broker keeping its files in `dir`, with `extra` configuration lines.
    pub fn start(dir: &Path, extra: &str) -> Broker {
        // mosquitto started as root drops to its own user, which must be able to save its state here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let mut b = Broker { port: free_port(), dir: dir.to_path_buf(), extra: extra.into(), child: None };
        b.restart();
        b
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        let text = format!(
            "listener {} 127.0.0.1\npersistence true\npersistence_location {}/\nautosave_interval 1\n{}\n",
            self.port,
            self.dir.display(),
            if self.extra.is_empty() { "allow_anonymous true" } else { &self.extra }
        );
        std::fs::write(&conf, text).expect("conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("broker.log")).expect("log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start mosquitto ({e}): {NEEDS}"));
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < until, "mosquitto did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it (SIGTERM).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Messages a consumer received: topic, payload, CLOCK_MONOTONIC ns on arrival.
pub type Inbox = Arc<Mutex<Vec<(String, Vec<u8>, u64)>>>;

/// A consumer with a persistent session (QoS 1), so a broker restart loses nothing it was owed.
pub fn consumer(port: u16, id: &str, filters: &[&str]) -> Inbox {
    let inbox = Inbox::default();
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(false);
    o.set_max_packet_size(16 << 20, 64 << 10);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = Client::new(o, 64);
    let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
    let sink = inbox.clone();
    let (ready, subscribed) = std::sync::mpsc::channel();
    let want = filters.len();
    std::thread::spawn(move || {
        let (mut acks, mut failures) = (0, 0);
        for ev in conn.iter() {
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    failures = 0;
                    for f in &filters {
                        let _ = client.subscribe(f.as_str(), QoS::AtLeastOnce);
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    acks += 1;
                    if acks == want {
                        let _ = ready.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let now = clip_edge_board::trigger::monotonic_ns();
                    sink.lock().expect("inbox").push((p.topic.clone(), p.payload.to_vec(), now));
                }
                Ok(_) => {}
                // A broker restart is a second or two; five seconds of failures is the test's end.
                Err(_) if failures >= 50 => break,
                Err(_) => {
                    failures += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    });
    // Events published before the subscription took would never arrive.
    subscribed.recv_timeout(Duration::from_secs(10)).expect("the consumer's subscriptions");
    inbox
}

pub fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn config(dir: &Path, port: u16, trigger: &str, mqtt_extra: &str) -> PathBuf {
    let text = format!(
        r#"
[model]
bundle = "{root}/models/emoji"
prompts = "{dir}/prompts.store"
[trigger]
{trigger}
[camera]
source = "replay"
folder = "{root}/models/emoji/samples"
[output.pin]
simulated = true
line = 5
pulse_ms = 20
labels = ["cat", "dog"]
[events]
stdout = false
file = "{dir}/events.jsonl"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
device = "porch"
outbox = "{dir}/mqtt.outbox"
stats_interval_s = 1
{mqtt_extra}
"#,
        root = super::root().display(),
        dir = dir.display(),
    );
    if !dir.join("prompts.store").exists() {
        std::fs::copy(super::root().join("models/emoji/prompts.store"), dir.join("prompts.store"))
            .expect("store");
    }
    let p = dir.join("board.toml");
    std::fs::write(&p, text).expect("config");
    p
}

pub fn daemon(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clip-edge-board"));
    c.args(["run", "--config"]).arg(config).env("RUST_LOG", "info");
    c
}

pub fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(b)))
}

/// Events the daemon wrote to its local events file: under load the interval
/// trigger coalesces, so a run of `count = N` can make fewer than N.
pub fn local_events(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .expect("events file")
        .lines()
        .filter(|l| json(l.as_bytes())["type"] == "event")
        .count() as u64
}

pub fn events_of(inbox: &Inbox, topic: &str) -> Vec<(serde_json::Value, u64)> {
    let m = inbox.lock().expect("inbox");
    m.iter().filter(|(t, ..)| t == topic).map(|(_, p, at)| (json(p), *at)).collect()
}
