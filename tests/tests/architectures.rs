//! Reduced versions of each verified architecture (ViT-B/32, MobileCLIP2-S0's
//! FastViT, ViT-S/16) through tract, against ONNX Runtime and PyTorch
//! references made by tools/python/make_arch_fixtures.py.

use std::collections::BTreeMap;

use clip_edge_runtime::encoder::typed_onnx;
use clip_edge_runtime::frame::load_rgb;
use clip_edge_runtime::int8::{KeptF32, LayerCompute};
use clip_edge_runtime::{Bundle, ImageEncoder, Precision};
use clip_edge_tests::{cosine, data_dir, max_abs_diff, normalise};
use serde::Deserialize;
use tract_core::ops::cnn::Conv;

#[derive(Deserialize)]
struct Reference {
    open_clip_model: String,
    precisions: Vec<String>,
    images: Vec<BTreeMap<String, serde_json::Value>>,
    /// The layers the runtime computed in int8 when the reference was made.
    #[serde(default)]
    int8_compute_layers: Vec<String>,
}

fn vector(v: &serde_json::Value) -> Vec<f32> {
    serde_json::from_value(v.clone()).expect("vector")
}

#[test]
fn every_architecture_matches_onnx_runtime_in_every_precision() {
    let dir = data_dir().join("arch");
    let mut archs: Vec<_> =
        std::fs::read_dir(&dir).expect("tests/data/arch").map(|e| e.expect("entry").path()).collect();
    archs.sort();
    assert!(archs.len() >= 3, "expected at least three architecture fixtures");
    for arch in archs {
        let reference: Reference =
            serde_json::from_str(&std::fs::read_to_string(arch.join("reference.json")).expect("read"))
                .expect("json");
        let bundle = Bundle::load(&arch).expect("bundle");
        for precision in &reference.precisions {
            let p: Precision = precision.parse().expect("precision");
            let mut enc = ImageEncoder::load(&bundle, Some(p)).expect("encoder");
            if p == Precision::Int8Compute {
                let report = enc.int8_report().expect("int8 report");
                let int8: Vec<&str> = report
                    .layers
                    .iter()
                    .filter(|l| !matches!(l.compute, LayerCompute::F32(_)))
                    .map(|l| l.name.as_str())
                    .collect();
                // Every grouped convolution is reported, also those the depthwise rewrite made clip-edge's op.
                let grouped =
                    report.layers.iter().filter(|l| l.compute == LayerCompute::F32(KeptF32::Grouped)).count();
                assert_eq!(
                    grouped,
                    grouped_convs(&bundle),
                    "{}: grouped layers reported",
                    reference.open_clip_model
                );
                assert_eq!(
                    int8, reference.int8_compute_layers,
                    "{}: the runtime now computes other layers in int8 than the reference emulates \
                     (regenerate with make_arch_fixtures.py --int8-compute-only)",
                    reference.open_clip_model
                );
            }
            let (mut worst_cos, mut worst_abs, mut worst_vs_f32) = (1f32, 0f32, 1f32);
            for img in &reference.images {
                let file = img["file"].as_str().expect("file");
                let ours = enc.encode(&load_rgb(data_dir().join(file)).expect("image")).expect("encode");
                let ort = normalise(&vector(&img[&format!("onnxruntime_{precision}")]));
                worst_cos = worst_cos.min(cosine(ours.as_slice(), &ort));
                worst_abs = worst_abs.max(max_abs_diff(ours.as_slice(), &ort));
                worst_vs_f32 = worst_vs_f32.min(cosine(ours.as_slice(), &vector(&img["onnxruntime_f32"])));
            }
            println!(
                "{} {precision}: tract vs ONNX Runtime cos {worst_cos:.6} max|d| {worst_abs:.2e}; vs f32 cos {worst_vs_f32:.6}",
                reference.open_clip_model
            );
            if p == Precision::F32 {
                assert!(
                    worst_cos >= 0.9999 && worst_abs <= 1e-3,
                    "{}: f32 disagrees",
                    reference.open_clip_model
                );
            } else if p == Precision::Int8Compute {
                // The reference runs the same quantised arithmetic in ONNX Runtime
                // (int8_reference.py): measured cosine >= 0.9999999, max |d| <= 2.6e-6
                // on x86; the bounds leave room for a rounding tie that flips one
                // quantised activation on another CPU.
                assert!(
                    worst_cos >= 0.99999 && worst_abs <= 2e-4,
                    "{} int8-compute: vs ONNX Runtime's same arithmetic cos {worst_cos}, max |d| {worst_abs}",
                    reference.open_clip_model
                );
                assert!(
                    worst_vs_f32 >= 0.9995,
                    "{} int8-compute: vs f32 {worst_vs_f32}",
                    reference.open_clip_model
                );
            } else {
                // Dynamic quantisation rounds activations at run time; engines may round differently.
                assert!(
                    worst_cos >= 0.99,
                    "{} {precision}: vs ONNX Runtime {worst_cos}",
                    reference.open_clip_model
                );
                assert!(
                    worst_vs_f32 >= 0.98,
                    "{} {precision}: vs f32 {worst_vs_f32}",
                    reference.open_clip_model
                );
            }
        }
    }
}

#[test]
fn one_prompt_store_serves_every_precision_of_a_model() {
    use clip_edge_runtime::store::{ElementType, EntryKind, StoreBuilder};
    use clip_edge_runtime::{Classifier, DecisionRule};

    let arch = data_dir().join("arch/vit-b-32");
    let bundle = Bundle::load(&arch).expect("bundle");
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("p.store");
    let mut b = StoreBuilder::new(bundle.embed_dim, bundle.fingerprint, bundle.logit_scale, ElementType::F16);
    let frame = load_rgb(data_dir().join("images/scene_640x480.png")).expect("image");
    let mut f32_enc = ImageEncoder::load(&bundle, Some(Precision::F32)).expect("f32");
    b.push("scene", EntryKind::Class, f32_enc.encode(&frame).expect("encode").as_slice()).expect("push");
    b.push("other", EntryKind::Class, &vec![0.5; bundle.embed_dim]).expect("push");
    b.write(&store).expect("write");
    for p in [Precision::F32, Precision::Int8, Precision::Int8Compute] {
        let mut clf = Classifier::load(&bundle, Some(p), Some(&store)).expect("store fits every precision");
        let emb = clf.encoder.encode(&frame).expect("encode");
        let c = clf.score(&emb, 2, &DecisionRule::default()).expect("score");
        assert_eq!(clf.label(c.top[0].index), "scene", "{p}");
    }
}

/// Grouped convolutions in the bundle's decluttered f32 graph, counted by tract.
fn grouped_convs(bundle: &Bundle) -> usize {
    let file = bundle.encoder(Some(Precision::F32)).expect("f32 encoder");
    let bytes = file.read_verified().expect("read");
    let model = typed_onnx(bundle, file, bytes).expect("typed").into_decluttered().expect("declutter");
    model.nodes().iter().filter(|n| n.op_as::<Conv>().is_some_and(|c| c.group > 1)).count()
}
