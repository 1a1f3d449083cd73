//! Issue 4 acceptance: the real rsmd against vlib: ready, inventory matches, kill -9 loses nothing acknowledged,
//! UNIT ATTENTION triggers a rescan, SIGTERM exits cleanly.

use rsmd::client::Session;
use rsmd::proto::types::{InventoryMode, ObjectDetails, ObjectType};
use vlib::Fault;

use crate::util::{vlib_config, Daemon, Stderr, Vlib};

/// (address, barcode) of every full storage/IE slot as rsmd reports it.
fn rsmd_slots(s: &Session) -> Vec<(u32, Option<String>)> {
    let mut out = Vec::new();
    for t in [ObjectType::StorageSlot, ObjectType::IePort] {
        for o in s.enumerate(None, t).unwrap() {
            match o.details {
                ObjectDetails::StorageSlot(d) => out.push((d.element_address, d.barcode.filter(|_| d.full))),
                ObjectDetails::IePort(d) => out.push((d.element_address, d.barcode.filter(|_| d.full))),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

fn vlib_slots(v: &Vlib) -> Vec<(u32, Option<String>)> {
    let mut out: Vec<_> = v
        .server
        .snapshot()
        .elements
        .into_iter()
        .filter(|e| matches!(e.kind, vlib::ElementType::Storage | vlib::ElementType::ImportExport))
        .map(|e| (u32::from(e.address), e.barcode.filter(|_| e.full)))
        .collect();
    out.sort();
    out
}

#[test]
fn becomes_ready_and_serves_the_emulators_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let v = Vlib::default_fast(&dir.path().join("vlib"));
    let mut d = Daemon::start(&dir.path().join("rsmd"), &vlib_config(&v.dir, ""));
    d.wait_ready(1);
    let s = Session::open_at(&d.socket, None, Some("test"), 0).unwrap();
    assert_eq!(rsmd_slots(&s), vlib_slots(&v));
    let drives = s.enumerate(None, ObjectType::Drive).unwrap();
    assert_eq!(drives.len(), 4);
    for (i, o) in drives.iter().enumerate() {
        let ObjectDetails::Drive(dd) = &o.details else { panic!() };
        assert_eq!(dd.serial.as_deref(), Some(format!("VDRV{i:04}").as_str()), "DVCID mapped drive {i}");
        assert!(dd.devices.sg.as_deref().is_some_and(|p| p.ends_with(&format!("drive{i}.sock"))));
    }
    // rsm --mtx prints the same library as mtx would.
    let out = std::process::Command::new(crate::util::rsm_bin())
        .args(["--socket", d.socket.to_str().unwrap(), "status", "--mtx"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("4 Drives, 22 Slots ( 2 Import/Export )"), "{text}");
    assert!(text.contains("Storage Element 20:Full :VolumeTag=CLN001L1"), "{text}");
}

#[test]
fn unit_attention_triggers_a_rescan_that_sees_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let v = Vlib::default_fast(&dir.path().join("vlib"));
    let mut d = Daemon::start(&dir.path().join("rsmd"), &vlib_config(&v.dir, "heartbeat_ms = 200"));
    d.wait_ready(1);
    let s = Session::open_at(&d.socket, None, None, 0).unwrap();
    let notes = s.notifications(Some(ObjectType::PhysicalMedia)).unwrap();
    // An operator puts a cartridge in the mail slot: the changer raises UNIT ATTENTION 28/00.
    v.server.inject(Fault::ImportCartridge { barcode: "NEW001L6".into() }).unwrap();
    for n in notes {
        let n = n.unwrap();
        let o = s.get_object_information(&n.object).unwrap();
        if o.name == "NEW001L6" {
            break;
        }
    }
    assert_eq!(rsmd_slots(&s), vlib_slots(&v));
    assert!(d.statuses.iter().all(|m| !m.contains(" 1 offline")), "{:?}", d.statuses);
}

#[test]
fn kill_9_loses_nothing_acknowledged_and_a_restart_serves_the_cache_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let vdir = dir.path().join("vlib");
    let root = dir.path().join("rsmd");
    let v = Vlib::default_fast(&vdir);
    let mut d = Daemon::start(&root, &vlib_config(&vdir, ""));
    d.wait_ready(1);
    let s = Session::open_at(&d.socket, None, None, 0).unwrap();
    let lib = s.enumerate(None, ObjectType::Library).unwrap().remove(0).id;
    v.server.inject(Fault::ImportCartridge { barcode: "ACK001L6".into() }).unwrap();
    // An explicit inventory: its completion (a notification the client sees) is the acknowledgement.
    let notes = s.notifications(Some(ObjectType::LibRequest)).unwrap();
    let request = s.inventory(&lib, InventoryMode::Default).unwrap();
    for n in notes {
        let n = n.unwrap();
        if n.object == request && s.get_object_information(&request).unwrap().state == "complete" {
            break;
        }
    }
    let acknowledged = rsmd_slots(&s);
    assert!(acknowledged.iter().any(|(_, b)| b.as_deref() == Some("ACK001L6")));
    drop(s);
    d.kill9();
    // The library is gone too: the restarted daemon can only serve what it had on disk.
    v.server.stop();
    let (mut d, lines) = Daemon::start_full(&root, &vlib_config(&vdir, ""), &[], &[], Stderr::Capture);
    d.wait_notify(|m| m == "READY=1");
    // Read by the helper process (whose memory leaves with it), not by the fallback in the daemon.
    let lines = lines.unwrap();
    let read = std::iter::from_fn(|| lines.recv_timeout(std::time::Duration::from_secs(30)).ok())
        .find(|l| l.contains("database read by") || l.contains("helper process failed"));
    assert!(read.as_deref().is_some_and(|l| l.contains("database read by a helper process")), "{read:?}");
    let s = Session::open_at(&d.socket, None, None, 0).unwrap();
    assert_eq!(rsmd_slots(&s), acknowledged);
    let l = s.get_object_information(&lib).unwrap();
    assert_eq!(l.state, "offline");
    assert!(!l.enabled);
}

/// Issue 15: a second rsmd on the same state directory (another socket) accepted clients, answering NotReady, for
/// about 5 s before failing on the database's lock. It fails at once now, before it listens.
#[test]
fn a_second_daemon_on_the_same_state_fails_before_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let v = Vlib::default_fast(&dir.path().join("vlib"));
    let mut d = Daemon::start(&dir.path().join("rsmd"), &vlib_config(&v.dir, ""));
    d.wait_ready(1);
    let other = dir.path().join("other.sock");
    let out = std::process::Command::new(crate::util::rsmd_bin())
        .args(["--config", d.config.to_str().unwrap(), "--state-dir", d.state.to_str().unwrap()])
        .args(["--socket", other.to_str().unwrap()])
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Another rsmd uses the state directory"), "{err}");
    assert!(!err.contains("listening on"), "{err}");
    assert!(!other.exists(), "it never listened");
    // The first one is unharmed.
    rsmd::client::Session::open_at(&d.socket, None, None, 0).unwrap();
}

#[test]
fn sigterm_exits_cleanly_and_removes_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let v = Vlib::default_fast(&dir.path().join("vlib"));
    let mut d = Daemon::start(&dir.path().join("rsmd"), &vlib_config(&v.dir, ""));
    d.wait_ready(1);
    let _s = Session::open_at(&d.socket, None, None, 0).unwrap();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_notify(|m| m == "STOPPING=1");
    let status = d.wait_exit();
    assert!(status.success(), "{status:?}");
    assert!(!d.socket.exists());
}

#[test]
fn device_that_vanishes_takes_its_library_offline_and_the_daemon_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let v = Vlib::default_fast(&dir.path().join("vlib"));
    let mut d = Daemon::start(&dir.path().join("rsmd"), &vlib_config(&v.dir, "heartbeat_ms = 200"));
    d.wait_ready(1);
    v.server.inject(Fault::Disappear { device: vlib::Device::Changer }).unwrap();
    d.wait_notify(|m| m.contains("1 offline"));
    let s = Session::open_at(&d.socket, None, None, 0).unwrap();
    let l = s.enumerate(None, ObjectType::Library).unwrap().remove(0);
    assert_eq!(l.state, "offline");
    // The stale inventory is still served.
    assert_eq!(rsmd_slots(&s).len(), 22);
}

/// Issue 15: SIGHUP said "reloaded" but a renamed or removed library kept its old name and stayed served. Now a
/// rename applies at once, a library taken out of the configuration is no longer served (its devices closed, its
/// inventory kept offline), and putting it back serves it again.
#[test]
fn sighup_renames_removes_and_adds_libraries() {
    use nix::sys::signal::Signal;
    use rsmd::proto::types::{MountFlags, ObjectInfo};
    let dir = tempfile::tempdir().unwrap();
    let v = Vlib::default_fast(&dir.path().join("vlib"));
    let mut d = Daemon::start(&dir.path().join("rsmd"), &vlib_config(&v.dir, ""));
    d.wait_ready(1);
    let s = Session::open_at(&d.socket, None, None, 0).unwrap();
    let library = |s: &Session| -> ObjectInfo { s.enumerate(None, ObjectType::Library).unwrap().remove(0) };
    let notes = s.notifications(Some(ObjectType::Library)).unwrap();
    let mut notes = notes.map(|n| n.unwrap());
    let mut wait_for = |s: &Session, done: &dyn Fn(&ObjectInfo) -> bool| {
        while !done(&library(s)) {
            notes.next().expect("a library notification");
        }
    };
    std::fs::write(&d.config, vlib_config(&v.dir, "").replace("name = \"test\"", "name = \"renamed\"")).unwrap();
    d.signal(Signal::SIGHUP);
    wait_for(&s, &|l| l.name == "renamed");
    // Out of the configuration: no longer served.
    std::fs::write(&d.config, "discover = false\n").unwrap();
    d.signal(Signal::SIGHUP);
    wait_for(&s, &|l| l.state == "offline");
    let flags = MountFlags::default();
    let e = s.mount(&["ABC001L6"], None, flags, 0, None).unwrap_err();
    assert!(
        matches!(e, rsmd::proto::NtmsError::MediaOffline { .. } | rsmd::proto::NtmsError::LibraryOffline { .. }),
        "{e:?}"
    );
    // Back in: served again, under its name.
    std::fs::write(&d.config, vlib_config(&v.dir, "")).unwrap();
    d.signal(Signal::SIGHUP);
    wait_for(&s, &|l| l.state == "ready" && l.name == "test");
    s.mount(&["ABC001L6"], None, flags, 0, None).unwrap();
}

/// Issue 15: a configured changer that does not exist was not reported (no log line, `rsm status` said "No
/// libraries."). It is shown as a library that is not present, with the reason, and logged.
#[test]
fn a_configured_changer_that_is_not_there_is_shown_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[[library]]\nname = \"main\"\nchanger = \"/dev/rsmd-test-no-such-sg\"\n";
    let (mut d, lines) = Daemon::start_full(&dir.path().join("rsmd"), config, &[], &[], crate::util::Stderr::Capture);
    let lines = lines.unwrap();
    d.wait_notify(|m| m == "READY=1");
    loop {
        let l = lines.recv_timeout(crate::util::WAIT).expect("the log says why");
        if l.contains("library main is not present: /dev/rsmd-test-no-such-sg does not exist") {
            break;
        }
    }
    let s = Session::open_at(&d.socket, None, None, 0).unwrap();
    let libs = s.enumerate(None, ObjectType::Library).unwrap();
    assert_eq!(libs.len(), 1, "{libs:?}");
    assert_eq!((libs[0].name.as_str(), libs[0].state.as_str()), ("main", "not_present"));
    assert!(libs[0].description.contains("does not exist"));
    let out = std::process::Command::new(crate::util::rsm_bin())
        .args(["--socket", d.socket.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("main") && text.contains("not_present") && text.contains("does not exist"), "{text}");
}

/// Issue 12: the socket rsmd binds itself gets the configured group and mode, so that group's members connect and
/// other users do not (connecting needs write permission on the socket).
#[test]
fn the_socket_gets_the_configured_group_and_mode() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let v = Vlib::default_fast(&dir.path().join("vlib"));
    // nogroup (65534) exists on Debian; any gid works for chown as root, a name must exist.
    let config = format!("socket_group = 65534\nsocket_mode = 0o660\n{}", vlib_config(&v.dir, ""));
    let mut d = Daemon::start(&dir.path().join("rsmd"), &config);
    d.wait_ready(1);
    let m = std::fs::metadata(&d.socket).unwrap();
    assert_eq!((m.gid(), m.permissions().mode() & 0o777), (65534, 0o660));
    if nix::unistd::geteuid().is_root() {
        // A user outside the group (and not the owner) cannot connect; one in the group can.
        for p in [dir.path().to_owned(), dir.path().join("rsmd")] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let try_as = |uid: u32, gid: u32| {
            use std::os::unix::process::CommandExt;
            let out = std::process::Command::new(crate::util::rsm_bin())
                .args(["--socket", d.socket.to_str().unwrap(), "status"])
                .uid(uid)
                .gid(gid)
                .output()
                .unwrap();
            (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
        };
        let (code, err) = try_as(65534, 1);
        assert_eq!(code, Some(5), "outside the group: {err}");
        assert!(err.contains("may not open rsmd's socket") && err.contains("group nogroup"), "{err}");
        let (code, err) = try_as(65534, 65534);
        assert_eq!(code, Some(0), "in the group: {err}");
    }
    // A group name that does not exist stops the daemon with a clear error.
    let bad = format!("socket_group = \"no-such-group-rsmd\"\n{}", vlib_config(&v.dir, ""));
    let out = std::process::Command::new(crate::util::rsmd_bin())
        .args(["--config"])
        .arg({
            let p = dir.path().join("bad.toml");
            std::fs::write(&p, bad).unwrap();
            p
        })
        .args(["--socket", dir.path().join("bad.sock").to_str().unwrap()])
        .args(["--state-dir", dir.path().join("bad-state").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-group-rsmd") && err.contains("no such group"), "{err}");
}

/// Issue 15, item 8: objects carry Unix-ms creation and modification times (they were all 0): the computer since the
/// daemon started, a library (and its changer and elements) since first seen, a cartridge since first seen.
#[test]
fn objects_carry_creation_and_modification_times() {
    let dir = tempfile::tempdir().unwrap();
    let v = Vlib::default_fast(&dir.path().join("vlib"));
    let mut d = Daemon::start(&dir.path().join("rsmd"), &vlib_config(&v.dir, ""));
    d.wait_ready(1);
    let s = Session::open_at(&d.socket, None, None, 0).unwrap();
    // The wall clock is what the times are compared with.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let now = u64::try_from(now).unwrap();
    let recent = |t: u64| t > now - 600_000 && t <= now + 1_000;
    for t in [
        ObjectType::Computer,
        ObjectType::Library,
        ObjectType::Changer,
        ObjectType::Drive,
        ObjectType::PhysicalMedia,
        ObjectType::MediaPool,
    ] {
        let objects = s.enumerate(None, t).unwrap();
        assert!(!objects.is_empty(), "{t:?}");
        for o in objects {
            assert!(
                recent(o.created) && recent(o.modified) && o.modified >= o.created,
                "{t:?} {}: {} {}",
                o.name,
                o.created,
                o.modified
            );
        }
    }
}
