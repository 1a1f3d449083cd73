//! Issue 15: the `rsm` command line as an administrator meets it, run as the real binary against the real `rsmd`
//! (on vlib): errors that say what went wrong with distinct exit statuses, JSON for every result and error, output into a closed pipe.
//!
//! Synchronisation is on events only: sd_notify messages, notifications, lines the child prints, its exit.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;

use serde_json::Value;

use rsmd::client::Session;
use rsmd::proto::types::MountFlags;

use crate::util::{rsm_bin, vlib_config, Daemon, Vlib, WAIT};

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

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
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

/// Whether `uid` can run the binaries under test (every directory on their path open to others).
fn runnable_by_others(bin: &str) -> bool {
    Path::new(bin).ancestors().skip(1).all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
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
