//! `clip-edge classify`: images in, labels out.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clip_edge_runtime::frame::load_rgb;
use clip_edge_runtime::store::EntryKind;
use clip_edge_runtime::{Classification, Classifier, Decision};
use serde_json::json;

use super::{load_bundle, round_ms};
use crate::cli::ClassifyArgs;

/// Runs `classify`. Images that cannot be read are reported and skipped; the
/// exit code is non-zero if any image failed.
pub fn run(a: &ClassifyArgs) -> anyhow::Result<ExitCode> {
    let rule = a.shots.rule(a.min_score, a.min_similarity);
    rule.validate().context("invalid threshold")?;
    let bundle = load_bundle(&a.model.bundle)?;
    let mut clf = Classifier::load(&bundle, a.model.precision, a.prompts.as_deref())
        .with_context(|| format!("cannot load model of bundle {}", bundle.dir.display()))?;
    clf.encoder.set_threads(usize::from(a.model.threads)).context("--threads")?;
    let lt = clf.encoder.load_timing();
    log::info!(
        "model {} ({}) ready in {:.1} ms; {} prompts from {}",
        bundle.name,
        clf.encoder.precision(),
        lt.total().as_secs_f64() * 1e3,
        clf.store().len(),
        clf.store().path().display()
    );

    let mut failed = 0usize;
    for path in &a.images {
        let t0 = Instant::now();
        let result = load_rgb(path).and_then(|frame| {
            let decode = t0.elapsed();
            let (emb, timing) = clf.encoder.encode_timed(&frame)?;
            let t1 = Instant::now();
            let c = clf.score(&emb, a.top as usize, &rule)?;
            Ok((c, decode, timing, t1.elapsed()))
        });
        let total = t0.elapsed();
        match result {
            Ok((c, decode, timing, score)) => {
                if a.json {
                    let line = json!({
                        "image": path.display().to_string(),
                        "decision": c.decision.as_str(),
                        "label": match_label(&clf, &c),
                        "score": c.top[0].score,
                        "similarity": c.top[0].similarity,
                        "top": top_json(&clf, &c),
                        "latency_ms": round_ms(total),
                        "timing_ms": {
                            "decode": round_ms(decode),
                            "preprocess": round_ms(timing.preprocess),
                            "infer": round_ms(timing.infer),
                            "score": round_ms(score),
                        },
                    });
                    println!("{line}");
                } else {
                    print_human(&clf, path, &c, total);
                }
            }
            Err(err) => {
                failed += 1;
                if a.json {
                    let kind = format!("{:?}", err.kind()).to_lowercase();
                    println!(
                        "{}",
                        json!({"image": path.display().to_string(), "error": err.to_string(), "kind": kind})
                    );
                }
                eprintln!("error: {err}");
            }
        }
    }
    if failed > 0 {
        eprintln!("error: {failed} of {} image(s) could not be classified", a.images.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn match_label<'a>(clf: &'a Classifier, c: &Classification) -> Option<&'a str> {
    match c.decision {
        Decision::Match(i) => Some(clf.label(i)),
        _ => None,
    }
}

fn top_json(clf: &Classifier, c: &Classification) -> Vec<serde_json::Value> {
    c.top
        .iter()
        .map(|r| {
            json!({
                "label": clf.label(r.index),
                "kind": kind_str(clf.store().entries()[r.index].kind),
                "score": r.score,
                "similarity": r.similarity,
            })
        })
        .collect()
}

fn kind_str(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Class => "class",
        EntryKind::Background => "background",
    }
}

fn print_human(clf: &Classifier, path: &std::path::Path, c: &Classification, total: std::time::Duration) {
    let best = c.top[0];
    let verdict = match c.decision {
        Decision::Match(i) => format!("{} ({:.1}%)", clf.label(i), best.score * 100.0),
        Decision::Background(i) => format!("nothing of interest (background '{}')", clf.label(i)),
        Decision::Unknown => format!(
            "unknown (best '{}' at {:.1}% is below the threshold)",
            clf.label(best.index),
            best.score * 100.0
        ),
    };
    println!("{}: {verdict}  [{:.1} ms]", path.display(), total.as_secs_f64() * 1e3);
    let width = c.top.iter().map(|r| clf.label(r.index).len()).max().unwrap_or(0);
    for (rank, r) in c.top.iter().enumerate() {
        let kind = clf.store().entries()[r.index].kind;
        let tag = if kind == EntryKind::Background { " (background)" } else { "" };
        println!(
            "  {}. {:<width$}  {:6.2}%  cos {:+.3}{tag}",
            rank + 1,
            clf.label(r.index),
            r.score * 100.0,
            r.similarity
        );
    }
}
