//! systemd notifications (`sd_notify`): READY, WATCHDOG pings, STOPPING.
//! Without `NOTIFY_SOCKET` in the environment (not under systemd) it does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// A connection to systemd's notification socket, if the service has one.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, String)>,
    watchdog: Option<Duration>,
    last_ping: Instant,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` from the environment, as
    /// systemd sets them for a `Type=notify` service with `WatchdogSec=`.
    pub fn from_env() -> Notifier {
        let path = std::env::var("NOTIFY_SOCKET").ok().filter(|p| !p.is_empty());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&us| us > 0)
            .map(Duration::from_micros);
        Notifier::to(path, watchdog)
    }

    /// Notifies nobody (not under systemd).
    pub fn none() -> Notifier {
        Notifier::to(None, None)
    }

    /// Notifies the datagram socket at `path` (`@name`: an abstract one) and
    /// expects a watchdog ping every `watchdog` if given.
    pub fn to(path: Option<String>, watchdog: Option<Duration>) -> Notifier {
        let socket = path.and_then(|p| UnixDatagram::unbound().ok().map(|s| (s, p)));
        Notifier { socket, watchdog, last_ping: Instant::now() }
    }

    /// Sends one notification line (e.g. `READY=1`).
    pub fn send(&self, msg: &str) {
        let Some((sock, path)) = &self.socket else { return };
        let result = if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|addr| sock.send_to_addr(msg.as_bytes(), &addr))
        } else {
            sock.send_to(msg.as_bytes(), path)
        };
        if let Err(e) = result {
            log::warn!("sd_notify {msg}: {e}");
        }
    }

    /// How often the loop must wake up to ping the watchdog, if one is set.
    pub fn interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// Pings the watchdog if half its period has passed.
    pub fn ping_if_due(&mut self) {
        if let Some(i) = self.interval() {
            if self.last_ping.elapsed() >= i {
                self.send("WATCHDOG=1");
                self.last_ping = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_the_socket() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::to(Some(path.display().to_string()), Some(Duration::from_millis(10)));
        n.send("READY=1");
        let mut buf = [0u8; 32];
        let len = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1");
        assert_eq!(n.interval(), Some(Duration::from_millis(5)));
    }
}
