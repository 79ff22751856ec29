//! The file format: constants, the public types a store is made of, the
//! fixed header in both directions, and the reader's checks that every block
//! lies where the header says, with checked offset arithmetic (a crafted
//! header fails with an error, never an overflow). The label and shot tables
//! are in `tables`.
//!
//! Every function that reads file bytes (`parse_header`, the `*_at` readers,
//! and in `tables` and `reader` the table parsers and `from_buffer`) denies
//! `clippy::indexing_slicing` and `clippy::arithmetic_side_effects`: no index,
//! slice or arithmetic there can panic or wrap, on 64-bit or 32-bit targets.
//! The row kernels (`rows`) index only the blocks `parse_header` placed.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::bundle::hex;

/// File magic.
pub const MAGIC: &[u8; 8] = b"CLIPSTOR";
/// Format version written by this runtime; it also reads version 1.
pub const VERSION: u16 = 2;
/// Default cap of image shots kept per class (the oldest is replaced beyond it).
pub const DEFAULT_SHOTS_PER_CLASS: u32 = 16;
/// Default cap of image shots in a whole store (enrolment beyond it is refused).
pub const DEFAULT_MAX_SHOTS: u32 = 512;
pub(super) const HEADER_LEN: usize = 128;
pub(super) const ALIGN: usize = 64;
pub(super) const SHOT_RECORD: usize = 16;
pub(super) const MAX_DIM: u32 = 65_536;
pub(super) const MAX_COUNT: u32 = 1_000_000;
pub(super) const MAX_SHOTS: u32 = 65_536;
pub(super) const MAX_LABEL_BYTES: usize = u16::MAX as usize;

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

    /// [`ElementType::block_len`] in 64 bits (`u64::MAX` if even that
    /// overflows); `None` when it does not fit a `usize`.
    #[deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
    fn checked_block_len(self, count: u32, dim: u32) -> (u64, Option<usize>) {
        let (count, dim) = (u64::from(count), u64::from(dim));
        let len = match self {
            ElementType::F32 => count.checked_mul(dim).and_then(|v| v.checked_mul(4)),
            ElementType::F16 => count.checked_mul(dim).and_then(|v| v.checked_mul(2)),
            ElementType::Int8 => count.checked_mul(dim).and_then(|v| v.checked_add(count.checked_mul(4)?)),
        };
        (len.unwrap_or(u64::MAX), len.and_then(|l| usize::try_from(l).ok()))
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

/// Where the blocks of a file lie (byte offsets from its start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    /// Label table length; the table starts at [`HEADER_LEN`].
    pub labels_len: usize,
    /// Metadata length; the metadata follows the label table.
    pub meta_len: usize,
    /// Start of the text embedding block.
    pub emb_offset: usize,
    /// Start of the shot table (version 1: the end of the text block).
    pub shot_offset: usize,
    /// Start of the shot embedding block.
    pub shot_emb_offset: usize,
    /// Length of the whole file, CRC included.
    pub file_len: usize,
}

impl Layout {
    /// The layout the writer uses: each block starts at the next multiple of
    /// [`ALIGN`] after the previous one; version 1 ends with the text block.
    pub fn plan(h: &Header, labels_len: usize, meta_len: usize) -> Layout {
        let (dim, text_rows, shots) = (h.dim as usize, h.text_rows as usize, h.shots as usize);
        let emb_offset = (HEADER_LEN + labels_len + meta_len).next_multiple_of(ALIGN);
        let text_end = emb_offset + h.element.block_len(text_rows, dim);
        let shot_offset = text_end.next_multiple_of(ALIGN);
        let shot_emb_offset = (shot_offset + shots * SHOT_RECORD).next_multiple_of(ALIGN);
        let file_len =
            if h.version == 1 { text_end + 4 } else { shot_emb_offset + h.element.block_len(shots, dim) + 4 };
        Layout { labels_len, meta_len, emb_offset, shot_offset, shot_emb_offset, file_len }
    }

    /// The label table's byte range (saturating: a range past the file is
    /// then refused by `get`, not wrapped into it).
    pub fn labels(&self) -> std::ops::Range<usize> {
        HEADER_LEN..HEADER_LEN.saturating_add(self.labels_len)
    }

    /// The metadata's byte range (saturating, as [`Layout::labels`]).
    pub fn meta(&self) -> std::ops::Range<usize> {
        let start = HEADER_LEN.saturating_add(self.labels_len);
        start..start.saturating_add(self.meta_len)
    }
}

/// The `N` bytes at `at`; zeros past the end of `b` (callers check the
/// length first: this only keeps a missed check from panicking).
#[deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
fn bytes_at<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b.get(at..).and_then(|s| s.first_chunk::<N>()).copied().unwrap_or([0; N])
}

/// Little-endian u16 at `at` (see [`bytes_at`] for the bounds).
pub(super) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes_at(b, at))
}

/// Little-endian u32 at `at` (see [`bytes_at`] for the bounds).
pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes_at(b, at))
}

/// Little-endian u64 at `at` (see [`bytes_at`] for the bounds).
pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes_at(b, at))
}

/// A file offset from the header; one too large for this machine's `usize`
/// saturates, so that it fails the checks below instead of wrapping.
fn offset_at(b: &[u8], at: usize) -> usize {
    usize::try_from(u64_at(b, at)).unwrap_or(usize::MAX)
}

/// Checks the header of the `bytes` of a whole file, in the order of
/// `docs/prompt-store.md` (size, magic, version, length, CRC, fields, block
/// placement), and returns it with the layout of the blocks, which all lie
/// inside `bytes`. The label table, metadata, shot table and rows are checked
/// by the reader.
#[deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
pub(super) fn parse_header(bytes: &[u8]) -> Result<(Header, Layout), String> {
    let len = bytes.len();
    let too_short = || {
        format!("file is {len} bytes, shorter than the {HEADER_LEN}-byte header (truncated or not a prompt store)")
    };
    let (body, stored_crc) = bytes.split_last_chunk::<4>().ok_or_else(too_short)?;
    if body.len() < HEADER_LEN {
        return Err(too_short());
    }
    if bytes.first_chunk::<8>() != Some(MAGIC) {
        return Err("bad magic: not a clip-edge prompt store".into());
    }
    let version = u16_at(bytes, 8);
    if version != 1 && version != VERSION {
        return Err(format!(
            "format version {version} is not supported (this runtime reads versions 1 and {VERSION})"
        ));
    }
    let file_len = u64_at(bytes, 72);
    if file_len != len as u64 {
        return Err(format!("header says {file_len} bytes but the file has {len} (truncated or corrupt)"));
    }
    let stored_crc = u32::from_le_bytes(*stored_crc);
    let crc = crc32fast::hash(body);
    if crc != stored_crc {
        return Err(format!(
            "checksum mismatch (stored {stored_crc:08x}, computed {crc:08x}): the file is corrupt"
        ));
    }
    let [code] = bytes_at::<1>(bytes, 10);
    let element = ElementType::from_code(code).ok_or_else(|| format!("unknown element type code {code}"))?;
    let dim = u32_at(bytes, 12);
    let count = u32_at(bytes, 16);
    if dim == 0 || dim > MAX_DIM {
        return Err(format!("embedding dimension {dim} is out of range 1..={MAX_DIM}"));
    }
    if count == 0 || count > MAX_COUNT {
        return Err(format!("entry count {count} is out of range 1..={MAX_COUNT}"));
    }
    let logit_scale = f32::from_le_bytes(bytes_at(bytes, 20));
    if !(logit_scale.is_finite() && logit_scale > 0.0) {
        return Err(format!("logit scale {logit_scale} is not a positive number"));
    }
    let fingerprint: [u8; 32] = bytes_at(bytes, 24);
    let labels_len = u32_at(bytes, 56) as usize;
    let meta_len = u32_at(bytes, 60) as usize;
    let emb_offset = offset_at(bytes, 64);
    let (text_rows, n_shots, shots_per_class, max_shots) = if version == 1 {
        (count, 0, DEFAULT_SHOTS_PER_CLASS, DEFAULT_MAX_SHOTS)
    } else {
        (u32_at(bytes, 80), u32_at(bytes, 84), u32_at(bytes, 88), u32_at(bytes, 92))
    };
    if text_rows > count {
        return Err(format!("{text_rows} text rows for {count} entries"));
    }
    if !(1..=MAX_SHOTS).contains(&max_shots) || !(1..=max_shots).contains(&shots_per_class) {
        return Err(format!("shot caps {shots_per_class} per class / {max_shots} in all are out of range"));
    }
    if n_shots > max_shots {
        return Err(format!("{n_shots} shots exceed the store's cap of {max_shots}"));
    }
    HEADER_LEN
        .checked_add(labels_len)
        .and_then(|v| v.checked_add(meta_len))
        .filter(|&v| v <= emb_offset)
        .ok_or("label and metadata blocks overlap the embedding block")?;
    let (block, block_usize) = element.checked_block_len(text_rows, dim);
    let text_end =
        block_usize.and_then(|b| emb_offset.checked_add(b)).filter(|&e| e <= len).ok_or_else(|| {
            format!("text embedding block at {emb_offset} of {block} bytes does not fit a {len}-byte file")
        })?;
    let (shot_offset, shot_emb_offset, shot_block) = if version == 1 {
        (text_end, Some(text_end), Some(0))
    } else {
        let at = offset_at(bytes, 96);
        let emb = (n_shots as usize)
            .checked_mul(SHOT_RECORD)
            .and_then(|table| at.checked_add(table))
            .and_then(|v| v.checked_next_multiple_of(ALIGN));
        (at, emb, element.checked_block_len(n_shots, dim).1)
    };
    let shots_placed = version == 1
        || (shot_offset.is_multiple_of(ALIGN)
            && Some(shot_offset) == text_end.checked_next_multiple_of(ALIGN));
    let end = shot_emb_offset.zip(shot_block).and_then(|(e, b)| e.checked_add(b)?.checked_add(4));
    if !(emb_offset.is_multiple_of(ALIGN) && shots_placed && end == Some(len)) {
        return Err(format!(
            "embedding blocks ({text_rows} text rows at {emb_offset}, {n_shots} shots at {shot_offset}) do not fit a {len}-byte file"
        ));
    }
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
    let shot_emb_offset = shot_emb_offset.unwrap_or(len);
    Ok((header, Layout { labels_len, meta_len, emb_offset, shot_offset, shot_emb_offset, file_len: len }))
}

/// Appends the 128-byte header of a file with layout `at` (version 1 omits
/// the shot fields, which it does not have).
pub(super) fn write_header(out: &mut Vec<u8>, h: &Header, at: &Layout) {
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&h.version.to_le_bytes());
    out.push(h.element.code());
    out.push(0);
    out.extend_from_slice(&h.dim.to_le_bytes());
    out.extend_from_slice(&h.count.to_le_bytes());
    out.extend_from_slice(&h.logit_scale.to_le_bytes());
    out.extend_from_slice(&h.fingerprint);
    out.extend_from_slice(&(at.labels_len as u32).to_le_bytes());
    out.extend_from_slice(&(at.meta_len as u32).to_le_bytes());
    out.extend_from_slice(&(at.emb_offset as u64).to_le_bytes());
    out.extend_from_slice(&(at.file_len as u64).to_le_bytes());
    if h.version != 1 {
        for v in [h.text_rows, h.shots, h.shots_per_class, h.max_shots] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(at.shot_offset as u64).to_le_bytes());
    }
    out.resize(HEADER_LEN, 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::{fix_crc, with_shots};
    use crate::store::PromptStore;

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
    fn offsets_near_the_top_of_the_address_space_fail_without_overflow() {
        let bytes = with_shots(ElementType::Int8).to_bytes().expect("bytes");
        for (at, v) in
            [(96, u64::MAX), (96, u64::MAX - 40), (64, u64::MAX), (64, u64::MAX - 63), (72, u64::MAX)]
        {
            let mut b = bytes.clone();
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
            fix_crc(&mut b);
            let err = PromptStore::from_bytes("o.store", &b).expect_err("huge offset").to_string();
            assert!(err.starts_with("o.store: invalid prompt store"), "{at} {v}: {err}");
        }
    }

    #[test]
    fn the_writer_layout_is_what_the_reader_finds() {
        for el in [ElementType::F32, ElementType::F16, ElementType::Int8] {
            let bytes = with_shots(el).to_bytes().expect("bytes");
            let (h, at) = parse_header(&bytes).expect("valid");
            assert_eq!(Layout::plan(&h, at.labels_len, at.meta_len), at, "{el}");
            let mut again = Vec::new();
            write_header(&mut again, &h, &at);
            assert_eq!(again, bytes[..HEADER_LEN], "{el}");
        }
    }
}
