//! What the benchmarks share: the integration tests' harness (vlib in-process, the real rsmd child, raw Varlink
//! calls; `tests/util`), plus clocks, statistics and process figures.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

#[path = "../../tests/util/mod.rs"]
mod harness;
#[allow(unused_imports)] // each bench uses a different part
pub use harness::{sshd, vlib_config, Daemon, Raw, Stderr, Vlib};

/// Opens a session on `conn` for application `bench`; its handle.
pub fn open_session(conn: &mut rsmd::client::Connection) -> String {
    let reply = conn
        .call_method(&rsmd::proto::method::Method::OpenSession {
            server: None,
            application: Some("bench".into()),
            options: 0,
            version: Some(rsmd::proto::PROTOCOL_VERSION),
        })
        .unwrap();
    serde_json::from_value::<rsmd::proto::types::OpenSessionReply>(reply).unwrap().session
}

/// How long any single wait may take: a 50,000-slot first start builds its database.
pub const WAIT: Duration = Duration::from_secs(300);

/// Starts rsmd with `config` in `root`, its log appended to `root/rsmd.log`, waits bounded by [`WAIT`].
pub fn start_daemon(root: &Path, config: &str) -> Daemon {
    // RSMD_BENCH_VERBOSE: debug logging (slow turns of the loop among others).
    let args: &[&str] = if std::env::var_os("RSMD_BENCH_VERBOSE").is_some() { &["-v"] } else { &[] };
    let (mut d, _) = Daemon::start_full(root, config, &[], args, Stderr::Append(root.join("rsmd.log")));
    d.set_wait(WAIT);
    d
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
