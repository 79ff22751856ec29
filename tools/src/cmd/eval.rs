//! `clip-edge eval`: top-1/top-5 accuracy and confusions over a folder of
//! labelled images, through the same tract path the device uses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clip_edge_runtime::frame::load_rgb;
use clip_edge_runtime::{Bundle, Classifier, PromptStore};
use serde_json::json;

use super::load_bundle;
use crate::cli::EvalArgs;
use crate::labels::LabelSet;
use crate::prompt_build::{build_store, BuildOptions};

/// One class folder of the data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassFolder {
    /// The class name (the folder's name).
    pub name: String,
    /// Image files, sorted.
    pub images: Vec<PathBuf>,
}

/// Lists `data`'s class subfolders and their image files, sorted by name.
pub fn scan(data: &Path) -> anyhow::Result<Vec<ClassFolder>> {
    let rd =
        std::fs::read_dir(data).with_context(|| format!("cannot read data folder {}", data.display()))?;
    let mut classes = Vec::new();
    for entry in rd {
        let entry = entry.with_context(|| format!("cannot read data folder {}", data.display()))?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut images = Vec::new();
        for f in std::fs::read_dir(&path).with_context(|| format!("cannot read {}", path.display()))? {
            let p = f.with_context(|| format!("cannot read {}", path.display()))?.path();
            if p.is_file() && clip_edge_runtime::frame::is_image_file(&p) {
                images.push(p);
            } else if p.is_file() {
                log::debug!("skipping {} (not an image file name)", p.display());
            }
        }
        images.sort();
        classes.push(ClassFolder { name, images });
    }
    classes.sort_by(|a, b| a.name.cmp(&b.name));
    if classes.is_empty() {
        bail!("{}: no class subfolders (expected one folder of images per class)", data.display());
    }
    Ok(classes)
}

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

fn ratio(a: usize, b: usize) -> f64 {
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
    let templates = crate::templates::named(&a.templates).with_context(|| {
        format!("--templates {}: not a known set (default, imagenet7, imagenet)", a.templates)
    })?;
    let (labels, source) = match &a.labels {
        Some(p) => (LabelSet::load(p, templates)?, p.display().to_string()),
        None => {
            let names: Vec<String> = classes.iter().map(|c| c.name.clone()).collect();
            (LabelSet::from_names(&names, templates), format!("subfolders of {}", a.data.display()))
        }
    };
    let total = labels.prompt_count();
    let step = (total / 10).max(1);
    let t0 = Instant::now();
    let opts = BuildOptions {
        element: clip_edge_runtime::store::ElementType::F32,
        fail_on_truncation: false,
        stamp: false,
        calibrate: !a.no_calibration,
        threads: crate::prompt_build::default_threads(),
    };
    let (builder, _) = build_store(bundle, &labels, opts, |done, total| {
        if !quiet && total >= 50 && (done % step == 0 || done == total) {
            eprintln!("embedding prompts: {done}/{total}, {:.1} s", t0.elapsed().as_secs_f64());
        }
    })
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
    let step = (total / 10).max(1);
    let t0 = Instant::now();
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
            if !quiet && total >= 50 && (done % step == 0 || done == total) {
                eprintln!("evaluating: {done}/{total} images, {:.1} s", t0.elapsed().as_secs_f64());
            }
        }
    }
    if tally.n == 0 {
        bail!("{}: none of the {total} images could be read", a.data.display());
    }
    let elapsed = t0.elapsed();
    let label = |i: usize| clf.label(i).to_string();
    if a.json {
        let per_class: Vec<_> = classes
            .iter()
            .zip(&tally.per_class)
            .map(|(c, &(n, hit))| json!({"class": c.name, "n": n, "top1": ratio(hit, n)}))
            .collect();
        let confusions: Vec<_> = tally
            .worst(a.confusions)
            .into_iter()
            .map(|((t, p), count)| json!({"true": classes[t].name, "predicted": label(p), "count": count}))
            .collect();
        let out = json!({
            "bundle": bundle.dir.display().to_string(),
            "precision": clf.encoder.precision().as_str(),
            "data": a.data.display().to_string(),
            "candidates": clf.store().len(),
            "candidates_from": source,
            "calibrated_candidates": clf.store().meta().similarity_offsets.iter().filter(|&&o| o != 0.0).count(),
            "classes": classes.len(),
            "n": tally.n,
            "top1": tally.top1_rate(),
            "top5": tally.top5_rate(),
            "unreadable": unreadable.len(),
            "unreadable_files": unreadable,
            "per_class": per_class,
            "confusions": confusions,
            "ms_per_image": elapsed.as_secs_f64() * 1e3 / done as f64,
        });
        println!("{out}");
    } else {
        println!(
            "{} ({}), {} classes in {}, {} candidates from {source}",
            bundle.name,
            clf.encoder.precision(),
            classes.len(),
            a.data.display(),
            clf.store().len()
        );
        println!(
            "n {}  top-1 {:.1}%  top-5 {:.1}%  unreadable {}  ({:.1} ms per image)",
            tally.n,
            100.0 * tally.top1_rate(),
            100.0 * tally.top5_rate(),
            unreadable.len(),
            elapsed.as_secs_f64() * 1e3 / done as f64
        );
        for ((t, p), count) in tally.worst(a.confusions) {
            println!("  {count:>4} x  {} -> {}", classes[t].name, label(p));
        }
    }
    Ok(ExitCode::SUCCESS)
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

    #[test]
    fn scan_lists_class_folders_and_images_only() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(dir.path().join("cat")).expect("mkdir");
        std::fs::create_dir(dir.path().join("dog")).expect("mkdir");
        std::fs::write(dir.path().join("cat/b.PNG"), b"x").expect("write");
        std::fs::write(dir.path().join("cat/a.jpg"), b"x").expect("write");
        std::fs::write(dir.path().join("cat/notes.txt"), b"x").expect("write");
        std::fs::write(dir.path().join("README"), b"x").expect("write");
        let c = scan(dir.path()).expect("scan");
        assert_eq!(c.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["cat", "dog"]);
        assert_eq!(c[0].images.len(), 2);
        assert!(c[0].images[0].ends_with("a.jpg"));
        assert!(c[1].images.is_empty());
        let empty = tempfile::tempdir().expect("tmp");
        assert!(scan(empty.path()).is_err());
        assert!(scan(&dir.path().join("missing")).is_err());
    }
}
