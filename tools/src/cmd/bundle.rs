//! `clip-edge bundle nnef`.

use std::process::ExitCode;

use serde_json::json;

use crate::cli::BundleNnefArgs;
use crate::cmd::round_ms;
use crate::nnef_convert::{convert_bundle, Outcome};

/// Adds the NNEF form of the bundle's encoders and reports sizes and cold starts.
pub fn nnef(a: &BundleNnefArgs) -> anyhow::Result<ExitCode> {
    let outcomes = convert_bundle(&a.bundle, &a.precision, a.max_growth)?;
    let mut rows = Vec::new();
    for o in &outcomes {
        match o {
            Outcome::Converted(c) => {
                if !a.json {
                    println!(
                        "{}: wrote {} ({} bytes; ONNX {} bytes), min cosine to ONNX {:.7}, max abs {:.2e}; \
                         cold start {:.0} ms from ONNX (read {:.0}, parse {:.0}, optimise {:.0}) -> {:.0} ms from NNEF \
                         (read {:.0}, parse {:.0}, optimise {:.0})",
                        c.precision,
                        c.nnef.path.display(),
                        c.nnef_bytes,
                        c.onnx_bytes,
                        c.min_cosine,
                        c.max_abs,
                        round_ms(c.onnx_load.total()),
                        round_ms(c.onnx_load.read),
                        round_ms(c.onnx_load.parse),
                        round_ms(c.onnx_load.optimise),
                        round_ms(c.nnef_load.total()),
                        round_ms(c.nnef_load.read),
                        round_ms(c.nnef_load.parse),
                        round_ms(c.nnef_load.optimise),
                    );
                }
                rows.push(json!({
                    "precision": c.precision, "status": "converted", "nnef": c.nnef.path.display().to_string(),
                    "nnef_bytes": c.nnef_bytes, "onnx_bytes": c.onnx_bytes,
                    "min_cosine": c.min_cosine, "max_abs": c.max_abs,
                    "onnx_load_ms": round_ms(c.onnx_load.total()), "nnef_load_ms": round_ms(c.nnef_load.total()),
                    "onnx_parse_ms": round_ms(c.onnx_load.parse), "nnef_parse_ms": round_ms(c.nnef_load.parse),
                    "onnx_optimise_ms": round_ms(c.onnx_load.optimise),
                    "nnef_optimise_ms": round_ms(c.nnef_load.optimise),
                }));
            }
            Outcome::Skipped { precision, reason } => {
                if !a.json {
                    println!("{precision}: skipped, {reason}");
                }
                rows.push(json!({"precision": precision, "status": "skipped", "reason": reason}));
            }
        }
    }
    if a.json {
        println!("{}", json!({"bundle": a.bundle.display().to_string(), "encoders": rows}));
    }
    Ok(ExitCode::SUCCESS)
}
