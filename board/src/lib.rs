//! Device side of clip-edge: a GPIO event captures a camera frame, the frame
//! is classified against the prompt store on flash, and the result drives an
//! output pin and a JSON-lines event. This is the only crate that knows Linux
//! GPIO or V4L2; each real backend has a host-side twin (simulated trigger,
//! replay camera, simulated pin).
//!
//! - [`config`]: the TOML configuration, validated once.
//! - [`trigger`]: GPIO character device (uAPI v2) and simulated triggers.
//! - [`camera`]: V4L2 and replay frame sources, supervised with back-off.
//! - [`output`]: the pulsed output pin over embedded-hal's `OutputPin`.
//! - [`devices`]: the trigger, camera, pin and button a daemon is started with.
//! - [`decision`]: the burst's k-of-n vote.
//! - [`events`]: the JSON-lines event schema (`docs/events.md`).
//! - [`enroll`]: few-shot enrolment of frames into the prompt store.
//! - [`mqtt`]: events to an MQTT broker through an on-flash outbox, Home Assistant discovery.
//! - [`daemon`]: the loop.

pub mod camera;
pub mod config;
pub mod daemon;
pub mod decision;
pub mod devices;
pub mod enroll;
pub mod events;
pub mod mqtt;
pub mod notify;
pub mod output;
pub mod trigger;

pub use config::Config;
pub use daemon::{Daemon, Model, StartError, Stats};
pub use devices::Devices;
