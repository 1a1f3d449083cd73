//! CDB builders: one function per command, each documented with its opcode and spec section.
//!
//! A builder returns a [`Cdb`]: the bytes plus the allocation length the command asks the device to fill, which
//! [`Cdb::into_command`] turns into a [`Command`] with the right data direction.

use std::time::Duration;

use super::command::{Command, DataDirection};
use super::element::ElementType;
use super::opcode;

/// A command descriptor block of 6 to 16 bytes, with the data-in length it expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cdb {
    buf: [u8; 16],
    len: usize,
    alloc: u32,
}

impl Cdb {
    fn new<const N: usize>(bytes: [u8; N], alloc: u32) -> Cdb {
        let mut buf = [0u8; 16];
        buf[..N].copy_from_slice(&bytes);
        Cdb { buf, len: N, alloc }
    }

    /// The CDB bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The operation code.
    pub fn opcode(&self) -> u8 {
        self.buf[0]
    }

    /// The number of bytes the command asks the device to return (0: no data in).
    pub fn allocation_length(&self) -> u32 {
        self.alloc
    }

    /// A transport command for this CDB with the given timeout.
    pub fn into_command(self, timeout: Duration) -> Command {
        let direction = if self.alloc == 0 { DataDirection::None } else { DataDirection::FromDevice(self.alloc) };
        Command { cdb: self.as_bytes().to_vec(), direction, timeout }
    }
}

fn be16(v: u16) -> [u8; 2] {
    v.to_be_bytes()
}

fn be24(v: u32) -> [u8; 3] {
    let b = v.min(0x00FF_FFFF).to_be_bytes();
    [b[1], b[2], b[3]]
}

/// TEST UNIT READY (00h): GOOD when the unit is ready, CHECK CONDITION with NOT READY otherwise.
///
/// # References
/// SPC-4 6.47.
pub fn test_unit_ready() -> Cdb {
    Cdb::new([opcode::TEST_UNIT_READY, 0, 0, 0, 0, 0], 0)
}

/// REQUEST SENSE (03h), fixed format, `alloc` bytes.
///
/// # References
/// SPC-4 6.39.
pub fn request_sense(alloc: u8) -> Cdb {
    Cdb::new([opcode::REQUEST_SENSE, 0, 0, 0, alloc, 0], u32::from(alloc))
}

/// INQUIRY (12h), standard data.
///
/// # References
/// SPC-4 6.6.
pub fn inquiry(alloc: u16) -> Cdb {
    let [hi, lo] = be16(alloc);
    Cdb::new([opcode::INQUIRY, 0, 0, hi, lo, 0], u32::from(alloc))
}

/// INQUIRY (12h) with EVPD for vital product data page `page` (00h supported pages, 80h unit serial number, 83h
/// device identification).
///
/// # References
/// SPC-4 6.6, 7.8.
pub fn inquiry_vpd(page: u8, alloc: u16) -> Cdb {
    let [hi, lo] = be16(alloc);
    Cdb::new([opcode::INQUIRY, 0x01, page, hi, lo, 0], u32::from(alloc))
}

/// MODE SENSE(6) (1Ah) for `page` (current values). `dbd` disables block descriptors.
///
/// # References
/// SPC-4 6.11.
pub fn mode_sense_6(page: u8, dbd: bool, alloc: u8) -> Cdb {
    Cdb::new([opcode::MODE_SENSE_6, if dbd { 0x08 } else { 0 }, page & 0x3F, 0, alloc, 0], u32::from(alloc))
}

/// MODE SENSE(10) (5Ah) for `page` (current values). `dbd` disables block descriptors.
///
/// # References
/// SPC-4 6.12.
pub fn mode_sense_10(page: u8, dbd: bool, alloc: u16) -> Cdb {
    let [hi, lo] = be16(alloc);
    Cdb::new([opcode::MODE_SENSE_10, if dbd { 0x08 } else { 0 }, page & 0x3F, 0, 0, 0, 0, hi, lo, 0], u32::from(alloc))
}

/// The fields of READ ELEMENT STATUS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadElementStatus {
    /// Element type to report (`All` for every type).
    pub element_type: ElementType,
    /// First element address to report.
    pub start: u16,
    /// Maximum number of elements to report.
    pub count: u16,
    /// Ask for volume tags (barcodes).
    pub voltag: bool,
    /// Report cached data: the library must not move the robot to find out (CURDATA).
    pub curdata: bool,
    /// Ask for device identifiers of data transfer elements (DVCID): drive serial numbers.
    pub dvcid: bool,
    /// Allocation length (24-bit).
    pub alloc: u32,
}

/// READ ELEMENT STATUS (B8h).
///
/// # References
/// SMC-3 6.10.
pub fn read_element_status(r: &ReadElementStatus) -> Cdb {
    let [s_hi, s_lo] = be16(r.start);
    let [c_hi, c_lo] = be16(r.count);
    let [a0, a1, a2] = be24(r.alloc);
    let byte1 = (if r.voltag { 0x10 } else { 0 }) | (r.element_type.code() & 0x0F);
    let byte6 = (if r.curdata { 0x02 } else { 0 }) | u8::from(r.dvcid);
    Cdb::new(
        [opcode::READ_ELEMENT_STATUS, byte1, s_hi, s_lo, c_hi, c_lo, byte6, a0, a1, a2, 0, 0],
        r.alloc.min(0x00FF_FFFF),
    )
}

/// MOVE MEDIUM (A5h): move the cartridge in `source` to `destination` with the robot at `transport`.
///
/// # References
/// SMC-3 6.6.
pub fn move_medium(transport: u16, source: u16, destination: u16, invert: bool) -> Cdb {
    let [t0, t1] = be16(transport);
    let [s0, s1] = be16(source);
    let [d0, d1] = be16(destination);
    Cdb::new([opcode::MOVE_MEDIUM, 0, t0, t1, s0, s1, d0, d1, 0, 0, u8::from(invert), 0], 0)
}

/// EXCHANGE MEDIUM (A6h): `source` goes to `first`, the cartridge in `first` goes to `second`.
///
/// # References
/// SMC-3 6.4.
pub fn exchange_medium(transport: u16, source: u16, first: u16, second: u16, inv1: bool, inv2: bool) -> Cdb {
    let [t0, t1] = be16(transport);
    let [s0, s1] = be16(source);
    let [f0, f1] = be16(first);
    let [d0, d1] = be16(second);
    let byte10 = u8::from(inv1) | (u8::from(inv2) << 1);
    Cdb::new([opcode::EXCHANGE_MEDIUM, 0, t0, t1, s0, s1, f0, f1, d0, d1, byte10, 0], 0)
}

/// POSITION TO ELEMENT (2Bh): put the robot in front of `destination`.
///
/// # References
/// SMC-3 6.8.
pub fn position_to_element(transport: u16, destination: u16, invert: bool) -> Cdb {
    let [t0, t1] = be16(transport);
    let [d0, d1] = be16(destination);
    Cdb::new([opcode::POSITION_TO_ELEMENT, 0, t0, t1, d0, d1, 0, 0, u8::from(invert), 0], 0)
}

/// INITIALIZE ELEMENT STATUS (07h): the library re-checks every element (barcodes); can take minutes.
///
/// # References
/// SMC-3 6.2.
pub fn initialize_element_status() -> Cdb {
    Cdb::new([opcode::INITIALIZE_ELEMENT_STATUS, 0, 0, 0, 0, 0], 0)
}

/// INITIALIZE ELEMENT STATUS WITH RANGE (37h) over `count` elements from `start`.
///
/// # References
/// SMC-3 6.3.
pub fn initialize_element_status_with_range(start: u16, count: u16) -> Cdb {
    let [s0, s1] = be16(start);
    let [c0, c1] = be16(count);
    Cdb::new([opcode::INITIALIZE_ELEMENT_STATUS_WITH_RANGE, 0x01, s0, s1, 0, 0, c0, c1, 0, 0], 0)
}

/// PREVENT ALLOW MEDIUM REMOVAL (1Eh): `prevent` locks the door / import-export ports (or a drive's eject).
///
/// # References
/// SPC-4 6.13, SMC-3 6.7.
pub fn prevent_allow_medium_removal(prevent: bool) -> Cdb {
    Cdb::new([opcode::PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, u8::from(prevent), 0], 0)
}

/// LOAD UNLOAD (1Bh) for a tape drive: `load` threads the tape, otherwise it is rewound and ejected so the robot
/// can take it. `immed` returns before the operation completes.
///
/// # References
/// SSC-4 7.2.
pub fn load_unload(load: bool, immed: bool) -> Cdb {
    Cdb::new([opcode::LOAD_UNLOAD, u8::from(immed), 0, 0, u8::from(load), 0], 0)
}

/// REWIND (01h).
///
/// # References
/// SSC-4 7.11.
pub fn rewind(immed: bool) -> Cdb {
    Cdb::new([opcode::REWIND, u8::from(immed), 0, 0, 0, 0], 0)
}

/// READ POSITION (34h), short form (20 bytes).
///
/// # References
/// SSC-4 7.9.
pub fn read_position() -> Cdb {
    Cdb::new([opcode::READ_POSITION, 0, 0, 0, 0, 0, 0, 0, 0, 0], 20)
}

/// LOG SENSE (4Dh) for `page`, cumulative values (PC 01b).
///
/// # References
/// SPC-4 6.8; TapeAlert page 2Eh: SSC-4 8.2.3.
pub fn log_sense(page: u8, alloc: u16) -> Cdb {
    let [hi, lo] = be16(alloc);
    Cdb::new([opcode::LOG_SENSE, 0, 0x40 | (page & 0x3F), 0, 0, 0, 0, hi, lo, 0], u32::from(alloc))
}

/// READ(6) (08h) in variable-block mode: one block of at most `len` bytes (up to 16 MiB - 1). A longer block
/// answers CHECK CONDITION with ILI and the first `len` bytes; end of data answers BLANK CHECK.
///
/// # References
/// SSC-4 6.4 (READ(6)).
pub fn read_6(len: u32) -> Cdb {
    let len = len.min(0x00FF_FFFF);
    let [_, a, b, c] = len.to_be_bytes();
    Cdb::new([0x08, 0, a, b, c, 0], len)
}

/// MODE SENSE(6) for a tape drive's block descriptor (density code, write protect): page 00h, block descriptors
/// included.
///
/// # References
/// SSC-4 8.3 (mode parameters), SPC-4 7.5.5 (block descriptor).
pub fn tape_block_descriptor(alloc: u8) -> Cdb {
    mode_sense_6(0x00, false, alloc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spc_and_ssc_builders() {
        assert_eq!(test_unit_ready().as_bytes(), [0, 0, 0, 0, 0, 0]);
        assert_eq!(request_sense(18).as_bytes(), [0x03, 0, 0, 0, 18, 0]);
        assert_eq!(inquiry(96).as_bytes(), [0x12, 0, 0, 0, 0x60, 0]);
        assert_eq!(inquiry_vpd(0x80, 255).as_bytes(), [0x12, 1, 0x80, 0, 0xFF, 0]);
        assert_eq!(mode_sense_6(0x1D, true, 255).as_bytes(), [0x1A, 0x08, 0x1D, 0, 0xFF, 0]);
        assert_eq!(mode_sense_10(0x1F, false, 0x0123).as_bytes(), [0x5A, 0, 0x1F, 0, 0, 0, 0, 0x01, 0x23, 0]);
        assert_eq!(prevent_allow_medium_removal(true).as_bytes(), [0x1E, 0, 0, 0, 1, 0]);
        assert_eq!(load_unload(false, true).as_bytes(), [0x1B, 1, 0, 0, 0, 0]);
        assert_eq!(load_unload(true, false).as_bytes(), [0x1B, 0, 0, 0, 1, 0]);
        assert_eq!(rewind(false).as_bytes(), [0x01, 0, 0, 0, 0, 0]);
        assert_eq!(read_position().as_bytes().len(), 10);
        assert_eq!(read_position().allocation_length(), 20);
        assert_eq!(log_sense(0x2E, 4096).as_bytes(), [0x4D, 0, 0x6E, 0, 0, 0, 0, 0x10, 0, 0]);
        assert_eq!(tape_block_descriptor(255).as_bytes(), [0x1A, 0, 0, 0, 0xFF, 0]);
    }

    #[test]
    fn smc_builders() {
        // vmlab tgt addresses (page 1Dh): robot 1, slot 1000 → drive 500; the same CDB loaded the drive there.
        assert_eq!(move_medium(1, 1000, 500, false).as_bytes(), [0xA5, 0, 0, 1, 0x03, 0xE8, 0x01, 0xF4, 0, 0, 0, 0]);
        assert_eq!(move_medium(0, 1, 2, true).as_bytes()[10], 1);
        assert_eq!(
            exchange_medium(1, 1000, 500, 1001, true, true).as_bytes(),
            [0xA6, 0, 0, 1, 0x03, 0xE8, 0x01, 0xF4, 0x03, 0xE9, 0x03, 0]
        );
        assert_eq!(position_to_element(1, 10, false).as_bytes(), [0x2B, 0, 0, 1, 0, 10, 0, 0, 0, 0]);
        assert_eq!(initialize_element_status().as_bytes(), [0x07, 0, 0, 0, 0, 0]);
        assert_eq!(initialize_element_status_with_range(1000, 20).as_bytes(), [0x37, 1, 0x03, 0xE8, 0, 0, 0, 20, 0, 0]);
        let res = read_element_status(&ReadElementStatus {
            element_type: ElementType::DataTransfer,
            start: 500,
            count: 4,
            voltag: true,
            curdata: true,
            dvcid: true,
            alloc: 0x01_0203,
        });
        assert_eq!(res.as_bytes(), [0xB8, 0x14, 0x01, 0xF4, 0, 4, 0x03, 0x01, 0x02, 0x03, 0, 0]);
        assert_eq!(res.allocation_length(), 0x01_0203);
    }

    #[test]
    fn into_command_sets_direction() {
        let c = inquiry(96).into_command(Duration::from_secs(5));
        assert_eq!(c.direction, DataDirection::FromDevice(96));
        let c = move_medium(1, 2, 3, false).into_command(Duration::from_secs(600));
        assert_eq!(c.direction, DataDirection::None);
        assert_eq!(c.cdb.len(), 12);
    }
}
