//! The wire objects: what the daemon reports about computers, libraries, drives, slots, media and requests.
//!
//! Data only: the daemon fills these from its domain state, the client reads them. Field and enum names are
//! snake_case on the wire and mirror the types of the same names in the `io.rsmd.Ntms` interface description
//! ([`super::interface::NTMS_DESCRIPTION`]). Times are Unix milliseconds. Ids are GUID text
//! (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`). Element addresses are the SMC element addresses the library reports.
//!
//! [`ObjectDetails`] is externally tagged: `{"drive": {...}}`, which the IDL expresses as a struct of optional
//! members of which exactly one is set.

use serde::{Deserialize, Serialize};

/// Lowest request priority (`MountMedia`, `SetRequestPriority`).
pub const PRIORITY_MIN: i32 = -15;
/// Highest request priority.
pub const PRIORITY_MAX: i32 = 15;

/// The RSM object types (`NTMS_*`), snake_case on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectType {
    /// The server itself (`NTMS_COMPUTER`).
    Computer,
    /// A library: a changer with its drives and slots, or a stand-alone drive (`NTMS_LIBRARY`).
    Library,
    /// The robot, the medium transport (`NTMS_CHANGER`).
    Changer,
    /// A tape drive (`NTMS_DRIVE`).
    Drive,
    /// A storage element (`NTMS_STORAGESLOT`).
    StorageSlot,
    /// An import/export element, a mail slot (`NTMS_IEPORT`).
    IePort,
    /// A media type such as LTO-6 (`NTMS_MEDIA_TYPE`).
    MediaType,
    /// A cartridge (`NTMS_PHYSICAL_MEDIA`).
    PhysicalMedia,
    /// A media pool (`NTMS_MEDIA_POOL`).
    MediaPool,
    /// A library request (`NTMS_LIBREQUEST`).
    LibRequest,
    /// An operator request (`NTMS_OPREQUEST`).
    OpRequest,
}

impl ObjectType {
    /// Every object type, in declaration order.
    pub const ALL: [ObjectType; 11] = [
        ObjectType::Computer,
        ObjectType::Library,
        ObjectType::Changer,
        ObjectType::Drive,
        ObjectType::StorageSlot,
        ObjectType::IePort,
        ObjectType::MediaType,
        ObjectType::PhysicalMedia,
        ObjectType::MediaPool,
        ObjectType::LibRequest,
        ObjectType::OpRequest,
    ];

    /// The wire name (`storage_slot`).
    pub fn wire_name(self) -> &'static str {
        match self {
            ObjectType::Computer => "computer",
            ObjectType::Library => "library",
            ObjectType::Changer => "changer",
            ObjectType::Drive => "drive",
            ObjectType::StorageSlot => "storage_slot",
            ObjectType::IePort => "ie_port",
            ObjectType::MediaType => "media_type",
            ObjectType::PhysicalMedia => "physical_media",
            ObjectType::MediaPool => "media_pool",
            ObjectType::LibRequest => "lib_request",
            ObjectType::OpRequest => "op_request",
        }
    }

    /// Parses a wire name.
    pub fn from_wire_name(name: &str) -> Option<ObjectType> {
        ObjectType::ALL.into_iter().find(|t| t.wire_name() == name)
    }
}

/// One object: the common header of `NTMS_OBJECTINFORMATION` and its type-specific part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// The object's GUID, as text.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Free-form description.
    pub description: String,
    /// The object's type; always agrees with `details`.
    pub object_type: ObjectType,
    /// Whether the object is enabled (disabled objects are not used for new work).
    pub enabled: bool,
    /// Operational state in words (`ready`, `offline`, `not_present`, ...), for display.
    pub state: String,
    /// Creation time, Unix ms.
    pub created: u64,
    /// Last modification time, Unix ms.
    pub modified: u64,
    /// The object's version, for objects SetObjectInformation writes (cartridges, pools): pass it back to
    /// have a change refused when someone changed the object since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The type-specific part.
    pub details: ObjectDetails,
}

/// The type-specific part of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectDetails {
    /// The server.
    Computer(ComputerDetails),
    /// A library.
    Library(LibraryDetails),
    /// A changer.
    Changer(ChangerDetails),
    /// A drive.
    Drive(DriveDetails),
    /// A storage slot.
    StorageSlot(SlotDetails),
    /// A mail slot.
    IePort(IePortDetails),
    /// A media type.
    MediaType(MediaTypeDetails),
    /// A cartridge.
    PhysicalMedia(MediaDetails),
    /// A media pool.
    MediaPool(PoolDetails),
    /// A library request.
    LibRequest(LibRequestDetails),
    /// An operator request.
    OpRequest(OpRequestDetails),
}

impl ObjectDetails {
    /// The object type these details describe.
    pub fn object_type(&self) -> ObjectType {
        match self {
            ObjectDetails::Computer(_) => ObjectType::Computer,
            ObjectDetails::Library(_) => ObjectType::Library,
            ObjectDetails::Changer(_) => ObjectType::Changer,
            ObjectDetails::Drive(_) => ObjectType::Drive,
            ObjectDetails::StorageSlot(_) => ObjectType::StorageSlot,
            ObjectDetails::IePort(_) => ObjectType::IePort,
            ObjectDetails::MediaType(_) => ObjectType::MediaType,
            ObjectDetails::PhysicalMedia(_) => ObjectType::PhysicalMedia,
            ObjectDetails::MediaPool(_) => ObjectType::MediaPool,
            ObjectDetails::LibRequest(_) => ObjectType::LibRequest,
            ObjectDetails::OpRequest(_) => ObjectType::OpRequest,
        }
    }
}

/// The server (`NTMS_COMPUTERINFORMATION`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputerDetails {
    /// Host name.
    pub host_name: String,
    /// rsmd version.
    pub version: String,
    /// Number of libraries.
    pub library_count: u32,
    /// Number of drives.
    pub drive_count: u32,
}

/// What kind of library (`NTMS_LIBRARYTYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LibraryKind {
    /// A robotic library with a changer.
    Online,
    /// A stand-alone drive treated as a one-drive library.
    Standalone,
    /// The offline library: where media outside any library are recorded.
    Offline,
}

/// A library (`NTMS_LIBRARYINFORMATION`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LibraryDetails {
    /// Online, stand-alone or offline.
    pub kind: LibraryKind,
    /// Ids of the library's changers.
    pub changers: Vec<String>,
    /// Number of storage slots.
    pub slot_count: u32,
    /// Number of drives.
    pub drive_count: u32,
    /// Number of import/export ports.
    pub ie_port_count: u32,
    /// Whether the operator door is open, when known.
    pub door_open: Option<bool>,
    /// Whether the library reads barcodes.
    pub barcode_reader: bool,
    /// Vendor identification (INQUIRY).
    pub vendor: Option<String>,
    /// Product identification (INQUIRY).
    pub product: Option<String>,
    /// Unit serial number.
    pub serial: Option<String>,
    /// While the library is scanned (an inventory): elements read so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_done: Option<u32>,
    /// While the library is scanned: elements it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_total: Option<u32>,
    /// Its partitions, when configured.
    #[serde(default)]
    pub partitions: Option<Vec<PartitionDetails>>,
}

/// A partition of a library (`[[library.partition]]`): what one application sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionDetails {
    /// Its name (`rsmd:LIBRARY/NAME`).
    pub name: String,
    /// The application whose sessions are bound to it.
    pub application: String,
    /// The library's storage slots it owns (1-based numbers); it numbers them 1..N in this order. For a partition
    /// that owns a pool: the home slots of the pool's cartridges now.
    pub slots: Vec<u32>,
    /// The media pool it owns (its cartridges, wherever they are), when it owns a pool instead of fixed slots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The library's drives it may use (numbers from 0); it numbers them 0.. in this order.
    pub drives: Vec<u32>,
    /// It sees the mail slots.
    pub mail_slots: bool,
}

/// A changer, the robot (`NTMS_CHANGERINFORMATION`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangerDetails {
    /// Id of the library it belongs to.
    pub library: String,
    /// The changer's /dev/sg node, when present.
    pub device: Option<String>,
    /// Element address of the medium transport.
    pub element_address: u32,
    /// Vendor identification (INQUIRY).
    pub vendor: Option<String>,
    /// Product identification (INQUIRY).
    pub product: Option<String>,
    /// Unit serial number.
    pub serial: Option<String>,
    /// Product revision level (INQUIRY).
    #[serde(default)]
    pub revision: Option<String>,
}

/// Device nodes through which a drive is reached.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceNodes {
    /// The SCSI generic node (`/dev/sg3`).
    pub sg: Option<String>,
    /// The non-rewinding tape node (`/dev/nst0`).
    pub nst: Option<String>,
    /// A stable path (`/dev/tape/by-id/scsi-<serial>-nst`).
    pub by_id: Option<String>,
}

/// A drive's state (`NTMS_DRIVESTATE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriveState {
    /// No medium in the drive.
    Empty,
    /// The robot is bringing a medium, or the drive is threading it.
    Loading,
    /// A medium is in the drive and ready, mounted for a session.
    Mounted,
    /// A medium is in the drive and ready, but no session has it mounted (e.g. deferred dismount).
    Loaded,
    /// The drive is unloading or the robot is taking the medium away.
    Dismounting,
    /// A cleaning cartridge is in the drive.
    BeingCleaned,
    /// The drive reported a failure or cannot be reached.
    Error,
}

/// A drive (`NTMS_DRIVEINFORMATION`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveDetails {
    /// Id of the library it belongs to.
    pub library: String,
    /// Drive index within the library, from 0 (mtx's "Data Transfer Element N").
    pub number: u32,
    /// SMC element address.
    pub element_address: u32,
    /// Drive state.
    pub state: DriveState,
    /// Vendor identification (INQUIRY).
    pub vendor: Option<String>,
    /// Product identification (INQUIRY).
    pub product: Option<String>,
    /// Unit serial number (matched against the changer's DVCID serial).
    pub serial: Option<String>,
    /// Device nodes, when the drive is visible to this host.
    pub devices: DeviceNodes,
    /// Id of the cartridge in the drive.
    pub media: Option<String>,
    /// Barcode of the cartridge in the drive.
    pub barcode: Option<String>,
    /// Element address the cartridge came from (SMC "source storage element address"), when valid.
    pub source_element: Option<u32>,
    /// Who has the cartridge mounted: `APPLICATION (uid N)` (never a session's handle).
    pub mounted_by: Option<String>,
    /// Number of mounts since the drive was added.
    pub mount_count: u64,
    /// The drive asked for cleaning (TapeAlert).
    pub needs_cleaning: bool,
    /// Last cleaning time, Unix ms.
    pub last_cleaned: Option<u64>,
    /// The TapeAlert flags of the drive's last report (1..=64).
    #[serde(default)]
    pub tape_alerts: Option<Vec<u8>>,
    /// Cleanings rsmd did.
    #[serde(default)]
    pub cleanings: Option<u64>,
    /// How many characters of the volume tag field the library reports (the barcode and the blanks after it), as
    /// mtx prints them; absent: the library reports no tag here.
    #[serde(default)]
    pub volume_tag_width: Option<u32>,
}

/// A storage slot (`NTMS_STORAGESLOTINFORMATION`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotDetails {
    /// Id of the library it belongs to.
    pub library: String,
    /// Slot number within the library, from 1 (mtx's "Storage Element N").
    pub number: u32,
    /// SMC element address.
    pub element_address: u32,
    /// Whether the slot holds a cartridge.
    pub full: bool,
    /// Id of the cartridge in the slot.
    pub media: Option<String>,
    /// Barcode of the cartridge in the slot.
    pub barcode: Option<String>,
    /// The slot is reserved for the cleaning cartridge.
    pub cleaner_slot: bool,
    /// How many characters of the volume tag field the library reports (the barcode and the blanks after it), as
    /// mtx prints them; absent: the library reports no tag here.
    #[serde(default)]
    pub volume_tag_width: Option<u32>,
}

/// An import/export port (`NTMS_IEPORTINFORMATION`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IePortDetails {
    /// Id of the library it belongs to.
    pub library: String,
    /// Port number: mtx numbers mail slots after the storage slots, so the first port is `slot_count + 1`.
    pub number: u32,
    /// SMC element address.
    pub element_address: u32,
    /// Whether the port holds a cartridge.
    pub full: bool,
    /// Id of the cartridge in the port.
    pub media: Option<String>,
    /// Barcode of the cartridge in the port.
    pub barcode: Option<String>,
    /// The port can import (INENAB).
    pub import_enabled: bool,
    /// The port can export (EXENAB).
    pub export_enabled: bool,
    /// How many characters of the volume tag field the library reports (the barcode and the blanks after it), as
    /// mtx prints them; absent: the library reports no tag here.
    #[serde(default)]
    pub volume_tag_width: Option<u32>,
}

/// A media type (`NTMS_MEDIATYPEINFORMATION`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaTypeDetails {
    /// Family (`LTO`).
    pub family: String,
    /// Generation within the family (6 for LTO-6), when meaningful.
    pub generation: Option<u32>,
    /// Sides (partitions) per cartridge.
    pub sides: u32,
    /// Whether the type is a cleaning cartridge.
    pub cleaner: bool,
    /// Whether drives can write it (false for read-only generations).
    pub writable: bool,
    /// Ids of the libraries it relates to: their drives take it, or they hold cartridges of it.
    #[serde(default)]
    pub libraries: Vec<String>,
}

/// Where a cartridge is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocationKind {
    /// In a storage slot.
    Slot,
    /// In a drive.
    Drive,
    /// In an import/export port.
    IePort,
    /// In the robot's hand.
    Transport,
    /// Outside any library (on a shelf).
    Offline,
}

/// A cartridge's location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// The kind of place.
    pub kind: LocationKind,
    /// Id of the library, unless offline.
    pub library: Option<String>,
    /// Id of the slot, drive or port.
    pub element: Option<String>,
    /// SMC element address of the slot, drive or port.
    pub element_address: Option<u32>,
}

/// A cartridge (`NTMS_PMIDINFORMATION`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaDetails {
    /// Barcode (volume tag), when the library reports one.
    pub barcode: Option<String>,
    /// Where it is now.
    pub location: Location,
    /// Id of its home slot, where it returns after a dismount.
    pub home_slot: Option<String>,
    /// Id of its media type.
    pub media_type: Option<String>,
    /// Id of the pool it belongs to.
    pub pool: Option<String>,
    /// Number of mounts.
    pub mount_count: u64,
    /// Whether it is a cleaning cartridge.
    pub cleaner: bool,
    /// Cleanings done, for cleaners.
    pub cleaning_count: Option<u32>,
    /// The state of its side: unprepared, available, allocated, complete, reserved, decommissioned, import,
    /// foreign, incompatible.
    #[serde(default)]
    pub side: Option<String>,
    /// Its logical media id, while allocated or complete.
    #[serde(default)]
    pub logical_media: Option<String>,
    /// How many times it was allocated.
    #[serde(default)]
    pub allocations: u32,
    /// Who allocated it: user id.
    #[serde(default)]
    pub owner_uid: Option<u32>,
    /// Who allocated it: application.
    #[serde(default)]
    pub owner_application: Option<String>,
    /// The media type's name (`LTO-6`).
    #[serde(default)]
    pub media_type_name: Option<String>,
    /// The pool's path (`Bacula\Full`).
    #[serde(default)]
    pub pool_name: Option<String>,
    /// What its first block says, once a label inventory read it (`bacula Vol0001`, `blank`).
    #[serde(default)]
    pub on_media: Option<String>,
}

/// What a pool is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    /// Blank or recycled media, available for allocation.
    Free,
    /// Media from another system.
    Import,
    /// Media with an unknown or no label.
    Unrecognized,
    /// An application's pool.
    Application,
}

/// A media pool (`NTMS_MEDIAPOOLINFORMATION`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolDetails {
    /// What the pool is for.
    pub kind: PoolKind,
    /// Id of its media type.
    pub media_type: Option<String>,
    /// Id of its parent pool.
    pub parent: Option<String>,
    /// Draw from Free when empty.
    pub draw_from_free: bool,
    /// Return to Free on deallocation.
    pub return_to_free: bool,
    /// Maximum allocations per side, if limited.
    pub max_allocations: Option<u32>,
    /// Number of cartridges in the pool.
    pub media_count: u32,
    /// Of them, allocated or complete.
    #[serde(default)]
    pub allocated_count: u32,
    /// Number of pools directly below it.
    #[serde(default)]
    pub pool_count: u32,
    /// Who created it (application pools): user id.
    #[serde(default)]
    pub owner_uid: Option<u32>,
    /// Who created it: application.
    #[serde(default)]
    pub owner_application: Option<String>,
}

/// What a library request does (`NTMS_LM_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestOperation {
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
    /// Wait for a cartridge to allocate.
    Allocate,
    /// Move a cartridge between slots.
    Move,
}

/// A library request's state (`NTMS_LM_*` states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Accepted, waiting for its turn.
    Queued,
    /// Being carried out.
    InProgress,
    /// Waiting for an operator or a resource.
    Waiting,
    /// Finished successfully.
    Complete,
    /// Finished with an error (see `error`).
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

/// A library request (`NTMS_LIBREQUESTINFORMATION`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LibRequestDetails {
    /// What it does.
    pub operation: RequestOperation,
    /// Where it is.
    pub state: RequestState,
    /// Priority, -15 (lowest) to 15 (highest).
    pub priority: i32,
    /// Submission time, Unix ms.
    pub submitted: u64,
    /// Start time, Unix ms.
    pub started: Option<u64>,
    /// Completion time, Unix ms.
    pub completed: Option<u64>,
    /// Id of the library.
    pub library: Option<String>,
    /// Id of the drive.
    pub drive: Option<String>,
    /// Id of the media.
    pub media: Option<String>,
    /// The submitting session's application name.
    pub application: Option<String>,
    /// The submitting process's user id.
    pub uid: Option<u32>,
    /// Where a remote client is (`ssh from ADDRESS`), for a request that came through `rsm bridge`.
    #[serde(default)]
    pub client: Option<String>,
    /// Why it failed, when it failed.
    pub error: Option<String>,
    /// How far it is: elements read by an inventory, cartridges read by a label inventory.
    #[serde(default)]
    pub done: Option<u64>,
    /// Of how many.
    #[serde(default)]
    pub total: Option<u64>,
}

/// What an operator request asks (`NTMS_OPREQ_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpRequestKind {
    /// A message to the operator.
    Message,
    /// Insert new media.
    NewMedia,
    /// Insert or replace a cleaner.
    Cleaner,
    /// Service a device.
    DeviceService,
    /// Move media (bring an offline cartridge).
    MoveMedia,
}

/// An operator request's state (`NTMS_OPSTATE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpRequestState {
    /// Submitted, not yet shown.
    Submitted,
    /// Shown to operators.
    Active,
    /// The operator did it.
    Satisfied,
    /// The operator refused.
    Refused,
    /// Cancelled by the submitter.
    Cancelled,
}

/// An operator request (`NTMS_OPREQUESTINFORMATION`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRequestDetails {
    /// What it asks.
    pub kind: OpRequestKind,
    /// Where it is.
    pub state: OpRequestState,
    /// Text shown to the operator.
    pub text: String,
    /// Id of the object concerned.
    pub object: Option<String>,
    /// Submission time, Unix ms.
    pub submitted: u64,
    /// The submitting application.
    pub application: Option<String>,
    /// The submitting process's user id.
    pub uid: Option<u32>,
    /// Its number (operators type it).
    #[serde(default)]
    pub number: Option<u64>,
    /// Id of the library concerned.
    #[serde(default)]
    pub library: Option<String>,
    /// When it was answered or withdrawn, Unix ms.
    #[serde(default)]
    pub completed: Option<u64>,
    /// The user who answered it.
    #[serde(default)]
    pub answered_by: Option<u32>,
    /// Why it was refused or cancelled.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Options of a mount (`NTMS_MOUNT_*`); all false by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MountFlags {
    /// Mount for reading.
    pub read: bool,
    /// Mount for writing.
    pub write: bool,
    /// Fail at once with `MediaUnavailable` if the media is in use rather than waiting.
    pub error_if_unavailable: bool,
    /// Fail with `MediaOffline` if the media is offline rather than raising an operator request.
    pub error_if_offline: bool,
    /// Return the request id at once; the mount continues in the background.
    pub nowait: bool,
}

/// How an inventory reads the library (`NTMS_INVENTORY_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InventoryMode {
    /// The library's configured method.
    #[default]
    Default,
    /// READ ELEMENT STATUS with barcodes.
    Fast,
    /// INITIALIZE ELEMENT STATUS first (the robot scans every slot), then read.
    Full,
    /// Mount each cartridge and read its on-media label.
    Omid,
}

/// Kind of change in a notification (`NTMS_OBJ_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationOperation {
    /// An object was created.
    Insert,
    /// An object changed.
    Update,
    /// An object was deleted.
    Delete,
    /// An error was raised about the object.
    Error,
}

/// Reply of `OpenSession`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenSessionReply {
    /// The session handle.
    pub session: String,
    /// The daemon's protocol version.
    pub version: u32,
}

/// Reply of `EnumerateObjects`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnumerateReply {
    /// The objects, in the daemon's order (by library, then element address).
    pub objects: Vec<ObjectInfo>,
    /// A page (`limit`) with more after it: the id to ask for the next page with (`after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Reply of `GetObjectInformation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectReply {
    /// The object.
    pub object: ObjectInfo,
}

/// Reply of `MountMedia`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountReply {
    /// Id of the library request that did (or, with `nowait`, does) the mount.
    pub request: String,
    /// Id of the mounted media.
    pub media: Option<String>,
    /// Id of the drive; absent with `nowait`.
    pub drive: Option<String>,
    /// The device node to open (`/dev/nst0`); absent with `nowait` or when the drive is not visible here.
    pub device: Option<String>,
    /// All of the drive's nodes (sg for SCSI tools, nst for data); absent with `nowait`.
    #[serde(default)]
    pub devices: Option<DeviceNodes>,
    /// The host the device nodes are on (the library's host: over `--host`, not the client's).
    #[serde(default)]
    pub host: Option<String>,
}

/// Reply of methods that start library work (`InventoryLibrary`, `EjectMedia`, `InjectMedia`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestReply {
    /// Id of the library request.
    pub request: String,
}

/// One reply of `WaitForNotification`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// What happened.
    pub operation: NotificationOperation,
    /// Type of the object.
    pub object_type: ObjectType,
    /// Id of the object.
    pub object: String,
    /// The number of this change in the daemon's one stream of changes (from 1 at each start, one more for every
    /// notification): a client that reconnects, or watches without a filter, sees from a jump how many changes
    /// it did not hear of (RSM dropped them silently). With an `object_type` filter, numbers of other types are
    /// skipped.
    #[serde(default)]
    pub sequence: u64,
}

/// How CreateMediaPool treats an existing pool (`NTMS_OPEN_EXISTING`, `NTMS_CREATE_NEW`, `NTMS_OPEN_ALWAYS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolAction {
    /// Open it; fail when missing.
    OpenExisting,
    /// Create it; fail when it exists.
    CreateNew,
    /// Open it, creating it when missing.
    #[default]
    OpenAlways,
}

/// Reply of `CreateMediaPool`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatePoolReply {
    /// Id of the pool.
    pub pool: String,
    /// Whether this call created it.
    pub created: bool,
}

/// Reply of `AllocateMedia`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocateReply {
    /// The new logical media id: the application's handle on the cartridge.
    pub logical_media: String,
    /// Id of the cartridge.
    pub media: String,
    /// Its barcode.
    pub barcode: Option<String>,
    /// Id of the pool it came from (the pool itself, Free or Import).
    pub allocated_from: String,
}

/// Field-level changes of `SetObjectInformation`; absent members stay as they are.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectChanges {
    /// New description (every writable type).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New name (application pools: the last level of the path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Pools: allocation draws from Free when the pool has nothing available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draw_from_free: Option<bool>,
    /// Pools: deallocated media return to Free.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_to_free: Option<bool>,
    /// Pools: allocations before a cartridge is decommissioned (0 = no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_allocations: Option<u32>,
    /// Application pools without media: the media type they hold ("" = any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

/// Reply of `org.varlink.service.GetInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Vendor.
    pub vendor: String,
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// Project URL.
    pub url: String,
    /// Interfaces served.
    pub interfaces: Vec<String>,
}

/// Reply of `org.varlink.service.GetInterfaceDescription`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptionReply {
    /// The interface definition text.
    pub description: String,
}

#[cfg(test)]
pub(crate) mod samples {
    //! One object of every type, for tests here and in the client.
    use super::*;

    fn info(id: &str, name: &str, details: ObjectDetails) -> ObjectInfo {
        ObjectInfo {
            id: id.into(),
            name: name.into(),
            description: String::new(),
            object_type: details.object_type(),
            enabled: true,
            state: "ready".into(),
            created: 1_700_000_000_000,
            modified: 1_700_000_000_001,
            version: Some(3),
            details,
        }
    }

    /// One of each type.
    pub(crate) fn all() -> Vec<ObjectInfo> {
        vec![
            info(
                "00000000-0000-0000-0000-000000000001",
                "host",
                ObjectDetails::Computer(ComputerDetails {
                    host_name: "host".into(),
                    version: "0.1.0".into(),
                    library_count: 1,
                    drive_count: 1,
                }),
            ),
            info(
                "00000000-0000-0000-0000-000000000002",
                "lib",
                ObjectDetails::Library(LibraryDetails {
                    kind: LibraryKind::Online,
                    changers: vec!["c".into()],
                    slot_count: 2,
                    drive_count: 1,
                    ie_port_count: 1,
                    door_open: Some(false),
                    barcode_reader: true,
                    vendor: Some("STK".into()),
                    product: Some("L700".into()),
                    serial: None,
                    scan_done: Some(10),
                    scan_total: Some(26),
                    partitions: None,
                }),
            ),
            info(
                "00000000-0000-0000-0000-000000000003",
                "changer",
                ObjectDetails::Changer(ChangerDetails {
                    library: "l".into(),
                    device: Some("/dev/sg5".into()),
                    element_address: 0,
                    vendor: None,
                    product: None,
                    serial: Some("X".into()),
                    revision: None,
                }),
            ),
            info(
                "00000000-0000-0000-0000-000000000004",
                "drive0",
                ObjectDetails::Drive(DriveDetails {
                    library: "l".into(),
                    number: 0,
                    element_address: 500,
                    state: DriveState::Mounted,
                    vendor: None,
                    product: None,
                    serial: Some("D0".into()),
                    devices: DeviceNodes { sg: Some("/dev/sg1".into()), nst: Some("/dev/nst0".into()), by_id: None },
                    media: Some("m".into()),
                    barcode: Some("ABC001L6".into()),
                    source_element: Some(1000),
                    mounted_by: Some("s".into()),
                    mount_count: 3,
                    needs_cleaning: false,
                    last_cleaned: None,
                    tape_alerts: Some(vec![20]),
                    cleanings: Some(1),
                    volume_tag_width: Some(36),
                }),
            ),
            info(
                "00000000-0000-0000-0000-000000000005",
                "slot1",
                ObjectDetails::StorageSlot(SlotDetails {
                    library: "l".into(),
                    number: 1,
                    element_address: 1000,
                    full: false,
                    media: None,
                    barcode: None,
                    cleaner_slot: false,
                    volume_tag_width: Some(32),
                }),
            ),
            info(
                "00000000-0000-0000-0000-000000000006",
                "port",
                ObjectDetails::IePort(IePortDetails {
                    library: "l".into(),
                    number: 3,
                    element_address: 10,
                    full: false,
                    media: None,
                    barcode: None,
                    import_enabled: true,
                    export_enabled: true,
                    volume_tag_width: Some(32),
                }),
            ),
            info(
                "00000000-0000-0000-0000-000000000007",
                "LTO-6",
                ObjectDetails::MediaType(MediaTypeDetails {
                    family: "LTO".into(),
                    generation: Some(6),
                    sides: 1,
                    cleaner: false,
                    writable: true,
                    libraries: vec!["l".into()],
                }),
            ),
            info(
                "00000000-0000-0000-0000-000000000008",
                "ABC001L6",
                ObjectDetails::PhysicalMedia(MediaDetails {
                    barcode: Some("ABC001L6".into()),
                    location: Location {
                        kind: LocationKind::Drive,
                        library: Some("l".into()),
                        element: Some("d".into()),
                        element_address: Some(500),
                    },
                    home_slot: Some("s1".into()),
                    media_type: None,
                    pool: None,
                    mount_count: 3,
                    cleaner: false,
                    cleaning_count: None,
                    side: Some("allocated".into()),
                    logical_media: Some("lm".into()),
                    allocations: 1,
                    owner_uid: Some(1000),
                    owner_application: Some("Bacula".into()),
                    media_type_name: Some("LTO-6".into()),
                    pool_name: Some("Bacula".into()),
                    on_media: None,
                }),
            ),
            info(
                "00000000-0000-0000-0000-000000000009",
                "Free",
                ObjectDetails::MediaPool(PoolDetails {
                    kind: PoolKind::Free,
                    media_type: None,
                    parent: None,
                    draw_from_free: false,
                    return_to_free: false,
                    max_allocations: None,
                    media_count: 0,
                    allocated_count: 0,
                    pool_count: 1,
                    owner_uid: None,
                    owner_application: None,
                }),
            ),
            info(
                "00000000-0000-0000-0000-00000000000a",
                "mount",
                ObjectDetails::LibRequest(LibRequestDetails {
                    operation: RequestOperation::Mount,
                    state: RequestState::InProgress,
                    priority: 0,
                    submitted: 1,
                    started: Some(2),
                    completed: None,
                    library: Some("l".into()),
                    drive: None,
                    media: Some("m".into()),
                    application: Some("bacula".into()),
                    uid: Some(0),
                    client: None,
                    error: None,
                    done: Some(1),
                    total: Some(2),
                }),
            ),
            info(
                "00000000-0000-0000-0000-00000000000b",
                "op",
                ObjectDetails::OpRequest(OpRequestDetails {
                    kind: OpRequestKind::Cleaner,
                    state: OpRequestState::Active,
                    text: "replace cleaner".into(),
                    object: None,
                    submitted: 1,
                    application: None,
                    uid: None,
                    number: Some(3),
                    library: Some("l".into()),
                    completed: Some(2),
                    answered_by: Some(0),
                    reason: Some("none left".into()),
                }),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn object_type_names() {
        for t in ObjectType::ALL {
            assert_eq!(serde_json::to_value(t).unwrap(), Value::String(t.wire_name().into()));
            assert_eq!(ObjectType::from_wire_name(t.wire_name()), Some(t));
        }
        assert_eq!(ObjectType::from_wire_name("StorageSlot"), None);
    }

    #[test]
    fn every_sample_round_trips_and_is_tagged() {
        let all = samples::all();
        assert_eq!(all.len(), ObjectType::ALL.len());
        for obj in all {
            let v = serde_json::to_value(&obj).unwrap();
            let details = v["details"].as_object().unwrap();
            assert_eq!(details.len(), 1);
            assert_eq!(details.keys().next().unwrap(), obj.object_type.wire_name());
            let back: ObjectInfo = serde_json::from_value(v).unwrap();
            assert_eq!(back, obj);
        }
    }

    #[test]
    fn mount_flags_and_modes() {
        let f: MountFlags = serde_json::from_value(json!({"read": true, "write": false, "error_if_unavailable": false,
            "error_if_offline": true, "nowait": false}))
        .unwrap();
        assert!(f.read && f.error_if_offline && !f.write);
        assert_eq!(serde_json::to_value(InventoryMode::Omid).unwrap(), json!("omid"));
        assert_eq!(serde_json::to_value(DriveState::BeingCleaned).unwrap(), json!("being_cleaned"));
    }
}
