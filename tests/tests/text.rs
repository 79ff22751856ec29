//! The host text side: CLIP's tokenizer.json against open_clip's tokenizer,
//! and the text encoder through tract against ONNX Runtime and PyTorch.

use clip_edge_runtime::Bundle;
use clip_edge_tests::{cosine, fixture_bundle, max_abs_diff, normalise, reference_prompts};
use clip_edge_tools::text::{TextEncoder, TextTokenizer};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<i64>,
}

#[derive(Deserialize)]
struct Difference {
    text: String,
    open_clip: Vec<i64>,
    tokenizer_json: Vec<i64>,
    why: String,
}

#[derive(Deserialize)]
struct TokRef {
    context_length: usize,
    cases: Vec<Case>,
    known_differences: Vec<Difference>,
}

fn tok_ref() -> TokRef {
    let path = fixture_bundle().join("tokenizer_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

fn tokenizer(ctx: usize) -> TextTokenizer {
    TextTokenizer::from_file(&fixture_bundle().join("tokenizer.json"), ctx, 0).expect("tokenizer")
}

#[test]
fn tokenizer_json_matches_open_clip_exactly() {
    let r = tok_ref();
    let tok = tokenizer(r.context_length);
    let mut mismatches = Vec::new();
    for case in &r.cases {
        let got = tok.encode(&case.text).expect("encode");
        if got.ids[..got.len] != case.ids[..] {
            mismatches.push(format!("{:?}: got {:?} want {:?}", case.text, &got.ids[..got.len], case.ids));
        }
        assert!(got.ids[got.len..].iter().all(|&i| i == 0), "padding");
    }
    println!("{} of {} strings identical to open_clip", r.cases.len() - mismatches.len(), r.cases.len());
    assert!(r.cases.len() >= 300, "reference too small");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn known_differences_are_only_open_clips_text_clean_up() {
    let r = tok_ref();
    let tok = tokenizer(r.context_length);
    for d in &r.known_differences {
        assert!(
            d.why.contains("HTML") || d.why.contains("ftfy"),
            "{:?} differs for an unexplained reason: {}",
            d.text,
            d.why
        );
        let got = tok.encode(&d.text).expect("encode");
        assert_eq!(got.ids[..got.len], d.tokenizer_json[..], "{:?}", d.text);
        assert_ne!(d.tokenizer_json, d.open_clip);
    }
    println!("{} known differences (ftfy / HTML unescape)", r.known_differences.len());
}

#[test]
fn long_text_is_truncated_like_open_clip() {
    let tok = tokenizer(77);
    let t = tok.encode(&"word ".repeat(90)).expect("encode");
    assert!(t.truncated);
    assert_eq!(t.len, 77);
    assert_eq!(t.ids[0], 49406);
    assert_eq!(t.ids[76], 49407);
    let short = tok.encode("a photo of a cat.").expect("encode");
    assert!(!short.truncated);
    assert_eq!(short.ids[short.len - 1], 49407);
}

#[test]
fn text_encoder_matches_onnx_runtime_and_torch() {
    let bundle = Bundle::load(fixture_bundle()).expect("bundle");
    let mut enc = TextEncoder::load(&bundle).expect("text encoder");
    let mut worst_cos = 1f32;
    let mut worst_abs = 0f32;
    for p in reference_prompts() {
        let (emb, tokens) = enc.embed(&p.text).expect("embed");
        assert_eq!(tokens.ids, p.tokens, "{:?}: tokens differ from open_clip", p.text);
        let ort = normalise(&p.onnxruntime);
        let c = cosine(emb.as_slice(), &ort).min(cosine(emb.as_slice(), &p.torch));
        let a = max_abs_diff(emb.as_slice(), &ort);
        println!("{:?}: cos {c:.7} max|d| {a:.2e}", p.text.chars().take(30).collect::<String>());
        worst_cos = worst_cos.min(c);
        worst_abs = worst_abs.max(a);
    }
    println!("text encoder: worst cosine {worst_cos:.7}, worst max abs error {worst_abs:.2e}");
    assert!(worst_cos >= 0.9999 && worst_abs <= 1e-3);
}

#[test]
fn padding_after_the_end_token_does_not_change_the_embedding() {
    let bundle = Bundle::load(fixture_bundle()).expect("bundle");
    let mut enc = TextEncoder::load(&bundle).expect("text encoder");
    let tokens = enc.tokenizer().encode("a photo of a dog.").expect("encode");
    let plain = enc.run_tokens(&tokens).expect("run");
    let mut noisy = tokens.clone();
    for (i, id) in noisy.ids.iter_mut().enumerate().skip(tokens.len) {
        *id = (i as i64 * 7919) % 49000;
    }
    let with_junk = enc.run_tokens(&noisy).expect("run");
    assert!(max_abs_diff(&plain, &with_junk) < 1e-5, "tokens after end-of-text leak into the embedding");
}
