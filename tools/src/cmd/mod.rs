//! One module per `clip-edge` command: each builds one typed report and
//! prints it as text or JSON (`clip_edge_tools::report::Format`).

pub mod bench;
pub mod bundle;
pub mod classify;
pub mod embed;
pub mod eval;
pub mod fewshot;
pub mod fleet;
pub mod prompts;
pub mod shots_eval;

use anyhow::Context;
use clip_edge_runtime::store::EntryKind;
use clip_edge_runtime::Bundle;
use std::path::Path;

/// Loads a bundle manifest with the folder named in the error.
pub fn load_bundle(dir: &Path) -> anyhow::Result<Bundle> {
    Bundle::load(dir).with_context(|| format!("cannot use bundle {}", dir.display()))
}

/// The kind of a store entry as reports name it.
pub fn kind_str(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Class => "class",
        EntryKind::Background => "background",
    }
}
