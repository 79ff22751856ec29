//! The prompt store reader (versions 1 and 2): any bytes either fail with an
//! error or give a store whose every row can be read and scored, and which
//! writes back to bytes that read again to the same entries. Each input is
//! read as it is (the CRC check) and with its CRC made right, so that
//! mutations reach the checks behind the CRC.
#![no_main]

use clip_edge_runtime::PromptStore;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some((body, _)) = data.split_last_chunk::<4>() {
        let mut fixed = body.to_vec();
        fixed.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        check(&fixed);
    }
});

fn check(data: &[u8]) {
    let Ok(store) = PromptStore::from_bytes("fuzz.store", data) else { return };
    let dim = store.dim();
    let query = vec![1.0 / (dim as f32).sqrt(); dim];
    let mut out = vec![0.0; store.len()];
    store.dot_all(&query, &mut out);
    let mut shots = vec![0.0; store.shots().len()];
    store.dot_shots(&query, &mut shots);
    for i in 0..store.len() {
        assert_eq!(store.row_f32(i).len(), dim);
        let _ = store.similarity_offset(i);
        let _ = store.shot_count(i);
    }
    let bytes = store.to_builder().to_bytes().expect("a valid store writes back");
    let again = PromptStore::from_bytes("again.store", &bytes).expect("what was written reads back");
    assert_eq!(again.entries(), store.entries());
    assert_eq!(again.shots().len(), store.shots().len());
}
