//! INQUIRY data: standard data and the vital product data pages rsmd uses to identify devices (SPC-4 6.6.2, 7.8).
//!
//! `/dev/sgN` numbers change across boots; the unit serial number (VPD 80h) and the designators of VPD 83h do not.

use super::reader::{ascii, ascii_until_nul, utf8_until_nul, ParseError, Reader};

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

/// VPD page 80h: the unit serial number. The one parser of unit serial numbers: every place that identifies a
/// device by its serial reads it through this.
///
/// The PRODUCT SERIAL NUMBER field is exactly PAGE LENGTH bytes from byte 4; bytes after it (a device answering
/// the whole allocation length with garbage) are never read, and a page length beyond what was received is an
/// error. The field is right-aligned ASCII: leading and trailing blanks and NUL padding are dropped, and a NUL after
/// the text ends it (`MHVLIB0010\0\00400` is `MHVLIB0010`, as `sg_inq` shows it).
///
/// # References
/// SPC-4 7.8.16 (SPC-5 7.7.18) Unit Serial Number VPD page; SPC-4 4.4.1 ASCII data fields.
pub fn parse_unit_serial(buf: &[u8]) -> Result<String, ParseError> {
    Ok(ascii_until_nul(vpd_body(buf, 0x80)?.rest()))
}

/// Code sets of a designator (SPC-4 table 458).
pub mod code_set {
    /// The designator is binary (shown as hex).
    pub const BINARY: u8 = 1;
    /// The designator is ASCII printable characters.
    pub const ASCII: u8 = 2;
    /// The designator is UTF-8.
    pub const UTF8: u8 = 3;
}

/// The text of a designator (VPD 83h, or a DVCID identifier of READ ELEMENT STATUS, which has the same layout):
/// binary as lowercase hex; ASCII and UTF-8 up to the first NUL (the SCSI name string is null-terminated and
/// null-padded) with blanks trimmed. A reserved code set is read as ASCII: firmware that leaves the code set 0
/// reports text there, and a wrong serial is no worse than none.
///
/// # References
/// SPC-4 7.8.6.1 (designation descriptor, CODE SET), 7.8.6.11 (SCSI name string); SMC-3 6.10.7 (identifier).
pub fn designator_text(code: u8, bytes: &[u8]) -> String {
    match code {
        code_set::BINARY => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        code_set::UTF8 => utf8_until_nul(bytes),
        _ => ascii_until_nul(bytes),
    }
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
    /// Code set (see [`code_set`]): 1 binary, 2 ASCII, 3 UTF-8.
    pub code_set: u8,
    /// Association: 0 logical unit, 1 target port, 2 target device.
    pub association: u8,
    /// Designator type (see [`designator_type`]).
    pub kind: u8,
    /// The designator.
    pub bytes: Vec<u8>,
}

impl Designator {
    /// The designator as text (see [`designator_text`]).
    pub fn text(&self) -> String {
        designator_text(self.code_set, &self.bytes)
    }
}

/// VPD page 83h: the designation descriptors, each exactly DESIGNATOR LENGTH bytes, within PAGE LENGTH (bytes
/// beyond the page are never read; a descriptor running past it is an error).
///
/// # References
/// SPC-4 7.8.6 (SPC-5 7.7.6) Device Identification VPD page.
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
        data_in("tgt", name)
    }

    fn data_in(dir: &str, name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/data/{dir}/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn unit_serial_ends_at_its_nul_and_at_the_page_length() {
        // The report: shown as `MHVLIB0010??0400` where sg_inq shows `MHVLIB0010`.
        assert_eq!(parse_unit_serial(&data_in("mhvtl-like", "changer-vpd80.bin")).unwrap(), "MHVLIB0010");
        assert_eq!(parse_unit_serial(&data_in("mhvtl-like", "changer-vpd80-exact.bin")).unwrap(), "MHVLIB0010");
        // Blank (right-aligned) padding before the serial, NUL padding after it.
        assert_eq!(parse_unit_serial(b"\x08\x80\x00\x0A   SER42\0\0").unwrap(), "SER42");
        // A page length beyond what the device returned is an error, not a shorter serial.
        let buf = data_in("mhvtl-like", "changer-vpd80-exact.bin");
        assert!(matches!(parse_unit_serial(&buf[..12]), Err(ParseError::Truncated { what: "page body", .. })));
    }

    #[test]
    fn designators_follow_their_length_and_code_set() {
        let ids = parse_device_identification(&data_in("mhvtl-like", "changer-vpd83.bin")).unwrap();
        assert_eq!(ids.len(), 3, "nothing is read beyond the page length");
        let t10 = &ids[0];
        assert_eq!((t10.code_set, t10.kind, t10.association), (code_set::ASCII, designator_type::T10_VENDOR_ID, 0));
        assert_eq!(t10.bytes.len(), 32);
        assert_eq!(t10.text(), "MHVTL   MHVLIB0010");
        assert_eq!(ids[1].text(), "5001020304050607");
        assert_eq!(logical_unit_wwn(&ids).as_deref(), Some("naa.5001020304050607"));
        let name = &ids[2];
        assert_eq!((name.code_set, name.kind, name.association), (code_set::UTF8, designator_type::SCSI_NAME, 2));
        assert_eq!(name.text(), "iqn.2024-01.lab:mhvtl");
        // A designator running past the page length is an error.
        let mut buf = data_in("mhvtl-like", "changer-vpd83.bin");
        buf[3] -= 1;
        assert!(matches!(parse_device_identification(&buf), Err(ParseError::Truncated { what: "designator", .. })));
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
