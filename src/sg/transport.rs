//! [`SgTransport`]: one `/dev/sgN` driven through the sg v3 asynchronous interface.
//!
//! # Primer
//! The sg driver queues up to [`SG_MAX_QUEUE`](super::sys::SG_MAX_QUEUE) commands per open fd.
//! `write(fd, &sg_io_hdr)` submits one (the header names the CDB, data and sense buffers by pointer); the fd polls
//! readable when a command has finished, and
//! `read(fd, &mut sg_io_hdr)` returns one finished header, whose `pack_id` says which command it was. rsmd never uses
//! `usr_ptr`: `pack_id` carries the caller's [`Tag`] and indexes a table that owns every buffer.
//!
//! Buffer ownership: with indirect I/O (flags 0, what rsmd uses) the kernel copies the CDB and data out at `write()`
//! time into its own pages, and copies data in and sense at `read()` time. Each command's buffers live in its
//! [`Slot`], boxed so they never move, from submission until the `read()` that returns the command (or until the
//! transport drops the command because the device is gone, after which no `read()` for it happens).
//!
//! A full queue (`EAGAIN`/`EDOM`) is not an error: the command waits in a FIFO and is written on a later
//! [`Transport::reap`] (each reaped command frees a driver slot). `ENODEV`, `ENXIO` or `EIO` means the device is gone:
//! every command in flight is returned as a `DeviceGone` completion, one per `reap` call, and then `reap` returns
//! `Err(DeviceGone)` forever.
//!
//! # References
//! Linux `include/scsi/sg.h`, `drivers/scsi/sg.c` (`sg_write`, `sg_read`, `sg_new_read`); the sg3_utils
//! "SCSI Generic (sg) HOWTO", section "Asynchronous usage".

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr;
use std::time::Duration;

use super::sys::{self, sg_io_hdr, SG_IO_HDR_SIZE};
use crate::transport::{Command, Completion, DataDirection, Response, Tag, Transport, TransportError};

/// The largest data phase [`SgTransport::submit`] accepts, in bytes (16 MiB). Larger commands are
/// [`TransportError::InvalidCommand`]. The driver may refuse smaller ones the host adapter cannot move; the size it
/// always handles is [`SgTransport::max_transfer`].
pub const TRANSFER_LIMIT: usize = 16 << 20;

/// Sense buffer size given to the driver (`SCSI_SENSE_BUFFERSIZE`).
const SENSE_LEN: usize = 96;

/// Opening an sg device failed.
#[derive(Debug, thiserror::Error)]
pub enum SgError {
    /// The device node could not be opened.
    #[error("Cannot open {}", path.display())]
    Open {
        /// The device node.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The node is not an sg device (the sg ioctls fail on it).
    #[error("{} is not an sg device", path.display())]
    NotSg {
        /// The device node.
        path: PathBuf,
        /// The failing ioctl's error.
        #[source]
        source: io::Error,
    },
    /// The driver is older than the v3 interface.
    #[error("sg driver version {version} is older than 3.0")]
    OldDriver {
        /// What `SG_GET_VERSION_NUM` reported.
        version: i32,
    },
}

/// The two syscalls the transport makes on an sg fd, so tests can substitute a fake driver.
pub(crate) trait SgFd: fmt::Debug + Send {
    /// `write()` one header: submits the command it describes.
    ///
    /// # Safety
    /// `hdr.cmdp` must be valid for reads of `hdr.cmd_len` bytes during the call, and `hdr.dxferp` (for
    /// `hdr.dxfer_len` bytes, reads and writes) and `hdr.sbp` (for `hdr.mx_sb_len` bytes, writes) must stay valid and
    /// unaliased until the header is returned by [`SgFd::read_hdr`] or the fd is closed.
    unsafe fn write_hdr(&self, hdr: &sg_io_hdr) -> io::Result<usize>;

    /// `read()` one finished header into `hdr`.
    ///
    /// # Safety
    /// The buffers of every header written and not yet read back must still be valid (see [`SgFd::write_hdr`]): the
    /// driver fills the data and sense buffers of the command it returns.
    unsafe fn read_hdr(&self, hdr: &mut sg_io_hdr) -> io::Result<usize>;

    /// The fd to poll.
    fn as_fd(&self) -> BorrowedFd<'_>;
}

/// An open `/dev/sgN`.
#[derive(Debug)]
struct DevFd {
    file: File,
}

impl SgFd for DevFd {
    unsafe fn write_hdr(&self, hdr: &sg_io_hdr) -> io::Result<usize> {
        let p: *const sg_io_hdr = hdr;
        // SAFETY: `self.file` is an open fd for as long as `self` lives; `p` points to a live header of exactly
        // SG_IO_HDR_SIZE bytes, borrowed for the call. The buffers the header points to are the caller's contract.
        let n = unsafe { libc::write(self.file.as_raw_fd(), p.cast(), SG_IO_HDR_SIZE) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    unsafe fn read_hdr(&self, hdr: &mut sg_io_hdr) -> io::Result<usize> {
        let p: *mut sg_io_hdr = hdr;
        // SAFETY: `self.file` is an open fd; `p` points to a live, exclusively borrowed header of SG_IO_HDR_SIZE
        // bytes that the kernel overwrites. The command buffers it fills are the caller's contract.
        let n = unsafe { libc::read(self.file.as_raw_fd(), p.cast(), SG_IO_HDR_SIZE) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// `ioctl(fd, request, &mut int)` for the sg ioctls that take an int.
pub(crate) fn ioctl_int(fd: BorrowedFd<'_>, request: libc::Ioctl, value: &mut i32) -> io::Result<()> {
    let p: *mut i32 = value;
    // SAFETY: `fd` is borrowed, hence open, for the call; `p` points to a live, exclusively borrowed int, which is
    // what SG_GET_VERSION_NUM, SG_GET_RESERVED_SIZE and SG_SET_RESERVED_SIZE read or write.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request, p) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Where a command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Waiting in the pending FIFO for the driver's queue to have room.
    Pending,
    /// Written to the driver; its buffers may be filled by the next `read()` that returns it.
    Submitted,
}

/// One command from submission to reaping. Owns every buffer its header points to; the boxes never move or
/// change length while the command is submitted.
#[derive(Debug)]
struct Slot {
    cdb: Box<[u8]>,
    data: Box<[u8]>,
    sense: Box<[u8]>,
    dxfer_direction: i32,
    timeout_ms: u32,
    state: SlotState,
}

impl Slot {
    /// The header to `write()` for this command. Its pointers stay valid while `self` is neither moved out of its
    /// boxes nor dropped (moving the `Slot` itself does not move the boxed buffers).
    fn header(&mut self, tag: Tag) -> sg_io_hdr {
        let dxferp = if self.data.is_empty() { ptr::null_mut() } else { self.data.as_mut_ptr().cast() };
        sg_io_hdr {
            interface_id: sys::SG_INTERFACE_ID_ORIG,
            dxfer_direction: self.dxfer_direction,
            cmd_len: u8::try_from(self.cdb.len()).unwrap_or(u8::MAX),
            mx_sb_len: u8::try_from(self.sense.len()).unwrap_or(u8::MAX),
            iovec_count: 0,
            dxfer_len: u32::try_from(self.data.len()).unwrap_or(0),
            dxferp,
            cmdp: self.cdb.as_ptr(),
            sbp: self.sense.as_mut_ptr(),
            timeout: self.timeout_ms,
            flags: 0,
            pack_id: tag_to_pack_id(tag),
            usr_ptr: ptr::null_mut(),
            ..empty_header()
        }
    }
}

/// A zeroed header with the v3 interface id.
pub(crate) fn empty_header() -> sg_io_hdr {
    sg_io_hdr {
        interface_id: sys::SG_INTERFACE_ID_ORIG,
        dxfer_direction: sys::SG_DXFER_NONE,
        cmd_len: 0,
        mx_sb_len: 0,
        iovec_count: 0,
        dxfer_len: 0,
        dxferp: ptr::null_mut(),
        cmdp: ptr::null(),
        sbp: ptr::null_mut(),
        timeout: 0,
        flags: 0,
        pack_id: -1,
        usr_ptr: ptr::null_mut(),
        status: 0,
        masked_status: 0,
        msg_status: 0,
        sb_len_wr: 0,
        host_status: 0,
        driver_status: 0,
        resid: 0,
        duration: 0,
        info: 0,
    }
}

/// The tag's bits as the driver's `pack_id`.
pub(crate) fn tag_to_pack_id(tag: Tag) -> i32 {
    i32::from_ne_bytes(tag.to_ne_bytes())
}

/// The tag whose bits a returned `pack_id` carries.
pub(crate) fn pack_id_to_tag(pack_id: i32) -> Tag {
    u32::from_ne_bytes(pack_id.to_ne_bytes())
}

/// A validated command's buffers, in the form the driver takes them.
#[derive(Debug)]
pub(crate) struct Buffers {
    /// The CDB, 6 to 16 bytes.
    pub cdb: Box<[u8]>,
    /// Data out, or a zeroed buffer of the allocation length for data in, or empty.
    pub data: Box<[u8]>,
    /// `SG_DXFER_*`.
    pub dxfer_direction: i32,
}

/// Validates a command and turns it into [`Buffers`].
pub(crate) fn command_buffers(command: Command) -> Result<Buffers, TransportError> {
    if !(6..=16).contains(&command.cdb.len()) {
        return Err(TransportError::InvalidCommand);
    }
    let (data, direction) = match command.direction {
        DataDirection::None => (Vec::new(), sys::SG_DXFER_NONE),
        DataDirection::FromDevice(alloc) => {
            let alloc = usize::try_from(alloc).map_err(|_| TransportError::InvalidCommand)?;
            if alloc > TRANSFER_LIMIT {
                return Err(TransportError::InvalidCommand);
            }
            (vec![0; alloc], sys::SG_DXFER_FROM_DEV)
        }
        DataDirection::ToDevice(bytes) => {
            if bytes.len() > TRANSFER_LIMIT {
                return Err(TransportError::InvalidCommand);
            }
            (bytes, sys::SG_DXFER_TO_DEV)
        }
    };
    Ok(Buffers { cdb: command.cdb.into_boxed_slice(), data: data.into_boxed_slice(), dxfer_direction: direction })
}

/// Milliseconds for `sg_io_hdr.timeout`, saturating.
pub(crate) fn timeout_ms(timeout: Duration) -> u32 {
    u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX)
}

/// The caller's view of a finished header: the data (truncated to what moved) and sense become a [`Response`];
/// timeouts and unreachable devices become errors.
pub(crate) fn response_from_header(
    hdr: &sg_io_hdr,
    data: Box<[u8]>,
    sense: &[u8],
    dxfer_direction: i32,
) -> Result<Response, TransportError> {
    let driver_status = hdr.driver_status & !sys::DRIVER_SENSE;
    if hdr.host_status == sys::DID_TIME_OUT || driver_status & sys::DRIVER_MASK == sys::DRIVER_TIMEOUT {
        return Err(TransportError::TimedOut);
    }
    if hdr.host_status == sys::DID_NO_CONNECT {
        return Err(TransportError::DeviceGone);
    }
    let resid = usize::try_from(hdr.resid).unwrap_or(0).min(data.len());
    let data = if dxfer_direction == sys::SG_DXFER_FROM_DEV {
        let moved = data.len() - resid;
        let mut data = data.into_vec();
        data.truncate(moved);
        data
    } else {
        Vec::new()
    };
    let sense_len = usize::from(hdr.sb_len_wr).min(sense.len());
    Ok(Response {
        status: hdr.status,
        host_status: hdr.host_status,
        driver_status,
        sense: sense[..sense_len].to_vec(),
        data,
        resid: u32::try_from(resid).unwrap_or(u32::MAX),
        duration: Duration::from_millis(u64::from(hdr.duration)),
    })
}

/// True for the errnos that mean the device went away under the fd.
fn is_gone_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENODEV | libc::ENXIO | libc::EIO))
}

/// True for the errnos that mean the driver's queue for this fd is full.
fn is_queue_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::EDOM)
}

/// What one `write()` attempt did.
enum WriteOutcome {
    /// The driver accepted the command.
    Submitted,
    /// The driver's queue is full; try again after a reap.
    QueueFull(io::Error),
    /// The device is gone.
    Gone,
    /// The driver refused this command.
    Failed(TransportError),
}

/// Whether the transport still talks to a device.
#[derive(Debug)]
enum State {
    /// Commands are submitted and reaped normally.
    Open,
    /// The device is gone, or the fd returned something undecodable. `doomed` lists the commands still to be
    /// returned as completions carrying `error`; after them `reap` returns `error` forever.
    Dead {
        /// Tags still to be returned, submitted ones first (by tag), then pending ones in FIFO order.
        doomed: VecDeque<Tag>,
        /// Whether the device is gone (`DeviceGone`) or the fd misbehaved (`Protocol`).
        gone: bool,
    },
}

/// A SCSI device behind `/dev/sgN`, used asynchronously. See the module documentation.
#[derive(Debug)]
pub struct SgTransport {
    // Declared first so it is dropped (closed) before the slots whose buffers the driver may reference.
    fd: Box<dyn SgFd>,
    slots: HashMap<Tag, Slot>,
    pending: VecDeque<Tag>,
    ready: VecDeque<Completion>,
    submitted: usize,
    state: State,
    max_transfer: usize,
}

impl SgTransport {
    /// Opens `path` (`O_RDWR | O_NONBLOCK | O_CLOEXEC`) and checks that it is an sg device with the v3 interface.
    pub fn open(path: &Path) -> Result<SgTransport, SgError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| SgError::Open { path: path.to_owned(), source })?;
        let not_sg = |source| SgError::NotSg { path: path.to_owned(), source };
        let mut version = 0;
        ioctl_int(file.as_fd(), sys::SG_GET_VERSION_NUM, &mut version).map_err(not_sg)?;
        if version < sys::SG_VERSION_V3 {
            return Err(SgError::OldDriver { version });
        }
        let mut reserved = 0;
        ioctl_int(file.as_fd(), sys::SG_GET_RESERVED_SIZE, &mut reserved).map_err(not_sg)?;
        let max_transfer = usize::try_from(reserved).unwrap_or(0);
        Ok(SgTransport::with_fd(Box::new(DevFd { file }), max_transfer))
    }

    /// A transport over any [`SgFd`] (tests pass a fake driver).
    pub(crate) fn with_fd(fd: Box<dyn SgFd>, max_transfer: usize) -> SgTransport {
        SgTransport {
            fd,
            slots: HashMap::new(),
            pending: VecDeque::new(),
            ready: VecDeque::new(),
            submitted: 0,
            state: State::Open,
            max_transfer,
        }
    }

    /// The driver's reserved buffer size (`SG_GET_RESERVED_SIZE`): a data phase this long always fits. Split larger
    /// transfers into chunks of this size where the command allows it.
    pub fn max_transfer(&self) -> usize {
        self.max_transfer
    }

    /// True once the device is gone (or the fd misbehaved): no command will be accepted again.
    pub fn is_gone(&self) -> bool {
        matches!(self.state, State::Dead { .. })
    }

    /// Number of commands waiting for room in the driver's queue.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Tries to `write()` the command in slot `tag`.
    fn try_write(&mut self, tag: Tag) -> WriteOutcome {
        let Some(slot) = self.slots.get_mut(&tag) else {
            return WriteOutcome::Failed(TransportError::Protocol);
        };
        let hdr = slot.header(tag);
        loop {
            // SAFETY: `hdr` points into the boxed cdb, data and sense buffers of `self.slots[tag]`, which are never
            // reallocated while the slot is in the table. With indirect I/O (flags 0) the driver touches them only
            // inside this write() (cdb, data out) and inside the read() that returns this command (data in, sense).
            // The slot is removed only when that read has happened, when the driver refused the write, or when the
            // transport is dead and never calls read() again; the fd is closed before the table is dropped.
            match unsafe { self.fd.write_hdr(&hdr) } {
                Ok(n) if n == SG_IO_HDR_SIZE => {
                    slot.state = SlotState::Submitted;
                    self.submitted += 1;
                    return WriteOutcome::Submitted;
                }
                Ok(_) => return WriteOutcome::Failed(TransportError::Protocol),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_queue_full(&e) => return WriteOutcome::QueueFull(e),
                Err(e) if is_gone_error(&e) => return WriteOutcome::Gone,
                Err(e) => return WriteOutcome::Failed(TransportError::Io(e)),
            }
        }
    }

    /// Writes pending commands until the driver's queue is full again.
    fn flush_pending(&mut self) {
        while let Some(&tag) = self.pending.front() {
            match self.try_write(tag) {
                WriteOutcome::Submitted => {
                    self.pending.pop_front();
                }
                WriteOutcome::QueueFull(e) => {
                    if self.submitted > 0 {
                        // A reap will free a slot; the fd becomes readable when one finishes.
                        return;
                    }
                    // Nothing in the driver will ever finish and free room: fail rather than wait forever.
                    self.pending.pop_front();
                    self.slots.remove(&tag);
                    self.ready.push_back(Completion { tag, result: Err(TransportError::Io(e)) });
                }
                WriteOutcome::Gone => {
                    self.die(true);
                    return;
                }
                WriteOutcome::Failed(error) => {
                    self.pending.pop_front();
                    self.slots.remove(&tag);
                    self.ready.push_back(Completion { tag, result: Err(error) });
                }
            }
        }
    }

    /// Stops talking to the device: every command still held is doomed.
    fn die(&mut self, gone: bool) {
        if self.is_gone() {
            return;
        }
        let mut submitted: Vec<Tag> =
            self.slots.iter().filter(|(_, s)| s.state == SlotState::Submitted).map(|(&t, _)| t).collect();
        submitted.sort_unstable();
        let mut doomed: VecDeque<Tag> = submitted.into();
        doomed.extend(self.pending.drain(..));
        self.submitted = 0;
        self.state = State::Dead { doomed, gone };
    }

    /// Turns a header read back from the driver into a completion.
    fn complete(&mut self, hdr: &sg_io_hdr) -> Result<Completion, TransportError> {
        let tag = pack_id_to_tag(hdr.pack_id);
        match self.slots.get(&tag) {
            Some(slot) if slot.state == SlotState::Submitted => {}
            _ => return Err(TransportError::Protocol),
        }
        let Some(slot) = self.slots.remove(&tag) else {
            return Err(TransportError::Protocol);
        };
        self.submitted -= 1;
        let result = response_from_header(hdr, slot.data, &slot.sense, slot.dxfer_direction);
        Ok(Completion { tag, result })
    }
}

impl Transport for SgTransport {
    fn submit(&mut self, tag: Tag, command: Command) -> Result<(), TransportError> {
        if self.is_gone() {
            return Err(TransportError::DeviceGone);
        }
        if self.slots.contains_key(&tag) || self.ready.iter().any(|c| c.tag == tag) {
            return Err(TransportError::DuplicateTag(tag));
        }
        let timeout_ms = timeout_ms(command.timeout);
        let Buffers { cdb, data, dxfer_direction } = command_buffers(command)?;
        let slot = Slot {
            cdb,
            data,
            sense: vec![0; SENSE_LEN].into_boxed_slice(),
            dxfer_direction,
            timeout_ms,
            state: SlotState::Pending,
        };
        self.slots.insert(tag, slot);
        if !self.pending.is_empty() {
            // Keep submission order: earlier commands are still waiting for room.
            self.pending.push_back(tag);
            return Ok(());
        }
        match self.try_write(tag) {
            WriteOutcome::Submitted => Ok(()),
            WriteOutcome::QueueFull(e) => {
                if self.submitted == 0 {
                    self.slots.remove(&tag);
                    return Err(TransportError::Io(e));
                }
                self.pending.push_back(tag);
                Ok(())
            }
            WriteOutcome::Gone => {
                self.slots.remove(&tag);
                self.die(true);
                Err(TransportError::DeviceGone)
            }
            WriteOutcome::Failed(error) => {
                self.slots.remove(&tag);
                Err(error)
            }
        }
    }

    fn reap(&mut self) -> Result<Option<Completion>, TransportError> {
        loop {
            if let Some(completion) = self.ready.pop_front() {
                return Ok(Some(completion));
            }
            if let State::Dead { doomed, gone } = &mut self.state {
                let error = || if *gone { TransportError::DeviceGone } else { TransportError::Protocol };
                return match doomed.pop_front() {
                    Some(tag) => {
                        let result = Err(error());
                        // The driver will not be asked for this command again; its buffers can go.
                        self.slots.remove(&tag);
                        Ok(Some(Completion { tag, result }))
                    }
                    None => Err(error()),
                };
            }
            self.flush_pending();
            if !self.ready.is_empty() || self.is_gone() {
                continue;
            }
            let mut hdr = empty_header();
            // SAFETY: every submitted command's buffers are owned by its slot in `self.slots` until a read returns
            // it (see `try_write`), so whichever command the driver returns here, it writes into live memory.
            match unsafe { self.fd.read_hdr(&mut hdr) } {
                Ok(n) if n == SG_IO_HDR_SIZE => return self.complete(&hdr).map(Some),
                Ok(_) => {
                    // A command was consumed but we cannot tell which: nothing in flight can be trusted.
                    log::error!("sg: short read of a completion header");
                    self.die(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if is_gone_error(&e) => self.die(true),
                Err(e) => return Err(TransportError::Io(e)),
            }
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn in_flight(&self) -> usize {
        self.slots.len() + self.ready.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sg::test_utils::{fake, pack_id, FakeHandle, Reply};
    use crate::transport::status;

    const INQUIRY: [u8; 6] = [0x12, 0, 0, 0, 0x60, 0];
    const TUR: [u8; 6] = [0; 6];
    const T: Duration = Duration::from_secs(5);

    fn transport() -> (SgTransport, FakeHandle) {
        let (fd, handle) = fake();
        (SgTransport::with_fd(Box::new(fd), 32768), handle)
    }

    fn good_data(data: &[u8]) -> Reply {
        Reply { data: data.to_vec(), ..Reply::default() }
    }

    fn reap_all(t: &mut SgTransport) -> Vec<Completion> {
        let mut out = Vec::new();
        while let Some(c) = t.reap().unwrap() {
            out.push(c);
        }
        out
    }

    #[test]
    fn inquiry_round_trip_truncates_data_to_what_moved() {
        let (mut t, f) = transport();
        t.submit(7, Command::read(INQUIRY, 96, Duration::from_millis(1500))).unwrap();
        assert_eq!(t.in_flight(), 1);
        {
            let st = f.lock().unwrap();
            let s = &st.queued[0];
            assert_eq!(s.cdb, INQUIRY);
            assert_eq!(s.hdr.dxfer_direction, sys::SG_DXFER_FROM_DEV);
            assert_eq!(s.hdr.dxfer_len, 96);
            assert_eq!(s.hdr.timeout, 1500);
            assert_eq!(s.hdr.pack_id, 7);
            assert_eq!(s.hdr.mx_sb_len, 96);
        }
        assert!(t.reap().unwrap().is_none(), "nothing finished yet");
        let inquiry: Vec<u8> = (0..36).collect();
        f.lock().unwrap().complete(7, Reply { duration_ms: 12, ..good_data(&inquiry) });
        let c = t.reap().unwrap().unwrap();
        assert_eq!(c.tag, 7);
        let r = c.result.unwrap();
        assert!(r.is_good());
        assert_eq!(r.data, inquiry);
        assert_eq!(r.resid, 60);
        assert_eq!(r.duration, Duration::from_millis(12));
        assert!(r.sense.is_empty());
        assert_eq!(t.in_flight(), 0);
        assert!(t.reap().unwrap().is_none());
    }

    #[test]
    fn completions_in_any_order_are_matched_by_tag() {
        let (mut t, f) = transport();
        for tag in [1, 2, 3] {
            t.submit(tag, Command::read(INQUIRY, 4, T)).unwrap();
        }
        for tag in [3, 1, 2] {
            f.lock().unwrap().complete(tag, good_data(&[u8::try_from(tag).unwrap(); 4]));
        }
        let got: Vec<(Tag, Vec<u8>)> = reap_all(&mut t).into_iter().map(|c| (c.tag, c.result.unwrap().data)).collect();
        assert_eq!(got, [(3, vec![3; 4]), (1, vec![1; 4]), (2, vec![2; 4])]);
    }

    #[test]
    fn to_device_data_is_sent_and_no_data_comes_back() {
        let (mut t, f) = transport();
        let cmd = Command {
            cdb: vec![0x15, 0x10, 0, 0, 4, 0],
            direction: DataDirection::ToDevice(vec![9, 8, 7, 6]),
            timeout: T,
        };
        t.submit(1, cmd).unwrap();
        assert_eq!(f.lock().unwrap().queued[0].data_out, [9, 8, 7, 6]);
        assert_eq!(f.lock().unwrap().queued[0].hdr.dxfer_direction, sys::SG_DXFER_TO_DEV);
        f.lock().unwrap().complete(1, Reply { resid: Some(0), ..Reply::default() });
        let r = t.reap().unwrap().unwrap().result.unwrap();
        assert!(r.data.is_empty());
        assert_eq!(r.resid, 0);
    }

    #[test]
    fn no_data_command_has_null_buffer() {
        let (mut t, f) = transport();
        t.submit(1, Command::none(TUR, T)).unwrap();
        let hdr = f.lock().unwrap().queued[0].hdr;
        assert_eq!(hdr.dxfer_direction, sys::SG_DXFER_NONE);
        assert_eq!(hdr.dxfer_len, 0);
        assert!(hdr.dxferp.is_null());
    }

    #[test]
    fn check_condition_is_a_response_with_sense() {
        let (mut t, f) = transport();
        t.submit(4, Command::none(TUR, T)).unwrap();
        let sense = vec![0x70, 0, 0x02, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x3a, 0x00, 0, 0, 0, 0];
        f.lock().unwrap().complete(
            4,
            Reply {
                status: status::CHECK_CONDITION,
                driver_status: sys::DRIVER_SENSE,
                sense: sense.clone(),
                ..Reply::default()
            },
        );
        let r = t.reap().unwrap().unwrap().result.unwrap();
        assert_eq!(r.status, status::CHECK_CONDITION);
        assert_eq!(r.driver_status, 0, "DRIVER_SENSE is masked off");
        assert_eq!(r.sense, sense);
        assert!(!r.is_good());
    }

    #[test]
    fn timeouts_map_to_timed_out_and_no_connect_to_device_gone() {
        let (mut t, f) = transport();
        for tag in 1..=4 {
            t.submit(tag, Command::none(TUR, T)).unwrap();
        }
        let mut st = f.lock().unwrap();
        st.complete(1, Reply { host_status: sys::DID_TIME_OUT, ..Reply::default() });
        st.complete(2, Reply { driver_status: sys::DRIVER_TIMEOUT | sys::DRIVER_SENSE, ..Reply::default() });
        st.complete(3, Reply { host_status: sys::DID_NO_CONNECT, ..Reply::default() });
        st.complete(4, Reply { host_status: 0x07, ..Reply::default() });
        drop(st);
        let c = reap_all(&mut t);
        assert!(matches!(c[0].result, Err(TransportError::TimedOut)));
        assert!(matches!(c[1].result, Err(TransportError::TimedOut)));
        assert!(matches!(c[2].result, Err(TransportError::DeviceGone)));
        let other = c[3].result.as_ref().unwrap();
        assert_eq!(other.host_status, 0x07, "other host errors are reported, not hidden");
        assert!(!t.is_gone(), "one unreachable command does not kill the transport");
    }

    #[test]
    fn queue_full_keeps_commands_pending_in_order_without_spinning() {
        for errno in [libc::EAGAIN, libc::EDOM] {
            let (mut t, f) = transport();
            f.lock().unwrap().queue_limit = 2;
            f.lock().unwrap().full_errno = errno;
            for tag in 10..15 {
                t.submit(tag, Command::none(TUR, T)).unwrap();
            }
            assert_eq!(f.lock().unwrap().queued_tags(), [10, 11]);
            assert_eq!(t.pending(), 3);
            assert_eq!(t.in_flight(), 5);
            // Only the first over-limit submit tried the driver; later ones queue behind it.
            assert_eq!(f.lock().unwrap().writes, 3);
            assert!(t.reap().unwrap().is_none());
            assert_eq!(f.lock().unwrap().writes, 4, "one retry per reap, no spinning");
            f.lock().unwrap().complete(11, Reply::default());
            assert_eq!(t.reap().unwrap().unwrap().tag, 11);
            // The next reap fills the freed slot with the oldest pending command.
            assert!(t.reap().unwrap().is_none());
            assert_eq!(f.lock().unwrap().queued_tags(), [10, 12]);
            assert_eq!(t.pending(), 2);
            let mut order = vec![11];
            while order.len() < 5 {
                let tag = f.lock().unwrap().queued_tags()[0];
                f.lock().unwrap().complete(tag, Reply::default());
                order.extend(reap_all(&mut t).into_iter().map(|c| c.tag));
            }
            assert_eq!(order, [11, 10, 12, 13, 14]);
            assert_eq!(t.in_flight(), 0);
        }
    }

    #[test]
    fn queue_full_with_nothing_in_flight_fails_the_command() {
        let (mut t, f) = transport();
        f.lock().unwrap().queue_limit = 0;
        let e = t.submit(1, Command::none(TUR, T)).unwrap_err();
        assert!(matches!(e, TransportError::Io(_)));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn eintr_is_retried_on_write_and_read() {
        let (mut t, f) = transport();
        f.lock().unwrap().write_errors.push_back(libc::EINTR);
        t.submit(1, Command::none(TUR, T)).unwrap();
        assert_eq!(f.lock().unwrap().writes, 2);
        f.lock().unwrap().complete(1, Reply::default());
        f.lock().unwrap().read_errors.push_back(libc::EINTR);
        assert_eq!(t.reap().unwrap().unwrap().tag, 1);
        assert_eq!(f.lock().unwrap().reads, 2);
    }

    #[test]
    fn read_eio_returns_every_command_as_device_gone_then_errors_forever() {
        for errno in [libc::EIO, libc::ENODEV, libc::ENXIO] {
            let (mut t, f) = transport();
            f.lock().unwrap().queue_limit = 2;
            for tag in [5, 3, 9] {
                t.submit(tag, Command::read(INQUIRY, 96, T)).unwrap();
            }
            assert_eq!(t.pending(), 1);
            f.lock().unwrap().gone = Some(errno);
            let mut tags = Vec::new();
            let end = loop {
                match t.reap() {
                    Ok(Some(c)) => {
                        assert!(matches!(c.result, Err(TransportError::DeviceGone)));
                        tags.push(c.tag);
                    }
                    Ok(None) => panic!("a gone device never reports Ok(None)"),
                    Err(e) => break e,
                }
            };
            tags.sort_unstable();
            assert_eq!(tags, [3, 5, 9], "errno {errno}");
            assert!(matches!(end, TransportError::DeviceGone));
            assert!(matches!(t.reap(), Err(TransportError::DeviceGone)), "and forever");
        }
    }

    #[test]
    fn device_gone_drains_submitted_then_pending() {
        let (mut t, f) = transport();
        f.lock().unwrap().queue_limit = 2;
        for tag in [5, 3, 9] {
            t.submit(tag, Command::read(INQUIRY, 96, T)).unwrap();
        }
        f.lock().unwrap().read_errors.push_back(libc::EIO);
        let mut tags = Vec::new();
        let end = loop {
            match t.reap() {
                Ok(Some(c)) => {
                    assert!(matches!(c.result, Err(TransportError::DeviceGone)));
                    tags.push(c.tag);
                }
                Ok(None) => panic!("a gone device never reports Ok(None)"),
                Err(e) => break e,
            }
        };
        assert_eq!(tags, [3, 5, 9]);
        assert!(matches!(end, TransportError::DeviceGone));
        assert!(matches!(t.reap(), Err(TransportError::DeviceGone)));
        assert!(t.is_gone());
        assert_eq!(t.in_flight(), 0);
        assert!(matches!(t.submit(1, Command::none(TUR, T)), Err(TransportError::DeviceGone)));
    }

    #[test]
    fn write_enodev_fails_the_submit_and_kills_the_transport() {
        let (mut t, f) = transport();
        t.submit(1, Command::none(TUR, T)).unwrap();
        f.lock().unwrap().write_errors.push_back(libc::ENODEV);
        assert!(matches!(t.submit(2, Command::none(TUR, T)), Err(TransportError::DeviceGone)));
        assert!(t.is_gone());
        let c = t.reap().unwrap().unwrap();
        assert_eq!(c.tag, 1);
        assert!(matches!(c.result, Err(TransportError::DeviceGone)));
        assert!(matches!(t.reap(), Err(TransportError::DeviceGone)));
    }

    #[test]
    fn pending_command_refused_by_driver_completes_with_the_error() {
        let (mut t, f) = transport();
        f.lock().unwrap().queue_limit = 1;
        t.submit(1, Command::none(TUR, T)).unwrap();
        t.submit(2, Command::none(TUR, T)).unwrap();
        f.lock().unwrap().complete(1, Reply::default());
        f.lock().unwrap().write_errors.push_back(libc::ENOMEM);
        // The reap first retries the pending command, which the driver refuses.
        let c = t.reap().unwrap().unwrap();
        assert_eq!(c.tag, 2);
        assert!(matches!(c.result, Err(TransportError::Io(_))));
        assert_eq!(t.reap().unwrap().unwrap().tag, 1);
        assert!(t.reap().unwrap().is_none());
        assert!(!t.is_gone());
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn short_read_fails_everything_in_flight_as_protocol() {
        let (mut t, f) = transport();
        t.submit(1, Command::none(TUR, T)).unwrap();
        t.submit(2, Command::none(TUR, T)).unwrap();
        f.lock().unwrap().complete(1, Reply::default());
        f.lock().unwrap().short_read = Some(40);
        let c = t.reap().unwrap().unwrap();
        assert!(matches!(c.result, Err(TransportError::Protocol)));
        let c2 = t.reap().unwrap().unwrap();
        assert!(matches!(c2.result, Err(TransportError::Protocol)));
        let mut tags = [c.tag, c2.tag];
        tags.sort_unstable();
        assert_eq!(tags, [1, 2]);
        assert!(matches!(t.reap(), Err(TransportError::Protocol)));
        assert!(t.is_gone());
    }

    #[test]
    fn unknown_pack_id_is_a_protocol_error() {
        let (mut t, f) = transport();
        t.submit(1, Command::none(TUR, T)).unwrap();
        f.lock().unwrap().forged.push_back(pack_id(99));
        assert!(matches!(t.reap(), Err(TransportError::Protocol)));
        assert_eq!(t.in_flight(), 1, "the real command is still in flight");
    }

    #[test]
    fn resid_larger_than_buffer_is_clamped() {
        let (mut t, f) = transport();
        t.submit(1, Command::read(INQUIRY, 8, T)).unwrap();
        t.submit(2, Command::read(INQUIRY, 8, T)).unwrap();
        f.lock().unwrap().complete(1, Reply { data: vec![1; 8], resid: Some(1000), ..Reply::default() });
        f.lock().unwrap().complete(2, Reply { data: vec![1; 8], resid: Some(-5), ..Reply::default() });
        let r = t.reap().unwrap().unwrap().result.unwrap();
        assert_eq!((r.data.len(), r.resid), (0, 8));
        let r = t.reap().unwrap().unwrap().result.unwrap();
        assert_eq!((r.data.len(), r.resid), (8, 0));
    }

    #[test]
    fn duplicate_tag_and_invalid_commands_are_refused() {
        let (mut t, f) = transport();
        t.submit(1, Command::none(TUR, T)).unwrap();
        assert!(matches!(t.submit(1, Command::none(TUR, T)), Err(TransportError::DuplicateTag(1))));
        assert!(matches!(t.submit(2, Command::none([0; 5], T)), Err(TransportError::InvalidCommand)));
        assert!(matches!(t.submit(2, Command::none([0; 17], T)), Err(TransportError::InvalidCommand)));
        t.submit(2, Command::none([0; 16], T)).unwrap();
        let too_big = u32::try_from(TRANSFER_LIMIT + 1).unwrap();
        assert!(matches!(t.submit(3, Command::read(INQUIRY, too_big, T)), Err(TransportError::InvalidCommand)));
        let out =
            Command { cdb: TUR.to_vec(), direction: DataDirection::ToDevice(vec![0; TRANSFER_LIMIT + 1]), timeout: T };
        assert!(matches!(t.submit(3, out), Err(TransportError::InvalidCommand)));
        assert_eq!(f.lock().unwrap().queued_tags(), [1, 2]);
        // A tag is free again once reaped.
        f.lock().unwrap().complete(1, Reply::default());
        assert_eq!(t.reap().unwrap().unwrap().tag, 1);
        t.submit(1, Command::none(TUR, T)).unwrap();
    }

    #[test]
    fn tags_and_timeouts_convert_losslessly_or_saturate() {
        for tag in [0, 1, 0x7fff_ffff, 0x8000_0000, u32::MAX] {
            assert_eq!(pack_id_to_tag(tag_to_pack_id(tag)), tag);
        }
        assert_eq!(timeout_ms(Duration::from_millis(1)), 1);
        assert_eq!(timeout_ms(Duration::from_secs(600)), 600_000);
        assert_eq!(timeout_ms(Duration::from_secs(u64::MAX)), u32::MAX);
        let (mut t, f) = transport();
        t.submit(u32::MAX, Command::none(TUR, Duration::from_secs(u64::MAX))).unwrap();
        assert_eq!(f.lock().unwrap().queued[0].hdr.timeout, u32::MAX);
        f.lock().unwrap().complete(u32::MAX, Reply::default());
        assert_eq!(t.reap().unwrap().unwrap().tag, u32::MAX);
    }

    #[test]
    fn transport_can_move_to_another_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<SgTransport>();
    }

    #[test]
    fn open_refuses_non_sg_files() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(SgTransport::open(tmp.path()), Err(SgError::NotSg { .. })));
        assert!(matches!(SgTransport::open(Path::new("/nonexistent/sg0")), Err(SgError::Open { .. })));
    }
}
