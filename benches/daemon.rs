//! Benchmark for issue "The daemon": start-up and restart with a 50,000-cartridge library, and a full inventory
//! against the emulator's own scan cost.
//!
//! `CARGO_TARGET_DIR=/work/target-bench cargo bench -j1 --bench daemon`

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rsmd::client::Session;
use rsmd::model::{element_id, ElementKind, Guid};
use rsmd::proto::types::{InventoryMode, ObjectType};
use rsmd::scsi::cdb::{self, ReadElementStatus};
use rsmd::scsi::element::{allocation_for, chunks, ElementStatusReport, ElementType};
use serde_json::json;
use vlib::config::{generated_barcode, Cartridge, Location, Personality};

use common::{ms, now, rss_kib, Daemon, Direct, Samples, Vlib};

const SLOTS: u32 = 50_000;
const IE: u32 = 10;
const DRIVES: usize = 64;
const CHUNK: u16 = 1024;
/// Restarts measured in part 1.
const RESTARTS: usize = 3;
/// Inventories measured per time scale in part 2.
const INVENTORIES: usize = 3;
/// The time scale of the "realistic" scan (vlib's default [timing]: 1 ms per element with VOLTAG, 1 ms per
/// command).
const TIME_SCALE: f64 = 0.05;
/// GetObjectInformation calls per object in part 1b (bounded by ~3 s per object too).
const LOOKUP_CALLS: u32 = 2000;
/// Library sizes of part 3.
const SCALING: [u32; 3] = [5_000, 12_500, 25_000];

fn big_library(time_scale: f64) -> vlib::Config {
    library(SLOTS, time_scale)
}

fn library(slots: u32, time_scale: f64) -> vlib::Config {
    let mut c = vlib::Config::new(Personality::Generic, slots, IE, DRIVES);
    for n in 1..=slots {
        c.cartridges.push(Cartridge::new(&generated_barcode("L", n, "L8"), Location::Slot(n)));
    }
    c.time_scale = time_scale;
    c
}

fn rsmd_config(vlib_dir: &Path) -> String {
    format!("[[library]]\nname = \"big\"\nvlib = \"{}\"\nchunk = {CHUNK}\n", vlib_dir.display())
}

/// One start of rsmd: times from spawn to READY=1 and to the library's ready status, memory at ready.
struct Start {
    ready: Duration,
    lib_ready: Duration,
    rss_kib: u64,
    hwm_kib: u64,
}

fn start(root: &Path, config: &str) -> (Daemon, Start) {
    let t0 = now();
    let mut d = common::start_daemon(root, config);
    d.wait_notify(|m| m == "READY=1");
    let ready = t0.elapsed();
    d.wait_ready(1);
    let lib_ready = t0.elapsed();
    let (rss, hwm) = rss_kib(d.pid());
    (d, Start { ready, lib_ready, rss_kib: rss, hwm_kib: hwm })
}

fn stop(mut d: Daemon) -> Duration {
    let t0 = now();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let status = d.wait_exit();
    assert!(status.success(), "rsmd exited with {status:?}");
    t0.elapsed()
}

/// The READ ELEMENT STATUS commands rsmd sends for a whole scan: (type, start, count, dvcid).
fn scan_commands(d: &mut Direct) -> Vec<(ElementType, u16, u16, bool)> {
    let ea = d.addresses();
    let mut out = Vec::new();
    for ty in [ElementType::MediumTransport, ElementType::Storage, ElementType::ImportExport, ElementType::DataTransfer]
    {
        let Some(range) = ea.range(ty) else { continue };
        for (start, count) in chunks(range.first, range.count, CHUNK) {
            out.push((ty, start, count, ty == ElementType::DataTransfer));
        }
    }
    out
}

/// vlib's own cost of the scan: per command `scaled(command_ms + res_voltag_per_element_ms × count)`, rounded per
/// command as vlib rounds it.
fn vlib_floor(config: &vlib::Config, commands: &[(ElementType, u16, u16, bool)]) -> Duration {
    let t = &config.timing;
    let total: u64 = commands
        .iter()
        .map(|&(_, _, count, _)| config.scaled(t.command_ms + t.res_voltag_per_element_ms * u64::from(count)))
        .sum();
    Duration::from_millis(total)
}

/// A direct client's chunked scan: the same commands, one at a time; returns the number of full elements.
fn direct_scan(d: &mut Direct, commands: &[(ElementType, u16, u16, bool)]) -> usize {
    let mut full = 0;
    for &(element_type, start, count, dvcid) in commands {
        let r = d.run(cdb::read_element_status(&ReadElementStatus {
            element_type,
            start,
            count,
            voltag: true,
            curdata: false,
            dvcid,
            alloc: allocation_for(count),
        }));
        let report = ElementStatusReport::parse(&r.data).unwrap();
        assert!(!report.truncated);
        full += report.elements.iter().filter(|e| e.full).count();
    }
    full
}

/// Times `INVENTORIES` rsmd inventories of the library.
fn rsmd_inventories(d: &mut Daemon) -> Samples {
    let s = Session::open_at(&d.socket, None, Some("bench"), 0).unwrap();
    let lib = s.enumerate(None, ObjectType::Library).unwrap().remove(0).id;
    let mut notes = s.notifications(Some(ObjectType::LibRequest)).unwrap();
    // A round trip on the session so the notification subscription is registered before the first request.
    s.get_object_information(&lib).unwrap();
    let mut times = Vec::new();
    for i in 0..INVENTORIES {
        let t0 = now();
        let result = (|| -> Result<(), String> {
            let request = s.inventory(&lib, InventoryMode::Default).map_err(|e| format!("InventoryLibrary: {e:?}"))?;
            loop {
                let n = notes
                    .next()
                    .ok_or("notification stream ended")?
                    .map_err(|e| format!("notification stream: {e:?}"))?;
                let info =
                    s.get_object_information(&request).map_err(|e| format!("GetObjectInformation(request): {e:?}"))?;
                if n.object == request && info.state == "complete" {
                    return Ok(());
                }
            }
        })();
        if let Err(e) = result {
            println!("rsmd inventory {} FAILED after {:.1} ms: {e}", i + 1, ms(t0.elapsed()));
            report_daemon(d);
            break;
        }
        times.push(t0.elapsed());
    }
    Samples::new(times)
}

struct InventoryRow {
    slots: u32,
    scale: f64,
    rsmd: Samples,
    /// GetObjectInformation latencies of another client while the rsmd inventories ran.
    during: Samples,
    direct: Samples,
    floor: Duration,
    commands: usize,
}

fn inventory_row(v: &Vlib, d: &mut Daemon, config: &vlib::Config) -> InventoryRow {
    // A second client looks a cartridge up every 2 ms while the inventories run: how long does it wait?
    let stop = AtomicBool::new(false);
    let socket = d.socket.clone();
    let barcode = generated_barcode("L", 1, "L8");
    let (rsmd, during) = std::thread::scope(|scope| {
        let prober = scope.spawn(|| {
            let s = Session::open_at(&socket, None, Some("prober"), 0).unwrap();
            let mut times = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t0 = now();
                if s.get_object_information(&barcode).is_err() {
                    break;
                }
                times.push(t0.elapsed());
                // Paced, so the prober barely loads the daemon it measures.
                std::thread::sleep(Duration::from_millis(2));
            }
            Samples::new(times)
        });
        let rsmd = rsmd_inventories(d);
        stop.store(true, Ordering::Relaxed);
        (rsmd, prober.join().unwrap())
    });
    let mut direct = Direct::connect(&v.dir.join("changer.sock"));
    let commands = scan_commands(&mut direct);
    let mut times = Vec::new();
    for _ in 0..INVENTORIES {
        let t0 = now();
        let full = direct_scan(&mut direct, &commands);
        times.push(t0.elapsed());
        assert_eq!(full, config.storage_slots as usize, "direct scan saw {full} full elements");
    }
    InventoryRow {
        slots: config.storage_slots,
        scale: config.time_scale,
        rsmd,
        during,
        direct: Samples::new(times),
        floor: vlib_floor(config, &commands),
        commands: commands.len(),
    }
}

fn main() {
    let dir = common::Scratch::new();
    println!("rsmd daemon benchmark: {SLOTS} storage slots (all full), {IE} I/E slots, {DRIVES} drives, chunk {CHUNK}");
    println!(
        "machine: {} CPUs available, load average {} at start; times are wall clock from spawn (includes exec)",
        cpus(),
        common::loadavg()
    );

    // Part 1: start, restart, memory (time_scale 0).
    let config = big_library(0.0);
    let v = Vlib::start(&dir.path().join("vlib0"), config.clone());
    let root = dir.path().join("rsmd0");
    let cfg = rsmd_config(&v.dir);
    let (d, first) = start(&root, &cfg);
    println!();
    println!("== 1. start-up, time_scale 0 ==");
    println!(
        "first start (empty database): READY after {:.1} ms, library ready after {:.1} ms",
        ms(first.ready),
        ms(first.lib_ready)
    );
    let first_stop = stop(d);
    let mut restarts = Vec::new();
    let mut stops = vec![first_stop];
    let mut last = None;
    for i in 0..RESTARTS {
        let (d, s) = start(&root, &cfg);
        restarts.push(s);
        if i + 1 == RESTARTS {
            last = Some(d);
        } else {
            stops.push(stop(d));
        }
    }
    println!("{:<28} {:>10} {:>16} {:>12} {:>12}", "run", "READY ms", "lib ready ms", "VmRSS MiB", "VmHWM MiB");
    let row = |name: &str, s: &Start| {
        println!(
            "{:<28} {:>10.1} {:>16.1} {:>12.1} {:>12.1}",
            name,
            ms(s.ready),
            ms(s.lib_ready),
            kib_to_mib(s.rss_kib),
            kib_to_mib(s.hwm_kib)
        );
    };
    row("first start (builds db)", &first);
    for (i, s) in restarts.iter().enumerate() {
        row(&format!("restart {} (db from sled)", i + 1), s);
    }
    let ready = Samples::new(restarts.iter().map(|s| s.ready).collect());
    let lib_ready = Samples::new(restarts.iter().map(|s| s.lib_ready).collect());
    println!("restart READY=1 min/median/max: {}", ready.summary_ms());
    println!("restart library ready min/median/max: {}", lib_ready.summary_ms());
    let stops: Vec<String> = stops.iter().map(|d| format!("{:.1}", ms(*d))).collect();
    println!("SIGTERM to exit, ms, in order (after first start, restart 1, ...): {}", stops.join(", "));

    // Part 1b: lookups on the big inventory (the restarted daemon, library ready).
    println!();
    println!("== 1b. GetObjectInformation / EnumerateObjects on the 50,000-slot inventory, 1 client ==");
    lookups(last.as_mut().unwrap());
    if let Some(gate) = std::env::var_os("RSMD_BENCH_HOLD") {
        // Profiling: the restarted daemon is held until a byte can be read from this FIFO (attach to it meanwhile).
        let d = last.as_ref().unwrap();
        println!("holding rsmd pid {} (state {}) until {:?} is written", d.pid(), d.state.display(), gate);
        use std::io::Read;
        let _ = std::fs::File::open(gate).and_then(|mut f| f.read(&mut [0u8; 1]));
    }
    if std::env::var_os("RSMD_BENCH_QUICK").is_some() {
        // Parts 1 and 1b only (start-up, memory, lookups and listings).
        return;
    }

    // Part 2: inventory versus the emulator. time_scale 0 (pure overhead) on the daemon still running, then
    // the realistic scale on a fresh library and daemon.
    println!();
    println!("== 2. full inventory (InventoryLibrary → request complete) vs direct chunked READ ELEMENT STATUS ==");
    let mut d = last.take().unwrap();
    let mut rows = vec![inventory_row(&v, &mut d, &config)];
    drop(d);
    v.server.stop();
    let config = big_library(TIME_SCALE);
    let v = Vlib::start(&dir.path().join("vlib1"), config.clone());
    let (mut d, s) = start(&dir.path().join("rsmd1"), &rsmd_config(&v.dir));
    println!(
        "(time_scale {TIME_SCALE}: first start READY {:.1} ms, library ready {:.1} ms)",
        ms(s.ready),
        ms(s.lib_ready)
    );
    rows.push(inventory_row(&v, &mut d, &config));
    drop(d);
    println!(
        "{:<10} {:>9} {:>18} {:>22} {:>14} {:>14} {:>16}",
        "scale",
        "commands",
        "rsmd inventory ms",
        "direct chunked scan ms",
        "vlib floor ms",
        "overhead %",
        "vs direct %"
    );
    for r in &rows {
        let rsmd = ms(r.rsmd.median());
        let direct = ms(r.direct.median());
        let floor = ms(r.floor);
        let pct = |base: f64| if base > 0.0 { format!("{:.1}", (rsmd - base) / base * 100.0) } else { "n/a".into() };
        println!(
            "{:<10} {:>9} {:>18.1} {:>22.1} {:>14.1} {:>14} {:>16}",
            r.scale,
            r.commands,
            rsmd,
            direct,
            floor,
            pct(floor),
            pct(direct)
        );
    }
    for r in &rows {
        println!("scale {}: rsmd min/median/max {}; direct {}", r.scale, r.rsmd.summary_ms(), r.direct.summary_ms());
    }
    for r in &rows {
        println!(
            "scale {}: another client's GetObjectInformation(barcode) during the inventories: {} calls, p50 {:.1} µs, \
             p99 {:.1} ms, max {:.1} ms",
            r.scale,
            r.during.sorted.len(),
            r.during.median().as_secs_f64() * 1e6,
            ms(r.during.pct(99.0)),
            ms(r.during.max())
        );
    }
    // Part 3: how rsmd's inventory time grows with the library (time_scale 0: no emulated scan cost).
    println!();
    println!("== 3. inventory time vs library size, time_scale 0 ==");
    println!(
        "{:>8} {:>18} {:>22} {:>17} {:>24} {:>22}",
        "slots",
        "rsmd inventory ms",
        "direct chunked scan ms",
        "rsmd µs per slot",
        "Enumerate(slots) raw ms",
        "GOI(last drive id) µs"
    );
    for slots in SCALING {
        let config = library(slots, 0.0);
        let v = Vlib::start(&dir.path().join(format!("vlib-{slots}")), config.clone());
        let (mut d, _) = start(&dir.path().join(format!("rsmd-{slots}")), &rsmd_config(&v.dir));
        let r = inventory_row(&v, &mut d, &config);
        let (_, _, enumerations, _) = raw_enumerate_slots(&d);
        let goi = goi_last_drive(&d, 50);
        drop(d);
        v.server.stop();
        println!(
            "{:>8} {:>18.1} {:>22.1} {:>17.1} {:>24.1} {:>22.1}",
            r.slots,
            ms(r.rsmd.median()),
            ms(r.direct.median()),
            ms(r.rsmd.median()) * 1000.0 / f64::from(r.slots),
            ms(enumerations.median()),
            goi.as_secs_f64() * 1e6
        );
    }
    println!("(medians: {INVENTORIES} inventories, 3 enumerations, 50 lookups; 50,000 slots: see parts 1b and 2)");
    println!();
    for root in [root.as_path(), dir.path().join("rsmd1").as_path()] {
        let problems = common::log_problems(root);
        println!("rsmd log {}: {} warning/error lines", root.display(), problems.len());
        // With RSMD_BENCH_VERBOSE the daemons log (debug) every turn of their loop over 10 ms.
        let log = std::fs::read_to_string(root.join("rsmd.log")).unwrap_or_default();
        let slow: Vec<u64> =
            log.lines().filter_map(|l| l.split("slow turn: ").nth(1)?.split(' ').next()?.parse().ok()).collect();
        if !slow.is_empty() {
            println!("  turns over 10 ms: {} (longest {} ms)", slow.len(), slow.iter().max().unwrap_or(&0));
            // Each with the log line before it: what the loop was doing.
            let lines: Vec<&str> = log.lines().collect();
            for (i, l) in lines.iter().enumerate().filter(|(_, l)| l.contains("slow turn")) {
                println!("    {l}    after: {}", i.checked_sub(1).map_or("", |j| lines[j]));
            }
        }
        for l in problems.iter().take(5) {
            println!("  {l}");
        }
    }
    println!("load average at end: {}", common::loadavg());
    println!("overhead % = (rsmd median − vlib floor) / vlib floor; vs direct % = (rsmd − direct) / direct.");
    println!(
        "vlib floor = Σ per READ ELEMENT STATUS round((command_ms + res_voltag_per_element_ms × elements) × time_scale)"
    );
}

/// Latency of single lookups on the big inventory: by barcode, by slot id (first, last) and by drive id.
fn lookups(d: &mut Daemon) {
    let s = Session::open_at(&d.socket, None, Some("bench"), 0).unwrap();
    // The typed client first: its frame decoder refuses replies over MAX_MESSAGE.
    match s.enumerate(None, ObjectType::StorageSlot) {
        Ok(slots) => println!("client EnumerateObjects(storage_slot): {} objects", slots.len()),
        Err(e) => println!("client EnumerateObjects(storage_slot) FAILED: {e:?}"),
    }
    // Paged (the client library's way, 1000 a page): the first page's latency, and the whole listing.
    {
        let mut raw = common::Raw::connect(&d.socket);
        let session = raw.open_session();
        // Per page: when its first bytes (objects) arrive, and when all of it is in and parsed.
        let (first, page): (Vec<Duration>, Vec<Duration>) = (0..20)
            .map(|_| {
                let params = json!({"session": session, "object_type": "storage_slot", "limit": 1000});
                let (v, first, all) = call_timed(&mut raw, "io.rsmd.Ntms.EnumerateObjects", params);
                assert_eq!(v["parameters"]["objects"].as_array().map_or(0, Vec::len), 1000);
                (first, all)
            })
            .unzip();
        let order: Vec<String> = first.iter().take(3).map(|d| format!("{:.1}", ms(*d))).collect();
        println!("a page's first bytes, the first three calls in order: {} ms", order.join(", "));
        let whole: Vec<Duration> = (0..3)
            .map(|_| {
                let t0 = now();
                assert_eq!(s.enumerate(None, ObjectType::StorageSlot).map_or(0, |v| v.len()), SLOTS as usize);
                t0.elapsed()
            })
            .collect();
        println!(
            "paged EnumerateObjects(storage_slot, limit 1000): a page's first bytes {} (goal: first objects within \
             10 ms), the page in and parsed {}; client listing of all {SLOTS} in pages {}",
            Samples::new(first).summary_ms(),
            Samples::new(page).summary_ms(),
            Samples::new(whole).summary_ms()
        );
    }
    // Then raw, in one reply: how big the reply is and how long it takes.
    let (objects, bytes, enumerations, firsts) = raw_enumerate_slots(d);
    println!(
        "raw EnumerateObjects(storage_slot): {objects} objects, reply ≈ {:.1} MiB (MAX_MESSAGE is {} MiB); first \
         bytes {}, all in and parsed {}",
        kib_to_mib(bytes as u64 / 1024),
        rsmd::proto::MAX_MESSAGE >> 20,
        firsts.summary_ms(),
        enumerations.summary_ms()
    );
    // The failed call broke the session's only connection; whether the session survives that is reported.
    let s = match s.enumerate(None, ObjectType::Library) {
        Ok(_) => s,
        Err(e) => {
            println!("the same Session afterwards: {e:?}; opening a new session");
            Session::open_at(&d.socket, None, Some("bench"), 0).unwrap()
        }
    };
    let library: Guid = s.enumerate(None, ObjectType::Library).unwrap().remove(0).id.parse().unwrap();
    let first_storage: u16 = 1000; // the Generic personality's first storage address
    let last_storage = u16::try_from(u32::from(first_storage) + SLOTS - 1).unwrap();
    let drives = s.enumerate(None, ObjectType::Drive).unwrap();
    let objects = [
        ("cartridge barcode", generated_barcode("L", 1, "L8")),
        ("cartridge barcode (last)", generated_barcode("L", SLOTS, "L8")),
        ("first storage slot id", element_id(library, ElementKind::Storage, first_storage).to_string()),
        ("last storage slot id", element_id(library, ElementKind::Storage, last_storage).to_string()),
        ("drive 0 id", drives.first().unwrap().id.clone()),
        ("drive 63 id", drives.last().unwrap().id.clone()),
    ];
    println!(
        "{:<26} {:>6} {:>10} {:>10} {:>10} {:>10} {:>17}",
        "GetObjectInformation on", "calls", "min µs", "p50 µs", "p99 µs", "calls/s", "rsmd CPU µs/call"
    );
    for (what, object) in &objects {
        let mut times = Vec::new();
        let t_all = now();
        let mut calls = 0;
        let cpu0 = common::cpu_ns(d.pid());
        // At most LOOKUP_CALLS calls or about 3 s, whichever comes first.
        while calls < LOOKUP_CALLS && t_all.elapsed() < Duration::from_secs(3) {
            let t0 = now();
            if let Err(e) = s.get_object_information(object) {
                println!(
                    "GetObjectInformation({what}) call {} FAILED after {:.1} ms: {e:?}",
                    calls + 1,
                    ms(t0.elapsed())
                );
                report_daemon(d);
                return;
            }
            times.push(t0.elapsed());
            calls += 1;
        }
        let wall = t_all.elapsed();
        #[allow(clippy::cast_precision_loss)]
        let cpu = common::cpu_ns(d.pid()).saturating_sub(cpu0) as f64 / 1000.0 / f64::from(calls.max(1));
        let samples = Samples::new(times);
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "{:<26} {:>6} {:>10.1} {:>10.1} {:>10.1} {:>10.0} {:>17.1}",
            what,
            calls,
            us(samples.min()),
            us(samples.median()),
            us(samples.pct(99.0)),
            f64::from(calls) / wall.as_secs_f64(),
            cpu
        );
    }
}

/// EnumerateObjects(storage_slot) on a raw connection (no reply size limit), 3 times: (objects, reply bytes, times).
fn raw_enumerate_slots(d: &Daemon) -> (usize, usize, Samples, Samples) {
    let mut raw = common::Raw::connect(&d.socket);
    let session = raw.open_session();
    let (mut enumerations, mut firsts) = (Vec::new(), Vec::new());
    let (mut objects, mut bytes) = (0, 0);
    for _ in 0..3 {
        let params = json!({"session": session, "object_type": "storage_slot"});
        let (v, first, all) = call_timed(&mut raw, "io.rsmd.Ntms.EnumerateObjects", params);
        enumerations.push(all);
        firsts.push(first);
        objects = v["parameters"]["objects"].as_array().map_or(0, Vec::len);
        bytes = serde_json::to_vec(&v).unwrap().len();
    }
    (objects, bytes, Samples::new(enumerations), Samples::new(firsts))
}

/// One call on a raw connection: the reply, when its first bytes arrived, and when all of it was in and parsed.
fn call_timed(
    raw: &mut common::Raw,
    method: &str,
    params: serde_json::Value,
) -> (serde_json::Value, Duration, Duration) {
    use std::io::Read;
    // The buffer before the clock starts: its first use faults its pages in (the bench's cost, not rsmd's).
    let (mut bytes, mut buf, mut first) = (Vec::new(), vec![1u8; 1 << 20], None);
    let request = serde_json::to_vec(&json!({"method": method, "parameters": params})).unwrap();
    let t0 = now();
    raw.send_bytes(&[request.as_slice(), b"\0"].concat());
    while bytes.last() != Some(&0) {
        let n = raw.stream.read(&mut buf).unwrap();
        assert!(n > 0, "rsmd closed the connection");
        first.get_or_insert_with(|| t0.elapsed());
        bytes.extend_from_slice(&buf[..n]);
    }
    let v = serde_json::from_slice(&bytes[..bytes.len() - 1]).unwrap();
    (v, first.unwrap_or_default(), t0.elapsed())
}

/// Median GetObjectInformation latency on the last drive's id (`calls` calls).
fn goi_last_drive(d: &Daemon, calls: usize) -> Duration {
    let s = Session::open_at(&d.socket, None, Some("bench"), 0).unwrap();
    let drive = s.enumerate(None, ObjectType::Drive).unwrap().pop().unwrap().id;
    let times = (0..calls)
        .map(|_| {
            let t0 = now();
            s.get_object_information(&drive).unwrap();
            t0.elapsed()
        })
        .collect();
    Samples::new(times).median()
}

/// Whether rsmd is still running, and the end of its log.
fn report_daemon(d: &mut Daemon) {
    println!("rsmd process: {:?} (None = still running)", d.child.try_wait());
    let root = d.socket.parent().unwrap().to_owned();
    let log = std::fs::read_to_string(root.join("rsmd.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    for l in &lines[lines.len().saturating_sub(8)..] {
        println!("  rsmd.log: {l}");
    }
}

fn kib_to_mib(k: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let m = k as f64 / 1024.0;
    m
}

fn cpus() -> usize {
    std::thread::available_parallelism().map(std::num::NonZeroUsize::get).unwrap_or(1)
}
