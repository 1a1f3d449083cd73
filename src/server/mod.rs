//! The event loop: listeners, clients, sessions, devices, timers, signals, sd_notify, uevents. The only module that
//! touches mio, sockets, signals or the clock.
//!
//! # Primer
//! One thread, one `mio::Poll`. Sources are named by [`Src`], a typed token. Each turn: wait (timeout = the
//! earliest deadline of any library or client), route each event to its source's handler (`process_*`), which
//! drains until WouldBlock; then pump the libraries (submit their commands, apply their events to the inventory),
//! hand the turn's inventory changes to the store writer as one batch (group commit), move replies whose batch is
//! durable to their clients, and re-register every touched source with the interest its state asks for.
//! Replies and notifications about a change leave only after the change is on disk.
//!
//! Nothing here blocks: devices are asynchronous transports, the store flushes on its own thread (which wakes the
//! loop through a `mio::Waker`), and the inventory is loaded on a thread while clients get `NotReady`.

pub mod client;
pub mod dispatch;
pub mod mounting;
pub mod notify;
pub mod objects;
pub mod requests;
pub mod session;
pub mod start;

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::changer::{DeviceRef, Event, Library, LibraryOptions};
use crate::media::Inventory;
use crate::model::{DriveInfo, Guid, LibraryRecord, LibraryState};
use crate::proto::types::{
    Notification, NotificationOperation, ObjectType, RequestOperation, PRIORITY_MAX, PRIORITY_MIN,
};
use crate::proto::{Call, ErrorReply, Method, NtmsError, Reply, WireError};
use crate::store::{Change, Snapshot, Store, StoreError, Writer};
use crate::transport::{Completion, Transport, TransportError};
use client::{Client, ReadOutcome, Slot};
use notify::Notifier;
use objects::LibraryView;
use requests::Requests;
use session::{Peer, Sessions};
pub use start::ServerError;

/// A poll token, typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Src {
    /// The listening socket.
    Listener,
    /// The waker (store writer, loader).
    Waker,
    /// The signalfd.
    Signals,
    /// Kernel uevents (netlink) or the test injection socket.
    Uevent,
    /// A client connection, by slot.
    Client(usize),
    /// A device of a library: (library index, 0 = changer, 1 + n = drive n).
    Device(usize, usize),
}

const CLIENT: usize = 1 << 40;
const DEVICE: usize = 2 << 40;

impl From<Src> for Token {
    fn from(s: Src) -> Token {
        Token(match s {
            Src::Listener => 0,
            Src::Waker => 1,
            Src::Signals => 2,
            Src::Uevent => 3,
            Src::Client(i) => CLIENT | i,
            Src::Device(l, d) => DEVICE | (l << 20) | d,
        })
    }
}

impl Src {
    /// The source a token names, if any.
    pub fn from_token(t: Token) -> Option<Src> {
        Some(match t.0 {
            0 => Src::Listener,
            1 => Src::Waker,
            2 => Src::Signals,
            3 => Src::Uevent,
            v if v & !(CLIENT - 1) == CLIENT => Src::Client(v & (CLIENT - 1)),
            v if v & !(CLIENT - 1) == DEVICE => Src::Device((v >> 20) & 0xF_FFFF, v & 0xF_FFFF),
            _ => return None,
        })
    }
}

/// A drive device of a library.
#[derive(Debug)]
pub struct DriveDevice {
    /// The transport (None once gone).
    pub transport: Option<Box<dyn Transport>>,
    /// Its sg node or vlib socket.
    pub path: String,
    /// Its non-rewinding tape node.
    pub nst: Option<String>,
}

/// A library the daemon serves: its state machine and its devices.
#[derive(Debug)]
pub struct Lib {
    /// The state machine.
    pub library: Library,
    /// Its inventory id (known after probing).
    pub id: Option<Guid>,
    /// Configured name.
    pub name: Option<String>,
    /// The changer device (sg node or vlib socket), for people.
    pub label: String,
    /// The changer transport (None once gone).
    pub changer: Option<Box<dyn Transport>>,
    /// Drive devices, by the index the library uses.
    pub drives: Vec<DriveDevice>,
    /// Configured drive map (serial → address).
    pub drive_map: Vec<(String, u16)>,
    /// Source description for de-duplication on hot-plug.
    pub key: String,
    /// Replaced by a newer instance of the same library (its device came back under a new node): kept only so
    /// that token indexes stay stable, ignored everywhere else.
    pub retired: bool,
    /// How long a deferred dismount leaves a cartridge loaded.
    pub deferred_dismount_ms: u64,
    /// Sources whose interest must be re-registered this turn.
    dirty: bool,
}

/// A finished call to answer: (request key, reply, store batch to wait for).
pub type Completed = (u64, Result<serde_json::Map<String, serde_json::Value>, WireError>, u64);

/// A deferred dismount: the cartridge stays loaded until `due` in case it is asked for again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deferred {
    /// When to dismount.
    pub due: u64,
    /// Library index.
    pub li: usize,
    /// Drive element.
    pub drive: u16,
    /// The cartridge.
    pub media: Guid,
}

impl Lib {
    /// A new library over its transports.
    pub fn new(
        label: String,
        key: String,
        name: Option<String>,
        changer: Box<dyn Transport>,
        drives: Vec<DriveDevice>,
        options: LibraryOptions,
        now: u64,
    ) -> Lib {
        let drive_map = options.drive_map.clone();
        let deferred_dismount_ms = options.deferred_dismount_ms;
        Lib {
            library: Library::new(drives.len(), options, now),
            id: None,
            name,
            label,
            changer: Some(changer),
            drives,
            drive_map,
            key,
            retired: false,
            deferred_dismount_ms,
            dirty: true,
        }
    }

    fn view(&self) -> Option<LibraryView> {
        if self.retired {
            return None;
        }
        Some(LibraryView {
            id: self.id?,
            device: self.label.clone(),
            state: Some(self.library.state()),
            suspect_drives: self.library.suspect_drives().to_vec(),
        })
    }

    fn transport_mut(&mut self, d: usize) -> Option<&mut Box<dyn Transport>> {
        if d == 0 {
            self.changer.as_mut()
        } else {
            self.drives.get_mut(d - 1).and_then(|x| x.transport.as_mut())
        }
    }
}

/// The daemon's state apart from the loop's plumbing (what dispatch works on).
#[derive(Debug)]
pub struct Daemon {
    /// The inventory (None while loading).
    pub inventory: Option<Inventory>,
    /// Sessions.
    pub sessions: Sessions,
    /// Libraries.
    pub libs: Vec<Lib>,
    /// This host's name.
    pub host: String,
    /// Library requests.
    pub requests: Requests,
    /// Mounted cartridges → session.
    pub mounted: HashMap<Guid, String>,
    /// Changes of this turn, to persist as one batch.
    pub changes: Vec<Change>,
    /// Notifications of this turn.
    pub notes: Vec<Notification>,
    writer: Option<Writer>,
    last_batch: u64,
    /// Milliseconds since start.
    pub now: u64,
    /// Configured libraries (matched by serial once probed).
    pub configured: Vec<crate::config::LibraryConfig>,
    /// State directory (persisted drive mappings).
    pub state_dir: PathBuf,
    /// Mount/dismount jobs by request key: (library index, cartridge).
    pub jobs: HashMap<u64, (usize, Guid)>,
    /// Deferred dismounts.
    pub deferred: Vec<Deferred>,
    /// Mounts waiting for a cartridge another session has.
    pub parked: Vec<mounting::MountCall>,
    /// Finished calls to answer: (request key, reply, store batch to wait for).
    pub completions: Vec<Completed>,
    /// User ids that administer rsmd (the configuration's `administrators`).
    pub administrators: Vec<u32>,
}

impl Daemon {
    /// The store batch a reply must wait for: this turn's (if it changed anything) or the last one.
    pub fn batch_for_reply(&self) -> u64 {
        self.last_batch + u64::from(!self.changes.is_empty())
    }

    fn durable(&self) -> u64 {
        self.writer.as_ref().map_or(u64::MAX, Writer::durable)
    }

    fn note(&mut self, operation: NotificationOperation, object_type: ObjectType, object: String) {
        self.notes.push(Notification { operation, object_type, object });
    }

    fn push_changes(&mut self, changes: Vec<Change>) {
        for c in &changes {
            let (t, id) = match c {
                Change::Library(l) => (ObjectType::Library, l.id.to_string()),
                Change::Element(e) => (
                    match e.kind {
                        crate::model::ElementKind::Drive => ObjectType::Drive,
                        crate::model::ElementKind::ImportExport => ObjectType::IePort,
                        crate::model::ElementKind::Storage => ObjectType::StorageSlot,
                        crate::model::ElementKind::Transport => ObjectType::Changer,
                    },
                    e.id().to_string(),
                ),
                Change::Media(m) => (ObjectType::PhysicalMedia, m.id.to_string()),
                Change::RemoveMedia(id) => (ObjectType::PhysicalMedia, id.to_string()),
                _ => continue,
            };
            self.note(NotificationOperation::Update, t, id);
        }
        self.changes.extend(changes);
    }

    /// A session ended (closed, or its process's last connection went): cancel its queued requests.
    pub fn session_ended(&mut self, handle: &str) {
        let parked: Vec<u64> = self.parked.iter().filter(|p| p.session == handle).map(|p| p.key).collect();
        for key in parked {
            self.end_parked(key, NtmsError::Cancelled { message: "the session ended".into() });
        }
        for key in self.requests.open_of_session(handle) {
            self.cancel_job(key);
        }
        let cancelled = self.requests.cancel_session(handle, self.now);
        for id in cancelled {
            self.note(NotificationOperation::Update, ObjectType::LibRequest, id);
        }
        self.mounted.retain(|_, s| s != handle);
    }

    /// Queues an inventory of library `id` for `session`; returns the request id.
    pub fn start_inventory(&mut self, id: Guid, session: &str) -> Result<String, NtmsError> {
        let Some(lib) = self.libs.iter_mut().find(|l| l.id == Some(id) && !l.retired) else {
            return Err(NtmsError::InvalidLibrary { message: format!("no library {id}") });
        };
        if lib.library.state() == LibraryState::Offline {
            return Err(NtmsError::LibraryOffline { message: format!("library {id} is offline") });
        }
        lib.library.request_rescan();
        lib.dirty = true;
        let app = self.sessions_app(session);
        let rid = self.requests.add(RequestOperation::Inventory, Some(id), session, app, self.now);
        self.requests.start(&rid, self.now);
        self.note(NotificationOperation::Insert, ObjectType::LibRequest, rid.clone());
        Ok(rid)
    }

    /// The application name the session gave to OpenSession (requests are attributed to it).
    pub fn sessions_app(&self, session: &str) -> Option<String> {
        self.sessions.application(session)
    }

    /// Cancels a library request.
    pub fn cancel_request(&mut self, id: &str, session: &str, admin: bool) -> Result<(), NtmsError> {
        self.requests.check_owner(id, session, admin)?;
        if let Some(key) = self.requests.key_of(id) {
            if self.parked.iter().any(|p| p.key == key) {
                self.end_parked(key, NtmsError::Cancelled { message: "cancelled".into() });
                return Ok(());
            }
            if self.jobs.contains_key(&key) {
                // The job reports Cancelled (after undoing what it did) and that finishes the request.
                return if self.cancel_job(key) {
                    Ok(())
                } else {
                    Err(NtmsError::InvalidOperation { message: format!("request {id} is past cancelling") })
                };
            }
        }
        self.requests.cancel(id, self.now)?;
        self.note(NotificationOperation::Update, ObjectType::LibRequest, id.to_owned());
        Ok(())
    }

    /// `SetRequestPriority`: a queued mount or dismount moves up or down the robot's queue.
    pub fn set_request_priority(
        &mut self,
        id: &str,
        priority: i32,
        session: &str,
        admin: bool,
    ) -> Result<(), NtmsError> {
        if !(PRIORITY_MIN..=PRIORITY_MAX).contains(&priority) {
            return Err(NtmsError::InvalidParameter {
                message: format!("priority {priority} is not in {PRIORITY_MIN}..={PRIORITY_MAX}"),
            });
        }
        self.requests.check_owner(id, session, admin)?;
        let key = self
            .requests
            .key_of(id)
            .ok_or_else(|| NtmsError::ObjectNotFound { message: format!("no request {id}") })?;
        let queued = match self.jobs.get(&key) {
            Some(&(li, _)) => self.libs[li].library.set_job_priority(key, priority),
            // Waiting for its cartridge: it joins the robot queue with this priority.
            None => self.parked.iter_mut().find(|p| p.key == key).map(|p| p.set_priority(priority)).is_some(),
        };
        if !queued {
            return Err(NtmsError::InvalidOperation {
                message: format!(
                    "request {id} has started or finished: only waiting mounts and dismounts are reordered"
                ),
            });
        }
        self.requests.set_priority(key, priority);
        if let Some(&(li, _)) = self.jobs.get(&key) {
            self.libs[li].dirty = true;
        }
        self.note(NotificationOperation::Update, ObjectType::LibRequest, id.to_owned());
        Ok(())
    }

    /// Applies one library event to the inventory.
    fn apply_event(&mut self, li: usize, event: Event) {
        let Some(inv) = self.inventory.as_mut() else { return };
        if let Event::Identified { changer, .. } = &event {
            // A library whose device came back (hot-plug) replaces its gone instance.
            let key = if changer.serial.is_empty() { self.libs[li].label.clone() } else { changer.serial.clone() };
            let id = Guid::derive("library", &key);
            let label = self.libs[li].label.clone();
            for (i, other) in self.libs.iter_mut().enumerate() {
                if i != li && other.id == Some(id) && other.changer.is_none() && !other.retired {
                    log::info!("library {id} is back on {label}");
                    other.retired = true;
                }
            }
        }
        let lib = &mut self.libs[li];
        if lib.retired {
            return;
        }
        match event {
            Event::Identified { changer, drives, .. } => {
                let key = if changer.serial.is_empty() { lib.label.clone() } else { changer.serial.clone() };
                let id = Guid::derive("library", &key);
                lib.id = Some(id);
                // Configuration naming this changer by serial, and mappings persisted by --map-drives.
                let by_serial = self.configured.iter().find(
                    |c| matches!(&c.source, crate::config::Source::Serial(s) if *s == changer.serial && !s.is_empty()),
                );
                let mut map = match by_serial {
                    Some(c) => {
                        if lib.name.is_none() {
                            lib.name.clone_from(&c.name);
                        }
                        c.drives.iter().map(|(s, a)| (s.clone(), *a)).collect()
                    }
                    None => lib.drive_map.clone(),
                };
                map.extend(crate::devices::load_mapping(&self.state_dir, &changer.serial));
                lib.library.set_drive_map(map);
                let name = lib.name.clone().unwrap_or_else(|| format!("{} {}", changer.vendor, changer.product));
                log::info!(
                    "library {name} ({id}) on {}: {} {} serial {:?}, {} drive devices",
                    lib.label,
                    changer.vendor,
                    changer.product,
                    changer.serial,
                    drives.iter().flatten().count()
                );
                let rec = LibraryRecord {
                    id,
                    name,
                    serial: changer.serial,
                    vendor: changer.vendor,
                    product: changer.product,
                    revision: changer.revision,
                    device: lib.label.clone(),
                    state: lib.library.state(),
                    stale: true,
                    load_ms: inv.library(id).and_then(|r| r.load_ms),
                };
                if let Some(ms) = rec.load_ms {
                    lib.library.assume_load_time(ms);
                }
                let c = inv.put_library(rec);
                self.push_changes(c);
            }
            Event::Inventory(elements) | Event::Elements(elements) if lib.id.is_some() => {
                let full = elements.len() == lib.library.elements().len() && lib.library.state() != LibraryState::Busy;
                let id = lib.id.unwrap_or_default();
                let infos: Vec<DriveInfo> = drive_infos(lib);
                let c = inv.reconcile(id, &elements, full, &|d| infos.get(d).cloned().unwrap_or_default());
                let mut changes = c;
                if full {
                    if let Some(mut rec) = inv.library(id).cloned() {
                        rec.stale = false;
                        changes.extend(inv.put_library(rec));
                    }
                    for rid in self.requests.finish_inventory(id, self.now) {
                        self.note(NotificationOperation::Update, ObjectType::LibRequest, rid);
                    }
                }
                self.push_changes(changes);
            }
            Event::State(state) => {
                if let Some(id) = lib.id {
                    if let Some(mut rec) = inv.library(id).cloned() {
                        rec.state = state;
                        if state == LibraryState::Offline {
                            rec.stale = true;
                            for rid in self.requests.fail_library(id, "the library went offline", self.now) {
                                self.notes.push(Notification {
                                    operation: NotificationOperation::Update,
                                    object_type: ObjectType::LibRequest,
                                    object: rid,
                                });
                            }
                        }
                        let c = inv.put_library(rec);
                        self.push_changes(c);
                    }
                }
            }
            Event::Attention { device, asc } => {
                log::info!("{}: unit attention {:02X}h/{:02X}h on {device:?}: rescanning", lib.label, asc.0, asc.1);
            }
            Event::MoveFinished { id, result } => log::debug!("move {id} finished: {result:?}"),
            Event::DriveCommand { .. } | Event::Inventory(_) | Event::Elements(_) => {}
        }
    }
}

pub(super) fn drive_infos(lib: &Lib) -> Vec<DriveInfo> {
    lib.drives
        .iter()
        .zip(lib.library.drive_identities())
        .map(|(d, id)| DriveInfo {
            serial: id.as_ref().map(|i| i.serial.clone()).filter(|s| !s.is_empty()),
            product: id.as_ref().map(|i| format!("{} {}", i.vendor, i.product)),
            device: Some(d.path.clone()),
            nst: d.nst.clone(),
        })
        .collect()
}

/// The loop's plumbing around a [`Daemon`].
#[derive(Debug)]
pub struct Server {
    poll: Poll,
    /// The daemon state.
    pub daemon: Daemon,
    listener: Option<mio::net::UnixListener>,
    clients: Vec<Option<Client>>,
    free: Vec<usize>,
    signals: SignalFd,
    uevent: Option<OwnedFd>,
    waker: Arc<Waker>,
    loader: Option<mpsc::Receiver<Result<(Store, Snapshot), StoreError>>>,
    notifier: Notifier,
    start: Instant,
    stopping: bool,
    exit: Option<Result<(), ServerError>>,
    unlink: Option<PathBuf>,
    setup: start::Setup,
    watchdog_at: Option<u64>,
    touched: HashSet<usize>,
    last_status: String,
    /// Calls waiting for a job: request key → client slot.
    waiting: HashMap<u64, usize>,
}

impl Server {
    #[allow(clippy::disallowed_methods)]
    fn clock(&self) -> u64 {
        u64::try_from(Instant::now().duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    /// Builds the server: blocks signals (before any thread starts), binds or adopts the socket, starts loading.
    #[allow(clippy::disallowed_methods)]
    pub fn new(setup: start::Setup) -> Result<Server, ServerError> {
        let start = Instant::now();
        let mut mask = SigSet::empty();
        for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            mask.add(s);
        }
        mask.thread_block().map_err(|e| ServerError::Io("blocking signals".into(), e.into()))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| ServerError::Io("creating the signalfd".into(), e.into()))?;
        // Children (none today) must not inherit a blocked SIGPIPE; writes use MSG_NOSIGNAL or ignore it.
        // SAFETY-free: ignoring SIGPIPE through nix's safe wrapper is not available; std already ignores SIGPIPE
        // for Rust binaries.
        let poll = Poll::new().map_err(|e| ServerError::Io("creating the poll".into(), e))?;
        let waker = Arc::new(
            Waker::new(poll.registry(), Src::Waker.into())
                .map_err(|e| ServerError::Io("creating the waker".into(), e))?,
        );
        let (listener, unlink) = start::listen(&setup.socket)?;
        let mut listener = mio::net::UnixListener::from_std(listener);
        poll.registry()
            .register(&mut listener, Src::Listener.into(), Interest::READABLE)
            .map_err(|e| ServerError::Io("registering the listener".into(), e))?;
        poll.registry()
            .register(&mut SourceFd(&signals.as_fd().as_raw_fd()), Src::Signals.into(), Interest::READABLE)
            .map_err(|e| ServerError::Io("registering the signalfd".into(), e))?;
        let uevent = start::uevent_socket();
        if let Some(fd) = &uevent {
            let _ = poll.registry().register(&mut SourceFd(&fd.as_raw_fd()), Src::Uevent.into(), Interest::READABLE);
        }
        // Load the inventory off the loop.
        let (tx, rx) = mpsc::channel();
        let dir = setup.state_dir.clone();
        let w = waker.clone();
        std::thread::Builder::new()
            .name("rsmd-loader".into())
            .spawn(move || {
                // Test hook: hold the load until a byte can be read from this FIFO, so that tests can observe the
                // NotReady window deterministically.
                if let Some(gate) = std::env::var_os("RSMD_TEST_HOLD_LOAD") {
                    use std::io::Read;
                    let _ = std::fs::File::open(gate).and_then(|mut f| f.read(&mut [0u8; 1]));
                }
                let r = std::fs::create_dir_all(&dir)
                    .map_err(|e| StoreError::Db(sled::Error::Io(e)))
                    .and_then(|()| Store::open(&dir))
                    .and_then(|s| s.load().map(|snap| (s, snap)));
                let _ = tx.send(r);
                let _ = w.wake();
            })
            .map_err(|e| ServerError::Io("starting the loader".into(), e))?;
        let notifier = Notifier::from_env();
        notifier.status("loading the inventory");
        let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
        let seed = u64::try_from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
                & 0xFFFF_FFFF_FFFF,
        )
        .unwrap_or(0)
            ^ u64::from(std::process::id());
        log::info!("listening on {}", setup.socket.display());
        Ok(Server {
            poll,
            daemon: Daemon {
                inventory: None,
                sessions: Sessions::new(seed),
                libs: Vec::new(),
                host,
                requests: Requests::new(seed),
                mounted: HashMap::new(),
                changes: Vec::new(),
                notes: Vec::new(),
                writer: None,
                last_batch: 0,
                now: 0,
                configured: setup.config.libraries.clone(),
                administrators: setup.config.administrators.clone(),
                state_dir: setup.state_dir.clone(),
                jobs: HashMap::new(),
                deferred: Vec::new(),
                parked: Vec::new(),
                completions: Vec::new(),
            },
            listener: Some(listener),
            clients: Vec::new(),
            free: Vec::new(),
            signals,
            uevent,
            waker,
            loader: Some(rx),
            notifier,
            start,
            stopping: false,
            exit: None,
            unlink,
            setup,
            watchdog_at: None,
            touched: HashSet::new(),
            last_status: String::new(),
            waiting: HashMap::new(),
        })
    }

    /// Runs until SIGTERM/SIGINT (or a fatal error).
    pub fn run(mut self) -> Result<(), ServerError> {
        let mut events = Events::with_capacity(1024);
        if let Some(usec) = self.notifier.watchdog_usec {
            self.watchdog_at = Some(usec / 2000);
        }
        loop {
            let now = self.clock();
            let timeout = self.next_deadline().map(|d| Duration::from_millis(d.saturating_sub(now)));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(ServerError::Io("polling".into(), e));
                }
            }
            self.daemon.now = self.clock();
            for ev in &events {
                match Src::from_token(ev.token()) {
                    Some(Src::Listener) => self.process_listener(),
                    Some(Src::Waker) => self.process_waker(),
                    Some(Src::Signals) => self.process_signals(),
                    Some(Src::Uevent) => self.process_uevent(),
                    Some(Src::Client(i)) => self.process_client(i, ev.is_writable()),
                    Some(Src::Device(l, d)) => self.process_device(l, d, ev.is_writable()),
                    None => log::debug!("event for unknown token {:?} ignored", ev.token()),
                }
            }
            self.process_timers();
            self.pump_libraries();
            self.end_turn();
            if let Some(r) = self.exit.take() {
                return r;
            }
            if self.stopping && self.daemon.durable() >= self.daemon.last_batch {
                self.notifier.notify("STOPPING=1");
                log::info!("stopped");
                return Ok(());
            }
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        let libs = self.daemon.libs.iter().filter_map(|l| l.library.poll_timeout());
        let deferred =
            self.daemon.deferred.iter().map(|d| d.due).chain(self.daemon.parked.iter().filter_map(|p| p.deadline));
        let stall = self
            .clients
            .iter()
            .flatten()
            .filter(|c| c.decoder.buffered() > 0 || c.pending_output() > 0)
            .map(|c| c.last_progress + client::STALL_MS);
        libs.chain(deferred).chain(stall).chain(self.watchdog_at).min()
    }

    fn process_listener(&mut self) {
        loop {
            let Some(listener) = self.listener.as_ref() else { return };
            match listener.accept() {
                Ok((stream, _)) => self.add_client(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: log and try again on the next event rather than spin.
                    log::warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn add_client(&mut self, mut stream: mio::net::UnixStream) {
        let cred = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials);
        let peer = match cred {
            Ok(c) => Peer { pid: c.pid(), uid: c.uid(), start_time: Peer::start_time_of(c.pid()) },
            Err(e) => {
                log::warn!("no peer credentials ({e}); refusing connection");
                return;
            }
        };
        let idx = self.free.pop().unwrap_or_else(|| {
            self.clients.push(None);
            self.clients.len() - 1
        });
        if let Err(e) = self.poll.registry().register(&mut stream, Src::Client(idx).into(), Interest::READABLE) {
            log::warn!("registering a client failed: {e}");
            self.free.push(idx);
            return;
        }
        self.daemon.sessions.connected(peer);
        self.clients[idx] = Some(Client::new(stream, peer, self.daemon.now));
        self.touched.insert(idx);
        // Edge-triggered: bytes may already be there.
        self.process_client(idx, false);
    }

    fn process_client(&mut self, idx: usize, _writable: bool) {
        let now = self.daemon.now;
        let Some(mut c) = self.clients.get_mut(idx).and_then(Option::take) else { return };
        self.touched.insert(idx);
        let mut dead = false;
        if let Err(e) = c.write(now) {
            log::debug!("client {idx}: write failed: {e}");
            dead = true;
        }
        while !dead && !c.closing && !c.read_closed {
            match c.read(now) {
                Ok(outcome) => {
                    self.handle_messages(idx, &mut c);
                    match outcome {
                        ReadOutcome::Drained | ReadOutcome::Eof => break,
                        ReadOutcome::Paused if c.backpressured() => break,
                        ReadOutcome::Paused => {}
                    }
                }
                Err(e) => {
                    log::debug!("client {idx}: read failed: {e}");
                    dead = true;
                }
            }
        }
        if c.read_closed && !c.closing {
            // Calls that arrived with the EOF still get answered.
            self.handle_messages(idx, &mut c);
        }
        if c.closing && !dead {
            c.collect(self.daemon.durable());
            if c.write(now).is_err() || c.linger(now).is_err() {
                dead = true;
            }
        }
        self.clients[idx] = Some(c);
        if dead {
            self.drop_client(idx);
        }
    }

    fn handle_messages(&mut self, idx: usize, c: &mut Client) {
        while !c.closing && c.slots.len() < client::MAX_PIPELINE {
            let Some(msg) = c.decoder.next_message() else { break };
            let message = match msg {
                Ok(m) => m,
                Err(e) => {
                    // Oversized or not UTF-8: the stream cannot be resynchronised.
                    let err: NtmsError = e.into();
                    c.slots.push_back(Slot::Ready { bytes: error_bytes(&WireError::Ntms(err)), durable: 0 });
                    c.closing = true;
                    break;
                }
            };
            let call = match Call::parse(&message) {
                Ok(call) => call,
                Err(e) => {
                    let err: NtmsError = e.into();
                    c.slots.push_back(Slot::Ready { bytes: error_bytes(&WireError::Ntms(err)), durable: 0 });
                    c.closing = true;
                    break;
                }
            };
            let oneway = call.oneway;
            let more = call.more;
            let answer = match Method::parse(&call) {
                Ok(m) => self.daemon.dispatch(m, c.peer),
                Err(e) => dispatch::Answer::Reply(Err(WireError::Varlink(e)), 0),
            };
            if oneway {
                continue;
            }
            match answer {
                dispatch::Answer::Reply(r, durable) => {
                    let (bytes, durable) = match r {
                        Ok(params) => (Reply::new(params).encode(), durable),
                        Err(e) => (error_bytes(&e), 0),
                    };
                    c.slots.push_back(Slot::Ready { bytes, durable });
                }
                dispatch::Answer::Later { key } => {
                    c.slots.push_back(Slot::Waiting { key });
                    self.waiting.insert(key, idx);
                }
                dispatch::Answer::Stream { session, filter } => {
                    if !more {
                        c.slots.push_back(Slot::Ready {
                            bytes: error_bytes(&WireError::Varlink(crate::proto::VarlinkError::ExpectedMore)),
                            durable: 0,
                        });
                    } else {
                        c.slots.push_back(Slot::Stream { queued: Default::default(), session, filter });
                    }
                }
            }
        }
        c.collect(self.daemon.durable());
    }

    fn drop_client(&mut self, idx: usize) {
        let Some(mut c) = self.clients.get_mut(idx).and_then(Option::take) else { return };
        if c.registered.is_some() {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
        self.waiting.retain(|_, i| *i != idx);
        for s in self.daemon.sessions.disconnected(c.peer) {
            log::info!("session {} ended with its process's last connection", s.handle);
            self.daemon.session_ended(&s.handle);
        }
        self.free.push(idx);
    }

    fn process_waker(&mut self) {
        if let Some(rx) = &self.loader {
            match rx.try_recv() {
                Ok(Ok((store, snapshot))) => {
                    self.loader = None;
                    self.loaded(store, snapshot);
                }
                Ok(Err(e)) => {
                    self.loader = None;
                    self.exit = Some(Err(ServerError::Store(e)));
                }
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.loader = None;
                    self.exit = Some(Err(ServerError::Io("the loader died".into(), io::ErrorKind::Other.into())));
                }
            }
        }
        if let Some(w) = &self.daemon.writer {
            if w.failed() > 0 {
                self.exit = Some(Err(ServerError::Store(StoreError::WriterGone)));
            }
        }
        // Durable batches release held replies and notifications.
        for (i, c) in self.clients.iter().enumerate() {
            if c.as_ref().is_some_and(Client::awaits_durable) {
                self.touched.insert(i);
            }
        }
    }

    fn loaded(&mut self, store: Store, snapshot: Snapshot) {
        let n = snapshot.media.len();
        let mut inv = Inventory::from_snapshot(snapshot);
        let stale = inv.mark_all_stale();
        self.daemon.inventory = Some(inv);
        let w = self.waker.clone();
        self.daemon.writer = Some(Writer::spawn(store, move || {
            let _ = w.wake();
        }));
        self.daemon.changes.extend(stale);
        log::info!("inventory loaded: {n} cartridges");
        self.notifier.notify("READY=1");
        self.notifier.status("serving the cached inventory; verifying libraries");
        let now = self.daemon.now;
        for lib in start::open_libraries(&mut self.setup, now) {
            self.add_library(lib);
        }
    }

    fn add_library(&mut self, lib: Lib) {
        let li = self.daemon.libs.len();
        self.daemon.libs.push(lib);
        let lib = &self.daemon.libs[li];
        let mut fds = Vec::new();
        if let Some(t) = &lib.changer {
            fds.push((0, t.fd().as_raw_fd()));
        }
        for (i, d) in lib.drives.iter().enumerate() {
            if let Some(t) = &d.transport {
                fds.push((i + 1, t.fd().as_raw_fd()));
            }
        }
        for (d, fd) in fds {
            if let Err(e) =
                self.poll.registry().register(&mut SourceFd(&fd), Src::Device(li, d).into(), Interest::READABLE)
            {
                log::warn!("registering a device failed: {e}");
            }
        }
    }

    fn process_signals(&mut self) {
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => {
                    let signo = i32::try_from(info.ssi_signo).unwrap_or(0);
                    if signo == Signal::SIGHUP as i32 {
                        self.reload();
                    } else {
                        log::info!("signal {signo}: stopping");
                        self.stopping = true;
                        self.notifier.notify("STOPPING=1");
                        if let Some(mut l) = self.listener.take() {
                            let _ = self.poll.registry().deregister(&mut l);
                        }
                    }
                }
                Ok(None) => return,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    log::warn!("reading signals failed: {e}");
                    return;
                }
            }
        }
    }

    fn reload(&mut self) {
        let Some(path) = self.setup.config_path.clone() else {
            log::info!("SIGHUP: no configuration file to reload");
            return;
        };
        match crate::config::Config::load(&path) {
            Ok(c) => {
                log::info!("SIGHUP: reloaded {}", path.display());
                self.daemon.administrators.clone_from(&c.administrators);
                self.setup.config = c;
                let now = self.daemon.now;
                for lib in start::open_new_libraries(&mut self.setup, &self.daemon.libs, now) {
                    self.add_library(lib);
                }
            }
            Err(e) => log::error!("SIGHUP: keeping the old configuration: {e}"),
        }
    }

    fn process_uevent(&mut self) {
        let Some(fd) = &self.uevent else { return };
        let mut relevant = false;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match nix::sys::socket::recv(fd.as_raw_fd(), &mut buf, nix::sys::socket::MsgFlags::MSG_DONTWAIT) {
                Ok(0) => break,
                Ok(n) => {
                    if let Some(ev) = crate::sg::discover::parse_uevent(&buf[..n]) {
                        if ev.subsystem == "scsi_generic" {
                            log::info!("uevent: {:?} {}", ev.action, ev.devpath);
                            relevant = true;
                        }
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    log::warn!("reading uevents failed: {e}");
                    break;
                }
            }
        }
        if relevant && self.daemon.inventory.is_some() {
            let now = self.daemon.now;
            for lib in start::open_new_libraries(&mut self.setup, &self.daemon.libs, now) {
                self.add_library(lib);
            }
        }
    }

    fn process_device(&mut self, li: usize, d: usize, writable: bool) {
        let now = self.daemon.now;
        let Some(lib) = self.daemon.libs.get_mut(li) else { return };
        lib.dirty = true;
        let Some(t) = lib.transport_mut(d) else { return };
        if writable {
            if let Err(e) = t.on_writable() {
                log::debug!("device write failed: {e}");
            }
        }
        let mut completions: Vec<Completion> = Vec::new();
        let mut gone = false;
        loop {
            match t.reap() {
                Ok(Some(c)) => completions.push(c),
                Ok(None) => break,
                Err(e) => {
                    log::warn!("{}: device {d}: {e}", lib.label);
                    gone = true;
                    break;
                }
            }
        }
        for c in completions {
            lib.library.handle_completion(c.tag, c.result, now);
        }
        if gone {
            self.device_gone(li, d);
        }
    }

    fn device_gone(&mut self, li: usize, d: usize) {
        let lib = &mut self.daemon.libs[li];
        let t = if d == 0 { lib.changer.take() } else { lib.drives.get_mut(d - 1).and_then(|x| x.transport.take()) };
        if let Some(t) = t {
            let _ = self.poll.registry().deregister(&mut SourceFd(&t.fd().as_raw_fd()));
        }
        if d == 0 {
            lib.library.device_gone();
        }
    }

    fn process_timers(&mut self) {
        let now = self.daemon.now;
        for lib in &mut self.daemon.libs {
            if lib.library.poll_timeout().is_some_and(|t| t <= now) {
                lib.library.handle_timeout(now);
                lib.dirty = true;
            }
        }
        if self.watchdog_at.is_some_and(|t| t <= now) {
            self.notifier.notify("WATCHDOG=1");
            self.watchdog_at = self.notifier.watchdog_usec.map(|u| now + u / 2000);
        }
        let stalled: Vec<usize> = self
            .clients
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().filter(|c| c.stalled(now)).map(|_| i))
            .collect();
        for i in stalled {
            log::info!("client {i}: no progress for {} s; disconnecting", client::STALL_MS / 1000);
            self.drop_client(i);
        }
    }

    fn pump_libraries(&mut self) {
        // What the libraries did first (a finished mount is owned before housekeeping looks for idle cartridges),
        // then the rules that react to it, then what those asked for.
        self.drain_libraries();
        if self.daemon.inventory.is_some() {
            self.daemon.housekeeping();
            self.drain_libraries();
        }
    }

    fn drain_libraries(&mut self) {
        let now = self.daemon.now;
        for li in 0..self.daemon.libs.len() {
            loop {
                let mut progressed = false;
                while let Some(o) = self.daemon.libs[li].library.poll_request() {
                    progressed = true;
                    let lib = &mut self.daemon.libs[li];
                    let d = match o.device {
                        DeviceRef::Changer => 0,
                        DeviceRef::Drive(i) => i + 1,
                    };
                    let result = match lib.transport_mut(d) {
                        Some(t) => t.submit(o.tag, o.command),
                        None => Err(TransportError::DeviceGone),
                    };
                    if let Err(e) = result {
                        lib.library.handle_completion(o.tag, Err(e), now);
                    }
                    lib.dirty = true;
                }
                while let Some(ev) = self.daemon.libs[li].library.poll_event() {
                    progressed = true;
                    self.daemon.apply_event(li, ev);
                }
                while let Some(p) = self.daemon.libs[li].library.poll_progress() {
                    progressed = true;
                    self.daemon.on_progress(li, p);
                }
                while let Some(o) = self.daemon.libs[li].library.poll_outcome() {
                    progressed = true;
                    self.daemon.on_outcome(li, o);
                }
                if !progressed {
                    break;
                }
            }
        }
    }

    /// A one-line summary of the libraries for `STATUS=` (and for tests, which wait for it).
    fn status_line(&self) -> String {
        let libs: Vec<&Lib> = self.daemon.libs.iter().filter(|l| !l.retired).collect();
        let count = |s: LibraryState| libs.iter().filter(|l| l.library.state() == s).count();
        format!(
            "{} libraries: {} ready, {} busy, {} probing, {} scanning, {} offline",
            libs.len(),
            count(LibraryState::Ready),
            count(LibraryState::Busy),
            count(LibraryState::Probing),
            count(LibraryState::Scanning),
            count(LibraryState::Offline)
        )
    }

    fn end_turn(&mut self) {
        if self.daemon.inventory.is_some() {
            let status = self.status_line();
            if status != self.last_status {
                self.notifier.status(&status);
                self.last_status = status;
            }
        }
        // Persist this turn's changes as one batch.
        if !self.daemon.changes.is_empty() {
            let changes = std::mem::take(&mut self.daemon.changes);
            if let Some(w) = self.daemon.writer.as_mut() {
                let n = changes.len();
                match w.submit(changes) {
                    Ok(seq) => {
                        log::trace!("batch {seq}: {n} changes submitted");
                        self.daemon.last_batch = seq;
                    }
                    Err(e) => self.exit = Some(Err(ServerError::Store(e))),
                }
            }
        }
        let batch = self.daemon.last_batch;
        for (key, reply, durable) in std::mem::take(&mut self.daemon.completions) {
            log::debug!("request {key} finished; waiting client: {:?}", self.waiting.get(&key));
            let Some(idx) = self.waiting.remove(&key) else { continue };
            let bytes = match reply {
                Ok(params) => Reply::new(params).encode(),
                Err(e) => error_bytes(&e),
            };
            if let Some(c) = self.clients.get_mut(idx).and_then(Option::as_mut) {
                c.complete(key, bytes, durable.min(batch));
                self.touched.insert(idx);
            }
        }
        // Notifications go to every stream whose session filter matches, after the batch is durable.
        let notes = std::mem::take(&mut self.daemon.notes);
        if !notes.is_empty() {
            for (i, c) in self.clients.iter_mut().enumerate() {
                let Some(c) = c else { continue };
                for s in &mut c.slots {
                    if let Slot::Stream { queued, filter, .. } = s {
                        for n in notes.iter().filter(|n| filter.is_none_or(|f| f == n.object_type)) {
                            if let Ok(serde_json::Value::Object(p)) = serde_json::to_value(n) {
                                let mut r = Reply::new(p);
                                r.continues = true;
                                queued.push_back((r.encode(), batch));
                            }
                        }
                        self.touched.insert(i);
                    }
                }
            }
        }
        // Flush clients and re-register interests.
        let durable = self.daemon.durable();
        let now = self.daemon.now;
        let touched: Vec<usize> = self.touched.drain().collect();
        for i in touched {
            let mut dead = false;
            let resume = self.clients.get(i).and_then(Option::as_ref).is_some_and(|c| c.paused && !c.backpressured());
            if resume {
                self.process_client(i, false);
                self.touched.remove(&i);
            }
            if let Some(c) = self.clients.get_mut(i).and_then(Option::as_mut) {
                c.collect(durable);
                if c.write(now).is_err() || (c.closing && c.linger(now).is_err()) || c.finished() {
                    dead = true;
                } else {
                    // Edge-triggered: an unchanged interest needs no system call.
                    let registry = self.poll.registry();
                    let want = c.interest();
                    let r = match (want, c.registered) {
                        (w, r) if w == r => Ok(()),
                        (Some(interest), Some(_)) => {
                            registry.reregister(&mut c.stream, Src::Client(i).into(), interest)
                        }
                        (Some(interest), None) => registry.register(&mut c.stream, Src::Client(i).into(), interest),
                        (None, _) => registry.deregister(&mut c.stream),
                    };
                    c.registered = want;
                    if r.is_err() {
                        dead = true;
                    }
                }
            }
            if dead {
                self.drop_client(i);
            }
        }
        for (li, lib) in self.daemon.libs.iter_mut().enumerate() {
            if !lib.dirty {
                continue;
            }
            lib.dirty = false;
            let mut regs = Vec::new();
            if let Some(t) = &lib.changer {
                regs.push((0, t.fd().as_raw_fd(), t.wants_write()));
            }
            for (i, d) in lib.drives.iter().enumerate() {
                if let Some(t) = &d.transport {
                    regs.push((i + 1, t.fd().as_raw_fd(), t.wants_write()));
                }
            }
            for (d, fd, w) in regs {
                let interest = if w { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
                let _ = self.poll.registry().reregister(&mut SourceFd(&fd), Src::Device(li, d).into(), interest);
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(w) = self.daemon.writer.as_mut() {
            w.shutdown();
        }
        if let Some(p) = &self.unlink {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn error_bytes(e: &WireError) -> Vec<u8> {
    let v = e.to_reply();
    let (error, parameters) = match v {
        serde_json::Value::Object(mut m) => (
            m.remove("error").and_then(|e| e.as_str().map(str::to_owned)).unwrap_or_default(),
            match m.remove("parameters") {
                Some(serde_json::Value::Object(p)) => p,
                _ => serde_json::Map::new(),
            },
        ),
        _ => (String::new(), serde_json::Map::new()),
    };
    ErrorReply { error, parameters }.encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for s in [
            Src::Listener,
            Src::Waker,
            Src::Signals,
            Src::Uevent,
            Src::Client(0),
            Src::Client(123_456),
            Src::Device(0, 0),
            Src::Device(7, 65),
        ] {
            assert_eq!(Src::from_token(s.into()), Some(s));
        }
        assert_eq!(Src::from_token(Token(4)), None);
        assert_eq!(Src::from_token(Token(3 << 40)), None);
    }
}
