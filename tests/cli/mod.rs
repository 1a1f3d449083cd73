//! Issue 15: the `rsm` command line as an administrator meets it, run as the real binary against the real `rsmd`
//! (on vlib, or `rsmd --demo`): finding the demo's socket, the demo's private directory, errors that say what
//! went wrong with distinct exit statuses, JSON for every result and error, output into a closed pipe, Ctrl-C on
//! a waiting mount, readable names and numbers, `rsm watch` and `rsm version`.
//!
//! Synchronisation is on events only: sd_notify messages, notifications, lines the child prints, its exit.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;

use serde_json::Value;

use rsmd::client::Session;
use rsmd::proto::types::{MountFlags, ObjectDetails, ObjectType};
use rsmd::proto::DismountTarget;

use crate::util::{rsm_bin, rsmd_bin, vlib_config, Daemon, Vlib, WAIT};

/// A library on vlib (no delays) and a daemon serving it; `top` goes at the top of the configuration.
fn library(dir: &Path, top: &str) -> (Vlib, Daemon) {
    let v = Vlib::default_fast(&dir.join("vlib"));
    let mut d = Daemon::start(&dir.join("rsmd"), &format!("{top}\n{}", vlib_config(&v.dir, "")));
    d.wait_ready(1);
    (v, d)
}

/// `rsm` with `args`, no socket from the environment.
fn rsm_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(rsm_bin());
    cmd.args(args).env_remove("RSMD_SOCKET").stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to its end, failing the test if that takes longer than [`WAIT`] (the child is killed then).
fn run_bounded(mut cmd: Command) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{cmd:?} did not end within {WAIT:?}");
        }
    }
}

/// `rsm --socket <daemon's> args`.
fn rsm(d: &Daemon, args: &[&str]) -> Output {
    let mut cmd = rsm_command(&["--socket", d.socket.to_str().unwrap()]);
    cmd.args(args);
    run_bounded(cmd)
}

/// `rsm --application APPLICATION ARGS…`: its standard output, standard error and exit status.
fn rsm_app(d: &Daemon, application: &str, args: &[&str]) -> (String, String, i32) {
    let mut all = vec!["--application", application];
    all.extend(args);
    let out = rsm(d, &all);
    (text(&out.stdout), text(&out.stderr), out.status.code().unwrap())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `rsm` that must succeed; its standard output.
fn rsm_ok(d: &Daemon, args: &[&str]) -> String {
    let out = rsm(d, args);
    assert!(out.status.success(), "rsm {args:?}: {:?} {}", out.status, text(&out.stderr));
    text(&out.stdout)
}

/// Lines a child writes to `stream`, on a channel (read by a thread, so waits on them can be bounded).
fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (bounded) for a line satisfying `pred`.
fn wait_line(rx: &mpsc::Receiver<String>, pred: impl Fn(&str) -> bool) -> String {
    loop {
        let line = rx.recv_timeout(WAIT).expect("no such line in time");
        if pred(&line) {
            return line;
        }
    }
}

/// `rsmd --demo` under the test's control: its environment, its uid, an sd_notify socket the test reads.
struct Demo {
    child: Option<Child>,
    notify: UnixDatagram,
    stderr: mpsc::Receiver<String>,
}

impl Demo {
    /// Starts `rsmd --demo` with `env` (nothing else of the demo's location is passed) as `uid` when given.
    fn start(dir: &Path, env: &[(&str, &str)], uid: Option<u32>) -> Demo {
        let notify_path = dir.join(format!("notify-{}", uid.unwrap_or(0)));
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify.set_read_timeout(Some(WAIT)).unwrap();
        // Another uid must be able to send to it.
        std::fs::set_permissions(&notify_path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut cmd = Command::new(rsmd_bin());
        cmd.arg("--demo")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("RSMD_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env("NOTIFY_SOCKET", &notify_path)
            .env("RSMD_DEMO_TIME_SCALE", "0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = lines(child.stderr.take().unwrap());
        Demo { child: Some(child), notify, stderr }
    }

    /// Waits for READY=1 and the demo library ready.
    fn wait_ready(&self) {
        let mut ready = false;
        loop {
            let mut buf = [0u8; 4096];
            let n = self.notify.recv(&mut buf).expect("the demo did not get ready in time");
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            ready |= msg == "READY=1";
            if ready && msg.starts_with("STATUS=1 libraries: 1 ready") {
                return;
            }
        }
    }

    /// Waits (bounded) for the daemon to exit; its status and everything it wrote to stderr.
    fn wait_exit(mut self) -> (std::process::ExitStatus, String) {
        let (tx, rx) = mpsc::channel();
        let mut child = self.child.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let Ok(status) = rx.recv_timeout(WAIT) else {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("rsmd --demo did not exit: it accepted the directory");
        };
        let err: Vec<String> = self.stderr.iter().collect();
        (status.unwrap(), err.join("\n"))
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The service's socket exists on this machine: `rsm` would rightly use it, so the demo-finding tests skip.
fn service_socket_present() -> bool {
    let present = Path::new(rsmd::client::DEFAULT_SOCKET).exists();
    if present {
        eprintln!("skipping: {} exists, and rsm prefers it to the demo's", rsmd::client::DEFAULT_SOCKET);
    }
    present
}

fn mode_and_owner(p: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.permissions().mode() & 0o7777, m.uid())
}

/// Issue 15, item 1: with `XDG_RUNTIME_DIR` set, the demo makes `$XDG_RUNTIME_DIR/rsmd-demo` private (0700, this
/// user's) and `rsm` finds its socket without `RSMD_SOCKET` or `--socket`; a demo directory that others may write
/// in or that another user owns is refused, not reused.
#[test]
fn issue_15_rsm_finds_the_demo_and_the_demo_directory_is_private() {
    if service_socket_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let xdg = dir.path().join("xdg");
    std::fs::create_dir(&xdg).unwrap();
    let xdg_env = [("XDG_RUNTIME_DIR", xdg.to_str().unwrap())];
    let demo = Demo::start(dir.path(), &xdg_env, None);
    demo.wait_ready();
    let root = xdg.join("rsmd-demo");
    assert_eq!(mode_and_owner(&root), (0o700, nix::unistd::geteuid().as_raw()));
    let mut status = rsm_command(&["status"]);
    status.envs(xdg_env);
    let out = run_bounded(status);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("Library demo ("), "{}", text(&out.stdout));
    drop(demo);

    // Refused when others may write in it (the issue's /tmp/rsmd-demo-65534 was world-writable)...
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (status, err) = Demo::start(dir.path(), &xdg_env, None).wait_exit();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{} is writable by its group or by others (mode 0777)", root.display())), "{err}");
    assert!(err.contains("remove it, or set XDG_RUNTIME_DIR"), "{err}");
    // ... and when another user owns it.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&root, Some(65534), None).unwrap();
        let (status, err) = Demo::start(dir.path(), &xdg_env, None).wait_exit();
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(err.contains("belongs to uid 65534, not to this user (uid 0)"), "{err}");
    }
}

/// Whether `uid` can run the binaries under test (every directory on their path open to others).
fn runnable_by_others(bin: &str) -> bool {
    Path::new(bin).ancestors().skip(1).all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// Issue 15, item 1, without `XDG_RUNTIME_DIR`, as an ordinary user (the issue ran as `nobody`): the demo uses
/// `/tmp/rsmd-demo-<uid>`, refuses one that root created world-writable, and `rsm` ignores a socket planted there;
/// once the directory is the user's, the demo starts and `rsm` finds it from a shell with or without
/// `XDG_RUNTIME_DIR`.
#[test]
fn issue_15_without_xdg_runtime_dir_the_demo_lives_in_tmp_and_rsm_finds_it() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: running rsmd as another user needs root");
        return;
    }
    if !runnable_by_others(&rsmd_bin()) || !runnable_by_others(rsm_bin()) || service_socket_present() {
        eprintln!("skipping: the binaries are not reachable by another user");
        return;
    }
    // A uid of this test alone, so a real user's demo is never touched.
    let uid = 40_000 + std::process::id() % 20_000;
    let root = PathBuf::from(format!("/tmp/rsmd-demo-{uid}"));
    let _ = std::fs::remove_dir_all(&root);
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(root.clone());
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_user = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = rsm_command(args);
        cmd.env_remove("XDG_RUNTIME_DIR").envs(env.iter().copied()).uid(uid).gid(uid);
        run_bounded(cmd)
    };

    // Root made it world-writable and planted a socket that never answers.
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
    let planted = UnixListener::bind(root.join("rsmd.sock")).unwrap();
    std::fs::set_permissions(root.join("rsmd.sock"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (status, err) = Demo::start(dir.path(), &[], Some(uid)).wait_exit();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{} belongs to uid 0, not to this user (uid {uid})", root.display())), "{err}");
    let out = as_user(&["status"], &[]);
    assert_eq!(out.status.code(), Some(3), "not connected, and not a timeout on the planted socket");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("ignored {}/rsmd.sock: {} belongs to uid 0", root.display(), root.display())),
        "{err}"
    );
    assert!(err.contains("rsmd is not running: no socket to use at /run/rsmd/rsmd.sock"), "{err}");
    drop(planted);
    std::fs::remove_dir_all(&root).unwrap();

    // Its own directory: created 0700 and owned by the user; rsm finds the socket by itself.
    let demo = Demo::start(dir.path(), &[], Some(uid));
    demo.wait_ready();
    assert_eq!(mode_and_owner(&root), (0o700, uid));
    for env in [&[][..], &[("XDG_RUNTIME_DIR", dir.path().to_str().unwrap())][..]] {
        let out = as_user(&["status", "--mtx"], env);
        assert!(out.status.success(), "{env:?}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("4 Drives, 22 Slots ( 2 Import/Export )"), "{}", text(&out.stdout));
    }
}

/// Issue 15, item 5: a missing path, a directory, a file and a stale socket each say what they are (they all
/// said `NotConnected (2250)`), a daemon that never answers times out, and the exit statuses differ by kind.
#[test]
fn issue_15_errors_say_what_went_wrong_and_exit_statuses_differ() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let mute = dir.path().join("mute.sock");
    let _mute = UnixListener::bind(&mute).unwrap();
    let cases: [(&Path, &[&str], i32, &str); 5] = [
        (&dir.path().join("none.sock"), &[], 3, "no socket at"),
        (dir.path(), &[], 3, "is a directory, not rsmd's socket"),
        (&file, &[], 3, "is not a socket"),
        (&stale, &[], 3, "nothing listens on"),
        (&mute, &["--reply-timeout", "1"], 6, "did not answer OpenSession within 1 s: Timeout (1460)"),
    ];
    for (path, extra, code, says) in cases {
        let mut cmd = rsm_command(&["--socket", path.to_str().unwrap()]);
        cmd.args(extra).arg("status");
        let out = run_bounded(cmd);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{path:?}: {err}");
        assert!(err.starts_with("rsm: ") && err.contains(says) && err.contains(&*path.to_string_lossy()), "{err}");
    }

    let (_v, d) = library(dir.path(), "administrators = []");
    let status = |args: &[&str]| rsm(&d, args).status.code();
    assert_eq!(status(&["mount"]), Some(2), "usage");
    assert_eq!(status(&["mount", "ABC001L6", "--priority", "99"]), Some(2), "a bad value rsmd refuses");
    assert_eq!(status(&["info", "NOPE01L6"]), Some(4), "not found");
    assert_eq!(status(&["mount", "ABC001L6", "--drive", "9"]), Some(4), "no drive 9");
    // Another application's cartridge: in use, and not ours to dismount.
    let other = Session::open_at(&d.socket, None, Some("bacula"), 0).unwrap();
    other.mount(&["ABC001L6"], None, MountFlags { read: true, ..MountFlags::default() }, 0, None).unwrap();
    assert_eq!(status(&["dismount", "ABC001L6"]), Some(5), "access denied");
    assert_eq!(status(&["mount", "ABC001L6", "--error-if-unavailable"]), Some(6), "busy");
    // A socket on a path closed to the user.
    if nix::unistd::geteuid().is_root() && runnable_by_others(rsm_bin()) {
        let mut cmd = rsm_command(&["--socket", d.socket.to_str().unwrap(), "status"]);
        cmd.uid(65534).gid(65534);
        let out = run_bounded(cmd);
        assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("this user may not open rsmd's socket"), "{}", text(&out.stderr));
    }
    // The table is in --help.
    let help = text(&rsm(&d, &["--help"]).stdout);
    for row in ["  3    not connected", "  4    not found", "  5    access denied", "  6    busy or timed out"] {
        assert!(help.contains(row), "{row:?} in {help}");
    }
}

/// Issue 15, item 5: with `--json` every command prints one JSON document, errors (usage errors too) included;
/// a successful `dismount --json` printed nothing.
#[test]
fn issue_15_json_for_every_result_and_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, d) = library(dir.path(), "");
    let json = |args: &[&str], code: i32| -> Value {
        let mut all = vec!["--json"];
        all.extend(args);
        let out = rsm(&d, &all);
        assert_eq!(out.status.code(), Some(code), "rsm {all:?}: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("rsm {all:?} printed no JSON ({e}): {:?}", text(&out.stdout)))
    };
    assert!(json(&["status"], 0).as_array().is_some_and(|a| !a.is_empty()));
    assert!(json(&["view", "drive"], 0).as_array().is_some_and(|a| a.len() == 4));
    assert_eq!(json(&["info", "ABC002L6"], 0)["name"], "ABC002L6");
    let mounted = json(&["mount", "ABC002L6"], 0);
    assert!(mounted["drive"].is_string() && mounted["request"].is_string(), "{mounted}");
    assert_eq!(json(&["requests"], 0).as_array().map(Vec::len), Some(1));
    let dismounted = json(&["dismount", "ABC002L6"], 0);
    assert_eq!(dismounted, serde_json::json!({"media": "ABC002L6", "drive": null, "deferred": false}));
    assert_eq!(json(&["inventory"], 0).as_array().map(Vec::len), Some(1));
    let queued = json(&["mount", "ABC003L6", "--nowait"], 0);
    let request = queued["request"].as_str().unwrap().to_owned();
    let version = json(&["version"], 0);
    assert_eq!(version["daemon"]["version"], env!("CARGO_PKG_VERSION"));
    // The media life-cycle commands (issue 12).
    assert_eq!(json(&["pool", "create", "J", "--draw-from-free"], 0)["created"], true);
    assert!(json(&["pools"], 0).as_array().is_some_and(|a| a.iter().any(|p| p["name"] == "J")));
    assert_eq!(json(&["pool", "set", "J", "--max-allocations", "5"], 0)["name"], "J");
    let got = json(&["allocate", "J", "ABC005L6"], 0);
    assert_eq!(got["barcode"], "ABC005L6");
    assert!(json(&["media", "--pool", "J"], 0).as_array().is_some_and(|a| a.len() == 1));
    assert_eq!(json(&["complete", "ABC005L6"], 0)["complete"], "ABC005L6");
    assert_eq!(json(&["deallocate", "ABC005L6"], 0)["deallocated"], "ABC005L6");
    assert_eq!(json(&["decommission", "ABC005L6"], 0)["decommissioned"], "ABC005L6");
    assert_eq!(json(&["pool", "move", "ABC006L6", "J"], 0)["moved"], "ABC006L6");
    assert_eq!(json(&["disable", "ABC007L6"], 0)["disabled"], "ABC007L6");
    assert_eq!(json(&["enable", "ABC007L6"], 0)["enabled"], "ABC007L6");
    assert_eq!(json(&["delete-media", "ABC007L6"], 1)["error"]["name"], "InvalidState");
    assert_eq!(json(&["eject", "ABC008L6"], 0)["ejected"], "ABC008L6");
    assert_eq!(json(&["inject"], 0)["injected"], "test");
    assert_eq!(json(&["info", "ABC008L6"], 0)["details"]["physical_media"]["location"]["kind"], "slot");
    assert_eq!(json(&["swap", "ABC006L6", "ABC007L6"], 1)["error"]["name"], "InvalidMedia");
    assert_eq!(json(&["pool", "delete", "Free"], 4)["error"]["name"], "InvalidMediaPool");
    assert_eq!(json(&["completions", "bash"], 2)["error"]["name"], "Usage");
    // Errors: rsmd's, usage, and a request that is no longer cancellable.
    let e = json(&["info", "NOPE01L6"], 4);
    assert_eq!(e["error"]["name"], "ObjectNotFound");
    assert_eq!(e["error"]["code"], 4312);
    assert_eq!(e["exit_status"], 4);
    let e = json(&["mount"], 2);
    assert_eq!(e["error"]["name"], "Usage");
    assert!(e["error"]["message"].as_str().unwrap().contains("<BARCODE>"), "{e}");
    let e = json(&["status", "--mtx"], 2);
    assert_eq!(e["error"]["message"], "--mtx and --json exclude each other");
    let out = run_bounded(rsm_command(&["--json", "--socket", "/nonexistent/rsmd.sock", "status"]));
    assert_eq!(out.status.code(), Some(3));
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["error"]["name"], "NotConnected");
    assert!(out.stderr.is_empty(), "the error is on stdout, once");
    // cancel and reorder print their result too (the nowait mount may have finished: then rsmd refuses, in JSON).
    let out = rsm(&d, &["--json", "cancel", &request]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    if out.status.success() {
        assert_eq!(v["cancelled"], request.as_str());
    } else {
        assert_eq!(v["error"]["name"], "InvalidOperation", "{v}");
    }
}

/// Issue 15, item 5: `rsm mount X | head -1` panicked on the broken pipe (exit 101). The mount is done; the
/// closed pipe ends the output quietly.
#[test]
fn issue_15_a_closed_pipe_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (v, d) = library(dir.path(), "");
    let mut child = rsm_command(&["--socket", d.socket.to_str().unwrap(), "mount", "ABC004L6"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before rsm writes anything (rsm writes only once the drive is ready).
    drop(child.stdout.take());
    let err = lines(child.stderr.take().unwrap());
    let status = child.wait().unwrap();
    let err: Vec<String> = err.iter().collect();
    assert_eq!(status.code(), Some(0), "{err:?}");
    assert!(err.is_empty(), "nothing on stderr either: {err:?}");
    assert!(v
        .server
        .snapshot()
        .elements
        .iter()
        .any(|e| e.address >= 500 && e.address < 504 && e.barcode.as_deref() == Some("ABC004L6")));
}

/// Issue 15, item 6: Ctrl-C on a waiting `rsm mount` exited 130 silently while the mount went on, to end with a
/// loaded cartridge nobody owned. Now the interrupt cancels the request and says so.
#[test]
fn issue_15_ctrl_c_cancels_a_waiting_mount_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (v, d) = library(dir.path(), "");
    let holder = Session::open_at(&d.socket, None, Some("holder"), 0).unwrap();
    let flags = MountFlags { read: true, ..MountFlags::default() };
    for b in ["ABC001L6", "ABC002L6", "ABC003L6", "ABC004L6"] {
        holder.mount(&[b], None, flags, 0, None).unwrap();
    }
    let watcher = Session::open_at(&d.socket, None, Some("watcher"), 0).unwrap();
    let notes = watcher.notifications(Some(ObjectType::LibRequest)).unwrap();
    let media = watcher.get_object_information("ABC005L6").unwrap().id;
    let mut child = rsm_command(&["--socket", d.socket.to_str().unwrap(), "mount", "ABC005L6"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = lines(child.stderr.take().unwrap());
    // Every drive holds a cartridge someone mounted: rsm's request waits for a drive (its notifications are read
    // by a thread, so the wait is bounded).
    let (tx, changed) = mpsc::channel();
    std::thread::spawn(move || {
        for n in notes {
            if n.map_or(true, |n| tx.send(n.object).is_err()) {
                break;
            }
        }
    });
    let request = loop {
        let id = changed.recv_timeout(WAIT).expect("rsm's mount request did not appear in time");
        let o = watcher.get_object_information(&id).unwrap();
        let ObjectDetails::LibRequest(r) = &o.details else { continue };
        if matches!(o.state.as_str(), "queued" | "waiting")
            && r.application.as_deref() == Some("rsm")
            && r.media.as_deref() == Some(&media)
        {
            break id;
        }
    };
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    wait_line(&err, |l| l.starts_with("rsm: cancelling the mount of ABC005L6"));
    let status = child.wait().unwrap();
    let rest: Vec<String> = err.iter().collect();
    assert_eq!(status.code(), Some(130), "exited, not killed by the signal ({:?}): {rest:?}", status.signal());
    assert_eq!(rest, ["rsm: interrupted: the mount of ABC005L6 is cancelled"]);
    assert_eq!(watcher.get_object_information(&request).unwrap().state, "cancelled");
    // A drive comes free: the cancelled mount does not take it.
    holder.dismount(DismountTarget::Media("ABC001L6".into()), false).unwrap();
    let snap = v.server.snapshot();
    assert!(snap.elements.iter().any(|e| e.address == 1004 && e.barcode.as_deref() == Some("ABC005L6")), "home");
    assert_eq!(watcher.get_object_information(&request).unwrap().state, "cancelled");
}

/// Issue 15, item 7: people read barcodes, mtx's numbers and names; ids and element addresses only as details.
/// Barcodes are taken in any case, and `--drive` takes a drive's serial.
#[test]
fn issue_15_output_reads_barcodes_numbers_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, d) = library(dir.path(), "");
    let mounted = rsm_ok(&d, &["mount", "abc003l6", "--drive", "vdrv0002"]);
    assert!(mounted.starts_with("ABC003L6 mounted in drive 2 (VDRV0002, id "), "{mounted}");
    let s = Session::open_at(&d.socket, None, None, 0).unwrap();
    let ids: Vec<String> = s
        .enumerate(None, ObjectType::Drive)
        .unwrap()
        .into_iter()
        .chain(s.enumerate(None, ObjectType::PhysicalMedia).unwrap())
        .map(|o| o.id)
        .collect();
    let requests = rsm_ok(&d, &["requests"]);
    let row: Vec<&str> = requests.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[1..], ["mount", "complete", "0", "ABC003L6", "2", "rsm", "-"], "{requests}");
    assert!(ids.iter().all(|id| !requests.contains(id.as_str())), "no cartridge or drive ids: {requests}");
    assert!(requests.lines().all(|l| l.len() < 120), "it was ~190 columns: {requests}");
    let info = rsm_ok(&d, &["info", "Abc003L6"]);
    for line in ["location: drive 2 (address 502)", "home_slot: slot 3", "pool: Free\\LTO-6", "media_type: LTO-6"] {
        assert!(info.lines().any(|l| l == line), "{line:?} in\n{info}");
    }
    let drive2 = s
        .enumerate(None, ObjectType::Drive)
        .unwrap()
        .into_iter()
        .find(|o| matches!(&o.details, ObjectDetails::Drive(dd) if dd.number == 2))
        .unwrap();
    let drive = rsm_ok(&d, &["info", &drive2.id]);
    assert!(drive.lines().any(|l| l == "source_element: slot 3 (address 1002)"), "{drive}");
    let media = rsm_ok(&d, &["view", "physical_media"]);
    assert!(
        media.lines().any(|l| l.contains("ABC001L6 in slot 1 (address 1000), pool Free\\LTO-6, available, mounts 0")),
        "{media}"
    );
    assert!(rsm_ok(&d, &["dismount", "--drive", "VDRV0002"]).starts_with("drive VDRV0002 dismounted"));
}

/// Issue 15, "expected and missing": `rsm watch` prints one line per change (`--json`: one object per line),
/// `rsm version` the versions and the libraries' states.
#[test]
fn issue_15_watch_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, d) = library(dir.path(), "");
    let start = |json: bool| {
        let mut args = vec!["--socket", d.socket.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        args.push("watch");
        let mut child = rsm_command(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let out = lines(child.stdout.take().unwrap());
        let err = lines(child.stderr.take().unwrap());
        wait_line(&err, |l| l.starts_with("rsm: watching rsmd at "));
        (child, out)
    };
    let (mut plain, plain_lines) = start(false);
    let (mut json, json_lines) = start(true);
    rsm_ok(&d, &["mount", "ABC006L6", "--drive", "1"]);
    wait_line(&plain_lines, |l| l.starts_with("update drive 1: ") && l.contains(" mounted ABC006L6"));
    wait_line(&plain_lines, |l| l.starts_with("update request ") && l.ends_with("mount ABC006L6 drive 1 complete"));
    let line = wait_line(&json_lines, |l| {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}"));
        v["object_type"] == "drive" && v["info"]["details"]["drive"]["barcode"] == "ABC006L6"
    });
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["label"], "drive 1");
    assert!(v["operation"].is_string() && v["object"].is_string(), "{v}");
    plain.kill().unwrap();
    json.kill().unwrap();
    let _ = (plain.wait(), json.wait());

    let version = rsm_ok(&d, &["version"]);
    let lines: Vec<&str> = version.lines().collect();
    assert_eq!(lines[0], format!("rsm {} (protocol 1)", env!("CARGO_PKG_VERSION")));
    assert_eq!(lines[1], format!("rsmd {} at {} (protocol 1)", env!("CARGO_PKG_VERSION"), d.socket.display()));
    assert!(lines[2].starts_with("interfaces: ") && lines[2].contains("io.rsmd.Ntms"), "{version}");
    assert_eq!(lines[3], "library test: ready");
    // Without a daemon the client's version still shows, and the status says why.
    let out = run_bounded(rsm_command(&["--socket", dir.path().join("none").to_str().unwrap(), "version"]));
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stdout), format!("rsm {} (protocol 1)\n", env!("CARGO_PKG_VERSION")));
}

/// `rsm` as another user (uid and gid), with `args`.
fn rsm_as(d: &Daemon, uid: u32, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = rsm_command(&["--socket", d.socket.to_str().unwrap()]);
    cmd.args(args).uid(uid).gid(uid);
    run_bounded(cmd)
}

/// Issue 12: two applications under two real uids (root's Bacula, `nobody`'s Amanda) share one library; every
/// mutating method refuses the wrong one with AccessDenied (exit 5), enumerations show each only what it may see;
/// an allocation acknowledged survives `kill -9`.
#[test]
fn issue_12_two_users_share_a_library_and_allocations_survive_kill_9() {
    if !nix::unistd::geteuid().is_root() || !runnable_by_others(rsm_bin()) {
        eprintln!("skipped: needs root and binaries others may run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (v, mut d) = library(dir.path(), "");
    // Let the other user reach the socket.
    for p in [dir.path().to_owned(), dir.path().join("rsmd")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    const NOBODY: u32 = 65534;
    let ok_as = |d: &Daemon, uid: u32, args: &[&str]| {
        let out = if uid == 0 { rsm(d, args) } else { rsm_as(d, uid, args) };
        assert!(out.status.success(), "uid {uid} rsm {args:?}: {:?} {}", out.status, text(&out.stderr));
        text(&out.stdout)
    };
    let denied = |d: &Daemon, args: &[&str]| {
        let out = rsm_as(d, NOBODY, args);
        assert_eq!(out.status.code(), Some(5), "rsm {args:?} as nobody: {}{}", text(&out.stdout), text(&out.stderr));
        assert!(text(&out.stderr).contains("AccessDenied"), "{}", text(&out.stderr));
    };
    // Root's Bacula pool draws from Free; one tape allocated.
    ok_as(&d, 0, &["--application", "Bacula", "pool", "create", "Bacula", "--draw-from-free", "--return-to-free"]);
    let got: Value =
        serde_json::from_str(&ok_as(&d, 0, &["--json", "--application", "Bacula", "allocate", "Bacula"])).unwrap();
    let bacula_tape = got["barcode"].as_str().unwrap().to_owned();
    assert_eq!(bacula_tape, "ABC001L6", "the first available by barcode");
    // nobody's Amanda pool, its own tape.
    ok_as(&d, NOBODY, &["--application", "Amanda", "pool", "create", "Amanda", "--draw-from-free"]);
    let got: Value = serde_json::from_str(&ok_as(
        &d,
        NOBODY,
        &["--json", "--application", "Amanda", "allocate", "Amanda", "--error-if-unavailable"],
    ))
    .unwrap();
    let amanda_tape = got["barcode"].as_str().unwrap().to_owned();
    assert_ne!(amanda_tape, bacula_tape, "never both");
    // What each sees.
    let seen = ok_as(&d, NOBODY, &["media"]);
    assert!(!seen.contains(&bacula_tape) && seen.contains(&amanda_tape), "{seen}");
    let pools = ok_as(&d, NOBODY, &["pools"]);
    assert!(pools.contains("Amanda") && !pools.contains("Bacula") && pools.contains("Free\\LTO-6"), "{pools}");
    let all = ok_as(&d, 0, &["media", "--pool", "Amanda"]);
    assert!(all.contains(&amanda_tape) && all.contains("uid 65534 (Amanda)"), "root sees all: {all}");
    // Every mutating method on root's tape or pool refuses nobody.
    denied(&d, &["mount", &bacula_tape]);
    denied(&d, &["deallocate", &bacula_tape]);
    denied(&d, &["complete", &bacula_tape]);
    denied(&d, &["decommission", &bacula_tape]);
    denied(&d, &["disable", &bacula_tape]);
    denied(&d, &["pool", "move", &bacula_tape, "Free"]);
    denied(&d, &["swap", &bacula_tape, &amanda_tape]);
    denied(&d, &["disable", "0"]);
    // Not even the same user's other application mounts the Amanda tape; Amanda does.
    let other = rsm_as(&d, NOBODY, &["--application", "scripts", "mount", &amanda_tape]);
    assert_eq!(other.status.code(), Some(5), "{}", text(&other.stderr));
    let mounted = ok_as(&d, NOBODY, &["--application", "Amanda", "mount", &amanda_tape]);
    assert!(mounted.contains(&amanda_tape), "{mounted}");
    ok_as(&d, NOBODY, &["--application", "Amanda", "dismount", &amanda_tape]);
    // A mount for a pool allocates a Free cartridge into it first; without --pool it stays in Free.
    let free_tape = "ABC010L6";
    ok_as(&d, NOBODY, &["--application", "Amanda", "mount", free_tape, "--pool", "Amanda"]);
    ok_as(&d, NOBODY, &["--application", "Amanda", "dismount", free_tape]);
    let info: Value = serde_json::from_str(&ok_as(&d, NOBODY, &["--json", "info", free_tape])).unwrap();
    let m = &info["details"]["physical_media"];
    assert_eq!((m["pool_name"].as_str(), m["side"].as_str()), (Some("Amanda"), Some("allocated")), "{info}");
    assert_eq!((m["owner_uid"].as_u64(), m["owner_application"].as_str()), (Some(65534), Some("Amanda")));
    ok_as(&d, NOBODY, &["mount", "ABC011L6"]);
    ok_as(&d, NOBODY, &["dismount", "ABC011L6"]);
    let info: Value = serde_json::from_str(&ok_as(&d, NOBODY, &["--json", "info", "ABC011L6"])).unwrap();
    assert_eq!(info["details"]["physical_media"]["pool_name"], "Free\\LTO-6");
    // A stale version is refused, a current one applies.
    let info: Value = serde_json::from_str(&ok_as(&d, NOBODY, &["--json", "info", &pool_id_of(&d, "Amanda")])).unwrap();
    let version = info["version"].as_u64().unwrap().to_string();
    ok_as(&d, NOBODY, &["pool", "set", "Amanda", "--max-allocations", "3", "--version", &version]);
    let stale = rsm_as(&d, NOBODY, &["pool", "set", "Amanda", "--description", "x", "--version", &version]);
    assert!(text(&stale.stderr).contains("RevisionMismatch"), "{}", text(&stale.stderr));
    // kill -9 right after the allocation was acknowledged: it is there after the restart.
    let got: Value =
        serde_json::from_str(&ok_as(&d, 0, &["--json", "--application", "Bacula", "allocate", "Bacula"])).unwrap();
    let lmid = got["logical_media"].as_str().unwrap().to_owned();
    let barcode = got["barcode"].as_str().unwrap().to_owned();
    d.kill9();
    let mut d = Daemon::start(&dir.path().join("rsmd"), &vlib_config(&v.dir, ""));
    d.wait_ready(1);
    let info: Value = serde_json::from_str(&ok_as(&d, 0, &["--json", "info", &barcode])).unwrap();
    let m = &info["details"]["physical_media"];
    assert_eq!((m["logical_media"].as_str(), m["side"].as_str()), (Some(lmid.as_str()), Some("allocated")), "{info}");
    assert_eq!(m["pool_name"], "Bacula");
    // Deallocated, it goes back to Free (the pool returns media).
    ok_as(&d, 0, &["--application", "Bacula", "deallocate", &lmid]);
    let info: Value = serde_json::from_str(&ok_as(&d, 0, &["--json", "info", &barcode])).unwrap();
    assert_eq!(info["details"]["physical_media"]["pool_name"], "Free\\LTO-6");
}

fn pool_id_of(d: &Daemon, name: &str) -> String {
    let pools: Value = serde_json::from_str(&rsm_ok(d, &["--json", "pools"])).unwrap();
    pools.as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["id"].as_str().unwrap().to_owned()
}

/// Issue 15: manual pages and shell completions come from the binaries (the same definitions as `--help`), without
/// a daemon; the pages render with groff without warnings where groff is installed.
#[test]
fn issue_15_manual_pages_and_completions() {
    let bin = |program: &str, args: &[&str]| {
        let mut cmd = Command::new(program);
        cmd.args(args).env("RSMD_SOCKET", "/nonexistent/rsmd.sock");
        let out = run_bounded(cmd);
        assert!(out.status.success(), "{program} {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let pages = [
        (bin(rsm_bin(), &["man"]), ".TH rsm 1", "allocate"),
        (bin(&rsmd_bin(), &["--man"]), ".TH rsmd 8", "map\\-drives"),
        (bin(&rsmd_bin(), &["--man-config"]), ".TH RSMD.TOML 5", "socket_group"),
    ];
    for (page, head, word) in &pages {
        assert!(page.starts_with(".ie") || page.starts_with(".TH"), "{}", &page[..80.min(page.len())]);
        assert!(page.contains(head) && page.contains(word), "{head}: {word} missing");
        if Path::new("/usr/bin/groff").exists() {
            let mut groff = Command::new("groff");
            groff.args(["-man", "-Tutf8", "-ww", "-z"]).stdin(Stdio::piped());
            let mut child = groff.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
            std::io::Write::write_all(child.stdin.as_mut().unwrap(), page.as_bytes()).unwrap();
            drop(child.stdin.take());
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success() && out.stderr.is_empty(), "{head}: groff says {}", text(&out.stderr));
        }
    }
    for (shell, head) in [("bash", "_rsm()"), ("zsh", "#compdef rsm"), ("fish", "complete -c rsm")] {
        let script = bin(rsm_bin(), &["completions", shell]);
        assert!(script.contains(head) && script.contains("allocate") && script.contains("dismount"), "{shell}");
    }
    let bad = rsm_command(&["completions", "tcsh"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "an unknown shell is a usage error");
}

/// Issue 15, item 2: `rsmd --map-drives` maps a configured vlib library whose drives the library does not name (no
/// DVCID), saves the map, and the daemon started on that state mounts at once; with nothing to map it exits 1.
#[test]
fn issue_15_map_drives_for_a_vlib_library_then_mount() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = vlib::Config::default_library();
    c.dvcid = false;
    c.time_scale = 0.0;
    let v = Vlib::start(&dir.path().join("vlib"), c);
    let root = dir.path().join("rsmd");
    std::fs::create_dir_all(&root).unwrap();
    let config = root.join("rsmd.toml");
    std::fs::write(&config, vlib_config(&v.dir, "")).unwrap();
    let state = root.join("state");
    let sysfs = dir.path().join("sys");
    std::fs::create_dir_all(sysfs.join("class/scsi_generic")).unwrap();
    let map = |config: &Path| {
        let mut cmd = Command::new(rsmd_bin());
        cmd.arg("--config").arg(config).arg("--state-dir").arg(&state).arg("--sysfs-root").arg(&sysfs);
        cmd.arg("--map-drives");
        run_bounded(cmd)
    };
    let out = map(&config);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("4 of 4 drive elements mapped"), "{}", text(&out.stdout));
    let mut d = Daemon::start(&root, &vlib_config(&v.dir, ""));
    d.wait_ready(1);
    let mounted = rsm_ok(&d, &["mount", "ABC001L6"]);
    assert!(mounted.contains("mounted in drive"), "{mounted}");
    drop(d);
    let empty = root.join("empty.toml");
    std::fs::write(&empty, "discover = true\n").unwrap();
    let out = map(&empty);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("No changers found"), "{}", text(&out.stderr));
}

/// Runs `rsm --socket <daemon's> args` on a terminal (script(1) gives it one); its terminal's output. None when
/// script(1) is not installed.
fn rsm_on_a_terminal(d: &Daemon, args: &str) -> Option<String> {
    if !Path::new("/usr/bin/script").exists() {
        eprintln!("skipped: no script(1) to give rsm a terminal");
        return None;
    }
    let line = format!("{} --socket {} {args}", rsm_bin(), d.socket.display());
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"]).env_remove("RSMD_SOCKET").stdin(Stdio::null());
    let out = run_bounded(cmd);
    let tty = text(&out.stdout);
    println!("rsm {args} on a terminal:\n{tty}");
    assert!(out.status.success(), "{tty}");
    Some(tty)
}

/// Issue 15, item 4: on a terminal `rsm mount` says what is happening while the robot and the drive work; piped,
/// it prints only the result.
#[test]
fn issue_15_mount_progress_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = vlib::Config::default_library();
    c.dvcid = true;
    // Robot move 400 ms, load 1 s: stages long enough to be seen.
    c.time_scale = 0.05;
    let v = Vlib::start(&dir.path().join("vlib"), c);
    let mut d = Daemon::start(&dir.path().join("rsmd"), &vlib_config(&v.dir, ""));
    d.wait_ready(1);
    let Some(tty) = rsm_on_a_terminal(&d, "mount ABC001L6") else { return };
    assert!(tty.contains("rsm: ABC001L6: robot moving it to drive"), "{tty}");
    assert!(tty.contains("rsm: ABC001L6: drive") && tty.contains("loading, waiting for it to be ready"), "{tty}");
    assert!(tty.contains("ABC001L6 mounted in drive"), "{tty}");
    rsm_ok(&d, &["dismount", "ABC001L6"]);
    // Piped: the result alone.
    let out = rsm(&d, &["mount", "ABC001L6"]);
    assert!(out.status.success());
    assert!(!text(&out.stderr).contains("rsm: ABC001L6:"), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ABC001L6 mounted in drive"));
}

/// Issue 15, item 4: `rsm inventory` waits for the inventory and, on a terminal, shows the elements read so far;
/// piped, it says only how it ended; `--nowait` returns once it is queued.
#[test]
fn issue_15_inventory_shows_elements_read_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = vlib::Config::default_library();
    c.dvcid = true;
    // READ ELEMENT STATUS at half its real cost (vlib: ~1 ms per element with volume tags, plus the command).
    c.time_scale = 0.5;
    let v = Vlib::start(&dir.path().join("vlib"), c);
    // Four elements per READ ELEMENT STATUS: the scan takes several steps.
    let mut d = Daemon::start(&dir.path().join("rsmd"), &vlib_config(&v.dir, "chunk = 4"));
    d.wait_ready(1);
    let Some(tty) = rsm_on_a_terminal(&d, "inventory") else { return };
    let progress: Vec<&str> =
        tty.lines().filter(|l| l.starts_with("rsm: test: ") && l.contains("elements read")).collect();
    assert!(!progress.is_empty(), "{tty}");
    assert!(tty.contains("Inventory of test complete"), "{tty}");
    let piped = rsm_ok(&d, &["inventory"]);
    assert_eq!(piped, "Inventory of test complete\n");
    let queued = rsm_ok(&d, &["inventory", "--nowait"]);
    assert!(queued.starts_with("Inventory of test queued as request "), "{queued}");
}

/// `rsm watch --type TYPE`, its lines on a channel; killed (and reaped) when dropped.
struct Watcher(Child);

impl Watcher {
    /// Starts `rsm watch` and returns once it is subscribed (it says so on stderr after subscribing).
    fn start(d: &Daemon, object_type: &str) -> (Watcher, mpsc::Receiver<String>) {
        let mut cmd = rsm_command(&["--socket", d.socket.to_str().unwrap(), "watch", "--type", object_type]);
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let seen = lines(child.stdout.take().unwrap());
        let said = lines(child.stderr.take().unwrap());
        wait_line(&said, |l| l.contains("watching rsmd"));
        (Watcher(child), seen)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `rsm` in the background, its stdout and exit status on a channel.
fn rsm_background(d: &Daemon, args: &[&str]) -> mpsc::Receiver<Output> {
    let mut cmd = rsm_command(&["--socket", d.socket.to_str().unwrap()]);
    cmd.args(args);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run_bounded(cmd));
    });
    rx
}

/// Issue 13: an operator's week from the command line, on the real daemon and vlib: an eject of more cartridges
/// than mail slots waits for them to be emptied (an operator request says so, satisfied by itself when the
/// operator takes them), applications' operator requests are answered and waited for, the door holds the robot
/// until it is closed, a drive is cleaned, and a queued cleaning survives kill -9.
#[test]
fn issue_13_eject_door_clean_and_operator_requests_from_the_command_line() {
    use vlib::Fault;
    let dir = tempfile::tempdir().unwrap();
    let v = Vlib::default_fast(&dir.path().join("vlib"));
    let config = vlib_config(&v.dir, "heartbeat_ms = 200");
    let mut d = Daemon::start(&dir.path().join("rsmd"), &config);
    d.wait_ready(1);
    let json = |d: &Daemon, args: &[&str], code: i32| -> Value {
        let mut all = vec!["--json"];
        all.extend(args);
        let out = rsm(d, &all);
        assert_eq!(out.status.code(), Some(code), "rsm {all:?}: {} {}", text(&out.stdout), text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // Three cartridges, two mail slots: the third waits for the operator.
    let (watcher, seen) = Watcher::start(&d, "op_request");
    let eject = rsm_background(&d, &["--json", "eject", "ABC001L6", "ABC002L6", "ABC003L6"]);
    wait_line(&seen, |l| l.contains("insert"));
    let ops = json(&d, &["operator"], 0);
    let ops = ops.as_array().unwrap();
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(ops[0]["details"]["op_request"]["kind"], "move_media");
    let listed = rsm_ok(&d, &["operator"]);
    assert!(listed.contains("the mail slots of library test are full"), "{listed}");
    v.server.inject(Fault::TakeFromPorts).unwrap();
    let out = eject.recv_timeout(WAIT).unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap()["ejected"][2], "ABC003L6");
    let all = json(&d, &["operator", "--all"], 0);
    assert_eq!(all[0]["details"]["op_request"]["state"], "satisfied");
    assert_eq!(json(&d, &["operator"], 0).as_array().map(Vec::len), Some(0), "none active");
    // An application's request: waited for, satisfied; another refused.
    let n = json(&d, &["submit", "load the weekly tapes", "--object", "ABC004L6"], 0)["number"].as_u64().unwrap();
    let waiting = rsm_background(&d, &["wait-operator", &n.to_string()]);
    rsm_ok(&d, &["satisfy", &n.to_string()]);
    assert!(waiting.recv_timeout(WAIT).unwrap().status.success());
    let m = json(&d, &["submit", "clean the robot", "--kind", "device-service"], 0)["number"].as_u64().unwrap();
    rsm_ok(&d, &["refuse", &m.to_string(), "--reason", "no time"]);
    let out = rsm(&d, &["wait-operator", &m.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no time") && text(&out.stderr).contains("RequestRefused"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(json(&d, &["satisfy", &m.to_string()], 1)["error"]["name"], "InvalidState");
    // The door: unlocked, the robot waits; closed, the mount goes on.
    let out = rsm_ok(&d, &["door"]);
    assert!(out.contains("is unlocked"), "{out}");
    let mount = rsm_background(&d, &["--json", "mount", "ABC005L6"]);
    assert!(mount.recv_timeout(std::time::Duration::from_millis(500)).is_err(), "no move while the door is unlocked");
    v.server.inject(Fault::DoorClosed).unwrap();
    let out = mount.recv_timeout(WAIT).unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Cleaning: on request, the cleaner's use counted.
    let out = rsm_ok(&d, &["clean", "1"]);
    assert!(out.contains("Drive 1 is clean"), "{out}");
    assert_eq!(json(&d, &["info", "CLN001L1"], 0)["details"]["physical_media"]["cleaning_count"], 1);
    let drive = json(&d, &["view", "drive"], 0);
    assert!(drive.as_array().unwrap().iter().any(|x| x["details"]["drive"]["cleanings"] == 1), "{drive}");
    // A cleaning of the drive that holds ABC005L6 waits; kill -9; after the restart it is still queued, and it
    // runs once the drive is free.
    let loaded = json(&d, &["info", "ABC005L6"], 0)["details"]["physical_media"]["location"]["element"]
        .as_str()
        .unwrap()
        .to_owned();
    let number = json(&d, &["info", &loaded], 0)["details"]["drive"]["number"].as_u64().unwrap().to_string();
    drop(watcher);
    let (watcher, seen) = Watcher::start(&d, "lib_request");
    let _queued = rsm_background(&d, &["clean", &number]);
    wait_line(&seen, |l| l.contains("insert"));
    // Batches are written in order: once this later call is acknowledged, the queued cleaning is on disk.
    rsm_ok(&d, &["submit", "acknowledged after the cleaning was queued"]);
    let requests = json(&d, &["requests"], 0);
    let clean = requests
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["details"]["lib_request"]["operation"] == "clean" && r["state"] != "complete")
        .cloned();
    let clean = clean.expect("a queued cleaning");
    drop(watcher);
    d.kill9();
    let mut d = Daemon::start(&dir.path().join("rsmd"), &config);
    d.wait_ready(1);
    let after = json(&d, &["info", clean["id"].as_str().unwrap()], 0);
    assert_eq!(after["details"]["lib_request"]["state"], "queued", "{after}");
    rsm_ok(&d, &["dismount", "ABC005L6"]);
    let (watcher, seen) = Watcher::start(&d, "lib_request");
    loop {
        let state = json(&d, &["info", clean["id"].as_str().unwrap()], 0)["details"]["lib_request"]["state"].clone();
        if state == "complete" {
            break;
        }
        assert!(state == "queued" || state == "in_progress" || state == "waiting", "{state}");
        wait_line(&seen, |_| true);
    }
    assert_eq!(json(&d, &["info", "CLN001L1"], 0)["details"]["physical_media"]["cleaning_count"], 2);
    drop(watcher);
}

/// Issue 14: `rsm changer` keeps Debian's mtx-changer contract (bacula 9.6) and `rsm mtx` mtx's texts, on the real
/// daemon and vlib: slots, list, listall, loaded, load, unload, transfer and their error cases, the argument checks
/// and usage texts, and the library state after each step.
#[test]
fn issue_14_changer_command_and_mtx_front() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, d) = library(dir.path(), "");
    let run = |args: &[&str]| {
        let out = rsm(&d, args);
        (text(&out.stdout), text(&out.stderr), out.status.code().unwrap())
    };
    let changer = |args: &[&str]| {
        let mut all = vec!["changer"];
        all.extend(args);
        run(&all)
    };
    let pad = |b: &str| format!("{b}{}", " ".repeat(32 - b.len()));
    assert_eq!(changer(&["rsmd:test", "slots"]), ("22\n".into(), String::new(), 0));
    let list = changer(&["rsmd:test", "list", "0", "/dev/nst0", "0"]).0;
    let expected: String = (1..=16).map(|n| format!("{n}:ABC{n:03}L6\n")).collect::<String>() + "20:CLN001L1\n";
    assert_eq!(list, expected);
    assert_eq!(changer(&["rsmd:test", "loaded", "0", "/dev/nst1", "1"]), ("0\n".into(), String::new(), 0));
    assert_eq!(changer(&["rsmd:test", "loaded", "0", "/dev/nst9", "9"]), (String::new(), String::new(), 0));
    let loaded = changer(&["rsmd:test", "load", "3", "/dev/nst1", "1"]);
    assert_eq!(loaded, ("Loading media from Storage Element 3 into drive 1...done\n".into(), String::new(), 0));
    assert_eq!(changer(&["rsmd:test", "loaded", "0", "/dev/nst1", "1"]).0, "3\n");
    let list = changer(&["rsmd:test", "list"]).0;
    assert!(list.contains("\n2:ABC002L6\n4:ABC004L6\n") && list.ends_with("20:CLN001L1\n3:ABC003L6\n"), "{list}");
    let all = changer(&["rsmd:test", "listall"]).0;
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(
        &lines[..4],
        &["D:0:E".to_owned(), format!("D:1:F:3:{}", pad("ABC003L6")), "D:2:E".into(), "D:3:E".into()]
    );
    assert_eq!(lines[4], format!("S:1:F:{}", pad("ABC001L6")));
    assert_eq!(lines[6], "S:3:E");
    assert_eq!(lines[24..], ["I:21:E", "I:22:E"]);
    // Errors, as the script prints them (mtx's standard error on standard output for load and unload).
    let full = changer(&["rsmd:test", "load", "5", "/dev/nst1", "1"]);
    assert_eq!(full, ("Drive 1 Full (Storage Element 3 loaded)\n".into(), String::new(), 1));
    let (empty, _, code) = changer(&["rsmd:test", "load", "17", "/dev/nst0", "0"]);
    assert!(
        empty.starts_with("Loading media from Storage Element 17 into drive 0...Source Element Address "),
        "{empty}"
    );
    assert!(empty.ends_with(" is Empty\n") && code == 1, "{empty}");
    assert_eq!(
        changer(&["rsmd:test", "load", "99", "/dev/nst0", "0"]).0,
        "Invalid <storage-element-number> argument '99' to 'load' command\n"
    );
    assert_eq!(changer(&["rsmd:test", "load", "0", "/dev/nst0", "0"]).0, "No source specified\n");
    assert_eq!(
        changer(&["rsmd:test", "load", "3", "/dev/nst9", "9"]).0,
        "illegal <drive-number> argument '9' to 'load' command\n"
    );
    assert_eq!(
        changer(&["rsmd:test", "unload", "3", "/dev/nst2", "2"]),
        ("Data Transfer Element 2 is Empty\n".into(), String::new(), 1)
    );
    assert_eq!(
        changer(&["rsmd:test", "unload", "6", "/dev/nst1", "1"]),
        ("Storage Element 6 is Already Full\n".into(), String::new(), 1)
    );
    // Unloaded into another slot than the one it came from, as the Storage Daemon may ask.
    assert_eq!(
        changer(&["rsmd:test", "unload", "18", "/dev/nst1", "1"]),
        ("Unloading drive 1 into Storage Element 18...done\n".into(), String::new(), 0)
    );
    assert_eq!(changer(&["rsmd:test", "loaded", "0", "/dev/nst1", "1"]).0, "0\n");
    assert!(changer(&["rsmd:test", "list"]).0.contains("\n18:ABC003L6\n"));
    // transfer: nothing on standard output, mtx's errors on standard error.
    assert_eq!(changer(&["rsmd:test", "transfer", "18", "3"]), (String::new(), String::new(), 0));
    let (out, err, code) = changer(&["rsmd:test", "transfer", "17", "19"]);
    assert!(out.is_empty() && err.starts_with("Source Element Address ") && err.ends_with(" is Empty\n") && code == 1);
    let (_, err, _) = changer(&["rsmd:test", "transfer", "3", "4"]);
    assert!(err.starts_with("Destination Element Address ") && err.ends_with(" is Already Full\n"), "{err}");
    assert_eq!(changer(&["rsmd:test", "transfer", "3", "99"]).1, "Invalid destination\n");
    // Arguments: unknown commands do nothing; too few get the usage text.
    assert_eq!(changer(&["rsmd:test", "frobnicate", "0", "/dev/nst0", "0"]), (String::new(), String::new(), 0));
    let (usage, _, code) = changer(&["rsmd:test", "load"]);
    assert_eq!(code, 1);
    assert!(usage.starts_with("ERROR: usage: mtx-changer ctl-device command [slot archive-device drive-index]\n"));
    assert!(usage.ends_with("  Command expected 5 arguments\n"), "{usage}");
    assert!(changer(&["rsmd:test"]).0.ends_with("  Mimimum usage is first two arguments ...\n"));
    // rsm mtx: mtx's status under the device name given, and nobarcode.
    let (status, _, code) = run(&["mtx", "-f", "rsmd:test", "status"]);
    assert_eq!(code, 0);
    assert!(status.starts_with("  Storage Changer rsmd:test:4 Drives, 22 Slots ( 2 Import/Export )\n"), "{status}");
    let ours = rsm_ok(&d, &["status", "--mtx"]);
    assert_eq!(status.lines().skip(1).collect::<Vec<_>>(), ours.lines().skip(1).collect::<Vec<_>>());
    let (plain, _, _) = run(&["mtx", "-f", "rsmd:test", "nobarcode", "status"]);
    assert!(!plain.contains("VolumeTag") && plain.contains("      Storage Element 1:Full \n"), "{plain}");
    let (inq, _, _) = run(&["mtx", "-f", "rsmd:test", "inquiry"]);
    assert!(inq.starts_with("Product Type: Medium Changer\nVendor ID: '"), "{inq}");
    let (_, err, code) = run(&["mtx", "-f", "rsmd:nope", "status"]);
    assert!(code == 1 && err.contains("rsmd:nope"), "{err}");
    let (_, err, code) = run(&["mtx", "-f", "rsmd:test", "frob"]);
    assert!(code == 1 && err.starts_with("Usage:\n"), "{err}");
    // Several commands on one line, as mtx runs them: load then unload.
    let (both, _, code) = run(&["mtx", "-f", "rsmd:test", "load", "1", "2", "unload", "1", "2"]);
    assert_eq!(code, 0);
    assert_eq!(
        both,
        "Loading media from Storage Element 1 into drive 2...done\nUnloading drive 2 into Storage Element 1...done\n"
    );
}

/// Issue 14, partitions: two applications on one library, each through its own partition (`rsmd:test/NAME`): its
/// slots numbered 1..N, its drives from 0, a shared drive arbitrated by rsmd (one never unloads the other's tape),
/// and rsmd refuses a mount of the other's cartridges or drives.
#[test]
fn issue_14_partitions_each_application_sees_its_own_library() {
    let dir = tempfile::tempdir().unwrap();
    let v = Vlib::default_fast(&dir.path().join("vlib"));
    let parts =
        "[[library.partition]]\nname = \"bacula\"\napplication = \"Bacula\"\nslots = \"1-8,17\"\ndrives = [0, 1]\n\
                 [[library.partition]]\nname = \"amanda\"\napplication = \"Amanda\"\nslots = \"9-16\"\n\
                 drives = [1, 2]\nmail_slots = true\n";
    // Nobody administers (the test runs as root, an administrator by default, who may unload anyone's tape).
    let config = format!("administrators = []\n{}", vlib_config(&v.dir, parts));
    let mut d = Daemon::start(&dir.path().join("rsmd"), &config);
    d.wait_ready(1);
    let app = |application: &str, args: &[&str]| rsm_app(&d, application, args);
    assert_eq!(app("Bacula", &["changer", "rsmd:test/bacula", "slots"]).0, "9\n", "1-8 and 17 (empty)");
    assert_eq!(app("Amanda", &["changer", "rsmd:test/amanda", "slots"]).0, "10\n", "8 slots and the 2 mail slots");
    let bacula: String = (1..=8).map(|n| format!("{n}:ABC{n:03}L6\n")).collect();
    assert_eq!(app("Bacula", &["changer", "rsmd:test/bacula", "list"]).0, bacula);
    let amanda: String = (1..=8).map(|n| format!("{n}:ABC{:03}L6\n", n + 8)).collect();
    assert_eq!(app("Amanda", &["changer", "rsmd:test/amanda", "list"]).0, amanda, "renumbered 1..8");
    // Amanda loads its slot 1 (ABC009L6) into its drive 0: the library's drive 1, which Bacula shares.
    let (out, _, code) = app("Amanda", &["mtx", "-f", "rsmd:test/amanda", "load", "1", "0"]);
    assert_eq!((out.as_str(), code), ("Loading media from Storage Element 1 into drive 0...done\n", 0));
    let (status, _, _) = app("Bacula", &["mtx", "-f", "rsmd:test/bacula", "status"]);
    assert!(status.contains("Data Transfer Element 1:Empty\n"), "Amanda's tape is not Bacula's business: {status}");
    let slots: Vec<&str> = status.lines().filter(|l| l.starts_with("      Storage Element ")).collect();
    assert_eq!(slots.len(), 9, "Bacula sees its 9 slots only: {status}");
    let amandas = |l: &&str| (9..=16).any(|n| l.contains(&format!("ABC{n:03}L6")));
    assert!(!slots.iter().any(amandas), "none of Amanda's cartridges in its slots: {status}");
    // Bacula cannot take Amanda's tape out of the shared drive: not through the changer (the drive is empty to it),
    // not from rsmd itself.
    let (out, _, code) = app("Bacula", &["changer", "rsmd:test/bacula", "unload", "9", "/dev/nst1", "1"]);
    assert_eq!((out.as_str(), code), ("Data Transfer Element 1 is Empty\n", 1));
    let (_, err, code) = app("Bacula", &["dismount", "--drive", "1"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("mounted by Amanda"), "{err}");
    // rsmd itself refuses what is not the partition's: Bacula mounting Amanda's cartridge, or into Amanda's drive.
    let (_, err, code) = app("Bacula", &["mount", "ABC010L6"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("not in partition bacula"), "{err}");
    let (_, err, code) = app("Bacula", &["mount", "ABC002L6", "--drive", "2"]);
    assert_eq!(code, 5, "{err}");
    // A Bacula load into the shared drive waits in rsmd's queue while Amanda holds it, and goes on once she unloads.
    let socket = d.socket.to_str().unwrap();
    let mut watch =
        rsm_command(&["--socket", socket, "watch"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let watched = lines(watch.stdout.take().unwrap());
    let watch_err = lines(watch.stderr.take().unwrap());
    wait_line(&watch_err, |l| l.starts_with("rsm: watching rsmd at "));
    let load = rsm_command(&[
        "--socket",
        socket,
        "--application",
        "Bacula",
        "changer",
        "rsmd:test/bacula",
        "load",
        "2",
        "/dev/nst1",
        "1",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_line(&watched, |l| l.starts_with("insert request ") && l.contains("ABC002L6"));
    let (out, _, code) = app("Amanda", &["mtx", "-f", "rsmd:test/amanda", "unload", "1", "0"]);
    assert_eq!((out.as_str(), code), ("Unloading drive 0 into Storage Element 1...done\n", 0));
    let loaded = load.wait_with_output().unwrap();
    assert_eq!(
        (text(&loaded.stdout).as_str(), loaded.status.code()),
        ("Loading media from Storage Element 2 into drive 1...done\n", Some(0))
    );
    watch.kill().unwrap();
    let _ = watch.wait();
    assert_eq!(app("Bacula", &["changer", "rsmd:test/bacula", "loaded", "0", "/dev/nst1", "1"]).0, "2\n");
    assert_eq!(app("Amanda", &["changer", "rsmd:test/amanda", "loaded", "0", "/dev/nst1", "0"]).0, "0\n");
    assert_eq!(app("Bacula", &["changer", "rsmd:test/bacula", "unload", "2", "/dev/nst1", "1"]).2, 0);
    assert!(app("Amanda", &["changer", "rsmd:test/amanda", "list"]).0.starts_with("1:ABC009L6\n"));
    let (_, err, code) = app("Amanda", &["mtx", "-f", "rsmd:test/nope", "status"]);
    assert!(code == 1 && err.contains("rsmd:test/nope"), "{err}");
}

/// Issue 14: a partition that owns a media pool sees the pool's cartridges wherever they sit, numbered by home slot;
/// a cartridge moved into the pool joins it, and rsmd refuses the application anything outside the pool.
#[test]
fn issue_14_a_partition_owns_a_pool() {
    let dir = tempfile::tempdir().unwrap();
    let v = Vlib::default_fast(&dir.path().join("vlib"));
    let parts = "[[library.partition]]\nname = \"bacula\"\napplication = \"Bacula\"\npool = \"Bacula\\\\Full\"\n\
                 drives = [0, 1]\n[media.prefixes]\n\"ABC01\" = \"Bacula\\\\Full\"\n";
    let config = format!("administrators = []\n{}", vlib_config(&v.dir, parts));
    let mut d = Daemon::start(&dir.path().join("rsmd"), &config);
    d.wait_ready(1);
    let app = |application: &str, args: &[&str]| rsm_app(&d, application, args);
    let changer = |args: &[&str]| {
        let mut all = vec!["changer", "rsmd:test/bacula"];
        all.extend(args);
        app("Bacula", &all)
    };
    // The prefix rule put ABC010..ABC016 (slots 10-16) into Bacula\Full: the partition's slots 1..7.
    assert_eq!(changer(&["slots"]).0, "7\n");
    let list: String = (10..=16).enumerate().map(|(i, n)| format!("{}:ABC{n:03}L6\n", i + 1)).collect();
    assert_eq!(changer(&["list"]).0, list);
    let (_, err, code) = app("Bacula", &["mount", "ABC003L6"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("not in pool Bacula\\Full of partition bacula"), "{err}");
    // The administrator moves ABC003L6 (slot 3) into the pool: it becomes the partition's slot 1.
    let (out, err, code) = app("admin", &["pool", "move", "ABC003L6", "Bacula\\Full"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(changer(&["slots"]).0, "8\n");
    assert!(changer(&["list"]).0.starts_with("1:ABC003L6\n2:ABC010L6\n"), "{}", changer(&["list"]).0);
    // Loaded, it keeps its number (its home slot); the mtx view numbers the source among the partition's slots.
    assert_eq!(changer(&["load", "1", "/dev/nst0", "0"]).2, 0);
    assert_eq!(changer(&["loaded", "0", "/dev/nst0", "0"]).0, "1\n");
    let (status, _, _) = app("Bacula", &["mtx", "-f", "rsmd:test/bacula", "status"]);
    assert!(
        status.contains("Data Transfer Element 0:Full (Storage Element 1 Loaded):VolumeTag = ABC003L6"),
        "{status}"
    );
    assert_eq!(status.lines().filter(|l| l.starts_with("      Storage Element ")).count(), 8, "{status}");
    assert_eq!(changer(&["unload", "1", "/dev/nst0", "0"]).2, 0);
    // Back to Free, it leaves the partition.
    assert_eq!(app("admin", &["pool", "move", "ABC003L6", "Free"]).2, 0);
    assert_eq!(changer(&["list"]).0, list);
}
