//! Device side of clip-edge. For now: the start-up self-check the daemon
//! runs before it arms its trigger. Hardware backends (GPIO, V4L2) land here
//! behind embedded-hal style traits; this is the only crate that may know them.

use std::path::Path;
use std::time::{Duration, Instant};

use clip_edge_runtime::{Bundle, Classifier, DecisionRule, Precision, Result};

/// What the self-check found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SelfCheck {
    /// Bundle name.
    pub model: String,
    /// Encoder precision loaded.
    pub precision: String,
    /// Prompt store file.
    pub prompts: String,
    /// Number of entries in the store.
    pub entries: usize,
    /// Time to read, parse and optimise the model, in ms.
    pub load_ms: f64,
    /// Time of one inference on a grey frame, in ms.
    pub first_frame_ms: f64,
}

/// Loads the bundle, opens the store (checking it fits the model) and runs one
/// frame through the whole pipeline, as the daemon does before arming.
pub fn self_check(
    bundle_dir: &Path,
    precision: Option<Precision>,
    prompts: Option<&Path>,
) -> Result<SelfCheck> {
    let bundle = Bundle::load(bundle_dir)?;
    let mut clf = Classifier::load(&bundle, precision, prompts)?;
    let size = bundle.preprocess.size;
    let frame = image::RgbImage::from_pixel(size, size, image::Rgb([128, 128, 128]));
    let t0 = Instant::now();
    let emb = clf.encoder.encode(&frame)?;
    clf.score(&emb, 1, &DecisionRule::default())?;
    Ok(SelfCheck {
        model: bundle.name.clone(),
        precision: clf.encoder.precision().to_string(),
        prompts: clf.store.path().display().to_string(),
        entries: clf.store.len(),
        load_ms: ms(clf.encoder.load_timing().total()),
        first_frame_ms: ms(t0.elapsed()),
    })
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 1e2
}
