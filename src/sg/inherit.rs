//! File descriptors inherited from the service manager (systemd socket activation, `sd_listen_fds(3)`).
//!
//! Lives here because turning a raw inherited fd into an owned one is `unsafe`, and the sg module is the only
//! place the crate allows that.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// Takes ownership of the inherited descriptor `fd` when it is open, and marks it close-on-exec.
///
/// The caller must call this at most once per descriptor, for descriptors the service manager passed
/// (`LISTEN_PID` equals our pid); nothing else in the process owns them.
pub fn take_inherited(fd: RawFd) -> Option<OwnedFd> {
    if fd < LISTEN_FDS_START {
        return None;
    }
    fcntl(fd, FcntlArg::F_GETFD).ok()?;
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).ok()?;
    // SAFETY: F_GETFD just succeeded, so `fd` is an open descriptor; it was passed to us by the service manager
    // under LISTEN_FDS (checked by the caller against LISTEN_PID) and no other object in this process owns it, so
    // the new OwnedFd is its sole owner and closes it exactly once.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_or_stdio_descriptors_are_refused() {
        assert!(take_inherited(0).is_none());
        assert!(take_inherited(100_000).is_none());
    }
}
