//! Signed fleet commands: what `clip-edge publish-store` sends and
//! `clip-edge-board` accepts on `<prefix>/cmd` (`docs/mqtt.md`).
//!
//! Wire format, little-endian: `CECMD001`, header length (u32), the header
//! (JSON: [`Header`]), body length (u64), the body (a prompt store for
//! `store`, empty otherwise), then an ed25519 signature over every byte
//! before it. Keys are files of 64 hex digits: the 32-byte secret seed, or
//! the 32-byte public key. A board trusts one public key; write access to the
//! broker alone cannot make a valid command.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"CECMD001";
const SIG: usize = 64;
/// Largest header accepted.
pub const MAX_HEADER: usize = 16 << 10;

/// Why a command was refused: a kind a caller can match and one line for the reply.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignedError {
    /// Not in the signed format at all (a plain or foreign payload).
    #[error("not a signed clip-edge command")]
    Unsigned,
    /// The bytes end early or carry data after the signature.
    #[error("malformed command: {0}")]
    Malformed(String),
    /// The body is over the receiver's limit.
    #[error("the command's body is {len} bytes, over the limit of {max}")]
    TooLarge {
        /// Body length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The signature does not verify with the trusted key.
    #[error("bad signature: not signed by the key this board trusts")]
    BadSignature,
}

/// What a command asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
pub enum Action {
    /// Reload the prompt store from flash.
    Reload,
    /// Capture `frames` frames and store them as shots of `class`.
    Enroll {
        /// The class.
        class: String,
        /// Frames to capture.
        frames: u32,
    },
    /// Replace the prompt store with the body.
    Store,
}

/// The signed header of a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Chosen by the sender; the reply carries it.
    pub id: String,
    /// Sender's clock, ms since the Unix epoch: a board refuses any command
    /// not newer than the last one it accepted (no replays).
    pub issued_ms: u64,
    /// Boards the command is for; empty: every board that receives it.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Sender's clock, ms since the Unix epoch: a board whose clock is past
    /// it refuses the command (one held back and delivered late). `None`: no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    /// The action.
    #[serde(flatten)]
    pub action: Action,
}

/// Encodes and signs a command.
pub fn sign(key: &SigningKey, header: &Header, body: &[u8]) -> Vec<u8> {
    let head = serde_json::to_vec(header).unwrap_or_default();
    let mut out = Vec::with_capacity(head.len().saturating_add(body.len()).saturating_add(84));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&u32::try_from(head.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    let sig = key.sign(&out);
    out.extend_from_slice(&sig.to_bytes());
    out
}

/// Checks the format, the size limit and the signature, then parses the header.
pub fn verify<'a>(
    trusted: &VerifyingKey,
    bytes: &'a [u8],
    max_body: u64,
) -> Result<(Header, &'a [u8]), SignedError> {
    let short = || SignedError::Malformed("ends early".into());
    if bytes.get(..8) != Some(MAGIC.as_slice()) {
        return Err(SignedError::Unsigned);
    }
    let rest = bytes.get(8..).ok_or_else(short)?;
    let head_len =
        rest.get(..4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes).ok_or_else(short)? as usize;
    if head_len > MAX_HEADER {
        return Err(SignedError::Malformed(format!("header of {head_len} bytes")));
    }
    let rest = rest.get(4..).ok_or_else(short)?;
    let head = rest.get(..head_len).ok_or_else(short)?;
    let rest = rest.get(head_len..).ok_or_else(short)?;
    let body_len = rest.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).ok_or_else(short)?;
    if body_len > max_body {
        return Err(SignedError::TooLarge { len: body_len, max: max_body });
    }
    let rest = rest.get(8..).ok_or_else(short)?;
    let body_len = usize::try_from(body_len).map_err(|_| short())?;
    let body = rest.get(..body_len).ok_or_else(short)?;
    let sig = rest.get(body_len..).ok_or_else(short)?;
    let sig: [u8; SIG] = sig.try_into().map_err(|_| SignedError::Malformed("bad signature length".into()))?;
    let signed = bytes.get(..bytes.len().saturating_sub(SIG)).ok_or_else(short)?;
    trusted.verify(signed, &Signature::from_bytes(&sig)).map_err(|_| SignedError::BadSignature)?;
    let header: Header =
        serde_json::from_slice(head).map_err(|e| SignedError::Malformed(format!("header: {e}")))?;
    Ok((header, body))
}

/// Key file errors, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct KeyError {
    /// The key file.
    pub path: std::path::PathBuf,
    /// What is wrong.
    pub message: String,
}

fn read_hex32(path: &Path) -> Result<[u8; 32], KeyError> {
    let err = |message: String| KeyError { path: path.into(), message };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let hex = text.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err("not a key: expected 64 hex digits".into()));
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        let s = std::str::from_utf8(pair).map_err(|e| err(e.to_string()))?;
        *o = u8::from_str_radix(s, 16).map_err(|e| err(e.to_string()))?;
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a secret key file.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    read_hex32(path).map(|seed| SigningKey::from_bytes(&seed))
}

/// Reads a public key file.
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let bytes = read_hex32(path)?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|e| KeyError { path: path.into(), message: format!("not an ed25519 public key: {e}") })
}

/// A new key from the kernel's random source: `(secret file text, public file text)`.
pub fn generate() -> std::io::Result<(String, String)> {
    use std::io::Read;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    let key = SigningKey::from_bytes(&seed);
    Ok((format!("{}\n", hex(&seed)), format!("{}\n", hex(key.verifying_key().as_bytes()))))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn header() -> Header {
        Header {
            id: "a1".into(),
            issued_ms: 5,
            devices: vec!["porch".into()],
            expires_ms: None,
            action: Action::Store,
        }
    }

    #[test]
    fn a_signed_command_round_trips() {
        let bytes = sign(&key(1), &header(), b"store bytes");
        let (h, body) = verify(&key(1).verifying_key(), &bytes, 100).expect("valid");
        assert_eq!((h, body), (header(), b"store bytes".as_slice()));
        let enroll = Header { action: Action::Enroll { class: "van".into(), frames: 4 }, ..header() };
        let json = serde_json::to_string(&enroll).expect("json");
        assert!(json.contains("\"cmd\":\"enroll\"") && json.contains("\"class\":\"van\""), "{json}");
    }

    #[test]
    fn every_tampering_is_refused() {
        let good = sign(&key(1), &header(), b"store bytes");
        let trusted = key(1).verifying_key();
        assert_eq!(verify(&key(2).verifying_key(), &good, 100), Err(SignedError::BadSignature));
        assert_eq!(verify(&trusted, b"{\"cmd\":\"reload\"}", 100), Err(SignedError::Unsigned));
        assert!(matches!(verify(&trusted, &good, 5), Err(SignedError::TooLarge { len: 11, max: 5 })));
        for i in 8..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert!(verify(&trusted, &bad, 100).is_err(), "flipped byte {i} accepted");
        }
        for cut in 0..good.len() {
            assert!(verify(&trusted, &good[..cut], 100).is_err(), "cut at {cut} accepted");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(verify(&trusted, &longer, 100).is_err());
    }

    #[test]
    fn key_files_round_trip_and_bad_ones_name_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let (secret, public) = generate().expect("urandom");
        std::fs::write(dir.path().join("k"), secret).expect("write");
        std::fs::write(dir.path().join("k.pub"), public).expect("write");
        let s = read_signing_key(&dir.path().join("k")).expect("secret");
        let p = read_verifying_key(&dir.path().join("k.pub")).expect("public");
        assert_eq!(s.verifying_key(), p);
        std::fs::write(dir.path().join("bad"), "xyz").expect("write");
        let e = read_verifying_key(&dir.path().join("bad")).expect_err("bad").to_string();
        assert!(e.contains("bad: not a key"), "{e}");
    }
}
