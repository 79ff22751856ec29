//! [`write_atomic`]: the only way a store on flash is replaced.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Replaces `path` with `data` so that a crash or power cut leaves either the
/// old file or the new one: write a temporary file in the same folder, fsync
/// it, rename it over `path`, fsync the folder. Temporary files of `path`
/// left by writers that died (a kill or a power cut mid-write) are removed
/// first, so they never pile up on flash.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let (dir, tmp) = temporary(path, "tmp")?;
    remove_stale_temporaries(&dir, path);
    log::debug!("{}: writing {} bytes through {}", path.display(), data.len(), tmp.display());
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    log::debug!("{}: written", path.display());
    Ok(())
}

/// Removes `.NAME.tmp-PID` and `.NAME.check-PID` files in `dir` whose
/// process is gone (Linux: no `/proc/PID`), and those with this process's own
/// PID: it has not created its own yet, so one there is a leftover of an
/// earlier process that had the same PID before a reboot (PIDs restart at
/// boot, and a board's boot runs the same programs in the same order). Best
/// effort: a file that cannot be listed or removed stays.
fn remove_stale_temporaries(dir: &Path, path: &Path) {
    let (Some(name), true) = (path.file_name(), Path::new("/proc/self").exists()) else { return };
    let name = name.to_string_lossy();
    let prefixes = [format!(".{name}.tmp-"), format!(".{name}.check-")];
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| prefixes.iter().find_map(|p| f.strip_prefix(p.as_str())))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// `path`'s folder and a temporary file name in it, `.NAME.WHAT-PID`.
pub(super) fn temporary(path: &Path, what: &str) -> Result<(PathBuf, PathBuf)> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name =
        path.file_name().ok_or_else(|| Error::Usage(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.{what}-{}", name.to_string_lossy(), std::process::id()));
    Ok((dir, tmp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::builder;
    use crate::store::{ElementType, PromptStore};

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("p.store");
        std::fs::write(&path, b"old").expect("old");
        builder(ElementType::F32).write(&path).expect("write");
        assert!(PromptStore::open(&path).is_ok());
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).expect("dir").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("p.store")]);
    }

    #[test]
    fn temporaries_of_dead_writers_are_removed_and_a_live_ones_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("p.store");
        // A pid above the kernel's pid_max (2^22) never runs; pid 1 always does.
        let dead = dir.path().join(".p.store.tmp-4194305");
        let live = dir.path().join(".p.store.tmp-1");
        let other = dir.path().join(".q.store.tmp-4194305");
        for f in [&dead, &live, &other] {
            std::fs::write(f, b"half a store").expect("leftover");
        }
        builder(ElementType::F32).write(&path).expect("write");
        assert!(!dead.exists(), "a dead writer's temporary file stays");
        assert!(live.exists() && other.exists(), "a live writer's or another file's temporary was removed");
    }

    #[test]
    fn a_leftover_with_this_process_pid_is_stale_not_a_blocker() {
        // After a power cut PIDs restart: the writer that died may have had this process's PID.
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("p.store");
        let own = dir.path().join(format!(".p.store.tmp-{}", std::process::id()));
        let probe = dir.path().join(".p.store.check-4194305");
        std::fs::write(&own, b"half a store").expect("leftover");
        std::fs::write(&probe, b"").expect("leftover probe");
        builder(ElementType::F32).write(&path).expect("write over a leftover of the same pid");
        assert!(PromptStore::open(&path).is_ok());
        assert!(!own.exists() && !probe.exists(), "leftovers stay");
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("p.store");
        std::fs::write(&path, b"old").expect("old");
        // A temporary file that already exists makes the write fail before the rename.
        let tmp = dir.path().join(format!(".p.store.tmp-{}", std::process::id()));
        std::fs::create_dir(&tmp).expect("blocker");
        assert!(builder(ElementType::F32).write(&path).is_err());
        assert_eq!(std::fs::read(&path).expect("read"), b"old");
        assert!(write_atomic(Path::new("/"), b"x").is_err());
    }
}
