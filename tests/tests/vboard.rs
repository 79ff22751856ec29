//! The device binary on a virtual ARM board (`tools/vboard/`): qemu `virt` with
//! Debian's arm64 kernel (a 64-bit OS, cortex-a72, 1 GB) or its armmp kernel (a
//! 32-bit OS, cortex-a7, 512 MB like a Pi Zero 2), the PL061 GPIO controller's character
//! device and the vivid V4L2 camera. Heavy (cross-builds the release device
//! binary, boots a kernel under emulation), so a plain `cargo test` lists it as
//! ignored; `.ci/run` runs it with `--ignored`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const PRESSES: usize = 3;

fn lines_with<'a>(console: &'a str, prefix: &str) -> Vec<&'a str> {
    console.lines().filter_map(|l| l.strip_prefix(prefix)).collect()
}

fn seconds_after(line: &str, word: &str) -> f64 {
    let rest = &line[line.find(word).unwrap_or_else(|| panic!("'{word}' in '{line}'")) + word.len()..];
    rest.split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("seconds in '{line}'"))
}

#[test]
#[ignore = "boots the virtual ARM board (minutes): cargo test --workspace --test vboard -- --ignored --test-threads 1"]
fn daemon_on_a_virtual_arm_board_handles_gpio_edges_v4l2_frames_a_camera_loss_and_sigterm() {
    board_run("aarch64");
}

#[test]
#[ignore = "boots the 32-bit virtual ARM board (minutes): cargo test --workspace --test vboard -- --ignored --test-threads 1"]
fn the_same_on_a_32_bit_board_with_512_mb() {
    board_run("armv7");
}

fn board_run(arch: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let dir = if arch == "aarch64" {
        "target/vboard/test".to_string()
    } else {
        format!("target/vboard-{arch}/test")
    };
    let out = match std::env::var("CLIP_EDGE_VBOARD_OUT") {
        Ok(base) => PathBuf::from(base).join(arch),
        Err(_) => root.join(dir),
    };
    // The one-file install: the guest installs this package first and checks it.
    // Not under `out`'s parent: tools/vboard/build.sh empties its own folder.
    let debs = root.join("target/vboard-deb").join(arch);
    let _ = std::fs::remove_dir_all(&debs);
    let status = Command::new(root.join("tools/cross/package.sh"))
        .args([arch, "--no-lintian", "--out"])
        .arg(&debs)
        .status()
        .expect("run tools/cross/package.sh");
    assert!(status.success(), "tools/cross/package.sh {arch} failed ({status})");
    let deb = std::fs::read_dir(&debs)
        .expect("package folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb from tools/cross/package.sh");
    let status = Command::new(root.join("tools/vboard/run.sh"))
        .args(["--arch", arch, "--presses", &PRESSES.to_string(), "--timeout", "900", "--deb"])
        .arg(&deb)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run tools/vboard/run.sh");
    assert!(
        status.success(),
        "tools/vboard/run.sh failed ({status}): its output is above; the guest console, if it booted, in {}",
        out.join("console.txt").display()
    );
    let console = std::fs::read_to_string(out.join("console.txt")).expect("console.txt");

    let ours = lines_with(&console, "vboard: ");
    let find = |p: &str| {
        ours.iter().copied().find(|l| l.starts_with(p)).unwrap_or_else(|| panic!("no 'vboard: {p}' line"))
    };

    let dpkg = find("package: ");
    assert!(dpkg.starts_with("package: dpkg exit 0 "), "dpkg installs the package: {dpkg}");
    let user = find("package user: ");
    assert!(
        user.contains("(clip-edge)") && user.contains("(gpio)") && user.contains("(video)"),
        "the package's user, in the gpio and video groups: {user}"
    );
    let files = find("package files: ");
    assert!(!files.contains("=missing"), "every installed file is there: {files}");
    for (file, mode) in [
        ("/usr/bin/clip-edge-board", "root:root:755"),
        ("/etc/clip-edge/config.toml", "root:root:644"),
        ("/var/lib/clip-edge/prompts.store", "clip-edge:clip-edge:644"),
    ] {
        assert!(files.contains(&format!("{file}={mode}")), "{file} is {mode}: {files}");
    }
    assert_eq!(find("package state dir: "), "package state dir: clip-edge:clip-edge:755");
    let check = find("package check as clip-edge: ");
    assert!(
        check.starts_with("package check as clip-edge: exit 0 "),
        "the self-check passes as the package's user against the installed paths: {check}"
    );

    let wrong = find("wrong line: ");
    assert!(wrong.starts_with("wrong line: exit 1 "), "a wrong GPIO line must fail the self-check: {wrong}");
    assert!(
        wrong.contains("/dev/gpiochip0") && wrong.contains("no line 99") && wrong.contains("8 lines"),
        "the error names the chip, the line and the lines it has: {wrong}"
    );

    let wrong = find("wrong output line: ");
    assert!(wrong.starts_with("wrong output line: exit 1 "), "a wrong output line must fail: {wrong}");
    assert!(wrong.contains("/dev/gpiochip0") && wrong.contains("no line 42"), "{wrong}");

    let ro = find("store in read-only /opt: ");
    assert!(
        ro.contains("exit 1 error: start-up self-check failed"),
        "a store on a read-only mount must fail the self-check: {ro}"
    );
    assert!(
        ro.contains("/opt/clip-edge/models/emoji/prompts.store")
            && ro.contains("Read-only file system")
            && ro.contains("/var/lib/clip-edge"),
        "the error names the store, the cause and where to keep it: {ro}"
    );

    let enrolled: Value =
        serde_json::from_str(find("enrolled ").split_once(": ").expect("json").1).expect("enrolment JSON");
    assert_eq!(enrolled["added"], 3, "three V4L2 frames enrolled: {enrolled}");

    let events: Vec<Value> = std::fs::read_to_string(out.join("events.jsonl"))
        .expect("events.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("event line {l}: {e}")))
        .collect();
    let of = |t: &str| events.iter().filter(|e| e["type"] == t).collect::<Vec<_>>();
    let ready = of("ready");
    assert_eq!(ready.len(), 1, "one ready event");
    assert_eq!(ready[0]["trigger"], "GPIO /dev/gpiochip0 line 3");
    assert!(ready[0]["camera"].as_str().is_some_and(|c| c.starts_with("V4L2 camera /dev/video0 Yuyv")));

    let handled: Vec<&Value> =
        events.iter().filter(|e| e["type"] == "event" || e["type"] == "error").collect();
    assert!(handled.len() > PRESSES + 1, "presses, the camera loss and the recovery: {handled:?}");
    let presses = &handled[..PRESSES];
    let mut last_ts = 0;
    for e in presses {
        assert_eq!(e["type"], "event", "{e}");
        let ts = e["trigger_ts_ns"].as_u64().expect("trigger_ts_ns");
        assert!(ts > last_ts, "kernel timestamps increase: {ts} after {last_ts}");
        last_ts = ts;
        assert_eq!(e["frames"], 1, "one V4L2 frame classified: {e}");
        assert_eq!(e["coalesced"], 0, "one edge per press: {e}");
        let t = &e["timing_ms"];
        for stage in ["trigger_to_frame", "decode", "preprocess", "infer", "total"] {
            assert!(t[stage].as_f64().is_some_and(|v| v > 0.0), "timing_ms.{stage} reported: {e}");
        }
        assert_eq!(e["label"], "test pattern", "the enrolled test pattern is recognised: {e}");
        assert_eq!(e["output"], true, "the output pin was pulsed: {e}");
    }
    let loss = handled[PRESSES];
    assert_eq!(loss["type"], "error", "the disconnected camera gives an error event: {loss}");
    assert_eq!(loss["kind"], "camera");
    assert!(loss["message"].as_str().is_some_and(|m| m.contains("/dev/video0")), "{loss}");
    let recovered = handled.last().expect("recovery");
    assert_eq!(recovered["type"], "event", "the camera came back: {recovered}");
    assert_eq!(recovered["frames"], 1);
    assert!(recovered["trigger_ts_ns"].as_u64().expect("ts") > last_ts);

    let stopped = of("stopped");
    assert_eq!(stopped.len(), 1, "one stopped event");
    assert_eq!(stopped[0]["reason"], "signal", "{}", stopped[0]);
    assert!(ours.contains(&"daemon exit 0 on SIGTERM"), "clean exit on SIGTERM");

    let pin = lines_with(&console, "vboard: pin ");
    let last_high = pin.iter().rposition(|l| l.starts_with("hi "));
    let Some(last_high) = last_high else {
        panic!("the output line was never seen high in debugfs: {pin:?}")
    };
    assert!(pin[last_high..].iter().any(|l| l.starts_with("lo ")), "and low again after the pulse: {pin:?}");

    let boot = seconds_after(find("kernel "), " up at ");
    let ready_at = seconds_after(find("ready at "), "ready at ");
    let mut totals: Vec<f64> =
        presses.iter().map(|e| e["timing_ms"]["total"].as_f64().expect("total")).collect();
    totals.sort_by(f64::total_cmp);
    let infer: Vec<f64> = presses.iter().map(|e| e["timing_ms"]["infer"].as_f64().expect("infer")).collect();
    let memory = find("daemon memory: ");
    assert!(memory.starts_with("daemon memory: VmHWM "), "the daemon's peak RSS is reported: {memory}");
    println!(
        "{arch} virtual board: kernel up at {boot:.2} s, daemon ready at {ready_at:.2} s; trigger-to-decision \
         median {:.0} ms (infer {infer:?} ms) under emulation; {} pin transitions; {memory}",
        totals[totals.len() / 2],
        pin.len()
    );
}
