//! Mode parameter data: headers, block descriptors and the SMC pages 1Dh (element address assignment) and 1Fh
//! (device capabilities) (SPC-4 7.5, SMC-3 7.3).

use super::element::ElementType;
use super::reader::{ParseError, Reader};

/// A block descriptor (SPC-4 7.5.5): for tapes, the density code of the loaded medium.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockDescriptor {
    /// Density code (e.g. 5Ah LTO-6).
    pub density: u8,
    /// Number of blocks (0: all remaining).
    pub blocks: u32,
    /// Block length (0: variable).
    pub block_length: u32,
}

/// Decoded mode parameter data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeParameters {
    /// Medium type.
    pub medium_type: u8,
    /// Device-specific parameter; for tapes bit 7 is WP (write protected).
    pub device_specific: u8,
    /// Block descriptors.
    pub block_descriptors: Vec<BlockDescriptor>,
    /// Mode pages: page code and the page bytes after the page header (2 bytes, or 4 for a subpage).
    pub pages: Vec<(u8, Vec<u8>)>,
}

impl ModeParameters {
    /// Parses MODE SENSE(6) data: 4-byte header.
    ///
    /// # References
    /// SPC-4 7.5.4 (mode parameter header(6)).
    pub fn parse_mode6(buf: &[u8]) -> Result<ModeParameters, ParseError> {
        let mut r = Reader::new(buf);
        let len = usize::from(r.try_u8("mode data length")?);
        let mut body = Reader::new(r.take_up_to(len));
        let medium_type = body.try_u8("medium type")?;
        let device_specific = body.try_u8("device-specific parameter")?;
        let bd_len = usize::from(body.try_u8("block descriptor length")?);
        Self::parse_rest(body, medium_type, device_specific, bd_len)
    }

    /// Parses MODE SENSE(10) data: 8-byte header (short block descriptors only).
    ///
    /// # References
    /// SPC-4 7.5.4 (mode parameter header(10)).
    pub fn parse_mode10(buf: &[u8]) -> Result<ModeParameters, ParseError> {
        let mut r = Reader::new(buf);
        let len = usize::from(r.try_be16("mode data length")?);
        let mut body = Reader::new(r.take_up_to(len));
        let medium_type = body.try_u8("medium type")?;
        let device_specific = body.try_u8("device-specific parameter")?;
        body.try_skip(2, "reserved bytes")?;
        let bd_len = usize::from(body.try_be16("block descriptor length")?);
        Self::parse_rest(body, medium_type, device_specific, bd_len)
    }

    fn parse_rest(
        mut body: Reader<'_>,
        medium_type: u8,
        device_specific: u8,
        bd_len: usize,
    ) -> Result<ModeParameters, ParseError> {
        let mut bds = body.try_sub(bd_len, "block descriptors")?;
        let mut block_descriptors = Vec::new();
        while !bds.is_empty() {
            let density = bds.try_u8("density code")?;
            let blocks = bds.try_be24("number of blocks")?;
            bds.try_skip(1, "reserved byte")?;
            let block_length = bds.try_be24("block length")?;
            block_descriptors.push(BlockDescriptor { density, blocks, block_length });
        }
        let mut pages = Vec::new();
        while !body.is_empty() {
            let b0 = body.try_u8("page code")?;
            let code = b0 & 0x3F;
            // SPF (sub-page format): a 4-byte header with the subpage code and a 2-byte length.
            let len = if b0 & 0x40 != 0 {
                body.try_skip(1, "subpage code")?;
                usize::from(body.try_be16("page length")?)
            } else {
                usize::from(body.try_u8("page length")?)
            };
            // A device that cuts the last page at the allocation length: keep what arrived.
            pages.push((code, body.take_up_to(len).to_vec()));
        }
        Ok(ModeParameters { medium_type, device_specific, block_descriptors, pages })
    }

    /// The bytes of mode page `code` (after its 2-byte header).
    pub fn page(&self, code: u8) -> Option<&[u8]> {
        self.pages.iter().find(|(c, _)| *c == code).map(|(_, b)| b.as_slice())
    }

    /// For tapes: the medium is write protected.
    pub fn write_protected(&self) -> bool {
        self.device_specific & 0x80 != 0
    }
}

/// A range of element addresses of one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElementRange {
    /// First address.
    pub first: u16,
    /// Number of elements.
    pub count: u16,
}

impl ElementRange {
    /// True when `address` is in the range.
    pub fn contains(&self, address: u16) -> bool {
        address >= self.first && u32::from(address) < u32::from(self.first) + u32::from(self.count)
    }
}

/// Mode page 1Dh: where each element type's addresses start and how many there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElementAddressAssignment {
    /// Medium transport elements (robots).
    pub transport: ElementRange,
    /// Storage elements (slots).
    pub storage: ElementRange,
    /// Import/export elements (mail slots).
    pub import_export: ElementRange,
    /// Data transfer elements (drives).
    pub data_transfer: ElementRange,
}

impl ElementAddressAssignment {
    /// Parses the page body (after the page code and length bytes): 16 bytes of first address/count pairs.
    ///
    /// # References
    /// SMC-3 7.3.3.
    pub fn parse_page(page: &[u8]) -> Result<ElementAddressAssignment, ParseError> {
        let mut r = Reader::new(page);
        let mut range = |what| -> Result<ElementRange, ParseError> {
            Ok(ElementRange { first: r.try_be16(what)?, count: r.try_be16("number of elements")? })
        };
        Ok(ElementAddressAssignment {
            transport: range("medium transport element address")?,
            storage: range("first storage element address")?,
            import_export: range("first import/export element address")?,
            data_transfer: range("first data transfer element address")?,
        })
    }

    /// Parses MODE SENSE(6) data that contains page 1Dh.
    pub fn parse_mode6(buf: &[u8]) -> Result<ElementAddressAssignment, ParseError> {
        let params = ModeParameters::parse_mode6(buf)?;
        let page = params.page(0x1D).ok_or(ParseError::Invalid { what: "page code", value: 0x1D })?;
        Self::parse_page(page)
    }

    /// The range of one element type.
    pub fn range(&self, t: ElementType) -> Option<ElementRange> {
        match t {
            ElementType::MediumTransport => Some(self.transport),
            ElementType::Storage => Some(self.storage),
            ElementType::ImportExport => Some(self.import_export),
            ElementType::DataTransfer => Some(self.data_transfer),
            ElementType::All => None,
        }
    }

    /// The type of the element at `address`.
    pub fn type_of(&self, address: u16) -> Option<ElementType> {
        [ElementType::MediumTransport, ElementType::Storage, ElementType::ImportExport, ElementType::DataTransfer]
            .into_iter()
            .find(|&t| self.range(t).is_some_and(|r| r.contains(address)))
    }

    /// Total number of elements.
    pub fn total(&self) -> u32 {
        [self.transport, self.storage, self.import_export, self.data_transfer].iter().map(|r| u32::from(r.count)).sum()
    }
}

/// Mode page 1Fh: which moves and exchanges the library supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceCapabilities {
    /// Byte 2: which element types can store media (bit 0 MT, 1 ST, 2 I/E, 3 DT).
    pub storage: u8,
    /// Bytes 4-7: for a source type MT, ST, I/E, DT, the destination types MOVE MEDIUM supports.
    pub moves: [u8; 4],
    /// Bytes 12-15: the same for EXCHANGE MEDIUM.
    pub exchanges: [u8; 4],
}

impl DeviceCapabilities {
    /// Parses the page body (after the page code and length bytes).
    ///
    /// # References
    /// SMC-3 7.3.2.
    pub fn parse_page(page: &[u8]) -> Result<DeviceCapabilities, ParseError> {
        let mut r = Reader::new(page);
        let storage = r.try_u8("storage capabilities")?;
        r.try_skip(1, "reserved byte")?;
        let mut moves = [0u8; 4];
        moves.copy_from_slice(r.try_take(4, "move capabilities")?);
        r.try_skip(4, "reserved bytes")?;
        let mut exchanges = [0u8; 4];
        exchanges.copy_from_slice(r.try_take(4, "exchange capabilities")?);
        Ok(DeviceCapabilities { storage, moves, exchanges })
    }

    fn bit(t: ElementType) -> Option<usize> {
        match t {
            ElementType::MediumTransport => Some(0),
            ElementType::Storage => Some(1),
            ElementType::ImportExport => Some(2),
            ElementType::DataTransfer => Some(3),
            ElementType::All => None,
        }
    }

    /// True when MOVE MEDIUM from an element of type `from` to one of type `to` is supported.
    pub fn can_move(&self, from: ElementType, to: ElementType) -> bool {
        matches!((Self::bit(from), Self::bit(to)), (Some(f), Some(t)) if self.moves[f] & (1 << t) != 0)
    }

    /// True when the library supports EXCHANGE MEDIUM at all.
    pub fn can_exchange(&self) -> bool {
        self.exchanges.iter().any(|&b| b & 0x0F != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/data/tgt/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn tgt_element_address_assignment() {
        let ea = ElementAddressAssignment::parse_mode6(&data("changer-mode1d.bin")).unwrap();
        assert_eq!(ea.transport, ElementRange { first: 1, count: 1 });
        assert_eq!(ea.storage, ElementRange { first: 1000, count: 20 });
        assert_eq!(ea.import_export, ElementRange { first: 10, count: 2 });
        assert_eq!(ea.data_transfer, ElementRange { first: 500, count: 4 });
        assert_eq!(ea.type_of(503), Some(ElementType::DataTransfer));
        assert_eq!(ea.type_of(504), None);
        assert_eq!(ea.total(), 27);
    }

    #[test]
    fn tgt_all_pages_and_capabilities() {
        let all = ModeParameters::parse_mode6(&data("changer-mode3f.bin")).unwrap();
        assert!(all.page(0x1D).is_some() && all.page(0x1E).is_some());
        let caps = DeviceCapabilities::parse_page(all.page(0x1F).unwrap()).unwrap();
        assert!(caps.can_move(ElementType::Storage, ElementType::DataTransfer));
        assert!(caps.can_exchange());
        let no_exchange = DeviceCapabilities { exchanges: [0; 4], ..caps };
        assert!(!no_exchange.can_exchange());
    }

    #[test]
    fn tgt_tape_block_descriptor() {
        let m = ModeParameters::parse_mode6(&data("drive-mode-loaded.bin")).unwrap();
        assert_eq!(m.block_descriptors.len(), 1);
        assert!(!m.write_protected());
        let mut wp = data("drive-mode-loaded.bin");
        wp[2] |= 0x80;
        wp[4] = 0x5A;
        let m = ModeParameters::parse_mode6(&wp).unwrap();
        assert!(m.write_protected());
        assert_eq!(m.block_descriptors[0].density, 0x5A);
    }

    #[test]
    fn mode10_and_bad_lengths() {
        let buf = [0, 14, 0, 0x80, 0, 0, 0, 0, 0x1D, 0x06, 0, 0, 0, 1, 0, 0];
        let m = ModeParameters::parse_mode10(&buf).unwrap();
        assert!(m.write_protected());
        assert_eq!(m.page(0x1D).unwrap().len(), 6);
        assert!(ElementAddressAssignment::parse_page(m.page(0x1D).unwrap()).is_err());
        // Block descriptor length beyond the data.
        assert!(ModeParameters::parse_mode6(&[7, 0, 0, 16, 0, 0, 0, 0]).is_err());
        assert!(ElementAddressAssignment::parse_mode6(&data("drive-mode-loaded.bin")).is_err());
    }
}
