//! Camera frames as a driver hands them over: MJPEG or YUYV at any
//! negotiated size (0 and odd widths included), stride and halving. The
//! first 8 bytes are the geometry: format (even: MJPEG, odd: YUYV), width and
//! height (u16 little-endian each), stride (u16), halvings (u8); the rest is
//! the frame.
#![no_main]

use std::path::Path;

use clip_edge_runtime::frame::{decode_camera_frame, CameraFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, frame)) = data.split_first_chunk::<8>() else { return };
    let format = if head[0] % 2 == 0 { CameraFormat::Mjpeg } else { CameraFormat::Yuyv };
    let u16_at = |i: usize| u32::from(u16::from_le_bytes([head[i], head[i + 1]]));
    let (width, height, stride, halvings) = (u16_at(1), u16_at(3), u16_at(5), u32::from(head[7] % 8));
    if let Ok(img) =
        decode_camera_frame(Path::new("/dev/fuzz"), format, frame, width, height, stride, halvings)
    {
        assert!(img.width() > 0 && img.height() > 0, "an empty frame was accepted");
    }
});
