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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::Duration;

use mio::net::UnixStream as MioStream;
use mio::{Events, Interest, Poll, Token};

use rsmd::client::{Connection, Session};
use rsmd::proto::method::Method;
use rsmd::proto::types::MountFlags;
use rsmd::proto::types::{EnumerateReply, ObjectReply, ObjectType};
use rsmd::proto::DismountTarget;
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
/// The robot's time scale for the "moves in flight" run.
const MOVES_SCALE: f64 = 0.05;
/// Rounds the single-client lookups are measured in, rsmd and the echo in turn.
const ROUNDS: usize = 10;
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
    // 1 client: rounds of rsmd and the echo in turn, so that both see the same machine (its wall clock swings by
    // 2x between minutes here); each round's p50s give a ratio.
    let mut ratios = Vec::new();
    for (what, object) in [("cartridge", &cartridge), ("drive", &drive)] {
        let (mut ours, mut echos) = (Vec::new(), Vec::new());
        let mut round_ratios = Vec::new();
        for _ in 0..ROUNDS {
            let a =
                run(Some(pid), "", 1, GOI_CALLS / ROUNDS, |_| client(&socket), |c| get_object_information(c, object));
            let b =
                run(None, "", 1, GOI_CALLS / ROUNDS, |_| client_to_echo(&echo), |c| get_object_information(c, object));
            round_ratios.push(a.samples.median().as_secs_f64() / b.samples.median().as_secs_f64());
            ours.push(a);
            echos.push(b);
        }
        round_ratios.sort_by(f64::total_cmp);
        ratios.push((what, round_ratios));
        for (name, parts) in [
            (format!("rsmd GetObjectInformation({what})"), ours),
            (format!("A: echo server, {what}-size reply"), echos),
        ] {
            let cpu = parts.iter().filter_map(|r| r.rsmd_cpu).sum::<Duration>();
            rows.push(Row {
                scenario: name,
                clients: 1,
                samples: Samples::new(parts.iter().flat_map(|r| r.samples.sorted.iter().copied()).collect()),
                wall: parts.iter().map(|r| r.wall).sum(),
                errors: parts.iter().map(|r| r.errors).sum(),
                rsmd_cpu: (cpu > Duration::ZERO).then_some(cpu),
            });
        }
    }
    for clients in [64] {
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
    // 64 connections from one client thread: rsmd, the echo, and rsmd while two clients mount and dismount in a
    // loop (robot moves in flight).
    let goi = |s: &mut std::os::unix::net::UnixStream| raw_session_call(s, &cartridge);
    rows.push(run_multiplexed(Some(pid), "rsmd GOI(cartridge), 1 thread", &socket, 64, GOI_CALLS, goi));
    rows.push(run_multiplexed(None, "A: echo, 1 thread", &echo, 64, GOI_CALLS, |_| {
        Method::GetObjectInformation { session: "echo".into(), object: cartridge.clone() }.to_call().encode()
    }));
    // The same library at time scale 0.05 (a move takes a few hundred ms): two clients keep moves in flight.
    let mut slow = vlib::Config::default_library();
    slow.dvcid = true;
    slow.time_scale = MOVES_SCALE;
    let v2 = Vlib::start(&dir.path().join("vlib-slow"), slow);
    let mut d2 = common::start_daemon(&dir.path().join("rsmd-slow"), &vlib_config(&v2.dir, ""));
    d2.wait_ready(1);
    let mut moves = Vec::new();
    for (name, d, socket, robot) in [
        ("rsmd GOI(cartridge), moves in flight", d2.pid(), &d2.socket, &v2),
        ("rsmd GOI(cartridge), mount flood", pid, &socket, &v),
    ] {
        let robot_moves = || robot.server.snapshot().robot_log.len();
        let (stop, cycles) = (AtomicBool::new(false), AtomicUsize::new(0));
        let goi = |s: &mut std::os::unix::net::UnixStream| raw_session_call(s, &cartridge);
        let (row, during) = std::thread::scope(|scope| {
            scope.spawn(|| movers(socket, &["ABC010L6", "ABC011L6"], &stop, &cycles));
            // Moves under way before the clock starts.
            while cycles.load(Ordering::Relaxed) < 2 {
                std::thread::yield_now();
            }
            let before = robot_moves();
            let row = run_multiplexed(Some(d), name, socket, 64, GOI_CALLS, goi);
            let during = robot_moves() - before;
            stop.store(true, Ordering::Relaxed);
            (row, during)
        });
        moves.push((name, during));
        rows.push(row);
    }
    drop(d2);
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
    for (what, r) in &ratios {
        let shown: Vec<String> = r.iter().map(|x| format!("{x:.2}")).collect();
        println!(
            "1 client, {what}: rsmd p50 / echo p50 per round ({ROUNDS} rounds of {} calls each, in turn): median {:.2}x; \
             sorted: {}",
            GOI_CALLS / ROUNDS,
            r[r.len() / 2],
            shown.join(" ")
        );
    }
    let tp = |name: &str| {
        rows.iter()
            .find(|r| r.scenario == name)
            .map_or(f64::NAN, |r| r.samples.sorted.len() as f64 / r.wall.as_secs_f64())
    };
    let echo_rate = tp("A: echo, 1 thread");
    println!(
        "64 connections, 1 client thread: rsmd {:.2}x the echo's calls/s",
        tp("rsmd GOI(cartridge), 1 thread") / echo_rate
    );
    for (name, during) in &moves {
        println!("  {name}: {:.2}x the echo's calls/s ({during} robot moves meanwhile)", tp(name) / echo_rate);
    }
    println!(
        "  moves in flight: a second daemon on the same library at time scale {MOVES_SCALE}, two clients mounting and \
         dismounting in a loop; mount flood: the same on this daemon's library at time scale 0 (no robot time)"
    );
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

/// Calls on `conns` connections driven by one client thread (poll): each connection keeps one call outstanding
/// (`request(i)`, framed) and sends the next when its reply is in. The latency of a call is from its send to its
/// reply. Unlike [`run`]'s thread per client, whose 64 threads on a 2-core machine measure mostly their own
/// scheduling, this measures the server (the way load generators such as wrk do).
fn run_multiplexed(
    rsmd_pid: Option<i32>,
    scenario: &str,
    socket: &Path,
    conns: usize,
    calls: usize,
    request: impl Fn(&mut std::os::unix::net::UnixStream) -> Vec<u8>,
) -> Row {
    let mut poll = Poll::new().unwrap();
    let mut streams = Vec::new();
    let mut requests = Vec::new();
    for i in 0..conns {
        let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
        requests.push(request(&mut s));
        s.set_nonblocking(true).unwrap();
        let mut s = MioStream::from_std(s);
        poll.registry().register(&mut s, Token(i), Interest::READABLE).unwrap();
        streams.push(s);
    }
    let mut sent_at = vec![now(); conns];
    let mut left = vec![calls + WARMUP; conns];
    let mut times = Vec::with_capacity(conns * calls);
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = Events::with_capacity(conns);
    let cpu0 = rsmd_pid.map(common::cpu_ns);
    let t0 = now();
    for i in 0..conns {
        sent_at[i] = now();
        streams[i].write_all(&requests[i]).unwrap();
    }
    let mut open = conns;
    while open > 0 {
        poll.poll(&mut events, Some(Duration::from_secs(30))).unwrap();
        assert!(!events.is_empty(), "{scenario}: no reply within 30 s");
        for ev in &events {
            let i = ev.token().0;
            loop {
                match streams[i].read(&mut buf) {
                    Ok(0) => panic!("{scenario}: connection {i} closed"),
                    Ok(n) => {
                        // One outstanding call: a NUL ends its reply.
                        if buf[..n].contains(&0) {
                            let took = sent_at[i].elapsed();
                            left[i] -= 1;
                            if left[i] < calls {
                                times.push(took);
                            }
                            if left[i] == 0 {
                                open -= 1;
                            } else {
                                sent_at[i] = now();
                                streams[i].write_all(&requests[i]).unwrap();
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{scenario}: {e}"),
                }
            }
        }
    }
    let wall = t0.elapsed();
    let rsmd_cpu = rsmd_pid.zip(cpu0).map(|(pid, c0)| Duration::from_nanos(common::cpu_ns(pid).saturating_sub(c0)));
    Row { scenario: scenario.to_owned(), clients: conns, samples: Samples::new(times), wall, errors: 0, rsmd_cpu }
}

/// Opens a session on a raw connection (blocking) and returns the framed GetObjectInformation of `object` in it.
fn raw_session_call(s: &mut std::os::unix::net::UnixStream, object: &str) -> Vec<u8> {
    let open = Method::OpenSession {
        server: None,
        application: Some("bench".into()),
        options: 0,
        version: Some(rsmd::proto::PROTOCOL_VERSION),
    };
    s.write_all(&open.to_call().encode()).unwrap();
    let mut reply = Vec::new();
    let mut b = [0u8; 4096];
    while !reply.contains(&0) {
        let n = s.read(&mut b).unwrap();
        assert!(n > 0, "rsmd closed the connection");
        reply.extend_from_slice(&b[..n]);
    }
    let v: Value = serde_json::from_slice(&reply[..reply.len() - 1]).unwrap();
    let session = v["parameters"]["session"].as_str().unwrap_or_else(|| panic!("OpenSession: {v}")).to_owned();
    Method::GetObjectInformation { session, object: object.to_owned() }.to_call().encode()
}

/// Robot moves in flight: `barcodes.len()` clients each mount and dismount their cartridge in a loop until `stop`;
/// cycles done are counted in `cycles`.
fn movers(socket: &Path, barcodes: &[&str], stop: &AtomicBool, cycles: &AtomicUsize) {
    std::thread::scope(|scope| {
        for b in barcodes {
            scope.spawn(move || {
                let s = Session::open_at(socket, None, Some("mover"), 0).unwrap();
                let flags = MountFlags { read: true, ..MountFlags::default() };
                while !stop.load(Ordering::Relaxed) {
                    s.mount(&[b], None, flags, 0, None).unwrap_or_else(|e| panic!("mount {b}: {e:?}"));
                    s.dismount(DismountTarget::Media((*b).to_owned()), false)
                        .unwrap_or_else(|e| panic!("dismount {b}: {e:?}"));
                    cycles.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
}
