//! `clip-edge eval --shots 0,1,2,4,8`: the few-shot protocol. Every image is
//! embedded once through tract; then, per random draw, each class folder is
//! shuffled, its first max(LIST) images form the shot pool and the rest are
//! the test images (the same test images for every shot count), and the test
//! images are scored against the candidate store with K shots per class added.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clip_edge_runtime::frame::load_rgb;
use clip_edge_runtime::store::PromptStore;
use clip_edge_runtime::{Classifier, Scorer};
use serde_json::json;

use super::eval::{ClassFolder, Tally};
use crate::cli::EvalArgs;
use crate::rng::SplitMix64;

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
    let t0 = Instant::now();
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
            if !quiet && total >= 50 && (done % (total / 10).max(1) == 0 || done == total) {
                eprintln!("embedding: {done}/{total} images, {:.1} s", t0.elapsed().as_secs_f64());
            }
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
    let embed_s = t0.elapsed().as_secs_f64();
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
    let rate = |(n, hit): (usize, usize)| if n == 0 { 0.0 } else { hit as f64 / n as f64 };
    let zero = a.shots.iter().position(|&k| k == 0);
    let last = a.shots.iter().enumerate().max_by_key(|(_, k)| **k).map(|(i, _)| i).unwrap_or(0);
    let mut movers: Vec<(usize, f64, f64)> = Vec::new();
    if let Some(z) = zero {
        movers = (0..classes.len())
            .map(|c| (c, rate(results[z].per_class[c]), rate(results[last].per_class[c])))
            .collect();
        movers.sort_by(|x, y| (y.2 - y.1).total_cmp(&(x.2 - x.1)).then(x.0.cmp(&y.0)));
    }
    let rows: Vec<_> = a
        .shots
        .iter()
        .zip(&results)
        .map(|(&k, r)| {
            let (t1, t1_sd) = mean_sd(&r.top1);
            let (t5, t5_sd) = mean_sd(&r.top5);
            let mut us = r.score_us.clone();
            json!({
                "shots": k, "top1": t1, "top1_sd": t1_sd, "top5": t5, "top5_sd": t5_sd,
                "top1_draws": r.top1, "score_us_median": median(&mut us), "shots_stored": r.shots_stored,
                "worst_top1": rate(r.worst), "others_top1": rate(r.others),
            })
        })
        .collect();
    let n_movers = a.movers;
    let mover =
        |&(c, z, k): &(usize, f64, f64)| json!({"class": classes[c].name, "zero_shot": z, "few_shot": k});
    let winners: Vec<_> = movers.iter().filter(|m| m.2 > m.1).take(n_movers).map(mover).collect();
    let losers: Vec<_> = movers.iter().rev().filter(|m| m.2 < m.1).take(n_movers).map(mover).collect();
    let (better, worse) =
        movers.iter().fold((0, 0), |(b, w), &(_, z, k)| (b + usize::from(k > z), w + usize::from(k < z)));
    let test_per_draw = embeddings.iter().map(|v| v.len() - max_k).sum::<usize>();
    if a.json {
        let out = json!({
            "encoder": clf.encoder.path().display().to_string(),
            "precision": clf.encoder.precision().as_str(),
            "data": a.data.display().to_string(),
            "candidates": base.len(),
            "candidates_from": source,
            "classes": classes.len(),
            "draws": a.draws,
            "seed": a.seed,
            "test_images_per_draw": test_per_draw,
            "worst_fraction": a.worst_fraction(),
            "enrol_fraction": a.enrol_fraction,
            "shot_weight": rule.shot_weight,
            "shot_sharpness": rule.shot_sharpness,
            "unreadable": unreadable.len(),
            "unreadable_files": unreadable,
            "embed_seconds": embed_s,
            "results": rows,
            "classes_better": better,
            "classes_worse": worse,
            "winners": winners,
            "losers": losers,
        });
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} classes in {}, {} candidates from {source}; {} draws, {test_per_draw} test images per draw; \
         shot weight {}, sharpness {}",
        classes.len(),
        a.data.display(),
        base.len(),
        a.draws,
        rule.shot_weight,
        rule.shot_sharpness
    );
    if a.enrol_fraction < 1.0 {
        println!(
            "shots only for the {n_worst} classes (fraction {}) zero-shot handles worst on their shot pool",
            a.enrol_fraction
        );
    }
    println!(
        "worst: the {n_worst} classes zero-shot handles worst on their shot pool, per draw; others: the rest"
    );
    println!("shots  top-1 (mean ± sd)   top-5 (mean ± sd)      worst  others  score µs/frame");
    for (k, r) in a.shots.iter().zip(&rows) {
        let f = |key: &str| r[key].as_f64().unwrap_or(0.0) * 100.0;
        println!(
            "{k:>5}  {:>6.1} ± {:<4.1}       {:>6.1} ± {:<4.1}       {:>6.1}     {:>6.1}  {:>8.1}",
            f("top1"),
            f("top1_sd"),
            f("top5"),
            f("top5_sd"),
            f("worst_top1"),
            f("others_top1"),
            r["score_us_median"].as_f64().unwrap_or(0.0)
        );
    }
    if zero.is_some() {
        println!("{better} classes better, {worse} worse with {} shots than with none", a.shots[last]);
        for (title, list) in [("winners", &winners), ("losers", &losers)] {
            println!("{title}:");
            for m in list.iter() {
                println!(
                    "  {:<40} {:>5.1}% -> {:>5.1}%",
                    m["class"].as_str().unwrap_or_default(),
                    m["zero_shot"].as_f64().unwrap_or(0.0) * 100.0,
                    m["few_shot"].as_f64().unwrap_or(0.0) * 100.0
                );
            }
        }
    }
    if !unreadable.is_empty() {
        println!("{} unreadable images skipped", unreadable.len());
    }
    Ok(ExitCode::SUCCESS)
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
