//! The SMC media changer: INQUIRY, MODE SENSE pages 1Dh/1Eh/1Fh, READ ELEMENT STATUS, MOVE MEDIUM,
//! EXCHANGE MEDIUM, POSITION TO ELEMENT, INITIALIZE ELEMENT STATUS (WITH RANGE), PREVENT ALLOW.

use crate::cdb::{mode_data, mode_request};
use crate::config::{BarcodePad, DvcidUnsupported};
use crate::sense::{self, Sense};
use crate::{be, inquiry, request_sense, std_inquiry, ElementType, Medium, Outcome, Request, Target};

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
        let r = match cdb[0] {
            0x00 => Ok(Vec::new()),
            0x03 => Ok(request_sense(cdb, self.changer.pending_ua.take())),
            0x12 => inquiry(
                cdb,
                std_inquiry(0x08, false, VENDOR, PRODUCT, REVISION),
                &self.config.serial,
                VENDOR,
            ),
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
        let mut p = vec![0x1e, u8::try_from(2 * n).unwrap_or(u8::MAX & !1)];
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
        let types: &[ElementType] = if code == 0 {
            &ElementType::ALL
        } else {
            &ElementType::ALL[usize::from(code - 1)..usize::from(code)]
        };
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
                match ty {
                    ElementType::Transport => {}
                    ElementType::Storage | ElementType::Drive => flags |= 0x08,
                    ElementType::ImportExport => {
                        flags |= 0x08 | 0x10 | 0x20;
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
            let load = self.config.scaled(self.config.timing.load_ms);
            let n = self.config.clean_after_loads;
            self.drives[i].inserted(&m, at, at + load, n);
        }
        let e = &mut self.elements[ty.index()][i];
        e.medium = Some(m);
        e.source = Some(from);
        e.impexp = false;
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
