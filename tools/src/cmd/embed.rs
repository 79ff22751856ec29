//! `clip-edge embed`: print image embeddings, to compare engines and exports.

use std::process::ExitCode;

use anyhow::Context;
use clip_edge_runtime::frame::load_rgb;
use clip_edge_runtime::ImageEncoder;
use serde_json::json;

use super::load_bundle;
use crate::cli::EmbedArgs;
use crate::text::TextEncoder;

fn run_text(bundle: &clip_edge_runtime::Bundle, a: &EmbedArgs) -> anyhow::Result<ExitCode> {
    let mut enc = TextEncoder::load(bundle)?;
    for text in &a.text {
        let (e, tokens) = enc.embed(text)?;
        if a.json {
            let line = json!({"text": text, "tokens": &tokens.ids[..tokens.len], "truncated": tokens.truncated, "dim": e.dim(), "embedding": e.as_slice()});
            println!("{line}");
        } else {
            let head: Vec<String> = e.as_slice().iter().take(6).map(|v| format!("{v:+.4}")).collect();
            println!("{text:?}: {} tokens, dim {} [{} ...]", tokens.len, e.dim(), head.join(", "));
        }
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
                if a.json {
                    let line = json!({
                        "image": path.display().to_string(),
                        "precision": encoder.precision().as_str(),
                        "dim": e.dim(),
                        "embedding": e.as_slice(),
                    });
                    println!("{line}");
                } else {
                    let head: Vec<String> = e.as_slice().iter().take(6).map(|v| format!("{v:+.4}")).collect();
                    println!("{}: dim {} [{} ...]", path.display(), e.dim(), head.join(", "));
                }
            }
            Err(err) => {
                failed += 1;
                if a.json {
                    println!("{}", json!({"image": path.display().to_string(), "error": err.to_string()}));
                }
                eprintln!("error: {err}");
            }
        }
    }
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
