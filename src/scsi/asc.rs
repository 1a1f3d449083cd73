//! Additional sense code / qualifier pairs, grouped by the sense key they usually travel with (SPC-4 Annex D).

/// An ASC/ASCQ pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Asc(pub u8, pub u8);

impl Asc {
    /// The pair's name in SPC-4 Annex D (lower case, as in the table), for the pairs named in this module.
    ///
    /// # References
    /// SPC-4 Annex D.2 (ASC and ASCQ assignments).
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            NOT_READY_CAUSE_NOT_REPORTABLE => "logical unit not ready, cause not reportable",
            BECOMING_READY => "logical unit is in process of becoming ready",
            INITIALIZING_COMMAND_REQUIRED => "logical unit not ready, initializing command required",
            MANUAL_INTERVENTION_REQUIRED => "logical unit not ready, manual intervention required",
            OPERATION_IN_PROGRESS => "logical unit not ready, operation in progress",
            NOT_READY_OFFLINE => "logical unit not ready, offline",
            MEDIUM_NOT_PRESENT => "medium not present",
            CLEANING_CARTRIDGE_INSTALLED => "cleaning cartridge installed",
            INVALID_COMMAND_OPERATION_CODE => "invalid command operation code",
            INVALID_ELEMENT_ADDRESS => "invalid element address",
            INVALID_FIELD_IN_CDB => "invalid field in CDB",
            INVALID_FIELD_IN_PARAMETER_LIST => "invalid field in parameter list",
            MEDIUM_DESTINATION_ELEMENT_FULL => "medium destination element full",
            MEDIUM_SOURCE_ELEMENT_EMPTY => "medium source element empty",
            MEDIUM_MAGAZINE_NOT_ACCESSIBLE => "medium magazine not accessible",
            MEDIUM_MAGAZINE_REMOVED => "medium magazine removed",
            MEDIUM_REMOVAL_PREVENTED => "medium removal prevented",
            NOT_READY_TO_READY_CHANGE => "not ready to ready change, medium may have changed",
            IMPORT_EXPORT_ELEMENT_ACCESSED => "import or export element accessed",
            MODE_PARAMETERS_CHANGED => "mode parameters changed",
            MECHANICAL_POSITIONING_ERROR => "mechanical positioning error",
            INTERNAL_TARGET_FAILURE => "internal target failure",
            Asc(ASC_RESET, _) => "power on, reset, or bus device reset occurred",
            _ => return None,
        })
    }
}

impl std::fmt::Display for Asc {
    /// `04h/01h logical unit is in process of becoming ready` (the name only when known).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02X}h/{:02X}h", self.0, self.1)?;
        match self.name() {
            Some(n) => write!(f, " {n}"),
            None => Ok(()),
        }
    }
}

// NOT READY (02h)
/// 04/00: logical unit not ready, cause not reportable.
pub const NOT_READY_CAUSE_NOT_REPORTABLE: Asc = Asc(0x04, 0x00);
/// 04/01: logical unit is in process of becoming ready.
pub const BECOMING_READY: Asc = Asc(0x04, 0x01);
/// 04/02: initializing command required.
pub const INITIALIZING_COMMAND_REQUIRED: Asc = Asc(0x04, 0x02);
/// 04/03: manual intervention required.
pub const MANUAL_INTERVENTION_REQUIRED: Asc = Asc(0x04, 0x03);
/// 04/07: operation in progress.
pub const OPERATION_IN_PROGRESS: Asc = Asc(0x04, 0x07);
/// 04/12: logical unit not ready, offline.
pub const NOT_READY_OFFLINE: Asc = Asc(0x04, 0x12);
/// 3A/00: medium not present.
pub const MEDIUM_NOT_PRESENT: Asc = Asc(0x3A, 0x00);
/// 30/03: cleaning cartridge installed.
pub const CLEANING_CARTRIDGE_INSTALLED: Asc = Asc(0x30, 0x03);

// ILLEGAL REQUEST (05h)
/// 20/00: invalid command operation code.
pub const INVALID_COMMAND_OPERATION_CODE: Asc = Asc(0x20, 0x00);
/// 21/01: invalid element address.
pub const INVALID_ELEMENT_ADDRESS: Asc = Asc(0x21, 0x01);
/// 24/00: invalid field in CDB.
pub const INVALID_FIELD_IN_CDB: Asc = Asc(0x24, 0x00);
/// 26/00: invalid field in parameter list.
pub const INVALID_FIELD_IN_PARAMETER_LIST: Asc = Asc(0x26, 0x00);
/// 3B/0D: medium destination element full.
pub const MEDIUM_DESTINATION_ELEMENT_FULL: Asc = Asc(0x3B, 0x0D);
/// 3B/0E: medium source element empty.
pub const MEDIUM_SOURCE_ELEMENT_EMPTY: Asc = Asc(0x3B, 0x0E);
/// 3B/11: medium magazine not accessible.
pub const MEDIUM_MAGAZINE_NOT_ACCESSIBLE: Asc = Asc(0x3B, 0x11);
/// 3B/12: medium magazine removed.
pub const MEDIUM_MAGAZINE_REMOVED: Asc = Asc(0x3B, 0x12);
/// 53/02: medium removal prevented.
pub const MEDIUM_REMOVAL_PREVENTED: Asc = Asc(0x53, 0x02);

// UNIT ATTENTION (06h)
/// 28/00: not ready to ready change, medium may have changed.
pub const NOT_READY_TO_READY_CHANGE: Asc = Asc(0x28, 0x00);
/// 28/01: import or export element accessed.
pub const IMPORT_EXPORT_ELEMENT_ACCESSED: Asc = Asc(0x28, 0x01);
/// 29/00: power on, reset, or bus device reset occurred (29/xx are all resets).
pub const POWER_ON_RESET: Asc = Asc(0x29, 0x00);
/// 2A/01: mode parameters changed.
pub const MODE_PARAMETERS_CHANGED: Asc = Asc(0x2A, 0x01);

// HARDWARE ERROR (04h)
/// 15/01: mechanical positioning error.
pub const MECHANICAL_POSITIONING_ERROR: Asc = Asc(0x15, 0x01);
/// 44/00: internal target failure.
pub const INTERNAL_TARGET_FAILURE: Asc = Asc(0x44, 0x00);

/// ASC 29h: every qualifier is a kind of reset.
pub const ASC_RESET: u8 = 0x29;
/// ASC 5Dh: failure prediction threshold exceeded.
pub const ASC_FAILURE_PREDICTION: u8 = 0x5D;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_spc4() {
        assert_eq!(BECOMING_READY.to_string(), "04h/01h logical unit is in process of becoming ready");
        assert_eq!(Asc(0x29, 0x02).name(), Some("power on, reset, or bus device reset occurred"));
        assert_eq!(Asc(0x80, 0x01).to_string(), "80h/01h");
    }
}
