//! Real-time socket server: serves a [`Target`] over Unix stream sockets using the framing in README.md.
//!
//! Threads: one acceptor per socket, one reader per connection (frames → `Target::submit`), and one
//! scheduler that sleeps until the next virtual completion (virtual ms = real ms since start) and writes
//! response frames. The target sits behind one mutex.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::fault::parse_device;
use crate::{Config, Device, Direction, Fault, InjectError, Request, Response, Snapshot, Target};

/// Largest accepted request frame (bytes after the length field).
pub const MAX_FRAME: u32 = 16 * 1024 * 1024;

/// The only clock read in vlib.
#[allow(clippy::disallowed_methods)]
fn clock() -> Instant {
    Instant::now()
}

struct Conn {
    device: Device,
    stream: Arc<UnixStream>,
}

struct State {
    target: Target,
    conns: HashMap<u64, Conn>,
    controls: HashMap<u64, Arc<UnixStream>>,
    /// Internal tag → (connection, caller's tag).
    inflight: HashMap<u32, (u64, u32)>,
    next_conn: u64,
    next_tag: u32,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    start: Instant,
    stop: AtomicBool,
    dir: PathBuf,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(clock().duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    fn spawn(self: &Arc<Self>, name: String, f: impl FnOnce(Arc<Shared>) + Send + 'static) {
        let me = Arc::clone(self);
        match std::thread::Builder::new().name(name).spawn(move || f(me)) {
            Ok(h) => self.threads.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(h),
            Err(e) => log::error!("vlib: cannot spawn thread: {e}"),
        }
    }

    /// Applies a fault; on Disappear closes the device's connections and removes its socket.
    fn inject(&self, fault: Fault) -> Result<(), InjectError> {
        let gone = match &fault {
            Fault::Disappear { device } => Some(*device),
            _ => None,
        };
        let mut st = self.lock();
        let now = self.now_ms();
        st.target.advance(now);
        st.target.try_inject(fault)?;
        if let Some(device) = gone {
            let ids: Vec<u64> = st.conns.iter().filter(|(_, c)| c.device == device).map(|(&id, _)| id).collect();
            for id in ids {
                if let Some(c) = st.conns.remove(&id) {
                    let _ = c.stream.shutdown(std::net::Shutdown::Both);
                }
            }
            drop(st);
            let path = socket_path(&self.dir, device);
            // Wake the acceptor so it notices the device is gone, then remove the socket file.
            let _ = UnixStream::connect(&path);
            let _ = std::fs::remove_file(&path);
        }
        self.wake.notify_all();
        Ok(())
    }
}

/// Path of a device's socket in `dir`: `changer.sock`, `drive0.sock`, ...
pub fn socket_path(dir: &Path, device: Device) -> PathBuf {
    dir.join(format!("{device}.sock"))
}

/// Path of the control socket in `dir`.
pub fn control_path(dir: &Path) -> PathBuf {
    dir.join("control.sock")
}

/// A running socket server. Dropping it (or [`Server::stop`]) stops the threads and removes the sockets.
pub struct Server {
    shared: Arc<Shared>,
    devices: Vec<Device>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("dir", &self.shared.dir).finish()
    }
}

impl Server {
    /// Builds the target from `config`, binds `dir/changer.sock`, `dir/driveN.sock` and
    /// `dir/control.sock` (replacing stale files) and starts serving in background threads.
    pub fn spawn(config: Config, dir: &Path) -> io::Result<Server> {
        let target = Target::new(config).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut devices = vec![Device::Changer];
        devices.extend((0..target.drive_count()).map(Device::Drive));
        let mut listeners = Vec::new();
        for &d in &devices {
            let p = socket_path(dir, d);
            let _ = std::fs::remove_file(&p);
            listeners.push((Some(d), UnixListener::bind(&p)?));
        }
        let cp = control_path(dir);
        let _ = std::fs::remove_file(&cp);
        listeners.push((None, UnixListener::bind(&cp)?));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                target,
                conns: HashMap::new(),
                controls: HashMap::new(),
                inflight: HashMap::new(),
                next_conn: 0,
                next_tag: 0,
            }),
            wake: Condvar::new(),
            start: clock(),
            stop: AtomicBool::new(false),
            dir: dir.to_path_buf(),
            threads: Mutex::new(Vec::new()),
        });
        for (device, l) in listeners {
            let name = device.map_or("vlib-control".to_string(), |d| format!("vlib-{d}"));
            shared.spawn(name, move |s| accept_loop(&s, device, &l));
        }
        shared.spawn("vlib-scheduler".into(), |s| scheduler(&s));
        Ok(Server { shared, devices })
    }

    /// The listen directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Socket path of `device`.
    pub fn socket(&self, device: Device) -> PathBuf {
        socket_path(&self.shared.dir, device)
    }

    /// Injects a fault at the current time (Disappear also closes connections and removes the socket).
    pub fn inject(&self, fault: Fault) -> Result<(), InjectError> {
        self.shared.inject(fault)
    }

    /// Snapshot of the library now.
    pub fn snapshot(&self) -> Snapshot {
        let mut st = self.shared.lock();
        let now = self.shared.now_ms();
        st.target.advance(now);
        st.target.snapshot()
    }

    /// Stops all threads, closes connections and removes the socket files.
    pub fn stop(self) {
        drop(self);
    }

    fn shutdown(&mut self) {
        {
            let mut st = self.shared.lock();
            // Set under the lock so the scheduler cannot miss the wake-up.
            if self.shared.stop.swap(true, Ordering::SeqCst) {
                return;
            }
            for (_, c) in st.conns.drain() {
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
            }
            for (_, c) in st.controls.drain() {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
        let mut paths: Vec<PathBuf> = self.devices.iter().map(|&d| self.socket(d)).collect();
        paths.push(control_path(&self.shared.dir));
        for p in &paths {
            let _ = UnixStream::connect(p); // wake the acceptor
        }
        self.shared.wake.notify_all();
        loop {
            let next = self.shared.threads.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
            match next {
                Some(h) => {
                    let _ = h.join();
                }
                None => break,
            }
        }
        for p in &paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(s: &Arc<Shared>, device: Option<Device>, l: &UnixListener) {
    for conn in l.incoming() {
        let Ok(stream) = conn else { continue };
        let Ok(writer) = stream.try_clone() else {
            continue;
        };
        // A client that stops reading must not stall the scheduler forever.
        let _ = writer.set_write_timeout(Some(Duration::from_secs(10)));
        let mut st = s.lock();
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        let id = st.next_conn;
        st.next_conn += 1;
        match device {
            None => {
                st.controls.insert(id, Arc::new(writer));
                drop(st);
                s.spawn(format!("vlib-control{id}"), move |s| control_conn(&s, id, stream));
            }
            Some(d) => {
                if !st.target.is_present(d) {
                    return;
                }
                st.conns.insert(id, Conn { device: d, stream: Arc::new(writer) });
                drop(st);
                s.spawn(format!("vlib-{d}-conn{id}"), move |s| device_conn(&s, d, id, stream));
            }
        }
    }
}

/// A parsed request frame.
fn read_frame(r: &mut impl Read) -> io::Result<Option<Request>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len);
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    if len > MAX_FRAME {
        return Err(bad("frame over 16 MiB"));
    }
    if len < 16 {
        return Err(bad("frame too short"));
    }
    let mut head = [0u8; 16];
    r.read_exact(&mut head)?;
    let u32at = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let tag = u32at(0);
    let timeout_ms = u32at(4);
    let dir = head[8];
    let cdb_len = head[9];
    let dxfer = u32at(12);
    if !(6..=16).contains(&cdb_len) {
        return Err(bad("cdb_len outside 6..=16"));
    }
    if dir > 2 {
        return Err(bad("direction outside 0..=2"));
    }
    let data_len = if dir == 2 { dxfer } else { 0 };
    if u64::from(len) != 16 + u64::from(cdb_len) + u64::from(data_len) {
        return Err(bad("frame length does not match cdb_len/dxfer_len"));
    }
    let mut cdb = vec![0u8; usize::from(cdb_len)];
    r.read_exact(&mut cdb)?;
    let direction = match dir {
        0 => Direction::None,
        1 => Direction::FromDevice(dxfer),
        _ => {
            let mut d = vec![0u8; data_len as usize];
            r.read_exact(&mut d)?;
            Direction::ToDevice(d)
        }
    };
    Ok(Some(Request { tag, cdb, direction, timeout_ms }))
}

/// Encodes a response frame.
pub fn encode_response(r: &Response) -> Vec<u8> {
    let sense = &r.sense[..r.sense.len().min(252)];
    let mut f = Vec::with_capacity(24 + sense.len() + r.data.len());
    let len = 20 + sense.len() + r.data.len();
    f.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    f.extend_from_slice(&r.tag.to_le_bytes());
    f.push(r.status);
    f.push(r.host_status);
    f.push(u8::try_from(sense.len()).unwrap_or(252));
    f.push(0);
    f.extend_from_slice(&r.resid.to_le_bytes());
    f.extend_from_slice(&r.duration_ms.to_le_bytes());
    f.extend_from_slice(&u32::try_from(r.data.len()).unwrap_or(u32::MAX).to_le_bytes());
    f.extend_from_slice(sense);
    f.extend_from_slice(&r.data);
    f
}

/// Encodes a request frame (for clients and tests).
pub fn encode_request(req: &Request) -> Vec<u8> {
    let (dir, dxfer, data): (u8, u32, &[u8]) = match &req.direction {
        Direction::None => (0, 0, &[]),
        Direction::FromDevice(n) => (1, *n, &[]),
        Direction::ToDevice(d) => (2, u32::try_from(d.len()).unwrap_or(u32::MAX), d),
    };
    let len = 16 + req.cdb.len() + data.len();
    let mut f = Vec::with_capacity(4 + len);
    f.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    f.extend_from_slice(&req.tag.to_le_bytes());
    f.extend_from_slice(&req.timeout_ms.to_le_bytes());
    f.push(dir);
    f.push(u8::try_from(req.cdb.len()).unwrap_or(u8::MAX));
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&dxfer.to_le_bytes());
    f.extend_from_slice(&req.cdb);
    f.extend_from_slice(data);
    f
}

/// Reads one response frame (for clients and tests); None at end of stream.
pub fn read_response(r: &mut impl Read) -> io::Result<Option<Response>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if !(20..=MAX_FRAME as usize).contains(&len) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad response length"));
    }
    let mut b = vec![0u8; len];
    r.read_exact(&mut b)?;
    let u32at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let sense_len = usize::from(b[6]);
    let data_len = u32at(16) as usize;
    if 20 + sense_len + data_len != len {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "inconsistent response"));
    }
    Ok(Some(Response {
        tag: u32at(0),
        status: b[4],
        host_status: b[5],
        resid: u32at(8),
        duration_ms: u32at(12),
        sense: b[20..20 + sense_len].to_vec(),
        data: b[20 + sense_len..].to_vec(),
    }))
}

fn device_conn(s: &Arc<Shared>, device: Device, id: u64, stream: UnixStream) {
    let mut r = BufReader::new(&stream);
    loop {
        match read_frame(&mut r) {
            Ok(Some(mut req)) => {
                let mut st = s.lock();
                if !st.conns.contains_key(&id) {
                    break;
                }
                let tag = st.next_tag;
                st.next_tag = st.next_tag.wrapping_add(1);
                st.inflight.insert(tag, (id, req.tag));
                req.tag = tag;
                let now = s.now_ms();
                st.target.submit(device, req, now);
                drop(st);
                s.wake.notify_all();
            }
            Ok(None) => break,
            Err(e) => {
                log::debug!("{device} connection {id}: {e}; closing");
                break;
            }
        }
    }
    let mut st = s.lock();
    st.conns.remove(&id);
    st.inflight.retain(|_, (c, _)| *c != id);
    drop(st);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn scheduler(s: &Arc<Shared>) {
    let mut st = s.lock();
    loop {
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        let now = s.now_ms();
        let mut out = Vec::new();
        while let Some((_, mut resp)) = st.target.poll_completion(now) {
            if let Some((conn, tag)) = st.inflight.remove(&resp.tag) {
                if let Some(c) = st.conns.get(&conn) {
                    resp.tag = tag;
                    out.push((Arc::clone(&c.stream), encode_response(&resp)));
                }
            }
        }
        if !out.is_empty() {
            drop(st);
            for (stream, frame) in out {
                if (&*stream).write_all(&frame).is_err() {
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                }
            }
            st = s.lock();
            continue;
        }
        st = match st.target.next_completion_at() {
            Some(at) => {
                let wait = Duration::from_millis(at.saturating_sub(now).max(1));
                s.wake.wait_timeout(st, wait).unwrap_or_else(std::sync::PoisonError::into_inner).0
            }
            None => s.wake.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner),
        };
    }
}

/// A parsed control-socket line.
#[derive(Debug, PartialEq, Eq)]
enum Control {
    /// An empty line: no answer.
    Nothing,
    /// `snapshot`.
    Snapshot,
    /// A fault to inject.
    Fault(Fault),
}

/// Parses a TapeAlert flag number: decimal (`20`) or hexadecimal (`0x14`), 1..=64.
fn parse_flag(v: &str) -> Result<u8, String> {
    let n = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u8::from_str_radix(h, 16),
        None => v.parse(),
    };
    n.ok().filter(|n| (1..=64).contains(n)).ok_or_else(|| format!("not a TapeAlert flag (1..=64): {v}"))
}

/// Parses one control-socket line.
fn parse_control(line: &str) -> Result<Control, String> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let dev = |i: usize| -> Result<Device, String> {
        let name = w.get(i).ok_or("missing device")?;
        parse_device(name).ok_or_else(|| format!("unknown device {name}"))
    };
    let num = |i: usize| -> Result<u64, String> {
        let v = w.get(i).ok_or("missing number")?;
        v.parse().map_err(|_| format!("not a number: {v}"))
    };
    let drive = |i: usize, what: &str| -> Result<usize, String> {
        match dev(i)? {
            Device::Drive(d) => Ok(d),
            Device::Changer => Err(format!("{what} needs a drive")),
        }
    };
    Ok(Control::Fault(match w.as_slice() {
        [] => return Ok(Control::Nothing),
        ["snapshot"] => return Ok(Control::Snapshot),
        ["door"] | ["door", "close" | "closed"] => Fault::DoorClosed,
        ["door", "open"] => Fault::DoorOpen,
        ["import", b] => Fault::ImportCartridge { barcode: (*b).to_string() },
        ["take"] => Fault::TakeFromPorts,
        ["fault", "unit_attention", ..] => Fault::UnitAttentionAfter {
            device: dev(2)?,
            commands: if w.len() > 3 { u32::try_from(num(3)?).map_err(|e| e.to_string())? } else { 0 },
        },
        ["fault", "not_ready", _, _] => Fault::NotReadyFor { device: dev(2)?, ms: num(3)? },
        ["fault", "jam", ..] => Fault::RobotJam {
            next_moves: if w.len() > 2 { u32::try_from(num(2)?).map_err(|e| e.to_string())? } else { 1 },
        },
        ["fault", "wont_unload", _] => Fault::DriveWontUnload { drive: drive(2, "wont_unload")? },
        ["fault", "disappear", _] => Fault::Disappear { device: dev(2)? },
        ["fault", "hang", _] => Fault::Hang { device: dev(2)? },
        ["fault", "reset", _] => Fault::Reset { device: dev(2)? },
        ["fault", "cleaner_stuck", _] => Fault::CleanerStuck { drive: drive(2, "cleaner_stuck")? },
        ["fault", "tapealert", _, f] => Fault::TapeAlert { drive: drive(2, "tapealert")?, flag: parse_flag(f)? },
        _ => return Err(format!("unknown command: {line}")),
    }))
}

/// Executes one control-socket line; returns the reply lines (the last is `ok` or `error: ...`).
fn control_line(s: &Shared, line: &str) -> Vec<String> {
    match parse_control(line) {
        Ok(Control::Nothing) => Vec::new(),
        Ok(Control::Fault(f)) => match s.inject(f) {
            Ok(()) => vec!["ok".into()],
            Err(e) => vec![format!("error: {e}")],
        },
        Ok(Control::Snapshot) => {
            let mut st = s.lock();
            st.target.advance(s.now_ms());
            let mut v = snapshot_lines(&st.target.snapshot());
            v.push("ok".into());
            v
        }
        Err(e) => vec![format!("error: {e}")],
    }
}

/// Plain-text snapshot: the time, the changer (door, PREVENT), one line per element and drive, the counters.
pub fn snapshot_lines(snap: &Snapshot) -> Vec<String> {
    let mut v = vec![format!("time {}", snap.now_ms)];
    v.push(format!(
        "changer door {} prevent {} present {}",
        if snap.door_open { "open" } else { "closed" },
        snap.changer_prevent,
        snap.changer_present
    ));
    for e in &snap.elements {
        let kind = match e.kind {
            crate::ElementType::Transport => "transport",
            crate::ElementType::Storage => "storage",
            crate::ElementType::ImportExport => "ie",
            crate::ElementType::Drive => "drive",
        };
        v.push(format!(
            "element {kind} {} {} {} source {}{}{}",
            e.address,
            if e.full { "full" } else { "empty" },
            e.barcode.as_deref().unwrap_or("-"),
            e.source.map_or("-".to_string(), |s| s.to_string()),
            if e.impexp { " impexp" } else { "" },
            if e.full { format!(" uses {}", e.uses) } else { String::new() },
        ));
    }
    for (i, d) in snap.drives.iter().enumerate() {
        let flags: Vec<String> =
            (1..=64u32).filter(|f| d.tapealert >> (f - 1) & 1 != 0).map(|f| f.to_string()).collect();
        v.push(format!(
            "drive {i} serial {} status {:?} barcode {} loads {} clean_now {} present {} cleaning {} tapealert {}",
            d.serial,
            d.status,
            d.barcode.as_deref().unwrap_or("-"),
            d.loads_since_clean,
            d.clean_now,
            d.present,
            d.cleaning,
            if flags.is_empty() { "-".to_string() } else { flags.join(",") }
        ));
    }
    let c = &snap.counters;
    v.push(format!(
        "counters commands {} check_conditions {} moves {} loads {} unloads {} timeouts {}",
        c.commands, c.check_conditions, c.moves, c.loads, c.unloads, c.timeouts
    ));
    v
}

fn control_conn(s: &Arc<Shared>, id: u64, stream: UnixStream) {
    let Ok(mut w) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(&stream).lines() {
        let Ok(line) = line else { break };
        if s.stop.load(Ordering::SeqCst) {
            break;
        }
        let mut reply = control_line(s, &line).join("\n");
        if reply.is_empty() {
            continue;
        }
        reply.push('\n');
        if w.write_all(reply.as_bytes()).is_err() {
            break;
        }
    }
    s.lock().controls.remove(&id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdb;

    fn cfg(scale: f64) -> Config {
        let mut c = Config::default_library();
        c.time_scale = scale;
        c
    }

    /// End of stream, or a reset when vlib closed with our bytes unread.
    fn assert_closed(s: &mut UnixStream) {
        match read_response(s) {
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("expected a closed connection, got {other:?}"),
        }
    }

    fn connect(p: &Path) -> UnixStream {
        let s = UnixStream::connect(p).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    fn send(s: &mut UnixStream, tag: u32, cdb: Vec<u8>, direction: Direction) {
        let f = encode_request(&Request { tag, cdb, direction, timeout_ms: 0 });
        s.write_all(&f).unwrap();
    }

    fn control(s: &mut UnixStream, r: &mut BufReader<UnixStream>, line: &str) -> Vec<String> {
        writeln!(s, "{line}").unwrap();
        let mut out = Vec::new();
        loop {
            let mut l = String::new();
            assert!(r.read_line(&mut l).unwrap() > 0, "control closed");
            let l = l.trim_end().to_string();
            let end = l == "ok" || l.starts_with("error:");
            out.push(l);
            if end {
                return out;
            }
        }
    }

    #[test]
    fn inquiry_over_socket() {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::spawn(cfg(0.0), dir.path()).unwrap();
        for name in ["changer", "drive0", "drive3", "control"] {
            assert!(dir.path().join(format!("{name}.sock")).exists(), "{name}");
        }
        let mut c = connect(&srv.socket(Device::Changer));
        send(&mut c, 77, cdb::inquiry(None, 96), Direction::FromDevice(96));
        let r = read_response(&mut c).unwrap().unwrap();
        assert_eq!((r.tag, r.status, r.host_status, r.resid), (77, 0, 0, 60));
        assert_eq!(&r.data[8..32], b"VLIB    VIRTUAL LIBRARY ");
        // A CHECK CONDITION carries its sense.
        send(&mut c, 78, cdb::move_medium(0, 1019, 1000), Direction::None);
        let r = read_response(&mut c).unwrap().unwrap();
        assert_eq!((r.tag, r.status), (78, 2));
        assert_eq!(r.sense_code(), (5, 0x3b, 0x0d));
        assert_eq!(r.sense.len(), 18);
        // Data-out direction is accepted.
        send(&mut c, 79, cdb::test_unit_ready(), Direction::ToDevice(vec![1, 2, 3]));
        assert!(read_response(&mut c).unwrap().unwrap().is_good());
        srv.stop();
        assert!(!dir.path().join("changer.sock").exists());
        assert!(!dir.path().join("control.sock").exists());
    }

    #[test]
    fn completions_out_of_order_between_devices() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(1.0);
        c.timing.move_ms = 600_000; // never finishes during the test
        let srv = Server::spawn(c, dir.path()).unwrap();
        let mut ch = connect(&srv.socket(Device::Changer));
        let mut d0 = connect(&srv.socket(Device::Drive(0)));
        send(&mut ch, 1, cdb::move_medium(0, 1000, 501), Direction::None);
        // Wait until the MOVE has been accepted (its effect shows in the snapshot at once).
        while srv.snapshot().counters.commands == 0 {
            std::thread::yield_now();
        }
        assert!(srv.snapshot().elements.iter().any(|e| e.address == 501 && e.full));
        send(&mut d0, 2, cdb::test_unit_ready(), Direction::None);
        let r = read_response(&mut d0).unwrap().unwrap();
        assert_eq!(r.tag, 2);
        assert_eq!(r.sense_code(), (2, 0x3a, 0));
        // The earlier MOVE is still running: nothing to read on the changer.
        ch.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let e = ch.read(&mut b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn timeout_over_socket() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(1.0);
        c.timing.move_ms = 600_000;
        let srv = Server::spawn(c, dir.path()).unwrap();
        let mut ch = connect(&srv.socket(Device::Changer));
        let f = encode_request(&Request {
            tag: 4,
            cdb: cdb::move_medium(0, 1000, 1017),
            direction: Direction::None,
            timeout_ms: 30,
        });
        ch.write_all(&f).unwrap();
        let r = read_response(&mut ch).unwrap().unwrap();
        assert_eq!((r.tag, r.status, r.host_status, r.duration_ms), (4, 0, 3, 30));
        assert!(r.sense.is_empty() && r.data.is_empty());
    }

    #[test]
    fn frame_codec_roundtrip() {
        let req = Request {
            tag: 0xdead_beef,
            cdb: cdb::read_element_status(0, 0, 10, true, false, false, 1000),
            direction: Direction::ToDevice(vec![9, 8, 7]),
            timeout_ms: 5,
        };
        let f = encode_request(&req);
        assert_eq!(&f[0..4], &(16u32 + 12 + 3).to_le_bytes());
        assert_eq!(&f[12..16], &[2, 12, 0, 0]);
        assert_eq!(read_frame(&mut &f[..]).unwrap(), Some(req));
        let resp = Response {
            tag: 3,
            status: 2,
            host_status: 0,
            sense: crate::sense::SOURCE_EMPTY.to_fixed(),
            data: vec![1, 2],
            resid: 7,
            duration_ms: 8000,
        };
        let f = encode_response(&resp);
        assert_eq!(&f[0..4], &(20u32 + 18 + 2).to_le_bytes());
        assert_eq!(&f[8..12], &[2, 0, 18, 0]);
        assert_eq!(read_response(&mut &f[..]).unwrap(), Some(resp));
        // A frame length that disagrees with cdb_len/dxfer_len is a protocol error.
        let mut wrong = encode_request(&Request { tag: 0, cdb: vec![0; 6], direction: Direction::None, timeout_ms: 0 });
        wrong[0] += 1;
        wrong.push(0);
        assert!(read_frame(&mut &wrong[..]).is_err());
        // Clean end of stream between frames.
        assert!(read_frame(&mut &[][..]).unwrap().is_none());
    }

    #[test]
    fn several_connections_keep_their_tags() {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::spawn(cfg(0.0), dir.path()).unwrap();
        let mut a = connect(&srv.socket(Device::Drive(1)));
        let mut b = connect(&srv.socket(Device::Drive(1)));
        for i in 0..5 {
            send(&mut a, 5, cdb::test_unit_ready(), Direction::None);
            send(&mut b, 5 + i, cdb::inquiry(Some(0x80), 64), Direction::FromDevice(64));
        }
        for i in 0..5 {
            assert_eq!(read_response(&mut a).unwrap().unwrap().tag, 5);
            let r = read_response(&mut b).unwrap().unwrap();
            assert_eq!(r.tag, 5 + i);
            assert_eq!(&r.data[4..], b"VDRV0001");
        }
    }

    #[test]
    fn bad_frames_close_only_that_connection() {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::spawn(cfg(0.0), dir.path()).unwrap();
        let p = srv.socket(Device::Changer);
        let mut good = connect(&p);
        let mut frames = Vec::new();
        let mut f = encode_request(&Request { tag: 1, cdb: vec![0; 6], direction: Direction::None, timeout_ms: 0 });
        f[13] = 3; // cdb_len 3
        frames.push(f);
        let mut f = encode_request(&Request { tag: 1, cdb: vec![0; 6], direction: Direction::None, timeout_ms: 0 });
        f[12] = 3; // direction 3
        frames.push(f);
        frames.push((MAX_FRAME + 1).to_le_bytes().to_vec());
        for f in frames {
            let mut bad = connect(&p);
            bad.write_all(&f).unwrap();
            assert_closed(&mut bad);
        }
        send(&mut good, 9, cdb::test_unit_ready(), Direction::None);
        assert_eq!(read_response(&mut good).unwrap().unwrap().tag, 9);
    }

    #[test]
    fn control_lines_parse() {
        let f = |l: &str| {
            parse_control(l).map(|c| match c {
                Control::Fault(f) => f,
                other => panic!("{l}: {other:?}"),
            })
        };
        assert_eq!(parse_control(""), Ok(Control::Nothing));
        assert_eq!(parse_control("  snapshot "), Ok(Control::Snapshot));
        assert_eq!(f("door"), Ok(Fault::DoorClosed));
        assert_eq!(f("door close"), Ok(Fault::DoorClosed));
        assert_eq!(f("door closed"), Ok(Fault::DoorClosed));
        assert_eq!(f("door open"), Ok(Fault::DoorOpen));
        assert!(f("door ajar").unwrap_err().starts_with("unknown command"));
        assert_eq!(f("fault cleaner_stuck drive1"), Ok(Fault::CleanerStuck { drive: 1 }));
        assert_eq!(f("fault cleaner_stuck changer").unwrap_err(), "cleaner_stuck needs a drive");
        assert!(f("fault cleaner_stuck").is_err());
        assert_eq!(f("fault tapealert drive3 20"), Ok(Fault::TapeAlert { drive: 3, flag: 20 }));
        assert_eq!(f("fault tapealert drive0 0x16"), Ok(Fault::TapeAlert { drive: 0, flag: 22 }));
        assert_eq!(f("fault tapealert drive0 64"), Ok(Fault::TapeAlert { drive: 0, flag: 64 }));
        for bad in ["fault tapealert drive0 0", "fault tapealert drive0 65", "fault tapealert drive0 x"] {
            assert!(f(bad).unwrap_err().starts_with("not a TapeAlert flag"), "{bad}");
        }
        assert_eq!(f("fault tapealert changer 3").unwrap_err(), "tapealert needs a drive");
        assert!(f("fault tapealert drive0").unwrap_err().starts_with("unknown command"));
        assert_eq!(f("fault wont_unload drive2"), Ok(Fault::DriveWontUnload { drive: 2 }));
        assert_eq!(f("fault jam"), Ok(Fault::RobotJam { next_moves: 1 }));
    }

    #[test]
    fn control_socket_and_disappear() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(1.0);
        c.timing.command_ms = 600_000; // in-flight commands stay in flight
        let srv = Server::spawn(c, dir.path()).unwrap();
        let mut ctl = connect(&control_path(dir.path()));
        let mut ctl_r = BufReader::new(ctl.try_clone().unwrap());
        let mut d1 = connect(&srv.socket(Device::Drive(1)));
        send(&mut d1, 1, cdb::test_unit_ready(), Direction::None);
        assert_eq!(control(&mut ctl, &mut ctl_r, "fault disappear drive1"), vec!["ok"]);
        assert!(!dir.path().join("drive1.sock").exists());
        assert!(dir.path().join("drive0.sock").exists());
        // The open connection is closed; the in-flight command is never answered.
        assert_closed(&mut d1);
        assert!(UnixStream::connect(dir.path().join("drive1.sock")).is_err());
        assert!(!srv.snapshot().drives[1].present);
        assert_eq!(control(&mut ctl, &mut ctl_r, "import ABC999L6"), vec!["ok"]);
        let snap = control(&mut ctl, &mut ctl_r, "snapshot");
        assert!(snap.iter().any(|l| l == "element ie 10 full ABC999L6 source - impexp uses 0"), "{snap:?}");
        assert!(snap.iter().any(|l| l == "element storage 1019 full CLN001L1 source - uses 0"), "{snap:?}");
        assert!(snap.iter().any(|l| l == "element storage 1016 empty - source -"), "{snap:?}");
        assert!(snap.iter().any(|l| l == "changer door closed prevent false present true"), "{snap:?}");
        assert!(snap.iter().any(|l| l.starts_with("drive 1 serial VDRV0001") && l.contains(" present false")));
        assert!(snap
            .iter()
            .any(|l| l.starts_with("drive 0 serial VDRV0000") && l.ends_with(" cleaning false tapealert -")));
        assert_eq!(snap.last().unwrap(), "ok");
        assert_eq!(control(&mut ctl, &mut ctl_r, "door open"), vec!["ok"]);
        assert_eq!(control(&mut ctl, &mut ctl_r, "fault tapealert drive0 0x14"), vec!["ok"]);
        assert_eq!(control(&mut ctl, &mut ctl_r, "fault tapealert drive0 3"), vec!["ok"]);
        let snap = control(&mut ctl, &mut ctl_r, "snapshot");
        assert!(snap.iter().any(|l| l == "changer door open prevent false present true"), "{snap:?}");
        assert!(snap.iter().any(|l| l.starts_with("drive 0 ") && l.ends_with(" tapealert 3,20")), "{snap:?}");
        assert!(srv.snapshot().door_open);
        assert_eq!(control(&mut ctl, &mut ctl_r, "door close"), vec!["ok"]);
        assert!(!srv.snapshot().door_open);
        let e = control(&mut ctl, &mut ctl_r, "fault tapealert drive0 65");
        assert_eq!(e, vec!["error: not a TapeAlert flag (1..=64): 65"]);
        let e = control(&mut ctl, &mut ctl_r, "fault tapealert drive9 2");
        assert_eq!(e, vec!["error: no device drive9"]);
        for line in [
            "door",
            "door closed",
            "fault cleaner_stuck drive2",
            "fault unit_attention changer",
            "fault not_ready changer 5000",
            "fault jam 1",
            "fault reset drive0",
            "fault wont_unload drive2",
        ] {
            assert_eq!(control(&mut ctl, &mut ctl_r, line), vec!["ok"], "{line}");
        }
        let e = control(&mut ctl, &mut ctl_r, "fault explode changer");
        assert!(e[0].starts_with("error: unknown command"), "{e:?}");
        let e = control(&mut ctl, &mut ctl_r, "fault reset robot");
        assert_eq!(e, vec!["error: unknown device robot"]);
        let e = control(&mut ctl, &mut ctl_r, "import ABC001L6");
        assert!(e[0].starts_with("error: "), "{e:?}");
        drop(srv);
        assert!(!dir.path().join("control.sock").exists());
        assert!(!dir.path().join("drive0.sock").exists());
    }
}
