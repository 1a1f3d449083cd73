//! Issue 17: remote sessions through ssh, against a real OpenSSH server started by the test on 127.0.0.1 (an
//! unprivileged port, a host key and user keys made for the test). Each user key's `authorized_keys` line forces
//! the command the README recommends (`command="rsm bridge",restrict`), with this build's rsm and the test
//! daemon's socket; the client reaches it as `rsm --host ALIAS`, ssh configured by `$RSM_SSH` (`ssh -F FILE`).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::util::sshd::{sshd, Sshd};
use crate::util::{held_daemon, release_load, rsm_bin, vlib_config, Daemon, Vlib};

fn remote_rsm(s: &Sshd, args: &[&str]) -> Output {
    Command::new(rsm_bin())
        .args(args)
        .env("RSM_SSH", &s.ssh)
        .env_remove("RSMD_SOCKET")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn local_rsm(d: &Daemon, args: &[&str]) -> Output {
    Command::new(rsm_bin()).arg("--socket").arg(&d.socket).args(args).stdin(Stdio::null()).output().unwrap()
}

/// The daemon's library requests (their details), asked locally.
fn local_requests(d: &Daemon) -> Vec<serde_json::Value> {
    let out = local_rsm(d, &["--json", "view", "lib_request"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().iter().map(|r| r["details"]["lib_request"].clone()).collect()
}

/// Polls `probe` until it finds something (at most 60 s).
fn wait_for<T>(mut probe: impl FnMut() -> Option<T>) -> T {
    for _ in 0..3000 {
        if let Some(t) = probe() {
            return t;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("not reached in 60 s");
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Issue 17: `rsm --host` reaches another host's rsmd through ssh: a mount and dismount as the ssh user, every
/// OpenSession error to the letter, and python's varlink client over the same bridge.
#[test]
fn remote_sessions_over_ssh() {
    let dir = tempfile::tempdir().unwrap();
    // Robot and drive times at a fifth: a mount takes long enough to lose its ssh connection in the middle.
    let mut c = vlib::Config::default_library();
    c.dvcid = true;
    c.time_scale = 0.2;
    let v = Vlib::start(&dir.path().join("vlib"), c);
    let mut d = Daemon::start(&dir.path().join("rsmd"), &vlib_config(&v.dir, ""));
    d.wait_ready(1);
    let Some(s) = sshd(&d.socket) else { return };
    // version and status of the remote daemon.
    let out = remote_rsm(&s, &["--host", "rsmdtest", "version"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("ssh:rsmdtest"), "{}", text(&out.stdout));
    // A mount and a dismount as the remote user: the device nodes are the library host's.
    let out = remote_rsm(&s, &["--host", "rsmdtest", "--application", "remote", "mount", "ABC003L6", "--drive", "1"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("ABC003L6"), "{}", text(&out.stdout));
    // The nodes are on the library's host, and the reply says which host that is.
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert!(text(&out.stdout).contains(&format!("on host {host}")), "{}", text(&out.stdout));
    let out = remote_rsm(&s, &["--host", "rsmdtest", "--json", "--application", "remote", "dismount", "ABC003L6"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let out = remote_rsm(
        &s,
        &["--host", "rsmdtest", "--json", "--application", "remote", "mount", "ABC003L6", "--drive", "1"],
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["host"], host.as_str(), "{reply}");
    assert!(reply["device"].as_str().is_some_and(|d| d.starts_with('/')), "{reply}");
    let status = remote_rsm(&s, &["--host", "rsmdtest", "--json", "view", "drive"]);
    let drives: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let drive1 = &drives.as_array().unwrap()[1]["details"]["drive"];
    assert_eq!(drive1["barcode"], "ABC003L6");
    let by = drive1["mounted_by"].as_str().unwrap();
    assert!(by.starts_with("remote (uid "), "the ssh user's application and uid: {by}");
    let out = remote_rsm(&s, &["--host", "rsmdtest", "--application", "remote", "dismount", "ABC003L6"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    // The requests record where the remote client is.
    let requests = local_requests(&d);
    let media_id = |barcode: &str| {
        let info: serde_json::Value =
            serde_json::from_slice(&local_rsm(&d, &["--json", "info", barcode]).stdout).unwrap();
        info["id"].as_str().unwrap().to_owned()
    };
    let abc003 = media_id("ABC003L6");
    let mount = requests
        .iter()
        .find(|r| r["media"] == abc003.as_str() && r["operation"] == "mount")
        .unwrap_or_else(|| panic!("{requests:?}"));
    assert_eq!(mount["client"], "ssh from 127.0.0.1", "{mount}");
    // A mount whose ssh connection is killed in the middle: the session ends as a closed local connection does,
    // the mount ends (cancelled, or complete and still the remote user's), nothing is left in between.
    let abc004 = media_id("ABC004L6");
    let mut child = Command::new(rsm_bin())
        .args(["--host", "rsmdtest", "--application", "remote", "mount", "ABC004L6", "--drive", "2"])
        .env("RSM_SSH", &s.ssh)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = wait_for(|| {
        let all = local_requests(&d);

        all.into_iter().find(|r| r["media"] == abc004.as_str() && r["state"] == "in_progress")
    });
    assert_eq!(started["client"], "ssh from 127.0.0.1");
    let ssh = std::fs::read_to_string(format!("/proc/{}/task/{}/children", child.id(), child.id())).unwrap();
    for pid in ssh.split_whitespace() {
        let pid = nix::unistd::Pid::from_raw(pid.parse().unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the client saw its connection go");
    // The request ends (finished requests of an ended session leave the table; the drive tells how it ended).
    wait_for(|| {
        let active = local_requests(&d).into_iter().any(|r| {
            r["media"] == abc004.as_str()
                && ["queued", "in_progress", "waiting"].contains(&r["state"].as_str().unwrap())
        });
        (!active).then_some(())
    });
    let drives =
        serde_json::from_slice::<serde_json::Value>(&local_rsm(&d, &["--json", "view", "drive"]).stdout).unwrap();
    let drive2 = &drives[2]["details"]["drive"];
    if drive2["barcode"] == "ABC004L6" {
        // Complete before the session ended: it stays the remote user's mount, to be dismounted by them.
        assert!(drive2["mounted_by"].as_str().unwrap().starts_with("remote (uid "), "{drive2}");
        let out = remote_rsm(&s, &["--host", "rsmdtest", "--application", "remote", "dismount", "ABC004L6"]);
        assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    } else {
        assert!(drive2["barcode"].is_null(), "cancelled: the cartridge went home ({drive2})");
    }
    // The mtx front through ssh: the remote library as mtx prints it.
    let out = remote_rsm(&s, &["--host", "rsmdtest", "mtx", "-f", "rsmd:test", "status"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("Storage Element 1:Full :VolumeTag=ABC001L6"), "{}", text(&out.stdout));
    // OpenSession's errors.
    let failure = |host: &str| {
        let out = remote_rsm(&s, &["--host", host, "--json", "status"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
        (v["error"]["name"].as_str().unwrap_or("").to_owned(), v["error"]["message"].as_str().unwrap_or("").to_owned())
    };
    let (name, message) = failure("no-such-host.invalid");
    assert_eq!(name, "InvalidComputerName", "{message}");
    let (name, message) = failure("127.0.0.2:1");
    assert_eq!(name, "NotConnected", "{message}");
    assert!(message.contains("refused"), "ssh's reason: {message}");
    let (name, message) = failure("norsm");
    assert_eq!(name, "NotConnected", "{message}");
    assert!(message.contains("no rsmd bridge"), "{message}");
    let (name, message) = failure("nodaemon");
    assert_eq!(name, "NotConnected", "{message}");
    assert!(message.contains("rsmd is not running"), "{message}");
    // The local host by any of its names still connects directly (no ssh: the local socket is used).
    let out = Command::new(rsm_bin())
        .args(["--socket", d.socket.to_str().unwrap(), "--host", "localhost", "version"])
        .env("RSM_SSH", "/nonexistent/ssh")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    // Python's varlink client, unmodified, over the same bridge.
    let python = std::env::var("RSMD_PYTHON").unwrap_or_else(|_| {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
        if Path::new(venv).exists() {
            venv.into()
        } else {
            "python3".into()
        }
    });
    let script = r#"
import sys, varlink
client = varlink.Client.new_with_bridge(sys.argv[1:])
with client.open("io.rsmd.Ntms") as ntms:
    s = ntms.OpenSession(None, "python", 0, None)
    objs = ntms.EnumerateObjects(s["session"], None, "drive", None, None)
    print("drives", len(objs["objects"]))
    # A client newer than the daemon: NoInterfaces, through the bridge as locally.
    try:
        ntms.OpenSession(None, "python", 0, 99)
    except varlink.VarlinkError as e:
        print("newer", e.error())
"#;
    let mut argv: Vec<String> = s.ssh.split_whitespace().map(str::to_owned).collect();
    argv.extend(["rsmdtest", "rsm", "bridge"].map(str::to_owned));
    let out = Command::new(&python).arg("-c").arg(script).args(&argv).output().unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "drives 4\nnewer io.rsmd.Ntms.NoInterfaces");
    // And its command line, as the issue writes it: `varlink --bridge "ssh HOST rsm bridge" call …`.
    let bridge = format!("{} rsmdtest rsm bridge", s.ssh);
    let cli = |call: &[&str]| {
        let out = Command::new(&python).args(["-m", "varlink.cli", "--bridge", &bridge, "call"]).args(call).output();
        let out = out.unwrap();
        assert!(out.status.success(), "{call:?}: {}{}", text(&out.stdout), text(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(cli(&["org.varlink.service.GetInfo", "{}"])["vendor"], "rsmd");
    let opened = cli(&["io.rsmd.Ntms.OpenSession", r#"{"application": "varlink-cli", "options": 0}"#]);
    assert!(opened["session"].is_string(), "{opened}");
}

/// Issue 17: a remote daemon still loading answers NotReady through the bridge, and a client that asks to wait
/// (`rsm --wait`) retries over new ssh connections until it is ready.
#[test]
fn a_loading_remote_daemon_is_not_ready_and_the_wait_crosses_the_bridge() {
    let dir = tempfile::tempdir().unwrap();
    let v = Vlib::default_fast(&dir.path().join("vlib"));
    let (d, gate) = held_daemon(&dir.path().join("rsmd"), &v.dir);
    let Some(s) = sshd(&d.socket) else { return };
    let out = remote_rsm(&s, &["--host", "rsmdtest", "--json", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(v["error"]["name"], "NotReady", "{v}");
    // The waiting client: its ssh command notes each attempt, so the test knows it was refused at least once
    // (a second attempt) before the daemon is let finish loading.
    let attempts = dir.path().join("attempts");
    let wrapper = dir.path().join("ssh");
    std::fs::write(&wrapper, format!("#!/bin/sh\necho x >> {}\nexec {} \"$@\"\n", attempts.display(), s.ssh)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let waiter = Command::new(rsm_bin())
        .args(["--host", "rsmdtest", "--wait", "60", "--json", "status"])
        .env("RSM_SSH", &wrapper)
        .env_remove("RSMD_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(|| (std::fs::read_to_string(&attempts).unwrap_or_default().lines().count() >= 2).then_some(()));
    release_load(&gate);
    let out = waiter.wait_with_output().unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.get("error").is_none(), "{v}");
}

/// Issue 17: identity on the library host is the ssh user's: a remote user without rights is refused what another
/// user owns (AccessDenied), and what it mounts is its own (its uid). The second user is a throwaway system user
/// with a shell (`nobody`'s nologin cannot run the bridge), made by the test and removed after it.
#[test]
fn a_remote_user_is_who_ssh_says() {
    use crate::util::sshd::{OTHER_ALIAS, OTHER_USER};
    use std::os::unix::fs::PermissionsExt;
    let runnable = Path::new(rsm_bin())
        .ancestors()
        .skip(1)
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if !nix::unistd::geteuid().is_root() || !runnable || !Path::new("/usr/sbin/useradd").exists() {
        println!("skipped: needs root, useradd and binaries others may run");
        return;
    }
    let existed = nix::unistd::User::from_name(OTHER_USER).unwrap().is_some();
    if !existed {
        let ok = Command::new("useradd")
            .args(["--system", "--shell", "/bin/sh", "--no-create-home", "--home-dir", "/nonexistent", OTHER_USER])
            .status()
            .unwrap();
        assert!(ok.success(), "useradd {OTHER_USER}");
    }
    // A system account's password is locked ("!"); without PAM sshd refuses locked accounts: no password at all.
    assert!(Command::new("usermod").args(["-p", "*", OTHER_USER]).status().unwrap().success());
    let other = nix::unistd::User::from_name(OTHER_USER).unwrap().unwrap().uid.as_raw();
    let dir = tempfile::tempdir().unwrap();
    let v = Vlib::default_fast(&dir.path().join("vlib"));
    // Nobody administers (root would be exempt); every local user may connect.
    let config = format!("administrators = []\nsocket_mode = 0o666\n{}", vlib_config(&v.dir, ""));
    let mut d = Daemon::start(&dir.path().join("rsmd"), &config);
    d.wait_ready(1);
    for p in [dir.path().to_owned(), dir.path().join("rsmd")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let Some(s) = sshd(&d.socket) else { return };
    // Root's Bacula mounts a tape locally.
    let out = local_rsm(&d, &["--application", "Bacula", "mount", "ABC005L6", "--drive", "0"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    // The remote user may not take it out of the drive.
    let out = remote_rsm(&s, &["--host", OTHER_ALIAS, "--application", "Bacula", "dismount", "ABC005L6"]);
    assert_eq!(out.status.code(), Some(5), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stderr).contains("AccessDenied"), "{}", text(&out.stderr));
    // What it mounts is its own: the daemon saw the ssh user's uid.
    let out = remote_rsm(&s, &["--host", OTHER_ALIAS, "--application", "Amanda", "mount", "ABC006L6", "--drive", "1"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let drives =
        serde_json::from_slice::<serde_json::Value>(&local_rsm(&d, &["--json", "view", "drive"]).stdout).unwrap();
    assert_eq!(drives[1]["details"]["drive"]["mounted_by"], format!("Amanda (uid {other})"));
    // And root's Bacula, not an administrator here, may not dismount it either: ownership goes both ways.
    let out = local_rsm(&d, &["--application", "Bacula", "dismount", "ABC006L6"]);
    assert_eq!(out.status.code(), Some(5), "{}{}", text(&out.stdout), text(&out.stderr));
    let out = remote_rsm(&s, &["--host", OTHER_ALIAS, "--application", "Amanda", "dismount", "ABC006L6"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    drop(s);
    if !existed {
        let _ = Command::new("userdel").arg(OTHER_USER).status();
    }
}
