use super::*;
use crate::model::Snapshot;
use crate::scsi::asc::Asc;

/// An element as a library reports it (shared with the pool tests).
pub(super) fn el(t: ElementType, address: u16, barcode: Option<&str>) -> Element {
    Element {
        element_type: t,
        address,
        full: barcode.is_some(),
        barcode: barcode.map(str::to_owned),
        source: None,
        exception: None,
        accessible: true,
        impexp: false,
        cleaning: false,
        tag_printed: 0,
        identifier: None,
        device: None,
    }
}

pub(super) fn no_drive(_: usize) -> DriveInfo {
    DriveInfo::default()
}

fn layout() -> Vec<Element> {
    vec![
        el(ElementType::MediumTransport, 1, None),
        el(ElementType::Storage, 1000, Some("ABC001L6")),
        el(ElementType::Storage, 1001, Some("CLN001L1")),
        el(ElementType::Storage, 1002, None),
        el(ElementType::ImportExport, 10, None),
        el(ElementType::DataTransfer, 500, None),
        el(ElementType::DataTransfer, 501, None),
    ]
}

#[test]
fn full_scan_creates_media_and_numbers_like_mtx() {
    let lib = Guid::derive("library", "S");
    let mut inv = Inventory::default();
    let changes = inv.reconcile(lib, &layout(), true, &no_drive);
    assert_eq!(changes.iter().filter(|c| matches!(c, Change::Media(_))).count(), 2);
    let number = |k, a| inv.element(lib, k, a).unwrap().number;
    assert_eq!(number(ElementKind::Drive, 500), 0);
    assert_eq!(number(ElementKind::Drive, 501), 1);
    assert_eq!(number(ElementKind::Storage, 1000), 1);
    assert_eq!(number(ElementKind::Storage, 1002), 3);
    assert_eq!(number(ElementKind::ImportExport, 10), 4);
    let cln = inv.media_by_barcode("CLN001L1").unwrap();
    assert_eq!(cln.kind, MediaKind::Cleaning);
    assert_eq!(cln.home.unwrap().address, 1001);
    // The same scan again changes nothing.
    assert!(inv.reconcile(lib, &layout(), true, &no_drive).is_empty());
}

#[test]
fn identity_survives_a_move_and_one_place_per_cartridge() {
    let lib = Guid::derive("library", "S");
    let mut inv = Inventory::default();
    inv.reconcile(lib, &layout(), true, &no_drive);
    let id = inv.media_by_barcode("ABC001L6").unwrap().id;
    // Partial update after a move 1000 → 500.
    let mut drive = el(ElementType::DataTransfer, 500, Some("ABC001L6"));
    drive.source = Some(1000);
    let moved = [el(ElementType::Storage, 1000, None), drive];
    inv.reconcile(lib, &moved, false, &no_drive);
    let m = inv.media_by_barcode("ABC001L6").unwrap();
    assert_eq!(m.id, id);
    assert_eq!(m.location.unwrap(), Location { library: lib, kind: ElementKind::Drive, address: 500 });
    assert_eq!(m.home.unwrap().address, 1000);
    assert_eq!(inv.element(lib, ElementKind::Storage, 1000).unwrap().media, None);
    assert_eq!(inv.element(lib, ElementKind::Drive, 500).unwrap().number, 0);
}

#[test]
fn cartridge_not_seen_goes_offline_and_duplicates_are_kept_once() {
    let lib = Guid::derive("library", "S");
    let mut inv = Inventory::default();
    inv.reconcile(lib, &layout(), true, &no_drive);
    let mut l = layout();
    l[1] = el(ElementType::Storage, 1000, None);
    l[3] = el(ElementType::Storage, 1002, Some("CLN001L1"));
    l[3].exception = Some(Asc(0x83, 0));
    inv.reconcile(lib, &l, true, &no_drive);
    assert_eq!(inv.media_by_barcode("ABC001L6").unwrap().location, None);
    // CLN001L1 reported twice (1001 and 1002): the first place wins.
    assert_eq!(inv.media_by_barcode("CLN001L1").unwrap().location.unwrap().address, 1001);
    assert_eq!(inv.element(lib, ElementKind::Storage, 1002).unwrap().exception, Some((0x83, 0)));
}

#[test]
fn shrinking_library_removes_elements_and_snapshot_round_trips() {
    let lib = Guid::derive("library", "S");
    let mut inv = Inventory::default();
    inv.reconcile(lib, &layout(), true, &no_drive);
    let changes = inv.reconcile(lib, &layout()[..5], true, &no_drive);
    assert_eq!(changes.iter().filter(|c| matches!(c, Change::RemoveElement { .. })).count(), 2);
    let snap = Snapshot {
        elements: inv.all_elements().cloned().collect(),
        media: inv.media().cloned().collect(),
        ..Snapshot::default()
    };
    let back = Inventory::from_snapshot(snap);
    assert_eq!(back.elements(lib).count(), 5);
    assert!(back.media_by_barcode("ABC001L6").is_some());
}

#[test]
fn media_types_relate_to_the_libraries_whose_drives_take_them_or_that_hold_them() {
    let (a, b) = (Guid::derive("library", "A"), Guid::derive("library", "B"));
    let mut inv = Inventory::default();
    let mut drive = el(ElementType::DataTransfer, 500, None);
    drive.device = Some(0);
    let lto8 = |_: usize| DriveInfo { product: Some("IBM ULT3580-TD8".into()), ..DriveInfo::default() };
    inv.reconcile(a, &[drive.clone(), el(ElementType::Storage, 1000, Some("ABC001L6"))], true, &lto8);
    let mut unlabelled = el(ElementType::Storage, 1000, None);
    unlabelled.full = true;
    inv.reconcile(b, &[unlabelled], true, &no_drive);
    let types = inv.media_types();
    let libs = |name: &str| types.get(name).map(|t| t.1.clone()).unwrap_or_default();
    assert_eq!(libs("LTO-8"), [a].into(), "its drive takes LTO-8");
    assert_eq!(libs("LTO-M8"), [a].into());
    assert_eq!(libs("LTO-6"), [a].into(), "it holds an LTO-6 cartridge (its LTO-8 drive cannot read it)");
    assert_eq!(libs("unknown"), [b].into(), "a cartridge without a label");
    assert!(!types.contains_key("LTO-5"));
    assert!(types["LTO-Cleaner"].0.cleaner);
}

/// A scan reconciled a slice at a time (as the broker does for a large library, one slice per turn) ends exactly
/// where reconciling it at once ends: same changes, same elements and cartridges, whatever the slice size.
#[test]
fn a_slice_of_changes_covers_fewer_elements_than_one_of_unchanged_elements() {
    let lib = Guid::derive("library", "W");
    let scan: Vec<Element> =
        (0..2048u16).map(|i| el(ElementType::Storage, 1000 + i, Some(&format!("W{i:05}L8")))).collect();
    let steps = |inv: &mut Inventory| {
        let mut job = inv.start_reconcile(lib, std::sync::Arc::new(scan.clone()), true);
        let (mut changes, mut steps) = (Vec::new(), 1);
        while !inv.reconcile_step(&mut job, 1024, &no_drive, &mut changes) {
            steps += 1;
        }
        (steps, changes.len())
    };
    let mut inv = Inventory::default();
    // First scan: a new cartridge and a new element for each slot, (1 + 2 × CHANGE_COST) units each.
    let (first, created) = steps(&mut inv);
    // (and the pools' records, made with the first cartridge)
    assert!(created >= 2 * scan.len() && created <= 2 * scan.len() + 4, "{created} changes");
    let per_step = 1024usize.div_ceil(1 + 2 * crate::media::CHANGE_COST);
    let expected = scan.len().div_ceil(per_step);
    assert!((expected..=expected + 1).contains(&first), "{first} steps for the first scan, {expected} expected");
    // The same scan again: nothing changes, 1,024 elements a step.
    let (again, changed) = steps(&mut inv);
    assert_eq!((again, changed), (2, 0));
}

#[test]
fn a_scan_reconciled_in_slices_ends_as_one_reconciled_at_once() {
    let lib = Guid::derive("library", "S");
    // Before: a library with cartridges here and there; after: some moved, one gone, one new, one slot gone.
    let before: Vec<Element> = (0..40u16)
        .map(|i| el(ElementType::Storage, 1000 + i, (i % 3 != 0).then(|| format!("A{i:03}L6")).as_deref()))
        .chain([el(ElementType::DataTransfer, 500, Some("A100L6")), el(ElementType::ImportExport, 10, None)])
        .collect();
    let mut after: Vec<Element> = before[..39]
        .iter()
        .map(|e| {
            let mut e = e.clone();
            // Cartridges of slots 1004 and 1005 swap places; A001L6 leaves; a new one arrives in 1003.
            e.barcode = match e.address {
                1004 => Some("A005L6".into()),
                1005 => Some("A004L6".into()),
                1001 => None,
                1003 => Some("NEW001L6".into()),
                _ => e.barcode,
            };
            e.full = e.barcode.is_some();
            e
        })
        .collect();
    after.reverse();
    after.push(el(ElementType::DataTransfer, 500, None));
    let state = |inv: &Inventory| {
        let elements: Vec<String> = inv.all_elements().map(|e| format!("{e:?}")).collect();
        let mut media: Vec<String> = inv.media().map(|m| format!("{m:?}")).collect();
        media.sort();
        // The counts kept for the library's object agree with the elements.
        for k in ElementKind::ALL {
            assert_eq!(inv.element_count(lib, k), inv.elements(lib).filter(|e| e.kind == k).count(), "{k:?}");
        }
        (elements, media)
    };
    let mut whole = Inventory::default();
    whole.reconcile(lib, &before, true, &no_drive);
    let expected = whole.reconcile(lib, &after, true, &no_drive);
    assert!(expected.iter().any(|c| matches!(c, Change::RemoveElement { .. })), "the test removes a slot");
    for slice in [1, 2, 7, 39, 1000] {
        let mut inv = Inventory::default();
        inv.reconcile(lib, &before, true, &no_drive);
        let mut job = inv.start_reconcile(lib, std::sync::Arc::new(after.clone()), true);
        let mut changes = Vec::new();
        let mut steps = 1;
        while !inv.reconcile_step(&mut job, slice, &no_drive, &mut changes) {
            steps += 1;
        }
        // Changes cost more than elements: never fewer steps than elements per slice allow, never more than
        // one per element.
        assert!(steps >= after.len().div_ceil(slice).max(1) && steps <= after.len(), "slice {slice}: {steps} steps");
        assert_eq!(changes, expected, "slice {slice}");
        assert_eq!(state(&inv), state(&whole), "slice {slice}");
    }
}
