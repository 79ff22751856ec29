//! Shared helpers for the board's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use clip_edge_board::Config;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("root").to_path_buf()
}

/// A configuration on the default model with a replay camera over `frames`.
pub fn config(frames: &Path, extra: &str) -> Config {
    let text = format!(
        r#"
[model]
bundle = "{bundle}"
[trigger]
source = "stdin"
[camera]
source = "replay"
folder = "{frames}"
[output.pin]
simulated = true
line = 5
pulse_ms = 50
{extra}
"#,
        bundle = root().join("models/default").display(),
        frames = frames.display(),
    );
    Config::parse(Path::new("/test/config.toml"), &text).expect("valid test config")
}

/// A folder with copies of the RGB test images.
pub fn frames() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    for name in ["checker_224x224.png", "grey_50x77.png", "noise_100x333.png", "scene_640x480.png"] {
        std::fs::copy(root().join("tests/data/images").join(name), dir.path().join(name)).expect("copy");
    }
    dir
}
