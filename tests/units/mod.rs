//! Issue 4: the systemd units pass `systemd-analyze verify`, the udev rules are well formed, and socket activation
//! works with the real protocol (`systemd-socket-activate` plays systemd's part).

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::util::{vlib_config, Raw, Vlib};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let service = std::fs::read_to_string(Path::new(ROOT).join("systemd/rsmd.service")).unwrap();
    // verify checks that ExecStart exists: point it at the binary under test.
    let service = service.replace("/usr/bin/rsmd", &crate::util::rsmd_bin());
    std::fs::write(dir.path().join("rsmd.service"), service).unwrap();
    std::fs::copy(Path::new(ROOT).join("systemd/rsmd.socket"), dir.path().join("rsmd.socket")).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("rsmd.socket"))
        .arg(dir.path().join("rsmd.service"))
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze is missing: run tools/ci-deps");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("rsmd.s"), "verify complained: {text}");
    // The hardening keeps the exposure score low.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(dir.path().join("rsmd.service"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for rsmd.service: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in {text}"));
    assert!(score <= 2.0, "exposure {score}");
}

#[test]
fn udev_rules_are_well_formed() {
    let rules = std::fs::read_to_string(Path::new(ROOT).join("udev/60-rsmd.rules")).unwrap();
    let keys = ["SUBSYSTEM", "ATTRS{type}", "GROUP", "MODE", "TAG", "ENV{SYSTEMD_WANTS}", "KERNEL", "ACTION"];
    let mut changer_rule = false;
    for line in rules.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        for part in line.split(", ") {
            let op = ["==", "+=", "!=", "="].iter().find(|op| part.contains(**op)).expect(part);
            let (key, value) = part.split_once(op).unwrap();
            assert!(keys.contains(&key), "unknown key {key} in {line}");
            assert!(value.starts_with('"') && value.ends_with('"') && value.len() >= 2, "unquoted value in {line}");
        }
        changer_rule |= line.contains("ATTRS{type}==\"8\"") && line.contains("rsmd.service");
        assert!(!line.contains("NAME=") && !line.contains("SYMLINK"), "rsmd must not rename devices: {line}");
    }
    assert!(changer_rule, "a changer must pull rsmd in");
    // Newer udev can check syntax itself.
    if let Ok(out) = Command::new("udevadm").arg("verify").arg(Path::new(ROOT).join("udev/60-rsmd.rules")).output() {
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.contains("Unknown command") {
            assert!(out.status.success(), "udevadm verify: {err}");
        }
    }
}

#[test]
fn socket_activation_serves_on_the_inherited_socket() {
    let dir = tempfile::tempdir().unwrap();
    let v = Vlib::default_fast(&dir.path().join("vlib"));
    let root = dir.path().join("rsmd");
    std::fs::create_dir_all(&root).unwrap();
    let config = root.join("rsmd.toml");
    std::fs::write(&config, vlib_config(&v.dir, "")).unwrap();
    let socket = root.join("activated.sock");
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .arg(crate::util::rsmd_bin())
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(root.join("state"))
        .arg("--socket")
        .arg(root.join("not-this-one.sock"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate is missing: run tools/ci-deps");
    // It announces the bound socket on stderr before waiting for the first connection.
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("Listening on") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut err, &mut line).unwrap() > 0, "systemd-socket-activate exited");
    }
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::stderr()));
    let mut raw = Raw::connect(&socket);
    let reply = raw.call("org.varlink.service.GetInfo", json!({}));
    assert_eq!(reply["parameters"]["vendor"], "rsmd");
    assert!(!root.join("not-this-one.sock").exists(), "rsmd must use the inherited socket");
    let _ = child.kill();
    let _ = child.wait();
}
