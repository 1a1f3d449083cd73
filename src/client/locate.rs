//! Where rsmd's socket is, and the demo's private directory.
//!
//! One rule for both ends: `rsmd --demo` keeps its socket, state and emulator in [`demo_root`], and a client that
//! was given no socket finds it there by itself. The search ([`SocketSearch::locate`]) is:
//!
//! 1. the explicit path (`--socket`), else
//! 2. `$RSMD_SOCKET` when set and non-empty, else
//! 3. [`DEFAULT_SOCKET`] (the service's) when it exists, else
//! 4. the demo's socket `rsmd.sock` in the first demo directory that has one: `$XDG_RUNTIME_DIR/rsmd-demo` (when
//!    the variable is set and non-empty), then `/tmp/rsmd-demo-<uid>`. A demo directory that is not
//!    [private](check_private_dir) is skipped with a note: anyone can create `/tmp/rsmd-demo-<uid>`, and a socket
//!    planted there must not receive this user's calls.
//!
//! When nothing exists the answer is [`DEFAULT_SOCKET`], and the connection error lists what was tried.

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where rsmd listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/rsmd/rsmd.sock";

/// The environment variable that overrides [`DEFAULT_SOCKET`].
pub const SOCKET_ENV: &str = "RSMD_SOCKET";

/// The demo's socket file name inside its directory.
pub const DEMO_SOCKET_NAME: &str = "rsmd.sock";

/// A private directory that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PrivateDirError {
    /// It exists but is not a directory (a symbolic link counts as not a directory).
    #[error("{} exists and is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// Another user owns it.
    #[error("{} belongs to uid {owner}, not to this user (uid {uid})", path.display())]
    NotOwned {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        uid: u32,
    },
    /// Its group or other users may write in it.
    #[error("{} is writable by its group or by others (mode {mode:04o})", path.display())]
    Writable {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It could not be created or examined.
    #[error("Cannot create or examine {}", .0.display())]
    Io(PathBuf, #[source] std::io::Error),
}

/// Checks that `dir` is a directory (not a symbolic link) owned by this process's effective user and not
/// writable by its group or by others.
pub fn check_private_dir(dir: &Path) -> Result<(), PrivateDirError> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| PrivateDirError::Io(dir.to_owned(), e))?;
    if !meta.file_type().is_dir() {
        return Err(PrivateDirError::NotADirectory(dir.to_owned()));
    }
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(PrivateDirError::NotOwned { path: dir.to_owned(), owner: meta.uid(), uid });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(PrivateDirError::Writable { path: dir.to_owned(), mode });
    }
    Ok(())
}

/// Creates `dir` with mode 0700 (its missing parents too) unless it exists, then [checks](check_private_dir) it:
/// an existing directory of another user, or one others may write in, is refused rather than reused.
pub fn ensure_private_dir(dir: &Path) -> Result<(), PrivateDirError> {
    match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        // Something else is there: the check says what.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(PrivateDirError::Io(dir.to_owned(), e)),
    }
    check_private_dir(dir)
}

/// Where `rsmd --demo` keeps its socket, state and emulator: `$XDG_RUNTIME_DIR/rsmd-demo` when the variable is
/// set and non-empty, else `/tmp/rsmd-demo-<uid>`.
pub fn demo_root() -> PathBuf {
    SocketSearch::from_env(None).demo_roots().remove(0)
}

/// How the socket was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketOrigin {
    /// Given by the caller (`--socket`).
    Explicit,
    /// `$RSMD_SOCKET`.
    Environment,
    /// [`DEFAULT_SOCKET`], which exists.
    Default,
    /// The demo's socket, found in a demo directory.
    Demo,
    /// Nothing was found: [`DEFAULT_SOCKET`], which does not exist.
    NotFound,
}

/// The result of a [`SocketSearch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketLocation {
    /// The socket to connect to.
    pub path: PathBuf,
    /// How it was chosen.
    pub origin: SocketOrigin,
    /// Every place looked at, in order (for the error when nothing answers).
    pub tried: Vec<PathBuf>,
    /// Demo directories skipped because they are not private, with the reason.
    pub skipped: Vec<String>,
}

/// The inputs of the socket search, normally from the environment ([`SocketSearch::from_env`]); tests build
/// their own.
#[derive(Debug, Clone)]
pub struct SocketSearch {
    /// `--socket`.
    pub explicit: Option<PathBuf>,
    /// `$RSMD_SOCKET`.
    pub env_socket: Option<OsString>,
    /// `$XDG_RUNTIME_DIR`.
    pub runtime_dir: Option<OsString>,
    /// The service's socket ([`DEFAULT_SOCKET`]).
    pub default_socket: PathBuf,
    /// Where the per-user fallback demo directory lives (`/tmp`).
    pub tmp: PathBuf,
    /// This process's effective uid.
    pub uid: u32,
}

impl SocketSearch {
    /// The search as this process's environment sets it up.
    pub fn from_env(explicit: Option<&Path>) -> SocketSearch {
        SocketSearch {
            explicit: explicit.map(Path::to_owned),
            env_socket: std::env::var_os(SOCKET_ENV),
            runtime_dir: std::env::var_os("XDG_RUNTIME_DIR"),
            default_socket: PathBuf::from(DEFAULT_SOCKET),
            tmp: PathBuf::from("/tmp"),
            uid: nix::unistd::geteuid().as_raw(),
        }
    }

    /// The demo directories, in the order the demo picks them: `$XDG_RUNTIME_DIR/rsmd-demo` (when set and
    /// non-empty), then `/tmp/rsmd-demo-<uid>`.
    pub fn demo_roots(&self) -> Vec<PathBuf> {
        let mut roots = Vec::with_capacity(2);
        if let Some(d) = self.runtime_dir.as_ref().filter(|d| !d.is_empty()) {
            roots.push(PathBuf::from(d).join("rsmd-demo"));
        }
        roots.push(self.tmp.join(format!("rsmd-demo-{}", self.uid)));
        roots
    }

    /// Chooses the socket (see the module's documentation for the order).
    pub fn locate(&self) -> SocketLocation {
        let found = |path: PathBuf, origin| SocketLocation { path, origin, tried: Vec::new(), skipped: Vec::new() };
        if let Some(p) = &self.explicit {
            return found(p.clone(), SocketOrigin::Explicit);
        }
        if let Some(p) = self.env_socket.as_ref().filter(|p| !p.is_empty()) {
            return found(PathBuf::from(p), SocketOrigin::Environment);
        }
        let exists = |p: &Path| std::fs::symlink_metadata(p).is_ok();
        if exists(&self.default_socket) {
            return found(self.default_socket.clone(), SocketOrigin::Default);
        }
        let mut tried = vec![self.default_socket.clone()];
        let mut skipped = Vec::new();
        for root in self.demo_roots() {
            let socket = root.join(DEMO_SOCKET_NAME);
            tried.push(socket.clone());
            if !exists(&socket) {
                continue;
            }
            match check_private_dir(&root) {
                Ok(()) => return SocketLocation { path: socket, origin: SocketOrigin::Demo, tried, skipped },
                Err(e) => skipped.push(format!("ignored {}: {}", socket.display(), crate::error_chain(&e))),
            }
        }
        SocketLocation { path: self.default_socket.clone(), origin: SocketOrigin::NotFound, tried, skipped }
    }
}

/// The socket to use: `explicit`, else `$RSMD_SOCKET` (when set and non-empty), else [`DEFAULT_SOCKET`] when it
/// exists, else the demo's socket when a private demo directory has one, else [`DEFAULT_SOCKET`].
pub fn socket_path(explicit: Option<&Path>) -> PathBuf {
    SocketSearch::from_env(explicit).locate().path
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn search(root: &Path) -> SocketSearch {
        SocketSearch {
            explicit: None,
            env_socket: None,
            runtime_dir: Some(root.join("xdg").into_os_string()),
            default_socket: root.join("run/rsmd.sock"),
            tmp: root.join("tmp"),
            uid: 4242,
        }
    }

    #[test]
    fn explicit_then_environment_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = search(dir.path());
        s.explicit = Some("/x.sock".into());
        s.env_socket = Some("/env.sock".into());
        assert_eq!(s.locate().path, Path::new("/x.sock"));
        assert_eq!(s.locate().origin, SocketOrigin::Explicit);
        s.explicit = None;
        assert_eq!(s.locate().path, Path::new("/env.sock"));
        s.env_socket = Some("".into());
        let nothing = s.locate();
        assert_eq!(nothing.origin, SocketOrigin::NotFound);
        assert_eq!(nothing.path, s.default_socket);
        assert_eq!(
            nothing.tried,
            [
                s.default_socket.clone(),
                dir.path().join("xdg/rsmd-demo/rsmd.sock"),
                dir.path().join("tmp/rsmd-demo-4242/rsmd.sock")
            ]
        );
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        let _service = UnixListener::bind(&s.default_socket).unwrap();
        // Even with a demo running, the service's socket wins.
        ensure_private_dir(&dir.path().join("xdg/rsmd-demo")).unwrap();
        let _demo = UnixListener::bind(dir.path().join("xdg/rsmd-demo/rsmd.sock")).unwrap();
        assert_eq!(s.locate().origin, SocketOrigin::Default);
    }

    #[test]
    fn demo_socket_under_runtime_dir_then_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = search(dir.path());
        assert_eq!(s.demo_roots(), [dir.path().join("xdg/rsmd-demo"), dir.path().join("tmp/rsmd-demo-4242")]);
        // A demo started without XDG_RUNTIME_DIR is found from a shell that has it.
        let tmp_root = dir.path().join("tmp/rsmd-demo-4242");
        ensure_private_dir(&tmp_root).unwrap();
        let _l = UnixListener::bind(tmp_root.join("rsmd.sock")).unwrap();
        let got = s.locate();
        assert_eq!((got.path, got.origin), (tmp_root.join("rsmd.sock"), SocketOrigin::Demo));
        let xdg_root = dir.path().join("xdg/rsmd-demo");
        ensure_private_dir(&xdg_root).unwrap();
        let _m = UnixListener::bind(xdg_root.join("rsmd.sock")).unwrap();
        assert_eq!(s.locate().path, xdg_root.join("rsmd.sock"));
        // An empty XDG_RUNTIME_DIR is unset.
        s.runtime_dir = Some("".into());
        assert_eq!(s.demo_roots(), std::slice::from_ref(&tmp_root));
        assert_eq!(s.locate().path, tmp_root.join("rsmd.sock"));
    }

    #[test]
    fn a_demo_directory_others_may_write_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let s = search(dir.path());
        let root = dir.path().join("tmp/rsmd-demo-4242");
        ensure_private_dir(&root).unwrap();
        let _l = UnixListener::bind(root.join("rsmd.sock")).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
        let got = s.locate();
        assert_eq!(got.origin, SocketOrigin::NotFound);
        assert_eq!(got.skipped.len(), 1);
        assert!(got.skipped[0].contains("writable by its group or by others (mode 0777)"), "{:?}", got.skipped);
    }

    #[test]
    fn private_dirs_are_created_0700_and_others_refused() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("a/b");
        ensure_private_dir(&new).unwrap();
        let meta = std::fs::metadata(&new).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
        // Reused when private, also when others may read it.
        std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&new).unwrap();
        for mode in [0o775, 0o757, 0o1777] {
            std::fs::set_permissions(&new, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(matches!(ensure_private_dir(&new), Err(PrivateDirError::Writable { .. })), "{mode:o}");
        }
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(ensure_private_dir(&file), Err(PrivateDirError::NotADirectory(_))));
        if nix::unistd::geteuid().is_root() {
            let theirs = dir.path().join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
            let e = ensure_private_dir(&theirs).unwrap_err();
            assert!(matches!(e, PrivateDirError::NotOwned { owner: 65534, uid: 0, .. }), "{e:?}");
            assert_eq!(e.to_string(), format!("{} belongs to uid 65534, not to this user (uid 0)", theirs.display()));
        }
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        assert!(matches!(check_private_dir(&link), Err(PrivateDirError::NotADirectory(_))));
    }
}
