//! `[mqtt]`: the broker the daemon reports to (`docs/mqtt.md`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// How to reach the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// Host name or address.
    pub host: String,
    /// TCP port (default 1883, 8883 for `mqtts://`).
    pub port: u16,
    /// TLS (`mqtts://`), with its files.
    pub tls: Option<TlsFiles>,
}

/// TLS files: the CA that signs the broker's certificate and an optional
/// client certificate with its key (PEM).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsFiles {
    /// CA certificates (PEM); `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// Client certificate chain and key, for brokers that ask for one.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Home Assistant MQTT discovery.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    /// Discovery topic prefix (default `homeassistant`).
    pub prefix: String,
    /// A label's binary sensor turns off this long after its last match.
    pub off_delay: Duration,
}

/// `[mqtt.commands]`: signed fleet commands on `<prefix>/cmd` and `clip-edge/all/cmd`.
#[derive(Debug, Clone, PartialEq)]
pub struct Commands {
    /// The public key whose signatures the board accepts.
    pub trusted: ed25519_dalek::VerifyingKey,
    /// Largest prompt store accepted in a `store` command.
    pub max_store_bytes: u64,
    /// Where the newest accepted command's time is kept (replays are refused).
    pub state: PathBuf,
}

/// The validated `[mqtt]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    /// The broker.
    pub broker: Broker,
    /// This board's name in topics, events and Home Assistant (default: the host name).
    pub device: String,
    /// MQTT client id (default: the device name).
    pub client_id: String,
    /// User name and password, if the broker asks for them.
    pub credentials: Option<(String, String)>,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// Topic prefix (default `clip-edge/<device>`).
    pub prefix: String,
    /// The on-flash outbox file (events wait here until the broker acknowledges them).
    pub outbox: PathBuf,
    /// Most bytes the outbox may hold; the oldest events are dropped (and counted) beyond it.
    pub outbox_max_bytes: u64,
    /// Time between `stats` messages.
    pub stats_interval: Duration,
    /// Largest JPEG snapshot published; 0: no snapshots.
    pub snapshot_max_bytes: usize,
    /// Home Assistant discovery, if on.
    pub discovery: Option<Discovery>,
    /// Fleet commands, if enabled.
    pub commands: Option<Commands>,
}

/// `[mqtt]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MqttSection {
    url: String,
    device: Option<String>,
    client_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    #[serde(default = "default_keep_alive")]
    keep_alive_s: u64,
    topic_prefix: Option<String>,
    #[serde(default = "default_outbox")]
    outbox: PathBuf,
    #[serde(default = "default_outbox_bytes")]
    outbox_max_bytes: u64,
    #[serde(default = "default_stats")]
    stats_interval_s: u64,
    #[serde(default = "default_snapshot")]
    snapshot_max_bytes: usize,
    #[serde(default)]
    discovery: DiscoverySection,
    #[serde(default)]
    commands: CommandsSection,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct CommandsSection {
    enabled: bool,
    public_key: Option<PathBuf>,
    max_store_bytes: u64,
}

impl Default for CommandsSection {
    fn default() -> Self {
        CommandsSection { enabled: false, public_key: None, max_store_bytes: 8 << 20 }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct DiscoverySection {
    enabled: bool,
    prefix: String,
    off_delay_s: u64,
}

impl Default for DiscoverySection {
    fn default() -> Self {
        DiscoverySection { enabled: true, prefix: "homeassistant".into(), off_delay_s: 10 }
    }
}

fn default_keep_alive() -> u64 {
    30
}
fn default_outbox() -> PathBuf {
    PathBuf::from("/var/lib/clip-edge/mqtt.outbox")
}
fn default_outbox_bytes() -> u64 {
    1 << 20
}
fn default_stats() -> u64 {
    60
}
fn default_snapshot() -> usize {
    256 << 10
}

/// Smallest outbox cap: one largest event must fit.
pub const MIN_OUTBOX_BYTES: u64 = 64 << 10;
/// Largest outbox cap: the owed events are also held in memory.
pub const MAX_OUTBOX_BYTES: u64 = 64 << 20;

impl MqttSection {
    /// Validates the section; `resolve` anchors relative paths at the config's folder.
    pub(super) fn validate(
        self,
        path: &Path,
        resolve: &dyn Fn(&Path) -> PathBuf,
    ) -> Result<MqttConfig, ConfigError> {
        let key =
            |k: &str, m: String| ConfigError { path: path.into(), message: format!("key 'mqtt.{k}': {m}") };
        let (tls, rest) = match self.url.split_once("://") {
            Some(("mqtt", rest)) => (false, rest),
            Some(("mqtts", rest)) => (true, rest),
            _ => {
                return Err(key(
                    "url",
                    format!("'{}' is not mqtt://HOST[:PORT] or mqtts://HOST[:PORT]", self.url),
                ))
            }
        };
        let (host, port) = host_port(rest.trim_end_matches('/'), if tls { 8883 } else { 1883 })
            .ok_or_else(|| key("url", format!("'{}' has no valid host and port", self.url)))?;
        let files = [
            ("ca_file", &self.ca_file),
            ("client_cert", &self.client_cert),
            ("client_key", &self.client_key),
        ];
        if !tls {
            if let Some((k, _)) = files.iter().find(|(_, f)| f.is_some()) {
                return Err(key(k, "TLS files need an mqtts:// url".into()));
            }
        }
        let client = match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => Some((resolve(c), resolve(k))),
            (None, None) => None,
            _ => return Err(key("client_cert", "client_cert and client_key go together".into())),
        };
        let tls = tls.then(|| TlsFiles { ca: self.ca_file.as_deref().map(resolve), client });

        let device = match self.device {
            Some(d) => d,
            None => hostname().ok_or_else(|| key("device", "no host name to default to; set it".into()))?,
        };
        if device.is_empty() || !device.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(key("device", format!("'{device}' must be letters, digits, '-' or '_'")));
        }
        let prefix = self.topic_prefix.unwrap_or_else(|| format!("clip-edge/{device}"));
        if prefix.is_empty()
            || prefix.contains(['+', '#'])
            || prefix.ends_with('/')
            || prefix.starts_with('/')
        {
            return Err(key(
                "topic_prefix",
                format!("'{prefix}' is not a topic (no '+', '#', or '/' at the ends)"),
            ));
        }
        let password = match (self.password, &self.password_file) {
            (Some(_), Some(_)) => {
                return Err(key("password_file", "give password or password_file, not both".into()))
            }
            (Some(p), None) => Some(p),
            (None, Some(f)) => {
                let f = resolve(f);
                let text = std::fs::read_to_string(&f)
                    .map_err(|e| key("password_file", format!("{}: {e}", f.display())))?;
                Some(text.trim_end_matches(['\n', '\r']).to_string())
            }
            (None, None) => None,
        };
        let credentials = match (self.username, password) {
            (Some(u), p) => Some((u, p.unwrap_or_default())),
            (None, None) => None,
            (None, Some(_)) => return Err(key("password", "a password needs a username".into())),
        };
        if !(1..=3600).contains(&self.keep_alive_s) {
            return Err(key("keep_alive_s", format!("{} is out of range 1..=3600", self.keep_alive_s)));
        }
        if !(MIN_OUTBOX_BYTES..=MAX_OUTBOX_BYTES).contains(&self.outbox_max_bytes) {
            let range = format!("{MIN_OUTBOX_BYTES}..={MAX_OUTBOX_BYTES}");
            return Err(key(
                "outbox_max_bytes",
                format!("{} is out of range {range}", self.outbox_max_bytes),
            ));
        }
        if !(1..=86_400).contains(&self.stats_interval_s) {
            return Err(key(
                "stats_interval_s",
                format!("{} is out of range 1..=86400", self.stats_interval_s),
            ));
        }
        if self.snapshot_max_bytes > 8 << 20 {
            return Err(key("snapshot_max_bytes", format!("{} is over 8 MiB", self.snapshot_max_bytes)));
        }
        let d = self.discovery;
        if d.enabled && (d.prefix.is_empty() || d.prefix.contains(['+', '#'])) {
            return Err(key("discovery.prefix", format!("'{}' is not a topic", d.prefix)));
        }
        if !(1..=86_400).contains(&d.off_delay_s) {
            return Err(key("discovery.off_delay_s", format!("{} is out of range 1..=86400", d.off_delay_s)));
        }
        let c = self.commands;
        let commands = if c.enabled {
            let Some(key_file) = c.public_key else {
                return Err(key(
                    "commands.public_key",
                    "enabled commands need the public key they are signed with".into(),
                ));
            };
            let trusted = clip_edge_runtime::signed::read_verifying_key(&resolve(&key_file))
                .map_err(|e| key("commands.public_key", e.to_string()))?;
            if !(1..=64 << 20).contains(&c.max_store_bytes) {
                return Err(key(
                    "commands.max_store_bytes",
                    format!("{} is out of range 1..=67108864", c.max_store_bytes),
                ));
            }
            let mut state = resolve(&self.outbox).into_os_string();
            state.push(".commands");
            Some(Commands { trusted, max_store_bytes: c.max_store_bytes, state: state.into() })
        } else {
            None
        };
        Ok(MqttConfig {
            commands,
            broker: Broker { host, port, tls },
            client_id: self.client_id.unwrap_or_else(|| device.clone()),
            device,
            credentials,
            keep_alive: Duration::from_secs(self.keep_alive_s),
            prefix,
            outbox: resolve(&self.outbox),
            outbox_max_bytes: self.outbox_max_bytes,
            stats_interval: Duration::from_secs(self.stats_interval_s),
            snapshot_max_bytes: self.snapshot_max_bytes,
            discovery: d
                .enabled
                .then(|| Discovery { prefix: d.prefix, off_delay: Duration::from_secs(d.off_delay_s) }),
        })
    }
}

/// `HOST[:PORT]` or `[V6]:PORT`.
fn host_port(s: &str, default: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (h, rest) = v6.split_once(']')?;
        (h, rest.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = port.map_or(Some(default), |p| p.parse().ok().filter(|p| *p != 0))?;
    let ok = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c));
    ok.then(|| (host.to_string(), port))
}

/// The kernel's host name, cut to what a device name may hold.
fn hostname() -> Option<String> {
    let name = rustix::system::uname().nodename().to_string_lossy().into_owned();
    let name: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MqttConfig, ConfigError> {
        let s: MqttSection = toml::from_str(text).expect("toml");
        s.validate(Path::new("/etc/clip-edge/board.toml"), &|p| Path::new("/etc/clip-edge").join(p))
    }

    #[test]
    fn urls_and_defaults() {
        let c = parse("url = \"mqtt://broker.lan\"\ndevice = \"porch\"").expect("ok");
        assert_eq!(c.broker, Broker { host: "broker.lan".into(), port: 1883, tls: None });
        assert_eq!((c.prefix.as_str(), c.client_id.as_str()), ("clip-edge/porch", "porch"));
        assert_eq!(c.outbox, PathBuf::from("/var/lib/clip-edge/mqtt.outbox"));
        let c = parse("url = \"mqtts://[::1]:9883\"\ndevice = \"a\"\nca_file = \"ca.pem\"").expect("ok");
        assert_eq!(c.broker.port, 9883);
        assert_eq!(c.broker.tls.expect("tls").ca, Some(PathBuf::from("/etc/clip-edge/ca.pem")));
        assert!(!parse("url = \"mqtt://h\"").expect("hostname default").device.is_empty());
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, k) in [
            ("url = \"http://h\"", "mqtt.url"),
            ("url = \"mqtt://h:0\"", "mqtt.url"),
            ("url = \"mqtt://h:99999\"", "mqtt.url"),
            ("url = \"mqtt://\"", "mqtt.url"),
            ("url = \"mqtt://h\"\nca_file = \"x\"", "mqtt.ca_file"),
            ("url = \"mqtts://h\"\nclient_cert = \"x\"", "mqtt.client_cert"),
            ("url = \"mqtt://h\"\ndevice = \"a b\"", "mqtt.device"),
            ("url = \"mqtt://h\"\ntopic_prefix = \"a/#\"", "mqtt.topic_prefix"),
            ("url = \"mqtt://h\"\npassword = \"p\"", "mqtt.password"),
            ("url = \"mqtt://h\"\npassword_file = \"/nonexistent/p\"", "mqtt.password_file"),
            ("url = \"mqtt://h\"\noutbox_max_bytes = 10", "mqtt.outbox_max_bytes"),
            ("url = \"mqtt://h\"\nkeep_alive_s = 0", "mqtt.keep_alive_s"),
            ("url = \"mqtt://h\"\n[discovery]\noff_delay_s = 0", "mqtt.discovery.off_delay_s"),
        ] {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(&format!("'{k}'")), "{text}: {e}");
            assert!(e.starts_with("/etc/clip-edge/board.toml: "), "{e}");
        }
    }

    #[test]
    fn a_password_file_is_read_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("pass");
        std::fs::write(&f, "s3cret\n").expect("write");
        let text = format!("url = \"mqtt://h\"\nusername = \"cam\"\npassword_file = \"{}\"", f.display());
        assert_eq!(parse(&text).expect("ok").credentials, Some(("cam".into(), "s3cret".into())));
    }
}
