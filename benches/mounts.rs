//! Mount scheduling benchmark: K clients mount, hold and dismount K cartridges over D drives of a vlib library
//! with realistic (scaled) timings, through the real rsmd daemon; beside it the robot-bound lower bound and an
//! mtx-changer style serial baseline driven directly over vlib's device sockets.
//!
//! Run: `cargo bench --bench mounts`. `RSMD_BENCH_SCALE` overrides the time scale (default 0.05);
//! `RSMD_BENCH_NO_SERIAL=1` skips the (slow) serial baseline.
//!
//! The reference is the optimal makespan of the ideal model (`rsmd::changer::bound::optimum`: exhaustive search
//! over the robot's choices with no polling, protocol or command latency), printed beside the closed-form bounds
//! it improves on (robot-bound, drive-bound) and two list schedules (mount first, which is rsmd's policy, and out
//! first). rsmd's makespan is compared against the optimum: no scheduler can do better on these timings.

#[path = "common/mod.rs"]
mod common;

use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rsmd::client::Session;
use rsmd::emu::EmuTransport;
use rsmd::proto::types::MountFlags;
use rsmd::proto::DismountTarget;
use rsmd::scsi::cdb;
use rsmd::transport::{Response, Transport};

/// Default vlib time scale: 8 s robot move → 400 ms, 20 s load → 1 s, 15 s unload → 750 ms.
const DEFAULT_SCALE: f64 = 0.05;
/// A run that takes longer than this is reported as a hang.
const HANG: Duration = Duration::from_secs(300);
/// mtx-changer's wait_for_drive sleeps 1 s between `mt status` calls; scaled like everything else.
const MTX_POLL_UNSCALED_MS: u64 = 1000;

use common::now;

fn scale() -> f64 {
    std::env::var("RSMD_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SCALE)
}

/// The default library (16 cartridges, 4 drives) for K <= 16 over 4 drives; else a tgt-like library with K
/// cartridges ABC001L6.. in slots 1000.. and D drives at 500...
fn vlib_config(scale: f64, k: usize, d: usize) -> vlib::Config {
    let mut c = if k <= 16 && d == 4 {
        vlib::Config::default_library()
    } else {
        let slots = u32::try_from(k + 4).unwrap();
        let mut c = vlib::Config::new(vlib::config::Personality::Tgt, slots, 2, d);
        c.cartridges = (1..=k)
            .map(|n| vlib::config::Cartridge::new(&barcode(n), vlib::config::Location::Slot(u32::try_from(n).unwrap())))
            .collect();
        c
    };
    c.dvcid = true;
    c.time_scale = scale;
    c
}

/// Scaled timings in ms.
#[derive(Debug, Clone, Copy)]
struct Timings {
    mv: u64,
    load: u64,
    unload: u64,
}

impl Timings {
    fn of(c: &vlib::Config) -> Timings {
        Timings {
            mv: c.scaled(c.timing.move_ms),
            load: c.scaled(c.timing.load_ms),
            unload: c.scaled(c.timing.unload_ms),
        }
    }

    /// What a cartridge needs in its drive between its moves: load + hold + unload.
    fn busy(&self, hold: Duration) -> u64 {
        self.load + u64::try_from(hold.as_millis()).unwrap() + self.unload
    }
}

#[allow(clippy::cast_precision_loss)]
fn f(n: usize) -> f64 {
    n as f64
}

#[allow(clippy::cast_precision_loss)]
fn ms_f(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn barcode(n: usize) -> String {
    format!("ABC{n:03}L6")
}

fn flags() -> MountFlags {
    MountFlags { read: true, ..MountFlags::default() }
}

/// What one run measured.
struct Run {
    makespan: f64,
    /// Per client: seconds from the common start until the mount returned.
    mount_latency: Vec<f64>,
    moves: u64,
    /// Robot idle time between the clients' start and the last move's end: (before the first move, between moves).
    robot_idle: (f64, f64),
}

impl Run {
    /// From per-client (start, mounted, done): the makespan runs from the first start to the last dismount.
    fn of(spans: &[(Instant, Instant, Instant)], moves: u64) -> Run {
        let t0 = spans.iter().map(|s| s.0).min().unwrap();
        let end = spans.iter().map(|s| s.2).max().unwrap();
        let mount_latency = spans.iter().map(|s| (s.1 - s.0).as_secs_f64()).collect();
        Run { makespan: (end - t0).as_secs_f64(), mount_latency, moves, robot_idle: (f64::NAN, f64::NAN) }
    }

    /// Fills `robot_idle` from vlib's robot log; `t0_ms` is the clients' start on vlib's clock. With
    /// `RSMD_BENCH_TRACE=1`, prints every idle gap over 10 ms and the moves around it.
    fn with_robot_log(mut self, log: &[vlib::RobotMove], t0_ms: f64) -> Run {
        let Some(first) = log.first() else { return self };
        let before = f64_ms(first.start_ms) - t0_ms;
        let mut between = 0.0;
        let trace = std::env::var_os("RSMD_BENCH_TRACE").is_some();
        for w in log.windows(2) {
            let gap = f64_ms(w[1].start_ms) - f64_ms(w[0].end_ms);
            between += gap;
            if trace && gap > 10.0 {
                println!(
                    "  robot idle {gap:>6.0} ms at {:>7.0} ms: after {}->{}, before {}->{}",
                    f64_ms(w[0].end_ms) - t0_ms,
                    w[0].source,
                    w[0].destination,
                    w[1].source,
                    w[1].destination
                );
            }
        }
        // The clients' start is mapped onto vlib's clock to a millisecond or so: clamp that noise at zero.
        self.robot_idle = (before.max(0.0) / 1000.0, between / 1000.0);
        self
    }
}

#[allow(clippy::cast_precision_loss)]
fn f64_ms(ms: u64) -> f64 {
    ms as f64
}

/// Checks the library is back in its initial state and returns the move count.
fn check_home(v: &vlib::server::Server, k: usize) -> u64 {
    let snap = v.snapshot();
    for n in 1..=k {
        let addr = 1000 + u16::try_from(n - 1).unwrap();
        let e = snap.elements.iter().find(|e| e.address == addr).unwrap();
        assert_eq!(e.barcode.as_deref(), Some(barcode(n).as_str()), "cartridge {n} not home after the run");
    }
    assert!(snap.elements.iter().filter(|e| e.kind == vlib::ElementType::Drive).all(|e| !e.full));
    snap.counters.moves
}

/// Runs K clients with their own sessions against a fresh vlib + rsmd; joins them with a hang guard.
fn run_rsmd(scale: f64, k: usize, d: usize, hold: Duration) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let vdir = dir.path().join("vlib");
    std::fs::create_dir_all(&vdir).unwrap();
    let v = vlib::server::Server::spawn(vlib_config(scale, k, d), &vdir).unwrap();
    let mut d = common::start_daemon(&dir.path().join("rsmd"), &common::vlib_config(&vdir, ""));
    d.wait_ready(1);
    let barrier = Arc::new(Barrier::new(k + 1));
    let (tx, rx) = mpsc::channel();
    for n in 1..=k {
        let (socket, barrier, tx) = (d.socket.clone(), barrier.clone(), tx.clone());
        std::thread::spawn(move || {
            let s = Session::open_at(&socket, None, Some("bench"), 0).unwrap();
            let b = barcode(n);
            barrier.wait();
            let start = now();
            let r = s.mount(&[b.as_str()], None, flags(), 0, None).map(|_| now()).and_then(|mounted| {
                std::thread::sleep(hold);
                s.dismount(DismountTarget::Media(b.clone()), false).map(|()| (start, mounted, now()))
            });
            let _ = tx.send((n, r));
        });
    }
    drop(tx);
    barrier.wait();
    let t0 = now();
    let mut spans = Vec::new();
    for _ in 0..k {
        match rx.recv_timeout(HANG.saturating_sub(t0.elapsed())) {
            Ok((_, Ok(span))) => spans.push(span),
            Ok((n, Err(e))) => panic!("rsmd: client {n} ({}) failed: {e:?}", barcode(n)),
            Err(_) => {
                let lines = vlib::server::snapshot_lines(&v.snapshot());
                panic!("rsmd: clients did not finish within {HANG:?}; vlib state:\n{}", lines.join("\n"));
            }
        }
    }
    let moves = check_home(&v, k);
    drop(d);
    // vlib's clock is ms since its start: map the clients' first start onto it.
    let snap = v.snapshot();
    let t0 = spans.iter().map(|s| s.0).min().unwrap();
    let t0_ms = f64_ms(snap.now_ms) - t0.elapsed().as_secs_f64() * 1000.0;
    Run::of(&spans, moves).with_robot_log(&snap.robot_log, t0_ms)
}

/// Sends one command and waits (blocking, poll(2) on the fd) for its completion.
fn exec(t: &mut EmuTransport, tag: &mut u32, command: rsmd::transport::Command) -> Response {
    *tag += 1;
    let want = *tag;
    t.submit(want, command).unwrap();
    loop {
        while t.wants_write() {
            t.on_writable().unwrap();
        }
        if let Some(c) = t.reap().unwrap() {
            assert_eq!(c.tag, want);
            return c.result.unwrap();
        }
        let mut fds = [PollFd::new(t.fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(1000u16)).unwrap();
    }
}

fn good(what: &str, r: &Response) {
    assert!(r.status == 0, "serial baseline: {what} failed: status {:#x} sense {:02x?}", r.status, r.sense);
}

/// The mtx-changer baseline: one global lock; per cartridge MOVE slot→drive, TUR until ready, hold, LOAD UNLOAD,
/// MOVE drive→slot.
fn run_serial(scale: f64, k: usize, d: usize, hold: Duration) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let cfg = vlib_config(scale, k, d);
    let poll_every = Duration::from_millis(cfg.scaled(MTX_POLL_UNSCALED_MS).max(1));
    let v = vlib::server::Server::spawn(cfg, dir.path()).unwrap();
    struct Devs {
        changer: EmuTransport,
        drives: Vec<EmuTransport>,
        tag: u32,
    }
    let devs = Devs {
        changer: EmuTransport::connect(&dir.path().join("changer.sock")).unwrap(),
        drives: (0..d).map(|i| EmuTransport::connect(&dir.path().join(format!("drive{i}.sock"))).unwrap()).collect(),
        tag: 0,
    };
    let lock = Arc::new(Mutex::new(devs));
    let barrier = Arc::new(Barrier::new(k + 1));
    let timeout = Duration::from_secs(600);
    let handles: Vec<_> = (1..=k)
        .map(|n| {
            let (lock, barrier) = (lock.clone(), barrier.clone());
            std::thread::spawn(move || {
                let slot = 1000 + u16::try_from(n - 1).unwrap();
                let di = (n - 1) % d;
                let drive = 500 + u16::try_from(di).unwrap();
                barrier.wait();
                let start = now();
                let mut g = lock.lock().unwrap();
                let Devs { changer, drives, tag } = &mut *g;
                let r = exec(changer, tag, cdb::move_medium(1, slot, drive, false).into_command(timeout));
                good("MOVE MEDIUM slot→drive", &r);
                loop {
                    let r = exec(&mut drives[di], tag, cdb::test_unit_ready().into_command(timeout));
                    if r.status == 0 {
                        break;
                    }
                    std::thread::sleep(poll_every);
                }
                let mounted = now();
                std::thread::sleep(hold);
                let r = exec(&mut drives[di], tag, cdb::load_unload(false, false).into_command(timeout));
                good("LOAD UNLOAD (unload)", &r);
                let r = exec(changer, tag, cdb::move_medium(1, drive, slot, false).into_command(timeout));
                good("MOVE MEDIUM drive→slot", &r);
                drop(g);
                (start, mounted, now())
            })
        })
        .collect();
    barrier.wait();
    let spans: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let moves = check_home(&v, k);
    Run::of(&spans, moves)
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    (min, v.iter().sum::<f64>() / f(v.len()), max)
}

fn main() {
    use rsmd::changer::bound;
    let scale = scale();
    let cfg = vlib_config(scale, 16, 4);
    let t = Timings::of(&cfg);
    println!("mounts bench: vlib libraries (tgt addressing: robot 1, slots 1000.., drives 500..); 16 over 4 is the");
    println!("default library, 32 over 8 a larger one with the same timings");
    println!(
        "time_scale {scale}: robot move {} ms, load/thread {} ms, unload {} ms (unscaled {} / {} / {} ms)",
        t.mv, t.load, t.unload, cfg.timing.move_ms, cfg.timing.load_ms, cfg.timing.unload_ms
    );
    println!(
        "rsmd TUR polling: every {} ms for the first {} ms, then backing off x1.5 up to {} ms, until the load time is \
         learned; then from just before it, every twentieth of it until it is due, then every fiftieth",
        rsmd::changer::mounts::FIRST_POLL_MS,
        rsmd::changer::mounts::FAST_POLL_FOR_MS,
        rsmd::changer::mounts::MAX_POLL_MS
    );
    println!(
        "serial baseline TUR polling: every {} ms (mtx-changer's 1 s sleep, scaled)",
        cfg.scaled(MTX_POLL_UNSCALED_MS).max(1)
    );
    println!("closed-form bounds: LB_robot = (2K - min(K,D) + 1)*move + busy, LB_drive = q*c + min(c, (r-1)*move),");
    println!("         busy = load + H + unload, c = 2*move + busy, q = ceil(K/D), r = K - (q-1)*D");
    println!("optimum = exact best schedule of the ideal model (no polling/protocol latency), by exhaustive search;");
    println!("         LB <= optimum <= mount-first / out-first list schedules");
    println!("serial ideal = K*(2*move + busy) (baseline without polling/command overheads)");
    // The "backup" hold: 40 s of writing, scaled like the hardware (a real backup holds for an hour).
    let backup = Duration::from_millis(cfg.scaled(40_000));
    // (name, K, D, hold, run the serial baseline): the serial baseline of 32 over 8 would take 82 s more.
    let scenarios = [
        ("no hold", 16, 4, Duration::ZERO, true),
        ("backup hold", 16, 4, backup, true),
        ("no hold", 32, 8, Duration::ZERO, false),
    ];
    let model_only = std::env::var_os("RSMD_BENCH_MODEL_ONLY").is_some();
    let secs = |ms: u64| ms_f(ms);
    let mut rows = Vec::new();
    for (name, k, d, hold, serial) in scenarios {
        let (ku, du) = (k as u64, d as u64);
        let busy = t.busy(hold);
        let (lbr, lbd) = bound::closed_form(ku, du, t.mv, busy);
        let opt = bound::optimum(ku, du, t.mv, busy);
        let (mf, of) = (bound::mount_first(ku, du, t.mv, busy), bound::out_first(ku, du, t.mv, busy));
        println!(
            "{name}, {k} over {d}: LB_robot {:.3} s, LB_drive {:.3} s, optimum {:.3} s ({:+.1}% over LB), mount-first {:.3} s, \
             out-first {:.3} s",
            secs(lbr),
            secs(lbd),
            secs(opt),
            (ms_f(opt) / ms_f(lbr.max(lbd)) - 1.0) * 100.0,
            secs(mf),
            secs(of)
        );
        if model_only {
            continue;
        }
        eprintln!("running {name}, {k} over {d}: rsmd ...");
        let r = run_rsmd(scale, k, d, hold);
        eprintln!("running {name}, {k} over {d}: serial baseline ...");
        let s = if !serial || std::env::var_os("RSMD_BENCH_NO_SERIAL").is_some() {
            Run { makespan: f64::NAN, mount_latency: vec![f64::NAN], moves: 0, robot_idle: (f64::NAN, f64::NAN) }
        } else {
            run_serial(scale, k, d, hold)
        };
        let (mn, avg, mx) = stats(&r.mount_latency);
        println!(
            "{name}, {k} over {d}: rsmd moves {}, robot idle {:.3} s before the first move and {:.3} s between moves (optimum: \
             {:.3} s between); mount latency min/avg/max {mn:.3}/{avg:.3}/{mx:.3} s (optimum first: {:.3} s); \
             serial moves {}, serial ideal {:.3} s, serial first mount {:.3} s",
            r.moves,
            r.robot_idle.0,
            r.robot_idle.1,
            secs(opt - 2 * ku * t.mv),
            secs(t.mv + t.load),
            s.moves,
            secs(ku * (2 * t.mv + busy)),
            stats(&s.mount_latency).0
        );
        rows.push((name, k, d, hold.as_secs_f64(), r.makespan, secs(opt), secs(lbr.max(lbd)), s.makespan));
    }
    if model_only {
        return;
    }
    println!();
    println!(
        "{:<12} | {:>3} | {:>2} | {:>7} | {:>10} | {:>9} | {:>8} | {:>19} | {:>17} | {:>7}",
        "scenario",
        "K",
        "D",
        "hold s",
        "makespan s",
        "optimum s",
        "vs opt %",
        "closed-form LB s",
        "serial baseline s",
        "speedup"
    );
    for (name, k, d, h, m, opt, lb, s) in rows {
        let (serial, speedup) = if s.is_nan() {
            ("skipped".to_owned(), "-".to_owned())
        } else {
            (format!("{s:.3}"), format!("{:.2}x", s / m))
        };
        println!(
            "{name:<12} | {k:>3} | {d:>2} | {h:>7.3} | {m:>10.3} | {opt:>9.3} | {:>+8.1} | {lb:>19.3} | {serial:>17} | \
             {speedup:>7}",
            (m / opt - 1.0) * 100.0
        );
    }
}
