//! Sense data: fixed (70h/71h) and descriptor (72h/73h) formats (SPC-4 4.5).

use super::asc::Asc;
use super::reader::{ParseError, Reader};

/// The sense key (SPC-4 4.5.6, table 27).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SenseKey {
    /// 0h: no sense.
    NoSense,
    /// 1h: recovered error.
    RecoveredError,
    /// 2h: not ready.
    NotReady,
    /// 3h: medium error.
    MediumError,
    /// 4h: hardware error.
    HardwareError,
    /// 5h: illegal request.
    IllegalRequest,
    /// 6h: unit attention.
    UnitAttention,
    /// 7h: data protect.
    DataProtect,
    /// 8h: blank check.
    BlankCheck,
    /// 9h: vendor specific.
    VendorSpecific,
    /// Ah: copy aborted.
    CopyAborted,
    /// Bh: aborted command.
    AbortedCommand,
    /// Dh: volume overflow.
    VolumeOverflow,
    /// Eh: miscompare.
    Miscompare,
    /// Ch, Fh: reserved values.
    Reserved(u8),
}

impl SenseKey {
    /// The key from its 4-bit code.
    pub fn from_code(code: u8) -> SenseKey {
        match code & 0x0F {
            0x0 => SenseKey::NoSense,
            0x1 => SenseKey::RecoveredError,
            0x2 => SenseKey::NotReady,
            0x3 => SenseKey::MediumError,
            0x4 => SenseKey::HardwareError,
            0x5 => SenseKey::IllegalRequest,
            0x6 => SenseKey::UnitAttention,
            0x7 => SenseKey::DataProtect,
            0x8 => SenseKey::BlankCheck,
            0x9 => SenseKey::VendorSpecific,
            0xA => SenseKey::CopyAborted,
            0xB => SenseKey::AbortedCommand,
            0xD => SenseKey::VolumeOverflow,
            0xE => SenseKey::Miscompare,
            other => SenseKey::Reserved(other),
        }
    }

    /// The key's name in SPC-4 table 27, lower case ("not ready").
    pub fn name(self) -> &'static str {
        match self {
            SenseKey::NoSense => "no sense",
            SenseKey::RecoveredError => "recovered error",
            SenseKey::NotReady => "not ready",
            SenseKey::MediumError => "medium error",
            SenseKey::HardwareError => "hardware error",
            SenseKey::IllegalRequest => "illegal request",
            SenseKey::UnitAttention => "unit attention",
            SenseKey::DataProtect => "data protect",
            SenseKey::BlankCheck => "blank check",
            SenseKey::VendorSpecific => "vendor specific",
            SenseKey::CopyAborted => "copy aborted",
            SenseKey::AbortedCommand => "aborted command",
            SenseKey::VolumeOverflow => "volume overflow",
            SenseKey::Miscompare => "miscompare",
            SenseKey::Reserved(_) => "reserved",
        }
    }

    /// The 4-bit code.
    pub fn code(self) -> u8 {
        match self {
            SenseKey::NoSense => 0x0,
            SenseKey::RecoveredError => 0x1,
            SenseKey::NotReady => 0x2,
            SenseKey::MediumError => 0x3,
            SenseKey::HardwareError => 0x4,
            SenseKey::IllegalRequest => 0x5,
            SenseKey::UnitAttention => 0x6,
            SenseKey::DataProtect => 0x7,
            SenseKey::BlankCheck => 0x8,
            SenseKey::VendorSpecific => 0x9,
            SenseKey::CopyAborted => 0xA,
            SenseKey::AbortedCommand => 0xB,
            SenseKey::VolumeOverflow => 0xD,
            SenseKey::Miscompare => 0xE,
            SenseKey::Reserved(c) => c & 0x0F,
        }
    }
}

/// The field pointer of an ILLEGAL REQUEST (SPC-4 4.5.2.4.2): which CDB or parameter byte was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldPointer {
    /// True when the error is in the CDB, false when in the parameter data.
    pub in_cdb: bool,
    /// The bit within the byte, when the device names one.
    pub bit: Option<u8>,
    /// The byte offset.
    pub byte: u16,
}

/// Decoded sense data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sense {
    /// True for current errors (70h/72h), false for deferred ones (71h/73h).
    pub current: bool,
    /// True when the descriptor format (72h/73h) was used.
    pub descriptor_format: bool,
    /// The sense key.
    pub key: SenseKey,
    /// Additional sense code and qualifier.
    pub asc: Asc,
    /// The INFORMATION field, when valid.
    pub information: Option<u64>,
    /// FILEMARK, EOM and ILI bits (fixed byte 2 bits 7-5; stream commands descriptor).
    pub filemark: bool,
    /// End of medium.
    pub eom: bool,
    /// Incorrect length indicator.
    pub ili: bool,
    /// The sense-key-specific bytes (SKSV set), raw.
    pub key_specific: Option<[u8; 3]>,
}

impl Sense {
    /// Parses sense data in either format. The additional length is checked against the buffer; a device that
    /// returns fewer bytes than it claims is accepted up to what arrived, as long as the key and ASC/ASCQ are there.
    ///
    /// # References
    /// SPC-4 4.5.2 (descriptor format), 4.5.3 (fixed format).
    pub fn parse(buf: &[u8]) -> Result<Sense, ParseError> {
        let mut r = Reader::new(buf);
        let code = r.try_u8("response code")? & 0x7F;
        match code {
            0x70 | 0x71 => Self::parse_fixed(buf, code == 0x70),
            0x72 | 0x73 => Self::parse_descriptor(buf, code == 0x72),
            other => Err(ParseError::Invalid { what: "sense response code", value: u64::from(other) }),
        }
    }

    fn parse_fixed(buf: &[u8], current: bool) -> Result<Sense, ParseError> {
        let mut r = Reader::new(buf);
        let byte0 = r.try_u8("response code")?;
        r.try_skip(1, "obsolete byte")?;
        let flags = r.try_u8("sense key")?;
        let info = r.try_be32("information")?;
        let additional = usize::from(r.try_u8("additional sense length")?);
        let mut rest = Reader::new(r.take_up_to(additional));
        rest.try_skip(4, "command-specific information")?;
        let asc = rest.try_u8("additional sense code")?;
        let ascq = rest.try_u8("additional sense code qualifier")?;
        rest.try_skip(1, "field replaceable unit code").ok();
        let key_specific = match rest.try_take(3, "sense-key specific") {
            Ok(b) if b[0] & 0x80 != 0 => Some([b[0], b[1], b[2]]),
            _ => None,
        };
        Ok(Sense {
            current,
            descriptor_format: false,
            key: SenseKey::from_code(flags),
            asc: Asc(asc, ascq),
            information: (byte0 & 0x80 != 0).then_some(u64::from(info)),
            filemark: flags & 0x80 != 0,
            eom: flags & 0x40 != 0,
            ili: flags & 0x20 != 0,
            key_specific,
        })
    }

    fn parse_descriptor(buf: &[u8], current: bool) -> Result<Sense, ParseError> {
        let mut r = Reader::new(buf);
        r.try_skip(1, "response code")?;
        let key = SenseKey::from_code(r.try_u8("sense key")?);
        let asc = r.try_u8("additional sense code")?;
        let ascq = r.try_u8("additional sense code qualifier")?;
        r.try_skip(3, "reserved bytes")?;
        let additional = usize::from(r.try_u8("additional sense length")?);
        let mut descriptors = Reader::new(r.take_up_to(additional));
        let mut sense = Sense {
            current,
            descriptor_format: true,
            key,
            asc: Asc(asc, ascq),
            information: None,
            filemark: false,
            eom: false,
            ili: false,
            key_specific: None,
        };
        while descriptors.remaining() >= 2 {
            let kind = descriptors.try_u8("sense descriptor type")?;
            let len = usize::from(descriptors.try_u8("sense descriptor length")?);
            let mut d = Reader::new(descriptors.take_up_to(len));
            match kind {
                // Information (SPC-4 4.5.2.2): VALID, reserved, 8-byte information.
                0x00 => {
                    let valid = d.try_u8("information validity")? & 0x80 != 0;
                    d.try_skip(1, "reserved byte")?;
                    let info = d.try_be64("information")?;
                    sense.information = valid.then_some(info);
                }
                // Sense key specific (4.5.2.4): reserved 2, then 3 bytes.
                0x02 => {
                    d.try_skip(2, "reserved bytes")?;
                    let b = d.try_take(3, "sense-key specific")?;
                    if b[0] & 0x80 != 0 {
                        sense.key_specific = Some([b[0], b[1], b[2]]);
                    }
                }
                // Stream commands (SSC-4 4.2.7): reserved, then FILEMARK/EOM/ILI.
                0x04 => {
                    d.try_skip(1, "reserved byte")?;
                    let f = d.try_u8("stream flags")?;
                    sense.filemark = f & 0x80 != 0;
                    sense.eom = f & 0x40 != 0;
                    sense.ili = f & 0x20 != 0;
                }
                _ => {}
            }
        }
        Ok(sense)
    }

    /// The field pointer, for an ILLEGAL REQUEST whose sense-key-specific bytes carry one.
    pub fn field_pointer(&self) -> Option<FieldPointer> {
        if self.key != SenseKey::IllegalRequest {
            return None;
        }
        let b = self.key_specific?;
        Some(FieldPointer {
            in_cdb: b[0] & 0x40 != 0,
            bit: (b[0] & 0x08 != 0).then_some(b[0] & 0x07),
            byte: u16::from_be_bytes([b[1], b[2]]),
        })
    }

    /// True for a UNIT ATTENTION.
    pub fn is_unit_attention(&self) -> bool {
        self.key == SenseKey::UnitAttention
    }
}

impl std::fmt::Display for Sense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sense key {:?}, ASC/ASCQ {:02X}h/{:02X}h", self.key, self.asc.0, self.asc.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::asc;

    /// Fixed-format sense as tgt returns it for MOVE MEDIUM into a full slot (captured in vmlab).
    const TGT_DEST_FULL: [u8; 18] = [0x70, 0, 0x05, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0, 0x3B, 0x0D, 0, 0, 0, 0];

    #[test]
    fn fixed_format_destination_full() {
        let s = Sense::parse(&TGT_DEST_FULL).unwrap();
        assert!(s.current && !s.descriptor_format);
        assert_eq!(s.key, SenseKey::IllegalRequest);
        assert_eq!(s.asc, asc::MEDIUM_DESTINATION_ELEMENT_FULL);
        assert_eq!(s.information, None);
        assert_eq!(s.field_pointer(), None);
    }

    #[test]
    fn fixed_format_field_pointer_and_information() {
        // Deferred error, VALID information 0x1234, ILI, ILLEGAL REQUEST 24/00 in CDB byte 2 bit 1.
        let buf = [0xF1, 0, 0x25, 0, 0, 0x12, 0x34, 0x0A, 0, 0, 0, 0, 0x24, 0x00, 0, 0xC9, 0x00, 0x02];
        let s = Sense::parse(&buf).unwrap();
        assert!(!s.current);
        assert!(s.ili && !s.eom && !s.filemark);
        assert_eq!(s.information, Some(0x1234));
        assert_eq!(s.field_pointer(), Some(FieldPointer { in_cdb: true, bit: Some(1), byte: 2 }));
    }

    #[test]
    fn descriptor_format_with_information_and_key_specific() {
        let buf = [
            0x72, 0x05, 0x21, 0x01, 0, 0, 0, 24, // header: key 5, 21/01, additional length 24
            0x00, 0x0A, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x03, 0xE8, // information 1000
            0x02, 0x06, 0, 0, 0xC0, 0x00, 0x04, 0, // key specific: CDB byte 4
        ];
        let s = Sense::parse(&buf).unwrap();
        assert!(s.descriptor_format);
        assert_eq!(s.asc, asc::INVALID_ELEMENT_ADDRESS);
        assert_eq!(s.information, Some(1000));
        assert_eq!(s.field_pointer(), Some(FieldPointer { in_cdb: true, bit: None, byte: 4 }));
    }

    #[test]
    fn truncated_and_unknown_sense_are_errors() {
        assert!(Sense::parse(&[]).is_err());
        assert!(Sense::parse(&[0x70, 0, 0x06]).is_err());
        assert!(matches!(Sense::parse(&[0x7F; 18]), Err(ParseError::Invalid { .. })));
        // A short fixed sense that still holds the ASC/ASCQ is accepted.
        let s = Sense::parse(&[0x70, 0, 0x06, 0, 0, 0, 0, 0x06, 0, 0, 0, 0, 0x29, 0x00]).unwrap();
        assert!(s.is_unit_attention());
    }

    #[test]
    fn sense_keys_round_trip() {
        for code in 0..16u8 {
            assert_eq!(SenseKey::from_code(code).code(), code);
        }
    }
}
