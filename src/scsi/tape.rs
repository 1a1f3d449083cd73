//! Tape drive (SSC) data a changer service reads: TapeAlert flags and the read position.

use super::reader::{ParseError, Reader};

/// TapeAlert flag numbers (SSC-4 Annex A), 1-based like the standard's parameter codes.
pub mod tape_alert {
    /// 03h: hard error.
    pub const HARD_ERROR: u8 = 0x03;
    /// 04h: media.
    pub const MEDIA: u8 = 0x04;
    /// 05h: read failure.
    pub const READ_FAILURE: u8 = 0x05;
    /// 06h: write failure.
    pub const WRITE_FAILURE: u8 = 0x06;
    /// 14h: clean now.
    pub const CLEAN_NOW: u8 = 0x14;
    /// 15h: clean periodic.
    pub const CLEAN_PERIODIC: u8 = 0x15;
    /// 16h: expired cleaning media.
    pub const EXPIRED_CLEANING_MEDIA: u8 = 0x16;
    /// 17h: invalid cleaning tape.
    pub const INVALID_CLEANING_TAPE: u8 = 0x17;
    /// 1Eh: hardware A.
    pub const HARDWARE_A: u8 = 0x1E;
    /// 1Fh: hardware B.
    pub const HARDWARE_B: u8 = 0x1F;
}

/// The 64 TapeAlert flags as a bit set: flag `n` (1..=64) is bit `n - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TapeAlerts(pub u64);

impl TapeAlerts {
    /// True when flag `n` (1..=64) is set.
    pub fn is_set(self, flag: u8) -> bool {
        (1..=64).contains(&flag) && self.0 & (1u64 << (flag - 1)) != 0
    }

    /// The set flags, ascending.
    pub fn flags(self) -> Vec<u8> {
        (1..=64).filter(|&f| self.is_set(f)).collect()
    }

    /// True when the drive asks to be cleaned (clean now or clean periodic).
    pub fn needs_cleaning(self) -> bool {
        self.is_set(tape_alert::CLEAN_NOW) || self.is_set(tape_alert::CLEAN_PERIODIC)
    }

    /// Parses LOG SENSE page 2Eh: parameters 0001h–0040h, one byte each, bit 0 the flag.
    ///
    /// # References
    /// SSC-4 8.2.3; SPC-4 7.3 (log parameters).
    pub fn parse(buf: &[u8]) -> Result<TapeAlerts, ParseError> {
        let mut r = Reader::new(buf);
        let page = r.try_u8("page code")? & 0x3F;
        if page != 0x2E {
            return Err(ParseError::Invalid { what: "page code", value: u64::from(page) });
        }
        r.try_skip(1, "subpage code")?;
        let len = usize::from(r.try_be16("page length")?);
        let mut params = r.try_sub(len, "log parameters")?;
        let mut flags = 0u64;
        while !params.is_empty() {
            let code = params.try_be16("parameter code")?;
            params.try_skip(1, "parameter control byte")?;
            let plen = usize::from(params.try_u8("parameter length")?);
            let value = params.try_take(plen, "parameter value")?;
            if (1..=64).contains(&code) && value.first().is_some_and(|v| v & 1 != 0) {
                flags |= 1u64 << (code - 1);
            }
        }
        Ok(TapeAlerts(flags))
    }
}

/// READ POSITION short form data (SSC-4 7.9.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// BOP: at beginning of partition.
    pub beginning_of_partition: bool,
    /// EOP: at end of partition.
    pub end_of_partition: bool,
    /// Partition number.
    pub partition: u8,
    /// First block location, unless BPU (unknown).
    pub block: Option<u32>,
}

impl Position {
    /// Parses the 20-byte short form.
    pub fn parse(buf: &[u8]) -> Result<Position, ParseError> {
        let mut r = Reader::new(buf);
        let flags = r.try_u8("position flags")?;
        let partition = r.try_u8("partition number")?;
        r.try_skip(2, "reserved bytes")?;
        let block = r.try_be32("first block location")?;
        r.try_skip(12, "position data")?;
        Ok(Position {
            beginning_of_partition: flags & 0x80 != 0,
            end_of_partition: flags & 0x40 != 0,
            partition,
            block: (flags & 0x04 == 0).then_some(block),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tape_alert_page() {
        // Page 2Eh with flags 03h (clear), 14h (set), 40h (set).
        let buf = [0x2E, 0, 0, 15, 0, 0x03, 0x40, 1, 0, 0, 0x14, 0x40, 1, 1, 0, 0x40, 0x40, 1, 1];
        let a = TapeAlerts::parse(&buf).unwrap();
        assert_eq!(a.flags(), vec![0x14, 0x40]);
        assert!(a.needs_cleaning());
        assert!(!a.is_set(0) && !a.is_set(65));
        assert!(TapeAlerts::parse(&buf[..10]).is_err());
        let mut wrong = buf;
        wrong[0] = 0x2F;
        assert!(TapeAlerts::parse(&wrong).is_err());
    }

    #[test]
    fn tgt_read_position_unknown() {
        // tgt answers with BYCU and BPU set (position unknown) right after a MOVE MEDIUM put the tape in.
        let buf = std::fs::read(format!("{}/tests/data/tgt/drive-readpos.bin", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let p = Position::parse(&buf).unwrap();
        assert_eq!(p.block, None);
        assert!(!p.beginning_of_partition);
        let at_bop = [0x80, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(Position::parse(&at_bop).unwrap().block, Some(7));
        assert!(Position::parse(&buf[..19]).is_err());
    }
}
