//! The daemon's configuration file: any text is a configuration or an error
//! naming the file.
#![no_main]

use std::path::Path;

use clip_edge_board::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = Config::parse(Path::new("/etc/clip-edge/fuzz.toml"), text) {
        assert!(e.to_string().contains("fuzz.toml"), "{e}");
    }
});
