//! `clip-edge fewshot add/list/remove`: image shots in a prompt store, on the host.

use std::fmt::Display;
use std::process::ExitCode;

use anyhow::Context;
use clip_edge_runtime::frame::load_rgb;
use clip_edge_runtime::store::{self, rfc3339, Enrolled, EntryKind, PromptStore};
use clip_edge_runtime::ImageEncoder;
use clip_edge_tools::report::Format;
use serde::Serialize;

use super::load_bundle;
use crate::cli::{FewshotAddArgs, FewshotListArgs, FewshotRemoveArgs};

/// The report of `fewshot add`.
#[derive(Debug, Serialize)]
pub struct AddReport {
    store: String,
    bytes_before: u64,
    enrolled: Enrolled,
}

impl Display for AddReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}: {} (was {})", self.store, self.enrolled, self.bytes_before)
    }
}

/// Runs `fewshot add`: every image is decoded and embedded first, so a bad
/// image leaves the store untouched; then all shots go in one locked, atomic write.
pub fn add(a: &FewshotAddArgs) -> anyhow::Result<ExitCode> {
    let bundle = load_bundle(&a.model.bundle)?;
    let path = match &a.prompts {
        Some(p) => p.clone(),
        None => bundle.prompts.clone().with_context(|| {
            format!("bundle {} names no default prompt store; pass --prompts", bundle.dir.display())
        })?,
    };
    let before = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let mut encoder = ImageEncoder::load(&bundle, a.model.precision)
        .with_context(|| format!("cannot load model of bundle {}", bundle.dir.display()))?;
    encoder.set_threads(usize::from(a.model.threads)).context("--threads")?;
    let mut embeddings = Vec::with_capacity(a.images.len());
    for img in &a.images {
        let e = load_rgb(img).and_then(|f| encoder.encode(&f)).context("nothing was stored")?;
        embeddings.push(e);
    }
    let rows: Vec<&[f32]> = embeddings.iter().map(|e| e.as_slice()).collect();
    let enrolled =
        store::enroll(&path, &bundle.fingerprint, bundle.embed_dim, &a.class, &rows, store::unix_ms())
            .with_context(|| format!("nothing was stored in {}", path.display()))?;
    let report = AddReport { store: path.display().to_string(), bytes_before: before, enrolled };
    Format::from_flag(a.json).print(&report)?;
    Ok(ExitCode::SUCCESS)
}

/// One entry of the store with its shots.
#[derive(Debug, Serialize)]
pub struct ListedEntry {
    label: String,
    kind: EntryKind,
    text: bool,
    shots: usize,
    captured_at_ms: Vec<u64>,
}

/// The report of `fewshot list`.
#[derive(Debug, Serialize)]
pub struct ListReport {
    store: String,
    version: u16,
    element: store::ElementType,
    shots: u32,
    shots_per_class: u32,
    max_shots: u32,
    file_len: u64,
    entries: Vec<ListedEntry>,
}

impl Display for ListReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: format {}, {}, {} entries, {} shots (cap {} per class, {} in all), {} bytes",
            self.store,
            self.version,
            self.element,
            self.entries.len(),
            self.shots,
            self.shots_per_class,
            self.max_shots,
            self.file_len
        )?;
        for e in &self.entries {
            let kind = match (e.kind, e.text) {
                (EntryKind::Background, _) => "background",
                (EntryKind::Class, true) => "class",
                (EntryKind::Class, false) => "class, image-only",
            };
            let times = &e.captured_at_ms;
            let when = match (times.iter().min(), times.iter().max()) {
                (Some(a), Some(b)) => format!(", captured {} .. {}", rfc3339(*a), rfc3339(*b)),
                _ => String::new(),
            };
            writeln!(f, "  {:<32} {kind:<18} {:>3} shots{when}", e.label, e.shots)?;
        }
        Ok(())
    }
}

/// Runs `fewshot list`.
pub fn list(a: &FewshotListArgs) -> anyhow::Result<ExitCode> {
    let s = PromptStore::open(&a.file)
        .with_context(|| format!("cannot use prompt store {}", a.file.display()))?;
    let h = s.header();
    let entries = s
        .entries()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let captured_at_ms: Vec<u64> =
                s.shots().iter().filter(|x| x.entry as usize == i).map(|x| x.captured_at_ms).collect();
            ListedEntry {
                label: e.label.clone(),
                kind: e.kind,
                text: e.text,
                shots: captured_at_ms.len(),
                captured_at_ms,
            }
        })
        .collect();
    let report = ListReport {
        store: a.file.display().to_string(),
        version: h.version,
        element: h.element,
        shots: h.shots,
        shots_per_class: h.shots_per_class,
        max_shots: h.max_shots,
        file_len: h.file_len,
        entries,
    };
    Format::from_flag(a.json).print(&report)?;
    Ok(ExitCode::SUCCESS)
}

/// The report of `fewshot remove`.
#[derive(Debug, Serialize)]
pub struct RemoveReport {
    store: String,
    class: String,
    removed: usize,
    /// Whether the class itself went too (it had no text embedding).
    class_removed: bool,
}

impl Display for RemoveReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tail = if self.class_removed {
            " and the image-only class itself"
        } else {
            "; its text embedding stays"
        };
        writeln!(f, "{}: removed {} shot(s) of '{}'{tail}", self.store, self.removed, self.class)
    }
}

/// Runs `fewshot remove`.
pub fn remove(a: &FewshotRemoveArgs) -> anyhow::Result<ExitCode> {
    let mut image_only = false;
    let removed = store::update(&a.file, |b| {
        image_only = b.entries().iter().any(|e| e.label == a.class && !e.text);
        b.remove_shots(&a.class)
    })
    .with_context(|| format!("nothing was changed in {}", a.file.display()))?;
    let report = RemoveReport {
        store: a.file.display().to_string(),
        class: a.class.clone(),
        removed,
        class_removed: image_only,
    };
    Format::from_flag(a.json).print(&report)?;
    Ok(ExitCode::SUCCESS)
}
