//! Probe for issue 8's start-up item: how long an image encoder takes to come
//! up from ONNX (parse, type, optimise) against tract's NNEF form written from
//! the same decluttered model. Not part of the product; a measurement harness.
//!
//!   cargo run -p clip-edge-tools --example nnef_probe -- models/default/image_encoder_f32.onnx 64
//!
//! The second argument is the input size. Models with ops that have no NNEF
//! serializer in tract 0.23.9 (GELU as `GeluExact`: ViT-B-32, MobileCLIP2-S0)
//! fail at the write, with the op named.

use std::time::Instant;

use anyhow::Context;
use tract_onnx::prelude::*;

/// Loads the model both ways and prints the timings.
fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).context("usage: nnef_probe MODEL.onnx [SIZE]")?;
    let size: usize = std::env::args().nth(2).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let bytes = std::fs::read(&path)?;
    let t0 = Instant::now();
    let mut model = tract_onnx::onnx().model_for_read(&mut bytes.as_slice())?;
    model.set_input_fact(0, f32::fact([1, 3, size, size]).into())?;
    let typed = model.into_typed()?;
    let parse = t0.elapsed();
    let t1 = Instant::now();
    let opt = typed.clone().into_optimized()?;
    let plan = opt.into_runnable()?;
    let optimise = t1.elapsed();
    let x = Tensor::zero::<f32>(&[1, 3, size, size])?;
    let t2 = Instant::now();
    plan.run(tvec![x.clone().into()])?;
    println!("onnx: parse+type {:?}, optimise {:?}, first run {:?}", parse, optimise, t2.elapsed());

    let decl = typed.into_decluttered()?;
    let nnef = tract_nnef::nnef();
    let mut tar = Vec::new();
    nnef.write_to_tar(&decl, &mut tar)?;
    println!("nnef tar: {} bytes", tar.len());
    let t3 = Instant::now();
    let loaded = nnef.model_for_read(&mut tar.as_slice())?;
    let read = t3.elapsed();
    let t4 = Instant::now();
    let plan2 = loaded.into_optimized()?.into_runnable()?;
    let optimise2 = t4.elapsed();
    let t5 = Instant::now();
    let out = plan2.run(tvec![x.into()])?;
    println!(
        "nnef: read {:?}, optimise {:?}, first run {:?}, output {:?}",
        read,
        optimise2,
        t5.elapsed(),
        out[0].shape()
    );
    Ok(())
}
