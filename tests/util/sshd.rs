//! A real OpenSSH server on 127.0.0.1 for remote sessions (issue 17): tests/remote and the remote bench. Each user
//! key's `authorized_keys` line forces a command, as the README recommends for the bridge.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::rsm_bin;

/// A second local user for remote tests (created by the test that needs it), reached as `ssh OTHER_ALIAS` with the
/// bridge key.
pub const OTHER_USER: &str = "rsmd-remote-test";
/// The ssh alias that logs in as [`OTHER_USER`].
pub const OTHER_ALIAS: &str = "rsmdother";

pub struct Sshd {
    child: Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// `ssh -F CONFIG`: the aliases `rsmdtest` (the bridge to the test daemon), `norsm` (no rsm on the host),
    /// `nodaemon` (rsm there, rsmd not running), `echo` (a key forced to run `cat`: bytes back as they came).
    pub ssh: String,
    _dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success(), "ssh-keygen {}", path.display());
}

/// Starts sshd for `socket` (the daemon's), or None when this machine has no sshd (tools/ci-deps installs it).
pub fn sshd(socket: &Path) -> Option<Sshd> {
    if !Path::new("/usr/sbin/sshd").exists() {
        assert!(std::env::var_os("CI").is_none(), "CI needs openssh-server (tools/ci-deps installs it)");
        println!("skipped: no /usr/sbin/sshd");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keygen(&d.join("host"));
    let rsm = rsm_bin();
    let mut authorized = String::new();
    for (name, command) in [
        ("user", format!("{rsm} --socket {} bridge", socket.display())),
        ("norsm", "/nonexistent/rsm bridge".to_owned()),
        ("nodaemon", format!("{rsm} --socket {} bridge", d.join("no.sock").display())),
        ("echo", "cat".to_owned()),
    ] {
        keygen(&d.join(name));
        let key = std::fs::read_to_string(d.join(format!("{name}.pub"))).unwrap();
        authorized.push_str(&format!("command=\"{command}\",restrict {}", key.trim_end()));
        authorized.push('\n');
    }
    std::fs::write(d.join("authorized_keys"), authorized).unwrap();
    // sshd reads the keys as the user logging in: another user (OTHER_USER) must be able to.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(d.join("authorized_keys"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {keys}\nPidFile {pid}\n\
         StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nLogLevel ERROR\n",
        host = d.join("host").display(),
        keys = d.join("authorized_keys").display(),
        pid = d.join("sshd.pid").display()
    );
    std::fs::write(d.join("sshd_config"), config).unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(d.join("sshd_config"))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let user = nix::unistd::User::from_uid(nix::unistd::getuid()).unwrap().unwrap().name;
    let mut client = String::new();
    for (alias, key, user) in [
        ("rsmdtest", "user", user.as_str()),
        ("norsm", "norsm", user.as_str()),
        ("nodaemon", "nodaemon", user.as_str()),
        ("echo", "echo", user.as_str()),
        (OTHER_ALIAS, "user", OTHER_USER),
    ] {
        client.push_str(&format!(
            "Host {alias}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  IdentityFile {}\n  IdentitiesOnly yes\n\
             \x20 UserKnownHostsFile /dev/null\n  StrictHostKeyChecking no\n  LogLevel ERROR\n",
            d.join(key).display()
        ));
    }
    std::fs::write(d.join("ssh_config"), client).unwrap();
    // Ready once it accepts connections (it binds before it serves; a bounded wait, not a sleep).
    let deadline = std::time::Duration::from_secs(10);
    let mut waited = std::time::Duration::ZERO;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(waited < deadline, "sshd did not listen on port {port}");
        std::thread::sleep(std::time::Duration::from_millis(20));
        waited += std::time::Duration::from_millis(20);
    }
    let ssh = format!("ssh -F {}", d.join("ssh_config").display());
    Some(Sshd { child, port, ssh, _dir: dir })
}
