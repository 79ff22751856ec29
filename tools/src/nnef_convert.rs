//! `clip-edge bundle nnef`: adds tract's NNEF form of a bundle's image
//! encoders, so that a device skips ONNX parsing and decluttering at start-up.
//!
//! Each ONNX encoder is typed and decluttered as the runtime would, written as
//! an uncompressed NNEF tar next to it, loaded back both ways and compared on
//! probe frames; only a copy that gives the same embeddings is recorded in
//! `bundle.toml` (`nnef`, `nnef_sha256`, `nnef_source_sha256`). A form whose
//! NNEF would be much larger than its ONNX file (int8 or f16 weights that the
//! runtime widens to f32 at load) is skipped with the sizes as the reason, and
//! so is an int8-compute form whose file keeps weighted layers in f32 that the
//! int8 rewrite then leaves f32 (`KeptF32::F32InFile`): the NNEF copy holds its
//! small int8 weights as f32 too, so it could not tell them apart.

use std::path::{Path, PathBuf};

use clip_edge_runtime::bundle::{sha256_hex, EncoderFile, NnefFile, MANIFEST_FILE};
use clip_edge_runtime::encoder::typed_onnx_folding;
use clip_edge_runtime::int8::{KeptF32, LayerCompute};
use clip_edge_runtime::store::write_atomic;
use clip_edge_runtime::Fold;
use clip_edge_runtime::{Bundle, ImageEncoder, LoadTiming, Precision};
use image::RgbImage;

use crate::rng::SplitMix64;

/// Lowest cosine between ONNX and NNEF embeddings of a probe frame that is accepted.
pub const MIN_COSINE: f32 = 0.9999;

/// Why a conversion stopped; the manifest is only rewritten when none occurs.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The bundle, an encoder file or a write failed in the runtime.
    #[error(transparent)]
    Runtime(#[from] clip_edge_runtime::Error),
    /// `bundle.toml` could not be edited.
    #[error("{path}: {message}")]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// tract could not declutter the ONNX encoder.
    #[error("{path}: tract cannot declutter it: {message}")]
    Declutter {
        /// The ONNX file.
        path: PathBuf,
        /// tract's error, on one line.
        message: String,
    },
    /// The NNEF copy was written but is not what the runtime loads, or its
    /// embeddings differ from the ONNX file's; it was removed again.
    #[error("{path}: {message}; not recorded")]
    Verify {
        /// The NNEF archive.
        path: PathBuf,
        /// What differed.
        message: String,
    },
}

fn manifest_err(path: &Path, message: impl Into<String>) -> ConvertError {
    ConvertError::Manifest { path: path.to_path_buf(), message: message.into() }
}

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
pub fn convert_bundle(
    dir: &Path,
    precisions: &[Precision],
    max_growth: f64,
) -> Result<Vec<Outcome>, ConvertError> {
    let bundle = Bundle::load(dir)?;
    let manifest = bundle.dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest).map_err(|e| manifest_err(&manifest, e.to_string()))?;
    let mut doc: toml_edit::DocumentMut =
        text.parse().map_err(|e| manifest_err(&manifest, format!("not valid TOML: {e}")))?;
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
            .map_err(|e| manifest_err(&manifest, format!("rewritten manifest does not load: {e}")))?;
    }
    Ok(outcomes)
}

fn convert_one(bundle: &Bundle, file: &EncoderFile, max_growth: f64) -> Result<Outcome, ConvertError> {
    let precision = file.precision;
    // The int8-compute form's ONNX load is needed to count its f32-in-file layers; verify reuses it.
    let mut onnx_encoder = None;
    if precision == Precision::Int8Compute {
        let encoder = onnx_load(bundle, file)?;
        let kept = kept_f32_in_file(&encoder);
        onnx_encoder = Some(encoder);
        if kept > 0 {
            let reason = format!(
                "its int8 file keeps {kept} weighted layers in f32, which the int8-compute form leaves f32; an NNEF \
                 copy holds its small int8 weights as f32 too and could not tell them apart"
            );
            return Ok(Outcome::Skipped { precision, reason });
        }
    }
    let bytes = file.read_verified()?;
    let onnx_bytes = bytes.len();
    // The int8-compute copy keeps its large weights int8 (NNEF cannot write
    // the loader's `StoredInt8`); the int8 rewrite reads them as stored.
    let fold = if precision == Precision::Int8Compute { Fold::Small } else { Fold::All };
    let typed = typed_onnx_folding(bundle, file, bytes, fold)?;
    let decluttered = typed.into_decluttered().map_err(|e| ConvertError::Declutter {
        path: file.path.clone(),
        message: clip_edge_runtime::one_line(&e),
    })?;
    let tar = match clip_edge_runtime::nnef::to_tar(&decluttered) {
        Ok(tar) => tar,
        Err(e) => {
            let reason = format!("tract cannot write it as NNEF: {}", clip_edge_runtime::one_line(&e));
            return Ok(Outcome::Skipped { precision, reason });
        }
    };
    if tar.len() as f64 > max_growth * onnx_bytes as f64 {
        let reason = format!(
            "its NNEF form would be {} bytes against {} for the ONNX file ({:.1}x: tract keeps these weights as f32 in memory, \
             so the ONNX file is the smaller thing to ship)",
            tar.len(),
            onnx_bytes,
            tar.len() as f64 / onnx_bytes as f64
        );
        return Ok(Outcome::Skipped { precision, reason });
    }
    let path = nnef_path(file);
    write_atomic(&path, &tar)?;
    let nnef = NnefFile { path, sha256: sha256_hex(&tar), source_sha256: file.sha256.clone() };
    match verify(bundle, file, &nnef, onnx_encoder) {
        Ok((onnx_load, nnef_load, min_cosine, max_abs)) => Ok(Outcome::Converted(Converted {
            precision,
            nnef,
            onnx_bytes,
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

/// The encoder of `file`'s precision loaded from its ONNX file (any NNEF copy ignored).
fn onnx_load(bundle: &Bundle, file: &EncoderFile) -> Result<ImageEncoder, ConvertError> {
    with_nnef(bundle, file, None)
}

/// The encoder of `file`'s precision with its NNEF copy set to `nnef`.
fn with_nnef(
    bundle: &Bundle,
    file: &EncoderFile,
    nnef: Option<NnefFile>,
) -> Result<ImageEncoder, ConvertError> {
    let mut b = bundle.clone();
    b.encoders.iter_mut().filter(|e| e.precision == file.precision).for_each(|e| e.nnef = nnef.clone());
    Ok(ImageEncoder::load(&b, Some(file.precision))?)
}

/// The weighted layers that an encoder loaded from its ONNX file keeps f32 because the file does.
fn kept_f32_in_file(encoder: &ImageEncoder) -> usize {
    let f32_in_file = LayerCompute::F32(KeptF32::F32InFile);
    encoder.int8_report().map_or(0, |r| r.layers.iter().filter(|l| l.compute == f32_in_file).count())
}

/// `image_encoder_f32.onnx` -> `image_encoder_f32.nnef.tar`, next to it.
fn nnef_path(file: &EncoderFile) -> PathBuf {
    let stem = file.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    file.path.with_file_name(format!("{stem}.nnef.tar"))
}

/// Loads the encoder from ONNX (unless `onnx` is that load already) and from NNEF and compares them on probe
/// frames.
fn verify(
    bundle: &Bundle,
    file: &EncoderFile,
    nnef: &NnefFile,
    onnx: Option<ImageEncoder>,
) -> Result<(LoadTiming, LoadTiming, f32, f32), ConvertError> {
    let mut onnx = match onnx {
        Some(encoder) => encoder,
        None => onnx_load(bundle, file)?,
    };
    let mut from_nnef = with_nnef(bundle, file, Some(nnef.clone()))?;
    if !from_nnef.load_timing().from_nnef {
        return Err(ConvertError::Verify {
            path: nnef.path.clone(),
            message: "written but the runtime did not load it (see the warning above)".into(),
        });
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
        return Err(ConvertError::Verify {
            path: nnef.path.clone(),
            message: format!(
                "its embeddings differ from the ONNX file's (min cosine {min_cosine:.6} < {MIN_COSINE})"
            ),
        });
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
) -> Result<(), ConvertError> {
    let name = c.nnef.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tables = doc
        .get_mut("image")
        .and_then(|i| i.get_mut("encoder"))
        .and_then(|e| e.as_array_of_tables_mut())
        .ok_or_else(|| manifest_err(manifest, "no [[image.encoder]] tables"))?;
    let entry = tables
        .iter_mut()
        .find(|t| t.get("precision").and_then(|p| p.as_str()) == Some(file.precision.as_str()))
        .ok_or_else(|| {
            manifest_err(manifest, format!("no [[image.encoder]] with precision {}", file.precision))
        })?;
    entry["nnef"] = toml_edit::value(name);
    entry["nnef_sha256"] = toml_edit::value(c.nnef.sha256.clone());
    entry["nnef_source_sha256"] = toml_edit::value(c.nnef.source_sha256.clone());
    Ok(())
}
