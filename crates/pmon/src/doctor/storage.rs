//! Can pmon keep its state? Create, write, fsync and remove a file in the data directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::system::System;
use super::{fixes, Check, Level};

/// Checks that `dir` exists or can be created, and that a file in it can be written and
/// made durable (fsync of the file and of the directory).
pub fn check(dir: &Path, system: &System) -> Check {
    let shown = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let name = "data directory".to_string();
    let fail = |what: &str, error: &std::io::Error| {
        let mut fix = fixes::DATA_DIR.to_string();
        match error.kind() {
            std::io::ErrorKind::PermissionDenied => {
                fix = format!(
                    "This user may not write there. {fix} Who owns it: `ls -ld {}`.",
                    shown.display()
                )
            }
            std::io::ErrorKind::ReadOnlyFilesystem => {
                fix = format!("The file system is mounted read-only. {fix}")
            }
            std::io::ErrorKind::StorageFull => {
                fix = format!("The disk is full: free some space (`df -h`). {fix}")
            }
            std::io::ErrorKind::NotADirectory | std::io::ErrorKind::AlreadyExists => {
                fix = format!("A file stands where a directory should be. {fix}")
            }
            _ => {}
        }
        Check::new(
            name.clone(),
            Level::Fail,
            format!("{}: cannot {what}: {error}", shown.display()),
        )
        .with_fix(fix)
    };
    let existed = dir.is_dir();
    if let Err(error) = std::fs::create_dir_all(dir) {
        return fail("create it", &error);
    }
    let probe = dir.join(format!(".pmon-doctor-{}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)?;
        file.write_all(b"pmon doctor write test\n")?;
        file.sync_all()?;
        drop(file);
        std::fs::remove_file(&probe)?;
        // The directory entry's removal, durable too (as the services rename state files).
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&probe);
        return fail("write and fsync a file in it", &error);
    }
    let created = if existed { "" } else { " (created it)" };
    let mut check = Check::new(
        name,
        Level::Ok,
        format!(
            "{} is writable: a test file was created, fsynced and removed{created}",
            shown.display()
        ),
    );
    if let Some(fs) = ram_file_system(&shown, system) {
        check.level = Level::Warn;
        check.summary = format!(
            "{} is writable but lies on {fs}: its contents are lost at every reboot",
            shown.display()
        );
        check.fix = Some(fixes::TMPFS.to_string());
    }
    check
}

/// The type of the file system holding `dir`, when it is one that lives in RAM.
fn ram_file_system(dir: &Path, system: &System) -> Option<String> {
    let dir: PathBuf = std::fs::canonicalize(dir).ok()?;
    let mounts = std::fs::read_to_string(system.path("/proc/mounts")).ok()?;
    let (_, fs_type) = mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _device = fields.next()?;
            let mount_point = fields.next()?.replace("\\040", " ");
            let fs_type = fields.next()?;
            dir.starts_with(&mount_point)
                .then(|| (mount_point.len(), fs_type.to_string()))
        })
        .max_by_key(|(len, _)| *len)?;
    matches!(fs_type.as_str(), "tmpfs" | "ramfs").then_some(fs_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_directory_is_ok_and_left_clean() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let check = check(&data, &System::at(dir.path()));
        assert_eq!(check.level, Level::Ok, "{check:?}");
        assert!(check.summary.contains("created it"), "{}", check.summary);
        assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);
    }

    #[test]
    fn a_file_in_the_way_fails_with_a_fix() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let check = check(&file.join("data"), &System::default());
        assert_eq!(check.level, Level::Fail);
        assert!(
            check.summary.contains("cannot create it"),
            "{}",
            check.summary
        );
        assert!(check.fix.unwrap().contains("--data-dir"));
    }

    #[test]
    fn a_directory_in_ram_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let canonical = std::fs::canonicalize(&data).unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("proc")).unwrap();
        std::fs::write(
            root.path().join("proc/mounts"),
            format!(
                "/dev/root / ext4 rw 0 0\ntmpfs {} tmpfs rw 0 0\n",
                canonical.display()
            ),
        )
        .unwrap();
        let check = check(&data, &System::at(root.path()));
        assert_eq!(check.level, Level::Warn, "{check:?}");
        assert!(check.summary.contains("tmpfs"));
    }
}
