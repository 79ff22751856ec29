//! `clip-edge prompts`: inspect and create prompt stores.

use std::process::ExitCode;

use anyhow::Context;
use clip_edge_runtime::bundle::hex;
use clip_edge_runtime::store::{EntryKind, StoreBuilder, StoreMeta};
use clip_edge_runtime::PromptStore;
use serde_json::json;

use super::load_bundle;
use crate::cli::{BuildArgs, InspectArgs, RandomArgs};
use crate::labels::LabelSet;
use crate::prompt_build::{build_store, BuildOptions};
use crate::rng::SplitMix64;

/// Cosine above which two entries are reported as easily confused.
pub const CONFUSABLE_COSINE: f32 = 0.95;

/// A pair of entries and the cosine between their embeddings.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// Row of the first entry.
    pub a: usize,
    /// Row of the second entry.
    pub b: usize,
    /// Cosine similarity of the two rows.
    pub cosine: f32,
}

/// The `n` most similar pairs of entries, most similar first.
pub fn closest_pairs(store: &PromptStore, n: usize) -> Vec<Pair> {
    let rows: Vec<Vec<f32>> = (0..store.len()).map(|i| store.row_f32(i)).collect();
    let mut pairs = Vec::new();
    for a in 0..rows.len() {
        for b in a + 1..rows.len() {
            let cosine = rows[a].iter().zip(&rows[b]).map(|(x, y)| x * y).sum();
            pairs.push(Pair { a, b, cosine });
        }
    }
    pairs.sort_by(|x, y| y.cosine.total_cmp(&x.cosine));
    pairs.truncate(n);
    pairs
}

/// Runs `prompts inspect`.
pub fn inspect(a: &InspectArgs) -> anyhow::Result<ExitCode> {
    let store = PromptStore::open(&a.file)?;
    let model_check = match &a.bundle {
        Some(dir) => {
            let bundle = load_bundle(dir)?;
            Some(store.check_model(&bundle.fingerprint, bundle.embed_dim).map(|_| bundle.name.clone()))
        }
        None => None,
    };
    let h = store.header();
    let m = store.meta();
    let pairs = closest_pairs(&store, a.pairs);
    let prompts = |i: usize| m.prompts_per_entry.get(i).copied().filter(|&n| n > 0);
    if a.json {
        let entries: Vec<_> = store
            .entries()
            .iter()
            .enumerate()
            .map(|(i, e)| {
                json!({"label": e.label, "kind": e.kind, "prompts": prompts(i),
                       "similarity_offset": store.similarity_offset(i)})
            })
            .collect();
        let pairs: Vec<_> = pairs
            .iter()
            .map(|p| json!({"a": store.entries()[p.a].label, "b": store.entries()[p.b].label, "cosine": p.cosine}))
            .collect();
        let model = model_check.as_ref().map(|r| match r {
            Ok(name) => json!({"matches": true, "bundle": name}),
            Err(e) => json!({"matches": false, "error": e.to_string()}),
        });
        let out = json!({
            "file": a.file.display().to_string(),
            "header": h,
            "entries": entries,
            "meta": m,
            "checks": "ok",
            "model_check": model,
            "closest_pairs": pairs,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}", a.file.display());
        println!(
            "  format       version {}, {} elements, {} entries x {} dims, {} bytes",
            h.version, h.element, h.count, h.dim, h.file_len
        );
        println!("  model        {}", hex(&h.fingerprint));
        println!("  logit scale  {}", h.logit_scale);
        println!(
            "  built by     {}{}",
            if m.tool.is_empty() { "(unknown)" } else { &m.tool },
            m.built_at.as_deref().map(|t| format!(" at {t}")).unwrap_or_default()
        );
        println!("  templates    {}", m.templates.len());
        if let Some(note) = &m.note {
            println!("  note         {note}");
        }
        println!("  checks       size, CRC-32, labels, metadata, values: ok");
        if let Some(check) = &model_check {
            match check {
                Ok(name) => println!("  bundle       fits model '{name}'"),
                Err(e) => println!("  bundle       DOES NOT FIT: {e}"),
            }
        }
        println!("  entries:");
        for (i, e) in store.entries().iter().enumerate() {
            let kind = match e.kind {
                EntryKind::Class => "class",
                EntryKind::Background => "background",
            };
            let n = prompts(i).map(|n| format!(", {n} prompts")).unwrap_or_default();
            let offset = store.similarity_offset(i);
            let cal = if offset == 0.0 { String::new() } else { format!(", similarity {offset:+}") };
            println!("    {:>3}. {} ({kind}{n}{cal})", i + 1, e.label);
        }
        if !pairs.is_empty() {
            println!("  closest pairs:");
            for p in &pairs {
                let warn = if p.cosine > CONFUSABLE_COSINE { "  <- easily confused" } else { "" };
                println!(
                    "    {} ~ {}  cos {:.3}{warn}",
                    store.entries()[p.a].label,
                    store.entries()[p.b].label,
                    p.cosine
                );
            }
        }
    }
    for p in pairs.iter().filter(|p| p.cosine > CONFUSABLE_COSINE) {
        log::warn!(
            "{}: '{}' and '{}' have nearly the same embedding (cos {:.3}); they will be confused",
            a.file.display(),
            store.entries()[p.a].label,
            store.entries()[p.b].label,
            p.cosine
        );
    }
    match model_check {
        Some(Err(e)) => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Runs `prompts build`.
pub fn build(a: &BuildArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let default_templates = crate::templates::named(&a.templates).with_context(|| {
        format!("--templates {}: not a known set (default, imagenet7, imagenet)", a.templates)
    })?;
    let bundle = load_bundle(&a.bundle)?;
    let labels = LabelSet::load(&a.labels, default_templates)?;
    let total = labels.prompt_count();
    let t0 = std::time::Instant::now();
    let step = (total / 10).max(1);
    let show = !quiet && total >= 50;
    let opts = BuildOptions {
        element: a.element,
        fail_on_truncation: a.fail_on_truncation,
        stamp: a.stamp,
        calibrate: !a.no_calibration,
        threads: a.threads.map_or_else(crate::prompt_build::default_threads, usize::from),
    };
    let (builder, report) = build_store(&bundle, &labels, opts, |done, total| {
        if show && (done % step == 0 || done == total) {
            let secs = t0.elapsed().as_secs_f64();
            let left = secs / done as f64 * (total - done) as f64;
            eprintln!(
                "embedding prompts: {done}/{total} ({:.0}%), {secs:.1} s, ~{left:.0} s left",
                100.0 * done as f64 / total as f64
            );
        }
    })
    .with_context(|| format!("cannot build a prompt store for {}", a.labels.display()))?;
    for p in &report.truncated {
        log::warn!("prompt cut to the text encoder's context: {p:?}");
    }
    if let Some((bonus, unseen)) = &report.calibration {
        log::info!(
            "calibration: {} of {} classes are not training concepts of this model and get +{bonus} similarity",
            unseen.len(),
            labels.entries.iter().filter(|e| e.kind == EntryKind::Class).count()
        );
    }
    let bytes = builder.to_bytes()?;
    clip_edge_runtime::store::write_atomic(&a.out, &bytes)
        .with_context(|| format!("cannot write prompt store {}", a.out.display()))?;
    let elapsed = t0.elapsed();
    if a.json {
        let entries: Vec<_> = report.entries.iter().map(|(l, n)| json!({"label": l, "prompts": n})).collect();
        let out = json!({
            "out": a.out.display().to_string(),
            "element": a.element.as_str(),
            "threads": opts.threads,
            "entries": entries,
            "prompts": total,
            "truncated": report.truncated,
            "calibration": report.calibration.as_ref().map(|(bonus, unseen)| json!({"unseen_bonus": bonus, "unseen": unseen})),
            "bytes": bytes.len(),
            "load_ms": report.load.as_secs_f64() * 1e3,
            "embed_ms": report.embed.as_secs_f64() * 1e3,
            "total_ms": elapsed.as_secs_f64() * 1e3,
        });
        println!("{out}");
    } else {
        for (label, n) in &report.entries {
            println!("  {label}: {n} prompts");
        }
        println!(
            "wrote {} ({} entries, {total} prompts, {}, {} bytes) in {:.2} s ({:.1} ms per prompt){}",
            a.out.display(),
            report.entries.len(),
            a.element,
            bytes.len(),
            elapsed.as_secs_f64(),
            report.embed.as_secs_f64() * 1e3 / total.max(1) as f64,
            if report.truncated.is_empty() {
                String::new()
            } else {
                format!("; {} prompt(s) truncated", report.truncated.len())
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `prompts random`.
pub fn random(a: &RandomArgs) -> anyhow::Result<ExitCode> {
    let bundle = load_bundle(&a.bundle)?;
    let meta = StoreMeta {
        tool: format!("clip-edge {} prompts random", env!("CARGO_PKG_VERSION")),
        templates: Vec::new(),
        prompts_per_entry: vec![0; a.labels.len() + a.background.len()],
        built_at: None,
        note: Some(format!("placeholder: seeded random unit vectors (seed {}), not text embeddings", a.seed)),
        similarity_offsets: Vec::new(),
    };
    let mut builder =
        StoreBuilder::new(bundle.embed_dim, bundle.fingerprint, bundle.logit_scale, a.element).meta(meta);
    let mut rng = SplitMix64::new(a.seed);
    let labelled = a
        .labels
        .iter()
        .map(|l| (l, EntryKind::Class))
        .chain(a.background.iter().map(|l| (l, EntryKind::Background)));
    for (label, kind) in labelled {
        let v: Vec<f32> = (0..bundle.embed_dim).map(|_| rng.next_normal()).collect();
        builder.push(label.trim(), kind, &v).with_context(|| format!("cannot add label '{label}'"))?;
    }
    builder.write(&a.out).with_context(|| format!("cannot write prompt store {}", a.out.display()))?;
    println!(
        "wrote {} ({} entries, {}, placeholder random vectors for bundle '{}')",
        a.out.display(),
        a.labels.len() + a.background.len(),
        a.element,
        bundle.name
    );
    Ok(ExitCode::SUCCESS)
}
