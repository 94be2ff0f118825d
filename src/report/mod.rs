//! What an invocation leaves for people and monitoring, at every exit:
//! `summary.json`, `report.html` and `metrics.prom`, all from one read of the
//! checkpoint store, so that every figure is the same in the three.

pub mod clusters;
pub mod html;
pub mod metrics;
pub mod summary;

use std::path::PathBuf;

use anyhow::Result;

use crate::clock::now_ms;
use crate::estimate::pace::Pace;
use crate::job::Job;
use crate::output::owner::{ResultsOf, results_present};
use crate::state::store::{RunRecord, Store};
use clusters::{Found, Member};
use summary::{RunState, Summary, SummaryInput, Timing};

/// What an invocation did, for the summary.
pub struct Invocation {
    pub started_at: i64,
    pub rows_decided: u64,
    pub calls_sent: u64,
}

/// How an invocation ends, for the summary.
pub struct Ending {
    pub state: RunState,
    pub pause_reason: Option<crate::outcome::PauseReason>,
    pub error: Option<String>,
    /// The result files were written from an unfinished run.
    pub partial: bool,
    pub clusters: Found,
    /// Result files written by this invocation; none keeps those present.
    pub outputs: Vec<PathBuf>,
}

/// What the reports are made of, read once from the store.
pub struct Facts {
    pub summary: Summary,
    /// When each done chunk finished and how many rows it held, in time order.
    pub chunk_times: Vec<(i64, u64)>,
    pub last_complete_at: Option<i64>,
    pub price_per_call: Option<f64>,
    /// The first rows of each of `summary.clusters`.
    pub cluster_members: Vec<Vec<Member>>,
}

/// Builds the summary and writes summary.json, report.html and metrics.prom;
/// returns the summary for printing.
pub fn write_reports(
    job: &Job,
    store: &Store,
    run_id: i64,
    ending: Ending,
    invocation: &Invocation,
) -> Result<Summary> {
    let facts = read_facts(job, store, run_id, ending, invocation)?;
    facts.summary.write(&job.output.dir)?;
    let metrics = metrics::render(&facts);
    crate::output::write_atomically(&job.output.metrics_path(), metrics.as_bytes())?;
    let page = html::render(&facts);
    crate::output::write_atomically(&job.output.dir.join("report.html"), page.as_bytes())?;
    Ok(facts.summary)
}

/// The run's estimate against its actual calling time, once it has sent
/// requests and recorded the pace it was estimated with.
fn timing(job: &Job, store: &Store, run: &RunRecord) -> Result<Option<Timing>> {
    let (pace, calling_ms) = store.pace_and_calling_ms(run.id)?;
    let Some(pace) = pace.and_then(|p| serde_json::from_str::<Pace>(&p).ok()) else {
        return Ok(None);
    };
    let requests = run.calls_sent.saturating_sub(run.retries);
    if requests == 0 {
        return Ok(None);
    }
    let estimate = pace.time(requests, job);
    Ok(Some(Timing {
        requests,
        estimated_seconds: (estimate.seconds * 10.0).round() / 10.0,
        actual_seconds: (calling_ms as f64 / 100.0).round() / 10.0,
        bound: estimate.bound,
        pace,
    }))
}

fn read_facts(
    job: &Job,
    store: &Store,
    run_id: i64,
    ending: Ending,
    invocation: &Invocation,
) -> Result<Facts> {
    let run = store.run_by_id(run_id)?;
    let counts = store.counts(run_id)?;
    let outputs: Vec<String> = ending
        .outputs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let results_of = if outputs.is_empty() {
        results_present(&job.output.dir, &job.name)
    } else {
        Some(ResultsOf {
            run_id: run.run_id.clone(),
            partial: ending.partial,
            files: outputs.clone(),
        })
    };
    let chunk_size = u64::from(run.chunk_size);
    let total = run.rows_total.unwrap_or(0);
    let chunk_times = store
        .chunk_done_times(run_id)?
        .into_iter()
        .map(|(chunk, at)| {
            let rows = chunk_size.min(total.saturating_sub(chunk * chunk_size));
            (at, rows)
        })
        .collect();
    let summary = Summary::build(SummaryInput {
        job: &job.name,
        run: &run,
        counts: &counts,
        chunks_done: store.chunks_done_count(run_id)?,
        state: ending.state,
        pause_reason: ending.pause_reason,
        error: ending.error,
        partial: ending.partial,
        clusters: ending.clusters.clusters,
        outputs,
        results_of,
        started_at: invocation.started_at,
        finished_at: now_ms(),
        rows_this_invocation: invocation.rows_decided,
        calls_this_invocation: invocation.calls_sent,
        timing: timing(job, store, &run)?,
        feedback: summary::FeedbackSummary {
            verdicts: store.verdict_count()?,
            matched_rows: ending.clusters.feedback_rows,
        },
        levels: if matches!(job.scene, crate::wechat::Scene::Rank(_)) {
            5
        } else {
            4
        },
    });
    Ok(Facts {
        summary,
        chunk_times,
        last_complete_at: store.last_completed_at()?,
        price_per_call: job.api.price_per_call,
        cluster_members: ending.clusters.members,
    })
}
