//! The closed wire vocabulary of errors.
//!
//! Two families travel on the socket:
//!
//! - [`NtmsError`]: the errors of the `io.rsmd.Ntms` interface, named after the Win32 / RSM error codes of
//!   `ntmsapi` (`io.rsmd.Ntms.NotReady`, code 21). Every one carries `{"code": <u32>, "message": <string>}` as its
//!   parameters, so a client that does not know the name can still show the number and the text.
//! - [`VarlinkError`]: the standard `org.varlink.service` errors (unknown interface or method, a parameter of the
//!   wrong type or name, a method that is declared but not implemented, `more` required).
//!
//! [`WireError`] is either of them, for code that answers a call. Internal error types never reach the wire
//! directly: `server/dispatch.rs` converts them into this vocabulary, so refactors cannot change the protocol.

use std::fmt;

use serde_json::{json, Map, Value};

use super::names::{NTMS_INTERFACE, SERVICE_INTERFACE};

macro_rules! ntms_errors {
    ($( $(#[doc = $doc:expr])* $name:ident = $code:expr, $win32:literal; )*) => {
        /// An error of the `io.rsmd.Ntms` interface: a Win32/RSM error code with a human message.
        ///
        /// On the wire: `{"error": "io.rsmd.Ntms.<Variant>", "parameters": {"code": <code>, "message": "..."}}`.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum NtmsError {
            $(
                $(#[doc = $doc])*
                #[doc = concat!("\n\nWin32 `", $win32, "` (", stringify!($code), ").")]
                $name {
                    /// What went wrong, for a human.
                    message: String,
                },
            )*
            /// An `io.rsmd.Ntms` error this client does not know (a newer daemon), kept verbatim.
            Unknown {
                /// The full error name as received.
                error: String,
                /// The code from the parameters (1359 `ERROR_INTERNAL_ERROR` when absent).
                code: u32,
                /// The message from the parameters.
                message: String,
            },
        }

        impl NtmsError {
            /// The Win32 error code.
            pub fn code(&self) -> u32 {
                match self {
                    $( NtmsError::$name { .. } => $code, )*
                    NtmsError::Unknown { code, .. } => *code,
                }
            }

            /// The short name, as it appears after `io.rsmd.Ntms.` (`NotReady`).
            pub fn name(&self) -> &str {
                match self {
                    $( NtmsError::$name { .. } => stringify!($name), )*
                    NtmsError::Unknown { error, .. } => {
                        error.rsplit('.').next().unwrap_or(error.as_str())
                    }
                }
            }

            /// The human message.
            pub fn message(&self) -> &str {
                match self {
                    $( NtmsError::$name { message } )|* | NtmsError::Unknown { message, .. } => message,
                }
            }

            /// Builds the error named `name` (without the interface prefix), or `None` if no such variant exists.
            pub fn from_name(name: &str, message: impl Into<String>) -> Option<NtmsError> {
                let message = message.into();
                match name {
                    $( stringify!($name) => Some(NtmsError::$name { message }), )*
                    _ => None,
                }
            }

            /// Every known `(name, code)` pair, in declaration order (used to write and check the IDL).
            pub const ALL: &'static [(&'static str, u32)] = &[ $( (stringify!($name), $code), )* ];
        }
    };
}

ntms_errors! {
    /// Access to the object or operation is denied for this peer.
    AccessDenied = 5, "ERROR_ACCESS_DENIED";
    /// The session handle is unknown, closed, or belongs to another process.
    InvalidHandle = 6, "ERROR_INVALID_HANDLE";
    /// The daemon ran out of memory or another resource it budgets.
    NotEnoughMemory = 8, "ERROR_NOT_ENOUGH_MEMORY";
    /// A message was not a valid Varlink message (bad JSON, not an object, bad envelope).
    InvalidMessage = 13, "ERROR_INVALID_DATA";
    /// The cartridge is write protected and was asked for writing.
    WriteProtect = 19, "ERROR_WRITE_PROTECT";
    /// The daemon is still loading its inventory: wait and retry.
    NotReady = 21, "ERROR_NOT_READY";
    /// A parameter has a valid type but an unacceptable value (e.g. `options` ≠ 0).
    InvalidParameter = 87, "ERROR_INVALID_PARAMETER";
    /// The method is declared in the interface but this daemon does not implement it yet.
    CallNotImplemented = 120, "ERROR_CALL_NOT_IMPLEMENTED";
    /// The resource is busy.
    Busy = 170, "ERROR_BUSY";
    /// A name (pool path, description) is not acceptable.
    InvalidName = 123, "ERROR_INVALID_NAME";
    /// The object exists already.
    AlreadyExists = 183, "ERROR_ALREADY_EXISTS";
    /// The server name is malformed.
    InvalidComputerName = 1210, "ERROR_INVALID_COMPUTERNAME";
    /// The object changed since the caller read it (SetObjectInformation with a stale version): read it again.
    RevisionMismatch = 1306, "ERROR_REVISION_MISMATCH";
    /// The object is not in a state that allows the operation (e.g. decommissioning allocated media).
    InvalidState = 5023, "ERROR_INVALID_STATE";
    /// The network is not present (a remote server was named).
    NoNetwork = 1222, "ERROR_NO_NETWORK";
    /// The request was cancelled.
    Cancelled = 1223, "ERROR_CANCELLED";
    /// A daemon bug: an internal invariant failed.
    Internal = 1359, "ERROR_INTERNAL_ERROR";
    /// The operation did not complete in the time allowed.
    Timeout = 1460, "ERROR_TIMEOUT";
    /// The daemon is older than the client: it lacks the interface, method or protocol version needed.
    NoInterfaces = 1817, "RPC_S_NO_INTERFACES";
    /// The daemon cannot be reached (no socket, connection refused, connection lost).
    NotConnected = 2250, "ERROR_NOT_CONNECTED";
    /// The media is not valid for this operation.
    InvalidMedia = 4300, "ERROR_INVALID_MEDIA";
    /// The library is not valid for this operation.
    InvalidLibrary = 4301, "ERROR_INVALID_LIBRARY";
    /// The media pool is not valid.
    InvalidMediaPool = 4302, "ERROR_INVALID_MEDIA_POOL";
    /// The drive and the media are not compatible.
    DriveMediaMismatch = 4303, "ERROR_DRIVE_MEDIA_MISMATCH";
    /// The media is offline (not in any library).
    MediaOffline = 4304, "ERROR_MEDIA_OFFLINE";
    /// The library is offline.
    LibraryOffline = 4305, "ERROR_LIBRARY_OFFLINE";
    /// The drive or slot is empty.
    Empty = 4306, "ERROR_EMPTY";
    /// The drive or slot is not empty.
    NotEmpty = 4307, "ERROR_NOT_EMPTY";
    /// No media is currently available in this pool or library.
    MediaUnavailable = 4308, "ERROR_MEDIA_UNAVAILABLE";
    /// The resource is disabled.
    ResourceDisabled = 4309, "ERROR_RESOURCE_DISABLED";
    /// The cleaner cartridge is not valid.
    InvalidCleaner = 4310, "ERROR_INVALID_CLEANER";
    /// The drive could not be cleaned.
    UnableToClean = 4311, "ERROR_UNABLE_TO_CLEAN";
    /// No object with this id (or barcode) exists.
    ObjectNotFound = 4312, "ERROR_OBJECT_NOT_FOUND";
    /// The database is damaged or could not be written.
    DatabaseFailure = 4313, "ERROR_DATABASE_FAILURE";
    /// The database is full.
    DatabaseFull = 4314, "ERROR_DATABASE_FULL";
    /// The media is not compatible with this device or pool.
    MediaIncompatible = 4315, "ERROR_MEDIA_INCOMPATIBLE";
    /// The resource is not present (removed from the library or the system).
    ResourceNotPresent = 4316, "ERROR_RESOURCE_NOT_PRESENT";
    /// The operation is not valid in the object's current state.
    InvalidOperation = 4317, "ERROR_INVALID_OPERATION";
    /// The media is not mounted or not available for this operation.
    MediaNotAvailable = 4318, "ERROR_MEDIA_NOT_AVAILABLE";
    /// The device is not available.
    DeviceNotAvailable = 4319, "ERROR_DEVICE_NOT_AVAILABLE";
    /// The request was refused; the message says why.
    RequestRefused = 4320, "ERROR_REQUEST_REFUSED";
    /// The drive object is not valid.
    InvalidDriveObject = 4321, "ERROR_INVALID_DRIVE_OBJECT";
    /// The library is full.
    LibraryFull = 4322, "ERROR_LIBRARY_FULL";
    /// The medium is not accessible (the robot cannot reach it).
    MediumNotAccessible = 4323, "ERROR_MEDIUM_NOT_ACCESSIBLE";
    /// The drive could not load the medium.
    UnableToLoadMedium = 4324, "ERROR_UNABLE_TO_LOAD_MEDIUM";
    /// The medium transport (robot hand) is full.
    TransportFull = 4328, "ERROR_TRANSPORT_FULL";
    /// Mounted media cannot be ejected.
    UnableToEjectMountedMedia = 4330, "ERROR_UNABLE_TO_EJECT_MOUNTED_MEDIA";
    /// The cleaner cartridge is spent.
    CleanerCartridgeSpent = 4333, "ERROR_CLEANER_CARTRIDGE_SPENT";
    /// The message exceeds the maximum size (1 MiB).
    MessageTooLarge = 4336, "ERROR_MESSAGE_EXCEEDS_MAX_SIZE";
    /// No drive in the library supports this media type.
    NoSupportingDrives = 4339, "ERROR_NO_SUPPORTING_DRIVES";
    /// A cleaner cartridge is in the drive.
    CleanerCartridgeInstalled = 4340, "ERROR_CLEANER_CARTRIDGE_INSTALLED";
    /// The import/export port is full.
    IePortFull = 4341, "ERROR_IEPORT_FULL";
}

impl NtmsError {
    /// The full Varlink error name, `io.rsmd.Ntms.<Name>`.
    pub fn varlink_name(&self) -> String {
        match self {
            NtmsError::Unknown { error, .. } => error.clone(),
            other => format!("{NTMS_INTERFACE}.{}", other.name()),
        }
    }

    /// The error's reply parameters: `{"code": .., "message": ..}`.
    pub fn parameters(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("code".into(), json!(self.code()));
        map.insert("message".into(), json!(self.message()));
        map
    }

    /// The whole error reply object (without the NUL terminator).
    pub fn to_reply(&self) -> Value {
        json!({ "error": self.varlink_name(), "parameters": self.parameters() })
    }

    /// Turns a received error reply into an [`NtmsError`], for the client.
    ///
    /// `io.rsmd.Ntms.*` names map to their variants (unknown ones to [`NtmsError::Unknown`]); the standard
    /// `org.varlink.service` errors map to the nearest Win32 meaning: `InterfaceNotFound`/`MethodNotFound` →
    /// `NoInterfaces` (the daemon is older than the client), `MethodNotImplemented` → `CallNotImplemented`,
    /// `InvalidParameter` → `InvalidParameter`, `PermissionDenied` → `AccessDenied`, anything else →
    /// `InvalidMessage`.
    pub fn from_reply(error_name: &str, parameters: &Map<String, Value>) -> NtmsError {
        let text = |key: &str| parameters.get(key).and_then(Value::as_str).unwrap_or("");
        if let Some(name) = error_name.strip_prefix(NTMS_INTERFACE).and_then(|n| n.strip_prefix('.')) {
            let message = text("message").to_owned();
            return NtmsError::from_name(name, message.clone()).unwrap_or_else(|| NtmsError::Unknown {
                error: error_name.to_owned(),
                code: parameters
                    .get("code")
                    .and_then(Value::as_u64)
                    .and_then(|c| u32::try_from(c).ok())
                    .unwrap_or(1359),
                message,
            });
        }
        if let Some(name) = error_name.strip_prefix(SERVICE_INTERFACE).and_then(|n| n.strip_prefix('.')) {
            return match name {
                "InterfaceNotFound" => NtmsError::NoInterfaces {
                    message: format!("rsmd does not provide interface '{}'", text("interface")),
                },
                "MethodNotFound" => {
                    NtmsError::NoInterfaces { message: format!("rsmd does not know method '{}'", text("method")) }
                }
                "MethodNotImplemented" => NtmsError::CallNotImplemented {
                    message: format!("rsmd does not implement '{}' yet", text("method")),
                },
                "InvalidParameter" => {
                    NtmsError::InvalidParameter { message: format!("invalid parameter '{}'", text("parameter")) }
                }
                "PermissionDenied" => NtmsError::AccessDenied { message: "permission denied".into() },
                other => NtmsError::InvalidMessage { message: format!("unexpected varlink error '{other}'") },
            };
        }
        NtmsError::InvalidMessage { message: format!("unexpected error '{error_name}'") }
    }
}

impl fmt::Display for NtmsError {
    /// `<message>: <Name> (<code>)`, or `<Name> (<code>)` when the message is empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message().is_empty() {
            write!(f, "{} ({})", self.name(), self.code())
        } else {
            write!(f, "{}: {} ({})", self.message(), self.name(), self.code())
        }
    }
}

impl std::error::Error for NtmsError {}

/// The standard errors of `org.varlink.service`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarlinkError {
    /// The interface of the called method is not provided by this service.
    #[error("Interface not found: {interface}")]
    InterfaceNotFound {
        /// The interface name as called.
        interface: String,
    },
    /// The interface exists but has no such method.
    #[error("Method not found: {method}")]
    MethodNotFound {
        /// The full method name as called.
        method: String,
    },
    /// The method is declared but not implemented by this service.
    #[error("Method not implemented: {method}")]
    MethodNotImplemented {
        /// The full method name.
        method: String,
    },
    /// A parameter is missing, unknown, or of the wrong type.
    #[error("Invalid parameter: {parameter}")]
    InvalidParameter {
        /// The parameter's name.
        parameter: String,
    },
    /// The peer may not call this method.
    #[error("Permission denied")]
    PermissionDenied,
    /// The method must be called with `"more": true`.
    #[error("Expected more")]
    ExpectedMore,
}

impl VarlinkError {
    /// Shorthand for [`VarlinkError::InvalidParameter`].
    pub fn invalid_parameter(parameter: impl Into<String>) -> VarlinkError {
        VarlinkError::InvalidParameter { parameter: parameter.into() }
    }

    /// The full error name, `org.varlink.service.<Name>`.
    pub fn varlink_name(&self) -> String {
        let name = match self {
            VarlinkError::InterfaceNotFound { .. } => "InterfaceNotFound",
            VarlinkError::MethodNotFound { .. } => "MethodNotFound",
            VarlinkError::MethodNotImplemented { .. } => "MethodNotImplemented",
            VarlinkError::InvalidParameter { .. } => "InvalidParameter",
            VarlinkError::PermissionDenied => "PermissionDenied",
            VarlinkError::ExpectedMore => "ExpectedMore",
        };
        format!("{SERVICE_INTERFACE}.{name}")
    }

    /// The error's reply parameters, as declared in the `org.varlink.service` IDL.
    pub fn parameters(&self) -> Map<String, Value> {
        let mut map = Map::new();
        match self {
            VarlinkError::InterfaceNotFound { interface } => {
                map.insert("interface".into(), json!(interface));
            }
            VarlinkError::MethodNotFound { method } | VarlinkError::MethodNotImplemented { method } => {
                map.insert("method".into(), json!(method));
            }
            VarlinkError::InvalidParameter { parameter } => {
                map.insert("parameter".into(), json!(parameter));
            }
            VarlinkError::PermissionDenied | VarlinkError::ExpectedMore => {}
        }
        map
    }

    /// The whole error reply object (without the NUL terminator).
    pub fn to_reply(&self) -> Value {
        json!({ "error": self.varlink_name(), "parameters": self.parameters() })
    }
}

/// Any error that can answer a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// An `io.rsmd.Ntms` error.
    #[error(transparent)]
    Ntms(#[from] NtmsError),
    /// An `org.varlink.service` error.
    #[error(transparent)]
    Varlink(#[from] VarlinkError),
}

impl WireError {
    /// The full Varlink error name.
    pub fn varlink_name(&self) -> String {
        match self {
            WireError::Ntms(e) => e.varlink_name(),
            WireError::Varlink(e) => e.varlink_name(),
        }
    }

    /// The whole error reply object (without the NUL terminator).
    pub fn to_reply(&self) -> Value {
        match self {
            WireError::Ntms(e) => e.to_reply(),
            WireError::Varlink(e) => e.to_reply(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_winerror() {
        let expect = [
            ("NotReady", 21),
            ("InvalidParameter", 87),
            ("InvalidHandle", 6),
            ("InvalidComputerName", 1210),
            ("NotConnected", 2250),
            ("NoInterfaces", 1817),
            ("AccessDenied", 5),
            ("ObjectNotFound", 4312),
            ("Busy", 170),
            ("Timeout", 1460),
            ("InvalidMedia", 4300),
            ("InvalidLibrary", 4301),
            ("LibraryOffline", 4305),
            ("MediaUnavailable", 4308),
            ("DeviceNotAvailable", 4319),
            ("RequestRefused", 4320),
            ("ResourceNotPresent", 4316),
            ("InvalidOperation", 4317),
            ("CleanerCartridgeInstalled", 4340),
            ("UnableToLoadMedium", 4324),
            ("DatabaseFailure", 4313),
            ("Cancelled", 1223),
            ("MessageTooLarge", 4336),
        ];
        for (name, code) in expect {
            let e = NtmsError::from_name(name, "x").unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(e.code(), code, "{name}");
            assert_eq!(e.name(), name);
        }
    }

    #[test]
    fn names_and_codes_are_unique() {
        let mut names: Vec<_> = NtmsError::ALL.iter().map(|(n, _)| *n).collect();
        let mut codes: Vec<_> = NtmsError::ALL.iter().map(|(_, c)| *c).collect();
        names.sort_unstable();
        codes.sort_unstable();
        names.dedup();
        codes.dedup();
        assert_eq!(names.len(), NtmsError::ALL.len());
        assert_eq!(codes.len(), NtmsError::ALL.len());
    }

    #[test]
    fn reply_round_trips_for_every_variant() {
        for (name, code) in NtmsError::ALL {
            let e = NtmsError::from_name(name, format!("about {name}")).unwrap();
            let reply = e.to_reply();
            assert_eq!(reply["error"], format!("io.rsmd.Ntms.{name}"));
            assert_eq!(reply["parameters"]["code"], *code);
            let params = reply["parameters"].as_object().unwrap();
            let back = NtmsError::from_reply(reply["error"].as_str().unwrap(), params);
            assert_eq!(back, e);
        }
    }

    #[test]
    fn reply_shape() {
        let e = NtmsError::NotReady { message: "loading inventory".into() };
        assert_eq!(
            e.to_reply(),
            json!({"error": "io.rsmd.Ntms.NotReady", "parameters": {"code": 21, "message": "loading inventory"}})
        );
    }

    #[test]
    fn display_puts_message_first() {
        let e = NtmsError::NotConnected { message: "cannot reach rsmd at /run/rsmd/rsmd.sock".into() };
        assert_eq!(e.to_string(), "cannot reach rsmd at /run/rsmd/rsmd.sock: NotConnected (2250)");
        let e = NtmsError::Busy { message: String::new() };
        assert_eq!(e.to_string(), "Busy (170)");
    }

    #[test]
    fn unknown_ntms_error_is_kept() {
        let params = json!({"code": 4999, "message": "new"});
        let e = NtmsError::from_reply("io.rsmd.Ntms.SomethingNew", params.as_object().unwrap());
        assert_eq!(e.code(), 4999);
        assert_eq!(e.name(), "SomethingNew");
        assert_eq!(e.varlink_name(), "io.rsmd.Ntms.SomethingNew");
        assert_eq!(e.message(), "new");
        let e = NtmsError::from_reply("io.rsmd.Ntms.Other", &Map::new());
        assert_eq!(e.code(), 1359);
    }

    #[test]
    fn varlink_errors_map_on_the_client() {
        let cases = [
            ("org.varlink.service.InterfaceNotFound", json!({"interface": "a.b"}), 1817),
            ("org.varlink.service.MethodNotFound", json!({"method": "a.b.C"}), 1817),
            ("org.varlink.service.MethodNotImplemented", json!({"method": "a.b.C"}), 120),
            ("org.varlink.service.InvalidParameter", json!({"parameter": "x"}), 87),
            ("org.varlink.service.PermissionDenied", json!({}), 5),
            ("org.varlink.service.ExpectedMore", json!({}), 13),
            ("com.example.Weird", json!({}), 13),
        ];
        for (name, params, code) in cases {
            assert_eq!(NtmsError::from_reply(name, params.as_object().unwrap()).code(), code, "{name}");
        }
        let e = NtmsError::from_reply(
            "org.varlink.service.InvalidParameter",
            json!({"parameter": "media"}).as_object().unwrap(),
        );
        assert!(e.message().contains("'media'"));
    }

    #[test]
    fn varlink_error_replies() {
        let cases = [
            (
                VarlinkError::InterfaceNotFound { interface: "x.y".into() },
                json!({"error": "org.varlink.service.InterfaceNotFound", "parameters": {"interface": "x.y"}}),
            ),
            (
                VarlinkError::MethodNotFound { method: "x.y.Z".into() },
                json!({"error": "org.varlink.service.MethodNotFound", "parameters": {"method": "x.y.Z"}}),
            ),
            (
                VarlinkError::MethodNotImplemented { method: "x.y.Z".into() },
                json!({"error": "org.varlink.service.MethodNotImplemented", "parameters": {"method": "x.y.Z"}}),
            ),
            (
                VarlinkError::invalid_parameter("session"),
                json!({"error": "org.varlink.service.InvalidParameter", "parameters": {"parameter": "session"}}),
            ),
            (
                VarlinkError::PermissionDenied,
                json!({"error": "org.varlink.service.PermissionDenied", "parameters": {}}),
            ),
            (VarlinkError::ExpectedMore, json!({"error": "org.varlink.service.ExpectedMore", "parameters": {}})),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_reply(), want);
            assert_eq!(WireError::from(e.clone()).to_reply(), want);
            assert_eq!(WireError::from(e.clone()).varlink_name(), want["error"]);
        }
        let w = WireError::from(NtmsError::Busy { message: "m".into() });
        assert_eq!(w.varlink_name(), "io.rsmd.Ntms.Busy");
        assert_eq!(w.to_reply()["parameters"]["code"], 170);
    }
}
