//! The label inventory (`InventoryLibrary` mode `omid`, `rsm inventory --mode label`): after a fast scan, every
//! cartridge without a readable barcode is mounted, its first block read, and the cartridge put back; what the
//! block says (`media::labels`: ANSI/IBM VOL1, LTFS, Bacula, Amanda) is recorded on the cartridge, and a cartridge
//! in a system pool goes where it belongs: blank → Free, labelled → Import, anything else → Unrecognized.
//!
//! The reads are changer jobs (`JobKind::Identify`), queued behind ordinary mounts (priority -1) and run on every
//! free drive at once; the request shows how many of how many cartridges are read.

use std::collections::HashMap;

use super::Broker;
use crate::changer::{BlockRead, DriveChoice, JobKind, Outcome};
use crate::model::{ElementKind, Guid, MediaKind, RequestId, RequestStatus};

/// Keys of identify jobs live above the library request numbers (and below the operator waits').
const IDENTIFY_KEYS: u64 = 1 << 61;
/// The robot-queue priority of identify jobs: behind ordinary mounts.
const IDENTIFY_PRIORITY: i32 = -1;

/// A label inventory under way.
#[derive(Debug, Clone)]
pub struct LabelRun {
    /// Its inventory request.
    pub key: RequestId,
    /// The library.
    pub library: Guid,
    /// Waiting for the fast scan that comes first.
    pub scanning: bool,
    /// Cartridges read (or that could not be).
    pub done: u64,
    /// Cartridges to read.
    pub total: u64,
}

/// The identify jobs of the label inventories: job key → (inventory request, cartridge).
pub type IdentifyJobs = HashMap<RequestId, (RequestId, Guid)>;

impl Broker {
    /// Starts a label inventory of library `li` for request `key` (already in the table): a fast scan first.
    pub fn start_label_inventory(&mut self, li: usize, library: Guid, key: RequestId) {
        self.libs[li].library.request_rescan();
        self.requests.wait(key);
        self.label_runs.push(LabelRun { key, library, scanning: true, done: 0, total: 0 });
    }

    /// The full scan of `library` ended: label inventories waiting for it queue their reads.
    pub fn label_scan_done(&mut self, li: usize, library: Guid) {
        let runs: Vec<RequestId> =
            self.label_runs.iter().filter(|r| r.library == library && r.scanning).map(|r| r.key).collect();
        for key in runs {
            let todo: Vec<(u16, Guid)> = self.inventory.as_ref().map_or_else(Vec::new, |inv| {
                inv.elements(library)
                    .filter(|e| matches!(e.kind, ElementKind::Storage | ElementKind::ImportExport))
                    .filter_map(|e| Some((e.address, inv.medium(e.media?)?)))
                    .filter(|(_, m)| m.barcode.is_none() && m.kind != MediaKind::Cleaning && m.mounted_by.is_none())
                    .map(|(a, m)| (a, m.id))
                    .collect()
            });
            let now = self.now_unix();
            self.requests.set_state(key, RequestStatus::InProgress, None, now);
            self.requests.set_progress(key, 0, todo.len() as u64);
            self.note_request(key);
            if let Some(run) = self.label_runs.iter_mut().find(|r| r.key == key) {
                run.scanning = false;
                run.total = todo.len() as u64;
            }
            log::info!("label inventory: {} cartridges without a barcode to read", todo.len());
            for (source, media) in todo {
                self.identify_seq += 1;
                let job = RequestId(IDENTIFY_KEYS + self.identify_seq);
                let kind = JobKind::Identify { source, drive: DriveChoice::Any };
                self.libs[li].library.submit_job(job.0, kind, IDENTIFY_PRIORITY, None);
                self.jobs.insert(job, (li, media));
                self.identify_jobs.insert(job, (key, media));
            }
            self.label_run_check(key);
        }
    }

    /// True when `key` is an identify job's.
    pub fn is_identify_job(&self, key: RequestId) -> bool {
        self.identify_jobs.contains_key(&key)
    }

    /// An identify job ended: what it read is recorded, and its label inventory counts it.
    pub fn identify_finished(&mut self, o: Outcome) {
        let Some((key, media)) = self.identify_jobs.remove(&RequestId(o.id)) else { return };
        let name = self
            .inventory
            .as_ref()
            .and_then(|i| i.medium(media))
            .and_then(|m| m.location)
            .map_or_else(|| media.to_string(), |l| format!("the cartridge in element {}", l.address));
        let identified = match (&o.result, o.read) {
            (Ok(()), Some(BlockRead::Data(block))) => {
                let label = crate::media::labels::recognise(&block);
                let text = label.as_ref().map(|l| format!("{} {}", l.format(), l.volume()));
                log::info!("label inventory: {name}: {}", text.as_deref().unwrap_or("data no recogniser knows"));
                Some((text, false))
            }
            (Ok(()), Some(BlockRead::Blank)) => {
                log::info!("label inventory: {name}: blank");
                Some((None, true))
            }
            (Ok(()), Some(BlockRead::Failed(why))) => {
                log::warn!("label inventory: {name}: the first block could not be read ({why})");
                None
            }
            (Ok(()), None) => None,
            (Err(e), _) => {
                log::warn!("label inventory: {name}: {}", crate::error_chain(e));
                None
            }
        };
        if let Some((label, blank)) = identified {
            let now = self.now_unix();
            if let Some(inv) = self.inventory.as_mut() {
                let changes = inv.set_identified(media, label, blank, now);
                self.push_changes(changes);
            }
        }
        if let Some(run) = self.label_runs.iter_mut().find(|r| r.key == key) {
            run.done += 1;
            let (done, total) = (run.done, run.total);
            self.requests.set_progress(key, done, total);
            self.note_request(key);
        }
        self.label_run_check(key);
    }

    /// A label inventory whose reads are all done completes; one whose request ended (cancelled, the library went
    /// offline) is dropped.
    fn label_run_check(&mut self, key: RequestId) {
        let Some(i) = self.label_runs.iter().position(|r| r.key == key) else { return };
        let run = &self.label_runs[i];
        if !self.requests.is_open(key) {
            self.label_runs.remove(i);
            return;
        }
        if !run.scanning && run.done >= run.total {
            self.label_runs.remove(i);
            self.requests.finish(key, RequestStatus::Complete, None, self.now_unix());
            self.note_request(key);
        }
    }

    /// Label inventories whose request ended (cancelled, the library went offline) stop: their reads still queued
    /// are cancelled.
    pub fn label_housekeeping(&mut self) {
        let ended: Vec<RequestId> =
            self.label_runs.iter().filter(|r| !self.requests.is_open(r.key)).map(|r| r.key).collect();
        for key in ended {
            self.label_runs.retain(|r| r.key != key);
            let jobs: Vec<RequestId> =
                self.identify_jobs.iter().filter(|(_, (k, _))| *k == key).map(|(j, _)| *j).collect();
            for job in jobs {
                self.cancel_job(job);
            }
        }
    }

    /// The open label inventories of a library (the fast scan's end must not complete them).
    pub fn label_run_keys(&self, library: Guid) -> Vec<RequestId> {
        self.label_runs.iter().filter(|r| r.library == library).map(|r| r.key).collect()
    }
}
