//! The job's state: its folder (checked before anything is paid for, made
//! private when riskbatch creates it), the lock, the checkpoint store, the
//! outcome journal, the masking salt, and where access tokens are cached
//! (per user, outside every job folder).

pub mod journal;
pub mod lock;
mod open;
pub mod store;
pub mod token_cache;

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result};

use crate::exit::usage;
use crate::job::Job;
pub use open::State;

/// Bytes of a salt made by riskbatch; a shorter one is refused.
const SALT_BYTES: usize = 32;
const MIN_SALT_BYTES: usize = 16;

/// Where the state folder setting comes from, for messages that say how to change it.
fn setting(job: &Job) -> String {
    match std::env::var_os("RISKBATCH_STATE_DIR") {
        Some(_) => "RISKBATCH_STATE_DIR (set in the environment, overriding [state] dir)".into(),
        None => format!(
            "[state] dir in {} (default .riskbatch beside the job file; RISKBATCH_STATE_DIR overrides it)",
            job.file.display()
        ),
    }
}

fn unusable(job: &Job, dir: &Path, why: impl std::fmt::Display) -> anyhow::Error {
    usage(format!(
        "the state folder {} cannot be used: {why}; it is {} — point it at a folder this user \
         can write, or fix the folder's permissions",
        dir.display(),
        setting(job)
    ))
}

/// Checks that the job's state folder is a folder this process can write,
/// creating it when `create` (then the shared folder gets a `.gitignore` of
/// `*`, so a job folder kept in git never carries it). Without `create`
/// (`check`, `status`), a folder that does not exist yet is fine if it could be made.
pub fn check_folder(job: &Job, create: bool) -> Result<()> {
    let dir = &job.state_dir;
    if create {
        let made = !job.shared_state_dir.exists();
        make_private_folder(&job.shared_state_dir).map_err(|e| unusable(job, dir, e))?;
        if made {
            let _ = std::fs::write(job.shared_state_dir.join(".gitignore"), "*\n");
        }
        make_private_folder(dir).map_err(|e| unusable(job, dir, e))?;
        return probe_write(dir).map_err(|e| unusable(job, dir, e));
    }
    let mut existing = dir.as_path();
    while !existing.exists() {
        match existing.parent() {
            Some(parent) => existing = parent,
            None => return Ok(()),
        }
    }
    if !existing.is_dir() {
        return Err(unusable(
            job,
            dir,
            format!("{} is a file, not a folder", existing.display()),
        ));
    }
    if !writable(existing) {
        return Err(unusable(
            job,
            dir,
            format!("{} is not writable by this user", existing.display()),
        ));
    }
    Ok(())
}

fn make_private_folder(dir: &Path) -> std::io::Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is a file, not a folder",
            dir.display()
        )));
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn probe_write(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

#[cfg(unix)]
fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    unsafe { libc_access(path.as_ptr(), W_OK | X_OK) == 0 }
}

#[cfg(not(unix))]
fn writable(dir: &Path) -> bool {
    std::fs::metadata(dir).is_ok_and(|m| !m.permissions().readonly())
}

#[cfg(unix)]
const W_OK: i32 = 2;
#[cfg(unix)]
const X_OK: i32 = 1;

#[cfg(unix)]
unsafe extern "C" {
    #[link_name = "access"]
    fn libc_access(path: *const std::ffi::c_char, mode: i32) -> i32;
}

/// The job's masking salt: random, made once, kept in the state folder (mode
/// 0600) so that hashes stay comparable across runs of the job. A salt that is
/// there but empty, short or unreadable is an error: a new or weaker one would
/// change every masked value silently (an empty one leaves plain SHA-256,
/// which a phone number's few digits do not survive).
pub fn mask_salt(state_dir: &Path) -> Result<Vec<u8>> {
    let path = state_dir.join("mask.salt");
    let remedy = "restore it from a backup to keep masked values comparable with earlier \
                  outputs, or delete it to start a new salt (every masked value then changes)";
    match std::fs::read(&path) {
        Ok(salt) if salt.len() >= MIN_SALT_BYTES => return Ok(salt),
        Ok(salt) => {
            return Err(usage(format!(
                "the masking salt {} holds {} bytes, fewer than {MIN_SALT_BYTES}: masked values \
                 would be weak and differ from earlier outputs; {remedy}",
                path.display(),
                salt.len()
            )));
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(usage(format!(
                "the masking salt {} cannot be read ({err}); {remedy}",
                path.display()
            )));
        }
    }
    let mut salt = vec![0u8; SALT_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut salt))
        .context("reading /dev/urandom for the masking salt")?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(&salt)
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing the masking salt {}", path.display()))?;
            Ok(salt)
        }
        // Another process made it first: use theirs, with the same checks.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => mask_salt(state_dir),
        Err(err) => Err(err).with_context(|| format!("creating {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_salt_is_made_once_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let salt = mask_salt(dir.path()).unwrap();
        assert_eq!(salt.len(), SALT_BYTES);
        assert_eq!(mask_salt(dir.path()).unwrap(), salt);
        for damaged in [&b""[..], b"short"] {
            std::fs::write(dir.path().join("mask.salt"), damaged).unwrap();
            let err = format!("{:#}", mask_salt(dir.path()).unwrap_err());
            assert!(
                err.contains("mask.salt") && err.contains("restore"),
                "{err}"
            );
        }
    }
}
