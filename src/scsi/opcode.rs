//! Operation codes of the commands rsmd sends (SPC-4, SMC-3, SSC-4).

/// TEST UNIT READY (SPC-4 6.47).
pub const TEST_UNIT_READY: u8 = 0x00;
/// REWIND (SSC-4 7.11).
pub const REWIND: u8 = 0x01;
/// REQUEST SENSE (SPC-4 6.39).
pub const REQUEST_SENSE: u8 = 0x03;
/// INITIALIZE ELEMENT STATUS (SMC-3 6.2).
pub const INITIALIZE_ELEMENT_STATUS: u8 = 0x07;
/// INQUIRY (SPC-4 6.6).
pub const INQUIRY: u8 = 0x12;
/// MODE SENSE(6) (SPC-4 6.11).
pub const MODE_SENSE_6: u8 = 0x1A;
/// LOAD UNLOAD (SSC-4 7.2).
pub const LOAD_UNLOAD: u8 = 0x1B;
/// PREVENT ALLOW MEDIUM REMOVAL (SPC-4 6.13, SMC-3 6.7).
pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1E;
/// POSITION TO ELEMENT (SMC-3 6.8).
pub const POSITION_TO_ELEMENT: u8 = 0x2B;
/// READ POSITION (SSC-4 7.9).
pub const READ_POSITION: u8 = 0x34;
/// INITIALIZE ELEMENT STATUS WITH RANGE (SMC-3 6.3).
pub const INITIALIZE_ELEMENT_STATUS_WITH_RANGE: u8 = 0x37;
/// LOG SENSE (SPC-4 6.8).
pub const LOG_SENSE: u8 = 0x4D;
/// MODE SENSE(10) (SPC-4 6.12).
pub const MODE_SENSE_10: u8 = 0x5A;
/// MOVE MEDIUM (SMC-3 6.6).
pub const MOVE_MEDIUM: u8 = 0xA5;
/// EXCHANGE MEDIUM (SMC-3 6.4).
pub const EXCHANGE_MEDIUM: u8 = 0xA6;
/// READ ELEMENT STATUS (SMC-3 6.10).
pub const READ_ELEMENT_STATUS: u8 = 0xB8;

/// VPD page: supported VPD pages (SPC-4 7.8.16).
pub const VPD_SUPPORTED_PAGES: u8 = 0x00;
/// VPD page: unit serial number (SPC-4 7.8.18).
pub const VPD_UNIT_SERIAL: u8 = 0x80;
/// VPD page: device identification (SPC-4 7.8.6).
pub const VPD_DEVICE_IDENTIFICATION: u8 = 0x83;

/// Mode page: element address assignment (SMC-3 7.3.3).
pub const MODE_PAGE_ELEMENT_ADDRESS: u8 = 0x1D;
/// Mode page: transport geometry parameters (SMC-3 7.3.5).
pub const MODE_PAGE_TRANSPORT_GEOMETRY: u8 = 0x1E;
/// Mode page: device capabilities (SMC-3 7.3.2).
pub const MODE_PAGE_DEVICE_CAPABILITIES: u8 = 0x1F;
/// Mode page code asking for every page.
pub const MODE_PAGE_ALL: u8 = 0x3F;

/// Log page: TapeAlert (SSC-4 8.2.3).
pub const LOG_PAGE_TAPE_ALERT: u8 = 0x2E;
