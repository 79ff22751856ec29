//! Decoding image files into RGB frames, with limits that keep a hostile or
//! broken file from exhausting memory.

use std::path::Path;

use image::{ImageReader, Limits, RgbImage};

use crate::error::{Error, Result};

/// Largest width or height accepted, in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// Largest decoder allocation accepted, in bytes.
pub const MAX_ALLOC: u64 = 512 * 1024 * 1024;

fn limits() -> Limits {
    let mut l = Limits::default();
    l.max_image_width = Some(MAX_SIDE);
    l.max_image_height = Some(MAX_SIDE);
    l.max_alloc = Some(MAX_ALLOC);
    l
}

/// Whether `path` names an image file the decoder reads (by extension,
/// case-insensitive): what folders of frames (replay cameras, evaluation
/// sets) are filtered by.
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// The file extensions [`is_image_file`] accepts, lower case.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "webp"];

/// Reads and decodes an image file (PNG, JPEG, BMP, WebP) into RGB8.
///
/// The format is detected from the content, not the extension; alpha is
/// dropped and grey is replicated into three channels. Images declaring more
/// than [`MAX_SIDE`] pixels on a side are refused before any pixel is decoded.
pub fn load_rgb(path: impl AsRef<Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::image(path, "file does not exist"),
        _ => Error::io(path, e),
    })?;
    decode_rgb(path, &bytes)
}

/// Decodes an in-memory image; `path` names it in errors.
pub fn decode_rgb(path: &Path, bytes: &[u8]) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(Error::image(path, "file is empty"));
    }
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::image(path, e.to_string()))?;
    if reader.format().is_none() {
        return Err(Error::image(path, "not a supported image format (PNG, JPEG, BMP, WebP)"));
    }
    reader.limits(limits());
    let img = reader.decode().map_err(|e| Error::image(path, crate::error::one_line(&e)))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::image(path, "image has no pixels"));
    }
    Ok(img.into_rgb8())
}

/// What a camera sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraFormat {
    /// One JPEG per frame.
    Mjpeg,
    /// Packed YUYV 4:2:2.
    Yuyv,
}

/// One camera frame as an RGB image, halved `halvings` times (see [`halvings`]):
/// MJPEG is decoded in full, then halved; YUYV is halved in the same pass as
/// its conversion. `device` names the source in errors; `width` x `height` is
/// the negotiated size (1..=[`MAX_SIDE`] each, else an error before any
/// pixel is touched); `stride` is the bytes per YUYV line. A JPEG is held to
/// the same limits as image files, and one whose header claims more pixels
/// on a side than negotiated is refused before it is decoded (a few hundred
/// bytes can claim megapixels that take seconds to fill).
pub fn decode_camera_frame(
    device: &Path,
    format: CameraFormat,
    data: &[u8],
    width: u32,
    height: u32,
    stride: u32,
    halvings: u32,
) -> Result<RgbImage> {
    if !(1..=MAX_SIDE).contains(&width) || !(1..=MAX_SIDE).contains(&height) {
        return Err(Error::image(
            device,
            format!("frame size {width}x{height} is out of range (1..={MAX_SIDE} on each side)"),
        ));
    }
    let (mut img, mut left) = match format {
        CameraFormat::Mjpeg => {
            let reader = || ImageReader::with_format(std::io::Cursor::new(data), image::ImageFormat::Jpeg);
            let (w, h) = reader()
                .into_dimensions()
                .map_err(|e| Error::image(device, format!("MJPEG frame: {}", crate::error::one_line(&e))))?;
            if w > width || h > height {
                return Err(Error::image(
                    device,
                    format!("MJPEG frame is {w}x{h}, larger than the negotiated {width}x{height}"),
                ));
            }
            let mut reader = reader();
            reader.limits(limits());
            let img = reader
                .decode()
                .map_err(|e| Error::image(device, format!("MJPEG frame: {}", crate::error::one_line(&e))))?;
            if img.width() == 0 || img.height() == 0 {
                return Err(Error::image(device, "MJPEG frame has no pixels"));
            }
            (img.into_rgb8(), halvings)
        }
        CameraFormat::Yuyv => {
            if !width.is_multiple_of(2) {
                return Err(Error::image(
                    device,
                    format!("YUYV frame width {width} is odd (pixels come in pairs)"),
                ));
            }
            let img = yuyv_to_rgb(data, width, height, stride, halvings > 0).ok_or_else(|| {
                Error::image(device, format!("short YUYV frame ({} bytes for {width}x{height})", data.len()))
            })?;
            (img, halvings.saturating_sub(1))
        }
    };
    // `halvings` comes from the negotiated size; a camera may still send a
    // smaller JPEG, which is halved only while it stays at least 2x2.
    while left > 0 && img.width() >= 2 && img.height() >= 2 {
        img = halve_rgb(&img);
        left -= 1;
    }
    Ok(img)
}

/// How many times a `w` x `h` camera frame can be halved while its shorter
/// side stays at least `min_short_side` (the daemon passes twice the model's
/// input size, so the model's own antialiased resize still makes the last step).
pub fn halvings(w: u32, h: u32, min_short_side: u32) -> u32 {
    let mut short = w.min(h);
    let mut n = 0;
    while min_short_side > 0 && short / 2 >= min_short_side {
        short /= 2;
        n += 1;
    }
    n
}

/// Halves an RGB frame: each output pixel is the rounded mean of a 2x2 block
/// (an odd last row or column is dropped). A quarter of the pixels for the
/// resize that follows; the box filter is the only difference from resizing
/// the full frame.
pub fn halve_rgb(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width() as usize / 2, img.height() as usize / 2);
    if w == 0 || h == 0 {
        return RgbImage::new(w as u32, h as u32);
    }
    let src = img.as_raw();
    let row = img.width() as usize * 3;
    let mut out = vec![0u8; w * h * 3];
    for (y, dst) in out.chunks_exact_mut(w * 3).enumerate() {
        let (r0, r1) = (&src[2 * y * row..][..w * 6], &src[(2 * y + 1) * row..][..w * 6]);
        for ((d, a), b) in dst.chunks_exact_mut(3).zip(r0.chunks_exact(6)).zip(r1.chunks_exact(6)) {
            for c in 0..3 {
                d[c] = ((a[c] as u16 + a[c + 3] as u16 + b[c] as u16 + b[c + 3] as u16 + 2) >> 2) as u8;
            }
        }
    }
    RgbImage::from_raw(w as u32, h as u32, out).unwrap_or_default()
}

/// Converts packed YUYV 4:2:2 (BT.601, limited range, as webcams send it) to
/// RGB. `stride` is the bytes per line the driver reported (at least `2 * width`).
/// With `halve`, every 2x2 block of pixels becomes one output pixel (mean of
/// its four luma samples and two chroma pairs): a quarter of the work, for
/// frames whose shorter side is at least twice what the model needs.
/// `None` when the buffer is too short for the geometry.
pub fn yuyv_to_rgb(data: &[u8], width: u32, height: u32, stride: u32, halve: bool) -> Option<RgbImage> {
    let (w, h) = (usize::try_from(width).ok()?, usize::try_from(height).ok()?);
    if w == 0 || w % 2 != 0 || h == 0 {
        return None;
    }
    // Checked: on 32-bit boards a crafted geometry must not wrap into a short bound.
    let line = w.checked_mul(2)?;
    let stride = usize::try_from(stride).ok()?.max(line);
    let needed = stride.checked_mul(h - 1)?.checked_add(line)?;
    w.checked_mul(h)?.checked_mul(3)?;
    if data.len() < needed {
        return None;
    }
    let pixel = |y: i32, u: i32, v: i32, out: &mut [u8]| {
        let c = 298 * (y - 16);
        out[0] = ((c + 409 * v + 128) >> 8).clamp(0, 255) as u8;
        out[1] = ((c - 100 * u - 208 * v + 128) >> 8).clamp(0, 255) as u8;
        out[2] = ((c + 516 * u + 128) >> 8).clamp(0, 255) as u8;
    };
    if halve && h >= 2 {
        let (ow, oh) = (w / 2, h / 2);
        let mut out = vec![0u8; ow * oh * 3];
        for y in 0..oh {
            let (r0, r1) = (&data[2 * y * stride..][..w * 2], &data[(2 * y + 1) * stride..][..w * 2]);
            for (x, (a, b)) in r0.chunks_exact(4).zip(r1.chunks_exact(4)).enumerate() {
                let luma = (a[0] as i32 + a[2] as i32 + b[0] as i32 + b[2] as i32 + 2) >> 2;
                let u = ((a[1] as i32 + b[1] as i32 + 1) >> 1) - 128;
                let v = ((a[3] as i32 + b[3] as i32 + 1) >> 1) - 128;
                pixel(luma, u, v, &mut out[(y * ow + x) * 3..][..3]);
            }
        }
        return RgbImage::from_raw(ow as u32, oh as u32, out);
    }
    let mut out = vec![0u8; w * h * 3];
    for y in 0..h {
        let row = &data[y * stride..y * stride + w * 2];
        for (x2, px) in row.chunks_exact(4).enumerate() {
            let (u, v) = (px[1] as i32 - 128, px[3] as i32 - 128);
            for (k, yv) in [px[0], px[2]].into_iter().enumerate() {
                pixel(yv as i32, u, v, &mut out[(y * w + x2 * 2 + k) * 3..][..3]);
            }
        }
    }
    RgbImage::from_raw(width, height, out)
}

/// Packs RGB into YUYV 4:2:2 (BT.601, limited range): what a webcam would
/// send for this picture. For benchmarks and tests of the YUYV path.
pub fn rgb_to_yuyv(img: &RgbImage) -> Vec<u8> {
    let (w, h) = (img.width() as usize & !1, img.height() as usize);
    let mut out = Vec::with_capacity(w * h * 2);
    let yuv = |p: &image::Rgb<u8>| {
        let [r, g, b] = p.0.map(i32::from);
        (
            ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16,
            ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128,
            ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128,
        )
    };
    for y in 0..h {
        for x in (0..w).step_by(2) {
            let (y0, u0, v0) = yuv(img.get_pixel(x as u32, y as u32));
            let (y1, u1, v1) = yuv(img.get_pixel(x as u32 + 1, y as u32));
            out.extend([y0, (u0 + u1 + 1) >> 1, y1, (v0 + v1 + 1) >> 1].map(|v| v.clamp(0, 255) as u8));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        RgbImage::new(w, h)
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .expect("encode");
        out
    }

    #[test]
    fn image_files_are_known_by_extension_in_any_case() {
        for name in ["a.png", "b.JPG", "c.jpeg", "d.Bmp", "e.webp"] {
            assert!(is_image_file(Path::new(name)), "{name}");
        }
        for name in ["notes.txt", "png", "f.png.tmp", "g"] {
            assert!(!is_image_file(Path::new(name)), "{name}");
        }
    }

    #[test]
    fn camera_frames_of_no_size_odd_yuyv_width_or_a_huge_jpeg_are_errors() {
        let dev = Path::new("/dev/video9");
        let jpeg = {
            let mut out = Vec::new();
            RgbImage::new(8, 8)
                .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Jpeg)
                .expect("encode");
            out
        };
        let yuyv = vec![128u8; 64 * 2 * 8];
        let decode = |format, data: &[u8], w, h| decode_camera_frame(dev, format, data, w, h, 0, 0);
        for (w, h) in [(0, 8), (8, 0), (0, 0), (MAX_SIDE + 2, 8)] {
            for (format, data) in [(CameraFormat::Mjpeg, &jpeg), (CameraFormat::Yuyv, &yuyv)] {
                let e = decode(format, data, w, h).expect_err("no size").to_string();
                assert!(e.contains("/dev/video9") && e.contains("out of range"), "{w}x{h}: {e}");
            }
        }
        let e = decode(CameraFormat::Yuyv, &yuyv, 7, 8).expect_err("odd").to_string();
        assert!(e.contains("width 7 is odd"), "{e}");
        // A JPEG whose frame header claims 65535x65535 is refused before decoding.
        let mut huge = jpeg.clone();
        let sof = huge.windows(2).position(|w| w == [0xFF, 0xC0]).expect("SOF0");
        huge[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        let e = decode(CameraFormat::Mjpeg, &huge, 640, 480).expect_err("huge").to_string();
        assert!(e.contains("MJPEG frame"), "{e}");
        assert!(decode(CameraFormat::Mjpeg, &jpeg, 8, 8).is_ok());
        // A camera may send a smaller JPEG than negotiated, never a larger one.
        assert!(decode(CameraFormat::Mjpeg, &jpeg, 16, 16).is_ok());
        let e = decode(CameraFormat::Mjpeg, &jpeg, 8, 4).expect_err("larger").to_string();
        assert!(e.contains("/dev/video9") && e.contains("8x8, larger than the negotiated 8x4"), "{e}");
        // Geometry whose byte count overflows is a short frame, not a wrap-around.
        assert!(yuyv_to_rgb(&yuyv, u32::MAX - 1, 2, u32::MAX, false).is_none());
    }

    #[test]
    fn yuyv_grey_and_colour() {
        // Y=235 U=V=128 is white; Y=16 is black.
        let white = yuyv_to_rgb(&[235, 128, 235, 128], 2, 1, 4, false).expect("rgb");
        assert_eq!(white.as_raw(), &[255, 255, 255, 255, 255, 255]);
        let black = yuyv_to_rgb(&[16, 128, 16, 128], 2, 1, 0, false).expect("rgb");
        assert_eq!(black.as_raw(), &[0, 0, 0, 0, 0, 0]);
        let red = yuyv_to_rgb(&[81, 90, 81, 240], 2, 1, 4, false).expect("rgb");
        assert!(red.as_raw()[0] > 240 && red.as_raw()[1] < 10 && red.as_raw()[2] < 10, "{:?}", red.as_raw());
        assert!(yuyv_to_rgb(&[0; 3], 2, 1, 4, false).is_none());
    }

    #[test]
    fn yuyv_round_trip_and_halving_match_the_rgb_path() {
        let img =
            RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x + y) * 2) as u8]));
        let yuyv = rgb_to_yuyv(&img);
        assert_eq!(yuyv.len(), 64 * 48 * 2);
        let back = yuyv_to_rgb(&yuyv, 64, 48, 128, false).expect("full");
        let err = |a: &RgbImage, b: &RgbImage| {
            a.as_raw().iter().zip(b.as_raw()).map(|(&p, &q)| (p as i32 - q as i32).abs()).max().unwrap_or(0)
        };
        // 4:2:2 shares chroma between pixel pairs: smooth gradients survive within a few levels.
        assert!(err(&img, &back) <= 12, "round trip error {}", err(&img, &back));
        let halved = yuyv_to_rgb(&yuyv, 64, 48, 128, true).expect("halved");
        assert_eq!(halved.dimensions(), (32, 24));
        let reference = halve_rgb(&back);
        assert!(
            err(&halved, &reference) <= 6,
            "fused halving vs halving the RGB: {}",
            err(&halved, &reference)
        );
        let with_padding: Vec<u8> =
            yuyv.chunks_exact(128).flat_map(|r| r.iter().copied().chain([0; 16])).collect();
        assert_eq!(yuyv_to_rgb(&with_padding, 64, 48, 144, true).expect("stride"), halved);
    }

    #[test]
    fn halving_is_a_rounded_2x2_mean_and_stops_at_the_limit() {
        let img =
            RgbImage::from_raw(3, 2, vec![0, 10, 255, 1, 11, 255, 9, 9, 9, 2, 12, 254, 3, 13, 255, 9, 9, 9])
                .expect("img");
        assert_eq!(halve_rgb(&img).as_raw(), &[2, 12, 255]);
        assert_eq!(halve_rgb(&RgbImage::new(1, 5)).dimensions(), (0, 2), "degenerate input, no panic");
        assert_eq!(halvings(640, 480, 128), 1, "240 >= 128, 120 < 128");
        assert_eq!(halvings(640, 480, 448), 0, "a 224 px model gets the full frame");
        assert_eq!(halvings(1920, 1080, 128), 3);
        assert_eq!(halvings(640, 480, 0), 0);
    }

    #[test]
    fn decodes_png_from_content() {
        let img = decode_rgb(Path::new("x.jpg"), &png(5, 3)).expect("decode");
        assert_eq!(img.dimensions(), (5, 3));
    }

    #[test]
    fn rejects_garbage_empty_and_truncated() {
        for (bytes, want) in [
            (b"hello world, not an image".to_vec(), "not a supported image format"),
            (Vec::new(), "file is empty"),
            (png(40, 40)[..60].to_vec(), "cannot read image"),
        ] {
            let err = decode_rgb(Path::new("f.png"), &bytes).expect_err(want).to_string();
            assert!(err.starts_with("f.png: cannot read image"), "{err}");
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn refuses_huge_declared_dimensions_without_allocating() {
        let mut bytes = png(1, 1);
        // IHDR width and height live at bytes 16..24; patch them and fix the chunk CRC.
        bytes[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32fast::hash(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = decode_rgb(Path::new("big.png"), &bytes).expect_err("huge").to_string();
        assert!(err.starts_with("big.png: cannot read image"), "{err}");
        assert!(err.to_lowercase().contains("limit"), "{err}");
    }
}
