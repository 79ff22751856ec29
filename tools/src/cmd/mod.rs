//! One module per `clip-edge` command.

pub mod bench;
pub mod bundle;
pub mod classify;
pub mod embed;
pub mod eval;
pub mod fewshot;
pub mod prompts;
pub mod shots_eval;

use anyhow::Context;
use clip_edge_runtime::Bundle;
use std::path::Path;

/// Loads a bundle manifest with the folder named in the error.
pub fn load_bundle(dir: &Path) -> anyhow::Result<Bundle> {
    Bundle::load(dir).with_context(|| format!("cannot use bundle {}", dir.display()))
}

/// Milliseconds rounded to 3 decimals, for JSON output.
pub fn round_ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
