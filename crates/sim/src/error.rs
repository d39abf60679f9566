//! Errors of the simulator's configuration and control.

use std::path::PathBuf;

/// A simulator configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read simulator config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown keys; the message names the line.
    #[error("{origin}: {source}")]
    Parse {
        /// The file name, or "simulator config" for a string.
        origin: String,
        /// The parser's error, with line and column.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or contradicts another.
    #[error("{origin}: {what}: {reason}")]
    Invalid {
        /// The file name, or "simulator config" for a string.
        origin: String,
        /// Which table or key, e.g. `slave 0x10 "Heat pump"`.
        what: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
}

impl ConfigError {
    /// Names the file the configuration came from.
    pub(crate) fn in_file(self, path: &std::path::Path) -> ConfigError {
        let origin = path.display().to_string();
        match self {
            ConfigError::Parse { source, .. } => ConfigError::Parse { origin, source },
            ConfigError::Invalid { what, reason, .. } => ConfigError::Invalid {
                origin,
                what,
                reason,
            },
            other => other,
        }
    }
}

/// A control request the simulator cannot carry out.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// No simulated slave has this bus and address.
    #[error("no simulated slave at address {address:#04x} on bus {bus}")]
    NoSuchSlave {
        /// Bus id.
        bus: u8,
        /// 7-bit address.
        address: u8,
    },
    /// No simulated bus has this id.
    #[error("no simulated bus {bus}")]
    NoSuchBus {
        /// Bus id.
        bus: u8,
    },
    /// A fault rate outside 0..=1.
    #[error("{what} must lie in 0..=1, got {value}")]
    Rate {
        /// Which rate.
        what: &'static str,
        /// The value given.
        value: f64,
    },
    /// Another thread panicked while holding the simulator's state.
    #[error("simulator state poisoned by a panic in another thread")]
    Poisoned,
}
