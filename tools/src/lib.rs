//! Host-side tools of clip-edge: the library behind the `clip-edge` command
//! (prompt stores from labels files, the text encoder, NNEF conversion, data
//! folders, reports). Host only: nothing here runs on the device. Every module
//! returns a typed error; the command line itself (`cli`, `cmd`, in the
//! binary) adds context with `anyhow`.

pub mod dataset;
pub mod labels;
pub mod nnef_convert;
pub mod prompt_build;
pub mod report;
pub mod rng;
pub mod templates;
pub mod text;
