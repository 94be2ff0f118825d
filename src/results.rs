//! Everything written at the end of an invocation: the result files (from the
//! input and the checkpoint store, chunk by chunk), the clusters, and
//! `summary.json`.

use std::borrow::Cow;
use std::path::PathBuf;

use anyhow::{Result, bail};
use arrow_array::Array;
use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_schema::DataType;

use crate::input::{InputChunk, InputFile};
use crate::job::{API_FIELDS, Job};
use crate::outcome::{Answer, RowOutcome, RowStatus};
use crate::output::{Feedback, Masker, OutputOwner, OutputPlan, ResultWriter};
use crate::report::clusters::{
    CLUSTER_FIELDS, Cluster, ClusterCounter, Found, Member, MemberCollector,
};
use crate::state::store::{RunRecord, Store};
use crate::worker::Worker;

/// Writes the result files of `run`; `partial` marks an unfinished run's
/// report, where rows without a final outcome appear as `pending`.
pub fn write_results(
    job: &Job,
    input: &InputFile,
    store: &mut Store,
    run: &RunRecord,
    partial: bool,
) -> Result<(Vec<PathBuf>, Found)> {
    store.shrink_cache()?;
    // What SQLite just freed would otherwise stay in the heap through the pass.
    crate::heap::release_free_pages();
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
    let columns = ClusterColumns {
        fields: cluster_fields(job, input),
        mask: &mask,
        masker: masker.as_ref(),
    };
    let mut counting = start_counting(columns.fields.clone())?;
    let verdicts = store.latest_verdicts()?;
    let openid_column = job
        .column("openid")
        .and_then(|c| input.schema.index_of(c).ok());
    let mut feedback_rows = 0u64;
    for chunk in input.chunks_ahead(run.chunk_size as usize, |_| false)? {
        let chunk = chunk?;
        let outcomes = chunk_outcomes(store, run, &chunk, partial)?;
        let feedback: Vec<Option<&Feedback>> = match openid_column {
            Some(column) if !verdicts.is_empty() => {
                let openids = text_column(&chunk.batch, column)?;
                let openids = openids.as_string::<i32>();
                (0..chunk.len())
                    .map(|i| cell(openids, i).and_then(|o| verdicts.get(o)))
                    .collect()
            }
            _ => vec![None; chunk.len()],
        };
        feedback_rows += feedback.iter().filter(|f| f.is_some()).count() as u64;
        let written = writer.write(&chunk.batch, &outcomes, &feedback)?;
        counting.give(counted(written, &outcomes));
    }
    let paths = writer.finish()?;
    let top = counting.finish()?.top();
    let members = if top.is_empty() {
        Vec::new()
    } else {
        collect_members(job, input, store, run, &top, &columns)?
    };
    let found = Found {
        clusters: top,
        members,
        feedback_rows: Some(feedback_rows),
    };
    store.set_clusters(run.id, &serde_json::to_string(&found)?)?;
    store.commit()?;
    Ok((paths, found))
}

/// The outcome of every row of `chunk`, from the store.
fn chunk_outcomes(
    store: &Store,
    run: &RunRecord,
    chunk: &InputChunk,
    partial: bool,
) -> Result<Vec<RowOutcome>> {
    let last = chunk.first_row + chunk.len() as u64 - 1;
    let mut stored = store
        .rows_between(run.id, chunk.first_row, last)?
        .into_iter()
        .peekable();
    let pending = |row, attempts| RowOutcome {
        row,
        answer: Answer::local(RowStatus::Pending, None, None, 0),
        source: None,
        attempts,
    };
    let mut outcomes = Vec::with_capacity(chunk.len());
    for row in chunk.first_row..=last {
        match stored.next_if(|o| o.row == row) {
            // A row stopped by a pause (45009, code 13) has no verdict of
            // its own: pending, not failed. A row whose retries ran out
            // keeps `failed` with WeChat's message (wechat-api.md §3).
            Some(outcome) if partial && paused_row(&outcome) => {
                outcomes.push(pending(row, outcome.attempts));
            }
            Some(outcome) => outcomes.push(outcome),
            None if partial => outcomes.push(pending(row, 0)),
            None => {
                bail!("the checkpoint store has no outcome for row {row} of a complete run")
            }
        }
    }
    Ok(outcomes)
}

/// The input columns the clusters are counted on, and how they are masked.
struct ClusterColumns<'a> {
    /// (index in `CLUSTER_FIELDS`, column in the input)
    fields: Vec<(usize, usize)>,
    mask: &'a [usize],
    masker: Option<&'a Masker>,
}

impl ClusterColumns<'_> {
    /// The masker of `column`, if it is masked.
    fn masker_of(&self, column: usize) -> Option<&Masker> {
        self.masker.filter(|_| self.mask.contains(&column))
    }
}

/// (index in `CLUSTER_FIELDS`, column in the input) of each cluster field
/// the job maps.
fn cluster_fields(job: &Job, input: &InputFile) -> Vec<(usize, usize)> {
    CLUSTER_FIELDS
        .iter()
        .enumerate()
        .filter_map(|(i, field)| {
            let column = job.column(field)?;
            Some((i, input.schema.index_of(column).ok()?))
        })
        .collect()
}

/// `value` as the result files show it: hashed by `masker`, if any.
fn shown<'v>(masker: Option<&Masker>, value: &'v str) -> Cow<'v, str> {
    match masker {
        Some(masker) => Cow::Owned(masker.mask(value)),
        None => Cow::Borrowed(value),
    }
}

/// Counts the clusters on a thread of its own, beside the result files:
/// hashing every row's values took a fifth of the output pass's thread.
type ClusterThread = Worker<(RecordBatch, Vec<bool>), ClusterCounter>;

/// Counts the chunks as written to the result files, whose masked columns
/// are hashed already; `fields` as [`cluster_fields`] gives them.
fn start_counting(fields: Vec<(usize, usize)>) -> Result<ClusterThread> {
    // A few chunks queued keep both threads busy without holding the input.
    ClusterThread::start("clusters", 4, move |chunks| {
        let mut clusters = ClusterCounter::default();
        for (batch, high) in chunks {
            for &(field, column) in &fields {
                let values = text_column(&batch, column)?;
                let values = values.as_string::<i32>();
                for (i, &high) in high.iter().enumerate() {
                    if let Some(value) = cell(values, i) {
                        clusters.add(field, value, high);
                    }
                }
            }
        }
        Ok(clusters)
    })
}

/// What the cluster counting needs of a chunk: its rows, and which are high risk.
fn counted(batch: RecordBatch, outcomes: &[RowOutcome]) -> (RecordBatch, Vec<bool>) {
    let high = outcomes.iter().map(|o| o.answer.level >= Some(3)).collect();
    (batch, high)
}

/// The first rows of each cluster, from a second pass over the input: the
/// clusters are known only once the first pass has counted every row.
fn collect_members(
    job: &Job,
    input: &InputFile,
    store: &Store,
    run: &RunRecord,
    clusters: &[Cluster],
    columns: &ClusterColumns<'_>,
) -> Result<Vec<Vec<Member>>> {
    let mut collector = MemberCollector::new(clusters);
    let openid_column = job
        .column("openid")
        .and_then(|c| input.schema.index_of(c).ok());
    for chunk in input.chunks(run.chunk_size as usize)? {
        if collector.complete() {
            break;
        }
        let chunk = chunk?;
        let openids = openid_column
            .map(|c| text_column(&chunk.batch, c))
            .transpose()?;
        for &(field, column) in &columns.fields {
            if !collector.wants(field) {
                continue;
            }
            let masker = columns.masker_of(column);
            let values = text_column(&chunk.batch, column)?;
            let values = values.as_string::<i32>();
            for i in 0..chunk.len() {
                let Some(value) = cell(values, i) else {
                    continue;
                };
                let value = shown(masker, value);
                let row = chunk.first_row + i as u64;
                collector.add(field, &value, || {
                    let openid = openids
                        .as_ref()
                        .and_then(|o| cell(o.as_string::<i32>(), i))
                        .unwrap_or_default();
                    let masker = openid_column.and_then(|c| columns.masker_of(c));
                    let openid = shown(masker, openid).into_owned();
                    Member {
                        row,
                        openid,
                        level: None,
                    }
                });
            }
        }
    }
    // Looked up for the few members shown, not read again for every row.
    let mut members = collector.finish();
    for member in members.iter_mut().flatten() {
        member.level = store.level_of(run.id, member.row)?;
    }
    Ok(members)
}

/// A column as text, whatever its type in the input.
fn text_column(batch: &arrow_array::RecordBatch, column: usize) -> Result<arrow_array::ArrayRef> {
    let values = batch.column(column);
    Ok(match values.data_type() {
        DataType::Utf8 => values.clone(),
        _ => arrow_cast::cast(values, &DataType::Utf8)?,
    })
}

/// A non-blank cell, trimmed.
fn cell(values: &arrow_array::StringArray, i: usize) -> Option<&str> {
    (!values.is_null(i))
        .then(|| values.value(i).trim())
        .filter(|v| !v.is_empty())
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
pub fn stored_clusters(store: &Store, run: i64) -> Result<Found> {
    Ok(match store.clusters(run)? {
        Some(json) => serde_json::from_str(&json)
            .or_else(|_| {
                // Stores written before the rows were kept hold the clusters alone.
                serde_json::from_str(&json).map(|clusters| Found {
                    clusters,
                    ..Found::default()
                })
            })
            .unwrap_or_default(),
        None => Found::default(),
    })
}
