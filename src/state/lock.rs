//! One process per job: an OS file lock in the job's state folder. The lock
//! dies with its process, so a killed run never leaves a stale lock behind.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::{Context, Result};

pub struct JobLock {
    _file: File,
}

/// What `try_lock` found.
pub enum Locked {
    Acquired(JobLock),
    /// Another process holds the lock; its pid if it wrote one.
    Busy(Option<u32>),
}

pub fn try_lock(state_dir: &Path) -> Result<Locked> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating the state folder {}", state_dir.display()))?;
    let path = state_dir.join("lock");
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0)?;
            file.rewind()?;
            write!(file, "{}", std::process::id())?;
            file.flush()?;
            Ok(Locked::Acquired(JobLock { _file: file }))
        }
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            Ok(Locked::Busy(text.trim().parse().ok()))
        }
        Err(TryLockError::Error(err)) => {
            Err(err).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Whether a process holds the job's lock now, and its pid, without taking it.
pub fn holder(state_dir: &Path) -> Result<Option<Option<u32>>> {
    if !state_dir.join("lock").exists() {
        return Ok(None);
    }
    match try_lock(state_dir)? {
        Locked::Acquired(_) => Ok(None),
        Locked::Busy(pid) => Ok(Some(pid)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = try_lock(dir.path()).unwrap();
        assert!(matches!(first, Locked::Acquired(_)));
        match try_lock(dir.path()).unwrap() {
            Locked::Busy(pid) => assert_eq!(pid, Some(std::process::id())),
            Locked::Acquired(_) => panic!("locked twice"),
        }
        drop(first);
        assert!(matches!(try_lock(dir.path()).unwrap(), Locked::Acquired(_)));
    }
}
