//! [`StoreBuilder`]: entries, shots and their caps, serialised into the
//! same bytes for the same input.

use std::path::Path;

use super::atomic::write_atomic;
use super::format::{
    write_header, ElementType, Entry, EntryKind, Header, Layout, Shot, StoreMeta, DEFAULT_MAX_SHOTS,
    DEFAULT_SHOTS_PER_CLASS, MAX_LABEL_BYTES, MAX_SHOTS, VERSION,
};
use super::reader::PromptStore;
use super::rows::write_rows;
use super::tables::{encode_labels, write_shots};
use crate::error::{Error, Result};

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
    pub(super) entries: Vec<Entry>,
    /// Text rows, row-major, in the order of the entries that have text.
    pub(super) rows: Vec<f32>,
    pub(super) shots: Vec<Shot>,
    /// Shot rows, row-major, in shot order.
    pub(super) shot_rows: Vec<f32>,
    pub(super) shots_per_class: u32,
    pub(super) max_shots: u32,
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

    /// Number of shots of entry `i`.
    pub(super) fn count_shots(&self, i: usize) -> usize {
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

    /// Serialises the store (always the current format version). The bytes
    /// are read back before they are returned, so a store the reader would
    /// refuse is never written (e.g. an image-only class whose shots cancel
    /// out once quantised): that is an error here instead.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let bytes = self.serialise(VERSION)?;
        PromptStore::from_bytes("the new store", &bytes).map_err(|e| match e {
            Error::Store { message, .. } => {
                Error::Usage(format!("refusing to write an unreadable store: {message}"))
            }
            other => other,
        })?;
        Ok(bytes)
    }

    pub(crate) fn serialise(&self, version: u16) -> Result<Vec<u8>> {
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
        let labels = encode_labels(&self.entries);
        let meta = serde_json::to_vec(&self.meta).map_err(|e| Error::Usage(e.to_string()))?;
        let mut header = Header {
            version,
            element: self.element,
            dim: self.dim as u32,
            count: self.entries.len() as u32,
            logit_scale: self.logit_scale,
            fingerprint: self.fingerprint,
            file_len: 0,
            text_rows: (self.rows.len() / self.dim) as u32,
            shots: self.shots.len() as u32,
            shots_per_class: self.shots_per_class,
            max_shots: self.max_shots,
        };
        let at = Layout::plan(&header, labels.len(), meta.len());
        header.file_len = at.file_len as u64;

        let mut out = Vec::with_capacity(at.file_len);
        write_header(&mut out, &header, &at);
        out.extend_from_slice(&labels);
        out.extend_from_slice(&meta);
        out.resize(at.emb_offset, 0);
        write_rows(&mut out, self.element, self.dim, &self.rows);
        if version != 1 {
            out.resize(at.shot_offset, 0);
            write_shots(&mut out, &self.shots);
            out.resize(at.shot_emb_offset, 0);
            write_rows(&mut out, self.element, self.dim, &self.shot_rows);
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(out.len(), at.file_len);
        Ok(out)
    }

    /// Serialises the store and replaces `path` atomically.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), &self.to_bytes()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::{builder, fix_crc, with_shots};
    use crate::store::PromptStore;

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
        fix_crc(&mut bytes);
        let err = PromptStore::from_bytes("o.store", &bytes).expect_err("out of range").to_string();
        assert!(err.contains("similarity offset of 'dog' is 2.25, outside -1..=1"), "{err}");

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

    /// Lengths and CRCs of the fixtures as written before the store became a
    /// folder of modules: any change to the bytes written shows here.
    #[test]
    fn bytes_written_are_pinned() {
        let pins = [
            (ElementType::F32, (324, 0x434b_0f06), (500, 0x9881_f3fd)),
            (ElementType::F16, (324, 0x6249_bc1e), (476, 0xb1f9_28db)),
            (ElementType::Int8, (324, 0x8981_e423), (476, 0xc262_4bec)),
        ];
        let pin = |b: Vec<u8>| (b.len(), u32::from_le_bytes(b[b.len() - 4..].try_into().expect("crc")));
        for (el, text, shots) in pins {
            assert_eq!(pin(builder(el).to_bytes().expect("text")), text, "{el}");
            assert_eq!(pin(with_shots(el).to_bytes().expect("shots")), shots, "{el}");
        }
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
}
