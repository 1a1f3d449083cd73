//! The daemon's core, sans-IO: sessions and their ownership, library requests, admission and access checks, the
//! mount/dismount policy, housekeeping.
//!
//! # Primer
//! The broker is the quinn-proto `Endpoint` of rsmd. It knows no mio, socket, sled, file or clock: the loop
//! (`server`) hands it events with the time as a parameter and carries out what it asks.
//!
//! Inputs: [`Broker::handle_call`] (a parsed method from a peer), [`Broker::handle_completion`] (a SCSI command
//! of library `li` finished), [`Broker::handle_timeout`] (time passed), [`Broker::device_gone`],
//! [`Broker::add_library`], [`Broker::connected`] / [`Broker::disconnected`] (a peer's connections), and
//! [`Broker::loaded_inventory`] (the inventory came off disk).
//!
//! Outputs, drained by the loop after every input in this order: [`Broker::poll_command`] (SCSI commands to
//! submit on a library's device), [`Broker::take_changes`] (one batch to persist; the batch number replies wait
//! for), [`Broker::poll_reply`] (answers to calls that waited: they leave once their batch is durable),
//! [`Broker::poll_notification`]; then [`Broker::poll_timeout`] for the next deadline.
//!
//! Rooms: `dispatch` turns methods into broker calls and is the one place internal errors become wire errors;
//! `mounting` is the mount/dismount policy; `requests` the library-request table; `session` the session table;
//! `objects` the views clients enumerate.

pub mod access;
pub mod cleaning;
pub mod dispatch;
pub mod identify;
pub mod mounting;
pub mod objects;
pub mod operator;
pub mod physical;
pub mod pools;
pub mod requests;
pub mod session;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};

use crate::changer::{Event, Library, LibraryOptions, Outgoing};
use crate::media::Inventory;
use crate::model::Change;
use crate::model::{DriveInfo, Guid, LibraryRecord, LibraryState, Owner, RequestId, RequestKind, RequestStatus};
use crate::proto::types::{InventoryMode, Notification, NotificationOperation, ObjectType, PRIORITY_MAX, PRIORITY_MIN};
use crate::proto::{Method, NtmsError, WireError};
use crate::transport::{Response, Tag, TransportError};
use objects::LibraryView;
use requests::{NewRequest, Requests};
use session::{Peer, Sessions};

pub use dispatch::{Answer, Enumeration};

/// A library configured by its changer's serial: its name and drive map apply once a changer with that serial is
/// identified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfiguredLibrary {
    /// The changer's unit serial number.
    pub serial: String,
    /// The administrator's name for it.
    pub name: Option<String>,
    /// Drive serial → data transfer element address.
    pub drives: Vec<(String, u16)>,
}

/// What the broker is told by the configuration, as plain values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerOptions {
    /// This host's name (OpenSession's `server` is compared with it).
    pub host: String,
    /// User ids that administer rsmd.
    pub administrators: Vec<u32>,
    /// Libraries configured by changer serial.
    pub by_serial: Vec<ConfiguredLibrary>,
    /// Unix time (ms) at the loop's clock zero: request times are shown and kept as Unix time.
    pub epoch_ms: u64,
    /// Where new cartridges go.
    pub media_rules: crate::media::pools::MediaRules,
    /// Who may do what.
    pub access: access::AccessRules,
}

/// A drive device of a library, as people and clients name it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriveDevice {
    /// Its sg node or vlib socket.
    pub path: String,
    /// Its non-rewinding tape node.
    pub nst: Option<String>,
}

/// A library to serve, as the loop opened it.
#[derive(Debug, Clone)]
pub struct LibrarySpec {
    /// The changer device (sg node or vlib socket), for people.
    pub label: String,
    /// Source description for de-duplication on hot-plug.
    pub key: String,
    /// Configured name.
    pub name: Option<String>,
    /// Drive devices, by the index the library uses.
    pub drives: Vec<DriveDevice>,
    /// The library's tunables.
    pub options: LibraryOptions,
}

/// A library the broker serves: its state machine and what names it.
#[derive(Debug)]
pub struct Lib {
    /// The state machine.
    pub library: Library,
    /// Its inventory id (known after probing).
    pub id: Option<Guid>,
    /// Configured name.
    pub name: Option<String>,
    /// The changer device (sg node or vlib socket), for people.
    pub label: String,
    /// The changer device is open (false once it went away).
    pub changer_present: bool,
    /// Drive devices, by the index the library uses.
    pub drives: Vec<DriveDevice>,
    /// Configured drive map (serial → address).
    pub drive_map: Vec<(String, u16)>,
    /// Source description for de-duplication on hot-plug.
    pub key: String,
    /// Replaced by a newer instance of the same library (its device came back under a new node): kept only so
    /// that indexes stay stable, ignored everywhere else.
    pub retired: bool,
    /// How long a deferred dismount leaves a cartridge loaded.
    pub deferred_dismount_ms: u64,
    /// The scan progress last announced (clients following an inventory hear of each chunk).
    pub scan_announced: Option<(usize, usize)>,
    /// Inject what an operator puts in the mail slots at once.
    pub auto_inject: bool,
    /// The mail slots an automatic inject last took (or tried to): a changed set starts the next one.
    pub auto_seen: Vec<u16>,
    /// Its partitions.
    pub partitions: Vec<crate::model::Partition>,
    /// A scan being reconciled with the inventory a slice per turn; the library's later events wait for it.
    pub reconciling: Option<Reconciling>,
}

/// A library's scan being reconciled ([`Lib::reconciling`]).
#[derive(Debug)]
pub struct Reconciling {
    job: crate::media::Reconcile,
    /// The drives' identities and nodes when the scan came in.
    infos: Vec<DriveInfo>,
    /// The inventory requests in progress when the scan came in: those it answers.
    answers: Vec<RequestId>,
}

/// Work reconciled per turn of the loop ([`crate::media::Inventory::reconcile_step`]: an element is 1, each change
/// it makes [`crate::media::CHANGE_COST`] more): about 1-2 ms, so that a scan of a large library never holds the
/// other clients' calls for long, even the first one, which creates a record for every cartridge.
pub const RECONCILE_SLICE: usize = 1024;

impl Lib {
    fn view(&self) -> Option<LibraryView> {
        if self.retired {
            return None;
        }
        Some(LibraryView {
            partitions: self.partitions.clone(),
            door_open: self.library.door_open(),
            id: self.id?,
            device: self.label.clone(),
            state: Some(self.library.state()),
            suspect_drives: self.library.suspect_drives().to_vec(),
            not_ready: self.library.not_ready_reason().map(str::to_owned),
            scan: self.library.scan_progress(),
            gone_drives: self
                .library
                .drive_elements()
                .iter()
                .filter(|e| e.device.is_some_and(|i| !self.library.drive_usable(i)))
                .map(|e| e.address)
                .collect(),
            drive_jobs: self
                .library
                .drive_elements()
                .iter()
                .filter_map(|e| self.library.job_on_drive(e.address).map(|m| (e.address, m)))
                .collect(),
        })
    }
}

/// A finished call to answer: (request, reply, store batch to wait for).
pub type Completed = (RequestId, Result<serde_json::Map<String, serde_json::Value>, WireError>, u64);

/// A deferred dismount: the cartridge stays loaded until `due` in case it is asked for again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deferred {
    /// When to dismount.
    pub due: u64,
    /// Library index.
    pub li: usize,
    /// Drive element.
    pub drive: u16,
    /// The cartridge.
    pub media: Guid,
}

/// The daemon's core. See the module primer.
#[derive(Debug)]
pub struct Broker {
    /// The inventory (None while loading).
    pub inventory: Option<Inventory>,
    /// Scans no longer needed, freed [`RECONCILE_SLICE`] elements per turn ([`Broker::free_retired_scans`]):
    /// 50,000 elements freed at once (an allocation each, their barcodes) took 8-12 ms of one turn.
    retired_scans: Vec<std::sync::Arc<Vec<crate::changer::Element>>>,
    /// Sessions.
    pub sessions: Sessions,
    /// Libraries, by index (indexes are stable: a replaced library is retired, not removed).
    pub libs: Vec<Lib>,
    /// This host's name.
    pub host: String,
    /// Library requests.
    pub requests: Requests,
    /// Changes not yet handed to the store, to persist as one batch.
    pub changes: Vec<Change>,
    /// Notifications not yet handed out.
    pub notes: VecDeque<Notification>,
    /// The number of the last batch handed to the store.
    last_batch: u64,
    /// The time of the last input (ms on the loop's monotonic clock).
    pub now: u64,
    /// The configuration's plain values.
    pub options: BrokerOptions,
    /// Drive maps saved by `rsmd --map-drives`, by changer serial.
    pub saved_maps: crate::model::DriveMaps,
    /// Mount/dismount jobs by request: (library index, cartridge).
    pub jobs: HashMap<RequestId, (usize, Guid)>,
    /// Deferred dismounts.
    pub deferred: Vec<Deferred>,
    /// Mounts waiting for a cartridge another session has.
    pub parked: Vec<mounting::MountCall>,
    /// Finished calls to answer: (request key, reply, store batch to wait for).
    pub completions: VecDeque<Completed>,
    /// User ids that administer rsmd (the configuration's `administrators`).
    pub administrators: Vec<u32>,
    /// Configured libraries whose changer is not there: (name, why).
    pub absent: Vec<(String, String)>,
    /// A reply waits for the requests' pending changes: they go with this turn's batch.
    requests_urgent: std::cell::Cell<bool>,
    /// Allocations waiting for a cartridge.
    pub allocs: Vec<pools::AllocCall>,
    /// Physical moves in flight (ejects), by request.
    pub physical: Vec<(RequestId, physical::PhysicalMove)>,
    /// The number of the last notification.
    note_sequence: u64,
    /// Operator requests.
    pub operators: operator::Operators,
    /// `WaitForOperatorRequest` calls waiting for an answer.
    pub op_waits: Vec<operator::OpWait>,
    /// Numbers the keys of those calls.
    op_wait_seq: u64,
    /// Ejects waiting for the operator to empty the mail slots.
    pub port_waits: Vec<physical::PortWait>,
    /// Drive cleanings queued or running.
    pub cleanings: Vec<cleaning::CleanCall>,
    /// Door accesses: (request, library index, answered yet).
    pub doors: Vec<(RequestId, usize, bool)>,
    /// Label inventories under way.
    pub label_runs: Vec<identify::LabelRun>,
    /// Their identify jobs.
    pub identify_jobs: identify::IdentifyJobs,
    /// Numbers the identify jobs.
    identify_seq: u64,
    /// TapeAlert reads outside jobs: (id, library index, drive device).
    pub alert_reads: Vec<(u64, usize, usize)>,
    /// Numbers them.
    alert_seq: u64,
}

/// How long a request's progress may wait for a batch to ride with before it is written by itself.
const REQUEST_FLUSH_MS: u64 = 5_000;

impl Broker {
    /// A broker with no inventory yet (calls get NotReady until [`Broker::loaded_inventory`]). `seed` makes session and
    /// request ids unpredictable across runs.
    pub fn new(options: BrokerOptions, seed: u64) -> Broker {
        Broker {
            inventory: None,
            sessions: Sessions::new(seed),
            libs: Vec::new(),
            host: options.host.clone(),
            requests: Requests::new(seed),
            changes: Vec::new(),
            retired_scans: Vec::new(),
            notes: VecDeque::new(),
            last_batch: 0,
            now: 0,
            administrators: options.administrators.clone(),
            options,
            saved_maps: HashMap::new(),
            jobs: HashMap::new(),
            deferred: Vec::new(),
            parked: Vec::new(),
            completions: VecDeque::new(),
            absent: Vec::new(),
            requests_urgent: std::cell::Cell::new(false),
            allocs: Vec::new(),
            physical: Vec::new(),
            note_sequence: 0,
            operators: operator::Operators::new(seed),
            op_waits: Vec::new(),
            op_wait_seq: 0,
            port_waits: Vec::new(),
            cleanings: Vec::new(),
            doors: Vec::new(),
            label_runs: Vec::new(),
            identify_jobs: Default::default(),
            identify_seq: 0,
            alert_reads: Vec::new(),
            alert_seq: 0,
        }
    }

    /// The configured libraries whose changer is not there, with why; logged when the list changes.
    pub fn set_absent(&mut self, absent: Vec<(String, String)>) {
        if absent != self.absent {
            for (name, why) in absent.iter().filter(|a| !self.absent.contains(a)) {
                log::warn!("library {name} is not present: {why}");
            }
            for (name, _) in self.absent.iter().filter(|a| !absent.iter().any(|b| b.0 == a.0)) {
                log::info!("library {name} is present now");
            }
            let ids: Vec<String> = absent
                .iter()
                .chain(&self.absent)
                .map(|(name, _)| Guid::derive("absent-library", name).to_string())
                .collect();
            for id in ids {
                self.note(NotificationOperation::Update, ObjectType::Library, id);
            }
            self.absent = absent;
        }
    }

    /// The configuration changed (SIGHUP): new administrators and serial-configured libraries.
    pub fn set_options(&mut self, options: BrokerOptions) {
        self.administrators.clone_from(&options.administrators);
        if let Some(inv) = self.inventory.as_mut() {
            inv.set_rules(options.media_rules.clone());
            inv.clock = self.options.epoch_ms.saturating_add(self.now);
            let c = inv.settle(self.options.epoch_ms.saturating_add(self.now));
            self.push_changes(c);
        }
        self.options = options;
    }

    // --- Inputs -------------------------------------------------------------------------------------------------

    /// The drive maps `rsmd --map-drives` saved changed (read again on SIGHUP): the libraries they name take them
    /// at a rescan, started now.
    pub fn set_saved_maps(&mut self, maps: crate::model::DriveMaps, now: u64) {
        self.now = now;
        for lib in self.libs.iter_mut().filter(|l| !l.retired) {
            let serial = lib.library.identity().serial.clone();
            let (Some(new), old) = (maps.get(&serial), self.saved_maps.get(&serial)) else { continue };
            if Some(new) == old {
                continue;
            }
            let map = drive_map_for(&self.options, &maps, lib, &serial);
            log::info!("library {}: drive map from rsmd --map-drives applied", lib.label);
            lib.library.set_drive_map(map);
            lib.library.request_rescan();
        }
        self.saved_maps = maps;
        self.pump();
    }

    /// The configuration changed (SIGHUP) for library `li`: its name, drive map and deferred-dismount delay apply
    /// at once; the settings that only a restart applies are named in the log.
    pub fn reconfigure_library(&mut self, li: usize, name: Option<String>, options: &LibraryOptions, now: u64) {
        self.now = now;
        let Some(lib) = self.libs.get_mut(li).filter(|l| !l.retired) else { return };
        let current = lib.library.options().clone();
        let mut later = Vec::new();
        if options.chunk != current.chunk {
            later.push("chunk");
        }
        if options.heartbeat_ms != current.heartbeat_ms {
            later.push("heartbeat_ms");
        }
        if options.ready_timeout_ms != current.ready_timeout_ms {
            later.push("ready_timeout_ms");
        }
        if !later.is_empty() {
            log::warn!("library {}: {} take effect when rsmd restarts", lib.label, later.join(", "));
        }
        lib.deferred_dismount_ms = options.deferred_dismount_ms;
        lib.auto_inject = options.auto_inject;
        lib.partitions.clone_from(&options.partitions);
        if lib.drive_map != options.drive_map {
            lib.drive_map.clone_from(&options.drive_map);
            let serial = lib.library.identity().serial.clone();
            let map = drive_map_for(&self.options, &self.saved_maps, lib, &serial);
            lib.library.set_drive_map(map);
            lib.library.request_rescan();
            log::info!("library {}: new drive map; rescanning", lib.label);
        }
        if lib.name != name {
            lib.name = name;
            if let (Some(id), Some(inv)) = (lib.id, self.inventory.as_mut()) {
                if let Some(mut rec) = inv.library(id).cloned() {
                    let new = lib.name.clone().unwrap_or_else(|| format!("{} {}", rec.vendor, rec.product));
                    log::info!("audit: library {} renamed {}", rec.name, new);
                    rec.name = new;
                    let c = inv.put_library(rec);
                    self.push_changes(c);
                }
            }
        }
        self.pump();
    }

    /// Library `li` is no longer in the configuration: it is not served any more (its requests fail, its
    /// inventory is kept, offline). The loop closes its devices.
    pub fn remove_library(&mut self, li: usize, now: u64) {
        self.now = now;
        let Some(lib) = self.libs.get_mut(li).filter(|l| !l.retired) else { return };
        log::info!("audit: library {} removed from the configuration: no longer served", lib.label);
        lib.changer_present = false;
        lib.library.device_gone();
        self.drain_libraries();
        self.libs[li].retired = true;
        self.pump();
    }

    /// The inventory came off disk as a snapshot (tests): see [`Broker::loaded_inventory`].
    #[cfg(test)]
    pub fn loaded(&mut self, mut snapshot: crate::model::Snapshot, saved_maps: crate::model::DriveMaps, now: u64) {
        let requests = crate::model::Requested {
            library: std::mem::take(&mut snapshot.requests),
            operator: std::mem::take(&mut snapshot.operators),
        };
        self.loaded_inventory(Inventory::from_snapshot(snapshot), requests, saved_maps, now);
    }

    /// The inventory came off disk, built record by record (and the requests that were open): serve it, marked
    /// stale until each library is verified.
    pub fn loaded_inventory(
        &mut self,
        mut inv: Inventory,
        requests: crate::model::Requested,
        saved_maps: crate::model::DriveMaps,
        now: u64,
    ) {
        self.now = now;
        let ended = self.requests.restore(requests.library, self.now_unix());
        let table = &self.requests;
        let ops = self.operators.restore(requests.operator, |k| table.is_open(k), self.now_unix());
        for n in ops {
            if let Some(r) = self.operators.get(n) {
                self.changes.push(Change::Operator(r.clone()));
            }
        }
        // What a restart did to them is written at once.
        self.requests_urgent.set(!ended.is_empty());
        for id in ended {
            log::warn!(
                "request {}: {}",
                self.requests.guid_of(id),
                self.requests.get(id).and_then(|r| r.error.as_deref()).unwrap_or("")
            );
        }
        inv.set_rules(self.options.media_rules.clone());
        inv.clock = self.now_unix();
        let mut stale = inv.settle(self.now_unix());
        stale.extend(inv.mark_all_stale());
        self.inventory = Some(inv);
        self.saved_maps = saved_maps;
        self.changes.extend(stale);
        self.restore_cleanings();
    }

    /// True once the inventory is loaded.
    pub fn is_loaded(&self) -> bool {
        self.inventory.is_some()
    }

    /// Serves a library; returns its index (the `li` of the other calls).
    pub fn add_library(&mut self, spec: LibrarySpec, now: u64) -> usize {
        self.now = now;
        let drive_map = spec.options.drive_map.clone();
        let deferred_dismount_ms = spec.options.deferred_dismount_ms;
        let auto_inject = spec.options.auto_inject;
        let partitions = spec.options.partitions.clone();
        self.libs.push(Lib {
            library: Library::new(spec.drives.len(), spec.options, now),
            id: None,
            name: spec.name,
            label: spec.label,
            changer_present: true,
            drives: spec.drives,
            drive_map,
            key: spec.key,
            retired: false,
            deferred_dismount_ms,
            scan_announced: None,
            auto_inject,
            auto_seen: Vec::new(),
            reconciling: None,
            partitions,
        });
        self.pump();
        self.libs.len() - 1
    }

    /// Handles one parsed call from `peer`.
    pub fn handle_call(&mut self, method: Method, peer: Peer, now: u64) -> Answer {
        self.now = now;
        // A lookup changes nothing: the rules have nothing new to react to (a lookup is most of what clients do).
        let reads = matches!(
            method,
            Method::GetObjectInformation { .. }
                | Method::EnumerateObjects { .. }
                | Method::GetInfo
                | Method::GetInterfaceDescription { .. }
        );
        let answer = self.dispatch(method, peer);
        if !reads {
            self.pump();
        }
        answer
    }

    /// A connection of `peer` opened.
    pub fn connected(&mut self, peer: Peer) {
        self.sessions.connected(peer);
    }

    /// A connection of `peer` closed; the process's sessions end with its last connection.
    pub fn disconnected(&mut self, peer: Peer, now: u64) {
        self.now = now;
        for s in self.sessions.disconnected(peer) {
            log::debug!("session {} ended with its process's last connection", s.handle);
            self.session_ended(&s.handle);
        }
        self.pump();
    }

    /// A command of library `li` finished (or could not be submitted).
    pub fn handle_completion(&mut self, li: usize, tag: Tag, result: Result<Response, TransportError>, now: u64) {
        self.now = now;
        if let Some(lib) = self.libs.get_mut(li) {
            lib.library.handle_completion(tag, result, now);
        }
        self.announce_scan(li);
        self.pump();
    }

    /// A chunk of a scan was read: the library's progress changed, and clients following an inventory hear of it.
    fn announce_scan(&mut self, li: usize) {
        let Some(lib) = self.libs.get_mut(li) else { return };
        let now = lib.library.scan_progress();
        if now == lib.scan_announced {
            return;
        }
        lib.scan_announced = now;
        if let (Some(id), Some((done, total))) = (lib.id, now) {
            self.note(NotificationOperation::Update, ObjectType::Library, id.to_string());
            let label = self.label_run_keys(id);
            for key in self.requests.open_inventories(id).into_iter().filter(|k| !label.contains(k)) {
                self.requests.set_progress(key, done as u64, total as u64);
                self.note_request(key);
            }
        }
    }

    /// Device `d` of library `li` (0 = changer, 1 + n = drive n) went away.
    pub fn device_gone(&mut self, li: usize, d: usize, now: u64) {
        self.now = now;
        if let Some(lib) = self.libs.get_mut(li) {
            if d == 0 {
                lib.changer_present = false;
                lib.library.device_gone();
            } else {
                // Out of service at once: its commands fail, its jobs end, mounts choose other drives.
                lib.library.drive_gone(d - 1);
            }
        }
        self.pump();
    }

    /// Drive `drive` of library `li` is back (its device reappeared, perhaps under another node, and is open
    /// again): it is identified again and used once it answers.
    pub fn drive_back(&mut self, li: usize, drive: usize, node: DriveDevice, now: u64) {
        self.now = now;
        if let Some(lib) = self.libs.get_mut(li) {
            if let Some(d) = lib.drives.get_mut(drive) {
                *d = node;
            }
            lib.library.drive_back(drive, now);
        }
        // Its element shows the node it is on now.
        let drives: Vec<crate::changer::Element> =
            self.libs.get(li).map_or_else(Vec::new, |l| l.library.drive_elements().to_vec());
        if !drives.is_empty() {
            self.apply_event(li, Event::Elements(drives));
        }
        self.pump();
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: u64) {
        self.now = now;
        if let Some(inv) = self.inventory.as_mut() {
            inv.clock = self.options.epoch_ms.saturating_add(self.now);
        }
        for li in 0..self.libs.len() {
            self.reconcile_slice(li);
        }
        self.free_retired_scans();
        for lib in &mut self.libs {
            if lib.library.poll_timeout().is_some_and(|t| t <= now) {
                lib.library.handle_timeout(now);
            }
        }
        self.pump();
    }

    // --- Outputs ------------------------------------------------------------------------------------------------

    /// The next SCSI command to submit: (library index, command).
    pub fn poll_command(&mut self) -> Option<(usize, Outgoing)> {
        self.libs.iter_mut().enumerate().find_map(|(li, l)| l.library.poll_request().map(|o| (li, o)))
    }

    /// The changes to persist as one batch (empty: nothing changed); a non-empty batch gets the next number.
    pub fn take_changes(&mut self) -> Vec<Change> {
        // A request's progress alone (queued → in progress → waiting) is not worth a flush of its own: it rides
        // with the next inventory change, a reply that reports it, or goes after REQUEST_FLUSH_MS. (Every flush is an
        // fsync the replies that wait behind it pay for.)
        let due = self.requests.dirty_since().is_some_and(|t| t + REQUEST_FLUSH_MS <= self.now);
        if !self.changes.is_empty() || self.requests_urgent.get() || due {
            let requests = self.requests.take_changes();
            self.changes.extend(requests);
            self.requests_urgent.set(false);
        }
        if !self.changes.is_empty() {
            self.last_batch += 1;
        }
        std::mem::take(&mut self.changes)
    }

    /// The number of the last batch handed out by [`Broker::take_changes`].
    pub fn last_batch(&self) -> u64 {
        self.last_batch
    }

    /// The next answer to a call that waited: (request key, reply, batch it waits for).
    pub fn poll_reply(&mut self) -> Option<Completed> {
        self.completions.pop_front()
    }

    /// The next notification for WaitForNotification streams.
    pub fn poll_notification(&mut self) -> Option<Notification> {
        self.notes.pop_front()
    }

    /// When [`Broker::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<u64> {
        let libs = self.libs.iter().filter_map(|l| l.library.poll_timeout());
        let deferred = self
            .deferred
            .iter()
            .map(|d| d.due)
            .chain(self.parked.iter().filter_map(|p| p.deadline))
            .chain(self.allocs.iter().filter_map(|a| a.deadline))
            .chain(self.operator_deadline())
            .chain(self.cleaning_deadline());
        let requests = self.requests.dirty_since().map(|t| t + REQUEST_FLUSH_MS);
        // A scan still being reconciled: its next slice at once (after the loop has looked at its other work); the
        // same for a scan still being freed.
        let reconciling =
            (self.libs.iter().any(|l| l.reconciling.is_some()) || !self.retired_scans.is_empty()).then_some(self.now);
        libs.chain(deferred).chain(requests).chain(reconciling).min()
    }

    /// A one-line summary of the libraries (for `STATUS=`, and for tests, which wait for it).
    pub fn status_line(&self) -> String {
        let libs: Vec<&Lib> = self.libs.iter().filter(|l| !l.retired).collect();
        // A scan still being reconciled is part of the scan: ready means its inventory is in.
        let state = |l: &Lib| {
            if l.reconciling.is_some() && l.library.state() == LibraryState::Ready {
                LibraryState::Scanning
            } else {
                l.library.state()
            }
        };
        let count = |s: LibraryState| libs.iter().filter(|l| state(l) == s).count();
        format!(
            "{} libraries: {} ready, {} busy, {} probing, {} scanning, {} offline",
            libs.len(),
            count(LibraryState::Ready),
            count(LibraryState::Busy),
            count(LibraryState::Probing),
            count(LibraryState::Scanning),
            count(LibraryState::Offline)
        )
    }

    /// Lets the libraries' outputs drive the rules until everything is settled: what the libraries did first (a
    /// finished mount is owned before housekeeping looks for idle cartridges), then the rules that react to it,
    /// then what those asked for.
    fn pump(&mut self) {
        if let Some(inv) = self.inventory.as_mut() {
            inv.clock = self.options.epoch_ms.saturating_add(self.now);
        }
        self.drain_libraries();
        if self.inventory.is_some() {
            self.housekeeping();
            self.drain_libraries();
        }
        for id in self.requests.take_ended() {
            self.audit(id);
        }
        self.requests.touch(self.now);
    }

    /// The audit log: one line per request when it ends, with who asked (user, application, process), what
    /// (cartridge, drive, library) and the outcome.
    fn audit(&self, id: RequestId) {
        let Some(r) = self.requests.get(id) else { return };
        let inv = self.inventory.as_ref();
        let media = r.media.as_deref().and_then(|m| m.parse::<Guid>().ok());
        let barcode = media.and_then(|m| inv?.medium(m)?.barcode.clone());
        let drive = r.drive.as_deref().and_then(|d| d.parse::<Guid>().ok()).and_then(|d| inv?.element_by_id(d));
        let mut what = String::new();
        if let Some(b) = barcode.or_else(|| r.media.clone()) {
            what.push_str(&format!(" cartridge {b}"));
        }
        if let Some(d) = drive {
            what.push_str(&format!(" drive {}", d.number));
        }
        if let Some(name) = r.library.and_then(|l| inv?.library(l)).map(|l| l.name.clone()) {
            what.push_str(&format!(" library {name}"));
        }
        let pid = r.pid.map(|p| format!(" pid {p}")).unwrap_or_default();
        let pid = match &r.client {
            Some(c) => format!("{pid} ({c})"),
            None => pid,
        };
        let outcome = match (&r.state, &r.error) {
            (RequestStatus::Complete, _) => "complete".to_owned(),
            (s, Some(e)) => format!("{}: {e}", requests::status_name(*s)),
            (s, None) => requests::status_name(*s).to_owned(),
        };
        log::info!(
            "audit: {} request {} by {}{pid}:{what}: {outcome}",
            requests::kind_name(r.kind),
            r.guid,
            mounting::owner_text(&r.owner)
        );
    }

    fn drain_libraries(&mut self) {
        for li in 0..self.libs.len() {
            // A scan being reconciled holds back what the library did after it (in order: a move's result must
            // not be overwritten by the older scan), until handle_timeout has reconciled it all.
            while self.libs[li].reconciling.is_none() {
                let mut progressed = false;
                while let Some(ev) = self.libs[li].library.poll_event() {
                    progressed = true;
                    self.apply_event(li, ev);
                    if self.libs[li].reconciling.is_some() {
                        break;
                    }
                }
                if self.libs[li].reconciling.is_some() {
                    break;
                }
                while let Some(p) = self.libs[li].library.poll_progress() {
                    progressed = true;
                    self.on_progress(li, p);
                }
                while let Some(o) = self.libs[li].library.poll_outcome() {
                    progressed = true;
                    self.on_outcome(li, o);
                }
                if !progressed {
                    break;
                }
            }
        }
    }

    /// The store batch a reply must wait for: this turn's (if it changed anything) or the last one.
    pub fn batch_for_reply(&self) -> u64 {
        let requests = self.requests.has_changes();
        if requests {
            // A reply reports a request's change: it goes out with this turn's batch.
            self.requests_urgent.set(true);
        }
        self.last_batch + u64::from(!self.changes.is_empty() || requests)
    }

    pub(crate) fn note(&mut self, operation: NotificationOperation, object_type: ObjectType, object: String) {
        self.note_sequence += 1;
        self.notes.push_back(Notification { operation, object_type, object, sequence: self.note_sequence });
    }

    pub(crate) fn push_changes(&mut self, changes: Vec<Change>) {
        for c in &changes {
            let (t, id) = match c {
                Change::Library(l) => (ObjectType::Library, l.id.to_string()),
                Change::Element(e) => (
                    match e.kind {
                        crate::model::ElementKind::Drive => ObjectType::Drive,
                        crate::model::ElementKind::ImportExport => ObjectType::IePort,
                        crate::model::ElementKind::Storage => ObjectType::StorageSlot,
                        crate::model::ElementKind::Transport => ObjectType::Changer,
                    },
                    e.id().to_string(),
                ),
                Change::Media(m) => (ObjectType::PhysicalMedia, m.id.to_string()),
                Change::RemoveMedia(id) => {
                    self.note(NotificationOperation::Delete, ObjectType::PhysicalMedia, id.to_string());
                    continue;
                }
                Change::Pool(p) => (ObjectType::MediaPool, p.id.to_string()),
                Change::RemovePool(id) => {
                    self.note(NotificationOperation::Delete, ObjectType::MediaPool, id.to_string());
                    continue;
                }
                _ => continue,
            };
            self.note(NotificationOperation::Update, t, id);
        }
        self.changes.extend(changes);
    }

    /// A session ended (closed, or its process's last connection went): its waiting and queued requests are
    /// cancelled (a job already moving is undone, so the hardware is left in a known state); requests submitted
    /// with `nowait` go on, owned by the same user and application. Completed mounts stay theirs.
    pub fn session_ended(&mut self, handle: &str) {
        let parked: Vec<RequestId> = self.parked.iter().filter(|p| p.session == handle).map(|p| p.key).collect();
        for key in parked {
            if !self.requests.get(key).is_some_and(|r| r.detached) {
                self.end_parked(key, NtmsError::Cancelled { message: "the session ended".into() });
            }
        }
        self.operator_session_ended(handle);
        let waits: Vec<RequestId> = self.port_waits.iter().filter(|w| w.session == handle).map(|w| w.key).collect();
        for key in waits {
            if !self.requests.get(key).is_some_and(|r| r.detached) {
                self.end_port_wait(key, NtmsError::Cancelled { message: "the session ended".into() });
            }
        }
        let allocs: Vec<RequestId> = self.allocs.iter().filter(|a| a.session == handle).map(|a| a.key).collect();
        for key in allocs {
            self.end_alloc(key, Err(NtmsError::Cancelled { message: "the session ended".into() }));
        }
        for key in self.requests.open_of_session(handle) {
            if self.jobs.contains_key(&key) {
                // The job ends Cancelled (after undoing what it did), and that finishes the request.
                self.cancel_job(key);
            } else if self.requests.cancel(key, self.now_unix()).is_ok() {
                self.note_request(key);
            }
        }
    }

    /// Unix time in ms (the loop's clock plus the offset it gave).
    pub fn now_unix(&self) -> u64 {
        self.now.saturating_add(self.options.epoch_ms)
    }

    /// A request changed: clients watching requests hear of it.
    fn note_request(&mut self, id: RequestId) {
        let guid = self.requests.guid_of(id);
        self.note(NotificationOperation::Update, ObjectType::LibRequest, guid);
    }

    /// Ends library request `key` with `result` (complete; cancelled or failed with the error's text), announces
    /// it, and answers the call that waits for it: `{request}`, or the error.
    pub(crate) fn answer_request(&mut self, key: RequestId, result: Result<(), NtmsError>) {
        let reply = match result {
            Ok(()) => {
                if self.requests.is_open(key) {
                    self.requests.finish(key, RequestStatus::Complete, None, self.now_unix());
                }
                let mut m = serde_json::Map::new();
                m.insert("request".into(), serde_json::Value::String(self.requests.guid_of(key)));
                Ok(m)
            }
            Err(e) => {
                let state = if matches!(e, NtmsError::Cancelled { .. }) {
                    RequestStatus::Cancelled
                } else {
                    RequestStatus::Failed
                };
                if self.requests.is_open(key) {
                    self.requests.finish(key, state, Some(e.to_string()), self.now_unix());
                }
                Err(WireError::Ntms(e))
            }
        };
        self.note_request(key);
        self.completions.push_back((key, reply, self.batch_for_reply()));
    }

    /// Who `session` is (its user and application).
    pub fn owner_of(&self, session: &str) -> Owner {
        self.sessions.owner(session).unwrap_or_default()
    }

    /// A new request of `session`.
    fn new_request(&self, kind: RequestKind, library: Option<Guid>, session: &str) -> NewRequest {
        NewRequest {
            kind,
            library,
            session: Some(session.to_owned()),
            owner: self.owner_of(session),
            pid: self.sessions.pid(session),
            client: self.sessions.client(session),
            detached: false,
            priority: 0,
            media: None,
        }
    }

    /// Queues an inventory of library `id` for `session`; returns the request id. The default mode is the fast
    /// one (READ ELEMENT STATUS with barcodes); `full` first has the library check every element (INITIALIZE
    /// ELEMENT STATUS); `omid` (label) reads the first block of every cartridge without a barcode after the scan
    /// (see [`identify`]).
    pub fn start_inventory(&mut self, id: Guid, session: &str, mode: InventoryMode) -> Result<String, NtmsError> {
        let Some(li) = self.libs.iter().position(|l| l.id == Some(id) && !l.retired) else {
            return Err(NtmsError::InvalidLibrary { message: format!("no library {id}") });
        };
        if mode == InventoryMode::Omid {
            if self.libs[li].library.state() == LibraryState::Offline {
                return Err(NtmsError::LibraryOffline { message: format!("library {id} is offline") });
            }
            let new = self.new_request(RequestKind::Inventory, Some(id), session);
            let key = self.requests.add(new, self.now_unix());
            let guid = self.requests.guid_of(key);
            self.note(NotificationOperation::Insert, ObjectType::LibRequest, guid.clone());
            self.start_label_inventory(li, id, key);
            return Ok(guid);
        }
        let lib = &mut self.libs[li];
        if lib.library.state() == LibraryState::Offline {
            return Err(NtmsError::LibraryOffline { message: format!("library {id} is offline") });
        }
        if mode == InventoryMode::Full {
            lib.library.request_initialize();
        } else {
            lib.library.request_rescan();
        }
        let new = self.new_request(RequestKind::Inventory, Some(id), session);
        let now = self.now_unix();
        let rid = self.requests.add(new, now);
        self.requests.set_state(rid, RequestStatus::InProgress, None, now);
        let guid = self.requests.guid_of(rid);
        self.note(NotificationOperation::Insert, ObjectType::LibRequest, guid.clone());
        Ok(guid)
    }

    /// Cancels a library request.
    pub fn cancel_request(&mut self, text: &str, session: &str, admin: bool) -> Result<(), NtmsError> {
        let key = self.requests.check_owner(text, session, &self.owner_of(session), admin)?;
        log::info!("audit: cancel of request {text} asked by {}", mounting::owner_text(&self.owner_of(session)));
        if self.parked.iter().any(|p| p.key == key) {
            self.end_parked(key, NtmsError::Cancelled { message: "cancelled".into() });
            return Ok(());
        }
        if self.allocs.iter().any(|a| a.key == key) {
            self.end_alloc(key, Err(NtmsError::Cancelled { message: "cancelled".into() }));
            return Ok(());
        }
        if self.jobs.contains_key(&key) {
            // The job reports Cancelled (after undoing what it did) and that finishes the request.
            return if self.cancel_job(key) {
                Ok(())
            } else {
                Err(NtmsError::InvalidOperation { message: format!("request {text} is past cancelling") })
            };
        }
        self.requests.cancel(key, self.now_unix())?;
        self.note_request(key);
        Ok(())
    }

    /// `SetRequestPriority`: a queued mount or dismount moves up or down the robot's queue.
    pub fn set_request_priority(
        &mut self,
        text: &str,
        priority: i32,
        session: &str,
        admin: bool,
    ) -> Result<(), NtmsError> {
        if !(PRIORITY_MIN..=PRIORITY_MAX).contains(&priority) {
            return Err(NtmsError::InvalidParameter {
                message: format!("priority {priority} is not in {PRIORITY_MIN}..={PRIORITY_MAX}"),
            });
        }
        let key = self.requests.check_owner(text, session, &self.owner_of(session), admin)?;
        let queued = match self.jobs.get(&key) {
            Some(&(li, _)) => self.libs[li].library.set_job_priority(key.0, priority),
            // Waiting for its cartridge: it joins the robot queue with this priority.
            None => self.parked.iter_mut().find(|p| p.key == key).map(|p| p.set_priority(priority)).is_some(),
        };
        if !queued {
            return Err(NtmsError::InvalidOperation {
                message: format!(
                    "request {text} has started or finished: only waiting mounts and dismounts are reordered"
                ),
            });
        }
        self.requests.set_priority(key, priority);
        log::info!(
            "audit: request {text} moved to priority {priority} by {}",
            mounting::owner_text(&self.owner_of(session))
        );
        self.note_request(key);
        Ok(())
    }

    /// Frees up to [`RECONCILE_SLICE`] elements of the scans no longer needed. One still shared (the changer's
    /// current scan, or one a reconcile still reads) is only let go here: its last holder hands it back.
    fn free_retired_scans(&mut self) {
        let mut budget = RECONCILE_SLICE;
        while budget > 0 {
            let Some(last) = self.retired_scans.last_mut() else { break };
            match std::sync::Arc::get_mut(last) {
                Some(scan) if !scan.is_empty() => {
                    let n = budget.min(scan.len());
                    scan.truncate(scan.len() - n);
                    budget -= n;
                }
                _ => {
                    self.retired_scans.pop();
                }
            }
        }
    }

    /// Reconciles the next slice of library `li`'s scan ([`Lib::reconciling`]), and what follows a whole scan
    /// once it is all in. True when nothing is left to do.
    fn reconcile_slice(&mut self, li: usize) -> bool {
        let Some(mut r) = self.libs[li].reconciling.take() else { return true };
        let Some(inv) = self.inventory.as_mut() else { return true };
        if self.libs[li].retired {
            return true;
        }
        let mut changes = Vec::new();
        let infos = &r.infos;
        let drive = |d: usize| infos.get(d).cloned().unwrap_or_default();
        if !inv.reconcile_step(&mut r.job, RECONCILE_SLICE, &drive, &mut changes) {
            self.push_changes(changes);
            self.libs[li].reconciling = Some(r);
            return false;
        }
        let full = r.job.full();
        self.retired_scans.push(r.job.into_reported());
        if full {
            let id = self.libs[li].id.unwrap_or_default();
            if let Some(mut rec) = inv.library(id).cloned() {
                rec.stale = false;
                changes.extend(inv.put_library(rec));
            }
            let now = self.options.epoch_ms.saturating_add(self.now);
            let label = self.label_run_keys(id);
            // Only the requests that were in progress when the scan came in: one made while it is reconciled is
            // answered by the scan the library runs for it next.
            for rid in self.requests.finish_inventories(&r.answers, now, &label) {
                self.note(NotificationOperation::Update, ObjectType::LibRequest, rid);
            }
            self.operator_scan_done(id);
            self.label_scan_done(li, id);
        }
        self.push_changes(changes);
        if self.libs[li].auto_inject {
            self.auto_inject(li);
        }
        true
    }

    /// Applies one library event to the inventory.
    fn apply_event(&mut self, li: usize, event: Event) {
        let Some(inv) = self.inventory.as_mut() else { return };
        if let Event::Identified { changer, .. } = &event {
            // A library whose device came back (hot-plug) replaces its gone instance.
            let key = if changer.serial.is_empty() { self.libs[li].label.clone() } else { changer.serial.clone() };
            let id = Guid::derive("library", &key);
            let label = self.libs[li].label.clone();
            for (i, other) in self.libs.iter_mut().enumerate() {
                if i != li && other.id == Some(id) && !other.changer_present && !other.retired {
                    log::info!("library {id} is back on {label}");
                    other.retired = true;
                }
            }
        }
        let lib = &mut self.libs[li];
        if lib.retired {
            return;
        }
        match event {
            Event::Identified { changer, drives, .. } => {
                let key = if changer.serial.is_empty() { lib.label.clone() } else { changer.serial.clone() };
                let id = Guid::derive("library", &key);
                lib.id = Some(id);
                // Configuration naming this changer by serial, and mappings persisted by --map-drives.
                if let Some(c) = configured_by_serial(&self.options, &changer.serial) {
                    if lib.name.is_none() {
                        lib.name.clone_from(&c.name);
                    }
                }
                let map = drive_map_for(&self.options, &self.saved_maps, lib, &changer.serial);
                lib.library.set_drive_map(map);
                let name = lib.name.clone().unwrap_or_else(|| format!("{} {}", changer.vendor, changer.product));
                log::info!(
                    "library {name} ({id}) on {}: {} {} serial {:?}, {} drive devices",
                    lib.label,
                    changer.vendor,
                    changer.product,
                    changer.serial,
                    drives.iter().flatten().count()
                );
                let rec = LibraryRecord {
                    id,
                    name,
                    serial: changer.serial,
                    vendor: changer.vendor,
                    product: changer.product,
                    revision: changer.revision,
                    device: lib.label.clone(),
                    state: lib.library.state(),
                    stale: true,
                    load_ms: inv.library(id).and_then(|r| r.load_ms),
                    disabled: inv.library(id).is_some_and(|r| r.disabled),
                    created: 0,
                    modified: 0,
                };
                if let Some(ms) = rec.load_ms {
                    lib.library.assume_load_time(ms);
                }
                let c = inv.put_library(rec);
                self.push_changes(c);
            }
            Event::Inventory { .. } | Event::Elements(_) if lib.id.is_some() => {
                let (elements, previous) = match event {
                    Event::Inventory { elements, previous } => (elements, Some(previous)),
                    Event::Elements(changed) => (std::sync::Arc::new(changed), None),
                    _ => return,
                };
                let full = elements.len() == lib.library.elements().len() && lib.library.state() != LibraryState::Busy;
                let id = lib.id.unwrap_or_default();
                let infos: Vec<DriveInfo> = drive_infos(lib);
                let job = inv.start_reconcile(id, elements, full);
                let answers = if full { self.requests.inventories_in_progress(id) } else { Vec::new() };
                self.retired_scans.extend(previous);
                self.libs[li].reconciling = Some(Reconciling { job, infos, answers });
                if self.libs[li].reconciling.as_ref().is_some_and(|r| r.job.len() <= RECONCILE_SLICE) {
                    // Small (a few changed elements, a small library): at once.
                    self.reconcile_slice(li);
                }
                // Otherwise from the next turn on (this one took the scan in): handle_timeout, a slice per turn.
            }
            Event::State(state) => {
                if let Some(id) = lib.id {
                    if let Some(mut rec) = inv.library(id).cloned() {
                        rec.state = state;
                        if state == LibraryState::Offline {
                            rec.stale = true;
                            let now = self.options.epoch_ms.saturating_add(self.now);
                            for rid in self.requests.fail_library(id, "the library went offline", now) {
                                self.note_sequence += 1;
                                self.notes.push_back(Notification {
                                    operation: NotificationOperation::Update,
                                    object_type: ObjectType::LibRequest,
                                    object: rid,
                                    sequence: self.note_sequence,
                                });
                            }
                        }
                        let c = inv.put_library(rec);
                        self.push_changes(c);
                    }
                }
            }
            Event::Attention { device, asc } => {
                log::info!("{}: unit attention {:02X}h/{:02X}h on the {device}: rescanning", lib.label, asc.0, asc.1);
            }
            Event::MoveFinished { id: crate::changer::Origin::Caller(id), result } => {
                self.physical_move_finished(id, result);
            }
            Event::MoveFinished { id, result } => log::debug!("move {id} finished: {result:?}"),
            Event::DoorUnlocked => self.door_unlocked(li),
            Event::DoorClosed { opened } => self.door_closed(li, opened),
            Event::TapeAlert { drive } => self.read_alerts(li, drive),
            Event::DriveCommand { id: crate::changer::Origin::Caller(id), drive, result } => {
                self.alerts_read(li, id, drive, result)
            }
            Event::DriveCommand { .. } | Event::Inventory { .. } | Event::Elements(_) => {}
        }
    }
}

/// The configuration entry naming a changer by its serial.
fn configured_by_serial<'a>(options: &'a BrokerOptions, serial: &str) -> Option<&'a ConfiguredLibrary> {
    options.by_serial.iter().find(|c| crate::changer::same_serial(&c.serial, serial))
}

/// A library's drive map: the configuration's (by changer serial, else the one it was opened with), then the
/// mappings `rsmd --map-drives` saved.
fn drive_map_for(
    options: &BrokerOptions,
    saved: &crate::model::DriveMaps,
    lib: &Lib,
    serial: &str,
) -> Vec<(String, u16)> {
    let mut map = configured_by_serial(options, serial).map_or_else(|| lib.drive_map.clone(), |c| c.drives.clone());
    map.extend(saved.get(serial).cloned().unwrap_or_default());
    map
}

pub(crate) fn drive_infos(lib: &Lib) -> Vec<DriveInfo> {
    lib.drives
        .iter()
        .zip(lib.library.drive_identities())
        .map(|(d, id)| DriveInfo {
            serial: id.as_ref().map(|i| i.serial.clone()).filter(|s| !s.is_empty()),
            product: id.as_ref().map(|i| format!("{} {}", i.vendor, i.product)),
            device: Some(d.path.clone()),
            nst: d.nst.clone(),
            care: Default::default(),
        })
        .collect()
}
