//! The media life-cycle methods as broker rules: who may do what (access rights), the waiting allocation, and the
//! calls into the inventory's pool rules (`media::pools`).

use serde_json::{Map, Value};

use super::access::{Object, Rights};
use super::dispatch::Answer;
use super::session::Peer;
use super::Broker;
use crate::media::pools::{AllocateArgs, CreateAction, PoolError, Update};
use crate::model::{Change, Guid, MediaRecord, Owner, PoolRecord, RequestId, RequestKind, RequestStatus};
use crate::proto::types::{AllocateReply, CreatePoolReply, ObjectChanges, PoolAction};
use crate::proto::{NtmsError, WireError};

/// An allocation waiting for a cartridge to become available.
#[derive(Debug, Clone)]
pub struct AllocCall {
    /// Its request.
    pub key: RequestId,
    /// The session that asked.
    pub session: String,
    /// Who asked.
    pub peer: Peer,
    /// The pool.
    pub pool: Guid,
    /// When it gives up.
    pub deadline: Option<u64>,
}

/// The wire error for a refused pool operation.
pub fn pool_error(e: PoolError) -> NtmsError {
    let message = e.to_string();
    match e {
        PoolError::InvalidPool(_) => NtmsError::InvalidMediaPool { message },
        PoolError::InvalidMedia(_) => NtmsError::InvalidMedia { message },
        PoolError::InvalidName(_) => NtmsError::InvalidName { message },
        PoolError::AlreadyExists(_) => NtmsError::AlreadyExists { message },
        PoolError::NotEmpty(_) => NtmsError::NotEmpty { message },
        PoolError::InvalidState(_) => NtmsError::InvalidState { message },
        PoolError::Busy(_) => NtmsError::Busy { message },
        PoolError::Incompatible(_) => NtmsError::MediaIncompatible { message },
        PoolError::Unavailable(_) => NtmsError::MediaUnavailable { message },
        PoolError::Stale(_) => NtmsError::RevisionMismatch { message },
    }
}

fn done(r: Result<Map<String, Value>, NtmsError>, batch: u64) -> Answer {
    match r {
        Ok(m) => Answer::Reply(Ok(m), batch),
        Err(e) => Answer::Reply(Err(WireError::Ntms(e)), 0),
    }
}

fn to_map<T: serde::Serialize>(v: &T) -> Map<String, Value> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

impl Broker {
    // --- Rights ---------------------------------------------------------------------------------------------

    /// Whether `peer` administers rsmd (configured uids or admin groups).
    pub fn is_admin(&self, peer: Peer) -> bool {
        self.options.access.is_admin(&self.administrators, peer)
    }

    /// A pool and the pools above it.
    fn pool_chain(&self, id: Guid) -> Vec<&PoolRecord> {
        let mut chain = Vec::new();
        let Some(inv) = self.inventory.as_ref() else { return chain };
        let mut next = inv.pool(id);
        while let Some(p) = next {
            if chain.len() > 64 {
                break;
            }
            chain.push(p);
            next = p.parent.and_then(|up| inv.pool(up));
        }
        chain
    }

    /// The rights `peer` has on pool `id`.
    pub fn pool_rights(&self, peer: Peer, id: Guid) -> Rights {
        let chain = self.pool_chain(id);
        self.options.access.rights(&self.administrators, peer, Object::Pool(&chain))
    }

    /// The rights `peer` has on library `id`.
    pub fn library_rights(&self, peer: Peer, id: Guid) -> Rights {
        let name = self.inventory.as_ref().and_then(|i| i.library(id)).map(|l| l.name.clone()).unwrap_or_default();
        self.options.access.rights(&self.administrators, peer, Object::Library(&name))
    }

    fn need_pool(&self, peer: Peer, id: Guid, needed: Rights, what: &str) -> Result<(), NtmsError> {
        if self.pool_rights(peer, id).contains(needed) {
            return Ok(());
        }
        let name = self.inventory.as_ref().and_then(|i| i.pool(id)).map_or_else(|| id.to_string(), |p| p.name.clone());
        Err(NtmsError::AccessDenied {
            message: format!(
                "{what}: uid {} has no {} right on pool {name} (ask an administrator, or see [[access.grant]] in \
                 rsmd.toml)",
                peer.uid,
                needed.describe()
            ),
        })
    }

    /// Whether `peer` may see cartridge `m` (use on its pool).
    pub fn may_see_media(&self, peer: Peer, m: &MediaRecord) -> bool {
        m.pool.is_none_or(|p| self.pool_rights(peer, p).contains(Rights::USE))
    }

    /// The peer of a session (for a detached request whose session ended: its owner's uid).
    pub fn peer_of(&self, session: &str, owner: &Owner) -> Peer {
        self.sessions.peer(session).unwrap_or(Peer { pid: 0, uid: owner.uid, gid: u32::MAX, start_time: 0 })
    }

    // --- Names ----------------------------------------------------------------------------------------------

    /// A pool by id or path.
    pub fn resolve_pool(&self, key: &str) -> Result<Guid, NtmsError> {
        let inv = self.inventory.as_ref().ok_or_else(|| NtmsError::NotReady { message: "loading".into() })?;
        key.parse::<Guid>()
            .ok()
            .filter(|g| inv.pool(*g).is_some())
            .or_else(|| inv.pool_by_name(key).map(|p| p.id))
            .ok_or_else(|| NtmsError::InvalidMediaPool { message: format!("no pool {key:?} (rsm pools lists them)") })
    }

    /// A cartridge by id or barcode.
    fn resolve_cartridge(&self, key: &str) -> Result<Guid, NtmsError> {
        let inv = self.inventory.as_ref().ok_or_else(|| NtmsError::NotReady { message: "loading".into() })?;
        inv.media_by_barcode_any_case(key)
            .or_else(|| key.parse::<Guid>().ok().and_then(|g| inv.medium(g)))
            .map(|m| m.id)
            .ok_or_else(|| NtmsError::InvalidMedia { message: format!("no cartridge {key:?}") })
    }

    /// A logical media id (or, for people, the barcode of an allocated cartridge).
    fn resolve_lmid(&self, key: &str) -> Result<Guid, NtmsError> {
        let inv = self.inventory.as_ref().ok_or_else(|| NtmsError::NotReady { message: "loading".into() })?;
        if let Some(g) = key.parse::<Guid>().ok().filter(|g| inv.media_by_lmid(*g).is_some()) {
            return Ok(g);
        }
        if let Some(l) = inv.media_by_barcode_any_case(key).and_then(|m| m.lmid) {
            return Ok(l);
        }
        Err(NtmsError::InvalidMedia { message: format!("no logical media {key:?} (deallocated or never allocated)") })
    }

    fn pool_of_media(&self, media: Guid) -> Option<Guid> {
        self.inventory.as_ref()?.medium(media)?.pool
    }

    /// Applies an inventory operation's result: its changes are persisted and notified; the reply waits for them.
    fn apply(&mut self, r: Result<Vec<Change>, PoolError>) -> Result<u64, NtmsError> {
        let changes = r.map_err(pool_error)?;
        self.push_changes(changes);
        Ok(self.batch_for_reply())
    }

    fn audit_pool(&self, peer: Peer, session: &str, what: &str) {
        let owner = self.owner_of(session);
        log::info!("audit: {what} by uid {} ({})", peer.uid, owner.application.as_deref().unwrap_or("unnamed"));
    }

    // --- Methods --------------------------------------------------------------------------------------------

    /// `CreateMediaPool`: control on the parent (any local user may create a top-level pool; it is theirs).
    pub fn create_pool(
        &mut self,
        session: &str,
        peer: Peer,
        name: &str,
        media_type: Option<&str>,
        action: PoolAction,
    ) -> Answer {
        let owner = self.owner_of(session);
        let action = match action {
            PoolAction::OpenExisting => CreateAction::OpenExisting,
            PoolAction::CreateNew => CreateAction::CreateNew,
            PoolAction::OpenAlways => CreateAction::OpenAlways,
        };
        let parent = crate::media::pools::normalize_path(name)
            .ok()
            .and_then(|p| p.rsplit_once('\\').map(|(up, _)| up.to_owned()))
            .and_then(|up| self.inventory.as_ref()?.pool_by_name(&up).map(|p| p.id));
        if let Some(up) = parent {
            if let Err(e) = self.need_pool(peer, up, Rights::CONTROL, "create a pool") {
                return done(Err(e), 0);
            }
        }
        let now = self.now_unix();
        let Some(inv) = self.inventory.as_mut() else {
            return done(Err(NtmsError::NotReady { message: "loading".into() }), 0);
        };
        let r = inv.create_pool(name, media_type, action, owner, now);
        match r {
            Ok((id, created, changes)) => {
                if created {
                    self.audit_pool(peer, session, &format!("pool {name} created"));
                }
                self.push_changes(changes);
                let reply = CreatePoolReply { pool: id.to_string(), created };
                done(Ok(to_map(&reply)), self.batch_for_reply())
            }
            Err(PoolError::InvalidPool(m)) if action == CreateAction::OpenExisting => {
                done(Err(NtmsError::ObjectNotFound { message: m }), 0)
            }
            Err(e) => done(Err(pool_error(e)), 0),
        }
    }

    /// `DeleteMediaPool`: modify on the pool.
    pub fn delete_pool(&mut self, session: &str, peer: Peer, pool: &str) -> Answer {
        let r = (|| {
            let id = self.resolve_pool(pool)?;
            self.need_pool(peer, id, Rights::MODIFY, "delete the pool")?;
            let r = self.inventory.as_mut().map_or(Ok(Vec::new()), |inv| inv.delete_pool(id));
            let batch = self.apply(r)?;
            self.audit_pool(peer, session, &format!("pool {pool} deleted"));
            Ok((Map::new(), batch))
        })();
        match r {
            Ok((m, b)) => done(Ok(m), b),
            Err(e) => done(Err(e), 0),
        }
    }

    /// `MoveToMediaPool`: control on both pools (use suffices on a Free pool).
    pub fn move_to_pool(&mut self, session: &str, peer: Peer, media: &str, pool: &str) -> Answer {
        let r = (|| {
            let m = self.resolve_cartridge(media)?;
            let dest = self.resolve_pool(pool)?;
            let needed = |b: &Broker, p: Guid| {
                let free = b
                    .inventory
                    .as_ref()
                    .and_then(|i| i.pool(p))
                    .is_some_and(|p| p.kind == crate::model::PoolKind::Free);
                if free {
                    Rights::USE
                } else {
                    Rights::CONTROL
                }
            };
            if let Some(from) = self.pool_of_media(m) {
                self.need_pool(peer, from, needed(self, from), "move the cartridge out of its pool")?;
            }
            self.need_pool(peer, dest, needed(self, dest), "move the cartridge into the pool")?;
            let now = self.now_unix();
            let r = self.inventory.as_mut().map_or(Ok(Vec::new()), |inv| inv.move_to_pool(m, dest, now));
            let batch = self.apply(r)?;
            self.audit_pool(peer, session, &format!("cartridge {media} moved to pool {pool}"));
            Ok(batch)
        })();
        match r {
            Ok(b) => done(Ok(Map::new()), b),
            Err(e) => done(Err(e), 0),
        }
    }

    /// `AllocateMedia`: control on the pool (and use on Free when drawing from it). Waits for a cartridge unless
    /// `error_if_unavailable`.
    #[allow(clippy::too_many_arguments)]
    pub fn allocate(
        &mut self,
        session: &str,
        peer: Peer,
        pool: &str,
        media: Option<&str>,
        error_if_unavailable: bool,
        timeout_ms: Option<u64>,
    ) -> Answer {
        let pool = match self.resolve_pool(pool) {
            Ok(p) => p,
            Err(e) => return done(Err(e), 0),
        };
        if let Err(e) = self.need_pool(peer, pool, Rights::CONTROL, "allocate") {
            return done(Err(e), 0);
        }
        let media = match media.map(|m| self.resolve_cartridge(m)).transpose() {
            Ok(m) => m,
            Err(e) => return done(Err(e), 0),
        };
        if let Some(from) = media.and_then(|m| self.pool_of_media(m)).filter(|f| *f != pool) {
            if let Err(e) = self.need_pool(peer, from, Rights::USE, "allocate from that pool") {
                return done(Err(e), 0);
            }
        }
        match self.try_allocate(session, peer, pool, media) {
            Ok(reply) => done(Ok(reply), self.batch_for_reply()),
            Err(NtmsError::MediaUnavailable { message }) if !error_if_unavailable && media.is_none() => {
                if timeout_ms == Some(0) {
                    return done(Err(NtmsError::Timeout { message }), 0);
                }
                let owner = self.owner_of(session);
                let mut new = self.new_request(RequestKind::Allocate, None, session);
                new.owner = owner;
                let key = self.requests.add(new, self.now_unix());
                self.requests.set_state(key, RequestStatus::Waiting, None, self.now_unix());
                self.note_request(key);
                let deadline = timeout_ms.map(|t| self.now.saturating_add(t));
                self.allocs.push(AllocCall { key, session: session.to_owned(), peer, pool, deadline });
                log::info!("allocation in pool {pool} waits for a cartridge: {message}");
                Answer::Later { key }
            }
            Err(e) => done(Err(e), 0),
        }
    }

    fn try_allocate(
        &mut self,
        session: &str,
        peer: Peer,
        pool: Guid,
        media: Option<Guid>,
    ) -> Result<Map<String, Value>, NtmsError> {
        let owner = self.owner_of(session);
        let owner = if owner.uid == peer.uid { owner } else { Owner { uid: peer.uid, application: None } };
        let args = AllocateArgs { pool, media, owner, now: self.now_unix() };
        let inv = self.inventory.as_mut().ok_or_else(|| NtmsError::NotReady { message: "loading".into() })?;
        let (a, changes) = inv.allocate(&args).map_err(pool_error)?;
        let barcode = inv.medium(a.media).and_then(|m| m.barcode.clone());
        let name = inv.pool(pool).map_or_else(|| pool.to_string(), |p| p.name.clone());
        self.push_changes(changes);
        self.audit_pool(
            peer,
            session,
            &format!("cartridge {} allocated in pool {name} as {}", barcode.as_deref().unwrap_or("?"), a.lmid),
        );
        Ok(to_map(&AllocateReply {
            logical_media: a.lmid.to_string(),
            media: a.media.to_string(),
            barcode,
            allocated_from: a.from.to_string(),
        }))
    }

    /// Waiting allocations: the ones that can be served now are, the timed-out ones fail with `Timeout`.
    pub fn retry_allocations(&mut self) {
        if self.allocs.is_empty() {
            return;
        }
        let now = self.now;
        for c in std::mem::take(&mut self.allocs) {
            if c.deadline.is_some_and(|d| d <= now) {
                self.end_alloc(
                    c.key,
                    Err(NtmsError::Timeout { message: "no cartridge became available in time".into() }),
                );
                continue;
            }
            let ready = self.inventory.as_ref().is_some_and(|i| i.could_allocate(c.pool));
            if !ready {
                self.allocs.push(c);
                continue;
            }
            let r = self.try_allocate(&c.session, c.peer, c.pool, None);
            self.end_alloc(c.key, r);
        }
    }

    /// Ends a waiting allocation with its reply.
    pub fn end_alloc(&mut self, key: RequestId, r: Result<Map<String, Value>, NtmsError>) {
        self.allocs.retain(|c| c.key != key);
        let (state, error) = match &r {
            Ok(_) => (RequestStatus::Complete, None),
            Err(NtmsError::Cancelled { .. }) => (RequestStatus::Cancelled, r.as_ref().err().map(ToString::to_string)),
            Err(e) => (RequestStatus::Failed, Some(e.to_string())),
        };
        if self.requests.is_open(key) {
            self.requests.finish(key, state, error, self.now_unix());
            self.note_request(key);
        }
        self.completions.push_back((key, r.map_err(WireError::Ntms), self.batch_for_reply()));
    }

    /// `DeallocateMedia`, `SetMediaComplete`: control on the pool.
    pub fn lmid_call(&mut self, session: &str, peer: Peer, lmid: &str, complete: bool) -> Answer {
        let r = (|| {
            let l = self.resolve_lmid(lmid)?;
            let pool = self.inventory.as_ref().and_then(|i| i.media_by_lmid(l)).and_then(|m| m.pool);
            if let Some(p) = pool {
                let what = if complete { "mark the media complete" } else { "deallocate" };
                self.need_pool(peer, p, Rights::CONTROL, what)?;
            }
            let now = self.now_unix();
            let inv = self.inventory.as_mut().ok_or_else(|| NtmsError::NotReady { message: "loading".into() })?;
            let r = if complete { inv.set_complete(l, now) } else { inv.deallocate(l, now) };
            let (media, changes) = r.map_err(pool_error)?;
            let barcode = inv.medium(media).and_then(|m| m.barcode.clone()).unwrap_or_default();
            self.push_changes(changes);
            let what = if complete { "marked complete" } else { "deallocated" };
            self.audit_pool(peer, session, &format!("cartridge {barcode} ({lmid}) {what}"));
            Ok(self.batch_for_reply())
        })();
        match r {
            Ok(b) => done(Ok(Map::new()), b),
            Err(e) => done(Err(e), 0),
        }
    }

    /// `SwapMedia`: modify on the pool.
    pub fn swap(&mut self, session: &str, peer: Peer, first: &str, second: &str) -> Answer {
        let r = (|| {
            let (a, b) = (self.resolve_lmid(first)?, self.resolve_lmid(second)?);
            for l in [a, b] {
                if let Some(p) = self.inventory.as_ref().and_then(|i| i.media_by_lmid(l)).and_then(|m| m.pool) {
                    self.need_pool(peer, p, Rights::MODIFY, "swap media")?;
                }
            }
            let now = self.now_unix();
            let r = self.inventory.as_mut().map_or(Ok(Vec::new()), |inv| inv.swap(a, b, now));
            let batch = self.apply(r)?;
            self.audit_pool(peer, session, &format!("logical media {first} and {second} swapped"));
            Ok(batch)
        })();
        match r {
            Ok(b) => done(Ok(Map::new()), b),
            Err(e) => done(Err(e), 0),
        }
    }

    /// `DecommissionMedia` (control on the pool), `DeleteMedia` (modify on the pool).
    pub fn media_call(&mut self, session: &str, peer: Peer, media: &str, delete: bool) -> Answer {
        let r = (|| {
            let m = self.resolve_cartridge(media)?;
            if let Some(p) = self.pool_of_media(m) {
                let (needed, what) =
                    if delete { (Rights::MODIFY, "delete the cartridge") } else { (Rights::CONTROL, "decommission") };
                self.need_pool(peer, p, needed, what)?;
            }
            let now = self.now_unix();
            let r = self.inventory.as_mut().map_or(Ok(Vec::new()), |inv| {
                if delete {
                    inv.delete_media(m)
                } else {
                    inv.decommission(m, now)
                }
            });
            let batch = self.apply(r)?;
            let what = if delete { "deleted" } else { "decommissioned" };
            self.audit_pool(peer, session, &format!("cartridge {media} {what}"));
            Ok(batch)
        })();
        match r {
            Ok(b) => done(Ok(Map::new()), b),
            Err(e) => done(Err(e), 0),
        }
    }

    /// `EnableObject` / `DisableObject`: a cartridge (modify on its pool), a drive or library (modify on the
    /// library).
    pub fn set_enabled(&mut self, session: &str, peer: Peer, object: &str, enabled: bool) -> Answer {
        let r = (|| {
            let now = self.now_unix();
            let word = if enabled { "enabled" } else { "disabled" };
            if let Ok(m) = self.resolve_cartridge(object) {
                if let Some(p) = self.pool_of_media(m) {
                    self.need_pool(peer, p, Rights::MODIFY, "enable or disable the cartridge")?;
                }
                let r = self.inventory.as_mut().map_or(Ok(Vec::new()), |inv| inv.set_media_enabled(m, enabled, now));
                let batch = self.apply(r)?;
                self.audit_pool(peer, session, &format!("cartridge {object} {word}"));
                return Ok(batch);
            }
            let g: Guid =
                object.parse().map_err(|_| NtmsError::ObjectNotFound { message: format!("no object {object:?}") })?;
            let inv = self.inventory.as_ref().ok_or_else(|| NtmsError::NotReady { message: "loading".into() })?;
            let library = if inv.library(g).is_some() {
                Some(g)
            } else {
                inv.element_by_id(g).filter(|e| e.kind == crate::model::ElementKind::Drive).map(|e| e.library)
            };
            let Some(library) = library else {
                return Err(NtmsError::InvalidParameter {
                    message: "only libraries, drives and cartridges are enabled or disabled".into(),
                });
            };
            if !self.library_rights(peer, library).contains(Rights::MODIFY) {
                return Err(NtmsError::AccessDenied {
                    message: format!("uid {} has no modify right on the library", peer.uid),
                });
            }
            let inv = self.inventory.as_mut().ok_or_else(|| NtmsError::NotReady { message: "loading".into() })?;
            let changes = inv.set_enabled(g, enabled).map_err(|m| NtmsError::InvalidState { message: m })?;
            self.push_changes(changes);
            self.audit_pool(peer, session, &format!("{object} {word}"));
            Ok(self.batch_for_reply())
        })();
        match r {
            Ok(b) => done(Ok(Map::new()), b),
            Err(e) => done(Err(e), 0),
        }
    }

    /// `SetObjectInformation` on a cartridge or pool: modify on the pool.
    pub fn set_object_information(
        &mut self,
        session: &str,
        peer: Peer,
        object: &str,
        version: Option<u64>,
        changes: &ObjectChanges,
    ) -> Answer {
        let u = Update {
            version,
            description: changes.description.clone(),
            name: changes.name.clone(),
            draw_from_free: changes.draw_from_free,
            return_to_free: changes.return_to_free,
            max_allocations: changes.max_allocations,
            media_type: changes.media_type.clone(),
        };
        let r = (|| {
            let now = self.now_unix();
            if let Ok(p) = self.resolve_pool(object) {
                self.need_pool(peer, p, Rights::MODIFY, "change the pool")?;
                let r = self.inventory.as_mut().map_or(Ok(Vec::new()), |inv| inv.update_pool(p, &u, now));
                let batch = self.apply(r)?;
                self.audit_pool(peer, session, &format!("pool {object} changed"));
                return Ok((p, batch));
            }
            let m = self.resolve_cartridge(object).map_err(|_| NtmsError::ObjectNotFound {
                message: format!("no pool or cartridge {object:?} (only those are changed with SetObjectInformation)"),
            })?;
            if let Some(p) = self.pool_of_media(m) {
                self.need_pool(peer, p, Rights::MODIFY, "change the cartridge")?;
            }
            let r = self.inventory.as_mut().map_or(Ok(Vec::new()), |inv| inv.update_media(m, &u, now));
            let batch = self.apply(r)?;
            self.audit_pool(peer, session, &format!("cartridge {object} changed"));
            Ok((m, batch))
        })();
        match r {
            Ok((id, batch)) => match self.with_view(|v| v.find(&id.to_string())) {
                Some(object) => done(Ok(to_map(&crate::proto::types::ObjectReply { object })), batch),
                None => done(Ok(Map::new()), batch),
            },
            Err(e) => done(Err(e), 0),
        }
    }
}
