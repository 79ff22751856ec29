//! Folds weight-only int8 dequantisation into f32 weights before tract sees
//! the graph.
//!
//! The int8 form written by `tools/python/export_bundle.py` stores each large
//! weight as an int8 initializer `q` and an f32 scale `s` (one per output
//! channel), turned back into the weight by `Mul(Cast(q, to=FLOAT), s)`.
//! tract folds constant nodes only while a fold does not grow memory beyond
//! 4 MiB (`CONST_FOLD_MEM_BUDGET` in tract-core 0.23), so weights above about
//! a million values would be dequantised again on every frame (ViT-B/32 ran 2x
//! slower than f32). Rewriting the protobuf here makes every such weight a
//! plain f32 initializer again: the file on flash stays int8, the model in
//! memory is the f32 model.

use std::collections::HashMap;

use tract_onnx::data_resolver::FopenDataResolver;
use tract_onnx::pb::{self, tensor_proto::DataType, GraphProto, TensorProto};
use tract_onnx::prelude::*;
use tract_onnx::tensor::load_tensor;

/// Replaces every `Mul(Cast(int8 initializer, to=FLOAT), f32 initializer)`
/// whose intermediate has no other use, and whose weight has at most
/// `max_values` values, by one f32 initializer of the Mul's output name.
/// Returns how many weights were folded.
pub fn fold_weight_dequant(graph: &mut GraphProto, max_values: usize) -> TractResult<usize> {
    let tensor = |t: &TensorProto| load_tensor(&FopenDataResolver, t, None);
    let init_index: HashMap<&str, usize> =
        graph.initializer.iter().enumerate().map(|(i, t)| (t.name.as_str(), i)).collect();
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for n in &graph.node {
        for i in &n.input {
            *uses.entry(i.as_str()).or_default() += 1;
        }
    }
    let mut casts: HashMap<&str, (usize, usize)> = HashMap::new();
    for (ni, n) in graph.node.iter().enumerate() {
        let to_float = n.attribute.iter().any(|a| a.name == "to" && a.i == DataType::Float as i64);
        if n.op_type == "Cast" && n.input.len() == 1 && n.output.len() == 1 && to_float {
            if let Some(&ti) = init_index.get(n.input[0].as_str()) {
                if graph.initializer[ti].data_type == DataType::Int8 as i32 {
                    casts.insert(n.output[0].as_str(), (ni, ti));
                }
            }
        }
    }
    let mut folds = Vec::new();
    for (mi, n) in graph.node.iter().enumerate() {
        if n.op_type != "Mul" || n.input.len() != 2 || n.output.len() != 1 {
            continue;
        }
        let (Some(&(ci, qi)), Some(&si)) =
            (casts.get(n.input[0].as_str()), init_index.get(n.input[1].as_str()))
        else {
            continue;
        };
        let scale_proto = &graph.initializer[si];
        let values = graph.initializer[qi]
            .dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?));
        if scale_proto.data_type != DataType::Float as i32
            || uses.get(n.input[0].as_str()) != Some(&1)
            || values.is_none_or(|v| v > max_values)
        {
            continue;
        }
        // Weights kept in external files are left to tract.
        let (Ok(q), Ok(scale)) = (tensor(&graph.initializer[qi]), tensor(scale_proto)) else { continue };
        let Some(w) = dequantise(&q, &scale)? else { continue };
        let mut raw = Vec::with_capacity(w.len() * 4);
        w.iter().for_each(|v| raw.extend_from_slice(&v.to_le_bytes()));
        let folded = TensorProto {
            name: n.output[0].clone(),
            dims: q.shape().iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: raw,
            ..Default::default()
        };
        folds.push((mi, ci, qi, si, folded));
    }
    let count = folds.len();
    let mut drop_nodes = vec![false; graph.node.len()];
    let mut drop_inits = vec![false; graph.initializer.len()];
    let mut new_inits = Vec::with_capacity(count);
    for (mi, ci, qi, si, folded) in folds {
        drop_nodes[mi] = true;
        drop_nodes[ci] = true;
        drop_inits[qi] = uses.get(graph.initializer[qi].name.as_str()) == Some(&1);
        drop_inits[si] = uses.get(graph.initializer[si].name.as_str()) == Some(&1);
        new_inits.push(folded);
    }
    let mut keep = drop_nodes.iter().map(|d| !d);
    graph.node.retain(|_| keep.next().unwrap_or(true));
    let mut keep = drop_inits.iter().map(|d| !d);
    graph.initializer.retain(|_| keep.next().unwrap_or(true));
    graph.initializer.extend(new_inits);
    Ok(count)
}

/// `q * scale` as f32 in `q`'s row-major order, when `scale` broadcasts
/// along at most one axis of `q` (one scale per output channel, or one for
/// all); `None` for any other shape.
fn dequantise(q: &Tensor, scale: &Tensor) -> TractResult<Option<Vec<f32>>> {
    let (qs, ss) = (q.shape(), scale.shape());
    if ss.len() > qs.len() {
        return Ok(None);
    }
    // The scale's shape aligned to the right of q's, as numpy broadcasts.
    let aligned: Vec<usize> = std::iter::repeat_n(1, qs.len() - ss.len()).chain(ss.iter().copied()).collect();
    let axes: Vec<usize> = (0..qs.len()).filter(|&a| aligned[a] != 1).collect();
    let values = q.to_plain_array_view::<i8>()?;
    let Some(values) = values.as_slice() else { return Ok(None) };
    let scales = scale.to_plain_array_view::<f32>()?;
    let Some(scales) = scales.as_slice() else { return Ok(None) };
    let w = match axes.as_slice() {
        [] => values.iter().map(|&v| v as f32 * scales[0]).collect(),
        [axis] if aligned[*axis] == qs[*axis] => {
            let inner: usize = qs[axis + 1..].iter().product();
            let len = qs[*axis];
            let mut w = Vec::with_capacity(values.len());
            for block in values.chunks(len * inner.max(1)) {
                if inner == 1 {
                    w.extend(block.iter().zip(scales).map(|(&v, &s)| v as f32 * s));
                } else {
                    for (row, &s) in block.chunks(inner).zip(scales) {
                        w.extend(row.iter().map(|&v| v as f32 * s));
                    }
                }
            }
            w
        }
        _ => return Ok(None),
    };
    Ok(Some(w))
}

/// How much of a weight-only int8 file [`load_onnx`] folds back to f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// Every weight: the model computes in f32.
    All,
    /// Only weights small enough for tract to fold anyway (4 MiB as f32,
    /// tract-core's `CONST_FOLD_MEM_BUDGET`): folding them here is much faster
    /// than tract's generic constant evaluation. Larger ones stay int8 for
    /// the int8-compute rewrite ([`crate::int8`]), which takes them as stored,
    /// so their f32 form never exists in memory.
    Small,
}

/// Parses ONNX bytes, folds weight dequantisation as `fold` says, and
/// builds tract's model.
pub fn load_onnx(bytes: &[u8], fold: Fold) -> TractResult<(InferenceModel, usize)> {
    let onnx = tract_onnx::onnx();
    let mut proto: pb::ModelProto = onnx.proto_model_for_read(&mut &bytes[..])?;
    let max_values = match fold {
        Fold::All => usize::MAX,
        Fold::Small => usize::try_from(tract_core::optim::CONST_FOLD_MEM_BUDGET / 4).unwrap_or(usize::MAX),
    };
    let folded = match proto.graph.as_mut() {
        Some(g) => fold_weight_dequant(g, max_values)?,
        None => 0,
    };
    Ok((onnx.model_for_proto_model(&proto)?, folded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{AttributeProto, NodeProto};

    fn init(name: &str, dims: &[i64], data_type: DataType, raw: Vec<u8>) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: data_type as i32,
            raw_data: raw,
            ..Default::default()
        }
    }

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        let mut n = NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        };
        if op == "Cast" {
            n.attribute.push(AttributeProto {
                name: "to".into(),
                i: DataType::Float as i64,
                ..Default::default()
            });
        }
        n
    }

    fn graph(extra_use: bool) -> GraphProto {
        let q: Vec<u8> = [1i8, -2, 3, 127, 0, -127].iter().map(|&v| v as u8).collect();
        let s: Vec<u8> = [0.5f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut g = GraphProto {
            initializer: vec![
                init("w_q", &[2, 3], DataType::Int8, q),
                init("w_s", &[2, 1], DataType::Float, s),
            ],
            node: vec![
                node("Cast", &["w_q"], "w_dq"),
                node("Mul", &["w_dq", "w_s"], "w"),
                node("MatMul", &["x", "w"], "y"),
            ],
            ..Default::default()
        };
        if extra_use {
            g.node.push(node("Identity", &["w_dq"], "z"));
        }
        g
    }

    #[test]
    fn folds_cast_and_mul_into_one_f32_weight() {
        let mut g = graph(false);
        assert_eq!(fold_weight_dequant(&mut g, usize::MAX).expect("fold"), 1);
        assert_eq!(g.node.iter().map(|n| n.op_type.as_str()).collect::<Vec<_>>(), ["MatMul"]);
        assert_eq!(g.initializer.len(), 1);
        let w = &g.initializer[0];
        assert_eq!(
            (w.name.as_str(), w.dims.as_slice(), w.data_type),
            ("w", &[2i64, 3][..], DataType::Float as i32)
        );
        let values: Vec<f32> =
            w.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect();
        assert_eq!(values, [0.5, -1.0, 1.5, 254.0, 0.0, -254.0]);
    }

    #[test]
    fn leaves_weights_above_the_limit_alone() {
        let mut g = graph(false);
        assert_eq!(fold_weight_dequant(&mut g, 5).expect("fold"), 0);
        assert_eq!(g.node.len(), 3);
        assert_eq!(fold_weight_dequant(&mut g, 6).expect("fold"), 1);
    }

    #[test]
    fn leaves_a_shared_intermediate_alone() {
        let mut g = graph(true);
        assert_eq!(fold_weight_dequant(&mut g, usize::MAX).expect("fold"), 0);
        assert_eq!(g.node.len(), 4);
        assert_eq!(g.initializer.len(), 2);
    }
}
