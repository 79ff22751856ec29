//! The text side of CLIP, host only: the bundle's tokenizer (`tokenizers`
//! crate) and its text encoder (ONNX through tract).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clip_edge_runtime::bundle::{read_verified, Bundle, MANIFEST_FILE};
use clip_edge_runtime::Embedding;
use tokenizers::Tokenizer;
use tract_onnx::prelude::*;

/// Errors of the text side.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// The bundle has no `[text]` section.
    #[error(
        "{0}: bundle has no text encoder (no [text] section); prompt stores for it must be built elsewhere"
    )]
    NoTextEncoder(PathBuf),
    /// `tokenizer.json` could not be read or parsed.
    #[error("{path}: cannot load tokenizer: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A text could not be tokenized.
    #[error("cannot tokenize {text:?}: {message}")]
    Tokenize {
        /// The text.
        text: String,
        /// What went wrong.
        message: String,
    },
    /// The text-encoder graph could not be loaded or does not fit the manifest.
    #[error("{path}: cannot load text encoder: {message}")]
    Model {
        /// The model file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Running the text encoder failed.
    #[error("{path}: text encoder failed: {message}")]
    Inference {
        /// The model file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A runtime error (checksum, missing file).
    #[error(transparent)]
    Runtime(#[from] clip_edge_runtime::Error),
}

fn one_line(e: impl std::fmt::Display) -> String {
    clip_edge_runtime::one_line(&e)
}

/// Token ids of one text, padded to the context length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// `context_length` ids: the text's ids then padding.
    pub ids: Vec<i64>,
    /// Number of ids before the padding.
    pub len: usize,
    /// Whether the text was longer than the context and cut.
    pub truncated: bool,
}

/// A tokenizer with the bundle's context length and padding.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    tokenizer: Tokenizer,
    context_length: usize,
    pad_id: u32,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`.
    pub fn from_file(path: &Path, context_length: usize, pad_id: u32) -> Result<Self, TextError> {
        if !path.is_file() {
            return Err(TextError::Tokenizer { path: path.into(), message: "file does not exist".into() });
        }
        let mut tokenizer = Tokenizer::from_file(path)
            .map_err(|e| TextError::Tokenizer { path: path.into(), message: one_line(e) })?;
        // Padding and truncation are ours (the bundle's context length and pad
        // id); a tokenizer.json that pads to its own length (BERT-style files
        // pad to 128) would otherwise make every prompt look truncated.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| TextError::Tokenizer { path: path.into(), message: one_line(e) })?;
        Ok(TextTokenizer { tokenizer, context_length, pad_id })
    }

    /// The context length texts are padded or cut to.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Tokenizes `text` with the tokenizer's special tokens. A text longer
    /// than the context keeps its first ids and ends with the tokenizer's end
    /// token (open_clip's truncation); `truncated` says so.
    pub fn encode(&self, text: &str) -> Result<Tokens, TextError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| TextError::Tokenize { text: text.into(), message: one_line(e) })?;
        let mut ids: Vec<i64> = enc.get_ids().iter().map(|&i| i as i64).collect();
        let truncated = ids.len() > self.context_length;
        if truncated {
            let end = *ids.last().expect("longer than the context, so not empty");
            ids.truncate(self.context_length);
            ids[self.context_length - 1] = end;
        }
        let len = ids.len();
        ids.resize(self.context_length, self.pad_id as i64);
        Ok(Tokens { ids, len, truncated })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputRole {
    Ids,
    Mask,
    TypeIds,
}

/// The bundle's text encoder, loaded once.
pub struct TextEncoder {
    path: PathBuf,
    tokenizer: TextTokenizer,
    roles: Vec<InputRole>,
    plan: Arc<TypedSimplePlan>,
    state: TypedSimpleState,
    dim: usize,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder")
            .field("path", &self.path)
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

impl TextEncoder {
    /// Loads the text encoder and tokenizer named by the bundle's `[text]` section.
    pub fn load(bundle: &Bundle) -> Result<TextEncoder, TextError> {
        let spec =
            bundle.text.as_ref().ok_or_else(|| TextError::NoTextEncoder(bundle.dir.join(MANIFEST_FILE)))?;
        let ctx = spec.context_length as usize;
        let tokenizer = TextTokenizer::from_file(&spec.tokenizer, ctx, spec.pad_id)?;
        let bytes = read_verified(&spec.path, &spec.sha256)?;
        let path = spec.path.clone();
        let err = |e: &dyn std::fmt::Display| TextError::Model { path: path.clone(), message: one_line(e) };
        let mut model = tract_onnx::onnx()
            .model_for_read(&mut bytes.as_slice())
            .map_err(|e| err(&format!("not a readable ONNX model: {e:#}")))?;
        let outlets = model.input_outlets().map_err(|e| err(&e))?.to_vec();
        let batch = clip_edge_runtime::encoder::batch_symbol(&model, 2);
        let first = batch.clone().map(TDim::Sym).unwrap_or_else(|| 1.into());
        let mut roles = Vec::new();
        for (i, outlet) in outlets.iter().enumerate() {
            let name = model.node(outlet.node).name.to_lowercase();
            let role = if name.contains("mask") {
                InputRole::Mask
            } else if name.contains("type") {
                InputRole::TypeIds
            } else {
                InputRole::Ids
            };
            roles.push(role);
            let shape: [TDim; 2] = [first.clone(), ctx.into()];
            model.set_input_fact(i, i64::fact(&shape).into()).map_err(|e| err(&e))?;
        }
        if roles.iter().filter(|r| **r == InputRole::Ids).count() != 1 {
            return Err(err(&format!("expected one token-id input, found inputs {roles:?}")));
        }
        if roles.contains(&InputRole::Mask) != spec.attention_mask {
            return Err(TextError::Model {
                path: bundle.dir.join(MANIFEST_FILE),
                message: format!(
                    "key 'text.attention_mask' is {} but {} {} an attention-mask input",
                    spec.attention_mask,
                    path.display(),
                    if spec.attention_mask { "has no" } else { "takes" }
                ),
            });
        }
        let typed = model
            .into_typed()
            .map_err(|e| err(&format!("graph does not accept 1x{ctx} int64 tokens: {e:#}")))?;
        let typed = clip_edge_runtime::encoder::fix_batch(typed, batch).map_err(|e| err(&e))?;
        let model = typed.into_optimized().map_err(|e| err(&format!("cannot optimise the graph: {e:#}")))?;
        let shape = model.output_fact(0).map_err(|e| err(&e))?.shape.as_concrete().map(|s| s.to_vec());
        let dim = match shape.as_deref() {
            Some([1, d]) | Some([d]) => *d,
            other => return Err(err(&format!("output shape {other:?} is not [1, embed_dim]"))),
        };
        if dim != bundle.embed_dim {
            return Err(TextError::Model {
                path: bundle.dir.join(MANIFEST_FILE),
                message: format!(
                    "key 'image.embed_dim' is {} but {} outputs {dim} values",
                    bundle.embed_dim,
                    path.display()
                ),
            });
        }
        let plan = model.into_runnable().map_err(|e| err(&e))?;
        let state = TypedSimpleState::new(&plan).map_err(|e| err(&e))?;
        Ok(TextEncoder { path, tokenizer, roles, plan, state, dim })
    }

    /// A second encoder sharing this one's optimised plan (no reload), with its
    /// own run state: one per thread when embedding many prompts.
    pub fn fork(&self) -> Result<TextEncoder, TextError> {
        let state = TypedSimpleState::new(&self.plan)
            .map_err(|e| TextError::Model { path: self.path.clone(), message: one_line(e) })?;
        Ok(TextEncoder {
            path: self.path.clone(),
            tokenizer: self.tokenizer.clone(),
            roles: self.roles.clone(),
            plan: Arc::clone(&self.plan),
            state,
            dim: self.dim,
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The raw (unnormalised) output for already tokenized text.
    pub fn run_tokens(&mut self, tokens: &Tokens) -> Result<Vec<f32>, TextError> {
        let ctx = self.tokenizer.context_length;
        let ierr = |e: &dyn std::fmt::Display| TextError::Inference {
            path: self.path.clone(),
            message: one_line(e),
        };
        let mut inputs: TVec<TValue> = tvec![];
        for role in &self.roles {
            let values: Vec<i64> = match role {
                InputRole::Ids => tokens.ids.clone(),
                InputRole::Mask => (0..ctx).map(|i| (i < tokens.len) as i64).collect(),
                InputRole::TypeIds => vec![0; ctx],
            };
            let t = Tensor::from_shape(&[1, ctx], &values).map_err(|e| ierr(&e))?;
            inputs.push(TValue::from_const(Arc::new(t)));
        }
        let out = self.state.run(inputs).map_err(|e| ierr(&e))?;
        let first = out.first().ok_or_else(|| ierr(&"no output"))?;
        let view = first.try_as_plain_ram().map_err(|e| ierr(&e))?;
        Ok(view.as_slice::<f32>().map_err(|e| ierr(&e))?.to_vec())
    }

    /// Tokenizes and embeds one text; the embedding is L2-normalised.
    pub fn embed(&mut self, text: &str) -> Result<(Embedding, Tokens), TextError> {
        let tokens = self.tokenizer.encode(text)?;
        let raw = self.run_tokens(&tokens)?;
        Ok((Embedding::normalised(raw)?, tokens))
    }
}
