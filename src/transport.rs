//! The seam between the event loop and SCSI devices.
//!
//! A [`Transport`] is one SCSI device (a changer or a tape drive) reached asynchronously: the caller submits a
//! [`Command`] under a [`Tag`] it chooses, waits for the transport's fd to become readable, and reaps
//! [`Completion`]s until [`Transport::reap`] returns `Ok(None)` (the analogue of `EAGAIN`). Completions may come back
//! in any order; the tag correlates them.
//!
//! Two implementations: [`crate::sg::SgTransport`] (the Linux sg driver's v3 `write()`/`read()` interface) and
//! [`crate::emu::EmuTransport`] (vlib's socket protocol, which has the same shape).
//!
//! The SCSI side of a command ([`Command`], [`DataDirection`], the [`status`] byte) is pure SAM and lives in
//! [`crate::scsi::command`]; it is re-exported here so callers name the seam in one place.
//!
//! Errors follow one rule: a transport failure (the fd or the driver failing, the device vanishing) is a
//! [`TransportError`]; a SCSI failure (CHECK CONDITION with sense) is a normal [`Response`] that the caller
//! interprets.

use std::os::fd::BorrowedFd;
use std::time::Duration;

pub use crate::scsi::command::{status, Command, DataDirection};

/// The caller's correlation tag for one command. Unique among the commands in flight on one transport.
pub type Tag = u32;

/// What the device answered to one command that the transport delivered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    /// SCSI status byte (see [`status`]).
    pub status: u8,
    /// Host adapter status (Linux `DID_*`): 0 when the command reached the device.
    pub host_status: u16,
    /// Driver status (Linux `DRIVER_*`), with the sense flag masked off.
    pub driver_status: u16,
    /// Sense data, when the device returned any (autosense).
    pub sense: Vec<u8>,
    /// Data in, truncated to what the device actually moved.
    pub data: Vec<u8>,
    /// Residual: bytes requested but not transferred.
    pub resid: u32,
    /// How long the command took, as the driver measured it.
    pub duration: Duration,
}

impl Response {
    /// True when the status is GOOD and the host and driver report no error.
    pub fn is_good(&self) -> bool {
        self.status == status::GOOD && self.host_status == 0 && self.driver_status == 0
    }
}

/// Linux host status values (`DID_*` in include/scsi/scsi_status.h) the daemon reacts to.
pub mod host_status {
    /// DID_OK.
    pub const OK: u16 = 0x00;
    /// DID_NO_CONNECT: the device is not there.
    pub const NO_CONNECT: u16 = 0x01;
    /// DID_TIME_OUT: the command timed out.
    pub const TIME_OUT: u16 = 0x03;
    /// DID_ABORT.
    pub const ABORT: u16 = 0x05;
}

/// One finished command.
#[derive(Debug)]
pub struct Completion {
    /// The tag given at submission.
    pub tag: Tag,
    /// The device's answer, or why the command never got one.
    pub result: Result<Response, TransportError>,
}

/// A failure of the transport itself (never a SCSI status).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The device disappeared (POLLHUP, ENODEV, ENXIO, EIO, or the emulator closed the connection).
    #[error("Device is gone")]
    DeviceGone,
    /// The command did not finish within its timeout.
    #[error("Command timed out")]
    TimedOut,
    /// The tag is already in flight on this transport.
    #[error("Tag {0} is already in flight")]
    DuplicateTag(Tag),
    /// The command is malformed (CDB length, allocation length over the limit).
    #[error("Invalid command")]
    InvalidCommand,
    /// The device answered something the transport cannot decode.
    #[error("Protocol violation")]
    Protocol,
    /// An unexpected I/O error on the device's fd.
    #[error("I/O error on the device")]
    Io(#[source] std::io::Error),
}

/// An asynchronous SCSI device.
///
/// Call order for the event loop: register [`Transport::fd`] for readable (and writable while
/// [`Transport::wants_write`]); on readiness call [`Transport::on_writable`] if writable, then [`Transport::reap`]
/// until it returns `Ok(None)`. Readiness is a hint: spurious wake-ups are harmless.
pub trait Transport: std::fmt::Debug {
    /// Submits a command. A full device queue is not an error: the transport queues the command and submits it
    /// when a slot frees. Returns `Err` only when the command cannot ever be submitted.
    fn submit(&mut self, tag: Tag, command: Command) -> Result<(), TransportError>;

    /// Returns one finished command, or `Ok(None)` when none is ready now.
    ///
    /// When the device vanishes, every command in flight is returned as a completion carrying
    /// `Err(TransportError::DeviceGone)`, after which `reap` returns `Err(TransportError::DeviceGone)`.
    fn reap(&mut self) -> Result<Option<Completion>, TransportError>;

    /// The fd to poll for readiness.
    fn fd(&self) -> BorrowedFd<'_>;

    /// True while the transport has queued bytes or commands to push out when the fd becomes writable.
    fn wants_write(&self) -> bool {
        false
    }

    /// Pushes queued output after a writable event.
    fn on_writable(&mut self) -> Result<(), TransportError> {
        Ok(())
    }

    /// Number of commands submitted and not yet reaped.
    fn in_flight(&self) -> usize;
}
