//! Operator requests (`NTMS_OPREQUEST`): calls for a person to do something in front of the library — bring an
//! offline cartridge, empty the mail slots, put in new media or a cleaner, service a drive — or an application's
//! own message. Submit, Wait, Satisfy, Refuse and Cancel as in RSM, plus what RSM lacked: every request is
//! persisted the moment it is acknowledged, and the broker continues (or fails) the work that waits for one.
//!
//! The broker raises requests itself where RSM did ([`Broker::raise_operator`]); each one names the library
//! request that waits for it (`waiting`). A request whose waiting work went on without the operator (the
//! cartridge came back, the mail slots were emptied) is satisfied by the daemon; one whose work ended (cancelled,
//! timed out) is cancelled with it. Raising one logs a NOTICE line for the journal.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use super::dispatch::Answer;
use super::mounting::err;
use super::requests::SYSTEM_APPLICATION;
use super::session::Peer;
use super::Broker;
use crate::model::{Change, Guid, OperatorKind, OperatorRecord, OperatorState, Owner, RequestId, RequestStatus};
use crate::proto::types::{
    NotificationOperation, ObjectDetails, ObjectInfo, OpRequestDetails, OpRequestKind, OpRequestState,
};
use crate::proto::{NtmsError, ObjectType, WireError};

/// The log target of lines an operator must see (journal priority 5, NOTICE): `log::info!(target: NOTICE_TARGET,
/// ...)`. Operator requests are announced this way.
pub const NOTICE_TARGET: &str = "rsmd::notice";
/// How long answered requests are kept for people to look at (7 days).
const KEEP_ANSWERED_MS: u64 = 7 * 24 * 3600 * 1000;
/// At most this many answered requests are kept (the oldest go first).
const KEEP_ANSWERED: usize = 1000;
/// How often answered requests are purged.
const PURGE_EVERY_MS: u64 = 60_000;
/// Longest text an application may submit.
pub const MAX_TEXT: usize = 1024;
/// Keys of `WaitForOperatorRequest` calls live above every library request number.
const WAIT_KEYS: u64 = 1 << 62;

/// The operator requests table.
#[derive(Debug, Default)]
pub struct Operators {
    seed: u64,
    next: u64,
    items: BTreeMap<u64, OperatorRecord>,
    by_guid: HashMap<Guid, u64>,
    /// When answered requests are purged next (the loop's clock).
    next_purge: u64,
}

impl Operators {
    /// An empty table; public ids derive from `seed`.
    pub fn new(seed: u64) -> Operators {
        Operators { seed: seed ^ 0x0be7a70e, ..Operators::default() }
    }

    /// Takes over the records persisted by an earlier run. A request raised for work that could not survive the
    /// restart (a mount's or an eject's call, whose connection closed with it) is cancelled, and returned; the
    /// others (messages, cleaners, device service) stay active for the operator.
    pub fn restore(&mut self, records: Vec<OperatorRecord>, open: impl Fn(RequestId) -> bool, now: u64) -> Vec<u64> {
        let mut ended = Vec::new();
        for mut r in records {
            self.next = self.next.max(r.number);
            if r.state == OperatorState::Active && r.waiting.is_some_and(|w| !open(w)) {
                r.state = OperatorState::Cancelled;
                r.completed = Some(now);
                r.reason = Some("rsmd restarted: the work that waited for it ended".into());
                ended.push(r.number);
            }
            self.by_guid.insert(r.guid, r.number);
            self.items.insert(r.number, r);
        }
        ended
    }

    /// Adds an active request; returns its number.
    fn add(&mut self, mut r: OperatorRecord) -> u64 {
        self.next += 1;
        r.number = self.next;
        r.guid = Guid::sequential(self.seed, self.next);
        self.by_guid.insert(r.guid, r.number);
        self.items.insert(r.number, r);
        self.next
    }

    /// Request `number`.
    pub fn get(&self, number: u64) -> Option<&OperatorRecord> {
        self.items.get(&number)
    }

    /// The request named by `text`: its number or its id.
    pub fn find(&self, text: &str) -> Option<u64> {
        match text.parse::<u64>() {
            Ok(n) => self.items.contains_key(&n).then_some(n),
            Err(_) => text.parse::<Guid>().ok().and_then(|g| self.by_guid.get(&g).copied()),
        }
    }

    /// The active requests.
    pub fn active(&self) -> impl Iterator<Item = &OperatorRecord> {
        self.items.values().filter(|r| r.state == OperatorState::Active)
    }

    /// Answered requests older than the keep time, and beyond the number kept: removed, their numbers returned.
    fn purge(&mut self, now: u64) -> Vec<u64> {
        let answered: Vec<(u64, u64)> = self
            .items
            .values()
            .filter(|r| r.state != OperatorState::Active)
            .map(|r| (r.completed.unwrap_or(r.submitted), r.number))
            .collect();
        let excess = answered.len().saturating_sub(KEEP_ANSWERED);
        let mut sorted = answered;
        sorted.sort_unstable();
        let gone: Vec<u64> = sorted
            .iter()
            .enumerate()
            .filter(|(i, (at, _))| *i < excess || at.saturating_add(KEEP_ANSWERED_MS) <= now)
            .map(|(_, (_, n))| *n)
            .collect();
        for n in &gone {
            if let Some(r) = self.items.remove(n) {
                self.by_guid.remove(&r.guid);
            }
        }
        gone
    }

    /// Every request as a wire object, newest first.
    pub fn objects(&self) -> Vec<ObjectInfo> {
        self.items.values().rev().map(object).collect()
    }

    /// Request `text` (number or id) as a wire object.
    pub fn object(&self, text: &str) -> Option<ObjectInfo> {
        self.find(text).and_then(|n| self.items.get(&n)).map(object)
    }
}

/// The wire kind of an operator request.
pub fn wire_kind(k: OperatorKind) -> OpRequestKind {
    match k {
        OperatorKind::Message => OpRequestKind::Message,
        OperatorKind::NewMedia => OpRequestKind::NewMedia,
        OperatorKind::Cleaner => OpRequestKind::Cleaner,
        OperatorKind::DeviceService => OpRequestKind::DeviceService,
        OperatorKind::MoveMedia => OpRequestKind::MoveMedia,
    }
}

fn model_kind(k: OpRequestKind) -> OperatorKind {
    match k {
        OpRequestKind::Message => OperatorKind::Message,
        OpRequestKind::NewMedia => OperatorKind::NewMedia,
        OpRequestKind::Cleaner => OperatorKind::Cleaner,
        OpRequestKind::DeviceService => OperatorKind::DeviceService,
        OpRequestKind::MoveMedia => OperatorKind::MoveMedia,
    }
}

fn wire_state(s: OperatorState) -> OpRequestState {
    match s {
        OperatorState::Active => OpRequestState::Active,
        OperatorState::Satisfied => OpRequestState::Satisfied,
        OperatorState::Refused => OpRequestState::Refused,
        OperatorState::Cancelled => OpRequestState::Cancelled,
    }
}

/// The name of a state, as `rsm operator` and the log print it.
pub fn state_name(s: OperatorState) -> &'static str {
    match s {
        OperatorState::Active => "active",
        OperatorState::Satisfied => "satisfied",
        OperatorState::Refused => "refused",
        OperatorState::Cancelled => "cancelled",
    }
}

fn object(r: &OperatorRecord) -> ObjectInfo {
    let state = wire_state(r.state);
    ObjectInfo {
        id: r.guid.to_string(),
        name: format!("operator request {}", r.number),
        description: r.text.clone(),
        object_type: ObjectType::OpRequest,
        enabled: true,
        state: state_name(r.state).into(),
        created: r.submitted,
        modified: r.completed.unwrap_or(r.submitted),
        version: None,
        details: ObjectDetails::OpRequest(OpRequestDetails {
            kind: wire_kind(r.kind),
            state,
            text: r.text.clone(),
            object: r.object.clone(),
            submitted: r.submitted,
            application: r.owner.application.clone(),
            uid: Some(r.owner.uid),
            number: Some(r.number),
            library: r.library.map(|l| l.to_string()),
            completed: r.completed,
            answered_by: r.answered_by,
            reason: r.reason.clone(),
        }),
    }
}

/// A `WaitForOperatorRequest` call waiting for an answer.
#[derive(Debug, Clone)]
pub struct OpWait {
    /// The reply's key.
    pub key: RequestId,
    /// The request it waits for.
    pub number: u64,
    /// The waiting session.
    pub session: String,
    /// When it gives up (`Timeout`).
    pub deadline: Option<u64>,
}

/// The reply to a wait for a request that reached `r`'s state: satisfied → `{state}`; refused →
/// `RequestRefused`; cancelled → `Cancelled`.
fn outcome(r: &OperatorRecord) -> Result<Map<String, Value>, WireError> {
    let why = |d: &str| r.reason.clone().unwrap_or_else(|| d.to_owned());
    match r.state {
        OperatorState::Satisfied | OperatorState::Active => {
            let mut m = Map::new();
            m.insert("state".into(), Value::String(state_name(r.state).into()));
            Ok(m)
        }
        OperatorState::Refused => Err(WireError::Ntms(NtmsError::RequestRefused {
            message: format!("operator request {} was refused: {}", r.number, why("no reason given")),
        })),
        OperatorState::Cancelled => Err(WireError::Ntms(NtmsError::Cancelled {
            message: format!("operator request {} was cancelled: {}", r.number, why("withdrawn")),
        })),
    }
}

impl Broker {
    /// Raises a request of the daemon's own (one per kind, object and waiting work: raising it again returns the
    /// active one): persisted, announced to clients, and logged as a NOTICE for the journal.
    pub fn raise_operator(
        &mut self,
        kind: OperatorKind,
        text: String,
        object: Option<String>,
        library: Option<Guid>,
        waiting: Option<RequestId>,
    ) -> u64 {
        if let Some(r) = self.operators.active().find(|r| {
            r.kind == kind && r.object == object && r.waiting == waiting && r.session.is_none() && r.text == text
        }) {
            return r.number;
        }
        let owner = Owner { uid: 0, application: Some(SYSTEM_APPLICATION.into()) };
        self.add_operator(kind, text, object, library, owner, None, waiting)
    }

    #[allow(clippy::too_many_arguments)]
    fn add_operator(
        &mut self,
        kind: OperatorKind,
        text: String,
        object: Option<String>,
        library: Option<Guid>,
        owner: Owner,
        session: Option<String>,
        waiting: Option<RequestId>,
    ) -> u64 {
        let r = OperatorRecord {
            number: 0,
            guid: Guid::default(),
            kind,
            state: OperatorState::Active,
            text,
            object,
            library,
            owner,
            session,
            waiting,
            submitted: self.now_unix(),
            completed: None,
            answered_by: None,
            reason: None,
        };
        let n = self.operators.add(r);
        let r = &self.operators.items[&n];
        log::info!(
            target: NOTICE_TARGET,
            "operator request {n} ({}, from {}): {} — `rsm satisfy {n}` when done, `rsm refuse {n}` if it cannot be",
            kind_text(kind),
            super::mounting::owner_text(&r.owner),
            r.text
        );
        let (guid, rec) = (r.guid.to_string(), r.clone());
        self.changes.push(Change::Operator(rec));
        self.note(NotificationOperation::Insert, ObjectType::OpRequest, guid);
        n
    }

    /// Ends request `number` in `state` (by user `by`, or the daemon), persisted and announced; the calls waiting
    /// for it are answered. Returns false when it was not active.
    pub fn end_operator(&mut self, number: u64, state: OperatorState, by: Option<u32>, reason: Option<String>) -> bool {
        let now = self.now_unix();
        let Some(r) = self.operators.items.get_mut(&number).filter(|r| r.state == OperatorState::Active) else {
            return false;
        };
        r.state = state;
        r.completed = Some(now);
        r.answered_by = by;
        r.reason = reason;
        let (rec, guid) = (r.clone(), r.guid.to_string());
        log::info!(
            "audit: operator request {number} {}{}{}",
            state_name(state),
            by.map(|u| format!(" by uid {u}")).unwrap_or_default(),
            rec.reason.as_deref().map(|w| format!(": {w}")).unwrap_or_default()
        );
        self.changes.push(Change::Operator(rec.clone()));
        self.note(NotificationOperation::Update, ObjectType::OpRequest, guid);
        let batch = self.batch_for_reply();
        let (done, keep): (Vec<OpWait>, Vec<OpWait>) =
            std::mem::take(&mut self.op_waits).into_iter().partition(|w| w.number == number);
        self.op_waits = keep;
        for w in done {
            self.completions.push_back((w.key, outcome(&rec), batch));
        }
        true
    }

    /// `SubmitOperatorRequest`: an application's request to the operators (any session may submit).
    pub fn submit_operator(
        &mut self,
        session: &str,
        kind: OpRequestKind,
        text: &str,
        object: Option<&str>,
    ) -> Result<Map<String, Value>, NtmsError> {
        let text = text.trim();
        if text.is_empty() || text.len() > MAX_TEXT || text.chars().any(char::is_control) {
            return Err(NtmsError::InvalidParameter {
                message: format!("text must be 1 to {MAX_TEXT} bytes of printable characters"),
            });
        }
        let object = match object {
            None => None,
            Some(o) => match self.with_view(|v| v.find(o)) {
                Some(info) => Some(info.id),
                None => return Err(NtmsError::ObjectNotFound { message: format!("no object {o:?}") }),
            },
        };
        let library = object.as_deref().and_then(|o| self.library_of_object(o));
        let owner = self.owner_of(session);
        let n =
            self.add_operator(model_kind(kind), text.to_owned(), object, library, owner, Some(session.into()), None);
        Ok(self.operator_reply(n))
    }

    fn operator_reply(&self, n: u64) -> Map<String, Value> {
        let mut m = Map::new();
        if let Some(r) = self.operators.get(n) {
            m.insert("request".into(), Value::String(r.guid.to_string()));
            m.insert("number".into(), Value::from(n));
        }
        m
    }

    /// The library an object (cartridge, element, library) belongs to.
    fn library_of_object(&self, id: &str) -> Option<Guid> {
        let inv = self.inventory.as_ref()?;
        let g: Guid = id.parse().ok()?;
        if inv.library(g).is_some() {
            return Some(g);
        }
        if let Some(e) = inv.element_by_id(g) {
            return Some(e.library);
        }
        inv.medium(g).and_then(|m| m.location.or(m.home)).map(|l| l.library)
    }

    /// `WaitForOperatorRequest`: answers when the request is answered (`{state: satisfied}`, `RequestRefused`,
    /// `Cancelled`), or with `Timeout`.
    pub fn wait_operator(&mut self, session: &str, text: &str, timeout_ms: Option<u64>) -> Answer {
        let Some(n) = self.operators.find(text) else {
            return err(NtmsError::ObjectNotFound { message: format!("no operator request {text:?}") });
        };
        let r = &self.operators.items[&n];
        if r.state != OperatorState::Active {
            return Answer::Reply(outcome(r), 0);
        }
        if timeout_ms == Some(0) {
            return err(NtmsError::Timeout { message: format!("operator request {n} is not answered yet") });
        }
        self.op_wait_seq += 1;
        let key = RequestId(WAIT_KEYS + self.op_wait_seq);
        let deadline = timeout_ms.map(|t| self.now.saturating_add(t));
        self.op_waits.push(OpWait { key, number: n, session: session.into(), deadline });
        Answer::Later { key }
    }

    /// `SatisfyOperatorRequest` / `RefuseOperatorRequest`: the operator's answer. Needs the control right on the
    /// request's library (any library's for a request without one), as operators have.
    pub fn answer_operator(
        &mut self,
        peer: Peer,
        text: &str,
        satisfied: bool,
        reason: Option<&str>,
    ) -> Result<Map<String, Value>, NtmsError> {
        let n = self.active_operator(text)?;
        let r = &self.operators.items[&n];
        let control = super::access::Rights::CONTROL;
        let allowed = self.is_admin(peer)
            || match r.library {
                Some(l) => self.library_rights(peer, l).contains(control),
                None => self.libs.iter().filter_map(|l| l.id).any(|l| self.library_rights(peer, l).contains(control)),
            };
        if !allowed {
            return Err(NtmsError::AccessDenied {
                message: format!("uid {} has no control right on the library: operators answer requests", peer.uid),
            });
        }
        let (state, why) = if satisfied {
            (OperatorState::Satisfied, None)
        } else {
            (OperatorState::Refused, Some(reason.map_or_else(|| "refused by the operator".into(), str::to_owned)))
        };
        let waiting = r.waiting;
        self.end_operator(n, state, Some(peer.uid), why.clone());
        if let Some(key) = waiting {
            self.operator_answered(key, satisfied, why.unwrap_or_default());
        }
        Ok(Map::new())
    }

    /// The number of the active operator request `text` names (`ObjectNotFound`, or `InvalidState` when answered).
    fn active_operator(&self, text: &str) -> Result<u64, NtmsError> {
        let Some(n) = self.operators.find(text) else {
            return Err(NtmsError::ObjectNotFound { message: format!("no operator request {text:?}") });
        };
        let r = &self.operators.items[&n];
        if r.state != OperatorState::Active {
            return Err(NtmsError::InvalidState {
                message: format!("operator request {n} is {} already", state_name(r.state)),
            });
        }
        Ok(n)
    }

    /// `CancelOperatorRequest`: its submitter withdraws it (an administrator may withdraw any; the work that
    /// waited for a daemon's request fails `Cancelled`).
    pub fn cancel_operator(&mut self, session: &str, peer: Peer, text: &str) -> Result<Map<String, Value>, NtmsError> {
        let n = self.active_operator(text)?;
        let r = &self.operators.items[&n];
        let mine = r.session.as_deref() == Some(session) || (r.session.is_some() && r.owner == self.owner_of(session));
        if !mine && !self.is_admin(peer) {
            return Err(NtmsError::AccessDenied {
                message: format!("operator request {n} was submitted by {}", super::mounting::owner_text(&r.owner)),
            });
        }
        let waiting = r.waiting;
        self.end_operator(n, OperatorState::Cancelled, Some(peer.uid), Some("cancelled by its submitter".into()));
        if let Some(key) = waiting {
            self.work_ends(key, NtmsError::Cancelled { message: format!("operator request {n} was cancelled") });
        }
        Ok(Map::new())
    }

    /// The operator answered a request that library request `key` waits for: satisfied, the libraries are
    /// read again (the operator did something in them) and the work goes on; refused, it fails `RequestRefused`.
    fn operator_answered(&mut self, key: RequestId, satisfied: bool, reason: String) {
        if satisfied {
            self.rescan_for(key);
        } else {
            self.work_ends(key, NtmsError::RequestRefused { message: format!("the operator refused: {reason}") });
        }
    }

    /// Ends the work of library request `key` that waits for an operator with `e`.
    fn work_ends(&mut self, key: RequestId, e: NtmsError) {
        if self.parked.iter().any(|p| p.key == key) {
            self.end_parked(key, e);
        } else if self.allocs.iter().any(|a| a.key == key) {
            self.end_alloc(key, Err(e));
        } else if self.port_waits.iter().any(|w| w.key == key) {
            self.end_port_wait(key, e);
        } else if let Some(i) = self.cleanings.iter().position(|c| c.key == key && !c.running) {
            self.cleanings.remove(i);
            self.answer_request(key, Err(e));
        }
    }

    /// Reads the libraries a waiting request concerns again (all served ones when it names none); a parked mount
    /// waits for those scans before it calls the operator again.
    fn rescan_for(&mut self, key: RequestId) {
        let library = self.requests.get(key).and_then(|r| r.library);
        let mut scanned = Vec::new();
        for lib in self.libs.iter_mut().filter(|l| !l.retired && l.changer_present) {
            let Some(id) = lib.id else { continue };
            if library.is_none_or(|l| l == id) || self.parked.iter().any(|p| p.key == key) {
                lib.library.request_rescan();
                scanned.push(id);
            }
        }
        if let Some(p) = self.parked.iter_mut().find(|p| p.key == key) {
            p.awaiting_scan = scanned;
            p.op = None;
        }
    }

    /// A full read of library `id` ended: mounts waiting for it may call the operator again.
    pub fn operator_scan_done(&mut self, id: Guid) {
        for p in &mut self.parked {
            p.awaiting_scan.retain(|l| *l != id);
        }
    }

    /// Housekeeping: waits past their deadline answer `Timeout`; requests whose waiting work went on without the
    /// operator are satisfied by the daemon, those whose work ended are cancelled; old answered ones are purged.
    pub fn operator_housekeeping(&mut self) {
        let now = self.now;
        let (late, keep): (Vec<OpWait>, Vec<OpWait>) =
            std::mem::take(&mut self.op_waits).into_iter().partition(|w| w.deadline.is_some_and(|d| d <= now));
        self.op_waits = keep;
        for w in late {
            let e = NtmsError::Timeout { message: format!("operator request {} was not answered in time", w.number) };
            self.completions.push_back((w.key, Err(WireError::Ntms(e)), 0));
        }
        let stale: Vec<(u64, RequestId)> =
            self.operators.active().filter_map(|r| Some((r.number, r.waiting?))).collect();
        for (n, key) in stale {
            if self.waits_for_operator(key, n) {
                continue;
            }
            let (state, why) = match self.requests.get(key).map(|r| r.state) {
                Some(RequestStatus::Failed | RequestStatus::Cancelled) => (
                    OperatorState::Cancelled,
                    self.requests.get(key).and_then(|r| r.error.clone()).unwrap_or_else(|| "the work ended".into()),
                ),
                _ => (OperatorState::Satisfied, "done: the work went on".into()),
            };
            self.end_operator(n, state, None, Some(why));
        }
        // Purging sorts every answered request: once a minute is plenty, not at every turn of the loop.
        if self.now >= self.operators.next_purge {
            self.operators.next_purge = self.now + PURGE_EVERY_MS;
            for n in self.operators.purge(self.now_unix()) {
                self.changes.push(Change::RemoveOperator(n));
            }
        }
    }

    /// True while library request `key` still waits for operator request `n`.
    fn waits_for_operator(&self, key: RequestId, n: u64) -> bool {
        self.parked.iter().any(|p| p.key == key && p.op == Some(n))
            || self.allocs.iter().any(|a| a.key == key && a.op == Some(n))
            || self.port_waits.iter().any(|w| w.key == key && w.op == Some(n))
            || self.cleanings.iter().any(|c| c.key == key && c.op == Some(n))
    }

    /// The next `WaitForOperatorRequest` deadline.
    pub fn operator_deadline(&self) -> Option<u64> {
        self.op_waits.iter().filter_map(|w| w.deadline).min()
    }

    /// A session ended: its waits go (their connection is gone).
    pub fn operator_session_ended(&mut self, handle: &str) {
        self.op_waits.retain(|w| w.session != handle);
    }
}

/// A kind as people read it.
pub fn kind_text(k: OperatorKind) -> &'static str {
    match k {
        OperatorKind::Message => "message",
        OperatorKind::NewMedia => "new media",
        OperatorKind::Cleaner => "cleaner",
        OperatorKind::DeviceService => "device service",
        OperatorKind::MoveMedia => "move media",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(state: OperatorState, completed: Option<u64>) -> OperatorRecord {
        OperatorRecord {
            number: 0,
            guid: Guid::default(),
            kind: OperatorKind::Message,
            state,
            text: "x".into(),
            object: None,
            library: None,
            owner: Owner::default(),
            session: None,
            waiting: None,
            submitted: 0,
            completed,
            answered_by: None,
            reason: None,
        }
    }

    #[test]
    fn numbers_and_ids_find_requests() {
        let mut t = Operators::new(7);
        let a = t.add(rec(OperatorState::Active, None));
        let b = t.add(rec(OperatorState::Active, None));
        assert_eq!((a, b), (1, 2));
        assert_eq!(t.find("2"), Some(2));
        assert_eq!(t.find(&t.get(1).unwrap().guid.to_string()), Some(1));
        assert_eq!(t.find("3"), None);
        assert_eq!(t.find("nonsense"), None);
        assert_ne!(t.get(1).unwrap().guid, t.get(2).unwrap().guid);
    }

    #[test]
    fn purge_keeps_active_and_recent_requests() {
        let mut t = Operators::new(1);
        let old = t.add(rec(OperatorState::Satisfied, Some(1_000)));
        let recent = t.add(rec(OperatorState::Refused, Some(KEEP_ANSWERED_MS)));
        let active = t.add(rec(OperatorState::Active, None));
        assert_eq!(t.purge(KEEP_ANSWERED_MS + 1_000), vec![old]);
        assert!(t.get(recent).is_some() && t.get(active).is_some());
        for _ in 0..KEEP_ANSWERED + 5 {
            t.add(rec(OperatorState::Cancelled, Some(KEEP_ANSWERED_MS)));
        }
        assert_eq!(t.purge(KEEP_ANSWERED_MS + 1_000).len(), 6, "the oldest beyond the number kept");
        assert!(t.get(active).is_some());
    }

    #[test]
    fn restore_cancels_requests_whose_work_ended_and_continues_numbering() {
        let mut t = Operators::new(1);
        let mut waiting = rec(OperatorState::Active, None);
        waiting.number = 4;
        waiting.waiting = Some(RequestId(9));
        let mut message = rec(OperatorState::Active, None);
        message.number = 5;
        let ended = t.restore(vec![waiting, message], |_| false, 77);
        assert_eq!(ended, vec![4]);
        assert_eq!(t.get(4).unwrap().state, OperatorState::Cancelled);
        assert_eq!(t.get(4).unwrap().completed, Some(77));
        assert_eq!(t.get(5).unwrap().state, OperatorState::Active);
        assert_eq!(t.add(rec(OperatorState::Active, None)), 6);
    }
}
