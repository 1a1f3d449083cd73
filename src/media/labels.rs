//! Recognisers for the first block of a tape, for the label inventory (cartridges without a readable barcode are
//! mounted and their first block read): ANSI and IBM VOL1 labels, LTFS, Bacula/Bareos and Amanda.
//!
//! Each recogniser checks its format's magic and that the fields it reports are sane, so random data is not taken
//! for a label; padding after the label and a block longer than the label are ignored. The layouts come from the
//! formats' own sources:
//! - ANSI X3.27 / ISO 1001 (ECMA-13) VOL1: 80 ASCII bytes, "VOL1", volume identifier 4..10, accessibility 10,
//!   implementation identifier 24..37, owner identifier 37..51, label standard version 79 (the layout documented in
//!   Bacula's `src/stored/ansi_label.c` and written by CERN CTA's `tape/buildvollbl.c`: owner at 37, version '3').
//! - IBM standard label VOL1: the same 80 bytes in EBCDIC, volume serial 4..10, owner name and address code
//!   41..51 (Bacula `src/stored/ansi_label.c`, CTA `tape/buildvollbl.c`: `vol1 + 41` for SL).
//! - LTFS: partition 0 starts with an ANSI VOL1 label whose implementation identifier starts with "LTFS"; the
//!   volume identifier is the cartridge's barcode, or spaces when it has none (LinearTapeFileSystem/ltfs
//!   `src/libltfs/label.c` `label_make_ansi_label`, checked by `ltfs_internal.c` `ltfs_read_one_label`).
//! - Bacula / Bareos: a block header ("BB01" 16 bytes, "BB02" 24 bytes, "BB03" 32 bytes: checksum or options,
//!   block length, block number, id, VolSessionId, VolSessionTime, (checksum64)), a record header (BB01: 20 bytes
//!   with VolSessionId and VolSessionTime; later 12 bytes: FileIndex, Stream, data length) whose FileIndex is
//!   PRE_LABEL (-1) or VOL_LABEL (-2), and the serialised volume label: id string, version, four 8-byte times,
//!   then VolumeName, PrevVolumeName, PoolName, PoolType, MediaType, HostName, LabelProg, ProgVersion, ProgDate,
//!   strings NUL-terminated, numbers big-endian (Bareos `core/src/stored/{block,record}.h`, `label.cc`
//!   `CreateVolumeLabelRecord`, `core/src/lib/serial.cc`; Bacula `bacula/src/stored/block.h`, `label.c`).
//! - Amanda: the tape header block starts `AMANDA: TAPESTART DATE <datestamp> TAPE <label>\n\f\n`, then NULs up
//!   to the header size (32 KiB by default); the datestamp is `X`, 8 or 14 digits (zmanda/amanda
//!   `common-src/fileheader.c` `build_header`, `parse_file_header`, `validate_datestamp`).

/// What the first block of a tape says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapeLabel {
    /// ANSI X3.27 / ISO 1001 VOL1 label (ASCII).
    Ansi {
        /// Volume identifier (up to 6 characters).
        volume: String,
        /// Owner identifier (empty when blank or unreadable).
        owner: String,
    },
    /// IBM standard label VOL1 (EBCDIC).
    Ibm {
        /// Volume serial number (up to 6 characters).
        volume: String,
        /// Owner name and address code (empty when blank or unreadable).
        owner: String,
    },
    /// An LTFS volume (its VOL1 label names the LTFS implementation).
    Ltfs {
        /// The barcode LTFS wrote into the VOL1 label; empty when the cartridge was formatted without one.
        volume: String,
    },
    /// A Bacula (or Bareos) volume label.
    Bacula {
        /// VolumeName.
        volume: String,
        /// PoolName, when not empty.
        pool: Option<String>,
        /// PoolType (e.g. `Backup`), when not empty.
        pool_type: Option<String>,
    },
    /// An Amanda tape header (TAPESTART).
    Amanda {
        /// The tape label.
        label: String,
        /// The datestamp: 8 or 14 digits, or `X` for a tape labelled but never written.
        date: String,
    },
}

impl TapeLabel {
    /// The volume name the label gives (Amanda: its tape label).
    pub fn volume(&self) -> &str {
        match self {
            TapeLabel::Ansi { volume, .. }
            | TapeLabel::Ibm { volume, .. }
            | TapeLabel::Ltfs { volume }
            | TapeLabel::Bacula { volume, .. } => volume,
            TapeLabel::Amanda { label, .. } => label,
        }
    }

    /// The format's name: `ansi`, `ibm`, `ltfs`, `bacula` or `amanda`.
    pub fn format(&self) -> &'static str {
        match self {
            TapeLabel::Ansi { .. } => "ansi",
            TapeLabel::Ibm { .. } => "ibm",
            TapeLabel::Ltfs { .. } => "ltfs",
            TapeLabel::Bacula { .. } => "bacula",
            TapeLabel::Amanda { .. } => "amanda",
        }
    }
}

/// What the first block of a tape is, if it is a label this module knows.
pub fn recognise(block: &[u8]) -> Option<TapeLabel> {
    bacula(block).or_else(|| amanda(block)).or_else(|| vol1_ascii(block)).or_else(|| vol1_ebcdic(block))
}

/// Length of a VOL1 label.
const VOL1_LEN: usize = 80;

/// ANSI VOL1, or LTFS's.
fn vol1_ascii(block: &[u8]) -> Option<TapeLabel> {
    let l = block.get(..VOL1_LEN)?;
    if &l[..4] != b"VOL1" {
        return None;
    }
    let printable = |b: u8| (b.is_ascii_graphic() || b == b' ').then_some(char::from(b));
    if &l[24..28] == b"LTFS" {
        // LTFS leaves the volume identifier blank for a cartridge without a barcode.
        let volume = if l[4..10].iter().all(|&b| b == b' ') { String::new() } else { volume_id(&l[4..10], printable)? };
        return Some(TapeLabel::Ltfs { volume });
    }
    if !(b'1'..=b'4').contains(&l[79]) {
        return None;
    }
    Some(TapeLabel::Ansi { volume: volume_id(&l[4..10], printable)?, owner: text(&l[37..51], printable) })
}

/// IBM standard label VOL1 (EBCDIC).
fn vol1_ebcdic(block: &[u8]) -> Option<TapeLabel> {
    let l = block.get(..VOL1_LEN)?;
    // "VOL1" in EBCDIC.
    if l[..4] != [0xe5, 0xd6, 0xd3, 0xf1] {
        return None;
    }
    Some(TapeLabel::Ibm { volume: volume_id(&l[4..10], ebcdic)?, owner: text(&l[41..51], ebcdic) })
}

/// A volume identifier: printable characters, left-justified, padded with spaces, not blank.
fn volume_id(field: &[u8], decode: impl Fn(u8) -> Option<char>) -> Option<String> {
    let s: String = field.iter().map(|&b| decode(b)).collect::<Option<_>>()?;
    let v = s.trim_end_matches(' ');
    (!v.is_empty() && !v.contains(' ')).then(|| v.to_string())
}

/// A free-text field, trimmed; empty when it holds bytes that are not characters (some writers leave the reserved
/// and owner fields of VOL1 uninitialised).
fn text(field: &[u8], decode: impl Fn(u8) -> Option<char>) -> String {
    let s: Option<String> = field.iter().map(|&b| decode(b)).collect();
    s.map(|s| s.trim().to_string()).unwrap_or_default()
}

/// An EBCDIC byte as a character: space, letters, digits and the punctuation code pages 037 and 500 (and
/// Bacula's `ebcdic.c` table) agree on; None for anything else.
fn ebcdic(b: u8) -> Option<char> {
    let c = match b {
        0x40 => b' ',
        0x81..=0x89 => b'a' + (b - 0x81),
        0x91..=0x99 => b'j' + (b - 0x91),
        0xa2..=0xa9 => b's' + (b - 0xa2),
        0xc1..=0xc9 => b'A' + (b - 0xc1),
        0xd1..=0xd9 => b'J' + (b - 0xd1),
        0xe2..=0xe9 => b'S' + (b - 0xe2),
        0xf0..=0xf9 => b'0' + (b - 0xf0),
        0x4b => b'.',
        0x4c => b'<',
        0x4d => b'(',
        0x4e => b'+',
        0x50 => b'&',
        0x5b => b'$',
        0x5c => b'*',
        0x5d => b')',
        0x5e => b';',
        0x60 => b'-',
        0x61 => b'/',
        0x6b => b',',
        0x6c => b'%',
        0x6d => b'_',
        0x6e => b'>',
        0x6f => b'?',
        0x7a => b':',
        0x7b => b'#',
        0x7c => b'@',
        0x7d => b'\'',
        0x7e => b'=',
        0x7f => b'"',
        _ => return None,
    };
    Some(char::from(c))
}

/// The volume label ids Bacula and Bareos write (`BaculaId`, `OldBaculaId`, `BareosId`).
const BACULA_IDS: [&[u8]; 3] = [b"Bacula 1.0 immortal\n", b"Bacula 0.9 mortal\n", b"Bareos 2.0 immortal\n"];
/// FileIndex of a volume label on a tape never written (`PRE_LABEL`).
const PRE_LABEL: i32 = -1;
/// FileIndex of a volume label (`VOL_LABEL`).
const VOL_LABEL: i32 = -2;
/// Bacula's sanity limit on a block's length (`MAX_BLOCK_LENGTH`).
const MAX_BLOCK_LENGTH: usize = 20_000_000;
/// Room for a name in a volume label, NUL included (`MAX_NAME_LENGTH`).
const MAX_NAME_LENGTH: usize = 128;

/// A Bacula or Bareos volume label block.
fn bacula(block: &[u8]) -> Option<TapeLabel> {
    // Block header lengths to try, and the record header length.
    let (headers, record_header): (&[usize], usize) = match block.get(12..16)? {
        b"BB01" => (&[16], 20),
        b"BB02" => (&[24], 12),
        // BB03 keeps an 8-byte checksum after VolSessionTime (zero when checksums are off); its block.h also
        // describes the header without it.
        b"BB03" => (&[32, 24], 12),
        _ => return None,
    };
    let block_len = usize::try_from(be32(block, 4)?).ok()?;
    if block_len > MAX_BLOCK_LENGTH {
        return None;
    }
    headers.iter().find_map(|&h| bacula_label(block, block_len, h + record_header))
}

/// The volume label record whose header ends at `data`: FileIndex, Stream and data length are its last 12 bytes.
fn bacula_label(block: &[u8], block_len: usize, data: usize) -> Option<TapeLabel> {
    let file_index = i32::from_be_bytes(block.get(data - 12..data - 8)?.try_into().ok()?);
    if file_index != PRE_LABEL && file_index != VOL_LABEL {
        return None;
    }
    let data_len = usize::try_from(be32(block, data - 4)?).ok()?;
    let end = data.checked_add(data_len)?;
    if end > block_len {
        return None;
    }
    // A record cut short by the read is not a label.
    let mut r = Fields(block.get(data..end)?);
    let id = r.bytes_to_nul(32)?;
    if !BACULA_IDS.contains(&id) {
        return None;
    }
    let _version = r.take(4)?;
    // label and write times: two btimes or two float64 dates (VerNum < 11), then two float64s.
    r.take(32)?;
    let volume = r.name()?;
    let _previous = r.name()?;
    let pool = r.name()?;
    let pool_type = r.name()?;
    // MediaType, HostName, LabelProg, ProgVersion, ProgDate: present in every version.
    for _ in 0..5 {
        r.name()?;
    }
    if volume.is_empty() {
        return None;
    }
    let some = |s: String| (!s.is_empty()).then_some(s);
    Some(TapeLabel::Bacula { volume, pool: some(pool), pool_type: some(pool_type) })
}

/// Big-endian u32 at `at`.
fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// A reader of serialised fields.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    /// The bytes before a NUL found within `max` bytes; the NUL is consumed.
    fn bytes_to_nul(&mut self, max: usize) -> Option<&'a [u8]> {
        let n = self.0.iter().take(max).position(|&b| b == 0)?;
        let s = self.take(n)?;
        self.take(1)?;
        Some(s)
    }

    /// A NUL-terminated name: UTF-8 without control characters.
    fn name(&mut self) -> Option<String> {
        let s = std::str::from_utf8(self.bytes_to_nul(MAX_NAME_LENGTH)?).ok()?;
        (!s.chars().any(char::is_control)).then(|| s.to_string())
    }
}

/// How far the first line of an Amanda header may reach.
const AMANDA_LINE_MAX: usize = 1024;

/// An Amanda tape header.
fn amanda(block: &[u8]) -> Option<TapeLabel> {
    let end = block.iter().take(AMANDA_LINE_MAX).position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&block[..end]).ok()?;
    if line.chars().any(char::is_control) {
        return None;
    }
    // parse_file_header splits the first line at spaces (strtok).
    let mut t = line.split(' ').filter(|s| !s.is_empty());
    if !matches!(t.next()?, "AMANDA:" | "NETDUMP:") || t.next()? != "TAPESTART" || t.next()? != "DATE" {
        return None;
    }
    let date = t.next()?;
    let digits = date.bytes().all(|b| b.is_ascii_digit()) && matches!(date.len(), 8 | 14);
    if !(digits || date == "X") || t.next()? != "TAPE" {
        return None;
    }
    let label = t.next()?;
    Some(TapeLabel::Amanda { label: label.to_string(), date: date.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An 80-byte label of spaces with `fields` (offset, bytes) written in.
    fn vol1(fields: &[(usize, &[u8])]) -> Vec<u8> {
        let mut l = vec![b' '; 80];
        for (at, b) in fields {
            l[*at..*at + b.len()].copy_from_slice(b);
        }
        l
    }

    /// ASCII → EBCDIC for the characters tests use (inverse of `ebcdic`).
    fn to_ebcdic(s: &[u8]) -> Vec<u8> {
        s.iter().map(|&c| (0..=255u8).find(|&e| ebcdic(e) == Some(char::from(c))).unwrap()).collect()
    }

    #[test]
    fn ansi_vol1() {
        // Layout: Bacula src/stored/ansi_label.c (VOL1 table) and CTA tape/buildvollbl.c: "VOL1", volume 4..10,
        // owner 37..51, label standard version at 79.
        let l = vol1(&[(0, b"VOL1"), (4, b"ABC123"), (37, b"CASTOR"), (79, b"3")]);
        let label = recognise(&l).unwrap();
        assert_eq!(label, TapeLabel::Ansi { volume: "ABC123".into(), owner: "CASTOR".into() });
        assert_eq!((label.format(), label.volume()), ("ansi", "ABC123"));
        // Short volume id padded with spaces, an implementation id, version 4, and a longer block with padding.
        let mut l = vol1(&[(0, b"VOL1"), (4, b"V42"), (24, b"ACME TAPE"), (79, b"4")]);
        l.extend_from_slice(&[0u8; 400]);
        assert_eq!(recognise(&l), Some(TapeLabel::Ansi { volume: "V42".into(), owner: String::new() }));
        // Bacula does not initialise the reserved and owner fields of its VOL1: the owner reads as unknown.
        let mut l = vol1(&[(0, b"VOL1"), (4, b"BAC001"), (79, b"3")]);
        l[40] = 0x00;
        l[60] = 0xff;
        assert_eq!(recognise(&l), Some(TapeLabel::Ansi { volume: "BAC001".into(), owner: String::new() }));
    }

    #[test]
    fn ansi_vol1_rejects_bad_fields() {
        let good = vol1(&[(0, b"VOL1"), (4, b"ABC123"), (79, b"3")]);
        assert!(recognise(&good).is_some());
        for (at, bytes) in [
            (4, &b"      "[..]), // blank volume id
            (4, b" ABC12"),      // not left-justified
            (4, b"AB 123"),      // a space inside
            (4, b"AB\x00123"),   // a control character
            (6, b"\xc3\xa9"),    // not ASCII
            (79, b" "),          // no label standard version
            (79, b"7"),          // no such version
            (0, b"VOL2"),        // not VOL1
            (0, b"vol1"),
        ] {
            let mut l = good.clone();
            l[at..at + bytes.len()].copy_from_slice(bytes);
            assert_eq!(recognise(&l), None, "{:?}", String::from_utf8_lossy(&l));
        }
        // Truncated below 80 bytes.
        assert_eq!(recognise(&good[..79]), None);
    }

    #[test]
    fn ibm_vol1_in_ebcdic() {
        // Layout: Bacula src/stored/ansi_label.c (IBM: owner 41..51, no version byte; the whole label converted by
        // ascii_to_ebcdic) and CTA tape/buildvollbl.c (SL owner at vol1 + 41).
        let l = to_ebcdic(&vol1(&[(0, b"VOL1"), (4, b"PRD007"), (41, b"OPS-DEPT")]));
        assert_eq!(&l[..4], &[0xe5, 0xd6, 0xd3, 0xf1]);
        assert_eq!(l[10], 0x40);
        let label = recognise(&l).unwrap();
        assert_eq!(label, TapeLabel::Ibm { volume: "PRD007".into(), owner: "OPS-DEPT".into() });
        assert_eq!((label.format(), label.volume()), ("ibm", "PRD007"));
        // A bad serial: an undefined EBCDIC code, or blank.
        let mut bad = l.clone();
        bad[5] = 0x00;
        assert_eq!(recognise(&bad), None);
        let mut blank = l.clone();
        blank[4..10].fill(0x40);
        assert_eq!(recognise(&blank), None);
        // The ASCII label is not an IBM one, and vice versa.
        assert!(matches!(recognise(&vol1(&[(0, b"VOL1"), (4, b"PRD007"), (79, b"3")])), Some(TapeLabel::Ansi { .. })));
    }

    #[test]
    fn ltfs_vol1() {
        // LinearTapeFileSystem/ltfs src/libltfs/label.c label_make_ansi_label: spaces, "VOL1", the barcode (at most
        // 6 characters) at 4, 'L' at 10, "LTFS" at 24, '4' in the last byte; written as an 80-byte block.
        let l = vol1(&[(0, b"VOL1"), (4, b"LTO123"), (10, b"L"), (24, b"LTFS"), (79, b"4")]);
        let label = recognise(&l).unwrap();
        assert_eq!(label, TapeLabel::Ltfs { volume: "LTO123".into() });
        assert_eq!((label.format(), label.volume()), ("ltfs", "LTO123"));
        // Formatted without a barcode: the volume id stays blank.
        let l = vol1(&[(0, b"VOL1"), (10, b"L"), (24, b"LTFS"), (79, b"4")]);
        assert_eq!(recognise(&l), Some(TapeLabel::Ltfs { volume: String::new() }));
        // ltfs_read_one_label accepts a longer block (it logs "too long") and only checks bytes 24..28.
        let mut l = vol1(&[(0, b"VOL1"), (4, b"A1"), (24, b"LTFS"), (79, b"4")]);
        l.resize(524_288, 0);
        assert_eq!(recognise(&l), Some(TapeLabel::Ltfs { volume: "A1".into() }));
        let mut bad = vol1(&[(0, b"VOL1"), (24, b"LTFS"), (79, b"4")]);
        bad[5] = 0x07;
        assert_eq!(recognise(&bad), None);
    }

    /// A Bacula/Bareos volume label record's data: id, version, times, then the nine names (Bareos
    /// core/src/stored/label.cc CreateVolumeLabelRecord; Bacula src/stored/label.c create_volume_label_record).
    fn bacula_label_data(id: &[u8], version: u32, names: [&str; 9]) -> Vec<u8> {
        let mut d = id.to_vec();
        d.push(0);
        d.extend_from_slice(&version.to_be_bytes());
        d.extend_from_slice(&0x0005_e0a1_2345_6789u64.to_be_bytes()); // label_btime
        d.extend_from_slice(&0x0005_e0a1_2345_6790u64.to_be_bytes()); // write_btime
        d.extend_from_slice(&[0u8; 16]); // write_date, write_time: 0 with VerNum >= 11
        for n in names {
            d.extend_from_slice(n.as_bytes());
            d.push(0);
        }
        d
    }

    const NAMES: [&str; 9] = [
        "Full-0001",
        "",
        "Full",
        "Backup",
        "LTO-8",
        "backup-sd",
        "bareos-sd",
        "Ver. 23.0.1 (18 Jan 2024)",
        "Build Jan 18 2024 10:00:00",
    ];

    /// A BB02 block: header (Bareos core/src/stored/block.h), record header (record.h), the label, and zeros up to
    /// the default block size of 64,512 bytes.
    fn bb02_block(file_index: i32, data: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0x1234_5678u32.to_be_bytes()); // CheckSum
        b.extend_from_slice(&64_512u32.to_be_bytes()); // block_len
        b.extend_from_slice(&0u32.to_be_bytes()); // BlockNumber
        b.extend_from_slice(b"BB02");
        b.extend_from_slice(&1u32.to_be_bytes()); // VolSessionId
        b.extend_from_slice(&1_700_000_000u32.to_be_bytes()); // VolSessionTime
        b.extend_from_slice(&file_index.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes()); // Stream
        b.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
        b.extend_from_slice(data);
        b.resize(64_512, 0);
        b
    }

    #[test]
    fn bareos_bb02_volume_label() {
        let data = bacula_label_data(b"Bareos 2.0 immortal\n", 20, NAMES);
        let b = bb02_block(VOL_LABEL, &data);
        // Offsets Bareos's own file(1) magic (core/scripts/magic.bareos) reads: "BB02" at 12, FileIndex at 24,
        // version at 57, volume name at 93.
        assert_eq!(&b[12..16], b"BB02");
        assert_eq!(&b[24..28], &(-2i32).to_be_bytes());
        assert_eq!(&b[57..61], &20u32.to_be_bytes());
        assert_eq!(&b[93..103], b"Full-0001\0");
        let label = recognise(&b).unwrap();
        assert_eq!(
            label,
            TapeLabel::Bacula {
                volume: "Full-0001".into(),
                pool: Some("Full".into()),
                pool_type: Some("Backup".into())
            }
        );
        assert_eq!((label.format(), label.volume()), ("bacula", "Full-0001"));
        // PRE_LABEL, and a read that kept only the first kilobyte of the block.
        assert_eq!(recognise(&bb02_block(PRE_LABEL, &data)[..1024]), Some(label));
    }

    #[test]
    fn bacula_ids_and_block_versions() {
        // Bacula: "Bacula 1.0 immortal\n" (VerNum 11), "Bacula 0.9 mortal\n" (older), in a BB02 block.
        for id in [&b"Bacula 1.0 immortal\n"[..], b"Bacula 0.9 mortal\n"] {
            let mut names = NAMES;
            names[2] = "";
            names[3] = "";
            let b = bb02_block(VOL_LABEL, &bacula_label_data(id, 11, names));
            assert_eq!(
                recognise(&b),
                Some(TapeLabel::Bacula { volume: "Full-0001".into(), pool: None, pool_type: None })
            );
        }
        let data = bacula_label_data(b"Bacula 1.0 immortal\n", 11, NAMES);
        let expected = TapeLabel::Bacula {
            volume: "Full-0001".into(),
            pool: Some("Full".into()),
            pool_type: Some("Backup".into()),
        };
        // BB01 (Bacula block.h): 16-byte block header; record header with VolSessionId and VolSessionTime first.
        let mut b = Vec::new();
        b.extend_from_slice(&[0, 0, 0, 0]);
        b.extend_from_slice(&64_512u32.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 0]);
        b.extend_from_slice(b"BB01");
        b.extend_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(&1_000_000_000u32.to_be_bytes());
        b.extend_from_slice(&VOL_LABEL.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
        b.extend_from_slice(&data);
        assert_eq!(recognise(&b), Some(expected.clone()));
        // BB03 (Bacula 15 block.h): options, block_len, number, "BB03", VolSessionId, VolSessionTime, checksum64.
        let mut b = Vec::new();
        b.extend_from_slice(&1u32.to_be_bytes()); // BLKHOPT_CHKSUM
        b.extend_from_slice(&64_512u32.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(b"BB03");
        b.extend_from_slice(&7u32.to_be_bytes());
        b.extend_from_slice(&1_700_000_000u32.to_be_bytes());
        b.extend_from_slice(&0xdead_beef_0bad_f00du64.to_be_bytes());
        b.extend_from_slice(&PRE_LABEL.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
        b.extend_from_slice(&data);
        b.resize(64_512, 0);
        assert_eq!(recognise(&b), Some(expected.clone()));
        // The 24-byte BB03 header its block.h also describes (no checksum64): the record follows at once.
        b.drain(24..32);
        b[..4].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(recognise(&b), Some(expected));
    }

    #[test]
    fn bacula_rejects_damaged_labels() {
        let data = bacula_label_data(b"Bareos 2.0 immortal\n", 20, NAMES);
        let good = bb02_block(VOL_LABEL, &data);
        assert!(recognise(&good).is_some());
        // The record cut short: the block read ends inside the label.
        assert_eq!(recognise(&good[..36 + data.len() - 1]), None);
        assert_eq!(recognise(&good[..30]), None);
        // Not a volume label: a start-of-session record (SOS_LABEL -4) or file data.
        assert_eq!(recognise(&bb02_block(-4, &data)), None);
        assert_eq!(recognise(&bb02_block(1, &data)), None);
        // An id no Bacula writes.
        assert_eq!(recognise(&bb02_block(VOL_LABEL, &bacula_label_data(b"Bacula 2.0 immortal\n", 20, NAMES))), None);
        // An empty volume name; a name without its NUL; a control character in a name.
        let mut names = NAMES;
        names[0] = "";
        assert_eq!(recognise(&bb02_block(VOL_LABEL, &bacula_label_data(b"Bareos 2.0 immortal\n", 20, names))), None);
        let mut cut = data.clone();
        cut.truncate(cut.len() - 1);
        assert_eq!(recognise(&bb02_block(VOL_LABEL, &cut)), None);
        names = NAMES;
        names[0] = "Full\u{1}0001";
        assert_eq!(recognise(&bb02_block(VOL_LABEL, &bacula_label_data(b"Bareos 2.0 immortal\n", 20, names))), None);
        // The record longer than the block says it is, and an insane block length.
        let mut b = good.clone();
        b[4..8].copy_from_slice(&100u32.to_be_bytes());
        assert_eq!(recognise(&b), None);
        b[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(recognise(&b), None);
        // An unknown block id.
        let mut b = good.clone();
        b[12..16].copy_from_slice(b"BB09");
        assert_eq!(recognise(&b), None);
    }

    /// An Amanda tape header block as build_header writes it: the TAPESTART line, "\n\f\n", NULs to 32 KiB.
    fn amanda_block(line: &str) -> Vec<u8> {
        let mut b = line.as_bytes().to_vec();
        b.extend_from_slice(b"\n\x0c\n");
        b.resize(32_768, 0);
        b
    }

    #[test]
    fn amanda_tapestart() {
        // zmanda/amanda common-src/fileheader.c build_header: "AMANDA: TAPESTART DATE %s TAPE %s\n\014\n"; the
        // datestamps and labels are those of installcheck/Amanda_Header.pl and Amanda_Rest_Storages.pl.
        let label = recognise(&amanda_block("AMANDA: TAPESTART DATE 20090102030405 TAPE TAPE17")).unwrap();
        assert_eq!(label, TapeLabel::Amanda { label: "TAPE17".into(), date: "20090102030405".into() });
        assert_eq!((label.format(), label.volume()), ("amanda", "TAPE17"));
        let b = amanda_block("AMANDA: TAPESTART DATE 20140509113436 TAPE DISKFLAT-001");
        assert_eq!(recognise(&b).unwrap().volume(), "DISKFLAT-001");
        // Read with a larger buffer than the header (or just the first line), an 8-digit date, amlabel's "X".
        let mut big = amanda_block("AMANDA: TAPESTART DATE 20010203 TAPE daily-07");
        big.resize(262_144, 0);
        assert_eq!(recognise(&big), Some(TapeLabel::Amanda { label: "daily-07".into(), date: "20010203".into() }));
        assert_eq!(recognise(&b"AMANDA: TAPESTART DATE X TAPE NEW-01\n"[..]).unwrap().volume(), "NEW-01");
    }

    #[test]
    fn amanda_rejects_other_headers() {
        for line in [
            "AMANDA: TAPEEND DATE 20090102030405",
            "AMANDA: FILE 20090102030405 host /disk lev 0 comp N program /bin/tar",
            "AMANDA: TAPESTART DATE 2009010203 TAPE T1", // 10 digits
            "AMANDA: TAPESTART DATE 2009o102 TAPE T1",   // not digits
            "AMANDA: TAPESTART DATE 20090102 TAPE",      // no label
            "AMANDA: TAPESTART TAPE T1 DATE 20090102",   // fields out of order
            "AMANDA TAPESTART DATE 20090102 TAPE T1",    // no colon
            "AMANDA: TAPESTART DATE 20090102 TAPE T1\r", // a control character
        ] {
            assert_eq!(recognise(&amanda_block(line)), None, "{line}");
        }
        // No end of line.
        assert_eq!(recognise(&b"AMANDA: TAPESTART DATE 20090102 TAPE T1"[..]), None);
    }

    #[test]
    fn unrecognised_blocks() {
        assert_eq!(recognise(&[]), None);
        assert_eq!(recognise(&[0u8; 65_536]), None);
        assert_eq!(recognise(&[b' '; 80]), None);
        // Random-looking bytes (xorshift), in every length up to a few blocks of labels.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..70_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_be_bytes()[0]
            })
            .collect();
        for n in [1, 16, 79, 80, 81, 512, 32_768, 70_000] {
            assert_eq!(recognise(&noise[..n]), None, "{n} bytes");
        }
        // Noise behind each magic alone is not a label either.
        for magic in [&b"VOL1"[..], &[0xe5, 0xd6, 0xd3, 0xf1], b"AMANDA: TAPESTART DATE "] {
            let mut b = magic.to_vec();
            b.extend_from_slice(&noise[..4096]);
            assert_eq!(recognise(&b), None);
        }
        let mut b = noise[..4096].to_vec();
        b[12..16].copy_from_slice(b"BB02");
        assert_eq!(recognise(&b), None);
        // Text that is not a header.
        assert_eq!(recognise(&b"#!/bin/sh\necho hello\n"[..]), None);
    }
}
