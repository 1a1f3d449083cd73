//! The in-VM half: run by the host test inside vmlab/systemd with `RSMD_IN_VMSD=1` (as root, in the staged tree at
//! /host, once the system is running and the library is logged in); returns at once elsewhere.
//!
//! It installs rsmd with the README's commands, then works as an administrator and a user of the client group
//! would, and unplugs the library (iSCSI logout) and plugs it back (login) under the running daemon. Each check
//! prints `VMSD-OK <item>` when it passes; the host test requires every marker. Waits are bounded polls on what
//! `rsm` or systemd report; on a failure the rsmd journal is printed.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rsmd::proto::types::{DriveDetails, LibraryKind};
use rsmd::proto::{ObjectDetails, ObjectInfo};

/// The user of the client group who runs `rsm` (created by the test).
const CLIENT: &str = "rsmclient";
/// A user outside the client group.
const OUTSIDER: &str = "outsider";
/// How often a bounded poll looks again.
const POLL: Duration = Duration::from_millis(100);

/// The whole test, in order (each step starts from where the previous one left the system).
#[test]
fn all() {
    if std::env::var("RSMD_IN_VMSD").as_deref() != Ok("1") {
        println!("not in vmlab/systemd (RSMD_IN_VMSD unset): nothing to do");
        return;
    }
    let drives = std::env::var("DRIVES").expect("vmsd sets DRIVES").split_whitespace().count();
    println!("VMSD-BEGIN changer {} drives {drives}", std::env::var("CHANGER").expect("vmsd sets CHANGER"));
    let _journal = JournalOnFailure;

    step("the README's install section, as written");
    let t = clock();
    let out = run(bounded(300, "bash").arg("readme-install.sh"));
    assert!(out.status.success(), "the README's install section failed (its trace is above)");
    ok("install", &format!("in {:.1} s", t.elapsed().as_secs_f64()));

    step("manual pages and shell completions, as the install section put them");
    let installed = [
        ("/usr/share/man/man1/rsm.1", ".TH rsm 1"),
        ("/usr/share/man/man8/rsmd.8", ".TH rsmd 8"),
        ("/usr/share/man/man5/rsmd.toml.5", ".TH RSMD.TOML 5"),
        ("/usr/share/bash-completion/completions/rsm", "_rsm()"),
        ("/usr/share/zsh/vendor-completions/_rsm", "#compdef rsm"),
        ("/usr/share/fish/vendor_completions.d/rsm.fish", "complete -c rsm"),
    ];
    for (path, head) in installed {
        let body = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(body.contains(head), "{path} is not what it should be: {}", &body[..body.len().min(200)]);
        assert!(body.contains("allocate") || path.contains("rsmd"), "{path} names rsm's commands");
    }
    ok("manuals", "rsm(1), rsmd(8), rsmd.toml(5), bash/zsh/fish completions installed");

    step("the service");
    for unit in ["rsmd.socket", "rsmd.service"] {
        assert_eq!(systemctl_show(unit, "ActiveState"), "active", "{unit} is active after `enable --now`");
        assert_eq!(systemctl_show(unit, "UnitFileState"), "enabled", "{unit} is enabled");
    }
    let pid = systemctl_show("rsmd.service", "MainPID");
    let user = text(&run(Command::new("ps").args(["-o", "user=", "-p", &pid])));
    assert_eq!(user.trim(), "rsmd", "rsmd runs as the rsmd user (User=rsmd)");
    let socket = std::fs::metadata("/run/rsmd/rsmd.sock").expect("the socket /run/rsmd/rsmd.sock");
    assert_eq!(socket.permissions().mode() & 0o007, 0, "the socket is not open to everyone");
    let group = group_name(socket.gid());
    println!("rsmd pid {pid} runs as rsmd; the socket belongs to group {group} (the client group)");
    ok("service", &format!("rsmd pid {pid}, user rsmd, client group {group}"));

    step("`rsm status` as a user of the client group");
    run_ok(Command::new("useradd").args(["--no-create-home", "--groups", &group, CLIENT]));
    run_ok(Command::new("useradd").args(["--no-create-home", OUTSIDER]));
    let (lib, waited) = poll("the library online and ready with its drives mapped", Duration::from_secs(90), || {
        library(CLIENT).filter(|l| l.serves(drives))
    });
    rsm(CLIENT, &["status"]);
    let nodes = lib.nodes();
    for node in &nodes {
        let m = std::fs::metadata(node).unwrap_or_else(|e| panic!("{node}: {e}"));
        assert_eq!(
            (group_name(m.gid()).as_str(), m.permissions().mode() & 0o777),
            ("tape", 0o660),
            "{node} belongs to the tape group, mode 0660 (udev/60-rsmd.rules)"
        );
    }
    let refused = rsm(OUTSIDER, &["status"]);
    assert!(!refused.status.success(), "a user outside group {group} is refused");
    ok("status", &format!("library online, ready, {drives} drives mapped {:.1} s after install", waited.as_secs_f64()));

    step("a mount and a dismount through `rsm` as that user");
    mount_and_dismount("ABC003L6", None);
    ok("mount", "ABC003L6 mounted and dismounted");

    step("iSCSI logout: the library goes offline");
    // The kernel frees an sg number when its last file is closed: with the controller's node held open across the
    // logout, the login numbers every device anew (the changer was /dev/sg10 after a login in issue 11).
    let old_changer = kernel().changer;
    let held_node = sysfs_other().expect("an sg node besides the library's (tgt's controller LUN 0)");
    let held = std::fs::File::open(&held_node).unwrap_or_else(|e| panic!("{held_node}: {e}"));
    let t = clock();
    iscsiadm("--logout");
    let (lib, waited) = poll("the library offline", Duration::from_secs(10), || {
        library(CLIENT).filter(|l| l.kind == LibraryKind::Offline)
    });
    let offline = t.elapsed();
    rsm(CLIENT, &["status"]);
    assert_eq!(lib.slots, 20, "the stale inventory is still served");
    let refused = rsm(CLIENT, &["mount", "ABC005L6", "--timeout", "5"]);
    assert!(!refused.status.success(), "a mount while the library is offline does not succeed");
    ok(
        "logout-offline",
        &format!(
            "offline {:.2} s after the logout began ({:.2} s after it returned)",
            offline.as_secs_f64(),
            waited.as_secs_f64()
        ),
    );

    step("iSCSI login, the nodes renumbered: the library comes back without a restart");
    let t = clock();
    iscsiadm("--login");
    let (_, waited) = poll("the library back online and ready", Duration::from_secs(90), || {
        library(CLIENT).filter(|l| l.serves(drives))
    });
    let back = t.elapsed();
    drop(held);
    let new_changer = kernel().changer;
    assert_ne!(new_changer, old_changer, "the login renumbered the nodes ({held_node} held open)");
    println!("the changer moved from {old_changer:?} to {new_changer:?}");
    rsm(CLIENT, &["status"]);
    assert_eq!(systemctl_show("rsmd.service", "MainPID"), pid, "the same rsmd process serves the library");
    assert_eq!(systemctl_show("rsmd.service", "NRestarts"), "0", "rsmd was not restarted");
    mount_and_dismount("ABC004L6", None);
    ok(
        "login-online",
        &format!(
            "changer {} -> {}, ready again {:.2} s after the login began ({:.2} s after it returned), same pid \
             {pid}; ABC004L6 mounted and dismounted",
            old_changer.as_deref().unwrap_or("-"),
            new_changer.as_deref().unwrap_or("-"),
            back.as_secs_f64(),
            waited.as_secs_f64()
        ),
    );

    step("udev starts rsmd when a changer appears (ENV{SYSTEMD_WANTS} in udev/60-rsmd.rules)");
    stop_rsmd();
    iscsiadm("--logout");
    let t = clock();
    iscsiadm("--login");
    // Nothing connects to the socket meanwhile: only the changer's device unit can pull the service in.
    let (_, waited) = poll("rsmd.service started by udev", Duration::from_secs(60), || {
        (systemctl_show("rsmd.service", "ActiveState") == "active").then_some(())
    });
    let started = t.elapsed();
    poll("the library online and ready", Duration::from_secs(90), || library(CLIENT).filter(|l| l.serves(drives)));
    ok(
        "udev-starts-rsmd",
        &format!(
            "active {:.2} s after the login began ({:.2} s after it returned)",
            started.as_secs_f64(),
            waited.as_secs_f64()
        ),
    );

    step("one drive unplugged and plugged back, renumbered: out of service at once, then reopened");
    // Drive 0 (mounts for any drive go there first); the changer stays. Its node is held open: it comes back as
    // another.
    let lib = library(CLIENT).expect("the library");
    let drive = lib.drives.iter().find(|d| d.number == 0).expect("drive 0");
    let (old_node, serial) = (drive.devices.sg.clone().expect("sg"), drive.serial.clone().expect("serial"));
    let name = old_node.strip_prefix("/dev/").expect("a node in /dev");
    let device = std::fs::canonicalize(format!("/sys/class/scsi_generic/{name}/device")).expect("its SCSI device");
    let hctl: Vec<String> =
        device.file_name().expect("H:C:T:L").to_string_lossy().split(':').map(str::to_owned).collect();
    let held = std::fs::File::open(&old_node).unwrap_or_else(|e| panic!("{old_node}: {e}"));
    let t = clock();
    std::fs::write(device.join("delete"), "1").expect("delete the drive's SCSI device");
    println!("deleted {} (drive 0, {old_node}, serial {serial})", device.display());
    // Out of service at once: rsm status stops calling it ready (asserted below, after the rest of the step), and a
    // mount for any drive goes to another one, and returns.
    let shown_gone = try_poll(Duration::from_secs(10), || {
        library(CLIENT).and_then(|l| l.drive_states.get(&0).filter(|s| *s != "ready").cloned())
    });
    rsm(CLIENT, &["status"]);
    let used = mount_and_dismount("ABC005L6", None);
    assert_ne!(used, 0, "a mount while drive 0 is gone chose another drive");
    let other = t.elapsed();
    std::fs::write(format!("/sys/class/scsi_host/host{}/scan", hctl[0]), hctl[1..].join(" ")).expect("rescan the LUN");
    let (_, waited) =
        poll("drive 0 back on its new node", Duration::from_secs(90), || library(CLIENT).filter(|l| l.serves(drives)));
    drop(held);
    let lib = library(CLIENT).expect("the library");
    let new_node = lib.drives.iter().find(|d| d.number == 0).and_then(|d| d.devices.sg.clone()).expect("sg");
    assert_ne!(new_node, old_node, "the drive came back on another node ({old_node} held open)");
    rsm(CLIENT, &["status"]);
    assert_eq!(mount_and_dismount("ABC006L6", Some(0)), 0);
    let (shown, _) = shown_gone
        .unwrap_or_else(|| panic!("10 s after its device was deleted, rsm status still showed drive 0 ready"));
    ok(
        "drive-replug",
        &format!(
            "drive 0 gone: shown {shown}, a mount used drive {used} ({:.2} s); back on {new_node} (was {old_node}) \
             {:.2} s after the rescan; ABC006L6 mounted in drive 0",
            other.as_secs_f64(),
            waited.as_secs_f64()
        ),
    );

    step("stop");
    stop_rsmd();
    ok("stop", "SIGTERM: exit 0");

    step("rsmd's journal");
    let journal = journal();
    println!("{journal}");
    assert!(!journal.contains("panicked"), "rsmd panicked (journal above)");
    ok("journal", "no panic");
}

// ---------------------------------------------------------------------------------------------------------------

/// What `rsm --json status` says of the one library.
#[derive(Debug)]
struct Library {
    kind: LibraryKind,
    state: String,
    changer: Option<String>,
    slots: usize,
    drives: Vec<DriveDetails>,
    /// Each drive's state in words (`ready`, `offline`, ...), by drive number.
    drive_states: BTreeMap<u32, String>,
}

impl Library {
    /// Online and ready, with `n` drives mapped: each drive's serial, sg and nst nodes are those the kernel has
    /// now for that drive (a login may renumber them), and the changer is on the kernel's changer node.
    fn serves(&self, n: usize) -> bool {
        let Kernel { changer, drives } = kernel();
        let mapped = self.drives.iter().all(|d| match (&d.serial, &d.devices.sg, &d.devices.nst) {
            (Some(serial), Some(sg), Some(nst)) => {
                drives.get(sg) == Some(&KernelDrive { serial: Some(serial.clone()), nst: Some(nst.clone()) })
            }
            _ => false,
        });
        self.kind == LibraryKind::Online
            && self.state == "ready"
            && self.changer == changer
            && self.drives.len() == n
            && drives.len() == n
            && mapped
    }

    fn nodes(&self) -> Vec<String> {
        self.changer.iter().cloned().chain(self.drives.iter().filter_map(|d| d.devices.sg.clone())).collect()
    }
}

/// The library as `user` sees it through `rsm --json status`; None when rsm fails or there is no library yet.
fn library(user: &str) -> Option<Library> {
    let out = rsm_quiet(user, &["--json", "status"]);
    if !out.status.success() {
        return None;
    }
    let objects: Vec<ObjectInfo> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("rsm --json status is not a list of objects ({e}): {}", text(&out)));
    let mut libraries = objects.iter().filter_map(|o| match &o.details {
        ObjectDetails::Library(l) => Some((o, l)),
        _ => None,
    });
    let (info, details) = libraries.next()?;
    assert!(libraries.next().is_none(), "one library, not several: {}", text(&out));
    let changer = objects.iter().find_map(|o| match &o.details {
        ObjectDetails::Changer(c) if c.library == info.id => Some(c.device.clone()),
        _ => None,
    });
    let (drive_states, drives) = objects
        .iter()
        .filter_map(|o| match &o.details {
            ObjectDetails::Drive(d) if d.library == info.id => Some(((d.number, o.state.clone()), d.clone())),
            _ => None,
        })
        .unzip();
    let slots = objects.iter().filter(|o| matches!(o.details, ObjectDetails::StorageSlot(_))).count();
    Some(Library {
        kind: details.kind,
        state: info.state.clone(),
        changer: changer.flatten(),
        slots,
        drives,
        drive_states,
    })
}

/// The library as the kernel has it now (a login may renumber the nodes).
#[derive(Debug)]
struct Kernel {
    /// The changer's sg node.
    changer: Option<String>,
    /// The tape drives, by sg node.
    drives: BTreeMap<String, KernelDrive>,
}

#[derive(Debug, PartialEq, Eq)]
struct KernelDrive {
    /// The unit serial number (VPD page 80h as the kernel read it at the scan).
    serial: Option<String>,
    /// The drive's non-rewinding tape node.
    nst: Option<String>,
}

fn kernel() -> Kernel {
    let mut k = Kernel { changer: None, drives: BTreeMap::new() };
    for (node, device, kind) in sysfs_sg() {
        match kind.as_str() {
            "8" => k.changer = Some(node),
            "1" => {
                // A 4-byte header, then the serial (SPC-4 7.8.16), blank- or NUL-padded.
                let serial = std::fs::read(device.join("vpd_pg80")).ok().and_then(|page| {
                    let text = String::from_utf8_lossy(page.get(4..)?).trim_matches([' ', '\0']).to_owned();
                    Some(text)
                });
                let nst = std::fs::read_dir(device.join("scsi_tape"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .find(|n| n.strip_prefix("nst").is_some_and(|i| i.chars().all(|c| c.is_ascii_digit())))
                    .map(|n| format!("/dev/{n}"));
                k.drives.insert(node, KernelDrive { serial, nst });
            }
            _ => {}
        }
    }
    k
}

/// An sg node that is neither a changer nor a tape drive (tgt's controller, LUN 0).
fn sysfs_other() -> Option<String> {
    sysfs_sg().into_iter().find(|(_, _, kind)| kind != "1" && kind != "8").map(|(node, _, _)| node)
}

/// Every sg node with its SCSI device's sysfs directory and peripheral device type.
fn sysfs_sg() -> Vec<(String, PathBuf, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/sys/class/scsi_generic").into_iter().flatten().flatten() {
        let device = entry.path().join("device");
        if let Ok(kind) = std::fs::read_to_string(device.join("type")) {
            out.push((format!("/dev/{}", entry.file_name().to_string_lossy()), device, kind.trim().to_owned()));
        }
    }
    out.sort();
    out
}

/// `rsm mount` then `rsm dismount` as the client. The cartridge is where rsm says: `mtx status` sees it in the
/// drive rsm names, whose tape node (the one a backup program would write to) is the one rsm printed; after the
/// dismount mtx sees it back in a slot.
/// With `drive`, the mount asks for that drive. Returns the drive's number.
fn mount_and_dismount(barcode: &str, drive: Option<u32>) -> u32 {
    let number = drive.map(|n| n.to_string());
    let mut args = vec!["mount", barcode, "--timeout", "120"];
    args.extend(number.iter().flat_map(|n| ["--drive", n.as_str()]));
    let out = rsm(CLIENT, &args);
    assert!(out.status.success(), "rsm mount {barcode} as {CLIENT}");
    let lib = library(CLIENT).expect("the library after the mount");
    let drive = lib.drives.iter().find(|d| d.barcode.as_deref() == Some(barcode)).expect("a drive holds it");
    let nst = drive.devices.nst.as_deref().expect("the drive's nst node");
    assert!(text(&out).contains(nst), "rsm mount printed the drive's tape node {nst}");
    let Kernel { changer, drives } = kernel();
    let sg = drive.devices.sg.as_deref().expect("the drive's sg node");
    assert_eq!(
        drives.get(sg),
        Some(&KernelDrive { serial: drive.serial.clone(), nst: Some(nst.to_owned()) }),
        "drive {} is {sg} and {nst} for the kernel too",
        drive.number
    );
    let changer = changer.expect("a changer");
    // mtx prints `Data Transfer Element 0:Full (Storage Element 3 Loaded):VolumeTag = ABC003L6` and
    // `      Storage Element 3:Full :VolumeTag=ABC003L6`.
    let holds = |line: &str, element: &str| {
        line.trim_start().starts_with(element) && line.replace(' ', "").ends_with(&format!("VolumeTag={barcode}"))
    };
    let mtx = text(&run_ok(bounded(60, "mtx").args(["-f", &changer, "status"])));
    let element = format!("Data Transfer Element {}:", drive.number);
    assert!(mtx.lines().any(|l| holds(l, &element)), "mtx sees {barcode} in drive {}", drive.number);
    let out = rsm(CLIENT, &["dismount", barcode]);
    assert!(out.status.success(), "rsm dismount {barcode} as {CLIENT}");
    let mtx = text(&run_ok(bounded(60, "mtx").args(["-f", &changer, "status"])));
    assert!(!mtx.lines().any(|l| holds(l, "Data Transfer Element")), "{barcode} left the drive");
    assert!(mtx.lines().any(|l| holds(l, "Storage Element")), "mtx sees {barcode} back in a slot");
    drive.number
}

/// `systemctl stop rsmd.service` (the socket stays); rsmd must have exited 0 on SIGTERM.
fn stop_rsmd() {
    run_ok(bounded(120, "systemctl").args(["stop", "rsmd.service"]));
    assert_eq!(systemctl_show("rsmd.service", "ActiveState"), "inactive", "rsmd stopped");
    assert_eq!(systemctl_show("rsmd.service", "Result"), "success", "rsmd exited cleanly on SIGTERM");
    assert_eq!(systemctl_show("rsmd.socket", "ActiveState"), "active", "the socket still listens");
}

fn iscsiadm(action: &str) {
    let target = std::env::var("VMLAB_TARGET").expect("vmsd sets VMLAB_TARGET");
    let portal = std::env::var("VMLAB_PORTAL").expect("vmsd sets VMLAB_PORTAL");
    run_ok(bounded(60, "iscsiadm").args(["-m", "node", "-T", &target, "-p", &portal, action]));
}

fn systemctl_show(unit: &str, property: &str) -> String {
    let out = Command::new("systemctl").args(["show", "--value", "-p", property, unit]).output().expect("systemctl");
    text(&out).trim().to_owned()
}

fn group_name(gid: u32) -> String {
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .map_or_else(|| gid.to_string(), |g| g.name)
}

fn rsm(user: &str, args: &[&str]) -> Output {
    run(bounded(180, "runuser").args(["-u", user, "--", "rsm"]).args(args))
}

/// `rsm` without echoing (for polls).
fn rsm_quiet(user: &str, args: &[&str]) -> Output {
    bounded(30, "runuser").args(["-u", user, "--", "rsm"]).args(args).output().expect("run rsm")
}

/// `program` under coreutils' `timeout`: a command that hangs fails the test (exit status 124) with the journal
/// printed, instead of running into the VM's own time limit.
fn bounded(seconds: u32, program: &str) -> Command {
    let mut c = Command::new("timeout");
    c.args(["--kill-after=5", &seconds.to_string(), program]);
    c
}

/// Runs a command, echoes it and its output.
fn run(command: &mut Command) -> Output {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let timed_out = if out.status.code() == Some(124) { " (timed out)" } else { "" };
    println!("$ {command:?} -> {}{timed_out}\n{}", out.status, text(&out).trim_end());
    out
}

fn run_ok(command: &mut Command) -> Output {
    let out = run(command);
    assert!(out.status.success(), "{command:?} failed");
    out
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Polls `f` every [`POLL`] until it returns Some, at most `limit`; returns the value and the time it took.
fn poll<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> (T, Duration) {
    try_poll(limit, f).unwrap_or_else(|| panic!("{what}: not after {} s", limit.as_secs()))
}

/// [`poll`], None when `limit` passes first.
fn try_poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<(T, Duration)> {
    let start = clock();
    loop {
        if let Some(v) = f() {
            return Some((v, start.elapsed()));
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// A real system's timings are measured here (the clippy ban on clocks is for the sans-IO code).
#[allow(clippy::disallowed_methods)]
fn clock() -> Instant {
    Instant::now()
}

fn journal() -> String {
    let out = Command::new("journalctl")
        .args(["-b", "--no-pager", "-o", "short-monotonic", "-u", "rsmd.service", "-u", "rsmd.socket"])
        .output()
        .expect("journalctl");
    text(&out)
}

fn step(what: &str) {
    println!("\n== {what}");
}

fn ok(item: &str, detail: &str) {
    println!("VMSD-OK {item}: {detail}");
}

/// Prints rsmd's journal and the units' status when the test fails.
struct JournalOnFailure;

impl Drop for JournalOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            println!("\n== FAILED: the kernel's library\n{:#?}", kernel());
            if let Ok(out) = Command::new("lsscsi").arg("-g").output() {
                println!("{}", text(&out));
            }
            println!("\n== FAILED: rsmd's journal\n{}", journal());
            let out = Command::new("systemctl")
                .args(["status", "--no-pager", "-l", "rsmd.service", "rsmd.socket"])
                .output()
                .expect("systemctl");
            println!("{}", text(&out));
        }
    }
}
