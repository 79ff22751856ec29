//! The labels file of `prompts build`: any text is a label set or an error
//! naming the file.
#![no_main]

use std::path::Path;

use clip_edge_tools::labels::LabelSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match LabelSet::parse(Path::new("fuzz.labels.toml"), text, clip_edge_tools::templates::DEFAULT) {
        Ok(set) => {
            let _ = set.prompt_count();
        }
        Err(e) => assert!(e.to_string().contains("fuzz.labels.toml"), "{e}"),
    }
});
