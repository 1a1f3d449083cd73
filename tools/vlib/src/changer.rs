//! The SMC media changer: INQUIRY, MODE SENSE pages 1Dh/1Eh/1Fh, READ ELEMENT STATUS, MOVE MEDIUM,
//! EXCHANGE MEDIUM, POSITION TO ELEMENT, INITIALIZE ELEMENT STATUS (WITH RANGE), PREVENT ALLOW.

use crate::cdb::{mode_data, mode_request};
use crate::config::{BarcodePad, DvcidUnsupported};
use crate::fault::InjectError;
use crate::sense::{self, Sense};
use crate::{be, inquiry, request_sense, std_inquiry, DriveStatus, ElementType, Medium, Outcome, Request, Target};

/// Changer INQUIRY vendor identification.
pub const VENDOR: &str = "VLIB    ";
/// Changer INQUIRY product identification.
pub const PRODUCT: &str = "VIRTUAL LIBRARY ";
/// INQUIRY product revision (changer and drives).
pub const REVISION: &str = "0100";

impl Target {
    pub(crate) fn changer_command(&mut self, req: &Request, start: u64) -> Outcome {
        let cdb = &req.cdb[..];
        let cmd = self.config.scaled(self.config.timing.command_ms);
        let door = self.door_open.then_some(sense::DOOR_OPEN);
        let r = match cdb[0] {
            0x00 => door.map_or(Ok(Vec::new()), Err),
            0x03 => Ok(request_sense(cdb, self.changer.pending_ua.take().or(door))),
            0x12 => inquiry(cdb, std_inquiry(0x08, false, VENDOR, PRODUCT, REVISION), &self.config.serial, VENDOR),
            0x1a | 0x5a => self.changer_mode_sense(cdb),
            0x1e => {
                if cdb.len() < 6 {
                    Err(Sense::invalid_field(0, None))
                } else {
                    self.changer.prevent = cdb[4] & 0x01 != 0;
                    Ok(Vec::new())
                }
            }
            0xb8 => return self.read_element_status(cdb),
            // The robot does not move while the door is open.
            0xa5 | 0x2b | 0x07 | 0x37 if self.door_open => Err(sense::DOOR_OPEN),
            0xa6 if self.config.exchange && self.door_open => Err(sense::DOOR_OPEN),
            0xa5 => return self.move_medium(cdb, start),
            0xa6 if self.config.exchange => return self.exchange_medium(cdb, start),
            0x2b => return self.position_to_element(cdb),
            0x07 | 0x37 => return self.initialize_element_status(cdb),
            _ => Err(sense::INVALID_OPCODE),
        };
        Outcome { result: r, cost: cmd }
    }

    fn page_1d(&self) -> Vec<u8> {
        let mut p = vec![0x1d, 0x12];
        for ty in ElementType::ALL {
            p.extend_from_slice(&self.base_address(ty).to_be_bytes());
            let n = u16::try_from(self.elements[ty.index()].len()).unwrap_or(u16::MAX);
            p.extend_from_slice(&n.to_be_bytes());
        }
        p.extend_from_slice(&[0, 0]);
        p
    }

    fn page_1e(&self) -> Vec<u8> {
        let n = self.elements[ElementType::Transport.index()].len();
        let mut p = vec![0x1e, u8::try_from(2 * n).unwrap_or(254)];
        for _ in 0..n.min(127) {
            p.extend_from_slice(&[0, 0]);
        }
        p
    }

    fn page_1f(&self) -> Vec<u8> {
        let mut p = vec![0u8; 20];
        p[0] = 0x1f;
        p[1] = 0x12;
        p[2] = 0x0e; // StorST, StorI/E, StorDT
                     // Move capabilities from storage, I/E, drive: to storage, I/E, drive.
        p[5] = 0x0e;
        p[6] = 0x0e;
        p[7] = 0x0e;
        if self.config.exchange {
            p[13] = 0x0e;
            p[14] = 0x0e;
            p[15] = 0x0e;
        }
        p
    }

    fn changer_mode_sense(&self, cdb: &[u8]) -> Result<Vec<u8>, Sense> {
        let req = mode_request(cdb)?;
        let changeable = cdb[2] >> 6 == 1;
        let mut pages = match req.page {
            0x1d => self.page_1d(),
            0x1e => self.page_1e(),
            0x1f => self.page_1f(),
            0x3f => [self.page_1d(), self.page_1e(), self.page_1f()].concat(),
            _ => return Err(Sense::invalid_field(2, Some(5))),
        };
        if changeable {
            // Nothing is changeable: all-zero masks after each page header.
            let mut i = 0;
            while i + 1 < pages.len() {
                let len = usize::from(pages[i + 1]);
                pages[i + 2..i + 2 + len].fill(0);
                i += 2 + len;
            }
        }
        Ok(mode_data(&req, 0, None, &pages))
    }

    fn volume_tag(&self, m: Option<&Medium>) -> [u8; 36] {
        let mut t = [0u8; 36];
        if let Some(m) = m {
            let pad = match self.config.barcode_pad {
                BarcodePad::Space => b' ',
                BarcodePad::Nul => 0,
            };
            t[..32].fill(pad);
            if m.label_unreadable {
                return t;
            }
            let b = m.barcode.as_bytes();
            let n = self.config.barcode_len.map_or(b.len(), usize::from).min(b.len()).min(32);
            t[..n].copy_from_slice(&b[..n]);
        }
        t
    }

    fn read_element_status(&mut self, cdb: &[u8]) -> Outcome {
        let cmd = self.config.scaled(self.config.timing.command_ms);
        let err = |s| Outcome::err(s, cmd);
        if cdb.len() < 12 {
            return err(Sense::invalid_field(0, None));
        }
        let voltag = cdb[1] & 0x10 != 0;
        let code = cdb[1] & 0x0f;
        if code > 4 {
            return err(Sense::invalid_field(1, Some(3)));
        }
        let start = u16::from_be_bytes([cdb[2], cdb[3]]);
        let count = usize::from(u16::from_be_bytes([cdb[4], cdb[5]]));
        let curdata = cdb[6] & 0x02 != 0;
        let mut dvcid = cdb[6] & 0x01 != 0;
        let alloc = be(&cdb[7..10]) as usize;
        if dvcid && !self.config.dvcid {
            match self.config.dvcid_unsupported {
                DvcidUnsupported::Ignore => dvcid = false,
                DvcidUnsupported::Reject => return err(Sense::invalid_field(6, Some(0))),
            }
        }
        if self.config.short_single_element_status && count == 1 {
            return Outcome::ok(Vec::new(), self.config.scaled(self.config.timing.command_ms));
        }
        let types: &[ElementType] =
            if code == 0 { &ElementType::ALL } else { &ElementType::ALL[usize::from(code - 1)..usize::from(code)] };
        // Select (type, first index, n) with address >= start, up to `count` elements in total.
        let mut left = count;
        let mut sel = Vec::new();
        let mut any = false;
        for &ty in types {
            let base = self.base_address(ty);
            let len = self.elements[ty.index()].len();
            let first = usize::from(start.saturating_sub(base));
            if first >= len {
                continue;
            }
            any = true;
            let n = (len - first).min(left);
            if n > 0 {
                sel.push((ty, first, n));
                left -= n;
            }
        }
        if !any && count > 0 {
            return err(sense::INVALID_ELEMENT);
        }
        let id_len = if dvcid {
            let m = self.drives.iter().map(|d| d.serial.len()).max().unwrap_or(0);
            m.div_ceil(4) * 4
        } else {
            0
        };
        let total: usize = sel.iter().map(|s| s.2).sum();
        let mut out = vec![0u8; 8];
        if let Some(&(ty, first, _)) = sel.first() {
            let a = self.base_address(ty) + u16::try_from(first).expect("address range");
            out[0..2].copy_from_slice(&a.to_be_bytes());
        }
        out[2..4].copy_from_slice(&u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes());
        for &(ty, first, n) in &sel {
            let with_id = dvcid && ty == ElementType::Drive;
            let natural = 12 + if voltag { 36 } else { 0 } + if with_id { 4 + id_len } else { 0 };
            let dlen = natural.max(usize::from(self.config.descriptor_len));
            let mut page = [0u8; 8];
            page[0] = ty.code();
            page[1] = if voltag { 0x80 } else { 0 };
            page[2..4].copy_from_slice(&u16::try_from(dlen).unwrap_or(u16::MAX).to_be_bytes());
            let bytes = u32::try_from(dlen * n).unwrap_or(u32::MAX).to_be_bytes();
            page[5..8].copy_from_slice(&bytes[1..4]);
            out.extend_from_slice(&page);
            let base = self.base_address(ty);
            for i in first..first + n {
                let e = &self.elements[ty.index()][i];
                let at = out.len();
                out.resize(at + dlen, 0);
                let d = &mut out[at..];
                let addr = base + u16::try_from(i).expect("address range");
                d[0..2].copy_from_slice(&addr.to_be_bytes());
                let mut flags = u8::from(e.medium.is_some());
                // ACCESS: the robot can reach the element (not while the door is open).
                let access = if self.door_open { 0 } else { 0x08 };
                match ty {
                    ElementType::Transport => {}
                    ElementType::Storage | ElementType::Drive => flags |= access,
                    ElementType::ImportExport => {
                        flags |= access | 0x10 | 0x20;
                        if e.impexp {
                            flags |= 0x02;
                        }
                    }
                }
                d[2] = flags;
                if let Some(src) = e.source.filter(|_| e.medium.is_some()) {
                    d[9] = 0x80;
                    d[10..12].copy_from_slice(&src.to_be_bytes());
                }
                if let Some(m) = &e.medium {
                    d[9] |= if m.cleaning { 2 } else { 1 };
                }
                let mut o = 12;
                if voltag {
                    d[o..o + 36].copy_from_slice(&self.volume_tag(e.medium.as_ref()));
                    o += 36;
                }
                if with_id {
                    d[o] = 0x02; // code set ASCII
                    d[o + 1] = 0x00; // identifier type 0: vendor specific
                    d[o + 3] = u8::try_from(id_len).unwrap_or(u8::MAX);
                    let id = &mut d[o + 4..o + 4 + id_len];
                    id.fill(b' ');
                    let s = self.drives[i].serial.as_bytes();
                    id[..s.len()].copy_from_slice(s);
                }
            }
        }
        let report = u32::try_from(out.len() - 8).unwrap_or(u32::MAX).to_be_bytes();
        out[5..8].copy_from_slice(&report[1..4]);
        out.truncate(alloc);
        let t = &self.config.timing;
        let per = if curdata {
            0
        } else if voltag {
            t.res_voltag_per_element_ms
        } else {
            t.res_per_element_ms
        };
        let cost = self.config.scaled(t.command_ms + per * total as u64);
        Outcome::ok(out, cost)
    }

    /// Address → (type, index), rejecting transport elements as sources/destinations.
    fn slot(&self, addr: u16) -> Result<(ElementType, usize), Sense> {
        match self.locate(addr) {
            Some((ElementType::Transport, _)) | None => Err(sense::INVALID_ELEMENT),
            Some(x) => Ok(x),
        }
    }

    fn check_transport(&self, addr: u16) -> Result<(), Sense> {
        match self.locate(addr) {
            Some((ElementType::Transport, _)) => Ok(()),
            _ if addr == 0 => Ok(()),
            _ => Err(sense::INVALID_ELEMENT),
        }
    }

    /// Checks a medium can be taken from element (ty, i) at `start`; returns the extra cost (implicit unload).
    fn check_source(&self, ty: ElementType, i: usize, start: u64) -> Result<u64, Sense> {
        if self.elements[ty.index()][i].medium.is_none() {
            return Err(sense::SOURCE_EMPTY);
        }
        match ty {
            ElementType::ImportExport if self.changer.prevent => Err(sense::REMOVAL_PREVENTED),
            ElementType::Drive => {
                let d = &self.drives[i];
                if d.dev.prevent {
                    return Err(sense::REMOVAL_PREVENTED);
                }
                if d.wont_unload {
                    return Err(sense::INTERNAL_FAILURE);
                }
                if self.drive_status(i, start) == DriveStatus::Cleaning {
                    // The drive holds the cleaning cartridge until it ejects it.
                    return Err(sense::REMOVAL_PREVENTED);
                }
                if d.is_ejected(start) {
                    Ok(0)
                } else if self.config.unload_before_move {
                    Err(sense::REMOVAL_PREVENTED)
                } else {
                    Ok(self.config.timing.unload_ms)
                }
            }
            _ => Ok(0),
        }
    }

    fn take(&mut self, ty: ElementType, i: usize, extra: u64) -> Medium {
        let e = &mut self.elements[ty.index()][i];
        e.source = None;
        e.impexp = false;
        if ty == ElementType::Drive {
            if extra > 0 {
                self.counters.unloads += 1;
            }
            self.drives[i].removed();
        }
        self.elements[ty.index()][i].medium.take().expect("checked full")
    }

    fn put(&mut self, ty: ElementType, i: usize, m: Medium, from: u16, at: u64) {
        if ty == ElementType::Drive {
            self.counters.loads += 1;
            self.drive_insert(i, &m, at);
        }
        let e = &mut self.elements[ty.index()][i];
        e.medium = Some(m);
        e.source = Some(from);
        e.impexp = false;
    }

    /// Moves the cartridge in `source` to `destination` behind every initiator's back, as an operator or another
    /// host would (`mtx load`): at once, with no robot time and no unit attention. A drive destination loads (and
    /// threads for `load_ms`); a drive source must not be prevented from removal. Errors say why nothing moved.
    pub fn move_by_hand(&mut self, source: u16, destination: u16) -> Result<(), InjectError> {
        let at = |a: u16| match self.locate(a) {
            Some((ElementType::Transport, _)) | None => Err(InjectError(format!("no element {a} to move with"))),
            Some(x) => Ok(x),
        };
        let ((sty, si), (dty, di)) = (at(source)?, at(destination)?);
        let now = self.now();
        self.settle_drives(now);
        let extra = self.check_source(sty, si, now).map_err(|s| InjectError(format!("source {source}: {s:?}")))?;
        if source == destination || self.elements[dty.index()][di].medium.is_some() {
            return Err(InjectError(format!("destination {destination} is full")));
        }
        let m = self.take(sty, si, extra);
        self.put(dty, di, m, source, now);
        Ok(())
    }

    fn move_medium(&mut self, cdb: &[u8], start: u64) -> Outcome {
        let cmd = self.config.scaled(self.config.timing.command_ms);
        if cdb.len() < 12 {
            return Outcome::err(Sense::invalid_field(0, None), cmd);
        }
        let src = u16::from_be_bytes([cdb[4], cdb[5]]);
        let dst = u16::from_be_bytes([cdb[6], cdb[7]]);
        let checked = (|| {
            self.check_transport(u16::from_be_bytes([cdb[2], cdb[3]]))?;
            let s = self.slot(src)?;
            let d = self.slot(dst)?;
            if cdb[10] & 0x01 != 0 {
                return Err(Sense::invalid_field(10, Some(0)));
            }
            let extra = self.check_source(s.0, s.1, start)?;
            if src != dst && self.elements[d.0.index()][d.1].medium.is_some() {
                return Err(sense::DESTINATION_FULL);
            }
            Ok((s, d, extra))
        })();
        let ((sty, si), (dty, di), extra) = match checked {
            Ok(x) => x,
            Err(s) => return Outcome::err(s, cmd),
        };
        let cost = self.config.scaled(self.config.timing.move_ms + extra);
        if self.jam_moves > 0 {
            self.jam_moves -= 1;
            return Outcome::err(sense::ROBOT_JAM, cost);
        }
        if src != dst {
            let m = self.take(sty, si, extra);
            self.put(dty, di, m, src, start + cost);
        }
        self.counters.moves += 1;
        Outcome::ok(Vec::new(), cost)
    }

    fn exchange_medium(&mut self, cdb: &[u8], start: u64) -> Outcome {
        let cmd = self.config.scaled(self.config.timing.command_ms);
        if cdb.len() < 12 {
            return Outcome::err(Sense::invalid_field(0, None), cmd);
        }
        let src = u16::from_be_bytes([cdb[4], cdb[5]]);
        let first = u16::from_be_bytes([cdb[6], cdb[7]]);
        let second = u16::from_be_bytes([cdb[8], cdb[9]]);
        let checked = (|| {
            self.check_transport(u16::from_be_bytes([cdb[2], cdb[3]]))?;
            let s = self.slot(src)?;
            let f = self.slot(first)?;
            let d = self.slot(second)?;
            if cdb[10] & 0x03 != 0 {
                return Err(Sense::invalid_field(10, Some(1)));
            }
            if src == first {
                return Err(Sense::invalid_field(6, None));
            }
            let e1 = self.check_source(s.0, s.1, start)?;
            let e2 = self.check_source(f.0, f.1, start)?;
            if second != src && self.elements[d.0.index()][d.1].medium.is_some() {
                return Err(sense::DESTINATION_FULL);
            }
            Ok((s, f, d, e1 + e2))
        })();
        let (s, f, d, extra) = match checked {
            Ok(x) => x,
            Err(e) => return Outcome::err(e, cmd),
        };
        let cost = self.config.scaled(2 * self.config.timing.move_ms + extra);
        if self.jam_moves > 0 {
            self.jam_moves -= 1;
            return Outcome::err(sense::ROBOT_JAM, cost);
        }
        let m1 = self.take(s.0, s.1, extra);
        let m2 = self.take(f.0, f.1, extra);
        self.put(f.0, f.1, m1, src, start + cost);
        self.put(d.0, d.1, m2, first, start + cost);
        self.counters.moves += 2;
        Outcome::ok(Vec::new(), cost)
    }

    fn position_to_element(&mut self, cdb: &[u8]) -> Outcome {
        let cmd = self.config.scaled(self.config.timing.command_ms);
        if cdb.len() < 10 {
            return Outcome::err(Sense::invalid_field(0, None), cmd);
        }
        let r = self
            .check_transport(u16::from_be_bytes([cdb[2], cdb[3]]))
            .and_then(|()| self.slot(u16::from_be_bytes([cdb[4], cdb[5]])));
        match r {
            Ok(_) => Outcome::ok(Vec::new(), self.config.scaled(self.config.timing.position_ms)),
            Err(s) => Outcome::err(s, cmd),
        }
    }

    fn initialize_element_status(&mut self, cdb: &[u8]) -> Outcome {
        let t = self.config.timing;
        let cmd = self.config.scaled(t.command_ms);
        let all: usize = self.elements.iter().map(Vec::len).sum();
        let n = if cdb[0] == 0x37 {
            if cdb.len() < 10 {
                return Outcome::err(Sense::invalid_field(0, None), cmd);
            }
            if cdb[1] & 0x01 == 0 {
                all
            } else {
                let start = u32::from(u16::from_be_bytes([cdb[2], cdb[3]]));
                let count = u32::from(u16::from_be_bytes([cdb[6], cdb[7]]));
                if self.locate(u16::from_be_bytes([cdb[2], cdb[3]])).is_none() {
                    return Outcome::err(sense::INVALID_ELEMENT, cmd);
                }
                ElementType::ALL
                    .iter()
                    .map(|&ty| {
                        let b = u32::from(self.base_address(ty));
                        let e = b + u32::try_from(self.elements[ty.index()].len()).unwrap_or(0);
                        let lo = b.max(start);
                        let hi = e.min(start + count);
                        hi.saturating_sub(lo) as usize
                    })
                    .sum()
            }
        } else {
            all
        };
        Outcome::ok(Vec::new(), self.config.scaled(t.command_ms + t.init_per_element_ms * n as u64))
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use crate::cdb;
    use crate::config::{Config, DvcidUnsupported, Personality};
    use crate::{Device, Direction, Response, Target};

    fn lib() -> Target {
        Target::new(Config::default_library()).unwrap()
    }

    fn run(t: &mut Target, cdb: &[u8], alloc: u32) -> Response {
        t.execute(Device::Changer, cdb, Direction::FromDevice(alloc))
    }

    fn mv(t: &mut Target, src: u16, dst: u16) -> Response {
        t.execute(Device::Changer, &cdb::move_medium(0, src, dst), Direction::None)
    }

    #[test]
    fn inquiry_standard() {
        let mut t = lib();
        let r = run(&mut t, &cdb::inquiry(None, 96), 96);
        assert!(r.is_good());
        let d = &r.data;
        assert_eq!(d.len(), 36);
        assert_eq!(r.resid, 60);
        assert_eq!(&d[0..5], &[0x08, 0x00, 0x06, 0x02, 31]);
        assert_eq!(&d[8..16], b"VLIB    ");
        assert_eq!(&d[16..32], b"VIRTUAL LIBRARY ");
        assert_eq!(&d[32..36], b"0100");
        // allocation length in the CDB truncates
        let r = run(&mut t, &cdb::inquiry(None, 5), 96);
        assert_eq!(r.data.len(), 5);
        assert_eq!(r.resid, 91);
    }

    #[test]
    fn inquiry_vpd() {
        let mut t = lib();
        let r = run(&mut t, &cdb::inquiry(Some(0), 255), 255);
        assert_eq!(r.data, vec![0x08, 0x00, 0x00, 0x03, 0x00, 0x80, 0x83]);
        let r = run(&mut t, &cdb::inquiry(Some(0x80), 255), 255);
        assert_eq!(r.data, b"\x08\x80\x00\x08VLIB0000".to_vec());
        let r = run(&mut t, &cdb::inquiry(Some(0x83), 255), 255);
        let d = &r.data;
        assert_eq!(&d[0..2], &[0x08, 0x83]);
        assert_eq!(usize::from(u16::from_be_bytes([d[2], d[3]])), d.len() - 4);
        // NAA designator: binary, type 3, length 8, NAA 5
        assert_eq!(&d[4..8], &[0x01, 0x03, 0x00, 0x08]);
        assert_eq!(d[8] >> 4, 5);
        // T10 vendor id designator: ASCII, type 1
        assert_eq!(&d[16..20], &[0x02, 0x01, 0x00, 16]);
        assert_eq!(&d[20..36], b"VLIB    VLIB0000");
        let r = run(&mut t, &cdb::inquiry(Some(0x99), 255), 255);
        assert_eq!(r.status, 2);
        let s = r.sense.clone();
        assert_eq!(r.sense_code(), (5, 0x24, 0));
        assert_eq!(&s[15..18], &[0xc0 | 0x08 | 7, 0, 2]);
        // page code without EVPD
        let r = run(&mut t, &[0x12, 0, 0x80, 0, 255, 0], 255);
        assert_eq!(r.sense_code(), (5, 0x24, 0));
    }

    #[test]
    fn page_1d_matches_tgt() {
        let mut t = lib();
        let r = run(&mut t, &cdb::mode_sense6(0x1d, true, 255), 255);
        assert!(r.is_good());
        assert_eq!(&r.data[0..4], &[23, 0, 0, 0]);
        assert_eq!(
            &r.data[4..22],
            &[
                0x1d, 0x12, 0x00, 0x01, 0x00, 0x01, 0x03, 0xe8, 0x00, 0x14, 0x00, 0x0a, 0x00, 0x02, 0x01, 0xf4, 0x00,
                0x04
            ]
        );
        assert_eq!(r.data.len(), 24);
        let r = run(&mut t, &cdb::mode_sense10(0x1d, true, 255), 255);
        assert_eq!(&r.data[0..8], &[0, 26, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&r.data[8..10], &[0x1d, 0x12]);
    }

    #[test]
    fn mode_pages_all_and_capabilities() {
        let mut t = lib();
        let r = run(&mut t, &cdb::mode_sense6(0x3f, true, 255), 255);
        let d = &r.data[4..];
        assert_eq!(d[0], 0x1d);
        assert_eq!(&d[20..24], &[0x1e, 0x02, 0, 0]);
        assert_eq!(&d[24..26], &[0x1f, 0x12]);
        assert_eq!(d[24 + 13], 0, "tgt personality has no EXCHANGE");
        assert_eq!(d[24 + 5], 0x0e);
        let mut g = Target::new(Config::new(Personality::Generic, 10, 1, 2)).unwrap();
        let r = run(&mut g, &cdb::mode_sense6(0x1f, true, 255), 255);
        assert_eq!(r.data[4 + 13], 0x0e, "generic has EXCHANGE");
        assert_eq!(&r.data[4..10], &[0x1f, 0x12, 0x0e, 0, 0, 0x0e]);
        let r = run(&mut t, &cdb::mode_sense6(0x08, true, 255), 255);
        assert_eq!(r.sense_code(), (5, 0x24, 0));
        let mut saved = cdb::mode_sense6(0x1d, true, 255);
        saved[2] |= 0xc0;
        assert_eq!(run(&mut t, &saved, 255).sense_code(), (5, 0x39, 0));
        let mut ch = cdb::mode_sense6(0x1d, true, 255);
        ch[2] |= 0x40;
        let r = run(&mut t, &ch, 255);
        assert_eq!(&r.data[4..6], &[0x1d, 0x12]);
        assert!(r.data[6..].iter().all(|&b| b == 0));
    }

    #[test]
    fn res_drives_like_vmlab_capture() {
        let mut t = lib();
        assert!(mv(&mut t, 1000, 500).is_good());
        let r = run(&mut t, &cdb::read_element_status(4, 500, 4, true, false, false, 0xffff), 0xffff);
        assert!(r.is_good());
        let d = &r.data;
        assert_eq!(&d[0..8], &[0x01, 0xf4, 0x00, 0x04, 0x00, 0x00, 0x00, 0xd8]);
        assert_eq!(&d[8..16], &[0x04, 0x80, 0x00, 0x34, 0x00, 0x00, 0x00, 0xd0]);
        assert_eq!(d.len(), 8 + 8 + 4 * 52);
        let e = &d[16..16 + 52];
        assert_eq!(&e[0..2], &[0x01, 0xf4]);
        assert_eq!(e[2], 0x09, "FULL | ACCESS");
        assert_eq!(e[9], 0x81, "SVALID, medium type data");
        assert_eq!(&e[10..12], &[0x03, 0xe8]);
        assert_eq!(&e[12..20], b"ABC001L6");
        assert!(e[20..44].iter().all(|&b| b == b' '));
        assert_eq!(&e[44..52], &[0; 8]);
        let e2 = &d[16 + 52..16 + 104];
        assert_eq!(&e2[0..3], &[0x01, 0xf5, 0x08]);
        assert!(e2[9..].iter().all(|&b| b == 0));
        assert_eq!(r.resid, 0xffff - 224);
    }

    #[test]
    fn res_all_types_order_and_layout() {
        let mut cfg = Config::default_library();
        cfg.descriptor_len = 0;
        let mut t = Target::new(cfg).unwrap();
        assert!(t.try_inject(crate::Fault::ImportCartridge { barcode: "NEW001L6".into() }).is_ok());
        assert_eq!(run(&mut t, &cdb::test_unit_ready(), 0).sense_code(), (6, 0x28, 0));
        let r = run(&mut t, &cdb::read_element_status(0, 0, 0xffff, false, false, false, 0xffff), 0xffff);
        let d = &r.data;
        let n = 1 + 20 + 2 + 4;
        assert_eq!(&d[0..4], &[0x00, 0x01, 0x00, n as u8]);
        assert_eq!(d.len(), 8 + 4 * 8 + n * 12);
        // transport page
        assert_eq!(&d[8..16], &[1, 0, 0, 12, 0, 0, 0, 12]);
        assert_eq!(&d[16..18], &[0, 1]);
        // storage page follows
        let p = 28;
        assert_eq!(&d[p..p + 8], &[2, 0, 0, 12, 0, 0, 0, 240]);
        assert_eq!(&d[p + 8..p + 11], &[0x03, 0xe8, 0x09]);
        assert_eq!(d[p + 8 + 9], 0x01, "no SVALID for initial placement");
        // slot 20 holds the cleaning cartridge (medium type 2)
        assert_eq!(d[p + 8 + 19 * 12 + 9], 0x02);
        // I/E page with IMPEXP on the imported cartridge
        let p = p + 8 + 240;
        assert_eq!(&d[p..p + 8], &[3, 0, 0, 12, 0, 0, 0, 24]);
        assert_eq!(&d[p + 8..p + 11], &[0x00, 0x0a, 0x01 | 0x02 | 0x08 | 0x10 | 0x20]);
        assert_eq!(&d[p + 20..p + 23], &[0x00, 0x0b, 0x38]);
        let p = p + 8 + 24;
        assert_eq!(&d[p..p + 8], &[4, 0, 0, 12, 0, 0, 0, 48]);
        assert_eq!(d.len(), p + 8 + 48);
    }

    #[test]
    fn res_start_count_and_truncation() {
        let mut t = lib();
        let r = run(&mut t, &cdb::read_element_status(2, 1005, 3, true, false, false, 0xffff), 0xffff);
        assert_eq!(&r.data[0..8], &[0x03, 0xed, 0, 3, 0, 0, 0, 8 + 3 * 52]);
        assert_eq!(&r.data[16 + 12..16 + 20], b"ABC006L6");
        // Truncated: the header still states the full report size.
        let full = run(&mut t, &cdb::read_element_status(2, 1000, 20, true, false, false, 0xffff), 0xffff);
        let r = run(&mut t, &cdb::read_element_status(2, 1000, 20, true, false, false, 100), 0xffff);
        assert_eq!(r.data.len(), 100);
        assert_eq!(r.data[..], full.data[..100]);
        assert_eq!(&r.data[5..8], &[0, 0x04, 0x18]); // 8 + 20*52 = 1048
        assert_eq!(r.resid, 0xffff - 100);
        // Allocation via the sg buffer smaller than the CDB's.
        let r = run(&mut t, &cdb::read_element_status(2, 1000, 20, true, false, false, 0xffff), 16);
        assert_eq!(r.data.len(), 16);
        assert_eq!(r.resid, 0);
        // bad element type, start beyond every element
        let mut bad = cdb::read_element_status(2, 1000, 1, false, false, false, 255);
        bad[1] = 7;
        assert_eq!(run(&mut t, &bad, 255).sense_code(), (5, 0x24, 0));
        let r = run(&mut t, &cdb::read_element_status(4, 600, 1, false, false, false, 255), 255);
        assert_eq!(r.sense_code(), (5, 0x21, 0x01));
    }

    #[test]
    fn res_barcode_styles() {
        let mut cfg = Config::default_library();
        cfg.barcode_len = Some(6);
        cfg.barcode_pad = crate::config::BarcodePad::Nul;
        let mut t = Target::new(cfg).unwrap();
        let r = run(&mut t, &cdb::read_element_status(2, 1000, 1, true, false, false, 255), 255);
        let tag = &r.data[16 + 12..16 + 48];
        assert_eq!(&tag[..6], b"ABC001");
        assert!(tag[6..].iter().all(|&b| b == 0));
    }

    /// A cartridge whose label the library cannot read has a blank volume tag; the others keep theirs.
    #[test]
    fn res_unreadable_label() {
        let mut cfg = Config::default_library();
        cfg.cartridges[0].label_unreadable = true;
        let mut t = Target::new(cfg).unwrap();
        let r = run(&mut t, &cdb::read_element_status(2, 1000, 2, true, false, false, 255), 255);
        let desc = r.data[8 + 2..12].to_vec();
        let len = usize::from(u16::from_be_bytes([desc[0], desc[1]]));
        let first = &r.data[16..16 + len];
        assert_eq!(first[2] & 0x01, 1, "full");
        assert!(first[12..44].iter().all(|&b| b == b' '), "blank tag: {:?}", &first[12..44]);
        let second = &r.data[16 + len..16 + 2 * len];
        assert_eq!(&second[12..20], b"ABC002L6");
    }

    #[test]
    fn res_dvcid() {
        let mut g = Target::new(Config::new(Personality::Generic, 4, 1, 2)).unwrap();
        let r = run(&mut g, &cdb::read_element_status(4, 500, 2, true, true, true, 255), 255);
        // 12 + 36 + 4 + 8 ("VDRV0000" is 8 bytes, already a multiple of 4)
        assert_eq!(&r.data[8..16], &[4, 0x80, 0, 60, 0, 0, 0, 120]);
        let e = &r.data[16..76];
        assert_eq!(&e[48..52], &[0x02, 0x00, 0x00, 8]);
        assert_eq!(&e[52..60], b"VDRV0000");
        // Storage descriptors carry no identifier.
        let r = run(&mut g, &cdb::read_element_status(2, 1000, 1, false, false, true, 255), 255);
        assert_eq!(&r.data[8..12], &[2, 0, 0, 12]);
        // Odd-length serial padded to a multiple of 4.
        let mut cfg = Config::new(Personality::Generic, 4, 1, 1);
        cfg.drive_serials = vec!["SER12".into()];
        let mut g = Target::new(cfg).unwrap();
        let r = run(&mut g, &cdb::read_element_status(4, 500, 1, false, false, true, 255), 255);
        assert_eq!(&r.data[8..12], &[4, 0, 0, 24]);
        assert_eq!(&r.data[16 + 12..16 + 24], b"\x02\x00\x00\x08SER12   ");
        // tgt ignores DVCID; reject when configured.
        let mut t = lib();
        let r = run(&mut t, &cdb::read_element_status(4, 500, 1, false, false, true, 255), 255);
        assert!(r.is_good());
        assert_eq!(&r.data[8..12], &[4, 0, 0, 52]);
        let mut cfg = Config::default_library();
        cfg.dvcid_unsupported = DvcidUnsupported::Reject;
        let mut t = Target::new(cfg).unwrap();
        let r = run(&mut t, &cdb::read_element_status(4, 500, 1, false, false, true, 255), 255);
        assert_eq!(r.sense_code(), (5, 0x24, 0));
        assert_eq!(&r.sense[15..18], &[0xc8, 0, 6]);
    }

    #[test]
    fn move_by_hand_changes_elements_without_attention() {
        let mut t = lib();
        t.move_by_hand(1002, 500).unwrap();
        let snap = t.snapshot();
        let e = |a: u16| snap.elements.iter().find(|e| e.address == a).unwrap().clone();
        assert!(!e(1002).full);
        assert_eq!(e(500).barcode.as_deref(), Some("ABC003L6"));
        assert_eq!(e(500).source, Some(1002));
        assert_eq!(snap.counters.commands, 0, "no command, no unit attention");
        assert!(mv(&mut t, 1002, 501).sense_code() == (0x05, 0x3B, 0x0E));
        assert!(t.move_by_hand(1002, 501).is_err(), "empty source");
        assert!(t.move_by_hand(1000, 500).is_err(), "full destination");
        assert!(t.move_by_hand(1000, 1).is_err(), "not onto the robot");
    }

    #[test]
    fn short_single_element_status_like_tgt() {
        let mut cfg = Config::default_library();
        cfg.short_single_element_status = true;
        let mut t = Target::new(cfg).unwrap();
        let r = t.execute(
            Device::Changer,
            &cdb::read_element_status(2, 1000, 1, true, false, false, 1024),
            Direction::FromDevice(1024),
        );
        assert!(r.is_good() && r.data.is_empty(), "{r:?}");
        assert_eq!(r.resid, 1024);
        let r = t.execute(
            Device::Changer,
            &cdb::read_element_status(2, 1000, 2, true, false, false, 1024),
            Direction::FromDevice(1024),
        );
        assert!(r.is_good() && r.data.len() > 8);
    }

    #[test]
    fn move_errors() {
        let mut t = lib();
        assert_eq!(mv(&mut t, 1016, 1017).sense_code(), (5, 0x3b, 0x0e));
        assert_eq!(mv(&mut t, 1000, 1001).sense_code(), (5, 0x3b, 0x0d));
        assert_eq!(mv(&mut t, 1000, 1020).sense_code(), (5, 0x21, 0x01));
        assert_eq!(mv(&mut t, 999, 1017).sense_code(), (5, 0x21, 0x01));
        assert_eq!(mv(&mut t, 1, 1017).sense_code(), (5, 0x21, 0x01));
        let r = t.execute(Device::Changer, &cdb::move_medium(7, 1000, 1017), Direction::None);
        assert_eq!(r.sense_code(), (5, 0x21, 0x01));
        let r = t.execute(Device::Changer, &cdb::move_medium(1, 1000, 1017), Direction::None);
        assert!(r.is_good());
        let s = t.snapshot();
        let e = s.elements.iter().find(|e| e.address == 1017).unwrap();
        assert_eq!((e.full, e.source), (true, Some(1000)));
        assert!(!s.elements.iter().find(|e| e.address == 1000).unwrap().full);
        assert_eq!(s.counters.moves, 1);
        // Only the move that succeeded is in the robot log, with its cost.
        let [m] = s.robot_log[..] else { panic!("one move logged: {:?}", s.robot_log) };
        assert_eq!((m.source, m.destination), (1000, 1017));
        assert_eq!(m.end_ms - m.start_ms, t.config.scaled(t.config.timing.move_ms));
    }

    #[test]
    fn prevent_blocks_ie_and_drive() {
        let mut t = lib();
        assert!(mv(&mut t, 1000, 10).is_good());
        assert!(t.execute(Device::Changer, &cdb::prevent_allow(true), Direction::None).is_good());
        assert_eq!(mv(&mut t, 10, 1000).sense_code(), (5, 0x53, 0x02));
        assert!(t.execute(Device::Changer, &cdb::prevent_allow(false), Direction::None).is_good());
        assert!(mv(&mut t, 10, 500).is_good());
        assert!(t.execute(Device::Drive(0), &cdb::prevent_allow(true), Direction::None).is_good());
        assert_eq!(mv(&mut t, 500, 1000).sense_code(), (5, 0x53, 0x02));
        assert!(t.execute(Device::Drive(0), &cdb::prevent_allow(false), Direction::None).is_good());
        assert!(mv(&mut t, 500, 1000).is_good());
    }

    #[test]
    fn unload_before_move_personality() {
        let mut cfg = Config::default_library();
        cfg.unload_before_move = true;
        let mut t = Target::new(cfg).unwrap();
        assert!(mv(&mut t, 1000, 500).is_good());
        assert_eq!(mv(&mut t, 500, 1000).sense_code(), (5, 0x53, 0x02));
        let r = t.execute(Device::Drive(0), &cdb::load_unload(false, false), Direction::None);
        assert!(r.is_good());
        assert!(mv(&mut t, 500, 1000).is_good());
        // Without the quirk the move unloads implicitly and takes longer.
        let mut t = lib();
        assert!(mv(&mut t, 1000, 500).is_good());
        let r = mv(&mut t, 500, 1000);
        assert!(r.is_good());
        assert_eq!(r.duration_ms, 8000 + 15000);
    }

    #[test]
    fn exchange_medium() {
        let mut t = lib();
        let r = t.execute(Device::Changer, &cdb::exchange_medium(0, 1000, 1001, 1000), Direction::None);
        assert_eq!(r.sense_code(), (5, 0x20, 0));
        let mut g = Target::new(Config::new(Personality::Generic, 4, 1, 1)).unwrap();
        let mut c = g.config().clone();
        c.cartridges = vec![
            crate::config::Cartridge::new("AAA001L6", crate::config::Location::Slot(1)),
            crate::config::Cartridge::new("BBB001L6", crate::config::Location::Slot(2)),
        ];
        g = Target::new(c).unwrap();
        let r = g.execute(Device::Changer, &cdb::exchange_medium(0, 1000, 1001, 1000), Direction::None);
        assert!(r.is_good());
        assert_eq!(r.duration_ms, 16000);
        let s = g.snapshot();
        let bc = |a: u16| s.elements.iter().find(|e| e.address == a).unwrap().barcode.clone();
        assert_eq!(bc(1000).as_deref(), Some("BBB001L6"));
        assert_eq!(bc(1001).as_deref(), Some("AAA001L6"));
        let r = g.execute(Device::Changer, &cdb::exchange_medium(0, 1000, 1002, 1003), Direction::None);
        assert_eq!(r.sense_code(), (5, 0x3b, 0x0e));
        let r = g.execute(Device::Changer, &cdb::exchange_medium(0, 1000, 1001, 1001), Direction::None);
        assert_eq!(r.sense_code(), (5, 0x3b, 0x0d));
    }

    #[test]
    fn position_and_initialize_costs() {
        let mut t = lib();
        let r = t.execute(Device::Changer, &cdb::position_to_element(0, 1005), Direction::None);
        assert!(r.is_good());
        assert_eq!(r.duration_ms, 2000);
        let r = t.execute(Device::Changer, &cdb::position_to_element(0, 5), Direction::None);
        assert_eq!(r.sense_code(), (5, 0x21, 1));
        let r = t.execute(Device::Changer, &cdb::initialize_element_status(), Direction::None);
        assert_eq!(r.duration_ms, 1 + 50 * 27);
        let r = t.execute(Device::Changer, &cdb::initialize_element_status_range(1010, 100), Direction::None);
        assert_eq!(r.duration_ms, 1 + 50 * 10);
        let r = t.execute(Device::Changer, &cdb::initialize_element_status_range(2000, 1), Direction::None);
        assert_eq!(r.sense_code(), (5, 0x21, 1));
        let r = run(&mut t, &cdb::read_element_status(2, 1000, 20, true, false, false, 0xffff), 0xffff);
        assert_eq!(r.duration_ms, 21);
        let r = run(&mut t, &cdb::read_element_status(2, 1000, 20, true, true, false, 0xffff), 0xffff);
        assert_eq!(r.duration_ms, 1);
    }

    #[test]
    fn unknown_opcode_and_request_sense() {
        let mut t = lib();
        let r = t.execute(Device::Changer, &[0xc5, 0, 0, 0, 0, 0], Direction::None);
        assert_eq!(r.sense_code(), (5, 0x20, 0));
        t.inject(crate::Fault::DoorClosed);
        let r = run(&mut t, &cdb::request_sense(18), 18);
        assert!(r.is_good());
        assert_eq!(r.data.len(), 18);
        assert_eq!((r.data[0], r.data[2], r.data[12], r.data[13]), (0x70, 6, 0x28, 0));
        let r = run(&mut t, &cdb::request_sense(18), 18);
        assert_eq!(r.data[2], 0);
        assert!(run(&mut t, &cdb::test_unit_ready(), 0).is_good());
    }

    /// Byte 2 (flags) of every element descriptor of a READ ELEMENT STATUS of all elements, by address.
    fn element_flags(t: &mut Target) -> Vec<(u16, u8)> {
        let r = run(t, &cdb::read_element_status(0, 0, 0xffff, false, false, false, 0xffff), 0xffff);
        assert!(r.is_good(), "{r:?}");
        let mut out = Vec::new();
        let mut p = 8;
        while p < r.data.len() {
            let dlen = usize::from(u16::from_be_bytes([r.data[p + 2], r.data[p + 3]]));
            let bytes = crate::be(&r.data[p + 5..p + 8]) as usize;
            for d in r.data[p + 8..p + 8 + bytes].chunks(dlen) {
                out.push((u16::from_be_bytes([d[0], d[1]]), d[2]));
            }
            p += 8 + bytes;
        }
        out
    }

    #[test]
    fn door_open_is_refused_while_removal_is_prevented() {
        let mut t = lib();
        assert!(run(&mut t, &cdb::prevent_allow(true), 0).is_good());
        let e = t.try_inject(crate::Fault::DoorOpen).unwrap_err();
        assert_eq!(e.0, "the door is locked: PREVENT MEDIUM REMOVAL is in effect");
        let s = t.snapshot();
        assert!(!s.door_open && s.changer_prevent);
        assert!(run(&mut t, &cdb::test_unit_ready(), 0).is_good(), "nothing happened");
        assert!(mv(&mut t, 1000, 1017).is_good());
        assert!(run(&mut t, &cdb::prevent_allow(false), 0).is_good());
        t.try_inject(crate::Fault::DoorOpen).unwrap();
        let s = t.snapshot();
        assert!(s.door_open && !s.changer_prevent);
        // Config faults go through the same rule.
        let c = Config::from_toml("[[fault]]\nkind = \"door_open\"").unwrap();
        assert!(Target::new(c).unwrap().snapshot().door_open);
    }

    #[test]
    fn door_open_stops_the_robot_until_closed() {
        let mut c = Config::new(Personality::Generic, 4, 1, 1);
        for (n, b) in [(1, "AAA001L6"), (2, "AAA002L6")] {
            c.cartridges.push(crate::config::Cartridge::new(b, crate::config::Location::Slot(n)));
        }
        let mut g = Target::new(c).unwrap();
        let mut t = lib();
        for t in [&mut t, &mut g] {
            let before = element_flags(t);
            assert!(before.iter().filter(|e| e.0 >= 10).all(|e| e.1 & 0x08 != 0), "ACCESS while closed: {before:?}");
            t.inject(crate::Fault::DoorOpen);
            let commands: [Vec<u8>; 6] = [
                cdb::move_medium(0, 1000, 1017),
                cdb::position_to_element(0, 1005),
                cdb::initialize_element_status(),
                cdb::initialize_element_status_range(1000, 5),
                cdb::test_unit_ready(),
                cdb::exchange_medium(0, 1000, 1001, 1000),
            ];
            for c in &commands {
                let r = t.execute(Device::Changer, c, Direction::None);
                let want = if c[0] == 0xa6 && !t.config().exchange { (5, 0x20, 0) } else { (2, 0x04, 0x83) };
                assert_eq!(r.sense_code(), want, "{c:02x?}");
                assert!(r.duration_ms <= 1, "no robot time");
            }
            let r = run(t, &cdb::request_sense(18), 18);
            assert_eq!((r.data[2], r.data[12], r.data[13]), (2, 0x04, 0x83), "REQUEST SENSE says why");
            assert!(t.snapshot().robot_log.is_empty(), "nothing moved");
            // READ ELEMENT STATUS answers, without ACCESS on storage, I/E and drive elements.
            let open = element_flags(t);
            assert_eq!(open.len(), before.len());
            for (&(a, f), &(b, g)) in open.iter().zip(&before) {
                assert_eq!(a, b);
                assert_eq!(f, g & !0x08, "element {a}");
            }
            // The operator moves cartridges by hand meanwhile.
            t.move_by_hand(1001, 10).unwrap();
            // The drives are not the changer: they answer as before.
            assert_eq!(
                t.execute(Device::Drive(0), &cdb::test_unit_ready(), Direction::None).sense_code(),
                (2, 0x3a, 0)
            );
            // Closing: 06/28/00 once, then ACCESS and the robot are back.
            t.inject(crate::Fault::DoorClosed);
            assert!(!t.snapshot().door_open);
            assert_eq!(run(t, &cdb::test_unit_ready(), 0).sense_code(), (6, 0x28, 0));
            assert!(run(t, &cdb::test_unit_ready(), 0).is_good());
            assert!(element_flags(t).iter().filter(|e| e.0 >= 10).all(|e| e.1 & 0x08 != 0));
            assert!(mv(t, 10, 1001).is_good());
        }
    }

    #[test]
    fn door_open_with_a_pending_unit_attention_reports_the_attention_first() {
        let mut t = lib();
        t.inject(crate::Fault::Reset { device: Device::Changer });
        t.inject(crate::Fault::DoorOpen);
        assert_eq!(mv(&mut t, 1000, 1017).sense_code(), (6, 0x29, 0));
        assert_eq!(mv(&mut t, 1000, 1017).sense_code(), (2, 0x04, 0x83));
        // Closing an open door while the initiator set PREVENT meanwhile is fine (only opening is locked).
        assert!(run(&mut t, &cdb::prevent_allow(true), 0).is_good());
        t.try_inject(crate::Fault::DoorClosed).unwrap();
        assert_eq!(run(&mut t, &cdb::test_unit_ready(), 0).sense_code(), (6, 0x28, 0));
        assert!(mv(&mut t, 1000, 1017).is_good());
    }

    #[test]
    fn large_library_in_chunks() {
        let mut cfg = Config::new(Personality::Generic, 50_000, 10, 64);
        cfg.addresses.storage = 4096;
        for n in 1..=40_000 {
            cfg.cartridges.push(crate::config::Cartridge::new(
                &crate::config::generated_barcode("X", n, "L8"),
                crate::config::Location::Slot(n),
            ));
        }
        cfg.time_scale = 0.0;
        let mut t = Target::new(cfg).unwrap();
        let mut seen = 0usize;
        let mut full = 0usize;
        let mut addr = 4096u16;
        let desc = 12 + 36;
        loop {
            let r = run(&mut t, &cdb::read_element_status(2, addr, 500, true, false, false, 0xff_ffff), 0xff_ffff);
            if !r.is_good() {
                assert_eq!(r.sense_code(), (5, 0x21, 1));
                break;
            }
            let d = &r.data;
            let n = usize::from(u16::from_be_bytes([d[2], d[3]]));
            assert_eq!(u16::from_be_bytes([d[0], d[1]]), addr);
            assert_eq!(d.len(), 16 + n * desc);
            for k in 0..n {
                let e = &d[16 + k * desc..16 + (k + 1) * desc];
                assert_eq!(u16::from_be_bytes([e[0], e[1]]), addr + k as u16);
                full += usize::from(e[2] & 1);
            }
            seen += n;
            addr = addr.wrapping_add(n as u16);
            if seen == 50_000 {
                break;
            }
        }
        assert_eq!(seen, 50_000);
        assert_eq!(full, 40_000);
        let r = run(&mut t, &cdb::read_element_status(4, 0, 64, false, false, true, 0xffff), 0xffff);
        assert_eq!(u16::from_be_bytes([r.data[2], r.data[3]]), 64);
    }
}
