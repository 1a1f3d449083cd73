//! Issues 11 and 15: the README's install section, run verbatim under a real systemd (PID 1) and udevd in
//! ../shared/vmlab/systemd, then hot-plug through udev with the daemon as an administrator runs it (`User=rsmd`,
//! socket activation, the udev rules). The host side stages a copy of the work tree with the binaries Cargo built
//! for this test as `target/release/{rsmd,rsm}`, boots the VM once and runs [`inner::all`] (this same test binary)
//! in it.
//!
//! The install commands are read from README.md at test time (the first `sh` block under the heading that begins
//! "Install"), so the README stays true: every line runs as written, in the staged tree, except `cargo build`,
//! which cannot run in the VM (no toolchain) and is stood in for by the staged binaries.
//!
//! Run: `cargo test --test tests vmsd -- --nocapture`. Where the systemd VM is not set up (no
//! `../shared/vmlab/systemd/run`, or its image not built by `systemd/setup`, which `tools/ci-deps` runs) or cannot
//! boot, the test prints "skipped: vmlab/systemd unavailable: <why>" — unless `RSMD_REQUIRE_VMLAB=1` (CI sets it):
//! then a VM that is there but cannot run the test fails it.

pub mod inner;

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The items [`inner::all`] checks, each announced by a `VMSD-OK <item>` line.
const ITEMS: [&str; 11] = [
    "install",
    "manuals",
    "service",
    "status",
    "mount",
    "logout-offline",
    "login-online",
    "udev-starts-rsmd",
    "drive-replug",
    "stop",
    "journal",
];

fn vmsd_dir() -> PathBuf {
    match std::env::var_os("VMLAB_DIR") {
        Some(d) => PathBuf::from(d).join("systemd"),
        None => Path::new(ROOT).join("../shared/vmlab/systemd"),
    }
}

fn vmsd_cache() -> PathBuf {
    std::env::var_os("VMSD_CACHE").map_or_else(|| PathBuf::from("/var/cache/vmlab-systemd"), PathBuf::from)
}

/// The shell commands of the README's install section: the first `sh` code block after the first heading that
/// begins with "Install", up to its closing fence, as written.
pub fn readme_install_block(readme: &str) -> Result<Vec<String>, String> {
    let mut lines = readme.lines();
    lines
        .by_ref()
        .find(|l| l.starts_with('#') && l.trim_start_matches('#').trim().to_lowercase().starts_with("install"))
        .ok_or("README.md has no heading beginning with \"Install\"")?;
    loop {
        let l = lines.next().ok_or("no ```sh block after the install heading")?;
        if l.starts_with('#') {
            return Err(format!("no ```sh block under the install heading before {l:?}"));
        }
        if matches!(l.trim(), "```sh" | "```bash" | "```shell") {
            break;
        }
    }
    let mut block = Vec::new();
    for l in lines {
        if l.trim() == "```" {
            return Ok(block);
        }
        block.push(l.to_owned());
    }
    Err("the install block's fence is not closed".into())
}

/// The install block as a script for the VM: `set -ex`, then every line as written, except that `cargo build`
/// (done on the host: the binaries are staged under `target/release/`) becomes a check that the binaries are there.
fn install_script(block: &[String], bins: &[&str]) -> Result<String, String> {
    let mut script = String::from(
        "#!/bin/bash\n# The README's install section, extracted by tests/vmsd at test time and run in the VM as \
         written.\nset -ex\n",
    );
    for line in block {
        let command = line.trim_start();
        if command.starts_with("cargo build") {
            let staged: Vec<String> = bins.iter().map(|b| format!("target/release/{b}")).collect();
            script.push_str(&format!(
                "# {command}: done on the host (cargo test built and staged {})\ntest -x {}\n",
                staged.join(", "),
                staged.join(" -a -x ")
            ));
        } else if command.starts_with("cargo ") {
            return Err(format!(
                "the install block runs {command:?}: there is no toolchain in the VM; teach tests/vmsd to do it on \
                 the host"
            ));
        } else {
            script.push_str(line);
            script.push('\n');
        }
    }
    Ok(script)
}

/// Copies the work tree (no build output, no VCS, no venv) so that the README's relative paths hold.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the staging tree");
    for entry in std::fs::read_dir(from).expect("read the work tree") {
        let entry = entry.expect("a directory entry");
        let name = entry.file_name();
        if [".git", ".venv", "target", "corpus", "artifacts"].iter().any(|n| name == *n) {
            continue;
        }
        let kind = entry.file_type().expect("file type");
        let dest = to.join(&name);
        if kind.is_dir() {
            copy_tree(&entry.path(), &dest);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &dest).unwrap_or_else(|e| panic!("copy {}: {e}", entry.path().display()));
        }
    }
}

/// Every unit in systemd/ and every rules file in udev/ is installed by the README's install block, and the block
/// builds what it installs (this part needs no VM).
#[test]
fn readme_install_block_installs_every_unit_and_rule() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).expect("README.md");
    let block = readme_install_block(&readme).unwrap_or_else(|e| panic!("{e}"));
    let text = block.join("\n");
    for dir in ["systemd", "udev"] {
        for entry in std::fs::read_dir(Path::new(ROOT).join(dir)).expect("read the directory") {
            let name = format!("{dir}/{}", entry.expect("entry").file_name().to_string_lossy());
            assert!(text.contains(&name), "the README's install block does not install {name}:\n{text}");
        }
    }
    for bin in ["target/release/rsmd", "target/release/rsm"] {
        assert!(text.contains(bin), "the README's install block does not install {bin}:\n{text}");
    }
    install_script(&block, &["rsmd", "rsm"]).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn readme_install_then_hotplug_under_systemd() {
    let vmsd = vmsd_dir();
    let required = std::env::var("RSMD_REQUIRE_VMLAB").as_deref() == Ok("1");
    if !vmsd.join("run").is_file() {
        println!("skipped: vmlab/systemd unavailable: no {}", vmsd.join("run").display());
        return;
    }
    let cache = vmsd_cache();
    if !cache.join("root.img").is_file() {
        let why = format!("{} missing (run {}/setup)", cache.join("root.img").display(), vmsd.display());
        assert!(!required, "RSMD_REQUIRE_VMLAB=1 but {why}");
        println!("skipped: vmlab/systemd unavailable: {why}");
        return;
    }
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).expect("README.md");
    let block = readme_install_block(&readme).unwrap_or_else(|e| panic!("{e}"));
    let script = install_script(&block, &["rsmd", "rsm"]).unwrap_or_else(|e| panic!("{e}"));

    let dir = tempfile::tempdir().expect("temp dir");
    let tree = dir.path();
    copy_tree(Path::new(ROOT), tree);
    std::fs::create_dir_all(tree.join("target/release")).expect("target/release");
    std::fs::copy(env!("CARGO_BIN_EXE_rsmd"), tree.join("target/release/rsmd")).expect("stage rsmd");
    std::fs::copy(env!("CARGO_BIN_EXE_rsm"), tree.join("target/release/rsm")).expect("stage rsm");
    std::fs::write(tree.join("readme-install.sh"), &script).expect("write readme-install.sh");
    let me = std::env::current_exe().expect("current_exe");
    std::fs::copy(&me, tree.join("tests-bin")).expect("copy the test binary");
    println!("the README's install block, as the VM runs it:\n{script}");

    let out = Command::new(vmsd.join("run"))
        .args(["--timeout", "420", "--fast-exit"])
        .arg(tree)
        .arg("--")
        .arg("RSMD_IN_VMSD=1 ./tests-bin --exact --test-threads 1 --nocapture vmsd::inner::all")
        .output()
        .expect("run vmlab/systemd");
    crate::util::check_vm_run(&out, "VMSD", &ITEMS, required);
}
