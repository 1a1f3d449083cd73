use std::collections::BTreeMap;

use super::*;
use crate::media::tests::{el, no_drive};
use crate::scsi::element::ElementType;

const LIB: &str = "S";

/// A library with the given cartridges in slots 1000.., reconciled into a settled inventory.
fn inventory(rules: MediaRules, barcodes: &[Option<&str>]) -> Inventory {
    let lib = Guid::derive("library", LIB);
    let mut inv = Inventory::default();
    inv.set_rules(rules);
    inv.clock = 1_000;
    inv.settle(1_000);
    let mut els = vec![el(ElementType::MediumTransport, 1, None), el(ElementType::DataTransfer, 500, None)];
    for (i, b) in barcodes.iter().enumerate() {
        let mut e = el(ElementType::Storage, 1000 + u16::try_from(i).unwrap(), *b);
        e.full = true;
        els.push(e);
    }
    inv.reconcile(lib, &els, true, &no_drive);
    inv
}

fn id(inv: &Inventory, barcode: &str) -> Guid {
    inv.media_by_barcode(barcode).unwrap().id
}

fn pool_of<'a>(inv: &'a Inventory, barcode: &str) -> &'a str {
    &inv.pool(inv.media_by_barcode(barcode).unwrap().pool.unwrap()).unwrap().name
}

fn side(inv: &Inventory, barcode: &str) -> SideState {
    inv.media_by_barcode(barcode).unwrap().side.unwrap()
}

fn owner(uid: u32, app: &str) -> Owner {
    Owner { uid, application: Some(app.into()) }
}

fn app_pool(inv: &mut Inventory, path: &str) -> Guid {
    inv.create_pool(path, None, CreateAction::CreateNew, owner(1000, "Bacula"), 2_000).unwrap().0
}

fn alloc_bc(inv: &mut Inventory, pool: Guid, barcode: &str) -> Result<Allocation, PoolError> {
    let m = id(inv, barcode);
    alloc(inv, pool, Some(m))
}

fn alloc(inv: &mut Inventory, pool: Guid, media: Option<Guid>) -> Result<Allocation, PoolError> {
    inv.allocate(&AllocateArgs { pool, media, owner: owner(1000, "Bacula"), now: 3_000 }).map(|(a, _)| a)
}

/// Every cartridge is in exactly one existing leaf pool; counts agree; every LMID maps to one held side.
fn assert_invariants(inv: &Inventory) {
    let mut counts: BTreeMap<Guid, usize> = BTreeMap::new();
    for m in inv.media() {
        let p = m.pool.unwrap_or_else(|| panic!("{:?} in no pool", m.barcode));
        assert!(inv.pool(p).is_some(), "{:?} in a missing pool", m.barcode);
        assert!(inv.child_pools(p).next().is_none(), "{:?} in a pool of pools", m.barcode);
        *counts.entry(p).or_default() += 1;
        match m.lmid {
            Some(l) => {
                assert!(m.side.unwrap().is_held(), "{:?} has an LMID but is {:?}", m.barcode, m.side);
                assert_eq!(inv.media_by_lmid(l).unwrap().id, m.id);
            }
            None => assert!(!m.side.unwrap().is_held(), "{:?} held without an LMID", m.barcode),
        }
    }
    for p in inv.pools() {
        assert_eq!(inv.pool_media_count(p.id), counts.get(&p.id).copied().unwrap_or(0), "count of {}", p.name);
        let held = inv.media().filter(|m| m.pool == Some(p.id) && m.lmid.is_some()).count();
        assert_eq!(inv.pool_held_count(p.id), held, "held in {}", p.name);
        let available: BTreeSet<(Option<String>, Guid)> = inv
            .media()
            .filter(|m| m.pool == Some(p.id) && m.side == Some(SideState::Available))
            .map(|m| (m.barcode.clone(), m.id))
            .collect();
        let indexed = inv.pool_index.get(&p.id).map(|ix| ix.available.clone()).unwrap_or_default();
        assert_eq!(indexed, available, "available in {}", p.name);
    }
}

#[test]
fn new_media_go_where_the_rule_says() {
    let rules = MediaRules {
        prefixes: vec![("B".into(), Target::Pool("Bacula\\Full".into())), ("IMP".into(), Target::Import)],
        new_media: Target::Free,
        cleaner_uses: 50,
        pools: vec![],
    };
    let inv =
        inventory(rules, &[Some("ABC001L6"), Some("B00001L7"), Some("CLN001L1"), Some("IMP001L6"), Some("XYZ"), None]);
    assert_eq!(pool_of(&inv, "ABC001L6"), "Free\\LTO-6");
    assert_eq!(side(&inv, "ABC001L6"), SideState::Available);
    assert_eq!(pool_of(&inv, "B00001L7"), "Bacula\\Full", "the longest prefix wins and the pool is made");
    assert_eq!(inv.pool_by_name("bacula").unwrap().kind, PoolKind::Application);
    assert_eq!(pool_of(&inv, "CLN001L1"), "Free\\LTO-Cleaner");
    assert_eq!(inv.media_by_barcode("CLN001L1").unwrap().kind, MediaKind::Cleaning);
    assert_eq!(pool_of(&inv, "IMP001L6"), "Import\\LTO-6");
    assert_eq!(side(&inv, "IMP001L6"), SideState::Import);
    assert_eq!(pool_of(&inv, "XYZ"), "Unrecognized\\unknown", "no media type: unrecognized");
    assert_eq!(side(&inv, "XYZ"), SideState::Foreign);
    let unlabelled = inv.media().find(|m| m.barcode.is_none()).unwrap();
    assert_eq!(inv.pool(unlabelled.pool.unwrap()).unwrap().name, "Unrecognized\\unknown");
    assert_eq!(unlabelled.created, 1_000);
    assert_invariants(&inv);
    // Import as the default for known types.
    let inv = inventory(
        MediaRules { prefixes: vec![], new_media: Target::Import, cleaner_uses: 50, pools: vec![] },
        &[Some("ABC001L6")],
    );
    assert_eq!(pool_of(&inv, "ABC001L6"), "Import\\LTO-6");
}

#[test]
fn records_from_before_pools_are_placed_at_load() {
    let mut inv = inventory(MediaRules::default(), &[Some("ABC001L6")]);
    let mut m = inv.media_by_barcode("ABC001L6").unwrap().clone();
    m.pool = None;
    m.side = None;
    let snapshot = crate::model::Snapshot { media: vec![m], ..Default::default() };
    let mut loaded = Inventory::from_snapshot(snapshot);
    let changes = loaded.settle(5);
    assert!(changes.iter().any(|c| matches!(c, Change::Media(_))));
    assert_eq!(pool_of(&loaded, "ABC001L6"), "Free\\LTO-6");
    assert_invariants(&loaded);
    // Settling again changes nothing.
    assert!(loaded.settle(6).is_empty());
    inv.settle(7);
    assert_invariants(&inv);
}

#[test]
fn pools_create_nest_and_delete_by_rsm_rules() {
    let mut inv = inventory(MediaRules::default(), &[Some("ABC001L6")]);
    let o = owner(1000, "Bacula");
    assert!(matches!(
        inv.create_pool("Bacula\\Full", None, CreateAction::OpenAlways, o.clone(), 1),
        Err(PoolError::InvalidPool(m)) if m.contains("create it first")
    ));
    let (top, created, _) = inv.create_pool("Bacula", None, CreateAction::OpenAlways, o.clone(), 1).unwrap();
    assert!(created);
    let (again, created, changes) = inv.create_pool("bacula", None, CreateAction::OpenAlways, o.clone(), 1).unwrap();
    assert_eq!((again, created, changes.len()), (top, false, 0), "open-always opens in any case");
    assert!(matches!(
        inv.create_pool("Bacula", None, CreateAction::CreateNew, o.clone(), 1),
        Err(PoolError::AlreadyExists(_))
    ));
    assert!(matches!(
        inv.create_pool("Amanda", None, CreateAction::OpenExisting, o.clone(), 1),
        Err(PoolError::InvalidPool(_))
    ));
    for bad in ["", "a\\\\b", "x \\y", &"x".repeat(65), "a/b"] {
        assert!(
            matches!(
                inv.create_pool(bad, None, CreateAction::OpenAlways, o.clone(), 1),
                Err(PoolError::InvalidName(_))
            ),
            "{bad:?}"
        );
    }
    for system in ["Free", "free\\LTO-6", "Import\\x", "Unrecognized"] {
        assert!(inv.create_pool(system, None, CreateAction::CreateNew, o.clone(), 1).is_err(), "{system}");
    }
    assert!(inv.create_pool("Import\\x", None, CreateAction::OpenAlways, o.clone(), 1).is_err());
    let full = app_pool(&mut inv, "Bacula\\Full");
    // A pool of pools holds no media; a pool with media takes no sub-pool.
    let abc = id(&inv, "ABC001L6");
    assert!(matches!(inv.move_to_pool(abc, top, 1), Err(PoolError::InvalidPool(_))));
    inv.move_to_pool(abc, full, 1).unwrap();
    assert!(inv.create_pool("Bacula\\Full\\Deeper", None, CreateAction::OpenAlways, o.clone(), 1).is_err());
    // Delete: only empty application pools, leaves first.
    assert!(matches!(inv.delete_pool(top), Err(PoolError::NotEmpty(_))));
    assert!(matches!(inv.delete_pool(full), Err(PoolError::NotEmpty(_))));
    let free = inv.pool_by_name("Free").unwrap().id;
    assert!(matches!(inv.delete_pool(free), Err(PoolError::InvalidPool(_))));
    inv.move_to_pool(abc, free, 1).unwrap();
    assert_eq!(pool_of(&inv, "ABC001L6"), "Free\\LTO-6", "Free means the Free pool of its type");
    inv.delete_pool(full).unwrap();
    inv.delete_pool(top).unwrap();
    assert!(inv.pool_by_name("Bacula").is_none());
    assert_invariants(&inv);
}

#[test]
fn moves_follow_rsm_rules() {
    let rules = MediaRules {
        prefixes: vec![("IMP".into(), Target::Import)],
        new_media: Target::Free,
        cleaner_uses: 50,
        pools: vec![],
    };
    let mut inv = inventory(rules, &[Some("ABC001L6"), Some("IMP001L6"), Some("XYZ"), Some("ABC002L7")]);
    let pool = app_pool(&mut inv, "Bacula");
    let (free, import) = (inv.pool_by_name("Free").unwrap().id, inv.pool_by_name("Import").unwrap().id);
    // From Import or Unrecognized only to Free.
    assert!(matches!(inv.move_to_pool(id(&inv, "IMP001L6"), pool, 1), Err(PoolError::InvalidState(_))));
    inv.move_to_pool(id(&inv, "XYZ"), free, 1).unwrap();
    assert_eq!((pool_of(&inv, "XYZ"), side(&inv, "XYZ")), ("Free\\unknown", SideState::Available));
    // Into Import only media of unknown origin.
    assert!(matches!(inv.move_to_pool(id(&inv, "ABC001L6"), import, 1), Err(PoolError::InvalidState(_))));
    // Allocated media never go to Free.
    inv.move_to_pool(id(&inv, "ABC001L6"), pool, 1).unwrap();
    alloc_bc(&mut inv, pool, "ABC001L6").unwrap();
    assert!(matches!(inv.move_to_pool(id(&inv, "ABC001L6"), free, 1), Err(PoolError::InvalidState(_))));
    // The pool took LTO-6 with its first cartridge: an LTO-7 does not fit.
    assert!(matches!(inv.move_to_pool(id(&inv, "ABC002L7"), pool, 1), Err(PoolError::Incompatible(_))));
    // Mounted media do not move.
    let mut m = inv.media_by_barcode("IMP001L6").unwrap().clone();
    m.mounted_by = Some(owner(0, "x"));
    inv.put_media(m);
    assert!(matches!(inv.move_to_pool(id(&inv, "IMP001L6"), free, 1), Err(PoolError::Busy(_))));
    assert_invariants(&inv);
}

#[test]
fn allocation_draws_from_free_and_deallocation_returns() {
    let mut inv = inventory(MediaRules::default(), &[Some("ABC002L6"), Some("ABC001L6"), Some("CLN001L1")]);
    let pool = app_pool(&mut inv, "Bacula");
    assert!(matches!(alloc(&mut inv, pool, None), Err(PoolError::Unavailable(m)) if m.contains("does not draw")));
    let mut u = Update { draw_from_free: Some(true), return_to_free: Some(true), ..Default::default() };
    inv.update_pool(pool, &u, 5).unwrap();
    let a = alloc(&mut inv, pool, None).unwrap();
    assert_eq!(inv.medium(a.media).unwrap().barcode.as_deref(), Some("ABC001L6"), "by barcode");
    assert_eq!(inv.pool(a.from).unwrap().name, "Free\\LTO-6");
    let m = inv.medium(a.media).unwrap();
    assert_eq!((m.side, m.lmid, m.allocations), (Some(SideState::Allocated), Some(a.lmid), 1));
    assert_eq!(m.allocated_to, Some(owner(1000, "Bacula")));
    assert_eq!(inv.pool(pool).unwrap().media_type.as_deref(), Some("LTO-6"));
    let b = alloc(&mut inv, pool, None).unwrap();
    assert_ne!(a.lmid, b.lmid);
    // The cleaner is never allocated: nothing left.
    assert!(matches!(alloc(&mut inv, pool, None), Err(PoolError::Unavailable(_))));
    assert!(!inv.could_allocate(pool));
    let cln = id(&inv, "CLN001L1");
    assert!(matches!(alloc(&mut inv, pool, Some(cln)), Err(PoolError::Unavailable(_) | PoolError::Incompatible(_))));
    // Deallocate: back to Free (the pool returns media); the LMID is gone.
    inv.deallocate(a.lmid, 6).unwrap();
    assert!(inv.media_by_lmid(a.lmid).is_none());
    assert_eq!(pool_of(&inv, "ABC001L6"), "Free\\LTO-6");
    assert_eq!(side(&inv, "ABC001L6"), SideState::Available);
    assert!(matches!(inv.deallocate(a.lmid, 6), Err(PoolError::InvalidMedia(_))));
    assert!(inv.could_allocate(pool));
    // Max allocations: the second deallocation of a twice-allocated cartridge decommissions it.
    u = Update { return_to_free: Some(false), max_allocations: Some(2), ..Default::default() };
    inv.update_pool(pool, &u, 7).unwrap();
    let again = alloc(&mut inv, pool, Some(a.media)).unwrap();
    assert_eq!(inv.medium(a.media).unwrap().allocations, 2);
    inv.deallocate(again.lmid, 8).unwrap();
    assert_eq!(side(&inv, "ABC001L6"), SideState::Decommissioned);
    assert_eq!(pool_of(&inv, "ABC001L6"), "Bacula");
    assert!(matches!(alloc(&mut inv, pool, Some(a.media)), Err(PoolError::Unavailable(_))));
    assert_invariants(&inv);
}

#[test]
fn import_is_allocated_in_one_step_and_system_pools_are_not_allocated_in() {
    let rules = MediaRules { prefixes: vec![], new_media: Target::Import, cleaner_uses: 50, pools: vec![] };
    let mut inv = inventory(rules, &[Some("ABC001L6")]);
    let free = inv.pool_by_name("Free").unwrap().id;
    assert!(matches!(alloc(&mut inv, free, None), Err(PoolError::InvalidPool(_))));
    let pool = app_pool(&mut inv, "Amanda");
    let a = alloc_bc(&mut inv, pool, "ABC001L6").unwrap();
    assert_eq!(inv.pool(a.from).unwrap().name, "Import\\LTO-6");
    assert_eq!((pool_of(&inv, "ABC001L6"), side(&inv, "ABC001L6")), ("Amanda", SideState::Allocated));
    assert_invariants(&inv);
}

#[test]
fn complete_swap_decommission_delete_and_enable() {
    let mut inv = inventory(MediaRules::default(), &[Some("ABC001L6"), Some("ABC002L6"), Some("ABC003L6")]);
    let pool = app_pool(&mut inv, "Bacula");
    inv.update_pool(pool, &Update { draw_from_free: Some(true), ..Default::default() }, 1).unwrap();
    let a = alloc_bc(&mut inv, pool, "ABC001L6").unwrap();
    let b = alloc_bc(&mut inv, pool, "ABC002L6").unwrap();
    inv.set_complete(a.lmid, 2).unwrap();
    assert_eq!(side(&inv, "ABC001L6"), SideState::Complete);
    assert!(matches!(inv.set_complete(a.lmid, 2), Err(PoolError::InvalidState(_))));
    // Swap: the application's LMIDs now name the other cartridges.
    inv.swap(a.lmid, b.lmid, 3).unwrap();
    assert_eq!(inv.media_by_lmid(a.lmid).unwrap().barcode.as_deref(), Some("ABC002L6"));
    assert_eq!(inv.media_by_lmid(b.lmid).unwrap().barcode.as_deref(), Some("ABC001L6"));
    assert_eq!(side(&inv, "ABC002L6"), SideState::Complete, "the state goes with the LMID");
    assert!(inv.swap(a.lmid, a.lmid, 3).is_err());
    // Decommission only from available.
    let c = id(&inv, "ABC003L6");
    assert!(matches!(inv.decommission(id(&inv, "ABC001L6"), 4), Err(PoolError::InvalidState(_))));
    inv.decommission(c, 4).unwrap();
    assert!(matches!(inv.decommission(c, 4), Err(PoolError::InvalidState(_))));
    // Delete only offline and not held.
    assert!(matches!(inv.delete_media(c), Err(PoolError::InvalidState(m)) if m.contains("offline")));
    let mut m = inv.medium(c).unwrap().clone();
    m.location = None;
    inv.put_media(m);
    inv.delete_media(c).unwrap();
    assert!(inv.medium(c).is_none());
    // Enable / disable: a disabled cartridge is not allocated.
    let held = id(&inv, "ABC001L6");
    inv.set_media_enabled(held, false, 5).unwrap();
    assert!(matches!(inv.set_media_enabled(held, false, 5), Err(PoolError::InvalidState(_))));
    inv.set_media_enabled(held, true, 5).unwrap();
    assert_invariants(&inv);
}

#[test]
fn field_level_updates_check_the_version() {
    let mut inv = inventory(MediaRules::default(), &[Some("ABC001L6")]);
    let pool = app_pool(&mut inv, "Bacula");
    let v = inv.pool(pool).unwrap().version;
    let first = Update { version: Some(v), description: Some("fulls".into()), ..Default::default() };
    inv.update_pool(pool, &first, 1).unwrap();
    // A second writer with the old version is refused, not silently overwriting.
    let stale = Update { version: Some(v), max_allocations: Some(3), ..Default::default() };
    assert!(matches!(inv.update_pool(pool, &stale, 1), Err(PoolError::Stale(_))));
    let p = inv.pool(pool).unwrap();
    assert_eq!((p.description.as_str(), p.max_allocations, p.version), ("fulls", None, v + 1));
    // Fields not named stay.
    inv.update_pool(pool, &Update { max_allocations: Some(3), ..Default::default() }, 1).unwrap();
    assert_eq!(inv.pool(pool).unwrap().description, "fulls");
    // Rename carries the sub-pools.
    app_pool(&mut inv, "Bacula\\Inc");
    inv.update_pool(pool, &Update { name: Some("Bareos".into()), ..Default::default() }, 1).unwrap();
    assert!(inv.pool_by_name("Bareos\\Inc").is_some());
    assert!(inv.pool_by_name("Bacula\\Inc").is_none());
    let free = inv.pool_by_name("Free").unwrap().id;
    assert!(inv.update_pool(free, &Update { name: Some("x".into()), ..Default::default() }, 1).is_err());
    // Media: description only.
    let m = id(&inv, "ABC001L6");
    let mv = inv.medium(m).unwrap().version;
    inv.update_media(m, &Update { version: Some(mv), description: Some("off-site".into()), ..Default::default() }, 1)
        .unwrap();
    assert!(matches!(
        inv.update_media(m, &Update { version: Some(mv), ..Default::default() }, 1),
        Err(PoolError::Stale(_))
    ));
    assert!(inv.update_media(m, &Update { name: Some("x".into()), ..Default::default() }, 1).is_err());
    assert!(inv.update_media(m, &Update { description: Some("x\u{1}".into()), ..Default::default() }, 1).is_err());
}
