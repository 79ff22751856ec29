//! Host-side tools of clip-edge: the `clip-edge` command line (classify,
//! embed, prompt stores). Host only: nothing here runs on the device.

pub mod cli;
pub mod cmd;
pub mod labels;
pub mod nnef_convert;
pub mod prompt_build;
pub mod rng;
pub mod templates;
pub mod text;
