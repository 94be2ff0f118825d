//! One file per command; each returns the exit code or an error.

pub mod check;
pub mod generate;
pub mod report;
pub mod run;
pub mod sim;
pub mod status;

use std::path::PathBuf;

use anyhow::Result;

use crate::cli::JobArgs;
use crate::input::InputFile;
use crate::job::Job;

/// Loads the job and opens its input (or `--input`), both checked.
pub fn load(args: &JobArgs) -> Result<(Job, InputFile)> {
    let mut job = Job::load(&args.job)?;
    if let Some(input) = &args.input {
        job.input.path = crate::job::normalize(
            &std::path::absolute(input).unwrap_or_else(|_| PathBuf::from(input)),
        );
    }
    let input = InputFile::open(&job, &job.input.path)?;
    Ok((job, input))
}
