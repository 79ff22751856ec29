//! `clip-edge eval`: top-1/top-5 accuracy and confusions over a folder of
//! labelled images, through the same tract path the device uses.

use std::collections::HashMap;
use std::fmt::Display;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clip_edge_runtime::frame::load_rgb;
use clip_edge_runtime::{Bundle, Classifier, PromptStore};
use clip_edge_tools::dataset::{scan, ClassFolder};
use clip_edge_tools::labels::LabelSet;
use clip_edge_tools::prompt_build::{build_store, BuildOptions};
use clip_edge_tools::report::{Format, Progress};
use serde::Serialize;

use super::load_bundle;
use crate::cli::EvalArgs;

/// Running counts of an evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Images scored.
    pub n: usize,
    /// Images whose class ranked first.
    pub top1: usize,
    /// Images whose class ranked in the first five.
    pub top5: usize,
    /// Per class folder: (images, top-1 hits).
    pub per_class: Vec<(usize, usize)>,
    /// (true class folder, predicted store entry) -> count, for top-1 misses.
    pub confusions: HashMap<(usize, usize), usize>,
}

impl Tally {
    /// A tally for `classes` class folders.
    pub fn new(classes: usize) -> Tally {
        Tally { per_class: vec![(0, 0); classes], ..Tally::default() }
    }

    /// Records one image of class folder `class` (store entry `truth`) ranked as `ranking`, best first.
    pub fn add(&mut self, class: usize, truth: usize, ranking: &[usize]) {
        self.n += 1;
        self.per_class[class].0 += 1;
        match ranking.iter().position(|&r| r == truth) {
            Some(0) => {
                self.top1 += 1;
                self.top5 += 1;
                self.per_class[class].1 += 1;
            }
            Some(p) if p < 5 => self.top5 += 1,
            _ => {}
        }
        if let Some(&first) = ranking.first() {
            if first != truth {
                *self.confusions.entry((class, first)).or_default() += 1;
            }
        }
    }

    /// Fraction of images with their class first.
    pub fn top1_rate(&self) -> f64 {
        ratio(self.top1, self.n)
    }

    /// Fraction of images with their class in the first five.
    pub fn top5_rate(&self) -> f64 {
        ratio(self.top5, self.n)
    }

    /// The `k` most frequent confusions, most frequent first (ties by class order).
    pub fn worst(&self, k: usize) -> Vec<((usize, usize), usize)> {
        let mut v: Vec<_> = self.confusions.iter().map(|(&p, &c)| (p, c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(k);
        v
    }
}

/// `a / b`, 0 when `b` is 0.
pub fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn candidate_store(
    a: &EvalArgs,
    bundle: &Bundle,
    classes: &[ClassFolder],
    quiet: bool,
) -> anyhow::Result<(PromptStore, String)> {
    if let Some(p) = &a.prompts {
        let store =
            PromptStore::open(p).with_context(|| format!("cannot use prompt store {}", p.display()))?;
        return Ok((store, p.display().to_string()));
    }
    let templates = clip_edge_tools::templates::named(&a.templates).with_context(|| {
        format!("--templates {}: not a known set (default, imagenet7, imagenet)", a.templates)
    })?;
    let (labels, source) = match &a.labels {
        Some(p) => (LabelSet::load(p, templates)?, p.display().to_string()),
        None => {
            let names: Vec<String> = classes.iter().map(|c| c.name.clone()).collect();
            (LabelSet::from_names(&names, templates), format!("subfolders of {}", a.data.display()))
        }
    };
    let progress = Progress::new("embedding prompts", "prompts", labels.prompt_count(), 50, !quiet);
    let opts = BuildOptions {
        element: clip_edge_runtime::store::ElementType::F32,
        fail_on_truncation: false,
        stamp: false,
        calibrate: !a.no_calibration,
        threads: clip_edge_tools::prompt_build::default_threads(),
    };
    let (builder, _) = build_store(bundle, &labels, opts, |done, _| progress.tick(done))
        .with_context(|| format!("cannot embed the candidate classes of {source}"))?;
    let store = PromptStore::from_bytes(&source, &builder.to_bytes()?)?;
    Ok((store, source))
}

/// Runs `eval`.
pub fn run(a: &EvalArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let classes = scan(&a.data)?;
    let bundle = load_bundle(&a.model.bundle)?;
    let (store, source) = candidate_store(a, &bundle, &classes, quiet)?;
    let index: HashMap<&str, usize> =
        store.entries().iter().enumerate().map(|(i, e)| (e.label.as_str(), i)).collect();
    let mut truth = Vec::with_capacity(classes.len());
    for c in &classes {
        match index.get(c.name.as_str()) {
            Some(&i) => truth.push(i),
            None => bail!(
                "{}: folder '{}' is not one of the {} candidate classes of {source} (names must match exactly)",
                a.data.join(&c.name).display(),
                c.name,
                store.len()
            ),
        }
    }
    let mut clf = Classifier::with_store(&bundle, a.model.precision, store)
        .with_context(|| format!("cannot load model of bundle {}", bundle.dir.display()))?;
    clf.encoder.set_threads(usize::from(a.model.threads)).context("--threads")?;
    let total: usize = classes.iter().map(|c| c.images.len()).sum();
    if total == 0 {
        bail!("{}: the class folders hold no images", a.data.display());
    }
    if !a.shots.is_empty() {
        return super::shots_eval::run(a, &mut clf, &classes, &truth, &source, quiet);
    }
    let rule = a.mix.rule(0.0, -1.0);
    let mut tally = Tally::new(classes.len());
    let mut unreadable = Vec::new();
    let progress = Progress::new("evaluating", "images", total, 50, !quiet);
    let mut done = 0;
    for (ci, c) in classes.iter().enumerate() {
        for path in &c.images {
            let result =
                load_rgb(path).and_then(|f| clf.encoder.encode(&f)).and_then(|e| clf.score(&e, 5, &rule));
            match result {
                Ok(r) => {
                    let ranking: Vec<usize> = r.top.iter().map(|t| t.index).collect();
                    tally.add(ci, truth[ci], &ranking);
                }
                Err(err) => {
                    log::warn!("unreadable, skipped: {err}");
                    unreadable.push(path.display().to_string());
                }
            }
            done += 1;
            progress.tick(done);
        }
    }
    if tally.n == 0 {
        bail!("{}: none of the {total} images could be read", a.data.display());
    }
    let ms_per_image = progress.elapsed().as_secs_f64() * 1e3 / done as f64;
    let per_class = classes
        .iter()
        .zip(&tally.per_class)
        .map(|(c, &(n, hit))| ClassRow { class: c.name.clone(), n, top1: ratio(hit, n) })
        .collect();
    let confusions = tally
        .worst(a.confusions)
        .into_iter()
        .map(|((t, p), count)| Confusion {
            truth: classes[t].name.clone(),
            predicted: clf.label(p).to_string(),
            count,
        })
        .collect();
    let report = EvalReport {
        bundle: bundle.dir.display().to_string(),
        bundle_name: bundle.name.clone(),
        precision: clf.encoder.precision().as_str(),
        data: a.data.display().to_string(),
        candidates: clf.store().len(),
        candidates_from: source,
        calibrated_candidates: clf.store().meta().similarity_offsets.iter().filter(|&&o| o != 0.0).count(),
        classes: classes.len(),
        n: tally.n,
        top1: tally.top1_rate(),
        top5: tally.top5_rate(),
        unreadable: unreadable.len(),
        unreadable_files: unreadable,
        per_class,
        confusions,
        ms_per_image,
    };
    Format::from_flag(a.json).print(&report)?;
    Ok(ExitCode::SUCCESS)
}

/// Top-1 of one class folder.
#[derive(Debug, Serialize)]
pub struct ClassRow {
    class: String,
    n: usize,
    top1: f64,
}

/// How often one class was taken for another.
#[derive(Debug, Serialize)]
pub struct Confusion {
    #[serde(rename = "true")]
    truth: String,
    predicted: String,
    count: usize,
}

/// The report of `clip-edge eval` (without `--shots`).
#[derive(Debug, Serialize)]
pub struct EvalReport {
    bundle: String,
    bundle_name: String,
    precision: &'static str,
    data: String,
    candidates: usize,
    candidates_from: String,
    calibrated_candidates: usize,
    classes: usize,
    n: usize,
    top1: f64,
    top5: f64,
    unreadable: usize,
    unreadable_files: Vec<String>,
    per_class: Vec<ClassRow>,
    confusions: Vec<Confusion>,
    ms_per_image: f64,
}

impl Display for EvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} ({}), {} classes in {}, {} candidates from {}",
            self.bundle_name, self.precision, self.classes, self.data, self.candidates, self.candidates_from
        )?;
        writeln!(
            f,
            "n {}  top-1 {:.1}%  top-5 {:.1}%  unreadable {}  ({:.1} ms per image)",
            self.n,
            100.0 * self.top1,
            100.0 * self.top5,
            self.unreadable,
            self.ms_per_image
        )?;
        for c in &self.confusions {
            writeln!(f, "  {:>4} x  {} -> {}", c.count, c.truth, c.predicted)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_ranks_and_confusions() {
        let mut t = Tally::new(2);
        t.add(0, 7, &[7, 1, 2]);
        t.add(0, 7, &[1, 7, 2]);
        t.add(1, 3, &[1, 2, 4, 5, 6, 3]);
        t.add(1, 3, &[1, 3]);
        assert_eq!((t.n, t.top1, t.top5), (4, 1, 3));
        assert_eq!(t.per_class, vec![(2, 1), (2, 0)]);
        assert_eq!(t.worst(1), vec![((1, 1), 2)]);
        assert!((t.top1_rate() - 0.25).abs() < 1e-12);
        assert!((t.top5_rate() - 0.75).abs() < 1e-12);
        assert_eq!(Tally::new(0).top1_rate(), 0.0);
    }
}
