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
