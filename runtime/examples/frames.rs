//! Encodes one fixed synthetic frame a given number of times with a bundle's
//! image encoder, on one thread, and prints the timing, tract's matrix
//! kernels and, for `int8-compute`, the multiply-accumulates of the weighted
//! layers. A measurement harness, not part of the product: run under an
//! instruction-counting emulator with FRAMES=1 and FRAMES=N, the difference
//! divided by N-1 is the cost of one frame without the model's load
//! (`tools/arm/count_instructions.sh`).
//!
//!   cargo run --release -p clip-edge-runtime --example frames -- models/emoji int8-compute 6

use std::time::Instant;

use clip_edge_runtime::encoder::ms;
use clip_edge_runtime::int8::LayerCompute;
use clip_edge_runtime::{Bundle, ImageEncoder, Precision};
use image::{Rgb, RgbImage};

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Parses the arguments, loads, encodes, reports.
fn main() -> Res<()> {
    let usage = "usage: frames BUNDLE PRECISION FRAMES";
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or(usage)?;
    let precision: Precision = args.next().ok_or(usage)?.parse()?;
    let frames: usize = args.next().ok_or(usage)?.parse()?;

    let t0 = Instant::now();
    let bundle = Bundle::load(&dir)?;
    let mut encoder = ImageEncoder::load(&bundle, Some(precision))?;
    let load = t0.elapsed();
    let size = bundle.preprocess.size;
    // A smooth colour gradient at the model's input size: every frame is the
    // same, so each one costs the same instructions.
    let frame = RgbImage::from_fn(size, size, |x, y| {
        let scale = |v: u32| u8::try_from(v * 255 / size.max(1)).unwrap_or(u8::MAX);
        Rgb([scale(x), scale(y), scale((x + y) / 2)])
    });

    println!(
        "{} {} {}x{}: load {:.1} ms, threads {}",
        bundle.name,
        precision.as_str(),
        size,
        size,
        ms(load),
        encoder.threads()
    );
    for (name, acc) in encoder.matmul_kernels() {
        println!("kernel {name} ({acc:?})");
    }
    if let Some(report) = encoder.int8_report() {
        let total: u64 = report.layers.iter().map(|l| l.macs).sum();
        let f32_macs: u64 =
            report.layers.iter().filter(|l| matches!(l.compute, LayerCompute::F32(_))).map(|l| l.macs).sum();
        println!(
            "weighted layers {}, int8 {}, MACs per frame {} (int8 {}, f32 {}), int8 share {:.4}",
            report.layers.len(),
            report.int8_layers(),
            total,
            total - f32_macs,
            f32_macs,
            report.int8_mac_share()
        );
    }

    let mut checksum = 0.0f64;
    let t1 = Instant::now();
    for i in 0..frames {
        let t = Instant::now();
        let embedding = encoder.encode(&frame)?;
        checksum += embedding.as_slice().iter().map(|&v| f64::from(v)).sum::<f64>();
        println!("frame {i}: {:.1} ms", ms(t.elapsed()));
    }
    let total = t1.elapsed();
    println!(
        "{frames} frames: {:.1} ms, {:.1} ms per frame, checksum {checksum:.6}",
        ms(total),
        ms(total) / frames.max(1) as f64
    );
    Ok(())
}
