//! SCSI sense data (SPC-4 fixed format, response code 70h) and the conditions vlib reports.

/// Sense key NO SENSE.
pub const NO_SENSE: u8 = 0x00;
/// Sense key NOT READY.
pub const NOT_READY: u8 = 0x02;
/// RECOVERED ERROR sense key.
pub const RECOVERED_ERROR: u8 = 0x01;
/// Sense key MEDIUM ERROR.
pub const MEDIUM_ERROR: u8 = 0x03;
/// Sense key HARDWARE ERROR.
pub const HARDWARE_ERROR: u8 = 0x04;
/// Sense key ILLEGAL REQUEST.
pub const ILLEGAL_REQUEST: u8 = 0x05;
/// Sense key UNIT ATTENTION.
pub const UNIT_ATTENTION: u8 = 0x06;

/// SCSI status GOOD.
pub const STATUS_GOOD: u8 = 0x00;
/// SCSI status CHECK CONDITION.
pub const STATUS_CHECK_CONDITION: u8 = 0x02;
/// Host status "timed out" (Linux DID_TIME_OUT).
pub const HOST_TIMED_OUT: u8 = 3;

/// Length of fixed-format sense data as vlib produces it (additional length 10).
pub const FIXED_SENSE_LEN: usize = 18;

/// One sense condition: key, additional sense code and qualifier, and an optional
/// sense-key-specific field pointer (for ILLEGAL REQUEST).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sense {
    /// Sense key (bits 0-3 of byte 2).
    pub key: u8,
    /// Additional sense code (byte 12).
    pub asc: u8,
    /// Additional sense code qualifier (byte 13).
    pub ascq: u8,
    /// Sense-key-specific field pointer (SKSV set when present).
    pub field: Option<FieldPointer>,
}

/// A sense-key-specific field pointer (SPC-4 4.5.2.4.2): which byte/bit of the CDB or data was bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FieldPointer {
    /// True when the bad field is in the CDB (C/D bit), false for parameter data.
    pub in_cdb: bool,
    /// Byte offset of the bad field.
    pub byte: u16,
    /// Bit (0-7) of the bad field's most significant bit, if meaningful (BPV set).
    pub bit: Option<u8>,
}

impl Sense {
    /// A sense condition without field pointer.
    pub const fn new(key: u8, asc: u8, ascq: u8) -> Sense {
        Sense { key, asc, ascq, field: None }
    }

    /// ILLEGAL REQUEST 24/00 "invalid field in CDB" pointing at `byte` (and optionally `bit`) of the CDB.
    pub const fn invalid_field(byte: u16, bit: Option<u8>) -> Sense {
        Sense { key: ILLEGAL_REQUEST, asc: 0x24, ascq: 0x00, field: Some(FieldPointer { in_cdb: true, byte, bit }) }
    }

    /// Encodes as fixed-format sense data: 70h, key at byte 2, additional length 10 at byte 7,
    /// ASC at 12, ASCQ at 13, sense-key-specific bytes 15-17.
    pub fn to_fixed(&self) -> Vec<u8> {
        let mut s = vec![0u8; FIXED_SENSE_LEN];
        s[0] = 0x70;
        s[2] = self.key & 0x0f;
        s[7] = 10;
        s[12] = self.asc;
        s[13] = self.ascq;
        if let Some(f) = self.field {
            let mut b = 0x80;
            if f.in_cdb {
                b |= 0x40;
            }
            if let Some(bit) = f.bit {
                b |= 0x08 | (bit & 0x07);
            }
            s[15] = b;
            s[16..18].copy_from_slice(&f.byte.to_be_bytes());
        }
        s
    }

    /// Encodes as descriptor-format sense data: 72h, key, ASC, ASCQ at bytes 1-3, additional length at
    /// byte 7, then (with a field pointer) a sense-key-specific descriptor (type 02h, length 06h).
    pub fn to_descriptor(&self) -> Vec<u8> {
        let mut s = vec![0x72, self.key & 0x0f, self.asc, self.ascq, 0, 0, 0, 0];
        if self.field.is_some() {
            let fixed = self.to_fixed();
            s.extend_from_slice(&[0x02, 0x06, 0, 0, fixed[15], fixed[16], fixed[17], 0]);
            s[7] = 8;
        }
        s
    }

    /// Encodes in descriptor format when `descriptor` is true, else fixed format.
    pub fn encode(&self, descriptor: bool) -> Vec<u8> {
        if descriptor {
            self.to_descriptor()
        } else {
            self.to_fixed()
        }
    }

    /// Decodes fixed (70h/71h) or descriptor (72h/73h) format sense data; None if too short or unknown.
    pub fn parse(data: &[u8]) -> Option<Sense> {
        match data.first()? & 0x7f {
            0x70 | 0x71 if data.len() >= 14 => {
                let field = if data.len() >= 18 && data[15] & 0x80 != 0 {
                    Some(FieldPointer {
                        in_cdb: data[15] & 0x40 != 0,
                        byte: u16::from_be_bytes([data[16], data[17]]),
                        bit: (data[15] & 0x08 != 0).then_some(data[15] & 0x07),
                    })
                } else {
                    None
                };
                Some(Sense { key: data[2] & 0x0f, asc: data[12], ascq: data[13], field })
            }
            0x72 | 0x73 if data.len() >= 4 => {
                let mut s = Sense::new(data[1] & 0x0f, data[2], data[3]);
                // Walk the descriptors for a sense-key-specific one (type 02h).
                let end = data.len().min(8 + data.get(7).map_or(0, |&n| usize::from(n)));
                let mut i = 8;
                while i + 1 < end {
                    let len = usize::from(data[i + 1]);
                    if data[i] == 0x02 && len >= 6 && i + 8 <= data.len() && data[i + 4] & 0x80 != 0 {
                        let b = data[i + 4];
                        s.field = Some(FieldPointer {
                            in_cdb: b & 0x40 != 0,
                            byte: u16::from_be_bytes([data[i + 5], data[i + 6]]),
                            bit: (b & 0x08 != 0).then_some(b & 0x07),
                        });
                    }
                    i += 2 + len;
                }
                Some(s)
            }
            _ => None,
        }
    }
}

/// RECOVERED ERROR 5D/00: failure prediction threshold exceeded (a TapeAlert flag was raised).
pub const TAPEALERT_SIGNAL: Sense = Sense::new(RECOVERED_ERROR, 0x5d, 0x00);
/// NOT READY 3A/00: medium not present.
pub const MEDIUM_NOT_PRESENT: Sense = Sense::new(NOT_READY, 0x3a, 0x00);
/// NOT READY 04/01: becoming ready.
pub const BECOMING_READY: Sense = Sense::new(NOT_READY, 0x04, 0x01);
/// NOT READY 04/83: door open (vendor specific; HP and Quantum libraries report an open door so).
pub const DOOR_OPEN: Sense = Sense::new(NOT_READY, 0x04, 0x83);
/// NOT READY 30/03: cleaning cartridge installed.
pub const CLEANING_INSTALLED: Sense = Sense::new(NOT_READY, 0x30, 0x03);
/// ILLEGAL REQUEST 20/00: invalid command operation code.
pub const INVALID_OPCODE: Sense = Sense::new(ILLEGAL_REQUEST, 0x20, 0x00);
/// ILLEGAL REQUEST 21/01: invalid element address.
pub const INVALID_ELEMENT: Sense = Sense::new(ILLEGAL_REQUEST, 0x21, 0x01);
/// ILLEGAL REQUEST 3B/0D: medium destination element full.
pub const DESTINATION_FULL: Sense = Sense::new(ILLEGAL_REQUEST, 0x3b, 0x0d);
/// ILLEGAL REQUEST 3B/0E: medium source element empty.
pub const SOURCE_EMPTY: Sense = Sense::new(ILLEGAL_REQUEST, 0x3b, 0x0e);
/// ILLEGAL REQUEST 53/02: medium removal prevented.
pub const REMOVAL_PREVENTED: Sense = Sense::new(ILLEGAL_REQUEST, 0x53, 0x02);
/// ILLEGAL REQUEST 39/00: saving parameters not supported.
pub const SAVING_NOT_SUPPORTED: Sense = Sense::new(ILLEGAL_REQUEST, 0x39, 0x00);
/// UNIT ATTENTION 29/00: power on, reset, or bus device reset occurred.
pub const POWER_ON_RESET: Sense = Sense::new(UNIT_ATTENTION, 0x29, 0x00);
/// UNIT ATTENTION 28/00: not ready to ready change, medium may have changed.
pub const MEDIUM_MAY_HAVE_CHANGED: Sense = Sense::new(UNIT_ATTENTION, 0x28, 0x00);
/// HARDWARE ERROR 15/01: mechanical positioning error (robot jam).
pub const ROBOT_JAM: Sense = Sense::new(HARDWARE_ERROR, 0x15, 0x01);
/// HARDWARE ERROR 44/00: internal target failure.
pub const INTERNAL_FAILURE: Sense = Sense::new(HARDWARE_ERROR, 0x44, 0x00);
/// HARDWARE ERROR 53/00: media load or eject failed.
pub const LOAD_EJECT_FAILED: Sense = Sense::new(HARDWARE_ERROR, 0x53, 0x00);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_layout() {
        let s = DESTINATION_FULL.to_fixed();
        assert_eq!(s.len(), 18);
        assert_eq!(s[0], 0x70);
        assert_eq!(s[2], 0x05);
        assert_eq!(s[7], 10);
        assert_eq!((s[12], s[13]), (0x3b, 0x0d));
        assert_eq!(&s[15..18], &[0, 0, 0]);
    }

    #[test]
    fn field_pointer_layout() {
        let s = Sense::invalid_field(6, Some(0)).to_fixed();
        assert_eq!((s[12], s[13]), (0x24, 0x00));
        assert_eq!(s[15], 0x80 | 0x40 | 0x08);
        assert_eq!(&s[16..18], &[0, 6]);
        let s = Sense::invalid_field(0x102, None).to_fixed();
        assert_eq!(s[15], 0xc0);
        assert_eq!(&s[16..18], &[1, 2]);
    }

    #[test]
    fn descriptor_layout() {
        assert_eq!(REMOVAL_PREVENTED.to_descriptor(), vec![0x72, 0x05, 0x53, 0x02, 0, 0, 0, 0]);
        let f = Sense::invalid_field(6, Some(0));
        let d = f.to_descriptor();
        assert_eq!(d, vec![0x72, 0x05, 0x24, 0x00, 0, 0, 0, 8, 0x02, 0x06, 0, 0, 0xc8, 0, 6, 0]);
        assert_eq!(Sense::parse(&d), Some(f));
        assert_eq!(f.encode(false), f.to_fixed());
    }

    #[test]
    fn parse_roundtrip() {
        let f = Sense::invalid_field(2, Some(4));
        assert_eq!(Sense::parse(&f.to_fixed()), Some(f));
        assert_eq!(Sense::parse(&[0x72, 0x06, 0x29, 0x00, 0, 0, 0, 0]), Some(POWER_ON_RESET));
        assert_eq!(Sense::parse(&[0x70, 0, 2]), None);
    }
}
