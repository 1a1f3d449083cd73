//! Tests against the real kernel sg driver, run inside vmlab (`RSMD_VMLAB=1`, with `CHANGER` and `DRIVES` set by
//! vmlab's init); elsewhere they skip with a message.
//!
//! Run: `cargo test --lib --no-run`, copy the test binary into a directory, then
//! `/work/shared/vmlab/run DIR -- 'RSMD_VMLAB=1 ./rsmd-xxxx --test-threads 1 sg::vmlab'`.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::discover::{self, DeviceKind};
use super::probe;
use super::SgTransport;
use crate::transport::{status, Command, Completion, Tag, Transport, TransportError};

const INQUIRY: [u8; 6] = [0x12, 0, 0, 0, 0x60, 0];
const TEST_UNIT_READY: [u8; 6] = [0; 6];
const INITIALIZE_ELEMENT_STATUS: [u8; 6] = [0x07, 0, 0, 0, 0, 0];
const T: Duration = Duration::from_secs(30);

/// The changer and drive sg nodes vmlab exported, or `None` outside vmlab.
fn vmlab() -> Option<(PathBuf, Vec<PathBuf>)> {
    if std::env::var("RSMD_VMLAB").as_deref() != Ok("1") {
        println!("skipped: not in vmlab");
        return None;
    }
    let changer = PathBuf::from(std::env::var("CHANGER").expect("vmlab sets CHANGER"));
    let drives = std::env::var("DRIVES").expect("vmlab sets DRIVES").split_whitespace().map(PathBuf::from).collect();
    Some((changer, drives))
}

/// Polls every transport and reaps until none has a command in flight. Returns completions per transport index.
fn run_to_completion(transports: &mut [SgTransport]) -> Vec<Vec<Completion>> {
    let mut done: Vec<Vec<Completion>> = transports.iter().map(|_| Vec::new()).collect();
    for _round in 0..1000 {
        if transports.iter().all(|t| t.in_flight() == 0) {
            return done;
        }
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd<'_>> = transports.iter().map(|t| PollFd::new(t.fd(), PollFlags::POLLIN)).collect();
            let n = poll(&mut fds, PollTimeout::from(10_000u16)).expect("poll");
            assert!(n > 0, "no completion within 10 s");
            fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect()
        };
        for (i, t) in transports.iter_mut().enumerate() {
            if !ready[i] {
                continue;
            }
            while let Some(c) = t.reap().expect("reap") {
                done[i].push(c);
            }
        }
    }
    panic!("commands still in flight after 1000 polls");
}

/// The peripheral device type of an INQUIRY response.
fn peripheral_type(c: &Completion) -> u8 {
    let r = c.result.as_ref().expect("INQUIRY completes");
    assert_eq!(r.status, status::GOOD, "INQUIRY status, sense {:02x?}", r.sense);
    assert!(r.data.len() >= 36, "standard INQUIRY data is at least 36 bytes, got {}", r.data.len());
    r.data[0] & 0x1f
}

#[test]
fn inquiry_and_test_unit_ready_on_every_device_at_once() {
    let Some((changer, drives)) = vmlab() else { return };
    let paths: Vec<&Path> = std::iter::once(changer.as_path()).chain(drives.iter().map(PathBuf::as_path)).collect();
    let mut transports: Vec<SgTransport> = paths.iter().map(|p| SgTransport::open(p).expect("open sg")).collect();
    for (t, p) in transports.iter_mut().zip(&paths) {
        println!("{}: reserved size {}", p.display(), t.max_transfer());
        assert!(t.max_transfer() > 0);
        t.submit(1, Command::read(INQUIRY, 96, T)).unwrap();
        t.submit(2, Command::none(TEST_UNIT_READY, T)).unwrap();
        assert_eq!(t.in_flight(), 2);
    }
    let done = run_to_completion(&mut transports);
    for (i, completions) in done.iter().enumerate() {
        let by_tag: HashMap<Tag, &Completion> = completions.iter().map(|c| (c.tag, c)).collect();
        assert_eq!(by_tag.len(), 2, "{}: both commands complete", paths[i].display());
        let ty = peripheral_type(by_tag[&1]);
        let inquiry = &by_tag[&1].result.as_ref().unwrap().data;
        let vendor = String::from_utf8_lossy(&inquiry[8..16]);
        let product = String::from_utf8_lossy(&inquiry[16..32]);
        let tur = by_tag[&2].result.as_ref().expect("TEST UNIT READY completes");
        println!(
            "{}: type {ty} {vendor} {product}, INQUIRY {} bytes resid {}; TUR status {:#04x} sense {:02x?}",
            paths[i].display(),
            inquiry.len(),
            by_tag[&1].result.as_ref().unwrap().resid,
            tur.status,
            tur.sense
        );
        assert_eq!(ty, if i == 0 { 8 } else { 1 });
        if i == 0 {
            assert_eq!(tur.status, status::GOOD, "changer is ready");
        } else {
            // An empty drive is NOT READY (MEDIUM NOT PRESENT); that is a SCSI outcome, not a transport error.
            assert!(
                tur.status == status::GOOD || (tur.status == status::CHECK_CONDITION && tur.sense.len() >= 14),
                "drive TUR: GOOD or CHECK CONDITION with sense"
            );
        }
        assert_eq!(tur.host_status, 0);
    }
}

#[test]
fn more_commands_than_the_driver_queue_are_held_pending() {
    let Some((changer, _)) = vmlab() else { return };
    let mut t = SgTransport::open(&changer).expect("open sg");
    for tag in 0..40 {
        t.submit(tag, Command::none(TEST_UNIT_READY, T)).unwrap();
    }
    println!("40 submitted: {} pending behind the driver's queue", t.pending());
    assert_eq!(t.pending(), 40 - super::sys::SG_MAX_QUEUE, "the driver queues 16 per fd");
    let done = run_to_completion(std::slice::from_mut(&mut t));
    let mut tags: Vec<Tag> = done[0].iter().map(|c| c.tag).collect();
    tags.sort_unstable();
    assert_eq!(tags, (0..40).collect::<Vec<_>>());
    assert!(done[0].iter().all(|c| c.result.as_ref().is_ok_and(|r| r.status == status::GOOD)));
}

#[test]
fn tiny_timeout_completes_one_way_or_the_other() {
    let Some((changer, _)) = vmlab() else { return };
    let mut t = SgTransport::open(&changer).expect("open sg");
    t.submit(77, Command::none(INITIALIZE_ELEMENT_STATUS, Duration::from_millis(1))).unwrap();
    let done = run_to_completion(std::slice::from_mut(&mut t));
    assert_eq!(done[0].len(), 1);
    let c = &done[0][0];
    assert_eq!(c.tag, 77);
    match &c.result {
        Ok(r) => println!("INITIALIZE ELEMENT STATUS with 1 ms: status {:#04x}, {:?}", r.status, r.duration),
        Err(TransportError::TimedOut) => println!("INITIALIZE ELEMENT STATUS with 1 ms: timed out"),
        Err(e) => panic!("unexpected transport error {e:?}"),
    }
}

#[test]
fn blocking_probe_reads_inquiry() {
    let Some((changer, drives)) = vmlab() else { return };
    let r = probe::execute_blocking(&changer, &Command::read(INQUIRY, 96, T)).expect("SG_IO");
    assert!(r.is_good());
    assert_eq!(r.data[0] & 0x1f, 8);
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&drives[0]).unwrap();
    let r = probe::execute_blocking_fd(file.as_fd(), &Command::read(INQUIRY, 96, T)).expect("SG_IO");
    assert_eq!(r.data[0] & 0x1f, 1);
}

#[test]
fn sysfs_scan_finds_the_changer_and_drives() {
    let Some((changer, drives)) = vmlab() else { return };
    let devices = discover::scan(Path::new("/sys"), Path::new("/dev")).expect("scan /sys");
    for d in &devices {
        println!(
            "{} {:?} {} {} {} {:?} st={:?} nst={:?}",
            d.name, d.kind, d.vendor, d.model, d.rev, d.hctl, d.st, d.nst
        );
    }
    let find = |p: &Path| devices.iter().find(|d| d.sg == p).unwrap_or_else(|| panic!("{} not found", p.display()));
    let c = find(&changer);
    assert_eq!(c.kind, DeviceKind::Changer);
    assert!(c.hctl.is_some());
    for drive in &drives {
        let d = find(drive);
        assert_eq!(d.kind, DeviceKind::Tape);
        let nst = d.nst.as_ref().expect("a tape has an nst node");
        assert!(nst.exists(), "{} exists", nst.display());
        assert!(d.st.is_some());
    }
}

/// Runs `iscsiadm` on vmlab's target (`--logout` removes every sg device, `--login` brings them back).
fn iscsiadm(action: &str) {
    let target = std::env::var("VMLAB_TARGET").expect("vmlab sets VMLAB_TARGET");
    let portal = std::env::var("VMLAB_PORTAL").expect("vmlab sets VMLAB_PORTAL");
    let st = std::process::Command::new("iscsiadm")
        .args(["-m", "node", "-T", &target, "-p", &portal, action])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run iscsiadm");
    assert!(st.success(), "iscsiadm {action}");
}

/// Named to run last: it unplugs every device (and plugs them back in, possibly under new sg numbers).
#[test]
fn z_hot_unplug_reports_device_gone_and_uevents() {
    use nix::sys::socket::{
        bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
    };
    use std::os::fd::AsRawFd;

    let Some((changer, _)) = vmlab() else { return };
    let uevents = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkKObjectUEvent,
    )
    .expect("netlink socket");
    bind(uevents.as_raw_fd(), &NetlinkAddr::new(0, 1)).expect("bind uevent group");

    let mut t = SgTransport::open(&changer).expect("open sg");
    for tag in 0..20 {
        t.submit(tag, Command::none(TEST_UNIT_READY, T)).unwrap();
    }
    assert_eq!(t.pending(), 4);
    iscsiadm("--logout");

    let mut fds = [PollFd::new(t.fd(), PollFlags::POLLIN)];
    let n = poll(&mut fds, PollTimeout::from(10_000u16)).expect("poll");
    println!("after logout: poll {n}, revents {:?}", fds[0].revents());
    assert_eq!(n, 1);

    let mut tags = Vec::new();
    let end = loop {
        match t.reap() {
            Ok(Some(c)) => {
                assert!(matches!(c.result, Err(TransportError::DeviceGone)) || c.result.is_ok(), "{c:?}");
                tags.push((c.tag, c.result.is_ok()));
            }
            Ok(None) => panic!("a gone device never reports Ok(None)"),
            Err(e) => break e,
        }
    };
    println!("completions after logout (tag, ok): {tags:?}; then {end:?}");
    assert!(matches!(end, TransportError::DeviceGone));
    let mut seen: Vec<Tag> = tags.iter().map(|(t, _)| *t).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..20).collect::<Vec<_>>(), "every command completes exactly once");
    assert!(t.is_gone());
    assert!(matches!(t.submit(99, Command::none(TEST_UNIT_READY, T)), Err(TransportError::DeviceGone)));

    let mut removed = Vec::new();
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = recv(uevents.as_raw_fd(), &mut buf, MsgFlags::empty()) {
        if let Some(ev) = discover::parse_uevent(&buf[..n]) {
            if ev.subsystem == "scsi_generic" {
                println!("uevent {:?} {:?} {}", ev.action, ev.devname, ev.devpath);
                if ev.action == discover::UeventAction::Remove {
                    removed.extend(ev.devname);
                }
            }
        }
    }
    let changer_name = changer.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(removed.contains(&changer_name), "a scsi_generic remove uevent names {changer_name}");
    drop(t);
    iscsiadm("--login");
}
