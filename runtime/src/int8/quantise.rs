//! `QuantiseSym`: symmetric int8 quantisation of an f32 activation at run
//! time, in two passes (largest magnitude, then scale and round), with one
//! scale per tensor or one per slice along an axis.

use tract_core::internal::*;

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
fn quantise_value(v: f32, inv: f32) -> i8 {
    // |v * inv| <= 127 by construction, so the integer fits an i8 (a NaN
    // input gives some value in range; the embedding check catches NaN).
    ((v * inv + ROUND_MAGIC).to_bits() as i32).wrapping_sub(ROUND_MAGIC_BITS) as i8
}

/// The largest magnitude in `xs`, eight lanes at a time so that it vectorises.
fn abs_max(xs: &[f32]) -> f32 {
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

fn scale_of(max: f32) -> (f32, f32) {
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
    pub fn run(&self, shape: &[usize], x: &[f32], q: &mut [i8], scales: &mut [f32]) -> TractResult<()> {
        let (outer, len, inner) = self.split(shape);
        ensure!(x.len() == outer * len * inner && q.len() == x.len() && scales.len() == outer * inner);
        if inner == 1 {
            // Contiguous slices share a scale: per row, or the whole tensor.
            for ((xs, qs), s) in x.chunks_exact(len.max(1)).zip(q.chunks_exact_mut(len.max(1))).zip(scales) {
                let (scale, inv) = scale_of(abs_max(xs));
                *s = scale;
                qs.iter_mut().zip(xs).for_each(|(q, &v)| *q = quantise_value(v, inv));
            }
            return Ok(());
        }
        // The shared axis has a stride of `inner`: work on tiles of `TILE`
        // positions, so the second pass reads what the first left in cache.
        const TILE: usize = 256;
        let mut inv = [0f32; TILE];
        let mut max = [0f32; TILE];
        for ((xs, qs), ss) in x
            .chunks_exact(len * inner)
            .zip(q.chunks_exact_mut(len * inner))
            .zip(scales.chunks_exact_mut(inner))
        {
            for t0 in (0..inner).step_by(TILE) {
                let w = TILE.min(inner - t0);
                let (max, inv) = (&mut max[..w], &mut inv[..w]);
                max.iter_mut().for_each(|m| *m = 0.0);
                for row in xs.chunks_exact(inner) {
                    max.iter_mut().zip(&row[t0..t0 + w]).for_each(|(m, v)| {
                        let a = v.abs();
                        *m = if a > *m { a } else { *m };
                    });
                }
                for ((s, i), m) in ss[t0..t0 + w].iter_mut().zip(inv.iter_mut()).zip(max.iter()) {
                    (*s, *i) = scale_of(*m);
                }
                for (row, qrow) in xs.chunks_exact(inner).zip(qs.chunks_exact_mut(inner)) {
                    let (row, qrow) = (&row[t0..t0 + w], &mut qrow[t0..t0 + w]);
                    qrow.iter_mut()
                        .zip(row)
                        .zip(inv.iter())
                        .for_each(|((q, &v), &i)| *q = quantise_value(v, i));
                }
            }
        }
        Ok(())
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
