//! Per-circuit bases kept in `<data-dir>/acquisition-state.json`, so that sequence numbers
//! and energy totals continue where they were after a restart or a power cut.
//!
//! The file is rewritten only when a base changes (a slave restart, a counter wrap, a new
//! circuit) and at shutdown: a few writes a day, kind to SD cards. Each write goes to a
//! temporary file that is synced and renamed over the old one, so a power cut leaves
//! either the old or the new file, never half of one.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::circuit::Bases;
use crate::legacy::LegacyBases;

/// Name of the state file inside the data directory.
pub const FILE_NAME: &str = "acquisition-state.json";
/// Name of the legacy circuits' state file (`crate::legacy`) inside the data directory.
pub const LEGACY_FILE_NAME: &str = "acquisition-legacy.json";

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading, writing or renaming failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not what this build writes.
    #[error(
        "{path} is not a pmon acquisition state file: {source} (move it away to start afresh)"
    )]
    Format {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        source: serde_json::Error,
    },
}

/// The bases of every circuit, by circuit id.
#[derive(Debug, Default)]
pub struct BasesStore {
    path: Option<PathBuf>,
    circuits: BTreeMap<String, Bases>,
    legacy: BTreeMap<String, LegacyBases>,
}

impl BasesStore {
    /// A store that keeps nothing on disk.
    pub fn in_memory() -> BasesStore {
        BasesStore::default()
    }

    /// Opens (or starts) the state file in `dir`, creating the directory if needed.
    pub fn open(dir: &Path) -> Result<BasesStore, StoreError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(FILE_NAME);
        let circuits = read_map(&path)?;
        let legacy = read_map(&dir.join(LEGACY_FILE_NAME))?;
        Ok(BasesStore {
            path: Some(path),
            circuits,
            legacy,
        })
    }

    /// The bases saved for a circuit.
    pub fn get(&self, circuit: &str) -> Option<Bases> {
        self.circuits.get(circuit).copied()
    }

    /// Records new bases for a circuit and writes the file.
    pub fn put(&mut self, circuit: &str, bases: Bases) -> Result<(), StoreError> {
        if self.circuits.get(circuit) == Some(&bases) {
            return Ok(());
        }
        self.circuits.insert(circuit.to_string(), bases);
        match &self.path {
            Some(path) => write_map(path, &self.circuits),
            None => Ok(()),
        }
    }

    /// The bases saved for a legacy circuit.
    pub fn get_legacy(&self, circuit: &str) -> Option<LegacyBases> {
        self.legacy.get(circuit).copied()
    }

    /// Records new bases for a legacy circuit and writes its file.
    pub fn put_legacy(&mut self, circuit: &str, bases: LegacyBases) -> Result<(), StoreError> {
        if self.legacy.get(circuit) == Some(&bases) {
            return Ok(());
        }
        self.legacy.insert(circuit.to_string(), bases);
        match &self.path {
            Some(path) => write_map(&path.with_file_name(LEGACY_FILE_NAME), &self.legacy),
            None => Ok(()),
        }
    }
}

fn read_map<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<BTreeMap<String, T>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Format {
            path: path.to_path_buf(),
            source,
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(error) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source: error,
        }),
    }
}

/// Writes `map` as JSON to a temporary file, syncs it and renames it over `path`: a power
/// cut leaves the old file or the new one, never half of one.
fn write_map<T: serde::Serialize>(
    path: &Path,
    map: &BTreeMap<String, T>,
) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let json = serde_json::to_vec_pretty(map).map_err(|source| StoreError::Format {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomically(path, &json).map_err(io)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`:
/// a power cut leaves the old file or the new one, never half of one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("json.tmp");
    let mut file = fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        // Make the rename itself durable; not every filesystem allows syncing a directory.
        if let Ok(dir) = fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bases(seq_base: u64) -> Bases {
        Bases {
            seq_base,
            last_slave_seq: 3,
            import_base_mwh: 10,
            export_base_mwh: 0,
            import_counts: 5,
            export_counts: 0,
            import_raw: 5,
            export_raw: 0,
        }
    }

    #[test]
    fn bases_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = BasesStore::open(dir.path()).unwrap();
        store.put("00000001", bases(42)).unwrap();
        let reopened = BasesStore::open(dir.path()).unwrap();
        assert_eq!(reopened.get("00000001"), Some(bases(42)));
        assert_eq!(reopened.get("00000002"), None);
    }

    #[test]
    fn legacy_bases_survive_reopening_in_their_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = LegacyBases {
            next_seq: 77,
            import_mwh: 12,
            import_frac: 3_599_999_999,
            export_mwh: 0,
            export_frac: 1,
        };
        let mut store = BasesStore::open(dir.path()).unwrap();
        store.put_legacy("4c000020", legacy).unwrap();
        store.put("00000001", bases(42)).unwrap();
        let reopened = BasesStore::open(dir.path()).unwrap();
        assert_eq!(reopened.get_legacy("4c000020"), Some(legacy));
        assert_eq!(reopened.get("00000001"), Some(bases(42)));
        assert!(dir.path().join(LEGACY_FILE_NAME).exists());
    }

    #[test]
    fn a_corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let error = BasesStore::open(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("not a pmon acquisition state file"),
            "{error}"
        );
    }
}
