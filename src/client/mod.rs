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
//! The socket is the explicit path if given, else `$RSMD_SOCKET`, else [`DEFAULT_SOCKET`] when it exists, else the
//! demo's socket ([`locate`] has the rule, shared with `rsmd --demo`). A socket that cannot be reached is
//! [`NtmsError::NotConnected`], as `OpenNtmsSession` reports when it cannot reach the service, with a message
//! that says why: nothing there, a directory, not a socket, nobody listening. A socket this user may not open is
//! [`NtmsError::AccessDenied`].
//!
//! # Timeouts
//!
//! rsmd answers every call at once except those that wait for the hardware, so a daemon that accepts a
//! connection and then says nothing is hung, and a call must not wait for it forever. Each connection has
//! [`Timeouts`]: connecting may wait [`Timeouts::connect`] (only when rsmd is not accepting and its queue is full),
//! and a call rsmd answers at once may wait [`Timeouts::reply`] for its answer; then it fails with
//! [`NtmsError::Timeout`] and the connection is dropped. The calls that wait for the hardware have no reply
//! timeout: `MountMedia` (unless `nowait`; with its own `timeout_ms` it waits that long plus the reply timeout),
//! `DismountMedia` (unless `deferred`), `EjectMedia`, `InjectMedia`, `CleanDrive`, `AccessLibraryDoor`,
//! `WaitForOperatorRequest` (with its own `timeout_ms`: that long plus the reply timeout), and the notification
//! stream.

pub mod format;
pub mod locate;
pub mod mtx;
pub mod remote;

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
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
    AllocateReply, CreatePoolReply, DescriptionReply, EnumerateReply, InventoryMode, MountFlags, MountReply,
    Notification, ObjectChanges, ObjectDetails, ObjectInfo, ObjectReply, ObjectType, OpenSessionReply, PoolAction,
    RequestReply, ServiceInfo,
};
use crate::proto::{NtmsError, PROTOCOL_VERSION};

pub use locate::{
    demo_root, socket_path, SocketLocation, SocketOrigin, SocketSearch, DEFAULT_SOCKET, DEMO_SOCKET_NAME, SOCKET_ENV,
};

/// How long a connection waits for rsmd (see the module's section on timeouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting, when rsmd does not accept connections and its listen queue is full.
    pub connect: Duration,
    /// The answer to a call rsmd answers at once (all but the calls that wait for the hardware).
    pub reply: Duration,
}

/// The default [`Timeouts`]: 10 s each. rsmd's loop never blocks, so a quick call that takes this long means a
/// hung daemon.
pub const DEFAULT_TIMEOUTS: Timeouts = Timeouts { connect: Duration::from_secs(10), reply: Duration::from_secs(10) };

impl Default for Timeouts {
    fn default() -> Timeouts {
        DEFAULT_TIMEOUTS
    }
}

/// `d` as people read it: `10 s`, `1.5 s`, `200 ms`.
fn show_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn lost(path: &Path, what: &str) -> NtmsError {
    NtmsError::NotConnected { message: format!("connection to rsmd at {} lost: {what}", path.display()) }
}

/// Why `path` cannot be connected to, said precisely: nothing there, a directory, a file that is not a socket, a
/// socket nobody listens on, a socket this user may not open.
fn connect_error(path: &Path, e: &std::io::Error) -> NtmsError {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let shown = path.display();
    let meta = std::fs::metadata(path);
    if e.kind() == ErrorKind::PermissionDenied {
        let detail = match &meta {
            Ok(m) => {
                let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(m.gid()))
                    .ok()
                    .flatten()
                    .map_or_else(|| m.gid().to_string(), |g| g.name);
                format!(" (mode {:04o}, group {group})", m.permissions().mode() & 0o7777)
            }
            Err(_) => " (a directory on its path is closed to this user)".into(),
        };
        return NtmsError::AccessDenied { message: format!("this user may not open rsmd's socket {shown}{detail}") };
    }
    let message = match meta {
        Err(m) if m.kind() == ErrorKind::NotFound => format!("no socket at {shown}: rsmd is not running there"),
        Ok(m) if m.is_dir() => format!("{shown} is a directory, not rsmd's socket"),
        Ok(m) if !m.file_type().is_socket() => format!("{shown} is not a socket, so not rsmd's"),
        Ok(_) if e.kind() == ErrorKind::ConnectionRefused => {
            format!("nothing listens on {shown}: rsmd has stopped and left its socket behind")
        }
        _ => format!("cannot reach rsmd at {shown} ({e})"),
    };
    NtmsError::NotConnected { message }
}

/// How long a call may wait for its (first) answer: `None` for the calls that wait for the hardware.
fn reply_wait(method: Option<&Method>, timeouts: &Timeouts) -> Option<Duration> {
    match method {
        Some(Method::MountMedia { flags, timeout_ms, .. }) if !flags.nowait => {
            timeout_ms.map(|t| Duration::from_millis(t).saturating_add(timeouts.reply))
        }
        Some(Method::AllocateMedia { error_if_unavailable: false, timeout_ms, .. }) => {
            timeout_ms.map(|t| Duration::from_millis(t).saturating_add(timeouts.reply))
        }
        Some(Method::WaitForOperatorRequest { timeout_ms, .. }) => {
            timeout_ms.map(|t| Duration::from_millis(t).saturating_add(timeouts.reply))
        }
        Some(
            Method::DismountMedia { deferred: false, .. }
            | Method::EjectMedia { .. }
            | Method::InjectMedia { .. }
            | Method::CleanDrive { .. }
            | Method::MoveMedia { .. }
            | Method::AccessLibraryDoor { .. }
            | Method::WaitForNotification { .. },
        ) => None,
        _ => Some(timeouts.reply),
    }
}

/// Connects a Unix stream socket to `path`, waiting at most `timeout` when the listener's queue is full.
fn connect_stream(path: &Path, timeout: Duration) -> Result<UnixStream, NtmsError> {
    use nix::sys::socket::{connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, UnixAddr};
    use nix::sys::time::TimeVal;
    let io = |e: nix::Error| std::io::Error::from(e);
    let addr = UnixAddr::new(path).map_err(|e| NtmsError::NotConnected {
        message: format!("cannot use {} as a socket path ({})", path.display(), io(e)),
    })?;
    let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| NtmsError::NotConnected { message: format!("cannot create a socket ({})", io(e)) })?;
    // A blocking connect() to a Unix socket waits, for at most SO_SNDTIMEO, while the listener's queue is full;
    // then it fails with EAGAIN. The same bound then applies to sending calls.
    let micros = i64::try_from(timeout.as_micros()).unwrap_or(i64::MAX).max(1);
    let tv = TimeVal::new(micros / 1_000_000, micros % 1_000_000);
    setsockopt(&fd, sockopt::SendTimeout, &tv)
        .map_err(|e| NtmsError::NotConnected { message: format!("cannot configure a socket ({})", io(e)) })?;
    match connect(fd.as_raw_fd(), &addr) {
        Ok(()) => Ok(UnixStream::from(fd)),
        Err(nix::Error::EAGAIN) => Err(NtmsError::Timeout {
            message: format!(
                "rsmd at {} did not accept the connection within {} (its queue is full: it may be hung)",
                path.display(),
                show_duration(timeout)
            ),
        }),
        Err(e) => Err(connect_error(path, &io(e))),
    }
}

/// One blocking Varlink connection.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    decoder: FrameDecoder,
    path: PathBuf,
    timeouts: Timeouts,
    /// The stream is out of step (I/O error, garbage, an abandoned stream of replies): do not reuse it.
    broken: bool,
    /// For a connection to another host: the ssh process carrying it.
    tunnel: Option<remote::Tunnel>,
}

impl Connection {
    /// Connects to the socket at `path` with the [default timeouts](DEFAULT_TIMEOUTS). An unreachable socket →
    /// `NotConnected` (the message says why); a socket this user may not open → `AccessDenied`.
    pub fn connect(path: &Path) -> Result<Connection, NtmsError> {
        Connection::connect_with(path, DEFAULT_TIMEOUTS)
    }

    /// Connects to the socket at `path` with `timeouts`; a listener that accepts nothing for
    /// `timeouts.connect` → `Timeout`.
    pub fn connect_with(path: &Path, timeouts: Timeouts) -> Result<Connection, NtmsError> {
        let stream = connect_stream(path, timeouts.connect)?;
        Ok(Connection {
            stream,
            decoder: FrameDecoder::with_limit(crate::proto::frame::MAX_REPLY),
            path: path.to_owned(),
            timeouts,
            broken: false,
            tunnel: None,
        })
    }

    /// Connects to the rsmd of `server` (`[USER@]HOST[:PORT]`, another host) through `ssh HOST rsm bridge` (see
    /// [`remote`]). Failures to reach it show at the first call, as OpenSession's errors.
    pub fn connect_remote(server: &str, timeouts: Timeouts) -> Result<Connection, NtmsError> {
        let (stream, tunnel) = remote::connect(server)?;
        Ok(Connection {
            stream,
            decoder: FrameDecoder::with_limit(crate::proto::frame::MAX_REPLY),
            path: PathBuf::from(format!("ssh:{server}")),
            timeouts,
            broken: false,
            tunnel: Some(tunnel),
        })
    }

    /// Connects to the socket chosen by [`socket_path`] (`explicit`, `$RSMD_SOCKET`, the default or the demo's).
    pub fn open(explicit: Option<&Path>) -> Result<Connection, NtmsError> {
        Connection::open_with(explicit, DEFAULT_TIMEOUTS)
    }

    /// [`Connection::open`] with `timeouts`. When nothing was found, the error lists the places tried.
    pub fn open_with(explicit: Option<&Path>, timeouts: Timeouts) -> Result<Connection, NtmsError> {
        let location = SocketSearch::from_env(explicit).locate();
        Connection::connect_with(&location.path, timeouts).map_err(|e| explain(e, &location))
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

    /// Whether the connection is unusable (after an I/O error, an unparsable reply, a reply that did not come in
    /// time, or an abandoned stream).
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
        let method = Method::parse(call).ok();
        let sent = self.send(call, reply_wait(method.as_ref(), &self.timeouts));
        let received = sent.and_then(|()| self.receive(&call.method));
        let received = match (received, self.tunnel.as_mut()) {
            // The ssh connection ended: say why, as ssh (or the bridge beyond it) told.
            (Err(e @ NtmsError::NotConnected { .. }), Some(t)) => Err(t.failure(e)),
            (r, _) => r,
        };
        match received? {
            Response::Reply(reply) if reply.continues => {
                self.broken = true;
                Err(NtmsError::InvalidMessage { message: "rsmd streamed replies to a single call".into() })
            }
            Response::Reply(reply) => Ok(Value::Object(reply.parameters)),
            Response::Error(e) => Err(NtmsError::from_reply(&e.error, &e.parameters)),
        }
    }

    /// Calls `method` with `"more": true`; the iterator yields each reply's parameters until the last one (or an
    /// error, which ends the stream). Dropping the iterator early leaves the connection broken. Replies may be
    /// as far apart as they like: a stream has no reply timeout.
    pub fn call_more(&mut self, method: &str, parameters: Map<String, Value>) -> Result<Replies<'_>, NtmsError> {
        let mut call = Call::new(method, parameters);
        call.more = true;
        self.call_more_envelope(&call)
    }

    fn call_more_envelope(&mut self, call: &Call) -> Result<Replies<'_>, NtmsError> {
        let mut call = call.clone();
        call.more = true;
        self.send(&call, None)?;
        Ok(Replies { conn: self, method: call.method, done: false })
    }

    /// Sends `call`; its answers may then take `wait` each (`None`: as long as they need).
    fn send(&mut self, call: &Call, wait: Option<Duration>) -> Result<(), NtmsError> {
        if self.broken {
            return Err(lost(&self.path, "connection out of step"));
        }
        if let Err(e) = self.stream.set_read_timeout(wait) {
            self.broken = true;
            return Err(lost(&self.path, &e.to_string()));
        }
        let bytes = call.encode();
        if let Err(e) = self.stream.write_all(&bytes) {
            self.broken = true;
            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                return Err(NtmsError::Timeout {
                    message: format!(
                        "rsmd at {} did not read {} within {}",
                        self.path.display(),
                        short_method(&call.method),
                        show_duration(self.timeouts.connect)
                    ),
                });
            }
            return Err(lost(&self.path, &e.to_string()));
        }
        Ok(())
    }

    fn receive(&mut self, method: &str) -> Result<Response, NtmsError> {
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
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    self.broken = true;
                    let waited = self.stream.read_timeout().ok().flatten().unwrap_or(self.timeouts.reply);
                    return Err(NtmsError::Timeout {
                        message: format!(
                            "rsmd at {} did not answer {} within {}",
                            self.path.display(),
                            short_method(method),
                            show_duration(waited)
                        ),
                    });
                }
                Err(e) => {
                    self.broken = true;
                    return Err(lost(&self.path, &e.to_string()));
                }
            }
        }
    }
}

/// `OpenSession` for `io.rsmd.Ntms.OpenSession`.
fn short_method(method: &str) -> &str {
    method.rsplit('.').next().unwrap_or(method)
}

/// Adds to a connection error what the socket search tried, when the socket was not given.
fn explain(e: NtmsError, location: &SocketLocation) -> NtmsError {
    match e {
        NtmsError::NotConnected { .. } if location.origin == SocketOrigin::NotFound => {
            let tried: Vec<String> = location.tried.iter().map(|p| p.display().to_string()).collect();
            let mut message = format!(
                "rsmd is not running: no socket to use at {} (start rsmd or `rsmd --demo`, or give the socket \
                 with --socket or ${SOCKET_ENV})",
                tried.join(", nor at ")
            );
            for note in &location.skipped {
                message.push_str("; ");
                message.push_str(note);
            }
            NtmsError::NotConnected { message }
        }
        other => other,
    }
}

/// The replies to a `more` call, in order.
#[derive(Debug)]
pub struct Replies<'a> {
    conn: &'a mut Connection,
    method: String,
    done: bool,
}

impl Iterator for Replies<'_> {
    type Item = Result<Value, NtmsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.conn.receive(&self.method) {
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

/// Objects per page when [`Session::enumerate`] lists them.
pub const ENUMERATE_PAGE: u32 = 1000;

/// How to open a session.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// The socket; `None` means `$RSMD_SOCKET`, [`DEFAULT_SOCKET`] or the demo's (see [`locate`]).
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
    version: u32,
    timeouts: Timeouts,
    pool: Mutex<Vec<Connection>>,
    closed: AtomicBool,
    /// A session on another host (`[USER@]HOST[:PORT]`): its one connection through ssh is shared by its calls,
    /// one after another (the session belongs to the bridge process at the other end, so a second ssh connection
    /// could not use it).
    remote: Option<String>,
    /// Signalled when a remote session's connection is given back.
    returned: std::sync::Condvar,
    /// A remote session's connection broke: the session ended with it.
    lost: AtomicBool,
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

    /// Opens a session with explicit options (socket, waiting for the daemon to become ready) and the
    /// [default timeouts](DEFAULT_TIMEOUTS).
    pub fn open_with(
        opts: &SessionOptions,
        server: Option<&str>,
        application: Option<&str>,
        options: u32,
    ) -> Result<Session, NtmsError> {
        Session::open_with_timeouts(opts, DEFAULT_TIMEOUTS, server, application, options)
    }

    /// Opens a session with explicit options and timeouts, which every connection of the session uses.
    pub fn open_with_timeouts(
        opts: &SessionOptions,
        timeouts: Timeouts,
        server: Option<&str>,
        application: Option<&str>,
        options: u32,
    ) -> Result<Session, NtmsError> {
        // Another host: through ssh, to that host's rsmd, which is then "this computer" (no server name to check).
        let remote = server.filter(|s| !remote::is_local(s) && remote::is_host(s)).map(str::to_owned);
        let method = Method::OpenSession {
            server: if remote.is_some() { None } else { server.map(str::to_owned) },
            application: application.map(str::to_owned),
            options,
            version: Some(PROTOCOL_VERSION),
        };
        // The budget counts time spent sleeping between attempts, not the attempts themselves (quick local
        // calls): the library reads no clock (STYLE rule 1 keeps clock reads in the server).
        let mut budget = opts.wait_ready.unwrap_or(Duration::ZERO);
        let mut backoff = Duration::from_millis(20);
        loop {
            // Looked for again at each attempt: a demo that is starting creates its socket meanwhile.
            let location = SocketSearch::from_env(opts.socket.as_deref()).locate();
            let connection = match &remote {
                Some(r) => Connection::connect_remote(r, timeouts),
                None => Connection::connect_with(&location.path, timeouts),
            };
            let attempt = connection.and_then(|mut conn| {
                let reply: OpenSessionReply = decode(conn.call_method(&method)?)?;
                Ok((conn, reply))
            });
            match attempt {
                Ok((conn, reply)) => {
                    return Ok(Session {
                        socket: location.path,
                        id: reply.session,
                        version: reply.version,
                        timeouts,
                        pool: Mutex::new(vec![conn]),
                        closed: AtomicBool::new(false),
                        remote,
                        returned: std::sync::Condvar::new(),
                        lost: AtomicBool::new(false),
                    })
                }
                Err(e @ (NtmsError::NotReady { .. } | NtmsError::NotConnected { .. })) => {
                    if budget.is_zero() {
                        return Err(if remote.is_some() { e } else { explain(e, &location) });
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

    /// The daemon's protocol version (from `OpenSession`).
    pub fn protocol_version(&self) -> u32 {
        self.version
    }

    fn take(&self) -> Result<Connection, NtmsError> {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(server) = &self.remote {
            // The one connection: wait for the call that has it (or learn that it broke).
            loop {
                if self.lost.load(Ordering::SeqCst) {
                    return Err(NtmsError::NotConnected {
                        message: format!("the ssh connection to {server} was lost; the session ended with it"),
                    });
                }
                if let Some(conn) = pool.pop() {
                    return Ok(conn);
                }
                pool = self.returned.wait(pool).unwrap_or_else(|p| p.into_inner());
            }
        }
        match pool.pop() {
            Some(conn) => Ok(conn),
            None => {
                drop(pool);
                Connection::connect_with(&self.socket, self.timeouts)
            }
        }
    }

    fn give_back(&self, conn: Connection) {
        if !conn.is_broken() {
            self.pool.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        } else if self.remote.is_some() {
            self.lost.store(true, Ordering::SeqCst);
        }
        self.returned.notify_all();
    }

    /// The host of a session on another host (`Session::open(server: Some(HOST))`), None for this host's rsmd.
    pub fn remote(&self) -> Option<&str> {
        self.remote.as_deref()
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

    /// `CloseNtmsSession`. Dropping a session closes it too, ignoring errors. After [`Session::abort`] it does
    /// nothing.
    pub fn close(self) -> Result<(), NtmsError> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.call(&Method::CloseSession { session: self.id.clone() }).map(|_| ())
    }

    /// Ends the session now, from any thread, while other threads wait in calls (`CloseNtmsSession` on a
    /// connection of its own): the daemon cancels the session's queued and waiting requests (a job already
    /// moving is undone first), and the calls waiting for them fail with `Cancelled`. A mount that completed
    /// before stays mounted. Later calls fail with `InvalidHandle`; [`Session::close`] and dropping then send
    /// nothing.
    pub fn abort(&self) -> Result<(), NtmsError> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.call(&Method::CloseSession { session: self.id.clone() }).map(|_| ())
    }

    /// `org.varlink.service.GetInfo`: the daemon's vendor, product, version and interfaces.
    pub fn get_info(&self) -> Result<ServiceInfo, NtmsError> {
        self.call_as(&Method::GetInfo)
    }

    /// `EnumerateNtmsObject`: objects of `object_type` inside `container` (or everywhere), asked for in pages of
    /// [`ENUMERATE_PAGE`] so that a large library's listing never holds the daemon (or its other clients) long.
    pub fn enumerate(&self, container: Option<&str>, object_type: ObjectType) -> Result<Vec<ObjectInfo>, NtmsError> {
        let mut objects = Vec::new();
        let mut after = None;
        loop {
            let reply: EnumerateReply = self.call_as(&Method::EnumerateObjects {
                session: self.id.clone(),
                container: container.map(str::to_owned),
                object_type,
                after: after.take(),
                limit: Some(ENUMERATE_PAGE),
            })?;
            objects.extend(reply.objects);
            match reply.next {
                Some(next) => after = Some(next),
                None => return Ok(objects),
            }
        }
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
        self.mount_in_pool(media, drive, flags, priority, timeout, None)
    }

    /// [`Session::mount`]; a cartridge that is available in Free is first allocated into `pool` (an application
    /// pool's path or id) for this session's application.
    pub fn mount_in_pool(
        &self,
        media: &[&str],
        drive: Option<&str>,
        flags: MountFlags,
        priority: i32,
        timeout: Option<Duration>,
        pool: Option<&str>,
    ) -> Result<MountReply, NtmsError> {
        self.call_as(&Method::MountMedia {
            session: self.id.clone(),
            media: media.iter().map(|m| (*m).to_owned()).collect(),
            drive: drive.map(str::to_owned),
            flags,
            priority,
            timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            pool: pool.map(str::to_owned),
        })
    }

    /// `EjectNtmsMedia`: the cartridge (id or barcode) goes to a free mail slot; returns the request once it is
    /// there.
    pub fn eject(&self, media: &str) -> Result<String, NtmsError> {
        self.eject_many(&[media], false)
    }

    /// `EjectNtmsMedia` of several cartridges of one library, staged for one cycle of the mail slots; those that do
    /// not fit wait for an operator to empty the slots (or, with `error_if_full`, the call fails `IePortFull`).
    /// Returns the request once the last one is in a mail slot.
    pub fn eject_many(&self, media: &[&str], error_if_full: bool) -> Result<String, NtmsError> {
        let media = media.iter().map(|m| (*m).to_owned()).collect();
        let reply: RequestReply =
            self.call_as(&Method::EjectMedia { session: self.id.clone(), media, error_if_full })?;
        Ok(reply.request)
    }

    /// `AccessNtmsLibraryDoor`: unlocks the library's door for the operator; returns the request once unlocked
    /// (robot work waits until the door has been opened and closed).
    pub fn access_door(&self, library: &str, inventory: InventoryMode) -> Result<String, NtmsError> {
        let reply: RequestReply = self.call_as(&Method::AccessLibraryDoor {
            session: self.id.clone(),
            library: library.to_owned(),
            inventory,
        })?;
        Ok(reply.request)
    }

    /// Moves a cartridge (id or barcode) to an empty storage or mail slot of its library (the slot's id), as
    /// `mtx transfer` does; returns the request once it is there.
    pub fn move_media(&self, media: &str, destination: &str) -> Result<String, NtmsError> {
        let reply: RequestReply = self.call_as(&Method::MoveMedia {
            session: self.id.clone(),
            media: media.to_owned(),
            destination: destination.to_owned(),
        })?;
        Ok(reply.request)
    }

    /// `CleanNtmsDrive`: cleans the drive (id); returns the request once it is clean.
    pub fn clean_drive(&self, drive: &str) -> Result<String, NtmsError> {
        let reply: RequestReply =
            self.call_as(&Method::CleanDrive { session: self.id.clone(), drive: drive.to_owned() })?;
        Ok(reply.request)
    }

    /// `SubmitNtmsOperatorRequest`: asks the operators; returns the request's (id, number).
    pub fn submit_operator(
        &self,
        kind: crate::proto::types::OpRequestKind,
        text: &str,
        object: Option<&str>,
    ) -> Result<(String, u64), NtmsError> {
        let m = Method::SubmitOperatorRequest {
            session: self.id.clone(),
            kind,
            text: text.to_owned(),
            object: object.map(str::to_owned),
        };
        let reply = self.call(&m)?;
        let id = reply.get("request").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        Ok((id, reply.get("number").and_then(serde_json::Value::as_u64).unwrap_or_default()))
    }

    /// `WaitForNtmsOperatorRequest`: returns once the request (id or number) is satisfied; `RequestRefused`,
    /// `Cancelled`, `Timeout` otherwise.
    pub fn wait_operator(&self, request: &str, timeout: Option<Duration>) -> Result<(), NtmsError> {
        let m = Method::WaitForOperatorRequest {
            session: self.id.clone(),
            request: request.to_owned(),
            timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        };
        self.call(&m).map(|_| ())
    }

    /// `SatisfyNtmsOperatorRequest`.
    pub fn satisfy_operator(&self, request: &str) -> Result<(), NtmsError> {
        self.call(&Method::SatisfyOperatorRequest { session: self.id.clone(), request: request.to_owned() }).map(|_| ())
    }

    /// `RefuseNtmsOperatorRequest`, with the reason the submitter is told.
    pub fn refuse_operator(&self, request: &str, reason: Option<&str>) -> Result<(), NtmsError> {
        let m = Method::RefuseOperatorRequest {
            session: self.id.clone(),
            request: request.to_owned(),
            reason: reason.map(str::to_owned),
        };
        self.call(&m).map(|_| ())
    }

    /// `CancelNtmsOperatorRequest`: withdraws one's own request.
    pub fn cancel_operator(&self, request: &str) -> Result<(), NtmsError> {
        self.call(&Method::CancelOperatorRequest { session: self.id.clone(), request: request.to_owned() }).map(|_| ())
    }

    /// `InjectNtmsMedia`: the cartridges in the library's mail slots go into storage; returns the request once
    /// they are in.
    pub fn inject(&self, library: &str) -> Result<String, NtmsError> {
        let reply: RequestReply =
            self.call_as(&Method::InjectMedia { session: self.id.clone(), library: library.to_owned() })?;
        Ok(reply.request)
    }

    /// `CreateNtmsMediaPool`: opens or creates an application pool; returns its id and whether it was created.
    pub fn create_pool(
        &self,
        name: &str,
        media_type: Option<&str>,
        action: PoolAction,
    ) -> Result<CreatePoolReply, NtmsError> {
        self.call_as(&Method::CreateMediaPool {
            session: self.id.clone(),
            name: name.to_owned(),
            media_type: media_type.map(str::to_owned),
            action,
        })
    }

    /// `DeleteNtmsMediaPool`.
    pub fn delete_pool(&self, pool: &str) -> Result<(), NtmsError> {
        self.call(&Method::DeleteMediaPool { session: self.id.clone(), pool: pool.to_owned() }).map(|_| ())
    }

    /// `MoveToNtmsMediaPool`.
    pub fn move_to_pool(&self, media: &str, pool: &str) -> Result<(), NtmsError> {
        let m = Method::MoveToMediaPool { session: self.id.clone(), media: media.to_owned(), pool: pool.to_owned() };
        self.call(&m).map(|_| ())
    }

    /// `AllocateNtmsMedia`: a given cartridge or any available one of `pool`; waits up to `timeout` (forever
    /// when None) unless `error_if_unavailable`.
    pub fn allocate(
        &self,
        pool: &str,
        media: Option<&str>,
        error_if_unavailable: bool,
        timeout: Option<Duration>,
    ) -> Result<AllocateReply, NtmsError> {
        self.call_as(&Method::AllocateMedia {
            session: self.id.clone(),
            pool: pool.to_owned(),
            media: media.map(str::to_owned),
            new: false,
            error_if_unavailable,
            timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        })
    }

    /// `DeallocateNtmsMedia`.
    pub fn deallocate(&self, logical_media: &str) -> Result<(), NtmsError> {
        let m = Method::DeallocateMedia { session: self.id.clone(), logical_media: logical_media.to_owned() };
        self.call(&m).map(|_| ())
    }

    /// `SetNtmsMediaComplete`.
    pub fn set_complete(&self, logical_media: &str) -> Result<(), NtmsError> {
        let m = Method::SetMediaComplete { session: self.id.clone(), logical_media: logical_media.to_owned() };
        self.call(&m).map(|_| ())
    }

    /// `SwapNtmsMedia`.
    pub fn swap(&self, first: &str, second: &str) -> Result<(), NtmsError> {
        let m = Method::SwapMedia { session: self.id.clone(), first: first.to_owned(), second: second.to_owned() };
        self.call(&m).map(|_| ())
    }

    /// `DecommissionNtmsMedia`.
    pub fn decommission(&self, media: &str) -> Result<(), NtmsError> {
        self.call(&Method::DecommissionMedia { session: self.id.clone(), media: media.to_owned() }).map(|_| ())
    }

    /// `DeleteNtmsMedia`.
    pub fn delete_media(&self, media: &str) -> Result<(), NtmsError> {
        self.call(&Method::DeleteMedia { session: self.id.clone(), media: media.to_owned() }).map(|_| ())
    }

    /// `EnableNtmsObject` / `DisableNtmsObject`.
    pub fn set_enabled(&self, object: &str, enabled: bool) -> Result<(), NtmsError> {
        let object = object.to_owned();
        let session = self.id.clone();
        let m =
            if enabled { Method::EnableObject { session, object } } else { Method::DisableObject { session, object } };
        self.call(&m).map(|_| ())
    }

    /// `SetNtmsObjectInformation` with field-level changes; with `version`, refused (`RevisionMismatch`) when
    /// the object changed since it was read.
    pub fn set_object_information(
        &self,
        object: &str,
        version: Option<u64>,
        changes: ObjectChanges,
    ) -> Result<ObjectInfo, NtmsError> {
        let m = Method::SetObjectInformation { session: self.id.clone(), object: object.to_owned(), version, changes };
        let reply: ObjectReply = self.call_as(&m)?;
        Ok(reply.object)
    }

    /// `DismountNtmsMedia` / `DismountNtmsDrive`.
    pub fn dismount(&self, target: DismountTarget, deferred: bool) -> Result<(), NtmsError> {
        self.call(&Method::DismountMedia { session: self.id.clone(), target, deferred, to: None }).map(|_| ())
    }

    /// `DismountNtmsMedia` into a given storage or mail slot (its id), as `mtx unload SLOT DRIVE` does.
    pub fn dismount_to(&self, target: DismountTarget, to: &str) -> Result<(), NtmsError> {
        let m = Method::DismountMedia { session: self.id.clone(), target, deferred: false, to: Some(to.to_owned()) };
        self.call(&m).map(|_| ())
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
        let mut conn = Connection::connect_with(&self.socket, self.timeouts)?;
        let call = Method::WaitForNotification { session: self.id.clone(), object_type }.to_call();
        conn.send(&call, None)?;
        Ok(Notifications { conn, method: call.method, done: false })
    }

    /// Resolves a drive given as a drive number (`0`, mtx's numbering), an id, or a serial number (in any case)
    /// to its id. A number or serial must name exactly one drive across all libraries: none → `ObjectNotFound`,
    /// several → `InvalidParameter`.
    pub fn resolve_drive(&self, spec: &str) -> Result<String, NtmsError> {
        pick_drive(&self.enumerate(None, ObjectType::Drive)?, spec)
    }

    /// Resolves a cartridge given as an id or a barcode, where a barcode may be given in any case when that
    /// names one cartridge: returns what to pass to the daemon (the exact barcode or id). Barcodes that differ
    /// only in case → `InvalidParameter`; an unknown one is returned unchanged (the daemon answers
    /// `ObjectNotFound`).
    pub fn resolve_media(&self, spec: &str) -> Result<String, NtmsError> {
        pick_media(&self.enumerate(None, ObjectType::PhysicalMedia)?, spec)
    }
}

/// The id of the drive among `drives` that `spec` names (see [`Session::resolve_drive`]).
pub fn pick_drive(drives: &[ObjectInfo], spec: &str) -> Result<String, NtmsError> {
    let details = |o: &ObjectInfo| match &o.details {
        ObjectDetails::Drive(d) => Some(d.clone()),
        _ => None,
    };
    let unique = |matching: Vec<&ObjectInfo>, what: &str| match matching.as_slice() {
        [one] => Ok(Some(one.id.clone())),
        [] => Ok(None),
        _ => Err(NtmsError::InvalidParameter {
            message: format!("{what} names drives in several libraries; give the drive's id"),
        }),
    };
    if let Ok(number) = spec.parse::<u32>() {
        let matching = drives.iter().filter(|o| details(o).is_some_and(|d| d.number == number)).collect();
        return unique(matching, &format!("drive number {number}"))?
            .ok_or_else(|| NtmsError::ObjectNotFound { message: format!("no drive number {number}") });
    }
    if let Some(d) = drives.iter().find(|o| o.id.eq_ignore_ascii_case(spec)) {
        return Ok(d.id.clone());
    }
    let matching = drives
        .iter()
        .filter(|o| details(o).and_then(|d| d.serial).is_some_and(|s| s.trim().eq_ignore_ascii_case(spec.trim())))
        .collect();
    unique(matching, &format!("serial {spec}"))?
        .ok_or_else(|| NtmsError::ObjectNotFound { message: format!("no drive with number, id or serial '{spec}'") })
}

/// What to ask the daemon for when a cartridge is given as `spec` (see [`Session::resolve_media`]).
pub fn pick_media(media: &[ObjectInfo], spec: &str) -> Result<String, NtmsError> {
    let barcode = |o: &ObjectInfo| match &o.details {
        ObjectDetails::PhysicalMedia(m) => m.barcode.clone(),
        _ => None,
    };
    if media.iter().any(|o| o.id == spec || barcode(o).as_deref() == Some(spec)) {
        return Ok(spec.to_owned());
    }
    if let Some(o) = media.iter().find(|o| o.id.eq_ignore_ascii_case(spec)) {
        return Ok(o.id.clone());
    }
    let mut matching: Vec<String> = media.iter().filter_map(barcode).filter(|b| b.eq_ignore_ascii_case(spec)).collect();
    matching.sort();
    matching.dedup();
    match matching.len() {
        0 => Ok(spec.to_owned()),
        1 => Ok(matching.remove(0)),
        _ => Err(NtmsError::InvalidParameter {
            message: format!(
                "barcode {spec} matches {} (barcodes differ in case): give it exactly",
                matching.join(", ")
            ),
        }),
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
    method: String,
    done: bool,
}

impl Iterator for Notifications {
    type Item = Result<Notification, NtmsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.conn.receive(&self.method) {
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
