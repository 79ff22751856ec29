//! `clip-edge` as a user runs it: exit codes, one-line errors naming the file,
//! no panics, and the JSON shapes scripts rely on.

mod common;

use std::process::Command;

use common::{assert_clean_failure, bundle, classify_json, image, run, stderr, store_bytes};

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
    assert_eq!(file["tract_ops"], false, "{file}");
    let tract = bench(&["--tract-ops"]);
    assert_eq!(tract["tract_ops"], true, "{tract}");
    assert!(tract["infer_ms_median"].as_f64().is_some_and(|v| v > 0.0), "{tract}");
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

    let o = classify_json(args![
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
    let named: Vec<&str> = lines.iter().map(|l| l["image"].as_str().expect("image")).collect();
    for (line, path) in named.iter().zip([&text, &truncated, &ok, &huge_path, &missing]) {
        assert_eq!(*line, path.display().to_string());
    }
    // The readable image is classified (ranked labels), the others are errors.
    assert!(lines[2].get("error").is_none() && lines[2]["top"][0]["label"].is_string(), "{}", lines[2]);
    for i in [0, 1, 3, 4] {
        assert!(lines[i]["error"].as_str().is_some_and(|e| !e.is_empty()), "{}", lines[i]);
    }
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
    // The read end is closed before the child starts: its first write must fail
    // (closing it after spawn raced a fast child whose output fit the pipe buffer).
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let o = Command::new(env!("CARGO_BIN_EXE_clip-edge"))
        .args(["prompts", "inspect", "--pairs", "36"])
        .arg(&store)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run");
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert_eq!(o.status.code(), Some(i32::from(clip_edge_runtime::process::BROKEN_PIPE_STATUS)));
}

#[test]
fn an_error_names_its_file_and_gives_the_cause_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("never.store");
    let o = run(args![
        "prompts",
        "build",
        "--bundle",
        &bundle(),
        "--labels",
        "/nonexistent/labels.toml",
        "--out",
        &out
    ]);
    assert_clean_failure(&o, "/nonexistent/labels.toml", "No such file");
    let o = run(args!["eval", "--bundle", &bundle(), "--data", "/nonexistent/data"]);
    assert_clean_failure(&o, "/nonexistent/data", "No such file");
}

#[test]
fn prompts_random_writes_a_store_that_classify_accepts() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("r.store");
    let random = |labels: &[&str]| {
        let (bundle, mut a) = (bundle(), vec!["prompts".to_string(), "random".into()]);
        a.extend(labels.iter().map(|l| l.to_string()));
        a.extend([
            "--bundle".into(),
            bundle.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ]);
        run(&a.iter().map(std::ffi::OsStr::new).collect::<Vec<_>>())
    };
    let o = random(&["--labels", "x,y,z", "--background", "wall", "--element", "int8", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON report");
    assert_eq!((report["entries"].as_u64(), report["element"].as_str()), (Some(4), Some("int8")));
    let img = image("noise_100x333.png");
    let o = classify_json(args!["--prompts", out.as_os_str(), img.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = random(&["--labels", "x,x"]);
    assert_clean_failure(&o, "label 'x'", "given twice");
    assert!(clip_edge_runtime::PromptStore::open(&out).is_ok(), "old store must survive a failed build");
}
