//! Int8 compute: rewrites a decluttered tract model so that its matrix
//! products and convolutions run on tract-linalg's int8 kernels (i8 x i8
//! accumulated in i32: VNNI on x86, `sdot` on Cortex-A76, NEON `smlal` on
//! Cortex-A72) instead of its f32 ones.
//!
//! Weights are quantised at load, symmetric with one scale per output
//! channel (`s = max|w| / 127`, the scheme of the bundle's weight-only int8
//! file, which this gives back exactly), and tract packs them once while it
//! optimises the plan. Activations are quantised on every run, symmetric,
//! with one scale per row of the product (per token for linear layers, per
//! pixel for 1x1 convolutions) or one per tensor for spatial convolutions,
//! whose im2col mixes pixels. The i32 result is rescaled to f32 by the
//! product of the two scales, so every operator around the rewritten ones
//! stays f32.
//!
//! Only stock tract operators are wired (`EinSum` and `Conv` with an i32
//! accumulator and zero points of 0, which tract's optimiser turns into
//! packed int8 products with no zero-point correction). Layers that stay f32:
//! the first and the last weighted layer (the stem or patch embedding sees
//! raw pixels; the projection writes the embedding itself), grouped and
//! depthwise convolutions (no int8 kernel for them; memory-bound anyway),
//! products of two activations (attention scores and attention-weighted
//! values), products too small to pay for the quantisation pass, and, in a
//! model loaded from an int8 file as stored (`dequant::Fold::Stored`, where
//! every int8 weight of the file is a `StoredInt8` and every f32 constant was
//! f32 in the file), the layers whose weights the file stores in f32, for
//! whatever reason its exporter had (the photo model's linear bottlenecks,
//! kept f32 for accuracy). Elsewhere (an f32 file, the NNEF copies, whose
//! small int8 weights are f32 constants) every f32 weight is quantised at load.

use tract_core::internal::*;
use tract_core::ops::cnn::{Conv, KernelFormat};
use tract_core::ops::einsum::EinSum;
use tract_core::ops::math;

mod dequantise;
mod fuse;
mod patches;
mod quantise;
mod requantise;
mod weight;

pub use dequantise::{AccLayout, Dequantise};
pub use patches::{replace_im2col, PackPatches};
pub use quantise::{Granularity, QuantiseSym};
pub use requantise::Requantise;
pub use weight::quantise_weight;
use weight::{Weight, WeightKind};

/// The smallest contraction length (inputs per output value) worth an int8
/// product: below it the per-run quantisation of the activations costs more
/// than the faster product saves.
pub const MIN_K: usize = 16;

/// Why a weighted layer was left in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeptF32 {
    /// The first weighted layer (it sees the image itself).
    First,
    /// The last weighted layer (it writes the embedding).
    Last,
    /// A grouped or depthwise convolution.
    Grouped,
    /// Fewer than [`MIN_K`] inputs per output value.
    Small,
    /// A shape the rewrite does not handle (more than one contraction axis, ...).
    Shape,
    /// Its weight is f32 in an int8 file loaded as stored (`dequant::Fold::Stored`).
    F32InFile,
}

impl KeptF32 {
    /// A short name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            KeptF32::First => "first layer",
            KeptF32::Last => "last layer",
            KeptF32::Grouped => "grouped/depthwise",
            KeptF32::Small => "too small",
            KeptF32::Shape => "unsupported shape",
            KeptF32::F32InFile => "f32 in the int8 file",
        }
    }
}

/// How one weighted layer is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerCompute {
    /// int8, with one activation scale per row of the product (per token of
    /// a linear layer, per pixel of a 1x1 convolution).
    Int8PerRow,
    /// int8, with one activation scale for the whole input (spatial
    /// convolutions, whose im2col mixes pixels).
    Int8PerTensor,
    /// f32, for the reason given.
    F32(KeptF32),
}

/// One weighted layer (matrix product with a constant weight, or convolution).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Int8Layer {
    /// The node's name in the model (the ONNX node's name, with tract's suffixes).
    pub name: String,
    /// Multiply-accumulates per frame.
    pub macs: u64,
    /// How it is computed.
    pub compute: LayerCompute,
}

/// What [`rewrite`] did: every weighted layer of the model, in evaluation order.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Int8Report {
    /// The weighted layers.
    pub layers: Vec<Int8Layer>,
}

impl Int8Report {
    /// Layers computed in int8.
    pub fn int8_layers(&self) -> usize {
        self.layers.iter().filter(|l| !matches!(l.compute, LayerCompute::F32(_))).count()
    }

    /// The share of the weighted layers' multiply-accumulates done in int8 (0..=1).
    pub fn int8_mac_share(&self) -> f64 {
        let total: u64 = self.layers.iter().map(|l| l.macs).sum();
        let int8: u64 =
            self.layers.iter().filter(|l| !matches!(l.compute, LayerCompute::F32(_))).map(|l| l.macs).sum();
        int8 as f64 / total.max(1) as f64
    }
}

enum Candidate {
    /// A product whose output lays its axes out like the activation, with the
    /// weight's output-channel axis where the activation's contraction axis was.
    Product {
        weight_input: usize,
        /// The activation's contraction axes (consecutive).
        k_axes: std::ops::Range<usize>,
        /// The weight's output-channel axis.
        weight_channel_axis: usize,
        /// The output's channel axis.
        channel_axis: usize,
    },
    /// A convolution; `out_axis` is the kernel's output-channel axis.
    Conv { out_axis: usize },
}

struct Site {
    node: usize,
    name: String,
    macs: u64,
    /// How the weight is held (None for clip-edge's depthwise op).
    weight: Option<WeightKind>,
    verdict: std::result::Result<Candidate, KeptF32>,
}

/// Rewrites the weighted layers of a decluttered model (see the module
/// documentation). Call between the declutter and the codegen (as
/// [`crate::optimise::optimise`] does).
pub fn rewrite(model: &mut TypedModel) -> TractResult<Int8Report> {
    rewrite_with(model, OutputTile::here())
}

/// How the int8 kernel tract will pick here holds its output tile, which
/// decides the layout the int8 products accumulate in (see `accumulator_layout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputTile {
    /// Columns of the tile in registers, stored along the product's m side
    /// (tract's 8x8 x86 kernels, ARM).
    Columns,
    /// Rows of the tile in registers, stored along the n side (tract's 16x16
    /// AVX-512 VNNI kernel, AMX).
    Rows,
}

impl OutputTile {
    /// This CPU's, as far as tract's kernel choice goes: x86 with AVX-512
    /// VNNI once tract is told of two 512-bit units (the encoder asks for it,
    /// see `encoder::prefer_wide_int8_tile`; `TRACT_AVX512_FMA_UNITS=1` in
    /// the environment keeps the 8x8 kernel) has rows; AVX2 and ARM columns.
    pub fn here() -> OutputTile {
        #[cfg(target_arch = "x86_64")]
        {
            let units = tract_linalg::knobs::TRACT_AVX512_FMA_UNITS.get();
            if std::arch::is_x86_feature_detected!("avx512vnni")
                && units.as_deref().map(str::trim) == Some("2")
            {
                return OutputTile::Rows;
            }
        }
        OutputTile::Columns
    }
}

/// [`rewrite`] for a given output tile.
pub fn rewrite_with(model: &mut TypedModel, tile: OutputTile) -> TractResult<Int8Report> {
    let order = model.eval_order()?;
    let mut sites: Vec<Site> = Vec::new();
    for &id in &order {
        let node = model.node(id);
        if let Some(op) = node.op_as::<EinSum>() {
            if let Some(site) = product_site(model, node, op)? {
                sites.push(site);
            }
        } else if let Some(op) = node.op_as::<Conv>() {
            if let Some(site) = conv_site(model, node, op)? {
                sites.push(site);
            }
        } else if let Some(op) = node.op_as::<crate::depthwise::DepthwiseConv>() {
            // Already clip-edge's f32 op (the depthwise rewrite runs first): reported, never rewritten.
            let out = concrete(&model.outlet_fact(node.id.into())?.shape);
            let macs = out.map_or(0, |s| s.iter().product::<u64>()) * op.taps() as u64;
            sites.push(Site {
                node: id,
                name: node.name.clone(),
                macs,
                weight: None,
                verdict: Err(KeptF32::Grouped),
            });
        }
    }
    // First and last are chosen among the layers that could run in int8.
    let dense: Vec<usize> =
        (0..sites.len()).filter(|&i| !matches!(sites[i].verdict, Err(KeptF32::Grouped))).collect();
    if let Some(&first) = dense.first() {
        sites[first].verdict = Err(KeptF32::First);
    }
    if let [_, .., last] = dense[..] {
        sites[last].verdict = Err(KeptF32::Last);
    }
    if sites.iter().any(|s| s.weight == Some(WeightKind::Stored)) {
        for site in sites.iter_mut().filter(|s| s.weight == Some(WeightKind::F32) && s.verdict.is_ok()) {
            site.verdict = Err(KeptF32::F32InFile);
        }
    }
    let mut report = Int8Report::default();
    for site in sites {
        let node = model.node(site.node).clone();
        let compute = match site.verdict {
            Err(why) => {
                fold_int8_weights(model, &node)?;
                LayerCompute::F32(why)
            }
            Ok(Candidate::Product { weight_input, k_axes, weight_channel_axis, channel_axis }) => {
                let layout = Layout { weight_input, k_axes, weight_channel_axis, channel_axis, tile };
                product_patch(model, &node, layout)?.apply(model)?;
                LayerCompute::Int8PerRow
            }
            Ok(Candidate::Conv { out_axis }) => {
                conv_patch(model, &node, out_axis)?.apply(model)?;
                LayerCompute::Int8PerTensor
            }
        };
        report.layers.push(Int8Layer { name: site.name, macs: site.macs, compute });
    }
    fuse::gelu(model)?;
    fuse::requantise(model)?;
    fuse::downsample(model)?;
    model.prop_consts()?;
    model.compact()?;
    Ok(report)
}

fn concrete(shape: &ShapeFact) -> Option<TVec<u64>> {
    shape.as_concrete().map(|s| s.iter().map(|&d| d as u64).collect())
}

fn product_site(model: &TypedModel, node: &TypedNode, op: &EinSum) -> TractResult<Option<Site>> {
    if op.q_params.is_some() || op.operating_dt != f32::datum_type() || node.inputs.len() != 2 {
        return Ok(None);
    }
    let facts = model.node_input_facts(node.id)?;
    let weights = [Weight::of(model, node.inputs[0])?, Weight::of(model, node.inputs[1])?];
    let weight_input = match (&weights[0], &weights[1], facts[0].konst.is_some(), facts[1].konst.is_some()) {
        (None, Some(_), false, _) => 1,
        (Some(_), None, _, false) => 0,
        // Two activations (attention) or two constants: not a weighted layer.
        _ => return Ok(None),
    };
    let x_input = 1 - weight_input;
    let (x_fact, w_fact) = (facts[x_input], facts[weight_input]);
    let out_fact = model.outlet_fact(node.id.into())?;
    let (Some(x_shape), Some(out_shape)) = (x_fact.shape.as_concrete(), out_fact.shape.as_concrete()) else {
        return Ok(None);
    };
    let mut k_positions = Vec::new();
    let mut m_axes = Vec::new();
    let mut weight_units = 0;
    let mut other_ok = true;
    for axis in op.axes.iter_all_axes() {
        match (axis.inputs[x_input].len(), axis.inputs[weight_input].len(), axis.outputs[0].len()) {
            (1, 1, 0) => k_positions.push(axis.inputs[x_input][0]),
            (0, 1, 1) => m_axes.push(axis),
            (1, 0, 1) | (0, 0, 1) => {}
            // A unit axis of the activation that the output drops.
            (1, 0, 0) if x_shape[axis.inputs[x_input][0]] == 1 => {}
            // One of the weight's (a 1x1 kernel's spatial axes, left on a
            // stored int8 weight that tract could not reshape as a constant).
            (0, 1, 0) if w_fact.shape[axis.inputs[weight_input][0]] == 1.to_dim() => weight_units += 1,
            _ => other_ok = false,
        }
    }
    k_positions.sort_unstable();
    let k: usize = k_positions.iter().map(|&p| x_shape[p]).product();
    let macs = out_shape.iter().product::<usize>() as u64 * k as u64;
    let contiguous = k_positions.windows(2).all(|w| w[1] == w[0] + 1);
    let shape_ok = other_ok
        && !k_positions.is_empty()
        && contiguous
        && m_axes.len() == 1
        && w_fact.rank() == k_positions.len() + 1 + weight_units
        && scales_follow_output(op, x_input, x_shape);
    let verdict = if !shape_ok {
        Err(KeptF32::Shape)
    } else if k < MIN_K {
        Err(KeptF32::Small)
    } else {
        Ok(Candidate::Product {
            weight_input,
            k_axes: k_positions[0]..k_positions[k_positions.len() - 1] + 1,
            weight_channel_axis: m_axes[0].inputs[weight_input][0],
            channel_axis: m_axes[0].outputs[0][0],
        })
    }
    .inspect_err(|why| {
        log::debug!("{} stays f32 ({}): {} on {:?}", node.name, why.as_str(), op.axes, x_shape);
    });
    let weight = weights[weight_input].as_ref().map(Weight::kind);
    Ok(Some(Site { node: node.id, name: node.name.clone(), macs, weight, verdict }))
}

/// Whether the activation's per-row scales, in the activation's row-major
/// order, are also in the output's row-major order once the channel axis is
/// taken out: the activation's other axes of length above 1 come in the same
/// order in both.
fn scales_follow_output(op: &EinSum, x_input: usize, x_shape: &[usize]) -> bool {
    let mut in_x: Vec<(usize, char)> = Vec::new();
    let mut in_out: Vec<(usize, char)> = Vec::new();
    for axis in op.axes.iter_all_axes() {
        if let (Some(&i), Some(&o)) = (axis.inputs[x_input].first(), axis.outputs[0].first()) {
            if x_shape[i] > 1 {
                in_x.push((i, axis.repr));
                in_out.push((o, axis.repr));
            }
        }
    }
    in_x.sort_unstable();
    in_out.sort_unstable();
    in_x.iter().map(|a| a.1).eq(in_out.iter().map(|a| a.1))
}

fn conv_site(model: &TypedModel, node: &TypedNode, op: &Conv) -> TractResult<Option<Site>> {
    if op.q_params.is_some() || node.inputs.len() != 3 {
        return Ok(None);
    }
    let facts = model.node_input_facts(node.id)?;
    let Some(kernel) = Weight::of(model, node.inputs[1])? else { return Ok(None) };
    if facts[0].datum_type != f32::datum_type() {
        return Ok(None);
    }
    let out_fact = model.outlet_fact(node.id.into())?;
    let per_output = (op.input_channels() / op.group.max(1)) as u64
        * op.pool_spec.kernel_shape.iter().map(|&d| d as u64).product::<u64>();
    let macs = concrete(&out_fact.shape).map_or(0, |s| s.iter().product::<u64>()) * per_output;
    let out_axis = match op.kernel_fmt {
        KernelFormat::OIHW | KernelFormat::OHWI => 0,
        KernelFormat::HWIO => kernel.shape().len() - 1,
    };
    let verdict = if op.group != 1 {
        Err(KeptF32::Grouped)
    } else if per_output < MIN_K as u64 {
        Err(KeptF32::Small)
    } else if facts[2].konst.is_none() {
        Err(KeptF32::Shape)
    } else {
        Ok(Candidate::Conv { out_axis })
    };
    let weight = Some(kernel.kind());
    Ok(Some(Site { node: node.id, name: node.name.clone(), macs, weight, verdict }))
}

/// Turns the unfolded int8 weights (`Mul(Cast(q), s)` or a `StoredInt8`) of a layer that stays
/// f32 into f32 constants, which tract then packs once at load: left as they
/// are, tract would cast, rescale and pack them on every frame (ViT-B-32's
/// patch embedding, 2.4 M values: 2.5-8.5 ms per frame, varying with the
/// page faults of its 9 MB of temporaries).
fn fold_int8_weights(model: &mut TypedModel, node: &TypedNode) -> TractResult<()> {
    for (slot, &outlet) in node.inputs.iter().enumerate() {
        if model.outlet_fact(outlet)?.konst.is_some() {
            continue;
        }
        let Some(weight) = Weight::of(model, outlet)? else { continue };
        let Some(w) = weight.materialised()? else { continue };
        let mut patch = TypedModelPatch::new(format!("fold int8 weight of {}", node.name));
        let konst = patch.add_const(format!("{}.weight_{slot}.f32", node.name), w)?;
        patch.shunt_outside(model, outlet, konst)?;
        patch.apply(model)?;
    }
    Ok(())
}

/// The constant that a single successor `Add` of `node` adds along
/// `channel_axis` (a bias), if there is exactly such a successor.
fn bias_successor(
    model: &TypedModel,
    node: &TypedNode,
    channel_axis: usize,
    channels: usize,
) -> TractResult<Option<(usize, Vec<f32>)>> {
    let succ = &node.outputs[0].successors;
    if succ.len() != 1 || model.output_outlets()?.contains(&OutletId::new(node.id, 0)) {
        return Ok(None);
    }
    let add = model.node(succ[0].node);
    let is_add = add.op_as::<tract_core::ops::binary::TypedBinOp>().is_some_and(|b| b.0.is::<math::Add>());
    if !is_add || add.inputs.len() != 2 {
        return Ok(None);
    }
    let other = add.inputs[1 - succ[0].slot];
    let Some(k) = &model.outlet_fact(other)?.konst else { return Ok(None) };
    let out_rank = model.outlet_fact(node.id.into())?.rank();
    if k.datum_type() != f32::datum_type() || k.len() != channels || k.rank() > out_rank {
        return Ok(None);
    }
    // Aligned from the right, every axis but the channel axis has length 1.
    let offset = out_rank - k.rank();
    let along_channels =
        k.shape()
            .iter()
            .enumerate()
            .all(|(i, &d)| if i + offset == channel_axis { d == channels } else { d == 1 });
    if !along_channels {
        return Ok(None);
    }
    let values = k.to_plain_array_view::<f32>()?.iter().copied().collect();
    Ok(Some((add.id, values)))
}

/// Wires the run-time quantisation of `x`: the i8 tensor and its f32 scales.
fn wire_quantise(
    patch: &mut TypedModelPatch,
    name: &str,
    x: OutletId,
    granularity: Granularity,
) -> TractResult<(OutletId, OutletId)> {
    let q = patch.wire_node(format!("{name}.int8.quantise"), QuantiseSym::new(granularity), &[x])?;
    Ok((q[0], q[1]))
}

/// Where a product's operands and output keep their axes.
struct Layout {
    weight_input: usize,
    k_axes: std::ops::Range<usize>,
    weight_channel_axis: usize,
    channel_axis: usize,
    tile: OutputTile,
}

fn product_patch(model: &TypedModel, node: &TypedNode, layout: Layout) -> TractResult<TypedModelPatch> {
    let Layout { weight_input, k_axes, weight_channel_axis, channel_axis, tile } = layout;
    let op = node.op_as::<EinSum>().context("not an EinSum")?;
    let x_input = 1 - weight_input;
    let name = &node.name;
    let mut patch = TypedModelPatch::new(format!("int8 product {name}"));
    let x = patch.tap_model(model, node.inputs[x_input])?;
    let w = Weight::of(model, node.inputs[weight_input])?.context("weight is not constant")?;
    let (q, w_scale) = w.quantised(weight_channel_axis)?;
    let (xq, x_scale) = wire_quantise(&mut patch, name, x, Granularity::Along(k_axes))?;
    let wq = patch.add_const(format!("{name}.int8.weight"), q)?;
    let mut inputs = [xq, xq];
    inputs[weight_input] = wq;
    let out_shape = model.outlet_fact(node.id.into())?.shape.as_concrete().map(|s| s.to_vec());
    let acc_layout = out_shape.map_or(AccLayout::Same, |s| accumulator_layout(&s, channel_axis, tile));
    let axes = if acc_layout == AccLayout::Same {
        op.axes.clone()
    } else {
        let (ins, outs) = op.axes.to_strs();
        let mut out: Vec<char> = outs[0].chars().collect();
        let c = out.remove(channel_axis);
        out.push(c);
        AxesMapping::from_strs(&ins, &[out.into_iter().collect::<String>()])?
    };
    let acc =
        patch.wire_node(format!("{name}.int8.matmul"), EinSum::new(axes, i32::datum_type()), &inputs)?[0];
    let bias = bias_successor(model, node, channel_axis, w_scale.len())?;
    let dequantise = Dequantise {
        channel_axis,
        channel_scale: rctensor1(&w_scale),
        bias: bias.as_ref().map(|(_, b)| rctensor1(b)),
        acc_layout,
        gelu: false,
    };
    let y = patch.wire_node(format!("{name}.int8.dequantise"), dequantise, &[acc, x_scale])?[0];
    let replaced = bias.map_or(node.id, |(add, _)| add);
    patch.shunt_outside(model, replaced.into(), y)?;
    Ok(patch)
}

/// The layout an int8 product with output `shape` accumulates in
/// ([`Dequantise`] puts the channel axis back). tract makes the larger of the
/// two output dimensions the product's m side; a kernel that keeps rows of
/// the output tile in registers ([`OutputTile::Rows`]) writes them
/// contiguously only when the n side, the smaller, is the accumulator's last
/// axis. An NCHW 1x1 convolution with more pixels than channels has it the
/// other way round: measured on MobileCLIP2-S0's first stages, 2.2 ms
/// against 0.2 ms for the same 50 M multiply-accumulates. (tract picks its
/// 16x16 tile only where both sides are at least 16.) A linear layer with
/// more channels than tokens has it the other way round too, but there the
/// long contraction hides the strided stores: ViT-B-32's products went from
/// 23.5 to 20.3 ms accumulated channels-first while transposing back cost
/// 10 ms more, so those stay as they are.
fn accumulator_layout(shape: &[usize], channel_axis: usize, tile: OutputTile) -> AccLayout {
    let channels = shape[channel_axis];
    let others = shape.iter().product::<usize>() / channels.max(1);
    let channel_last = channel_axis + 1 == shape.len();
    if tile == OutputTile::Rows && !channel_last && channels >= 16 && others > channels {
        AccLayout::ChannelLast
    } else {
        AccLayout::Same
    }
}

fn conv_patch(model: &TypedModel, node: &TypedNode, out_axis: usize) -> TractResult<TypedModelPatch> {
    let op = node.op_as::<Conv>().context("not a Conv")?;
    let name = &node.name;
    let mut patch = TypedModelPatch::new(format!("int8 conv {name}"));
    let x = patch.tap_model(model, node.inputs[0])?;
    let kernel = Weight::of(model, node.inputs[1])?.context("kernel is not constant")?;
    let bias = model.outlet_fact(node.inputs[2])?.konst.clone().context("bias is not constant")?;
    let (q, k_scale) = kernel.quantised(out_axis)?;
    let (xq, x_scale) = wire_quantise(&mut patch, name, x, Granularity::Tensor)?;
    let i32_zero = patch.add_const(format!("{name}.int8.zero"), tensor0(0i32))?;
    let f32_one = patch.add_const(format!("{name}.int8.one"), tensor0(1f32))?;
    let kq = patch.add_const(format!("{name}.int8.kernel"), q)?;
    // Zero points of 0 and unit scales: tract's optimiser drops every
    // zero-point correction and leaves the packed i8 x i8 -> i32 product.
    let conv = Conv { q_params: Some(i32::datum_type()), ..op.clone() };
    let acc = patch.wire_node(
        format!("{name}.int8.conv"),
        conv,
        &[xq, kq, i32_zero, i32_zero, f32_one, i32_zero, f32_one, i32_zero, f32_one],
    )?[0];
    let out_rank = model.outlet_fact(node.id.into())?.rank();
    let fmt = op.pool_spec.data_format;
    let channel_axis = if fmt.c_is_last() { out_rank - 1 } else { usize::from(fmt.has_n()) };
    let channels = op.output_channels();
    let bias_values: Vec<f32> = bias.to_plain_array_view::<f32>()?.iter().copied().collect();
    let bias = match bias_values.len() {
        _ if bias_values.iter().all(|&b| b == 0.0) => None,
        n if n == channels => Some(rctensor1(&bias_values)),
        1 => Some(rctensor1(&vec![bias_values[0]; channels])),
        n => bail!("{name}: bias has {n} values for {channels} channels"),
    };
    let dequantise = Dequantise {
        channel_axis,
        channel_scale: rctensor1(&k_scale),
        bias,
        acc_layout: AccLayout::Same,
        gelu: false,
    };
    let y = patch.wire_node(format!("{name}.int8.dequantise"), dequantise, &[acc, x_scale])?[0];
    patch.shunt_outside(model, node.id.into(), y)?;
    Ok(patch)
}

#[cfg(test)]
mod tests;
