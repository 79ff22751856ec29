//! `clip-edge eval --shots 0,1,2,4,8`: the few-shot protocol. Every image is
//! embedded once through tract; then, per random draw, each class folder is
//! shuffled, its first max(LIST) images form the shot pool and the rest are
//! the test images (the same test images for every shot count), and the test
//! images are scored against the candidate store with K shots per class added.

use std::fmt::Display;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clip_edge_runtime::frame::load_rgb;
use clip_edge_runtime::store::PromptStore;
use clip_edge_runtime::{Classifier, Scorer};
use clip_edge_tools::dataset::ClassFolder;
use clip_edge_tools::report::{Format, Progress};
use clip_edge_tools::rng::SplitMix64;
use serde::Serialize;

use super::eval::{ratio, Tally};
use crate::cli::EvalArgs;

/// Results for one shot count over all draws.
#[derive(Debug, Clone, Default)]
struct PerCount {
    top1: Vec<f64>,
    top5: Vec<f64>,
    /// Per class folder: (test images, top-1 hits), summed over draws.
    per_class: Vec<(usize, usize)>,
    score_us: Vec<f64>,
    shots_stored: usize,
    /// (test images, top-1 hits) of the worst group and of the others, summed over draws.
    worst: (usize, usize),
    others: (usize, usize),
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len().max(1) as f64;
    if v.len() < 2 {
        return (m, 0.0);
    }
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
    (m, var.sqrt())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn shuffled(n: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        idx.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    idx
}

/// Marks the `n_worst` classes whose shot-pool images (never the test images)
/// zero-shot ranks first least often; ties go to the earlier class.
fn worst_on_pool(
    scorer: &mut Scorer,
    store: &PromptStore,
    embeddings: &[Vec<Vec<f32>>],
    order: &[Vec<usize>],
    truth: &[usize],
    pool: usize,
    n_worst: usize,
) -> anyhow::Result<Vec<bool>> {
    let rule = clip_edge_runtime::DecisionRule { shot_weight: 0.0, ..Default::default() };
    let mut hits = Vec::with_capacity(order.len());
    for (c, idx) in order.iter().enumerate() {
        let mut h = 0;
        for &i in &idx[..pool] {
            h += usize::from(scorer.classify(&embeddings[c][i], store, 1, &rule)?.top[0].index == truth[c]);
        }
        hits.push(h);
    }
    let mut by_hits: Vec<usize> = (0..order.len()).collect();
    by_hits.sort_by_key(|&c| (hits[c], c));
    let mut worst = vec![false; order.len()];
    by_hits[..n_worst].iter().for_each(|&c| worst[c] = true);
    Ok(worst)
}

/// Runs the protocol; `truth[c]` is the store entry of class folder `c`.
pub fn run(
    a: &EvalArgs,
    clf: &mut Classifier,
    classes: &[ClassFolder],
    truth: &[usize],
    source: &str,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let max_k = *a.shots.iter().max().context("--shots is empty")?;
    let rule = a.mix.rule(0.0, -1.0);
    rule.validate().context("invalid --shot-weight or --shot-sharpness")?;
    let total: usize = classes.iter().map(|c| c.images.len()).sum();
    let progress = Progress::new("embedding", "images", total, 50, !quiet);
    let mut embeddings: Vec<Vec<Vec<f32>>> = Vec::with_capacity(classes.len());
    let mut unreadable = Vec::new();
    let mut done = 0;
    for c in classes {
        let mut v = Vec::with_capacity(c.images.len());
        for path in &c.images {
            match load_rgb(path).and_then(|f| clf.encoder.encode(&f)) {
                Ok(e) => v.push(e.as_slice().to_vec()),
                Err(err) => {
                    log::warn!("unreadable, skipped: {err}");
                    unreadable.push(path.display().to_string());
                }
            }
            done += 1;
            progress.tick(done);
        }
        if v.len() <= max_k {
            bail!(
                "{}: {} readable images, but {max_k} shots need at least {} (shots and test images are disjoint)",
                a.data.join(&c.name).display(),
                v.len(),
                max_k + 1
            );
        }
        embeddings.push(v);
    }
    let embed_s = progress.elapsed().as_secs_f64();
    let base = clf.store();
    let cap_class = (max_k as u32).max(base.header().shots_per_class);
    let cap_total = ((classes.len() * max_k + base.shots().len()) as u32).max(cap_class);
    let mut results: Vec<PerCount> = a
        .shots
        .iter()
        .map(|_| PerCount { per_class: vec![(0, 0); classes.len()], ..Default::default() })
        .collect();
    let mut scorer = Scorer::new();
    let n_worst = ((classes.len() as f64 * a.worst_fraction()).ceil() as usize).clamp(1, classes.len());
    for d in 0..a.draws {
        let mut rng = SplitMix64::new(a.seed.wrapping_add(u64::from(d)));
        let order: Vec<Vec<usize>> = embeddings.iter().map(|v| shuffled(v.len(), &mut rng)).collect();
        let worst = worst_on_pool(&mut scorer, base, &embeddings, &order, truth, max_k, n_worst)?;
        for (r, &k) in results.iter_mut().zip(&a.shots) {
            let mut b = base.to_builder().shot_caps(cap_class, cap_total)?;
            for (c, idx) in order.iter().enumerate() {
                if a.enrol_fraction < 1.0 && !worst[c] {
                    continue;
                }
                for (t, &i) in idx[..k].iter().enumerate() {
                    b.add_shot(&base.entries()[truth[c]].label, &embeddings[c][i], t as u64)?;
                }
            }
            let s = PromptStore::from_bytes(Path::new(source), &b.to_bytes()?)?;
            r.shots_stored = s.shots().len();
            let mut tally = Tally::new(classes.len());
            let t = Instant::now();
            for (c, idx) in order.iter().enumerate() {
                for &i in &idx[max_k..] {
                    let out = scorer.classify(&embeddings[c][i], &s, 5, &rule)?;
                    let ranking: Vec<usize> = out.top.iter().map(|x| x.index).collect();
                    tally.add(c, truth[c], &ranking);
                }
            }
            r.score_us.push(t.elapsed().as_secs_f64() * 1e6 / tally.n as f64);
            r.top1.push(tally.top1_rate());
            r.top5.push(tally.top5_rate());
            for (c, (acc, (n, hit))) in r.per_class.iter_mut().zip(tally.per_class).enumerate() {
                acc.0 += n;
                acc.1 += hit;
                let g = if worst[c] { &mut r.worst } else { &mut r.others };
                g.0 += n;
                g.1 += hit;
            }
        }
    }
    let rate = |(n, hit): (usize, usize)| ratio(hit, n);
    let zero = a.shots.iter().position(|&k| k == 0);
    let last = a.shots.iter().enumerate().max_by_key(|(_, k)| **k).map(|(i, _)| i).unwrap_or(0);
    let mut movers: Vec<Mover> = Vec::new();
    if let Some(z) = zero {
        movers = (0..classes.len())
            .map(|c| Mover {
                class: classes[c].name.clone(),
                zero_shot: rate(results[z].per_class[c]),
                few_shot: rate(results[last].per_class[c]),
            })
            .collect();
        // Stable sort: equal gains keep class order.
        movers.sort_by(|x, y| (y.few_shot - y.zero_shot).total_cmp(&(x.few_shot - x.zero_shot)));
    }
    let rows = a
        .shots
        .iter()
        .zip(&results)
        .map(|(&k, r)| {
            let (top1, top1_sd) = mean_sd(&r.top1);
            let (top5, top5_sd) = mean_sd(&r.top5);
            ShotRow {
                shots: k,
                top1,
                top1_sd,
                top5,
                top5_sd,
                top1_draws: r.top1.clone(),
                score_us_median: median(&mut r.score_us.clone()),
                shots_stored: r.shots_stored,
                worst_top1: rate(r.worst),
                others_top1: rate(r.others),
            }
        })
        .collect();
    let winners = movers.iter().filter(|m| m.few_shot > m.zero_shot).take(a.movers).cloned().collect();
    let losers = movers.iter().rev().filter(|m| m.few_shot < m.zero_shot).take(a.movers).cloned().collect();
    let report = ShotsReport {
        encoder: clf.encoder.path().display().to_string(),
        precision: clf.encoder.precision().as_str(),
        data: a.data.display().to_string(),
        candidates: base.len(),
        candidates_from: source.to_string(),
        classes: classes.len(),
        draws: a.draws,
        seed: a.seed,
        test_images_per_draw: embeddings.iter().map(|v| v.len() - max_k).sum(),
        worst_fraction: a.worst_fraction(),
        worst_classes: n_worst,
        enrol_fraction: a.enrol_fraction,
        shot_weight: rule.shot_weight,
        shot_sharpness: rule.shot_sharpness,
        unreadable: unreadable.len(),
        unreadable_files: unreadable,
        embed_seconds: embed_s,
        results: rows,
        compared_shots: zero.map(|_| a.shots[last]),
        classes_better: movers.iter().filter(|m| m.few_shot > m.zero_shot).count(),
        classes_worse: movers.iter().filter(|m| m.few_shot < m.zero_shot).count(),
        winners,
        losers,
    };
    Format::from_flag(a.json).print(&report)?;
    Ok(ExitCode::SUCCESS)
}

/// Accuracy with one shot count, over all draws.
#[derive(Debug, Serialize)]
pub struct ShotRow {
    shots: usize,
    top1: f64,
    top1_sd: f64,
    top5: f64,
    top5_sd: f64,
    top1_draws: Vec<f64>,
    score_us_median: f64,
    shots_stored: usize,
    worst_top1: f64,
    others_top1: f64,
}

/// A class's top-1 without shots and with the most shots.
#[derive(Debug, Clone, Serialize)]
pub struct Mover {
    class: String,
    zero_shot: f64,
    few_shot: f64,
}

/// The report of `clip-edge eval --shots`.
#[derive(Debug, Serialize)]
pub struct ShotsReport {
    encoder: String,
    precision: &'static str,
    data: String,
    candidates: usize,
    candidates_from: String,
    classes: usize,
    draws: u32,
    seed: u64,
    test_images_per_draw: usize,
    worst_fraction: f64,
    worst_classes: usize,
    enrol_fraction: f64,
    shot_weight: f32,
    shot_sharpness: f32,
    unreadable: usize,
    unreadable_files: Vec<String>,
    embed_seconds: f64,
    results: Vec<ShotRow>,
    /// The shot count compared with zero shots in the movers (none without 0 in `--shots`).
    compared_shots: Option<usize>,
    classes_better: usize,
    classes_worse: usize,
    winners: Vec<Mover>,
    losers: Vec<Mover>,
}

impl Display for ShotsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} classes in {}, {} candidates from {}; {} draws, {} test images per draw; shot weight {}, sharpness {}",
            self.classes,
            self.data,
            self.candidates,
            self.candidates_from,
            self.draws,
            self.test_images_per_draw,
            self.shot_weight,
            self.shot_sharpness
        )?;
        let n_worst = self.worst_classes;
        if self.enrol_fraction < 1.0 {
            writeln!(
                f,
                "shots only for the {n_worst} classes (fraction {}) zero-shot handles worst on their shot pool",
                self.enrol_fraction
            )?;
        }
        writeln!(f, "worst: the {n_worst} classes zero-shot handles worst on their shot pool, per draw; others: the rest")?;
        writeln!(f, "shots  top-1 (mean ± sd)   top-5 (mean ± sd)      worst  others  score µs/frame")?;
        for r in &self.results {
            writeln!(
                f,
                "{:>5}  {:>6.1} ± {:<4.1}       {:>6.1} ± {:<4.1}       {:>6.1}     {:>6.1}  {:>8.1}",
                r.shots,
                100.0 * r.top1,
                100.0 * r.top1_sd,
                100.0 * r.top5,
                100.0 * r.top5_sd,
                100.0 * r.worst_top1,
                100.0 * r.others_top1,
                r.score_us_median
            )?;
        }
        if let Some(k) = self.compared_shots {
            writeln!(
                f,
                "{} classes better, {} worse with {k} shots than with none",
                self.classes_better, self.classes_worse
            )?;
            for (title, list) in [("winners", &self.winners), ("losers", &self.losers)] {
                writeln!(f, "{title}:")?;
                for m in list {
                    writeln!(
                        f,
                        "  {:<40} {:>5.1}% -> {:>5.1}%",
                        m.class,
                        m.zero_shot * 100.0,
                        m.few_shot * 100.0
                    )?;
                }
            }
        }
        if self.unreadable > 0 {
            writeln!(f, "{} unreadable images skipped", self.unreadable)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffles_are_permutations_and_reproducible() {
        let a = shuffled(10, &mut SplitMix64::new(3));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_eq!(a, shuffled(10, &mut SplitMix64::new(3)));
        assert_ne!(a, shuffled(10, &mut SplitMix64::new(4)));
    }

    #[test]
    fn spread_and_median() {
        let (m, sd) = mean_sd(&[0.5, 0.7]);
        assert!((m - 0.6).abs() < 1e-12 && (sd - 0.141_421_356).abs() < 1e-6);
        assert_eq!(mean_sd(&[0.3]), (0.3, 0.0));
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
    }
}
