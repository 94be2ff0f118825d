//! The access token on disk, shared by every job and process of the user
//! that uses the same appid: consecutive cron ticks and parallel jobs reuse
//! one token instead of fetching (and, with `/cgi-bin/token`, invalidating)
//! their own.
//!
//! `<token dir>/<appid>-<endpoint>@<host>.json`, mode 0600 in a 0700 folder
//! outside every job folder (SPEC §2: `$RISKBATCH_TOKEN_DIR`, else
//! `$XDG_CACHE_HOME/riskbatch/tokens`, else `~/.cache/riskbatch/tokens`),
//! replaced atomically; refreshes are serialised across processes by an OS
//! lock on a sibling `.lock` file, which dies with its process.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::exit::usage;
use serde::{Deserialize, Serialize};

/// A token as stored: its value and, in Unix milliseconds, when to refresh it
/// and when WeChat said it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedToken {
    pub access_token: String,
    pub refresh_at_ms: i64,
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct TokenCache {
    path: PathBuf,
}

/// Keeps other processes from refreshing the same token until dropped.
pub struct RefreshLock {
    _file: File,
}

/// Where this user's access tokens are cached, and which setting said so.
pub fn token_dir() -> Result<(PathBuf, &'static str)> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("RISKBATCH_TOKEN_DIR") {
        return Ok((
            std::path::absolute(&dir).unwrap_or(dir),
            "RISKBATCH_TOKEN_DIR",
        ));
    }
    // The XDG spec ignores a relative XDG_CACHE_HOME.
    if let Some(cache) = var("XDG_CACHE_HOME").filter(|d| d.is_absolute()) {
        return Ok((cache.join("riskbatch").join("tokens"), "XDG_CACHE_HOME"));
    }
    if let Some(home) = var("HOME") {
        return Ok((home.join(".cache").join("riskbatch").join("tokens"), "HOME"));
    }
    Err(usage(
        "there is no folder for the access token cache: set RISKBATCH_TOKEN_DIR \
         (or XDG_CACHE_HOME, or HOME) to a folder of this user's",
    ))
}

/// Creates the token folder 0700, or makes an existing one and its files
/// private again (0700 / 0600), with a warning for each that was wider.
pub fn open_token_dir(dir: &Path, setting: &str) -> Result<()> {
    let unusable = |err: std::io::Error| {
        usage(format!(
            "the access token folder {} cannot be used: {err}; it comes from {setting} — \
             set RISKBATCH_TOKEN_DIR to a folder this user can write",
            dir.display()
        ))
    };
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(unusable)?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(dir) {
        Ok(()) => return Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(err) => return Err(unusable(err)),
    }
    make_private(dir, 0o700).map_err(unusable)?;
    for entry in std::fs::read_dir(dir).map_err(unusable)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            make_private(&entry.path(), 0o600).map_err(unusable)?;
        }
    }
    Ok(())
}

/// Narrows `path`'s mode to `mode` when others could read it.
fn make_private(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if current & !mode != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            tracing::warn!(
                "{} was open to other users (mode {current:o}); made it {mode:o}: it holds access tokens",
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Removes the token files that earlier versions kept in the state folder
/// (`<state>/tokens/`), so that no job folder holds a token; true if any.
pub fn remove_old_tokens(shared_state_dir: &Path, now_in: Option<&Path>) -> Result<bool> {
    let old = shared_state_dir.join("tokens");
    let Ok(entries) = std::fs::read_dir(&old) else {
        return Ok(false);
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(entry.path()).with_context(|| {
                format!("removing the old token file {}", entry.path().display())
            })?;
            removed += 1;
        }
    }
    let _ = std::fs::remove_dir(&old);
    tracing::warn!(
        "removed {removed} access token file(s) from {}: tokens are now cached per user{}, outside every job folder",
        old.display(),
        now_in.map_or(String::new(), |dir| format!(" in {}", dir.display()))
    );
    Ok(true)
}

impl TokenCache {
    /// The cache of `appid`'s token from `endpoint` ("stable_token" or "token") at `base_url`.
    pub fn new(token_dir: &Path, appid: &str, endpoint: &str, base_url: &str) -> TokenCache {
        let host = base_url
            .split_once("://")
            .map_or(base_url, |(_, rest)| rest)
            .trim_end_matches('/');
        let name = format!("{}-{endpoint}@{}.json", file_safe(appid), file_safe(host));
        TokenCache {
            path: token_dir.join(name),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored token, if there is a readable one.
    pub fn read(&self) -> Option<CachedToken> {
        let text = std::fs::read(&self.path).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Replaces the stored token: written to a temporary file (0600) and renamed.
    pub fn write(&self, token: &CachedToken) -> Result<()> {
        let dir = self.folder()?;
        let temp = dir.join(format!(
            ".{}.{}.tmp",
            self.path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let mut file = private_file(&temp)?;
        file.write_all(&serde_json::to_vec(token)?)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", temp.display()))?;
        std::fs::rename(&temp, &self.path)
            .with_context(|| format!("replacing {}", self.path.display()))?;
        Ok(())
    }

    /// Waits until no other process is refreshing this token.
    pub fn lock(&self) -> Result<RefreshLock> {
        self.folder()?;
        let path = self.path.with_extension("lock");
        let file = private_file_keep(&path)?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(RefreshLock { _file: file })
    }

    fn folder(&self) -> Result<&Path> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }
}

fn file_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn private_options() -> std::fs::OpenOptions {
    let mut options = File::options();
    options.write(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

fn private_file(path: &Path) -> Result<File> {
    private_options()
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

fn private_file_keep(path: &Path) -> Result<File> {
    private_options()
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_a_private_token_per_appid_endpoint_and_host() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TokenCache::new(
            dir.path(),
            "wx12/../x",
            "stable_token",
            "http://127.0.0.1:8080/",
        );
        assert_eq!(
            cache.path().file_name().unwrap().to_string_lossy(),
            "wx12_.._x-stable_token@127.0.0.1_8080.json"
        );
        assert_eq!(cache.read(), None);
        let token = CachedToken {
            access_token: "T1".into(),
            refresh_at_ms: 10,
            expires_at_ms: 20,
        };
        let _lock = cache.lock().unwrap();
        cache.write(&token).unwrap();
        assert_eq!(cache.read(), Some(token));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(cache.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(cache.path(), "not json").unwrap();
        assert_eq!(cache.read(), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_token_folder_open_to_others_is_made_private_again() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache/riskbatch/tokens");
        open_token_dir(&dir, "test").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("wx-stable_token@host.json");
        std::fs::write(&file, "{}").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        open_token_dir(&dir, "test").unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&file), 0o600);
    }

    #[test]
    fn old_token_files_in_the_state_folder_are_removed() {
        let state = tempfile::tempdir().unwrap();
        let old = state.path().join("tokens");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("wx-stable_token@h.json"), "{}").unwrap();
        std::fs::write(old.join("wx-stable_token@h.lock"), "").unwrap();
        assert!(remove_old_tokens(state.path(), Some(Path::new("/elsewhere"))).unwrap());
        assert!(!old.exists());
        assert!(!remove_old_tokens(state.path(), Some(Path::new("/elsewhere"))).unwrap());
    }
}
