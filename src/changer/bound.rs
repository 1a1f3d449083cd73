//! How fast K mounts and dismounts over D drives can possibly go: the ideal model of a library that the mount
//! scheduler is measured against (by the `mounts` bench on vlib, and by the scheduler's simulation tests).
//!
//! The model: the robot is serial and every move takes `move_ms`; a cartridge occupies its drive from its move in
//! until its move out, and between the two needs `busy_ms` (load + the application's hold + unload); there is no
//! polling, protocol or command latency. All K cartridges are asked for at time 0.

use std::collections::HashMap;

/// The closed-form lower bounds (robot-bound, drive-bound), in ms. `D' = min(K, D)`.
///
/// * robot: each cartridge needs two moves and the robot is serial. When the last move in ends, every cartridge
///   not yet out is in a drive (at most D'), so at least K + (K − D') moves are done by then; after it that
///   cartridge still needs `busy` and its move out: `(2K − D' + 1)·move + busy`.
/// * drive: some drive serves at least q = ceil(K/D) cartridges, each holding it for c = 2·move + busy. Either a
///   drive serves q + 1 (≥ (q+1)·c), or at least r = K − (q−1)·D drives serve exactly q; their first moves are
///   distinct robot moves, so one of them starts no earlier than (r−1)·move: `q·c + min(c, (r−1)·move)`.
pub fn closed_form(k: u64, d: u64, move_ms: u64, busy_ms: u64) -> (u64, u64) {
    if k == 0 || d == 0 {
        return (0, 0);
    }
    let dd = d.min(k);
    let robot = (2 * k - dd + 1) * move_ms + busy_ms;
    let (q, c) = (k.div_ceil(d), 2 * move_ms + busy_ms);
    let r = k - (q - 1) * d;
    (robot, q * c + c.min((r - 1) * move_ms))
}

/// The optimal makespan of the model, in ms, by exhaustive search over the robot's choices (dynamic programming,
/// memoised on the state seen from the moment the robot is free). Whenever the robot is free it either moves a
/// cartridge into an empty drive (empty drives are interchangeable, so one choice) or moves one out of a loaded
/// drive, waiting for its unload if needed. Each move starting as early as its order allows loses nothing for
/// makespan (a regular objective: some optimal schedule is semi-active), so this is the true optimum: no scheduler
/// can beat it on a library with these timings, and it is the tight lower bound.
pub fn optimum(k: u64, d: u64, move_ms: u64, busy_ms: u64) -> u64 {
    /// Cartridges not yet moved in; per drive None (empty) or the ms until its cartridge may move out, counted
    /// from the moment the robot is free; sorted, so equivalent states share one entry.
    type State = (u64, Vec<Option<u64>>);
    fn after(drives: &[Option<u64>], at: usize, dt: u64, put: Option<u64>) -> Vec<Option<u64>> {
        let mut next: Vec<Option<u64>> = drives
            .iter()
            .enumerate()
            .map(|(i, r)| if i == at { put } else { r.map(|r| r.saturating_sub(dt)) })
            .collect();
        next.sort_unstable();
        next
    }
    fn best(s: &State, mv: u64, busy: u64, memo: &mut HashMap<State, u64>) -> u64 {
        if let Some(&v) = memo.get(s) {
            return v;
        }
        let (left, drives) = s;
        let mut v = None::<u64>;
        if *left > 0 {
            if let Some(e) = drives.iter().position(Option::is_none) {
                let next = (left - 1, after(drives, e, mv, Some(busy)));
                v = Some(mv + best(&next, mv, busy, memo));
            }
        }
        for (i, r) in drives.iter().enumerate() {
            // Drives with the same wait are interchangeable: try one of them (the sort puts them together).
            let Some(r) = *r else { continue };
            if i > 0 && drives[i - 1] == Some(r) {
                continue;
            }
            let next = (*left, after(drives, i, r + mv, None));
            let t = r + mv + best(&next, mv, busy, memo);
            v = Some(v.map_or(t, |v| v.min(t)));
        }
        let v = v.unwrap_or(0);
        memo.insert(s.clone(), v);
        v
    }
    if k == 0 || d == 0 {
        return 0;
    }
    let d = usize::try_from(d.min(k)).unwrap_or(usize::MAX);
    best(&(k, vec![None; d]), move_ms, busy_ms, &mut HashMap::new())
}

/// A list schedule with perfect knowledge: whenever the robot is free, move a cartridge into an empty drive if one
/// is waiting (mount first), else move out the cartridge whose unload ends first. This is the policy of
/// [`super::mounts`] without its latencies. Returns the makespan in ms.
pub fn mount_first(k: u64, d: u64, move_ms: u64, busy_ms: u64) -> u64 {
    list_schedule(k, d, move_ms, busy_ms, false)
}

/// The same with the opposite preference: move out every unloaded cartridge before refilling a drive.
pub fn out_first(k: u64, d: u64, move_ms: u64, busy_ms: u64) -> u64 {
    list_schedule(k, d, move_ms, busy_ms, true)
}

fn list_schedule(k: u64, d: u64, move_ms: u64, busy_ms: u64, prefer_out: bool) -> u64 {
    let d = usize::try_from(d).unwrap_or(usize::MAX);
    let (mut robot, mut left) = (0u64, k);
    // When each loaded cartridge may move out.
    let mut loaded: Vec<u64> = Vec::new();
    while left > 0 || !loaded.is_empty() {
        loaded.sort_unstable();
        let can_mount = left > 0 && loaded.len() < d;
        let out_ready = loaded.first().is_some_and(|&t| t <= robot);
        if !can_mount || (prefer_out && out_ready) {
            let t = loaded.remove(0);
            robot = robot.max(t) + move_ms;
        } else {
            left -= 1;
            robot += move_ms;
            loaded.push(robot + busy_ms);
        }
    }
    robot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cartridge_one_drive_is_the_sum() {
        assert_eq!(optimum(1, 1, 400, 1750), 2550);
        assert_eq!(closed_form(1, 1, 400, 1750), (2550, 2550));
        assert_eq!(mount_first(1, 1, 400, 1750), 2550);
    }

    #[test]
    fn one_drive_is_serial() {
        assert_eq!(optimum(5, 1, 400, 1750), 5 * 2550);
        assert_eq!(optimum(5, 3, 400, 0), 10 * 400, "nothing to wait for: the robot alone");
    }

    #[test]
    fn the_bench_cases_by_hand() {
        // 16 over 4, robot 400, load 1000, unload 750. The robot cannot move anything out before the first
        // cartridge's 400 + 1750 (idle from 1600 to 2150) nor finish before the last one's 1750 after its move in
        // (it can move at most 3 others out meanwhile: idle 550 again): 32·400 + 550 + 550.
        assert_eq!(closed_form(16, 4, 400, 1750), (13_350, 11_400));
        assert_eq!(optimum(16, 4, 400, 1750), 13_900);
        // With a 2 s hold the drives bound it, and the first round's staggered moves out cost a further 1.2 s.
        assert_eq!(closed_form(16, 4, 400, 3750), (15_350, 19_400));
        assert_eq!(optimum(16, 4, 400, 3750), 20_600);
        // Moving everything out first is measurably worse; mount first is optimal here.
        assert_eq!(mount_first(16, 4, 400, 1750), 13_900);
        assert_eq!(mount_first(16, 4, 400, 3750), 20_600);
        assert_eq!(out_first(16, 4, 400, 1750), 15_000);
        assert_eq!(out_first(16, 4, 400, 3750), 23_000);
    }

    #[test]
    fn larger_libraries_stay_tractable() {
        // 32 over 8: the memoised search still answers quickly, and mount first still matches it.
        assert_eq!(optimum(32, 8, 400, 1750), mount_first(32, 8, 400, 1750));
        assert_eq!(optimum(32, 8, 400, 3750), mount_first(32, 8, 400, 3750));
    }

    #[test]
    fn bounds_bracket_the_optimum() {
        for k in 1..=10 {
            for d in 1..=4 {
                for (mv, busy) in [(400, 1750), (100, 3000), (1000, 500), (400, 0), (50, 50)] {
                    let (r, dr) = closed_form(k, d, mv, busy);
                    let opt = optimum(k, d, mv, busy);
                    let (mf, of) = (mount_first(k, d, mv, busy), out_first(k, d, mv, busy));
                    assert!(r.max(dr) <= opt, "k {k} d {d} mv {mv} busy {busy}: LB {} > opt {opt}", r.max(dr));
                    assert!(opt <= mf && opt <= of, "k {k} d {d} mv {mv} busy {busy}: opt {opt} > {mf}/{of}");
                    assert!(opt >= 2 * k * mv, "every cartridge moves twice");
                }
            }
        }
    }
}
