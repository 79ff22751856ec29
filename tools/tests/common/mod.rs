//! Helpers of the `clip-edge` command-line tests: the binary, the emoji
//! bundle (models/emoji), test images and the checks every failure must pass.

#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clip_edge_runtime::store::{ElementType, EntryKind, StoreBuilder};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("root").to_path_buf()
}

pub fn bundle() -> PathBuf {
    root().join("models/emoji")
}

pub fn image(name: &str) -> PathBuf {
    root().join("tests/data/images").join(name)
}

pub fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clip-edge"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run clip-edge")
}

/// `&[&OsStr]` from string-like arguments.
#[macro_export]
macro_rules! args {
    ($($a:expr),* $(,)?) => { &[$(std::ffi::OsStr::new($a)),*] };
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failed run: exit code 1, no panic, and an `error:` line naming `file` and `what`.
pub fn assert_clean_failure(o: &Output, file: &str, what: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error:") && l.contains(file))
        .unwrap_or_else(|| panic!("no error line naming {file}: {err}"));
    assert!(line.contains(what), "'{what}' missing from: {line}");
    assert!(line.matches("(os error").count() <= 1, "a cause printed twice: {line}");
}

pub fn store_bytes(fingerprint: [u8; 32], dim: usize) -> Vec<u8> {
    let mut b = StoreBuilder::new(dim, fingerprint, 100.0, ElementType::F32);
    let mut v = vec![0f32; dim];
    v[0] = 1.0;
    b.push("a", EntryKind::Class, &v).expect("a");
    v[1] = 1.0;
    b.push("b", EntryKind::Class, &v).expect("b");
    b.to_bytes().expect("bytes")
}

/// `clip-edge classify --json --bundle models/emoji` with `rest` after it.
pub fn classify_json(rest: &[&std::ffi::OsStr]) -> Output {
    let bundle = bundle();
    let mut a =
        vec![std::ffi::OsStr::new("classify"), "--json".as_ref(), "--bundle".as_ref(), bundle.as_os_str()];
    a.extend_from_slice(rest);
    run(&a)
}
