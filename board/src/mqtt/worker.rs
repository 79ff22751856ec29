//! The worker thread: one connection at a time, replay after reconnects,
//! acknowledgements into the outbox, and the messages that are not events.
//!
//! Each connection gets a fresh rumqttc client (clean session): what the
//! broker did not acknowledge is replayed from the outbox, never from
//! rumqttc's own queue, so every packet id maps to one known event.
//! rumqttc's connection is driven by a thread of its own ([`Events`]):
//! `Connection::recv_timeout` would drop its future midway, which restarts a
//! connect that takes longer than the timeout and can lose a half-written
//! packet.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    Client, Connection, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, Transport,
};

use super::{discovery, lock, MqttError, Shared, Tag, DRAIN};
use crate::config::TlsFiles;

const TICK: Duration = Duration::from_millis(50);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How often the acknowledged-through mark is written: each write is an fsync under the
/// outbox lock (it can delay an event by that long); a crash resends at most this much.
const PERSIST_EVERY: Duration = Duration::from_secs(5);

/// The rustls client configuration for `files` (ring, no OpenSSL).
pub(super) fn tls_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, MqttError> {
    let tls_err = |path: &std::path::Path, message: String| MqttError::Tls { path: path.into(), message };
    let read =
        |path: &std::path::Path| std::fs::read(path).map_err(|e| tls_err(path, format!("cannot read: {e}")));
    let mut roots = rustls::RootCertStore::empty();
    match &files.ca {
        Some(ca) => {
            let pem = read(ca)?;
            let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<_, _>>()
                .map_err(|e| tls_err(ca, format!("not PEM certificates: {e}")))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(tls_err(ca, "holds no usable CA certificate".into()));
            }
        }
        None => {
            let found = rustls_native_roots();
            if found.is_empty() {
                return Err(tls_err(
                    std::path::Path::new("/etc/ssl/certs"),
                    "no system CA certificates; set mqtt.ca_file".into(),
                ));
            }
            roots.add_parsable_certificates(found);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(std::path::Path::new("rustls"), e.to_string()))?
        .with_root_certificates(roots);
    let config = match &files.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let pem = read(cert)?;
            let chain: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<_, _>>()
                .map_err(|e| tls_err(cert, format!("not PEM certificates: {e}")))?;
            let pem = read(key)?;
            let key_der = rustls_pemfile::private_key(&mut pem.as_slice())
                .map_err(|e| tls_err(key, format!("not a PEM key: {e}")))?
                .ok_or_else(|| tls_err(key, "holds no private key".into()))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| tls_err(cert, e.to_string()))?
        }
    };
    Ok(Arc::new(config))
}

/// The system's CA certificates (Debian's `/etc/ssl/certs/ca-certificates.crt`).
fn rustls_native_roots() -> Vec<rustls::pki_types::CertificateDer<'static>> {
    let Ok(pem) = std::fs::read("/etc/ssl/certs/ca-certificates.crt") else { return Vec::new() };
    rustls_pemfile::certs(&mut pem.as_slice()).filter_map(Result::ok).collect()
}

fn options(s: &Shared) -> MqttOptions {
    let c = &s.cfg;
    let mut o = MqttOptions::new(&c.client_id, &c.broker.host, c.broker.port);
    o.set_keep_alive(c.keep_alive);
    o.set_clean_session(true);
    o.set_inflight(super::WINDOW as u16 + 16);
    let largest = c.snapshot_max_bytes.max(super::outbox::MAX_RECORD) + 4096;
    // A store command a little over the limit still arrives, to be refused with a reply.
    let commands = c.commands.as_ref().map_or(0, |m| m.max_store_bytes as usize + (64 << 10));
    o.set_max_packet_size(commands.max(256 << 10), largest);
    o.set_last_will(LastWill::new(s.topic("status"), "offline", QoS::AtLeastOnce, true));
    if let Some((user, password)) = &c.credentials {
        o.set_credentials(user, password);
    }
    if let Some(tls) = &s.tls {
        o.set_transport(Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls.clone())));
    }
    o
}

/// The events of one connection, read by a thread that owns it; it ends
/// after the connection's first error or when the client is dropped.
struct Events(std::sync::mpsc::Receiver<Result<Event, ConnectionError>>);

enum Next {
    Event(Event),
    Failed(ConnectionError),
    Idle,
    Ended,
}

impl Events {
    fn spawn(mut conn: Connection) -> Events {
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new().name("mqtt-conn".into()).spawn(move || loop {
            match conn.recv() {
                Ok(Ok(ev)) => {
                    if tx.send(Ok(ev)).is_err() {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    let _ = tx.send(Err(e));
                    break;
                }
                Err(_) => break,
            }
        });
        if let Err(e) = spawned {
            log::error!("mqtt: cannot start the connection thread: {e}");
        }
        Events(rx)
    }

    fn next(&self, timeout: Duration) -> Next {
        match self.0.recv_timeout(timeout) {
            Ok(Ok(ev)) => Next::Event(ev),
            Ok(Err(e)) => Next::Failed(e),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Next::Idle,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Next::Ended,
        }
    }
}

/// What the worker keeps between connections.
#[derive(Default)]
struct Board {
    classes: Vec<String>,
    fingerprint: String,
    announced: BTreeSet<String>,
    last_stats: Option<Instant>,
    last_persist: Option<Instant>,
}

/// The worker's loop, until the daemon stops it.
pub(super) fn run(s: &Shared) {
    let mut board = Board::default();
    let mut backoff = BACKOFF_MIN;
    let mut outage: Option<(Instant, String)> = None;
    loop {
        let (client, conn) = Client::new(options(s), 2 * super::WINDOW + 64);
        let events = Events::spawn(conn);
        {
            let mut link = lock(&s.link);
            *link =
                super::Link { client: Some(client), cursor: lock(&s.outbox).acked(), ..Default::default() };
        }
        let ended = session(s, &events, &mut board, &mut outage, &mut backoff);
        lock(&s.link).client = None;
        persist(s, &mut board, true);
        if ended {
            return;
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            if s.stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(TICK.min(until.saturating_duration_since(Instant::now())));
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection; true when the daemon is stopping and the worker is done.
fn session(
    s: &Shared,
    events: &Events,
    board: &mut Board,
    outage: &mut Option<(Instant, String)>,
    backoff: &mut Duration,
) -> bool {
    let mut stopping: Option<Instant> = None;
    loop {
        if s.stop.load(Ordering::Relaxed) {
            let since = *stopping.get_or_insert_with(Instant::now);
            let connected = lock(&s.link).connected;
            // Not connected yet is no reason to go: a short run can stop before its first ConnAck (a failed
            // connection ends the session below; DRAIN bounds the wait either way).
            if lock(&s.outbox).owed() == 0 || since.elapsed() > DRAIN {
                if connected {
                    goodbye(s, events);
                }
                return true;
            }
        }
        match events.next(TICK) {
            Next::Event(Event::Incoming(Packet::ConnAck(_))) => {
                if let Some((since, _)) = outage.take() {
                    log::info!("mqtt: connected again after {:.1} s", since.elapsed().as_secs_f64());
                } else {
                    log::info!("mqtt: connected to {}:{}", s.cfg.broker.host, s.cfg.broker.port);
                }
                lock(&s.counters).reconnects += 1;
                *backoff = BACKOFF_MIN;
                on_connect(s, board);
            }
            Next::Event(Event::Outgoing(Outgoing::Publish(pkid))) => sent(s, pkid),
            Next::Event(Event::Incoming(Packet::PubAck(ack))) => acked(s, ack.pkid),
            Next::Event(Event::Incoming(Packet::Publish(p))) => {
                if command_topics(s).contains(&p.topic) {
                    on_command(s, &p.payload);
                } else {
                    stale_config(s, board, &p.topic, &p.payload);
                }
            }
            Next::Event(_) | Next::Idle => {}
            Next::Failed(e) => {
                let what = e.to_string();
                match outage {
                    Some((_, last)) if *last == what => log::debug!("mqtt: still down: {what}"),
                    _ => log::warn!(
                        "mqtt: {}:{}: {what}; events wait in {} (retrying after {:.1} s, backing off to {} s)",
                        s.cfg.broker.host,
                        s.cfg.broker.port,
                        s.cfg.outbox.display(),
                        backoff.as_secs_f64(),
                        BACKOFF_MAX.as_secs()
                    ),
                }
                let since = outage.as_ref().map_or_else(Instant::now, |o| o.0);
                *outage = Some((since, what));
                lock(&s.link).connected = false;
                return false;
            }
            Next::Ended => return false,
        }
        if lock(&s.link).connected {
            s.pump();
            publish_pending(s, board);
        }
        persist(s, board, false);
    }
}

/// rumqttc sent the oldest queued publish with packet id `pkid`.
fn sent(s: &Shared, pkid: u16) {
    let mut link = lock(&s.link);
    if let Some(Tag::Event(seq)) = link.fifo.pop_front() {
        link.inflight.insert(pkid, seq);
    }
}

/// The broker acknowledged packet `pkid`.
fn acked(s: &Shared, pkid: u16) {
    let seq = lock(&s.link).inflight.remove(&pkid);
    if let Some(seq) = seq {
        lock(&s.outbox).ack(seq);
    }
}

fn on_connect(s: &Shared, board: &mut Board) {
    let mut link = lock(&s.link);
    link.connected = true;
    link.cursor = lock(&s.outbox).acked();
    link.send(&s.topic("status"), QoS::AtLeastOnce, true, b"online".to_vec(), Tag::Other);
    if let (Some(d), Some(c)) = (&s.cfg.discovery, &link.client) {
        if let Err(e) = c.try_subscribe(discovery::filter(&s.cfg, d), QoS::AtLeastOnce) {
            log::warn!("mqtt: cannot look for stale discovery topics: {e}");
        }
    }
    if let (Some(_), Some(c)) = (&s.cfg.commands, &link.client) {
        for topic in command_topics(s) {
            if let Err(e) = c.try_subscribe(topic, QoS::AtLeastOnce) {
                log::warn!("mqtt: cannot subscribe to commands: {e}");
            }
        }
    }
    drop(link);
    board.announced.clear();
    board.last_stats = None;
    if !board.classes.is_empty() {
        announce(s, board);
    }
}

/// The topics fleet commands arrive on.
fn command_topics(s: &Shared) -> [String; 2] {
    [s.topic("cmd"), "clip-edge/all/cmd".to_string()]
}

/// A payload on a command topic: through the gate to the daemon, or refused with a reply.
fn on_command(s: &Shared, payload: &[u8]) {
    let Some(gate) = &s.gate else { return };
    let admitted = lock(gate).admit(payload);
    match admitted {
        Ok(cmd) => {
            log::info!("mqtt: command {} ({:?}) accepted", cmd.header.id, cmd.header.action);
            lock(&s.pending).commands.push_back(cmd);
        }
        Err(r) => s.reply(r.id.as_deref(), None, Err(r.error)),
    }
}

/// Publishes the discovery configs of the current labels.
fn announce(s: &Shared, board: &mut Board) {
    let Some(d) = &s.cfg.discovery else { return };
    let labels: Vec<String> = if s.output_labels.is_empty() {
        board.classes.clone()
    } else {
        s.output_labels.iter().filter(|l| board.classes.contains(l)).cloned().collect()
    };
    let mut link = lock(&s.link);
    let mut topics = BTreeSet::new();
    for (topic, payload) in discovery::configs(&s.cfg, d, &s.model, &labels) {
        let bytes = serde_json::to_vec(&payload).unwrap_or_default();
        link.send(&topic, QoS::AtLeastOnce, true, bytes, Tag::Other);
        topics.insert(topic);
    }
    for gone in board.announced.difference(&topics) {
        link.send(gone, QoS::AtLeastOnce, true, Vec::new(), Tag::Other);
    }
    board.announced = topics;
}

/// A retained config topic of this board that the current labels do not
/// have (a label left the store, here or before a restart): removed.
fn stale_config(s: &Shared, board: &Board, topic: &str, payload: &[u8]) {
    if payload.is_empty() || board.announced.is_empty() || board.announced.contains(topic) {
        return;
    }
    log::info!("mqtt: removing discovery topic {topic} (its label left the store)");
    lock(&s.link).send(topic, QoS::AtLeastOnce, true, Vec::new(), Tag::Other);
}

fn publish_pending(s: &Shared, board: &mut Board) {
    let (state, detected, snapshots, store) = {
        let mut p = lock(&s.pending);
        (p.state.take(), std::mem::take(&mut p.detected), std::mem::take(&mut p.snapshots), p.store.take())
    };
    if let Some((classes, fingerprint)) = store {
        let changed = classes != board.classes;
        board.classes = classes;
        board.fingerprint = fingerprint;
        if changed || board.announced.is_empty() {
            announce(s, board);
        }
    }
    let replies = std::mem::take(&mut lock(&s.pending).replies);
    let mut link = lock(&s.link);
    for r in replies {
        link.send(&s.topic("cmd/result"), QoS::AtLeastOnce, false, r, Tag::Other);
    }
    if let Some(state) = state {
        link.send(&s.topic("state"), QoS::AtLeastOnce, true, state, Tag::Other);
    }
    let off = s.cfg.discovery.as_ref().map_or(Duration::from_secs(10), |d| d.off_delay);
    for (label, at) in detected {
        if at.elapsed() < off {
            let topic = s.topic(&format!("{}/detected", discovery::slug(&label)));
            link.send(&topic, QoS::AtLeastOnce, false, b"ON".to_vec(), Tag::Other);
        }
    }
    drop(link);
    for (label, frame) in snapshots {
        if let Some(jpeg) = jpeg_under(&frame, s.cfg.snapshot_max_bytes) {
            let topic = s.topic(&format!("{}/snapshot", discovery::slug(&label)));
            lock(&s.link).send(&topic, QoS::AtLeastOnce, true, jpeg, Tag::Other);
        } else {
            log::warn!("mqtt: no snapshot of '{label}' fits mqtt.snapshot_max_bytes");
        }
    }
    if board.last_stats.is_none_or(|t| t.elapsed() >= s.cfg.stats_interval) {
        board.last_stats = Some(Instant::now());
        let stats = stats(s, board);
        lock(&s.link).send(&s.topic("stats"), QoS::AtMostOnce, true, stats, Tag::Other);
    }
}

fn stats(s: &Shared, board: &Board) -> Vec<u8> {
    let c = lock(&s.counters);
    let mut lat: Vec<f64> = c.latencies.iter().copied().collect();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat.get(i).copied()
    };
    let o = lock(&s.outbox);
    let v = serde_json::json!({
        "device": s.cfg.device,
        "uptime_s": s.started.elapsed().as_secs(),
        "events": c.events,
        "errors": c.errors,
        "coalesced": c.coalesced,
        "connections": c.reconnects,
        "model": s.model,
        "store": board.fingerprint,
        "labels": board.classes.len(),
        "latency_ms": { "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "samples": lat.len() },
        "outbox": { "bytes": o.file_len(), "peak_bytes": o.peak_len(), "owed": o.owed(), "dropped": o.dropped() },
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The frame as JPEG, halved until it fits `max` bytes (at most five times).
fn jpeg_under(frame: &image::RgbImage, max: usize) -> Option<Vec<u8>> {
    let mut img = std::borrow::Cow::Borrowed(frame);
    for _ in 0..6 {
        let mut out = Vec::new();
        let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80);
        if img.write_with_encoder(enc).is_ok() && out.len() <= max {
            return Some(out);
        }
        let (w, h) = (img.width() / 2, img.height() / 2);
        if w == 0 || h == 0 {
            return None;
        }
        img = std::borrow::Cow::Owned(image::imageops::thumbnail(img.as_ref(), w, h));
    }
    None
}

fn persist(s: &Shared, board: &mut Board, now: bool) {
    if now || board.last_persist.is_none_or(|t| t.elapsed() >= PERSIST_EVERY) {
        board.last_persist = Some(Instant::now());
        if let Err(e) = lock(&s.outbox).persist() {
            log::error!("mqtt: {e}");
        }
    }
}

/// `offline` (retained) and a clean disconnect, waiting briefly for both to go out.
fn goodbye(s: &Shared, events: &Events) {
    {
        let mut link = lock(&s.link);
        link.send(&s.topic("status"), QoS::AtLeastOnce, true, b"offline".to_vec(), Tag::Other);
        if let Some(c) = &link.client {
            let _ = c.try_disconnect();
        }
    }
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        match events.next(TICK) {
            Next::Event(Event::Outgoing(Outgoing::Disconnect)) | Next::Failed(_) | Next::Ended => break,
            Next::Event(Event::Incoming(Packet::PubAck(ack))) => acked(s, ack.pkid),
            Next::Event(Event::Outgoing(Outgoing::Publish(pkid))) => sent(s, pkid),
            _ => {}
        }
    }
    log::info!("mqtt: disconnected (offline published)");
}
