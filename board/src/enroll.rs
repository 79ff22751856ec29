//! Few-shot enrolment from the device's own camera: capture a handful of
//! frames, embed them, and add them as shots of a class to the prompt store in
//! one locked, atomic write. Used by `clip-edge-board enroll` and by the
//! daemon's enrolment button; nothing is written unless every frame made it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clip_edge_runtime::store::{self, Enrolled};
use clip_edge_runtime::{Bundle, Embedding, ImageEncoder};

use crate::camera::{self, CameraError, Frame};
use crate::config::Config;

/// Why an enrolment stopped. In every case the store on flash is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The camera failed before all frames were captured.
    #[error(
        "enrolment of '{class}' stopped after {captured} of {wanted} frames; nothing was stored: {source}"
    )]
    Camera {
        /// The class being enrolled.
        class: String,
        /// Frames captured before the failure.
        captured: u32,
        /// Frames asked for.
        wanted: u32,
        /// The camera's error.
        #[source]
        source: CameraError,
    },
    /// The bundle, the model or a frame's inference failed.
    #[error("enrolment of '{class}': nothing was stored: {source}")]
    Model {
        /// The class being enrolled.
        class: String,
        /// The runtime's error.
        #[source]
        source: clip_edge_runtime::Error,
    },
    /// The store could not take the shots (another model's store, a background
    /// label, the store's cap, a corrupt file, a failed write).
    #[error("enrolment of '{class}': nothing was stored: {source}")]
    Store {
        /// The class being enrolled.
        class: String,
        /// The runtime's error.
        #[source]
        source: clip_edge_runtime::Error,
    },
}

/// Longest wait between two `keepalive` calls while waiting between frames.
const KEEPALIVE_SLICE: Duration = Duration::from_millis(50);

/// Captures up to `frames` frames, `interval` apart, while `held()` stays
/// true (it is asked before every frame after the first), and embeds them.
/// `keepalive()` is called before every frame and at least every 50 ms of the
/// waits between them (the daemon pings systemd's watchdog there), so no
/// step blocks longer than one capture (at most `camera.timeout_ms`) or one
/// inference.
pub fn capture(
    class: &str,
    grab: &mut dyn FnMut() -> Result<Frame, CameraError>,
    encoder: &mut ImageEncoder,
    frames: u32,
    interval: Duration,
    held: &mut dyn FnMut() -> bool,
    keepalive: &mut dyn FnMut(),
) -> Result<Vec<Embedding>, EnrollError> {
    let mut out = Vec::with_capacity(frames as usize);
    for i in 0..frames {
        if i > 0 {
            if !held() {
                break;
            }
            let until = std::time::Instant::now() + interval;
            loop {
                keepalive();
                let left = until.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                std::thread::sleep(left.min(KEEPALIVE_SLICE));
            }
        }
        keepalive();
        let frame = grab().map_err(|source| EnrollError::Camera {
            class: class.into(),
            captured: i,
            wanted: frames,
            source,
        })?;
        let e = encoder
            .encode(&frame.image)
            .map_err(|source| EnrollError::Model { class: class.into(), source })?;
        log::info!("enrolment of '{class}': frame {} of at most {frames} ({})", i + 1, frame.source);
        out.push(e);
    }
    Ok(out)
}

/// Adds `shots` to the store at `path` (see [`store::enroll`]).
pub fn save(path: &Path, bundle: &Bundle, class: &str, shots: &[Embedding]) -> Result<Enrolled, EnrollError> {
    let rows: Vec<&[f32]> = shots.iter().map(|e| e.as_slice()).collect();
    store::enroll(path, &bundle.fingerprint, bundle.embed_dim, class, &rows, store::unix_ms())
        .map_err(|source| EnrollError::Store { class: class.into(), source })
}

/// The prompt store a configuration uses: its own, or the bundle's default.
pub fn store_path(config: &Config, bundle: &Bundle) -> Result<PathBuf, clip_edge_runtime::Error> {
    config.prompts.clone().or_else(|| bundle.prompts.clone()).ok_or_else(|| {
        clip_edge_runtime::Error::Usage(format!(
            "{}: neither model.prompts nor the bundle's manifest names a prompt store",
            config.path.display()
        ))
    })
}

/// `clip-edge-board enroll`: opens the configured camera (no retries: a
/// failure aborts), captures `frames` frames `interval` apart, and stores them.
pub fn run_once(
    config: &Config,
    class: &str,
    frames: u32,
    interval: Duration,
) -> Result<Enrolled, EnrollError> {
    let model = |source| EnrollError::Model { class: class.into(), source };
    let bundle = Bundle::load(&config.bundle).map_err(model)?;
    let path = store_path(config, &bundle).map_err(model)?;
    // Fail on a wrong or read-only store before spending time on the camera.
    clip_edge_runtime::PromptStore::open(&path)
        .and_then(|s| s.check_model(&bundle.fingerprint, bundle.embed_dim))
        .and_then(|()| clip_edge_runtime::store::check_editable(&path))
        .map_err(|source| EnrollError::Store { class: class.into(), source })?;
    let mut encoder = ImageEncoder::load(&bundle, config.precision).map_err(model)?;
    encoder.set_threads(config.threads).map_err(model)?;
    let mut cam = camera::open(&config.camera, 2 * bundle.preprocess.size)
        .map_err(|source| EnrollError::Camera { class: class.into(), captured: 0, wanted: frames, source })?;
    let shots =
        capture(class, &mut || cam.capture(), &mut encoder, frames, interval, &mut || true, &mut || {})?;
    save(&path, &bundle, class, &shots)
}
