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
use crate::model::{ElementKind, RequestId, RequestKind, RequestStatus};
use crate::proto::types::NotificationOperation;
use crate::proto::{NtmsError, ObjectType, WireError};

/// A physical move in flight for a request.
#[derive(Debug, Clone)]
pub struct PhysicalMove {
    /// What it does, for the log and errors (`eject of ABC001L6 to mail slot 21`).
    pub what: String,
    /// The mail slot it heads for (another eject must not pick it).
    pub port: Option<u16>,
    /// Moves still to make after the one in flight (inject): (source, destination, what).
    pub rest: std::collections::VecDeque<(u16, u16, String)>,
    /// The library's index.
    pub li: usize,
    /// Moves done.
    pub done: usize,
}

impl Broker {
    /// `EjectMedia`: the cartridge goes to a free mail slot. Refused at once when it is offline, in a drive
    /// (`UnableToEjectMountedMedia`), on its way somewhere, or when every mail slot is full (`IePortFull`); an
    /// allocated cartridge is ejected only by its owner (or an administrator). The reply comes when it is there.
    pub fn eject(&mut self, session: &str, peer: Peer, media: &str) -> Answer {
        let Some(m) = self.resolve_media(media) else {
            return err(NtmsError::ObjectNotFound { message: format!("no cartridge {media:?}") });
        };
        let name = m.barcode.clone().unwrap_or_else(|| m.id.to_string());
        let owner = self.owner_of(session);
        let mine = m.allocated_to.as_ref().is_none_or(|a| a.uid == owner.uid && a.application == owner.application);
        if !mine && !self.is_admin(peer) {
            return err(NtmsError::AccessDenied {
                message: format!(
                    "{name} is allocated to {}",
                    super::mounting::owner_text(m.allocated_to.as_ref().unwrap_or(&owner))
                ),
            });
        }
        let Some(loc) = m.location else {
            return err(NtmsError::MediaOffline { message: format!("{name} is not in a library") });
        };
        if !self.library_rights(peer, loc.library).contains(super::access::Rights::CONTROL) {
            return err(NtmsError::AccessDenied {
                message: format!("uid {} has no control right on the library", peer.uid),
            });
        }
        match loc.kind {
            ElementKind::Drive => {
                return err(NtmsError::UnableToEjectMountedMedia {
                    message: format!("{name} is in a drive: dismount it first"),
                })
            }
            ElementKind::ImportExport => {
                return err(NtmsError::InvalidOperation { message: format!("{name} is in a mail slot already") })
            }
            _ => {}
        }
        let Some(li) = self.libs.iter().position(|l| l.id == Some(loc.library) && !l.retired) else {
            return err(NtmsError::LibraryOffline { message: "the cartridge's library is not served".into() });
        };
        if self.libs[li].library.uses_source(loc.address) {
            return err(NtmsError::Busy { message: format!("{name} is being moved") });
        }
        // A free mail slot, not one another eject is heading for.
        let heading: Vec<u16> = self.physical.iter().filter_map(|(_, p)| p.port).collect();
        let port = self.inventory.as_ref().and_then(|inv| {
            inv.elements(loc.library)
                .filter(|e| e.kind == ElementKind::ImportExport && e.media.is_none() && e.accessible)
                .map(|e| (e.number, e.address))
                .filter(|(_, a)| !heading.contains(a))
                .min()
        });
        let Some((number, port)) = port else {
            return err(NtmsError::IePortFull {
                message: "every mail slot is full: empty them, then eject again".into(),
            });
        };
        let mut new = self.new_request(RequestKind::Eject, Some(loc.library), session);
        new.media = Some(m.id.to_string());
        let key = self.requests.add(new, self.now_unix());
        self.note(NotificationOperation::Insert, ObjectType::LibRequest, self.requests.guid_of(key));
        self.requests.set_state(key, RequestStatus::InProgress, None, self.now_unix());
        let what = format!("eject of {name} to mail slot {number}");
        if let Err(e) = self.libs[li].library.request_move(key.0, loc.address, port) {
            let e = move_error(&what, &e);
            self.requests.finish(key, RequestStatus::Failed, Some(e.to_string()), self.now_unix());
            self.note_request(key);
            return err(e);
        }
        log::info!("{what} started");
        self.physical.push((key, PhysicalMove { what, port: Some(port), rest: Default::default(), li, done: 0 }));
        Answer::Later { key }
    }

    /// `InjectMedia`: every cartridge in the library's mail slots goes to storage, to its home slot when that is
    /// free, else to the free slot with the lowest number; the reply comes when all are in. `LibraryFull` when no
    /// slot is free; with fewer free slots than cartridges, the rest stay in the mail slots (and the log says so).
    pub fn inject(&mut self, session: &str, peer: Peer, library: &str) -> Answer {
        let Some(id) =
            library.parse().ok().filter(|g| self.inventory.as_ref().is_some_and(|i| i.library(*g).is_some()))
        else {
            return err(NtmsError::InvalidLibrary { message: format!("no library {library:?}") });
        };
        if !self.library_rights(peer, id).contains(super::access::Rights::CONTROL) {
            return err(NtmsError::AccessDenied {
                message: format!("uid {} has no control right on the library", peer.uid),
            });
        }
        let Some(li) = self.libs.iter().position(|l| l.id == Some(id) && !l.retired) else {
            return err(NtmsError::LibraryOffline { message: "the library is not served".into() });
        };
        let Some(inv) = self.inventory.as_ref() else {
            return err(NtmsError::NotReady { message: "loading".into() });
        };
        let lib = &self.libs[li].library;
        let waiting: Vec<(u16, Option<u16>, String)> = inv
            .elements(id)
            .filter(|e| e.kind == ElementKind::ImportExport && !lib.uses_source(e.address))
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
                None => log::warn!("inject: no free slot for {name}: it stays in the mail slot"),
            }
        }
        let any_waiting = inv.elements(id).any(|e| e.kind == ElementKind::ImportExport && e.media.is_some());
        let mut new = self.new_request(RequestKind::Inject, Some(id), session);
        new.media = None;
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
        self.physical.push((key, PhysicalMove { what, port: None, rest: plan, li, done: 0 }));
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
        self.end_physical(key, &p.what, result);
    }

    fn end_physical(&mut self, key: RequestId, what: &str, result: Result<(), MoveError>) {
        let now = self.now_unix();
        let reply = match result {
            Ok(()) => {
                self.requests.finish(key, RequestStatus::Complete, None, now);
                let mut r = Map::new();
                r.insert("request".into(), Value::String(self.requests.guid_of(key)));
                Ok(r)
            }
            Err(e) => {
                let e = move_error(what, &e);
                let state = if matches!(e, NtmsError::Cancelled { .. }) {
                    RequestStatus::Cancelled
                } else {
                    RequestStatus::Failed
                };
                self.requests.finish(key, state, Some(e.to_string()), now);
                Err(WireError::Ntms(e))
            }
        };
        self.note_request(key);
        self.completions.push_back((key, reply, self.batch_for_reply()));
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
