//! The model bundle: a folder with a `bundle.toml` manifest and the files it names.
//!
//! The manifest states everything the runtime needs and nothing is implicit:
//! one image-encoder file per precision (each with its sha256), the
//! preprocessing (input size, resize mode, interpolation, mean/std), the
//! embedding dimension, the logit scale, and the model fingerprint that prompt
//! stores are matched against. The format is described in `docs/bundle.md`.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::toml_error::TomlErrorAt;

/// Name of the manifest file inside a bundle folder.
pub const MANIFEST_FILE: &str = "bundle.toml";

/// The manifest format version this runtime reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// Numeric form of an image-encoder file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, Deserialize)]
#[serde(try_from = "String")]
pub enum Precision {
    /// 32-bit float reference graph.
    #[serde(rename = "f32")]
    F32,
    /// 16-bit float weights, computed in f32.
    #[serde(rename = "f16")]
    F16,
    /// 8-bit integer weights (storage form: folded to f32 at load, computed in f32).
    #[serde(rename = "int8")]
    Int8,
    /// 8-bit integer weights computed in int8: matrix products and convolutions
    /// on tract's int8 kernels with activations quantised at run time
    /// ([`crate::int8`]). Usually the same file as [`Precision::Int8`].
    #[serde(rename = "int8-compute")]
    Int8Compute,
}

impl Precision {
    /// The name used in manifests and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Int8 => "int8",
            Precision::Int8Compute => "int8-compute",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Precision {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            "int8" => Ok(Precision::Int8),
            "int8-compute" => Ok(Precision::Int8Compute),
            other => Err(format!("unknown precision '{other}' (expected f32, f16, int8 or int8-compute)")),
        }
    }
}

/// How a frame is brought to the square model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeMode {
    /// Resize so the shorter side equals the input size, then crop the centre (CLIP's way).
    ShortestCenterCrop,
    /// Resize both sides to the input size, ignoring the aspect ratio.
    Squash,
}

/// Resampling filter used when resizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Nearest neighbour.
    Nearest,
    /// Bilinear (triangle) filter, antialiased when shrinking.
    Bilinear,
    /// Bicubic (Catmull-Rom, a = -0.5) filter, antialiased when shrinking, as PIL does.
    Bicubic,
}

/// Preprocessing that turns an RGB frame into the model's input tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessSpec {
    /// Side of the square input, in pixels.
    pub size: u32,
    /// How the frame is fitted to the square.
    pub resize: ResizeMode,
    /// Resampling filter.
    pub interpolation: Interpolation,
    /// Per-channel mean (R, G, B) subtracted after scaling pixels to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation (R, G, B) divided after the mean.
    pub std: [f32; 3],
}

/// One image-encoder file of the bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderFile {
    /// Its numeric form.
    pub precision: Precision,
    /// Absolute (or bundle-relative resolved) path of the ONNX file.
    pub path: PathBuf,
    /// Expected sha256 of the file, lower-case hex.
    pub sha256: String,
    /// tract's NNEF form of the same model, if the bundle ships one.
    pub nnef: Option<NnefFile>,
}

/// tract's NNEF form of an ONNX image encoder (see [`crate::nnef`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NnefFile {
    /// Path of the NNEF tar archive.
    pub path: PathBuf,
    /// Expected sha256 of the archive, lower-case hex.
    pub sha256: String,
    /// sha256 of the ONNX file it was converted from; a copy made from another
    /// ONNX file is stale and not used.
    pub source_sha256: String,
}

/// Text-encoder description, used only by host tools.
#[derive(Debug, Clone, PartialEq)]
pub struct TextEncoderSpec {
    /// Path of the text-encoder ONNX file.
    pub path: PathBuf,
    /// Expected sha256 of the file, lower-case hex.
    pub sha256: String,
    /// Path of the `tokenizer.json` for the `tokenizers` crate.
    pub tokenizer: PathBuf,
    /// Number of tokens the graph takes.
    pub context_length: u32,
    /// Token id used for padding.
    pub pad_id: u32,
    /// Whether the graph takes an attention mask input besides the token ids.
    pub attention_mask: bool,
    /// Seen-versus-unseen calibration applied when prompt stores are built.
    pub calibration: Option<Calibration>,
}

/// Calibration of classes the model was trained on against classes it only
/// knows by name (calibrated stacking, Chao et al. 2016): a contrastive model
/// scores the concepts of its training set systematically higher, so a class
/// whose name is not among them gets `unseen_bonus` added to its cosine
/// similarity. Prompt-store builds turn this into per-entry offsets; the
/// device only adds the stored offsets.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// Added to the cosine similarity of classes not named in `seen_names`.
    pub unseen_bonus: f32,
    /// Text file with one name per line under which a training concept is known.
    pub seen_names: PathBuf,
}

/// The largest [`Calibration::unseen_bonus`] a manifest may give.
pub const MAX_UNSEEN_BONUS: f32 = 0.5;

impl Calibration {
    /// Reads the seen-names file, normalised with [`Calibration::normalise`].
    pub fn load_seen_names(&self) -> Result<std::collections::HashSet<String>> {
        let text = std::fs::read_to_string(&self.seen_names).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::manifest(
                    &self.seen_names,
                    "seen-names file named in bundle.toml ([text.calibration]) does not exist",
                )
            } else if e.kind() == std::io::ErrorKind::InvalidData {
                Error::manifest(&self.seen_names, "seen-names file is not UTF-8 text")
            } else {
                Error::io(&self.seen_names, e)
            }
        })?;
        let names: std::collections::HashSet<String> =
            text.lines().map(Self::normalise).filter(|n| !n.is_empty()).collect();
        if names.is_empty() {
            return Err(Error::manifest(&self.seen_names, "seen-names file lists no names"));
        }
        Ok(names)
    }

    /// The form names are compared in: lower case, `_` as a space, single spaces, trimmed.
    pub fn normalise(name: &str) -> String {
        name.to_lowercase().replace('_', " ").split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// A validated bundle manifest with paths resolved against the bundle folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    /// The bundle folder.
    pub dir: PathBuf,
    /// Short name of the model.
    pub name: String,
    /// Identity of the model (sha256 of the f32 reference encoder), shared by all precisions.
    pub fingerprint: [u8; 32],
    /// Input preprocessing.
    pub preprocess: PreprocessSpec,
    /// Dimension of the embeddings the encoder produces.
    pub embed_dim: usize,
    /// Multiplier applied to cosine similarities before the softmax.
    pub logit_scale: f32,
    /// Image-encoder files, one per precision, sorted by precision.
    pub encoders: Vec<EncoderFile>,
    /// Precision used when none is asked for.
    pub default_precision: Precision,
    /// The bundle's default prompt store, if any.
    pub prompts: Option<PathBuf>,
    /// Text encoder for host tools, if the bundle ships one.
    pub text: Option<TextEncoderSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format: u32,
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    fingerprint: String,
    prompts: Option<String>,
    image: RawImage,
    text: Option<RawText>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    size: u32,
    resize: ResizeMode,
    interpolation: Interpolation,
    mean: Vec<f32>,
    std: Vec<f32>,
    embed_dim: usize,
    logit_scale: f32,
    default_precision: Precision,
    encoder: Vec<RawEncoder>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEncoder {
    precision: Precision,
    file: String,
    sha256: String,
    nnef: Option<String>,
    nnef_sha256: Option<String>,
    nnef_source_sha256: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawText {
    file: String,
    sha256: String,
    tokenizer: String,
    context_length: u32,
    pad_id: u32,
    #[serde(default)]
    attention_mask: bool,
    calibration: Option<RawCalibration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalibration {
    unseen_bonus: f32,
    seen_names: String,
}

impl Bundle {
    /// Reads and validates `DIR/bundle.toml`. Files are not opened here; see
    /// [`Bundle::verify_encoder`] for the checksum.
    pub fn load(dir: impl AsRef<Path>) -> Result<Bundle> {
        let dir = dir.as_ref();
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound && !dir.is_dir() {
                Error::manifest(&path, "bundle folder does not exist")
            } else if e.kind() == std::io::ErrorKind::NotFound {
                Error::manifest(&path, "no bundle.toml in this folder (is it a bundle?)")
            } else {
                Error::io(&path, e)
            }
        })?;
        Self::parse(dir, &path, &text)
    }

    /// Parses manifest text; `dir` resolves relative file names, `path` names the manifest in errors.
    pub fn parse(dir: &Path, path: &Path, text: &str) -> Result<Bundle> {
        let raw: RawManifest = toml::from_str(text)
            .map_err(|e| Error::manifest(path, TomlErrorAt::new(text, &e).to_string()))?;
        let bad = |key: &str, msg: String| Error::manifest(path, format!("key '{key}': {msg}"));

        if raw.format != MANIFEST_FORMAT {
            return Err(bad(
                "format",
                format!("unsupported manifest format {} (this runtime reads {MANIFEST_FORMAT})", raw.format),
            ));
        }
        if raw.name.trim().is_empty() {
            return Err(bad("name", "must not be empty".into()));
        }
        let fingerprint = parse_hex32(&raw.fingerprint).map_err(|m| bad("fingerprint", m))?;

        let img = raw.image;
        if !(16..=2048).contains(&img.size) {
            return Err(bad("image.size", format!("{} is out of range 16..=2048", img.size)));
        }
        let mean = three(&img.mean).map_err(|m| bad("image.mean", m))?;
        let std = three(&img.std).map_err(|m| bad("image.std", m))?;
        if std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(bad("image.std", "every value must be positive".into()));
        }
        if mean.iter().any(|m| !m.is_finite()) {
            return Err(bad("image.mean", "every value must be finite".into()));
        }
        if img.embed_dim == 0 || img.embed_dim > 65_536 {
            return Err(bad("image.embed_dim", format!("{} is out of range 1..=65536", img.embed_dim)));
        }
        if !(img.logit_scale.is_finite() && img.logit_scale > 0.0) {
            return Err(bad("image.logit_scale", format!("{} must be a positive number", img.logit_scale)));
        }
        if img.encoder.is_empty() {
            return Err(bad("image.encoder", "at least one [[image.encoder]] entry is required".into()));
        }
        let mut encoders = Vec::with_capacity(img.encoder.len());
        for (i, e) in img.encoder.iter().enumerate() {
            let key = format!("image.encoder[{i}]");
            let precision = e.precision;
            if encoders.iter().any(|x: &EncoderFile| x.precision == precision) {
                return Err(bad(
                    &format!("{key}.precision"),
                    format!("precision {precision} is listed twice"),
                ));
            }
            let file = relative_file(dir, &e.file).map_err(|m| bad(&format!("{key}.file"), m))?;
            parse_hex32(&e.sha256).map_err(|m| bad(&format!("{key}.sha256"), m))?;
            let nnef = match (&e.nnef, &e.nnef_sha256, &e.nnef_source_sha256) {
                (None, None, None) => None,
                (Some(nnef), Some(sha), Some(source)) => {
                    parse_hex32(sha).map_err(|m| bad(&format!("{key}.nnef_sha256"), m))?;
                    parse_hex32(source).map_err(|m| bad(&format!("{key}.nnef_source_sha256"), m))?;
                    Some(NnefFile {
                        path: relative_file(dir, nnef).map_err(|m| bad(&format!("{key}.nnef"), m))?,
                        sha256: sha.to_ascii_lowercase(),
                        source_sha256: source.to_ascii_lowercase(),
                    })
                }
                _ => {
                    return Err(bad(
                        &format!("{key}.nnef"),
                        "nnef, nnef_sha256 and nnef_source_sha256 go together: give all three or none".into(),
                    ))
                }
            };
            encoders.push(EncoderFile { precision, path: file, sha256: e.sha256.to_ascii_lowercase(), nnef });
        }
        encoders.sort_by_key(|e| e.precision);
        let default_precision = img.default_precision;
        if !encoders.iter().any(|e| e.precision == default_precision) {
            return Err(bad(
                "image.default_precision",
                format!("{default_precision} has no [[image.encoder]] entry"),
            ));
        }
        let prompts = raw
            .prompts
            .as_deref()
            .map(|p| relative_file(dir, p).map_err(|m| bad("prompts", m)))
            .transpose()?;
        let text = raw
            .text
            .map(|t| -> Result<TextEncoderSpec> {
                parse_hex32(&t.sha256).map_err(|m| bad("text.sha256", m))?;
                if t.context_length == 0 {
                    return Err(bad("text.context_length", "must be positive".into()));
                }
                let calibration = t
                    .calibration
                    .map(|c| -> Result<Calibration> {
                        if !(c.unseen_bonus.is_finite() && (0.0..=MAX_UNSEEN_BONUS).contains(&c.unseen_bonus))
                        {
                            return Err(bad(
                                "text.calibration.unseen_bonus",
                                format!("{} is outside 0..={MAX_UNSEEN_BONUS}", c.unseen_bonus),
                            ));
                        }
                        Ok(Calibration {
                            unseen_bonus: c.unseen_bonus,
                            seen_names: relative_file(dir, &c.seen_names)
                                .map_err(|m| bad("text.calibration.seen_names", m))?,
                        })
                    })
                    .transpose()?;
                Ok(TextEncoderSpec {
                    path: relative_file(dir, &t.file).map_err(|m| bad("text.file", m))?,
                    sha256: t.sha256.to_ascii_lowercase(),
                    tokenizer: relative_file(dir, &t.tokenizer).map_err(|m| bad("text.tokenizer", m))?,
                    context_length: t.context_length,
                    pad_id: t.pad_id,
                    attention_mask: t.attention_mask,
                    calibration,
                })
            })
            .transpose()?;

        Ok(Bundle {
            dir: dir.to_path_buf(),
            name: raw.name,
            fingerprint,
            preprocess: PreprocessSpec {
                size: img.size,
                resize: img.resize,
                interpolation: img.interpolation,
                mean,
                std,
            },
            embed_dim: img.embed_dim,
            logit_scale: img.logit_scale,
            encoders,
            default_precision,
            prompts,
            text,
        })
    }

    /// The encoder file for `precision`, or the default one when `None`.
    pub fn encoder(&self, precision: Option<Precision>) -> Result<&EncoderFile> {
        let want = precision.unwrap_or(self.default_precision);
        self.encoders.iter().find(|e| e.precision == want).ok_or_else(|| {
            let have: Vec<_> = self.encoders.iter().map(|e| e.precision.as_str()).collect();
            Error::Usage(format!(
                "{}: bundle '{}' has no {want} image encoder (available: {})",
                self.dir.join(MANIFEST_FILE).display(),
                self.name,
                have.join(", ")
            ))
        })
    }

    /// The fingerprint as lower-case hex.
    pub fn fingerprint_hex(&self) -> String {
        hex(&self.fingerprint)
    }
}

impl EncoderFile {
    /// Reads the file and checks it against the manifest's sha256; returns its bytes.
    pub fn read_verified(&self) -> Result<Vec<u8>> {
        read_verified(&self.path, &self.sha256)
    }
}

/// Reads a model file named in a manifest and checks it against `sha256` (lower-case hex).
pub fn read_verified(path: &Path, sha256: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Model {
                path: path.to_path_buf(),
                message: "file named in bundle.toml does not exist".into(),
            }
        } else {
            Error::io(path, e)
        }
    })?;
    let actual = sha256_hex(&bytes);
    if actual != sha256 {
        return Err(Error::Checksum { path: path.to_path_buf(), expected: sha256.to_string(), actual });
    }
    Ok(bytes)
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits into 32 bytes.
pub fn parse_hex32(s: &str) -> std::result::Result<[u8; 32], String> {
    let s = s.strip_prefix("sha256:").unwrap_or(s);
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("'{s}' is not 64 hexadecimal digits"));
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).map_err(|e| e.to_string())?;
        out[i] = u8::from_str_radix(pair, 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn three(v: &[f32]) -> std::result::Result<[f32; 3], String> {
    <[f32; 3]>::try_from(v).map_err(|_| format!("needs 3 values (R, G, B), got {}", v.len()))
}

fn relative_file(dir: &Path, name: &str) -> std::result::Result<PathBuf, String> {
    let p = Path::new(name);
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("'{name}' must be a path inside the bundle folder (no absolute path, no '..')"));
    }
    Ok(dir.join(p))
}

#[cfg(test)]
mod tests;
