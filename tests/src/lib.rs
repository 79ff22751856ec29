//! Shared helpers for clip-edge's integration tests: fixture paths, the
//! reference outputs written by `tools/python/make_fixture.py`, and vector maths.

use std::path::PathBuf;

use serde::Deserialize;

/// `tests/data`.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The emoji bundle's sample frames (`models/emoji/samples`), in name order.
pub fn emoji_samples() -> Vec<PathBuf> {
    let mut samples: Vec<_> = std::fs::read_dir(repo_root().join("models/emoji/samples"))
        .expect("models/emoji/samples")
        .map(|e| e.expect("entry").path())
        .collect();
    samples.sort();
    assert!(samples.len() >= 16, "the emoji bundle ships at least 16 samples");
    samples
}

/// The reduced ViT fixture bundle.
pub fn fixture_bundle() -> PathBuf {
    data_dir().join("vit_tiny")
}

/// One image of the reference file.
#[derive(Debug, Clone, Deserialize)]
pub struct RefImage {
    /// Image path relative to `tests/data`.
    pub file: String,
    /// Pillow's resize + centre crop of the image, relative to `tests/data`.
    pub expected_crop: String,
    /// PIL mode of the source image (RGB, RGBA, L).
    pub mode: String,
    /// sha256 of open_clip's normalised float32 input tensor.
    pub tensor_sha256: String,
    /// ONNX Runtime's raw (unnormalised) output.
    pub onnxruntime: Vec<f32>,
    /// PyTorch's raw output.
    pub torch: Vec<f32>,
}

/// The reference file of the fixture bundle.
#[derive(Debug, Clone, Deserialize)]
pub struct Reference {
    /// Per-image references.
    pub images: Vec<RefImage>,
}

/// Reads `tests/data/vit_tiny/reference.json`.
pub fn reference() -> Reference {
    let path = fixture_bundle().join("reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `v / |v|`.
pub fn normalise(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// Cosine similarity of two vectors (any length scale).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (a, b) = (normalise(a), normalise(b));
    a.iter().zip(&b).map(|(x, y)| x * y).sum()
}

/// Largest absolute element-wise difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length");
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// Copies the fixture bundle into a fresh temporary folder, for tests that damage it.
pub fn scratch_bundle() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["bundle.toml", "image_encoder_f32.onnx"] {
        std::fs::copy(fixture_bundle().join(name), dir.path().join(name)).expect("copy fixture");
    }
    dir
}

/// Rewrites the sha256 of `image_encoder_f32.onnx` in a scratch bundle's manifest
/// to match the file on disk, so a test can feed damaged bytes past the checksum.
pub fn reseal_manifest(dir: &std::path::Path) {
    let bytes = std::fs::read(dir.join("image_encoder_f32.onnx")).expect("onnx");
    let digest = clip_edge_runtime::bundle::sha256_hex(&bytes);
    let manifest = std::fs::read_to_string(dir.join("bundle.toml")).expect("manifest");
    let resealed: String = manifest
        .lines()
        .map(|l| if l.starts_with("sha256 = ") { format!("sha256 = \"{digest}\"") } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join("bundle.toml"), resealed).expect("write manifest");
}

/// One prompt of the fixture reference: open_clip's tokens and both engines' outputs.
#[derive(Debug, Clone, Deserialize)]
pub struct RefPrompt {
    /// The prompt.
    pub text: String,
    /// open_clip's token ids, padded to 77.
    pub tokens: Vec<i64>,
    /// ONNX Runtime's raw output.
    pub onnxruntime: Vec<f32>,
    /// PyTorch's raw output.
    pub torch: Vec<f32>,
}

/// The prompts of `tests/data/vit_tiny/reference.json`.
pub fn reference_prompts() -> Vec<RefPrompt> {
    #[derive(Deserialize)]
    struct P {
        prompts: Vec<RefPrompt>,
    }
    let path = fixture_bundle().join("reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str::<P>(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())).prompts
}
