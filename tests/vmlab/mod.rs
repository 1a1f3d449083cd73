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
    let out = Command::new(vmlab.join("run"))
        .arg(dir.path())
        .arg("--")
        .arg("RSMD_IN_VMLAB=1 ./tests-bin --exact --test-threads 1 --nocapture vmlab::inner::all")
        .output()
        .expect("run vmlab");
    crate::util::check_vm_run(&out, "VMLAB", &ITEMS, required);
}
