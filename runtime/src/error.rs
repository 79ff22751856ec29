//! Typed errors of the runtime.
//!
//! Every variant names the file it concerns, so a one-line rendering of the
//! error is enough for a field engineer. [`Error::kind`] groups the variants
//! into what a caller can act on (retry a frame, reject an input, give up on
//! a model or a store).

use std::path::{Path, PathBuf};

/// What a caller can do about an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The bundle manifest or a model file is missing, corrupt or inconsistent: give up on this model.
    Model,
    /// The prompt store is missing, corrupt, or built for another model: give up on this store.
    Store,
    /// An input image could not be read or decoded: skip it, the next frame may be fine.
    Image,
    /// A request that does not fit the loaded model or store (wrong dimension, bad argument).
    Usage,
    /// An operating-system I/O failure on a path (permissions, disk full): may be retried.
    Io,
}

/// Errors returned by the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed at the operating-system level.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The bundle manifest (`bundle.toml`) cannot be parsed or has an invalid value.
    #[error("{path}: {message}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A model file does not match the checksum the manifest records.
    #[error("{path}: sha256 mismatch: manifest says {expected}, file is {actual} (corrupt or replaced model file)")]
    Checksum {
        /// The model file.
        path: PathBuf,
        /// The checksum recorded in the manifest.
        expected: String,
        /// The checksum of the file on disk.
        actual: String,
    },
    /// tract could not load, type or optimise the model graph.
    #[error("{path}: cannot load model: {message}")]
    Model {
        /// The model file.
        path: PathBuf,
        /// tract's explanation, flattened to one line.
        message: String,
    },
    /// Running the model failed.
    #[error("{path}: inference failed: {message}")]
    Inference {
        /// The model file.
        path: PathBuf,
        /// tract's explanation, flattened to one line.
        message: String,
    },
    /// The prompt store is malformed, truncated, corrupted or of an unsupported version.
    #[error("{path}: invalid prompt store: {message}")]
    Store {
        /// The store file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The prompt store was built for a different model than the one loaded.
    #[error("{path}: prompt store was built for model {store} but the bundle's model is {bundle}; rebuild the store for this bundle")]
    StoreModelMismatch {
        /// The store file.
        path: PathBuf,
        /// Fingerprint recorded in the store (hex).
        store: String,
        /// Fingerprint of the loaded bundle (hex).
        bundle: String,
    },
    /// An image could not be decoded or exceeds the configured limits.
    #[error("{path}: cannot read image: {message}")]
    Image {
        /// The image file (or a description of the frame source).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A request does not fit the loaded model or store.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// The category of this error, for callers that decide between retrying and giving up.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } => ErrorKind::Io,
            Error::Manifest { .. }
            | Error::Checksum { .. }
            | Error::Model { .. }
            | Error::Inference { .. } => ErrorKind::Model,
            Error::Store { .. } | Error::StoreModelMismatch { .. } => ErrorKind::Store,
            Error::Image { .. } => ErrorKind::Image,
            Error::Usage(_) => ErrorKind::Usage,
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }

    pub(crate) fn manifest(path: &Path, message: impl Into<String>) -> Self {
        Error::Manifest { path: path.to_path_buf(), message: message.into() }
    }

    pub(crate) fn store(path: &Path, message: impl Into<String>) -> Self {
        Error::Store { path: path.to_path_buf(), message: message.into() }
    }

    pub(crate) fn image(path: &Path, message: impl Into<String>) -> Self {
        Error::Image { path: path.to_path_buf(), message: message.into() }
    }
}

/// Flattens an error chain (as tract's `anyhow` errors carry) into one line.
pub fn one_line(err: &dyn std::fmt::Display) -> String {
    let text = format!("{err:#}");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The runtime's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
