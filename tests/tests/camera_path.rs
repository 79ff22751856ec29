//! The daemon's camera path halves 640x480 frames (2x2 mean, fused into the
//! YUYV conversion) before the model's own resize when the model needs far
//! fewer pixels. That must not change what the emoji model sees: the same
//! top-1 label (one of the top two where they nearly tie) and nearly the same
//! embedding as the full frame, for MJPEG and YUYV frames made from every sample.

use clip_edge_runtime::frame::{decode_camera_frame, halvings, load_rgb, rgb_to_yuyv, CameraFormat};
use clip_edge_runtime::{Bundle, Classifier, DecisionRule};
use clip_edge_tests::{cosine, emoji_samples, repo_root as root};
use image::{imageops, Rgb, RgbImage};

/// A camera-like 640x480 frame: the sample scaled up to 360 px on a shaded background.
fn camera_frame(sample: &RgbImage) -> RgbImage {
    let mut frame = RgbImage::from_fn(640, 480, |x, y| Rgb([90 + (x / 8) as u8, 110 + (y / 8) as u8, 120]));
    let big = imageops::resize(sample, 360, 360, imageops::FilterType::CatmullRom);
    imageops::overlay(&mut frame, &big, 150, 70);
    frame
}

#[test]
fn halved_camera_frames_keep_the_label_and_the_embedding() {
    let bundle = Bundle::load(root().join("models/emoji")).expect("bundle");
    let mut clf = Classifier::load(&bundle, None, None).expect("classifier");
    let rule = DecisionRule::default();
    let n = halvings(640, 480, 2 * bundle.preprocess.size);
    assert_eq!(n, 1, "a 64 px model gets 640x480 frames as 320x240");
    let samples = emoji_samples();
    let dev = std::path::Path::new("/dev/video-test");
    let mut worst = (1f32, String::new());
    let mut ties = 0;
    for path in &samples {
        let frame = camera_frame(&load_rgb(path).expect("sample"));
        let mut jpg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 85).encode_image(&frame).expect("jpeg");
        for (format, data) in [(CameraFormat::Mjpeg, jpg), (CameraFormat::Yuyv, rgb_to_yuyv(&frame))] {
            let decode = |h| decode_camera_frame(dev, format, &data, 640, 480, 1280, h).expect("frame");
            let (full, halved) = (decode(0), decode(n));
            assert_eq!(halved.dimensions(), (320, 240));
            let a = clf.encoder.encode(&full).expect("full frame");
            let b = clf.encoder.encode(&halved).expect("halved frame");
            let c = cosine(a.as_slice(), b.as_slice());
            if c < worst.0 {
                worst = (c, format!("{} {format:?}", path.display()));
            }
            let full = clf.score(&a, 2, &rule).expect("score");
            let lb = clf.score(&b, 1, &rule).expect("score").top[0].index;
            let (first, second) = (full.top[0], full.top[1]);
            // A near tie (logits within ln 1.5) may go either way; then the
            // halved frame must still pick one of the two.
            let tie = first.score < 1.5 * second.score;
            let ok = lb == first.index || (tie && lb == second.index);
            if tie {
                ties += 1;
            }
            assert!(
                ok,
                "{} as {format:?}: the halved frame says '{}', the full frame '{}' (p {:.3}) ahead of '{}' (p {:.3})",
                path.display(),
                clf.label(lb),
                clf.label(first.index),
                first.score,
                clf.label(second.index),
                second.score
            );
        }
    }
    println!(
        "halved vs full camera frames: worst embedding cosine {:.5} ({}); {ties} near ties of the top two",
        worst.0, worst.1
    );
    assert!(ties <= 4, "{ties} of {} frames are near ties: the check lost its power", 2 * samples.len());
    assert!(worst.0 >= 0.995, "halving moved an embedding too far: cosine {:.5} for {}", worst.0, worst.1);
}

#[test]
fn broken_camera_frames_are_decode_errors_naming_the_device() {
    let dev = std::path::Path::new("/dev/video-test");
    let e = decode_camera_frame(dev, CameraFormat::Mjpeg, b"\xff\xd8 not a jpeg", 640, 480, 1280, 1)
        .expect_err("garbage MJPEG")
        .to_string();
    assert!(e.starts_with("/dev/video-test: cannot read image: MJPEG frame"), "{e}");
    let e = decode_camera_frame(dev, CameraFormat::Yuyv, &[0u8; 1000], 640, 480, 1280, 1)
        .expect_err("short YUYV")
        .to_string();
    assert!(e.contains("short YUYV frame (1000 bytes for 640x480)"), "{e}");
}

#[test]
fn a_jpeg_smaller_than_the_negotiated_size_is_not_halved_to_nothing() {
    let mut jpg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 85)
        .encode_image(&RgbImage::from_pixel(1, 1, Rgb([200, 10, 10])))
        .expect("jpeg");
    let dev = std::path::Path::new("/dev/video-test");
    let img = decode_camera_frame(dev, CameraFormat::Mjpeg, &jpg, 640, 480, 1280, 1).expect("1x1 frame");
    assert_eq!(img.dimensions(), (1, 1));
}
