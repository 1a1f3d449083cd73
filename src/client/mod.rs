//! The client library: blocking connections to rsmd and RSM-style sessions on top of them.
//!
//! ```no_run
//! use rsmd::client::Session;
//! use rsmd::proto::ObjectType;
//!
//! let session = Session::open(None, Some("backup"), 0)?;
//! for drive in session.enumerate(None, ObjectType::Drive)? {
//!     println!("{} {}", drive.name, drive.state);
//! }
//! session.close()?;
//! # Ok::<(), rsmd::proto::NtmsError>(())
//! ```
//!
//! A [`Connection`] is one Unix stream socket speaking Varlink; replies come back in call order, so a long call
//! (a mount waits for the robot) occupies it. A [`Session`] therefore keeps a small pool of connections: each call
//! takes one (opening a new one when the pool is empty) and puts it back afterwards, so calls from several threads
//! run in parallel. All connections belong to this process, and the daemon accepts the session on each of them.
//!
//! The socket is the explicit path if given, else `$RSMD_SOCKET`, else [`DEFAULT_SOCKET`]. A missing socket or a
//! refused connection is [`NtmsError::NotConnected`], as `OpenNtmsSession` reports when it cannot reach the
//! service.

pub mod format;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::proto::envelope::{Call, Response};
use crate::proto::frame::FrameDecoder;
use crate::proto::method::{DismountTarget, Method};
use crate::proto::types::{
    DescriptionReply, EnumerateReply, InventoryMode, MountFlags, MountReply, Notification, ObjectDetails, ObjectInfo,
    ObjectReply, ObjectType, OpenSessionReply, RequestReply, ServiceInfo,
};
use crate::proto::{NtmsError, PROTOCOL_VERSION};

/// Where rsmd listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/rsmd/rsmd.sock";

/// The environment variable that overrides [`DEFAULT_SOCKET`].
pub const SOCKET_ENV: &str = "RSMD_SOCKET";

/// The socket to use: `explicit`, else `$RSMD_SOCKET` (when set and non-empty), else [`DEFAULT_SOCKET`].
pub fn socket_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_owned();
    }
    match std::env::var_os(SOCKET_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

fn lost(path: &Path, what: &str) -> NtmsError {
    NtmsError::NotConnected { message: format!("connection to rsmd at {} lost: {what}", path.display()) }
}

/// One blocking Varlink connection.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    decoder: FrameDecoder,
    path: PathBuf,
    /// The stream is out of step (I/O error, garbage, an abandoned stream of replies): do not reuse it.
    broken: bool,
}

impl Connection {
    /// Connects to the socket at `path`. A missing socket or a refused connection → `NotConnected`; a socket
    /// this user may not open → `AccessDenied`.
    pub fn connect(path: &Path) -> Result<Connection, NtmsError> {
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            ErrorKind::PermissionDenied => {
                NtmsError::AccessDenied { message: format!("cannot open rsmd's socket {}", path.display()) }
            }
            ErrorKind::NotFound | ErrorKind::ConnectionRefused => {
                NtmsError::NotConnected { message: format!("cannot reach rsmd at {}", path.display()) }
            }
            _ => NtmsError::NotConnected { message: format!("cannot reach rsmd at {} ({e})", path.display()) },
        })?;
        Ok(Connection {
            stream,
            decoder: FrameDecoder::with_limit(crate::proto::frame::MAX_REPLY),
            path: path.to_owned(),
            broken: false,
        })
    }

    /// Connects to the socket chosen by [`socket_path`] (`explicit`, `$RSMD_SOCKET`, or the default).
    pub fn open(explicit: Option<&Path>) -> Result<Connection, NtmsError> {
        Connection::connect(&socket_path(explicit))
    }

    /// Sets the largest reply this connection accepts (default [`crate::proto::frame::MAX_REPLY`]); a larger one
    /// fails the call with `MessageTooLarge`. Call before any call.
    pub fn set_reply_limit(&mut self, limit: usize) {
        self.decoder = FrameDecoder::with_limit(limit);
    }

    /// `org.varlink.service.GetInfo`.
    pub fn get_info(&mut self) -> Result<ServiceInfo, NtmsError> {
        decode(self.call_method(&Method::GetInfo)?)
    }

    /// `org.varlink.service.GetInterfaceDescription`: the IDL text of `interface`.
    pub fn get_interface_description(&mut self, interface: &str) -> Result<String, NtmsError> {
        let reply: DescriptionReply =
            decode(self.call_method(&Method::GetInterfaceDescription { interface: interface.to_owned() })?)?;
        Ok(reply.description)
    }

    /// The socket path this connection was made to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the connection is unusable (after an I/O error, an unparsable reply, or an abandoned stream).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Calls `method` (fully qualified) and returns the reply's parameters as a JSON object. An error reply
    /// becomes the matching [`NtmsError`] (see [`NtmsError::from_reply`]).
    pub fn call(&mut self, method: &str, parameters: Map<String, Value>) -> Result<Value, NtmsError> {
        self.call_envelope(&Call::new(method, parameters))
    }

    /// Calls a typed method.
    pub fn call_method(&mut self, method: &Method) -> Result<Value, NtmsError> {
        let call = method.to_call();
        if call.more {
            return self
                .call_more_envelope(&call)?
                .next()
                .unwrap_or_else(|| Err(NtmsError::InvalidMessage { message: "stream ended without a reply".into() }));
        }
        self.call_envelope(&call)
    }

    fn call_envelope(&mut self, call: &Call) -> Result<Value, NtmsError> {
        self.send(call)?;
        match self.receive()? {
            Response::Reply(reply) if reply.continues => {
                self.broken = true;
                Err(NtmsError::InvalidMessage { message: "rsmd streamed replies to a single call".into() })
            }
            Response::Reply(reply) => Ok(Value::Object(reply.parameters)),
            Response::Error(e) => Err(NtmsError::from_reply(&e.error, &e.parameters)),
        }
    }

    /// Calls `method` with `"more": true`; the iterator yields each reply's parameters until the last one (or an
    /// error, which ends the stream). Dropping the iterator early leaves the connection broken.
    pub fn call_more(&mut self, method: &str, parameters: Map<String, Value>) -> Result<Replies<'_>, NtmsError> {
        let mut call = Call::new(method, parameters);
        call.more = true;
        self.call_more_envelope(&call)
    }

    fn call_more_envelope(&mut self, call: &Call) -> Result<Replies<'_>, NtmsError> {
        let mut call = call.clone();
        call.more = true;
        self.send(&call)?;
        Ok(Replies { conn: self, done: false })
    }

    fn send(&mut self, call: &Call) -> Result<(), NtmsError> {
        if self.broken {
            return Err(lost(&self.path, "connection out of step"));
        }
        let bytes = call.encode();
        if let Err(e) = self.stream.write_all(&bytes) {
            self.broken = true;
            return Err(lost(&self.path, &e.to_string()));
        }
        Ok(())
    }

    fn receive(&mut self) -> Result<Response, NtmsError> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.decoder.next_message() {
                Some(Ok(text)) => {
                    return Response::parse(&text).map_err(|e| {
                        self.broken = true;
                        NtmsError::from(e)
                    })
                }
                Some(Err(e)) => {
                    self.broken = true;
                    return Err(e.into());
                }
                None => {}
            }
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.broken = true;
                    return Err(lost(&self.path, "rsmd closed the connection"));
                }
                Ok(n) => self.decoder.extend(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.broken = true;
                    return Err(lost(&self.path, &e.to_string()));
                }
            }
        }
    }
}

/// The replies to a `more` call, in order.
#[derive(Debug)]
pub struct Replies<'a> {
    conn: &'a mut Connection,
    done: bool,
}

impl Iterator for Replies<'_> {
    type Item = Result<Value, NtmsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.conn.receive() {
            Ok(Response::Reply(reply)) => {
                self.done = !reply.continues;
                Ok(Value::Object(reply.parameters))
            }
            Ok(Response::Error(e)) => {
                self.done = true;
                Err(NtmsError::from_reply(&e.error, &e.parameters))
            }
            Err(e) => {
                self.done = true;
                Err(e)
            }
        };
        Some(item)
    }
}

impl Drop for Replies<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.conn.broken = true;
        }
    }
}

/// How to open a session.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// The socket; `None` means `$RSMD_SOCKET` or [`DEFAULT_SOCKET`].
    pub socket: Option<PathBuf>,
    /// While the daemon answers `NotReady` (loading) or cannot be reached (starting), retry with backoff (20 ms
    /// doubling to 1 s) until this much time was spent waiting. `None` fails at once.
    pub wait_ready: Option<Duration>,
}

fn decode<T: DeserializeOwned>(value: Value) -> Result<T, NtmsError> {
    serde_json::from_value(value).map_err(|e| NtmsError::InvalidMessage { message: format!("unexpected reply: {e}") })
}

/// An open RSM session (`OpenNtmsSession`). Send + Sync: share it between threads; calls run in parallel.
#[derive(Debug)]
pub struct Session {
    socket: PathBuf,
    id: String,
    pool: Mutex<Vec<Connection>>,
    closed: AtomicBool,
}

impl Session {
    /// Opens a session on the default socket (`OpenNtmsSession(server, application, options)`).
    pub fn open(server: Option<&str>, application: Option<&str>, options: u32) -> Result<Session, NtmsError> {
        Session::open_with(&SessionOptions::default(), server, application, options)
    }

    /// Opens a session on the socket at `socket`.
    pub fn open_at(
        socket: &Path,
        server: Option<&str>,
        application: Option<&str>,
        options: u32,
    ) -> Result<Session, NtmsError> {
        let opts = SessionOptions { socket: Some(socket.to_owned()), ..SessionOptions::default() };
        Session::open_with(&opts, server, application, options)
    }

    /// Opens a session with explicit options (socket, waiting for the daemon to become ready).
    pub fn open_with(
        opts: &SessionOptions,
        server: Option<&str>,
        application: Option<&str>,
        options: u32,
    ) -> Result<Session, NtmsError> {
        let socket = socket_path(opts.socket.as_deref());
        let method = Method::OpenSession {
            server: server.map(str::to_owned),
            application: application.map(str::to_owned),
            options,
            version: Some(PROTOCOL_VERSION),
        };
        // The budget counts time spent sleeping between attempts, not the attempts themselves (quick local
        // calls): the library reads no clock (STYLE rule 1 keeps clock reads in the server).
        let mut budget = opts.wait_ready.unwrap_or(Duration::ZERO);
        let mut backoff = Duration::from_millis(20);
        loop {
            let attempt = Connection::connect(&socket).and_then(|mut conn| {
                let reply: OpenSessionReply = decode(conn.call_method(&method)?)?;
                Ok((conn, reply))
            });
            match attempt {
                Ok((conn, reply)) => {
                    return Ok(Session {
                        socket,
                        id: reply.session,
                        pool: Mutex::new(vec![conn]),
                        closed: AtomicBool::new(false),
                    })
                }
                Err(e @ (NtmsError::NotReady { .. } | NtmsError::NotConnected { .. })) => {
                    if budget.is_zero() {
                        return Err(e);
                    }
                    let pause = backoff.min(budget);
                    std::thread::sleep(pause);
                    budget -= pause;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The session handle.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn take(&self) -> Result<Connection, NtmsError> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(conn) => Ok(conn),
            None => Connection::connect(&self.socket),
        }
    }

    fn give_back(&self, conn: Connection) {
        if !conn.is_broken() {
            self.pool.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        }
    }

    /// Runs one typed call on a pooled connection.
    pub fn call(&self, method: &Method) -> Result<Value, NtmsError> {
        let mut conn = self.take()?;
        let result = conn.call_method(method);
        self.give_back(conn);
        result
    }

    fn call_as<T: DeserializeOwned>(&self, method: &Method) -> Result<T, NtmsError> {
        decode(self.call(method)?)
    }

    /// Number of idle pooled connections (for tests and diagnostics).
    pub fn idle_connections(&self) -> usize {
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// `CloseNtmsSession`. Dropping a session closes it too, ignoring errors.
    pub fn close(self) -> Result<(), NtmsError> {
        self.closed.store(true, Ordering::SeqCst);
        self.call(&Method::CloseSession { session: self.id.clone() }).map(|_| ())
    }

    /// `EnumerateNtmsObject`: objects of `object_type` inside `container` (or everywhere).
    pub fn enumerate(&self, container: Option<&str>, object_type: ObjectType) -> Result<Vec<ObjectInfo>, NtmsError> {
        let reply: EnumerateReply = self.call_as(&Method::EnumerateObjects {
            session: self.id.clone(),
            container: container.map(str::to_owned),
            object_type,
        })?;
        Ok(reply.objects)
    }

    /// `GetNtmsObjectInformation`: one object by id, or a cartridge by barcode.
    pub fn get_object_information(&self, object: &str) -> Result<ObjectInfo, NtmsError> {
        let reply: ObjectReply =
            self.call_as(&Method::GetObjectInformation { session: self.id.clone(), object: object.to_owned() })?;
        Ok(reply.object)
    }

    /// `MountNtmsMedia`: mounts one of `media` (ids or barcodes) and returns once the drive is ready (at once
    /// with `flags.nowait`).
    pub fn mount(
        &self,
        media: &[&str],
        drive: Option<&str>,
        flags: MountFlags,
        priority: i32,
        timeout: Option<Duration>,
    ) -> Result<MountReply, NtmsError> {
        self.call_as(&Method::MountMedia {
            session: self.id.clone(),
            media: media.iter().map(|m| (*m).to_owned()).collect(),
            drive: drive.map(str::to_owned),
            flags,
            priority,
            timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        })
    }

    /// `DismountNtmsMedia` / `DismountNtmsDrive`.
    pub fn dismount(&self, target: DismountTarget, deferred: bool) -> Result<(), NtmsError> {
        self.call(&Method::DismountMedia { session: self.id.clone(), target, deferred }).map(|_| ())
    }

    /// `CancelNtmsLibraryRequest`.
    pub fn cancel_request(&self, request: &str) -> Result<(), NtmsError> {
        self.call(&Method::CancelLibraryRequest { session: self.id.clone(), request: request.to_owned() }).map(|_| ())
    }

    /// Moves a queued mount or dismount up or down its library's robot queue (`SetNtmsRequestOrder`, by priority).
    pub fn set_request_priority(&self, request: &str, priority: i32) -> Result<(), NtmsError> {
        let m = Method::SetRequestPriority { session: self.id.clone(), request: request.to_owned(), priority };
        self.call(&m).map(|_| ())
    }

    /// The library requests the daemon knows (queued, running and recent).
    pub fn requests(&self) -> Result<Vec<ObjectInfo>, NtmsError> {
        self.enumerate(None, ObjectType::LibRequest)
    }

    /// `InventoryNtmsLibrary`: queues an inventory and returns its request id.
    pub fn inventory(&self, library: &str, mode: InventoryMode) -> Result<String, NtmsError> {
        let reply: RequestReply =
            self.call_as(&Method::InventoryLibrary { session: self.id.clone(), library: library.to_owned(), mode })?;
        Ok(reply.request)
    }

    /// `OpenNtmsNotification` + `WaitForNtmsNotification`: a stream of changes on a dedicated connection.
    pub fn notifications(&self, object_type: Option<ObjectType>) -> Result<Notifications, NtmsError> {
        let mut conn = Connection::connect(&self.socket)?;
        let call = Method::WaitForNotification { session: self.id.clone(), object_type }.to_call();
        conn.send(&call)?;
        Ok(Notifications { conn, done: false })
    }

    /// Resolves a drive given as an id or as a drive number (`0`, mtx's numbering). A number must name exactly
    /// one drive across all libraries, else `ObjectNotFound` or `InvalidParameter` (ambiguous).
    pub fn resolve_drive(&self, spec: &str) -> Result<String, NtmsError> {
        let Ok(number) = spec.parse::<u32>() else {
            return Ok(spec.to_owned());
        };
        let drives = self.enumerate(None, ObjectType::Drive)?;
        let matching: Vec<&ObjectInfo> =
            drives.iter().filter(|d| matches!(&d.details, ObjectDetails::Drive(dd) if dd.number == number)).collect();
        match matching.as_slice() {
            [one] => Ok(one.id.clone()),
            [] => Err(NtmsError::ObjectNotFound { message: format!("no drive number {number}") }),
            _ => Err(NtmsError::InvalidParameter {
                message: format!("drive number {number} exists in several libraries; give the drive id"),
            }),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            let _ = self.call(&Method::CloseSession { session: self.id.clone() });
        }
    }
}

/// A stream of notifications; ends when the daemon ends it or on the first error.
#[derive(Debug)]
pub struct Notifications {
    conn: Connection,
    done: bool,
}

impl Iterator for Notifications {
    type Item = Result<Notification, NtmsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.conn.receive() {
            Ok(Response::Reply(reply)) => {
                self.done = !reply.continues;
                decode(Value::Object(reply.parameters))
            }
            Ok(Response::Error(e)) => Err(NtmsError::from_reply(&e.error, &e.parameters)),
            Err(e) => Err(e),
        };
        if item.is_err() {
            self.done = true;
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests;
