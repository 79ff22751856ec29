//! `Dequantise`: an int8 product's i32 accumulator back to f32 in one pass,
//! `y = acc * activation_scale * channel_scale (+ bias)`.

use tract_core::internal::*;
use tract_linalg::multithread::par_chunks_mut;

/// Rescales the i32 accumulator of an int8 product or convolution.
///
/// Inputs: the accumulator (i32, any shape) and the activation scales (f32,
/// one per position of the accumulator's other axes, in their row-major
/// order, in any shape; or a single one for the whole tensor). The per-channel weight scales and the
/// optional bias are constants of the op, one value per position of
/// `channel_axis`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Dequantise {
    /// The output-channel axis of the accumulator.
    pub channel_axis: usize,
    /// One weight scale per output channel.
    pub channel_scale: Arc<Tensor>,
    /// One bias per output channel, added after the scales.
    pub bias: Option<Arc<Tensor>>,
}

impl Dequantise {
    /// `y = acc * xs * ws (+ b)` over an accumulator viewed as
    /// `outer x channels x inner`; `xs` has `outer x inner` values, or one.
    pub fn run(&self, shape: &[usize], acc: &[i32], xs: &[f32], y: &mut [f32]) -> TractResult<()> {
        let ws = self.channel_scale.try_as_plain_ram()?;
        let ws = ws.as_slice::<f32>()?;
        let bias_view = self.bias.as_ref().map(|b| b.try_as_plain_ram()).transpose()?;
        let bias = bias_view.as_ref().map(|b| b.as_slice::<f32>()).transpose()?;
        let channels = shape[self.channel_axis];
        let outer: usize = shape[..self.channel_axis].iter().product();
        let inner: usize = shape[self.channel_axis + 1..].iter().product();
        ensure!(ws.len() == channels && bias.is_none_or(|b| b.len() == channels));
        ensure!(acc.len() == outer * channels * inner && y.len() == acc.len());
        ensure!(xs.len() == 1 || xs.len() == outer * inner);
        // Row segments sharing one pattern: a row of channels (linear layers,
        // one activation scale each) or a row of pixels (one channel each).
        let row = if inner == 1 { channels } else { inner };
        par_chunks_mut(y, 1, acc.len(), |first, chunk| {
            let mut pos = first;
            let mut rest = chunk;
            while !rest.is_empty() {
                let offset = pos % row;
                let n = (row - offset).min(rest.len());
                let (seg, tail) = rest.split_at_mut(n);
                let a = &acc[pos..pos + n];
                if inner == 1 {
                    let x = if xs.len() == 1 { xs[0] } else { xs[pos / channels] };
                    let ws = &ws[offset..offset + n];
                    match bias {
                        Some(b) => seg
                            .iter_mut()
                            .zip(a)
                            .zip(ws)
                            .zip(&b[offset..offset + n])
                            .for_each(|(((y, &a), &w), &b)| *y = a as f32 * (x * w) + b),
                        None => {
                            seg.iter_mut().zip(a).zip(ws).for_each(|((y, &a), &w)| *y = a as f32 * (x * w))
                        }
                    }
                } else {
                    let (o, c) = (pos / (channels * inner), (pos / inner) % channels);
                    let (w, b) = (ws[c], bias.map_or(0.0, |b| b[c]));
                    if xs.len() == 1 {
                        let s = xs[0] * w;
                        seg.iter_mut().zip(a).for_each(|(y, &a)| *y = a as f32 * s + b);
                    } else {
                        let xs = &xs[o * inner + offset..o * inner + offset + n];
                        seg.iter_mut().zip(a).zip(xs).for_each(|((y, &a), &x)| *y = a as f32 * (x * w) + b);
                    }
                }
                pos += n;
                rest = tail;
            }
            Ok(())
        })?;
        Ok(())
    }
}

impl Op for Dequantise {
    fn name(&self) -> StaticName {
        "ClipEdgeDequantise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "channel axis {}, {} channels{}",
            self.channel_axis,
            self.channel_scale.len(),
            if self.bias.is_some() { ", bias" } else { "" }
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Dequantise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (acc, xs) = args_2!(inputs);
        let shape: TVec<usize> = acc.shape().into();
        let mut y = Tensor::zero::<f32>(&shape)?;
        {
            let acc = acc.try_as_plain_ram()?;
            let xs = xs.try_as_plain_ram()?;
            let mut yv = y.try_as_plain_ram_mut()?;
            self.run(&shape, acc.as_slice::<i32>()?, xs.as_slice::<f32>()?, yv.as_slice_mut::<f32>()?)?;
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for Dequantise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == i32::datum_type() && inputs[1].datum_type == f32::datum_type());
        ensure!(self.channel_axis < inputs[0].rank());
        let channels = self.channel_scale.len().to_dim();
        ensure!(inputs[0].shape[self.channel_axis] == channels);
        let scales = inputs[1].shape.volume();
        ensure!(scales.is_one() || scales * channels == inputs[0].shape.volume());
        Ok(tvec!(f32::fact(inputs[0].shape.to_tvec())))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(tvec!((Cost::FMA(f32::datum_type()), inputs[0].shape.volume())))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(channel_axis: usize, ws: &[f32], bias: Option<&[f32]>) -> Dequantise {
        Dequantise { channel_axis, channel_scale: rctensor1(ws), bias: bias.map(rctensor1) }
    }

    #[test]
    fn rows_times_channels_for_a_linear_layer() {
        // [2 rows, 3 channels], one activation scale per row.
        let d = op(1, &[1.0, 2.0, 4.0], Some(&[0.5, 0.0, -1.0]));
        let mut y = [0f32; 6];
        d.run(&[2, 3], &[1, 1, 1, 2, -2, 3], &[1.0, 0.5], &mut y).expect("run");
        assert_eq!(y, [1.5, 2.0, 3.0, 1.5, -2.0, 5.0]);
    }

    #[test]
    fn per_pixel_and_per_tensor_scales_for_nchw() {
        // [1, 2 channels, 2 pixels].
        let d = op(1, &[1.0, 10.0], None);
        let mut y = [0f32; 4];
        d.run(&[1, 2, 2], &[1, 2, 3, 4], &[0.5, 0.25], &mut y).expect("run");
        assert_eq!(y, [0.5, 0.5, 15.0, 10.0]);
        d.run(&[1, 2, 2], &[1, 2, 3, 4], &[2.0], &mut y).expect("run");
        assert_eq!(y, [2.0, 4.0, 60.0, 80.0]);
    }
}
