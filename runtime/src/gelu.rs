//! `Gelu`: exact GELU, `x / 2 * (1 + erf(x / sqrt 2))`, in one pass over the
//! tensor, put in place of tract's `GeluExact` before codegen.
//!
//! tract 0.23.9's `GeluExact` makes three passes over every 1024 elements
//! (scale into a scratch buffer, its SIMD erf, then the product), 7.3-7.9% of
//! MobileCLIP2-S0's frame (`docs/performance.md`). This op computes each
//! element in registers with the same erf (Abramowitz & Stegun 7.1.28, the
//! polynomial tract's kernels use, error under 3e-7), in explicit vectors of
//! the instruction set chosen at run time (`pulp`), and spreads large tensors
//! over the encoder's threads. The NNEF copy of a bundle keeps tract's op: the
//! rewrite runs at load.

use tract_core::internal::*;
use tract_core::ops::element_wise::{ElementWiseMiniOp, ElementWiseOp};
use tract_core::ops::nn::GeluExact;
use tract_linalg::multithread::par_chunks_mut;

/// Elements per work item when a tensor is spread over threads.
const CHUNK: usize = 4096;

/// Exact GELU on f32 tensors, one pass (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Gelu;

impl ElementWiseMiniOp for Gelu {
    fn name(&self) -> String {
        "ClipEdgeGelu".into()
    }

    fn eval_in_place(&self, t: &mut Tensor, _out_dt: Option<DatumType>) -> TractResult<()> {
        let mut view = t.try_as_plain_ram_mut()?;
        let xs = view.as_slice_mut::<f32>()?;
        let len = xs.len();
        if len <= CHUNK {
            gelu_slice(xs);
            return Ok(());
        }
        // Whole chunks as rows; the remainder, if any, runs on this thread.
        let whole = len - len % CHUNK;
        let (head, tail) = xs.split_at_mut(whole);
        par_chunks_mut(head, CHUNK, whole, |_, chunk| {
            gelu_slice(chunk);
            Ok(())
        })?;
        gelu_slice(tail);
        Ok(())
    }

    fn cost_per_element(&self, dt: DatumType) -> TVec<(Cost, usize)> {
        tvec!((Cost::FMA(dt), 10), (Cost::Div(dt), 1))
    }
}

/// erf by Abramowitz & Stegun 7.1.28: tract's `serf` coefficients as written
/// there (f32 rounds them the same way).
#[allow(clippy::excessive_precision)]
const ERF: [f32; 6] = [0.0705230784, 0.0422820123, 0.0092705272, 0.0001520143, 0.0002765672, 0.0000430638];

/// Exact GELU of every element of `xs`, in place, on the calling thread: whole
/// vectors of the widest instruction set the CPU has (`pulp`, chosen at run
/// time), the rest through the same code's one-lane build. The int8
/// rescaling ops apply it to each run of their output as they write it.
pub(crate) fn gelu_slice(xs: &mut [f32]) {
    pulp::Arch::new().dispatch(GeluSlice(xs));
}

/// The argument of [`gelu_slice`], run for one instruction set.
struct GeluSlice<'a>(&'a mut [f32]);

impl pulp::WithSimd for GeluSlice<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let lanes = S::F32_LANES;
        let whole = self.0.len() / lanes * lanes;
        let (head, tail) = self.0.split_at_mut(whole);
        let [half, one, scale, sign] =
            [0.5, 1.0, std::f32::consts::FRAC_1_SQRT_2, -0.0].map(|v| simd.splat_f32s(v));
        let a = ERF.map(|v| simd.splat_f32s(v));
        for chunk in head.chunks_exact_mut(lanes) {
            let v: S::f32s = bytemuck::pod_read_unaligned(bytemuck::cast_slice(chunk));
            // erf(x / sqrt 2), lane by lane.
            let x = simd.mul_f32s(v, scale);
            let abs = simd.abs_f32s(x);
            let mut y = simd.mul_f32s(a[5], abs);
            for &c in a[..5].iter().rev() {
                y = simd.mul_f32s(simd.add_f32s(c, y), abs);
            }
            let y1 = simd.add_f32s(y, one);
            let y2 = simd.mul_f32s(y1, y1);
            let y4 = simd.mul_f32s(y2, y2);
            let y8 = simd.mul_f32s(y4, y4);
            let e = simd.sub_f32s(one, simd.div_f32s(one, simd.mul_f32s(y8, y8)));
            let erf = simd.or_f32s(e, simd.and_f32s(x, sign));
            let g = simd.mul_f32s(simd.mul_f32s(v, half), simd.add_f32s(one, erf));
            chunk.copy_from_slice(bytemuck::cast_slice(std::slice::from_ref(&g)));
        }
        if !tail.is_empty() {
            GeluSlice(tail).with_simd(pulp::Scalar::new());
        }
    }
}

/// Replaces every f32 `GeluExact` of `model` with [`Gelu`]; returns how many.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    let mut count = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(op) = node.op_as::<ElementWiseOp>() else { continue };
        if !op.0.is::<GeluExact>() || model.outlet_fact(node.inputs[0])?.datum_type != f32::datum_type() {
            continue;
        }
        let new = ElementWiseOp(Box::new(Gelu), op.1);
        let inputs = [node.inputs[0]];
        TypedModelPatch::replace_single_op(model, node, &inputs, new)?.apply(model)?;
        count += 1;
    }
    if count > 0 {
        model.compact()?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(op: Box<dyn ElementWiseMiniOp>, xs: &[f32]) -> Vec<f32> {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([xs.len()])).expect("source");
        let y = model.wire_node("gelu", ElementWiseOp(op, None), &[x]).expect("gelu");
        model.select_output_outlets(&y).expect("outputs");
        let plan = model.into_optimized().expect("optimise").into_runnable().expect("plan");
        let out = plan.run(tvec![tensor1(xs).into()]).expect("run");
        out[0].try_as_plain_ram().expect("ram").as_slice::<f32>().expect("f32").to_vec()
    }

    #[test]
    fn matches_tracts_exact_gelu_and_the_definition() {
        // Lengths below, at and above the chunk, with a remainder: every path.
        for len in [1, 17, CHUNK, 3 * CHUNK + 5] {
            let xs: Vec<f32> = (0..len).map(|i| (i as f32 * 0.6180339).sin() * 7.0).collect();
            let ours = run(Box::new(Gelu), &xs);
            let tracts = run(Box::new(GeluExact {}), &xs);
            for ((x, a), b) in xs.iter().zip(&ours).zip(&tracts) {
                assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "x {x}: ours {a}, tract {b}");
                let exact = 0.5 * f64::from(*x) * (1.0 + libm_erf(f64::from(*x) / std::f64::consts::SQRT_2));
                assert!((f64::from(*a) - exact).abs() <= 2e-6 * (1.0 + exact.abs()), "x {x}: {a} vs {exact}");
            }
        }
    }

    /// The vector path (whatever this CPU dispatches to) and the scalar build
    /// (armv7, x86 without AVX2) agree, special values included; -inf gives
    /// NaN, as in tract's `GeluExact` (-inf times an erf of -1 plus 1).
    #[test]
    fn the_scalar_build_and_special_values() {
        let mut xs: Vec<f32> =
            vec![0.0, -0.0, f32::INFINITY, f32::MAX, -f32::MAX, 1e-40, -1e-40, 1e20, -1e20];
        xs.extend((0..100).map(|i| (i as f32 - 50.0) * 0.37));
        let mut vector = xs.clone();
        gelu_slice(&mut vector);
        let mut scalar = xs.clone();
        pulp::WithSimd::with_simd(GeluSlice(&mut scalar), pulp::Scalar::new());
        for ((x, a), b) in xs.iter().zip(&vector).zip(&scalar) {
            assert!(
                (a - b).abs() <= 1e-6 * (1.0 + b.abs()) || a.to_bits() == b.to_bits(),
                "x {x}: {a} vs {b}"
            );
        }
        assert_eq!(vector[2], f32::INFINITY);
        assert!(vector[1] == 0.0 && vector[0] == 0.0);
        assert!(vector[6].abs() < 1e-39 && vector[8] == 0.0);
        let mut neg_inf = [f32::NEG_INFINITY];
        gelu_slice(&mut neg_inf);
        assert!(neg_inf[0].is_nan());
    }

    /// erf in f64, to about 1e-15: its Taylor series below 2.5, the continued
    /// fraction of erfc beyond.
    fn libm_erf(x: f64) -> f64 {
        let a = x.abs();
        let r = if a < 2.5 {
            // erf(a) = 2/sqrt(pi) * sum (-1)^n a^(2n+1) / (n! (2n+1))
            let (mut term, mut sum, mut n) = (a, a, 0.0f64);
            while term.abs() > 1e-17 * sum.abs() {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(a) = exp(-a^2)/sqrt(pi) * 1/(a + 1/2/(a + 1/(a + 3/2/(a + ...))))
            let mut f = a;
            for k in (1..60).rev() {
                f = a + f64::from(k) / 2.0 / f;
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
        };
        r.copysign(x)
    }

    #[test]
    fn the_rewrite_replaces_every_f32_gelu() {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([8])).expect("source");
        let g = model.wire_node("g1", ElementWiseOp(Box::new(GeluExact {}), None), &[x]).expect("g1");
        let g = model.wire_node("g2", ElementWiseOp(Box::new(GeluExact {}), None), &g).expect("g2");
        model.select_output_outlets(&g).expect("outputs");
        rewrite(&mut model).expect("rewrite");
        let ops: Vec<_> = model.nodes().iter().filter_map(|n| n.op_as::<ElementWiseOp>()).collect();
        assert_eq!(ops.len(), 2);
        assert!(ops.iter().all(|op| op.0.is::<Gelu>()));
    }
}
