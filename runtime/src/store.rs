//! The prompt store: precomputed text embeddings on the device's flash, and
//! image embeddings ("shots") enrolled on the device for few-shot classes.
//!
//! Layout of version 2 (little-endian; full description, and version 1, in
//! `docs/prompt-store.md`):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `CLIPSTOR` |
//! | 8 | 2 | format version (2; version 1 is still read) |
//! | 10 | 1 | element type: 0 f32, 1 f16, 2 int8 with a per-row f32 scale |
//! | 11 | 1 | reserved, 0 |
//! | 12 | 4 | embedding dimension |
//! | 16 | 4 | entry count (classes and backgrounds, with or without text) |
//! | 20 | 4 | logit scale (f32) |
//! | 24 | 32 | model fingerprint |
//! | 56 | 4 | label table length in bytes |
//! | 60 | 4 | metadata length in bytes |
//! | 64 | 8 | offset of the text embedding block (multiple of 64) |
//! | 72 | 8 | total file length, CRC included |
//! | 80 | 4 | text rows (entries with a text embedding) |
//! | 84 | 4 | shot count |
//! | 88 | 4 | shot cap per class |
//! | 92 | 4 | shot cap for the store |
//! | 96 | 8 | offset of the shot table (multiple of 64) |
//! | 104 | 24 | reserved, 0 |
//! | 128 | … | label table: per entry kind (u8: bit 0 background, bit 1 no text), length (u16), UTF-8 label |
//! | … | … | metadata: UTF-8 JSON |
//! | emb | … | text rows: int8 only `rows` f32 scales; then `rows × dim` elements |
//! | shots | … | per shot: entry index (u32), 0 (u32), capture time (u64, Unix ms); padded to 64 |
//! | … | … | shot rows, same element type and layout as the text rows |
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
/// Format version written by this runtime; it also reads version 1.
pub const VERSION: u16 = 2;
/// Default cap of image shots kept per class (the oldest is replaced beyond it).
pub const DEFAULT_SHOTS_PER_CLASS: u32 = 16;
/// Default cap of image shots in a whole store (enrolment beyond it is refused).
pub const DEFAULT_MAX_SHOTS: u32 = 512;
const HEADER_LEN: usize = 128;
const ALIGN: usize = 64;
const SHOT_RECORD: usize = 16;
const MAX_DIM: u32 = 65_536;
const MAX_COUNT: u32 = 1_000_000;
const MAX_SHOTS: u32 = 65_536;
const MAX_LABEL_BYTES: usize = u16::MAX as usize;
const KIND_BACKGROUND: u8 = 1;
const KIND_NO_TEXT: u8 = 2;

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

    /// Bytes of an embedding block for `count` rows of `dim` values.
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

/// One labelled entry of the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The label reported when this entry wins.
    pub label: String,
    /// Class or background.
    pub kind: EntryKind,
    /// Whether the entry has a text embedding; an image-only class (enrolled
    /// from frames, no text) is scored against the mean of its shots instead.
    pub text: bool,
}

/// One image embedding captured for a class (a "shot").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shot {
    /// Index of the entry it belongs to.
    pub entry: u32,
    /// Capture time, milliseconds since the Unix epoch.
    pub captured_at_ms: u64,
}

/// Build information kept with the embeddings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Per entry, in entry order: added to the entry's cosine similarity before
    /// the logit scale (seen/unseen calibration, see `bundle::Calibration`).
    /// Empty means none; otherwise one finite value in -1..=1 per entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub similarity_offsets: Vec<f32>,
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
    /// Number of entries (text and image-only).
    pub count: u32,
    /// Logit scale to use with these embeddings.
    pub logit_scale: f32,
    /// Fingerprint of the model the store was built for.
    #[serde(serialize_with = "ser_hex")]
    pub fingerprint: [u8; 32],
    /// Total file length in bytes.
    pub file_len: u64,
    /// Entries that have a text embedding.
    pub text_rows: u32,
    /// Image shots stored.
    pub shots: u32,
    /// Most shots kept per class; enrolling more replaces the oldest.
    pub shots_per_class: u32,
    /// Most shots in the whole store; enrolling beyond it is refused.
    pub max_shots: u32,
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
    shot_emb_offset: usize,
    shots: Vec<Shot>,
    /// Per entry: its row in the text block, or its row in `prototypes`.
    rows: Vec<RowRef>,
    prototypes: Vec<f32>,
}

#[derive(Debug, Clone, Copy)]
enum RowRef {
    Text(usize),
    Prototype(usize),
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
        let max = HEADER_LEN as u64 + 2 * (MAX_COUNT as u64 + MAX_SHOTS as u64) * (MAX_DIM as u64 * 4 + 256);
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
        if version != 1 && version != VERSION {
            return Err(bad(format!(
                "format version {version} is not supported (this runtime reads versions 1 and {VERSION})"
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
        let (text_rows, n_shots, shots_per_class, max_shots) = if version == 1 {
            (count, 0, DEFAULT_SHOTS_PER_CLASS, DEFAULT_MAX_SHOTS)
        } else {
            (u32_at(bytes, 80), u32_at(bytes, 84), u32_at(bytes, 88), u32_at(bytes, 92))
        };
        if text_rows > count {
            return Err(bad(format!("{text_rows} text rows for {count} entries")));
        }
        if !(1..=MAX_SHOTS).contains(&max_shots) || !(1..=max_shots).contains(&shots_per_class) {
            return Err(bad(format!(
                "shot caps {shots_per_class} per class / {max_shots} in all are out of range"
            )));
        }
        if n_shots > max_shots {
            return Err(bad(format!("{n_shots} shots exceed the store's cap of {max_shots}")));
        }
        let labels_end = HEADER_LEN
            .checked_add(labels_len)
            .and_then(|v| v.checked_add(meta_len))
            .filter(|&v| v <= emb_offset)
            .ok_or_else(|| bad("label and metadata blocks overlap the embedding block".into()))?;
        let block = element.block_len(text_rows as usize, dim as usize);
        let text_end = emb_offset.checked_add(block).filter(|&e| e <= len).ok_or_else(|| {
            bad(format!(
                "text embedding block at {emb_offset} of {block} bytes does not fit a {len}-byte file"
            ))
        })?;
        let (shot_offset, shot_emb_offset, shot_block) = if version == 1 {
            (text_end, text_end, 0)
        } else {
            let at = u64_at(bytes, 96) as usize;
            let emb = at.saturating_add(n_shots as usize * SHOT_RECORD).next_multiple_of(ALIGN);
            (at, emb, element.block_len(n_shots as usize, dim as usize))
        };
        let shots_placed = version == 1
            || (shot_offset.is_multiple_of(ALIGN) && shot_offset == text_end.next_multiple_of(ALIGN));
        let fits = emb_offset.is_multiple_of(ALIGN)
            && shots_placed
            && shot_emb_offset.checked_add(shot_block).and_then(|v| v.checked_add(4)) == Some(len);
        if !fits {
            return Err(bad(format!(
                "embedding blocks ({text_rows} text rows at {emb_offset}, {n_shots} shots at {shot_offset}) do not fit a {len}-byte file"
            )));
        }
        let entries = parse_labels(&bytes[HEADER_LEN..HEADER_LEN + labels_len], count as usize, version)
            .map_err(&bad)?;
        let with_text = entries.iter().filter(|e| e.text).count();
        if with_text != text_rows as usize {
            return Err(bad(format!(
                "label table marks {with_text} entries with text but the header says {text_rows}"
            )));
        }
        let shots = parse_shots(&bytes[shot_offset..shot_offset + n_shots as usize * SHOT_RECORD], count)
            .map_err(&bad)?;
        let meta_bytes = &bytes[HEADER_LEN + labels_len..labels_end];
        let meta: StoreMeta = if meta_bytes.is_empty() {
            StoreMeta::default()
        } else {
            serde_json::from_slice(meta_bytes)
                .map_err(|e| bad(format!("metadata block is not valid JSON: {e}")))?
        };
        let header = Header {
            version,
            element,
            dim,
            count,
            logit_scale,
            fingerprint,
            file_len,
            text_rows,
            shots: n_shots,
            shots_per_class,
            max_shots,
        };
        let mut store = PromptStore {
            path: path.to_path_buf(),
            header,
            entries,
            meta,
            buf,
            emb_offset,
            shot_emb_offset,
            shots,
            rows: Vec::new(),
            prototypes: Vec::new(),
        };
        store.check_rows()?;
        store.check_offsets()?;
        store.index_rows()?;
        Ok(store)
    }

    fn check_offsets(&self) -> Result<()> {
        let offsets = &self.meta.similarity_offsets;
        if offsets.is_empty() {
            return Ok(());
        }
        if offsets.len() != self.len() {
            return Err(Error::store(
                &self.path,
                format!("metadata holds {} similarity offsets for {} entries", offsets.len(), self.len()),
            ));
        }
        match offsets.iter().position(|o| !(o.is_finite() && (-1.0..=1.0).contains(o))) {
            Some(i) => Err(Error::store(
                &self.path,
                format!("similarity offset of '{}' is {}, outside -1..=1", self.entries[i].label, offsets[i]),
            )),
            None => Ok(()),
        }
    }

    fn check_rows(&self) -> Result<()> {
        let finite = [self.text_block(), self.shot_block()].iter().all(|b| match b {
            Rows::F32(v) => v.iter().all(|x| x.is_finite()),
            Rows::F16(v) => v.iter().all(|x| x.is_finite()),
            Rows::Int8 { scales, .. } => scales.iter().all(|s| s.is_finite() && *s >= 0.0),
        });
        if finite {
            Ok(())
        } else {
            Err(Error::store(&self.path, "embedding block holds NaN, infinite or negative-scale values"))
        }
    }

    /// Maps entries to rows, checks the per-class cap, and averages the shots
    /// of each image-only entry into its prototype.
    fn index_rows(&mut self) -> Result<()> {
        let d = self.dim();
        let mut per_entry = vec![0u32; self.len()];
        for s in &self.shots {
            per_entry[s.entry as usize] += 1;
        }
        let mut rows = Vec::with_capacity(self.len());
        let mut prototypes = Vec::new();
        let mut text = 0;
        for (i, e) in self.entries.iter().enumerate() {
            if per_entry[i] > self.header.shots_per_class {
                return Err(Error::store(
                    &self.path,
                    format!(
                        "'{}' holds {} shots, above the per-class cap of {}",
                        e.label, per_entry[i], self.header.shots_per_class
                    ),
                ));
            }
            if e.text {
                rows.push(RowRef::Text(text));
                text += 1;
                continue;
            }
            if per_entry[i] == 0 {
                return Err(Error::store(
                    &self.path,
                    format!("'{}' has neither a text embedding nor image shots", e.label),
                ));
            }
            let mut mean = vec![0f32; d];
            for (j, _) in self.shots.iter().enumerate().filter(|(_, s)| s.entry as usize == i) {
                for (m, v) in mean.iter_mut().zip(self.shot_f32(j)) {
                    *m += v;
                }
            }
            let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt();
            if !(norm.is_finite() && norm > 0.0) {
                return Err(Error::store(&self.path, format!("the shots of '{}' average to zero", e.label)));
            }
            rows.push(RowRef::Prototype(prototypes.len() / d));
            prototypes.extend(mean.iter().map(|v| v / norm));
        }
        self.rows = rows;
        self.prototypes = prototypes;
        Ok(())
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

    /// Index of the entry labelled `label`.
    pub fn find(&self, label: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.label == label)
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

    /// Image shots, oldest first within each class.
    pub fn shots(&self) -> &[Shot] {
        &self.shots
    }

    /// Number of shots held by entry `i`.
    pub fn shot_count(&self, i: usize) -> usize {
        self.shots.iter().filter(|s| s.entry as usize == i).count()
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

    fn block(&self, start: usize, rows: usize) -> Rows<'_> {
        let bytes = bytemuck::cast_slice::<u64, u8>(&self.buf);
        let n = rows * self.dim();
        match self.header.element {
            ElementType::F32 => Rows::F32(bytemuck::cast_slice(&bytes[start..start + n * 4])),
            ElementType::F16 => Rows::F16(bytemuck::cast_slice(&bytes[start..start + n * 2])),
            ElementType::Int8 => {
                let scales_end = start + rows * 4;
                Rows::Int8 {
                    scales: bytemuck::cast_slice(&bytes[start..scales_end]),
                    values: bytemuck::cast_slice(&bytes[scales_end..scales_end + n]),
                }
            }
        }
    }

    fn text_block(&self) -> Rows<'_> {
        self.block(self.emb_offset, self.header.text_rows as usize)
    }

    fn shot_block(&self) -> Rows<'_> {
        self.block(self.shot_emb_offset, self.shots.len())
    }

    /// The embedding entry `i` is scored against, decoded to f32: its text
    /// embedding, or for an image-only class the normalised mean of its shots.
    pub fn row_f32(&self, i: usize) -> Vec<f32> {
        let d = self.dim();
        match self.rows[i] {
            RowRef::Text(r) => self.text_block().row(r, d),
            RowRef::Prototype(p) => self.prototypes[p * d..(p + 1) * d].to_vec(),
        }
    }

    /// Shot `j`'s embedding decoded to f32.
    pub fn shot_f32(&self, j: usize) -> Vec<f32> {
        self.shot_block().row(j, self.dim())
    }

    /// The calibration offset added to entry `i`'s cosine similarity (0 without calibration).
    pub fn similarity_offset(&self, i: usize) -> f32 {
        self.meta.similarity_offsets.get(i).copied().unwrap_or(0.0)
    }

    /// Dot product of `query` (length `dim`) with every entry's embedding (see
    /// [`PromptStore::row_f32`]), written to `out` (length `len`).
    pub fn dot_all(&self, query: &[f32], out: &mut [f32]) {
        let d = self.dim();
        assert_eq!(query.len(), d, "query dimension");
        assert_eq!(out.len(), self.len(), "output length");
        if self.header.text_rows == self.header.count {
            return self.text_block().dot(query, out);
        }
        let text = self.text_block();
        for (o, r) in out.iter_mut().zip(&self.rows) {
            *o = match *r {
                RowRef::Text(t) => text.dot_row(t, query),
                RowRef::Prototype(p) => dot(&self.prototypes[p * d..(p + 1) * d], query),
            };
        }
    }

    /// Dot product of `query` with every shot, written to `out` (length `shots().len()`).
    pub fn dot_shots(&self, query: &[f32], out: &mut [f32]) {
        assert_eq!(query.len(), self.dim(), "query dimension");
        assert_eq!(out.len(), self.shots.len(), "output length");
        self.shot_block().dot(query, out);
    }

    /// A builder holding everything in this store, for editing it (adding or
    /// removing shots). Rows are carried over without renormalisation, so
    /// rewriting an unchanged store gives the same embeddings.
    pub fn to_builder(&self) -> StoreBuilder {
        let d = self.dim();
        let mut b =
            StoreBuilder::new(d, self.header.fingerprint, self.header.logit_scale, self.header.element)
                .meta(self.meta.clone());
        b.shots_per_class = self.header.shots_per_class;
        b.max_shots = self.header.max_shots;
        b.entries = self.entries.clone();
        for (i, e) in self.entries.iter().enumerate() {
            if let (true, RowRef::Text(r)) = (e.text, self.rows[i]) {
                b.rows.extend(self.text_block().row(r, d));
            }
        }
        for (j, s) in self.shots.iter().enumerate() {
            b.shots.push(*s);
            b.shot_rows.extend(self.shot_f32(j));
        }
        b
    }
}

enum Rows<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Int8 { scales: &'a [f32], values: &'a [i8] },
}

impl Rows<'_> {
    fn row(&self, i: usize, d: usize) -> Vec<f32> {
        match self {
            Rows::F32(v) => v[i * d..(i + 1) * d].to_vec(),
            Rows::F16(v) => v[i * d..(i + 1) * d].iter().map(|x| x.to_f32()).collect(),
            Rows::Int8 { scales, values } => {
                values[i * d..(i + 1) * d].iter().map(|&q| q as f32 * scales[i]).collect()
            }
        }
    }

    fn dot(&self, query: &[f32], out: &mut [f32]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.dot_row(i, query);
        }
    }

    fn dot_row(&self, i: usize, query: &[f32]) -> f32 {
        let d = query.len();
        match self {
            Rows::F32(v) => dot(&v[i * d..(i + 1) * d], query),
            Rows::F16(v) => v[i * d..(i + 1) * d].iter().zip(query).map(|(a, b)| a.to_f32() * b).sum(),
            Rows::Int8 { scales, values } => {
                values[i * d..(i + 1) * d].iter().zip(query).map(|(&a, b)| a as f32 * b).sum::<f32>()
                    * scales[i]
            }
        }
    }
}

/// Dot product with eight independent partial sums, which the compiler keeps
/// in SIMD registers (a single running sum would serialise every addition).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
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

fn parse_labels(mut b: &[u8], count: usize, version: u16) -> std::result::Result<Vec<Entry>, String> {
    let mut entries = Vec::with_capacity(count);
    let mut seen = HashSet::new();
    let known = if version == 1 { KIND_BACKGROUND } else { KIND_BACKGROUND | KIND_NO_TEXT };
    for i in 0..count {
        if b.len() < 3 {
            return Err(format!("label table ends before entry {i} of {count}"));
        }
        if b[0] & !known != 0 || b[0] == KIND_BACKGROUND | KIND_NO_TEXT {
            return Err(format!("entry {i} has unknown kind code {}", b[0]));
        }
        let kind = if b[0] & KIND_BACKGROUND != 0 { EntryKind::Background } else { EntryKind::Class };
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
        entries.push(Entry { label, kind, text: b[0] & KIND_NO_TEXT == 0 });
        b = &b[3 + n..];
    }
    if !b.is_empty() {
        return Err(format!("{} unexpected bytes after the last label", b.len()));
    }
    Ok(entries)
}

fn parse_shots(b: &[u8], count: u32) -> std::result::Result<Vec<Shot>, String> {
    b.chunks_exact(SHOT_RECORD)
        .enumerate()
        .map(|(j, r)| {
            let entry = u32_at(r, 0);
            if entry >= count {
                return Err(format!("shot {j} belongs to entry {entry}, but there are {count}"));
            }
            if u32_at(r, 4) != 0 {
                return Err(format!("shot {j} has non-zero reserved bytes"));
            }
            Ok(Shot { entry, captured_at_ms: u64_at(r, 8) })
        })
        .collect()
}

/// What [`StoreBuilder::add_shot`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShotAdded {
    /// The entry the shot went to.
    pub entry: usize,
    /// Whether the entry was created by this shot (a new image-only class).
    pub new_class: bool,
    /// Capture time of the oldest shot replaced because the class was at its cap.
    pub replaced_ms: Option<u64>,
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
    shots: Vec<Shot>,
    shot_rows: Vec<f32>,
    shots_per_class: u32,
    max_shots: u32,
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
            shots: Vec::new(),
            shot_rows: Vec::new(),
            shots_per_class: DEFAULT_SHOTS_PER_CLASS,
            max_shots: DEFAULT_MAX_SHOTS,
        }
    }

    /// Sets the metadata block.
    pub fn meta(mut self, meta: StoreMeta) -> Self {
        self.meta = meta;
        self
    }

    /// Sets the per-entry similarity offsets (one per entry pushed so far, each
    /// finite and in -1..=1); all zeros are stored as none.
    pub fn set_similarity_offsets(&mut self, offsets: Vec<f32>) -> Result<()> {
        if offsets.len() != self.entries.len() {
            return Err(Error::Usage(format!(
                "{} similarity offsets for {} entries",
                offsets.len(),
                self.entries.len()
            )));
        }
        if let Some(o) = offsets.iter().find(|o| !(o.is_finite() && (-1.0..=1.0).contains(*o))) {
            return Err(Error::Usage(format!("similarity offset {o} is outside -1..=1")));
        }
        self.meta.similarity_offsets = if offsets.iter().all(|&o| o == 0.0) { Vec::new() } else { offsets };
        Ok(())
    }

    /// Sets the shot caps: per class (oldest replaced beyond it) and in all (refused beyond it).
    pub fn shot_caps(mut self, per_class: u32, total: u32) -> Result<Self> {
        if !(1..=MAX_SHOTS).contains(&total) || !(1..=total).contains(&per_class) {
            return Err(Error::Usage(format!(
                "shot caps must satisfy 1 <= per class ({per_class}) <= total ({total}) <= {MAX_SHOTS}"
            )));
        }
        if let Some(i) = (0..self.entries.len()).find(|&i| self.count_shots(i) > per_class as usize) {
            return Err(Error::Usage(format!(
                "'{}' already holds {} shots, more than the new per-class cap {per_class}",
                self.entries[i].label,
                self.count_shots(i)
            )));
        }
        if self.shots.len() > total as usize {
            return Err(Error::Usage(format!("the store already holds {} shots", self.shots.len())));
        }
        self.shots_per_class = per_class;
        self.max_shots = total;
        Ok(self)
    }

    /// Entries so far.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Shots so far.
    pub fn shots(&self) -> &[Shot] {
        &self.shots
    }

    fn count_shots(&self, i: usize) -> usize {
        self.shots.iter().filter(|s| s.entry as usize == i).count()
    }

    fn normalised(&self, label: &str, embedding: &[f32]) -> Result<Vec<f32>> {
        if embedding.len() != self.dim {
            return Err(Error::Usage(format!(
                "embedding for '{label}' has {} values, expected {}",
                embedding.len(),
                self.dim
            )));
        }
        let norm = embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
        if !(norm.is_finite() && norm > 0.0) {
            return Err(Error::Usage(format!("embedding for '{label}' has norm {norm}")));
        }
        Ok(embedding.iter().map(|v| v / norm).collect())
    }

    fn check_label(label: &str) -> Result<()> {
        if label.trim().is_empty() {
            return Err(Error::Usage("a label must not be empty".into()));
        }
        if label.len() > MAX_LABEL_BYTES {
            let head: String = label.chars().take(32).collect();
            return Err(Error::Usage(format!("label '{head}…' is longer than {MAX_LABEL_BYTES} bytes")));
        }
        Ok(())
    }

    /// Adds an entry with a text embedding; `embedding` is L2-normalised here.
    pub fn push(&mut self, label: &str, kind: EntryKind, embedding: &[f32]) -> Result<()> {
        Self::check_label(label)?;
        if self.entries.iter().any(|e| e.label == label) {
            return Err(Error::Usage(format!("label '{label}' is given twice")));
        }
        let row = self.normalised(label, embedding)?;
        self.rows.extend(row);
        self.entries.push(Entry { label: label.to_string(), kind, text: true });
        Ok(())
    }

    /// Adds an image shot for class `label` captured at `captured_at_ms`
    /// (Unix milliseconds); the class is created image-only if it does not
    /// exist. A class at its per-class cap loses its oldest shot; a store at
    /// its total cap refuses the shot. Backgrounds cannot take shots.
    pub fn add_shot(&mut self, label: &str, embedding: &[f32], captured_at_ms: u64) -> Result<ShotAdded> {
        Self::check_label(label)?;
        let row = self.normalised(label, embedding)?;
        let existing = self.entries.iter().position(|e| e.label == label);
        if let Some(i) = existing {
            if self.entries[i].kind == EntryKind::Background {
                return Err(Error::Usage(format!(
                    "'{label}' is a background entry of this store; shots can only be enrolled for classes"
                )));
            }
        }
        let full_class = existing.is_some_and(|i| self.count_shots(i) >= self.shots_per_class as usize);
        if !full_class && self.shots.len() >= self.max_shots as usize {
            return Err(Error::Usage(format!(
                "the store holds {} shots, its cap; remove shots of another class first",
                self.shots.len()
            )));
        }
        let (entry, new_class) = match existing {
            Some(i) => (i, false),
            None => {
                if self.meta.prompts_per_entry.len() == self.entries.len() {
                    self.meta.prompts_per_entry.push(0);
                }
                if self.meta.similarity_offsets.len() == self.entries.len() {
                    self.meta.similarity_offsets.push(0.0);
                }
                self.entries.push(Entry { label: label.to_string(), kind: EntryKind::Class, text: false });
                (self.entries.len() - 1, true)
            }
        };
        let mut replaced_ms = None;
        if full_class {
            let j = self.shots.iter().position(|s| s.entry as usize == entry).expect("class has shots");
            replaced_ms = Some(self.shots[j].captured_at_ms);
            self.remove_shot_at(j);
        }
        self.shots.push(Shot { entry: entry as u32, captured_at_ms });
        self.shot_rows.extend(row);
        Ok(ShotAdded { entry, new_class, replaced_ms })
    }

    fn remove_shot_at(&mut self, j: usize) {
        self.shots.remove(j);
        self.shot_rows.drain(j * self.dim..(j + 1) * self.dim);
    }

    /// Removes every shot of `label`, and the entry itself when it has no text
    /// embedding. Returns the number of shots removed.
    pub fn remove_shots(&mut self, label: &str) -> Result<usize> {
        let i = self
            .entries
            .iter()
            .position(|e| e.label == label)
            .ok_or_else(|| Error::Usage(format!("no class '{label}' in this store")))?;
        let mut removed = 0;
        while let Some(j) = self.shots.iter().position(|s| s.entry as usize == i) {
            self.remove_shot_at(j);
            removed += 1;
        }
        if !self.entries[i].text {
            self.entries.remove(i);
            if self.meta.prompts_per_entry.len() > i {
                self.meta.prompts_per_entry.remove(i);
            }
            if self.meta.similarity_offsets.len() > i {
                self.meta.similarity_offsets.remove(i);
            }
            for s in &mut self.shots {
                if s.entry as usize > i {
                    s.entry -= 1;
                }
            }
        }
        Ok(removed)
    }

    /// Serialises the store (always the current format version).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.serialise(VERSION)
    }

    fn serialise(&self, version: u16) -> Result<Vec<u8>> {
        if self.entries.is_empty() {
            return Err(Error::Usage("a prompt store needs at least one entry".into()));
        }
        let offsets = self.meta.similarity_offsets.len();
        if offsets != 0 && offsets != self.entries.len() {
            return Err(Error::Usage(format!(
                "{offsets} similarity offsets for {} entries",
                self.entries.len()
            )));
        }
        if !(self.logit_scale.is_finite() && self.logit_scale > 0.0) {
            return Err(Error::Usage(format!("logit scale {} is not positive", self.logit_scale)));
        }
        if version == 1 && (!self.shots.is_empty() || self.entries.iter().any(|e| !e.text)) {
            return Err(Error::Usage("format version 1 cannot hold image shots".into()));
        }
        let mut labels = Vec::new();
        for e in &self.entries {
            let mut code = if e.kind == EntryKind::Background { KIND_BACKGROUND } else { 0 };
            if !e.text {
                code |= KIND_NO_TEXT;
            }
            labels.push(code);
            labels.extend_from_slice(&(e.label.len() as u16).to_le_bytes());
            labels.extend_from_slice(e.label.as_bytes());
        }
        let meta = serde_json::to_vec(&self.meta).map_err(|e| Error::Usage(e.to_string()))?;
        let count = self.entries.len();
        let text_rows = self.rows.len() / self.dim;
        let emb_offset = (HEADER_LEN + labels.len() + meta.len()).next_multiple_of(ALIGN);
        let shot_offset = (emb_offset + self.element.block_len(text_rows, self.dim)).next_multiple_of(ALIGN);
        let shot_emb_offset = (shot_offset + self.shots.len() * SHOT_RECORD).next_multiple_of(ALIGN);
        let file_len = if version == 1 {
            emb_offset + self.element.block_len(text_rows, self.dim) + 4
        } else {
            shot_emb_offset + self.element.block_len(self.shots.len(), self.dim) + 4
        };

        let mut out = Vec::with_capacity(file_len);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&version.to_le_bytes());
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
        if version != 1 {
            for v in [text_rows as u32, self.shots.len() as u32, self.shots_per_class, self.max_shots] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&(shot_offset as u64).to_le_bytes());
        }
        out.resize(HEADER_LEN, 0);
        out.extend_from_slice(&labels);
        out.extend_from_slice(&meta);
        out.resize(emb_offset, 0);
        self.write_rows(&mut out, &self.rows);
        if version != 1 {
            out.resize(shot_offset, 0);
            for s in &self.shots {
                out.extend_from_slice(&s.entry.to_le_bytes());
                out.extend_from_slice(&0u32.to_le_bytes());
                out.extend_from_slice(&s.captured_at_ms.to_le_bytes());
            }
            out.resize(shot_emb_offset, 0);
            self.write_rows(&mut out, &self.shot_rows);
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(out.len(), file_len);
        Ok(out)
    }

    fn write_rows(&self, out: &mut Vec<u8>, rows: &[f32]) {
        match self.element {
            ElementType::F32 => rows.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            ElementType::F16 => {
                rows.iter().for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes()))
            }
            ElementType::Int8 => {
                let scales: Vec<f32> = rows
                    .chunks_exact(self.dim)
                    .map(|r| r.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0)
                    .collect();
                scales.iter().for_each(|s| out.extend_from_slice(&s.to_le_bytes()));
                for (row, s) in rows.chunks_exact(self.dim).zip(&scales) {
                    out.extend(row.iter().map(|v| (v / s).round().clamp(-127.0, 127.0) as i8 as u8));
                }
            }
        }
    }

    /// Serialises the store and replaces `path` atomically.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), &self.to_bytes()?)
    }
}

/// Reads the store at `path`, lets `edit` change it, and writes it back
/// atomically, holding an exclusive lock on `PATH.lock` throughout, so that
/// concurrent editors (two enrolments, a host tool and the device) never
/// lose each other's changes. When `edit` fails nothing is written.
pub fn update<T>(path: &Path, edit: impl FnOnce(&mut StoreBuilder) -> Result<T>) -> Result<T> {
    edit_locked(path, |_, b| edit(b)).map(|(out, _)| out)
}

/// [`update`] with the store as read (for checks before editing); also
/// returns the length of the file written.
fn edit_locked<T>(
    path: &Path,
    edit: impl FnOnce(&PromptStore, &mut StoreBuilder) -> Result<T>,
) -> Result<(T, u64)> {
    let _lock = lock(path)?;
    let store = PromptStore::open(path)?;
    let mut builder = store.to_builder();
    let out = edit(&store, &mut builder)?;
    let bytes = builder.to_bytes()?;
    write_atomic(path, &bytes)?;
    Ok((out, bytes.len() as u64))
}

/// An exclusive lock on `PATH.lock`, released when dropped. Every writer of
/// an existing store takes it; readers need none (writes are atomic renames).
pub fn lock(path: &Path) -> Result<std::fs::File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(&lock_path, e))?;
    file.lock().map_err(|e| Error::io(&lock_path, e))?;
    Ok(file)
}

/// What [`enroll`] stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enrolled {
    /// The class.
    pub class: String,
    /// Shots added.
    pub added: usize,
    /// Older shots of the class replaced because it was at its per-class cap.
    pub replaced: usize,
    /// Whether the class was created (image-only) by this enrolment.
    pub new_class: bool,
    /// Shots the class holds now.
    pub class_shots: usize,
    /// Shots the store holds now.
    pub store_shots: usize,
    /// Size of the store file after the write, in bytes.
    pub file_len: u64,
}

impl fmt::Display for Enrolled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} shot(s) of '{}'", self.added, self.class)?;
        if self.new_class {
            f.write_str(" (new image-only class)")?;
        }
        if self.replaced > 0 {
            write!(f, ", {} oldest replaced", self.replaced)?;
        }
        write!(
            f,
            "; the class holds {}, the store {} shots, {} bytes",
            self.class_shots, self.store_shots, self.file_len
        )
    }
}

/// Adds `embeddings` as shots of `class` to the store at `path`, under the
/// store's lock, in one atomic write: either every shot is stored or, on any
/// error (another model's store, a background label, the store's cap), the
/// file is left exactly as it was.
pub fn enroll(
    path: &Path,
    fingerprint: &[u8; 32],
    dim: usize,
    class: &str,
    embeddings: &[&[f32]],
    captured_at_ms: u64,
) -> Result<Enrolled> {
    if embeddings.is_empty() {
        return Err(Error::Usage(format!("no frames to enrol for '{class}'")));
    }
    let (mut out, file_len) = edit_locked(path, |store, b| {
        store.check_model(fingerprint, dim)?;
        let mut out = Enrolled {
            class: class.to_string(),
            added: 0,
            replaced: 0,
            new_class: false,
            class_shots: 0,
            store_shots: 0,
            file_len: 0,
        };
        for e in embeddings {
            let added = b
                .add_shot(class, e, captured_at_ms)
                .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
            out.added += 1;
            out.new_class |= added.new_class;
            out.replaced += usize::from(added.replaced_ms.is_some());
            out.class_shots = b.count_shots(added.entry);
        }
        out.store_shots = b.shots.len();
        Ok(out)
    })?;
    out.file_len = file_len;
    Ok(out)
}

/// Milliseconds since the Unix epoch now (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A Unix millisecond time as UTC `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
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
            similarity_offsets: Vec::new(),
        });
        b.push("cat", EntryKind::Class, &[1.0, 0.0, 0.0, 0.0]).expect("push");
        b.push("dog", EntryKind::Class, &[0.0, 3.0, 4.0, 0.0]).expect("push");
        b.push("nothing", EntryKind::Background, &[0.0, 0.0, 0.0, -2.0]).expect("push");
        b
    }

    fn with_shots(element: ElementType) -> StoreBuilder {
        let mut b = builder(element);
        b.add_shot("dog", &[0.0, 1.0, 1.0, 0.0], 10).expect("dog shot");
        b.add_shot("van", &[0.0, 0.0, 1.0, 0.0], 11).expect("van shot");
        b.add_shot("van", &[0.0, 1.0, 0.0, 0.0], 12).expect("van shot");
        b
    }

    #[test]
    fn version_1_files_are_still_read() {
        let bytes = builder(ElementType::Int8).serialise(1).expect("v1");
        assert_eq!(u16_at(&bytes, 8), 1);
        let s = PromptStore::from_bytes("old.store", &bytes).expect("v1 reads");
        assert_eq!(s.header().version, 1);
        assert_eq!((s.header().text_rows, s.header().shots), (3, 0));
        assert!(s.entries().iter().all(|e| e.text));
        let v2 = PromptStore::from_bytes("new", &s.to_builder().to_bytes().expect("v2")).expect("v2");
        assert_eq!(v2.header().version, VERSION);
        for i in 0..3 {
            assert_eq!(s.row_f32(i), v2.row_f32(i), "row {i} changed on upgrade");
        }
        assert!(with_shots(ElementType::F32).serialise(1).is_err());
    }

    #[test]
    fn shots_round_trip_every_element_type() {
        for el in [ElementType::F32, ElementType::F16, ElementType::Int8] {
            let bytes = with_shots(el).to_bytes().expect("bytes");
            let s = PromptStore::from_bytes("mem", &bytes).expect("valid");
            assert_eq!(s.len(), 4, "{el}");
            assert_eq!(s.entries()[3], Entry { label: "van".into(), kind: EntryKind::Class, text: false });
            assert_eq!(s.shots().len(), 3);
            assert_eq!(s.shots()[0], Shot { entry: 1, captured_at_ms: 10 });
            assert_eq!((s.shot_count(1), s.shot_count(3)), (2 - 1, 2));
            let tol = if el == ElementType::F32 { 1e-6 } else { 1e-2 };
            let proto = s.row_f32(3);
            let h = std::f32::consts::FRAC_1_SQRT_2;
            assert!((proto[1] - h).abs() < tol && (proto[2] - h).abs() < tol, "{el}: {proto:?}");
            let mut out = [0f32; 3];
            s.dot_shots(&[0.0, 0.0, 1.0, 0.0], &mut out);
            assert!((out[0] - h).abs() < tol && (out[1] - 1.0).abs() < tol && out[2].abs() < tol, "{out:?}");
            let mut all = [0f32; 4];
            s.dot_all(&[0.0, 0.0, 1.0, 0.0], &mut all);
            assert!((all[1] - 0.8).abs() < tol && (all[3] - h).abs() < tol, "{all:?}");
            let again = s.to_builder().to_bytes().expect("rewrite");
            assert_eq!(again, bytes, "{el}: an unchanged store must rewrite to the same bytes");
        }
    }

    #[test]
    fn per_class_cap_replaces_the_oldest_and_total_cap_refuses() {
        let mut b = builder(ElementType::F16).shot_caps(2, 3).expect("caps");
        for t in 0..3u64 {
            let added = b.add_shot("dog", &[0.0, 1.0, t as f32, 0.0], t).expect("dog");
            assert_eq!(added.replaced_ms, if t == 2 { Some(0) } else { None });
        }
        let times: Vec<u64> = b.shots().iter().map(|s| s.captured_at_ms).collect();
        assert_eq!(times, vec![1, 2]);
        b.add_shot("cat", &[1.0, 0.0, 0.0, 0.0], 3).expect("cat");
        let err = b.add_shot("owl", &[1.0, 1.0, 0.0, 0.0], 4).expect_err("full").to_string();
        assert!(err.contains("holds 3 shots, its cap"), "{err}");
        b.add_shot("dog", &[0.0, 1.0, 5.0, 0.0], 5).expect("a full class still rotates at the total cap");
        let s = PromptStore::from_bytes("caps", &b.to_bytes().expect("b")).expect("valid");
        assert_eq!((s.header().shots_per_class, s.header().max_shots, s.header().shots), (2, 3, 3));
        assert!(builder(ElementType::F32).shot_caps(4, 2).is_err());
        assert!(with_shots(ElementType::F32).shot_caps(1, 8).is_err());
    }

    #[test]
    fn shots_are_refused_for_backgrounds_and_bad_embeddings() {
        let mut b = builder(ElementType::F32);
        let err = b.add_shot("nothing", &[0.0, 0.0, 0.0, 1.0], 1).expect_err("background").to_string();
        assert!(err.contains("'nothing' is a background entry"), "{err}");
        assert!(b.add_shot("x", &[1.0, 0.0], 1).is_err());
        assert!(b.add_shot("x", &[0.0; 4], 1).is_err());
        assert!(b.add_shot(" ", &[1.0; 4], 1).is_err());
        assert_eq!((b.entries().len(), b.shots().len()), (3, 0));
    }

    #[test]
    fn removing_shots_drops_image_only_classes_and_keeps_text_ones() {
        let mut b = with_shots(ElementType::F32);
        b.add_shot("owl", &[1.0, 0.0, 1.0, 0.0], 13).expect("owl");
        assert_eq!(b.remove_shots("van").expect("van"), 2);
        assert_eq!(
            b.entries().iter().map(|e| e.label.as_str()).collect::<Vec<_>>(),
            ["cat", "dog", "nothing", "owl"]
        );
        assert_eq!(b.shots()[1].entry, 3, "indices after the removed entry shift down");
        assert_eq!(b.remove_shots("dog").expect("dog"), 1);
        assert_eq!(b.entries().len(), 4);
        assert!(b.remove_shots("zebra").is_err());
        let s = PromptStore::from_bytes("r", &b.to_bytes().expect("b")).expect("valid");
        assert_eq!(s.find("owl"), Some(3));
        assert_eq!(s.shots().len(), 1);
    }

    #[test]
    fn every_truncation_and_bit_flip_of_a_store_with_shots_is_rejected() {
        let bytes = with_shots(ElementType::Int8).to_bytes().expect("bytes");
        for n in 0..bytes.len() {
            assert!(PromptStore::from_bytes("t", &bytes[..n]).is_err(), "truncated to {n}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1 << (i % 8);
            assert!(PromptStore::from_bytes("x", &b).is_err(), "flip at byte {i}");
        }
    }

    #[test]
    fn inconsistent_headers_are_named_even_with_a_valid_crc() {
        let bytes = with_shots(ElementType::F32).shot_caps(2, 3).expect("caps").to_bytes().expect("bytes");
        let patch = |at: usize, v: u32| {
            let mut b = bytes.clone();
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
            let n = b.len();
            let crc = crc32fast::hash(&b[..n - 4]);
            b[n - 4..].copy_from_slice(&crc.to_le_bytes());
            PromptStore::from_bytes("h.store", &b).expect_err("inconsistent").to_string()
        };
        assert!(patch(88, 1).contains("above the per-class cap"), "{}", patch(88, 1));
        assert!(patch(92, 2).contains("exceed the store's cap"), "{}", patch(92, 2));
        assert!(patch(84, 2).contains("do not fit"), "{}", patch(84, 2));
        assert!(patch(80, 4).contains("do not fit") || patch(80, 4).contains("text"), "{}", patch(80, 4));
    }

    #[test]
    fn update_locks_so_concurrent_enrolments_keep_every_shot() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("p.store");
        builder(ElementType::F16).write(&path).expect("write");
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let path = &path;
                scope.spawn(move || {
                    for i in 0..5u64 {
                        update(path, |b| {
                            b.add_shot(&format!("class{t}"), &[1.0, t as f32, i as f32, 1.0], i)
                        })
                        .expect("update");
                    }
                });
            }
        });
        let s = PromptStore::open(&path).expect("valid");
        assert_eq!(s.shots().len(), 20);
        assert_eq!(s.len(), 7);
    }

    #[test]
    fn failed_edit_leaves_the_store_unchanged() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("p.store");
        builder(ElementType::F32).write(&path).expect("write");
        let before = std::fs::read(&path).expect("read");
        let err = update(&path, |b| {
            b.add_shot("dog", &[0.0, 1.0, 0.0, 0.0], 1)?;
            b.add_shot("nothing", &[0.0, 1.0, 0.0, 0.0], 2)
        })
        .expect_err("background");
        assert_eq!(err.kind(), crate::ErrorKind::Usage);
        assert_eq!(std::fs::read(&path).expect("read"), before);
        std::fs::write(&path, &before[..100]).expect("truncate");
        let err = update(&path, |b| b.add_shot("dog", &[0.0, 1.0, 0.0, 0.0], 1)).expect_err("corrupt");
        assert_eq!(err.kind(), crate::ErrorKind::Store);
        assert_eq!(std::fs::read(&path).expect("read").len(), 100);
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
    fn similarity_offsets_round_trip_follow_entries_and_are_validated() {
        let mut b = builder(ElementType::F16);
        b.set_similarity_offsets(vec![0.0, 0.0, 0.0]).expect("zeros");
        assert_eq!(
            b.to_bytes().expect("b"),
            builder(ElementType::F16).to_bytes().expect("b"),
            "zeros are none"
        );
        assert!(b.set_similarity_offsets(vec![0.1; 2]).is_err());
        assert!(b.set_similarity_offsets(vec![0.1, f32::NAN, 0.0]).is_err());
        assert!(b.set_similarity_offsets(vec![0.1, 1.5, 0.0]).is_err());
        b.set_similarity_offsets(vec![0.0, 0.25, 0.0]).expect("offsets");
        b.add_shot("van", &[0.0, 0.0, 1.0, 0.0], 1).expect("new class");
        let s = PromptStore::from_bytes("o.store", &b.to_bytes().expect("bytes")).expect("valid");
        assert_eq!(s.meta().similarity_offsets, vec![0.0, 0.25, 0.0, 0.0]);
        assert_eq!((s.similarity_offset(1), s.similarity_offset(3)), (0.25, 0.0));
        let mut edit = s.to_builder();
        edit.remove_shots("van").expect("remove");
        assert_eq!(edit.to_bytes().expect("b"), {
            let mut b = builder(ElementType::F16);
            b.set_similarity_offsets(vec![0.0, 0.25, 0.0]).expect("offsets");
            b.to_bytes().expect("b")
        });

        let bytes = PromptStore::from_bytes("o", &edit.to_bytes().expect("b")).expect("v").to_builder();
        let mut bytes = bytes.to_bytes().expect("b");
        let at = bytes.windows(4).position(|w| w == b"0.25").expect("offset in metadata");
        bytes[at..at + 4].copy_from_slice(b"2.25");
        let n = bytes.len();
        let crc = crc32fast::hash(&bytes[..n - 4]);
        bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
        let err = PromptStore::from_bytes("o.store", &bytes).expect_err("out of range").to_string();
        assert!(err.contains("similarity offset of 'dog' is 2.25, outside -1..=1"), "{err}");

        let fix_crc = |b: &mut Vec<u8>| {
            let n = b.len();
            let crc = crc32fast::hash(&b[..n - 4]);
            b[n - 4..].copy_from_slice(&crc.to_le_bytes());
        };
        let at = bytes.windows(14).position(|w| w == b"[0.0,2.25,0.0]").expect("offsets in metadata");
        bytes[at..at + 14].copy_from_slice(b"[0.25,0.0]    ");
        fix_crc(&mut bytes);
        let err = PromptStore::from_bytes("o.store", &bytes).expect_err("too few").to_string();
        assert!(err.contains("o.store") && err.contains("2 similarity offsets for 3 entries"), "{err}");
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

    #[test]
    fn times_render_as_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_910_400_000), "2026-11-29T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000 + 3_661_000), "2000-02-29T01:01:01Z");
    }
}
