//! An upstream-ready reproduction for tract (uses tract-core only): one
//! i8 x i8 -> i32 product, m = 4096 (pixels), k = 64, n = 192 (channels), the
//! shape of MobileCLIP2-S0's first 1x1 convolutions, timed with the output
//! laid out channels-first (`[192, 4096]`, NCHW) and channels-last
//! (`[4096, 192]`), under each of tract's two x86 VNNI kernels.
//!
//!   cargo run --release -p clip-edge-tools --example repro_int8_tile
//!   TRACT_AVX512_FMA_UNITS=1 cargo run --release -p clip-edge-tools --example repro_int8_tile
//!
//! tract's `EinSumMatMul::codegen` makes the larger output side m. Its 16x16
//! AVX-512 VNNI kernel keeps rows of the output tile in registers, so with
//! m the contiguous axis (NCHW) its stores are strided. Measured on a Zen 4
//! (AVX-512 VNNI), 2026-12-04: 2.06 ms channels-first against 0.36 ms
//! channels-last, while tract's own f32 product of the same shape (printed
//! last) takes 0.63-0.70 ms either way. The 8x8 kernel (`TRACT_AVX512_FMA_UNITS=1`) stores columns and
//! prefers the other layout. Which one tract picks comes from a timing probe
//! that, on this shared host, did not give the same verdict every run.

use std::time::Instant;

use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;

const M: usize = 4096;
const K: usize = 64;
const N: usize = 192;

/// A model `x[k, m] . w[n, k]` with the output's axes in `out` order.
fn product(dt: DatumType, acc: DatumType, out: &str) -> TractResult<TypedModel> {
    let mut model = TypedModel::default();
    let x = model.add_source("x", dt.fact([K, M]))?;
    let w = Tensor::zero_dt(dt, &[N, K])?;
    let w = model.add_const("w", w)?;
    let axes: AxesMapping = format!("km,nk->{out}").parse()?;
    let y = model.wire_node("product", EinSum::new(axes, acc), &[x, w])?;
    model.select_output_outlets(&y)?;
    Ok(model)
}

/// Median milliseconds of `runs` runs, and the kernel tract chose.
fn time(model: TypedModel, dt: DatumType, runs: usize) -> TractResult<(f64, String)> {
    let optimised = model.into_optimized()?;
    let kernel = optimised
        .nodes()
        .iter()
        .flat_map(|n| n.op().info().unwrap_or_default())
        .find(|i| i.starts_with("Mult:"))
        .unwrap_or_default();
    let plan = optimised.into_runnable()?;
    let input: TValue = Tensor::zero_dt(dt, &[K, M])?.into();
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs + 3 {
        let t = Instant::now();
        plan.run(tvec![input.clone()])?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut times = times.split_off(3);
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], kernel))
}

fn main() -> TractResult<()> {
    let runs = 50;
    println!("m={M} k={K} n={N}, one thread, median of {runs} runs");
    for (dt, acc) in [(i8::datum_type(), i32::datum_type()), (f32::datum_type(), f32::datum_type())] {
        for (layout, out) in [("channels-first [n, m]", "nm"), ("channels-last  [m, n]", "mn")] {
            let (ms, kernel) = time(product(dt, acc, out)?, dt, runs)?;
            println!("{dt:?} {layout}: {ms:7.3} ms   {kernel}");
        }
    }
    Ok(())
}
