//! The on-flash outbox: events wait here until the broker acknowledges them.
//!
//! One append-only file of checksummed records, `CEOUTBX1` then per record
//! `magic "CER1" | seq u64 | len u32 | crc32 u32 | payload`, little-endian,
//! the CRC over seq, len and payload. Each append is `fdatasync`ed before the
//! event counts as reported. A power cut can only tear the last record: on
//! open a bad record ends the valid part and the file is cut back to it.
//! Acknowledged records are forgotten through a small state file (`PATH.state`,
//! written atomically: acknowledged-through seq, last seq, dropped count);
//! when they take more than half the cap, or an append would pass it, the file
//! is rewritten atomically with only the records still owed (the oldest
//! dropped and counted when those alone pass the cap). So the file never holds
//! a mix of two versions, and `seq` continues across restarts.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::collections::{BTreeSet, VecDeque};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const FILE_MAGIC: &[u8; 8] = b"CEOUTBX1";
const RECORD_MAGIC: &[u8; 4] = b"CER1";
const STATE_MAGIC: &[u8; 8] = b"CEOBST01";
/// Record header: magic, seq, len, crc.
const HEAD: usize = 4 + 8 + 4 + 4;
/// Largest payload one record may hold.
pub const MAX_RECORD: usize = 60 << 10;

/// Outbox failures, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// Reading or writing the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not an outbox, or its state file is corrupt.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A payload over [`MAX_RECORD`].
    #[error("{}: an event of {len} bytes is over the outbox's {MAX_RECORD}-byte record limit", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Payload size.
        len: usize,
    },
}

/// One event owed to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number.
    pub seq: u64,
    /// The JSON payload.
    pub payload: Vec<u8>,
}

/// The outbox (see the module documentation).
#[derive(Debug)]
pub struct Outbox {
    path: PathBuf,
    file: std::fs::File,
    /// `PATH.lock`, held (flock) while this outbox is open: one writer per outbox.
    _lock: std::fs::File,
    cap: u64,
    owed: VecDeque<Record>,
    acked_early: BTreeSet<u64>,
    acked: u64,
    last_seq: u64,
    dropped: u64,
    file_len: u64,
    state_dirty: bool,
    peak: u64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io { path: path.to_path_buf(), source }
}

fn record_len(payload: usize) -> u64 {
    (HEAD as u64).saturating_add(payload as u64)
}

fn encode(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(&len.to_le_bytes());
    crc.update(payload);
    out.extend_from_slice(RECORD_MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

fn le_u64(b: &[u8]) -> Option<u64> {
    b.get(..8)?.try_into().ok().map(u64::from_le_bytes)
}

fn le_u32(b: &[u8]) -> Option<u32> {
    b.get(..4)?.try_into().ok().map(u32::from_le_bytes)
}

/// Parses records from `bytes` (after the file magic): the valid ones in
/// order, and the length of the valid prefix.
pub fn parse_records(mut bytes: &[u8]) -> (Vec<Record>, usize) {
    let (mut records, mut valid) = (Vec::new(), 0usize);
    while let Some(head) = bytes.get(..HEAD) {
        let (Some(magic), Some(seq), Some(len), Some(crc)) = (
            head.get(..4),
            head.get(4..).and_then(le_u64),
            head.get(12..).and_then(le_u32),
            head.get(16..).and_then(le_u32),
        ) else {
            break;
        };
        let len = len as usize;
        if magic != RECORD_MAGIC || len > MAX_RECORD {
            break;
        }
        let Some(payload) = bytes.get(HEAD..).and_then(|b| b.get(..len)) else { break };
        let mut h = crc32fast::Hasher::new();
        h.update(&seq.to_le_bytes());
        h.update(&(len as u32).to_le_bytes());
        h.update(payload);
        if h.finalize() != crc || records.last().is_some_and(|r: &Record| r.seq >= seq) {
            break;
        }
        records.push(Record { seq, payload: payload.to_vec() });
        let n = HEAD.saturating_add(len);
        valid = valid.saturating_add(n);
        bytes = bytes.get(n..).unwrap_or_default();
    }
    (records, valid)
}

impl Outbox {
    /// Opens (or creates) the outbox at `path`, capped at `cap` bytes. A torn
    /// last record is cut off (and logged); anything else that is not an
    /// outbox is an error, and the file is left as it is.
    pub fn open(path: &Path, cap: u64) -> Result<Outbox, OutboxError> {
        let err = io(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(&err)?;
        }
        let lock = lock_file(path)?;
        let (acked, mut last_seq, dropped) = read_state(&state_path(path))?;
        let mut file =
            std::fs::OpenOptions::new().read(true).append(true).create(true).open(path).map_err(&err)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(&err)?;
        let mut file_len = bytes.len() as u64;
        if bytes.is_empty() {
            file.write_all(FILE_MAGIC).map_err(&err)?;
            file.sync_data().map_err(&err)?;
            file_len = FILE_MAGIC.len() as u64;
        } else if bytes.get(..8) != Some(FILE_MAGIC.as_slice()) {
            return Err(OutboxError::Format { path: path.into(), message: "not a clip-edge outbox".into() });
        }
        let body = bytes.get(8..).unwrap_or_default();
        let (records, valid) = parse_records(body);
        if valid < body.len() {
            log::warn!(
                "{}: {} bytes after the last whole record (a cut write) removed",
                path.display(),
                body.len().saturating_sub(valid)
            );
            file_len = (valid as u64).saturating_add(8);
            file.set_len(file_len).map_err(&err)?;
            file.sync_data().map_err(&err)?;
            file.seek(SeekFrom::End(0)).map_err(&err)?;
        }
        last_seq = last_seq.max(records.last().map_or(0, |r| r.seq)).max(acked);
        let owed: VecDeque<Record> = records.into_iter().filter(|r| r.seq > acked).collect();
        let mut outbox = Outbox {
            path: path.into(),
            file,
            _lock: lock,
            cap,
            owed,
            acked_early: BTreeSet::new(),
            acked,
            last_seq,
            dropped,
            file_len,
            state_dirty: false,
            peak: file_len,
        };
        if outbox.file_len > cap {
            outbox.compact(0)?;
        }
        Ok(outbox)
    }

    /// The highest sequence number ever appended (or acknowledged): the next event's is one more.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Events dropped at the cap since the outbox was created.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Size of the file now.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Largest size of the file since it was opened.
    pub fn peak_len(&self) -> u64 {
        self.peak
    }

    /// Events still owed to the broker.
    pub fn owed(&self) -> usize {
        self.owed.len()
    }

    /// The first owed record after `seq`.
    pub fn next_after(&self, seq: u64) -> Option<&Record> {
        self.owed.iter().find(|r| r.seq > seq && !self.acked_early.contains(&r.seq))
    }

    /// The acknowledged-through sequence number.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Appends one event, synced to flash before it returns. `seq` must be
    /// above every earlier one.
    pub fn append(&mut self, seq: u64, payload: &[u8]) -> Result<(), OutboxError> {
        if payload.len() > MAX_RECORD {
            return Err(OutboxError::TooLarge { path: self.path.clone(), len: payload.len() });
        }
        if seq <= self.last_seq {
            return Err(OutboxError::Format {
                path: self.path.clone(),
                message: format!("event {seq} is not after the last one ({})", self.last_seq),
            });
        }
        let add = record_len(payload.len());
        if self.file_len.saturating_add(add) > self.cap {
            self.compact(add)?;
        }
        let mut buf = Vec::with_capacity(HEAD.saturating_add(payload.len()));
        encode(seq, payload, &mut buf);
        let err = io(&self.path);
        if let Err(e) = self.file.write_all(&buf).and_then(|()| self.file.sync_data()) {
            // A partial record would end the valid part and hide later ones at the next open.
            if let Err(cut) = self.file.set_len(self.file_len) {
                log::error!("{}: cannot cut back a failed append: {cut}", self.path.display());
            }
            return Err(err(e));
        }
        self.file_len = self.file_len.saturating_add(add);
        self.peak = self.peak.max(self.file_len);
        self.last_seq = seq;
        self.owed.push_back(Record { seq, payload: payload.to_vec() });
        Ok(())
    }

    /// The broker acknowledged `seq`. Records are forgotten in order, so an
    /// acknowledgement that overtakes an earlier one waits for it.
    pub fn ack(&mut self, seq: u64) {
        if seq <= self.acked {
            return;
        }
        self.acked_early.insert(seq);
        while let Some(front) = self.owed.front() {
            if !self.acked_early.remove(&front.seq) {
                break;
            }
            self.acked = front.seq;
            self.owed.pop_front();
            self.state_dirty = true;
        }
    }

    /// Writes the acknowledged-through mark if it moved, and rewrites the file
    /// when acknowledged records take more than half the cap.
    pub fn persist(&mut self) -> Result<(), OutboxError> {
        let live: u64 = self.owed.iter().map(|r| record_len(r.payload.len())).sum();
        if self.file_len.saturating_sub(live) > self.cap / 2 {
            return self.compact(0);
        }
        if self.state_dirty {
            self.write_state()?;
        }
        Ok(())
    }

    fn write_state(&mut self) -> Result<(), OutboxError> {
        let mut b = Vec::with_capacity(36);
        b.extend_from_slice(STATE_MAGIC);
        for v in [self.acked, self.last_seq, self.dropped] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        let path = state_path(&self.path);
        clip_edge_runtime::store::write_atomic(&path, &b)
            .map_err(|e| OutboxError::Io { path, source: std::io::Error::other(e.to_string()) })?;
        self.state_dirty = false;
        Ok(())
    }

    /// Rewrites the file with the owed records, dropping the oldest until
    /// `room` more bytes fit under the cap. The state goes first: a cut
    /// between the two leaves acknowledged records in the file, which the
    /// next open skips.
    fn compact(&mut self, room: u64) -> Result<(), OutboxError> {
        let budget = self.cap.saturating_sub(room).saturating_sub(FILE_MAGIC.len() as u64);
        let mut live: u64 = self.owed.iter().map(|r| record_len(r.payload.len())).sum();
        // Dropping goes down to three quarters of the cap, so a long outage
        // rewrites the file once per quarter of the cap, not once per event.
        let floor = if live > budget { budget.min((self.cap / 4).saturating_mul(3)) } else { budget };
        while live > floor {
            let Some(r) = self.owed.pop_front() else { break };
            live = live.saturating_sub(record_len(r.payload.len()));
            self.acked_early.remove(&r.seq);
            self.acked = r.seq;
            self.dropped = self.dropped.saturating_add(1);
            log::warn!("{}: outbox full, event {} dropped unsent", self.path.display(), r.seq);
        }
        self.write_state()?;
        let mut bytes = FILE_MAGIC.to_vec();
        for r in &self.owed {
            encode(r.seq, &r.payload, &mut bytes);
        }
        clip_edge_runtime::store::write_atomic(&self.path, &bytes).map_err(|e| OutboxError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let err = io(&self.path);
        self.file = std::fs::OpenOptions::new().append(true).open(&self.path).map_err(&err)?;
        self.file_len = bytes.len() as u64;
        Ok(())
    }
}

/// Takes `PATH.lock` (created if missing) for this process, or fails naming the outbox.
fn lock_file(path: &Path) -> Result<std::fs::File, OutboxError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| {
        OutboxError::Format {
            path: path.into(),
            message: "in use by another process (another clip-edge-board with this outbox?)".into(),
        }
    })?;
    Ok(f)
}

fn state_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".state");
    PathBuf::from(s)
}

/// `(acked, last_seq, dropped)`; zeros when there is no state file yet.
fn read_state(path: &Path) -> Result<(u64, u64, u64), OutboxError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0, 0)),
        Err(e) => return Err(io(path)(e)),
    };
    let parsed = (bytes.len() == 36 && bytes.get(..8) == Some(STATE_MAGIC.as_slice()))
        .then(|| bytes.split_at(32))
        .filter(|(body, crc)| le_u32(crc) == Some(crc32fast::hash(body)))
        .and_then(|(body, _)| {
            Some((le_u64(body.get(8..)?)?, le_u64(body.get(16..)?)?, le_u64(body.get(24..)?)?))
        });
    if let Some(state) = parsed {
        return Ok(state);
    }
    // Not written by us (atomic writes cannot tear it): kept aside for a
    // look, and the outbox goes on from its records, resending them all.
    let mut aside = path.as_os_str().to_owned();
    aside.push(".corrupt");
    log::error!(
        "{}: corrupt outbox state (bad magic or CRC), moved to {}; every event in the outbox will be sent again",
        path.display(),
        PathBuf::from(&aside).display()
    );
    std::fs::rename(path, &aside).map_err(io(path))?;
    Ok((0, 0, 0))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests;
