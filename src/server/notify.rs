//! systemd integration without libsystemd: `sd_notify` datagrams, socket activation, and journal-aware logging.

use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};

/// Sends `sd_notify` state lines (`READY=1`, `STATUS=…`, `STOPPING=1`, `WATCHDOG=1`) when run under systemd.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
    /// Watchdog interval in microseconds (`WATCHDOG_USEC`), when the unit sets WatchdogSec.
    pub watchdog_usec: Option<u64>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` (path or `@abstract`), and `WATCHDOG_USEC` when `WATCHDOG_PID` is ours or unset.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.to_string_lossy().into_owned();
            let addr = if let Some(name) = path.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            } else {
                SocketAddr::from_pathname(&path).ok()?
            };
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        let ours = std::env::var("WATCHDOG_PID").map_or(true, |p| p == std::process::id().to_string());
        let watchdog_usec = std::env::var("WATCHDOG_USEC").ok().and_then(|v| v.parse().ok()).filter(|_| ours);
        Notifier { socket, watchdog_usec }
    }

    /// Sends one notification (a no-op outside systemd). Non-blocking: a full socket drops the message.
    pub fn notify(&self, state: &str) {
        if let Some((sock, addr)) = &self.socket {
            let _ = sock.set_nonblocking(true);
            if let Err(e) = sock.send_to_addr(state.as_bytes(), addr) {
                log::debug!("sd_notify failed: {e}");
            }
        }
    }

    /// `STATUS=` line.
    pub fn status(&self, text: &str) {
        self.notify(&format!("STATUS={text}"));
    }
}

/// The listening socket passed by systemd (`LISTEN_PID`, `LISTEN_FDS`, first fd), when there is one.
pub fn activation_listener() -> Option<UnixListener> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    if pid != std::process::id() {
        return None;
    }
    let n: i32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if n < 1 {
        return None;
    }
    let fd = crate::sg::inherit::take_inherited(crate::sg::inherit::LISTEN_FDS_START)?;
    // Passed fds must not leak to children.
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    Some(UnixListener::from(fd))
}

pub use crate::broker::operator::NOTICE_TARGET;

/// A logger for `log`: stderr, with sd-daemon `<N>` priority prefixes when stderr is the journal.
#[derive(Debug)]
pub struct Logger {
    journal: bool,
    level: log::LevelFilter,
}

impl Logger {
    /// Installs the logger.
    pub fn install(level: log::LevelFilter) {
        let journal = std::env::var_os("JOURNAL_STREAM").is_some();
        if log::set_boxed_logger(Box::new(Logger { journal, level })).is_ok() {
            log::set_max_level(level);
        }
    }
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        // Other crates (sled) speak at warn and above unless the most verbose level is asked for (`-vv`).
        let ours = m.target().starts_with("rsmd");
        m.level() <= self.level && (ours || m.level() <= log::Level::Warn || self.level == log::LevelFilter::Trace)
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        use std::io::Write;
        let _ = std::io::stderr().write_all(self.line(r).as_bytes());
    }

    fn flush(&self) {}
}

impl Logger {
    /// The line written for `r`: with the journal's `<N>` priority prefix (operator requests at 5, NOTICE), or
    /// `rsmd: LEVEL: ` on a terminal.
    fn line(&self, r: &log::Record<'_>) -> String {
        let notice = r.target() == NOTICE_TARGET && r.level() == log::Level::Info;
        let line = if self.journal {
            let prio = match r.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info if notice => 5,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            format!("<{prio}>{}\n", r.args())
        } else {
            let level = if notice { "notice".to_owned() } else { r.level().as_str().to_lowercase() };
            format!("rsmd: {level}: {}\n", r.args())
        };
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13: operator requests reach the journal at NOTICE (5), everything else at its level.
    #[test]
    fn operator_requests_are_notices() {
        let line = |journal: bool, target: &str, level: log::Level| {
            let args = format_args!("x");
            let r = log::Record::builder().args(args).target(target).level(level).build();
            Logger { journal, level: log::LevelFilter::Info }.line(&r)
        };
        assert_eq!(line(true, NOTICE_TARGET, log::Level::Info), "<5>x\n");
        assert_eq!(line(true, "rsmd::broker", log::Level::Info), "<6>x\n");
        assert_eq!(line(true, "rsmd::broker", log::Level::Warn), "<4>x\n");
        assert_eq!(line(false, NOTICE_TARGET, log::Level::Info), "rsmd: notice: x\n");
        assert_eq!(line(false, "rsmd", log::Level::Error), "rsmd: error: x\n");
    }

    /// Issue 15: `-v` flooded the journal with sled's internals.
    #[test]
    fn other_crates_speak_at_warn_unless_the_most_verbose_level_is_asked_for() {
        use log::Log;
        let at = |level| Logger { journal: false, level };
        let meta = |target: &'static str, level| log::Metadata::builder().target(target).level(level).build();
        let debug = at(log::LevelFilter::Debug);
        assert!(debug.enabled(&meta("rsmd::broker", log::Level::Debug)));
        assert!(!debug.enabled(&meta("sled::pagecache", log::Level::Debug)));
        assert!(debug.enabled(&meta("sled::pagecache", log::Level::Warn)));
        assert!(at(log::LevelFilter::Trace).enabled(&meta("sled::pagecache", log::Level::Debug)));
        assert!(!at(log::LevelFilter::Info).enabled(&meta("rsmd::broker", log::Level::Debug)));
    }

    #[test]
    fn notifications_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: Some((UnixDatagram::unbound().unwrap(), SocketAddr::from_pathname(&path).unwrap())),
            watchdog_usec: None,
        };
        n.notify("READY=1");
        n.status("scanning");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STATUS=scanning");
    }
}
