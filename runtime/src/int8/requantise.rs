//! `Requantise`: one int8 product's channels-last accumulator straight to
//! the int8 input of the next product, a pixel's row of channels at a time:
//! [`Dequantise`] (with its fused GELU) and then [`QuantiseSym`] with one
//! scale per pixel, without the f32 activation between them and without
//! transposing it back to channels-first.
//!
//! [`QuantiseSym`]: super::QuantiseSym

use super::dequantise::{AccLayout, Dequantise, Rescale};
use super::quantise::{abs_max_lanes, quantise_value, scale_of};
use tract_core::internal::*;
use tract_linalg::multithread::par_chunks_mut;

/// Rescales a channels-last i32 accumulator like `dequantise` (which must
/// have [`AccLayout::ChannelLast`]) and quantises the result again, one
/// scale per pixel across its channels.
///
/// Inputs: the accumulator and the activation scales, as for [`Dequantise`].
/// Outputs: the i8 values, laid out like the accumulator (channels last), and
/// their scales, shaped like the f32 output of `dequantise` with its channel
/// axis of length 1 (what [`super::QuantiseSym`] with one scale per pixel
/// writes). Values and scales are those of the two ops in sequence, to the bit.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Requantise {
    /// The rescaling (and GELU) of the accumulator.
    pub dequantise: Dequantise,
}

impl Requantise {
    /// `acc` is `rows x channels`; writes `q` (same layout) and one scale per row.
    pub fn run(&self, acc: &[i32], xs: &[f32], q: &mut [i8], scales: &mut [f32]) -> TractResult<()> {
        let d = &self.dequantise;
        let ws = d.channel_scale.try_as_plain_ram()?;
        let ws = ws.as_slice::<f32>()?;
        let bias_view = d.bias.as_ref().map(|b| b.try_as_plain_ram()).transpose()?;
        let bias = bias_view.as_ref().map(|b| b.as_slice::<f32>()).transpose()?;
        let channels = ws.len();
        ensure!(channels > 0 && bias.is_none_or(|b| b.len() == channels));
        let rows = acc.len() / channels;
        ensure!(acc.len() == rows * channels && q.len() == acc.len() && scales.len() == rows);
        ensure!(xs.len() == 1 || xs.len() == rows);
        let shared = std::sync::Mutex::new(scales);
        par_chunks_mut(q, channels, acc.len(), |first_row, chunk| {
            let rows = Rescale { acc, xs, ws, bias, channels, inner: 1 };
            let local = requantise_rows(&rows, d.gelu, first_row, chunk);
            let mut scales = shared.lock().map_err(|_| format_err!("a requantising thread panicked"))?;
            scales[first_row..first_row + local.len()].copy_from_slice(&local);
            Ok(())
        })
    }

    fn scale_shape<D: Clone + From<usize>>(&self, acc: &[D]) -> TVec<D> {
        let mut shape = self.dequantise.output_shape(acc);
        shape[self.dequantise.channel_axis] = D::from(1);
        shape
    }
}

impl Op for Requantise {
    fn name(&self) -> StaticName {
        "ClipEdgeRequantise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        self.dequantise.info()
    }

    op_as_typed_op!();
}

impl EvalOp for Requantise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (acc, xs) = args_2!(inputs);
        let mut q = Tensor::zero::<i8>(acc.shape())?;
        let mut scales = Tensor::zero::<f32>(&self.scale_shape(acc.shape()))?;
        {
            let (acc, xs) = (acc.try_as_plain_ram()?, xs.try_as_plain_ram()?);
            let mut qv = q.try_as_plain_ram_mut()?;
            let mut sv = scales.try_as_plain_ram_mut()?;
            self.run(acc.as_slice::<i32>()?, xs.as_slice::<f32>()?, qv.as_slice_mut()?, sv.as_slice_mut()?)?;
        }
        Ok(tvec!(q.into_tvalue(), scales.into_tvalue()))
    }
}

impl TypedOp for Requantise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(self.dequantise.acc_layout == AccLayout::ChannelLast);
        let dequantised = self.dequantise.output_facts(inputs)?;
        ensure!(dequantised[0].rank() == inputs[0].rank());
        let shape = inputs[0].shape.to_tvec();
        Ok(tvec!(i8::fact(&*shape), f32::fact(&*self.scale_shape(&shape))))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(tvec!((Cost::FMA(f32::datum_type()), inputs[0].shape.volume() * 2)))
    }

    as_op!();
}

/// Requantises rows `first_row..` into `q` (whole rows); returns their scales.
/// Compiled for x86-64's baseline and again for AVX2 and AVX-512 (the same
/// arithmetic, in wider vectors), chosen at run time.
#[multiversion::multiversion(targets = "simd")]
fn requantise_rows(rows: &Rescale, gelu: bool, first_row: usize, q: &mut [i8]) -> Vec<f32> {
    let channels = rows.ws.len();
    let mut y = vec![0f32; channels];
    let mut scales = Vec::with_capacity(q.len() / channels);
    for (i, q) in q.chunks_exact_mut(channels).enumerate() {
        let r = first_row + i;
        let x = if rows.xs.len() == 1 { rows.xs[0] } else { rows.xs[r] };
        let a = &rows.acc[r * channels..(r + 1) * channels];
        // The same operations, in the same order, as `Dequantise`.
        y.iter_mut().zip(a).zip(rows.ws).for_each(|((y, &a), &w)| *y = a as f32 * (x * w));
        if let Some(b) = rows.bias {
            y.iter_mut().zip(b).for_each(|(y, &b)| *y += b);
        }
        if gelu {
            crate::gelu::gelu_slice(&mut y);
        }
        let (scale, inv) = scale_of(abs_max_lanes(&y));
        q.iter_mut().zip(&y).for_each(|(q, &v)| *q = quantise_value(v, inv));
        scales.push(scale);
    }
    scales
}

#[cfg(test)]
mod tests {
    use super::super::{Granularity, QuantiseSym};
    use super::*;

    #[test]
    fn the_same_values_and_scales_as_dequantise_then_quantise() {
        // y: [1, 20 channels, 37 pixels]; acc laid out [1, 37, 20].
        let (channels, inner) = (20, 37);
        let ws: Vec<f32> = (0..channels).map(|c| 0.01 + c as f32 * 0.003).collect();
        let bias: Vec<f32> = (0..channels).map(|c| (c as f32 - 9.5) * 0.1).collect();
        let xs: Vec<f32> = (0..inner).map(|p| 0.02 + (p % 5) as f32 * 0.01).collect();
        let acc: Vec<i32> = (0..channels * inner).map(|i| (i as i32 * 7919) % 4001 - 2000).collect();
        for gelu in [false, true] {
            let d = Dequantise {
                channel_axis: 1,
                channel_scale: rctensor1(&ws),
                bias: Some(rctensor1(&bias)),
                acc_layout: AccLayout::ChannelLast,
                gelu,
            };
            let mut y = vec![0f32; acc.len()];
            d.run_transposed(&[1, channels, inner], &acc, &xs, &mut y).expect("dequantise");
            let (mut want_q, mut want_s) = (vec![0i8; y.len()], vec![0f32; inner]);
            let quantise = QuantiseSym::new(Granularity::Along(1..2));
            quantise.run(&[1, channels, inner], &y, &mut want_q, &mut want_s).expect("quantise");
            let op = Requantise { dequantise: d };
            let (mut q, mut s) = (vec![0i8; y.len()], vec![0f32; inner]);
            op.run(&acc, &xs, &mut q, &mut s).expect("requantise");
            assert_eq!(s, want_s, "gelu {gelu}");
            for c in 0..channels {
                for p in 0..inner {
                    assert_eq!(
                        q[p * channels + c],
                        want_q[c * inner + p],
                        "gelu {gelu}, channel {c}, pixel {p}"
                    );
                }
            }
            assert_eq!(&*op.scale_shape(&[1, inner, channels]), &[1, 1, inner]);
        }
    }

    #[test]
    fn a_mismatched_accumulator_is_an_error() {
        let d = Dequantise {
            channel_axis: 1,
            channel_scale: rctensor1(&[1.0f32, 2.0, 3.0]),
            bias: None,
            acc_layout: AccLayout::ChannelLast,
            gelu: false,
        };
        let op = Requantise { dequantise: d };
        let (mut q, mut s) = (vec![0i8; 4], vec![0f32; 1]);
        assert!(op.run(&[1, 2, 3, 4], &[1.0], &mut q, &mut s).is_err());
    }
}
