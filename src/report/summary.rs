//! `summary.json` (SPEC §4): written at every exit, complete, paused or failed.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::clock::iso_ms;
use crate::outcome::{PauseReason, RiskSource, RowStatus};
use crate::output::owner::ResultsOf;
use crate::output::write_atomically;
use crate::report::clusters::Cluster;
use crate::state::store::{RowCounts, RunRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Complete,
    Paused,
    Failed,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Complete => "complete",
            RunState::Paused => "paused",
            RunState::Failed => "failed",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub job: String,
    pub run_id: String,
    pub state: RunState,
    pub pause_reason: Option<PauseReason>,
    /// Why the run failed, when it did.
    pub error: Option<String>,
    /// True when the result files were written from an unfinished run.
    pub partial: bool,
    pub input: InputSummary,
    pub rows: RowsSummary,
    pub calls: CallsSummary,
    pub risk_levels: BTreeMap<String, u64>,
    pub statuses: BTreeMap<String, u64>,
    pub sources: BTreeMap<String, u64>,
    pub errcodes: BTreeMap<String, u64>,
    pub chunks: ChunksSummary,
    pub clusters: Vec<Cluster>,
    /// Files written by this invocation.
    pub outputs: Vec<String>,
    /// The result files in the output folder and the run they come from
    /// (they may be an earlier run's: results are written when a run completes).
    pub results_of: Option<ResultsOf>,
    pub run_started_at: String,
    pub started_at: String,
    pub finished_at: String,
    pub elapsed_seconds: f64,
    pub rows_per_second: f64,
    /// The time the run's calls were estimated to take against what they took.
    pub timing: Option<Timing>,
    /// Verdicts pushed by WeChat (`riskbatch receive`).
    pub feedback: FeedbackSummary,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FeedbackSummary {
    /// Distinct verdicts stored for the job.
    pub verdicts: u64,
    /// Input rows that have one, when the result files were last written.
    pub matched_rows: Option<u64>,
}

/// The estimate of the run's first invocation, applied to the requests the
/// run has sent so far, against the time its invocations spent calling.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// Distinct requests answered or given up on so far (calls minus retries).
    pub requests: u64,
    pub estimated_seconds: f64,
    pub actual_seconds: f64,
    pub bound: crate::estimate::pace::Bound,
    pub pace: crate::estimate::pace::Pace,
}

#[derive(Debug, Serialize)]
pub struct InputSummary {
    pub path: String,
    pub fingerprint: String,
    pub rows: u64,
    /// Physical lines read, the header included (none for Parquet): more
    /// lines than rows + 1 means quoted line breaks or blank lines.
    pub lines: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct RowsSummary {
    pub total: u64,
    pub done: u64,
    pub pending: u64,
    /// Rows decided by this invocation.
    pub this_invocation: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct CallsSummary {
    pub sent: u64,
    pub retries: u64,
    pub cache_hits: u64,
    pub duplicates: u64,
    pub listed: u64,
    /// Requests sent by this invocation.
    pub this_invocation: u64,
}

#[derive(Debug, Serialize)]
pub struct ChunksSummary {
    pub size: u32,
    pub total: u64,
    pub done: u64,
}

/// What the summary is built from.
pub struct SummaryInput<'a> {
    pub job: &'a str,
    pub run: &'a RunRecord,
    pub counts: &'a RowCounts,
    pub chunks_done: u64,
    pub state: RunState,
    pub pause_reason: Option<PauseReason>,
    pub error: Option<String>,
    pub partial: bool,
    pub clusters: Vec<Cluster>,
    pub outputs: Vec<String>,
    pub results_of: Option<ResultsOf>,
    pub started_at: i64,
    pub finished_at: i64,
    pub rows_this_invocation: u64,
    pub calls_this_invocation: u64,
    pub timing: Option<Timing>,
    /// Risk levels the scene has: 4 (0–3), or 5 for the rank API.
    pub levels: usize,
    pub feedback: FeedbackSummary,
}

impl Summary {
    pub fn build(s: SummaryInput<'_>) -> Summary {
        let c = s.counts;
        let elapsed = (s.finished_at - s.started_at).max(0) as f64 / 1000.0;
        let total = s.run.rows_total.unwrap_or(0);
        let source = |k: RiskSource| c.sources.get(&k).copied().unwrap_or(0);
        Summary {
            job: s.job.to_string(),
            run_id: s.run.run_id.clone(),
            state: s.state,
            pause_reason: s.pause_reason,
            error: s.error,
            partial: s.partial,
            input: InputSummary {
                path: s.run.input_path.clone(),
                fingerprint: s.run.fingerprint.clone(),
                rows: total,
                lines: s.run.lines_total,
            },
            rows: RowsSummary {
                total,
                done: c.done,
                pending: total.saturating_sub(c.done),
                this_invocation: s.rows_this_invocation,
            },
            calls: CallsSummary {
                sent: s.run.calls_sent,
                retries: s.run.retries,
                cache_hits: source(RiskSource::Cache),
                duplicates: source(RiskSource::Duplicate),
                listed: source(RiskSource::Allowlist) + source(RiskSource::Denylist),
                this_invocation: s.calls_this_invocation,
            },
            risk_levels: (0..s.levels)
                .map(|l| (l.to_string(), c.levels[l]))
                .collect(),
            statuses: c
                .statuses
                .iter()
                .filter(|(status, _)| **status != RowStatus::Pending)
                .map(|(status, n)| (status.as_str().to_string(), *n))
                .collect(),
            sources: c
                .sources
                .iter()
                .map(|(k, n)| (k.as_str().to_string(), *n))
                .collect(),
            errcodes: c
                .errcodes
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect(),
            chunks: ChunksSummary {
                size: s.run.chunk_size,
                total: total.div_ceil(u64::from(s.run.chunk_size)),
                done: s.chunks_done,
            },
            clusters: s.clusters,
            outputs: s.outputs,
            results_of: s.results_of,
            run_started_at: iso_ms(s.run.created_at),
            started_at: iso_ms(s.started_at),
            finished_at: iso_ms(s.finished_at),
            elapsed_seconds: (elapsed * 1000.0).round() / 1000.0,
            rows_per_second: if elapsed > 0.0 {
                (s.rows_this_invocation as f64 / elapsed * 10.0).round() / 10.0
            } else {
                0.0
            },
            timing: s.timing,
            feedback: s.feedback,
        }
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(self)?;
        json.push(b'\n');
        write_atomically(&dir.join("summary.json"), &json)
    }
}
