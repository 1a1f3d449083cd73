//! The mtx-compatible front (`rsm mtx`, or `rsm` installed under the name `mtx`) and Bacula's changer command
//! (`rsm changer`, Debian's `mtx-changer` contract), answering through rsmd instead of sending SCSI commands.
//!
//! Both produce what the programs they replace produce, byte for byte: `mtx status` with mtx's numbering (drives
//! from 0, storage elements 1..S in address order, then the mail slots) and its volume tags as wide as the library
//! reports them; mtx's argument checks and error texts (`Drive 1 Full (Storage Element 3 loaded)`, `Source
//! Element Address 1004 is Empty`, …) on standard error with exit status 1. `rsm changer` is Debian's
//! `mtx-changer` script applied to that output: the same text transformations (its grep, awk, sed and perl), the
//! same argument checks and usage text, and load and unload errors on standard output (the script merges them).
//! Unlike the script, a load returns once the drive is ready and waits in rsmd's queue for a drive another
//! application holds.

use std::fmt::Write as _;

use super::Session;
use crate::proto::types::{InventoryMode, MountFlags, ObjectDetails, ObjectInfo, ObjectType};
use crate::proto::{DismountTarget, NtmsError};

/// What a run printed and its exit status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Exit status.
    pub code: i32,
}

/// A drive as mtx counts it.
#[derive(Debug, Clone)]
struct Drive {
    id: String,
    /// The library's number for it.
    number: u32,
    /// The element address its cartridge came from.
    source_address: Option<u32>,
    full: bool,
    /// The storage element number (0-based) its cartridge came from.
    source: Option<usize>,
    barcode: Option<String>,
    width: Option<u32>,
}

/// A storage element as mtx counts it (slots, then mail slots).
#[derive(Debug, Clone)]
struct Storage {
    id: String,
    /// The library's number for it (slots from 1, mail slots after them).
    number: u32,
    address: u32,
    full: bool,
    ie: bool,
    media: Option<String>,
    barcode: Option<String>,
    width: Option<u32>,
}

/// One library in mtx's terms, built from rsmd's objects.
#[derive(Debug, Clone)]
pub struct MtxLibrary {
    /// The library's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its changer's device node.
    pub device: Option<String>,
    vendor: String,
    product: String,
    revision: String,
    drives: Vec<Drive>,
    storage: Vec<Storage>,
    partitions: Vec<crate::proto::types::PartitionDetails>,
}

impl MtxLibrary {
    /// The drives' source slots as indexes into `storage` (mtx numbers the source among the storage elements shown).
    fn renumber(&mut self) {
        for d in &mut self.drives {
            d.source = d.source_address.and_then(|a| self.storage.iter().position(|s| s.address == a));
        }
    }

    /// The view of partition `name`: its slots numbered 1..N in the partition's order (then the mail slots when
    /// it has them), its drives from 0. A drive that holds a cartridge from outside the partition (another
    /// application's, in a shared drive) is empty to it: a load into it waits in rsmd's queue until that cartridge
    /// is out, instead of failing `Drive N Full`, and nothing of the other application's shows.
    pub fn partition(&self, name: &str) -> Option<MtxLibrary> {
        let p = self.partitions.iter().find(|p| p.name == name)?;
        let mut v = self.clone();
        v.storage = p
            .slots
            .iter()
            .filter_map(|n| self.storage.iter().find(|s| !s.ie && s.number == *n).cloned())
            .chain(self.storage.iter().filter(|s| s.ie && p.mail_slots).cloned())
            .collect();
        v.drives = p.drives.iter().filter_map(|n| self.drives.iter().find(|d| d.number == *n).cloned()).collect();
        v.renumber();
        for d in v.drives.iter_mut().filter(|d| d.full && d.source.is_none()) {
            (d.full, d.barcode, d.source_address) = (false, None, None);
        }
        Some(v)
    }
    /// Every library among `objects` (libraries, changers, drives, slots, ports).
    pub fn all(objects: &[ObjectInfo]) -> Vec<MtxLibrary> {
        let mut libs: Vec<MtxLibrary> = objects
            .iter()
            .filter_map(|o| match &o.details {
                ObjectDetails::Library(d) => Some(MtxLibrary {
                    id: o.id.clone(),
                    name: o.name.clone(),
                    device: None,
                    vendor: d.vendor.clone().unwrap_or_default(),
                    product: d.product.clone().unwrap_or_default(),
                    revision: String::new(),
                    drives: Vec::new(),
                    storage: Vec::new(),
                    partitions: d.partitions.clone().unwrap_or_default(),
                }),
                _ => None,
            })
            .collect();
        let mut drives: Vec<(String, u32, u32, Drive)> = Vec::new();
        let mut slots: Vec<(String, u32, bool, Storage)> = Vec::new();
        for o in objects {
            match &o.details {
                ObjectDetails::Changer(c) => {
                    if let Some(l) = libs.iter_mut().find(|l| l.id == c.library) {
                        l.device.clone_from(&c.device);
                        l.revision = c.revision.clone().unwrap_or_default();
                        if let Some(v) = &c.vendor {
                            l.vendor.clone_from(v);
                        }
                        if let Some(p) = &c.product {
                            l.product.clone_from(p);
                        }
                    }
                }
                ObjectDetails::Drive(d) => drives.push((
                    d.library.clone(),
                    d.number,
                    d.element_address,
                    Drive {
                        id: o.id.clone(),
                        number: d.number,
                        source_address: d.source_element,
                        full: d.media.is_some() || d.barcode.is_some(),
                        source: None,
                        barcode: d.barcode.clone(),
                        width: d.volume_tag_width,
                    },
                )),
                ObjectDetails::StorageSlot(s) => slots.push((
                    s.library.clone(),
                    s.element_address,
                    false,
                    Storage {
                        id: o.id.clone(),
                        number: s.number,
                        address: s.element_address,
                        full: s.full,
                        ie: false,
                        media: s.media.clone(),
                        barcode: s.barcode.clone(),
                        width: s.volume_tag_width,
                    },
                )),
                ObjectDetails::IePort(p) => slots.push((
                    p.library.clone(),
                    p.element_address,
                    true,
                    Storage {
                        id: o.id.clone(),
                        number: p.number,
                        address: p.element_address,
                        full: p.full,
                        ie: true,
                        media: p.media.clone(),
                        barcode: p.barcode.clone(),
                        width: p.volume_tag_width,
                    },
                )),
                _ => {}
            }
        }
        // Storage slots by address, then the mail slots by address; drives by number.
        slots.sort_by_key(|(_, address, ie, _)| (*ie, *address));
        drives.sort_by_key(|(_, number, address, _)| (*number, *address));
        for lib in &mut libs {
            lib.storage = slots.iter().filter(|s| s.0 == lib.id).map(|s| s.3.clone()).collect();
            lib.drives = drives.iter().filter(|d| d.0 == lib.id).map(|d| d.3.clone()).collect();
            lib.renumber();
        }
        libs
    }

    fn io_count(&self) -> usize {
        self.storage.iter().filter(|s| s.ie).count()
    }

    /// `mtx status` (`barcodes` false: `nobarcode status`), naming the changer `device` as mtx does.
    pub fn status(&self, device: &str, barcodes: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "  Storage Changer {device}:{} Drives, {} Slots ( {} Import/Export )",
            self.drives.len(),
            self.storage.len(),
            self.io_count()
        );
        let tag = |barcode: &Option<String>, width: Option<u32>| {
            if barcodes {
                super::format::mtx_volume_tag(barcode.as_deref(), width)
            } else {
                None
            }
        };
        for (n, d) in self.drives.iter().enumerate() {
            let _ = write!(out, "Data Transfer Element {n}:");
            if !d.full {
                out.push_str("Empty\n");
                continue;
            }
            match d.source {
                Some(s) => {
                    let _ = write!(out, "Full (Storage Element {} Loaded)", s + 1);
                }
                None => out.push_str("Full (Unknown Storage Element Loaded)"),
            }
            if let Some(t) = tag(&d.barcode, d.width) {
                let _ = write!(out, ":VolumeTag = {t}");
            }
            out.push('\n');
        }
        for (n, s) in self.storage.iter().enumerate() {
            let _ = write!(
                out,
                "      Storage Element {}{}:{}",
                n + 1,
                if s.ie { " IMPORT/EXPORT" } else { "" },
                if s.full { "Full " } else { "Empty" }
            );
            if let Some(t) = tag(&s.barcode, s.width) {
                let _ = write!(out, ":VolumeTag={t}");
            }
            out.push('\n');
        }
        out
    }

    /// `mtx inquiry` (the changer's INQUIRY fields, padded as the device reports them).
    fn inquiry(&self) -> String {
        format!(
            "Product Type: Medium Changer\nVendor ID: '{:<8}'\nProduct ID: '{:<16}'\nRevision: '{:<4}'\nAttached \
             Changer API: No\n",
            self.vendor, self.product, self.revision
        )
    }
}

/// Finds the library a device names: `rsmd:NAME` (or `rsmd:NAME/PARTITION`), its changer's node, or a path
/// leading to it (`/dev/tape/by-id/…`, `/dev/changer`).
pub fn find_library(libs: &[MtxLibrary], device: &str) -> Option<MtxLibrary> {
    if let Some(name) = device.strip_prefix("rsmd:") {
        let (name, part) = match name.split_once('/') {
            Some((n, p)) => (n, Some(p)),
            None => (name, None),
        };
        let lib = libs.iter().find(|l| l.name == name || l.id == name)?;
        return match part {
            Some(p) => lib.partition(p),
            None => Some(lib.clone()),
        };
    }
    let real = |p: &str| std::fs::canonicalize(p).ok();
    let wanted = real(device);
    libs.iter()
        .find(|l| l.device.as_deref().is_some_and(|d| d == device || (wanted.is_some() && real(d) == wanted)))
        .cloned()
}

/// The objects an mtx view is built from.
fn objects(session: &Session) -> Result<Vec<ObjectInfo>, NtmsError> {
    let mut objects = Vec::new();
    for t in [ObjectType::Library, ObjectType::Changer, ObjectType::Drive, ObjectType::StorageSlot, ObjectType::IePort]
    {
        objects.extend(session.enumerate(None, t)?);
    }
    Ok(objects)
}

/// mtx's usage text (standard error, exit status 1).
const USAGE: &str = "Usage:
	mtx --version
	mtx [ -f <loader-dev> ] noattach <more commands>
	mtx [ -f <loader-dev> ] inquiry | inventory 
	mtx [ -f <loader-dev> ] [altres] [nobarcode] status
	mtx [ -f <loader-dev> ] [altres] first [<drive#>]
	mtx [ -f <loader-dev> ] [altres] last [<drive#>]
	mtx [ -f <loader-dev> ] [altres] previous [<drive#>]
	mtx [ -f <loader-dev> ] [altres] next [<drive#>]
	mtx [ -f <loader-dev> ] [altres] [invert] load <storage-element-number> [<drive#>]
	mtx [ -f <loader-dev> ] [altres] [invert] unload [<storage-element-number>][<drive#>]
	mtx [ -f <loader-dev> ] [altres] [eepos eepos-number] transfer <storage-element-number> <storage-element-number>
	mtx [ -f <loader-dev> ] [altres] [eepos eepos-number][invert][invert2] exchange <storage-element-number> <storage-element-number>
	mtx [ -f <loader-dev> ] [altres] position <storage-element-number>
	mtx [ -f <loader-dev> ] eject
";

/// mtx's commands and how many numeric arguments each takes.
const COMMANDS: &[(&str, usize)] = &[
    ("inquiry", 0),
    ("status", 0),
    ("invert", 0),
    ("noattach", 0),
    ("eepos", 1),
    ("load", 2),
    ("unload", 2),
    ("transfer", 2),
    ("first", 1),
    ("last", 1),
    ("previous", 1),
    ("next", 1),
    ("--version", 0),
    ("inventory", 0),
    ("eject", 0),
    ("erase", 0),
    ("nobarcode", 0),
    ("position", 1),
    ("invert2", 0),
    ("exchange", 3),
    ("altres", 0),
];

/// A run of mtx's commands against one library, stopping at the first fatal error (as mtx exits).
struct Run<'a> {
    session: &'a Session,
    device: Option<String>,
    lib: Option<MtxLibrary>,
    barcodes: bool,
    out: Output,
}

/// Ends the run with mtx's fatal error text.
struct Fatal;

impl Run<'_> {
    fn fatal(&mut self, message: &str) -> Fatal {
        self.out.stderr.push_str(message);
        self.out.stderr.push('\n');
        self.out.code = 1;
        Fatal
    }

    /// The library (read once, as mtx reads the element status once), or the error mtx gives without a device.
    fn library(&mut self) -> Result<MtxLibrary, Fatal> {
        if let Some(l) = &self.lib {
            return Ok(l.clone());
        }
        let device = match &self.device {
            Some(d) => d.clone(),
            None => std::env::var("CHANGER")
                .or_else(|_| std::env::var("TAPE"))
                .unwrap_or_else(|_| "/dev/changer".to_owned()),
        };
        self.device = Some(device.clone());
        let objects = match objects(self.session) {
            Ok(o) => o,
            Err(e) => return Err(self.fatal(&format!("cannot reach rsmd: {}", crate::error_chain(&e)))),
        };
        let libs = MtxLibrary::all(&objects);
        let one = if libs.len() == 1 && device == "/dev/changer" {
            libs.first().cloned()
        } else {
            find_library(&libs, &device)
        };
        match one {
            Some(l) => {
                self.lib = Some(l.clone());
                Ok(l.clone())
            }
            None => Err(self.fatal(&format!("cannot open SCSI device '{device}' - rsmd serves no such changer"))),
        }
    }

    fn reread(&mut self) {
        self.lib = None;
    }

    fn command(&mut self, name: &str, a: [i64; 3]) -> Result<(), Fatal> {
        match name {
            "status" => {
                let lib = self.library()?;
                let device = self.device.clone().unwrap_or_default();
                self.out.stdout.push_str(&lib.status(&device, self.barcodes));
            }
            "inquiry" => {
                let lib = self.library()?;
                self.out.stdout.push_str(&lib.inquiry());
            }
            "nobarcode" => self.barcodes = false,
            "invert" | "invert2" | "noattach" | "altres" | "eepos" => {}
            "--version" => {
                self.out.stderr.push_str("mtx version 1.3.12 (rsm)\n\n");
                self.out.stderr.push_str(USAGE);
                self.out.code = 1;
                return Err(Fatal);
            }
            "load" => self.load(a[0], a[1])?,
            "unload" => self.unload(a[0], a[1])?,
            "transfer" => self.transfer(a[0], a[1])?,
            "first" | "last" | "next" | "previous" => self.step(name, a[0])?,
            "inventory" => {
                let lib = self.library()?;
                if let Err(e) = self.session.inventory(&lib.id, InventoryMode::Full) {
                    return Err(self.fatal(&format!("mtx:inventory failed: {}", crate::error_chain(&e))));
                }
                self.reread();
            }
            "eject" => {
                // A library's changer has no medium of its own to eject: mtx's LOAD UNLOAD has nothing to do.
                self.library()?;
            }
            "erase" | "position" | "exchange" => {
                return Err(self.fatal(&format!("{name}: not supported through rsmd")));
            }
            _ => unreachable!("checked against COMMANDS"),
        }
        Ok(())
    }

    fn load(&mut self, slot: i64, drive: i64) -> Result<(), Fatal> {
        let lib = self.library()?;
        if slot < 1 {
            return Err(self.fatal("No source specified"));
        }
        let drive = if drive < 0 { 0 } else { drive };
        let s = usize::try_from(slot - 1).unwrap_or(usize::MAX);
        if s >= lib.storage.len() {
            return Err(self.fatal(&format!("Invalid <storage-element-number> argument '{slot}' to 'load' command")));
        }
        let d = usize::try_from(drive).unwrap_or(usize::MAX);
        if d >= lib.drives.len() {
            return Err(self.fatal(&format!("illegal <drive-number> argument '{drive}' to 'load' command")));
        }
        if lib.drives[d].full {
            let from = lib.drives[d].source.map_or(0, |x| x + 1);
            return Err(self.fatal(&format!("Drive {drive} Full (Storage Element {from} loaded)")));
        }
        let _ = write!(self.out.stdout, "Loading media from Storage Element {slot} into drive {drive}...");
        let source = &lib.storage[s];
        let Some(media) = source.media.clone().filter(|_| source.full) else {
            return Err(self.fatal(&format!("Source Element Address {} is Empty", source.address)));
        };
        let flags = MountFlags { read: true, ..MountFlags::default() };
        if let Err(e) = self.session.mount(&[media.as_str()], Some(&lib.drives[d].id), flags, 0, None) {
            return Err(self.fatal(&format!(
                "{}\nMOVE MEDIUM from Element Address {} to {} Failed",
                crate::error_chain(&e),
                source.address,
                d
            )));
        }
        self.out.stdout.push_str("done\n");
        self.reread();
        Ok(())
    }

    fn unload(&mut self, slot: i64, drive: i64) -> Result<(), Fatal> {
        let lib = self.library()?;
        let drive = if drive < 0 { 0 } else { drive };
        let d = usize::try_from(drive).unwrap_or(usize::MAX);
        let target = if slot < 0 {
            match lib.drives.get(d).and_then(|x| x.source) {
                Some(s) => s,
                None => return Err(self.fatal(&format!("No Source for tape in drive {drive}!"))),
            }
        } else {
            usize::try_from(slot - 1).unwrap_or(usize::MAX)
        };
        if target >= lib.storage.len() {
            return Err(self.fatal(&format!(
                "illegal <storage-element-number> argument '{}' to 'unload' command",
                target.wrapping_add(1)
            )));
        }
        if d >= lib.drives.len() {
            return Err(self.fatal(&format!("illegal <drive-number> argument '{drive}' to 'unload' command")));
        }
        if !lib.drives[d].full {
            return Err(self.fatal(&format!("Data Transfer Element {drive} is Empty")));
        }
        if lib.storage[target].full {
            return Err(self.fatal(&format!("Storage Element {} is Already Full", target + 1)));
        }
        let _ = write!(self.out.stdout, "Unloading drive {drive} into Storage Element {}...", target + 1);
        let to = lib.storage[target].id.clone();
        if let Err(e) = self.session.dismount_to(DismountTarget::Drive(lib.drives[d].id.clone()), &to) {
            return Err(self.fatal(&format!(
                "{}\nMOVE MEDIUM from Element Address {d} to {} Failed",
                crate::error_chain(&e),
                lib.storage[target].address
            )));
        }
        self.out.stdout.push_str("done\n");
        self.reread();
        Ok(())
    }

    fn transfer(&mut self, from: i64, to: i64) -> Result<(), Fatal> {
        let lib = self.library()?;
        if from < 1 {
            return Err(self.fatal("No source specified"));
        }
        if to < 1 {
            return Err(self.fatal("No destination specified"));
        }
        let (f, t) = (usize::try_from(from - 1).unwrap_or(usize::MAX), usize::try_from(to - 1).unwrap_or(usize::MAX));
        if f >= lib.storage.len() {
            return Err(self.fatal("Invalid source"));
        }
        if t >= lib.storage.len() {
            return Err(self.fatal("Invalid destination"));
        }
        let (src, dst) = (&lib.storage[f], &lib.storage[t]);
        let Some(media) = src.media.clone().filter(|_| src.full) else {
            return Err(self.fatal(&format!("Source Element Address {} is Empty", src.address)));
        };
        if dst.full {
            return Err(self.fatal(&format!("Destination Element Address {} is Already Full", dst.address)));
        }
        if let Err(e) = self.session.move_media(&media, &dst.id) {
            return Err(self.fatal(&format!(
                "{}\nMOVE MEDIUM from Element Address {} to {} Failed",
                crate::error_chain(&e),
                src.address,
                dst.address
            )));
        }
        self.reread();
        Ok(())
    }

    /// `first`, `last`, `next`, `previous`: unload what the drive holds, load the chosen slot.
    fn step(&mut self, name: &str, drive: i64) -> Result<(), Fatal> {
        let lib = self.library()?;
        let d = usize::try_from(drive).ok().filter(|d| *d < lib.drives.len()).unwrap_or(0);
        let slots = lib.storage.len() - lib.io_count();
        let current = lib.drives[d].full.then_some(lib.drives[d].source).flatten();
        let drive = i64::try_from(d).unwrap_or(0);
        let as_arg = |i: usize| i64::try_from(i).unwrap_or(i64::MAX);
        let target = match name {
            "first" => {
                if current == Some(0) {
                    self.out.stdout.push_str("loading...done.\n");
                    return Ok(());
                }
                Some(0)
            }
            "last" => {
                if current.is_some_and(|c| c + 1 >= slots) {
                    self.out.stdout.push_str("loading...done.\n");
                    return Ok(());
                }
                slots.checked_sub(1)
            }
            "next" => (current.map_or(0, |c| c + 1)..slots).find(|&i| lib.storage[i].full),
            _ => {
                if current == Some(0) {
                    return Err(self.fatal("No More Media"));
                }
                // As mtx counts: from the slot before the drive's, or (an empty drive) from the first mail slot.
                let start = current.map_or(slots, |c| c - 1).min(lib.storage.len().saturating_sub(1));
                (0..=start).rev().find(|&i| lib.storage[i].full)
            }
        };
        if lib.drives[d].full {
            let back = current.map_or(-1, |c| as_arg(c) + 1);
            self.unload(back, drive)?;
        }
        let Some(t) = target else { return Err(self.fatal("No More Media")) };
        self.load(as_arg(t) + 1, drive)
    }
}

/// mtx's `get_arg`: a number when the argument starts with a digit (atoi), else none.
fn number(arg: Option<&String>) -> Option<i64> {
    let a = arg?;
    if !a.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let digits: String = a.chars().take_while(char::is_ascii_digit).collect();
    Some(digits.parse().unwrap_or(i64::MAX))
}

/// Runs mtx's command line `args` (without the program name) through rsmd.
pub fn mtx(session: &Session, args: &[String]) -> Output {
    let mut run = Run { session, device: None, lib: None, barcodes: true, out: Output::default() };
    let mut i = 0;
    while i < args.len() {
        if args[i] == "-f" {
            let Some(d) = args.get(i + 1) else {
                run.out.stderr.push_str(USAGE);
                run.out.code = 1;
                return run.out;
            };
            run.device = Some(d.clone());
            run.lib = None;
            i += 2;
            continue;
        }
        let Some(&(name, wanted)) = COMMANDS.iter().find(|(n, _)| *n == args[i]) else {
            run.out.stderr.push_str(USAGE);
            run.out.code = 1;
            return run.out;
        };
        i += 1;
        let mut a = [-1i64; 3];
        for slot in a.iter_mut().take(wanted) {
            match number(args.get(i)) {
                Some(n) => {
                    *slot = n;
                    i += 1;
                }
                None => break,
            }
        }
        if run.command(name, a).is_err() {
            return run.out;
        }
    }
    run.out
}

/// Debian's mtx-changer usage error (standard output, exit status 1).
fn changer_usage(count: usize, needed: usize) -> Output {
    let mut stdout = "ERROR: usage: mtx-changer ctl-device command [slot archive-device drive-index]\n\
                      \tInsufficient number of arguments given.\n"
        .to_owned();
    if count < 2 {
        stdout.push_str("  Mimimum usage is first two arguments ...\n");
    } else {
        let _ = writeln!(stdout, "  Command expected {needed} arguments");
    }
    Output { stdout, stderr: String::new(), code: 1 }
}

/// The usage error of a changer command line that has too few arguments (checked before rsmd is asked).
pub fn changer_args_error(args: &[String]) -> Option<Output> {
    let needed = changer_needs(args);
    (args.len() < needed).then(|| changer_usage(args.len(), needed))
}

fn changer_needs(args: &[String]) -> usize {
    match args.get(1).map(String::as_str) {
        Some("list" | "listall" | "slots") => 2,
        Some("transfer") => 4,
        _ => 5,
    }
}

/// Runs Bacula's changer command `CTL CMD [SLOT ARCHIVE_DEV DRIVE_INDEX]` (without the program name) through rsmd,
/// as Debian's bacula 9.6 `mtx-changer` does with mtx.
pub fn changer(session: &Session, args: &[String]) -> Output {
    if let Some(usage) = changer_args_error(args) {
        return usage;
    }
    let (ctl, cmd) = (&args[0], args[1].as_str());
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let status = || mtx(session, &["-f".into(), ctl.clone(), "status".into()]);
    match cmd {
        "unload" | "load" => {
            // mtx's standard error goes to standard output after its own output (the script cats its error file).
            let r = mtx(session, &["-f".into(), ctl.clone(), cmd.into(), arg(2), arg(4)]);
            Output { stdout: format!("{}{}", r.stdout, r.stderr), stderr: String::new(), code: r.code }
        }
        "transfer" => mtx(session, &["-f".into(), ctl.clone(), "transfer".into(), arg(2), arg(3)]),
        "list" => {
            let r = status();
            let mut out = String::new();
            for line in r.stdout.lines() {
                // grep " Storage Element [0-9]*:.*Full" | awk '{print $3 $4}' | sed "s/Full *\(:VolumeTag=\)*//"
                if storage_full(line) {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    let joined = format!("{}{}", f.get(2).unwrap_or(&""), f.get(3).unwrap_or(&""));
                    out.push_str(&strip_full_tag(&joined));
                    out.push('\n');
                }
            }
            for line in r.stdout.lines() {
                // grep "^Data Transfer Element [0-9]*:Full (Storage Element [0-9]" | awk '{printf "%s:%s\n",$7,$10}'
                if drive_full_from_slot(line) {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    let _ = writeln!(out, "{}:{}", f.get(6).unwrap_or(&""), f.get(9).unwrap_or(&""));
                }
            }
            Output { stdout: out, stderr: r.stderr, code: r.code }
        }
        "listall" => {
            let r = status();
            let out: String = r.stdout.lines().flat_map(listall_lines).collect();
            Output { stdout: out, stderr: r.stderr, code: r.code }
        }
        "loaded" => {
            let r = status();
            let drive = arg(4);
            let mut out = String::new();
            for line in r.stdout.lines() {
                if line.starts_with(&format!("Data Transfer Element {drive}:Full")) {
                    let _ = writeln!(out, "{}", line.split_whitespace().nth(6).unwrap_or(""));
                }
            }
            for line in r.stdout.lines() {
                if line.starts_with(&format!("Data Transfer Element {drive}:Empty")) {
                    out.push_str("0\n");
                }
            }
            Output { stdout: out, stderr: r.stderr, code: r.code }
        }
        "slots" => {
            let r = status();
            let mut out = String::new();
            for line in r.stdout.lines().filter(|l| l.contains("Storage Changer")) {
                let _ = writeln!(out, "{}", line.split_whitespace().nth(4).unwrap_or(""));
            }
            // The script's last command is a pipeline ending in awk: its status is 0 whatever mtx did.
            Output { stdout: out, stderr: r.stderr, code: 0 }
        }
        _ => Output::default(),
    }
}

/// `grep " Storage Element [0-9]*:.*Full"`.
fn storage_full(line: &str) -> bool {
    let Some(at) = line.find(" Storage Element ") else { return false };
    let rest = &line[at + " Storage Element ".len()..];
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    rest[digits..].starts_with(':') && rest[digits..].contains("Full")
}

/// `sed "s/Full *\(:VolumeTag=\)*//"` (the first match).
fn strip_full_tag(s: &str) -> String {
    let Some(at) = s.find("Full") else { return s.to_owned() };
    let mut rest = &s[at + 4..];
    rest = rest.trim_start_matches(' ');
    while let Some(r) = rest.strip_prefix(":VolumeTag=") {
        rest = r;
    }
    format!("{}{rest}", &s[..at])
}

/// `grep "^Data Transfer Element [0-9]*:Full (Storage Element [0-9]"`.
fn drive_full_from_slot(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("Data Transfer Element ") else { return false };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    rest[digits..].strip_prefix(":Full (Storage Element ").is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
}

/// The perl of the script's `listall` applied to one line of `mtx status` (every pattern is tried, in order).
fn listall_lines(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let num_after = |s: &str, prefix: &str| -> Option<(String, usize)> {
        let at = s.find(prefix)?;
        let rest = &s[at + prefix.len()..];
        let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
        (!n.is_empty()).then(|| (n.clone(), at + prefix.len() + n.len()))
    };
    if let Some((n, end)) = num_after(line, "Data Transfer Element ") {
        let rest = &line[end..];
        if rest.starts_with(":Empty") {
            out.push(format!("D:{n}:E\n"));
        }
        if let Some(r) = rest.strip_prefix(":Full (Storage Element ") {
            let slot: String = r.chars().take_while(char::is_ascii_digit).collect();
            if let Some(after) = r[slot.len()..].strip_prefix(" Loaded)").filter(|_| !slot.is_empty()) {
                // (:VolumeTag =\s*(.+))? — perl's \s* then the rest of the line.
                let tag = after.strip_prefix(":VolumeTag =").map_or("", |t| {
                    // \s* is greedy but (.+) needs a character: an all-blank tag leaves its last blank.
                    let trimmed = t.trim_start();
                    if trimmed.is_empty() && !t.is_empty() {
                        &t[t.len() - 1..]
                    } else {
                        trimmed
                    }
                });
                out.push(format!("D:{n}:F:{slot}:{tag}\n"));
            }
        }
    }
    // The storage patterns match "Storage Element N" anywhere, IMPORT/EXPORT lines included for the plain ones
    // only when ":Empty"/":Full" follows the number directly.
    if let Some((n, end)) = num_after(line, "Storage Element ") {
        let rest = &line[end..];
        if rest.starts_with(":Empty") {
            out.push(format!("S:{n}:E\n"));
        }
        if let Some(r) = rest.strip_prefix(":Full") {
            out.push(format!("S:{n}:F:{}\n", r.strip_prefix(" :VolumeTag=").unwrap_or("")));
        }
        if let Some(r) = rest.strip_prefix(" IMPORT/EXPORT") {
            if r.starts_with(":Empty") {
                out.push(format!("I:{n}:E\n"));
            }
            if let Some(t) = r.strip_prefix(":Full") {
                out.push(format!("I:{n}:F:{}\n", t.strip_prefix(" :VolumeTag=").unwrap_or("")));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_text_transformations() {
        assert!(storage_full("      Storage Element 1:Full :VolumeTag=ABC001L6   "));
        assert!(!storage_full("      Storage Element 21 IMPORT/EXPORT:Full :VolumeTag=ABC006L6"));
        assert!(!storage_full("      Storage Element 17:Empty:VolumeTag=   "));
        assert_eq!(strip_full_tag("1:Full:VolumeTag=ABC001L6"), "1:ABC001L6");
        assert_eq!(strip_full_tag("20:Full"), "20:");
        assert!(drive_full_from_slot("Data Transfer Element 1:Full (Storage Element 3 Loaded):VolumeTag = X"));
        assert!(!drive_full_from_slot("Data Transfer Element 1:Full (Unknown Storage Element Loaded)"));
        let pad = " ".repeat(24);
        assert_eq!(
            listall_lines(&format!(
                "Data Transfer Element 1:Full (Storage Element 3 Loaded):VolumeTag = ABC003L6{pad}"
            )),
            vec![format!("D:1:F:3:ABC003L6{pad}\n")]
        );
        assert_eq!(listall_lines("Data Transfer Element 0:Empty"), vec!["D:0:E\n"]);
        assert_eq!(
            listall_lines(&format!("      Storage Element 1:Full :VolumeTag=ABC001L6{pad}")),
            vec![format!("S:1:F:ABC001L6{pad}\n")]
        );
        assert_eq!(listall_lines("      Storage Element 17:Empty:VolumeTag=    "), vec!["S:17:E\n"]);
        assert_eq!(listall_lines("      Storage Element 22 IMPORT/EXPORT:Empty"), vec!["I:22:E\n"]);
        assert_eq!(listall_lines("      Storage Element 20:Full "), vec!["S:20:F:\n"]);
    }

    #[test]
    fn mtx_numbers_like_atoi() {
        assert_eq!(number(Some(&"12".to_owned())), Some(12));
        assert_eq!(number(Some(&"3x".to_owned())), Some(3));
        assert_eq!(number(Some(&"x3".to_owned())), None);
        assert_eq!(number(None), None);
    }

    #[test]
    fn changer_usage_texts() {
        let short = changer_usage(1, 5);
        assert_eq!((short.code, short.stdout.lines().last()), (1, Some("  Mimimum usage is first two arguments ...")));
        let five = changer_usage(3, 5);
        assert!(five.stdout.ends_with("  Command expected 5 arguments\n"), "{}", five.stdout);
        assert!(five.stdout.starts_with(
            "ERROR: usage: mtx-changer ctl-device command [slot archive-device drive-index]\n\tInsufficient"
        ));
    }
}
