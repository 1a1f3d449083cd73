//! The SSC tape drives: TEST UNIT READY, INQUIRY, LOAD UNLOAD, REWIND, READ POSITION, MODE SENSE,
//! LOG SENSE (TapeAlert), PREVENT ALLOW, REQUEST SENSE.

use crate::cdb::{mode_data, mode_request};
use crate::changer::REVISION;
use crate::config::Cartridge;
use crate::sense::{self, Sense};
use crate::{
    be, inquiry, request_sense, std_inquiry, DevState, DriveStatus, ElementType, Medium, Outcome, Request, Target,
};

/// Drive INQUIRY vendor identification.
pub const VENDOR: &str = "VLIB    ";
/// Drive INQUIRY product identification.
pub const PRODUCT: &str = "VIRTUAL TAPE    ";
/// TapeAlert flag "clean now".
pub const TAPEALERT_CLEAN_NOW: u16 = 0x14;

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
        }
    }

    pub(crate) fn is_ejected(&self, t: u64) -> bool {
        self.ejected_at.is_some_and(|e| e <= t)
    }

    pub(crate) fn removed(&mut self) {
        self.ejected_at = None;
        self.present_from = 0;
        self.ready_at = 0;
    }

    pub(crate) fn inserted(&mut self, m: &Medium, at: u64, ready_at: u64, clean_after: u32) {
        self.present_from = at;
        self.ready_at = ready_at;
        self.ejected_at = None;
        if m.cleaning {
            self.loads_since_clean = 0;
            self.clean_now = false;
        } else {
            self.loads_since_clean += 1;
            if clean_after > 0 && self.loads_since_clean >= clean_after {
                self.clean_now = true;
            }
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
            Some(_) if t < d.ready_at => DriveStatus::Loading,
            Some(m) if m.cleaning => DriveStatus::Cleaning,
            Some(_) => DriveStatus::Ready,
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

    pub(crate) fn drive_command(&mut self, i: usize, req: &Request, start: u64) -> Outcome {
        let cdb = &req.cdb[..];
        let cmd = self.config.scaled(self.config.timing.command_ms);
        let r = match cdb[0] {
            0x00 => self.drive_ready(i, start).map(|()| Vec::new()),
            0x03 => {
                let s = self.drives[i].dev.pending_ua.take().or_else(|| self.drive_ready(i, start).err());
                Ok(request_sense(cdb, s))
            }
            0x12 => {
                let product = self.config.drive_products.get(i).map_or(PRODUCT, String::as_str);
                inquiry(cdb, std_inquiry(0x01, true, VENDOR, product, REVISION), &self.drives[i].serial, VENDOR)
            }
            0x1b if self.config.drive_load_unload => return self.load_unload(i, cdb, start),
            0x01 => self.drive_ready(i, start).map(|()| Vec::new()),
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
        Outcome { result: r, cost: cmd }
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
        if status == DriveStatus::Empty {
            return Outcome::err(sense::MEDIUM_NOT_PRESENT, cmd);
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
        let mut d = vec![0u8; 20];
        d[0] = 0x80; // BOP: the emulated tape never moves
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

    fn log_sense(&self, i: usize, cdb: &[u8]) -> Result<Vec<u8>, Sense> {
        if cdb.len() < 10 {
            return Err(Sense::invalid_field(0, None));
        }
        let alloc = be(&cdb[7..9]) as usize;
        let mut d = match cdb[2] & 0x3f {
            0x00 => vec![0x00, 0x00, 0x00, 0x02, 0x00, 0x2e],
            0x2e => {
                let mut d = vec![0x2e, 0x00];
                d.extend_from_slice(&(64u16 * 5).to_be_bytes());
                for code in 1u16..=64 {
                    d.extend_from_slice(&code.to_be_bytes());
                    let flag = code == TAPEALERT_CLEAN_NOW && self.drives[i].clean_now;
                    d.extend_from_slice(&[0x03, 0x01, u8::from(flag)]);
                }
                d
            }
            _ => return Err(Sense::invalid_field(2, Some(5))),
        };
        d.truncate(alloc);
        Ok(d)
    }
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
        // cleaning cartridge in slot 20
        assert!(mv(&mut t, 1019, 500).is_good());
        t.advance(t.now() + 20_000);
        assert_eq!(drv(&mut t, 0, &cdb::test_unit_ready()).sense_code(), (2, 0x30, 0x03));
        assert_eq!(flag(&mut t), 0);
        assert_eq!(t.snapshot().drives[0].loads_since_clean, 0);
        let r = drv(&mut t, 0, &cdb::log_sense(0, 255));
        assert_eq!(r.data, vec![0, 0, 0, 2, 0, 0x2e]);
        assert_eq!(drv(&mut t, 0, &cdb::log_sense(0x30, 255)).sense_code(), (5, 0x24, 0));
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
