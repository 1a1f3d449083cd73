//! The wire objects (`proto::types::ObjectInfo`) built from the cached inventory, without touching hardware.

use crate::media::Inventory;
use crate::model::{ElementKind, ElementRecord, Guid, LibraryState, MediaKind, MediaRecord, PoolRecord};
use crate::proto::types::*;
use crate::scsi::tape::TapeAlerts;

/// What the server knows about a library beyond the inventory.
#[derive(Debug, Clone, Default)]
pub struct LibraryView {
    /// Library id.
    pub id: Guid,
    /// Changer device (sg node or vlib socket).
    pub device: String,
    /// Current state.
    pub state: Option<LibraryState>,
    /// Drive elements whose last load never became ready (shown in error until one does).
    pub suspect_drives: Vec<u16>,
    /// Drive elements whose device is gone (or being identified again after it came back).
    pub gone_drives: Vec<u16>,
    /// Drives with a job running: (element address, a mount still loading (true) or a dismount (false)).
    pub drive_jobs: Vec<(u16, bool)>,
    /// Why the library does not answer yet (`not ready: 04h/01h …`), while it keeps trying.
    pub not_ready: Option<String>,
    /// While it scans: (elements read, elements it has).
    pub scan: Option<(usize, usize)>,
    /// The operator has the door open (rsmd unlocked it).
    pub door_open: bool,
    /// Its partitions.
    pub partitions: Vec<crate::model::Partition>,
}

/// Everything objects are built from.
#[derive(Debug)]
pub struct View<'a> {
    /// The inventory.
    pub inventory: &'a Inventory,
    /// This host's name.
    pub host: &'a str,
    /// Libraries served now.
    pub libraries: &'a [LibraryView],
    /// Library requests (turned into objects only when asked for).
    pub requests: &'a super::requests::Requests,
    /// Operator requests.
    pub operators: &'a super::operator::Operators,
    /// Configured libraries whose changer is not there: (name, why).
    pub absent: &'a [(String, String)],
    /// Unix ms when the daemon started (the computer object's times).
    pub started: u64,
    /// Cartridges an open request works on (computed when a cartridge is first shown).
    pub busy_media: std::cell::OnceCell<std::collections::HashSet<String>>,
}

/// Id of the computer object.
pub fn computer_id(host: &str) -> Guid {
    Guid::derive("computer", host)
}

/// Id of a library's changer object.
pub fn changer_id(library: Guid) -> Guid {
    Guid::derive("changer", &library.to_string())
}

/// A configured library whose changer is not there, as clients see it: offline, not present, with the reason.
fn absent_library(name: &str, why: &str) -> ObjectInfo {
    let mut o = info(
        Guid::derive("absent-library", name),
        name.to_owned(),
        "not_present",
        ObjectDetails::Library(LibraryDetails {
            kind: LibraryKind::Offline,
            changers: Vec::new(),
            slot_count: 0,
            drive_count: 0,
            ie_port_count: 0,
            door_open: None,
            barcode_reader: false,
            vendor: None,
            product: None,
            serial: None,
            scan_done: None,
            scan_total: None,
            partitions: None,
        }),
    );
    o.enabled = false;
    o.description = why.to_owned();
    o
}

fn media_type_id(name: &str) -> Guid {
    Guid::derive("media-type", name)
}

fn info(id: Guid, name: String, state: &str, details: ObjectDetails) -> ObjectInfo {
    ObjectInfo {
        id: id.to_string(),
        name,
        description: String::new(),
        object_type: details.object_type(),
        enabled: true,
        state: state.into(),
        created: 0,
        modified: 0,
        version: None,
        details,
    }
}

fn state_name(s: Option<LibraryState>) -> &'static str {
    match s {
        Some(LibraryState::Probing) => "probing",
        Some(LibraryState::Scanning) => "scanning",
        Some(LibraryState::Ready) => "ready",
        Some(LibraryState::Busy) => "busy",
        Some(LibraryState::Offline) | None => "offline",
    }
}

impl View<'_> {
    fn live(&self, lib: Guid) -> Option<&LibraryView> {
        self.libraries.iter().find(|l| l.id == lib)
    }

    fn library_state(&self, lib: Guid) -> Option<LibraryState> {
        self.live(lib).and_then(|l| l.state)
    }

    /// Every object of `t`, optionally only inside `container`.
    pub fn enumerate(&self, t: ObjectType, container: Option<Guid>) -> Vec<ObjectInfo> {
        self.enumerate_page(t, container, None, usize::MAX).0
    }

    /// A page of [`View::enumerate`]: at most `limit` objects, those after the object with id `after` (from the
    /// start without it; an id that is not in the listing any more: from the start too), and whether more follow.
    /// Elements and cartridges are ordered first and only the page's objects are built, so a page of a 50,000-slot
    /// library costs its own objects, not the library's.
    pub fn enumerate_page(
        &self,
        t: ObjectType,
        container: Option<Guid>,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<ObjectInfo>, bool) {
        let after_id = after.and_then(|a| a.parse::<Guid>().ok());
        let in_lib = |lib: Guid| container.is_none_or(|c| c == lib);
        let inv = self.inventory;
        let all: Vec<ObjectInfo> = match t {
            ObjectType::Computer => vec![self.computer()],
            ObjectType::Library => inv
                .libraries()
                .filter(|l| in_lib(l.id))
                .map(|l| self.library(l.id))
                .chain(self.absent.iter().filter(|_| container.is_none()).map(|(n, why)| absent_library(n, why)))
                .collect(),
            ObjectType::Changer => inv.libraries().filter(|l| in_lib(l.id)).map(|l| self.changer(l.id)).collect(),
            ObjectType::Drive | ObjectType::StorageSlot | ObjectType::IePort => {
                let kind = match t {
                    ObjectType::Drive => ElementKind::Drive,
                    ObjectType::StorageSlot => ElementKind::Storage,
                    _ => ElementKind::ImportExport,
                };
                let start = after_id.and_then(|a| inv.element_by_id(a)).filter(|e| e.kind == kind);
                let mut v =
                    inv.elements_after(kind, start.map(|e| (e.library, e.address))).filter(|e| in_lib(e.library));
                let page: Vec<ObjectInfo> = v.by_ref().take(limit).map(|e| self.element(e)).collect();
                return (page, v.next().is_some());
            }
            ObjectType::MediaType => inv
                .media_types()
                .into_iter()
                .filter(|(_, (_, libraries))| container.is_none_or(|c| libraries.contains(&c)))
                .map(|(name, (t, libraries))| {
                    let mut libraries: Vec<String> = libraries.iter().map(ToString::to_string).collect();
                    libraries.sort();
                    info(
                        media_type_id(&name),
                        name.clone(),
                        "ready",
                        ObjectDetails::MediaType(MediaTypeDetails {
                            family: name,
                            generation: t.generation.map(u32::from),
                            sides: 1,
                            cleaner: t.cleaner,
                            writable: t.rewritable,
                            libraries,
                        }),
                    )
                })
                .collect(),
            ObjectType::PhysicalMedia => {
                // In a pool (a system pool's top level means all its media types), or in a library.
                let pools: Vec<Guid> = match container.and_then(|c| inv.pool(c)) {
                    Some(p) if p.kind != crate::model::PoolKind::Application && p.parent.is_none() => {
                        inv.child_pools(p.id).map(|c| c.id).collect()
                    }
                    Some(p) => vec![p.id],
                    None => Vec::new(),
                };
                let mut v: Vec<&MediaRecord> = inv
                    .media()
                    .filter(|m| match container {
                        None => true,
                        Some(_) if !pools.is_empty() => m.pool.is_some_and(|p| pools.contains(&p)),
                        Some(c) => m.location.is_some_and(|l| l.library == c),
                    })
                    .collect();
                v.sort_by(|a, b| a.barcode.cmp(&b.barcode).then(a.id.cmp(&b.id)));
                let start = after_id
                    .and_then(|a| inv.medium(a))
                    .and_then(|a| v.binary_search_by(|m| m.barcode.cmp(&a.barcode).then(m.id.cmp(&a.id))).ok())
                    .map_or(0, |i| i + 1);
                let more = v.len() > start.saturating_add(limit);
                return (v.into_iter().skip(start).take(limit).map(|m| self.medium(m)).collect(), more);
            }
            ObjectType::MediaPool => {
                let mut v: Vec<&PoolRecord> =
                    inv.pools().filter(|p| container.is_none_or(|c| p.parent == Some(c))).collect();
                v.sort_by_key(|p| p.name.to_ascii_lowercase());
                v.into_iter().map(|p| self.pool(p)).collect()
            }
            ObjectType::LibRequest => self.requests.objects(),
            ObjectType::OpRequest => self.operators.objects(),
        };
        let start = after.and_then(|a| all.iter().position(|o| o.id == a)).map_or(0, |i| i + 1);
        let more = all.len() > start.saturating_add(limit);
        (all.into_iter().skip(start).take(limit).collect(), more)
    }

    /// The object with this id (or a cartridge by barcode, a pool by path).
    pub fn find(&self, key: &str) -> Option<ObjectInfo> {
        let inv = self.inventory;
        if let Some(m) = inv.media_by_barcode(key) {
            return Some(self.medium(m));
        }
        // A pool by its path (`Bacula\Full`), as people name pools.
        if let Some(p) = inv.pool_by_name(key) {
            return Some(self.pool(p));
        }
        let id: Guid = key.parse().ok()?;
        if id == computer_id(self.host) {
            return Some(self.computer());
        }
        if inv.library(id).is_some() {
            return Some(self.library(id));
        }
        if let Some(l) = inv.libraries().find(|l| changer_id(l.id) == id) {
            return Some(self.changer(l.id));
        }
        if let Some(m) = inv.medium(id) {
            return Some(self.medium(m));
        }
        if let Some(e) = inv.element_by_id(id) {
            return Some(self.element(e));
        }
        if let Some(r) = self.requests.object(key) {
            return Some(r);
        }
        if let Some(r) = self.operators.object(key) {
            return Some(r);
        }
        if let Some(p) = inv.pool(id) {
            return Some(self.pool(p));
        }
        if let Some(m) = inv.media_by_lmid(id) {
            return Some(self.medium(m));
        }
        [ObjectType::MediaType].into_iter().flat_map(|t| self.enumerate(t, None)).find(|o| o.id == id.to_string())
    }

    fn computer(&self) -> ObjectInfo {
        let inv = self.inventory;
        let drive_count: usize = inv.libraries().map(|l| inv.element_count(l.id, ElementKind::Drive)).sum();
        let mut o = info(
            computer_id(self.host),
            self.host.into(),
            "ready",
            ObjectDetails::Computer(ComputerDetails {
                host_name: self.host.into(),
                version: env!("CARGO_PKG_VERSION").into(),
                library_count: u32::try_from(self.inventory.libraries().count()).unwrap_or(u32::MAX),
                drive_count: u32::try_from(drive_count).unwrap_or(u32::MAX),
            }),
        );
        (o.created, o.modified) = (self.started, self.started);
        o
    }

    fn library(&self, id: Guid) -> ObjectInfo {
        let inv = self.inventory;
        let rec = inv.library(id);
        let count = |k| u32::try_from(inv.element_count(id, k)).unwrap_or(u32::MAX);
        let state = self.library_state(id);
        let kind = if matches!(state, None | Some(LibraryState::Offline)) {
            LibraryKind::Offline
        } else {
            LibraryKind::Online
        };
        let mut o = info(
            id,
            rec.map_or_else(String::new, |r| r.name.clone()),
            state_name(state),
            ObjectDetails::Library(LibraryDetails {
                kind,
                changers: vec![changer_id(id).to_string()],
                slot_count: count(ElementKind::Storage),
                drive_count: count(ElementKind::Drive),
                ie_port_count: count(ElementKind::ImportExport),
                door_open: self.live(id).map(|l| l.door_open),
                partitions: self.live(id).filter(|l| !l.partitions.is_empty()).map(|l| {
                    l.partitions
                        .iter()
                        .map(|p| PartitionDetails {
                            name: p.name.clone(),
                            application: p.application.clone(),
                            slots: match p.pool.as_deref() {
                                Some(pool) => inv.pool_slots(id, pool),
                                None => p.slots.clone(),
                            },
                            pool: p.pool.clone(),
                            drives: p.drives.clone(),
                            mail_slots: p.mail_slots,
                        })
                        .collect()
                }),
                barcode_reader: inv
                    .elements(id)
                    .any(|e| e.media.and_then(|m| inv.medium(m)).is_some_and(|m| m.barcode.is_some())),
                vendor: rec.map(|r| r.vendor.clone()),
                product: rec.map(|r| r.product.clone()),
                serial: rec.map(|r| r.serial.clone()),
                scan_done: self.live(id).and_then(|l| l.scan).map(|s| u32::try_from(s.0).unwrap_or(u32::MAX)),
                scan_total: self.live(id).and_then(|l| l.scan).map(|s| u32::try_from(s.1).unwrap_or(u32::MAX)),
            }),
        );
        // Usable: online, and not disabled by an administrator.
        o.enabled = kind == LibraryKind::Online && !rec.is_some_and(|r| r.disabled);
        (o.created, o.modified) = rec.map_or((0, 0), |r| (r.created, r.modified));
        if rec.is_some_and(|r| r.stale) && kind == LibraryKind::Offline {
            o.description = "inventory not verified since the library went offline".into();
        }
        if let Some(why) = self.live(id).and_then(|l| l.not_ready.clone()) {
            o.description = why;
        }
        o
    }

    fn changer(&self, lib: Guid) -> ObjectInfo {
        let rec = self.inventory.library(lib);
        let transport = self.inventory.elements(lib).find(|e| e.kind == ElementKind::Transport);
        let mut o = info(
            changer_id(lib),
            format!("{} changer", rec.map_or("", |r| r.name.as_str())),
            state_name(self.library_state(lib)),
            ObjectDetails::Changer(ChangerDetails {
                library: lib.to_string(),
                device: self.live(lib).map(|l| l.device.clone()).or_else(|| rec.map(|r| r.device.clone())),
                element_address: transport.map_or(0, |t| u32::from(t.address)),
                vendor: rec.map(|r| r.vendor.clone()),
                product: rec.map(|r| r.product.clone()),
                serial: rec.map(|r| r.serial.clone()),
                revision: rec.map(|r| r.revision.clone()),
            }),
        );
        (o.created, o.modified) = rec.map_or((0, 0), |r| (r.created, r.modified));
        o
    }

    fn element(&self, e: &ElementRecord) -> ObjectInfo {
        let mut o = self.element_details(e);
        // DisableObject: a disabled drive is never chosen.
        o.enabled = !e.disabled;
        // Elements are found with their library; their own changes are not timed (the cartridges' are).
        o.created = self.inventory.library(e.library).map_or(0, |l| l.created);
        o.modified = o.created;
        o
    }

    fn element_details(&self, e: &ElementRecord) -> ObjectInfo {
        let inv = self.inventory;
        let m = e.media.and_then(|id| inv.medium(id));
        let barcode = m.and_then(|m| m.barcode.clone());
        let media = e.media.map(|g| g.to_string());
        let lib = e.library.to_string();
        let address = u32::from(e.address);
        let suspect =
            e.kind == ElementKind::Drive && self.live(e.library).is_some_and(|l| l.suspect_drives.contains(&e.address));
        let gone =
            e.kind == ElementKind::Drive && self.live(e.library).is_some_and(|l| l.gone_drives.contains(&e.address));
        let state = if gone {
            "offline"
        } else if e.exception.is_some() || suspect {
            "error"
        } else {
            state_name(self.library_state(e.library))
        };
        match e.kind {
            ElementKind::Drive => {
                let mut d = e.drive.clone().unwrap_or_default();
                if gone {
                    // Its nodes went with it: never show a node that is not there (or is another device's now).
                    (d.device, d.nst) = (None, None);
                }
                let mounted_by = m.and_then(|m| m.mounted_by.as_ref()).map(super::mounting::owner_text);
                let cleaner = m.is_some_and(|m| m.kind == MediaKind::Cleaning);
                let job =
                    self.live(e.library).and_then(|l| l.drive_jobs.iter().find(|j| j.0 == e.address)).map(|j| j.1);
                let drive_state = match (e.media, &mounted_by) {
                    _ if e.exception.is_some() || suspect || gone => DriveState::Error,
                    _ if job == Some(true) => DriveState::Loading,
                    _ if job == Some(false) => DriveState::Dismounting,
                    (None, _) => DriveState::Empty,
                    (Some(_), _) if cleaner => DriveState::BeingCleaned,
                    (Some(_), Some(_)) => DriveState::Mounted,
                    (Some(_), None) => DriveState::Loaded,
                };
                let (vendor, product) = match d.product.as_deref().map(|p| p.split_once(' ')) {
                    Some(Some((v, p))) => (Some(v.to_owned()), Some(p.trim().to_owned())),
                    Some(None) => (None, d.product.clone()),
                    None => (None, None),
                };
                info(
                    e.id(),
                    format!("Drive {}", e.number),
                    state,
                    ObjectDetails::Drive(DriveDetails {
                        library: lib,
                        number: e.number,
                        element_address: address,
                        state: drive_state,
                        vendor,
                        product,
                        serial: d.serial,
                        devices: DeviceNodes { sg: d.device, nst: d.nst, by_id: None },
                        media,
                        barcode,
                        source_element: m.and_then(|m| m.home).map(|h| u32::from(h.address)),
                        mounted_by,
                        mount_count: e.mounts,
                        needs_cleaning: TapeAlerts(d.care.alerts).needs_cleaning(),
                        last_cleaned: d.care.last_cleaned,
                        tape_alerts: (d.care.alerts != 0).then(|| TapeAlerts(d.care.alerts).flags()),
                        cleanings: (d.care.cleanings != 0).then_some(d.care.cleanings),
                        volume_tag_width: (e.tag_printed != 0).then_some(u32::from(e.tag_printed)),
                    }),
                )
            }
            ElementKind::ImportExport => info(
                e.id(),
                format!("Mail slot {}", e.number),
                state,
                ObjectDetails::IePort(IePortDetails {
                    library: lib,
                    number: e.number,
                    element_address: address,
                    full: e.media.is_some(),
                    media,
                    barcode,
                    import_enabled: true,
                    export_enabled: true,
                    volume_tag_width: (e.tag_printed != 0).then_some(u32::from(e.tag_printed)),
                }),
            ),
            _ => info(
                e.id(),
                format!("Slot {}", e.number),
                state,
                ObjectDetails::StorageSlot(SlotDetails {
                    library: lib,
                    number: e.number,
                    element_address: address,
                    full: e.media.is_some(),
                    media,
                    cleaner_slot: m.is_some_and(|m| m.kind == MediaKind::Cleaning),
                    volume_tag_width: (e.tag_printed != 0).then_some(u32::from(e.tag_printed)),
                    barcode,
                }),
            ),
        }
    }

    fn medium(&self, m: &MediaRecord) -> ObjectInfo {
        let inv = self.inventory;
        let (kind, library, element, address) = match m.location {
            None => (LocationKind::Offline, None, None, None),
            Some(l) => {
                let kind = match l.kind {
                    ElementKind::Storage => LocationKind::Slot,
                    ElementKind::Drive => LocationKind::Drive,
                    ElementKind::ImportExport => LocationKind::IePort,
                    ElementKind::Transport => LocationKind::Transport,
                };
                let element = inv.element(l.library, l.kind, l.address).map(|e| e.id().to_string());
                (kind, Some(l.library.to_string()), element, Some(u32::from(l.address)))
            }
        };
        let home_slot = m.home.and_then(|h| inv.element(h.library, h.kind, h.address)).map(|e| e.id().to_string());
        let type_name = crate::media::pools::media_type_name(m);
        // RSM's media states: in use while a request works on it (queued, moving, loading, unloading), loaded once
        // mounted and ready, idle in a slot or parked in a drive; and offline outside any library.
        let busy = self.busy_media.get_or_init(|| self.requests.open_media()).contains(&m.id.to_string());
        let state = match (m.location, m.mounted_by.as_ref()) {
            (None, _) => "offline",
            _ if busy => "in_use",
            (Some(_), Some(_)) => "loaded",
            (Some(_), None) => "idle",
        };
        let pool = m.pool.and_then(|p| inv.pool(p));
        let mut o = info(
            m.id,
            m.barcode.clone().unwrap_or_else(|| "(no label)".into()),
            state,
            ObjectDetails::PhysicalMedia(MediaDetails {
                barcode: m.barcode.clone(),
                location: Location { kind, library, element, element_address: address },
                home_slot,
                media_type: Some(media_type_id(&type_name).to_string()),
                pool: m.pool.map(|p| p.to_string()),
                mount_count: m.mount_count,
                cleaner: m.kind == MediaKind::Cleaning,
                cleaning_count: (m.kind == MediaKind::Cleaning)
                    .then(|| u32::try_from(m.mount_count).unwrap_or(u32::MAX)),
                side: m.side.map(|s| s.name().to_owned()),
                logical_media: m.lmid.map(|l| l.to_string()),
                allocations: m.allocations,
                owner_uid: m.allocated_to.as_ref().map(|o| o.uid),
                owner_application: m.allocated_to.as_ref().and_then(|o| o.application.clone()),
                media_type_name: Some(type_name),
                pool_name: pool.map(|p| p.name.clone()),
                on_media: m.on_media.clone(),
            }),
        );
        o.enabled = m.enabled;
        o.description.clone_from(&m.description);
        o.version = Some(m.version);
        o.created = m.created;
        o.modified = m.modified;
        o
    }

    fn pool(&self, p: &PoolRecord) -> ObjectInfo {
        let inv = self.inventory;
        let kind = match p.kind {
            crate::model::PoolKind::Free => PoolKind::Free,
            crate::model::PoolKind::Import => PoolKind::Import,
            crate::model::PoolKind::Unrecognized => PoolKind::Unrecognized,
            crate::model::PoolKind::Application => PoolKind::Application,
        };
        let children: Vec<Guid> = inv.child_pools(p.id).map(|c| c.id).collect();
        // A system pool's top level counts the media of its types.
        let (count, allocated) = if children.is_empty() || p.kind == crate::model::PoolKind::Application {
            (inv.pool_media_count(p.id), inv.pool_held_count(p.id))
        } else {
            (children.iter().map(|c| inv.pool_media_count(*c)).sum(), 0)
        };
        let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
        let mut o = info(
            p.id,
            p.name.clone(),
            "ready",
            ObjectDetails::MediaPool(PoolDetails {
                kind,
                media_type: p.media_type.as_deref().map(|t| media_type_id(t).to_string()),
                parent: p.parent.map(|g| g.to_string()),
                draw_from_free: p.draw_from_free,
                return_to_free: p.return_to_free,
                max_allocations: p.max_allocations,
                media_count: n(count),
                allocated_count: n(allocated),
                pool_count: n(children.len()),
                owner_uid: p.owner.as_ref().map(|o| o.uid),
                owner_application: p.owner.as_ref().and_then(|o| o.application.clone()),
            }),
        );
        o.description.clone_from(&p.description);
        o.version = Some(p.version);
        o.created = p.created;
        o.modified = p.modified;
        o
    }
}
