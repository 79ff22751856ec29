//! An upstream-ready reproduction for tract (tract-core only): the 3x3
//! convolutions of a small edge CNN (clip-edge's default model: NCHW, f32, pad 1,
//! stride 1 and 2, 24-320 channels on 64-4 px planes), timed through tract's own
//! optimised plan, beside a plain matrix product of the same m x k x n
//! (`m` output channels, `k` = input channels x 9, `n` output pixels) with the
//! same constant weights, so the cost of the convolution's im2col shows apart
//! from the product kernel's own rate. Prints ms and GFLOP/s (2 m k n per run),
//! and the same convolution after clip-edge's rewrite (`runtime/src/conv/`:
//! the only column that is not tract's own; it leaves the 3-channel stem to
//! tract, so that row times tract's convolution again).
//!
//!   cargo run --release -p clip-edge-tools --example repro_conv3x3 [THREADS]
//!
//! ONNX Runtime on the same convolutions: `tools/bench/ort_conv3x3.py`.

use std::time::Instant;

use tract_core::internal::*;
use tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
use tract_core::ops::einsum::EinSum;
use tract_core::ops::nn::DataFormat;
use tract_linalg::multithread::{multithread_tract_scope, Executor};

/// (output channels, input channels, input plane side, stride): the default
/// model's 3x3 convolutions, one row per distinct shape.
const CASES: [(usize, usize, usize, usize); 9] = [
    (24, 3, 64, 1),
    (48, 24, 64, 2),
    (48, 48, 32, 1),
    (96, 48, 32, 2),
    (96, 96, 16, 1),
    (192, 96, 16, 2),
    (192, 192, 8, 1),
    (320, 192, 8, 2),
    (320, 320, 4, 1),
];

fn weights(len: usize) -> Vec<f32> {
    (0..len).map(|i| ((i % 13) as f32 - 6.0) / 64.0).collect()
}

fn conv(co: usize, ci: usize, side: usize, stride: usize) -> TractResult<TypedModel> {
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([1, ci, side, side]))?;
    let kernel = model.add_const("kernel", tensor1(&weights(co * ci * 9)).into_shape(&[co, ci, 3, 3])?)?;
    let bias = model.add_const("bias", tensor1(&vec![0.5f32; co]))?;
    let op = Conv {
        pool_spec: PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec![3, 3],
            padding: PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]),
            dilations: None,
            strides: Some(tvec![stride, stride]),
            input_channels: ci,
            output_channels: co,
        },
        kernel_fmt: KernelFormat::OIHW,
        group: 1,
        q_params: None,
    };
    let y = model.wire_node("conv", op, &[x, kernel, bias])?;
    model.select_output_outlets(&y)?;
    Ok(model)
}

fn matmul(m: usize, k: usize, n: usize) -> TractResult<TypedModel> {
    let mut model = TypedModel::default();
    let b = model.add_source("b", f32::fact([k, n]))?;
    let a = model.add_const("a", tensor1(&weights(m * k)).into_shape(&[m, k])?)?;
    let op = EinSum::new("mk,kn->mn".parse()?, f32::datum_type());
    let y = model.wire_node("matmul", op, &[a, b])?;
    model.select_output_outlets(&y)?;
    Ok(model)
}

/// Median milliseconds of `runs` runs of the optimised plan.
fn time(model: TypedModel, input: Tensor, runs: usize, executor: &Executor) -> TractResult<f64> {
    let plan = model.into_optimized()?.into_runnable()?;
    let input: TValue = input.into();
    let mut times = Vec::with_capacity(runs + 5);
    for _ in 0..runs + 5 {
        let t = Instant::now();
        multithread_tract_scope(executor.clone(), || plan.run(tvec![input.clone()]))?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut times = times.split_off(5);
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn main() -> TractResult<()> {
    let threads: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let executor = if threads == 1 { Executor::SingleThread } else { Executor::multithread(threads) };
    let runs = 200;
    println!("3x3 convolution (NCHW f32, pad 1) against a plain product of the same m x k x n, {threads} thread(s), median of {runs} runs");
    println!(
        "| co | ci | plane | stride | m x k x n | conv ms | conv GFLOP/s | product ms | product GFLOP/s | clip-edge ms | clip-edge GFLOP/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let (mut conv_total, mut mm_total, mut ours_total) = (0.0, 0.0, 0.0);
    for (co, ci, side, stride) in CASES {
        let out = side.div_ceil(stride);
        let (m, k, n) = (co, ci * 9, out * out);
        let flop = 2.0 * (m * k * n) as f64;
        let x = Tensor::from_shape(&[1, ci, side, side], &weights(ci * side * side))?;
        let c = time(conv(co, ci, side, stride)?, x.clone(), runs, &executor)?;
        let mut ours = conv(co, ci, side, stride)?;
        // Under 8 input channels the rewrite leaves tract's convolution: the column repeats it.
        let taken = clip_edge_runtime::conv::rewrite(&mut ours)? == 1;
        let host = clip_edge_runtime::conv::host_block(co).is_some();
        ensure!(taken || ci < 8 || !host, "clip-edge's rewrite did not take the convolution");
        let o = time(ours, x, runs, &executor)?;
        let b = Tensor::from_shape(&[k, n], &weights(k * n))?;
        let p = time(matmul(m, k, n)?, b, runs, &executor)?;
        conv_total += c;
        mm_total += p;
        ours_total += o;
        println!(
            "| {co} | {ci} | {side} | {stride} | {m}x{k}x{n} | {c:.3} | {:.1} | {p:.3} | {:.1} | {o:.3} | {:.1} |",
            flop / c / 1e6,
            flop / p / 1e6,
            flop / o / 1e6
        );
    }
    println!("| all | | | | | {conv_total:.3} | | {mm_total:.3} | | {ours_total:.3} | |");
    Ok(())
}
