//! `clip-edge-board`: the device daemon.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use clip_edge_board::events::EventSink;
use clip_edge_board::{Config, Daemon, Devices, Model, StartError};
use clip_edge_runtime::process::print_line;

/// clip-edge on the device: on each trigger (GPIO edge or simulated), capture
/// a camera frame, classify it against the prompt store on flash, pulse the
/// output pin when a chosen label wins, and write one JSON line per event.
///
/// Logs go to stderr (RUST_LOG=debug for more); events to stdout and/or the
/// configured file. SIGINT/SIGTERM finish the current event and exit.
#[derive(Debug, Parser)]
#[command(name = "clip-edge-board", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Configuration file (see board/examples/).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Stop after this many handled triggers (events and errors).
        #[arg(long, value_name = "N")]
        max_events: Option<u64>,
    },
    /// Few-shot enrolment: capture frames from the configured camera (or replay
    /// folder), embed them, and add them as shots of a class to the prompt store
    /// (locked, one atomic write; nothing is stored if any frame fails). A running
    /// daemon picks up the changed store at its next trigger.
    Enroll {
        /// Configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The class the frames show (created image-only if the store lacks it);
        /// default: enroll.class of the configuration.
        #[arg(long, value_name = "NAME")]
        class: Option<String>,
        /// Frames to capture (1..=64); default: enroll.frames, else 8.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
        frames: Option<u32>,
        /// Time between frames; default: enroll.interval_ms, else 200.
        #[arg(long, value_name = "MS")]
        interval_ms: Option<u64>,
        /// Print what was stored as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Start-up self-check only: configuration, bundle, prompt store, one frame
    /// through the model, camera, output pin and trigger; then exit.
    Check {
        /// Configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    // rumqttc logs its flow control ("Collision on packet id") at info: not news for an operator.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,rumqttc::state=warn"))
        .format_timestamp_millis()
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => clip_edge_runtime::process::failure(e.as_ref()),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let (path, max_events, check_only) = match cli.command {
        Command::Run { config, max_events } => (config, max_events, false),
        Command::Check { config } => (config, None, true),
        Command::Enroll { config, class, frames, interval_ms, json } => {
            return enroll(&config, class, frames, interval_ms, json)
        }
    };
    let config = Config::load(&path)?;
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, shutdown.clone()).context("cannot install signal handlers")?;
    }
    let sink = if check_only {
        EventSink::open(true, None)
    } else {
        EventSink::open(config.events.stdout, config.events.file.as_deref())
    }
    .with_context(|| format!("cannot open the events file named in {}", path.display()))?;
    let mut daemon = start(config, sink, shutdown, check_only)
        .with_context(|| format!("start-up self-check failed ({})", path.display()))?;
    if check_only {
        print_line("self-check passed")?;
        return Ok(ExitCode::SUCCESS);
    }
    let stats = daemon.run(max_events);
    log::info!(
        "{} events, {} errors, {} triggers coalesced, {} output pulses",
        stats.events,
        stats.errors,
        stats.coalesced,
        stats.pulses
    );
    Ok(ExitCode::SUCCESS)
}

/// The self-check: the model first, then the devices the configuration names.
/// With `check_only` the MQTT side is not started: the running daemon holds the outbox.
fn start(
    config: Config,
    sink: EventSink,
    shutdown: Arc<AtomicBool>,
    check_only: bool,
) -> Result<Daemon, StartError> {
    let model = Model::load(&config)?;
    let devices = Devices::open(&config, model.bundle())?;
    let sink = match &config.mqtt {
        Some(m) if !check_only => {
            let outputs = config.pin.as_ref().map(|p| p.labels.clone()).unwrap_or_default();
            sink.with_mqtt(clip_edge_board::mqtt::Mqtt::start(m, &model.bundle().name, &outputs)?)
        }
        Some(m) => {
            clip_edge_board::mqtt::check_files(m)?;
            sink
        }
        None => sink,
    };
    Daemon::start(config, model, devices, sink, shutdown)
}

fn enroll(
    path: &std::path::Path,
    class: Option<String>,
    frames: Option<u32>,
    interval_ms: Option<u64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let section = config.enroll.as_ref();
    let class = class
        .or_else(|| section.map(|e| e.class.clone()))
        .with_context(|| format!("no --class given and {} has no [enroll] class", path.display()))?;
    let frames = frames.or(section.map(|e| e.frames)).unwrap_or(8);
    let interval = interval_ms
        .map(std::time::Duration::from_millis)
        .or(section.map(|e| e.interval))
        .unwrap_or(std::time::Duration::from_millis(200));
    let done = clip_edge_board::enroll::run_once(&config, &class, frames, interval)
        .with_context(|| format!("enrolment with {} failed", path.display()))?;
    if json {
        print_line(&serde_json::to_string(&done)?)?;
    } else {
        print_line(&format!("stored {done}"))?;
    }
    Ok(ExitCode::SUCCESS)
}
