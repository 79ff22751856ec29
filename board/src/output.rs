//! The output pin: pulsed for a configured time when a chosen label wins.
//! Any embedded-hal `OutputPin` drives it: linux-embedded-hal's `CdevPin` on
//! a board, [`SimPin`] on a host, embedded-hal-mock's pin in tests.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use embedded_hal::digital::OutputPin;

use crate::config::PinConfig;

/// An output pin failure.
#[derive(Debug, thiserror::Error)]
#[error("{device}: {message}")]
pub struct OutputError {
    /// The chip device, or "simulated pin".
    pub device: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// Object-safe view of an `OutputPin`.
pub trait Level: Send {
    /// Drives the pin high (`true`) or low.
    fn set(&mut self, high: bool) -> Result<(), String>;
}

impl<P: OutputPin + Send> Level for P {
    fn set(&mut self, high: bool) -> Result<(), String> {
        let r = if high { self.set_high() } else { self.set_low() };
        r.map_err(|e| format!("{e:?}"))
    }
}

/// A host-side pin that records and logs its transitions.
#[derive(Debug, Clone, Default)]
pub struct SimPin {
    line: u32,
    transitions: Arc<Mutex<Vec<bool>>>,
}

impl SimPin {
    /// A simulated pin for `line`.
    pub fn new(line: u32) -> Self {
        SimPin { line, transitions: Arc::default() }
    }

    /// Levels driven so far, in order (shared with clones).
    pub fn transitions(&self) -> Vec<bool> {
        self.transitions.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

impl embedded_hal::digital::ErrorType for SimPin {
    type Error = std::convert::Infallible;
}

impl OutputPin for SimPin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        log::info!("simulated pin {}: low", self.line);
        if let Ok(mut t) = self.transitions.lock() {
            t.push(false);
        }
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Self::Error> {
        log::info!("simulated pin {}: high", self.line);
        if let Ok(mut t) = self.transitions.lock() {
            t.push(true);
        }
        Ok(())
    }
}

/// Requests `line` on `chip` as an output through the character device.
pub fn open_cdev(
    chip: &Path,
    line: u32,
    active_low: bool,
) -> Result<linux_embedded_hal::CdevPin, OutputError> {
    use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
    let err = |m: String| OutputError { device: chip.into(), message: m };
    let mut c = Chip::new(chip).map_err(|e| err(format!("cannot open GPIO chip: {e}")))?;
    if line >= c.num_lines() {
        return Err(err(crate::trigger::no_such_line(line, c.label(), c.num_lines())));
    }
    let l = c.get_line(line).map_err(|e| err(format!("no line {line}: {e}")))?;
    let mut flags = LineRequestFlags::OUTPUT;
    if active_low {
        flags |= LineRequestFlags::ACTIVE_LOW;
    }
    let handle =
        l.request(flags, 0, "clip-edge").map_err(|e| err(format!("cannot request line {line}: {e}")))?;
    linux_embedded_hal::CdevPin::new(handle).map_err(|e| err(format!("line {line}: {e}")))
}

/// Drives a pin active for `pulse` after each firing label, then inactive.
pub struct Pulser {
    pin: Box<dyn Level>,
    device: PathBuf,
    pulse: Duration,
    labels: Vec<String>,
    until: Option<Instant>,
    pulses: u64,
}

impl std::fmt::Debug for Pulser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pulser").field("device", &self.device).field("pulse", &self.pulse).finish()
    }
}

impl Pulser {
    /// Wraps a pin and drives it inactive (low; active-low is the pin's business).
    pub fn new(
        mut pin: Box<dyn Level>,
        device: PathBuf,
        pulse: Duration,
        labels: Vec<String>,
    ) -> Result<Self, OutputError> {
        pin.set(false).map_err(|m| OutputError { device: device.clone(), message: m })?;
        Ok(Pulser { pin, device, pulse, labels, until: None, pulses: 0 })
    }

    /// The configuration's output (pulse length, firing labels) on `pin`:
    /// whatever drives the line, such as a [`SimPin`] or embedded-hal-mock's
    /// pin in tests. Errors name the chip, or "simulated pin N" without one.
    pub fn with_pin(config: &PinConfig, pin: Box<dyn Level>) -> Result<Self, OutputError> {
        let device = match &config.chip {
            Some(chip) => chip.clone(),
            None => PathBuf::from(format!("simulated pin {}", config.line)),
        };
        Self::new(pin, device, config.pulse, config.labels.clone())
    }

    /// Opens the pin a configuration names: the chip's line, or a [`SimPin`]
    /// that logs its transitions when it names no chip.
    pub fn open(config: &PinConfig) -> Result<Self, OutputError> {
        match &config.chip {
            Some(chip) => Self::with_pin(config, Box::new(open_cdev(chip, config.line, config.active_low)?)),
            None => Self::with_pin(config, Box::new(SimPin::new(config.line))),
        }
    }

    /// The labels whose match fires the pin (empty: any match).
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Whether a match on `label` fires the pin.
    pub fn fires_for(&self, label: &str) -> bool {
        self.labels.is_empty() || self.labels.iter().any(|l| l == label)
    }

    /// Starts (or extends) a pulse.
    pub fn start(&mut self, now: Instant) -> Result<(), OutputError> {
        if self.until.is_none() {
            self.set(true)?;
            self.pulses += 1;
        }
        self.until = Some(now + self.pulse);
        Ok(())
    }

    /// Ends the pulse if its time is up; returns whether the pin is still active.
    pub fn poll(&mut self, now: Instant) -> Result<bool, OutputError> {
        match self.until {
            Some(t) if now >= t => {
                self.set(false)?;
                self.until = None;
                Ok(false)
            }
            Some(_) => Ok(true),
            None => Ok(false),
        }
    }

    /// When the current pulse ends, if one is running.
    pub fn deadline(&self) -> Option<Instant> {
        self.until
    }

    /// Pulses started so far.
    pub fn pulses(&self) -> u64 {
        self.pulses
    }

    /// Blinks the pin `times` times, `period` on and `period` off, blocking
    /// (an acknowledgement, such as a completed enrolment). A running pulse is
    /// ended first; blinks are not counted as pulses.
    pub fn blink(&mut self, times: u32, period: Duration) -> Result<(), OutputError> {
        self.release()?;
        for _ in 0..times {
            self.set(true)?;
            std::thread::sleep(period);
            self.set(false)?;
            std::thread::sleep(period);
        }
        Ok(())
    }

    /// Drives the pin inactive now (shutdown).
    pub fn release(&mut self) -> Result<(), OutputError> {
        if self.until.take().is_some() {
            self.set(false)?;
        }
        Ok(())
    }

    fn set(&mut self, high: bool) -> Result<(), OutputError> {
        self.pin.set(high).map_err(|m| OutputError { device: self.device.clone(), message: m })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};

    #[test]
    fn a_pulse_goes_high_then_low_once() {
        let mock = Mock::new(&[
            Transaction::set(State::Low),
            Transaction::set(State::High),
            Transaction::set(State::Low),
        ]);
        let mut done = mock.clone();
        let mut p =
            Pulser::new(Box::new(mock), "mock".into(), Duration::from_millis(100), vec!["person".into()])
                .expect("pin");
        assert!(p.fires_for("person") && !p.fires_for("cat"));
        let t0 = Instant::now();
        p.start(t0).expect("start");
        p.start(t0 + Duration::from_millis(50)).expect("extend: no second rising edge");
        assert!(p.poll(t0 + Duration::from_millis(120)).expect("poll"), "extended to 150 ms");
        assert!(!p.poll(t0 + Duration::from_millis(151)).expect("poll"));
        assert_eq!(p.pulses(), 1);
        done.done();
    }

    #[test]
    fn release_drives_inactive_only_when_active() {
        let mock = Mock::new(&[
            Transaction::set(State::Low),
            Transaction::set(State::High),
            Transaction::set(State::Low),
        ]);
        let mut done = mock.clone();
        let mut p = Pulser::new(Box::new(mock), "mock".into(), Duration::from_secs(5), vec![]).expect("pin");
        assert!(p.fires_for("anything"));
        p.start(Instant::now()).expect("start");
        p.release().expect("release");
        p.release().expect("no second low");
        done.done();
    }

    #[test]
    fn blink_ends_a_pulse_then_toggles() {
        let mock = Mock::new(&[
            Transaction::set(State::Low),
            Transaction::set(State::High),
            Transaction::set(State::Low),
            Transaction::set(State::High),
            Transaction::set(State::Low),
            Transaction::set(State::High),
            Transaction::set(State::Low),
        ]);
        let mut done = mock.clone();
        let mut p = Pulser::new(Box::new(mock), "mock".into(), Duration::from_secs(5), vec![]).expect("pin");
        p.start(Instant::now()).expect("start");
        p.blink(2, Duration::from_millis(1)).expect("blink");
        assert_eq!((p.pulses(), p.deadline()), (1, None));
        done.done();
    }

    #[test]
    fn a_configured_pulser_drives_the_pin_it_is_given() {
        let config = PinConfig {
            chip: None,
            line: 4,
            pulse: Duration::from_millis(10),
            labels: vec!["van".into()],
            active_low: false,
        };
        let pin = SimPin::new(4);
        let mut p = Pulser::with_pin(&config, Box::new(pin.clone())).expect("pin");
        assert_eq!(
            (format!("{p:?}").contains("simulated pin 4"), p.labels()),
            (true, &["van".to_string()][..])
        );
        let t0 = Instant::now();
        p.start(t0).expect("start");
        p.poll(t0 + Duration::from_millis(11)).expect("poll");
        assert_eq!(pin.transitions(), vec![false, true, false]);
        assert!(Pulser::open(&config).is_ok(), "no chip: a simulated pin");
    }

    #[test]
    fn missing_chip_is_a_clear_error() {
        let Err(e) = open_cdev(Path::new("/dev/gpiochip-none"), 4, false) else {
            panic!("opened a missing chip")
        };
        let e = e.to_string();
        assert!(e.starts_with("/dev/gpiochip-none: cannot open GPIO chip"), "{e}");
    }
}
