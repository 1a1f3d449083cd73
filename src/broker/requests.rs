//! Library requests (`NTMS_LIBREQUEST`): what clients (and the daemon itself) asked the libraries to do. One typed
//! record per request ([`RequestRecord`]), held here and nowhere else, persisted with the state it reached: every
//! change marks the record dirty and the broker hands dirty records to the store with the turn's batch.
//!
//! Clients name a request by its GUID; the broker by its [`RequestId`] (the changer's job id is the same number).

use std::collections::{BTreeMap, HashMap};

use crate::model::Change;
use crate::model::{Guid, Owner, RequestId, RequestKind, RequestRecord, RequestStatus};
use crate::proto::types::{LibRequestDetails, ObjectDetails, ObjectInfo, RequestOperation, RequestState};
use crate::proto::NtmsError;

/// How many finished requests are kept for clients to look at.
const KEEP_FINISHED: usize = 1000;

/// The application name of the daemon's own requests (deferred dismounts, evictions).
pub const SYSTEM_APPLICATION: &str = "rsmd";

/// A new request's description.
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// What it does.
    pub kind: RequestKind,
    /// The library it works on.
    pub library: Option<Guid>,
    /// The submitting session (None: the system session).
    pub session: Option<String>,
    /// Who submitted it.
    pub owner: Owner,
    /// The submitting process.
    pub pid: Option<i32>,
    /// Where a remote client is (through `rsm bridge`).
    pub client: Option<String>,
    /// Outlives its session (`nowait`).
    pub detached: bool,
    /// Its priority.
    pub priority: i32,
    /// The cartridge it moves (id).
    pub media: Option<String>,
}

impl NewRequest {
    /// A request of the daemon itself.
    pub fn system(kind: RequestKind, library: Option<Guid>, media: Option<String>) -> NewRequest {
        NewRequest {
            kind,
            library,
            session: None,
            owner: Owner { uid: 0, application: Some(SYSTEM_APPLICATION.into()) },
            pid: None,
            client: None,
            detached: true,
            priority: 0,
            media,
        }
    }
}

/// The requests table.
#[derive(Debug, Default)]
pub struct Requests {
    seed: u64,
    next: u64,
    items: BTreeMap<RequestId, RequestRecord>,
    by_guid: HashMap<Guid, RequestId>,
    /// Records changed (or removed) since the last [`Requests::take_changes`].
    dirty: Vec<RequestId>,
    /// When the oldest of those changed (the broker's clock; set by [`Requests::touch`]).
    dirty_since: Option<u64>,
    /// Requests that ended since the last [`Requests::take_ended`] (for the audit log).
    ended: Vec<RequestId>,
}

impl Requests {
    /// An empty table; public ids derive from `seed`.
    pub fn new(seed: u64) -> Requests {
        Requests { seed: seed ^ 0x5eed, ..Requests::default() }
    }

    /// Takes over the records persisted by an earlier run. Requests that had not finished when it stopped cannot
    /// go on (their callers' connections closed with it, the hardware is re-verified): each ends `Failed` with
    /// the reason stated, and is returned so that the caller can tell. Numbering continues after the highest.
    pub fn restore(&mut self, records: Vec<RequestRecord>, now: u64) -> Vec<RequestId> {
        let mut ended = Vec::new();
        for mut r in records {
            self.next = self.next.max(r.id.0);
            // Cleanings go on (the broker queues them again): RSM lost them.
            if r.state.is_open() && r.kind != RequestKind::Clean {
                let was = match r.state {
                    RequestStatus::Queued => "queued",
                    RequestStatus::Waiting => "waiting",
                    _ => "in progress",
                };
                r.error = Some(format!("rsmd restarted while the request was {was}; submit it again"));
                r.state = RequestStatus::Failed;
                r.completed = Some(now);
                ended.push(r.id);
                self.dirty.push(r.id);
            }
            self.by_guid.insert(r.guid, r.id);
            self.items.insert(r.id, r);
        }
        ended
    }

    /// Adds a queued request; returns its number.
    pub fn add(&mut self, new: NewRequest, now: u64) -> RequestId {
        self.next += 1;
        let id = RequestId(self.next);
        let guid = Guid::sequential(self.seed, self.next);
        let r = RequestRecord {
            id,
            guid,
            kind: new.kind,
            state: RequestStatus::Queued,
            library: new.library,
            session: new.session,
            owner: new.owner,
            pid: new.pid,
            client: new.client,
            detached: new.detached,
            submitted: now,
            started: None,
            completed: None,
            error: None,
            priority: new.priority,
            drive: None,
            media: new.media,
            progress: None,
        };
        self.items.insert(id, r);
        self.by_guid.insert(guid, id);
        self.dirty.push(id);
        self.trim();
        id
    }

    /// Records how far request `id` is (done of total).
    pub fn set_progress(&mut self, id: RequestId, done: u64, total: u64) {
        if self.items.get(&id).is_some_and(|r| r.progress != Some((done, total))) {
            if let Some(r) = self.get_mut(id) {
                r.progress = Some((done, total));
            }
        }
    }

    /// The open inventory requests of a library.
    pub fn open_inventories(&self, library: Guid) -> Vec<RequestId> {
        self.items
            .values()
            .filter(|r| r.library == Some(library) && r.kind == RequestKind::Inventory && r.state.is_open())
            .map(|r| r.id)
            .collect()
    }

    /// The open requests of one kind.
    pub fn open_of_kind(&self, kind: RequestKind) -> Vec<RequestId> {
        self.items.values().filter(|r| r.kind == kind && r.state.is_open()).map(|r| r.id).collect()
    }

    /// The record of request `id`.
    pub fn get(&self, id: RequestId) -> Option<&RequestRecord> {
        self.items.get(&id)
    }

    fn get_mut(&mut self, id: RequestId) -> Option<&mut RequestRecord> {
        let r = self.items.get_mut(&id)?;
        self.dirty.push(id);
        Some(r)
    }

    /// The number of the request whose public id is `text`.
    pub fn find(&self, text: &str) -> Option<RequestId> {
        text.parse::<Guid>().ok().and_then(|g| self.by_guid.get(&g).copied())
    }

    /// The public id of request `id` (empty when unknown).
    pub fn guid_of(&self, id: RequestId) -> String {
        self.items.get(&id).map(|r| r.guid.to_string()).unwrap_or_default()
    }

    /// True while request `id` has not finished.
    pub fn is_open(&self, id: RequestId) -> bool {
        self.items.get(&id).is_some_and(|r| r.state.is_open())
    }

    /// Checks that `session` (of a process of `owner`) may cancel or reorder request `text`: the session that made
    /// it may, so may the same user and application for a detached request, and an administrator may.
    pub fn check_owner(&self, text: &str, session: &str, owner: &Owner, admin: bool) -> Result<RequestId, NtmsError> {
        let id =
            self.find(text).ok_or_else(|| NtmsError::ObjectNotFound { message: format!("no request {text:?}") })?;
        let r = &self.items[&id];
        if admin || r.session.as_deref() == Some(session) || (r.detached && r.owner == *owner) {
            Ok(id)
        } else {
            Err(NtmsError::AccessDenied { message: format!("request {text} belongs to another session") })
        }
    }

    /// Marks request `id` as waiting for a resource (a cartridge another session has).
    pub fn wait(&mut self, id: RequestId) {
        if let Some(r) = self.get_mut(id) {
            r.state = RequestStatus::Waiting;
        }
    }

    /// Changes the priority of request `id`.
    pub fn set_priority(&mut self, id: RequestId, priority: i32) {
        if let Some(r) = self.get_mut(id) {
            r.priority = priority;
        }
    }

    /// Moves request `id` to `state` (and records the drive once known).
    pub fn set_state(&mut self, id: RequestId, state: RequestStatus, drive: Option<String>, now: u64) {
        if let Some(r) = self.get_mut(id) {
            if r.started.is_none() && state != RequestStatus::Queued {
                r.started = Some(now);
            }
            r.state = state;
            if drive.is_some() {
                r.drive = drive;
            }
        }
    }

    /// Finishes request `id`: complete, or failed/cancelled with an error text.
    pub fn finish(&mut self, id: RequestId, state: RequestStatus, error: Option<String>, now: u64) {
        if let Some(r) = self.get_mut(id) {
            let was_open = r.state.is_open();
            r.state = state;
            r.error = error;
            r.completed = Some(now);
            if was_open {
                self.ended.push(id);
            }
        }
    }

    /// The requests that ended since the last call (each once).
    pub fn take_ended(&mut self) -> Vec<RequestId> {
        std::mem::take(&mut self.ended)
    }

    /// Unfinished requests of a session that end with it (the detached ones go on).
    pub fn open_of_session(&self, session: &str) -> Vec<RequestId> {
        self.items
            .values()
            .filter(|r| r.session.as_deref() == Some(session) && r.state.is_open() && !r.detached)
            .map(|r| r.id)
            .collect()
    }

    /// The cartridges (ids) open requests work on.
    pub fn open_media(&self) -> std::collections::HashSet<String> {
        self.items.values().filter(|r| r.state.is_open()).filter_map(|r| r.media.clone()).collect()
    }

    fn trim(&mut self) {
        let finished: Vec<RequestId> = self.items.values().filter(|r| !r.state.is_open()).map(|r| r.id).collect();
        if finished.len() > KEEP_FINISHED {
            for id in &finished[..finished.len() - KEEP_FINISHED] {
                if let Some(r) = self.items.remove(id) {
                    self.by_guid.remove(&r.guid);
                }
                self.dirty.push(*id);
            }
        }
    }

    /// Cancels request `id` if it has not finished.
    pub fn cancel(&mut self, id: RequestId, now: u64) -> Result<(), NtmsError> {
        let r = self.get_mut(id).ok_or_else(|| NtmsError::ObjectNotFound { message: format!("no request {id:?}") })?;
        if r.state.is_open() {
            r.state = RequestStatus::Cancelled;
            r.completed = Some(now);
            self.ended.push(id);
            Ok(())
        } else {
            Err(NtmsError::InvalidOperation { message: format!("request {} already finished", r.guid) })
        }
    }

    /// The inventory requests of `library` in progress now (those a scan that just came in answers).
    pub fn inventories_in_progress(&self, library: Guid) -> Vec<RequestId> {
        self.items
            .values()
            .filter(|r| {
                r.library == Some(library) && r.kind == RequestKind::Inventory && r.state == RequestStatus::InProgress
            })
            .map(|r| r.id)
            .collect()
    }

    /// Completes those of `ids` still in progress, but `except`; returns their public ids.
    pub fn finish_inventories(&mut self, ids: &[RequestId], now: u64, except: &[RequestId]) -> Vec<String> {
        let ids: Vec<RequestId> = ids
            .iter()
            .copied()
            .filter(|id| !except.contains(id))
            .filter(|id| self.items.get(id).is_some_and(|r| r.state == RequestStatus::InProgress))
            .collect();
        ids.into_iter().map(|id| self.finish_one(id, RequestStatus::Complete, None, now)).collect()
    }

    /// Fails every unfinished request of a library that is not a job of its own (jobs end through their
    /// outcome); returns their public ids.
    pub fn fail_library(&mut self, library: Guid, why: &str, now: u64) -> Vec<String> {
        let ids: Vec<RequestId> = self
            .items
            .values()
            .filter(|r| r.library == Some(library) && r.state.is_open() && r.kind == RequestKind::Inventory)
            .map(|r| r.id)
            .collect();
        ids.into_iter().map(|id| self.finish_one(id, RequestStatus::Failed, Some(why.into()), now)).collect()
    }

    fn finish_one(&mut self, id: RequestId, state: RequestStatus, error: Option<String>, now: u64) -> String {
        self.finish(id, state, error, now);
        self.guid_of(id)
    }

    /// True when records changed since the last [`Requests::take_changes`].
    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Notes the time of a change (the first since the last [`Requests::take_changes`] starts the clock).
    pub fn touch(&mut self, now: u64) {
        if !self.dirty.is_empty() && self.dirty_since.is_none() {
            self.dirty_since = Some(now);
        }
    }

    /// Since when changes wait to be written.
    pub fn dirty_since(&self) -> Option<u64> {
        self.dirty_since
    }

    /// The store changes for the records changed since the last call.
    pub fn take_changes(&mut self) -> Vec<Change> {
        self.dirty_since = None;
        let mut ids = std::mem::take(&mut self.dirty);
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .map(|id| match self.items.get(&id) {
                Some(r) => Change::Request(r.clone()),
                None => Change::RemoveRequest(id),
            })
            .collect()
    }

    /// Request `text` (its public id) as a wire object.
    pub fn object(&self, text: &str) -> Option<ObjectInfo> {
        self.find(text).and_then(|id| self.items.get(&id)).map(Self::to_object)
    }

    /// The requests as wire objects.
    pub fn objects(&self) -> Vec<ObjectInfo> {
        self.items.values().map(Self::to_object).collect()
    }

    fn to_object(r: &RequestRecord) -> ObjectInfo {
        let operation = operation(r.kind);
        let state = state(r.state);
        ObjectInfo {
            id: r.guid.to_string(),
            name: format!("{operation:?} request").to_lowercase(),
            description: String::new(),
            object_type: crate::proto::ObjectType::LibRequest,
            enabled: true,
            state: status_name(r.state).into(),
            created: r.submitted,
            modified: r.completed.or(r.started).unwrap_or(r.submitted),
            version: None,
            details: ObjectDetails::LibRequest(LibRequestDetails {
                operation,
                state,
                priority: r.priority,
                submitted: r.submitted,
                started: r.started,
                completed: r.completed,
                library: r.library.map(|l| l.to_string()),
                drive: r.drive.clone(),
                media: r.media.clone(),
                application: r.owner.application.clone(),
                uid: Some(r.owner.uid),
                client: r.client.clone(),
                error: r.error.clone(),
                done: r.progress.map(|p| p.0),
                total: r.progress.map(|p| p.1),
            }),
        }
    }
}

/// A request state as the objects' `state` text shows it (the same words as the wire's `RequestState`).
pub fn status_name(s: RequestStatus) -> &'static str {
    match s {
        RequestStatus::Queued => "queued",
        RequestStatus::InProgress => "in_progress",
        RequestStatus::Waiting => "waiting",
        RequestStatus::Complete => "complete",
        RequestStatus::Failed => "failed",
        RequestStatus::Cancelled => "cancelled",
    }
}

/// A request kind as people read it.
pub fn kind_name(k: RequestKind) -> &'static str {
    match k {
        RequestKind::Mount => "mount",
        RequestKind::Dismount => "dismount",
        RequestKind::Inject => "inject",
        RequestKind::Eject => "eject",
        RequestKind::Inventory => "inventory",
        RequestKind::Clean => "clean",
        RequestKind::Door => "door",
        RequestKind::Allocate => "allocate",
        RequestKind::Move => "move",
    }
}

/// The wire name of a request kind.
pub fn operation(kind: RequestKind) -> RequestOperation {
    match kind {
        RequestKind::Mount => RequestOperation::Mount,
        RequestKind::Dismount => RequestOperation::Dismount,
        RequestKind::Inject => RequestOperation::Inject,
        RequestKind::Eject => RequestOperation::Eject,
        RequestKind::Inventory => RequestOperation::Inventory,
        RequestKind::Clean => RequestOperation::Clean,
        RequestKind::Door => RequestOperation::Door,
        RequestKind::Allocate => RequestOperation::Allocate,
        RequestKind::Move => RequestOperation::Move,
    }
}

/// The wire name of a request state.
pub fn state(s: RequestStatus) -> RequestState {
    match s {
        RequestStatus::Queued => RequestState::Queued,
        RequestStatus::InProgress => RequestState::InProgress,
        RequestStatus::Waiting => RequestState::Waiting,
        RequestStatus::Complete => RequestState::Complete,
        RequestStatus::Failed => RequestState::Failed,
        RequestStatus::Cancelled => RequestState::Cancelled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by(session: &str) -> NewRequest {
        NewRequest {
            kind: RequestKind::Inventory,
            library: Some(Guid::derive("library", "x")),
            session: Some(session.into()),
            owner: Owner { uid: 1000, application: Some("app".into()) },
            pid: Some(42),
            client: None,
            detached: false,
            priority: 0,
            media: None,
        }
    }

    #[test]
    fn lifecycle_cancellation_and_persistence() {
        let mut r = Requests::new(1);
        let lib = Guid::derive("library", "x");
        let a = r.add(by("s1"), 5);
        let b = r.add(by("s2"), 6);
        r.set_state(a, RequestStatus::InProgress, None, 7);
        assert_eq!(r.open_of_session("s2"), vec![b]);
        r.cancel(b, 8).unwrap();
        let answers = r.inventories_in_progress(lib);
        assert_eq!(r.finish_inventories(&answers, 9, &[]), vec![r.guid_of(a)]);
        assert!(matches!(r.cancel(a, 10), Err(NtmsError::InvalidOperation { .. })));
        assert_eq!(r.find("nope"), None);
        assert_eq!(r.find(&r.guid_of(b)), Some(b));
        let objs = r.objects();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0].state, "complete");
        assert_eq!(objs[1].state, "cancelled");
        // Every change reaches the store once per batch, as the record it reached.
        let changes = r.take_changes();
        assert_eq!(changes.len(), 2);
        assert!(matches!(&changes[1], Change::Request(rec) if rec.state == RequestStatus::Cancelled));
        assert!(r.take_changes().is_empty());
    }

    #[test]
    fn a_restart_fails_open_requests_with_the_reason_and_keeps_numbering() {
        let mut before = Requests::new(1);
        let done = before.add(by("s"), 1);
        before.finish(done, RequestStatus::Complete, None, 2);
        let queued = before.add(by("s"), 3);
        let running = before.add(by("s"), 4);
        before.set_state(running, RequestStatus::InProgress, None, 5);
        let records: Vec<RequestRecord> = before.items.values().cloned().collect();
        let mut after = Requests::new(2);
        assert_eq!(after.restore(records, 100), vec![queued, running]);
        let q = after.get(queued).unwrap();
        assert_eq!(q.state, RequestStatus::Failed);
        assert!(q.error.as_deref().unwrap().contains("restarted while the request was queued"), "{q:?}");
        assert!(after.get(running).unwrap().error.as_deref().unwrap().contains("in progress"));
        assert_eq!(after.get(done).unwrap().state, RequestStatus::Complete);
        assert_eq!(after.take_changes().len(), 2, "the two ended requests are written back");
        assert!(after.add(by("s"), 101) > running);
    }

    #[test]
    fn detached_requests_outlive_their_session_and_stay_their_owners() {
        let mut r = Requests::new(1);
        let owner = Owner { uid: 1000, application: Some("app".into()) };
        let d = r.add(NewRequest { detached: true, ..by("s1") }, 1);
        assert!(r.open_of_session("s1").is_empty());
        let text = r.guid_of(d);
        assert_eq!(r.check_owner(&text, "s2", &owner, false), Ok(d), "same user and application, later session");
        let other = Owner { uid: 1001, ..owner.clone() };
        assert!(matches!(r.check_owner(&text, "s2", &other, false), Err(NtmsError::AccessDenied { .. })));
        assert_eq!(r.check_owner(&text, "s3", &other, true), Ok(d));
    }
}
