//! Deterministic simulations of the broker on vlib, without a loop: calls go in as parsed methods from peers, the
//! broker's SCSI commands go to an in-process `vlib::Target` on a virtual clock, and replies come back through
//! `poll_reply`. `Sim::drive_bounded` fails after a step budget so a livelock shows as a failure, not a hang.

use serde_json::{Map, Value};
use std::collections::HashMap;

use super::*;
use crate::changer::tests::{to_vlib, vlib_request, vlib_result};
use crate::model::Snapshot;
use crate::model::{RequestRecord, RequestStatus};
use crate::proto::types::{MountFlags, ObjectDetails};
use crate::proto::{DismountTarget, ObjectType};
use vlib::Config as VConfig;

const ROOT: Peer = Peer { pid: 100, uid: 0, gid: 0, start_time: 1 };
const ALICE: Peer = Peer { pid: 200, uid: 1000, gid: 1000, start_time: 1 };
const BOB: Peer = Peer { pid: 300, uid: 1001, gid: 1001, start_time: 1 };

type Reply = Result<Map<String, Value>, WireError>;

struct Sim {
    broker: Broker,
    target: vlib::Target,
    now: u64,
    /// Answers to calls that waited, by request.
    replies: HashMap<RequestId, Reply>,
    /// Every batch of changes handed to the store.
    persisted: Vec<Change>,
    /// The operation code of every command the broker sent.
    opcodes: Vec<u8>,
}

impl Sim {
    /// The default vlib library (4 drives, 20 slots, time scaled down 100×), loaded and ready.
    fn new() -> Sim {
        Sim::with(|_| {}, LibraryOptions { poll_first_ms: 10, poll_max_ms: 40, ..LibraryOptions::default() })
    }

    fn with(adjust: impl FnOnce(&mut VConfig), options: LibraryOptions) -> Sim {
        let mut c = VConfig::default_library();
        c.dvcid = true;
        c.time_scale = 0.01;
        adjust(&mut c);
        let drives = (0..c.drive_count()).map(|i| DriveDevice { path: format!("drive{i}"), nst: None }).collect();
        let target = vlib::Target::new(c).unwrap();
        let mut broker =
            Broker::new(BrokerOptions { host: "here".into(), administrators: vec![0], ..BrokerOptions::default() }, 7);
        broker.loaded(Snapshot::default(), HashMap::new(), 0);
        let spec = LibrarySpec { label: "sim".into(), key: "sim".into(), name: None, drives, options };
        broker.add_library(spec, 0);
        let mut s = Sim { broker, target, now: 0, replies: HashMap::new(), persisted: Vec::new(), opcodes: Vec::new() };
        s.drive_bounded(100_000, |s| s.broker.libs[0].library.state() == LibraryState::Ready);
        s
    }

    /// One step: submit the broker's commands, deliver one completion or advance time. False when idle.
    fn step(&mut self) -> bool {
        let mut progressed = false;
        while let Some((li, o)) = self.broker.poll_command() {
            progressed = true;
            let device = to_vlib(o.device);
            self.opcodes.extend(o.command.cdb.first());
            if !self.target.is_present(device) {
                self.broker.handle_completion(li, o.tag, Err(TransportError::DeviceGone), self.now);
                continue;
            }
            self.target.submit(device, vlib_request(o.tag, o.command), self.now);
        }
        self.collect();
        if let Some((_, r)) = self.target.poll_completion(self.now) {
            let tag = r.tag;
            self.broker.handle_completion(0, tag, vlib_result(r), self.now);
            self.collect();
            return true;
        }
        let next = [self.target.next_completion_at(), self.broker.poll_timeout()].into_iter().flatten().min();
        match next {
            Some(t) => {
                self.now = self.now.max(t);
                self.broker.handle_timeout(self.now);
                self.collect();
                true
            }
            None => progressed,
        }
    }

    /// Takes what the broker hands the loop: persisted changes and answers.
    fn collect(&mut self) {
        self.persisted.extend(self.broker.take_changes());
        while let Some((id, reply, _batch)) = self.broker.poll_reply() {
            assert!(self.replies.insert(id, reply).is_none(), "request {id:?} answered twice");
        }
        while self.broker.poll_notification().is_some() {}
    }

    fn drive_bounded(&mut self, max_steps: usize, done: impl Fn(&Sim) -> bool) {
        for _ in 0..max_steps {
            if done(self) {
                return;
            }
            if !self.step() && !done(self) {
                panic!("stalled at {} ms", self.now);
            }
        }
        assert!(done(self), "not done after {max_steps} steps (at {} ms)", self.now);
    }

    /// A call answered at once (panics if it waits).
    fn call(&mut self, peer: Peer, method: Method) -> Reply {
        match self.broker.handle_call(method, peer, self.now) {
            Answer::Reply(r, _) => {
                self.collect();
                r
            }
            Answer::Encoded(bytes) => decoded(&bytes),
            Answer::Building(e) => self.built(e),
            other => panic!("expected an answer at once, got {other:?}"),
        }
    }

    /// A call, then the simulation until it is answered.
    fn call_and_wait(&mut self, peer: Peer, method: Method) -> Reply {
        match self.broker.handle_call(method, peer, self.now) {
            Answer::Reply(r, _) => r,
            Answer::Encoded(bytes) => decoded(&bytes),
            Answer::Building(e) => self.built(e),
            Answer::Later { key } => self.wait(key),
            Answer::Stream { .. } => panic!("a stream"),
        }
    }

    /// An enumeration built page by page, as the loop does.
    fn built(&self, mut e: Enumeration) -> Reply {
        while !self.broker.continue_enumeration(&mut e) {}
        decoded(&e.into_bytes())
    }

    /// Submits a call that waits; returns its request.
    fn submit(&mut self, peer: Peer, method: Method) -> RequestId {
        match self.broker.handle_call(method, peer, self.now) {
            Answer::Later { key } => key,
            other => panic!("expected the call to wait, got {other:?}"),
        }
    }

    fn wait(&mut self, key: RequestId) -> Reply {
        self.drive_bounded(200_000, |s| s.replies.contains_key(&key));
        self.replies.remove(&key).unwrap()
    }

    fn open(&mut self, peer: Peer, application: &str) -> String {
        self.broker.connected(peer);
        let r = self.call(
            peer,
            Method::OpenSession { server: None, application: Some(application.into()), options: 0, version: None },
        );
        r.unwrap()["session"].as_str().unwrap().to_owned()
    }

    fn drive_holding(&self, barcode: &str) -> Option<u16> {
        let snap = self.target.snapshot();
        snap.elements
            .iter()
            .find(|e| e.kind == vlib::ElementType::Drive && e.barcode.as_deref() == Some(barcode))
            .map(|e| e.address)
    }

    fn request_state(&self, text: &str) -> RequestStatus {
        let id = self.broker.requests.find(text).unwrap();
        self.broker.requests.get(id).unwrap().state
    }
}

/// A framed reply ([`Answer::Encoded`]) as the map a reply carries.
fn decoded(bytes: &[u8]) -> Reply {
    let text = std::str::from_utf8(bytes.strip_suffix(&[0]).expect("a frame ends with NUL")).unwrap();
    match crate::proto::envelope::Response::parse(text).unwrap() {
        crate::proto::envelope::Response::Reply(r) => Ok(r.parameters),
        other => panic!("not a reply: {other:?}"),
    }
}

fn mount(session: &str, barcode: &str) -> Method {
    mount_with(session, barcode, MountFlags::default())
}

fn mount_with(session: &str, barcode: &str, flags: MountFlags) -> Method {
    Method::MountMedia {
        session: session.into(),
        media: vec![barcode.into()],
        drive: None,
        flags,
        priority: 0,
        timeout_ms: None,
        pool: None,
    }
}

fn dismount(session: &str, barcode: &str, deferred: bool) -> Method {
    Method::DismountMedia { session: session.into(), target: DismountTarget::Media(barcode.into()), deferred, to: None }
}

fn ntms(r: Reply) -> NtmsError {
    match r {
        Err(WireError::Ntms(e)) => e,
        other => panic!("expected an NTMS error, got {other:?}"),
    }
}

#[test]
fn mount_and_dismount_through_the_broker_agree_with_the_library() {
    let mut s = Sim::new();
    let a = s.open(ALICE, "bacula");
    // Issue 15: barcodes as people type them (any case, when only one cartridge matches).
    let r = s.call_and_wait(ALICE, mount(&a, "abc003l6")).unwrap();
    assert!(r["drive"].is_string(), "{r:?}");
    assert!(s.drive_holding("ABC003L6").is_some());
    s.call_and_wait(ALICE, dismount(&a, "ABC003L6", false)).unwrap();
    assert_eq!(s.drive_holding("ABC003L6"), None);
    // Both requests are persisted with the state they reached.
    let finished: Vec<&RequestRecord> = s
        .persisted
        .iter()
        .filter_map(|c| match c {
            Change::Request(r) if r.state == RequestStatus::Complete => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 2, "{finished:?}");
    assert!(finished.iter().all(|r| r.owner.uid == 1000 && r.owner.application.as_deref() == Some("bacula")));
}

/// Issue 11: a completed mount belongs to the user and application that asked, beyond the session; another user
/// gets AccessDenied, the same user and application may dismount from a later session, and so may an administrator.
#[test]
fn a_mount_belongs_to_its_user_and_application_after_the_session_ends() {
    let mut s = Sim::new();
    let a = s.open(ALICE, "bacula");
    s.call_and_wait(ALICE, mount(&a, "ABC001L6")).unwrap();
    s.call_and_wait(ALICE, mount(&a, "ABC002L6")).unwrap();
    s.broker.disconnected(ALICE, s.now);
    let b = s.open(BOB, "bacula");
    let e = ntms(s.call(BOB, dismount(&b, "ABC001L6", false)));
    assert!(matches!(&e, NtmsError::AccessDenied { message } if message.contains("bacula (uid 1000)")), "{e:?}");
    // The same user, another application: refused too.
    let alice2 = Peer { pid: 201, ..ALICE };
    let other_app = s.open(alice2, "amanda");
    assert!(matches!(ntms(s.call(alice2, dismount(&other_app, "ABC001L6", false))), NtmsError::AccessDenied { .. }));
    // The same user and application, a later session of a new process: allowed.
    let alice3 = Peer { pid: 202, ..ALICE };
    let later = s.open(alice3, "bacula");
    s.call_and_wait(alice3, dismount(&later, "ABC001L6", false)).unwrap();
    // An administrator may.
    let root = s.open(ROOT, "rsm");
    s.call_and_wait(ROOT, dismount(&root, "ABC002L6", false)).unwrap();
    assert_eq!(s.drive_holding("ABC002L6"), None);
    // The owner was recorded durably with the cartridge (and cleared when it went home).
    let owned = s
        .persisted
        .iter()
        .any(|c| matches!(c, Change::Media(m) if m.mounted_by.as_ref().is_some_and(|o| o.uid == 1000)));
    assert!(owned);
}

/// Issue 11: `nowait` requests outlive the session that submitted them (they were cancelled the moment `rsm`
/// exited), and the mount is then owned by that user and application.
#[test]
fn a_nowait_mount_outlives_its_session() {
    let mut s = Sim::new();
    let a = s.open(ALICE, "rsm");
    let r = s.call(ALICE, mount_with(&a, "ABC004L6", MountFlags { nowait: true, ..MountFlags::default() })).unwrap();
    let request = r["request"].as_str().unwrap().to_owned();
    s.broker.disconnected(ALICE, s.now);
    s.drive_bounded(200_000, |s| !s.request_state(&request).is_open());
    assert_eq!(s.request_state(&request), RequestStatus::Complete);
    assert!(s.drive_holding("ABC004L6").is_some());
    let m = s.broker.inventory.as_ref().unwrap().media_by_barcode("ABC004L6").unwrap();
    assert_eq!(m.mounted_by, Some(Owner { uid: 1000, application: Some("rsm".into()) }));
}

/// Issue 11: a client that dies while its mount waits ends its session, and the waiting mount is cancelled
/// instead of loading a cartridge for nobody.
#[test]
fn a_session_that_ends_while_its_mount_waits_cancels_it() {
    let mut s = Sim::new();
    let a = s.open(ALICE, "a");
    let b = s.open(BOB, "b");
    // Every drive busy: b's fifth mount waits for a drive.
    for n in 1..=4 {
        s.call_and_wait(ALICE, mount(&a, &format!("ABC00{n}L6"))).unwrap();
    }
    let key = s.submit(BOB, mount(&b, "ABC005L6"));
    let moves = s.target.snapshot().counters.moves;
    s.broker.disconnected(BOB, s.now);
    let e = ntms(s.wait(key));
    assert!(matches!(e, NtmsError::Cancelled { .. }), "{e:?}");
    // A drive frees: nothing is loaded for the dead client.
    s.call_and_wait(ALICE, dismount(&a, "ABC001L6", false)).unwrap();
    s.drive_bounded(100_000, |s| s.broker.libs[0].library.jobs_pending() == 0);
    assert_eq!(s.drive_holding("ABC005L6"), None);
    assert_eq!(s.target.snapshot().counters.moves, moves + 1, "only the dismount moved");
    assert_eq!(s.broker.requests.get(key).unwrap().state, RequestStatus::Cancelled);
}

/// A mount waits for a cartridge another session has, starts when it is given back, and can be reordered while
/// it waits; only its session (or an administrator) may reorder or cancel it.
#[test]
fn waiting_for_a_cartridge_in_use_then_reorder_and_cancel() {
    let mut s = Sim::new();
    let a = s.open(ALICE, "a");
    let b = s.open(BOB, "b");
    s.call_and_wait(ALICE, mount(&a, "ABC001L6")).unwrap();
    let waiting = s.submit(BOB, mount(&b, "ABC001L6"));
    let text = s.broker.requests.guid_of(waiting);
    assert_eq!(s.request_state(&text), RequestStatus::Waiting);
    let reorder = |session: &str, priority| Method::SetRequestPriority {
        session: session.into(),
        request: text.clone(),
        priority,
    };
    assert!(matches!(ntms(s.call(ALICE, reorder(&a, 5))), NtmsError::AccessDenied { .. }));
    s.call(BOB, reorder(&b, 5)).unwrap();
    assert_eq!(s.broker.requests.get(waiting).unwrap().priority, 5);
    s.call_and_wait(ALICE, dismount(&a, "ABC001L6", false)).unwrap();
    s.wait(waiting).unwrap();
    assert!(s.drive_holding("ABC001L6").is_some(), "mounted for b once a gave it back");
    // Now a waits for b, and cancels.
    let second = s.submit(ALICE, mount(&a, "ABC001L6"));
    let cancel = Method::CancelLibraryRequest { session: a.clone(), request: s.broker.requests.guid_of(second) };
    s.call(ALICE, cancel).unwrap();
    assert!(matches!(ntms(s.wait(second)), NtmsError::Cancelled { .. }));
}

/// A deferred dismount leaves the cartridge loaded; a remount within the delay needs no robot move; after the
/// delay the daemon's own (system) request puts it home, visible as a request of `rsmd`.
#[test]
fn deferred_dismount_remount_in_place_then_home_by_a_system_request() {
    let options =
        LibraryOptions { poll_first_ms: 10, poll_max_ms: 40, deferred_dismount_ms: 500, ..LibraryOptions::default() };
    let mut s = Sim::with(|_| {}, options);
    let a = s.open(ALICE, "a");
    s.call_and_wait(ALICE, mount(&a, "ABC001L6")).unwrap();
    s.call_and_wait(ALICE, dismount(&a, "ABC001L6", true)).unwrap();
    let moves = s.target.snapshot().counters.moves;
    s.call_and_wait(ALICE, mount(&a, "ABC001L6")).unwrap();
    assert_eq!(s.target.snapshot().counters.moves, moves, "mounted in place");
    s.call_and_wait(ALICE, dismount(&a, "ABC001L6", true)).unwrap();
    s.drive_bounded(200_000, |s| s.drive_holding("ABC001L6").is_none() && s.broker.libs[0].library.jobs_pending() == 0);
    let system = s.broker.requests.objects().into_iter().find(|o| {
        matches!(&o.details, ObjectDetails::LibRequest(r) if r.application.as_deref() == Some(requests::SYSTEM_APPLICATION))
    });
    assert!(system.is_some_and(|o| o.state == "complete"), "the daemon's dismount is a request like any other");
}

/// Issue 11: InventoryLibrary dropped its mode (`full` and `omid` "completed" in 2 ms). Each mode does what it says:
/// a label inventory of a library whose cartridges all have barcodes reads no tape.
#[test]
fn inventory_modes_run_what_they_say() {
    let mut s = Sim::new();
    let a = s.open(ALICE, "a");
    let library = s.broker.libs[0].id.unwrap().to_string();
    let mode = InventoryMode::Omid;
    s.opcodes.clear();
    let r = s.call(ALICE, Method::InventoryLibrary { session: a.clone(), library: library.clone(), mode }).unwrap();
    let request = r["request"].as_str().unwrap().to_owned();
    s.drive_bounded(100_000, |s| s.request_state(&request) == RequestStatus::Complete);
    assert!(s.opcodes.contains(&0xB8) && !s.opcodes.contains(&0x08), "scanned, nothing read: {:02x?}", s.opcodes);
    // Fast: READ ELEMENT STATUS only; full: INITIALIZE ELEMENT STATUS (07h) first, then the scan.
    for (mode, initializes) in [(InventoryMode::Fast, false), (InventoryMode::Full, true)] {
        s.opcodes.clear();
        let r = s.call(ALICE, Method::InventoryLibrary { session: a.clone(), library: library.clone(), mode }).unwrap();
        let request = r["request"].as_str().unwrap().to_owned();
        s.drive_bounded(100_000, |s| s.request_state(&request) == RequestStatus::Complete);
        let first_scan = s.opcodes.iter().position(|&o| o == 0xB8).expect("READ ELEMENT STATUS");
        assert_eq!(s.opcodes.contains(&0x07), initializes, "{mode:?}: {:02x?}", s.opcodes);
        if initializes {
            assert!(s.opcodes.iter().position(|&o| o == 0x07).unwrap() < first_scan, "initialize first");
        }
    }
}

/// Requests persisted by a run that was killed come back failed, with the reason, and numbering goes on.
#[test]
fn requests_of_a_killed_run_end_failed_with_the_reason() {
    let mut s = Sim::new();
    let a = s.open(ALICE, "a");
    for n in 1..=4 {
        s.call_and_wait(ALICE, mount(&a, &format!("ABC00{n}L6"))).unwrap();
    }
    // Acknowledged (nowait: the reply carries the request id, after the batch that holds it).
    let nowait = MountFlags { nowait: true, ..MountFlags::default() };
    let r = s.call(ALICE, mount_with(&a, "ABC005L6", nowait)).unwrap();
    let queued = s.broker.requests.find(r["request"].as_str().unwrap()).unwrap();
    s.collect();
    // The store as the killed daemon left it.
    let mut snapshot = Snapshot::default();
    let mut requests: HashMap<RequestId, RequestRecord> = HashMap::new();
    for c in &s.persisted {
        match c {
            Change::Request(r) => {
                requests.insert(r.id, r.clone());
            }
            Change::Media(m) => {
                snapshot.media.retain(|x: &crate::model::MediaRecord| x.id != m.id);
                snapshot.media.push(m.clone());
            }
            _ => {}
        }
    }
    let mut records: Vec<RequestRecord> = requests.into_values().collect();
    records.sort_by_key(|r| r.id);
    snapshot.requests = records;
    let mut restarted = Broker::new(BrokerOptions::default(), 8);
    restarted.loaded(snapshot, HashMap::new(), 0);
    let r = restarted.requests.get(queued).unwrap();
    assert_eq!(r.state, RequestStatus::Failed);
    assert!(r.error.as_deref().unwrap().contains("rsmd restarted"), "{r:?}");
    assert_eq!(restarted.requests.objects().len(), 5);
    // The mounts that completed are still owned after the restart.
    let owned = restarted.inventory.as_ref().unwrap().media_by_barcode("ABC001L6").unwrap().mounted_by.clone();
    assert_eq!(owned.map(|o| o.uid), Some(1000));
    let changes = restarted.take_changes();
    assert!(changes
        .iter()
        .any(|c| matches!(c, Change::Request(r) if r.id == queued && r.state == RequestStatus::Failed)));
    let _ = ObjectType::LibRequest;
}

/// A SIGHUP hands the broker the drive maps `rsmd --map-drives` saved: a library whose drives were unmapped (no
/// DVCID) rescans and maps them, without a restart.
#[test]
fn saved_drive_maps_apply_at_once() {
    let mut s = Sim::with(|c| c.dvcid = false, LibraryOptions { poll_first_ms: 10, ..LibraryOptions::default() });
    let mapped = |s: &Sim| s.broker.libs[0].library.elements().iter().filter(|e| e.device.is_some()).count();
    assert_eq!(mapped(&s), 0, "four drives, no DVCID: nothing to map them by");
    // Issue 15: a mount no drive can serve waited forever with nothing in the log; it fails at once with the fix.
    let a = s.open(ALICE, "a");
    let e = ntms(s.call(ALICE, mount(&a, "ABC001L6")));
    assert!(matches!(&e, NtmsError::DeviceNotAvailable { message } if message.contains("rsmd --map-drives")), "{e:?}");
    let serials: Vec<String> =
        s.broker.libs[0].library.drive_identities().iter().map(|i| i.as_ref().unwrap().serial.clone()).collect();
    let map: Vec<(String, u16)> = serials.iter().cloned().zip(500..).collect();
    let serial = s.broker.libs[0].library.identity().serial.clone();
    s.broker.set_saved_maps(HashMap::from([(serial, map)]), s.now);
    s.drive_bounded(100_000, |s| mapped(s) == 4);
    s.call_and_wait(ALICE, mount(&a, "ABC001L6")).unwrap();
}

/// Issue 15: a drive showed `loaded` while its mount still waited for it to become ready: it is `loading` until
/// the mount completes, then `mounted`.
#[test]
fn a_drive_shows_loading_until_its_mount_is_ready() {
    use crate::proto::types::DriveState;
    let mut s = Sim::new();
    let a = s.open(ALICE, "a");
    let key = s.submit(ALICE, mount(&a, "ABC001L6"));
    let drive_state = |s: &Sim| {
        s.broker.with_view(|v| {
            v.enumerate(ObjectType::Drive, None).into_iter().find_map(|o| match o.details {
                ObjectDetails::Drive(d) if d.barcode.as_deref() == Some("ABC001L6") => Some(d.state),
                _ => None,
            })
        })
    };
    s.drive_bounded(100_000, |s| s.broker.requests.get(key).unwrap().state == RequestStatus::Waiting);
    assert_eq!(drive_state(&s), Some(DriveState::Loading));
    s.wait(key).unwrap();
    assert_eq!(drive_state(&s), Some(DriveState::Mounted));
}

fn method_create_pool(session: &str, name: &str) -> Method {
    Method::CreateMediaPool {
        session: session.into(),
        name: name.into(),
        media_type: None,
        action: crate::proto::types::PoolAction::OpenAlways,
    }
}

fn allocate(session: &str, pool: &str, media: Option<&str>, error_if_unavailable: bool) -> Method {
    Method::AllocateMedia {
        session: session.into(),
        pool: pool.into(),
        media: media.map(str::to_owned),
        new: false,
        error_if_unavailable,
        timeout_ms: None,
    }
}

fn visible_media(s: &mut Sim, peer: Peer, session: &str) -> Vec<String> {
    let r = s.call(
        peer,
        Method::EnumerateObjects {
            session: session.into(),
            container: None,
            object_type: ObjectType::PhysicalMedia,
            after: None,
            limit: None,
        },
    );
    r.unwrap()["objects"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn two_applications_share_a_library_without_touching_each_others_tapes() {
    let mut s = Sim::new();
    let a = s.open(ALICE, "Bacula");
    let b = s.open(BOB, "Amanda");
    // New cartridges are in Free of their type; everyone sees them.
    let all = visible_media(&mut s, BOB, &b);
    assert!(all.contains(&"ABC001L6".to_owned()), "{all:?}");
    // Alice makes her pool, draws two scratch tapes.
    let r = s.call(ALICE, method_create_pool(&a, "Bacula")).unwrap();
    assert_eq!(r["created"], true);
    let set = Method::SetObjectInformation {
        session: a.clone(),
        object: "Bacula".into(),
        version: None,
        changes: crate::proto::types::ObjectChanges { draw_from_free: Some(true), ..Default::default() },
    };
    s.call(ALICE, set).unwrap();
    let by_path = s.call(ALICE, Method::GetObjectInformation { session: a.clone(), object: "bacula".into() }).unwrap();
    assert_eq!(by_path["object"]["details"]["media_pool"]["draw_from_free"], true, "a pool by its path, any case");
    let first = s.call(ALICE, allocate(&a, "Bacula", None, true)).unwrap();
    let lmid = first["logical_media"].as_str().unwrap().to_owned();
    let barcode = first["barcode"].as_str().unwrap().to_owned();
    assert_eq!(
        s.broker.inventory.as_ref().unwrap().media_by_barcode(&barcode).unwrap().lmid.unwrap().to_string(),
        lmid
    );
    // Bob sees no Bacula media and may not mount, allocate from, deallocate or change Alice's pool.
    assert!(!visible_media(&mut s, BOB, &b).contains(&barcode));
    assert!(matches!(ntms(s.call(BOB, mount(&b, &barcode))), NtmsError::AccessDenied { .. }));
    assert!(matches!(ntms(s.call(BOB, allocate(&b, "Bacula", None, true))), NtmsError::AccessDenied { .. }));
    let dealloc = |session: &str| Method::DeallocateMedia { session: session.into(), logical_media: lmid.clone() };
    assert!(matches!(ntms(s.call(BOB, dealloc(&b))), NtmsError::AccessDenied { .. }));
    let del = Method::DeleteMediaPool { session: b.clone(), pool: "Bacula".into() };
    assert!(matches!(ntms(s.call(BOB, del)), NtmsError::AccessDenied { .. }));
    let get = Method::GetObjectInformation { session: b.clone(), object: barcode.clone() };
    assert!(matches!(ntms(s.call(BOB, get)), NtmsError::AccessDenied { .. }));
    // Alice's other application may not mount her Bacula tape either; her Bacula session does.
    let other = s.open(Peer { pid: 201, ..ALICE }, "scripts");
    assert!(matches!(
        ntms(s.call(Peer { pid: 201, ..ALICE }, mount(&other, &barcode))),
        NtmsError::AccessDenied { .. }
    ));
    s.call_and_wait(ALICE, mount(&a, &barcode)).unwrap();
    // Mounted media are not deallocated; dismounted they are, and go back to available in the pool.
    assert!(matches!(ntms(s.call(ALICE, dealloc(&a))), NtmsError::Busy { .. }));
    s.call_and_wait(ALICE, dismount(&a, &barcode, false)).unwrap();
    s.call(ALICE, dealloc(&a)).unwrap();
    let m = s.broker.inventory.as_ref().unwrap().media_by_barcode(&barcode).unwrap().clone();
    assert_eq!((m.side, m.lmid), (Some(crate::model::SideState::Available), None));
    // Root (an administrator) sees and may do everything.
    let root = s.open(ROOT, "admin");
    assert!(visible_media(&mut s, ROOT, &root).contains(&barcode));
    // Everything was persisted: pools and the cartridge's allocation.
    assert!(s.persisted.iter().any(|c| matches!(c, Change::Pool(p) if p.name == "Bacula")));
    assert!(s
        .persisted
        .iter()
        .any(|c| matches!(c, Change::Media(m) if m.lmid.map(|l| l.to_string()) == Some(lmid.clone()))));
}

#[test]
fn an_allocation_waits_for_a_cartridge_and_a_closed_session_cancels_it() {
    let mut s = Sim::new();
    let a = s.open(ALICE, "Bacula");
    s.call(ALICE, method_create_pool(&a, "Small")).unwrap();
    // Nothing in the pool and it does not draw from Free: error at once, or wait.
    assert!(matches!(ntms(s.call(ALICE, allocate(&a, "Small", None, true))), NtmsError::MediaUnavailable { .. }));
    let key = s.submit(ALICE, allocate(&a, "Small", None, false));
    assert_eq!(s.broker.requests.get(key).unwrap().state, RequestStatus::Waiting);
    // A cartridge moved into the pool satisfies it.
    let r =
        s.call(ALICE, Method::MoveToMediaPool { session: a.clone(), media: "ABC003L6".into(), pool: "Small".into() });
    r.unwrap();
    s.step();
    let got = s.wait(key).unwrap();
    assert_eq!(got["barcode"], "ABC003L6");
    assert_eq!(s.broker.requests.get(key).unwrap().state, RequestStatus::Complete);
    // A second waiting allocation ends Cancelled with its session.
    let key = s.submit(ALICE, allocate(&a, "Small", None, false));
    s.call(ALICE, Method::CloseSession { session: a.clone() }).unwrap();
    assert!(matches!(s.replies.remove(&key), Some(Err(WireError::Ntms(NtmsError::Cancelled { .. })))));
    assert_eq!(s.broker.requests.get(key).unwrap().state, RequestStatus::Cancelled);
}

#[test]
fn disabled_drives_are_never_chosen_and_disabled_media_never_mounted() {
    let mut s = Sim::new();
    let r = s.open(ROOT, "admin");
    let drives = s
        .call(
            ROOT,
            Method::EnumerateObjects {
                session: r.clone(),
                container: None,
                object_type: ObjectType::Drive,
                after: None,
                limit: None,
            },
        )
        .unwrap();
    let ids: Vec<String> =
        drives["objects"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_owned()).collect();
    for id in &ids[1..] {
        s.call(ROOT, Method::DisableObject { session: r.clone(), object: id.clone() }).unwrap();
    }
    assert!(matches!(
        ntms(s.call(ROOT, Method::DisableObject { session: r.clone(), object: ids[1].clone() })),
        NtmsError::InvalidState { .. }
    ));
    let shown = s.call(ROOT, Method::GetObjectInformation { session: r.clone(), object: ids[1].clone() }).unwrap();
    assert_eq!(shown["object"]["enabled"], false, "a disabled drive is shown so");
    s.call_and_wait(ROOT, mount(&r, "ABC001L6")).unwrap();
    let first = s.broker.inventory.as_ref().unwrap().element_by_id(ids[0].parse().unwrap()).unwrap().address;
    assert_eq!(s.drive_holding("ABC001L6"), Some(first), "only the enabled drive is used");
    // A user may not disable drives.
    let a = s.open(ALICE, "Bacula");
    assert!(matches!(
        ntms(s.call(ALICE, Method::EnableObject { session: a, object: ids[1].clone() })),
        NtmsError::AccessDenied { .. }
    ));
    s.call(ROOT, Method::DisableObject { session: r.clone(), object: "ABC002L6".into() }).unwrap();
    assert!(matches!(ntms(s.call(ROOT, mount(&r, "ABC002L6"))), NtmsError::ResourceDisabled { .. }));
}

#[test]
fn media_states_follow_rsm_in_use_loaded_idle() {
    let mut s = Sim::new();
    let a = s.open(ALICE, "Bacula");
    let state = |s: &mut Sim| {
        let r = s.call(ALICE, Method::GetObjectInformation { session: a.clone(), object: "ABC002L6".into() });
        r.unwrap()["object"]["state"].as_str().unwrap().to_owned()
    };
    assert_eq!(state(&mut s), "idle");
    let key = s.submit(ALICE, mount(&a, "ABC002L6"));
    assert_eq!(state(&mut s), "in_use", "a request works on it");
    s.wait(key).unwrap();
    assert_eq!(state(&mut s), "loaded", "mounted and ready");
    s.call(ALICE, dismount(&a, "ABC002L6", true)).unwrap();
    assert_eq!(state(&mut s), "idle", "parked in the drive by a deferred dismount");
}

fn eject(session: &str, barcode: &str) -> Method {
    Method::EjectMedia { session: session.into(), media: vec![barcode.into()], error_if_full: false }
}

#[test]
fn eject_moves_a_cartridge_to_a_free_mail_slot_and_refuses_what_it_cannot() {
    let mut s = Sim::new();
    let a = s.open(ALICE, "Bacula");
    let ie = |s: &Sim, barcode: &str| {
        s.target
            .snapshot()
            .elements
            .iter()
            .any(|e| e.kind == vlib::ElementType::ImportExport && e.barcode.as_deref() == Some(barcode))
    };
    let r = s.call_and_wait(ALICE, eject(&a, "ABC005L6")).unwrap();
    assert!(r["request"].is_string());
    assert!(ie(&s, "ABC005L6"), "in a mail slot");
    let m = s.broker.inventory.as_ref().unwrap().media_by_barcode("ABC005L6").unwrap().clone();
    assert_eq!(m.location.unwrap().kind, crate::model::ElementKind::ImportExport, "the inventory follows");
    assert!(matches!(ntms(s.call(ALICE, eject(&a, "ABC005L6"))), NtmsError::InvalidOperation { .. }));
    // The second mail slot, then none left: asked to fail rather than wait, it fails at once.
    s.call_and_wait(ALICE, eject(&a, "ABC006L6")).unwrap();
    let full = Method::EjectMedia { session: a.clone(), media: vec!["ABC007L6".into()], error_if_full: true };
    assert!(matches!(ntms(s.call(ALICE, full)), NtmsError::IePortFull { .. }));
    assert!(s.broker.operators.active().next().is_none(), "no operator request for a call that failed");
    // A cartridge in a drive is dismounted first.
    s.call_and_wait(ALICE, mount(&a, "ABC003L6")).unwrap();
    assert!(matches!(ntms(s.call(ALICE, eject(&a, "ABC003L6"))), NtmsError::UnableToEjectMountedMedia { .. }));
    let key = s.broker.requests.find(r["request"].as_str().unwrap()).unwrap();
    assert_eq!(s.broker.requests.get(key).unwrap().state, RequestStatus::Complete);
    assert_eq!(s.broker.requests.get(key).unwrap().kind, RequestKind::Eject);
}

#[test]
fn inject_takes_the_mail_slots_back_to_their_home_slots() {
    let mut s = Sim::new();
    let a = s.open(ALICE, "Bacula");
    let lib = s.broker.libs[0].id.unwrap().to_string();
    let inject = |session: &str| Method::InjectMedia { session: session.into(), library: lib.clone() };
    // Nothing in the mail slots: done at once.
    s.call(ALICE, inject(&a)).unwrap();
    s.call_and_wait(ALICE, eject(&a, "ABC005L6")).unwrap();
    s.call_and_wait(ALICE, eject(&a, "ABC006L6")).unwrap();
    let r = s.call_and_wait(ALICE, inject(&a)).unwrap();
    let key = s.broker.requests.find(r["request"].as_str().unwrap()).unwrap();
    assert_eq!(s.broker.requests.get(key).unwrap().state, RequestStatus::Complete);
    let slot_of = |s: &Sim, barcode: &str| {
        let snap = s.target.snapshot();
        snap.elements.iter().find(|e| e.barcode.as_deref() == Some(barcode)).map(|e| (e.kind, e.address))
    };
    let home5 = s.broker.inventory.as_ref().unwrap().media_by_barcode("ABC005L6").unwrap().home.unwrap().address;
    assert_eq!(slot_of(&s, "ABC005L6"), Some((vlib::ElementType::Storage, home5)), "back home");
    assert_eq!(slot_of(&s, "ABC006L6").map(|x| x.0), Some(vlib::ElementType::Storage));
    assert!(matches!(
        ntms(s.call(ALICE, Method::InjectMedia { session: a.clone(), library: "nope".into() })),
        NtmsError::InvalidLibrary { .. }
    ));
    // Issue 13: more cartridges in the mail slots than free slots: the rest stay, and an operator request says so.
    let free = |s: &Sim| {
        s.target
            .snapshot()
            .elements
            .iter()
            .filter(|e| e.kind == vlib::ElementType::Storage && e.barcode.is_none())
            .count()
    };
    let mut n = 0;
    while free(&s) > 1 {
        for _ in 0..2 {
            n += 1;
            s.target.inject(vlib::Fault::ImportCartridge { barcode: format!("NEW{n:03}L6") });
        }
        let seen = n;
        s.drive_bounded(100_000, |s| {
            s.broker.inventory.as_ref().unwrap().media_by_barcode(&format!("NEW{seen:03}L6")).is_some()
        });
        s.call_and_wait(ALICE, inject(&a)).unwrap();
    }
    assert!(s.broker.operators.active().next().is_none());
    for _ in 0..2 {
        n += 1;
        s.target.inject(vlib::Fault::ImportCartridge { barcode: format!("NEW{n:03}L6") });
    }
    let seen = n;
    s.drive_bounded(100_000, |s| {
        s.broker.inventory.as_ref().unwrap().media_by_barcode(&format!("NEW{seen:03}L6")).is_some()
    });
    s.call_and_wait(ALICE, inject(&a)).unwrap();
    assert_eq!(free(&s), 0);
    let op = s.broker.operators.active().next().expect("an operator request").clone();
    assert_eq!(op.kind, crate::model::OperatorKind::Message);
    assert!(op.text.contains("is full: 1 stay in the mail slots"), "{}", op.text);
    // No slot at all: LibraryFull.
    assert!(matches!(ntms(s.call(ALICE, inject(&a))), NtmsError::LibraryFull { .. }));
}

/// Issue 13: an ejected cartridge the operator took away is offline (still catalogued, still allocated); a mount
/// of it says so; brought back through the mail slot and injected, it is home with its pool and allocation.
#[test]
fn an_ejected_cartridge_taken_away_is_offline_and_comes_back_with_its_allocation() {
    let mut s = Sim::new();
    let a = s.open(ALICE, "Bacula");
    s.call(ALICE, method_create_pool(&a, "Bacula")).unwrap();
    s.call(ALICE, allocate(&a, "Bacula", Some("ABC007L6"), true)).unwrap();
    s.call_and_wait(ALICE, eject(&a, "ABC007L6")).unwrap();
    // The operator collects it: the library's unit attention (seen by the idle heartbeat) makes rsmd rescan.
    s.target.inject(vlib::Fault::TakeFromPorts);
    let offline =
        |s: &Sim| s.broker.inventory.as_ref().unwrap().media_by_barcode("ABC007L6").unwrap().location.is_none();
    s.drive_bounded(100_000, |s| offline(s));
    let m = s.broker.inventory.as_ref().unwrap().media_by_barcode("ABC007L6").unwrap().clone();
    assert_eq!(
        (m.side, m.pool.is_some()),
        (Some(crate::model::SideState::Allocated), true),
        "still catalogued and allocated"
    );
    let fail_fast = MountFlags { error_if_offline: true, ..MountFlags::default() };
    assert!(matches!(ntms(s.call(ALICE, mount_with(&a, "ABC007L6", fail_fast))), NtmsError::MediaOffline { .. }));
    // Back through the mail slot, then injected: home, still Bacula's.
    s.target.inject(vlib::Fault::ImportCartridge { barcode: "ABC007L6".into() });
    let lib = s.broker.libs[0].id.unwrap().to_string();
    s.drive_bounded(100_000, |s| !offline(s));
    s.call_and_wait(ALICE, Method::InjectMedia { session: a.clone(), library: lib }).unwrap();
    let m = s.broker.inventory.as_ref().unwrap().media_by_barcode("ABC007L6").unwrap().clone();
    assert_eq!(m.location.unwrap().kind, crate::model::ElementKind::Storage);
    assert_eq!(m.side, Some(crate::model::SideState::Allocated));
    s.call_and_wait(ALICE, mount(&a, "ABC007L6")).unwrap();
}

/// The operator requests the broker raised, as (kind, object, state).
fn operator_requests(s: &Sim) -> Vec<(crate::model::OperatorKind, Option<String>, crate::model::OperatorState)> {
    s.broker
        .with_view(|v| v.operators.objects())
        .iter()
        .rev()
        .filter_map(|o| {
            let n = o.name.rsplit(' ').next()?.parse().ok()?;
            let r = s.broker.operators.get(n)?;
            Some((r.kind, r.object.clone(), r.state))
        })
        .collect()
}

/// Issue 13: more cartridges than free mail slots: the first ones go, the rest wait while an operator request asks
/// for the mail slots to be emptied; once the operator took them (the library's unit attention, a re-read), the
/// rest go, the request is satisfied by the daemon, and the eject answers when the last is out.
#[test]
fn an_eject_of_more_cartridges_than_mail_slots_waits_for_the_operator_to_empty_them() {
    use crate::model::{OperatorKind, OperatorState};
    let mut s = Sim::new();
    let a = s.open(ALICE, "Bacula");
    let lib = s.broker.libs[0].id.unwrap().to_string();
    let four = ["ABC005L6", "ABC006L6", "ABC007L6", "ABC008L6"].map(String::from).to_vec();
    let key = s.submit(ALICE, Method::EjectMedia { session: a.clone(), media: four, error_if_full: false });
    s.drive_bounded(100_000, |s| s.broker.operators.active().next().is_some());
    assert_eq!(operator_requests(&s), vec![(OperatorKind::MoveMedia, Some(lib.clone()), OperatorState::Active)]);
    assert_eq!(s.broker.requests.get(key).unwrap().state, RequestStatus::Waiting);
    let in_ports = |s: &Sim| {
        let snap = s.target.snapshot();
        let mut v: Vec<String> = snap
            .elements
            .iter()
            .filter(|e| e.kind == vlib::ElementType::ImportExport)
            .filter_map(|e| e.barcode.clone())
            .collect();
        v.sort();
        v
    };
    assert_eq!(in_ports(&s), ["ABC005L6", "ABC006L6"], "the first two, one port cycle");
    assert!(!s.replies.contains_key(&key), "no answer before the last is out");
    // The operator empties the mail slots; the library says so with a unit attention.
    s.target.inject(vlib::Fault::TakeFromPorts);
    s.wait(key).unwrap();
    assert_eq!(in_ports(&s), ["ABC007L6", "ABC008L6"]);
    assert_eq!(operator_requests(&s), vec![(OperatorKind::MoveMedia, Some(lib), OperatorState::Satisfied)]);
    let n = s.broker.operators.objects().len() as u64;
    assert_eq!(s.broker.operators.get(n).unwrap().answered_by, None, "the daemon saw it done");
    assert_eq!(s.broker.requests.get(key).unwrap().state, RequestStatus::Complete);
    let inv = s.broker.inventory.as_ref().unwrap();
    assert!(inv.media_by_barcode("ABC005L6").unwrap().location.is_none(), "taken: offline");
    // The operator refuses the next time: the eject fails RequestRefused and the cartridge stays home.
    let key = s.submit(ALICE, eject(&a, "ABC009L6"));
    s.drive_bounded(100_000, |s| s.broker.operators.active().next().is_some());
    let n = s.broker.operators.active().next().unwrap().number;
    let refuse =
        Method::RefuseOperatorRequest { session: a.clone(), request: n.to_string(), reason: Some("no".into()) };
    // Operators answer: the control right on the library (every local user has it by default).
    s.broker.options.access.library = super::access::Rights::USE;
    assert!(matches!(ntms(s.call(ALICE, refuse.clone())), NtmsError::AccessDenied { .. }));
    let r = s.open(ROOT, "console");
    s.call(ROOT, Method::RefuseOperatorRequest { session: r, request: n.to_string(), reason: Some("no".into()) })
        .unwrap();
    assert!(matches!(ntms(s.wait(key)), NtmsError::RequestRefused { .. }));
    let m = s.broker.inventory.as_ref().unwrap().media_by_barcode("ABC009L6").unwrap().clone();
    assert_eq!(m.location.unwrap().kind, crate::model::ElementKind::Storage);
}

/// Issue 13: a mount of a cartridge out of the library raises a move-media operator request and waits; the
/// cartridge put in a mail slot is mounted from there, and the request is satisfied by the daemon. A wait for the
/// request (WaitForOperatorRequest) answers then.
#[test]
fn a_mount_of_an_offline_cartridge_waits_for_the_operator_to_bring_it() {
    use crate::model::{OperatorKind, OperatorState};
    let mut s = Sim::new();
    let a = s.open(ALICE, "Bacula");
    s.call_and_wait(ALICE, eject(&a, "ABC007L6")).unwrap();
    s.target.inject(vlib::Fault::TakeFromPorts);
    let id = s.broker.inventory.as_ref().unwrap().media_by_barcode("ABC007L6").unwrap().id.to_string();
    s.drive_bounded(100_000, |s| {
        s.broker.inventory.as_ref().unwrap().media_by_barcode("ABC007L6").unwrap().location.is_none()
    });
    let key = s.submit(ALICE, mount(&a, "ABC007L6"));
    assert_eq!(operator_requests(&s), vec![(OperatorKind::MoveMedia, Some(id.clone()), OperatorState::Active)]);
    assert_eq!(s.broker.requests.get(key).unwrap().state, RequestStatus::Waiting);
    let n = s.broker.operators.active().next().unwrap().number;
    let b = s.open(BOB, "script");
    let wait =
        s.submit(BOB, Method::WaitForOperatorRequest { session: b.clone(), request: n.to_string(), timeout_ms: None });
    // A wait with a short timeout gives up alone.
    let short =
        s.submit(BOB, Method::WaitForOperatorRequest { session: b, request: n.to_string(), timeout_ms: Some(50) });
    assert!(matches!(ntms(s.wait(short)), NtmsError::Timeout { .. }));
    // Retried every turn, the mount raises no second request.
    s.drive_bounded(1_000, |s| s.now > 5_000);
    assert_eq!(s.broker.operators.objects().len(), 1);
    s.target.inject(vlib::Fault::ImportCartridge { barcode: "ABC007L6".into() });
    let r = s.wait(key).unwrap();
    assert!(r["drive"].is_string());
    assert!(s.drive_holding("ABC007L6").is_some());
    assert_eq!(operator_requests(&s), vec![(OperatorKind::MoveMedia, Some(id), OperatorState::Satisfied)]);
    assert_eq!(s.wait(wait).unwrap()["state"], "satisfied");
}

/// Issue 13: an application's own operator request: submitted, seen, satisfied by an operator; a refused one
/// fails the submitter's wait with RequestRefused; the submitter may withdraw its own, nobody else's.
#[test]
fn operator_requests_are_submitted_answered_and_withdrawn() {
    use crate::proto::types::OpRequestKind;
    let mut s = Sim::new();
    let a = s.open(ALICE, "Bacula");
    let b = s.open(BOB, "Amanda");
    let r = s.open(ROOT, "console");
    let submit = |session: &str, text: &str| Method::SubmitOperatorRequest {
        session: session.into(),
        kind: OpRequestKind::Message,
        text: text.into(),
        object: Some("ABC001L6".into()),
    };
    let one = s.call(ALICE, submit(&a, "load the weekly tapes")).unwrap();
    assert_eq!(one["number"], 1);
    let o = s.broker.operators.get(1).unwrap();
    let media = s.broker.inventory.as_ref().unwrap().media_by_barcode("ABC001L6").unwrap();
    assert_eq!(o.object.as_deref(), Some(media.id.to_string().as_str()), "the object by its id");
    assert_eq!(o.library, media.location.map(|l| l.library));
    assert!(matches!(ntms(s.call(ALICE, submit(&a, ""))), NtmsError::InvalidParameter { .. }));
    assert!(matches!(ntms(s.call(ALICE, submit(&a, &"x".repeat(2000)))), NtmsError::InvalidParameter { .. }));
    let nothing = Method::SubmitOperatorRequest {
        session: a.clone(),
        kind: OpRequestKind::Message,
        text: "t".into(),
        object: Some("nope".into()),
    };
    assert!(matches!(ntms(s.call(ALICE, nothing)), NtmsError::ObjectNotFound { .. }));
    let id = one["request"].as_str().unwrap().to_owned();
    let wait =
        s.submit(ALICE, Method::WaitForOperatorRequest { session: a.clone(), request: id.clone(), timeout_ms: None });
    s.call(ROOT, Method::SatisfyOperatorRequest { session: r.clone(), request: id.clone() }).unwrap();
    assert_eq!(s.wait(wait).unwrap()["state"], "satisfied");
    assert_eq!(s.broker.operators.get(1).unwrap().answered_by, Some(0));
    assert!(matches!(
        ntms(s.call(ROOT, Method::SatisfyOperatorRequest { session: r.clone(), request: "1".into() })),
        NtmsError::InvalidState { .. }
    ));
    // Refused: the wait fails with the reason.
    s.call(ALICE, submit(&a, "second")).unwrap();
    let wait =
        s.submit(ALICE, Method::WaitForOperatorRequest { session: a.clone(), request: "2".into(), timeout_ms: None });
    s.call(
        ROOT,
        Method::RefuseOperatorRequest { session: r.clone(), request: "2".into(), reason: Some("no tapes left".into()) },
    )
    .unwrap();
    match ntms(s.wait(wait)) {
        NtmsError::RequestRefused { message } => assert!(message.contains("no tapes left"), "{message}"),
        other => panic!("{other:?}"),
    }
    // Withdrawn: only by its submitter (or an administrator).
    s.call(ALICE, submit(&a, "third")).unwrap();
    let cancel = |session: &str| Method::CancelOperatorRequest { session: session.into(), request: "3".into() };
    assert!(matches!(ntms(s.call(BOB, cancel(&b))), NtmsError::AccessDenied { .. }));
    let wait =
        s.submit(ALICE, Method::WaitForOperatorRequest { session: a.clone(), request: "3".into(), timeout_ms: None });
    s.call(ALICE, cancel(&a)).unwrap();
    assert!(matches!(ntms(s.wait(wait)), NtmsError::Cancelled { .. }));
    // Every change was persisted, and the requests are objects clients can list and look up.
    let persisted = s.persisted.iter().filter(|c| matches!(c, Change::Operator(_))).count();
    assert!(persisted >= 6, "{persisted}");
    let listed = s
        .call(
            BOB,
            Method::EnumerateObjects {
                session: b.clone(),
                container: None,
                object_type: ObjectType::OpRequest,
                after: None,
                limit: None,
            },
        )
        .unwrap();
    assert_eq!(listed["objects"].as_array().unwrap().len(), 3);
    let one = s.call(BOB, Method::GetObjectInformation { session: b, object: id }).unwrap();
    assert_eq!(one["object"]["details"]["op_request"]["state"], "satisfied");
}

/// The store as a killed daemon left it: the last record of everything persisted.
fn snapshot_of(persisted: &[Change]) -> Snapshot {
    let mut s = Snapshot::default();
    let mut requests: HashMap<RequestId, RequestRecord> = HashMap::new();
    for c in persisted {
        match c {
            Change::Request(r) => {
                requests.insert(r.id, r.clone());
            }
            Change::Media(m) => {
                s.media.retain(|x: &crate::model::MediaRecord| x.id != m.id);
                s.media.push(m.clone());
            }
            Change::Element(e) => {
                s.elements.retain(|x| x.id() != e.id());
                s.elements.push(e.clone());
            }
            Change::Library(l) => {
                s.libraries.retain(|x| x.id != l.id);
                s.libraries.push(l.clone());
            }
            Change::Operator(o) => {
                s.operators.retain(|x| x.number != o.number);
                s.operators.push(o.clone());
            }
            _ => {}
        }
    }
    let mut records: Vec<RequestRecord> = requests.into_values().collect();
    records.sort_by_key(|r| r.id);
    s.requests = records;
    s
}

fn drive_care(s: &Sim, number: u32) -> crate::model::DriveCare {
    let lib = s.broker.libs[0].id.unwrap();
    let inv = s.broker.inventory.as_ref().unwrap();
    let e = inv.elements(lib).find(|e| e.kind == crate::model::ElementKind::Drive && e.number == number).unwrap();
    e.drive.as_ref().unwrap().care
}

fn drive_id(s: &Sim, number: u32) -> String {
    let lib = s.broker.libs[0].id.unwrap();
    let inv = s.broker.inventory.as_ref().unwrap();
    inv.elements(lib)
        .find(|e| e.kind == crate::model::ElementKind::Drive && e.number == number)
        .unwrap()
        .id()
        .to_string()
}

/// Issue 13: a drive that raises TapeAlert 20 (clean now) at a dismount is cleaned with the library's cleaning
/// cartridge: in, cleaned, ejected by the drive, back to its slot; the use is counted, the drive's cleaning
/// recorded. CleanDrive cleans on request. A cleaner that has done its cleanings is retired and the operator asked
/// for another; a cleaning without a cleaner waits for one, and fails when the operator refuses.
#[test]
fn a_drive_asking_for_cleaning_is_cleaned_and_spent_cleaners_are_retired() {
    use crate::model::{OperatorKind, OperatorState};
    let mut s = Sim::with(
        |c| c.clean_after_loads = 2,
        LibraryOptions { poll_first_ms: 10, poll_max_ms: 40, ..LibraryOptions::default() },
    );
    s.broker.options.media_rules.cleaner_uses = 2;
    let a = s.open(ALICE, "Bacula");
    let d0 = drive_id(&s, 0);
    let in_drive0 = |barcode: &str| Method::MountMedia {
        session: a.clone(),
        media: vec![barcode.into()],
        drive: Some(d0.clone()),
        flags: MountFlags::default(),
        priority: 0,
        timeout_ms: None,
        pool: None,
    };
    for b in ["ABC001L6", "ABC002L6"] {
        s.call_and_wait(ALICE, in_drive0(b)).unwrap();
        s.call_and_wait(ALICE, dismount(&a, b, false)).unwrap();
    }
    // The second load raised "clean now": the dismount read it and queued a cleaning, which runs by itself.
    assert_eq!(s.broker.requests.open_of_kind(RequestKind::Clean).len(), 1, "a cleaning is queued");
    assert!(drive_care(&s, 0).alerts & (1 << 19) != 0, "the drive shows the flag");
    s.drive_bounded(200_000, |s| s.broker.cleanings.is_empty());
    let cleaner = |s: &Sim| s.broker.inventory.as_ref().unwrap().media_by_barcode("CLN001L1").unwrap().clone();
    assert_eq!(cleaner(&s).mount_count, 1, "one use counted");
    assert_eq!(cleaner(&s).location, cleaner(&s).home, "back in its slot");
    let care = drive_care(&s, 0);
    assert!(care.last_cleaned.is_some() && care.cleanings == 1 && care.alerts & (1 << 19) == 0, "{care:?}");
    assert!(!s.target.snapshot().drives[0].clean_now, "the drive is clean");
    let done = s.broker.requests.objects();
    let clean = done.iter().find(|o| o.name.contains("clean")).expect("the cleaning request");
    assert_eq!(clean.state, "complete");
    // Asked for: the second use spends the cleaner: retired, and the operator is asked for a new one.
    let r = s.call_and_wait(ALICE, Method::CleanDrive { session: a.clone(), drive: drive_id(&s, 1) }).unwrap();
    assert!(r["request"].is_string());
    assert_eq!(cleaner(&s).mount_count, 2);
    assert!(!cleaner(&s).enabled, "retired");
    let ops = operator_requests(&s);
    assert!(ops.contains(&(OperatorKind::Cleaner, Some(cleaner(&s).id.to_string()), OperatorState::Active)), "{ops:?}");
    // No usable cleaner: the next cleaning waits for one; refused, it fails.
    let key = s.submit(ALICE, Method::CleanDrive { session: a.clone(), drive: drive_id(&s, 2) });
    s.drive_bounded(1_000, |s| s.broker.requests.get(key).is_some_and(|r| r.state == RequestStatus::Waiting));
    let lib = s.broker.libs[0].id.unwrap().to_string();
    let n = s.broker.operators.active().find(|r| r.object.as_deref() == Some(&lib)).expect("a cleaner request").number;
    assert!(matches!(
        ntms(s.call(ALICE, Method::CleanDrive { session: a.clone(), drive: drive_id(&s, 2) })),
        NtmsError::Busy { .. }
    ));
    let r = s.open(ROOT, "console");
    s.call(ROOT, Method::RefuseOperatorRequest { session: r, request: n.to_string(), reason: None }).unwrap();
    assert!(matches!(ntms(s.wait(key)), NtmsError::RequestRefused { .. }));
    assert!(s.broker.cleanings.is_empty());
}

/// Issue 13: a drive that never ejects the cleaning cartridge: the cleaning gives up after its time, the drive is
/// suspect, a device-service operator request says what to do, and the call fails DeviceNotAvailable.
#[test]
fn a_drive_that_never_ejects_the_cleaner_raises_a_device_service_request() {
    use crate::model::OperatorKind;
    let mut s = Sim::new();
    let a = s.open(ALICE, "Bacula");
    s.target.inject(vlib::Fault::CleanerStuck { drive: 0 });
    let e = ntms(s.call_and_wait(ALICE, Method::CleanDrive { session: a, drive: drive_id(&s, 0) }));
    assert!(matches!(e, NtmsError::DeviceNotAvailable { .. }), "{e:?}");
    let d0 = drive_id(&s, 0);
    let op = s.broker.operators.active().find(|r| r.kind == OperatorKind::DeviceService).expect("device service");
    assert_eq!(op.object.as_deref(), Some(d0.as_str()));
    assert!(op.text.contains("did not eject cleaning cartridge CLN001L1"), "{}", op.text);
    assert!(s.drive_holding("CLN001L1").is_some(), "left in the drive");
    assert!(s.now >= crate::changer::CLEAN_TIMEOUT_MS);
}

/// Issue 13: queued cleanings survive a restart (RSM lost them); other open requests end failed.
#[test]
fn queued_cleanings_survive_a_restart() {
    let mut s = Sim::new();
    let a = s.open(ALICE, "Bacula");
    // Drive 0 holds a mounted cartridge: its cleaning waits.
    let d0 = drive_id(&s, 0);
    let m = Method::MountMedia {
        session: a.clone(),
        media: vec!["ABC001L6".into()],
        drive: Some(d0.clone()),
        flags: MountFlags::default(),
        priority: 0,
        timeout_ms: None,
        pool: None,
    };
    s.call_and_wait(ALICE, m).unwrap();
    let key = s.submit(ALICE, Method::CleanDrive { session: a.clone(), drive: d0.clone() });
    s.drive_bounded(1_000, |s| s.now > 2_000);
    assert!(s.broker.requests.is_open(key));
    s.collect();
    let snapshot = snapshot_of(&s.persisted);
    let mut restarted = Broker::new(BrokerOptions::default(), 8);
    restarted.loaded(snapshot, HashMap::new(), 0);
    assert_eq!(restarted.cleanings.len(), 1, "queued again");
    assert_eq!(restarted.cleanings[0].drive, s.broker.cleanings[0].drive);
    assert_eq!(restarted.requests.get(key).unwrap().state, RequestStatus::Queued);
}

/// Issue 13: with auto_inject, what an operator puts in the mail slots (IMPEXP) goes into storage by itself; what
/// rsmd ejected stays there for the operator.
#[test]
fn auto_inject_takes_in_what_the_operator_put_in_the_mail_slots() {
    let mut s = Sim::with(
        |_| {},
        LibraryOptions { poll_first_ms: 10, poll_max_ms: 40, auto_inject: true, ..LibraryOptions::default() },
    );
    let a = s.open(ALICE, "Bacula");
    s.call_and_wait(ALICE, eject(&a, "ABC005L6")).unwrap();
    s.target.inject(vlib::Fault::ImportCartridge { barcode: "NEW001L6".into() });
    let stored = |s: &Sim, b: &str| {
        s.broker
            .inventory
            .as_ref()
            .unwrap()
            .media_by_barcode(b)
            .and_then(|m| m.location)
            .is_some_and(|l| l.kind == crate::model::ElementKind::Storage)
    };
    s.drive_bounded(200_000, |s| stored(s, "NEW001L6"));
    let m = s.broker.inventory.as_ref().unwrap().media_by_barcode("ABC005L6").unwrap().clone();
    assert_eq!(m.location.unwrap().kind, crate::model::ElementKind::ImportExport, "the ejected one stays");
    let injects = s.broker.requests.objects().into_iter().filter(|o| o.name.contains("inject")).count();
    assert_eq!(injects, 1, "one automatic inject");
    // Quiet again: nothing more happens.
    let at = s.now;
    s.drive_bounded(1_000, |s| s.now > at + 60_000);
    assert_eq!(s.broker.requests.objects().into_iter().filter(|o| o.name.contains("inject")).count(), 1);
}

/// Issue 13: AccessLibraryDoor unlocks the door (PREVENT ALLOW MEDIUM REMOVAL, allow) and holds robot work: a mount
/// waits until the door closed (the library's unit attention) and the library was read again, then goes on. A door
/// nobody opens is given up after its time.
#[test]
fn robot_work_waits_while_the_door_is_unlocked() {
    let mut s = Sim::new();
    let a = s.open(ALICE, "Bacula");
    let lib = s.broker.libs[0].id.unwrap().to_string();
    let door = |a: &str| Method::AccessLibraryDoor {
        session: a.into(),
        library: lib.clone(),
        inventory: InventoryMode::Default,
    };
    let opcodes_before = s.opcodes.len();
    let r = s.call_and_wait(ALICE, door(&a)).unwrap();
    let door_request = s.broker.requests.find(r["request"].as_str().unwrap()).unwrap();
    assert!(s.opcodes[opcodes_before..].contains(&0x1E), "PREVENT ALLOW MEDIUM REMOVAL sent");
    assert!(matches!(ntms(s.call(ALICE, door(&a))), NtmsError::Busy { .. }));
    let mount = s.submit(ALICE, mount(&a, "ABC001L6"));
    let at = s.now;
    s.drive_bounded(10_000, |s| s.now > at + 30_000);
    assert!(!s.replies.contains_key(&mount), "no move while the door is unlocked");
    assert_eq!(s.drive_holding("ABC001L6"), None);
    assert_eq!(s.broker.requests.get(door_request).unwrap().state, RequestStatus::InProgress);
    // The operator closes the door: the library says so, is read again, and the mount goes on.
    s.target.inject(vlib::Fault::DoorClosed);
    s.wait(mount).unwrap();
    assert!(s.drive_holding("ABC001L6").is_some());
    assert_eq!(s.broker.requests.get(door_request).unwrap().state, RequestStatus::Complete);
    // Unlocked and never opened: robot work resumes after the door's time.
    s.call_and_wait(ALICE, door(&a)).unwrap();
    let key = s.broker.doors[0].0;
    s.drive_bounded(100_000, |s| !s.broker.requests.is_open(key));
    assert!(s.now >= crate::changer::DOOR_TIMEOUT_MS);
    let r = s.broker.requests.get(key).unwrap();
    assert_eq!((r.state, r.error.as_deref()), (RequestStatus::Complete, Some("the door was not opened")));
    s.call_and_wait(ALICE, dismount(&a, "ABC001L6", false)).unwrap();
}

/// Issue 13: a cleaner the drive reports expired (TapeAlert 22) is retired (disabled, a cleaner operator request)
/// and the cleaning goes on with the next cleaner; the library's second cleaner, a CLN-labelled one, does it.
#[test]
fn an_expired_cleaner_is_retired_and_the_next_one_cleans() {
    use crate::model::OperatorKind;
    let mut s = Sim::with(
        |c| {
            let spent = c.cartridges.iter_mut().find(|x| x.barcode == "CLN001L1").unwrap();
            spent.uses = c.cleaner_max_uses;
            let mut second = spent.clone();
            // The spent one is tried first (the lowest slot of the cleaners rsmd knows as unused).
            spent.location = vlib::config::Location::Slot(17);
            second.barcode = "CLN002L1".into();
            second.uses = 0;
            c.cartridges.push(second);
        },
        LibraryOptions { poll_first_ms: 10, poll_max_ms: 40, ..LibraryOptions::default() },
    );
    let a = s.open(ALICE, "Bacula");
    s.call_and_wait(ALICE, Method::CleanDrive { session: a, drive: drive_id(&s, 0) }).unwrap();
    let inv = s.broker.inventory.as_ref().unwrap();
    let first = inv.media_by_barcode("CLN001L1").unwrap();
    let second = inv.media_by_barcode("CLN002L1").unwrap();
    assert!(!first.enabled, "the expired one is retired");
    assert_eq!(first.mount_count, 0, "it did not clean");
    assert_eq!((second.enabled, second.mount_count), (true, 1), "the next one cleaned");
    let op = s.broker.operators.active().find(|r| r.kind == OperatorKind::Cleaner).expect("a cleaner request");
    assert!(op.text.contains("CLN001L1 expired"), "{}", op.text);
    assert_eq!(drive_care(&s, 0).cleanings, 1);
}

/// Issue 13: every new physical method refuses a user without the control right on the library.
#[test]
fn physical_methods_need_the_control_right() {
    let mut s = Sim::new();
    let a = s.open(ALICE, "Bacula");
    let lib = s.broker.libs[0].id.unwrap().to_string();
    s.broker.options.access.library = super::access::Rights::USE;
    let denied = |s: &mut Sim, m: Method| {
        let e = ntms(s.call(ALICE, m));
        assert!(matches!(e, NtmsError::AccessDenied { .. }), "{e:?}");
    };
    let d0 = drive_id(&s, 0);
    denied(&mut s, Method::CleanDrive { session: a.clone(), drive: d0 });
    denied(
        &mut s,
        Method::AccessLibraryDoor { session: a.clone(), library: lib.clone(), inventory: InventoryMode::Full },
    );
    denied(&mut s, eject(&a, "ABC001L6"));
    denied(&mut s, Method::InjectMedia { session: a.clone(), library: lib });
    let n = s.call(
        ALICE,
        Method::SubmitOperatorRequest {
            session: a.clone(),
            kind: crate::proto::types::OpRequestKind::Message,
            text: "anyone may ask".into(),
            object: None,
        },
    );
    let n = n.unwrap()["number"].to_string();
    denied(&mut s, Method::SatisfyOperatorRequest { session: a.clone(), request: n.clone() });
    denied(&mut s, Method::RefuseOperatorRequest { session: a.clone(), request: n, reason: None });
    assert!(s.broker.requests.objects().is_empty(), "nothing was queued");
}

/// Issue 13: the door opened by hand while a mount's move waits: the library answers NOT READY (door open), the
/// move waits, and once the door is closed the mount goes on.
#[test]
fn a_door_opened_mid_move_holds_the_move_until_it_is_closed() {
    let mut s = Sim::new();
    let a = s.open(ALICE, "Bacula");
    let key = s.submit(ALICE, mount(&a, "ABC001L6"));
    // The move is queued for the changer; the operator opens the door before it runs.
    s.target.inject(vlib::Fault::DoorOpen);
    let at = s.now;
    s.drive_bounded(10_000, |s| s.now > at + 20_000);
    assert!(!s.replies.contains_key(&key), "the move waits while the door is open");
    assert_eq!(s.drive_holding("ABC001L6"), None);
    s.target.inject(vlib::Fault::DoorClosed);
    s.wait(key).unwrap();
    assert!(s.drive_holding("ABC001L6").is_some());
}

/// Issue 13: kill -9 while an eject waits for the mail slots to be emptied: after the restart the eject has ended
/// (its caller is gone) with the reason, its operator request is cancelled, and the cartridge still home stays.
#[test]
fn an_eject_waiting_for_the_mail_slots_ends_with_a_restart() {
    use crate::model::OperatorState;
    let mut s = Sim::new();
    let a = s.open(ALICE, "Bacula");
    let three = ["ABC005L6", "ABC006L6", "ABC007L6"].map(String::from).to_vec();
    let key = s.submit(ALICE, Method::EjectMedia { session: a, media: three, error_if_full: false });
    s.drive_bounded(100_000, |s| s.broker.operators.active().next().is_some());
    s.collect();
    let snapshot = snapshot_of(&s.persisted);
    assert_eq!(snapshot.operators.len(), 1, "the operator request was persisted");
    let mut restarted = Broker::new(BrokerOptions::default(), 8);
    restarted.loaded(snapshot, HashMap::new(), 0);
    let r = restarted.requests.get(key).unwrap();
    assert_eq!(r.state, RequestStatus::Failed);
    assert!(r.error.as_deref().unwrap().contains("rsmd restarted"), "{r:?}");
    let op = restarted.operators.get(1).unwrap();
    assert_eq!(op.state, OperatorState::Cancelled);
    let changes = restarted.take_changes();
    assert!(changes.iter().any(|c| matches!(c, Change::Operator(o) if o.state == OperatorState::Cancelled)), "written");
    let home = restarted.inventory.as_ref().unwrap().media_by_barcode("ABC007L6").unwrap().location.unwrap();
    assert_eq!(home.kind, crate::model::ElementKind::Storage);
}

/// Issue 13: a cleaning cartridge is known by the library's report (element descriptor MEDIUM TYPE 2) as well as
/// by its CLN label: one whose label says nothing of it is a cleaner too, and cleans.
#[test]
fn a_cleaner_is_known_by_the_librarys_report() {
    let mut s = Sim::with(
        |c| {
            c.cartridges.retain(|x| x.barcode != "CLN001L1");
            let mut cleaner = vlib::config::Cartridge::new("XYZ001L1", vlib::config::Location::Slot(18));
            cleaner.cleaning = true;
            c.cartridges.push(cleaner);
        },
        LibraryOptions { poll_first_ms: 10, poll_max_ms: 40, ..LibraryOptions::default() },
    );
    let lib = s.broker.libs[0].id.unwrap();
    let inv = s.broker.inventory.as_ref().unwrap();
    let slot = inv.elements(lib).find(|e| e.kind == crate::model::ElementKind::Storage && e.number == 18).unwrap();
    let m = inv.medium(slot.media.expect("a cartridge in slot 18")).unwrap().clone();
    assert_eq!((m.barcode.as_deref(), m.kind), (Some("XYZ001L1"), crate::model::MediaKind::Cleaning));
    let a = s.open(ALICE, "Bacula");
    s.call_and_wait(ALICE, Method::CleanDrive { session: a, drive: drive_id(&s, 0) }).unwrap();
    assert_eq!(s.broker.inventory.as_ref().unwrap().medium(m.id).unwrap().mount_count, 1);
}

/// An ANSI VOL1 label (ECMA-13 layout: "VOL1", volume id 4..10, owner 37..51, label standard version at 79).
fn ansi_vol1(volume: &str, owner: &str) -> Vec<u8> {
    let mut l = vec![b' '; 80];
    l[..4].copy_from_slice(b"VOL1");
    l[4..4 + volume.len()].copy_from_slice(volume.as_bytes());
    l[37..37 + owner.len()].copy_from_slice(owner.as_bytes());
    l[79] = b'4';
    l
}

/// Issue 13: the label inventory mounts the cartridges whose barcode the library cannot read, reads their first
/// block and puts them back: a labelled one goes to Import with its label shown, a blank one to Free, one with
/// data nothing recognises to Unrecognized; the request counts them; barcoded cartridges are not touched.
#[test]
fn a_label_inventory_identifies_the_cartridges_without_a_barcode() {
    use crate::model::PoolKind;
    let mut s = Sim::with(
        |c| {
            let mut add = |barcode: &str, slot: u32, block: Option<Vec<u8>>| {
                let mut x = vlib::config::Cartridge::new(barcode, vlib::config::Location::Slot(slot));
                x.label_unreadable = true;
                x.first_block = block;
                c.cartridges.push(x);
            };
            add("NOL001L6", 17, Some(ansi_vol1("A00001", "BACKUP")));
            add("NOL002L6", 18, None);
            add("NOL003L6", 19, Some(b"no label in here, just data that nothing recognises".repeat(20)));
        },
        LibraryOptions { poll_first_ms: 10, poll_max_ms: 40, ..LibraryOptions::default() },
    );
    let lib = s.broker.libs[0].id.unwrap();
    let in_slot = |s: &Sim, n: u32| {
        let inv = s.broker.inventory.as_ref().unwrap();
        let e = inv.elements(lib).find(|e| e.kind == crate::model::ElementKind::Storage && e.number == n).unwrap();
        inv.medium(e.media.expect("still in its slot")).unwrap().clone()
    };
    for n in 17..=19 {
        assert_eq!(in_slot(&s, n).barcode, None, "slot {n}: no barcode read");
    }
    let a = s.open(ALICE, "admin");
    s.opcodes.clear();
    let r = s
        .call(ALICE, Method::InventoryLibrary { session: a, library: lib.to_string(), mode: InventoryMode::Omid })
        .unwrap();
    let request = r["request"].as_str().unwrap().to_owned();
    s.drive_bounded(400_000, |s| s.request_state(&request) == RequestStatus::Complete);
    assert_eq!(s.opcodes.iter().filter(|&&o| o == 0x08).count(), 3, "three first blocks read");
    let key = s.broker.requests.find(&request).unwrap();
    assert_eq!(s.broker.requests.get(key).unwrap().progress, Some((3, 3)));
    let pool_kind = |s: &Sim, m: &crate::model::MediaRecord| {
        s.broker.inventory.as_ref().unwrap().pool(m.pool.unwrap()).unwrap().kind
    };
    let labelled = in_slot(&s, 17);
    assert_eq!(labelled.on_media.as_deref(), Some("ansi A00001"));
    assert_eq!(pool_kind(&s, &labelled), PoolKind::Import);
    let blank = in_slot(&s, 18);
    assert_eq!((blank.on_media.as_deref(), pool_kind(&s, &blank)), (Some("blank"), PoolKind::Free));
    let data = in_slot(&s, 19);
    assert_eq!((data.on_media.as_deref(), pool_kind(&s, &data)), (Some("unrecognized data"), PoolKind::Unrecognized));
    assert_eq!(in_slot(&s, 1).on_media, None, "barcoded cartridges are not read");
    for d in 0..4 {
        assert!(s.target.snapshot().drives[d].barcode.is_none(), "drive {d} empty again");
    }
}

/// Issue 13: a drive that signals TapeAlert on a command (RECOVERED ERROR 5D/00) has its flags read at once: a
/// hardware flag raises a device-service request, and the drive object shows the flags.
#[test]
fn a_tapealert_signal_on_a_command_reads_the_flags() {
    use crate::model::OperatorKind;
    let mut s = Sim::new();
    let a = s.open(ALICE, "Bacula");
    let d0 = drive_id(&s, 0);
    let key = s.submit(
        ALICE,
        Method::MountMedia {
            session: a,
            media: vec!["ABC001L6".into()],
            drive: Some(d0.clone()),
            flags: MountFlags::default(),
            priority: 0,
            timeout_ms: None,
            pool: None,
        },
    );
    // While the drive loads, it raises "hardware A" (30): its next TEST UNIT READY says so.
    s.target.inject(vlib::Fault::TapeAlert { drive: 0, flag: 0x1E });
    s.wait(key).unwrap();
    s.drive_bounded(10_000, |s| drive_care(s, 0).alerts != 0);
    assert_eq!(drive_care(&s, 0).alerts, 1 << (0x1E - 1));
    let op = s.broker.operators.active().find(|r| r.kind == OperatorKind::DeviceService).expect("device service");
    assert_eq!(op.object.as_deref(), Some(d0.as_str()));
    assert!(op.text.contains("30 (hardware A)"), "{}", op.text);
}

/// Issue 13: a door access that asks for a full inventory has the robot check every element (INITIALIZE ELEMENT
/// STATUS) once the door is closed, before robot work resumes.
#[test]
fn the_door_closed_runs_the_chosen_inventory() {
    let mut s = Sim::new();
    let a = s.open(ALICE, "Bacula");
    let lib = s.broker.libs[0].id.unwrap().to_string();
    let full = Method::AccessLibraryDoor { session: a.clone(), library: lib, inventory: InventoryMode::Full };
    let r = s.call_and_wait(ALICE, full).unwrap();
    let key = s.broker.requests.find(r["request"].as_str().unwrap()).unwrap();
    s.opcodes.clear();
    s.target.inject(vlib::Fault::DoorClosed);
    s.drive_bounded(100_000, |s| !s.broker.requests.is_open(key));
    let init = s.opcodes.iter().position(|&o| o == 0x07).expect("INITIALIZE ELEMENT STATUS");
    let scan = s.opcodes.iter().rposition(|&o| o == 0xB8).expect("READ ELEMENT STATUS");
    assert!(init < scan, "{:02x?}", s.opcodes);
    assert_eq!(s.broker.requests.get(key).unwrap().state, RequestStatus::Complete);
}

/// A library of `slots` slots, each holding a cartridge (barcodes `{prefix}nnnnL6`), its first scan reconciled.
fn full_library(slots: u32, prefix: &str, more: impl FnOnce(&mut vlib::Config)) -> Sim {
    let mut s = Sim::with(
        |c| {
            c.storage_slots = slots;
            c.cartridges = (1..=slots)
                .map(|n| {
                    vlib::config::Cartridge::new(
                        &vlib::config::generated_barcode(prefix, n, "L6"),
                        vlib::config::Location::Slot(n),
                    )
                })
                .collect();
            more(c);
        },
        LibraryOptions { poll_first_ms: 10, poll_max_ms: 40, ..LibraryOptions::default() },
    );
    s.drive_bounded(100_000, |s| s.broker.libs[0].reconciling.is_none());
    s
}

/// Issue 16: the scan of a large library is reconciled a slice per turn (`RECONCILE_SLICE` elements), not in one
/// turn that holds every other client; what the library does meanwhile (a mount's move) waits behind the scan, so
/// the older scan never overwrites it.
#[test]
fn a_large_scan_is_reconciled_a_slice_per_turn_and_what_follows_waits_for_it() {
    const SLOTS: u32 = 5000;
    // Moves take no time: the mount's move is done while the scan is still being reconciled.
    let mut s = full_library(SLOTS, "S", |c| c.time_scale = 0.0);
    let a = s.open(ALICE, "a");
    let library = s.broker.libs[0].id.unwrap().to_string();
    let r = s.call(ALICE, Method::InventoryLibrary { session: a.clone(), library, mode: InventoryMode::Fast });
    let request = r.unwrap()["request"].as_str().unwrap().to_owned();
    s.drive_bounded(100_000, |s| s.broker.libs[0].reconciling.is_some());
    // The scan is in; a mount comes while it is reconciled.
    let barcode = vlib::config::generated_barcode("S", SLOTS, "L6");
    let key = s.submit(ALICE, mount(&a, &barcode));
    // And an inventory asked for now is answered by a scan made for it, not by the one being reconciled.
    let library = s.broker.libs[0].id.unwrap().to_string();
    let r = s.call(ALICE, Method::InventoryLibrary { session: a.clone(), library, mode: InventoryMode::Fast });
    let second = r.unwrap()["request"].as_str().unwrap().to_owned();
    let mut turns = 0;
    let mut moved_meanwhile = false;
    // Complete once all of it is in: the scan is reconciled over several turns until then.
    while s.request_state(&request) != RequestStatus::Complete {
        assert!(s.broker.libs[0].reconciling.is_some(), "complete only once all of it is in");
        assert!(s.step(), "stalled while reconciling");
        turns += 1;
        moved_meanwhile |= s.drive_holding(&barcode).is_some();
    }
    assert!(moved_meanwhile, "the robot moved the cartridge while the scan was reconciled");
    assert_ne!(s.request_state(&second), RequestStatus::Complete, "the second inventory waits for its own scan");
    s.drive_bounded(100_000, |s| s.request_state(&second) == RequestStatus::Complete);
    let elements = usize::try_from(SLOTS).unwrap() + 4 + 2 + 1;
    assert!(turns + 1 >= elements.div_ceil(RECONCILE_SLICE), "{turns} turns for {elements} elements");
    let reply = s.wait(key).unwrap();
    assert!(reply["drive"].is_string(), "{reply:?}");
    let drive = s.drive_holding(&barcode).expect("the cartridge is in a drive");
    let inv = s.broker.inventory.as_ref().unwrap();
    let m = inv.media_by_barcode(&barcode).unwrap();
    assert_eq!(m.location.map(|l| (l.kind, l.address)), Some((crate::model::ElementKind::Drive, drive)), "{m:?}");
    assert_eq!(inv.media().count(), usize::try_from(SLOTS).unwrap());
}

/// Issue 16: an enumeration without `limit` larger than a page is built a page per serving (the loop serves the
/// other clients in between), and comes out whole: every object once, in the order of the paged listing.
#[test]
fn a_large_unpaged_enumeration_is_built_a_page_at_a_time_and_comes_out_whole() {
    const SLOTS: u32 = 2500;
    let mut s = full_library(SLOTS, "E", |_| {});
    let a = s.open(ALICE, "a");
    let list = |after: Option<String>, limit: Option<u32>| Method::EnumerateObjects {
        session: a.clone(),
        container: None,
        object_type: ObjectType::StorageSlot,
        after,
        limit,
    };
    let Answer::Building(mut e) = s.broker.handle_call(list(None, None), ALICE, s.now) else {
        panic!("2,500 slots are more than a page: built over several servings")
    };
    let mut servings = 2;
    while !s.broker.continue_enumeration(&mut e) {
        servings += 1;
    }
    assert_eq!(servings, usize::try_from(SLOTS).unwrap().div_ceil(dispatch::ENUMERATION_PAGE));
    let whole = decoded(&e.into_bytes()).unwrap();
    assert!(whole.get("next").is_none(), "{:?}", whole.get("next"));
    let ids: Vec<String> =
        whole["objects"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_owned()).collect();
    // The paged listing, for comparison.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let r = s.call(ALICE, list(after.clone(), Some(700))).unwrap();
        paged.extend(r["objects"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_owned()));
        match r.get("next").and_then(|n| n.as_str()) {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(ids.len(), usize::try_from(SLOTS).unwrap());
    assert_eq!(ids, paged);
    // A small one is still answered at once.
    let small = Method::EnumerateObjects {
        session: a.clone(),
        container: None,
        object_type: ObjectType::Drive,
        after: None,
        limit: None,
    };
    assert!(matches!(s.broker.handle_call(small, ALICE, s.now), Answer::Encoded(_)));
}
