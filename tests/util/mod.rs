//! The harness: a vlib library served in this test process, the real `rsmd` binary in a child process, and raw
//! Varlink calls. Synchronisation is on events only: rsmd's `sd_notify` messages (READY=1, STATUS=) arrive on a
//! datagram socket the test owns; waits on it are bounded so a broken daemon fails the test instead of hanging it.

#![allow(dead_code)]

pub mod sshd;

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(60);

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

/// Where the daemon's stderr (its log) goes.
pub enum Stderr {
    /// This process's stderr.
    Inherit,
    /// Lines on a channel (and echoed to this process's stderr).
    Capture,
    /// Appended to a file.
    Append(PathBuf),
}

/// The rsmd daemon under test.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    notify: UnixDatagram,
    notify_path: PathBuf,
    pub statuses: Vec<String>,
    pub ready: bool,
}

/// The rsmd binary under test (`$RSMD_BIN` overrides: inside vmlab it is a copy next to the test binary).
pub fn rsmd_bin() -> String {
    std::env::var("RSMD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_rsmd").to_owned())
}

pub fn rsm_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rsm")
}

/// A config file serving `vlib_dir`.
pub fn vlib_config(vlib_dir: &Path, extra: &str) -> String {
    format!("[[library]]\nname = \"test\"\nvlib = \"{}\"\n{extra}\n", vlib_dir.display())
}

/// A daemon serving `vlib_dir` whose inventory load is held (`RSMD_TEST_HOLD_LOAD`) until [`release_load`] with
/// the returned gate: it has said it is loading, and answers `NotReady` meanwhile.
pub fn held_daemon(root: &Path, vlib_dir: &Path) -> (Daemon, PathBuf) {
    std::fs::create_dir_all(root).unwrap();
    let gate = root.join("gate");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let mut d =
        Daemon::start_with(root, &vlib_config(vlib_dir, ""), &[("RSMD_TEST_HOLD_LOAD", gate.to_str().unwrap())]);
    // The socket is bound before the inventory loads; the daemon says so.
    d.wait_notify(|m| m == "STATUS=loading the inventory");
    (d, gate)
}

/// Lets a [`held_daemon`] load its inventory.
pub fn release_load(gate: &Path) {
    use std::io::Write;
    std::fs::OpenOptions::new().write(true).open(gate).unwrap().write_all(b"x").unwrap();
}

impl Daemon {
    /// Starts rsmd with `config` in `root` (socket, state and config file live there).
    pub fn start(root: &Path, config: &str) -> Daemon {
        Daemon::start_with(root, config, &[])
    }

    pub fn start_with(root: &Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_full(root, config, env, &[], Stderr::Inherit).0
    }

    /// Starts rsmd with extra arguments; with [`Stderr::Capture`], its stderr lines arrive on the returned channel.
    pub fn start_full(
        root: &Path,
        config: &str,
        env: &[(&str, &str)],
        args: &[&str],
        stderr: Stderr,
    ) -> (Daemon, Option<std::sync::mpsc::Receiver<String>>) {
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
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(match stderr {
                Stderr::Inherit => Stdio::inherit(),
                Stderr::Capture => Stdio::piped(),
                Stderr::Append(path) => std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_or_else(|_| Stdio::inherit(), Stdio::from),
            });
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let lines = child.stderr.take().map(|err| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                    eprintln!("{line}");
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        });
        let d = Daemon {
            child,
            socket,
            state,
            config: config_path,
            notify,
            notify_path,
            statuses: Vec::new(),
            ready: false,
        };
        (d, lines)
    }

    /// Changes how long a single wait may take (benchmarks on large libraries need longer than [`WAIT`]).
    pub fn set_wait(&mut self, wait: Duration) {
        self.notify.set_read_timeout(Some(wait)).unwrap();
    }

    /// Waits (bounded) for a notification satisfying `pred`; returns it.
    pub fn wait_notify(&mut self, pred: impl Fn(&str) -> bool) -> String {
        loop {
            let mut buf = [0u8; 4096];
            let n = self
                .notify
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no sd_notify message in time (last: {:?}): {e}", self.statuses.last()));
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

/// Checks a real-kernel VM run (vmlab or vmlab/systemd) that ran an inner test printing `{tag}-BEGIN` when it
/// started and `{tag}-OK ITEM` (optionally `: detail`) per item: prints its output, skips (returns false) when the
/// inner test never started — unless `required`, then it fails — and asserts success and every item's line.
pub fn check_vm_run(out: &std::process::Output, tag: &str, items: &[&str], required: bool) -> bool {
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    let code = out.status.code();
    if !stdout.contains(&format!("{tag}-BEGIN")) {
        // The inner test never started: the VM did not boot or the library did not come up.
        assert!(!required, "RSMD_REQUIRE_VMLAB=1 but the VM did not start the tests (exit status {code:?})");
        println!("skipped: {tag} unavailable: the VM did not start the tests (exit status {code:?})");
        return false;
    }
    assert_eq!(code, Some(0), "the in-VM tests failed (their output is above)");
    for item in items {
        let marker = format!("{tag}-OK {item}");
        let found = stdout.lines().any(|l| l == marker || l.starts_with(&format!("{marker}:")));
        assert!(found, "missing marker line {marker:?}");
    }
    true
}
