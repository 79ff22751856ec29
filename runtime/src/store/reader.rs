//! [`PromptStore`]: a store read in one go into an aligned buffer, validated
//! (`docs/prompt-store.md`, "What the reader checks"), and served in place.

use std::path::{Path, PathBuf};

use super::builder::StoreBuilder;
use super::format::{
    parse_header, Entry, Header, Layout, Shot, StoreMeta, HEADER_LEN, MAX_COUNT, MAX_DIM, MAX_SHOTS,
    SHOT_RECORD,
};
use super::rows::{dot, Rows};
use super::tables::{parse_labels, parse_shots};
use crate::bundle::hex;
use crate::error::{Error, Result};

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

/// Larger than any valid store (the most entries and shots of the widest
/// rows, with room for labels): a bigger file is refused before it is read.
const MAX_FILE_LEN: u64 =
    HEADER_LEN as u64 + 2 * (MAX_COUNT as u64 + MAX_SHOTS as u64) * (MAX_DIM as u64 * 4 + 256);

impl PromptStore {
    /// Reads and validates the store at `path`.
    #[deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
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
        let too_large = || Error::store(path, format!("{len} bytes is larger than any valid store"));
        if len > MAX_FILE_LEN {
            return Err(too_large());
        }
        let len = usize::try_from(len).map_err(|_| too_large())?;
        let mut buf = vec![0u64; len.div_ceil(8)];
        {
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut buf);
            let bytes = bytes.get_mut(..len).ok_or_else(too_large)?;
            std::io::Read::read_exact(&mut file, bytes).map_err(|e| Error::io(path, e))?;
        }
        Self::from_buffer(path, buf, len)
    }

    /// Validates a store held in memory; `path` names it in errors.
    #[deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
    pub fn from_bytes(path: impl AsRef<Path>, data: &[u8]) -> Result<PromptStore> {
        let mut buf = vec![0u64; data.len().div_ceil(8)];
        let bytes = bytemuck::cast_slice_mut::<u64, u8>(&mut buf);
        bytes.iter_mut().zip(data).for_each(|(b, d)| *b = *d);
        Self::from_buffer(path.as_ref(), buf, data.len())
    }

    #[deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
    fn from_buffer(path: &Path, buf: Vec<u64>, len: usize) -> Result<PromptStore> {
        let bad = |m: String| Error::store(path, m);
        let outside = |what: &str| bad(format!("{what} lies outside the file"));
        let bytes = bytemuck::cast_slice::<u64, u8>(&buf).get(..len).ok_or_else(|| outside("the file"))?;
        let (header, at): (Header, Layout) = parse_header(bytes).map_err(bad)?;
        let labels = bytes.get(at.labels()).ok_or_else(|| outside("the label table"))?;
        let entries = parse_labels(labels, header.count as usize, header.version).map_err(bad)?;
        let with_text = entries.iter().filter(|e| e.text).count();
        if with_text != header.text_rows as usize {
            return Err(bad(format!(
                "label table marks {with_text} entries with text but the header says {}",
                header.text_rows
            )));
        }
        let shot_table = (header.shots as usize)
            .checked_mul(SHOT_RECORD)
            .and_then(|n| bytes.get(at.shot_offset..)?.get(..n))
            .ok_or_else(|| outside("the shot table"))?;
        let shots = parse_shots(shot_table, header.count).map_err(bad)?;
        let meta_bytes = bytes.get(at.meta()).ok_or_else(|| outside("the metadata"))?;
        let meta: StoreMeta = if meta_bytes.is_empty() {
            StoreMeta::default()
        } else {
            serde_json::from_slice(meta_bytes)
                .map_err(|e| bad(format!("metadata block is not valid JSON: {e}")))?
        };
        let mut store = PromptStore {
            path: path.to_path_buf(),
            header,
            entries,
            meta,
            buf,
            emb_offset: at.emb_offset,
            shot_emb_offset: at.shot_emb_offset,
            shots,
            rows: Vec::new(),
            prototypes: Vec::new(),
        };
        store.check_rows()?;
        store.check_offsets()?;
        store.index_rows()?;
        Ok(store)
    }

    #[deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
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
        match self.entries.iter().zip(offsets).find(|(_, o)| !(o.is_finite() && (-1.0..=1.0).contains(*o))) {
            Some((e, o)) => Err(Error::store(
                &self.path,
                format!("similarity offset of '{}' is {o}, outside -1..=1", e.label),
            )),
            None => Ok(()),
        }
    }

    #[deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
    fn check_rows(&self) -> Result<()> {
        if self.text_block().all_finite() && self.shot_block().all_finite() {
            Ok(())
        } else {
            Err(Error::store(&self.path, "embedding block holds NaN, infinite or negative-scale values"))
        }
    }

    /// Maps entries to rows, checks the per-class cap, and averages the shots
    /// of each image-only entry into its prototype.
    #[deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
    fn index_rows(&mut self) -> Result<()> {
        let d = self.dim();
        // parse_shots checked that every shot names an entry; a count past
        // the table is ignored here rather than trusted.
        let mut per_entry = vec![0u32; self.len()];
        for s in &self.shots {
            if let Some(n) = per_entry.get_mut(s.entry as usize) {
                *n = n.saturating_add(1);
            }
        }
        let mut rows = Vec::with_capacity(self.len());
        let mut prototypes = Vec::new();
        let (mut text, mut prototype) = (0usize, 0usize);
        for ((i, e), &shots) in self.entries.iter().enumerate().zip(&per_entry) {
            if shots > self.header.shots_per_class {
                return Err(Error::store(
                    &self.path,
                    format!(
                        "'{}' holds {shots} shots, above the per-class cap of {}",
                        e.label, self.header.shots_per_class
                    ),
                ));
            }
            if e.text {
                rows.push(RowRef::Text(text));
                text = text.saturating_add(1);
                continue;
            }
            if shots == 0 {
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
            rows.push(RowRef::Prototype(prototype));
            prototype = prototype.saturating_add(1);
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
        Rows::new(bytemuck::cast_slice(&self.buf), self.header.element, start, rows, self.dim())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::{builder, fix_crc, with_shots};
    use crate::store::format::{u16_at, u64_at, ALIGN};
    use crate::store::{ElementType, EntryKind, VERSION};

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
        fix_crc(&mut bytes);
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
}
