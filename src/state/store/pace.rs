//! What the runs of a job measured about their calls: requests, retries and
//! time in flight, the pace a run was estimated with, and its calling time.

use anyhow::Result;
use rusqlite::params;

use super::{Store, to_i64};

/// Requests a run sent, as the runner adds them up between commits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallTally {
    pub sent: u64,
    pub retries: u64,
    /// Time the requests held a concurrency slot (retry waits included, the
    /// pacer's waits not), and how many requests that covers.
    pub busy_us: u64,
    pub timed: u64,
}

/// What this job's earlier invocations measured: the pace a new estimate uses.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MeasuredPace {
    pub sent: u64,
    pub retries: u64,
    pub busy_us: u64,
    pub timed: u64,
}

impl Store {
    /// Adds an invocation's time spent calling, for the report's actual time.
    pub fn add_calling_time(&mut self, run: i64, ms: u64) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET calling_ms = calling_ms + ?2 WHERE id = ?1",
            params![run, to_i64(ms)],
        )?;
        Ok(())
    }

    /// Calls, retries and slot time of every run of the job so far.
    pub fn measured_pace(&self) -> Result<MeasuredPace> {
        Ok(self.conn.query_row(
            "SELECT coalesce(sum(calls_sent), 0), coalesce(sum(retries), 0), \
             coalesce(sum(busy_us), 0), coalesce(sum(timed_calls), 0) FROM runs",
            [],
            |r| {
                Ok(MeasuredPace {
                    sent: r.get::<_, i64>(0)? as u64,
                    retries: r.get::<_, i64>(1)? as u64,
                    busy_us: r.get::<_, i64>(2)? as u64,
                    timed: r.get::<_, i64>(3)? as u64,
                })
            },
        )?)
    }

    /// The pace (JSON) the run's first invocation estimated with, and the
    /// time it has spent calling so far.
    pub fn pace_and_calling_ms(&self, run: i64) -> Result<(Option<String>, u64)> {
        Ok(self.conn.query_row(
            "SELECT pace, calling_ms FROM runs WHERE id = ?1",
            [run],
            |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)),
        )?)
    }

    pub fn set_pace(&mut self, run: i64, pace: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET pace = ?2 WHERE id = ?1 AND pace IS NULL",
            params![run, pace],
        )?;
        Ok(())
    }
}
