//! How a typed image encoder becomes the plan that runs: tract's declutter
//! and optimisation, with clip-edge's own rewrites between the two.

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
    typed.declutter()?;
    if rewrites.depthwise {
        crate::depthwise::rewrite(&mut typed)?;
    }
    let report = match precision {
        Precision::Int8Compute => Some(crate::int8::rewrite(&mut typed)?),
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
    typed.optimize()?;
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
