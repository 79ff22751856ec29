//! The channels-last kernel of [`DepthwiseConv`] for narrow planes (see
//! `NARROW` in the parent module): the same arithmetic as the per-plane kernel.

use tract_core::internal::*;

use super::{fma, DepthwiseConv, Geometry};

/// Computes output planes `first..first + out.len() / (oh * ow)` as
/// [`planes`] does, channels-last: the chunk's input planes are transposed once
/// into a padded `[row][column][channel]` scratch image (each output channel
/// reads its own copy of its input channel, so a multiplier needs no special
/// case), the taps into `[tap][channel]`, and each output pixel is computed
/// for 64, then 16, then 1 channels at a time over all taps, then transposed
/// back. Same arithmetic and summation order (bias, then taps row-major).
#[multiversion::multiversion(targets = "simd")]
pub(super) fn planes_channels_last(
    conv: &DepthwiseConv,
    g: &Geometry,
    x: &[f32],
    first: usize,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) -> TractResult<()> {
    let [kh, kw] = conv.kernel_hw;
    let [sy, sx] = conv.strides;
    let kernel = conv.kernel.try_as_plain_ram()?;
    let kernel = kernel.as_slice::<f32>()?;
    let bias = conv.bias.try_as_plain_ram()?;
    let bias = bias.as_slice::<f32>()?;
    let (plane_in, plane_out, taps) = (g.h * g.w, g.oh * g.ow, kh * kw);
    if plane_out == 0 || plane_in == 0 {
        return Ok(());
    }
    let n = out.len() / plane_out;
    scratch.clear();
    scratch.resize((g.ph * g.pw + taps + 1 + plane_out) * n, 0.0);
    let (image, rest) = scratch.split_at_mut(g.ph * g.pw * n);
    let (wt, rest) = rest.split_at_mut(taps * n);
    let (b, pixels) = rest.split_at_mut(n);
    for c in 0..n {
        let oc = first + c;
        let ic = oc / conv.multiplier;
        for (y, row) in x[ic * plane_in..(ic + 1) * plane_in].chunks_exact(g.w).enumerate() {
            let at = ((y + g.pad_top) * g.pw + g.pad_left) * n + c;
            for (dst, &v) in image[at..].iter_mut().step_by(n).zip(row) {
                *dst = v;
            }
        }
        for (t, dst) in wt[c..].iter_mut().step_by(n).take(taps).enumerate() {
            *dst = kernel[oc * taps + t];
        }
        b[c] = bias.get(oc).copied().unwrap_or(0.0);
    }
    let ctx = Pixels { image, wt, b, n, pw: g.pw, kh, kw };
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let dst = &mut pixels[(oy * g.ow + ox) * n..(oy * g.ow + ox + 1) * n];
            let origin = oy * sy * g.pw + ox * sx;
            let c0 = ctx.channels::<64>(origin, 0, dst);
            let c0 = ctx.channels::<16>(origin, c0, dst);
            ctx.channels::<1>(origin, c0, dst);
        }
    }
    for (c, plane) in out.chunks_exact_mut(plane_out).enumerate() {
        for (dst, &v) in plane.iter_mut().zip(pixels[c..].iter().step_by(n)) {
            *dst = v;
        }
    }
    Ok(())
}

/// The channels-last scratch of [`planes_channels_last`].
struct Pixels<'a> {
    /// Padded input, `[row][column][channel]`.
    image: &'a [f32],
    /// Taps, `[tap][channel]`.
    wt: &'a [f32],
    b: &'a [f32],
    n: usize,
    pw: usize,
    kh: usize,
    kw: usize,
}

impl Pixels<'_> {
    /// Computes channels `c0..` of the output pixel whose window starts at
    /// padded position `origin`, `L` at a time while a whole block fits;
    /// returns the first channel left.
    #[inline(always)]
    fn channels<const L: usize>(&self, origin: usize, mut c0: usize, dst: &mut [f32]) -> usize {
        while c0 + L <= self.n {
            let mut acc = [0.0f32; L];
            acc.copy_from_slice(&self.b[c0..c0 + L]);
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    let p = (origin + ky * self.pw + kx) * self.n + c0;
                    let t = (ky * self.kw + kx) * self.n + c0;
                    let (Some(v), Some(w)) = (
                        self.image.get(p..p + L).and_then(|s| <&[f32; L]>::try_from(s).ok()),
                        self.wt.get(t..t + L).and_then(|s| <&[f32; L]>::try_from(s).ok()),
                    ) else {
                        continue;
                    };
                    for ((a, &w), &v) in acc.iter_mut().zip(w).zip(v) {
                        *a = fma(w, v, *a);
                    }
                }
            }
            dst[c0..c0 + L].copy_from_slice(&acc);
            c0 += L;
        }
        c0
    }
}
