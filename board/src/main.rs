//! `clip-edge-board`: the device binary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use clip_edge_runtime::Precision;

/// clip-edge on the device: classify camera frames on a GPIO trigger.
///
/// This release has the start-up self-check; the trigger/camera daemon
/// (`run`) follows.
#[derive(Debug, Parser)]
#[command(name = "clip-edge-board", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load the bundle and prompt store, run one frame, report timings.
    Check {
        /// Model bundle folder.
        #[arg(long, value_name = "DIR")]
        bundle: PathBuf,
        /// Image-encoder precision; the bundle's default if omitted.
        #[arg(long)]
        precision: Option<Precision>,
        /// Prompt store; the bundle's default if omitted.
        #[arg(long, value_name = "FILE")]
        prompts: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Check { bundle, precision, prompts, json } => {
            let r = clip_edge_board::self_check(&bundle, precision, prompts.as_deref())
                .with_context(|| format!("self-check of bundle {} failed", bundle.display()))?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "ok: model '{}' ({}) loaded in {:.1} ms, {} prompts from {}, first frame {:.1} ms",
                    r.model, r.precision, r.load_ms, r.entries, r.prompts, r.first_frame_ms
                );
            }
            Ok(())
        }
    }
}
