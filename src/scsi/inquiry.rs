//! INQUIRY data: standard data and the vital product data pages rsmd uses to identify devices (SPC-4 6.6.2, 7.8).
//!
//! `/dev/sgN` numbers change across boots; the unit serial number (VPD 80h) and the designators of VPD 83h do not.

use super::reader::{ascii, ParseError, Reader};

/// Peripheral device type: sequential-access (tape drive).
pub const TYPE_TAPE: u8 = 0x01;
/// Peripheral device type: medium changer.
pub const TYPE_CHANGER: u8 = 0x08;

/// Standard INQUIRY data (SPC-4 6.6.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandardInquiry {
    /// Peripheral qualifier (0: connected).
    pub qualifier: u8,
    /// Peripheral device type (1 tape, 8 changer).
    pub device_type: u8,
    /// RMB: removable medium.
    pub removable: bool,
    /// Version of the standard claimed.
    pub version: u8,
    /// T10 vendor identification.
    pub vendor: String,
    /// Product identification.
    pub product: String,
    /// Product revision level.
    pub revision: String,
}

impl StandardInquiry {
    /// Parses standard INQUIRY data; the 36 bytes up to the revision are required.
    ///
    /// # References
    /// SPC-4 6.6.2.
    pub fn parse(buf: &[u8]) -> Result<StandardInquiry, ParseError> {
        let mut r = Reader::new(buf);
        let b0 = r.try_u8("peripheral device type")?;
        let b1 = r.try_u8("removable medium byte")?;
        let version = r.try_u8("version")?;
        r.try_skip(1, "response data format")?;
        let additional = usize::from(r.try_u8("additional length")?);
        if additional + 5 < 36 {
            return Err(ParseError::Invalid { what: "additional length", value: additional as u64 });
        }
        r.try_skip(3, "capability bytes")?;
        let vendor = ascii(r.try_take(8, "vendor identification")?);
        let product = ascii(r.try_take(16, "product identification")?);
        let revision = ascii(r.try_take(4, "product revision level")?);
        Ok(StandardInquiry {
            qualifier: b0 >> 5,
            device_type: b0 & 0x1F,
            removable: b1 & 0x80 != 0,
            version,
            vendor,
            product,
            revision,
        })
    }
}

/// Reads a VPD page header and returns the page body, checking the page code and the stated length.
fn vpd_body<'a>(buf: &'a [u8], page: u8) -> Result<Reader<'a>, ParseError> {
    let mut r = Reader::new(buf);
    r.try_skip(1, "peripheral device type")?;
    let code = r.try_u8("page code")?;
    if code != page {
        return Err(ParseError::Invalid { what: "page code", value: u64::from(code) });
    }
    let len = usize::from(r.try_be16("page length")?);
    r.try_sub(len, "page body")
}

/// VPD page 00h: the list of supported VPD pages (SPC-4 7.8.16).
pub fn parse_supported_pages(buf: &[u8]) -> Result<Vec<u8>, ParseError> {
    Ok(vpd_body(buf, 0x00)?.rest().to_vec())
}

/// VPD page 80h: the unit serial number (SPC-4 7.8.18), trimmed of padding.
pub fn parse_unit_serial(buf: &[u8]) -> Result<String, ParseError> {
    Ok(ascii(vpd_body(buf, 0x80)?.rest()))
}

/// Designator types of VPD 83h (SPC-4 table 460) rsmd cares about.
pub mod designator_type {
    /// Vendor specific.
    pub const VENDOR_SPECIFIC: u8 = 0;
    /// T10 vendor ID based.
    pub const T10_VENDOR_ID: u8 = 1;
    /// EUI-64 based.
    pub const EUI64: u8 = 2;
    /// NAA (a world-wide name).
    pub const NAA: u8 = 3;
    /// Relative target port identifier.
    pub const RELATIVE_TARGET_PORT: u8 = 4;
    /// Target port group.
    pub const TARGET_PORT_GROUP: u8 = 5;
    /// Logical unit group.
    pub const LOGICAL_UNIT_GROUP: u8 = 6;
    /// MD5 logical unit identifier.
    pub const MD5: u8 = 7;
    /// SCSI name string.
    pub const SCSI_NAME: u8 = 8;
}

/// One designation descriptor of VPD 83h (SPC-4 7.8.6.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Designator {
    /// Code set: 1 binary, 2 ASCII, 3 UTF-8.
    pub code_set: u8,
    /// Association: 0 logical unit, 1 target port, 2 target device.
    pub association: u8,
    /// Designator type (see [`designator_type`]).
    pub kind: u8,
    /// The designator.
    pub bytes: Vec<u8>,
}

impl Designator {
    /// The designator as text: ASCII trimmed, binary as lowercase hex.
    pub fn text(&self) -> String {
        if self.code_set == 1 {
            self.bytes.iter().map(|b| format!("{b:02x}")).collect()
        } else {
            ascii(&self.bytes)
        }
    }
}

/// VPD page 83h: the designation descriptors (SPC-4 7.8.6).
pub fn parse_device_identification(buf: &[u8]) -> Result<Vec<Designator>, ParseError> {
    let mut body = vpd_body(buf, 0x83)?;
    let mut out = Vec::new();
    while !body.is_empty() {
        let b0 = body.try_u8("code set")?;
        let b1 = body.try_u8("designator type")?;
        body.try_skip(1, "reserved byte")?;
        let len = usize::from(body.try_u8("designator length")?);
        let bytes = body.try_take(len, "designator")?.to_vec();
        out.push(Designator { code_set: b0 & 0x0F, association: (b1 >> 4) & 0x03, kind: b1 & 0x0F, bytes });
    }
    Ok(out)
}

/// The world-wide name of the logical unit: its NAA designator, as hex, when it has one.
pub fn logical_unit_wwn(designators: &[Designator]) -> Option<String> {
    designators
        .iter()
        .find(|d| d.kind == designator_type::NAA && d.association == 0)
        .map(|d| format!("naa.{}", d.text()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/data/tgt/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn tgt_standard_inquiry() {
        let c = StandardInquiry::parse(&data("changer-inquiry.bin")).unwrap();
        assert_eq!((c.device_type, c.vendor.as_str(), c.product.as_str()), (TYPE_CHANGER, "IET", "VIRTUAL-CHANGER"));
        assert_eq!(c.revision, "0001");
        assert!(c.removable);
        let d = StandardInquiry::parse(&data("drive-inquiry.bin")).unwrap();
        assert_eq!((d.device_type, d.product.as_str()), (TYPE_TAPE, "VIRTUAL-TAPE"));
    }

    #[test]
    fn tgt_vpd_pages() {
        assert_eq!(parse_unit_serial(&data("changer-vpd80.bin")).unwrap(), "beaf15");
        assert_eq!(parse_unit_serial(&data("drive-vpd80.bin")).unwrap(), "beaf11");
        let pages = parse_supported_pages(&data("changer-vpd00.bin")).unwrap();
        assert!(pages.contains(&0x80) && pages.contains(&0x83));
        let ids = parse_device_identification(&data("drive-vpd83.bin")).unwrap();
        let t10 = ids.iter().find(|d| d.kind == designator_type::T10_VENDOR_ID).unwrap();
        assert!(t10.text().starts_with("IET"));
        assert_eq!(logical_unit_wwn(&ids).as_deref(), Some("naa.3000000100000001"));
    }

    #[test]
    fn malformed_vpd_is_rejected() {
        let mut serial = data("drive-vpd80.bin");
        assert!(parse_unit_serial(&serial[..serial.len() - 1]).is_err());
        serial[1] = 0x83;
        assert!(matches!(parse_unit_serial(&serial), Err(ParseError::Invalid { what: "page code", .. })));
        assert!(StandardInquiry::parse(&data("changer-inquiry.bin")[..20]).is_err());
        let mut short = data("changer-inquiry.bin");
        short[4] = 10;
        assert!(StandardInquiry::parse(&short).is_err());
    }
}
