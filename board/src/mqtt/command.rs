//! The gate of fleet commands: signature, size, addressee and replay checks
//! before a command reaches the daemon (`docs/mqtt.md`).

use clip_edge_runtime::signed::{self, Action, Header};

use crate::config::Commands;

/// A command that passed the gate, for the daemon to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The signed header.
    pub header: Header,
    /// The body (a prompt store for `store`).
    pub body: Vec<u8>,
}

/// Why a command was refused: the reply's `error`, and the id when the header could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The command's id, if its signature held.
    pub id: Option<String>,
    /// One line.
    pub error: String,
}

/// The gate, with the newest accepted command's time (kept on flash).
#[derive(Debug)]
pub struct Gate {
    cfg: Commands,
    device: String,
    last_issued: u64,
}

impl Gate {
    /// Opens the gate's state; a missing file means no command was accepted yet.
    pub fn open(cfg: &Commands, device: &str) -> Result<Gate, String> {
        let last_issued = match std::fs::read_to_string(&cfg.state) {
            Ok(t) => match t.trim().parse() {
                Ok(ms) => ms,
                Err(_) => {
                    // Not ours (atomic writes cannot tear it): refuse every
                    // command issued before now rather than open a replay window.
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(u64::MAX, |d| d.as_millis() as u64);
                    log::error!(
                        "{}: not a command time; refusing commands issued before now",
                        cfg.state.display()
                    );
                    now
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(format!("{}: {e}", cfg.state.display())),
        };
        Ok(Gate { cfg: cfg.clone(), device: device.into(), last_issued })
    }

    /// Checks one payload; an admitted command's time is written to flash
    /// before it is handed on, so a replay after a restart is refused too.
    pub fn admit(&mut self, payload: &[u8]) -> Result<Admitted, Refusal> {
        let refuse = |id: Option<String>, error: String| Refusal { id, error };
        let (header, body) = signed::verify(&self.cfg.trusted, payload, self.cfg.max_store_bytes)
            .map_err(|e| refuse(None, e.to_string()))?;
        let id = Some(header.id.clone());
        if !header.devices.is_empty() && !header.devices.contains(&self.device) {
            return Err(refuse(id, format!("not addressed to '{}'", self.device)));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if let Some(expires) = header.expires_ms.filter(|e| *e < now) {
            return Err(refuse(
                id,
                format!("expired: valid until {expires} ms, this board's clock says {now} ms"),
            ));
        }
        if header.issued_ms <= self.last_issued {
            return Err(refuse(
                id,
                format!("replayed or stale: issued {} ms, not after {}", header.issued_ms, self.last_issued),
            ));
        }
        if header.action != Action::Store && !body.is_empty() {
            return Err(refuse(id, "only a store command carries a body".into()));
        }
        let text = format!("{}\n", header.issued_ms);
        clip_edge_runtime::store::write_atomic(&self.cfg.state, text.as_bytes())
            .map_err(|e| refuse(id.clone(), format!("cannot record the command: {e}")))?;
        self.last_issued = header.issued_ms;
        Ok(Admitted { header, body: body.to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn gate(dir: &std::path::Path) -> Gate {
        let cfg = Commands {
            trusted: SigningKey::from_bytes(&[7; 32]).verifying_key(),
            max_store_bytes: 1000,
            state: dir.join("cmd.state"),
        };
        Gate::open(&cfg, "porch").expect("gate")
    }

    fn cmd(key: u8, issued_ms: u64, devices: &[&str], action: Action, body: &[u8]) -> Vec<u8> {
        let header = Header {
            id: format!("c{issued_ms}"),
            issued_ms,
            devices: devices.iter().map(|d| d.to_string()).collect(),
            expires_ms: None,
            action,
        };
        signed::sign(&SigningKey::from_bytes(&[key; 32]), &header, body)
    }

    #[test]
    fn only_new_signed_commands_for_this_board_pass() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut g = gate(dir.path());
        assert!(g.admit(&cmd(7, 10, &[], Action::Reload, b"")).is_ok());
        let replay = g.admit(&cmd(7, 10, &[], Action::Reload, b"")).expect_err("replay");
        assert!(replay.error.contains("replayed"), "{replay:?}");
        let other = g.admit(&cmd(8, 11, &[], Action::Reload, b"")).expect_err("other key");
        assert_eq!((other.id, other.error.contains("bad signature")), (None, true));
        let elsewhere = g.admit(&cmd(7, 12, &["garage"], Action::Store, b"x")).expect_err("not ours");
        assert_eq!(elsewhere.id.as_deref(), Some("c12"));
        assert!(g.admit(&cmd(7, 13, &["garage", "porch"], Action::Store, b"x")).is_ok());
        let big = g.admit(&cmd(7, 14, &[], Action::Store, &[0; 1001])).expect_err("too large");
        assert!(big.error.contains("over the limit"), "{big:?}");
        assert!(g.admit(b"{\"cmd\":\"reload\"}").expect_err("unsigned").error.contains("not a signed"));
        let mut late = Header {
            id: "late".into(),
            issued_ms: 15,
            devices: vec![],
            expires_ms: Some(1),
            action: Action::Reload,
        };
        let key = SigningKey::from_bytes(&[7; 32]);
        assert!(g.admit(&signed::sign(&key, &late, b"")).expect_err("expired").error.contains("expired"));
        late.expires_ms = Some(u64::MAX);
        assert!(g.admit(&signed::sign(&key, &late, b"")).is_ok());
        // The time survives a restart.
        let mut g = gate(dir.path());
        assert!(g.admit(&cmd(7, 13, &[], Action::Reload, b"")).is_err());
        assert!(g.admit(&cmd(7, 20, &[], Action::Reload, b"")).is_ok());
    }
}
