//! A fake sg driver for [`super::SgTransport`] tests, with knobs for every way the real one can answer: a full
//! queue (`EAGAIN` or `EDOM`), `EINTR`, `EIO`/`ENODEV`, short reads, completions in any order, residuals, sense.
//!
//! Like the kernel, it copies the CDB and data out when a header is written, and writes data and sense through the
//! header's pointers when the header is read back.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use super::sys::{self, sg_io_hdr, SG_IO_HDR_SIZE};
use super::transport::{pack_id_to_tag, tag_to_pack_id, SgFd};
use crate::transport::Tag;

/// A command the fake driver accepted.
#[derive(Debug, Clone)]
pub(crate) struct Submitted {
    /// The header as written (its pointers are the transport's buffers).
    pub hdr: sg_io_hdr,
    /// The CDB, copied at write time.
    pub cdb: Vec<u8>,
    /// Data out, copied at write time (empty unless `SG_DXFER_TO_DEV`).
    pub data_out: Vec<u8>,
}

impl Submitted {
    /// The caller's tag.
    pub fn tag(&self) -> Tag {
        pack_id_to_tag(self.hdr.pack_id)
    }
}

/// How the fake driver finishes one command.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reply {
    pub status: u8,
    pub host_status: u16,
    pub driver_status: u16,
    pub sense: Vec<u8>,
    pub data: Vec<u8>,
    /// `None`: `dxfer_len` minus the bytes of `data` written.
    pub resid: Option<i32>,
    pub duration_ms: u32,
}

/// The fake driver's state, shared between the transport's [`FakeSg`] and the test.
#[derive(Debug)]
pub(crate) struct FakeState {
    /// Writes fail with `full_errno` while this many commands are queued (the real driver: [`sys::SG_MAX_QUEUE`]).
    pub queue_limit: usize,
    /// `EAGAIN` or `EDOM`.
    pub full_errno: i32,
    /// Written, not finished.
    pub queued: Vec<Submitted>,
    /// Finished, returned by reads in this order.
    pub done: VecDeque<(Submitted, Reply)>,
    /// Errors the next writes return, one each, before anything else.
    pub write_errors: VecDeque<i32>,
    /// Errors the next reads return, one each, before anything else.
    pub read_errors: VecDeque<i32>,
    /// The next read of a finished command returns this many bytes instead of a whole header.
    pub short_read: Option<usize>,
    /// When set, every read and write fails with this errno (the device is gone).
    pub gone: Option<i32>,
    /// Headers read back whose `pack_id` was forged by the test.
    pub forged: VecDeque<i32>,
    /// Number of write calls, failed ones included.
    pub writes: usize,
    /// Number of read calls, failed ones included.
    pub reads: usize,
}

// SAFETY: the raw pointers in the recorded headers point into buffers owned by the transport that wrote them; the
// fake only dereferences them inside `SgFd` calls made by that transport, under the `SgFd` contract, from whichever
// thread owns the transport at the time. Sending the state to another thread does not dereference anything.
unsafe impl Send for FakeState {}

/// The test's handle on the fake driver.
pub(crate) type FakeHandle = Arc<Mutex<FakeState>>;

/// The fake driver as the transport sees it.
#[derive(Debug)]
pub(crate) struct FakeSg {
    state: FakeHandle,
    fd: OwnedFd,
    _peer: UnixStream,
}

/// A fake driver with the real queue limit, and the handle to script it.
pub(crate) fn fake() -> (FakeSg, FakeHandle) {
    let state = Arc::new(Mutex::new(FakeState {
        queue_limit: sys::SG_MAX_QUEUE,
        full_errno: libc::EDOM,
        queued: Vec::new(),
        done: VecDeque::new(),
        write_errors: VecDeque::new(),
        read_errors: VecDeque::new(),
        short_read: None,
        gone: None,
        forged: VecDeque::new(),
        writes: 0,
        reads: 0,
    }));
    let (a, b) = UnixStream::pair().unwrap();
    (FakeSg { state: state.clone(), fd: a.into(), _peer: b }, state)
}

impl FakeState {
    /// Finishes the queued command `tag` with `reply`; the next reads return finished commands in finishing order.
    pub fn complete(&mut self, tag: Tag, reply: Reply) {
        let i = self.queued.iter().position(|s| s.tag() == tag).expect("tag is queued in the fake driver");
        let submitted = self.queued.remove(i);
        self.done.push_back((submitted, reply));
    }

    /// Tags of the queued commands, in submission order.
    pub fn queued_tags(&self) -> Vec<Tag> {
        self.queued.iter().map(Submitted::tag).collect()
    }
}

impl SgFd for FakeSg {
    unsafe fn write_hdr(&self, hdr: &sg_io_hdr) -> io::Result<usize> {
        let mut st = self.state.lock().unwrap();
        st.writes += 1;
        if let Some(errno) = st.write_errors.pop_front().or(st.gone) {
            return Err(io::Error::from_raw_os_error(errno));
        }
        if st.queued.len() >= st.queue_limit {
            return Err(io::Error::from_raw_os_error(st.full_errno));
        }
        assert_eq!(hdr.interface_id, sys::SG_INTERFACE_ID_ORIG);
        assert!(hdr.usr_ptr.is_null(), "usr_ptr must never carry a pointer");
        // SAFETY: the caller guarantees (SgFd::write_hdr contract) that `cmdp` is valid for `cmd_len` bytes.
        let cdb = unsafe { std::slice::from_raw_parts(hdr.cmdp, usize::from(hdr.cmd_len)) }.to_vec();
        let data_out = if hdr.dxfer_direction == sys::SG_DXFER_TO_DEV && hdr.dxfer_len > 0 {
            let len = usize::try_from(hdr.dxfer_len).unwrap();
            // SAFETY: the caller guarantees `dxferp` is valid for `dxfer_len` bytes while the command is queued.
            unsafe { std::slice::from_raw_parts(hdr.dxferp.cast::<u8>(), len) }.to_vec()
        } else {
            Vec::new()
        };
        st.queued.push(Submitted { hdr: *hdr, cdb, data_out });
        Ok(SG_IO_HDR_SIZE)
    }

    unsafe fn read_hdr(&self, out: &mut sg_io_hdr) -> io::Result<usize> {
        let mut st = self.state.lock().unwrap();
        st.reads += 1;
        assert_eq!(out.pack_id, -1, "reads ask for any finished command");
        assert!(out.dxfer_direction < 0, "a v3 read carries a negative dxfer_direction");
        if let Some(errno) = st.read_errors.pop_front().or(st.gone) {
            return Err(io::Error::from_raw_os_error(errno));
        }
        if let Some(pack_id) = st.forged.pop_front() {
            *out = sg_io_hdr { pack_id, ..*out };
            return Ok(SG_IO_HDR_SIZE);
        }
        let Some((submitted, reply)) = st.done.pop_front() else {
            return Err(io::Error::from_raw_os_error(libc::EAGAIN));
        };
        let hdr = submitted.hdr;
        let mut written = 0;
        if hdr.dxfer_direction == sys::SG_DXFER_FROM_DEV && !hdr.dxferp.is_null() {
            let cap = usize::try_from(hdr.dxfer_len).unwrap();
            written = reply.data.len().min(cap);
            // SAFETY: the SgFd::read_hdr contract keeps the buffers of every written, unread header alive; `dxferp`
            // is valid for `dxfer_len` bytes and we write at most that many.
            unsafe { std::ptr::copy_nonoverlapping(reply.data.as_ptr(), hdr.dxferp.cast::<u8>(), written) };
        }
        let sense_len = reply.sense.len().min(usize::from(hdr.mx_sb_len));
        // SAFETY: as above, `sbp` is valid for `mx_sb_len` bytes and we write at most that many.
        unsafe { std::ptr::copy_nonoverlapping(reply.sense.as_ptr(), hdr.sbp, sense_len) };
        let resid =
            reply.resid.unwrap_or_else(|| i32::try_from(hdr.dxfer_len).unwrap() - i32::try_from(written).unwrap());
        *out = sg_io_hdr {
            status: reply.status,
            masked_status: reply.status >> 1,
            sb_len_wr: u8::try_from(sense_len).unwrap(),
            host_status: reply.host_status,
            driver_status: reply.driver_status,
            resid,
            duration: reply.duration_ms,
            info: u32::from(reply.status != 0 || reply.host_status != 0 || reply.driver_status != 0),
            ..hdr
        };
        if let Some(n) = st.short_read.take() {
            return Ok(n);
        }
        Ok(SG_IO_HDR_SIZE)
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The `pack_id` a fake reply carries for `tag` (for forging stray completions).
pub(crate) fn pack_id(tag: Tag) -> i32 {
    tag_to_pack_id(tag)
}
