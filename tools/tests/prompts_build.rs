//! `clip-edge prompts build` on the fixture bundle (reduced CLIP ViT + text tower).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clip_edge_runtime::store::EntryKind;
use clip_edge_runtime::{Bundle, PromptStore};
use clip_edge_tools::labels::LabelSet;
use clip_edge_tools::prompt_build::{build_store, BuildOptions};
use clip_edge_tools::text::TextEncoder;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("root").join("tests/data/vit_tiny")
}

fn build(args: &[&std::ffi::OsStr]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clip-edge"));
    cmd.args(["prompts", "build", "--bundle"]).arg(fixture()).args(args);
    cmd.output().expect("run")
}

/// `clip-edge prompts build` on any bundle folder, with `extra` arguments.
fn build_in(bundle: &Path, labels: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clip-edge"))
        .args(["prompts", "build", "--bundle"])
        .arg(bundle)
        .arg("--labels")
        .arg(labels)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("run")
}

const LABELS: &str = include_str!("fixtures/two_classes.labels.toml");

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn each_entry_is_the_normalised_mean_of_its_normalised_prompts() {
    let bundle = Bundle::load(fixture()).expect("bundle");
    let labels = LabelSet::parse(Path::new("l.toml"), LABELS, &[]).expect("labels");
    let opts = BuildOptions {
        element: clip_edge_runtime::store::ElementType::F32,
        fail_on_truncation: false,
        stamp: false,
        calibrate: true,
        threads: 2,
    };
    let mut calls = 0;
    let (builder, report) = build_store(&bundle, &labels, opts, |_, _| calls += 1).expect("build");
    assert_eq!(calls, 8);
    assert_eq!(report.entries, vec![("dog".into(), 4), ("cat".into(), 2), ("nothing".into(), 2)]);
    let store = PromptStore::from_bytes("mem", &builder.to_bytes().expect("bytes")).expect("store");
    assert_eq!(store.entries()[2].kind, EntryKind::Background);
    assert_eq!(store.meta().templates.len(), 2);
    assert_eq!(store.meta().prompts_per_entry, vec![4, 2, 2]);

    let mut enc = TextEncoder::load(&bundle).expect("encoder");
    let mut mean = vec![0f32; 64];
    for p in ["a photo of a dog.", "a blurry photo of a dog.", "a dog face", "a puppy"] {
        let (e, _) = enc.embed(p).expect("embed");
        mean.iter_mut().zip(e.as_slice()).for_each(|(m, v)| *m += v);
    }
    let n = mean.iter().map(|v| v * v).sum::<f32>().sqrt();
    let row = store.row_f32(0);
    let worst = mean.iter().zip(&row).map(|(m, r)| (m / n - r).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-6, "dog row differs from the ensemble mean by {worst}");
}

#[test]
fn the_same_input_gives_the_same_bytes_in_every_element_type() {
    let dir = tempfile::tempdir().expect("tmp");
    let labels = write(dir.path(), "labels.toml", LABELS);
    for element in ["f32", "f16", "int8"] {
        let a = dir.path().join(format!("a-{element}.store"));
        let b = dir.path().join(format!("b-{element}.store"));
        for out in [&a, &b] {
            let o = build(&[
                "--labels".as_ref(),
                labels.as_os_str(),
                "--element".as_ref(),
                element.as_ref(),
                "--out".as_ref(),
                out.as_os_str(),
            ]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        let (a, b) = (std::fs::read(&a).expect("a"), std::fs::read(&b).expect("b"));
        assert_eq!(a, b, "{element}: two builds differ");
        let s = PromptStore::from_bytes("x", &a).expect("valid");
        assert_eq!(s.header().element.as_str(), element);
    }
}

#[test]
fn bad_labels_fail_cleanly_and_leave_the_output_untouched() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = write(dir.path(), "prompts.store", "previous contents");
    let cases = [
        (
            "syntax.toml",
            "[[class]]\nname = \"dog\"\nname = oops\n",
            "syntax.toml: line 3 col 8: key 'class[0].name'",
        ),
        ("empty.toml", "[[class]]\nname = \"  \"\n", "class entry 1 has an empty name"),
        ("dup.toml", "[[class]]\nname = \"dog\"\n[[class]]\nname = \"dog\"\n", "label 'dog' is given twice"),
        (
            "tmpl.toml",
            "templates = [\"a photo\"]\n[[class]]\nname = \"dog\"\n",
            "must contain {} exactly once",
        ),
    ];
    for (name, text, want) in cases {
        let labels = write(dir.path(), name, text);
        let o = build(&["--labels".as_ref(), labels.as_os_str(), "--out".as_ref(), out.as_os_str()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(want), "{name}: want {want:?} in {err}");
        assert!(!err.contains("panicked"));
        assert_eq!(std::fs::read_to_string(&out).expect("out"), "previous contents", "{name}");
    }
    let missing = dir.path().join("missing.toml");
    let o = build(&["--labels".as_ref(), missing.as_os_str(), "--out".as_ref(), out.as_os_str()]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.toml"));
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn long_prompts_are_truncated_with_a_warning_or_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let long = "a very long description ".repeat(30);
    let labels = write(
        dir.path(),
        "long.toml",
        &format!(
            "templates = [\"a photo of a {{}}.\"]\n[[class]]\nname = \"dog\"\ndescriptions = [\"{long}\"]\n"
        ),
    );
    let out = dir.path().join("p.store");
    let o = build(&[
        "--labels".as_ref(),
        labels.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--json".as_ref(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("prompt cut to the text encoder's context"));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["truncated"].as_array().expect("list").len(), 1);

    std::fs::write(&out, "old").expect("old");
    let o = build(&[
        "--labels".as_ref(),
        labels.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--fail-on-truncation".as_ref(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("longer than the 77-token context"));
    assert_eq!(std::fs::read_to_string(&out).expect("out"), "old");
}

#[test]
fn a_bundle_without_a_text_encoder_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let bundle = dir.path().join("b");
    std::fs::create_dir(&bundle).expect("mkdir");
    let manifest = std::fs::read_to_string(fixture().join("bundle.toml")).expect("read");
    let without_text = manifest.split("[text]").next().expect("head");
    std::fs::write(bundle.join("bundle.toml"), without_text).expect("write");
    let labels = write(dir.path(), "l.toml", LABELS);
    let out = dir.path().join("p.store");
    let o = build_in(&bundle, &labels, &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bundle has no text encoder"), "{err}");
    assert!(!out.exists());
}

fn calibrated_fixture(dir: &Path, seen_names: Option<&str>) -> PathBuf {
    let bundle = dir.join("bundle");
    std::fs::create_dir(&bundle).expect("mkdir");
    for f in std::fs::read_dir(fixture()).expect("fixture") {
        let f = f.expect("entry").path();
        std::fs::copy(&f, bundle.join(f.file_name().expect("name"))).expect("copy");
    }
    let manifest = bundle.join("bundle.toml");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    let section = "\n[text.calibration]\nunseen_bonus = 0.05\nseen_names = \"seen_names.txt\"\n";
    std::fs::write(&manifest, text + section).expect("manifest");
    if let Some(names) = seen_names {
        std::fs::write(bundle.join("seen_names.txt"), names).expect("names");
    }
    bundle
}

#[test]
fn calibration_gives_classes_outside_the_training_concepts_the_bonus() {
    let dir = tempfile::tempdir().expect("tmp");
    let bundle_dir = calibrated_fixture(dir.path(), Some("Dog\nhot_dog\n"));
    let bundle = Bundle::load(&bundle_dir).expect("bundle");
    let labels = LabelSet::parse(Path::new("l.toml"), LABELS, &[]).expect("labels");
    let mut opts = BuildOptions {
        element: clip_edge_runtime::store::ElementType::F32,
        fail_on_truncation: false,
        stamp: false,
        calibrate: true,
        threads: 2,
    };
    let (builder, report) = build_store(&bundle, &labels, opts, |_, _| {}).expect("build");
    assert_eq!(report.calibration, Some((0.05, vec!["cat".to_string()])));
    let store = PromptStore::from_bytes("c", &builder.to_bytes().expect("bytes")).expect("store");
    assert_eq!(store.meta().similarity_offsets, vec![0.0, 0.05, 0.0], "backgrounds are never calibrated");

    opts.calibrate = false;
    let (plain, report) = build_store(&bundle, &labels, opts, |_, _| {}).expect("build");
    assert_eq!(report.calibration, None);
    let unc = PromptStore::from_bytes("p", &plain.to_bytes().expect("bytes")).expect("store");
    assert!(unc.meta().similarity_offsets.is_empty());
    assert_eq!(unc.row_f32(1), store.row_f32(1), "calibration leaves the embeddings alone");

    let lab = write(dir.path(), "labels.toml", LABELS);
    let out = dir.path().join("p.store");
    let o = build_in(&bundle_dir, &lab, &out, &["--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(j["calibration"]["unseen"], serde_json::json!(["cat"]));
    assert_eq!(PromptStore::open(&out).expect("store").similarity_offset(1), 0.05);
    let o = build_in(&bundle_dir, &lab, &out, &["--json", "--no-calibration"]);
    assert!(o.status.success());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(j["calibration"].is_null());
    assert!(PromptStore::open(&out).expect("store").meta().similarity_offsets.is_empty());
}

#[test]
fn a_missing_seen_names_file_is_named_and_the_store_is_left_alone() {
    let dir = tempfile::tempdir().expect("tmp");
    let bundle_dir = calibrated_fixture(dir.path(), None);
    let lab = write(dir.path(), "labels.toml", LABELS);
    let out = dir.path().join("p.store");
    std::fs::write(&out, b"previous").expect("old store");
    let o = build_in(&bundle_dir, &lab, &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("seen_names.txt") && err.contains("does not exist"), "{err}");
    assert_eq!(std::fs::read(&out).expect("read"), b"previous");
}

#[test]
fn any_number_of_threads_gives_the_same_store() {
    let bundle = Bundle::load(fixture()).expect("bundle");
    let labels = LabelSet::parse(Path::new("l.toml"), LABELS, &[]).expect("labels");
    let bytes = |threads: usize| {
        let opts = BuildOptions {
            element: clip_edge_runtime::store::ElementType::F32,
            fail_on_truncation: false,
            stamp: false,
            calibrate: false,
            threads,
        };
        let mut seen = Vec::new();
        let (builder, _) =
            build_store(&bundle, &labels, opts, |done, total| seen.push((done, total))).expect("build");
        assert_eq!(seen, (1..=8).map(|d| (d, 8)).collect::<Vec<_>>(), "{threads} threads: progress");
        builder.to_bytes().expect("bytes")
    };
    let one = bytes(1);
    assert_eq!(bytes(3), one);
    assert_eq!(bytes(64), one, "more threads than prompts");
}
