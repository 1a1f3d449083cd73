//! Remote sessions: the rsmd of another host, reached through ssh.
//!
//! `Session::open(server: Some("[USER@]HOST[:PORT]"))` for a host that is not this one runs `ssh HOST rsm bridge`
//! with the user's own ssh configuration, keys and agent, and speaks the protocol over ssh's standard input and
//! output (one end of a socket pair; the other is the session's connection). On the library's host, `rsm bridge`
//! connects to rsmd's local socket as the ssh user and copies bytes both ways, so the daemon sees that user (access
//! rights, ownership, administrators apply as to a local user) and the session lives as long as the ssh connection.
//! No new port, no new credentials.
//!
//! OpenSession's errors, to the letter: a name ssh cannot resolve → `InvalidComputerName`; a host that cannot be
//! reached or refuses ssh → `NotConnected` with ssh's reason; a host without rsm, or whose rsmd is not running →
//! `NotConnected` saying so; an older rsmd → `NoInterfaces` and a loading one → `NotReady`, from the daemon itself.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::proto::NtmsError;

/// The environment variable naming the ssh command (words split on blanks; default `ssh`): e.g. `ssh -F FILE`.
pub const SSH_ENV: &str = "RSM_SSH";

/// What `rsm bridge` exits with when rsmd is not reachable on its host (rsm's "not connected" status).
pub const BRIDGE_NOT_CONNECTED: i32 = 3;

/// Whether `server` names this computer: empty, `.`, `localhost`, a loopback address, or this host's name (short
/// or full, in any case; RSM's `\\NAME` form too). Such a session uses the local socket directly.
pub fn is_local(server: &str) -> bool {
    let name = server.trim().trim_start_matches('\\').to_ascii_lowercase();
    if matches!(name.as_str(), "" | "." | "localhost" | "127.0.0.1" | "::1" | "[::1]") {
        return true;
    }
    let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
    let host = host.to_ascii_lowercase();
    let short = |s: &str| s.split('.').next().unwrap_or("").to_owned();
    !host.is_empty() && (name == host || short(&name) == short(&host) && !name.contains('.'))
}

/// Whether `server` can name a host to reach through ssh (`[USER@]HOST[:PORT]`: letters, digits and `.-_@:[]%`).
/// Anything else is no computer name: the local rsmd is asked, and answers `InvalidComputerName`.
pub fn is_host(server: &str) -> bool {
    !server.is_empty()
        && !server.starts_with('-')
        && server.chars().all(|c| c.is_ascii_alphanumeric() || ".-_@:[]%".contains(c))
}

/// `[USER@]HOST[:PORT]` → ssh's destination and port.
fn target(server: &str) -> (String, Option<String>) {
    match server.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.contains(':') => {
            (host.to_owned(), Some(port.to_owned()))
        }
        _ => (server.to_owned(), None),
    }
}

/// The ssh process carrying a remote connection.
#[derive(Debug)]
pub struct Tunnel {
    child: Child,
    server: String,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        // Our end of the socket pair is closed with the connection: ssh sees end of input and exits.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tunnel {
    /// Why the connection through ssh ended: ssh's exit status and what it (or the bridge on the other side) said,
    /// as OpenSession's error. ssh has closed its output and is exiting; should it still run after 2 s (the
    /// connection broke for another reason), `lost` is the answer and ssh goes when the connection is dropped.
    pub fn failure(&mut self, lost: NtmsError) -> NtmsError {
        let mut status = None;
        for _ in 0..100 {
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    status = Some(s);
                    break;
                }
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
                Err(_) => return lost,
            }
        }
        let Some(status) = status else { return lost };
        let status = status.code();
        let mut said = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut said);
        }
        classify(&self.server, status, &said)
    }
}

/// OpenSession's error for an ssh connection that ended with `status` after printing `said` on standard error.
pub fn classify(server: &str, status: Option<i32>, said: &str) -> NtmsError {
    let last = said.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned();
    let said = match (last.is_empty(), status) {
        (false, _) => last,
        (true, Some(code)) => format!("ssh exited with status {code}"),
        (true, None) => "the ssh process was killed".to_owned(),
    };
    if said.contains("Could not resolve hostname") || said.contains("Name or service not known") {
        return NtmsError::InvalidComputerName { message: format!("{server}: {said}") };
    }
    match status {
        Some(127 | 126) => NtmsError::NotConnected {
            message: format!("{server} has no rsmd bridge (is rsmd installed there?): {said}"),
        },
        Some(BRIDGE_NOT_CONNECTED) => NtmsError::NotConnected { message: format!("rsmd on {server}: {said}") },
        _ => NtmsError::NotConnected { message: format!("cannot reach {server} over ssh: {said}") },
    }
}

/// Starts `ssh [-p PORT] [USER@]HOST rsm bridge`; returns the local end of the connection and the ssh process.
pub fn connect(server: &str) -> Result<(UnixStream, Tunnel), NtmsError> {
    let failed = |what: &str, e: std::io::Error| NtmsError::NotConnected { message: format!("{what}: {e}") };
    let (ours, theirs) = UnixStream::pair().map_err(|e| failed("cannot create a socket pair", e))?;
    let theirs_out = theirs.try_clone().map_err(|e| failed("cannot duplicate a socket", e))?;
    let ssh = std::env::var(SSH_ENV).ok().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| "ssh".to_owned());
    let mut words = ssh.split_whitespace();
    let program = words.next().unwrap_or("ssh").to_owned();
    let (host, port) = target(server);
    let mut cmd = Command::new(&program);
    cmd.args(words);
    // No password prompt from a library (keys and the agent work); no terminal.
    cmd.args(["-T", "-o", "BatchMode=yes"]);
    if let Some(p) = &port {
        cmd.args(["-p", p]);
    }
    cmd.arg("--").arg(&host).args(["rsm", "bridge"]);
    cmd.stdin(Stdio::from(OwnedFd::from(theirs))).stdout(Stdio::from(OwnedFd::from(theirs_out))).stderr(Stdio::piped());
    let child = cmd.spawn().map_err(|e| failed(&format!("cannot run {program}"), e))?;
    // `cmd` still holds the other end: drop it so that our end sees ssh's end of output.
    drop(cmd);
    Ok((ours, Tunnel { child, server: server.to_owned() }))
}

/// `rsm bridge`: connects to rsmd's local socket (`socket`, found as every rsm command finds it) and copies this
/// process's standard input to it and its replies to standard output, until rsmd closes the connection or the
/// output goes away. Returns the exit status: 0, or [`BRIDGE_NOT_CONNECTED`] when rsmd cannot be reached (the
/// reason on standard error, which ssh carries to the client).
pub fn bridge(socket: &Path) -> i32 {
    let stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rsm bridge: rsmd is not running or not reachable at {}: {e}", socket.display());
            return BRIDGE_NOT_CONNECTED;
        }
    };
    // Where the client is (ssh tells its sessions' processes), for the audit log and the requests: one oneway
    // call before the client's own.
    if let Some(from) =
        std::env::var("SSH_CONNECTION").ok().and_then(|c| c.split_whitespace().next().map(str::to_owned))
    {
        let mut params = serde_json::Map::new();
        params.insert("client".into(), serde_json::Value::String(format!("ssh from {from}")));
        let mut call = crate::proto::Call::new("io.rsmd.Ntms.Bridge", params);
        call.oneway = true;
        if (&stream).write_all(&call.encode()).is_err() {
            eprintln!("rsm bridge: rsmd closed the connection");
            return BRIDGE_NOT_CONNECTED;
        }
    }
    let Ok(mut to_daemon) = stream.try_clone() else {
        eprintln!("rsm bridge: cannot duplicate the connection");
        return BRIDGE_NOT_CONNECTED;
    };
    // Calls in: until the client's end of input, then our writing side is shut (the daemon still answers).
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match input.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_daemon.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to_daemon.shutdown(std::net::Shutdown::Write);
    });
    // Replies out, each chunk flushed at once (the protocol's messages end in NUL, not newline).
    let mut from_daemon = stream;
    let mut output = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from_daemon.read(&mut buf) {
            Ok(0) | Err(_) => return 0,
            Ok(n) => {
                if output.write_all(&buf[..n]).and_then(|()| output.flush()).is_err() {
                    return 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_host_by_any_name() {
        for local in ["", ".", "localhost", "LOCALHOST", "127.0.0.1", "::1", "\\\\localhost"] {
            assert!(is_local(local), "{local:?}");
        }
        let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
        assert!(is_local(&host) && is_local(&host.to_ascii_uppercase()));
        assert!(!is_local("backup2.example.com") && !is_local("rsmd-test-host"));
        assert!(is_host("bob@lib1.example.com:2222") && is_host("[fe80::1%eth0]"));
        assert!(!is_host("a b") && !is_host("-oProxyCommand=x") && !is_host("") && !is_host("h;rm"));
    }

    #[test]
    fn user_host_and_port() {
        assert_eq!(target("bob@lib1:2222"), ("bob@lib1".to_owned(), Some("2222".to_owned())));
        assert_eq!(target("lib1"), ("lib1".to_owned(), None));
        assert_eq!(target("fe80::1"), ("fe80::1".to_owned(), None));
    }

    #[test]
    fn ssh_failures_become_open_session_errors() {
        let name = |e: NtmsError| e.name().to_owned();
        let resolve = "ssh: Could not resolve hostname nowhere: Name or service not known\n";
        assert_eq!(name(classify("nowhere", Some(255), resolve)), "InvalidComputerName");
        let refused = "ssh: connect to host 127.0.0.1 port 1: Connection refused\n";
        let e = classify("h:1", Some(255), refused);
        assert!(matches!(&e, NtmsError::NotConnected { message } if message.contains("Connection refused")), "{e:?}");
        let e = classify("h", Some(127), "bash: line 1: rsm: command not found\n");
        assert!(matches!(&e, NtmsError::NotConnected { message } if message.contains("no rsmd bridge")), "{e:?}");
        let e = classify("h", Some(3), "rsm bridge: rsmd is not running or not reachable at /run/rsmd/rsmd.sock\n");
        assert!(matches!(&e, NtmsError::NotConnected { message } if message.contains("rsmd on h")), "{e:?}");
    }
}
