//! Drive cleaning and drive health, as broker rules.
//!
//! A drive is cleaned when it asks (its TapeAlert flags 20 "clean now" or 21 "clean periodic", read by every
//! dismount before its unload) or when someone asks (`CleanDrive`). A cleaning is a library request of kind
//! `Clean` that waits until the drive is empty and a usable cleaning cartridge is in the library, then runs as one
//! changer job (`JobKind::Clean`: cleaner in, wait for the drive to eject it, TapeAlert read, cleaner back) ahead of
//! mounts of lower priority. Queued cleanings are persisted and survive a restart (RSM lost them).
//!
//! Cleaning cartridges are the cartridges of kind cleaning (the `CLN` barcode rule or a `[media.prefixes]` entry);
//! each cleaning counts one use, and a cleaner that has done `[media] cleaner_uses` cleanings, or that the drive
//! reports expired (TapeAlert 22) or invalid (23), is disabled and an operator request asks for a new one. No
//! usable cleaner: the cleaning waits with a cleaner operator request. A drive that does not eject the cleaner
//! raises a device-service request; so do the TapeAlert flags that say the drive needs service.

use super::dispatch::Answer;
use super::mounting::err;
use super::requests::NewRequest;
use super::session::Peer;
use super::Broker;
use crate::changer::{JobError, JobKind, Outcome};
use crate::model::{ElementKind, Guid, LibraryState, MediaKind, OperatorKind, RequestId, RequestKind, RequestStatus};
use crate::proto::types::NotificationOperation;
use crate::proto::{NtmsError, ObjectType};
use crate::scsi::tape::{tape_alert, TapeAlerts};

/// The robot-queue priority of a cleaning: ahead of ordinary mounts (0), behind urgent ones.
pub const CLEAN_PRIORITY: i32 = 10;
/// Cleaners tried for one cleaning before it fails (each expired or invalid one is retired).
const MAX_ATTEMPTS: u32 = 3;
/// How long a cleaning without a usable cleaner waits before looking again (or sooner, with any other event).
const LOOK_AGAIN_MS: u64 = 5_000;

/// A cleaning that is queued or running.
#[derive(Debug, Clone)]
pub struct CleanCall {
    /// Its request.
    pub key: RequestId,
    /// The library.
    pub library: Guid,
    /// The drive element.
    pub drive: u16,
    /// The operator request for a cleaner it raised, while one is raised.
    pub op: Option<u64>,
    /// Its changer job runs.
    pub running: bool,
    /// Cleaners tried.
    pub attempts: u32,
    /// When to look for a cleaner again (the loop's clock).
    pub next_try: u64,
}

/// Ids of TapeAlert reads outside jobs (`Origin::Caller`), apart from the physical moves' request numbers.
const ALERT_READ_KEYS: u64 = 1 << 60;

/// TapeAlert flags that call for a person: device-service operator requests.
const SERVICE_FLAGS: &[u8] = &[0x1E, 0x1F, 0x20, 0x22, 0x25, 0x26, 0x27];

/// A TapeAlert flag as people read it (SSC-4 Annex A).
pub fn flag_name(flag: u8) -> &'static str {
    match flag {
        0x01 => "read warning",
        0x02 => "write warning",
        0x03 => "hard error",
        0x04 => "media",
        0x05 => "read failure",
        0x06 => "write failure",
        0x07 => "media life",
        0x08 => "not data grade",
        0x09 => "write protect",
        0x0A => "no removal",
        0x0B => "cleaning media",
        0x0C => "unsupported format",
        0x0F => "cartridge memory chip failure",
        0x10 => "forced eject",
        0x11 => "read only format",
        0x12 => "tape directory corrupted",
        0x13 => "nearing media life",
        0x14 => "clean now",
        0x15 => "clean periodic",
        0x16 => "expired cleaning media",
        0x17 => "invalid cleaning tape",
        0x1E => "hardware A",
        0x1F => "hardware B",
        0x20 => "interface",
        0x21 => "eject media",
        0x22 => "download fail",
        0x23 => "drive humidity",
        0x24 => "drive temperature",
        0x25 => "drive voltage",
        0x26 => "predictive failure",
        0x27 => "diagnostics required",
        _ => "other",
    }
}

/// `20 (clean now), 4 (media)`.
pub fn flags_text(a: TapeAlerts) -> String {
    a.flags().iter().map(|f| format!("{f} ({})", flag_name(*f))).collect::<Vec<_>>().join(", ")
}

impl Broker {
    /// `CleanDrive`: queues a cleaning of the drive; the reply comes when it is done.
    pub fn clean_drive(&mut self, session: &str, peer: Peer, drive: &str) -> Answer {
        let found = drive.parse::<Guid>().ok().and_then(|g| {
            let e = self.inventory.as_ref()?.element_by_id(g)?;
            (e.kind == ElementKind::Drive).then_some((e.library, e.address, e.number))
        });
        let Some((library, address, number)) = found else {
            return err(NtmsError::ObjectNotFound { message: format!("no drive {drive:?}") });
        };
        if !self.library_rights(peer, library).contains(super::access::Rights::CONTROL) {
            return err(NtmsError::AccessDenied {
                message: format!("uid {} has no control right on the library", peer.uid),
            });
        }
        if self.lib_index(library).is_none() {
            return err(NtmsError::LibraryOffline { message: "the drive's library is not served".into() });
        }
        if let Some(c) = self.cleanings.iter().find(|c| c.library == library && c.drive == address) {
            return err(NtmsError::Busy {
                message: format!(
                    "a cleaning of drive {number} is queued already (request {})",
                    self.requests.guid_of(c.key)
                ),
            });
        }
        let key = self.queue_cleaning(library, address, Some(session), "asked for");
        self.schedule_cleanings();
        Answer::Later { key }
    }

    /// Queues a cleaning of drive element `drive` (one per drive: the queued one is returned), persisted at once.
    pub fn queue_cleaning(&mut self, library: Guid, drive: u16, session: Option<&str>, why: &str) -> RequestId {
        if let Some(c) = self.cleanings.iter().find(|c| c.library == library && c.drive == drive) {
            return c.key;
        }
        let mut new = match session {
            Some(s) => self.new_request(RequestKind::Clean, Some(library), s),
            None => NewRequest::system(RequestKind::Clean, Some(library), None),
        };
        new.priority = CLEAN_PRIORITY;
        let now = self.now_unix();
        let key = self.requests.add(new, now);
        let drive_id = crate::model::element_id(library, ElementKind::Drive, drive).to_string();
        self.requests.set_state(key, RequestStatus::Queued, Some(drive_id), now);
        self.note(NotificationOperation::Insert, ObjectType::LibRequest, self.requests.guid_of(key));
        // Written at once: a queued cleaning survives a crash.
        self.requests_urgent.set(true);
        log::info!("cleaning of drive element {drive} queued ({why}): request {}", self.requests.guid_of(key));
        self.cleanings.push(CleanCall { key, library, drive, op: None, running: false, attempts: 0, next_try: 0 });
        key
    }

    /// Cleanings persisted by an earlier run go on: each open `Clean` request is queued again.
    pub fn restore_cleanings(&mut self) {
        for key in self.requests.open_of_kind(RequestKind::Clean) {
            let Some(r) = self.requests.get(key) else { continue };
            let library = r.library;
            let drive = r.drive.as_deref().and_then(|d| d.parse::<Guid>().ok());
            let element = drive.and_then(|d| self.inventory.as_ref()?.element_by_id(d)).map(|e| e.address);
            match (library, element) {
                (Some(library), Some(drive)) => {
                    log::info!("cleaning request {} queued again after the restart", self.requests.guid_of(key));
                    self.requests.set_state(key, RequestStatus::Queued, None, self.now_unix());
                    self.cleanings.push(CleanCall {
                        key,
                        library,
                        drive,
                        op: None,
                        running: false,
                        attempts: 0,
                        next_try: 0,
                    });
                }
                _ => {
                    let why = "rsmd restarted and the drive is not in the inventory any more".to_owned();
                    self.requests.finish(key, RequestStatus::Failed, Some(why), self.now_unix());
                }
            }
        }
    }

    /// Starts the queued cleanings that can start: the drive empty and idle, a usable cleaner in the library.
    /// A cleaner left in the drive (a cleaning cut short by a restart) is taken back to its slot first.
    pub fn schedule_cleanings(&mut self) {
        let mut i = 0;
        while i < self.cleanings.len() {
            let c = self.cleanings[i].clone();
            if !self.requests.is_open(c.key) {
                self.cleanings.remove(i);
                continue;
            }
            i += 1;
            if c.running || c.next_try > self.now {
                continue;
            }
            let Some(li) = self.lib_index(c.library) else { continue };
            if self.libs[li].library.state() != LibraryState::Ready || self.libs[li].library.uses_drive(c.drive) {
                continue;
            }
            let Some(inv) = self.inventory.as_ref() else { return };
            let Some(e) = inv.element(c.library, ElementKind::Drive, c.drive) else { continue };
            if let Some(m) = e.media.and_then(|m| inv.medium(m)).cloned() {
                if m.kind == MediaKind::Cleaning && m.mounted_by.is_none() {
                    log::info!("drive element {}: a cleaning cartridge was left in it; taking it back", c.drive);
                    self.submit_dismount(li, None, &m, c.drive);
                }
                continue;
            }
            let uses = self.options.media_rules.cleaner_uses;
            let lib = &self.libs[li].library;
            let cleaner = inv
                .elements(c.library)
                .filter(|e| e.kind == ElementKind::Storage && !lib.uses_source(e.address))
                .filter_map(|e| Some((e.address, inv.medium(e.media?)?)))
                .filter(|(_, m)| m.kind == MediaKind::Cleaning && m.enabled && m.mount_count < u64::from(uses))
                .min_by_key(|(a, m)| (m.mount_count, *a))
                .map(|(a, m)| (a, m.id));
            let Some((address, cleaner)) = cleaner else {
                self.cleanings[i - 1].next_try = self.now + LOOK_AGAIN_MS;
                self.call_operator_for_cleaner(i - 1);
                continue;
            };
            self.libs[li].library.submit_job(
                c.key.0,
                JobKind::Clean { cleaner: address, drive: c.drive },
                CLEAN_PRIORITY,
                None,
            );
            self.jobs.insert(c.key, (li, cleaner));
            let call = &mut self.cleanings[i - 1];
            call.running = true;
            call.op = None;
        }
    }

    /// No usable cleaner for cleaning `i`: the operator is asked for one (once), and the cleaning waits.
    fn call_operator_for_cleaner(&mut self, i: usize) {
        let c = &self.cleanings[i];
        if c.op.is_some_and(|n| self.operators.get(n).is_some_and(|r| r.state == crate::model::OperatorState::Active)) {
            return;
        }
        let (key, library) = (c.key, c.library);
        if self.requests.get(key).is_some_and(|r| r.state != RequestStatus::Waiting) {
            self.requests.wait(key);
            self.note_request(key);
        }
        let name =
            self.inventory.as_ref().and_then(|inv| inv.library(library)).map_or(String::new(), |l| l.name.clone());
        let text = format!("library {name} has no usable cleaning cartridge: put one in (a drive waits for cleaning)");
        let n = self.raise_operator(OperatorKind::Cleaner, text, Some(library.to_string()), Some(library), Some(key));
        self.cleanings[i].op = Some(n);
    }

    /// A cleaning job ended. Done: the cleaner's use is counted (and it is retired once spent), the drive's last
    /// cleaning recorded. An expired or invalid cleaner (TapeAlert 22, 23) is retired and the next one tried. A
    /// drive that kept the cleaner raises a device-service request.
    pub fn cleaning_finished(&mut self, li: usize, key: RequestId, o: Outcome, cleaner: Guid) {
        let Some(i) = self.cleanings.iter().position(|c| c.key == key) else { return };
        let c = self.cleanings[i].clone();
        let now = self.now_unix();
        let alerts = o.alerts.unwrap_or_default();
        let name = self.media_name(cleaner);
        let drive_number = self.drive_number(c.library, c.drive);
        let result = match o.result {
            Ok(())
                if alerts.is_set(tape_alert::EXPIRED_CLEANING_MEDIA)
                    || alerts.is_set(tape_alert::INVALID_CLEANING_TAPE) =>
            {
                let why = if alerts.is_set(tape_alert::EXPIRED_CLEANING_MEDIA) {
                    "expired"
                } else {
                    "not a valid cleaning tape"
                };
                self.retire_cleaner(cleaner, &format!("drive {drive_number} reports cleaning cartridge {name} {why}"));
                self.note_alerts(li, c.drive, alerts);
                let call = &mut self.cleanings[i];
                call.running = false;
                call.attempts += 1;
                if call.attempts < MAX_ATTEMPTS {
                    // Another cleaner, if there is one (else a cleaner operator request).
                    return self.schedule_cleanings();
                }
                Err(NtmsError::CleanerCartridgeInstalled {
                    message: format!("{MAX_ATTEMPTS} cleaning cartridges were refused by drive {drive_number}"),
                })
            }
            Ok(()) => {
                if let Some(inv) = self.inventory.as_mut() {
                    let changes = inv.count_mount(cleaner);
                    self.push_changes(changes);
                }
                let uses = self.inventory.as_ref().and_then(|i| i.medium(cleaner)).map_or(0, |m| m.mount_count);
                let max = u64::from(self.options.media_rules.cleaner_uses);
                if uses >= max {
                    self.retire_cleaner(cleaner, &format!("cleaning cartridge {name} has done its {max} cleanings"));
                }
                let clean_flags = (1u64 << (tape_alert::CLEAN_NOW - 1)) | (1u64 << (tape_alert::CLEAN_PERIODIC - 1));
                if let Some(inv) = self.inventory.as_mut() {
                    let changes = inv.update_drive_care(c.library, c.drive, |care| {
                        care.last_cleaned = Some(now);
                        care.cleanings += 1;
                        care.alerts = alerts.0 & !clean_flags;
                    });
                    self.push_changes(changes);
                }
                log::info!("drive {drive_number} cleaned with {name} (use {uses} of {max})");
                Ok(())
            }
            Err(JobError::CleanerStuck) => {
                let in_drive = self
                    .inventory
                    .as_ref()
                    .and_then(|i| i.medium(cleaner))
                    .and_then(|m| m.location)
                    .is_some_and(|l| l.kind == ElementKind::Drive);
                let text = if in_drive {
                    format!(
                        "drive {drive_number} did not eject cleaning cartridge {name}: take it out by hand and check \
                         the drive"
                    )
                } else {
                    format!(
                        "drive {drive_number} did not finish cleaning with {name} in time (it was unloaded): check \
                         the drive"
                    )
                };
                let drive_id = crate::model::element_id(c.library, ElementKind::Drive, c.drive).to_string();
                self.raise_operator(OperatorKind::DeviceService, text, Some(drive_id), Some(c.library), None);
                Err(super::dispatch::job_error(&JobError::CleanerStuck, true))
            }
            Err(e) => Err(super::dispatch::job_error(&e, true)),
        };
        self.cleanings.remove(i);
        self.answer_request(key, result);
    }

    /// A cleaner that is spent (or refused by a drive) is disabled, and the operator asked for a new one.
    fn retire_cleaner(&mut self, cleaner: Guid, why: &str) {
        log::warn!("{why}: it is retired (disabled)");
        let now = self.now_unix();
        if let Some(inv) = self.inventory.as_mut() {
            if let Ok(changes) = inv.set_media_enabled(cleaner, false, now) {
                self.push_changes(changes);
            }
        }
        let library = self
            .inventory
            .as_ref()
            .and_then(|i| i.medium(cleaner))
            .and_then(|m| m.location.or(m.home))
            .map(|l| l.library);
        let text = format!("{why}: replace it with a new cleaning cartridge");
        self.raise_operator(OperatorKind::Cleaner, text, Some(cleaner.to_string()), library, None);
    }

    /// A drive's TapeAlert flags, read at a dismount: kept on the drive object, logged; a drive asking for cleaning
    /// gets a cleaning queued; one asking for service raises a device-service operator request.
    pub fn note_alerts(&mut self, li: usize, drive: u16, alerts: TapeAlerts) {
        let Some(library) = self.libs.get(li).and_then(|l| l.id) else { return };
        if let Some(inv) = self.inventory.as_mut() {
            let changes = inv.update_drive_care(library, drive, |care| care.alerts = alerts.0);
            self.push_changes(changes);
        }
        if alerts.0 == 0 {
            return;
        }
        let number = self.drive_number(library, drive);
        log::warn!("drive {number} reports TapeAlert {}", flags_text(alerts));
        if alerts.needs_cleaning() {
            let why = if alerts.is_set(tape_alert::CLEAN_NOW) {
                "TapeAlert 20: clean now"
            } else {
                "TapeAlert 21: clean periodic"
            };
            self.queue_cleaning(library, drive, None, why);
        }
        let service: Vec<u8> = alerts.flags().into_iter().filter(|f| SERVICE_FLAGS.contains(f)).collect();
        if !service.is_empty() {
            let text = format!(
                "drive {number} needs service: TapeAlert {}",
                flags_text(TapeAlerts(service.iter().fold(0, |a, f| a | 1u64 << (f - 1))))
            );
            let drive_id = crate::model::element_id(library, ElementKind::Drive, drive).to_string();
            self.raise_operator(OperatorKind::DeviceService, text, Some(drive_id), Some(library), None);
        }
    }

    /// A drive signalled TapeAlert (sense 5Dh on one of its commands): its TapeAlert page is read (LOG SENSE 2Eh,
    /// outside any job) and handled as a dismount's would be.
    pub fn read_alerts(&mut self, li: usize, drive: usize) {
        if self.alert_reads.iter().any(|&(_, l, d)| l == li && d == drive) {
            return;
        }
        self.alert_seq += 1;
        let id = ALERT_READ_KEYS + self.alert_seq;
        self.alert_reads.push((id, li, drive));
        let command = crate::scsi::cdb::log_sense(0x2E, 512).into_command(std::time::Duration::from_secs(60));
        self.libs[li].library.drive_command(id, drive, command);
    }

    /// A TapeAlert page asked for by [`Broker::read_alerts`] arrived.
    pub fn alerts_read(
        &mut self,
        li: usize,
        id: u64,
        drive: usize,
        result: Result<crate::transport::Response, crate::transport::TransportError>,
    ) {
        let Some(i) = self.alert_reads.iter().position(|&(k, _, _)| k == id) else { return };
        self.alert_reads.remove(i);
        let alerts = result.ok().filter(|r| r.status == 0).and_then(|r| TapeAlerts::parse(&r.data).ok());
        let element =
            self.libs[li].library.drive_elements().iter().find(|e| e.device == Some(drive)).map(|e| e.address);
        if let (Some(alerts), Some(element)) = (alerts, element) {
            self.note_alerts(li, element, alerts);
        }
    }

    /// The next time a waiting cleaning looks for a cleaner again.
    pub fn cleaning_deadline(&self) -> Option<u64> {
        self.cleanings.iter().filter(|c| !c.running && c.next_try > self.now).map(|c| c.next_try).min()
    }

    fn media_name(&self, id: Guid) -> String {
        self.inventory
            .as_ref()
            .and_then(|i| i.medium(id))
            .and_then(|m| m.barcode.clone())
            .unwrap_or_else(|| id.to_string())
    }

    fn drive_number(&self, library: Guid, drive: u16) -> String {
        self.inventory
            .as_ref()
            .and_then(|i| i.element(library, ElementKind::Drive, drive))
            .map_or_else(|| format!("element {drive}"), |e| e.number.to_string())
    }
}
