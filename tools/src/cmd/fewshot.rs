//! `clip-edge fewshot add/list/remove`: image shots in a prompt store, on the host.

use std::process::ExitCode;

use anyhow::Context;
use clip_edge_runtime::frame::load_rgb;
use clip_edge_runtime::store::{self, rfc3339, EntryKind, PromptStore};
use clip_edge_runtime::ImageEncoder;
use serde_json::json;

use super::load_bundle;
use crate::cli::{FewshotAddArgs, FewshotListArgs, FewshotRemoveArgs};

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
    let done = store::enroll(&path, &bundle.fingerprint, bundle.embed_dim, &a.class, &rows, store::unix_ms())
        .with_context(|| format!("nothing was stored in {}", path.display()))?;
    if a.json {
        println!(
            "{}",
            json!({"store": path.display().to_string(), "bytes_before": before, "enrolled": done})
        );
    } else {
        println!("{}: {done} (was {before})", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `fewshot list`.
pub fn list(a: &FewshotListArgs) -> anyhow::Result<ExitCode> {
    let s = PromptStore::open(&a.file)
        .with_context(|| format!("cannot use prompt store {}", a.file.display()))?;
    let h = s.header();
    let rows: Vec<_> = s
        .entries()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let times: Vec<u64> =
                s.shots().iter().filter(|x| x.entry as usize == i).map(|x| x.captured_at_ms).collect();
            (e, times)
        })
        .collect();
    if a.json {
        let classes: Vec<_> = rows
            .iter()
            .map(|(e, t)| {
                json!({"label": e.label, "kind": e.kind, "text": e.text, "shots": t.len(), "captured_at_ms": t})
            })
            .collect();
        println!(
            "{}",
            json!({"store": a.file.display().to_string(), "version": h.version, "element": h.element,
                   "shots": h.shots, "shots_per_class": h.shots_per_class, "max_shots": h.max_shots,
                   "file_len": h.file_len, "entries": classes})
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}: format {}, {}, {} entries, {} shots (cap {} per class, {} in all), {} bytes",
        a.file.display(),
        h.version,
        h.element,
        h.count,
        h.shots,
        h.shots_per_class,
        h.max_shots,
        h.file_len
    );
    for (e, times) in rows {
        let kind = match (e.kind, e.text) {
            (EntryKind::Background, _) => "background",
            (EntryKind::Class, true) => "class",
            (EntryKind::Class, false) => "class, image-only",
        };
        let when = match (times.iter().min(), times.iter().max()) {
            (Some(a), Some(b)) => format!(", captured {} .. {}", rfc3339(*a), rfc3339(*b)),
            _ => String::new(),
        };
        println!("  {:<32} {kind:<18} {:>3} shots{when}", e.label, times.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `fewshot remove`.
pub fn remove(a: &FewshotRemoveArgs) -> anyhow::Result<ExitCode> {
    let mut image_only = false;
    let removed = store::update(&a.file, |b| {
        image_only = b.entries().iter().any(|e| e.label == a.class && !e.text);
        b.remove_shots(&a.class)
    })
    .with_context(|| format!("nothing was changed in {}", a.file.display()))?;
    println!(
        "{}: removed {removed} shot(s) of '{}'{}",
        a.file.display(),
        a.class,
        if image_only { " and the image-only class itself" } else { "; its text embedding stays" }
    );
    Ok(ExitCode::SUCCESS)
}
