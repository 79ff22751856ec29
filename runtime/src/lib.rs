//! clip-edge runtime: everything needed to classify a frame with a CLIP image
//! encoder, and nothing that touches hardware.
//!
//! - [`bundle`]: the model bundle manifest (`bundle.toml`).
//! - [`preprocess`]: resize, crop and normalisation, bit-exact with open_clip's eval transform.
//! - [`encoder`]: the ONNX image encoder through tract.
//! - [`store`]: the prompt store file format, reader and atomic writer.
//! - [`score`]: similarity, softmax, top-k and the open-set decision.
//! - [`frame`]: decoding image files with size limits.
//! - [`process`]: process-level behaviour of the binaries (a closed stdout pipe).
//! - [`Classifier`]: all of it together for one bundle and one store.

pub mod bundle;
pub mod conv;
pub mod depthwise;
mod dequant;
pub mod encoder;
mod error;
pub mod frame;
#[cfg(test)]
mod fuzz_seeds;
pub mod gelu;
pub mod int8;
pub mod nnef;
pub mod optimise;
pub mod preprocess;
pub mod process;
pub mod score;
pub mod signed;
pub mod store;
pub mod toml_error;

use std::path::Path;

pub use bundle::{Bundle, Precision};
pub use dequant::Fold;
pub use encoder::{round3, Embedding, EncodeTiming, ImageEncoder, LoadTiming};
pub use error::{one_line, Error, ErrorKind, Result};
pub use optimise::Rewrites;
pub use score::{Classification, Decision, DecisionRule, Scorer};
pub use store::PromptStore;

/// An image encoder and the prompt store it is scored against, checked to belong together.
#[derive(Debug)]
pub struct Classifier {
    /// The loaded encoder.
    pub encoder: ImageEncoder,
    /// The prompt store; only [`Classifier::replace_store`] changes it, so it
    /// always belongs to the encoder's model.
    store: PromptStore,
    /// The model the store must have been built for: the bundle's fingerprint and embedding dimension.
    fingerprint: [u8; 32],
    embed_dim: usize,
    scorer: Scorer,
}

impl Classifier {
    /// Loads the encoder of `bundle` at `precision` and opens `store` (the bundle's
    /// default store when `None`), rejecting a store built for another model.
    pub fn load(bundle: &Bundle, precision: Option<Precision>, store: Option<&Path>) -> Result<Classifier> {
        Self::load_with(bundle, precision, store, Rewrites::default())
    }

    /// [`Classifier::load`] with a choice of clip-edge's own rewrites of the encoder.
    pub fn load_with(
        bundle: &Bundle,
        precision: Option<Precision>,
        store: Option<&Path>,
        rewrites: Rewrites,
    ) -> Result<Classifier> {
        let store_path = match store {
            Some(p) => p.to_path_buf(),
            None => bundle.prompts.clone().ok_or_else(|| {
                Error::Usage(format!(
                    "{}: bundle names no default prompt store (key 'prompts'); pass one explicitly",
                    bundle.dir.join(bundle::MANIFEST_FILE).display()
                ))
            })?,
        };
        Self::assemble(bundle, precision, PromptStore::open(&store_path)?, rewrites)
    }

    /// Loads the encoder of `bundle` and pairs it with a store already opened
    /// (or built in memory), rejecting a store built for another model.
    pub fn with_store(
        bundle: &Bundle,
        precision: Option<Precision>,
        store: PromptStore,
    ) -> Result<Classifier> {
        Self::assemble(bundle, precision, store, Rewrites::default())
    }

    fn assemble(
        bundle: &Bundle,
        precision: Option<Precision>,
        store: PromptStore,
        rewrites: Rewrites,
    ) -> Result<Classifier> {
        store.check_model(&bundle.fingerprint, bundle.embed_dim)?;
        let encoder = ImageEncoder::load_with(bundle, precision, rewrites)?;
        Ok(Classifier {
            encoder,
            store,
            fingerprint: bundle.fingerprint,
            embed_dim: bundle.embed_dim,
            scorer: Scorer::new(),
        })
    }

    /// The prompt store scored against.
    pub fn store(&self) -> &PromptStore {
        &self.store
    }

    /// Whether `store` was built for this model (what [`Classifier::replace_store`] checks first).
    pub fn check_store(&self, store: &PromptStore) -> Result<()> {
        store.check_model(&self.fingerprint, self.embed_dim)
    }

    /// Scores against `store` from now on (a store that changed on disk),
    /// rejecting a store built for another model; the store before stays then.
    pub fn replace_store(&mut self, store: PromptStore) -> Result<()> {
        store.check_model(&self.fingerprint, self.embed_dim)?;
        self.store = store;
        Ok(())
    }

    /// Scores an embedding against the store.
    pub fn score(&mut self, embedding: &Embedding, k: usize, rule: &DecisionRule) -> Result<Classification> {
        self.scorer.classify(embedding.as_slice(), &self.store, k, rule)
    }

    /// The label of row `index`.
    pub fn label(&self, index: usize) -> &str {
        &self.store.entries()[index].label
    }
}
