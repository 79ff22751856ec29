//! Damaged bundles and models give typed, one-line errors that name the file.

use clip_edge_runtime::{Bundle, Classifier, ErrorKind, ImageEncoder, Precision};
use clip_edge_tests::{reseal_manifest, scratch_bundle};

fn load_err(dir: &std::path::Path) -> clip_edge_runtime::Error {
    let bundle = Bundle::load(dir).expect("manifest itself is fine");
    ImageEncoder::load(&bundle, None).expect_err("must fail")
}

fn assert_one_line_naming(err: &clip_edge_runtime::Error, file: &str, what: &str) {
    let text = err.to_string();
    assert!(!text.contains('\n'), "not one line: {text}");
    assert!(text.contains(file), "does not name {file}: {text}");
    assert!(text.contains(what), "does not say '{what}': {text}");
}

#[test]
fn missing_model_file() {
    let dir = scratch_bundle();
    std::fs::remove_file(dir.path().join("image_encoder_f32.onnx")).expect("rm");
    let err = load_err(dir.path());
    assert_eq!(err.kind(), ErrorKind::Model);
    assert_one_line_naming(&err, "image_encoder_f32.onnx", "does not exist");
}

#[test]
fn modified_model_fails_its_checksum() {
    let dir = scratch_bundle();
    let path = dir.path().join("image_encoder_f32.onnx");
    let mut bytes = std::fs::read(&path).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&path, bytes).expect("write");
    let err = load_err(dir.path());
    assert_eq!(err.kind(), ErrorKind::Model);
    assert_one_line_naming(&err, "image_encoder_f32.onnx", "sha256 mismatch");
}

#[test]
fn garbage_and_truncated_onnx_are_refused_by_the_parser() {
    let dir = scratch_bundle();
    let path = dir.path().join("image_encoder_f32.onnx");
    let good = std::fs::read(&path).expect("read");
    for bytes in [b"this is not a protobuf at all".to_vec(), good[..good.len() / 3].to_vec(), Vec::new()] {
        std::fs::write(&path, &bytes).expect("write");
        reseal_manifest(dir.path());
        let err = load_err(dir.path());
        assert_eq!(err.kind(), ErrorKind::Model, "{err}");
        assert_one_line_naming(&err, "image_encoder_f32.onnx", "cannot load model");
    }
}

#[test]
fn manifest_dimension_must_match_the_graph() {
    let dir = scratch_bundle();
    let m = dir.path().join("bundle.toml");
    let text = std::fs::read_to_string(&m).expect("read").replace("embed_dim = 64", "embed_dim = 512");
    std::fs::write(&m, text).expect("write");
    let err = load_err(dir.path());
    assert_eq!(err.kind(), ErrorKind::Model);
    assert_one_line_naming(&err, "bundle.toml", "'image.embed_dim': manifest says 512");
}

#[test]
fn input_size_the_graph_cannot_take_is_refused() {
    let dir = scratch_bundle();
    let m = dir.path().join("bundle.toml");
    let text = std::fs::read_to_string(&m).expect("read").replace("size = 224", "size = 200");
    std::fs::write(&m, text).expect("write");
    let err = load_err(dir.path());
    assert_eq!(err.kind(), ErrorKind::Model);
    assert_one_line_naming(&err, "image_encoder_f32.onnx", "cannot load model");
}

#[test]
fn missing_bundle_and_missing_manifest() {
    let err = Bundle::load("/nonexistent/bundle").expect_err("missing");
    assert_one_line_naming(&err, "/nonexistent/bundle/bundle.toml", "does not exist");
    let empty = tempfile::tempdir().expect("tmp");
    let err = Bundle::load(empty.path()).expect_err("no manifest");
    assert_one_line_naming(&err, "bundle.toml", "no bundle.toml");
}

#[test]
fn bundle_without_default_store_needs_an_explicit_one() {
    let dir = scratch_bundle();
    let bundle = Bundle::load(dir.path()).expect("bundle");
    let err = Classifier::load(&bundle, None, None).expect_err("no store");
    assert_eq!(err.kind(), ErrorKind::Usage);
    assert!(err.to_string().contains("key 'prompts'"), "{err}");
}

/// A dynamic-int8 file (MatMulInteger: no constant f32 or weight-only int8
/// weights) has no int8-compute form: refused at load, not run in f32.
#[test]
fn int8_compute_of_a_dynamic_int8_file_is_refused() {
    let src = clip_edge_tests::data_dir().join("arch/vit-b-32");
    let dir = tempfile::tempdir().expect("tmp");
    for f in ["image_encoder_f32.onnx", "image_encoder_int8.onnx"] {
        std::fs::copy(src.join(f), dir.path().join(f)).expect("copy");
    }
    let fixture = Bundle::load(&src).expect("fixture");
    let sha = |p| fixture.encoder(Some(p)).expect("encoder").sha256.clone();
    let (f32_sha, int8_sha) = (sha(Precision::F32), sha(Precision::Int8));
    let entry = |file: &str, sha: &str| {
        format!("precision = \"int8-compute\"\nfile = \"{file}\"\nsha256 = \"{sha}\"")
    };
    let manifest = std::fs::read_to_string(src.join("bundle.toml"))
        .expect("manifest")
        .replace(&entry("image_encoder_f32.onnx", &f32_sha), &entry("image_encoder_int8.onnx", &int8_sha));
    std::fs::write(dir.path().join("bundle.toml"), manifest).expect("write");
    let bundle = Bundle::load(dir.path()).expect("manifest");
    let err = ImageEncoder::load(&bundle, Some(Precision::Int8Compute)).expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Model);
    assert_one_line_naming(&err, "image_encoder_int8.onnx", "no layer of this graph can be computed in int8");
}
