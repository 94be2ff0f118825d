//! The outcome journal: what every call cost and answered, appended by the
//! call itself before its concurrency slot is given back.
//!
//! A `kill -9` may only cost the calls in flight, so a call's outcome must be
//! on disk before another call takes its slot. Committing the checkpoint
//! store that often slowed every call down by a commit; a line in this file is
//! enough (one `write`, shared by the calls that finish together, survives
//! the process at once, like a store commit without fsync), and the runner
//! commits the store in large batches.
//! The journal is split in generations: the runner seals the current file
//! before each commit and deletes a sealed file once every call written to it
//! is committed. Whatever is left when a run starts is replayed into the store
//! first ([`replay`]); a torn last line is a call that was in flight.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::outcome::{Answer, RiskSource, RowOutcome, RowStatus};
use crate::state::store::Store;
use crate::wechat::RequestKey;

/// One finished call: the outcome of the row it was made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub outcome: RowOutcome,
    /// The request's answer, reusable by identical requests.
    pub key: Option<RequestKey>,
    /// Requests this call sent (its retries included).
    pub requests: u32,
}

/// The journal of one run, shared by all its calls.
pub struct Journal {
    dir: PathBuf,
    run: i64,
    state: Mutex<State>,
}

struct State {
    current: Generation,
    /// Lines queued for `current` and not yet written.
    pending: Vec<u8>,
    /// Records queued and records written, over all generations.
    queued: u64,
    flushed: u64,
    /// A write that failed; every later one fails with it.
    failed: Option<String>,
    /// Sealed generations written since the last [`Journal::sync`], and
    /// whether a generation file was created since then.
    unsynced: Vec<File>,
    created: bool,
}

struct Generation {
    number: u64,
    file: File,
    /// Records queued for this generation.
    written: u64,
}

/// A queued record: written once [`Journal::flush_through`] returns for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    sequence: u64,
    pub generation: u64,
}

/// A generation closed to new records, deleted once `written` records are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    pub number: u64,
    pub written: u64,
}

/// Borrows the record's text when written (a line is written for every
/// call); owns it when read back.
#[derive(Serialize, Deserialize)]
struct Line<'a> {
    row: u64,
    status: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errcode: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<Cow<'a, str>>,
    checked_at: i64,
    attempts: u32,
    requests: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

impl Line<'_> {
    fn of(record: &CallRecord) -> Line<'_> {
        let o = &record.outcome;
        let a = &o.answer;
        Line {
            row: o.row,
            status: a.status as i64,
            level: a.level,
            source: o.source.map(|s| s as i64),
            errcode: a.errcode,
            code: a.code,
            message: a.message.as_deref().map(Cow::Borrowed),
            request_id: a.request_id.as_deref().map(Cow::Borrowed),
            checked_at: a.checked_at,
            attempts: o.attempts,
            requests: record.requests,
            key: record.key.map(|k| hex(&k)),
        }
    }

    fn record(self) -> Option<CallRecord> {
        let key = match self.key {
            Some(text) => Some(unhex(&text)?),
            None => None,
        };
        let source = match self.source {
            Some(code) => Some(RiskSource::from_code(code)?),
            None => None,
        };
        Some(CallRecord {
            outcome: RowOutcome {
                row: self.row,
                answer: Answer {
                    status: RowStatus::from_code(self.status)?,
                    level: self.level,
                    errcode: self.errcode,
                    code: self.code,
                    message: self.message.map(Cow::into_owned),
                    request_id: self.request_id.map(Cow::into_owned),
                    checked_at: self.checked_at,
                },
                source,
                attempts: self.attempts,
            },
            key,
            requests: self.requests,
        })
    }
}

/// Runs once per call, so without an allocation per byte.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(2 * bytes.len());
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    text
}

fn unhex(text: &str) -> Option<RequestKey> {
    let mut key = RequestKey::default();
    if text.len() != 2 * key.len() {
        return None;
    }
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

fn file_name(run: i64, generation: u64) -> String {
    format!("journal-{run}-{generation}.jsonl")
}

/// The journal files of `run` in `dir`, oldest first.
fn files(dir: &Path, run: i64) -> Result<Vec<(u64, PathBuf)>> {
    let prefix = format!("journal-{run}-");
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(err) => return Err(err).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let Some(generation) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((generation, entry.path()));
    }
    found.sort();
    Ok(found)
}

/// Applies what the journal of `run` holds beyond the store, commits, and
/// deletes the journal. Returns the number of calls recovered.
///
/// A record already in the store (the same row with as many attempts) is
/// skipped, so replaying twice counts nothing twice.
pub fn replay(store: &mut Store, dir: &Path, run: i64) -> Result<u64> {
    let found = files(dir, run)?;
    let mut recovered = 0;
    for (_, path) in &found {
        let file = File::open(path).with_context(|| format!("reading {}", path.display()))?;
        for line in BufReader::new(file).split(b'\n') {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            // A line cut short by a crash belongs to a call still in flight.
            let Some(record) = serde_json::from_slice::<Line>(&line)
                .ok()
                .and_then(Line::record)
            else {
                continue;
            };
            let stored = store.rows_between(run, record.outcome.row, record.outcome.row)?;
            if stored
                .first()
                .is_some_and(|s| s.attempts >= record.outcome.attempts)
            {
                continue;
            }
            apply(store, run, &record, record.outcome.answer.checked_at)?;
            recovered += 1;
        }
    }
    store.commit()?;
    for (_, path) in found {
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(recovered)
}

/// Writes a finished call's row, and its answer for identical requests, into
/// the store's open batch: the one write path of a call, whether the runner
/// records it as it finishes or a replay of the journal after a crash.
pub fn store_call(store: &mut Store, run: i64, record: &CallRecord) -> Result<()> {
    store.put_row(run, &record.outcome)?;
    if let Some(key) = &record.key {
        store.put_answer(key, run, record.outcome.row)?;
    }
    Ok(())
}

/// Replays a finished call: its row and answer, and the requests it sent.
pub fn apply(store: &mut Store, run: i64, record: &CallRecord, now: i64) -> Result<()> {
    store_call(store, run, record)?;
    let tally = crate::state::store::CallTally {
        sent: u64::from(record.requests),
        retries: u64::from(record.requests.saturating_sub(1)),
        ..Default::default()
    };
    store.add_calls(run, tally, now)
}

/// Deletes the journal of a discarded run.
pub fn discard(dir: &Path, run: i64) -> Result<()> {
    for (_, path) in files(dir, run)? {
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

impl Journal {
    /// Starts the journal of `run` in `dir`; [`replay`] must have emptied it.
    pub fn create(dir: &Path, run: i64) -> Result<Journal> {
        let first = Generation::open(dir, run, 0)?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            run,
            state: Mutex::new(State {
                current: first,
                pending: Vec::with_capacity(64 * 1024),
                queued: 0,
                flushed: 0,
                failed: None,
                unsynced: Vec::new(),
                created: true,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a finished call and writes it; returns the generation it went to.
    #[cfg(test)]
    pub fn append(&self, record: &CallRecord) -> Result<u64> {
        let ticket = self.enqueue(record)?;
        self.flush_through(ticket)?;
        Ok(ticket.generation)
    }

    /// Queues a finished call; it is on disk once `flush_through` returns.
    /// Calls that finish together share one `write`: one per call was a
    /// tenth of the call side's time.
    pub fn enqueue(&self, record: &CallRecord) -> Result<Ticket> {
        let mut state = self.lock();
        let state = &mut *state;
        serde_json::to_writer(&mut state.pending, &Line::of(record))?;
        state.pending.push(b'\n');
        state.queued += 1;
        state.current.written += 1;
        Ok(Ticket {
            sequence: state.queued,
            generation: state.current.number,
        })
    }

    /// Writes every queued line unless `ticket`'s is written already.
    pub fn flush_through(&self, ticket: Ticket) -> Result<()> {
        let mut state = self.lock();
        if let Some(failed) = &state.failed {
            anyhow::bail!("{failed}");
        }
        if state.flushed >= ticket.sequence {
            return Ok(());
        }
        self.flush(&mut state)
    }

    fn flush(&self, state: &mut State) -> Result<()> {
        if state.pending.is_empty() {
            return Ok(());
        }
        // One write for the batch: a crash leaves at most its last line torn.
        if let Err(err) = state.current.file.write_all(&state.pending) {
            let message = format!(
                "writing {}: {err}",
                self.path(state.current.number).display()
            );
            state.failed = Some(message.clone());
            anyhow::bail!(message);
        }
        state.pending.clear();
        state.flushed = state.queued;
        Ok(())
    }

    /// Closes the current generation to new records (if it has any) and starts the next.
    pub fn seal(&self) -> Result<Option<Sealed>> {
        let mut state = self.lock();
        if state.current.written == 0 {
            return Ok(None);
        }
        // Queued lines belong to the generation they were counted in.
        self.flush(&mut state)?;
        let next = Generation::open(&self.dir, self.run, state.current.number + 1)?;
        let old = std::mem::replace(&mut state.current, next);
        state.created = true;
        state.unsynced.push(old.file);
        Ok(Some(Sealed {
            number: old.number,
            written: old.written,
        }))
    }

    /// Makes every line written so far survive power loss: called by the
    /// store's sync thread, so no call waits for the disk. The store is
    /// committed only every second; this keeps what a power loss can cost at
    /// one sync interval.
    pub fn sync(&self) -> Result<()> {
        let (current, sealed, created) = {
            let mut state = self.lock();
            let current = state.current.file.try_clone().with_context(|| {
                format!("opening the outcome journal in {}", self.dir.display())
            })?;
            // Taken even if a sync below fails: after a failed fsync Linux may
            // have dropped the dirty pages, so a retry could report success for
            // lines that are gone. The sync thread's warning is what remains.
            let created = std::mem::take(&mut state.created);
            (current, std::mem::take(&mut state.unsynced), created)
        };
        for file in sealed.iter().chain([&current]) {
            file.sync_data().with_context(|| {
                format!("syncing the outcome journal in {}", self.dir.display())
            })?;
        }
        if created {
            // A new file survives power loss only once its folder entry does.
            crate::output::sync_folder(&self.dir);
        }
        Ok(())
    }

    /// Deletes a sealed generation whose records are all committed.
    pub fn remove(&self, generation: u64) -> Result<()> {
        let path = self.path(generation);
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
    }

    /// Deletes the current generation if nothing was written to it; only
    /// when no call is in flight, since one finishing later writes there and
    /// the next invocation replays it.
    pub fn close(&self) -> Result<()> {
        let mut state = self.lock();
        if state.current.written == 0 {
            let path = self.path(state.current.number);
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        self.flush(&mut state)
    }

    fn path(&self, generation: u64) -> PathBuf {
        self.dir.join(file_name(self.run, generation))
    }
}

impl Drop for Journal {
    /// A call queued but not yet written when the run stopped is written
    /// now; its row is replayed by the next invocation.
    fn drop(&mut self) {
        let mut state = self.lock();
        let _ = self.flush(&mut state);
    }
}

impl Generation {
    fn open(dir: &Path, run: i64, number: u64) -> Result<Generation> {
        let path = dir.join(file_name(run, number));
        let file = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("creating the outcome journal {}", path.display()))?;
        Ok(Generation {
            number,
            file,
            written: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(row: u64, attempts: u32, key: Option<RequestKey>) -> CallRecord {
        CallRecord {
            outcome: RowOutcome {
                row,
                answer: Answer {
                    status: RowStatus::Ok,
                    level: Some(2),
                    errcode: Some(0),
                    code: Some(0),
                    message: Some("tab\there \"quoted\"\nnewline 中文".into()),
                    request_id: Some("req-1".into()),
                    checked_at: 1_700_000_000_000,
                },
                source: Some(RiskSource::Api),
                attempts,
            },
            key,
            requests: 2,
        }
    }

    #[test]
    fn lines_round_trip() {
        let original = record(7, 3, Some([0xab; 16]));
        let line = serde_json::to_vec(&Line::of(&original)).unwrap();
        let back = serde_json::from_slice::<Line>(&line)
            .unwrap()
            .record()
            .unwrap();
        assert_eq!(back, original);
        let failed = CallRecord {
            key: None,
            ..record(8, 1, None)
        };
        let line = serde_json::to_vec(&Line::of(&failed)).unwrap();
        assert_eq!(
            serde_json::from_slice::<Line>(&line)
                .unwrap()
                .record()
                .unwrap(),
            failed
        );
    }

    #[test]
    fn replay_recovers_uncommitted_calls_once_and_skips_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let run = store
            .create_run("job-abc", "abc", "in.csv", 1000, 1)
            .unwrap();
        store.commit().unwrap();

        let journal = Journal::create(dir.path(), run.id).unwrap();
        journal.append(&record(1, 1, Some([1; 16]))).unwrap();
        let sealed = journal.seal().unwrap().unwrap();
        assert_eq!(
            sealed,
            Sealed {
                number: 0,
                written: 1
            }
        );
        journal.append(&record(2, 1, Some([2; 16]))).unwrap();
        drop(journal);
        // A crash in the middle of a line.
        let mut last = File::options()
            .append(true)
            .open(dir.path().join(file_name(run.id, 1)))
            .unwrap();
        last.write_all(b"{\"row\":3,\"sta").unwrap();

        assert_eq!(replay(&mut store, dir.path(), run.id).unwrap(), 2);
        let rows = store.rows_between(run.id, 1, 3).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], record(1, 1, None).outcome);
        assert!(store.answer(&[2; 16]).unwrap().is_some());
        let counted = store.run_by_id(run.id).unwrap();
        assert_eq!((counted.calls_sent, counted.retries), (4, 2));
        assert!(files(dir.path(), run.id).unwrap().is_empty());

        // The same records again (a crash after the commit, before the files
        // were removed) are already in the store: nothing is counted twice.
        let journal = Journal::create(dir.path(), run.id).unwrap();
        journal.append(&record(1, 1, Some([1; 16]))).unwrap();
        drop(journal);
        assert_eq!(replay(&mut store, dir.path(), run.id).unwrap(), 0);
        assert_eq!(store.run_by_id(run.id).unwrap().calls_sent, 4);
    }

    fn lines(dir: &Path, run: i64, generation: u64) -> usize {
        std::fs::read_to_string(dir.join(file_name(run, generation)))
            .unwrap()
            .lines()
            .count()
    }

    #[test]
    fn queued_records_share_a_write_and_stay_in_their_generation() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::create(dir.path(), 9).unwrap();
        let first = journal.enqueue(&record(1, 1, None)).unwrap();
        let second = journal.enqueue(&record(2, 1, None)).unwrap();
        assert_eq!(lines(dir.path(), 9, 0), 0, "queued, not written yet");
        journal.flush_through(first).unwrap();
        assert_eq!(lines(dir.path(), 9, 0), 2, "one write took both");
        journal.flush_through(second).unwrap();
        assert_eq!(lines(dir.path(), 9, 0), 2);

        // Sealing writes what is queued into the generation it was counted in.
        let third = journal.enqueue(&record(3, 1, None)).unwrap();
        let sealed = journal.seal().unwrap().unwrap();
        assert_eq!((sealed.number, sealed.written), (0, 3));
        assert_eq!(third.generation, 0);
        assert_eq!(lines(dir.path(), 9, 0), 3);
        journal.flush_through(third).unwrap();

        // A record still queued when the journal goes is written, not lost.
        let fourth = journal.enqueue(&record(4, 1, None)).unwrap();
        assert_eq!(fourth.generation, 1);
        drop(journal);
        assert_eq!(lines(dir.path(), 9, 1), 1);
    }

    #[test]
    fn a_generation_is_sealed_only_with_records_and_close_removes_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::create(dir.path(), 5).unwrap();
        assert_eq!(journal.seal().unwrap(), None);
        journal.append(&record(1, 1, None)).unwrap();
        let sealed = journal.seal().unwrap().unwrap();
        journal.remove(sealed.number).unwrap();
        journal.close().unwrap();
        assert!(files(dir.path(), 5).unwrap().is_empty());
        discard(dir.path(), 5).unwrap();
    }

    #[test]
    fn sync_covers_sealed_generations_once_even_after_their_removal() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::create(dir.path(), 6).unwrap();
        journal.append(&record(1, 1, None)).unwrap();
        let first = journal.seal().unwrap().unwrap();
        journal.append(&record(2, 1, None)).unwrap();
        let second = journal.seal().unwrap().unwrap();
        assert_eq!(journal.lock().unsynced.len(), 2);
        // Committed and removed before the sync thread came round to it.
        journal.remove(first.number).unwrap();
        journal.sync().unwrap();
        assert!(journal.lock().unsynced.is_empty());
        assert!(!journal.lock().created);
        journal.append(&record(3, 1, None)).unwrap();
        journal.sync().unwrap();
        journal.remove(second.number).unwrap();
        assert_eq!(lines(dir.path(), 6, 2), 1);
    }
}
