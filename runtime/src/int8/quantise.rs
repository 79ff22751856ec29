//! `QuantiseSym`: symmetric int8 quantisation of an f32 activation at run
//! time, in two passes (largest magnitude, then scale and round), with one
//! scale per tensor or one per slice along an axis; optionally after keeping
//! every n-th position along some axes (a gather before the two passes).

use tract_core::internal::*;
use tract_linalg::multithread::par_chunks_mut;

/// Which values share a scale.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub enum Granularity {
    /// One scale for the whole tensor.
    Tensor,
    /// One scale per position of the other axes: the values along these
    /// consecutive axes (the contraction axes of a product) share one.
    Along(std::ops::Range<usize>),
}

/// Quantises `x` to `round(x * 127 / max|x|)` as i8 and outputs the scale
/// `max|x| / 127` beside it (shaped like `x`, or like the kept positions of
/// `x` with `strides`, with the shared axes of length 1), so that `x ≈ q * scale`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct QuantiseSym {
    /// Which values share a scale.
    pub granularity: Granularity,
    /// Keeps every `strides[i]`-th position along axis `i` of the input
    /// (from the first) before quantising: tract's `Downsample` before a
    /// strided 1x1 convolution, fused (`fuse::downsample`). Empty: every
    /// position.
    pub strides: TVec<usize>,
}

/// Adding 1.5 * 2^23 to an f32 of magnitude below 2^22 rounds it to the
/// nearest integer, ties to even (the default rounding mode), and leaves that
/// integer in the low mantissa bits: one vectorisable add on every target
/// (SSE2 has no round instruction; `round_ties_even` would be a library call).
pub(super) const ROUND_MAGIC: f32 = 12_582_912.0;

/// The bits of `ROUND_MAGIC`: after the add, the rounded integer sits in the
/// low mantissa bits, so an integer subtraction reads it out (this
/// vectorises; a float-to-int `as`, which saturates, does not on SSE2).
pub(super) const ROUND_MAGIC_BITS: i32 = 0x4B40_0000;

#[inline(always)]
pub(super) fn quantise_value(v: f32, inv: f32) -> i8 {
    // |v * inv| <= 127 by construction, so the integer fits an i8 (a NaN
    // input gives some value in range; the embedding check catches NaN).
    ((v * inv + ROUND_MAGIC).to_bits() as i32).wrapping_sub(ROUND_MAGIC_BITS) as i8
}

/// The largest magnitude in `xs`, compiled for the widest vectors this CPU has.
#[multiversion::multiversion(targets = "simd")]
fn abs_max(xs: &[f32]) -> f32 {
    abs_max_lanes(xs)
}

/// [`abs_max`] in the caller's instruction set: sixteen lanes at a time so
/// that it vectorises (one AVX-512 register, four SSE2 ones).
#[inline(always)]
pub(super) fn abs_max_lanes(xs: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for (m, v) in lanes.iter_mut().zip(c) {
            let a = v.abs();
            *m = if a > *m { a } else { *m };
        }
    }
    let rest = chunks.remainder().iter().fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m });
    lanes.iter().fold(rest, |m, &v| if v > m { v } else { m })
}

pub(super) fn scale_of(max: f32) -> (f32, f32) {
    let max = max.max(f32::MIN_POSITIVE);
    (max / 127.0, 127.0 / max)
}

impl QuantiseSym {
    /// Quantises every position of the input.
    pub fn new(granularity: Granularity) -> QuantiseSym {
        QuantiseSym { granularity, strides: tvec![] }
    }

    /// The shape after subsampling by `strides`.
    fn kept_shape<D: Clone + From<usize> + DivCeil>(&self, shape: &[D]) -> TVec<D> {
        shape
            .iter()
            .enumerate()
            .map(|(i, d)| match self.strides.get(i) {
                Some(&s) if s > 1 => d.clone().div_ceil_by(s),
                _ => d.clone(),
            })
            .collect()
    }

    fn split(&self, shape: &[usize]) -> (usize, usize, usize) {
        match &self.granularity {
            Granularity::Tensor => (1, shape.iter().product(), 1),
            Granularity::Along(axes) => (
                shape[..axes.start].iter().product(),
                shape[axes.clone()].iter().product(),
                shape[axes.end..].iter().product(),
            ),
        }
    }

    fn scale_shape<D: Clone + From<usize>>(&self, shape: &[D]) -> TVec<D> {
        match &self.granularity {
            Granularity::Tensor => shape.iter().map(|_| D::from(1)).collect(),
            Granularity::Along(axes) => {
                let mut s: TVec<D> = shape.into();
                s[axes.clone()].iter_mut().for_each(|d| *d = D::from(1));
                s
            }
        }
    }

    /// Quantises `x` (any shape, `outer x len x inner` around the shared axis)
    /// into `q`, writing one scale per `outer x inner` position into `scales`.
    /// Both passes are spread over the threads of the tract executor in scope
    /// (`ImageEncoder::set_threads`); the result does not depend on their number.
    pub fn run(&self, shape: &[usize], x: &[f32], q: &mut [i8], scales: &mut [f32]) -> TractResult<()> {
        let (outer, len, inner) = self.split(shape);
        ensure!(x.len() == outer * len * inner && q.len() == x.len() && scales.len() == outer * inner);
        if x.is_empty() {
            return Ok(());
        }
        // Pass 1: the largest magnitude per scale.
        let mut max = vec![0f32; scales.len()];
        if scales.len() == 1 {
            // One scale for everything: partial maxima of blocks, then theirs.
            const BLOCK: usize = 16_384;
            let mut partial = vec![0f32; x.len().div_ceil(BLOCK)];
            par_chunks_mut(&mut partial, 1, x.len(), |first, chunk| {
                for (i, m) in chunk.iter_mut().enumerate() {
                    let start = (first + i) * BLOCK;
                    *m = abs_max(&x[start..(start + BLOCK).min(x.len())]);
                }
                Ok(())
            })?;
            max[0] = partial.iter().fold(0f32, |m, &v| if v > m { v } else { m });
        } else {
            par_chunks_mut(&mut max, 1, x.len(), |first, chunk| {
                max_per_position(x, len, inner, first, chunk);
                Ok(())
            })?;
        }
        let mut inv = vec![0f32; scales.len()];
        for ((s, i), &m) in scales.iter_mut().zip(inv.iter_mut()).zip(&max) {
            (*s, *i) = scale_of(m);
        }
        // Pass 2: scale and round, in row segments that share a scale pattern.
        par_chunks_mut(q, 1, x.len(), |first, chunk| {
            quantise_chunk(x, &inv, len, inner, first, chunk);
            Ok(())
        })
    }
}

/// The largest magnitude of each `outer x inner` position `first ..
/// first + max.len()` of `x`, viewed as `outer x len x inner`.
#[multiversion::multiversion(targets = "simd")]
fn max_per_position(x: &[f32], len: usize, inner: usize, first: usize, max: &mut [f32]) {
    let mut pos = first;
    let mut rest = max;
    while !rest.is_empty() {
        let (o, i0) = (pos / inner, pos % inner);
        let w = (inner - i0).min(rest.len());
        let (seg, tail) = rest.split_at_mut(w);
        if inner == 1 {
            seg[0] = abs_max_lanes(&x[o * len..(o + 1) * len]);
        } else {
            let block = &x[o * len * inner..(o + 1) * len * inner];
            for row in block.chunks_exact(inner) {
                seg.iter_mut().zip(&row[i0..i0 + w]).for_each(|(m, v)| {
                    let a = v.abs();
                    *m = if a > *m { a } else { *m };
                });
            }
        }
        pos += w;
        rest = tail;
    }
}

/// Values `first .. first + q.len()` of `x` (`outer x len x inner`)
/// quantised with the reciprocal scales `inv` (one per `outer x inner` position).
#[multiversion::multiversion(targets = "simd")]
fn quantise_chunk(x: &[f32], inv: &[f32], len: usize, inner: usize, first: usize, q: &mut [i8]) {
    let row = if inner == 1 { len } else { inner };
    let mut pos = first;
    let mut rest = q;
    while !rest.is_empty() {
        let offset = pos % row;
        let w = (row - offset).min(rest.len());
        let (seg, tail) = rest.split_at_mut(w);
        let xs = &x[pos..pos + w];
        if inner == 1 {
            let i = inv[pos / len];
            seg.iter_mut().zip(xs).for_each(|(q, &v)| *q = quantise_value(v, i));
        } else {
            let o = pos / (len * inner);
            let invs = &inv[o * inner + offset..o * inner + offset + w];
            seg.iter_mut().zip(xs).zip(invs).for_each(|((q, &v), &i)| *q = quantise_value(v, i));
        }
        pos += w;
        rest = tail;
    }
}

/// `d.div_ceil(s)` for the dimension types of shapes and facts.
trait DivCeil {
    fn div_ceil_by(self, s: usize) -> Self;
}

impl DivCeil for usize {
    fn div_ceil_by(self, s: usize) -> usize {
        self.div_ceil(s)
    }
}

impl DivCeil for TDim {
    fn div_ceil_by(self, s: usize) -> TDim {
        self.div_ceil(s as u64)
    }
}

/// The values of `x` (row-major, `shape`) at every `strides[i]`-th position
/// along each axis `i`, from the first, in row-major order.
fn subsample(x: &[f32], shape: &[usize], strides: &[usize]) -> Vec<f32> {
    let rank = shape.len();
    let kept: TVec<usize> = shape.iter().zip(strides).map(|(&d, &s)| d.div_ceil(s.max(1))).collect();
    let mut out = Vec::with_capacity(kept.iter().product());
    if rank == 0 || kept.contains(&0) {
        return out;
    }
    // Element strides of `x` per axis, times the subsampling.
    let mut step: TVec<usize> = tvec![0; rank];
    let mut size: usize = 1;
    for i in (0..rank).rev() {
        // Saturating: a stride past the axis keeps only position 0 (index 0).
        step[i] = size.saturating_mul(strides[i].max(1));
        size *= shape[i];
    }
    let (last, last_step) = (kept[rank - 1], step[rank - 1]);
    let mut index: TVec<usize> = tvec![0; rank - 1];
    loop {
        let start: usize = index.iter().zip(&step).map(|(&i, &s)| i * s).sum();
        out.extend(x[start..].iter().step_by(last_step).take(last));
        // The next row: an odometer over the kept positions of the other axes.
        let mut axis = rank - 1;
        loop {
            if axis == 0 {
                return out;
            }
            axis -= 1;
            index[axis] += 1;
            if index[axis] < kept[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
}

impl Op for QuantiseSym {
    fn name(&self) -> StaticName {
        "ClipEdgeQuantiseSym".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        if self.strides.iter().any(|&s| s > 1) {
            return Ok(vec![format!("{:?}, every {:?}", self.granularity, self.strides)]);
        }
        Ok(vec![format!("{:?}", self.granularity)])
    }

    op_as_typed_op!();
}

impl EvalOp for QuantiseSym {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let xv = x.try_as_plain_ram()?;
        let kept;
        let (shape, xs): (TVec<usize>, &[f32]) = if self.strides.iter().any(|&s| s > 1) {
            ensure!(
                self.strides.len() == x.rank(),
                "QuantiseSym: {} strides for rank {}",
                self.strides.len(),
                x.rank()
            );
            kept = subsample(xv.as_slice::<f32>()?, x.shape(), &self.strides);
            (self.kept_shape(x.shape()), &kept)
        } else {
            (x.shape().into(), xv.as_slice::<f32>()?)
        };
        let mut q = Tensor::zero::<i8>(&shape)?;
        let mut scales = Tensor::zero::<f32>(&self.scale_shape(&shape))?;
        {
            let mut qv = q.try_as_plain_ram_mut()?;
            let mut sv = scales.try_as_plain_ram_mut()?;
            self.run(&shape, xs, qv.as_slice_mut::<i8>()?, sv.as_slice_mut::<f32>()?)?;
        }
        Ok(tvec!(q.into_tvalue(), scales.into_tvalue()))
    }
}

impl TypedOp for QuantiseSym {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type(), "QuantiseSym takes f32");
        if let Granularity::Along(axes) = &self.granularity {
            ensure!(!axes.is_empty() && axes.end <= inputs[0].rank());
        }
        ensure!(self.strides.is_empty() || self.strides.len() == inputs[0].rank());
        let shape: TVec<TDim> = self.kept_shape(&inputs[0].shape.to_tvec());
        let scale_shape = self.scale_shape(&shape);
        Ok(tvec!(i8::fact(&*shape), f32::fact(&*scale_shape)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let kept: TDim = self.kept_shape(&inputs[0].shape.to_tvec()).iter().product();
        Ok(tvec!((Cost::Div(f32::datum_type()), kept * 2)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], inv: f32) -> Vec<i8> {
        x.iter().map(|v| (v * inv).round_ties_even() as i8).collect()
    }

    #[test]
    fn quantised_values_are_rounded_ties_to_even() {
        for v in [-127.0f32, -126.5, -2.5, -0.5, 0.0, 0.49, 0.5, 1.5, 126.5, 127.0] {
            assert_eq!(quantise_value(v, 1.0), v.round_ties_even() as i8, "{v}");
        }
    }

    #[test]
    fn per_row_scales_along_the_last_axis() {
        let op = QuantiseSym::new(Granularity::Along(1..2));
        let x = [1.0f32, -2.0, 0.5, 0.0, 0.0, 0.0];
        let (mut q, mut s) = (vec![0i8; 6], vec![0f32; 2]);
        op.run(&[2, 3], &x, &mut q, &mut s).expect("run");
        assert_eq!(&q[..3], &reference(&x[..3], 127.0 / 2.0)[..]);
        assert_eq!(&q[..3], &[64, -127, 32]);
        assert_eq!(&q[3..], &[0, 0, 0]);
        assert_eq!(s[0], 2.0 / 127.0);
        assert!(s[1] > 0.0, "an all-zero row still gets a positive scale");
    }

    #[test]
    fn per_pixel_scales_along_a_middle_axis() {
        // NCHW with 2 channels and 3 pixels: one scale per pixel across channels.
        let op = QuantiseSym::new(Granularity::Along(1..2));
        let x = [1.0f32, 4.0, -3.0, /* channel 1 */ -2.0, 1.0, 6.0];
        let (mut q, mut s) = (vec![0i8; 6], vec![0f32; 3]);
        op.run(&[1, 2, 3], &x, &mut q, &mut s).expect("run");
        assert_eq!(s, [2.0 / 127.0, 4.0 / 127.0, 6.0 / 127.0]);
        assert_eq!(q, [64, 127, -64, -127, 32, 127]);
    }

    #[test]
    fn one_scale_per_tensor() {
        let op = QuantiseSym::new(Granularity::Tensor);
        let x = [0.25f32, -1.0, 0.5, 1.0];
        let (mut q, mut s) = (vec![0i8; 4], vec![0f32; 1]);
        op.run(&[1, 1, 2, 2], &x, &mut q, &mut s).expect("run");
        assert_eq!(q, [32, -127, 64, 127]);
        assert_eq!(s, [1.0 / 127.0]);
    }
}
