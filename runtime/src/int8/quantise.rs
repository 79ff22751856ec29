//! `QuantiseSym`: symmetric int8 quantisation of an f32 activation at run
//! time, in two passes (largest magnitude, then scale and round), with one
//! scale per tensor or one per slice along an axis.

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
/// `max|x| / 127` beside it (shaped like `x` with the shared axes of length 1),
/// so that `x ≈ q * scale`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct QuantiseSym {
    /// Which values share a scale.
    pub granularity: Granularity,
}

/// Adding 1.5 * 2^23 to an f32 of magnitude below 2^22 rounds it to the
/// nearest integer, ties to even (the default rounding mode), and leaves that
/// integer in the low mantissa bits: one vectorisable add on every target
/// (SSE2 has no round instruction; `round_ties_even` would be a library call).
const ROUND_MAGIC: f32 = 12_582_912.0;

/// The bits of `ROUND_MAGIC`: after the add, the rounded integer sits in the
/// low mantissa bits, so an integer subtraction reads it out (this
/// vectorises; a float-to-int `as`, which saturates, does not on SSE2).
const ROUND_MAGIC_BITS: i32 = 0x4B40_0000;

#[inline(always)]
pub(super) fn quantise_value(v: f32, inv: f32) -> i8 {
    // |v * inv| <= 127 by construction, so the integer fits an i8 (a NaN
    // input gives some value in range; the embedding check catches NaN).
    ((v * inv + ROUND_MAGIC).to_bits() as i32).wrapping_sub(ROUND_MAGIC_BITS) as i8
}

/// The largest magnitude in `xs`, eight lanes at a time so that it vectorises.
pub(super) fn abs_max(xs: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks = xs.chunks_exact(8);
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
                // Positions first .. first + chunk.len() of the outer x inner grid.
                let mut pos = first;
                let mut rest = chunk;
                while !rest.is_empty() {
                    let (o, i0) = (pos / inner, pos % inner);
                    let w = (inner - i0).min(rest.len());
                    let (seg, tail) = rest.split_at_mut(w);
                    if inner == 1 {
                        seg[0] = abs_max(&x[o * len..(o + 1) * len]);
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
                Ok(())
            })?;
        }
        let mut inv = vec![0f32; scales.len()];
        for ((s, i), &m) in scales.iter_mut().zip(inv.iter_mut()).zip(&max) {
            (*s, *i) = scale_of(m);
        }
        // Pass 2: scale and round, in row segments that share a scale pattern.
        let row = if inner == 1 { len } else { inner };
        par_chunks_mut(q, 1, x.len(), |first, chunk| {
            let mut pos = first;
            let mut rest = chunk;
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
            Ok(())
        })
    }
}

impl Op for QuantiseSym {
    fn name(&self) -> StaticName {
        "ClipEdgeQuantiseSym".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}", self.granularity)])
    }

    op_as_typed_op!();
}

impl EvalOp for QuantiseSym {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let shape: TVec<usize> = x.shape().into();
        let xv = x.try_as_plain_ram()?;
        let xs = xv.as_slice::<f32>()?;
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
        let shape: TVec<TDim> = inputs[0].shape.to_tvec();
        let scale_shape = self.scale_shape(&shape);
        Ok(tvec!(i8::fact(&*shape), f32::fact(&*scale_shape)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(tvec!((Cost::Div(f32::datum_type()), inputs[0].shape.volume() * 2)))
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
        let op = QuantiseSym { granularity: Granularity::Along(1..2) };
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
        let op = QuantiseSym { granularity: Granularity::Along(1..2) };
        let x = [1.0f32, 4.0, -3.0, /* channel 1 */ -2.0, 1.0, 6.0];
        let (mut q, mut s) = (vec![0i8; 6], vec![0f32; 3]);
        op.run(&[1, 2, 3], &x, &mut q, &mut s).expect("run");
        assert_eq!(s, [2.0 / 127.0, 4.0 / 127.0, 6.0 / 127.0]);
        assert_eq!(q, [64, 127, -64, -127, 32, 127]);
    }

    #[test]
    fn one_scale_per_tensor() {
        let op = QuantiseSym { granularity: Granularity::Tensor };
        let x = [0.25f32, -1.0, 0.5, 1.0];
        let (mut q, mut s) = (vec![0i8; 4], vec![0f32; 1]);
        op.run(&[1, 1, 2, 2], &x, &mut q, &mut s).expect("run");
        assert_eq!(q, [32, -127, 64, 127]);
        assert_eq!(s, [1.0 / 127.0]);
    }
}
