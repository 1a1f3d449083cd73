//! The methods rsmd serves, parsed strictly from a [`Call`].
//!
//! Parsing checks the interface, the method name and every parameter's presence and type:
//!
//! - unknown interface → `org.varlink.service.InterfaceNotFound { interface }`;
//! - unknown method of a known interface → `org.varlink.service.MethodNotFound { method }`;
//! - a missing required parameter, a parameter of the wrong type (or out of range for its Rust type), or a
//!   parameter the method does not declare → `org.varlink.service.InvalidParameter { parameter }`;
//! - a streaming-only method called without `"more": true` → `org.varlink.service.ExpectedMore`.
//!
//! `null` counts as absent for optional parameters. Semantic checks (is the session valid, is `options` zero, does
//! the object exist) belong to the daemon's dispatch and produce [`super::NtmsError`]s.
//!
//! [`Method::to_call`] is the inverse, used by the client, so the two ends cannot disagree on names.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use super::envelope::Call;
use super::error::VarlinkError;
use super::names::{NTMS_INTERFACE, SERVICE_INTERFACE};
use super::types::{InventoryMode, MountFlags, ObjectChanges, ObjectType, PoolAction};

/// What `DismountMedia` takes out: a cartridge (by id or barcode) or whatever is in a drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DismountTarget {
    /// The cartridge with this id or barcode (wire parameter `media`).
    Media(String),
    /// The drive with this id (wire parameter `drive`).
    Drive(String),
}

/// A parsed call.
///
/// Every method of `io.rsmd.Ntms` except `OpenSession` takes the `session` handle returned by `OpenSession`;
/// an unknown, closed or foreign handle fails with `InvalidHandle`, and while the daemon is still loading, every
/// method but `GetInfo`, `GetInterfaceDescription` and `CloseSession` may fail with `NotReady`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `org.varlink.service.GetInfo()`: vendor, product, version, url and interfaces
    /// ([`super::types::ServiceInfo`]). No preconditions. No `more`.
    GetInfo,
    /// `org.varlink.service.GetInterfaceDescription(interface)`: the IDL text
    /// ([`super::types::DescriptionReply`]); an interface not served → `InterfaceNotFound`. No `more`.
    GetInterfaceDescription {
        /// The interface name.
        interface: String,
    },
    /// `OpenSession(server, application, options, version)` → [`super::types::OpenSessionReply`].
    ///
    /// `server` absent or this host's name → this daemon; a malformed name → `InvalidComputerName`; another
    /// host → `NoNetwork`. `options` ≠ 0 → `InvalidParameter`. Daemon still loading → `NotReady`. `version`
    /// newer than [`super::PROTOCOL_VERSION`] → `NoInterfaces`. The session belongs to the calling process. No
    /// `more`.
    OpenSession {
        /// The server to reach (`lpServer`).
        server: Option<String>,
        /// The application name (`lpApplication`).
        application: Option<String>,
        /// Reserved options (`dwOptions`), must be 0. An `int` on the wire that must fit in `u32`.
        options: u32,
        /// The client's protocol version; absent means 1.
        version: Option<u32>,
    },
    /// `Bridge(client)` → `()`: sent (oneway) by `rsm bridge` before it relays a remote client's calls: the sessions
    /// this process then opens record `client` (`ssh from ADDRESS`) for the audit log and their requests.
    Bridge {
        /// Where the remote client is (from ssh's `SSH_CONNECTION`).
        client: String,
    },
    /// `CloseSession(session)` → `()`. Cancels the session's queued requests and dismounts nothing: mounted media
    /// stay until dismounted or deferred-dismounted. No `more`.
    CloseSession {
        /// The session handle.
        session: String,
    },
    /// `EnumerateObjects(session, container, object_type)` → [`super::types::EnumerateReply`].
    ///
    /// Objects of `object_type` inside `container` (a library's slots, a pool's media) or everywhere when absent.
    /// An unknown container → `ObjectNotFound`. No `more`. With `limit`, one page: at most `limit` objects after
    /// the object `after` (an id the previous page's `next` gave), and `next` when more follow.
    EnumerateObjects {
        /// The session handle.
        session: String,
        /// Id of the containing object.
        container: Option<String>,
        /// Which type to list.
        object_type: ObjectType,
        /// Page: the objects after this one (the previous page's `next`).
        after: Option<String>,
        /// Page: at most this many objects (1 or more).
        limit: Option<u32>,
    },
    /// `GetObjectInformation(session, object)` → [`super::types::ObjectReply`]. `object` is a GUID, a
    /// cartridge's barcode or a pool's path; unknown → `ObjectNotFound`. No `more`.
    GetObjectInformation {
        /// The session handle.
        session: String,
        /// Id of the object, or a cartridge's barcode.
        object: String,
    },
    /// `MountMedia(session, media, drive, flags, priority, timeout_ms)` → [`super::types::MountReply`].
    ///
    /// Mounts the first available cartridge of `media` (ids or barcodes; at least one) in `drive` or a drive the
    /// daemon picks, and replies once the drive is loaded and ready (or at once with `flags.nowait`). Errors:
    /// `ObjectNotFound`, `MediaUnavailable` (in use and `error_if_unavailable`), `MediaOffline`
    /// (`error_if_offline`), `LibraryOffline`, `DeviceNotAvailable`, `DriveMediaMismatch`,
    /// `UnableToLoadMedium`, `Timeout` (after `timeout_ms`), `Cancelled` (by `CancelLibraryRequest`). No `more`.
    MountMedia {
        /// The session handle.
        session: String,
        /// Candidate cartridges (ids or barcodes), non-empty.
        media: Vec<String>,
        /// Id of the drive to use.
        drive: Option<String>,
        /// Mount options; absent means all false.
        flags: MountFlags,
        /// Priority, -15 to 15; absent means 0. Out-of-range values → `InvalidParameter` from the daemon.
        priority: i32,
        /// How long to wait, in ms; absent means forever.
        timeout_ms: Option<u64>,
        /// An application pool (id or path): a cartridge that is available in Free is allocated into it first
        /// (without it, a Free cartridge is mounted as it is, unallocated).
        pool: Option<String>,
    },
    /// `DismountMedia(session, media | drive, deferred)` → `()`.
    ///
    /// Exactly one of `media` and `drive`. Returns the cartridge to its home slot once the robot put it there;
    /// with `deferred` it stays loaded for the library's deferred-dismount delay and the reply comes at once.
    /// Errors: `ObjectNotFound`, `MediaNotAvailable` (not mounted), `Empty` (drive empty), `AccessDenied`
    /// (mounted by another session). No `more`.
    DismountMedia {
        /// The session handle.
        session: String,
        /// What to dismount.
        target: DismountTarget,
        /// Leave it loaded for the deferred-dismount delay.
        deferred: bool,
        /// Where the cartridge goes (a storage slot or mail slot id; absent: its home slot, or a free one).
        to: Option<String>,
    },
    /// `CancelLibraryRequest(session, request)` → `()`. The request then fails with `Cancelled`; a request
    /// already complete → `InvalidOperation`; unknown → `ObjectNotFound`. No `more`.
    CancelLibraryRequest {
        /// The session handle.
        session: String,
        /// Id of the library request.
        request: String,
    },
    /// `SetRequestPriority(session, request, priority)` → `()`: moves a queued mount or dismount up or down its
    /// library's robot queue (priority first, then age). `InvalidParameter` (priority out of range),
    /// `ObjectNotFound`, `AccessDenied` (another session's request, unless an administrator asks),
    /// `InvalidOperation` (the request has started, finished, or is not a robot job). No `more`.
    SetRequestPriority {
        /// The session handle.
        session: String,
        /// Id of the library request.
        request: String,
        /// The new priority, -15 (lowest) to 15 (highest).
        priority: i32,
    },
    /// `InventoryLibrary(session, library, mode)` → [`super::types::RequestReply`]: queues an inventory and
    /// replies with its request id at once. `InvalidLibrary` / `LibraryOffline` when it cannot run. No `more`.
    InventoryLibrary {
        /// The session handle.
        session: String,
        /// Id of the library.
        library: String,
        /// How to read it; absent means `default`.
        mode: InventoryMode,
    },
    /// `WaitForNotification(session, object_type)` → a stream of [`super::types::Notification`]s, each with
    /// `continues: true`, until the session closes. Requires `more` (else `ExpectedMore`).
    WaitForNotification {
        /// The session handle.
        session: String,
        /// Only objects of this type; absent means all.
        object_type: Option<ObjectType>,
    },
    /// `EjectMedia(session, media, media_list, error_if_full)` → [`super::types::RequestReply`]: moves the
    /// cartridges (`media`, then `media_list`) to free mail slots, one cycle of the port; more than fit wait for an
    /// operator to empty the slots. Mounted media → `UnableToEjectMountedMedia`; with `error_if_full`, more than
    /// the free slots → `IePortFull`. No `more`.
    EjectMedia {
        /// The session handle.
        session: String,
        /// Ids or barcodes of the cartridges (wire: `media` and `media_list`), at least one.
        media: Vec<String>,
        /// Fail at once when they do not all fit in the free mail slots.
        error_if_full: bool,
    },
    /// `AccessLibraryDoor(session, library, inventory)` → [`super::types::RequestReply`] once the door is
    /// unlocked; when it closes the library is read (`fast`, the default, or `full`). `InvalidLibrary`,
    /// `LibraryOffline`, `AccessDenied`, `Busy` (being opened already). No `more`.
    AccessLibraryDoor {
        /// The session handle.
        session: String,
        /// Id of the library.
        library: String,
        /// How to read the library once the door is closed.
        inventory: InventoryMode,
    },
    /// `CleanDrive(session, drive)` → [`super::types::RequestReply`] once the drive is clean. `ObjectNotFound`,
    /// `AccessDenied` (no control right), `Busy` (a cleaning of it is queued), `DeviceNotAvailable` (the drive kept
    /// the cleaner). No `more`.
    CleanDrive {
        /// The session handle.
        session: String,
        /// Id of the drive.
        drive: String,
    },
    /// `MoveMedia(session, media, destination)` → [`super::types::RequestReply`] once the cartridge is in the
    /// destination (an empty storage or mail slot of its library, by id). `MediaNotAvailable` (in a drive or being
    /// moved), `InvalidParameter` (destination full or in another library), `AccessDenied`. No `more`.
    MoveMedia {
        /// The session handle.
        session: String,
        /// Id or barcode of the cartridge.
        media: String,
        /// Id of the destination slot.
        destination: String,
    },
    /// `SubmitOperatorRequest(session, kind, text, object)` → `(request, number)`: a request to the operators.
    SubmitOperatorRequest {
        /// The session handle.
        session: String,
        /// What it asks.
        kind: super::types::OpRequestKind,
        /// The text shown to the operator.
        text: String,
        /// Id (or barcode, pool path) of the object it concerns.
        object: Option<String>,
    },
    /// `WaitForOperatorRequest(session, request, timeout_ms)` → `(state)` once answered; `RequestRefused`,
    /// `Cancelled`, `Timeout`. No `more`.
    WaitForOperatorRequest {
        /// The session handle.
        session: String,
        /// Id or number of the operator request.
        request: String,
        /// How long to wait; absent means forever.
        timeout_ms: Option<u64>,
    },
    /// `SatisfyOperatorRequest(session, request)` → `()`.
    SatisfyOperatorRequest {
        /// The session handle.
        session: String,
        /// Id or number of the operator request.
        request: String,
    },
    /// `RefuseOperatorRequest(session, request, reason)` → `()`.
    RefuseOperatorRequest {
        /// The session handle.
        session: String,
        /// Id or number of the operator request.
        request: String,
        /// Why, for the submitter.
        reason: Option<String>,
    },
    /// `CancelOperatorRequest(session, request)` → `()`.
    CancelOperatorRequest {
        /// The session handle.
        session: String,
        /// Id or number of the operator request.
        request: String,
    },
    /// `InjectMedia(session, library)` → [`super::types::RequestReply`]: takes every cartridge in the library's
    /// mail slots into free storage slots. Library full → `LibraryFull`. No `more`.
    InjectMedia {
        /// The session handle.
        session: String,
        /// Id of the library.
        library: String,
    },

    /// `CreateMediaPool(session, name, media_type, action)` → [`super::types::CreatePoolReply`]: opens or creates
    /// an application pool by path (`Bacula\Full`; the parent must exist). `AlreadyExists` (create_new),
    /// `ObjectNotFound` (open_existing), `InvalidName`, `InvalidMediaPool` (a system pool's name, a parent that
    /// holds media), `AccessDenied`. No `more`.
    CreateMediaPool {
        /// The session handle.
        session: String,
        /// The pool's path.
        name: String,
        /// The media type it holds (`LTO-6`); absent: the type of its first cartridge.
        media_type: Option<String>,
        /// What to do when it exists or not; absent means `open_always`.
        action: PoolAction,
    },
    /// `DeleteMediaPool(session, pool)` → `()`: only an empty application pool. `NotEmpty`,
    /// `InvalidMediaPool`, `AccessDenied`. No `more`.
    DeleteMediaPool {
        /// The session handle.
        session: String,
        /// Id or path of the pool.
        pool: String,
    },
    /// `MoveToMediaPool(session, media, pool)` → `()` with RSM's rules (allocated media never to Free, only
    /// import media into Import, Import/Unrecognized media only to Free). `InvalidState`, `MediaIncompatible`,
    /// `Busy` (mounted), `InvalidMediaPool`, `AccessDenied`. No `more`.
    MoveToMediaPool {
        /// The session handle.
        session: String,
        /// Id or barcode of the cartridge.
        media: String,
        /// Id or path of the destination pool (`Free` means Free of the cartridge's type).
        pool: String,
    },
    /// `AllocateMedia(session, pool, media, new, error_if_unavailable, timeout_ms)` →
    /// [`super::types::AllocateReply`]. Takes the given cartridge or any available one of the pool (drawing from
    /// Free when the pool allows); waits up to `timeout_ms` for one to become available unless
    /// `error_if_unavailable`. `MediaUnavailable`, `Timeout`, `Cancelled`, `InvalidMediaPool`, `AccessDenied`.
    AllocateMedia {
        /// The session handle.
        session: String,
        /// Id or path of the application pool.
        pool: String,
        /// Id or barcode of a given cartridge.
        media: Option<String>,
        /// The whole cartridge (all sides; a tape has one, so the same as without).
        new: bool,
        /// Fail at once when nothing is available.
        error_if_unavailable: bool,
        /// How long to wait for a cartridge, in ms; absent means forever.
        timeout_ms: Option<u64>,
    },
    /// `DeallocateMedia(session, logical_media)` → `()`. `InvalidMedia`, `Busy` (mounted), `AccessDenied`.
    DeallocateMedia {
        /// The session handle.
        session: String,
        /// The logical media id.
        logical_media: String,
    },
    /// `SwapMedia(session, first, second)` → `()`: two logical media of one pool exchange their cartridges.
    SwapMedia {
        /// The session handle.
        session: String,
        /// A logical media id.
        first: String,
        /// Another logical media id.
        second: String,
    },
    /// `SetMediaComplete(session, logical_media)` → `()`: allocated → complete (never written again).
    SetMediaComplete {
        /// The session handle.
        session: String,
        /// The logical media id.
        logical_media: String,
    },
    /// `DecommissionMedia(session, media)` → `()`: available → decommissioned.
    DecommissionMedia {
        /// The session handle.
        session: String,
        /// Id or barcode of the cartridge.
        media: String,
    },
    /// `DeleteMedia(session, media)` → `()`: forgets an offline cartridge no application holds.
    DeleteMedia {
        /// The session handle.
        session: String,
        /// Id or barcode of the cartridge.
        media: String,
    },
    /// `EnableObject(session, object)` → `()`: a library, drive or cartridge is used again.
    EnableObject {
        /// The session handle.
        session: String,
        /// Id (or barcode) of the object.
        object: String,
    },
    /// `DisableObject(session, object)` → `()`: a disabled drive is never chosen, a disabled cartridge never
    /// mounted or allocated, a disabled library takes no new work.
    DisableObject {
        /// The session handle.
        session: String,
        /// Id (or barcode) of the object.
        object: String,
    },
    /// `SetObjectInformation(session, object, version, changes)` → [`super::types::ObjectReply`]: changes the
    /// named fields of a cartridge or pool; with `version`, only if nobody changed the object since it was read
    /// (`RevisionMismatch` otherwise).
    SetObjectInformation {
        /// The session handle.
        session: String,
        /// Id, path or barcode of the object.
        object: String,
        /// The version read.
        version: Option<u64>,
        /// What to change.
        changes: ObjectChanges,
    },
}

/// Every method of `io.rsmd.Ntms`, by short name.
pub const NTMS_METHODS: &[&str] = &[
    "OpenSession",
    "Bridge",
    "CloseSession",
    "EnumerateObjects",
    "GetObjectInformation",
    "MountMedia",
    "DismountMedia",
    "CancelLibraryRequest",
    "SetRequestPriority",
    "InventoryLibrary",
    "WaitForNotification",
    "EjectMedia",
    "InjectMedia",
    "AccessLibraryDoor",
    "MoveMedia",
    "CleanDrive",
    "SubmitOperatorRequest",
    "WaitForOperatorRequest",
    "SatisfyOperatorRequest",
    "RefuseOperatorRequest",
    "CancelOperatorRequest",
    "CreateMediaPool",
    "DeleteMediaPool",
    "MoveToMediaPool",
    "AllocateMedia",
    "DeallocateMedia",
    "SwapMedia",
    "SetMediaComplete",
    "DecommissionMedia",
    "DeleteMedia",
    "EnableObject",
    "DisableObject",
    "SetObjectInformation",
];

/// Reads parameters and remembers which names the method declares.
struct Params<'a> {
    map: &'a Map<String, Value>,
    declared: Vec<&'static str>,
}

fn invalid(name: &str) -> VarlinkError {
    VarlinkError::invalid_parameter(name)
}

impl<'a> Params<'a> {
    fn new(map: &'a Map<String, Value>) -> Params<'a> {
        Params { map, declared: Vec::new() }
    }

    /// The value, with `null` treated as absent.
    fn get(&mut self, name: &'static str) -> Option<&'a Value> {
        self.declared.push(name);
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn opt_string(&mut self, name: &'static str) -> Result<Option<String>, VarlinkError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(name)),
        }
    }

    fn string(&mut self, name: &'static str) -> Result<String, VarlinkError> {
        self.opt_string(name)?.ok_or_else(|| invalid(name))
    }

    fn opt_int<T: TryFrom<i64>>(&mut self, name: &'static str) -> Result<Option<T>, VarlinkError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.as_i64().and_then(|i| T::try_from(i).ok()).map(Some).ok_or_else(|| invalid(name)),
        }
    }

    fn int<T: TryFrom<i64>>(&mut self, name: &'static str) -> Result<T, VarlinkError> {
        self.opt_int(name)?.ok_or_else(|| invalid(name))
    }

    fn opt_bool(&mut self, name: &'static str) -> Result<Option<bool>, VarlinkError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(invalid(name)),
        }
    }

    fn string_array(&mut self, name: &'static str) -> Result<Vec<String>, VarlinkError> {
        match self.get(name) {
            Some(Value::Array(items)) if !items.is_empty() => {
                items.iter().map(|v| v.as_str().map(str::to_owned).ok_or_else(|| invalid(name))).collect()
            }
            _ => Err(invalid(name)),
        }
    }

    /// An optional array of strings (absent or `null`: empty).
    fn opt_string_array(&mut self, name: &'static str) -> Result<Vec<String>, VarlinkError> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                items.iter().map(|v| v.as_str().map(str::to_owned).ok_or_else(|| invalid(name))).collect()
            }
            Some(_) => Err(invalid(name)),
        }
    }

    /// A Varlink enum value (a string naming a serde variant).
    fn opt_enum<T: DeserializeOwned>(&mut self, name: &'static str) -> Result<Option<T>, VarlinkError> {
        match self.get(name) {
            None => Ok(None),
            Some(v @ Value::String(_)) => serde_json::from_value(v.clone()).map(Some).map_err(|_| invalid(name)),
            Some(_) => Err(invalid(name)),
        }
    }

    fn flags(&mut self, name: &'static str) -> Result<MountFlags, VarlinkError> {
        let Some(value) = self.get(name) else {
            return Ok(MountFlags::default());
        };
        let map = value.as_object().ok_or_else(|| invalid(name))?;
        let mut inner = Params::new(map);
        let mut read = || -> Result<MountFlags, VarlinkError> {
            let flags = MountFlags {
                read: inner.opt_bool("read")?.unwrap_or(false),
                write: inner.opt_bool("write")?.unwrap_or(false),
                error_if_unavailable: inner.opt_bool("error_if_unavailable")?.unwrap_or(false),
                error_if_offline: inner.opt_bool("error_if_offline")?.unwrap_or(false),
                nowait: inner.opt_bool("nowait")?.unwrap_or(false),
            };
            Ok(flags)
        };
        let flags = read().map_err(|_| invalid(name))?;
        inner.finish().map_err(|_| invalid(name))?;
        Ok(flags)
    }

    /// SetObjectInformation's field changes: an object of known members with the right types.
    fn changes(&mut self, name: &'static str) -> Result<ObjectChanges, VarlinkError> {
        match self.get(name) {
            Some(v @ Value::Object(_)) => serde_json::from_value(v.clone()).map_err(|_| invalid(name)),
            _ => Err(invalid(name)),
        }
    }

    /// Fails on the first parameter the method does not declare.
    fn finish(self) -> Result<(), VarlinkError> {
        match self.map.keys().find(|k| !self.declared.contains(&k.as_str())) {
            Some(key) => Err(invalid(key)),
            None => Ok(()),
        }
    }
}

fn put<T: Serialize>(map: &mut Map<String, Value>, name: &str, value: T) {
    // Serialising these plain types (strings, integers, bools, enums, flag structs) cannot fail.
    map.insert(name.to_owned(), serde_json::to_value(value).unwrap_or(Value::Null));
}

fn put_opt<T: Serialize>(map: &mut Map<String, Value>, name: &str, value: Option<T>) {
    if let Some(v) = value {
        put(map, name, v);
    }
}

impl Method {
    /// Parses a call. See the module documentation for the errors.
    pub fn parse(call: &Call) -> Result<Method, VarlinkError> {
        let (interface, name) = call.method.rsplit_once('.').unwrap_or(("", call.method.as_str()));
        let not_found = || VarlinkError::MethodNotFound { method: call.method.clone() };
        let mut p = Params::new(&call.parameters);
        let method = match interface {
            SERVICE_INTERFACE => match name {
                "GetInfo" => Method::GetInfo,
                "GetInterfaceDescription" => Method::GetInterfaceDescription { interface: p.string("interface")? },
                _ => return Err(not_found()),
            },
            NTMS_INTERFACE => match name {
                "OpenSession" => Method::OpenSession {
                    server: p.opt_string("server")?,
                    application: p.opt_string("application")?,
                    options: p.int("options")?,
                    version: p.opt_int("version")?,
                },
                "CloseSession" => Method::CloseSession { session: p.string("session")? },
                "Bridge" => Method::Bridge { client: p.string("client")? },
                "EnumerateObjects" => Method::EnumerateObjects {
                    session: p.string("session")?,
                    container: p.opt_string("container")?,
                    object_type: p.opt_enum("object_type")?.ok_or_else(|| invalid("object_type"))?,
                    after: p.opt_string("after")?,
                    limit: match p.opt_int::<u32>("limit")? {
                        Some(0) => return Err(invalid("limit")),
                        l => l,
                    },
                },
                "GetObjectInformation" => {
                    Method::GetObjectInformation { session: p.string("session")?, object: p.string("object")? }
                }
                "MountMedia" => Method::MountMedia {
                    session: p.string("session")?,
                    media: p.string_array("media")?,
                    drive: p.opt_string("drive")?,
                    flags: p.flags("flags")?,
                    priority: p.opt_int("priority")?.unwrap_or(0),
                    timeout_ms: p.opt_int("timeout_ms")?,
                    pool: p.opt_string("pool")?,
                },
                "DismountMedia" => {
                    let session = p.string("session")?;
                    let target = match (p.opt_string("media")?, p.opt_string("drive")?) {
                        (Some(m), None) => DismountTarget::Media(m),
                        (None, Some(d)) => DismountTarget::Drive(d),
                        (None, None) => return Err(invalid("media")),
                        (Some(_), Some(_)) => return Err(invalid("drive")),
                    };
                    Method::DismountMedia {
                        session,
                        target,
                        deferred: p.opt_bool("deferred")?.unwrap_or(false),
                        to: p.opt_string("to")?,
                    }
                }
                "CancelLibraryRequest" => {
                    Method::CancelLibraryRequest { session: p.string("session")?, request: p.string("request")? }
                }
                "SetRequestPriority" => Method::SetRequestPriority {
                    session: p.string("session")?,
                    request: p.string("request")?,
                    priority: p.int("priority")?,
                },
                "InventoryLibrary" => Method::InventoryLibrary {
                    session: p.string("session")?,
                    library: p.string("library")?,
                    mode: p.opt_enum("mode")?.unwrap_or_default(),
                },
                "WaitForNotification" => Method::WaitForNotification {
                    session: p.string("session")?,
                    object_type: p.opt_enum("object_type")?,
                },
                "EjectMedia" => {
                    let session = p.string("session")?;
                    let mut media = vec![p.string("media")?];
                    media.extend(p.opt_string_array("media_list")?);
                    Method::EjectMedia { session, media, error_if_full: p.opt_bool("error_if_full")?.unwrap_or(false) }
                }
                "AccessLibraryDoor" => Method::AccessLibraryDoor {
                    session: p.string("session")?,
                    library: p.string("library")?,
                    inventory: p.opt_enum("inventory")?.unwrap_or_default(),
                },
                "MoveMedia" => Method::MoveMedia {
                    session: p.string("session")?,
                    media: p.string("media")?,
                    destination: p.string("destination")?,
                },
                "CleanDrive" => Method::CleanDrive { session: p.string("session")?, drive: p.string("drive")? },
                "SubmitOperatorRequest" => Method::SubmitOperatorRequest {
                    session: p.string("session")?,
                    kind: p.opt_enum("kind")?.ok_or_else(|| invalid("kind"))?,
                    text: p.string("text")?,
                    object: p.opt_string("object")?,
                },
                "WaitForOperatorRequest" => Method::WaitForOperatorRequest {
                    session: p.string("session")?,
                    request: p.string("request")?,
                    timeout_ms: p.opt_int("timeout_ms")?,
                },
                "SatisfyOperatorRequest" => {
                    Method::SatisfyOperatorRequest { session: p.string("session")?, request: p.string("request")? }
                }
                "RefuseOperatorRequest" => Method::RefuseOperatorRequest {
                    session: p.string("session")?,
                    request: p.string("request")?,
                    reason: p.opt_string("reason")?,
                },
                "CancelOperatorRequest" => {
                    Method::CancelOperatorRequest { session: p.string("session")?, request: p.string("request")? }
                }
                "InjectMedia" => Method::InjectMedia { session: p.string("session")?, library: p.string("library")? },
                "CreateMediaPool" => Method::CreateMediaPool {
                    session: p.string("session")?,
                    name: p.string("name")?,
                    media_type: p.opt_string("media_type")?,
                    action: p.opt_enum("action")?.unwrap_or_default(),
                },
                "DeleteMediaPool" => Method::DeleteMediaPool { session: p.string("session")?, pool: p.string("pool")? },
                "MoveToMediaPool" => Method::MoveToMediaPool {
                    session: p.string("session")?,
                    media: p.string("media")?,
                    pool: p.string("pool")?,
                },
                "AllocateMedia" => Method::AllocateMedia {
                    session: p.string("session")?,
                    pool: p.string("pool")?,
                    media: p.opt_string("media")?,
                    new: p.opt_bool("new")?.unwrap_or(false),
                    error_if_unavailable: p.opt_bool("error_if_unavailable")?.unwrap_or(false),
                    timeout_ms: p.opt_int("timeout_ms")?,
                },
                "DeallocateMedia" => {
                    Method::DeallocateMedia { session: p.string("session")?, logical_media: p.string("logical_media")? }
                }
                "SwapMedia" => Method::SwapMedia {
                    session: p.string("session")?,
                    first: p.string("first")?,
                    second: p.string("second")?,
                },
                "SetMediaComplete" => Method::SetMediaComplete {
                    session: p.string("session")?,
                    logical_media: p.string("logical_media")?,
                },
                "DecommissionMedia" => {
                    Method::DecommissionMedia { session: p.string("session")?, media: p.string("media")? }
                }
                "DeleteMedia" => Method::DeleteMedia { session: p.string("session")?, media: p.string("media")? },
                "EnableObject" => Method::EnableObject { session: p.string("session")?, object: p.string("object")? },
                "DisableObject" => Method::DisableObject { session: p.string("session")?, object: p.string("object")? },
                "SetObjectInformation" => Method::SetObjectInformation {
                    session: p.string("session")?,
                    object: p.string("object")?,
                    version: p.opt_int("version")?,
                    changes: p.changes("changes")?,
                },
                _ => return Err(not_found()),
            },
            _ => return Err(VarlinkError::InterfaceNotFound { interface: interface.to_owned() }),
        };
        p.finish()?;
        if method.requires_more() && !call.more {
            return Err(VarlinkError::ExpectedMore);
        }
        Ok(method)
    }

    /// The fully qualified method name.
    pub fn full_name(&self) -> String {
        let interface = match self {
            Method::GetInfo | Method::GetInterfaceDescription { .. } => SERVICE_INTERFACE,
            _ => NTMS_INTERFACE,
        };
        format!("{interface}.{}", self.name())
    }

    /// The short method name (`MountMedia`).
    pub fn name(&self) -> &'static str {
        match self {
            Method::GetInfo => "GetInfo",
            Method::GetInterfaceDescription { .. } => "GetInterfaceDescription",
            Method::OpenSession { .. } => "OpenSession",
            Method::CloseSession { .. } => "CloseSession",
            Method::Bridge { .. } => "Bridge",
            Method::EnumerateObjects { .. } => "EnumerateObjects",
            Method::GetObjectInformation { .. } => "GetObjectInformation",
            Method::MountMedia { .. } => "MountMedia",
            Method::DismountMedia { .. } => "DismountMedia",
            Method::CancelLibraryRequest { .. } => "CancelLibraryRequest",
            Method::SetRequestPriority { .. } => "SetRequestPriority",
            Method::InventoryLibrary { .. } => "InventoryLibrary",
            Method::WaitForNotification { .. } => "WaitForNotification",
            Method::EjectMedia { .. } => "EjectMedia",
            Method::CleanDrive { .. } => "CleanDrive",
            Method::MoveMedia { .. } => "MoveMedia",
            Method::AccessLibraryDoor { .. } => "AccessLibraryDoor",
            Method::SubmitOperatorRequest { .. } => "SubmitOperatorRequest",
            Method::WaitForOperatorRequest { .. } => "WaitForOperatorRequest",
            Method::SatisfyOperatorRequest { .. } => "SatisfyOperatorRequest",
            Method::RefuseOperatorRequest { .. } => "RefuseOperatorRequest",
            Method::CancelOperatorRequest { .. } => "CancelOperatorRequest",
            Method::InjectMedia { .. } => "InjectMedia",
            Method::CreateMediaPool { .. } => "CreateMediaPool",
            Method::DeleteMediaPool { .. } => "DeleteMediaPool",
            Method::MoveToMediaPool { .. } => "MoveToMediaPool",
            Method::AllocateMedia { .. } => "AllocateMedia",
            Method::DeallocateMedia { .. } => "DeallocateMedia",
            Method::SwapMedia { .. } => "SwapMedia",
            Method::SetMediaComplete { .. } => "SetMediaComplete",
            Method::DecommissionMedia { .. } => "DecommissionMedia",
            Method::DeleteMedia { .. } => "DeleteMedia",
            Method::EnableObject { .. } => "EnableObject",
            Method::DisableObject { .. } => "DisableObject",
            Method::SetObjectInformation { .. } => "SetObjectInformation",
        }
    }

    /// Whether the method streams replies and must be called with `more`.
    pub fn requires_more(&self) -> bool {
        matches!(self, Method::WaitForNotification { .. })
    }

    /// The session handle the call carries, if the method takes one.
    pub fn session(&self) -> Option<&str> {
        match self {
            Method::GetInfo
            | Method::GetInterfaceDescription { .. }
            | Method::OpenSession { .. }
            | Method::Bridge { .. } => None,
            Method::CloseSession { session }
            | Method::EnumerateObjects { session, .. }
            | Method::GetObjectInformation { session, .. }
            | Method::MountMedia { session, .. }
            | Method::DismountMedia { session, .. }
            | Method::CancelLibraryRequest { session, .. }
            | Method::SetRequestPriority { session, .. }
            | Method::InventoryLibrary { session, .. }
            | Method::WaitForNotification { session, .. }
            | Method::EjectMedia { session, .. }
            | Method::CleanDrive { session, .. }
            | Method::MoveMedia { session, .. }
            | Method::AccessLibraryDoor { session, .. }
            | Method::SubmitOperatorRequest { session, .. }
            | Method::WaitForOperatorRequest { session, .. }
            | Method::SatisfyOperatorRequest { session, .. }
            | Method::RefuseOperatorRequest { session, .. }
            | Method::CancelOperatorRequest { session, .. }
            | Method::InjectMedia { session, .. }
            | Method::CreateMediaPool { session, .. }
            | Method::DeleteMediaPool { session, .. }
            | Method::MoveToMediaPool { session, .. }
            | Method::AllocateMedia { session, .. }
            | Method::DeallocateMedia { session, .. }
            | Method::SwapMedia { session, .. }
            | Method::SetMediaComplete { session, .. }
            | Method::DecommissionMedia { session, .. }
            | Method::DeleteMedia { session, .. }
            | Method::EnableObject { session, .. }
            | Method::DisableObject { session, .. }
            | Method::SetObjectInformation { session, .. } => Some(session),
        }
    }

    /// The call that [`Method::parse`] turns back into `self` (with `more` set for streaming methods). Absent
    /// optionals and defaults are left out.
    pub fn to_call(&self) -> Call {
        let mut m = Map::new();
        match self {
            Method::GetInfo => {}
            Method::GetInterfaceDescription { interface } => put(&mut m, "interface", interface),
            Method::OpenSession { server, application, options, version } => {
                put_opt(&mut m, "server", server.as_ref());
                put_opt(&mut m, "application", application.as_ref());
                put(&mut m, "options", options);
                put_opt(&mut m, "version", *version);
            }
            Method::CloseSession { session } => put(&mut m, "session", session),
            Method::Bridge { client } => put(&mut m, "client", client),
            Method::EnumerateObjects { session, container, object_type, after, limit } => {
                put(&mut m, "session", session);
                put_opt(&mut m, "container", container.as_ref());
                put(&mut m, "object_type", object_type);
                put_opt(&mut m, "after", after.as_ref());
                put_opt(&mut m, "limit", *limit);
            }
            Method::GetObjectInformation { session, object } => {
                put(&mut m, "session", session);
                put(&mut m, "object", object);
            }
            Method::MountMedia { session, media, drive, flags, priority, timeout_ms, pool } => {
                put(&mut m, "session", session);
                put_opt(&mut m, "pool", pool.as_ref());
                put(&mut m, "media", media);
                put_opt(&mut m, "drive", drive.as_ref());
                if *flags != MountFlags::default() {
                    put(&mut m, "flags", flags);
                }
                if *priority != 0 {
                    put(&mut m, "priority", priority);
                }
                put_opt(&mut m, "timeout_ms", *timeout_ms);
            }
            Method::DismountMedia { session, target, deferred, to } => {
                put_opt(&mut m, "to", to.as_ref());
                put(&mut m, "session", session);
                match target {
                    DismountTarget::Media(media) => put(&mut m, "media", media),
                    DismountTarget::Drive(drive) => put(&mut m, "drive", drive),
                }
                if *deferred {
                    put(&mut m, "deferred", true);
                }
            }
            Method::CancelLibraryRequest { session, request } => {
                put(&mut m, "session", session);
                put(&mut m, "request", request);
            }
            Method::SetRequestPriority { session, request, priority } => {
                put(&mut m, "session", session);
                put(&mut m, "request", request);
                put(&mut m, "priority", priority);
            }
            Method::InventoryLibrary { session, library, mode } => {
                put(&mut m, "session", session);
                put(&mut m, "library", library);
                if *mode != InventoryMode::Default {
                    put(&mut m, "mode", mode);
                }
            }
            Method::WaitForNotification { session, object_type } => {
                put(&mut m, "session", session);
                put_opt(&mut m, "object_type", *object_type);
            }
            Method::EjectMedia { session, media, error_if_full } => {
                put(&mut m, "session", session);
                put_opt(&mut m, "media", media.first());
                if media.len() > 1 {
                    put(&mut m, "media_list", &media[1..]);
                }
                if *error_if_full {
                    put(&mut m, "error_if_full", true);
                }
            }
            Method::AccessLibraryDoor { session, library, inventory } => {
                put(&mut m, "session", session);
                put(&mut m, "library", library);
                if *inventory != InventoryMode::Default {
                    put(&mut m, "inventory", inventory);
                }
            }
            Method::MoveMedia { session, media, destination } => {
                put(&mut m, "session", session);
                put(&mut m, "media", media);
                put(&mut m, "destination", destination);
            }
            Method::CleanDrive { session, drive } => {
                put(&mut m, "session", session);
                put(&mut m, "drive", drive);
            }
            Method::SubmitOperatorRequest { session, kind, text, object } => {
                put(&mut m, "session", session);
                put(&mut m, "kind", kind);
                put(&mut m, "text", text);
                put_opt(&mut m, "object", object.as_ref());
            }
            Method::WaitForOperatorRequest { session, request, timeout_ms } => {
                put(&mut m, "session", session);
                put(&mut m, "request", request);
                put_opt(&mut m, "timeout_ms", *timeout_ms);
            }
            Method::SatisfyOperatorRequest { session, request }
            | Method::CancelOperatorRequest { session, request } => {
                put(&mut m, "session", session);
                put(&mut m, "request", request);
            }
            Method::RefuseOperatorRequest { session, request, reason } => {
                put(&mut m, "session", session);
                put(&mut m, "request", request);
                put_opt(&mut m, "reason", reason.as_ref());
            }
            Method::InjectMedia { session, library } => {
                put(&mut m, "session", session);
                put(&mut m, "library", library);
            }
            Method::CreateMediaPool { session, name, media_type, action } => {
                put(&mut m, "session", session);
                put(&mut m, "name", name);
                put_opt(&mut m, "media_type", media_type.as_ref());
                if *action != PoolAction::default() {
                    put(&mut m, "action", action);
                }
            }
            Method::DeleteMediaPool { session, pool } => {
                put(&mut m, "session", session);
                put(&mut m, "pool", pool);
            }
            Method::MoveToMediaPool { session, media, pool } => {
                put(&mut m, "session", session);
                put(&mut m, "media", media);
                put(&mut m, "pool", pool);
            }
            Method::AllocateMedia { session, pool, media, new, error_if_unavailable, timeout_ms } => {
                put(&mut m, "session", session);
                put(&mut m, "pool", pool);
                put_opt(&mut m, "media", media.as_ref());
                if *new {
                    put(&mut m, "new", true);
                }
                if *error_if_unavailable {
                    put(&mut m, "error_if_unavailable", true);
                }
                put_opt(&mut m, "timeout_ms", *timeout_ms);
            }
            Method::DeallocateMedia { session, logical_media }
            | Method::SetMediaComplete { session, logical_media } => {
                put(&mut m, "session", session);
                put(&mut m, "logical_media", logical_media);
            }
            Method::SwapMedia { session, first, second } => {
                put(&mut m, "session", session);
                put(&mut m, "first", first);
                put(&mut m, "second", second);
            }
            Method::DecommissionMedia { session, media } | Method::DeleteMedia { session, media } => {
                put(&mut m, "session", session);
                put(&mut m, "media", media);
            }
            Method::EnableObject { session, object } | Method::DisableObject { session, object } => {
                put(&mut m, "session", session);
                put(&mut m, "object", object);
            }
            Method::SetObjectInformation { session, object, version, changes } => {
                put(&mut m, "session", session);
                put(&mut m, "object", object);
                put_opt(&mut m, "version", *version);
                put(&mut m, "changes", changes);
            }
        }
        let mut call = Call::new(self.full_name(), m);
        call.more = self.requires_more();
        call
    }
}

#[cfg(test)]
pub(crate) mod samples {
    //! One value of every method with every optional parameter set, for round trips and the IDL check.
    use super::*;

    pub(crate) fn all() -> Vec<Method> {
        let s = || "sess".to_owned();
        vec![
            Method::GetInfo,
            Method::GetInterfaceDescription { interface: "io.rsmd.Ntms".into() },
            Method::OpenSession {
                server: Some("host".into()),
                application: Some("bacula".into()),
                options: 0,
                version: Some(1),
            },
            Method::CloseSession { session: s() },
            Method::Bridge { client: "ssh from 192.0.2.7".into() },
            Method::EnumerateObjects {
                session: s(),
                container: Some("lib".into()),
                object_type: ObjectType::StorageSlot,
                after: None,
                limit: None,
            },
            Method::EnumerateObjects {
                session: s(),
                container: None,
                object_type: ObjectType::PhysicalMedia,
                after: Some("x".into()),
                limit: Some(500),
            },
            Method::GetObjectInformation { session: s(), object: "ABC001L6".into() },
            Method::MountMedia {
                session: s(),
                media: vec!["ABC001L6".into(), "ABC002L6".into()],
                drive: Some("d".into()),
                flags: MountFlags {
                    read: true,
                    write: true,
                    error_if_unavailable: true,
                    error_if_offline: true,
                    nowait: true,
                },
                priority: -3,
                timeout_ms: Some(60_000),
                pool: Some("Bacula".into()),
            },
            Method::DismountMedia { session: s(), target: DismountTarget::Media("m".into()), deferred: true, to: None },
            Method::DismountMedia {
                session: s(),
                target: DismountTarget::Drive("d".into()),
                deferred: false,
                to: Some("slot".into()),
            },
            Method::CancelLibraryRequest { session: s(), request: "r".into() },
            Method::SetRequestPriority { session: s(), request: "r".into(), priority: -15 },
            Method::InventoryLibrary { session: s(), library: "l".into(), mode: InventoryMode::Full },
            Method::WaitForNotification { session: s(), object_type: Some(ObjectType::Drive) },
            Method::EjectMedia { session: s(), media: vec!["m".into()], error_if_full: false },
            Method::EjectMedia { session: s(), media: vec!["m".into(), "n".into()], error_if_full: true },
            Method::SubmitOperatorRequest {
                session: s(),
                kind: crate::proto::types::OpRequestKind::Message,
                text: "t".into(),
                object: Some("o".into()),
            },
            Method::WaitForOperatorRequest { session: s(), request: "1".into(), timeout_ms: Some(5) },
            Method::CleanDrive { session: s(), drive: "d".into() },
            Method::MoveMedia { session: s(), media: "m".into(), destination: "d".into() },
            Method::AccessLibraryDoor { session: s(), library: "l".into(), inventory: InventoryMode::Full },
            Method::SatisfyOperatorRequest { session: s(), request: "1".into() },
            Method::RefuseOperatorRequest { session: s(), request: "1".into(), reason: Some("r".into()) },
            Method::CancelOperatorRequest { session: s(), request: "1".into() },
            Method::InjectMedia { session: s(), library: "l".into() },
            Method::CreateMediaPool {
                session: s(),
                name: "Bacula\\Full".into(),
                media_type: Some("LTO-6".into()),
                action: PoolAction::CreateNew,
            },
            Method::DeleteMediaPool { session: s(), pool: "p".into() },
            Method::MoveToMediaPool { session: s(), media: "m".into(), pool: "p".into() },
            Method::AllocateMedia {
                session: s(),
                pool: "p".into(),
                media: Some("m".into()),
                new: true,
                error_if_unavailable: true,
                timeout_ms: Some(5),
            },
            Method::DeallocateMedia { session: s(), logical_media: "lm".into() },
            Method::SwapMedia { session: s(), first: "a".into(), second: "b".into() },
            Method::SetMediaComplete { session: s(), logical_media: "lm".into() },
            Method::DecommissionMedia { session: s(), media: "m".into() },
            Method::DeleteMedia { session: s(), media: "m".into() },
            Method::EnableObject { session: s(), object: "o".into() },
            Method::DisableObject { session: s(), object: "o".into() },
            Method::SetObjectInformation {
                session: s(),
                object: "o".into(),
                version: Some(4),
                changes: ObjectChanges {
                    description: Some("d".into()),
                    name: Some("n".into()),
                    draw_from_free: Some(true),
                    return_to_free: Some(false),
                    max_allocations: Some(3),
                    media_type: Some("LTO-6".into()),
                },
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(method: &str, params: Value) -> Call {
        Call::new(method, params.as_object().cloned().unwrap_or_default())
    }

    fn parse(method: &str, params: Value) -> Result<Method, VarlinkError> {
        Method::parse(&call(method, params))
    }

    fn bad(parameter: &str) -> Result<Method, VarlinkError> {
        Err(VarlinkError::invalid_parameter(parameter))
    }

    #[test]
    fn every_sample_round_trips() {
        for m in samples::all() {
            let c = m.to_call();
            let text = String::from_utf8(c.encode()[..c.encode().len() - 1].to_vec()).unwrap();
            let back = Method::parse(&Call::parse(&text).unwrap()).unwrap();
            assert_eq!(back, m);
        }
    }

    #[test]
    fn every_ntms_method_has_a_sample() {
        let samples = samples::all();
        for name in NTMS_METHODS {
            assert!(samples.iter().any(|m| m.name() == *name), "{name}");
        }
    }

    #[test]
    fn defaults_apply_when_optionals_are_absent_or_null() {
        assert_eq!(
            parse("io.rsmd.Ntms.OpenSession", json!({"options": 0, "server": null})),
            Ok(Method::OpenSession { server: None, application: None, options: 0, version: None })
        );
        assert_eq!(
            parse("io.rsmd.Ntms.MountMedia", json!({"session": "s", "media": ["a"]})),
            Ok(Method::MountMedia {
                session: "s".into(),
                media: vec!["a".into()],
                drive: None,
                flags: MountFlags::default(),
                priority: 0,
                timeout_ms: None,
                pool: None,
            })
        );
        assert_eq!(
            parse("io.rsmd.Ntms.MountMedia", json!({"session": "s", "media": ["a"], "flags": {"write": true}})),
            Ok(Method::MountMedia {
                session: "s".into(),
                media: vec!["a".into()],
                drive: None,
                flags: MountFlags { write: true, ..MountFlags::default() },
                priority: 0,
                timeout_ms: None,
                pool: None,
            })
        );
        assert_eq!(
            parse("io.rsmd.Ntms.InventoryLibrary", json!({"session": "s", "library": "l"})),
            Ok(Method::InventoryLibrary { session: "s".into(), library: "l".into(), mode: InventoryMode::Default })
        );
    }

    #[test]
    fn unknown_interface_and_method() {
        assert_eq!(
            parse("com.example.Foo", json!({})),
            Err(VarlinkError::InterfaceNotFound { interface: "com.example".into() })
        );
        assert_eq!(parse("NoDots", json!({})), Err(VarlinkError::InterfaceNotFound { interface: String::new() }));
        assert_eq!(
            parse("io.rsmd.Ntms.Frobnicate", json!({})),
            Err(VarlinkError::MethodNotFound { method: "io.rsmd.Ntms.Frobnicate".into() })
        );
        assert_eq!(
            parse("org.varlink.service.Frobnicate", json!({})),
            Err(VarlinkError::MethodNotFound { method: "org.varlink.service.Frobnicate".into() })
        );
        assert_eq!(
            parse("io.rsmd.Ntms.openSession", json!({"options": 0})),
            Err(VarlinkError::MethodNotFound { method: "io.rsmd.Ntms.openSession".into() })
        );
    }

    #[test]
    fn invalid_parameters() {
        let o = "io.rsmd.Ntms.OpenSession";
        assert_eq!(parse(o, json!({})), bad("options"));
        assert_eq!(parse(o, json!({"options": null})), bad("options"));
        assert_eq!(parse(o, json!({"options": "0"})), bad("options"));
        assert_eq!(parse(o, json!({"options": -1})), bad("options"));
        assert_eq!(parse(o, json!({"options": 4294967296_i64})), bad("options"));
        assert_eq!(parse(o, json!({"options": 1.5})), bad("options"));
        assert_eq!(parse(o, json!({"options": 0, "server": 7})), bad("server"));
        assert_eq!(parse(o, json!({"options": 0, "application": []})), bad("application"));
        assert_eq!(parse(o, json!({"options": 0, "version": -2})), bad("version"));
        assert_eq!(parse(o, json!({"options": 0, "bogus": 1})), bad("bogus"));
        assert_eq!(parse("org.varlink.service.GetInfo", json!({"x": 1})), bad("x"));
        assert_eq!(parse("org.varlink.service.GetInterfaceDescription", json!({})), bad("interface"));

        let e = "io.rsmd.Ntms.EnumerateObjects";
        assert_eq!(parse(e, json!({"session": "s"})), bad("object_type"));
        assert_eq!(parse(e, json!({"session": "s", "object_type": "StorageSlot"})), bad("object_type"));
        assert_eq!(parse(e, json!({"session": "s", "object_type": 3})), bad("object_type"));
        assert_eq!(parse(e, json!({"object_type": "drive"})), bad("session"));
        assert_eq!(parse(e, json!({"session": 1, "object_type": "drive"})), bad("session"));
        assert_eq!(parse(e, json!({"session": "s", "object_type": "drive", "container": false})), bad("container"));

        let m = "io.rsmd.Ntms.MountMedia";
        assert_eq!(parse(m, json!({"session": "s"})), bad("media"));
        assert_eq!(parse(m, json!({"session": "s", "media": []})), bad("media"));
        assert_eq!(parse(m, json!({"session": "s", "media": "a"})), bad("media"));
        assert_eq!(parse(m, json!({"session": "s", "media": ["a", 1]})), bad("media"));
        assert_eq!(parse(m, json!({"session": "s", "media": ["a"], "flags": true})), bad("flags"));
        assert_eq!(parse(m, json!({"session": "s", "media": ["a"], "flags": {"read": 1}})), bad("flags"));
        assert_eq!(parse(m, json!({"session": "s", "media": ["a"], "flags": {"fast": true}})), bad("flags"));
        assert_eq!(parse(m, json!({"session": "s", "media": ["a"], "priority": 2147483648_i64})), bad("priority"));
        assert_eq!(parse(m, json!({"session": "s", "media": ["a"], "timeout_ms": -1})), bad("timeout_ms"));
        assert_eq!(parse(m, json!({"session": "s", "media": ["a"], "drive": 0})), bad("drive"));

        let d = "io.rsmd.Ntms.DismountMedia";
        assert_eq!(parse(d, json!({"session": "s"})), bad("media"));
        assert_eq!(parse(d, json!({"session": "s", "media": "m", "drive": "d"})), bad("drive"));
        assert_eq!(parse(d, json!({"session": "s", "media": "m", "deferred": "yes"})), bad("deferred"));

        let i = "io.rsmd.Ntms.InventoryLibrary";
        assert_eq!(parse(i, json!({"session": "s", "library": "l", "mode": "slow"})), bad("mode"));
        assert_eq!(parse(i, json!({"session": "s"})), bad("library"));
        assert_eq!(parse("io.rsmd.Ntms.CancelLibraryRequest", json!({"session": "s"})), bad("request"));
        let r = "io.rsmd.Ntms.SetRequestPriority";
        assert_eq!(parse(r, json!({"session": "s", "request": "r"})), bad("priority"));
        assert_eq!(parse(r, json!({"session": "s", "request": "r", "priority": "high"})), bad("priority"));
        assert_eq!(parse(r, json!({"session": "s", "request": "r", "priority": 1.5})), bad("priority"));
        assert_eq!(parse(r, json!({"session": "s", "request": "r", "priority": 4_294_967_296_i64})), bad("priority"));
        assert_eq!(parse(r, json!({"session": "s", "priority": 1})), bad("request"));
        assert_eq!(parse("io.rsmd.Ntms.GetObjectInformation", json!({"session": "s"})), bad("object"));
        assert_eq!(parse("io.rsmd.Ntms.EjectMedia", json!({"session": "s"})), bad("media"));
        assert_eq!(parse("io.rsmd.Ntms.InjectMedia", json!({"session": "s"})), bad("library"));
        assert_eq!(parse("io.rsmd.Ntms.CloseSession", json!({"session": "s", "force": true})), bad("force"));
    }

    #[test]
    fn streaming_requires_more() {
        let c = call("io.rsmd.Ntms.WaitForNotification", json!({"session": "s"}));
        assert_eq!(Method::parse(&c), Err(VarlinkError::ExpectedMore));
        let mut c = c;
        c.more = true;
        assert_eq!(Method::parse(&c), Ok(Method::WaitForNotification { session: "s".into(), object_type: None }));
        assert_eq!(
            Method::parse(&{
                let mut c = call("io.rsmd.Ntms.WaitForNotification", json!({"session": "s", "object_type": "x"}));
                c.more = true;
                c
            }),
            bad("object_type")
        );
    }

    #[test]
    fn session_accessor() {
        for m in samples::all() {
            match m {
                Method::GetInfo
                | Method::GetInterfaceDescription { .. }
                | Method::OpenSession { .. }
                | Method::Bridge { .. } => assert_eq!(m.session(), None),
                _ => assert_eq!(m.session(), Some("sess")),
            }
        }
    }
}
