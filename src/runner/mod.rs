//! The runner: chunks in, outcomes out.
//!
//! Pacing is separate from work: a reader thread parses chunks ahead, this
//! coordinator (the only owner of the checkpoint store) decides each row —
//! locally when it can (bad input, lists, duplicates, cache), otherwise by
//! handing a call to the async side — and records every outcome as it
//! arrives. The async side only runs calls: at most `concurrency` at a time
//! and never faster than the pacer allows.
//!
//! A call's concurrency slot is given back only once its outcome is in the
//! [`Journal`], so requests sent but not yet on disk never number more than
//! `concurrency`: that is all a `kill -9` can cost. A
//! [`Syncer`](crate::state::store::Syncer) fsyncs the journal and the store every
//! 200 ms, which bounds what a power loss costs; the store itself is
//! committed in large batches, once a second.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
// The maps here are read or written for every row: foldhash, not SipHash.
use foldhash::HashMap;

mod calls;
mod rows;
use calls::{Completions, Ending, calls_per_wake, dispatch};
use rows::PendingRow;

use crate::clock::now_ms;
use crate::input::{InputFile, ReadAhead};
use crate::job::Job;
use crate::outcome::{Answer, PauseReason, RiskSource, RowOutcome, RowStatus};
use crate::progress::{Figures, Progress, ProgressMode};
use crate::state::journal::{CallRecord, Journal, Sealed};
use crate::state::store::{CallTally, RunRecord, Store};
use crate::wechat::client::RiskClient;
use crate::wechat::{RequestKey, RiskRequest};

/// Commit at least this often. Every commit writes each page it changed, and
/// the answers index changes pages all over (its keys are hashes): at 200 ms
/// a 200,000-row run wrote 148,455 WAL pages, and on 10,000,000 rows the
/// client spent 58 µs of CPU per row against 48–53 at 1 s. The journal keeps
/// every outcome durable meanwhile.
const COMMIT_EVERY: Duration = Duration::from_millis(1000);
/// ... or after this many writes, whichever comes first.
const COMMIT_ROWS: usize = 100_000;
/// How long the runner waits for finished calls before looking at its other duties.
const POLL_TICK: Duration = Duration::from_millis(1);
/// Rows decided locally before the loop looks at commits, progress and stop flags.
const LOCAL_BATCH: usize = 4096;

/// Limits on one invocation.
#[derive(Debug, Clone, Default)]
pub struct Bounds {
    pub max_chunks: Option<u64>,
    pub deadline: Option<Instant>,
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// Every row has a final outcome.
    Complete,
    Paused(PauseReason),
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct InvocationReport {
    pub end: RunEnd,
    /// Rows given a final outcome by this invocation.
    pub rows_decided: u64,
    /// Requests sent to the risk endpoint by this invocation.
    pub calls_sent: u64,
}

/// The local decisions: allow and deny lists.
#[derive(Debug, Default)]
pub struct Lists {
    pub allow: HashSet<String>,
    pub deny: HashSet<String>,
}

impl Lists {
    /// Reads the job's `[lists]` files (none configured: empty lists).
    pub fn load(job: &Job) -> Result<Lists> {
        let mut lists = Lists::default();
        if let Some(path) = &job.lists.allow {
            lists.allow = crate::input::read_list(path, "lists.allow", job)?;
        }
        if let Some(path) = &job.lists.deny {
            lists.deny = crate::input::read_list(path, "lists.deny", job)?;
        }
        Ok(lists)
    }

    pub fn contains(&self, openid: &str) -> bool {
        self.allow.contains(openid) || self.deny.contains(openid)
    }
}

struct CallOrder {
    row: u64,
    chunk: u64,
    key: RequestKey,
    request: RiskRequest,
    earlier_attempts: u32,
}

/// A call on its way back to the runner: its request is dropped on the
/// call side, and its answer travels once, in `record`.
struct Finished {
    chunk: u64,
    key: RequestKey,
    ending: Ending,
    /// Requests sent for this row in this call.
    attempts: u32,
    /// How long the call held its concurrency slot.
    busy: Duration,
    /// What the call recorded: `None` when it sent nothing.
    record: Option<CallRecord>,
    /// The journal generation the record went to, or why it could not be written.
    journaled: Result<Option<u64>, String>,
}

/// A row waiting for an identical request in flight.
struct Waiter {
    row: u64,
    chunk: u64,
    earlier_attempts: u32,
}

/// Runs calls on the async side: one task per call.
pub struct CallSide {
    pub runtime: tokio::runtime::Handle,
    pub client: Arc<RiskClient>,
}

pub struct Runner<'a> {
    job: &'a Job,
    input: &'a InputFile,
    store: &'a mut Store,
    run: &'a RunRecord,
    lists: &'a Lists,
    calls: &'a CallSide,
    bounds: Bounds,
    /// Set by a signal handler: stop dispatching.
    interrupted: Arc<AtomicBool>,

    finished: Arc<Completions>,
    /// Finished calls taken from `finished`, handled in one go.
    taken: Vec<Finished>,
    finish_rate: calls::FinishRate,
    chunks: Option<ReadAhead>,
    queue: VecDeque<PendingRow>,
    /// Calls decided in this turn of the loop, handed over together.
    orders: Vec<CallOrder>,
    chunks_started: u64,
    in_flight: usize,
    waiting: HashMap<RequestKey, Vec<Waiter>>,
    /// Rows of each started chunk still without a final outcome.
    chunk_left: HashMap<u64, usize>,
    stop: Option<RunEnd>,

    writes: usize,
    last_commit: Instant,
    journal: Option<Arc<Journal>>,
    /// Journal generations closed to new records, removed once all are committed.
    sealed: Vec<Sealed>,
    /// Records received from each journal generation.
    received: HashMap<u64, u64>,
    rows_decided: u64,
    calls_sent: u64,
    retries_sent: u64,
    unsaved: CallTally,
    figures: Figures,
}

impl<'a> Runner<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        job: &'a Job,
        input: &'a InputFile,
        store: &'a mut Store,
        run: &'a RunRecord,
        lists: &'a Lists,
        calls: &'a CallSide,
        bounds: Bounds,
        interrupted: Arc<AtomicBool>,
    ) -> Runner<'a> {
        Runner {
            job,
            input,
            store,
            run,
            lists,
            calls,
            bounds,
            interrupted,
            finished: Arc::new(Completions::new(calls_per_wake(
                job.throttle.concurrency as usize,
            ))),
            taken: Vec::new(),
            finish_rate: calls::FinishRate::new(),
            chunks: None,
            queue: VecDeque::new(),
            orders: Vec::new(),
            chunks_started: 0,
            in_flight: 0,
            waiting: HashMap::default(),
            chunk_left: HashMap::default(),
            stop: None,
            writes: 0,
            last_commit: Instant::now(),
            journal: None,
            sealed: Vec::new(),
            received: HashMap::default(),
            rows_decided: 0,
            calls_sent: 0,
            retries_sent: 0,
            unsaved: CallTally::default(),
            figures: Figures::default(),
        }
    }

    /// Works through the run until it is complete or must stop.
    pub fn run(mut self, progress_mode: ProgressMode) -> Result<InvocationReport> {
        let done_chunks = self.store.done_chunks(self.run.id)?;
        let counts = self.store.counts(self.run.id)?;
        self.figures = Figures {
            done: counts.done,
            total: self.run.rows_total.unwrap_or(0),
            high_risk: counts.levels[3] + counts.levels[4],
            calls: self.run.calls_sent,
            retries: self.run.retries,
            rate: self.job.throttle.rate,
        };
        let mut progress = Progress::new(progress_mode, self.figures.total, self.figures.done);
        let journal = Arc::new(Journal::create(&self.job.state_dir, self.run.id)?);
        let syncer = self.store.syncer({
            let journal = journal.clone();
            move || journal.sync()
        })?;
        self.journal = Some(journal.clone());
        self.start_reader(done_chunks)?;

        let (call_tx, call_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<CallOrder>>();
        let dispatcher = self.calls.runtime.spawn(dispatch(
            call_rx,
            self.calls.client.clone(),
            journal.clone(),
            self.finished.clone(),
            self.job.throttle.concurrency as usize,
        ));
        let result = self.work(&call_tx, &mut progress);
        drop(call_tx);
        self.calls.client.stopping.store(true, Ordering::Relaxed);
        dispatcher.abort();
        drop(syncer);
        let saved =
            self.save()
                .and_then(|()| self.store.sync())
                .and_then(|()| match self.in_flight {
                    0 => journal.close(),
                    _ => Ok(()),
                });
        progress.finish();
        drop(self.chunks.take());
        result?;
        saved?;

        let end = match self.stop.take() {
            Some(end) => end,
            None => {
                if self.store.done_count(self.run.id)? >= self.run.rows_total.unwrap_or(0) {
                    RunEnd::Complete
                } else {
                    RunEnd::Paused(PauseReason::FailedRows)
                }
            }
        };
        Ok(InvocationReport {
            end,
            rows_decided: self.rows_decided,
            calls_sent: self.calls_sent,
        })
    }

    fn work(
        &mut self,
        call_tx: &tokio::sync::mpsc::UnboundedSender<Vec<CallOrder>>,
        progress: &mut Progress,
    ) -> Result<()> {
        let concurrency = self.job.throttle.concurrency as usize;
        let mut drain_deadline: Option<Instant> = None;
        loop {
            self.check_bounds();
            let ahead = calls::orders_ahead(concurrency, self.finish_rate.per_second());
            let mut local = 0;
            // Orders are queued ahead of the call side (which holds the real
            // concurrency limit) so that a commit here never leaves it idle.
            while self.stop.is_none() && self.in_flight < ahead && local < LOCAL_BATCH {
                let Some(row) = self.next_row()? else { break };
                if self.decide(row)? {
                    local += 1;
                }
            }
            if !self.orders.is_empty() {
                call_tx
                    .send(std::mem::take(&mut self.orders))
                    .map_err(|_| anyhow::anyhow!("the call side stopped unexpectedly"))?;
            }
            let exhausted = self.queue.is_empty() && self.chunks.is_none();
            if self.in_flight == 0 && (self.stop.is_some() || exhausted) {
                return Ok(());
            }
            if let Some(stop) = &self.stop
                && is_urgent(stop)
            {
                // Let in-flight calls finish, but not for longer than a request
                // may take, and start no retry or queued call.
                let deadline = *drain_deadline
                    .get_or_insert_with(|| Instant::now() + self.job.throttle.timeout);
                self.calls.client.stopping.store(true, Ordering::Relaxed);
                if Instant::now() >= deadline {
                    tracing::warn!(
                        in_flight = self.in_flight,
                        "stopped waiting for calls still in flight; their rows stay pending"
                    );
                    return Ok(());
                }
            }
            if self.in_flight > 0 {
                // Every finished call that has piled up, handled (and
                // committed) in one batch.
                let mut taken = std::mem::take(&mut self.taken);
                self.finished.take(POLL_TICK, &mut taken);
                self.finish_rate.add(taken.len());
                for finished in taken.drain(..) {
                    self.finish(finished)?;
                }
                self.taken = taken;
            }
            if self.writes >= COMMIT_ROWS
                || (self.writes > 0 && self.last_commit.elapsed() >= COMMIT_EVERY)
            {
                self.save()?;
            } else {
                // A step at a time, between calls, what the commit would
                // otherwise do at once while the calls queued ahead run dry.
                self.store.step_answers_move()?;
            }
            self.figures.calls = self.run.calls_sent + self.calls_sent;
            self.figures.retries = self.run.retries + self.retries_sent;
            self.figures.rate = self.calls.client.pacer.current_rate();
            progress.update(self.figures);
        }
    }

    fn check_bounds(&mut self) {
        if self.stop.is_some() {
            return;
        }
        if self.interrupted.load(Ordering::Relaxed) {
            self.stop = Some(RunEnd::Paused(PauseReason::Interrupted));
        } else if self.bounds.deadline.is_some_and(|d| Instant::now() >= d) {
            self.stop = Some(RunEnd::Paused(PauseReason::Deadline));
        }
    }

    /// Decides a row locally or sends it; true when decided locally.
    fn decide(&mut self, pending: PendingRow) -> Result<bool> {
        let now = now_ms();
        let request = match pending.request {
            Err(reason) => {
                let answer = Answer::local(RowStatus::InvalidInput, None, Some(reason), now);
                self.record(
                    pending.row,
                    pending.chunk,
                    answer,
                    None,
                    pending.earlier_attempts,
                )?;
                return Ok(true);
            }
            Ok(request) => request,
        };
        let listed = if self.lists.deny.contains(&request.openid) {
            Some((RiskSource::Denylist, 3))
        } else if self.lists.allow.contains(&request.openid) {
            Some((RiskSource::Allowlist, 0))
        } else {
            None
        };
        if let Some((source, level)) = listed {
            let answer = Answer::local(RowStatus::Ok, Some(level), None, now);
            self.record(
                pending.row,
                pending.chunk,
                answer,
                Some(source),
                pending.earlier_attempts,
            )?;
            return Ok(true);
        }
        let key = request.key(self.job.scene);
        if let Some(waiters) = self.waiting.get_mut(&key) {
            waiters.push(Waiter {
                row: pending.row,
                chunk: pending.chunk,
                earlier_attempts: pending.earlier_attempts,
            });
            return Ok(true);
        }
        if let Some(stored) = self.store.answer(&key)?
            && let Some(source) = stored.reuse(Some(self.run.id), now, self.job.cache_ttl)
        {
            self.record(
                pending.row,
                pending.chunk,
                stored.answer,
                Some(source),
                pending.earlier_attempts,
            )?;
            return Ok(true);
        }
        self.waiting.insert(key, Vec::new());
        self.in_flight += 1;
        self.orders.push(CallOrder {
            row: pending.row,
            chunk: pending.chunk,
            key,
            request,
            earlier_attempts: pending.earlier_attempts,
        });
        Ok(false)
    }

    fn finish(&mut self, finished: Finished) -> Result<()> {
        let Finished {
            chunk,
            key,
            ending,
            attempts,
            busy,
            record,
            journaled,
        } = finished;
        self.in_flight -= 1;
        match journaled {
            Ok(Some(generation)) => *self.received.entry(generation).or_default() += 1,
            Ok(None) => {}
            Err(message) => {
                if !matches!(self.stop, Some(RunEnd::Failed(_))) {
                    self.stop = Some(RunEnd::Failed(format!(
                        "could not record a finished call in the outcome journal: {message}"
                    )));
                }
            }
        }
        self.calls_sent += u64::from(attempts);
        self.retries_sent += u64::from(attempts.saturating_sub(1));
        self.unsaved.sent += u64::from(attempts);
        self.unsaved.retries += u64::from(attempts.saturating_sub(1));
        if attempts > 0 {
            self.unsaved.busy_us += busy.as_micros() as u64;
            self.unsaved.timed += 1;
        }
        let waiters = self.waiting.remove(&key).unwrap_or_default();
        let Some(record) = record else {
            // Queued when the run stopped: the row stays pending, and so do its duplicates.
            return Ok(());
        };
        crate::state::journal::store_call(self.store, self.run.id, &record)?;
        self.writes += 1;
        let answer = record.outcome.answer;
        self.account(chunk, &answer)?;
        match ending {
            Ending::Answered => {
                for w in waiters {
                    self.record(
                        w.row,
                        w.chunk,
                        answer.clone(),
                        Some(RiskSource::Duplicate),
                        w.earlier_attempts,
                    )?;
                }
            }
            Ending::Failed => {
                for w in waiters {
                    self.record(w.row, w.chunk, answer.clone(), None, w.earlier_attempts)?;
                }
            }
            Ending::Pause(reason) => {
                // The row stays pending (as `failed`) and is sent again on resume.
                if self.stop.is_none() {
                    tracing::warn!(reason = reason.as_str(), "pausing the run");
                    self.stop = Some(RunEnd::Paused(reason));
                }
            }
            Ending::Fatal(message) => {
                if !matches!(self.stop, Some(RunEnd::Failed(_))) {
                    self.stop = Some(RunEnd::Failed(message));
                }
            }
            Ending::NotSent => {}
        }
        Ok(())
    }

    fn record(
        &mut self,
        row: u64,
        chunk: u64,
        answer: Answer,
        source: Option<RiskSource>,
        attempts: u32,
    ) -> Result<()> {
        let source = if answer.status.is_final() {
            source
        } else {
            None
        };
        let outcome = RowOutcome {
            row,
            answer,
            source,
            attempts,
        };
        self.store.put_row(self.run.id, &outcome)?;
        self.writes += 1;
        self.account(chunk, &outcome.answer)
    }

    /// Counts a row just written: its chunk may be complete now.
    fn account(&mut self, chunk: u64, answer: &Answer) -> Result<()> {
        let is_final = answer.status.is_final();
        let high = answer.level >= Some(3) && is_final;
        if is_final {
            self.rows_decided += 1;
            self.figures.done += 1;
            self.figures.high_risk += u64::from(high);
            if let Some(left) = self.chunk_left.get_mut(&chunk) {
                *left -= 1;
                if *left == 0 {
                    self.chunk_left.remove(&chunk);
                    self.store.mark_chunk_done(self.run.id, chunk, now_ms())?;
                }
            }
        }
        Ok(())
    }

    /// Commits the outcomes so far, then removes the journal generations
    /// whose records are all in the store.
    fn save(&mut self) -> Result<()> {
        // Sealed before the commit: every record of a generation received by
        // now is in this commit.
        if let Some(journal) = &self.journal
            && let Some(sealed) = journal.seal()?
        {
            self.sealed.push(sealed);
        }
        if self.unsaved.sent > 0 || self.writes > 0 {
            self.store.add_calls(self.run.id, self.unsaved, now_ms())?;
        }
        let started = Instant::now();
        self.store.commit()?;
        tracing::debug!(
            writes = self.writes,
            ms = started.elapsed().as_millis() as u64,
            "committed the store"
        );
        self.unsaved = CallTally::default();
        self.writes = 0;
        self.last_commit = Instant::now();
        if let Some(journal) = &self.journal {
            let received = &mut self.received;
            let mut removed = Ok(());
            self.sealed.retain(|sealed| {
                let complete = received.get(&sealed.number).copied().unwrap_or(0) >= sealed.written;
                if complete && removed.is_ok() {
                    removed = journal.remove(sealed.number);
                    received.remove(&sealed.number);
                }
                !complete
            });
            removed?;
        }
        Ok(())
    }
}

/// A signal, a quota or a failure stops at once; `--max-chunks` and
/// `--deadline` let the calls already handed over finish, retries included.
fn is_urgent(stop: &RunEnd) -> bool {
    !matches!(
        stop,
        RunEnd::Paused(PauseReason::MaxChunks | PauseReason::Deadline)
    )
}
