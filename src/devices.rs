//! One-shot device tools: `rsmd --list-devices` and `rsmd --map-drives`. Never used by the daemon's event loop.
//!
//! Both are a small blocking driver of [`changer::Library`] over the sg transport ([`SgTransport`], the one the
//! daemon uses): the library decides what to send to identify a changer (INQUIRY, VPD 80h serial, VPD 83h
//! world-wide name, mode pages 1Dh and 1Fh) and to scan its elements (READ ELEMENT STATUS per type, in chunks, with
//! VOLTAG and, where supported, DVCID), exactly as it does for the daemon; the driver submits each command, blocks
//! in poll(2) until a completion or the library's `poll_timeout`, feeds completions and timeouts back, and stops
//! when the library is Ready or Offline. Tape drives are identified by the same driver, one command at a time
//! (INQUIRY, VPD 80h, VPD 83h), since drives outside any changer have no library to probe them.
//!
//! `--list-devices` maps the drives to each changer's drive elements: DVCID, then the mapping persisted by
//! `--map-drives`, then elimination.
//!
//! `--map-drives` finds that mapping the hard way, for libraries that report no DVCID: it moves a cartridge into
//! each empty drive element in turn (MOVE MEDIUM through the same driver) and sees which drive stops answering
//! MEDIUM NOT PRESENT to TEST UNIT READY, then puts it back. The result is persisted in
//! `{state_dir}/drive-map.json` as `{"changers": {"<changer serial>": {"<drive serial>": <element address>}}}`.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::{Deserialize, Serialize};

use crate::changer::{self, same_serial, DeviceRef, Element, Event, Identity, Library, LibraryOptions, Millis};
use crate::emu::EmuTransport;
use crate::error_chain::error_chain;
use crate::model::LibraryState;
use crate::scsi::asc;
use crate::scsi::cdb;
use crate::scsi::element::ElementType;
use crate::scsi::inquiry::{self, StandardInquiry};
use crate::scsi::mode::{ElementAddressAssignment, ElementRange};
use crate::scsi::opcode;
use crate::scsi::reader::ParseError;
use crate::scsi::sense::{Sense, SenseKey};
use crate::sg::discover::{self, DeviceKind, ScsiDevice};
use crate::sg::{SgError, SgTransport};
use crate::transport::{status, Command, Response, Tag, Transport, TransportError};

/// Name of the persisted drive mapping file in the state directory.
pub use crate::store::DRIVE_MAP_FILE;

/// Timeout of the tools' own identification and status commands (the changer's are the library's).
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of a robot move.
const MOVE_TIMEOUT: Duration = Duration::from_secs(600);
/// Timeout of LOAD UNLOAD.
const UNLOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// TEST UNIT READY rounds while waiting for a drive to see a cartridge.
const TUR_ROUNDS: u32 = 60;
/// Pause between TEST UNIT READY rounds.
const TUR_PAUSE: Duration = Duration::from_millis(500);

/// Errors of the device tools.
#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    /// The sysfs scan failed.
    #[error("Cannot scan sysfs")]
    Scan(#[source] io::Error),
    /// `--changer` names no changer sysfs knows about.
    #[error("No changer at {0}")]
    NoSuchChanger(PathBuf),
    /// Neither sysfs nor the configuration has a changer to map.
    #[error("No changers found: no medium changer in sysfs and no vlib library in the configuration")]
    NothingToMap,
    /// The drive mapping file could not be written.
    #[error("Cannot write {}", path.display())]
    Persist {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// JSON rendering failed.
    #[error("Cannot render JSON")]
    Json(#[source] serde_json::Error),
}

/// Why one command (or one step of identification) failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The device node could not be opened.
    #[error("Cannot open the device")]
    Open(#[source] io::Error),
    /// The node opened but is no usable sg device.
    #[error("Cannot use the device")]
    Sg(#[source] SgError),
    /// The changer state machine gave up on the changer while identifying it or scanning its elements (the log's
    /// "library offline" line says why); `last` is the last command that failed on the way, if any did.
    #[error("The changer did not become ready")]
    NotReady {
        /// The last failed command.
        #[source]
        last: Option<Box<CommandError>>,
    },
    /// The transport failed.
    #[error("{what} failed")]
    Transport {
        /// The command.
        what: &'static str,
        /// Why.
        #[source]
        source: TransportError,
    },
    /// The device answered CHECK CONDITION.
    #[error("{what}: {sense}")]
    Check {
        /// The command.
        what: &'static str,
        /// The decoded sense data.
        sense: Sense,
    },
    /// The device answered another non-GOOD status (or the host/driver reported an error).
    #[error("{what}: status {status:#04x}, host status {host:#x}, driver status {driver:#x}")]
    Status {
        /// The command.
        what: &'static str,
        /// SCSI status.
        status: u8,
        /// Host status.
        host: u16,
        /// Driver status.
        driver: u16,
    },
    /// The answer could not be decoded.
    #[error("{what}: malformed answer")]
    Parse {
        /// The command.
        what: &'static str,
        /// Why.
        #[source]
        source: ParseError,
    },
    /// A step of `--map-drives` failed.
    #[error("{0}")]
    Mapping(String),
}

impl CommandError {
    /// The sense data, for a CHECK CONDITION.
    pub fn sense(&self) -> Option<&Sense> {
        match self {
            CommandError::Check { sense, .. } => Some(sense),
            _ => None,
        }
    }
}

/// Options of `--list-devices`.
#[derive(Debug, Clone)]
pub struct ListOptions {
    /// sysfs root (`/sys`).
    pub sysfs: PathBuf,
    /// /dev root.
    pub dev: PathBuf,
    /// State directory (to show persisted drive mappings).
    pub state_dir: PathBuf,
    /// Print JSON.
    pub json: bool,
}

/// The tools' clock: milliseconds since it was started, for the `now` the changer state machine is driven with.
#[derive(Debug)]
struct Clock {
    start: Instant,
}

impl Clock {
    // The one clock read outside server/: the one-shot tools are an edge that drives `changer::Library`, as the
    // server is (STYLE rule 1 keeps the clock out of the domain, not out of its drivers).
    #[allow(clippy::disallowed_methods)]
    fn start() -> Clock {
        Clock { start: Instant::now() }
    }

    fn now(&self) -> Millis {
        millis(self.start.elapsed())
    }
}

/// Tags of the tools' own commands carry this bit, so they never meet the library's (which count up from 1).
const OWN_TAG: Tag = 1 << 31;
/// How long past a command's own timeout the driver waits for the transport to report it, before giving up.
const GRACE_MS: Millis = 5_000;

/// A duration in milliseconds, saturating.
fn millis(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

/// Blocks in poll(2) until `t`'s fd is readable (or writable while it has output queued), or `timeout` ms have
/// passed. Readiness is only a hint: the caller reaps until `Ok(None)` either way.
fn wait(t: &mut dyn Transport, timeout: Millis) -> Result<(), TransportError> {
    let mut flags = PollFlags::POLLIN;
    if t.wants_write() {
        flags |= PollFlags::POLLOUT;
    }
    let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    let writable = {
        let mut fds = [PollFd::new(t.fd(), flags)];
        match poll(&mut fds, timeout) {
            Ok(_) => fds[0].revents().is_some_and(|r| r.contains(PollFlags::POLLOUT)),
            Err(Errno::EINTR) => false,
            Err(e) => return Err(TransportError::Io(e.into())),
        }
    };
    if writable {
        t.on_writable()?;
    }
    Ok(())
}

/// The name of a command in messages, from its CDB.
fn command_name(cdb: &[u8]) -> &'static str {
    match (cdb.first().copied(), cdb.get(1).copied().unwrap_or(0), cdb.get(2).copied().unwrap_or(0)) {
        (Some(opcode::INQUIRY), evpd, opcode::VPD_UNIT_SERIAL) if evpd != 0 => "INQUIRY VPD 80h",
        (Some(opcode::INQUIRY), evpd, opcode::VPD_DEVICE_IDENTIFICATION) if evpd != 0 => "INQUIRY VPD 83h",
        (Some(opcode::INQUIRY), _, _) => "INQUIRY",
        (Some(opcode::MODE_SENSE_6), _, opcode::MODE_PAGE_ELEMENT_ADDRESS) => "MODE SENSE page 1Dh",
        (Some(opcode::MODE_SENSE_6), _, opcode::MODE_PAGE_DEVICE_CAPABILITIES) => "MODE SENSE page 1Fh",
        (Some(opcode::READ_ELEMENT_STATUS), _, _) => "READ ELEMENT STATUS",
        (Some(opcode::TEST_UNIT_READY), _, _) => "TEST UNIT READY",
        (Some(opcode::MOVE_MEDIUM), _, _) => "MOVE MEDIUM",
        (Some(opcode::LOAD_UNLOAD), _, _) => "LOAD UNLOAD",
        _ => "SCSI command",
    }
}

/// A copy of a transport error, to keep for the report while the original goes to the library.
fn copy_error(e: &TransportError) -> TransportError {
    match e {
        TransportError::DeviceGone => TransportError::DeviceGone,
        TransportError::TimedOut => TransportError::TimedOut,
        TransportError::DuplicateTag(t) => TransportError::DuplicateTag(*t),
        TransportError::InvalidCommand => TransportError::InvalidCommand,
        TransportError::Protocol => TransportError::Protocol,
        TransportError::Io(io) => TransportError::Io(io::Error::new(io.kind(), io.to_string())),
    }
}

/// What driving a changer's [`Library`] through probing and the element scan found.
#[derive(Debug)]
struct Probed {
    /// The changer's identity (as far as it was read, when probing failed half-way).
    identity: Identity,
    /// The element address assignment (mode page 1Dh), once read.
    addresses: Option<ElementAddressAssignment>,
    /// The inventory: every element, once the scan finished.
    elements: Vec<Element>,
    /// Why the library did not become ready.
    error: Option<CommandError>,
}

/// The blocking driver of the one-shot tools: it submits commands on transports and blocks in poll(2) until they
/// finish, either one command at a time ([`Driver::run`]) or for a whole [`Library`] ([`Driver::probe_library`]),
/// which decides what to send, as it does for the daemon.
#[derive(Debug)]
struct Driver {
    clock: Clock,
    next_tag: Tag,
}

impl Driver {
    fn new() -> Driver {
        Driver { clock: Clock::start(), next_tag: 0 }
    }

    fn tag(&mut self) -> Tag {
        self.next_tag = self.next_tag.wrapping_add(1);
        OWN_TAG | (self.next_tag & !OWN_TAG)
    }

    /// Runs one command on `t` and blocks until it finishes; the answer whatever its status.
    fn raw(&mut self, t: &mut dyn Transport, what: &'static str, command: Command) -> Result<Response, CommandError> {
        let fail = |source| CommandError::Transport { what, source };
        let tag = self.tag();
        let limit = millis(command.timeout).saturating_add(GRACE_MS);
        let deadline = self.clock.now().saturating_add(limit);
        t.submit(tag, command).map_err(fail)?;
        loop {
            match t.reap().map_err(fail)? {
                Some(c) if c.tag == tag => return c.result.map_err(fail),
                Some(c) => log::debug!("completion for unknown tag {} ignored", c.tag),
                None => {
                    let now = self.clock.now();
                    if now >= deadline {
                        return Err(fail(TransportError::TimedOut));
                    }
                    wait(t, deadline - now).map_err(fail)?;
                }
            }
        }
    }

    /// Runs a command and requires GOOD; one UNIT ATTENTION is absorbed by a retry.
    fn run(&mut self, t: &mut dyn Transport, what: &'static str, command: Command) -> Result<Response, CommandError> {
        let mut r = self.raw(t, what, command.clone())?;
        if check_sense(&r).is_some_and(|s| s.is_unit_attention()) {
            r = self.raw(t, what, command)?;
        }
        good(what, r)
    }

    /// Probes the changer behind `changer` and scans its elements with a [`Library`] (no drive devices: the tools
    /// identify drives on their own), until the library is Ready or Offline. Commands are submitted as the library
    /// emits them; the driver blocks in poll(2) until a completion or the library's `poll_timeout`.
    fn probe_library(&mut self, changer: &mut dyn Transport) -> Probed {
        let options = LibraryOptions { heartbeat_ms: 0, ..LibraryOptions::default() };
        // Longer than any command the library sends while probing and scanning may take: with nothing finished for
        // that long, the transport has lost a command.
        let silence_limit = millis(options.scan_timeout.max(options.probe_timeout)).saturating_add(GRACE_MS);
        let mut lib = Library::new(0, options, self.clock.now());
        let mut last_heard = self.clock.now();
        let mut names: HashMap<Tag, &'static str> = HashMap::new();
        let mut addresses = None;
        let mut last: Option<CommandError> = None;
        let error = loop {
            while let Some(o) = lib.poll_request() {
                let what = command_name(&o.command.cdb);
                let submitted = match o.device {
                    DeviceRef::Changer => changer.submit(o.tag, o.command),
                    DeviceRef::Drive(_) => Err(TransportError::DeviceGone),
                };
                match submitted {
                    Ok(()) => {
                        names.insert(o.tag, what);
                        last_heard = self.clock.now();
                    }
                    Err(e) => {
                        last = Some(CommandError::Transport { what, source: copy_error(&e) });
                        lib.handle_completion(o.tag, Err(e), self.clock.now());
                    }
                }
            }
            while let Some(event) = lib.poll_event() {
                if let Event::Identified { addresses: a, .. } = event {
                    addresses = Some(a);
                }
            }
            match lib.state() {
                LibraryState::Ready => break None,
                LibraryState::Offline => break Some(CommandError::NotReady { last: last.map(Box::new) }),
                _ => {}
            }
            // Reap before blocking: a transport may hold completions that do not make its fd readable.
            let mut reaped_any = false;
            let reaped = loop {
                match changer.reap() {
                    Ok(Some(c)) => {
                        reaped_any = true;
                        let what = names.remove(&c.tag).unwrap_or("SCSI command");
                        match &c.result {
                            Err(e) => last = Some(CommandError::Transport { what, source: copy_error(e) }),
                            Ok(r) => {
                                if let Err(e) = good(what, r.clone()) {
                                    last = Some(e);
                                }
                            }
                        }
                        lib.handle_completion(c.tag, c.result, self.clock.now());
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            if let Err(source) = reaped {
                // Every command in flight came back before the transport gave up, and the library has seen them: a
                // changer that is gone has taken the library offline.
                if lib.state() != LibraryState::Offline {
                    break Some(CommandError::Transport { what: "Waiting for the changer", source });
                }
                continue;
            }
            let deadline = lib.poll_timeout();
            let now = self.clock.now();
            if deadline.is_some_and(|d| now >= d) {
                lib.handle_timeout(now);
                continue;
            }
            if reaped_any {
                last_heard = now;
                continue;
            }
            if changer.in_flight() == 0 && deadline.is_none() {
                // Nothing in flight and nothing to wait for, yet neither Ready nor Offline.
                break Some(CommandError::NotReady { last: last.map(Box::new) });
            }
            let silent_for = now.saturating_sub(last_heard);
            if silent_for >= silence_limit {
                break Some(CommandError::Transport {
                    what: "Waiting for the changer",
                    source: TransportError::TimedOut,
                });
            }
            let limit = silence_limit - silent_for;
            if let Err(source) = wait(changer, deadline.map_or(limit, |d| (d - now).min(limit))) {
                break Some(CommandError::Transport { what: "Waiting for the changer", source });
            }
        };
        Probed { identity: lib.identity().clone(), addresses, elements: lib.elements().to_vec(), error }
    }
}

fn check_sense(r: &Response) -> Option<Sense> {
    (r.status == status::CHECK_CONDITION).then(|| Sense::parse(&r.sense).ok()).flatten()
}

fn good(what: &'static str, r: Response) -> Result<Response, CommandError> {
    if r.is_good() {
        return Ok(r);
    }
    if let Some(sense) = check_sense(&r) {
        return Err(CommandError::Check { what, sense });
    }
    Err(CommandError::Status { what, status: r.status, host: r.host_status, driver: r.driver_status })
}

/// What INQUIRY and VPD say about one device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// The sg node.
    pub sg: PathBuf,
    /// Vendor identification.
    pub vendor: String,
    /// Product identification.
    pub product: String,
    /// Product revision.
    pub revision: String,
    /// Unit serial number (VPD 80h).
    pub serial: Option<String>,
    /// World-wide name (VPD 83h NAA).
    pub wwn: Option<String>,
    /// Why the device could not be identified (or used).
    pub error: Option<String>,
}

/// A tape drive device on the system (what `--list-devices` shows; the inventory's view of a drive is
/// [`crate::model::DriveInfo`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TapeDevice {
    /// Identification.
    #[serde(flatten)]
    pub device: DeviceInfo,
    /// The non-rewinding tape node.
    pub nst: Option<PathBuf>,
}

/// How a drive was matched to its element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MapSource {
    /// The changer reported the drive's serial for the element (DVCID).
    Dvcid,
    /// The administrator's mapping persisted by `--map-drives`.
    Persisted,
    /// The only drive and the only element left.
    Elimination,
}

impl MapSource {
    fn describe(self) -> &'static str {
        match self {
            MapSource::Dvcid => "dvcid",
            MapSource::Persisted => "config/persisted",
            MapSource::Elimination => "elimination",
        }
    }
}

/// One data transfer element of a changer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriveElement {
    /// Element address.
    pub address: u16,
    /// Holds a cartridge.
    pub full: bool,
    /// The cartridge's barcode.
    pub barcode: Option<String>,
    /// The serial the changer reported for it (DVCID).
    pub identifier: Option<String>,
    /// The drive mapped to it.
    pub drive: Option<TapeDevice>,
    /// How the drive was mapped.
    pub source: Option<MapSource>,
}

/// Element counts of a changer (mode page 1Dh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ElementCounts {
    /// Medium transport elements.
    pub robots: Range,
    /// Storage elements.
    pub slots: Range,
    /// Import/export elements.
    pub mail_slots: Range,
    /// Data transfer elements.
    pub drives: Range,
}

/// A range of element addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Range {
    /// First address.
    pub first: u16,
    /// Number of elements.
    pub count: u16,
}

impl From<ElementRange> for Range {
    fn from(r: ElementRange) -> Range {
        Range { first: r.first, count: r.count }
    }
}

impl From<ElementAddressAssignment> for ElementCounts {
    fn from(a: ElementAddressAssignment) -> ElementCounts {
        ElementCounts {
            robots: a.transport.into(),
            slots: a.storage.into(),
            mail_slots: a.import_export.into(),
            drives: a.data_transfer.into(),
        }
    }
}

/// A medium changer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChangerInfo {
    /// Identification (and any error reading the changer).
    #[serde(flatten)]
    pub device: DeviceInfo,
    /// Element counts, when mode page 1Dh was read.
    pub elements: Option<ElementCounts>,
    /// The data transfer elements and their drives.
    pub drive_elements: Vec<DriveElement>,
}

/// Everything `--list-devices` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceList {
    /// The changers.
    pub changers: Vec<ChangerInfo>,
    /// Tape drives not mapped to any changer's element.
    pub drives: Vec<TapeDevice>,
}

/// Opens an sg device for the driver.
fn open(sg: &Path) -> Result<SgTransport, CommandError> {
    SgTransport::open(sg).map_err(|e| match e {
        SgError::Open { source, .. } => CommandError::Open(source),
        other => CommandError::Sg(other),
    })
}

/// Identifies a tape drive (INQUIRY, VPD 80h, VPD 83h).
fn identify_on(driver: &mut Driver, t: &mut dyn Transport, info: &mut DeviceInfo) -> Result<(), CommandError> {
    let r = driver.run(t, "INQUIRY", cdb::inquiry(96).into_command(PROBE_TIMEOUT))?;
    let std = StandardInquiry::parse(&r.data).map_err(|source| CommandError::Parse { what: "INQUIRY", source })?;
    info.vendor = std.vendor;
    info.product = std.product;
    info.revision = std.revision;
    let vpd80 = cdb::inquiry_vpd(opcode::VPD_UNIT_SERIAL, 255).into_command(PROBE_TIMEOUT);
    let r = driver.run(t, "INQUIRY VPD 80h", vpd80)?;
    let serial = inquiry::parse_unit_serial(&r.data)
        .map_err(|source| CommandError::Parse { what: "INQUIRY VPD 80h", source })?;
    info.serial = (!serial.is_empty()).then_some(serial);
    // The world-wide name is optional: not every device has VPD 83h or an NAA designator.
    let vpd83 = cdb::inquiry_vpd(opcode::VPD_DEVICE_IDENTIFICATION, 255).into_command(PROBE_TIMEOUT);
    if let Ok(r) = driver.run(t, "INQUIRY VPD 83h", vpd83) {
        if let Ok(ids) = inquiry::parse_device_identification(&r.data) {
            info.wwn = inquiry::logical_unit_wwn(&ids);
        }
    }
    Ok(())
}

/// A changer's identification as the tools show it.
fn changer_device(sg: &Path, identity: &Identity) -> DeviceInfo {
    DeviceInfo {
        sg: sg.to_owned(),
        vendor: identity.vendor.clone(),
        product: identity.product.clone(),
        revision: identity.revision.clone(),
        serial: Some(identity.serial.clone()).filter(|s| !s.is_empty()),
        wwn: identity.wwn.clone(),
        error: None,
    }
}

/// Maps `drives` (those not yet claimed by another changer: `claimed[i]`) to `elements`, recording which rule
/// mapped each.
fn map_elements(
    elements: &[Element],
    drives: &[TapeDevice],
    claimed: &mut [bool],
    persisted: &[(String, u16)],
) -> Vec<DriveElement> {
    let serials: Vec<Option<String>> =
        drives.iter().zip(claimed.iter()).map(|(d, c)| if *c { None } else { d.device.serial.clone() }).collect();
    let mapping = changer::map_drives(elements, &serials, persisted);
    elements
        .iter()
        .filter(|e| e.element_type == ElementType::DataTransfer)
        .map(|e| {
            let device = mapping.device_for(e.address);
            let source = device.map(|d| {
                let serial = serials[d].as_deref().unwrap_or_default();
                if e.identifier.as_deref().is_some_and(|id| same_serial(id, serial)) {
                    MapSource::Dvcid
                } else if persisted.iter().any(|(s, a)| *a == e.address && same_serial(s, serial)) {
                    MapSource::Persisted
                } else {
                    MapSource::Elimination
                }
            });
            if let Some(d) = device {
                claimed[d] = true;
            }
            DriveElement {
                address: e.address,
                full: e.full,
                barcode: e.barcode.clone(),
                identifier: e.identifier.clone(),
                drive: device.map(|d| drives[d].clone()),
                source,
            }
        })
        .collect()
}

/// Scans sysfs and splits the devices into changers and tape drives.
fn scan(o: &ListOptions) -> Result<(Vec<ScsiDevice>, Vec<ScsiDevice>), DevicesError> {
    let devices = discover::scan(&o.sysfs, &o.dev).map_err(DevicesError::Scan)?;
    let (changers, rest): (Vec<_>, Vec<_>) = devices.into_iter().partition(|d| d.kind == DeviceKind::Changer);
    Ok((changers, rest.into_iter().filter(|d| d.kind == DeviceKind::Tape).collect()))
}

/// Opens and identifies every tape drive; failures are recorded in the results.
fn identify_drives(driver: &mut Driver, tapes: &[ScsiDevice]) -> Vec<(TapeDevice, Option<SgTransport>)> {
    tapes
        .iter()
        .map(|t| {
            let mut info =
                TapeDevice { device: DeviceInfo { sg: t.sg.clone(), ..DeviceInfo::default() }, nst: t.nst.clone() };

            let transport = identified(driver, &mut info, open(&t.sg).map_err(|e| error_chain(&e)));
            (info, transport)
        })
        .collect()
}

/// Reads one changer for `--list-devices` through `changer` (identification and element scan by the changer state
/// machine); failures are recorded in the result.
fn list_changer_on(
    driver: &mut Driver,
    sg: &Path,
    changer: &mut dyn Transport,
    drives: &[TapeDevice],
    claimed: &mut [bool],
    state_dir: &Path,
) -> ChangerInfo {
    let probed = driver.probe_library(changer);
    let mut info = ChangerInfo { device: changer_device(sg, &probed.identity), ..ChangerInfo::default() };
    info.elements = probed.addresses.map(Into::into);
    match &probed.error {
        Some(e) => info.device.error = Some(error_chain(e)),
        None => {
            let persisted = info.device.serial.as_deref().map(|s| load_mapping(state_dir, s)).unwrap_or_default();
            info.drive_elements = map_elements(&probed.elements, drives, claimed, &persisted);
        }
    }
    info
}

/// `rsmd --list-devices`: returns the text to print.
pub fn list_devices(o: &ListOptions) -> Result<String, DevicesError> {
    let (changers, tapes) = scan(o)?;
    let mut driver = Driver::new();
    let drives: Vec<TapeDevice> = identify_drives(&mut driver, &tapes).into_iter().map(|(d, _)| d).collect();
    let mut claimed = vec![false; drives.len()];
    let changers: Vec<ChangerInfo> = changers
        .iter()
        .map(|c| match open(&c.sg) {
            Ok(mut t) => list_changer_on(&mut driver, &c.sg, &mut t, &drives, &mut claimed, &o.state_dir),
            Err(e) => {
                let device = DeviceInfo { sg: c.sg.clone(), error: Some(error_chain(&e)), ..DeviceInfo::default() };
                ChangerInfo { device, ..ChangerInfo::default() }
            }
        })
        .collect();
    let drives = drives.into_iter().zip(claimed).filter(|(_, c)| !c).map(|(d, _)| d).collect();
    let list = DeviceList { changers, drives };
    if o.json {
        let mut s = serde_json::to_string_pretty(&list).map_err(DevicesError::Json)?;
        s.push('\n');
        Ok(s)
    } else {
        Ok(render(&list))
    }
}

fn range_text(name: &str, r: Range) -> String {
    match r.count {
        0 => format!("{name} 0"),
        1 => format!("{name} 1 ({})", r.first),
        n => format!("{name} {n} ({}-{})", r.first, u32::from(r.first) + u32::from(n) - 1),
    }
}

fn opt(v: Option<&str>) -> &str {
    v.unwrap_or("-")
}

fn device_line(d: &DeviceInfo) -> String {
    let mut s = format!("{}: {} {} {}", d.sg.display(), d.vendor, d.product, d.revision);
    s.push_str(&format!(", serial {}, WWN {}", opt(d.serial.as_deref()), opt(d.wwn.as_deref())));
    if let Some(e) = &d.error {
        s.push_str(&format!(", error: {e}"));
    }
    s
}

fn drive_nodes(d: &TapeDevice) -> String {
    format!("{} {}", d.device.sg.display(), d.nst.as_ref().map_or("-".into(), |p| p.display().to_string()))
}

/// Renders the text form of `--list-devices`.
pub fn render(list: &DeviceList) -> String {
    if list.changers.is_empty() && list.drives.is_empty() {
        return "no devices found\n".to_owned();
    }
    let mut out = String::new();
    for c in &list.changers {
        out.push_str(&format!("Changer {}\n", device_line(&c.device)));
        if let Some(e) = c.elements {
            out.push_str(&format!(
                "  {}, {}, {}, {}\n",
                range_text("robots", e.robots),
                range_text("slots", e.slots),
                range_text("mail slots", e.mail_slots),
                range_text("drives", e.drives)
            ));
        }
        for e in &c.drive_elements {
            let contents = match (&e.barcode, e.full) {
                (Some(b), _) => format!(" [full {b}]"),
                (None, true) => " [full]".to_owned(),
                (None, false) => String::new(),
            };
            match (&e.drive, e.source) {
                (Some(d), Some(source)) => out.push_str(&format!(
                    "  drive element {}{contents}: {} {} ({})\n",
                    e.address,
                    opt(d.device.serial.as_deref()),
                    drive_nodes(d),
                    source.describe()
                )),
                _ => out.push_str(&format!("  drive element {}{contents}: unmapped\n", e.address)),
            }
        }
    }
    if !list.drives.is_empty() {
        out.push_str("Drives not in any changer:\n");
        for d in &list.drives {
            let nst = d.nst.as_ref().map_or("-".into(), |p| p.display().to_string());
            out.push_str(&format!("  {} {nst}\n", device_line(&d.device)));
        }
    }
    out
}

/// The persisted mapping file.
#[derive(Debug, Default, Serialize, Deserialize)]
struct DriveMapFile {
    changers: BTreeMap<String, BTreeMap<String, u16>>,
}

fn read_map_file(path: &Path) -> DriveMapFile {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            log::warn!("Ignoring {}: {e}", path.display());
            DriveMapFile::default()
        }),
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!("Cannot read {}: {e}", path.display());
            }
            DriveMapFile::default()
        }
    }
}

/// Persisted drive mappings for the changer with this serial: (drive serial, element address).
pub fn load_mapping(state_dir: &Path, changer_serial: &str) -> Vec<(String, u16)> {
    crate::store::drive_maps(state_dir).remove(changer_serial).unwrap_or_default()
}

/// Merges `pairs` (drive serial, element address) into the persisted mapping of `changer_serial`: entries for the
/// same drive (by [`same_serial`], the rule the mapping is later read with) or the same element are replaced.
/// Writes a temporary file and renames it over the old one.
pub fn save_mapping(state_dir: &Path, changer_serial: &str, pairs: &[(String, u16)]) -> Result<PathBuf, DevicesError> {
    let path = state_dir.join(DRIVE_MAP_FILE);
    let persist = |source| DevicesError::Persist { path: path.clone(), source };
    std::fs::create_dir_all(state_dir).map_err(persist)?;
    let mut file = read_map_file(&path);
    let map = file.changers.entry(changer_serial.to_owned()).or_default();
    for (serial, address) in pairs {
        map.retain(|s, a| !same_serial(s, serial) && a != address);
        map.insert(serial.clone(), *address);
    }
    let text = serde_json::to_string_pretty(&file).map_err(DevicesError::Json)?;
    let tmp = state_dir.join(format!(".{DRIVE_MAP_FILE}.tmp"));
    std::fs::write(&tmp, text + "\n").map_err(persist)?;
    std::fs::rename(&tmp, &path).map_err(persist)?;
    Ok(path)
}

/// What `--map-drives` found for one drive element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "result")]
pub enum ElementOutcome {
    /// The drive that saw the cartridge.
    Mapped {
        /// Drive serial.
        serial: String,
        /// Its sg node.
        sg: PathBuf,
        /// Its non-rewinding tape node.
        nst: Option<PathBuf>,
    },
    /// Not tried (why).
    Skipped {
        /// Why.
        reason: String,
    },
    /// Tried and failed (why).
    Failed {
        /// Why.
        reason: String,
    },
}

/// `--map-drives` for one changer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangerMapping {
    /// The changer's sg node.
    pub sg: PathBuf,
    /// The changer's serial.
    pub serial: Option<String>,
    /// Outcome per drive element address.
    pub elements: Vec<(u16, ElementOutcome)>,
    /// Where the mapping was saved.
    pub saved: Option<PathBuf>,
    /// Why the changer could not be mapped at all.
    pub error: Option<String>,
}

/// How a drive answered TEST UNIT READY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TurState {
    /// GOOD.
    Ready,
    /// NOT READY, MEDIUM NOT PRESENT.
    Empty,
    /// NOT READY for another reason (becoming ready), or UNIT ATTENTION: look again.
    Changing,
    /// Anything else (including a transport failure).
    Other,
}

fn tur(driver: &mut Driver, t: &mut dyn Transport) -> TurState {
    let command = cdb::test_unit_ready().into_command(PROBE_TIMEOUT);
    driver.raw(t, "TEST UNIT READY", command).map_or(TurState::Other, |r| classify_tur(&r))
}

/// What a TEST UNIT READY answer says about the drive's medium.
fn classify_tur(r: &Response) -> TurState {
    if r.is_good() {
        return TurState::Ready;
    }
    match check_sense(r) {
        Some(s) if s.key == SenseKey::NotReady && s.asc == asc::MEDIUM_NOT_PRESENT => TurState::Empty,
        Some(s) if s.key == SenseKey::NotReady || s.key == SenseKey::UnitAttention => TurState::Changing,
        _ => TurState::Other,
    }
}

/// TEST UNIT READY, reading through up to three UNIT ATTENTIONs.
fn settled_tur(driver: &mut Driver, t: &mut dyn Transport) -> TurState {
    let mut state = tur(driver, t);
    for _ in 0..3 {
        if state != TurState::Changing {
            break;
        }
        state = tur(driver, t);
    }
    state
}

/// Polls the candidate drives (indexes into `drives`) until exactly one reports a cartridge. Bounded.
fn find_loaded_drive<T: Transport>(
    driver: &mut Driver,
    drives: &mut [(TapeDevice, Option<T>)],
    candidates: &[usize],
) -> Result<usize, String> {
    let mut last = Vec::new();
    for round in 0..TUR_ROUNDS {
        if round > 0 {
            std::thread::sleep(TUR_PAUSE);
        }
        last = candidates
            .iter()
            .filter_map(|&i| drives[i].1.as_mut().map(|t| (i, settled_tur(driver, t))))
            .collect::<Vec<(usize, TurState)>>();
        let ready: Vec<usize> = last.iter().filter(|(_, s)| *s == TurState::Ready).map(|(i, _)| *i).collect();
        match ready.len() {
            1 => return Ok(ready[0]),
            0 => {}
            _ => return Err(format!("{} drives report a cartridge", ready.len())),
        }
    }
    // Nothing became ready: accept a single drive that at least stopped reporting MEDIUM NOT PRESENT.
    let loaded: Vec<usize> = last.iter().filter(|(_, s)| matches!(s, TurState::Changing)).map(|(i, _)| *i).collect();
    match loaded.as_slice() {
        [one] => Ok(*one),
        [] => Err("no drive saw the cartridge".to_owned()),
        _ => Err(format!("{} drives are becoming ready", loaded.len())),
    }
}

fn move_medium(
    driver: &mut Driver,
    changer: &mut dyn Transport,
    robot: u16,
    from: u16,
    to: u16,
) -> Result<(), CommandError> {
    let command = cdb::move_medium(robot, from, to, false).into_command(MOVE_TIMEOUT);
    driver.run(changer, "MOVE MEDIUM", command).map(|_| ())
}

/// Maps the drive elements of one changer by moving a cartridge through each.
fn map_changer<T: Transport>(
    driver: &mut Driver,
    sg: &Path,
    changer: &mut dyn Transport,
    drives: &mut [(TapeDevice, Option<T>)],
    state_dir: &Path,
) -> ChangerMapping {
    let mut result = ChangerMapping { sg: sg.to_owned(), serial: None, elements: Vec::new(), saved: None, error: None };
    let probed = driver.probe_library(changer);
    result.serial = Some(probed.identity.serial.clone()).filter(|s| !s.is_empty());
    if let Some(e) = &probed.error {
        result.error = Some(error_chain(e));
        return result;
    }
    match map_changer_on(driver, changer, &probed, drives, &mut result.elements) {
        Ok(()) => {}
        Err(e) => result.error = Some(error_chain(&e)),
    }
    let pairs: Vec<(String, u16)> = result
        .elements
        .iter()
        .filter_map(|(a, o)| match o {
            ElementOutcome::Mapped { serial, .. } => Some((serial.clone(), *a)),
            _ => None,
        })
        .collect();
    if let (Some(serial), false) = (&result.serial, pairs.is_empty()) {
        match save_mapping(state_dir, serial, &pairs) {
            Ok(path) => result.saved = Some(path),
            Err(e) => result.error = Some(error_chain(&e)),
        }
    }
    result
}

fn map_changer_on<T: Transport>(
    driver: &mut Driver,
    changer: &mut dyn Transport,
    probed: &Probed,
    drives: &mut [(TapeDevice, Option<T>)],
    out: &mut Vec<(u16, ElementOutcome)>,
) -> Result<(), CommandError> {
    let Some(a) = probed.addresses else {
        return Err(CommandError::Mapping("The changer reported no element addresses".to_owned()));
    };
    let robot = a.transport.first;
    let of_type = |t: ElementType| probed.elements.iter().filter(move |e| e.element_type == t);
    // A full slot holding a data cartridge (cleaning cartridges last). Not every library sets ACCESS on storage
    // elements (tgt does not), so only an exception rules a slot out.
    let mut full: Vec<&Element> = of_type(ElementType::Storage).filter(|s| s.full && s.exception.is_none()).collect();
    full.sort_by_key(|s| s.barcode.as_deref().is_some_and(|b| b.starts_with("CLN")));
    let Some(slot) = full.first().map(|s| s.address) else {
        return Err(CommandError::Mapping("No full storage slot to map drives with".to_owned()));
    };
    let elements: Vec<&Element> = of_type(ElementType::DataTransfer).collect();
    // Drives with a cartridge before we start cannot take part.
    let mut usable: Vec<usize> = Vec::new();
    for (i, (info, t)) in drives.iter_mut().enumerate() {
        if let (Some(t), true) = (t.as_mut(), info.device.serial.is_some()) {
            if settled_tur(driver, t) == TurState::Empty {
                usable.push(i);
            }
        }
    }
    let loaded: Vec<usize> = (0..drives.len()).filter(|i| !usable.contains(i) && drives[*i].1.is_some()).collect();
    let full_elements: Vec<u16> = elements.iter().filter(|e| e.full).map(|e| e.address).collect();
    let mut mapped: Vec<usize> = Vec::new();
    for e in &elements {
        if e.full {
            // One full element and one drive with a cartridge: that is the pair.
            let outcome = if full_elements.len() == 1 && loaded.len() == 1 {
                mapped_outcome(&drives[loaded[0]].0)
            } else {
                ElementOutcome::Skipped { reason: "already holds a cartridge".to_owned() }
            };
            out.push((e.address, outcome));
            continue;
        }
        let candidates: Vec<usize> = usable.iter().copied().filter(|i| !mapped.contains(i)).collect();
        if candidates.is_empty() {
            out.push((e.address, ElementOutcome::Skipped { reason: "no empty drive left".to_owned() }));
            continue;
        }
        if let Err(err) = move_medium(driver, changer, robot, slot, e.address) {
            out.push((e.address, ElementOutcome::Failed { reason: error_chain(&err) }));
            continue;
        }
        let found = find_loaded_drive(driver, drives, &candidates);
        if let Err(err) = move_medium(driver, changer, robot, e.address, slot) {
            // The drive may hold on to the cartridge until it is unloaded.
            let Some(drive) = found.as_ref().ok().and_then(|&i| drives[i].1.as_mut()) else { return Err(err) };
            log::info!("Moving back failed ({}); unloading the drive", error_chain(&err));
            driver.run(drive, "LOAD UNLOAD", cdb::load_unload(false, false).into_command(UNLOAD_TIMEOUT))?;
            move_medium(driver, changer, robot, e.address, slot)?;
        }
        match found {
            Ok(i) => {
                mapped.push(i);
                out.push((e.address, mapped_outcome(&drives[i].0)));
            }
            Err(reason) => out.push((e.address, ElementOutcome::Failed { reason })),
        }
    }
    Ok(())
}

fn mapped_outcome(d: &TapeDevice) -> ElementOutcome {
    ElementOutcome::Mapped {
        serial: d.device.serial.clone().unwrap_or_default(),
        sg: d.device.sg.clone(),
        nst: d.nst.clone(),
    }
}

/// Renders the text form of `--map-drives`.
pub fn render_mapping(results: &[ChangerMapping]) -> String {
    if results.is_empty() {
        return "no changers found\n".to_owned();
    }
    let mut out = String::new();
    for c in results {
        let mapped = c.elements.iter().filter(|(_, o)| matches!(o, ElementOutcome::Mapped { .. })).count();
        out.push_str(&format!(
            "Changer {} (serial {}): {mapped} of {} drive elements mapped\n",
            c.sg.display(),
            opt(c.serial.as_deref()),
            c.elements.len()
        ));
        for (address, o) in &c.elements {
            let text = match o {
                ElementOutcome::Mapped { serial, sg, nst } => format!(
                    "{serial} {} {}",
                    sg.display(),
                    nst.as_ref().map_or("-".into(), |p| p.display().to_string())
                ),
                ElementOutcome::Skipped { reason } => format!("skipped: {reason}"),
                ElementOutcome::Failed { reason } => format!("failed: {reason}"),
            };
            out.push_str(&format!("  drive element {address}: {text}\n"));
        }
        if let Some(e) = &c.error {
            out.push_str(&format!("  error: {e}\n"));
        }
        if let Some(p) = &c.saved {
            out.push_str(&format!("  saved to {}\n", p.display()));
        }
    }
    out
}

fn same_node(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// `rsmd --map-drives`: maps the drives of the changers sysfs knows and of the configuration's vlib libraries
/// (`vlib`: their listen directories; `changer.sock` and `drive<i>.sock` stand in for sg nodes), or of the one
/// changer `changer` names; returns the text to print. Nothing to map is an error.
pub fn map_drives(o: &ListOptions, changer: Option<&Path>, vlib: &[PathBuf]) -> Result<String, DevicesError> {
    let (changers, tapes) = scan(o)?;
    let vlib_changers: Vec<(PathBuf, PathBuf)> =
        vlib.iter().map(|d| (d.clone(), d.join("changer.sock"))).filter(|(_, c)| c.exists()).collect();
    let (selected, vlib_selected): (Vec<&ScsiDevice>, Vec<&(PathBuf, PathBuf)>) = match changer {
        Some(p) => {
            let sg: Vec<&ScsiDevice> = changers.iter().filter(|c| same_node(&c.sg, p)).collect();
            let v: Vec<&(PathBuf, PathBuf)> =
                vlib_changers.iter().filter(|(d, c)| same_node(c, p) || same_node(d, p)).collect();
            if sg.is_empty() && v.is_empty() {
                return Err(DevicesError::NoSuchChanger(p.into()));
            }
            (sg, v)
        }
        None => (changers.iter().collect(), vlib_changers.iter().collect()),
    };
    if selected.is_empty() && vlib_selected.is_empty() {
        return Err(DevicesError::NothingToMap);
    }
    let mut driver = Driver::new();
    let mut results: Vec<ChangerMapping> = Vec::new();
    if !selected.is_empty() {
        let mut drives = identify_drives(&mut driver, &tapes);
        results.extend(selected.iter().map(|c| match open(&c.sg) {
            Ok(mut t) => map_changer(&mut driver, &c.sg, &mut t, &mut drives, &o.state_dir),
            Err(e) => ChangerMapping::failed(&c.sg, error_chain(&e)),
        }));
    }
    for (dir, changer) in vlib_selected {
        let mut drives = identify_vlib_drives(&mut driver, dir);
        results.push(match EmuTransport::connect(changer) {
            Ok(mut t) => map_changer(&mut driver, changer, &mut t, &mut drives, &o.state_dir),
            Err(e) => ChangerMapping::failed(changer, format!("cannot connect: {e}")),
        });
    }
    if o.json {
        let mut s = serde_json::to_string_pretty(&results).map_err(DevicesError::Json)?;
        s.push('\n');
        Ok(s)
    } else {
        Ok(render_mapping(&results))
    }
}

/// A drive device just opened (or not: why), identified by INQUIRY and VPD; failures go into `info`.
fn identified<T: Transport>(driver: &mut Driver, info: &mut TapeDevice, opened: Result<T, String>) -> Option<T> {
    match opened {
        Ok(mut t) => {
            if let Err(e) = identify_on(driver, &mut t, &mut info.device) {
                info.device.error = Some(error_chain(&e));
            }
            Some(t)
        }
        Err(why) => {
            info.device.error = Some(why);
            None
        }
    }
}

/// Opens and identifies a vlib library's drives (`drive0.sock`, `drive1.sock`, … in `dir`).
fn identify_vlib_drives(driver: &mut Driver, dir: &Path) -> Vec<(TapeDevice, Option<EmuTransport>)> {
    (0..)
        .map(|i| dir.join(format!("drive{i}.sock")))
        .take_while(|p| p.exists())
        .map(|p| {
            let mut info = TapeDevice { device: DeviceInfo { sg: p.clone(), ..DeviceInfo::default() }, nst: None };

            let opened = EmuTransport::connect(&p).map_err(|e| format!("cannot connect: {e}"));
            let transport = identified(driver, &mut info, opened);
            (info, transport)
        })
        .collect()
}

impl ChangerMapping {
    fn failed(sg: &Path, error: String) -> ChangerMapping {
        ChangerMapping { sg: sg.to_owned(), serial: None, elements: Vec::new(), saved: None, error: Some(error) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::emu::EmuTransport;
    use crate::transport::Completion;
    use vlib::config::{Cartridge, Location};
    use vlib::server::Server;
    use vlib::{Device, Fault};

    /// A vlib library served on sockets in a temporary directory, without emulated delays.
    fn serve(mut config: vlib::Config) -> (tempfile::TempDir, Server) {
        config.time_scale = 0.0;
        let dir = tempfile::tempdir().unwrap();
        let server = Server::spawn(config, dir.path()).unwrap();
        (dir, server)
    }

    fn connect(server: &Server, device: Device) -> EmuTransport {
        EmuTransport::connect(&server.socket(device)).unwrap()
    }

    /// Opens and identifies drives (socket, sg name shown), as `identify_drives` does for sg nodes.
    fn drives_over(driver: &mut Driver, devices: &[(&Server, usize, &str)]) -> Vec<(TapeDevice, Option<EmuTransport>)> {
        devices
            .iter()
            .map(|&(server, i, sg)| {
                let mut t = connect(server, Device::Drive(i));
                let nst = format!("/dev/nst{}", &sg["/dev/sg".len()..]);
                let mut info =
                    TapeDevice { device: DeviceInfo { sg: sg.into(), ..DeviceInfo::default() }, nst: Some(nst.into()) };
                identify_on(driver, &mut t, &mut info.device).unwrap();
                (info, Some(t))
            })
            .collect()
    }

    /// A transport that answers BUSY to the first command with opcode `busy`, instead of passing it on.
    #[derive(Debug)]
    struct BusyOnce<T> {
        inner: T,
        busy: Option<u8>,
        answered: Vec<Completion>,
    }

    impl<T: Transport> Transport for BusyOnce<T> {
        fn submit(&mut self, tag: Tag, command: Command) -> Result<(), TransportError> {
            if self.busy.is_some() && self.busy == command.cdb.first().copied() {
                self.busy = None;
                let busy = Response { status: status::BUSY, ..Response::default() };
                self.answered.push(Completion { tag, result: Ok(busy) });
                return Ok(());
            }
            self.inner.submit(tag, command)
        }
        fn reap(&mut self) -> Result<Option<Completion>, TransportError> {
            match self.answered.pop() {
                Some(c) => Ok(Some(c)),
                None => self.inner.reap(),
            }
        }
        fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
            self.inner.fd()
        }
        fn wants_write(&self) -> bool {
            self.inner.wants_write()
        }
        fn on_writable(&mut self) -> Result<(), TransportError> {
            self.inner.on_writable()
        }
        fn in_flight(&self) -> usize {
            self.inner.in_flight() + self.answered.len()
        }
    }

    #[test]
    fn list_identifies_and_scans_through_the_changer_state_machine() {
        let mut config = vlib::Config::default_library();
        config.dvcid = true;
        config.power_on_unit_attention = true;
        config.cartridges.push(Cartridge::new("XYZ001L6", Location::Drive(1)));
        let (_dir, server) = serve(config);
        let mut other = vlib::Config::new(vlib::config::Personality::Tgt, 2, 0, 1);
        other.drive_serials = vec!["LOOSE001".into()];
        let (_other_dir, other) = serve(other);
        // After its power-on UNIT ATTENTION the changer reports a reset again: the library probes again.
        server.inject(Fault::UnitAttentionAfter { device: Device::Changer, commands: 4 }).unwrap();
        let mut driver = Driver::new();
        // Drive devices in another order than their elements, and one that is in no changer.
        let drives = drives_over(
            &mut driver,
            &[
                (&server, 2, "/dev/sg3"),
                (&server, 0, "/dev/sg1"),
                (&other, 0, "/dev/sg9"),
                (&server, 3, "/dev/sg4"),
                (&server, 1, "/dev/sg2"),
            ],
        );
        let drives: Vec<TapeDevice> = drives.into_iter().map(|(d, _)| d).collect();
        let mut claimed = vec![false; drives.len()];
        let state = tempfile::tempdir().unwrap();
        // The changer is BUSY for the first READ ELEMENT STATUS: the library retries after its poll_timeout (1 s),
        // which the driver waits for in poll(2) with nothing in flight.
        let busy = Some(opcode::READ_ELEMENT_STATUS);
        let mut changer = BusyOnce { inner: connect(&server, Device::Changer), busy, answered: Vec::new() };
        let info =
            list_changer_on(&mut driver, Path::new("/dev/sg5"), &mut changer, &drives, &mut claimed, state.path());
        assert_eq!(changer.busy, None, "the BUSY was answered");
        assert_eq!(claimed, [true, true, false, true, true]);
        let drives = drives.into_iter().zip(claimed).filter(|(_, c)| !c).map(|(d, _)| d).collect();
        assert_eq!(
            render(&DeviceList { changers: vec![info], drives }),
            "Changer /dev/sg5: VLIB VIRTUAL LIBRARY 0100, serial VLIB0000, WWN naa.500123454a0303a0\n\
             \x20 robots 1 (1), slots 20 (1000-1019), mail slots 2 (10-11), drives 4 (500-503)\n\
             \x20 drive element 500: VDRV0000 /dev/sg1 /dev/nst1 (dvcid)\n\
             \x20 drive element 501 [full XYZ001L6]: VDRV0001 /dev/sg2 /dev/nst2 (dvcid)\n\
             \x20 drive element 502: VDRV0002 /dev/sg3 /dev/nst3 (dvcid)\n\
             \x20 drive element 503: VDRV0003 /dev/sg4 /dev/nst4 (dvcid)\n\
             Drives not in any changer:\n\
             \x20 /dev/sg9: VLIB VIRTUAL TAPE 0100, serial LOOSE001, WWN naa.5001234bb52f8428 /dev/nst9\n"
        );
    }

    #[test]
    fn a_changer_that_goes_away_is_listed_with_the_failed_command() {
        let (_dir, server) = serve(vlib::Config::default_library());
        let mut changer = connect(&server, Device::Changer);
        server.inject(Fault::Disappear { device: Device::Changer }).unwrap();
        let mut driver = Driver::new();
        let state = tempfile::tempdir().unwrap();
        let info = list_changer_on(&mut driver, Path::new("/dev/sg5"), &mut changer, &[], &mut [], state.path());
        assert_eq!(
            info.device.error.as_deref(),
            Some("The changer did not become ready: INQUIRY failed: Device is gone")
        );
        assert!(info.elements.is_none() && info.drive_elements.is_empty());
        // A device that is no changer: the state machine refuses it.
        let mut tape = connect(&server, Device::Drive(0));
        let info = list_changer_on(&mut driver, Path::new("/dev/sg1"), &mut tape, &[], &mut [], state.path());
        assert_eq!(info.device.error.as_deref(), Some("The changer did not become ready"));
    }

    #[test]
    fn map_drives_moves_a_cartridge_through_each_drive_element_without_dvcid() {
        // tgt's personality: no DVCID. Drive 1 already holds a cartridge; slot 1000's cartridge does the mapping.
        let mut config = vlib::Config::default_library();
        config.cartridges.push(Cartridge::new("XYZ001L6", Location::Drive(1)));
        let (_dir, server) = serve(config);
        let mut driver = Driver::new();
        let mut drives = drives_over(
            &mut driver,
            &[(&server, 3, "/dev/sg4"), (&server, 1, "/dev/sg2"), (&server, 0, "/dev/sg1"), (&server, 2, "/dev/sg3")],
        );
        let state = tempfile::tempdir().unwrap();
        let mut changer = connect(&server, Device::Changer);
        let result = map_changer(&mut driver, Path::new("/dev/sg5"), &mut changer, &mut drives, state.path());
        assert_eq!(result.error, None);
        assert_eq!(
            render_mapping(&[result]),
            format!(
                "Changer /dev/sg5 (serial VLIB0000): 4 of 4 drive elements mapped\n\
                 \x20 drive element 500: VDRV0000 /dev/sg1 /dev/nst1\n\
                 \x20 drive element 501: VDRV0001 /dev/sg2 /dev/nst2\n\
                 \x20 drive element 502: VDRV0002 /dev/sg3 /dev/nst3\n\
                 \x20 drive element 503: VDRV0003 /dev/sg4 /dev/nst4\n\
                 \x20 saved to {}\n",
                state.path().join(DRIVE_MAP_FILE).display()
            )
        );
        let mut saved = load_mapping(state.path(), "VLIB0000");
        saved.sort_by_key(|(_, a)| *a);
        let want: Vec<(String, u16)> = (0..4u16).map(|i| (format!("VDRV000{i}"), 500 + i)).collect();
        assert_eq!(saved, want);
        // The library is as it was: the cartridge is back in its slot, and only drive 1 holds one.
        let snap = server.snapshot();
        let at = |a: u16| snap.elements.iter().find(|e| e.address == a).unwrap();
        assert_eq!(at(1000).barcode.as_deref(), Some("ABC001L6"));
        let full: Vec<u16> = (500..504).filter(|&a| at(a).full).collect();
        assert_eq!(full, [501]);
    }

    fn drive(sg: &str, serial: &str, nst: &str) -> TapeDevice {
        TapeDevice {
            device: DeviceInfo {
                sg: sg.into(),
                vendor: "IET".into(),
                product: "VIRTUAL-TAPE".into(),
                revision: "0001".into(),
                serial: Some(serial.into()),
                wwn: Some(format!("naa.{serial}")),
                error: None,
            },
            nst: Some(nst.into()),
        }
    }

    fn element(address: u16, id: Option<&str>) -> Element {
        Element {
            element_type: ElementType::DataTransfer,
            address,
            full: false,
            barcode: None,
            source: None,
            exception: None,
            accessible: true,
            impexp: false,
            cleaning: false,
            tag_printed: 0,
            identifier: id.map(str::to_owned),
            device: None,
        }
    }

    #[test]
    fn mapping_sources_dvcid_persisted_elimination() {
        let drives = [
            drive("/dev/sg1", "beaf11", "/dev/nst0"),
            drive("/dev/sg2", "beaf12", "/dev/nst1"),
            drive("/dev/sg3", "beaf13", "/dev/nst2"),
            drive("/dev/sg4", "beaf14", "/dev/nst3"),
            drive("/dev/sg9", "other", "/dev/nst9"),
        ];
        let mut claimed = vec![false, false, false, false, true];
        let elements = [element(500, Some("beaf12")), element(501, None), element(502, None), element(503, None)];
        let persisted = [("beaf13".to_owned(), 503), ("beaf14".to_owned(), 501)];
        let m = map_elements(&elements, &drives, &mut claimed, &persisted);
        let got: Vec<(u16, Option<&str>, Option<MapSource>)> = m
            .iter()
            .map(|e| (e.address, e.drive.as_ref().and_then(|d| d.device.serial.as_deref()), e.source))
            .collect();
        assert_eq!(
            got,
            [
                (500, Some("beaf12"), Some(MapSource::Dvcid)),
                (501, Some("beaf14"), Some(MapSource::Persisted)),
                (502, Some("beaf11"), Some(MapSource::Elimination)),
                (503, Some("beaf13"), Some(MapSource::Persisted)),
            ]
        );
        assert_eq!(claimed, [true; 5]);
    }

    #[test]
    fn claimed_drives_are_not_reused_and_unmapped_elements_stay_unmapped() {
        let drives = [drive("/dev/sg1", "A", "/dev/nst0"), drive("/dev/sg2", "B", "/dev/nst1")];
        let mut claimed = vec![true, false];
        let elements = [element(500, Some("A")), element(501, None), element(502, None)];
        let m = map_elements(&elements, &drives, &mut claimed, &[]);
        assert!(m.iter().all(|e| e.drive.is_none() && e.source.is_none()));
        assert_eq!(claimed, [true, false]);
    }

    fn sample() -> DeviceList {
        let d0 = drive("/dev/sg1", "beaf11", "/dev/nst0");
        let d1 = drive("/dev/sg2", "beaf12", "/dev/nst1");
        let mut loose = drive("/dev/sg7", "", "/dev/nst5");
        loose.device.serial = None;
        loose.device.error = Some("INQUIRY failed: Device is gone".into());
        DeviceList {
            changers: vec![ChangerInfo {
                device: DeviceInfo {
                    sg: "/dev/sg5".into(),
                    vendor: "IET".into(),
                    product: "VIRTUAL-CHANGER".into(),
                    revision: "0001".into(),
                    serial: Some("beaf15".into()),
                    wwn: Some("naa.3000000100000005".into()),
                    error: None,
                },
                elements: Some(ElementCounts {
                    robots: Range { first: 1, count: 1 },
                    slots: Range { first: 1000, count: 20 },
                    mail_slots: Range { first: 10, count: 2 },
                    drives: Range { first: 500, count: 3 },
                }),
                drive_elements: vec![
                    DriveElement {
                        address: 500,
                        full: true,
                        barcode: Some("ABC001L6".into()),
                        identifier: Some("beaf11".into()),
                        drive: Some(d0),
                        source: Some(MapSource::Dvcid),
                    },
                    DriveElement {
                        address: 501,
                        full: false,
                        barcode: None,
                        identifier: None,
                        drive: Some(d1),
                        source: Some(MapSource::Elimination),
                    },
                    DriveElement {
                        address: 502,
                        full: false,
                        barcode: None,
                        identifier: None,
                        drive: None,
                        source: None,
                    },
                ],
            }],
            drives: vec![loose],
        }
    }

    #[test]
    fn renders_text() {
        let text = render(&sample());
        assert_eq!(
            text,
            "Changer /dev/sg5: IET VIRTUAL-CHANGER 0001, serial beaf15, WWN naa.3000000100000005\n\
             \x20 robots 1 (1), slots 20 (1000-1019), mail slots 2 (10-11), drives 3 (500-502)\n\
             \x20 drive element 500 [full ABC001L6]: beaf11 /dev/sg1 /dev/nst0 (dvcid)\n\
             \x20 drive element 501: beaf12 /dev/sg2 /dev/nst1 (elimination)\n\
             \x20 drive element 502: unmapped\n\
             Drives not in any changer:\n\
             \x20 /dev/sg7: IET VIRTUAL-TAPE 0001, serial -, WWN naa., error: INQUIRY failed: Device is gone /dev/nst5\n"
        );
    }

    #[test]
    fn renders_json() {
        let v = serde_json::to_value(sample()).unwrap();
        let c = &v["changers"][0];
        assert_eq!(c["serial"], "beaf15");
        assert_eq!(c["sg"], "/dev/sg5");
        assert_eq!(c["elements"]["slots"]["first"], 1000);
        assert_eq!(c["drive_elements"][0]["drive"]["serial"], "beaf11");
        assert_eq!(c["drive_elements"][0]["drive"]["nst"], "/dev/nst0");
        assert_eq!(c["drive_elements"][0]["source"], "dvcid");
        assert_eq!(c["drive_elements"][1]["source"], "elimination");
        assert!(c["drive_elements"][2]["drive"].is_null());
        assert_eq!(v["drives"][0]["error"], "INQUIRY failed: Device is gone");
    }

    /// Issue 15: `--map-drives` maps a configured vlib library (no DVCID: the drives' serials come from the drives
    /// themselves as a cartridge goes through each) and saves the map under the changer's serial, which rsmd then
    /// applies.
    #[test]
    fn map_drives_maps_a_configured_vlib_library() {
        let mut c = vlib::Config::default_library();
        c.dvcid = false;
        let (dir, _server) = serve(c);
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("class/scsi_generic")).unwrap();
        let o = ListOptions {
            sysfs: tmp.path().into(),
            dev: tmp.path().join("dev"),
            state_dir: tmp.path().join("state"),
            json: false,
        };
        let text = map_drives(&o, None, &[dir.path().to_owned()]).unwrap();
        assert!(text.contains("4 of 4 drive elements mapped"), "{text}");
        assert!(text.contains("drive2.sock"), "{text}");
        assert!(text.contains("saved to"), "{text}");
        let maps = crate::store::drive_maps(&o.state_dir);
        assert_eq!(maps.values().next().map(Vec::len), Some(4), "{maps:?}");
        // The same library named by its changer socket; an unknown path is refused.
        let one = map_drives(&o, Some(&dir.path().join("changer.sock")), &[dir.path().to_owned()]).unwrap();
        assert!(one.contains("4 of 4"), "{one}");
        assert!(matches!(
            map_drives(&o, Some(Path::new("/nowhere/changer.sock")), &[dir.path().to_owned()]),
            Err(DevicesError::NoSuchChanger(_))
        ));
    }

    #[test]
    fn empty_sysfs_lists_no_devices() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("class/scsi_generic")).unwrap();
        let o = ListOptions {
            sysfs: tmp.path().into(),
            dev: tmp.path().join("dev"),
            state_dir: tmp.path().join("state"),
            json: false,
        };
        assert_eq!(list_devices(&o).unwrap(), "no devices found\n");
        // Issue 15: nothing to map is an error (rsmd exits 1), not "no changers found" with status 0.
        assert!(matches!(map_drives(&o, None, &[]), Err(DevicesError::NothingToMap)));
        assert!(matches!(map_drives(&o, Some(Path::new("/dev/sg3")), &[]), Err(DevicesError::NoSuchChanger(_))));
        let json: serde_json::Value =
            serde_json::from_str(&list_devices(&ListOptions { json: true, ..o }).unwrap()).unwrap();
        assert_eq!(json, serde_json::json!({"changers": [], "drives": []}));
    }

    #[test]
    fn a_device_that_cannot_be_opened_is_listed_with_its_error() {
        // A fake sysfs tree whose tape's /dev node does not exist.
        let tmp = tempfile::tempdir().unwrap();
        let dev = tmp.path().join("devices/h/2:0:0:1");
        std::fs::create_dir_all(dev.join("scsi_tape/nst0")).unwrap();
        std::fs::write(dev.join("type"), "1\n").unwrap();
        for (k, v) in [("vendor", "IET"), ("model", "VIRTUAL-TAPE"), ("rev", "0001")] {
            std::fs::write(dev.join(k), v).unwrap();
        }
        std::fs::create_dir_all(dev.join("scsi_generic/sg3")).unwrap();
        std::os::unix::fs::symlink("../../../2:0:0:1", dev.join("scsi_generic/sg3/device")).unwrap();
        std::fs::create_dir_all(tmp.path().join("class/scsi_generic")).unwrap();
        std::os::unix::fs::symlink(dev.join("scsi_generic/sg3"), tmp.path().join("class/scsi_generic/sg3")).unwrap();
        let o = ListOptions {
            sysfs: tmp.path().into(),
            dev: tmp.path().join("dev"),
            state_dir: tmp.path().join("state"),
            json: false,
        };
        let text = list_devices(&o).unwrap();
        assert!(text.starts_with("Drives not in any changer:\n"), "{text}");
        assert!(text.contains("sg3: "), "{text}");
        assert!(text.contains("error: Cannot open the device: No such file or directory"), "{text}");
        assert!(text.trim_end().ends_with("dev/nst0"), "{text}");
    }

    #[test]
    fn mapping_file_round_trip_and_merge() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state/sub");
        assert!(load_mapping(&state, "C1").is_empty());
        let path = save_mapping(&state, "C1", &[("D1".into(), 500), ("D2".into(), 501)]).unwrap();
        assert_eq!(path, state.join(DRIVE_MAP_FILE));
        save_mapping(&state, "C2", &[("D9".into(), 256)]).unwrap();
        // D3 takes element 501 from D2; D1 moves to 502.
        save_mapping(&state, "C1", &[("D3".into(), 501), ("D1".into(), 502)]).unwrap();
        assert_eq!(load_mapping(&state, "C1"), [("D1".to_owned(), 502), ("D3".to_owned(), 501)]);
        assert_eq!(load_mapping(&state, "C2"), [("D9".to_owned(), 256)]);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v, serde_json::json!({"changers": {"C1": {"D1": 502, "D3": 501}, "C2": {"D9": 256}}}));
        assert!(!state.join(format!(".{DRIVE_MAP_FILE}.tmp")).exists());
        // The same drive, its serial in other case: one entry, the new one.
        save_mapping(&state, "C2", &[("d9".into(), 257)]).unwrap();
        assert_eq!(load_mapping(&state, "C2"), [("d9".to_owned(), 257)]);
        std::fs::write(&path, "not json").unwrap();
        assert!(load_mapping(&state, "C1").is_empty());
    }

    fn check(key: u8, asc: u8, ascq: u8) -> Response {
        let mut sense = vec![0u8; 18];
        sense[0] = 0x70;
        sense[2] = key;
        sense[7] = 10;
        sense[12] = asc;
        sense[13] = ascq;
        Response { status: status::CHECK_CONDITION, sense, ..Response::default() }
    }

    #[test]
    fn test_unit_ready_answers_are_classified() {
        assert_eq!(classify_tur(&Response::default()), TurState::Ready);
        assert_eq!(classify_tur(&check(0x02, 0x3A, 0x00)), TurState::Empty);
        assert_eq!(classify_tur(&check(0x02, 0x04, 0x01)), TurState::Changing);
        assert_eq!(classify_tur(&check(0x06, 0x28, 0x00)), TurState::Changing);
        assert_eq!(classify_tur(&check(0x04, 0x44, 0x00)), TurState::Other);
        assert_eq!(classify_tur(&Response { status: status::BUSY, ..Response::default() }), TurState::Other);
        let gone = Response { host_status: crate::transport::host_status::NO_CONNECT, ..Response::default() };
        assert_eq!(classify_tur(&gone), TurState::Other);
    }

    #[test]
    fn renders_mapping() {
        let r = ChangerMapping {
            sg: "/dev/sg5".into(),
            serial: Some("beaf15".into()),
            elements: vec![
                (
                    500,
                    ElementOutcome::Mapped {
                        serial: "beaf11".into(),
                        sg: "/dev/sg1".into(),
                        nst: Some("/dev/nst0".into()),
                    },
                ),
                (501, ElementOutcome::Skipped { reason: "already holds a cartridge".into() }),
                (502, ElementOutcome::Failed { reason: "no drive saw the cartridge".into() }),
            ],
            saved: Some("/var/lib/rsmd/drive-map.json".into()),
            error: None,
        };
        assert_eq!(
            render_mapping(&[r]),
            "Changer /dev/sg5 (serial beaf15): 1 of 3 drive elements mapped\n\
             \x20 drive element 500: beaf11 /dev/sg1 /dev/nst0\n\
             \x20 drive element 501: skipped: already holds a cartridge\n\
             \x20 drive element 502: failed: no drive saw the cartridge\n\
             \x20 saved to /var/lib/rsmd/drive-map.json\n"
        );
    }
}
