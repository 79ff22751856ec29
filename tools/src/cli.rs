//! Argument parsing and dispatch for `clip-edge`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use clip_edge_runtime::store::ElementType;
use clip_edge_runtime::Precision;

use crate::cmd;

/// CLIP zero-shot image classification on small devices: host tools.
///
/// A bundle is a folder with bundle.toml and the image encoder; a prompt
/// store is the file of precomputed text embeddings the device scores
/// frames against. Logs go to stderr (-v for more, RUST_LOG also works).
#[derive(Debug, Parser)]
#[command(name = "clip-edge", version, propagate_version = true)]
pub struct Cli {
    /// More log output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors in the log.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Classify images against a prompt store.
    Classify(ClassifyArgs),
    /// Print the L2-normalised embedding of each image (or, with --text, of each text).
    Embed(EmbedArgs),
    /// Measure cold start and per-frame latency (decode, preprocess, infer, score).
    Bench(BenchArgs),
    /// Inspect or create prompt stores.
    #[command(subcommand)]
    Prompts(PromptsCommand),
    /// Accuracy over a folder of labelled images (one subfolder per class), through tract.
    Eval(EvalArgs),
}

/// Model selection shared by commands that run the image encoder.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model bundle folder (holds bundle.toml).
    #[arg(long, value_name = "DIR")]
    pub bundle: PathBuf,
    /// Image-encoder precision (f32, f16, int8); the bundle's default if omitted.
    #[arg(long, value_name = "P")]
    pub precision: Option<Precision>,
}

/// Arguments of `classify`.
#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// Model bundle and precision.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt store; the bundle's default store (key 'prompts') if omitted.
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// How many ranked labels to show (1..=16).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub top: u8,
    /// Minimum softmax probability for a match; below it the result is "unknown".
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub min_score: f32,
    /// Minimum cosine similarity for a match; below it the result is "unknown".
    #[arg(long, default_value_t = -1.0, value_name = "COS", allow_hyphen_values = true)]
    pub min_similarity: f32,
    /// One JSON object per image on stdout.
    #[arg(long)]
    pub json: bool,
    /// Image files (PNG, JPEG, BMP, WebP).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
}

/// Arguments of `embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Model bundle and precision.
    #[command(flatten)]
    pub model: ModelArgs,
    /// One JSON object per input on stdout, with every value.
    #[arg(long)]
    pub json: bool,
    /// Embed these texts with the bundle's text encoder (repeatable) instead of images.
    #[arg(long, value_name = "TEXT", conflicts_with = "images")]
    pub text: Vec<String>,
    /// Image files.
    #[arg(required_unless_present = "text", value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
}

/// Arguments of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Model bundle and precision.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt store; the bundle's default store if omitted.
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// Frames timed after the warm-up.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub frames: u32,
    /// Frames run before timing starts.
    #[arg(long, default_value_t = 5)]
    pub warmup: u32,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// The image decoded and classified on every frame.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
}

/// Arguments of `eval`.
#[derive(Debug, Args)]
#[command(after_help = "Each subfolder of --data holds the images of one class and is named exactly as \
the class. The candidate classes come from --labels (embedded now with the bundle's text encoder), \
from --prompts (a built store), or else from the subfolder names under --templates. Unreadable \
images are reported by name, counted and skipped.")]
pub struct EvalArgs {
    /// Model bundle and precision.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Folder with one subfolder of images per class.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Labels file giving the candidate classes (may hold more classes than --data).
    #[arg(long, value_name = "FILE", conflicts_with = "prompts")]
    pub labels: Option<PathBuf>,
    /// Prompt store giving the candidate classes.
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// Template set for subfolder names and for a labels file that names none.
    #[arg(long, default_value = "default", value_name = "SET")]
    pub templates: String,
    /// How many of the most frequent confusions to report.
    #[arg(long, default_value_t = 10)]
    pub confusions: usize,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `prompts` subcommands.
#[derive(Debug, Subcommand)]
pub enum PromptsCommand {
    /// Build a prompt store from a labels file with the bundle's text encoder.
    Build(BuildArgs),
    /// Validate a prompt store and print its header, labels and metadata.
    Inspect(InspectArgs),
    /// Write a placeholder store of seeded random unit vectors for a bundle (for demos
    /// and tests of models whose text encoder is not available).
    Random(RandomArgs),
}

/// Arguments of `prompts build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Bundle with a text encoder ([text] in bundle.toml).
    #[arg(long, value_name = "DIR")]
    pub bundle: PathBuf,
    /// Labels file (TOML: templates, [[class]], [[background]]; see docs/prompts.md).
    #[arg(long, value_name = "FILE")]
    pub labels: PathBuf,
    /// Output store; replaced atomically, and only if the build succeeds.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Element type of the stored embeddings.
    #[arg(long, default_value = "f32")]
    pub element: ElementType,
    /// Template set used when the labels file names none: default, imagenet7 or imagenet.
    #[arg(long, default_value = "default", value_name = "SET")]
    pub templates: String,
    /// Fail instead of truncating prompts longer than the text encoder's context.
    #[arg(long)]
    pub fail_on_truncation: bool,
    /// Record the build time (the store is then not byte-for-byte reproducible).
    #[arg(long)]
    pub stamp: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `prompts inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The prompt store file.
    pub file: PathBuf,
    /// Also check that the store fits this bundle's model.
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// How many of the most similar entry pairs to list.
    #[arg(long, default_value_t = 5)]
    pub pairs: usize,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `prompts random`.
#[derive(Debug, Args)]
pub struct RandomArgs {
    /// Bundle whose fingerprint, dimension and logit scale the store takes.
    #[arg(long, value_name = "DIR")]
    pub bundle: PathBuf,
    /// Class labels, comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub labels: Vec<String>,
    /// Background labels, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub background: Vec<String>,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Element type of the stored embeddings.
    #[arg(long, default_value = "f32")]
    pub element: ElementType,
    /// Output file (replaced atomically).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Runs the command line and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    let result = match cli.command {
        Command::Classify(a) => cmd::classify::run(&a),
        Command::Embed(a) => cmd::embed::run(&a),
        Command::Bench(a) => cmd::bench::run(&a),
        Command::Prompts(PromptsCommand::Build(a)) => cmd::prompts::build(&a, cli.quiet),
        Command::Prompts(PromptsCommand::Inspect(a)) => cmd::prompts::inspect(&a),
        Command::Prompts(PromptsCommand::Random(a)) => cmd::prompts::random(&a),
        Command::Eval(a) => cmd::eval::run(&a, cli.quiet),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let env = env_logger::Env::default().default_filter_or(level);
    let _ = env_logger::Builder::from_env(env).format_timestamp_millis().try_init();
}
