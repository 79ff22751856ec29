//! The seed inputs of `tools/fuzz/` that the runtime makes: prompt stores
//! (versions 1 and 2, every element type, with shots and offsets), camera
//! frames (MJPEG and YUYV with the fuzz target's geometry header) and image
//! files (PNG, JPEG, BMP, WebP), signed fleet commands. This test checks the committed seeds are
//! what the fixtures make; `CLIP_EDGE_WRITE_SEEDS=1` rewrites them
//! (`tools/fuzz/seed.sh` does).

use std::path::{Path, PathBuf};

use image::{ImageFormat, RgbImage};

use crate::frame::rgb_to_yuyv;
use crate::signed::{Action, Header};
use crate::store::fixtures::{builder, with_shots};
use crate::store::ElementType;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/fuzz/corpus").join(target)
}

fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

/// The fuzz target's 8-byte header: format (0 MJPEG, 1 YUYV), width, height, stride, halvings.
fn camera(format: u8, w: u16, h: u16, stride: u16, halvings: u8, frame: &[u8]) -> Vec<u8> {
    let mut out = vec![format];
    for v in [w, h, stride] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.push(halvings);
    out.extend_from_slice(frame);
    out
}

/// A command signed with the `signed_command` target's key.
fn signed_seed(action: Action, body: &[u8]) -> Vec<u8> {
    let key = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let header = Header {
        id: "seed".into(),
        issued_ms: 1_796_000_000_000,
        devices: vec!["porch".into()],
        expires_ms: None,
        action,
    };
    crate::signed::sign(&key, &header, body)
}

fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let picture =
        RgbImage::from_fn(24, 16, |x, y| image::Rgb([(x * 10) as u8, (y * 15) as u8, ((x + y) * 6) as u8]));
    let jpeg = encode(&picture, ImageFormat::Jpeg);
    let yuyv = rgb_to_yuyv(&picture);
    let mut offsets = builder(ElementType::F32);
    offsets.set_similarity_offsets(vec![0.01, -0.02, 0.0]).expect("offsets");
    vec![
        ("store", "v1-f32.store", builder(ElementType::F32).serialise(1).expect("v1")),
        ("store", "v2-f32-shots.store", with_shots(ElementType::F32).to_bytes().expect("f32")),
        ("store", "v2-f16-shots.store", with_shots(ElementType::F16).to_bytes().expect("f16")),
        ("store", "v2-int8-shots.store", with_shots(ElementType::Int8).to_bytes().expect("int8")),
        ("store", "v2-offsets.store", offsets.to_bytes().expect("offsets")),
        ("camera_frame", "mjpeg-24x16", camera(0, 24, 16, 0, 0, &jpeg)),
        ("camera_frame", "mjpeg-halved", camera(0, 24, 16, 0, 2, &jpeg)),
        ("camera_frame", "yuyv-24x16", camera(1, 24, 16, 48, 0, &yuyv)),
        ("camera_frame", "yuyv-halved", camera(1, 24, 16, 48, 1, &yuyv)),
        ("camera_frame", "yuyv-padded-stride", camera(1, 12, 16, 48, 0, &yuyv)),
        ("image_file", "picture.png", encode(&picture, ImageFormat::Png)),
        ("image_file", "picture.jpg", jpeg),
        ("image_file", "picture.bmp", encode(&picture, ImageFormat::Bmp)),
        ("image_file", "picture.webp", encode(&picture, ImageFormat::WebP)),
        ("signed_command", "store", signed_seed(Action::Store, &offsets.to_bytes().expect("store"))),
        ("signed_command", "reload", signed_seed(Action::Reload, b"")),
        ("signed_command", "enroll", signed_seed(Action::Enroll { class: "our van".into(), frames: 4 }, b"")),
    ]
}

#[test]
fn committed_fuzz_seeds_are_what_the_fixtures_make() {
    let write = std::env::var("CLIP_EDGE_WRITE_SEEDS").as_deref() == Ok("1");
    for (target, name, bytes) in seeds() {
        let path = corpus(target).join(name);
        if write {
            std::fs::create_dir_all(corpus(target)).expect("corpus folder");
            std::fs::write(&path, &bytes).expect("write seed");
        }
        let committed = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run tools/fuzz/seed.sh", path.display()));
        assert!(
            committed == bytes,
            "{} differs from what the fixtures make; run tools/fuzz/seed.sh",
            path.display()
        );
    }
}

/// The inputs under `tools/fuzz/regressions/TARGET/` (at least one).
fn regression_inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/fuzz/regressions").join(target);
    let files: Vec<PathBuf> =
        std::fs::read_dir(&dir).expect("regressions").map(|e| e.expect("entry").path()).collect();
    assert!(!files.is_empty(), "no regression inputs in {}", dir.display());
    files
}

/// Every input a fuzz target crashed on (`tools/fuzz/regressions/TARGET/`)
/// holds that target's invariants now; this is the `store` target's check.
#[test]
fn store_crash_inputs_found_by_fuzzing_hold_the_invariants() {
    for path in regression_inputs("store") {
        let raw = std::fs::read(&path).expect("read");
        let mut fixed = raw.clone();
        let n = fixed.len();
        if n >= 4 {
            let crc = crc32fast::hash(&fixed[..n - 4]);
            fixed[n - 4..].copy_from_slice(&crc.to_le_bytes());
        }
        for data in [&raw, &fixed] {
            let Ok(store) = crate::PromptStore::from_bytes("fuzz.store", data) else { continue };
            let bytes = store.to_builder().to_bytes().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            crate::PromptStore::from_bytes("again.store", &bytes).expect("reads back");
        }
    }
}

/// The `camera_frame` target's inputs that ran past libFuzzer's timeout: a
/// JPEG of a few hundred bytes whose header claims far more pixels than the
/// negotiated size. Decoded as the target does (8-byte geometry header), each
/// is now refused, by name, before any pixel is decoded.
#[test]
fn camera_frame_inputs_found_by_fuzzing_are_refused_before_decoding() {
    for path in regression_inputs("camera_frame") {
        let data = std::fs::read(&path).expect("read");
        let (head, frame) = data.split_first_chunk::<8>().expect("an 8-byte header");
        let u16_at = |i: usize| u32::from(u16::from_le_bytes([head[i], head[i + 1]]));
        let format = if head[0] % 2 == 0 {
            crate::frame::CameraFormat::Mjpeg
        } else {
            crate::frame::CameraFormat::Yuyv
        };
        let e = crate::frame::decode_camera_frame(
            Path::new("/dev/fuzz"),
            format,
            frame,
            u16_at(1),
            u16_at(3),
            u16_at(5),
            u32::from(head[7] % 8),
        )
        .expect_err("refused");
        assert!(e.to_string().contains("larger than the negotiated"), "{}: {e}", path.display());
    }
}
