//! `DepthwiseConv`: clip-edge's own depthwise (and channel-multiplier)
//! convolution for NCHW f32 images, put in place of tract's `Conv` before
//! codegen.
//!
//! tract 0.23.9 runs depthwise convolutions on NCHW planes with a SIMD kernel
//! only for long stride-1 runs of the centre zone; stride 2, short rows (16
//! and 8 px maps) and every border zone take scalar loops, and a
//! channel-multiplier convolution (`group == Cin`, `Cout = 2 Cin`, in every
//! MobileCLIP stage) becomes one tiny matrix product per group. This op
//! replaces all of them: it pads each input plane once into a scratch buffer
//! (split into `stride x stride` phases, so every tap reads contiguous
//! memory) and computes the plane as one flat run of outputs in explicit
//! vectors ([`flat`]). Planes are spread over the encoder's threads.
//! Summation order: bias, then taps in kernel order (row-major), as tract's
//! reference loop.

use tract_core::internal::*;
use tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_core::ops::nn::DataFormat;
use tract_linalg::multithread::par_chunks_mut;

mod flat;

use flat::planes_flat;
pub(crate) use flat::PhaseFill;

/// The depthwise convolution of one NCHW image (batch 1).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct DepthwiseConv {
    /// `[Cout, KH, KW]`: one kernel per output channel.
    kernel: Arc<Tensor>,
    /// One bias per output channel.
    bias: Arc<Tensor>,
    /// Output channels per input channel.
    multiplier: usize,
    kernel_hw: [usize; 2],
    strides: [usize; 2],
    padding: PaddingSpec,
    /// NCHW (with a batch axis of 1) rather than CHW.
    has_n: bool,
}

/// Where the outputs of a 2-D convolution over one `h x w` plane fall, and
/// the padded plane its taps read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    pub(crate) pad_top: usize,
    pub(crate) pad_left: usize,
    /// Columns of one phase of the padded plane.
    pub(crate) phase_w: usize,
    /// Rows of the padded plane.
    pub(crate) ph: usize,
}

impl Geometry {
    /// The geometry of a `kernel_hw` convolution with `strides` and `padding`
    /// (no dilation) over an `h x w` plane.
    pub(crate) fn new(
        kernel_hw: [usize; 2],
        strides: [usize; 2],
        padding: &PaddingSpec,
        h: usize,
        w: usize,
    ) -> Geometry {
        let spec = tract_core::ops::cnn::PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: kernel_hw.iter().copied().collect(),
            padding: padding.clone(),
            dilations: None,
            strides: Some(strides.iter().copied().collect()),
            input_channels: 1,
            output_channels: 1,
        };
        let p = spec.computed_padding(&[h, w]);
        let (oh, ow) = (p[0].convoluted, p[1].convoluted);
        let [sy, sx] = strides;
        let [kh, kw] = kernel_hw;
        // Padded extent that every tap of every output reads (at least the image).
        let ph = ((oh.max(1) - 1) * sy + kh).max(h + p[0].pad_before);
        let pw = ((ow.max(1) - 1) * sx + kw).max(w + p[1].pad_before);
        Geometry {
            h,
            w,
            oh,
            ow,
            pad_top: p[0].pad_before,
            pad_left: p[1].pad_before,
            phase_w: pw.div_ceil(sx),
            ph,
        }
    }
}

impl DepthwiseConv {
    fn geometry(&self, h: usize, w: usize) -> Geometry {
        Geometry::new(self.kernel_hw, self.strides, &self.padding, h, w)
    }
}

impl Op for DepthwiseConv {
    fn name(&self) -> StaticName {
        "ClipEdgeDepthwiseConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "kernel {:?}, strides {:?}, multiplier {}, {:?}",
            self.kernel_hw, self.strides, self.multiplier, self.padding
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for DepthwiseConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let cout = self.kernel.shape()[0];
        let (h, w) =
            Image { has_n: self.has_n }.input_hw("DepthwiseConv", x.shape(), cout / self.multiplier)?;
        let g = self.geometry(h, w);
        let mut y = Tensor::zero::<f32>(&Image { has_n: self.has_n }.output_shape(cout, &g))?;
        {
            let xv = x.try_as_plain_ram()?;
            let xs = xv.as_slice::<f32>()?;
            let mut yv = y.try_as_plain_ram_mut()?;
            let ys = yv.as_slice_mut::<f32>()?;
            let plane = (g.oh * g.ow).max(1);
            let macs = ys.len() * self.kernel_hw[0] * self.kernel_hw[1];
            par_chunks_mut(ys, plane, macs, |first, chunk| {
                planes_flat(self, &g, xs, first, chunk, &mut Vec::new())
            })?;
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for DepthwiseConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let cout = self.kernel.shape()[0];
        let image = Image { has_n: self.has_n };
        let fact =
            image.output_fact("DepthwiseConv", inputs[0], (cout / self.multiplier, cout), |h, w| {
                self.geometry(h, w)
            })?;
        Ok(tvec!(fact))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let shape = inputs[0].shape.as_concrete().context("concrete shape")?;
        let g = self.geometry(shape[shape.len() - 2], shape[shape.len() - 1]);
        let macs = self.kernel.len() * g.oh * g.ow;
        Ok(tvec!((Cost::FMA(f32::datum_type()), macs.to_dim())))
    }

    as_op!();
}

impl DepthwiseConv {
    /// Multiply-accumulates per output value (the kernel's taps).
    pub fn taps(&self) -> usize {
        self.kernel_hw[0] * self.kernel_hw[1]
    }
}

/// Replaces every depthwise or channel-multiplier convolution of a
/// decluttered model (NCHW, f32, one image, 2-D, no dilation, constant
/// kernel and bias) by [`DepthwiseConv`]; returns how many.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    replace_convs(model, candidate)
}

/// Replaces each tract `Conv` of `model` for which `candidate` gives an op
/// and the outlet it reads (the convolution's data input, or what came
/// before it) by that op; returns how many.
pub(crate) fn replace_convs<O: TypedOp>(
    model: &mut TypedModel,
    candidate: impl Fn(&TypedModel, &TypedNode, &Conv) -> TractResult<Option<(O, OutletId)>>,
) -> TractResult<usize> {
    replace_nodes(model, |model, node| {
        let Some(conv) = node.op_as::<Conv>() else { return Ok(None) };
        Ok(candidate(model, node, conv)?.map(|(op, input)| (op, tvec![input], node.id)))
    })
}

/// For each node of `model` for which `find` gives an op, the outlets it
/// reads and the node whose output it takes over (the node itself, or one
/// after it that it folds in), wires that op (named after the node) and
/// hands it that output's consumers; returns how many.
pub(crate) fn replace_nodes<O: TypedOp>(
    model: &mut TypedModel,
    find: impl Fn(&TypedModel, &TypedNode) -> TractResult<Option<(O, TVec<OutletId>, usize)>>,
) -> TractResult<usize> {
    let mut count = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some((op, inputs, replaced)) = find(model, node)? else { continue };
        let mut patch = TypedModelPatch::default();
        let taps = inputs.iter().map(|&i| patch.tap_model(model, i)).collect::<TractResult<TVec<_>>>()?;
        let wired = patch.wire_node(&node.name, op, &taps)?;
        patch.shunt_outside(model, replaced.into(), wired[0])?;
        patch.apply(model)?;
        count += 1;
    }
    if count > 0 {
        model.compact()?;
    }
    Ok(count)
}

fn candidate(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
) -> TractResult<Option<(DepthwiseConv, OutletId)>> {
    let (cin, cout) = (conv.input_channels(), conv.output_channels());
    if conv.group != cin || cin <= 1 || cout % cin != 0 {
        return Ok(None);
    }
    let Some(Operands { kernel, bias, has_n }) = operands(model, node, conv, "depthwise")? else {
        return Ok(None);
    };
    let ps = &conv.pool_spec;
    let [kh, kw] = [ps.kernel_shape[0], ps.kernel_shape[1]];
    let strides = ps.strides();
    let op = DepthwiseConv {
        kernel: Arc::unwrap_or_clone(kernel).into_shape(&[cout, kh, kw])?.into_arc_tensor(),
        bias: rctensor1(&bias),
        multiplier: cout / cin,
        kernel_hw: [kh, kw],
        strides: [strides[0], strides[1]],
        padding: ps.padding.clone(),
        has_n,
    };
    Ok(Some((op, node.inputs[0])))
}

/// The constant operands of a 2-D f32 convolution that clip-edge's own ops
/// take.
pub(crate) struct Operands {
    /// The OIHW kernel (the model's constant, shared, not copied).
    pub(crate) kernel: Arc<Tensor>,
    /// One bias per output channel.
    pub(crate) bias: Vec<f32>,
    /// NCHW (with a batch axis of 1) rather than CHW.
    pub(crate) has_n: bool,
}

/// One NCHW image with a batch axis of 1 (`has_n`) or one CHW image, as
/// clip-edge's convolution ops take and give.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Image {
    pub(crate) has_n: bool,
}

impl Image {
    /// `(h, w)` of an input `shape` of `channels` channels, or an error naming
    /// `op`.
    pub(crate) fn input_hw(self, op: &str, shape: &[usize], channels: usize) -> TractResult<(usize, usize)> {
        let batch = usize::from(self.has_n);
        match shape {
            [n @ .., c, h, w] if n.len() == batch && *c == channels && n.iter().all(|&n| n == 1) => {
                Ok((*h, *w))
            }
            _ => bail!("{op} takes one image of {channels} channels, got {shape:?}"),
        }
    }

    /// The output shape for `channels` planes of `g.oh x g.ow`.
    pub(crate) fn output_shape(self, channels: usize, g: &Geometry) -> TVec<usize> {
        let mut shape: TVec<usize> = if self.has_n { tvec![1] } else { tvec![] };
        shape.extend([channels, g.oh, g.ow]);
        shape
    }

    /// The output fact for an f32 `input` of `cin` channels: `cout` planes of
    /// the size `geometry(h, w)` gives.
    pub(crate) fn output_fact(
        self,
        op: &str,
        input: &TypedFact,
        (cin, cout): (usize, usize),
        geometry: impl Fn(usize, usize) -> Geometry,
    ) -> TractResult<TypedFact> {
        let shape =
            input.shape.as_concrete().with_context(|| format!("{op} needs a concrete input shape"))?;
        ensure!(input.datum_type == f32::datum_type(), "{op} takes f32, got {:?}", input.datum_type);
        let (h, w) = self.input_hw(op, shape, cin)?;
        Ok(f32::fact(self.output_shape(cout, &geometry(h, w))))
    }
}

/// The operands of `conv` if it is a 2-D convolution of one f32 image (NCHW
/// or CHW, concrete shape, no dilation, strides and kernel sides >= 1) with a
/// constant f32 OIHW kernel and bias; `None` (logged, naming `what`) if not.
pub(crate) fn operands(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
    what: &str,
) -> TractResult<Option<Operands>> {
    let ps = &conv.pool_spec;
    let fits = conv.q_params.is_none()
        && node.inputs.len() == 3
        && matches!(ps.data_format, DataFormat::NCHW | DataFormat::CHW)
        && ps.kernel_shape.len() == 2
        && ps.dilations().iter().all(|&d| d == 1)
        && ps.strides().iter().all(|&s| s >= 1)
        && ps.kernel_shape.iter().all(|&k| k >= 1)
        && conv.kernel_fmt == KernelFormat::OIHW;
    if !fits {
        log::debug!("{}: {what} convolution stays tract's: {conv:?}", node.name);
        return Ok(None);
    }
    let x = model.outlet_fact(node.inputs[0])?;
    let has_n = ps.data_format == DataFormat::NCHW;
    let concrete =
        x.shape.as_concrete().is_some_and(|s| if has_n { s.len() == 4 && s[0] == 1 } else { s.len() == 3 });
    let (Some(kernel), Some(bias)) =
        (&model.outlet_fact(node.inputs[1])?.konst, &model.outlet_fact(node.inputs[2])?.konst)
    else {
        log::debug!("{}: {what} convolution stays tract's: kernel or bias not constant", node.name);
        return Ok(None);
    };
    if !concrete || x.datum_type != f32::datum_type() || kernel.datum_type() != f32::datum_type() {
        log::debug!("{}: {what} convolution stays tract's: input {x:?}", node.name);
        return Ok(None);
    }
    let cout = conv.output_channels();
    let bias: Vec<f32> = match bias.len() {
        1 => vec![bias.cast_to_scalar::<f32>()?; cout],
        n if n == cout => bias.to_plain_array_view::<f32>()?.iter().copied().collect(),
        _ => return Ok(None),
    };
    Ok(Some(Operands { kernel: kernel.clone(), bias, has_n }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The convolution written out directly.
    fn reference(
        x: &[f32],
        (cin, h, w): (usize, usize, usize),
        k: &[f32],
        (kh, kw): (usize, usize),
        mult: usize,
        stride: usize,
        pad: usize,
    ) -> Vec<f32> {
        let oh = (h + 2 * pad - kh) / stride + 1;
        let ow = (w + 2 * pad - kw) / stride + 1;
        let mut y = vec![0f32; cin * mult * oh * ow];
        for oc in 0..cin * mult {
            let c = oc / mult;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = 0.5 * oc as f32;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * stride + ky) as isize - pad as isize;
                            let ix = (ox * stride + kx) as isize - pad as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                s += k[(oc * kh + ky) * kw + kx] * x[(c * h + iy as usize) * w + ix as usize];
                            }
                        }
                    }
                    y[(oc * oh + oy) * ow + ox] = s;
                }
            }
        }
        y
    }

    /// The largest |a - b| over two equally long runs of values.
    fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max)
    }

    /// A thread's chunk that starts inside a multiplier's group of output planes.
    #[test]
    fn a_chunk_may_start_inside_a_group() {
        let (cin, h, w, kh, mult, stride, pad) = (3, 9, 11, 3, 2, 2, 1);
        let (op, x, k) = fixture((cin, h, w, kh, mult, stride, pad), 0.5);
        let want = reference(&x, (cin, h, w), &k, (kh, kh), mult, stride, pad);
        let g = op.geometry(h, w);
        let plane = g.oh * g.ow;
        let mut got = vec![0.0; want.len() - plane];
        planes_flat(&op, &g, &x, 1, &mut got, &mut Vec::new()).expect("chunk");
        let worst = largest_difference(&got, &want[plane..]);
        assert!(worst < 1e-4, "max |d| {worst}");
    }

    /// Square-kernel case `(cin, h, w, kh, multiplier, stride, pad)`.
    type Case = (usize, usize, usize, usize, usize, usize, usize);

    /// The op of `case` with deterministic input `x`, kernel `k` and bias
    /// `bias_step * channel`.
    fn fixture(
        (cin, h, w, kh, mult, stride, pad): Case,
        bias_step: f32,
    ) -> (DepthwiseConv, Vec<f32>, Vec<f32>) {
        let x: Vec<f32> = (0..cin * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let k: Vec<f32> = (0..cin * mult * kh * kh).map(|i| ((i * 13 % 29) as f32 - 14.0) / 10.0).collect();
        let bias: Vec<f32> = (0..cin * mult).map(|c| bias_step * c as f32).collect();
        let op = DepthwiseConv {
            kernel: Tensor::from_shape(&[cin * mult, kh, kh], &k).expect("k").into_arc_tensor(),
            bias: rctensor1(&bias),
            multiplier: mult,
            kernel_hw: [kh, kh],
            strides: [stride, stride],
            padding: PaddingSpec::ExplicitOnnxPool(tvec![pad, pad], tvec![pad, pad], false),
            has_n: true,
        };
        (op, x, k)
    }

    #[test]
    fn matches_the_direct_convolution() {
        for (cin, h, w, kh, mult, stride, pad) in [
            (3, 9, 20, 3, 1, 1, 1),
            (2, 16, 16, 7, 1, 1, 3),
            (4, 17, 13, 3, 1, 2, 1),
            (2, 16, 16, 7, 2, 2, 3),
            (3, 8, 8, 3, 2, 1, 1),
            (2, 5, 37, 1, 1, 1, 0),
            (2, 7, 45, 3, 1, 1, 1),
            (83, 7, 7, 5, 1, 1, 2),
            (81, 14, 14, 5, 1, 2, 2),
            (17, 8, 9, 3, 2, 2, 1),
            (3, 1, 1, 3, 1, 1, 1),
            (2, 64, 64, 7, 1, 1, 3),
            (2, 66, 50, 3, 1, 2, 1),
            (2, 12, 12, 7, 2, 2, 3),
        ] {
            let (op, x, k) = fixture((cin, h, w, kh, mult, stride, pad), 0.5);
            let input = Tensor::from_shape(&[1, cin, h, w], &x).expect("x");
            let y = op.eval(&EvalContext::out_of_plan(), tvec![input.into_tvalue()]).expect("eval");
            let got: Vec<f32> = y[0].to_plain_array_view::<f32>().expect("y").iter().copied().collect();
            let want = reference(&x, (cin, h, w), &k, (kh, kh), mult, stride, pad);
            assert_eq!(got.len(), want.len(), "shape for {cin}x{h}x{w} k{kh} m{mult} s{stride}");
            let worst = largest_difference(&got, &want);
            assert!(worst < 1e-4, "{cin}x{h}x{w} k{kh} m{mult} s{stride} p{pad}: max |d| {worst}");
            // The scalar build of the kernel (armv7, x86 without AVX2 + FMA), on any host.
            let g = op.geometry(h, w);
            let mut scalar = vec![0.0; want.len()];
            let (out, scratch) = (&mut scalar, &mut Vec::new());
            pulp::WithSimd::with_simd(
                flat::Flat { conv: &op, g: &g, x: &x, first: 0, out, scratch },
                pulp::Scalar::new(),
            )
            .expect("scalar");
            let worst = largest_difference(&scalar, &want);
            assert!(worst < 1e-4, "scalar {cin}x{h}x{w} k{kh} m{mult} s{stride} p{pad}: max |d| {worst}");
        }
    }

    /// Batches other than one image, another channel count or rank are errors
    /// naming the op, in eval and in output_facts.
    #[test]
    fn one_image_of_the_right_channels() {
        let nchw = Image { has_n: true };
        assert_eq!(nchw.input_hw("Op", &[1, 4, 5, 6], 4).expect("nchw"), (5, 6));
        assert_eq!(Image { has_n: false }.input_hw("Op", &[4, 5, 6], 4).expect("chw"), (5, 6));
        for bad in [&[2, 4, 5, 6][..], &[1, 3, 5, 6], &[4, 5, 6], &[1, 1, 4, 5, 6]] {
            let err = nchw.input_hw("Op", bad, 4).expect_err("bad shape");
            assert!(format!("{err}").starts_with("Op takes one image of 4 channels"), "{bad:?}: {err}");
        }
        let (op, x, _) = fixture((3, 6, 6, 3, 1, 1, 1), 0.5);
        let two = Tensor::from_shape(&[2, 3, 6, 6], &[x.clone(), x].concat()).expect("x");
        let err = op.eval(&EvalContext::out_of_plan(), tvec![two.into_tvalue()]).expect_err("batch 2");
        assert!(format!("{err}").contains("DepthwiseConv takes one image"), "{err}");
        let fact = f32::fact([2, 3, 6, 6]);
        assert!(op.output_facts(&[&fact]).is_err());
    }
}
