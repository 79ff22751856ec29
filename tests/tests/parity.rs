//! The Rust pipeline against the Python references: preprocessing against
//! open_clip's eval transform (Pillow), and tract against ONNX Runtime and
//! PyTorch on the real CLIP ViT architecture.

use clip_edge_runtime::bundle::sha256_hex;
use clip_edge_runtime::frame::load_rgb;
use clip_edge_runtime::preprocess::Preprocessor;
use clip_edge_runtime::{Bundle, ImageEncoder};
use clip_edge_tests::{cosine, data_dir, fixture_bundle, max_abs_diff, normalise, reference};

#[test]
fn preprocessing_reproduces_open_clip_bit_for_bit() {
    let bundle = Bundle::load(fixture_bundle()).expect("bundle");
    let spec = bundle.preprocess.clone();
    let mut pre = Preprocessor::new(spec.clone());
    let mut out = vec![0f32; pre.output_len()];
    let plane = (spec.size * spec.size) as usize;
    for img in reference().images {
        let frame = load_rgb(data_dir().join(&img.file)).expect("image");
        pre.run(&frame, &mut out);

        let crop = load_rgb(data_dir().join(&img.expected_crop)).expect("crop");
        let mut differing = 0;
        let mut worst = 0i32;
        for (i, p) in crop.pixels().enumerate() {
            for c in 0..3 {
                let want = (p[c] as f32 / 255.0 - spec.mean[c]) / spec.std[c];
                let got = out[c * plane + i];
                if got != want {
                    differing += 1;
                    let level = ((got * spec.std[c] + spec.mean[c]) * 255.0).round() as i32;
                    worst = worst.max((level - p[c] as i32).abs());
                }
            }
        }
        println!("{}: {differing} values differ from Pillow's crop (worst {worst} levels)", img.file);
        assert_eq!(differing, 0, "{}: resize/crop differs from Pillow", img.file);

        let ours = sha256_hex(bytemuck::cast_slice(&out));
        if img.mode == "RGBA" {
            // Known difference: Pillow resizes RGBA with premultiplied alpha and
            // drops alpha afterwards; clip-edge drops alpha first (camera frames
            // have none). The crop above is compared on the alpha-dropped image.
            assert_ne!(ours, img.tensor_sha256, "{}: RGBA unexpectedly identical", img.file);
        } else {
            assert_eq!(ours, img.tensor_sha256, "{}: tensor differs from open_clip's", img.file);
        }
    }
}

#[test]
fn tract_matches_onnx_runtime_and_torch() {
    let bundle = Bundle::load(fixture_bundle()).expect("bundle");
    let mut enc = ImageEncoder::load(&bundle, None).expect("encoder");
    let mut worst_cos = 1f32;
    let mut worst_abs = 0f32;
    for img in reference().images.iter().filter(|i| i.mode != "RGBA") {
        let frame = load_rgb(data_dir().join(&img.file)).expect("image");
        let ours = enc.encode(&frame).expect("encode");
        let ort = normalise(&img.onnxruntime);
        let torch = normalise(&img.torch);
        let cos_ort = cosine(ours.as_slice(), &ort);
        let abs_ort = max_abs_diff(ours.as_slice(), &ort);
        let cos_torch = cosine(ours.as_slice(), &torch);
        println!(
            "{}: tract vs ONNX Runtime cos {cos_ort:.7} max|d| {abs_ort:.2e}; vs PyTorch cos {cos_torch:.7}",
            img.file
        );
        worst_cos = worst_cos.min(cos_ort).min(cos_torch);
        worst_abs = worst_abs.max(abs_ort);
    }
    println!("worst cosine {worst_cos:.7}, worst max abs error {worst_abs:.2e} (unit-normalised embeddings)");
    assert!(worst_cos >= 0.9999, "cosine {worst_cos} below 0.9999");
    assert!(worst_abs <= 1e-3, "max abs error {worst_abs} above 1e-3");
}

#[test]
fn encoding_is_repeatable_and_reuses_its_input_buffer() {
    let bundle = Bundle::load(fixture_bundle()).expect("bundle");
    let mut enc = ImageEncoder::load(&bundle, None).expect("encoder");
    let a = load_rgb(data_dir().join("images/scene_640x480.png")).expect("a");
    let b = load_rgb(data_dir().join("images/noise_100x333.png")).expect("b");
    let first = enc.encode(&a).expect("a1");
    let other = enc.encode(&b).expect("b1");
    let again = enc.encode(&a).expect("a2");
    assert_eq!(first, again, "same frame, same embedding, whatever came between");
    assert!(cosine(first.as_slice(), other.as_slice()) < 0.9999);
    assert!((first.as_slice().iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-5);
}

#[test]
fn encode_tensor_equals_encode_of_the_same_preprocessed_frame() {
    let bundle = Bundle::load(fixture_bundle()).expect("bundle");
    let mut enc = ImageEncoder::load(&bundle, None).expect("encoder");
    let frame = load_rgb(data_dir().join("images/checker_224x224.png")).expect("image");
    let mut pre = Preprocessor::new(bundle.preprocess.clone());
    let mut t = vec![0f32; pre.output_len()];
    pre.run(&frame, &mut t);
    assert_eq!(enc.encode(&frame).expect("frame"), enc.encode_tensor(&t).expect("tensor"));
    assert!(enc.encode_tensor(&t[1..]).is_err());
}
