//! Benchmark for issue "Sessions": GetObjectInformation latency and throughput with 1 and 64 clients, beside a raw
//! Unix-socket JSON echo server (baseline A) and the mtx-style status sequence sent straight to the emulated
//! changer (baseline B).
//!
//! `CARGO_TARGET_DIR=/work/target-bench cargo bench -j1 --bench sessions`

#[path = "common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::Duration;

use rsmd::client::Connection;
use rsmd::proto::method::Method;
use rsmd::proto::types::{EnumerateReply, ObjectReply, ObjectType};
use rsmd::scsi::cdb::{self, ReadElementStatus};
use rsmd::scsi::element::{allocation_for, ElementStatusReport, ElementType};
use serde_json::{json, Value};

use common::{now, vlib_config, Direct, Samples, Vlib};

/// GetObjectInformation calls per client (1 and 64 clients).
const GOI_CALLS: usize = 2000;
/// Status sequences (mtx-style or rsmd enumerate) per client: with 1 client, with 64 clients.
const STATUS_CALLS_1: usize = 500;
const STATUS_CALLS_64: usize = 20;
/// `rsm status --mtx` processes spawned one after another.
const RSM_SPAWNS: usize = 50;
/// Calls each client makes before the clock starts.
const WARMUP: usize = 5;

struct Row {
    scenario: String,
    clients: usize,
    samples: Samples,
    wall: Duration,
    errors: usize,
    /// CPU time rsmd spent during the timed calls, when it is rsmd being measured.
    rsmd_cpu: Option<Duration>,
}

/// Runs `clients` threads, each set up with `setup(i)` and then making `calls` timed calls of `call`; an `Err`
/// from `call` counts as an error (its time is not recorded).
fn run<C>(
    rsmd_pid: Option<i32>,
    scenario: &str,
    clients: usize,
    calls: usize,
    setup: impl Fn(usize) -> C + Sync,
    call: impl Fn(&mut C) -> Result<(), String> + Sync,
) -> Row {
    let barrier = Barrier::new(clients + 1);
    let (samples, wall, errors, rsmd_cpu) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let (barrier, setup, call) = (&barrier, &setup, &call);
                scope.spawn(move || {
                    let mut c = setup(i);
                    for _ in 0..WARMUP {
                        call(&mut c).unwrap_or_else(|e| panic!("warm-up call failed: {e}"));
                    }
                    barrier.wait();
                    let mut times = Vec::with_capacity(calls);
                    let mut errors = Vec::new();
                    for _ in 0..calls {
                        let t0 = now();
                        match call(&mut c) {
                            Ok(()) => times.push(t0.elapsed()),
                            Err(e) => errors.push(e),
                        }
                    }
                    (times, errors)
                })
            })
            .collect();
        barrier.wait();
        let cpu0 = rsmd_pid.map(common::cpu_ns);
        let t0 = now();
        let mut all = Vec::with_capacity(clients * calls);
        let mut errors = 0;
        for h in handles {
            let (times, errs) = h.join().unwrap();
            all.extend(times);
            if let Some(e) = errs.first() {
                eprintln!("{scenario}, {clients} clients: {} errors, first: {e}", errs.len());
            }
            errors += errs.len();
        }
        let wall = t0.elapsed();
        let cpu = rsmd_pid.zip(cpu0).map(|(pid, c0)| Duration::from_nanos(common::cpu_ns(pid).saturating_sub(c0)));
        (all, wall, errors, cpu)
    });
    Row { scenario: scenario.to_owned(), clients, samples: Samples::new(samples), wall, errors, rsmd_cpu }
}

/// A connection with its own session.
struct Client {
    conn: Connection,
    session: String,
}

fn client(socket: &Path) -> Client {
    let mut conn = Connection::connect(socket).unwrap();
    let session = common::open_session(&mut conn);
    Client { conn, session }
}

fn get_object_information(c: &mut Client, object: &str) -> Result<(), String> {
    let v = c
        .conn
        .call_method(&Method::GetObjectInformation { session: c.session.clone(), object: object.to_owned() })
        .map_err(|e| e.to_string())?;
    let _: ObjectReply = serde_json::from_value(v).map_err(|e| e.to_string())?;
    Ok(())
}

fn enumerate(c: &mut Client, object_type: ObjectType) -> Result<usize, String> {
    let v = c
        .conn
        .call_method(&Method::EnumerateObjects {
            session: c.session.clone(),
            container: None,
            object_type,
            after: None,
            limit: None,
        })
        .map_err(|e| e.to_string())?;
    let r: EnumerateReply = serde_json::from_value(v).map_err(|e| e.to_string())?;
    Ok(r.objects.len())
}

/// Baseline A: a std UnixListener, a thread per connection, NUL-terminated JSON in, parsed with serde_json, and a
/// reply serialised from `replies[object]` (the reply rsmd gave for that object) out.
fn echo_server(path: PathBuf, replies: Vec<(String, Value)>) {
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let replies = replies.clone();
            std::thread::spawn(move || echo_connection(stream, &replies));
        }
    });
}

fn echo_connection(mut stream: UnixStream, replies: &[(String, Value)]) {
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 64 * 1024];
    loop {
        while let Some(i) = buf.iter().position(|&b| b == 0) {
            let msg: Vec<u8> = buf.drain(..=i).collect();
            let call: Value = serde_json::from_slice(&msg[..i]).unwrap();
            let object = call["parameters"]["object"].as_str().unwrap_or("");
            let reply = replies.iter().find(|(o, _)| o == object).map_or(&replies[0].1, |(_, r)| r);
            let mut out = serde_json::to_vec(reply).unwrap();
            out.push(0);
            if stream.write_all(&out).is_err() {
                return;
            }
        }
        match stream.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

/// Baseline B: what `mtx status` sends, on a fresh connection to the changer each time.
fn mtx_status(changer: &Path) -> Result<(), String> {
    let mut d = Direct::connect(changer);
    d.run(cdb::inquiry(96));
    let ea = d.addresses();
    let mut full = 0;
    for ty in [ElementType::MediumTransport, ElementType::Storage, ElementType::ImportExport, ElementType::DataTransfer]
    {
        let Some(range) = ea.range(ty) else { continue };
        let r = d.run(cdb::read_element_status(&ReadElementStatus {
            element_type: ty,
            start: range.first,
            count: range.count,
            voltag: true,
            curdata: false,
            dvcid: false,
            alloc: allocation_for(range.count),
        }));
        let report = ElementStatusReport::parse(&r.data).map_err(|e| e.to_string())?;
        full += report.elements.iter().filter(|e| e.full).count();
    }
    if full == 17 {
        Ok(())
    } else {
        Err(format!("mtx-style status saw {full} full elements, not 17"))
    }
}

/// What rsmd serves for the same picture: storage slots, I/E ports and drives from its cache.
fn rsmd_status(c: &mut Client) -> Result<(), String> {
    let n = enumerate(c, ObjectType::StorageSlot)? + enumerate(c, ObjectType::IePort)?;
    let drives = enumerate(c, ObjectType::Drive)?;
    if n == 22 && drives == 4 {
        Ok(())
    } else {
        Err(format!("rsmd enumerated {n} slots and {drives} drives"))
    }
}

fn rsm_status(rsm: &str, socket: &Path) -> Result<(), String> {
    let out = std::process::Command::new(rsm)
        .args(["--socket", socket.to_str().unwrap(), "status", "--mtx"])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("rsm status --mtx: {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr)))
    }
}

fn main() {
    let dir = common::Scratch::new();
    let v = Vlib::default_fast(&dir.path().join("vlib"));
    let mut d = common::start_daemon(&dir.path().join("rsmd"), &vlib_config(&v.dir, ""));
    d.wait_ready(1);
    let socket = d.socket.clone();
    let changer = v.dir.join("changer.sock");

    // The objects asked about, and the replies rsmd gives for them (the echo server's replies).
    let mut probe = client(&socket);
    let drive = probe
        .conn
        .call_method(&Method::EnumerateObjects {
            session: probe.session.clone(),
            container: None,
            object_type: ObjectType::Drive,
            after: None,
            limit: None,
        })
        .unwrap()["objects"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cartridge = "ABC001L6".to_owned();
    let mut replies = Vec::new();
    println!("rsmd sessions benchmark: default vlib library (20 slots, 2 I/E, 4 drives, time_scale 0)");
    println!(
        "machine: {} CPUs available, load average {} at start; per-call wall-clock latency, {WARMUP} warm-up calls per client not counted",
        std::thread::available_parallelism().map(std::num::NonZeroUsize::get).unwrap_or(1),
        common::loadavg()
    );
    for object in [&cartridge, &drive] {
        let params = probe
            .conn
            .call_method(&Method::GetObjectInformation { session: probe.session.clone(), object: object.clone() })
            .unwrap();
        let call = Method::GetObjectInformation { session: probe.session.clone(), object: object.clone() }.to_call();
        let reply = json!({ "parameters": params });
        println!(
            "GetObjectInformation({object}): request {} bytes, reply {} bytes",
            call.encode().len(),
            serde_json::to_vec(&reply).unwrap().len() + 1
        );
        replies.push((object.clone(), reply));
    }
    let echo = dir.path().join("echo.sock");
    echo_server(echo.clone(), replies);

    let pid = d.pid();
    let mut rows = Vec::new();
    for clients in [1, 64] {
        for (what, object) in [("cartridge", &cartridge), ("drive", &drive)] {
            rows.push(run(
                Some(pid),
                &format!("rsmd GetObjectInformation({what})"),
                clients,
                GOI_CALLS,
                |_| client(&socket),
                |c| get_object_information(c, object),
            ));
            rows.push(run(
                None,
                &format!("A: echo server, {what}-size reply"),
                clients,
                GOI_CALLS,
                |_| client_to_echo(&echo),
                |c| get_object_information(c, object),
            ));
        }
    }
    for (clients, calls) in [(1, STATUS_CALLS_1), (64, STATUS_CALLS_64)] {
        rows.push(run(None, "B: mtx-style status on changer.sock", clients, calls, |_| (), |()| mtx_status(&changer)));
        rows.push(run(Some(pid), "rsmd Enumerate slots+IE+drives", clients, calls, |_| client(&socket), rsmd_status));
    }
    let rsm = env!("CARGO_BIN_EXE_rsm");
    rows.push(run(Some(pid), "rsm status --mtx (process)", 1, RSM_SPAWNS, |_| (), |()| rsm_status(rsm, &socket)));

    println!();
    println!(
        "{:<40} {:>7} {:>8} {:>9} {:>9} {:>9} {:>11} {:>6} {:>14}",
        "scenario", "clients", "calls", "min µs", "p50 µs", "p99 µs", "calls/s", "errors", "rsmd CPU µs/call"
    );
    for r in &rows {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        #[allow(clippy::cast_precision_loss)]
        let rate = r.samples.sorted.len() as f64 / r.wall.as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let cpu = r
            .rsmd_cpu
            .map_or_else(|| "-".to_owned(), |c| format!("{:.1}", us(c) / r.samples.sorted.len().max(1) as f64));
        println!(
            "{:<40} {:>7} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>11.0} {:>6} {:>14}",
            r.scenario,
            r.clients,
            r.samples.sorted.len(),
            us(r.samples.min()),
            us(r.samples.median()),
            us(r.samples.pct(99.0)),
            rate,
            r.errors,
            cpu
        );
    }
    println!();
    println!(
        "rsmd CPU µs/call = rsmd's CPU time (all threads, /proc/PID/task/*/schedstat) during the timed calls / calls."
    );
    println!("calls = timed calls over all clients; calls/s = calls / wall time from the start barrier to the last client done.");
    println!(
        "A: same client code (rsmd::client::Connection, typed decode) against a thread-per-connection std echo server"
    );
    println!("   that parses each request with serde_json and serialises rsmd's own reply for that object.");
    println!("B: INQUIRY, MODE SENSE(6) 1Dh, READ ELEMENT STATUS (VOLTAG) per element type, on a fresh connection to");
    println!("   vlib's changer.sock each call. Real mtx needs a /dev/sg node: this is the same command sequence over");
    println!("   vlib's socket. rsmd's counterpart: EnumerateObjects(storage_slot, ie_port, drive) from its cache.");
    println!("load average at end: {}", common::loadavg());
    assert!(d.child.try_wait().unwrap().is_none(), "rsmd exited during the benchmark");
    drop(probe);
}

fn client_to_echo(echo: &Path) -> Client {
    Client { conn: Connection::connect(echo).unwrap(), session: "echo".into() }
}
