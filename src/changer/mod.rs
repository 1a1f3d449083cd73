//! Library state machines: one [`Library`] per changer, sans-IO, with one front.
//!
//! # Primer
//! A library is a changer device (the robot and its elements) plus the tape drives it serves, each a separate SCSI
//! device. The library never touches a device: it emits [`Outgoing`] commands (`poll_request`), the caller submits
//! them on the device's transport and hands each finished command back (`handle_completion`). Time is a parameter:
//! the caller passes its monotonic clock in milliseconds (`now`) and calls `handle_timeout` when the deadline from
//! `poll_timeout` passes.
//!
//! Inside, two parts work together and nobody outside carries messages between them: the device machine
//! ([`machine::Machine`]: probing, scanning, moves, drive commands) and the job scheduler ([`mounts`]: mount and
//! dismount jobs, the robot's next move, drive polling). What the library learns comes out as [`Event`]s
//! (`poll_event`: state, identity, inventory), what its jobs do as [`Progress`] and [`Outcome`]s (`poll_progress`,
//! `poll_outcome`).
//!
//! Call order for the caller after any input (`handle_*`, `submit_job`, `cancel_job`, ...): drain `poll_request`,
//! then `poll_event`, `poll_progress` and `poll_outcome`, then read `poll_timeout`.
//!
//! Commands to the changer are serialized (one in flight: the robot is one resource and most libraries process
//! one medium-changer command at a time); commands to different drives run in parallel.
//!
//! States ([`crate::model::LibraryState`]): probing (INQUIRY, VPD 80h/83h, MODE SENSE 1Dh/1Fh, every drive's
//! INQUIRY and VPD 80h) → scanning (READ ELEMENT STATUS per element type, in chunks, with VOLTAG, and DVCID for
//! drives where supported) → ready; busy while a move runs; offline when the changer is gone or failed. Any UNIT
//! ATTENTION makes the cached inventory suspect: the library rescans (re-probing after a reset) and reports the
//! result as a full inventory for the caller to reconcile.

pub mod bound;
pub mod machine;
pub mod mounts;
mod policy;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::VecDeque;

use crate::model::LibraryState;
use crate::scsi::mode::ElementAddressAssignment;
use crate::transport::{Command, Response, Tag, TransportError};

pub use machine::DOOR_TIMEOUT_MS;
pub use machine::{DeviceRef, Element, Event, Identity, LibraryOptions, MoveError, Origin, Outgoing};
pub use mounts::{BlockRead, DriveChoice, JobError, JobId, JobKind, Outcome, Progress, CLEAN_TIMEOUT_MS};
pub use policy::{map_drives, same_serial, DriveMapping};

use machine::Machine;
use mounts::Mounts;

/// Milliseconds on the caller's monotonic clock.
pub type Millis = u64;

/// How long a deferred dismount leaves the cartridge loaded by default: one minute.
pub const DEFERRED_DISMOUNT_MS: Millis = 60_000;

/// One library: its device machine and its jobs, behind one `handle_*` / `poll_*` front. See the module primer.
#[derive(Debug)]
pub struct Library {
    machine: Machine,
    jobs: Mounts,
    /// Events for the caller (the machine's, less the ones its jobs consumed).
    events: VecDeque<Event>,
    now: Millis,
    /// Jobs were submitted or reordered since the last pump: the scheduler runs before the next output is read.
    unsettled: bool,
}

impl Library {
    /// A library for a changer with `drive_count` drive devices. Probing starts at once.
    pub fn new(drive_count: usize, options: LibraryOptions, now: Millis) -> Library {
        let jobs = Mounts::with_polling(options.poll_first_ms, options.poll_max_ms)
            .with_ready_timeout(options.ready_timeout_ms)
            .with_abort_grace(options.abort_grace_ms);
        let mut lib = Library {
            machine: Machine::new(drive_count, options, now),
            jobs,
            events: VecDeque::new(),
            now,
            unsettled: false,
        };
        lib.pump();
        lib
    }

    /// Lets the jobs react to what the machine did, and the machine to what the jobs asked, until both are settled.
    fn pump(&mut self) {
        self.unsettled = false;
        loop {
            while let Some(ev) = self.machine.poll_event() {
                if let Some(ev) = self.jobs.handle_event(ev, &mut self.machine, self.now) {
                    self.events.push_back(ev);
                }
            }
            self.jobs.poll(&mut self.machine, self.now);
            if !self.machine.has_events() {
                return;
            }
        }
    }

    // --- Inputs -------------------------------------------------------------------------------------------------

    /// A command finished.
    pub fn handle_completion(&mut self, tag: Tag, result: Result<Response, TransportError>, now: Millis) {
        self.now = now;
        self.machine.handle_completion(tag, result, now);
        self.pump();
    }

    /// Time passed (call when [`Library::poll_timeout`] is due; calling early is harmless).
    pub fn handle_timeout(&mut self, now: Millis) {
        self.now = now;
        self.machine.handle_timeout(now);
        self.pump();
    }

    /// The changer device vanished (the transport reported it gone outside a command).
    pub fn device_gone(&mut self) {
        self.machine.device_gone();
        self.pump();
    }

    /// The changer device came back (hot-plug): probe again from scratch.
    pub fn reattach(&mut self, drive_count: usize, now: Millis) {
        self.now = now;
        self.machine.reattach(drive_count, now);
        self.pump();
    }

    /// Drive device `drive` (index in the library's drive device list) disappeared: its commands in flight complete
    /// as gone, the jobs using it fail with [`JobError::DriveGone`] (a mount whose move into it is still queued is
    /// taken off the robot's queue; one waiting for it to become ready ends at once; a queued mount or dismount
    /// naming its element fails), and mounts for any drive choose other drives until [`Library::drive_back`].
    pub fn drive_gone(&mut self, drive: usize) {
        self.machine.drive_gone(drive);
        self.jobs.drive_gone(drive, &mut self.machine);
        self.pump();
    }

    /// Drive device `drive` is back (hot-plug): it is identified again (INQUIRY, VPD 80h), the drives are mapped
    /// again, and jobs use it once it has answered.
    pub fn drive_back(&mut self, drive: usize, now: Millis) {
        self.now = now;
        self.machine.drive_back(drive, now);
        self.pump();
    }

    /// True when drive device `drive` is attached and identified (false while gone or being re-identified).
    pub fn drive_usable(&self, drive: usize) -> bool {
        self.machine.drive_usable(drive)
    }

    /// Asks for a full rescan (an administrator's inventory request, or a restart's verification).
    pub fn request_rescan(&mut self) {
        self.machine.request_rescan();
        self.pump();
    }

    /// A full inventory: INITIALIZE ELEMENT STATUS, then the rescan (a library that refuses the command is
    /// scanned as it is).
    pub fn request_initialize(&mut self) {
        self.machine.request_initialize();
        self.pump();
    }

    /// `AccessLibraryDoor`: see [`machine::Machine::request_door_access`].
    pub fn request_door_access(&mut self, full: bool) -> Result<(), MoveError> {
        let r = self.machine.request_door_access(full);
        self.pump();
        r
    }

    /// The operator has the door open.
    pub fn door_open(&self) -> bool {
        self.machine.door_open()
    }

    /// The door is unlocked for the operator (robot work waits).
    pub fn door_unlocked(&self) -> bool {
        self.machine.door_unlocked()
    }

    /// The tunables it runs with.
    pub fn options(&self) -> &LibraryOptions {
        self.machine.options()
    }

    /// Replaces the configured drive map (serial → element address); applied at the next scan.
    pub fn set_drive_map(&mut self, map: Vec<(String, u16)>) {
        self.machine.set_drive_map(map);
    }

    /// Asks for a single move of the cartridge in `source` to `destination`, outside any job (tools and tests).
    /// Checked against the cached inventory first; then queued behind other moves. The outcome comes as
    /// [`Event::MoveFinished`] with `Origin::Caller(id)`.
    pub fn request_move(&mut self, id: u64, source: u16, destination: u16) -> Result<(), MoveError> {
        let r = self.machine.request_move(Origin::Caller(id), source, destination);
        self.pump();
        r
    }

    /// Sends a command to a drive device outside any job (tools). The outcome comes as [`Event::DriveCommand`]
    /// with `Origin::Caller(id)`.
    pub fn drive_command(&mut self, id: u64, drive: usize, command: Command) {
        self.machine.drive_command(Origin::Caller(id), drive, command);
    }

    // --- Jobs ---------------------------------------------------------------------------------------------------

    /// Queues a mount or dismount job. `deadline`: give up (and undo) at this time. The job starts at the next
    /// input or [`Library::poll_request`]; call [`Library::set_write_intent`] before that for a mount for writing.
    pub fn submit_job(&mut self, id: JobId, kind: JobKind, priority: i32, deadline: Option<Millis>) {
        self.jobs.submit(id, kind, priority, deadline);
        self.unsettled = true;
    }

    fn settle(&mut self) {
        if self.unsettled {
            self.pump();
        }
    }

    /// Marks a queued mount as mounting for writing: once the drive is ready, a cartridge it reports write
    /// protected fails the mount with [`JobError::WriteProtected`] and is taken back out.
    pub fn set_write_intent(&mut self, id: JobId) {
        self.jobs.set_write_intent(id);
    }

    /// Cancels a job: a queued one at once; a running one after its current step, undoing a mount. False when it
    /// is unknown or past cancelling.
    pub fn cancel_job(&mut self, id: JobId) -> bool {
        let ok = self.jobs.cancel(id, &mut self.machine);
        self.pump();
        ok
    }

    /// Changes the priority of a job still waiting in the queue; false when it has started or is unknown.
    pub fn set_job_priority(&mut self, id: JobId, priority: i32) -> bool {
        let ok = self.jobs.set_priority(id, priority);
        self.unsettled = true;
        ok
    }

    /// Number of jobs queued or running.
    pub fn jobs_pending(&self) -> usize {
        self.jobs.len()
    }

    /// True when a job uses drive element `address` (or will: a queued dismount of it).
    pub fn uses_drive(&self, address: u16) -> bool {
        self.jobs.uses_drive(address)
    }

    /// The job running on drive element `address`: `Some(true)` a mount still loading, `Some(false)` a dismount
    /// (or a mount being undone), None when none runs there.
    pub fn job_on_drive(&self, address: u16) -> Option<bool> {
        self.jobs.job_on_drive(address)
    }

    /// True when a job (queued or running) mounts the cartridge in `source`.
    pub fn uses_source(&self, source: u16) -> bool {
        self.jobs.uses_source(source)
    }

    /// How many queued mounts wait for a drive while no free mapped drive exists: loaded but unmounted
    /// cartridges (deferred dismounts) should make room for that many.
    pub fn starved(&self) -> usize {
        self.jobs.starved(&self.machine)
    }

    /// Drive elements whose last load did not become ready in time.
    pub fn suspect_drives(&self) -> &[u16] {
        self.jobs.suspect_drives()
    }

    /// The learned time from a move into a drive until it is ready, once known.
    pub fn load_estimate(&self) -> Option<Millis> {
        self.jobs.load_estimate()
    }

    /// Starts from a load time learned earlier (persisted), unless one is already learned.
    pub fn assume_load_time(&mut self, ms: Millis) {
        self.jobs.assume_load_time(ms);
    }

    // --- Outputs ------------------------------------------------------------------------------------------------

    /// True when commands wait for [`Library::poll_request`].
    pub fn has_requests(&self) -> bool {
        self.unsettled || self.machine.has_requests()
    }

    /// The next command to submit.
    pub fn poll_request(&mut self) -> Option<Outgoing> {
        self.settle();
        self.machine.poll_request()
    }

    /// The next event (state, identity, inventory; the jobs' own moves and drive commands are not shown).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.settle();
        self.events.pop_front()
    }

    /// The next progress report of a job.
    pub fn poll_progress(&mut self) -> Option<Progress> {
        self.settle();
        self.jobs.poll_progress()
    }

    /// The next finished job.
    pub fn poll_outcome(&mut self) -> Option<Outcome> {
        self.settle();
        self.jobs.poll_outcome()
    }

    /// When [`Library::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let now = self.unsettled.then_some(self.now);
        [self.machine.poll_timeout(), self.jobs.poll_timeout(), now].into_iter().flatten().min()
    }

    // --- State --------------------------------------------------------------------------------------------------

    /// The current state.
    pub fn state(&self) -> LibraryState {
        self.machine.state()
    }

    /// The inventory as last read (empty before the first scan).
    pub fn elements(&self) -> &[Element] {
        self.machine.elements()
    }

    /// The drives (data transfer elements) as last read, without walking the slots.
    pub fn drive_elements(&self) -> &[Element] {
        self.machine.drive_elements()
    }

    /// The element at `address`.
    pub fn element(&self, address: u16) -> Option<&Element> {
        self.machine.element(address)
    }

    /// The element address assignment, once probed.
    pub fn addresses(&self) -> Option<ElementAddressAssignment> {
        self.machine.addresses()
    }

    /// Identity of the changer, once probed.
    pub fn identity(&self) -> &Identity {
        self.machine.identity()
    }

    /// Identities of the drive devices, once probed.
    pub fn drive_identities(&self) -> &[Option<Identity>] {
        self.machine.drive_identities()
    }

    /// Why the library is waiting for its changer: Some while the changer refuses commands for now (NOT READY,
    /// BUSY, a repeated UNIT ATTENTION), naming the sense ("not ready: 04h/01h logical unit is in process of
    /// becoming ready"); None once it answers. Probing and scanning wait indefinitely, asking again with backoff
    /// ([`LibraryOptions::retry_first_ms`] doubling up to [`LibraryOptions::retry_max_ms`]), so a library that is
    /// not ready at start-up comes online as soon as it is.
    pub fn not_ready_reason(&self) -> Option<&str> {
        self.machine.not_ready_reason()
    }

    /// While a whole scan (an inventory) runs: (elements read, elements the library has).
    pub fn scan_progress(&self) -> Option<(usize, usize)> {
        self.machine.scan_progress()
    }

    /// Number of robot moves queued or running.
    pub fn moves_pending(&self) -> usize {
        self.machine.moves_pending()
    }
}
