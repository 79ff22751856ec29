//! `clip-edge bench`: cold start and per-frame latency of the classify path.

use std::fmt::Display;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clip_edge_runtime::frame::{decode_camera_frame, decode_rgb, halvings, rgb_to_yuyv, CameraFormat};
use clip_edge_runtime::{Classifier, DecisionRule, Rewrites};
use clip_edge_tools::report::{ms, round3, Format, Progress};
use serde::Serialize;

use super::load_bundle;
use crate::cli::BenchArgs;

/// Median and 95th percentile of a set of durations, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    /// Median.
    #[serde(serialize_with = "ser_round3")]
    pub median: f64,
    /// 95th percentile (nearest rank).
    #[serde(serialize_with = "ser_round3")]
    pub p95: f64,
}

fn ser_round3<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(round3(*v))
}

impl Stats {
    /// Statistics of `samples` (must not be empty).
    pub fn of(samples: &[Duration]) -> Stats {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        let median = if ms.len() % 2 == 1 {
            ms[ms.len() / 2]
        } else {
            (ms[ms.len() / 2 - 1] + ms[ms.len() / 2]) / 2.0
        };
        Stats { median, p95: at(0.95) }
    }
}

/// Peak resident set size of this process in MiB (Linux), if known.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Where the model's start-up time went, in ms.
#[derive(Debug, Serialize)]
pub struct LoadMs {
    read: f64,
    parse: f64,
    optimise: f64,
    total: f64,
}

/// The camera path a `--camera` run decoded.
#[derive(Debug, Serialize)]
pub struct CameraReport {
    format: String,
    frame: [u32; 2],
    halvings: u32,
}

/// Which layers run on int8 kernels (`int8-compute` only).
#[derive(Debug, Serialize)]
pub struct Int8Summary {
    int8_layers: usize,
    weighted_layers: usize,
    int8_mac_share: f64,
    layers: Vec<clip_edge_runtime::int8::Int8Layer>,
}

/// The report of `clip-edge bench`.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    bundle: String,
    precision: &'static str,
    threads: usize,
    image: String,
    frames: u32,
    warmup: u32,
    cold_start_ms: f64,
    model_form: &'static str,
    /// Whether clip-edge's own rewrites were off (`--tract-ops`).
    tract_ops: bool,
    load_ms: LoadMs,
    first_frame_ms: f64,
    decode_ms: Stats,
    preprocess_ms: Stats,
    infer_ms: Stats,
    score_ms: Stats,
    total_ms: Stats,
    camera: Option<CameraReport>,
    frame_budget_pct: f64,
    infer_ms_median: f64,
    total_ms_median: f64,
    peak_rss_mb: Option<f64>,
    int8_compute: Option<Int8Summary>,
}

impl Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "bundle {} ({}, {} thread(s)), image {}",
            self.bundle, self.precision, self.threads, self.image
        )?;
        let l = &self.load_ms;
        writeln!(
            f,
            "cold start   {:.1} ms from {}{} (read {:.1}, parse {:.1}, optimise {:.1}, first frame {:.1})",
            self.cold_start_ms,
            self.model_form.to_uppercase(),
            if self.tract_ops { " with tract's own operators" } else { "" },
            l.read,
            l.parse,
            l.optimise,
            self.first_frame_ms
        )?;
        if let Some(r) = &self.int8_compute {
            writeln!(
                f,
                "int8 compute {} of {} weighted layers ({:.1}% of their multiply-accumulates; -vv lists them)",
                r.int8_layers,
                r.weighted_layers,
                100.0 * r.int8_mac_share
            )?;
        }
        if let Some(c) = &self.camera {
            writeln!(
                f,
                "camera path  {} {}x{}, halved {} time(s) before the model's resize",
                c.format.to_uppercase(),
                c.frame[0],
                c.frame[1],
                c.halvings
            )?;
        }
        writeln!(f, "per frame, {} frames after {} warm-up: median / p95 ms", self.frames, self.warmup)?;
        for (name, s) in [
            ("decode", self.decode_ms),
            ("preprocess", self.preprocess_ms),
            ("infer", self.infer_ms),
            ("score", self.score_ms),
            ("total", self.total_ms),
        ] {
            writeln!(f, "  {name:<11}{:>9.3} {:>9.3}", s.median, s.p95)?;
        }
        writeln!(f, "decode + preprocess = {:.1}% of inference", self.frame_budget_pct)?;
        if let Some(r) = self.peak_rss_mb {
            writeln!(f, "peak RSS     {r:.1} MiB")?;
        }
        Ok(())
    }
}

/// Runs `bench`.
pub fn run(a: &BenchArgs) -> anyhow::Result<ExitCode> {
    let image_bytes =
        std::fs::read(&a.image).with_context(|| format!("cannot read {}", a.image.display()))?;
    let t0 = Instant::now();
    let mut bundle = load_bundle(&a.model.bundle)?;
    if a.onnx {
        bundle.encoders.iter_mut().for_each(|e| e.nnef = None);
    }
    let rewrites = if a.tract_ops { Rewrites::NONE } else { Rewrites::default() };
    let mut clf = Classifier::load_with(&bundle, a.model.precision, a.prompts.as_deref(), rewrites)
        .with_context(|| format!("cannot load model of bundle {}", bundle.dir.display()))?;
    clf.encoder.set_threads(usize::from(a.model.threads)).context("--threads")?;
    let load = t0.elapsed();
    let rule = DecisionRule::default();
    let camera = camera_input(a, &image_bytes, 2 * bundle.preprocess.size)?;
    let mut frame_once = || -> anyhow::Result<[Duration; 5]> {
        let t = Instant::now();
        let frame = match &camera {
            None => decode_rgb(&a.image, &image_bytes)?,
            Some(c) => {
                decode_camera_frame(&a.image, c.format, &c.bytes, c.width, c.height, c.width * 2, c.halvings)?
            }
        };
        let decode = t.elapsed();
        let (emb, timing) = clf.encoder.encode_timed(&frame)?;
        let ts = Instant::now();
        clf.score(&emb, 5, &rule)?;
        Ok([decode, timing.preprocess, timing.infer, ts.elapsed(), t.elapsed()])
    };
    let first = frame_once()?[4];
    let cold_start = load + first;
    for _ in 0..a.warmup {
        frame_once()?;
    }
    let mut samples: [Vec<Duration>; 5] = Default::default();
    let progress = Progress::new("bench", "frames", a.frames as usize, 20, !a.json);
    for i in 0..a.frames {
        let s = frame_once()?;
        for (k, d) in s.iter().enumerate() {
            samples[k].push(*d);
        }
        progress.tick(i as usize + 1);
    }
    let [decode, preprocess, infer, score, total] = samples.map(|s| Stats::of(&s));
    let lt = clf.encoder.load_timing();
    let report = BenchReport {
        bundle: bundle.name.clone(),
        precision: clf.encoder.precision().as_str(),
        threads: clf.encoder.threads(),
        image: a.image.display().to_string(),
        frames: a.frames,
        warmup: a.warmup,
        cold_start_ms: ms(cold_start),
        model_form: if lt.from_nnef { "nnef" } else { "onnx" },
        tract_ops: a.tract_ops,
        load_ms: LoadMs {
            read: ms(lt.read),
            parse: ms(lt.parse),
            optimise: ms(lt.optimise),
            total: ms(load),
        },
        first_frame_ms: ms(first),
        decode_ms: decode,
        preprocess_ms: preprocess,
        infer_ms: infer,
        score_ms: score,
        total_ms: total,
        camera: camera.as_ref().map(|c| CameraReport {
            format: format!("{:?}", c.format).to_lowercase(),
            frame: [c.width, c.height],
            halvings: c.halvings,
        }),
        frame_budget_pct: round3(100.0 * (decode.median + preprocess.median) / infer.median),
        infer_ms_median: round3(infer.median),
        total_ms_median: round3(total.median),
        peak_rss_mb: peak_rss_mb().map(|r| (r * 10.0).round() / 10.0),
        int8_compute: clf.encoder.int8_report().map(|r| Int8Summary {
            int8_layers: r.int8_layers(),
            weighted_layers: r.layers.len(),
            int8_mac_share: round3(r.int8_mac_share()),
            layers: r.layers.clone(),
        }),
    };
    Format::from_flag(a.json).print(&report)?;
    Ok(ExitCode::SUCCESS)
}

/// A camera frame made from the benchmark image, decoded the daemon's way.
struct CameraInput {
    format: CameraFormat,
    bytes: Vec<u8>,
    width: u32,
    height: u32,
    halvings: u32,
}

fn camera_input(a: &BenchArgs, bytes: &[u8], min_short_side: u32) -> anyhow::Result<Option<CameraInput>> {
    let Some(format) = &a.camera else { return Ok(None) };
    let mut img = decode_rgb(&a.image, bytes)?;
    if img.width() % 2 == 1 {
        img = image::imageops::crop_imm(&img, 0, 0, img.width() - 1, img.height()).to_image();
    }
    let (width, height) = img.dimensions();
    let format = if format == "yuyv" { CameraFormat::Yuyv } else { CameraFormat::Mjpeg };
    let bytes = if format == CameraFormat::Yuyv {
        rgb_to_yuyv(&img)
    } else {
        let mut jpg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 85)
            .encode_image(&img)
            .context("cannot encode the MJPEG frame")?;
        jpg
    };
    let halvings = if a.full_frame { 0 } else { halvings(width, height, min_short_side) };
    Ok(Some(CameraInput { format, bytes, width, height, halvings }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p95() {
        let d: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        let s = Stats::of(&d);
        assert_eq!(s.median, 10.5);
        assert_eq!(s.p95, 19.0);
        assert_eq!(Stats::of(&[Duration::from_millis(3)]).median, 3.0);
    }
}
