//! The SSC tape drives: TEST UNIT READY, INQUIRY, LOAD UNLOAD, REWIND, READ(6) of a cartridge's first block,
//! READ POSITION, MODE SENSE, LOG SENSE (TapeAlert), PREVENT ALLOW, REQUEST SENSE.

use crate::cdb::{mode_data, mode_request};
use crate::changer::REVISION;
use crate::config::Cartridge;
use crate::sense::{self, Sense};
use crate::{
    be, inquiry, request_sense, std_inquiry, DataCheck, DevState, DriveStatus, ElementType, Medium, Outcome, Request,
    Target,
};

/// Drive INQUIRY vendor identification.
pub const VENDOR: &str = "VLIB    ";
/// Drive INQUIRY product identification.
pub const PRODUCT: &str = "VIRTUAL TAPE    ";
/// TapeAlert flag "clean now".
pub const TAPEALERT_CLEAN_NOW: u16 = 0x14;
/// TapeAlert flag "expired cleaning media": a cleaning cartridge that has done `cleaner_max_uses` cleanings.
pub const TAPEALERT_EXPIRED_CLEANER: u16 = 0x16;
/// TapeAlert flag "invalid cleaning tape": a cleaning cartridge the drive does not accept.
pub const TAPEALERT_INVALID_CLEANER: u16 = 0x17;

/// Sense key BLANK CHECK.
pub const BLANK_CHECK: u8 = 0x08;
/// BLANK CHECK 00/05: end-of-data detected (a READ past the last block written, or of a blank tape).
pub const END_OF_DATA: Sense = Sense::new(BLANK_CHECK, 0x00, 0x05);
/// NO SENSE 00/00: the condition reported with ILI (a READ of a block longer than requested).
pub const NO_ADDITIONAL_SENSE: Sense = Sense::new(sense::NO_SENSE, 0x00, 0x00);

/// Bit of TapeAlert flag `flag` (1..=64) in a flag mask.
const fn alert_bit(flag: u16) -> u64 {
    1u64 << (flag - 1)
}

/// How a cleaning cartridge's stay in a drive ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CleanOutcome {
    /// The drive cleaned: clean now and the load count cleared, one use counted on the cleaner.
    Cleaned,
    /// Expired cleaner: ejected without cleaning, TapeAlert 16h.
    Expired,
    /// Invalid cleaner: ejected without cleaning, TapeAlert 17h.
    Invalid,
    /// Ejected by a reset of a drive that was stuck cleaning: nothing done.
    Aborted,
}

/// A cleaning cartridge in a drive, until the drive ejects it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CleanJob {
    /// When the drive ejects the cleaner; None = never (`Fault::CleanerStuck`).
    pub(crate) until: Option<u64>,
    pub(crate) outcome: CleanOutcome,
}

/// Per-drive state. The cartridge itself lives in the changer's drive element; this holds timing.
#[derive(Clone, Debug)]
pub(crate) struct DriveState {
    pub(crate) serial: String,
    pub(crate) dev: DevState,
    /// Virtual time the current cartridge arrived (end of the robot move).
    pub(crate) present_from: u64,
    /// Virtual time the current cartridge is loaded and ready.
    pub(crate) ready_at: u64,
    /// Virtual time the cartridge is (was) ejected by an unload.
    pub(crate) ejected_at: Option<u64>,
    pub(crate) loads_since_clean: u32,
    pub(crate) clean_now: bool,
    pub(crate) wont_unload: bool,
    /// The cleaning cartridge in the drive, until its end is settled.
    pub(crate) cleaning: Option<CleanJob>,
    /// `Fault::CleanerStuck`: cleanings never end until a reset.
    pub(crate) cleaner_stuck: bool,
    /// TapeAlert flags raised by a rejected cleaner (16h, 17h); cleared when the next cartridge is loaded.
    pub(crate) load_alerts: u64,
    /// TapeAlert flags raised by `Fault::TapeAlert`; cleared by a LOG SENSE of page 2Eh.
    pub(crate) fault_alerts: u64,
    /// A TapeAlert flag was raised: the next TEST UNIT READY reports RECOVERED ERROR 01/5D/00.
    pub(crate) alert_signal: bool,
    /// The logical block the tape is at (0: beginning of tape); back to 0 by a rewind, load, unload or a new tape.
    pub(crate) position: u32,
}

impl DriveState {
    pub(crate) fn new(serial: &str, ua: Option<Sense>) -> DriveState {
        DriveState {
            serial: serial.to_string(),
            dev: DevState { present: true, pending_ua: ua, ..DevState::default() },
            present_from: 0,
            ready_at: 0,
            ejected_at: None,
            loads_since_clean: 0,
            clean_now: false,
            wont_unload: false,
            cleaning: None,
            cleaner_stuck: false,
            load_alerts: 0,
            fault_alerts: 0,
            alert_signal: false,
            position: 0,
        }
    }

    pub(crate) fn is_ejected(&self, t: u64) -> bool {
        self.ejected_at.is_some_and(|e| e <= t)
    }

    pub(crate) fn removed(&mut self) {
        self.ejected_at = None;
        self.present_from = 0;
        self.ready_at = 0;
        self.cleaning = None;
        self.position = 0;
    }

    /// Every TapeAlert flag set now, bit n-1 for flag n.
    pub(crate) fn tapealert(&self) -> u64 {
        let clean = if self.clean_now { alert_bit(TAPEALERT_CLEAN_NOW) } else { 0 };
        clean | self.load_alerts | self.fault_alerts
    }

    /// A cleaning is in progress at `t` (an accepted cleaner not ejected yet).
    pub(crate) fn is_cleaning(&self, t: u64) -> bool {
        self.cleaning.is_some_and(|j| {
            j.outcome == CleanOutcome::Cleaned && t >= self.present_from && j.until.is_none_or(|u| t < u)
        })
    }

    /// `Fault::CleanerStuck`: the cleaning in progress (or the next one) never ends.
    pub(crate) fn stick_cleaning(&mut self) {
        self.cleaner_stuck = true;
        if let Some(j) = self.cleaning.as_mut().filter(|j| j.outcome == CleanOutcome::Cleaned) {
            j.until = None;
            self.ejected_at = None;
        }
    }

    /// A reset: a stuck cleaning ends at `now` with the cleaner ejected, and cleanings end normally again.
    pub(crate) fn reset_cleaning(&mut self, now: u64) {
        self.cleaner_stuck = false;
        if let Some(j) = self.cleaning.as_mut().filter(|j| j.until.is_none()) {
            j.until = Some(now.max(self.present_from));
            j.outcome = CleanOutcome::Aborted;
            self.ejected_at = j.until;
        }
    }
}

impl Target {
    pub(crate) fn drive_medium(&self, i: usize) -> Option<&Medium> {
        self.elements[ElementType::Drive.index()][i].medium.as_ref()
    }

    /// Drive status at virtual time `t`.
    pub(crate) fn drive_status(&self, i: usize, t: u64) -> DriveStatus {
        let d = &self.drives[i];
        match self.drive_medium(i) {
            None => DriveStatus::Empty,
            Some(_) if t < d.present_from => DriveStatus::Empty,
            Some(_) if d.is_ejected(t) => DriveStatus::Ejected,
            Some(m) if m.cleaning => DriveStatus::Cleaning,
            Some(_) if t < d.ready_at => DriveStatus::Loading,
            Some(_) => DriveStatus::Ready,
        }
    }

    /// Cartridge `m` arrives in drive `i` at `at` (a robot or hand move, a LOAD of an ejected cleaner, or a
    /// cleaner placed there by the configuration). A data cartridge threads for `load_ms` and counts towards
    /// `clean_after_loads`; a cleaning cartridge starts a cleaning of `clean_ms` (or is rejected: expired after
    /// `command_ms`, invalid at once) that ends with the drive ejecting it.
    pub(crate) fn drive_insert(&mut self, i: usize, m: &Medium, at: u64) {
        let c = &self.config;
        let (load, clean, cmd) =
            (c.scaled(c.timing.load_ms), c.scaled(c.timing.clean_ms), c.scaled(c.timing.command_ms));
        let (clean_after, max_uses) = (c.clean_after_loads, c.cleaner_max_uses);
        let d = &mut self.drives[i];
        d.present_from = at;
        d.ejected_at = None;
        d.cleaning = None;
        d.load_alerts = 0;
        d.position = 0;
        if m.cleaning {
            let job = if m.invalid_cleaner {
                CleanJob { until: Some(at), outcome: CleanOutcome::Invalid }
            } else if m.uses >= max_uses {
                CleanJob { until: Some(at + cmd), outcome: CleanOutcome::Expired }
            } else if d.cleaner_stuck {
                CleanJob { until: None, outcome: CleanOutcome::Cleaned }
            } else {
                CleanJob { until: Some(at + clean), outcome: CleanOutcome::Cleaned }
            };
            d.ready_at = at;
            d.ejected_at = job.until;
            d.cleaning = Some(job);
        } else {
            d.ready_at = at + load;
            d.loads_since_clean += 1;
            if clean_after > 0 && d.loads_since_clean >= clean_after {
                d.clean_now = true;
            }
        }
    }

    /// Ends the cleanings whose cleaner the drive has ejected by `t`: their results take effect.
    pub(crate) fn settle_drives(&mut self, t: u64) {
        for i in 0..self.drives.len() {
            let Some(job) = self.drives[i].cleaning else { continue };
            if job.until.is_none_or(|u| u > t) {
                continue;
            }
            let d = &mut self.drives[i];
            d.cleaning = None;
            self.counters.unloads += 1;
            match job.outcome {
                CleanOutcome::Cleaned => {
                    d.clean_now = false;
                    d.loads_since_clean = 0;
                    if let Some(m) = self.elements[ElementType::Drive.index()][i].medium.as_mut() {
                        m.uses = m.uses.saturating_add(1);
                    }
                }
                CleanOutcome::Expired => d.load_alerts |= alert_bit(TAPEALERT_EXPIRED_CLEANER),
                CleanOutcome::Invalid => d.load_alerts |= alert_bit(TAPEALERT_INVALID_CLEANER),
                CleanOutcome::Aborted => {}
            }
        }
    }

    fn drive_ready(&self, i: usize, t: u64) -> Result<(), Sense> {
        match self.drive_status(i, t) {
            DriveStatus::Empty | DriveStatus::Ejected => Err(sense::MEDIUM_NOT_PRESENT),
            DriveStatus::Loading => Err(sense::BECOMING_READY),
            DriveStatus::Cleaning => Err(sense::CLEANING_INSTALLED),
            DriveStatus::Ready => Ok(()),
        }
    }

    pub(crate) fn drive_command(&mut self, i: usize, req: &Request, start: u64) -> (Outcome, DataCheck) {
        let cdb = &req.cdb[..];
        let cmd = self.config.scaled(self.config.timing.command_ms);
        let r = match cdb[0] {
            0x00 => self.drive_ready(i, start).and_then(|()| {
                if std::mem::take(&mut self.drives[i].alert_signal) {
                    Err(sense::TAPEALERT_SIGNAL)
                } else {
                    Ok(Vec::new())
                }
            }),
            0x03 => {
                let s = self.drives[i].dev.pending_ua.take().or_else(|| self.drive_ready(i, start).err());
                Ok(request_sense(cdb, s))
            }
            0x12 => {
                let product = self.config.drive_products.get(i).map_or(PRODUCT, String::as_str);
                inquiry(cdb, std_inquiry(0x01, true, VENDOR, product, REVISION), &self.drives[i].serial, VENDOR)
            }
            0x1b if self.config.drive_load_unload => return (self.load_unload(i, cdb, start), None),
            0x01 => self.drive_ready(i, start).map(|()| {
                self.drives[i].position = 0;
                Vec::new()
            }),
            0x08 => return self.read6(i, cdb, start, cmd),
            0x34 => self.read_position(i, cdb, start),
            0x1a | 0x5a => self.drive_mode_sense(i, cdb, start),
            0x4d => self.log_sense(i, cdb),
            0x1e => {
                if cdb.len() < 6 {
                    Err(Sense::invalid_field(0, None))
                } else {
                    self.drives[i].dev.prevent = cdb[4] & 0x01 != 0;
                    Ok(Vec::new())
                }
            }
            _ => Err(sense::INVALID_OPCODE),
        };
        (Outcome { result: r, cost: cmd }, None)
    }

    /// READ(6) in variable-block mode (FIXED = 0; transfer length in bytes 2-4): at the beginning of a tape with a
    /// first block, that block (its first `length` bytes; a longer block also reports ILI with INFORMATION =
    /// `length` minus the block's length, as SSC has it); a shorter block is a short transfer with GOOD status.
    /// After the first block, or on a blank tape: BLANK CHECK 00/05, INFORMATION = `length`. A length of 0
    /// transfers nothing and does not move the tape. FIXED = 1: 05/24/00.
    fn read6(&mut self, i: usize, cdb: &[u8], start: u64, cost: u64) -> (Outcome, DataCheck) {
        let err = |s| (Outcome::err(s, cost), None);
        if cdb.len() < 6 {
            return err(Sense::invalid_field(0, None));
        }
        if cdb[1] & 0x01 != 0 {
            return err(Sense::invalid_field(1, Some(0)));
        }
        if let Err(s) = self.drive_ready(i, start) {
            return err(s);
        }
        let length = be(&cdb[2..5]);
        if length == 0 {
            return (Outcome::ok(Vec::new(), cost), None);
        }
        let descriptor = self.config.descriptor_sense;
        let block =
            self.drive_medium(i).and_then(|m| m.first_block.as_deref()).filter(|_| self.drives[i].position == 0);
        let Some(block) = block else {
            let info = i64::from(length);
            return (Outcome::ok(Vec::new(), cost), Some(sense_with_information(END_OF_DATA, info, false, descriptor)));
        };
        let wanted = usize::try_from(length).unwrap_or(usize::MAX);
        let data = block[..block.len().min(wanted)].to_vec();
        let ili = (block.len() > wanted).then(|| {
            let info = i64::from(length) - i64::try_from(block.len()).unwrap_or(i64::MAX);
            sense_with_information(NO_ADDITIONAL_SENSE, info, true, descriptor)
        });
        self.drives[i].position += 1;
        (Outcome::ok(data, cost), ili)
    }

    fn load_unload(&mut self, i: usize, cdb: &[u8], start: u64) -> Outcome {
        let t = self.config.timing;
        let cmd = self.config.scaled(t.command_ms);
        if cdb.len() < 6 {
            return Outcome::err(Sense::invalid_field(0, None), cmd);
        }
        let immed = cdb[1] & 0x01 != 0;
        let load = cdb[4] & 0x01 != 0;
        let status = self.drive_status(i, start);
        match status {
            DriveStatus::Empty => return Outcome::err(sense::MEDIUM_NOT_PRESENT, cmd),
            // Cleaning: the drive neither loads nor unloads until it ejects the cleaner by itself.
            DriveStatus::Cleaning => return Outcome::err(sense::CLEANING_INSTALLED, cmd),
            _ => {}
        }
        if load && status == DriveStatus::Ejected {
            if let Some(m) = self.drive_medium(i).filter(|m| m.cleaning).cloned() {
                // Loading the ejected cleaner again starts another cleaning.
                self.counters.loads += 1;
                self.drive_insert(i, &m, start);
                return Outcome::ok(Vec::new(), cmd);
            }
        }
        let d = &mut self.drives[i];
        let done = if load {
            match status {
                DriveStatus::Ejected => {
                    d.ejected_at = None;
                    d.ready_at = start + self.config.scaled(t.load_ms);
                    self.counters.loads += 1;
                    d.ready_at
                }
                _ => d.ready_at.max(start),
            }
        } else {
            if d.dev.prevent {
                return Outcome::err(sense::REMOVAL_PREVENTED, cmd);
            }
            if d.wont_unload {
                return Outcome::err(sense::LOAD_EJECT_FAILED, self.config.scaled(t.unload_ms));
            }
            if status == DriveStatus::Ejected {
                start
            } else if let Some(e) = d.ejected_at {
                e // unload already in progress
            } else {
                let e = d.ready_at.max(start) + self.config.scaled(t.unload_ms);
                d.ejected_at = Some(e);
                self.counters.unloads += 1;
                e
            }
        };
        // A load positions the tape at its beginning; an unload rewinds it first.
        d.position = 0;
        let cost = if immed { cmd } else { (done - start).max(cmd) };
        Outcome::ok(Vec::new(), cost)
    }

    fn read_position(&self, i: usize, cdb: &[u8], start: u64) -> Result<Vec<u8>, Sense> {
        if cdb.len() < 10 {
            return Err(Sense::invalid_field(0, None));
        }
        if cdb[1] & 0x1f > 1 {
            return Err(Sense::invalid_field(1, Some(4)));
        }
        self.drive_ready(i, start)?;
        let position = self.drives[i].position;
        let mut d = vec![0u8; 20];
        if position == 0 {
            d[0] = 0x80; // BOP
        }
        // First and last block location: the block the tape is at (no blocks in the buffer).
        d[4..8].copy_from_slice(&position.to_be_bytes());
        d[8..12].copy_from_slice(&position.to_be_bytes());
        Ok(d)
    }

    fn drive_mode_sense(&self, i: usize, cdb: &[u8], start: u64) -> Result<Vec<u8>, Sense> {
        let req = mode_request(cdb)?;
        let compression = vec![0x0f, 0x0e, 0xc0, 0x80, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0];
        let pages = match req.page {
            0x00 => Vec::new(),
            0x0f | 0x3f => compression,
            _ => return Err(Sense::invalid_field(2, Some(5))),
        };
        let present = !matches!(self.drive_status(i, start), DriveStatus::Empty | DriveStatus::Ejected);
        let m = self.drive_medium(i).filter(|_| present);
        let mut block = [0u8; 8];
        let mut ds = 0x10; // buffered mode 1
        if let Some(m) = m {
            block[0] = Cartridge::density_code(&m.barcode);
            if m.write_protected {
                ds |= 0x80;
            }
        }
        Ok(mode_data(&req, ds, Some(block), &pages))
    }

    fn log_sense(&mut self, i: usize, cdb: &[u8]) -> Result<Vec<u8>, Sense> {
        if cdb.len() < 10 {
            return Err(Sense::invalid_field(0, None));
        }
        let alloc = be(&cdb[7..9]) as usize;
        let mut d = match cdb[2] & 0x3f {
            0x00 => vec![0x00, 0x00, 0x00, 0x02, 0x00, 0x2e],
            0x2e => {
                let alerts = self.drives[i].tapealert();
                let mut d = vec![0x2e, 0x00];
                d.extend_from_slice(&(64u16 * 5).to_be_bytes());
                for code in 1u16..=64 {
                    d.extend_from_slice(&code.to_be_bytes());
                    let flag = alerts & alert_bit(code) != 0;
                    d.extend_from_slice(&[0x03, 0x01, u8::from(flag)]);
                }
                // Read-clear: the flags a fault raised are reported once.
                self.drives[i].fault_alerts = 0;
                d
            }
            _ => return Err(Sense::invalid_field(2, Some(5))),
        };
        d.truncate(alloc);
        Ok(d)
    }
}

/// Sense data for `s` with the INFORMATION field valid (`information`, two's complement when negative) and
/// optionally ILI: fixed format sets VALID (byte 0 bit 7), ILI (byte 2 bit 5) and bytes 3-6; descriptor format
/// appends an information descriptor (00h) and, with ILI, a stream commands descriptor (04h) (SPC-4 4.5, SSC-4).
fn sense_with_information(s: Sense, information: i64, ili: bool, descriptor: bool) -> Vec<u8> {
    let mut b = s.encode(descriptor);
    if descriptor {
        b.extend_from_slice(&[0x00, 0x0a, 0x80, 0x00]);
        b.extend_from_slice(&information.to_be_bytes());
        if ili {
            b.extend_from_slice(&[0x04, 0x02, 0x00, 0x20]);
        }
        b[7] = u8::try_from(b.len() - 8).unwrap_or(u8::MAX);
    } else {
        b[0] |= 0x80;
        if ili {
            b[2] |= 0x20;
        }
        // The fixed format holds the low 4 bytes (the READ(6) lengths that reach here fit in 24 bits).
        b[3..7].copy_from_slice(&information.to_be_bytes()[4..8]);
    }
    b
}

#[cfg(test)]
mod tests {
    use crate::cdb;
    use crate::config::{Cartridge, Config, Location};
    use crate::{Device, Direction, DriveStatus, Response, Target};

    fn lib() -> Target {
        Target::new(Config::default_library()).unwrap()
    }

    fn drv(t: &mut Target, i: usize, cdb: &[u8]) -> Response {
        t.execute(Device::Drive(i), cdb, Direction::FromDevice(255))
    }

    fn mv(t: &mut Target, src: u16, dst: u16) -> Response {
        t.execute(Device::Changer, &cdb::move_medium(0, src, dst), Direction::None)
    }

    #[test]
    fn inquiry_bytes() {
        let mut t = lib();
        let r = drv(&mut t, 2, &cdb::inquiry(None, 36));
        assert_eq!(&r.data[0..5], &[0x01, 0x80, 0x06, 0x02, 31]);
        assert_eq!(&r.data[8..32], b"VLIB    VIRTUAL TAPE    ");
        let r = drv(&mut t, 2, &cdb::inquiry(Some(0x80), 255));
        assert_eq!(r.data, b"\x01\x80\x00\x08VDRV0002".to_vec());
        let r = drv(&mut t, 2, &cdb::inquiry(Some(0x83), 255));
        assert_eq!(&r.data[20..36], b"VLIB    VDRV0002");
        let r = drv(&mut t, 2, &cdb::inquiry(Some(0), 255));
        assert_eq!(r.data, vec![1, 0, 0, 3, 0, 0x80, 0x83]);
        assert_eq!(t.drive_serial(2), "VDRV0002");
        // Products per drive (a mixed-generation library); the rest stay VIRTUAL TAPE.
        let mut c = Config::default_library();
        c.drive_products = vec!["ULT3580-TD6".into(), "ULT3580-TD8".into()];
        let mut t = Target::new(c).unwrap();
        assert_eq!(&drv(&mut t, 1, &cdb::inquiry(None, 36)).data[16..32], b"ULT3580-TD8     ");
        assert_eq!(&drv(&mut t, 3, &cdb::inquiry(None, 36)).data[16..32], b"VIRTUAL TAPE    ");
        let mut bad = Config::default_library();
        bad.drive_products = vec!["A PRODUCT NAME TOO LONG".into()];
        assert!(bad.validate().unwrap_err().to_string().contains("drive_products[0]"));
    }

    #[test]
    fn tur_states_through_load_and_unload() {
        let mut t = lib();
        assert_eq!(drv(&mut t, 0, &cdb::test_unit_ready()).sense_code(), (2, 0x3a, 0));
        assert!(mv(&mut t, 1000, 500).is_good());
        // Robot time elapsed; the drive is threading for load_ms.
        assert_eq!(t.now(), 1 + 8000);
        assert_eq!(drv(&mut t, 0, &cdb::test_unit_ready()).sense_code(), (2, 0x04, 0x01));
        assert_eq!(drv(&mut t, 0, &cdb::read_position()).sense_code(), (2, 0x04, 0x01));
        assert_eq!(t.snapshot().drives[0].status, DriveStatus::Loading);
        t.advance(1 + 8000 + 20000);
        assert!(drv(&mut t, 0, &cdb::test_unit_ready()).is_good());
        let r = drv(&mut t, 0, &cdb::read_position());
        assert_eq!(r.data.len(), 20);
        assert_eq!(r.data[0], 0x80);
        assert!(drv(&mut t, 0, &cdb::rewind()).is_good());
        let r = drv(&mut t, 0, &cdb::load_unload(false, false));
        assert!(r.is_good());
        assert_eq!(r.duration_ms, 15000);
        assert_eq!(drv(&mut t, 0, &cdb::test_unit_ready()).sense_code(), (2, 0x3a, 0));
        assert_eq!(t.snapshot().drives[0].status, DriveStatus::Ejected);
        // Load after unload re-threads.
        let r = drv(&mut t, 0, &cdb::load_unload(true, true));
        assert!(r.is_good());
        assert_eq!(r.duration_ms, 1);
        assert_eq!(drv(&mut t, 0, &cdb::test_unit_ready()).sense_code(), (2, 0x04, 0x01));
        let r = drv(&mut t, 0, &cdb::load_unload(true, false));
        assert!(r.duration_ms >= 19_990);
        assert!(drv(&mut t, 0, &cdb::test_unit_ready()).is_good());
        // Unload without a tape.
        assert_eq!(drv(&mut t, 1, &cdb::load_unload(false, false)).sense_code(), (2, 0x3a, 0));
    }

    #[test]
    fn drive_prevent_and_wont_unload() {
        let mut t = lib();
        assert!(mv(&mut t, 1000, 501).is_good());
        t.advance(100_000);
        assert!(drv(&mut t, 1, &cdb::prevent_allow(true)).is_good());
        assert_eq!(drv(&mut t, 1, &cdb::load_unload(false, false)).sense_code(), (5, 0x53, 2));
        assert!(drv(&mut t, 1, &cdb::prevent_allow(false)).is_good());
        t.inject(crate::Fault::DriveWontUnload { drive: 1 });
        assert_eq!(drv(&mut t, 1, &cdb::load_unload(false, false)).sense_code(), (4, 0x53, 0));
        assert_eq!(mv(&mut t, 501, 1000).sense_code(), (4, 0x44, 0));
        t.inject(crate::Fault::Reset { device: Device::Drive(1) });
        assert_eq!(drv(&mut t, 1, &cdb::test_unit_ready()).sense_code(), (6, 0x29, 0));
        assert!(drv(&mut t, 1, &cdb::load_unload(false, false)).is_good());
        assert!(mv(&mut t, 501, 1000).is_good());
    }

    #[test]
    fn mode_sense_density_and_write_protect() {
        let mut cfg = Config::default_library();
        cfg.cartridges.push(Cartridge { write_protected: true, ..Cartridge::new("WPX001L7", Location::Slot(17)) });
        let mut t = Target::new(cfg).unwrap();
        let r = drv(&mut t, 0, &cdb::mode_sense6(0, false, 255));
        assert_eq!(r.data, vec![11, 0, 0x10, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(mv(&mut t, 1000, 500).is_good());
        assert!(mv(&mut t, 1016, 501).is_good());
        let r = drv(&mut t, 0, &cdb::mode_sense6(0, false, 255));
        assert_eq!(&r.data[0..5], &[11, 0, 0x10, 8, 0x5a]);
        let r = drv(&mut t, 1, &cdb::mode_sense6(0, false, 255));
        assert_eq!(&r.data[0..5], &[11, 0, 0x90, 8, 0x5c]);
        let r = drv(&mut t, 1, &cdb::mode_sense10(0x3f, false, 255));
        assert_eq!(&r.data[0..8], &[0, 30, 0, 0x90, 0, 0, 0, 8]);
        assert_eq!(&r.data[16..18], &[0x0f, 0x0e]);
        let r = drv(&mut t, 1, &cdb::mode_sense6(0x1d, false, 255));
        assert_eq!(r.sense_code(), (5, 0x24, 0));
    }

    #[test]
    fn tapealert_clean_now_and_cleaning_cartridge() {
        let mut cfg = Config::default_library();
        cfg.clean_after_loads = 2;
        let mut t = Target::new(cfg).unwrap();
        let flag = |t: &mut Target| {
            let r = t.execute(Device::Drive(0), &cdb::log_sense(0x2e, 1024), Direction::FromDevice(1024));
            assert_eq!(&r.data[0..4], &[0x2e, 0, 0x01, 0x40]);
            assert_eq!(r.data.len(), 4 + 64 * 5);
            let p = 4 + (0x14 - 1) * 5;
            assert_eq!(&r.data[p..p + 4], &[0x00, 0x14, 0x03, 0x01]);
            r.data[p + 4]
        };
        assert_eq!(flag(&mut t), 0);
        assert!(mv(&mut t, 1000, 500).is_good());
        assert!(mv(&mut t, 500, 1000).is_good());
        assert_eq!(flag(&mut t), 0);
        assert!(mv(&mut t, 1000, 500).is_good());
        assert_eq!(flag(&mut t), 1);
        assert!(t.snapshot().drives[0].clean_now);
        assert!(mv(&mut t, 500, 1000).is_good());
        // cleaning cartridge in slot 20: the flag stays while it cleans, and is cleared when the cleaning ends
        assert!(mv(&mut t, 1019, 500).is_good());
        let arrived = t.now();
        t.advance(arrived + 20_000);
        assert_eq!(drv(&mut t, 0, &cdb::test_unit_ready()).sense_code(), (2, 0x30, 0x03));
        assert_eq!(flag(&mut t), 1);
        t.advance(arrived + 30_000);
        assert_eq!(drv(&mut t, 0, &cdb::test_unit_ready()).sense_code(), (2, 0x3a, 0));
        assert_eq!(flag(&mut t), 0);
        assert_eq!(t.snapshot().drives[0].loads_since_clean, 0);
        let r = drv(&mut t, 0, &cdb::log_sense(0, 255));
        assert_eq!(r.data, vec![0, 0, 0, 2, 0, 0x2e]);
        assert_eq!(drv(&mut t, 0, &cdb::log_sense(0x30, 255)).sense_code(), (5, 0x24, 0));
    }

    /// TapeAlert flags of drive `i` read by LOG SENSE page 2Eh (which clears the ones a fault raised), checking
    /// the page layout: 64 parameters 0001h..0040h, control 03h, length 1.
    fn alerts(t: &mut Target, i: usize) -> Vec<u16> {
        let r = t.execute(Device::Drive(i), &cdb::log_sense(0x2e, 1024), Direction::FromDevice(1024));
        assert!(r.is_good(), "{r:?}");
        assert_eq!(&r.data[0..4], &[0x2e, 0, 0x01, 0x40]);
        assert_eq!(r.data.len(), 4 + 64 * 5);
        let mut set = Vec::new();
        for (k, p) in r.data[4..].chunks(5).enumerate() {
            let code = u16::try_from(k + 1).unwrap();
            assert_eq!(&p[0..4], &[code.to_be_bytes()[0], code.to_be_bytes()[1], 0x03, 0x01]);
            assert!(p[4] <= 1);
            if p[4] == 1 {
                set.push(code);
            }
        }
        set
    }

    fn element_flags(t: &mut Target, address: u16) -> u8 {
        let r = t.execute(
            Device::Changer,
            &cdb::read_element_status(t.locate(address).unwrap().0.code(), address, 1, false, false, false, 255),
            Direction::FromDevice(255),
        );
        assert!(r.is_good(), "{r:?}");
        assert_eq!(u16::from_be_bytes([r.data[16], r.data[17]]), address);
        r.data[18]
    }

    fn uses_of(t: &Target, address: u16) -> u32 {
        t.snapshot().elements.iter().find(|e| e.address == address).unwrap().uses
    }

    #[test]
    fn cleaning_ends_with_the_cleaner_ejected_the_flag_cleared_and_a_use_counted() {
        let mut cfg = Config::default_library();
        cfg.clean_after_loads = 1;
        let mut t = Target::new(cfg).unwrap();
        assert!(mv(&mut t, 1000, 500).is_good());
        assert!(mv(&mut t, 500, 1000).is_good());
        assert_eq!(alerts(&mut t, 0), vec![0x14]);
        assert!(t.snapshot().drives[0].clean_now);
        assert_eq!(t.snapshot().drives[0].tapealert, 1 << 19);
        let unloads = t.snapshot().counters.unloads;
        // The cleaning cartridge (slot 20) goes in: the drive cleans for clean_ms from its arrival.
        assert!(mv(&mut t, 1019, 500).is_good());
        let arrived = t.now();
        let d = &t.snapshot().drives[0];
        assert_eq!((d.status, d.cleaning, d.barcode.as_deref()), (DriveStatus::Cleaning, true, Some("CLN001L1")));
        assert_eq!(drv(&mut t, 0, &cdb::test_unit_ready()).sense_code(), (2, 0x30, 0x03));
        assert_eq!(drv(&mut t, 0, &cdb::request_sense(18)).data[12..14], [0x30, 0x03]);
        // Neither an unload nor a MOVE takes it out while it cleans; the flag stays until the cleaning is done.
        assert_eq!(drv(&mut t, 0, &cdb::load_unload(false, false)).sense_code(), (2, 0x30, 0x03));
        assert_eq!(drv(&mut t, 0, &cdb::load_unload(true, false)).sense_code(), (2, 0x30, 0x03));
        assert_eq!(mv(&mut t, 500, 1019).sense_code(), (5, 0x53, 0x02));
        assert_eq!(alerts(&mut t, 0), vec![0x14]);
        assert_eq!(t.snapshot().drives[0].status, DriveStatus::Cleaning);
        t.advance(arrived + 29_999);
        assert_eq!(uses_of(&t, 500), 0);
        assert!(t.snapshot().drives[0].cleaning);
        assert_eq!(drv(&mut t, 0, &cdb::test_unit_ready()).sense_code(), (2, 0x30, 0x03));
        // Done: the drive ejected the cleaner by itself; the robot has yet to take it.
        t.advance(arrived + 30_000);
        let s = t.snapshot();
        assert_eq!((s.drives[0].status, s.drives[0].cleaning), (DriveStatus::Ejected, false));
        assert!(!s.drives[0].clean_now);
        assert_eq!(s.drives[0].loads_since_clean, 0);
        assert_eq!(s.drives[0].tapealert, 0);
        assert_eq!(s.counters.unloads, unloads + 1, "the drive's own eject");
        assert_eq!(uses_of(&t, 500), 1, "one use counted on the cleaner");
        assert_eq!(drv(&mut t, 0, &cdb::test_unit_ready()).sense_code(), (2, 0x3a, 0));
        assert!(alerts(&mut t, 0).is_empty());
        assert_eq!(element_flags(&mut t, 500) & 0x01, 0x01, "the drive element is still full");
        // The robot takes it without an unload: a plain move.
        let r = mv(&mut t, 500, 1019);
        assert!(r.is_good());
        assert_eq!(r.duration_ms, 8000);
        assert_eq!(t.snapshot().counters.unloads, unloads + 1);
        assert_eq!(uses_of(&t, 1019), 1);
        assert_eq!(t.snapshot().drives[0].status, DriveStatus::Empty);
        // The cleaner counts its uses across drives.
        assert!(mv(&mut t, 1019, 503).is_good());
        t.advance(t.now() + 30_000);
        assert!(mv(&mut t, 503, 1019).is_good());
        assert_eq!(uses_of(&t, 1019), 2);
        // The drive loading an ejected cleaner again (LOAD) cleans again.
        assert!(mv(&mut t, 1019, 501).is_good());
        t.advance(t.now() + 30_000);
        assert_eq!(drv(&mut t, 1, &cdb::test_unit_ready()).sense_code(), (2, 0x3a, 0));
        assert!(drv(&mut t, 1, &cdb::load_unload(true, true)).is_good());
        assert!(t.snapshot().drives[1].cleaning);
        assert_eq!(drv(&mut t, 1, &cdb::test_unit_ready()).sense_code(), (2, 0x30, 0x03));
        t.advance(t.now() + 30_000);
        assert_eq!(uses_of(&t, 501), 4);
    }

    #[test]
    fn cleaning_with_time_scale_zero_and_a_cleaner_placed_in_a_drive() {
        let mut cfg = Config::default_library();
        cfg.time_scale = 0.0;
        cfg.cartridges.push(Cartridge::new("CLN002L1", Location::Drive(2)));
        let mut t = Target::new(cfg).unwrap();
        // Placed in a drive: cleaned at start (instantly here) and ejected.
        assert_eq!(t.snapshot().drives[2].status, DriveStatus::Ejected);
        assert_eq!(uses_of(&t, 502), 1);
        assert!(mv(&mut t, 1019, 500).is_good());
        assert_eq!(drv(&mut t, 0, &cdb::test_unit_ready()).sense_code(), (2, 0x3a, 0));
        assert!(mv(&mut t, 500, 1019).is_good());
        assert_eq!(uses_of(&t, 1019), 1);
        // With time: a cleaner configured in a drive cleans from time 0.
        let mut cfg = Config::default_library();
        cfg.cartridges.push(Cartridge::new("CLN002L1", Location::Drive(2)));
        let mut t = Target::new(cfg).unwrap();
        assert!(t.snapshot().drives[2].cleaning);
        assert_eq!(drv(&mut t, 2, &cdb::test_unit_ready()).sense_code(), (2, 0x30, 0x03));
        t.advance(30_000);
        assert_eq!(drv(&mut t, 2, &cdb::test_unit_ready()).sense_code(), (2, 0x3a, 0));
        assert_eq!(uses_of(&t, 502), 1);
    }

    #[test]
    fn expired_and_invalid_cleaners_are_ejected_with_flags_22_and_23() {
        let mut cfg = Config::default_library();
        cfg.clean_after_loads = 1;
        cfg.cleaner_max_uses = 3;
        cfg.cartridges.push(Cartridge { uses: 3, ..Cartridge::new("CLN002L1", Location::Slot(18)) });
        cfg.cartridges.push(Cartridge { invalid_cleaner: true, ..Cartridge::new("CLN003L1", Location::Slot(19)) });
        let mut t = Target::new(cfg).unwrap();
        assert!(mv(&mut t, 1000, 500).is_good());
        assert!(mv(&mut t, 500, 1000).is_good());
        // Expired: in the drive for command_ms, then ejected without cleaning.
        assert!(mv(&mut t, 1017, 500).is_good());
        let arrived = t.now();
        assert!(!t.snapshot().drives[0].cleaning, "rejected, not cleaning");
        assert_eq!(drv(&mut t, 0, &cdb::test_unit_ready()).sense_code(), (2, 0x30, 0x03));
        t.advance(arrived + 1);
        assert_eq!(drv(&mut t, 0, &cdb::test_unit_ready()).sense_code(), (2, 0x3a, 0));
        assert_eq!(t.snapshot().drives[0].status, DriveStatus::Ejected);
        assert_eq!(alerts(&mut t, 0), vec![0x14, 0x16], "still needs cleaning; expired cleaner");
        assert_eq!(alerts(&mut t, 0), vec![0x14, 0x16], "not cleared by reading");
        assert_eq!(uses_of(&t, 500), 3, "no use counted");
        let r = mv(&mut t, 500, 1017);
        assert_eq!((r.is_good(), r.duration_ms), (true, 8000));
        assert_eq!(alerts(&mut t, 0), vec![0x14, 0x16], "readable until the next load");
        // Invalid: ejected at once; loading it clears flag 22 and raises 23.
        assert!(mv(&mut t, 1018, 500).is_good());
        assert_eq!(drv(&mut t, 0, &cdb::test_unit_ready()).sense_code(), (2, 0x3a, 0));
        assert_eq!(t.snapshot().drives[0].status, DriveStatus::Ejected);
        assert_eq!(alerts(&mut t, 0), vec![0x14, 0x17]);
        assert_eq!(t.snapshot().drives[0].tapealert, (1 << 19) | (1 << 22));
        assert!(mv(&mut t, 500, 1018).is_good());
        assert_eq!(alerts(&mut t, 0), vec![0x14, 0x17]);
        // The next cartridge loaded clears it.
        assert!(mv(&mut t, 1001, 500).is_good());
        assert_eq!(alerts(&mut t, 0), vec![0x14]);
        // A good cleaner still cleans (the limit counts uses below cleaner_max_uses).
        assert!(mv(&mut t, 500, 1001).is_good());
        assert!(mv(&mut t, 1019, 500).is_good());
        t.advance(t.now() + 30_000);
        assert!(alerts(&mut t, 0).is_empty());
    }

    #[test]
    fn cleaner_stuck_until_reset() {
        let mut t = lib();
        t.try_inject(crate::Fault::CleanerStuck { drive: 0 }).unwrap();
        assert!(t.try_inject(crate::Fault::CleanerStuck { drive: 4 }).is_err());
        assert!(mv(&mut t, 1019, 500).is_good());
        t.advance(t.now() + 3_600_000);
        assert_eq!(drv(&mut t, 0, &cdb::test_unit_ready()).sense_code(), (2, 0x30, 0x03));
        assert_eq!(drv(&mut t, 0, &cdb::load_unload(false, false)).sense_code(), (2, 0x30, 0x03));
        assert_eq!(mv(&mut t, 500, 1019).sense_code(), (5, 0x53, 0x02));
        let d = &t.snapshot().drives[0];
        assert_eq!((d.status, d.cleaning), (DriveStatus::Cleaning, true));
        // The reset ejects it, without a cleaning done.
        t.inject(crate::Fault::Reset { device: Device::Drive(0) });
        assert_eq!(drv(&mut t, 0, &cdb::test_unit_ready()).sense_code(), (6, 0x29, 0));
        assert_eq!(drv(&mut t, 0, &cdb::test_unit_ready()).sense_code(), (2, 0x3a, 0));
        assert_eq!(t.snapshot().drives[0].status, DriveStatus::Ejected);
        assert!(!t.snapshot().drives[0].cleaning);
        assert_eq!(uses_of(&t, 500), 0);
        assert!(mv(&mut t, 500, 1019).is_good());
        // The reset cleared the fault: the next cleaning ends.
        assert!(mv(&mut t, 1019, 500).is_good());
        t.advance(t.now() + 30_000);
        assert_eq!(drv(&mut t, 0, &cdb::test_unit_ready()).sense_code(), (2, 0x3a, 0));
        assert_eq!(uses_of(&t, 500), 1);
        // Injected during a cleaning, it stops that cleaning from ending.
        assert!(mv(&mut t, 500, 1019).is_good());
        assert!(mv(&mut t, 1019, 501).is_good());
        t.advance(t.now() + 10_000);
        t.inject(crate::Fault::CleanerStuck { drive: 1 });
        t.advance(t.now() + 100_000);
        assert_eq!(drv(&mut t, 1, &cdb::test_unit_ready()).sense_code(), (2, 0x30, 0x03));
        assert!(t.snapshot().drives[1].cleaning);
        t.inject(crate::Fault::Reset { device: Device::Drive(1) });
        assert_eq!(t.snapshot().drives[1].status, DriveStatus::Ejected);
        assert_eq!(uses_of(&t, 501), 1);
    }

    #[test]
    fn tapealert_fault_flags_are_read_once_except_clean_now() {
        let mut t = lib();
        for flag in [3, 20, 64] {
            t.try_inject(crate::Fault::TapeAlert { drive: 1, flag }).unwrap();
        }
        for bad in [0, 65] {
            let e = t.try_inject(crate::Fault::TapeAlert { drive: 1, flag: bad }).unwrap_err();
            assert!(e.0.contains("1..=64"), "{e}");
        }
        assert!(t.try_inject(crate::Fault::TapeAlert { drive: 7, flag: 3 }).is_err());
        let s = t.snapshot();
        assert_eq!(s.drives[1].tapealert, (1 << 2) | (1 << 19) | (1 << 63));
        assert!(s.drives[1].clean_now);
        assert!(alerts(&mut t, 0).is_empty(), "other drives unaffected");
        assert_eq!(alerts(&mut t, 1), vec![3, 20, 64]);
        // Read-clear, except flag 20 which waits for a cleaning.
        assert_eq!(alerts(&mut t, 1), vec![20]);
        assert_eq!(t.snapshot().drives[1].tapealert, 1 << 19);
        // The drive signals the raised flags once (informational exceptions): its next TEST UNIT READY answers
        // RECOVERED ERROR 5D/00, the following ones GOOD; other commands are not changed.
        assert!(mv(&mut t, 1000, 501).is_good());
        t.advance(t.now() + 20_000);
        assert_eq!(drv(&mut t, 1, &cdb::test_unit_ready()).sense_code(), (1, 0x5d, 0));
        assert!(drv(&mut t, 1, &cdb::test_unit_ready()).is_good());
        assert!(mv(&mut t, 501, 1000).is_good());
        assert!(mv(&mut t, 1019, 501).is_good());
        t.advance(t.now() + 30_000);
        assert!(alerts(&mut t, 1).is_empty());
        // A truncated read still clears; the LOG SENSE of page 0 does not.
        t.inject(crate::Fault::TapeAlert { drive: 1, flag: 5 });
        assert!(drv(&mut t, 1, &cdb::log_sense(0, 255)).is_good());
        assert_eq!(t.snapshot().drives[1].tapealert, 1 << 4);
        let r = t.execute(Device::Drive(1), &cdb::log_sense(0x2e, 8), Direction::FromDevice(8));
        assert_eq!(r.data.len(), 8);
        assert_eq!(t.snapshot().drives[1].tapealert, 0);
    }

    /// READ(6), variable-block mode unless `fixed`, of `length` bytes.
    fn read6(length: u32, fixed: bool) -> Vec<u8> {
        let l = length.to_be_bytes();
        vec![0x08, u8::from(fixed), l[1], l[2], l[3], 0]
    }

    /// READ(6) of `length` bytes into a buffer of `length` bytes.
    fn read(t: &mut Target, i: usize, length: u32) -> Response {
        t.execute(Device::Drive(i), &read6(length, false), Direction::FromDevice(length))
    }

    /// A recognisable block of `n` bytes.
    fn block(n: usize) -> Vec<u8> {
        (0..n).map(|k| u8::try_from(k % 251).unwrap()).collect()
    }

    /// The default library with `first_block` on a data cartridge in slot 17 (address 1016), which is then put in
    /// drive 0 and left to thread.
    fn loaded_with(first_block: Option<Vec<u8>>) -> Target {
        let mut cfg = Config::default_library();
        cfg.cartridges.push(Cartridge { first_block, ..Cartridge::new("DAT017L6", Location::Slot(17)) });
        let mut t = Target::new(cfg).unwrap();
        assert!(mv(&mut t, 1016, 500).is_good());
        t.advance(t.now() + 20_000);
        assert!(drv(&mut t, 0, &cdb::test_unit_ready()).is_good());
        t
    }

    /// (BOP, first block location) from READ POSITION.
    fn position(t: &mut Target, i: usize) -> (bool, u32) {
        let r = drv(t, i, &cdb::read_position());
        assert!(r.is_good(), "{r:?}");
        assert_eq!(r.data[4..8], r.data[8..12], "first and last block location");
        (r.data[0] & 0x80 != 0, u32::from_be_bytes(r.data[4..8].try_into().unwrap()))
    }

    /// Fixed-format sense: VALID, ILI and the INFORMATION field.
    fn info(r: &Response) -> (bool, bool, i32) {
        assert_eq!(r.sense[0] & 0x7f, 0x70);
        (r.sense[0] & 0x80 != 0, r.sense[2] & 0x20 != 0, i32::from_be_bytes(r.sense[3..7].try_into().unwrap()))
    }

    #[test]
    fn read_returns_the_first_block_then_end_of_data() {
        let mut t = loaded_with(Some(block(512)));
        assert_eq!(position(&mut t, 0), (true, 0));
        let r = read(&mut t, 0, 512);
        assert!(r.is_good(), "{r:?}");
        assert_eq!((r.data, r.resid), (block(512), 0));
        assert_eq!(t.snapshot().drives[0].position, 1);
        assert_eq!(position(&mut t, 0), (false, 1));
        // The next READ meets end of data: BLANK CHECK 00/05, INFORMATION = the requested length, nothing read.
        let checks = t.snapshot().counters.check_conditions;
        let r = read(&mut t, 0, 512);
        assert_eq!((r.status, r.sense_code()), (2, (0x08, 0x00, 0x05)));
        assert_eq!(info(&r), (true, false, 512));
        assert_eq!((r.data.len(), r.resid), (0, 512));
        assert_eq!(t.snapshot().counters.check_conditions, checks + 1);
        assert_eq!(position(&mut t, 0), (false, 1), "end of data does not move the tape");
        // REWIND goes back to the beginning, where the block is read again.
        assert!(drv(&mut t, 0, &cdb::rewind()).is_good());
        assert_eq!(position(&mut t, 0), (true, 0));
        assert_eq!(read(&mut t, 0, 512).data, block(512));
        // A transfer length of 0 reads nothing and does not move the tape.
        assert!(drv(&mut t, 0, &cdb::rewind()).is_good());
        let r = read(&mut t, 0, 0);
        assert!(r.is_good() && r.data.is_empty());
        assert_eq!(position(&mut t, 0), (true, 0));
    }

    #[test]
    fn read_of_a_longer_block_reports_ili_with_the_data() {
        let mut t = loaded_with(Some(block(64_512)));
        let r = read(&mut t, 0, 80);
        // CHECK CONDITION, NO SENSE 00/00, ILI, INFORMATION = 80 - 64512 (negative), and the first 80 bytes.
        assert_eq!((r.status, r.sense_code()), (2, (0, 0, 0)));
        assert_eq!(info(&r), (true, true, 80 - 64_512));
        assert_eq!(&r.sense[3..7], &(80i32 - 64_512).to_be_bytes());
        assert_eq!((r.data, r.resid), (block(80), 0));
        assert_eq!(t.snapshot().counters.check_conditions, 1);
        // The tape is past the block.
        assert_eq!(position(&mut t, 0), (false, 1));
        assert_eq!(read(&mut t, 0, 80).sense_code(), (0x08, 0x00, 0x05));
        // A buffer smaller than the transfer length gets what fits.
        assert!(drv(&mut t, 0, &cdb::rewind()).is_good());
        let r = t.execute(Device::Drive(0), &read6(1000, false), Direction::FromDevice(100));
        assert_eq!((r.status, info(&r)), (2, (true, true, 1000 - 64_512)));
        assert_eq!((r.data, r.resid), (block(100), 0));
    }

    #[test]
    fn read_sense_in_descriptor_format() {
        let mut cfg = Config::default_library();
        cfg.descriptor_sense = true;
        cfg.cartridges.push(Cartridge { first_block: Some(block(300)), ..Cartridge::new("DAT", Location::Drive(1)) });
        let mut t = Target::new(cfg).unwrap();
        let r = read(&mut t, 1, 256);
        assert_eq!(r.data, block(256));
        // Information descriptor (00h, VALID, 8 bytes two's complement) and stream commands descriptor (04h, ILI).
        let mut expected = vec![0x72, 0x00, 0x00, 0x00, 0, 0, 0, 16, 0x00, 0x0a, 0x80, 0x00];
        expected.extend_from_slice(&(-44i64).to_be_bytes());
        expected.extend_from_slice(&[0x04, 0x02, 0x00, 0x20]);
        assert_eq!(r.sense, expected);
        let r = read(&mut t, 1, 256);
        let mut expected = vec![0x72, 0x08, 0x00, 0x05, 0, 0, 0, 12, 0x00, 0x0a, 0x80, 0x00];
        expected.extend_from_slice(&256i64.to_be_bytes());
        assert_eq!(r.sense, expected);
        assert_eq!(r.sense_code(), (0x08, 0x00, 0x05));
    }

    #[test]
    fn read_of_a_shorter_block_is_a_short_transfer() {
        let mut t = loaded_with(Some(block(80)));
        let r = read(&mut t, 0, 262_144);
        assert!(r.is_good(), "{r:?}");
        assert!(r.sense.is_empty());
        assert_eq!((r.data, r.resid), (block(80), 262_144 - 80));
        assert_eq!(position(&mut t, 0), (false, 1));
    }

    #[test]
    fn blank_tape_is_end_of_data_at_the_beginning() {
        let mut t = loaded_with(None);
        let r = read(&mut t, 0, 65_536);
        assert_eq!((r.status, r.sense_code()), (2, (0x08, 0x00, 0x05)));
        assert_eq!(info(&r), (true, false, 65_536));
        assert!(r.data.is_empty());
        assert_eq!(position(&mut t, 0), (true, 0));
        // The default library's cartridges are blank too.
        let mut t = lib();
        assert!(mv(&mut t, 1000, 501).is_good());
        t.advance(t.now() + 20_000);
        assert_eq!(read(&mut t, 1, 1024).sense_code(), (0x08, 0x00, 0x05));
    }

    #[test]
    fn read_with_fixed_set_is_an_invalid_field() {
        let mut t = loaded_with(Some(block(10)));
        let r = t.execute(Device::Drive(0), &read6(1, true), Direction::FromDevice(512));
        assert_eq!(r.sense_code(), (0x05, 0x24, 0x00));
        assert_eq!(r.sense().unwrap().field, Some(crate::sense::FieldPointer { in_cdb: true, byte: 1, bit: Some(0) }));
        assert!(r.data.is_empty());
        assert_eq!(position(&mut t, 0), (true, 0), "nothing read");
        assert_eq!(drv(&mut t, 0, &[0x08, 0, 0, 1]).sense_code(), (0x05, 0x24, 0x00), "a CDB too short");
    }

    #[test]
    fn read_not_ready_as_test_unit_ready() {
        let mut cfg = Config::default_library();
        cfg.cartridges
            .push(Cartridge { first_block: Some(block(10)), ..Cartridge::new("DAT017L6", Location::Slot(17)) });
        let mut t = Target::new(cfg).unwrap();
        let same = |t: &mut Target, i: usize| {
            let tur = drv(t, i, &cdb::test_unit_ready()).sense_code();
            assert_ne!(tur, (0, 0, 0));
            assert_eq!(read(t, i, 10).sense_code(), tur);
            tur
        };
        // No tape.
        assert_eq!(same(&mut t, 0), (0x02, 0x3a, 0x00));
        // Threading.
        assert!(mv(&mut t, 1016, 500).is_good());
        assert_eq!(same(&mut t, 0), (0x02, 0x04, 0x01));
        // Unloaded (ejected, waiting for the robot).
        t.advance(t.now() + 20_000);
        assert!(drv(&mut t, 0, &cdb::load_unload(false, false)).is_good());
        assert_eq!(same(&mut t, 0), (0x02, 0x3a, 0x00));
        // A cleaning cartridge.
        assert!(mv(&mut t, 1019, 501).is_good());
        assert_eq!(same(&mut t, 1), (0x02, 0x30, 0x03));
    }

    #[test]
    fn unload_load_and_moves_take_the_tape_back_to_the_beginning() {
        let mut t = loaded_with(Some(block(64)));
        assert_eq!(read(&mut t, 0, 64).data, block(64));
        // LOAD of a loaded tape positions it at the beginning.
        assert!(drv(&mut t, 0, &cdb::load_unload(true, false)).is_good());
        assert_eq!(position(&mut t, 0), (true, 0));
        assert_eq!(read(&mut t, 0, 64).data, block(64));
        // Unload (rewinds), load again.
        assert!(drv(&mut t, 0, &cdb::load_unload(false, false)).is_good());
        assert_eq!(t.snapshot().drives[0].position, 0);
        assert!(drv(&mut t, 0, &cdb::load_unload(true, false)).is_good());
        assert_eq!(read(&mut t, 0, 64).data, block(64));
        // The block travels with the cartridge: back to its slot, then into another drive.
        assert!(mv(&mut t, 500, 1016).is_good());
        assert_eq!(t.snapshot().drives[0].position, 0);
        assert!(mv(&mut t, 1016, 503).is_good());
        t.advance(t.now() + 20_000);
        assert_eq!(position(&mut t, 3), (true, 0));
        assert_eq!(read(&mut t, 3, 64).data, block(64));
        // A REWIND still needs a ready tape.
        assert_eq!(drv(&mut t, 2, &cdb::rewind()).sense_code(), (0x02, 0x3a, 0x00));
        // Moved by hand and back: a new load.
        assert!(mv(&mut t, 503, 1016).is_good());
        t.move_by_hand(1016, 500).unwrap();
        t.advance(t.now() + 20_000);
        assert_eq!(read(&mut t, 0, 64).data, block(64));
    }

    #[test]
    fn request_sense_reports_current_condition() {
        let mut t = lib();
        let r = drv(&mut t, 3, &cdb::request_sense(18));
        assert!(r.is_good());
        assert_eq!((r.data[2], r.data[12]), (2, 0x3a));
        let r = drv(&mut t, 3, &[0x0a, 0, 0, 0, 1, 0]);
        assert_eq!(r.sense_code(), (5, 0x20, 0));
    }
}
