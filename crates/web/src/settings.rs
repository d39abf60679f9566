//! The user's settings, kept in the web service's own file (`web-settings.json` in the data
//! directory): circuit names and labels, and the calibration last sent to each circuit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::config::WebError;

/// File name inside the data directory.
pub const SETTINGS_FILE: &str = "web-settings.json";
/// Longest circuit name, in characters.
pub const MAX_NAME: usize = 64;
/// Most labels per circuit.
pub const MAX_LABELS: usize = 16;
/// Longest label, in characters.
pub const MAX_LABEL: usize = 32;

/// Calibration of one circuit, sent as `{"calibrate": {...}}` on its command topic.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Voltage gain, 0.5 ..= 2.0.
    pub voltage_gain: f64,
    /// Current gain, 0.5 ..= 2.0.
    pub current_gain: f64,
    /// Phase correction in degrees, -20 ..= 20.
    pub phase_correction_deg: f64,
}

impl Calibration {
    /// Checks the ranges; the error says which field and why.
    pub fn validate(&self) -> Result<(), String> {
        let check = |name: &str, value: f64, lo: f64, hi: f64| {
            if !value.is_finite() || value < lo || value > hi {
                Err(format!(
                    "{name} must be a number from {lo} to {hi}, not {value}"
                ))
            } else {
                Ok(())
            }
        };
        check("voltage_gain", self.voltage_gain, 0.5, 2.0)?;
        check("current_gain", self.current_gain, 0.5, 2.0)?;
        check(
            "phase_correction_deg",
            self.phase_correction_deg,
            -20.0,
            20.0,
        )
    }
}

/// What the user set for one circuit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CircuitSettings {
    /// Display name (overrides the acquisition's label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free labels (room, phase, …) for filtering.
    pub labels: Vec<String>,
    /// The calibration last sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
}

/// The settings file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SettingsFile {
    /// By circuit id.
    pub circuits: BTreeMap<String, CircuitSettings>,
}

/// The settings, loaded and saved atomically (write to a temporary file, rename).
#[derive(Debug)]
pub struct Settings {
    path: PathBuf,
    file: Mutex<SettingsFile>,
}

/// Validates a name: 1–64 characters, no control characters, trimmed.
pub fn validate_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("name must not be empty".into());
    }
    if name.chars().count() > MAX_NAME {
        return Err(format!("name is longer than {MAX_NAME} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("name must not contain control characters".into());
    }
    Ok(name.to_string())
}

/// Validates labels: at most 16, each 1–32 characters of letters, digits, `-`, `_`, `.`, space.
pub fn validate_labels(labels: &[String]) -> Result<Vec<String>, String> {
    if labels.len() > MAX_LABELS {
        return Err(format!("at most {MAX_LABELS} labels"));
    }
    let mut out = Vec::new();
    for label in labels {
        let label = label.trim();
        if label.is_empty() || label.chars().count() > MAX_LABEL {
            return Err(format!(
                "label {label:?} must have 1 to {MAX_LABEL} characters"
            ));
        }
        if !label
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '))
        {
            return Err(format!(
                "label {label:?} may hold only letters, digits, '-', '_', '.' and spaces"
            ));
        }
        if !out.iter().any(|l| l == label) {
            out.push(label.to_string());
        }
    }
    Ok(out)
}

impl Settings {
    /// Loads `web-settings.json` from `data_dir` (empty when absent).
    pub fn load(data_dir: &Path) -> Result<Settings, WebError> {
        let path = data_dir.join(SETTINGS_FILE);
        let file = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| WebError::Corrupt {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SettingsFile::default(),
            Err(source) => {
                return Err(WebError::File {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        Ok(Settings {
            path,
            file: Mutex::new(file),
        })
    }

    /// A copy of everything.
    pub fn get(&self) -> SettingsFile {
        self.file.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// Changes one circuit's settings and saves the file.
    pub fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut CircuitSettings),
    ) -> Result<CircuitSettings, WebError> {
        let mut file = self.file.lock().map_err(|_| WebError::Corrupt {
            path: self.path.display().to_string(),
            reason: "lock poisoned".into(),
        })?;
        let mut next = file.clone();
        let entry = next.circuits.entry(id.to_string()).or_default();
        change(entry);
        let result = entry.clone();
        save_json(&self.path, &next)?;
        *file = next;
        Ok(result)
    }
}

/// Writes `value` as JSON to `path` atomically.
pub fn save_json<T: Serialize>(path: &Path, value: &T) -> Result<(), WebError> {
    let err = |source| WebError::File {
        path: path.display().to_string(),
        source,
    };
    let text =
        serde_json::to_vec_pretty(value).map_err(|e| err(std::io::Error::other(e.to_string())))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
