//! `clip-edge` as a user runs it: exit codes, one-line errors naming the file,
//! no panics, and the JSON shapes scripts rely on.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clip_edge_runtime::store::{ElementType, EntryKind, StoreBuilder};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("root").to_path_buf()
}

fn bundle() -> PathBuf {
    root().join("models/default")
}

fn image(name: &str) -> PathBuf {
    root().join("tests/data/images").join(name)
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clip-edge"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run clip-edge")
}

macro_rules! args {
    ($($a:expr),* $(,)?) => { &[$(std::ffi::OsStr::new($a)),*] };
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failed run: exit code 1, no panic, and an `error:` line naming `file` and `what`.
fn assert_clean_failure(o: &Output, file: &str, what: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error:") && l.contains(file))
        .unwrap_or_else(|| panic!("no error line naming {file}: {err}"));
    assert!(line.contains(what), "'{what}' missing from: {line}");
}

fn store_bytes(fingerprint: [u8; 32], dim: usize) -> Vec<u8> {
    let mut b = StoreBuilder::new(dim, fingerprint, 100.0, ElementType::F32);
    let mut v = vec![0f32; dim];
    v[0] = 1.0;
    b.push("a", EntryKind::Class, &v).expect("a");
    v[1] = 1.0;
    b.push("b", EntryKind::Class, &v).expect("b");
    b.to_bytes().expect("bytes")
}

#[test]
fn help_explains_the_commands() {
    let o = run(args!["--help"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for cmd in ["classify", "embed", "prompts"] {
        assert!(text.contains(cmd), "{text}");
    }
    let o = run(args!["classify", "--help"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("--precision"));
}

#[test]
fn classify_json_has_the_documented_fields() {
    let img = image("scene_640x480.png");
    let o = run(args!["classify", "--json", "--top", "3", "--bundle", bundle().as_os_str(), img.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8(o.stdout).expect("utf8");
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines.len(), 1);
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("json");
    assert_eq!(v["image"], img.display().to_string());
    assert_eq!(v["top"].as_array().expect("top").len(), 3);
    let best = &v["top"][0];
    assert_eq!(v["score"], best["score"]);
    match v["decision"].as_str().expect("decision") {
        "match" => assert_eq!(v["label"], best["label"]),
        "background" | "unknown" => assert!(v["label"].is_null()),
        other => panic!("decision {other}"),
    }
    assert!(v["latency_ms"].as_f64().expect("latency") > 0.0);
    for k in ["decode", "preprocess", "infer", "score"] {
        assert!(v["timing_ms"][k].is_number(), "{k}");
    }
}

#[test]
fn bench_json_reports_the_figures_and_the_camera_path() {
    let img = image("scene_640x480.png");
    let bench = |extra: &[&str]| {
        let mut a: Vec<std::ffi::OsString> =
            ["bench", "--json", "--frames", "3", "--warmup", "1", "--bundle"].map(Into::into).to_vec();
        a.push(bundle().into());
        a.extend(extra.iter().map(Into::into));
        a.push(img.clone().into());
        let o = Command::new(env!("CARGO_BIN_EXE_clip-edge")).args(&a).output().expect("run");
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("one JSON object")
    };
    let file = bench(&[]);
    for k in ["cold_start_ms", "infer_ms_median", "total_ms_median", "peak_rss_mb", "frame_budget_pct"] {
        assert!(file[k].as_f64().is_some_and(|v| v > 0.0), "{k}: {file}");
    }
    assert!(file["camera"].is_null());
    for (format, full, halvings) in [("yuyv", false, 1), ("mjpeg", false, 1), ("yuyv", true, 0)] {
        let mut extra = vec!["--camera", format];
        if full {
            extra.push("--full-frame");
        }
        let v = bench(&extra);
        assert_eq!(v["camera"]["format"], format, "{v}");
        assert_eq!(v["camera"]["frame"], serde_json::json!([640, 480]), "{v}");
        assert_eq!(v["camera"]["halvings"], halvings, "{format} full={full}: {v}");
        assert!(v["decode_ms"]["median"].as_f64().is_some_and(|d| d > 0.0), "{v}");
    }
    let o = run(args!["bench", "--full-frame", "--bundle", bundle().as_os_str(), img.as_os_str()]);
    assert_eq!(o.status.code(), Some(2), "--full-frame needs --camera: {}", stderr(&o));
}

#[test]
fn a_threshold_turns_a_weak_match_into_unknown() {
    let img = image("scene_640x480.png");
    let o = run(args![
        "classify",
        "--json",
        "--min-score",
        "0.999",
        "--bundle",
        bundle().as_os_str(),
        img.as_os_str()
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(v["decision"] == "unknown" || v["decision"] == "background", "{v}");
    assert!(v["label"].is_null());
}

#[test]
fn embed_json_gives_unit_vectors_of_the_bundle_dimension() {
    let img = image("checker_224x224.png");
    let o = run(args!["embed", "--json", "--bundle", bundle().as_os_str(), img.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let e: Vec<f32> = serde_json::from_value(v["embedding"].clone()).expect("vector");
    assert_eq!(e.len(), 384);
    assert_eq!(v["dim"], 384);
    assert!((e.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4);
}

#[test]
fn bad_images_are_reported_by_name_and_the_rest_still_run() {
    let dir = tempfile::tempdir().expect("tmp");
    let text = dir.path().join("notes.png");
    std::fs::write(&text, "this is not an image").expect("write");
    let good = std::fs::read(image("scene_640x480.png")).expect("png");
    let truncated = dir.path().join("cut.png");
    std::fs::write(&truncated, &good[..good.len() / 2]).expect("write");
    let mut huge = std::fs::read(image("checker_224x224.png")).expect("png");
    huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    huge[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32fast::hash(&huge[12..29]);
    huge[29..33].copy_from_slice(&crc.to_be_bytes());
    let huge_path = dir.path().join("huge.png");
    std::fs::write(&huge_path, huge).expect("write");
    let missing = dir.path().join("missing.jpg");
    let ok = image("grey_50x77.png");

    let o = run(args![
        "classify",
        "--json",
        "--bundle",
        bundle().as_os_str(),
        text.as_os_str(),
        truncated.as_os_str(),
        ok.as_os_str(),
        huge_path.as_os_str(),
        missing.as_os_str()
    ]);
    assert_clean_failure(&o, "notes.png", "not a supported image format");
    assert_clean_failure(&o, "cut.png", "cannot read image");
    assert_clean_failure(&o, "huge.png", "cannot read image");
    assert_clean_failure(&o, "missing.jpg", "does not exist");
    assert!(stderr(&o).contains("4 of 5 image(s) could not be classified"));
    let stdout = String::from_utf8(o.stdout).expect("utf8");
    let lines: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(lines.len(), 5);
    assert!(lines[2]["label"].is_string() || lines[2]["decision"].is_string());
    assert_eq!(lines[0]["kind"], "image");
}

#[test]
fn damaged_or_foreign_prompt_stores_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let good = std::fs::read(bundle().join("prompts.store")).expect("store");
    let img = image("grey_50x77.png");
    let fingerprint = clip_edge_runtime::Bundle::load(bundle()).expect("bundle").fingerprint;

    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x01;
    let mut version = good.clone();
    version[8] = 3;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated.store", good[..good.len() - 9].to_vec(), "truncated or corrupt"),
        ("flipped.store", flipped, "checksum mismatch"),
        ("version.store", version, "format version 3 is not supported"),
        ("other-model.store", store_bytes([9; 32], 64), "built for model 0909"),
        ("other-dim.store", store_bytes(fingerprint, 32), "dimension 32 does not match"),
        ("empty.store", Vec::new(), "shorter than the 128-byte header"),
    ];
    for (name, bytes, what) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).expect("write");
        let o = run(args![
            "classify",
            "--bundle",
            bundle().as_os_str(),
            "--prompts",
            path.as_os_str(),
            img.as_os_str()
        ]);
        assert_clean_failure(&o, name, what);
        assert_eq!(std::fs::read(&path).expect("still there"), bytes, "{name} was modified");
    }
}

#[test]
fn broken_bundles_are_refused() {
    let img = image("grey_50x77.png");
    let o = run(args!["classify", "--bundle", "/nonexistent/bundle", img.as_os_str()]);
    assert_clean_failure(&o, "/nonexistent/bundle/bundle.toml", "does not exist");

    let dir = tempfile::tempdir().expect("tmp");
    for f in ["bundle.toml", "image_encoder_f32.onnx", "prompts.store"] {
        std::fs::copy(bundle().join(f), dir.path().join(f)).expect("copy");
    }
    let manifest = dir.path().join("bundle.toml");
    let text = std::fs::read_to_string(&manifest).expect("read");
    std::fs::write(&manifest, text.replace("interpolation = \"bicubic\"", "interpolation = \"cubic\""))
        .expect("w");
    let o = run(args!["classify", "--bundle", dir.path().as_os_str(), img.as_os_str()]);
    assert_clean_failure(&o, "bundle.toml", "key 'image.interpolation': unknown variant `cubic`, expected one of `nearest`, `bilinear`, `bicubic`");

    std::fs::write(&manifest, &text).expect("restore");
    let o =
        run(args!["classify", "--precision", "int8", "--bundle", dir.path().as_os_str(), img.as_os_str()]);
    assert_clean_failure(&o, "image_encoder_int8.onnx", "does not exist");

    let only_f32: Vec<&str> = text
        .split("\n\n")
        .filter(|block| !block.starts_with("[[image.encoder]]") || block.contains("precision = \"f32\""))
        .collect();
    std::fs::write(&manifest, only_f32.join("\n\n")).expect("w");
    let o =
        run(args!["classify", "--precision", "int8", "--bundle", dir.path().as_os_str(), img.as_os_str()]);
    assert_clean_failure(&o, "bundle.toml", "no int8 image encoder (available: f32)");

    std::fs::write(dir.path().join("image_encoder_f32.onnx"), b"garbage").expect("w");
    let o = run(args!["classify", "--bundle", dir.path().as_os_str(), img.as_os_str()]);
    assert_clean_failure(&o, "image_encoder_f32.onnx", "sha256 mismatch");

    let o = run(args!["classify", "--precision", "f64", "--bundle", dir.path().as_os_str(), img.as_os_str()]);
    assert_eq!(o.status.code(), Some(2), "usage error");
    assert!(stderr(&o).contains("unknown precision 'f64'"));
}

#[test]
fn prompts_inspect_reports_and_checks_the_model() {
    let store = bundle().join("prompts.store");
    let o = run(args!["prompts", "inspect", "--json", "--bundle", bundle().as_os_str(), store.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["header"]["dim"], 384);
    assert_eq!(v["header"]["element"], "f32");
    assert_eq!(v["checks"], "ok");
    assert_eq!(v["model_check"]["matches"], true);
    assert_eq!(v["entries"].as_array().expect("entries").len(), 9);
    assert_eq!(v["entries"][8]["kind"], "background");

    let dir = tempfile::tempdir().expect("tmp");
    let foreign = dir.path().join("foreign.store");
    std::fs::write(&foreign, store_bytes([3; 32], 384)).expect("w");
    let o = run(args!["prompts", "inspect", "--bundle", bundle().as_os_str(), foreign.as_os_str()]);
    assert_clean_failure(&o, "foreign.store", "built for model 0303");
}

#[test]
fn a_closed_stdout_pipe_ends_the_command_quietly() {
    let store = bundle().join("prompts.store");
    let mut child = Command::new(env!("CARGO_BIN_EXE_clip-edge"))
        .args(["prompts", "inspect", "--pairs", "36"])
        .arg(&store)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let o = child.wait_with_output().expect("wait");
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert_eq!(o.status.code(), Some(clip_edge_runtime::process::BROKEN_PIPE_STATUS));
}

#[test]
fn prompts_random_writes_a_store_that_classify_accepts() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("r.store");
    let o = run(args![
        "prompts",
        "random",
        "--bundle",
        bundle().as_os_str(),
        "--labels",
        "x,y,z",
        "--background",
        "wall",
        "--element",
        "int8",
        "--out",
        out.as_os_str()
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let img = image("noise_100x333.png");
    let o = run(args![
        "classify",
        "--json",
        "--bundle",
        bundle().as_os_str(),
        "--prompts",
        out.as_os_str(),
        img.as_os_str()
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = run(args![
        "prompts",
        "random",
        "--bundle",
        bundle().as_os_str(),
        "--labels",
        "x,x",
        "--out",
        out.as_os_str()
    ]);
    assert_clean_failure(&o, "label 'x'", "given twice");
    assert!(clip_edge_runtime::PromptStore::open(&out).is_ok(), "old store must survive a failed build");
}

/// `clip-edge eval` of `data` against the default bundle and its prompt store.
fn eval_against_default_store(data: &Path, json: bool) -> Output {
    let (bundle, store) = (bundle(), bundle().join("prompts.store"));
    let mut a = args![
        "eval",
        "--bundle",
        bundle.as_os_str(),
        "--data",
        data.as_os_str(),
        "--prompts",
        store.as_os_str()
    ]
    .to_vec();
    if json {
        a.push(std::ffi::OsStr::new("--json"));
    }
    run(&a)
}

#[test]
fn eval_scores_class_folders_and_counts_unreadable_images() {
    let dir = tempfile::tempdir().expect("tmp");
    for (class, files) in
        [("dog", &["scene_640x480.png", "checker_224x224.png"][..]), ("cat", &["grey_50x77.png"])]
    {
        std::fs::create_dir(dir.path().join(class)).expect("mkdir");
        for f in files {
            std::fs::copy(image(f), dir.path().join(class).join(f)).expect("copy");
        }
    }
    std::fs::write(dir.path().join("cat/broken.png"), "not a png").expect("write");
    let o = eval_against_default_store(dir.path(), true);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "stderr: {err}");
    assert!(err.contains("broken.png"), "unreadable image not named: {err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["n"], 3);
    assert_eq!(v["unreadable"], 1);
    assert_eq!(v["classes"], 2);
    let (top1, top5) = (v["top1"].as_f64().expect("top1"), v["top5"].as_f64().expect("top5"));
    assert!((0.0..=1.0).contains(&top1) && top5 >= top1 && top5 <= 1.0, "{v}");
    let per_class = v["per_class"].as_array().expect("per_class");
    assert_eq!(per_class.iter().map(|c| c["n"].as_u64().expect("n")).sum::<u64>(), 3);
}

#[test]
fn eval_refuses_a_folder_that_names_no_candidate_class() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir(dir.path().join("zebra crossing")).expect("mkdir");
    std::fs::copy(image("grey_50x77.png"), dir.path().join("zebra crossing/a.png")).expect("copy");
    let o = eval_against_default_store(dir.path(), false);
    assert_clean_failure(&o, "zebra crossing", "is not one of the");
    let empty = tempfile::tempdir().expect("tmp");
    let o = run(args!["eval", "--bundle", bundle().as_os_str(), "--data", empty.path().as_os_str()]);
    assert_clean_failure(&o, &empty.path().display().to_string(), "no class subfolders");
}

#[test]
fn the_default_model_recognises_its_sample_frames() {
    let dir = tempfile::tempdir().expect("tmp");
    let samples = bundle().join("samples");
    let mut n = 0;
    for f in std::fs::read_dir(&samples).expect("samples") {
        let path = f.expect("entry").path();
        let stem = path.file_stem().expect("stem").to_string_lossy().into_owned();
        let label = stem.split('-').next().expect("label").replace('_', " ");
        std::fs::create_dir_all(dir.path().join(&label)).expect("mkdir");
        std::fs::copy(&path, dir.path().join(&label).join(path.file_name().expect("name"))).expect("copy");
        n += 1;
    }
    assert!(n >= 16, "expected the shipped sample frames, found {n}");
    let o = run(args!["eval", "--bundle", bundle().as_os_str(), "--data", dir.path().as_os_str(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["n"], n);
    // 18 of 18 for the shipped model (the held-out "delivery truck" included); the previous one got 16.
    assert!(v["top1"].as_f64().expect("top1") >= 0.8, "{v}");
    assert!(v["top5"].as_f64().expect("top5") >= 0.99, "{v}");
}

#[test]
fn fewshot_add_list_remove_change_only_what_they_say() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("p.store");
    std::fs::copy(bundle().join("prompts.store"), &store).expect("copy");
    let b = bundle();
    let add = |class: &str, images: &[PathBuf]| {
        let mut a = args![
            "fewshot",
            "add",
            "--bundle",
            b.as_os_str(),
            "--prompts",
            store.as_os_str(),
            "--class",
            class
        ]
        .to_vec();
        a.extend(images.iter().map(|p| p.as_os_str()));
        run(&a)
    };
    let o = add("our van", &[image("scene_640x480.png"), image("checker_224x224.png")]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("2 shot(s) of 'our van' (new image-only class)"), "{out}");

    let list = || {
        let o = run(args!["fewshot", "list", store.as_os_str(), "--json"]);
        assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("json")
    };
    let v = list();
    assert_eq!(v["shots"], 2);
    let van = v["entries"].as_array().expect("entries").iter().find(|e| e["label"] == "our van").cloned();
    let van = van.expect("our van listed");
    assert_eq!((van["shots"].as_u64(), van["text"].as_bool()), (Some(2), Some(false)));

    let before = std::fs::read(&store).expect("read");
    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, "not a png").expect("write");
    let o = add("our van", &[image("grey_50x77.png"), broken.clone()]);
    assert_clean_failure(&o, "broken.png", "nothing was stored");
    let o = add("empty scene", &[image("grey_50x77.png")]);
    assert_clean_failure(&o, "p.store", "'empty scene' is a background entry");
    assert_eq!(std::fs::read(&store).expect("read"), before, "failed enrolments changed the store");

    let o = run(args!["fewshot", "remove", store.as_os_str(), "--class", "our van"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout)
        .contains("removed 2 shot(s) of 'our van' and the image-only class"));
    let v = list();
    assert_eq!(v["shots"], 0);
    assert!(v["entries"].as_array().expect("entries").iter().all(|e| e["label"] != "our van"));
    let o = run(args!["fewshot", "remove", store.as_os_str(), "--class", "unicorn"]);
    assert_clean_failure(&o, "p.store", "no class 'unicorn'");
}

#[test]
fn eval_shots_compares_shot_counts_on_disjoint_images() {
    let dir = tempfile::tempdir().expect("tmp");
    let files = ["scene_640x480.png", "checker_224x224.png", "grey_50x77.png", "noise_100x333.png"];
    for (class, pick) in [("dog", [0, 1, 2]), ("cat", [1, 2, 3])] {
        std::fs::create_dir(dir.path().join(class)).expect("mkdir");
        for i in pick {
            std::fs::copy(image(files[i]), dir.path().join(class).join(files[i])).expect("copy");
        }
    }
    let (b, store) = (bundle(), bundle().join("prompts.store"));
    let base = args![
        "eval",
        "--bundle",
        b.as_os_str(),
        "--data",
        dir.path().as_os_str(),
        "--prompts",
        store.as_os_str()
    ];
    let mut a = base.to_vec();
    a.extend(args!["--shots", "0,1,2", "--draws", "3", "--json"]);
    let o = run(&a);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.iter().map(|r| r["shots_stored"].as_u64().expect("n")).collect::<Vec<_>>(), [0, 2, 4]);
    assert_eq!(v["test_images_per_draw"], 2, "3 images per class, 2 in the shot pool");
    for r in results {
        assert_eq!(r["top1_draws"].as_array().expect("draws").len(), 3);
        assert!((0.0..=1.0).contains(&r["top1"].as_f64().expect("top1")));
    }
    assert!(v["winners"].is_array() && v["losers"].is_array());
    let mut a = base.to_vec();
    a.extend(args!["--shots", "0,3"]);
    assert_clean_failure(&run(&a), "cat", "3 shots need at least 4");
}

#[test]
fn bundle_nnef_adds_the_f32_copy_and_skips_forms_that_would_grow() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("default");
    std::fs::create_dir(&dir).expect("mkdir");
    for entry in std::fs::read_dir(bundle()).expect("bundle") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            std::fs::copy(&path, dir.join(path.file_name().expect("name"))).expect("copy");
        }
    }

    let o = run(args!("bundle", "nnef", "--bundle", &dir, "--json"));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    let rows = v["encoders"].as_array().expect("encoders");
    let status = |p: &str| rows.iter().find(|r| r["precision"] == p).map(|r| r["status"].clone());
    assert_eq!(status("f32"), Some("converted".into()), "{v}");
    assert_eq!(status("int8"), Some("skipped".into()), "{v}");
    assert_eq!(status("f16"), Some("skipped".into()), "{v}");
    let f32_row = rows.iter().find(|r| r["precision"] == "f32").expect("f32");
    assert!(f32_row["min_cosine"].as_f64().expect("cosine") >= 0.9999);
    assert!(dir.join("image_encoder_f32.nnef.tar").is_file());

    let scene = image("scene_640x480.png");
    let o = run(args!("bench", "--bundle", &dir, "--frames", "2", "--json", &scene));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("bench JSON");
    assert_eq!(v["model_form"], "nnef");
    let o = run(args!("bench", "--bundle", &dir, "--onnx", "--frames", "2", "--json", &scene));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("bench JSON");
    assert_eq!(v["model_form"], "onnx");
}

#[test]
fn the_shipped_store_and_eval_apply_the_default_bundles_calibration() {
    let b = clip_edge_runtime::Bundle::load(bundle()).expect("bundle");
    let cal = b.text.as_ref().and_then(|t| t.calibration.clone()).expect("[text.calibration]");
    let seen = cal.load_seen_names().expect("seen names");
    let store = clip_edge_runtime::PromptStore::open(bundle().join("prompts.store")).expect("store");
    for (i, e) in store.entries().iter().enumerate() {
        let unseen = e.kind == EntryKind::Class
            && !seen.contains(&clip_edge_runtime::bundle::Calibration::normalise(&e.label));
        let want = if unseen { cal.unseen_bonus } else { 0.0 };
        assert_eq!(store.similarity_offset(i), want, "{}", e.label);
    }
    let i = store.find("delivery truck").expect("held-out demo class");
    assert!(store.similarity_offset(i) > 0.0);

    let dir = tempfile::tempdir().expect("tmp");
    for (class, file) in [("delivery truck", "delivery_truck-google.png"), ("dog", "dog-google.png")] {
        std::fs::create_dir(dir.path().join(class)).expect("mkdir");
        std::fs::copy(bundle().join("samples").join(file), dir.path().join(class).join(file)).expect("copy");
    }
    let labels = bundle().join("labels.toml");
    let eval = |extra: &str| {
        let mut a = vec!["-q", "eval", "--json", "--bundle"];
        if !extra.is_empty() {
            a.push(extra);
        }
        let o = Command::new(env!("CARGO_BIN_EXE_clip-edge"))
            .args(&a[..4])
            .arg(bundle())
            .args(&a[4..])
            .arg("--data")
            .arg(dir.path())
            .arg("--labels")
            .arg(&labels)
            .output()
            .expect("eval");
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("json")
    };
    assert_eq!(eval("")["calibrated_candidates"], 1);
    let plain = eval("--no-calibration");
    assert_eq!(plain["calibrated_candidates"], 0);
    assert_eq!(plain["n"], 2);
}
