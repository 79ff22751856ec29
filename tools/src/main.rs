//! `clip-edge`: the host command-line tool.

use std::process::ExitCode;

fn main() -> ExitCode {
    clip_edge_tools::cli::main()
}
