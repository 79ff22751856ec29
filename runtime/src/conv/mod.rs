//! `DirectConv`: clip-edge's own dense (`group == 1`) 2-D convolution with a
//! kernel wider than 1x1 (or a strided 1x1 one), for NCHW f32 images, put in
//! place of tract's `Conv` (or what its declutter made of it) before codegen,
//! with a residual `Add` and a ReLU after it folded in.
//!
//! tract 0.23.9 runs these as im2col plus a matrix product whose kernel rate
//! on the small products of an edge CNN (24-320 output channels, 64 to 4 px
//! planes) stays at 60-100 GFLOP/s on a Zen 4 core where ONNX Runtime's
//! direct kernels reach 105-120, and it threads only products above its
//! size thresholds (the default model got nothing from a second thread;
//! `docs/performance.md`). This op reads the taps straight from a padded copy
//! of the input (no im2col, except a small one on 8 and 4 px planes: [`direct`]), keeps blocks of output channels in
//! vector lanes, and spreads bands of output rows and runs of blocks of
//! output channels over the encoder's threads. Weights are packed once, when the op is built, for the vector
//! width of the CPU it runs on.

use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::cnn::{Conv, PaddingSpec};
use tract_core::ops::einsum::EinSum;
use tract_core::ops::{math, Downsample};

use crate::depthwise::{operands, replace_convs, replace_nodes, Geometry, Image, Operands};

mod direct;

/// The dense convolution of one NCHW image (batch 1).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct DirectConv {
    /// `[blocks, Cin * KH * KW, block]`: the OIHW kernel, `block` output
    /// channels side by side for each tap, zero past `Cout`.
    packed: Arc<Tensor>,
    /// One bias per output channel, zero past `Cout` to a whole block.
    bias: Arc<Tensor>,
    cin: usize,
    cout: usize,
    kernel_hw: [usize; 2],
    strides: [usize; 2],
    padding: PaddingSpec,
    /// NCHW (with a batch axis of 1) rather than CHW.
    has_n: bool,
    /// `max(y, 0)` (a ReLU that followed the convolution, folded in; after
    /// the residual where there is one).
    relu: bool,
    /// A second input of the output's shape added to the output (a
    /// residual `Add` that followed the convolution, folded in).
    residual: bool,
}

/// Output channels per block of packed weights for the host's vectors and
/// `cout` output channels: up to three AVX-512 vectors, two AVX2 ones, four
/// NEON ones. `None` where the host has no SIMD that pulp dispatches to
/// (tract's convolution stays there).
pub fn host_block(cout: usize) -> Option<usize> {
    direct::block(pulp::Arch::new().dispatch(Lanes), cout)
}

struct Lanes;

impl pulp::WithSimd for Lanes {
    type Output = usize;

    fn with_simd<S: pulp::Simd>(self, _simd: S) -> usize {
        S::F32_LANES
    }
}

impl DirectConv {
    fn geometry(&self, h: usize, w: usize) -> Geometry {
        Geometry::new(self.kernel_hw, self.strides, &self.padding, h, w)
    }

    /// Output channels per packed block.
    fn block(&self) -> usize {
        self.packed.shape()[2]
    }

    /// Builds the op from an OIHW `kernel` (`[Cout, Cin, KH, KW]`) and one
    /// bias per output channel, packed in blocks of `block` output channels.
    fn new(
        kernel: &[f32],
        bias: &[f32],
        [cout, cin, kh, kw]: [usize; 4],
        strides: [usize; 2],
        padding: PaddingSpec,
        has_n: bool,
        block: usize,
    ) -> TractResult<DirectConv> {
        ensure!(
            kernel.len() == cout * cin * kh * kw
                && bias.len() == cout
                && block > 0
                && cin * kh * kw > 0
                && strides.iter().all(|&s| s >= 1)
        );
        let taps = cin * kh * kw;
        let blocks = cout.div_ceil(block);
        // Written in place and in order (one pass: packing is most of the
        // rewrite's share of cold start), channels past `cout` zero.
        let mut packed = Tensor::zero::<f32>(&[blocks, taps, block])?;
        {
            let mut view = packed.try_as_plain_ram_mut()?;
            let out = view.as_slice_mut::<f32>()?;
            for (b, (panel, weights)) in
                out.chunks_exact_mut(taps * block).zip(kernel.chunks(taps * block)).enumerate()
            {
                let rows = weights.len() / taps;
                debug_assert_eq!(rows, block.min(cout - b * block));
                for (k, lanes) in panel.chunks_exact_mut(block).enumerate() {
                    for (c, lane) in lanes[..rows].iter_mut().enumerate() {
                        *lane = weights[c * taps + k];
                    }
                }
            }
        }
        let mut padded_bias = bias.to_vec();
        padded_bias.resize(blocks * block, 0.0);
        Ok(DirectConv {
            packed: packed.into_arc_tensor(),
            bias: rctensor1(&padded_bias),
            cin,
            cout,
            kernel_hw: [kh, kw],
            strides,
            padding,
            has_n,
            relu: false,
            residual: false,
        })
    }
}

impl Op for DirectConv {
    fn name(&self) -> StaticName {
        "ClipEdgeDirectConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} -> {} channels, kernel {:?}, strides {:?}, {:?}, {} channels per block{}{}",
            self.cin,
            self.cout,
            self.kernel_hw,
            self.strides,
            self.padding,
            self.block(),
            if self.residual { ", + residual" } else { "" },
            if self.relu { ", ReLU" } else { "" }
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for DirectConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(
            inputs.len() == 1 + usize::from(self.residual),
            "DirectConv: {} inputs, expected {}",
            inputs.len(),
            1 + usize::from(self.residual)
        );
        let x = &inputs[0];
        let image = Image { has_n: self.has_n };
        let (h, w) = image.input_hw("DirectConv", x.shape(), self.cin)?;
        let g = self.geometry(h, w);
        let shape = image.output_shape(self.cout, &g);
        let mut y = Tensor::zero::<f32>(&shape)?;
        {
            let xv = x.try_as_plain_ram()?;
            let residual = inputs.get(1).map(|r| r.try_as_plain_ram()).transpose()?;
            if let Some(r) = &residual {
                ensure!(
                    r.shape() == &*shape,
                    "DirectConv: residual of shape {:?}, output {shape:?}",
                    r.shape()
                );
            }
            let residual = residual.as_ref().map(|r| r.as_slice::<f32>()).transpose()?;
            let mut yv = y.try_as_plain_ram_mut()?;
            direct::run(self, &g, xv.as_slice::<f32>()?, residual, yv.as_slice_mut::<f32>()?)?;
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for DirectConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let image = Image { has_n: self.has_n };
        let fact =
            image.output_fact("DirectConv", inputs[0], (self.cin, self.cout), |h, w| self.geometry(h, w))?;
        ensure!(inputs.len() == 1 + usize::from(self.residual), "DirectConv: {} inputs", inputs.len());
        if let Some(r) = inputs.get(1) {
            ensure!(
                r.datum_type == fact.datum_type && r.shape == fact.shape,
                "DirectConv: residual {r:?} for an output {fact:?}"
            );
        }
        Ok(tvec!(fact))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let shape = inputs[0].shape.as_concrete().context("concrete shape")?;
        let g = self.geometry(shape[shape.len() - 2], shape[shape.len() - 1]);
        let macs = self.cout * self.cin * self.kernel_hw[0] * self.kernel_hw[1] * g.oh * g.ow;
        Ok(tvec!((Cost::FMA(f32::datum_type()), macs.to_dim())))
    }

    as_op!();
}

/// Replaces every dense convolution of a decluttered model (NCHW, f32, one
/// image, 2-D, no dilation, constant kernel and bias) with a kernel wider
/// than 1x1 that the op [`takes`] by [`DirectConv`], and every strided 1x1
/// one too (what tract's declutter makes of it: [`strided_products`]), then
/// folds the ReLUs ([`fuse_relus`]) and residual `Add`s ([`fuse_residuals`])
/// after them in; returns how many convolutions. Leaves the
/// model alone on a host without SIMD that the op uses ([`host_block`]).
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    if host_block(1).is_none() {
        log::debug!("dense convolutions stay tract's: no SIMD for clip-edge's kernel on this CPU");
        return Ok(0);
    }
    let count = replace_convs(model, candidate)? + strided_products(model)?;
    fuse_relus(model)?;
    fuse_residuals(model)?;
    Ok(count)
}

/// Folds into each [`DirectConv`] the residual `Add` that alone follows it
/// (the other operand an image of the output's shape, e.g. a block's
/// shortcut) and the ReLU (`max(y, 0)`) that alone follows that `Add`: the
/// threads add the residual as they write their tiles, where tract ran the
/// `Add + Max` as one single-threaded pass after the convolution; returns
/// how many.
fn fuse_residuals(model: &mut TypedModel) -> TractResult<usize> {
    replace_nodes(model, |model, node| {
        let Some(conv) = node.op_as::<DirectConv>().filter(|c| !c.relu && !c.residual) else {
            return Ok(None);
        };
        let Some(add) = sole_binary_after::<math::Add>(model, node)? else { return Ok(None) };
        let residual = add.inputs[usize::from(add.inputs[0] == node.id.into())];
        let (fact, out) = (model.outlet_fact(residual)?, model.outlet_fact(node.id.into())?);
        if fact.datum_type != out.datum_type
            || fact.shape != out.shape
            || model.outlet_fact(add.id.into())?.shape != out.shape
        {
            return Ok(None);
        }
        let relu = sole_binary_after::<math::Max>(model, add)?.filter(|max| {
            let other = max.inputs[usize::from(max.inputs[0] == add.id.into())];
            is_zero(model, other) && model.outlet_fact(max.id.into()).is_ok_and(|f| f.shape == out.shape)
        });
        let op = DirectConv { residual: true, relu: relu.is_some(), ..conv.clone() };
        Ok(Some((op, tvec![node.inputs[0], residual], relu.map_or(add.id, |max| max.id))))
    })
}

/// The node of binary op `B` (two inputs) that alone reads `node`'s output,
/// where that output is not one of the model's.
fn sole_binary_after<'m, B: tract_core::ops::binary::BinMiniOp>(
    model: &'m TypedModel,
    node: &TypedNode,
) -> TractResult<Option<&'m TypedNode>> {
    let [next] = &node.outputs[0].successors[..] else { return Ok(None) };
    if model.output_outlets()?.contains(&node.id.into()) {
        return Ok(None);
    }
    let next = model.node(next.node);
    let is_b = next.op_as::<TypedBinOp>().is_some_and(|b| b.0.is::<B>()) && next.inputs.len() == 2;
    Ok(is_b.then_some(next))
}

/// Whether `outlet` is a constant f32 zero (one value).
fn is_zero(model: &TypedModel, outlet: OutletId) -> bool {
    model.outlet_fact(outlet).ok().and_then(|f| f.konst.clone()).is_some_and(|z| {
        z.datum_type() == f32::datum_type()
            && z.len() == 1
            && z.cast_to_scalar::<f32>().is_ok_and(|v| v == 0.0)
    })
}

/// Folds into each [`DirectConv`] the ReLU (`max(y, 0)`, zero a constant)
/// that alone follows it, as ONNX Runtime fuses it into its convolution
/// (one pass over the output less, single-threaded in tract); returns how
/// many.
fn fuse_relus(model: &mut TypedModel) -> TractResult<usize> {
    replace_nodes(model, |model, node| {
        let Some(conv) = node.op_as::<DirectConv>().filter(|c| !c.relu && !c.residual) else {
            return Ok(None);
        };
        let Some(max) = sole_binary_after::<math::Max>(model, node)? else { return Ok(None) };
        let zero = max.inputs[usize::from(max.inputs[0] == node.id.into())];
        if !is_zero(model, zero)
            || model.outlet_fact(max.id.into())?.shape != model.outlet_fact(node.id.into())?.shape
        {
            return Ok(None);
        }
        Ok(Some((DirectConv { relu: true, ..conv.clone() }, tvec![node.inputs[0]], max.id)))
    })
}

/// Fewer input channels stay tract's unless the kernel is at most 3x3: the
/// op's work per output there is mostly its tile transposes, and it was
/// measured faster than tract only on 3x3 stems (3 channels at 64 to 256 px,
/// `repro_conv3x3`); larger kernels on few channels (ViT patch embeddings,
/// 7x7 stems) were not, and stay tract's.
const MIN_INPUT_CHANNELS: usize = 8;

/// Whether the op takes a convolution of `cin` input channels and this
/// kernel (`kh x kw`).
fn takes(cin: usize, [kh, kw]: [usize; 2]) -> bool {
    cin >= MIN_INPUT_CHANNELS || (cin >= 1 && kh <= 3 && kw <= 3)
}

fn candidate(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
) -> TractResult<Option<(DirectConv, OutletId)>> {
    let ps = &conv.pool_spec;
    let (cin, cout) = (conv.input_channels(), conv.output_channels());
    if conv.group != 1
        || cout == 0
        || ps.kernel_shape.len() != 2
        || !takes(cin, [ps.kernel_shape[0], ps.kernel_shape[1]])
        || ps.kernel_shape.iter().product::<usize>() <= 1
    {
        return Ok(None);
    }
    let Some(Operands { kernel, bias, has_n }) = operands(model, node, conv, "dense")? else {
        return Ok(None);
    };
    let Some(block) = host_block(cout) else { return Ok(None) };
    let [kh, kw] = [ps.kernel_shape[0], ps.kernel_shape[1]];
    let strides = ps.strides();
    let kernel = kernel.try_as_plain_ram()?;
    DirectConv::new(
        kernel.as_slice::<f32>()?,
        &bias,
        [cout, cin, kh, kw],
        [strides[0], strides[1]],
        ps.padding.clone(),
        has_n,
        block,
    )
    .map(|op| Some((op, node.inputs[0])))
}

/// Replaces the strided 1x1 convolutions, which tract's declutter splits
/// into `Downsample`s of the plane's axes and a product over the channels
/// (`EinSum` `NIHW,OI->NOHW`, then an `Add` of the bias), by [`DirectConv`]
/// on the image before the `Downsample`s (one pass over the input where the
/// `Downsample`s, single-threaded, copied it twice); returns how many.
fn strided_products(model: &mut TypedModel) -> TractResult<usize> {
    replace_nodes(model, |model, node| {
        Ok(strided_product(model, node)?.map(|(op, input, replaced)| (op, tvec![input], replaced)))
    })
}

/// The op for `node` if it is the product of a strided 1x1 convolution (see
/// [`strided_products`]), the outlet it reads and the node whose output it
/// replaces (the bias `Add`, or the product where no bias follows).
fn strided_product(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<(DirectConv, OutletId, usize)>> {
    let Some(einsum) = node.op_as::<EinSum>() else { return Ok(None) };
    let has_n = match einsum.axes.to_string().as_str() {
        "NIHW,OI->NOHW" => true,
        "IHW,OI->OHW" => false,
        _ => return Ok(None),
    };
    let x = model.outlet_fact(node.inputs[0])?;
    let Some(kernel) = model.outlet_fact(node.inputs[1])?.konst.clone() else { return Ok(None) };
    if einsum.q_params.is_some()
        || einsum.operating_dt != f32::datum_type()
        || x.datum_type != f32::datum_type()
        || kernel.datum_type() != f32::datum_type()
        || kernel.rank() != 2
    {
        return Ok(None);
    }
    let [cout, cin] = [kernel.shape()[0], kernel.shape()[1]];
    let (input, strides) = downsampled(model, node.inputs[0], has_n);
    if !takes(cin, [1, 1]) || cout == 0 || strides == [1, 1] {
        return Ok(None);
    }
    let Some(block) = host_block(cout) else { return Ok(None) };
    let (bias, replaced) = match bias_after(model, node, cout, has_n)? {
        Some((bias, add)) => (bias, add),
        None => (vec![0.0; cout], node.id),
    };
    let kernel = kernel.try_as_plain_ram()?;
    let op = DirectConv::new(
        kernel.as_slice::<f32>()?,
        &bias,
        [cout, cin, 1, 1],
        strides,
        PaddingSpec::Valid,
        has_n,
        block,
    )?;
    // The op takes one image of a concrete shape (the `Conv` path checks that in `operands`).
    let fact = match op.output_facts(&[model.outlet_fact(input)?]) {
        Ok(mut facts) => facts.remove(0),
        Err(e) => {
            log::debug!("{}: strided 1x1 convolution stays tract's: {e}", node.name);
            return Ok(None);
        }
    };
    let expected = model.outlet_fact(replaced.into())?;
    if (&fact.shape, fact.datum_type) != (&expected.shape, expected.datum_type) {
        log::debug!("{}: strided 1x1 convolution stays tract's: the op would give {fact:?}", node.name);
        return Ok(None);
    }
    Ok(Some((op, input, replaced)))
}

/// The image before the `Downsample`s (modulo 0) of the plane's axes that
/// feed `outlet`, and their strides (1 where none).
fn downsampled(model: &TypedModel, outlet: OutletId, has_n: bool) -> (OutletId, [usize; 2]) {
    let h_axis = usize::from(has_n) + 1;
    let (mut source, mut strides) = (outlet, [1usize; 2]);
    while let Some(down) = model.node(source.node).op_as::<Downsample>() {
        let Some(side) = down.axis.checked_sub(h_axis).filter(|&a| a < 2) else { break };
        let Ok(stride) = usize::try_from(down.stride) else { break };
        if stride <= 1 || down.modulo != 0 || strides[side] != 1 {
            break;
        }
        strides[side] = stride;
        source = model.node(source.node).inputs[0];
    }
    (source, strides)
}

/// The bias of the `Add` that alone follows `node`'s output, a constant of
/// one value per channel (`[1, cout, 1, 1]`, or `[cout, 1, 1]` without a
/// batch axis), and that `Add`'s node.
fn bias_after(
    model: &TypedModel,
    node: &TypedNode,
    cout: usize,
    has_n: bool,
) -> TractResult<Option<(Vec<f32>, usize)>> {
    let [next] = &node.outputs[0].successors[..] else { return Ok(None) };
    if model.output_outlets()?.contains(&node.id.into()) {
        return Ok(None);
    }
    let add = model.node(next.node);
    if !add.op_as::<TypedBinOp>().is_some_and(|b| b.0.is::<math::Add>()) || add.inputs.len() != 2 {
        return Ok(None);
    }
    let Some(bias) = &model.outlet_fact(add.inputs[1 - next.slot])?.konst else { return Ok(None) };
    let shape: &[usize] = if has_n { &[1, cout, 1, 1] } else { &[cout, 1, 1] };
    if bias.datum_type() != f32::datum_type() || bias.shape() != shape {
        return Ok(None);
    }
    Ok(Some((bias.to_plain_array_view::<f32>()?.iter().copied().collect(), add.id)))
}

#[cfg(test)]
mod tests;
