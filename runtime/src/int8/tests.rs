use super::*;
use tract_core::ops::cast::cast;

fn einsum(model: &mut TypedModel, name: &str, x: OutletId, w: OutletId) -> OutletId {
    let axes: AxesMapping = "mk,kn->mn".parse().expect("axes");
    model.wire_node(name, EinSum::new(axes, f32::datum_type()), &[x, w]).expect("einsum")[0]
}

fn weights(k: usize, n: usize, seed: usize) -> Vec<f32> {
    (0..k * n).map(|i| (((i * 7919 + seed * 104729) % 2001) as f32 - 1000.0) / 1000.0).collect()
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
    let q: Vec<i8> = weights(k, k, 2).iter().map(|v| (v * 127.0).round() as i8).collect();
    let scales: Vec<f32> = (0..k).map(|c| 0.01 + c as f32 * 0.001).collect();
    let qc = model.add_const("q", Tensor::from_shape(&[k, k], &q).expect("q")).expect("c");
    let sc = model.add_const("s", Tensor::from_shape(&[1, k], &scales).expect("s")).expect("c");
    let qf = model.wire_node("cast", cast(f32::datum_type()), &[qc]).expect("cast")[0];
    let w2 = model.wire_node("rescale", math::mul(), &[qf, sc]).expect("mul")[0];
    let h = einsum(&mut model, "middle", h, w2);
    let w3 = model.add_const("w3", Tensor::from_shape(&[k, 8], &weights(k, 8, 3)).expect("w3")).expect("c");
    let y = einsum(&mut model, "last", h, w3);
    model.select_output_outlets(&[y]).expect("outputs");

    let input: Vec<f32> = (0..m * k).map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0).collect();
    let input = Tensor::from_shape(&[m, k], &input).expect("input");
    let run = |model: TypedModel| -> Vec<f32> {
        let plan = model.into_optimized().expect("optimise").into_runnable().expect("plan");
        let out = plan.run(tvec!(input.clone().into_tvalue())).expect("run");
        out[0].to_plain_array_view::<f32>().expect("f32").iter().copied().collect()
    };
    let reference = run(model.clone());

    let mut rewritten = model;
    let report = rewrite(&mut rewritten).expect("rewrite");
    let computes: Vec<LayerCompute> = report.layers.iter().map(|l| l.compute).collect();
    assert_eq!(
        computes,
        [LayerCompute::F32(KeptF32::First), LayerCompute::Int8PerRow, LayerCompute::F32(KeptF32::Last)]
    );
    let ours = run(rewritten);
    let dot: f32 = ours.iter().zip(&reference).map(|(a, b)| a * b).sum();
    let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt();
    let cosine = dot / (norm(&ours) * norm(&reference));
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
