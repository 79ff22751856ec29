//! Process-level behaviour shared by the `clip-edge` and `clip-edge-board` binaries.

/// Exit status of a process ended by a closed pipe (128 + SIGPIPE), as a shell reports it.
pub const BROKEN_PIPE_STATUS: i32 = 141;

/// Makes a write to a closed stdout (`clip-edge ... | head`) end the process
/// quietly with [`BROKEN_PIPE_STATUS`] instead of a panic and backtrace.
/// Rust ignores SIGPIPE, so `println!` panics on `EPIPE`; this installs a panic
/// hook that recognises exactly that panic and passes every other one on.
pub fn exit_quietly_on_broken_pipe() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if is_broken_pipe_panic(message) {
            std::process::exit(BROKEN_PIPE_STATUS);
        }
        previous(info)
    }));
}

fn is_broken_pipe_panic(message: &str) -> bool {
    message.starts_with("failed printing to stdout") && message.contains("os error 32")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_stdout_broken_pipe_panic_is_recognised() {
        assert!(is_broken_pipe_panic("failed printing to stdout: Broken pipe (os error 32)"));
        assert!(!is_broken_pipe_panic("failed printing to stdout: No space left on device (os error 28)"));
        assert!(!is_broken_pipe_panic("index out of bounds"));
    }
}
