//! vlib: a virtual tape library (SMC changer + SSC drives), written from the standards.
//!
//! Two layers: [`Target`] is sans-IO and runs on virtual time (milliseconds since the target started,
//! passed in by the caller); [`server::Server`] serves a `Target` over Unix sockets in real time.

#![deny(missing_docs)]

pub mod cdb;
pub mod changer;
pub mod config;
pub mod drive;
pub mod fault;
pub mod sense;
pub mod server;

use std::collections::BTreeMap;

pub use config::{Config, ConfigError};
pub use fault::{Fault, InjectError};
use sense::Sense;

/// One emulated SCSI device of the library.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Device {
    /// The media changer (SMC).
    Changer,
    /// Tape drive by index (SSC).
    Drive(usize),
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Changer => f.write_str("changer"),
            Device::Drive(i) => write!(f, "drive{i}"),
        }
    }
}

/// Data transfer direction of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Direction {
    /// No data.
    None,
    /// Data in, up to this allocation length.
    FromDevice(u32),
    /// Data out.
    ToDevice(Vec<u8>),
}

/// A SCSI command as submitted to a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Caller's tag, echoed in the response.
    pub tag: u32,
    /// The CDB (6..=16 bytes).
    pub cdb: Vec<u8>,
    /// Data direction and buffer.
    pub direction: Direction,
    /// 0 = no timeout; otherwise host_status 3 when the command takes longer.
    pub timeout_ms: u32,
}

/// A completed command.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Response {
    /// The request's tag.
    pub tag: u32,
    /// SCSI status (0 GOOD, 2 CHECK CONDITION).
    pub status: u8,
    /// Host status (0 OK, 3 timed out).
    pub host_status: u8,
    /// Sense data (fixed format) when status is CHECK CONDITION.
    pub sense: Vec<u8>,
    /// Data in.
    pub data: Vec<u8>,
    /// Allocation length minus bytes returned.
    pub resid: u32,
    /// Emulated time from submission to completion, ms.
    pub duration_ms: u32,
}

impl Response {
    /// The decoded sense, if any.
    pub fn sense(&self) -> Option<Sense> {
        Sense::parse(&self.sense)
    }

    /// `(key, asc, ascq)` of the sense, or `(0, 0, 0)` when there is none.
    pub fn sense_code(&self) -> (u8, u8, u8) {
        self.sense().map(|s| (s.key, s.asc, s.ascq)).unwrap_or((0, 0, 0))
    }

    /// True for status GOOD and host status OK.
    pub fn is_good(&self) -> bool {
        self.status == sense::STATUS_GOOD && self.host_status == 0
    }
}

/// SMC element types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ElementType {
    /// Medium transport (robot), type code 1.
    Transport,
    /// Storage slot, type code 2.
    Storage,
    /// Import/export slot, type code 3.
    ImportExport,
    /// Data transfer (drive), type code 4.
    Drive,
}

impl ElementType {
    /// All types in report order.
    pub const ALL: [ElementType; 4] =
        [ElementType::Transport, ElementType::Storage, ElementType::ImportExport, ElementType::Drive];

    /// SMC element type code (1..=4).
    pub fn code(self) -> u8 {
        match self {
            ElementType::Transport => 1,
            ElementType::Storage => 2,
            ElementType::ImportExport => 3,
            ElementType::Drive => 4,
        }
    }

    pub(crate) fn index(self) -> usize {
        usize::from(self.code() - 1)
    }
}

/// A cartridge as the target tracks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Medium {
    /// Barcode label.
    pub barcode: String,
    /// Write protected.
    pub write_protected: bool,
    /// Cleaning cartridge.
    pub cleaning: bool,
    /// Cleanings done with this cartridge (cleaning cartridges only).
    pub uses: u32,
    /// A cleaning cartridge the drives reject (TapeAlert 17h).
    pub invalid_cleaner: bool,
    /// The tape's first block, what a drive READs at the beginning of the tape; None: a blank tape.
    pub first_block: Option<Vec<u8>>,
    /// The library cannot read its barcode label: its volume tag is reported blank.
    pub label_unreadable: bool,
}

/// One element's state.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) struct Element {
    pub(crate) medium: Option<Medium>,
    pub(crate) source: Option<u16>,
    pub(crate) impexp: bool,
}

/// Plain-data view of one element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElementSnapshot {
    /// Element type.
    pub kind: ElementType,
    /// Element address.
    pub address: u16,
    /// Holds a cartridge.
    pub full: bool,
    /// Barcode of the cartridge (full label).
    pub barcode: Option<String>,
    /// Address the cartridge was last moved from.
    pub source: Option<u16>,
    /// I/E slot filled by the operator.
    pub impexp: bool,
    /// Cleanings done with the cartridge (0 for data cartridges and empty elements).
    pub uses: u32,
}

/// State of a drive as seen at the snapshot's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriveStatus {
    /// No cartridge.
    Empty,
    /// Cartridge present, loading/threading (TUR 02/04/01).
    Loading,
    /// Loaded and ready.
    Ready,
    /// Cartridge ejected (unloaded), waiting for the robot.
    Ejected,
    /// A cleaning cartridge is in the drive and not ejected yet: cleaning, or about to eject a cleaner it rejects
    /// (TUR 02/30/03).
    Cleaning,
}

/// Plain-data view of one drive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriveSnapshot {
    /// Serial (VPD 80h).
    pub serial: String,
    /// Status at the snapshot time.
    pub status: DriveStatus,
    /// Barcode of the cartridge in the drive.
    pub barcode: Option<String>,
    /// Data loads since the last cleaning.
    pub loads_since_clean: u32,
    /// TapeAlert 14h "clean now" set.
    pub clean_now: bool,
    /// A cleaning is in progress (a cleaning cartridge accepted by the drive, not ejected yet).
    pub cleaning: bool,
    /// TapeAlert flags set now: bit n-1 for flag n (so flag 20 "clean now" is `1 << 19`).
    pub tapealert: u64,
    /// PREVENT MEDIUM REMOVAL in effect.
    pub prevent: bool,
    /// Device present (not disappeared).
    pub present: bool,
    /// The logical block the tape is at: 0 at the beginning of the tape, 1 after the first block was read.
    pub position: u32,
}

/// Counters since the target started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counters {
    /// Commands submitted (all devices).
    pub commands: u64,
    /// Commands that ended in CHECK CONDITION.
    pub check_conditions: u64,
    /// Successful robot moves (EXCHANGE counts two).
    pub moves: u64,
    /// Drive loads (auto-load or LOAD).
    pub loads: u64,
    /// Drive unloads.
    pub unloads: u64,
    /// Commands answered with host status "timed out".
    pub timeouts: u64,
}

/// Plain-data view of the whole library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Virtual time the snapshot describes.
    pub now_ms: u64,
    /// Every element, in order transport, storage, I/E, drive.
    pub elements: Vec<ElementSnapshot>,
    /// Every drive.
    pub drives: Vec<DriveSnapshot>,
    /// Changer present.
    pub changer_present: bool,
    /// Changer PREVENT MEDIUM REMOVAL in effect (the door is locked).
    pub changer_prevent: bool,
    /// The library door is open (`Fault::DoorOpen`).
    pub door_open: bool,
    /// Counters.
    pub counters: Counters,
    /// Every successful robot move, in order.
    pub robot_log: Vec<RobotMove>,
}

/// One successful robot move (MOVE MEDIUM, or EXCHANGE MEDIUM as one entry), in virtual ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RobotMove {
    /// When the robot started it (after any earlier move).
    pub start_ms: u64,
    /// When it ended.
    pub end_ms: u64,
    /// Source element address.
    pub source: u16,
    /// Destination element address.
    pub destination: u16,
}

/// Per-device common state.
#[derive(Clone, Debug, Default)]
pub(crate) struct DevState {
    pub(crate) present: bool,
    pub(crate) busy_until: u64,
    pub(crate) pending_ua: Option<Sense>,
    pub(crate) not_ready_until: u64,
    pub(crate) ua_countdown: Option<u32>,
    pub(crate) prevent: bool,
    /// Hung (`Fault::Hang`): commands are swallowed.
    pub(crate) hung: bool,
}

/// Result of executing one command: data or sense, and its cost in (scaled) virtual ms.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) result: Result<Vec<u8>, Sense>,
    pub(crate) cost: u64,
}

/// Sense data for a CHECK CONDITION that comes with the command's data all the same (a READ of a block longer
/// than requested: ILI), or for a condition [`Sense`] cannot express (INFORMATION field set), already encoded.
pub(crate) type DataCheck = Option<Vec<u8>>;

impl Outcome {
    pub(crate) fn ok(data: Vec<u8>, cost: u64) -> Outcome {
        Outcome { result: Ok(data), cost }
    }

    pub(crate) fn err(sense: Sense, cost: u64) -> Outcome {
        Outcome { result: Err(sense), cost }
    }
}

/// The emulated library: one changer plus drives, on virtual time.
#[derive(Debug)]
pub struct Target {
    pub(crate) config: Config,
    pub(crate) elements: [Vec<Element>; 4],
    pub(crate) changer: DevState,
    pub(crate) robot_busy_until: u64,
    pub(crate) jam_moves: u32,
    pub(crate) door_open: bool,
    pub(crate) drives: Vec<drive::DriveState>,
    pub(crate) counters: Counters,
    robot_log: Vec<RobotMove>,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), (Device, Response)>,
}

/// Copies the big-endian unsigned integer in `b`.
pub(crate) fn be(b: &[u8]) -> u32 {
    b.iter().fold(0u32, |a, &x| (a << 8) | u32::from(x))
}

/// Saturating u64 → u32.
pub(crate) fn sat32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl Target {
    /// Builds the target; validates the configuration and applies its `[[fault]]` entries.
    pub fn new(config: Config) -> Result<Target, ConfigError> {
        config.validate()?;
        let n = |k: u32| vec![Element::default(); usize::try_from(k).unwrap_or(0)];
        let elements = [
            n(config.robots),
            n(config.storage_slots),
            n(config.ie_slots),
            vec![Element::default(); config.drive_count()],
        ];
        let ua = config.power_on_unit_attention.then_some(sense::POWER_ON_RESET);
        let mut t = Target {
            changer: DevState { present: true, pending_ua: ua, ..DevState::default() },
            drives: config.drive_serials.iter().map(|s| drive::DriveState::new(s, ua)).collect(),
            elements,
            robot_busy_until: 0,
            jam_moves: 0,
            door_open: false,
            counters: Counters::default(),
            robot_log: Vec::new(),
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            config,
        };
        for c in t.config.cartridges.clone() {
            let m = Medium {
                barcode: c.barcode.clone(),
                write_protected: c.write_protected,
                cleaning: c.cleaning,
                uses: c.uses,
                invalid_cleaner: c.invalid_cleaner,
                first_block: c.first_block.clone(),
                label_unreadable: c.label_unreadable,
            };
            let (ty, idx) = match c.location {
                config::Location::Slot(s) => (ElementType::Storage, s as usize - 1),
                config::Location::Ie(s) => (ElementType::ImportExport, s as usize - 1),
                config::Location::Drive(d) => (ElementType::Drive, d),
            };
            if ty == ElementType::Drive && m.cleaning {
                // A cleaning cartridge placed in a drive starts its cleaning when the library starts.
                t.drive_insert(idx, &m, 0);
            }
            t.elements[ty.index()][idx].medium = Some(m);
            if ty == ElementType::ImportExport {
                t.elements[ty.index()][idx].impexp = true;
            }
        }
        for f in t.config.faults.clone() {
            t.try_inject(f).map_err(|e| ConfigError { key: "fault".into(), message: e.0 })?;
        }
        t.settle_drives(0);
        Ok(t)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Number of drives.
    pub fn drive_count(&self) -> usize {
        self.drives.len()
    }

    /// Serial number of drive `i` (panics if out of range).
    pub fn drive_serial(&self, i: usize) -> &str {
        &self.drives[i].serial
    }

    /// Latest virtual time seen by `submit` / `poll_completion` / `advance`.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Moves the target's notion of the current time forward (never backward); cleanings that end by then end.
    pub fn advance(&mut self, now_ms: u64) {
        self.now = self.now.max(now_ms);
        self.settle_drives(self.now);
    }

    fn dev(&self, device: Device) -> Option<&DevState> {
        match device {
            Device::Changer => Some(&self.changer),
            Device::Drive(i) => self.drives.get(i).map(|d| &d.dev),
        }
    }

    pub(crate) fn dev_mut(&mut self, device: Device) -> Option<&mut DevState> {
        match device {
            Device::Changer => Some(&mut self.changer),
            Device::Drive(i) => self.drives.get_mut(i).map(|d| &mut d.dev),
        }
    }

    /// False when the device does not exist or has disappeared.
    pub fn is_present(&self, device: Device) -> bool {
        self.dev(device).is_some_and(|d| d.present)
    }

    /// Starts a command at virtual time `now_ms` (ms since the target's start). Commands on one device
    /// run in order; the changer's robot is one serial resource; different devices run concurrently.
    /// Commands to an absent device never complete.
    pub fn submit(&mut self, device: Device, request: Request, now_ms: u64) {
        self.advance(now_ms);
        if !self.is_present(device) {
            log::debug!("{device}: command for an absent device dropped");
            return;
        }
        self.counters.commands += 1;
        if self.dev(device).is_some_and(|d| d.hung) {
            log::debug!("{device}: hung, command swallowed");
            if request.timeout_ms > 0 {
                self.counters.timeouts += 1;
                let alloc = match &request.direction {
                    Direction::FromDevice(n) => *n,
                    _ => 0,
                };
                let resp = Response {
                    tag: request.tag,
                    host_status: sense::HOST_TIMED_OUT,
                    resid: alloc,
                    duration_ms: request.timeout_ms,
                    ..Response::default()
                };
                self.seq += 1;
                self.queue.insert((now_ms + u64::from(request.timeout_ms), self.seq), (device, resp));
            }
            return;
        }
        let is_move = device == Device::Changer && matches!(request.cdb.first(), Some(0xa5 | 0xa6 | 0x2b));
        let mut start = now_ms.max(self.dev(device).map_or(0, |d| d.busy_until));
        if is_move {
            start = start.max(self.robot_busy_until);
        }
        let (out, check) = self.run(device, &request, start);
        let done = start + out.cost;
        if let Some(d) = self.dev_mut(device) {
            d.busy_until = done;
        }
        if is_move {
            self.robot_busy_until = done;
            if out.result.is_ok() && request.cdb.first() != Some(&0x2b) && request.cdb.len() >= 8 {
                let (source, destination) = (be(&request.cdb[4..6]), be(&request.cdb[6..8]));
                self.robot_log.push(RobotMove {
                    start_ms: start,
                    end_ms: done,
                    source: u16::try_from(source).unwrap_or(u16::MAX),
                    destination: u16::try_from(destination).unwrap_or(u16::MAX),
                });
            }
        }
        let mut resp = Response { tag: request.tag, ..Response::default() };
        let alloc = match &request.direction {
            Direction::FromDevice(n) => *n,
            _ => 0,
        };
        match out.result {
            Ok(mut data) => {
                data.truncate(alloc as usize);
                resp.resid = alloc - sat32(data.len() as u64);
                resp.data = data;
                if let Some(sense) = check {
                    self.counters.check_conditions += 1;
                    resp.status = sense::STATUS_CHECK_CONDITION;
                    resp.sense = sense;
                }
            }
            Err(s) => {
                self.counters.check_conditions += 1;
                resp.status = sense::STATUS_CHECK_CONDITION;
                resp.sense = s.encode(self.config.descriptor_sense);
                resp.resid = alloc;
            }
        }
        let mut due = done;
        if request.timeout_ms > 0 && done - now_ms > u64::from(request.timeout_ms) {
            self.counters.timeouts += 1;
            due = now_ms + u64::from(request.timeout_ms);
            resp =
                Response { tag: request.tag, host_status: sense::HOST_TIMED_OUT, resid: alloc, ..Response::default() };
        }
        resp.duration_ms = sat32(due - now_ms);
        self.seq += 1;
        self.queue.insert((due, self.seq), (device, resp));
    }

    /// Earliest virtual time at which a completion becomes available (None if nothing in flight).
    pub fn next_completion_at(&self) -> Option<u64> {
        self.queue.keys().next().map(|k| k.0)
    }

    /// Pops a completion due at or before `now_ms` (any device; ordered by due time, then submission).
    pub fn poll_completion(&mut self, now_ms: u64) -> Option<(Device, Response)> {
        self.advance(now_ms);
        let (&key, _) = self.queue.iter().next()?;
        if key.0 > now_ms {
            return None;
        }
        self.queue.remove(&key)
    }

    /// Convenience for tests: submits at the current virtual time, advances time to the completion and
    /// returns the response (tag 0, no timeout). Other devices' completions due earlier are discarded.
    /// Panics if the device is absent.
    pub fn execute(&mut self, device: Device, cdb: &[u8], direction: Direction) -> Response {
        assert!(self.is_present(device), "execute on absent {device}");
        let req = Request { tag: u32::MAX, cdb: cdb.to_vec(), direction, timeout_ms: 0 };
        let now = self.now;
        self.submit(device, req, now);
        loop {
            let at = self.next_completion_at().expect("submitted command vanished");
            let (d, r) = self.poll_completion(at).expect("due completion");
            if d == device && r.tag == u32::MAX {
                return Response { tag: 0, ..r };
            }
        }
    }

    /// A device that disappeared is plugged back in (hot-plug): present again, not hung, with a power-on UNIT
    /// ATTENTION 06/29/00 pending. Its state (a drive's cartridge) is what it was.
    pub fn plug_back(&mut self, device: Device) {
        if let Some(d) = self.dev_mut(device) {
            d.present = true;
            d.hung = false;
            d.pending_ua = Some(sense::POWER_ON_RESET);
        }
    }

    /// Injects a fault at the current virtual time; errors (e.g. no free I/E slot) are logged.
    pub fn inject(&mut self, fault: Fault) {
        if let Err(e) = self.try_inject(fault) {
            log::warn!("fault not injected: {e}");
        }
    }

    /// Injects a fault at the current virtual time.
    pub fn try_inject(&mut self, fault: Fault) -> Result<(), InjectError> {
        let now = self.now;
        self.settle_drives(now);
        let need = |t: &Target, d: Device| {
            if t.dev(d).is_some() {
                Ok(())
            } else {
                Err(InjectError(format!("no device {d}")))
            }
        };
        match fault {
            Fault::UnitAttentionAfter { device, commands } => {
                need(self, device)?;
                let d = self.dev_mut(device).expect("checked");
                if commands == 0 {
                    d.pending_ua = Some(sense::POWER_ON_RESET);
                } else {
                    d.ua_countdown = Some(commands);
                }
            }
            Fault::NotReadyFor { device, ms } => {
                need(self, device)?;
                self.dev_mut(device).expect("checked").not_ready_until = now + ms;
            }
            Fault::RobotJam { next_moves } => self.jam_moves = next_moves,
            Fault::DriveWontUnload { drive } => {
                need(self, Device::Drive(drive))?;
                self.drives[drive].wont_unload = true;
            }
            Fault::Disappear { device } => {
                need(self, device)?;
                self.dev_mut(device).expect("checked").present = false;
                self.queue.retain(|_, (d, _)| *d != device);
            }
            Fault::Hang { device } => {
                need(self, device)?;
                self.dev_mut(device).expect("checked").hung = true;
                // Commands in progress are lost with it (their timeouts are not known here: the initiator's own
                // deadline must notice).
                self.queue.retain(|_, (d, _)| *d != device);
            }
            Fault::Reset { device } => {
                need(self, device)?;
                let d = self.dev_mut(device).expect("checked");
                d.hung = false;
                d.pending_ua = Some(sense::POWER_ON_RESET);
                d.prevent = false;
                d.not_ready_until = 0;
                d.ua_countdown = None;
                match device {
                    Device::Drive(i) => {
                        self.drives[i].wont_unload = false;
                        self.drives[i].reset_cleaning(now);
                        self.settle_drives(now);
                    }
                    Device::Changer => self.jam_moves = 0,
                }
            }
            Fault::DoorClosed => {
                self.door_open = false;
                self.changer.pending_ua = Some(sense::MEDIUM_MAY_HAVE_CHANGED);
            }
            Fault::DoorOpen => {
                if self.changer.prevent {
                    return Err(InjectError("the door is locked: PREVENT MEDIUM REMOVAL is in effect".into()));
                }
                self.door_open = true;
            }
            Fault::CleanerStuck { drive } => {
                need(self, Device::Drive(drive))?;
                self.drives[drive].stick_cleaning();
            }
            Fault::TapeAlert { drive, flag } => {
                need(self, Device::Drive(drive))?;
                if !(1..=64).contains(&flag) {
                    return Err(InjectError(format!("TapeAlert flag {flag} is not in 1..=64")));
                }
                let d = &mut self.drives[drive];
                if u16::from(flag) == drive::TAPEALERT_CLEAN_NOW {
                    d.clean_now = true;
                } else {
                    d.fault_alerts |= 1u64 << (flag - 1);
                }
                // The drive says so (informational exceptions, MRIE 4): the next TEST UNIT READY gets RECOVERED
                // ERROR 01/5D/00.
                d.alert_signal = true;
            }
            Fault::ImportCartridge { barcode } => {
                if barcode.is_empty() || barcode.len() > 32 || !barcode.is_ascii() {
                    return Err(InjectError(format!("bad barcode {barcode:?}")));
                }
                if self.elements.iter().flatten().any(|e| e.medium.as_ref().is_some_and(|m| m.barcode == barcode)) {
                    return Err(InjectError(format!("barcode {barcode} already in the library")));
                }
                let ie = &mut self.elements[ElementType::ImportExport.index()];
                let slot =
                    ie.iter_mut().find(|e| e.medium.is_none()).ok_or_else(|| InjectError("no free I/E slot".into()))?;
                slot.medium = Some(Medium {
                    cleaning: barcode.starts_with("CLN"),
                    barcode,
                    write_protected: false,
                    uses: 0,
                    invalid_cleaner: false,
                    first_block: None,
                    label_unreadable: false,
                });
                slot.impexp = true;
                slot.source = None;
                self.changer.pending_ua = Some(sense::MEDIUM_MAY_HAVE_CHANGED);
            }
            Fault::TakeFromPorts => {
                for e in &mut self.elements[ElementType::ImportExport.index()] {
                    e.medium = None;
                    e.source = None;
                    e.impexp = false;
                }
                self.changer.pending_ua = Some(sense::MEDIUM_MAY_HAVE_CHANGED);
            }
        }
        Ok(())
    }

    /// First address of an element type.
    pub fn base_address(&self, ty: ElementType) -> u16 {
        let a = &self.config.addresses;
        match ty {
            ElementType::Transport => a.robot,
            ElementType::Storage => a.storage,
            ElementType::ImportExport => a.ie,
            ElementType::Drive => a.drive,
        }
    }

    /// Element type and index of an address, if it is an element.
    pub fn locate(&self, address: u16) -> Option<(ElementType, usize)> {
        ElementType::ALL.into_iter().find_map(|ty| {
            let off = usize::from(address.checked_sub(self.base_address(ty))?);
            (off < self.elements[ty.index()].len()).then_some((ty, off))
        })
    }

    /// Plain-data view of elements, drives and counters at the current virtual time.
    pub fn snapshot(&self) -> Snapshot {
        let mut elements = Vec::new();
        for ty in ElementType::ALL {
            let base = self.base_address(ty);
            for (i, e) in self.elements[ty.index()].iter().enumerate() {
                elements.push(ElementSnapshot {
                    kind: ty,
                    address: base + u16::try_from(i).expect("validated address range"),
                    full: e.medium.is_some(),
                    barcode: e.medium.as_ref().map(|m| m.barcode.clone()),
                    source: e.source,
                    impexp: e.impexp,
                    uses: e.medium.as_ref().map_or(0, |m| m.uses),
                });
            }
        }
        let drives = (0..self.drives.len())
            .map(|i| {
                let d = &self.drives[i];
                DriveSnapshot {
                    serial: d.serial.clone(),
                    status: self.drive_status(i, self.now),
                    barcode: self.drive_medium(i).map(|m| m.barcode.clone()),
                    loads_since_clean: d.loads_since_clean,
                    clean_now: d.clean_now,
                    cleaning: d.is_cleaning(self.now),
                    tapealert: d.tapealert(),
                    prevent: d.dev.prevent,
                    present: d.dev.present,
                    position: d.position,
                }
            })
            .collect();
        Snapshot {
            now_ms: self.now,
            elements,
            drives,
            changer_present: self.changer.present,
            changer_prevent: self.changer.prevent,
            door_open: self.door_open,
            counters: self.counters,
            robot_log: self.robot_log.clone(),
        }
    }

    /// Runs one command at virtual time `start`: common checks (unit attention, not ready), then the
    /// device's command set.
    fn run(&mut self, device: Device, req: &Request, start: u64) -> (Outcome, DataCheck) {
        let cmd = self.config.scaled(self.config.timing.command_ms);
        let Some(&op) = req.cdb.first() else {
            return (Outcome::err(sense::INVALID_OPCODE, cmd), None);
        };
        self.settle_drives(start);
        let exempt = matches!(op, 0x12 | 0x03);
        let d = self.dev_mut(device).expect("present");
        if !exempt {
            if let Some(ua) = d.pending_ua.take() {
                return (Outcome::err(ua, cmd), None);
            }
            if let Some(n) = d.ua_countdown.as_mut() {
                *n -= 1;
                if *n == 0 {
                    d.ua_countdown = None;
                    d.pending_ua = Some(sense::POWER_ON_RESET);
                }
            }
            if start < d.not_ready_until {
                return (Outcome::err(sense::BECOMING_READY, cmd), None);
            }
        }
        match device {
            Device::Changer => (self.changer_command(req, start), None),
            Device::Drive(i) => self.drive_command(i, req, start),
        }
    }
}

/// Builds standard INQUIRY data (36 bytes).
pub(crate) fn std_inquiry(ptype: u8, rmb: bool, vendor: &str, product: &str, rev: &str) -> Vec<u8> {
    let mut d = vec![0u8; 36];
    d[0] = ptype;
    d[1] = if rmb { 0x80 } else { 0 };
    d[2] = 0x06; // SPC-4
    d[3] = 0x02; // response data format 2
    d[4] = 31;
    let put = |d: &mut Vec<u8>, at: usize, len: usize, s: &str| {
        let b = s.as_bytes();
        for i in 0..len {
            d[at + i] = *b.get(i).unwrap_or(&b' ');
        }
    };
    put(&mut d, 8, 8, vendor);
    put(&mut d, 16, 16, product);
    put(&mut d, 32, 4, rev);
    d
}

/// INQUIRY for any device: standard data or VPD pages 00h, 80h, 83h.
pub(crate) fn inquiry(cdb: &[u8], std: Vec<u8>, serial: &str, vendor: &str) -> Result<Vec<u8>, Sense> {
    if cdb.len() < 6 {
        return Err(Sense::invalid_field(0, None));
    }
    let alloc = be(&cdb[3..5]) as usize;
    let ptype = std[0];
    let mut d = if cdb[1] & 0x01 == 0 {
        if cdb[2] != 0 {
            return Err(Sense::invalid_field(2, Some(7)));
        }
        std
    } else {
        let body: Vec<u8> = match cdb[2] {
            0x00 => vec![0x00, 0x80, 0x83],
            0x80 => serial.as_bytes().to_vec(),
            0x83 => {
                let mut b = Vec::new();
                // NAA 5 (IEEE registered) designator, binary code set, LU association.
                b.extend_from_slice(&[0x01, 0x03, 0x00, 0x08]);
                let h = serial
                    .bytes()
                    .fold(0xcbf2_9ce4_8422_2325u64, |h, x| (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3));
                let naa = (0x5u64 << 60) | (0x00_1234u64 << 36) | (h & 0xf_ffff_ffff);
                b.extend_from_slice(&naa.to_be_bytes());
                // T10 vendor ID designator, ASCII: vendor (8) + serial.
                let mut id = format!("{vendor:<8}").into_bytes();
                id.truncate(8);
                id.extend_from_slice(serial.as_bytes());
                b.extend_from_slice(&[0x02, 0x01, 0x00, u8::try_from(id.len()).unwrap_or(255)]);
                b.extend_from_slice(&id);
                b
            }
            _ => return Err(Sense::invalid_field(2, Some(7))),
        };
        let mut d = vec![ptype, cdb[2]];
        d.extend_from_slice(&u16::try_from(body.len()).unwrap_or(0).to_be_bytes());
        d.extend_from_slice(&body);
        d
    };
    d.truncate(alloc);
    Ok(d)
}

/// REQUEST SENSE data (status GOOD): fixed format, or descriptor format when the DESC bit is set.
pub(crate) fn request_sense(cdb: &[u8], s: Option<Sense>) -> Vec<u8> {
    let desc = cdb.get(1).is_some_and(|b| b & 0x01 != 0);
    let mut d = s.unwrap_or(Sense::new(0, 0, 0)).encode(desc);
    d.truncate(cdb.get(4).copied().map_or(18, usize::from));
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib() -> Target {
        Target::new(Config::default_library()).unwrap()
    }

    fn req(tag: u32, cdb: Vec<u8>) -> Request {
        Request { tag, cdb, direction: Direction::None, timeout_ms: 0 }
    }

    fn drain(t: &mut Target) -> Vec<(u64, Device, Response)> {
        let mut v = Vec::new();
        while let Some(at) = t.next_completion_at() {
            let (d, r) = t.poll_completion(at).unwrap();
            v.push((at, d, r));
        }
        v
    }

    #[test]
    fn move_then_load_timing() {
        let mut t = lib();
        t.submit(Device::Changer, req(1, cdb::move_medium(0, 1000, 500)), 100);
        assert_eq!(t.next_completion_at(), Some(8100));
        assert!(t.poll_completion(8099).is_none());
        let (d, r) = t.poll_completion(8100).unwrap();
        assert_eq!((d, r.tag, r.status, r.duration_ms), (Device::Changer, 1, 0, 8000));
        // TUR during the auto-load, then after it.
        t.submit(Device::Drive(0), req(2, cdb::test_unit_ready()), 8100);
        t.submit(Device::Drive(0), req(3, cdb::test_unit_ready()), 28_100);
        let v = drain(&mut t);
        assert_eq!(v[0].2.sense_code(), (2, 4, 1));
        assert_eq!(v[0].0, 8101);
        assert!(v[1].2.is_good());
        assert_eq!(v[1].0, 28_101);
        // A TUR submitted while the robot is still moving sees no tape yet.
        t.submit(Device::Changer, req(4, cdb::move_medium(0, 1001, 501)), 30_000);
        t.submit(Device::Drive(1), req(5, cdb::test_unit_ready()), 30_001);
        let v = drain(&mut t);
        assert_eq!(v[0].2.tag, 5);
        assert_eq!(v[0].2.sense_code(), (2, 0x3a, 0));
        assert_eq!(v[1].0, 38_000);
    }

    #[test]
    fn robot_serializes_moves_drives_load_in_parallel() {
        let mut t = lib();
        t.submit(Device::Changer, req(1, cdb::move_medium(0, 1000, 500)), 0);
        t.submit(Device::Changer, req(2, cdb::move_medium(0, 1001, 501)), 0);
        let v = drain(&mut t);
        assert_eq!((v[0].0, v[0].2.tag), (8000, 1));
        assert_eq!((v[1].0, v[1].2.tag, v[1].2.duration_ms), (16_000, 2, 16_000));
        // Drive 0 is ready at 28000, drive 1 at 36000: loads overlap.
        t.submit(Device::Drive(0), req(3, cdb::test_unit_ready()), 28_000);
        t.submit(Device::Drive(1), req(4, cdb::test_unit_ready()), 28_000);
        let v = drain(&mut t);
        assert!(v.iter().find(|x| x.2.tag == 3).unwrap().2.is_good());
        assert_eq!(v.iter().find(|x| x.2.tag == 4).unwrap().2.sense_code(), (2, 4, 1));
        // Explicit unload+load on both drives at once completes in parallel.
        for (tag, d) in [(5, 0), (6, 1)] {
            t.submit(Device::Drive(d), req(tag, cdb::load_unload(false, false)), 40_000);
        }
        for (tag, d) in [(7, 0), (8, 1)] {
            t.submit(Device::Drive(d), req(tag, cdb::load_unload(true, false)), 40_000);
        }
        let v = drain(&mut t);
        let at = |tag| v.iter().find(|x| x.2.tag == tag).unwrap().0;
        assert_eq!(at(5), 55_000);
        assert_eq!(at(6), 55_000);
        assert_eq!(at(7), 75_000);
        assert_eq!(at(8), 75_000);
    }

    #[test]
    fn out_of_order_completion_between_devices() {
        let mut t = lib();
        t.submit(Device::Changer, req(1, cdb::move_medium(0, 1000, 1017)), 0);
        t.submit(Device::Drive(2), req(2, cdb::test_unit_ready()), 5);
        let v = drain(&mut t);
        assert_eq!(v[0].2.tag, 2);
        assert_eq!(v[0].1, Device::Drive(2));
        assert_eq!(v[1].2.tag, 1);
        // Same device: strictly in order even if the second is cheap.
        t.submit(Device::Changer, req(3, cdb::initialize_element_status()), 100_000);
        t.submit(Device::Changer, req(4, cdb::test_unit_ready()), 100_000);
        let v = drain(&mut t);
        assert_eq!((v[0].2.tag, v[1].2.tag), (3, 4));
        assert_eq!(v[1].0, 100_000 + 1 + 27 * 50 + 1);
    }

    #[test]
    fn timeout() {
        let mut t = lib();
        let mut r = req(9, cdb::move_medium(0, 1000, 500));
        r.timeout_ms = 1000;
        r.direction = Direction::FromDevice(0);
        t.submit(Device::Changer, r, 50);
        assert_eq!(t.next_completion_at(), Some(1050));
        let (_, resp) = t.poll_completion(1050).unwrap();
        assert_eq!((resp.status, resp.host_status, resp.duration_ms), (0, 3, 1000));
        assert!(resp.data.is_empty() && resp.sense.is_empty());
        assert_eq!(t.snapshot().counters.timeouts, 1);
        // The device stays busy until the move really finishes.
        t.submit(Device::Changer, req(10, cdb::test_unit_ready()), 1050);
        assert_eq!(t.next_completion_at(), Some(8051));
    }

    #[test]
    fn time_scale() {
        let mut cfg = Config::default_library();
        cfg.time_scale = 0.0;
        let mut t = Target::new(cfg).unwrap();
        t.submit(Device::Changer, req(1, cdb::move_medium(0, 1000, 500)), 7);
        t.submit(Device::Drive(0), req(2, cdb::test_unit_ready()), 7);
        let v = drain(&mut t);
        assert!(v.iter().all(|x| x.0 == 7));
        assert!(v[1].2.is_good());
        let mut cfg = Config::default_library();
        cfg.time_scale = 0.5;
        let mut t = Target::new(cfg).unwrap();
        t.submit(Device::Changer, req(1, cdb::move_medium(0, 1000, 500)), 0);
        assert_eq!(t.next_completion_at(), Some(4000));
    }

    #[test]
    fn unit_attention_faults() {
        let mut cfg = Config::default_library();
        cfg.power_on_unit_attention = true;
        let mut t = Target::new(cfg).unwrap();
        // INQUIRY does not consume the unit attention.
        assert!(t.execute(Device::Changer, &cdb::inquiry(None, 36), Direction::FromDevice(36)).is_good());
        let tur = cdb::test_unit_ready();
        assert_eq!(t.execute(Device::Changer, &tur, Direction::None).sense_code(), (6, 0x29, 0));
        assert!(t.execute(Device::Changer, &tur, Direction::None).is_good());
        assert_eq!(t.execute(Device::Drive(3), &tur, Direction::None).sense_code(), (6, 0x29, 0));
        t.inject(Fault::UnitAttentionAfter { device: Device::Drive(3), commands: 2 });
        assert_eq!(t.execute(Device::Drive(3), &tur, Direction::None).sense_code(), (2, 0x3a, 0));
        assert_eq!(t.execute(Device::Drive(3), &tur, Direction::None).sense_code(), (2, 0x3a, 0));
        assert_eq!(t.execute(Device::Drive(3), &tur, Direction::None).sense_code(), (6, 0x29, 0));
        t.inject(Fault::Reset { device: Device::Changer });
        assert_eq!(t.execute(Device::Changer, &tur, Direction::None).sense_code(), (6, 0x29, 0));
        t.inject(Fault::DoorClosed);
        assert_eq!(t.execute(Device::Changer, &tur, Direction::None).sense_code(), (6, 0x28, 0));
        assert!(t.execute(Device::Changer, &tur, Direction::None).is_good());
    }

    #[test]
    fn not_ready_and_jam_faults() {
        let mut t = lib();
        t.advance(1000);
        t.inject(Fault::NotReadyFor { device: Device::Changer, ms: 5000 });
        let tur = cdb::test_unit_ready();
        assert_eq!(t.execute(Device::Changer, &tur, Direction::None).sense_code(), (2, 4, 1));
        t.advance(6000);
        assert!(t.execute(Device::Changer, &tur, Direction::None).is_good());
        t.inject(Fault::RobotJam { next_moves: 1 });
        let r = t.execute(Device::Changer, &cdb::move_medium(0, 1000, 500), Direction::None);
        assert_eq!(r.sense_code(), (4, 0x15, 1));
        assert_eq!(r.duration_ms, 8000);
        assert!(t.snapshot().elements.iter().find(|e| e.address == 1000).unwrap().full);
        let r = t.execute(Device::Changer, &cdb::move_medium(0, 1000, 500), Direction::None);
        assert!(r.is_good());
    }

    #[test]
    fn import_and_disappear() {
        let mut t = lib();
        t.try_inject(Fault::ImportCartridge { barcode: "ABC999L6".into() }).unwrap();
        t.try_inject(Fault::TakeFromPorts).unwrap();
        assert!(t.snapshot().elements.iter().all(|e| e.kind != ElementType::ImportExport || e.barcode.is_none()));
        t.try_inject(Fault::ImportCartridge { barcode: "ABC999L6".into() }).unwrap();
        assert!(t.try_inject(Fault::ImportCartridge { barcode: "ABC999L6".into() }).is_err());
        t.try_inject(Fault::ImportCartridge { barcode: "ABC998L6".into() }).unwrap();
        let e = t.try_inject(Fault::ImportCartridge { barcode: "ABC997L6".into() }).unwrap_err();
        assert_eq!(e.0, "no free I/E slot");
        let s = t.snapshot();
        let ie: Vec<_> = s.elements.iter().filter(|e| e.kind == ElementType::ImportExport).collect();
        assert_eq!(ie[0].barcode.as_deref(), Some("ABC999L6"));
        assert!(ie[0].impexp && ie[1].impexp);
        // Disappear: queued commands vanish, new ones never complete.
        t.submit(Device::Drive(1), req(1, cdb::test_unit_ready()), 0);
        t.inject(Fault::Disappear { device: Device::Drive(1) });
        assert!(!t.is_present(Device::Drive(1)));
        assert!(t.is_present(Device::Drive(0)));
        assert!(!t.is_present(Device::Drive(9)));
        assert_eq!(t.next_completion_at(), None);
        t.submit(Device::Drive(1), req(2, cdb::test_unit_ready()), 0);
        assert_eq!(t.next_completion_at(), None);
        assert!(!t.snapshot().drives[1].present);
        assert!(t.try_inject(Fault::Reset { device: Device::Drive(7) }).is_err());
    }

    #[test]
    fn hang_swallows_until_timeout_and_reset() {
        let mut t = lib();
        t.inject(Fault::Hang { device: Device::Drive(0) });
        assert!(t.is_present(Device::Drive(0)));
        t.submit(
            Device::Drive(0),
            Request { tag: 1, cdb: cdb::test_unit_ready(), direction: Direction::None, timeout_ms: 0 },
            0,
        );
        t.submit(
            Device::Drive(0),
            Request { tag: 2, cdb: cdb::test_unit_ready(), direction: Direction::None, timeout_ms: 500 },
            0,
        );
        let (_, r) = t.poll_completion(10_000).unwrap();
        assert_eq!((r.tag, r.host_status), (2, sense::HOST_TIMED_OUT));
        assert!(t.poll_completion(u64::MAX / 2).is_none(), "the command without a timeout never completes");
        t.inject(Fault::Reset { device: Device::Drive(0) });
        let r = t.execute(Device::Drive(0), &cdb::test_unit_ready(), Direction::None);
        assert_eq!(r.sense_code(), (0x06, 0x29, 0x00), "answers again, after its reset");
        // Gone and plugged back.
        t.inject(Fault::Disappear { device: Device::Drive(1) });
        t.plug_back(Device::Drive(1));
        assert!(t.is_present(Device::Drive(1)));
        let r = t.execute(Device::Drive(1), &cdb::test_unit_ready(), Direction::None);
        assert_eq!(r.sense_code(), (0x06, 0x29, 0x00));
    }

    #[test]
    fn config_faults_applied_at_start() {
        let cfg = Config::from_toml(
            "[[fault]]\nkind = \"import\"\nbarcode = \"IMP001L6\"\n[[fault]]\nkind = \"jam\"\nmoves = 1",
        )
        .unwrap();
        let mut t = Target::new(cfg).unwrap();
        let tur = cdb::test_unit_ready();
        assert_eq!(t.execute(Device::Changer, &tur, Direction::None).sense_code(), (6, 0x28, 0));
        let r = t.execute(Device::Changer, &cdb::move_medium(0, 10, 1000), Direction::None);
        assert_eq!(r.sense_code(), (4, 0x15, 1));
    }

    #[test]
    fn snapshot_contents() {
        let t = lib();
        let s = t.snapshot();
        assert_eq!(s.elements.len(), 1 + 20 + 2 + 4);
        assert_eq!(s.elements[0].kind, ElementType::Transport);
        assert_eq!(s.elements[0].address, 1);
        assert_eq!(s.elements[20].address, 1019);
        assert_eq!(s.elements[20].barcode.as_deref(), Some("CLN001L1"));
        assert_eq!(s.elements[26].address, 503);
        assert_eq!(s.drives.len(), 4);
        assert_eq!(s.drives[0].status, DriveStatus::Empty);
        assert_eq!(t.drive_count(), 4);
        assert_eq!(t.locate(1019), Some((ElementType::Storage, 19)));
        assert_eq!(t.locate(1020), None);
    }

    #[test]
    fn descriptor_sense_personality() {
        let mut cfg = Config::default_library();
        cfg.descriptor_sense = true;
        let mut t = Target::new(cfg).unwrap();
        let r = t.execute(Device::Changer, &cdb::move_medium(0, 1016, 1017), Direction::None);
        assert_eq!(r.sense, vec![0x72, 0x05, 0x3b, 0x0e, 0, 0, 0, 0]);
        assert_eq!(r.sense_code(), (5, 0x3b, 0x0e));
        assert_eq!(r.tag, 0);
        // REQUEST SENSE with DESC set answers in descriptor format too.
        t.inject(Fault::DoorClosed);
        let r = t.execute(Device::Changer, &[0x03, 1, 0, 0, 252, 0], Direction::FromDevice(252));
        assert_eq!(r.data, vec![0x72, 0x06, 0x28, 0x00, 0, 0, 0, 0]);
        let c = Config::from_toml("descriptor_sense = true").unwrap();
        assert!(c.descriptor_sense);
    }

    #[test]
    fn data_direction_handling() {
        let mut t = lib();
        // No data buffer: data is dropped, resid 0.
        let r = t.execute(Device::Changer, &cdb::inquiry(None, 36), Direction::None);
        assert!(r.data.is_empty());
        assert_eq!(r.resid, 0);
        let r = t.execute(Device::Changer, &cdb::test_unit_ready(), Direction::FromDevice(10));
        assert_eq!(r.resid, 10);
        let r = t.execute(Device::Changer, &[0xff, 0, 0, 0, 0, 0], Direction::FromDevice(10));
        assert_eq!((r.status, r.resid), (2, 10));
        assert_eq!(t.snapshot().counters.check_conditions, 1);
    }
}
