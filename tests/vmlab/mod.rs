//! Real-kernel tests in ../shared/vmlab: the host side boots the VM once and runs [`inner::all`] (this same test
//! binary) inside it, next to a copy of `rsmd`.
//!
//! Run: `cargo test --test tests vmlab -- --nocapture`. Where vmlab is not set up (no `run` script or no
//! `/var/cache/vmlab/vmlinuz`) or the VM cannot boot, the test prints "skipped: vmlab unavailable: <why>" — unless
//! `RSMD_REQUIRE_VMLAB=1` (CI sets it): then a vmlab that is there but cannot run the batch fails the test.

pub mod inner;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The items [`inner::all`] checks, each announced by a `VMLAB-OK <item>` line.
const ITEMS: [&str; 9] = [
    "discovery",
    "list-devices",
    "element-status",
    "move",
    "concurrency",
    "timeout",
    "map-drives",
    "daemon-hotplug",
    "removal",
];

fn vmlab_dir() -> PathBuf {
    match std::env::var_os("VMLAB_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vmlab"),
    }
}

/// Copies Debian's bacula-sd `mtx-changer` and its `mtx-changer.conf` into `dest`, from the package (downloaded
/// once with `apt-get download` into the target directory and unpacked with `dpkg-deb -x`).
fn debian_mtx_changer(dest: &Path) -> Result<(), String> {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-bacula-sd");
    let unpacked = cache.join("x");
    let script = unpacked.join("etc/bacula/scripts/mtx-changer");
    if !script.is_file() {
        std::fs::create_dir_all(&cache).map_err(|e| e.to_string())?;
        let got = Command::new("apt-get").arg("download").arg("bacula-sd").current_dir(&cache).output();
        let deb = std::fs::read_dir(&cache)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .ok_or_else(|| format!("apt-get download bacula-sd failed: {got:?}"))?;
        let x = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked).status().map_err(|e| e.to_string())?;
        if !x.success() || !script.is_file() {
            return Err(format!("dpkg-deb -x {} gave no mtx-changer", deb.display()));
        }
    }
    std::fs::create_dir_all(dest).map_err(|e| e.to_string())?;
    for f in ["mtx-changer", "mtx-changer.conf"] {
        std::fs::copy(unpacked.join("etc/bacula/scripts").join(f), dest.join(f)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[test]
fn real_kernel_batch() {
    let vmlab = vmlab_dir();
    if !vmlab.join("run").is_file() {
        println!("skipped: vmlab unavailable: no {}", vmlab.join("run").display());
        return;
    }
    let required = std::env::var("RSMD_REQUIRE_VMLAB").as_deref() == Ok("1");
    if !Path::new("/var/cache/vmlab/vmlinuz").is_file() {
        assert!(
            !required,
            "RSMD_REQUIRE_VMLAB=1 but /var/cache/vmlab/vmlinuz is missing (run {}/setup)",
            vmlab.display()
        );
        println!("skipped: vmlab unavailable: /var/cache/vmlab/vmlinuz missing (run {}/setup)", vmlab.display());
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let me = std::env::current_exe().expect("current_exe");
    std::fs::copy(&me, dir.path().join("tests-bin")).expect("copy the test binary");
    std::fs::copy(env!("CARGO_BIN_EXE_rsmd"), dir.path().join("rsmd")).expect("copy rsmd");
    // Debian's own mtx-changer (bacula-sd 9.6), fetched, not installed: the VM runs it beside `rsm changer`.
    match debian_mtx_changer(&dir.path().join("bacula")) {
        Ok(()) => {}
        Err(why) if required => panic!("RSMD_REQUIRE_VMLAB=1 but Debian's mtx-changer cannot be had: {why}"),
        Err(why) => println!("(the mtx-changer contract check will be skipped: {why})"),
    }
    let out = Command::new(vmlab.join("run"))
        .arg(dir.path())
        .arg("--")
        .arg("RSMD_IN_VMLAB=1 ./tests-bin --exact --test-threads 1 --nocapture vmlab::inner::all")
        .output()
        .expect("run vmlab");
    crate::util::check_vm_run(&out, "VMLAB", &ITEMS, required);
}
