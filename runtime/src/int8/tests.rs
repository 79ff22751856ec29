use super::*;
use tract_core::ops::cast::cast;

fn einsum(model: &mut TypedModel, name: &str, x: OutletId, w: OutletId) -> OutletId {
    let axes: AxesMapping = "mk,kn->mn".parse().expect("axes");
    model.wire_node(name, EinSum::new(axes, f32::datum_type()), &[x, w]).expect("einsum")[0]
}

fn weights(k: usize, n: usize, seed: usize) -> Vec<f32> {
    (0..k * n).map(|i| (((i * 7919 + seed * 104729) % 2001) as f32 - 1000.0) / 1000.0).collect()
}

/// 1x1-convolution-like products (`ok,kp->op`) in a chain on a `[c, p]`
/// channels-first input, weights seeded from `seed`, with tract's exact GELU
/// after the product named `gelu_after`.
fn channels_first_chain(
    c: usize,
    p: usize,
    names: &[&str],
    seed: usize,
    gelu_after: Option<&str>,
) -> TypedModel {
    let mut model = TypedModel::default();
    let mut h = model.add_source("x", f32::fact([c, p])).expect("source");
    for (i, &name) in names.iter().enumerate() {
        let w = Tensor::from_shape(&[c, c], &weights(c, c, i + seed)).expect("w");
        let w = model.add_const(format!("{name}.w"), w).expect("c");
        let axes: AxesMapping = "ok,kp->op".parse().expect("axes");
        h = model.wire_node(name, EinSum::new(axes, f32::datum_type()), &[w, h]).expect("einsum")[0];
        if gelu_after == Some(name) {
            let gelu = tract_core::ops::nn::gelu_exact::gelu_exact();
            h = model.wire_node("gelu", gelu, &[h]).expect("gelu")[0];
        }
    }
    model.select_output_outlets(&[h]).expect("outputs");
    model
}

/// Optimises and runs a model with one `[m, k]` f32 input on a fixed input;
/// its first output as a vector.
fn run_on_test_input(model: TypedModel, m: usize, k: usize) -> Vec<f32> {
    let input: Vec<f32> = (0..m * k).map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0).collect();
    let input = Tensor::from_shape(&[m, k], &input).expect("input");
    let plan = model.into_optimized().expect("optimise").into_runnable().expect("plan");
    let out = plan.run(tvec!(input.into_tvalue())).expect("run");
    out[0].to_plain_array_view::<f32>().expect("f32").iter().copied().collect()
}

/// A `k x k` weight as the int8 file stores a large one: `Mul(Cast(q), s)`,
/// one scale per output channel. Returns it with its int8 values and scales.
fn stored_int8_weight(model: &mut TypedModel, k: usize, seed: usize) -> (OutletId, Vec<i8>, Vec<f32>) {
    let q: Vec<i8> = weights(k, k, seed).iter().map(|v| (v * 127.0).round() as i8).collect();
    let scales: Vec<f32> = (0..k).map(|c| 0.01 + c as f32 * 0.001).collect();
    let qc = model.add_const("q", Tensor::from_shape(&[k, k], &q).expect("q")).expect("c");
    let sc = model.add_const("s", Tensor::from_shape(&[1, k], &scales).expect("s")).expect("c");
    let qf = model.wire_node("cast", cast(f32::datum_type()), &[qc]).expect("cast")[0];
    let w = model.wire_node("rescale", math::mul(), &[qf, sc]).expect("mul")[0];
    (w, q, scales)
}

fn assert_middle_of_three_in_int8(report: &Int8Report) {
    let computes: Vec<LayerCompute> = report.layers.iter().map(|l| l.compute).collect();
    assert_eq!(
        computes,
        [LayerCompute::F32(KeptF32::First), LayerCompute::Int8PerRow, LayerCompute::F32(KeptF32::Last)]
    );
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// Three linear layers; the middle one's weight is the int8 file's
/// unfolded `Mul(Cast(q), scale)`. The middle one runs in int8 with the
/// stored values, the others stay f32, and the result stays close to f32.
#[test]
fn the_middle_of_three_layers_runs_in_int8_from_stored_int8_weights() {
    let (m, k) = (4, 32);
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([m, k])).expect("source");
    let w1 = model.add_const("w1", Tensor::from_shape(&[k, k], &weights(k, k, 1)).expect("w1")).expect("c");
    let h = einsum(&mut model, "first", x, w1);
    let (w2, _, _) = stored_int8_weight(&mut model, k, 2);
    let h = einsum(&mut model, "middle", h, w2);
    let w3 = model.add_const("w3", Tensor::from_shape(&[k, 8], &weights(k, 8, 3)).expect("w3")).expect("c");
    let y = einsum(&mut model, "last", h, w3);
    model.select_output_outlets(&[y]).expect("outputs");

    let run = |model: TypedModel| run_on_test_input(model, m, k);
    let reference = run(model.clone());

    let mut rewritten = model;
    assert_middle_of_three_in_int8(&rewrite(&mut rewritten).expect("rewrite"));
    let ours = run(rewritten);
    let cosine = cosine(&ours, &reference);
    assert!(cosine > 0.999, "int8 drifted: cosine {cosine}");
}

/// How the second of four linear layers holds its int8 weight.
#[derive(Clone, Copy)]
enum SecondWeight {
    /// f32 like the others (an f32 file).
    F32,
    /// `Mul(Cast(q), s)` (an int8-compute NNEF copy's large weight).
    Int8,
    /// A `StoredInt8` (an int8 file loaded as stored).
    Stored,
}

/// Four linear layers whose third weight is f32 and whose second is held as
/// `second` says: only in a model loaded as stored is the third f32 because
/// the file says so, and only there does it stay f32.
#[test]
fn a_layer_the_int8_file_keeps_f32_stays_f32_only_where_the_model_is_loaded_as_stored() {
    let (m, k) = (4, 32);
    let chain = |second: SecondWeight| {
        let mut model = TypedModel::default();
        let mut h = model.add_source("x", f32::fact([m, k])).expect("source");
        for (i, name) in ["first", "second", "third", "last"].into_iter().enumerate() {
            let w = match (name, second) {
                ("second", SecondWeight::Int8) => stored_int8_weight(&mut model, k, i).0,
                ("second", SecondWeight::Stored) => {
                    let q: Vec<i8> = weights(k, k, i).iter().map(|v| (v * 127.0).round() as i8).collect();
                    let scales: Vec<f32> = (0..k).map(|c| 0.01 + c as f32 * 0.001).collect();
                    let stored = crate::dequant::StoredInt8 {
                        q: Tensor::from_shape(&[k, k], &q).expect("q").into_arc_tensor(),
                        scale: Tensor::from_shape(&[1, k], &scales).expect("s").into_arc_tensor(),
                    };
                    model.wire_node("stored", stored, &[]).expect("stored")[0]
                }
                _ => {
                    let t = Tensor::from_shape(&[k, k], &weights(k, k, i)).expect("w");
                    model.add_const(format!("{name}.w"), t).expect("c")
                }
            };
            h = einsum(&mut model, name, h, w);
        }
        model.select_output_outlets(&[h]).expect("outputs");
        model
    };
    let computes = |second: SecondWeight| -> Vec<LayerCompute> {
        let mut model = chain(second);
        rewrite(&mut model).expect("rewrite").layers.iter().map(|l| l.compute).collect()
    };
    let (first, last, int8) =
        (LayerCompute::F32(KeptF32::First), LayerCompute::F32(KeptF32::Last), LayerCompute::Int8PerRow);
    assert_eq!(computes(SecondWeight::Stored), [first, int8, LayerCompute::F32(KeptF32::F32InFile), last]);
    assert_eq!(computes(SecondWeight::Int8), [first, int8, int8, last]);
    assert_eq!(computes(SecondWeight::F32), [first, int8, int8, last]);
}

/// The middle of three layers with its weight as the int8-compute loader
/// leaves it: a `StoredInt8` of shape `[k, n, 1, 1]` whose unit axes the
/// product drops (a 1x1 kernel, which tract cannot reshape while it is not a
/// constant). It runs in int8 on the stored values, close to f32.
#[test]
fn a_stored_weight_with_unit_axes_runs_in_int8_from_its_stored_values() {
    let (m, k) = (4, 32);
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([m, k])).expect("source");
    let w1 = model.add_const("w1", Tensor::from_shape(&[k, k], &weights(k, k, 1)).expect("w1")).expect("c");
    let h = einsum(&mut model, "first", x, w1);
    let q: Vec<i8> = weights(k, k, 2).iter().map(|v| (v * 127.0).round() as i8).collect();
    let scales: Vec<f32> = (0..k).map(|c| 0.01 + c as f32 * 0.001).collect();
    let stored = crate::dequant::StoredInt8 {
        q: Tensor::from_shape(&[k, k, 1, 1], &q).expect("q").into_arc_tensor(),
        scale: Tensor::from_shape(&[1, k, 1, 1], &scales).expect("s").into_arc_tensor(),
    };
    let w2 = model.wire_node("stored", stored, &[]).expect("stored")[0];
    let axes: AxesMapping = "mk,knab->mn".parse().expect("axes");
    let h = model.wire_node("middle", EinSum::new(axes, f32::datum_type()), &[h, w2]).expect("einsum")[0];
    let w3 = model.add_const("w3", Tensor::from_shape(&[k, 8], &weights(k, 8, 3)).expect("w3")).expect("c");
    let y = einsum(&mut model, "last", h, w3);
    model.select_output_outlets(&[y]).expect("outputs");

    let (values, got) =
        Weight::of(&model, w2).expect("weight").expect("a weight").quantised(1).expect("quantised");
    assert_eq!(values.to_plain_array_view::<i8>().expect("i8").iter().copied().collect::<Vec<_>>(), q);
    assert_eq!(got, scales);

    let run = |model: TypedModel| run_on_test_input(model, m, k);
    let reference = run(model.clone());
    let mut rewritten = model;
    assert_middle_of_three_in_int8(&rewrite(&mut rewritten).expect("rewrite"));
    assert!(!rewritten.nodes.iter().any(|n| n.op_is::<crate::dequant::StoredInt8>()));
    let ours = run(rewritten);
    let cosine = cosine(&ours, &reference);
    assert!(cosine > 0.999, "int8 drifted: cosine {cosine}");
}

#[test]
fn stored_per_channel_scales_are_used_as_they_are() {
    let q = rctensor2(&[[1i8, -127], [127, 5]]);
    let scale = rctensor2(&[[0.5f32, 2.0]]);
    let (values, scales) = Weight::Int8 { q: q.clone(), scale }.quantised(1).expect("quantised");
    assert_eq!(values, *q);
    assert_eq!(scales, [0.5, 2.0]);
    // Asked along the other axis, the weight is quantised again from q * scale.
    let (_, again) = Weight::Int8 { q, scale: rctensor2(&[[0.5f32, 2.0]]) }.quantised(0).expect("quantised");
    assert_eq!(again, [2.0 * 127.0 / 127.0, 0.5 * 127.0 / 127.0]);
}

#[test]
fn weights_quantise_per_channel_with_ties_to_even() {
    let w = tensor2(&[[1.0f32, -0.5], [0.25, 0.0], [-2.0, 0.0]]);
    let (q, s) = quantise_weight(&w, 1).expect("quantise");
    assert_eq!(s, [2.0 / 127.0, 0.5 / 127.0]);
    assert_eq!(q, tensor2(&[[64i8, -127], [16, 0], [-127, 0]]));
}

/// Three 1x1-convolution-like products on a channels-first activation with
/// more pixels than channels: with a row-major output tile the middle one
/// accumulates channels-last and its dequantisation transposes back, with
/// the same values to the bit as the column layout.
#[test]
fn a_channels_first_product_accumulates_channels_last_for_row_tiles() {
    let (c, p) = (32, 80);
    let model = channels_first_chain(c, p, &["first", "middle", "last"], 4, None);
    let input: Vec<f32> = (0..c * p).map(|i| ((i * 31 % 23) as f32 - 11.0) / 8.0).collect();
    let input = Tensor::from_shape(&[c, p], &input).expect("input");
    let run = |tile: OutputTile| -> (Vec<f32>, usize) {
        let mut m = model.clone();
        let report = rewrite_with(&mut m, tile).expect("rewrite");
        assert_eq!(report.layers[1].compute, LayerCompute::Int8PerRow);
        let transposing = m
            .nodes()
            .iter()
            .filter(|n| n.op_as::<Dequantise>().is_some_and(|d| d.acc_layout != AccLayout::Same))
            .count();
        let plan = m.into_optimized().expect("optimise").into_runnable().expect("plan");
        let out = plan.run(tvec!(input.clone().into_tvalue())).expect("run");
        (out[0].to_plain_array_view::<f32>().expect("f32").iter().copied().collect(), transposing)
    };
    let (columns, none) = run(OutputTile::Columns);
    let (rows, one) = run(OutputTile::Rows);
    assert_eq!((none, one), (0, 1));
    assert_eq!(rows, columns);
}

/// The first layer stays f32; its weight, stored as the int8 file's unfolded
/// `Mul(Cast(q), scale)`, becomes one f32 constant (q times scale) instead
/// of being cast and rescaled on every run.
#[test]
fn a_layer_kept_f32_gets_its_int8_weight_folded_at_load() {
    let (m, k) = (4, 32);
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([m, k])).expect("source");
    let (w1, q, scales) = stored_int8_weight(&mut model, k, 5);
    let y = einsum(&mut model, "first", x, w1);
    model.select_output_outlets(&[y]).expect("outputs");
    let report = rewrite(&mut model).expect("rewrite");
    assert_eq!(report.layers[0].compute, LayerCompute::F32(KeptF32::First));
    let first = model.node(model.node_by_name("first").expect("first").id);
    let w = model.outlet_fact(first.inputs[1]).expect("fact").konst.clone().expect("a constant weight");
    let want: Vec<f32> = q.iter().enumerate().map(|(i, &v)| v as f32 * scales[i % k]).collect();
    assert_eq!(w.to_plain_array_view::<f32>().expect("f32").iter().copied().collect::<Vec<_>>(), want);
    assert!(
        model.nodes().iter().all(|n| n.op_as::<tract_core::ops::cast::Cast>().is_none()),
        "a Cast is left"
    );
}

/// tract's exact GELU between two int8 products is fused into the first
/// one's `Dequantise`, with the same result to the bit.
#[test]
fn a_gelu_after_an_int8_product_is_fused_into_its_dequantisation() {
    let (m, k) = (4, 32);
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([m, k])).expect("source");
    let mut h = x;
    for (i, name) in ["first", "middle", "next", "last"].into_iter().enumerate() {
        let w = Tensor::from_shape(&[k, k], &weights(k, k, i + 7)).expect("w");
        let w = model.add_const(format!("{name}.w"), w).expect("c");
        h = einsum(&mut model, name, h, w);
        if name == "middle" {
            let gelu = tract_core::ops::nn::gelu_exact::gelu_exact();
            h = model.wire_node("gelu", gelu, &[h]).expect("gelu")[0];
        }
    }
    model.select_output_outlets(&[h]).expect("outputs");
    let run = |model: TypedModel| run_on_test_input(model, m, k);
    let mut fused = model.clone();
    rewrite_with(&mut fused, OutputTile::Columns).expect("rewrite");
    let gelus =
        |m: &TypedModel| m.nodes().iter().filter(|n| n.op_as::<Dequantise>().is_some_and(|d| d.gelu)).count();
    assert_eq!(gelus(&fused), 1);
    // The same rewrite with the GELU left as tract's own op, by hand.
    let mut separate = model;
    rewrite_with(&mut separate, OutputTile::Columns).expect("rewrite");
    let node =
        separate.nodes().iter().find(|n| n.op_as::<Dequantise>().is_some_and(|d| d.gelu)).expect("fused");
    let d = Dequantise { gelu: false, ..node.op_as::<Dequantise>().expect("dequantise").clone() };
    let mut patch = TypedModelPatch::new("unfuse");
    let inputs = patch.taps(&separate, &node.inputs).expect("taps");
    let y = patch.wire_node("plain", d, &inputs).expect("dequantise")[0];
    let gelu = tract_core::ops::element_wise::ElementWiseOp(Box::new(crate::gelu::Gelu), None);
    let g = patch.wire_node("gelu", gelu, &[y]).expect("gelu")[0];
    patch.shunt_outside(&separate, node.id.into(), g).expect("shunt");
    patch.apply(&mut separate).expect("apply");
    assert_eq!(gelus(&separate), 0);
    assert_eq!(run(fused), run(separate));
}

/// Two channels-first int8 products with a GELU between them (MobileCLIP's
/// ConvFFN shape): with a row-major output tile the first one's accumulator
/// is requantised channels-last straight into the second, with the same
/// result to the bit as the column layout, which takes the plain path.
#[test]
fn a_channels_last_accumulator_is_requantised_straight_into_the_next_product() {
    let (c, p) = (32, 80);
    let model = channels_first_chain(c, p, &["first", "expand", "contract", "last"], 11, Some("expand"));
    let input: Vec<f32> = (0..c * p).map(|i| ((i * 31 % 23) as f32 - 11.0) / 8.0).collect();
    let input = Tensor::from_shape(&[c, p], &input).expect("input");
    let run = |tile: OutputTile| -> (Vec<f32>, usize) {
        let mut m = model.clone();
        rewrite_with(&mut m, tile).expect("rewrite");
        let requantising = m.nodes().iter().filter(|n| n.op_as::<Requantise>().is_some()).count();
        let plan = m.into_optimized().expect("optimise").into_runnable().expect("plan");
        let out = plan.run(tvec!(input.clone().into_tvalue())).expect("run");
        (out[0].to_plain_array_view::<f32>().expect("f32").iter().copied().collect(), requantising)
    };
    let (columns, none) = run(OutputTile::Columns);
    let (rows, one) = run(OutputTile::Rows);
    assert_eq!((none, one), (0, 1));
    assert_eq!(rows, columns);
}

/// tract's subsampling before a per-pixel quantisation (a strided 1x1
/// convolution's input) is folded into the quantisation, with the same
/// values and scales to the bit, on odd sizes and different strides per axis.
#[test]
fn a_subsampling_before_a_quantisation_is_folded_into_it() {
    use tract_core::ops::downsample::Downsample;
    let shape = [1, 3, 7, 10];
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact(shape)).expect("source");
    let h = model.wire_node("rows", Downsample::new(2, 2, 0), &[x]).expect("rows")[0];
    let h = model.wire_node("cols", Downsample::new(3, 3, 0), &[h]).expect("cols")[0];
    let q = model.wire_node("q", QuantiseSym::new(Granularity::Along(1..2)), &[h]).expect("quantise");
    model.select_output_outlets(&q).expect("outputs");
    let mut fused = model.clone();
    assert_eq!(fuse::downsample(&mut fused).expect("fuse"), 1);
    fused.compact().expect("compact");
    assert!(fused.nodes().iter().all(|n| n.op_as::<Downsample>().is_none()), "a Downsample is left");
    let folded = fused.nodes().iter().find_map(|n| n.op_as::<QuantiseSym>()).expect("quantise");
    assert_eq!(folded.strides, tvec![1, 1, 2, 3]);
    let input: Vec<f32> = (0..shape.iter().product()).map(|i| ((i * 37 % 29) as f32 - 14.0) / 3.0).collect();
    let input = Tensor::from_shape(&shape, &input).expect("input");
    let run = |m: TypedModel| {
        let plan = m.into_runnable().expect("plan");
        let out = plan.run(tvec!(input.clone().into_tvalue())).expect("run");
        assert_eq!(out[0].shape(), &[1, 3, 4, 4]);
        (
            out[0].to_plain_array_view::<i8>().expect("i8").iter().copied().collect::<Vec<_>>(),
            out[1].to_plain_array_view::<f32>().expect("f32").iter().copied().collect::<Vec<_>>(),
        )
    };
    assert_eq!(run(fused), run(model));
}

/// Two subsamplings of the same axis fold into one stride (their product);
/// one that does not start at position 0, or that also feeds another node,
/// is left to tract.
#[test]
fn only_subsamplings_from_position_0_that_feed_the_quantisation_alone_fold() {
    use tract_core::ops::downsample::Downsample;
    let quantised = |steps: &[(usize, isize, usize)], shared: bool| -> (usize, TypedModel) {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 2, 11, 5])).expect("source");
        let mut h = x;
        for (i, &(axis, stride, modulo)) in steps.iter().enumerate() {
            h = model.wire_node(format!("d{i}"), Downsample::new(axis, stride, modulo), &[h]).expect("d")[0];
        }
        let q = model.wire_node("q", QuantiseSym::new(Granularity::Along(1..2)), &[h]).expect("q");
        let mut outputs = q.to_vec();
        if shared {
            outputs.push(h);
        }
        model.select_output_outlets(&outputs).expect("outputs");
        let fused = fuse::downsample(&mut model).expect("fuse");
        (fused, model)
    };
    let (fused, model) = quantised(&[(2, 2, 0), (2, 3, 0)], false);
    assert_eq!(fused, 1);
    let q = model.nodes().iter().find_map(|n| n.op_as::<QuantiseSym>()).expect("quantise");
    assert_eq!(q.strides, tvec![1, 1, 6, 1]);
    assert_eq!(
        model.outlet_fact(model.output_outlets().expect("outputs")[0]).expect("fact").shape.to_tvec(),
        tvec![1.to_dim(), 2.to_dim(), 2.to_dim(), 5.to_dim()]
    );
    assert_eq!(quantised(&[(2, 2, 1)], false).0, 0, "modulo 1 folded");
    assert_eq!(quantised(&[(2, 2, 0)], true).0, 0, "a shared subsampling folded");
}
