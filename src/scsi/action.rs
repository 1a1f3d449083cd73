//! The one table that turns a command's outcome (SCSI status and sense) into what rsmd does next.
//!
//! Every state machine consults [`classify`] instead of reading sense itself, so the reaction to, say, 3B/0D is
//! decided in one place. Time is in milliseconds and only suggested: callers schedule the retry on their own clock.

use super::asc::{self, Asc};
use super::command::status;
use super::sense::{Sense, SenseKey};

/// Why a command failed in a way that retrying will not fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// 3B/0D: the destination element already holds a cartridge.
    #[error("Destination element is full")]
    DestinationFull,
    /// 3B/0E: the source element is empty.
    #[error("Source element is empty")]
    SourceEmpty,
    /// 53/02: medium removal is prevented (PREVENT ALLOW, or a loaded drive that must be unloaded first).
    #[error("Medium removal is prevented")]
    RemovalPrevented,
    /// 30/03: a cleaning cartridge is in the drive.
    #[error("Cleaning cartridge installed")]
    CleaningCartridgeInstalled,
    /// 21/01: the element address does not exist (stale address map).
    #[error("Invalid element address")]
    InvalidElementAddress,
    /// 20/00 or 24/00: the device does not support the command or a field of it.
    #[error("Command or field not supported by the device")]
    Unsupported,
    /// 3A/00: no medium in the drive.
    #[error("No medium present")]
    MediumNotPresent,
    /// 3B/11, 3B/12: a magazine is missing or not accessible.
    #[error("Magazine not accessible")]
    MagazineNotAccessible,
    /// 04/03, 04/12: the device needs an operator or is offline.
    #[error("Device needs manual intervention or is offline")]
    Offline,
    /// HARDWARE ERROR: robot jam (15/01), internal failure (44/00), ...
    #[error("Hardware error (ASC/ASCQ {0:02X}h/{1:02X}h)")]
    Hardware(u8, u8),
    /// MEDIUM ERROR.
    #[error("Medium error (ASC/ASCQ {0:02X}h/{1:02X}h)")]
    Medium(u8, u8),
    /// DATA PROTECT (write protected, WORM).
    #[error("Data protect")]
    DataProtect,
    /// The device stayed busy or kept aborting past the retry budget.
    #[error("Device kept refusing the command")]
    RetriesExhausted,
    /// CHECK CONDITION without usable sense, or another combination not in the table.
    #[error("Command failed (status {status:02X}h, sense key {key:X}h, ASC/ASCQ {asc:02X}h/{ascq:02X}h)")]
    Other {
        /// SCSI status.
        status: u8,
        /// Sense key code.
        key: u8,
        /// ASC.
        asc: u8,
        /// ASCQ.
        ascq: u8,
    },
}

/// What to do after a command finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The command succeeded (GOOD, or RECOVERED ERROR).
    Done,
    /// Transient refusal (BUSY, TASK SET FULL, ABORTED COMMAND): send the same command again after the delay.
    Retry {
        /// Suggested delay in milliseconds.
        after_ms: u64,
    },
    /// The unit is becoming ready (04/01, 04/07): poll again after the delay.
    WaitReady {
        /// Suggested delay in milliseconds.
        after_ms: u64,
    },
    /// UNIT ATTENTION: the command was not executed and the cached inventory is suspect. Rescan (re-probe the
    /// address map too when `reprobe`), then send the command again if it still makes sense.
    Rescan {
        /// True after a reset or changed mode parameters: MODE SENSE 1Dh must be re-read as well.
        reprobe: bool,
    },
    /// Fail the command with this reason; the affected elements should be re-read.
    Fail(Failure),
}

/// Suggested delay before resending a command the device refused as busy.
pub const BUSY_RETRY_MS: u64 = 1_000;
/// Suggested polling interval while a unit becomes ready.
pub const BECOMING_READY_POLL_MS: u64 = 2_000;

/// Classifies a finished command from its SCSI status and its sense bytes (empty when none came back).
///
/// The table (SPC-4 Annex D, with the reactions of ../shared/reference/scsi.md):
/// | status / key | ASC/ASCQ | action |
/// |---|---|---|
/// | GOOD, CONDITION MET | – | Done |
/// | BUSY, TASK SET FULL | – | Retry |
/// | RECOVERED ERROR | any | Done |
/// | NOT READY | 04/01, 04/07 | WaitReady |
/// | NOT READY | 04/00, 04/03, 04/12 | Fail(Offline) |
/// | NOT READY | 3A/00 | Fail(MediumNotPresent) |
/// | NOT READY | 30/03 | Fail(CleaningCartridgeInstalled) |
/// | UNIT ATTENTION | 29/xx, 2A/xx | Rescan { reprobe } |
/// | UNIT ATTENTION | 28/xx and other | Rescan |
/// | ILLEGAL REQUEST | 3B/0D, 3B/0E, 53/02, 21/01, 20/00, 24/00, 26/00, 3B/11, 3B/12 | Fail(specific) |
/// | HARDWARE ERROR | any | Fail(Hardware) |
/// | MEDIUM ERROR | any | Fail(Medium) |
/// | DATA PROTECT | any | Fail(DataProtect) |
/// | ABORTED COMMAND | any | Retry |
pub fn classify(scsi_status: u8, sense: &[u8]) -> Action {
    match scsi_status {
        status::GOOD | status::CONDITION_MET => return Action::Done,
        status::BUSY | status::TASK_SET_FULL => return Action::Retry { after_ms: BUSY_RETRY_MS },
        status::CHECK_CONDITION => {}
        other => return Action::Fail(Failure::Other { status: other, key: 0, asc: 0, ascq: 0 }),
    }
    match Sense::parse(sense) {
        Ok(s) => classify_sense(&s),
        Err(_) => Action::Fail(Failure::Other { status: scsi_status, key: 0, asc: 0, ascq: 0 }),
    }
}

/// Classifies decoded sense from a CHECK CONDITION (see [`classify`]).
pub fn classify_sense(s: &Sense) -> Action {
    let Asc(a, q) = s.asc;
    match s.key {
        SenseKey::NoSense | SenseKey::RecoveredError => Action::Done,
        SenseKey::NotReady => match s.asc {
            asc::BECOMING_READY | asc::OPERATION_IN_PROGRESS => Action::WaitReady { after_ms: BECOMING_READY_POLL_MS },
            asc::MEDIUM_NOT_PRESENT | Asc(0x3A, _) => Action::Fail(Failure::MediumNotPresent),
            asc::CLEANING_CARTRIDGE_INSTALLED => Action::Fail(Failure::CleaningCartridgeInstalled),
            asc::INITIALIZING_COMMAND_REQUIRED => Action::Rescan { reprobe: false },
            Asc(0x04, _) => Action::Fail(Failure::Offline),
            _ => Action::Fail(Failure::Other { status: status::CHECK_CONDITION, key: 2, asc: a, ascq: q }),
        },
        SenseKey::UnitAttention => Action::Rescan { reprobe: a == asc::ASC_RESET || a == 0x2A },
        SenseKey::IllegalRequest => Action::Fail(match s.asc {
            asc::MEDIUM_DESTINATION_ELEMENT_FULL => Failure::DestinationFull,
            asc::MEDIUM_SOURCE_ELEMENT_EMPTY => Failure::SourceEmpty,
            asc::MEDIUM_REMOVAL_PREVENTED => Failure::RemovalPrevented,
            asc::INVALID_ELEMENT_ADDRESS => Failure::InvalidElementAddress,
            asc::INVALID_COMMAND_OPERATION_CODE | asc::INVALID_FIELD_IN_CDB | asc::INVALID_FIELD_IN_PARAMETER_LIST => {
                Failure::Unsupported
            }
            asc::MEDIUM_MAGAZINE_NOT_ACCESSIBLE | asc::MEDIUM_MAGAZINE_REMOVED => Failure::MagazineNotAccessible,
            asc::CLEANING_CARTRIDGE_INSTALLED => Failure::CleaningCartridgeInstalled,
            _ => Failure::Other { status: status::CHECK_CONDITION, key: 5, asc: a, ascq: q },
        }),
        SenseKey::HardwareError => Action::Fail(Failure::Hardware(a, q)),
        SenseKey::MediumError => Action::Fail(Failure::Medium(a, q)),
        SenseKey::DataProtect => Action::Fail(Failure::DataProtect),
        SenseKey::AbortedCommand => Action::Retry { after_ms: BUSY_RETRY_MS },
        other => Action::Fail(Failure::Other { status: status::CHECK_CONDITION, key: other.code(), asc: a, ascq: q }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(key: u8, asc: u8, ascq: u8) -> Vec<u8> {
        vec![0x70, 0, key, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0, asc, ascq, 0, 0, 0, 0]
    }

    #[test]
    fn table_rows() {
        let cases: &[(u8, u8, u8, Action)] = &[
            (0x2, 0x04, 0x01, Action::WaitReady { after_ms: BECOMING_READY_POLL_MS }),
            (0x2, 0x04, 0x03, Action::Fail(Failure::Offline)),
            (0x2, 0x04, 0x12, Action::Fail(Failure::Offline)),
            (0x2, 0x3A, 0x00, Action::Fail(Failure::MediumNotPresent)),
            (0x2, 0x30, 0x03, Action::Fail(Failure::CleaningCartridgeInstalled)),
            (0x6, 0x28, 0x00, Action::Rescan { reprobe: false }),
            (0x6, 0x29, 0x02, Action::Rescan { reprobe: true }),
            (0x6, 0x2A, 0x01, Action::Rescan { reprobe: true }),
            (0x5, 0x3B, 0x0D, Action::Fail(Failure::DestinationFull)),
            (0x5, 0x3B, 0x0E, Action::Fail(Failure::SourceEmpty)),
            (0x5, 0x53, 0x02, Action::Fail(Failure::RemovalPrevented)),
            (0x5, 0x21, 0x01, Action::Fail(Failure::InvalidElementAddress)),
            (0x5, 0x24, 0x00, Action::Fail(Failure::Unsupported)),
            (0x5, 0x20, 0x00, Action::Fail(Failure::Unsupported)),
            (0x5, 0x3B, 0x12, Action::Fail(Failure::MagazineNotAccessible)),
            (0x4, 0x15, 0x01, Action::Fail(Failure::Hardware(0x15, 0x01))),
            (0x4, 0x44, 0x00, Action::Fail(Failure::Hardware(0x44, 0x00))),
            (0x3, 0x31, 0x00, Action::Fail(Failure::Medium(0x31, 0x00))),
            (0x7, 0x27, 0x00, Action::Fail(Failure::DataProtect)),
            (0xB, 0x47, 0x00, Action::Retry { after_ms: BUSY_RETRY_MS }),
            (0x1, 0x5D, 0x00, Action::Done),
        ];
        for &(key, a, q, want) in cases {
            assert_eq!(classify(status::CHECK_CONDITION, &fixed(key, a, q)), want, "{key:X} {a:02X}/{q:02X}");
        }
    }

    #[test]
    fn status_without_sense() {
        assert_eq!(classify(status::GOOD, &[]), Action::Done);
        assert_eq!(classify(status::BUSY, &[]), Action::Retry { after_ms: BUSY_RETRY_MS });
        assert!(matches!(classify(status::CHECK_CONDITION, &[]), Action::Fail(Failure::Other { .. })));
        assert!(matches!(classify(status::RESERVATION_CONFLICT, &[]), Action::Fail(Failure::Other { .. })));
    }
}
