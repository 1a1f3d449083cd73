//! The Linux sg driver (v3 asynchronous `write()`/`read()` interface) and sysfs discovery.
//! The only module with `unsafe` code.
//!
//! - [`SgTransport`]: a [`crate::transport::Transport`] over one `/dev/sgN`, for the event loop.
//! - [`probe`]: the blocking `ioctl(SG_IO)` form, for one-shot tools only.
//! - [`discover`]: which sg devices exist (sysfs) and kernel uevents about them.
//! - [`sys`]: the driver's ABI.

pub mod discover;
pub mod inherit;
pub mod probe;
pub mod sys;
mod transport;

#[cfg(test)]
mod test_utils;

pub use transport::{SgError, SgTransport, TRANSFER_LIMIT};
