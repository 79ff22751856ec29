//! Where a bundle's image encoder spends its time in tract: each node of the
//! optimised plan timed over a number of runs, summed per operator type and
//! listed for the heaviest nodes. A measurement harness for
//! `docs/performance.md`, not part of the product.
//!
//!   cargo run --release -p clip-edge-tools --example profile -- models/emoji f32 50 [THREADS]
//!
//! `PROFILE_JSON=FILE` also writes every node's time (tools/bench/op_profile.py
//! reads it), `PROFILE_DUMP=1` prints the optimised plan, `PROFILE_TOP=N` the
//! N heaviest nodes, `PROFILE_TRACT_DEPTHWISE=1` keeps tract's own depthwise
//! convolutions, `PROFILE_TRACT_GELU=1` tract's exact GELU and
//! `PROFILE_TRACT_CONV=1` tract's dense convolutions (for comparison with
//! clip-edge's).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use clip_edge_runtime::encoder::typed_onnx;
use clip_edge_runtime::optimise::{optimise, Rewrites};
use clip_edge_runtime::{Bundle, Precision};
use tract_onnx::prelude::*;

/// Loads the encoder, runs it, prints the profile.
fn main() -> anyhow::Result<()> {
    env_logger::init();
    let mut args = std::env::args().skip(1);
    let dir = args.next().context("usage: profile BUNDLE [PRECISION] [RUNS] [THREADS]")?;
    let precision: Option<Precision> =
        args.next().map(|p| p.parse()).transpose().map_err(anyhow::Error::msg)?;
    let runs: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(30);
    let threads: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(1);
    let executor = if threads > 1 {
        tract_linalg::multithread::Executor::multithread(threads)
    } else {
        tract_linalg::multithread::Executor::SingleThread
    };
    // On one of the pool's threads, as the encoder runs its plan (a caller
    // outside the pool would wake a pool thread for each parallel node and
    // be woken at its end, which `clip-edge bench` does not measure).
    let go = || {
        tract_linalg::multithread::multithread_tract_scope(executor.clone(), || {
            run(&dir, precision, runs, threads)
        })
    };
    match &executor {
        tract_linalg::multithread::Executor::MultiThread(pool) => pool.install(go),
        _ => go(),
    }
}

fn run(dir: &str, precision: Option<Precision>, runs: usize, threads: usize) -> anyhow::Result<()> {
    let bundle = Bundle::load(dir)?;
    let file = bundle.encoder(precision)?;
    let bytes = file.read_verified()?;
    let rewrites = Rewrites {
        depthwise: std::env::var_os("PROFILE_TRACT_DEPTHWISE").is_none(),
        gelu: std::env::var_os("PROFILE_TRACT_GELU").is_none(),
        conv: std::env::var_os("PROFILE_TRACT_CONV").is_none(),
    };
    let (optimised, int8) = optimise(typed_onnx(&bundle, file, bytes)?, file.precision, rewrites)?;
    if let Some(r) = &int8 {
        println!("int8 rewrite: {r:?}");
    }
    if std::env::var_os("PROFILE_DUMP").is_some() {
        for n in optimised.nodes() {
            println!("{:>4} {:<24} {:<40} {:?}", n.id, n.op().name(), n.name, n.op().info()?);
        }
    }
    let plan = optimised.into_runnable()?;
    let mut state = TypedSimpleState::new(&plan)?;
    let size = bundle.preprocess.size as usize;
    // A fixed pattern in [-1, 1], like a normalised image: an all-zero input
    // drives some towers into subnormal activations, which Intel cores run
    // several times slower and would misstate the profile (seen on Sapphire Rapids).
    let pixels: Vec<f32> = (0..3 * size * size).map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0).collect();
    let input: TValue = Tensor::from_shape(&[1, 3, size, size], &pixels)?.into();
    for _ in 0..3 {
        state.run(tvec![input.clone()])?;
    }
    let mut per_node: HashMap<usize, (String, String, Duration)> = HashMap::new();
    let t0 = Instant::now();
    for _ in 0..runs {
        state.run_plan_with_eval(tvec![input.clone()], |session, op_state, node, inputs| {
            let t = Instant::now();
            let out = tract_core::plan::eval(session, op_state, node, inputs);
            let e = per_node
                .entry(node.id)
                .or_insert_with(|| (node.op().name().to_string(), node.name.clone(), Duration::ZERO));
            e.2 += t.elapsed();
            out
        })?;
    }
    let wall = t0.elapsed() / runs as u32;
    let mut per_op: HashMap<String, (usize, Duration)> = HashMap::new();
    for (op, _, d) in per_node.values() {
        let e = per_op.entry(op.clone()).or_default();
        e.0 += 1;
        e.1 += *d / runs as u32;
    }
    let total: Duration = per_op.values().map(|(_, d)| *d).sum();
    println!(
        "{} ({}, {threads} thread(s)), {} nodes, {runs} runs: {:.2} ms per run ({:.2} ms inside nodes)",
        bundle.name,
        file.precision,
        plan.model().nodes().len(),
        wall.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3
    );
    let mut ops: Vec<_> = per_op.into_iter().collect();
    ops.sort_by_key(|(_, (_, d))| std::cmp::Reverse(*d));
    println!("| operator | nodes | ms per run | share |\n|---|---|---|---|");
    for (op, (n, d)) in &ops {
        let share = 100.0 * d.as_secs_f64() / total.as_secs_f64();
        if share >= 0.5 {
            println!("| {op} | {n} | {:.3} | {share:.1}% |", d.as_secs_f64() * 1e3);
        }
    }
    let mut nodes: Vec<_> = per_node.into_values().collect();
    nodes.sort_by_key(|(_, _, d)| std::cmp::Reverse(*d));
    if let Some(path) = std::env::var_os("PROFILE_JSON") {
        // Every node's time per run, for tools/bench/op_profile.py.
        let rows: Vec<serde_json::Value> = nodes
            .iter()
            .map(|(op, name, d)| serde_json::json!({"op": op, "name": name, "ms": d.as_secs_f64() * 1e3 / runs as f64}))
            .collect();
        let report = serde_json::json!({"bundle": bundle.name, "precision": file.precision, "threads": threads,
            "runs": runs, "wall_ms": wall.as_secs_f64() * 1e3, "nodes": rows});
        std::fs::write(&path, report.to_string())?;
    }
    println!("heaviest nodes:");
    for (op, name, d) in
        nodes.iter().take(std::env::var("PROFILE_TOP").ok().and_then(|v| v.parse().ok()).unwrap_or(8))
    {
        println!("  {:>7.3} ms  {op:<14} {name}", d.as_secs_f64() * 1e3 / runs as f64);
    }
    Ok(())
}
