//! The in-VM half: run by the host test inside vmlab with `RSMD_IN_VMLAB=1`; returns at once elsewhere.
//!
//! Each check prints `VMLAB-OK <item>` when it passes; the host test requires every marker.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rsmd::scsi::cdb::{self, ReadElementStatus};
use rsmd::scsi::element::{allocation_for, ElementDescriptor, ElementStatusReport, ElementType};
use rsmd::scsi::inquiry;
use rsmd::scsi::mode::ElementAddressAssignment;
use rsmd::scsi::sense::Sense;
use rsmd::sg::discover::{self, DeviceKind};
use rsmd::sg::{probe, SgTransport};
use rsmd::transport::{status, Command, Completion, Response, Tag, Transport, TransportError};

const T: Duration = Duration::from_secs(60);

/// What vmlab's init exported.
struct Lab {
    changer: PathBuf,
    drives: Vec<PathBuf>,
    tapes: Vec<PathBuf>,
    rsmd: PathBuf,
}

/// The real `mtx status` of the changer (the library state both sides are checked against).
fn mtx_text(changer: &Path) -> String {
    let out = Process::new("mtx").arg("-f").arg(changer).arg("status").output().expect("run mtx");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Has rsmd read the library again (after Debian's script moved cartridges behind its back) and waits until done.
fn resync(s: &rsmd::client::Session, library: &str) {
    use rsmd::proto::types::{InventoryMode, ObjectDetails, ObjectType, RequestState};
    let mut notes = s.notifications(Some(ObjectType::LibRequest)).expect("notifications");
    let request = s.inventory(library, InventoryMode::Fast).expect("inventory");
    loop {
        let o = s.get_object_information(&request).expect("the inventory request");
        if let ObjectDetails::LibRequest(r) = o.details {
            if r.state == RequestState::Complete {
                return;
            }
            assert!(!matches!(r.state, RequestState::Failed | RequestState::Cancelled), "{r:?}");
        }
        notes.next().expect("a notification").expect("a notification");
    }
}

/// The numbers of the storage elements (mail slots included) of an `mtx status` text whose line `pick` accepts.
fn mtx_elements<'a>(status: &'a str, pick: impl Fn(&str) -> bool + 'a) -> impl Iterator<Item = String> + 'a {
    status
        .lines()
        .filter(move |l| l.starts_with("      Storage Element ") && pick(l))
        .map(|l| l.trim_start().split([' ', ':']).nth(2).unwrap().to_owned())
}

/// Issue 14: Debian's bacula 9.6 `mtx-changer` (run with the real mtx on /dev/sg) and `rsm changer` (through rsmd)
/// take the same steps from the same library state: every command and error case, with their standard output, exit
/// status and the library state after each step compared. (`listall` needs perl, which the VM lacks; its perl is
/// checked in the unit tests of `client::mtx`.)
fn mtx_changer_contract(lab: &Lab, s: &rsmd::client::Session, library: &str) {
    let script = Path::new("/host/bacula/mtx-changer");
    if !script.is_file() {
        println!("  skipped: Debian's mtx-changer is not in the VM");
        return;
    }
    // The script's fixed paths: its configuration (a drive counts as ready at once, so that a failed load does not
    // wait five minutes for it), its temporary files, and mtx.
    std::fs::create_dir_all("/etc/bacula/scripts").expect("/etc/bacula/scripts");
    std::fs::create_dir_all("/var/lib/bacula").expect("/var/lib/bacula");
    let conf = std::fs::read_to_string("/host/bacula/mtx-changer.conf").expect("mtx-changer.conf");
    // (After the file's own choice of `ready`, by OS: any line of `mt status` will do.)
    let conf = format!("{conf}\nready=\".\"\n");
    std::fs::write("/etc/bacula/scripts/mtx-changer.conf", conf).expect("write the conf");
    if !Path::new("/usr/sbin/mtx").exists() {
        let mtx =
            String::from_utf8(Process::new("sh").args(["-c", "command -v mtx"]).output().unwrap().stdout).unwrap();
        std::fs::create_dir_all("/usr/sbin").unwrap();
        std::os::unix::fs::symlink(mtx.trim(), "/usr/sbin/mtx").expect("link mtx");
    }
    let ctl = lab.changer.to_str().unwrap().to_owned();
    let start = mtx_text(&lab.changer);
    let slot = |full: bool, skip: usize| {
        mtx_elements(&start, |l| !l.contains("IMPORT") && l.contains(":Full") == full).nth(skip).expect("a slot")
    };
    let (a, f2, e) = (slot(true, 0), slot(true, 1), slot(false, 0));
    // The first mail slot, as mtx numbers it (after the storage slots).
    let mail = mtx_elements(&start, |l| l.contains("IMPORT")).next().expect("a mail slot");
    let tape = |d: usize| lab.tapes[d].to_str().unwrap().to_owned();
    let steps: Vec<Vec<String>> = [
        vec!["slots"],
        vec!["list"],
        vec!["loaded", "0", &tape(0), "0"],
        vec!["load", &a, &tape(0), "0"],
        vec!["loaded", "0", &tape(0), "0"],
        vec!["list"],
        vec!["load", &f2, &tape(0), "0"],
        vec!["load", &e, &tape(1), "1"],
        vec!["load", "99", &tape(1), "1"],
        vec!["load", "0", &tape(1), "1"],
        vec!["load", &a, &tape(0), "9"],
        vec!["loaded", "0", &tape(0), "9"],
        vec!["unload", &a, &tape(2), "2"],
        vec!["unload", &f2, &tape(0), "0"],
        vec!["transfer", &e, &f2],
        vec!["transfer", &f2, "99"],
        vec!["frobnicate", "0", &tape(0), "0"],
        vec!["load"],
        vec!["unload", &e, &tape(0), "0"],
        vec!["transfer", &e, &a],
        vec!["transfer", &f2, &a],
        vec!["transfer", &f2, &mail],
        vec!["list"],
        vec!["transfer", &mail, &f2],
        vec!["loaded", "0", &tape(0), "0"],
    ]
    .iter()
    .map(|c| std::iter::once(ctl.clone()).chain(c.iter().map(|x| (*x).to_owned())).collect())
    .collect();
    // Debian's script, every step, with the real mtx.
    let mut theirs = Vec::new();
    for args in &steps {
        let out = Process::new("bash").arg(script).args(args).output().expect("run mtx-changer");
        theirs.push((String::from_utf8_lossy(&out.stdout).into_owned(), out.status.code(), mtx_text(&lab.changer)));
    }
    assert_eq!(mtx_text(&lab.changer), start, "the steps end where they began");
    resync(s, library);
    // rsm changer, the same steps through rsmd.
    for (i, args) in steps.iter().enumerate() {
        let r = rsmd::client::mtx::changer(s, args);
        let ours = (r.stdout, Some(r.code), mtx_text(&lab.changer));
        assert_eq!(ours, theirs[i], "step {i}: mtx-changer {:?}", &args[1..]);
    }
    println!(
        "  rsm changer agrees with Debian's mtx-changer on {} steps (output, exit status, library state)",
        steps.len()
    );
}

fn lab() -> Option<Lab> {
    if std::env::var("RSMD_IN_VMLAB").as_deref() != Ok("1") {
        println!("not in vmlab (RSMD_IN_VMLAB unset): nothing to do");
        return None;
    }
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("vmlab sets {name}"));
    let list = |name: &str| var(name).split_whitespace().map(PathBuf::from).collect::<Vec<_>>();
    let rsmd = std::env::current_exe().expect("current_exe").parent().expect("a directory").join("rsmd");
    Some(Lab { changer: PathBuf::from(var("CHANGER")), drives: list("DRIVES"), tapes: list("TAPES"), rsmd })
}

/// The whole batch, in order (removal last: it unplugs every device).
#[test]
fn all() {
    let Some(lab) = lab() else { return };
    println!("VMLAB-BEGIN changer {} drives {:?} tapes {:?}", lab.changer.display(), lab.drives, lab.tapes);
    let serials = discovery(&lab);
    ok("discovery");
    let dvcid_map = list_devices(&lab, &serials);
    ok("list-devices");
    element_status(&lab.changer);
    ok("element-status");
    move_medium(&lab.changer);
    ok("move");
    concurrency(&lab);
    ok("concurrency");
    timeout(&lab.changer);
    ok("timeout");
    map_drives(&lab, &serials, &dvcid_map);
    ok("map-drives");
    daemon_hotplug(&lab);
    ok("daemon-hotplug");
    removal(&lab, &serials);
    ok("removal");
}

fn ok(item: &str) {
    println!("VMLAB-OK {item}");
}

/// A blocking command that must answer GOOD (one UNIT ATTENTION is read through).
fn blocking(path: &Path, command: &Command) -> Response {
    for _ in 0..3 {
        let r = probe::execute_blocking(path, command).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if r.status == status::CHECK_CONDITION && Sense::parse(&r.sense).is_ok_and(|s| s.is_unit_attention()) {
            continue;
        }
        assert!(
            r.is_good(),
            "{}: {:02x?} answered {:#04x}, sense {:02x?}",
            path.display(),
            command.cdb,
            r.status,
            r.sense
        );
        return r;
    }
    panic!("{}: UNIT ATTENTION three times", path.display());
}

fn serial_of(path: &Path) -> String {
    let r = blocking(path, &cdb::inquiry_vpd(0x80, 255).into_command(T));
    inquiry::parse_unit_serial(&r.data).expect("VPD 80h")
}

// a. ---------------------------------------------------------------------------------------------------------------

/// Returns (changer serial, drive serials in DRIVES order).
fn discovery(lab: &Lab) -> (String, Vec<String>) {
    let devices = discover::scan(Path::new("/sys"), Path::new("/dev")).expect("scan /sys");
    for d in &devices {
        println!("  {} {:?} {} {} {} {:?} nst={:?}", d.name, d.kind, d.vendor, d.model, d.rev, d.hctl, d.nst);
    }
    let find = |p: &Path| devices.iter().find(|d| d.sg == p).unwrap_or_else(|| panic!("{} not found", p.display()));
    let c = find(&lab.changer);
    assert_eq!(c.kind, DeviceKind::Changer);
    assert_eq!(c.kind, DeviceKind::from_type(8));
    assert_eq!(lab.drives.len(), 4);
    assert_eq!(lab.drives.len(), lab.tapes.len());
    for (drive, tape) in lab.drives.iter().zip(&lab.tapes) {
        let d = find(drive);
        assert_eq!(d.kind, DeviceKind::Tape);
        assert_eq!(d.nst.as_ref(), Some(tape), "{}'s nst node", drive.display());
        assert!(tape.exists(), "{} exists", tape.display());
    }
    assert_eq!(devices.iter().filter(|d| d.kind == DeviceKind::Changer).count(), 1);
    assert_eq!(devices.iter().filter(|d| d.kind == DeviceKind::Tape).count(), 4);
    let changer = serial_of(&lab.changer);
    let drives: Vec<String> = lab.drives.iter().map(|d| serial_of(d)).collect();
    println!("  serials: changer {changer}, drives {drives:?}");
    let mut all: Vec<&String> = drives.iter().chain(std::iter::once(&changer)).collect();
    assert!(all.iter().all(|s| !s.is_empty()), "serials are non-empty");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 5, "serials are unique");
    (changer, drives)
}

// b. ---------------------------------------------------------------------------------------------------------------

fn rsmd(lab: &Lab, args: &[&str]) -> String {
    let out = Process::new(&lab.rsmd).args(args).output().expect("run rsmd");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("$ rsmd {}\n{stdout}{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "rsmd {args:?} exits 0");
    stdout
}

/// Returns the DVCID mapping rsmd found: drive serial → element address.
fn list_devices(lab: &Lab, (changer, drives): &(String, Vec<String>)) -> BTreeMap<String, u16> {
    let state = tempfile::tempdir().expect("temp dir");
    let state_dir = state.path().to_str().expect("utf-8 path");
    let text = rsmd(lab, &["--list-devices", "--state-dir", state_dir]);
    assert!(text.contains(&format!("Changer {}: IET VIRTUAL-CHANGER", lab.changer.display())), "changer line");
    assert!(text.contains(&format!("serial {changer}")), "changer serial");
    assert!(text.contains("robots 1 (1), slots 20 (1000-1019), mail slots 2 (10-11), drives 4 (500-503)"));
    assert_eq!(text.matches("  drive element ").count(), 4);
    assert!(!text.contains("unmapped"), "every drive element is mapped");
    assert!(!text.contains("Drives not in any changer"), "every drive is in the changer");
    for (drive, (sg, nst)) in drives.iter().zip(lab.drives.iter().zip(&lab.tapes)) {
        assert!(text.contains(&format!(": {drive} {} {} (", sg.display(), nst.display())), "drive {drive} listed");
    }

    let json: serde_json::Value =
        serde_json::from_str(&rsmd(lab, &["--list-devices", "--json", "--state-dir", state_dir])).expect("JSON");
    let c = &json["changers"][0];
    assert_eq!(json["changers"].as_array().map(Vec::len), Some(1));
    assert_eq!(c["serial"], changer.as_str());
    assert!(c["wwn"].as_str().is_some_and(|w| w.starts_with("naa.")));
    assert_eq!(json["drives"].as_array().map(Vec::len), Some(0));
    let elements = c["drive_elements"].as_array().expect("drive elements");
    assert_eq!(elements.len(), 4);
    let mut map = BTreeMap::new();
    let mut sources = Vec::new();
    for e in elements {
        let serial = e["drive"]["serial"].as_str().expect("mapped drive").to_owned();
        assert!(drives.contains(&serial));
        let address = u16::try_from(e["address"].as_u64().expect("address")).expect("u16");
        sources.push(e["source"].as_str().expect("source").to_owned());
        map.insert(serial, address);
    }
    println!("  mapping {map:?}, sources {sources:?}");
    assert_eq!(map.len(), 4, "four distinct drives");
    assert!(sources.iter().filter(|s| *s == "dvcid").count() >= 3, "tgt reports DVCID (the last may be cut)");
    map
}

// c. ---------------------------------------------------------------------------------------------------------------

fn assignment(changer: &Path) -> ElementAddressAssignment {
    let r = blocking(changer, &cdb::mode_sense_6(0x1D, true, 255).into_command(T));
    ElementAddressAssignment::parse_mode6(&r.data).expect("page 1Dh")
}

/// READ ELEMENT STATUS of one element type, with VOLTAG, sorted by address.
fn read_type(changer: &Path, a: &ElementAddressAssignment, t: ElementType) -> Vec<ElementDescriptor> {
    let range = a.range(t).expect("a range");
    let c = cdb::read_element_status(&ReadElementStatus {
        element_type: t,
        start: range.first,
        count: range.count,
        voltag: true,
        curdata: false,
        dvcid: false,
        alloc: allocation_for(range.count),
    });
    let r = blocking(changer, &c.into_command(T));
    let mut elements = ElementStatusReport::parse(&r.data).expect("element status").elements;
    elements.sort_by_key(|e| e.address);
    assert_eq!(elements.len(), usize::from(range.count), "{t:?}: every element reported");
    elements
}

/// One line of `mtx status`, or of our own report numbered like mtx: (drive?, number, full, barcode).
type MtxEntry = (bool, u32, bool, Option<String>);

/// Our view in mtx's numbering: drives from 0, storage from 1 by address order, I/E after storage.
fn our_status(changer: &Path) -> (Vec<MtxEntry>, BTreeMap<u16, ElementDescriptor>) {
    let a = assignment(changer);
    let drives = read_type(changer, &a, ElementType::DataTransfer);
    let slots = read_type(changer, &a, ElementType::Storage);
    let mail = read_type(changer, &a, ElementType::ImportExport);
    let entry = |drive: bool, n: usize, e: &ElementDescriptor| -> MtxEntry {
        (drive, u32::try_from(n).unwrap(), e.full, e.barcode().map(str::to_owned))
    };
    let mut out: Vec<MtxEntry> = drives.iter().enumerate().map(|(i, e)| entry(true, i, e)).collect();
    out.extend(slots.iter().chain(&mail).enumerate().map(|(i, e)| entry(false, i + 1, e)));
    let by_address = drives.into_iter().chain(slots).chain(mail).map(|e| (e.address, e)).collect();
    (out, by_address)
}

/// Parses `mtx status`.
fn parse_mtx(text: &str) -> Vec<MtxEntry> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        let (drive, rest) = if let Some(r) = line.strip_prefix("Data Transfer Element ") {
            (true, r)
        } else if let Some(r) = line.strip_prefix("Storage Element ") {
            (false, r)
        } else {
            continue;
        };
        let (head, state) = rest.split_once(':').expect("element line has a colon");
        let number: u32 = head.split_whitespace().next().and_then(|n| n.parse().ok()).expect("element number");
        let full = state.trim_start().starts_with("Full");
        let barcode = state
            .split_once("VolumeTag")
            .and_then(|(_, t)| t.split_once('='))
            .map(|(_, t)| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        out.push((drive, number, full, barcode));
    }
    out
}

fn mtx_status(changer: &Path) -> Vec<MtxEntry> {
    let out = Process::new("mtx").arg("-f").arg(changer).arg("status").output().expect("run mtx");
    assert!(out.status.success(), "mtx status: {}", String::from_utf8_lossy(&out.stderr));
    parse_mtx(&String::from_utf8_lossy(&out.stdout))
}

fn assert_agrees_with_mtx(changer: &Path) -> BTreeMap<u16, ElementDescriptor> {
    let (ours, by_address) = our_status(changer);
    let theirs = mtx_status(changer);
    assert_eq!(ours.len(), theirs.len(), "element count vs mtx");
    for (o, m) in ours.iter().zip(&theirs) {
        assert_eq!(o, m, "element vs mtx");
    }
    by_address
}

fn element_status(changer: &Path) {
    let by_address = assert_agrees_with_mtx(changer);
    let full = by_address.values().filter(|e| e.full).count();
    println!("  {} elements agree with mtx, {full} full", by_address.len());
    assert_eq!(by_address.len(), 4 + 20 + 2, "drives, slots and mail slots");
    assert_eq!(by_address[&1019].barcode(), Some("CLN001L1"), "the last slot's label survives tgt's short transfer");
}

// d. ---------------------------------------------------------------------------------------------------------------

/// Polls every transport and reaps until none has a command in flight. Returns completions per transport.
fn run_to_completion(transports: &mut [SgTransport]) -> Vec<Vec<Completion>> {
    let mut done: Vec<Vec<Completion>> = transports.iter().map(|_| Vec::new()).collect();
    for _ in 0..1000 {
        if transports.iter().all(|t| t.in_flight() == 0) {
            return done;
        }
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd<'_>> = transports.iter().map(|t| PollFd::new(t.fd(), PollFlags::POLLIN)).collect();
            let n = poll(&mut fds, PollTimeout::from(30_000u16)).expect("poll");
            assert!(n > 0, "no completion within 30 s");
            fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect()
        };
        for (i, t) in transports.iter_mut().enumerate() {
            if ready[i] {
                while let Some(c) = t.reap().expect("reap") {
                    done[i].push(c);
                }
            }
        }
    }
    panic!("commands still in flight after 1000 polls");
}

/// One command on a transport, to completion.
fn one(t: &mut SgTransport, tag: Tag, command: Command) -> Result<Response, TransportError> {
    t.submit(tag, command).expect("submit");
    let mut done = run_to_completion(std::slice::from_mut(t));
    let c = done[0].pop().expect("a completion");
    assert_eq!(c.tag, tag);
    c.result
}

fn move_medium(changer: &Path) {
    let before = assert_agrees_with_mtx(changer);
    let a = assignment(changer);
    let robot = a.transport.first;
    let slot = before.values().find(|e| e.element_type == ElementType::Storage && e.full).expect("a full slot");
    let (slot, barcode) = (slot.address, slot.barcode().expect("labelled").to_owned());
    let drive = before.values().find(|e| e.element_type == ElementType::DataTransfer && !e.full).expect("empty drive");
    let drive = drive.address;
    let mut t = SgTransport::open(changer).expect("open the changer");
    let r = one(&mut t, 1, cdb::move_medium(robot, slot, drive, false).into_command(Duration::from_secs(600)));
    assert!(r.as_ref().is_ok_and(Response::is_good), "move {slot} -> {drive}: {r:?}");

    let after = assert_agrees_with_mtx(changer);
    let d = &after[&drive];
    println!("  after {slot} -> {drive}: drive full {} barcode {:?} source {:?}", d.full, d.barcode(), d.source);
    assert!(d.full);
    assert_eq!(d.barcode(), Some(barcode.as_str()));
    assert_eq!(d.source, Some(slot));
    assert!(!after[&slot].full);

    let r = one(&mut t, 2, cdb::move_medium(robot, drive, slot, false).into_command(Duration::from_secs(600)));
    assert!(r.as_ref().is_ok_and(Response::is_good), "move {drive} -> {slot}: {r:?}");
    let back = assert_agrees_with_mtx(changer);
    let summary = |m: &BTreeMap<u16, ElementDescriptor>| -> Vec<(u16, bool, Option<String>)> {
        m.values().map(|e| (e.address, e.full, e.barcode().map(str::to_owned))).collect()
    };
    assert_eq!(summary(&back), summary(&before), "back to the start");
}

// e. ---------------------------------------------------------------------------------------------------------------

fn concurrency(lab: &Lab) {
    let paths: Vec<&PathBuf> = std::iter::once(&lab.changer).chain(&lab.drives).collect();
    let mut transports: Vec<SgTransport> = paths.iter().map(|p| SgTransport::open(p).expect("open")).collect();
    for t in &mut transports {
        t.submit(1, cdb::inquiry(96).into_command(T)).expect("submit INQUIRY");
        t.submit(2, cdb::test_unit_ready().into_command(T)).expect("submit TUR");
    }
    let in_flight: usize = transports.iter().map(Transport::in_flight).sum();
    println!("  {in_flight} commands in flight on {} devices", transports.len());
    assert!(in_flight > 1);
    assert_eq!(in_flight, 2 * paths.len());
    let done = run_to_completion(&mut transports);
    // More than the driver queues per fd (16): the rest wait in the transport's FIFO and all complete, in order of
    // submission to the driver.
    let t = &mut transports[0];
    for tag in 10..50 {
        t.submit(tag, cdb::test_unit_ready().into_command(T)).expect("submit");
    }
    println!("  40 submitted to the changer: {} held behind the driver's queue", t.pending());
    assert_eq!(t.pending(), 40 - rsmd::sg::sys::SG_MAX_QUEUE);
    let more = run_to_completion(std::slice::from_mut(t));
    let mut tags: Vec<Tag> = more[0].iter().map(|c| c.tag).collect();
    tags.sort_unstable();
    assert_eq!(tags, (10..50).collect::<Vec<_>>(), "every one completes exactly once");
    assert!(more[0].iter().all(|c| c.result.as_ref().is_ok_and(|r| r.status == status::GOOD)));
    for (i, completions) in done.iter().enumerate() {
        let mut tags: Vec<Tag> = completions.iter().map(|c| c.tag).collect();
        tags.sort_unstable();
        assert_eq!(tags, [1, 2], "{}", paths[i].display());
        for c in completions {
            let r = c.result.as_ref().unwrap_or_else(|e| panic!("{}: {e}", paths[i].display()));
            if c.tag == 1 {
                assert!(r.is_good());
                assert_eq!(r.data[0] & 0x1F, if i == 0 { 8 } else { 1 });
            } else {
                assert!(r.status == status::GOOD || r.status == status::CHECK_CONDITION);
            }
        }
    }
}

// f. ---------------------------------------------------------------------------------------------------------------

/// TEST UNIT READY until GOOD, reading through UNIT ATTENTIONs (a timeout's abort may reset the device).
fn tur_good(t: &mut SgTransport, tag: Tag) {
    for i in 0..5 {
        let r = one(t, tag + i, cdb::test_unit_ready().into_command(T)).expect("TUR completes");
        if r.is_good() {
            return;
        }
        let sense = Sense::parse(&r.sense).expect("sense");
        println!("  TUR: {sense}");
        assert!(sense.is_unit_attention(), "only UNIT ATTENTION before GOOD: {sense}");
    }
    panic!("TEST UNIT READY never GOOD");
}

fn timeout(changer: &Path) {
    let mut t = SgTransport::open(changer).expect("open");
    let a = assignment(changer);
    let commands = [
        ("INITIALIZE ELEMENT STATUS", cdb::initialize_element_status().into_command(Duration::from_millis(1))),
        (
            "READ ELEMENT STATUS",
            cdb::read_element_status(&ReadElementStatus {
                element_type: ElementType::Storage,
                start: a.storage.first,
                count: a.storage.count,
                voltag: true,
                curdata: false,
                dvcid: false,
                alloc: allocation_for(a.storage.count),
            })
            .into_command(Duration::from_millis(1)),
        ),
    ];
    for (tag, (name, command)) in (10..).zip(commands) {
        match one(&mut t, tag, command) {
            Ok(r) => println!("  {name} with a 1 ms timeout: completed normally, status {:#04x}", r.status),
            Err(TransportError::TimedOut) => println!("  {name} with a 1 ms timeout: timed out"),
            Err(e) => panic!("{name}: unexpected transport error {e:?}"),
        }
        tur_good(&mut t, 100 + tag * 10);
    }
    // tgt answers those too fast to time out. A transfer that cannot finish in 1 ms can: load a tape and WRITE
    // 8 MiB to it with a 1 ms timeout. The kernel aborts it (SCSI error handling) and reports DID_TIME_OUT.
    one(
        &mut t,
        200,
        cdb::move_medium(a.transport.first, a.storage.first, a.data_transfer.first, false).into_command(T),
    )
    .expect("load a tape");
    let mut d = SgTransport::open(&first_drive()).expect("open the drive");
    let len: u32 = 8 << 20;
    let b = len.to_be_bytes();
    let write = Command {
        cdb: vec![0x0A, 0x00, b[1], b[2], b[3], 0x00],
        direction: rsmd::transport::DataDirection::ToDevice(vec![0x5A; 8 << 20]),
        timeout: Duration::from_millis(1),
    };
    let timed_out = match one(&mut d, 300, write) {
        Ok(r) => {
            println!("  WRITE 8 MiB with a 1 ms timeout: completed, status {:#04x}", r.status);
            false
        }
        Err(TransportError::TimedOut) => {
            println!("  WRITE 8 MiB with a 1 ms timeout: timed out (TransportError::TimedOut)");
            true
        }
        Err(e) => panic!("WRITE: unexpected transport error {e:?}"),
    };
    // The drive and the changer are still usable afterwards (after the abort, possibly a unit attention).
    let mut good = false;
    for tag in 400..420 {
        if let Ok(r) = one(&mut d, tag, cdb::test_unit_ready().into_command(T)) {
            if r.status == 0 {
                good = true;
                break;
            }
        }
    }
    assert!(good, "the drive answers TEST UNIT READY again after the timeout");
    one(&mut d, 500, cdb::rewind(false).into_command(T)).expect("rewind");
    // Still no timeout (the block layer rounds timeouts up to whole seconds)? Then stall the target itself: stop
    // tgtd while a TEST UNIT READY with a 1 s timeout is outstanding. The kernel times it out, aborts it once tgtd
    // answers again, and the command completes as timed out; the device stays usable. The stall must outlast the
    // iSCSI error handling: the first expiry (rounded up to a whole second, so 1-2 s after submission) finds the
    // command "making progress" and re-arms, the second sends a NOP-Out ping and re-arms, only the third gives up
    // and aborts: up to 4 s after submission. A 4 s stall raced with that (the command then completed normally
    // when tgtd resumed, about one run in two); 7 s leaves 3 s of margin.
    let timed_out = timed_out || {
        let pids: Vec<String> = String::from_utf8(Process::new("pidof").arg("tgtd").output().expect("pidof").stdout)
            .expect("utf-8")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if pids.is_empty() {
            println!("  no tgtd process visible: cannot stall the target");
            false
        } else {
            let signal = |sig: &str, pids: &[String]| {
                Process::new("kill").arg(sig).args(pids).status().expect("kill");
            };
            signal("-STOP", &pids);
            let resume_pids = pids.clone();
            let resume = std::thread::spawn(move || {
                // Fault injection, not synchronisation: the target is unresponsive for this long.
                std::thread::sleep(Duration::from_secs(7));
                Process::new("kill").arg("-CONT").args(&resume_pids).status().expect("kill -CONT");
            });
            let r = one(&mut d, 600, cdb::test_unit_ready().into_command(Duration::from_secs(1)));
            resume.join().expect("resume");
            println!("  TEST UNIT READY (1 s timeout) while tgtd ({pids:?}) is stopped: {r:?}");
            matches!(r, Err(TransportError::TimedOut))
        }
    };
    let mut good = false;
    for tag in 700..740 {
        if let Ok(r) = one(&mut d, tag, cdb::test_unit_ready().into_command(T)) {
            if r.status == 0 {
                good = true;
                break;
            }
        }
    }
    assert!(good, "the drive answers TEST UNIT READY again after the stall");
    one(
        &mut t,
        201,
        cdb::move_medium(a.transport.first, a.data_transfer.first, a.storage.first, false).into_command(T),
    )
    .expect("unload the tape");
    tur_good(&mut t, 202);
    println!("  a real sg timeout observed: {timed_out}");
    assert!(timed_out, "a command timed out through the real sg driver");
}

/// The sg node of tgt's first drive element: its first tape LUN, `$DRIVES[0]` (the DVCID mapping checked in
/// `list-devices` pairs them: 500 ↔ beaf11 ↔ the first drive).
fn first_drive() -> PathBuf {
    let drives = std::env::var("DRIVES").expect("vmlab sets DRIVES");
    PathBuf::from(drives.split_whitespace().next().expect("a drive"))
}

// h. ---------------------------------------------------------------------------------------------------------------

fn map_drives(lab: &Lab, (changer, _): &(String, Vec<String>), dvcid_map: &BTreeMap<String, u16>) {
    let state = tempfile::tempdir().expect("temp dir");
    let state_dir = state.path().join("state");
    let text = rsmd(lab, &["--map-drives", "--state-dir", state_dir.to_str().expect("utf-8")]);
    assert!(text.contains("4 of 4 drive elements mapped"), "all four mapped");
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("drive-map.json")).expect("drive-map.json written"))
            .expect("JSON");
    let persisted: BTreeMap<String, u16> =
        serde_json::from_value(file["changers"][changer.as_str()].clone()).expect("the changer's map");
    println!("  persisted {persisted:?}");
    assert_eq!(&persisted, dvcid_map, "moving cartridges finds the DVCID mapping");
    assert_eq!(rsmd::devices::load_mapping(&state_dir, changer).len(), 4);
    // The library is back as it was: every drive empty.
    let (_, now) = our_status(&lab.changer);
    assert!(now.values().filter(|e| e.element_type == ElementType::DataTransfer).all(|e| !e.full));
    // And --list-devices with that state still maps everything.
    let listed = rsmd(lab, &["--list-devices", "--state-dir", state_dir.to_str().expect("utf-8")]);
    assert!(!listed.contains("unmapped"));
}

// g. ---------------------------------------------------------------------------------------------------------------

fn iscsiadm(action: &str) {
    let target = std::env::var("VMLAB_TARGET").expect("vmlab sets VMLAB_TARGET");
    let portal = std::env::var("VMLAB_PORTAL").expect("vmlab sets VMLAB_PORTAL");
    let st = Process::new("iscsiadm")
        .args(["-m", "node", "-T", &target, "-p", &portal, action])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run iscsiadm");
    assert!(st.success(), "iscsiadm {action}");
}

/// The kernel's uevent multicast group (non-blocking).
fn uevent_listener() -> std::os::fd::OwnedFd {
    use nix::sys::socket::{bind, socket, AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType};
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkKObjectUEvent,
    )
    .expect("netlink socket");
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1)).expect("bind the uevent group");
    fd
}

/// The device names of the scsi_generic uevents of `action` already received (the socket is drained).
fn drain_uevents(uevents: &std::os::fd::OwnedFd, action: discover::UeventAction) -> Vec<String> {
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u8; 8192];
    let mut names = Vec::new();
    while let Ok(len) = recv(uevents.as_raw_fd(), &mut buf, MsgFlags::empty()) {
        if let Some(e) = discover::parse_uevent(&buf[..len]).filter(|e| e.subsystem == "scsi_generic") {
            if e.action == action {
                names.extend(e.devname);
            }
        }
    }
    names
}

/// Waits for the changer and all four drives to be back (possibly under new sg numbers): sysfs is scanned again on
/// every scsi_generic uevent, and each wait for one is bounded. Returns the changer's node.
fn wait_for_library(uevents: &std::os::fd::OwnedFd) -> PathBuf {
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::{AsFd, AsRawFd};
    let present = || {
        let devices = discover::scan(Path::new("/sys"), Path::new("/dev")).expect("scan");
        let changer = devices.iter().find(|d| d.kind == DeviceKind::Changer && d.sg.exists()).map(|d| d.sg.clone());
        let tapes = devices.iter().filter(|d| d.kind == DeviceKind::Tape && d.sg.exists()).count();
        changer.filter(|_| tapes == 4)
    };
    let mut buf = vec![0u8; 8192];
    loop {
        if let Some(c) = present() {
            return c;
        }
        let mut sg_event = false;
        while !sg_event {
            let mut fds = [PollFd::new(uevents.as_fd(), PollFlags::POLLIN)];
            let n = poll(&mut fds, PollTimeout::from(30_000u16)).expect("poll the uevent socket");
            assert_eq!(n, 1, "no uevent for 30 s: the changer and four drives did not come back");
            while let Ok(len) = recv(uevents.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                sg_event |= discover::parse_uevent(&buf[..len]).is_some_and(|e| e.subsystem == "scsi_generic");
            }
        }
    }
}

fn removal(lab: &Lab, (changer_serial, drive_serials): &(String, Vec<String>)) {
    // The devices as they are now (an earlier check may have re-plugged them under new numbers).
    let now = discover::scan(Path::new("/sys"), Path::new("/dev")).expect("scan");
    let changer_now = now.iter().find(|d| d.kind == DeviceKind::Changer).map_or(lab.changer.clone(), |d| d.sg.clone());
    let drive_now = now.iter().find(|d| d.kind == DeviceKind::Tape).map_or(lab.drives[0].clone(), |d| d.sg.clone());
    let paths = [&changer_now, &drive_now];
    let mut transports: Vec<SgTransport> = paths.iter().map(|p| SgTransport::open(p).expect("open")).collect();
    for t in &mut transports {
        for tag in 0..20 {
            t.submit(tag, cdb::test_unit_ready().into_command(T)).expect("submit");
        }
    }
    let uevents = uevent_listener();
    iscsiadm("--logout");
    for (t, p) in transports.iter_mut().zip(paths) {
        let mut fds = [PollFd::new(t.fd(), PollFlags::POLLIN)];
        assert_eq!(poll(&mut fds, PollTimeout::from(10_000u16)).expect("poll"), 1, "{} readable", p.display());
        let mut results = Vec::new();
        let end = loop {
            match t.reap() {
                Ok(Some(c)) => {
                    assert!(matches!(c.result, Err(TransportError::DeviceGone) | Ok(_)), "{c:?}");
                    results.push((c.tag, c.result.is_ok()));
                }
                Ok(None) => panic!("a gone device never reports Ok(None)"),
                Err(e) => break e,
            }
        };
        let gone = results.iter().filter(|(_, ok)| !ok).count();
        println!("  {}: {} completions ({gone} DeviceGone), then {end:?}", p.display(), results.len());
        assert!(matches!(end, TransportError::DeviceGone));
        let mut tags: Vec<Tag> = results.iter().map(|r| r.0).collect();
        tags.sort_unstable();
        assert_eq!(tags, (0..20).collect::<Vec<_>>(), "every command completes exactly once");
        assert_eq!(t.in_flight(), 0);
        assert!(matches!(t.submit(99, cdb::test_unit_ready().into_command(T)), Err(TransportError::DeviceGone)));
    }
    drop(transports);
    // The kernel announces the removals: a scsi_generic "remove" uevent names each node (it may come a moment
    // after the node reports the device gone; each wait for one is bounded).
    let names: Vec<String> =
        paths.iter().map(|p| p.file_name().and_then(|n| n.to_str()).expect("a node name").to_owned()).collect();
    let mut removed = Vec::new();
    while !names.iter().all(|n| removed.contains(n)) {
        let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(&uevents), PollFlags::POLLIN)];
        let n = poll(&mut fds, PollTimeout::from(30_000u16)).expect("poll the uevent socket");
        assert_eq!(n, 1, "no remove uevent for {names:?} within 30 s (seen: {removed:?})");
        removed.extend(drain_uevents(&uevents, discover::UeventAction::Remove));
    }
    println!("  remove uevents for {removed:?}");
    iscsiadm("--login");
    let changer = wait_for_library(&uevents);
    println!("  after login: changer at {}", changer.display());
    assert_eq!(&serial_of(&changer), changer_serial);
    let devices = discover::scan(Path::new("/sys"), Path::new("/dev")).expect("scan");
    let mut serials: Vec<String> =
        devices.iter().filter(|d| d.kind == DeviceKind::Tape).map(|d| serial_of(&d.sg)).collect();
    serials.sort();
    let mut expected = drive_serials.clone();
    expected.sort();
    assert_eq!(serials, expected);
    // The surviving process can use the new device.
    let mut t = SgTransport::open(&changer).expect("open the new changer");
    tur_good(&mut t, 500);
    let r = one(&mut t, 600, cdb::inquiry(96).into_command(T)).expect("INQUIRY");
    assert_eq!(r.data[0] & 0x1F, 8);
}

// i. ---------------------------------------------------------------------------------------------------------------

/// The daemon in discovery mode on the real devices: ready with every drive mapped; the iSCSI session logged out →
/// the library goes offline and the daemon keeps serving its stale inventory; logged back in → the library is
/// back (from the uevents, without a restart).
fn daemon_hotplug(lab: &Lab) {
    use crate::util::Daemon;
    use rsmd::proto::types::{ObjectDetails, ObjectType};
    std::env::set_var("RSMD_BIN", &lab.rsmd);
    let root = std::env::temp_dir().join("rsmd-daemon");
    let _ = std::fs::remove_dir_all(&root);
    let mut d = Daemon::start(&root, "");
    d.wait_ready(1);
    let s = rsmd::client::Session::open_at(&d.socket, None, Some("vmlab"), 0).expect("session");
    let drives = s.enumerate(None, ObjectType::Drive).expect("drives");
    assert_eq!(drives.len(), 4);
    for o in &drives {
        let ObjectDetails::Drive(dd) = &o.details else { panic!() };
        assert!(dd.devices.nst.is_some() && dd.serial.is_some(), "drive mapped with its nodes: {dd:?}");
    }
    let slots = s.enumerate(None, ObjectType::StorageSlot).expect("slots").len();
    println!("  daemon ready: 4 drives mapped, {slots} slots");
    // A mount and a dismount through the daemon on the real devices: MOVE MEDIUM, TEST UNIT READY polling until
    // the tape is ready, LOAD UNLOAD, MOVE MEDIUM home.
    let media = s.enumerate(None, ObjectType::PhysicalMedia).expect("media");
    let barcode = media.iter().map(|m| m.name.clone()).find(|n| !n.starts_with("CLN")).expect("a data cartridge");
    let flags = rsmd::proto::types::MountFlags { read: true, ..Default::default() };
    let r = s.mount(&[barcode.as_str()], None, flags, 0, Some(Duration::from_secs(120))).expect("mount on real sg");
    let nodes = r.devices.expect("the reply names the drive's nodes");
    let nst = nodes.nst.expect("an nst node");
    assert!(nst.starts_with("/dev/nst") && nodes.sg.is_some_and(|sg| sg.starts_with("/dev/sg")), "{nst}");
    let in_drive = assert_agrees_with_mtx(&lab.changer)
        .into_values()
        .any(|e| e.element_type == ElementType::DataTransfer && e.barcode() == Some(barcode.as_str()));
    assert!(in_drive, "{barcode} is in a drive as the library reports it");
    s.dismount(rsmd::proto::DismountTarget::Media(barcode.clone()), false).expect("dismount on real sg");
    let home = assert_agrees_with_mtx(&lab.changer)
        .into_values()
        .any(|e| e.element_type == ElementType::Storage && e.barcode() == Some(barcode.as_str()));
    assert!(home, "{barcode} is back in a slot");
    println!("  mount + dismount through the daemon: {barcode} was ready in {nst}");
    // Issue 11: the hardware changed behind rsmd's back (`mtx load 3 0` directly): the mount of the cartridge rsmd
    // believes in slot 3 fails its MOVE MEDIUM (source empty), the elements are re-read in a form tgt answers
    // (a one-element READ ELEMENT STATUS comes back short on tgt), and the mount goes on from where the cartridge
    // really is: drive 0, where it is mounted. Afterwards rsmd's view equals mtx's.
    let slot3 = s
        .enumerate(None, ObjectType::StorageSlot)
        .expect("slots")
        .into_iter()
        .find_map(|o| match o.details {
            ObjectDetails::StorageSlot(d) if d.number == 3 => d.barcode,
            _ => None,
        })
        .expect("a cartridge in slot 3");
    let out = Process::new("mtx").arg("-f").arg(&lab.changer).args(["load", "3", "0"]).output().expect("mtx load");
    assert!(out.status.success(), "mtx load 3 0: {}", String::from_utf8_lossy(&out.stderr));
    let r = s.mount(&[slot3.as_str()], None, flags, 0, Some(Duration::from_secs(120))).expect("mount where it is");
    let drive = s.get_object_information(r.drive.as_deref().expect("a drive")).expect("drive object");
    let ObjectDetails::Drive(dd) = &drive.details else { panic!() };
    assert_eq!((dd.number, dd.barcode.as_deref()), (0, Some(slot3.as_str())), "mounted in drive 0, where it was");
    s.dismount(rsmd::proto::DismountTarget::Media(slot3.clone()), false).expect("dismount");
    let back = assert_agrees_with_mtx(&lab.changer)
        .into_values()
        .any(|e| e.element_type == ElementType::Storage && e.barcode() == Some(slot3.as_str()));
    assert!(back, "{slot3} is home and rsmd agrees with mtx");
    let slots_now = s.enumerate(None, ObjectType::StorageSlot).expect("slots");
    let holds = |b: &str| {
        slots_now
            .iter()
            .filter(|o| matches!(&o.details, ObjectDetails::StorageSlot(d) if d.barcode.as_deref() == Some(b)))
            .count()
    };
    assert_eq!(holds(&slot3), 1, "rsmd's inventory has {slot3} in one slot");
    println!("  mtx load behind rsmd's back: the mount of {slot3} went on from drive 0");
    // Issue 13: eject to a mail slot and inject back through the daemon on the real changer, agreeing with mtx.
    s.eject(&barcode).expect("eject on real sg");
    let in_port = assert_agrees_with_mtx(&lab.changer)
        .into_values()
        .any(|e| e.element_type == ElementType::ImportExport && e.barcode() == Some(barcode.as_str()));
    assert!(in_port, "{barcode} is in a mail slot as the library reports it");
    let library = s.enumerate(None, ObjectType::Library).expect("libraries")[0].id.clone();
    s.inject(&library).expect("inject on real sg");
    let stored = assert_agrees_with_mtx(&lab.changer)
        .into_values()
        .any(|e| e.element_type == ElementType::Storage && e.barcode() == Some(barcode.as_str()));
    assert!(stored, "{barcode} is back in storage");
    println!("  eject to a mail slot and inject back through the daemon: {barcode}");
    // Issue 14: `rsm status --mtx` is mtx's status byte for byte on the same library state (a cartridge in a
    // drive and one in a mail slot, so that every kind of line is there).
    s.mount(&[barcode.as_str()], None, flags, 0, Some(Duration::from_secs(120))).expect("mount for the mtx check");
    let other = media.iter().map(|m| m.name.clone()).find(|n| !n.starts_with("CLN") && *n != barcode).unwrap();
    s.eject(&other).expect("eject for the mtx check");
    let mut objects = Vec::new();
    for t in [ObjectType::Library, ObjectType::Changer, ObjectType::Drive, ObjectType::StorageSlot, ObjectType::IePort]
    {
        objects.extend(s.enumerate(None, t).expect("objects"));
    }
    let ours = rsmd::client::format::mtx_status(&objects);
    let out = Process::new("mtx").arg("-f").arg(&lab.changer).arg("status").output().expect("run mtx");
    let theirs = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(ours, theirs, "rsm status --mtx vs mtx status, byte for byte");
    // Issue 14: `rsm mtx` against mtx on the same state: status under the device name given, and every error case
    // (their standard output, standard error and exit status).
    let changer = lab.changer.to_str().unwrap().to_owned();
    let empty_slot =
        mtx_elements(&theirs, |l| l.contains(":Empty") && !l.contains("IMPORT")).next().expect("an empty slot");
    let full_slot =
        mtx_elements(&theirs, |l| l.contains(":Full") && !l.contains("IMPORT")).next().expect("a full slot");
    let cases: Vec<Vec<String>> = [
        vec!["status"],
        vec!["nobarcode", "status"],
        vec!["load", &full_slot, "0"],
        vec!["load", &empty_slot, "1"],
        vec!["load", "99", "1"],
        vec!["load", "0", "1"],
        vec!["load", &full_slot, "9"],
        vec!["unload", &full_slot, "2"],
        vec!["unload", &full_slot, "0"],
        vec!["transfer", &empty_slot, &full_slot],
        vec!["transfer", &full_slot, "99"],
        vec!["frobnicate"],
    ]
    .iter()
    .map(|c| c.iter().map(|a| (*a).to_owned()).collect())
    .collect();
    for case in &cases {
        let mut args = vec!["-f".to_owned(), changer.clone()];
        args.extend(case.iter().cloned());
        let ours = rsmd::client::mtx::mtx(&s, &args);
        let out = Process::new("mtx").args(&args).output().expect("run mtx");
        let theirs = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.status.code().unwrap_or(-1),
        );
        assert_eq!((ours.stdout, ours.stderr, ours.code), theirs, "mtx {case:?}");
    }
    println!("  rsm mtx agrees with mtx on {} command lines (status, errors of load, unload, transfer)", cases.len());
    s.dismount(rsmd::proto::DismountTarget::Media(barcode.clone()), false).expect("dismount after the mtx check");
    s.inject(&library).expect("inject after the mtx check");
    println!("  rsm status --mtx equals mtx status byte for byte ({} lines)", theirs.lines().count());
    mtx_changer_contract(lab, &s, &library);
    iscsiadm("--logout");
    d.wait_notify(|m| m.contains(" 1 offline"));
    assert_eq!(s.enumerate(None, ObjectType::StorageSlot).expect("stale slots").len(), slots);
    println!("  after logout: library offline, stale inventory still served");
    iscsiadm("--login");
    d.wait_notify(|m| m.starts_with("STATUS=1 libraries: 1 ready"));
    let lib = s.enumerate(None, ObjectType::Library).expect("libraries");
    assert_eq!(lib.len(), 1);
    assert_eq!(lib[0].state, "ready");
    println!("  after login: library ready again on the new devices");
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(d.wait_exit().success());
}
