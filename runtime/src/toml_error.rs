//! The project's one rendering of what the TOML reader reports about a file
//! (bundle manifests, the daemon's configuration, labels files):
//! `line N col M: key 'table.key': message`, the key given when the text shows
//! which one the error is about. Callers put the file name in front.

use std::fmt;
use std::ops::Range;

/// A TOML read error placed in its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlErrorAt {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The dotted key the error is about, when the text shows it.
    pub key: Option<String>,
    /// The reader's message, on one line.
    pub message: String,
}

impl TomlErrorAt {
    /// Places `e`, an error from reading `text`, in that text.
    pub fn new(text: &str, e: &toml::de::Error) -> TomlErrorAt {
        let message =
            e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
        let (at, key) = e.span().map_or((0, None), |span| locate(text, span, &message));
        let before = &text[..at];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        TomlErrorAt { line, column, key, message }
    }
}

impl fmt::Display for TomlErrorAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} col {}: ", self.line, self.column)?;
        if let Some(key) = &self.key {
            write!(f, "key '{key}': ")?;
        }
        f.write_str(&self.message)
    }
}

/// Where an error is in `text`, and the dotted key it concerns. The reader
/// reports a key's or a value's own span, except in tagged tables (trigger,
/// camera, enrolment button), which serde reads whole: their errors span the
/// table, and the key is the one the message quotes (an unknown or missing
/// field), or the one whose value it quotes.
fn locate(text: &str, span: Range<usize>, message: &str) -> (usize, Option<String>) {
    let boundary = |i: usize| (0..=i.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    let start = boundary(span.start);
    let rest = &text[start..];
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let is_header = rest.starts_with('[') && text[line_start..start].trim().is_empty();
    if !is_header || span.end <= span.start {
        return (start, key_at(text, start));
    }
    let table = table_path(text, start);
    let quoted = message.split(['`', '"']).nth(1).unwrap_or_default();
    let names_field =
        ["unknown field", "missing field", "duplicate field"].iter().any(|p| message.starts_with(p));
    let end = boundary(span.end).max(start);
    let mut at = start;
    for line in text[start..end].split_inclusive('\n') {
        if let Some((k, v)) = line.split_once('=') {
            let (k, v) = (k.trim(), value_text(v));
            if !quoted.is_empty() && (if names_field { k == quoted } else { v == quoted }) {
                return (at + line.len() - line.trim_start().len(), Some(format!("{table}.{k}")));
            }
        }
        at += line.len();
    }
    let missing = message.starts_with("missing field") && !quoted.is_empty();
    (start, missing.then(|| format!("{table}.{quoted}")))
}

/// The dotted key of the `key = value` line holding `at`, if it is one.
fn key_at(text: &str, at: usize) -> Option<String> {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let (key, _) = text[line_start..].lines().next()?.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || key.starts_with(['[', '#']) {
        return None;
    }
    Some(match header_before(text, line_start) {
        Some(h) => format!("{}.{key}", table_path(text, h)),
        None => key.to_string(),
    })
}

/// Where the nearest table header above the line starting at `line_start` starts.
fn header_before(text: &str, line_start: usize) -> Option<usize> {
    let mut pos = line_start;
    while pos > 0 {
        let start = text[..pos - 1].rfind('\n').map_or(0, |i| i + 1);
        let line = &text[start..pos - 1];
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            return Some(start + line.len() - trimmed.len());
        }
        pos = start;
    }
    None
}

/// The dotted path of the table whose header starts at `at`: `trigger` for
/// `[trigger]`, `image.encoder[1]` for the second `[[image.encoder]]`.
fn table_path(text: &str, at: usize) -> String {
    let header = &text[at..];
    let name = header_name(header);
    if !header.starts_with("[[") {
        return name.to_string();
    }
    let index = text[..at]
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("[[") && header_name(l) == name)
        .count();
    format!("{name}[{index}]")
}

/// `trigger` for `[trigger]`, `enroll.button` for `[enroll.button]  # comment`.
fn header_name(header: &str) -> &str {
    header.trim_start_matches('[').split(']').next().unwrap_or_default().trim()
}

/// A value as written, without quotes or a trailing comment.
fn value_text(v: &str) -> &str {
    let v = v.trim_start();
    match v.strip_prefix('"') {
        Some(s) => s.split('"').next().unwrap_or_default(),
        None => v.split('#').next().unwrap_or_default().trim(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct File {
        image: Image,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Image {
        size: u32,
        #[serde(default)]
        encoder: Vec<Encoder>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Encoder {
        file: String,
    }

    fn at(text: &str) -> TomlErrorAt {
        TomlErrorAt::new(text, &toml::from_str::<File>(text).expect_err("bad"))
    }

    #[test]
    fn names_line_column_and_key() {
        let e = at("[image]\nsize = \"big\"\n");
        assert_eq!((e.line, e.column, e.key.as_deref()), (2, 8, Some("image.size")));
        assert!(e.to_string().starts_with("line 2 col 8: key 'image.size': invalid type"), "{e}");
        let e = at("[image]\nsize = 3\nsise = 4\n");
        assert_eq!((e.line, e.key.as_deref()), (3, Some("image.sise")));
        let e = at("[image]\nsize = [224]\n");
        assert_eq!((e.line, e.column, e.key.as_deref()), (2, 8, Some("image.size")), "{e}");
        let e = at("[image]\nsize = 3\n[[image.encoder]]\nfile = [\"a\"]\n");
        assert_eq!((e.line, e.key.as_deref()), (4, Some("image.encoder[0].file")), "{e}");
        let e = at("[image]\nsize = 3\n[[image.encoder]]\nfile = \"a\"\n[[image.encoder]]\nfile = 2\n");
        assert_eq!((e.line, e.key.as_deref()), (6, Some("image.encoder[1].file")), "{e}");
        let e = at("[image]\nsize = \n");
        assert_eq!((e.line, e.key.as_deref()), (2, Some("image.size")));
        assert!(e.to_string().starts_with("line 2 col "), "{e}");
    }
}
