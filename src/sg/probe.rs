//! One-shot, blocking SCSI commands through `ioctl(SG_IO)`, for checks and tests outside the daemon (the vmlab
//! batch). `rsmd --list-devices` and `--map-drives` use [`super::SgTransport`] through their own blocking driver.
//!
//! **The server must never call anything here**: `SG_IO` blocks the calling thread until the device answers (a robot
//! move can take minutes), even on a non-blocking fd. The event loop uses [`super::SgTransport`].
//!
//! # References
//! Linux `include/scsi/sg.h` (`SG_IO`), sg3_utils "SCSI Generic (sg) HOWTO", section "SG_IO".

use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::ptr;

use super::sys::{self, sg_io_hdr};
use super::transport::{command_buffers, empty_header, response_from_header, timeout_ms, Buffers};
use crate::transport::{Command, Response, TransportError};

/// Opens `path` and runs one command on it, blocking until it finishes. Never call this from the server.
pub fn execute_blocking(path: &Path, command: &Command) -> Result<Response, TransportError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(TransportError::Io)?;
    execute_blocking_fd(file.as_fd(), command)
}

/// Runs one command on an open sg fd, blocking until it finishes. Never call this from the server.
pub fn execute_blocking_fd(fd: BorrowedFd<'_>, command: &Command) -> Result<Response, TransportError> {
    let Buffers { cdb, mut data, dxfer_direction } = command_buffers(command.clone())?;
    let mut sense = [0u8; 96];
    let mut hdr = sg_io_hdr {
        dxfer_direction,
        cmd_len: u8::try_from(cdb.len()).map_err(|_| TransportError::InvalidCommand)?,
        mx_sb_len: u8::try_from(sense.len()).map_err(|_| TransportError::InvalidCommand)?,
        dxfer_len: u32::try_from(data.len()).map_err(|_| TransportError::InvalidCommand)?,
        dxferp: if data.is_empty() { ptr::null_mut() } else { data.as_mut_ptr().cast() },
        cmdp: cdb.as_ptr(),
        sbp: sense.as_mut_ptr(),
        timeout: timeout_ms(command.timeout),
        pack_id: 0,
        ..empty_header()
    };
    let p: *mut sg_io_hdr = &mut hdr;
    // SAFETY: `fd` is borrowed, hence open, for the call. `hdr` and the `cdb`, `data` and `sense` buffers it points
    // to are locals that outlive the ioctl, which returns only after the driver has finished with them.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), sys::SG_IO, p) };
    if r < 0 {
        // No retry on EINTR: the command may already have reached the device.
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENODEV | libc::ENXIO) => TransportError::DeviceGone,
            _ => TransportError::Io(e),
        });
    }
    response_from_header(&hdr, data, &sense, dxfer_direction)
}
