//! The label table and the shot table, in both directions.

use std::collections::HashSet;

use super::format::{u32_at, u64_at, Entry, EntryKind, Shot, SHOT_RECORD};

const KIND_BACKGROUND: u8 = 1;
const KIND_NO_TEXT: u8 = 2;

/// The label table of `entries`.
pub(super) fn encode_labels(entries: &[Entry]) -> Vec<u8> {
    let mut labels = Vec::new();
    for e in entries {
        let mut code = if e.kind == EntryKind::Background { KIND_BACKGROUND } else { 0 };
        if !e.text {
            code |= KIND_NO_TEXT;
        }
        labels.push(code);
        labels.extend_from_slice(&(e.label.len() as u16).to_le_bytes());
        labels.extend_from_slice(e.label.as_bytes());
    }
    labels
}

/// Reads a label table of `count` entries: known kinds, UTF-8, non-empty,
/// unique labels, no bytes left over.
#[deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
pub(super) fn parse_labels(mut b: &[u8], count: usize, version: u16) -> Result<Vec<Entry>, String> {
    // Each entry takes at least 4 bytes: a count larger than that is a lie
    // (and must not reserve memory for it).
    let mut entries = Vec::with_capacity(count.min(b.len() / 4));
    let mut seen = HashSet::new();
    let known = if version == 1 { KIND_BACKGROUND } else { KIND_BACKGROUND | KIND_NO_TEXT };
    for i in 0..count {
        let Some((&[code, n0, n1], rest)) = b.split_first_chunk::<3>() else {
            return Err(format!("label table ends before entry {i} of {count}"));
        };
        if code & !known != 0 || code == KIND_BACKGROUND | KIND_NO_TEXT {
            return Err(format!("entry {i} has unknown kind code {code}"));
        }
        let kind = if code & KIND_BACKGROUND != 0 { EntryKind::Background } else { EntryKind::Class };
        let n = usize::from(u16::from_le_bytes([n0, n1]));
        let (text, rest) = rest
            .split_at_checked(n)
            .ok_or_else(|| format!("label of entry {i} runs past the label table"))?;
        let label =
            std::str::from_utf8(text).map_err(|_| format!("label of entry {i} is not UTF-8"))?.to_string();
        if label.trim().is_empty() {
            return Err(format!("entry {i} has an empty label"));
        }
        if !seen.insert(label.clone()) {
            return Err(format!("label '{label}' appears twice"));
        }
        entries.push(Entry { label, kind, text: code & KIND_NO_TEXT == 0 });
        b = rest;
    }
    if !b.is_empty() {
        return Err(format!("{} unexpected bytes after the last label", b.len()));
    }
    Ok(entries)
}

/// Appends the shot table records of `shots`.
pub(super) fn write_shots(out: &mut Vec<u8>, shots: &[Shot]) {
    for s in shots {
        out.extend_from_slice(&s.entry.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&s.captured_at_ms.to_le_bytes());
    }
}

/// Reads a shot table: every shot names one of the `count` entries and has
/// zero reserved bytes.
#[deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
pub(super) fn parse_shots(b: &[u8], count: u32) -> Result<Vec<Shot>, String> {
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
