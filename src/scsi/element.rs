//! READ ELEMENT STATUS data: element status pages and descriptors (SMC-3 6.10.2 – 6.10.7).
//!
//! Layout: an 8-byte header (first element address reported, number of elements, reserved, byte count of report
//! 24-bit) and then one page per element type, each an 8-byte page header (type, PVOLTAG/AVOLTAG, descriptor length,
//! byte count of descriptor data) and descriptors of exactly the stated length. Vendors pick different descriptor
//! lengths, so the parser always steps by the stated length and reads optional fields only when they fit.
//! A report larger than the allocation length arrives truncated with the header still giving the full size:
//! [`ElementStatusReport::truncated`] says so; whole descriptors are returned, and a cut last descriptor only when
//! its fixed part and its whole label arrived.
//!
//! Quirks of tgt (the vmlab library), captured in tests/data/tgt: it sends 8 bytes fewer than the report it
//! announces (so the last descriptor of every report is cut; with volume tags the label survives, a DVCID
//! identifier does not), and in an element-type-0 (all types) report with volume tags its transport descriptor is
//! 36 bytes long although the page says 52, which makes the rest of that report garbage. rsmd therefore reads
//! element status one element type at a time, always with VOLTAG.

use super::asc::Asc;
use super::inquiry::{code_set, designator_text, designator_type};
use super::reader::{ascii, until_nul, ParseError, Reader};

/// Element type codes (SMC-3 table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ElementType {
    /// 0: all element types (READ ELEMENT STATUS only).
    All,
    /// 1: medium transport element (robot, picker).
    MediumTransport,
    /// 2: storage element (slot).
    Storage,
    /// 3: import/export element (mail slot).
    ImportExport,
    /// 4: data transfer element (drive).
    DataTransfer,
}

impl std::fmt::Display for ElementType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ElementType::MediumTransport => "medium transport elements",
            ElementType::Storage => "storage elements",
            ElementType::ImportExport => "import/export elements",
            ElementType::DataTransfer => "data transfer elements",
            ElementType::All => "elements",
        })
    }
}

impl ElementType {
    /// The type code.
    pub fn code(self) -> u8 {
        match self {
            ElementType::All => 0,
            ElementType::MediumTransport => 1,
            ElementType::Storage => 2,
            ElementType::ImportExport => 3,
            ElementType::DataTransfer => 4,
        }
    }

    /// The type from its code.
    pub fn from_code(code: u8) -> Option<ElementType> {
        Some(match code {
            0 => ElementType::All,
            1 => ElementType::MediumTransport,
            2 => ElementType::Storage,
            3 => ElementType::ImportExport,
            4 => ElementType::DataTransfer,
            _ => return None,
        })
    }
}

/// A volume tag (SMC-3 6.10.8): 32 bytes of label, 2 reserved, 2 bytes of volume sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeTag {
    /// The label (barcode), trimmed of space and NUL padding.
    pub label: String,
    /// The volume sequence number.
    pub sequence: u16,
}

impl VolumeTag {
    /// Length of a volume tag field.
    pub const LEN: usize = 36;

    /// The tag (None when its label is blank) and how many characters mtx prints of the field: the 36 bytes up to
    /// the first one outside 32..=127 (mtx's `copy_barcode`), so trailing blanks count and a NUL ends it.
    fn parse(r: &mut Reader<'_>) -> Result<(Option<VolumeTag>, u8), ParseError> {
        let raw = r.try_take(32, "volume tag")?;
        let reserved = r.try_take(2, "volume tag reserved bytes")?;
        let seq = r.try_take(2, "volume sequence number")?;
        let printed = raw.iter().chain(reserved).chain(seq).take_while(|&&b| (32..=127).contains(&b)).count();
        let label = ascii(raw);
        let sequence = u16::from_be_bytes([seq[0], seq[1]]);
        let printed = u8::try_from(printed).unwrap_or(36);
        Ok(((!label.is_empty()).then_some(VolumeTag { label, sequence }), printed))
    }
}

/// A device identifier reported with DVCID for a data transfer element (SMC-3 6.10.7): usually the drive's serial
/// number or its T10 vendor identification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identifier {
    /// Code set (see [`super::inquiry::code_set`]): 1 binary, 2 ASCII, 3 UTF-8.
    pub code_set: u8,
    /// Identifier type (SPC-4 designator type: 0 vendor specific, 1 T10 vendor ID, 3 NAA, ...).
    pub kind: u8,
    /// The identifier bytes.
    pub bytes: Vec<u8>,
}

impl Identifier {
    /// The identifier as text, read like a VPD 83h designator ([`designator_text`]): binary as hex, ASCII and
    /// UTF-8 up to the first NUL with blanks trimmed.
    pub fn text(&self) -> String {
        designator_text(self.code_set, &self.bytes)
    }

    /// The drive serial number this identifier carries: for a textual T10 vendor ID (8 bytes vendor, 16 bytes
    /// product, then the serial) the part after the product, up to the first NUL; otherwise the whole text.
    pub fn serial(&self) -> String {
        let field = until_nul(&self.bytes);
        if self.kind == designator_type::T10_VENDOR_ID && self.code_set != code_set::BINARY && field.len() > 24 {
            designator_text(self.code_set, &field[24..])
        } else {
            self.text()
        }
    }
}

/// One element's status (SMC-3 6.10.3 – 6.10.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementDescriptor {
    /// The element's type (from its page).
    pub element_type: ElementType,
    /// Element address.
    pub address: u16,
    /// FULL: holds a cartridge.
    pub full: bool,
    /// IMPEXP (import/export elements): the cartridge was placed by an operator.
    pub impexp: bool,
    /// EXCEPT: the element is in an abnormal state; `asc` says why.
    pub except: bool,
    /// ACCESS: the robot can reach the element.
    pub access: bool,
    /// EXENAB (import/export): export allowed.
    pub exenab: bool,
    /// INENAB (import/export): import allowed.
    pub inenab: bool,
    /// ASC/ASCQ describing an exception.
    pub asc: Asc,
    /// Source storage element address (SVALID): where the cartridge came from.
    pub source: Option<u16>,
    /// INVERT: the cartridge was inverted.
    pub invert: bool,
    /// MEDIUM TYPE (byte 9 bits 2-0, SMC-3): 0 unspecified, 1 data, 2 cleaning, 3 diagnostic, 4 WORM.
    pub medium_type: u8,
    /// How many characters of the primary volume tag field mtx prints (0: none, or no tag reported).
    pub primary_tag_printed: u8,
    /// Primary volume tag (barcode), when requested and present.
    pub primary_tag: Option<VolumeTag>,
    /// Alternate volume tag.
    pub alternate_tag: Option<VolumeTag>,
    /// Device identifier (DVCID), for data transfer elements.
    pub identifier: Option<Identifier>,
}

impl ElementDescriptor {
    /// The barcode, when the element holds a labelled cartridge.
    pub fn barcode(&self) -> Option<&str> {
        self.primary_tag.as_ref().map(|t| t.label.as_str())
    }
}

/// A decoded READ ELEMENT STATUS report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementStatusReport {
    /// First element address reported (header).
    pub first_address: u16,
    /// Number of elements the device says the full report holds (header).
    pub count: u16,
    /// Byte count of the full report (header), which may exceed what arrived.
    pub report_bytes: u32,
    /// True when fewer bytes arrived than the header announces: re-issue with a larger allocation length.
    pub truncated: bool,
    /// The whole descriptors that arrived, in report order.
    pub elements: Vec<ElementDescriptor>,
}

/// Fixed part of a descriptor: address, flags, reserved, ASC, ASCQ, bytes 6-8, byte 9, source address.
const DESCRIPTOR_FIXED: usize = 12;

impl ElementStatusReport {
    /// Parses a report. Checks every stated length against the buffer; never reads past it.
    ///
    /// # References
    /// SMC-3 6.10.2 (header), 6.10.3 (page), 6.10.4 – 6.10.7 (descriptors).
    pub fn parse(buf: &[u8]) -> Result<ElementStatusReport, ParseError> {
        let mut r = Reader::new(buf);
        let first_address = r.try_be16("first element address")?;
        let count = r.try_be16("number of elements")?;
        r.try_skip(1, "reserved byte")?;
        let report_bytes = r.try_be24("byte count of report")?;
        let announced = usize::try_from(report_bytes).unwrap_or(usize::MAX);
        let truncated = announced > r.remaining();
        let mut pages = Reader::new(r.take_up_to(announced));
        let mut elements = Vec::new();
        while !pages.is_empty() {
            if pages.remaining() < 8 {
                // A page header cut by the allocation length: the report is truncated.
                if truncated {
                    break;
                }
                return Err(ParseError::Truncated {
                    what: "element status page header",
                    needed: 8,
                    available: pages.remaining(),
                });
            }
            let code = pages.try_u8("element type code")? & 0x0F;
            let element_type = ElementType::from_code(code)
                .filter(|t| *t != ElementType::All)
                .ok_or(ParseError::Invalid { what: "element type code", value: u64::from(code) })?;
            let tags = pages.try_u8("volume tag flags")?;
            let (pvoltag, avoltag) = (tags & 0x80 != 0, tags & 0x40 != 0);
            let desc_len = usize::from(pages.try_be16("element descriptor length")?);
            pages.try_skip(1, "reserved byte")?;
            let page_bytes = usize::try_from(pages.try_be24("byte count of descriptor data")?).unwrap_or(usize::MAX);
            if desc_len < DESCRIPTOR_FIXED {
                return Err(ParseError::Invalid { what: "element descriptor length", value: desc_len as u64 });
            }
            let page_truncated = page_bytes > pages.remaining();
            if page_truncated && !truncated {
                return Err(ParseError::Truncated {
                    what: "element status page",
                    needed: page_bytes,
                    available: pages.remaining(),
                });
            }
            let mut descriptors = Reader::new(pages.take_up_to(page_bytes));
            while descriptors.remaining() >= desc_len {
                let mut d = descriptors.try_sub(desc_len, "element descriptor")?;
                elements.push(parse_descriptor(&mut d, element_type, pvoltag, avoltag)?);
            }
            if !descriptors.is_empty() {
                if !truncated {
                    return Err(ParseError::Invalid {
                        what: "byte count of descriptor data",
                        value: page_bytes as u64,
                    });
                }
                // The last descriptor was cut: keep it when its fixed part and its whole label arrived.
                let need = DESCRIPTOR_FIXED + if pvoltag { 32 } else { 0 };
                if descriptors.remaining() >= need {
                    let mut d = Reader::new(descriptors.rest());
                    elements.push(parse_partial_descriptor(&mut d, element_type, pvoltag)?);
                }
            }
        }
        Ok(ElementStatusReport { first_address, count, report_bytes, truncated, elements })
    }
}

/// A descriptor cut short by the end of the data: the fixed part and the label, nothing after it.
fn parse_partial_descriptor(
    d: &mut Reader<'_>,
    element_type: ElementType,
    pvoltag: bool,
) -> Result<ElementDescriptor, ParseError> {
    let fixed = d.try_take(DESCRIPTOR_FIXED, "element descriptor")?.to_vec();
    let mut e = parse_descriptor(&mut Reader::new(&fixed), element_type, false, false)?;
    if pvoltag {
        let raw = d.try_take(32, "volume tag")?;
        // What mtx would print of it (mtx reads the whole field; the bytes after the label did not arrive here).
        e.primary_tag_printed =
            u8::try_from(raw.iter().take_while(|&&b| (32..=127).contains(&b)).count()).unwrap_or(32);
        let label = ascii(raw);
        if !label.is_empty() {
            e.primary_tag = Some(VolumeTag { label, sequence: 0 });
        }
    }
    Ok(e)
}

fn parse_descriptor(
    d: &mut Reader<'_>,
    element_type: ElementType,
    pvoltag: bool,
    avoltag: bool,
) -> Result<ElementDescriptor, ParseError> {
    let address = d.try_be16("element address")?;
    let flags = d.try_u8("element flags")?;
    d.try_skip(1, "reserved byte")?;
    let asc = d.try_u8("additional sense code")?;
    let ascq = d.try_u8("additional sense code qualifier")?;
    d.try_skip(3, "bus information")?;
    let byte9 = d.try_u8("source flags")?;
    let source_address = d.try_be16("source storage element address")?;
    let (primary_tag, primary_tag_printed) =
        if pvoltag && d.remaining() >= VolumeTag::LEN { VolumeTag::parse(d)? } else { (None, 0) };
    let alternate_tag = if avoltag && d.remaining() >= VolumeTag::LEN { VolumeTag::parse(d)?.0 } else { None };
    let mut identifier = None;
    if d.remaining() >= 4 {
        let code_set = d.try_u8("identifier code set")? & 0x0F;
        let kind = d.try_u8("identifier type")? & 0x0F;
        d.try_skip(1, "reserved byte")?;
        let len = usize::from(d.try_u8("identifier length")?);
        if len > 0 {
            // An identifier cut short is worse than none (a wrong serial maps the wrong drive): keep whole ones.
            if let Ok(bytes) = d.try_take(len, "identifier") {
                if bytes.iter().any(|&b| b != 0 && b != b' ') {
                    identifier = Some(Identifier { code_set, kind, bytes: bytes.to_vec() });
                }
            }
        }
    }
    Ok(ElementDescriptor {
        element_type,
        address,
        full: flags & 0x01 != 0,
        impexp: flags & 0x02 != 0,
        except: flags & 0x04 != 0,
        access: flags & 0x08 != 0,
        exenab: flags & 0x10 != 0,
        inenab: flags & 0x20 != 0,
        asc: Asc(asc, ascq),
        source: (byte9 & 0x80 != 0).then_some(source_address),
        invert: byte9 & 0x40 != 0,
        medium_type: byte9 & 0x07,
        primary_tag_printed,
        primary_tag,
        alternate_tag,
        identifier,
    })
}

/// The largest descriptor a library plausibly returns with volume tags and identifiers, for sizing allocations:
/// 12 fixed bytes, two 36-byte volume tags, a 4-byte identifier header and a 64-byte identifier.
pub const MAX_DESCRIPTOR_LEN: u32 = 12 + 36 + 36 + 4 + 64;

/// An allocation length large enough for `count` elements of any type (8-byte header, up to four page headers).
pub fn allocation_for(count: u16) -> u32 {
    (8 + 4 * 8 + u32::from(count) * MAX_DESCRIPTOR_LEN).min(0x00FF_FFFF)
}

/// Splits `count` elements from `start` into READ ELEMENT STATUS requests of at most `chunk` elements, for large
/// libraries whose full report would exceed the transfer size.
pub fn chunks(start: u16, count: u16, chunk: u16) -> impl Iterator<Item = (u16, u16)> {
    let chunk = chunk.max(1);
    let end = u32::from(start) + u32::from(count);
    (u32::from(start)..end).step_by(usize::from(chunk)).map(move |s| {
        let n = (end - s).min(u32::from(chunk));
        // Both fit in u16: s < end <= start + count and n <= chunk.
        (u16::try_from(s).unwrap_or(u16::MAX), u16::try_from(n).unwrap_or(u16::MAX))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/data/tgt/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn tgt_storage_report_with_volume_tags() {
        let buf = data("changer-res-storage.bin");
        let rep = ElementStatusReport::parse(&buf).unwrap();
        // tgt announces 8 bytes more than it sends: the last descriptor arrives cut, its label intact.
        assert_eq!(rep.report_bytes as usize, buf.len());
        assert!(rep.truncated);
        assert_eq!(rep.elements.len(), 20);
        assert!(rep.elements.iter().all(|e| e.element_type == ElementType::Storage));
        let slot = rep.elements.iter().find(|e| e.address == 1000).unwrap();
        assert!(slot.full);
        assert_eq!(slot.barcode(), Some("ABC001L6"));
        let cleaning = rep.elements.iter().find(|e| e.address == 1019).unwrap();
        assert_eq!(cleaning.barcode(), Some("CLN001L1"));
        let empty = rep.elements.iter().find(|e| e.address == 1016).unwrap();
        assert!(!empty.full && empty.barcode().is_none());
        assert_eq!(rep.elements.iter().filter(|e| e.full).count(), 17);
        // What mtx prints of tgt's tags: 32 characters (label and blanks; the reserved bytes are NULs), on full and
        // empty slots alike.
        assert_eq!((slot.primary_tag_printed, empty.primary_tag_printed), (32, 32));
    }

    /// Issue 14: the width mtx prints a volume tag with follows the bytes (its `copy_barcode`: up to the first byte
    /// outside 32..=127): a whole field of blanks prints 36, an all-NUL one nothing, a label ended by NULs its length.
    #[test]
    fn printed_volume_tag_width_follows_the_bytes() {
        let descriptor = |tag: [u8; 36]| {
            let mut d = vec![0x03, 0xE8, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            d.extend_from_slice(&tag);
            let mut page = vec![0x02, 0x80, 0, 48, 0, 0, 0, 48];
            page.extend_from_slice(&d);
            let mut buf = vec![0x03, 0xE8, 0, 1, 0, 0, 0, 56];
            buf.extend_from_slice(&page);
            ElementStatusReport::parse(&buf).unwrap().elements.remove(0)
        };
        let mut blanks = [b' '; 36];
        blanks[..8].copy_from_slice(b"ABC001L6");
        let e = descriptor(blanks);
        assert_eq!((e.barcode(), e.primary_tag_printed), (Some("ABC001L6"), 36));
        let e = descriptor([0; 36]);
        assert_eq!((e.barcode(), e.primary_tag_printed), (None, 0));
        let mut nul_padded = [0u8; 36];
        nul_padded[..8].copy_from_slice(b"ABC001L6");
        assert_eq!(descriptor(nul_padded).primary_tag_printed, 8);
    }

    #[test]
    fn tgt_all_types_report_is_rejected() {
        // The transport descriptor is shorter than its page says; everything after it is misaligned.
        assert!(ElementStatusReport::parse(&data("changer-res-all.bin")).is_err());
    }

    #[test]
    fn tgt_drives_with_dvcid_identifiers() {
        let rep = ElementStatusReport::parse(&data("changer-res-drives-dvcid.bin")).unwrap();
        assert_eq!(rep.elements.len(), 4);
        // The last drive's identifier is cut by tgt's short transfer: dropped rather than misread.
        assert!(rep.elements[3].identifier.is_none());
        assert_eq!(rep.elements[2].identifier.as_ref().unwrap().serial(), "beaf13");
        let d = &rep.elements[0];
        assert_eq!(d.element_type, ElementType::DataTransfer);
        assert_eq!(d.address, 500);
        let id = d.identifier.as_ref().unwrap();
        assert_eq!((id.code_set, id.kind), (2, 1));
        assert_eq!(id.text(), "IET     VIRTUAL-TAPE    beaf11");
        assert_eq!(id.serial(), "beaf11");
    }

    #[test]
    fn dvcid_serial_ends_at_its_nul() {
        // A T10 vendor ID identifier whose serial is NUL-terminated with junk after it (as VPD 80h on mhvtl-like
        // libraries): the serial is read like VPD 80h, up to the NUL.
        let mut bytes = b"MHVTL   ULT3580-TD5     MHVL0010".to_vec();
        bytes.extend(b"\0\x000400");
        let id = Identifier { code_set: 2, kind: 1, bytes };
        assert_eq!(id.serial(), "MHVL0010");
        assert_eq!(id.text(), "MHVTL   ULT3580-TD5     MHVL0010");
        let binary = Identifier { code_set: 1, kind: 1, bytes: vec![0, 0x41, 0] };
        assert_eq!((binary.serial(), binary.text()), ("004100".to_owned(), "004100".to_owned()));
    }

    #[test]
    fn tgt_loaded_drive_has_source_address() {
        let rep = ElementStatusReport::parse(&data("changer-res-drives-loaded.bin")).unwrap();
        let d = &rep.elements[0];
        assert!(d.full);
        assert_eq!(d.source, Some(1000));
        assert_eq!(d.barcode(), Some("ABC001L6"));
        assert!(!rep.elements[1].full);
    }

    #[test]
    fn report_without_volume_tags() {
        let rep = ElementStatusReport::parse(&data("changer-res-novoltag.bin")).unwrap();
        // 16-byte descriptors: tgt's short transfer leaves 8 bytes of the last one, too few to keep.
        assert!(rep.truncated);
        assert_eq!(rep.elements.len(), 19);
        assert!(rep.elements.iter().all(|e| e.primary_tag.is_none()));
        assert_eq!(rep.elements.iter().filter(|e| e.full).count(), 16);
    }

    #[test]
    fn truncated_report_keeps_whole_descriptors_only() {
        // Complete tgt's storage report (its last 8 bytes are missing) so that every cut is ours.
        let mut full = data("changer-res-storage.bin");
        full.extend([0; 8]);
        let rep = ElementStatusReport::parse(&full).unwrap();
        assert!(!rep.truncated);
        assert_eq!(rep.elements.len(), 20);
        for cut in [8, 15, 16, 16 + 43, 16 + 44, 16 + 52, 16 + 53, full.len() - 1] {
            let rep = ElementStatusReport::parse(&full[..cut]).unwrap();
            assert!(rep.truncated, "cut {cut}");
            let body = cut.saturating_sub(16);
            let kept = body / 52 + usize::from(body % 52 >= 44);
            assert_eq!(rep.elements.len(), kept, "cut {cut}");
        }
        assert!(ElementStatusReport::parse(&full[..7]).is_err());
    }

    #[test]
    fn contradictory_lengths_are_errors() {
        let mut buf = data("changer-res-storage.bin");
        buf.extend([0; 8]);
        // Descriptor length below the fixed part.
        buf[10..12].copy_from_slice(&8u16.to_be_bytes());
        assert!(matches!(ElementStatusReport::parse(&buf), Err(ParseError::Invalid { .. })));
        // Page byte count not a multiple of the descriptor length.
        let mut buf = data("changer-res-storage.bin");
        buf.extend([0; 8]);
        buf[10..12].copy_from_slice(&50u16.to_be_bytes());
        assert!(ElementStatusReport::parse(&buf).is_err());
        // Invalid element type code.
        let mut buf = data("changer-res-storage.bin");
        buf.extend([0; 8]);
        buf[8] = 9;
        assert!(ElementStatusReport::parse(&buf).is_err());
    }

    #[test]
    fn vendor_descriptor_with_alternate_tag_and_binary_identifier() {
        // One drive page: PVOLTAG + AVOLTAG, descriptor 12 + 36 + 36 + 4 + 8 = 96 bytes.
        let mut d = vec![0x01, 0x00, 0x09, 0, 0, 0, 0, 0, 0, 0xC0, 0x00, 0x05];
        let mut tag = b"000123".to_vec();
        tag.resize(32, 0);
        tag.extend([0, 0, 0, 7]);
        d.extend(&tag);
        let mut alt = b"ALT1".to_vec();
        alt.resize(36, b' ');
        d.extend(&alt);
        d.extend([0x01, 0x03, 0, 8, 0x50, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07]);
        let mut buf = vec![0x01, 0x00, 0, 1, 0, 0, 0, 104];
        buf.extend([4, 0xC0, 0, 96, 0, 0, 0, 96]);
        buf.extend(&d);
        let rep = ElementStatusReport::parse(&buf).unwrap();
        let e = &rep.elements[0];
        assert_eq!(e.address, 256);
        assert!(e.full && e.access && !e.impexp);
        assert_eq!(e.source, Some(5));
        assert!(e.invert);
        assert_eq!(e.primary_tag, Some(VolumeTag { label: "000123".into(), sequence: 7 }));
        assert_eq!(e.alternate_tag.as_ref().unwrap().label, "ALT1");
        assert_eq!(e.identifier.as_ref().unwrap().text(), "5001020304050607");
    }

    #[test]
    fn chunking_covers_the_range_once() {
        let v: Vec<_> = chunks(1000, 2500, 1000).collect();
        assert_eq!(v, [(1000, 1000), (2000, 1000), (3000, 500)]);
        assert_eq!(chunks(0, 0, 10).count(), 0);
        let v: Vec<_> = chunks(65000, 535, 200).collect();
        assert_eq!(v.iter().map(|c| u32::from(c.1)).sum::<u32>(), 535);
        assert!(allocation_for(1000) > 1000 * 52);
    }
}
