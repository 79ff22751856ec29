//! An upstream-ready reproduction for tract (tract-core only, plus clip-edge's
//! op for comparison): one depthwise convolution (`group == C`, NCHW, f32,
//! SAME padding) at the plane sizes, strides and kernels of MobileCLIP2-S0 and
//! EfficientNet-Lite0, timed through tract's own optimised plan and, on the
//! same model, after clip-edge's rewrite (`runtime/src/depthwise/`). Prints
//! milliseconds and GFLOP/s (2 x C x OH x OW x KH x KW per run) for each.
//!
//!   cargo run --release -p clip-edge-tools --example repro_depthwise
//!
//! Expected: tract's rate roughly flat across rows; seen (docs/upstream-tract.md
//! item 3): its SIMD kernel covers long stride-1 rows of the centre zone only,
//! so stride 2 and 16 / 8 px planes fall to scalar loops.

use std::time::Instant;

use tract_core::internal::*;
use tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
use tract_core::ops::nn::DataFormat;

/// (channels, plane side, kernel side, stride)
const CASES: [(usize, usize, usize, usize); 13] = [
    (64, 64, 7, 1),
    (128, 32, 7, 1),
    (256, 16, 7, 1),
    (512, 8, 7, 1),
    (128, 64, 7, 2),
    (256, 64, 3, 1),
    (256, 32, 3, 1),
    (512, 16, 3, 1),
    (1024, 8, 3, 1),
    (256, 64, 3, 2),
    (512, 32, 3, 2),
    (672, 14, 5, 1),
    (1152, 7, 5, 1),
];

fn model(c: usize, side: usize, k: usize, stride: usize) -> TractResult<TypedModel> {
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([1, c, side, side]))?;
    let kernel: Vec<f32> = (0..c * k * k).map(|i| ((i % 13) as f32 - 6.0) / 16.0).collect();
    let kernel = model.add_const("kernel", tensor1(&kernel).into_shape(&[c, 1, k, k])?)?;
    let bias = model.add_const("bias", tensor1(&vec![0.5f32; c]))?;
    let conv = Conv {
        pool_spec: PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec![k, k],
            padding: PaddingSpec::SameUpper,
            dilations: None,
            strides: Some(tvec![stride, stride]),
            input_channels: c,
            output_channels: c,
        },
        kernel_fmt: KernelFormat::OIHW,
        group: c,
        q_params: None,
    };
    let y = model.wire_node("depthwise", conv, &[x, kernel, bias])?;
    model.select_output_outlets(&y)?;
    Ok(model)
}

/// Median milliseconds of `runs` runs of the optimised plan.
fn time(model: TypedModel, input: &Tensor, runs: usize) -> TractResult<f64> {
    let plan = model.into_optimized()?.into_runnable()?;
    let input: TValue = input.clone().into();
    let mut times = Vec::with_capacity(runs + 3);
    for _ in 0..runs + 3 {
        let t = Instant::now();
        plan.run(tvec![input.clone()])?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut times = times.split_off(3);
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn main() -> TractResult<()> {
    let runs = 50;
    println!("depthwise conv, NCHW f32, SAME padding, one thread, median of {runs} runs");
    println!(
        "| C | plane | kernel | stride | tract ms | tract GFLOP/s | clip-edge op ms | clip-edge GFLOP/s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (c, side, k, stride) in CASES {
        let input = Tensor::from_shape(
            &[1, c, side, side],
            &(0..c * side * side).map(|i| (i % 7) as f32 / 7.0).collect::<Vec<_>>(),
        )?;
        let out = side.div_ceil(stride);
        let gflop = 2.0 * (c * out * out * k * k) as f64 / 1e9;
        let tract_ms = time(model(c, side, k, stride)?, &input, runs)?;
        let mut ours = model(c, side, k, stride)?.into_decluttered()?;
        let replaced = clip_edge_runtime::depthwise::rewrite(&mut ours)?;
        let ours_ms = time(ours, &input, runs)?;
        let note = if replaced == 0 { " (tract's op kept)" } else { "" };
        println!(
            "| {c} | {side}x{side} | {k}x{k} | {stride} | {tract_ms:.3} | {:.1} | {ours_ms:.3}{note} | {:.1} |",
            gflop / tract_ms * 1e3,
            gflop / ours_ms * 1e3
        );
    }
    Ok(())
}
