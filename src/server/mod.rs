//! The event loop: listeners, clients, devices, timers, signals, sd_notify, uevents. The only module that touches
//! mio, sockets, signals or the clock. It holds no tape policy: every rule is the [`Broker`]'s.
//!
//! # Primer
//! One thread, one `mio::Poll`. Sources are named by [`Src`], a typed token. Each turn: wait (timeout = the
//! earliest deadline of the broker or any client), route each event to its source's handler (`process_*`), which
//! drains until WouldBlock and hands what it read to the broker (`handle_call`, `handle_completion`, ...); then
//! carry out what the broker asks: submit its SCSI commands on the devices' transports, hand its changes to the
//! store writer as one batch (group commit), move replies whose batch is durable to their clients, and re-register
//! every touched source with the interest its state asks for. Replies and notifications about a change leave only
//! after the change is on disk.
//!
//! Nothing here blocks: devices are asynchronous transports, the store flushes on its own thread (which wakes the
//! loop through a `mio::Waker`), and the inventory is loaded on a thread while clients get `NotReady`.

pub mod client;
pub mod notify;
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

use crate::broker::session::{parse_start_time, Peer};
use crate::broker::{Answer, Broker, BrokerOptions, ConfiguredLibrary, LibrarySpec};
use crate::changer::DeviceRef;
use crate::proto::{Call, ErrorReply, Method, NtmsError, Reply, WireError};
use crate::store::{Store, StoreError, Writer};
use crate::transport::{Completion, Transport, TransportError};
use client::{Client, Slot};
use notify::Notifier;
pub use start::ServerError;

/// A library's open devices, by the broker's library index.
#[derive(Debug)]
pub struct Devices {
    /// Source description for de-duplication on hot-plug.
    pub key: String,
    /// The changer transport (None once gone).
    pub changer: Option<Box<dyn Transport>>,
    /// Drive transports, by the index the library uses (None when not open or gone).
    pub drives: Vec<Option<Box<dyn Transport>>>,
    /// Device nodes: the changer's, then each drive's (to match remove uevents and reopen drives).
    pub paths: Vec<String>,
    /// Their interests must be re-registered this turn.
    dirty: bool,
}

/// Opening a device that could not be opened: first retry after this, doubling up to [`REOPEN_MAX_MS`].
const REOPEN_FIRST_MS: u64 = 250;
/// Longest wait between attempts.
const REOPEN_MAX_MS: u64 = 8_000;
/// Attempts after an event before waiting for the next one (about a minute in all).
const REOPEN_ATTEMPTS: u32 = 12;

impl Devices {
    fn is_open(&self, d: usize) -> bool {
        if d == 0 {
            self.changer.is_some()
        } else {
            self.drives.get(d - 1).is_some_and(Option::is_some)
        }
    }

    fn transport_mut(&mut self, d: usize) -> Option<&mut Box<dyn Transport>> {
        if d == 0 {
            self.changer.as_mut()
        } else {
            self.drives.get_mut(d - 1).and_then(Option::as_mut)
        }
    }
}

/// A library the loop opened: what the broker serves and the devices the loop keeps.
#[derive(Debug)]
pub struct Opened {
    /// For the broker.
    pub spec: LibrarySpec,
    /// The changer transport.
    pub changer: Box<dyn Transport>,
    /// Drive transports, by index (None when the device could not be opened).
    pub drives: Vec<Option<Box<dyn Transport>>>,
}

/// Reads a process's start time from /proc (sessions are bound to pid + start time).
fn start_time_of(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| parse_start_time(&s)).unwrap_or(0)
}

/// The broker's plain options from the configuration.
fn broker_options(config: &crate::config::Config, host: &str, epoch_ms: u64) -> BrokerOptions {
    BrokerOptions {
        host: host.to_owned(),
        administrators: config.administrators.clone(),
        media_rules: config.media_rules.clone(),
        access: config.access.clone(),
        by_serial: config
            .libraries
            .iter()
            .filter_map(|c| match &c.source {
                crate::config::Source::Serial(serial) => Some(ConfiguredLibrary {
                    serial: serial.clone(),
                    name: c.name.clone(),
                    drives: c.drives.iter().map(|(s, a)| (s.clone(), *a)).collect(),
                }),
                _ => None,
            })
            .collect(),
        epoch_ms,
    }
}

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

/// What the loader thread reads: the database, its contents, and the saved drive maps.
/// What the loader thread hands the loop: the store, the inventory built from it, the requests that were open, the
/// saved drive maps.
type Loaded = (Store, crate::media::Inventory, crate::model::Requested, crate::store::DriveMaps);

/// The loop's plumbing around a [`Broker`].
#[derive(Debug)]
pub struct Server {
    poll: Poll,
    /// The daemon's core.
    pub broker: Broker,
    /// Each library's devices, by the broker's library index.
    devices: Vec<Devices>,
    /// The store writer (once loaded).
    writer: Option<Writer>,
    /// The loop's clock at this turn.
    now: u64,
    listener: Option<mio::net::UnixListener>,
    clients: Vec<Option<Client>>,
    free: Vec<usize>,
    signals: SignalFd,
    uevent: Option<OwnedFd>,
    waker: Arc<Waker>,
    loader: Option<mpsc::Receiver<Result<Loaded, StoreError>>>,
    /// Open connections by user (the per-user cap).
    per_uid: HashMap<u32, usize>,
    notifier: Notifier,
    start: Instant,
    stopping: bool,
    exit: Option<Result<(), ServerError>>,
    unlink: Option<PathBuf>,
    setup: start::Setup,
    watchdog_at: Option<u64>,
    /// The scratch buffer every connection reads through (see [`client::Client::read`]).
    read_buf: Vec<u8>,
    touched: HashSet<usize>,
    last_status: String,
    /// (libraries, probing, changers open) when the absent libraries were last worked out.
    absent_checked: (usize, usize, usize),
    /// The state directory's lock, held while the daemon runs.
    _state_lock: nix::fcntl::Flock<std::fs::File>,
    /// Drive maps being read after a SIGHUP.
    maps: Option<mpsc::Receiver<crate::store::DriveMaps>>,
    /// When to try opening devices that could not be opened yet, and how many times it was tried.
    reopen_at: Option<u64>,
    reopen_attempts: u32,
    /// Calls waiting for a job: request key → client slot.
    waiting: HashMap<crate::model::RequestId, usize>,
    /// Connections with calls to handle (or input to read) now: served by [`Server::serve_ready`].
    ready: std::collections::BTreeSet<usize>,
    /// Connections held back by the memory budget: looked at again once it has room.
    held: HashSet<usize>,
    /// What all connections hold (buffered calls, unsent replies), as last counted.
    buffered_total: usize,
}

/// Calls one connection has handled in one serving before the next connection gets its turn.
const CALLS_PER_SERVING: usize = 4;
/// How long one turn of the loop serves calls before it polls again (new connections' calls, devices, timers).
const SERVE_BUDGET_MS: u64 = 5;
/// A turn of the loop that takes this long is logged (debug): every other client waited as long.
const SLOW_TURN_MS: u64 = 10;

impl Server {
    #[allow(clippy::disallowed_methods)]
    fn clock(&self) -> u64 {
        u64::try_from(Instant::now().duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    /// Microseconds since start: the phases of a slow turn, which milliseconds would round away.
    #[allow(clippy::disallowed_methods)]
    fn clock_us(&self) -> u64 {
        u64::try_from(Instant::now().duration_since(self.start).as_micros()).unwrap_or(u64::MAX)
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
        // The state first: a second rsmd on the same state fails before it listens (it answered NotReady for the
        // seconds it waited for the database's lock).
        let state_lock = start::lock_state(&setup.state_dir)?;
        let (listener, unlink) =
            start::listen(&setup.socket, setup.config.socket_group.as_ref(), setup.config.socket_mode)?;
        if let Some(dir) = &setup.demo_dir {
            eprintln!(
                "rsmd: demo mode: a virtual library (20 slots, 2 mail slots, 4 drives) in {}\n\
                 rsmd: listening on {}\nrsmd: try: rsm status",
                dir.display(),
                setup.socket.display()
            );
        }
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
        let helper = setup.store_helper.clone();
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
                let mut inv = crate::media::Inventory::default();
                let mut requests = crate::model::Requested::default();
                let r = std::fs::create_dir_all(&dir)
                    .map_err(|e| StoreError::Db(sled::Error::Io(e)))
                    .and_then(|()| {
                        crate::store::load_through(&dir, helper.as_deref(), |r| match r {
                            Some(crate::store::Record::Request(q)) => requests.library.push(q),
                            Some(crate::store::Record::Operator(o)) => requests.operator.push(o),
                            Some(r) => inv.load_record(r),
                            None => {
                                inv = crate::media::Inventory::default();
                                requests = crate::model::Requested::default();
                            }
                        })
                    })
                    .map(|s| (s, inv, requests, crate::store::drive_maps(&dir)));
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
        // Unix time at the clock's zero: the broker shows and keeps times as Unix time.
        let epoch_ms = u64::try_from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis(),
        )
        .unwrap_or(0);
        log::info!("listening on {}", setup.socket.display());
        Ok(Server {
            poll,
            broker: Broker::new(broker_options(&setup.config, &host, epoch_ms), seed),
            devices: Vec::new(),
            writer: None,
            now: 0,
            listener: Some(listener),
            clients: Vec::new(),
            free: Vec::new(),
            signals,
            uevent,
            waker,
            loader: Some(rx),
            per_uid: HashMap::new(),
            ready: std::collections::BTreeSet::new(),
            held: HashSet::new(),
            buffered_total: 0,
            notifier,
            start,
            stopping: false,
            exit: None,
            unlink,
            setup,
            watchdog_at: None,
            touched: HashSet::new(),
            read_buf: vec![0; 64 * 1024],
            last_status: String::new(),
            absent_checked: (usize::MAX, 0, 0),
            waiting: HashMap::new(),
            reopen_at: None,
            reopen_attempts: 0,
            maps: None,
            _state_lock: state_lock,
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
            self.now = self.clock();
            let turn_start = self.clock_us();
            // Where a slow turn went: clients' events, devices' events, timers, serving, the end of the turn (µs).
            let mut phases = [0u64; 5];
            for ev in &events {
                let t0 = self.clock_us();
                match Src::from_token(ev.token()) {
                    Some(Src::Listener) => self.process_listener(),
                    Some(Src::Waker) => self.process_waker(),
                    Some(Src::Signals) => self.process_signals(),
                    Some(Src::Uevent) => self.process_uevent(),
                    Some(Src::Client(i)) => self.process_client(i, !ev.is_read_closed() && !ev.is_error()),
                    Some(Src::Device(l, d)) => {
                        self.process_device(l, d, ev.is_writable());
                        phases[1] += self.clock_us().saturating_sub(t0);
                        continue;
                    }
                    None => log::debug!("event for unknown token {:?} ignored", ev.token()),
                }
                phases[0] += self.clock_us().saturating_sub(t0);
            }
            let mut mark = self.clock_us();
            for (phase, step) in [Server::process_timers, Server::serve_ready, Server::end_turn].into_iter().enumerate()
            {
                step(&mut self);
                let t = self.clock_us();
                phases[phase + 2] = t.saturating_sub(mark);
                mark = t;
            }
            let took = mark.saturating_sub(turn_start) / 1000;
            if took >= SLOW_TURN_MS {
                // Every other client waited this long: worth knowing when latencies are looked into (-v).
                let [clients, devices, timers, serving, end] = phases.map(|us| us / 1000);
                log::debug!(
                    "slow turn: {took} ms ({} events; ms in clients {clients}, devices {devices}, timers {timers}, \
                     serving {serving}, end of turn {end})",
                    events.iter().count()
                );
            }
            if let Some(r) = self.exit.take() {
                return r;
            }
            if self.stopping && self.durable() >= self.broker.last_batch() {
                self.notifier.notify("STOPPING=1");
                log::info!("stopped");
                return Ok(());
            }
        }
    }

    fn durable(&self) -> u64 {
        self.writer.as_ref().map_or(u64::MAX, Writer::durable)
    }

    fn next_deadline(&self) -> Option<u64> {
        if !self.ready.is_empty() {
            // Calls are left from this turn: look at new events, then serve them.
            return Some(self.now);
        }
        let stall = self
            .clients
            .iter()
            .flatten()
            .filter(|c| c.decoder.buffered() > 0 || c.pending_output() > 0)
            .map(|c| c.last_progress + client::STALL_MS);
        self.broker.poll_timeout().into_iter().chain(stall).chain(self.watchdog_at).chain(self.reopen_at).min()
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
            Ok(c) => Peer { pid: c.pid(), uid: c.uid(), gid: c.gid(), start_time: start_time_of(c.pid()) },
            Err(e) => {
                log::warn!("no peer credentials ({e}); refusing connection");
                return;
            }
        };
        // One user may hold only so many connections (idle ones too); administrators are exempt.
        let cap = self.setup.config.max_connections_per_user;
        let open = self.per_uid.get(&peer.uid).copied().unwrap_or(0);
        if open >= cap as usize && !self.broker.is_admin(peer) {
            let e = crate::proto::NtmsError::Busy {
                message: format!(
                    "uid {} has {open} connections to rsmd open, the most one user may (max_connections_per_user): \
                     close some",
                    peer.uid
                ),
            };
            use std::io::Write;
            // A fresh socket's buffer takes this small reply; the connection is closed right after.
            let _ = stream.write_all(&error_bytes(&WireError::Ntms(e)));
            log::info!("uid {}: connection refused, {open} open already", peer.uid);
            return;
        }
        let idx = self.free.pop().unwrap_or_else(|| {
            self.clients.push(None);
            self.clients.len() - 1
        });
        if let Err(e) = self.poll.registry().register(&mut stream, Src::Client(idx).into(), Interest::READABLE) {
            log::warn!("registering a client failed: {e}");
            self.free.push(idx);
            return;
        }
        *self.per_uid.entry(peer.uid).or_insert(0) += 1;
        self.broker.connected(peer);
        self.clients[idx] = Some(Client::new(stream, peer, self.now));
        self.touched.insert(idx);
        // Edge-triggered: bytes may already be there.
        self.process_client(idx, false);
    }

    /// A connection's event (or a resumption): sends what is queued, reads what arrived. Calls are not handled
    /// here but in [`Server::serve_ready`], where every connection gets its share in turn, the lightest first.
    ///
    /// `short_drains`: the event said the peer has not closed (see [`client::Client::read`]).
    fn process_client(&mut self, idx: usize, short_drains: bool) {
        let now = self.now;
        let squeezed = self.squeezed();
        let Some(mut c) = self.clients.get_mut(idx).and_then(Option::take) else { return };
        self.touched.insert(idx);
        c.squeezed = squeezed;
        let mut dead = false;
        if let Err(e) = c.write(now) {
            log::debug!("client {idx}: write failed: {e}");
            dead = true;
        }
        if !dead && !c.closing && !c.read_closed {
            if let Err(e) = c.read(now, &mut self.read_buf, short_drains) {
                log::debug!("client {idx}: read failed: {e}");
                dead = true;
            }
        }
        if c.closing && !dead {
            c.collect(self.durable());
            if c.write(now).is_err() || c.linger(now).is_err() {
                dead = true;
            }
        }
        if !dead && (c.has_calls() || (c.paused && !c.backpressured()) || c.building()) {
            self.ready.insert(idx);
        }
        self.put_back(idx, c);
        if dead {
            self.drop_client(idx);
        }
    }

    /// Puts connection `idx` back after working on it, counting what it holds against the memory budget.
    fn put_back(&mut self, idx: usize, mut c: Client) {
        let usage = c.usage();
        self.buffered_total = self.buffered_total.saturating_sub(c.accounted) + usage;
        c.accounted = usage;
        self.clients[idx] = Some(c);
    }

    /// True while all connections together hold more than the memory budget.
    fn squeezed(&self) -> bool {
        self.buffered_total >= self.setup.config.memory_budget
    }

    /// Handles the calls connections have buffered, in passes: each pass serves the connections with calls, those
    /// holding the least (buffered calls and unsent replies) first, each at most [`CALLS_PER_SERVING`] calls; passes
    /// go on until no connection has calls or [`SERVE_BUDGET_MS`] is spent (the rest wait for the next turn, which
    /// then polls without waiting). A client that pipelines many calls and does not read its replies so only ever
    /// delays the others by one serving, and it is served last.
    #[inline(never)] // a boundary tools/instructions counts inside
    fn serve_ready(&mut self) {
        let start = self.clock();
        let mut out_of_time = false;
        while !self.ready.is_empty() && !out_of_time {
            let mut order: Vec<(usize, usize)> = std::mem::take(&mut self.ready)
                .into_iter()
                .filter_map(|i| self.clients.get(i)?.as_ref().map(|c| (c.held(), i)))
                .collect();
            order.sort_unstable();
            for (_, i) in order {
                if out_of_time || self.clock().saturating_sub(start) >= SERVE_BUDGET_MS {
                    out_of_time = true;
                    self.ready.insert(i);
                } else if self.serve(i) {
                    self.ready.insert(i);
                }
            }
        }
    }

    /// One serving of connection `idx`: reads on if reading paused at a limit that has cleared, then handles up to
    /// [`CALLS_PER_SERVING`] calls. True when it has more to do.
    fn serve(&mut self, idx: usize) -> bool {
        let now = self.now;
        let squeezed = self.squeezed();
        let Some(mut c) = self.clients.get_mut(idx).and_then(Option::take) else { return false };
        self.touched.insert(idx);
        c.squeezed = squeezed;
        let mut dead = false;
        if c.paused && !c.backpressured() {
            if let Err(e) = c.read(now, &mut self.read_buf, false) {
                log::debug!("client {idx}: read failed: {e}");
                dead = true;
            }
        }
        if !dead {
            self.handle_messages(idx, &mut c, CALLS_PER_SERVING);
            if c.building() {
                self.build_reply(&mut c);
            }
        }
        let more = !dead && (c.has_calls() || (c.paused && !c.backpressured()) || c.building());
        if !dead && !more && c.squeezed && (c.calls_waiting || c.paused) {
            // Held back by the memory budget: looked at again once the budget has room.
            self.held.insert(idx);
        }
        self.put_back(idx, c);
        if dead {
            self.drop_client(idx);
        }
        more
    }

    /// Adds a page to the first reply being built on this connection ([`Slot::Building`]; only while its client has
    /// read enough of it, [`Client::building`]); a complete one becomes ready to send.
    fn build_reply(&mut self, c: &mut Client) {
        let Some(slot) = c.slots.iter_mut().find(|s| matches!(s, Slot::Building(_))) else { return };
        let Slot::Building(e) = slot else { return };
        if self.broker.continue_enumeration(e) {
            let Slot::Building(e) = std::mem::replace(slot, Slot::Ready { bytes: Vec::new(), durable: 0 }) else {
                return;
            };
            *slot = Slot::Ready { bytes: e.into_bytes(), durable: 0 };
        }
        c.collect(self.durable());
    }

    /// Handles up to `limit` of connection `idx`'s buffered calls (fewer when a limit stops it).
    fn handle_messages(&mut self, idx: usize, c: &mut Client, limit: usize) {
        let mut handled = 0;
        while handled < limit && c.has_calls() {
            let Some(msg) = c.decoder.next_message() else {
                c.calls_waiting = false;
                break;
            };
            handled += 1;
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
                Ok(m) => self.broker.handle_call(m, c.peer, self.now),
                Err(e) => Answer::Reply(Err(WireError::Varlink(e)), 0),
            };
            if oneway {
                continue;
            }
            match answer {
                Answer::Reply(r, durable) => {
                    let (bytes, durable) = match r {
                        Ok(params) => (Reply::new(params).encode(), durable),
                        Err(e) => (error_bytes(&e), 0),
                    };
                    c.slots.push_back(Slot::Ready { bytes, durable });
                }
                Answer::Encoded(bytes) => c.slots.push_back(Slot::Ready { bytes, durable: 0 }),
                Answer::Building(e) => c.slots.push_back(Slot::Building(e)),
                Answer::Later { key } => {
                    c.slots.push_back(Slot::Waiting { key });
                    self.waiting.insert(key, idx);
                }
                Answer::Stream { session, filter } => {
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
        c.collect(self.durable());
    }

    fn drop_client(&mut self, idx: usize) {
        let Some(mut c) = self.clients.get_mut(idx).and_then(Option::take) else { return };
        self.buffered_total = self.buffered_total.saturating_sub(c.accounted);
        self.ready.remove(&idx);
        self.held.remove(&idx);
        if c.registered.is_some() {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
        self.waiting.retain(|_, i| *i != idx);
        if let Some(n) = self.per_uid.get_mut(&c.peer.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_uid.remove(&c.peer.uid);
            }
        }
        self.broker.disconnected(c.peer, self.now);
        self.free.push(idx);
    }

    fn process_waker(&mut self) {
        if let Some(rx) = &self.maps {
            match rx.try_recv() {
                Ok(maps) => {
                    self.maps = None;
                    self.broker.set_saved_maps(maps, self.now);
                }
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => self.maps = None,
            }
        }
        if let Some(rx) = &self.loader {
            match rx.try_recv() {
                Ok(Ok((store, inventory, requests, maps))) => {
                    self.loader = None;
                    self.loaded(store, inventory, requests, maps);
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
        if let Some(w) = &self.writer {
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

    fn loaded(
        &mut self,
        store: Store,
        inventory: crate::media::Inventory,
        requests: crate::model::Requested,
        maps: crate::store::DriveMaps,
    ) {
        let n = inventory.media().count();
        self.broker.loaded_inventory(inventory, requests, maps, self.now);
        let w = self.waker.clone();
        self.writer = Some(Writer::spawn(store, move || {
            let _ = w.wake();
        }));
        log::info!("inventory loaded: {n} cartridges");
        self.notifier.notify("READY=1");
        self.notifier.status("serving the cached inventory; verifying libraries");
        let (libs, failed) = start::open_libraries(&mut self.setup);
        for lib in libs {
            self.add_library(lib);
        }
        if failed {
            self.schedule_reopen();
        }
    }

    fn add_library(&mut self, lib: Opened) {
        let key = lib.spec.key.clone();
        let paths =
            std::iter::once(lib.spec.label.clone()).chain(lib.spec.drives.iter().map(|d| d.path.clone())).collect();
        let li = self.broker.add_library(lib.spec, self.now);
        debug_assert_eq!(li, self.devices.len());
        let devices = Devices { key, changer: Some(lib.changer), drives: lib.drives, paths, dirty: true };
        let mut fds = Vec::new();
        if let Some(t) = &devices.changer {
            fds.push((0, t.fd().as_raw_fd()));
        }
        for (i, d) in devices.drives.iter().enumerate() {
            if let Some(t) = d {
                fds.push((i + 1, t.fd().as_raw_fd()));
            }
        }
        self.devices.push(devices);
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
        // The drive maps `rsmd --map-drives` saved are read off the loop and applied when they arrive.
        let (tx, rx) = mpsc::channel();
        let dir = self.setup.state_dir.clone();
        let w = self.waker.clone();
        let spawned = std::thread::Builder::new().name("rsmd-maps".into()).spawn(move || {
            let _ = tx.send(crate::store::drive_maps(&dir));
            let _ = w.wake();
        });
        match spawned {
            Ok(_) => self.maps = Some(rx),
            Err(e) => log::warn!("SIGHUP: cannot read the drive maps: {e}"),
        }
        let Some(path) = self.setup.config_path.clone() else {
            log::info!("SIGHUP: no configuration file to reload");
            return;
        };
        match crate::config::Config::load(&path) {
            Ok(c) => {
                log::info!("SIGHUP: reloaded {}", path.display());
                self.broker.set_options(broker_options(&c, &self.broker.host, self.broker.options.epoch_ms));
                self.setup.config = c;
                self.reconfigure_libraries();
                self.open_new_devices();
            }
            Err(e) => log::error!("SIGHUP: keeping the old configuration: {}", crate::error_chain(&e)),
        }
    }

    /// Applies a reloaded configuration to the libraries served: renamed and changed ones are reconfigured,
    /// the ones no entry names (and discovery does not serve) are removed and their devices closed.
    fn reconfigure_libraries(&mut self) {
        for li in 0..self.devices.len() {
            if self.devices[li].changer.is_none() && self.devices[li].drives.iter().all(Option::is_none) {
                continue;
            }
            let serial = self.broker.libs[li].library.identity().serial.clone();
            let entry = start::configured_entry(&self.setup.config, &self.devices[li].key, &serial);
            match entry {
                Some(lc) => {
                    let (name, options) = (lc.name.clone(), start::options(Some(lc)));
                    self.broker.reconfigure_library(li, name, &options, self.now);
                }
                None if self.setup.config.discover && !self.devices[li].key.starts_with("vlib:") => {
                    self.broker.reconfigure_library(li, None, &start::options(None), self.now);
                }
                None => {
                    let devices = &mut self.devices[li];
                    let transports =
                        devices.changer.take().into_iter().chain(devices.drives.iter_mut().filter_map(Option::take));
                    for t in transports {
                        let _ = self.poll.registry().deregister(&mut SourceFd(&t.fd().as_raw_fd()));
                    }
                    self.broker.remove_library(li, self.now);
                }
            }
        }
    }

    fn process_uevent(&mut self) {
        let Some(fd) = &self.uevent else { return };
        let (mut added, mut removed) = (false, Vec::new());
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match nix::sys::socket::recv(fd.as_raw_fd(), &mut buf, nix::sys::socket::MsgFlags::MSG_DONTWAIT) {
                Ok(0) => break,
                Ok(n) => {
                    if let Some(ev) = crate::sg::discover::parse_uevent(&buf[..n]) {
                        if ev.subsystem == "scsi_generic" {
                            log::info!("uevent: {:?} {}", ev.action, ev.devpath);
                            let name = ev.devname.clone().or_else(|| ev.devpath.rsplit('/').next().map(str::to_owned));
                            match ev.action {
                                crate::sg::discover::UeventAction::Remove => removed.extend(name),
                                _ => added = true,
                            }
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
        for name in removed {
            // Out of service at once: an sg fd whose device went away may only fail at the next command.
            let path = self.setup.dev_root.join(&name).display().to_string();
            let gone: Vec<(usize, usize)> = self
                .devices
                .iter()
                .enumerate()
                .flat_map(|(li, x)| x.paths.iter().enumerate().filter(|(_, p)| **p == path).map(move |(d, _)| (li, d)))
                .filter(|&(li, d)| self.devices[li].is_open(d))
                .collect();
            for (li, d) in gone {
                log::info!("{path} was removed: library {li} device {d} out of service");
                self.device_gone(li, d);
            }
        }
        if added && self.broker.is_loaded() {
            self.reopen_attempts = 0;
            self.open_new_devices();
        }
    }

    /// Opens what appeared: libraries not served yet, and drives of served libraries whose device came back. A
    /// node that exists but cannot be opened yet (udev applies its rules after the kernel's event: the group may
    /// not be ours for a moment) is tried again shortly, with backoff.
    fn open_new_devices(&mut self) {
        let (libs, mut failed) = start::open_new_libraries(&mut self.setup, &self.devices);
        for lib in libs {
            // A drive node that could not be opened yet (udev not done with it) is tried again shortly.
            failed |= lib.drives.iter().any(Option::is_none) && !lib.spec.key.starts_with("vlib:");
            self.add_library(lib);
        }
        failed |= self.reopen_gone_drives();
        if failed {
            self.schedule_reopen();
        }
        self.report_absent();
    }

    /// Drives of served sg libraries whose device went away, found again on whatever node they came back under:
    /// by their unit serial number (sysfs's copy of VPD 80h, compared with what the drive said before it left),
    /// or, for a single gone drive and a single new tape node without a serial to compare, by elimination. Returns
    /// whether a node could not be opened yet.
    fn reopen_gone_drives(&mut self) -> bool {
        let is_sg = |p: &str| p.starts_with('/') && !p.ends_with(".sock");
        let gone: Vec<(usize, usize, String)> = (0..self.devices.len())
            .filter(|&li| self.devices[li].changer.is_some())
            .flat_map(|li| (1..self.devices[li].paths.len()).map(move |d| (li, d)))
            .filter(|&(li, d)| self.devices[li].drives[d - 1].is_none() && is_sg(&self.devices[li].paths[d]))
            .map(|(li, d)| {
                let serial = self.broker.libs[li].library.drive_identities().get(d - 1).cloned().flatten();
                (li, d, serial.map(|i| i.serial).unwrap_or_default())
            })
            .collect();
        if gone.is_empty() {
            return false;
        }
        let held: HashSet<String> = self
            .devices
            .iter()
            .flat_map(|x| x.paths.iter().enumerate().filter(|&(d, _)| x.is_open(d)).map(|(_, p)| p.clone()))
            .collect();
        let tapes: Vec<crate::sg::discover::ScsiDevice> =
            match crate::sg::discover::scan(&self.setup.sysfs_root, &self.setup.dev_root) {
                Ok(all) => all
                    .into_iter()
                    .filter(|t| t.kind == crate::sg::discover::DeviceKind::Tape)
                    .filter(|t| !held.contains(&t.sg.display().to_string()))
                    .collect(),
                Err(e) => {
                    log::warn!("scanning {}: {e}", self.setup.sysfs_root.display());
                    return false;
                }
            };
        let sysfs = self.setup.sysfs_root.join("class/scsi_generic");
        let serials: Vec<Option<String>> = tapes
            .iter()
            .map(|t| {
                std::fs::read(sysfs.join(&t.name).join("device/vpd_pg80"))
                    .ok()
                    .and_then(|b| crate::scsi::inquiry::parse_unit_serial(&b).ok())
                    .filter(|s| !s.is_empty())
            })
            .collect();
        let mut taken = vec![false; tapes.len()];
        let mut failed = false;
        let single = gone.len() == 1 && tapes.len() == 1;
        for (li, d, old) in gone {
            let path = self.devices[li].paths[d].clone();
            // The same drive by its serial; else the node it had, unless that node now holds another drive; else
            // the only candidate for the only gone drive.
            let same_serial = |k: usize| serials[k].as_deref().is_some_and(|s| crate::changer::same_serial(&old, s));
            let by_serial =
                (!old.is_empty()).then(|| (0..tapes.len()).find(|&k| !taken[k] && same_serial(k))).flatten();
            let by_path = || {
                (0..tapes.len()).find(|&k| {
                    !taken[k]
                        && tapes[k].sg.display().to_string() == path
                        && (old.is_empty() || serials[k].is_none() || same_serial(k))
                })
            };
            let Some(k) = by_serial.or_else(by_path).or_else(|| single.then_some(0).filter(|&k| !taken[k])) else {
                continue;
            };
            let t = &tapes[k];
            match crate::sg::SgTransport::open(&t.sg) {
                Ok(transport) => {
                    taken[k] = true;
                    let fd = transport.fd().as_raw_fd();
                    let path = t.sg.display().to_string();
                    self.devices[li].drives[d - 1] = Some(Box::new(transport));
                    self.devices[li].paths[d].clone_from(&path);
                    self.devices[li].dirty = true;
                    if let Err(e) =
                        self.poll.registry().register(&mut SourceFd(&fd), Src::Device(li, d).into(), Interest::READABLE)
                    {
                        log::warn!("registering a device failed: {e}");
                    }
                    log::info!("{path} is back: library {li} drive device {}", d - 1);
                    let node =
                        crate::broker::DriveDevice { path, nst: t.nst.as_ref().map(|p| p.display().to_string()) };
                    self.broker.drive_back(li, d - 1, node, self.now);
                }
                Err(e) => {
                    log::warn!("{}: {e}; trying again shortly", t.sg.display());
                    failed = true;
                }
            }
        }
        failed
    }

    /// Tells the broker which configured libraries have no changer (shown as not present, with why).
    fn report_absent(&mut self) {
        let probing =
            self.broker.libs.iter().any(|l| !l.retired && l.library.state() == crate::model::LibraryState::Probing);
        let served: Vec<(String, String)> = self
            .devices
            .iter()
            .zip(&self.broker.libs)
            .filter(|(d, l)| d.changer.is_some() && !l.retired)
            .map(|(d, l)| (d.key.clone(), l.library.identity().serial.clone()))
            .collect();
        let config = &self.setup.config;
        let mut absent = Vec::new();
        for (i, lc) in config.libraries.iter().enumerate() {
            let found = served
                .iter()
                .any(|(key, serial)| start::configured_entry(config, key, serial).is_some_and(|e| std::ptr::eq(e, lc)));
            if found {
                continue;
            }
            let why = match &lc.source {
                crate::config::Source::Vlib(dir) => format!("no vlib emulator listens in {}", dir.display()),
                crate::config::Source::Path(p) if !p.exists() => format!("{} does not exist", p.display()),
                crate::config::Source::Path(p) => format!("{} is not a medium changer rsmd can open", p.display()),
                // Serials are known once the changers found are identified.
                crate::config::Source::Serial(_) if probing => continue,
                crate::config::Source::Serial(s) => format!("no changer with serial {s} is attached"),
                crate::config::Source::Auto if probing => continue,
                crate::config::Source::Auto => "no medium changer is attached".into(),
            };
            absent.push((lc.name.clone().unwrap_or_else(|| format!("library[{i}]")), why));
        }
        self.broker.set_absent(absent);
    }

    fn schedule_reopen(&mut self) {
        if self.reopen_attempts >= REOPEN_ATTEMPTS {
            log::warn!(
                "giving up opening devices after {REOPEN_ATTEMPTS} attempts; the next uevent or SIGHUP tries again"
            );
            self.reopen_at = None;
            return;
        }
        let delay = (REOPEN_FIRST_MS << self.reopen_attempts).min(REOPEN_MAX_MS);
        self.reopen_attempts += 1;
        self.reopen_at = Some(self.now + delay);
    }

    fn process_device(&mut self, li: usize, d: usize, writable: bool) {
        let now = self.now;
        let Some(devices) = self.devices.get_mut(li) else { return };
        devices.dirty = true;
        let Some(t) = devices.transport_mut(d) else { return };
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
                    log::warn!("{}: device {d}: {e}", devices.key);
                    gone = true;
                    break;
                }
            }
        }
        for c in completions {
            self.broker.handle_completion(li, c.tag, c.result, now);
        }
        if gone {
            self.device_gone(li, d);
        }
    }

    fn device_gone(&mut self, li: usize, d: usize) {
        let Some(devices) = self.devices.get_mut(li) else { return };
        let t = if d == 0 { devices.changer.take() } else { devices.drives.get_mut(d - 1).and_then(Option::take) };
        if let Some(t) = t {
            let _ = self.poll.registry().deregister(&mut SourceFd(&t.fd().as_raw_fd()));
        }
        self.broker.device_gone(li, d, self.now);
    }

    fn process_timers(&mut self) {
        let now = self.now;
        if self.reopen_at.is_some_and(|t| t <= now) {
            self.reopen_at = None;
            self.open_new_devices();
        }
        if self.broker.poll_timeout().is_some_and(|t| t <= now) {
            self.broker.handle_timeout(now);
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

    /// Submits the broker's SCSI commands on the devices' transports (a transport that refuses one completes it
    /// at once as failed).
    fn submit_commands(&mut self) {
        while let Some((li, o)) = self.broker.poll_command() {
            let d = match o.device {
                DeviceRef::Changer => 0,
                DeviceRef::Drive(i) => i + 1,
            };
            let result = match self.devices.get_mut(li).and_then(|x| {
                x.dirty = true;
                x.transport_mut(d)
            }) {
                Some(t) => t.submit(o.tag, o.command),
                None => Err(TransportError::DeviceGone),
            };
            if let Err(e) = result {
                self.broker.handle_completion(li, o.tag, Err(e), self.now);
            }
        }
    }

    fn end_turn(&mut self) {
        self.submit_commands();
        if self.broker.is_loaded() {
            let status = self.broker.status_line();
            if status != self.last_status {
                self.notifier.status(&status);
                self.last_status = status;
            }
            // Which configured libraries are absent changes when a changer is identified (its serial is known) or
            // goes: not on every move (it reads the file system for configured paths).
            let probing = self.broker.libs.iter().filter(|l| l.library.state() == crate::model::LibraryState::Probing);
            let settled =
                (self.broker.libs.len(), probing.count(), self.devices.iter().filter(|d| d.changer.is_some()).count());
            if settled != self.absent_checked {
                self.absent_checked = settled;
                self.report_absent();
            }
        }
        // Persist this turn's changes as one batch.
        let changes = self.broker.take_changes();
        if !changes.is_empty() {
            if let Some(w) = self.writer.as_mut() {
                let n = changes.len();
                match w.submit(changes) {
                    Ok(seq) => {
                        log::trace!("batch {seq}: {n} changes submitted");
                        debug_assert_eq!(
                            seq,
                            self.broker.last_batch(),
                            "the broker and the writer count batches alike"
                        );
                    }
                    Err(e) => self.exit = Some(Err(ServerError::Store(e))),
                }
            }
        }
        let batch = self.broker.last_batch();
        while let Some((key, reply, durable)) = self.broker.poll_reply() {
            log::debug!("request {key:?} finished; waiting client: {:?}", self.waiting.get(&key));
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
        let notes: Vec<_> = std::iter::from_fn(|| self.broker.poll_notification()).collect();
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
        let durable = self.durable();
        let now = self.now;
        if !self.held.is_empty() && !self.squeezed() {
            // The budget has room again: the connections it held back go on.
            let held: Vec<usize> = self.held.drain().collect();
            self.touched.extend(held);
        }
        let squeezed = self.squeezed();
        let touched: Vec<usize> = self.touched.drain().collect();
        for i in touched {
            let mut dead = false;
            let resume = self.clients.get_mut(i).and_then(Option::as_mut).is_some_and(|c| {
                c.squeezed = squeezed;
                c.paused && !c.backpressured()
            });
            if resume {
                self.process_client(i, false);
                self.touched.remove(&i);
            }
            if let Some(c) = self.clients.get_mut(i).and_then(Option::as_mut) {
                c.squeezed = squeezed;
                if c.has_calls() {
                    self.ready.insert(i);
                }
                c.collect(durable);
                let failed = c.write(now).is_err() || (c.closing && c.linger(now).is_err());
                if !failed && c.building() {
                    // Its client took what was built: the next page (no event would say so when the write drained).
                    self.ready.insert(i);
                }
                let usage = c.usage();
                self.buffered_total = self.buffered_total.saturating_sub(c.accounted) + usage;
                c.accounted = usage;
                if failed || c.finished() {
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
        for (li, lib) in self.devices.iter_mut().enumerate() {
            if !lib.dirty {
                continue;
            }
            lib.dirty = false;
            let mut regs = Vec::new();
            if let Some(t) = &lib.changer {
                regs.push((0, t.fd().as_raw_fd(), t.wants_write()));
            }
            for (i, d) in lib.drives.iter().enumerate() {
                if let Some(t) = d {
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
        if let Some(w) = self.writer.as_mut() {
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
    fn this_process_has_a_start_time() {
        assert!(start_time_of(std::process::id().try_into().unwrap()) > 0);
    }

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
