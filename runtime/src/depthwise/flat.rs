//! The kernel of [`DepthwiseConv`]: each padded input plane is split into
//! `sy x sx` phases (padded rows `ry mod sy`, columns `rx mod sx`), and each
//! output plane is computed as one flat run.
//!
//! With a phase's rows `phase_w` apart, output `(y, x)` reads tap `(ky, kx)` in
//! phase `(ky mod sy, kx mod sx)` at `y * phase_w + x + (ky / sy) * phase_w +
//! kx / sx`: computing every flat position `o = y * phase_w + x` (the
//! positions past each row's end are computed and dropped) turns the plane
//! into one long run with one offset per tap. Blocks of vectors then cover it
//! with no border cases and no per-row remainders (short rows of 7 to 32 px
//! were mostly remainder in a row-by-row kernel).

use tract_core::internal::*;

use super::{DepthwiseConv, Geometry};

/// Computes output planes `first..first + out.len() / (oh * ow)` from `x`
/// (`Cin` planes of `h x w`), using `scratch` for the padded phases and the
/// flat run. Summation order: bias, then taps row-major. Explicit vectors of
/// the widest instruction set the CPU has (AVX-512, AVX2 + FMA, NEON; scalar
/// elsewhere), chosen at run time, with fused multiply-adds where it has them.
pub(super) fn planes_flat(
    conv: &DepthwiseConv,
    g: &Geometry,
    x: &[f32],
    first: usize,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) -> TractResult<()> {
    pulp::Arch::new().dispatch(Flat { conv, g, x, first, out, scratch })
}

/// Accumulator registers per block.
const VECTORS: usize = 8;

/// Accumulator registers per block after the last whole block: fewer would
/// leave the fused multiply-adds waiting on each other's latency.
const TAIL: usize = 4;

/// The arguments of [`planes_flat`], run for one instruction set.
pub(super) struct Flat<'a> {
    pub(super) conv: &'a DepthwiseConv,
    pub(super) g: &'a Geometry,
    pub(super) x: &'a [f32],
    pub(super) first: usize,
    pub(super) out: &'a mut [f32],
    pub(super) scratch: &'a mut Vec<f32>,
}

impl pulp::WithSimd for Flat<'_> {
    type Output = TractResult<()>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> TractResult<()> {
        let Flat { conv, g, x, first, out, scratch } = self;
        let lanes = S::F32_LANES;
        let block = lanes * VECTORS;
        let [kh, kw] = conv.kernel_hw;
        let [sy, sx] = conv.strides;
        let kernel = conv.kernel.try_as_plain_ram()?;
        let kernel = kernel.as_slice::<f32>()?;
        let bias = conv.bias.try_as_plain_ram()?;
        let bias = bias.as_slice::<f32>()?;
        let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
        if plane_out == 0 || plane_in == 0 {
            return Ok(());
        }
        // Phase (ry, rx) holds the padded rows ry mod sy and columns rx mod sx.
        let (phase_h, phase_w) = (g.ph.div_ceil(sy), g.phase_w);
        let span = (g.oh * phase_w).div_ceil(lanes * TAIL) * lanes * TAIL;
        let reach = (kh - 1) / sy * phase_w + (kw - 1) / sx;
        let phase_len = (span + reach).max(phase_h * phase_w);
        let offsets: TVec<usize> = (0..kh)
            .flat_map(|ky| {
                (0..kw).map(move |kx| ((ky % sy) * sx + kx % sx) * phase_len + ky / sy * phase_w + kx / sx)
            })
            .collect();
        // Every tap of every block reads inside its phase (`load` never comes back empty).
        ensure!(
            offsets.iter().all(|&o| o % phase_len + span <= phase_len),
            "depthwise geometry: a tap would read past its phase"
        );
        scratch.clear();
        scratch.resize(sy * sx * phase_len + span, 0.0);
        let (padded, flat) = scratch.split_at_mut(sy * sx * phase_len);
        let fill = PhaseFill::new(g, conv.strides, conv.strides, phase_len);
        let mut loaded: Option<usize> = None;
        for (i, plane) in out.chunks_exact_mut(plane_out).enumerate() {
            let oc = first + i;
            let ic = oc / conv.multiplier;
            if loaded != Some(ic) {
                fill.fill(&x[ic * plane_in..(ic + 1) * plane_in], padded);
                loaded = Some(ic);
            }
            let taps = &kernel[oc * kh * kw..(oc + 1) * kh * kw];
            let b = simd.splat_f32s(bias.get(oc).copied().unwrap_or(0.0));
            let (blocks, rest) = flat.split_at_mut(span / block * block);
            for (n, dst) in blocks.chunks_exact_mut(block).enumerate() {
                let acc = vectors::<S, VECTORS>(simd, padded, taps, &offsets, n * block, b);
                dst.copy_from_slice(bytemuck::cast_slice(&acc));
            }
            for (n, dst) in rest.chunks_exact_mut(lanes * TAIL).enumerate() {
                let acc =
                    vectors::<S, TAIL>(simd, padded, taps, &offsets, blocks.len() + n * lanes * TAIL, b);
                dst.copy_from_slice(bytemuck::cast_slice(&acc));
            }
            for (y, row) in plane.chunks_exact_mut(g.ow).enumerate() {
                row.copy_from_slice(&flat[y * phase_w..y * phase_w + g.ow]);
            }
        }
        Ok(())
    }
}

/// How an image plane (`g.h x g.w`) is written into its padded phases: the
/// first `ny x nx` of the `sy x sx` phases, `phase_len` values each, phase
/// `(ry, rx)` at `(ry * nx + rx) * phase_len`, rows `g.phase_w` apart, zero
/// everywhere else. A kernel narrower than its stride reads only those
/// phases. Worked out once per run, used for each channel.
pub(crate) struct PhaseFill {
    w: usize,
    sy: usize,
    sx: usize,
    ny: usize,
    nx: usize,
    phase_len: usize,
    phase_w: usize,
    /// The first image row's phase row and row in that phase.
    top: (usize, usize),
    /// Per column phase written: `(rx, first image column, first column in
    /// the phase's rows, columns)`.
    cols: TVec<(usize, usize, usize, usize)>,
}

impl PhaseFill {
    /// The fill for geometry `g`, `strides` and the `phases` (`[ny, nx]`) read.
    pub(crate) fn new(
        g: &Geometry,
        [sy, sx]: [usize; 2],
        [ny, nx]: [usize; 2],
        phase_len: usize,
    ) -> PhaseFill {
        let cols = (0..nx.min(sx))
            .filter_map(|rx| {
                let x0 = (rx + sx - g.pad_left % sx) % sx;
                (x0 < g.w).then(|| (rx, x0, (x0 + g.pad_left) / sx, (g.w - x0).div_ceil(sx)))
            })
            .collect();
        PhaseFill {
            w: g.w,
            sy,
            sx,
            ny: ny.min(sy),
            nx: nx.min(sx),
            phase_len,
            phase_w: g.phase_w,
            top: (g.pad_top % sy, g.pad_top / sy),
            cols,
        }
    }

    /// Values of one channel's phases.
    pub(crate) fn channel_len(&self) -> usize {
        self.ny * self.nx * self.phase_len
    }

    /// Writes `plane` into `padded` (one channel's phases).
    pub(crate) fn fill(&self, plane: &[f32], padded: &mut [f32]) {
        padded.fill(0.0);
        let (mut ry, mut phase_row) = self.top;
        for row in plane.chunks_exact(self.w) {
            if ry < self.ny {
                let at = |rx: usize, col: usize| {
                    (ry * self.nx + rx) * self.phase_len + phase_row * self.phase_w + col
                };
                match (self.sx, &self.cols[..]) {
                    (1, &[(rx, x0, col, n)]) => {
                        let at = at(rx, col);
                        padded[at..at + n].copy_from_slice(&row[x0..x0 + n]);
                    }
                    // Both column phases of stride 2 in one pass over the row.
                    (2, &[(ra, 0, ca, na), (rb, 1, cb, nb)] | &[(rb, 1, cb, nb), (ra, 0, ca, na)]) => {
                        let (a, b) = (at(ra, ca), at(rb, cb));
                        let (lo, hi) = padded.split_at_mut(a.max(b));
                        let (da, db) = if a < b {
                            (&mut lo[a..a + na], &mut hi[..nb])
                        } else {
                            (&mut hi[..na], &mut lo[b..b + nb])
                        };
                        for ((pair, da), db) in row.chunks_exact(2).zip(da.iter_mut()).zip(db.iter_mut()) {
                            (*da, *db) = (pair[0], pair[1]);
                        }
                        if let (Some(&last), true) = (row.last(), na > nb) {
                            da[na - 1] = last;
                        }
                    }
                    (sx, cols) => {
                        for &(rx, x0, col, n) in cols {
                            let at = at(rx, col);
                            let dst = &mut padded[at..at + n];
                            dst.iter_mut().zip(row[x0..].iter().step_by(sx)).for_each(|(d, &v)| *d = v);
                        }
                    }
                }
            }
            ry += 1;
            if ry == self.sy {
                (ry, phase_row) = (0, phase_row + 1);
            }
        }
    }
}

/// `V` vectors of outputs from flat position `at` on: `bias` plus each tap
/// times the padded input at the tap's offset from there.
#[inline(always)]
fn vectors<S: pulp::Simd, const V: usize>(
    simd: S,
    padded: &[f32],
    taps: &[f32],
    offsets: &[usize],
    at: usize,
    bias: S::f32s,
) -> [S::f32s; V] {
    let mut acc = [bias; V];
    for (&t, &off) in taps.iter().zip(offsets) {
        let t = simd.splat_f32s(t);
        for (v, a) in acc.iter_mut().enumerate() {
            if let Some(x) = load::<S>(padded, at + off + v * S::F32_LANES) {
                *a = simd.mul_add_e_f32s(t, x, *a);
            }
        }
    }
    acc
}

/// The `S::f32s` at `at` of `s` (unaligned), if it lies inside.
#[inline(always)]
fn load<S: pulp::Simd>(s: &[f32], at: usize) -> Option<S::f32s> {
    s.get(at..at + S::F32_LANES).map(|v| bytemuck::pod_read_unaligned(bytemuck::cast_slice(v)))
}
