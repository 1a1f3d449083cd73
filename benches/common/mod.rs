//! The harness: a vlib library served in this test process, the real `rsmd` binary in a child process, and raw
//! Varlink calls. Synchronisation is on events only: rsmd's `sd_notify` messages (READY=1, STATUS=) arrive on a
//! datagram socket the test owns; waits on it are bounded so a broken daemon fails the test instead of hanging it.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(300);

/// A vlib library served from a directory.
pub struct Vlib {
    pub server: vlib::server::Server,
    pub dir: PathBuf,
}

impl Vlib {
    pub fn start(dir: &Path, config: vlib::Config) -> Vlib {
        std::fs::create_dir_all(dir).unwrap();
        let server = vlib::server::Server::spawn(config, dir).unwrap();
        Vlib { server, dir: dir.to_owned() }
    }

    /// The default library with DVCID and no delays (time scale 0).
    pub fn default_fast(dir: &Path) -> Vlib {
        let mut c = vlib::Config::default_library();
        c.dvcid = true;
        c.time_scale = 0.0;
        Vlib::start(dir, c)
    }
}

/// The rsmd daemon under test.
pub struct Daemon {
    pub child: Child,
    /// rsmd's stderr (its log) goes to `root/rsmd.log`, appended to by each start.
    pub socket: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    notify: UnixDatagram,
    notify_path: PathBuf,
    pub statuses: Vec<String>,
    pub ready: bool,
}

pub fn rsmd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rsmd")
}

pub fn rsm_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rsm")
}

/// A config file serving `vlib_dir`.
pub fn vlib_config(vlib_dir: &Path, extra: &str) -> String {
    format!("[[library]]\nname = \"test\"\nvlib = \"{}\"\n{extra}\n", vlib_dir.display())
}

impl Daemon {
    /// Starts rsmd with `config` in `root` (socket, state and config file live there).
    pub fn start(root: &Path, config: &str) -> Daemon {
        Daemon::start_with(root, config, &[])
    }

    pub fn start_with(root: &Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        std::fs::create_dir_all(root).unwrap();
        let config_path = root.join("rsmd.toml");
        std::fs::write(&config_path, config).unwrap();
        let notify_path = root.join(format!("notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify.set_read_timeout(Some(WAIT)).unwrap();
        let socket = root.join("rsmd.sock");
        let state = root.join("state");
        let mut cmd = Command::new(rsmd_bin());
        cmd.arg("--config")
            .arg(&config_path)
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(&state)
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(root.join("rsmd.log"))
                    .map_or_else(|_| Stdio::inherit(), Stdio::from),
            );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        Daemon { child, socket, state, config: config_path, notify, notify_path, statuses: Vec::new(), ready: false }
    }

    /// Waits (bounded) for a notification satisfying `pred`; returns it.
    pub fn wait_notify(&mut self, pred: impl Fn(&str) -> bool) -> String {
        loop {
            let mut buf = [0u8; 4096];
            let n = self.notify.recv(&mut buf).unwrap_or_else(|e| {
                panic!("no sd_notify message within {WAIT:?} (last: {:?}): {e}", self.statuses.last())
            });
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg == "READY=1" {
                self.ready = true;
            }
            self.statuses.push(msg.clone());
            if pred(&msg) {
                return msg;
            }
        }
    }

    /// Waits for READY=1 (inventory loaded) and then for `libraries` libraries to be ready.
    pub fn wait_ready(&mut self, libraries: usize) {
        if !self.ready {
            self.wait_notify(|m| m == "READY=1");
        }
        let want = format!("STATUS={libraries} libraries: {libraries} ready");
        if !self.statuses.iter().any(|m| m.starts_with(&want)) {
            self.wait_notify(|m| m.starts_with(&want));
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for the process to exit (bounded by the notify socket's idea of time: the child exits or we kill it).
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }

    pub fn kill9(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.notify_path);
    }
}

/// A raw Varlink connection (no client library), for protocol-level tests.
pub struct Raw {
    pub stream: UnixStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(socket: &Path) -> Raw {
        let stream = UnixStream::connect(socket).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Raw { stream, buf: Vec::new() }
    }

    pub fn send_bytes(&mut self, b: &[u8]) {
        self.stream.write_all(b).unwrap();
    }

    pub fn send(&mut self, v: &Value) {
        let mut b = serde_json::to_vec(v).unwrap();
        b.push(0);
        self.send_bytes(&b);
    }

    /// Reads one reply; None on EOF.
    pub fn recv(&mut self) -> Option<Value> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == 0) {
                let msg: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(serde_json::from_slice(&msg[..i]).unwrap());
            }
            let mut tmp = [0u8; 65536];
            let n = self.stream.read(&mut tmp).unwrap();
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.send(&json!({"method": method, "parameters": params}));
        self.recv().expect("connection closed before the reply")
    }

    /// Opens a session on this connection.
    pub fn open_session(&mut self) -> String {
        let r = self.call("io.rsmd.Ntms.OpenSession", json!({"options": 0}));
        r["parameters"]["session"].as_str().unwrap_or_else(|| panic!("OpenSession failed: {r}")).to_owned()
    }
}

/// The error name of a reply, if it is an error.
pub fn error_of(v: &Value) -> Option<&str> {
    v.get("error").and_then(Value::as_str)
}

/// The one clock read allowed in benches.
#[allow(clippy::disallowed_methods)]
pub fn now() -> std::time::Instant {
    std::time::Instant::now()
}

/// VmRSS and VmHWM of `pid` in KiB, from /proc/PID/status.
pub fn rss_kib(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Milliseconds of `d`, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sorted samples with percentiles.
pub struct Samples {
    pub sorted: Vec<Duration>,
}

impl Samples {
    pub fn new(mut v: Vec<Duration>) -> Samples {
        v.sort_unstable();
        Samples { sorted: v }
    }

    /// The `p`-th percentile (nearest rank, p in 0..=100).
    pub fn pct(&self, p: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let rank = ((p / 100.0) * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    pub fn min(&self) -> Duration {
        self.sorted.first().copied().unwrap_or_default()
    }

    pub fn median(&self) -> Duration {
        self.pct(50.0)
    }

    pub fn max(&self) -> Duration {
        self.sorted.last().copied().unwrap_or_default()
    }

    /// "min / median / max ms (n=N)".
    pub fn summary_ms(&self) -> String {
        format!("{:.1} / {:.1} / {:.1} ms (n={})", ms(self.min()), ms(self.median()), ms(self.max()), self.sorted.len())
    }
}

/// A blocking client of one vlib device socket: one command at a time, driven by poll(2).
pub struct Direct {
    pub transport: rsmd::emu::EmuTransport,
    tag: u32,
}

impl Direct {
    pub fn connect(socket: &Path) -> Direct {
        Direct { transport: rsmd::emu::EmuTransport::connect(socket).unwrap(), tag: 0 }
    }

    /// Sends `cdb` and waits for its response; panics on a transport error or a non-GOOD status.
    pub fn run(&mut self, cdb: rsmd::scsi::cdb::Cdb) -> rsmd::transport::Response {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use rsmd::transport::Transport;
        self.tag = self.tag.wrapping_add(1);
        let tag = self.tag;
        self.transport.submit(tag, cdb.into_command(Duration::from_secs(600))).unwrap();
        loop {
            if let Some(c) = self.transport.reap().unwrap() {
                assert_eq!(c.tag, tag);
                let r = c.result.unwrap();
                assert!(
                    r.is_good(),
                    "command {:02x} failed: status {:02x} sense {:02x?}",
                    cdb.opcode(),
                    r.status,
                    r.sense
                );
                return r;
            }
            let mut flags = PollFlags::POLLIN;
            if self.transport.wants_write() {
                flags |= PollFlags::POLLOUT;
            }
            let mut fds = [PollFd::new(self.transport.fd(), flags)];
            poll(&mut fds, PollTimeout::from(60_000u16)).unwrap();
            let writable = fds[0].revents().is_some_and(|r| r.contains(PollFlags::POLLOUT));
            if writable {
                self.transport.on_writable().unwrap();
            }
        }
    }

    /// MODE SENSE(6) page 1Dh: the element address assignment.
    pub fn addresses(&mut self) -> rsmd::scsi::mode::ElementAddressAssignment {
        let r = self.run(rsmd::scsi::cdb::mode_sense_6(0x1D, true, 255));
        rsmd::scsi::mode::ElementAddressAssignment::parse_mode6(&r.data).unwrap()
    }
}

/// Lines of `root/rsmd.log` (rsmd's stderr) at warning level or worse.
pub fn log_problems(root: &Path) -> Vec<String> {
    std::fs::read_to_string(root.join("rsmd.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("warn") || l.contains("error") || l.contains("panic"))
        .map(str::to_owned)
        .collect()
}

/// CPU time `pid` has used so far, all threads, in ns (the first field of /proc/PID/task/*/schedstat).
pub fn cpu_ns(pid: i32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .sum()
}

/// A temporary directory that is kept (and its path printed) when the bench panics, for rsmd's log.
pub struct Scratch(Option<tempfile::TempDir>);

impl Scratch {
    pub fn new() -> Scratch {
        Scratch(Some(tempfile::tempdir().unwrap()))
    }

    pub fn path(&self) -> &Path {
        self.0.as_ref().unwrap().path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(d) = self.0.take() {
                eprintln!("bench failed: keeping {} (rsmd logs: */rsmd.log)", d.keep().display());
            }
        }
    }
}

/// /proc/loadavg's first three fields: other work on the machine skews every figure.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
