//! tract's NNEF copy of an image encoder (`clip-edge bundle nnef`): written,
//! verified and recorded for the ViT fixture (exact GELU included), loaded in
//! place of the ONNX file with the same embeddings, and never trusted when it
//! is corrupt, stale or half-described: the ONNX file is used instead.

use std::path::{Path, PathBuf};

use clip_edge_runtime::frame::load_rgb;
use clip_edge_runtime::{Bundle, ErrorKind, ImageEncoder, Precision};
use clip_edge_tests::{data_dir, fixture_bundle, reference};
use clip_edge_tools::nnef_convert::{convert_bundle, Outcome};

fn copy_fixture() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("bundle");
    std::fs::create_dir(&dir).expect("mkdir");
    for entry in std::fs::read_dir(fixture_bundle()).expect("fixture") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, dir.join(path.file_name().expect("name"))).expect("copy");
    }
    (tmp, dir)
}

fn embeddings(dir: &Path) -> (bool, Vec<Vec<f32>>) {
    let bundle = Bundle::load(dir).expect("bundle");
    let mut enc = ImageEncoder::load(&bundle, None).expect("encoder");
    let out = reference()
        .images
        .iter()
        .map(|img| {
            let frame = load_rgb(data_dir().join(&img.file)).expect("image");
            enc.encode(&frame).expect("encode").as_slice().to_vec()
        })
        .collect();
    (enc.load_timing().from_nnef, out)
}

fn convert(dir: &Path) -> PathBuf {
    let outcomes = convert_bundle(dir, &[], 1.25).expect("convert");
    match outcomes.as_slice() {
        [Outcome::Converted(c)] => {
            println!(
                "{}: {} bytes (ONNX {}), cold start ONNX {:?} -> NNEF {:?}, min cosine {}",
                c.nnef.path.display(),
                c.nnef_bytes,
                c.onnx_bytes,
                c.onnx_load.total(),
                c.nnef_load.total(),
                c.min_cosine
            );
            c.nnef.path.clone()
        }
        other => panic!("expected one converted encoder, got {other:?}"),
    }
}

fn edit_manifest(dir: &Path, edit: impl Fn(String) -> String) {
    let path = dir.join("bundle.toml");
    let text = std::fs::read_to_string(&path).expect("manifest");
    std::fs::write(&path, edit(text)).expect("write manifest");
}

#[test]
fn converted_vit_loads_from_nnef_with_the_same_embeddings() {
    let (_tmp, dir) = copy_fixture();
    let (from_nnef, want) = embeddings(&dir);
    assert!(!from_nnef);
    let tar = convert(&dir);
    assert_eq!(tar, dir.join("image_encoder_f32.nnef.tar"));
    let bundle = Bundle::load(&dir).expect("rewritten manifest");
    let nnef = bundle.encoder(Some(Precision::F32)).expect("f32").nnef.clone().expect("nnef recorded");
    assert_eq!(nnef.source_sha256, bundle.encoder(None).expect("f32").sha256);
    let manifest = std::fs::read_to_string(dir.join("bundle.toml")).expect("manifest");
    assert!(manifest.starts_with("# Written by tools/python/make_fixture.py"), "comments are kept");

    let (from_nnef, got) = embeddings(&dir);
    assert!(from_nnef, "the NNEF copy is used");
    for (a, b) in want.iter().zip(&got) {
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "NNEF and ONNX embeddings differ by {worst}");
    }

    // Converting again replaces the copy and keeps the manifest loadable.
    convert(&dir);
    assert!(embeddings(&dir).0);
}

#[test]
fn corrupt_or_stale_nnef_falls_back_to_onnx() {
    let (_tmp, dir) = copy_fixture();
    let (_, want) = embeddings(&dir);
    let tar = convert(&dir);

    let mut bytes = std::fs::read(&tar).expect("tar");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&tar, &bytes).expect("corrupt");
    let (from_nnef, got) = embeddings(&dir);
    assert!(!from_nnef, "a bit-flipped NNEF copy is not used");
    assert_eq!(got, want);

    convert(&dir);
    let source = Bundle::load(&dir).expect("bundle").encoders[0].sha256.clone();
    edit_manifest(&dir, |t| {
        t.replace(
            &format!("nnef_source_sha256 = \"{source}\""),
            &format!("nnef_source_sha256 = \"{}\"", "0".repeat(64)),
        )
    });
    let (from_nnef, got) = embeddings(&dir);
    assert!(!from_nnef, "an NNEF copy of another ONNX file is not used");
    assert_eq!(got, want);

    std::fs::write(&tar, b"not a tar archive").expect("garbage");
    edit_manifest(&dir, |t| {
        let sha = clip_edge_runtime::bundle::sha256_hex(b"not a tar archive");
        let mut out = String::new();
        for line in t.lines() {
            if line.starts_with("nnef_sha256") {
                out.push_str(&format!("nnef_sha256 = \"{sha}\"\n"));
            } else if line.starts_with("nnef_source_sha256") {
                out.push_str(&format!("nnef_source_sha256 = \"{source}\"\n"));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    });
    let (from_nnef, got) = embeddings(&dir);
    assert!(!from_nnef, "an unreadable NNEF archive is not used");
    assert_eq!(got, want);

    std::fs::remove_file(&tar).expect("remove");
    assert!(!embeddings(&dir).0, "a missing NNEF archive is not used");
}

#[test]
fn half_described_nnef_is_a_manifest_error() {
    let (_tmp, dir) = copy_fixture();
    edit_manifest(&dir, |t| {
        t.replace(
            "file = \"image_encoder_f32.onnx\"",
            "file = \"image_encoder_f32.onnx\"\nnnef = \"x.nnef.tar\"",
        )
    });
    let err = Bundle::load(&dir).expect_err("nnef without its checksums");
    assert_eq!(err.kind(), ErrorKind::Model);
    let msg = err.to_string();
    assert!(
        msg.contains("bundle.toml") && msg.contains("image.encoder[0].nnef") && msg.contains("all three"),
        "{msg}"
    );
}

#[test]
fn unknown_precision_is_refused_before_anything_is_written() {
    let (_tmp, dir) = copy_fixture();
    let before = std::fs::read(dir.join("bundle.toml")).expect("manifest");
    let err = convert_bundle(&dir, &[Precision::Int8], 1.25).expect_err("no int8 encoder");
    assert!(format!("{err:#}").contains("no int8 image encoder"), "{err:#}");
    assert_eq!(std::fs::read(dir.join("bundle.toml")).expect("manifest"), before);
    assert!(!dir.join("image_encoder_f32.nnef.tar").exists());
}
