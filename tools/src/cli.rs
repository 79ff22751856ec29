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
    /// Few-shot enrolment on the host: add, list or remove image shots in a prompt store.
    #[command(subcommand)]
    Fewshot(FewshotCommand),
    /// Make a key pair for signing fleet commands (FILE: secret, FILE.pub: the boards' `mqtt.commands.public_key`).
    Keygen(KeygenArgs),
    /// Push a prompt store to boards over MQTT, signed; reports which boards took it (docs/mqtt.md).
    PublishStore(PublishStoreArgs),
    /// Work on a model bundle (add tract's NNEF form for a faster start).
    #[command(subcommand)]
    Bundle(BundleCommand),
}

/// Arguments of `keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Secret key file to create (mode 0600); the public key goes to FILE.pub. Never overwritten.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `publish-store`.
#[derive(Debug, Args)]
pub struct PublishStoreArgs {
    /// Broker, mqtt://HOST[:PORT].
    #[arg(long, value_name = "URL")]
    pub broker: String,
    /// The prompt store to push (checked before it is sent).
    #[arg(long, value_name = "FILE")]
    pub prompts: PathBuf,
    /// Secret key (from `clip-edge keygen`) whose public half the boards trust.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Boards to push to (comma-separated device names); every board listening on clip-edge/all/cmd if omitted.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub devices: Vec<String>,
    /// How long to wait for the boards' replies.
    #[arg(long, value_name = "S", default_value_t = 10)]
    pub timeout_s: u64,
    /// How long the signed command stays valid: a board whose clock is past it refuses it.
    #[arg(long, value_name = "S", default_value_t = 600)]
    pub valid_s: u64,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `bundle` subcommands.
#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Add tract's NNEF form of the image encoders, verified against the ONNX
    /// files, so that the device skips ONNX parsing and decluttering at start-up.
    /// The ONNX files stay and are used whenever the NNEF copy cannot be.
    Nnef(BundleNnefArgs),
}

/// Arguments of `bundle nnef`.
#[derive(Debug, Args)]
pub struct BundleNnefArgs {
    /// Model bundle folder (holds bundle.toml, rewritten atomically).
    #[arg(long, value_name = "DIR")]
    pub bundle: PathBuf,
    /// Only this precision (repeatable); every encoder of the bundle if omitted.
    #[arg(long, value_name = "P")]
    pub precision: Vec<Precision>,
    /// Skip a form whose NNEF archive would exceed this many times its ONNX file
    /// (int8 and f16 weights are widened to f32 in tract).
    #[arg(long, default_value_t = 1.25, value_name = "X")]
    pub max_growth: f64,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// How stored image shots are mixed into the scores (see docs/fewshot.md).
#[derive(Debug, Clone, Copy, Args)]
pub struct ShotArgs {
    /// Weight of the few-shot cache against the text logits (0 ignores stored shots).
    #[arg(long, default_value_t = clip_edge_runtime::score::DEFAULT_SHOT_WEIGHT, value_name = "W")]
    pub shot_weight: f32,
    /// Sharpness of the shot affinity exp(-S * (1 - cos)).
    #[arg(long, default_value_t = clip_edge_runtime::score::DEFAULT_SHOT_SHARPNESS, value_name = "S")]
    pub shot_sharpness: f32,
}

/// `fewshot` subcommands.
#[derive(Debug, Subcommand)]
pub enum FewshotCommand {
    /// Embed images and store them as shots of a class (created image-only if new).
    Add(FewshotAddArgs),
    /// List the classes of a store with their shot counts and capture times.
    List(FewshotListArgs),
    /// Remove every shot of a class (and the class, when it has no text).
    Remove(FewshotRemoveArgs),
}

/// Arguments of `fewshot add`.
#[derive(Debug, Args)]
pub struct FewshotAddArgs {
    /// Model bundle and precision.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt store to add to; the bundle's default store if omitted. Rewritten atomically under a lock.
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// The class the images show.
    #[arg(long, value_name = "NAME")]
    pub class: String,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Image files, one shot each.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
}

/// Arguments of `fewshot list`.
#[derive(Debug, Args)]
pub struct FewshotListArgs {
    /// The prompt store file.
    pub file: PathBuf,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `fewshot remove`.
#[derive(Debug, Args)]
pub struct FewshotRemoveArgs {
    /// The prompt store file.
    pub file: PathBuf,
    /// The class whose shots are removed.
    #[arg(long, value_name = "NAME")]
    pub class: String,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Model selection shared by commands that run the image encoder.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model bundle folder (holds bundle.toml).
    #[arg(long, value_name = "DIR")]
    pub bundle: PathBuf,
    /// Image-encoder precision (f32, f16, int8, int8-compute: the int8 file on int8 kernels); the bundle's default if omitted.
    #[arg(long, value_name = "P")]
    pub precision: Option<Precision>,
    /// Threads for the image encoder's matrix products (1: the calling thread only).
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=clip_edge_runtime::encoder::MAX_THREADS as i64))]
    pub threads: u16,
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
    /// Few-shot mixing.
    #[command(flatten)]
    pub shots: ShotArgs,
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
    /// Time the camera path instead of decoding the file: the image is first
    /// turned into what a V4L2 camera sends (`mjpeg`: a quality-85 JPEG;
    /// `yuyv`: packed 4:2:2), then every frame is decoded and halved as the
    /// daemon does (while the shorter side stays at least twice the model's input).
    #[arg(long, value_name = "FORMAT", value_parser = ["mjpeg", "yuyv"])]
    pub camera: Option<String>,
    /// With --camera: no halving (the full frame goes to the model's resize), for comparison.
    #[arg(long, requires = "camera")]
    pub full_frame: bool,
    /// Load the ONNX file even where the bundle has an NNEF copy (to compare cold starts).
    #[arg(long)]
    pub onnx: bool,
    /// Keep tract's own operators: none of clip-edge's rewrites of the graph
    /// (depthwise and dense convolutions, GELU), to measure what they change
    /// in cold start and per-frame time (the int8-compute rewrite still applies).
    #[arg(long)]
    pub tract_ops: bool,
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
    /// When embedding classes here (no --prompts), ignore the bundle's seen/unseen calibration.
    #[arg(long, conflicts_with = "prompts")]
    pub no_calibration: bool,
    /// How many of the most frequent confusions to report.
    #[arg(long, default_value_t = 10)]
    pub confusions: usize,
    /// Few-shot protocol: shots per class to compare, e.g. 0,1,2,4,8. Per draw, each
    /// class folder is shuffled; its first max(LIST) images are the shot pool and the
    /// rest the test images, the same for every count.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub shots: Vec<usize>,
    /// Random draws of the few-shot protocol.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub draws: u32,
    /// Seed of the first draw.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Few-shot protocol: enrol only this fraction of the classes, those that zero-shot
    /// ranks first least often on their own shot pool (1: every class).
    #[arg(long, default_value_t = 1.0, value_name = "F", value_parser = fraction)]
    pub enrol_fraction: f64,
    /// How many per-class winners and losers to report (few-shot protocol).
    #[arg(long, default_value_t = 10)]
    pub movers: usize,
    /// Few-shot mixing.
    #[command(flatten)]
    pub mix: ShotArgs,
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
    /// Ignore the bundle's seen/unseen calibration ([text.calibration]): every
    /// class is scored on its raw cosine similarity.
    #[arg(long)]
    pub no_calibration: bool,
    /// Threads running the text encoder (default: the CPUs available, at most 8); the store is the same for any.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: Option<u16>,
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
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("'{s}' is not a fraction in (0, 1]")),
    }
}

impl EvalArgs {
    /// The share of classes reported as "worst": the enrolled fraction when
    /// only part is enrolled, else the worst fifth.
    pub fn worst_fraction(&self) -> f64 {
        if self.enrol_fraction < 1.0 {
            self.enrol_fraction
        } else {
            0.2
        }
    }
}

impl ShotArgs {
    /// The decision rule with these few-shot settings and the given thresholds.
    pub fn rule(&self, min_score: f32, min_similarity: f32) -> clip_edge_runtime::DecisionRule {
        clip_edge_runtime::DecisionRule {
            min_score,
            min_similarity,
            shot_weight: self.shot_weight,
            shot_sharpness: self.shot_sharpness,
        }
    }
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
        Command::Fewshot(FewshotCommand::Add(a)) => cmd::fewshot::add(&a),
        Command::Fewshot(FewshotCommand::List(a)) => cmd::fewshot::list(&a),
        Command::Fewshot(FewshotCommand::Remove(a)) => cmd::fewshot::remove(&a),
        Command::Bundle(BundleCommand::Nnef(a)) => cmd::bundle::nnef(&a),
        Command::Keygen(a) => cmd::fleet::keygen(&a),
        Command::PublishStore(a) => cmd::fleet::publish_store(&a),
    };
    match result {
        Ok(code) => code,
        Err(err) => clip_edge_runtime::process::failure(err.as_ref()),
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
