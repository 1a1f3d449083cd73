//! Fault injection: run-time faults (`Target::inject`) and their TOML form (`[[fault]]`).

use serde::Deserialize;
use std::fmt;

use crate::Device;

/// A fault injected into the emulated library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// After `commands` more commands on `device`, the next command gets UNIT ATTENTION 06/29/00.
    UnitAttentionAfter {
        /// The device.
        device: Device,
        /// Commands that still succeed normally before the unit attention is raised.
        commands: u32,
    },
    /// Commands on `device` (except INQUIRY and REQUEST SENSE) answer NOT READY 02/04/01 for `ms`
    /// virtual milliseconds from the injection time.
    NotReadyFor {
        /// The device.
        device: Device,
        /// Duration in virtual milliseconds.
        ms: u64,
    },
    /// The next `next_moves` MOVE MEDIUM / EXCHANGE MEDIUM commands fail with HARDWARE ERROR 04/15/01
    /// (after the robot time elapses); nothing moves.
    RobotJam {
        /// How many moves fail.
        next_moves: u32,
    },
    /// Drive `drive` refuses to eject: LOAD UNLOAD (unload) → 04/53/00, and a MOVE MEDIUM out of it →
    /// 04/44/00. Cleared by `Fault::Reset` of that drive.
    DriveWontUnload {
        /// Drive index.
        drive: usize,
    },
    /// The device goes away: `is_present` becomes false, its queued and future commands never complete.
    Disappear {
        /// The device.
        device: Device,
    },
    /// The device hangs: it stays present but answers nothing. Commands already queued and new ones never
    /// complete, except that a command with a timeout fails with host status "timed out" when it expires (as
    /// the kernel's SCSI error handling reports it). Cleared by `Fault::Reset` of that device (commands swallowed
    /// before stay lost).
    Hang {
        /// The device.
        device: Device,
    },
    /// Power-on/reset: the next command on the device (other than INQUIRY / REQUEST SENSE) gets
    /// UNIT ATTENTION 06/29/00. Also clears PREVENT MEDIUM REMOVAL, not-ready and won't-unload faults.
    Reset {
        /// The device.
        device: Device,
    },
    /// The operator closed the library door (also when it was not open): ACCESS returns to the elements, the
    /// robot commands work again, and the changer raises UNIT ATTENTION 06/28/00.
    DoorClosed,
    /// The operator opened the library door. Refused while the changer has PREVENT MEDIUM REMOVAL in effect (the
    /// door is locked). While it is open MOVE MEDIUM, EXCHANGE MEDIUM, POSITION TO ELEMENT, INITIALIZE ELEMENT
    /// STATUS and the changer's TEST UNIT READY answer NOT READY 02/04/83, and READ ELEMENT STATUS reports ACCESS = 0
    /// for storage, I/E and drive elements; cartridges may be moved by hand (`Target::move_by_hand`).
    /// `Fault::DoorClosed` closes it.
    DoorOpen,
    /// Drive `drive` never finishes a cleaning: a cleaning cartridge in it (now, or the next one) keeps TEST UNIT
    /// READY at 02/30/03 and its unload refused with 02/30/03. Cleared by `Fault::Reset` of that drive, which ejects
    /// the cleaning cartridge (without a completed cleaning).
    CleanerStuck {
        /// Drive index.
        drive: usize,
    },
    /// Drive `drive` raises TapeAlert flag `flag` (1..=64). The flag is cleared once a LOG SENSE of page 2Eh
    /// reads it, except flag 20 (14h, clean now), which stays until the drive is cleaned.
    TapeAlert {
        /// Drive index.
        drive: usize,
        /// TapeAlert flag number, 1..=64.
        flag: u8,
    },
    /// An operator put cartridge `barcode` into the first free I/E slot (IMPEXP set); the changer raises
    /// UNIT ATTENTION 06/28/00.
    ImportCartridge {
        /// Barcode of the imported cartridge.
        barcode: String,
    },
    /// An operator took every cartridge out of the I/E slots (an eject collected); the changer raises UNIT
    /// ATTENTION 06/28/00.
    TakeFromPorts,
}

/// Why an injected fault could not be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectError(pub String);

impl fmt::Display for InjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InjectError {}

/// Parses a device name: `changer`, `drive0`, `drive1`, ...
pub fn parse_device(s: &str) -> Option<Device> {
    if s == "changer" {
        return Some(Device::Changer);
    }
    let n = s.strip_prefix("drive")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok().map(Device::Drive)
}

/// A `[[fault]]` entry as written in TOML, e.g. `{ kind = "unit_attention", after_commands = 3,
/// device = "changer" }`. Kinds: `unit_attention` (device, after_commands), `not_ready` (device, ms),
/// `jam` (moves), `wont_unload` (drive), `disappear` (device), `hang` (device), `reset` (device), `door_closed`,
/// `door_open`, `import` (barcode), `take`, `cleaner_stuck` (drive), `tapealert` (drive, flag).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Fault kind.
    pub kind: String,
    /// Device name (`changer`, `driveN`).
    pub device: Option<String>,
    /// For `unit_attention`.
    pub after_commands: Option<u32>,
    /// For `not_ready`.
    pub ms: Option<u64>,
    /// For `jam`.
    pub moves: Option<u32>,
    /// For `wont_unload`, `cleaner_stuck`, `tapealert`.
    pub drive: Option<usize>,
    /// For `import`.
    pub barcode: Option<String>,
    /// For `tapealert`: the flag number, 1..=64.
    pub flag: Option<u8>,
}

impl FaultConfig {
    /// Converts to a `Fault`; the error names the missing or bad key.
    pub fn to_fault(&self) -> Result<Fault, (String, String)> {
        let device = || -> Result<Device, (String, String)> {
            let d = self.device.as_deref().ok_or_else(|| ("device".to_string(), "missing".to_string()))?;
            parse_device(d).ok_or_else(|| ("device".to_string(), format!("`{d}` is not `changer` or `driveN`")))
        };
        let missing = |k: &str| (k.to_string(), "missing".to_string());
        Ok(match self.kind.as_str() {
            "unit_attention" => Fault::UnitAttentionAfter {
                device: device()?,
                commands: self.after_commands.unwrap_or(0),
            },
            "not_ready" => Fault::NotReadyFor {
                device: device()?,
                ms: self.ms.ok_or_else(|| missing("ms"))?,
            },
            "jam" => Fault::RobotJam {
                next_moves: self.moves.unwrap_or(1),
            },
            "wont_unload" => Fault::DriveWontUnload {
                drive: self.drive.ok_or_else(|| missing("drive"))?,
            },
            "disappear" => Fault::Disappear { device: device()? },
            "hang" => Fault::Hang { device: device()? },
            "reset" => Fault::Reset { device: device()? },
            "door_closed" => Fault::DoorClosed,
            "door_open" => Fault::DoorOpen,
            "cleaner_stuck" => Fault::CleanerStuck {
                drive: self.drive.ok_or_else(|| missing("drive"))?,
            },
            "tapealert" => Fault::TapeAlert {
                drive: self.drive.ok_or_else(|| missing("drive"))?,
                flag: match self.flag {
                    Some(f) if (1..=64).contains(&f) => f,
                    Some(f) => return Err(("flag".to_string(), format!("{f} is not a TapeAlert flag (1..=64)"))),
                    None => return Err(missing("flag")),
                },
            },
            "import" => Fault::ImportCartridge {
                barcode: self.barcode.clone().ok_or_else(|| missing("barcode"))?,
            },
            "take" => Fault::TakeFromPorts,
            other => {
                return Err((
                    "kind".to_string(),
                    format!("unknown fault kind `{other}` (expected unit_attention, not_ready, jam, wont_unload, disappear, hang, reset, door_closed, door_open, import, take, cleaner_stuck, tapealert)"),
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names() {
        assert_eq!(parse_device("changer"), Some(Device::Changer));
        assert_eq!(parse_device("drive12"), Some(Device::Drive(12)));
        assert_eq!(parse_device("drive"), None);
        assert_eq!(parse_device("drive-1"), None);
        assert_eq!(parse_device("robot"), None);
    }

    #[test]
    fn fault_config_conversion() {
        let fc = FaultConfig {
            kind: "not_ready".into(),
            device: Some("drive1".into()),
            after_commands: None,
            ms: Some(5000),
            moves: None,
            drive: None,
            barcode: None,
            flag: None,
        };
        assert_eq!(fc.to_fault(), Ok(Fault::NotReadyFor { device: Device::Drive(1), ms: 5000 }));
        let bad = FaultConfig { ms: None, ..fc.clone() };
        assert_eq!(bad.to_fault().unwrap_err().0, "ms");
        let bad = FaultConfig { kind: "explode".into(), ..fc.clone() };
        assert_eq!(bad.to_fault().unwrap_err().0, "kind");
        let kind = |k: &str| FaultConfig { kind: k.into(), ..fc.clone() };
        assert_eq!(kind("door_open").to_fault(), Ok(Fault::DoorOpen));
        assert_eq!(kind("door_closed").to_fault(), Ok(Fault::DoorClosed));
        assert_eq!(kind("cleaner_stuck").to_fault().unwrap_err().0, "drive");
        let stuck = FaultConfig { drive: Some(2), ..kind("cleaner_stuck") };
        assert_eq!(stuck.to_fault(), Ok(Fault::CleanerStuck { drive: 2 }));
        let alert = FaultConfig { drive: Some(1), flag: Some(4), ..kind("tapealert") };
        assert_eq!(alert.to_fault(), Ok(Fault::TapeAlert { drive: 1, flag: 4 }));
        assert_eq!(FaultConfig { flag: None, ..alert.clone() }.to_fault().unwrap_err().0, "flag");
        assert_eq!(FaultConfig { flag: Some(0), ..alert.clone() }.to_fault().unwrap_err().0, "flag");
        assert_eq!(FaultConfig { flag: Some(65), ..alert.clone() }.to_fault().unwrap_err().0, "flag");
        assert_eq!(FaultConfig { drive: None, ..alert }.to_fault().unwrap_err().0, "drive");
    }
}
