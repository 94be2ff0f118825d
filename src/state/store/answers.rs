//! The answers index: which stored row holds the answer to a request, for
//! de-duplication within a run and the cache across runs.
//!
//! Its keys are hashes, so every insert lands on a random page of the index,
//! and once the index outgrows the page cache each commit rewrote about one
//! page per answer (on 10,000,000 rows, commits of 300 ms every second while
//! the calls waited). So new answers go first to `answers_recent`, a small
//! table of the same shape, and each commit moves one of [`SLICES`] slices
//! of the key space from there into `answers`: those keys have piled up for
//! `SLICES` commits, and land on a `SLICES`th of the index's pages.

use std::time::Duration;

use anyhow::Result;
use rusqlite::{OptionalExtension, params};

use super::seen::KeyFilter;
use super::{Store, to_i64};
use crate::outcome::{Answer, RiskSource, RowStatus};
use crate::wechat::RequestKey;

/// The columns of a row's [`Answer`], in the order [`answer_from`] reads them.
macro_rules! answer_columns {
    ($table:literal) => {
        concat!(
            $table,
            ".status, ",
            $table,
            ".level, ",
            $table,
            ".errcode, ",
            $table,
            ".code, ",
            $table,
            ".message, ",
            $table,
            ".request_id, ",
            $table,
            ".checked_at"
        )
    };
}
pub(super) use answer_columns;

/// The [`Answer`] in the columns from `first` on, as `answer_columns!` lists them.
pub(super) fn answer_from(r: &rusqlite::Row, first: usize) -> rusqlite::Result<Answer> {
    Ok(Answer {
        status: RowStatus::from_code(r.get(first)?).unwrap_or(RowStatus::Failed),
        level: r.get::<_, Option<i64>>(first + 1)?.map(|l| l as u8),
        errcode: r.get(first + 2)?,
        code: r.get(first + 3)?,
        message: r.get(first + 4)?,
        request_id: r.get(first + 5)?,
        checked_at: r.get(first + 6)?,
    })
}

/// The tables of the answers index, the newer answers first.
pub(super) const INDEX_TABLES: [&str; 2] = ["answers_recent", "answers"];

/// The lookup of a key in each of `INDEX_TABLES`, with its row's answer.
static INDEX_LOOKUPS: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
    INDEX_TABLES.map(|table| {
        format!(
            concat!(
                "SELECT a.run, ",
                answer_columns!("r"),
                " FROM {} a JOIN rows r ON r.run = a.run AND r.row = a.row WHERE a.key = ?1"
            ),
            table
        )
    })
});

/// How many commits it takes to move every recent answer into the index:
/// more slices touch fewer pages of the index per commit, but keep more
/// answers in `answers_recent`, whose pages every commit touches.
pub(super) const SLICES: u32 = 24;

/// The first key of slice `slice`: the first two bytes of the keys in it
/// (a key is longer, so it sorts after its own two-byte prefix).
fn slice_start(slice: u32) -> Vec<u8> {
    if slice >= SLICES {
        // After every key.
        return vec![0xFF; std::mem::size_of::<RequestKey>() + 1];
    }
    let start = u16::try_from(u64::from(slice) * 65_536 / u64::from(SLICES)).unwrap_or(u16::MAX);
    start.to_be_bytes().to_vec()
}

/// An earlier answer to an identical request.
#[derive(Debug, Clone)]
pub struct StoredAnswer {
    pub run: i64,
    pub answer: Answer,
}

impl StoredAnswer {
    /// How a row of `current_run` may reuse this answer: as a duplicate within
    /// the same run, from the cache when another run's `ok` answer is younger
    /// than `ttl` (verdicts like 61010 depend on time), or not at all.
    pub fn reuse(&self, current_run: Option<i64>, now: i64, ttl: Duration) -> Option<RiskSource> {
        if current_run == Some(self.run) {
            return Some(RiskSource::Duplicate);
        }
        let fresh =
            now - self.answer.checked_at <= i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        (fresh && !ttl.is_zero() && self.answer.status == RowStatus::Ok)
            .then_some(RiskSource::Cache)
    }
}

impl Store {
    /// The answer to an identical request, if one was recorded.
    pub fn answer(&self, key: &RequestKey) -> Result<Option<StoredAnswer>> {
        let mut seen = self.seen.borrow_mut();
        if seen.is_none() {
            *seen = Some(KeyFilter::of(self)?);
        }
        if !seen.as_ref().is_some_and(|filter| filter.may_contain(key)) {
            return Ok(None);
        }
        drop(seen);
        let stored = |r: &rusqlite::Row| {
            Ok(StoredAnswer {
                run: r.get(0)?,
                answer: answer_from(r, 1)?,
            })
        };
        if let Some(&(run, row)) = self.pending_answers.get(key) {
            let mut stmt = self.conn.prepare_cached(concat!(
                "SELECT run, ",
                answer_columns!("rows"),
                " FROM rows WHERE run = ?1 AND row = ?2"
            ))?;
            return Ok(stmt
                .query_row(params![run, to_i64(row)], stored)
                .optional()?);
        }
        // Newer answers first: a lookup per table costs less than one query
        // over both, which SQLite materialises and sorts.
        for sql in INDEX_LOOKUPS.iter() {
            let mut stmt = self.conn.prepare_cached(sql)?;
            if let Some(found) = stmt.query_row([&key[..]], stored).optional()? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Drops cached answers older than `cutoff` that no unfinished run needs.
    pub fn prune_answers(&self, cutoff: i64) -> Result<usize> {
        let mut pruned = 0;
        for table in INDEX_TABLES {
            pruned += self.conn.execute(
                &format!(
                    "DELETE FROM {table} WHERE run IN (SELECT id FROM runs WHERE completed_at IS NOT NULL) \
                     AND (SELECT checked_at FROM rows WHERE rows.run = {table}.run AND rows.row = {table}.row) < ?1"
                ),
                [cutoff],
            )?;
        }
        Ok(pruned)
    }

    /// Records that row `row` of `run` holds the answer to requests with `key`.
    pub fn put_answer(&mut self, key: &RequestKey, run: i64, row: u64) -> Result<()> {
        self.begin()?;
        self.pending_answers.insert(*key, (run, row));
        if let Some(filter) = self.seen.get_mut() {
            filter.insert(key);
        }
        Ok(())
    }

    /// Writes the open batch's answers into the recent table, in key order,
    /// and moves the next slice of recent answers into the index.
    pub(super) fn write_pending_answers(&mut self) -> Result<()> {
        if self.pending_answers.is_empty() {
            return Ok(());
        }
        let mut answers: Vec<_> = self.pending_answers.drain().collect();
        answers.sort_unstable_by_key(|a| a.0);
        let mut stmt = self.conn.prepare_cached(
            "INSERT OR REPLACE INTO answers_recent (key, run, row) VALUES (?1, ?2, ?3)",
        )?;
        for (key, (run, row)) in answers {
            stmt.execute(params![&key[..], run, to_i64(row)])?;
        }
        drop(stmt);
        self.move_recent_slice()
    }

    fn move_recent_slice(&mut self) -> Result<()> {
        let (start, end) = (slice_start(self.sweep), slice_start(self.sweep + 1));
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO answers (key, run, row) \
                 SELECT key, run, row FROM answers_recent WHERE key >= ?1 AND key < ?2",
            )?
            .execute(params![start, end])?;
        self.conn
            .prepare_cached("DELETE FROM answers_recent WHERE key >= ?1 AND key < ?2")?
            .execute(params![start, end])?;
        self.sweep = (self.sweep + 1) % SLICES;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_key_is_in_exactly_one_slice(key in any::<RequestKey>()) {
            let holding = (0..SLICES)
                .filter(|&s| slice_start(s).as_slice() <= &key[..] && &key[..] < slice_start(s + 1).as_slice())
                .count();
            prop_assert_eq!(holding, 1);
        }
    }

    #[test]
    fn the_slices_run_from_the_first_key_to_past_the_last() {
        assert!(slice_start(0).as_slice() <= &[0u8; 16][..]);
        assert!(slice_start(SLICES).as_slice() > &[0xFFu8; 16][..]);
        assert!((0..SLICES).all(|s| slice_start(s) < slice_start(s + 1)));
    }
}
