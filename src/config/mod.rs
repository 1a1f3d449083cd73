//! Configuration: `/etc/rsmd/rsmd.toml` (or `--config FILE`), validated with errors that name the key.
//!
//! ```toml
//! socket = "/run/rsmd/rsmd.sock"      # where clients connect (systemd socket activation overrides it)
//! state_dir = "/var/lib/rsmd"         # the inventory database
//! discover = true                     # also serve every changer found in sysfs (default: true when no library
//!                                     # is configured, false otherwise)
//!
//! [[library]]
//! name = "main"                       # shown to clients; default: vendor + product
//! changer = "serial:00L4U78C4823_LL0" # or "auto", "/dev/tape/by-id/scsi-…", "/dev/sg5"
//! chunk = 256                         # elements per READ ELEMENT STATUS
//! heartbeat_ms = 30000                # TEST UNIT READY on an idle changer: notices resets and door openings
//! [library.drives]                    # drive serial → data transfer element address, for libraries without DVCID
//! "HU1234567" = 256
//!
//! [[library]]
//! name = "test"
//! vlib = "/run/vlib"                  # a vlib emulator's listen directory instead of hardware
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::broker::access::{AccessRules, Grant, Rights, Scope};
use crate::changer::{self, LibraryOptions};
use crate::media::pools::{MediaRules, Target};

pub mod reference;

/// Default configuration file.
pub const DEFAULT_PATH: &str = "/etc/rsmd/rsmd.toml";
/// Default socket.
pub const DEFAULT_SOCKET: &str = "/run/rsmd/rsmd.sock";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/rsmd";
/// Default time a drive may take to become ready after a load: the changer's [`changer::mounts::READY_TIMEOUT_MS`].
pub const DEFAULT_READY_TIMEOUT_MS: u64 = changer::mounts::READY_TIMEOUT_MS;
/// Default time a deferred dismount leaves the cartridge loaded: the changer's [`changer::DEFERRED_DISMOUNT_MS`].
pub const DEFAULT_DEFERRED_DISMOUNT_MS: u64 = changer::DEFERRED_DISMOUNT_MS;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("Cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown key or a wrong type (the message names it).
    #[error("Invalid configuration: {0}")]
    Syntax(String),
    /// A value is out of range or inconsistent.
    #[error("Invalid configuration key {key} at line {line}: {reason}")]
    Value {
        /// The key, dotted (`library[0].chunk`).
        key: String,
        /// The line of the value (1-based).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// An error in a configuration file.
    #[error("In {path}")]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: Box<ConfigError>,
    },
}

/// Where a library's changer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The only changer found (or each one, with discovery).
    Auto,
    /// The changer whose unit serial number is this.
    Serial(String),
    /// A device path (`/dev/sgN`, `/dev/tape/by-id/…`, `/dev/schN`).
    Path(PathBuf),
    /// A vlib emulator's listen directory.
    Vlib(PathBuf),
}

/// One configured library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryConfig {
    /// Name shown to clients.
    pub name: Option<String>,
    /// Where the changer is.
    pub source: Source,
    /// Elements per READ ELEMENT STATUS.
    pub chunk: u16,
    /// Explicit drive mapping: serial → element address.
    pub drives: BTreeMap<String, u16>,
    /// Interval of the TEST UNIT READY heartbeat that notices door openings and resets (ms).
    pub heartbeat_ms: u64,
    /// How long a drive may take to become ready after a load before the mount fails (ms).
    pub ready_timeout_ms: u64,
    /// How long a deferred dismount leaves the cartridge loaded (ms).
    pub deferred_dismount_ms: u64,
    /// Inject what an operator puts in the mail slots without being asked.
    pub auto_inject: bool,
    /// Partitions: the parts applications see (`[[library.partition]]`).
    pub partitions: Vec<crate::model::Partition>,
}

impl LibraryConfig {
    /// A library served by a vlib emulator in `dir`.
    pub fn vlib(name: &str, dir: &Path) -> LibraryConfig {
        let defaults = LibraryOptions::default();
        LibraryConfig {
            name: Some(name.into()),
            source: Source::Vlib(dir.into()),
            chunk: defaults.chunk,
            drives: BTreeMap::new(),
            heartbeat_ms: defaults.heartbeat_ms,
            ready_timeout_ms: DEFAULT_READY_TIMEOUT_MS,
            deferred_dismount_ms: DEFAULT_DEFERRED_DISMOUNT_MS,
            auto_inject: false,
            partitions: Vec::new(),
        }
    }
}

/// The mode of a socket rsmd binds itself, unless configured: owner and group read and write.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;

/// A group, as the configuration names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupSpec {
    /// By name (looked up when the socket is bound).
    Name(String),
    /// By id.
    Gid(u32),
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Socket path.
    pub socket: PathBuf,
    /// The group of a socket rsmd binds itself (None: rsmd's own group).
    pub socket_group: Option<GroupSpec>,
    /// The mode of a socket rsmd binds itself.
    pub socket_mode: u32,
    /// State directory.
    pub state_dir: PathBuf,
    /// Serve every changer found in sysfs as well.
    pub discover: bool,
    /// Configured libraries.
    pub libraries: Vec<LibraryConfig>,
    /// User ids whose sessions administer rsmd: they may dismount a cartridge another session mounted, and
    /// cancel or reorder other sessions' requests. Default: root only.
    pub administrators: Vec<u32>,
    /// Where new cartridges go (`[media]`).
    pub media_rules: MediaRules,
    /// Who may do what (`[access]`).
    pub access: AccessRules,
    /// Connections one user may have open at once (idle ones count; administrators are exempt).
    pub max_connections_per_user: u32,
    /// Bytes all connections together may hold in buffered calls and unsent replies before the ones holding
    /// more than a small share stop being read and served (until their clients read their replies).
    pub memory_budget: usize,
}

/// The default [`Config::memory_budget`] in MiB (the `Default` configuration holds it in bytes).
pub const DEFAULT_MEMORY_BUDGET_MIB: u64 = 256;

/// Connections one user may have open at once unless configured: a backup server's clients open a few each.
pub const DEFAULT_MAX_CONNECTIONS_PER_USER: u32 = 256;

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: DEFAULT_SOCKET.into(),
            socket_group: None,
            socket_mode: DEFAULT_SOCKET_MODE,
            state_dir: DEFAULT_STATE_DIR.into(),
            discover: true,
            libraries: Vec::new(),
            administrators: vec![0],
            media_rules: MediaRules::default(),
            max_connections_per_user: DEFAULT_MAX_CONNECTIONS_PER_USER,
            memory_budget: 256 << 20,
            access: AccessRules::default(),
        }
    }
}

type Spanned<T> = toml::Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    socket: Option<PathBuf>,
    socket_group: Option<Spanned<toml::Value>>,
    socket_mode: Option<Spanned<i64>>,
    max_connections_per_user: Option<Spanned<i64>>,
    memory_budget_mib: Option<Spanned<i64>>,
    state_dir: Option<PathBuf>,
    discover: Option<bool>,
    administrators: Option<Spanned<Vec<i64>>>,
    #[serde(default)]
    library: Vec<Spanned<RawLibrary>>,
    media: Option<RawMedia>,
    access: Option<RawAccess>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMedia {
    new: Option<Spanned<String>>,
    cleaner_uses: Option<Spanned<i64>>,
    #[serde(default)]
    prefixes: BTreeMap<String, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccess {
    admin_groups: Option<Spanned<Vec<i64>>>,
    library: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    grant: Vec<Spanned<RawGrant>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    pool: Option<String>,
    library: Option<String>,
    computer: Option<bool>,
    #[serde(default)]
    uids: Vec<i64>,
    #[serde(default)]
    gids: Vec<i64>,
    #[serde(default)]
    everyone: bool,
    rights: Vec<String>,
}

/// Ids (uids or gids) from TOML integers.
fn ids(v: Vec<i64>, key: &str, line: usize) -> Result<Vec<u32>, ConfigError> {
    v.into_iter()
        .map(|u| {
            u32::try_from(u).map_err(|_| ConfigError::Value {
                key: key.into(),
                line,
                reason: format!("{u} is not a user or group id (0..=4294967295)"),
            })
        })
        .collect()
}

fn rights(v: &[String], key: &str, line: usize) -> Result<Rights, ConfigError> {
    let mut r = Rights::empty();
    for name in v {
        r |= Rights::parse(name).ok_or_else(|| ConfigError::Value {
            key: key.into(),
            line,
            reason: format!("{name:?} is not a right (use, modify, control, all)"),
        })?;
    }
    Ok(r)
}

fn media_rules(raw: Option<RawMedia>, text: &str) -> Result<MediaRules, ConfigError> {
    let Some(raw) = raw else { return Ok(MediaRules::default()) };
    let mut rules = MediaRules::default();
    if let Some(n) = raw.new {
        rules.new_media = match n.get_ref().to_ascii_lowercase().as_str() {
            "free" => Target::Free,
            "import" => Target::Import,
            other => {
                return Err(ConfigError::Value {
                    key: "media.new".into(),
                    line: line_of(text, n.span().start),
                    reason: format!("{other:?} is not \"free\" or \"import\""),
                })
            }
        };
    }
    if let Some(u) = raw.cleaner_uses {
        rules.cleaner_uses = u32::try_from(*u.get_ref()).ok().filter(|u| *u > 0).ok_or_else(|| ConfigError::Value {
            key: "media.cleaner_uses".into(),
            line: line_of(text, u.span().start),
            reason: format!("{} is not a number of cleanings (1 or more)", u.get_ref()),
        })?;
    }
    for (prefix, target) in raw.prefixes {
        let line = line_of(text, target.span().start);
        if prefix.is_empty() {
            return Err(ConfigError::Value { key: "media.prefixes".into(), line, reason: "an empty prefix".into() });
        }
        let t = Target::parse(target.get_ref()).map_err(|reason| ConfigError::Value {
            key: format!("media.prefixes.{prefix}"),
            line,
            reason,
        })?;
        rules.prefixes.push((prefix, t));
    }
    Ok(rules)
}

fn access_rules(raw: Option<RawAccess>, text: &str) -> Result<AccessRules, ConfigError> {
    let Some(raw) = raw else { return Ok(AccessRules::default()) };
    let mut rules = AccessRules::default();
    if let Some(g) = raw.admin_groups {
        let line = line_of(text, g.span().start);
        rules.admin_groups = ids(g.into_inner(), "access.admin_groups", line)?;
    }
    if let Some(l) = raw.library {
        let line = line_of(text, l.span().start);
        rules.library = rights(l.get_ref(), "access.library", line)?;
    }
    for (i, g) in raw.grant.into_iter().enumerate() {
        let line = line_of(text, g.span().start);
        let g = g.into_inner();
        let key = |k: &str| format!("access.grant[{i}].{k}");
        let scope = match (g.pool, g.library, g.computer.unwrap_or(false)) {
            (Some(p), None, false) => {
                Scope::Pool(crate::media::pools::normalize_path(&p).map_err(|reason| ConfigError::Value {
                    key: key("pool"),
                    line,
                    reason,
                })?)
            }
            (None, Some(l), false) => Scope::Library(l),
            (None, None, true) => Scope::Computer,
            _ => {
                return Err(ConfigError::Value {
                    key: key("pool"),
                    line,
                    reason: "a grant names exactly one of pool, library or computer = true".into(),
                })
            }
        };
        let grant = Grant {
            scope,
            uids: ids(g.uids, &key("uids"), line)?,
            gids: ids(g.gids, &key("gids"), line)?,
            everyone: g.everyone,
            rights: rights(&g.rights, &key("rights"), line)?,
        };
        if grant.uids.is_empty() && grant.gids.is_empty() && !grant.everyone {
            return Err(ConfigError::Value {
                key: key("uids"),
                line,
                reason: "a grant names uids, gids or everyone = true".into(),
            });
        }
        rules.grants.push(grant);
    }
    Ok(rules)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLibrary {
    name: Option<Spanned<String>>,
    changer: Option<Spanned<String>>,
    vlib: Option<Spanned<PathBuf>>,
    chunk: Option<Spanned<i64>>,
    heartbeat_ms: Option<Spanned<i64>>,
    ready_timeout_ms: Option<Spanned<i64>>,
    deferred_dismount_ms: Option<Spanned<i64>>,
    auto_inject: Option<bool>,
    #[serde(default)]
    drives: BTreeMap<String, Spanned<i64>>,
    #[serde(default)]
    partition: Vec<Spanned<RawPartition>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPartition {
    name: String,
    application: String,
    slots: Option<String>,
    pool: Option<String>,
    #[serde(default)]
    drives: Vec<i64>,
    #[serde(default)]
    mail_slots: bool,
}

/// The pool a partition owns: an application pool's path (normalised), never a system pool.
fn partition_pool(path: &str) -> Result<String, String> {
    let p = crate::media::pools::normalize_path(path)?;
    if crate::media::pools::system_kind(&p).is_some() {
        return Err(format!("{p:?} is a system pool: a partition owns an application pool"));
    }
    Ok(p)
}

/// Pool path `a` is `b` or below it (compared without case, as pool paths are).
pub fn pool_under(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    a == b || a.strip_prefix(&b).is_some_and(|rest| rest.starts_with('\\'))
}

/// Slot numbers from `1-8,10,12-14`.
fn slot_ranges(s: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let n = |x: &str| x.trim().parse::<u32>().ok().filter(|n| *n > 0);
        match (n(a), n(b)) {
            (Some(a), Some(b)) if a <= b && b - a < 100_000 => out.extend(a..=b),
            _ => return Err(format!("{part:?} is not a slot number or range (1-based: \"1-8,10\")")),
        }
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        return Err("a partition owns at least one slot".into());
    }
    Ok(out)
}

/// The 1-based line of byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// A millisecond setting in `range`, or its default.
fn millis(
    v: Option<Spanned<i64>>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    key: String,
    text: &str,
) -> Result<u64, ConfigError> {
    match v {
        None => Ok(default),
        Some(n) => u64::try_from(*n.get_ref()).ok().filter(|x| range.contains(x)).ok_or_else(|| ConfigError::Value {
            key,
            line: line_of(text, n.span().start),
            reason: format!("{} is not in {}..={}", n.get_ref(), range.start(), range.end()),
        }),
    }
}

impl Config {
    /// Parses configuration text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        let defaults = LibraryOptions::default();
        let mut libraries: Vec<LibraryConfig> = Vec::new();
        let mut names: Vec<(String, usize)> = Vec::new();
        for (i, spanned) in raw.library.into_iter().enumerate() {
            let l = spanned.into_inner();
            let key = |k: &str| format!("library[{i}].{k}");
            let value = |k: &str, span: std::ops::Range<usize>, reason: String| ConfigError::Value {
                key: key(k),
                line: line_of(text, span.start),
                reason,
            };
            let source = match (l.changer, l.vlib) {
                (Some(_), Some(v)) => {
                    return Err(value("vlib", v.span(), "a library has either `changer` or `vlib`, not both".into()))
                }
                (None, Some(dir)) => Source::Vlib(dir.into_inner()),
                (None, None) => Source::Auto,
                (Some(c), None) => match c.get_ref().as_str() {
                    "auto" => Source::Auto,
                    s if s.starts_with("serial:") && s.len() > 7 => Source::Serial(s[7..].to_owned()),
                    s if s.starts_with('/') => Source::Path(s.into()),
                    other => {
                        return Err(value(
                            "changer",
                            c.span(),
                            format!("{other:?} is not \"auto\", \"serial:SERIAL\" or an absolute device path"),
                        ))
                    }
                },
            };
            let chunk = match l.chunk {
                None => defaults.chunk,
                Some(n) => u16::try_from(*n.get_ref())
                    .ok()
                    .filter(|x| (1..=4096).contains(x))
                    .ok_or_else(|| value("chunk", n.span(), format!("{} is not in 1..=4096", n.get_ref())))?,
            };
            let mut drives = BTreeMap::new();
            for (serial, address) in l.drives {
                let a = u16::try_from(*address.get_ref()).map_err(|_| {
                    value(
                        &format!("drives.{serial}"),
                        address.span(),
                        format!("{} is not an element address (0..=65535)", address.get_ref()),
                    )
                })?;
                drives.insert(serial, a);
            }
            let name = match l.name {
                None => None,
                Some(n) if n.get_ref().trim().is_empty() => return Err(value("name", n.span(), "empty".into())),
                Some(n) => {
                    let line = line_of(text, n.span().start);
                    if let Some((_, first)) = names.iter().find(|(x, _)| x == n.get_ref()) {
                        return Err(value(
                            "name",
                            n.span(),
                            format!("{:?} is already the name of the library at line {first}", n.get_ref()),
                        ));
                    }
                    names.push((n.get_ref().clone(), line));
                    Some(n.into_inner())
                }
            };
            let heartbeat_ms =
                millis(l.heartbeat_ms, defaults.heartbeat_ms, 100..=86_400_000, key("heartbeat_ms"), text)?;
            let ready_timeout_ms =
                millis(l.ready_timeout_ms, DEFAULT_READY_TIMEOUT_MS, 100..=86_400_000, key("ready_timeout_ms"), text)?;
            let deferred_dismount_ms = millis(
                l.deferred_dismount_ms,
                DEFAULT_DEFERRED_DISMOUNT_MS,
                0..=86_400_000,
                key("deferred_dismount_ms"),
                text,
            )?;
            libraries.push(LibraryConfig {
                name,
                source,
                chunk,
                drives,
                heartbeat_ms,
                ready_timeout_ms,
                deferred_dismount_ms,
                auto_inject: l.auto_inject.unwrap_or(false),
                partitions: {
                    let mut parts: Vec<crate::model::Partition> = Vec::new();
                    for (j, raw) in l.partition.into_iter().enumerate() {
                        let line = line_of(text, raw.span().start);
                        let raw = raw.into_inner();
                        let pkey = |k: &str| format!("library[{i}].partition[{j}].{k}");
                        let bad = |k: &str, reason: String| ConfigError::Value { key: pkey(k), line, reason };
                        if raw.name.is_empty() || raw.name.contains('/') || parts.iter().any(|p| p.name == raw.name) {
                            return Err(bad(
                                "name",
                                format!("{:?}: a partition needs a unique name without '/'", raw.name),
                            ));
                        }
                        if parts.iter().any(|p| p.application == raw.application) {
                            return Err(bad(
                                "application",
                                format!("{:?} has a partition of this library already", raw.application),
                            ));
                        }
                        let (slots, pool) =
                            match (raw.slots, raw.pool) {
                                (Some(s), None) => (slot_ranges(&s).map_err(|r| bad("slots", r))?, None),
                                (None, Some(p)) => (Vec::new(), Some(partition_pool(&p).map_err(|r| bad("pool", r))?)),
                                _ => return Err(bad(
                                    "slots",
                                    "a partition owns either slots (\"1-8,10\") or a pool (pool = \"Bacula\"), one \
                                     of the two"
                                        .into(),
                                )),
                            };
                        if let Some(p) = parts.iter().find(|p| p.slots.iter().any(|s| slots.contains(s))) {
                            return Err(bad("slots", format!("they overlap partition {}'s", p.name)));
                        }
                        if let Some(p) = parts.iter().find(|p| {
                            let (a, b) = (p.pool.as_deref().unwrap_or_default(), pool.as_deref().unwrap_or_default());
                            !a.is_empty() && !b.is_empty() && (pool_under(a, b) || pool_under(b, a))
                        }) {
                            return Err(bad("pool", format!("it overlaps partition {}'s pool", p.name)));
                        }
                        let drives = raw
                            .drives
                            .iter()
                            .map(|&d| u32::try_from(d).map_err(|_| bad("drives", format!("{d} is not a drive number"))))
                            .collect::<Result<Vec<u32>, _>>()?;
                        parts.push(crate::model::Partition {
                            name: raw.name,
                            application: raw.application,
                            slots,
                            pool,
                            drives,
                            mail_slots: raw.mail_slots,
                        });
                    }
                    parts
                },
            });
        }
        let administrators = match raw.administrators {
            None => vec![0],
            Some(uids) => {
                let line = line_of(text, uids.span().start);
                ids(uids.into_inner(), "administrators", line)?
            }
        };
        let socket_group = match raw.socket_group {
            None => None,
            Some(g) => {
                let line = line_of(text, g.span().start);
                let bad = |reason: String| ConfigError::Value { key: "socket_group".into(), line, reason };
                match g.into_inner() {
                    toml::Value::String(name) if !name.trim().is_empty() => Some(GroupSpec::Name(name)),
                    toml::Value::Integer(gid) => {
                        Some(GroupSpec::Gid(u32::try_from(gid).map_err(|_| bad(format!("{gid} is not a group id")))?))
                    }
                    other => return Err(bad(format!("{other} is not a group name or id"))),
                }
            }
        };
        let socket_mode = match raw.socket_mode {
            None => DEFAULT_SOCKET_MODE,
            Some(m) => u32::try_from(*m.get_ref()).ok().filter(|m| *m <= 0o777).ok_or_else(|| ConfigError::Value {
                key: "socket_mode".into(),
                line: line_of(text, m.span().start),
                reason: format!("{:o} is not a file mode (write it in octal: 0o660)", m.get_ref()),
            })?,
        };
        let max_connections_per_user = match raw.max_connections_per_user {
            None => DEFAULT_MAX_CONNECTIONS_PER_USER,
            Some(m) => u32::try_from(*m.get_ref()).ok().filter(|m| *m >= 1).ok_or_else(|| ConfigError::Value {
                key: "max_connections_per_user".into(),
                line: line_of(text, m.span().start),
                reason: format!("{} is not a number of connections (1 or more)", m.get_ref()),
            })?,
        };
        let memory_budget = match raw.memory_budget_mib {
            None => DEFAULT_MEMORY_BUDGET_MIB << 20,
            Some(m) => {
                u64::try_from(*m.get_ref()).ok().filter(|m| (16..=1 << 20).contains(m)).map(|m| m << 20).ok_or_else(
                    || ConfigError::Value {
                        key: "memory_budget_mib".into(),
                        line: line_of(text, m.span().start),
                        reason: format!("{} is not a budget in MiB (16 to 1048576)", m.get_ref()),
                    },
                )?
            }
        };
        let memory_budget = usize::try_from(memory_budget).unwrap_or(usize::MAX);
        let mut media_rules = media_rules(raw.media, text)?;
        media_rules.pools = libraries.iter().flat_map(|l| &l.partitions).filter_map(|p| p.pool.clone()).collect();
        Ok(Config {
            socket_group,
            socket_mode,
            max_connections_per_user,
            memory_budget,
            media_rules,
            access: access_rules(raw.access, text)?,
            administrators,
            socket: raw.socket.unwrap_or_else(|| DEFAULT_SOCKET.into()),
            state_dir: raw.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            discover: raw.discover.unwrap_or(libraries.is_empty()),
            libraries,
        })
    }

    /// Reads and parses a file; errors name it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Config::parse(&text).map_err(|e| ConfigError::File { path: path.into(), source: Box::new(e) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_means_discovery() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn full_example_parses() {
        let c = Config::parse(
            r#"
            socket = "/tmp/s.sock"
            [[library]]
            name = "main"
            changer = "serial:ABC"
            chunk = 100
            [library.drives]
            "HU1" = 256
            [[library]]
            vlib = "/run/vlib"
            [[library]]
            changer = "/dev/tape/by-id/scsi-1"
            "#,
        )
        .unwrap();
        assert_eq!(c.socket, PathBuf::from("/tmp/s.sock"));
        assert!(!c.discover);
        assert_eq!(c.libraries[0].source, Source::Serial("ABC".into()));
        assert_eq!(c.libraries[0].chunk, 100);
        assert_eq!(c.libraries[0].drives.get("HU1"), Some(&256));
        assert_eq!(c.libraries[1].source, Source::Vlib("/run/vlib".into()));
        assert_eq!(c.libraries[2].source, Source::Path("/dev/tape/by-id/scsi-1".into()));
        assert_eq!(c.administrators, vec![0], "root administers by default");
        assert_eq!(Config::parse("administrators = [0, 1000]").unwrap().administrators, vec![0, 1000]);
        assert!(Config::parse("administrators = []").unwrap().administrators.is_empty());
    }

    /// Issue 14: partitions are checked: slot ranges, no overlap, one partition per application, unique names.
    #[test]
    fn partitions_are_checked() {
        let lib = |parts: &str| format!("[[library]]\nvlib = \"/v\"\n{parts}");
        let part = |name: &str, app: &str, slots: &str| {
            format!("[[library.partition]]\nname = \"{name}\"\napplication = \"{app}\"\nslots = \"{slots}\"\ndrives = [0]\n")
        };
        let c = Config::parse(&lib(&(part("a", "A", "1-3, 7") + &part("b", "B", "4-6")))).unwrap();
        let p = &c.libraries[0].partitions;
        assert_eq!(
            (p[0].slots.clone(), p[1].slots.clone(), p[0].drives.clone()),
            (vec![1, 2, 3, 7], vec![4, 5, 6], vec![0])
        );
        let err = |text: String| Config::parse(&text).unwrap_err().to_string();
        assert!(err(lib(&(part("a", "A", "1-3") + &part("b", "B", "3-4")))).contains("overlap"));
        assert!(
            err(lib(&(part("a", "A", "1-3") + &part("b", "A", "4-5")))).contains("library[0].partition[1].application")
        );
        assert!(err(lib(&(part("a", "A", "1-3") + &part("a", "B", "4-5")))).contains("library[0].partition[1].name"));
        assert!(err(lib(&part("a", "A", "3-1"))).contains("library[0].partition[0].slots"));
        assert!(err(lib(&part("a/b", "A", "1"))).contains("name"));
        assert!(err(lib(&part("a", "A", "0"))).contains("slots"));
    }

    /// Issue 14: a partition owns slots or an application pool, never both, never a system pool, never a pool
    /// another partition's pool holds or is held by; its pool is created when missing (a media rule's pool).
    #[test]
    fn partitions_own_slots_or_a_pool() {
        let lib = |parts: &str| format!("[[library]]\nvlib = \"/v\"\n{parts}");
        let part = |name: &str, app: &str, owns: &str| {
            format!("[[library.partition]]\nname = \"{name}\"\napplication = \"{app}\"\n{owns}\ndrives = [0]\n")
        };
        let c = Config::parse(&lib(&(part("a", "A", "pool = '\\Bacula\\Full'") + &part("b", "B", "slots = '4-6'"))))
            .unwrap();
        let p = &c.libraries[0].partitions;
        assert_eq!((p[0].pool.as_deref(), p[0].slots.len()), (Some("Bacula\\Full"), 0));
        assert_eq!((p[1].pool.as_deref(), p[1].slots.clone()), (None, vec![4, 5, 6]));
        assert_eq!(c.media_rules.pools, vec!["Bacula\\Full".to_owned()]);
        let err = |text: String| Config::parse(&text).unwrap_err().to_string();
        let both = err(lib(&part("a", "A", "pool = 'Bacula'\nslots = '1'")));
        assert!(both.contains("library[0].partition[0].slots") && both.contains("either"), "{both}");
        assert!(err(lib(&part("a", "A", ""))).contains("either"));
        assert!(err(lib(&part("a", "A", "pool = 'Free\\LTO-6'"))).contains("system pool"));
        assert!(err(lib(&part("a", "A", "pool = 'A\\\\B'"))).contains("library[0].partition[0].pool"));
        let nested = err(lib(&(part("a", "A", "pool = 'Bacula'") + &part("b", "B", "pool = 'bacula\\Full'"))));
        assert!(nested.contains("overlaps partition a"), "{nested}");
        assert!(!pool_under("Baculax", "Bacula") && pool_under("BACULA\\x", "bacula") && pool_under("a", "A"));
    }

    #[test]
    fn defaults_are_the_changers() {
        let l = &Config::parse("[[library]]").unwrap().libraries[0];
        let o = LibraryOptions::default();
        assert_eq!(
            (l.chunk, l.heartbeat_ms, l.ready_timeout_ms, l.deferred_dismount_ms),
            (o.chunk, o.heartbeat_ms, o.ready_timeout_ms, o.deferred_dismount_ms)
        );
        let v = LibraryConfig::vlib("v", Path::new("/run/vlib"));
        assert_eq!((v.chunk, v.heartbeat_ms, v.ready_timeout_ms), (o.chunk, o.heartbeat_ms, o.ready_timeout_ms));
    }

    /// Issue 15: range errors had no line; duplicate library names were accepted; errors did not name the file.
    #[test]
    fn errors_name_the_line_and_the_file_and_names_are_unique() {
        let err = |t: &str| Config::parse(t).unwrap_err().to_string();
        assert_eq!(
            err("socket = \"/s\"\n\n[[library]]\nchunk = 0"),
            "Invalid configuration key library[0].chunk at line 4: 0 is not in 1..=4096"
        );
        assert!(err("[[library]]\nheartbeat_ms = 5").contains("at line 2"));
        assert!(err("administrators = [0,\n -1]").contains("administrators at line 1"));
        let dup = err("[[library]]\nname = \"a\"\n[[library]]\nname = \"a\"");
        assert!(
            dup.contains("library[1].name at line 4") && dup.contains("already the name of the library at line 2"),
            "{dup}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rsmd.toml");
        std::fs::write(&path, "[[library]]\nchunk = 99999\n").unwrap();
        let e = Config::load(&path).unwrap_err();
        let chain = crate::error_chain(&e);
        assert!(
            chain.starts_with(&format!("In {}: Invalid configuration key library[0].chunk at line 2", path.display())),
            "{chain}"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let err = |t: &str| Config::parse(t).unwrap_err().to_string();
        assert!(err("sockt = 1").contains("sockt"));
        assert!(err("discover = \"yes\"").contains("discover"));
        assert!(err("[[library]]\nchunk = 0").contains("library[0].chunk"));
        assert!(err("[[library]]\nchanger = \"sg5\"").contains("library[0].changer"));
        assert!(err("[[library]]\nchanger = \"auto\"\nvlib = \"/x\"").contains("library[0].vlib"));
        assert!(err("[[library]]\n[library.drives]\nX = 70000").contains("library[0].drives.X"));
        assert!(err("[[library]]\nname = \" \"").contains("library[0].name"));
        assert!(err("[[library]]\ncolour = 1").contains("colour"));
        assert!(err("[[library]]\nheartbeat_ms = 5").contains("library[0].heartbeat_ms"));
        assert!(err("[[library]]\nready_timeout_ms = 0").contains("library[0].ready_timeout_ms"));
        assert!(err("[[library]]\ndeferred_dismount_ms = -1").contains("library[0].deferred_dismount_ms"));
        assert!(err("administrators = [-1]").contains("administrators"));
        assert!(err("administrators = \"root\"").contains("administrators"));
        assert!(matches!(Config::load(Path::new("/nonexistent/rsmd.toml")), Err(ConfigError::Read { .. })));
    }

    #[test]
    fn socket_group_and_mode() {
        let c = Config::parse("socket_group = \"rsm\"\nsocket_mode = 0o640").unwrap();
        assert_eq!((c.socket_group, c.socket_mode), (Some(GroupSpec::Name("rsm".into())), 0o640));
        let c = Config::parse("socket_group = 133").unwrap();
        assert_eq!((c.socket_group, c.socket_mode), (Some(GroupSpec::Gid(133)), DEFAULT_SOCKET_MODE));
        let err = |t: &str| Config::parse(t).unwrap_err().to_string();
        assert!(err("socket_mode = 0o1777").contains("socket_mode at line 1"));
        assert!(err("\nsocket_group = -1").contains("socket_group at line 2"));
        assert!(err("socket_group = true").contains("not a group name or id"));
    }

    #[test]
    fn media_rules_and_access_grants() {
        let c = Config::parse(
            "[media]\nnew = \"import\"\n[media.prefixes]\nCLN = \"cleaner\"\nB = 'Bacula\\Full'\n\
             [access]\nadmin_groups = [34]\nlibrary = [\"use\"]\n\
             [[access.grant]]\npool = \"Bacula\"\ngids = [133]\nrights = [\"use\", \"control\"]\n\
             [[access.grant]]\ncomputer = true\neveryone = true\nrights = [\"all\"]\n",
        )
        .unwrap();
        assert_eq!(c.media_rules.new_media, Target::Import);
        assert!(c.media_rules.prefixes.contains(&("B".into(), Target::Pool("Bacula\\Full".into()))));
        assert!(c.media_rules.prefixes.contains(&("CLN".into(), Target::Cleaner)));
        assert_eq!(c.access.admin_groups, vec![34]);
        assert_eq!(c.access.library, Rights::USE);
        assert_eq!(c.access.grants[0].scope, Scope::Pool("Bacula".into()));
        assert_eq!(c.access.grants[0].rights, Rights::USE | Rights::CONTROL);
        assert_eq!((c.access.grants[1].scope.clone(), c.access.grants[1].everyone), (Scope::Computer, true));
        assert_eq!(Config::parse("").unwrap().access.library, Rights::USE | Rights::CONTROL, "the default");
        let err = |t: &str| Config::parse(t).unwrap_err().to_string();
        assert!(err("[media]\nnew = \"scratch\"").contains("media.new at line 2"));
        assert!(err("[media]\ncleaner_uses = 0").contains("media.cleaner_uses at line 2"));
        assert_eq!(Config::parse("[media]\ncleaner_uses = 30").unwrap().media_rules.cleaner_uses, 30);
        assert!(err("[media.prefixes]\nX = 'Free\\LTO-6'").contains("system pool"));
        assert!(err("[access]\nlibrary = [\"read\"]").contains("not a right"));
        assert!(err("[[access.grant]]\npool = \"A\"\nlibrary = \"l\"\nuids = [1]\nrights = [\"use\"]")
            .contains("exactly one"));
        assert!(err("[[access.grant]]\npool = \"A\"\nrights = [\"use\"]").contains("uids, gids or everyone"));
        assert!(
            err("[[access.grant]]\npool = \"A\"\ngids = [-2]\nrights = [\"use\"]").contains("not a user or group id")
        );
    }
}
