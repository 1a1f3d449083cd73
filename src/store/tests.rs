use std::sync::mpsc;

use super::*;
use crate::model::{ElementKind, LibraryState, Location, MediaKind};
use crate::model::{ElementRecord, LibraryRecord};

fn library(id: Guid) -> LibraryRecord {
    LibraryRecord {
        id,
        name: "lib".into(),
        serial: "S1".into(),
        vendor: "V".into(),
        product: "P".into(),
        revision: "1".into(),
        device: "/dev/sg1".into(),
        state: LibraryState::Ready,
        stale: false,
        load_ms: Some(20_000),
        disabled: false,
        created: 1,
        modified: 2,
    }
}

fn media(barcode: &str, lib: Guid, address: u16) -> MediaRecord {
    MediaRecord {
        location: Some(Location { library: lib, kind: ElementKind::Storage, address }),
        ..MediaRecord::new(Guid::derive("media", barcode), Some(barcode.into()), MediaKind::Data)
    }
}

#[test]
fn batches_round_trip_and_barcode_index_follows_relabels() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
    let lib = Guid::derive("library", "S1");
    let mut m = media("ABC001L6", lib, 1000);
    store.apply(&[Change::Library(library(lib)), Change::Media(m.clone())]).unwrap();
    assert_eq!(store.media_by_barcode("ABC001L6").unwrap(), Some(m.clone()));
    m.barcode = Some("ABC001L7".into());
    store.apply(&[Change::Media(m.clone())]).unwrap();
    assert_eq!(store.media_by_barcode("ABC001L6").unwrap(), None);
    assert_eq!(store.media_by_barcode("ABC001L7").unwrap(), Some(m.clone()));
    store.apply(&[Change::RemoveMedia(m.id)]).unwrap();
    assert_eq!(store.media_by_barcode("ABC001L7").unwrap(), None);
    let snap = store.load().unwrap();
    assert_eq!(snap.libraries.len(), 1);
    assert!(snap.media.is_empty());
}

#[test]
fn elements_scan_in_address_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let lib = Guid::derive("library", "S1");
    let el = |address| ElementRecord {
        library: lib,
        kind: ElementKind::Storage,
        address,
        number: u32::from(address),
        media: None,
        exception: None,
        accessible: true,
        drive: None,
        mounts: 0,
        tag_printed: 0,
        disabled: false,
    };
    store.apply(&[Change::Element(el(300)), Change::Element(el(2)), Change::Element(el(1000))]).unwrap();
    let addrs: Vec<u16> = store.load().unwrap().elements.iter().map(|e| e.address).collect();
    assert_eq!(addrs, vec![2, 300, 1000]);
    store.apply(&[Change::RemoveElement { library: lib, kind: 2, address: 300 }]).unwrap();
    assert_eq!(store.load().unwrap().elements.len(), 2);
}

#[test]
fn writer_makes_batches_durable_in_order_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let lib = Guid::derive("library", "S1");
    {
        let store = Store::open(dir.path()).unwrap();
        let (tx, rx) = mpsc::channel();
        let mut w = Writer::spawn(store, move || {
            let _ = tx.send(());
        });
        let mut last = 0;
        for i in 0..50u16 {
            last = w.submit(vec![Change::Media(media(&format!("T{i:05}"), lib, 1000 + i))]).unwrap();
        }
        while w.durable() < last {
            rx.recv().unwrap();
        }
        assert_eq!(w.failed(), 0);
        w.shutdown();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.load().unwrap().media.len(), 50);
}

#[test]
fn newer_schema_is_refused_and_corrupt_records_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.meta.insert("schema_version", &99u32.to_be_bytes()).unwrap();
        store.media.insert([0u8; 16], b"not json".as_slice()).unwrap();
        store.flush().unwrap();
    }
    assert!(matches!(Store::open(dir.path()), Err(StoreError::TooNew { found: 99, .. })));
    let dir2 = tempfile::tempdir().unwrap();
    let store = Store::open(dir2.path()).unwrap();
    store.media.insert([0u8; 16], b"not json".as_slice()).unwrap();
    assert!(matches!(store.load(), Err(StoreError::Record { tree: "media", .. })));
}

#[test]
fn the_writer_reopens_the_database_when_idle_after_many_changes_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lib = Guid::derive("library", "S1");
    {
        let store = Store::open(dir.path()).unwrap();
        let (tx, rx) = mpsc::channel();
        let reopen = super::Reopen { after_changes: 30, idle: std::time::Duration::from_millis(50) };
        let mut w = Writer::spawn_with(store, reopen, move || {
            let _ = tx.send(());
        });
        let wait = |w: &Writer, done: &dyn Fn(&Writer) -> bool| {
            while !done(w) {
                rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the writer went on in time");
            }
        };
        // 20 changes: not enough to reopen, however long it idles; then 20 more: past the rule.
        let mut last = 0;
        for i in 0..20u16 {
            last = w.submit(vec![Change::Media(media(&format!("R{i:05}"), lib, 1000 + i))]).unwrap();
        }
        wait(&w, &|w| w.durable() >= last);
        assert_eq!(w.reopens(), 0);
        for i in 20..40u16 {
            last = w.submit(vec![Change::Media(media(&format!("R{i:05}"), lib, 1000 + i))]).unwrap();
        }
        wait(&w, &|w| w.durable() >= last && w.reopens() >= 1);
        // Written through the reopened database: durable too.
        for i in 40..50u16 {
            last = w.submit(vec![Change::Media(media(&format!("R{i:05}"), lib, 1000 + i))]).unwrap();
        }
        wait(&w, &|w| w.durable() >= last);
        assert_eq!((w.failed(), w.reopens()), (0, 1));
        w.shutdown();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.load().unwrap().media.len(), 50);
}

#[test]
fn rewriting_a_record_through_the_writer_becomes_durable() {
    let dir = tempfile::tempdir().unwrap();
    let lib = Guid::derive("library", "S1");
    let store = Store::open(dir.path()).unwrap();
    let (tx, rx) = mpsc::channel();
    let mut w = Writer::spawn(store, move || {
        let _ = tx.send(());
    });
    let mut m = media("ABC001L6", lib, 1000);
    let mut last = 0;
    for i in 0..5 {
        m.mount_count = i;
        last = w.submit(vec![Change::Media(m.clone())]).unwrap();
        while w.durable() < last {
            rx.recv_timeout(std::time::Duration::from_secs(10)).expect("durable in time");
        }
    }
    assert_eq!(w.durable(), last);
}

#[test]
fn a_database_held_by_another_handle_is_reported_locked() {
    let dir = tempfile::tempdir().unwrap();
    let held = Store::open(dir.path()).unwrap();
    let Err(e) = Store::open_waiting(dir.path(), 2) else { panic!("opened a database another handle holds") };
    assert!(matches!(&e, StoreError::Locked { path } if path.ends_with("inventory.sled")), "{e:?}");
    assert!(e.to_string().contains("another rsmd"), "{e}");
    drop(held);
    // Released (sled's threads may take a moment: open waits for them).
    Store::open(dir.path()).unwrap();
}

#[test]
fn a_batch_larger_than_one_transaction_is_written_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let lib = Guid::derive("library", "S1");
    // Each cartridge is two writes (record and barcode index): 3,001 changes are 6,002 writes, six transactions.
    let n = 3 * MAX_TRANSACTION_OPS / 2 * 2 + 1;
    let all: Vec<Change> =
        (0..n).map(|i| Change::Media(media(&format!("L{i:05}L8"), lib, u16::try_from(i).unwrap()))).collect();
    store.apply(&all).unwrap();
    store.flush().unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded.media.len(), n);
    for i in [0, MAX_TRANSACTION_OPS / 2, MAX_TRANSACTION_OPS, n - 1] {
        let m = store.media_by_barcode(&format!("L{i:05}L8")).unwrap().unwrap();
        assert_eq!(m.location.unwrap().address, u16::try_from(i).unwrap(), "its record and its index entry");
    }
}

#[test]
fn records_leave_out_defaults_and_read_back_the_same() {
    let lib = Guid::derive("library", "S1");
    let m = media("ABC001L6", lib, 1000);
    let text = serde_json::to_string(&m).unwrap();
    for absent in ["lmid", "allocated_to", "mounted_by", "description", "enabled", "allocations", "home"] {
        assert!(!text.contains(absent), "{absent} in {text}");
    }
    assert_eq!(serde_json::from_str::<MediaRecord>(&text).unwrap(), m);
    // A record written with every field (before) reads the same.
    let full = r#"{"id":"0e318da1-bf07-52dd-98b9-c56890c9fcba","barcode":"X","kind":"data","location":null,"home":null,
        "pool":null,"mount_count":0,"mounted_by":null,"side":null,"lmid":null,"allocated_to":null,"allocations":0,
        "enabled":true,"description":"","version":0,"created":0,"modified":0}"#;
    let old: MediaRecord = serde_json::from_str(full).unwrap();
    assert_eq!((old.barcode.as_deref(), old.enabled, old.location), (Some("X"), true, None));
    let e = ElementRecord {
        library: lib,
        kind: ElementKind::Storage,
        address: 7,
        number: 1,
        media: None,
        exception: None,
        accessible: true,
        drive: None,
        mounts: 0,
        tag_printed: 0,
        disabled: false,
    };
    let text = serde_json::to_string(&e).unwrap();
    assert!(!text.contains("drive") && !text.contains("disabled"), "{text}");
    assert_eq!(serde_json::from_str::<ElementRecord>(&text).unwrap(), e);
}

/// The dump the daemon's helper process writes (`rsmd --dump-store`) reads back as the records themselves; a cut
/// or garbled stream is an error, and a helper that cannot run or fails leaves the load to this process.
#[test]
fn a_dump_reads_back_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let lib = Guid::derive("library", "S1");
    let a = media("ABC001L6", lib, 1000);
    let b = media("ABC002L6", lib, 1001);
    {
        let store = Store::open(dir.path()).unwrap();
        store.apply(&[Change::Library(library(lib)), Change::Media(a.clone()), Change::Media(b.clone())]).unwrap();
        store.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let mut expected = Vec::new();
    store.load_each(|r| expected.push(r)).unwrap();
    assert_eq!(expected.len(), 3);
    let mut bytes = Vec::new();
    store.dump(&mut bytes).unwrap();
    let mut got = Vec::new();
    read_dump(&mut bytes.as_slice(), |r| got.push(r)).unwrap();
    assert_eq!(got, expected);
    // Cut anywhere before the end frame: an error, whatever came before.
    for cut in [0, 1, 5, bytes.len() / 2, bytes.len() - 1] {
        let r = read_dump(&mut &bytes[..cut], |_| {});
        assert!(r.is_err(), "cut at {cut}");
    }
    let mut garbled = bytes.clone();
    garbled[0] = 7;
    assert!(read_dump(&mut garbled.as_slice(), |_| {}).is_err());
    drop(store);
    // A helper that cannot run, or that fails: the records are read here, after the caller is told to start over.
    for helper in ["/nonexistent/rsmd", "/bin/false"] {
        let mut calls = Vec::new();
        let store = load_through(dir.path(), Some(Path::new(helper)), |r| calls.push(r)).unwrap();
        assert_eq!(calls.first(), Some(&None), "{helper}: told to start over first");
        assert_eq!(calls.iter().filter(|c| c.is_none()).count(), 1, "{helper}: {calls:?}");
        let records: Vec<Record> = calls.into_iter().flatten().collect();
        assert_eq!(records, expected, "{helper}");
        drop(store);
    }
}
