//! The inventory as plain data: what the daemon knows about libraries, elements and cartridges.
//!
//! These types are shared by `changer` (which derives them from the hardware), `store` (which persists them) and
//! `server` (which serves them to clients). They carry no behaviour beyond small derivations, so none of those modules
//! depends on another's internals.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An object identity, shown as a GUID (`8-4-4-4-12` lowercase hex), as RSM's NTMS_GUID.
///
/// Identities never derive from `/dev/sgN` numbers: a library's is derived from its changer's serial number, an
/// element's from its library and address, a cartridge's is allocated once and kept across moves.
///
/// Kept as 16 big-endian bytes (ordering as the number): byte-aligned, so that the many optional ids and places in a
/// 50,000-cartridge inventory carry no padding.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Guid([u8; 16]);

impl Guid {
    /// A stable identity derived from a namespace and a name (FNV-1a 128, then RFC 4122 version/variant bits set
    /// so the text looks like a name-based GUID).
    pub fn derive(namespace: &str, name: &str) -> Guid {
        const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
        const PRIME: u128 = 0x0000000001000000000000000000013B;
        let mut h = OFFSET;
        for b in namespace.bytes().chain([0u8]).chain(name.bytes()) {
            h ^= u128::from(b);
            h = h.wrapping_mul(PRIME);
        }
        Guid::with_version_bits(h, 5)
    }

    /// A fresh identity made from a per-database random seed and a counter (version 4 bits set).
    pub fn sequential(seed: u64, counter: u64) -> Guid {
        Guid::with_version_bits((u128::from(seed) << 64) | u128::from(counter), 4)
    }

    fn with_version_bits(v: u128, version: u128) -> Guid {
        let v = (v & !(0xF << 76)) | (version << 76);
        let v = (v & !(0x3 << 62)) | (0x2 << 62);
        Guid(v.to_be_bytes())
    }

    /// The 16 bytes, big-endian: the form used in store keys so that ranges sort.
    pub fn to_be_bytes(self) -> [u8; 16] {
        self.0
    }

    /// The inverse of [`Guid::to_be_bytes`].
    pub fn from_be_bytes(b: [u8; 16]) -> Guid {
        Guid(b)
    }

    /// The id as a number.
    pub fn as_u128(self) -> u128 {
        u128::from_be_bytes(self.0)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // By hand: every object of every reply names a few ids, and `{:x}` through the formatter's padding cost
        // an eighth of a lookup's instructions.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let v = self.as_u128();
        let mut out = [0u8; 36];
        let mut at = 0;
        for (i, shift) in (0..32).rev().map(|n| n * 4).enumerate() {
            if matches!(i, 8 | 12 | 16 | 20) {
                out[at] = b'-';
                at += 1;
            }
            out[at] = HEX[usize::try_from((v >> shift) & 0xF).unwrap_or(0)];
            at += 1;
        }
        f.write_str(std::str::from_utf8(&out).unwrap_or_default())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// A text that is not a GUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Not a GUID")]
pub struct GuidParseError;

impl FromStr for Guid {
    type Err = GuidParseError;

    fn from_str(s: &str) -> Result<Guid, GuidParseError> {
        let groups: Vec<&str> = s.split('-').collect();
        let lens = [8, 4, 4, 4, 12];
        if groups.len() != 5 || groups.iter().zip(lens).any(|(g, n)| g.len() != n) {
            return Err(GuidParseError);
        }
        let hex: String = groups.concat();
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(GuidParseError);
        }
        u128::from_str_radix(&hex, 16).map(|v| Guid(v.to_be_bytes())).map_err(|_| GuidParseError)
    }
}

impl Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Guid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Guid, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The four SMC element types (SMC-3 6.11.2, element type code 1..4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElementKind {
    /// The robot (medium transport element).
    Transport,
    /// A storage slot.
    Storage,
    /// An import/export (mail) slot.
    ImportExport,
    /// A tape drive (data transfer element).
    Drive,
}

impl ElementKind {
    /// Every kind, in order.
    pub const ALL: [ElementKind; 4] =
        [ElementKind::Transport, ElementKind::Storage, ElementKind::ImportExport, ElementKind::Drive];

    /// The SMC element type code.
    pub fn code(self) -> u8 {
        match self {
            ElementKind::Transport => 1,
            ElementKind::Storage => 2,
            ElementKind::ImportExport => 3,
            ElementKind::Drive => 4,
        }
    }

    /// The kind for an SMC element type code.
    pub fn from_code(code: u8) -> Option<ElementKind> {
        match code {
            1 => Some(ElementKind::Transport),
            2 => Some(ElementKind::Storage),
            3 => Some(ElementKind::ImportExport),
            4 => Some(ElementKind::Drive),
            _ => None,
        }
    }
}

/// Where a cartridge is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Location {
    /// The library holding it.
    pub library: Guid,
    /// The element type.
    pub kind: ElementKind,
    /// The element address (SMC address, as the library reports it).
    pub address: u16,
}

/// What a cartridge is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// A data cartridge.
    Data,
    /// A cleaning cartridge (barcode `CLN…`).
    Cleaning,
}

/// The operational state of a library, as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LibraryState {
    /// Reading identity and element address assignment.
    Probing,
    /// Reading element status; the cached inventory is served meanwhile.
    Scanning,
    /// Inventory verified against the hardware; commands are accepted.
    Ready,
    /// Ready, with the robot moving a cartridge; further moves queue.
    Busy,
    /// The device is gone or failed; the inventory is kept and marked stale.
    Offline,
}

/// A library (one changer and its drives).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LibraryRecord {
    /// Identity, derived from the changer's serial.
    pub id: Guid,
    /// Administrator-facing name (configured, or vendor + product).
    pub name: String,
    /// The changer's unit serial number (VPD 80h).
    pub serial: String,
    /// INQUIRY vendor identification.
    pub vendor: String,
    /// INQUIRY product identification.
    pub product: String,
    /// INQUIRY product revision.
    pub revision: String,
    /// The changer's device node (`/dev/sgN` or a vlib socket) when last seen.
    pub device: String,
    /// State when last persisted.
    pub state: LibraryState,
    /// True when the inventory has not been verified against the hardware since the daemon started or since the
    /// device went away.
    pub stale: bool,
    /// How long its drives take from a move in until they are ready (ms), as last learned: a restarted daemon
    /// polls the first loads from just before it instead of learning it again.
    #[serde(default)]
    pub load_ms: Option<u64>,
    /// Disabled by an administrator (DisableObject): it takes no new work.
    #[serde(default)]
    pub disabled: bool,
    /// Unix ms when first seen.
    #[serde(default)]
    pub created: u64,
    /// Unix ms of the last change (state, name, device).
    #[serde(default)]
    pub modified: u64,
}

/// A drive's identity and device nodes, when known.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DriveInfo {
    /// The drive's serial (DVCID or VPD 80h), when mapped.
    pub serial: Option<String>,
    /// INQUIRY vendor + product of the drive.
    pub product: Option<String>,
    /// The drive's sg node or vlib socket, when mapped.
    pub device: Option<String>,
    /// The drive's non-rewinding tape node (`/dev/nstN`), when mapped.
    pub nst: Option<String>,
    /// Its cleaning and health record (kept across re-reads of the library).
    #[serde(default, skip_serializing_if = "DriveCare::is_empty")]
    pub care: DriveCare,
}

/// What rsmd knows of a drive's health: when it was last cleaned, and the TapeAlert flags it reported last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DriveCare {
    /// Unix time (ms) of its last cleaning by rsmd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_cleaned: Option<u64>,
    /// The TapeAlert flags of its last report (flag n = bit n - 1).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub alerts: u64,
    /// Cleanings done by rsmd.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cleanings: u64,
}

impl DriveCare {
    fn is_empty(&self) -> bool {
        *self == DriveCare::default()
    }
}

/// One element of a library.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElementRecord {
    /// The library.
    pub library: Guid,
    /// The element type.
    pub kind: ElementKind,
    /// SMC element address.
    pub address: u16,
    /// Number shown to people: drives from 0, storage from 1, import/export after storage (as mtx numbers them).
    pub number: u32,
    /// The cartridge in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<Guid>,
    /// The element reports an abnormal state (EXCEPT), with its ASC/ASCQ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<(u8, u8)>,
    /// The robot can reach the element (ACCESS).
    pub accessible: bool,
    /// For drives: identity and nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drive: Option<Box<DriveInfo>>,
    /// For drives: how many mounts it served.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mounts: u64,
    /// How many characters of its volume tag field mtx prints (the barcode and the blanks after it; 0: none), so
    /// that `rsm mtx status` prints tags as wide as this library reports them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tag_printed: u8,
    /// Disabled by an administrator (DisableObject): a disabled drive is never chosen for a mount.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
}

impl ElementRecord {
    /// The element's identity.
    pub fn id(&self) -> Guid {
        element_id(self.library, self.kind, self.address)
    }
}

/// The identity of element `address` of type `kind` in `library`.
pub fn element_id(library: Guid, kind: ElementKind, address: u16) -> Guid {
    Guid::derive(&library.to_string(), &format!("{}:{}", kind.code(), address))
}

/// A cartridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRecord {
    /// Identity, kept across moves.
    pub id: Guid,
    /// The barcode (primary volume tag), trimmed; None when the library has no reader or the label is unreadable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barcode: Option<String>,
    /// Data or cleaning.
    pub kind: MediaKind,
    /// Where it is now; None = offline (outside any library).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// The storage slot it returns to on dismount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<Location>,
    /// The media pool it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<Guid>,
    /// How many times it was mounted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mount_count: u64,
    /// Who mounted it, while it is mounted: only they (from any of their sessions) or an administrator dismount it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounted_by: Option<Owner>,
    /// The state of its (only) side. Records written before pools existed load as `None` and are placed by the
    /// new-media rule when the inventory loads.
    #[serde(default)]
    pub side: Option<SideState>,
    /// The logical media id while its side is allocated (or complete): the application's handle, which
    /// `SwapMedia` can point at another cartridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lmid: Option<Guid>,
    /// Who allocated it (uid and application), while allocated or complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_to: Option<Owner>,
    /// How many times its side was allocated (the pool's `max_allocations` decommissions it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub allocations: u32,
    /// Disabled media are never mounted.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// Administrator's description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// What its first block says (a label inventory read it): `bacula Vol0001`, `ansi A00001`, `blank`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_media: Option<String>,
    /// Bumped on every change: SetObjectInformation compares it.
    #[serde(default)]
    pub version: u64,
    /// Unix ms when first seen.
    #[serde(default)]
    pub created: u64,
    /// Unix ms of the last change (a move, a mount, a method).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub modified: u64,
}

fn yes() -> bool {
    true
}

// Stored records leave out fields at their defaults: half the bytes on disk, and less for sled to hold in memory
// after reading a 50,000-cartridge database (records written before read back the same way).
fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

impl MediaRecord {
    /// A cartridge seen for the first time: in no pool yet (the new-media rule places it).
    pub fn new(id: Guid, barcode: Option<String>, kind: MediaKind) -> MediaRecord {
        MediaRecord {
            id,
            barcode,
            kind,
            location: None,
            home: None,
            pool: None,
            mount_count: 0,
            mounted_by: None,
            side: None,
            lmid: None,
            allocated_to: None,
            allocations: 0,
            enabled: true,
            description: String::new(),
            on_media: None,
            version: 0,
            created: 0,
            modified: 0,
        }
    }
}

/// The state of a cartridge side (RSM's `NTMS_PARTITIONSTATE`; a tape has one side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SideState {
    /// In Free, waiting to be prepared.
    Unprepared,
    /// Allocatable.
    Available,
    /// Allocated to an application (has a logical media id).
    Allocated,
    /// Allocated and finished: never written again.
    Complete,
    /// Held for an allocation of the cartridge's other side.
    Reserved,
    /// Never allocated again.
    Decommissioned,
    /// Recognised format, unknown cartridge (Import pool).
    Import,
    /// Unrecognised or unreadable (Unrecognized pool).
    Foreign,
    /// No drive of its library can use it.
    Incompatible,
}

impl SideState {
    /// The name clients see.
    pub fn name(self) -> &'static str {
        match self {
            SideState::Unprepared => "unprepared",
            SideState::Available => "available",
            SideState::Allocated => "allocated",
            SideState::Complete => "complete",
            SideState::Reserved => "reserved",
            SideState::Decommissioned => "decommissioned",
            SideState::Import => "import",
            SideState::Foreign => "foreign",
            SideState::Incompatible => "incompatible",
        }
    }

    /// Allocated, complete or reserved: an application holds it.
    pub fn is_held(self) -> bool {
        matches!(self, SideState::Allocated | SideState::Complete | SideState::Reserved)
    }
}

/// What a media pool is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    /// Scratch media any application may draw (system pool, one per media type).
    Free,
    /// Recognised but unknown cartridges (system pool).
    Import,
    /// Unrecognised, unreadable or unusable cartridges (system pool).
    Unrecognized,
    /// An application's pool.
    Application,
}

/// A media pool: a system pool of one media type (`Free\LTO-6`), a system pool holding those (`Free`), or an
/// application pool (`Bacula`, `Bacula\Full`). Only pools without sub-pools hold media.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    /// Identity ([`PoolRecord::id_of`] its path).
    pub id: Guid,
    /// Full path, levels separated by `\`.
    pub name: String,
    /// What it is.
    pub kind: PoolKind,
    /// The media type it holds (None: any type, decided by its first cartridge; or a pool of pools).
    pub media_type: Option<String>,
    /// The pool above it.
    pub parent: Option<Guid>,
    /// Allocation takes a cartridge from Free when the pool has none available.
    pub draw_from_free: bool,
    /// Deallocated cartridges go back to Free.
    pub return_to_free: bool,
    /// A cartridge allocated this many times is decommissioned when deallocated.
    pub max_allocations: Option<u32>,
    /// Who created it (application pools).
    pub owner: Option<Owner>,
    /// Administrator's description.
    pub description: String,
    /// Bumped on every change: SetObjectInformation compares it.
    pub version: u64,
    /// Unix ms when created.
    pub created: u64,
    /// Unix ms of the last change.
    pub modified: u64,
}

impl PoolRecord {
    /// The id of the pool with this path (paths compare without case: `bacula\full` is `Bacula\Full`).
    pub fn id_of(path: &str) -> Guid {
        Guid::derive("pool", &path.to_ascii_lowercase())
    }
}

/// Drive mappings by changer serial: (drive serial, data transfer element address).
pub type DriveMaps = std::collections::HashMap<String, Vec<(String, u16)>>;

/// A library request's number: the key of its record (big-endian in the store's `requests` tree, so requests
/// load in submission order). Clients name a request by its [`RequestRecord::guid`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// Who asked for something: the Unix user (SO_PEERCRED) and the application name given to OpenSession.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Application name (OpenSession's `application`).
    pub application: Option<String>,
}

/// What a library request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// Mount media in a drive.
    Mount,
    /// Take media out of a drive.
    Dismount,
    /// Take media from a mail slot into the library.
    Inject,
    /// Move media to a mail slot.
    Eject,
    /// Read the library's inventory.
    Inventory,
    /// Clean a drive.
    Clean,
    /// Open the operator door.
    Door,
    /// Wait for a cartridge to allocate (AllocateMedia with nothing available).
    Allocate,
    /// Move a cartridge from one slot to another (`mtx transfer`).
    Move,
}

/// Where a library request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// Accepted, waiting for its turn (the robot, a drive).
    Queued,
    /// Being carried out.
    InProgress,
    /// Waiting for a resource another request has (a cartridge in use) or for an operator.
    Waiting,
    /// Finished successfully.
    Complete,
    /// Finished with an error (the record's `error` says which).
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl RequestStatus {
    /// True until the request has finished.
    pub fn is_open(self) -> bool {
        matches!(self, RequestStatus::Queued | RequestStatus::InProgress | RequestStatus::Waiting)
    }
}

/// A library request: one record, held by the broker's request table and persisted with the state it reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Its number.
    pub id: RequestId,
    /// Its public identity.
    pub guid: Guid,
    /// What it does.
    pub kind: RequestKind,
    /// Where it stands.
    pub state: RequestStatus,
    /// The library it works on.
    pub library: Option<Guid>,
    /// The session that submitted it; None for the daemon's own work (the system session).
    pub session: Option<String>,
    /// Who submitted it.
    pub owner: Owner,
    /// The submitting process (for the audit log).
    #[serde(default)]
    pub pid: Option<i32>,
    /// Where the submitting client is when it came through `rsm bridge` (`ssh from ADDRESS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Submitted asynchronously (`nowait`): it outlives its session.
    pub detached: bool,
    /// Unix time (ms) it was submitted.
    pub submitted: u64,
    /// Unix time (ms) it started.
    pub started: Option<u64>,
    /// Unix time (ms) it finished.
    pub completed: Option<u64>,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// Its priority (-15..=15).
    pub priority: i32,
    /// The drive it uses (element id), once known.
    pub drive: Option<String>,
    /// The cartridge it moves (id).
    pub media: Option<String>,
    /// How far it is: (done, total) — elements read by an inventory, cartridges identified by a label inventory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<(u64, u64)>,
}

/// What an operator request asks of the operator (RSM's `NTMS_OPREQ_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorKind {
    /// A message (an application's own text).
    Message,
    /// Put new (scratch) media in the library.
    NewMedia,
    /// Insert or replace a cleaning cartridge.
    Cleaner,
    /// Service a device (a drive that needs attention).
    DeviceService,
    /// Move media: bring an offline cartridge back, or take the ejected ones out of the mail slots.
    MoveMedia,
}

/// Where an operator request stands (RSM's `NTMS_OPSTATE_*`; rsmd shows a request to the operators as soon as it
/// is submitted, so it starts `Active`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorState {
    /// Shown to the operators, not answered yet.
    Active,
    /// The operator did what it asks (or the daemon saw it done).
    Satisfied,
    /// The operator refused.
    Refused,
    /// Withdrawn by its submitter (or the work that raised it ended).
    Cancelled,
}

/// An operator request: a call for a person to do something in front of the library.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorRecord {
    /// Its number (the key of its record; operators type it: `rsm satisfy 12`).
    pub number: u64,
    /// Its public identity.
    pub guid: Guid,
    /// What it asks.
    pub kind: OperatorKind,
    /// Where it stands.
    pub state: OperatorState,
    /// The text shown to the operator.
    pub text: String,
    /// The object concerned (a cartridge, drive or library id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The library concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<Guid>,
    /// Who submitted it (the daemon's own requests: uid 0, application `rsmd`).
    pub owner: Owner,
    /// The submitting session (None: the daemon's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The library request that waits for it (a mount of an offline cartridge, an eject waiting for mail slots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<RequestId>,
    /// Unix time (ms) it was submitted.
    pub submitted: u64,
    /// Unix time (ms) it was answered or withdrawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<u64>,
    /// The user who answered it (None: the daemon saw it done, or nobody yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<u32>,
    /// Why it was refused or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

// The store persists these; the domain produces them. They live here so that `media` and `broker` need not
// import `store`.

/// One change to the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Insert or replace a library.
    Library(LibraryRecord),
    /// Insert or replace an element.
    Element(ElementRecord),
    /// Remove an element (the library shrank).
    RemoveElement {
        /// Library.
        library: Guid,
        /// Element type code.
        kind: u8,
        /// Address.
        address: u16,
    },
    /// Insert or replace a cartridge (and its barcode index entry).
    Media(MediaRecord),
    /// Remove a cartridge.
    RemoveMedia(Guid),
    /// Insert or replace a request.
    Request(RequestRecord),
    /// Remove a request.
    RemoveRequest(RequestId),
    /// Insert or replace a media pool.
    Pool(PoolRecord),
    /// Remove a media pool.
    RemovePool(Guid),
    /// Insert or replace an operator request.
    Operator(OperatorRecord),
    /// Remove an operator request (purged).
    RemoveOperator(u64),
}

/// One record as it comes off disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A library.
    Library(LibraryRecord),
    /// An element.
    Element(ElementRecord),
    /// A cartridge.
    Media(MediaRecord),
    /// A request.
    Request(RequestRecord),
    /// A media pool.
    Pool(PoolRecord),
    /// An operator request.
    Operator(OperatorRecord),
}

/// A partition of a library: the part one application sees and uses (`[[library.partition]]`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Partition {
    /// Its name (`rsmd:LIBRARY/NAME`).
    pub name: String,
    /// The application (OpenSession's) whose sessions are bound to it.
    pub application: String,
    /// The library's storage slots it owns, by number (1-based, as mtx counts them); empty when it owns a pool.
    pub slots: Vec<u32>,
    /// The media pool it owns instead of fixed slots (a path, `Bacula\Full`): its slots are the home slots of the
    /// pool's cartridges (and of its sub-pools'), in slot order, as they are at each call.
    #[serde(default)]
    pub pool: Option<String>,
    /// The drives it may use, by number (from 0); a drive in several partitions is shared.
    pub drives: Vec<u32>,
    /// It sees and uses the mail slots.
    pub mail_slots: bool,
}

/// The requests an earlier run left on disk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Requested {
    /// Library requests.
    pub library: Vec<RequestRecord>,
    /// Operator requests.
    pub operator: Vec<OperatorRecord>,
}

/// Everything on disk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Libraries.
    pub libraries: Vec<LibraryRecord>,
    /// Elements, by library then type then address.
    pub elements: Vec<ElementRecord>,
    /// Cartridges.
    pub media: Vec<MediaRecord>,
    /// Requests.
    pub requests: Vec<RequestRecord>,
    /// Media pools.
    pub pools: Vec<PoolRecord>,
    /// Operator requests.
    pub operators: Vec<OperatorRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_round_trips_and_rejects_garbage() {
        let g = Guid::derive("library", "SERIAL123");
        let text = g.to_string();
        assert_eq!(text.len(), 36);
        let hex = format!("{:032x}", g.as_u128());
        let dashed = format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]);
        assert_eq!(text, dashed);
        assert_eq!(Guid::from_be_bytes([0xAB; 16]).to_string(), "abababab-abab-abab-abab-abababababab");
        assert_eq!(text.parse::<Guid>().unwrap(), g);
        assert_eq!(&text[14..15], "5", "version nibble");
        for bad in ["", "xyz", "00000000-0000-0000-0000-00000000000g", "0000000-00000-0000-0000-000000000000"] {
            assert!(bad.parse::<Guid>().is_err(), "{bad}");
        }
    }

    #[test]
    fn derived_ids_differ_by_name_and_namespace() {
        assert_ne!(Guid::derive("a", "b"), Guid::derive("a", "c"));
        assert_ne!(Guid::derive("ab", ""), Guid::derive("a", "b"));
        assert_eq!(Guid::derive("a", "b"), Guid::derive("a", "b"));
        assert_ne!(Guid::sequential(1, 1), Guid::sequential(1, 2));
    }
}
