//! Image files (PNG, JPEG, BMP, WebP) as `classify`, `eval` and the replay
//! camera read them: any bytes decode within the limits or fail.
#![no_main]

use std::path::Path;

use clip_edge_runtime::frame::decode_rgb;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = decode_rgb(Path::new("fuzz.img"), data) {
        assert!(img.width() > 0 && img.height() > 0);
    }
});
