//! Files that appear under their final name only when complete: written to a
//! temporary name in the same folder, fsynced, renamed, and the folder fsynced.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A file being written under a temporary name.
pub struct AtomicFile {
    target: PathBuf,
    temporary: PathBuf,
    committed: bool,
}

impl AtomicFile {
    pub fn create(target: &Path) -> Result<AtomicFile> {
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("output");
        let temporary = target.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        File::create(&temporary).with_context(|| format!("creating {}", temporary.display()))?;
        Ok(AtomicFile {
            target: target.to_path_buf(),
            temporary,
            committed: false,
        })
    }

    /// The temporary file, opened for writing.
    pub fn file(&self) -> Result<File> {
        File::options()
            .write(true)
            .truncate(true)
            .open(&self.temporary)
            .with_context(|| format!("opening {}", self.temporary.display()))
    }

    /// Syncs the temporary file and renames it over the target.
    pub fn commit(mut self) -> Result<PathBuf> {
        File::open(&self.temporary)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", self.temporary.display()))?;
        std::fs::rename(&self.temporary, &self.target).with_context(|| {
            format!(
                "renaming {} to {}",
                self.temporary.display(),
                self.target.display()
            )
        })?;
        if let Some(dir) = self.target.parent() {
            // Makes the rename itself durable.
            sync_folder(dir);
        }
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

/// Makes the entries of `dir` (a new or renamed file) survive power loss, as
/// far as the filesystem allows: not every one lets a folder be synced.
pub fn sync_folder(dir: &Path) {
    let _ = File::open(dir).and_then(|d| d.sync_all());
}

/// Writes `bytes` to `target` atomically.
pub fn write_atomically(target: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = AtomicFile::create(target)?;
    std::fs::write(&file.temporary, bytes)
        .with_context(|| format!("writing {}", file.temporary.display()))?;
    file.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("summary.json");
        {
            let file = AtomicFile::create(&target).unwrap();
            std::fs::write(&file.temporary, b"half").unwrap();
            assert!(!target.exists());
        }
        assert!(!target.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temporary file left behind"
        );
        write_atomically(&target, b"{}").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"{}");
    }
}
