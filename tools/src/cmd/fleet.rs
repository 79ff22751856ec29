//! `clip-edge keygen` and `clip-edge publish-store`: signed fleet commands over MQTT.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clip_edge_runtime::signed::{self, Action, Header};
use clip_edge_tools::report::Format;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde::Serialize;

use crate::cli::{KeygenArgs, PublishStoreArgs};

/// The report of `keygen`.
#[derive(Debug, Serialize)]
pub struct KeygenReport {
    secret: String,
    public: String,
    public_key: String,
}

impl Display for KeygenReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "secret key: {} (keep it off the boards)", self.secret)?;
        writeln!(
            f,
            "public key: {} = {} (mqtt.commands.public_key on each board)",
            self.public,
            self.public_key.trim()
        )
    }
}

/// Writes a new key pair; refuses to overwrite either file.
pub fn keygen(a: &KeygenArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (secret, public) = signed::generate().context("cannot read /dev/urandom")?;
    let mut public_path = a.out.clone().into_os_string();
    public_path.push(".pub");
    let public_path = std::path::PathBuf::from(public_path);
    for (path, text, mode) in [(&a.out, &secret, 0o600), (&public_path, &public, 0o644)] {
        let mut f =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).with_context(
                || format!("{}: cannot create the key file (it is never overwritten)", path.display()),
            )?;
        f.write_all(text.as_bytes()).with_context(|| format!("{}: cannot write", path.display()))?;
    }
    let report = KeygenReport {
        secret: a.out.display().to_string(),
        public: public_path.display().to_string(),
        public_key: public.trim().to_string(),
    };
    Format::from_flag(a.json).print(&report)?;
    Ok(ExitCode::SUCCESS)
}

/// One board's answer.
#[derive(Debug, Serialize)]
pub struct BoardReply {
    device: String,
    took: bool,
    error: Option<String>,
    labels: Option<u64>,
}

/// The report of `publish-store`.
#[derive(Debug, Serialize)]
pub struct PublishReport {
    id: String,
    prompts: String,
    bytes: usize,
    replies: Vec<BoardReply>,
    no_answer: Vec<String>,
}

impl Display for PublishReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "pushed {} ({} bytes) as command {}", self.prompts, self.bytes, self.id)?;
        for r in &self.replies {
            match (&r.error, r.took) {
                (None, true) => writeln!(f, "  {}: took it ({} labels)", r.device, r.labels.unwrap_or(0))?,
                (e, _) => writeln!(f, "  {}: refused: {}", r.device, e.as_deref().unwrap_or("?"))?,
            }
        }
        for d in &self.no_answer {
            writeln!(f, "  {d}: no answer")?;
        }
        Ok(())
    }
}

fn broker(url: &str) -> anyhow::Result<(String, u16)> {
    let Some(rest) = url.strip_prefix("mqtt://") else {
        bail!("--broker: '{url}' is not mqtt://HOST[:PORT] (publish-store speaks plain MQTT; bridge or tunnel for TLS)")
    };
    let rest = rest.trim_end_matches('/');
    Ok(match rest.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().with_context(|| format!("--broker: bad port in '{url}'"))?),
        None => (rest.to_string(), 1883),
    })
}

/// Signs the store, publishes it and gathers the replies until every named
/// board answered or the timeout passed. Exit 1 if a named board refused or
/// stayed silent.
pub fn publish_store(a: &PublishStoreArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&a.prompts).with_context(|| format!("cannot read {}", a.prompts.display()))?;
    let store = clip_edge_runtime::PromptStore::from_bytes(&a.prompts, &bytes)
        .with_context(|| format!("{} is not a valid prompt store", a.prompts.display()))?;
    let key = signed::read_signing_key(&a.key)?;
    let (host, port) = broker(&a.broker)?;
    let issued_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let id = format!("store-{issued_ms}");
    let expires_ms = Some(issued_ms.saturating_add(a.valid_s.saturating_mul(1000)));
    let header =
        Header { id: id.clone(), issued_ms, devices: a.devices.clone(), expires_ms, action: Action::Store };
    let payload = signed::sign(&key, &header, &bytes);
    log::info!("{}: {} labels, {} bytes, command {id}", a.prompts.display(), store.len(), bytes.len());

    let mut o = MqttOptions::new(format!("clip-edge-publish-{}", std::process::id()), host.clone(), port);
    o.set_max_packet_size(1 << 20, payload.len() + 4096);
    o.set_keep_alive(Duration::from_secs(10));
    let (client, mut conn) = Client::new(o, 16);
    // The connection runs on its own thread: a timed-out `Connection::recv_timeout`
    // would drop rumqttc's future midway and restart a slow connect.
    let (tx, events) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(ev) = conn.recv() {
            let failed = ev.is_err();
            if tx.send(ev).is_err() || failed {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(a.timeout_s);
    let mut replies: BTreeMap<String, BoardReply> = BTreeMap::new();
    let mut sent = false;
    while Instant::now() < deadline {
        let event = match events.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(e)) => e,
            Ok(Err(e)) => bail!("broker {host}:{port}: {e}"),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                bail!("broker {host}:{port}: connection ended")
            }
        };
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                client.try_subscribe("clip-edge/+/cmd/result", QoS::AtLeastOnce)?;
            }
            Event::Incoming(Packet::SubAck(_)) if !sent => {
                sent = true;
                if a.devices.is_empty() {
                    client.try_publish("clip-edge/all/cmd", QoS::AtLeastOnce, false, payload.clone())?;
                } else {
                    for d in &a.devices {
                        client.try_publish(
                            format!("clip-edge/{d}/cmd"),
                            QoS::AtLeastOnce,
                            false,
                            payload.clone(),
                        )?;
                    }
                }
            }
            Event::Incoming(Packet::Publish(p)) => {
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) else { continue };
                if v["id"].as_str() != Some(id.as_str()) && !(v["id"].is_null() && v["ok"] == false) {
                    continue;
                }
                let device = v["device"].as_str().unwrap_or("?").to_string();
                let took = v["ok"] == true;
                let error = v["error"].as_str().map(String::from);
                replies
                    .insert(device.clone(), BoardReply { device, took, error, labels: v["labels"].as_u64() });
                if !a.devices.is_empty() && a.devices.iter().all(|d| replies.contains_key(d)) {
                    break;
                }
            }
            _ => {}
        }
    }
    let _ = client.try_disconnect();
    if !sent {
        bail!("broker {host}:{port} did not take the subscription within {} s", a.timeout_s);
    }
    let no_answer: Vec<String> = a.devices.iter().filter(|d| !replies.contains_key(*d)).cloned().collect();
    let failed = !no_answer.is_empty() || replies.values().any(|r| !r.took);
    let report = PublishReport {
        id,
        prompts: a.prompts.display().to_string(),
        bytes: bytes.len(),
        replies: replies.into_values().collect(),
        no_answer,
    };
    Format::from_flag(a.json).print(&report)?;
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
