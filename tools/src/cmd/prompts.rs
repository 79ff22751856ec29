//! `clip-edge prompts`: inspect and create prompt stores.

use std::fmt::Display;
use std::process::ExitCode;

use anyhow::Context;
use clip_edge_runtime::bundle::hex;
use clip_edge_runtime::store::{ElementType, EntryKind, Header, StoreBuilder, StoreMeta};
use clip_edge_runtime::PromptStore;
use clip_edge_tools::labels::LabelSet;
use clip_edge_tools::prompt_build::{build_store, BuildOptions};
use clip_edge_tools::report::{Format, Progress};
use clip_edge_tools::rng::SplitMix64;
use serde::Serialize;

use super::{kind_str, load_bundle};
use crate::cli::{BuildArgs, InspectArgs, RandomArgs};

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

/// One entry as `prompts inspect` shows it.
#[derive(Debug, Serialize)]
pub struct InspectedEntry {
    label: String,
    kind: EntryKind,
    prompts: Option<u32>,
    similarity_offset: f32,
}

/// Two entries and how alike their embeddings are.
#[derive(Debug, Serialize)]
pub struct PairRow {
    a: String,
    b: String,
    cosine: f32,
}

/// Whether the store fits a bundle's model.
#[derive(Debug, Serialize)]
pub struct ModelCheck {
    matches: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    bundle: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The report of `prompts inspect`.
#[derive(Debug, Serialize)]
pub struct InspectReport {
    file: String,
    header: Header,
    entries: Vec<InspectedEntry>,
    meta: StoreMeta,
    checks: &'static str,
    model_check: Option<ModelCheck>,
    closest_pairs: Vec<PairRow>,
}

impl Display for InspectReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (h, m) = (&self.header, &self.meta);
        writeln!(f, "{}", self.file)?;
        writeln!(
            f,
            "  format       version {}, {} elements, {} entries x {} dims, {} bytes",
            h.version, h.element, h.count, h.dim, h.file_len
        )?;
        writeln!(f, "  model        {}", hex(&h.fingerprint))?;
        writeln!(f, "  logit scale  {}", h.logit_scale)?;
        writeln!(
            f,
            "  built by     {}{}",
            if m.tool.is_empty() { "(unknown)" } else { &m.tool },
            m.built_at.as_deref().map(|t| format!(" at {t}")).unwrap_or_default()
        )?;
        writeln!(f, "  templates    {}", m.templates.len())?;
        if let Some(note) = &m.note {
            writeln!(f, "  note         {note}")?;
        }
        writeln!(f, "  checks       size, CRC-32, labels, metadata, values: {}", self.checks)?;
        match &self.model_check {
            Some(ModelCheck { bundle: Some(name), .. }) => writeln!(f, "  bundle       fits model '{name}'")?,
            Some(ModelCheck { error: Some(e), .. }) => writeln!(f, "  bundle       DOES NOT FIT: {e}")?,
            _ => {}
        }
        writeln!(f, "  entries:")?;
        for (i, e) in self.entries.iter().enumerate() {
            let n = e.prompts.map(|n| format!(", {n} prompts")).unwrap_or_default();
            let offset = e.similarity_offset;
            let cal = if offset == 0.0 { String::new() } else { format!(", similarity {offset:+}") };
            writeln!(f, "    {:>3}. {} ({}{n}{cal})", i + 1, e.label, kind_str(e.kind))?;
        }
        if !self.closest_pairs.is_empty() {
            writeln!(f, "  closest pairs:")?;
            for p in &self.closest_pairs {
                let warn = if p.cosine > CONFUSABLE_COSINE { "  <- easily confused" } else { "" };
                writeln!(f, "    {} ~ {}  cos {:.3}{warn}", p.a, p.b, p.cosine)?;
            }
        }
        Ok(())
    }
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
    let m = store.meta();
    let label = |i: usize| store.entries()[i].label.clone();
    let report = InspectReport {
        file: a.file.display().to_string(),
        header: store.header().clone(),
        entries: store
            .entries()
            .iter()
            .enumerate()
            .map(|(i, e)| InspectedEntry {
                label: e.label.clone(),
                kind: e.kind,
                prompts: m.prompts_per_entry.get(i).copied().filter(|&n| n > 0),
                similarity_offset: store.similarity_offset(i),
            })
            .collect(),
        meta: m.clone(),
        checks: "ok",
        model_check: model_check.as_ref().map(|r| match r {
            Ok(name) => ModelCheck { matches: true, bundle: Some(name.clone()), error: None },
            Err(e) => ModelCheck { matches: false, bundle: None, error: Some(e.to_string()) },
        }),
        closest_pairs: closest_pairs(&store, a.pairs)
            .iter()
            .map(|p| PairRow { a: label(p.a), b: label(p.b), cosine: p.cosine })
            .collect(),
    };
    let format = if a.json { Format::PrettyJson } else { Format::Text };
    format.print(&report)?;
    for p in report.closest_pairs.iter().filter(|p| p.cosine > CONFUSABLE_COSINE) {
        log::warn!(
            "{}: '{}' and '{}' have nearly the same embedding (cos {:.3}); they will be confused",
            a.file.display(),
            p.a,
            p.b,
            p.cosine
        );
    }
    match model_check {
        Some(Err(e)) => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Seen/unseen calibration applied by a build.
#[derive(Debug, Serialize)]
pub struct CalibrationRow {
    unseen_bonus: f32,
    unseen: Vec<String>,
}

/// Prompts averaged into one entry.
#[derive(Debug, Serialize)]
pub struct BuiltEntry {
    label: String,
    prompts: usize,
}

/// The report of `prompts build`.
#[derive(Debug, Serialize)]
pub struct BuildReportOut {
    out: String,
    element: ElementType,
    threads: usize,
    entries: Vec<BuiltEntry>,
    prompts: usize,
    truncated: Vec<String>,
    calibration: Option<CalibrationRow>,
    bytes: usize,
    load_ms: f64,
    embed_ms: f64,
    total_ms: f64,
}

impl Display for BuildReportOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for e in &self.entries {
            writeln!(f, "  {}: {} prompts", e.label, e.prompts)?;
        }
        let truncated = if self.truncated.is_empty() {
            String::new()
        } else {
            format!("; {} prompt(s) truncated", self.truncated.len())
        };
        writeln!(
            f,
            "wrote {} ({} entries, {} prompts, {}, {} bytes) in {:.2} s ({:.1} ms per prompt){truncated}",
            self.out,
            self.entries.len(),
            self.prompts,
            self.element,
            self.bytes,
            self.total_ms / 1e3,
            self.embed_ms / self.prompts.max(1) as f64,
        )
    }
}

/// Runs `prompts build`.
pub fn build(a: &BuildArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let default_templates = clip_edge_tools::templates::named(&a.templates).with_context(|| {
        format!("--templates {}: not a known set (default, imagenet7, imagenet)", a.templates)
    })?;
    let bundle = load_bundle(&a.bundle)?;
    let labels = LabelSet::load(&a.labels, default_templates)?;
    let total = labels.prompt_count();
    let progress = Progress::new("embedding prompts", "prompts", total, 50, !quiet);
    let opts = BuildOptions {
        element: a.element,
        fail_on_truncation: a.fail_on_truncation,
        stamp: a.stamp,
        calibrate: !a.no_calibration,
        threads: a.threads.map_or_else(clip_edge_tools::prompt_build::default_threads, usize::from),
    };
    let (builder, report) = build_store(&bundle, &labels, opts, |done, _| progress.tick(done))
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
    let out = BuildReportOut {
        out: a.out.display().to_string(),
        element: a.element,
        threads: opts.threads,
        entries: report.entries.iter().map(|(l, n)| BuiltEntry { label: l.clone(), prompts: *n }).collect(),
        prompts: total,
        truncated: report.truncated.clone(),
        calibration: report
            .calibration
            .as_ref()
            .map(|(bonus, unseen)| CalibrationRow { unseen_bonus: *bonus, unseen: unseen.clone() }),
        bytes: bytes.len(),
        load_ms: report.load.as_secs_f64() * 1e3,
        embed_ms: report.embed.as_secs_f64() * 1e3,
        total_ms: progress.elapsed().as_secs_f64() * 1e3,
    };
    Format::from_flag(a.json).print(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// The report of `prompts random`.
#[derive(Debug, Serialize)]
pub struct RandomReport {
    out: String,
    entries: usize,
    element: ElementType,
    seed: u64,
    bundle: String,
}

impl Display for RandomReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "wrote {} ({} entries, {}, placeholder random vectors for bundle '{}')",
            self.out, self.entries, self.element, self.bundle
        )
    }
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
    let report = RandomReport {
        out: a.out.display().to_string(),
        entries: a.labels.len() + a.background.len(),
        element: a.element,
        seed: a.seed,
        bundle: bundle.name.clone(),
    };
    Format::from_flag(a.json).print(&report)?;
    Ok(ExitCode::SUCCESS)
}
