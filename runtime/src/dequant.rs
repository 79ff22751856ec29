//! Folds weight-only int8 dequantisation into f32 weights once tract has
//! read the graph.
//!
//! The int8 form written by `tools/python/export_bundle.py` stores each large
//! weight as an int8 initializer `q` and an f32 scale `s` (one per output
//! channel), turned back into the weight by `Mul(Cast(q, to=FLOAT), s)`.
//! tract folds constant nodes only while a fold does not grow memory beyond
//! 4 MiB (`CONST_FOLD_MEM_BUDGET` in tract-core 0.23), so weights above about
//! a million values would be dequantised again on every frame (ViT-B/32 ran 2x
//! slower than f32); the ones it does fold go through its generic broadcasting
//! `Mul`, about 40 ns a value. [`load_onnx`] finds the pattern in the protobuf
//! and, once tract has parsed it and the protobuf is gone, puts one f32
//! constant in place of each `Mul` in tract's model: the file on flash stays
//! int8, the model in memory is the f32 model, and the f32 weights never
//! coexist with an f32 copy in the protobuf (MobileCLIP2-S0's peak heap at
//! load 106 -> about 70 MB). For the int8-compute form it puts a
//! [`StoredInt8`] there instead, which tract cannot fold, so that the f32
//! weights of the layers the int8 rewrite takes never exist (MobileCLIP2-S0's
//! peak RSS 102-113 -> 57-59 MB).

use std::collections::HashMap;

use tract_core::internal::*;
use tract_onnx::pb::{self, tensor_proto::DataType, GraphProto};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::*;

/// One `Mul(Cast(q, to=FLOAT), s)` of the protobuf that [`fold_sites`] folds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DequantSite {
    /// The `Mul`'s output: the weight's name in the graph.
    pub weight: String,
    /// Which of the `Mul`'s inputs is the scale (the other is the `Cast`).
    pub scale_input: usize,
}

/// Finds every `Mul(Cast(int8 initializer, to=FLOAT), f32 initializer)` whose
/// intermediate no other node reads, whose initializers are stored in the file
/// itself, and whose weight has at most `max_values` values.
pub fn weight_dequant_sites(graph: &GraphProto, max_values: usize) -> Vec<DequantSite> {
    let inits: HashMap<&str, &pb::TensorProto> =
        graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for n in &graph.node {
        for i in &n.input {
            *uses.entry(i.as_str()).or_default() += 1;
        }
    }
    let in_file = |t: &pb::TensorProto| t.external_data.is_empty();
    let mut casts: HashMap<&str, &pb::TensorProto> = HashMap::new();
    for n in &graph.node {
        let to_float = n.attribute.iter().any(|a| a.name == "to" && a.i == DataType::Float as i64);
        if n.op_type == "Cast" && n.input.len() == 1 && n.output.len() == 1 && to_float {
            if let Some(q) = inits.get(n.input[0].as_str()) {
                if q.data_type == DataType::Int8 as i32 && in_file(q) {
                    casts.insert(n.output[0].as_str(), q);
                }
            }
        }
    }
    let mut sites = Vec::new();
    for n in &graph.node {
        if n.op_type != "Mul" || n.input.len() != 2 || n.output.len() != 1 {
            continue;
        }
        for (cast_input, scale_input) in [(0, 1), (1, 0)] {
            let (Some(q), Some(s)) =
                (casts.get(n.input[cast_input].as_str()), inits.get(n.input[scale_input].as_str()))
            else {
                continue;
            };
            let values = q.dims.iter().try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?));
            if s.data_type == DataType::Float as i32
                && in_file(s)
                && uses.get(n.input[cast_input].as_str()) == Some(&1)
                && values.is_some_and(|v| v <= max_values)
            {
                sites.push(DequantSite { weight: n.output[0].clone(), scale_input });
                break;
            }
        }
    }
    sites
}

/// Puts one f32 constant (or, for [`Fold::Stored`], one [`StoredInt8`]) in
/// place of each site's `Mul` in tract's model (parsed from the protobuf the
/// sites were found in), then drops the nodes left without use. A site whose
/// `Mul` is an output of the graph, or whose scale does not broadcast into
/// `q` (for f32: along at most one axis of `q`), is left as it is.
/// Returns how many weights were folded.
pub fn fold_sites(model: &mut InferenceModel, sites: &[DequantSite], fold: Fold) -> TractResult<usize> {
    let konst = |model: &InferenceModel, outlet: OutletId| {
        model.node(outlet.node).op_as::<tract_core::ops::konst::Const>().map(|c| c.val().clone())
    };
    let outputs = model.output_outlets()?.to_vec();
    let labelled: HashMap<String, OutletId> =
        model.outlet_labels.iter().map(|(outlet, label)| (label.clone(), *outlet)).collect();
    let mut folded = 0;
    for site in sites {
        let Some(&mul) = labelled.get(&site.weight) else { continue };
        let node = model.node(mul.node);
        if outputs.contains(&mul) || node.op.name() != "Mul" || node.inputs.len() != 2 {
            continue;
        }
        let cast = model.node(node.inputs[1 - site.scale_input].node);
        let (Some(&q), Some(scale)) = (cast.inputs.first(), konst(model, node.inputs[site.scale_input]))
        else {
            continue;
        };
        let Some(q) = konst(model, q) else { continue };
        if cast.op.name() != "onnx.Cast"
            || q.datum_type() != i8::datum_type()
            || scale.datum_type() != f32::datum_type()
            || !broadcasts_into(scale.shape(), q.shape())
        {
            continue;
        }
        let successors = node.outputs[mul.slot].successors.clone();
        let id = if fold == Fold::Stored {
            let fact = f32::fact(q.shape());
            let name = format!("{}.stored", node.name);
            model.add_node(name, StoredInt8 { q, scale }, tvec!(fact.into()))?
        } else {
            let Some(w) = dequantise(&q, &scale)? else { continue };
            let w = tract_ndarray::ArrayD::from_shape_vec(q.shape(), w)?.into_arc_tensor();
            let fact = TypedFact::try_from(w.clone())?;
            let name = format!("{}.f32", node.name);
            model.add_node(name, tract_core::ops::konst::Const::new(w)?, tvec!(fact.into()))?
        };
        model.set_outlet_label(OutletId::new(id, 0), site.weight.clone())?;
        for inlet in successors {
            model.add_edge(OutletId::new(id, 0), inlet)?;
        }
        folded += 1;
    }
    if folded > 0 {
        model.compact()?;
    }
    Ok(folded)
}

/// A weight as the int8 file stores it, `q` and its scale, in tract's model
/// in place of `Mul(Cast(q), s)` for the int8-compute form ([`Fold::Stored`]).
/// It has no input and no out-of-plan evaluation, so neither tract-hir's
/// analysis nor tract's constant folding turns it into f32: the int8 rewrite
/// takes `q` and the scale from it (through the reshapes declutter puts on a
/// kernel), one weight at a time, and only the layers that stay f32 ever get
/// an f32 copy ([`materialise`]).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct StoredInt8 {
    /// The int8 values.
    pub q: Arc<Tensor>,
    /// Their f32 scale, broadcast against `q` as ONNX's `Mul` does.
    pub scale: Arc<Tensor>,
}

impl StoredInt8 {
    /// `q * scale` in f32, `q`'s shape.
    pub fn dequantised(&self) -> TractResult<Tensor> {
        match dequantise(&self.q, &self.scale)? {
            Some(w) => Ok(tract_ndarray::ArrayD::from_shape_vec(self.q.shape(), w)?.into_tensor()),
            None => {
                let q = self.q.cast_to::<f32>()?;
                Ok((q.to_plain_array_view::<f32>()?.to_owned() * self.scale.to_plain_array_view::<f32>()?)
                    .into_tensor())
            }
        }
    }
}

impl Op for StoredInt8 {
    fn name(&self) -> StaticName {
        "ClipEdgeStoredInt8".into()
    }

    op_as_typed_op!();
}

impl EvalOp for StoredInt8 {
    not_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, _inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        Ok(tvec!(self.dequantised()?.into_tvalue()))
    }
}

impl TypedOp for StoredInt8 {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(self.q.shape())))
    }

    as_op!();
}

impl InferenceRulesOp for StoredInt8 {
    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 0)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].shape, ShapeFactoid::from(self.q.shape()))?;
        Ok(())
    }

    as_op!();
    tract_onnx::tract_hir::to_typed!();
}

/// Replaces every [`StoredInt8`] node of `model` for which `keep` is false
/// by an f32 constant (tract's constant folding then folds the reshapes after
/// it). Returns how many it replaced.
pub fn materialise(model: &mut TypedModel, keep: impl Fn(&TypedModel, usize) -> bool) -> TractResult<usize> {
    let ids: Vec<usize> = model.nodes.iter().filter(|n| n.op_is::<StoredInt8>()).map(|n| n.id).collect();
    let mut done = 0;
    for id in ids {
        if keep(model, id) {
            continue;
        }
        let Some(stored) = model.node(id).op_as::<StoredInt8>() else { continue };
        let w = stored.dequantised()?;
        let name = model.node(id).name.clone();
        let mut patch = TypedModelPatch::new(format!("materialise {name}"));
        let konst = patch.add_const(format!("{name}.f32"), w)?;
        patch.shunt_outside(model, OutletId::new(id, 0), konst)?;
        patch.apply(model)?;
        done += 1;
    }
    if done > 0 {
        model.compact()?;
    }
    Ok(done)
}

/// Whether a tensor of shape `scale` broadcasts into one of shape `q`
/// without growing it (numpy's rules, aligned to the right).
fn broadcasts_into(scale: &[usize], q: &[usize]) -> bool {
    scale.len() <= q.len() && scale.iter().rev().zip(q.iter().rev()).all(|(&s, &d)| s == 1 || s == d)
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

/// What [`load_onnx`] makes of a weight-only int8 file's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// f32 constants: the model computes in f32.
    All,
    /// f32 constants for the weights of at most a million values (what tract
    /// would fold itself, much more slowly), the larger ones left as
    /// `Mul(Cast(q), s)`: the form of the int8-compute NNEF copies
    /// (`clip-edge bundle nnef`), which NNEF can write.
    Small,
    /// [`StoredInt8`] nodes, for the int8-compute rewrite ([`crate::int8`]),
    /// which takes each one's int8 values as stored; the layers that stay f32
    /// get theirs as f32 constants then (`int8::fold_int8_weights`,
    /// [`materialise`]).
    Stored,
}

/// Parses ONNX bytes (dropped once decoded), builds tract's model and folds the weights'
/// dequantisation in it as `fold` says; returns the model and how many
/// weights were folded.
pub fn load_onnx(bytes: Vec<u8>, fold: Fold) -> TractResult<(InferenceModel, usize)> {
    let onnx = tract_onnx::onnx();
    let proto: pb::ModelProto = onnx.proto_model_for_read(&mut &bytes[..])?;
    drop(bytes);
    let max_values = match fold {
        Fold::All | Fold::Stored => usize::MAX,
        Fold::Small => usize::try_from(tract_core::optim::CONST_FOLD_MEM_BUDGET / 4).unwrap_or(usize::MAX),
    };
    let sites = proto.graph.as_ref().map(|g| weight_dequant_sites(g, max_values)).unwrap_or_default();
    let mut model = onnx.model_for_proto_model(&proto)?;
    drop(proto);
    let folded = fold_sites(&mut model, &sites, fold)?;
    Ok((model, folded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{AttributeProto, NodeProto, TensorProto, ValueInfoProto};

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
            name: output.into(),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        };
        if op == "Cast" {
            n.attribute.push(AttributeProto {
                name: "to".into(),
                i: DataType::Float as i64,
                r#type: pb::attribute_proto::AttributeType::Int as i32,
                ..Default::default()
            });
        }
        n
    }

    /// `y = x . (Cast(w_q) * w_s)`, the scale first in the `Mul` when
    /// `scale_first`; with `extra_use` the cast is also the graph's second output.
    fn graph(extra_use: bool, scale_first: bool) -> GraphProto {
        let q: Vec<u8> = [1i8, -2, 3, 127, 0, -127].iter().map(|&v| v as u8).collect();
        let s: Vec<u8> = [0.5f32, 2.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mul = if scale_first { ["w_s", "w_dq"] } else { ["w_dq", "w_s"] };
        let mut g = GraphProto {
            initializer: vec![
                init("w_q", &[2, 3], DataType::Int8, q),
                init("w_s", &[3], DataType::Float, s),
                init(
                    "x",
                    &[1, 2],
                    DataType::Float,
                    [1f32, 10.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
            ],
            node: vec![
                node("Cast", &["w_q"], "w_dq"),
                node("Mul", &mul, "w"),
                node("MatMul", &["x", "w"], "y"),
            ],
            output: vec![ValueInfoProto { name: "y".into(), ..Default::default() }],
            ..Default::default()
        };
        if extra_use {
            g.output.push(ValueInfoProto { name: "w_dq".into(), ..Default::default() });
            g.node.push(node("Identity", &["w_dq"], "z"));
        }
        g
    }

    fn model(g: &GraphProto) -> InferenceModel {
        let proto = pb::ModelProto {
            graph: Some(g.clone()),
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
            ..Default::default()
        };
        tract_onnx::onnx().model_for_proto_model(&proto).expect("parse")
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.to_plain_array_view::<f32>().expect("f32").iter().copied().collect()
    }

    fn ops(m: &InferenceModel) -> Vec<String> {
        m.nodes().iter().map(|n| n.op.name().to_string()).collect()
    }

    #[test]
    fn the_cast_and_mul_become_one_f32_weight_in_tracts_model() {
        for scale_first in [false, true] {
            let g = graph(false, scale_first);
            let sites = weight_dequant_sites(&g, usize::MAX);
            assert_eq!(sites, [DequantSite { weight: "w".into(), scale_input: usize::from(!scale_first) }]);
            let mut m = model(&g);
            assert_eq!(fold_sites(&mut m, &sites, Fold::All).expect("fold"), 1);
            assert_eq!(ops(&m), ["Const", "Const", "MatMulInference"]);
            let matmul = m.node_by_name("y").expect("matmul");
            let w =
                m.node(matmul.inputs[1].node).op_as::<tract_core::ops::konst::Const>().expect("a constant");
            assert_eq!(w.val().shape(), [2, 3]);
            assert_eq!(values(w.val()), [0.5, -4.0, 12.0, 63.5, 0.0, -508.0]);
            let y = m.into_runnable().expect("plan").run(tvec!()).expect("run");
            assert_eq!(values(&y[0]), [635.5, -4.0, -5068.0]);
        }
    }

    #[test]
    fn weights_above_the_limit_are_left_alone() {
        let g = graph(false, false);
        assert!(weight_dequant_sites(&g, 5).is_empty());
        assert_eq!(weight_dequant_sites(&g, 6).len(), 1);
    }

    #[test]
    fn a_shared_intermediate_is_left_alone() {
        let g = graph(true, false);
        assert!(weight_dequant_sites(&g, usize::MAX).is_empty());
        let mut m = model(&g);
        let site = DequantSite { weight: "w".into(), scale_input: 1 };
        // Forced, the fold still keeps the cast: the graph outputs it.
        assert_eq!(fold_sites(&mut m, &[site], Fold::All).expect("fold"), 1);
        assert!(ops(&m).iter().any(|o| o == "onnx.Cast"), "{:?}", ops(&m));
        assert!(!ops(&m).iter().any(|o| o == "Mul"), "{:?}", ops(&m));
    }

    /// `g` has one site, and `fold_sites` leaves its `Mul` in tract's model.
    fn assert_found_and_left_alone(g: &GraphProto) {
        let sites = weight_dequant_sites(g, usize::MAX);
        assert_eq!(sites.len(), 1);
        let mut m = model(g);
        assert_eq!(fold_sites(&mut m, &sites, Fold::All).expect("fold"), 0);
        assert!(ops(&m).iter().any(|o| o == "Mul"), "{:?}", ops(&m));
    }

    #[test]
    fn a_scale_along_two_axes_is_left_alone() {
        let mut g = graph(false, false);
        g.initializer[1] = init("w_s", &[2, 3], DataType::Float, vec![0; 24]);
        assert_found_and_left_alone(&g);
    }

    #[test]
    fn a_weight_that_is_an_output_of_the_graph_is_left_alone() {
        let mut g = graph(false, false);
        g.output.push(ValueInfoProto { name: "w".into(), ..Default::default() });
        assert_found_and_left_alone(&g);
    }

    #[test]
    fn a_stored_weight_stays_int8_through_tracts_analysis_and_declutter() {
        let g = graph(false, false);
        let sites = weight_dequant_sites(&g, usize::MAX);
        let mut m = model(&g);
        assert_eq!(fold_sites(&mut m, &sites, Fold::Stored).expect("fold"), 1);
        assert_eq!(ops(&m), ["Const", "ClipEdgeStoredInt8", "MatMulInference"]);
        let typed = m.into_typed().expect("typed").into_decluttered().expect("declutter");
        let stored: Vec<&StoredInt8> = typed.nodes.iter().filter_map(|n| n.op_as::<StoredInt8>()).collect();
        assert_eq!(stored.len(), 1, "folded by tract: {typed}");
        assert_eq!(values(&stored[0].dequantised().expect("f32")), [0.5, -4.0, 12.0, 63.5, 0.0, -508.0]);
        let mut folded = typed.clone();
        assert_eq!(materialise(&mut folded, |_, _| false).expect("materialise"), 1);
        assert!(!folded.nodes.iter().any(|n| n.op_is::<StoredInt8>()));
        for m in [typed, folded] {
            let y = m.into_runnable().expect("plan").run(tvec!()).expect("run");
            assert_eq!(values(&y[0]), [635.5, -4.0, -5068.0]);
        }
    }
}
