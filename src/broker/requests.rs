//! Library requests (`NTMS_LIBREQUEST`): what clients asked the libraries to do, with their state, visible as
//! objects and cancellable while queued.

use std::collections::BTreeMap;

use crate::model::Guid;
use crate::proto::types::{LibRequestDetails, ObjectDetails, ObjectInfo, RequestOperation, RequestState};
use crate::proto::NtmsError;

#[derive(Debug, Clone)]
struct Request {
    id: Guid,
    operation: RequestOperation,
    state: RequestState,
    library: Option<Guid>,
    session: String,
    application: Option<String>,
    submitted: u64,
    started: Option<u64>,
    completed: Option<u64>,
    error: Option<String>,
    priority: i32,
    drive: Option<String>,
    media: Option<String>,
}

/// The requests table.
#[derive(Debug, Default)]
pub struct Requests {
    seed: u64,
    next: u64,
    items: BTreeMap<u64, Request>,
}

/// How many finished requests are kept for clients to look at.
const KEEP_FINISHED: usize = 1000;

impl Requests {
    /// An empty table; ids derive from `seed`.
    pub fn new(seed: u64) -> Requests {
        Requests { seed: seed ^ 0x5eed, ..Requests::default() }
    }

    /// Adds a queued request; returns its id.
    pub fn add(
        &mut self,
        operation: RequestOperation,
        library: Option<Guid>,
        session: &str,
        application: Option<String>,
        now: u64,
    ) -> String {
        self.next += 1;
        let id = Guid::sequential(self.seed, self.next);
        self.items.insert(
            self.next,
            Request {
                id,
                operation,
                state: RequestState::Queued,
                library,
                session: session.into(),
                application,
                submitted: now,
                started: None,
                completed: None,
                error: None,
                priority: 0,
                drive: None,
                media: None,
            },
        );
        self.trim();
        id.to_string()
    }

    /// The internal key of the request added last.
    pub fn last_key(&self) -> u64 {
        self.next
    }

    /// The internal key of request `id`.
    pub fn key_of(&self, id: &str) -> Option<u64> {
        self.items.iter().find(|(_, r)| r.id.to_string() == id).map(|(k, _)| *k)
    }

    /// The public id of request `key`.
    pub fn id_of(&self, key: u64) -> Option<String> {
        self.items.get(&key).map(|r| r.id.to_string())
    }

    /// The session that made request `key`.
    pub fn session_of(&self, key: u64) -> Option<&str> {
        self.items.get(&key).map(|r| r.session.as_str())
    }

    /// True while request `key` has not finished.
    pub fn is_open(&self, key: u64) -> bool {
        self.items
            .get(&key)
            .is_some_and(|r| matches!(r.state, RequestState::Queued | RequestState::Waiting | RequestState::InProgress))
    }

    /// The operation of request `key`.
    pub fn operation_of(&self, key: u64) -> Option<RequestOperation> {
        self.items.get(&key).map(|r| r.operation)
    }

    /// Checks that `session` may cancel or reorder request `id`: the session that made it may, and an
    /// administrator may.
    pub fn check_owner(&self, id: &str, session: &str, admin: bool) -> Result<(), NtmsError> {
        let r = self
            .items
            .values()
            .find(|r| r.id.to_string() == id)
            .ok_or_else(|| NtmsError::ObjectNotFound { message: format!("no request {id:?}") })?;
        if r.session == session || admin {
            Ok(())
        } else {
            Err(NtmsError::AccessDenied { message: format!("request {id} belongs to another session") })
        }
    }

    /// Marks request `key` as waiting for a resource (a cartridge another session has).
    pub fn wait(&mut self, key: u64) {
        if let Some(r) = self.items.get_mut(&key) {
            r.state = RequestState::Waiting;
        }
    }

    /// Changes the priority of request `key`.
    pub fn set_priority(&mut self, key: u64, priority: i32) {
        if let Some(r) = self.items.get_mut(&key) {
            r.priority = priority;
        }
    }

    /// Sets the details of request `key`.
    pub fn describe(&mut self, key: u64, priority: i32, media: Option<String>, drive: Option<String>) {
        if let Some(r) = self.items.get_mut(&key) {
            r.priority = priority;
            r.media = media;
            r.drive = drive;
        }
    }

    /// Moves request `key` to `state` (and records the drive once known).
    pub fn set_state(&mut self, key: u64, state: RequestState, drive: Option<String>, now: u64) {
        if let Some(r) = self.items.get_mut(&key) {
            if r.started.is_none() && state != RequestState::Queued {
                r.started = Some(now);
            }
            r.state = state;
            if drive.is_some() {
                r.drive = drive;
            }
        }
    }

    /// Finishes request `key`: complete, or failed/cancelled with an error text.
    pub fn finish(&mut self, key: u64, state: RequestState, error: Option<String>, now: u64) {
        if let Some(r) = self.items.get_mut(&key) {
            r.state = state;
            r.error = error;
            r.completed = Some(now);
        }
    }

    /// Unfinished requests of a session (keys).
    pub fn open_of_session(&self, session: &str) -> Vec<u64> {
        self.items
            .iter()
            .filter(|(_, r)| r.session == session)
            .filter(|(_, r)| matches!(r.state, RequestState::Queued | RequestState::Waiting | RequestState::InProgress))
            .map(|(k, _)| *k)
            .collect()
    }

    fn trim(&mut self) {
        let finished: Vec<u64> = self
            .items
            .iter()
            .filter(|(_, r)| matches!(r.state, RequestState::Complete | RequestState::Failed | RequestState::Cancelled))
            .map(|(k, _)| *k)
            .collect();
        if finished.len() > KEEP_FINISHED {
            for k in &finished[..finished.len() - KEEP_FINISHED] {
                self.items.remove(k);
            }
        }
    }

    fn find(&mut self, id: &str) -> Option<&mut Request> {
        self.items.values_mut().find(|r| r.id.to_string() == id)
    }

    /// Marks a request started.
    pub fn start(&mut self, id: &str, now: u64) {
        if let Some(r) = self.find(id) {
            r.state = RequestState::InProgress;
            r.started = Some(now);
        }
    }

    /// Cancels a request that has not finished.
    pub fn cancel(&mut self, id: &str, now: u64) -> Result<(), NtmsError> {
        let r = self.find(id).ok_or_else(|| NtmsError::ObjectNotFound { message: format!("no request {id:?}") })?;
        match r.state {
            RequestState::Queued | RequestState::Waiting | RequestState::InProgress => {
                r.state = RequestState::Cancelled;
                r.completed = Some(now);
                Ok(())
            }
            _ => Err(NtmsError::InvalidOperation { message: format!("request {id} already finished") }),
        }
    }

    /// Cancels the unfinished requests of a session; returns their ids.
    pub fn cancel_session(&mut self, session: &str, now: u64) -> Vec<String> {
        let mut out = Vec::new();
        for r in self.items.values_mut().filter(|r| r.session == session) {
            if matches!(r.state, RequestState::Queued | RequestState::Waiting) {
                r.state = RequestState::Cancelled;
                r.completed = Some(now);
                out.push(r.id.to_string());
            }
        }
        out
    }

    /// Completes the running inventories of a library; returns their ids.
    pub fn finish_inventory(&mut self, library: Guid, now: u64) -> Vec<String> {
        let mut out = Vec::new();
        for r in self.items.values_mut() {
            if r.library == Some(library)
                && r.operation == RequestOperation::Inventory
                && r.state == RequestState::InProgress
            {
                r.state = RequestState::Complete;
                r.completed = Some(now);
                out.push(r.id.to_string());
            }
        }
        out
    }

    /// Fails every unfinished request of a library.
    pub fn fail_library(&mut self, library: Guid, why: &str, now: u64) -> Vec<String> {
        let mut out = Vec::new();
        for r in self.items.values_mut().filter(|r| r.library == Some(library)) {
            if matches!(r.state, RequestState::Queued | RequestState::Waiting | RequestState::InProgress) {
                r.state = RequestState::Failed;
                r.error = Some(why.into());
                r.completed = Some(now);
                out.push(r.id.to_string());
            }
        }
        out
    }

    /// Request `id` as a wire object.
    pub fn object(&self, id: &str) -> Option<ObjectInfo> {
        self.items.values().find(|r| r.id.to_string() == id).map(Self::to_object)
    }

    /// The requests as wire objects.
    pub fn objects(&self) -> Vec<ObjectInfo> {
        self.items.values().map(Self::to_object).collect()
    }

    fn to_object(r: &Request) -> ObjectInfo {
        {
            ObjectInfo {
                id: r.id.to_string(),
                name: format!("{:?} request", r.operation).to_lowercase(),
                description: String::new(),
                object_type: crate::proto::ObjectType::LibRequest,
                enabled: true,
                state: format!("{:?}", r.state).to_lowercase(),
                created: r.submitted,
                modified: r.completed.or(r.started).unwrap_or(r.submitted),
                details: ObjectDetails::LibRequest(LibRequestDetails {
                    operation: r.operation,
                    state: r.state,
                    priority: r.priority,
                    submitted: r.submitted,
                    started: r.started,
                    completed: r.completed,
                    library: r.library.map(|l| l.to_string()),
                    drive: r.drive.clone(),
                    media: r.media.clone(),
                    application: r.application.clone(),
                    uid: None,
                    error: r.error.clone(),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_and_cancellation() {
        let mut r = Requests::new(1);
        let lib = Guid::derive("library", "x");
        let a = r.add(RequestOperation::Inventory, Some(lib), "s1", None, 5);
        let b = r.add(RequestOperation::Inventory, Some(lib), "s2", None, 6);
        r.start(&a, 7);
        assert_eq!(r.cancel_session("s2", 8), vec![b.clone()]);
        assert_eq!(r.finish_inventory(lib, 9), vec![a.clone()]);
        assert!(matches!(r.cancel(&a, 10), Err(NtmsError::InvalidOperation { .. })));
        assert!(matches!(r.cancel("nope", 10), Err(NtmsError::ObjectNotFound { .. })));
        let objs = r.objects();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0].state, "complete");
        assert_eq!(objs[1].state, "cancelled");
    }
}
