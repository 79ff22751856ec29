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
    /// The output-channel axis of the output (and of the accumulator where
    /// `acc_layout` is [`AccLayout::Same`]).
    pub channel_axis: usize,
    /// One weight scale per output channel.
    pub channel_scale: Arc<Tensor>,
    /// One bias per output channel, added after the scales.
    pub bias: Option<Arc<Tensor>>,
    /// Where the accumulator has its channel axis; the output has it at
    /// `channel_axis`, so any other layout makes this op transpose too.
    pub acc_layout: AccLayout,
    /// Applies the exact GELU to the result: tract's `GeluExact` that
    /// followed this op, fused so that the activations are not read and
    /// written once more, and computed as clip-edge's one-pass GELU
    /// ([`crate::gelu`], what the f32 plan runs in place of tract's).
    pub gelu: bool,
}

/// Where an accumulator has its channel axis (the other axes keep the
/// output's order).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum AccLayout {
    /// At the output's `channel_axis`.
    Same,
    /// Last (the output has it before other axes: NCHW).
    ChannelLast,
}

/// Channels and pixels of one tile of the transposing pass.
const TILE: (usize, usize) = (8, 64);

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
        let rescale = Rescale { acc, xs, ws, bias, channels, inner };
        par_chunks_mut(y, 1, acc.len(), |first, chunk| {
            rescale_chunk(&rescale, self.gelu, first, chunk);
            Ok(())
        })?;
        Ok(())
    }
}

/// Rows `first_row ..` (whole rows of `inner` pixels) of the output of
/// [`Dequantise::run_transposed`], with the GELU applied to each run of
/// pixels as it is written. Compiled for the widest vectors this CPU has.
#[multiversion::multiversion(targets = "simd")]
fn transpose_rows(r: &Rescale, gelu: bool, first_row: usize, y: &mut [f32]) {
    let Rescale { acc, xs, ws, bias, channels, inner } = *r;
    let (tc, tp) = TILE;
    let mut tile = [[0f32; TILE.1]; TILE.0];
    let mut row = first_row;
    let mut rest = y;
    while !rest.is_empty() {
        // The chunk's rows of one outer index: channels ca .. ca + cn.
        let (o, ca) = (row / channels, row % channels);
        let cn = (channels - ca).min(rest.len() / inner);
        let (rows, tail) = rest.split_at_mut(cn * inner);
        // A run of pixels across all these channels at a time, so
        // that its rows of the accumulator stay in cache.
        for p0 in (0..inner).step_by(tp) {
            let pn = tp.min(inner - p0);
            for c0 in (0..cn).step_by(tc) {
                let cw = tc.min(cn - c0);
                let (ws, c) = (&ws[ca + c0..ca + c0 + cw], ca + c0);
                for p in 0..pn {
                    let q = o * inner + p0 + p;
                    let x = if xs.len() == 1 { xs[0] } else { xs[q] };
                    let a = &acc[q * channels + c..q * channels + c + cw];
                    for ((t, &a), &w) in tile.iter_mut().zip(a).zip(ws) {
                        t[p] = a as f32 * (x * w);
                    }
                }
                let out_rows = rows[c0 * inner..(c0 + cw) * inner].chunks_exact_mut(inner);
                for (j, out) in out_rows.enumerate() {
                    let b = bias.map_or(0.0, |b| b[c + j]);
                    let run = &mut out[p0..p0 + pn];
                    run.iter_mut().zip(&tile[j][..pn]).for_each(|(y, &t)| *y = t + b);
                    if gelu {
                        crate::gelu::gelu_slice(run);
                    }
                }
            }
        }
        row += cn;
        rest = tail;
    }
}

/// What the rescaling loops read ([`rescale_chunk`], [`transpose_rows`] and
/// `Requantise`'s rows): the accumulator viewed as `outer x channels x
/// inner` (channels last for `Requantise`, with `inner` 1), the activation
/// scales (`outer x inner`, or one), the channel scales and the bias.
pub(super) struct Rescale<'a> {
    pub(super) acc: &'a [i32],
    pub(super) xs: &'a [f32],
    pub(super) ws: &'a [f32],
    pub(super) bias: Option<&'a [f32]>,
    pub(super) channels: usize,
    pub(super) inner: usize,
}

/// Values `first .. first + y.len()` of [`Dequantise::run`], in row segments
/// that share one pattern: a row of channels (linear layers, one activation
/// scale each) or a row of pixels (one channel each), with the GELU applied
/// to each segment as it is written. Compiled for the widest vectors this CPU has.
#[multiversion::multiversion(targets = "simd")]
fn rescale_chunk(r: &Rescale, gelu: bool, first: usize, y: &mut [f32]) {
    let Rescale { acc, xs, ws, bias, channels, inner } = *r;
    let row = if inner == 1 { channels } else { inner };
    let mut pos = first;
    let mut rest = y;
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
                None => seg.iter_mut().zip(a).zip(ws).for_each(|((y, &a), &w)| *y = a as f32 * (x * w)),
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
        if gelu {
            crate::gelu::gelu_slice(seg);
        }
        pos += n;
        rest = tail;
    }
}

impl Dequantise {
    /// [`Dequantise::run`] for an accumulator laid out `outer x inner x
    /// channels` ([`AccLayout::ChannelLast`]) into `y` laid out `outer x
    /// channels x inner`, in tiles of a few channels by a run of pixels: the
    /// accumulator is read a row of channels at a time, `y` written a run of
    /// pixels at a time.
    pub fn run_transposed(
        &self,
        y_shape: &[usize],
        acc: &[i32],
        xs: &[f32],
        y: &mut [f32],
    ) -> TractResult<()> {
        let ws = self.channel_scale.try_as_plain_ram()?;
        let ws = ws.as_slice::<f32>()?;
        let bias_view = self.bias.as_ref().map(|b| b.try_as_plain_ram()).transpose()?;
        let bias = bias_view.as_ref().map(|b| b.as_slice::<f32>()).transpose()?;
        let channels = y_shape[self.channel_axis];
        let inner: usize = y_shape[self.channel_axis + 1..].iter().product();
        let outer: usize = y_shape[..self.channel_axis].iter().product();
        ensure!(ws.len() == channels && bias.is_none_or(|b| b.len() == channels));
        ensure!(acc.len() == outer * channels * inner && y.len() == acc.len());
        ensure!(xs.len() == 1 || xs.len() == outer * inner);
        if inner == 0 {
            return Ok(());
        }
        let rescale = Rescale { acc, xs, ws, bias, channels, inner };
        par_chunks_mut(y, inner, acc.len(), |first_row, chunk| {
            transpose_rows(&rescale, self.gelu, first_row, chunk);
            Ok(())
        })
    }

    /// The output's shape for an accumulator of shape `acc`.
    pub(super) fn output_shape<D: Clone>(&self, acc: &[D]) -> TVec<D> {
        let mut shape: TVec<D> = acc.into();
        let from = self.acc_channel_axis(shape.len());
        let c = shape.remove(from);
        shape.insert(self.channel_axis, c);
        shape
    }

    /// The accumulator's channel axis.
    fn acc_channel_axis(&self, rank: usize) -> usize {
        match self.acc_layout {
            AccLayout::Same => self.channel_axis,
            AccLayout::ChannelLast => rank - 1,
        }
    }
}

impl Op for Dequantise {
    fn name(&self) -> StaticName {
        "ClipEdgeDequantise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "channel axis {}{}, {} channels{}{}",
            self.channel_axis,
            match self.acc_layout {
                AccLayout::Same => "",
                AccLayout::ChannelLast => " (from last)",
            },
            self.channel_scale.len(),
            if self.bias.is_some() { ", bias" } else { "" },
            if self.gelu { ", GELU" } else { "" }
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Dequantise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (acc, xs) = args_2!(inputs);
        let shape = self.output_shape(acc.shape());
        let mut y = Tensor::zero::<f32>(&shape)?;
        {
            let (acc, xs) = (acc.try_as_plain_ram()?, xs.try_as_plain_ram()?);
            let (acc, xs) = (acc.as_slice::<i32>()?, xs.as_slice::<f32>()?);
            let mut yv = y.try_as_plain_ram_mut()?;
            let y = yv.as_slice_mut::<f32>()?;
            match self.acc_layout {
                AccLayout::Same => self.run(&shape, acc, xs, y)?,
                AccLayout::ChannelLast => self.run_transposed(&shape, acc, xs, y)?,
            }
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for Dequantise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == i32::datum_type() && inputs[1].datum_type == f32::datum_type());
        ensure!(self.channel_axis < inputs[0].rank());
        let channels = self.channel_scale.len().to_dim();
        ensure!(inputs[0].shape[self.acc_channel_axis(inputs[0].rank())] == channels);
        let scales = inputs[1].shape.volume();
        ensure!(scales.is_one() || scales * channels == inputs[0].shape.volume());
        Ok(tvec!(f32::fact(self.output_shape(&inputs[0].shape.to_tvec()))))
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
        Dequantise {
            channel_axis,
            channel_scale: rctensor1(ws),
            bias: bias.map(rctensor1),
            acc_layout: AccLayout::Same,
            gelu: false,
        }
    }

    #[test]
    fn fused_gelu_is_clip_edges_gelu_to_the_bit() {
        // [1, 3 channels, 1500 pixels], plain and transposed, against
        // clip-edge's GELU op (the f32 plan's) on the plain result.
        let (channels, inner) = (3, 1500);
        let acc: Vec<i32> = (0..channels * inner).map(|i| (i as i32 * 37) % 255 - 127).collect();
        let xs: Vec<f32> = (0..inner).map(|p| 0.01 + (p % 5) as f32 * 0.02).collect();
        let d = op(1, &[1.0, 0.5, 2.0], Some(&[0.1, -0.2, 0.0]));
        let mut plain = vec![0f32; acc.len()];
        d.run(&[1, channels, inner], &acc, &xs, &mut plain).expect("run");
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, channels, inner])).expect("source");
        let gelu = tract_core::ops::element_wise::ElementWiseOp(Box::new(crate::gelu::Gelu), None);
        let y = model.wire_node("gelu", gelu, &[x]).expect("gelu");
        model.select_output_outlets(&y).expect("outputs");
        let input = Tensor::from_shape(&[1, channels, inner], &plain).expect("t").into_tvalue();
        let reference = model.into_runnable().expect("plan").run(tvec!(input)).expect("GELU");
        let want: Vec<f32> =
            reference[0].to_plain_array_view::<f32>().expect("f32").iter().copied().collect();
        let fused = Dequantise { gelu: true, ..d.clone() };
        let mut got = vec![0f32; acc.len()];
        fused.run(&[1, channels, inner], &acc, &xs, &mut got).expect("run");
        assert_eq!(got, want);
        let mut transposed_acc = vec![0i32; acc.len()];
        for c in 0..channels {
            for p in 0..inner {
                transposed_acc[p * channels + c] = acc[c * inner + p];
            }
        }
        got.fill(f32::NAN);
        let t = Dequantise { acc_layout: AccLayout::ChannelLast, ..fused };
        t.run_transposed(&[1, channels, inner], &transposed_acc, &xs, &mut got).expect("run");
        assert_eq!(got, want);
    }

    #[test]
    fn a_channel_last_accumulator_comes_out_channel_first() {
        // y: [2 outer, 11 channels, 70 pixels] (tiles of 8 x 64 with remainders);
        // acc: the same values laid out [2, 70, 11].
        let (outer, channels, inner) = (2, 11, 70);
        let ws: Vec<f32> = (0..channels).map(|c| 0.5 + c as f32).collect();
        let bias: Vec<f32> = (0..channels).map(|c| c as f32 * -0.25).collect();
        let xs: Vec<f32> = (0..outer * inner).map(|q| 1.0 + (q % 7) as f32).collect();
        let plain: Vec<i32> = (0..outer * channels * inner).map(|i| (i as i32 * 37) % 255 - 127).collect();
        let mut acc = vec![0i32; plain.len()];
        for o in 0..outer {
            for c in 0..channels {
                for p in 0..inner {
                    acc[(o * inner + p) * channels + c] = plain[(o * channels + c) * inner + p];
                }
            }
        }
        let d = op(1, &ws, Some(&bias));
        let mut want = vec![0f32; plain.len()];
        d.run(&[outer, channels, inner], &plain, &xs, &mut want).expect("run");
        let t = Dequantise { acc_layout: AccLayout::ChannelLast, ..d };
        let mut got = vec![0f32; plain.len()];
        t.run_transposed(&[outer, channels, inner], &acc, &xs, &mut got).expect("run");
        assert_eq!(got, want);
        assert_eq!(&*t.output_shape(&[outer, inner, channels]), &[outer, channels, inner]);
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
