use super::*;

const GOOD: &str = r#"
format = 1
name = "tiny"
fingerprint = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
prompts = "prompts.store"

[image]
size = 224
resize = "shortest-center-crop"
interpolation = "bicubic"
mean = [0.48145466, 0.4578275, 0.40821073]
std = [0.26862954, 0.26130258, 0.27577711]
embed_dim = 64
logit_scale = 100.0
default_precision = "f32"

[[image.encoder]]
precision = "f32"
file = "image_f32.onnx"
sha256 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
"#;

fn parse(text: &str) -> Result<Bundle> {
    Bundle::parse(Path::new("/b"), Path::new("/b/bundle.toml"), text)
}

#[test]
fn parses_a_complete_manifest() {
    let b = parse(GOOD).expect("valid manifest");
    assert_eq!(b.name, "tiny");
    assert_eq!(b.preprocess.size, 224);
    assert_eq!(b.preprocess.resize, ResizeMode::ShortestCenterCrop);
    assert_eq!(b.preprocess.interpolation, Interpolation::Bicubic);
    assert_eq!(b.embed_dim, 64);
    assert_eq!(b.encoders[0].path, Path::new("/b/image_f32.onnx"));
    assert_eq!(b.prompts.as_deref(), Some(Path::new("/b/prompts.store")));
    assert_eq!(b.encoder(None).expect("default").precision, Precision::F32);
    let err = b.encoder(Some(Precision::Int8)).expect_err("no int8");
    assert!(err.to_string().contains("no int8 image encoder"), "{err}");
}

#[test]
fn each_bad_field_is_named() {
    let cases = [
        ("size = 224", "size = 4", "image.size"),
        ("resize = \"shortest-center-crop\"", "resize = \"fit\"", "image.resize"),
        ("interpolation = \"bicubic\"", "interpolation = \"lanczos\"", "image.interpolation"),
        ("std = [0.26862954, 0.26130258, 0.27577711]", "std = [0.2, 0.0, 0.2]", "image.std"),
        ("mean = [0.48145466, 0.4578275, 0.40821073]", "mean = [0.5]", "image.mean"),
        ("embed_dim = 64", "embed_dim = 0", "image.embed_dim"),
        ("logit_scale = 100.0", "logit_scale = -1.0", "image.logit_scale"),
        ("default_precision = \"f32\"", "default_precision = \"int8\"", "image.default_precision"),
        (
            "[[image.encoder]]\nprecision = \"f32\"",
            "[[image.encoder]]\nprecision = \"f64\"",
            "image.encoder[0].precision",
        ),
        ("file = \"image_f32.onnx\"", "file = \"../x.onnx\"", "image.encoder[0].file"),
        ("format = 1", "format = 2", "format"),
        ("prompts = \"prompts.store\"", "prompts = \"/etc/passwd\"", "prompts"),
    ];
    for (from, to, key) in cases {
        let text = GOOD.replace(from, to);
        assert_ne!(text, GOOD, "replacement {from} did not apply");
        let err = parse(&text).expect_err(key).to_string();
        assert!(err.contains(&format!("'{key}'")), "{key}: {err}");
        assert!(err.starts_with("/b/bundle.toml: "), "{err}");
    }
}

#[test]
fn syntax_errors_and_unknown_keys_are_reported() {
    let err = parse("format = ").expect_err("syntax").to_string();
    assert!(err.contains("bundle.toml"), "{err}");
    let err = parse(&GOOD.replace("embed_dim", "embedding_dim")).expect_err("unknown key").to_string();
    assert!(err.contains("embedding_dim"), "{err}");
}

#[test]
fn calibration_is_validated_and_its_names_normalised() {
    let text = |bonus: &str, names: &str| {
        format!(
                "{GOOD}\n[text]\nfile = \"t.onnx\"\nsha256 = \"{}\"\ntokenizer = \"tokenizer.json\"\n\
                 context_length = 32\npad_id = 0\n\n[text.calibration]\nunseen_bonus = {bonus}\nseen_names = \"{names}\"\n",
                "ab".repeat(32)
            )
    };
    let c = parse(&text("0.0125", "seen.txt"))
        .expect("valid")
        .text
        .expect("text")
        .calibration
        .expect("calibration");
    assert_eq!((c.unseen_bonus, c.seen_names.as_path()), (0.0125, Path::new("/b/seen.txt")));
    for (bonus, names) in
        [("-0.1", "seen.txt"), ("0.9", "seen.txt"), ("nan", "seen.txt"), ("0.01", "../seen.txt")]
    {
        let err = parse(&text(bonus, names)).expect_err(bonus).to_string();
        assert!(err.contains("'text.calibration."), "{bonus} {names}: {err}");
    }

    let dir = tempfile::tempdir().expect("tmp");
    let cal = Calibration { unseen_bonus: 0.01, seen_names: dir.path().join("seen.txt") };
    let err = cal.load_seen_names().expect_err("missing").to_string();
    assert!(err.contains("seen.txt") && err.contains("does not exist"), "{err}");
    std::fs::write(&cal.seen_names, "\n  \n").expect("write");
    assert!(cal.load_seen_names().expect_err("empty").to_string().contains("lists no names"));
    std::fs::write(&cal.seen_names, b"dog\n\xff\xfe\n").expect("write");
    let err = cal.load_seen_names().expect_err("binary").to_string();
    assert!(err.contains("seen.txt") && err.contains("not UTF-8"), "{err}");
    std::fs::write(&cal.seen_names, "Dog Face\nred_car\n  hot   dog \n").expect("write");
    let names = cal.load_seen_names().expect("names");
    assert!(names.contains("dog face") && names.contains("red car") && names.contains("hot dog"));
    assert_eq!(Calibration::normalise(" Delivery_Truck "), "delivery truck");
}

#[test]
fn hex_round_trip() {
    let bytes = parse_hex32(&"ab".repeat(32)).expect("hex");
    assert_eq!(hex(&bytes), "ab".repeat(32));
    assert!(parse_hex32("xyz").is_err());
    assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}
