//! Mount and dismount jobs inside a [`super::Library`]: the robot queue (by priority), drive state machines, and
//! pipelining. Sans-IO like the library: the server feeds library events in and drains outcomes.
//!
//! # Primer
//! A mount is: reserve a drive (the one asked for, or any free mapped drive when it starts), MOVE MEDIUM slot →
//! drive, then poll TEST UNIT READY on the drive (with backoff; "becoming ready" and a unit attention are waited
//! out) until it answers GOOD. A dismount is: LOAD UNLOAD (unload) on the drive, then MOVE MEDIUM drive → home slot
//! (the slot it came from, or a free one when that is taken). The robot is one serial resource and drives are
//! parallel: a job hands the robot back as soon as its move is done, so while one drive threads a tape the robot
//! already serves the next job. Jobs wait in a queue ordered by priority, then age; the robot's next move is chosen
//! only when it is free: the highest priority first and, at equal priority, a mount into an empty drive before a
//! move out (see [`super::bound`] for why that order is the optimal one on the benchmark).
//!
//! A mount whose move the library refuses because the cache was wrong (source empty, destination full: the
//! hardware changed behind rsmd's back) waits for the library's re-read of those elements and goes on from where
//! the cartridge really is: already in a drive, the mount completes there (that drive is the job's drive, polled
//! until ready); in another slot, it is retried from there once. Otherwise it fails with the refusal.
//!
//! A job cancelled or timed out before its move is dropped; after its move, a mount is undone (unload and move
//! back), so the hardware is left in a known state either way.

use std::collections::VecDeque;

use super::machine::{Element, Event, Machine, Origin};
use super::{Millis, MoveError};
use crate::model::LibraryState;
use crate::scsi::action::{classify, Action, Failure};
use crate::scsi::cdb;
use crate::scsi::element::ElementType;
use crate::scsi::mode::ModeParameters;
use crate::scsi::tape::TapeAlerts;
use crate::transport::{Response, TransportError};

/// Which drive a mount may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriveChoice {
    /// This data transfer element.
    Element(u16),
    /// Any free mapped drive of the library.
    Any,
    /// Any free mapped drive among these elements (the ones that can take the cartridge).
    AnyOf(Vec<u16>),
}

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// Put the cartridge in `source` into a drive and wait until the drive is ready.
    Mount {
        /// Element holding the cartridge.
        source: u16,
        /// The drive to use.
        drive: DriveChoice,
    },
    /// Take the cartridge out of drive element `drive` and put it in `home` (or a free slot if taken).
    Dismount {
        /// The drive element.
        drive: u16,
        /// Preferred destination.
        home: Option<u16>,
    },
    /// Identify the cartridge in `source`: mount it like [`JobKind::Mount`], read its first block (READ(6), the tape
    /// at its beginning), and take it back to `source`; the outcome carries what was read.
    Identify {
        /// Element holding the cartridge.
        source: u16,
        /// The drive to use.
        drive: DriveChoice,
    },
    /// Clean drive element `drive` with the cleaning cartridge in `cleaner`: move it in, wait while the drive
    /// cleans (TEST UNIT READY answers "cleaning cartridge installed") until it ejects the cleaner ("medium not
    /// present"), read its TapeAlert flags, and move the cleaner back to `cleaner`.
    Clean {
        /// Element holding the cleaning cartridge.
        cleaner: u16,
        /// The drive element.
        drive: u16,
    },
}

/// Why a job failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The robot move failed.
    #[error("The robot move failed")]
    Move(#[source] MoveError),
    /// No free drive or element (for `Element`: it is not empty, unmapped, or busy).
    #[error("Drive element {0} is not available")]
    DriveUnavailable(u16),
    /// The drive has no device mapped: it cannot be polled or unloaded.
    #[error("Drive element {0} has no mapped drive device")]
    Unmapped(u16),
    /// The drive refused LOAD UNLOAD.
    #[error("The drive refused to unload")]
    UnloadRefused(#[source] Failure),
    /// The drive did not become ready.
    #[error("The drive did not become ready")]
    NotReady(#[source] Failure),
    /// The drive cannot be reached.
    #[error("The drive is gone")]
    DriveGone,
    /// No empty storage slot to put the cartridge in.
    #[error("No free storage slot")]
    NoFreeSlot,
    /// Cancelled (a mount already in the drive was taken back out).
    #[error("Cancelled")]
    Cancelled,
    /// Timed out (a mount already in the drive was taken back out).
    #[error("Timed out")]
    TimedOut,
    /// Mounted for writing, the drive reports the cartridge write protected (it was taken back out).
    #[error("The cartridge is write protected")]
    WriteProtected,
    /// The library is offline.
    #[error("The library is offline")]
    Offline,
    /// The drive did not eject the cleaning cartridge in time (it is left in the drive when it cannot be unloaded).
    #[error("The drive did not finish cleaning: the cleaning cartridge was not ejected in time")]
    CleanerStuck,
    /// The drive loaded the "cleaning" cartridge as a data cartridge: it is not a cleaner.
    #[error("The drive took the cartridge for a data cartridge: it is not a cleaning cartridge")]
    NotACleaner,
}

/// A job's id, chosen by the caller (the broker uses its request's number).
pub type JobId = u64;

/// A finished job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The job id.
    pub id: u64,
    /// The drive element it used (mounts: where the cartridge now is).
    pub drive: Option<u16>,
    /// The result.
    pub result: Result<(), JobError>,
    /// The drive's TapeAlert flags, read before a dismount's unload and after a cleaning (None: not read, or the
    /// drive has no TapeAlert page).
    pub alerts: Option<TapeAlerts>,
    /// What an identify job read from the tape.
    pub read: Option<BlockRead>,
}

/// The first block of a tape, as an identify job read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockRead {
    /// The block's bytes (the first [`IDENTIFY_READ_BYTES`] of a longer one).
    Data(Vec<u8>),
    /// End of data at the beginning of the tape: a blank tape.
    Blank,
    /// The drive could not read it (the reason).
    Failed(String),
}

/// How much of the first block an identify job reads: enough for every label format (an Amanda header is 32 KiB,
/// a Bacula block 64 KiB).
pub const IDENTIFY_READ_BYTES: u32 = 256 * 1024;

/// A progress report (for request objects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The job left the queue: the robot is moving for it.
    Started {
        /// Job id.
        id: u64,
        /// The drive element it uses.
        drive: u16,
    },
    /// The move is done; waiting for the drive to become ready.
    WaitingForDrive {
        /// Job id.
        id: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Queued,
    /// The library has our move (`move_id`).
    Moving,
    /// Unloading the drive before the move out.
    Unloading,
    /// Unloaded (or nothing to unload): the move out waits for the robot.
    AwaitingRobot,
    /// Ready, and mounted for writing: MODE SENSE asks whether the cartridge is write protected.
    CheckingWriteProtect,
    /// LOG SENSE of the TapeAlert page in flight (a dismount before its unload, a cleaning after the eject).
    ReadingAlerts,
    /// READ(6) of the first block in flight (an identify job).
    ReadingBlock,
    /// The cleaner is in the drive: polling TEST UNIT READY until the drive ejects it; next poll at `next_at`
    /// (None: a poll is in flight).
    Cleaning {
        next_at: Option<Millis>,
    },
    /// Polling TEST UNIT READY; next poll at `next_at` (None: a poll is in flight).
    WaitingReady {
        next_at: Option<Millis>,
        interval: Millis,
    },
    /// Undoing a mount after cancel/timeout: unload then move back; the outcome is `undo`'s error.
    Undoing,
    /// The library refused the mount's move (source empty, or destination full): the cache was wrong. Waiting for
    /// the library's re-read of the elements to settle, to go on from where the cartridge really is; `error` is
    /// the outcome when it cannot.
    Rechecking {
        error: MoveError,
    },
}

#[derive(Debug, Clone)]
struct Job {
    id: u64,
    kind: JobKind,
    priority: i32,
    deadline: Option<Millis>,
    step: Step,
    drive: Option<u16>,
    device: Option<usize>,
    /// Set when cancelled/timed out mid-flight: the error to report once the hardware is back in a known state.
    abort: Option<JobError>,
    /// A dismount's destination once chosen.
    dest: Option<u16>,
    ready_by: Millis,
    /// When the move into the drive finished (for learning how long this library's drives take to load).
    loaded_at: Millis,
    /// When the drive last answered "not ready" (the load ended between that and the GOOD answer).
    not_ready_at: Millis,
    /// Mounted for writing: a write-protected cartridge fails the mount.
    write: bool,
    /// A mount's cartridge label, as the cache had it when the job started (to find it after a refused move).
    barcode: Option<String>,
    /// A mount already retried from where the cartridge really was (retried once only).
    relocated: bool,
    /// Once aborted (cancelled, timed out, failed): when to stop waiting for a drive that does not answer.
    give_up_at: Option<Millis>,
    /// TapeAlert flags read during the job.
    alerts: Option<TapeAlerts>,
    /// What an identify job read.
    read: Option<BlockRead>,
    /// An identify job's cartridge is going back home: the move back ends the job well.
    returning: bool,
}

/// How often a cleaning drive is asked whether it has ejected the cleaner.
pub const CLEAN_POLL_MS: Millis = 1_000;
/// How long a cleaning may take before the drive counts as stuck (LTO drives clean in one to three minutes).
pub const CLEAN_TIMEOUT_MS: Millis = 10 * 60 * 1000;

/// Timeout of the READ of an identify job (a drive may have to locate on a badly wound tape).
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// Timeout of the short drive commands (TEST UNIT READY, MODE SENSE).
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// How long a job that was aborted (cancelled, timed out) waits for an answer from its drive (the poll in flight,
/// the unload of its undo) before it gives up: it then ends with [`JobError::DriveGone`], the cartridge left in
/// the drive, and the drive is suspect. Long enough for an unload that rewinds a whole tape.
pub const ABORT_GRACE_MS: Millis = 5 * 60 * 1000;
/// How long a drive may take to become ready after a load: 15 minutes. An LTO-9 drive calibrating new media on its
/// first load takes up to two hours: raise `ready_timeout_ms` for such libraries.
pub const READY_TIMEOUT_MS: Millis = 15 * 60 * 1000;
/// TEST UNIT READY poll interval after a load, until the load time is learned.
pub const FIRST_POLL_MS: Millis = 100;
/// How long the polls stay at [`FIRST_POLL_MS`] before backing off (50 polls).
pub const FAST_POLL_FOR_MS: Millis = FIRST_POLL_MS * FAST_POLLS;
/// Polls at the first interval before backing off.
const FAST_POLLS: Millis = 50;
/// Longest poll interval (after the fast polls, the interval grows by half each time up to this).
pub const MAX_POLL_MS: Millis = 2_000;

/// With a learned load time, TEST UNIT READY every fiftieth of it (at least 10 ms, at most `max`): a 20 s load is
/// polled every 400 ms, so a mount is seen ready about 1 % late on average, at a cost of a few cheap commands.
fn ready_poll_interval(est: Millis, max: Millis) -> Millis {
    (est / 50).clamp(10, max)
}

/// The job scheduler of one library.
#[derive(Debug)]
pub(super) struct Mounts {
    queue: Vec<Job>,
    active: Vec<Job>,
    outcomes: VecDeque<Outcome>,
    progress: VecDeque<Progress>,
    poll_first: Millis,
    poll_max: Millis,
    /// Learned time from a move into a drive to the drive being ready (moving average), once observed.
    load_estimate: Option<Millis>,
    /// How long a drive may take to become ready after a load.
    ready_timeout: Millis,
    /// How long an aborted job waits for its drive's answer before giving up on it.
    abort_grace: Millis,
    /// Drives whose last load never became ready: mounts for any drive avoid them while a sound drive exists.
    suspect: Vec<u16>,
}

impl Default for Mounts {
    fn default() -> Self {
        Mounts::with_polling(FIRST_POLL_MS, MAX_POLL_MS)
    }
}

impl Mounts {
    /// A scheduler polling drives every `first` ms at first (50 times), then backing off to every `max` ms, until
    /// it has learned how long a load takes.
    pub fn with_polling(first: Millis, max: Millis) -> Mounts {
        Mounts {
            queue: Vec::new(),
            active: Vec::new(),
            outcomes: VecDeque::new(),
            progress: VecDeque::new(),
            poll_first: first.max(1),
            poll_max: max.max(first.max(1)),
            load_estimate: None,
            ready_timeout: READY_TIMEOUT_MS,
            abort_grace: ABORT_GRACE_MS,
            suspect: Vec::new(),
        }
    }

    /// The same, giving up on a drive that is not ready `ms` after its load (default [`READY_TIMEOUT_MS`]).
    #[must_use]
    pub fn with_ready_timeout(mut self, ms: Millis) -> Mounts {
        self.ready_timeout = ms;
        self
    }

    /// The same, giving up `ms` after a job was aborted (cancelled, timed out) on a drive that does not answer
    /// (default [`ABORT_GRACE_MS`]).
    #[must_use]
    pub fn with_abort_grace(mut self, ms: Millis) -> Mounts {
        self.abort_grace = ms;
        self
    }

    /// Queues a job. `deadline`: give up (and undo) at this time.
    pub fn submit(&mut self, id: u64, kind: JobKind, priority: i32, deadline: Option<Millis>) {
        self.queue.push(Job {
            id,
            kind,
            priority,
            deadline,
            step: Step::Queued,
            drive: None,
            device: None,
            abort: None,
            dest: None,
            ready_by: 0,
            loaded_at: 0,
            not_ready_at: 0,
            write: false,
            barcode: None,
            relocated: false,
            give_up_at: None,
            alerts: None,
            read: None,
            returning: false,
        });
    }

    /// Number of jobs queued or running.
    pub fn len(&self) -> usize {
        self.queue.len() + self.active.len()
    }

    /// Cancels a job: a queued one at once; a running one after its current step, undoing a mount.
    pub fn cancel(&mut self, id: u64, lib: &mut Machine) -> bool {
        if let Some(i) = self.queue.iter().position(|j| j.id == id) {
            let j = self.queue.remove(i);
            self.outcomes.push_back(Outcome {
                id: j.id,
                drive: None,
                result: Err(JobError::Cancelled),
                alerts: None,
                read: None,
            });
            return true;
        }
        match self.active.iter_mut().find(|j| j.id == id) {
            Some(j) if j.abort.is_none() => {
                j.abort = Some(JobError::Cancelled);
                // A mount whose move still waits for the robot is simply taken off the robot's queue: the library
                // reports the move cancelled and the job ends with nothing to undo.
                if j.step == Step::Moving && matches!(j.kind, JobKind::Mount { .. } | JobKind::Identify { .. }) {
                    lib.cancel_move(Origin::Job(id));
                }
                true
            }
            _ => false,
        }
    }

    /// Changes the priority of a job still waiting in the queue; false when it has started or is unknown. The
    /// queue is ordered again at the next [`Mounts::poll`].
    pub fn set_priority(&mut self, id: u64, priority: i32) -> bool {
        match self.queue.iter_mut().find(|j| j.id == id) {
            Some(j) => {
                j.priority = priority;
                true
            }
            None => false,
        }
    }

    /// The learned time from a move into a drive until it is ready, once known.
    pub fn load_estimate(&self) -> Option<Millis> {
        self.load_estimate
    }

    /// Starts from a load time learned earlier (persisted), unless one is already learned.
    pub fn assume_load_time(&mut self, ms: Millis) {
        if self.load_estimate.is_none() && ms > 0 {
            self.load_estimate = Some(ms);
        }
    }

    /// Marks a queued mount as mounting for writing: once the drive is ready, a cartridge it reports write
    /// protected (MODE SENSE) fails the mount with [`JobError::WriteProtected`] and is taken back out.
    pub fn set_write_intent(&mut self, id: u64) {
        if let Some(j) = self.queue.iter_mut().find(|j| j.id == id) {
            j.write = true;
        }
    }

    /// Drive elements whose last load did not become ready in time.
    pub fn suspect_drives(&self) -> &[u16] {
        &self.suspect
    }

    /// The next finished job.
    pub fn poll_outcome(&mut self) -> Option<Outcome> {
        self.outcomes.pop_front()
    }

    /// The next progress report.
    pub fn poll_progress(&mut self) -> Option<Progress> {
        self.progress.pop_front()
    }

    /// When `poll` should run next for timers.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let polls = self.active.iter().filter_map(|j| match j.step {
            Step::WaitingReady { next_at, .. } | Step::Cleaning { next_at } => next_at,
            _ => None,
        });
        let deadlines = self.queue.iter().chain(&self.active).filter(|j| j.abort.is_none()).filter_map(|j| j.deadline);
        let give_ups = self.active.iter().filter_map(|j| j.give_up_at);
        polls.chain(deadlines).chain(give_ups).min()
    }

    /// How many queued mounts exceed the free mapped drives: loaded but unmounted cartridges (deferred dismounts)
    /// should make room for that many.
    pub fn starved(&self, lib: &Machine) -> usize {
        let waiting = self.queue.iter().filter(|j| matches!(j.kind, JobKind::Mount { .. })).count();
        // Drives free now, and drives a dismount is emptying (they will be free without another eviction).
        let emptying = |a: u16| {
            self.queue
                .iter()
                .chain(&self.active)
                .any(|j| matches!(j.kind, JobKind::Dismount { drive, .. } if drive == a))
        };
        let free = lib
            .drive_elements()
            .iter()
            .filter(|e| e.device.is_some())
            .filter(|e| (!e.full && !self.drive_busy(e.address)) || emptying(e.address))
            .count();
        waiting.saturating_sub(free)
    }

    /// True when a job uses drive element `address` (or will: a queued dismount of it).
    pub fn uses_drive(&self, address: u16) -> bool {
        self.drive_busy(address)
            || self.queue.iter().any(|j| {
                matches!(j.kind, JobKind::Dismount { drive, .. } | JobKind::Clean { drive, .. } if drive == address)
            })
    }

    /// True when a job (queued or running) mounts the cartridge in `source`.
    pub fn uses_source(&self, source: u16) -> bool {
        self.queue.iter().chain(&self.active).any(
            |j| {
                matches!(j.kind, JobKind::Mount { source: s, .. } | JobKind::Clean { cleaner: s, .. } | JobKind::Identify { source: s, .. } if s == source)
            },
        )
    }

    /// The kind of the job running on drive element `address`: `Some(true)` a mount (the robot is bringing the
    /// cartridge or the drive is threading it), `Some(false)` a dismount, None when no job runs there.
    pub fn job_on_drive(&self, address: u16) -> Option<bool> {
        self.active
            .iter()
            .find(|j| j.drive == Some(address))
            .map(|j| matches!(j.kind, JobKind::Mount { .. }) && j.abort.is_none())
    }

    fn drive_busy(&self, address: u16) -> bool {
        self.active.iter().any(|j| j.drive == Some(address))
    }

    /// Drive device `dev` disappeared (the library already failed its commands in flight, whose jobs ended as
    /// gone): a mount whose move into it still waits for the robot is taken off the robot's queue, one waiting to
    /// poll it ends now, and queued mounts or dismounts naming its element fail; all with [`JobError::DriveGone`].
    pub fn drive_gone(&mut self, dev: usize, lib: &mut Machine) {
        let mut idx = 0;
        while idx < self.active.len() {
            let j = &self.active[idx];
            if j.device != Some(dev) {
                idx += 1;
                continue;
            }
            match j.step {
                Step::Moving if matches!(j.kind, JobKind::Mount { .. } | JobKind::Identify { .. }) => {
                    let id = j.id;
                    // Taken back: the cancelled move ends the job with this error. Running: the cartridge lands
                    // in the drive and the first poll fails the job.
                    self.active[idx].abort = Some(JobError::DriveGone);
                    lib.cancel_move(Origin::Job(id));
                    idx += 1;
                }
                Step::WaitingReady { next_at: Some(_), .. } => self.finish(idx, Err(JobError::DriveGone)),
                _ => idx += 1,
            }
        }
        let gone = |a: u16| lib.element(a).and_then(|e| e.device) == Some(dev);
        let mut i = 0;
        while i < self.queue.len() {
            let names_it = match &self.queue[i].kind {
                JobKind::Mount { drive: DriveChoice::Element(a), .. }
                | JobKind::Identify { drive: DriveChoice::Element(a), .. }
                | JobKind::Dismount { drive: a, .. }
                | JobKind::Clean { drive: a, .. } => gone(*a),
                JobKind::Mount { .. } | JobKind::Identify { .. } => false,
            };
            if names_it {
                self.fail(i, JobError::DriveGone);
            } else {
                i += 1;
            }
        }
    }

    /// Starts what can start and runs timers. Call after every input.
    pub fn poll(&mut self, lib: &mut Machine, now: Millis) {
        // Deadlines.
        for i in (0..self.queue.len()).rev() {
            if self.queue[i].deadline.is_some_and(|d| d <= now) {
                let j = self.queue.remove(i);
                self.outcomes.push_back(Outcome {
                    id: j.id,
                    drive: None,
                    result: Err(JobError::TimedOut),
                    alerts: None,
                    read: None,
                });
            }
        }
        for j in &mut self.active {
            if j.abort.is_none() && j.deadline.is_some_and(|d| d <= now) {
                j.abort = Some(JobError::TimedOut);
                // Still waiting for the robot: take the move back, nothing to undo.
                if j.step == Step::Moving && matches!(j.kind, JobKind::Mount { .. } | JobKind::Identify { .. }) {
                    lib.cancel_move(Origin::Job(j.id));
                }
            }
        }
        // Aborted jobs: a drive that does not answer within the grace is given up (whatever is in flight to it).
        for j in &mut self.active {
            if j.abort.is_some() && j.give_up_at.is_none() {
                j.give_up_at = Some(now + self.abort_grace);
            }
        }
        let mut idx = 0;
        while idx < self.active.len() {
            let j = &self.active[idx];
            // (An undo's unload has no destination yet; its move back is the robot's, not the drive's.)
            let on_drive = match j.step {
                Step::WaitingReady { .. }
                | Step::CheckingWriteProtect
                | Step::Unloading
                | Step::ReadingAlerts
                | Step::ReadingBlock
                | Step::Cleaning { .. } => true,
                Step::Undoing => j.dest.is_none(),
                _ => false,
            };
            if on_drive && j.give_up_at.is_some_and(|t| t <= now) {
                if let Some(d) = j.drive.filter(|d| !self.suspect.contains(d)) {
                    log::warn!("drive element {d} does not answer: job {} gives up on it", j.id);
                    self.suspect.push(d);
                }
                self.finish(idx, Err(JobError::DriveGone));
            } else {
                idx += 1;
            }
        }
        // Aborted jobs waiting for the drive: undo now.
        let aborting: Vec<u64> = self
            .active
            .iter()
            .filter(|j| {
                j.abort.is_some() && matches!(j.step, Step::WaitingReady { .. } | Step::Cleaning { next_at: Some(_) })
            })
            .map(|j| j.id)
            .collect();
        for id in aborting {
            self.start_undo(id, lib);
        }
        // Refused mounts whose cartridge the re-read has found (a drive's first poll is due at once).
        self.recheck(lib, now);
        // Cleaning drives asked whether they ejected the cleaner.
        for j in &mut self.active {
            if let Step::Cleaning { next_at: Some(t) } = j.step {
                if let (true, Some(dev)) = (t <= now, j.device) {
                    lib.drive_command(Origin::Job(j.id), dev, cdb::test_unit_ready().into_command(COMMAND_TIMEOUT));
                    j.step = Step::Cleaning { next_at: None };
                }
            }
        }
        // TEST UNIT READY polls that are due.
        for j in &mut self.active {
            if let Step::WaitingReady { next_at: Some(t), interval } = j.step {
                if t <= now {
                    if let Some(dev) = j.device {
                        lib.drive_command(
                            Origin::Job(j.id),
                            dev,
                            cdb::test_unit_ready().into_command(std::time::Duration::from_secs(60)),
                        );
                        j.step = Step::WaitingReady { next_at: None, interval };
                    }
                }
            }
        }
        if lib.state() == LibraryState::Offline {
            for j in self.queue.drain(..) {
                self.outcomes.push_back(Outcome {
                    id: j.id,
                    drive: None,
                    result: Err(JobError::Offline),
                    alerts: None,
                    read: None,
                });
            }
            // Moves out that were waiting for the robot cannot happen either, nor a refused mount's next step.
            let waits_for_robot = |j: &Job| matches!(j.step, Step::AwaitingRobot | Step::Rechecking { .. });
            while let Some(idx) = self.active.iter().position(waits_for_robot) {
                let abort = self.active[idx].abort.clone();
                self.finish(idx, Err(abort.unwrap_or(JobError::Offline)));
            }
            return;
        }
        if !matches!(lib.state(), LibraryState::Ready | LibraryState::Busy) {
            return;
        }
        // Priority first, then age (ids grow with submission).
        self.queue.sort_by_key(|j| (std::cmp::Reverse(j.priority), j.id));
        // Dismounts start at once, robot or not: unloading is the drive's work, and it overlaps the robot's moves.
        // Their move out then waits for the robot.
        let mut i = 0;
        while i < self.queue.len() {
            if matches!(self.queue[i].kind, JobKind::Dismount { .. }) {
                match self.try_start(i, lib, now) {
                    Start::Started | Start::Failed => continue,
                    Start::Wait => {}
                }
            }
            i += 1;
        }
        self.next_move(lib, now);
    }

    /// Decides the robot's next move, once it is free (so priorities and freed drives count until the last
    /// moment): the highest priority first; at equal priority a mount into a free drive before a move out of one.
    /// Refilling a drive as soon as it is emptied keeps the drives busy while the robot serves the others; moving
    /// all unloaded cartridges out first would leave every drive empty at once (out-first costs 8-12 % of
    /// makespan on the mounts bench, where mount-first matches the optimal schedule).
    fn next_move(&mut self, lib: &mut Machine, now: Millis) {
        while lib.moves_pending() == 0 {
            let out = self
                .active
                .iter()
                .enumerate()
                .filter(|(_, j)| j.step == Step::AwaitingRobot)
                .min_by_key(|(i, j)| (std::cmp::Reverse(j.priority), *i))
                .map(|(i, j)| (i, j.priority));
            let mut i = 0;
            while i < self.queue.len() && out.is_none_or(|(_, p)| self.queue[i].priority >= p) {
                if matches!(self.queue[i].kind, JobKind::Dismount { .. }) {
                    i += 1;
                    continue;
                }
                match self.try_start(i, lib, now) {
                    Start::Started => return,
                    Start::Failed => {}
                    Start::Wait => i += 1,
                }
            }
            match out {
                // A failed move out ends its job: look again.
                Some((idx, _)) => {
                    if let Start::Started = self.move_out(idx, lib) {
                        return;
                    }
                }
                None => return,
            }
        }
    }

    /// Mounts whose move was refused, once the library's re-read has settled: a cartridge (same label) found in a
    /// drive is mounted there (the job's drive becomes that drive, polled until ready); one found in a slot is
    /// mounted from there, once; otherwise the mount fails with the refusal (and a cartridge found nowhere makes
    /// the library rescan).
    fn recheck(&mut self, lib: &mut Machine, now: Millis) {
        if !lib.inventory_settled() {
            return;
        }
        let mut idx = 0;
        while idx < self.active.len() {
            let Step::Rechecking { error } = self.active[idx].step else {
                idx += 1;
                continue;
            };
            if let Some(abort) = self.active[idx].abort.clone() {
                self.finish(idx, Err(abort));
                continue;
            }
            let label = self.active[idx].barcode.clone();
            let found = lib.elements().iter().find(|e| e.full && e.barcode.is_some() && e.barcode == label).cloned();
            match found {
                Some(e) if e.element_type == ElementType::DataTransfer => {
                    let usable = e.device.is_some_and(|d| lib.drive_usable(d)) && !self.drive_busy(e.address);
                    if !usable {
                        self.finish(idx, Err(JobError::Move(error)));
                        continue;
                    }
                    log::info!(
                        "job {}: the cartridge is already in drive element {}; mounted there",
                        self.active[idx].id,
                        e.address
                    );
                    let j = &mut self.active[idx];
                    j.drive = Some(e.address);
                    j.device = e.device;
                    j.loaded_at = now;
                    j.not_ready_at = now;
                    j.ready_by = now + self.ready_timeout;
                    j.step = Step::WaitingReady { next_at: Some(now), interval: self.poll_first };
                    self.progress.push_back(Progress::WaitingForDrive { id: j.id });
                    idx += 1;
                }
                Some(e) if e.element_type != ElementType::MediumTransport && !self.active[idx].relocated => {
                    let mut j = self.active.remove(idx);
                    log::info!("job {}: the cartridge is in element {}; mounting it from there", j.id, e.address);
                    if let JobKind::Mount { source, .. } = &mut j.kind {
                        *source = e.address;
                    }
                    j.relocated = true;
                    j.step = Step::Queued;
                    j.drive = None;
                    j.device = None;
                    self.queue.push(j);
                }
                other => {
                    if other.is_none() {
                        lib.request_rescan();
                    }
                    self.finish(idx, Err(JobError::Move(error)));
                }
            }
        }
    }

    fn try_start(&mut self, i: usize, lib: &mut Machine, now: Millis) -> Start {
        let job = self.queue[i].clone();
        match &job.kind {
            JobKind::Mount { source, drive } | JobKind::Identify { source, drive } => {
                let src_busy = self.active.iter().any(|j| {
                    matches!(&j.kind, JobKind::Mount { source: s, .. } | JobKind::Identify { source: s, .. } if s == source)
                });
                if src_busy {
                    return Start::Wait;
                }
                let free = |e: &Element| {
                    e.element_type == ElementType::DataTransfer
                        && !e.full
                        && e.device.is_some_and(|d| lib.drive_usable(d))
                        && !self.drive_busy(e.address)
                };
                let target = match drive {
                    DriveChoice::Element(a) => match lib.element(*a) {
                        Some(e) if free(e) => Some((e.address, e.device)),
                        Some(e) if e.device.is_some_and(|d| lib.drive_is_gone(d)) => {
                            self.fail(i, JobError::DriveGone);
                            return Start::Failed;
                        }
                        Some(e) if e.element_type == ElementType::DataTransfer && e.device.is_none() => {
                            self.fail(i, JobError::Unmapped(*a));
                            return Start::Failed;
                        }
                        Some(e) if e.element_type == ElementType::DataTransfer => None,
                        _ => {
                            self.fail(i, JobError::DriveUnavailable(*a));
                            return Start::Failed;
                        }
                    },
                    DriveChoice::Any | DriveChoice::AnyOf(_) => {
                        let allowed = |e: &Element| match drive {
                            DriveChoice::AnyOf(list) => list.contains(&e.address),
                            _ => true,
                        };
                        // A drive that failed to become ready is used only when every allowed drive did.
                        let sound = |e: &Element| !self.suspect.contains(&e.address);
                        let any_sound = lib.drive_elements().iter().any(|e| {
                            e.element_type == ElementType::DataTransfer
                                && e.device.is_some_and(|d| lib.drive_usable(d))
                                && allowed(e)
                                && sound(e)
                        });
                        let mut candidates = lib.drive_elements().iter().filter(|e| free(e) && allowed(e));
                        candidates.find(|e| !any_sound || sound(e)).map(|e| (e.address, e.device))
                    }
                };
                let Some((address, device)) = target else { return Start::Wait };
                let mut job = self.queue.remove(i);
                match lib.request_move(Origin::Job(job.id), *source, address) {
                    Ok(()) => {
                        job.barcode = lib.element(*source).and_then(|e| e.barcode.clone());
                        job.drive = Some(address);
                        job.device = device;
                        job.step = Step::Moving;
                        job.ready_by = now + self.ready_timeout;
                        self.progress.push_back(Progress::Started { id: job.id, drive: address });
                        self.active.push(job);
                        Start::Started
                    }
                    Err(e) => {
                        self.move_refused(job.id, e);
                        Start::Failed
                    }
                }
            }
            JobKind::Clean { cleaner, drive } => {
                let Some(e) = lib.element(*drive) else {
                    self.fail(i, JobError::DriveUnavailable(*drive));
                    return Start::Failed;
                };
                if e.device.is_some_and(|d| lib.drive_is_gone(d)) {
                    self.fail(i, JobError::DriveGone);
                    return Start::Failed;
                }
                let Some(device) = e.device else {
                    self.fail(i, JobError::Unmapped(*drive));
                    return Start::Failed;
                };
                if e.full || self.drive_busy(*drive) || !lib.drive_usable(device) {
                    return Start::Wait;
                }
                let mut job = self.queue.remove(i);
                match lib.request_move(Origin::Job(job.id), *cleaner, *drive) {
                    Ok(()) => {
                        job.drive = Some(*drive);
                        job.device = Some(device);
                        job.step = Step::Moving;
                        self.progress.push_back(Progress::Started { id: job.id, drive: *drive });
                        self.active.push(job);
                        Start::Started
                    }
                    Err(e) => {
                        self.move_refused(job.id, e);
                        Start::Failed
                    }
                }
            }
            JobKind::Dismount { drive, .. } => {
                if self.drive_busy(*drive) {
                    return Start::Wait;
                }
                let device = lib.element(*drive).and_then(|e| e.device);
                if device.is_some_and(|d| lib.drive_is_gone(d)) {
                    self.fail(i, JobError::DriveGone);
                    return Start::Failed;
                }
                let mut job = self.queue.remove(i);
                job.drive = Some(*drive);
                job.device = device;
                self.progress.push_back(Progress::Started { id: job.id, drive: *drive });
                match device {
                    // The drive's TapeAlert flags first (cleaning needed, media or hardware trouble), then unload.
                    Some(dev) => {
                        job.step = Step::ReadingAlerts;
                        lib.drive_command(
                            Origin::Job(job.id),
                            dev,
                            cdb::log_sense(0x2E, 512).into_command(COMMAND_TIMEOUT),
                        );
                        self.active.push(job);
                        Start::Started
                    }
                    None => {
                        // No drive device to unload through: the library must eject by itself.
                        job.step = Step::AwaitingRobot;
                        self.active.push(job);
                        Start::Started
                    }
                }
            }
        }
    }

    /// A job whose first move the library would not take ends with that refusal.
    fn move_refused(&mut self, id: u64, e: MoveError) {
        self.outcomes.push_back(Outcome { id, drive: None, result: Err(JobError::Move(e)), alerts: None, read: None });
    }

    fn fail(&mut self, i: usize, e: JobError) {
        let j = self.queue.remove(i);
        self.outcomes.push_back(Outcome { id: j.id, drive: j.drive, result: Err(e), alerts: None, read: None });
    }

    fn finish(&mut self, idx: usize, result: Result<(), JobError>) {
        let j = self.active.remove(idx);
        self.outcomes.push_back(Outcome { id: j.id, drive: j.drive, result, alerts: j.alerts, read: j.read });
    }

    /// Moves the cartridge out of the job's drive to its home or a free slot.
    fn move_out(&mut self, idx: usize, lib: &mut Machine) -> Start {
        let j = &self.active[idx];
        let Some(drive) = j.drive else { return Start::Failed };
        let home = match &j.kind {
            JobKind::Dismount { home, .. } => *home,
            JobKind::Mount { source, .. } | JobKind::Identify { source, .. } => Some(*source),
            JobKind::Clean { cleaner, .. } => Some(*cleaner),
        }
        .or_else(|| lib.element(drive).and_then(|e| e.source));
        let reserved: Vec<u16> = self.active.iter().filter_map(|x| x.dest).collect();
        let free_home = home.filter(|h| lib.element(*h).is_some_and(|e| !e.full) && !reserved.contains(h));
        let dest = free_home.or_else(|| {
            lib.elements()
                .iter()
                .find(|e| e.element_type == ElementType::Storage && !e.full && !reserved.contains(&e.address))
                .map(|e| e.address)
        });
        let Some(dest) = dest else {
            let abort = self.active[idx].abort.clone();
            self.finish(idx, Err(abort.unwrap_or(JobError::NoFreeSlot)));
            return Start::Failed;
        };
        let id = self.active[idx].id;
        self.active[idx].dest = Some(dest);
        let back = self.active[idx].abort.is_some() || self.active[idx].returning;
        self.active[idx].step = if back { Step::Undoing } else { Step::Moving };
        match lib.request_move(Origin::Job(id), drive, dest) {
            Ok(()) => Start::Started,
            Err(e) => {
                let abort = self.active[idx].abort.clone();
                self.finish(idx, Err(abort.unwrap_or(JobError::Move(e))));
                Start::Failed
            }
        }
    }

    fn start_undo(&mut self, id: u64, lib: &mut Machine) {
        let Some(idx) = self.active.iter().position(|j| j.id == id) else { return };
        match self.active[idx].device {
            Some(dev) => {
                self.active[idx].step = Step::Undoing;
                self.active[idx].dest = None;
                lib.drive_command(
                    Origin::Job(id),
                    dev,
                    cdb::load_unload(false, false).into_command(std::time::Duration::from_secs(15 * 60)),
                );
            }
            None => self.active[idx].step = Step::AwaitingRobot,
        }
    }

    /// Offers a library event. Returns it back when it is not the scheduler's.
    pub fn handle_event(&mut self, event: Event, lib: &mut Machine, now: Millis) -> Option<Event> {
        match event {
            Event::MoveFinished { id: Origin::Job(id), result } => {
                self.on_move(id, result, lib, now);
                None
            }
            Event::DriveCommand { id: Origin::Job(id), result, .. } => {
                self.on_drive(id, result, lib, now);
                None
            }
            other => Some(other),
        }
    }

    fn on_move(&mut self, id: u64, result: Result<(), MoveError>, lib: &mut Machine, now: Millis) {
        let Some(idx) = self.active.iter().position(|j| j.id == id) else { return };
        let job = &self.active[idx];
        let undoing = job.step == Step::Undoing;
        match (&job.kind, result) {
            (JobKind::Mount { drive, .. }, Err(e @ MoveError::Refused(f)))
                if !undoing && job.abort.is_none() && job.barcode.is_some() && recheckable(f, drive) =>
            {
                // The cache was wrong about the source or the destination: the library re-reads them; go on from
                // where the cartridge really is once it has.
                let j = &mut self.active[idx];
                j.step = Step::Rechecking { error: e };
                j.drive = None;
                j.device = None;
                self.recheck(lib, now);
            }
            (_, Err(e)) => {
                let abort = job.abort.clone();
                self.finish(idx, Err(abort.unwrap_or(JobError::Move(e))));
            }
            // An identified cartridge is home again.
            (_, Ok(())) if undoing && job.returning && job.abort.is_none() => self.finish(idx, Ok(())),
            (_, Ok(())) if undoing => {
                let abort = job.abort.clone().unwrap_or(JobError::Cancelled);
                self.finish(idx, Err(abort));
            }
            (JobKind::Mount { .. } | JobKind::Identify { .. }, Ok(())) => {
                if job.abort.is_some() {
                    let id = job.id;
                    self.start_undo(id, lib);
                } else if job.device.is_none() {
                    // Nothing to poll: the move is all we can do.
                    self.finish(idx, Ok(()));
                } else {
                    self.progress.push_back(Progress::WaitingForDrive { id });
                    // Poll at once the first time; once the drives' load time is known, first poll just before it
                    // is due (then see `again` in `on_drive`: a twentieth of it until due, a fiftieth after).
                    let (next_at, interval) = match self.load_estimate {
                        None => (now, self.poll_first),
                        Some(est) => (now + est * 9 / 10, ready_poll_interval(est, self.poll_max)),
                    };
                    self.active[idx].loaded_at = now;
                    self.active[idx].not_ready_at = now;
                    self.active[idx].step = Step::WaitingReady { next_at: Some(next_at), interval };
                }
            }
            (JobKind::Dismount { .. }, Ok(())) => self.finish(idx, Ok(())),
            // The cleaner is back in its slot.
            (JobKind::Clean { .. }, Ok(())) if job.dest.is_some() => self.finish(idx, Ok(())),
            (JobKind::Clean { .. }, Ok(())) => {
                if job.abort.is_some() {
                    let id = job.id;
                    self.start_undo(id, lib);
                } else if job.device.is_none() {
                    self.finish(idx, Err(JobError::Unmapped(job.drive.unwrap_or_default())));
                } else {
                    let j = &mut self.active[idx];
                    j.loaded_at = now;
                    j.ready_by = now + CLEAN_TIMEOUT_MS;
                    j.step = Step::Cleaning { next_at: Some(now + CLEAN_POLL_MS) };
                }
            }
        }
    }

    /// The TapeAlert page was read (or could not be: a drive without the page is unloaded all the same): a
    /// dismount unloads, a cleaning moves the ejected cleaner back.
    fn alerts_read(&mut self, idx: usize, lib: &mut Machine) {
        let j = &mut self.active[idx];
        match (&j.kind, j.device) {
            (JobKind::Dismount { .. }, Some(dev)) => {
                j.step = Step::Unloading;
                lib.drive_command(
                    Origin::Job(j.id),
                    dev,
                    cdb::load_unload(false, false).into_command(std::time::Duration::from_secs(15 * 60)),
                );
            }
            _ => j.step = Step::AwaitingRobot,
        }
    }

    /// With a (new) load estimate, the drives still loading are polled from just before it is due, often.
    fn replan_polls(&mut self, est: Millis, now: Millis) {
        let interval = ready_poll_interval(est, self.poll_max);
        for j in &mut self.active {
            if let Step::WaitingReady { next_at, .. } = j.step {
                let due = (j.loaded_at + est * 9 / 10).max(now);
                j.step = Step::WaitingReady { next_at: next_at.map(|t| t.min(due).max(now)), interval };
            }
        }
    }

    fn on_drive(&mut self, id: u64, result: Result<Response, TransportError>, lib: &mut Machine, now: Millis) {
        let Some(idx) = self.active.iter().position(|j| j.id == id) else { return };
        let step = self.active[idx].step.clone();
        let r = match result {
            Ok(r) => r,
            Err(TransportError::TimedOut) => {
                if let Step::WaitingReady { interval, .. } = step {
                    self.active[idx].step = Step::WaitingReady { next_at: Some(now + interval), interval };
                    return;
                }
                // A cleaning drive is asked again; a TapeAlert read that got no answer goes on without it.
                if let Step::Cleaning { .. } = step {
                    self.active[idx].step = Step::Cleaning { next_at: Some(now + CLEAN_POLL_MS) };
                    return;
                }
                if step == Step::ReadingAlerts {
                    return self.alerts_read(idx, lib);
                }
                if step == Step::CheckingWriteProtect && self.active[idx].abort.is_none() {
                    // The drive would not say: the mount stands (a write will tell).
                    return self.finish(idx, Ok(()));
                }
                return self.finish(idx, Err(JobError::DriveGone));
            }
            // Gone (or failed in the driver): the cartridge, if any, stays in the drive; nothing can be undone.
            Err(_) => return self.finish(idx, Err(JobError::DriveGone)),
        };
        let action = classify(r.status, &r.sense);
        match step {
            Step::Unloading | Step::Undoing => match action {
                // No medium: already ejected. A unit attention: the command did not run; the move still works on
                // libraries that eject by themselves, so go on.
                Action::Done | Action::Fail(Failure::MediumNotPresent) | Action::Rescan { .. } => {
                    self.active[idx].step = Step::AwaitingRobot;
                }
                Action::Retry { after_ms } | Action::WaitReady { after_ms } if after_ms < 60_000 => {
                    // Simplest correct reaction: try the move; a library that needs the unload will refuse it.
                    self.active[idx].step = Step::AwaitingRobot;
                }
                // A drive without LOAD UNLOAD: the library ejects by itself (or refuses the move, which says so).
                Action::Fail(Failure::Unsupported) => self.active[idx].step = Step::AwaitingRobot,
                Action::Fail(f) => {
                    let abort = self.active[idx].abort.clone();
                    self.finish(idx, Err(abort.unwrap_or(JobError::UnloadRefused(f))));
                }
                Action::Retry { .. } | Action::WaitReady { .. } => {
                    self.finish(idx, Err(JobError::UnloadRefused(Failure::RetriesExhausted)))
                }
            },
            Step::WaitingReady { interval, .. } => {
                if self.active[idx].abort.is_some() {
                    let id = self.active[idx].id;
                    return self.start_undo(id, lib);
                }
                let again = |s: &mut Self, interval: Millis| {
                    // While the load time is unknown: often at first, then backing off. With an estimate: every
                    // twentieth of it until it is due, then every fiftieth (few polls, and readiness seen
                    // within about one percent).
                    let fast = now.saturating_sub(s.active[idx].loaded_at) < s.poll_first * FAST_POLLS;
                    let (wait, next) = match s.load_estimate {
                        Some(est) => {
                            let due = s.active[idx].loaded_at + est;
                            let coarse = (est / 20).clamp(10, s.poll_max);
                            (if now + coarse <= due { coarse } else { interval }, interval)
                        }
                        None if fast => (interval, interval),
                        None => (interval, (interval + interval / 2).min(s.poll_max)),
                    };
                    s.active[idx].not_ready_at = now;
                    s.active[idx].step = Step::WaitingReady { next_at: Some(now + wait), interval: next };
                };
                match action {
                    Action::Done => {
                        let drive = self.active[idx].drive;
                        self.suspect.retain(|d| Some(*d) != drive);
                        // The load ended between the last "not ready" and now: take the middle.
                        let j = &self.active[idx];
                        let took = (j.not_ready_at + now).div_ceil(2).saturating_sub(j.loaded_at);
                        let est = match self.load_estimate {
                            None => took,
                            Some(est) => (3 * est + took) / 4,
                        };
                        self.load_estimate = Some(est);
                        self.replan_polls(est, now);
                        if let (JobKind::Identify { .. }, Some(dev)) = (&self.active[idx].kind, self.active[idx].device)
                        {
                            self.active[idx].step = Step::ReadingBlock;
                            let command = cdb::read_6(IDENTIFY_READ_BYTES).into_command(READ_TIMEOUT);
                            lib.drive_command(Origin::Job(id), dev, command);
                            return;
                        }
                        match (self.active[idx].write, self.active[idx].device) {
                            // The header's device-specific byte says whether the tape is write protected (the st
                            // driver asks the same way: page 0, 12 bytes).
                            (true, Some(dev)) => {
                                self.active[idx].step = Step::CheckingWriteProtect;
                                let id = self.active[idx].id;
                                let command = cdb::mode_sense_6(0x00, false, 12).into_command(COMMAND_TIMEOUT);
                                lib.drive_command(Origin::Job(id), dev, command);
                            }
                            _ => self.finish(idx, Ok(())),
                        }
                    }
                    // Not threaded yet, becoming ready, or the unit attention of a new medium: poll again.
                    Action::WaitReady { .. }
                    | Action::Retry { .. }
                    | Action::Rescan { .. }
                    | Action::Fail(Failure::MediumNotPresent)
                        if now < self.active[idx].ready_by =>
                    {
                        again(self, interval)
                    }
                    Action::Fail(f) => {
                        let id = self.active[idx].id;
                        self.active[idx].abort = Some(JobError::NotReady(f));
                        self.start_undo(id, lib);
                    }
                    _ => {
                        let (id, drive) = (self.active[idx].id, self.active[idx].drive);
                        if let Some(d) = drive.filter(|d| !self.suspect.contains(d)) {
                            log::warn!("drive element {d} did not become ready; mounts avoid it until it does");
                            self.suspect.push(d);
                        }
                        self.active[idx].abort = Some(JobError::NotReady(Failure::RetriesExhausted));
                        self.start_undo(id, lib);
                    }
                }
            }
            Step::CheckingWriteProtect => {
                let protected = (action == Action::Done)
                    .then(|| ModeParameters::parse_mode6(&r.data).ok())
                    .flatten()
                    .is_some_and(|m| m.write_protected());
                if protected || self.active[idx].abort.is_some() {
                    let id = self.active[idx].id;
                    if protected {
                        self.active[idx].abort = Some(JobError::WriteProtected);
                    }
                    self.start_undo(id, lib);
                } else {
                    // Not protected, or the drive would not say: the mount stands (a write will tell).
                    self.finish(idx, Ok(()));
                }
            }
            Step::ReadingBlock => {
                let sense = crate::scsi::sense::Sense::parse(&r.sense).ok();
                let read = match (r.status, sense) {
                    (0, _) => BlockRead::Data(r.data.clone()),
                    // A longer block: its first bytes, with ILI.
                    (_, Some(s)) if s.ili && s.key == crate::scsi::sense::SenseKey::NoSense => {
                        BlockRead::Data(r.data.clone())
                    }
                    (_, Some(s)) if s.key == crate::scsi::sense::SenseKey::BlankCheck => BlockRead::Blank,
                    (_, Some(s)) => BlockRead::Failed(format!("{} {:02X}h/{:02X}h", s.key.name(), s.asc.0, s.asc.1)),
                    (status, None) => BlockRead::Failed(format!("status {status:02X}h")),
                };
                let j = &mut self.active[idx];
                j.read = Some(read);
                j.returning = true;
                self.start_undo(id, lib);
            }
            Step::ReadingAlerts => {
                if action == Action::Done {
                    match TapeAlerts::parse(&r.data) {
                        Ok(a) => self.active[idx].alerts = Some(a),
                        Err(e) => log::debug!("job {id}: TapeAlert page unreadable: {e}"),
                    }
                }
                self.alerts_read(idx, lib);
            }
            Step::Cleaning { .. } => {
                let j = &mut self.active[idx];
                if j.abort.is_some() {
                    return self.start_undo(id, lib);
                }
                match action {
                    // Ejected: the cleaning is over; what the drive says about it is in its TapeAlert flags.
                    Action::Fail(Failure::MediumNotPresent) => {
                        if let Some(dev) = j.device {
                            j.step = Step::ReadingAlerts;
                            lib.drive_command(
                                Origin::Job(id),
                                dev,
                                cdb::log_sense(0x2E, 512).into_command(COMMAND_TIMEOUT),
                            );
                        }
                    }
                    // Loaded as a data cartridge: not a cleaner. Taken back out.
                    Action::Done => {
                        j.abort = Some(JobError::NotACleaner);
                        self.start_undo(id, lib);
                    }
                    _ if now >= j.ready_by => {
                        if let Some(d) = j.drive.filter(|d| !self.suspect.contains(d)) {
                            log::warn!("drive element {d} did not eject the cleaning cartridge in time");
                            self.suspect.push(d);
                        }
                        self.active[idx].abort = Some(JobError::CleanerStuck);
                        self.start_undo(id, lib);
                    }
                    // Cleaning ("cleaning cartridge installed"), becoming ready, a unit attention: ask again.
                    Action::Fail(Failure::CleaningCartridgeInstalled)
                    | Action::WaitReady { .. }
                    | Action::Retry { .. }
                    | Action::Rescan { .. } => j.step = Step::Cleaning { next_at: Some(now + CLEAN_POLL_MS) },
                    Action::Fail(f) => {
                        j.abort = Some(JobError::NotReady(f));
                        self.start_undo(id, lib);
                    }
                }
            }
            Step::Queued | Step::Moving | Step::AwaitingRobot | Step::Rechecking { .. } => {}
        }
    }
}

/// True when a mount whose move was refused with `f` may go on from where the re-read finds its cartridge: the
/// source was empty (it is elsewhere), or the destination was full and the mount may use another drive.
fn recheckable(f: Failure, drive: &DriveChoice) -> bool {
    match f {
        Failure::SourceEmpty => true,
        Failure::DestinationFull => !matches!(drive, DriveChoice::Element(_)),
        _ => false,
    }
}

enum Start {
    Started,
    Failed,
    Wait,
}
