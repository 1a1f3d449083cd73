//! Benchmark for issue 17 (remote sessions): a GetObjectInformation round trip over `ssh HOST rsm bridge` beside,
//! from the same run and the same OpenSSH server on 127.0.0.1, a plain `ssh HOST true` (what starting a connection
//! costs) and a raw echo of a request-sized message through one ssh connection (what the transport costs), and the
//! same lookup on the local socket.
//!
//! `CARGO_TARGET_DIR=/work/target-bench cargo bench -j1 --bench remote`

#[path = "common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use rsmd::client::Session;

use common::{now, vlib_config, Samples, Vlib};

/// Round trips per scenario.
const CALLS: usize = 500;
/// Connection starts (`ssh HOST true`, remote session opens).
const STARTS: usize = 10;

fn row(what: &str, s: &Samples) {
    println!(
        "{:<52} {:>6} {:>9.3} {:>9.3} {:>9.3}",
        what,
        s.sorted.len(),
        common::ms(s.median()),
        common::ms(s.pct(99.0)),
        common::ms(s.max())
    );
}

fn main() {
    let dir = common::Scratch::new();
    let v = Vlib::default_fast(&dir.path().join("vlib"));
    let mut d = common::start_daemon(&dir.path().join("rsmd"), &vlib_config(&v.dir, ""));
    d.wait_ready(1);
    let Some(sshd) = common::sshd::sshd(&d.socket) else {
        println!("no sshd on this machine (tools/ci-deps installs openssh-server): nothing measured");
        return;
    };
    // The client library reads $RSM_SSH when it connects (set before this process starts a thread).
    std::env::set_var(rsmd::client::remote::SSH_ENV, &sshd.ssh);
    let ssh: Vec<String> = sshd.ssh.split_whitespace().map(str::to_owned).collect();
    println!("rsmd remote benchmark: OpenSSH on 127.0.0.1:{}, default vlib library, time scale 0", sshd.port);
    println!(
        "machine: {} CPUs, load average {} at start",
        std::thread::available_parallelism().map(std::num::NonZeroUsize::get).unwrap_or(1),
        common::loadavg()
    );
    println!("{:<52} {:>6} {:>9} {:>9} {:>9}", "scenario", "n", "p50 ms", "p99 ms", "max ms");

    // A connection's start: plain ssh running a command, and a remote session's open (ssh + bridge + OpenSession).
    let starts: Vec<Duration> = (0..STARTS)
        .map(|_| {
            let t = now();
            let ok = Command::new(&ssh[0]).args(&ssh[1..]).args(["-T", "echo", "true"]).stdin(Stdio::null()).status();
            assert!(ok.unwrap().success());
            t.elapsed()
        })
        .collect();
    row("baseline: ssh HOST true (connection start)", &Samples::new(starts));
    let opens: Vec<Duration> = (0..STARTS)
        .map(|_| {
            let t = now();
            let s = Session::open(Some("rsmdtest"), Some("bench"), 0).unwrap();
            let took = t.elapsed();
            s.close().unwrap();
            took
        })
        .collect();
    row("rsmd: remote OpenSession (ssh + rsm bridge)", &Samples::new(opens));

    // Round trips through one established connection.
    let local = Session::open_at(&d.socket, None, Some("bench"), 0).unwrap();
    let request =
        rsmd::proto::method::Method::GetObjectInformation { session: local.id().to_owned(), object: "ABC001L6".into() }
            .to_call()
            .encode()
            .len();
    let times: Vec<Duration> = (0..CALLS)
        .map(|_| {
            let t = now();
            local.get_object_information("ABC001L6").unwrap();
            t.elapsed()
        })
        .collect();
    row("rsmd: GetObjectInformation on the local socket", &Samples::new(times));
    let mut echo = Command::new(&ssh[0])
        .args(&ssh[1..])
        .args(["-T", "echo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut input, mut output) = (echo.stdin.take().unwrap(), echo.stdout.take().unwrap());
    let message = vec![b'x'; request];
    let mut back = vec![0u8; request];
    // The connection's start is the other baseline: one echo first, untimed.
    input.write_all(&message).unwrap();
    input.flush().unwrap();
    output.read_exact(&mut back).unwrap();
    let times: Vec<Duration> = (0..CALLS)
        .map(|_| {
            let t = now();
            input.write_all(&message).unwrap();
            input.flush().unwrap();
            output.read_exact(&mut back).unwrap();
            t.elapsed()
        })
        .collect();
    row(&format!("baseline: raw echo of {request} bytes through one ssh connection"), &Samples::new(times));
    drop(input);
    let _ = echo.wait();
    let remote = Session::open(Some("rsmdtest"), Some("bench"), 0).unwrap();
    remote.get_object_information("ABC001L6").unwrap();
    let times: Vec<Duration> = (0..CALLS)
        .map(|_| {
            let t = now();
            remote.get_object_information("ABC001L6").unwrap();
            t.elapsed()
        })
        .collect();
    row("rsmd: GetObjectInformation over ssh + rsm bridge", &Samples::new(times));
    remote.close().unwrap();
    println!("load average at end: {}", common::loadavg());
}
