//! Which drives can take which cartridges: LTO generations from the cartridge's barcode label and the drive's
//! INQUIRY product identification, and the LTO compatibility rules.
//!
//! A mixed library (a new generation of drives next to the old ones, during a migration) is common: a mount for
//! "any drive" must pick a drive that can read (or, for writing, write) the cartridge, and a mount for a given drive
//! that cannot is refused at once instead of failing after a robot move. Anything not recognised (another tape
//! family, a product string without a generation) is taken as compatible: the drive itself then decides.

/// An LTO cartridge, from the last two characters of its barcode (LTO labels: `L1`..`L9`, WORM `LT`..`LZ`, and
/// `M8`: an LTO-7 cartridge formatted as LTO-7 Type M, read and written only by LTO-8 drives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LtoMedia {
    /// Generation 1..=9.
    pub generation: u8,
    /// LTO-7 Type M (`M8`).
    pub type_m: bool,
}

/// The LTO cartridge a barcode label names, if it follows the LTO label convention.
pub fn lto_media(barcode: &str) -> Option<LtoMedia> {
    let tail = barcode.trim_end().as_bytes();
    let [.., a, b] = tail else { return None };
    match (a.to_ascii_uppercase(), *b) {
        (b'L', d @ b'1'..=b'9') => Some(LtoMedia { generation: d - b'0', type_m: false }),
        // WORM: LT = LTO-3 ... LZ = LTO-9.
        (b'L', w @ (b'T'..=b'Z' | b't'..=b'z')) => {
            Some(LtoMedia { generation: w.to_ascii_uppercase() - b'T' + 3, type_m: false })
        }
        (b'M', b'8') => Some(LtoMedia { generation: 7, type_m: true }),
        _ => None,
    }
}

/// Whether a barcode labels a cleaning cartridge: LTO cleaning cartridges carry the media identifier `CU`
/// (universal cleaner) as the last two characters of an 8-character label (`CLN001CU`), and by the near-universal
/// convention of libraries and operators their volume serial begins with `CLN` (`CLN001L1` on libraries that label
/// cleaners like data cartridges). The one rule for every part of rsmd.
pub fn is_cleaning(barcode: &str) -> bool {
    let b = barcode.trim_end();
    let lto_cleaner = b.len() == 8 && b.is_char_boundary(6) && b[6..].eq_ignore_ascii_case("CU");
    lto_cleaner || b.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("CLN"))
}

/// A cartridge's media type, as clients see it (`NTMS_MEDIA_TYPE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaTypeInfo {
    /// Its name: `LTO-6`, `LTO-6-WORM`, `LTO-M8`, `LTO-Cleaner`.
    pub name: String,
    /// The LTO generation of the cartridge (an `M8` is an LTO-7 cartridge in Type M format).
    pub generation: Option<u8>,
    /// A cleaning cartridge.
    pub cleaner: bool,
    /// Data can be written more than once (not WORM, not a cleaner).
    pub rewritable: bool,
}

/// The media type a barcode label names, if it follows the LTO label convention.
pub fn media_type(barcode: &str) -> Option<MediaTypeInfo> {
    if is_cleaning(barcode) {
        return Some(cleaner_type());
    }
    let m = lto_media(barcode)?;
    let worm = barcode.trim_end().bytes().last().is_some_and(|c| matches!(c.to_ascii_uppercase(), b'T'..=b'Z'));
    Some(lto_type(m, worm))
}

/// The LTO universal cleaning cartridge type.
fn cleaner_type() -> MediaTypeInfo {
    MediaTypeInfo { name: "LTO-Cleaner".into(), generation: None, cleaner: true, rewritable: false }
}

/// The media type of an LTO cartridge.
fn lto_type(m: LtoMedia, worm: bool) -> MediaTypeInfo {
    let name = match (m.type_m, worm) {
        (true, _) => "LTO-M8".to_owned(),
        (false, true) => format!("LTO-{}-WORM", m.generation),
        (false, false) => format!("LTO-{}", m.generation),
    };
    MediaTypeInfo { name, generation: Some(m.generation), cleaner: false, rewritable: !worm }
}

/// The media types a drive (INQUIRY vendor and product) takes, by the LTO rules: every rewritable and WORM
/// generation it reads, Type M on LTO-8, and the universal cleaner. Empty when the product names no LTO
/// generation (the drive then decides, cartridge by cartridge).
pub fn drive_media_types(product: &str) -> Vec<MediaTypeInfo> {
    let Some(d) = lto_drive_generation(product) else { return Vec::new() };
    let mut v = Vec::new();
    for g in 1..=9 {
        let m = LtoMedia { generation: g, type_m: false };
        if lto_compatible(d, m, false) {
            v.push(lto_type(m, false));
            // WORM cartridges exist from LTO-3 on.
            if g >= 3 {
                v.push(lto_type(m, true));
            }
        }
    }
    if lto_compatible(d, LtoMedia { generation: 7, type_m: true }, false) {
        v.push(lto_type(LtoMedia { generation: 7, type_m: true }, false));
    }
    v.push(cleaner_type());
    v
}

/// The LTO generation of a drive from its INQUIRY vendor and product (`IBM ULT3580-TD8`, `IBM ULTRIUM-HH7`,
/// `HP Ultrium 6-SCSI`, `QUANTUM ULTRIUM-HH9`, `TANDBERG LTO-5 HH`), if it names one.
pub fn lto_drive_generation(product: &str) -> Option<u8> {
    let p = product.to_ascii_uppercase();
    let digit_after = |marker: &str| {
        p.match_indices(marker).find_map(|(i, m)| {
            let rest = p[i + m.len()..].trim_start_matches([' ', '-']);
            rest.bytes().next().filter(u8::is_ascii_digit).map(|d| d - b'0')
        })
    };
    ["-TD", "-HH", "-FH", "ULTRIUM", "LTO"].iter().find_map(|m| digit_after(m)).filter(|g| (1..=9).contains(g))
}

/// Whether an LTO drive of `drive` generation can read (`write` false) or write a cartridge.
pub fn lto_compatible(drive: u8, media: LtoMedia, write: bool) -> bool {
    let g = media.generation;
    if media.type_m {
        return drive == 8;
    }
    match drive {
        // LTO-8 dropped LTO-6; LTO-9 reads and writes LTO-8 only.
        8 => g == 7 || g == 8,
        9 => g == 8 || g == 9,
        // Up to LTO-7: write this and the previous generation, read one more back.
        d => g <= d && g + if write { 1 } else { 2 } >= d,
    }
}

/// Whether a drive (INQUIRY product, when known) can take the cartridge `barcode` (when labelled): unknown on
/// either side counts as compatible.
pub fn can_mount(drive_product: Option<&str>, barcode: Option<&str>, write: bool) -> bool {
    match (drive_product.and_then(lto_drive_generation), barcode.and_then(lto_media)) {
        (Some(d), Some(m)) => lto_compatible(d, m, write),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11: the barcode rules had two homes that disagreed (M8 was generation 8 in one and 7 in the other;
    /// a cleaner was `CLN…` in one and `CLN…`/`…CU` in the other). One rule now, following the LTO label rules.
    #[test]
    fn media_types_and_cleaners_follow_the_lto_label_rules() {
        let t = |b: &str| media_type(b).map(|m| (m.name, m.generation, m.cleaner, m.rewritable));
        assert_eq!(t("ABC001L6"), Some(("LTO-6".into(), Some(6), false, true)));
        assert_eq!(t("ABC001LW"), Some(("LTO-6-WORM".into(), Some(6), false, false)));
        assert_eq!(t("ABC001M8"), Some(("LTO-M8".into(), Some(7), false, true)), "an M8 is an LTO-7 cartridge");
        assert_eq!(t("CLN001L1"), Some(("LTO-Cleaner".into(), None, true, false)));
        assert_eq!(t("CLN001CU"), Some(("LTO-Cleaner".into(), None, true, false)));
        assert!(is_cleaning("ABC001CU"), "the CU media identifier marks a cleaner whatever the serial");
        assert!(!is_cleaning("ABCCU"), "CU only counts as the media identifier of an 8-character label");
        assert!(!is_cleaning("ABC001L6"));
        assert_eq!(t("XYZ"), None);
    }

    #[test]
    fn drives_name_the_media_types_they_take() {
        let names = |p: &str| drive_media_types(p).into_iter().map(|t| t.name).collect::<Vec<_>>();
        assert_eq!(
            names("HP Ultrium 6-SCSI"),
            ["LTO-4", "LTO-4-WORM", "LTO-5", "LTO-5-WORM", "LTO-6", "LTO-6-WORM", "LTO-Cleaner"]
        );
        assert_eq!(names("IBM ULT3580-TD8"), ["LTO-7", "LTO-7-WORM", "LTO-8", "LTO-8-WORM", "LTO-M8", "LTO-Cleaner"]);
        assert!(names("VLIB VIRTUAL TAPE").is_empty(), "no generation named: the drive decides");
    }

    #[test]
    fn barcodes_name_generations() {
        assert_eq!(lto_media("ABC001L6"), Some(LtoMedia { generation: 6, type_m: false }));
        assert_eq!(lto_media("000123L9"), Some(LtoMedia { generation: 9, type_m: false }));
        assert_eq!(lto_media("WRM001LW"), Some(LtoMedia { generation: 6, type_m: false }), "WORM LTO-6");
        assert_eq!(lto_media("WRM001LT"), Some(LtoMedia { generation: 3, type_m: false }), "WORM LTO-3");
        assert_eq!(lto_media("TYM001M8"), Some(LtoMedia { generation: 7, type_m: true }));
        assert_eq!(lto_media("CLN001CU"), None, "a cleaning cartridge");
        assert_eq!(lto_media("DLT001"), None);
        assert_eq!(lto_media("6"), None);
        assert_eq!(lto_media(""), None);
    }

    #[test]
    fn products_name_generations() {
        assert_eq!(lto_drive_generation("IBM ULT3580-TD8"), Some(8));
        assert_eq!(lto_drive_generation("IBM ULTRIUM-HH7"), Some(7));
        assert_eq!(lto_drive_generation("HP Ultrium 6-SCSI"), Some(6));
        assert_eq!(lto_drive_generation("QUANTUM ULTRIUM-HH9"), Some(9));
        assert_eq!(lto_drive_generation("TANDBERG LTO-5 HH"), Some(5));
        assert_eq!(lto_drive_generation("IBM ULT3580-TD5"), Some(5));
        assert_eq!(lto_drive_generation("VLIB VIRTUAL TAPE"), None);
        assert_eq!(lto_drive_generation("IET VIRTUAL-TAPE"), None);
    }

    #[test]
    fn the_lto_rules() {
        let m = |g| LtoMedia { generation: g, type_m: false };
        // LTO-6: reads 4, 5, 6; writes 5, 6.
        assert!(lto_compatible(6, m(4), false) && !lto_compatible(6, m(4), true));
        assert!(lto_compatible(6, m(5), true) && lto_compatible(6, m(6), true));
        assert!(!lto_compatible(6, m(3), false) && !lto_compatible(6, m(7), false));
        // LTO-8: 7 and 8 (and Type M), not 6.
        assert!(lto_compatible(8, m(7), true) && lto_compatible(8, m(8), true) && !lto_compatible(8, m(6), false));
        assert!(lto_compatible(8, LtoMedia { generation: 7, type_m: true }, true));
        assert!(!lto_compatible(7, LtoMedia { generation: 7, type_m: true }, false), "M8 needs an LTO-8 drive");
        // LTO-9: 8 and 9 only.
        assert!(lto_compatible(9, m(8), true) && lto_compatible(9, m(9), true) && !lto_compatible(9, m(7), false));
        // Unknown on either side: the drive decides.
        assert!(can_mount(Some("VLIB VIRTUAL TAPE"), Some("ABC001L9"), true));
        assert!(can_mount(Some("IBM ULT3580-TD6"), Some("CLN001CU"), false));
        assert!(!can_mount(Some("IBM ULT3580-TD6"), Some("ABC001L8"), false));
    }
}
