//! Cameras behind [`FrameSource`]: a V4L2 device (MJPEG or YUYV, memory-mapped
//! streaming) and a replay folder for hosts and tests. [`Supervised`] turns
//! failures into errors the daemon reports, and reopens with back-off.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::RgbImage;

use clip_edge_runtime::frame::decode_camera_frame;

use crate::config::{CameraConfig, PixelFormat};

/// What kind of camera failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraErrorKind {
    /// The device or folder is missing or was unplugged.
    Unavailable,
    /// No frame within the timeout.
    Timeout,
    /// A frame arrived but could not be decoded.
    Decode,
    /// The device does not support what the configuration asks.
    Unsupported,
}

/// A camera failure, naming the device.
#[derive(Debug, thiserror::Error)]
#[error("{device}: {message}")]
pub struct CameraError {
    /// What kind.
    pub kind: CameraErrorKind,
    /// The device node or folder.
    pub device: PathBuf,
    /// What went wrong.
    pub message: String,
}

impl CameraError {
    fn new(kind: CameraErrorKind, device: &Path, message: impl Into<String>) -> Self {
        CameraError { kind, device: device.into(), message: message.into() }
    }
}

/// A decoded frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// RGB pixels.
    pub image: RgbImage,
    /// Time spent decoding (JPEG or YUYV conversion, or image file).
    pub decode: Duration,
    /// Where it came from (file name, or device and sequence).
    pub source: String,
}

/// Something that hands out frames on request.
pub trait FrameSource: Send {
    /// A frame taken after this call started (stale buffered frames are dropped).
    fn capture(&mut self) -> Result<Frame, CameraError>;
    /// One line for logs.
    fn describe(&self) -> String;
}

/// Opens the camera a configuration names. V4L2 frames are halved (2x2 mean,
/// fused into the YUYV conversion) while their shorter side stays at least
/// `min_short_side` (0: never); replayed files are decoded as they are.
pub fn open(config: &CameraConfig, min_short_side: u32) -> Result<Box<dyn FrameSource>, CameraError> {
    Ok(match config {
        CameraConfig::Replay { folder } => Box::new(Replay::open(folder)?),
        CameraConfig::V4l2 { device, format, width, height, skip_frames, timeout } => Box::new(
            V4l2::open(device, *format, *width, *height, *skip_frames, *timeout)?.reduced(min_short_side),
        ),
    })
}

/// Images from a folder, in name order, cycling; decoded on every capture.
#[derive(Debug)]
pub struct Replay {
    folder: PathBuf,
    files: Vec<PathBuf>,
    next: usize,
}

impl Replay {
    /// Lists the folder's PNG, JPEG, BMP and WebP files.
    pub fn open(folder: &Path) -> Result<Replay, CameraError> {
        let entries = std::fs::read_dir(folder).map_err(|e| {
            CameraError::new(CameraErrorKind::Unavailable, folder, format!("cannot list folder: {e}"))
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| clip_edge_runtime::frame::is_image_file(p))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(CameraError::new(
                CameraErrorKind::Unavailable,
                folder,
                format!("no images ({})", clip_edge_runtime::frame::IMAGE_EXTENSIONS.join(", ")),
            ));
        }
        Ok(Replay { folder: folder.into(), files, next: 0 })
    }
}

impl FrameSource for Replay {
    fn capture(&mut self) -> Result<Frame, CameraError> {
        let path = self.files[self.next % self.files.len()].clone();
        self.next += 1;
        let t0 = Instant::now();
        let bytes = std::fs::read(&path).map_err(|e| {
            CameraError::new(CameraErrorKind::Unavailable, &path, format!("cannot read: {e}"))
        })?;
        let image = clip_edge_runtime::frame::decode_rgb(&path, &bytes)
            .map_err(|e| CameraError::new(CameraErrorKind::Decode, &path, e.to_string()))?;
        Ok(Frame { image, decode: t0.elapsed(), source: path.display().to_string() })
    }

    fn describe(&self) -> String {
        format!("replay camera: {} ({} images)", self.folder.display(), self.files.len())
    }
}

/// A V4L2 capture device streaming through memory-mapped buffers.
pub struct V4l2 {
    device: PathBuf,
    stream: linuxvideo::stream::ReadStream,
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: u32,
    skip_frames: u32,
    timeout: Duration,
    seq: u64,
    /// The kept frame's bytes, reused across captures.
    data: Vec<u8>,
    /// Times each frame is halved before it is handed out.
    halvings: u32,
}

impl std::fmt::Debug for V4l2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V4l2")
            .field("device", &self.device)
            .field("size", &(self.width, self.height))
            .finish()
    }
}

impl V4l2 {
    /// Opens `device`, negotiates `format` at about `width`x`height`, and starts streaming.
    pub fn open(
        device: &Path,
        format: PixelFormat,
        width: u32,
        height: u32,
        skip_frames: u32,
        timeout: Duration,
    ) -> Result<V4l2, CameraError> {
        use linuxvideo::format::{PixFormat, PixelFormat as P};
        use linuxvideo::{BufType, Device};
        let unavailable = |m: String| CameraError::new(CameraErrorKind::Unavailable, device, m);
        let dev = Device::open(device).map_err(|e| unavailable(format!("cannot open: {e}")))?;
        let wanted = match format {
            PixelFormat::Mjpeg => P::MJPG,
            PixelFormat::Yuyv => P::YUYV,
        };
        let offered: Vec<P> =
            dev.formats(BufType::VIDEO_CAPTURE).filter_map(|f| f.ok().map(|f| f.pixel_format())).collect();
        if !offered.contains(&wanted) {
            return Err(CameraError::new(
                CameraErrorKind::Unsupported,
                device,
                format!("does not offer {wanted:?} (offers {offered:?}); see v4l2-ctl --list-formats-ext"),
            ));
        }
        let capture = dev
            .video_capture(PixFormat::new(width, height, wanted))
            .map_err(|e| unavailable(format!("cannot set format {wanted:?} {width}x{height}: {e}")))?;
        let got = capture.format();
        let (got_format, got_w, got_h, stride) =
            (got.pixel_format(), got.width(), got.height(), got.bytes_per_line());
        if got_format != wanted {
            return Err(CameraError::new(
                CameraErrorKind::Unsupported,
                device,
                format!("asked for {wanted:?}, driver chose {got_format:?}"),
            ));
        }
        log::info!("{}: streaming {wanted:?} {got_w}x{got_h} (asked {width}x{height})", device.display());
        let stream =
            capture.into_stream().map_err(|e| unavailable(format!("cannot start streaming: {e}")))?;
        Ok(V4l2 {
            device: device.into(),
            stream,
            format,
            width: got_w,
            height: got_h,
            stride,
            skip_frames,
            timeout,
            seq: 0,
            data: Vec::new(),
            halvings: 0,
        })
    }

    /// Halves frames (2x2 mean) while their shorter side stays at least
    /// `min_short_side`: the daemon passes twice the model's input size, so a
    /// 640x480 frame reaches a 64 px model's resize as 320x240, a quarter of
    /// the pixels to convert and resample.
    pub fn reduced(mut self, min_short_side: u32) -> Self {
        self.halvings = clip_edge_runtime::frame::halvings(self.width, self.height, min_short_side);
        if self.halvings > 0 {
            log::info!(
                "{}: frames halved {} time(s) to {}x{} before the model's resize",
                self.device.display(),
                self.halvings,
                self.width >> self.halvings,
                self.height >> self.halvings
            );
        }
        self
    }

    fn wait_readable(&self, timeout: Duration) -> Result<bool, CameraError> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let deadline = Instant::now() + timeout;
        let mut fds = [PollFd::new(&self.stream, PollFlags::IN)];
        let n = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ts = Timespec { tv_sec: left.as_secs() as i64, tv_nsec: left.subsec_nanos() as i64 };
            match poll(&mut fds, Some(&ts)) {
                // SIGTERM lets the current capture finish: wait out the rest.
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(CameraError::new(
                        CameraErrorKind::Unavailable,
                        &self.device,
                        format!("poll: {e}"),
                    ))
                }
                Ok(n) => break n,
            }
        };
        if fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP) {
            return Err(CameraError::new(
                CameraErrorKind::Unavailable,
                &self.device,
                "device error or unplugged",
            ));
        }
        Ok(n > 0)
    }

    /// Dequeues one buffer; copies it into `self.data` when `keep`, else just re-queues it.
    fn dequeue(&mut self, keep: bool) -> Result<(), CameraError> {
        let data = &mut self.data;
        self.stream
            .dequeue(|buf| {
                if buf.is_error() {
                    return Err(std::io::Error::other("driver flagged the buffer as corrupt"));
                }
                if keep {
                    data.clear();
                    data.extend_from_slice(&buf);
                }
                Ok(())
            })
            .map_err(|e| {
                CameraError::new(CameraErrorKind::Unavailable, &self.device, format!("dequeue: {e}"))
            })
    }
}

impl FrameSource for V4l2 {
    fn capture(&mut self) -> Result<Frame, CameraError> {
        // Buffers filled while the daemon was idle show the scene before the
        // trigger: drop them, then the configured number of fresh ones.
        while self.wait_readable(Duration::ZERO)? {
            self.dequeue(false)?;
        }
        for i in 0..=self.skip_frames {
            if !self.wait_readable(self.timeout)? {
                return Err(CameraError::new(
                    CameraErrorKind::Timeout,
                    &self.device,
                    format!("no frame within {} ms", self.timeout.as_millis()),
                ));
            }
            self.dequeue(i == self.skip_frames)?;
        }
        let data = &self.data;
        self.seq += 1;
        let t0 = Instant::now();
        let image = decode_camera_frame(
            &self.device,
            self.format,
            data,
            self.width,
            self.height,
            self.stride,
            self.halvings,
        )
        .map_err(|e| {
            let message = match e {
                clip_edge_runtime::Error::Image { message, .. } => message,
                e => e.to_string(),
            };
            CameraError::new(CameraErrorKind::Decode, &self.device, message)
        })?;
        Ok(Frame { image, decode: t0.elapsed(), source: format!("{}#{}", self.device.display(), self.seq) })
    }

    fn describe(&self) -> String {
        format!("V4L2 camera {} {:?} {}x{}", self.device.display(), self.format, self.width, self.height)
    }
}

/// Back-off bounds for reopening a failed camera.
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest wait between reopen attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// A camera that is reopened after failures, with exponential back-off.
pub struct Supervised {
    opener: Box<dyn FnMut() -> Result<Box<dyn FrameSource>, CameraError> + Send>,
    source: Option<Box<dyn FrameSource>>,
    backoff: Duration,
    retry_at: Option<Instant>,
    name: String,
}

impl Supervised {
    /// Wraps an opener; the first open happens now so start-up can fail fast.
    pub fn new(
        mut opener: Box<dyn FnMut() -> Result<Box<dyn FrameSource>, CameraError> + Send>,
    ) -> Result<Supervised, CameraError> {
        let source = opener()?;
        let name = source.describe();
        Ok(Supervised { opener, source: Some(source), backoff: BACKOFF_MIN, retry_at: None, name })
    }

    /// The camera a configuration names (see [`open`]), supervised.
    pub fn open(config: &CameraConfig, min_short_side: u32) -> Result<Supervised, CameraError> {
        let config = config.clone();
        Supervised::new(Box::new(move || open(&config, min_short_side)))
    }

    fn schedule_retry(&mut self) {
        self.retry_at = Some(Instant::now() + self.backoff);
        log::warn!("camera failed; reopening in {} ms", self.backoff.as_millis());
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }
}

impl FrameSource for Supervised {
    /// Captures a frame, reopening the camera first if it failed before and the
    /// back-off has passed. On a device failure the camera is closed and the
    /// next attempt waits twice as long (up to [`BACKOFF_MAX`]).
    fn capture(&mut self) -> Result<Frame, CameraError> {
        if self.source.is_none() {
            let now = Instant::now();
            if let Some(at) = self.retry_at {
                if now < at {
                    return Err(CameraError {
                        kind: CameraErrorKind::Unavailable,
                        device: PathBuf::from(&self.name),
                        message: format!(
                            "camera closed after a failure; next reopen in {} ms",
                            (at - now).as_millis()
                        ),
                    });
                }
            }
            match (self.opener)() {
                Ok(s) => {
                    log::info!("camera reopened: {}", s.describe());
                    self.source = Some(s);
                }
                Err(e) => {
                    self.schedule_retry();
                    return Err(e);
                }
            }
        }
        let source = self.source.as_mut().expect("opened above");
        match source.capture() {
            Ok(f) => {
                self.backoff = BACKOFF_MIN;
                self.retry_at = None;
                Ok(f)
            }
            Err(e) if e.kind == CameraErrorKind::Decode => Err(e),
            Err(e) => {
                self.source = None;
                self.schedule_retry();
                Err(e)
            }
        }
    }

    /// The camera's description, as it was first opened.
    fn describe(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(dir: &Path, name: &str, rgb: [u8; 3]) {
        RgbImage::from_pixel(8, 6, image::Rgb(rgb)).save(dir.join(name)).expect("png");
    }

    #[test]
    fn replay_cycles_in_name_order() {
        let dir = tempfile::tempdir().expect("tmp");
        png(dir.path(), "b.png", [0, 255, 0]);
        png(dir.path(), "a.png", [255, 0, 0]);
        std::fs::write(dir.path().join("notes.txt"), "x").expect("w");
        let mut r = Replay::open(dir.path()).expect("open");
        let names: Vec<_> = (0..3).map(|_| r.capture().expect("frame").source).collect();
        assert!(names[0].ends_with("a.png") && names[1].ends_with("b.png") && names[2].ends_with("a.png"));
    }

    #[test]
    fn replay_errors_name_the_folder_or_file() {
        let e = Replay::open(Path::new("/nonexistent/frames")).expect_err("missing").to_string();
        assert!(e.starts_with("/nonexistent/frames: cannot list folder"), "{e}");
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("bad.png"), "not a png").expect("w");
        let mut r = Replay::open(dir.path()).expect("open");
        let e = r.capture().expect_err("decode");
        assert_eq!(e.kind, CameraErrorKind::Decode);
    }

    #[test]
    fn supervisor_backs_off_and_recovers() {
        let dir = tempfile::tempdir().expect("tmp");
        let frames = dir.path().join("frames");
        std::fs::create_dir(&frames).expect("mkdir");
        png(&frames, "a.png", [1, 2, 3]);
        let f2 = frames.clone();
        let mut cam =
            Supervised::new(Box::new(move || Ok(Box::new(Replay::open(&f2)?) as Box<dyn FrameSource>)))
                .expect("open");
        assert!(cam.capture().is_ok());
        std::fs::remove_dir_all(&frames).expect("unplug");
        let e = cam.capture().expect_err("unplugged");
        assert_eq!(e.kind, CameraErrorKind::Unavailable);
        let e = cam.capture().expect_err("backing off").to_string();
        assert!(e.contains("next reopen in"), "{e}");
        std::fs::create_dir(&frames).expect("replug");
        png(&frames, "a.png", [1, 2, 3]);
        std::thread::sleep(BACKOFF_MIN + Duration::from_millis(50));
        assert!(cam.capture().is_ok(), "recovered after back-off");
    }

    #[test]
    fn missing_v4l2_device_is_unavailable() {
        let e =
            V4l2::open(Path::new("/dev/video-none"), PixelFormat::Yuyv, 640, 480, 0, Duration::from_secs(1))
                .expect_err("missing");
        assert_eq!(e.kind, CameraErrorKind::Unavailable);
        assert!(e.to_string().starts_with("/dev/video-none: cannot open"), "{e}");
    }
}
