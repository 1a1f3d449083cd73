//! A [`crate::transport::Transport`] over vlib's socket protocol (tools/vlib/README.md).
//!
//! # Primer
//! vlib serves each emulated device (the changer and every drive) on its own Unix stream socket. The client writes
//! request frames and reads response frames; responses come back in any order and carry the request's tag. All
//! integers are little-endian, and every frame starts with `u32 frame_len`, the number of bytes that follow.
//!
//! ```text
//! request:  frame_len u32 | tag u32 | timeout_ms u32 | direction u8 | cdb_len u8 | reserved u16 | dxfer_len u32
//!           | cdb [cdb_len] | data [dxfer_len] (direction 2 only)
//! response: frame_len u32 | tag u32 | status u8 | host_status u8 | sense_len u8 | reserved u8 | resid u32
//!           | duration_ms u32 | data_len u32 | sense [sense_len] | data [data_len]
//! ```
//!
//! [`EmuTransport`] keeps an output buffer (flushed on submit and on writable events) and an input buffer (filled on
//! readable events until `WouldBlock`, then decoded frame by frame). A frame over [`MAX_FRAME`], one whose lengths
//! disagree, or a response for a tag not in flight is a protocol violation: the connection is dead, each command in
//! flight completes with `Err(Protocol)`, and `reap` then returns `Err(Protocol)`. End of file or a reset means the
//! device disappeared: the same, with `DeviceGone`.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{send, MsgFlags};

use crate::transport::{host_status, Command, Completion, DataDirection, Response, Tag, Transport, TransportError};

/// The largest `frame_len` either side may send (16 MiB).
pub const MAX_FRAME: usize = 16 << 20;

/// The largest data phase [`EmuTransport::submit`] accepts: a frame's worth, less room for the headers, the CDB and
/// the sense data.
pub const TRANSFER_LIMIT: usize = MAX_FRAME - 1024;

/// Bytes of a request frame after `frame_len`, before the CDB.
const REQUEST_HEADER: usize = 16;
/// Bytes of a response frame after `frame_len`, before the sense data.
const RESPONSE_HEADER: usize = 20;
/// Largest sense data a response may carry.
const MAX_SENSE: usize = 252;
/// Bytes read from the socket per `read()`.
const READ_CHUNK: usize = 64 * 1024;

/// Whether the connection is usable.
#[derive(Debug)]
enum State {
    /// Requests and responses flow.
    Open,
    /// The peer went away (`gone`) or violated the protocol. `doomed` lists the commands still to be returned as
    /// completions carrying the matching error; after them `reap` returns it forever.
    Dead {
        /// Tags still to be returned, in tag order.
        doomed: VecDeque<Tag>,
        /// `DeviceGone` when true, `Protocol` otherwise.
        gone: bool,
    },
}

/// An emulated SCSI device reached through vlib's Unix socket.
#[derive(Debug)]
pub struct EmuTransport {
    stream: UnixStream,
    /// Encoded requests not yet written; `out[out_pos..]` is pending.
    out: Vec<u8>,
    out_pos: usize,
    /// Received bytes; `input[in_pos..]` is not decoded yet.
    input: Vec<u8>,
    in_pos: usize,
    /// Commands in flight, with the allocation length a response may fill.
    in_flight: HashMap<Tag, usize>,
    state: State,
}

impl EmuTransport {
    /// Connects to a vlib device socket and makes the connection non-blocking.
    pub fn connect(path: &Path) -> io::Result<EmuTransport> {
        EmuTransport::from_stream(UnixStream::connect(path)?)
    }

    /// Wraps an already connected stream (made non-blocking here).
    pub fn from_stream(stream: UnixStream) -> io::Result<EmuTransport> {
        stream.set_nonblocking(true)?;
        Ok(EmuTransport {
            stream,
            out: Vec::new(),
            out_pos: 0,
            input: Vec::new(),
            in_pos: 0,
            in_flight: HashMap::new(),
            state: State::Open,
        })
    }

    /// True once the connection is dead (peer gone or protocol violated): no command will be accepted again.
    pub fn is_gone(&self) -> bool {
        matches!(self.state, State::Dead { .. })
    }

    /// Bytes of encoded requests not yet written to the socket.
    pub fn queued_bytes(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Stops using the connection: every command in flight is doomed.
    fn die(&mut self, gone: bool) {
        if self.is_gone() {
            return;
        }
        let mut doomed: Vec<Tag> = self.in_flight.keys().copied().collect();
        doomed.sort_unstable();
        self.out.clear();
        self.out_pos = 0;
        self.input.clear();
        self.in_pos = 0;
        self.state = State::Dead { doomed: doomed.into(), gone };
    }

    /// Writes queued output until it is empty or the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match send(self.stream.as_raw_fd(), &self.out[self.out_pos..], MsgFlags::MSG_NOSIGNAL) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }

    /// Flushes, turning a failed connection into a dead transport.
    fn flush_or_die(&mut self) -> Result<(), TransportError> {
        match self.flush() {
            Ok(()) => Ok(()),
            Err(e) if is_disconnect(&e) => {
                self.die(true);
                Ok(())
            }
            Err(e) => Err(TransportError::Io(e)),
        }
    }

    /// Decodes one complete response frame from the input buffer, if there is one.
    fn decode(&mut self) -> Result<Option<Completion>, TransportError> {
        let buf = &self.input[self.in_pos..];
        let Some(frame_len) = le32(buf, 0) else { return Ok(None) };
        let frame_len = usize::try_from(frame_len).map_err(|_| TransportError::Protocol)?;
        if !(RESPONSE_HEADER..=MAX_FRAME).contains(&frame_len) {
            return Err(TransportError::Protocol);
        }
        let Some(frame) = buf.get(4..4 + frame_len) else { return Ok(None) };
        let completion = decode_response(&mut self.in_flight, frame)?;
        self.in_pos += 4 + frame_len;
        Ok(Some(completion))
    }

    /// Reads once into the input buffer. `Ok(false)` means nothing to read now.
    fn fill(&mut self) -> io::Result<bool> {
        if self.in_pos > 0 {
            self.input.drain(..self.in_pos);
            self.in_pos = 0;
        }
        if self.input.is_empty() && self.input.capacity() > 4 * READ_CHUNK {
            // A burst of large responses (a whole library's element status) is not kept for good.
            self.input = Vec::new();
        }
        let old = self.input.len();
        self.input.resize(old + READ_CHUNK, 0);
        let r = self.stream.read(&mut self.input[old..]);
        self.input.truncate(old + *r.as_ref().unwrap_or(&0));
        match r {
            Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Decodes the body of one response frame (everything after `frame_len`) for a command in `in_flight`.
fn decode_response(in_flight: &mut HashMap<Tag, usize>, frame: &[u8]) -> Result<Completion, TransportError> {
    let field = |offset| le32(frame, offset).ok_or(TransportError::Protocol);
    let byte = |offset: usize| frame.get(offset).copied().ok_or(TransportError::Protocol);
    let tag = field(0)?;
    let status = byte(4)?;
    let host = byte(5)?;
    let sense_len = usize::from(byte(6)?);
    let resid = field(8)?;
    let duration_ms = field(12)?;
    let data_len = usize::try_from(field(16)?).map_err(|_| TransportError::Protocol)?;
    if sense_len > MAX_SENSE || RESPONSE_HEADER + sense_len + data_len != frame.len() {
        return Err(TransportError::Protocol);
    }
    let Some(&alloc) = in_flight.get(&tag) else { return Err(TransportError::Protocol) };
    if data_len > alloc {
        return Err(TransportError::Protocol);
    }
    let sense = frame.get(RESPONSE_HEADER..RESPONSE_HEADER + sense_len).ok_or(TransportError::Protocol)?;
    let data = frame.get(RESPONSE_HEADER + sense_len..).ok_or(TransportError::Protocol)?;
    in_flight.remove(&tag);
    let result = match u16::from(host) {
        host_status::TIME_OUT => Err(TransportError::TimedOut),
        host_status::NO_CONNECT => Err(TransportError::DeviceGone),
        host_status => Ok(Response {
            status,
            host_status,
            driver_status: 0,
            sense: sense.to_vec(),
            data: data.to_vec(),
            resid,
            duration: Duration::from_millis(u64::from(duration_ms)),
        }),
    };
    Ok(Completion { tag, result })
}

/// A little-endian `u32` at `offset`, if the buffer is long enough.
fn le32(buf: &[u8], offset: usize) -> Option<u32> {
    let bytes = buf.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// True for the errors that mean the peer closed or reset the connection.
fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::WriteZero
    )
}

/// `timeout_ms` for a request: saturating, and at least 1 ms for a non-zero timeout (0 means none to vlib).
fn timeout_ms(timeout: Duration) -> u32 {
    let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    if ms == 0 && !timeout.is_zero() {
        1
    } else {
        ms
    }
}

/// Appends the request frame for `command` to `out`; returns the allocation length a response may fill.
fn encode_request(out: &mut Vec<u8>, tag: Tag, command: &Command) -> Result<usize, TransportError> {
    let cdb_len = u8::try_from(command.cdb.len()).map_err(|_| TransportError::InvalidCommand)?;
    if !(6..=16).contains(&cdb_len) {
        return Err(TransportError::InvalidCommand);
    }
    let (direction, dxfer_len, data): (u8, usize, &[u8]) = match &command.direction {
        DataDirection::None => (0, 0, &[]),
        DataDirection::FromDevice(alloc) => {
            (1, usize::try_from(*alloc).map_err(|_| TransportError::InvalidCommand)?, &[])
        }
        DataDirection::ToDevice(bytes) => (2, bytes.len(), bytes),
    };
    if dxfer_len > TRANSFER_LIMIT {
        return Err(TransportError::InvalidCommand);
    }
    let frame_len = REQUEST_HEADER + command.cdb.len() + data.len();
    let to_u32 = |n: usize| u32::try_from(n).map_err(|_| TransportError::InvalidCommand);
    let (frame_len_field, dxfer_len_field) = (to_u32(frame_len)?, to_u32(dxfer_len)?);
    out.reserve(4 + frame_len);
    out.extend_from_slice(&frame_len_field.to_le_bytes());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&timeout_ms(command.timeout).to_le_bytes());
    out.push(direction);
    out.push(cdb_len);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&dxfer_len_field.to_le_bytes());
    out.extend_from_slice(&command.cdb);
    out.extend_from_slice(data);
    Ok(if direction == 1 { dxfer_len } else { 0 })
}

impl Transport for EmuTransport {
    fn submit(&mut self, tag: Tag, command: Command) -> Result<(), TransportError> {
        if self.is_gone() {
            return Err(TransportError::DeviceGone);
        }
        if self.in_flight.contains_key(&tag) {
            return Err(TransportError::DuplicateTag(tag));
        }
        let alloc = encode_request(&mut self.out, tag, &command)?;
        self.in_flight.insert(tag, alloc);
        // A peer that went away is reported through `reap`, which returns this command as DeviceGone.
        self.flush_or_die()
    }

    fn reap(&mut self) -> Result<Option<Completion>, TransportError> {
        loop {
            if let State::Dead { doomed, gone } = &mut self.state {
                let error = || if *gone { TransportError::DeviceGone } else { TransportError::Protocol };
                return match doomed.pop_front() {
                    Some(tag) => {
                        self.in_flight.remove(&tag);
                        Ok(Some(Completion { tag, result: Err(error()) }))
                    }
                    None => Err(error()),
                };
            }
            match self.decode() {
                Ok(Some(completion)) => return Ok(Some(completion)),
                Ok(None) => {}
                Err(_) => {
                    log::error!("emu: malformed response frame");
                    self.die(false);
                    continue;
                }
            }
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_disconnect(&e) => self.die(true),
                Err(e) => return Err(TransportError::Io(e)),
            }
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    fn wants_write(&self) -> bool {
        self.queued_bytes() > 0
    }

    fn on_writable(&mut self) -> Result<(), TransportError> {
        if self.is_gone() {
            return Ok(());
        }
        self.flush_or_die()
    }

    fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

/// The built-in virtual library of `rsmd --demo`: vlib's default library served in-process on sockets in `dir`
/// (time scaled by `time_scale`), for the daemon to reach through [`EmuTransport`] like any emulator.
#[derive(Debug)]
pub struct DemoLibrary {
    #[cfg(feature = "demo")]
    _server: vlib::server::Server,
}

impl DemoLibrary {
    /// Starts it. The demo shows a modern library: drives report their serials (DVCID), so they map by themselves.
    #[cfg(feature = "demo")]
    pub fn start(dir: &Path, time_scale: f64) -> std::io::Result<DemoLibrary> {
        let mut c = vlib::Config::default_library();
        c.time_scale = time_scale;
        c.dvcid = true;
        std::fs::create_dir_all(dir)?;
        let server = vlib::server::Server::spawn(c, dir).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(DemoLibrary { _server: server })
    }

    /// Without the `demo` feature there is no built-in library.
    #[cfg(not(feature = "demo"))]
    pub fn start(_dir: &Path, _time_scale: f64) -> std::io::Result<DemoLibrary> {
        Err(std::io::Error::other("this rsmd was built without the demo library (cargo feature `demo`)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::status;
    use std::io::Write;

    const INQUIRY: [u8; 6] = [0x12, 0, 0, 0, 0x60, 0];
    const TUR: [u8; 6] = [0; 6];
    const T: Duration = Duration::from_secs(5);

    /// A request frame as vlib decodes it.
    #[derive(Debug, PartialEq, Eq)]
    struct Request {
        tag: Tag,
        timeout_ms: u32,
        direction: u8,
        cdb: Vec<u8>,
        dxfer_len: u32,
        data: Vec<u8>,
    }

    /// Decodes one request frame body.
    fn parse_request(body: &[u8]) -> Request {
        let u32_at = |o: usize| u32::from_le_bytes(body[o..o + 4].try_into().unwrap());
        let cdb_len = usize::from(body[9]);
        assert_eq!(&body[10..12], [0, 0], "reserved");
        let cdb = body[16..16 + cdb_len].to_vec();
        let data = body[16 + cdb_len..].to_vec();
        Request { tag: u32_at(0), timeout_ms: u32_at(4), direction: body[8], cdb, dxfer_len: u32_at(12), data }
    }

    /// The test's side of the socket, playing vlib.
    struct Peer(UnixStream);

    impl Peer {
        fn read_request(&mut self) -> Request {
            let mut len = [0; 4];
            self.0.read_exact(&mut len).unwrap();
            let mut body = vec![0; usize::try_from(u32::from_le_bytes(len)).unwrap()];
            self.0.read_exact(&mut body).unwrap();
            parse_request(&body)
        }

        fn send(&mut self, bytes: &[u8]) {
            self.0.write_all(bytes).unwrap();
        }
    }

    /// Encodes a response frame.
    fn response(tag: Tag, status: u8, host: u8, sense: &[u8], resid: u32, data: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        let len = u32::try_from(RESPONSE_HEADER + sense.len() + data.len()).unwrap();
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(&tag.to_le_bytes());
        f.extend_from_slice(&[status, host, u8::try_from(sense.len()).unwrap(), 0]);
        f.extend_from_slice(&resid.to_le_bytes());
        f.extend_from_slice(&7u32.to_le_bytes());
        f.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
        f.extend_from_slice(sense);
        f.extend_from_slice(data);
        f
    }

    fn pair() -> (EmuTransport, Peer) {
        let (a, b) = UnixStream::pair().unwrap();
        (EmuTransport::from_stream(a).unwrap(), Peer(b))
    }

    /// Reaps until the transport ends with an error; returns the completions and the error.
    fn drain(t: &mut EmuTransport) -> (Vec<Completion>, TransportError) {
        let mut out = Vec::new();
        loop {
            match t.reap() {
                Ok(Some(c)) => out.push(c),
                Ok(None) => panic!("a dead transport never reports Ok(None)"),
                Err(e) => return (out, e),
            }
        }
    }

    #[test]
    fn requests_are_encoded_as_the_readme_says() {
        let (mut t, mut p) = pair();
        t.submit(0x0102_0304, Command::read(INQUIRY, 96, Duration::from_millis(1500))).unwrap();
        let out = Command { cdb: vec![0x15; 10], direction: DataDirection::ToDevice(vec![1, 2, 3]), timeout: T };
        t.submit(2, out).unwrap();
        t.submit(3, Command::none(TUR, Duration::from_micros(10))).unwrap();
        t.submit(4, Command::none(TUR, Duration::ZERO)).unwrap();
        assert!(!t.wants_write());
        let mut raw = [0; 4 + 16 + 6];
        p.0.read_exact(&mut raw).unwrap();
        assert_eq!(
            raw,
            [22, 0, 0, 0, 4, 3, 2, 1, 0xdc, 5, 0, 0, 1, 6, 0, 0, 96, 0, 0, 0, 0x12, 0, 0, 0, 0x60, 0],
            "frame_len, tag, timeout_ms, direction, cdb_len, reserved, dxfer_len, cdb"
        );
        let r = p.read_request();
        assert_eq!(
            r,
            Request { tag: 2, timeout_ms: 5000, direction: 2, cdb: vec![0x15; 10], dxfer_len: 3, data: vec![1, 2, 3] }
        );
        assert_eq!(p.read_request().timeout_ms, 1, "a sub-millisecond timeout is not 'none'");
        assert_eq!(p.read_request().timeout_ms, 0);
        assert_eq!(t.in_flight(), 4);
    }

    #[test]
    fn out_of_order_responses_match_tags() {
        let (mut t, mut p) = pair();
        t.submit(1, Command::read(INQUIRY, 96, T)).unwrap();
        t.submit(2, Command::none(TUR, T)).unwrap();
        let (a, b) = (p.read_request(), p.read_request());
        assert_eq!((a.tag, b.tag), (1, 2));
        assert!(t.reap().unwrap().is_none());
        p.send(&response(2, status::GOOD, 0, &[], 0, &[]));
        p.send(&response(1, status::GOOD, 0, &[], 60, &[0x08; 36]));
        let c = t.reap().unwrap().unwrap();
        assert_eq!(c.tag, 2);
        assert!(c.result.unwrap().is_good());
        let c = t.reap().unwrap().unwrap();
        assert_eq!(c.tag, 1);
        let r = c.result.unwrap();
        assert_eq!(r.data, [0x08; 36]);
        assert_eq!(r.resid, 60);
        assert_eq!(r.duration, Duration::from_millis(7));
        assert!(t.reap().unwrap().is_none());
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn frames_split_across_reads_are_reassembled() {
        let (mut t, mut p) = pair();
        t.submit(1, Command::read(INQUIRY, 96, T)).unwrap();
        t.submit(2, Command::none(TUR, T)).unwrap();
        let sense = [0x70, 0, 0x06, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x28, 0, 0, 0, 0, 0];
        let mut bytes = response(1, status::GOOD, 0, &[], 0, &[0x55; 96]);
        bytes.extend(response(2, status::CHECK_CONDITION, 0, &sense, 0, &[]));
        // Pieces: inside the length, inside the header, inside the data, across the frame boundary, the rest.
        let cuts = [2, 9, 50, 120, bytes.len()];
        let mut got = Vec::new();
        let mut start = 0;
        for cut in cuts {
            p.send(&bytes[start..cut]);
            start = cut;
            while let Some(c) = t.reap().unwrap() {
                got.push(c);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].result.as_ref().unwrap().data, [0x55; 96]);
        let r = got[1].result.as_ref().unwrap();
        assert_eq!(r.status, status::CHECK_CONDITION);
        assert_eq!(r.sense, sense);
        assert!(!r.is_good());
    }

    #[test]
    fn host_status_timeout_maps_to_timed_out() {
        let (mut t, mut p) = pair();
        t.submit(9, Command::none([0x07, 0, 0, 0, 0, 0], Duration::from_millis(1))).unwrap();
        p.read_request();
        p.send(&response(9, 0, 3, &[], 0, &[]));
        let c = t.reap().unwrap().unwrap();
        assert_eq!(c.tag, 9);
        assert!(matches!(c.result, Err(TransportError::TimedOut)));
        assert!(!t.is_gone());
    }

    #[test]
    fn eof_with_commands_in_flight_completes_them_as_gone() {
        let (mut t, mut p) = pair();
        for tag in [5, 1, 3] {
            t.submit(tag, Command::none(TUR, T)).unwrap();
        }
        for _ in 0..3 {
            p.read_request();
        }
        // A response sent before the close is still delivered.
        p.send(&response(3, 0, 0, &[], 0, &[]));
        drop(p);
        let c = t.reap().unwrap().unwrap();
        assert_eq!(c.tag, 3);
        assert!(c.result.is_ok());
        let (rest, end) = drain(&mut t);
        let tags: Vec<Tag> = rest.iter().map(|c| c.tag).collect();
        assert_eq!(tags, [1, 5]);
        assert!(rest.iter().all(|c| matches!(c.result, Err(TransportError::DeviceGone))));
        assert!(matches!(end, TransportError::DeviceGone));
        assert!(matches!(t.reap(), Err(TransportError::DeviceGone)), "and forever");
        assert!(t.is_gone());
        assert_eq!(t.in_flight(), 0);
        assert!(matches!(t.submit(7, Command::none(TUR, T)), Err(TransportError::DeviceGone)));
    }

    #[test]
    fn reset_by_peer_with_unread_requests_is_device_gone() {
        let (mut t, p) = pair();
        t.submit(1, Command::none(TUR, T)).unwrap();
        drop(p); // Closes with our request unread: our side sees ECONNRESET or EOF.
        let (c, end) = drain(&mut t);
        assert_eq!(c.len(), 1);
        assert!(matches!(c[0].result, Err(TransportError::DeviceGone)));
        assert!(matches!(end, TransportError::DeviceGone));
    }

    #[test]
    fn submit_after_peer_closed_is_reported_by_reap() {
        let (mut t, p) = pair();
        drop(p);
        // The send fails with EPIPE (no SIGPIPE: MSG_NOSIGNAL); the command comes back through reap.
        t.submit(1, Command::none(TUR, T)).unwrap();
        let (c, end) = drain(&mut t);
        assert_eq!(c.len(), 1);
        assert!(matches!(c[0].result, Err(TransportError::DeviceGone)));
        assert!(matches!(end, TransportError::DeviceGone));
    }

    #[test]
    fn malformed_frames_kill_the_connection() {
        let bad_frames: Vec<(&str, Vec<u8>)> = vec![
            ("oversized", u32::try_from(MAX_FRAME + 1).unwrap().to_le_bytes().to_vec()),
            ("too short for a header", {
                let mut f = 8u32.to_le_bytes().to_vec();
                f.extend([0; 8]);
                f
            }),
            ("lengths disagree", {
                let mut f = response(1, 0, 0, &[], 0, &[1, 2, 3]);
                f[0] += 1;
                f.push(0);
                f
            }),
            ("more data than allocated", response(1, 0, 0, &[], 0, &[0; 97])),
            ("sense over 252 bytes", response(1, 2, 0, &[0; 253], 0, &[])),
            ("unknown tag", response(42, 0, 0, &[], 0, &[])),
        ];
        for (what, frame) in bad_frames {
            let (mut t, mut p) = pair();
            t.submit(1, Command::read(INQUIRY, 96, T)).unwrap();
            t.submit(2, Command::none(TUR, T)).unwrap();
            p.send(&frame);
            let (c, end) = drain(&mut t);
            assert_eq!(c.len(), 2, "{what}");
            assert!(c.iter().all(|c| matches!(c.result, Err(TransportError::Protocol))), "{what}");
            assert!(matches!(end, TransportError::Protocol), "{what}");
            assert!(t.is_gone(), "{what}");
        }
    }

    #[test]
    fn duplicate_tag_and_invalid_commands_are_refused() {
        let (mut t, mut p) = pair();
        t.submit(1, Command::none(TUR, T)).unwrap();
        assert!(matches!(t.submit(1, Command::none(TUR, T)), Err(TransportError::DuplicateTag(1))));
        assert!(matches!(t.submit(2, Command::none([0; 5], T)), Err(TransportError::InvalidCommand)));
        assert!(matches!(t.submit(2, Command::none([0; 17], T)), Err(TransportError::InvalidCommand)));
        let too_big = u32::try_from(TRANSFER_LIMIT + 1).unwrap();
        assert!(matches!(t.submit(2, Command::read(INQUIRY, too_big, T)), Err(TransportError::InvalidCommand)));
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.queued_bytes(), 0, "refused commands leave nothing in the output buffer");
        // Only the one valid request went out; the tag is reusable after its response.
        assert_eq!(p.read_request().tag, 1);
        p.send(&response(1, 0, 0, &[], 0, &[]));
        assert_eq!(t.reap().unwrap().unwrap().tag, 1);
        t.submit(1, Command::none(TUR, T)).unwrap();
        assert_eq!(p.read_request().tag, 1);
    }

    #[test]
    fn output_is_buffered_while_the_peer_does_not_read() {
        let (mut t, p) = pair();
        p.0.set_nonblocking(true).unwrap();
        let payload = |tag: u32| -> Vec<u8> { (0..1 << 20).map(|i: u32| (i ^ tag).to_le_bytes()[0]).collect() };
        for tag in 0..8 {
            let cmd = Command {
                cdb: vec![0x0a, 0, 0, 0x10, 0, 0],
                direction: DataDirection::ToDevice(payload(tag)),
                timeout: T,
            };
            t.submit(tag, cmd).unwrap();
        }
        assert!(t.wants_write(), "8 MiB does not fit in a socket buffer");
        assert!(t.queued_bytes() > 0);
        // Play vlib reading slowly: alternate between the peer draining what is there and writable events.
        let mut received = Vec::new();
        let mut chunk = vec![0; 100_000];
        let mut rounds = 0;
        while received.len() < 8 * (4 + 16 + 6 + (1 << 20)) {
            rounds += 1;
            assert!(rounds < 10_000, "no progress");
            match (&p.0).read(&mut chunk) {
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            if t.wants_write() {
                t.on_writable().unwrap();
            }
        }
        assert!(!t.wants_write());
        let mut offset = 0;
        for tag in 0..8 {
            let len = usize::try_from(u32::from_le_bytes(received[offset..offset + 4].try_into().unwrap())).unwrap();
            let r = parse_request(&received[offset + 4..offset + 4 + len]);
            assert_eq!(r.tag, tag);
            assert_eq!(r.direction, 2);
            assert!(r.data == payload(tag), "payload of {tag} intact");
            offset += 4 + len;
        }
        assert_eq!(offset, received.len());
    }

    /// Interop with vlib's socket server: one started here, or a running `vlib --default --listen DIR` named by
    /// `RSMD_VLIB_DIR=DIR`.
    #[test]
    fn vlib_interop() {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        const INITIALIZE_ELEMENT_STATUS: [u8; 6] = [0x07, 0, 0, 0, 0, 0];

        let tmp = tempfile::tempdir().unwrap();
        let (_server, dir) = match std::env::var_os("RSMD_VLIB_DIR") {
            Some(d) => (None, std::path::PathBuf::from(d)),
            None => {
                let server = vlib::server::Server::spawn(vlib::Config::default_library(), tmp.path()).unwrap();
                (Some(server), tmp.path().to_owned())
            }
        };
        let dir = dir.as_path();
        let mut changer = EmuTransport::connect(&dir.join("changer.sock")).unwrap();
        let mut drive = EmuTransport::connect(&dir.join("drive0.sock")).unwrap();
        for t in [&mut changer, &mut drive] {
            t.submit(1, Command::read(INQUIRY, 96, T)).unwrap();
            t.submit(2, Command::none(TUR, T)).unwrap();
            t.submit(3, Command::none(INITIALIZE_ELEMENT_STATUS, Duration::from_millis(1))).unwrap();
        }
        for (name, t, ty) in [("changer", &mut changer, 8), ("drive0", &mut drive, 1)] {
            let mut got = HashMap::new();
            while got.len() < 3 {
                let mut fds = [PollFd::new(t.fd(), PollFlags::POLLIN)];
                assert_eq!(poll(&mut fds, PollTimeout::from(10_000u16)).unwrap(), 1, "{name} answers within 10 s");
                while let Some(c) = t.reap().unwrap() {
                    got.insert(c.tag, c.result);
                }
            }
            let inquiry = got[&1].as_ref().unwrap();
            println!("{name}: INQUIRY {:02x?}", &inquiry.data[..inquiry.data.len().min(36)]);
            println!("{name}: TUR {:?}", got[&2]);
            println!("{name}: INITIALIZE ELEMENT STATUS 1 ms {:?}", got[&3]);
            assert_eq!(inquiry.data[0] & 0x1f, ty);
        }
    }
}
