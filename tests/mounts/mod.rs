//! Issue 6: mount and dismount through the real daemon, with vlib's realistic (scaled) timings and faults.

use std::time::Duration;

use rsmd::client::Session;
use rsmd::proto::types::{MountFlags, ObjectDetails, ObjectType};
use rsmd::proto::{DismountTarget, NtmsError};
use vlib::Fault;

use crate::util::{vlib_config, Daemon, Vlib};

fn library(dir: &std::path::Path, scale: f64) -> (Vlib, Daemon) {
    library_with(dir, scale, "")
}

/// The default vlib library with `top` as the configuration's top-level keys.
fn library_with(dir: &std::path::Path, scale: f64, top: &str) -> (Vlib, Daemon) {
    library_full(dir, scale, top, "")
}

/// The same with `library` added to the library's section.
fn library_full(dir: &std::path::Path, scale: f64, top: &str, library: &str) -> (Vlib, Daemon) {
    let v = emulator(dir, scale, |_| {});
    let mut d = Daemon::start(&dir.join("rsmd"), &format!("{top}\n{}", vlib_config(&v.dir, library)));
    d.wait_ready(1);
    (v, d)
}

/// Runs the `rsm` command line against `d` (its own process, so its own session).
fn rsm(d: &Daemon, args: &[&str]) -> std::process::Output {
    std::process::Command::new(crate::util::rsm_bin())
        .args(["--socket", d.socket.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap()
}

/// The default vlib library (with DVCID) at time scale `scale`, its configuration adjusted first, in `dir/vlib`.
fn emulator(dir: &std::path::Path, scale: f64, adjust: impl FnOnce(&mut vlib::Config)) -> Vlib {
    let mut c = vlib::Config::default_library();
    c.dvcid = true;
    c.time_scale = scale;
    adjust(&mut c);
    Vlib::start(&dir.join("vlib"), c)
}

/// Waits (on notifications, subscribed before the requests were made) until every request in `ids` is complete.
fn wait_complete(
    s: &Session,
    notes: impl Iterator<Item = Result<rsmd::proto::types::Notification, NtmsError>>,
    ids: &[&str],
) {
    let done = |s: &Session| ids.iter().all(|id| s.get_object_information(id).unwrap().state == "complete");
    if done(s) {
        return;
    }
    for n in notes {
        n.unwrap();
        if done(s) {
            return;
        }
    }
    panic!("the notification stream ended before {ids:?} completed");
}

fn flags() -> MountFlags {
    MountFlags { read: true, ..MountFlags::default() }
}

fn drive_holding(v: &Vlib, barcode: &str) -> Option<u16> {
    v.server
        .snapshot()
        .elements
        .iter()
        .find(|e| e.kind == vlib::ElementType::Drive && e.barcode.as_deref() == Some(barcode))
        .map(|e| e.address)
}

#[test]
fn mount_returns_a_ready_drive_with_its_nodes_and_dismount_puts_it_home() {
    let dir = tempfile::tempdir().unwrap();
    let (v, d) = library(dir.path(), 0.01);
    let s = Session::open_at(&d.socket, None, Some("bacula"), 0).unwrap();
    let reply = s.mount(&["ABC003L6"], None, flags(), 0, None).unwrap();
    let device = reply.device.clone().unwrap();
    assert!(device.ends_with(".sock"), "{device}");
    let nodes = reply.devices.clone().unwrap();
    assert_eq!(nodes.sg.as_deref(), Some(device.as_str()), "vlib drives have an sg-like socket and no nst");
    let drive = s.get_object_information(reply.drive.as_deref().unwrap()).unwrap();
    let ObjectDetails::Drive(dd) = &drive.details else { panic!() };
    assert_eq!(dd.barcode.as_deref(), Some("ABC003L6"));
    // The owner (application and user), never the session's handle (issue 16: handles must not leak).
    let uid = nix::unistd::getuid();
    assert_eq!(dd.mounted_by, Some(format!("bacula (uid {uid})")));
    assert!(!format!("{drive:?}").contains(s.id()), "no session handle in the drive object");
    assert_eq!(dd.mount_count, 1, "issue 15: a drive's mount count stayed 0");
    assert_eq!(dd.devices.sg.as_deref(), Some(device.as_str()));
    // The emulator agrees: the tape is in that drive, threaded and ready.
    let snap = v.server.snapshot();
    assert_eq!(drive_holding(&v, "ABC003L6"), Some(u16::try_from(dd.element_address).unwrap()));
    assert!(snap
        .drives
        .iter()
        .any(|x| x.barcode.as_deref() == Some("ABC003L6") && x.status == vlib::DriveStatus::Ready));
    // Visible as a completed library request.
    let reqs = s.requests().unwrap();
    let req = reqs.iter().find(|r| r.id == reply.request).unwrap();
    assert_eq!(req.state, "complete");
    let ObjectDetails::LibRequest(rd) = &req.details else { panic!() };
    assert_eq!(rd.application.as_deref(), Some("bacula"), "requests are attributed to the application");
    s.dismount(DismountTarget::Media("ABC003L6".into()), false).unwrap();
    assert_eq!(drive_holding(&v, "ABC003L6"), None);
    let slot = v.server.snapshot().elements.into_iter().find(|e| e.address == 1002).unwrap();
    assert_eq!(slot.barcode.as_deref(), Some("ABC003L6"), "back in its home slot");
    // The same from the command line: the output names the drive as mtx counts it, its serial and its nodes.
    let rsm_ok = |args: &[&str]| {
        let out = rsm(&d, args);
        assert!(out.status.success(), "rsm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let text = rsm_ok(&["mount", "ABC005L6", "--drive", "2"]);
    assert!(text.starts_with("ABC005L6 mounted in drive 2 (VDRV0002, id "), "{text}");
    assert!(text.contains("drive2.sock") && text.contains("  sg "), "{text}");
    assert_eq!(drive_holding(&v, "ABC005L6"), Some(502));
    rsm_ok(&["dismount", "ABC005L6"]);
    assert_eq!(drive_holding(&v, "ABC005L6"), None);
}

#[test]
fn a_cartridge_is_mounted_by_one_session_and_dismounted_only_by_it() {
    let dir = tempfile::tempdir().unwrap();
    // Nobody administers this daemon: the test's user (often root) is an ordinary user here.
    let (_v, d) = library_with(dir.path(), 0.0, "administrators = []");
    let a = Session::open_at(&d.socket, None, Some("a"), 0).unwrap();
    let b = Session::open_at(&d.socket, None, Some("b"), 0).unwrap();
    a.mount(&["ABC001L6"], None, flags(), 0, None).unwrap();
    let busy = MountFlags { error_if_unavailable: true, ..flags() };
    assert!(matches!(b.mount(&["ABC001L6"], None, busy, 0, None), Err(NtmsError::MediaUnavailable { .. })));
    assert!(matches!(b.dismount(DismountTarget::Media("ABC001L6".into()), false), Err(NtmsError::AccessDenied { .. })));
    assert!(matches!(
        a.dismount(DismountTarget::Media("ABC002L6".into()), false),
        Err(NtmsError::MediaNotAvailable { .. })
    ));
    assert!(matches!(a.mount(&["NOPE01L6"], None, flags(), 0, None), Err(NtmsError::ObjectNotFound { .. })));
    assert!(matches!(a.mount(&["ABC002L6"], None, flags(), 99, None), Err(NtmsError::InvalidParameter { .. })));
    a.dismount(DismountTarget::Media("ABC001L6".into()), false).unwrap();
    // Now b may have it.
    b.mount(&["ABC001L6"], None, flags(), 0, None).unwrap();
}

#[test]
fn mounts_wait_for_a_free_drive_and_all_complete() {
    let dir = tempfile::tempdir().unwrap();
    let (v, d) = library(dir.path(), 0.01);
    let socket = d.socket.clone();
    // Six mounts for four drives, from six threads: two wait until a dismount frees a drive.
    let handles: Vec<_> = (1..=6)
        .map(|n| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let s = Session::open_at(&socket, None, Some("worker"), 0).unwrap();
                let barcode = format!("ABC{n:03}L6");
                s.mount(&[barcode.as_str()], None, flags(), 0, None).unwrap();
                s.dismount(DismountTarget::Media(barcode), false).unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let snap = v.server.snapshot();
    assert!(snap.elements.iter().filter(|e| e.kind == vlib::ElementType::Drive).all(|e| !e.full));
    assert_eq!(snap.counters.moves, 12);
}

#[test]
fn a_queued_mount_can_be_cancelled_and_a_timeout_leaves_a_known_state() {
    let dir = tempfile::tempdir().unwrap();
    // Slow robot: 8 s moves scaled to 4 s, so the second request is still queued.
    let (v, d) = library(dir.path(), 0.5);
    let s = Session::open_at(&d.socket, None, Some("t"), 0).unwrap();
    let nowait = MountFlags { nowait: true, ..flags() };
    let first = s.mount(&["ABC001L6"], None, nowait, 0, None).unwrap();
    let second = s.mount(&["ABC002L6"], None, nowait, 0, None).unwrap();
    s.cancel_request(&second.request).unwrap();
    let notes = s.notifications(Some(ObjectType::LibRequest)).unwrap();
    let state = |id: &str| s.get_object_information(id).unwrap().state;
    if state(&second.request) != "cancelled" {
        for n in notes {
            if n.unwrap().object == second.request && state(&second.request) == "cancelled" {
                break;
            }
        }
    }
    assert_eq!(state(&second.request), "cancelled");
    assert!(v.server.snapshot().elements.iter().any(|e| e.address == 1001 && e.full), "never moved");
    // A mount with a timeout shorter than the robot: fails with Timeout, and the cartridge ends up home.
    let e = s.mount(&["ABC003L6"], None, flags(), 0, Some(Duration::from_millis(100))).unwrap_err();
    assert!(matches!(e, NtmsError::Timeout { .. }), "{e:?}");
    let _ = first;
}

#[test]
fn robot_jam_drive_that_will_not_unload_and_cleaning_cartridge_fail_specifically() {
    let dir = tempfile::tempdir().unwrap();
    let (v, d) = library(dir.path(), 0.0);
    let s = Session::open_at(&d.socket, None, None, 0).unwrap();
    v.server.inject(Fault::RobotJam { next_moves: 1 }).unwrap();
    let e = s.mount(&["ABC001L6"], None, flags(), 0, None).unwrap_err();
    assert!(matches!(e, NtmsError::UnableToLoadMedium { .. }), "{e:?}");
    // The library stays usable.
    let r = s.mount(&["ABC001L6"], None, flags(), 0, None).unwrap();
    let drive = s.get_object_information(r.drive.as_deref().unwrap()).unwrap();
    let ObjectDetails::Drive(dd) = drive.details else { panic!() };
    let index = usize::try_from(dd.element_address - 500).unwrap();
    v.server.inject(Fault::DriveWontUnload { drive: index }).unwrap();
    let e = s.dismount(DismountTarget::Media("ABC001L6".into()), false).unwrap_err();
    assert!(matches!(e, NtmsError::DeviceNotAvailable { .. }), "{e:?}");
    // Issue 11: a cartridge the inventory knows is a cleaner is refused at once, without loading it (it was loaded,
    // and the mount failed 2.5 s later when the drive said so).
    let moves = v.server.snapshot().counters.moves;
    let e = s.mount(&["CLN001L1"], None, flags(), 0, None).unwrap_err();
    assert!(matches!(e, NtmsError::InvalidMedia { .. }), "{e:?}");
    assert_eq!(v.server.snapshot().counters.moves, moves, "no robot move");
    assert_eq!(drive_holding(&v, "CLN001L1"), None);
    // Other mounts go on.
    s.mount(&["ABC002L6"], None, flags(), 0, None).unwrap();
}

#[test]
fn the_changer_vanishing_mid_move_fails_the_mount_and_the_daemon_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let (v, d) = library(dir.path(), 0.2);
    let s = Session::open_at(&d.socket, None, None, 0).unwrap();
    let nowait = MountFlags { nowait: true, ..flags() };
    let r = s.mount(&["ABC001L6"], None, nowait, 0, None).unwrap();
    let notes = s.notifications(Some(ObjectType::LibRequest)).unwrap();
    v.server.inject(Fault::Disappear { device: vlib::Device::Changer }).unwrap();
    for n in notes {
        let n = n.unwrap();
        if n.object == r.request && s.get_object_information(&r.request).unwrap().state == "failed" {
            break;
        }
    }
    let lib = s.enumerate(None, ObjectType::Library).unwrap().remove(0);
    assert_eq!(lib.state, "offline");
    let e = s.mount(&["ABC002L6"], None, flags(), 0, None).unwrap_err();
    assert!(matches!(e, NtmsError::MediaOffline { .. } | NtmsError::LibraryOffline { .. }), "{e:?}");
}

#[test]
fn a_unit_attention_in_the_middle_of_a_mount_rescans_and_the_mount_still_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let (v, d) = library(dir.path(), 0.0);
    let s = Session::open_at(&d.socket, None, None, 0).unwrap();
    // The next changer command (the MOVE MEDIUM) gets UNIT ATTENTION: not executed, inventory suspect.
    v.server.inject(Fault::UnitAttentionAfter { device: vlib::Device::Changer, commands: 0 }).unwrap();
    let r = s.mount(&["ABC004L6"], None, flags(), 0, None).unwrap();
    assert!(r.drive.is_some());
    assert!(drive_holding(&v, "ABC004L6").is_some());
    assert!(v.server.snapshot().counters.check_conditions >= 1, "the unit attention was raised");
}

#[test]
fn an_administrator_may_dismount_what_another_session_mounted() {
    let dir = tempfile::tempdir().unwrap();
    let uid = nix::unistd::getuid().as_raw();
    let (v, d) = library_with(dir.path(), 0.0, &format!("administrators = [{uid}]"));
    let a = Session::open_at(&d.socket, None, Some("a"), 0).unwrap();
    let admin = Session::open_at(&d.socket, None, Some("operator"), 0).unwrap();
    a.mount(&["ABC001L6"], None, flags(), 0, None).unwrap();
    admin.dismount(DismountTarget::Media("ABC001L6".into()), false).unwrap();
    assert_eq!(drive_holding(&v, "ABC001L6"), None);
}

#[test]
fn queued_requests_are_reordered_by_priority_by_their_session_only() {
    let dir = tempfile::tempdir().unwrap();
    // Robot 8 s scaled to 0.8 s: the second and third mounts stay queued while the first moves.
    let (v, d) = library_with(dir.path(), 0.1, "administrators = []");
    let s = Session::open_at(&d.socket, None, Some("bacula"), 0).unwrap();
    let other = Session::open_at(&d.socket, None, Some("amanda"), 0).unwrap();
    let notes = s.notifications(Some(ObjectType::LibRequest)).unwrap();
    let nowait = MountFlags { nowait: true, ..flags() };
    let first = s.mount(&["ABC001L6"], None, nowait, 0, None).unwrap();
    let second = s.mount(&["ABC002L6"], None, nowait, 0, None).unwrap();
    let third = s.mount(&["ABC003L6"], None, nowait, 0, None).unwrap();
    // Bad input first: each is refused with its own error and changes nothing.
    let e = s.set_request_priority(&third.request, 16).unwrap_err();
    assert!(matches!(e, NtmsError::InvalidParameter { .. }), "{e:?}");
    let e = s.set_request_priority("00000000-0000-0000-0000-000000000000", 1).unwrap_err();
    assert!(matches!(e, NtmsError::ObjectNotFound { .. }), "{e:?}");
    let e = other.set_request_priority(&third.request, 5).unwrap_err();
    assert!(matches!(e, NtmsError::AccessDenied { .. }), "{e:?}");
    let e = other.cancel_request(&third.request).unwrap_err();
    assert!(matches!(e, NtmsError::AccessDenied { .. }), "{e:?}");
    let e = s.set_request_priority(&first.request, 5).unwrap_err();
    assert!(matches!(e, NtmsError::InvalidOperation { .. }), "the first mount is moving: {e:?}");
    // The third goes before the second, and says so.
    s.set_request_priority(&third.request, 5).unwrap();
    let info = s.get_object_information(&third.request).unwrap();
    let ObjectDetails::LibRequest(rd) = &info.details else { panic!() };
    assert_eq!(rd.priority, 5);
    wait_complete(&s, notes, &[&first.request, &second.request, &third.request]);
    let order: Vec<u16> = v.server.snapshot().robot_log.iter().map(|m| m.source).collect();
    assert_eq!(order, [1000, 1002, 1001], "robot moves by source slot");
    let e = s.set_request_priority(&third.request, 1).unwrap_err();
    assert!(matches!(e, NtmsError::InvalidOperation { .. }), "complete: {e:?}");
    // `rsm reorder` runs in its own process, so its own session: not the request's owner.
    let out = rsm(&d, &["reorder", &third.request, "--priority", "-2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("another session"), "{err}");
}

#[test]
fn a_drive_that_never_becomes_ready_fails_the_mount_and_shows_in_error() {
    let dir = tempfile::tempdir().unwrap();
    let (v, d) = library_full(dir.path(), 0.0, "", "ready_timeout_ms = 300");
    let s = Session::open_at(&d.socket, None, None, 0).unwrap();
    // Drive 0 answers "becoming ready" for an hour.
    v.server.inject(Fault::NotReadyFor { device: vlib::Device::Drive(0), ms: 3_600_000 }).unwrap();
    let drive0 = s.resolve_drive("0").unwrap();
    let e = s.mount(&["ABC001L6"], Some(&drive0), flags(), 0, None).unwrap_err();
    assert!(matches!(e, NtmsError::UnableToLoadMedium { .. }), "{e:?}");
    assert_eq!(drive_holding(&v, "ABC001L6"), None, "taken back out of the drive");
    let o = s.get_object_information(&drive0).unwrap();
    let ObjectDetails::Drive(dd) = &o.details else { panic!() };
    assert_eq!((o.state.as_str(), dd.state), ("error", rsmd::proto::types::DriveState::Error));
    // Mounts for any drive go to a sound one.
    let r = s.mount(&["ABC002L6"], None, flags(), 0, None).unwrap();
    assert_ne!(r.drive.as_deref(), Some(drive0.as_str()));
}

#[test]
fn a_restarted_daemon_remembers_how_long_its_drives_take_to_load() {
    let dir = tempfile::tempdir().unwrap();
    // Loads take 1 s (20 s scaled by 0.05).
    let v = emulator(dir.path(), 0.05, |_| {});
    let (root, config) = (dir.path().join("rsmd"), vlib_config(&v.dir, ""));
    // Commands the library saw for one mount (the move and the TEST UNIT READY polls), then a dismount.
    let commands_for = |d: &Daemon, barcode: &str| -> u64 {
        let s = Session::open_at(&d.socket, None, None, 0).unwrap();
        let before = v.server.snapshot().counters.commands;
        s.mount(&[barcode], None, flags(), 0, None).unwrap();
        let n = v.server.snapshot().counters.commands - before;
        s.dismount(DismountTarget::Media(barcode.into()), false).unwrap();
        n
    };
    let mut d = Daemon::start(&root, &config);
    d.wait_ready(1);
    let learning = commands_for(&d, "ABC001L6");
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(d.wait_exit().success());
    let mut d = Daemon::start(&root, &config);
    d.wait_ready(1);
    let remembered = commands_for(&d, "ABC002L6");
    // Learning polls every 100 ms through the whole load; remembering polls from just before it is due.
    assert!(remembered + 4 <= learning, "first daemon: {learning} commands, restarted: {remembered}");
}

fn slot_holds(v: &Vlib, address: u16) -> Option<String> {
    v.server.snapshot().elements.into_iter().find(|e| e.address == address).and_then(|e| e.barcode)
}

#[test]
fn a_deferred_dismount_keeps_the_cartridge_loaded_for_a_remount_then_puts_it_home() {
    let dir = tempfile::tempdir().unwrap();
    let (v, d) = library_full(dir.path(), 0.0, "", "deferred_dismount_ms = 300");
    let s = Session::open_at(&d.socket, None, Some("bacula"), 0).unwrap();
    let first = s.mount(&["ABC001L6"], None, flags(), 0, None).unwrap();
    let drive = first.drive.clone().unwrap();
    s.dismount(DismountTarget::Media("ABC001L6".into()), true).unwrap();
    // Still in the drive, mounted by nobody.
    assert!(drive_holding(&v, "ABC001L6").is_some());
    let ObjectDetails::Drive(dd) = s.get_object_information(&drive).unwrap().details else { panic!() };
    assert_eq!((dd.state, dd.mounted_by), (rsmd::proto::types::DriveState::Loaded, None));
    // Asked for again within the delay: mounted where it is, without a robot move.
    let moves = v.server.snapshot().counters.moves;
    let again = s.mount(&["ABC001L6"], None, flags(), 0, None).unwrap();
    assert_eq!(again.drive.as_deref(), Some(drive.as_str()));
    assert_eq!(v.server.snapshot().counters.moves, moves, "no robot move for a remount");
    // Deferred again and left alone: after the delay it goes home by itself.
    let notes = s.notifications(Some(ObjectType::PhysicalMedia)).unwrap();
    s.dismount(DismountTarget::Media("ABC001L6".into()), true).unwrap();
    for n in notes {
        n.unwrap();
        if slot_holds(&v, 1000).as_deref() == Some("ABC001L6") {
            break;
        }
    }
    assert_eq!(drive_holding(&v, "ABC001L6"), None);
}

#[test]
fn a_deferred_cartridge_makes_room_for_a_mount_that_waits_for_a_drive() {
    let dir = tempfile::tempdir().unwrap();
    // The default delay (a minute): only the waiting mount can make it go earlier.
    let (v, d) = library(dir.path(), 0.0);
    let s = Session::open_at(&d.socket, None, None, 0).unwrap();
    s.mount(&["ABC001L6"], None, flags(), 0, None).unwrap();
    s.dismount(DismountTarget::Media("ABC001L6".into()), true).unwrap();
    for b in ["ABC002L6", "ABC003L6", "ABC004L6"] {
        s.mount(&[b], None, flags(), 0, None).unwrap();
    }
    // Every drive is taken; the fifth mount takes the deferred cartridge's drive.
    s.mount(&["ABC005L6"], None, flags(), 0, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(slot_holds(&v, 1000).as_deref(), Some("ABC001L6"), "the deferred cartridge went home");
    assert!(drive_holding(&v, "ABC005L6").is_some());
}

/// Issue 11: with every drive holding a cartridge nobody has mounted (deferred dismounts), one waiting mount
/// evicted all of them (the eviction rule fired again on every loop turn while the mount waited). It evicts one.
#[test]
fn one_waiting_mount_evicts_one_idle_cartridge_not_all() {
    let dir = tempfile::tempdir().unwrap();
    let (v, d) = library(dir.path(), 0.01);
    let s = Session::open_at(&d.socket, None, None, 0).unwrap();
    for b in ["ABC001L6", "ABC002L6", "ABC003L6", "ABC004L6"] {
        s.mount(&[b], None, flags(), 0, None).unwrap();
        s.dismount(DismountTarget::Media(b.into()), true).unwrap();
    }
    let moves = v.server.snapshot().counters.moves;
    s.mount(&["ABC005L6"], None, flags(), 0, Some(Duration::from_secs(30))).unwrap();
    let snap = v.server.snapshot();
    assert_eq!(snap.counters.moves - moves, 2, "one cartridge out, the new one in");
    let loaded = snap.elements.iter().filter(|e| e.kind == vlib::ElementType::Drive && e.full).count();
    assert_eq!(loaded, 4, "the three other deferred cartridges stay loaded");
    let out: Vec<&str> = ["ABC001L6", "ABC002L6", "ABC003L6", "ABC004L6"]
        .into_iter()
        .filter(|b| drive_holding(&v, b).is_none())
        .collect();
    assert_eq!(out, ["ABC001L6"], "the one deferred longest ago went home");
}

#[test]
fn a_mount_of_a_cartridge_in_use_waits_for_it_unless_asked_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let (v, d) = library(dir.path(), 0.0);
    let a = Session::open_at(&d.socket, None, Some("a"), 0).unwrap();
    a.mount(&["ABC001L6"], None, flags(), 0, None).unwrap();
    let notes = a.notifications(Some(ObjectType::LibRequest)).unwrap();
    // Another application asks for the same cartridge: its mount waits, visibly.
    let socket = d.socket.clone();
    let waiter = std::thread::spawn(move || {
        let b = Session::open_at(&socket, None, Some("b"), 0).unwrap();
        let r = b.mount(&["ABC001L6"], None, flags(), 0, None);
        (r, b)
    });
    let waiting = notes
        .map(|n| n.unwrap().object)
        .find(|id| {
            let o = a.get_object_information(id).unwrap();
            let ObjectDetails::LibRequest(r) = &o.details else { return false };
            o.state == "waiting" && r.application.as_deref() == Some("b")
        })
        .unwrap();
    assert!(!waiter.is_finished(), "b waits for the cartridge");
    a.dismount(DismountTarget::Media("ABC001L6".into()), false).unwrap();
    let (r, b) = waiter.join().unwrap();
    let r = r.unwrap();
    assert_eq!(r.request, waiting);
    assert!(drive_holding(&v, "ABC001L6").is_some(), "mounted for b once a gave it back");
    // Now a waits for b: a timeout ends the wait, a cancel too, and a waiting request can be reordered.
    let e = a.mount(&["ABC001L6"], None, flags(), 0, Some(Duration::from_millis(200))).unwrap_err();
    assert!(matches!(e, NtmsError::Timeout { .. }), "{e:?}");
    let q = a.mount(&["ABC001L6"], None, MountFlags { nowait: true, ..flags() }, 0, None).unwrap();
    assert_eq!(a.get_object_information(&q.request).unwrap().state, "waiting");
    a.set_request_priority(&q.request, 7).unwrap();
    a.cancel_request(&q.request).unwrap();
    assert_eq!(a.get_object_information(&q.request).unwrap().state, "cancelled");
    // Asked not to wait: at once.
    let busy = MountFlags { error_if_unavailable: true, ..flags() };
    assert!(matches!(a.mount(&["ABC001L6"], None, busy, 0, None), Err(NtmsError::MediaUnavailable { .. })));
    b.dismount(DismountTarget::Media("ABC001L6".into()), false).unwrap();
}

#[test]
fn a_write_mount_of_a_write_protected_cartridge_fails_with_write_protect() {
    let dir = tempfile::tempdir().unwrap();
    let v = emulator(dir.path(), 0.0, |c| {
        c.cartridges.push(vlib::config::Cartridge {
            write_protected: true,
            ..vlib::config::Cartridge::new("WPX001L6", vlib::config::Location::Slot(17))
        });
    });
    let mut d = Daemon::start(&dir.path().join("rsmd"), &vlib_config(&v.dir, ""));
    d.wait_ready(1);
    let s = Session::open_at(&d.socket, None, None, 0).unwrap();
    let write = MountFlags { write: true, ..MountFlags::default() };
    let e = s.mount(&["WPX001L6"], None, write, 0, None).unwrap_err();
    assert!(matches!(e, NtmsError::WriteProtect { .. }), "{e:?}");
    assert_eq!(slot_holds(&v, 1016).as_deref(), Some("WPX001L6"), "taken back to its slot");
    // `rsm mount --write` says so and fails; reading works.
    let out = rsm(&d, &["mount", "WPX001L6", "--write"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("write protected"), "{err}");
    s.mount(&["WPX001L6"], None, flags(), 0, None).unwrap();
}

#[test]
fn mounts_pick_drives_of_a_compatible_lto_generation() {
    use vlib::config::{Cartridge, Location};
    let dir = tempfile::tempdir().unwrap();
    // A library in migration: two LTO-6 drives, two LTO-8 drives; LTO-6, LTO-8 and LTO-9 cartridges.
    let v = emulator(dir.path(), 0.0, |c| {
        c.drive_products = ["ULT3580-TD6", "ULT3580-TD6", "ULT3580-TD8", "ULT3580-TD8"].map(String::from).to_vec();
        c.cartridges.push(Cartridge::new("NEW001L8", Location::Slot(17)));
        c.cartridges.push(Cartridge::new("NEW002L8", Location::Slot(18)));
        c.cartridges.push(Cartridge::new("FUT001L9", Location::Slot(19)));
    });
    let mut d = Daemon::start(&dir.path().join("rsmd"), &vlib_config(&v.dir, ""));
    d.wait_ready(1);
    let s = Session::open_at(&d.socket, None, None, 0).unwrap();
    // LTO-8 cartridges go to the LTO-8 drives (elements 502, 503), LTO-6 ones to the LTO-6 drives, even when
    // asked for "any drive" and the first free drive is another generation.
    s.mount(&["NEW001L8"], None, flags(), 0, None).unwrap();
    s.mount(&["NEW002L8"], None, flags(), 0, None).unwrap();
    assert_eq!((drive_holding(&v, "NEW001L8"), drive_holding(&v, "NEW002L8")), (Some(502), Some(503)));
    s.mount(&["ABC001L6"], None, flags(), 0, None).unwrap();
    assert_eq!(drive_holding(&v, "ABC001L6"), Some(500));
    // A drive that cannot take the cartridge is refused at once, before any robot move.
    let moves = v.server.snapshot().counters.moves;
    let drive3 = s.resolve_drive("3").unwrap();
    s.dismount(DismountTarget::Media("NEW002L8".into()), false).unwrap();
    let e = s.mount(&["ABC002L6"], Some(&drive3), flags(), 0, None).unwrap_err();
    assert!(matches!(e, NtmsError::DriveMediaMismatch { .. }), "{e:?}");
    // No drive of the library reads LTO-9.
    let e = s.mount(&["FUT001L9"], None, flags(), 0, None).unwrap_err();
    assert!(matches!(e, NtmsError::NoSupportingDrives { .. }), "{e:?}");
    assert_eq!(v.server.snapshot().counters.moves, moves + 1, "only the dismount moved the robot");
}

/// Issue 11: a client killed while its mount waits (SIGKILL: its socket closes with the call unanswered) ends its
/// session, and the waiting mount is cancelled; nothing is loaded for nobody once a drive frees.
#[test]
fn a_client_killed_while_its_mount_waits_cancels_the_mount() {
    let dir = tempfile::tempdir().unwrap();
    let (v, d) = library(dir.path(), 0.01);
    let s = Session::open_at(&d.socket, None, Some("holder"), 0).unwrap();
    for b in ["ABC001L6", "ABC002L6", "ABC003L6", "ABC004L6"] {
        s.mount(&[b], None, flags(), 0, None).unwrap();
    }
    let notes = s.notifications(Some(ObjectType::LibRequest)).unwrap();
    let mut child = std::process::Command::new(crate::util::rsm_bin())
        .args(["--socket", d.socket.to_str().unwrap(), "mount", "ABC005L6"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Its request shows as queued behind the busy drives.
    let rsm_request = |s: &Session| {
        s.requests()
            .unwrap()
            .into_iter()
            .find(|o| matches!(&o.details, ObjectDetails::LibRequest(r) if r.application.as_deref() == Some("rsm")))
    };
    let mut notes = notes.map(|n| n.unwrap());
    let request = loop {
        if let Some(r) = rsm_request(&s) {
            break r.id;
        }
        notes.next().expect("a notification");
    };
    child.kill().unwrap();
    child.wait().unwrap();
    while s.get_object_information(&request).unwrap().state != "cancelled" {
        notes.next().expect("a notification");
    }
    let moves = v.server.snapshot().counters.moves;
    s.dismount(DismountTarget::Media("ABC001L6".into()), false).unwrap();
    // A new mount of another cartridge goes through the freed drive, after which the queue is empty: had the dead
    // client's mount stayed queued it would have taken the drive first.
    s.mount(&["ABC006L6"], None, flags(), 0, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(drive_holding(&v, "ABC005L6"), None, "nothing loaded for the dead client");
    assert_eq!(v.server.snapshot().counters.moves, moves + 2);
}

/// Issue 11: a library NOT READY for a moment at start-up never came online (one retry, then nothing). Probing
/// retries every step with backoff until it answers; meanwhile the daemon serves, and then the library is ready
/// and usable.
#[test]
fn a_library_not_ready_at_start_up_comes_online_when_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let v = emulator(dir.path(), 0.0, |_| {});
    v.server.inject(Fault::NotReadyFor { device: vlib::Device::Changer, ms: 2_500 }).unwrap();
    let mut d = Daemon::start(&dir.path().join("rsmd"), &vlib_config(&v.dir, ""));
    d.wait_notify(|m| m == "READY=1");
    let s = Session::open_at(&d.socket, None, None, 0).unwrap();
    d.wait_ready(1);
    s.mount(&["ABC001L6"], None, flags(), 0, None).unwrap();
    assert!(drive_holding(&v, "ABC001L6").is_some());
}

/// Issue 11 acceptance: `kill -9` with mounts in progress and queued, then a restart: every acknowledged request is
/// still there and has ended (complete, or failed with the stated reason), none is left open, and once the library
/// is verified no cartridge is in two places: rsmd's inventory equals the emulator's.
#[test]
fn kill_9_with_requests_in_progress_and_queued_then_restart() {
    let dir = tempfile::tempdir().unwrap();
    let v = emulator(dir.path(), 0.05, |_| {});
    let root = dir.path().join("rsmd");
    let config = vlib_config(&v.dir, "");
    let mut d = Daemon::start(&root, &config);
    d.wait_ready(1);
    let s = Session::open_at(&d.socket, None, Some("bacula"), 0).unwrap();
    let notes = s.notifications(Some(ObjectType::LibRequest)).unwrap();
    let nowait = MountFlags { nowait: true, ..flags() };
    let acknowledged: Vec<String> =
        (1..=6).map(|n| s.mount(&[format!("ABC{n:03}L6").as_str()], None, nowait, 0, None).unwrap().request).collect();
    // Wait until the robot is at work for one of them (the others are queued behind it).
    for n in notes {
        let id = n.unwrap().object;
        if acknowledged.contains(&id) && s.get_object_information(&id).unwrap().state == "in_progress" {
            break;
        }
    }
    drop(s);
    d.kill9();
    let mut d = Daemon::start(&root, &config);
    d.wait_ready(1);
    let s = Session::open_at(&d.socket, None, None, 0).unwrap();
    let mut restarted = 0;
    for id in &acknowledged {
        let o = s.get_object_information(id).unwrap();
        let ObjectDetails::LibRequest(r) = &o.details else { panic!("{o:?}") };
        match o.state.as_str() {
            "complete" => {}
            "failed" => {
                assert!(r.error.as_deref().unwrap_or("").contains("rsmd restarted"), "{r:?}");
                restarted += 1;
            }
            other => panic!("request {id} left {other}: {r:?}"),
        }
    }
    assert!(restarted >= 1, "at least the queued ones ended with the reason");
    // One place per cartridge, and the same places as the hardware.
    let snap = v.server.snapshot();
    for e in snap.elements.iter().filter(|e| e.barcode.is_some()) {
        let b = e.barcode.as_deref().unwrap();
        let media: Vec<_> = s
            .enumerate(None, ObjectType::PhysicalMedia)
            .unwrap()
            .into_iter()
            .filter_map(|o| match o.details {
                ObjectDetails::PhysicalMedia(m) if m.barcode.as_deref() == Some(b) => Some(m),
                _ => None,
            })
            .collect();
        assert_eq!(media.len(), 1, "{b} once");
        assert_eq!(media[0].location.element_address, Some(u32::from(e.address)), "{b} where the library has it");
    }
}

/// Issue 15: every mount and dismount is logged once, when it ends, with who (user, application, process), what
/// (cartridge, drive, library) and the outcome; session opens are not logged at the default level.
#[test]
fn mounts_and_dismounts_leave_one_audit_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let v = emulator(dir.path(), 0.0, |_| {});
    let (mut d, lines) =
        Daemon::start_full(&dir.path().join("rsmd"), &vlib_config(&v.dir, ""), &[], &[], crate::util::Stderr::Capture);
    let lines = lines.unwrap();
    d.wait_ready(1);
    let s = Session::open_at(&d.socket, None, Some("bacula"), 0).unwrap();
    s.mount(&["ABC002L6"], None, flags(), 0, None).unwrap();
    s.dismount(DismountTarget::Media("ABC002L6".into()), false).unwrap();
    let e = s.mount(&["NOPE01L6"], None, flags(), 0, None).unwrap_err();
    assert!(matches!(e, NtmsError::ObjectNotFound { .. }));
    let uid = nix::unistd::getuid();
    let pid = std::process::id();
    let mut audit = Vec::new();
    while audit.len() < 2 {
        let line = lines.recv_timeout(crate::util::WAIT).expect("audit lines");
        assert!(!line.contains("session opened"), "session opens are debug: {line}");
        if line.contains("audit:") {
            audit.push(line);
        }
    }
    let who = format!("by bacula (uid {uid}) pid {pid}:");
    assert!(audit[0].contains("mount request") && audit[0].contains(&who), "{}", audit[0]);
    assert!(
        audit[0].contains("cartridge ABC002L6 drive ") && audit[0].ends_with("library test: complete"),
        "{}",
        audit[0]
    );
    assert!(audit[1].contains("dismount request") && audit[1].contains("cartridge ABC002L6"), "{}", audit[1]);
    assert!(!audit.iter().any(|l| l.contains("Some(") || l.contains("None")), "{audit:?}");
}

/// Issue 12: 32 clients in 8 applications race to allocate the 16 scratch cartridges of the default library (and
/// deallocate and allocate again): no cartridge is ever held by two allocations at once, every allocation that
/// failed says MediaUnavailable, and at the end every cartridge is in exactly one pool.
#[test]
fn racing_allocations_never_give_one_cartridge_twice() {
    let dir = tempfile::tempdir().unwrap();
    let v = emulator(dir.path(), 0.0, |_| {});
    let mut d = Daemon::start(&dir.path().join("rsmd"), &vlib_config(&v.dir, ""));
    d.wait_ready(1);
    let admin = Session::open_at(&d.socket, None, Some("setup"), 0).unwrap();
    for app in 0..8 {
        let name = format!("App{app}");
        let p = admin.create_pool(&name, None, rsmd::proto::types::PoolAction::CreateNew).unwrap();
        let changes = rsmd::proto::types::ObjectChanges {
            draw_from_free: Some(true),
            return_to_free: Some(true),
            ..Default::default()
        };
        admin.set_object_information(&p.pool, None, changes).unwrap();
    }
    let held = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::<String>::new()));
    let socket = d.socket.clone();
    let threads: Vec<_> = (0..32)
        .map(|i| {
            let (socket, held) = (socket.clone(), held.clone());
            std::thread::spawn(move || {
                let app = format!("App{}", i % 8);
                let s = Session::open_at(&socket, None, Some(&app), 0).unwrap();
                let (mut got, mut unavailable) = (0, 0);
                for _ in 0..20 {
                    match s.allocate(&app, None, true, None) {
                        Ok(r) => {
                            let barcode = r.barcode.unwrap();
                            assert!(held.lock().unwrap().insert(barcode.clone()), "{barcode} given twice");
                            got += 1;
                            // Release it (the set first: once deallocated, another may get it at once).
                            held.lock().unwrap().remove(&barcode);
                            s.deallocate(&r.logical_media).unwrap();
                        }
                        Err(NtmsError::MediaUnavailable { .. }) => unavailable += 1,
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
                (got, unavailable)
            })
        })
        .collect();
    let (mut got, mut unavailable) = (0, 0);
    for t in threads {
        let (g, u) = t.join().unwrap();
        got += g;
        unavailable += u;
    }
    assert_eq!(got + unavailable, 32 * 20);
    assert!(got >= 16, "at least every cartridge once: {got}");
    // Every cartridge back in Free, exactly once.
    let media = admin.enumerate(None, ObjectType::PhysicalMedia).unwrap();
    let data: Vec<_> = media
        .iter()
        .filter_map(|o| match &o.details {
            ObjectDetails::PhysicalMedia(m) if !m.cleaner => Some(m),
            _ => None,
        })
        .collect();
    assert!(data
        .iter()
        .all(|m| m.pool_name.as_deref() == Some("Free\\LTO-6") && m.side.as_deref() == Some("available")));
    let mut barcodes: Vec<_> = data.iter().map(|m| m.barcode.clone()).collect();
    barcodes.sort();
    barcodes.dedup();
    assert_eq!(barcodes.len(), data.len());
}

/// What a storm client was told, per logical media id.
#[derive(Debug, Clone, Default)]
struct Acked {
    barcode: String,
    /// Deallocation acknowledged.
    released: bool,
    /// A deallocation was sent and not answered (the daemon died): either outcome is allowed.
    releasing: bool,
}

/// Issue 12, reliability: a storm of allocate → mount → dismount → deallocate from 6 clients in 3 applications,
/// the daemon killed with SIGKILL after a varying number of acknowledged operations, 8 times; after each restart:
/// every cartridge in exactly one pool and one place (the same place the library reports), every LMID on one
/// allocated side, and nothing acknowledged lost (an acknowledged allocation is still there unless its
/// deallocation was sent; an acknowledged deallocation is never undone).
#[test]
fn killed_at_random_points_of_an_allocation_storm_nothing_acknowledged_is_lost() {
    use std::collections::{HashMap, HashSet};
    use std::sync::{mpsc, Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let v = emulator(dir.path(), 0.0, |_| {});
    let root = dir.path().join("rsmd");
    let config = vlib_config(&v.dir, "");
    let acked: Arc<Mutex<HashMap<String, Acked>>> = Arc::default();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..8 {
        let mut d = Daemon::start(&root, &config);
        d.wait_ready(1);
        let admin = Session::open_at(&d.socket, None, Some("admin"), 0).unwrap();
        // --- Invariants after the previous crash. ---
        if round > 0 {
            let media = admin.enumerate(None, ObjectType::PhysicalMedia).unwrap();
            let pools: HashSet<String> =
                admin.enumerate(None, ObjectType::MediaPool).unwrap().into_iter().map(|p| p.id).collect();
            let mut lmids = HashSet::new();
            let mut by_barcode = HashMap::new();
            let snap = v.server.snapshot();
            for o in &media {
                let ObjectDetails::PhysicalMedia(m) = &o.details else { unreachable!() };
                let barcode = m.barcode.clone().unwrap();
                assert!(m.pool.as_ref().is_some_and(|p| pools.contains(p)), "round {round}: {barcode} in no pool");
                assert!(by_barcode.insert(barcode.clone(), m.clone()).is_none(), "{barcode} listed twice");
                let held = snap.elements.iter().filter(|e| e.barcode.as_deref() == Some(barcode.as_str())).count();
                assert_eq!(held, 1, "round {round}: {barcode} in {held} places of the library");
                let here = snap.elements.iter().find(|e| e.barcode.as_deref() == Some(barcode.as_str())).unwrap();
                assert_eq!(m.location.element_address, Some(u32::from(here.address)), "round {round}: {barcode}");
                if let Some(l) = &m.logical_media {
                    assert!(lmids.insert(l.clone()), "round {round}: LMID {l} on two cartridges");
                    assert!(matches!(m.side.as_deref(), Some("allocated" | "complete")), "{barcode}: {:?}", m.side);
                }
            }
            for (lmid, a) in acked.lock().unwrap().iter() {
                let m = &by_barcode[&a.barcode];
                if a.released {
                    assert!(!lmids.contains(lmid), "round {round}: released {lmid} ({}) came back", a.barcode);
                } else if !a.releasing {
                    assert_eq!(
                        m.logical_media.as_deref(),
                        Some(lmid.as_str()),
                        "round {round}: {} lost {lmid}",
                        a.barcode
                    );
                }
            }
        }
        // --- Back to a clean start: every drive empty, every cartridge deallocated. ---
        for o in admin.enumerate(None, ObjectType::Drive).unwrap() {
            let ObjectDetails::Drive(dr) = &o.details else { unreachable!() };
            if dr.media.is_some() {
                admin.dismount(DismountTarget::Drive(o.id.clone()), false).unwrap();
            }
        }
        for o in admin.enumerate(None, ObjectType::PhysicalMedia).unwrap() {
            let ObjectDetails::PhysicalMedia(m) = &o.details else { unreachable!() };
            if let Some(l) = &m.logical_media {
                admin.deallocate(l).unwrap();
                if let Some(a) = acked.lock().unwrap().get_mut(l) {
                    a.released = true;
                }
            }
        }
        if round == 0 {
            for app in ["A0", "A1", "A2"] {
                let p = admin.create_pool(app, None, rsmd::proto::types::PoolAction::CreateNew).unwrap();
                let ch = rsmd::proto::types::ObjectChanges {
                    draw_from_free: Some(true),
                    return_to_free: Some(true),
                    ..Default::default()
                };
                admin.set_object_information(&p.pool, None, ch).unwrap();
            }
        }
        // --- The storm, killed after a varying number of acknowledged operations. ---
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let kill_after = 5 + (seed >> 33) % 60;
        let (tx, rx) = mpsc::channel::<()>();
        let clients: Vec<_> = (0..6)
            .map(|i| {
                let (socket, acked, tx) = (d.socket.clone(), acked.clone(), tx.clone());
                std::thread::spawn(move || {
                    let app = format!("A{}", i % 3);
                    let Ok(s) = Session::open_at(&socket, None, Some(&app), 0) else { return };
                    loop {
                        let Ok(a) = s.allocate(&app, None, true, None) else { return };
                        let barcode = a.barcode.unwrap();
                        acked
                            .lock()
                            .unwrap()
                            .insert(a.logical_media.clone(), Acked { barcode: barcode.clone(), ..Acked::default() });
                        let _ = tx.send(());
                        if s.mount(&[barcode.as_str()], None, flags(), 0, None).is_err()
                            || s.dismount(DismountTarget::Media(barcode.clone()), false).is_err()
                        {
                            return;
                        }
                        let _ = tx.send(());
                        acked.lock().unwrap().get_mut(&a.logical_media).unwrap().releasing = true;
                        if s.deallocate(&a.logical_media).is_err() {
                            return;
                        }
                        let mut g = acked.lock().unwrap();
                        let e = g.get_mut(&a.logical_media).unwrap();
                        (e.released, e.releasing) = (true, false);
                        drop(g);
                        let _ = tx.send(());
                    }
                })
            })
            .collect();
        drop(tx);
        let mut seen = 0;
        while seen < kill_after && rx.recv_timeout(WAIT_STORM).is_ok() {
            seen += 1;
        }
        assert_eq!(seen, kill_after, "round {round}: the storm stalled after {seen} acknowledgements");
        d.kill9();
        for c in clients {
            c.join().unwrap();
        }
    }
}

/// How long a storm may go without acknowledging anything before the test calls it stalled.
const WAIT_STORM: Duration = Duration::from_secs(30);
