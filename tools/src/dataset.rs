//! A labelled image folder: one subfolder per class, image files inside
//! (what `clip-edge eval` reads).

use std::path::{Path, PathBuf};

use clip_edge_runtime::frame::is_image_file;

/// Why a data folder cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A folder could not be listed.
    #[error("cannot read folder {path}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The folder has no class subfolders.
    #[error("{path}: no class subfolders (expected one folder of images per class)")]
    NoClasses {
        /// The folder.
        path: PathBuf,
    },
}

/// One class folder of the data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassFolder {
    /// The class name (the folder's name).
    pub name: String,
    /// Image files, sorted.
    pub images: Vec<PathBuf>,
}

/// Lists `data`'s class subfolders and their image files (by extension,
/// [`clip_edge_runtime::frame::IMAGE_EXTENSIONS`]), sorted by name.
pub fn scan(data: &Path) -> Result<Vec<ClassFolder>, DatasetError> {
    fn io(path: &Path) -> impl Fn(std::io::Error) -> DatasetError + '_ {
        move |source| DatasetError::Io { path: path.to_path_buf(), source }
    }
    let mut classes = Vec::new();
    for entry in std::fs::read_dir(data).map_err(io(data))? {
        let entry = entry.map_err(io(data))?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut images = Vec::new();
        for f in std::fs::read_dir(&path).map_err(io(&path))? {
            let p = f.map_err(io(&path))?.path();
            if p.is_file() && is_image_file(&p) {
                images.push(p);
            } else if p.is_file() {
                log::debug!("skipping {} (not an image file name)", p.display());
            }
        }
        images.sort();
        classes.push(ClassFolder { name, images });
    }
    classes.sort_by(|a, b| a.name.cmp(&b.name));
    if classes.is_empty() {
        return Err(DatasetError::NoClasses { path: data.to_path_buf() });
    }
    Ok(classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_class_folders_and_images_only() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(dir.path().join("cat")).expect("mkdir");
        std::fs::create_dir(dir.path().join("dog")).expect("mkdir");
        std::fs::write(dir.path().join("cat/b.PNG"), b"x").expect("write");
        std::fs::write(dir.path().join("cat/a.jpg"), b"x").expect("write");
        std::fs::write(dir.path().join("cat/notes.txt"), b"x").expect("write");
        std::fs::write(dir.path().join("README"), b"x").expect("write");
        let c = scan(dir.path()).expect("scan");
        assert_eq!(c.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["cat", "dog"]);
        assert_eq!(c[0].images.len(), 2);
        assert!(c[0].images[0].ends_with("a.jpg"));
        assert!(c[1].images.is_empty());
        let empty = tempfile::tempdir().expect("tmp");
        assert!(matches!(scan(empty.path()), Err(DatasetError::NoClasses { .. })));
        let missing = dir.path().join("missing");
        let err = scan(&missing).expect_err("missing folder");
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
