//! Sets of request keys too large to hold in memory: a private temporary
//! SQLite database (deleted when dropped) with a bounded page cache, so that
//! counting a list of tens of millions of rows stays in constant memory.

use anyhow::{Context, Result};
use rusqlite::Connection;

use crate::wechat::RequestKey;

/// Pages SQLite keeps in memory, in KiB; the rest goes to the temporary file.
const CACHE_KIB: i64 = 16 * 1024;

/// The sets a plan needs, one table each.
#[derive(Debug, Clone, Copy)]
pub enum KeySet {
    /// Every distinct request of the input.
    Seen,
    /// Distinct requests of the rows not yet final.
    Open,
}

impl KeySet {
    fn insert_sql(self) -> &'static str {
        match self {
            KeySet::Seen => "INSERT OR IGNORE INTO seen (key) VALUES (?1)",
            KeySet::Open => "INSERT OR IGNORE INTO open (key) VALUES (?1)",
        }
    }
}

pub struct DiskKeys {
    conn: Connection,
}

impl DiskKeys {
    pub fn new() -> Result<DiskKeys> {
        // An empty path is SQLite's private temporary database on disk.
        let conn = Connection::open("").context("opening a temporary database for request keys")?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        conn.pragma_update(None, "journal_mode", "OFF")?;
        conn.pragma_update(None, "synchronous", "OFF")?;
        conn.execute_batch(
            "CREATE TABLE seen (key BLOB PRIMARY KEY) WITHOUT ROWID;
             CREATE TABLE open (key BLOB PRIMARY KEY) WITHOUT ROWID;
             BEGIN;",
        )?;
        Ok(DiskKeys { conn })
    }

    /// Adds `key` to `set`; true when it was not there yet.
    pub fn insert(&self, set: KeySet, key: &RequestKey) -> Result<bool> {
        let mut stmt = self.conn.prepare_cached(set.insert_sql())?;
        Ok(stmt.execute([&key[..]])? == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_new_once_per_set() {
        let keys = DiskKeys::new().unwrap();
        let a = [1u8; 16];
        let b = [2u8; 16];
        assert!(keys.insert(KeySet::Seen, &a).unwrap());
        assert!(!keys.insert(KeySet::Seen, &a).unwrap());
        assert!(keys.insert(KeySet::Open, &a).unwrap());
        assert!(keys.insert(KeySet::Seen, &b).unwrap());
        assert!(!keys.insert(KeySet::Open, &a).unwrap());
    }
}
