//! Media pools and the life cycle of a cartridge's side (RSM §1.4–1.5, §2.3–2.5): where a new cartridge goes,
//! allocation and deallocation, completion, decommissioning, swaps, moves between pools, enabling and disabling.
//!
//! Rules (one home for each):
//! - Every cartridge is in exactly one pool. The system pools are `Free`, `Import` and `Unrecognized`, each
//!   holding one leaf per media type (`Free\LTO-6`); application pools are created by applications or the
//!   administrator, nested by name (`Bacula\Full`). A pool holds media or pools, never both.
//! - A new cartridge goes where the first matching barcode prefix of the configuration says (`CLN` → cleaner,
//!   `B` → `Bacula\Full`); otherwise a cartridge whose barcode names a known media type goes to the configured
//!   new-media pool (Free unless configured `import`), and one without a readable barcode or with an unknown type
//!   to Unrecognized.
//! - Allocation gives an Available side of the pool (drawing from Free when the pool allows), a new logical media
//!   id (LMID), and counts; deallocation makes the side Available again (or Decommissioned at the pool's maximum),
//!   back in Free when the pool returns media there.
//! - Every change bumps the object's `version`: a field-level update that names a stale version is refused.
//!
//! Each operation checks everything before it changes anything, so an error leaves the inventory as it was.

use std::collections::BTreeSet;

use super::{compat, Inventory};
use crate::model::{Change, Guid, MediaKind, MediaRecord, Owner, PoolKind, PoolRecord, SideState};

/// The separator of pool path levels.
pub const SEP: char = '\\';
/// The longest pool path (RSM's pool path limit).
pub const MAX_POOL_PATH: usize = 512;
/// The longest name of one pool level or of a cartridge.
pub const MAX_NAME: usize = 64;
/// The longest description.
pub const MAX_DESCRIPTION: usize = 127;
/// The media type of a cartridge whose barcode names none.
pub const UNKNOWN_TYPE: &str = "unknown";

/// Where the new-media rule sends a cartridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A cleaning cartridge (kept in Free of its type, never allocated).
    Cleaner,
    /// The Free pool of its type.
    Free,
    /// The Import pool of its type.
    Import,
    /// The Unrecognized pool of its type.
    Unrecognized,
    /// An application pool, by path (created, owned by root, when missing).
    Pool(String),
}

impl Target {
    /// Parses a rule's target: `cleaner`, `free`, `import`, `unrecognized` or an application pool path.
    pub fn parse(s: &str) -> Result<Target, String> {
        match s.to_ascii_lowercase().as_str() {
            "cleaner" => Ok(Target::Cleaner),
            "free" => Ok(Target::Free),
            "import" => Ok(Target::Import),
            "unrecognized" => Ok(Target::Unrecognized),
            _ => {
                let path = normalize_path(s)?;
                if system_kind(&path).is_some() {
                    return Err(format!("{s:?} is a system pool; say free, import or unrecognized"));
                }
                Ok(Target::Pool(path))
            }
        }
    }
}

/// The new-media rule, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRules {
    /// Barcode prefix → target; the longest matching prefix wins (compared without case).
    pub prefixes: Vec<(String, Target)>,
    /// Where a cartridge of a known media type goes when no prefix matches: Free or Import.
    pub new_media: Target,
    /// Cleanings a cleaning cartridge is good for (it is retired after that many).
    pub cleaner_uses: u32,
    /// Application pools the configuration names elsewhere (partitions that own a pool): created when missing.
    pub pools: Vec<String>,
}

/// Cleanings a cleaning cartridge is good for when the configuration does not say (LTO cleaners: 50).
pub const CLEANER_USES: u32 = 50;

impl Default for MediaRules {
    fn default() -> Self {
        MediaRules { prefixes: Vec::new(), new_media: Target::Free, cleaner_uses: CLEANER_USES, pools: Vec::new() }
    }
}

/// Why a pool or life-cycle operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// No such pool, or a system pool where an application pool is needed.
    #[error("{0}")]
    InvalidPool(String),
    /// No such cartridge or logical media.
    #[error("{0}")]
    InvalidMedia(String),
    /// A name or value is not acceptable.
    #[error("{0}")]
    InvalidName(String),
    /// The pool exists already (create-new).
    #[error("{0}")]
    AlreadyExists(String),
    /// The pool still holds media or pools.
    #[error("{0}")]
    NotEmpty(String),
    /// The side or cartridge is not in a state that allows it.
    #[error("{0}")]
    InvalidState(String),
    /// The cartridge is mounted or being moved.
    #[error("{0}")]
    Busy(String),
    /// The cartridge's media type does not fit the pool.
    #[error("{0}")]
    Incompatible(String),
    /// No cartridge is available to allocate.
    #[error("{0}")]
    Unavailable(String),
    /// The caller's version of the object is stale.
    #[error("{0}")]
    Stale(String),
}

/// How CreateMediaPool treats an existing pool (RSM's `NTMS_OPEN_EXISTING` / `CREATE_NEW` / `OPEN_ALWAYS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CreateAction {
    /// Only open an existing pool.
    OpenExisting,
    /// Only create a new pool.
    CreateNew,
    /// Open, or create when missing.
    #[default]
    OpenAlways,
}

/// What an allocation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocateArgs {
    /// The application pool to allocate in.
    pub pool: Guid,
    /// A given cartridge (Available in the pool or in Free, or in Import), instead of any.
    pub media: Option<Guid>,
    /// Who allocates.
    pub owner: Owner,
    /// Unix ms.
    pub now: u64,
}

/// What an allocation gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The cartridge.
    pub media: Guid,
    /// Its new logical media id.
    pub lmid: Guid,
    /// The pool it came from (the pool itself, Free or Import).
    pub from: Guid,
}

/// Field-level changes of SetObjectInformation; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// The version the caller read (None: no check).
    pub version: Option<u64>,
    /// New description.
    pub description: Option<String>,
    /// New name (application pools: the last level of the path).
    pub name: Option<String>,
    /// Pool policy: draw from Free.
    pub draw_from_free: Option<bool>,
    /// Pool policy: return to Free.
    pub return_to_free: Option<bool>,
    /// Pool policy: maximum allocations (0 = none).
    pub max_allocations: Option<u32>,
    /// Pool media type (only while the pool holds no media).
    pub media_type: Option<String>,
}

/// Checks and normalises a pool path: levels separated by `\` (a leading `\` is dropped), each level 1..=64
/// printable characters without `/`, the whole at most 512.
pub fn normalize_path(s: &str) -> Result<String, String> {
    let t = s.trim().trim_start_matches(SEP);
    if t.is_empty() {
        return Err("a pool needs a name".into());
    }
    if t.len() > MAX_POOL_PATH {
        return Err(format!("pool path longer than {MAX_POOL_PATH} bytes"));
    }
    for level in t.split(SEP) {
        if level.is_empty() || level.len() > MAX_NAME || level.trim() != level {
            return Err(format!(
                "{s:?}: each level of a pool path is 1..={MAX_NAME} characters without leading or trailing blanks, \
                 levels separated by one \\"
            ));
        }
        if level.chars().any(|c| c.is_control() || c == '/') {
            return Err(format!("{s:?}: a pool name may not hold control characters or '/'"));
        }
    }
    Ok(t.to_owned())
}

/// The kind of a system pool path (`Free`, `Free\LTO-6`, …), None for application pools.
pub fn system_kind(path: &str) -> Option<PoolKind> {
    let top = path.split(SEP).next().unwrap_or("");
    [("free", PoolKind::Free), ("import", PoolKind::Import), ("unrecognized", PoolKind::Unrecognized)]
        .into_iter()
        .find(|(n, _)| top.eq_ignore_ascii_case(n))
        .map(|(_, k)| k)
}

fn system_name(kind: PoolKind) -> &'static str {
    match kind {
        PoolKind::Free => "Free",
        PoolKind::Import => "Import",
        PoolKind::Unrecognized => "Unrecognized",
        PoolKind::Application => "",
    }
}

/// The media type of a cartridge: the LTO type its barcode names, else `unknown`.
pub fn media_type_name(m: &MediaRecord) -> String {
    m.barcode.as_deref().and_then(compat::media_type).map_or_else(|| UNKNOWN_TYPE.to_owned(), |t| t.name)
}

/// The LMID of the `n`th allocation of a cartridge: unique, and the same when a crashed batch is replayed.
pub fn lmid_of(media: Guid, n: u32) -> Guid {
    Guid::derive("logical-media", &format!("{media}:{n}"))
}

impl Inventory {
    // --- Reading --------------------------------------------------------------------------------------------

    /// All pools, by id.
    pub fn pools(&self) -> impl Iterator<Item = &PoolRecord> {
        self.pools.values()
    }

    /// A pool by id.
    pub fn pool(&self, id: Guid) -> Option<&PoolRecord> {
        self.pools.get(&id)
    }

    /// A pool by path, in any case.
    pub fn pool_by_name(&self, path: &str) -> Option<&PoolRecord> {
        let p = normalize_path(path).ok()?;
        self.pool_names.get(&p.to_ascii_lowercase()).and_then(|id| self.pools.get(id))
    }

    /// Whether cartridge `m` is in pool `path` or below it.
    pub fn in_pool_tree(&self, m: &MediaRecord, path: &str) -> bool {
        let name = m.pool.and_then(|p| self.pools.get(&p)).map(|p| p.name.as_str());
        name.is_some_and(|name| crate::config::pool_under(name, path))
    }

    /// The storage slots (numbers) of library `library` that are the homes of pool `path`'s cartridges (and its
    /// sub-pools'), in slot order: a partition that owns a pool numbers these 1..N. A loaded cartridge counts by
    /// its home slot; one that has none (out of the library, in a mail slot) is not numbered.
    pub fn pool_slots(&self, library: Guid, path: &str) -> Vec<u32> {
        let storage = |e: &Option<crate::model::Location>| {
            e.filter(|x| x.kind == crate::model::ElementKind::Storage && x.library == library)
        };
        let mut slots: Vec<u32> = self
            .media
            .values()
            .filter(|m| self.in_pool_tree(m, path))
            .filter_map(|m| storage(&m.home).or(storage(&m.location)))
            .filter_map(|s| self.element(library, crate::model::ElementKind::Storage, s.address).map(|e| e.number))
            .collect();
        slots.sort_unstable();
        slots.dedup();
        slots
    }

    /// The cartridge behind a logical media id.
    pub fn media_by_lmid(&self, lmid: Guid) -> Option<&MediaRecord> {
        self.lmids.get(&lmid).and_then(|id| self.rec(id))
    }

    /// The pools directly below `id`.
    pub fn child_pools(&self, id: Guid) -> impl Iterator<Item = &PoolRecord> {
        self.pools.values().filter(move |p| p.parent == Some(id))
    }

    /// How many cartridges are in pool `id`.
    pub fn pool_media_count(&self, id: Guid) -> usize {
        self.pool_index.get(&id).map_or(0, |ix| ix.count)
    }

    /// How many cartridges of pool `id` are allocated or complete.
    pub fn pool_held_count(&self, id: Guid) -> usize {
        self.pool_index.get(&id).map_or(0, |ix| ix.held)
    }

    // --- Setting up -----------------------------------------------------------------------------------------

    /// Takes a new-media rule (configuration loaded or reloaded); applies to cartridges seen from now on.
    pub fn set_rules(&mut self, rules: MediaRules) {
        self.rules = rules;
    }

    /// After loading: the system pools exist, every cartridge is in a pool (records from before pools existed
    /// are placed by the new-media rule), and application pools the rule names exist.
    pub fn settle(&mut self, now: u64) -> Vec<Change> {
        let mut out = Vec::new();
        for kind in [PoolKind::Free, PoolKind::Import, PoolKind::Unrecognized] {
            out.extend(self.ensure_pool(system_name(kind), kind, None, None, now));
        }
        let targets: Vec<String> = self
            .rules
            .prefixes
            .iter()
            .filter_map(|(_, t)| match t {
                Target::Pool(p) => Some(p.clone()),
                _ => None,
            })
            .chain(self.rules.pools.iter().cloned())
            .collect();
        for p in targets {
            out.extend(self.ensure_app_path(&p, now));
        }
        let unplaced: Vec<Guid> = self
            .media
            .values()
            .filter(|m| m.side.is_none() || m.pool.is_none_or(|p| !self.pools.contains_key(&p)))
            .map(|m| m.id)
            .collect();
        for id in unplaced {
            if let Some(mut m) = self.rec(&id).cloned() {
                m.pool = None;
                m.side = None;
                out.extend(self.put_media(m));
            }
        }
        out
    }

    /// Creates a pool if it does not exist.
    fn ensure_pool(
        &mut self,
        path: &str,
        kind: PoolKind,
        media_type: Option<String>,
        parent: Option<Guid>,
        now: u64,
    ) -> Vec<Change> {
        if self.pool_names.contains_key(&path.to_ascii_lowercase()) {
            return Vec::new();
        }
        let rec = PoolRecord {
            id: PoolRecord::id_of(path),
            name: path.to_owned(),
            kind,
            media_type,
            parent,
            draw_from_free: false,
            return_to_free: false,
            max_allocations: None,
            owner: (kind == PoolKind::Application).then_some(Owner { uid: 0, application: None }),
            description: String::new(),
            version: 1,
            created: now,
            modified: now,
        };
        self.put_pool(rec)
    }

    /// An application pool path the configuration names, with its parents.
    fn ensure_app_path(&mut self, path: &str, now: u64) -> Vec<Change> {
        let mut out = Vec::new();
        let mut parent = None;
        let mut so_far = String::new();
        for level in path.split(SEP) {
            if !so_far.is_empty() {
                so_far.push(SEP);
            }
            so_far.push_str(level);
            out.extend(self.ensure_pool(&so_far, PoolKind::Application, None, parent, now));
            parent = self.pool_names.get(&so_far.to_ascii_lowercase()).copied();
        }
        out
    }

    /// The leaf system pool of `kind` for `media_type`, created when missing.
    fn system_leaf(&mut self, kind: PoolKind, media_type: &str, now: u64, out: &mut Vec<Change>) -> Guid {
        let top = system_name(kind);
        out.extend(self.ensure_pool(top, kind, None, None, now));
        let path = format!("{top}{SEP}{media_type}");
        let parent = self.pool_names.get(&top.to_ascii_lowercase()).copied();
        out.extend(self.ensure_pool(&path, kind, Some(media_type.to_owned()), parent, now));
        self.pool_names[&path.to_ascii_lowercase()]
    }

    pub(super) fn put_pool(&mut self, p: PoolRecord) -> Vec<Change> {
        if self.pools.get(&p.id) == Some(&p) {
            return Vec::new();
        }
        if let Some(old) = self.pools.get(&p.id) {
            self.pool_names.remove(&old.name.to_ascii_lowercase());
        }
        self.pool_names.insert(p.name.to_ascii_lowercase(), p.id);
        self.pools.insert(p.id, p.clone());
        vec![Change::Pool(p)]
    }

    /// Places a cartridge that is in no pool yet by the new-media rule (called for every record stored).
    pub(super) fn place(&mut self, m: &mut MediaRecord, out: &mut Vec<Change>) {
        if m.side.is_some() && m.pool.is_some() {
            return;
        }
        let now = self.clock;
        let barcode = m.barcode.as_deref().unwrap_or("");
        let rule = self
            .rules
            .prefixes
            .iter()
            .filter(|(p, _)| !barcode.is_empty() && barcode.get(..p.len()).is_some_and(|b| b.eq_ignore_ascii_case(p)))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, t)| t.clone());
        let known = m.barcode.as_deref().and_then(compat::media_type);
        let target = match rule {
            Some(t) => t,
            None if m.kind == MediaKind::Cleaning => Target::Cleaner,
            None if known.is_some() => self.rules.new_media.clone(),
            None => Target::Unrecognized,
        };
        let ty = media_type_name(m);
        let (pool, side) = match target {
            Target::Cleaner => {
                m.kind = MediaKind::Cleaning;
                (self.system_leaf(PoolKind::Free, &ty, now, out), SideState::Available)
            }
            Target::Free => (self.system_leaf(PoolKind::Free, &ty, now, out), SideState::Available),
            Target::Import => (self.system_leaf(PoolKind::Import, &ty, now, out), SideState::Import),
            Target::Unrecognized => (self.system_leaf(PoolKind::Unrecognized, &ty, now, out), SideState::Foreign),
            Target::Pool(path) => {
                out.extend(self.ensure_app_path(&path, now));
                let id = self.pool_names[&path.to_ascii_lowercase()];
                if self.child_pools(id).next().is_some() {
                    log::warn!("media rule sends {barcode} to {path}, which holds pools: it goes to Free instead");
                    (self.system_leaf(PoolKind::Free, &ty, now, out), SideState::Available)
                } else {
                    (id, SideState::Available)
                }
            }
        };
        m.pool = Some(pool);
        m.side = Some(side);
        if m.version == 0 {
            m.version = 1;
        }
    }

    // --- Pools ----------------------------------------------------------------------------------------------

    /// CreateMediaPool: opens or creates application pool `path` (its parent must exist and hold no media).
    /// Returns the pool and whether it was created.
    pub fn create_pool(
        &mut self,
        path: &str,
        media_type: Option<&str>,
        action: CreateAction,
        owner: Owner,
        now: u64,
    ) -> Result<(Guid, bool, Vec<Change>), PoolError> {
        let path = normalize_path(path).map_err(PoolError::InvalidName)?;
        if let Some(p) = self.pool_by_name(&path) {
            return match action {
                CreateAction::CreateNew => Err(PoolError::AlreadyExists(format!("pool {} exists", p.name))),
                _ => Ok((p.id, false, Vec::new())),
            };
        }
        if action == CreateAction::OpenExisting {
            return Err(PoolError::InvalidPool(format!("no pool {path}")));
        }
        if system_kind(&path).is_some() {
            return Err(PoolError::InvalidPool(format!(
                "{path} would be a system pool: Free, Import and Unrecognized pools are made by rsmd"
            )));
        }
        let parent = match path.rsplit_once(SEP) {
            None => None,
            Some((up, _)) => {
                let p = self
                    .pool_by_name(up)
                    .ok_or_else(|| PoolError::InvalidPool(format!("no pool {up}: create it first, then {path}")))?;
                if p.kind != PoolKind::Application {
                    return Err(PoolError::InvalidPool(format!("{up} is a system pool: pools cannot go under it")));
                }
                if self.pool_media_count(p.id) > 0 {
                    return Err(PoolError::InvalidPool(format!(
                        "{up} holds media: a pool holds media or pools, not both"
                    )));
                }
                Some(p.id)
            }
        };
        let media_type = match media_type {
            Some(t) if t.trim().is_empty() || t.len() > MAX_NAME => {
                return Err(PoolError::InvalidName(format!("{t:?} is not a media type name")))
            }
            t => t.map(str::to_owned),
        };
        let mut rec = PoolRecord {
            id: PoolRecord::id_of(&path),
            name: path.clone(),
            kind: PoolKind::Application,
            media_type,
            parent,
            draw_from_free: false,
            return_to_free: false,
            max_allocations: None,
            owner: Some(owner),
            description: String::new(),
            version: 1,
            created: now,
            modified: now,
        };
        // A pool renamed away from this path keeps its id: the new pool here takes another.
        while self.pools.contains_key(&rec.id) {
            rec.id = Guid::derive("pool-again", &rec.id.to_string());
        }
        let id = rec.id;
        Ok((id, true, self.put_pool(rec)))
    }

    /// DeleteMediaPool: only an empty application pool.
    pub fn delete_pool(&mut self, id: Guid) -> Result<Vec<Change>, PoolError> {
        let p = self.pools.get(&id).ok_or_else(|| PoolError::InvalidPool(format!("no pool {id}")))?;
        if p.kind != PoolKind::Application {
            return Err(PoolError::InvalidPool(format!("{} is a system pool: it cannot be deleted", p.name)));
        }
        if self.pool_media_count(id) > 0 {
            return Err(PoolError::NotEmpty(format!(
                "{} holds {} cartridge(s): move or deallocate them first",
                p.name,
                self.pool_media_count(id)
            )));
        }
        if let Some(c) = self.child_pools(id).next() {
            return Err(PoolError::NotEmpty(format!("{} holds pool {}: delete it first", p.name, c.name)));
        }
        let name = p.name.to_ascii_lowercase();
        self.pools.remove(&id);
        self.pool_names.remove(&name);
        Ok(vec![Change::RemovePool(id)])
    }

    /// Resolves a destination pool for a cartridge of type `ty`: a system pool named by its top level
    /// (`Free`) means that kind's leaf for the type.
    fn leaf_for(&mut self, pool: Guid, ty: &str, now: u64, out: &mut Vec<Change>) -> Result<Guid, PoolError> {
        let p = self.pools.get(&pool).ok_or_else(|| PoolError::InvalidPool(format!("no pool {pool}")))?;
        if p.kind != PoolKind::Application {
            if p.parent.is_none() {
                let kind = p.kind;
                return Ok(self.system_leaf(kind, ty, now, out));
            }
            if p.media_type.as_deref() != Some(ty) {
                return Err(PoolError::Incompatible(format!(
                    "{} holds {} media, not {ty}",
                    p.name,
                    p.media_type_str()
                )));
            }
            return Ok(pool);
        }
        if let Some(c) = self.child_pools(pool).next() {
            return Err(PoolError::InvalidPool(format!(
                "{} holds pools ({}): media go into a pool without sub-pools",
                p.name, c.name
            )));
        }
        if let Some(t) = p.media_type.as_deref().filter(|t| *t != ty) {
            return Err(PoolError::Incompatible(format!("{} holds {t} media; this cartridge is {ty}", p.name)));
        }
        Ok(pool)
    }

    fn medium_checked(&self, id: Guid) -> Result<&MediaRecord, PoolError> {
        self.rec(&id).ok_or_else(|| PoolError::InvalidMedia(format!("no cartridge {id}")))
    }

    fn label(m: &MediaRecord) -> String {
        m.barcode.clone().unwrap_or_else(|| m.id.to_string())
    }

    /// MoveToMediaPool, with RSM's rules: media of a held side (allocated, complete, reserved) never goes to
    /// Free; into Import only Import sides; media in Import or Unrecognized only to Free (or allocated into an
    /// application pool with AllocateMedia); a mounted cartridge does not move.
    pub fn move_to_pool(&mut self, media: Guid, pool: Guid, now: u64) -> Result<Vec<Change>, PoolError> {
        let m = self.medium_checked(media)?.clone();
        let ty = media_type_name(&m);
        let mut out = Vec::new();
        let dest = self.leaf_for(pool, &ty, now, &mut out)?;
        let dest_kind = self.pools[&dest].kind;
        let side = m.side.unwrap_or(SideState::Available);
        let from_kind = m.pool.and_then(|p| self.pools.get(&p)).map(|p| p.kind);
        if m.mounted_by.is_some() {
            return Err(PoolError::Busy(format!("{} is mounted: dismount it first", Self::label(&m))));
        }
        match dest_kind {
            PoolKind::Free if side.is_held() => {
                return Err(PoolError::InvalidState(format!(
                    "{} is {}: deallocate it before it goes to Free",
                    Self::label(&m),
                    side.name()
                )))
            }
            PoolKind::Import if side != SideState::Import => {
                return Err(PoolError::InvalidState(format!(
                    "only cartridges of unknown origin go to Import; {} is {}",
                    Self::label(&m),
                    side.name()
                )))
            }
            _ => {}
        }
        if matches!(from_kind, Some(PoolKind::Import | PoolKind::Unrecognized)) && dest_kind == PoolKind::Application {
            return Err(PoolError::InvalidState(format!(
                "{} is in {}: move it to Free first, or allocate it straight into the application pool",
                Self::label(&m),
                self.pools[&m.pool.unwrap_or_default()].name
            )));
        }
        if m.kind == MediaKind::Cleaning && dest_kind != PoolKind::Free {
            return Err(PoolError::Incompatible(format!(
                "{} is a cleaning cartridge: it stays in Free",
                Self::label(&m)
            )));
        }
        let mut n = m;
        if n.pool == Some(dest) {
            return Ok(out);
        }
        n.pool = Some(dest);
        n.side = Some(match (dest_kind, side) {
            (_, s) if s.is_held() || s == SideState::Decommissioned => s,
            (PoolKind::Import, _) => SideState::Import,
            (PoolKind::Unrecognized, _) => SideState::Foreign,
            _ => SideState::Available,
        });
        touch(&mut n.version, &mut n.modified, now);
        out.extend(self.put_media(n));
        Ok(out)
    }

    /// A label inventory read the cartridge's first block: `label` is what it says (`None`: nothing a recogniser
    /// knows), `blank` when the tape holds no data. A cartridge in a system pool moves by what it is: a blank one
    /// to Free (or where `[media] new` sends new media), a labelled one (another application's or another
    /// system's) to Import, anything else to Unrecognized. Allocated media and application pools are not touched;
    /// the label is recorded either way.
    pub fn set_identified(&mut self, media: Guid, label: Option<String>, blank: bool, now: u64) -> Vec<Change> {
        let Some(m) = self.rec(&media).cloned() else { return Vec::new() };
        let mut out = Vec::new();
        let mut n = m.clone();
        n.on_media = match (&label, blank) {
            (_, true) => Some("blank".into()),
            (Some(l), _) => Some(l.clone()),
            (None, false) => Some("unrecognized data".into()),
        };
        let kind = m.pool.and_then(|p| self.pools.get(&p)).map(|p| p.kind);
        let system = matches!(kind, Some(PoolKind::Free | PoolKind::Import | PoolKind::Unrecognized));
        if system && !m.side.is_some_and(SideState::is_held) && m.kind != MediaKind::Cleaning {
            let ty = media_type_name(&m);
            let (to, side) = match (blank, label.is_some()) {
                (true, _) if self.rules.new_media == Target::Import => (PoolKind::Import, SideState::Import),
                (true, _) => (PoolKind::Free, SideState::Available),
                (false, true) => (PoolKind::Import, SideState::Import),
                (false, false) => (PoolKind::Unrecognized, SideState::Foreign),
            };
            n.pool = Some(self.system_leaf(to, &ty, now, &mut out));
            n.side = Some(side);
        }
        if n != m {
            touch(&mut n.version, &mut n.modified, now);
            out.extend(self.put_media(n));
        }
        out
    }

    // --- Allocation -----------------------------------------------------------------------------------------

    /// AllocateMedia. With `args.media`: that cartridge, Available in the pool or in Free (any application may
    /// draw scratch media), or Import (a one-step import). Without: an Available, enabled cartridge of the pool
    /// (online ones first, then by barcode), else from Free when the pool draws from it.
    pub fn allocate(&mut self, args: &AllocateArgs) -> Result<(Allocation, Vec<Change>), PoolError> {
        let p = self.pools.get(&args.pool).ok_or_else(|| PoolError::InvalidPool(format!("no pool {}", args.pool)))?;
        if p.kind != PoolKind::Application {
            return Err(PoolError::InvalidPool(format!(
                "{} is a system pool: allocate into an application pool (rsm pool create NAME)",
                p.name
            )));
        }
        if let Some(c) = self.child_pools(args.pool).next() {
            return Err(PoolError::InvalidPool(format!(
                "{} holds pools ({}): allocate in one of them",
                p.name, c.name
            )));
        }
        let pool = p.clone();
        let candidate = match args.media {
            Some(id) => {
                let m = self.medium_checked(id)?;
                let from = m.pool.and_then(|p| self.pools.get(&p));
                let side = m.side.unwrap_or(SideState::Available);
                let ok_place = m.pool == Some(args.pool)
                    || from.is_some_and(|f| matches!(f.kind, PoolKind::Free | PoolKind::Import));
                if !ok_place {
                    return Err(PoolError::Unavailable(format!(
                        "{} is in {}, not in {} or Free",
                        Self::label(m),
                        from.map_or("no pool", |f| f.name.as_str()),
                        pool.name
                    )));
                }
                if !matches!(side, SideState::Available | SideState::Import) {
                    return Err(PoolError::Unavailable(format!("{} is {}", Self::label(m), side.name())));
                }
                self.check_allocatable(m, &pool)?;
                m.id
            }
            None => self.pick(&pool).ok_or_else(|| {
                PoolError::Unavailable(format!(
                    "no available cartridge in {}{}",
                    pool.name,
                    if pool.draw_from_free { " or in Free" } else { " (it does not draw from Free)" }
                ))
            })?,
        };
        let mut m = (*self.media[&candidate]).clone();
        let from = m.pool.unwrap_or(args.pool);
        m.allocations += 1;
        let lmid = lmid_of(m.id, m.allocations);
        m.lmid = Some(lmid);
        m.side = Some(SideState::Allocated);
        m.pool = Some(args.pool);
        m.allocated_to = Some(args.owner.clone());
        touch(&mut m.version, &mut m.modified, args.now);
        let mut out = self.put_media(m);
        // A typeless pool takes the type of its first cartridge.
        if pool.media_type.is_none() {
            let mut p = pool.clone();
            p.media_type = Some(media_type_name(&self.media[&candidate]));
            touch(&mut p.version, &mut p.modified, args.now);
            out.extend(self.put_pool(p));
        }
        Ok((Allocation { media: candidate, lmid, from }, out))
    }

    fn check_allocatable(&self, m: &MediaRecord, pool: &PoolRecord) -> Result<(), PoolError> {
        if m.kind == MediaKind::Cleaning {
            return Err(PoolError::Incompatible(format!("{} is a cleaning cartridge", Self::label(m))));
        }
        if !m.enabled {
            return Err(PoolError::Unavailable(format!("{} is disabled", Self::label(m))));
        }
        if m.mounted_by.is_some() {
            return Err(PoolError::Busy(format!("{} is mounted", Self::label(m))));
        }
        let ty = media_type_name(m);
        if let Some(t) = pool.media_type.as_deref().filter(|t| **t != *ty) {
            return Err(PoolError::Incompatible(format!("{} is {ty}; {} holds {t}", Self::label(m), pool.name)));
        }
        Ok(())
    }

    /// The best Available cartridge for `pool`: its own first, then Free's (when it draws from Free); the lowest
    /// barcode of each that is online, enabled, not mounted and of the pool's type.
    fn pick(&self, pool: &PoolRecord) -> Option<Guid> {
        let first_usable = |p: Guid| {
            self.pool_index.get(&p)?.available.iter().find_map(|(barcode, id)| {
                let m = self.rec(id)?;
                (m.location.is_some() && self.check_allocatable(m, pool).is_ok()).then(|| (barcode.clone(), *id))
            })
        };
        if let Some((_, id)) = first_usable(pool.id) {
            return Some(id);
        }
        if !pool.draw_from_free {
            return None;
        }
        self.pools
            .values()
            .filter(|p| {
                p.kind == PoolKind::Free
                    && p.parent.is_some()
                    && pool.media_type.as_deref().is_none_or(|t| p.media_type.as_deref() == Some(t))
            })
            .filter_map(|p| first_usable(p.id))
            .min()
            .map(|(_, id)| id)
    }

    /// Whether an allocation in `pool` could succeed now (a waiting allocation asks after every change).
    pub fn could_allocate(&self, pool: Guid) -> bool {
        self.pools.get(&pool).is_some_and(|p| self.pick(p).is_some())
    }

    /// The cartridge behind `lmid`, checked to be allocated (or complete).
    fn by_lmid_checked(&self, lmid: Guid) -> Result<&MediaRecord, PoolError> {
        self.media_by_lmid(lmid)
            .ok_or_else(|| PoolError::InvalidMedia(format!("no logical media {lmid} (deallocated or never allocated)")))
    }

    /// DeallocateMedia: the side becomes Available (Decommissioned at the pool's maximum), back to Free when
    /// the pool returns media there. Not while mounted.
    pub fn deallocate(&mut self, lmid: Guid, now: u64) -> Result<(Guid, Vec<Change>), PoolError> {
        let m = self.by_lmid_checked(lmid)?.clone();
        if m.mounted_by.is_some() {
            return Err(PoolError::Busy(format!("{} is mounted: dismount it first", Self::label(&m))));
        }
        let pool = m.pool.and_then(|p| self.pools.get(&p)).cloned();
        let max = pool.as_ref().and_then(|p| p.max_allocations).filter(|n| *n > 0);
        let mut n = m.clone();
        n.lmid = None;
        n.allocated_to = None;
        let mut out = Vec::new();
        if max.is_some_and(|max| n.allocations >= max) {
            n.side = Some(SideState::Decommissioned);
        } else {
            n.side = Some(SideState::Available);
            if pool.as_ref().is_some_and(|p| p.return_to_free) {
                let ty = media_type_name(&n);
                n.pool = Some(self.system_leaf(PoolKind::Free, &ty, now, &mut out));
            }
        }
        touch(&mut n.version, &mut n.modified, now);
        out.extend(self.put_media(n));
        Ok((m.id, out))
    }

    /// SetMediaComplete: Allocated → Complete (never written again). Not while mounted.
    pub fn set_complete(&mut self, lmid: Guid, now: u64) -> Result<(Guid, Vec<Change>), PoolError> {
        let m = self.by_lmid_checked(lmid)?.clone();
        if m.side != Some(SideState::Allocated) {
            return Err(PoolError::InvalidState(format!(
                "{} is {}, not allocated",
                Self::label(&m),
                m.side.map_or("unplaced", SideState::name)
            )));
        }
        if m.mounted_by.is_some() {
            return Err(PoolError::InvalidState(format!("{} is mounted: dismount it first", Self::label(&m))));
        }
        let mut n = m;
        n.side = Some(SideState::Complete);
        touch(&mut n.version, &mut n.modified, now);
        let id = n.id;
        Ok((id, self.put_media(n)))
    }

    /// SwapMedia: the two logical media (same pool, neither mounted) exchange their cartridges.
    pub fn swap(&mut self, a: Guid, b: Guid, now: u64) -> Result<Vec<Change>, PoolError> {
        if a == b {
            return Err(PoolError::InvalidMedia("swap needs two different logical media".into()));
        }
        let ma = self.by_lmid_checked(a)?.clone();
        let mb = self.by_lmid_checked(b)?.clone();
        if ma.pool != mb.pool {
            return Err(PoolError::InvalidPool(format!(
                "{} and {} are in different pools",
                Self::label(&ma),
                Self::label(&mb)
            )));
        }
        for m in [&ma, &mb] {
            if m.mounted_by.is_some() {
                return Err(PoolError::Busy(format!("{} is mounted: dismount it first", Self::label(m))));
            }
        }
        let (mut na, mut nb) = (ma.clone(), mb.clone());
        std::mem::swap(&mut na.lmid, &mut nb.lmid);
        std::mem::swap(&mut na.allocated_to, &mut nb.allocated_to);
        std::mem::swap(&mut na.side, &mut nb.side);
        touch(&mut na.version, &mut na.modified, now);
        touch(&mut nb.version, &mut nb.modified, now);
        let mut out = self.put_media(na);
        out.extend(self.put_media(nb));
        Ok(out)
    }

    /// DecommissionMedia: Available → Decommissioned (deallocate first).
    pub fn decommission(&mut self, media: Guid, now: u64) -> Result<Vec<Change>, PoolError> {
        let m = self.medium_checked(media)?.clone();
        if m.side != Some(SideState::Available) {
            return Err(PoolError::InvalidState(format!(
                "{} is {}: only available media are decommissioned (deallocate it first)",
                Self::label(&m),
                m.side.map_or("unplaced", SideState::name)
            )));
        }
        let mut n = m;
        n.side = Some(SideState::Decommissioned);
        touch(&mut n.version, &mut n.modified, now);
        Ok(self.put_media(n))
    }

    /// DeleteMedia: forgets an offline cartridge that no application holds.
    pub fn delete_media(&mut self, media: Guid) -> Result<Vec<Change>, PoolError> {
        let m = self.medium_checked(media)?.clone();
        if m.location.is_some() {
            return Err(PoolError::InvalidState(format!(
                "{} is in a library: only offline cartridges are deleted (eject it first)",
                Self::label(&m)
            )));
        }
        if m.side.is_some_and(SideState::is_held) {
            return Err(PoolError::InvalidState(format!(
                "{} is {}: deallocate it first",
                Self::label(&m),
                m.side.map_or("", SideState::name)
            )));
        }
        self.remove_media(media);
        Ok(vec![Change::RemoveMedia(media)])
    }

    /// EnableObject / DisableObject of a cartridge.
    pub fn set_media_enabled(&mut self, media: Guid, enabled: bool, now: u64) -> Result<Vec<Change>, PoolError> {
        let m = self.medium_checked(media)?.clone();
        if m.enabled == enabled {
            return Err(PoolError::InvalidState(format!(
                "{} is already {}",
                Self::label(&m),
                if enabled { "enabled" } else { "disabled" }
            )));
        }
        let mut n = m;
        n.enabled = enabled;
        touch(&mut n.version, &mut n.modified, now);
        Ok(self.put_media(n))
    }

    // --- Field-level updates --------------------------------------------------------------------------------

    /// SetObjectInformation of a cartridge: description (and nothing else is writable).
    pub fn update_media(&mut self, media: Guid, u: &Update, now: u64) -> Result<Vec<Change>, PoolError> {
        let m = self.medium_checked(media)?.clone();
        check_version(u.version, m.version, &Self::label(&m))?;
        if u.name.is_some() || u.draw_from_free.is_some() || u.return_to_free.is_some() || u.max_allocations.is_some() {
            return Err(PoolError::InvalidName(
                "a cartridge's writable field is description (its name is its barcode)".into(),
            ));
        }
        if u.media_type.is_some() {
            return Err(PoolError::InvalidName("a cartridge's media type comes from its label".into()));
        }
        let mut n = m;
        if let Some(d) = &u.description {
            n.description = description(d)?;
        }
        touch(&mut n.version, &mut n.modified, now);
        Ok(self.put_media(n))
    }

    /// SetObjectInformation of a pool: description, policies; name and media type of application pools (the
    /// type only while the pool holds no media).
    pub fn update_pool(&mut self, pool: Guid, u: &Update, now: u64) -> Result<Vec<Change>, PoolError> {
        let p = self.pools.get(&pool).ok_or_else(|| PoolError::InvalidPool(format!("no pool {pool}")))?.clone();
        check_version(u.version, p.version, &p.name)?;
        let system = p.kind != PoolKind::Application;
        if system && (u.name.is_some() || u.media_type.is_some()) {
            return Err(PoolError::InvalidPool(format!("{} is a system pool: its name and type are fixed", p.name)));
        }
        let mut n = p.clone();
        let mut renames = Vec::new();
        if let Some(name) = &u.name {
            let leaf = normalize_path(name).map_err(PoolError::InvalidName)?;
            if leaf.contains(SEP) {
                return Err(PoolError::InvalidName("a new name is one level; the pool stays where it is".into()));
            }
            let path = match p.name.rsplit_once(SEP) {
                Some((up, _)) => format!("{up}{SEP}{leaf}"),
                None => leaf,
            };
            if self.pool_by_name(&path).is_some_and(|o| o.id != pool) {
                return Err(PoolError::AlreadyExists(format!("pool {path} exists")));
            }
            if system_kind(&path).is_some() {
                return Err(PoolError::InvalidName(format!("{path} is a system pool's name")));
            }
            // The pools below follow.
            let old_prefix = format!("{}{SEP}", p.name);
            for c in self.pools.values().filter(|c| c.name.starts_with(&old_prefix)) {
                let mut c = c.clone();
                c.name = format!("{path}{SEP}{}", &c.name[old_prefix.len()..]);
                touch(&mut c.version, &mut c.modified, now);
                renames.push(c);
            }
            n.name = path;
        }
        if let Some(t) = &u.media_type {
            if self.pool_media_count(pool) > 0 {
                return Err(PoolError::NotEmpty(format!(
                    "{} holds media: its type stays {}",
                    p.name,
                    p.media_type_str()
                )));
            }
            n.media_type = (!t.is_empty()).then(|| t.clone());
        }
        if let Some(d) = &u.description {
            n.description = description(d)?;
        }
        if let Some(v) = u.draw_from_free {
            n.draw_from_free = v;
        }
        if let Some(v) = u.return_to_free {
            n.return_to_free = v;
        }
        if let Some(v) = u.max_allocations {
            n.max_allocations = (v > 0).then_some(v);
        }
        touch(&mut n.version, &mut n.modified, now);
        let mut out = self.put_pool(n);
        for c in renames {
            out.extend(self.put_pool(c));
        }
        Ok(out)
    }
}

impl PoolRecord {
    fn media_type_str(&self) -> &str {
        self.media_type.as_deref().unwrap_or("any")
    }
}

fn touch(version: &mut u64, modified: &mut u64, now: u64) {
    *version += 1;
    *modified = now;
}

fn check_version(asked: Option<u64>, current: u64, what: &str) -> Result<(), PoolError> {
    match asked {
        Some(v) if v != current => Err(PoolError::Stale(format!(
            "{what} changed since you read it (your version {v}, now {current}): read it again and retry"
        ))),
        _ => Ok(()),
    }
}

fn description(d: &str) -> Result<String, PoolError> {
    if d.chars().count() > MAX_DESCRIPTION || d.chars().any(|c| c.is_control() && c != '\t') {
        return Err(PoolError::InvalidName(format!(
            "a description is at most {MAX_DESCRIPTION} characters without control characters"
        )));
    }
    Ok(d.to_owned())
}

/// What the inventory keeps per pool as records change, so that counts and allocation do not scan every
/// cartridge.
#[derive(Debug, Default, Clone)]
pub(super) struct PoolIndex {
    /// Cartridges in the pool.
    count: usize,
    /// Of them, allocated or complete (with a logical media id).
    held: usize,
    /// The available ones, by barcode then id: allocation takes the first that fits.
    available: BTreeSet<(Option<String>, Guid)>,
}

impl Inventory {
    /// Keeps the pool index and the LMID index in step with a record changing from `old` to `new`.
    pub(super) fn index(&mut self, old: Option<&MediaRecord>, new: Option<&MediaRecord>) {
        let key = |m: &MediaRecord| (m.barcode.clone(), m.id);
        if let Some(o) = old {
            if let Some(ix) = o.pool.and_then(|p| self.pool_index.get_mut(&p)) {
                ix.count = ix.count.saturating_sub(1);
                ix.held = ix.held.saturating_sub(usize::from(o.lmid.is_some()));
                ix.available.remove(&key(o));
            }
            if let Some(l) = o.lmid.filter(|l| self.lmids.get(l) == Some(&o.id)) {
                self.lmids.remove(&l);
            }
        }
        if let Some(n) = new {
            if let Some(p) = n.pool {
                let ix = self.pool_index.entry(p).or_default();
                ix.count += 1;
                ix.held += usize::from(n.lmid.is_some());
                if n.side == Some(SideState::Available) {
                    ix.available.insert(key(n));
                }
            }
            if let Some(l) = n.lmid {
                self.lmids.insert(l, n.id);
            }
        }
    }
}

#[cfg(test)]
mod tests;
