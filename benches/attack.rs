//! Benchmark for issue 16 (limits and fairness): a well-behaved client's GetObjectInformation latency while one
//! local user attacks — N connections that each open a session and pipeline 200 EnumerateObjects(storage_slot)
//! without ever reading, plus 200 idle connections and 100 that send half a message — beside the same client with
//! no attack (baseline, same run), and rsmd's peak RSS against its memory budget.
//!
//! `CARGO_TARGET_DIR=/work/target-bench cargo bench -j1 --bench attack`

#[path = "common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rsmd::client::Connection;
use rsmd::proto::method::Method;
use rsmd::proto::types::ObjectReply;
use serde_json::json;

use common::{now, vlib_config, Samples, Vlib};

/// The good client's calls per scenario.
const CALLS: usize = 500;
/// Calls each attacking connection pipelines.
const PIPELINED: usize = 200;
/// The memory budget rsmd runs with (MiB): the default.
const BUDGET_MIB: u64 = 256;

/// One attacking connection: a session, then `PIPELINED` enumerations sent without reading.
fn hog(socket: &Path) -> UnixStream {
    let mut s = UnixStream::connect(socket).unwrap();
    s.write_all(b"{\"method\":\"io.rsmd.Ntms.OpenSession\",\"parameters\":{\"options\":0}}\0").unwrap();
    let mut b = Vec::new();
    let mut tmp = [0u8; 4096];
    while !b.ends_with(b"\0") {
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0, "rsmd closed an attacking connection before its session");
        b.extend_from_slice(&tmp[..n]);
    }
    let v: serde_json::Value = serde_json::from_slice(&b[..b.len() - 1]).unwrap();
    let session = v["parameters"]["session"].as_str().unwrap().to_owned();
    let mut call = serde_json::to_vec(&json!({"method": "io.rsmd.Ntms.EnumerateObjects",
        "parameters": {"session": session, "object_type": "storage_slot"}}))
    .unwrap();
    call.push(0);
    let burst = call.repeat(PIPELINED);
    s.set_nonblocking(true).unwrap();
    // As much as the socket takes: rsmd stops reading a connection that holds too much.
    let _ = s.write(&burst);
    s
}

struct Outcome {
    samples: Samples,
    peak_rss_mib: f64,
    setup: Duration,
}

/// The good client's lookups from before the attack starts (while `hogs` attacking connections connect and send,
/// with the idle and half-message ones when there are hogs) until `CALLS` more after every attacker is in.
fn scenario(socket: &Path, pid: i32, hogs: usize, object: &str) -> Outcome {
    let attacked = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let good = scope.spawn(|| {
            let mut conn = Connection::connect(socket).unwrap();
            let session = common::open_session(&mut conn);
            let (mut times, mut peak, mut after) = (Vec::new(), 0, 0);
            while after < CALLS {
                if attacked.load(Ordering::Relaxed) {
                    after += 1;
                }
                let t = now();
                let v = conn
                    .call_method(&Method::GetObjectInformation { session: session.clone(), object: object.to_owned() })
                    .unwrap();
                times.push(t.elapsed());
                let _: ObjectReply = serde_json::from_value(v).unwrap();
                peak = peak.max(common::rss_kib(pid).0);
            }
            (times, peak)
        });
        let t0 = now();
        let mut held: Vec<UnixStream> = (0..hogs).map(|_| hog(socket)).collect();
        if hogs > 0 {
            held.extend((0..200).map(|_| UnixStream::connect(socket).unwrap()));
            for _ in 0..100 {
                let mut s = UnixStream::connect(socket).unwrap();
                s.write_all(b"{\"method\":\"io.rsmd.Ntms.GetObjectInf").unwrap();
                held.push(s);
            }
        }
        let setup = t0.elapsed();
        attacked.store(true, Ordering::Relaxed);
        let (times, peak) = good.join().unwrap();
        drop(held);
        #[allow(clippy::cast_precision_loss)]
        let peak_rss_mib = peak as f64 / 1024.0;
        Outcome { samples: Samples::new(times), peak_rss_mib, setup }
    })
}

fn main() {
    // Thousands of connections: this process needs the file descriptors (rsmd raises its own limit).
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let dir = common::Scratch::new();
    let v = Vlib::default_fast(&dir.path().join("vlib"));
    let mut d = common::start_daemon(&dir.path().join("rsmd"), &vlib_config(&v.dir, ""));
    d.wait_ready(1);
    let pid = d.pid();
    println!("rsmd attack benchmark: default vlib library (20 slots), memory budget {BUDGET_MIB} MiB (the default)");
    println!(
        "machine: {} CPUs, load average {} at start; the attacker runs as root (an administrator: the per-user \
         connection cap does not apply to it)",
        std::thread::available_parallelism().map(std::num::NonZeroUsize::get).unwrap_or(1),
        common::loadavg()
    );
    println!(
        "{:<44} {:>7} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "scenario (good client: GetObjectInformation)",
        "calls",
        "p50 ms",
        "p99 ms",
        "max ms",
        "attack s",
        "peak RSS",
        "goal"
    );
    #[allow(clippy::cast_precision_loss)]
    let idle_rss = common::rss_kib(pid).0 as f64 / 1024.0;
    for hogs in [0usize, 1000, 5000] {
        let what = if hogs == 0 {
            "baseline: no attack".to_owned()
        } else {
            format!("{hogs} pipelining + 200 idle + 100 half")
        };
        let o = scenario(&d.socket, pid, hogs, "ABC001L6");
        let goal = if hogs == 0 { "-".to_owned() } else { format!("{}", o.samples.max() < Duration::from_millis(100)) };
        println!(
            "{:<44} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.1} {:>6.0} MiB {:>9}",
            what,
            o.samples.sorted.len(),
            common::ms(o.samples.median()),
            common::ms(o.samples.pct(99.0)),
            common::ms(o.samples.max()),
            o.setup.as_secs_f64(),
            o.peak_rss_mib,
            goal
        );
    }
    println!(
        "rsmd RSS idle {idle_rss:.0} MiB; the budget bounds buffered calls and unsent replies ({BUDGET_MIB} MiB); goal: \
         max < 100 ms under attack"
    );
    println!("load average at end: {}", common::loadavg());
}
