//! Which SCSI generic devices exist: a sysfs scan, and the kernel uevents that announce changes.
//!
//! # Primer
//! Every SCSI device has an sg node. sysfs describes it under `/sys/class/scsi_generic/sgN`, a symlink into the
//! device tree whose `device` entry links to the SCSI device itself (named by its `H:C:T:L` address) and holds its
//! INQUIRY-derived attributes: `type` (peripheral device type: 8 medium changer, 1 sequential-access, i.e. tape),
//! `vendor`, `model`, `rev`. A tape's st driver nodes are listed in the same device's `scsi_tape/` directory (`st0`,
//! `nst0` and the mode variants `st0a`, `nst0l`, ...).
//!
//! `/dev/sgN` numbers are not stable across boots or re-plugs; identify devices by their INQUIRY serial numbers.
//!
//! # References
//! Linux `Documentation/ABI/testing/sysfs-class-scsi_tape` and `drivers/scsi/sg.c`; SPC-5 6.7.2 (peripheral
//! device type); `lib/kobject_uevent.c` (uevent message format).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// What kind of device an sg node reaches (SPC peripheral device type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// Medium changer (peripheral device type 8).
    Changer,
    /// Sequential-access device, i.e. a tape drive (peripheral device type 1).
    Tape,
    /// Any other peripheral device type.
    Other(u8),
}

impl DeviceKind {
    /// The kind for a peripheral device type.
    pub fn from_type(peripheral_type: u8) -> DeviceKind {
        match peripheral_type {
            8 => DeviceKind::Changer,
            1 => DeviceKind::Tape,
            other => DeviceKind::Other(other),
        }
    }
}

/// One SCSI device found in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiDevice {
    /// The sg node (`{dev_root}/sgN`).
    pub sg: PathBuf,
    /// The sg name, `sgN`.
    pub name: String,
    /// The peripheral device type.
    pub kind: DeviceKind,
    /// INQUIRY vendor identification, trimmed.
    pub vendor: String,
    /// INQUIRY product identification, trimmed.
    pub model: String,
    /// INQUIRY product revision level, trimmed.
    pub rev: String,
    /// The SCSI address `H:C:T:L`, when the `device` link names one.
    pub hctl: Option<String>,
    /// The rewinding tape node (`{dev_root}/stN`), for tapes.
    pub st: Option<PathBuf>,
    /// The non-rewinding tape node (`{dev_root}/nstN`), for tapes.
    pub nst: Option<PathBuf>,
}

/// The number in `sgN`, if `name` is one.
fn sg_number(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("sg")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// True when `s` is `H:C:T:L` (four decimal numbers).
fn is_hctl(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 4 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// True when `name` is `prefix` followed only by digits (`st0`, not `st0a`).
fn is_plain_node(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// True for errors that mean the device went away while we looked at it.
fn vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV)
}

/// Reads a sysfs attribute, trimmed.
fn attr(dir: &Path, name: &str) -> io::Result<String> {
    Ok(fs::read_to_string(dir.join(name))?.trim().to_owned())
}

/// Scans `{sysfs_root}/class/scsi_generic` and returns every sg device, sorted by sg number.
///
/// Device nodes are reported under `dev_root` (normally `/dev`). A device that disappears during the scan is
/// left out; a missing `class/scsi_generic` directory (no sg driver) gives an empty list.
pub fn scan(sysfs_root: &Path, dev_root: &Path) -> io::Result<Vec<ScsiDevice>> {
    let class = sysfs_root.join("class/scsi_generic");
    let entries = match fs::read_dir(&class) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        let Some(number) = sg_number(&name) else { continue };
        match read_device(&class.join(&name), &name, dev_root) {
            Ok(device) => found.push((number, device)),
            Err(e) if vanished(&e) => log::debug!("{name} vanished during the scan"),
            Err(e) => return Err(e),
        }
    }
    found.sort_by_key(|(number, _)| *number);
    Ok(found.into_iter().map(|(_, device)| device).collect())
}

/// Reads one `class/scsi_generic/sgN` entry.
fn read_device(sg_dir: &Path, name: &str, dev_root: &Path) -> io::Result<ScsiDevice> {
    let device = sg_dir.join("device");
    let peripheral_type: u8 = attr(&device, "type")?
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad peripheral type"))?;
    let kind = DeviceKind::from_type(peripheral_type);
    let vendor = attr(&device, "vendor")?;
    let model = attr(&device, "model")?;
    let rev = attr(&device, "rev")?;
    let hctl = fs::read_link(&device)?.file_name().and_then(|n| n.to_str()).filter(|n| is_hctl(n)).map(str::to_owned);
    let (mut st, mut nst) = (None, None);
    match fs::read_dir(device.join("scsi_tape")) {
        Ok(nodes) => {
            for node in nodes {
                let node = node?;
                let Some(node) = node.file_name().to_str().map(str::to_owned) else { continue };
                if is_plain_node(&node, "st") {
                    st = Some(dev_root.join(&node));
                } else if is_plain_node(&node, "nst") {
                    nst = Some(dev_root.join(&node));
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(ScsiDevice { sg: dev_root.join(name), name: name.to_owned(), kind, vendor, model, rev, hctl, st, nst })
}

/// What a uevent announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UeventAction {
    /// A device appeared.
    Add,
    /// A device went away.
    Remove,
    /// Anything else (`change`, `bind`, `unbind`, `move`, ...).
    Other(String),
}

/// One kernel uevent, as read from a `NETLINK_KOBJECT_UEVENT` socket (kernel multicast group 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    /// `ACTION`.
    pub action: UeventAction,
    /// `SUBSYSTEM`, e.g. `scsi_generic`.
    pub subsystem: String,
    /// `DEVNAME` (e.g. `sg3`), for events about device nodes.
    pub devname: Option<String>,
    /// `DEVPATH` below `/sys`.
    pub devpath: String,
}

/// Parses a kernel uevent message: `action@devpath\0KEY=VALUE\0...`.
///
/// Returns `None` for anything else (udev's re-broadcast `libudev` messages, truncated or non-UTF-8 messages, or
/// messages without `ACTION`, `DEVPATH` or `SUBSYSTEM`).
pub fn parse_uevent(buf: &[u8]) -> Option<Uevent> {
    let mut fields = buf.split(|&b| b == 0).filter(|f| !f.is_empty());
    let header = std::str::from_utf8(fields.next()?).ok()?;
    header.split_once('@')?;
    let (mut action, mut devpath, mut subsystem, mut devname) = (None, None, None, None);
    for field in fields {
        let Ok(field) = std::str::from_utf8(field) else { continue };
        let Some((key, value)) = field.split_once('=') else { continue };
        match key {
            "ACTION" => action = Some(value),
            "DEVPATH" => devpath = Some(value),
            "SUBSYSTEM" => subsystem = Some(value),
            "DEVNAME" => devname = Some(value),
            _ => {}
        }
    }
    let action = match action? {
        "add" => UeventAction::Add,
        "remove" => UeventAction::Remove,
        other => UeventAction::Other(other.to_owned()),
    };
    Some(Uevent {
        action,
        subsystem: subsystem?.to_owned(),
        devname: devname.map(str::to_owned),
        devpath: devpath?.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Builds a kernel-like tree: `class/scsi_generic/sgN -> ../../devices/.../H:C:T:L/scsi_generic/sgN` and
    /// `devices/.../scsi_generic/sgN/device -> ../../../H:C:T:L`.
    fn add_device(root: &Path, sg: &str, hctl: &str, ty: u8, vendor: &str, model: &str, tape: &[&str]) {
        let host = root.join("devices/platform/host2/session1/target2:0:0");
        let dev = host.join(hctl);
        let sg_dir = dev.join("scsi_generic").join(sg);
        fs::create_dir_all(&sg_dir).unwrap();
        fs::write(dev.join("type"), format!("{ty}\n")).unwrap();
        fs::write(dev.join("vendor"), format!("{vendor:<8}\n")).unwrap();
        fs::write(dev.join("model"), format!("{model:<16}\n")).unwrap();
        fs::write(dev.join("rev"), "0001\n").unwrap();
        if !tape.is_empty() {
            let st = dev.join("scsi_tape");
            for node in tape {
                fs::create_dir_all(st.join(node)).unwrap();
            }
        }
        symlink(format!("../../../{hctl}"), sg_dir.join("device")).unwrap();
        let class = root.join("class/scsi_generic");
        fs::create_dir_all(&class).unwrap();
        symlink(format!("../../devices/platform/host2/session1/target2:0:0/{hctl}/scsi_generic/{sg}"), class.join(sg))
            .unwrap();
    }

    #[test]
    fn scan_finds_changer_and_tapes_sorted_numerically() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        add_device(root, "sg10", "2:0:0:3", 1, "IET", "VIRTUAL-TAPE", &["st1", "nst1", "st1a", "nst1a", "st1l"]);
        add_device(root, "sg2", "2:0:0:1", 8, "IET", "VIRTUAL-CHANGER", &[]);
        add_device(root, "sg9", "2:0:0:2", 1, "IET", "VIRTUAL-TAPE", &["nst0l", "nst0", "st0", "st0m"]);
        add_device(root, "sg1", "2:0:0:0", 0, "IET", "Controller", &[]);
        let devices = scan(root, Path::new("/dev")).unwrap();
        let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["sg1", "sg2", "sg9", "sg10"]);

        assert_eq!(devices[0].kind, DeviceKind::Other(0));
        let changer = &devices[1];
        assert_eq!(changer.kind, DeviceKind::Changer);
        assert_eq!(changer.sg, Path::new("/dev/sg2"));
        assert_eq!(changer.vendor, "IET");
        assert_eq!(changer.model, "VIRTUAL-CHANGER");
        assert_eq!(changer.rev, "0001");
        assert_eq!(changer.hctl.as_deref(), Some("2:0:0:1"));
        assert_eq!((changer.st.as_deref(), changer.nst.as_deref()), (None, None));

        let tape = &devices[2];
        assert_eq!(tape.kind, DeviceKind::Tape);
        assert_eq!(tape.hctl.as_deref(), Some("2:0:0:2"));
        assert_eq!(tape.st.as_deref(), Some(Path::new("/dev/st0")));
        assert_eq!(tape.nst.as_deref(), Some(Path::new("/dev/nst0")));
        assert_eq!(devices[3].nst.as_deref(), Some(Path::new("/dev/nst1")));
        assert_eq!(devices[3].st.as_deref(), Some(Path::new("/dev/st1")));
    }

    #[test]
    fn scan_skips_vanished_devices() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        add_device(root, "sg0", "2:0:0:0", 8, "IET", "VIRTUAL-CHANGER", &[]);
        add_device(root, "sg1", "2:0:0:1", 1, "IET", "VIRTUAL-TAPE", &["st0", "nst0"]);
        // sg1's device directory is gone but the class link remains (dangling), as mid-removal.
        fs::remove_dir_all(root.join("devices/platform/host2/session1/target2:0:0/2:0:0:1")).unwrap();
        // sg2's link dangles entirely.
        symlink("../../devices/nowhere/sg2", root.join("class/scsi_generic/sg2")).unwrap();
        let devices = scan(root, Path::new("/dev")).unwrap();
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].name, "sg0");
    }

    #[test]
    fn scan_without_sg_class_is_empty_and_ignores_other_names() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(scan(tmp.path(), Path::new("/dev")).unwrap().is_empty());
        fs::create_dir_all(tmp.path().join("class/scsi_generic/notsg")).unwrap();
        fs::create_dir_all(tmp.path().join("class/scsi_generic/sgx")).unwrap();
        assert!(scan(tmp.path(), Path::new("/dev")).unwrap().is_empty());
    }

    #[test]
    fn scan_reports_no_hctl_for_odd_link_names() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let sg = root.join("class/scsi_generic/sg4");
        let target = root.join("devices/weird");
        fs::create_dir_all(&target).unwrap();
        fs::create_dir_all(&sg).unwrap();
        fs::write(target.join("type"), "1").unwrap();
        fs::write(target.join("vendor"), "HP").unwrap();
        fs::write(target.join("model"), "Ultrium 6-SCSI").unwrap();
        fs::write(target.join("rev"), "J3LW").unwrap();
        symlink("../../../devices/weird", sg.join("device")).unwrap();
        let devices = scan(root, Path::new("/xdev")).unwrap();
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].hctl, None);
        assert_eq!(devices[0].sg, Path::new("/xdev/sg4"));
        assert_eq!(devices[0].model, "Ultrium 6-SCSI");
    }

    #[test]
    fn uevent_add_and_remove() {
        let msg = b"add@/devices/platform/host2/target2:0:0/2:0:0:3/scsi_generic/sg3\0ACTION=add\0\
DEVPATH=/devices/platform/host2/target2:0:0/2:0:0:3/scsi_generic/sg3\0SUBSYSTEM=scsi_generic\0MAJOR=21\0\
MINOR=3\0DEVNAME=sg3\0SEQNUM=1234\0";
        let ev = parse_uevent(msg).unwrap();
        assert_eq!(ev.action, UeventAction::Add);
        assert_eq!(ev.subsystem, "scsi_generic");
        assert_eq!(ev.devname.as_deref(), Some("sg3"));
        assert_eq!(ev.devpath, "/devices/platform/host2/target2:0:0/2:0:0:3/scsi_generic/sg3");

        let msg = b"remove@/devices/x/sg3\0ACTION=remove\0DEVPATH=/devices/x/sg3\0SUBSYSTEM=scsi_generic\0DEVNAME=sg3";
        let ev = parse_uevent(msg).unwrap();
        assert_eq!(ev.action, UeventAction::Remove);

        let msg = b"change@/devices/x/2:0:0:1\0ACTION=change\0DEVPATH=/devices/x/2:0:0:1\0SUBSYSTEM=scsi\0";
        let ev = parse_uevent(msg).unwrap();
        assert_eq!(ev.action, UeventAction::Other("change".into()));
        assert_eq!(ev.devname, None);
    }

    #[test]
    fn uevent_rejects_non_kernel_messages() {
        assert_eq!(parse_uevent(b""), None);
        assert_eq!(parse_uevent(b"libudev\0\xfe\xed\xca\xfe"), None);
        assert_eq!(parse_uevent(b"add@/devices/x\0DEVPATH=/devices/x\0SUBSYSTEM=scsi\0"), None);
        assert_eq!(parse_uevent(b"add@/devices/x\0ACTION=add\0SUBSYSTEM=scsi\0"), None);
        assert_eq!(parse_uevent(b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0"), None);
        assert_eq!(parse_uevent(b"\xff@x\0ACTION=add\0DEVPATH=/x\0SUBSYSTEM=s\0"), None);
    }
}
