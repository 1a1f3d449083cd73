//! [`SgTransport`]: one `/dev/sgN` driven through the sg v3 asynchronous interface.
//!
//! # Primer
//! The sg driver queues up to [`SG_MAX_QUEUE`] commands per open fd. `write(fd, &sg_io_hdr)` submits one (the header
//! names the CDB, data and sense buffers by pointer); the fd polls readable when a command has finished, and
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
pub(crate) trait SgFd: fmt::Debug {
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

/// The buffers of a validated command: (cdb, data, dxfer_direction).
pub(crate) fn command_buffers(command: Command) -> Result<(Box<[u8]>, Box<[u8]>, i32), TransportError> {
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
    Ok((command.cdb.into_boxed_slice(), data.into_boxed_slice(), direction))
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
            // SAFETY: `hdr` points into the boxed cdb, data and sense buffers of `self.slots[tag]`. The slot is
            // removed only when the header is read back, when the driver refused it, or when the device is gone and
            // no read for it will happen; the boxes are never reallocated while it is in the table, and the fd is
            // closed before the table is dropped (field order of `SgTransport`).
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
        let (cdb, data, dxfer_direction) = command_buffers(command)?;
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
            // SAFETY: every submitted command's buffers are owned by its slot in `self.slots` until this read
            // returns it (see `try_write`), so whichever command the driver returns, it writes into live memory.
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
