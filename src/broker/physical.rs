//! Physical operations on cartridges, as broker rules: EjectMedia moves a cartridge to a free mail slot for the
//! operator to take (it goes offline once a rescan no longer sees it); InjectMedia takes the cartridges the
//! operator put in the mail slots into storage (each back to its home slot when that is free).
//!
//! The moves are the changer's single moves (`Library::request_move`, tagged with the request's number); their
//! outcome arrives as `Event::MoveFinished` and ends the request.

use serde_json::{Map, Value};

use super::dispatch::Answer;
use super::mounting::err;
use super::session::Peer;
use super::Broker;
use crate::changer::MoveError;
use crate::model::{ElementKind, LibraryState, RequestId, RequestKind, RequestStatus};
use crate::proto::types::InventoryMode;
use crate::proto::types::NotificationOperation;
use crate::proto::{NtmsError, ObjectType, WireError};

/// A physical move in flight for a request.
#[derive(Debug, Clone)]
pub struct PhysicalMove {
    /// What it does, for the log and errors (`eject of ABC001L6 to mail slot 21`).
    pub what: String,
    /// The mail slots it heads for (another eject must not pick them).
    pub ports: Vec<u16>,
    /// Moves still to make after the one in flight (inject): (source, destination, what).
    pub rest: std::collections::VecDeque<(u16, u16, String)>,
    /// The library's index.
    pub li: usize,
    /// Moves done.
    pub done: usize,
}

/// An eject whose cartridges wait for mail slots (all of them, at first: the moves start from here).
#[derive(Debug, Clone)]
pub struct PortWait {
    /// The eject's request.
    pub key: RequestId,
    /// The library's index.
    pub li: usize,
    /// The library.
    pub library: crate::model::Guid,
    /// The cartridges still to eject, in the order asked.
    pub media: Vec<crate::model::Guid>,
    /// The operator request to empty the mail slots, while one is raised.
    pub op: Option<u64>,
    /// The session that asked.
    pub session: String,
    /// Cartridges ejected so far.
    pub done: usize,
}

impl Broker {
    /// `EjectMedia`: the cartridges (one or many, of one library) go to free mail slots, staged one move after
    /// another for one cycle of the port. More cartridges than free mail slots: the rest wait, and an operator
    /// request asks for the mail slots to be emptied; once a re-read shows them empty (the library's unit attention
    /// when the operator closes them, or the operator's answer), the next ones go. Refused at once when one is
    /// offline, in a drive (`UnableToEjectMountedMedia`), on its way somewhere, allocated to another application
    /// (unless an administrator asks), or with `error_if_full` when they do not all fit (`IePortFull`). The reply
    /// comes when the last one is in a mail slot.
    pub fn eject(&mut self, session: &str, peer: Peer, media: &[String], error_if_full: bool) -> Answer {
        if media.is_empty() {
            return err(NtmsError::InvalidParameter { message: "no cartridge to eject".into() });
        }
        let mut chosen: Vec<(crate::model::MediaRecord, String)> = Vec::new();
        for key in media {
            match self.check_eject(session, peer, key) {
                Ok(m) if chosen.iter().any(|(c, _)| c.id == m.0.id) => {
                    return err(NtmsError::InvalidParameter { message: format!("{} is named twice", m.1) })
                }
                Ok(m) => chosen.push(m),
                Err(e) => return err(e),
            }
        }
        let library = chosen[0].0.location.map(|l| l.library).unwrap_or_default();
        if chosen.iter().any(|(m, _)| m.location.map(|l| l.library) != Some(library)) {
            return err(NtmsError::InvalidParameter {
                message: "the cartridges are in different libraries: eject them in one call per library".into(),
            });
        }
        let Some(li) = self.libs.iter().position(|l| l.id == Some(library) && !l.retired) else {
            return err(NtmsError::LibraryOffline { message: "the cartridges' library is not served".into() });
        };
        if error_if_full && self.free_ports(library).len() < chosen.len() {
            return err(NtmsError::IePortFull {
                message: format!(
                    "{} cartridges to eject and {} free mail slots: empty them, then eject again",
                    chosen.len(),
                    self.free_ports(library).len()
                ),
            });
        }
        let mut new = self.new_request(RequestKind::Eject, Some(library), session);
        new.media = Some(chosen[0].0.id.to_string());
        let key = self.requests.add(new, self.now_unix());
        self.note(NotificationOperation::Insert, ObjectType::LibRequest, self.requests.guid_of(key));
        let queue: Vec<crate::model::Guid> = chosen.iter().map(|(m, _)| m.id).collect();
        self.port_waits.push(PortWait { key, li, library, media: queue, op: None, session: session.into(), done: 0 });
        self.resume_port_waits();
        Answer::Later { key }
    }

    /// `MoveMedia` (`mtx transfer`): the cartridge goes from its slot to an empty storage or mail slot of its library,
    /// one robot move; the reply comes when it is there. The eject's checks apply (owner, control right, not in a
    /// drive, not moving).
    pub fn move_media(&mut self, session: &str, peer: Peer, media: &str, destination: &str) -> Answer {
        let m = match self.resolve_media(media) {
            Some(m) if m.location.is_some_and(|l| l.kind == ElementKind::ImportExport) => {
                (m.clone(), m.barcode.clone().unwrap_or_else(|| m.id.to_string()))
            }
            _ => match self.check_eject(session, peer, media) {
                Ok(x) => x,
                Err(e) => return err(e),
            },
        };
        let (m, name) = m;
        let Some(loc) = m.location else {
            return err(NtmsError::MediaOffline { message: format!("{name} is not in a library") });
        };
        if loc.kind == ElementKind::Drive {
            return err(NtmsError::MediaNotAvailable { message: format!("{name} is in a drive: dismount it first") });
        }
        let dest =
            destination.parse::<crate::model::Guid>().ok().and_then(|g| self.inventory.as_ref()?.element_by_id(g));
        let Some(dest) = dest.cloned() else {
            return err(NtmsError::ObjectNotFound { message: format!("no slot {destination:?}") });
        };
        if dest.library != loc.library || !matches!(dest.kind, ElementKind::Storage | ElementKind::ImportExport) {
            return err(NtmsError::InvalidParameter {
                message: "the destination is not a storage or mail slot of the cartridge's library".into(),
            });
        }
        if dest.media.is_some() {
            return err(NtmsError::InvalidParameter { message: format!("slot {} is full", dest.number) });
        }
        let Some(li) = self.libs.iter().position(|l| l.id == Some(loc.library) && !l.retired) else {
            return err(NtmsError::LibraryOffline { message: "the cartridge's library is not served".into() });
        };
        if !self.library_rights(peer, loc.library).contains(super::access::Rights::CONTROL)
            || self.libs[li].library.uses_source(loc.address)
        {
            return err(NtmsError::AccessDenied {
                message: format!("uid {} has no control right on the library, or {name} is moving", peer.uid),
            });
        }
        let mut new = self.new_request(RequestKind::Move, Some(loc.library), session);
        new.media = Some(m.id.to_string());
        let key = self.requests.add(new, self.now_unix());
        self.note(NotificationOperation::Insert, ObjectType::LibRequest, self.requests.guid_of(key));
        self.requests.set_state(key, RequestStatus::InProgress, None, self.now_unix());
        let what = format!("move of {name} to element {}", dest.address);
        if let Err(e) = self.libs[li].library.request_move(key.0, loc.address, dest.address) {
            let e = move_error(&what, &e);
            self.requests.finish(key, RequestStatus::Failed, Some(e.to_string()), self.now_unix());
            self.note_request(key);
            return err(e);
        }
        log::info!("{what} started");
        self.physical
            .push((key, PhysicalMove { what, ports: vec![dest.address], rest: Default::default(), li, done: 0 }));
        Answer::Later { key }
    }

    /// The checks of one cartridge to eject: (its record, its name).
    fn check_eject(
        &self,
        session: &str,
        peer: Peer,
        media: &str,
    ) -> Result<(crate::model::MediaRecord, String), NtmsError> {
        let Some(m) = self.resolve_media(media) else {
            return Err(NtmsError::ObjectNotFound { message: format!("no cartridge {media:?}") });
        };
        let name = m.barcode.clone().unwrap_or_else(|| m.id.to_string());
        let owner = self.owner_of(session);
        let mine = m.allocated_to.as_ref().is_none_or(|a| a.uid == owner.uid && a.application == owner.application);
        if !mine && !self.is_admin(peer) {
            return Err(NtmsError::AccessDenied {
                message: format!(
                    "{name} is allocated to {}",
                    super::mounting::owner_text(m.allocated_to.as_ref().unwrap_or(&owner))
                ),
            });
        }
        let Some(loc) = m.location else {
            return Err(NtmsError::MediaOffline { message: format!("{name} is not in a library") });
        };
        if !self.library_rights(peer, loc.library).contains(super::access::Rights::CONTROL) {
            return Err(NtmsError::AccessDenied {
                message: format!("uid {} has no control right on the library", peer.uid),
            });
        }
        match loc.kind {
            ElementKind::Drive => {
                return Err(NtmsError::UnableToEjectMountedMedia {
                    message: format!("{name} is in a drive: dismount it first"),
                })
            }
            ElementKind::ImportExport => {
                return Err(NtmsError::InvalidOperation { message: format!("{name} is in a mail slot already") })
            }
            _ => {}
        }
        let busy = self.libs.iter().any(|l| l.id == Some(loc.library) && l.library.uses_source(loc.address))
            || self.port_waits.iter().any(|w| w.media.contains(&m.id));
        if busy {
            return Err(NtmsError::Busy { message: format!("{name} is being moved") });
        }
        Ok((m, name))
    }

    /// The free mail slots of a library no eject is heading for: (number, address), lowest number first.
    fn free_ports(&self, library: crate::model::Guid) -> Vec<(u32, u16)> {
        let heading: Vec<u16> = self.physical.iter().flat_map(|(_, p)| p.ports.iter().copied()).collect();
        let Some(inv) = self.inventory.as_ref() else { return Vec::new() };
        let mut v: Vec<(u32, u16)> = inv
            .elements(library)
            .filter(|e| e.kind == ElementKind::ImportExport && e.media.is_none() && e.accessible)
            .map(|e| (e.number, e.address))
            .filter(|(_, a)| !heading.contains(a))
            .collect();
        v.sort_unstable();
        v
    }

    /// Ejects waiting for mail slots: the next cartridges go to the free ones; none free, an operator request asks
    /// for them to be emptied (once per wait). A wait with nothing left ends its request.
    pub fn resume_port_waits(&mut self) {
        let mut i = 0;
        while i < self.port_waits.len() {
            let w = &self.port_waits[i];
            let (key, library, li) = (w.key, w.library, w.li);
            if self.physical.iter().any(|(k, _)| *k == key) {
                i += 1;
                continue;
            }
            if w.media.is_empty() {
                let w = self.port_waits.remove(i);
                log::info!("eject request {}: {} cartridges in the mail slots", self.requests.guid_of(key), w.done);
                self.end_physical(key, "eject", Ok(()));
                continue;
            }
            let ports = self.free_ports(library);
            if ports.is_empty() || self.libs[li].library.state() != LibraryState::Ready {
                if ports.is_empty() && self.port_waits[i].op.is_none() {
                    self.call_operator_for_ports(i);
                }
                i += 1;
                continue;
            }
            // As many as there are free mail slots, in the order asked; one that moved meanwhile is skipped.
            let mut plan = std::collections::VecDeque::new();
            let mut ports = ports.into_iter();
            let mut skipped = Vec::new();
            while plan.len() < self.port_waits[i].media.len() {
                let Some((number, port)) = ports.next() else { break };
                let Some(id) = self.port_waits[i].media.first().copied() else { break };
                self.port_waits[i].media.remove(0);
                let m = self.inventory.as_ref().and_then(|inv| inv.medium(id)).cloned();
                let Some((m, loc)) = m.and_then(|m| Some((m.clone(), m.location?))) else {
                    skipped.push(id);
                    continue;
                };
                let name = m.barcode.clone().unwrap_or_else(|| id.to_string());
                if loc.kind != ElementKind::Storage || self.libs[li].library.uses_source(loc.address) {
                    log::warn!("eject of {name}: it is no longer in a storage slot; left where it is");
                    skipped.push(id);
                    continue;
                }
                plan.push_back((loc.address, port, format!("eject of {name} to mail slot {number}")));
            }
            if !skipped.is_empty() && plan.is_empty() && self.port_waits[i].media.is_empty() {
                let w = self.port_waits.remove(i);
                let e = NtmsError::MediumNotAccessible { message: "the cartridges to eject moved meanwhile".into() };
                self.fail_physical(w.key, e);
                continue;
            }
            let Some((source, destination, what)) = plan.pop_front() else {
                i += 1;
                continue;
            };
            self.port_waits[i].op = None;
            self.requests.set_state(key, RequestStatus::InProgress, None, self.now_unix());
            self.note_request(key);
            match self.libs[li].library.request_move(key.0, source, destination) {
                Ok(()) => {
                    log::info!("{what} started");
                    let ports = std::iter::once(destination).chain(plan.iter().map(|p| p.1)).collect();
                    self.physical.push((key, PhysicalMove { what, ports, rest: plan, li, done: 0 }));
                    i += 1;
                }
                Err(e) => {
                    self.port_waits.remove(i);
                    self.fail_physical(key, move_error(&what, &e));
                }
            }
        }
    }

    /// The mail slots of wait `i`'s library are all full: the operator is asked to empty them.
    fn call_operator_for_ports(&mut self, i: usize) {
        let w = &self.port_waits[i];
        let (key, library, left) = (w.key, w.library, w.media.len());
        self.requests.wait(key);
        self.note_request(key);
        let name =
            self.inventory.as_ref().and_then(|inv| inv.library(library)).map_or(String::new(), |l| l.name.clone());
        let text = format!(
            "the mail slots of library {name} are full: take the ejected cartridges out ({left} more to eject)"
        );
        let n = self.raise_operator(
            crate::model::OperatorKind::MoveMedia,
            text,
            Some(library.to_string()),
            Some(library),
            Some(key),
        );
        self.port_waits[i].op = Some(n);
    }

    /// Ends an eject waiting for mail slots with `e` (cancelled, refused by the operator).
    pub fn end_port_wait(&mut self, key: RequestId, e: NtmsError) {
        self.port_waits.retain(|w| w.key != key);
        self.fail_physical(key, e);
    }

    fn fail_physical(&mut self, key: RequestId, e: NtmsError) {
        self.answer_request(key, Err(e));
    }

    /// `InjectMedia`: every cartridge in the library's mail slots goes to storage, to its home slot when that is
    /// free, else to the free slot with the lowest number; the reply comes when all are in. `LibraryFull` when no
    /// slot is free; with fewer free slots than cartridges, the rest stay in the mail slots (and the log says so).
    pub fn inject(&mut self, session: &str, peer: Peer, library: &str) -> Answer {
        let (id, li) = match self.controlled_library(peer, library) {
            Ok(x) => x,
            Err(e) => return err(e),
        };
        let new = self.new_request(RequestKind::Inject, Some(id), session);
        self.start_inject(li, id, new, None)
    }

    /// The library `library` names (its id), for `peer` with the control right on it: (id, index).
    fn controlled_library(&self, peer: Peer, library: &str) -> Result<(crate::model::Guid, usize), NtmsError> {
        let Some(id) =
            library.parse().ok().filter(|g| self.inventory.as_ref().is_some_and(|i| i.library(*g).is_some()))
        else {
            return Err(NtmsError::InvalidLibrary { message: format!("no library {library:?}") });
        };
        if !self.library_rights(peer, id).contains(super::access::Rights::CONTROL) {
            return Err(NtmsError::AccessDenied {
                message: format!("uid {} has no control right on the library", peer.uid),
            });
        }
        match self.libs.iter().position(|l| l.id == Some(id) && !l.retired) {
            Some(li) => Ok((id, li)),
            None => Err(NtmsError::LibraryOffline { message: "the library is not served".into() }),
        }
    }

    /// Automatic inject (`auto_inject`): the cartridges an operator put in the mail slots (the library reports
    /// them IMPEXP) go into storage as the daemon's own InjectMedia; the ones rsmd ejected stay for the operator.
    pub fn auto_inject(&mut self, li: usize) {
        let (Some(id), false) = (self.libs[li].id, self.libs[li].retired) else { return };
        if self.libs[li].library.state() != LibraryState::Ready
            || self
                .physical
                .iter()
                .any(|(k, p)| p.li == li && self.requests.get(*k).is_some_and(|r| r.kind == RequestKind::Inject))
        {
            return;
        }
        let lib = &self.libs[li].library;
        let placed: Vec<u16> = lib
            .elements()
            .iter()
            .filter(|e| e.element_type == crate::scsi::element::ElementType::ImportExport && e.full && e.impexp)
            .map(|e| e.address)
            .filter(|a| !lib.uses_source(*a))
            .collect();
        if placed == self.libs[li].auto_seen {
            return;
        }
        self.libs[li].auto_seen.clone_from(&placed);
        if placed.is_empty() {
            return;
        }
        log::info!(
            "library {}: {} cartridges put in the mail slots: injecting them",
            self.libs[li].label,
            placed.len()
        );
        let new = super::requests::NewRequest::system(RequestKind::Inject, Some(id), None);
        let _ = self.start_inject(li, id, new, Some(&placed));
    }

    /// Injects the cartridges in library `li`'s mail slots (only those in `only`, when given) under request `new`.
    fn start_inject(
        &mut self,
        li: usize,
        id: crate::model::Guid,
        new: super::requests::NewRequest,
        only: Option<&[u16]>,
    ) -> Answer {
        let Some(inv) = self.inventory.as_ref() else {
            return err(NtmsError::NotReady { message: "loading".into() });
        };
        let lib = &self.libs[li].library;
        let waiting: Vec<(u16, Option<u16>, String)> = inv
            .elements(id)
            .filter(|e| e.kind == ElementKind::ImportExport && !lib.uses_source(e.address))
            .filter(|e| only.is_none_or(|o| o.contains(&e.address)))
            .filter_map(|e| {
                let m = inv.medium(e.media?)?;
                let home = m.home.filter(|h| h.kind == ElementKind::Storage).map(|h| h.address);
                Some((e.address, home, m.barcode.clone().unwrap_or_else(|| "(no label)".into())))
            })
            .collect();
        let mut free: Vec<(u32, u16)> = inv
            .elements(id)
            .filter(|e| e.kind == ElementKind::Storage && e.media.is_none() && e.accessible)
            .map(|e| (e.number, e.address))
            .collect();
        free.sort_unstable();
        let mut plan = std::collections::VecDeque::new();
        let mut left = Vec::new();
        for (source, home, name) in waiting {
            let slot = match home.and_then(|h| free.iter().position(|(_, a)| *a == h)) {
                Some(i) => Some(free.remove(i)),
                None if free.is_empty() => None,
                None => Some(free.remove(0)),
            };
            match slot {
                Some((number, address)) => {
                    plan.push_back((source, address, format!("inject of {name} to slot {number}")))
                }
                None => {
                    log::warn!("inject: no free slot for {name}: it stays in the mail slot");
                    left.push(name);
                }
            }
        }
        let any_waiting = inv.elements(id).any(|e| e.kind == ElementKind::ImportExport && e.media.is_some());
        if !left.is_empty() {
            let name = inv.library(id).map_or(String::new(), |l| l.name.clone());
            let text = format!(
                "library {name} is full: {} stay in the mail slots ({}); make room (eject or remove cartridges), \
                 then inject again",
                left.len(),
                left.join(", ")
            );
            self.raise_operator(crate::model::OperatorKind::Message, text, Some(id.to_string()), Some(id), None);
        }
        let key = self.requests.add(new, self.now_unix());
        self.note(NotificationOperation::Insert, ObjectType::LibRequest, self.requests.guid_of(key));
        let Some((source, destination, what)) = plan.pop_front() else {
            let (state, error) = if any_waiting {
                (RequestStatus::Failed, Some(NtmsError::LibraryFull { message: "no storage slot is free".into() }))
            } else {
                (RequestStatus::Complete, None)
            };
            self.requests.finish(key, state, error.as_ref().map(ToString::to_string), self.now_unix());
            self.note_request(key);
            return match error {
                Some(e) => err(e),
                None => {
                    let mut r = Map::new();
                    r.insert("request".into(), Value::String(self.requests.guid_of(key)));
                    Answer::Reply(Ok(r), self.batch_for_reply())
                }
            };
        };
        self.requests.set_state(key, RequestStatus::InProgress, None, self.now_unix());
        if let Err(e) = self.libs[li].library.request_move(key.0, source, destination) {
            let e = move_error(&what, &e);
            self.requests.finish(key, RequestStatus::Failed, Some(e.to_string()), self.now_unix());
            self.note_request(key);
            return err(e);
        }
        log::info!("{what} started");
        self.physical.push((key, PhysicalMove { what, ports: Vec::new(), rest: plan, li, done: 0 }));
        Answer::Later { key }
    }

    /// A single move of a physical request ended: the next one of the request starts, or the request ends.
    pub fn physical_move_finished(&mut self, id: u64, result: Result<(), MoveError>) {
        let key = RequestId(id);
        let Some(i) = self.physical.iter().position(|(k, _)| *k == key) else { return };
        if result.is_ok() {
            self.physical[i].1.done += 1;
            if let Some((source, destination, what)) = self.physical[i].1.rest.pop_front() {
                let li = self.physical[i].1.li;
                match self.libs[li].library.request_move(key.0, source, destination) {
                    Ok(()) => {
                        log::info!("{what} started");
                        self.physical[i].1.what = what;
                        return;
                    }
                    Err(e) => {
                        let (_, p) = self.physical.remove(i);
                        return self.end_physical(key, &p.what, Err(e));
                    }
                }
            }
        }
        let (_, p) = self.physical.remove(i);
        // An eject goes on with the cartridges still waiting for mail slots (or ends there).
        if let Some(w) = self.port_waits.iter_mut().find(|w| w.key == key) {
            if result.is_ok() {
                w.done += p.done;
                return self.resume_port_waits();
            }
            self.port_waits.retain(|w| w.key != key);
        }
        self.end_physical(key, &p.what, result);
    }

    fn end_physical(&mut self, key: RequestId, what: &str, result: Result<(), MoveError>) {
        self.answer_request(key, result.map_err(|e| move_error(what, &e)));
    }
}

impl Broker {
    /// `AccessLibraryDoor`: the door is unlocked for the operator and robot work waits until it has been opened and
    /// closed (the library is read again then) or nobody opened it in time. The reply comes once it is unlocked;
    /// the request completes when the door access ends.
    pub fn access_door(&mut self, session: &str, peer: Peer, library: &str, mode: InventoryMode) -> Answer {
        if mode == InventoryMode::Omid {
            return err(NtmsError::InvalidParameter {
                message: "after the door, the library is read fast or full; a label inventory is asked for apart"
                    .into(),
            });
        }
        let (id, li) = match self.controlled_library(peer, library) {
            Ok(x) => x,
            Err(e) => return err(e),
        };
        if let Some((key, _, _)) = self.doors.iter().find(|(_, l, _)| *l == li) {
            return err(NtmsError::Busy {
                message: format!("the door is being opened already (request {})", self.requests.guid_of(*key)),
            });
        }
        // The door access outlives the caller's session: the operator walks to the library.
        let new =
            super::requests::NewRequest { detached: true, ..self.new_request(RequestKind::Door, Some(id), session) };
        let key = self.requests.add(new, self.now_unix());
        self.note(NotificationOperation::Insert, ObjectType::LibRequest, self.requests.guid_of(key));
        if let Err(e) = self.libs[li].library.request_door_access(mode == InventoryMode::Full) {
            let e = move_error("unlocking the door", &e);
            self.requests.finish(key, RequestStatus::Failed, Some(e.to_string()), self.now_unix());
            return err(e);
        }
        self.requests.set_state(key, RequestStatus::InProgress, None, self.now_unix());
        self.doors.push((key, li, false));
        Answer::Later { key }
    }

    /// The door of library `li` is unlocked: the callers hear it, the operator is told (NOTICE).
    pub fn door_unlocked(&mut self, li: usize) {
        let name = self.libs[li].name.clone().unwrap_or_else(|| self.libs[li].label.clone());
        log::info!(
            target: super::operator::NOTICE_TARGET,
            "library {name}: the door is unlocked: open it; robot work waits until it is closed"
        );
        let batch = self.batch_for_reply();
        for (key, l, answered) in &mut self.doors {
            if *l == li && !*answered {
                *answered = true;
                let mut r = Map::new();
                r.insert("request".into(), Value::String(self.requests.guid_of(*key)));
                self.completions.push_back((*key, Ok(r), batch));
            }
        }
        if let Some(id) = self.libs[li].id {
            self.note(NotificationOperation::Update, ObjectType::Library, id.to_string());
        }
    }

    /// The door access of library `li` ended (closed and read again, or not opened in time): its requests complete.
    pub fn door_closed(&mut self, li: usize, opened: bool) {
        let now = self.now_unix();
        let (ended, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.doors).into_iter().partition(|d| d.1 == li);
        self.doors = keep;
        log::info!(
            "library {}: door access over ({}): robot work resumes",
            self.libs[li].label,
            if opened { "opened and closed" } else { "not opened" }
        );
        for (key, _, answered) in ended {
            let offline = self.libs[li].library.state() == LibraryState::Offline;
            if offline {
                let e = NtmsError::LibraryOffline { message: "the library went offline".into() };
                self.requests.finish(key, RequestStatus::Failed, Some(e.to_string()), now);
                if !answered {
                    self.completions.push_back((key, Err(WireError::Ntms(e)), self.batch_for_reply()));
                }
            } else {
                let note = (!opened).then(|| "the door was not opened".to_owned());
                self.requests.finish(key, RequestStatus::Complete, note, now);
                if !answered {
                    let mut r = Map::new();
                    r.insert("request".into(), Value::String(self.requests.guid_of(key)));
                    self.completions.push_back((key, Ok(r), self.batch_for_reply()));
                }
            }
            self.note_request(key);
        }
        if let Some(id) = self.libs[li].id {
            self.note(NotificationOperation::Update, ObjectType::Library, id.to_string());
        }
    }
}

/// The wire error for a failed physical move.
fn move_error(what: &str, e: &MoveError) -> NtmsError {
    let message = format!("{what}: {}", crate::error_chain(e));
    match e {
        MoveError::Cancelled => NtmsError::Cancelled { message },
        MoveError::TimedOut => NtmsError::Timeout { message },
        MoveError::Offline => NtmsError::LibraryOffline { message },
        _ => NtmsError::MediumNotAccessible { message },
    }
}
