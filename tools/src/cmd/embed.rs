//! `clip-edge embed`: print image (or text) embeddings, to compare engines and exports.

use std::fmt::Display;
use std::process::ExitCode;

use anyhow::Context;
use clip_edge_runtime::frame::load_rgb;
use clip_edge_runtime::ImageEncoder;
use clip_edge_tools::report::Format;
use clip_edge_tools::text::TextEncoder;
use serde::Serialize;

use super::load_bundle;
use crate::cli::EmbedArgs;

/// The first values of an embedding, for a person to eyeball.
fn head(v: &[f32]) -> String {
    let head: Vec<String> = v.iter().take(6).map(|v| format!("{v:+.4}")).collect();
    head.join(", ")
}

/// The embedding of one text.
#[derive(Debug, Serialize)]
pub struct TextReport<'a> {
    text: &'a str,
    tokens: &'a [i64],
    truncated: bool,
    dim: usize,
    embedding: &'a [f32],
}

impl Display for TextReport<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:?}: {} tokens, dim {} [{} ...]",
            self.text,
            self.tokens.len(),
            self.dim,
            head(self.embedding)
        )
    }
}

/// The embedding of one image.
#[derive(Debug, Serialize)]
pub struct ImageReport<'a> {
    image: String,
    precision: &'static str,
    dim: usize,
    embedding: &'a [f32],
}

impl Display for ImageReport<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}: dim {} [{} ...]", self.image, self.dim, head(self.embedding))
    }
}

/// An image that could not be embedded.
#[derive(Debug, Serialize)]
struct ImageError {
    image: String,
    error: String,
}

fn run_text(bundle: &clip_edge_runtime::Bundle, a: &EmbedArgs) -> anyhow::Result<ExitCode> {
    let mut enc = TextEncoder::load(bundle)?;
    for text in &a.text {
        let (e, tokens) = enc.embed(text)?;
        let report = TextReport {
            text,
            tokens: &tokens.ids[..tokens.len],
            truncated: tokens.truncated,
            dim: e.dim(),
            embedding: e.as_slice(),
        };
        Format::from_flag(a.json).print(&report)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `embed`; unreadable images are reported and make the exit code non-zero.
pub fn run(a: &EmbedArgs) -> anyhow::Result<ExitCode> {
    let bundle = load_bundle(&a.model.bundle)?;
    if !a.text.is_empty() {
        return run_text(&bundle, a);
    }
    let mut encoder = ImageEncoder::load(&bundle, a.model.precision)
        .with_context(|| format!("cannot load model of bundle {}", bundle.dir.display()))?;
    encoder.set_threads(usize::from(a.model.threads)).context("--threads")?;
    let mut failed = 0usize;
    for path in &a.images {
        match load_rgb(path).and_then(|f| encoder.encode(&f)) {
            Ok(e) => {
                let report = ImageReport {
                    image: path.display().to_string(),
                    precision: encoder.precision().as_str(),
                    dim: e.dim(),
                    embedding: e.as_slice(),
                };
                Format::from_flag(a.json).print(&report)?;
            }
            Err(err) => {
                failed += 1;
                if a.json {
                    let e = ImageError { image: path.display().to_string(), error: err.to_string() };
                    clip_edge_runtime::process::print_line(&serde_json::to_string(&e)?)?;
                }
                eprintln!("error: {err}");
            }
        }
    }
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
