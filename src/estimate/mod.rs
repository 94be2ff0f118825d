//! What a run of this input still needs, counted without a call: rows, bad
//! rows, listed rows, duplicates, cache hits, rows already final, the
//! distinct requests left to send, and their time and cost.
//!
//! It follows the runner's own decisions row by row (a final row is skipped,
//! a request answered earlier in the run or by a fresh cache entry is not
//! sent again, identical requests are sent once), so on a partly done run
//! `calls` is exactly the requests not yet answered. Keys live in a
//! temporary database, not in memory.

pub mod keys;
pub mod pace;

use std::collections::HashSet;

use anyhow::Result;
use serde::Serialize;

use crate::input::{InputChunk, InputFile};
use crate::job::Job;
use crate::outcome::RiskSource;
use crate::runner::Lists;
use crate::state::store::{RunRecord, Store};
use keys::{DiskKeys, KeySet};
use pace::{Pace, TimeEstimate};

/// Invalid rows shown by `check`, as examples.
const BAD_EXAMPLES: usize = 5;

/// The counts of SPEC §1's `check`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub rows: u64,
    pub invalid_rows: u64,
    pub listed: u64,
    /// Rows whose request repeats an earlier row's.
    pub duplicates: u64,
    /// Distinct requests still needed that a fresh cache entry answers.
    pub cached: u64,
    /// Rows already final in this input's run.
    pub done: u64,
    /// Distinct requests the run still has to send.
    pub calls: u64,
    #[serde(skip)]
    pub bad_examples: Vec<String>,
}

/// Counts `input` as the run `run` (None: a new one) would go through it.
pub fn plan(
    job: &Job,
    input: &InputFile,
    lists: &Lists,
    store: Option<&Store>,
    run: Option<&RunRecord>,
) -> Result<Plan> {
    let keys = DiskKeys::new()?;
    let done_chunks = match (store, run) {
        (Some(store), Some(run)) => store.done_chunks(run.id)?,
        _ => HashSet::new(),
    };
    let mut counter = Counter {
        job,
        lists,
        store,
        run_id: run.map(|r| r.id),
        keys: &keys,
        now: crate::clock::now_ms(),
        plan: Plan::default(),
    };
    for chunk in input.chunks(job.throttle.chunk_size as usize)? {
        let chunk = chunk?;
        let finished = match (store, run) {
            _ if done_chunks.contains(&chunk.index) => None,
            (Some(store), Some(run)) => Some(final_rows(store, run.id, &chunk)?),
            _ => Some(HashSet::new()),
        };
        counter.count_chunk(input, &chunk, finished.as_ref())?;
    }
    Ok(counter.plan)
}

/// Rows of `chunk` that already have a final outcome.
fn final_rows(store: &Store, run: i64, chunk: &InputChunk) -> Result<HashSet<u64>> {
    let last = chunk.first_row + chunk.len() as u64 - 1;
    Ok(store
        .rows_between(run, chunk.first_row, last)?
        .into_iter()
        .filter(|o| o.answer.status.is_final())
        .map(|o| o.row)
        .collect())
}

struct Counter<'a> {
    job: &'a Job,
    lists: &'a Lists,
    store: Option<&'a Store>,
    run_id: Option<i64>,
    keys: &'a DiskKeys,
    now: i64,
    plan: Plan,
}

impl Counter<'_> {
    /// `finished`: the chunk's final rows, or None when the whole chunk is done.
    fn count_chunk(
        &mut self,
        input: &InputFile,
        chunk: &InputChunk,
        finished: Option<&HashSet<u64>>,
    ) -> Result<()> {
        for (i, request) in input.requests(chunk).into_iter().enumerate() {
            let row = chunk.first_row + i as u64;
            let is_final = finished.is_none_or(|rows| rows.contains(&row));
            self.plan.rows += 1;
            self.plan.done += u64::from(is_final);
            let request = match request {
                Err(reason) => {
                    self.plan.invalid_rows += 1;
                    if self.plan.bad_examples.len() < BAD_EXAMPLES {
                        self.plan.bad_examples.push(format!("row {row}: {reason}"));
                    }
                    continue;
                }
                Ok(request) => request,
            };
            if self.lists.contains(&request.openid) {
                self.plan.listed += 1;
                continue;
            }
            let key = request.key(self.job.scene);
            if !self.keys.insert(KeySet::Seen, &key)? {
                self.plan.duplicates += 1;
            }
            if !is_final && self.keys.insert(KeySet::Open, &key)? {
                self.count_open_request(&key)?;
            }
        }
        Ok(())
    }

    /// A distinct request of a row not yet final: answered already in this
    /// run, by the cache, or still to send.
    fn count_open_request(&mut self, key: &crate::wechat::RequestKey) -> Result<()> {
        let reuse = match self.store {
            Some(store) => store
                .answer(key)?
                .and_then(|stored| stored.reuse(self.run_id, self.now, self.job.cache_ttl)),
            None => None,
        };
        match reuse {
            Some(RiskSource::Cache) => self.plan.cached += 1,
            Some(_) => {}
            None => self.plan.calls += 1,
        }
        Ok(())
    }
}

/// The plan with its time and cost, as `check --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    #[serde(flatten)]
    pub plan: Plan,
    pub seconds: f64,
    pub cost: Option<f64>,
    pub time: TimeEstimate,
    pub pace: Pace,
}

impl Estimate {
    pub fn new(plan: Plan, pace: Pace, job: &Job) -> Estimate {
        let time = pace.time(plan.calls, job);
        Estimate {
            seconds: (time.seconds * 10.0).round() / 10.0,
            cost: job
                .api
                .price_per_call
                .map(|price| plan.calls as f64 * price),
            time,
            pace,
            plan,
        }
    }
}
