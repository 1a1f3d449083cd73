//! One-shot device tools: `rsmd --list-devices` and `rsmd --map-drives` (blocking SG_IO; never used by the
//! daemon's event loop). Stub: replaced by the devices branch.

use std::path::{Path, PathBuf};

/// Errors of the device tools.
#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    /// Not implemented yet.
    #[error("Not implemented")]
    NotImplemented,
}

/// Options of `--list-devices`.
#[derive(Debug, Clone)]
pub struct ListOptions {
    /// sysfs root (`/sys`).
    pub sysfs: PathBuf,
    /// /dev root.
    pub dev: PathBuf,
    /// State directory (to show persisted drive mappings).
    pub state_dir: PathBuf,
    /// Print JSON.
    pub json: bool,
}

/// `rsmd --list-devices`: returns the text to print.
pub fn list_devices(_o: &ListOptions) -> Result<String, DevicesError> {
    Err(DevicesError::NotImplemented)
}

/// `rsmd --map-drives`: returns the text to print.
pub fn map_drives(_o: &ListOptions, _changer: Option<&Path>) -> Result<String, DevicesError> {
    Err(DevicesError::NotImplemented)
}

/// Persisted drive mappings for the changer with this serial: (drive serial, element address).
pub fn load_mapping(_state_dir: &Path, _changer_serial: &str) -> Vec<(String, u16)> {
    Vec::new()
}
