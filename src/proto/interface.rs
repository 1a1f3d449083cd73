//! The Varlink interface definitions rsmd serves, and the `GetInfo` data.
//!
//! [`NTMS_DESCRIPTION`] is the text `GetInterfaceDescription("io.rsmd.Ntms")` returns; generic clients (Python
//! `varlink`, `varlinkctl`) parse it to build proxies, so it follows the Varlink IDL grammar exactly and mirrors
//! [`super::types`] and [`super::method::Method`] field for field. The unit tests parse it and check it against the
//! serialised forms of the Rust types, so the two cannot drift apart silently.

use super::error::NtmsError;
use super::types::ServiceInfo;

pub use super::names::{NTMS_INTERFACE, SERVICE_INTERFACE};

/// The protocol version this build speaks; a client announcing a newer one gets `NoInterfaces`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The IDL of `org.varlink.service`, as published by the Varlink project.
pub const SERVICE_DESCRIPTION: &str = "\
# The Varlink Service Interface is provided by every varlink service. It
# describes the service and the interfaces it implements.
interface org.varlink.service

# Get a list of all the interfaces a service provides and information
# about the implementation.
method GetInfo() -> (
  vendor: string,
  product: string,
  version: string,
  url: string,
  interfaces: []string
)

# Get the description of an interface that is implemented by this service.
method GetInterfaceDescription(interface: string) -> (description: string)

# The requested interface was not found.
error InterfaceNotFound (interface: string)

# The requested method was not found
error MethodNotFound (method: string)

# The interface defines the requested method, but the service does not
# implement it.
error MethodNotImplemented (method: string)

# One of the passed parameters is invalid.
error InvalidParameter (parameter: string)

# Client is denied access
error PermissionDenied ()

# Method is expected to be called with 'more' set to true, but wasn't
error ExpectedMore ()
";

/// The IDL of `io.rsmd.Ntms`, without its `error` lines (generated from [`NtmsError::ALL`]).
const NTMS_BODY: &str = "\
# rsmd: a Removable Storage Manager for Linux, with the semantics of Microsoft RSM (ntmsapi).
#
# Open a session, then enumerate objects, mount and dismount media, and follow library requests.
# Ids are GUID text. Times are Unix milliseconds. Errors carry the Win32 code and a message.
interface io.rsmd.Ntms

# RSM object types (NTMS_COMPUTER, NTMS_LIBRARY, ...).
type ObjectType (
  computer,
  library,
  changer,
  drive,
  storage_slot,
  ie_port,
  media_type,
  physical_media,
  media_pool,
  lib_request,
  op_request
)

# One object: the common header and exactly one member of details.
type ObjectInfo (
  id: string,
  name: string,
  description: string,
  object_type: ObjectType,
  enabled: bool,
  state: string,
  created: int,
  modified: int,
  version: ?int,
  details: ObjectDetails
)

# The type-specific part of an object: exactly one member is set, the one named by object_type.
type ObjectDetails (
  computer: ?ComputerDetails,
  library: ?LibraryDetails,
  changer: ?ChangerDetails,
  drive: ?DriveDetails,
  storage_slot: ?SlotDetails,
  ie_port: ?IePortDetails,
  media_type: ?MediaTypeDetails,
  physical_media: ?MediaDetails,
  media_pool: ?PoolDetails,
  lib_request: ?LibRequestDetails,
  op_request: ?OpRequestDetails
)

# The server.
type ComputerDetails (
  host_name: string,
  version: string,
  library_count: int,
  drive_count: int
)

# What kind of library.
type LibraryKind (online, standalone, offline)

# A library.
type LibraryDetails (
  kind: LibraryKind,
  changers: []string,
  slot_count: int,
  drive_count: int,
  ie_port_count: int,
  door_open: ?bool,
  barcode_reader: bool,
  vendor: ?string,
  product: ?string,
  serial: ?string,
  scan_done: ?int,
  scan_total: ?int,
  partitions: ?[]PartitionDetails
)

# A partition: the part of a library one application sees (slots numbered 1..N, drives from 0).
type PartitionDetails (
  name: string,
  application: string,
  slots: []int,
  pool: ?string,
  drives: []int,
  mail_slots: bool
)

# A changer (the robot).
type ChangerDetails (
  library: string,
  device: ?string,
  element_address: int,
  vendor: ?string,
  product: ?string,
  serial: ?string,
  revision: ?string
)

# Device nodes of a drive.
type DeviceNodes (
  sg: ?string,
  nst: ?string,
  by_id: ?string
)

# A drive's state.
type DriveState (empty, loading, mounted, loaded, dismounting, being_cleaned, error)

# A drive. number counts from 0 within its library.
type DriveDetails (
  library: string,
  number: int,
  element_address: int,
  state: DriveState,
  vendor: ?string,
  product: ?string,
  serial: ?string,
  devices: DeviceNodes,
  media: ?string,
  barcode: ?string,
  source_element: ?int,
  mounted_by: ?string,
  mount_count: int,
  needs_cleaning: bool,
  last_cleaned: ?int,
  tape_alerts: ?[]int,
  cleanings: ?int,
  volume_tag_width: ?int
)

# A storage slot. number counts from 1 within its library.
type SlotDetails (
  library: string,
  number: int,
  element_address: int,
  full: bool,
  media: ?string,
  barcode: ?string,
  cleaner_slot: bool,
  volume_tag_width: ?int
)

# An import/export port (mail slot), numbered after the storage slots.
type IePortDetails (
  library: string,
  number: int,
  element_address: int,
  full: bool,
  media: ?string,
  barcode: ?string,
  import_enabled: bool,
  export_enabled: bool,
  volume_tag_width: ?int
)

# A media type.
type MediaTypeDetails (
  family: string,
  generation: ?int,
  sides: int,
  cleaner: bool,
  writable: bool,
  libraries: []string
)

# The kind of place a cartridge is in.
type LocationKind (slot, drive, ie_port, transport, offline)

# Where a cartridge is.
type Location (
  kind: LocationKind,
  library: ?string,
  element: ?string,
  element_address: ?int
)

# A cartridge.
type MediaDetails (
  barcode: ?string,
  location: Location,
  home_slot: ?string,
  media_type: ?string,
  pool: ?string,
  mount_count: int,
  cleaner: bool,
  cleaning_count: ?int,
  side: ?string,
  logical_media: ?string,
  allocations: int,
  owner_uid: ?int,
  owner_application: ?string,
  media_type_name: ?string,
  pool_name: ?string,
  on_media: ?string
)

# What a pool is for.
type PoolKind (free, import, unrecognized, application)

# A media pool.
type PoolDetails (
  kind: PoolKind,
  media_type: ?string,
  parent: ?string,
  draw_from_free: bool,
  return_to_free: bool,
  max_allocations: ?int,
  media_count: int,
  allocated_count: int,
  pool_count: int,
  owner_uid: ?int,
  owner_application: ?string
)

# What a library request does.
type RequestOperation (mount, dismount, inject, eject, inventory, clean, door, allocate, move)

# Where a library request is.
type RequestState (queued, in_progress, waiting, complete, failed, cancelled)

# A library request.
type LibRequestDetails (
  operation: RequestOperation,
  state: RequestState,
  priority: int,
  submitted: int,
  started: ?int,
  completed: ?int,
  library: ?string,
  drive: ?string,
  media: ?string,
  application: ?string,
  uid: ?int,
  client: ?string,
  error: ?string,
  done: ?int,
  total: ?int
)

# What an operator request asks.
type OpRequestKind (message, new_media, cleaner, device_service, move_media)

# Where an operator request is.
type OpRequestState (submitted, active, satisfied, refused, cancelled)

# An operator request.
type OpRequestDetails (
  kind: OpRequestKind,
  state: OpRequestState,
  text: string,
  object: ?string,
  submitted: int,
  application: ?string,
  uid: ?int,
  number: ?int,
  library: ?string,
  completed: ?int,
  answered_by: ?int,
  reason: ?string
)

# Mount options; absent members are false.
type MountFlags (
  read: ?bool,
  write: ?bool,
  error_if_unavailable: ?bool,
  error_if_offline: ?bool,
  nowait: ?bool
)

# How an inventory reads the library.
type InventoryMode (default, fast, full, omid)

# Kind of change in a notification.
type NotificationOperation (insert, update, delete, error)

# Open a session. server: null or this host; options must be 0; version: the client's protocol version.
method OpenSession(
  server: ?string,
  application: ?string,
  options: int,
  version: ?int
) -> (session: string, version: int)

# Sent (oneway) by rsm bridge before it relays a remote client: the sessions this process opens record where the
# client is (ssh from ADDRESS) for the audit log and their requests.
method Bridge(client: string) -> ()

# Close a session.
method CloseSession(session: string) -> ()

# List the objects of a type, inside a container (library, pool) or everywhere.
# With limit, one page: at most limit objects after the object named by after (the previous page's next), and next when
# more follow (large libraries: pages keep every call short).
method EnumerateObjects(
  session: string,
  container: ?string,
  object_type: ObjectType,
  after: ?string,
  limit: ?int
) -> (objects: []ObjectInfo, next: ?string)

# Get one object by id, a cartridge by barcode, or a pool by path.
method GetObjectInformation(session: string, object: string) -> (object: ObjectInfo)

# Mount one of the media (ids or barcodes) and reply when the drive is ready (at once with nowait).
method MountMedia(
  session: string,
  media: []string,
  drive: ?string,
  flags: ?MountFlags,
  priority: ?int,
  timeout_ms: ?int,
  pool: ?string
) -> (request: string, media: ?string, drive: ?string, device: ?string, devices: ?DeviceNodes, host: ?string)

# Dismount a cartridge (media) or whatever is in a drive (drive): exactly one of them.
method DismountMedia(session: string, media: ?string, drive: ?string, deferred: ?bool, to: ?string) -> ()

# Cancel a library request.
method CancelLibraryRequest(session: string, request: string) -> ()

# Move a queued mount or dismount up or down its library's robot queue (-15 lowest .. 15 highest).
method SetRequestPriority(session: string, request: string, priority: int) -> ()

# Queue an inventory of a library.
method InventoryLibrary(session: string, library: string, mode: ?InventoryMode) -> (request: string)

# Stream changes to objects (call with more). sequence counts every change the daemon announced since it
# started: a jump shows changes this client did not hear of.
method WaitForNotification(
  session: string,
  object_type: ?ObjectType
) -> (operation: NotificationOperation, object_type: ObjectType, object: string, sequence: int)

# Move cartridges to mail slots: media, then media_list, staged for one cycle of the port. More than the free
# mail slots: the rest wait for an operator to empty them (or IePortFull at once with error_if_full).
method EjectMedia(
  session: string,
  media: string,
  media_list: ?[]string,
  error_if_full: ?bool
) -> (request: string)

# Move a cartridge from its slot to another empty storage or mail slot of its library (mtx transfer).
method MoveMedia(session: string, media: string, destination: string) -> (request: string)

# Take the cartridges in a library's mail slots into storage.
method InjectMedia(session: string, library: string) -> (request: string)

# Unlock the library's door for the operator: robot work waits until it has been opened and closed (the library is
# then read again: fast, or full with INITIALIZE ELEMENT STATUS first). Replies once unlocked; the request completes when the door access ends.
method AccessLibraryDoor(session: string, library: string, inventory: ?InventoryMode) -> (request: string)

# Clean a drive: a cleaning cartridge of the library goes in, the drive cleans and ejects it, it goes back. Replies
# when done; queued cleanings survive a restart.
method CleanDrive(session: string, drive: string) -> (request: string)

# Ask the operators for something: an application's message or a typed request (object: what it concerns).
method SubmitOperatorRequest(
  session: string,
  kind: OpRequestKind,
  text: string,
  object: ?string
) -> (request: string, number: int)

# Wait until an operator request is answered: satisfied returns, refused fails RequestRefused, cancelled fails
# Cancelled; Timeout after timeout_ms. request: its id or number.
method WaitForOperatorRequest(session: string, request: string, timeout_ms: ?int) -> (state: OpRequestState)

# The operator did what the request asks (control right on its library).
method SatisfyOperatorRequest(session: string, request: string) -> ()

# The operator cannot do what the request asks; the work waiting for it fails RequestRefused.
method RefuseOperatorRequest(session: string, request: string, reason: ?string) -> ()

# The submitter withdraws its request (an administrator may withdraw any).
method CancelOperatorRequest(session: string, request: string) -> ()

# How CreateMediaPool treats an existing pool.
type PoolAction (open_existing, create_new, open_always)

# Field-level changes of SetObjectInformation; absent members stay as they are.
type ObjectChanges (
  description: ?string,
  name: ?string,
  draw_from_free: ?bool,
  return_to_free: ?bool,
  max_allocations: ?int,
  media_type: ?string
)

# Open or create an application pool by path (levels separated by a backslash; create each level in turn).
method CreateMediaPool(
  session: string,
  name: string,
  media_type: ?string,
  action: ?PoolAction
) -> (pool: string, created: bool)

# Delete an empty application pool.
method DeleteMediaPool(session: string, pool: string) -> ()

# Move a cartridge to another pool (RSM's rules).
method MoveToMediaPool(session: string, media: string, pool: string) -> ()

# Allocate a given or any available cartridge of an application pool; wait for one unless error_if_unavailable.
method AllocateMedia(
  session: string,
  pool: string,
  media: ?string,
  new: ?bool,
  error_if_unavailable: ?bool,
  timeout_ms: ?int
) -> (logical_media: string, media: string, barcode: ?string, allocated_from: string)

# Deallocate a logical media: its cartridge becomes available (or decommissioned, or back in Free).
method DeallocateMedia(session: string, logical_media: string) -> ()

# Two logical media of one pool exchange their cartridges.
method SwapMedia(session: string, first: string, second: string) -> ()

# Allocated to complete: never written again.
method SetMediaComplete(session: string, logical_media: string) -> ()

# Available to decommissioned: never allocated again.
method DecommissionMedia(session: string, media: string) -> ()

# Forget an offline cartridge no application holds.
method DeleteMedia(session: string, media: string) -> ()

# Use a library, drive or cartridge again.
method EnableObject(session: string, object: string) -> ()

# Take a library, drive or cartridge out of use.
method DisableObject(session: string, object: string) -> ()

# Change fields of a cartridge or pool; with version, only if unchanged since read.
method SetObjectInformation(
  session: string,
  object: string,
  version: ?int,
  changes: ObjectChanges
) -> (object: ObjectInfo)
";

/// The full IDL of `io.rsmd.Ntms`, including one `error` line per [`NtmsError`] variant.
pub static NTMS_DESCRIPTION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let mut text = NTMS_BODY.to_owned();
    for (name, code) in NtmsError::ALL {
        text.push_str(&format!("\n# Win32 error {code}.\nerror {name} (code: int, message: string)\n"));
    }
    text
});

/// The description of `interface`, if this service provides it.
pub fn description(interface: &str) -> Option<&'static str> {
    match interface {
        NTMS_INTERFACE => Some(NTMS_DESCRIPTION.as_str()),
        SERVICE_INTERFACE => Some(SERVICE_DESCRIPTION),
        _ => None,
    }
}

/// The reply of `org.varlink.service.GetInfo`.
pub fn service_info() -> ServiceInfo {
    ServiceInfo {
        vendor: "rsmd".into(),
        product: "rsmd Removable Storage Manager".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        url: "https://github.com/rsmd/rsmd".into(),
        interfaces: vec![SERVICE_INTERFACE.into(), NTMS_INTERFACE.into()],
    }
}

#[cfg(test)]
mod tests {
    //! A small IDL checker: enough of the Varlink grammar to list types, methods and errors with their fields,
    //! and to reject text the grammar does not allow.
    use super::*;
    use crate::proto::method::samples as method_samples;
    use crate::proto::types::samples as type_samples;
    use serde_json::Value;
    use std::collections::BTreeMap;

    /// `(name, type)` pairs; the type is empty for enum values.
    type Fields = Vec<(String, String)>;

    #[derive(Debug, Default)]
    struct Idl {
        name: String,
        /// Type name → field names (enum values for enums) and their type text ("" for enum values).
        types: BTreeMap<String, Vec<(String, String)>>,
        /// Method name → (parameters, returns).
        methods: BTreeMap<String, (Fields, Fields)>,
        errors: BTreeMap<String, Vec<(String, String)>>,
    }

    fn is_field_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && !s.contains("__")
            && !s.ends_with('_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    fn is_member_name(s: &str) -> bool {
        s.chars().next().is_some_and(|c| c.is_ascii_uppercase()) && s.chars().all(|c| c.is_ascii_alphanumeric())
    }

    /// Splits `( a: T, b: U )` (already without the parentheses) at top-level commas.
    fn fields(inner: &str) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        let (mut depth, mut start) = (0i32, 0usize);
        let mut parts = Vec::new();
        for (i, c) in inner.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&inner[start..]);
        if parts.len() == 1 && parts[0].trim().is_empty() {
            return Ok(out);
        }
        for part in parts {
            let part = part.trim();
            let (name, ty) = match part.split_once(':') {
                Some((n, t)) => (n.trim(), t.trim()),
                None => (part, ""),
            };
            if !is_field_name(name) {
                return Err(format!("bad field name '{name}'"));
            }
            if !ty.is_empty() {
                check_type(ty)?;
            }
            out.push((name.to_owned(), ty.to_owned()));
        }
        Ok(out)
    }

    fn check_type(ty: &str) -> Result<(), String> {
        let ty = ty.strip_prefix('?').unwrap_or(ty);
        let ty = ty.strip_prefix("[string]").or_else(|| ty.strip_prefix("[]")).unwrap_or(ty);
        if ty.starts_with('?') {
            return Err(format!("double optional in '{ty}'"));
        }
        match ty {
            "bool" | "int" | "float" | "string" | "object" => Ok(()),
            t if t.starts_with('(') && t.ends_with(')') => fields(&t[1..t.len() - 1]).map(|_| ()),
            t if is_member_name(t) => Ok(()),
            t => Err(format!("bad type '{t}'")),
        }
    }

    /// Reads `(...)` at the start of `s`, returning the inside and the rest.
    fn parens(s: &str) -> Result<(&str, &str), String> {
        let s = s.trim_start();
        if !s.starts_with('(') {
            return Err(format!("expected '(' at '{}'", &s[..s.len().min(20)]));
        }
        let mut depth = 0;
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok((&s[1..i], &s[i + 1..]));
                    }
                }
                _ => {}
            }
        }
        Err("unbalanced parentheses".into())
    }

    fn parse_idl(text: &str) -> Result<Idl, String> {
        let stripped: String =
            text.lines().map(|l| l.split_once('#').map_or(l, |(code, _)| code)).collect::<Vec<_>>().join("\n");
        let mut idl = Idl::default();
        let mut rest = stripped.trim();
        let iface = rest.strip_prefix("interface ").ok_or("missing interface keyword")?;
        let end = iface.find(char::is_whitespace).unwrap_or(iface.len());
        idl.name = iface[..end].to_owned();
        // interface-name = [A-Za-z][A-Za-z]* ('.' [A-Za-z0-9]([-]*[A-Za-z0-9])*)+
        if !idl.name.split('.').enumerate().all(|(i, seg)| {
            seg.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() && (i > 0 || c.is_ascii_alphabetic()))
                && !seg.ends_with('-')
                && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        }) || !idl.name.contains('.')
        {
            return Err(format!("bad interface name '{}'", idl.name));
        }
        rest = iface[end..].trim_start();
        while !rest.is_empty() {
            let (keyword, after) = rest.split_once(' ').ok_or("truncated member")?;
            let after = after.trim_start();
            let name_end = after.find(|c: char| c == '(' || c.is_whitespace()).ok_or("truncated member")?;
            let name = after[..name_end].to_owned();
            if !is_member_name(&name) {
                return Err(format!("bad member name '{name}'"));
            }
            let (inner, tail) = parens(&after[name_end..])?;
            let list = fields(inner)?;
            rest = match keyword {
                "type" => {
                    if idl.types.insert(name.clone(), list).is_some() {
                        return Err(format!("duplicate type {name}"));
                    }
                    tail
                }
                "error" => {
                    if idl.errors.insert(name.clone(), list).is_some() {
                        return Err(format!("duplicate error {name}"));
                    }
                    tail
                }
                "method" => {
                    let tail = tail.trim_start().strip_prefix("->").ok_or(format!("method {name} lacks ->"))?;
                    let (out, tail) = parens(tail)?;
                    if idl.methods.insert(name.clone(), (list, fields(out)?)).is_some() {
                        return Err(format!("duplicate method {name}"));
                    }
                    tail
                }
                other => return Err(format!("unknown keyword '{other}'")),
            }
            .trim_start();
        }
        // Every named type used must be defined.
        let mut used = Vec::new();
        let all_fields =
            idl.types.values().chain(idl.errors.values()).chain(idl.methods.values().flat_map(|(a, b)| [a, b]));
        for list in all_fields {
            for (_, ty) in list {
                let base = ty.trim_start_matches('?').trim_start_matches("[]").trim_start_matches('?');
                if base.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
                    used.push(base.to_owned());
                }
            }
        }
        for ty in used {
            if !idl.types.contains_key(&ty) {
                return Err(format!("undefined type {ty}"));
            }
        }
        Ok(idl)
    }

    fn names(list: &[(String, String)]) -> Vec<String> {
        let mut v: Vec<String> = list.iter().map(|(n, _)| n.clone()).collect();
        v.sort();
        v
    }

    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    #[test]
    fn checker_rejects_bad_text() {
        assert!(parse_idl("interface a.b\nmethod X() -> ()").is_ok());
        assert!(parse_idl("method X() -> ()").is_err());
        assert!(parse_idl("interface 1a.b\n").is_err());
        assert!(parse_idl("interface ab\n").is_err());
        assert!(parse_idl("interface a..b\n").is_err());
        assert!(parse_idl("interface a.b\nmethod x() -> ()").is_err());
        assert!(parse_idl("interface a.b\nmethod X()").is_err());
        assert!(parse_idl("interface a.b\ntype T (a: Undefined)").is_err());
        assert!(parse_idl("interface a.b\ntype T (a: ??int)").is_err());
        assert!(parse_idl("interface a.b\ntype T (a__b: int)").is_err());
        assert!(parse_idl("interface a.b\ntype T (a: int").is_err());
        assert!(parse_idl("interface a.b\nerror E ()\nerror E ()").is_err());
    }

    #[test]
    fn service_idl_parses() {
        let idl = parse_idl(SERVICE_DESCRIPTION).unwrap();
        assert_eq!(idl.name, SERVICE_INTERFACE);
        assert_eq!(names(&idl.methods["GetInterfaceDescription"].0), ["interface"]);
        let info = serde_json::to_value(service_info()).unwrap();
        assert_eq!(keys(&info), names(&idl.methods["GetInfo"].1));
        assert_eq!(idl.errors.len(), 6);
    }

    #[test]
    fn ntms_idl_methods_match_method_enum() {
        let idl = parse_idl(&NTMS_DESCRIPTION).unwrap();
        assert_eq!(idl.name, NTMS_INTERFACE);
        let mut declared: Vec<&String> = idl.methods.keys().collect();
        declared.sort();
        let mut ours: Vec<&str> = crate::proto::method::NTMS_METHODS.to_vec();
        ours.sort_unstable();
        assert_eq!(declared, ours);
        // Every parameter a fully populated Method sends is declared, and together the samples cover all of them.
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in method_samples::all() {
            let call = m.to_call();
            let (iface, short) = call.method.rsplit_once('.').unwrap();
            if iface != NTMS_INTERFACE {
                continue;
            }
            let params = names(&idl.methods[short].0);
            for key in call.parameters.keys() {
                assert!(params.contains(key), "{short}: {key} not in IDL");
                seen.entry(short.to_owned()).or_default().push(key.clone());
            }
        }
        for (method, (params, _)) in &idl.methods {
            for (p, _) in params {
                assert!(seen.get(method).is_some_and(|s| s.contains(p)), "{method}.{p} never sent by Method");
            }
        }
    }

    #[test]
    fn ntms_idl_types_match_serde() {
        let idl = parse_idl(&NTMS_DESCRIPTION).unwrap();
        for obj in type_samples::all() {
            let v = serde_json::to_value(&obj).unwrap();
            assert_eq!(keys(&v), names(&idl.types["ObjectInfo"]));
            let (tag, details) = v["details"].as_object().unwrap().iter().next().unwrap();
            let member = idl.types["ObjectDetails"].iter().find(|(n, _)| n == tag).unwrap();
            let type_name = member.1.trim_start_matches('?');
            assert_eq!(keys(details), names(&idl.types[type_name]), "{type_name}");
            for (field, ty) in &idl.types[type_name] {
                let value = &details[field];
                let base = ty.trim_start_matches('?');
                if let Some(values) = idl.types.get(base).filter(|f| f.iter().all(|(_, t)| t.is_empty())) {
                    let s = value.as_str().unwrap();
                    assert!(values.iter().any(|(n, _)| n == s), "{type_name}.{field} = {s}");
                } else if let Some(sub) = idl.types.get(base) {
                    assert_eq!(keys(value), names(sub), "{type_name}.{field}");
                }
            }
        }
        let obj_types = names(&idl.types["ObjectType"]);
        let mut ours: Vec<String> =
            crate::proto::types::ObjectType::ALL.iter().map(|t| t.wire_name().to_owned()).collect();
        ours.sort();
        assert_eq!(obj_types, ours);
        let flags = serde_json::to_value(crate::proto::types::MountFlags::default()).unwrap();
        assert_eq!(keys(&flags), names(&idl.types["MountFlags"]));
    }

    #[test]
    fn ntms_idl_declares_every_error() {
        let idl = parse_idl(&NTMS_DESCRIPTION).unwrap();
        assert_eq!(idl.errors.len(), NtmsError::ALL.len());
        for (name, _) in NtmsError::ALL {
            assert_eq!(names(&idl.errors[*name]), ["code", "message"]);
        }
    }

    #[test]
    fn descriptions_by_name() {
        assert!(description("io.rsmd.Ntms").is_some_and(|d| d.contains("interface io.rsmd.Ntms")));
        assert!(description("org.varlink.service").is_some());
        assert!(description("org.example").is_none());
        let info = service_info();
        assert_eq!(info.vendor, "rsmd");
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    }
}
