//! The access token on disk, shared by every process of the state folder that
//! uses the same appid: consecutive cron ticks and parallel jobs reuse one
//! token instead of fetching (and, with `/cgi-bin/token`, invalidating) their own.
//!
//! `<state>/tokens/<appid>-<endpoint>@<host>.json`, mode 0600, replaced
//! atomically; refreshes are serialised across processes by an OS lock on a
//! sibling `.lock` file, which dies with its process.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
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

impl TokenCache {
    /// The cache of `appid`'s token from `endpoint` ("stable_token" or "token") at `base_url`.
    pub fn new(shared_state_dir: &Path, appid: &str, endpoint: &str, base_url: &str) -> TokenCache {
        let host = base_url
            .split_once("://")
            .map_or(base_url, |(_, rest)| rest)
            .trim_end_matches('/');
        let name = format!("{}-{endpoint}@{}.json", file_safe(appid), file_safe(host));
        TokenCache {
            path: shared_state_dir.join("tokens").join(name),
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
}
