//! `clip-edge`: the host command-line tool. Argument parsing is in `cli`,
//! one module per command in `cmd`; the work itself is in the library.

mod cli;
mod cmd;

fn main() -> std::process::ExitCode {
    cli::main()
}
