//! Triggers: something that says "look now", in the spirit of embedded-hal's
//! `Wait` (edge events) with a timeout so the daemon can service its
//! watchdog and output pulses while idle.
//!
//! Backends: a Linux GPIO line through the character device (uAPI v2, with
//! kernel debounce and the kernel's event timestamps), and simulated sources
//! for hosts (interval timer, standard input, a FIFO, or a test handle), all
//! feeding one bounded queue so a trigger storm cannot grow memory.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Bias, Edge, TriggerSource};

/// Pending triggers kept by a simulated source before further ones are only counted.
pub const QUEUE: usize = 64;

/// One trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriggerEvent {
    /// When it happened, CLOCK_MONOTONIC nanoseconds (the kernel's timestamp for GPIO).
    pub ts_ns: u64,
}

/// The outcome of [`Trigger::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A trigger arrived.
    Event(TriggerEvent),
    /// Nothing within the timeout.
    Timeout,
    /// The source has ended (interval count reached, end of input); no more will come.
    Ended,
}

/// Trigger failures.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// The GPIO chip or line could not be opened or configured.
    #[error("{path}: {message}")]
    Device {
        /// The chip device or FIFO.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// A source of triggers.
pub trait Trigger: Send {
    /// Waits up to `timeout` for the next trigger.
    fn wait(&mut self, timeout: Duration) -> Result<Wait, TriggerError>;
    /// Takes every trigger already pending without blocking; returns how many
    /// (including any the source had to drop or the kernel reported lost).
    fn drain(&mut self) -> Result<u64, TriggerError>;
    /// One line for logs.
    fn describe(&self) -> String;
    /// Whether the input is active now (a held button), for sources that have
    /// a level; `None` for sources that only produce events.
    fn is_active(&mut self) -> Result<Option<bool>, TriggerError> {
        Ok(None)
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock GPIO edge events use).
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Opens the trigger a configuration names.
pub fn open(source: &TriggerSource) -> Result<Box<dyn Trigger>, TriggerError> {
    Ok(match source {
        TriggerSource::Gpio { chip, line, edge, bias, debounce, active_low } => {
            Box::new(GpioTrigger::open(chip, *line, *edge, *bias, *debounce, *active_low)?)
        }
        TriggerSource::Interval { period, count } => {
            let (trigger, handle) = SimTrigger::new(format!("interval {} ms x {count}", period.as_millis()));
            let (period, count) = (*period, *count);
            std::thread::spawn(move || {
                let mut n = 0;
                while count == 0 || n < count {
                    std::thread::sleep(period);
                    if !handle.fire() && handle.is_closed() {
                        return;
                    }
                    n += 1;
                }
            });
            Box::new(trigger)
        }
        TriggerSource::Stdin {} => {
            let (trigger, handle) = SimTrigger::new("standard input (one trigger per line)".into());
            std::thread::spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    if line.is_err() || (!handle.fire() && handle.is_closed()) {
                        return;
                    }
                }
            });
            Box::new(trigger)
        }
        TriggerSource::Fifo { path } => {
            make_fifo(path)?;
            let (trigger, handle) =
                SimTrigger::new(format!("FIFO {} (one trigger per line)", path.display()));
            let path = path.clone();
            std::thread::spawn(move || loop {
                // Opening blocks until a writer appears; end of file means the writer left.
                let Ok(f) = std::fs::File::open(&path) else { return };
                for line in std::io::BufReader::new(f).lines() {
                    if line.is_err() || (!handle.fire() && handle.is_closed()) {
                        return;
                    }
                }
            });
            Box::new(trigger)
        }
    })
}

fn make_fifo(path: &Path) -> Result<(), TriggerError> {
    use rustix::fs::{FileType, Mode, CWD};
    let err = |m: String| TriggerError::Device { path: path.into(), message: m };
    match std::fs::metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()) => Ok(()),
        Ok(_) => Err(err("exists and is not a FIFO".into())),
        Err(_) => rustix::fs::mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o620), 0)
            .map_err(|e| err(format!("cannot create FIFO: {e}"))),
    }
}

/// The sending side of a [`SimTrigger`], for producer threads and tests.
#[derive(Debug, Clone)]
pub struct SimHandle {
    tx: SyncSender<u64>,
    dropped: Arc<AtomicU64>,
    closed: Arc<AtomicU64>,
    level: Arc<AtomicU64>,
}

impl SimHandle {
    /// Fires one trigger now. Returns false if the queue was full (the trigger is
    /// counted, not queued) or the receiver is gone.
    pub fn fire(&self) -> bool {
        match self.tx.try_send(monotonic_ns()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                self.closed.store(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Whether the trigger side has gone away.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed) == 1
    }

    /// Gives the simulated input a level (a held or released button) that
    /// [`Trigger::is_active`] reports; until called, the source has no level.
    pub fn set_active(&self, active: bool) {
        self.level.store(if active { LEVEL_HIGH } else { LEVEL_LOW }, Ordering::Relaxed);
    }
}

const LEVEL_NONE: u64 = 0;
const LEVEL_LOW: u64 = 1;
const LEVEL_HIGH: u64 = 2;

/// A simulated trigger fed through a bounded queue.
#[derive(Debug)]
pub struct SimTrigger {
    rx: Receiver<u64>,
    dropped: Arc<AtomicU64>,
    level: Arc<AtomicU64>,
    name: String,
}

impl SimTrigger {
    /// A trigger and the handle that fires it. When every handle is dropped and
    /// the queue is empty, the trigger reports [`Wait::Ended`].
    pub fn new(name: String) -> (SimTrigger, SimHandle) {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let level = Arc::new(AtomicU64::new(LEVEL_NONE));
        let handle = SimHandle {
            tx,
            dropped: dropped.clone(),
            closed: Arc::new(AtomicU64::new(0)),
            level: level.clone(),
        };
        (SimTrigger { rx, dropped, level, name }, handle)
    }
}

impl Trigger for SimTrigger {
    fn wait(&mut self, timeout: Duration) -> Result<Wait, TriggerError> {
        Ok(match self.rx.recv_timeout(timeout) {
            Ok(ts_ns) => Wait::Event(TriggerEvent { ts_ns }),
            Err(RecvTimeoutError::Timeout) => Wait::Timeout,
            Err(RecvTimeoutError::Disconnected) => Wait::Ended,
        })
    }

    fn drain(&mut self) -> Result<u64, TriggerError> {
        let mut n = self.dropped.swap(0, Ordering::Relaxed);
        loop {
            match self.rx.try_recv() {
                Ok(_) => n += 1,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return Ok(n),
            }
        }
    }

    fn describe(&self) -> String {
        format!("simulated trigger: {}", self.name)
    }

    fn is_active(&mut self) -> Result<Option<bool>, TriggerError> {
        Ok(match self.level.load(Ordering::Relaxed) {
            LEVEL_HIGH => Some(true),
            LEVEL_LOW => Some(false),
            _ => None,
        })
    }
}

/// A GPIO input line with kernel edge detection and debounce.
pub struct GpioTrigger {
    req: gpiocdev::Request,
    chip: PathBuf,
    line: u32,
    last_seqno: Option<u32>,
    lost: u64,
}

impl std::fmt::Debug for GpioTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpioTrigger").field("chip", &self.chip).field("line", &self.line).finish()
    }
}

impl GpioTrigger {
    /// Requests `line` on `chip` as an input with edge detection.
    pub fn open(
        chip: &Path,
        line: u32,
        edge: Edge,
        bias: Bias,
        debounce: Duration,
        active_low: bool,
    ) -> Result<GpioTrigger, TriggerError> {
        use gpiocdev::line::{Bias as B, EdgeDetection as E};
        let info = gpiocdev::Chip::from_path(chip).and_then(|c| c.info()).map_err(|e| {
            TriggerError::Device { path: chip.into(), message: format!("cannot open GPIO chip: {e}") }
        })?;
        if line >= info.num_lines {
            return Err(TriggerError::Device {
                path: chip.into(),
                message: no_such_line(line, &info.label, info.num_lines),
            });
        }
        let mut b = gpiocdev::Request::builder();
        b.on_chip(chip).with_consumer("clip-edge").with_line(line).as_input();
        b.with_edge_detection(match edge {
            Edge::Rising => E::RisingEdge,
            Edge::Falling => E::FallingEdge,
            Edge::Both => E::BothEdges,
        });
        match bias {
            Bias::AsIs => {}
            Bias::Disabled => {
                b.with_bias(B::Disabled);
            }
            Bias::PullUp => {
                b.with_bias(B::PullUp);
            }
            Bias::PullDown => {
                b.with_bias(B::PullDown);
            }
        }
        if !debounce.is_zero() {
            b.with_debounce_period(debounce);
        }
        if active_low {
            b.as_active_low();
        }
        let req = b.request().map_err(|e| TriggerError::Device {
            path: chip.into(),
            message: format!("cannot request line {line} for edge events: {e}"),
        })?;
        Ok(GpioTrigger { req, chip: chip.into(), line, last_seqno: None, lost: 0 })
    }

    fn read(&mut self) -> Result<TriggerEvent, TriggerError> {
        let ev = self.req.read_edge_event().map_err(|e| self.err(e))?;
        if let Some(prev) = self.last_seqno {
            // The kernel numbers events per line; a gap means its buffer overflowed.
            self.lost += u64::from(ev.line_seqno.wrapping_sub(prev).saturating_sub(1));
        }
        self.last_seqno = Some(ev.line_seqno);
        Ok(TriggerEvent { ts_ns: ev.timestamp_ns })
    }

    fn err(&self, e: impl std::fmt::Display) -> TriggerError {
        TriggerError::Device { path: self.chip.clone(), message: format!("line {}: {e}", self.line) }
    }
}

/// The message for a line number the chip does not have (GPIO trigger and output pin).
pub(crate) fn no_such_line(line: u32, chip_label: &str, lines: u32) -> String {
    format!("no line {line}: chip '{chip_label}' has {lines} lines (0 to {})", lines.saturating_sub(1))
}

impl Trigger for GpioTrigger {
    fn wait(&mut self, timeout: Duration) -> Result<Wait, TriggerError> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let mut fds = [PollFd::new(&self.req, PollFlags::IN)];
        let ts = Timespec { tv_sec: timeout.as_secs() as i64, tv_nsec: timeout.subsec_nanos() as i64 };
        match poll(&mut fds, Some(&ts)) {
            // A signal (SIGTERM) interrupts poll whatever SA_RESTART says: the
            // caller's loop checks its shutdown flag before waiting again.
            Err(rustix::io::Errno::INTR) => Ok(Wait::Timeout),
            Err(e) => Err(self.err(format!("poll: {e}"))),
            Ok(0) => Ok(Wait::Timeout),
            Ok(_) if fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP) => {
                Err(self.err("the line request was revoked (chip removed?)"))
            }
            Ok(_) => Ok(Wait::Event(self.read()?)),
        }
    }

    fn drain(&mut self) -> Result<u64, TriggerError> {
        let mut n = std::mem::take(&mut self.lost);
        while self.req.has_edge_event().map_err(|e| self.err(e))? {
            self.read()?;
            n += 1;
        }
        Ok(n + std::mem::take(&mut self.lost))
    }

    fn describe(&self) -> String {
        format!("GPIO {} line {}", self.chip.display(), self.line)
    }

    fn is_active(&mut self) -> Result<Option<bool>, TriggerError> {
        let v = self.req.value(self.line).map_err(|e| self.err(e))?;
        Ok(Some(v == gpiocdev::line::Value::Active))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_trigger_queues_counts_overflow_and_ends() {
        let (mut t, h) = SimTrigger::new("test".into());
        assert_eq!(t.wait(Duration::from_millis(1)).expect("wait"), Wait::Timeout);
        for _ in 0..(QUEUE + 36) {
            h.fire();
        }
        let first = t.wait(Duration::from_millis(1)).expect("wait");
        assert!(matches!(first, Wait::Event(_)));
        assert_eq!(t.drain().expect("drain"), (QUEUE - 1 + 36) as u64);
        assert_eq!(t.drain().expect("drain"), 0);
        drop(h);
        assert_eq!(t.wait(Duration::from_millis(1)).expect("wait"), Wait::Ended);
    }

    #[test]
    fn sim_level_is_none_until_set() {
        let (mut t, h) = SimTrigger::new("button".into());
        assert_eq!(t.is_active().expect("level"), None);
        h.set_active(true);
        assert_eq!(t.is_active().expect("level"), Some(true));
        h.set_active(false);
        assert_eq!(t.is_active().expect("level"), Some(false));
    }

    #[test]
    fn timestamps_are_monotonic() {
        let (mut t, h) = SimTrigger::new("test".into());
        h.fire();
        h.fire();
        let Wait::Event(a) = t.wait(Duration::from_millis(5)).expect("a") else { panic!("a") };
        let Wait::Event(b) = t.wait(Duration::from_millis(5)).expect("b") else { panic!("b") };
        assert!(b.ts_ns >= a.ts_ns && a.ts_ns > 0);
    }

    #[test]
    fn interval_source_fires_count_times_then_ends() {
        let mut t =
            open(&TriggerSource::Interval { period: Duration::from_millis(2), count: 3 }).expect("open");
        let mut n = 0;
        loop {
            match t.wait(Duration::from_secs(2)).expect("wait") {
                Wait::Event(_) => n += 1,
                Wait::Timeout => panic!("timeout"),
                Wait::Ended => break,
            }
        }
        assert_eq!(n, 3);
    }

    #[test]
    fn fifo_source_fires_per_line() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("trigger");
        let mut t = open(&TriggerSource::Fifo { path: path.clone() }).expect("open");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"go\ngo\n"))
            .expect("write fifo");
        assert!(matches!(t.wait(Duration::from_secs(2)).expect("wait"), Wait::Event(_)));
        assert!(matches!(t.wait(Duration::from_secs(2)).expect("wait"), Wait::Event(_)));
        let not_fifo = dir.path().join("plain");
        std::fs::write(&not_fifo, "x").expect("w");
        let Err(e) = open(&TriggerSource::Fifo { path: not_fifo }) else { panic!("accepted a plain file") };
        let e = e.to_string();
        assert!(e.contains("not a FIFO"), "{e}");
    }

    #[test]
    fn missing_gpio_chip_is_a_clear_error() {
        let e = GpioTrigger::open(
            Path::new("/dev/gpiochip-none"),
            3,
            Edge::Rising,
            Bias::AsIs,
            Duration::ZERO,
            false,
        )
        .expect_err("no chip")
        .to_string();
        assert!(e.starts_with("/dev/gpiochip-none: cannot open GPIO chip"), "{e}");
    }
}
