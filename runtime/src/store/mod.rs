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
//!
//! Modules: `format` (constants, types, the header in both directions and
//! checked offsets), `tables` (label and shot tables), `reader`
//! ([`PromptStore`]), `rows` (row decoding, dot kernels, the int8 quantiser),
//! `builder` ([`StoreBuilder`], shot caps), `edit` ([`update`], [`enroll`],
//! [`lock`]), `atomic` ([`write_atomic`]) and `time` ([`unix_ms`], [`rfc3339`]).

mod atomic;
mod builder;
mod edit;
mod format;
mod reader;
mod rows;
mod tables;
mod time;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod proptests;

pub use atomic::write_atomic;
pub use builder::{ShotAdded, StoreBuilder};
pub use edit::{check_editable, enroll, lock, update, Enrolled};
pub use format::{
    ElementType, Entry, EntryKind, Header, Shot, StoreMeta, DEFAULT_MAX_SHOTS, DEFAULT_SHOTS_PER_CLASS,
    MAGIC, VERSION,
};
pub use reader::PromptStore;
pub use time::{rfc3339, unix_ms};
