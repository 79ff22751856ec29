//! `bundle.toml`: any text is a bundle or an error naming the file.
#![no_main]

use std::path::Path;

use clip_edge_runtime::Bundle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let dir = Path::new("/nonexistent/fuzz-bundle");
    if let Err(e) = Bundle::parse(dir, &dir.join("bundle.toml"), text) {
        assert!(e.to_string().contains("bundle.toml"), "{e}");
    }
});
