//! `clip-edge classify`: images in, labels out (one report per image).

use std::fmt::Display;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clip_edge_runtime::frame::load_rgb;
use clip_edge_runtime::store::EntryKind;
use clip_edge_runtime::{Classification, Classifier, Decision};
use clip_edge_tools::report::{ms, Format};
use serde::Serialize;

use super::load_bundle;
use crate::cli::ClassifyArgs;

/// One candidate of an image's top-k.
#[derive(Debug, Serialize)]
pub struct Ranked {
    label: String,
    kind: EntryKind,
    score: f32,
    similarity: f32,
}

/// Where one image's time went, in ms.
#[derive(Debug, Serialize)]
pub struct Timing {
    decode: f64,
    preprocess: f64,
    infer: f64,
    score: f64,
}

/// The report for one classified image.
#[derive(Debug, Serialize)]
pub struct ImageReport {
    image: String,
    decision: &'static str,
    label: Option<String>,
    score: f32,
    similarity: f32,
    top: Vec<Ranked>,
    latency_ms: f64,
    timing_ms: Timing,
}

/// The report for an image that could not be classified.
#[derive(Debug, Serialize)]
pub struct ImageError {
    image: String,
    error: String,
    kind: String,
}

impl ImageReport {
    fn new(clf: &Classifier, image: String, c: &Classification, latency_ms: f64, timing_ms: Timing) -> Self {
        let top = c
            .top
            .iter()
            .map(|r| Ranked {
                label: clf.label(r.index).to_string(),
                kind: clf.store().entries()[r.index].kind,
                score: r.score,
                similarity: r.similarity,
            })
            .collect();
        let label = match c.decision {
            Decision::Match(i) => Some(clf.label(i).to_string()),
            _ => None,
        };
        ImageReport {
            image,
            decision: c.decision.as_str(),
            label,
            score: c.top[0].score,
            similarity: c.top[0].similarity,
            top,
            latency_ms,
            timing_ms,
        }
    }
}

impl Display for ImageReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let best = &self.top[0];
        let verdict = match (self.decision, &self.label) {
            (_, Some(label)) => format!("{label} ({:.1}%)", best.score * 100.0),
            ("background", None) => format!("nothing of interest (background '{}')", best.label),
            _ => format!(
                "unknown (best '{}' at {:.1}% is below the threshold)",
                best.label,
                best.score * 100.0
            ),
        };
        writeln!(f, "{}: {verdict}  [{:.1} ms]", self.image, self.latency_ms)?;
        let width = self.top.iter().map(|r| r.label.len()).max().unwrap_or(0);
        for (rank, r) in self.top.iter().enumerate() {
            let tag = if r.kind == EntryKind::Background { " (background)" } else { "" };
            writeln!(
                f,
                "  {}. {:<width$}  {:6.2}%  cos {:+.3}{tag}",
                rank + 1,
                r.label,
                r.score * 100.0,
                r.similarity
            )?;
        }
        Ok(())
    }
}

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
    let format = Format::from_flag(a.json);
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
                let timing = Timing {
                    decode: ms(decode),
                    preprocess: ms(timing.preprocess),
                    infer: ms(timing.infer),
                    score: ms(score),
                };
                format.print(&ImageReport::new(&clf, path.display().to_string(), &c, ms(total), timing))?;
            }
            Err(err) => {
                failed += 1;
                if a.json {
                    let kind = format!("{:?}", err.kind()).to_lowercase();
                    let e = ImageError { image: path.display().to_string(), error: err.to_string(), kind };
                    clip_edge_runtime::process::print_line(&serde_json::to_string(&e)?)?;
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
