//! Arbitrary bytes into every parser: no panic, and output bounded by the input.

use proptest::prelude::*;

use super::element::ElementStatusReport;
use super::inquiry::{parse_device_identification, parse_supported_pages, parse_unit_serial, StandardInquiry};
use super::mode::{DeviceCapabilities, ElementAddressAssignment, ModeParameters};
use super::sense::Sense;
use super::tape::{Position, TapeAlerts};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parsers_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Sense::parse(&buf);
        let _ = super::action::classify(2, &buf);
        let _ = StandardInquiry::parse(&buf);
        let _ = parse_unit_serial(&buf);
        let _ = parse_supported_pages(&buf);
        let _ = parse_device_identification(&buf);
        let _ = ModeParameters::parse_mode6(&buf);
        let _ = ModeParameters::parse_mode10(&buf);
        let _ = ElementAddressAssignment::parse_page(&buf);
        let _ = DeviceCapabilities::parse_page(&buf);
        let _ = TapeAlerts::parse(&buf);
        let _ = Position::parse(&buf);
        if let Ok(rep) = ElementStatusReport::parse(&buf) {
            // Every descriptor is at least 12 bytes of input: memory stays bounded by the input.
            prop_assert!(rep.elements.len() * 12 <= buf.len());
        }
    }

    #[test]
    fn element_status_with_plausible_headers(
        count in 0u16..40, desc_len in 12u16..120, truncate in 0usize..4000, ty in 1u8..5, tags in any::<u8>(),
        fill in any::<u8>(),
    ) {
        // A well-formed header and page around arbitrary descriptor bytes, then cut anywhere.
        let body = usize::from(count) * usize::from(desc_len);
        let mut buf = Vec::new();
        buf.extend(0u16.to_be_bytes());
        buf.extend(count.to_be_bytes());
        buf.push(0);
        buf.extend(&u32::try_from(body + 8).unwrap().to_be_bytes()[1..]);
        buf.extend([ty, tags & 0xC0]);
        buf.extend(desc_len.to_be_bytes());
        buf.push(0);
        buf.extend(&u32::try_from(body).unwrap().to_be_bytes()[1..]);
        buf.extend(std::iter::repeat_n(fill, body));
        let full = ElementStatusReport::parse(&buf).unwrap();
        prop_assert_eq!(full.elements.len(), usize::from(count));
        prop_assert!(!full.truncated);
        let cut = truncate.min(buf.len());
        if let Ok(part) = ElementStatusReport::parse(&buf[..cut]) {
            prop_assert!(part.elements.len() <= usize::from(count));
            prop_assert_eq!(part.truncated, cut < buf.len());
        }
    }
}
