//! Benchmark for issue 12 (media lifecycle): AllocateMedia + DeallocateMedia with 50,000 cartridges in 20
//! application pools, from 1 and 64 clients, beside a raw Unix-socket JSON echo server that answers the same
//! replies (same client code, same run); then the daemon's RSS with that database and its time to READY=1 on a
//! restart.
//!
//! `cargo bench --bench pools`

#[path = "common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::Duration;

use rsmd::client::{Connection, Session};
use rsmd::proto::method::Method;
use rsmd::proto::types::{AllocateReply, ObjectChanges, OpenSessionReply, PoolAction};
use rsmd::proto::PROTOCOL_VERSION;
use serde_json::{json, Value};
use vlib::config::{generated_barcode, Cartridge, Location, Personality};

use common::{loadavg, ms, now, rss_kib, Daemon, Samples, Scratch, Vlib};

const SLOTS: u32 = 50_000;
const POOLS: usize = 20;
/// Allocate + deallocate pairs per client: with 1 client, with 64.
const PAIRS_1: usize = 2000;
const PAIRS_64: usize = 200;
const WARMUP: usize = 5;

fn pool_name(i: usize) -> String {
    format!("App{i:02}")
}

/// One connection with its own session.
struct Client {
    conn: Connection,
    session: String,
    pool: String,
}

fn client(socket: &Path, pool: String) -> Client {
    let mut conn = Connection::connect(socket).unwrap();
    let open = Method::OpenSession {
        server: None,
        application: Some("bench".into()),
        options: 0,
        version: Some(PROTOCOL_VERSION),
    };
    let reply: OpenSessionReply = serde_json::from_value(conn.call_method(&open).unwrap()).unwrap();
    Client { conn, session: reply.session, pool }
}

/// One allocation and its deallocation, each timed.
fn pair(c: &mut Client) -> Result<(Duration, Duration), String> {
    let t0 = now();
    let allocate = Method::AllocateMedia {
        session: c.session.clone(),
        pool: c.pool.clone(),
        media: None,
        new: false,
        error_if_unavailable: true,
        timeout_ms: None,
    };
    let v = c.conn.call_method(&allocate).map_err(|e| e.to_string())?;
    let a: AllocateReply = serde_json::from_value(v).map_err(|e| e.to_string())?;
    let t1 = now();
    let deallocate = Method::DeallocateMedia { session: c.session.clone(), logical_media: a.logical_media };
    c.conn.call_method(&deallocate).map_err(|e| e.to_string())?;
    Ok((t1 - t0, t1.elapsed()))
}

struct Row {
    what: String,
    clients: usize,
    allocate: Samples,
    deallocate: Samples,
    wall: Duration,
    cpu: Option<Duration>,
}

/// `clients` threads of `pairs` timed pairs each, client `i` in pool `i % POOLS`.
fn run(what: &str, socket: &Path, rsmd: Option<i32>, clients: usize, pairs: usize) -> Row {
    let barrier = Barrier::new(clients + 1);
    let (a, d, wall, cpu) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mut c = client(socket, pool_name(i % POOLS));
                    for _ in 0..WARMUP {
                        pair(&mut c).unwrap_or_else(|e| panic!("warm-up failed: {e}"));
                    }
                    barrier.wait();
                    let (mut a, mut d) = (Vec::with_capacity(pairs), Vec::with_capacity(pairs));
                    for _ in 0..pairs {
                        let (x, y) = pair(&mut c).unwrap_or_else(|e| panic!("{e}"));
                        a.push(x);
                        d.push(y);
                    }
                    (a, d)
                })
            })
            .collect();
        barrier.wait();
        let cpu0 = rsmd.map(common::cpu_ns);
        let t0 = now();
        let (mut a, mut d) = (Vec::new(), Vec::new());
        for h in handles {
            let (x, y) = h.join().unwrap();
            a.extend(x);
            d.extend(y);
        }
        let wall = t0.elapsed();
        let cpu = rsmd.zip(cpu0).map(|(pid, c0)| Duration::from_nanos(common::cpu_ns(pid).saturating_sub(c0)));
        (a, d, wall, cpu)
    });
    Row { what: what.into(), clients, allocate: Samples::new(a), deallocate: Samples::new(d), wall, cpu }
}

/// Baseline: a thread per connection, NUL-terminated JSON in (parsed), the reply rsmd gave for that method out.
fn echo_server(path: PathBuf, open: Value, allocate: Value) {
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (open, allocate) = (open.clone(), allocate.clone());
            std::thread::spawn(move || echo_connection(stream, &open, &allocate));
        }
    });
}

fn echo_connection(mut stream: UnixStream, open: &Value, allocate: &Value) {
    let (mut buf, mut tmp) = (Vec::new(), vec![0u8; 64 * 1024]);
    let empty = json!({"parameters": {}});
    loop {
        while let Some(i) = buf.iter().position(|&b| b == 0) {
            let msg: Vec<u8> = buf.drain(..=i).collect();
            let call: Value = serde_json::from_slice(&msg[..i]).unwrap();
            let method = call["method"].as_str().unwrap_or("");
            let reply = match method.rsplit('.').next() {
                Some("OpenSession") => open,
                Some("AllocateMedia") => allocate,
                _ => &empty,
            };
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

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn print(rows: &[Row]) {
    println!(
        "{:<34} {:>7} {:>8} {:>11} {:>11} {:>11} {:>11} {:>10} {:>16}",
        "scenario",
        "clients",
        "pairs",
        "alloc p50µs",
        "alloc p99µs",
        "deall p50µs",
        "deall p99µs",
        "pairs/s",
        "rsmd CPU µs/pair"
    );
    for r in rows {
        let n = r.allocate.sorted.len();
        #[allow(clippy::cast_precision_loss)]
        let rate = n as f64 / r.wall.as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let cpu = r.cpu.map_or_else(|| "-".into(), |c| format!("{:.1}", us(c) / n as f64));
        println!(
            "{:<34} {:>7} {:>8} {:>11.1} {:>11.1} {:>11.1} {:>11.1} {:>10.0} {:>16}",
            r.what,
            r.clients,
            n,
            us(r.allocate.median()),
            us(r.allocate.pct(99.0)),
            us(r.deallocate.median()),
            us(r.deallocate.pct(99.0)),
            rate,
            cpu
        );
    }
}

fn main() {
    let scratch = Scratch::new();
    let dir = scratch.path();
    println!("pools bench: {SLOTS} cartridges in {POOLS} application pools; load average {} at start", loadavg());
    let mut c = vlib::Config::new(Personality::Generic, SLOTS, 10, 4);
    for n in 1..=SLOTS {
        c.cartridges.push(Cartridge::new(&generated_barcode("L", n, "L8"), Location::Slot(n)));
    }
    c.time_scale = 0.0;
    let v = Vlib::start(&dir.join("vlib"), c);
    let config = format!("[[library]]\nname = \"big\"\nvlib = \"{}\"\nchunk = 1024\n", v.dir.display());
    let root = dir.join("rsmd");
    let mut d = common::start_daemon(&root, &config);
    d.wait_ready(1);
    let (rss, hwm) = rss_kib(d.pid());
    println!("first start, library ready: rsmd VmRSS {:.1} MiB, VmHWM {:.1} MiB", kib_mib(rss), kib_mib(hwm));

    // 20 pools, 2,500 cartridges each.
    let t0 = now();
    let admin = Session::open_at(&d.socket, None, Some("bench"), 0).unwrap();
    for i in 0..POOLS {
        admin.create_pool(&pool_name(i), None, PoolAction::CreateNew).unwrap();
    }
    let per = usize::try_from(SLOTS).unwrap() / POOLS;
    std::thread::scope(|scope| {
        for t in 0..4 {
            let socket = d.socket.clone();
            scope.spawn(move || {
                let s = Session::open_at(&socket, None, Some("bench"), 0).unwrap();
                for n in (1..=usize::try_from(SLOTS).unwrap()).filter(|n| n % 4 == t) {
                    let barcode = generated_barcode("L", u32::try_from(n).unwrap(), "L8");
                    s.move_to_pool(&barcode, &pool_name((n - 1) / per)).unwrap();
                }
            });
        }
    });
    // Policy changes too, so the pools look like an application's.
    for i in 0..POOLS {
        let changes = ObjectChanges { max_allocations: Some(1_000_000), ..ObjectChanges::default() };
        admin.set_object_information(&pool_name(i), None, changes).unwrap();
    }
    let (rss, hwm) = rss_kib(d.pid());
    println!(
        "set-up: {POOLS} pools created, {SLOTS} MoveToMediaPool calls from 4 clients in {:.0} ms; rsmd VmRSS {:.1} \
         MiB, VmHWM {:.1} MiB",
        ms(t0.elapsed()),
        kib_mib(rss),
        kib_mib(hwm)
    );

    if let Some(gate) = std::env::var_os("RSMD_BENCH_HOLD") {
        // Profiling: the daemon is held after the set-up until a byte can be read from this FIFO.
        println!("holding rsmd pid {} until {:?} is written", d.pid(), gate);
        use std::io::Read;
        let _ = std::fs::File::open(gate).and_then(|mut f| f.read(&mut [0u8; 1]));
    }
    // The replies the echo baseline sends: rsmd's own.
    let mut probe = client(&d.socket, pool_name(0));
    let open = json!({"parameters": {"session": probe.session, "version": PROTOCOL_VERSION}});
    let allocate = Method::AllocateMedia {
        session: probe.session.clone(),
        pool: pool_name(0),
        media: None,
        new: false,
        error_if_unavailable: true,
        timeout_ms: None,
    };
    let sample = probe.conn.call_method(&allocate).unwrap();
    let lmid = sample["logical_media"].as_str().unwrap().to_owned();
    probe.conn.call_method(&Method::DeallocateMedia { session: probe.session.clone(), logical_media: lmid }).unwrap();
    let allocate_reply = json!({ "parameters": sample });
    println!("AllocateMedia reply: {} bytes", serde_json::to_vec(&allocate_reply).unwrap().len());
    let echo = dir.join("echo.sock");
    echo_server(echo.clone(), open, allocate_reply);

    let pid = d.pid();
    let one = run("rsmd allocate + deallocate", &d.socket, Some(pid), 1, PAIRS_1);
    let (rss, hwm) = rss_kib(pid);
    println!("after {PAIRS_1} pairs from 1 client: rsmd VmRSS {:.1} MiB, VmHWM {:.1} MiB", kib_mib(rss), kib_mib(hwm));
    let rows = vec![
        one,
        run("echo server, same replies", &echo, None, 1, PAIRS_1),
        run("rsmd allocate + deallocate", &d.socket, Some(pid), 64, PAIRS_64),
        run("echo server, same replies", &echo, None, 64, PAIRS_64),
    ];
    print(&rows);
    let (rss, hwm) = rss_kib(pid);
    println!("rsmd after the runs: VmRSS {:.1} MiB, VmHWM {:.1} MiB", kib_mib(rss), kib_mib(hwm));

    // Restart with that database.
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(d.wait_exit().success());
    let mut readies = Vec::new();
    let mut last: Option<Daemon> = None;
    for _ in 0..3 {
        let t0 = now();
        let mut d = common::start_daemon(&root, &config);
        d.wait_notify(|m| m == "READY=1");
        readies.push(t0.elapsed());
        d.wait_ready(1);
        let (rss, hwm) = rss_kib(d.pid());
        println!(
            "restart: READY=1 after {:.1} ms; library ready; VmRSS {:.1} MiB, VmHWM {:.1} MiB",
            ms(readies[readies.len() - 1]),
            kib_mib(rss),
            kib_mib(hwm)
        );
        d.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(d.wait_exit().success());
        last = Some(d);
    }
    drop(last);
    println!("restart READY=1 min/median/max: {}", Samples::new(readies).summary_ms());
    println!("load average at end: {}", loadavg());
    for line in common::log_problems(&root) {
        println!("rsmd log: {line}");
    }
}

#[allow(clippy::cast_precision_loss)]
fn kib_mib(k: u64) -> f64 {
    k as f64 / 1024.0
}
