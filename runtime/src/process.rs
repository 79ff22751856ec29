//! Process-level behaviour shared by the `clip-edge` and `clip-edge-board`
//! binaries: how they write to stdout and how a failure becomes a message and
//! an exit status.

use std::error::Error as StdError;
use std::io::Write;
use std::process::ExitCode;

/// Exit status of a process ended by a closed pipe (128 + SIGPIPE), as a shell reports it.
pub const BROKEN_PIPE_STATUS: u8 = 141;

/// Writes `line` and a newline to stdout and flushes. A closed pipe
/// (`clip-edge ... | head`) comes back as an error of kind
/// [`std::io::ErrorKind::BrokenPipe`], which [`failure`] turns into a quiet exit;
/// `println!` would panic instead, since Rust ignores SIGPIPE.
pub fn print_line(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// Whether `err` or one of its causes is a closed pipe.
pub fn is_broken_pipe(err: &(dyn StdError + 'static)) -> bool {
    chain(err).any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes joined by `": "`, each cause once: a cause whose
/// text its parent already quotes (`"{path}: {source}"`) is not repeated.
pub fn describe(err: &(dyn StdError + 'static)) -> String {
    let mut message = String::new();
    for e in chain(err) {
        let text = e.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

/// Ends a failed command: a closed stdout exits quietly with
/// [`BROKEN_PIPE_STATUS`]; anything else prints `error: ` and [`describe`]'s
/// text on stderr and exits with status 1.
pub fn failure(err: &(dyn StdError + 'static)) -> ExitCode {
    if is_broken_pipe(err) {
        return ExitCode::from(BROKEN_PIPE_STATUS);
    }
    eprintln!("error: {}", describe(err));
    ExitCode::FAILURE
}

fn chain<'a>(err: &'a (dyn StdError + 'static)) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |e: &&'a (dyn StdError + 'static)| (*e).source())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: {source}")]
    struct Quoting {
        path: &'static str,
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot load the bundle")]
    struct Outer(#[source] Quoting);

    #[test]
    fn a_quoted_cause_is_printed_once() {
        let inner =
            Quoting { path: "/x/bundle.toml", source: std::io::Error::from(std::io::ErrorKind::NotFound) };
        let err = Outer(inner);
        assert_eq!(describe(&err), "cannot load the bundle: /x/bundle.toml: entity not found");
    }

    #[test]
    fn a_closed_pipe_is_found_anywhere_in_the_chain() {
        let pipe = Quoting { path: "stdout", source: std::io::Error::from(std::io::ErrorKind::BrokenPipe) };
        assert!(is_broken_pipe(&Outer(pipe)));
        let full = Quoting { path: "stdout", source: std::io::Error::from(std::io::ErrorKind::StorageFull) };
        assert!(!is_broken_pipe(&Outer(full)));
    }
}
