//! Cross tests: the daemon's builders and parsers against vlib, an emulator written independently from the
//! standards. Every command rsmd sends and every error path vlib emulates is read back through `scsi`.

use vlib::{Config, Device, Direction, Fault, Target};

use super::action::{classify, Action, Failure};
use super::asc;
use super::cdb::{self, Cdb, ReadElementStatus};
use super::element::{allocation_for, ElementStatusReport, ElementType};
use super::inquiry::{self, StandardInquiry};
use super::mode::{DeviceCapabilities, ElementAddressAssignment, ModeParameters};
use super::sense::{Sense, SenseKey};
use super::tape::{tape_alert, Position, TapeAlerts};

fn run(t: &mut Target, d: Device, c: Cdb) -> vlib::Response {
    let dir = if c.allocation_length() > 0 { Direction::FromDevice(c.allocation_length()) } else { Direction::None };
    t.execute(d, c.as_bytes(), dir)
}

fn library() -> Target {
    let mut c = Config::default_library();
    c.dvcid = true;
    Target::new(c).unwrap()
}

fn sense_of(r: &vlib::Response) -> Sense {
    assert_eq!(r.status, 2, "expected CHECK CONDITION");
    Sense::parse(&r.sense).unwrap()
}

#[test]
fn identification_commands() {
    let mut t = library();
    let i = StandardInquiry::parse(&run(&mut t, Device::Changer, cdb::inquiry(96)).data).unwrap();
    assert_eq!(i.device_type, inquiry::TYPE_CHANGER);
    let serial = inquiry::parse_unit_serial(&run(&mut t, Device::Changer, cdb::inquiry_vpd(0x80, 255)).data).unwrap();
    assert_eq!(serial, t.config().serial);
    let pages = inquiry::parse_supported_pages(&run(&mut t, Device::Changer, cdb::inquiry_vpd(0, 255)).data).unwrap();
    assert!(pages.contains(&0x80) && pages.contains(&0x83));
    let ids =
        inquiry::parse_device_identification(&run(&mut t, Device::Changer, cdb::inquiry_vpd(0x83, 255)).data).unwrap();
    assert!(!ids.is_empty());
    for d in 0..t.drive_count() {
        let i = StandardInquiry::parse(&run(&mut t, Device::Drive(d), cdb::inquiry(96)).data).unwrap();
        assert_eq!(i.device_type, inquiry::TYPE_TAPE);
        let s = inquiry::parse_unit_serial(&run(&mut t, Device::Drive(d), cdb::inquiry_vpd(0x80, 255)).data).unwrap();
        assert_eq!(s, t.drive_serial(d));
    }
}

#[test]
fn mode_pages_and_element_status_agree_with_the_emulator() {
    let mut t = library();
    let ea =
        ElementAddressAssignment::parse_mode6(&run(&mut t, Device::Changer, cdb::mode_sense_6(0x1D, true, 255)).data)
            .unwrap();
    assert_eq!(ea.storage.count, 20);
    assert_eq!(ea.data_transfer.count, 4);
    let caps =
        ModeParameters::parse_mode6(&run(&mut t, Device::Changer, cdb::mode_sense_6(0x1F, true, 255)).data).unwrap();
    let caps = DeviceCapabilities::parse_page(caps.page(0x1F).unwrap()).unwrap();
    assert!(caps.can_move(ElementType::Storage, ElementType::DataTransfer));
    let mut seen = Vec::new();
    for ty in [ElementType::MediumTransport, ElementType::Storage, ElementType::ImportExport, ElementType::DataTransfer]
    {
        let r = ea.range(ty).unwrap();
        let res = ReadElementStatus {
            element_type: ty,
            start: r.first,
            count: r.count,
            voltag: true,
            curdata: false,
            dvcid: ty == ElementType::DataTransfer,
            alloc: allocation_for(r.count),
        };
        let rep =
            ElementStatusReport::parse(&run(&mut t, Device::Changer, cdb::read_element_status(&res)).data).unwrap();
        assert!(!rep.truncated);
        seen.extend(rep.elements);
    }
    let snap = t.snapshot();
    assert_eq!(seen.len(), snap.elements.len());
    for v in &snap.elements {
        let e = seen.iter().find(|e| e.address == v.address).unwrap();
        assert_eq!((e.full, e.barcode().map(str::to_owned)), (v.full, v.barcode.clone()), "element {}", v.address);
    }
    let serials: Vec<String> =
        seen.iter().filter_map(|e| e.identifier.as_ref()).map(super::element::Identifier::serial).collect();
    assert_eq!(serials, (0..4).map(|d| t.drive_serial(d).to_owned()).collect::<Vec<_>>());
}

#[test]
fn truncated_element_status_is_detected() {
    let mut t = library();
    let res = ReadElementStatus {
        element_type: ElementType::Storage,
        start: 1000,
        count: 20,
        voltag: true,
        curdata: false,
        dvcid: false,
        alloc: 100,
    };
    let r = run(&mut t, Device::Changer, cdb::read_element_status(&res));
    assert_eq!(r.data.len(), 100);
    let rep = ElementStatusReport::parse(&r.data).unwrap();
    assert!(rep.truncated);
    assert!(rep.report_bytes + 8 > 100);
    assert!(rep.elements.len() < 20);
}

#[test]
fn move_errors_map_to_specific_failures() {
    let mut t = library();
    let check = |t: &mut Target, c: Cdb, want: Failure, a: asc::Asc| {
        let r = run(t, Device::Changer, c);
        let s = sense_of(&r);
        assert_eq!(s.asc, a);
        assert_eq!(classify(r.status, &r.sense), Action::Fail(want));
    };
    check(
        &mut t,
        cdb::move_medium(1, 1000, 1001, false),
        Failure::DestinationFull,
        asc::MEDIUM_DESTINATION_ELEMENT_FULL,
    );
    check(&mut t, cdb::move_medium(1, 1016, 500, false), Failure::SourceEmpty, asc::MEDIUM_SOURCE_ELEMENT_EMPTY);
    check(&mut t, cdb::move_medium(1, 4242, 500, false), Failure::InvalidElementAddress, asc::INVALID_ELEMENT_ADDRESS);
    let r = t.execute(Device::Changer, &[0xEE, 0, 0, 0, 0, 0], Direction::None);
    assert_eq!(sense_of(&r).asc, asc::INVALID_COMMAND_OPERATION_CODE);
    assert_eq!(classify(r.status, &r.sense), Action::Fail(Failure::Unsupported));
    // A reserved bit set in the CDB: ILLEGAL REQUEST with a field pointer into the CDB.
    let r = t.execute(Device::Changer, &[0x12, 0, 0x80, 0, 0x60, 0], Direction::FromDevice(96));
    let s = sense_of(&r);
    assert_eq!(s.key, SenseKey::IllegalRequest);
    assert_eq!(s.asc, asc::INVALID_FIELD_IN_CDB);
    if let Some(fp) = s.field_pointer() {
        assert!(fp.in_cdb);
    }
    // Hardware error: robot jam.
    t.inject(Fault::RobotJam { next_moves: 1 });
    let r = run(&mut t, Device::Changer, cdb::move_medium(1, 1000, 500, false));
    assert_eq!(classify(r.status, &r.sense), Action::Fail(Failure::Hardware(0x15, 0x01)));
}

#[test]
fn removal_prevented_unit_attention_and_not_ready() {
    let mut t = library();
    assert_eq!(run(&mut t, Device::Changer, cdb::prevent_allow_medium_removal(true)).status, 0);
    t.inject(Fault::ImportCartridge { barcode: "IMP001L6".into() });
    let r = run(&mut t, Device::Changer, cdb::test_unit_ready());
    assert_eq!(sense_of(&r).asc, asc::NOT_READY_TO_READY_CHANGE);
    assert_eq!(classify(r.status, &r.sense), Action::Rescan { reprobe: false });
    let r = run(&mut t, Device::Changer, cdb::move_medium(1, 10, 1016, false));
    assert_eq!(classify(r.status, &r.sense), Action::Fail(Failure::RemovalPrevented));
    t.inject(Fault::Reset { device: Device::Changer });
    let r = run(&mut t, Device::Changer, cdb::test_unit_ready());
    assert_eq!(classify(r.status, &r.sense), Action::Rescan { reprobe: true });
    t.inject(Fault::NotReadyFor { device: Device::Changer, ms: 60_000 });
    let r = run(&mut t, Device::Changer, cdb::test_unit_ready());
    assert!(matches!(classify(r.status, &r.sense), Action::WaitReady { .. }));
}

#[test]
fn drive_states_tape_alert_and_position() {
    let mut t = library();
    let r = run(&mut t, Device::Drive(0), cdb::test_unit_ready());
    assert_eq!(sense_of(&r).asc, asc::MEDIUM_NOT_PRESENT);
    assert_eq!(classify(r.status, &r.sense), Action::Fail(Failure::MediumNotPresent));
    // Load: the move completes, then the drive threads the tape (becoming ready) in virtual time.
    t.submit(
        Device::Changer,
        vlib::Request {
            tag: 1,
            cdb: cdb::move_medium(1, 1000, 500, false).as_bytes().to_vec(),
            direction: Direction::None,
            timeout_ms: 0,
        },
        0,
    );
    let done = t.next_completion_at().unwrap();
    let (_, r) = t.poll_completion(done).unwrap();
    assert_eq!(r.status, 0);
    t.submit(
        Device::Drive(0),
        vlib::Request {
            tag: 2,
            cdb: cdb::test_unit_ready().as_bytes().to_vec(),
            direction: Direction::None,
            timeout_ms: 0,
        },
        done,
    );
    let (_, r) = t.poll_completion(t.next_completion_at().unwrap()).unwrap();
    assert!(matches!(classify(r.status, &r.sense), Action::WaitReady { .. }), "{:?}", r.sense);
    let later = done + t.config().scaled(t.config().timing.load_ms) + 1;
    t.submit(
        Device::Drive(0),
        vlib::Request {
            tag: 3,
            cdb: cdb::test_unit_ready().as_bytes().to_vec(),
            direction: Direction::None,
            timeout_ms: 0,
        },
        later,
    );
    let (_, r) = t.poll_completion(t.next_completion_at().unwrap()).unwrap();
    assert_eq!(r.status, 0, "ready after the load time");
    let m = ModeParameters::parse_mode6(&run(&mut t, Device::Drive(0), cdb::tape_block_descriptor(255)).data).unwrap();
    assert_eq!(m.block_descriptors.len(), 1);
    assert_eq!(m.block_descriptors[0].density, 0x5A, "LTO-6 density for an L6 cartridge");
    let p = Position::parse(&run(&mut t, Device::Drive(0), cdb::read_position()).data).unwrap();
    assert_eq!(p.block, Some(0));
    let a = TapeAlerts::parse(&run(&mut t, Device::Drive(0), cdb::log_sense(0x2E, 4096)).data).unwrap();
    assert!(!a.is_set(tape_alert::CLEAN_NOW));
    assert_eq!(run(&mut t, Device::Drive(0), cdb::rewind(false)).status, 0);
    assert_eq!(run(&mut t, Device::Drive(0), cdb::load_unload(false, false)).status, 0);
}

#[test]
fn clean_now_after_n_loads() {
    let mut c = Config::default_library();
    c.clean_after_loads = 1;
    c.time_scale = 0.0;
    let mut t = Target::new(c).unwrap();
    assert_eq!(run(&mut t, Device::Changer, cdb::move_medium(1, 1000, 500, false)).status, 0);
    let a = TapeAlerts::parse(&run(&mut t, Device::Drive(0), cdb::log_sense(0x2E, 4096)).data).unwrap();
    assert!(a.needs_cleaning(), "flags {:?}", a.flags());
}

#[test]
fn the_remaining_changer_commands() {
    // EXCHANGE MEDIUM: supported by the generic personality, refused (invalid opcode) by tgt's.
    let mut c = Config::new(vlib::config::Personality::Generic, 10, 1, 2);
    c.cartridges.push(vlib::config::Cartridge::new("AAA001L6", vlib::config::Location::Slot(1)));
    c.cartridges.push(vlib::config::Cartridge::new("AAA002L6", vlib::config::Location::Slot(2)));
    let mut g = Target::new(c).unwrap();
    let ea =
        ElementAddressAssignment::parse_mode6(&run(&mut g, Device::Changer, cdb::mode_sense_6(0x1D, true, 255)).data)
            .unwrap();
    let (s1, s2, s3) = (ea.storage.first, ea.storage.first + 1, ea.storage.first + 2);
    let robot = ea.transport.first;
    let caps =
        ModeParameters::parse_mode6(&run(&mut g, Device::Changer, cdb::mode_sense_6(0x1F, true, 255)).data).unwrap();
    assert!(DeviceCapabilities::parse_page(caps.page(0x1F).unwrap()).unwrap().can_exchange());
    // s1 → s2 and s2's cartridge → s3.
    assert_eq!(run(&mut g, Device::Changer, cdb::exchange_medium(robot, s1, s2, s3, false, false)).status, 0);
    let res = |t: &mut Target| {
        let r = ReadElementStatus {
            element_type: ElementType::Storage,
            start: s1,
            count: 3,
            voltag: true,
            curdata: true,
            dvcid: false,
            alloc: allocation_for(3),
        };
        ElementStatusReport::parse(&run(t, Device::Changer, cdb::read_element_status(&r)).data).unwrap()
    };
    let rep = res(&mut g);
    let labels: Vec<Option<&str>> = rep.elements.iter().map(|e| e.barcode()).collect();
    assert_eq!(labels, vec![None, Some("AAA001L6"), Some("AAA002L6")]);
    let mut t = library();
    let r = run(&mut t, Device::Changer, cdb::exchange_medium(1, 1000, 1001, 1016, false, false));
    assert_eq!(classify(r.status, &r.sense), Action::Fail(Failure::Unsupported));
    // POSITION TO ELEMENT, INITIALIZE ELEMENT STATUS (whole and with range): GOOD, inventory unchanged.
    assert_eq!(run(&mut g, Device::Changer, cdb::position_to_element(robot, s2, false)).status, 0);
    assert_eq!(run(&mut g, Device::Changer, cdb::initialize_element_status()).status, 0);
    assert_eq!(run(&mut g, Device::Changer, cdb::initialize_element_status_with_range(s1, 3)).status, 0);
    assert_eq!(res(&mut g).elements.iter().filter(|e| e.full).count(), 2);
    // An address outside the library is refused with 21/01 by POSITION TO ELEMENT too.
    let r = run(&mut g, Device::Changer, cdb::position_to_element(robot, 9999, false));
    assert_eq!(classify(r.status, &r.sense), Action::Fail(Failure::InvalidElementAddress));
    // MODE SENSE(10) carries the same page 1Dh.
    let m10 =
        ModeParameters::parse_mode10(&run(&mut g, Device::Changer, cdb::mode_sense_10(0x1D, true, 255)).data).unwrap();
    assert_eq!(ElementAddressAssignment::parse_page(m10.page(0x1D).unwrap()).unwrap(), ea);
    // REQUEST SENSE answers fixed-format sense data the parser reads (no pending condition: NO SENSE).
    let s = Sense::parse(&run(&mut g, Device::Changer, cdb::request_sense(18)).data).unwrap();
    assert!(matches!(s.key, SenseKey::NoSense | SenseKey::UnitAttention));
}
