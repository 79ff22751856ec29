//! The real GPIO and V4L2 backends against real kernel devices. Ignored by a
//! plain `cargo test` (listed as ignored, with what they need); run them with
//! `cargo test -p clip-edge-board --test hardware -- --ignored` and
//! environment variables naming the devices (a missing one fails the test):
//!
//! - `CLIP_EDGE_TEST_GPIO_CHIP` and `CLIP_EDGE_TEST_GPIO_LINE`: an input line to
//!   request for edge events (the test checks the request, a timeout and that
//!   the line's level reads, as the enrolment button's hold does),
//!   and `CLIP_EDGE_TEST_GPIO_OUT_LINE`: an output line to pulse.
//! - `CLIP_EDGE_TEST_V4L2_DEVICE` (and optionally `CLIP_EDGE_TEST_V4L2_FORMAT`,
//!   mjpeg or yuyv): a camera to capture three frames from.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clip_edge_board::camera::{FrameSource, V4l2};
use clip_edge_board::config::{Bias, Edge, PixelFormat};
use clip_edge_board::output::{open_cdev, Pulser};
use clip_edge_board::trigger::{GpioTrigger, Trigger, Wait};

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn required(name: &str) -> String {
    var(name).unwrap_or_else(|| {
        panic!("{name} is not set: this test needs the device it names (see the file's header)")
    })
}

#[test]
#[ignore = "needs a GPIO chip: CLIP_EDGE_TEST_GPIO_CHIP, CLIP_EDGE_TEST_GPIO_LINE (and _OUT_LINE), then --ignored"]
fn real_gpio_line_can_be_requested_for_edges_and_pulsed() {
    let (chip, line) = (required("CLIP_EDGE_TEST_GPIO_CHIP"), required("CLIP_EDGE_TEST_GPIO_LINE"));
    let chip = PathBuf::from(chip);
    let line: u32 = line.parse().expect("CLIP_EDGE_TEST_GPIO_LINE is a number");
    let mut t = GpioTrigger::open(&chip, line, Edge::Both, Bias::AsIs, Duration::from_millis(5), false)
        .expect("request");
    let r = t.wait(Duration::from_millis(50)).expect("wait");
    assert!(matches!(r, Wait::Timeout | Wait::Event(_)));
    // The enrolment button's hold is this level, read through the same request.
    assert!(t.is_active().expect("line value").is_some(), "a GPIO line always has a level");
    if let Some(out) = var("CLIP_EDGE_TEST_GPIO_OUT_LINE") {
        let pin = open_cdev(&chip, out.parse().expect("number"), false).expect("output line");
        let mut p =
            Pulser::new(Box::new(pin), chip.clone(), Duration::from_millis(20), vec![]).expect("pulser");
        let t0 = Instant::now();
        p.start(t0).expect("high");
        std::thread::sleep(Duration::from_millis(30));
        assert!(!p.poll(Instant::now()).expect("low"));
    }
}

#[test]
#[ignore = "needs a camera: CLIP_EDGE_TEST_V4L2_DEVICE (and _FORMAT), then --ignored"]
fn real_camera_gives_fresh_frames() {
    let device = required("CLIP_EDGE_TEST_V4L2_DEVICE");
    let format = match std::env::var("CLIP_EDGE_TEST_V4L2_FORMAT").as_deref() {
        Ok("mjpeg") => PixelFormat::Mjpeg,
        _ => PixelFormat::Yuyv,
    };
    let mut cam =
        V4l2::open(&PathBuf::from(device), format, 640, 480, 1, Duration::from_secs(3)).expect("open");
    for _ in 0..3 {
        let f = cam.capture().expect("frame");
        assert!(f.image.width() >= 16 && f.image.height() >= 16);
    }
}
