//! `clip-edge bundle nnef`.

use std::fmt::Display;
use std::process::ExitCode;

use anyhow::Context;
use clip_edge_runtime::{LoadTiming, Precision};
use clip_edge_tools::nnef_convert::{convert_bundle, Converted, Outcome};
use clip_edge_tools::report::{ms, Format};
use serde::Serialize;

use crate::cli::BundleNnefArgs;

/// What happened to one encoder of the bundle.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum EncoderRow {
    /// An NNEF copy was written, verified and recorded.
    Converted {
        precision: Precision,
        nnef: String,
        nnef_bytes: usize,
        onnx_bytes: usize,
        min_cosine: f32,
        max_abs: f32,
        onnx_load_ms: f64,
        nnef_load_ms: f64,
        onnx_parse_ms: f64,
        nnef_parse_ms: f64,
        onnx_optimise_ms: f64,
        nnef_optimise_ms: f64,
        onnx_read_ms: f64,
        nnef_read_ms: f64,
    },
    /// No copy was made.
    Skipped { precision: Precision, reason: String },
}

impl EncoderRow {
    fn of(o: &Outcome) -> EncoderRow {
        match o {
            Outcome::Converted(c) => converted(c),
            Outcome::Skipped { precision, reason } => {
                EncoderRow::Skipped { precision: *precision, reason: reason.clone() }
            }
        }
    }
}

fn converted(c: &Converted) -> EncoderRow {
    let (o, n): (&LoadTiming, &LoadTiming) = (&c.onnx_load, &c.nnef_load);
    EncoderRow::Converted {
        precision: c.precision,
        nnef: c.nnef.path.display().to_string(),
        nnef_bytes: c.nnef_bytes,
        onnx_bytes: c.onnx_bytes,
        min_cosine: c.min_cosine,
        max_abs: c.max_abs,
        onnx_load_ms: ms(o.total()),
        nnef_load_ms: ms(n.total()),
        onnx_parse_ms: ms(o.parse),
        nnef_parse_ms: ms(n.parse),
        onnx_optimise_ms: ms(o.optimise),
        nnef_optimise_ms: ms(n.optimise),
        onnx_read_ms: ms(o.read),
        nnef_read_ms: ms(n.read),
    }
}

/// The report of `clip-edge bundle nnef`.
#[derive(Debug, Serialize)]
pub struct NnefReport {
    bundle: String,
    encoders: Vec<EncoderRow>,
}

impl Display for NnefReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for row in &self.encoders {
            match row {
                EncoderRow::Converted {
                    precision,
                    nnef,
                    nnef_bytes,
                    onnx_bytes,
                    min_cosine,
                    max_abs,
                    onnx_load_ms,
                    nnef_load_ms,
                    onnx_parse_ms,
                    nnef_parse_ms,
                    onnx_optimise_ms,
                    nnef_optimise_ms,
                    onnx_read_ms,
                    nnef_read_ms,
                } => writeln!(
                    f,
                    "{precision}: wrote {nnef} ({nnef_bytes} bytes; ONNX {onnx_bytes} bytes), min cosine to ONNX \
                     {min_cosine:.7}, max abs {max_abs:.2e}; cold start {onnx_load_ms:.0} ms from ONNX (read \
                     {onnx_read_ms:.0}, parse {onnx_parse_ms:.0}, optimise {onnx_optimise_ms:.0}) -> {nnef_load_ms:.0} \
                     ms from NNEF (read {nnef_read_ms:.0}, parse {nnef_parse_ms:.0}, optimise {nnef_optimise_ms:.0})"
                )?,
                EncoderRow::Skipped { precision, reason } => writeln!(f, "{precision}: skipped, {reason}")?,
            }
        }
        Ok(())
    }
}

/// Adds the NNEF form of the bundle's encoders and reports sizes and cold starts.
pub fn nnef(a: &BundleNnefArgs) -> anyhow::Result<ExitCode> {
    let outcomes = convert_bundle(&a.bundle, &a.precision, a.max_growth)
        .with_context(|| format!("no NNEF form added to bundle {}", a.bundle.display()))?;
    let report = NnefReport {
        bundle: a.bundle.display().to_string(),
        encoders: outcomes.iter().map(EncoderRow::of).collect(),
    };
    Format::from_flag(a.json).print(&report)?;
    Ok(ExitCode::SUCCESS)
}
