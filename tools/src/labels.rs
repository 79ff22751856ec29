//! The labels file (TOML) that `clip-edge prompts build` reads.
//!
//! ```toml
//! templates = ["a photo of a {}.", "a blurry photo of a {}."]   # or "default" / "imagenet7" / "imagenet"
//! [[class]]
//! name = "dog"
//! descriptions = ["a dog face", "a puppy"]     # optional, used verbatim
//! [[background]]
//! name = "nothing"
//! descriptions = ["an empty room", "a plain wall"]
//! ```
//!
//! A class's prompts are every template filled with its name, plus its
//! descriptions verbatim. A background's prompts are its descriptions, or the
//! templates filled with its name when it has none.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use clip_edge_runtime::store::EntryKind;
use clip_edge_runtime::toml_error::TomlErrorAt;
use serde::Deserialize;

use crate::templates;

/// Errors in a labels file; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The labels file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax or type error, with its position.
    #[error("{path}: {at}")]
    Syntax {
        /// The labels file.
        path: PathBuf,
        /// Where in the file, the key and the reader's message.
        at: TomlErrorAt,
    },
    /// Well-formed TOML with an invalid value.
    #[error("{path}: {message}")]
    Invalid {
        /// The labels file.
        path: PathBuf,
        /// What is wrong, naming the entry.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    templates: Option<RawTemplates>,
    #[serde(default)]
    class: Vec<RawEntry>,
    #[serde(default)]
    background: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawTemplates {
    Named(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    #[serde(default)]
    descriptions: Vec<String>,
}

/// One label with the prompts that are averaged into its embedding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelEntry {
    /// The label.
    pub name: String,
    /// Class or background.
    pub kind: EntryKind,
    /// Prompts, in order, without duplicates.
    pub prompts: Vec<String>,
}

/// A validated labels file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSet {
    /// Templates applied to names (each holds `{}` once).
    pub templates: Vec<String>,
    /// Classes first, then backgrounds, in file order.
    pub entries: Vec<LabelEntry>,
}

impl LabelSet {
    /// Reads and validates a labels file. `default_templates` is used when the file names none.
    pub fn load(path: &Path, default_templates: &[&str]) -> Result<LabelSet, LabelsError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| LabelsError::Io { path: path.into(), source })?;
        Self::parse(path, &text, default_templates)
    }

    /// Parses labels-file text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str, default_templates: &[&str]) -> Result<LabelSet, LabelsError> {
        let raw: Raw = toml::from_str(text)
            .map_err(|e| LabelsError::Syntax { path: path.into(), at: TomlErrorAt::new(text, &e) })?;
        let invalid = |message: String| LabelsError::Invalid { path: path.into(), message };
        let templates: Vec<String> = match raw.templates {
            None => default_templates.iter().map(|s| s.to_string()).collect(),
            Some(RawTemplates::Named(n)) => templates::named(&n)
                .ok_or_else(|| {
                    invalid(format!(
                        "templates = \"{n}\" is not a known set (default, imagenet7, imagenet) or a list"
                    ))
                })?
                .iter()
                .map(|s| s.to_string())
                .collect(),
            Some(RawTemplates::List(l)) => l,
        };
        if templates.is_empty() {
            return Err(invalid("templates: the list is empty".into()));
        }
        for t in &templates {
            if t.matches("{}").count() != 1 {
                return Err(invalid(format!("template {t:?} must contain {{}} exactly once")));
            }
        }
        if raw.class.is_empty() {
            return Err(invalid("no [[class]] entries: a store needs at least one class".into()));
        }
        let mut seen = HashSet::new();
        let mut entries = Vec::new();
        let all = raw
            .class
            .into_iter()
            .map(|e| (e, EntryKind::Class))
            .chain(raw.background.into_iter().map(|e| (e, EntryKind::Background)));
        for (i, (e, kind)) in all.enumerate() {
            let name = e.name.trim().to_string();
            let what = if kind == EntryKind::Class { "class" } else { "background" };
            if name.is_empty() {
                return Err(invalid(format!("{what} entry {} has an empty name", i + 1)));
            }
            if !seen.insert(name.to_lowercase()) {
                return Err(invalid(format!(
                    "label '{name}' is given twice (names are compared ignoring case)"
                )));
            }
            if let Some(d) = e.descriptions.iter().find(|d| d.trim().is_empty()) {
                return Err(invalid(format!("{what} '{name}' has an empty description {d:?}")));
            }
            let mut prompts: Vec<String> = Vec::new();
            let from_templates = kind == EntryKind::Class || e.descriptions.is_empty();
            let filled = templates.iter().filter(|_| from_templates).map(|t| t.replacen("{}", &name, 1));
            for p in filled.chain(e.descriptions.iter().map(|d| d.trim().to_string())) {
                if !prompts.contains(&p) {
                    prompts.push(p);
                }
            }
            entries.push(LabelEntry { name, kind, prompts });
        }
        Ok(LabelSet { templates, entries })
    }

    /// Classes named only by `names`, each prompted with every template
    /// (what `clip-edge eval` uses when a data folder's subfolders are the classes).
    pub fn from_names(names: &[String], templates: &[&str]) -> LabelSet {
        let entries = names
            .iter()
            .map(|name| LabelEntry {
                name: name.clone(),
                kind: EntryKind::Class,
                prompts: templates.iter().map(|t| t.replacen("{}", name, 1)).collect(),
            })
            .collect();
        LabelSet { templates: templates.iter().map(|t| t.to_string()).collect(), entries }
    }

    /// Total number of prompts.
    pub fn prompt_count(&self) -> usize {
        self.entries.iter().map(|e| e.prompts.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LabelSet, LabelsError> {
        LabelSet::parse(Path::new("labels.toml"), text, templates::DEFAULT)
    }

    #[test]
    fn the_documented_form_parses() {
        let s = parse(include_str!("../tests/fixtures/two_classes.labels.toml")).expect("valid");
        assert_eq!(s.entries.len(), 3);
        assert_eq!(
            s.entries[0].prompts,
            vec!["a photo of a dog.", "a blurry photo of a dog.", "a dog face", "a puppy"]
        );
        assert_eq!(s.entries[1].prompts.len(), 2);
        assert_eq!(s.entries[2].kind, EntryKind::Background);
        assert_eq!(s.entries[2].prompts, vec!["an empty room", "a plain wall"]);
        assert_eq!(s.prompt_count(), 8);
    }

    #[test]
    fn defaults_and_named_sets() {
        let s = parse("[[class]]\nname = \"cat\"\n[[background]]\nname = \"wall\"").expect("valid");
        assert_eq!(s.templates.len(), templates::DEFAULT.len());
        assert_eq!(s.entries[1].prompts.len(), templates::DEFAULT.len());
        let s = parse("templates = \"imagenet\"\n[[class]]\nname = \"cat\"").expect("valid");
        assert_eq!(s.entries[0].prompts.len(), 80);
    }

    #[test]
    fn errors_name_the_problem() {
        let cases = [
            ("[[class]]\nname = \"cat\"\nname2 = 1\n[[class\n", "labels.toml: line 4 col "),
            ("[[class]]\nname = \"\"", "class entry 1 has an empty name"),
            ("[[class]]\nname = \"cat\"\n[[class]]\nname = \"Cat\"", "label 'Cat' is given twice"),
            ("[[class]]\nname = \"cat\"\n[[background]]\nname = \"cat\"", "label 'cat' is given twice"),
            ("templates = [\"a photo\"]\n[[class]]\nname = \"cat\"", "must contain {} exactly once"),
            ("templates = [\"{} {}\"]\n[[class]]\nname = \"cat\"", "must contain {} exactly once"),
            ("templates = []\n[[class]]\nname = \"cat\"", "the list is empty"),
            ("templates = \"fancy\"\n[[class]]\nname = \"cat\"", "not a known set"),
            ("[[background]]\nname = \"wall\"", "no [[class]] entries"),
            ("[[class]]\nname = \"cat\"\ndescriptions = [\" \"]", "empty description"),
            ("[[class]]\nname = \"cat\"\ncolour = \"red\"", "unknown field `colour`"),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(want).to_string();
            assert!(err.starts_with("labels.toml"), "{err}");
            assert!(err.contains(want), "want {want:?} in: {err}");
        }
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        match parse("[[class]]\nname = \"cat\"\nname = oops\n") {
            Err(LabelsError::Syntax { at, .. }) => {
                assert_eq!((at.line, at.column, at.key.as_deref()), (3, 8, Some("class[0].name")))
            }
            other => panic!("{other:?}"),
        }
    }
}
