//! Building the daemon from its arguments: configuration, demo mode, library sources.

use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError, DEFAULT_PATH};

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Configuration.
    #[error("Configuration error")]
    Config(#[from] ConfigError),
    /// Not implemented yet.
    #[error("Not implemented")]
    NotImplemented,
}

/// What `rsmd` was asked to do.
#[derive(Debug, Clone)]
pub struct DaemonArgs {
    /// The configuration.
    pub config: Config,
    /// Demo mode: embedded vlib.
    pub demo: bool,
    /// `--socket`.
    pub socket: Option<PathBuf>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// sysfs root.
    pub sysfs_root: PathBuf,
    /// /dev root.
    pub dev_root: PathBuf,
    /// `--config` (for SIGHUP reloads).
    pub config_path: Option<PathBuf>,
}

/// Loads `path`, or the default file when it exists, or the default configuration (discovery). Demo mode ignores
/// the default file.
pub fn load_config(path: Option<&Path>, demo: bool) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None if !demo && Path::new(DEFAULT_PATH).exists() => Config::load(Path::new(DEFAULT_PATH)),
        None => Ok(Config::default()),
    }
}

/// Runs the daemon until SIGTERM.
pub fn run(_args: DaemonArgs) -> Result<(), ServerError> {
    Err(ServerError::NotImplemented)
}
