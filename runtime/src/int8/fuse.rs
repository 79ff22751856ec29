//! Fusions run after the int8 rewrite: tract's exact GELU into the
//! [`Dequantise`] before it, a channels-last `Dequantise` plus the next
//! product's quantisation into one [`Requantise`], and the subsampling
//! before a strided 1x1 convolution into its [`QuantiseSym`].

use super::{AccLayout, Dequantise, Granularity, QuantiseSym, Requantise};
use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;

/// Fuses tract's exact GELU into the [`Dequantise`] before it where it is
/// that op's only consumer (MobileCLIP's and ViT's MLPs: GELU between two
/// int8 products), so the activations are not read and written once more.
/// Returns how many it fused.
pub(super) fn gelu(model: &mut TypedModel) -> TractResult<usize> {
    use tract_core::ops::element_wise::ElementWiseOp;
    use tract_core::ops::nn::gelu_exact::GeluExact;
    let mut fused = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(d) = node.op_as::<Dequantise>() else { continue };
        let succ = &node.outputs[0].successors;
        if d.gelu || succ.len() != 1 || model.output_outlets()?.contains(&OutletId::new(id, 0)) {
            continue;
        }
        let next = model.node(succ[0].node);
        if !next.op_as::<ElementWiseOp>().is_some_and(|e| e.0.is::<GeluExact>() && e.1.is_none()) {
            continue;
        }
        let mut patch = TypedModelPatch::new(format!("fuse GELU into {}", node.name));
        let inputs = patch.taps(model, &node.inputs)?;
        let op = Dequantise { gelu: true, ..d.clone() };
        let y = patch.wire_node(format!("{}.gelu", node.name), op, &inputs)?[0];
        patch.shunt_outside(model, next.id.into(), y)?;
        patch.apply(model)?;
        fused += 1;
    }
    Ok(fused)
}

/// Replaces a channels-last [`Dequantise`] whose f32 result only feeds the
/// per-pixel [`QuantiseSym`] of the next int8 product by one [`Requantise`],
/// and gives that product its input channels-last (MobileCLIP's ConvFFN:
/// the expanding 1x1 convolution, GELU, the contracting one): the
/// activation is neither transposed back to channels-first nor read once
/// more to be quantised. The values are the same to the bit. Returns how
/// many it fused.
pub(super) fn requantise(model: &mut TypedModel) -> TractResult<usize> {
    let mut fused = 0;
    for id in model.eval_order()? {
        let outputs = model.output_outlets()?.to_vec();
        let node = model.node(id);
        let Some(d) = node.op_as::<Dequantise>() else { continue };
        let sole = |n: &TypedNode, slot: usize| {
            let succ = &n.outputs[slot].successors;
            (succ.len() == 1 && !outputs.contains(&OutletId::new(n.id, slot))).then(|| succ[0])
        };
        if d.acc_layout != AccLayout::ChannelLast {
            continue;
        }
        let Some(to_q) = sole(node, 0) else { continue };
        let q_node = model.node(to_q.node);
        let per_pixel = Granularity::Along(d.channel_axis..d.channel_axis + 1);
        if !q_node.op_as::<QuantiseSym>().is_some_and(|q| q.granularity == per_pixel) {
            continue;
        }
        let Some(to_product) = sole(q_node, 0) else { continue };
        let product = model.node(to_product.node);
        let Some(einsum) = product.op_as::<EinSum>() else { continue };
        if einsum.operating_dt != i32::datum_type() || product.inputs.len() != 2 {
            continue;
        }
        // The product's input axes, with the channel (contraction) axis last.
        let (mut ins, outs) = einsum.axes.to_strs();
        let mut axes: Vec<char> = ins[to_product.slot].chars().collect();
        if d.channel_axis >= axes.len() {
            continue;
        }
        let c = axes.remove(d.channel_axis);
        axes.push(c);
        ins[to_product.slot] = axes.into_iter().collect();
        let axes = AxesMapping::from_strs(&ins, &outs)?;

        let mut patch = TypedModelPatch::new(format!("requantise {} for {}", node.name, product.name));
        let inputs = patch.taps(model, &node.inputs)?;
        let op = Requantise { dequantise: d.clone() };
        let requantised = patch.wire_node(format!("{}.requantise", node.name), op, &inputs)?;
        let mut operands = patch.taps(model, &product.inputs)?;
        operands[to_product.slot] = requantised[0];
        let op = EinSum { axes, ..einsum.clone() };
        let acc = patch.wire_node(format!("{}.channels_last", product.name), op, &operands)?[0];
        patch.shunt_outside(model, product.id.into(), acc)?;
        patch.shunt_outside(model, OutletId::new(q_node.id, 1), requantised[1])?;
        patch.apply(model)?;
        fused += 1;
    }
    Ok(fused)
}

/// Folds the chain of tract `Downsample`s (from position 0, feeding nothing
/// else) before a [`QuantiseSym`] into its `strides`: a strided 1x1
/// convolution, which tract declutters into a subsampling and a product,
/// reads the pixels it keeps straight from its input (tract copies the
/// input's rows, then its columns, through a generic strided view: 23 us
/// per shortcut of the default model, the quantisation after it 3 us).
/// Returns how many it fused.
pub(super) fn downsample(model: &mut TypedModel) -> TractResult<usize> {
    use tract_core::ops::downsample::Downsample;
    let mut fused = 0;
    for id in model.eval_order()? {
        let outputs = model.output_outlets()?.to_vec();
        let node = model.node(id);
        let Some(q) = node.op_as::<QuantiseSym>() else { continue };
        let rank = model.outlet_fact(node.inputs[0])?.rank();
        if !q.strides.is_empty() {
            continue;
        }
        let mut strides: TVec<usize> = tvec![1; rank];
        let mut input = node.inputs[0];
        loop {
            let prev = model.node(input.node);
            let Some(d) = prev.op_as::<Downsample>() else { break };
            let sole = prev.outputs[0].successors.len() == 1 && !outputs.contains(&input);
            if !sole || d.modulo != 0 || d.stride < 1 || d.axis >= rank {
                break;
            }
            strides[d.axis] = strides[d.axis].saturating_mul(d.stride as usize);
            input = prev.inputs[0];
        }
        if input == node.inputs[0] {
            continue;
        }
        let mut patch = TypedModelPatch::new(format!("fold the subsampling into {}", node.name));
        let x = patch.tap_model(model, input)?;
        let op = QuantiseSym { strides, ..q.clone() };
        let wired = patch.wire_node(format!("{}.strided", node.name), op, &[x])?;
        patch.shunt_outside(model, OutletId::new(id, 0), wired[0])?;
        patch.shunt_outside(model, OutletId::new(id, 1), wired[1])?;
        patch.apply(model)?;
        fused += 1;
    }
    Ok(fused)
}
