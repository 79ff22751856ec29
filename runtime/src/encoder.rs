//! The image encoder: an ONNX graph loaded once through tract, with a fixed
//! input shape, optimised, and kept as a runnable plan with its state.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use crate::bundle::{read_verified, Bundle, EncoderFile, NnefFile, Precision};
use crate::dequant::Fold;
use crate::error::{one_line, Error, Result};
use crate::optimise::{optimise, Rewrites};
use crate::preprocess::Preprocessor;

/// An L2-normalised image or text embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding(Vec<f32>);

impl Embedding {
    /// Normalises `values` to unit length. An all-zero or non-finite vector is an error.
    pub fn normalised(mut values: Vec<f32>) -> Result<Embedding> {
        let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
        if !(norm.is_finite() && norm > 0.0) {
            return Err(Error::Usage(format!(
                "embedding has norm {norm}; cannot normalise (model produced zeros or NaN)"
            )));
        }
        values.iter_mut().for_each(|v| *v /= norm);
        Ok(Embedding(values))
    }

    /// The unit-length values.
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    /// Dimension of the embedding.
    pub fn dim(&self) -> usize {
        self.0.len()
    }

    /// Cosine similarity with another unit vector.
    pub fn cosine(&self, other: &[f32]) -> f32 {
        self.0.iter().zip(other).map(|(a, b)| a * b).sum()
    }
}

/// `v` rounded to 3 decimals: how reports and events write times in ms
/// (microseconds kept, no float noise).
pub fn round3(v: f64) -> f64 {
    (v * 1e3).round() / 1e3
}

/// Time spent in each stage of one [`ImageEncoder::encode`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EncodeTiming {
    /// Resize, crop and normalisation.
    pub preprocess: Duration,
    /// The tract run.
    pub infer: Duration,
}

/// Time spent bringing the model up, for start-up reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadTiming {
    /// Reading the file and checking its sha256.
    pub read: Duration,
    /// Parsing the ONNX protobuf and typing the graph.
    pub parse: Duration,
    /// Declutter and optimisation passes, and building the plan.
    pub optimise: Duration,
    /// Whether the model came from the bundle's NNEF copy rather than the ONNX file.
    pub from_nnef: bool,
}

impl LoadTiming {
    /// Sum of all stages.
    pub fn total(&self) -> Duration {
        self.read + self.parse + self.optimise
    }
}

/// A loaded image encoder ready to embed frames.
pub struct ImageEncoder {
    path: PathBuf,
    precision: Precision,
    embed_dim: usize,
    preprocessor: Preprocessor,
    state: TypedSimpleState,
    input: Option<Arc<Tensor>>,
    load_timing: LoadTiming,
    int8: Option<crate::int8::Int8Report>,
    executor: Executor,
    threads: usize,
}

/// Whether this build has the thread pool behind [`ImageEncoder::set_threads`]
/// (cargo feature `threads`, on by default; a lean single-core build leaves it
/// and rayon out).
pub const HAS_THREAD_POOL: bool = cfg!(feature = "threads");

/// The most inference threads [`ImageEncoder::set_threads`] accepts: 1 in a
/// build without the thread pool.
pub const MAX_THREADS: usize = if HAS_THREAD_POOL { 64 } else { 1 };

impl std::fmt::Debug for ImageEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageEncoder")
            .field("path", &self.path)
            .field("precision", &self.precision)
            .field("embed_dim", &self.embed_dim)
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "threads")]
fn thread_pool(threads: usize) -> Result<Executor> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("clip-edge-mm-{i}"))
        .build()
        .map_err(|e| Error::Usage(format!("cannot start {threads} inference threads: {e}")))?;
    Ok(Executor::MultiThread(Arc::new(pool)))
}

/// Runs `plan` on `input` on one of `pool`'s threads, with `executor` (the
/// pool) in scope there, and returns its first output's values. Every node
/// then runs on a pool thread, so each parallel operator starts from there
/// (rayon runs it in place and the other thread joins when it wakes) instead
/// of waking the pool from the caller and the caller again at its end: 2.15-2.25
/// -> 1.94-2.02 ms for the default model at two threads on a 2-vCPU Zen 4.
#[cfg(feature = "threads")]
fn on_pool(
    pool: &rayon::ThreadPool,
    executor: &Executor,
    plan: &Arc<TypedSimplePlan>,
    input: Arc<Tensor>,
) -> TractResult<Vec<f32>> {
    let executor = executor.clone();
    pool.install(|| {
        multithread_tract_scope(executor, || {
            // A state for this run: tract's states are not `Send`, so the
            // caller's cannot come here (a state costs microseconds to make;
            // keeping one per pool thread in a thread local measured no faster,
            // and dropping it there at thread exit aborts in tract).
            let mut state = TypedSimpleState::new(plan)?;
            let outputs = state.run(tvec![TValue::from_const(input)])?;
            let Some(out) = outputs.first() else { tract_core::internal::bail!("model returned no output") };
            Ok(out.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
        })
    })
}

#[cfg(not(feature = "threads"))]
fn thread_pool(threads: usize) -> Result<Executor> {
    Err(Error::Usage(format!("threads {threads}: this build has no thread pool")))
}

/// The symbol of input 0's leading (batch) dimension when the graph was
/// exported with a dynamic batch and input 0 has `rank` dimensions. Such a graph
/// keeps the symbol in intermediate shapes (value_info): type it with the
/// symbol, then fix the symbol to 1 with `set_symbols`, because a literal 1
/// does not unify with it.
pub fn batch_symbol(model: &InferenceModel, rank: usize) -> Option<Symbol> {
    match model.input_fact(0).ok().and_then(|f| f.shape.concretize()) {
        Some(dims) if dims.len() == rank => match &dims[0] {
            TDim::Sym(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Fixes the batch symbol found by [`batch_symbol`] (if any) to 1 in a typed model.
pub fn fix_batch(typed: TypedModel, batch: Option<Symbol>) -> TractResult<TypedModel> {
    match batch {
        Some(sym) => typed.set_symbols(&std::collections::HashMap::from([(sym, TDim::from(1))])),
        None => Ok(typed),
    }
}

impl ImageEncoder {
    /// Loads the bundle's encoder for `precision` (default when `None`), checking its sha256.
    pub fn load(bundle: &Bundle, precision: Option<Precision>) -> Result<ImageEncoder> {
        Self::load_with(bundle, precision, Rewrites::default())
    }

    /// [`ImageEncoder::load`] with a choice of clip-edge's own rewrites
    /// (`clip-edge bench --tract-ops` turns them off to measure what they
    /// change in cold start and speed).
    pub fn load_with(
        bundle: &Bundle,
        precision: Option<Precision>,
        rewrites: Rewrites,
    ) -> Result<ImageEncoder> {
        let file = bundle.encoder(precision)?;
        Self::load_file(bundle, file, rewrites)
    }

    fn load_file(bundle: &Bundle, file: &EncoderFile, rewrites: Rewrites) -> Result<ImageEncoder> {
        if let Some(nnef) = &file.nnef {
            match Self::load_nnef(bundle, file, nnef, rewrites) {
                Ok(encoder) => return Ok(encoder),
                Err(e) => log::warn!("{e}; loading {} instead", file.path.display()),
            }
        }
        let t0 = Instant::now();
        let bytes = file.read_verified()?;
        let read = t0.elapsed();
        let t1 = Instant::now();
        let typed = typed_onnx(bundle, file, bytes)?;
        let parse = t1.elapsed();
        let timing = LoadTiming { read, parse, ..LoadTiming::default() };
        Self::finish(bundle, file, &file.path, typed, timing, rewrites)
    }

    fn load_nnef(
        bundle: &Bundle,
        file: &EncoderFile,
        nnef: &NnefFile,
        rewrites: Rewrites,
    ) -> Result<ImageEncoder> {
        let model_err = |message: String| Error::Model { path: nnef.path.clone(), message };
        if nnef.source_sha256 != file.sha256 {
            return Err(model_err(format!(
                "stale NNEF copy: converted from an ONNX file with sha256 {}, not from {} (sha256 {})",
                nnef.source_sha256,
                file.path.display(),
                file.sha256
            )));
        }
        let t0 = Instant::now();
        let bytes = read_verified(&nnef.path, &nnef.sha256)?;
        let read = t0.elapsed();
        let t1 = Instant::now();
        let typed = crate::nnef::from_tar(&bytes)
            .map_err(|e| model_err(format!("not a readable NNEF archive: {}", one_line(&e))))?;
        drop(bytes);
        let size = bundle.preprocess.size as usize;
        let want = f32::fact([1, 3, size, size]);
        let inputs = typed.input_outlets().map_err(|e| model_err(one_line(&e)))?.len();
        let fact = typed.input_fact(0).map_err(|e| model_err(one_line(&e)))?;
        if inputs != 1 || fact.datum_type != want.datum_type || fact.shape != want.shape {
            return Err(model_err(format!(
                "takes {inputs} input(s), the first {fact:?}; expected one {want:?}"
            )));
        }
        let parse = t1.elapsed();
        Self::finish(
            bundle,
            file,
            &nnef.path,
            typed,
            LoadTiming { read, parse, from_nnef: true, ..LoadTiming::default() },
            rewrites,
        )
    }

    fn finish(
        bundle: &Bundle,
        file: &EncoderFile,
        loaded: &Path,
        typed: TypedModel,
        timing: LoadTiming,
        rewrites: Rewrites,
    ) -> Result<ImageEncoder> {
        let model_err =
            |e: &dyn std::fmt::Display| Error::Model { path: loaded.to_path_buf(), message: one_line(e) };
        let t2 = Instant::now();
        let (optimised, int8) = optimise(typed, file.precision, rewrites).map_err(|e| model_err(&e))?;
        if let Some(r) = &int8 {
            if r.int8_layers() == 0 {
                return Err(model_err(&format!(
                    "precision {}: no layer of this graph can be computed in int8 (it has {} weighted layers \
                     with constant f32 weights); use precision int8 or f32",
                    file.precision,
                    r.layers.len()
                )));
            }
            log::info!(
                "{}: {} of {} weighted layers in int8 ({:.1}% of their multiply-accumulates)",
                loaded.display(),
                r.int8_layers(),
                r.layers.len(),
                100.0 * r.int8_mac_share()
            );
            for l in &r.layers {
                log::debug!("  {:?} {} ({} MACs)", l.compute, l.name, l.macs);
            }
        }
        let out_fact = optimised.output_fact(0).map_err(|e| model_err(&e))?.clone();
        let out_shape: Option<Vec<usize>> = out_fact.shape.as_concrete().map(|s| s.to_vec());
        let dim = match out_shape.as_deref() {
            Some([1, d]) | Some([d]) => *d,
            _ => return Err(model_err(&format!("output shape {:?} is not [1, embed_dim]", out_fact.shape))),
        };
        if dim != bundle.embed_dim {
            return Err(Error::Manifest {
                path: bundle.dir.join(crate::bundle::MANIFEST_FILE),
                message: format!(
                    "key 'image.embed_dim': manifest says {} but {} outputs {dim} values",
                    bundle.embed_dim,
                    loaded.display()
                ),
            });
        }
        let plan = optimised.into_runnable().map_err(|e| model_err(&e))?;
        let state = TypedSimpleState::new(&plan).map_err(|e| model_err(&e))?;
        let load_timing = LoadTiming { optimise: t2.elapsed(), ..timing };
        log::info!(
            "loaded {} ({}{}) in {:.0} ms (read {:.0}, parse {:.0}, optimise {:.0})",
            loaded.display(),
            file.precision,
            if load_timing.from_nnef { ", NNEF" } else { "" },
            ms(load_timing.total()),
            ms(load_timing.read),
            ms(load_timing.parse),
            ms(load_timing.optimise)
        );
        Ok(ImageEncoder {
            path: loaded.to_path_buf(),
            precision: file.precision,
            embed_dim: dim,
            preprocessor: Preprocessor::new(bundle.preprocess.clone()),
            state,
            input: None,
            load_timing,
            int8,
            executor: Executor::SingleThread,
            threads: 1,
        })
    }

    /// The model file in use.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The precision of the model file in use.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Dimension of the embeddings produced.
    pub fn embed_dim(&self) -> usize {
        self.embed_dim
    }

    /// How long loading took.
    pub fn load_timing(&self) -> LoadTiming {
        self.load_timing
    }

    /// For the int8-compute form: how each weighted layer is computed.
    pub fn int8_report(&self) -> Option<&crate::int8::Int8Report> {
        self.int8.as_ref()
    }

    /// The names of tract's matrix-multiplication kernels in the optimised
    /// plan, with the accumulator type of each (`I32` for int8 products), sorted.
    pub fn matmul_kernels(&self) -> Vec<(String, DatumType)> {
        let mut kernels: Vec<(String, DatumType)> = self
            .state
            .model()
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<tract_core::ops::matmul::optimized::OptMatMul>())
            .flat_map(|op| op.mmm.iter().map(|m| (m.name().to_string(), m.internal_type())))
            .collect();
        kernels.sort_by(|a, b| a.0.cmp(&b.0));
        kernels.dedup();
        kernels
    }

    /// The preprocessor (for its geometry and spec).
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// Embeds one frame: preprocess, run, L2-normalise.
    pub fn encode(&mut self, frame: &RgbImage) -> Result<Embedding> {
        self.encode_timed(frame).map(|(e, _)| e)
    }

    /// Like [`Self::encode`], also returning the time of each stage.
    pub fn encode_timed(&mut self, frame: &RgbImage) -> Result<(Embedding, EncodeTiming)> {
        let t0 = Instant::now();
        let mut input = self.take_input()?;
        {
            let tensor = Arc::get_mut(&mut input).ok_or_else(|| self.infer_err("input buffer is shared"))?;
            let mut view = tensor.try_as_plain_ram_mut().map_err(|e| self.infer_err(e))?;
            let slice = view.as_slice_mut::<f32>().map_err(|e| self.infer_err(e))?;
            self.preprocessor.run(frame, slice);
        }
        let preprocess = t0.elapsed();
        let (embedding, infer) = self.run_input(input)?;
        Ok((embedding, EncodeTiming { preprocess, infer }))
    }

    /// Runs the model on an already preprocessed `1x3xSxS` tensor in CHW order.
    pub fn encode_tensor(&mut self, chw: &[f32]) -> Result<Embedding> {
        let expected = self.preprocessor.output_len();
        if chw.len() != expected {
            return Err(Error::Usage(format!(
                "input tensor has {} values, the model takes {expected}",
                chw.len()
            )));
        }
        let mut input = self.take_input()?;
        {
            let tensor = Arc::get_mut(&mut input).ok_or_else(|| self.infer_err("input buffer is shared"))?;
            let mut view = tensor.try_as_plain_ram_mut().map_err(|e| self.infer_err(e))?;
            view.as_slice_mut::<f32>().map_err(|e| self.infer_err(e))?.copy_from_slice(chw);
        }
        self.run_input(input).map(|(e, _)| e)
    }

    fn take_input(&mut self) -> Result<Arc<Tensor>> {
        match self.input.take() {
            Some(t) if Arc::strong_count(&t) == 1 => Ok(t),
            _ => {
                let s = self.preprocessor.spec().size as usize;
                let t = Tensor::zero::<f32>(&[1, 3, s, s]).map_err(|e| self.infer_err(e))?;
                Ok(Arc::new(t))
            }
        }
    }

    /// Runs matrix products on `threads` threads (a private pool; 1 runs them
    /// on the caller's thread, the default). Boards with 2-4 cores gain most
    /// on large models; see `docs/performance.md`.
    pub fn set_threads(&mut self, threads: usize) -> Result<()> {
        if threads > 1 && !HAS_THREAD_POOL {
            return Err(Error::Usage(format!(
                "threads {threads}: this build has no thread pool (built without the cargo feature `threads`); use 1"
            )));
        }
        if !(1..=MAX_THREADS).contains(&threads) {
            return Err(Error::Usage(format!("threads {threads} is out of range 1..={MAX_THREADS}")));
        }
        self.executor = if threads == 1 { Executor::SingleThread } else { thread_pool(threads)? };
        self.threads = threads;
        Ok(())
    }

    /// Threads used for matrix products.
    pub fn threads(&self) -> usize {
        self.threads
    }

    fn run_input(&mut self, input: Arc<Tensor>) -> Result<(Embedding, Duration)> {
        let t0 = Instant::now();
        #[cfg(feature = "threads")]
        if let Executor::MultiThread(pool) = &self.executor {
            let values = on_pool(pool, &self.executor, self.state.plan(), Arc::clone(&input))
                .map_err(|e| self.infer_err(e))?;
            let infer = t0.elapsed();
            self.input = Some(input);
            return self.embedding(values, infer);
        }
        let (state, executor) = (&mut self.state, self.executor.clone());
        let outputs =
            multithread_tract_scope(executor, || state.run(tvec![TValue::from_const(Arc::clone(&input))]))
                .map_err(|e| self.infer_err(e))?;
        let infer = t0.elapsed();
        // The state drops its reference to the input at the end of the run, so
        // the buffer is exclusive again and is refilled in place next time.
        self.input = Some(input);
        let out = outputs.first().ok_or_else(|| self.infer_err("model returned no output"))?;
        let view = out.try_as_plain_ram().map_err(|e| self.infer_err(e))?;
        let values = view.as_slice::<f32>().map_err(|e| self.infer_err(e))?;
        self.embedding(values.to_vec(), infer)
    }

    fn embedding(&self, values: Vec<f32>, infer: Duration) -> Result<(Embedding, Duration)> {
        if values.len() != self.embed_dim {
            return Err(self.infer_err(format!(
                "output has {} values, expected {}",
                values.len(),
                self.embed_dim
            )));
        }
        Ok((Embedding::normalised(values)?, infer))
    }

    fn infer_err(&self, e: impl std::fmt::Display) -> Error {
        Error::Inference { path: self.path.clone(), message: one_line(&e) }
    }
}

/// The bundle's ONNX encoder `file` (already read and checked: `bytes`, dropped once decoded) as a
/// typed tract model with the input fixed to `1x3xSxS` f32, before any
/// optimisation; int8 weight-only graphs come with their weights dequantised
/// to f32, except for `int8-compute`, whose weights stay as stored
/// ([`Fold::Stored`]) for the int8 rewrite.
pub fn typed_onnx(bundle: &Bundle, file: &EncoderFile, bytes: Vec<u8>) -> Result<TypedModel> {
    let fold = match file.precision {
        Precision::Int8Compute => Fold::Stored,
        _ => Fold::All,
    };
    typed_onnx_folding(bundle, file, bytes, fold)
}

/// [`typed_onnx`] with the int8 weights made into what `fold` says.
pub fn typed_onnx_folding(
    bundle: &Bundle,
    file: &EncoderFile,
    bytes: Vec<u8>,
    fold: Fold,
) -> Result<TypedModel> {
    let size = bundle.preprocess.size as usize;
    let model_err =
        |e: &dyn std::fmt::Display| Error::Model { path: file.path.clone(), message: one_line(e) };
    let (mut model, folded) = crate::dequant::load_onnx(bytes, fold)
        .map_err(|e| model_err(&format!("not a readable ONNX model: {e:#}")))?;
    if folded > 0 {
        log::debug!("{}: {folded} int8 weights dequantised to f32 at load", file.path.display());
    }
    let inputs = model.input_outlets().map_err(|e| model_err(&e))?.len();
    let outputs = model.output_outlets().map_err(|e| model_err(&e))?.len();
    if inputs != 1 || outputs < 1 {
        return Err(model_err(&format!(
            "an image encoder takes exactly one input and gives one output; this graph has {inputs} input(s) and {outputs} output(s)"
        )));
    }
    let batch = batch_symbol(&model, 4);
    let first = batch.clone().map(TDim::Sym).unwrap_or_else(|| 1.into());
    let shape: [TDim; 4] = [first, 3.into(), size.into(), size.into()];
    model.set_input_fact(0, f32::fact(&shape).into()).map_err(|e| model_err(&e))?;
    let typed = model
        .into_typed()
        .map_err(|e| model_err(&format!("graph does not accept a 1x3x{size}x{size} f32 image: {e:#}")))?;
    fix_batch(typed, batch).map_err(|e| model_err(&e))
}

/// Milliseconds as a float, for logs and reports.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
