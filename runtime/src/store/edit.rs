//! Edits of an existing store: read, change and write back atomically while
//! holding the store's `NAME.lock` flock, so that concurrent editors never
//! lose each other's changes and a failed edit writes nothing.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::atomic::write_atomic;
use super::builder::StoreBuilder;
use super::reader::PromptStore;
use crate::error::{Error, Result};

/// Reads the store at `path`, lets `edit` change it, and writes it back
/// atomically, holding an exclusive lock on `PATH.lock` throughout, so that
/// concurrent editors (two enrolments, a host tool and the device) never
/// lose each other's changes. When `edit` fails nothing is written.
pub fn update<T>(path: &Path, edit: impl FnOnce(&mut StoreBuilder) -> Result<T>) -> Result<T> {
    edit_locked(path, |_, b| edit(b)).map(|(out, _)| out)
}

/// [`update`] with the store as read (for checks before editing); also
/// returns the length of the file written.
fn edit_locked<T>(
    path: &Path,
    edit: impl FnOnce(&PromptStore, &mut StoreBuilder) -> Result<T>,
) -> Result<(T, u64)> {
    let _lock = lock(path)?;
    let store = PromptStore::open(path)?;
    let mut builder = store.to_builder();
    let out = edit(&store, &mut builder)?;
    let bytes = builder.to_bytes()?;
    write_atomic(path, &bytes)?;
    Ok((out, bytes.len() as u64))
}

/// An exclusive lock on `PATH.lock`, released when dropped. Every writer of
/// an existing store takes it; readers need none (writes are atomic renames).
pub fn lock(path: &Path) -> Result<std::fs::File> {
    let (file, lock_path) = open_lock_file(path)?;
    file.lock().map_err(|e| Error::io(&lock_path, e))?;
    Ok(file)
}

fn open_lock_file(path: &Path) -> Result<(std::fs::File, PathBuf)> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(&lock_path, e))?;
    Ok((file, lock_path))
}

/// Checks that the store at `path` can be edited where it lies: its lock
/// file opens for writing and its folder takes a temporary file as
/// [`write_atomic`] writes one. A read-only mount fails here (`/opt` or
/// `/usr` under systemd's `ProtectSystem=strict`), at start-up rather than at
/// the first enrolment. Takes no lock; creates at most the empty lock file.
pub fn check_editable(path: &Path) -> Result<()> {
    open_lock_file(path)?;
    let (_, probe) = super::atomic::temporary(path, "check")?;
    // Not create_new: a probe left by a process that had this PID before a power cut is no obstacle.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
        .map_err(|e| Error::io(&probe, e))?;
    std::fs::remove_file(&probe).map_err(|e| Error::io(&probe, e))
}

/// What [`enroll`] stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enrolled {
    /// The class.
    pub class: String,
    /// Shots added.
    pub added: usize,
    /// Older shots of the class replaced because it was at its per-class cap.
    pub replaced: usize,
    /// Whether the class was created (image-only) by this enrolment.
    pub new_class: bool,
    /// Shots the class holds now.
    pub class_shots: usize,
    /// Shots the store holds now.
    pub store_shots: usize,
    /// Size of the store file after the write, in bytes.
    pub file_len: u64,
}

impl fmt::Display for Enrolled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} shot(s) of '{}'", self.added, self.class)?;
        if self.new_class {
            f.write_str(" (new image-only class)")?;
        }
        if self.replaced > 0 {
            write!(f, ", {} oldest replaced", self.replaced)?;
        }
        write!(
            f,
            "; the class holds {}, the store {} shots, {} bytes",
            self.class_shots, self.store_shots, self.file_len
        )
    }
}

/// Adds `embeddings` as shots of `class` to the store at `path`, under the
/// store's lock, in one atomic write: either every shot is stored or, on any
/// error (another model's store, a background label, the store's cap), the
/// file is left exactly as it was.
pub fn enroll(
    path: &Path,
    fingerprint: &[u8; 32],
    dim: usize,
    class: &str,
    embeddings: &[&[f32]],
    captured_at_ms: u64,
) -> Result<Enrolled> {
    if embeddings.is_empty() {
        return Err(Error::Usage(format!("no frames to enrol for '{class}'")));
    }
    let (mut out, file_len) = edit_locked(path, |store, b| {
        store.check_model(fingerprint, dim)?;
        let mut out = Enrolled {
            class: class.to_string(),
            added: 0,
            replaced: 0,
            new_class: false,
            class_shots: 0,
            store_shots: 0,
            file_len: 0,
        };
        for e in embeddings {
            let added = b
                .add_shot(class, e, captured_at_ms)
                .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
            out.added += 1;
            out.new_class |= added.new_class;
            out.replaced += usize::from(added.replaced_ms.is_some());
            out.class_shots = b.count_shots(added.entry);
        }
        out.store_shots = b.shots.len();
        Ok(out)
    })?;
    out.file_len = file_len;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::builder;
    use crate::store::ElementType;

    #[test]
    fn update_locks_so_concurrent_enrolments_keep_every_shot() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("p.store");
        builder(ElementType::F16).write(&path).expect("write");
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let path = &path;
                scope.spawn(move || {
                    for i in 0..5u64 {
                        update(path, |b| {
                            b.add_shot(&format!("class{t}"), &[1.0, t as f32, i as f32, 1.0], i)
                        })
                        .expect("update");
                    }
                });
            }
        });
        let s = PromptStore::open(&path).expect("valid");
        assert_eq!(s.shots().len(), 20);
        assert_eq!(s.len(), 7);
    }

    #[test]
    fn the_editable_check_passes_over_a_probe_left_by_a_process_with_this_pid() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("p.store");
        builder(ElementType::F32).write(&path).expect("write");
        let probe = dir.path().join(format!(".p.store.check-{}", std::process::id()));
        std::fs::write(&probe, b"").expect("leftover probe");
        check_editable(&path).expect("a leftover probe is no obstacle");
        assert!(!probe.exists());
    }

    #[test]
    fn failed_edit_leaves_the_store_unchanged() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("p.store");
        builder(ElementType::F32).write(&path).expect("write");
        let before = std::fs::read(&path).expect("read");
        let err = update(&path, |b| {
            b.add_shot("dog", &[0.0, 1.0, 0.0, 0.0], 1)?;
            b.add_shot("nothing", &[0.0, 1.0, 0.0, 0.0], 2)
        })
        .expect_err("background");
        assert_eq!(err.kind(), crate::ErrorKind::Usage);
        assert_eq!(std::fs::read(&path).expect("read"), before);
        std::fs::write(&path, &before[..100]).expect("truncate");
        let err = update(&path, |b| b.add_shot("dog", &[0.0, 1.0, 0.0, 0.0], 1)).expect_err("corrupt");
        assert_eq!(err.kind(), crate::ErrorKind::Store);
        assert_eq!(std::fs::read(&path).expect("read").len(), 100);
    }

    #[test]
    fn enroll_reports_what_it_stored_and_refuses_another_model() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("p.store");
        builder(ElementType::F32).shot_caps(2, 8).expect("caps").write(&path).expect("write");
        let rows: [&[f32]; 3] = [&[0.0, 1.0, 0.0, 0.0], &[0.0, 1.0, 1.0, 0.0], &[0.0, 0.0, 1.0, 0.0]];
        let done = enroll(&path, &[7; 32], 4, "van", &rows, 42).expect("enrol");
        assert_eq!((done.added, done.replaced, done.new_class), (3, 1, true));
        assert_eq!((done.class_shots, done.store_shots), (2, 2));
        assert_eq!(done.file_len, std::fs::metadata(&path).expect("meta").len());
        assert!(done.to_string().starts_with("3 shot(s) of 'van' (new image-only class), 1 oldest replaced"));
        let before = std::fs::read(&path).expect("read");
        let err = enroll(&path, &[8; 32], 4, "van", &rows, 43).expect_err("model");
        assert_eq!(err.kind(), crate::ErrorKind::Store);
        assert!(enroll(&path, &[7; 32], 4, "van", &[], 43).is_err());
        assert_eq!(std::fs::read(&path).expect("read"), before);
    }
}
