//! MountMedia / DismountMedia: turning calls into scheduler jobs and job outcomes into replies.

use serde_json::{Map, Value};

use super::dispatch::Answer;
use super::requests::NewRequest;
use super::Broker;
use crate::changer::{DriveChoice, JobError, JobKind, Outcome, Progress};
use crate::model::{
    ElementKind, Guid, MediaKind, MediaRecord, OperatorKind, OperatorState, Owner, RequestId, RequestKind,
    RequestStatus,
};
use crate::proto::types::{DeviceNodes, MountFlags, MountReply, NotificationOperation, ObjectType};
use crate::proto::types::{PRIORITY_MAX, PRIORITY_MIN};
use crate::proto::{DismountTarget, NtmsError, WireError};

/// A mount as a client asked for it. Kept (parked) while every requested cartridge is in use by other sessions
/// (RSM waits unless `error_if_unavailable`): tried again every turn until it starts, times out or is cancelled.
#[derive(Debug, Clone)]
pub struct MountCall {
    /// Its request once parked (`RequestId(0)` before).
    pub key: RequestId,
    /// The session that asked.
    pub session: String,
    media: Vec<String>,
    drive: Option<String>,
    flags: MountFlags,
    priority: i32,
    /// When it gives up.
    pub deadline: Option<u64>,
    /// Allocate a Free cartridge into this pool first.
    pool: Option<String>,
    /// The operator request to bring its offline cartridge back (while it waits for one).
    pub op: Option<u64>,
    /// Libraries being read again after the operator answered (no new request until they are).
    pub awaiting_scan: Vec<Guid>,
}

impl MountCall {
    /// Changes the priority it will queue with.
    pub fn set_priority(&mut self, priority: i32) {
        self.priority = priority;
    }
}

/// A call refused at once.
pub(super) fn err(e: NtmsError) -> Answer {
    Answer::Reply(Err(WireError::Ntms(e)), 0)
}

impl Broker {
    /// A cartridge by barcode (in any case when that names one) or id.
    pub(super) fn resolve_media(&self, key: &str) -> Option<MediaRecord> {
        let inv = self.inventory.as_ref()?;
        inv.media_by_barcode_any_case(key).or_else(|| key.parse::<Guid>().ok().and_then(|g| inv.medium(g))).cloned()
    }

    pub(super) fn lib_index(&self, library: Guid) -> Option<usize> {
        self.libs.iter().position(|l| l.id == Some(library) && !l.retired)
    }

    /// The drive element (library, address) an id names.
    fn resolve_drive(&self, id: &str) -> Option<(Guid, u16)> {
        let g: Guid = id.parse().ok()?;
        self.inventory
            .as_ref()?
            .element_by_id(g)
            .filter(|e| e.kind == ElementKind::Drive)
            .map(|e| (e.library, e.address))
    }

    /// `MountMedia`.
    #[allow(clippy::too_many_arguments)]
    pub fn mount(
        &mut self,
        session: &str,
        media: &[String],
        drive: Option<&str>,
        flags: MountFlags,
        priority: i32,
        timeout_ms: Option<u64>,
        pool: Option<&str>,
    ) -> Answer {
        if !(PRIORITY_MIN..=PRIORITY_MAX).contains(&priority) {
            return err(NtmsError::InvalidParameter {
                message: format!("priority {priority} is not in {PRIORITY_MIN}..={PRIORITY_MAX}"),
            });
        }
        if media.is_empty() {
            return err(NtmsError::InvalidParameter { message: "no media to mount".into() });
        }
        let deadline = timeout_ms.map(|t| self.now.saturating_add(t));
        let p = MountCall {
            key: RequestId(0),
            session: session.to_owned(),
            media: media.to_vec(),
            drive: drive.map(str::to_owned),
            flags,
            priority,
            deadline,
            pool: pool.map(str::to_owned),
            op: None,
            awaiting_scan: Vec::new(),
        };
        if let Some(pool) = pool {
            if let Err(e) = self.resolve_pool(pool) {
                return err(e);
            }
        }
        self.try_mount(None, &p)
    }

    /// Tries a mount now: starts it, fails it, or (every requested cartridge being in use and the caller willing to
    /// wait) parks it until one is free. `parked`: the request key of a mount that was parked before.
    fn try_mount(&mut self, parked: Option<RequestId>, p: &MountCall) -> Answer {
        let (session, media, flags, priority) = (p.session.as_str(), &p.media, p.flags, p.priority);
        let drive = p.drive.as_deref();
        let timeout_ms = p.deadline.map(|d| d.saturating_sub(self.now));
        let mut candidates = Vec::new();
        for m in media {
            match self.resolve_media(m) {
                // The inventory knows a cleaner: loading it for data would only fail in the drive.
                Some(r) if r.kind == MediaKind::Cleaning => {
                    return err(NtmsError::InvalidMedia {
                        message: format!(
                            "{m} is a cleaning cartridge: drives are cleaned with CleanDrive, not mounted"
                        ),
                    })
                }
                Some(r) => candidates.push(r),
                None => return err(NtmsError::ObjectNotFound { message: format!("no cartridge {m:?}") }),
            }
        }
        let drive = match drive {
            None => None,
            Some(d) => match self.resolve_drive(d) {
                Some(x) => Some(x),
                None => return err(NtmsError::ObjectNotFound { message: format!("no drive {d:?}") }),
            },
        };
        // Who asks: the session's user, or (a detached request whose session ended) the request's owner.
        let owner = match parked.and_then(|k| self.requests.get(k)) {
            Some(r) => r.owner.clone(),
            None => self.owner_of(session),
        };
        let peer = self.peer_of(session, &owner);
        let admin = self.is_admin(peer);
        let mut refused = None;
        let mut allowed = Vec::new();
        for m in candidates {
            match self.may_mount(&m, &owner, peer, admin, flags).and_then(|()| self.partition_allows(&m, &owner)) {
                Ok(()) => allowed.push(m),
                Err(e) => refused = Some(e),
            }
        }
        if allowed.is_empty() {
            if let Some(e) = refused {
                return err(e);
            }
        }
        let candidates = allowed;
        if let Some((dl, d)) = drive {
            let disabled =
                self.inventory.as_ref().and_then(|i| i.element(dl, ElementKind::Drive, d)).is_some_and(|e| e.disabled);
            if disabled {
                return err(NtmsError::ResourceDisabled {
                    message: "the drive is disabled (rsm enable DRIVE to use it again)".into(),
                });
            }
        }
        let mut saw_offline = false;
        // A cartridge out of every library (ejected): the operator can bring it back.
        let mut saw_out: Option<&MediaRecord> = None;
        let mut saw_busy = None;
        let (mut mismatch, mut unsupported) = (false, false);
        for m in &candidates {
            let Some(loc) = m.location else {
                saw_offline = true;
                saw_out = saw_out.or(Some(m));
                continue;
            };
            if m.mounted_by.is_some() {
                saw_busy = Some((loc.library, m.id));
                continue;
            }
            let Some(li) = self.lib_index(loc.library) else {
                saw_offline = true;
                continue;
            };
            if let Some((dl, _)) = drive {
                if dl != loc.library {
                    return err(NtmsError::DriveMediaMismatch {
                        message: "the drive is in another library than the cartridge".into(),
                    });
                }
            }
            let lib = &self.libs[li];
            if lib.library.state() == crate::model::LibraryState::Offline {
                saw_offline = true;
                continue;
            }
            if self.inventory.as_ref().and_then(|i| i.library(loc.library)).is_some_and(|l| l.disabled) {
                return err(NtmsError::ResourceDisabled {
                    message: "the library is disabled (rsm enable LIBRARY to use it again)".into(),
                });
            }
            if lib.library.uses_source(loc.address)
                || (loc.kind == ElementKind::Drive && lib.library.uses_drive(loc.address))
            {
                saw_busy = Some((loc.library, m.id));
                continue;
            }
            // Which drives can take it (a cartridge already in a drive is mounted where it is).
            let (mut fit, mapped) = self.compatible_drives(li, m, flags.write);
            // A partition's sessions use its drives only.
            if let Some(allowed) = self.partition_drives(li, &owner) {
                fit.retain(|d| allowed.contains(d));
                if let Some((_, d)) = drive.filter(|(_, d)| !allowed.contains(d)) {
                    return err(NtmsError::AccessDenied {
                        message: format!("drive element {d} is not one of the partition's drives"),
                    });
                }
            }
            // Disabled drives are never chosen.
            let compatible = fit.len();
            fit.retain(|d| !self.drive_disabled(loc.library, *d));
            if fit.is_empty() && compatible > 0 && drive.is_none() && loc.kind != ElementKind::Drive {
                return err(NtmsError::ResourceDisabled {
                    message: "every drive that can take the cartridge is disabled".into(),
                });
            }
            // No drive can serve it if none is mapped to its device: say so now, with the fix, instead of waiting
            // for a drive that will never come.
            let unmapped = |d: Option<u16>| match d {
                Some(d) => !mapped.contains(&d),
                None => mapped.is_empty(),
            };
            if loc.kind != ElementKind::Drive && unmapped(drive.map(|(_, d)| d)) {
                let lib = &self.libs[li];
                let name = lib.name.clone().unwrap_or_else(|| lib.label.clone());
                let which = if drive.is_some() { "that drive is" } else { "no drive is" };
                return err(NtmsError::DeviceNotAvailable {
                    message: format!(
                        "library {name}: {which} mapped to its device (the library reports no drive serials): map \
                         the drives with `rsmd --map-drives` or a [library.drives] table, then reload rsmd"
                    ),
                });
            }
            let choice = match drive {
                Some((_, d)) if loc.kind != ElementKind::Drive && mapped.contains(&d) && !fit.contains(&d) => {
                    mismatch = true;
                    continue;
                }
                Some((_, d)) => DriveChoice::Element(d),
                None if loc.kind != ElementKind::Drive && fit.is_empty() && !mapped.is_empty() => {
                    unsupported = true;
                    continue;
                }
                None if fit.len() < mapped.len() => DriveChoice::AnyOf(fit),
                None => DriveChoice::Any,
            };
            // A Free cartridge mounted for a pool is allocated into it first (only when asked).
            if let Some(pool) = p.pool.as_deref() {
                let free = m.side == Some(crate::model::SideState::Available)
                    && m.pool
                        .and_then(|x| self.inventory.as_ref()?.pool(x))
                        .is_some_and(|x| x.kind == crate::model::PoolKind::Free);
                if free {
                    match self.allocate(session, peer, pool, Some(&m.id.to_string()), true, None) {
                        Answer::Reply(Ok(_), _) => {}
                        other => return other,
                    }
                }
            }
            return self.start_mount(
                parked,
                li,
                session,
                m.clone(),
                loc.kind,
                loc.address,
                choice,
                flags,
                priority,
                timeout_ms,
            );
        }
        // In use by another session (or on its way): wait for it, unless asked not to.
        if let Some((library, media)) = saw_busy.filter(|_| !flags.error_if_unavailable) {
            if !(saw_offline && flags.error_if_offline) {
                return self.park(parked, p, Some(library), media);
            }
        }
        // Out of the library: an operator request asks for it back, and the mount waits (unless asked to fail).
        if let Some(m) = saw_out.filter(|_| saw_busy.is_none() && !flags.error_if_offline) {
            let (id, name) = (m.id, m.barcode.clone().unwrap_or_else(|| m.id.to_string()));
            let library = m.home.map(|h| h.library);
            let answer = self.park(parked, p, library, id);
            self.call_operator_for_offline(id, &name, library, p);
            return answer;
        }
        if mismatch {
            return err(NtmsError::DriveMediaMismatch {
                message: format!("the drive cannot {} the cartridge", if flags.write { "write" } else { "read" }),
            });
        }
        if unsupported {
            return err(NtmsError::NoSupportingDrives {
                message: format!(
                    "no drive of the library can {} the cartridge",
                    if flags.write { "write" } else { "read" }
                ),
            });
        }
        if saw_busy.is_some() && !saw_offline {
            return err(NtmsError::MediaUnavailable { message: "every requested cartridge is in use".into() });
        }
        if saw_offline && flags.error_if_offline || saw_busy.is_none() {
            return err(NtmsError::MediaOffline {
                message: "the requested cartridges are not in an online library".into(),
            });
        }
        err(NtmsError::MediaUnavailable { message: "every requested cartridge is in use or offline".into() })
    }

    #[allow(clippy::too_many_arguments)]
    fn start_mount(
        &mut self,
        existing: Option<RequestId>,
        li: usize,
        session: &str,
        m: MediaRecord,
        kind: ElementKind,
        address: u16,
        choice: DriveChoice,
        flags: MountFlags,
        priority: i32,
        timeout_ms: Option<u64>,
    ) -> Answer {
        let lib_id = self.libs[li].id;
        let drive = match &choice {
            DriveChoice::Element(d) => Some(*d),
            _ => None,
        };
        let now = self.now_unix();
        let key = match existing {
            // A parked mount: its request exists; it is queued now.
            Some(key) => {
                self.requests.set_state(key, RequestStatus::Queued, None, now);
                self.note_request(key);
                key
            }
            None => {
                let new = NewRequest {
                    detached: flags.nowait,
                    priority,
                    media: Some(m.id.to_string()),
                    ..self.new_request(RequestKind::Mount, lib_id, session)
                };
                let key = self.requests.add(new, now);
                self.note(NotificationOperation::Insert, ObjectType::LibRequest, self.requests.guid_of(key));
                key
            }
        };
        let request = self.requests.guid_of(key);
        if kind == ElementKind::Drive {
            // Already loaded and not mounted (a deferred dismount): mount in place.
            if drive.is_some_and(|d| d != address) {
                self.requests.finish(
                    key,
                    RequestStatus::Failed,
                    Some("the cartridge is loaded in another drive".into()),
                    now,
                );
                return err(NtmsError::MediaUnavailable { message: "the cartridge is loaded in another drive".into() });
            }
            self.deferred.retain(|d| d.media != m.id);
            let owner = self.requests.get(key).map(|r| r.owner.clone());
            self.set_mounted_by(m.id, owner);
            let reply = self.mount_reply(li, key, address, m.id);
            self.requests.finish(key, RequestStatus::Complete, None, now);
            return Answer::Reply(reply, self.batch_for_reply());
        }
        if drive.is_none() && flags.error_if_unavailable && !self.has_free_drive(li, &choice) {
            self.requests.finish(key, RequestStatus::Failed, Some("no free drive".into()), now);
            return err(NtmsError::DeviceNotAvailable { message: "no drive is free".into() });
        }
        if let Some(d) = drive {
            let busy = self
                .inventory
                .as_ref()
                .and_then(|i| i.element(lib_id.unwrap_or_default(), ElementKind::Drive, d))
                .is_some_and(|e| e.media.is_some());
            if busy && flags.error_if_unavailable {
                self.requests.finish(key, RequestStatus::Failed, Some("the drive is in use".into()), now);
                return err(NtmsError::DeviceNotAvailable { message: "the drive is in use".into() });
            }
        }
        let deadline = timeout_ms.map(|t| self.now.saturating_add(t));
        self.libs[li].library.submit_job(key.0, JobKind::Mount { source: address, drive: choice }, priority, deadline);
        if flags.write {
            self.libs[li].library.set_write_intent(key.0);
        }
        self.jobs.insert(key, (li, m.id));
        if flags.nowait {
            let mut r = Map::new();
            r.insert("request".into(), Value::String(request));
            r.insert("media".into(), Value::String(m.id.to_string()));
            return Answer::Reply(Ok(r), self.batch_for_reply());
        }
        Answer::Later { key }
    }

    fn drive_disabled(&self, library: Guid, d: u16) -> bool {
        self.inventory.as_ref().and_then(|i| i.element(library, ElementKind::Drive, d)).is_some_and(|e| e.disabled)
    }

    /// The media rules of a mount: a disabled cartridge is never mounted; an allocated one only for the user and
    /// application that allocated it (or an administrator); others need use on their pool; complete media are
    /// never written.
    fn may_mount(
        &self,
        m: &MediaRecord,
        owner: &crate::model::Owner,
        peer: super::session::Peer,
        admin: bool,
        flags: MountFlags,
    ) -> Result<(), NtmsError> {
        let name = m.barcode.clone().unwrap_or_else(|| m.id.to_string());
        if !m.enabled {
            return Err(NtmsError::ResourceDisabled {
                message: format!("{name} is disabled (rsm enable {name} to use it again)"),
            });
        }
        if !admin {
            match &m.allocated_to {
                Some(a) if a.uid != owner.uid || a.application.is_some() && a.application != owner.application => {
                    return Err(NtmsError::AccessDenied {
                        message: format!(
                            "{name} is allocated to {}: only its sessions (or an administrator) mount it",
                            owner_text(a)
                        ),
                    });
                }
                Some(_) => {}
                None if !self.may_see_media(peer, m) => {
                    return Err(NtmsError::AccessDenied {
                        message: format!("uid {} has no use right on {name}'s pool", peer.uid),
                    });
                }
                None => {}
            }
        }
        if flags.write {
            match m.side {
                Some(crate::model::SideState::Complete) => {
                    return Err(NtmsError::WriteProtect {
                        message: format!("{name} is complete: it is mounted for reading only"),
                    })
                }
                Some(crate::model::SideState::Decommissioned) => {
                    return Err(NtmsError::WriteProtect {
                        message: format!("{name} is decommissioned: it is never written again"),
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The partition of library `li` the owner's application is bound to.
    fn partition_of(&self, li: usize, owner: &Owner) -> Option<&crate::model::Partition> {
        let app = owner.application.as_deref()?;
        self.libs.get(li)?.partitions.iter().find(|p| p.application == app)
    }

    /// The drive elements a partition's session may use (None: the owner is bound to no partition).
    fn partition_drives(&self, li: usize, owner: &Owner) -> Option<Vec<u16>> {
        let p = self.partition_of(li, owner)?;
        let lib = self.libs[li].id?;
        let inv = self.inventory.as_ref()?;
        Some(
            inv.elements(lib)
                .filter(|e| e.kind == ElementKind::Drive && p.drives.contains(&e.number))
                .map(|e| e.address)
                .collect(),
        )
    }

    /// A session bound to a partition mounts only the partition's cartridges: the ones whose slot is one of its
    /// slots (or in a mail slot, when it has them), or for a partition that owns a pool, the pool's.
    fn partition_allows(&self, m: &MediaRecord, owner: &Owner) -> Result<(), NtmsError> {
        let Some(at) = m.location.or(m.home) else { return Ok(()) };
        let Some(li) = self.lib_index(at.library) else { return Ok(()) };
        let Some(p) = self.partition_of(li, owner) else { return Ok(()) };
        if let Some(pool) = p.pool.as_deref() {
            if self.inventory.as_ref().is_some_and(|inv| inv.in_pool_tree(m, pool)) {
                return Ok(());
            }
            return Err(NtmsError::AccessDenied {
                message: format!(
                    "{} is not in pool {pool} of partition {} (application {})",
                    m.barcode.as_deref().unwrap_or("the cartridge"),
                    p.name,
                    p.application
                ),
            });
        }
        let inv = self.inventory.as_ref();
        let slot =
            m.home.filter(|h| h.kind == ElementKind::Storage).or(m.location.filter(|l| l.kind == ElementKind::Storage));
        let number = slot.and_then(|s| inv?.element(s.library, ElementKind::Storage, s.address)).map(|e| e.number);
        let in_port = p.mail_slots && m.location.is_some_and(|l| l.kind == ElementKind::ImportExport);
        if number.is_some_and(|n| p.slots.contains(&n)) || in_port {
            Ok(())
        } else {
            Err(NtmsError::AccessDenied {
                message: format!(
                    "{} is not in partition {} of application {}",
                    m.barcode.as_deref().unwrap_or("the cartridge"),
                    p.name,
                    p.application
                ),
            })
        }
    }

    /// A parked mount waits for offline cartridge `media`: unless the operator was asked already (or the libraries
    /// are being read again after an answer), a move-media request asks for it back.
    fn call_operator_for_offline(&mut self, media: Guid, name: &str, library: Option<Guid>, p: &MountCall) {
        let Some(key) = self.parked.last().map(|x| x.key) else { return };
        let asked = p.op.filter(|n| self.operators.get(*n).is_some_and(|r| r.state == OperatorState::Active));
        let op = match asked {
            Some(n) => Some(n),
            None if !p.awaiting_scan.is_empty() => None,
            None => {
                let lib = library
                    .and_then(|l| self.inventory.as_ref()?.library(l))
                    .map_or_else(|| "its library".to_owned(), |l| format!("library {}", l.name));
                let text = format!(
                    "a mount waits for cartridge {name}, which is out of the library: put it in a mail slot of {lib}"
                );
                Some(self.raise_operator(OperatorKind::MoveMedia, text, Some(media.to_string()), library, Some(key)))
            }
        };
        if let Some(last) = self.parked.last_mut() {
            last.op = op;
        }
    }

    /// Parks a mount whose cartridges are all in use (or out of the library): a waiting request, re-tried by
    /// [`Broker::retry_parked`].
    fn park(&mut self, parked: Option<RequestId>, p: &MountCall, library: Option<Guid>, media: Guid) -> Answer {
        let key = match parked {
            Some(key) => key,
            None => {
                let new = NewRequest {
                    detached: p.flags.nowait,
                    priority: p.priority,
                    media: Some(media.to_string()),
                    ..self.new_request(RequestKind::Mount, library, &p.session)
                };
                let key = self.requests.add(new, self.now_unix());
                self.requests.wait(key);
                self.note(NotificationOperation::Insert, ObjectType::LibRequest, self.requests.guid_of(key));
                key
            }
        };
        self.parked.push(MountCall { key, op: None, ..p.clone() });
        if p.flags.nowait && parked.is_none() {
            let mut r = Map::new();
            r.insert("request".into(), Value::String(self.requests.guid_of(key)));
            return Answer::Reply(Ok(r), self.batch_for_reply());
        }
        Answer::Later { key }
    }

    /// Tries the parked mounts again: a cartridge may be free now; the timed-out ones fail with `Timeout`.
    pub fn retry_parked(&mut self) {
        let now = self.now;
        for p in std::mem::take(&mut self.parked) {
            if p.deadline.is_some_and(|d| d <= now) {
                self.end_parked(
                    p.key,
                    NtmsError::Timeout { message: "no requested cartridge became free in time".into() },
                );
                continue;
            }
            match self.try_mount(Some(p.key), &p) {
                Answer::Reply(Err(WireError::Ntms(e)), _) => self.end_parked(p.key, e),
                Answer::Reply(r, batch) => self.completions.push_back((p.key, r, batch)),
                _ => {}
            }
        }
    }

    /// Ends a parked mount with `e` (timed out, cancelled, or failed when tried again).
    pub fn end_parked(&mut self, key: RequestId, e: NtmsError) {
        self.parked.retain(|p| p.key != key);
        self.answer_request(key, Err(e));
    }

    /// The mapped drives of library `li` that can take cartridge `m` (to write it when `write`), and all the mapped
    /// ones, by element address. Generations unknown on either side count as compatible.
    fn compatible_drives(&self, li: usize, m: &MediaRecord, write: bool) -> (Vec<u16>, Vec<u16>) {
        let infos = super::drive_infos(&self.libs[li]);
        let (mut fit, mut mapped) = (Vec::new(), Vec::new());
        let drives = self.libs[li].library.drive_elements().iter();
        for e in drives.filter(|e| e.element_type == crate::scsi::element::ElementType::DataTransfer) {
            let Some(dev) = e.device else { continue };
            mapped.push(e.address);
            let product = infos.get(dev).and_then(|i| i.product.as_deref());
            if crate::media::compat::can_mount(product, m.barcode.as_deref(), write) {
                fit.push(e.address);
            }
        }
        (fit, mapped)
    }

    fn has_free_drive(&self, li: usize, choice: &DriveChoice) -> bool {
        let lib = &self.libs[li];
        lib.library.drive_elements().iter().any(|e| {
            e.element_type == crate::scsi::element::ElementType::DataTransfer
                && !matches!(choice, DriveChoice::AnyOf(list) if !list.contains(&e.address))
                && !e.full
                && e.device.is_some()
                && !lib.library.uses_drive(e.address)
        })
    }

    fn mount_reply(&self, li: usize, key: RequestId, drive: u16, media: Guid) -> Result<Map<String, Value>, WireError> {
        let lib = &self.libs[li];
        let element = lib.id.and_then(|id| self.inventory.as_ref()?.element(id, ElementKind::Drive, drive).cloned());
        let info = element.as_ref().and_then(|e| e.drive.as_ref());
        let device = info.and_then(|d| d.nst.clone().or_else(|| d.device.clone()));
        let devices = info.map(|d| DeviceNodes { sg: d.device.clone(), nst: d.nst.clone(), by_id: None });
        let reply = MountReply {
            request: self.requests.guid_of(key),
            media: Some(media.to_string()),
            drive: element.map(|e| e.id().to_string()),
            device,
            devices,
            host: Some(self.host.clone()),
        };
        match serde_json::to_value(reply) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(NtmsError::Internal { message: "reply encoding".into() }.into()),
        }
    }

    /// Keeps the library's learned load time in its record once it moved by more than 5 % from what is stored.
    fn persist_load_time(&mut self, li: usize) {
        let (Some(est), Some(id)) = (self.libs[li].library.load_estimate(), self.libs[li].id) else { return };
        let Some(inv) = self.inventory.as_mut() else { return };
        let Some(mut rec) = inv.library(id).cloned() else { return };
        if rec.load_ms.is_some_and(|ms| ms.abs_diff(est) * 20 <= ms) {
            return;
        }
        rec.load_ms = Some(est);
        let c = inv.put_library(rec);
        self.push_changes(c);
    }

    /// `DismountMedia`. `admin`: the caller administers rsmd and may dismount what another session mounted.
    pub fn dismount(
        &mut self,
        session: &str,
        target: &DismountTarget,
        deferred: bool,
        admin: bool,
        to: Option<&str>,
    ) -> Answer {
        let Some(inv) = self.inventory.as_ref() else { return err(NtmsError::NotReady { message: "loading".into() }) };
        let media = match target {
            DismountTarget::Media(m) => match self.resolve_media(m) {
                Some(r) => r,
                None => return err(NtmsError::ObjectNotFound { message: format!("no cartridge {m:?}") }),
            },
            DismountTarget::Drive(d) => {
                let Some((lib, addr)) = self.resolve_drive(d) else {
                    return err(NtmsError::ObjectNotFound { message: format!("no drive {d:?}") });
                };
                match inv.element(lib, ElementKind::Drive, addr).and_then(|e| e.media).and_then(|m| inv.medium(m)) {
                    Some(m) => m.clone(),
                    None => return err(NtmsError::Empty { message: "the drive is empty".into() }),
                }
            }
        };
        // Only who mounted a cartridge (the same user and application, from any of its sessions) or an
        // administrator dismounts it. A loaded cartridge mounted by nobody (a deferred dismount) anyone may take out.
        if let Some(o) = &media.mounted_by {
            if *o != self.owner_of(session) && !admin {
                return err(NtmsError::AccessDenied {
                    message: format!(
                        "the cartridge is mounted by {}; only they or an administrator dismount it",
                        owner_text(o)
                    ),
                });
            }
        }
        let Some(loc) = media.location.filter(|l| l.kind == ElementKind::Drive) else {
            return err(NtmsError::MediaNotAvailable { message: "the cartridge is not in a drive".into() });
        };
        let busy = self.lib_index(loc.library).is_some_and(|li| self.libs[li].library.uses_drive(loc.address));
        if busy {
            return err(NtmsError::MediaNotAvailable { message: "the cartridge is being moved".into() });
        }
        let Some(li) = self.lib_index(loc.library) else {
            return err(NtmsError::LibraryOffline { message: "the library is not served".into() });
        };
        // A destination named (`mtx unload SLOT DRIVE`): an empty storage or mail slot of the same library.
        let dest = match to {
            None => None,
            Some(t) => {
                let e = t.parse::<Guid>().ok().and_then(|g| self.inventory.as_ref()?.element_by_id(g)).cloned();
                match e {
                    Some(e)
                        if e.library == loc.library
                            && matches!(e.kind, ElementKind::Storage | ElementKind::ImportExport) =>
                    {
                        if e.media.is_some() {
                            return err(NtmsError::InvalidParameter { message: format!("slot {} is full", e.number) });
                        }
                        Some(e.address)
                    }
                    _ => {
                        return err(NtmsError::ObjectNotFound {
                            message: format!("no storage or mail slot {t:?} in the cartridge's library"),
                        })
                    }
                }
            }
        };
        self.set_mounted_by(media.id, None);
        if deferred && dest.is_none() {
            self.deferred.push(super::Deferred {
                due: self.now + self.libs[li].deferred_dismount_ms,
                li,
                drive: loc.address,
                media: media.id,
            });
            return Answer::Reply(Ok(Map::new()), self.batch_for_reply());
        }
        let key = self.submit_dismount_to(li, Some(session), &media, loc.address, dest);
        Answer::Later { key }
    }

    /// Queues a dismount job for `session` (None: the daemon's own); returns its request.
    pub fn submit_dismount(&mut self, li: usize, session: Option<&str>, media: &MediaRecord, drive: u16) -> RequestId {
        self.submit_dismount_to(li, session, media, drive, None)
    }

    /// The same, into slot `to` when given (else its home slot, or a free one).
    pub fn submit_dismount_to(
        &mut self,
        li: usize,
        session: Option<&str>,
        media: &MediaRecord,
        drive: u16,
        to: Option<u16>,
    ) -> RequestId {
        let lib_id = self.libs[li].id;
        let new = match session {
            Some(s) => {
                NewRequest { media: Some(media.id.to_string()), ..self.new_request(RequestKind::Dismount, lib_id, s) }
            }
            None => NewRequest::system(RequestKind::Dismount, lib_id, Some(media.id.to_string())),
        };
        let key = self.requests.add(new, self.now_unix());
        self.note(NotificationOperation::Insert, ObjectType::LibRequest, self.requests.guid_of(key));
        let home = to.or_else(|| media.home.filter(|h| h.kind == ElementKind::Storage).map(|h| h.address));
        self.libs[li].library.submit_job(key.0, JobKind::Dismount { drive, home }, 0, None);
        self.jobs.insert(key, (li, media.id));
        key
    }

    /// Records who mounted a cartridge (durably: it survives the session and the daemon).
    fn set_mounted_by(&mut self, media: Guid, owner: Option<Owner>) {
        if let Some(inv) = self.inventory.as_mut() {
            let c = inv.set_mounted_by(media, owner);
            self.push_changes(c);
        }
    }

    /// Who mounted a cartridge, if anyone.
    fn mounted_by(&self, media: Guid) -> Option<&Owner> {
        self.inventory.as_ref()?.medium(media)?.mounted_by.as_ref()
    }

    /// A job's progress.
    pub fn on_progress(&mut self, li: usize, p: Progress) {
        let (key, state, drive) = match p {
            Progress::Started { id, drive } => (RequestId(id), RequestStatus::InProgress, Some(drive)),
            Progress::WaitingForDrive { id } => (RequestId(id), RequestStatus::Waiting, None),
        };
        let drive_id = drive.and_then(|d| {
            let lib = self.libs[li].id?;
            self.inventory.as_ref()?.element(lib, ElementKind::Drive, d).map(|e| e.id().to_string())
        });
        self.requests.set_state(key, state, drive_id, self.now_unix());
        self.note_request(key);
        // The cartridge is in the drive: it is its owner's from now on (written while the drive threads the tape,
        // so the reply at ready need not wait for another flush).
        if let (Progress::WaitingForDrive { .. }, Some(&(_, media))) = (p, self.jobs.get(&key)) {
            if let Some(owner) =
                self.requests.get(key).filter(|r| r.kind == RequestKind::Mount).map(|r| r.owner.clone())
            {
                self.set_mounted_by(media, Some(owner));
            }
        }
    }

    /// A job finished: update the request and the cartridge's owner, and answer the waiting call.
    pub fn on_outcome(&mut self, li: usize, o: Outcome) {
        self.persist_load_time(li);
        let key = RequestId(o.id);
        let Some((_, media)) = self.jobs.remove(&key) else { return };
        if self.is_identify_job(key) {
            return self.identify_finished(o);
        }
        let Some(request) = self.requests.get(key).cloned() else { return };
        if request.kind == RequestKind::Clean {
            return self.cleaning_finished(li, key, o, media);
        }
        // What a dismount read of the drive's TapeAlert flags.
        if let (Some(alerts), Some(drive)) = (o.alerts, o.drive) {
            self.note_alerts(li, drive, alerts);
        }
        let mount = request.kind == RequestKind::Mount;
        let now = self.now_unix();
        // What the reply tells (the cartridge is in the drive and whose it is / back home) was written when the robot
        // moved it; the reply waits for that batch (this turn's if this turn changed the inventory). The request's
        // end and the mount counter written now are bookkeeping the reply does not report.
        let mut batch = self.last_batch + u64::from(!self.changes.is_empty());
        let reply = match &o.result {
            Ok(()) => {
                self.requests.finish(key, RequestStatus::Complete, None, now);
                if mount {
                    // The mount belongs to who asked, beyond the session (and a detached request's session); when
                    // that was not written at load time (a drive without a device to poll), the reply waits for it.
                    if self.mounted_by(media) != Some(&request.owner) {
                        self.set_mounted_by(media, Some(request.owner.clone()));
                        batch = self.last_batch + 1;
                    }
                    if let Some(inv) = self.inventory.as_mut() {
                        let c = inv.count_mount(media);
                        self.push_changes(c);
                    }
                    self.mount_reply(li, key, o.drive.unwrap_or_default(), media)
                } else {
                    Ok(Map::new())
                }
            }
            Err(e) => {
                let state = if *e == JobError::Cancelled { RequestStatus::Cancelled } else { RequestStatus::Failed };
                self.requests.finish(key, state, Some(e.to_string()), now);
                if mount && self.mounted_by(media) == Some(&request.owner) {
                    self.set_mounted_by(media, None);
                }
                Err(WireError::Ntms(super::dispatch::job_error(e, mount)))
            }
        };
        self.note_request(key);
        self.completions.push_back((key, reply, batch));
    }

    /// Deferred dismounts that are due, and loaded-but-unmounted cartridges blocking a waiting mount.
    pub fn housekeeping(&mut self) {
        let now = self.now;
        let due: Vec<super::Deferred> = {
            let (due, keep): (Vec<_>, Vec<_>) = self.deferred.drain(..).partition(|d| d.due <= now);
            self.deferred = keep;
            due
        };
        for d in due {
            self.dismount_idle(d.li, d.drive, d.media);
        }
        self.retry_parked();
        self.retry_allocations();
        self.resume_port_waits();
        self.schedule_cleanings();
        self.label_housekeeping();
        self.operator_housekeeping();
        for li in 0..self.libs.len() {
            let needed = if self.libs[li].retired { 0 } else { self.libs[li].library.starved() };
            if needed == 0 {
                continue;
            }
            let Some(lib_id) = self.libs[li].id else { continue };
            // Loaded and mounted by nobody: the ones whose deferred dismount is due soonest go first (the others
            // were asked for more recently), as many as the waiting mounts need and no more.
            let mut idle: Vec<(u64, u16, Guid)> = self.inventory.as_ref().map_or_else(Vec::new, |inv| {
                inv.elements(lib_id)
                    .filter(|e| e.kind == ElementKind::Drive)
                    .filter_map(|e| e.media.map(|m| (e.address, m)))
                    .filter(|(a, m)| self.mounted_by(*m).is_none() && !self.libs[li].library.uses_drive(*a))
                    .map(|(a, m)| (self.deferred.iter().find(|d| d.media == m).map_or(0, |d| d.due), a, m))
                    .collect()
            });
            idle.sort_unstable();
            for (_, addr, media) in idle.into_iter().take(needed) {
                self.deferred.retain(|d| d.media != media);
                self.dismount_idle(li, addr, media);
            }
        }
    }

    fn dismount_idle(&mut self, li: usize, drive: u16, media: Guid) {
        if self.mounted_by(media).is_some() || self.libs[li].library.uses_drive(drive) {
            return;
        }
        let Some(m) = self.inventory.as_ref().and_then(|i| i.medium(media)).cloned() else { return };
        if m.location.is_some_and(|l| l.kind == ElementKind::Drive && l.address == drive) {
            self.submit_dismount(li, None, &m, drive);
        }
    }

    /// Cancels the unfinished mount/dismount job of a request.
    pub fn cancel_job(&mut self, key: RequestId) -> bool {
        match self.jobs.get(&key) {
            Some(&(li, _)) => self.libs[li].library.cancel_job(key.0),
            None => false,
        }
    }
}

/// A cartridge's owner as people read it: `APPLICATION (uid N)`.
pub fn owner_text(o: &Owner) -> String {
    match &o.application {
        Some(a) => format!("{a} (uid {})", o.uid),
        None => format!("uid {}", o.uid),
    }
}
