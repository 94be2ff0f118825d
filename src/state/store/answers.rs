//! The answers index: which stored row holds the answer to a request, for
//! de-duplication within a run and the cache across runs.
//!
//! Its keys are hashes, so every insert lands on a random page of the index,
//! and once the index outgrows the page cache each commit rewrote about one
//! page per answer (on 10,000,000 rows, commits of 300 ms every second while
//! the calls waited). So new answers go first to `answers_fresh`, in
//! generations: each commit appends its answers, in key order, as the next
//! generation, which touches only new pages. Each batch also moves one of
//! [`SLICES`] slices of the key space, from every generation, into
//! `answers`: those keys have piled up for `SLICES` commits, and land on a
//! `SLICES`th of the index's pages. The move is made in steps while the
//! batch is open (the runner takes them between calls), and its commit
//! finishes it and writes the batch's own keys of that slice straight to
//! `answers`. A key is looked up in the generations that may still hold
//! its slice, newest first, in each only when the [`KeyFilter`]'s filter of
//! that generation says it may be there; a step moved within the open
//! batch leaves them to be found in `answers`, on the same connection.
//!
//! Before generations, new answers went to a table keyed by the request
//! alone, most of whose pages each commit rewrote: a run of 1,000,000 rows
//! wrote 1.41 GB in all (requests and result files included), against
//! 1.06 GB with generations.

use std::ops::RangeInclusive;
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::{OptionalExtension, params};

use super::seen::{Bloom, KeyFilter};
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
pub(super) const INDEX_TABLES: [&str; 2] = ["answers_fresh", "answers"];

/// A key's row and answer in one generation of `answers_fresh`.
const FRESH_LOOKUP: &str = concat!(
    "SELECT a.run, ",
    answer_columns!("r"),
    " FROM answers_fresh a JOIN rows r ON r.run = a.run AND r.row = a.row \
     WHERE a.gen = ?1 AND a.key = ?2"
);

/// A key's row and answer in `answers`.
const INDEX_LOOKUP: &str = concat!(
    "SELECT a.run, ",
    answer_columns!("r"),
    " FROM answers a JOIN rows r ON r.run = a.run AND r.row = a.row WHERE a.key = ?1"
);

/// How many commits it takes to move every fresh answer into the index:
/// more slices touch fewer pages of the index per commit, but keep more
/// generations, each with a filter in memory (about 40 KB at 40,000 answers
/// a commit), that a lookup of a fresh key may have to visit.
pub(super) const SLICES: usize = 48;

/// A batch's answers are inserted this many to a statement: a statement
/// per answer opened a cursor and ran the statement's prologue per answer.
const ROWS_PER_INSERT: usize = 64;

/// A slice moves in this many steps, each a key range of its own, so that
/// no commit holds up the calls for long: on 10,000,000 rows, a slice moved
/// at once took 95–118 ms of every commit, while the calls queued ahead
/// last about 68 ms.
pub(super) const STEPS_PER_SLICE: usize = 16;

/// The first key of step `step` of slice `slice`: the first two bytes of
/// the keys in it (a key is longer, so it sorts after its own two-byte
/// prefix). Step `STEPS_PER_SLICE` starts the next slice.
fn step_start(slice: usize, step: usize) -> Vec<u8> {
    let part = (slice * STEPS_PER_SLICE + step) as u64;
    let parts = (SLICES * STEPS_PER_SLICE) as u64;
    if part >= parts {
        // After every key.
        return vec![0xFF; std::mem::size_of::<RequestKey>() + 1];
    }
    let start = u16::try_from(part * 65_536 / parts).unwrap_or(u16::MAX);
    start.to_be_bytes().to_vec()
}

/// The slice that holds `key`: the last whose start is not after it.
pub(super) fn slice_of(key: &RequestKey) -> usize {
    let prefix = u64::from(u16::from_be_bytes([key[0], key[1]]));
    // step_start(s, 0) <= prefix  <=>  s < (prefix + 1) * SLICES / 65,536
    ((prefix + 1) * SLICES as u64).div_ceil(65_536) as usize - 1
}

/// The move of one slice of the fresh answers into the index, made in
/// [`STEPS_PER_SLICE`] steps while a batch is open, the rest at its commit.
#[derive(Debug)]
pub(super) struct SliceMove {
    slice: usize,
    /// The generations whose keys of the slice move: those before the
    /// batch's own, whose keys of the slice go straight to the index.
    generations: RangeInclusive<i64>,
    steps_done: usize,
}

impl SliceMove {
    /// The move that the commit of the open batch completes.
    pub(super) fn planned(gens: &Generations) -> SliceMove {
        let slice = Generations::slice_moved_by(gens.next);
        SliceMove {
            slice,
            generations: gens.moved_through[slice] + 1..=gens.next - 1,
            steps_done: 0,
        }
    }

    pub(super) fn is_done(&self) -> bool {
        self.steps_done >= STEPS_PER_SLICE || self.generations.is_empty()
    }
}

/// What the commit of a batch changes in the index, applied once it is
/// committed: a rolled-back batch must leave lookups as they were.
pub(super) struct AnswersWritten {
    /// The slice moved into the index, and the newest generation of it moved.
    slice: usize,
    moved_through: i64,
    /// Whether the batch had answers, written as the next generation.
    appended: bool,
    /// A filter of the generation's keys, for a store that keeps filters.
    filter: Option<Bloom>,
}

/// Moves the answers of `answers_recent`, the fresh table of stores made
/// before generations, into the index, newer answers replacing older ones.
pub(super) fn fold_recent_table(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let present: bool = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'answers_recent'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if present {
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             INSERT OR REPLACE INTO answers (key, run, row) SELECT key, run, row FROM answers_recent;
             DROP TABLE answers_recent;
             COMMIT;",
        )?;
    }
    Ok(())
}

/// Generations left span fewer than `SLICES` numbers (each moves out in
/// full within `SLICES` commits); lookups visit every number in the span.
/// A wider span is a hand-edited or damaged store.
const MAX_GENERATIONS_SPANNED: i64 = 4 * SLICES as i64;

/// Moves every fresh answer into the index, the newer generation winning,
/// so that a store whose generations are spread far apart opens with none.
fn fold_fresh_table(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "BEGIN IMMEDIATE;
         INSERT OR REPLACE INTO answers (key, run, row)
             SELECT key, run, row FROM answers_fresh ORDER BY gen;
         DELETE FROM answers_fresh;
         COMMIT;",
    )
}

/// Where `answers_fresh` stands: which generations may still hold a slice.
#[derive(Debug)]
pub(super) struct Generations {
    /// The generation the next commit appends.
    next: i64,
    /// Per slice, the newest generation whose keys in the slice have moved
    /// into `answers`.
    moved_through: [i64; SLICES],
}

impl Generations {
    /// Read from the table: after a restart every generation left may still
    /// hold every slice, until the slice's next move.
    pub(super) fn of(conn: &rusqlite::Connection) -> rusqlite::Result<Generations> {
        // Two queries: SQLite finds a lone MIN or MAX at an end of the key,
        // but scans the whole table for both at once.
        let end = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, Option<i64>>(0));
        let mut oldest = end("SELECT MIN(gen) FROM answers_fresh")?;
        let newest = end("SELECT MAX(gen) FROM answers_fresh")?;
        let newest = newest.unwrap_or(0);
        if oldest.is_some_and(|oldest| newest - oldest >= MAX_GENERATIONS_SPANNED) {
            fold_fresh_table(conn)?;
            oldest = None;
        }
        Ok(Generations {
            next: newest + 1,
            moved_through: [oldest.map_or(newest, |oldest| oldest - 1); SLICES],
        })
    }

    /// The slice that the commit of `generation` moves: numbered across
    /// processes, so that runs of a few commits each, from cron, still move
    /// every slice in turn.
    fn slice_moved_by(generation: i64) -> usize {
        (generation - 1).rem_euclid(SLICES as i64) as usize
    }

    /// The newest generation whose every slice has moved into `answers`.
    fn moved_in_full(&self) -> i64 {
        self.moved_through.iter().copied().min().unwrap_or(0)
    }

    /// The generations that some slice has not yet moved out of, oldest first.
    pub(super) fn not_moved_in_full(&self) -> std::ops::Range<i64> {
        self.moved_in_full() + 1..self.next
    }

    /// The generations that may hold keys of `slice`, newest first.
    fn holding(&self, slice: usize) -> impl Iterator<Item = i64> + use<> {
        (self.moved_through[slice] + 1..self.next).rev()
    }
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
        {
            let mut seen = self.seen.borrow_mut();
            let filter = match seen.as_mut() {
                Some(filter) => filter,
                None => seen.insert(KeyFilter::of(self)?),
            };
            if !filter.may_contain(key) {
                return Ok(None);
            }
        }
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
        let seen = self.seen.borrow();
        let filter = seen.as_ref().expect("built above");
        let mut stmt = self.conn.prepare_cached(FRESH_LOOKUP)?;
        for generation in self.gens.holding(slice_of(key)) {
            if filter.generation_may_contain(generation, key)
                && let Some(found) = stmt
                    .query_row(params![generation, &key[..]], stored)
                    .optional()?
            {
                return Ok(Some(found));
            }
        }
        let mut stmt = self.conn.prepare_cached(INDEX_LOOKUP)?;
        Ok(stmt.query_row([&key[..]], stored).optional()?)
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

    /// Takes one step of the move that the open batch's commit completes,
    /// if a batch is open: called between writes, it leaves the commit
    /// less to do.
    pub fn step_answers_move(&mut self) -> Result<()> {
        if !self.in_transaction || self.failed_commit.is_some() {
            return Ok(());
        }
        let mut moving = self.take_move();
        let stepped = self.move_step(&mut moving);
        self.moving = Some(moving);
        stepped.with_context(|| self.writing())
    }

    /// The open batch's move, as far as its steps went.
    fn take_move(&mut self) -> SliceMove {
        self.moving
            .take()
            .unwrap_or_else(|| SliceMove::planned(&self.gens))
    }

    /// Moves the keys of one step's range, from every generation of the
    /// move, into the index, in one statement: a statement per key opened a
    /// cursor per key, among one open per generation. Generation by
    /// generation, the older first so that the newer answer replaces it:
    /// the primary key gives that order, where key order took a sorter; the
    /// step's pages of the index stay in the cache from one generation to
    /// the next.
    fn move_step(&self, moving: &mut SliceMove) -> Result<()> {
        if moving.is_done() {
            return Ok(());
        }
        let (start, end) = (
            step_start(moving.slice, moving.steps_done),
            step_start(moving.slice, moving.steps_done + 1),
        );
        // An IN list, not BETWEEN: SQLite seeks the key range in each
        // generation for IN, but reads every entry of the generations for
        // BETWEEN.
        let holding = moving
            .generations
            .clone()
            .map(|g| g.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        // Prepared for each step, as benchmarked: the text changes with
        // every commit, so caching it would only save 30 prepares a commit.
        let range = format!("gen IN ({holding}) AND key >= ?1 AND key < ?2");
        self.conn.execute(
            &format!(
                "INSERT OR REPLACE INTO answers (key, run, row) \
                 SELECT key, run, row FROM answers_fresh WHERE {range} ORDER BY gen, key"
            ),
            params![start, end],
        )?;
        self.conn.execute(
            &format!("DELETE FROM answers_fresh WHERE {range}"),
            params![start, end],
        )?;
        moving.steps_done += 1;
        Ok(())
    }

    /// Completes the batch's move, then writes its answers in key order:
    /// those of the moved slice into the index, the others to
    /// `answers_fresh` as the next generation. Returns what
    /// [`answers_committed`](Self::answers_committed) needs.
    pub(super) fn write_pending_answers(&mut self) -> Result<AnswersWritten> {
        let mut moving = self.take_move();
        while !moving.is_done() {
            self.move_step(&mut moving)?;
        }
        let generation = self.gens.next;
        if self.pending_answers.is_empty() {
            return Ok(AnswersWritten {
                slice: moving.slice,
                moved_through: generation - 1,
                appended: false,
                filter: None,
            });
        }
        let mut answers: Vec<_> = self.pending_answers.drain().collect();
        answers.sort_unstable_by_key(|a| a.0);
        let (to_index, to_fresh): (Vec<_>, Vec<_>) = answers
            .iter()
            .partition(|(key, _)| slice_of(key) == moving.slice);
        self.insert_entries("answers (key, run, row)", None, &to_index)?;
        self.insert_entries(
            "answers_fresh (gen, key, run, row)",
            Some(generation),
            &to_fresh,
        )?;
        // Only a store that is looked up keeps filters.
        let filter = self
            .seen
            .get_mut()
            .is_some()
            .then(|| Bloom::of_generation(to_fresh.iter().map(|entry| &entry.0)));
        Ok(AnswersWritten {
            slice: moving.slice,
            moved_through: generation,
            appended: true,
            filter,
        })
    }

    /// Inserts `entries` into `table`, after `generation` when given,
    /// [`ROWS_PER_INSERT`] to a statement.
    fn insert_entries(
        &self,
        table: &str,
        generation: Option<i64>,
        entries: &[&(RequestKey, (i64, u64))],
    ) -> Result<()> {
        let values = if generation.is_some() {
            "(?, ?, ?, ?)"
        } else {
            "(?, ?, ?)"
        };
        for group in entries.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "INSERT OR REPLACE INTO {table} VALUES {}",
                vec![values; group.len()].join(", ")
            );
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let mut next = 1;
            for (key, (run, row)) in group {
                if let Some(generation) = generation {
                    stmt.raw_bind_parameter(next, generation)?;
                    next += 1;
                }
                stmt.raw_bind_parameter(next, &key[..])?;
                stmt.raw_bind_parameter(next + 1, run)?;
                stmt.raw_bind_parameter(next + 2, to_i64(*row))?;
                next += 3;
            }
            stmt.raw_execute()?;
        }
        Ok(())
    }

    /// What [`write_pending_answers`](Self::write_pending_answers) did, known
    /// once it is committed.
    pub(super) fn answers_committed(&mut self, written: AnswersWritten) {
        let generation = self.gens.next;
        self.gens.moved_through[written.slice] = written.moved_through;
        if written.appended {
            self.gens.next += 1;
        }
        if let (Some(filter), Some(bloom)) = (self.seen.get_mut(), written.filter) {
            filter.add_generation(generation, bloom);
        }
        if let Some(filter) = self.seen.get_mut() {
            filter.forget_generations_through(self.gens.moved_in_full());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn slice_start(slice: usize) -> Vec<u8> {
        step_start(slice, 0)
    }

    proptest! {
        #[test]
        fn every_key_is_in_exactly_one_slice_the_one_slice_of_names(key in any::<RequestKey>()) {
            let holding: Vec<_> = (0..SLICES)
                .filter(|&s| slice_start(s).as_slice() <= &key[..] && &key[..] < slice_start(s + 1).as_slice())
                .collect();
            prop_assert_eq!(holding, vec![slice_of(&key)]);
        }

        #[test]
        fn every_key_of_a_slice_is_in_exactly_one_of_its_steps(key in any::<RequestKey>()) {
            let slice = slice_of(&key);
            let holding: Vec<_> = (0..STEPS_PER_SLICE)
                .filter(|&s| step_start(slice, s).as_slice() <= &key[..] && &key[..] < step_start(slice, s + 1).as_slice())
                .collect();
            prop_assert_eq!(holding.len(), 1);
        }
    }

    #[test]
    fn the_slices_run_from_the_first_key_to_past_the_last() {
        assert!(slice_start(0).as_slice() <= &[0u8; 16][..]);
        assert!(slice_start(SLICES).as_slice() > &[0xFFu8; 16][..]);
        assert!((0..SLICES).all(|s| slice_start(s) < slice_start(s + 1)));
    }

    #[test]
    fn each_slice_begins_with_its_first_key() {
        for slice in 0..SLICES {
            let mut key = [0u8; 16];
            key[..2].copy_from_slice(&slice_start(slice));
            assert_eq!(slice_of(&key), slice);
            if slice > 0 {
                let before = u16::from_be_bytes([key[0], key[1]]) - 1;
                key[..2].copy_from_slice(&before.to_be_bytes());
                key[2..].fill(0xFF);
                assert_eq!(slice_of(&key), slice - 1);
            }
        }
    }
}
