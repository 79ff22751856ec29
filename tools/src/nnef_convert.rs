//! `clip-edge bundle nnef`: adds tract's NNEF form of a bundle's image
//! encoders, so that a device skips ONNX parsing and decluttering at start-up.
//!
//! Each ONNX encoder is typed and decluttered as the runtime would, written as
//! an uncompressed NNEF tar next to it, loaded back both ways and compared on
//! probe frames; only a copy that gives the same embeddings is recorded in
//! `bundle.toml` (`nnef`, `nnef_sha256`, `nnef_source_sha256`). A form whose
//! NNEF would be much larger than its ONNX file (int8 or f16 weights that the
//! runtime widens to f32 at load) is skipped with the sizes as the reason.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clip_edge_runtime::bundle::{sha256_hex, EncoderFile, NnefFile, MANIFEST_FILE};
use clip_edge_runtime::encoder::typed_onnx;
use clip_edge_runtime::store::write_atomic;
use clip_edge_runtime::{Bundle, ImageEncoder, LoadTiming, Precision};
use image::RgbImage;

use crate::rng::SplitMix64;

/// Lowest cosine between ONNX and NNEF embeddings of a probe frame that is accepted.
pub const MIN_COSINE: f32 = 0.9999;

/// What happened to one encoder.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The NNEF copy was written, verified and recorded.
    Converted(Converted),
    /// No NNEF copy was made; the reason says why.
    Skipped {
        /// The encoder's precision.
        precision: Precision,
        /// Why.
        reason: String,
    },
}

/// A verified NNEF copy of one encoder.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The encoder's precision.
    pub precision: Precision,
    /// The NNEF archive written, with its checksum and the ONNX file's.
    pub nnef: NnefFile,
    /// Size of the ONNX file.
    pub onnx_bytes: usize,
    /// Size of the NNEF archive.
    pub nnef_bytes: usize,
    /// Cold start from the ONNX file (read, parse, optimise).
    pub onnx_load: LoadTiming,
    /// Cold start from the NNEF archive.
    pub nnef_load: LoadTiming,
    /// Lowest cosine between the two on the probe frames.
    pub min_cosine: f32,
    /// Largest absolute difference between the two embeddings.
    pub max_abs: f32,
}

/// Converts the encoders of the bundle in `dir` (all of them when `precisions`
/// is empty). A copy is skipped when it would be more than `max_growth` times
/// the ONNX file's size. The manifest is rewritten atomically once, at the end.
pub fn convert_bundle(dir: &Path, precisions: &[Precision], max_growth: f64) -> anyhow::Result<Vec<Outcome>> {
    let bundle = Bundle::load(dir).with_context(|| format!("cannot use bundle {}", dir.display()))?;
    let manifest = bundle.dir.join(MANIFEST_FILE);
    let text =
        std::fs::read_to_string(&manifest).with_context(|| format!("cannot read {}", manifest.display()))?;
    let mut doc: toml_edit::DocumentMut =
        text.parse().with_context(|| format!("{}: not valid TOML", manifest.display()))?;
    for p in precisions {
        bundle.encoder(Some(*p))?;
    }
    let mut outcomes = Vec::new();
    for file in bundle.encoders.iter().filter(|e| precisions.is_empty() || precisions.contains(&e.precision))
    {
        let outcome = convert_one(&bundle, file, max_growth)?;
        if let Outcome::Converted(c) = &outcome {
            record(&mut doc, &manifest, file, c)?;
        }
        outcomes.push(outcome);
    }
    if outcomes.iter().any(|o| matches!(o, Outcome::Converted(_))) {
        write_atomic(&manifest, doc.to_string().as_bytes())?;
        Bundle::load(dir)
            .with_context(|| format!("{}: rewritten manifest does not load", manifest.display()))?;
    }
    Ok(outcomes)
}

fn convert_one(bundle: &Bundle, file: &EncoderFile, max_growth: f64) -> anyhow::Result<Outcome> {
    let precision = file.precision;
    let bytes = file.read_verified()?;
    let typed = typed_onnx(bundle, file, &bytes)?;
    let decluttered = typed
        .into_decluttered()
        .with_context(|| format!("{}: tract cannot declutter it", file.path.display()))?;
    let tar = match clip_edge_runtime::nnef::to_tar(&decluttered) {
        Ok(tar) => tar,
        Err(e) => {
            let reason = format!("tract cannot write it as NNEF: {}", clip_edge_runtime::one_line(&e));
            return Ok(Outcome::Skipped { precision, reason });
        }
    };
    if tar.len() as f64 > max_growth * bytes.len() as f64 {
        let reason = format!(
            "its NNEF form would be {} bytes against {} for the ONNX file ({:.1}x: tract keeps these weights as f32 in memory, \
             so the ONNX file is the smaller thing to ship)",
            tar.len(),
            bytes.len(),
            tar.len() as f64 / bytes.len() as f64
        );
        return Ok(Outcome::Skipped { precision, reason });
    }
    let path = nnef_path(file);
    write_atomic(&path, &tar)?;
    let nnef = NnefFile { path, sha256: sha256_hex(&tar), source_sha256: file.sha256.clone() };
    match verify(bundle, file, &nnef) {
        Ok((onnx_load, nnef_load, min_cosine, max_abs)) => Ok(Outcome::Converted(Converted {
            precision,
            nnef,
            onnx_bytes: bytes.len(),
            nnef_bytes: tar.len(),
            onnx_load,
            nnef_load,
            min_cosine,
            max_abs,
        })),
        Err(e) => {
            let _ = std::fs::remove_file(&nnef.path);
            Err(e)
        }
    }
}

/// `image_encoder_f32.onnx` -> `image_encoder_f32.nnef.tar`, next to it.
fn nnef_path(file: &EncoderFile) -> PathBuf {
    let stem = file.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    file.path.with_file_name(format!("{stem}.nnef.tar"))
}

/// Loads the encoder from ONNX and from NNEF and compares them on probe frames.
fn verify(
    bundle: &Bundle,
    file: &EncoderFile,
    nnef: &NnefFile,
) -> anyhow::Result<(LoadTiming, LoadTiming, f32, f32)> {
    let with = |n: Option<NnefFile>| {
        let mut b = bundle.clone();
        b.encoders.iter_mut().filter(|e| e.precision == file.precision).for_each(|e| e.nnef = n.clone());
        ImageEncoder::load(&b, Some(file.precision))
    };
    let mut onnx = with(None)?;
    let mut from_nnef = with(Some(nnef.clone()))?;
    if !from_nnef.load_timing().from_nnef {
        bail!("{}: written but the runtime did not load it (see the warning above)", nnef.path.display());
    }
    let (mut min_cosine, mut max_abs) = (1f32, 0f32);
    for frame in probe_frames(bundle.preprocess.size) {
        let a = onnx.encode(&frame)?;
        let b = from_nnef.encode(&frame)?;
        min_cosine = min_cosine.min(a.cosine(b.as_slice()));
        let diff = a.as_slice().iter().zip(b.as_slice()).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        max_abs = max_abs.max(diff);
    }
    if min_cosine < MIN_COSINE {
        bail!(
            "{}: its embeddings differ from the ONNX file's (min cosine {min_cosine:.6} < {MIN_COSINE}); not recorded",
            nnef.path.display()
        );
    }
    Ok((onnx.load_timing(), from_nnef.load_timing(), min_cosine, max_abs))
}

/// Four deterministic frames: a gradient, a checkerboard and two noise images.
fn probe_frames(size: u32) -> Vec<RgbImage> {
    let s = size.max(16);
    let mut rng = SplitMix64::new(2026);
    let mut frames = vec![
        RgbImage::from_fn(s, s, |x, y| image::Rgb([(x * 255 / s) as u8, (y * 255 / s) as u8, 128])),
        RgbImage::from_fn(s, s, |x, y| {
            if (x / 8 + y / 8) % 2 == 0 {
                image::Rgb([240, 30, 30])
            } else {
                image::Rgb([20, 20, 200])
            }
        }),
    ];
    for _ in 0..2 {
        frames.push(RgbImage::from_fn(s, s, |_, _| {
            let v = rng.next_u64();
            image::Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
        }));
    }
    frames
}

fn record(
    doc: &mut toml_edit::DocumentMut,
    manifest: &Path,
    file: &EncoderFile,
    c: &Converted,
) -> anyhow::Result<()> {
    let name = c.nnef.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tables = doc
        .get_mut("image")
        .and_then(|i| i.get_mut("encoder"))
        .and_then(|e| e.as_array_of_tables_mut())
        .with_context(|| format!("{}: no [[image.encoder]] tables", manifest.display()))?;
    let entry = tables
        .iter_mut()
        .find(|t| t.get("precision").and_then(|p| p.as_str()) == Some(file.precision.as_str()))
        .with_context(|| {
            format!("{}: no [[image.encoder]] with precision {}", manifest.display(), file.precision)
        })?;
    entry["nnef"] = toml_edit::value(name);
    entry["nnef_sha256"] = toml_edit::value(c.nnef.sha256.clone());
    entry["nnef_source_sha256"] = toml_edit::value(c.nnef.source_sha256.clone());
    Ok(())
}
