//! The device machine under [`super::Library`]: probing, scanning, moves and drive commands, sans-IO.
//!
//! # Primer
//! A library is a changer device (the robot and its elements) plus the tape drives it serves, each a separate SCSI
//! device. The library never touches a device: it emits [`Outgoing`] commands (`poll_request`), the server submits
//! them on the device's transport and hands each finished command back (`handle_completion`). Time is a parameter:
//! the server passes its monotonic clock in milliseconds (`now`) and calls `handle_timeout` when the deadline from
//! `poll_timeout` passes. What the library learns comes out as [`Event`]s (`poll_event`), which the server persists
//! and publishes.
//!
//! Call order for the server after any input: drain `poll_request`, then `poll_event`, then read `poll_timeout`.
//!
//! Commands to the changer are serialized (one in flight: the robot is one resource and most libraries process
//! one medium-changer command at a time); commands to different drives run in parallel.
//!
//! States ([`crate::model::LibraryState`]): probing (INQUIRY, VPD 80h/83h, MODE SENSE 1Dh/1Fh, every drive's
//! INQUIRY and VPD 80h) → scanning (READ ELEMENT STATUS per element type, in chunks, with VOLTAG, and DVCID for
//! drives where supported) → ready; busy while a move runs; offline when the changer is gone or failed. Any UNIT
//! ATTENTION makes the cached inventory suspect: the library rescans (re-probing after a reset) and reports the
//! result as a full inventory for the caller to reconcile.
//!
//! A changer that refuses a command for now (NOT READY, BUSY, TASK SET FULL, ABORTED COMMAND, a repeated UNIT
//! ATTENTION) holds its queue: the refused command goes back to the head and nothing is sent to the changer until
//! the backoff passes (1 s doubling to 30 s by default). Probing and scanning wait like this for as long as it
//! takes, with the reason exposed ([`Machine::not_ready_reason`]); a move gives up after its move timeout.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::model::LibraryState;
use crate::scsi::action::{classify, Action, Failure};
use crate::scsi::asc::Asc;
use crate::scsi::cdb::{self, ReadElementStatus};
use crate::scsi::element::{allocation_for, chunks, ElementStatusReport, ElementType};
use crate::scsi::inquiry::{self, StandardInquiry};
use crate::scsi::mode::{DeviceCapabilities, ElementAddressAssignment, ModeParameters};
use crate::scsi::opcode;
use crate::transport::{Command, Response, Tag, TransportError};

pub use super::Millis;

/// Which of a library's devices a command is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceRef {
    /// The medium changer.
    Changer,
    /// The tape drive device with this index in the library's drive device list.
    Drive(usize),
}

impl std::fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceRef::Changer => write!(f, "changer"),
            DeviceRef::Drive(i) => write!(f, "drive device {i}"),
        }
    }
}

/// A command for the server to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The device.
    pub device: DeviceRef,
    /// The tag to submit it under (unique among this library's commands in flight).
    pub tag: Tag,
    /// The command.
    pub command: Command,
}

/// Tunables of a library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryOptions {
    /// Elements per READ ELEMENT STATUS.
    pub chunk: u16,
    /// Explicit drive mapping from configuration: drive serial → data transfer element address.
    pub drive_map: Vec<(String, u16)>,
    /// Interval of the TEST UNIT READY heartbeat on an idle changer (0: none).
    pub heartbeat_ms: Millis,
    /// Timeout of a robot move.
    pub move_timeout: Duration,
    /// Timeout of a READ ELEMENT STATUS.
    pub scan_timeout: Duration,
    /// Timeout of probing commands.
    pub probe_timeout: Duration,
    /// How long a drive may take to become ready after a load before the mount fails (the mount scheduler's).
    pub ready_timeout_ms: Millis,
    /// How long a deferred dismount leaves the cartridge loaded (the broker's).
    pub deferred_dismount_ms: Millis,
    /// Cartridges an operator puts in the mail slots are injected at once (the broker's).
    pub auto_inject: bool,
    /// The library's partitions (the broker's).
    pub partitions: Vec<crate::model::Partition>,
    /// TEST UNIT READY poll interval after a load while the load time is unknown (50 polls, then backing off).
    pub poll_first_ms: Millis,
    /// Longest TEST UNIT READY poll interval.
    pub poll_max_ms: Millis,
    /// How long a cancelled or timed-out job waits for an answer from its drive before giving up on it (the
    /// mount scheduler's; see [`super::mounts::ABORT_GRACE_MS`]).
    pub abort_grace_ms: Millis,
    /// First wait before sending a changer command again that the changer refused for now (NOT READY, BUSY, a
    /// repeated UNIT ATTENTION); doubled at each consecutive refusal up to [`LibraryOptions::retry_max_ms`].
    pub retry_first_ms: Millis,
    /// Longest wait between two attempts of a refused changer command: a changer that never becomes ready is
    /// asked again at this interval for as long as it stays attached.
    pub retry_max_ms: Millis,
}

impl Default for LibraryOptions {
    fn default() -> Self {
        LibraryOptions {
            chunk: 256,
            drive_map: Vec::new(),
            heartbeat_ms: 30_000,
            move_timeout: Duration::from_secs(15 * 60),
            scan_timeout: Duration::from_secs(10 * 60),
            probe_timeout: Duration::from_secs(60),
            ready_timeout_ms: super::mounts::READY_TIMEOUT_MS,
            deferred_dismount_ms: super::DEFERRED_DISMOUNT_MS,
            auto_inject: false,
            partitions: Vec::new(),
            poll_first_ms: super::mounts::FIRST_POLL_MS,
            poll_max_ms: super::mounts::MAX_POLL_MS,
            abort_grace_ms: super::mounts::ABORT_GRACE_MS,
            retry_first_ms: RETRY_FIRST_MS,
            retry_max_ms: RETRY_MAX_MS,
        }
    }
}

/// Default of [`LibraryOptions::retry_first_ms`].
pub const RETRY_FIRST_MS: Millis = 1_000;
/// Default of [`LibraryOptions::retry_max_ms`].
pub const RETRY_MAX_MS: Millis = 30_000;

/// What INQUIRY and VPD say about a device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// Vendor identification.
    pub vendor: String,
    /// Product identification.
    pub product: String,
    /// Revision.
    pub revision: String,
    /// Unit serial number (VPD 80h).
    pub serial: String,
    /// World-wide name (VPD 83h NAA), when reported.
    pub wwn: Option<String>,
}

/// One element as the library last reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Element type.
    pub element_type: ElementType,
    /// Element address.
    pub address: u16,
    /// Holds a cartridge.
    pub full: bool,
    /// The cartridge's barcode.
    pub barcode: Option<String>,
    /// Where the cartridge came from (SVALID source address).
    pub source: Option<u16>,
    /// ASC/ASCQ when the element reports an exception.
    pub exception: Option<Asc>,
    /// The robot can reach it.
    pub accessible: bool,
    /// Import/export: placed by an operator.
    pub impexp: bool,
    /// The library reports the cartridge a cleaning cartridge (descriptor MEDIUM TYPE 2).
    pub cleaning: bool,
    /// How many characters of its volume tag field mtx prints (0: none): the barcode and the blanks after it.
    pub tag_printed: u8,
    /// Data transfer elements: the drive serial from DVCID.
    pub identifier: Option<String>,
    /// Data transfer elements: the index of the drive device mapped to it.
    pub device: Option<usize>,
}

/// Why a move failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoveError {
    /// The device refused it; the sense says why.
    #[error("The library refused the move")]
    Refused(#[source] Failure),
    /// Checked against the cached inventory before moving the robot: the source holds nothing.
    #[error("Source element {0} is empty")]
    SourceEmpty(u16),
    /// Checked against the cached inventory: the destination is occupied.
    #[error("Destination element {0} is full")]
    DestinationFull(u16),
    /// The address is not an element of this library.
    #[error("No element at address {0}")]
    NoSuchElement(u16),
    /// The library is offline.
    #[error("The library is offline")]
    Offline,
    /// The move did not finish within its timeout; the library rescans.
    #[error("The move timed out")]
    TimedOut,
    /// The request was cancelled before the robot started it.
    #[error("The move was cancelled")]
    Cancelled,
}

/// Who asked for a move or a drive command: the library's own job scheduler or its caller. Ids of the two never
/// collide, and each side only sees the events of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The caller's id ([`super::Library::request_move`]).
    Caller(u64),
    /// A mount or dismount job ([`super::Library::submit_job`]).
    Job(u64),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Caller(id) => write!(f, "{id}"),
            Origin::Job(id) => write!(f, "job {id}"),
        }
    }
}

/// What the library tells the server.
#[derive(Debug)]
pub enum Event {
    /// The state changed.
    State(LibraryState),
    /// Probing read the changer's identity and address assignment.
    Identified {
        /// The changer.
        changer: Identity,
        /// Drive devices by index (None when probing the drive failed).
        drives: Vec<Option<Identity>>,
        /// Element address assignment.
        addresses: ElementAddressAssignment,
        /// EXCHANGE MEDIUM supported.
        exchange: bool,
    },
    /// A complete scan: this is the whole inventory (replace the cached one).
    Inventory {
        /// The scan (shared with the changer's own copy).
        elements: Arc<Vec<Element>>,
        /// The scan it replaced, handed over to be freed a slice at a time: freeing 50,000 elements (a heap
        /// allocation each, their barcodes) at once took 8-12 ms of one turn of the loop.
        previous: Arc<Vec<Element>>,
    },
    /// These elements changed (after a move or a re-read).
    Elements(Vec<Element>),
    /// A requested move finished.
    MoveFinished {
        /// Who asked for it.
        id: Origin,
        /// The outcome.
        result: Result<(), MoveError>,
    },
    /// A drive command finished (commands the caller sent with [`Machine::drive_command`]).
    DriveCommand {
        /// Who sent it.
        id: Origin,
        /// The drive device.
        drive: usize,
        /// The outcome.
        result: Result<Response, TransportError>,
    },
    /// A drive answered with the informational exception of TapeAlert (ASC 5Dh): its flags are worth reading.
    TapeAlert {
        /// The drive device.
        drive: usize,
    },
    /// The operator door is unlocked (PREVENT ALLOW MEDIUM REMOVAL, allow): no robot move starts until it closes.
    DoorUnlocked,
    /// The door access ended: the door was opened and closed (and the library read again), or it was not opened
    /// in time (`opened` false); robot work resumes.
    DoorClosed {
        /// The operator opened it.
        opened: bool,
    },
    /// The hardware reported something that makes the inventory suspect (UNIT ATTENTION).
    Attention {
        /// The device.
        device: DeviceRef,
        /// ASC/ASCQ.
        asc: Asc,
    },
}

/// What a command in flight is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Purpose {
    Inquiry,
    Serial,
    DeviceId,
    AddressAssignment,
    Capabilities,
    DriveInquiry(usize),
    DriveSerial(usize),
    Scan {
        element_type: ElementType,
        start: u16,
        count: u16,
        alloc: u32,
        dvcid: bool,
        whole: bool,
    },
    Move {
        id: Origin,
        source: u16,
        destination: u16,
    },
    /// INITIALIZE ELEMENT STATUS before a full inventory's scan.
    Initialize,
    /// PREVENT ALLOW MEDIUM REMOVAL (allow): the door is unlocked for the operator.
    Door,
    Heartbeat,
    Drive {
        id: Origin,
        drive: usize,
    },
}

#[derive(Debug, Clone)]
struct Queued {
    purpose: Purpose,
    command: Command,
}

/// Where probing and scanning stand.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Identifying the changer and drives: commands are queued, answers accumulate in `probe`.
    Probing,
    /// Reading element status: `scan_queue` holds the chunks still to read, `scanned` the results so far.
    Scanning,
    /// Inventory known; moves run.
    Ready,
    /// The changer is gone or failed; nothing is sent until [`Machine::reattach`].
    Offline,
}

#[derive(Debug, Default, Clone)]
struct Probe {
    changer: Identity,
    drives: Vec<Option<Identity>>,
    addresses: Option<ElementAddressAssignment>,
    exchange: bool,
}

/// Whether a drive device can take commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DriveDevice {
    /// Attached and identified (or being probed with the changer): commands go to it.
    Present,
    /// Its device disappeared: commands to it fail at once with [`TransportError::DeviceGone`].
    Gone,
    /// Back after being gone: INQUIRY and VPD 80h are re-identifying it (`pending` answers still due); jobs do not
    /// choose it yet.
    Identifying {
        /// Answers still due.
        pending: u8,
    },
}

/// The operator door, as `AccessLibraryDoor` drives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    /// Closed (or never asked for): robot work runs.
    Closed,
    /// PREVENT ALLOW MEDIUM REMOVAL (allow) is on its way.
    Unlocking,
    /// Unlocked for the operator: no move starts. `until`: when a door nobody opened is locked again in rsmd's
    /// eyes; `opened`: the changer answered NOT READY (its door open) since.
    Unlocked { until: Millis, opened: bool },
    /// The door was closed (a unit attention, or the changer ready again): the library is read again, and robot
    /// work resumes after that.
    Closing { opened: bool },
}

/// How long an unlocked door may stay unopened before robot work resumes.
pub const DOOR_TIMEOUT_MS: Millis = 5 * 60 * 1000;
/// How often the changer is asked whether the door is open while it is unlocked.
pub const DOOR_POLL_MS: Millis = 1_000;

/// A move requested and not yet started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MoveRequest {
    id: Origin,
    source: u16,
    destination: u16,
}

/// One library: a changer and its drive devices. See the module primer.
#[derive(Debug)]
pub struct Machine {
    options: LibraryOptions,
    drive_count: usize,
    phase: Phase,
    state: LibraryState,
    next_tag: Tag,
    /// Commands for the server to submit.
    outgoing: VecDeque<Outgoing>,
    /// Commands for the changer waiting for the one in flight.
    changer_queue: VecDeque<Queued>,
    /// The changer command in flight.
    changer_busy: bool,
    in_flight: HashMap<Tag, (DeviceRef, Purpose)>,
    events: VecDeque<Event>,
    probe: Probe,
    probes_pending: usize,
    /// Per drive device: present, gone, or being re-identified.
    drives: Vec<DriveDevice>,
    scan_queue: VecDeque<Purpose>,
    scanned: Vec<Element>,
    dvcid: bool,
    rescan: Option<bool>,
    /// The next scan starts with INITIALIZE ELEMENT STATUS (a full inventory).
    initialize: bool,
    pub(super) elements: Arc<Vec<Element>>,
    moves: VecDeque<MoveRequest>,
    current_move: Option<MoveRequest>,
    /// The changer refused its last command for now: nothing is sent to it before this time (the refused command
    /// waits at the head of `changer_queue`).
    hold_until: Option<Millis>,
    /// Consecutive refusals of changer commands (NOT READY, BUSY, UNIT ATTENTION); 0 once it answers.
    refusals: u32,
    /// When the current run of refusals began.
    refused_since: Millis,
    /// Why the changer is being waited for (the last refusal, named), until it answers a command.
    not_ready: Option<String>,
    heartbeat_at: Option<Millis>,
    /// The operator door.
    door: Door,
    /// When the door closes, the re-read is a full inventory (INITIALIZE ELEMENT STATUS first).
    door_full: bool,
    now: Millis,
}

impl Machine {
    /// A library for a changer with `drive_count` drive devices. Probing starts at once.
    pub fn new(drive_count: usize, options: LibraryOptions, now: Millis) -> Machine {
        let mut lib = Machine {
            options,
            drive_count,
            phase: Phase::Offline,
            state: LibraryState::Offline,
            next_tag: 1,
            outgoing: VecDeque::new(),
            changer_queue: VecDeque::new(),
            changer_busy: false,
            in_flight: HashMap::new(),
            events: VecDeque::new(),
            probe: Probe::default(),
            probes_pending: 0,
            drives: vec![DriveDevice::Present; drive_count],
            scan_queue: VecDeque::new(),
            scanned: Vec::new(),
            dvcid: true,
            rescan: None,
            initialize: false,
            elements: Arc::default(),
            moves: VecDeque::new(),
            current_move: None,
            hold_until: None,
            refusals: 0,
            refused_since: now,
            not_ready: None,
            heartbeat_at: None,
            door: Door::Closed,
            door_full: false,
            now,
        };
        lib.start_probe();
        lib
    }

    /// The current state.
    pub fn state(&self) -> LibraryState {
        self.state
    }

    /// The inventory as last read (empty before the first scan).
    pub fn elements(&self) -> &[Element] {
        &self.elements
    }

    /// The element at `address`.
    pub fn element(&self, address: u16) -> Option<&Element> {
        self.elements.iter().find(|e| e.address == address)
    }

    /// The element address assignment, once probed.
    pub fn addresses(&self) -> Option<ElementAddressAssignment> {
        self.probe.addresses
    }

    /// Identity of the changer, once probed.
    pub fn identity(&self) -> &Identity {
        &self.probe.changer
    }

    /// Identities of the drive devices, once probed.
    pub fn drive_identities(&self) -> &[Option<Identity>] {
        &self.probe.drives
    }

    /// Why the changer is being waited for: Some while it refuses commands for now (NOT READY, BUSY, repeated
    /// UNIT ATTENTION), with the sense named ("not ready: 04h/01h logical unit is in process of becoming ready"),
    /// until it answers a command. Probing and scanning wait for it indefinitely, asking again with backoff.
    pub fn not_ready_reason(&self) -> Option<&str> {
        self.not_ready.as_deref()
    }

    /// While a whole scan runs: (elements read, elements the library has).
    pub fn scan_progress(&self) -> Option<(usize, usize)> {
        if self.phase != Phase::Scanning {
            return None;
        }
        let ea = self.probe.addresses?;
        let total =
            [ElementType::MediumTransport, ElementType::Storage, ElementType::ImportExport, ElementType::DataTransfer]
                .into_iter()
                .filter_map(|t| ea.range(t))
                .map(|r| usize::from(r.count))
                .sum();
        Some((self.scanned.len().min(total), total))
    }

    /// Number of moves queued or running.
    pub fn moves_pending(&self) -> usize {
        self.moves.len() + usize::from(self.current_move.is_some())
    }

    /// Asks for a move of the cartridge in `source` to `destination`. Checked against the cached inventory first;
    /// then queued behind other moves. The outcome comes as [`Event::MoveFinished`] with `id`.
    pub fn request_move(&mut self, id: Origin, source: u16, destination: u16) -> Result<(), MoveError> {
        if self.phase == Phase::Offline {
            return Err(MoveError::Offline);
        }
        if !self.elements.is_empty() {
            let src = self.element(source).ok_or(MoveError::NoSuchElement(source))?;
            if !src.full {
                return Err(MoveError::SourceEmpty(source));
            }
            let dst = self.element(destination).ok_or(MoveError::NoSuchElement(destination))?;
            if dst.full && destination != source {
                return Err(MoveError::DestinationFull(destination));
            }
        }
        self.moves.push_back(MoveRequest { id, source, destination });
        self.pump();
        Ok(())
    }

    /// Cancels a move that has not started (queued, or refused for now and waiting to be sent again). Returns
    /// false when it is unknown or the robot has it.
    pub fn cancel_move(&mut self, id: Origin) -> bool {
        let before = self.moves.len();
        self.moves.retain(|m| m.id != id);
        let mut cancelled = self.moves.len() != before;
        let held = |q: &Queued| matches!(q.purpose, Purpose::Move { id: i, .. } if i == id);
        if !cancelled && self.changer_queue.iter().any(held) {
            self.changer_queue.retain(|q| !held(q));
            self.current_move = None;
            cancelled = true;
            self.pump();
        }
        if cancelled {
            self.events.push_back(Event::MoveFinished { id, result: Err(MoveError::Cancelled) });
        }
        cancelled
    }

    /// True when drive device `drive` exists, is attached and identified: jobs may use it.
    pub fn drive_usable(&self, drive: usize) -> bool {
        self.drives.get(drive) == Some(&DriveDevice::Present)
    }

    /// True when drive device `drive` is gone (see [`Machine::drive_gone`]).
    pub fn drive_is_gone(&self, drive: usize) -> bool {
        self.drives.get(drive) == Some(&DriveDevice::Gone)
    }

    /// Drive device `drive` disappeared (its transport reported it gone, or a uevent removed it). Its commands in
    /// flight complete at once as [`TransportError::DeviceGone`], and so does any command sent to it until
    /// [`Machine::drive_back`]. Its element keeps its mapping (the cartridge in it stays where it is).
    pub fn drive_gone(&mut self, drive: usize) {
        let Some(state) = self.drives.get_mut(drive) else { return };
        if *state == DriveDevice::Gone {
            return;
        }
        log::warn!("drive device {drive} is gone");
        *state = DriveDevice::Gone;
        let mut tags: Vec<Tag> =
            self.in_flight.iter().filter(|(_, (d, _))| *d == DeviceRef::Drive(drive)).map(|(t, _)| *t).collect();
        tags.sort_unstable();
        for tag in tags {
            let now = self.now;
            self.handle_completion(tag, Err(TransportError::DeviceGone), now);
        }
        self.outgoing.retain(|o| o.device != DeviceRef::Drive(drive));
    }

    /// Drive device `drive` is back (hot-plug): it is identified again (INQUIRY, VPD 80h) and the drives are mapped
    /// again with its serial (another drive may sit there now); once it has answered, jobs use it again.
    pub fn drive_back(&mut self, drive: usize, now: Millis) {
        self.now = now;
        if drive >= self.drives.len() {
            return;
        }
        log::info!("drive device {drive} is back: identifying it");
        self.drives[drive] = DriveDevice::Identifying { pending: 2 };
        let t = self.options.probe_timeout;
        for (purpose, command) in [
            (Purpose::DriveInquiry(drive), cdb::inquiry(96).into_command(t)),
            (Purpose::DriveSerial(drive), cdb::inquiry_vpd(opcode::VPD_UNIT_SERIAL, 255).into_command(t)),
        ] {
            let tag = self.tag();
            self.in_flight.insert(tag, (DeviceRef::Drive(drive), purpose));
            self.outgoing.push_back(Outgoing { device: DeviceRef::Drive(drive), tag, command });
        }
    }

    /// A drive's INQUIRY or VPD 80h finished (answered or not): a probing step, or part of re-identifying it.
    fn drive_probe_done(&mut self, drive: usize) {
        match self.drives.get_mut(drive) {
            Some(DriveDevice::Identifying { pending }) => {
                *pending = pending.saturating_sub(1);
                if *pending == 0 {
                    self.drives[drive] = DriveDevice::Present;
                    self.remap_drives();
                }
            }
            Some(DriveDevice::Gone) if self.phase != Phase::Probing => {}
            _ => self.probe_step_done(),
        }
    }

    /// Maps drive devices to elements again (after a drive came back), reporting the elements whose device changed.
    fn remap_drives(&mut self) {
        let serials: Vec<Option<String>> =
            self.probe.drives.iter().map(|d| d.as_ref().map(|i| i.serial.clone())).collect();
        let mapping = super::policy::map_drives(&self.elements, &serials, &self.options.drive_map);
        let moved =
            |e: &Element| e.element_type == ElementType::DataTransfer && e.device != mapping.device_for(e.address);
        if !self.elements.iter().any(moved) {
            // Nothing to change: the scan shared with a reconcile in progress is not copied.
            return;
        }
        let mut changed = Vec::new();
        for e in Arc::make_mut(&mut self.elements).iter_mut().filter(|e| moved(e)) {
            e.device = mapping.device_for(e.address);
            changed.push(e.clone());
        }
        self.events.push_back(Event::Elements(changed));
    }

    /// Sends a command to a drive device (TEST UNIT READY polls, LOAD UNLOAD, ...). The outcome comes as
    /// [`Event::DriveCommand`] with `id`.
    pub fn drive_command(&mut self, id: Origin, drive: usize, command: Command) {
        if self.drive_is_gone(drive) {
            self.events.push_back(Event::DriveCommand { id, drive, result: Err(TransportError::DeviceGone) });
            return;
        }
        let tag = self.tag();
        self.in_flight.insert(tag, (DeviceRef::Drive(drive), Purpose::Drive { id, drive }));
        self.outgoing.push_back(Outgoing { device: DeviceRef::Drive(drive), tag, command });
    }

    /// Replaces the configured drive map (serial → element address); applied at the next scan.
    pub fn set_drive_map(&mut self, map: Vec<(String, u16)>) {
        self.options.drive_map = map;
    }

    /// Asks for a full rescan (an administrator's inventory request, or a restart's verification).
    pub fn request_rescan(&mut self) {
        if self.phase != Phase::Offline {
            self.rescan = Some(self.rescan.unwrap_or(false));
            self.pump();
        }
    }

    /// A full inventory: INITIALIZE ELEMENT STATUS (the library checks every element itself, reading barcodes
    /// again), then the scan. A library that refuses the command is scanned as it is.
    pub fn request_initialize(&mut self) {
        if self.phase != Phase::Offline {
            self.initialize = true;
            self.request_rescan();
        }
    }

    /// The changer device came back (hot-plug): probe again from scratch.
    pub fn reattach(&mut self, drive_count: usize, now: Millis) {
        self.now = now;
        self.drive_count = drive_count;
        self.drives = vec![DriveDevice::Present; drive_count];
        self.in_flight.clear();
        self.changer_queue.clear();
        self.changer_busy = false;
        self.clear_refusals();
        self.start_probe();
    }

    /// True when commands wait for [`Machine::poll_request`].
    pub fn has_requests(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// The server's next command to submit.
    pub fn poll_request(&mut self) -> Option<Outgoing> {
        self.outgoing.pop_front()
    }

    /// The tunables it runs with.
    pub fn options(&self) -> &LibraryOptions {
        &self.options
    }

    /// The data transfer elements (drives), without walking the storage slots: the cache is kept sorted by element
    /// type, then address, so they are one contiguous run (a 50,000-slot library has 64 of them at its end).
    pub fn drive_elements(&self) -> &[Element] {
        let start = self.elements.partition_point(|e| e.element_type < ElementType::DataTransfer);
        let end = self.elements.partition_point(|e| e.element_type <= ElementType::DataTransfer);
        &self.elements[start..end]
    }

    /// True when no changer command is queued or running.
    pub fn changer_idle(&self) -> bool {
        self.changer_queue.is_empty() && !self.changer_busy
    }

    /// Number of commands submitted and not completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// True when events wait for [`Machine::poll_event`].
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` should be called next.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let door = match self.door {
            Door::Unlocked { until, opened: false } => Some(until),
            _ => None,
        };
        [self.hold_until, self.heartbeat_at, door].into_iter().flatten().min()
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.now = now;
        if self.hold_until.is_some_and(|t| t <= now) {
            self.hold_until = None;
        }
        if let Door::Unlocked { until, opened: false } = self.door {
            if until <= now {
                log::info!("the door was not opened in {} s: robot work resumes", DOOR_TIMEOUT_MS / 1000);
                self.door_closed(false);
            }
        }
        if self.heartbeat_at.is_some_and(|t| t <= now) {
            self.heartbeat_at = None;
            if self.phase == Phase::Ready && !self.changer_busy && self.changer_queue.is_empty() {
                self.changer_queue.push_back(Queued {
                    purpose: Purpose::Heartbeat,
                    command: cdb::test_unit_ready().into_command(self.options.probe_timeout),
                });
            }
        }
        self.pump();
    }

    /// A command finished.
    pub fn handle_completion(&mut self, tag: Tag, result: Result<Response, TransportError>, now: Millis) {
        self.now = now;
        let Some((device, purpose)) = self.in_flight.remove(&tag) else {
            log::debug!("completion for unknown tag {tag} ignored");
            return;
        };
        if device == DeviceRef::Changer {
            self.changer_busy = false;
        }
        if let Purpose::Drive { id, drive } = purpose {
            if let Ok(r) = &result {
                self.note_attention(device, r);
                // Informational exception 5Dh (failure prediction threshold exceeded): the drive raised TapeAlert
                // flags; whoever follows drive health reads them.
                let asc = crate::scsi::sense::Sense::parse(&r.sense).map(|s| s.asc.0).ok();
                if asc == Some(0x5D) && !matches!(id, Origin::Caller(_)) {
                    self.events.push_back(Event::TapeAlert { drive });
                }
            }
            self.events.push_back(Event::DriveCommand { id, drive, result });
            self.pump();
            return;
        }
        match result {
            Ok(response) => self.on_response(device, purpose, response),
            Err(TransportError::DeviceGone) if device == DeviceRef::Changer => self.go_offline("device gone"),
            Err(TransportError::TimedOut) => self.on_timeout(device, purpose),
            Err(e) => {
                log::warn!("{device}: command failed: {e}");
                self.on_failure(device, purpose, None);
            }
        }
        self.pump();
    }

    /// The changer device vanished (the transport reported it gone outside a command).
    pub fn device_gone(&mut self) {
        self.go_offline("device gone");
    }

    fn tag(&mut self) -> Tag {
        let t = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1).max(1);
        t
    }

    fn set_state(&mut self, state: LibraryState) {
        if self.state != state {
            self.state = state;
            self.events.push_back(Event::State(state));
        }
    }

    fn queue_changer(&mut self, purpose: Purpose, command: Command) {
        self.changer_queue.push_back(Queued { purpose, command });
    }

    fn start_probe(&mut self) {
        self.phase = Phase::Probing;
        self.set_state(LibraryState::Probing);
        self.probe = Probe { drives: vec![None; self.drive_count], ..Probe::default() };
        self.rescan = None;
        self.scan_queue.clear();
        self.scanned.clear();
        let t = self.options.probe_timeout;
        self.queue_changer(Purpose::Inquiry, cdb::inquiry(96).into_command(t));
        self.queue_changer(Purpose::Serial, cdb::inquiry_vpd(opcode::VPD_UNIT_SERIAL, 255).into_command(t));
        self.queue_changer(
            Purpose::DeviceId,
            cdb::inquiry_vpd(opcode::VPD_DEVICE_IDENTIFICATION, 1024).into_command(t),
        );
        self.queue_changer(
            Purpose::AddressAssignment,
            cdb::mode_sense_6(opcode::MODE_PAGE_ELEMENT_ADDRESS, true, 255).into_command(t),
        );
        self.queue_changer(
            Purpose::Capabilities,
            cdb::mode_sense_6(opcode::MODE_PAGE_DEVICE_CAPABILITIES, true, 255).into_command(t),
        );
        self.probes_pending = 5;
        let attached: Vec<usize> = (0..self.drive_count).filter(|d| !self.drive_is_gone(*d)).collect();
        for d in attached {
            for purpose in [Purpose::DriveInquiry(d), Purpose::DriveSerial(d)] {
                let command = match purpose {
                    Purpose::DriveInquiry(_) => cdb::inquiry(96),
                    _ => cdb::inquiry_vpd(opcode::VPD_UNIT_SERIAL, 255),
                }
                .into_command(t);
                let tag = self.tag();
                self.in_flight.insert(tag, (DeviceRef::Drive(d), purpose));
                self.outgoing.push_back(Outgoing { device: DeviceRef::Drive(d), tag, command });
                self.probes_pending += 1;
            }
        }
        self.pump();
    }

    fn start_scan(&mut self) {
        let Some(ea) = self.probe.addresses else {
            return self.start_probe();
        };
        self.phase = Phase::Scanning;
        self.set_state(LibraryState::Scanning);
        self.scanned.clear();
        self.scan_queue.clear();
        for ty in
            [ElementType::MediumTransport, ElementType::Storage, ElementType::ImportExport, ElementType::DataTransfer]
        {
            let Some(range) = ea.range(ty) else { continue };
            for (start, count) in chunks(range.first, range.count, self.options.chunk) {
                let dvcid = ty == ElementType::DataTransfer && self.dvcid;
                self.scan_queue.push_back(Purpose::Scan {
                    element_type: ty,
                    start,
                    count,
                    alloc: allocation_for(count),
                    dvcid,
                    whole: true,
                });
            }
        }
        self.next_scan();
    }

    fn scan_command(&self, p: &Purpose) -> Option<Command> {
        let Purpose::Scan { element_type, start, count, alloc, dvcid, .. } = *p else {
            return None;
        };
        // NUMBER OF ELEMENTS is a maximum: never ask for exactly one, which tgt answers with no data at all. A
        // second element in the reply is harmless (the scan drops duplicates, a re-read updates it too).
        let (count, alloc) = (count.max(2), alloc.max(allocation_for(2)));
        Some(
            cdb::read_element_status(&ReadElementStatus {
                element_type,
                start,
                count,
                voltag: true,
                curdata: false,
                dvcid,
                alloc,
            })
            .into_command(self.options.scan_timeout),
        )
    }

    fn next_scan(&mut self) {
        if let Some(p) = self.scan_queue.pop_front() {
            if let Some(command) = self.scan_command(&p) {
                self.queue_changer(p, command);
            }
            return;
        }
        // Scan complete.
        let mut elements = std::mem::take(&mut self.scanned);
        elements.sort_by_key(|e| (e.element_type, e.address));
        elements.dedup_by_key(|e| (e.element_type, e.address));
        let serials: Vec<Option<String>> =
            self.probe.drives.iter().map(|d| d.as_ref().map(|i| i.serial.clone())).collect();
        let mapping = super::policy::map_drives(&elements, &serials, &self.options.drive_map);
        for e in elements.iter_mut().filter(|e| e.element_type == ElementType::DataTransfer) {
            e.device = mapping.device_for(e.address);
        }
        let whole_scan = self.phase == Phase::Scanning;
        if whole_scan {
            // Shared with the event, not copied: a copy of 50,000 elements took 10 ms of the loop. Changed later
            // (a move) while the broker still reconciles it, it is copied then (`Arc::make_mut`).
            let elements = Arc::new(elements);
            let previous = std::mem::replace(&mut self.elements, Arc::clone(&elements));
            self.events.push_back(Event::Inventory { elements, previous });
        }
        self.phase = Phase::Ready;
        self.set_state(LibraryState::Ready);
        self.schedule_heartbeat();
        if let (Door::Closing { opened }, true) = (self.door, whole_scan) {
            self.door_closed(opened);
        }
    }

    /// `AccessLibraryDoor`: unlocks the door for the operator (PREVENT ALLOW MEDIUM REMOVAL, allow) and holds
    /// robot work until the door has been opened and closed (the library is read again then), or nobody opened it
    /// within [`DOOR_TIMEOUT_MS`]. Reported by [`Event::DoorUnlocked`] and [`Event::DoorClosed`].
    pub fn request_door_access(&mut self, full: bool) -> Result<(), MoveError> {
        if self.phase == Phase::Offline {
            return Err(MoveError::Offline);
        }
        self.door_full |= full;
        if self.door == Door::Closed {
            self.door = Door::Unlocking;
            let command = cdb::prevent_allow_medium_removal(false).into_command(self.options.probe_timeout);
            self.queue_changer(Purpose::Door, command);
            self.pump();
        }
        Ok(())
    }

    /// Whether the operator has the door open (rsmd unlocked it and the changer says so).
    pub fn door_open(&self) -> bool {
        matches!(self.door, Door::Unlocked { opened: true, .. })
    }

    /// True while the door is unlocked for the operator (robot work waits).
    pub fn door_unlocked(&self) -> bool {
        self.door != Door::Closed
    }

    fn door_unlocked_now(&mut self) {
        self.door = Door::Unlocked { until: self.now + DOOR_TIMEOUT_MS, opened: false };
        self.events.push_back(Event::DoorUnlocked);
        self.schedule_heartbeat();
    }

    fn door_closed(&mut self, opened: bool) {
        self.door = Door::Closed;
        self.door_full = false;
        self.events.push_back(Event::DoorClosed { opened });
        self.schedule_heartbeat();
    }

    fn schedule_heartbeat(&mut self) {
        if matches!(self.door, Door::Unlocked { .. }) {
            self.heartbeat_at = Some(self.now + DOOR_POLL_MS);
        } else if self.options.heartbeat_ms > 0 {
            self.heartbeat_at = Some(self.now + self.options.heartbeat_ms);
        }
    }

    /// Starts whatever can start: the next changer command, a pending rescan, the next move.
    fn pump(&mut self) {
        if self.phase == Phase::Offline {
            return;
        }
        if !self.changer_busy && self.changer_queue.is_empty() && self.hold_until.is_none() {
            if let Some(reprobe) = self.rescan.take() {
                if reprobe || self.probe.addresses.is_none() {
                    self.start_probe();
                } else if std::mem::take(&mut self.initialize) {
                    self.phase = Phase::Scanning;
                    self.set_state(LibraryState::Scanning);
                    if let Some(command) = self.command_for(&Purpose::Initialize) {
                        self.queue_changer(Purpose::Initialize, command);
                    }
                } else {
                    self.start_scan();
                }
            } else if self.phase == Phase::Ready && self.door == Door::Closed {
                if let Some(m) = self.moves.pop_front() {
                    self.current_move = Some(m);
                    self.set_state(LibraryState::Busy);
                    let command = cdb::move_medium(self.transport_address(), m.source, m.destination, false)
                        .into_command(self.options.move_timeout);
                    self.queue_changer(
                        Purpose::Move { id: m.id, source: m.source, destination: m.destination },
                        command,
                    );
                } else if self.state == LibraryState::Busy {
                    self.set_state(LibraryState::Ready);
                }
            }
        }
        if !self.changer_busy && self.hold_until.is_none() {
            if let Some(q) = self.changer_queue.pop_front() {
                let tag = self.tag();
                self.changer_busy = true;
                self.in_flight.insert(tag, (DeviceRef::Changer, q.purpose));
                self.outgoing.push_back(Outgoing { device: DeviceRef::Changer, tag, command: q.command });
            }
        }
    }

    fn transport_address(&self) -> u16 {
        self.probe.addresses.map_or(0, |a| a.transport.first)
    }

    fn go_offline(&mut self, why: &str) {
        if self.phase == Phase::Offline && self.state == LibraryState::Offline {
            return;
        }
        log::warn!("library offline: {why}");
        if self.door != Door::Closed {
            self.door_closed(false);
        }
        self.phase = Phase::Offline;
        self.set_state(LibraryState::Offline);
        self.changer_queue.clear();
        self.changer_busy = false;
        self.clear_refusals();
        self.heartbeat_at = None;
        self.in_flight.retain(|_, (d, _)| *d != DeviceRef::Changer);
        if let Some(m) = self.current_move.take() {
            self.events.push_back(Event::MoveFinished { id: m.id, result: Err(MoveError::Offline) });
        }
        for m in std::mem::take(&mut self.moves) {
            self.events.push_back(Event::MoveFinished { id: m.id, result: Err(MoveError::Offline) });
        }
    }

    fn note_attention(&mut self, device: DeviceRef, r: &Response) -> Option<Action> {
        let action = classify(r.status, &r.sense);
        if let Action::Rescan { reprobe } = action {
            let asc = crate::scsi::sense::Sense::parse(&r.sense).map(|s| s.asc).unwrap_or(Asc(0, 0));
            self.events.push_back(Event::Attention { device, asc });
            // A drive's unit attention (a tape loaded, a drive reset) says nothing about the changer's elements.
            if device == DeviceRef::Changer {
                self.rescan = Some(self.rescan.unwrap_or(false) || reprobe);
                // The door was closed (06/28: not ready to ready): robot work resumes after the re-read (a full
                // one when the door access asked for it).
                if let Door::Unlocked { opened, .. } = self.door {
                    self.door = Door::Closing { opened };
                    self.initialize |= std::mem::take(&mut self.door_full);
                }
            }
        }
        Some(action)
    }

    fn on_timeout(&mut self, device: DeviceRef, purpose: Purpose) {
        if let Purpose::Move { id, .. } = purpose {
            self.current_move = None;
            self.events.push_back(Event::MoveFinished { id, result: Err(MoveError::TimedOut) });
            self.rescan = Some(self.rescan.unwrap_or(false));
            return;
        }
        self.on_failure(device, purpose, None);
    }

    /// A command failed for good (or the transport failed it).
    fn on_failure(&mut self, device: DeviceRef, purpose: Purpose, failure: Option<Failure>) {
        match purpose {
            Purpose::Inquiry | Purpose::AddressAssignment => {
                self.go_offline("probing the changer failed");
            }
            Purpose::Serial | Purpose::DeviceId | Purpose::Capabilities => self.probe_step_done(),
            Purpose::DriveInquiry(d) | Purpose::DriveSerial(d) => self.drive_probe_done(d),
            Purpose::Scan { element_type, dvcid: true, start, count, alloc, whole }
                if failure == Some(Failure::Unsupported) =>
            {
                // DVCID not supported: read drives without it; map by configuration or elimination.
                self.dvcid = false;
                let p = Purpose::Scan { element_type, start, count, alloc, dvcid: false, whole };
                if let Some(c) = self.scan_command(&p) {
                    self.changer_queue.push_front(Queued { purpose: p, command: c });
                }
            }
            Purpose::Scan { whole: false, element_type, start, count, .. } => {
                let why = failure.map_or_else(|| "no answer".to_owned(), |f| f.to_string());
                log::warn!("re-reading {element_type} {start}+{count} failed ({why}): rescanning everything");
                self.request_full_rescan();
            }
            Purpose::Scan { .. } => {
                let why = failure.map_or_else(|| "no answer".to_owned(), |f| f.to_string());
                log::warn!("{device}: element status chunk failed ({why}); continuing");
                self.next_scan();
            }
            Purpose::Move { id, source, destination } => {
                self.current_move = None;
                let err = failure.map_or(MoveError::Refused(Failure::RetriesExhausted), MoveError::Refused);
                self.events.push_back(Event::MoveFinished { id, result: Err(err) });
                // The cache may be wrong about these two: re-read them.
                for a in [source, destination] {
                    self.reread(a);
                }
            }
            Purpose::Initialize => {
                let why = failure.map_or_else(|| "no answer".to_owned(), |f| f.to_string());
                log::warn!("{device}: INITIALIZE ELEMENT STATUS failed ({why}); reading element status as it is");
                self.start_scan();
            }
            Purpose::Heartbeat => self.schedule_heartbeat(),
            // A changer without PREVENT ALLOW MEDIUM REMOVAL may let the door open anyway.
            Purpose::Door => {
                let why = failure.map_or_else(|| "no answer".to_owned(), |f| f.to_string());
                log::warn!("{device}: unlocking the door failed ({why}); robot work waits for the door anyway");
                self.door_unlocked_now();
            }
            Purpose::Drive { .. } => {}
        }
    }

    /// Re-reads the elements around `address` after a failed move, in the shape the full scan reads them (the
    /// scan's chunk of that element type that holds the address, with VOLTAG, and DVCID for drives when
    /// supported) rather than one element alone: some libraries answer a one-element READ ELEMENT STATUS short
    /// (tgt sends no data at all). A re-read that fails or comes back incomplete falls back to a full rescan.
    fn reread(&mut self, address: u16) {
        let Some(ea) = self.probe.addresses else { return };
        let Some(ty) = ea.type_of(address) else { return };
        let Some(range) = ea.range(ty) else { return };
        let Some((start, count)) = chunks(range.first, range.count, self.options.chunk)
            .find(|&(s, n)| address >= s && u32::from(address) < u32::from(s) + u32::from(n))
        else {
            return;
        };
        let p = Purpose::Scan {
            element_type: ty,
            start,
            count,
            alloc: allocation_for(count),
            dvcid: ty == ElementType::DataTransfer && self.dvcid,
            whole: false,
        };
        let queued = self.changer_queue.iter().any(|q| q.purpose == p);
        let in_flight = self.in_flight.values().any(|(_, purpose)| *purpose == p);
        if queued || in_flight {
            return;
        }
        if let Some(c) = self.scan_command(&p) {
            self.queue_changer(p, c);
        }
    }

    /// Schedules a full rescan (after the elements in flight or queued are done).
    fn request_full_rescan(&mut self) {
        if self.phase != Phase::Offline {
            self.rescan = Some(self.rescan.unwrap_or(false));
        }
    }

    /// True when the cached inventory is settled: ready, with no re-read, rescan or probe queued or running.
    pub fn inventory_settled(&self) -> bool {
        let scan = |p: &Purpose| matches!(p, Purpose::Scan { .. });
        matches!(self.phase, Phase::Ready)
            && self.rescan.is_none()
            && !self.changer_queue.iter().any(|q| scan(&q.purpose))
            && !self.in_flight.values().any(|(_, p)| scan(p))
    }

    /// The changer refused a command for now (`reason`): the next attempt waits, 0 ms for the first refusal when
    /// `immediate` (a unit attention is consumed by being reported), then doubling from
    /// [`LibraryOptions::retry_first_ms`] up to [`LibraryOptions::retry_max_ms`].
    fn refused(&mut self, reason: String, immediate: bool) {
        if self.refusals == 0 {
            self.refused_since = self.now;
        }
        self.refusals = self.refusals.saturating_add(1);
        let backoff = |n: u32| {
            let first = self.options.retry_first_ms.max(1);
            first.saturating_mul(1u64 << n.min(32)).min(self.options.retry_max_ms.max(first))
        };
        let delay = match (immediate, self.refusals) {
            (true, 1) => 0,
            (true, n) => backoff(n - 2),
            (false, n) => backoff(n - 1),
        };
        if self.not_ready.as_deref() != Some(reason.as_str()) {
            log::info!("changer refused a command ({reason}): asking again in {delay} ms, with backoff");
        }
        self.not_ready = Some(reason);
        self.hold_until = (delay > 0).then_some(self.now + delay);
    }

    /// The changer answered (or is gone): no more waiting.
    fn clear_refusals(&mut self) {
        self.refusals = 0;
        self.not_ready = None;
        self.hold_until = None;
    }

    fn probe_step_done(&mut self) {
        self.probes_pending = self.probes_pending.saturating_sub(1);
        if self.probes_pending == 0 && self.phase == Phase::Probing {
            let Some(addresses) = self.probe.addresses else {
                return self.go_offline("no element addresses");
            };
            self.events.push_back(Event::Identified {
                changer: self.probe.changer.clone(),
                drives: self.probe.drives.clone(),
                addresses,
                exchange: self.probe.exchange,
            });
            self.start_scan();
        }
    }

    fn on_response(&mut self, device: DeviceRef, purpose: Purpose, r: Response) {
        if device == DeviceRef::Changer {
            self.watch_door(&r);
        }
        let mut action = self.note_attention(device, &r).unwrap_or(Action::Done);
        if device == DeviceRef::Changer {
            // While probing or scanning, any NOT READY is waited out (a library inventorying after power-on, or
            // with its door open, says 04/00 or 04/03 for minutes); so is a move refused so (a door opened by hand:
            // 04/83 on many libraries), for at most the move timeout: the robot goes on once the door is closed.
            let starting = matches!(self.phase, Phase::Probing | Phase::Scanning);
            let moving = matches!(purpose, Purpose::Move { .. });
            if (starting || moving) && action == Action::Fail(Failure::Offline) {
                action = Action::WaitReady { after_ms: 0 };
            }
            match action {
                Action::Retry { .. } | Action::WaitReady { .. } | Action::Rescan { .. } => {
                    let immediate = matches!(action, Action::Rescan { .. });
                    self.refused(refusal_reason(&r), immediate);
                }
                _ => self.clear_refusals(),
            }
        }
        match action {
            Action::Done => {}
            Action::Retry { .. } | Action::WaitReady { .. } if device == DeviceRef::Changer => {
                // Refused for now: the same command goes back to the head of the queue, and the queue waits (so
                // the commands behind it are neither sent into the same refusal nor lost).
                if let Purpose::Move { .. } = purpose {
                    let waited = self.now.saturating_sub(self.refused_since);
                    if u128::from(waited) >= self.options.move_timeout.as_millis() {
                        self.clear_refusals();
                        return self.on_failure(device, purpose, Some(Failure::RetriesExhausted));
                    }
                }
                if let Some(command) = self.command_for(&purpose) {
                    self.changer_queue.push_front(Queued { purpose, command });
                }
                return;
            }
            Action::Rescan { .. } => {
                // The command was not executed. Probing restarts anyway; a scan restarts; a move goes back to
                // the head of the queue and runs after the rescan.
                match purpose {
                    Purpose::Move { id, source, destination } => {
                        self.current_move = None;
                        self.moves.push_front(MoveRequest { id, source, destination });
                    }
                    Purpose::DriveInquiry(_) | Purpose::DriveSerial(_) => {
                        // Resend once the unit attention is consumed.
                        let c = self.command_for(&purpose);
                        if let (DeviceRef::Drive(d), Some(command)) = (device, c) {
                            let tag = self.tag();
                            self.in_flight.insert(tag, (device, purpose));
                            self.outgoing.push_back(Outgoing { device: DeviceRef::Drive(d), tag, command });
                        }
                        self.rescan = None;
                    }
                    Purpose::Inquiry
                    | Purpose::Serial
                    | Purpose::DeviceId
                    | Purpose::AddressAssignment
                    | Purpose::Capabilities
                    | Purpose::Initialize
                    | Purpose::Door => {
                        if let Some(command) = self.command_for(&purpose) {
                            self.changer_queue.push_front(Queued { purpose, command });
                        }
                        self.rescan = None;
                    }
                    Purpose::Scan { .. } => {
                        self.scan_queue.clear();
                        self.phase = Phase::Scanning;
                    }
                    Purpose::Heartbeat | Purpose::Drive { .. } => {}
                }
                return;
            }
            Action::Fail(f) => return self.on_failure(device, purpose, Some(f)),
            Action::Retry { .. } | Action::WaitReady { .. } => return self.on_failure(device, purpose, None),
        }
        match purpose {
            Purpose::Inquiry => match StandardInquiry::parse(&r.data) {
                Ok(i) if i.device_type == inquiry::TYPE_CHANGER => {
                    self.probe.changer.vendor = i.vendor;
                    self.probe.changer.product = i.product;
                    self.probe.changer.revision = i.revision;
                    self.probe_step_done();
                }
                Ok(i) => self.go_offline(&format!("device type {} is not a medium changer", i.device_type)),
                Err(e) => self.go_offline(&format!("INQUIRY: {e}")),
            },
            Purpose::Serial => {
                self.probe.changer.serial = inquiry::parse_unit_serial(&r.data).unwrap_or_default();
                self.probe_step_done();
            }
            Purpose::DeviceId => {
                if let Ok(ids) = inquiry::parse_device_identification(&r.data) {
                    self.probe.changer.wwn = inquiry::logical_unit_wwn(&ids);
                }
                self.probe_step_done();
            }
            Purpose::AddressAssignment => match ElementAddressAssignment::parse_mode6(&r.data) {
                Ok(ea) => {
                    self.probe.addresses = Some(ea);
                    self.probe_step_done();
                }
                Err(e) => self.go_offline(&format!("MODE SENSE 1Dh: {e}")),
            },
            Purpose::Capabilities => {
                let caps = ModeParameters::parse_mode6(&r.data)
                    .ok()
                    .and_then(|m| m.page(opcode::MODE_PAGE_DEVICE_CAPABILITIES).map(<[u8]>::to_vec))
                    .and_then(|p| DeviceCapabilities::parse_page(&p).ok());
                self.probe.exchange = caps.is_some_and(|c| c.can_exchange());
                self.probe_step_done();
            }
            Purpose::DriveInquiry(d) => {
                if let (Ok(i), Some(slot)) = (StandardInquiry::parse(&r.data), self.probe.drives.get_mut(d)) {
                    let id = slot.get_or_insert_with(Identity::default);
                    id.vendor = i.vendor;
                    id.product = i.product;
                    id.revision = i.revision;
                }
                self.drive_probe_done(d);
            }
            Purpose::DriveSerial(d) => {
                if let (Ok(s), Some(slot)) = (inquiry::parse_unit_serial(&r.data), self.probe.drives.get_mut(d)) {
                    slot.get_or_insert_with(Identity::default).serial = s;
                }
                self.drive_probe_done(d);
            }
            Purpose::Scan { element_type, start, count, alloc, dvcid, whole } => {
                self.on_scan(element_type, start, count, alloc, dvcid, whole, &r)
            }
            Purpose::Move { id, source, destination } => {
                self.current_move = None;
                self.apply_move(source, destination);
                self.events.push_back(Event::MoveFinished { id, result: Ok(()) });
            }
            Purpose::Initialize => self.start_scan(),
            Purpose::Door => self.door_unlocked_now(),
            Purpose::Heartbeat => self.schedule_heartbeat(),
            Purpose::Drive { .. } => {}
        }
    }

    /// While the door is unlocked: a NOT READY from the changer means it is open; a good answer after that means
    /// it was closed without a unit attention (the library is read again before robot work resumes).
    fn watch_door(&mut self, r: &Response) {
        let Door::Unlocked { until, opened } = self.door else { return };
        let key = crate::scsi::sense::Sense::parse(&r.sense).map(|s| s.key);
        if key.is_ok_and(|k| k == crate::scsi::sense::SenseKey::NotReady) {
            if !opened {
                log::info!("the library door is open");
            }
            self.door = Door::Unlocked { until, opened: true };
        } else if opened && r.status == 0 {
            self.door = Door::Closing { opened };
            self.initialize |= std::mem::take(&mut self.door_full);
            self.request_full_rescan();
        }
    }

    fn command_for(&self, purpose: &Purpose) -> Option<Command> {
        let t = self.options.probe_timeout;
        Some(match purpose {
            Purpose::Inquiry | Purpose::DriveInquiry(_) => cdb::inquiry(96).into_command(t),
            Purpose::Serial | Purpose::DriveSerial(_) => cdb::inquiry_vpd(opcode::VPD_UNIT_SERIAL, 255).into_command(t),
            Purpose::DeviceId => cdb::inquiry_vpd(opcode::VPD_DEVICE_IDENTIFICATION, 1024).into_command(t),
            Purpose::AddressAssignment => {
                cdb::mode_sense_6(opcode::MODE_PAGE_ELEMENT_ADDRESS, true, 255).into_command(t)
            }
            Purpose::Capabilities => {
                cdb::mode_sense_6(opcode::MODE_PAGE_DEVICE_CAPABILITIES, true, 255).into_command(t)
            }
            Purpose::Scan { .. } => return self.scan_command(purpose),
            Purpose::Move { source, destination, .. } => {
                cdb::move_medium(self.transport_address(), *source, *destination, false)
                    .into_command(self.options.move_timeout)
            }
            // The library walks every element: minutes on a big one.
            Purpose::Initialize => cdb::initialize_element_status().into_command(self.options.move_timeout * 10),
            Purpose::Heartbeat => cdb::test_unit_ready().into_command(t),
            Purpose::Door => cdb::prevent_allow_medium_removal(false).into_command(t),
            Purpose::Drive { .. } => return None,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn on_scan(&mut self, ty: ElementType, start: u16, count: u16, alloc: u32, dvcid: bool, whole: bool, r: &Response) {
        let report = match ElementStatusReport::parse(&r.data) {
            Ok(rep) => rep,
            Err(e) => {
                log::warn!("READ ELEMENT STATUS {ty} {start}+{count}: {e}");
                if whole {
                    self.next_scan();
                } else {
                    // The narrow re-read is not answered properly by this library: read everything instead.
                    self.request_full_rescan();
                }
                return;
            }
        };
        // Cut by our allocation length (not by a device that sends less than it announces): ask again, bigger.
        let got_all_we_asked = u32::try_from(r.data.len()).unwrap_or(u32::MAX) >= alloc;
        if report.truncated && got_all_we_asked && alloc < report.report_bytes + 8 {
            let p = Purpose::Scan { element_type: ty, start, count, alloc: report.report_bytes + 8, dvcid, whole };
            if let Some(c) = self.scan_command(&p) {
                self.changer_queue.push_front(Queued { purpose: p, command: c });
            }
            return;
        }
        let elements: Vec<Element> = report
            .elements
            .into_iter()
            .filter(|d| d.element_type == ty || ty == ElementType::All)
            .map(|d| Element {
                element_type: d.element_type,
                address: d.address,
                full: d.full,
                barcode: d.primary_tag.map(|t| t.label),
                source: d.source,
                exception: d.except.then_some(d.asc),
                accessible: d.access,
                impexp: d.impexp,
                cleaning: d.full && d.medium_type == 2,
                tag_printed: d.primary_tag_printed,
                identifier: d.identifier.map(|i| i.serial()),
                device: None,
            })
            .collect();
        if whole {
            self.scanned.extend(elements);
            self.next_scan();
        } else if elements.len() < usize::from(count) {
            log::warn!("re-reading {ty} {start}+{count}: {} elements came back; rescanning", elements.len());
            self.request_full_rescan();
        } else {
            let mut changed = Vec::new();
            for mut e in elements {
                if let Some(old) = Arc::make_mut(&mut self.elements).iter_mut().find(|o| o.address == e.address) {
                    e.device = old.device;
                    if e.identifier.is_none() {
                        e.identifier.clone_from(&old.identifier);
                    }
                    if *old != e {
                        *old = e.clone();
                        changed.push(e);
                    }
                }
            }
            // A label now seen here and still cached elsewhere: the cartridge moved from an element this re-read
            // did not cover, so the cache is wrong there too.
            let elsewhere = changed.iter().any(|c| {
                c.barcode.is_some()
                    && self.elements.iter().any(|o| o.address != c.address && o.full && o.barcode == c.barcode)
            });
            if elsewhere {
                log::info!("a re-read found a cartridge the cache has elsewhere: rescanning");
                self.request_full_rescan();
            }
            if !changed.is_empty() {
                self.events.push_back(Event::Elements(changed));
            }
        }
    }

    fn apply_move(&mut self, source: u16, destination: u16) {
        let Some(si) = self.elements.iter().position(|e| e.address == source) else {
            return;
        };
        let Some(di) = self.elements.iter().position(|e| e.address == destination) else {
            return;
        };
        let els = Arc::make_mut(&mut self.elements);
        let barcode = els[si].barcode.take();
        let home = els[si].source.filter(|_| els[si].element_type == ElementType::DataTransfer);
        els[si].full = false;
        els[si].source = None;
        els[si].impexp = false;
        let dst_is_slot = els[di].element_type != ElementType::DataTransfer;
        // The volume tag's width (as mtx prints it) goes with the cartridge; the source takes the empty one's.
        let (sw, dw) = (els[si].tag_printed, els[di].tag_printed);
        els[si].tag_printed = dw;
        let d = &mut els[di];
        d.tag_printed = sw;
        d.full = true;
        d.barcode = barcode;
        // A drive remembers where the cartridge came from (SVALID); a slot does not.
        d.source = if dst_is_slot { None } else { Some(home.unwrap_or(source)) };
        let changed = vec![els[si].clone(), els[di].clone()];
        self.events.push_back(Event::Elements(changed));
    }
}

/// Names a changer's refusal-for-now: "busy", or the sense key and ASC/ASCQ ("not ready: 04h/01h logical unit is in
/// process of becoming ready").
fn refusal_reason(r: &Response) -> String {
    use crate::transport::status;
    match r.status {
        status::BUSY => "busy".to_owned(),
        status::TASK_SET_FULL => "task set full".to_owned(),
        _ => match crate::scsi::sense::Sense::parse(&r.sense) {
            Ok(s) => format!("{}: {}", s.key.name(), s.asc),
            Err(_) => format!("status {:02X}h without sense", r.status),
        },
    }
}
