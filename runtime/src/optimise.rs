//! How a typed image encoder becomes the plan that runs: tract's declutter
//! and optimisation, with clip-edge's own rewrites between the two.

use tract_core::ops::konst::Const;
use tract_core::optim::{Optimizer, OptimizerSession, TypedPass};
use tract_onnx::prelude::*;

use crate::bundle::Precision;

/// Which of clip-edge's own rewrites [`optimise`] applies (all by
/// default; benchmarks turn one off to measure it against tract's own op).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrites {
    /// Depthwise and channel-multiplier convolutions as [`crate::depthwise::DepthwiseConv`].
    pub depthwise: bool,
    /// Exact GELU as [`crate::gelu::Gelu`] (one pass instead of tract's three).
    pub gelu: bool,
    /// Dense convolutions that stay f32 (wider than 1x1, or strided 1x1) as
    /// [`crate::conv::DirectConv`], with a ReLU after them folded in.
    pub conv: bool,
}

impl Default for Rewrites {
    fn default() -> Self {
        Rewrites { depthwise: true, gelu: true, conv: true }
    }
}

impl Rewrites {
    /// None of them: tract's own operators throughout (the int8-compute
    /// rewrite, which defines that precision, still applies).
    pub const NONE: Rewrites = Rewrites { depthwise: false, gelu: false, conv: false };
}

/// Declutters and optimises a typed encoder for `precision`. Between the two
/// steps, the `rewrites` chosen (all by default) replace tract's ops by
/// clip-edge's: depthwise convolutions ([`crate::depthwise`]), exact GELU
/// ([`crate::gelu`]) and the dense convolutions that stay f32
/// ([`crate::conv`]); the int8-compute form is rewritten onto tract's int8
/// kernels ([`crate::int8::rewrite`]) whatever `rewrites` says, and its
/// report comes back with the model.
pub fn optimise(
    mut typed: TypedModel,
    precision: Precision,
    rewrites: Rewrites,
) -> TractResult<(TypedModel, Option<crate::int8::Int8Report>)> {
    prefer_wide_int8_tile();
    declutter(&mut typed)?;
    if precision == Precision::Int8Compute {
        // The kernels of grouped convolutions, and any stored weight that is
        // not a product's, in f32 now: the depthwise rewrite takes constants.
        if crate::dequant::materialise(&mut typed, feeds_a_product)? > 0 {
            prop_consts(&mut typed)?;
        }
    }
    if rewrites.depthwise {
        crate::depthwise::rewrite(&mut typed)?;
    }
    let report = match precision {
        Precision::Int8Compute => {
            let report = crate::int8::rewrite(&mut typed)?;
            // What the rewrite did not take (it folds the layers that stay f32).
            if crate::dequant::materialise(&mut typed, |_, _| false)? > 0 {
                prop_consts(&mut typed)?;
            }
            Some(report)
        }
        _ => None,
    };
    // After the int8 rewrite, which fuses a GELU into the product before it.
    if rewrites.gelu {
        crate::gelu::rewrite(&mut typed)?;
    }
    // After the int8 rewrite too: it takes the convolutions it quantises.
    if rewrites.conv {
        crate::conv::rewrite(&mut typed)?;
    }
    codegen(&mut typed)?;
    if report.is_some() {
        crate::int8::replace_im2col(&mut typed)?;
    }
    Ok((typed, report))
}

/// Asks tract for its wide int8 tile (`avx512vnni_mmm_i32_16x16`) on x86
/// cores with AVX-512 VNNI. tract chooses between that kernel and the ymm
/// `avx512vnni_mmm_i32_8x8` from a timing probe of the core's 512-bit ports,
/// run once per process; on this project's AMD EPYC build host (`cpu family
/// 26`, Zen 5) the probe's verdict changed between runs, and
/// the 16x16 ran the int8-compute form of the default model and ViT-B-32
/// 1.4-1.45x faster than the 8x8 (`docs/performance.md`). Installed as
/// tract's deployment-level value of the `TRACT_AVX512_FMA_UNITS` knob, so
/// that variable in the environment still decides; inert elsewhere.
fn prefer_wide_int8_tile() {
    #[cfg(target_arch = "x86_64")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if let Err(e) = tract_core::knobs::set_config_global("TRACT_AVX512_FMA_UNITS", "2") {
                log::warn!("could not ask tract for its 16x16 int8 kernel: {e:#}");
            }
        });
    }
}

/// How many bytes of new constants a pass of tract's optimiser may make
/// before the model is compacted: tract compacts only once a pass has no
/// patch left, so every constant a pass replaces (a kernel reshaped for
/// `EinSum`, a weight folded) would live on beside its replacement until the
/// whole pass is done, a second copy of the model's weights at the peak of
/// the load (MobileCLIP2-S0's int8-compute form: 92 -> 138 MB during
/// declutter).
const CONSTANT_BYTES_PER_COMPACTION: usize = 8 << 20;

/// One of tract's optimiser passes, cut short once its patches have made
/// [`CONSTANT_BYTES_PER_COMPACTION`] of new constants. The session then
/// compacts the model and runs the pass again from the start (what it does
/// anyway until a pass finds nothing). Patches that make no large constant
/// never cut a pass, so only passes that rewrite weights are rescanned, and
/// they reach the same fixed point as tract's.
#[derive(Clone)]
struct Compacting {
    pass: Box<dyn TypedPass>,
    made: usize,
    cut: bool,
}

impl std::fmt::Debug for Compacting {
    // tract names its patches after the pass.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.pass.fmt(f)
    }
}

impl TypedPass for Compacting {
    fn reset(&mut self) -> TractResult<()> {
        self.made = 0;
        self.cut = false;
        self.pass.reset()
    }

    fn next(
        &mut self,
        session: &mut OptimizerSession,
        model: &TypedModel,
    ) -> TractResult<Option<TypedModelPatch>> {
        if self.made >= CONSTANT_BYTES_PER_COMPACTION {
            self.cut = true;
            return Ok(None);
        }
        let patch = self.pass.next(session, model)?;
        if let Some(patch) = &patch {
            self.made += patch
                .model
                .nodes
                .iter()
                .filter_map(|n| n.op_as::<Const>())
                .map(|k| k.val().len() * k.val().datum_type().size_of())
                .sum::<usize>();
        }
        Ok(patch)
    }

    fn run_direct(&mut self, model: &mut TypedModel) -> TractResult<bool> {
        // Only once the pass has run out of patches, as tract would.
        if self.cut {
            return Ok(false);
        }
        self.pass.run_direct(model)
    }
}

fn compacting(optimizer: Optimizer) -> Optimizer {
    let mut optimizer = optimizer;
    optimizer.passes = std::mem::take(&mut optimizer.passes)
        .into_iter()
        .map(|pass| Box::new(Compacting { pass, made: 0, cut: false }) as Box<dyn TypedPass>)
        .collect();
    optimizer
}

/// Whether node `id`'s output reaches, through reshapes only, the weight
/// input of a matrix product or of an ungrouped convolution.
fn feeds_a_product(model: &TypedModel, id: usize) -> bool {
    let mut node = model.node(id);
    loop {
        let [succ] = node.outputs[0].successors.as_slice() else { return false };
        let next = model.node(succ.node);
        if next.op_is::<tract_core::ops::einsum::EinSum>() {
            return true;
        }
        if let Some(conv) = next.op_as::<tract_core::ops::cnn::Conv>() {
            return conv.group == 1 && succ.slot == 1;
        }
        if !next.op_is::<tract_core::ops::change_axes::AxisOp>() {
            return false;
        }
        node = next;
    }
}

/// tract's `TypedModel::prop_consts`, compacting as it goes.
fn prop_consts(model: &mut TypedModel) -> TractResult<()> {
    compacting(Optimizer::prop_consts()).session().optimize(model)
}

/// tract's `TypedModel::declutter`, compacting as it goes.
fn declutter(model: &mut TypedModel) -> TractResult<()> {
    compacting(Optimizer::declutter()).session().optimize(model)
}

/// tract's `TypedModel::optimize`, compacting as it goes.
fn codegen(model: &mut TypedModel) -> TractResult<()> {
    model.optimize_with_session(&mut compacting(Optimizer::codegen()).session())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tract_core::ops::math;

    use super::*;

    /// `x + 1 * 2 + 2 * 3 + ...`: 100 constant products for `PropConst` to fold.
    /// Values per constant: 256 KiB, so that the folds make enough bytes to cut the pass.
    const LEN: usize = 1 << 16;

    fn model() -> TypedModel {
        let mut m = TypedModel::default();
        let mut x = m.add_source("x", f32::fact([LEN])).expect("source");
        for i in 0..100 {
            let a = m.add_const(format!("a{i}"), tensor1(&vec![i as f32; LEN])).expect("const");
            let b = m.add_const(format!("b{i}"), tensor1(&vec![i as f32 + 1.0; LEN])).expect("const");
            // Added as a node, not wired: `wire_node` would fold it at once.
            let ab = m.add_node(format!("ab{i}"), math::mul(), tvec!(f32::fact([LEN]))).expect("mul");
            m.add_edge(a, InletId::new(ab, 0)).expect("edge");
            m.add_edge(b, InletId::new(ab, 1)).expect("edge");
            let ab = OutletId::new(ab, 0);
            x = m.wire_node(format!("add{i}"), math::add(), &[x, ab]).expect("add")[0];
        }
        m.select_output_outlets(&[x]).expect("output");
        m
    }

    /// A pass that records the largest model it was asked to patch.
    #[derive(Debug, Clone)]
    struct Widest(Box<dyn TypedPass>, Arc<AtomicUsize>);

    impl TypedPass for Widest {
        fn reset(&mut self) -> TractResult<()> {
            self.0.reset()
        }
        fn next(
            &mut self,
            session: &mut OptimizerSession,
            model: &TypedModel,
        ) -> TractResult<Option<TypedModelPatch>> {
            self.1.fetch_max(model.nodes.len(), Ordering::Relaxed);
            self.0.next(session, model)
        }
    }

    fn widest(compact: bool) -> (usize, TypedModel) {
        let seen = Arc::new(AtomicUsize::new(0));
        let mut optimizer = Optimizer::prop_consts();
        optimizer.passes = std::mem::take(&mut optimizer.passes)
            .into_iter()
            .map(|p| Box::new(Widest(p, seen.clone())) as Box<dyn TypedPass>)
            .collect();
        if compact {
            optimizer = compacting(optimizer);
        }
        let mut m = model();
        optimizer.session().optimize(&mut m).expect("prop consts");
        (seen.load(Ordering::Relaxed), m)
    }

    fn output(m: TypedModel) -> Vec<f32> {
        let plan = m.into_runnable().expect("plan");
        let y = plan.run(tvec!(tensor1(&vec![0.5f32; LEN]).into_tvalue())).expect("run");
        y[0].to_plain_array_view::<f32>().expect("f32").iter().copied().collect()
    }

    #[test]
    fn a_compacting_pass_drops_what_it_replaced_as_it_goes() {
        let (tracts, plain) = widest(false);
        let (ours, compacted) = widest(true);
        // tract's pass grows the model by one constant per fold until it is done.
        let start = model().nodes.len();
        assert!(tracts >= start + 99, "{tracts} nodes at most, from {start}");
        let per_cut = CONSTANT_BYTES_PER_COMPACTION / (LEN * 4);
        assert!(ours <= start + per_cut, "{ours} nodes at most, from {start}");
        let ops = |m: &TypedModel| {
            let mut ops: Vec<String> =
                m.nodes.iter().map(|n| format!("{} {}", n.name, n.op.name())).collect();
            ops.sort();
            ops
        };
        assert_eq!(ops(&compacted), ops(&plain));
        let want: f32 = 0.5 + (0..100).map(|i| (i * (i + 1)) as f32).sum::<f32>();
        assert_eq!(output(compacted), vec![want; LEN]);
        assert_eq!(output(plain), vec![want; LEN]);
    }

    #[test]
    fn the_compacting_declutter_and_codegen_give_tracts_plan() {
        let mut ours = model();
        declutter(&mut ours).expect("declutter");
        codegen(&mut ours).expect("codegen");
        let theirs = model().into_optimized().expect("optimise");
        assert_eq!(ours.nodes.len(), theirs.nodes.len());
        assert_eq!(output(ours), output(theirs));
    }
}
