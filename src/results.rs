//! Everything written at the end of an invocation: the result files (from the
//! input and the checkpoint store, chunk by chunk), the clusters, and
//! `summary.json`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_schema::DataType;

use crate::input::InputFile;
use crate::job::{API_FIELDS, Job};
use crate::outcome::{Answer, RowOutcome, RowStatus};
use crate::output::{Masker, OutputOwner, OutputPlan, ResultWriter};
use crate::report::clusters::{CLUSTER_FIELDS, Cluster, ClusterCounter};
use crate::store::{RunRecord, Store};

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
            csv_encoding: job.output.csv_encoding,
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
                // A row stopped by a pause (45009, code 13) has no verdict of
                // its own: pending, not failed. A row whose retries ran out
                // keeps `failed` with WeChat's message (wechat-api.md §3).
                Some(outcome) if partial && paused_row(&outcome) => outcomes.push(RowOutcome {
                    row,
                    answer: Answer::local(RowStatus::Pending, None, None, 0),
                    source: None,
                    attempts: outcome.attempts,
                }),
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

fn paused_row(outcome: &RowOutcome) -> bool {
    let answer = &outcome.answer;
    !answer.status.is_final() && (answer.errcode == Some(45009) || answer.code == Some(13))
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
