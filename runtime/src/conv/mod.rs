//! `DirectConv`: clip-edge's own dense (`group == 1`) 2-D convolution with a
//! kernel wider than 1x1, for NCHW f32 images, put in place of tract's `Conv`
//! before codegen.
//!
//! tract 0.23.9 runs these as im2col plus a matrix product whose kernel rate
//! on the small products of an edge CNN (24-320 output channels, 64 to 4 px
//! planes) stays at 60-100 GFLOP/s on a Zen 4 core where ONNX Runtime's
//! direct kernels reach 105-120, and it threads only products above its
//! size thresholds (the default model got nothing from a second thread;
//! `docs/performance.md`). This op reads the taps straight from a padded copy
//! of the input (no im2col, except a small one on 8 and 4 px planes: [`direct`]), keeps blocks of output channels in
//! vector lanes, and spreads blocks of output positions over the encoder's
//! threads. Weights are packed once, when the op is built, for the vector
//! width of the CPU it runs on.

use tract_core::internal::*;
use tract_core::ops::cnn::{Conv, PaddingSpec};

use crate::depthwise::{operands, replace_convs, Geometry, Image, Operands};

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
        let mut packed = vec![0f32; blocks * taps * block];
        for (oc, weights) in kernel.chunks_exact(taps).enumerate() {
            let (b, c) = (oc / block, oc % block);
            for (k, &v) in weights.iter().enumerate() {
                packed[(b * taps + k) * block + c] = v;
            }
        }
        let mut padded_bias = bias.to_vec();
        padded_bias.resize(blocks * block, 0.0);
        Ok(DirectConv {
            packed: Tensor::from_shape(&[blocks, taps, block], &packed)?.into_arc_tensor(),
            bias: rctensor1(&padded_bias),
            cin,
            cout,
            kernel_hw: [kh, kw],
            strides,
            padding,
            has_n,
        })
    }
}

impl Op for DirectConv {
    fn name(&self) -> StaticName {
        "ClipEdgeDirectConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} -> {} channels, kernel {:?}, strides {:?}, {:?}, {} channels per block",
            self.cin,
            self.cout,
            self.kernel_hw,
            self.strides,
            self.padding,
            self.block()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for DirectConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let image = Image { has_n: self.has_n };
        let (h, w) = image.input_hw("DirectConv", x.shape(), self.cin)?;
        let g = self.geometry(h, w);
        let mut y = Tensor::zero::<f32>(&image.output_shape(self.cout, &g))?;
        {
            let xv = x.try_as_plain_ram()?;
            let mut yv = y.try_as_plain_ram_mut()?;
            direct::run(self, &g, xv.as_slice::<f32>()?, yv.as_slice_mut::<f32>()?)?;
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for DirectConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let image = Image { has_n: self.has_n };
        let fact =
            image.output_fact("DirectConv", inputs[0], (self.cin, self.cout), |h, w| self.geometry(h, w))?;
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

/// Replaces every dense convolution with a kernel wider than 1x1 and at
/// least 8 input channels of a decluttered model (NCHW, f32, one image, 2-D, no dilation, constant kernel
/// and bias) by [`DirectConv`]; returns how many. Leaves the model alone on a
/// host without SIMD that the op uses ([`host_block`]).
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    if host_block(1).is_none() {
        log::debug!("dense convolutions stay tract's: no SIMD for clip-edge's kernel on this CPU");
        return Ok(0);
    }
    replace_convs(model, candidate)
}

/// Fewer input channels stay tract's: on 3-channel stems its direct spatial
/// kernel (or im2col) does better than this op, whose per-output work there is
/// mostly the tile transposes (MobileCLIP2-S0's stem: 2.0 vs 3.1 ms per frame;
/// ViT-B-32's patch embedding).
const MIN_INPUT_CHANNELS: usize = 8;

fn candidate(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<DirectConv>> {
    let ps = &conv.pool_spec;
    let (cin, cout) = (conv.input_channels(), conv.output_channels());
    if conv.group != 1
        || cin < MIN_INPUT_CHANNELS
        || cout == 0
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
    let kernel = kernel.into_shape(&[cout, cin, kh, kw])?;
    let kernel = kernel.to_plain_array_view::<f32>()?.iter().copied().collect::<Vec<f32>>();
    DirectConv::new(
        &kernel,
        &bias,
        [cout, cin, kh, kw],
        [strides[0], strides[1]],
        ps.padding.clone(),
        has_n,
        block,
    )
    .map(Some)
}

#[cfg(test)]
mod tests;
