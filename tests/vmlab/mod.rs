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

/// Debian packages fetched (once, with `apt-get download` into the target directory) and unpacked with `dpkg-deb -x`
/// into one tree, returned. Not installed: nothing on the host changes.
fn debian_packages(name: &str, packages: &[&str]) -> Result<PathBuf, String> {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let unpacked = cache.join("x");
    let done = cache.join("unpacked");
    if done.is_file() {
        return Ok(unpacked);
    }
    std::fs::create_dir_all(&cache).map_err(|e| e.to_string())?;
    let got = Command::new("apt-get").arg("download").args(packages).current_dir(&cache).output();
    let debs: Vec<PathBuf> = std::fs::read_dir(&cache)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    if debs.len() < packages.len() {
        return Err(format!("apt-get download {} failed: {got:?}", packages.join(" ")));
    }
    for deb in &debs {
        let x = Command::new("dpkg-deb").arg("-x").arg(deb).arg(&unpacked).status().map_err(|e| e.to_string())?;
        if !x.success() {
            return Err(format!("dpkg-deb -x {} failed", deb.display()));
        }
    }
    std::fs::write(&done, "").map_err(|e| e.to_string())?;
    Ok(unpacked)
}

/// Copies Debian's bacula-sd `mtx-changer` and its `mtx-changer.conf` into `dest`.
fn debian_mtx_changer(dest: &Path) -> Result<(), String> {
    let unpacked = debian_packages("debian-bacula-sd", &["bacula-sd"])?;
    std::fs::create_dir_all(dest).map_err(|e| e.to_string())?;
    for f in ["mtx-changer", "mtx-changer.conf"] {
        std::fs::copy(unpacked.join("etc/bacula/scripts").join(f), dest.join(f)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The Debian packages of a Bacula 9.6 server with the SQLite catalog, and what the VM lacks to run them.
const BACULA_PACKAGES: [&str; 10] = [
    "bacula-common",
    "bacula-common-sqlite3",
    "bacula-director",
    "bacula-director-sqlite3",
    "bacula-sd",
    "bacula-fd",
    "bacula-console",
    "sqlite3",
    "liblzo2-2",
    "libwrap0",
];

/// Stages Bacula for the VM in `dest`: the unpacked packages in `dest/root`, and in `dest/lib` the host's copies of
/// the shared libraries they need that vmlab's initramfs does not have (the host is the same Debian release).
fn stage_bacula(dest: &Path) -> Result<(), String> {
    let unpacked = debian_packages("debian-bacula", &BACULA_PACKAGES)?;
    let root = dest.join("root");
    std::fs::create_dir_all(dest).map_err(|e| e.to_string())?;
    let copied = Command::new("cp").arg("-a").arg(&unpacked).arg(&root).status().map_err(|e| e.to_string())?;
    if !copied.success() {
        return Err("cannot copy the unpacked packages".into());
    }
    let lib = dest.join("lib");
    std::fs::create_dir_all(&lib).map_err(|e| e.to_string())?;
    let search = ["usr/lib/bacula", "lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"]
        .map(|d| root.join(d).display().to_string())
        .join(":");
    let mut objects: Vec<PathBuf> = ["bacula-dir", "bacula-sd", "bacula-fd", "bconsole"]
        .iter()
        .map(|b| root.join("usr/sbin").join(b))
        .chain([root.join("usr/bin/sqlite3")])
        .collect();
    objects.extend(
        std::fs::read_dir(root.join("usr/lib/bacula"))
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".so")),
    );
    for object in objects {
        let out =
            Command::new("ldd").arg(&object).env("LD_LIBRARY_PATH", &search).output().map_err(|e| e.to_string())?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.contains("not found") {
                return Err(format!("{}: {line}", object.display()));
            }
            // "libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x...)": the host's copies; the VM has glibc itself.
            let Some(path) = line.split("=> ").nth(1).and_then(|r| r.split(' ').next()) else { continue };
            let file = Path::new(path).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            let glibc = ["libc.so", "libm.so", "ld-linux", "libpthread.so", "libdl.so", "librt.so"];
            if path.starts_with('/') && !path.contains("/bacula") && !glibc.iter().any(|g| file.starts_with(g)) {
                std::fs::copy(path, lib.join(&file)).map_err(|e| format!("{path}: {e}"))?;
            }
        }
    }
    Ok(())
}

/// Issue 14: a real Bacula 9.6 (Debian's director with SQLite, two storage daemons, file daemon, bconsole) labels,
/// backs up and restores through rsmd on the real kernel's /dev/sg and /dev/nst, two storage daemons in two
/// partitions at once (tests/vmlab/bacula.sh: one VM run).
#[test]
fn bacula_backup_and_restore() {
    let vmlab = vmlab_dir();
    let required = std::env::var("RSMD_REQUIRE_VMLAB").as_deref() == Ok("1");
    if !vmlab.join("run").is_file() || !Path::new("/var/cache/vmlab/vmlinuz").is_file() {
        assert!(!required, "RSMD_REQUIRE_VMLAB=1 but vmlab is not set up (run {}/setup)", vmlab.display());
        println!("skipped: vmlab unavailable");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    match stage_bacula(&dir.path().join("bacula")) {
        Ok(()) => {}
        Err(why) if required => panic!("RSMD_REQUIRE_VMLAB=1 but Bacula cannot be staged: {why}"),
        Err(why) => {
            println!("skipped: Bacula cannot be staged: {why}");
            return;
        }
    }
    std::fs::copy(env!("CARGO_BIN_EXE_rsmd"), dir.path().join("rsmd")).expect("copy rsmd");
    std::fs::copy(env!("CARGO_BIN_EXE_rsm"), dir.path().join("rsm")).expect("copy rsm");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vmlab/bacula.sh");
    std::fs::copy(script, dir.path().join("bacula.sh")).expect("copy bacula.sh");
    let out = Command::new(vmlab.join("run"))
        .arg("--timeout")
        .arg("900")
        .arg(dir.path())
        .arg("--")
        .arg("bash bacula.sh")
        .output()
        .expect("run vmlab");
    let items = ["rsmd", "daemons", "label-barcodes", "backups", "partitions", "restore", "byte-identical"];
    crate::util::check_vm_run(&out, "VMBACULA", &items, required);
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
