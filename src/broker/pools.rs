//! The media life-cycle methods as broker rules: who may do what (access rights), the waiting allocation, and the
//! calls into the inventory's pool rules (`media::pools`).

use serde_json::{Map, Value};

use super::access::{Object, Rights};
use super::dispatch::{reply, Answer};
use super::session::Peer;
use super::Broker;
use crate::media::pools::{AllocateArgs, CreateAction, PoolError, Update};
use crate::media::Inventory;
use crate::model::{Change, Guid, MediaRecord, Owner, PoolKind, PoolRecord, RequestId, RequestKind, RequestStatus};
use crate::proto::types::{AllocateReply, CreatePoolReply, ObjectChanges, ObjectReply, PoolAction};
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
    /// The operator request for new media it raised.
    pub op: Option<u64>,
}

/// What a life-cycle method answers: the reply and the store batch it waits for.
pub type Done = Result<(Map<String, Value>, u64), NtmsError>;

/// The answer to a call that replied at once.
pub fn answer(r: Done) -> Answer {
    match r {
        Ok((m, batch)) => Answer::Reply(Ok(m), batch),
        Err(e) => Answer::Reply(Err(WireError::Ntms(e)), 0),
    }
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

/// A typed reply as a parameter map.
fn map<T: serde::Serialize>(v: &T) -> Result<Map<String, Value>, NtmsError> {
    reply(v).map_err(|_| NtmsError::Internal { message: "reply did not serialize to an object".into() })
}

fn not_ready() -> NtmsError {
    NtmsError::NotReady { message: "rsmd is loading its inventory; retry shortly".into() }
}

impl Broker {
    fn inv(&self) -> Result<&Inventory, NtmsError> {
        self.inventory.as_ref().ok_or_else(not_ready)
    }

    fn inv_mut(&mut self) -> Result<&mut Inventory, NtmsError> {
        self.inventory.as_mut().ok_or_else(not_ready)
    }

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
        // Bounded: a damaged database with a parent cycle must not hang the loop.
        while let Some(p) = next.filter(|_| chain.len() <= 64) {
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

    /// The pools `peer` may use (see cartridges in): one rights check per pool, not per cartridge.
    pub fn usable_pools(&self, peer: Peer) -> std::collections::HashSet<Guid> {
        let Some(inv) = self.inventory.as_ref() else { return Default::default() };
        inv.pools().map(|p| p.id).filter(|p| self.pool_rights(peer, *p).contains(Rights::USE)).collect()
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
        let inv = self.inv()?;
        key.parse::<Guid>()
            .ok()
            .filter(|g| inv.pool(*g).is_some())
            .or_else(|| inv.pool_by_name(key).map(|p| p.id))
            .ok_or_else(|| NtmsError::InvalidMediaPool { message: format!("no pool {key:?} (rsm pools lists them)") })
    }

    /// A cartridge by barcode or id.
    fn resolve_cartridge(&self, key: &str) -> Result<Guid, NtmsError> {
        self.resolve_media(key)
            .map(|m| m.id)
            .ok_or_else(|| NtmsError::InvalidMedia { message: format!("no cartridge {key:?}") })
    }

    /// A logical media id (or, for people, the barcode of an allocated cartridge).
    fn resolve_lmid(&self, key: &str) -> Result<Guid, NtmsError> {
        let inv = self.inv()?;
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

    fn pool_of_lmid(&self, lmid: Guid) -> Option<Guid> {
        self.inventory.as_ref()?.media_by_lmid(lmid)?.pool
    }

    /// Persists and announces an inventory operation's changes; an empty reply waits for them.
    fn apply(&mut self, r: Result<Vec<Change>, PoolError>) -> Done {
        self.push_changes(r.map_err(pool_error)?);
        Ok((Map::new(), self.batch_for_reply()))
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
    ) -> Done {
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
            self.need_pool(peer, up, Rights::CONTROL, "create a pool")?;
        }
        let now = self.now_unix();
        let (id, created, changes) = match self.inv_mut()?.create_pool(name, media_type, action, owner, now) {
            Err(PoolError::InvalidPool(message)) if action == CreateAction::OpenExisting => {
                return Err(NtmsError::ObjectNotFound { message })
            }
            r => r.map_err(pool_error)?,
        };
        if created {
            self.audit_pool(peer, session, &format!("pool {name} created"));
        }
        self.push_changes(changes);
        Ok((map(&CreatePoolReply { pool: id.to_string(), created })?, self.batch_for_reply()))
    }

    /// `DeleteMediaPool`: modify on the pool.
    pub fn delete_pool(&mut self, session: &str, peer: Peer, pool: &str) -> Done {
        let id = self.resolve_pool(pool)?;
        self.need_pool(peer, id, Rights::MODIFY, "delete the pool")?;
        let r = self.inv_mut()?.delete_pool(id);
        let done = self.apply(r)?;
        self.audit_pool(peer, session, &format!("pool {pool} deleted"));
        Ok(done)
    }

    /// `MoveToMediaPool`: control on both pools (use suffices on a Free pool).
    pub fn move_to_pool(&mut self, session: &str, peer: Peer, media: &str, pool: &str) -> Done {
        let m = self.resolve_cartridge(media)?;
        let dest = self.resolve_pool(pool)?;
        let needed = |b: &Broker, p: Guid| {
            let free = b.inventory.as_ref().and_then(|i| i.pool(p)).is_some_and(|p| p.kind == PoolKind::Free);
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
        let r = self.inv_mut()?.move_to_pool(m, dest, now);
        let done = self.apply(r)?;
        self.audit_pool(peer, session, &format!("cartridge {media} moved to pool {pool}"));
        Ok(done)
    }

    /// `AllocateMedia`: control on the pool (and use on the pool a given cartridge comes from). Waits for a
    /// cartridge unless `error_if_unavailable`.
    pub fn allocate(
        &mut self,
        session: &str,
        peer: Peer,
        pool: &str,
        media: Option<&str>,
        error_if_unavailable: bool,
        timeout_ms: Option<u64>,
    ) -> Answer {
        let checked = (|| {
            let pool = self.resolve_pool(pool)?;
            self.need_pool(peer, pool, Rights::CONTROL, "allocate")?;
            let media = media.map(|m| self.resolve_cartridge(m)).transpose()?;
            if let Some(from) = media.and_then(|m| self.pool_of_media(m)).filter(|f| *f != pool) {
                self.need_pool(peer, from, Rights::USE, "allocate from that pool")?;
            }
            Ok((pool, media))
        })();
        let (pool, media) = match checked {
            Ok(x) => x,
            Err(e) => return answer(Err(e)),
        };
        match self.try_allocate(session, peer, pool, media) {
            Err(NtmsError::MediaUnavailable { message }) if !error_if_unavailable && media.is_none() => {
                if timeout_ms == Some(0) {
                    return answer(Err(NtmsError::Timeout { message }));
                }
                let key = self.requests.add(self.new_request(RequestKind::Allocate, None, session), self.now_unix());
                self.requests.set_state(key, RequestStatus::Waiting, None, self.now_unix());
                self.note_request(key);
                let deadline = timeout_ms.map(|t| self.now.saturating_add(t));
                let name =
                    self.inventory.as_ref().and_then(|i| i.pool(pool)).map_or(pool.to_string(), |p| p.name.clone());
                let op = self.raise_operator(
                    crate::model::OperatorKind::NewMedia,
                    format!("pool {name} has no cartridge to allocate: put new media in the library (or move some to the pool)"),
                    Some(pool.to_string()),
                    None,
                    Some(key),
                );
                self.allocs.push(AllocCall { key, session: session.to_owned(), peer, pool, deadline, op: Some(op) });
                log::info!("allocation in pool {pool} waits for a cartridge: {message}");
                Answer::Later { key }
            }
            r => answer(r),
        }
    }

    fn try_allocate(&mut self, session: &str, peer: Peer, pool: Guid, media: Option<Guid>) -> Done {
        let args = AllocateArgs { pool, media, owner: self.owner_of(session), now: self.now_unix() };
        let inv = self.inv_mut()?;
        let (a, changes) = inv.allocate(&args).map_err(pool_error)?;
        let barcode = inv.medium(a.media).and_then(|m| m.barcode.clone());
        let name = inv.pool(pool).map_or_else(|| pool.to_string(), |p| p.name.clone());
        self.push_changes(changes);
        let label = barcode.as_deref().unwrap_or("(no label)");
        self.audit_pool(peer, session, &format!("cartridge {label} allocated in pool {name} as {}", a.lmid));
        let r = AllocateReply {
            logical_media: a.lmid.to_string(),
            media: a.media.to_string(),
            barcode,
            allocated_from: a.from.to_string(),
        };
        Ok((map(&r)?, self.batch_for_reply()))
    }

    /// Waiting allocations: the ones that can be served now are, the timed-out ones fail with `Timeout`.
    pub fn retry_allocations(&mut self) {
        if self.allocs.is_empty() {
            return;
        }
        let now = self.now;
        for c in std::mem::take(&mut self.allocs) {
            if c.deadline.is_some_and(|d| d <= now) {
                let e = NtmsError::Timeout { message: "no cartridge became available in time".into() };
                self.end_alloc(c.key, Err(e));
            } else if self.inventory.as_ref().is_some_and(|i| i.could_allocate(c.pool)) {
                let r = self.try_allocate(&c.session, c.peer, c.pool, None);
                self.end_alloc(c.key, r);
            } else {
                self.allocs.push(c);
            }
        }
    }

    /// Ends a waiting allocation with its reply.
    pub fn end_alloc(&mut self, key: RequestId, r: Done) {
        self.allocs.retain(|c| c.key != key);
        let (state, error) = match &r {
            Ok(_) => (RequestStatus::Complete, None),
            Err(e @ NtmsError::Cancelled { .. }) => (RequestStatus::Cancelled, Some(e.to_string())),
            Err(e) => (RequestStatus::Failed, Some(e.to_string())),
        };
        if self.requests.is_open(key) {
            self.requests.finish(key, state, error, self.now_unix());
            self.note_request(key);
        }
        let reply = r.map(|(m, _)| m).map_err(WireError::Ntms);
        self.completions.push_back((key, reply, self.batch_for_reply()));
    }

    /// `DeallocateMedia` (`complete` false) and `SetMediaComplete`: control on the pool.
    pub fn lmid_call(&mut self, session: &str, peer: Peer, lmid: &str, complete: bool) -> Done {
        let l = self.resolve_lmid(lmid)?;
        if let Some(p) = self.pool_of_lmid(l) {
            let what = if complete { "mark the media complete" } else { "deallocate" };
            self.need_pool(peer, p, Rights::CONTROL, what)?;
        }
        let now = self.now_unix();
        let inv = self.inv_mut()?;
        let r = if complete { inv.set_complete(l, now) } else { inv.deallocate(l, now) };
        let (media, changes) = r.map_err(pool_error)?;
        let barcode = inv.medium(media).and_then(|m| m.barcode.clone()).unwrap_or_default();
        let done = self.apply(Ok(changes))?;
        let what = if complete { "marked complete" } else { "deallocated" };
        self.audit_pool(peer, session, &format!("cartridge {barcode} ({lmid}) {what}"));
        Ok(done)
    }

    /// `SwapMedia`: modify on the pool.
    pub fn swap(&mut self, session: &str, peer: Peer, first: &str, second: &str) -> Done {
        let (a, b) = (self.resolve_lmid(first)?, self.resolve_lmid(second)?);
        for p in [a, b].into_iter().filter_map(|l| self.pool_of_lmid(l)) {
            self.need_pool(peer, p, Rights::MODIFY, "swap media")?;
        }
        let now = self.now_unix();
        let r = self.inv_mut()?.swap(a, b, now);
        let done = self.apply(r)?;
        self.audit_pool(peer, session, &format!("logical media {first} and {second} swapped"));
        Ok(done)
    }

    /// `DecommissionMedia` (control on the pool) and `DeleteMedia` (`delete`; modify on the pool).
    pub fn media_call(&mut self, session: &str, peer: Peer, media: &str, delete: bool) -> Done {
        let m = self.resolve_cartridge(media)?;
        if let Some(p) = self.pool_of_media(m) {
            let (needed, what) =
                if delete { (Rights::MODIFY, "delete the cartridge") } else { (Rights::CONTROL, "decommission") };
            self.need_pool(peer, p, needed, what)?;
        }
        let now = self.now_unix();
        let inv = self.inv_mut()?;
        let r = if delete { inv.delete_media(m) } else { inv.decommission(m, now) };
        let done = self.apply(r)?;
        let what = if delete { "deleted" } else { "decommissioned" };
        self.audit_pool(peer, session, &format!("cartridge {media} {what}"));
        Ok(done)
    }

    /// `EnableObject` / `DisableObject`: a cartridge (modify on its pool), a drive or library (modify on the
    /// library).
    pub fn set_enabled(&mut self, session: &str, peer: Peer, object: &str, enabled: bool) -> Done {
        let now = self.now_unix();
        let word = if enabled { "enabled" } else { "disabled" };
        let done = if let Ok(m) = self.resolve_cartridge(object) {
            if let Some(p) = self.pool_of_media(m) {
                self.need_pool(peer, p, Rights::MODIFY, "enable or disable the cartridge")?;
            }
            let r = self.inv_mut()?.set_media_enabled(m, enabled, now);
            self.apply(r)?
        } else {
            let g: Guid =
                object.parse().map_err(|_| NtmsError::ObjectNotFound { message: format!("no object {object:?}") })?;
            let inv = self.inv()?;
            let library = if inv.library(g).is_some() {
                Some(g)
            } else {
                inv.element_by_id(g).filter(|e| e.kind == crate::model::ElementKind::Drive).map(|e| e.library)
            };
            let library = library.ok_or_else(|| NtmsError::InvalidParameter {
                message: "only libraries, drives and cartridges are enabled or disabled".into(),
            })?;
            if !self.library_rights(peer, library).contains(Rights::MODIFY) {
                return Err(NtmsError::AccessDenied {
                    message: format!("uid {} has no modify right on the library", peer.uid),
                });
            }
            let changes =
                self.inv_mut()?.set_enabled(g, enabled).map_err(|message| NtmsError::InvalidState { message })?;
            self.apply(Ok(changes))?
        };
        self.audit_pool(peer, session, &format!("{object} {word}"));
        Ok(done)
    }

    /// `SetObjectInformation` on a cartridge or pool: modify on the pool.
    pub fn set_object_information(
        &mut self,
        session: &str,
        peer: Peer,
        object: &str,
        version: Option<u64>,
        changes: &ObjectChanges,
    ) -> Done {
        let u = Update {
            version,
            description: changes.description.clone(),
            name: changes.name.clone(),
            draw_from_free: changes.draw_from_free,
            return_to_free: changes.return_to_free,
            max_allocations: changes.max_allocations,
            media_type: changes.media_type.clone(),
        };
        let now = self.now_unix();
        let (id, batch) = if let Ok(p) = self.resolve_pool(object) {
            self.need_pool(peer, p, Rights::MODIFY, "change the pool")?;
            let r = self.inv_mut()?.update_pool(p, &u, now);
            (p, self.apply(r)?.1)
        } else {
            let m = self.resolve_cartridge(object).map_err(|_| NtmsError::ObjectNotFound {
                message: format!("no pool or cartridge {object:?} (only those are changed with SetObjectInformation)"),
            })?;
            if let Some(p) = self.pool_of_media(m) {
                self.need_pool(peer, p, Rights::MODIFY, "change the cartridge")?;
            }
            let r = self.inv_mut()?.update_media(m, &u, now);
            (m, self.apply(r)?.1)
        };
        self.audit_pool(peer, session, &format!("{object} changed"));
        let object = self
            .with_view(|v| v.find(&id.to_string()))
            .ok_or_else(|| NtmsError::Internal { message: "the changed object vanished".into() })?;
        Ok((map(&ObjectReply { object })?, batch))
    }
}
