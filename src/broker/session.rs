//! Sessions: OpenNtmsSession handles bound to the process that opened them.
//!
//! A handle is usable from any connection of the same process (pid + process start time, so a recycled pid is a
//! different process) and from no other; it ends on CloseSession or when that process's last connection closes.

use std::collections::HashMap;

/// A client process: pid plus its start time (field 22 of /proc/PID/stat), so recycled pids differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Process id.
    pub pid: i32,
    /// User id.
    pub uid: u32,
    /// Primary group id (access rights granted to a group apply to processes running with it).
    pub gid: u32,
    /// Start time in clock ticks since boot (0 when unknown).
    pub start_time: u64,
}

/// Field 22 (starttime) of a /proc/PID/stat line. The command name (field 2) may contain spaces and parentheses,
/// so fields are counted after its last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// One open session.
#[derive(Debug, Clone)]
pub struct Session {
    /// The handle.
    pub handle: String,
    /// The owning process.
    pub peer: Peer,
    /// The application name given to OpenSession.
    pub application: Option<String>,
    /// Where a remote client is, when the session came through `rsm bridge` (`ssh from ADDRESS`).
    pub client: Option<String>,
}

/// Why a handle was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleError {
    /// No such session (never opened, or closed).
    Unknown,
    /// The session belongs to another process.
    Foreign,
}

/// The session table.
#[derive(Debug, Default)]
pub struct Sessions {
    sessions: HashMap<String, Session>,
    connections: HashMap<Peer, usize>,
    counter: u64,
    seed: u64,
    /// Processes relaying remote clients (`rsm bridge`), by pid and start time: where the client is.
    bridged: HashMap<(i32, u64), String>,
}

impl Sessions {
    /// A table whose handles are unpredictable across daemon runs (`seed` from the daemon's start).
    pub fn new(seed: u64) -> Sessions {
        Sessions { seed, ..Sessions::default() }
    }

    /// Opens a session for `peer`.
    pub fn open(&mut self, peer: Peer, application: Option<String>) -> &Session {
        self.counter += 1;
        let handle = crate::model::Guid::sequential(self.seed, self.counter).to_string();
        let client = self.bridged.get(&(peer.pid, peer.start_time)).cloned();
        self.sessions.entry(handle.clone()).or_insert(Session { handle, peer, application, client })
    }

    /// Process `peer` relays a remote client (`rsm bridge`): its sessions record `client`.
    pub fn bridge(&mut self, peer: Peer, client: String) {
        self.bridged.insert((peer.pid, peer.start_time), client);
    }

    /// Where session `handle`'s client is, when it came through `rsm bridge`.
    pub fn client(&self, handle: &str) -> Option<String> {
        self.sessions.get(handle).and_then(|s| s.client.clone())
    }

    /// The session `handle`, if `peer` may use it.
    pub fn check(&self, handle: &str, peer: Peer) -> Result<&Session, HandleError> {
        match self.sessions.get(handle) {
            None => Err(HandleError::Unknown),
            Some(s) if s.peer != peer => Err(HandleError::Foreign),
            Some(s) => Ok(s),
        }
    }

    /// Closes a session.
    pub fn close(&mut self, handle: &str, peer: Peer) -> Result<Session, HandleError> {
        self.check(handle, peer)?;
        self.sessions.remove(handle).ok_or(HandleError::Unknown)
    }

    /// A connection of `peer` opened.
    pub fn connected(&mut self, peer: Peer) {
        *self.connections.entry(peer).or_insert(0) += 1;
    }

    /// A connection of `peer` closed; when it was the process's last, its sessions end and are returned.
    pub fn disconnected(&mut self, peer: Peer) -> Vec<Session> {
        let n = self.connections.entry(peer).or_insert(1);
        *n -= 1;
        if *n > 0 {
            return Vec::new();
        }
        self.connections.remove(&peer);
        self.bridged.remove(&(peer.pid, peer.start_time));
        let ended: Vec<String> = self.sessions.values().filter(|s| s.peer == peer).map(|s| s.handle.clone()).collect();
        ended.into_iter().filter_map(|h| self.sessions.remove(&h)).collect()
    }

    /// Who session `handle` is: its process's user and the application it named.
    pub fn owner(&self, handle: &str) -> Option<crate::model::Owner> {
        self.sessions.get(handle).map(|s| crate::model::Owner { uid: s.peer.uid, application: s.application.clone() })
    }

    /// The peer of session `handle`.
    pub fn peer(&self, handle: &str) -> Option<Peer> {
        self.sessions.get(handle).map(|s| s.peer)
    }

    /// The process of session `handle`.
    pub fn pid(&self, handle: &str) -> Option<i32> {
        self.sessions.get(handle).map(|s| s.peer.pid)
    }

    /// The application name of session `handle`.
    pub fn application(&self, handle: &str) -> Option<String> {
        self.sessions.get(handle).and_then(|s| s.application.clone())
    }

    /// True when session `handle` is open.
    pub fn exists(&self, handle: &str) -> bool {
        self.sessions.contains_key(handle)
    }

    /// Number of open sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when no session is open.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Peer = Peer { pid: 10, uid: 0, gid: 0, start_time: 100 };
    const A_RECYCLED: Peer = Peer { pid: 10, uid: 0, gid: 0, start_time: 999 };
    const B: Peer = Peer { pid: 11, uid: 0, gid: 0, start_time: 100 };

    #[test]
    fn handles_bind_to_the_process_and_end_with_its_last_connection() {
        let mut s = Sessions::new(7);
        s.connected(A);
        s.connected(A);
        s.connected(B);
        let h = s.open(A, Some("bacula".into())).handle.clone();
        assert!(s.check(&h, A).is_ok());
        assert_eq!(s.check(&h, B).unwrap_err(), HandleError::Foreign);
        assert_eq!(s.check(&h, A_RECYCLED).unwrap_err(), HandleError::Foreign);
        assert_eq!(s.check("nope", A).unwrap_err(), HandleError::Unknown);
        assert!(s.disconnected(A).is_empty());
        assert_eq!(s.disconnected(A).len(), 1);
        assert_eq!(s.check(&h, A).unwrap_err(), HandleError::Unknown);
        assert!(s.is_empty());
    }

    #[test]
    fn close_only_by_owner() {
        let mut s = Sessions::new(1);
        let h = s.open(A, None).handle.clone();
        assert_eq!(s.close(&h, B).unwrap_err(), HandleError::Foreign);
        assert!(s.close(&h, A).is_ok());
        assert_eq!(s.close(&h, A).unwrap_err(), HandleError::Unknown);
    }

    #[test]
    fn start_time_parsing_survives_odd_command_names() {
        let stat = "1234 (my (odd) cmd) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 424242 20 21";
        assert_eq!(parse_start_time(stat), Some(424_242));
        assert_eq!(parse_start_time("garbage"), None);
    }
}
