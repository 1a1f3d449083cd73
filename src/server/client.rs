//! One client connection: NUL-framed Varlink in, replies out in call order, with limits.
//!
//! # Primer
//! Each call gets a slot in `slots`, in arrival order. A slot is filled at once (most calls), later (a call waiting
//! on the hardware or on a flush), or repeatedly (a `more` stream). Bytes leave only from the head slot, so replies
//! keep call order. Limits keep one client from hurting the others: at most [`MAX_PIPELINE`] unanswered calls and
//! [`MAX_OUTPUT`] bytes of unsent replies, beyond which the connection stops being read (the client must read its
//! replies first); a connection that stays stuck that way, or keeps half a message, for [`STALL_MS`] is closed.
//! Beyond one connection, the server counts what all of them hold ([`Client::usage`]) against its memory budget:
//! while it is exceeded, a connection holding more than [`SQUEEZE_SHARE`] is backpressured too (`squeezed`).

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use mio::net::UnixStream;

use crate::broker::session::Peer;
use crate::proto::{FrameDecoder, MAX_MESSAGE};

/// Unanswered calls per connection before it stops being read.
pub const MAX_PIPELINE: usize = 128;
/// Unsent reply bytes per connection before it stops being read.
pub const MAX_OUTPUT: usize = 8 << 20;
/// How long a connection may stay stuck (output full, or a partial message) before it is closed.
pub const STALL_MS: u64 = 30_000;
/// While the server's memory budget is exceeded, what one connection may hold (buffered calls and unsent replies)
/// and still be read and served.
pub const SQUEEZE_SHARE: usize = 16 << 10;
/// Buffer capacity a connection keeps once its buffer is empty (more is given back).
const KEEP_CAPACITY: usize = 16 << 10;
/// Unsent bytes below which a reply being built ([`Slot::Building`]) gets its next page: a large listing streams
/// out as its client reads it, and holds about this much, never the whole reply.
pub const BUILD_AHEAD: usize = 512 << 10;

/// What one call's slot holds.
#[derive(Debug)]
pub enum Slot {
    /// The reply, to send once `durable` (a store batch) is on disk (0: no wait).
    Ready {
        /// Framed bytes.
        bytes: Vec<u8>,
        /// Store batch that must be durable first.
        durable: u64,
    },
    /// Waiting for the daemon to finish the call (`key` names it).
    Waiting {
        /// The pending call's key.
        key: crate::model::RequestId,
    },
    /// An unpaged enumeration built a page per serving ([`crate::broker::Answer::Building`]).
    Building(crate::broker::Enumeration),
    /// A `more` stream: replies queue here; the slot never completes until the session ends.
    Stream {
        /// Queued framed replies, each with its durability requirement.
        queued: VecDeque<(Vec<u8>, u64)>,
        /// Session the stream belongs to.
        session: String,
        /// Object type filter (wire name), none for all.
        filter: Option<crate::proto::ObjectType>,
    },
}

/// A client connection.
#[derive(Debug)]
pub struct Client {
    /// The socket.
    pub stream: UnixStream,
    /// The peer process.
    pub peer: Peer,
    /// Incoming bytes.
    pub decoder: FrameDecoder,
    /// Replies in call order.
    pub slots: VecDeque<Slot>,
    out: Vec<u8>,
    out_pos: usize,
    /// The peer closed its writing side (or an error): finish replies, then close.
    pub read_closed: bool,
    /// The peer closed the whole connection (its process exited or closed the socket): nothing can reach it, so
    /// calls still waiting are abandoned and the connection ends at once.
    pub hung_up: bool,
    /// Close after flushing what is queued (a fatal protocol error).
    pub closing: bool,
    /// Last time the connection made progress (bytes in or out), for stall detection.
    pub last_progress: u64,
    /// Reading stopped at a limit with bytes possibly left in the socket: read again once the limit clears
    /// (readiness is edge-triggered, no new event will come).
    pub paused: bool,
    /// Our writing side is shut (after the last reply of a closing connection).
    pub write_shut: bool,
    /// The interest the connection is registered with now (None: not registered; see [`Client::interest`]).
    pub registered: Option<mio::Interest>,
    /// The decoder may hold complete calls not handled yet (set by reading, cleared when none is left).
    pub calls_waiting: bool,
    /// The server's memory budget is exceeded: holding more than [`SQUEEZE_SHARE`] backpressures.
    pub squeezed: bool,
    /// What the server last counted for this connection against its budget ([`Client::usage`] then).
    pub accounted: usize,
}

/// Result of reading.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The socket is drained (WouldBlock).
    Drained,
    /// End of stream.
    Eof,
    /// Reading stopped at a limit; call again after handling what arrived.
    Paused,
}

impl Client {
    /// A new connection.
    pub fn new(stream: UnixStream, peer: Peer, now: u64) -> Client {
        Client {
            stream,
            peer,
            decoder: FrameDecoder::new(),
            slots: VecDeque::new(),
            out: Vec::new(),
            out_pos: 0,
            read_closed: false,
            hung_up: false,
            closing: false,
            last_progress: now,
            paused: false,
            write_shut: false,
            registered: Some(mio::Interest::READABLE),
            calls_waiting: false,
            squeezed: false,
            accounted: 0,
        }
    }

    /// What the connection holds in memory: its buffers' capacity (incoming bytes, replies being sent) and the
    /// replies queued behind them.
    pub fn usage(&self) -> usize {
        self.decoder.capacity() + self.out.capacity() + self.slots.iter().map(slot_bytes).sum::<usize>()
    }

    /// What the connection holds for its client: calls not handled yet and replies not sent yet.
    pub fn held(&self) -> usize {
        self.decoder.buffered() + self.pending_output()
    }

    /// Unsent bytes.
    pub fn pending_output(&self) -> usize {
        self.out.len() - self.out_pos + self.slots.iter().map(slot_bytes).sum::<usize>()
    }

    /// True when the connection should not be read now (limits reached, or closing).
    pub fn backpressured(&self) -> bool {
        self.closing
            || self.read_closed
            || self.slots.len() >= MAX_PIPELINE
            || self.pending_output() >= MAX_OUTPUT
            || (self.squeezed && self.held() >= SQUEEZE_SHARE)
    }

    /// True when the connection has calls to handle now: complete ones may be buffered, and neither a limit nor
    /// a fatal error stops it.
    /// A reply is being built ([`Slot::Building`]) and its client has read enough of it ([`BUILD_AHEAD`]): the
    /// connection needs servings even without calls.
    pub fn building(&self) -> bool {
        self.pending_output() < BUILD_AHEAD && self.slots.iter().any(|s| matches!(s, Slot::Building(_)))
    }

    pub fn has_calls(&self) -> bool {
        self.calls_waiting
            && !self.closing
            && self.slots.len() < MAX_PIPELINE
            && !(self.squeezed && self.pending_output() >= SQUEEZE_SHARE)
    }

    /// The interest to register, computed from the state: readable while we accept input (or linger to discard
    /// it), writable while output is queued; None when neither (the connection is then deregistered: a readable
    /// socket we will not read, or a half-closed one, would otherwise wake the loop forever).
    pub fn interest(&self) -> Option<mio::Interest> {
        let read = !self.read_closed && (self.closing || !self.backpressured());
        let write = self.out_pos < self.out.len();
        match (read, write) {
            (true, true) => Some(mio::Interest::READABLE | mio::Interest::WRITABLE),
            (true, false) => Some(mio::Interest::READABLE),
            (false, true) => Some(mio::Interest::WRITABLE),
            (false, false) => None,
        }
    }

    /// Reads until WouldBlock, EOF, or a limit (backpressure, or more than one maximal message buffered), through
    /// `buf`: the loop's one scratch buffer (a fresh one per read was 64 KiB to zero for every call of every
    /// client: 40 % of the instructions a lookup cost).
    ///
    /// `short_drains`: a read shorter than `buf` emptied the socket, so stop without the read that would say
    /// WouldBlock (one system call less per call). Only when the event said the peer has not closed: a close
    /// that came with the data would be no new edge, and must be read now.
    pub fn read(&mut self, now: u64, buf: &mut [u8], short_drains: bool) -> io::Result<ReadOutcome> {
        loop {
            if self.backpressured() || self.decoder.buffered() > MAX_MESSAGE {
                self.paused = true;
                return Ok(ReadOutcome::Paused);
            }
            match self.stream.read(buf) {
                Ok(0) => {
                    self.read_closed = true;
                    self.hung_up = peer_gone(&self.stream);
                    return Ok(ReadOutcome::Eof);
                }
                Ok(n) => {
                    self.last_progress = now;
                    self.decoder.extend(&buf[..n]);
                    self.calls_waiting = true;
                    if short_drains && n < buf.len() && !self.backpressured() {
                        self.paused = false;
                        return Ok(ReadOutcome::Drained);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.paused = false;
                    return Ok(ReadOutcome::Drained);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// For a closing connection: once the last reply is out, shut our writing side, then read and discard until
    /// the peer closes. (Closing with unread input would reset the connection and could destroy the error reply
    /// before the peer reads it.)
    pub fn linger(&mut self, now: u64) -> io::Result<()> {
        if self.out_pos < self.out.len() || self.slots.iter().any(|s| matches!(s, Slot::Ready { .. })) {
            return Ok(());
        }
        if !self.write_shut {
            self.write_shut = true;
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.read_closed = true;
                    return Ok(());
                }
                Ok(_) => self.last_progress = now,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves finished head slots into the output buffer (replies whose store batch is durable), and what a head
    /// reply being built has so far (it streams).
    pub fn collect(&mut self, durable: u64) {
        loop {
            match self.slots.front_mut() {
                Some(Slot::Ready { durable: d, .. }) if *d <= durable => {
                    if let Some(Slot::Ready { bytes, .. }) = self.slots.pop_front() {
                        self.queue_output(bytes);
                    }
                }
                Some(Slot::Building(e)) => {
                    e.take_built(&mut self.out);
                    break;
                }
                Some(Slot::Stream { queued, .. }) => {
                    while queued.front().is_some_and(|q| q.1 <= durable) {
                        if let Some((b, _)) = queued.pop_front() {
                            self.out.extend_from_slice(&b);
                        }
                    }
                    break;
                }
                _ => break,
            }
        }
    }

    /// Appends `bytes` to the output; into an empty output they go as they are (a 20 MB listing is not copied).
    fn queue_output(&mut self, bytes: Vec<u8>) {
        if self.out.is_empty() {
            // An empty output has nothing half-sent (`write` resets both at once).
            self.out = bytes;
        } else {
            self.out.extend_from_slice(&bytes);
        }
    }

    /// Writes until WouldBlock. Returns true when everything queued went out.
    pub fn write(&mut self, now: u64) -> io::Result<bool> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_pos += n;
                    self.last_progress = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        if self.out.capacity() > KEEP_CAPACITY {
            // A large reply went out: give its buffer back rather than hold it for the connection's life.
            self.out = Vec::new();
        }
        Ok(true)
    }

    /// Fills the waiting slot `key` with a reply.
    pub fn complete(&mut self, key: crate::model::RequestId, bytes: Vec<u8>, durable: u64) -> bool {
        for s in &mut self.slots {
            if matches!(s, Slot::Waiting { key: k } if *k == key) {
                *s = Slot::Ready { bytes, durable };
                return true;
            }
        }
        false
    }

    /// True when a reply or a notification is held until a store batch is durable.
    pub fn awaits_durable(&self) -> bool {
        self.slots.iter().any(|s| match s {
            Slot::Ready { .. } => true,
            Slot::Stream { queued, .. } => !queued.is_empty(),
            Slot::Waiting { .. } | Slot::Building(_) => false,
        })
    }

    /// True when the connection is done: nothing more to read, nothing left to send.
    pub fn finished(&self) -> bool {
        let drained = self.out_pos >= self.out.len();
        let nothing_pending = self.slots.iter().all(|s| matches!(s, Slot::Stream { .. })) || self.slots.is_empty();
        self.hung_up
            || (self.closing && self.write_shut && self.read_closed)
            || (!self.closing
                && self.read_closed
                && !self.calls_waiting
                && drained
                && (self.slots.is_empty() || nothing_pending))
    }

    /// True when the connection made no progress for [`STALL_MS`] while stuck (output not drained, or a partial
    /// message buffered).
    pub fn stalled(&self, now: u64) -> bool {
        let stuck = self.out_pos < self.out.len() || self.decoder.buffered() > 0 || self.closing;
        stuck && now.saturating_sub(self.last_progress) >= STALL_MS
    }
}

fn slot_bytes(s: &Slot) -> usize {
    match s {
        Slot::Ready { bytes, .. } => bytes.len(),
        Slot::Waiting { .. } => 0,
        Slot::Building(e) => e.built(),
        Slot::Stream { queued, .. } => queued.iter().map(|q| q.0.len()).sum(),
    }
}

/// After EOF: true when the peer closed the whole connection rather than only its writing side (a half-close
/// still waits for its replies). The kernel reports POLLHUP on a Unix stream socket once both directions are shut,
/// which is what the peer's close (or exit) does; asked without waiting.
fn peer_gone(stream: &UnixStream) -> bool {
    use std::os::fd::AsFd;
    let mut fds = [nix::poll::PollFd::new(stream.as_fd(), nix::poll::PollFlags::POLLOUT)];
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
        Ok(_) => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(nix::poll::PollFlags::POLLHUP | nix::poll::PollFlags::POLLERR)),
        Err(_) => false,
    }
}
