//! Drive mapping: which drive device sits in which data transfer element.
//!
//! The classic pain of tape libraries on Linux: `/dev/sgN` numbers say nothing about element addresses. In order
//! of trust: the DVCID serials the changer reports for its drive elements matched against each drive's VPD 80h
//! serial; then the administrator's explicit map (serial → element address); then elimination (one unmapped drive
//! and one unmapped element left). Whatever remains is reported unmapped: moves still work, mounts to it do not.

use super::Element;
use crate::scsi::element::ElementType;

/// The result of mapping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriveMapping {
    /// (element address, drive device index) pairs.
    pub pairs: Vec<(u16, usize)>,
    /// Data transfer elements with no drive device.
    pub unmapped_elements: Vec<u16>,
    /// Drive devices with no element.
    pub unmapped_devices: Vec<usize>,
}

impl DriveMapping {
    /// The device mapped to element `address`.
    pub fn device_for(&self, address: u16) -> Option<usize> {
        self.pairs.iter().find(|p| p.0 == address).map(|p| p.1)
    }
}

/// The one serial-matching rule: true when `a` (a DVCID identifier, a configured or persisted serial) names the
/// drive or changer whose unit serial number is `b`. Blanks around either are ignored and case does not matter; `a`
/// may also carry `b` as a suffix (a T10 vendor ID: vendor and product, then the serial). An empty `a` matches
/// nothing.
pub fn same_serial(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    !a.is_empty() && (a.eq_ignore_ascii_case(b) || (a.len() > b.len() && !b.is_empty() && a.ends_with(b)))
}

/// Maps drive devices (their serials, by index; None when unknown) to the data transfer elements in `elements`.
pub fn map_drives(elements: &[Element], serials: &[Option<String>], configured: &[(String, u16)]) -> DriveMapping {
    let drive_elements: Vec<&Element> =
        elements.iter().filter(|e| e.element_type == ElementType::DataTransfer).collect();
    let mut pairs: Vec<(u16, usize)> = Vec::new();
    let taken = |pairs: &Vec<(u16, usize)>, a: u16, d: usize| pairs.iter().any(|p| p.0 == a || p.1 == d);
    // 1. DVCID.
    for e in &drive_elements {
        let Some(id) = &e.identifier else { continue };
        if let Some(d) = serials.iter().position(|s| s.as_deref().is_some_and(|s| same_serial(id, s))) {
            if !taken(&pairs, e.address, d) {
                pairs.push((e.address, d));
            }
        }
    }
    // 2. Configuration.
    for (serial, address) in configured {
        let exists = drive_elements.iter().any(|e| e.address == *address);
        if let Some(d) = serials.iter().position(|s| s.as_deref().is_some_and(|s| same_serial(serial, s))) {
            if exists && !taken(&pairs, *address, d) {
                pairs.push((*address, d));
            }
        }
    }
    // 3. Elimination: exactly one element and one known drive left.
    let free_elements: Vec<u16> =
        drive_elements.iter().map(|e| e.address).filter(|a| !pairs.iter().any(|p| p.0 == *a)).collect();
    let free_devices: Vec<usize> =
        (0..serials.len()).filter(|d| serials[*d].is_some() && !pairs.iter().any(|p| p.1 == *d)).collect();
    if free_elements.len() == 1 && free_devices.len() == 1 && !pairs.is_empty() {
        pairs.push((free_elements[0], free_devices[0]));
    }
    pairs.sort_unstable();
    DriveMapping {
        unmapped_elements: drive_elements
            .iter()
            .map(|e| e.address)
            .filter(|a| !pairs.iter().any(|p| p.0 == *a))
            .collect(),
        unmapped_devices: (0..serials.len()).filter(|d| !pairs.iter().any(|p| p.1 == *d)).collect(),
        pairs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drive(address: u16, id: Option<&str>) -> Element {
        Element {
            element_type: ElementType::DataTransfer,
            address,
            full: false,
            barcode: None,
            source: None,
            exception: None,
            accessible: true,
            impexp: false,
            cleaning: false,
            tag_printed: 0,
            identifier: id.map(str::to_owned),
            device: None,
        }
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    #[test]
    fn dvcid_then_elimination_like_tgt() {
        // tgt: the last drive's identifier is cut off; elimination maps it.
        let els =
            [drive(500, Some("beaf11")), drive(501, Some("beaf12")), drive(502, Some("beaf13")), drive(503, None)];
        let serials = [s("beaf12"), s("beaf11"), s("beaf14"), s("beaf13")];
        let m = map_drives(&els, &serials, &[]);
        assert_eq!(m.pairs, vec![(500, 1), (501, 0), (502, 3), (503, 2)]);
        assert!(m.unmapped_elements.is_empty() && m.unmapped_devices.is_empty());
    }

    #[test]
    fn configuration_when_no_dvcid_and_unmapped_reported() {
        let els = [drive(256, None), drive(257, None), drive(258, None)];
        let serials = [s("X1"), s("X2"), None];
        let m = map_drives(&els, &serials, &[("X2".into(), 256), ("NOPE".into(), 257), ("X1".into(), 999)]);
        assert_eq!(m.pairs, vec![(256, 1)]);
        assert_eq!(m.unmapped_elements, vec![257, 258]);
        assert_eq!(m.unmapped_devices, vec![0, 2]);
    }

    #[test]
    fn no_guessing_without_any_anchor() {
        let m = map_drives(&[drive(1, None)], &[s("A")], &[]);
        assert!(m.pairs.is_empty());
    }

    #[test]
    fn t10_vendor_id_suffix_matches_serial() {
        assert!(same_serial("IETVIRTUAL-TAPEbeaf11", "beaf11"));
        assert!(!same_serial("beaf1", "beaf11"));
        assert!(!same_serial("", ""));
        assert!(same_serial(" beaf11 ", "BEAF11"));
        assert!(!same_serial("beaf11", ""));
    }
}
