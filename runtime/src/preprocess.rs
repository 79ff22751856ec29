//! Frame preprocessing: resize, centre crop, scale and normalise into an NCHW tensor.
//!
//! The resampler reproduces Pillow's `Image.resize` (the path open_clip and
//! torchvision take for CLIP): separable passes, horizontal then vertical,
//! antialiased filters whose support grows with the shrink factor, 22-bit
//! fixed-point coefficients and rounding to 8 bits after each pass. With the
//! same decoded pixels the tensor is bit-identical to
//! `Normalize(ToTensor(CenterCrop(Resize(img))))`.
//!
//! Only the output pixels inside the crop are computed. Coefficient tables are
//! cached for the last input size and every buffer is reused, so a stream of
//! same-sized frames allocates nothing here.

use image::RgbImage;

use crate::bundle::{Interpolation, PreprocessSpec, ResizeMode};

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per-axis resampling weights for one (input length, output window) pair.
#[derive(Debug, Default, Clone, PartialEq)]
struct AxisCoeffs {
    /// First input index read by each output index.
    start: Vec<u32>,
    /// Number of input indices read by each output index.
    len: Vec<u32>,
    /// Fixed-point weights, `stride` per output index.
    weights: Vec<i32>,
    stride: usize,
}

impl AxisCoeffs {
    /// Weights for output indices `offset..offset + count` of a resize from
    /// `in_size` to `out_size`.
    fn new(filter: Interpolation, in_size: u32, out_size: u32, offset: u32, count: u32) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let (support, kernel): (f64, fn(f64) -> f64) = match filter {
            Interpolation::Bicubic => (2.0, bicubic),
            Interpolation::Bilinear => (1.0, triangle),
            Interpolation::Nearest => (0.0, |_| 1.0),
        };
        let mut c = AxisCoeffs::default();
        if filter == Interpolation::Nearest {
            c.stride = 1;
            for xx in offset..offset + count {
                let src = (((xx as f64 + 0.5) * scale) as u32).min(in_size - 1);
                c.start.push(src);
                c.len.push(1);
                c.weights.push(1 << PRECISION_BITS);
            }
            return c;
        }
        let filterscale = scale.max(1.0);
        let ss = 1.0 / filterscale;
        let support = support * filterscale;
        c.stride = support.ceil() as usize * 2 + 1;
        let mut k = vec![0f64; c.stride];
        for xx in offset..offset + count {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as u32;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as u32;
            let n = (xmax - xmin) as usize;
            let mut ww = 0.0;
            for (x, slot) in k.iter_mut().enumerate().take(n) {
                let w = kernel((x as f64 + xmin as f64 - center + 0.5) * ss);
                *slot = w;
                ww += w;
            }
            c.start.push(xmin);
            c.len.push(n as u32);
            for (x, w) in k.iter().enumerate() {
                let w = if x < n && ww != 0.0 { w / ww } else { 0.0 };
                let fixed = w * (1u32 << PRECISION_BITS) as f64;
                c.weights.push(if w < 0.0 { (fixed - 0.5) as i32 } else { (fixed + 0.5) as i32 });
            }
        }
        c
    }

    fn taps(&self, i: usize) -> (usize, &[i32]) {
        let len = self.len[i] as usize;
        let w = &self.weights[i * self.stride..i * self.stride + len];
        (self.start[i] as usize, w)
    }
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    if acc >= (1 << PRECISION_BITS << 8) {
        255
    } else if acc <= 0 {
        0
    } else {
        (acc >> PRECISION_BITS) as u8
    }
}

/// Geometry of one resize-and-crop: resized size and crop origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Width after resizing, before cropping.
    pub resized_w: u32,
    /// Height after resizing, before cropping.
    pub resized_h: u32,
    /// Left edge of the crop in the resized image.
    pub left: u32,
    /// Top edge of the crop in the resized image.
    pub top: u32,
}

impl Geometry {
    /// Resize and crop as torchvision does for `Resize(size)` + `CenterCrop(size)`
    /// (shortest side), or `Resize((size, size))` (squash).
    pub fn new(mode: ResizeMode, size: u32, w: u32, h: u32) -> Geometry {
        match mode {
            ResizeMode::Squash => Geometry { resized_w: size, resized_h: size, left: 0, top: 0 },
            ResizeMode::ShortestCenterCrop => {
                let (short, long) = if w <= h { (w, h) } else { (h, w) };
                let new_long = (size as u64 * long as u64 / short as u64) as u32;
                let (rw, rh) = if w <= h { (size, new_long) } else { (new_long, size) };
                Geometry {
                    resized_w: rw,
                    resized_h: rh,
                    left: round_half_even_half(rw - size),
                    top: round_half_even_half(rh - size),
                }
            }
        }
    }
}

/// `round(n / 2)` with Python's round-half-to-even, as torchvision's CenterCrop computes offsets.
fn round_half_even_half(n: u32) -> u32 {
    let half = n / 2;
    if n % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// Turns RGB frames into normalised `1x3xSxS` f32 tensors, reusing its buffers.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    spec: PreprocessSpec,
    lut: [[f32; 256]; 3],
    cached_for: Option<(u32, u32)>,
    horiz: AxisCoeffs,
    vert: AxisCoeffs,
    geometry: Option<Geometry>,
    /// Horizontally resampled rows (only the rows the vertical pass reads), RGB u8.
    tmp: Vec<u8>,
    /// One output row's accumulators for the vertical pass.
    acc: Vec<i32>,
    row_lo: usize,
}

impl Preprocessor {
    /// A preprocessor for `spec`.
    pub fn new(spec: PreprocessSpec) -> Self {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, slot) in table.iter_mut().enumerate() {
                *slot = (v as f32 / 255.0 - spec.mean[c]) / spec.std[c];
            }
        }
        Preprocessor {
            spec,
            lut,
            cached_for: None,
            horiz: AxisCoeffs::default(),
            vert: AxisCoeffs::default(),
            geometry: None,
            tmp: Vec::new(),
            acc: Vec::new(),
            row_lo: 0,
        }
    }

    /// The spec this preprocessor applies.
    pub fn spec(&self) -> &PreprocessSpec {
        &self.spec
    }

    /// Number of f32 values in one output tensor (`3 * size * size`).
    pub fn output_len(&self) -> usize {
        3 * self.spec.size as usize * self.spec.size as usize
    }

    /// Geometry used for the last frame, if any.
    pub fn last_geometry(&self) -> Option<Geometry> {
        self.geometry
    }

    fn prepare(&mut self, w: u32, h: u32) {
        if self.cached_for == Some((w, h)) {
            return;
        }
        let s = self.spec.size;
        let g = Geometry::new(self.spec.resize, s, w, h);
        let f = self.spec.interpolation;
        self.horiz = AxisCoeffs::new(f, w, g.resized_w, g.left, s);
        self.vert = AxisCoeffs::new(f, h, g.resized_h, g.top, s);
        let lo = self.vert.start.iter().copied().min().unwrap_or(0) as usize;
        let hi = (0..s as usize)
            .map(|i| self.vert.start[i] as usize + self.vert.len[i] as usize)
            .max()
            .unwrap_or(0);
        self.row_lo = lo;
        self.tmp.resize((hi - lo) * s as usize * 3, 0);
        self.geometry = Some(g);
        self.cached_for = Some((w, h));
    }

    /// Writes the normalised CHW tensor of `frame` into `out` (length [`Self::output_len`]).
    ///
    /// Panics only if `out` has the wrong length, which is a programming error.
    pub fn run(&mut self, frame: &RgbImage, out: &mut [f32]) {
        assert_eq!(out.len(), self.output_len(), "output buffer length");
        let (w, h) = frame.dimensions();
        self.prepare(w, h);
        let s = self.spec.size as usize;
        let src = frame.as_raw();
        let row_bytes = w as usize * 3;
        let rows = self.tmp.len() / (s * 3);
        for r in 0..rows {
            let in_row = &src[(self.row_lo + r) * row_bytes..(self.row_lo + r + 1) * row_bytes];
            let out_row = &mut self.tmp[r * s * 3..(r + 1) * s * 3];
            for (x, px) in out_row.chunks_exact_mut(3).enumerate() {
                let (start, weights) = self.horiz.taps(x);
                let taps = &in_row[start * 3..(start + weights.len()) * 3];
                let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
                for (p, &wt) in taps.chunks_exact(3).zip(weights) {
                    acc[0] += p[0] as i32 * wt;
                    acc[1] += p[1] as i32 * wt;
                    acc[2] += p[2] as i32 * wt;
                }
                px[0] = clip8(acc[0]);
                px[1] = clip8(acc[1]);
                px[2] = clip8(acc[2]);
            }
        }
        let plane = s * s;
        let (r_plane, rest) = out.split_at_mut(plane);
        let (g_plane, b_plane) = rest.split_at_mut(plane);
        let row_len = s * 3;
        // Integer sums are exact in any order, so the vertical pass walks whole
        // rows (contiguous, vectorisable) instead of one output pixel at a time.
        self.acc.resize(row_len, 0);
        for y in 0..s {
            let (start, weights) = self.vert.taps(y);
            let first = start - self.row_lo;
            self.acc.fill(1i32 << (PRECISION_BITS - 1));
            for (k, &wt) in weights.iter().enumerate() {
                let row = &self.tmp[(first + k) * row_len..(first + k + 1) * row_len];
                for (a, &p) in self.acc.iter_mut().zip(row) {
                    *a += p as i32 * wt;
                }
            }
            for (x, px) in self.acc.chunks_exact(3).enumerate() {
                let i = y * s + x;
                r_plane[i] = self.lut[0][clip8(px[0]) as usize];
                g_plane[i] = self.lut[1][clip8(px[1]) as usize];
                b_plane[i] = self.lut[2][clip8(px[2]) as usize];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(size: u32, resize: ResizeMode, interpolation: Interpolation) -> PreprocessSpec {
        PreprocessSpec { size, resize, interpolation, mean: [0.0; 3], std: [1.0; 3] }
    }

    #[test]
    fn geometry_matches_torchvision() {
        let g = Geometry::new(ResizeMode::ShortestCenterCrop, 224, 640, 480);
        assert_eq!((g.resized_w, g.resized_h), (298, 224));
        assert_eq!((g.left, g.top), (37, 0));
        let g = Geometry::new(ResizeMode::ShortestCenterCrop, 224, 100, 333);
        assert_eq!((g.resized_w, g.resized_h), (224, 745));
        // round(521 / 2) = round(260.5) = 260 in Python (half to even).
        assert_eq!(g.top, 260);
        assert_eq!(round_half_even_half(3), 2);
        assert_eq!(round_half_even_half(5), 2);
    }

    #[test]
    fn weights_sum_to_one() {
        for f in [Interpolation::Bicubic, Interpolation::Bilinear] {
            let c = AxisCoeffs::new(f, 640, 298, 37, 224);
            for i in 0..224 {
                let (_, w) = c.taps(i);
                let sum: i64 = w.iter().map(|&x| x as i64).sum();
                assert!((sum - (1 << PRECISION_BITS)).abs() < 8, "{f:?} {i}: {sum}");
            }
        }
    }

    #[test]
    fn flat_frame_stays_flat_in_every_mode() {
        let frame = RgbImage::from_pixel(97, 61, image::Rgb([10, 128, 250]));
        for mode in [ResizeMode::ShortestCenterCrop, ResizeMode::Squash] {
            for f in [Interpolation::Nearest, Interpolation::Bilinear, Interpolation::Bicubic] {
                let mut p = Preprocessor::new(spec(32, mode, f));
                let mut out = vec![0f32; p.output_len()];
                p.run(&frame, &mut out);
                let plane = 32 * 32;
                assert!(out[..plane].iter().all(|&v| v == 10.0 / 255.0));
                assert!(out[plane..2 * plane].iter().all(|&v| v == 128.0 / 255.0));
                assert!(out[2 * plane..].iter().all(|&v| v == 250.0 / 255.0));
            }
        }
    }

    #[test]
    fn same_size_nearest_is_identity_and_channels_are_planar() {
        let frame = RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut p = Preprocessor::new(spec(8, ResizeMode::ShortestCenterCrop, Interpolation::Nearest));
        let mut out = vec![0f32; p.output_len()];
        p.run(&frame, &mut out);
        for y in 0..8 {
            for x in 0..8 {
                assert_eq!(out[y * 8 + x], x as f32 / 255.0);
                assert_eq!(out[64 + y * 8 + x], y as f32 / 255.0);
                assert_eq!(out[128 + y * 8 + x], 7.0 / 255.0);
            }
        }
    }

    #[test]
    fn normalisation_uses_mean_and_std_per_channel() {
        let frame = RgbImage::from_pixel(4, 4, image::Rgb([255, 0, 51]));
        let mut s = spec(4, ResizeMode::Squash, Interpolation::Bilinear);
        s.mean = [0.5, 0.25, 0.0];
        s.std = [0.5, 0.25, 2.0];
        let mut p = Preprocessor::new(s);
        let mut out = vec![0f32; p.output_len()];
        p.run(&frame, &mut out);
        assert_eq!(out[0], 1.0);
        assert_eq!(out[16], -1.0);
        assert!((out[32] - 0.1).abs() < 1e-6);
    }

    #[test]
    fn buffers_are_reused_for_same_sized_frames() {
        let mut p = Preprocessor::new(spec(16, ResizeMode::ShortestCenterCrop, Interpolation::Bicubic));
        let mut out = vec![0f32; p.output_len()];
        let a = RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 5) as u8, (y * 7) as u8, 0]));
        p.run(&a, &mut out);
        let ptr = p.tmp.as_ptr();
        let first = out.clone();
        p.run(&a, &mut out);
        assert_eq!(ptr, p.tmp.as_ptr());
        assert_eq!(first, out);
    }
}
