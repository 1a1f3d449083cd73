//! One-shot device tools: `rsmd --list-devices` and `rsmd --map-drives` (blocking SG_IO through
//! [`crate::sg::probe`]; never used by the daemon's event loop).
//!
//! `--list-devices` identifies every changer and tape drive sysfs knows about (INQUIRY, VPD 80h serial, VPD 83h
//! world-wide name), reads each changer's element address assignment (mode page 1Dh) and the status of its data
//! transfer elements (with DVCID where the library supports it) and maps the drives to drive elements: DVCID, then
//! the mapping persisted by `--map-drives`, then elimination.
//!
//! `--map-drives` finds that mapping the hard way, for libraries that report no DVCID: it moves a cartridge into
//! each empty drive element in turn and sees which drive stops answering MEDIUM NOT PRESENT, then puts it back. The
//! result is persisted in `{state_dir}/drive-map.json` as `{"changers": {"<changer serial>": {"<drive serial>":
//! <element address>}}}`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::changer::{self, same_serial, Element};
use crate::error_chain::error_chain;
use crate::scsi::asc;
use crate::scsi::cdb::{self, ReadElementStatus};
use crate::scsi::element::{allocation_for, chunks, ElementDescriptor, ElementStatusReport, ElementType};
use crate::scsi::inquiry::{self, StandardInquiry};
use crate::scsi::mode::{ElementAddressAssignment, ElementRange};
use crate::scsi::reader::ParseError;
use crate::scsi::sense::{Sense, SenseKey};
use crate::sg::discover::{self, DeviceKind, ScsiDevice};
use crate::sg::probe;
use crate::transport::{status, Command, Response, TransportError};

/// Name of the persisted drive mapping file in the state directory.
pub const DRIVE_MAP_FILE: &str = "drive-map.json";

/// Timeout of identification and status commands.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of READ ELEMENT STATUS.
const SCAN_TIMEOUT: Duration = Duration::from_secs(600);
/// Timeout of a robot move.
const MOVE_TIMEOUT: Duration = Duration::from_secs(600);
/// Timeout of LOAD UNLOAD.
const UNLOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// Elements per READ ELEMENT STATUS.
const CHUNK: u16 = 256;
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

/// An open sg device for blocking commands.
struct Dev {
    file: File,
}

impl Dev {
    fn open(path: &Path) -> Result<Dev, CommandError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(CommandError::Open)?;
        Ok(Dev { file })
    }

    /// Runs a command; the answer whatever its status.
    fn raw(&self, what: &'static str, command: &Command) -> Result<Response, CommandError> {
        probe::execute_blocking_fd(self.file.as_fd(), command)
            .map_err(|source| CommandError::Transport { what, source })
    }

    /// Runs a command and requires GOOD; one UNIT ATTENTION is absorbed by a retry.
    fn run(&self, what: &'static str, command: &Command) -> Result<Response, CommandError> {
        let mut r = self.raw(what, command)?;
        if check_sense(&r).is_some_and(|s| s.is_unit_attention()) {
            r = self.raw(what, command)?;
        }
        good(what, r)
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

/// A tape drive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DriveInfo {
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
    pub drive: Option<DriveInfo>,
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
    pub drives: Vec<DriveInfo>,
}

/// Identifies one device (INQUIRY, VPD 80h, VPD 83h). Errors are recorded in the result.
fn identify(sg: &Path) -> (DeviceInfo, Option<Dev>) {
    let mut info = DeviceInfo { sg: sg.to_owned(), ..DeviceInfo::default() };
    let dev = match Dev::open(sg) {
        Ok(dev) => dev,
        Err(e) => {
            info.error = Some(error_chain(&e));
            return (info, None);
        }
    };
    if let Err(e) = identify_on(&dev, &mut info) {
        info.error = Some(error_chain(&e));
    }
    (info, Some(dev))
}

fn identify_on(dev: &Dev, info: &mut DeviceInfo) -> Result<(), CommandError> {
    let r = dev.run("INQUIRY", &cdb::inquiry(96).into_command(PROBE_TIMEOUT))?;
    let std = StandardInquiry::parse(&r.data).map_err(|source| CommandError::Parse { what: "INQUIRY", source })?;
    info.vendor = std.vendor;
    info.product = std.product;
    info.revision = std.revision;
    let r = dev.run("INQUIRY VPD 80h", &cdb::inquiry_vpd(0x80, 255).into_command(PROBE_TIMEOUT))?;
    let serial = inquiry::parse_unit_serial(&r.data)
        .map_err(|source| CommandError::Parse { what: "INQUIRY VPD 80h", source })?;
    info.serial = (!serial.is_empty()).then_some(serial);
    // The world-wide name is optional: not every device has VPD 83h or an NAA designator.
    if let Ok(r) = dev.run("INQUIRY VPD 83h", &cdb::inquiry_vpd(0x83, 255).into_command(PROBE_TIMEOUT)) {
        if let Ok(ids) = inquiry::parse_device_identification(&r.data) {
            info.wwn = inquiry::logical_unit_wwn(&ids);
        }
    }
    Ok(())
}

fn read_assignment(dev: &Dev) -> Result<ElementAddressAssignment, CommandError> {
    let r = dev.run("MODE SENSE page 1Dh", &cdb::mode_sense_6(0x1D, true, 255).into_command(PROBE_TIMEOUT))?;
    ElementAddressAssignment::parse_mode6(&r.data)
        .map_err(|source| CommandError::Parse { what: "MODE SENSE page 1Dh", source })
}

/// READ ELEMENT STATUS of one element type, in chunks, with VOLTAG (and DVCID when asked; the caller handles an
/// ILLEGAL REQUEST).
fn read_elements(
    dev: &Dev,
    element_type: ElementType,
    range: ElementRange,
    dvcid: bool,
) -> Result<Vec<ElementDescriptor>, CommandError> {
    let mut out = Vec::new();
    for (start, count) in chunks(range.first, range.count, CHUNK) {
        let c = cdb::read_element_status(&ReadElementStatus {
            element_type,
            start,
            count,
            voltag: true,
            curdata: false,
            dvcid,
            alloc: allocation_for(count),
        });
        let r = dev.run("READ ELEMENT STATUS", &c.into_command(SCAN_TIMEOUT))?;
        let report = ElementStatusReport::parse(&r.data)
            .map_err(|source| CommandError::Parse { what: "READ ELEMENT STATUS", source })?;
        out.extend(report.elements.into_iter().filter(|e| e.element_type == element_type));
    }
    Ok(out)
}

/// Drive elements with DVCID, falling back to without it on ILLEGAL REQUEST.
fn read_drive_elements(dev: &Dev, a: &ElementAddressAssignment) -> Result<Vec<ElementDescriptor>, CommandError> {
    match read_elements(dev, ElementType::DataTransfer, a.data_transfer, true) {
        Err(e) if e.sense().is_some_and(|s| s.key == SenseKey::IllegalRequest) => {
            read_elements(dev, ElementType::DataTransfer, a.data_transfer, false)
        }
        other => other,
    }
}

/// The policy's view of an element.
fn to_element(d: &ElementDescriptor) -> Element {
    Element {
        element_type: d.element_type,
        address: d.address,
        full: d.full,
        barcode: d.barcode().map(str::to_owned),
        source: d.source,
        exception: d.except.then_some(d.asc),
        accessible: d.access,
        impexp: d.impexp,
        identifier: d.identifier.as_ref().map(|i| i.serial()),
        device: None,
    }
}

/// Maps `drives` (those not yet claimed by another changer: `claimed[i]`) to `elements`, recording which rule
/// mapped each.
fn map_elements(
    elements: &[Element],
    drives: &[DriveInfo],
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

fn identify_drives(tapes: &[ScsiDevice]) -> Vec<(DriveInfo, Option<Dev>)> {
    tapes
        .iter()
        .map(|t| {
            let (device, dev) = identify(&t.sg);
            (DriveInfo { device, nst: t.nst.clone() }, dev)
        })
        .collect()
}

/// Reads one changer for `--list-devices`; failures are recorded in the result.
fn list_changer(sg: &Path, drives: &[DriveInfo], claimed: &mut [bool], state_dir: &Path) -> ChangerInfo {
    let (device, dev) = identify(sg);
    let mut info = ChangerInfo { device, ..ChangerInfo::default() };
    let Some(dev) = dev else { return info };
    if info.device.error.is_some() {
        return info;
    }
    let a = match read_assignment(&dev) {
        Ok(a) => a,
        Err(e) => {
            info.device.error = Some(error_chain(&e));
            return info;
        }
    };
    info.elements = Some(a.into());
    match read_drive_elements(&dev, &a) {
        Ok(descriptors) => {
            let elements: Vec<Element> = descriptors.iter().map(to_element).collect();
            let persisted = info.device.serial.as_deref().map(|s| load_mapping(state_dir, s)).unwrap_or_default();
            info.drive_elements = map_elements(&elements, drives, claimed, &persisted);
        }
        Err(e) => info.device.error = Some(error_chain(&e)),
    }
    info
}

/// `rsmd --list-devices`: returns the text to print.
pub fn list_devices(o: &ListOptions) -> Result<String, DevicesError> {
    let (changers, tapes) = scan(o)?;
    let drives: Vec<DriveInfo> = identify_drives(&tapes).into_iter().map(|(d, _)| d).collect();
    let mut claimed = vec![false; drives.len()];
    let changers: Vec<ChangerInfo> =
        changers.iter().map(|c| list_changer(&c.sg, &drives, &mut claimed, &o.state_dir)).collect();
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

fn drive_nodes(d: &DriveInfo) -> String {
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
    read_map_file(&state_dir.join(DRIVE_MAP_FILE))
        .changers
        .remove(changer_serial)
        .map(|m| m.into_iter().collect())
        .unwrap_or_default()
}

/// Merges `pairs` (drive serial, element address) into the persisted mapping of `changer_serial`: entries for the
/// same drive (by [`same_serial`], the rule the mapping is later read with) or the same element are replaced. Writes a temporary file and renames it over the old one.
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

fn tur(dev: &Dev) -> TurState {
    let command = cdb::test_unit_ready().into_command(PROBE_TIMEOUT);
    dev.raw("TEST UNIT READY", &command).map_or(TurState::Other, |r| classify_tur(&r))
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
fn settled_tur(dev: &Dev) -> TurState {
    let mut state = tur(dev);
    for _ in 0..3 {
        if state != TurState::Changing {
            break;
        }
        state = tur(dev);
    }
    state
}

/// Polls the candidate drives (indexes into `drives`) until exactly one reports a cartridge. Bounded.
fn find_loaded_drive(drives: &[(DriveInfo, Option<Dev>)], candidates: &[usize]) -> Result<usize, String> {
    let mut last = Vec::new();
    for round in 0..TUR_ROUNDS {
        if round > 0 {
            std::thread::sleep(TUR_PAUSE);
        }
        last = candidates
            .iter()
            .filter_map(|&i| drives[i].1.as_ref().map(|dev| (i, settled_tur(dev))))
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

fn move_medium(dev: &Dev, robot: u16, from: u16, to: u16) -> Result<(), CommandError> {
    dev.run("MOVE MEDIUM", &cdb::move_medium(robot, from, to, false).into_command(MOVE_TIMEOUT)).map(|_| ())
}

/// Maps the drive elements of one changer by moving a cartridge through each.
fn map_changer(sg: &Path, drives: &[(DriveInfo, Option<Dev>)], state_dir: &Path) -> ChangerMapping {
    let mut result = ChangerMapping { sg: sg.to_owned(), serial: None, elements: Vec::new(), saved: None, error: None };
    let (info, dev) = identify(sg);
    result.serial.clone_from(&info.serial);
    if let Some(e) = info.error {
        result.error = Some(e);
        return result;
    }
    let Some(dev) = dev else { return result };
    match map_changer_on(&dev, drives, &mut result.elements) {
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

fn map_changer_on(
    dev: &Dev,
    drives: &[(DriveInfo, Option<Dev>)],
    out: &mut Vec<(u16, ElementOutcome)>,
) -> Result<(), CommandError> {
    let a = read_assignment(dev)?;
    let robot = a.transport.first;
    let storage = read_elements(dev, ElementType::Storage, a.storage, false)?;
    let elements = read_elements(dev, ElementType::DataTransfer, a.data_transfer, false)?;
    // A full slot holding a data cartridge (cleaning cartridges last). Not every library sets ACCESS on storage
    // elements (tgt does not), so only an exception rules a slot out.
    let mut full: Vec<&ElementDescriptor> = storage.iter().filter(|s| s.full && !s.except).collect();
    full.sort_by_key(|s| s.barcode().is_some_and(|b| b.starts_with("CLN")));
    let Some(slot) = full.first().map(|s| s.address) else {
        return Err(CommandError::Mapping("No full storage slot to map drives with".to_owned()));
    };
    // Drives with a cartridge before we start cannot take part.
    let usable: Vec<usize> = (0..drives.len())
        .filter(|&i| drives[i].1.is_some() && drives[i].0.device.serial.is_some())
        .filter(|&i| drives[i].1.as_ref().is_some_and(|d| settled_tur(d) == TurState::Empty))
        .collect();
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
        if let Err(err) = move_medium(dev, robot, slot, e.address) {
            out.push((e.address, ElementOutcome::Failed { reason: error_chain(&err) }));
            continue;
        }
        let found = find_loaded_drive(drives, &candidates);
        let drive_dev = found.as_ref().ok().and_then(|&i| drives[i].1.as_ref());
        if let Err(err) = move_medium(dev, robot, e.address, slot) {
            // The drive may hold on to the cartridge until it is unloaded.
            let Some(drive_dev) = drive_dev else { return Err(err) };
            log::info!("Moving back failed ({}); unloading the drive", error_chain(&err));
            drive_dev.run("LOAD UNLOAD", &cdb::load_unload(false, false).into_command(UNLOAD_TIMEOUT))?;
            move_medium(dev, robot, e.address, slot)?;
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

fn mapped_outcome(d: &DriveInfo) -> ElementOutcome {
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

/// `rsmd --map-drives`: returns the text to print.
pub fn map_drives(o: &ListOptions, changer: Option<&Path>) -> Result<String, DevicesError> {
    let (changers, tapes) = scan(o)?;
    let selected: Vec<&ScsiDevice> = match changer {
        Some(p) => {
            let c =
                changers.iter().find(|c| same_node(&c.sg, p)).ok_or_else(|| DevicesError::NoSuchChanger(p.into()))?;
            vec![c]
        }
        None => changers.iter().collect(),
    };
    let drives = identify_drives(&tapes);
    let results: Vec<ChangerMapping> = selected.iter().map(|c| map_changer(&c.sg, &drives, &o.state_dir)).collect();
    if o.json {
        let mut s = serde_json::to_string_pretty(&results).map_err(DevicesError::Json)?;
        s.push('\n');
        Ok(s)
    } else {
        Ok(render_mapping(&results))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drive(sg: &str, serial: &str, nst: &str) -> DriveInfo {
        DriveInfo {
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
        assert_eq!(map_drives(&o, None).unwrap(), "no changers found\n");
        assert!(matches!(map_drives(&o, Some(Path::new("/dev/sg3"))), Err(DevicesError::NoSuchChanger(_))));
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
