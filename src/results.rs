//! Everything written at the end of an invocation: the result files (from the
//! input and the checkpoint store, chunk by chunk), the clusters, and
//! `summary.json`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_schema::DataType;

use crate::clock::now_ms;
use crate::clusters::{CLUSTER_FIELDS, Cluster, ClusterCounter};
use crate::input::InputFile;
use crate::job::{API_FIELDS, Job};
use crate::outcome::{Answer, RowOutcome, RowStatus};
use crate::output::owner::{ResultsOf, results_present};
use crate::output::{Masker, OutputOwner, OutputPlan, ResultWriter};
use crate::store::{RunRecord, Store};
use crate::summary::{RunState, Summary, SummaryInput};

/// Writes the result files of `run`; `partial` marks an unfinished run's
/// report, where rows without a final outcome appear as `pending`.
pub fn write_results(
    job: &Job,
    input: &InputFile,
    store: &mut Store,
    run: &RunRecord,
    partial: bool,
) -> Result<(Vec<PathBuf>, Vec<Cluster>)> {
    let masker = if job.output.mask.is_empty() {
        None
    } else {
        Some(Masker::new(crate::state::mask_salt(&job.state_dir)?))
    };
    let mask: Vec<usize> = job
        .output
        .mask
        .iter()
        .filter_map(|c| input.schema.index_of(c).ok())
        .collect();
    let owner = owner(job, run);
    let mut writer = ResultWriter::create(
        OutputPlan {
            dir: &job.output.dir,
            parquet: job.output.parquet,
            csv: job.output.csv,
            mask: mask.clone(),
            masker: masker.as_ref(),
            // Every API field but the merchant code identifies a participant:
            // nearly every value differs.
            unique_columns: API_FIELDS
                .iter()
                .filter(|field| **field != "mchcode")
                .filter_map(|field| job.column(field).map(str::to_string))
                .collect(),
            partial,
            owner: &owner,
        },
        &input.schema,
    )?;
    let cluster_columns: Vec<(usize, usize)> = CLUSTER_FIELDS
        .iter()
        .enumerate()
        .filter_map(|(i, field)| {
            let column = job.column(field)?;
            Some((i, input.schema.index_of(column).ok()?))
        })
        .collect();
    let mut clusters = ClusterCounter::default();
    for chunk in input.chunks(run.chunk_size as usize)? {
        let chunk = chunk?;
        let last = chunk.first_row + chunk.len() as u64 - 1;
        let mut stored = store
            .rows_between(run.id, chunk.first_row, last)?
            .into_iter()
            .peekable();
        let mut outcomes = Vec::with_capacity(chunk.len());
        for row in chunk.first_row..=last {
            match stored.next_if(|o| o.row == row) {
                // SPEC §4: in a partial output a row without a final outcome
                // is pending, whatever its last attempt said (a 45009 pause
                // is no verdict on the row).
                Some(outcome) if partial && !outcome.answer.status.is_final() => {
                    outcomes.push(RowOutcome {
                        row,
                        answer: Answer::local(RowStatus::Pending, None, None, 0),
                        source: None,
                        attempts: outcome.attempts,
                    })
                }
                Some(outcome) => outcomes.push(outcome),
                None if partial => outcomes.push(RowOutcome {
                    row,
                    answer: Answer::local(RowStatus::Pending, None, None, 0),
                    source: None,
                    attempts: 0,
                }),
                None => {
                    bail!("the checkpoint store has no outcome for row {row} of a complete run")
                }
            }
        }
        writer.write(&chunk.batch, &outcomes)?;
        for &(field, column) in &cluster_columns {
            let values = chunk.batch.column(column);
            let values = match values.data_type() {
                DataType::Utf8 => values.clone(),
                _ => arrow_cast::cast(values, &DataType::Utf8)?,
            };
            let values = values.as_string::<i32>();
            for (i, outcome) in outcomes.iter().enumerate() {
                if values.is_null(i) || values.value(i).trim().is_empty() {
                    continue;
                }
                let high = outcome.answer.level == Some(3);
                let value = values.value(i).trim();
                match (&masker, mask.contains(&column)) {
                    (Some(masker), true) => clusters.add(field, &masker.mask(value), high),
                    _ => clusters.add(field, value, high),
                }
            }
        }
    }
    let paths = writer.finish()?;
    let top = clusters.top();
    store.set_clusters(run.id, &serde_json::to_string(&top)?)?;
    store.commit()?;
    Ok((paths, top))
}

/// Who the outputs of `run` belong to.
pub fn owner(job: &Job, run: &RunRecord) -> OutputOwner {
    OutputOwner {
        job: job.name.clone(),
        run_id: run.run_id.clone(),
        fingerprint: run.fingerprint.clone(),
    }
}

/// The clusters found when the run's results were last written.
pub fn stored_clusters(store: &Store, run: i64) -> Result<Vec<Cluster>> {
    Ok(match store.clusters(run)? {
        Some(json) => serde_json::from_str(&json).unwrap_or_default(),
        None => Vec::new(),
    })
}

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
    pub clusters: Vec<Cluster>,
    /// Result files written by this invocation; none keeps those present.
    pub outputs: Vec<PathBuf>,
}

/// Builds and writes `summary.json`; returns it for printing.
pub fn write_summary(
    job: &Job,
    store: &Store,
    run_id: i64,
    ending: Ending,
    invocation: &Invocation,
) -> Result<Summary> {
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
    let summary = Summary::build(SummaryInput {
        job: &job.name,
        run: &run,
        counts: &counts,
        chunks_done: store.chunks_done_count(run_id)?,
        state: ending.state,
        pause_reason: ending.pause_reason,
        error: ending.error,
        partial: ending.partial,
        clusters: ending.clusters,
        outputs,
        results_of,
        started_at: invocation.started_at,
        finished_at: now_ms(),
        rows_this_invocation: invocation.rows_decided,
        calls_this_invocation: invocation.calls_sent,
    });
    summary.write(&job.output.dir)?;
    Ok(summary)
}
