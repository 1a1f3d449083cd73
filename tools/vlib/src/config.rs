//! Library configuration: layout, personality, timing, cartridges, initial faults. Parsed from TOML.

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::fault::{Fault, FaultConfig};

/// A configuration error; `key` names the offending TOML key when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path (e.g. `timing.move_ms`, `cartridge[3].slot`), empty for syntax errors.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError { key: key.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "vlib config: {}", self.message)
        } else {
            write!(f, "vlib config key `{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// A vendor personality: presets for addresses and quirks, each overridable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Personality {
    /// Like Linux tgt's virtual changer (vmlab): robot 1, storage 1000, I/E 10, drives 500; no DVCID
    /// (silently ignored), no EXCHANGE, 52-byte descriptors.
    Tgt,
    /// Like IBM libraries: robot 0, storage 1025, I/E 769, drives 257; DVCID; no EXCHANGE; a drive must be
    /// unloaded before MOVE MEDIUM can take its cartridge (else 05/53/02).
    Ibm,
    /// A generic standards-following library: robot 0, storage 1000, I/E 10, drives 500; DVCID; EXCHANGE.
    Generic,
}

/// What to do with the DVCID bit when the personality does not support device identifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DvcidUnsupported {
    /// Ignore the bit, report no identifiers.
    Ignore,
    /// ILLEGAL REQUEST 24/00 pointing at CDB byte 6 bit 0.
    Reject,
}

/// Padding of the 32-byte volume tag field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BarcodePad {
    /// ASCII spaces (SMC).
    Space,
    /// NUL bytes (some vendors).
    Nul,
}

/// First element address of each element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Addresses {
    /// First medium transport (robot) address.
    pub robot: u16,
    /// First storage slot address.
    pub storage: u16,
    /// First import/export (mail) slot address.
    pub ie: u16,
    /// First data transfer (drive) address.
    pub drive: u16,
}

/// Emulated command durations in milliseconds (before `time_scale`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    /// One robot move (MOVE MEDIUM; EXCHANGE MEDIUM takes two).
    pub move_ms: u64,
    /// POSITION TO ELEMENT.
    pub position_ms: u64,
    /// Drive load/thread (auto-load after a MOVE into the drive, or LOAD).
    pub load_ms: u64,
    /// Drive unload (LOAD UNLOAD with LOAD=0, or the implicit unload of a MOVE out of a loaded drive).
    pub unload_ms: u64,
    /// READ ELEMENT STATUS with VOLTAG, per element reported.
    pub res_voltag_per_element_ms: u64,
    /// READ ELEMENT STATUS without VOLTAG, per element reported.
    pub res_per_element_ms: u64,
    /// INITIALIZE ELEMENT STATUS (with range), per element scanned.
    pub init_per_element_ms: u64,
    /// Every other command.
    pub command_ms: u64,
    /// A drive cleaning: from the cleaning cartridge's arrival in the drive until the drive ejects it.
    pub clean_ms: u64,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            move_ms: 8000,
            position_ms: 2000,
            load_ms: 20000,
            unload_ms: 15000,
            res_voltag_per_element_ms: 1,
            res_per_element_ms: 0,
            init_per_element_ms: 50,
            command_ms: 1,
            clean_ms: 30000,
        }
    }
}

/// Where a configured cartridge starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    /// Storage slot, 1-based index (slot 1 is the first storage element).
    Slot(u32),
    /// Import/export slot, 1-based index.
    Ie(u32),
    /// Drive, 0-based index (the tape is loaded and ready).
    Drive(usize),
}

/// One cartridge in the initial inventory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cartridge {
    /// Barcode label (up to 32 characters), e.g. `ABC001L6`.
    pub barcode: String,
    /// Initial location.
    pub location: Location,
    /// Write protect tab set (drive MODE SENSE reports WP).
    pub write_protected: bool,
    /// A cleaning cartridge (default: label starts with `CLN`).
    pub cleaning: bool,
    /// Cleanings this cleaning cartridge has done already (a drive refuses it once `cleaner_max_uses` is reached).
    pub uses: u32,
    /// A cleaning cartridge the drives do not accept (TapeAlert 17h "invalid cleaning tape"): ejected at once.
    pub invalid_cleaner: bool,
    /// The data on the tape: its first block, which a drive's READ returns at the beginning of the tape (one block
    /// only; end of data follows). None: a blank tape. 1..=[`MAX_FIRST_BLOCK`] bytes, data cartridges only.
    pub first_block: Option<Vec<u8>>,
    /// The library cannot read its barcode label (torn, missing): READ ELEMENT STATUS reports a blank volume tag.
    /// The barcode still names it in faults and snapshots.
    pub label_unreadable: bool,
}

/// The largest `first_block` a cartridge may hold (8 MiB, an LTO drive's largest block).
pub const MAX_FIRST_BLOCK: usize = 8 * 1024 * 1024;

impl Cartridge {
    /// A data cartridge (cleaning if the label starts with `CLN`) in `location`.
    pub fn new(barcode: &str, location: Location) -> Cartridge {
        Cartridge {
            barcode: barcode.to_string(),
            location,
            write_protected: false,
            cleaning: barcode.starts_with("CLN"),
            uses: 0,
            invalid_cleaner: false,
            first_block: None,
            label_unreadable: false,
        }
    }

    /// Density code for the drive's MODE SENSE block descriptor, from the media suffix (`L6` → 5Ah).
    pub fn density_code(barcode: &str) -> u8 {
        let b = barcode.as_bytes();
        if b.len() >= 2 && b[b.len() - 2] == b'L' {
            match b[b.len() - 1] {
                b'1' => 0x40,
                b'2' => 0x42,
                b'3' => 0x44,
                b'4' => 0x46,
                b'5' => 0x58,
                b'6' => 0x5a,
                b'7' => 0x5c,
                b'8' => 0x5e,
                b'9' => 0x60,
                _ => 0,
            }
        } else {
            0
        }
    }
}

/// The emulated library. Build with [`Config::default_library`] or [`Config::from_toml`]; all fields are
/// public so tests can adjust them before [`crate::Target::new`] (which validates).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct Config {
    /// Personality the presets came from.
    pub personality: Personality,
    /// Changer unit serial number (INQUIRY VPD 80h).
    pub serial: String,
    /// Number of storage slots.
    pub storage_slots: u32,
    /// Number of import/export slots.
    pub ie_slots: u32,
    /// Number of robots (medium transport elements), at least 1.
    pub robots: u32,
    /// Drive serial numbers; their count is the number of drives.
    pub drive_serials: Vec<String>,
    /// INQUIRY product identification per drive (e.g. `ULT3580-TD8`, to mix LTO generations); drives beyond the
    /// list (all, when empty) report `VIRTUAL TAPE`.
    pub drive_products: Vec<String>,
    /// First address of each element type.
    pub addresses: Addresses,
    /// READ ELEMENT STATUS supports DVCID (drive serials in drive descriptors).
    pub dvcid: bool,
    /// What DVCID does when unsupported.
    pub dvcid_unsupported: DvcidUnsupported,
    /// EXCHANGE MEDIUM supported (else 05/20/00 invalid opcode).
    pub exchange: bool,
    /// A MOVE MEDIUM out of a drive whose tape is still loaded (not ejected by LOAD UNLOAD) fails with
    /// 05/53/02 "medium removal prevented" (as IBM libraries report). When false the move unloads the
    /// drive itself (taking `unload_ms` extra).
    pub unload_before_move: bool,
    /// Drives support LOAD UNLOAD (else 05/20/00 invalid opcode: the library unloads them as it moves).
    pub drive_load_unload: bool,
    /// Minimum element descriptor length; descriptors are zero-padded up to it (tgt: 52). 0 = natural.
    pub descriptor_len: u16,
    /// A READ ELEMENT STATUS asking for exactly one element answers GOOD with no data at all, as tgt was seen to
    /// (rsmd read "Response truncated at the first element address: 2 bytes needed, 0 available").
    pub short_single_element_status: bool,
    /// Report only the first N characters of barcodes (6 or 8); None = full label.
    pub barcode_len: Option<u8>,
    /// Padding of the volume tag field.
    pub barcode_pad: BarcodePad,
    /// Sense data in descriptor format (72h) instead of fixed format (70h).
    pub descriptor_sense: bool,
    /// Command durations.
    pub timing: Timing,
    /// Multiplier for every duration; 0 = instantaneous.
    pub time_scale: f64,
    /// TapeAlert 14h "clean now" is raised after this many data loads of a drive; 0 = never.
    pub clean_after_loads: u32,
    /// Cleanings a cleaning cartridge can do: one with `uses` at or above this is expired (the drive ejects it
    /// without cleaning and raises TapeAlert 16h). At least 1.
    pub cleaner_max_uses: u32,
    /// Every device starts with a pending UNIT ATTENTION 06/29/00 (power on).
    pub power_on_unit_attention: bool,
    /// Initial cartridges.
    pub cartridges: Vec<Cartridge>,
    /// Faults applied when the target starts.
    pub faults: Vec<Fault>,
}

impl Personality {
    fn addresses(self) -> Addresses {
        match self {
            Personality::Tgt => Addresses { robot: 1, storage: 1000, ie: 10, drive: 500 },
            Personality::Ibm => Addresses { robot: 0, storage: 1025, ie: 769, drive: 257 },
            Personality::Generic => Addresses { robot: 0, storage: 1000, ie: 10, drive: 500 },
        }
    }
}

/// Generates `count` drive serials `VDRV0000`, `VDRV0001`, ...
pub fn default_drive_serials(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("VDRV{i:04}")).collect()
}

/// Generates a barcode for cartridge `n` (1-based): `prefix` + number + `suffix`, the number taking at
/// least 3 digits and the prefix shortened so the label stays 8 characters when the suffix has 2.
pub fn generated_barcode(prefix: &str, n: u32, suffix: &str) -> String {
    let digits = n.to_string().len().max(3);
    let keep = 6usize.saturating_sub(digits).min(prefix.len());
    format!("{}{n:0digits$}{suffix}", &prefix[..keep])
}

impl Config {
    /// A configuration of `personality` with the given layout and no cartridges.
    pub fn new(personality: Personality, storage_slots: u32, ie_slots: u32, drives: usize) -> Config {
        let p = personality;
        Config {
            personality: p,
            serial: "VLIB0000".to_string(),
            storage_slots,
            ie_slots,
            robots: 1,
            drive_serials: default_drive_serials(drives),
            drive_products: Vec::new(),
            addresses: p.addresses(),
            dvcid: p != Personality::Tgt,
            dvcid_unsupported: DvcidUnsupported::Ignore,
            exchange: p == Personality::Generic,
            unload_before_move: p == Personality::Ibm,
            drive_load_unload: true,
            descriptor_len: if p == Personality::Tgt { 52 } else { 0 },
            short_single_element_status: false,
            barcode_len: None,
            barcode_pad: BarcodePad::Space,
            descriptor_sense: false,
            timing: Timing::default(),
            time_scale: 1.0,
            clean_after_loads: 0,
            cleaner_max_uses: 50,
            power_on_unit_attention: false,
            cartridges: Vec::new(),
            faults: Vec::new(),
        }
    }

    /// The default (tgt-like) library: 20 storage slots, 2 I/E slots, 1 robot, 4 drives, data cartridges
    /// ABC001L6..ABC016L6 in slots 1..16 and cleaning cartridge CLN001L1 in slot 20.
    pub fn default_library() -> Config {
        let mut c = Config::new(Personality::Tgt, 20, 2, 4);
        for n in 1..=16 {
            c.cartridges.push(Cartridge::new(&generated_barcode("ABC", n, "L6"), Location::Slot(n)));
        }
        c.cartridges.push(Cartridge::new("CLN001L1", Location::Slot(20)));
        c
    }

    /// Parses TOML (format in README.md); errors name the offending key. A relative `first_block_file` is read
    /// from the current directory.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Config::try_from(raw_toml(text)?)
    }

    /// Reads and parses the TOML file `path`; a relative `first_block_file` is read from the file's directory.
    pub fn from_toml_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new("", format!("cannot be read: {e}")))?;
        let mut raw = raw_toml(&text)?;
        let dir = path.parent().unwrap_or(Path::new(""));
        for c in &mut raw.cartridge {
            if let Some(f) = c.first_block_file.as_mut().filter(|f| f.is_relative()) {
                *f = dir.join(&*f);
            }
        }
        Config::try_from(raw)
    }

    /// Number of drives.
    pub fn drive_count(&self) -> usize {
        self.drive_serials.len()
    }

    /// Scales a duration by `time_scale`.
    pub fn scaled(&self, ms: u64) -> u64 {
        if self.time_scale <= 0.0 {
            return 0;
        }
        // Durations are far below 2^52 ms; the float round trip is exact enough.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let v = (ms as f64 * self.time_scale).round() as u64;
        v
    }

    /// Checks ranges, overlaps, cartridge placement and labels.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.robots == 0 {
            return Err(ConfigError::new("robots", "must be at least 1"));
        }
        if !(self.time_scale.is_finite() && self.time_scale >= 0.0) {
            return Err(ConfigError::new("time_scale", "must be a finite number >= 0"));
        }
        if let Some(n) = self.barcode_len {
            if n != 6 && n != 8 {
                return Err(ConfigError::new("barcode_len", "must be 6 or 8"));
            }
        }
        if self.cleaner_max_uses == 0 {
            return Err(ConfigError::new("cleaner_max_uses", "must be at least 1"));
        }
        if self.serial.is_empty() || self.serial.len() > 64 {
            return Err(ConfigError::new("serial", "must be 1..=64 characters"));
        }
        let drives = u32::try_from(self.drive_count()).map_err(|_| ConfigError::new("drives", "too many drives"))?;
        let ranges = [
            ("addresses.robot", self.addresses.robot, self.robots),
            ("addresses.storage", self.addresses.storage, self.storage_slots),
            ("addresses.ie", self.addresses.ie, self.ie_slots),
            ("addresses.drive", self.addresses.drive, drives),
        ];
        for (i, &(key, start, count)) in ranges.iter().enumerate() {
            if u32::from(start) + count > 0x1_0000 {
                return Err(ConfigError::new(
                    key,
                    format!("{count} elements from address {start} do not fit in 16-bit addresses"),
                ));
            }
            for &(okey, ostart, ocount) in &ranges[..i] {
                let (a0, a1) = (u32::from(start), u32::from(start) + count);
                let (b0, b1) = (u32::from(ostart), u32::from(ostart) + ocount);
                if count > 0 && ocount > 0 && a0 < b1 && b0 < a1 {
                    return Err(ConfigError::new(
                        key,
                        format!("address range {a0}..{a1} overlaps {okey} range {b0}..{b1}"),
                    ));
                }
            }
        }
        for (i, p) in self.drive_products.iter().enumerate() {
            if p.is_empty() || p.len() > 16 || !p.is_ascii() {
                return Err(ConfigError::new(format!("drive_products[{i}]"), "must be 1..=16 ASCII characters"));
            }
        }
        for (i, s) in self.drive_serials.iter().enumerate() {
            if s.is_empty() || s.len() > 32 || !s.is_ascii() {
                return Err(ConfigError::new(format!("drive_serials[{i}]"), "must be 1..=32 ASCII characters"));
            }
        }
        let mut seen_loc = std::collections::HashSet::new();
        let mut seen_code = std::collections::HashSet::new();
        for (i, c) in self.cartridges.iter().enumerate() {
            let key = |f: &str| format!("cartridge[{i}].{f}");
            if c.barcode.is_empty() || c.barcode.len() > 32 || !c.barcode.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::new(
                    key("barcode"),
                    "must be 1..=32 printable ASCII characters without spaces",
                ));
            }
            if !seen_code.insert(c.barcode.as_str()) {
                return Err(ConfigError::new(key("barcode"), format!("duplicate barcode {}", c.barcode)));
            }
            let (field, ok) = match c.location {
                Location::Slot(n) => ("slot", n >= 1 && n <= self.storage_slots),
                Location::Ie(n) => ("ie", n >= 1 && n <= self.ie_slots),
                Location::Drive(n) => ("drive", n < self.drive_count()),
            };
            if !ok {
                return Err(ConfigError::new(key(field), "no such element"));
            }
            if !seen_loc.insert(c.location) {
                return Err(ConfigError::new(key(field), "element already holds a cartridge"));
            }
            if c.invalid_cleaner && !c.cleaning {
                return Err(ConfigError::new(
                    key("invalid_cleaner"),
                    "only a cleaning cartridge can be an invalid one",
                ));
            }
            if let Some(b) = &c.first_block {
                check_first_block(b, c.cleaning).map_err(|m| ConfigError::new(key("first_block"), m))?;
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCartridge {
    barcode: String,
    slot: Option<u32>,
    ie: Option<u32>,
    drive: Option<usize>,
    #[serde(default)]
    write_protected: bool,
    cleaning: Option<bool>,
    #[serde(default)]
    uses: u32,
    #[serde(default)]
    invalid_cleaner: bool,
    first_block_hex: Option<String>,
    first_block_file: Option<PathBuf>,
    #[serde(default)]
    label_unreadable: bool,
}

/// Why a first block cannot be a cartridge's.
fn check_first_block(b: &[u8], cleaning: bool) -> Result<(), String> {
    if cleaning {
        Err("a cleaning cartridge holds no data".into())
    } else if b.is_empty() {
        Err("a tape block holds at least one byte".into())
    } else if b.len() > MAX_FIRST_BLOCK {
        Err(format!("{} bytes: a block holds at most {MAX_FIRST_BLOCK}", b.len()))
    } else {
        Ok(())
    }
}

/// Bytes from hex digits; ASCII whitespace between them is ignored (long blocks can be written over several lines).
fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return Err(format!("{} hex digits: an odd number", digits.len()));
    }
    let value = |d: u8| char::from(d).to_digit(16).ok_or_else(|| format!("{:?} is not a hex digit", char::from(d)));
    digits.chunks(2).map(|p| Ok(u8::try_from(value(p[0])? * 16 + value(p[1])?).unwrap_or(u8::MAX))).collect()
}

/// The TOML text as it is written, before the checks.
fn raw_toml(text: &str) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let msg = e.message().to_string();
        // serde's messages name unknown/missing fields; add the line for the rest.
        let key = msg.split('`').nth(1).filter(|_| msg.contains("field")).unwrap_or("").to_string();
        ConfigError::new(key, e.to_string().trim().to_string())
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFill {
    #[serde(default = "default_prefix")]
    prefix: String,
    count: u32,
    #[serde(default = "default_suffix")]
    suffix: String,
    #[serde(default)]
    cleaning: u32,
}

fn default_prefix() -> String {
    "ABC".to_string()
}

fn default_suffix() -> String {
    "L6".to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAddresses {
    robot: Option<u16>,
    storage: Option<u16>,
    ie: Option<u16>,
    drive: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    personality: Option<Personality>,
    serial: Option<String>,
    storage_slots: Option<u32>,
    ie_slots: Option<u32>,
    robots: Option<u32>,
    drives: Option<usize>,
    drive_serials: Option<Vec<String>>,
    drive_products: Option<Vec<String>>,
    addresses: Option<RawAddresses>,
    dvcid: Option<bool>,
    dvcid_unsupported: Option<DvcidUnsupported>,
    exchange: Option<bool>,
    unload_before_move: Option<bool>,
    drive_load_unload: Option<bool>,
    descriptor_len: Option<u16>,
    short_single_element_status: Option<bool>,
    barcode_len: Option<u8>,
    barcode_pad: Option<BarcodePad>,
    descriptor_sense: Option<bool>,
    timing: Option<Timing>,
    time_scale: Option<f64>,
    clean_after_loads: Option<u32>,
    cleaner_max_uses: Option<u32>,
    power_on_unit_attention: Option<bool>,
    fill: Option<RawFill>,
    #[serde(default)]
    cartridge: Vec<RawCartridge>,
    #[serde(default)]
    fault: Vec<FaultConfig>,
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(r: RawConfig) -> Result<Config, ConfigError> {
        let p = r.personality.unwrap_or(Personality::Tgt);
        let drives = match (&r.drive_serials, r.drives) {
            (Some(s), Some(n)) if s.len() != n => {
                return Err(ConfigError::new("drive_serials", format!("{} serials for drives = {n}", s.len())))
            }
            (Some(s), _) => s.len(),
            (None, n) => n.unwrap_or(4),
        };
        let mut c = Config::new(p, r.storage_slots.unwrap_or(20), r.ie_slots.unwrap_or(2), drives);
        if let Some(s) = r.serial {
            c.serial = s;
        }
        if let Some(n) = r.robots {
            c.robots = n;
        }
        if let Some(p) = r.drive_products {
            c.drive_products = p;
        }
        if let Some(s) = r.drive_serials {
            c.drive_serials = s;
        }
        if let Some(a) = r.addresses {
            c.addresses.robot = a.robot.unwrap_or(c.addresses.robot);
            c.addresses.storage = a.storage.unwrap_or(c.addresses.storage);
            c.addresses.ie = a.ie.unwrap_or(c.addresses.ie);
            c.addresses.drive = a.drive.unwrap_or(c.addresses.drive);
        }
        c.dvcid = r.dvcid.unwrap_or(c.dvcid);
        c.dvcid_unsupported = r.dvcid_unsupported.unwrap_or(c.dvcid_unsupported);
        c.exchange = r.exchange.unwrap_or(c.exchange);
        c.unload_before_move = r.unload_before_move.unwrap_or(c.unload_before_move);
        c.drive_load_unload = r.drive_load_unload.unwrap_or(c.drive_load_unload);
        c.descriptor_len = r.descriptor_len.unwrap_or(c.descriptor_len);
        c.short_single_element_status = r.short_single_element_status.unwrap_or(false);
        c.barcode_len = r.barcode_len.or(c.barcode_len);
        c.barcode_pad = r.barcode_pad.unwrap_or(c.barcode_pad);
        c.descriptor_sense = r.descriptor_sense.unwrap_or(false);
        c.timing = r.timing.unwrap_or_default();
        c.time_scale = r.time_scale.unwrap_or(1.0);
        c.clean_after_loads = r.clean_after_loads.unwrap_or(0);
        c.cleaner_max_uses = r.cleaner_max_uses.unwrap_or(c.cleaner_max_uses);
        c.power_on_unit_attention = r.power_on_unit_attention.unwrap_or(false);
        if let Some(f) = r.fill {
            let total = f.count.saturating_add(f.cleaning);
            if total > c.storage_slots {
                return Err(ConfigError::new(
                    "fill.count",
                    format!("{total} cartridges do not fit in {} slots", c.storage_slots),
                ));
            }
            for n in 1..=f.count {
                c.cartridges.push(Cartridge::new(&generated_barcode(&f.prefix, n, &f.suffix), Location::Slot(n)));
            }
            for k in 0..f.cleaning {
                let mut cart = Cartridge::new(
                    &generated_barcode("CLN", k + 1, "L1"),
                    Location::Slot(c.storage_slots - f.cleaning + k + 1),
                );
                cart.cleaning = true;
                c.cartridges.push(cart);
            }
        }
        for (i, rc) in r.cartridge.into_iter().enumerate() {
            let location = match (rc.slot, rc.ie, rc.drive) {
                (Some(s), None, None) => Location::Slot(s),
                (None, Some(s), None) => Location::Ie(s),
                (None, None, Some(d)) => Location::Drive(d),
                _ => {
                    return Err(ConfigError::new(
                        format!("cartridge[{i}]"),
                        "exactly one of slot, ie, drive is required",
                    ))
                }
            };
            let mut cart = Cartridge::new(&rc.barcode, location);
            cart.write_protected = rc.write_protected;
            if let Some(cl) = rc.cleaning {
                cart.cleaning = cl;
            }
            cart.uses = rc.uses;
            cart.invalid_cleaner = rc.invalid_cleaner;
            cart.label_unreadable = rc.label_unreadable;
            let key = |f: &str| format!("cartridge[{i}].{f}");
            cart.first_block = match (rc.first_block_hex, rc.first_block_file) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(
                        key("first_block_file"),
                        "give first_block_hex or first_block_file, not both",
                    ))
                }
                (Some(h), None) => {
                    let b = parse_hex(&h).map_err(|m| ConfigError::new(key("first_block_hex"), m))?;
                    check_first_block(&b, cart.cleaning).map_err(|m| ConfigError::new(key("first_block_hex"), m))?;
                    Some(b)
                }
                (None, Some(f)) => {
                    let b = std::fs::read(&f)
                        .map_err(|e| ConfigError::new(key("first_block_file"), format!("{}: {e}", f.display())))?;
                    check_first_block(&b, cart.cleaning)
                        .map_err(|m| ConfigError::new(key("first_block_file"), format!("{}: {m}", f.display())))?;
                    Some(b)
                }
                (None, None) => None,
            };
            c.cartridges.push(cart);
        }
        for (i, fc) in r.fault.iter().enumerate() {
            let f = fc.to_fault().map_err(|(k, m)| ConfigError::new(format!("fault[{i}].{k}"), m))?;
            c.faults.push(f);
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Device;

    #[test]
    fn default_library_layout() {
        let c = Config::default_library();
        c.validate().unwrap();
        assert_eq!(c.storage_slots, 20);
        assert_eq!(c.ie_slots, 2);
        assert_eq!(c.drive_count(), 4);
        assert_eq!(c.cartridges.len(), 17);
        assert_eq!(c.cartridges[0].barcode, "ABC001L6");
        assert_eq!(c.cartridges[15].barcode, "ABC016L6");
        assert_eq!(c.cartridges[15].location, Location::Slot(16));
        assert_eq!(c.cartridges[16].barcode, "CLN001L1");
        assert!(c.cartridges[16].cleaning);
        assert_eq!(c.cartridges[16].location, Location::Slot(20));
        assert_eq!(c.drive_serials[3], "VDRV0003");
    }

    #[test]
    fn barcodes() {
        assert_eq!(generated_barcode("ABC", 7, "L6"), "ABC007L6");
        assert_eq!(generated_barcode("ABC", 1234, "L6"), "AB1234L6");
        assert_eq!(generated_barcode("ABC", 50000, "L6"), "A50000L6");
        assert_eq!(Cartridge::density_code("ABC001L6"), 0x5a);
        assert_eq!(Cartridge::density_code("ABC001L8"), 0x5e);
        assert_eq!(Cartridge::density_code("XYZ"), 0);
    }

    #[test]
    fn toml_full() {
        let c = Config::from_toml(
            r#"
personality = "ibm"
serial = "LIB42"
storage_slots = 100
ie_slots = 4
drives = 2
drive_serials = ["S0", "S1"]
exchange = true
descriptor_len = 60
barcode_len = 6
barcode_pad = "nul"
time_scale = 0.5
clean_after_loads = 3
[addresses]
drive = 300
[timing]
move_ms = 1000
[fill]
count = 10
cleaning = 1
[[cartridge]]
barcode = "WRM001L7"
ie = 2
write_protected = true
[[fault]]
kind = "unit_attention"
device = "changer"
after_commands = 2
[[fault]]
kind = "jam"
moves = 3
"#,
        )
        .unwrap();
        assert_eq!(c.personality, Personality::Ibm);
        assert_eq!(c.serial, "LIB42");
        assert_eq!(c.addresses.drive, 300);
        assert_eq!(c.addresses.storage, 1025);
        assert!(c.dvcid && c.exchange && c.unload_before_move);
        assert_eq!(c.descriptor_len, 60);
        assert_eq!(c.barcode_len, Some(6));
        assert_eq!(c.barcode_pad, BarcodePad::Nul);
        assert_eq!(c.timing.move_ms, 1000);
        assert_eq!(c.timing.load_ms, 20000);
        assert_eq!(c.scaled(1000), 500);
        assert_eq!(c.cartridges.len(), 12);
        assert_eq!(c.cartridges[10].barcode, "CLN001L1");
        assert_eq!(c.cartridges[10].location, Location::Slot(100));
        assert!(c.cartridges[11].write_protected);
        assert_eq!(
            c.faults,
            vec![Fault::UnitAttentionAfter { device: Device::Changer, commands: 2 }, Fault::RobotJam { next_moves: 3 }]
        );
    }

    #[test]
    fn toml_cleaning_door_and_tapealert_keys() {
        let c = Config::from_toml(
            r#"
cleaner_max_uses = 20
[timing]
clean_ms = 45000
[[cartridge]]
barcode = "CLN007L1"
slot = 1
uses = 19
[[cartridge]]
barcode = "CLNBADL1"
slot = 2
invalid_cleaner = true
[[fault]]
kind = "cleaner_stuck"
drive = 1
[[fault]]
kind = "tapealert"
drive = 2
flag = 20
[[fault]]
kind = "door_open"
"#,
        )
        .unwrap();
        assert_eq!(c.cleaner_max_uses, 20);
        assert_eq!(c.timing.clean_ms, 45000);
        assert_eq!(c.timing.move_ms, 8000);
        assert_eq!((c.cartridges[0].uses, c.cartridges[0].invalid_cleaner), (19, false));
        assert!(c.cartridges[1].cleaning && c.cartridges[1].invalid_cleaner);
        assert_eq!(
            c.faults,
            vec![Fault::CleanerStuck { drive: 1 }, Fault::TapeAlert { drive: 2, flag: 20 }, Fault::DoorOpen]
        );
        let d = Config::from_toml("").unwrap();
        assert_eq!((d.cleaner_max_uses, d.timing.clean_ms), (50, 30000));
        assert_eq!(Config::default_library().cartridges[16].uses, 0);
        let e = Config::from_toml("[[fault]]\nkind = \"tapealert\"\ndrive = 0\nflag = 65").unwrap_err();
        assert_eq!(e.key, "fault[0].flag", "{e}");
        let e = Config::from_toml("[[fault]]\nkind = \"tapealert\"\ndrive = 0").unwrap_err();
        assert_eq!(e.key, "fault[0].flag", "{e}");
        let e = Config::from_toml("[[fault]]\nkind = \"cleaner_stuck\"").unwrap_err();
        assert_eq!(e.key, "fault[0].drive", "{e}");
        let e = Config::from_toml("cleaner_max_uses = 0").unwrap_err();
        assert_eq!(e.key, "cleaner_max_uses", "{e}");
        let e =
            Config::from_toml("[[cartridge]]\nbarcode = \"ABC001L6\"\nslot = 1\ninvalid_cleaner = true").unwrap_err();
        assert_eq!(e.key, "cartridge[0].invalid_cleaner", "{e}");
        let e = Config::from_toml("[timing]\nclean_mz = 3").unwrap_err();
        assert_eq!(e.key, "clean_mz", "{e}");
        // A fault the target refuses at start is a configuration error.
        let c = Config::from_toml("[[fault]]\nkind = \"tapealert\"\ndrive = 9\nflag = 3").unwrap();
        assert_eq!(crate::Target::new(c).unwrap_err().key, "fault");
    }

    #[test]
    fn toml_first_block_hex_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let vol1 = dir.path().join("vol1.bin");
        std::fs::write(&vol1, b"VOL1ABC123").unwrap();
        let text = format!(
            "[[cartridge]]\nbarcode = \"HEX001L6\"\nslot = 1\nfirst_block_hex = \"\"\"\n56 4f 4C 31\n0a ff\"\"\"\n\
             [[cartridge]]\nbarcode = \"FIL001L6\"\nslot = 2\nfirst_block_file = {:?}\n\
             [[cartridge]]\nbarcode = \"BLK001L6\"\nslot = 3\n",
            vol1.display().to_string()
        );
        let c = Config::from_toml(&text).unwrap();
        assert_eq!(c.cartridges[0].first_block.as_deref(), Some(&b"VOL1\n\xff"[..]));
        assert_eq!(c.cartridges[1].first_block.as_deref(), Some(&b"VOL1ABC123"[..]));
        assert_eq!(c.cartridges[2].first_block, None, "a blank tape");
        assert_eq!(Cartridge::new("X", Location::Slot(1)).first_block, None);
        // From a file: a relative first_block_file is the config file's neighbour.
        let toml = dir.path().join("lib.toml");
        std::fs::write(&toml, "[[cartridge]]\nbarcode = \"REL001L6\"\nslot = 4\nfirst_block_file = \"vol1.bin\"\n")
            .unwrap();
        let c = Config::from_toml_file(&toml).unwrap();
        assert_eq!(c.cartridges[0].first_block.as_deref(), Some(&b"VOL1ABC123"[..]));
        let e = Config::from_toml_file(&dir.path().join("absent.toml")).unwrap_err();
        assert!(e.message.starts_with("cannot be read"), "{e}");
        // It reaches the drives: the block is the cartridge's in the target.
        let t = crate::Target::new(c).unwrap();
        let m = t.elements[crate::ElementType::Storage.index()][3].medium.as_ref().unwrap();
        assert_eq!(m.first_block.as_deref(), Some(&b"VOL1ABC123"[..]));
    }

    #[test]
    fn toml_first_block_errors_name_the_key() {
        let cart = |extra: &str| format!("[[cartridge]]\nbarcode = \"ABC001L6\"\nslot = 1\n{extra}");
        for (extra, key, words) in [
            ("first_block_hex = \"abc\"", "cartridge[0].first_block_hex", "odd"),
            ("first_block_hex = \"0g\"", "cartridge[0].first_block_hex", "not a hex digit"),
            ("first_block_hex = \" \"", "cartridge[0].first_block_hex", "at least one byte"),
            ("first_block_hex = \"00\"\ncleaning = true", "cartridge[0].first_block_hex", "cleaning"),
            ("first_block_file = \"/nonexistent/vlib/vol1.bin\"", "cartridge[0].first_block_file", "/nonexistent"),
            ("first_block_hex = \"00\"\nfirst_block_file = \"x\"", "cartridge[0].first_block_file", "not both"),
            ("first_block = \"00\"", "first_block", "unknown field"),
        ] {
            let e = Config::from_toml(&cart(extra)).unwrap_err();
            assert_eq!(e.key, key, "{extra}: {e}");
            assert!(e.to_string().contains(words), "{extra}: {e}");
        }
        // Built in code: the same checks, by Config::validate.
        let mut c = Config::default_library();
        c.cartridges[3].first_block = Some(vec![0; MAX_FIRST_BLOCK + 1]);
        assert_eq!(c.validate().unwrap_err().key, "cartridge[3].first_block");
        c.cartridges[3].first_block = Some(vec![0; MAX_FIRST_BLOCK]);
        c.validate().unwrap();
        c.cartridges[16].first_block = Some(vec![1]);
        assert_eq!(crate::Target::new(c).unwrap_err().key, "cartridge[16].first_block");
    }

    #[test]
    fn serde_deserialize_goes_through_validation() {
        let c: Config = toml::from_str("storage_slots = 5\ndrives = 1").unwrap();
        assert_eq!((c.storage_slots, c.drive_count()), (5, 1));
        let e = toml::from_str::<Config>("robots = 0").unwrap_err();
        assert!(e.to_string().contains("robots"), "{e}");
    }

    #[test]
    fn toml_empty_is_tgt_default_layout() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.personality, Personality::Tgt);
        assert_eq!(c.addresses.robot, 1);
        assert_eq!(c.drive_count(), 4);
        assert!(c.cartridges.is_empty());
    }

    #[test]
    fn toml_errors_name_the_key() {
        let e = Config::from_toml("storage_slotz = 3").unwrap_err();
        assert_eq!(e.key, "storage_slotz", "{e}");
        let e = Config::from_toml("[timing]\nmove_mz = 3").unwrap_err();
        assert_eq!(e.key, "move_mz", "{e}");
        let e = Config::from_toml("storage_slots = \"many\"").unwrap_err();
        assert!(e.to_string().contains("storage_slots"), "{e}");
        let e = Config::from_toml("barcode_len = 7").unwrap_err();
        assert_eq!(e.key, "barcode_len");
        let e = Config::from_toml("[addresses]\nie = 1005").unwrap_err();
        assert_eq!(e.key, "addresses.ie", "{e}");
        let e = Config::from_toml("[[cartridge]]\nbarcode = \"A\"\nslot = 21").unwrap_err();
        assert_eq!(e.key, "cartridge[0].slot");
        let e = Config::from_toml("[[cartridge]]\nbarcode = \"A\"\nslot = 1\ndrive = 0").unwrap_err();
        assert_eq!(e.key, "cartridge[0]");
        let e = Config::from_toml("[[cartridge]]\nbarcode = \"A\"\nslot = 1\n[[cartridge]]\nbarcode = \"A\"\nslot = 2")
            .unwrap_err();
        assert_eq!(e.key, "cartridge[1].barcode");
        let e = Config::from_toml("[[fault]]\nkind = \"reset\"\ndevice = \"robot\"").unwrap_err();
        assert_eq!(e.key, "fault[0].device");
        let e = Config::from_toml("drives = 2\ndrive_serials = [\"a\"]").unwrap_err();
        assert_eq!(e.key, "drive_serials");
        let e = Config::from_toml("personality = \"hp\"").unwrap_err();
        assert!(e.to_string().contains("personality"), "{e}");
    }
}
