//! The daemon's hardware and service manager: what [`crate::Daemon::start`]
//! is handed. Each part is a trait object ([`Trigger`], [`FrameSource`], a
//! [`Pulser`] over any embedded-hal `OutputPin`) or a value ([`Notifier`]), so
//! tests inject their own and [`Devices::open`] opens the real or simulated
//! ones a configuration names.

use clip_edge_runtime::Bundle;

use crate::camera::{FrameSource, Supervised};
use crate::config::Config;
use crate::daemon::StartError;
use crate::notify::Notifier;
use crate::output::Pulser;
use crate::trigger::{self, Trigger};

/// The trigger, camera, output pin and enrolment button of one daemon.
pub struct Devices {
    /// Says when to look.
    pub trigger: Box<dyn Trigger>,
    /// Hands out frames. [`Devices::open`] gives a [`Supervised`] camera, reopened with back-off after a failure.
    pub camera: Box<dyn FrameSource>,
    /// Pulsed when a chosen label wins, blinked after an enrolment; `None`: no output.
    pub pin: Option<Pulser>,
    /// Press and hold to enrol frames as shots of `enroll.class`; used only
    /// with an `[enroll]` section.
    pub button: Option<Box<dyn Trigger>>,
    /// systemd's notification socket: readiness, and watchdog pings that long
    /// work (an enrolment, a burst) keeps sending.
    pub service: Notifier,
}

impl std::fmt::Debug for Devices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devices")
            .field("trigger", &self.trigger.describe())
            .field("camera", &self.camera.describe())
            .field("pin", &self.pin)
            .field("button", &self.button.as_ref().map(|b| b.describe()))
            .field("service", &self.service)
            .finish()
    }
}

impl Devices {
    /// Opens what `config` names, in this order: the trigger, the enrolment
    /// button, the camera (supervised; V4L2 frames halved while their shorter
    /// side stays at least twice `bundle`'s input), the output pin. The first
    /// failure is returned, naming the device. The service manager is the one
    /// the environment names ([`Notifier::from_env`]).
    pub fn open(config: &Config, bundle: &Bundle) -> Result<Devices, StartError> {
        let trigger = trigger::open(&config.trigger.source)?;
        let button = config.enroll.as_ref().and_then(|e| e.button.as_ref()).map(trigger::open).transpose()?;
        let camera = Supervised::open(&config.camera, 2 * bundle.preprocess.size)?;
        let pin = config.pin.as_ref().map(Pulser::open).transpose()?;
        Ok(Devices { trigger, camera: Box::new(camera), pin, button, service: Notifier::from_env() })
    }
}
