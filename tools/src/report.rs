//! What every command shares: one typed report rendered as text or JSON,
//! progress lines on stderr, and the rounding of times in reports.

use std::fmt::Display;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How a command prints its report on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For people: the report's `Display`.
    Text,
    /// One line of JSON (`--json`), for scripts.
    Json,
    /// Indented JSON, for reports meant to be read as JSON too.
    PrettyJson,
}

impl Format {
    /// `Json` when `json` is set, else `Text`.
    pub fn from_flag(json: bool) -> Format {
        if json {
            Format::Json
        } else {
            Format::Text
        }
    }

    /// The report as it is printed (no trailing newline for JSON; text as
    /// `Display` writes it).
    pub fn render<R: Serialize + Display>(self, report: &R) -> Result<String, serde_json::Error> {
        Ok(match self {
            Format::Text => report.to_string(),
            Format::Json => serde_json::to_string(report)?,
            Format::PrettyJson => serde_json::to_string_pretty(report)?,
        })
    }

    /// Prints the report on stdout, ending with one newline.
    /// Nothing is printed for an empty text. A closed stdout is an error of
    /// kind `BrokenPipe` (see [`clip_edge_runtime::process::failure`]).
    pub fn print<R: Serialize + Display>(self, report: &R) -> std::io::Result<()> {
        let text = self.render(report)?;
        let text = text.trim_end_matches('\n');
        if text.is_empty() {
            return Ok(());
        }
        clip_edge_runtime::process::print_line(text)
    }
}

pub use clip_edge_runtime::round3;

/// A duration in milliseconds, rounded to the microsecond.
pub fn ms(d: Duration) -> f64 {
    round3(d.as_secs_f64() * 1e3)
}

/// Progress of long work on stderr: about ten lines (at every tenth and at
/// the end), with elapsed time and an estimate of what is left; silent for
/// short work (under `min_total` items) or when asked to be quiet.
#[derive(Debug)]
pub struct Progress {
    what: &'static str,
    unit: &'static str,
    total: usize,
    step: usize,
    shown: bool,
    started: Instant,
}

impl Progress {
    /// Work of `total` `unit`s (e.g. "images") described as `what`; lines
    /// are shown when `show` is set and `total` is at least `min_total`.
    pub fn new(
        what: &'static str,
        unit: &'static str,
        total: usize,
        min_total: usize,
        show: bool,
    ) -> Progress {
        Progress {
            what,
            unit,
            total,
            step: (total / 10).max(1),
            shown: show && total >= min_total,
            started: Instant::now(),
        }
    }

    /// The line for `done` items, if one is due.
    pub fn line(&self, done: usize) -> Option<String> {
        if !self.shown || done == 0 || (!done.is_multiple_of(self.step) && done != self.total) {
            return None;
        }
        let secs = self.started.elapsed().as_secs_f64();
        let left = secs / done as f64 * self.total.saturating_sub(done) as f64;
        Some(format!(
            "{}: {done}/{} {} ({:.0}%), {secs:.1} s, ~{left:.0} s left",
            self.what,
            self.total,
            self.unit,
            100.0 * done as f64 / self.total.max(1) as f64
        ))
    }

    /// Prints the line for `done` items on stderr, if one is due.
    pub fn tick(&self, done: usize) {
        if let Some(line) = self.line(done) {
            eprintln!("{line}");
        }
    }

    /// Time since the work started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct R {
        n: u32,
    }

    impl Display for R {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            writeln!(f, "n is {}", self.n)
        }
    }

    #[test]
    fn one_report_two_renderings() {
        let r = R { n: 3 };
        assert_eq!(Format::Text.render(&r).expect("text"), "n is 3\n");
        assert_eq!(Format::from_flag(true).render(&r).expect("json"), r#"{"n":3}"#);
        assert_eq!(Format::PrettyJson.render(&r).expect("json"), "{\n  \"n\": 3\n}");
    }

    #[test]
    fn rounds_to_the_microsecond() {
        assert_eq!(ms(Duration::from_nanos(1_234_567)), 1.235);
        assert_eq!(round3(0.1 + 0.2), 0.3);
    }

    #[test]
    fn progress_every_tenth_and_at_the_end_only_for_long_work() {
        let p = Progress::new("embedding", "images", 95, 50, true);
        let shown: Vec<usize> = (1..=95).filter(|&d| p.line(d).is_some()).collect();
        assert_eq!(shown, [9, 18, 27, 36, 45, 54, 63, 72, 81, 90, 95]);
        let line = p.line(95).expect("last line");
        assert!(line.starts_with("embedding: 95/95 images (100%), "), "{line}");
        assert!(Progress::new("x", "y", 49, 50, true).line(49).is_none());
        assert!(Progress::new("x", "y", 500, 50, false).line(500).is_none());
    }
}
