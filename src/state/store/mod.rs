//! The checkpoint store: one SQLite database per job, under the state folder.
//!
//! It holds the runs (job name + input fingerprint), every row's outcome, the
//! chunks that are done, and the answer of every distinct request (which makes
//! de-duplication within a run and the cache across runs a lookup; see
//! `answers.rs` for how that index stays cheap to write as it grows). Rows
//! are written in batched transactions; a chunk is marked done in the same
//! transaction as its last row. What a crash takes from the transaction being
//! built is either decided again locally or, for calls, in the
//! [`journal`](crate::state::journal).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};

use crate::outcome::{RiskSource, RowOutcome, RowStatus};
use crate::wechat::RequestKey;
pub use answers::StoredAnswer;
use answers::answer_columns;
use seen::KeyFilter;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id            INTEGER PRIMARY KEY,
    run_id        TEXT NOT NULL UNIQUE,
    fingerprint   TEXT NOT NULL,
    input_path    TEXT NOT NULL,
    rows_total    INTEGER,
    chunk_size    INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    completed_at  INTEGER,
    last_activity INTEGER NOT NULL,
    calls_sent    INTEGER NOT NULL DEFAULT 0,
    retries       INTEGER NOT NULL DEFAULT 0,
    clusters      TEXT,
    lines_total   INTEGER,
    busy_us       INTEGER NOT NULL DEFAULT 0,
    timed_calls   INTEGER NOT NULL DEFAULT 0,
    calling_ms    INTEGER NOT NULL DEFAULT 0,
    pace          TEXT
);
CREATE TABLE IF NOT EXISTS verdicts (
    global_no   TEXT PRIMARY KEY,
    querykey    TEXT NOT NULL,
    risklevel   INTEGER NOT NULL,
    riskmsg     TEXT,
    risktags    TEXT,
    received_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS verdicts_by_querykey ON verdicts (querykey, received_at);
CREATE TABLE IF NOT EXISTS chunks (
    run     INTEGER NOT NULL,
    chunk   INTEGER NOT NULL,
    done_at INTEGER NOT NULL,
    PRIMARY KEY (run, chunk)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rows (
    run        INTEGER NOT NULL,
    row        INTEGER NOT NULL,
    status     INTEGER NOT NULL,
    level      INTEGER,
    source     INTEGER,
    errcode    INTEGER,
    code       INTEGER,
    message    TEXT,
    request_id TEXT,
    checked_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL,
    PRIMARY KEY (run, row)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS answers (
    key BLOB PRIMARY KEY,
    run INTEGER NOT NULL,
    row INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS answers_fresh (
    gen INTEGER NOT NULL,
    key BLOB NOT NULL,
    run INTEGER NOT NULL,
    row INTEGER NOT NULL,
    PRIMARY KEY (gen, key)
) WITHOUT ROWID;
";

/// A run as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub id: i64,
    pub run_id: String,
    pub fingerprint: String,
    pub input_path: String,
    pub rows_total: Option<u64>,
    /// Physical lines of a CSV input, the header included.
    pub lines_total: Option<u64>,
    pub chunk_size: u32,
    pub created_at: i64,
    pub completed_at: Option<i64>,
    pub last_activity: i64,
    pub calls_sent: u64,
    pub retries: u64,
}

/// A run's id: the job name and the input's fingerprint.
pub fn run_id(job: &str, fingerprint: &str) -> String {
    format!("{job}-{fingerprint}")
}

/// Counts of a run's rows by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowCounts {
    pub statuses: BTreeMap<RowStatus, u64>,
    /// Rows by risk level, 0–4 (4: the rank API's very high).
    pub levels: [u64; 5],
    pub sources: BTreeMap<RiskSource, u64>,
    pub errcodes: BTreeMap<i64, u64>,
    /// Rows with a final outcome.
    pub done: u64,
    pub last_checked_at: Option<i64>,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    in_transaction: bool,
    /// A commit that failed: its batch was rolled back, and nothing more is
    /// committed by this process — what it held is in the outcome journal,
    /// replayed once by the next invocation, so nothing is counted twice.
    failed_commit: Option<String>,
    /// The keys of the answers index, built at the first lookup.
    seen: std::cell::RefCell<Option<KeyFilter>>,
    /// Answers of the open batch, written in key order when it commits
    /// (see `answers.rs`): the index's keys are random, and a second's worth
    /// inserted sorted visits pages in order instead of at random.
    /// Filled and read for every row: foldhash, not SipHash.
    pending_answers: foldhash::HashMap<RequestKey, (i64, u64)>,
    /// Which generations of fresh answers may hold each slice of the key
    /// space (see `answers.rs`).
    gens: answers::Generations,
    /// The move of a slice into the index that the open batch's commit
    /// completes, when steps of it were taken before.
    moving: Option<answers::SliceMove>,
}

/// How often a [`Syncer`] fsyncs the committed writes.
pub const SYNC_EVERY: Duration = Duration::from_millis(200);

/// A thread with its own connection that checkpoints the WAL every
/// [`SYNC_EVERY`]: the fsyncs happen there, never while the runner commits.
pub struct Syncer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Syncer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// SQLite's page cache, in KiB: what keeps the peak memory of a run flat
/// (the rest of the store stays in the operating system's file cache).
const CACHE_KIB: i64 = 8 * 1024;
/// ... and for the passes that read the rows in order.
const SEQUENTIAL_CACHE_KIB: i64 = 2 * 1024;

/// Columns added to `runs` after its first release, for stores made before them.
const LATER_RUN_COLUMNS: [(&str, &str); 5] = [
    ("lines_total", "INTEGER"),
    ("busy_us", "INTEGER NOT NULL DEFAULT 0"),
    ("timed_calls", "INTEGER NOT NULL DEFAULT 0"),
    ("calling_ms", "INTEGER NOT NULL DEFAULT 0"),
    ("pace", "TEXT"),
];

fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    for (name, kind) in LATER_RUN_COLUMNS {
        let present: bool = conn.query_row(
            "SELECT count(*) FROM pragma_table_info('runs') WHERE name = ?1",
            [name],
            |row| row.get::<_, i64>(0).map(|n| n > 0),
        )?;
        if !present {
            conn.execute_batch(&format!("ALTER TABLE runs ADD COLUMN {name} {kind}"))?;
        }
    }
    Ok(())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens (creating if needed) the store of a job in `dir`. Every error
    /// names the file.
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the state folder {}", dir.display()))?;
        let path = dir.join("checkpoint.sqlite");
        let conn = Self::connect(&path).with_context(|| {
            format!(
                "the checkpoint store {} cannot be opened (damaged, not a riskbatch checkpoint, or not readable)",
                path.display()
            )
        })?;
        #[cfg(unix)]
        for file in [path.clone(), dir.join("checkpoint.sqlite-wal")] {
            use std::os::unix::fs::PermissionsExt;
            // It holds openids and unmasked columns.
            let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
        }
        let gens = answers::Generations::of(&conn)
            .with_context(|| format!("reading the checkpoint store {}", path.display()))?;
        Ok(Store {
            conn,
            path,
            in_transaction: false,
            failed_commit: None,
            seen: std::cell::RefCell::new(None),
            pending_answers: foldhash::HashMap::default(),
            gens,
            moving: None,
        })
    }

    fn connect(path: &Path) -> Result<Connection> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // The bundled SQLite has STAT4, which re-prepares a statement whenever a
        // bound value changes; the plans here never depend on values, and the
        // re-parse per row cost more than the lookups themselves.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        // WAL with synchronous NORMAL: a commit survives kill -9 as soon as it
        // is written and power loss once the WAL is fsynced, which a
        // checkpoint does (see `Syncer`); a commit never waits for the disk.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Checkpoints belong to the Syncer; this is only a safety net.
        conn.pragma_update(None, "wal_autocheckpoint", 50_000)?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        conn.execute_batch(SCHEMA)?;
        add_missing_columns(&conn)?;
        answers::fold_recent_table(&conn)?;
        // A damaged file can open and still fail on its first real read.
        conn.query_row("SELECT count(*) FROM runs", [], |_| Ok(()))?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    /// Opens the job's store only if it exists: reading commands never create state.
    pub fn open_existing(dir: &Path) -> Result<Option<Store>> {
        if dir.join("checkpoint.sqlite").exists() {
            Store::open(dir).map(Some).map_err(|err| {
                crate::exit::usage(format!(
                    "{err:#}; restore it from a backup, or `riskbatch run --fresh` moves it aside and starts over"
                ))
            })
        } else {
            Ok(None)
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn run_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
        Ok(RunRecord {
            id: row.get(0)?,
            run_id: row.get(1)?,
            fingerprint: row.get(2)?,
            input_path: row.get(3)?,
            rows_total: row.get::<_, Option<i64>>(4)?.map(|v| v as u64),
            chunk_size: row.get::<_, i64>(5)? as u32,
            created_at: row.get(6)?,
            completed_at: row.get(7)?,
            last_activity: row.get(8)?,
            calls_sent: row.get::<_, i64>(9)? as u64,
            retries: row.get::<_, i64>(10)? as u64,
            lines_total: row.get::<_, Option<i64>>(11)?.map(|v| v as u64),
        })
    }

    const RUN_COLUMNS: &str = "id, run_id, fingerprint, input_path, rows_total, chunk_size, created_at, \
                               completed_at, last_activity, calls_sent, retries, lines_total";

    pub fn find_run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        let sql = format!("SELECT {} FROM runs WHERE run_id = ?1", Self::RUN_COLUMNS);
        Ok(self
            .conn
            .query_row(&sql, [run_id], Self::run_from_row)
            .optional()?)
    }

    /// Unfinished runs of the job other than `run_id`, newest first.
    pub fn unfinished_runs_except(&self, run_id: &str) -> Result<Vec<RunRecord>> {
        let sql = format!(
            "SELECT {} FROM runs WHERE completed_at IS NULL AND run_id != ?1 ORDER BY last_activity DESC",
            Self::RUN_COLUMNS
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let runs = stmt
            .query_map([run_id], Self::run_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(runs)
    }

    pub fn create_run(
        &self,
        run_id: &str,
        fingerprint: &str,
        input_path: &str,
        chunk_size: u32,
        now: i64,
    ) -> Result<RunRecord> {
        self.conn.execute(
            "INSERT INTO runs (run_id, fingerprint, input_path, chunk_size, created_at, last_activity) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![run_id, fingerprint, input_path, chunk_size, now],
        )?;
        self.find_run(run_id)?
            .context("the run just created is missing")
    }

    /// Forgets a run: its rows, chunks and answers (`--fresh`).
    pub fn delete_run(&mut self, run: i64) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM rows WHERE run = ?1", [run])?;
        tx.execute("DELETE FROM chunks WHERE run = ?1", [run])?;
        for table in answers::INDEX_TABLES {
            tx.execute(&format!("DELETE FROM {table} WHERE run = ?1"), [run])?;
        }
        tx.execute("DELETE FROM runs WHERE id = ?1", [run])?;
        tx.commit()?;
        Ok(())
    }

    pub fn done_chunks(&self, run: i64) -> Result<HashSet<u64>> {
        let mut stmt = self
            .conn
            .prepare("SELECT chunk FROM chunks WHERE run = ?1")?;
        let chunks = stmt
            .query_map([run], |r| r.get::<_, i64>(0).map(|c| c as u64))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(chunks)
    }

    /// Outcomes stored for rows `first..=last` of a run, in row order.
    pub fn rows_between(&self, run: i64, first: u64, last: u64) -> Result<Vec<RowOutcome>> {
        let mut stmt = self.conn.prepare_cached(concat!(
            "SELECT row, source, attempts, ",
            answer_columns!("rows"),
            " FROM rows WHERE run = ?1 AND row BETWEEN ?2 AND ?3 ORDER BY row"
        ))?;
        let rows = stmt
            .query_map(params![run, to_i64(first), to_i64(last)], |r| {
                Ok(RowOutcome {
                    row: r.get::<_, i64>(0)? as u64,
                    source: r.get::<_, Option<i64>>(1)?.and_then(RiskSource::from_code),
                    attempts: r.get::<_, i64>(2)? as u32,
                    answer: answers::answer_from(r, 3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// The risk level stored for `row` of `run`, if it has one.
    pub fn level_of(&self, run: i64, row: u64) -> Result<Option<u8>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT level FROM rows WHERE run = ?1 AND row = ?2")?;
        let level = stmt
            .query_row(params![run, to_i64(row)], |r| r.get::<_, Option<u8>>(0))
            .optional()?;
        Ok(level.flatten())
    }

    /// Starts the batch transaction that the next writes join.
    pub fn begin(&mut self) -> Result<()> {
        if let Some(failed) = &self.failed_commit {
            anyhow::bail!("{failed}");
        }
        if !self.in_transaction {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            self.in_transaction = true;
        }
        Ok(())
    }

    /// Commits everything written since [`begin`](Self::begin): it survives a
    /// crash of this process at once, and power loss after the next sync.
    pub fn commit(&mut self) -> Result<()> {
        if let Some(failed) = &self.failed_commit {
            anyhow::bail!("{failed}");
        }
        if !self.in_transaction {
            return Ok(());
        }
        self.in_transaction = false;
        let committed = self
            .write_pending_answers()
            .and_then(|written| Ok((written, self.conn.execute_batch("COMMIT")?)));
        match committed {
            Ok((written, ())) => {
                self.answers_committed(written);
                Ok(())
            }
            Err(err) => {
                // SQLite may keep the transaction open after a failed COMMIT
                // (a full disk); committing it later along with new writes
                // counted its calls twice.
                let _ = self.conn.execute_batch("ROLLBACK");
                let message = format!(
                    "committing the checkpoint store {} failed ({err}); the finished calls are kept \
                     in the outcome journal beside it and recovered by the next run — free space \
                     or fix the folder, then run again",
                    self.path.display()
                );
                self.failed_commit = Some(message.clone());
                anyhow::bail!(message)
            }
        }
    }

    /// Commits and fsyncs everything written so far.
    pub fn sync(&mut self) -> Result<()> {
        self.commit()?;
        // A checkpoint fsyncs the WAL before copying it into the database.
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .with_context(|| format!("syncing the checkpoint store {}", self.path.display()))?;
        Ok(())
    }

    /// Starts fsyncing committed writes every [`SYNC_EVERY`] until the syncer
    /// is dropped, calling `also` each time (the outcome journal syncs there).
    pub fn syncer(&self, also: impl Fn() -> Result<()> + Send + 'static) -> Result<Syncer> {
        let conn = Connection::open(&self.path)
            .with_context(|| format!("opening the checkpoint store {}", self.path.display()))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("riskbatch-sync".into())
            .spawn(move || {
                // Said once per spell of failures, not every 200 ms.
                let mut failing = false;
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(SYNC_EVERY)
                {
                    if let Err(err) =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::debug!("checkpointing the store: {err}");
                    }
                    match also() {
                        Err(err) if !failing => {
                            tracing::warn!("{err:#}");
                            failing = true;
                        }
                        Err(_) => {}
                        Ok(()) => failing = false,
                    }
                }
            })
            .context("starting the store's sync thread")?;
        Ok(Syncer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn put_row(&mut self, run: i64, outcome: &RowOutcome) -> Result<()> {
        self.begin()?;
        self.insert_row(run, outcome)
            .with_context(|| self.writing())
    }

    /// What a failed write was doing, naming the store.
    fn writing(&self) -> String {
        format!("writing to the checkpoint store {}", self.path.display())
    }

    fn insert_row(&self, run: i64, outcome: &RowOutcome) -> Result<()> {
        let a = &outcome.answer;
        let mut stmt = self.conn.prepare_cached(
            "INSERT OR REPLACE INTO rows (run, row, status, level, source, errcode, code, message, request_id, checked_at, attempts) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        stmt.execute(params![
            run,
            to_i64(outcome.row),
            a.status as i64,
            a.level.map(i64::from),
            outcome.source.map(|s| s as i64),
            a.errcode,
            a.code,
            a.message,
            a.request_id,
            a.checked_at,
            outcome.attempts,
        ])?;
        Ok(())
    }

    pub fn mark_chunk_done(&mut self, run: i64, chunk: u64, now: i64) -> Result<()> {
        self.begin()?;
        let mut stmt = self.conn.prepare_cached(
            "INSERT OR REPLACE INTO chunks (run, chunk, done_at) VALUES (?1, ?2, ?3)",
        )?;
        stmt.execute(params![run, to_i64(chunk), now])?;
        Ok(())
    }

    pub fn add_calls(&mut self, run: i64, tally: CallTally, now: i64) -> Result<()> {
        self.begin()?;
        self.conn.execute(
            "UPDATE runs SET calls_sent = calls_sent + ?2, retries = retries + ?3, last_activity = ?4, \
             busy_us = busy_us + ?5, timed_calls = timed_calls + ?6 WHERE id = ?1",
            params![
                run,
                to_i64(tally.sent),
                to_i64(tally.retries),
                now,
                to_i64(tally.busy_us),
                to_i64(tally.timed)
            ],
        )?;
        Ok(())
    }
    pub fn set_input_count(&mut self, run: i64, rows: u64, lines: Option<u64>) -> Result<()> {
        self.begin()?;
        self.conn.execute(
            "UPDATE runs SET rows_total = ?2, lines_total = ?3 WHERE id = ?1",
            params![run, to_i64(rows), lines.map(to_i64)],
        )?;
        Ok(())
    }

    pub fn set_completed(&mut self, run: i64, now: i64) -> Result<()> {
        self.begin()?;
        self.conn.execute(
            "UPDATE runs SET completed_at = ?2, last_activity = ?2 WHERE id = ?1",
            params![run, now],
        )?;
        Ok(())
    }

    /// Keeps the clusters found when the results were written (JSON).
    pub fn set_clusters(&mut self, run: i64, clusters: &str) -> Result<()> {
        self.begin()?;
        self.conn.execute(
            "UPDATE runs SET clusters = ?2 WHERE id = ?1",
            params![run, clusters],
        )?;
        Ok(())
    }

    pub fn clusters(&self, run: i64) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT clusters FROM runs WHERE id = ?1", [run], |r| {
                r.get(0)
            })?)
    }

    pub fn run_by_id(&self, run: i64) -> Result<RunRecord> {
        let sql = format!("SELECT {} FROM runs WHERE id = ?1", Self::RUN_COLUMNS);
        Ok(self.conn.query_row(&sql, [run], Self::run_from_row)?)
    }

    /// How many rows of the run have a final outcome: `counts().done`,
    /// counted by SQLite. At the end of a run this is all that is asked, and
    /// grouping every row in Rust took about 2,700 instructions per row.
    pub fn done_count(&self, run: i64) -> Result<u64> {
        let finals: Vec<String> = RowStatus::ALL
            .iter()
            .filter(|status| status.is_final())
            .map(|status| (*status as i64).to_string())
            .collect();
        let sql = format!(
            "SELECT COUNT(*) FROM rows WHERE run = ?1 AND status IN ({})",
            finals.join(",")
        );
        Ok(self.conn.query_row(&sql, [run], |r| r.get::<_, i64>(0))? as u64)
    }

    pub fn chunks_done_count(&self, run: i64) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM chunks WHERE run = ?1", [run], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    /// When each done chunk of the run finished, by chunk number: the run's
    /// throughput over time, across invocations.
    pub fn chunk_done_times(&self, run: i64) -> Result<Vec<(u64, i64)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT chunk, done_at FROM chunks WHERE run = ?1 ORDER BY done_at")?;
        let times = stmt
            .query_map([run], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(times)
    }

    /// Lowers SQLite's page cache and drops the key filter for a sequential
    /// pass (the result files): what the calls needed is not needed again.
    pub fn shrink_cache(&mut self) -> Result<()> {
        self.conn
            .pragma_update(None, "cache_size", -SEQUENTIAL_CACHE_KIB)?;
        // Rebuilt at the next lookup, if there is one.
        self.seen.get_mut().take();
        self.pending_answers.shrink_to_fit();
        Ok(())
    }

    /// When a run of this job last completed, any input.
    pub fn last_completed_at(&self) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row("SELECT MAX(completed_at) FROM runs", [], |r| r.get(0))?)
    }

    /// Counts of the run's stored rows by status, level, source and errcode.
    pub fn counts(&self, run: i64) -> Result<RowCounts> {
        // Grouped here, not by SQLite: its GROUP BY sorts every row of the
        // run, with up to `cache_size` of memory for the sorter. For a
        // 10,000,000-row run `riskbatch status` took 11.7 s and 149 MB with
        // it, 4.7 s and 84 MB without; the groups are a few dozen.
        type Group = (i64, Option<i64>, Option<i64>, Option<i64>);
        let mut groups: HashMap<Group, (u64, i64)> = HashMap::new();
        let mut stmt = self.conn.prepare_cached(
            "SELECT status, level, source, errcode, checked_at FROM rows WHERE run = ?1",
        )?;
        let mut rows = stmt.query([run])?;
        while let Some(r) = rows.next()? {
            let group = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            let checked_at: i64 = r.get(4)?;
            let entry = groups.entry(group).or_insert((0, checked_at));
            entry.0 += 1;
            entry.1 = entry.1.max(checked_at);
        }
        let mut counts = RowCounts::default();
        for ((status, level, source, errcode), (n, last)) in groups {
            let status = RowStatus::from_code(status).unwrap_or(RowStatus::Failed);
            counts.last_checked_at = counts.last_checked_at.max(Some(last));
            *counts.statuses.entry(status).or_default() += n;
            if status.is_final() {
                counts.done += n;
                if let Some(level @ 0..=4) = level {
                    counts.levels[level as usize] += n;
                }
                if let Some(source) = source.and_then(RiskSource::from_code) {
                    *counts.sources.entry(source).or_default() += n;
                }
            }
            if let Some(errcode) = errcode.filter(|e| *e != 0) {
                *counts.errcodes.entry(errcode).or_default() += n;
            }
        }
        Ok(counts)
    }
}

mod answers;
mod pace;
mod seen;
mod verdicts;

pub use pace::{CallTally, MeasuredPace};

#[cfg(test)]
mod tests;
