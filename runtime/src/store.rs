//! The prompt store: precomputed text embeddings on the device's flash.
//!
//! Layout (little-endian; full description in `docs/prompt-store.md`):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `CLIPSTOR` |
//! | 8 | 2 | format version (1) |
//! | 10 | 1 | element type: 0 f32, 1 f16, 2 int8 with a per-row f32 scale |
//! | 11 | 1 | reserved, 0 |
//! | 12 | 4 | embedding dimension |
//! | 16 | 4 | entry count |
//! | 20 | 4 | logit scale (f32) |
//! | 24 | 32 | model fingerprint |
//! | 56 | 4 | label table length in bytes |
//! | 60 | 4 | metadata length in bytes |
//! | 64 | 8 | offset of the embedding block (multiple of 64) |
//! | 72 | 8 | total file length, CRC included |
//! | 80 | 48 | reserved, 0 |
//! | 128 | … | label table: per entry kind (u8: 0 class, 1 background), length (u16), UTF-8 label |
//! | … | … | metadata: UTF-8 JSON |
//! | … | … | zero padding up to the embedding block |
//! | emb | … | int8 only: `count` f32 scales; then `count × dim` elements, row-major |
//! | end-4 | 4 | CRC-32 (IEEE) of every byte before it |
//!
//! The reader takes the file in one read into an 8-byte aligned buffer and
//! serves rows straight from it. The writer replaces the file atomically.

use std::collections::HashSet;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use half::f16;
use serde::{Deserialize, Serialize};

use crate::bundle::hex;
use crate::error::{Error, Result};

/// File magic.
pub const MAGIC: &[u8; 8] = b"CLIPSTOR";
/// Format version written and read by this runtime.
pub const VERSION: u16 = 1;
const HEADER_LEN: usize = 128;
const ALIGN: usize = 64;
const MAX_DIM: u32 = 65_536;
const MAX_COUNT: u32 = 1_000_000;
const MAX_LABEL_BYTES: usize = u16::MAX as usize;

/// Element type of the stored embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ElementType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// 8-bit integer with one f32 scale per row.
    Int8,
}

impl ElementType {
    fn code(self) -> u8 {
        match self {
            ElementType::F32 => 0,
            ElementType::F16 => 1,
            ElementType::Int8 => 2,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(ElementType::F32),
            1 => Some(ElementType::F16),
            2 => Some(ElementType::Int8),
            _ => None,
        }
    }

    /// Bytes of the embedding block for `count` rows of `dim` values.
    pub fn block_len(self, count: usize, dim: usize) -> usize {
        match self {
            ElementType::F32 => count * dim * 4,
            ElementType::F16 => count * dim * 2,
            ElementType::Int8 => count * 4 + count * dim,
        }
    }

    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ElementType::F32 => "f32",
            ElementType::F16 => "f16",
            ElementType::Int8 => "int8",
        }
    }
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ElementType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(ElementType::F32),
            "f16" => Ok(ElementType::F16),
            "int8" => Ok(ElementType::Int8),
            other => Err(format!("unknown element type '{other}' (expected f32, f16 or int8)")),
        }
    }
}

/// Whether an entry is a class to report or a background that absorbs uninteresting frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A class the user wants recognised.
    Class,
    /// A background or negative prompt: winning means "nothing of interest".
    Background,
}

/// One labelled row of the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The label reported when this row wins.
    pub label: String,
    /// Class or background.
    pub kind: EntryKind,
}

/// Build information kept with the embeddings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreMeta {
    /// Program that built the store.
    #[serde(default)]
    pub tool: String,
    /// Prompt templates used (empty for stores not built from text).
    #[serde(default)]
    pub templates: Vec<String>,
    /// Number of prompts averaged into each entry, in entry order.
    #[serde(default)]
    pub prompts_per_entry: Vec<u32>,
    /// Build time (RFC 3339), if the builder recorded one.
    #[serde(default)]
    pub built_at: Option<String>,
    /// Free-form note (for example "placeholder: random unit vectors").
    #[serde(default)]
    pub note: Option<String>,
}

/// The fixed-size header, as read from a file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Header {
    /// Format version.
    pub version: u16,
    /// Element type of the rows.
    pub element: ElementType,
    /// Embedding dimension.
    pub dim: u32,
    /// Number of entries.
    pub count: u32,
    /// Logit scale to use with these embeddings.
    pub logit_scale: f32,
    /// Fingerprint of the model the store was built for.
    #[serde(serialize_with = "ser_hex")]
    pub fingerprint: [u8; 32],
    /// Total file length in bytes.
    pub file_len: u64,
}

fn ser_hex<S: serde::Serializer>(v: &[u8; 32], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&hex(v))
}

/// A validated prompt store held in memory.
#[derive(Debug, Clone)]
pub struct PromptStore {
    path: PathBuf,
    header: Header,
    entries: Vec<Entry>,
    meta: StoreMeta,
    buf: Vec<u64>,
    emb_offset: usize,
}

impl PromptStore {
    /// Reads and validates the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<PromptStore> {
        let path = path.as_ref();
        let mut file = std::fs::File::open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::store(path, "file does not exist")
            } else {
                Error::io(path, e)
            }
        })?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let max = HEADER_LEN as u64 + 2 * (MAX_COUNT as u64) * (MAX_DIM as u64 * 4 + 256);
        if len > max {
            return Err(Error::store(path, format!("{len} bytes is larger than any valid store")));
        }
        let mut buf = vec![0u64; (len as usize).div_ceil(8)];
        {
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut buf);
            std::io::Read::read_exact(&mut file, &mut bytes[..len as usize])
                .map_err(|e| Error::io(path, e))?;
        }
        Self::from_buffer(path, buf, len as usize)
    }

    /// Validates a store held in memory; `path` names it in errors.
    pub fn from_bytes(path: impl AsRef<Path>, data: &[u8]) -> Result<PromptStore> {
        let mut buf = vec![0u64; data.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut buf)[..data.len()].copy_from_slice(data);
        Self::from_buffer(path.as_ref(), buf, data.len())
    }

    fn from_buffer(path: &Path, buf: Vec<u64>, len: usize) -> Result<PromptStore> {
        let bad = |m: String| Error::store(path, m);
        let bytes = &bytemuck::cast_slice::<u64, u8>(&buf)[..len];
        if len < HEADER_LEN + 4 {
            return Err(bad(format!(
                "file is {len} bytes, shorter than the {HEADER_LEN}-byte header (truncated or not a prompt store)"
            )));
        }
        if &bytes[0..8] != MAGIC {
            return Err(bad("bad magic: not a clip-edge prompt store".into()));
        }
        let version = u16_at(bytes, 8);
        if version != VERSION {
            return Err(bad(format!(
                "format version {version} is not supported (this runtime reads version {VERSION})"
            )));
        }
        let file_len = u64_at(bytes, 72);
        if file_len != len as u64 {
            return Err(bad(format!(
                "header says {file_len} bytes but the file has {len} (truncated or corrupt)"
            )));
        }
        let stored_crc = u32_at(bytes, len - 4);
        let crc = crc32fast::hash(&bytes[..len - 4]);
        if crc != stored_crc {
            return Err(bad(format!(
                "checksum mismatch (stored {stored_crc:08x}, computed {crc:08x}): the file is corrupt"
            )));
        }
        let element = ElementType::from_code(bytes[10])
            .ok_or_else(|| bad(format!("unknown element type code {}", bytes[10])))?;
        let dim = u32_at(bytes, 12);
        let count = u32_at(bytes, 16);
        if dim == 0 || dim > MAX_DIM {
            return Err(bad(format!("embedding dimension {dim} is out of range 1..={MAX_DIM}")));
        }
        if count == 0 || count > MAX_COUNT {
            return Err(bad(format!("entry count {count} is out of range 1..={MAX_COUNT}")));
        }
        let logit_scale = f32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
        if !(logit_scale.is_finite() && logit_scale > 0.0) {
            return Err(bad(format!("logit scale {logit_scale} is not a positive number")));
        }
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(&bytes[24..56]);
        let labels_len = u32_at(bytes, 56) as usize;
        let meta_len = u32_at(bytes, 60) as usize;
        let emb_offset = u64_at(bytes, 64) as usize;
        let labels_end = HEADER_LEN
            .checked_add(labels_len)
            .and_then(|v| v.checked_add(meta_len))
            .filter(|&v| v <= emb_offset)
            .ok_or_else(|| bad("label and metadata blocks overlap the embedding block".into()))?;
        let block = element.block_len(count as usize, dim as usize);
        if !emb_offset.is_multiple_of(ALIGN) || emb_offset + block + 4 != len {
            return Err(bad(format!(
                "embedding block at {emb_offset} of {block} bytes does not fit a {len}-byte file"
            )));
        }
        let entries =
            parse_labels(&bytes[HEADER_LEN..HEADER_LEN + labels_len], count as usize).map_err(bad)?;
        let meta_bytes = &bytes[HEADER_LEN + labels_len..labels_end];
        let meta: StoreMeta = if meta_bytes.is_empty() {
            StoreMeta::default()
        } else {
            serde_json::from_slice(meta_bytes)
                .map_err(|e| bad(format!("metadata block is not valid JSON: {e}")))?
        };
        let header = Header { version, element, dim, count, logit_scale, fingerprint, file_len };
        let store = PromptStore { path: path.to_path_buf(), header, entries, meta, buf, emb_offset };
        store.check_rows()?;
        Ok(store)
    }

    fn check_rows(&self) -> Result<()> {
        let finite = match self.rows() {
            Rows::F32(v) => v.iter().all(|x| x.is_finite()),
            Rows::F16(v) => v.iter().all(|x| x.is_finite()),
            Rows::Int8 { scales, .. } => scales.iter().all(|s| s.is_finite() && *s >= 0.0),
        };
        if finite {
            Ok(())
        } else {
            Err(Error::store(&self.path, "embedding block holds NaN, infinite or negative-scale values"))
        }
    }

    /// The file this store was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header fields.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Labels and kinds, in row order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Build metadata.
    pub fn meta(&self) -> &StoreMeta {
        &self.meta
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the store has no entries (never true for a validated store).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.header.dim as usize
    }

    /// Fails unless the store was built for `fingerprint` with dimension `dim`.
    pub fn check_model(&self, fingerprint: &[u8; 32], dim: usize) -> Result<()> {
        if &self.header.fingerprint != fingerprint {
            return Err(Error::StoreModelMismatch {
                path: self.path.clone(),
                store: hex(&self.header.fingerprint),
                bundle: hex(fingerprint),
            });
        }
        if self.dim() != dim {
            return Err(Error::store(
                &self.path,
                format!("embedding dimension {} does not match the model's {dim}", self.dim()),
            ));
        }
        Ok(())
    }

    fn rows(&self) -> Rows<'_> {
        let bytes = bytemuck::cast_slice::<u64, u8>(&self.buf);
        let n = self.len() * self.dim();
        let start = self.emb_offset;
        match self.header.element {
            ElementType::F32 => Rows::F32(bytemuck::cast_slice(&bytes[start..start + n * 4])),
            ElementType::F16 => Rows::F16(bytemuck::cast_slice(&bytes[start..start + n * 2])),
            ElementType::Int8 => {
                let scales_end = start + self.len() * 4;
                Rows::Int8 {
                    scales: bytemuck::cast_slice(&bytes[start..scales_end]),
                    values: bytemuck::cast_slice(&bytes[scales_end..scales_end + n]),
                }
            }
        }
    }

    /// Row `i` decoded to f32 (for inspection and tools; scoring reads rows in place).
    pub fn row_f32(&self, i: usize) -> Vec<f32> {
        let d = self.dim();
        match self.rows() {
            Rows::F32(v) => v[i * d..(i + 1) * d].to_vec(),
            Rows::F16(v) => v[i * d..(i + 1) * d].iter().map(|x| x.to_f32()).collect(),
            Rows::Int8 { scales, values } => {
                values[i * d..(i + 1) * d].iter().map(|&q| q as f32 * scales[i]).collect()
            }
        }
    }

    /// Dot product of `query` (length `dim`) with every row, written to `out` (length `len`).
    pub fn dot_all(&self, query: &[f32], out: &mut [f32]) {
        let d = self.dim();
        assert_eq!(query.len(), d, "query dimension");
        assert_eq!(out.len(), self.len(), "output length");
        match self.rows() {
            Rows::F32(v) => {
                for (o, row) in out.iter_mut().zip(v.chunks_exact(d)) {
                    *o = row.iter().zip(query).map(|(a, b)| a * b).sum();
                }
            }
            Rows::F16(v) => {
                for (o, row) in out.iter_mut().zip(v.chunks_exact(d)) {
                    *o = row.iter().zip(query).map(|(a, b)| a.to_f32() * b).sum();
                }
            }
            Rows::Int8 { scales, values } => {
                for ((o, row), s) in out.iter_mut().zip(values.chunks_exact(d)).zip(scales) {
                    *o = row.iter().zip(query).map(|(&a, b)| a as f32 * b).sum::<f32>() * s;
                }
            }
        }
    }
}

enum Rows<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Int8 { scales: &'a [f32], values: &'a [i8] },
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn parse_labels(mut b: &[u8], count: usize) -> std::result::Result<Vec<Entry>, String> {
    let mut entries = Vec::with_capacity(count);
    let mut seen = HashSet::new();
    for i in 0..count {
        if b.len() < 3 {
            return Err(format!("label table ends before entry {i} of {count}"));
        }
        let kind = match b[0] {
            0 => EntryKind::Class,
            1 => EntryKind::Background,
            k => return Err(format!("entry {i} has unknown kind code {k}")),
        };
        let n = u16::from_le_bytes([b[1], b[2]]) as usize;
        let text = b.get(3..3 + n).ok_or_else(|| format!("label of entry {i} runs past the label table"))?;
        let label =
            std::str::from_utf8(text).map_err(|_| format!("label of entry {i} is not UTF-8"))?.to_string();
        if label.trim().is_empty() {
            return Err(format!("entry {i} has an empty label"));
        }
        if !seen.insert(label.clone()) {
            return Err(format!("label '{label}' appears twice"));
        }
        entries.push(Entry { label, kind });
        b = &b[3 + n..];
    }
    if !b.is_empty() {
        return Err(format!("{} unexpected bytes after the last label", b.len()));
    }
    Ok(entries)
}

/// Assembles a prompt store from normalised embeddings.
#[derive(Debug, Clone)]
pub struct StoreBuilder {
    dim: usize,
    fingerprint: [u8; 32],
    logit_scale: f32,
    element: ElementType,
    meta: StoreMeta,
    entries: Vec<Entry>,
    rows: Vec<f32>,
}

impl StoreBuilder {
    /// A builder for `dim`-dimensional embeddings of the model `fingerprint`.
    pub fn new(dim: usize, fingerprint: [u8; 32], logit_scale: f32, element: ElementType) -> Self {
        StoreBuilder {
            dim,
            fingerprint,
            logit_scale,
            element,
            meta: StoreMeta::default(),
            entries: Vec::new(),
            rows: Vec::new(),
        }
    }

    /// Sets the metadata block.
    pub fn meta(mut self, meta: StoreMeta) -> Self {
        self.meta = meta;
        self
    }

    /// Adds an entry; `embedding` is L2-normalised here.
    pub fn push(&mut self, label: &str, kind: EntryKind, embedding: &[f32]) -> Result<()> {
        let usage = |m: String| Error::Usage(m);
        if label.trim().is_empty() {
            return Err(usage("a label must not be empty".into()));
        }
        if label.len() > MAX_LABEL_BYTES {
            return Err(usage(format!("label '{}…' is longer than {MAX_LABEL_BYTES} bytes", &label[..32])));
        }
        if self.entries.iter().any(|e| e.label == label) {
            return Err(usage(format!("label '{label}' is given twice")));
        }
        if embedding.len() != self.dim {
            return Err(usage(format!(
                "embedding for '{label}' has {} values, expected {}",
                embedding.len(),
                self.dim
            )));
        }
        let norm = embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
        if !(norm.is_finite() && norm > 0.0) {
            return Err(usage(format!("embedding for '{label}' has norm {norm}")));
        }
        self.entries.push(Entry { label: label.to_string(), kind });
        self.rows.extend(embedding.iter().map(|v| v / norm));
        Ok(())
    }

    /// Serialises the store.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        if self.entries.is_empty() {
            return Err(Error::Usage("a prompt store needs at least one entry".into()));
        }
        if !(self.logit_scale.is_finite() && self.logit_scale > 0.0) {
            return Err(Error::Usage(format!("logit scale {} is not positive", self.logit_scale)));
        }
        let mut labels = Vec::new();
        for e in &self.entries {
            labels.push(match e.kind {
                EntryKind::Class => 0,
                EntryKind::Background => 1,
            });
            labels.extend_from_slice(&(e.label.len() as u16).to_le_bytes());
            labels.extend_from_slice(e.label.as_bytes());
        }
        let meta = serde_json::to_vec(&self.meta).map_err(|e| Error::Usage(e.to_string()))?;
        let count = self.entries.len();
        let emb_offset = (HEADER_LEN + labels.len() + meta.len()).next_multiple_of(ALIGN);
        let block = self.element.block_len(count, self.dim);
        let file_len = emb_offset + block + 4;

        let mut out = Vec::with_capacity(file_len);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(self.element.code());
        out.push(0);
        out.extend_from_slice(&(self.dim as u32).to_le_bytes());
        out.extend_from_slice(&(count as u32).to_le_bytes());
        out.extend_from_slice(&self.logit_scale.to_le_bytes());
        out.extend_from_slice(&self.fingerprint);
        out.extend_from_slice(&(labels.len() as u32).to_le_bytes());
        out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(&(emb_offset as u64).to_le_bytes());
        out.extend_from_slice(&(file_len as u64).to_le_bytes());
        out.resize(HEADER_LEN, 0);
        out.extend_from_slice(&labels);
        out.extend_from_slice(&meta);
        out.resize(emb_offset, 0);
        match self.element {
            ElementType::F32 => self.rows.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            ElementType::F16 => {
                self.rows.iter().for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes()))
            }
            ElementType::Int8 => {
                let scales: Vec<f32> = self
                    .rows
                    .chunks_exact(self.dim)
                    .map(|r| r.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0)
                    .collect();
                scales.iter().for_each(|s| out.extend_from_slice(&s.to_le_bytes()));
                for (row, s) in self.rows.chunks_exact(self.dim).zip(&scales) {
                    out.extend(row.iter().map(|v| (v / s).round().clamp(-127.0, 127.0) as i8 as u8));
                }
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(out.len(), file_len);
        Ok(out)
    }

    /// Serialises the store and replaces `path` atomically.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), &self.to_bytes()?)
    }
}

/// Replaces `path` with `data` so that a crash or power cut leaves either the
/// old file or the new one: write a temporary file in the same folder, fsync
/// it, rename it over `path`, fsync the folder.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name =
        path.file_name().ok_or_else(|| Error::Usage(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder(element: ElementType) -> StoreBuilder {
        let mut b = StoreBuilder::new(4, [7; 32], 100.0, element).meta(StoreMeta {
            tool: "test".into(),
            templates: vec!["a photo of a {}.".into()],
            prompts_per_entry: vec![1, 1, 1],
            built_at: None,
            note: None,
        });
        b.push("cat", EntryKind::Class, &[1.0, 0.0, 0.0, 0.0]).expect("push");
        b.push("dog", EntryKind::Class, &[0.0, 3.0, 4.0, 0.0]).expect("push");
        b.push("nothing", EntryKind::Background, &[0.0, 0.0, 0.0, -2.0]).expect("push");
        b
    }

    #[test]
    fn round_trip_every_element_type() {
        for el in [ElementType::F32, ElementType::F16, ElementType::Int8] {
            let bytes = builder(el).to_bytes().expect("bytes");
            assert_eq!(u64_at(&bytes, 72), bytes.len() as u64);
            assert!(u64_at(&bytes, 64).is_multiple_of(ALIGN as u64));
            let s = PromptStore::from_bytes("mem", &bytes).expect("valid");
            assert_eq!(s.header().element, el);
            assert_eq!(s.len(), 3);
            assert_eq!(s.entries()[2].kind, EntryKind::Background);
            assert_eq!(s.meta().templates, vec!["a photo of a {}."]);
            let row = s.row_f32(1);
            let tol = if el == ElementType::F32 { 1e-7 } else { 1e-2 };
            assert!((row[1] - 0.6).abs() < tol && (row[2] - 0.8).abs() < tol, "{el}: {row:?}");
            let mut out = [0f32; 3];
            s.dot_all(&[0.0, 0.6, 0.8, 0.0], &mut out);
            assert!((out[1] - 1.0).abs() < tol * 2.0, "{el}: {out:?}");
            assert!(out[0].abs() < tol && out[2].abs() < tol);
        }
    }

    #[test]
    fn build_is_deterministic() {
        let a = builder(ElementType::Int8).to_bytes().expect("a");
        let b = builder(ElementType::Int8).to_bytes().expect("b");
        assert_eq!(a, b);
    }

    #[test]
    fn every_truncation_is_rejected() {
        let bytes = builder(ElementType::F16).to_bytes().expect("bytes");
        for n in 0..bytes.len() {
            let err = PromptStore::from_bytes("t.store", &bytes[..n]).expect_err("truncated");
            assert!(err.to_string().starts_with("t.store: invalid prompt store"), "{n}: {err}");
        }
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let bytes = builder(ElementType::F32).to_bytes().expect("bytes");
        for i in 0..bytes.len() {
            for bit in [0, 3, 7] {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(PromptStore::from_bytes("x", &b).is_err(), "flip at byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn wrong_version_and_model_are_named() {
        let mut bytes = builder(ElementType::F32).to_bytes().expect("bytes");
        bytes[8] = 9;
        let n = bytes.len();
        let crc = crc32fast::hash(&bytes[..n - 4]);
        bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
        let err = PromptStore::from_bytes("v.store", &bytes).expect_err("version").to_string();
        assert!(err.contains("format version 9 is not supported"), "{err}");

        let s = PromptStore::from_bytes("m.store", &builder(ElementType::F32).to_bytes().expect("b"))
            .expect("valid");
        let err = s.check_model(&[8; 32], 4).expect_err("model");
        assert_eq!(err.kind(), crate::ErrorKind::Store);
        assert!(err.to_string().contains("built for model 0707"), "{err}");
        assert!(s.check_model(&[7; 32], 5).is_err());
        assert!(s.check_model(&[7; 32], 4).is_ok());
    }

    #[test]
    fn builder_rejects_bad_entries() {
        let mut b = builder(ElementType::F32);
        assert!(b.push("cat", EntryKind::Class, &[1.0, 0.0, 0.0, 0.0]).is_err());
        assert!(b.push(" ", EntryKind::Class, &[1.0, 0.0, 0.0, 0.0]).is_err());
        assert!(b.push("x", EntryKind::Class, &[1.0, 0.0]).is_err());
        assert!(b.push("y", EntryKind::Class, &[0.0; 4]).is_err());
        assert!(b.push("z", EntryKind::Class, &[f32::NAN; 4]).is_err());
        assert!(StoreBuilder::new(4, [0; 32], 1.0, ElementType::F32).to_bytes().is_err());
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("p.store");
        std::fs::write(&path, b"old").expect("old");
        builder(ElementType::F32).write(&path).expect("write");
        assert!(PromptStore::open(&path).is_ok());
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).expect("dir").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("p.store")]);
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("p.store");
        std::fs::write(&path, b"old").expect("old");
        // A temporary file that already exists makes the write fail before the rename.
        let tmp = dir.path().join(format!(".p.store.tmp-{}", std::process::id()));
        std::fs::create_dir(&tmp).expect("blocker");
        assert!(builder(ElementType::F32).write(&path).is_err());
        assert_eq!(std::fs::read(&path).expect("read"), b"old");
    }
}
