//! A SCSI command as a transport carries it, and the SAM status byte of its answer.
//!
//! These are the T10 side of the transport seam: [`super::cdb`] builds [`Command`]s and [`super::action`]
//! classifies [`status`] values. The transport layer above re-exports them and adds what is Linux- or
//! emulator-specific (tags, host and driver status, completions); nothing here knows about it.
//!
//! # References
//! SAM-5 5.1 (the execute command procedure call: CDB, data-in/data-out buffers), 5.3 (status).

use std::time::Duration;

/// Which way data moves, and how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDirection {
    /// No data phase (TEST UNIT READY, MOVE MEDIUM, ...).
    None,
    /// Data in: the device returns at most this many bytes (the allocation length).
    FromDevice(u32),
    /// Data out: these bytes are sent to the device.
    ToDevice(Vec<u8>),
}

/// One SCSI command to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The command descriptor block (6 to 16 bytes).
    pub cdb: Vec<u8>,
    /// The data phase.
    pub direction: DataDirection,
    /// How long the device may take before the transport aborts the command. A robot move can take minutes.
    pub timeout: Duration,
}

impl Command {
    /// A command with no data phase.
    pub fn none(cdb: impl Into<Vec<u8>>, timeout: Duration) -> Self {
        Command { cdb: cdb.into(), direction: DataDirection::None, timeout }
    }

    /// A command that reads at most `alloc` bytes from the device.
    pub fn read(cdb: impl Into<Vec<u8>>, alloc: u32, timeout: Duration) -> Self {
        Command { cdb: cdb.into(), direction: DataDirection::FromDevice(alloc), timeout }
    }
}

/// SCSI status byte values (SAM-5 5.3).
pub mod status {
    /// GOOD.
    pub const GOOD: u8 = 0x00;
    /// CHECK CONDITION: sense data describes the failure.
    pub const CHECK_CONDITION: u8 = 0x02;
    /// CONDITION MET.
    pub const CONDITION_MET: u8 = 0x04;
    /// BUSY: the device cannot accept the command now.
    pub const BUSY: u8 = 0x08;
    /// RESERVATION CONFLICT.
    pub const RESERVATION_CONFLICT: u8 = 0x18;
    /// TASK SET FULL.
    pub const TASK_SET_FULL: u8 = 0x28;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_set_the_data_phase() {
        let t = Duration::from_secs(5);
        let c = Command::none([0u8; 6], t);
        assert_eq!((c.cdb.len(), c.direction, c.timeout), (6, DataDirection::None, t));
        let c = Command::read([0x12, 0, 0, 0, 96, 0], 96, t);
        assert_eq!(c.direction, DataDirection::FromDevice(96));
    }
}
