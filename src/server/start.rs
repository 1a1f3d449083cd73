//! Building the daemon from its arguments: configuration, demo mode, the socket, library sources.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use super::{Devices, Opened};
use crate::broker::{DriveDevice, LibrarySpec};
use crate::changer::LibraryOptions;
use crate::config::{Config, ConfigError, LibraryConfig, Source, DEFAULT_PATH};
use crate::emu::EmuTransport;
use crate::sg::discover::{self, DeviceKind};
use crate::sg::SgTransport;
use crate::store::StoreError;
use crate::transport::Transport;

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Configuration.
    #[error("Configuration error")]
    Config(#[from] ConfigError),
    /// An operating-system call failed.
    #[error("Failed {0}")]
    Io(String, #[source] std::io::Error),
    /// The inventory database failed.
    #[error("Inventory database failed")]
    Store(#[source] StoreError),
    /// Another rsmd already serves the socket.
    #[error("Another rsmd is already listening on {0}")]
    AlreadyRunning(PathBuf),
    /// Another rsmd uses the state directory.
    #[error("Another rsmd uses the state directory {0} (its lock file is held)")]
    StateInUse(PathBuf),
}

/// What `rsmd` was asked to do.
#[derive(Debug, Clone)]
pub struct DaemonArgs {
    /// The configuration.
    pub config: Config,
    /// Demo mode: embedded vlib.
    pub demo: bool,
    /// `--socket`.
    pub socket: Option<PathBuf>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// sysfs root.
    pub sysfs_root: PathBuf,
    /// /dev root.
    pub dev_root: PathBuf,
    /// `--config` (for SIGHUP reloads).
    pub config_path: Option<PathBuf>,
    /// The program that reads the database at start (`PROGRAM --dump-store DIR`): rsmd itself; `None` reads it
    /// in this process.
    pub store_helper: Option<PathBuf>,
}

/// The resolved setup the server runs with.
#[derive(Debug)]
pub struct Setup {
    /// Configuration.
    pub config: Config,
    /// Socket path.
    pub socket: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// sysfs root.
    pub sysfs_root: PathBuf,
    /// /dev root.
    pub dev_root: PathBuf,
    /// Configuration file, for SIGHUP.
    pub config_path: Option<PathBuf>,
    /// Demo: the directory for the embedded vlib.
    pub demo_dir: Option<PathBuf>,
    /// Demo: the embedded vlib, once started.
    pub demo: Option<crate::emu::DemoLibrary>,
    /// See [`DaemonArgs::store_helper`].
    pub store_helper: Option<PathBuf>,
}

/// Loads `path`, or the default file when it exists, or the default configuration (discovery). Demo mode ignores
/// the default file.
pub fn load_config(path: Option<&Path>, demo: bool) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None if !demo && Path::new(DEFAULT_PATH).exists() => Config::load(Path::new(DEFAULT_PATH)),
        None => Ok(Config::default()),
    }
}

/// Where demo mode keeps its socket, state and emulator: `$XDG_RUNTIME_DIR/rsmd-demo` or `/tmp/rsmd-demo-UID`,
/// the rule `rsm` uses to find the demo's socket ([`crate::client::locate`]).
pub fn demo_root() -> PathBuf {
    crate::client::demo_root()
}

/// Raises the soft limit on open files to the hard limit: every client connection and device is an fd, and
/// systemd's default soft limit (1024) is below what a busy backup server's clients need.
pub fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                log::debug!("cannot raise the open-file limit from {soft} to {hard}: {e}");
            }
        }
    }
}

/// Runs the daemon until SIGTERM.
pub fn run(args: DaemonArgs) -> Result<(), ServerError> {
    raise_fd_limit();
    let mut config = args.config;
    let mut demo_dir = None;
    let (socket, state_dir) = if args.demo {
        let root = demo_root();
        // Private: created 0700, and refused (not reused) when another user owns it or others may write in it.
        crate::client::locate::ensure_private_dir(&root).map_err(|e| {
            ServerError::Io(
                "preparing the demo directory (remove it, or set XDG_RUNTIME_DIR)".into(),
                std::io::Error::new(std::io::ErrorKind::PermissionDenied, e),
            )
        })?;
        let vdir = root.join("vlib");
        config.libraries = vec![LibraryConfig::vlib("demo", &vdir)];
        config.discover = false;
        demo_dir = Some(vdir);
        (args.socket.unwrap_or_else(|| root.join("rsmd.sock")), args.state_dir.unwrap_or_else(|| root.join("state")))
    } else {
        (
            args.socket.unwrap_or_else(|| config.socket.clone()),
            args.state_dir.unwrap_or_else(|| config.state_dir.clone()),
        )
    };
    let setup = Setup {
        config,
        socket,
        state_dir,
        sysfs_root: args.sysfs_root,
        dev_root: args.dev_root,
        config_path: args.config_path,
        demo_dir,
        demo: None,
        store_helper: args.store_helper,
    };
    super::Server::new(setup)?.run()
}

/// Takes the state directory's lock (`STATE_DIR/lock`, flock) before anything else, so that a second rsmd on
/// the same state fails at once instead of accepting clients while it waits for the database.
pub fn lock_state(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, ServerError> {
    std::fs::create_dir_all(dir).map_err(|e| ServerError::Io(format!("creating {}", dir.display()), e))?;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| ServerError::Io(format!("opening {}", path.display()), e))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e == nix::errno::Errno::EWOULDBLOCK {
            ServerError::StateInUse(dir.to_owned())
        } else {
            ServerError::Io(format!("locking {}", path.display()), e.into())
        }
    })
}

/// The listening socket: systemd's (socket activation) or one we bind. Returns the path to unlink at exit when we
/// bound it.
pub fn listen(
    path: &Path,
    group: Option<&crate::config::GroupSpec>,
    mode: u32,
) -> Result<(UnixListener, Option<PathBuf>), ServerError> {
    if let Some(l) = super::notify::activation_listener() {
        l.set_nonblocking(true).map_err(|e| ServerError::Io("configuring the activated socket".into(), e))?;
        log::info!("using the socket passed by systemd");
        return Ok((l, None));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ServerError::Io(format!("creating {}", dir.display()), e))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServerError::AlreadyRunning(path.into()));
        }
        // A stale socket from a crashed run.
        let _ = std::fs::remove_file(path);
    }
    let l = UnixListener::bind(path).map_err(|e| ServerError::Io(format!("binding {}", path.display()), e))?;
    l.set_nonblocking(true).map_err(|e| ServerError::Io("configuring the socket".into(), e))?;
    // Who may connect: the socket's group and mode (connecting needs write permission).
    let gid = match group {
        None => None,
        Some(crate::config::GroupSpec::Gid(g)) => Some(*g),
        Some(crate::config::GroupSpec::Name(name)) => match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Some(g.gid.as_raw()),
            _ => {
                return Err(ServerError::Io(
                    format!("socket_group {name:?}"),
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no such group (create it: groupadd --system NAME)",
                    ),
                ))
            }
        },
    };
    let io = |what: &str, e: std::io::Error| ServerError::Io(format!("{what} {}", path.display()), e);
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| io("giving group of", e))?;
    }
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| io("setting the mode of", e))?;
    Ok((l, Some(path.into())))
}

/// The hot-plug event source: `$RSMD_UEVENT_SOCKET` (a datagram socket tests write uevents to), else the kernel's
/// uevent netlink multicast group. None when neither is available (hot-plug then needs SIGHUP).
pub fn uevent_socket() -> Option<OwnedFd> {
    if let Some(p) = std::env::var_os("RSMD_UEVENT_SOCKET") {
        let _ = std::fs::remove_file(&p);
        return match std::os::unix::net::UnixDatagram::bind(&p) {
            Ok(s) => {
                let _ = s.set_nonblocking(true);
                Some(OwnedFd::from(s))
            }
            Err(e) => {
                log::warn!("cannot bind the uevent test socket: {e}");
                None
            }
        };
    }
    use nix::sys::socket::{bind, socket, AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType};
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkKObjectUEvent,
    );
    match fd.and_then(|fd| {
        use std::os::fd::AsRawFd;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1)).map(|()| fd)
    }) {
        Ok(fd) => Some(fd),
        Err(e) => {
            log::warn!("no kernel uevents ({e}); hot-plugged changers appear on SIGHUP");
            None
        }
    }
}

/// The configuration entry that names the library opened as `key` (with changer serial `serial`), if any.
pub fn configured_entry<'a>(config: &'a Config, key: &str, serial: &str) -> Option<&'a LibraryConfig> {
    config.libraries.iter().find(|lc| match &lc.source {
        Source::Vlib(dir) => key == format!("vlib:{}", dir.display()),
        Source::Path(p) => {
            key == p.display().to_string() || std::fs::canonicalize(p).is_ok_and(|c| c.display().to_string() == key)
        }
        Source::Serial(s) => crate::changer::same_serial(s, serial),
        Source::Auto => !key.starts_with("vlib:"),
    })
}

/// A library's tunables from its configuration entry (or the defaults).
pub fn options(lc: Option<&LibraryConfig>) -> LibraryOptions {
    let d = LibraryOptions::default();
    LibraryOptions {
        chunk: lc.map_or(d.chunk, |l| l.chunk),
        drive_map: lc.map(|l| l.drives.iter().map(|(s, a)| (s.clone(), *a)).collect()).unwrap_or_default(),
        heartbeat_ms: lc.map_or(d.heartbeat_ms, |l| l.heartbeat_ms),
        ready_timeout_ms: lc.map_or(d.ready_timeout_ms, |l| l.ready_timeout_ms),
        deferred_dismount_ms: lc.map_or(d.deferred_dismount_ms, |l| l.deferred_dismount_ms),
        auto_inject: lc.is_some_and(|l| l.auto_inject),
        partitions: lc.map(|l| l.partitions.clone()).unwrap_or_default(),
        ..d
    }
}

/// A library served by a vlib emulator in `dir`: `changer.sock`, `drive0.sock`, ...
pub fn open_vlib(dir: &Path, lc: Option<&LibraryConfig>) -> std::io::Result<Opened> {
    let changer_path = dir.join("changer.sock");
    let changer = EmuTransport::connect(&changer_path)?;
    let (mut drives, mut transports) = (Vec::new(), Vec::new());
    for i in 0.. {
        let p = dir.join(format!("drive{i}.sock"));
        if !p.exists() {
            break;
        }
        transports.push(match EmuTransport::connect(&p) {
            Ok(t) => Some(Box::new(t) as Box<dyn Transport>),
            Err(e) => {
                log::warn!("{}: {e}", p.display());
                None
            }
        });
        drives.push(DriveDevice { path: p.display().to_string(), nst: None });
    }
    let spec = LibrarySpec {
        label: changer_path.display().to_string(),
        key: format!("vlib:{}", dir.display()),
        name: lc.and_then(|l| l.name.clone()),
        drives,
        options: options(lc),
    };
    Ok(Opened { spec, changer: Box::new(changer), drives: transports })
}

/// Every library of the setup: configured vlib endpoints, configured and (with discovery) all sg changers; and
/// whether a device that is there could not be opened (yet: udev may not have given it its group).
pub fn open_libraries(setup: &mut Setup) -> (Vec<Opened>, bool) {
    if let (Some(dir), None) = (&setup.demo_dir, &setup.demo) {
        let scale = std::env::var("RSMD_DEMO_TIME_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(0.05);
        match crate::emu::DemoLibrary::start(dir, scale) {
            Ok(s) => setup.demo = Some(s),
            Err(e) => log::error!("cannot start the demo library in {}: {e}", dir.display()),
        }
    }
    open_new_libraries(setup, &[])
}

/// Libraries of the setup not already served by `existing` (after a uevent or a reload), and whether a changer
/// that is there could not be opened (worth trying again shortly).
pub fn open_new_libraries(setup: &mut Setup, existing: &[Devices]) -> (Vec<Opened>, bool) {
    let live = |key: &str| existing.iter().any(|l| l.key == key && l.changer.is_some());
    let mut out: Vec<Opened> = Vec::new();
    let mut failed = false;
    for lc in &setup.config.libraries {
        if let Source::Vlib(dir) = &lc.source {
            let key = format!("vlib:{}", dir.display());
            if live(&key) || out.iter().any(|l| l.spec.key == key) {
                continue;
            }
            match open_vlib(dir, Some(lc)) {
                Ok(l) => out.push(l),
                Err(e) => log::warn!("library {:?} (vlib {}): {e}", lc.name, dir.display()),
            }
        }
    }
    let wants_hw = setup.config.discover || setup.config.libraries.iter().any(|l| !matches!(l.source, Source::Vlib(_)));
    if !wants_hw {
        return (out, failed);
    }
    let devices = match discover::scan(&setup.sysfs_root, &setup.dev_root) {
        Ok(d) => d,
        Err(e) => {
            log::warn!("scanning {}: {e}", setup.sysfs_root.display());
            return (out, failed);
        }
    };
    let tapes: Vec<&discover::ScsiDevice> = devices.iter().filter(|d| d.kind == DeviceKind::Tape).collect();
    for ch in devices.iter().filter(|d| d.kind == DeviceKind::Changer) {
        let key = ch.sg.display().to_string();
        if live(&key) {
            continue;
        }
        // Which configuration entry names this changer by path (serials are matched after probing).
        let by_path = setup.config.libraries.iter().find(|l| match &l.source {
            Source::Path(p) => std::fs::canonicalize(p).ok().as_deref() == Some(ch.sg.as_path()) || p == &ch.sg,
            _ => false,
        });
        let wanted = setup.config.discover
            || by_path.is_some()
            || setup.config.libraries.iter().any(|l| matches!(l.source, Source::Auto | Source::Serial(_)));
        if !wanted {
            continue;
        }
        let changer = match SgTransport::open(&ch.sg) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("{}: {e}; trying again shortly", ch.sg.display());
                failed = true;
                continue;
            }
        };
        let transports = tapes
            .iter()
            .map(|t| match SgTransport::open(&t.sg) {
                Ok(x) => Some(Box::new(x) as Box<dyn Transport>),
                Err(e) => {
                    log::warn!("{}: {e}", t.sg.display());
                    None
                }
            })
            .collect();
        let drives = tapes
            .iter()
            .map(|t| DriveDevice {
                path: t.sg.display().to_string(),
                nst: t.nst.as_ref().map(|p| p.display().to_string()),
            })
            .collect();
        log::info!("changer {} ({} {}) with {} tape drives on the system", key, ch.vendor, ch.model, tapes.len());
        let spec = LibrarySpec {
            label: key.clone(),
            key,
            name: by_path.and_then(|l| l.name.clone()),
            drives,
            options: options(by_path),
        };
        out.push(Opened { spec, changer: Box::new(changer), drives: transports });
    }
    (out, failed)
}
