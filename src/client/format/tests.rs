//! Formatting tests; `--mtx` is checked byte for byte against mtx 1.3.12's own output.

use super::*;
use crate::proto::types::{ChangerDetails, DeviceNodes, DriveState, LibraryKind, ObjectType};

/// mtx 1.3.12 `status` on vmlab's tgt library after `mtx load 2 1` (reference/mtx-status-sample.txt, without its
/// comment line). The trailing spaces are mtx's.
const MTX_SAMPLE: &str = concat!(
    "  Storage Changer /dev/sg5:4 Drives, 22 Slots ( 2 Import/Export )\n",
    "Data Transfer Element 0:Empty\n",
    "Data Transfer Element 1:Full (Storage Element 2 Loaded):VolumeTag = ABC002L6                        \n",
    "Data Transfer Element 2:Empty\n",
    "Data Transfer Element 3:Empty\n",
    "      Storage Element 1:Full :VolumeTag=ABC001L6                        \n",
    "      Storage Element 2:Empty:VolumeTag=                                \n",
    "      Storage Element 3:Full :VolumeTag=ABC003L6                        \n",
    "      Storage Element 4:Full :VolumeTag=ABC004L6                        \n",
    "      Storage Element 5:Full :VolumeTag=ABC005L6                        \n",
    "      Storage Element 6:Full :VolumeTag=ABC006L6                        \n",
    "      Storage Element 7:Full :VolumeTag=ABC007L6                        \n",
    "      Storage Element 8:Full :VolumeTag=ABC008L6                        \n",
    "      Storage Element 9:Full :VolumeTag=ABC009L6                        \n",
    "      Storage Element 10:Full :VolumeTag=ABC010L6                        \n",
    "      Storage Element 11:Full :VolumeTag=ABC011L6                        \n",
    "      Storage Element 12:Full :VolumeTag=ABC012L6                        \n",
    "      Storage Element 13:Full :VolumeTag=ABC013L6                        \n",
    "      Storage Element 14:Full :VolumeTag=ABC014L6                        \n",
    "      Storage Element 15:Full :VolumeTag=ABC015L6                        \n",
    "      Storage Element 16:Full :VolumeTag=ABC016L6                        \n",
    "      Storage Element 17:Empty:VolumeTag=                                \n",
    "      Storage Element 18:Empty:VolumeTag=                                \n",
    "      Storage Element 19:Empty:VolumeTag=                                \n",
    "      Storage Element 20:Full :VolumeTag=CLN001L1                        \n",
    "      Storage Element 21 IMPORT/EXPORT:Empty:VolumeTag=                                \n",
    "      Storage Element 22 IMPORT/EXPORT:Empty:VolumeTag=                                \n",
);

const LIB: &str = "11111111-0000-0000-0000-000000000000";

fn info(id: String, name: &str, details: ObjectDetails) -> ObjectInfo {
    ObjectInfo {
        id,
        name: name.into(),
        description: String::new(),
        object_type: details.object_type(),
        enabled: true,
        state: "ready".into(),
        created: 0,
        modified: 0,
        version: None,
        details,
    }
}

fn slot_addr(n: u32) -> u32 {
    1000 + n - 1
}

/// The library of the sample: 4 drives, 20 storage slots, 2 mail slots, ABC002L6 in drive 1 from slot 2, slots
/// 17-19 empty, a cleaner in slot 20.
fn sample_library() -> Vec<ObjectInfo> {
    let mut objects = vec![info(
        LIB.into(),
        "tgt",
        ObjectDetails::Library(LibraryDetails {
            kind: LibraryKind::Online,
            changers: vec!["c".into()],
            slot_count: 20,
            drive_count: 4,
            ie_port_count: 2,
            door_open: None,
            barcode_reader: true,
            vendor: None,
            product: None,
            serial: None,
            scan_done: None,
            scan_total: None,
            partitions: None,
        }),
    )];
    // Objects arrive in no particular order: the formatter sorts them.
    for n in (1..=20u32).rev() {
        let barcode = match n {
            2 | 17..=19 => None,
            20 => Some("CLN001L1".to_owned()),
            n => Some(format!("ABC{n:03}L6")),
        };
        objects.push(info(
            format!("slot-{n}"),
            "slot",
            ObjectDetails::StorageSlot(SlotDetails {
                library: LIB.into(),
                number: n,
                element_address: slot_addr(n),
                full: barcode.is_some(),
                media: barcode.clone(),
                barcode,
                cleaner_slot: n == 20,
                volume_tag_width: Some(32),
            }),
        ));
    }
    for d in 0..4u32 {
        let loaded = d == 1;
        objects.push(info(
            format!("drive-{d}"),
            "drive",
            ObjectDetails::Drive(DriveDetails {
                library: LIB.into(),
                number: d,
                element_address: 500 + d,
                state: if loaded { DriveState::Loaded } else { DriveState::Empty },
                vendor: None,
                product: None,
                serial: Some(format!("SER{d}")),
                devices: DeviceNodes {
                    sg: Some(format!("/dev/sg{}", d + 1)),
                    nst: Some(format!("/dev/nst{d}")),
                    by_id: None,
                },
                media: loaded.then(|| "m2".to_owned()),
                barcode: loaded.then(|| "ABC002L6".to_owned()),
                source_element: loaded.then(|| slot_addr(2)),
                mounted_by: None,
                mount_count: 0,
                needs_cleaning: false,
                last_cleaned: None,
                tape_alerts: None,
                cleanings: None,
                volume_tag_width: Some(32),
            }),
        ));
    }
    for p in 0..2u32 {
        objects.push(info(
            format!("port-{p}"),
            "port",
            ObjectDetails::IePort(IePortDetails {
                library: LIB.into(),
                number: 21 + p,
                element_address: 10 + p,
                full: false,
                media: None,
                barcode: None,
                import_enabled: true,
                export_enabled: true,
                volume_tag_width: Some(32),
            }),
        ));
    }
    objects.push(info(
        "c".into(),
        "changer",
        ObjectDetails::Changer(ChangerDetails {
            library: LIB.into(),
            device: Some("/dev/sg5".into()),
            element_address: 0,
            vendor: None,
            product: None,
            serial: None,
            revision: None,
        }),
    ));
    objects
}

#[test]
fn mtx_status_matches_mtx_byte_for_byte() {
    assert_eq!(mtx_status(&sample_library()), MTX_SAMPLE);
}

#[test]
fn mtx_sample_constant_matches_reference_file() {
    // The constant above is a copy; when the reference tree is present, check the copy is faithful.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/reference/mtx-status-sample.txt");
    let Ok(text) = std::fs::read_to_string(path) else {
        eprintln!("skipping: reference/mtx-status-sample.txt not present");
        return;
    };
    let without_comment = text.split_once('\n').map_or("", |(_, rest)| rest);
    assert_eq!(without_comment, MTX_SAMPLE);
}

#[test]
fn mtx_status_without_barcode_reader_or_source() {
    let mut objects = sample_library();
    for o in &mut objects {
        match &mut o.details {
            ObjectDetails::Library(l) => l.barcode_reader = false,
            ObjectDetails::Drive(d) => {
                d.source_element = None;
                d.volume_tag_width = None;
            }
            ObjectDetails::Changer(c) => c.device = None,
            ObjectDetails::StorageSlot(x) => x.volume_tag_width = None,
            ObjectDetails::IePort(x) => x.volume_tag_width = None,
            _ => {}
        }
    }
    let text = mtx_status(&objects);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "  Storage Changer tgt:4 Drives, 22 Slots ( 2 Import/Export )");
    assert_eq!(lines[2], "Data Transfer Element 1:Full (Unknown Storage Element Loaded)");
    assert_eq!(lines[5], "      Storage Element 1:Full ");
    assert_eq!(lines[26], "      Storage Element 22 IMPORT/EXPORT:Empty");
    assert!(!text.contains("VolumeTag"));
}

/// Issue 14: tags as wide as the library reports them. A library that pads the whole 36-byte field with blanks
/// and reports all-NUL tags for empty elements: mtx prints 28 blanks after an 8-character barcode and no tag for
/// an empty slot (tgt's shape, 24 blanks and a blank tag on empty slots, is the sample above).
#[test]
fn mtx_status_follows_the_librarys_volume_tags() {
    let mut objects = sample_library();
    for o in &mut objects {
        match &mut o.details {
            ObjectDetails::Drive(d) => d.volume_tag_width = d.barcode.as_ref().map(|_| 36),
            ObjectDetails::StorageSlot(x) => x.volume_tag_width = x.barcode.as_ref().map(|_| 36),
            ObjectDetails::IePort(x) => x.volume_tag_width = x.barcode.as_ref().map(|_| 36),
            _ => {}
        }
    }
    let text = mtx_status(&objects);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[2],
        format!("Data Transfer Element 1:Full (Storage Element 2 Loaded):VolumeTag = ABC002L6{}", " ".repeat(28))
    );
    assert_eq!(lines[5], format!("      Storage Element 1:Full :VolumeTag=ABC001L6{}", " ".repeat(28)));
    assert_eq!(lines[6], "      Storage Element 2:Empty");
}

#[test]
fn mtx_status_of_nothing_is_empty() {
    assert_eq!(mtx_status(&[]), "");
}

#[test]
fn status_table_shows_drives_slots_and_ports() {
    let text = status_table(&sample_library());
    assert!(text.starts_with("Library tgt (11111111-0000-0000-0000-000000000000): online, ready, changer /dev/sg5\n"));
    assert!(text.contains("4 drives, 20 slots, 2 mail slots"));
    let drive1 = text.lines().find(|l| l.trim_start().starts_with("1  loaded")).unwrap();
    for word in ["ABC002L6", "slot 2", "/dev/nst1", "/dev/sg2", "SER1", "drive-1"] {
        assert!(drive1.contains(word), "{drive1}");
    }
    assert!(text
        .lines()
        .any(|l| l.trim_start().starts_with("20") && l.contains("CLN001L1") && l.contains("cleaner slot")));
    assert!(text.lines().any(|l| l.trim_start().starts_with("17") && l.contains("empty")));
    assert!(text.contains("Mail slots:"));
    assert!(text.lines().any(|l| l.trim_start().starts_with("22") && l.contains("import/export")));
    assert!(text.lines().all(|l| l == l.trim_end()));
    assert_eq!(status_table(&[]), "No libraries.\n");
}

#[test]
fn tables_and_info_cover_every_type() {
    let all = crate::proto::types::samples::all();
    let names = Names::new(&all);
    let text = objects_table(&all, &names);
    assert_eq!(text.lines().count(), all.len() + 1);
    for o in &all {
        assert!(text.contains(&o.id));
        assert!(!summary(&o.details, &names).is_empty());
        let i = object_info(o, &names);
        assert!(i.contains(&format!("id: {}", o.id)));
        assert!(i.contains(&format!("type: {}", o.object_type.wire_name())));
    }
    let drive = all.iter().find(|o| o.object_type == ObjectType::Drive).unwrap();
    let i = object_info(drive, &names);
    assert!(i.contains("devices.nst: /dev/nst0"), "{i}");
    assert!(i.contains("last_cleaned: -"));
    let lib = all.iter().find(|o| o.object_type == ObjectType::Library).unwrap();
    assert!(object_info(lib, &Names::default()).contains("changers: c"));
    assert_eq!(objects_table(&[], &names), "No objects.\n");
}

#[test]
fn requests_table_lists_only_requests() {
    let all = crate::proto::types::samples::all();
    let text = requests_table(&all, &Names::new(&all));
    assert_eq!(text.lines().count(), 2);
    assert!(text.contains("mount") && text.contains("in_progress") && text.contains("bacula"));
    assert_eq!(requests_table(&[], &Names::default()), "No library requests.\n");
}

/// A cartridge in drive 1 of the sample library, homed in slot 2, with its pool and media type.
fn sample_with_media() -> Vec<ObjectInfo> {
    use crate::proto::types::{MediaDetails, MediaTypeDetails, PoolDetails, PoolKind};
    let mut objects = sample_library();
    objects.push(info(
        "m2".into(),
        "ABC002L6",
        ObjectDetails::PhysicalMedia(MediaDetails {
            barcode: Some("ABC002L6".into()),
            location: Location {
                kind: LocationKind::Drive,
                library: Some(LIB.into()),
                element: Some("drive-1".into()),
                element_address: Some(501),
            },
            home_slot: Some("slot-2".into()),
            media_type: Some("t-lto6".into()),
            pool: Some("p-free".into()),
            mount_count: 3,
            cleaner: false,
            cleaning_count: None,
            side: Some("available".into()),
            logical_media: None,
            allocations: 0,
            owner_uid: None,
            owner_application: None,
            media_type_name: Some("LTO-6".into()),
            pool_name: Some("Free\\LTO-6".into()),
            on_media: None,
        }),
    ));
    objects.push(info(
        "t-lto6".into(),
        "LTO-6",
        ObjectDetails::MediaType(MediaTypeDetails {
            family: "LTO".into(),
            generation: Some(6),
            sides: 1,
            cleaner: false,
            writable: true,
            libraries: vec![LIB.into()],
        }),
    ));
    objects.push(info(
        "p-free".into(),
        "Free",
        ObjectDetails::MediaPool(PoolDetails {
            kind: PoolKind::Free,
            media_type: None,
            parent: None,
            draw_from_free: false,
            return_to_free: false,
            max_allocations: None,
            media_count: 1,
            allocated_count: 0,
            pool_count: 0,
            owner_uid: None,
            owner_application: None,
        }),
    ));
    objects
}

fn request(media: Option<&str>, drive: Option<&str>, library: &str) -> ObjectInfo {
    use crate::proto::types::{RequestOperation, RequestState};
    info(
        "R1".into(),
        "mount request",
        ObjectDetails::LibRequest(LibRequestDetails {
            operation: RequestOperation::Mount,
            state: RequestState::Complete,
            priority: 0,
            submitted: 0,
            started: None,
            completed: None,
            library: Some(library.into()),
            drive: drive.map(str::to_owned),
            media: media.map(str::to_owned),
            application: Some("rsm".into()),
            uid: Some(0),
            client: None,
            error: None,
            done: None,
            total: None,
        }),
    )
}

#[test]
fn issue_15_people_read_numbers_and_names_not_ids_or_addresses() {
    let objects = sample_with_media();
    let names = Names::new(&objects);
    let media = objects.iter().find(|o| o.id == "m2").unwrap();
    let text = object_info(media, &names);
    for line in ["location: drive 1 (address 501)", "home_slot: slot 2", "pool: Free", "media_type: LTO-6"] {
        assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
    }
    assert!(summary(&media.details, &names).starts_with("ABC002L6 in drive 1 (address 501)"));
    // A drive's source element is a slot by number; its library by name.
    let drive = objects.iter().find(|o| o.id == "drive-1").unwrap();
    let text = object_info(drive, &names);
    assert!(text.lines().any(|l| l == "source_element: slot 2 (address 1001)"), "{text}");
    assert!(text.lines().any(|l| l == "library: tgt"), "{text}");
    // Requests: barcodes and drive numbers, no ids of cartridges or drives.
    let table = requests_table(&[request(Some("m2"), Some("drive-1"), LIB)], &names);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row, ["R1", "mount", "complete", "0", "ABC002L6", "1", "rsm", "-"], "{table}");
    assert!(!table.contains("LIBRARY"), "one library, no library column: {table}");
    // Unknown ids stay ids.
    assert_eq!(names.label_or_id("nope"), "nope");
}

#[test]
fn with_several_libraries_elements_say_which() {
    let mut objects = sample_with_media();
    objects.push(info(
        "L2".into(),
        "second",
        ObjectDetails::Library(LibraryDetails {
            kind: LibraryKind::Online,
            changers: Vec::new(),
            slot_count: 0,
            drive_count: 0,
            ie_port_count: 0,
            door_open: None,
            barcode_reader: true,
            vendor: None,
            product: None,
            serial: None,
            scan_done: None,
            scan_total: None,
            partitions: None,
        }),
    ));
    let names = Names::new(&objects);
    assert_eq!(names.label("slot-2").as_deref(), Some("slot 2 in tgt"));
    assert_eq!(names.drive_number("drive-1").as_deref(), Some("1 in tgt"));
    let table = requests_table(&[request(Some("m2"), Some("drive-1"), LIB)], &names);
    assert!(table.starts_with("ID  OPERATION  STATE     PRIO  LIBRARY  MEDIA"), "{table}");
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[4..7], ["tgt", "ABC002L6", "1"], "{table}");
}

#[test]
fn mail_slots_are_numbered_by_the_daemon() {
    let text = status_table(&sample_library());
    let ports: Vec<&str> = text.lines().skip_while(|l| *l != "Mail slots:").skip(2).take(2).collect();
    assert!(ports[0].trim_start().starts_with("21  10"), "{ports:?}");
    assert!(ports[1].trim_start().starts_with("22  11"), "{ports:?}");
}

#[test]
fn change_lines_name_the_object() {
    use crate::proto::types::NotificationOperation;
    let objects = sample_with_media();
    let names = Names::new(&objects);
    let drive = objects.iter().find(|o| o.id == "drive-1").unwrap();
    let n = Notification {
        operation: NotificationOperation::Update,
        object_type: ObjectType::Drive,
        object: "drive-1".into(),
        sequence: 1,
    };
    assert_eq!(change_line(&n, Some(drive), &names), "update drive 1: ready, #1 loaded ABC002L6 /dev/nst1");
    let gone = Notification {
        operation: NotificationOperation::Delete,
        object_type: ObjectType::PhysicalMedia,
        object: "m2".into(),
        sequence: 1,
    };
    assert_eq!(change_line(&gone, None, &names), "delete physical media ABC002L6");
    let unknown = Notification {
        operation: NotificationOperation::Insert,
        object_type: ObjectType::LibRequest,
        object: "R9".into(),
        sequence: 1,
    };
    assert_eq!(change_line(&unknown, None, &names), "insert request R9");
    let r = request(Some("m2"), Some("drive-1"), LIB);
    let n = Notification {
        operation: NotificationOperation::Update,
        object_type: ObjectType::LibRequest,
        object: "R1".into(),
        sequence: 1,
    };
    assert_eq!(change_line(&n, Some(&r), &names), "update request R1: mount ABC002L6 drive 1 complete");
}

#[test]
fn times_for_people() {
    assert_eq!(time_text(0), "-");
    assert_eq!(time_text(86_400_000), "1970-01-02 00:00:00 UTC");
    assert_eq!(time_text(951_782_400_000), "2000-02-29 00:00:00 UTC", "a leap day");
    assert_eq!(time_text(1_796_061_491_464), "2026-11-30 17:58:11 UTC");
}
