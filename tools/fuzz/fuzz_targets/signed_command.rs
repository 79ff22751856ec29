//! Fleet commands as a board receives them: anything not signed by the
//! trusted key is refused; what passes is exactly what that key signed.
#![no_main]

use clip_edge_runtime::signed::{sign, verify};
use libfuzzer_sys::fuzz_target;

/// The key the seeds are signed with (`runtime/src/fuzz_seeds.rs`).
const SEED: [u8; 32] = [42; 32];

fuzz_target!(|data: &[u8]| {
    let key = ed25519_dalek::SigningKey::from_bytes(&SEED);
    if let Ok((header, body)) = verify(&key.verifying_key(), data, 1 << 20) {
        assert_eq!(sign(&key, &header, body), data, "accepted bytes the key did not sign");
    }
});
