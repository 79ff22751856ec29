//! Building a prompt store from a labels file: tokenize, run the text
//! encoder, average each entry's normalised prompt embeddings (prompt
//! ensembling, as in the CLIP paper), apply the bundle's seen/unseen
//! calibration, and assemble the store.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clip_edge_runtime::bundle::Calibration;
use clip_edge_runtime::store::{ElementType, EntryKind, StoreBuilder, StoreMeta};
use clip_edge_runtime::Bundle;

use crate::labels::LabelSet;
use crate::text::{TextEncoder, TextError, Tokens};

/// Errors of a build; the output file is never touched when one occurs.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Loading or running the text side failed.
    #[error(transparent)]
    Text(#[from] TextError),
    /// Prompts longer than the context while truncation is not allowed.
    #[error("{count} prompt(s) are longer than the {context}-token context, e.g. {example:?}; shorten them or allow truncation")]
    TooLong {
        /// How many prompts.
        count: usize,
        /// The context length.
        context: usize,
        /// The first one.
        example: String,
    },
    /// The store could not be assembled.
    #[error(transparent)]
    Store(#[from] clip_edge_runtime::Error),
}

/// Options of a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildOptions {
    /// Element type of the stored embeddings.
    pub element: ElementType,
    /// Fail instead of truncating prompts longer than the context.
    pub fail_on_truncation: bool,
    /// Record the build time in the metadata (the file is then not reproducible byte for byte).
    pub stamp: bool,
    /// Apply the bundle's seen/unseen calibration (`[text.calibration]`), if it has one.
    pub calibrate: bool,
    /// Threads that run the text encoder (at least 1); the result does not depend on it.
    pub threads: usize,
}

/// What a build did.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildReport {
    /// Per entry: label and number of prompts averaged.
    pub entries: Vec<(String, usize)>,
    /// Prompts that were cut to the context length.
    pub truncated: Vec<String>,
    /// Time spent loading the text encoder.
    pub load: Duration,
    /// Time spent embedding prompts.
    pub embed: Duration,
    /// The calibration bonus applied, and the classes it went to (names not
    /// among the bundle's training concepts); `None` when not calibrated.
    pub calibration: Option<(f32, Vec<String>)>,
}

/// Embeds every prompt of `labels` with the bundle's text encoder and returns
/// the assembled store. `progress(done, total)` is called after each prompt.
pub fn build_store(
    bundle: &Bundle,
    labels: &LabelSet,
    opts: BuildOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<(StoreBuilder, BuildReport), BuildError> {
    let t0 = Instant::now();
    let encoder = TextEncoder::load(bundle)?;
    let load = t0.elapsed();
    let context = encoder.tokenizer().context_length();

    let mut too_long = Vec::new();
    let mut tokenized = Vec::with_capacity(labels.entries.len());
    for e in &labels.entries {
        let mut toks = Vec::with_capacity(e.prompts.len());
        for p in &e.prompts {
            let t = encoder.tokenizer().encode(p)?;
            if t.truncated {
                too_long.push(p.clone());
            }
            toks.push(t);
        }
        tokenized.push(toks);
    }
    if opts.fail_on_truncation && !too_long.is_empty() {
        return Err(BuildError::TooLong { count: too_long.len(), context, example: too_long[0].clone() });
    }

    let calibration = match bundle.text.as_ref().and_then(|t| t.calibration.as_ref()) {
        Some(c) if opts.calibrate => {
            let seen = c.load_seen_names()?;
            let unseen: Vec<String> = labels
                .entries
                .iter()
                .filter(|e| e.kind == EntryKind::Class && !seen.contains(&Calibration::normalise(&e.name)))
                .map(|e| e.name.clone())
                .collect();
            Some((c.unseen_bonus, unseen))
        }
        _ => None,
    };

    let t1 = Instant::now();
    let jobs: Vec<&Tokens> = tokenized.iter().flatten().collect();
    let units = embed_all(&encoder, &jobs, opts.threads, &mut progress)?;
    let meta = StoreMeta {
        tool: format!("clip-edge {} prompts build", env!("CARGO_PKG_VERSION")),
        templates: labels.templates.clone(),
        prompts_per_entry: labels.entries.iter().map(|e| e.prompts.len() as u32).collect(),
        built_at: opts.stamp.then(|| clip_edge_runtime::store::rfc3339(clip_edge_runtime::store::unix_ms())),
        note: None,
        similarity_offsets: Vec::new(),
    };
    let mut builder =
        StoreBuilder::new(bundle.embed_dim, bundle.fingerprint, bundle.logit_scale, opts.element).meta(meta);
    let mut entries = Vec::with_capacity(labels.entries.len());
    let mut units = units.iter();
    for (e, toks) in labels.entries.iter().zip(&tokenized) {
        let mut sum = vec![0f32; encoder.dim()];
        for unit in units.by_ref().take(toks.len()) {
            sum.iter_mut().zip(unit.as_slice()).for_each(|(s, v)| *s += v);
        }
        builder.push(&e.name, e.kind, &sum)?;
        entries.push((e.name.clone(), toks.len()));
    }
    if let Some((bonus, unseen)) = &calibration {
        let offsets =
            labels.entries.iter().map(|e| if unseen.contains(&e.name) { *bonus } else { 0.0 }).collect();
        builder.set_similarity_offsets(offsets)?;
    }
    Ok((builder, BuildReport { entries, truncated: too_long, load, embed: t1.elapsed(), calibration }))
}

/// Text-encoder threads used when none are asked for: the CPUs this process may use, at most 8.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(8)
}

/// Unit embeddings of `jobs`, in order, computed on `threads` threads that
/// share `encoder`'s plan and take prompts one at a time; `progress(done,
/// total)` is called on this thread as they finish. The first error stops the rest.
fn embed_all(
    encoder: &TextEncoder,
    jobs: &[&Tokens],
    threads: usize,
    progress: &mut impl FnMut(usize, usize),
) -> Result<Vec<clip_edge_runtime::Embedding>, BuildError> {
    let threads = threads.clamp(1, jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut out: Vec<Option<clip_edge_runtime::Embedding>> = vec![None; jobs.len()];
    std::thread::scope(|scope| -> Result<(), BuildError> {
        let (tx, rx) = mpsc::channel::<(usize, Result<clip_edge_runtime::Embedding, BuildError>)>();
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, stop) = (&next, &stop);
            let forked = encoder.fork();
            scope.spawn(move || {
                let mut enc = match forked {
                    Ok(enc) => enc,
                    Err(e) => return drop(tx.send((0, Err(e.into())))),
                };
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(tokens) = jobs.get(i) else { break };
                    let unit = enc.run_tokens(tokens).map_err(BuildError::from).and_then(|raw| {
                        clip_edge_runtime::Embedding::normalised(raw).map_err(BuildError::from)
                    });
                    if tx.send((i, unit)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (done, (i, unit)) in rx.iter().enumerate() {
            match unit {
                Ok(unit) => out[i] = Some(unit),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
            progress(done + 1, jobs.len());
        }
        Ok(())
    })?;
    Ok(out.into_iter().flatten().collect())
}
