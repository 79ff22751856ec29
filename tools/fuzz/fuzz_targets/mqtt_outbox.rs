//! The MQTT outbox's record parser: any bytes after the file magic give a
//! prefix of valid records in increasing `seq` order, never a panic.
#![no_main]

use clip_edge_board::mqtt::outbox::{parse_records, MAX_RECORD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (records, valid) = parse_records(data);
    assert!(valid <= data.len());
    assert!(records.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(records.iter().all(|r| r.payload.len() <= MAX_RECORD));
    let bytes: usize = records.iter().map(|r| r.payload.len() + 20).sum();
    assert_eq!(bytes, valid, "the valid prefix is exactly the records");
});
