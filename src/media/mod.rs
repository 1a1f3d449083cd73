//! The cached inventory the daemon serves: libraries, elements and cartridges, reconciled from what the
//! libraries report. Sans-IO domain rules; the server persists the [`Change`]s it returns.
//!
//! Rules: a cartridge's identity is its barcode (`Guid::derive("media", barcode)`), so it survives moves,
//! rescans and restarts; a cartridge is in exactly one place (a full scan that no longer sees it marks it offline,
//! location `None`); elements are numbered for people the way mtx numbers them (drives from 0, storage slots from
//! 1, import/export slots after the storage slots).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::changer::Element;
use crate::model::{
    Change, DriveInfo, ElementKind, ElementRecord, Guid, LibraryRecord, Location, MediaKind, MediaRecord, PoolRecord,
    Record,
};
use crate::scsi::element::ElementType;

/// The element kind for an SMC element type.
pub fn kind_of(t: ElementType) -> ElementKind {
    match t {
        ElementType::MediumTransport | ElementType::All => ElementKind::Transport,
        ElementType::Storage => ElementKind::Storage,
        ElementType::ImportExport => ElementKind::ImportExport,
        ElementType::DataTransfer => ElementKind::Drive,
    }
}

/// Data or cleaning, from the barcode (`CLN…` is cleaning by convention).
pub fn media_kind(barcode: Option<&str>) -> MediaKind {
    match barcode {
        Some(b) if compat::is_cleaning(b) => MediaKind::Cleaning,
        _ => MediaKind::Data,
    }
}

/// The identity of a cartridge: by barcode, or by place when it has none.
pub fn media_id(library: Guid, address: u16, barcode: Option<&str>) -> Guid {
    match barcode {
        Some(b) => Guid::derive("media", b),
        None => Guid::derive("media-unlabelled", &format!("{library}:{address}")),
    }
}

/// What a change costs in [`Inventory::reconcile_step`]'s units of work, against 1 for an element looked at: a
/// first scan of 50,000 cartridges creates two records per element, and 1,024 of them took 6-25 ms of a turn where
/// 1,024 unchanged elements take about 1.4 ms.
pub const CHANGE_COST: usize = 8;

/// A reconcile in progress ([`Inventory::start_reconcile`]).
#[derive(Debug)]
pub struct Reconcile {
    library: Guid,
    /// What the library reported, in type and address order (shared with the changer's copy).
    reported: std::sync::Arc<Vec<Element>>,
    /// The first element not yet reconciled.
    next: usize,
    full: bool,
    storage_count: usize,
    seen_media: HashSet<Guid>,
    seen_elements: HashSet<(ElementKind, u16)>,
    rank: HashMap<ElementKind, u32>,
}

impl Reconcile {
    /// Elements reported (and so the size of the job).
    pub fn len(&self) -> usize {
        self.reported.len()
    }

    /// Whether nothing was reported.
    pub fn is_empty(&self) -> bool {
        self.reported.is_empty()
    }

    /// Whether this is a whole library's scan.
    pub fn full(&self) -> bool {
        self.full
    }

    /// The scan, once reconciled (to free it a slice at a time when it is the last copy).
    pub fn into_reported(self) -> std::sync::Arc<Vec<Element>> {
        self.reported
    }
}

/// The inventory in memory.
#[derive(Debug, Default, Clone)]
pub struct Inventory {
    libraries: BTreeMap<Guid, LibraryRecord>,
    elements: BTreeMap<(Guid, ElementKind, u16), ElementRecord>,
    /// Boxed: a table of 50,000 records inline would be one block of 19 MB, a quarter of it empty buckets.
    media: HashMap<Guid, Box<MediaRecord>>,
    by_barcode: HashMap<String, Guid>,
    /// Element id → key, so that lookups by id do not derive every element's id.
    by_element_id: HashMap<Guid, (Guid, ElementKind, u16)>,
    /// Media pools.
    pools: BTreeMap<Guid, PoolRecord>,
    /// Lower-case pool path → id.
    pool_names: HashMap<String, Guid>,
    /// Per pool: counts and the available cartridges.
    pool_index: HashMap<Guid, pools::PoolIndex>,
    /// Logical media id → cartridge.
    lmids: HashMap<Guid, Guid>,
    /// Where new cartridges go.
    rules: pools::MediaRules,
    /// Unix ms of the current input (creation and modification times).
    pub clock: u64,
    /// Elements were loaded since the map was last rebuilt (see [`Inventory::load_record`]).
    elements_loose: bool,
    /// Elements per library and kind (a library's object shows them; counting 50,000 each time took ms).
    element_counts: HashMap<(Guid, ElementKind), usize>,
}

impl Inventory {
    /// An inventory from a snapshot (tests; the daemon loads record by record with [`Inventory::load_record`]).
    #[cfg(test)]
    pub fn from_snapshot(s: crate::model::Snapshot) -> Inventory {
        let mut inv = Inventory::default();
        let records = (s.libraries.into_iter().map(Record::Library))
            .chain(s.elements.into_iter().map(Record::Element))
            .chain(s.pools.into_iter().map(Record::Pool))
            .chain(s.media.into_iter().map(Record::Media));
        for r in records {
            inv.load_record(r);
        }
        inv
    }

    /// Takes one record off disk (requests are not the inventory's: they are ignored).
    pub fn load_record(&mut self, r: Record) {
        if self.elements_loose && !matches!(r, Record::Element(_)) {
            // The elements are all in (they come before pools and cartridges). Inserted one by one in order, the
            // map's nodes are about half full; rebuilt from its sorted entries they are full: 40 % less memory for
            // a large library, and what the old nodes leave free is taken by the cartridges that follow.
            self.elements = std::mem::take(&mut self.elements).into_iter().collect();
            self.elements_loose = false;
        }
        match r {
            Record::Library(l) => {
                self.libraries.insert(l.id, l);
            }
            Record::Element(e) => {
                self.by_element_id.insert(e.id(), (e.library, e.kind, e.address));
                self.insert_element(e);
                self.elements_loose = true;
            }
            Record::Pool(p) => {
                self.pool_names.insert(p.name.to_ascii_lowercase(), p.id);
                self.pools.insert(p.id, p);
            }
            Record::Media(m) => {
                if let Some(b) = &m.barcode {
                    self.by_barcode.insert(b.clone(), m.id);
                }
                self.index(None, Some(&m));
                self.media.insert(m.id, Box::new(m));
            }
            Record::Request(_) | Record::Operator(_) => {}
        }
    }

    /// All libraries.
    pub fn libraries(&self) -> impl Iterator<Item = &LibraryRecord> {
        self.libraries.values()
    }

    /// A library.
    pub fn library(&self, id: Guid) -> Option<&LibraryRecord> {
        self.libraries.get(&id)
    }

    /// A library's elements, by kind then address.
    pub fn elements(&self, library: Guid) -> impl Iterator<Item = &ElementRecord> {
        self.elements.range((library, ElementKind::Transport, 0)..=(library, ElementKind::Drive, u16::MAX)).map(|e| e.1)
    }

    /// How many elements of `kind` library `library` has.
    pub fn element_count(&self, library: Guid, kind: ElementKind) -> usize {
        self.element_counts.get(&(library, kind)).copied().unwrap_or(0)
    }

    fn insert_element(&mut self, e: ElementRecord) {
        let key = (e.library, e.kind, e.address);
        if self.elements.insert(key, e).is_none() {
            *self.element_counts.entry((key.0, key.1)).or_insert(0) += 1;
        }
    }

    fn remove_element(&mut self, library: Guid, kind: ElementKind, address: u16) -> Option<ElementRecord> {
        let old = self.elements.remove(&(library, kind, address))?;
        if let Some(n) = self.element_counts.get_mut(&(library, kind)) {
            *n = n.saturating_sub(1);
        }
        Some(old)
    }

    /// All elements.
    pub fn all_elements(&self) -> impl Iterator<Item = &ElementRecord> {
        self.elements.values()
    }

    /// The elements of `kind`, by library then address (which is their number's order: elements are numbered by
    /// address within their kind), starting after `after` (a library and address) or from the first. No sorting:
    /// a page of a large library costs its own elements.
    pub fn elements_after(
        &self,
        kind: ElementKind,
        after: Option<(Guid, u16)>,
    ) -> impl Iterator<Item = &ElementRecord> {
        use std::ops::Bound;
        let from = after.map_or(Bound::Unbounded, |(l, a)| Bound::Excluded((l, kind, a)));
        self.elements.range((from, Bound::Unbounded)).map(|e| e.1).filter(move |e| e.kind == kind)
    }

    /// The element at an address.
    pub fn element(&self, library: Guid, kind: ElementKind, address: u16) -> Option<&ElementRecord> {
        self.elements.get(&(library, kind, address))
    }

    /// The element with this id.
    pub fn element_by_id(&self, id: Guid) -> Option<&ElementRecord> {
        self.by_element_id.get(&id).and_then(|k| self.elements.get(k))
    }

    /// All cartridges.
    /// The record of cartridge `id`.
    fn rec(&self, id: &Guid) -> Option<&MediaRecord> {
        self.media.get(id).map(|m| &**m)
    }

    pub fn media(&self) -> impl Iterator<Item = &MediaRecord> {
        self.media.values().map(|m| &**m)
    }

    /// A cartridge by id.
    pub fn medium(&self, id: Guid) -> Option<&MediaRecord> {
        self.rec(&id)
    }

    /// A cartridge by barcode.
    pub fn media_by_barcode(&self, barcode: &str) -> Option<&MediaRecord> {
        self.by_barcode.get(barcode).and_then(|id| self.rec(id))
    }

    /// The cartridge a barcode names as typed by a person: exactly, else in any case when only one cartridge's
    /// barcode matches that way (labels are upper case; `abc001l6` means `ABC001L6`).
    pub fn media_by_barcode_any_case(&self, barcode: &str) -> Option<&MediaRecord> {
        self.media_by_barcode(barcode).or_else(|| {
            let mut found = self.by_barcode.iter().filter(|(b, _)| b.eq_ignore_ascii_case(barcode));
            match (found.next(), found.next()) {
                (Some((_, id)), None) => self.rec(id),
                _ => None,
            }
        })
    }

    /// Inserts or replaces a library record.
    pub fn put_library(&mut self, mut rec: LibraryRecord) -> Vec<Change> {
        let old = self.libraries.get(&rec.id);
        rec.created = old.map_or(self.clock, |o| o.created);
        rec.modified = old.map_or(self.clock, |o| o.modified);
        if old == Some(&rec) {
            return Vec::new();
        }
        rec.modified = self.clock;
        self.libraries.insert(rec.id, rec.clone());
        vec![Change::Library(rec)]
    }

    /// Marks every library stale (at start, before verification against the hardware).
    pub fn mark_all_stale(&mut self) -> Vec<Change> {
        let ids: Vec<Guid> = self.libraries.keys().copied().collect();
        let mut out = Vec::new();
        for id in ids {
            if let Some(mut l) = self.libraries.get(&id).cloned() {
                l.stale = true;
                out.extend(self.put_library(l));
            }
        }
        out
    }

    /// Reconciles what a library reported. `full`: this is the whole library (a complete scan): elements not in
    /// it are removed and cartridges of this library not seen are marked offline. `drive` gives the identity and
    /// nodes of a mapped drive device.
    pub fn reconcile(
        &mut self,
        library: Guid,
        reported: &[Element],
        full: bool,
        drive: &dyn Fn(usize) -> DriveInfo,
    ) -> Vec<Change> {
        let mut job = self.start_reconcile(library, std::sync::Arc::new(reported.to_vec()), full);
        let mut changes = Vec::new();
        while !self.reconcile_step(&mut job, usize::MAX, drive, &mut changes) {}
        changes
    }

    /// Starts reconciling what a library reported, to be done a slice at a time by [`Inventory::reconcile_step`]
    /// (a scan of 50,000 elements reconciled at once holds the daemon's loop for tens of milliseconds).
    pub fn start_reconcile(
        &mut self,
        library: Guid,
        mut reported: std::sync::Arc<Vec<Element>>,
        full: bool,
    ) -> Reconcile {
        let storage_count = if full {
            reported.iter().filter(|e| e.element_type == ElementType::Storage).count()
        } else {
            self.element_count(library, ElementKind::Storage)
        };
        // Numbering by rank within type, as mtx does: in type and address order.
        // The changer's scans come sorted (and shared with its own copy): sorted again only when they are not.
        if !reported.is_sorted_by_key(|e| (e.element_type, e.address)) {
            std::sync::Arc::make_mut(&mut reported).sort_by_key(|e| (e.element_type, e.address));
        }
        // Room for what the scan may add, made now: a table that grows while the scan is reconciled rehashes
        // everything in it within one slice (at 28,672 entries: 10 ms). Cheap when the tables are still empty (a
        // first scan), nothing when they already hold the library.
        let cartridges = reported.iter().filter(|e| e.full).count();
        self.media.reserve(cartridges.saturating_sub(self.media.len()));
        self.by_barcode.reserve(cartridges.saturating_sub(self.by_barcode.len()));
        self.by_element_id.reserve(reported.len().saturating_sub(self.by_element_id.len()));
        Reconcile {
            library,
            next: 0,
            full,
            storage_count,
            seen_media: HashSet::with_capacity(cartridges),
            seen_elements: HashSet::with_capacity(reported.len()),
            rank: HashMap::new(),
            reported,
        }
    }

    /// Reconciles more elements of `job`, up to `max` units of work (an element is 1, each change it makes
    /// [`CHANGE_COST`] more; at least one element), adding the changes to `changes`; true once the job is done (its
    /// last step removes what a full scan did not see).
    pub fn reconcile_step(
        &mut self,
        job: &mut Reconcile,
        max: usize,
        drive: &dyn Fn(usize) -> DriveInfo,
        changes: &mut Vec<Change>,
    ) -> bool {
        let Reconcile {
            library,
            ref reported,
            ref mut next,
            full,
            storage_count,
            ref mut seen_media,
            ref mut seen_elements,
            ref mut rank,
        } = *job;
        let mut spent = 0usize;
        while *next < reported.len() && spent < max {
            let e = &reported[*next];
            *next += 1;
            let before = changes.len();
            let kind = kind_of(e.element_type);
            let number = if full {
                let r = rank.entry(kind).or_insert(0);
                *r += 1;
                match kind {
                    ElementKind::Drive | ElementKind::Transport => *r - 1,
                    ElementKind::Storage => *r,
                    ElementKind::ImportExport => u32::try_from(storage_count).unwrap_or(u32::MAX) + *r,
                }
            } else {
                self.element(library, kind, e.address).map_or(0, |old| old.number)
            };
            let media = if e.full {
                let id = media_id(library, e.address, e.barcode.as_deref());
                let here = Location { library, kind, address: e.address };
                let home = match kind {
                    ElementKind::Storage => Some(here),
                    _ => e.source.map(|a| Location { library, kind: ElementKind::Storage, address: a }),
                };
                let mut m = self.rec(&id).cloned().unwrap_or_else(|| {
                    let kind = if e.cleaning { MediaKind::Cleaning } else { media_kind(e.barcode.as_deref()) };
                    MediaRecord::new(id, e.barcode.clone(), kind)
                });
                if !seen_media.insert(id) {
                    log::warn!("barcode {:?} seen twice in library {library}; keeping the first", e.barcode);
                } else {
                    m.location = Some(here);
                    if home.is_some() {
                        m.home = home;
                    }
                    // Mounted means in a drive: a cartridge found anywhere else is nobody's mount any more.
                    if kind != ElementKind::Drive {
                        m.mounted_by = None;
                    }
                    changes.extend(self.put_media(m));
                }
                Some(id)
            } else {
                None
            };
            let rec = ElementRecord {
                library,
                kind,
                address: e.address,
                number,
                media,
                exception: e.exception.map(|a| (a.0, a.1)),
                accessible: e.accessible || e.exception.is_none(),
                drive: (kind == ElementKind::Drive).then(|| {
                    let mut info = e.device.map(drive).unwrap_or_default();
                    if info.serial.is_none() {
                        info.serial.clone_from(&e.identifier);
                    }
                    if let Some(d) = self.elements.get(&(library, kind, e.address)).and_then(|o| o.drive.as_ref()) {
                        info.care = d.care;
                    }
                    // Boxed: only drives have one, and 50,000 slots should not carry its room.
                    Box::new(info)
                }),
                mounts: self.elements.get(&(library, kind, e.address)).map_or(0, |old| old.mounts),
                tag_printed: e.tag_printed,
                disabled: self.elements.get(&(library, kind, e.address)).is_some_and(|old| old.disabled),
            };
            seen_elements.insert((kind, e.address));
            // The cartridge that was here before and is not here now moved or left.
            if let Some(old) = self.elements.get(&(library, kind, e.address)) {
                if let Some(prev) = old.media.filter(|p| Some(*p) != media && !seen_media.contains(p)) {
                    if let Some(mut m) = self.rec(&prev).cloned() {
                        if m.location == Some(Location { library, kind, address: e.address }) {
                            m.location = None;
                            m.mounted_by = None;
                            changes.extend(self.put_media(m));
                        }
                    }
                }
            }
            if self.elements.get(&(library, kind, e.address)) != Some(&rec) {
                self.by_element_id.entry(rec.id()).or_insert((library, kind, e.address));
                self.insert_element(rec.clone());
                changes.push(Change::Element(rec));
            }
            spent = spent.saturating_add(1 + CHANGE_COST * (changes.len() - before));
        }
        if *next < reported.len() {
            return false;
        }
        // Every element seen is in the inventory now, and every cartridge seen is located in this library: when
        // the counts agree nothing is left over, and the 50,000 lookups that would find nothing are skipped.
        let counted: usize = ElementKind::ALL.iter().map(|&k| self.element_count(library, k)).sum();
        let leftover_elements = full && counted != seen_elements.len();
        let leftover_media = full
            && self.media.values().filter(|m| m.location.is_some_and(|l| l.library == library)).count()
                != seen_media.len();
        if leftover_elements {
            let stale: Vec<(ElementKind, u16)> =
                self.elements(library).map(|e| (e.kind, e.address)).filter(|k| !seen_elements.contains(k)).collect();
            for (kind, address) in stale {
                if let Some(old) = self.remove_element(library, kind, address) {
                    self.by_element_id.remove(&old.id());
                }
                changes.push(Change::RemoveElement { library, kind: kind.code(), address });
            }
        }
        if leftover_media {
            let gone: Vec<MediaRecord> = self
                .media
                .values()
                .filter(|m| m.location.is_some_and(|l| l.library == library) && !seen_media.contains(&m.id))
                .map(|m| (**m).clone())
                .collect();
            for mut m in gone {
                m.location = None;
                changes.extend(self.put_media(m));
            }
        }
        true
    }

    fn put_media(&mut self, mut m: MediaRecord) -> Vec<Change> {
        let mut out = Vec::new();
        if m.created == 0 {
            m.created = self.clock;
        }
        self.place(&mut m, &mut out);
        // `modified` is the time of the last change of any kind (a move, a mount, a method).
        m.modified = self.rec(&m.id).map_or(m.created, |o| o.modified);
        if self.rec(&m.id) == Some(&m) {
            return out;
        }
        m.modified = self.clock.max(m.created);
        let old = self.rec(&m.id).cloned();
        self.index(old.as_ref(), Some(&m));
        if let Some(b) = &m.barcode {
            self.by_barcode.insert(b.clone(), m.id);
        }
        self.media.insert(m.id, Box::new(m.clone()));
        out.push(Change::Media(m));
        out
    }

    /// EnableObject / DisableObject of a library or drive (by id).
    pub fn set_enabled(&mut self, id: Guid, enabled: bool) -> Result<Vec<Change>, String> {
        let word = if enabled { "enabled" } else { "disabled" };
        if let Some(l) = self.libraries.get(&id) {
            if l.disabled != enabled {
                return Err(format!("library {} is already {word}", l.name));
            }
            let mut l = l.clone();
            l.disabled = !enabled;
            return Ok(self.put_library(l));
        }
        let key = *self.by_element_id.get(&id).ok_or_else(|| format!("no object {id}"))?;
        let e = self.elements.get_mut(&key).ok_or_else(|| format!("no object {id}"))?;
        if e.disabled != enabled {
            return Err(format!("drive {} is already {word}", e.number));
        }
        e.disabled = !enabled;
        Ok(vec![Change::Element(e.clone())])
    }

    /// Every media type the inventory knows, with the libraries it relates to (RSM's library ↔ media type
    /// relation): a library takes the types its drives can use and holds the types of its cartridges. Cartridges
    /// without a readable LTO label are of type `unknown`.
    pub fn media_types(&self) -> BTreeMap<String, (compat::MediaTypeInfo, HashSet<Guid>)> {
        let mut out: BTreeMap<String, (compat::MediaTypeInfo, HashSet<Guid>)> = BTreeMap::new();
        let mut add = |t: compat::MediaTypeInfo, library: Option<Guid>| {
            let e = out.entry(t.name.clone()).or_insert_with(|| (t, HashSet::new()));
            e.1.extend(library);
        };
        for m in self.media.values() {
            let t = m.barcode.as_deref().and_then(compat::media_type).unwrap_or_else(|| compat::MediaTypeInfo {
                name: pools::UNKNOWN_TYPE.into(),
                generation: None,
                cleaner: false,
                rewritable: true,
            });
            add(t, m.location.map(|l| l.library));
        }
        for e in self.elements.values().filter(|e| e.kind == ElementKind::Drive) {
            for t in
                e.drive.as_ref().and_then(|d| d.product.as_deref()).map(compat::drive_media_types).unwrap_or_default()
            {
                add(t, Some(e.library));
            }
        }
        out
    }

    /// Forgets a cartridge.
    fn remove_media(&mut self, id: Guid) {
        if let Some(m) = self.media.remove(&id) {
            self.index(Some(&m), None);
            if let Some(b) = &m.barcode {
                if self.by_barcode.get(b) == Some(&id) {
                    self.by_barcode.remove(b);
                }
            }
        }
    }

    /// Records who mounted cartridge `id` (None: nobody; it is loaded or in a slot).
    pub fn set_mounted_by(&mut self, id: Guid, owner: Option<crate::model::Owner>) -> Vec<Change> {
        match self.rec(&id).cloned() {
            Some(mut m) if m.mounted_by != owner => {
                m.mounted_by = owner;
                self.put_media(m)
            }
            _ => Vec::new(),
        }
    }

    /// Counts a mount of cartridge `id`.
    /// Changes drive element `address` of `library`'s care record.
    pub fn update_drive_care(
        &mut self,
        library: Guid,
        address: u16,
        f: impl FnOnce(&mut crate::model::DriveCare),
    ) -> Vec<Change> {
        let Some(e) = self.elements.get_mut(&(library, ElementKind::Drive, address)) else { return Vec::new() };
        let Some(d) = e.drive.as_mut() else { return Vec::new() };
        let before = d.care;
        f(&mut d.care);
        if d.care == before {
            return Vec::new();
        }
        vec![Change::Element(e.clone())]
    }

    pub fn count_mount(&mut self, id: Guid) -> Vec<Change> {
        let Some(mut m) = self.rec(&id).cloned() else { return Vec::new() };
        m.mount_count += 1;
        let mut changes = Vec::new();
        // The drive it is in served one more mount.
        if let Some(l) = m.location.filter(|l| l.kind == ElementKind::Drive) {
            if let Some(e) = self.elements.get_mut(&(l.library, l.kind, l.address)) {
                e.mounts += 1;
                changes.push(Change::Element(e.clone()));
            }
        }
        changes.extend(self.put_media(m));
        changes
    }
}

pub mod compat;
pub mod labels;
pub mod pools;

#[cfg(test)]
mod tests;
