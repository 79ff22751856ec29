//! Stores shared by the unit tests of the store's modules.

use super::{ElementType, EntryKind, StoreBuilder, StoreMeta};

/// Three text entries of dimension 4: "cat", "dog" and the background "nothing".
pub(crate) fn builder(element: ElementType) -> StoreBuilder {
    let mut b = StoreBuilder::new(4, [7; 32], 100.0, element).meta(StoreMeta {
        tool: "test".into(),
        templates: vec!["a photo of a {}.".into()],
        prompts_per_entry: vec![1, 1, 1],
        built_at: None,
        note: None,
        similarity_offsets: Vec::new(),
    });
    b.push("cat", EntryKind::Class, &[1.0, 0.0, 0.0, 0.0]).expect("push");
    b.push("dog", EntryKind::Class, &[0.0, 3.0, 4.0, 0.0]).expect("push");
    b.push("nothing", EntryKind::Background, &[0.0, 0.0, 0.0, -2.0]).expect("push");
    b
}

/// [`builder`] with one shot of "dog" and two of the image-only class "van".
pub(crate) fn with_shots(element: ElementType) -> StoreBuilder {
    let mut b = builder(element);
    b.add_shot("dog", &[0.0, 1.0, 1.0, 0.0], 10).expect("dog shot");
    b.add_shot("van", &[0.0, 0.0, 1.0, 0.0], 11).expect("van shot");
    b.add_shot("van", &[0.0, 1.0, 0.0, 0.0], 12).expect("van shot");
    b
}

/// Rewrites the CRC of `bytes` after a test patched them.
pub(crate) fn fix_crc(bytes: &mut [u8]) {
    let n = bytes.len();
    let crc = crc32fast::hash(&bytes[..n - 4]);
    bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
}
