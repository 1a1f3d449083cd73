//! Mount scheduling benchmark: K clients mount, hold and dismount K cartridges over D drives of a vlib library
//! with realistic (scaled) timings, through the real rsmd daemon; beside it the robot-bound lower bound and an
//! mtx-changer style serial baseline driven directly over vlib's device sockets.
//!
//! Run: `cargo bench --bench mounts`. `RSMD_BENCH_SCALE` overrides the time scale (default 0.05);
//! `RSMD_BENCH_NO_SERIAL=1` skips the (slow) serial baseline.
//!
//! Lower bound (every figure below scaled; D' = min(K, D)):
//! * robot: each cartridge needs two robot moves, the robot is serial. When the last mount move ends, every
//!   cartridge not yet dismounted is in a drive (at most D' of them), so at least K + (K − D') moves are done by
//!   then; after it the last cartridge still needs load + H + unload + its move out:
//!   `LB_robot = (2K − D' + 1)·move + load + H + unload`.
//! * drives: some drive serves at least ceil(K/D) cartridges, each occupying it for move in + load + H + unload +
//!   move out (robot moves into and out of one drive cannot overlap):
//!   `c = 2·move + load + H + unload`, `q = ceil(K/D)`. Either a drive serves q + 1 cartridges (≥ (q+1)·c), or at
//!   least r = K − (q−1)·D drives serve exactly q; their first mount moves are distinct robot moves, so one of
//!   them starts no earlier than (r−1)·move: `LB_drive = q·c + min(c, (r−1)·move)`.
//! * `LB = max(LB_robot, LB_drive)`. Command overheads (1 ms each, scaled to 0) are ignored, which keeps it sound.

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

fn vlib_config(scale: f64) -> vlib::Config {
    let mut c = vlib::Config::default_library();
    c.dvcid = true;
    c.time_scale = scale;
    c
}

/// Scaled timings in seconds.
#[derive(Debug, Clone, Copy)]
struct Timings {
    mv: f64,
    load: f64,
    unload: f64,
}

impl Timings {
    fn of(c: &vlib::Config) -> Timings {
        let s = |ms: u64| ms_f(c.scaled(ms));
        Timings { mv: s(c.timing.move_ms), load: s(c.timing.load_ms), unload: s(c.timing.unload_ms) }
    }

    /// The better of two greedy schedules with perfect knowledge (no polling delay, unload as soon as the hold
    /// ends, no protocol latency). Whenever the robot is free it either (out first) moves out a cartridge whose
    /// unload is done, else mounts into a free drive, else waits for the first unload; or (mount first) mounts
    /// into a free drive first. Achievable, so LB <= greedy; not necessarily optimal.
    fn greedy(&self, k: usize, d: usize, hold: f64) -> f64 {
        let run = |out_first: bool| {
            let mut robot = 0.0f64;
            let mut left = k;
            // Times at which cartridges in drives are unloaded and ready to move out.
            let mut in_drives: Vec<f64> = Vec::new();
            while left > 0 || !in_drives.is_empty() {
                in_drives.sort_by(f64::total_cmp);
                let can_mount = left > 0 && in_drives.len() < d;
                let out_ready = in_drives.first().is_some_and(|&t| t <= robot);
                if !can_mount || (out_first && out_ready) {
                    let t = in_drives.remove(0);
                    robot = robot.max(t) + self.mv;
                } else {
                    left -= 1;
                    robot += self.mv;
                    in_drives.push(robot + self.load + hold + self.unload);
                }
            }
            robot
        };
        run(true).min(run(false))
    }

    fn lower_bound(&self, k: usize, d: usize, hold: f64) -> (f64, f64) {
        let dd = d.min(k);
        let robot = f(2 * k - dd + 1) * self.mv + self.load + hold + self.unload;
        // Either a drive serves q + 1 cartridges, or at least r drives serve exactly q: their first mount moves
        // are distinct robot moves, so the last of them starts after (r - 1) moves.
        let (q, c) = (k.div_ceil(d), 2.0 * self.mv + self.load + hold + self.unload);
        let r = k - (q - 1) * d;
        let drive = f(q) * c + c.min(f(r - 1) * self.mv);
        (robot, drive)
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
}

impl Run {
    /// From per-client (start, mounted, done): the makespan runs from the first start to the last dismount.
    fn of(spans: &[(Instant, Instant, Instant)], moves: u64) -> Run {
        let t0 = spans.iter().map(|s| s.0).min().unwrap();
        let end = spans.iter().map(|s| s.2).max().unwrap();
        let mount_latency = spans.iter().map(|s| (s.1 - s.0).as_secs_f64()).collect();
        Run { makespan: (end - t0).as_secs_f64(), mount_latency, moves }
    }
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
fn run_rsmd(scale: f64, k: usize, hold: Duration) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let vdir = dir.path().join("vlib");
    std::fs::create_dir_all(&vdir).unwrap();
    let v = vlib::server::Server::spawn(vlib_config(scale), &vdir).unwrap();
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
    Run::of(&spans, moves)
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
    let cfg = vlib_config(scale);
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
    let scale = scale();
    let cfg = vlib_config(scale);
    let t = Timings::of(&cfg);
    let d = cfg.drive_serials.len();
    let k = 16;
    println!("mounts bench: vlib default library (tgt, {d} drives, robot 1, slots 1000.., drives 500..)");
    println!(
        "time_scale {scale}: robot move {:.3} s, load/thread {:.3} s, unload {:.3} s (unscaled {} / {} / {} ms)",
        t.mv, t.load, t.unload, cfg.timing.move_ms, cfg.timing.load_ms, cfg.timing.unload_ms
    );
    println!(
        "rsmd TUR polling: first {} ms, x1.5 back-off up to {} ms until the load time is learned, then a twentieth of it",
        rsmd::changer::mounts::FIRST_POLL_MS,
        rsmd::changer::mounts::MAX_POLL_MS
    );
    println!(
        "serial baseline TUR polling: every {} ms (mtx-changer's 1 s sleep, scaled)",
        cfg.scaled(MTX_POLL_UNSCALED_MS).max(1)
    );
    println!("LB = max(LB_robot = (2K - min(K,D) + 1)*move + load + H + unload,");
    println!("         LB_drive = q*c + min(c, (r-1)*move)),  c = 2*move + load + H + unload, q = ceil(K/D),");
    println!("         r = K - (q-1)*D (drives that must serve q; their first moves are serial)");
    println!("greedy schedule = simulated list schedule with zero polling/protocol latency (achievable reference)");
    println!("serial ideal = K*(2*move + load + H + unload) (baseline without polling/command overheads)");
    // The "backup" hold: 40 s of writing, scaled like the hardware (a real backup holds for an hour).
    let backup = Duration::from_millis(cfg.scaled(40_000));
    let scenarios = [("no hold", Duration::ZERO), ("backup hold", backup)];
    let mut rows = Vec::new();
    for (name, hold) in scenarios {
        let h = hold.as_secs_f64();
        let (lbr, lbd) = t.lower_bound(k, d, h);
        let lb = lbr.max(lbd);
        eprintln!("running {name}: rsmd ...");
        let r = run_rsmd(scale, k, hold);
        eprintln!("running {name}: serial baseline ...");
        let s = if std::env::var_os("RSMD_BENCH_NO_SERIAL").is_some() {
            Run { makespan: f64::NAN, mount_latency: vec![f64::NAN], moves: 0 }
        } else {
            run_serial(scale, k, d, hold)
        };
        let ideal = f(k) * (2.0 * t.mv + t.load + h + t.unload);
        let greedy = t.greedy(k, d, h);
        let (mn, avg, mx) = stats(&r.mount_latency);
        println!(
            "{name}: LB_robot {lbr:.3} s, LB_drive {lbd:.3} s, greedy schedule {greedy:.3} s \
             ({:+.1}% vs LB, rsmd {:+.1}% vs it); rsmd moves {}, mount latency min/avg/max \
             {mn:.3}/{avg:.3}/{mx:.3} s; serial moves {}, serial ideal {ideal:.3} s, serial first mount {:.3} s",
            (greedy / lb - 1.0) * 100.0,
            (r.makespan / greedy - 1.0) * 100.0,
            r.moves,
            s.moves,
            stats(&s.mount_latency).0
        );
        rows.push((name, h, r.makespan, lb, s.makespan));
    }
    println!();
    println!(
        "{:<12} | {:>3} | {:>2} | {:>7} | {:>10} | {:>13} | {:>8} | {:>17} | {:>7}",
        "scenario", "K", "D", "hold s", "makespan s", "lower bound s", "vs LB %", "serial baseline s", "speedup"
    );
    for (name, h, m, lb, s) in rows {
        let (serial, speedup) = if s.is_nan() {
            ("skipped".to_owned(), "-".to_owned())
        } else {
            (format!("{s:.3}"), format!("{:.2}x", s / m))
        };
        println!(
            "{name:<12} | {k:>3} | {d:>2} | {h:>7.3} | {m:>10.3} | {lb:>13.3} | {:>+8.1} | {serial:>17} | {speedup:>7}",
            (m / lb - 1.0) * 100.0
        );
    }
}
