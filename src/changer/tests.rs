//! Deterministic simulation: a [`Library`] driven against `vlib::Target` in-process on a virtual clock.
//!
//! `Sim::drive_bounded` delivers commands and completions and advances time to the next deadline until a
//! condition holds, failing after a step budget so a livelock shows up as a test failure, not a hang.

use std::time::Duration;

use super::*;
use crate::scsi::action::Failure;
use crate::scsi::element::ElementType;
use crate::transport::DataDirection;
use vlib::{Config as VConfig, Device, Direction, Fault, Request};

struct Sim {
    lib: Library,
    target: vlib::Target,
    now: Millis,
    events: Vec<Event>,
    /// Commands sent to a device that disappeared: completed as DeviceGone by the harness.
    gone: Vec<Tag>,
    outcomes: Vec<Outcome>,
    /// Commands submitted and not completed, by device: a device that disappears fails them (as POLLHUP does).
    outstanding: std::collections::HashMap<Tag, Device>,
}

/// The vlib device a command of the library goes to.
pub(crate) fn to_vlib(d: DeviceRef) -> Device {
    match d {
        DeviceRef::Changer => Device::Changer,
        DeviceRef::Drive(i) => Device::Drive(i),
    }
}

/// A command of the library as a vlib request (shared by the simulations of the library and of the broker).
pub(crate) fn vlib_request(tag: Tag, command: Command) -> Request {
    let direction = match command.direction {
        DataDirection::None => Direction::None,
        DataDirection::FromDevice(n) => Direction::FromDevice(n),
        DataDirection::ToDevice(d) => Direction::ToDevice(d),
    };
    let timeout_ms = u32::try_from(command.timeout.as_millis()).unwrap_or(u32::MAX);
    Request { tag, cdb: command.cdb, direction, timeout_ms }
}

/// A vlib completion as a transport reports it (a host timeout is a transport error, as sg reports it).
pub(crate) fn vlib_result(r: vlib::Response) -> Result<Response, TransportError> {
    if r.host_status == 3 {
        return Err(TransportError::TimedOut);
    }
    Ok(Response {
        status: r.status,
        host_status: 0,
        driver_status: 0,
        sense: r.sense,
        data: r.data,
        resid: r.resid,
        duration: Duration::from_millis(u64::from(r.duration_ms)),
    })
}

impl Sim {
    fn new(config: VConfig, options: LibraryOptions) -> Sim {
        let drives = config.drive_count();
        let target = vlib::Target::new(config).unwrap();
        Sim {
            lib: Library::new(drives, options, 0),
            target,
            now: 0,
            events: Vec::new(),
            gone: Vec::new(),
            outcomes: Vec::new(),
            outstanding: std::collections::HashMap::new(),
        }
    }

    fn default() -> Sim {
        let mut c = VConfig::default_library();
        c.dvcid = true;
        Sim::new(c, LibraryOptions::default())
    }

    /// One step: submit everything, deliver one completion or advance time. False when nothing can happen.
    fn step(&mut self) -> bool {
        self.pump_mounts();
        let mut progressed = false;
        while let Some(o) = self.lib.poll_request() {
            progressed = true;
            let device = to_vlib(o.device);
            if !self.target.is_present(device) {
                self.gone.push(o.tag);
                continue;
            }
            self.outstanding.insert(o.tag, device);
            self.target.submit(device, vlib_request(o.tag, o.command), self.now);
        }
        self.pump_mounts();
        let vanished: Vec<Tag> =
            self.outstanding.iter().filter(|(_, d)| !self.target.is_present(**d)).map(|(t, _)| *t).collect();
        for t in vanished {
            self.outstanding.remove(&t);
            self.gone.push(t);
        }
        if let Some(tag) = self.gone.pop() {
            self.lib.handle_completion(tag, Err(TransportError::DeviceGone), self.now);
            return true;
        }
        if let Some((_, r)) = self.target.poll_completion(self.now) {
            self.outstanding.remove(&r.tag);
            let tag = r.tag;
            self.lib.handle_completion(tag, vlib_result(r), self.now);
            self.pump_mounts();
            return true;
        }
        let next = [self.target.next_completion_at(), self.lib.poll_timeout()].into_iter().flatten().min();
        match next {
            Some(t) if t > self.now => {
                self.now = t;
                self.lib.handle_timeout(t);
                self.pump_mounts();
                true
            }
            Some(_) => {
                self.lib.handle_timeout(self.now);
                progressed
            }
            None => progressed,
        }
    }

    /// Collects the library's events and the outcomes of its jobs.
    fn pump_mounts(&mut self) {
        self.events.extend(std::iter::from_fn(|| self.lib.poll_event()));
        self.outcomes.extend(std::iter::from_fn(|| self.lib.poll_outcome()));
    }

    fn outcome(&self, id: u64) -> Option<&Outcome> {
        self.outcomes.iter().find(|o| o.id == id)
    }

    fn wait_outcome(&mut self, id: u64) -> Outcome {
        self.drive_bounded(100_000, |s| s.outcome(id).is_some());
        self.outcome(id).cloned().unwrap()
    }

    fn drive_bounded(&mut self, max_steps: usize, done: impl Fn(&Sim) -> bool) {
        for _ in 0..max_steps {
            if done(self) {
                return;
            }
            if !self.step() && !done(self) {
                panic!("stalled at {} ms in state {:?}", self.now, self.lib.state());
            }
        }
        assert!(done(self), "not done after {max_steps} steps ({:?} at {} ms)", self.lib.state(), self.now);
    }

    fn ready(&mut self) {
        self.drive_bounded(10_000, |s| s.lib.state() == LibraryState::Ready);
        self.events.extend(std::iter::from_fn(|| self.lib.poll_event()));
    }

    fn move_and_wait(&mut self, id: u64, src: u16, dst: u16) -> Result<(), MoveError> {
        self.lib.request_move(id, src, dst)?;
        self.drive_bounded(10_000, |s| {
            s.events.iter().any(|e| matches!(e, Event::MoveFinished { id: Origin::Caller(i), .. } if *i == id))
        });
        let r = self.events.iter().find_map(|e| match e {
            Event::MoveFinished { id: Origin::Caller(i), result } if *i == id => Some(*result),
            _ => None,
        });
        r.unwrap()
    }

    /// The library's view equals the emulator's (address, full, barcode) for every element.
    fn assert_agrees(&self) {
        let snap = self.target.snapshot();
        for v in &snap.elements {
            let e = self.lib.element(v.address).unwrap_or_else(|| panic!("element {} missing", v.address));
            assert_eq!(e.full, v.full, "full at {}", v.address);
            assert_eq!(e.barcode, v.barcode, "barcode at {}", v.address);
        }
        assert_eq!(self.lib.elements().len(), snap.elements.len());
    }

    fn inventories(&self) -> usize {
        self.events.iter().filter(|e| matches!(e, Event::Inventory { .. })).count()
    }
}

#[test]
fn probes_scans_and_maps_drives_by_dvcid() {
    let mut s = Sim::default();
    s.ready();
    s.assert_agrees();
    assert_eq!(s.inventories(), 1);
    assert_eq!(s.lib.identity().serial, "VLIB0000");
    let mapped: Vec<Option<usize>> =
        s.lib.elements().iter().filter(|e| e.element_type == ElementType::DataTransfer).map(|e| e.device).collect();
    assert_eq!(mapped, vec![Some(0), Some(1), Some(2), Some(3)]);
    assert_eq!(s.lib.element(1000).unwrap().barcode.as_deref(), Some("ABC001L6"));
}

#[test]
fn dvcid_rejected_falls_back_and_configuration_maps() {
    let mut c = VConfig::default_library();
    c.dvcid = false;
    c.dvcid_unsupported = vlib::config::DvcidUnsupported::Reject;
    let options = LibraryOptions { drive_map: vec![("VDRV0002".into(), 500)], ..LibraryOptions::default() };
    let mut s = Sim::new(c, options);
    s.ready();
    s.assert_agrees();
    assert_eq!(s.lib.element(500).unwrap().device, Some(2));
    assert_eq!(s.lib.element(501).unwrap().device, None, "no guessing beyond the configured drive");
}

#[test]
fn moves_update_the_cache_and_agree_with_the_emulator() {
    let mut s = Sim::default();
    s.ready();
    s.move_and_wait(1, 1000, 500).unwrap();
    let d = s.lib.element(500).unwrap();
    assert!(d.full);
    assert_eq!(d.source, Some(1000));
    assert_eq!(d.barcode.as_deref(), Some("ABC001L6"));
    s.move_and_wait(2, 500, 1000).unwrap();
    s.assert_agrees();
    // Refused before the robot moves: the cache knows.
    assert_eq!(s.lib.request_move(3, 1016, 501), Err(MoveError::SourceEmpty(1016)));
    assert_eq!(s.lib.request_move(3, 1000, 1001), Err(MoveError::DestinationFull(1001)));
    assert_eq!(s.lib.request_move(3, 1000, 4242), Err(MoveError::NoSuchElement(4242)));
}

#[test]
fn robot_moves_are_serialized_and_take_robot_time() {
    let mut s = Sim::default();
    s.ready();
    let start = s.now;
    s.lib.request_move(1, 1000, 500).unwrap();
    s.lib.request_move(2, 1001, 501).unwrap();
    assert_eq!(s.lib.moves_pending(), 2);
    s.drive_bounded(10_000, |s| s.events.iter().filter(|e| matches!(e, Event::MoveFinished { .. })).count() == 2);
    let robot = s.target.config().scaled(s.target.config().timing.move_ms);
    assert!(s.now - start >= 2 * robot, "two moves in {} ms, robot {robot} ms each", s.now - start);
    s.assert_agrees();
}

#[test]
fn robot_jam_fails_the_move_with_hardware_error_and_rereads() {
    let mut s = Sim::default();
    s.ready();
    s.target.inject(Fault::RobotJam { next_moves: 1 });
    let r = s.move_and_wait(1, 1000, 500);
    assert_eq!(r, Err(MoveError::Refused(Failure::Hardware(0x15, 0x01))));
    s.drive_bounded(1000, |s| s.lib.machine.changer_idle());
    s.assert_agrees();
    // The library stays usable.
    s.move_and_wait(2, 1000, 500).unwrap();
    s.assert_agrees();
}

#[test]
fn unit_attention_mid_scan_restarts_the_scan() {
    let mut c = VConfig::default_library();
    c.dvcid = true;
    let mut s = Sim::new(c, LibraryOptions { chunk: 5, ..LibraryOptions::default() });
    // Let probing finish and a few chunks be read, then a reset.
    s.drive_bounded(10_000, |s| s.lib.state() == LibraryState::Scanning);
    s.target.inject(Fault::UnitAttentionAfter { device: Device::Changer, commands: 2 });
    s.ready();
    s.assert_agrees();
    assert!(s.events.iter().any(|e| matches!(e, Event::Attention { device: DeviceRef::Changer, .. })));
    assert_eq!(s.inventories(), 1, "only the complete rescan is reported");
}

#[test]
fn door_closed_while_ready_rescans_and_sees_the_import() {
    let mut s = Sim::default();
    s.ready();
    s.target.inject(Fault::ImportCartridge { barcode: "NEW001L6".into() });
    // The next changer command (the heartbeat) gets 28/00 and triggers a rescan.
    s.drive_bounded(10_000, |s| s.inventories() == 2 && s.lib.state() == LibraryState::Ready);
    s.assert_agrees();
    assert!(s.lib.elements().iter().any(|e| e.barcode.as_deref() == Some("NEW001L6") && e.impexp));
}

#[test]
fn device_gone_while_ready_goes_offline_and_fails_queued_moves() {
    let mut s = Sim::default();
    s.ready();
    s.lib.request_move(7, 1000, 500).unwrap();
    s.target.inject(Fault::Disappear { device: Device::Changer });
    s.drive_bounded(1000, |s| s.lib.state() == LibraryState::Offline);
    s.events.extend(std::iter::from_fn(|| s.lib.poll_event()));
    assert!(s
        .events
        .iter()
        .any(|e| matches!(e, Event::MoveFinished { id: Origin::Caller(7), result: Err(MoveError::Offline) })));
    assert_eq!(s.lib.request_move(8, 1001, 501), Err(MoveError::Offline));
    // The inventory stays (stale) for clients.
    assert_eq!(s.lib.elements().len(), 27);
}

#[test]
fn chunk_boundaries_do_not_lose_or_repeat_elements() {
    for chunk in [1, 3, 7, 19, 20, 21] {
        let mut c = VConfig::default_library();
        c.dvcid = true;
        let mut s = Sim::new(c, LibraryOptions { chunk, ..LibraryOptions::default() });
        s.ready();
        s.assert_agrees();
    }
}

#[test]
fn fifty_thousand_slots_in_chunks() {
    let mut c = VConfig::new(vlib::config::Personality::Generic, 50_000, 10, 64);
    for n in (1..=50_000).step_by(2) {
        c.cartridges.push(vlib::config::Cartridge::new(
            &vlib::config::generated_barcode("L", n, "L8"),
            vlib::config::Location::Slot(n),
        ));
    }
    let mut s = Sim::new(c, LibraryOptions { chunk: 1024, ..LibraryOptions::default() });
    s.drive_bounded(20_000, |s| s.lib.state() == LibraryState::Ready);
    assert_eq!(s.lib.elements().iter().filter(|e| e.element_type == ElementType::Storage).count(), 50_000);
    assert_eq!(s.lib.elements().iter().filter(|e| e.full).count(), 25_000);
    assert_eq!(
        s.lib.elements().iter().filter(|e| e.element_type == ElementType::DataTransfer && e.device.is_some()).count(),
        64
    );
}

#[test]
fn device_gone_mid_scan_goes_offline() {
    let mut c = VConfig::default_library();
    c.dvcid = true;
    let mut s = Sim::new(c, LibraryOptions { chunk: 4, ..LibraryOptions::default() });
    s.drive_bounded(10_000, |s| s.lib.state() == LibraryState::Scanning);
    s.target.inject(Fault::Disappear { device: Device::Changer });
    s.drive_bounded(1000, |s| s.lib.state() == LibraryState::Offline);
    assert_eq!(s.inventories(), 0);
    // Plugged back in: probing starts over and the library comes back.
    s.target = vlib::Target::new({
        let mut c = VConfig::default_library();
        c.dvcid = true;
        c
    })
    .unwrap();
    s.lib.reattach(4, s.now);
    s.ready();
    s.assert_agrees();
}

/// Options that retry a refused changer command after 10 ms, doubling up to 300 ms (the defaults, 1 s to 30 s,
/// scaled by 1/100).
fn fast_retries() -> LibraryOptions {
    LibraryOptions { retry_first_ms: 10, retry_max_ms: 300, ..LibraryOptions::default() }
}

/// Steps until `done` (at most `max_steps`), calling `observe` after every step.
fn step_until(s: &mut Sim, max_steps: usize, done: impl Fn(&Sim) -> bool, mut observe: impl FnMut(&Sim)) {
    for _ in 0..max_steps {
        if done(s) {
            return;
        }
        assert!(s.step(), "stalled at {} ms in state {:?}", s.now, s.lib.state());
        observe(s);
    }
    assert!(done(s), "not done after {max_steps} steps ({:?} at {} ms)", s.lib.state(), s.now);
}

#[test]
fn a_changer_not_ready_at_start_up_comes_online_once_ready() {
    let mut c = VConfig::default_library();
    c.dvcid = true;
    let mut s = Sim::new(c, fast_retries());
    // NOT READY 04/01 to everything but INQUIRY for 2 s, injected before the first command: MODE SENSE is refused
    // many more times than the backoff has doubling steps. (Issue: one retry was sent, then nothing.)
    s.target.inject(Fault::NotReadyFor { device: Device::Changer, ms: 2_000 });
    let mut reasons: Vec<(LibraryState, String)> = Vec::new();
    step_until(
        &mut s,
        10_000,
        |s| s.lib.state() == LibraryState::Ready,
        |s| {
            if let Some(r) = s.lib.not_ready_reason() {
                if !reasons.iter().any(|(st, why)| *st == s.lib.state() && why == r) {
                    reasons.push((s.lib.state(), r.to_owned()));
                }
            }
        },
    );
    let why = "not ready: 04h/01h logical unit is in process of becoming ready".to_owned();
    assert_eq!(reasons, vec![(LibraryState::Probing, why)]);
    assert_eq!(s.lib.not_ready_reason(), None, "answered: nothing to wait for");
    assert!(s.now >= 2_000, "ready only once the changer is ({} ms)", s.now);
    assert!(s.now <= 2_000 + 300 + 20, "asked again within the longest backoff ({} ms)", s.now);
    // Backoff, not a storm: 10, 20, 40, ... 300, 300 ms apart (about a dozen refusals in 2 s, not 200).
    let refusals = s.target.snapshot().counters.check_conditions;
    assert!((8..=16).contains(&refusals), "{refusals} refusals");
    // No probing step was lost: identity, address assignment and every element agree with the hardware.
    assert_eq!(s.lib.identity().serial, "VLIB0000");
    assert!(s.lib.addresses().is_some());
    s.assert_agrees();
    let mapped = s.lib.elements().iter().filter(|e| e.element_type == ElementType::DataTransfer && e.device.is_some());
    assert_eq!(mapped.count(), 4);
    // And it works.
    s.move_and_wait(1, 1000, 500).unwrap();
    s.assert_agrees();
}

#[test]
fn a_changer_not_ready_mid_scan_is_waited_out() {
    let mut c = VConfig::default_library();
    c.dvcid = true;
    let mut s = Sim::new(c, LibraryOptions { chunk: 4, ..fast_retries() });
    s.drive_bounded(10_000, |s| s.lib.state() == LibraryState::Scanning);
    s.target.inject(Fault::NotReadyFor { device: Device::Changer, ms: 1_000 });
    s.drive_bounded(10_000, |s| s.lib.not_ready_reason().is_some());
    assert_eq!(s.lib.state(), LibraryState::Scanning);
    s.ready();
    assert_eq!(s.lib.not_ready_reason(), None);
    s.assert_agrees();
    assert_eq!(s.inventories(), 1);
}

#[test]
fn a_changer_that_stays_not_ready_is_asked_at_the_longest_backoff_forever() {
    let mut c = VConfig::default_library();
    c.dvcid = true;
    let mut s = Sim::new(c, fast_retries());
    s.target.inject(Fault::NotReadyFor { device: Device::Changer, ms: 3_600_000 });
    let probing = |s: &Sim| {
        assert_eq!(s.lib.state(), LibraryState::Probing, "at {} ms", s.now);
        // (The first INQUIRYs are answered: the reason shows from the first refusal on.)
        let reason = s.lib.not_ready_reason();
        assert!(s.now < 10 || reason.is_some_and(|r| r.contains("04h/01h")), "at {} ms: {reason:?}", s.now);
    };
    step_until(&mut s, 10_000, |s| s.now >= 10_000, probing);
    let (t1, c1) = (s.now, s.target.snapshot().counters.check_conditions);
    step_until(&mut s, 10_000, |s| s.now >= 40_000, probing);
    let (t2, c2) = (s.now, s.target.snapshot().counters.check_conditions);
    // One attempt per 300 ms (+1 ms for the command itself), no faster and no slower.
    let expected = (t2 - t1) / 301;
    assert!((expected - 1..=expected + 1).contains(&(c2 - c1)), "{} attempts in {} ms", c2 - c1, t2 - t1);
    let next = s.lib.poll_timeout().map(|t| t.saturating_sub(s.now));
    assert!(s.lib.machine.in_flight() == 1 || next.is_some_and(|t| t <= 300), "still asking ({next:?})");
}

fn timed() -> Sim {
    timed_with(|_| {})
}

/// [`timed_with`], giving up on a drive that is not ready `ready_timeout_ms` after its load.
fn timed_with_ready_timeout(adjust: impl FnOnce(&mut VConfig), ready_timeout_ms: Millis) -> Sim {
    let mut c = VConfig::default_library();
    c.dvcid = true;
    c.time_scale = 0.01;
    adjust(&mut c);
    let options = LibraryOptions {
        poll_first_ms: 10,
        poll_max_ms: MAX_POLL_SLACK,
        ready_timeout_ms,
        ..LibraryOptions::default()
    };
    Sim::new(c, options)
}

/// [`timed`] with the emulator's configuration adjusted first.
fn timed_with(adjust: impl FnOnce(&mut VConfig)) -> Sim {
    timed_with_ready_timeout(adjust, super::mounts::READY_TIMEOUT_MS)
}

#[test]
fn mount_waits_for_drive_ready_and_dismount_returns_home() {
    let mut s = timed();
    s.ready();
    s.lib.submit_job(1, JobKind::Mount { source: 1000, drive: DriveChoice::Any }, 0, None);
    let o = s.wait_outcome(1);
    assert_eq!(o.result, Ok(()));
    let drive = o.drive.unwrap();
    let load = s.target.config().scaled(s.target.config().timing.load_ms);
    let robot = s.target.config().scaled(s.target.config().timing.move_ms);
    assert!(s.now >= robot + load, "ready only after the load ({} ms)", s.now);
    // The emulator agrees the drive is loaded and ready.
    let snap = s.target.snapshot();
    assert_eq!(snap.drives[0].status, vlib::DriveStatus::Ready);
    s.lib.submit_job(2, JobKind::Dismount { drive, home: Some(1000) }, 0, None);
    assert_eq!(s.wait_outcome(2).result, Ok(()));
    s.assert_agrees();
    assert_eq!(s.lib.element(1000).unwrap().barcode.as_deref(), Some("ABC001L6"));
}

#[test]
fn the_robot_serves_the_next_mount_while_a_drive_threads() {
    let mut s = timed();
    s.ready();
    let start = s.now;
    for (id, slot) in [(1, 1000), (2, 1001), (3, 1002), (4, 1003)] {
        s.lib.submit_job(id, JobKind::Mount { source: slot, drive: DriveChoice::Any }, 0, None);
    }
    for id in 1..=4 {
        assert_eq!(s.wait_outcome(id).result, Ok(()));
    }
    let robot = s.target.config().scaled(s.target.config().timing.move_ms);
    let load = s.target.config().scaled(s.target.config().timing.load_ms);
    let makespan = s.now - start;
    // Robot-bound floor: 4 moves back to back, then the last drive's load.
    let floor = 4 * robot + load;
    assert!(makespan >= floor, "{makespan} < floor {floor}");
    assert!(makespan < 4 * (robot + load), "pipelined ({makespan} ms), not serial ({} ms)", 4 * (robot + load));
    assert!(makespan <= floor + floor / 20 + MAX_POLL_SLACK, "within 5% of the floor: {makespan} vs {floor}");
    let drives: std::collections::HashSet<u16> = (1..=4).map(|id| s.outcome(id).unwrap().drive.unwrap()).collect();
    assert_eq!(drives.len(), 4);
}

/// A write-protected cartridge `WPX001L6` in storage slot 17 (address 1016, empty in the default library).
fn write_protected_in_slot_17() -> vlib::config::Cartridge {
    vlib::config::Cartridge {
        write_protected: true,
        ..vlib::config::Cartridge::new("WPX001L6", vlib::config::Location::Slot(17))
    }
}

/// TEST UNIT READY polling can notice readiness up to one (scaled) poll interval late.
const MAX_POLL_SLACK: u64 = super::mounts::MAX_POLL_MS / 100;

#[test]
fn priority_reorders_the_queue_and_cancel_drops_a_queued_job() {
    let mut s = timed();
    s.ready();
    // Occupy the robot, then queue a low and a high priority mount.
    s.lib.submit_job(1, JobKind::Mount { source: 1000, drive: DriveChoice::Element(500) }, 0, None);
    s.pump_mounts();
    s.lib.submit_job(2, JobKind::Mount { source: 1001, drive: DriveChoice::Any }, -5, None);
    s.lib.submit_job(3, JobKind::Mount { source: 1002, drive: DriveChoice::Any }, 10, None);
    s.lib.submit_job(4, JobKind::Mount { source: 1003, drive: DriveChoice::Any }, 0, None);
    s.lib.submit_job(5, JobKind::Mount { source: 1004, drive: DriveChoice::Any }, -5, None);
    assert!(s.lib.cancel_job(4));
    // Reordered while queued: job 5 goes before job 3; job 1 has started and cannot be reordered.
    assert!(s.lib.set_job_priority(5, 12));
    assert!(!s.lib.set_job_priority(1, 15), "a started job keeps its place");
    assert!(!s.lib.set_job_priority(4, 15), "a cancelled job is gone");
    for id in [1, 2, 3, 5] {
        assert_eq!(s.wait_outcome(id).result, Ok(()));
    }
    assert_eq!(s.outcome(4).unwrap().result, Err(JobError::Cancelled));
    let pos = |id| s.outcomes.iter().position(|o| o.id == id).unwrap();
    assert!(pos(3) < pos(2), "priority 10 before priority -5");
    assert!(pos(5) < pos(3), "raised to 12: before priority 10");
    assert!(pos(1) < pos(5), "the running job first");
    s.assert_agrees();
    assert!(s.lib.element(1003).unwrap().full, "the cancelled cartridge never moved");
}

#[test]
fn cancel_after_the_move_undoes_the_mount() {
    let mut s = timed();
    s.ready();
    s.lib.submit_job(1, JobKind::Mount { source: 1000, drive: DriveChoice::Element(501) }, 0, None);
    // Let the move finish, then cancel while the drive threads.
    s.drive_bounded(10_000, |s| s.lib.element(501).is_some_and(|e| e.full));
    assert!(s.lib.cancel_job(1));
    assert_eq!(s.wait_outcome(1).result, Err(JobError::Cancelled));
    s.assert_agrees();
    assert!(s.lib.element(1000).unwrap().full && !s.lib.element(501).unwrap().full, "back home");
}

#[test]
fn a_timeout_in_the_queue_or_on_the_drive_leaves_a_known_state() {
    let mut s = timed();
    s.ready();
    let deadline = s.now + 50;
    s.lib.submit_job(1, JobKind::Mount { source: 1000, drive: DriveChoice::Element(500) }, 0, Some(deadline));
    assert_eq!(s.wait_outcome(1).result, Err(JobError::TimedOut));
    s.drive_bounded(10_000, |s| (s.lib.jobs_pending() == 0) && s.lib.moves_pending() == 0);
    s.assert_agrees();
    assert!(s.lib.element(1000).unwrap().full);
}

#[test]
fn robot_jam_and_a_drive_that_will_not_unload_fail_specifically() {
    let mut s = timed();
    s.ready();
    s.target.inject(Fault::RobotJam { next_moves: 1 });
    s.lib.submit_job(1, JobKind::Mount { source: 1000, drive: DriveChoice::Any }, 0, None);
    assert_eq!(s.wait_outcome(1).result, Err(JobError::Move(MoveError::Refused(Failure::Hardware(0x15, 0x01)))));
    // The library stays usable: the same mount works now.
    s.lib.submit_job(2, JobKind::Mount { source: 1000, drive: DriveChoice::Element(500) }, 0, None);
    assert_eq!(s.wait_outcome(2).result, Ok(()));
    s.target.inject(Fault::DriveWontUnload { drive: 0 });
    s.lib.submit_job(3, JobKind::Dismount { drive: 500, home: Some(1000) }, 0, None);
    let o = s.wait_outcome(3);
    assert!(matches!(o.result, Err(JobError::UnloadRefused(_)) | Err(JobError::Move(_))), "{o:?}");
    s.drive_bounded(10_000, |s| s.lib.moves_pending() == 0 && s.lib.machine.changer_idle());
    s.assert_agrees();
    // Other drives are not disturbed.
    s.lib.submit_job(4, JobKind::Mount { source: 1001, drive: DriveChoice::Any }, 0, None);
    assert_eq!(s.wait_outcome(4).result, Ok(()));
}

#[test]
fn destination_full_and_device_gone_mid_move() {
    let mut s = timed();
    s.ready();
    // The cache says 500 is empty but the hardware disagrees: vlib refuses with 3B/0D, the library re-reads.
    s.lib.submit_job(1, JobKind::Mount { source: 1000, drive: DriveChoice::Element(500) }, 0, None);
    assert_eq!(s.wait_outcome(1).result, Ok(()));
    std::sync::Arc::make_mut(&mut s.lib.machine.elements).iter_mut().find(|e| e.address == 500).unwrap().full = false;
    s.lib.submit_job(2, JobKind::Mount { source: 1001, drive: DriveChoice::Element(500) }, 0, None);
    assert_eq!(s.wait_outcome(2).result, Err(JobError::Move(MoveError::Refused(Failure::DestinationFull))));
    s.drive_bounded(10_000, |s| s.lib.element(500).is_some_and(|e| e.full));
    // The changer vanishes while the robot moves.
    s.lib.submit_job(3, JobKind::Mount { source: 1002, drive: DriveChoice::Element(501) }, 0, None);
    s.drive_bounded(10_000, |s| s.lib.moves_pending() == 1 && s.lib.machine.in_flight() > 0);
    s.target.inject(Fault::Disappear { device: Device::Changer });
    let o = s.wait_outcome(3);
    assert_eq!(o.result, Err(JobError::Move(MoveError::Offline)));
}

#[test]
fn source_empty_and_a_drive_that_never_becomes_ready_fail_specifically() {
    let mut s = timed_with_ready_timeout(|_| {}, 2_000);
    s.ready();
    // The cache believes slot 1016 holds a cartridge (an operator took it out by hand): vlib refuses with 3B/0E
    // and the library re-reads the slot.
    let e = std::sync::Arc::make_mut(&mut s.lib.machine.elements).iter_mut().find(|e| e.address == 1016).unwrap();
    (e.full, e.barcode) = (true, Some("GONE01L6".into()));
    s.lib.submit_job(1, JobKind::Mount { source: 1016, drive: DriveChoice::Any }, 0, None);
    assert_eq!(s.wait_outcome(1).result, Err(JobError::Move(MoveError::Refused(Failure::SourceEmpty))));
    s.drive_bounded(10_000, |s| s.lib.element(1016).is_some_and(|e| !e.full));
    s.assert_agrees();
    // Drive 0 keeps answering "becoming ready": the mount gives up after the ready timeout with its own error and
    // takes the cartridge back home.
    s.target.inject(Fault::NotReadyFor { device: Device::Drive(0), ms: 3_600_000 });
    s.lib.submit_job(2, JobKind::Mount { source: 1000, drive: DriveChoice::Element(500) }, 0, None);
    let o = s.wait_outcome(2);
    assert!(matches!(o.result, Err(JobError::NotReady(_))), "{o:?}");
    assert!(s.now >= 2_000, "waited for the ready timeout");
    s.drive_bounded(10_000, |s| (s.lib.jobs_pending() == 0) && s.lib.moves_pending() == 0);
    s.assert_agrees();
    assert!(s.lib.element(1000).unwrap().full && !s.lib.element(500).unwrap().full, "back home");
    // The other drives are not disturbed, and a mount for any drive avoids the one that failed.
    s.lib.submit_job(3, JobKind::Mount { source: 1001, drive: DriveChoice::Any }, 0, None);
    let o = s.wait_outcome(3);
    assert_eq!(o.result, Ok(()));
    assert_ne!(o.drive, Some(500));
}

#[test]
fn a_drive_without_load_unload_is_unloaded_by_the_move_out() {
    let mut s = timed_with(|c| c.drive_load_unload = false);
    s.ready();
    s.lib.submit_job(1, JobKind::Mount { source: 1000, drive: DriveChoice::Element(500) }, 0, None);
    assert_eq!(s.wait_outcome(1).result, Ok(()));
    s.lib.submit_job(2, JobKind::Dismount { drive: 500, home: Some(1000) }, 0, None);
    assert_eq!(s.wait_outcome(2).result, Ok(()), "LOAD UNLOAD refused as unsupported, the move out still works");
    s.assert_agrees();
    assert!(s.lib.element(1000).unwrap().full && s.target.snapshot().counters.unloads == 1);
}

#[test]
fn a_dismount_whose_changer_vanishes_fails_offline_and_leaves_the_drive_unloaded() {
    let mut s = timed();
    s.ready();
    s.lib.submit_job(1, JobKind::Mount { source: 1000, drive: DriveChoice::Element(500) }, 0, None);
    assert_eq!(s.wait_outcome(1).result, Ok(()));
    // The changer goes while the drive unloads: the move out cannot happen.
    s.lib.submit_job(2, JobKind::Dismount { drive: 500, home: Some(1000) }, 0, None);
    s.pump_mounts();
    s.target.inject(Fault::Disappear { device: Device::Changer });
    let o = s.wait_outcome(2);
    assert!(matches!(o.result, Err(JobError::Offline | JobError::Move(MoveError::Offline))), "{o:?}");
    assert_eq!(s.lib.state(), LibraryState::Offline);
    assert!((s.lib.jobs_pending() == 0), "nothing left waiting for a robot that is gone");
    assert_eq!(s.target.snapshot().drives[0].status, vlib::DriveStatus::Ejected, "unloaded, ready for an operator");
}

#[test]
fn a_write_mount_of_a_write_protected_cartridge_fails_and_puts_it_back() {
    let mut s = timed_with(|c| c.cartridges.push(write_protected_in_slot_17()));
    s.ready();
    s.lib.submit_job(1, JobKind::Mount { source: 1016, drive: DriveChoice::Element(500) }, 0, None);
    s.lib.set_write_intent(1);
    assert_eq!(s.wait_outcome(1).result, Err(JobError::WriteProtected));
    s.drive_bounded(10_000, |s| (s.lib.jobs_pending() == 0) && s.lib.moves_pending() == 0);
    s.assert_agrees();
    assert!(s.lib.element(1016).unwrap().full && !s.lib.element(500).unwrap().full, "back home");
    // For reading it mounts; a writable cartridge mounts for writing.
    s.lib.submit_job(2, JobKind::Mount { source: 1016, drive: DriveChoice::Element(500) }, 0, None);
    assert_eq!(s.wait_outcome(2).result, Ok(()));
    s.lib.submit_job(3, JobKind::Mount { source: 1000, drive: DriveChoice::Element(501) }, 0, None);
    s.lib.set_write_intent(3);
    assert_eq!(s.wait_outcome(3).result, Ok(()));
}

#[test]
fn a_dismount_whose_home_slot_was_taken_goes_to_a_free_slot() {
    let mut s = timed();
    s.ready();
    s.lib.submit_job(1, JobKind::Mount { source: 1000, drive: DriveChoice::Element(500) }, 0, None);
    assert_eq!(s.wait_outcome(1).result, Ok(()));
    // Meanwhile another cartridge was put in its home slot.
    assert_eq!(s.move_and_wait(7, 1001, 1000), Ok(()));
    s.lib.submit_job(2, JobKind::Dismount { drive: 500, home: Some(1000) }, 0, None);
    assert_eq!(s.wait_outcome(2).result, Ok(()));
    s.assert_agrees();
    let snap = s.target.snapshot();
    let at = snap.elements.iter().find(|e| e.barcode.as_deref() == Some("ABC001L6")).unwrap();
    assert_eq!(at.kind, vlib::ElementType::Storage, "in a storage slot, not in a mail slot or a drive");
    assert_eq!(at.address, 1001, "the first free one");
    assert_eq!(snap.elements.iter().find(|e| e.address == 1000).unwrap().barcode.as_deref(), Some("ABC002L6"));
}

#[test]
fn a_dismount_with_no_free_slot_fails_library_full_and_leaves_the_cartridge_in_the_drive() {
    use vlib::config::{Cartridge, Location};
    // Every storage slot full, and one more cartridge in a mail slot.
    let mut s = timed_with(|c| {
        for (slot, barcode) in [(17, "FIL017L6"), (18, "FIL018L6"), (19, "FIL019L6")] {
            c.cartridges.push(Cartridge::new(barcode, Location::Slot(slot)));
        }
        c.cartridges.push(Cartridge::new("IMP001L6", Location::Ie(1)));
    });
    s.ready();
    s.lib.submit_job(1, JobKind::Mount { source: 1000, drive: DriveChoice::Element(500) }, 0, None);
    assert_eq!(s.wait_outcome(1).result, Ok(()));
    assert_eq!(s.move_and_wait(7, 10, 1000), Ok(()), "the imported cartridge takes the free home slot");
    s.lib.submit_job(2, JobKind::Dismount { drive: 500, home: Some(1000) }, 0, None);
    assert_eq!(s.wait_outcome(2).result, Err(JobError::NoFreeSlot));
    s.drive_bounded(10_000, |s| (s.lib.jobs_pending() == 0) && s.lib.moves_pending() == 0);
    s.assert_agrees();
    assert_eq!(s.lib.element(500).unwrap().barcode.as_deref(), Some("ABC001L6"), "still in the drive");
    // Room again: the same dismount works.
    assert_eq!(s.move_and_wait(8, 1000, 10), Ok(()));
    s.lib.submit_job(3, JobKind::Dismount { drive: 500, home: Some(1000) }, 0, None);
    assert_eq!(s.wait_outcome(3).result, Ok(()));
    s.assert_agrees();
}

/// K applications each mount a cartridge and dismount it as soon as the mount is done, over the default library's
/// 4 drives: the robot refills a drive as soon as it is emptied (mount first), and the whole run ends within 5 % of
/// the optimal schedule of the ideal model ([`super::bound::optimum`]), polling delays included. The second round
/// adds a 40 s (scaled) hold per cartridge, as a longer unload: the drives bound that one.
#[test]
fn mounts_and_dismounts_run_close_to_the_optimal_schedule() {
    for hold_ms in [0, 40_000] {
        let mut s = timed_with(|c| c.timing.unload_ms += hold_ms);
        s.ready();
        let start = s.now;
        let k = 16u64;
        for n in 0..k {
            let source = 1000 + u16::try_from(n).unwrap();
            s.lib.submit_job(n + 1, JobKind::Mount { source, drive: DriveChoice::Any }, 0, None);
        }
        let (mut seen, mut dismounted) = (0, 0);
        while dismounted < k {
            s.drive_bounded(100_000, |s| s.outcomes.len() > seen);
            for i in seen..s.outcomes.len() {
                let o = s.outcomes[i].clone();
                assert_eq!(o.result, Ok(()), "job {}", o.id);
                if o.id <= k {
                    let home = Some(999 + u16::try_from(o.id).unwrap());
                    s.lib.submit_job(100 + o.id, JobKind::Dismount { drive: o.drive.unwrap(), home }, 0, None);
                } else {
                    dismounted += 1;
                }
            }
            seen = s.outcomes.len();
        }
        let makespan = s.now - start;
        let cfg = s.target.config();
        let mv = cfg.scaled(cfg.timing.move_ms);
        let busy = cfg.scaled(cfg.timing.load_ms) + cfg.scaled(cfg.timing.unload_ms);
        let opt = super::bound::optimum(k, 4, mv, busy);
        assert!(makespan >= opt, "hold {hold_ms}: {makespan} ms beats the optimum {opt} ms: the model is wrong");
        assert!(makespan * 100 <= opt * 105, "hold {hold_ms}: {makespan} ms is over 5 % above the optimum {opt} ms");
        s.assert_agrees();
        // Mount first: while cartridges wait, every move out of a drive is followed by a move into a drive.
        let log = s.target.snapshot().robot_log;
        assert_eq!(log.len(), 2 * usize::try_from(k).unwrap());
        let is_drive = |a: u16| (500..504).contains(&a);
        let mut mounted = 0;
        for w in log.windows(2) {
            mounted += usize::from(is_drive(w[0].destination));
            if is_drive(w[0].source) && mounted < 16 {
                assert!(is_drive(w[1].destination), "hold {hold_ms}: a move out followed by another: {w:?}");
            }
        }
    }
}

/// [`timed_with`] on a library that answers a one-element READ ELEMENT STATUS with no data, as tgt does.
fn timed_tgt_short() -> Sim {
    timed_with(|c| c.short_single_element_status = true)
}

#[test]
fn a_failed_move_rereads_what_a_library_answering_one_element_short_reports() {
    let mut s = timed_tgt_short();
    s.ready();
    // Behind rsmd's back (`mtx load 3 0`): the cache still shows the cartridge in slot 3 and drive 0 empty.
    s.target.move_by_hand(1002, 500).unwrap();
    assert_eq!(s.move_and_wait(1, 1002, 501), Err(MoveError::Refused(Failure::SourceEmpty)));
    s.drive_bounded(10_000, |s| s.lib.machine.inventory_settled() && s.lib.machine.changer_idle());
    s.assert_agrees();
    assert_eq!(s.lib.element(500).unwrap().barcode.as_deref(), Some("ABC003L6"));
    // The same for a full destination.
    s.target.move_by_hand(1003, 501).unwrap();
    assert_eq!(s.move_and_wait(2, 1004, 501), Err(MoveError::Refused(Failure::DestinationFull)));
    s.drive_bounded(10_000, |s| s.lib.machine.inventory_settled() && s.lib.machine.changer_idle());
    s.assert_agrees();
    assert_eq!(s.inventories(), 1, "narrow re-reads, no full rescan");
}

#[test]
fn one_element_chunks_on_a_library_answering_one_element_short() {
    let mut c = VConfig::default_library();
    c.dvcid = true;
    c.short_single_element_status = true;
    let mut s = Sim::new(c, LibraryOptions { chunk: 1, ..LibraryOptions::default() });
    s.ready();
    s.assert_agrees();
    s.target.move_by_hand(1000, 503).unwrap();
    assert_eq!(s.move_and_wait(1, 1001, 503), Err(MoveError::Refused(Failure::DestinationFull)));
    s.drive_bounded(10_000, |s| s.lib.machine.inventory_settled() && s.lib.machine.changer_idle());
    s.assert_agrees();
}

#[test]
fn a_mount_of_a_cartridge_already_in_a_drive_completes_there() {
    let mut s = timed_tgt_short();
    s.ready();
    s.target.move_by_hand(1002, 500).unwrap();
    s.lib.submit_job(1, JobKind::Mount { source: 1002, drive: DriveChoice::Any }, 0, None);
    let o = s.wait_outcome(1);
    assert_eq!(o, Outcome { id: 1, drive: Some(500), result: Ok(()), alerts: None, read: None });
    assert_eq!(s.target.snapshot().drives[0].status, vlib::DriveStatus::Ready, "answered TEST UNIT READY");
    s.drive_bounded(10_000, |s| s.lib.machine.inventory_settled() && s.lib.machine.changer_idle());
    s.assert_agrees();
    // And it dismounts like any other mount.
    s.lib.submit_job(2, JobKind::Dismount { drive: 500, home: Some(1002) }, 0, None);
    assert_eq!(s.wait_outcome(2).result, Ok(()));
    s.assert_agrees();
    assert_eq!(s.lib.element(1002).unwrap().barcode.as_deref(), Some("ABC003L6"));
}

#[test]
fn a_mount_of_a_cartridge_moved_to_another_slot_is_retried_from_there() {
    let mut s = timed_tgt_short();
    s.ready();
    s.target.move_by_hand(1002, 1016).unwrap();
    s.lib.submit_job(1, JobKind::Mount { source: 1002, drive: DriveChoice::Element(501) }, 0, None);
    assert_eq!(s.wait_outcome(1), Outcome { id: 1, drive: Some(501), result: Ok(()), alerts: None, read: None });
    s.assert_agrees();
    assert_eq!(s.lib.element(501).unwrap().barcode.as_deref(), Some("ABC003L6"));
    let log = s.target.snapshot().robot_log;
    assert_eq!(log.iter().map(|m| (m.source, m.destination)).collect::<Vec<_>>(), vec![(1016, 501)]);
}

#[test]
fn a_mount_into_a_drive_filled_behind_our_back_goes_to_another_drive() {
    let mut s = timed_tgt_short();
    s.ready();
    s.target.move_by_hand(1003, 500).unwrap();
    s.lib.submit_job(1, JobKind::Mount { source: 1000, drive: DriveChoice::Any }, 0, None);
    assert_eq!(s.wait_outcome(1), Outcome { id: 1, drive: Some(501), result: Ok(()), alerts: None, read: None });
    s.assert_agrees();
    // Asked for that very drive: the refusal stands (and the cache is corrected).
    s.target.move_by_hand(1004, 502).unwrap();
    s.lib.submit_job(2, JobKind::Mount { source: 1001, drive: DriveChoice::Element(502) }, 0, None);
    assert_eq!(s.wait_outcome(2).result, Err(JobError::Move(MoveError::Refused(Failure::DestinationFull))));
    s.drive_bounded(10_000, |s| s.lib.machine.inventory_settled() && s.lib.machine.changer_idle());
    s.assert_agrees();
}

#[test]
fn a_gone_drive_fails_its_jobs_is_avoided_and_is_used_again_once_back() {
    let mut s = timed();
    s.ready();
    // Drive device 0 (element 500) disappears.
    s.target.inject(Fault::Disappear { device: Device::Drive(0) });
    s.lib.drive_gone(0);
    assert!(!s.lib.drive_usable(0));
    s.lib.submit_job(1, JobKind::Mount { source: 1000, drive: DriveChoice::Element(500) }, 0, None);
    assert_eq!(
        s.wait_outcome(1),
        Outcome { id: 1, drive: None, result: Err(JobError::DriveGone), alerts: None, read: None }
    );
    s.lib.submit_job(2, JobKind::Mount { source: 1000, drive: DriveChoice::Any }, 0, None);
    let o = s.wait_outcome(2);
    assert_eq!(o.result, Ok(()));
    assert_ne!(o.drive, Some(500), "a mount for any drive does not choose the gone one");
    // A drive that goes while a mount waits for it to become ready: the job fails now, the cartridge stays in it.
    s.lib.submit_job(3, JobKind::Mount { source: 1001, drive: DriveChoice::Element(502) }, 0, None);
    s.drive_bounded(10_000, |s| s.lib.element(502).is_some_and(|e| e.full));
    s.target.inject(Fault::Disappear { device: Device::Drive(2) });
    s.lib.drive_gone(2);
    assert_eq!(
        s.wait_outcome(3),
        Outcome { id: 3, drive: Some(502), result: Err(JobError::DriveGone), alerts: None, read: None }
    );
    // A queued dismount of it fails too, and nothing is left in flight to it.
    s.lib.submit_job(4, JobKind::Dismount { drive: 502, home: Some(1001) }, 0, None);
    assert_eq!(s.wait_outcome(4).result, Err(JobError::DriveGone));
    s.drive_bounded(10_000, |s| s.lib.jobs_pending() == 0 && s.lib.machine.in_flight() == 0);
    s.assert_agrees();
    // Drive 0 comes back: identified again (INQUIRY, VPD 80h), then used again.
    s.target.plug_back(Device::Drive(0));
    s.lib.drive_back(0, s.now);
    assert!(!s.lib.drive_usable(0), "not before it has answered");
    s.drive_bounded(10_000, |s| s.lib.drive_usable(0));
    assert_eq!(s.lib.drive_identities()[0].as_ref().map(|i| i.serial.as_str()), Some("VDRV0000"));
    assert_eq!(s.lib.element(500).unwrap().device, Some(0));
    s.lib.submit_job(5, JobKind::Mount { source: 1002, drive: DriveChoice::Element(500) }, 0, None);
    assert_eq!(s.wait_outcome(5), Outcome { id: 5, drive: Some(500), result: Ok(()), alerts: None, read: None });
    s.assert_agrees();
}

#[test]
fn a_job_deadline_fires_while_the_drive_never_answers() {
    let grace = 1_000;
    let mut c = VConfig::default_library();
    c.dvcid = true;
    c.time_scale = 0.01;
    let options =
        LibraryOptions { poll_first_ms: 10, poll_max_ms: MAX_POLL_SLACK, abort_grace_ms: grace, ..Default::default() };
    let mut s = Sim::new(c, options);
    s.ready();
    // Drive 1 hangs: present, but its TEST UNIT READY (60 s timeout) and the undo's LOAD UNLOAD are swallowed.
    s.target.inject(Fault::Hang { device: Device::Drive(1) });
    let deadline = s.now + 2_000;
    s.lib.submit_job(1, JobKind::Mount { source: 1000, drive: DriveChoice::Element(501) }, 0, Some(deadline));
    let o = s.wait_outcome(1);
    assert_eq!(
        o,
        Outcome { id: 1, drive: Some(501), result: Err(JobError::DriveGone), alerts: None, read: None },
        "cannot be undone"
    );
    assert!(s.now >= deadline && s.now <= deadline + grace, "ended {} ms after the deadline", s.now - deadline);
    // Known state: the cartridge is in the drive, as the cache says; the drive is avoided.
    s.assert_agrees();
    assert!(s.lib.element(501).unwrap().full);
    assert!(s.lib.suspect_drives().contains(&501));
    // A drive that answers again is undone properly on a deadline: TimedOut, and the cartridge back home.
    s.target.inject(Fault::NotReadyFor { device: Device::Drive(2), ms: 3_600_000 });
    let deadline = s.now + 500;
    s.lib.submit_job(2, JobKind::Mount { source: 1001, drive: DriveChoice::Element(502) }, 0, Some(deadline));
    assert_eq!(s.wait_outcome(2).result, Err(JobError::TimedOut));
    s.drive_bounded(10_000, |s| s.lib.jobs_pending() == 0 && s.lib.moves_pending() == 0);
    s.assert_agrees();
    assert!(s.lib.element(1001).unwrap().full && !s.lib.element(502).unwrap().full, "back home");
}

mod random {
    //! Random programs of mounts, dismounts, cancels, reorders, timeouts and faults against the simulation: every
    //! job ends exactly once, nothing is left running, no cartridge is lost, and the library's view agrees with
    //! the hardware's.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Mount { slot: u16, drive: Option<u16>, any_of: bool, write: bool, priority: i32, deadline: Option<Millis> },
        Dismount { drive: u16 },
        Cancel { back: usize },
        Reorder { back: usize, priority: i32 },
        Run { steps: usize },
        Jam,
        NotReady { drive: usize, ms: u64 },
        Attention { drive: Option<usize> },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (
                (0..17u16, proptest::option::of(0..4u16), any::<bool>(), any::<bool>()),
                (-3..4i32, proptest::option::of(50..2_000u64))
            )
                .prop_map(|((slot, drive, any_of, write), (priority, deadline))| Op::Mount {
                    slot,
                    drive,
                    any_of,
                    write,
                    priority,
                    deadline
                }),
            2 => (0..4u16).prop_map(|drive| Op::Dismount { drive }),
            1 => (0..8usize).prop_map(|back| Op::Cancel { back }),
            1 => (0..8usize, -3..4i32).prop_map(|(back, priority)| Op::Reorder { back, priority }),
            3 => (1..400usize).prop_map(|steps| Op::Run { steps }),
            1 => Just(Op::Jam),
            1 => (0..4usize, 10..3_000u64).prop_map(|(drive, ms)| Op::NotReady { drive, ms }),
            1 => proptest::option::of(0..4usize).prop_map(|drive| Op::Attention { drive }),
        ]
    }

    fn barcodes(snap: &vlib::Snapshot) -> Vec<String> {
        let mut b: Vec<String> = snap.elements.iter().filter_map(|e| e.barcode.clone()).collect();
        b.sort();
        b
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn every_job_ends_once_and_the_library_stays_consistent(ops in proptest::collection::vec(op(), 1..40)) {
            let mut s = timed_with_ready_timeout(|c| c.cartridges.push(write_protected_in_slot_17()), 1_000);
            s.ready();
            let start = barcodes(&s.target.snapshot());
            let mut ids: Vec<u64> = Vec::new();
            for op in ops {
                let id = ids.len() as u64 + 1;
                match op {
                    Op::Mount { slot, drive, any_of, write, priority, deadline } => {
                        let drive = match (drive, any_of) {
                            // Two of the four drives, as for a cartridge only some generations take.
                            (_, true) => DriveChoice::AnyOf(vec![501, 503]),
                            (Some(d), false) => DriveChoice::Element(500 + d),
                            (None, false) => DriveChoice::Any,
                        };
                        let kind = JobKind::Mount { source: 1000 + slot, drive };
                        s.lib.submit_job(id, kind, priority, deadline.map(|d| s.now + d));
                        if write {
                            s.lib.set_write_intent(id);
                        }
                        ids.push(id);
                    }
                    Op::Dismount { drive } => {
                        s.lib.submit_job(id, JobKind::Dismount { drive: 500 + drive, home: None }, 0, None);
                        ids.push(id);
                    }
                    Op::Cancel { back } => {
                        if let Some(&id) = ids.iter().rev().nth(back) {
                            s.lib.cancel_job(id);
                        }
                    }
                    Op::Reorder { back, priority } => {
                        if let Some(&id) = ids.iter().rev().nth(back) {
                            s.lib.set_job_priority(id, priority);
                        }
                    }
                    Op::Run { steps } => {
                        for _ in 0..steps {
                            if !s.step() {
                                break;
                            }
                        }
                    }
                    Op::Jam => s.target.inject(Fault::RobotJam { next_moves: 1 }),
                    Op::NotReady { drive, ms } => s.target.inject(Fault::NotReadyFor { device: Device::Drive(drive), ms }),
                    Op::Attention { drive } => {
                        let device = drive.map_or(Device::Changer, Device::Drive);
                        s.target.inject(Fault::UnitAttentionAfter { device, commands: 0 });
                    }
                }
            }
            // A mount for a busy drive waits for it as long as its client does: the clients give up now.
            s.drive_bounded(100_000, |s| s.lib.state() == LibraryState::Ready || s.lib.state() == LibraryState::Offline);
            for id in &ids {
                if s.outcome(*id).is_none() {
                    s.lib.cancel_job(*id);
                }
            }
            s.pump_mounts();
            s.drive_bounded(500_000, |s| {
                (s.lib.jobs_pending() == 0)
                    && s.lib.moves_pending() == 0
                    && s.lib.state() == LibraryState::Ready
                    && s.lib.machine.in_flight() == 0
            });
            for id in &ids {
                let n = s.outcomes.iter().filter(|o| o.id == *id).count();
                prop_assert_eq!(n, 1, "job {} ended {} times: {:?}", id, n, s.outcomes);
            }
            prop_assert_eq!(barcodes(&s.target.snapshot()), start, "no cartridge lost or duplicated");
            s.assert_agrees();
        }
    }
}
