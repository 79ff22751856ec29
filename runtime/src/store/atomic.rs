//! [`write_atomic`]: the only way a store on flash is replaced.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Replaces `path` with `data` so that a crash or power cut leaves either the
/// old file or the new one: write a temporary file in the same folder, fsync
/// it, rename it over `path`, fsync the folder.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name =
        path.file_name().ok_or_else(|| Error::Usage(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
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
    Ok(())
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
