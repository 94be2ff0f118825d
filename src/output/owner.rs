//! Whose files an output folder holds: an output folder belongs to one job,
//! and a run never leaves another run's results standing as its own.
//!
//! `summary.json` names the job and run of the exit that wrote it and, under
//! `results_of`, the run the result files come from; `results.parquet` carries
//! the same in its key-value metadata (the only record when summary.json is
//! gone). A CSV file has no room for it, so the summary speaks for it.

use std::fs::File;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use serde::{Deserialize, Serialize};

use super::OutputOwner;

/// The result files present in an output folder and the run they come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultsOf {
    pub run_id: String,
    pub partial: bool,
    pub files: Vec<String>,
}

/// What `summary.json` says, when it is there and readable.
#[derive(Debug, Clone, Deserialize)]
pub struct PreviousSummary {
    pub job: String,
    pub run_id: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub results_of: Option<ResultsOf>,
    #[serde(default)]
    pub rows: Option<PreviousRows>,
    #[serde(default)]
    pub calls: Option<PreviousCalls>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PreviousRows {
    pub done: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PreviousCalls {
    pub sent: u64,
}

pub fn previous_summary(dir: &Path) -> Option<PreviousSummary> {
    let bytes = std::fs::read(dir.join("summary.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `riskbatch.*` key-value metadata of a Parquet file: job, run id, partial.
pub fn parquet_owner(path: &Path) -> Option<(OutputOwner, bool)> {
    let reader = SerializedFileReader::new(File::open(path).ok()?).ok()?;
    let pairs = reader.metadata().file_metadata().key_value_metadata()?;
    let get = |key: &str| {
        pairs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone())
    };
    Some((
        OutputOwner {
            job: get("riskbatch.job")?,
            run_id: get("riskbatch.run_id")?,
            fingerprint: get("riskbatch.fingerprint").unwrap_or_default(),
        },
        get("riskbatch.partial").as_deref() == Some("true"),
    ))
}

/// The job whose outputs the folder holds, if any says so.
pub fn owning_job(dir: &Path) -> Option<String> {
    if let Some(summary) = previous_summary(dir) {
        return Some(summary.job);
    }
    parquet_owner(&dir.join("results.parquet")).map(|(owner, _)| owner.job)
}

/// Whether the result files `wanted` are all present, complete, and of `run_id`.
pub fn results_are_own(dir: &Path, run_id: &str, wanted: &[&str]) -> bool {
    let recorded = previous_summary(dir).and_then(|s| s.results_of);
    let Some(recorded) = recorded else {
        return false;
    };
    if recorded.run_id != run_id || recorded.partial {
        return false;
    }
    wanted.iter().all(|name| {
        let path = dir.join(name);
        let listed = recorded.files.iter().any(|f| Path::new(f).ends_with(name));
        let parquet_agrees = *name != "results.parquet"
            || parquet_owner(&path)
                .is_some_and(|(owner, partial)| owner.run_id == run_id && !partial);
        listed && path.is_file() && parquet_agrees
    })
}

/// The result files the folder holds now, carried into a summary that writes none.
pub fn results_present(dir: &Path, job: &str) -> Option<ResultsOf> {
    let summary = previous_summary(dir).filter(|s| s.job == job)?;
    let mut recorded = summary.results_of?;
    recorded.files.retain(|f| Path::new(f).is_file());
    (!recorded.files.is_empty()).then_some(recorded)
}
