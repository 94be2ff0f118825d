//! One file per command; each returns the exit code or an error.

pub mod check;
pub mod generate;
pub mod report;
pub mod run;
pub mod sim;
pub mod status;

use std::path::PathBuf;

use anyhow::Result;

use crate::cli::{JobArgs, LogFormat};
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

/// The end-of-command summary on stdout: for a person, or with
/// `--log-format json` one JSON object (summary.json's), so that a cron log
/// that merges stdout and stderr is pure JSON lines.
pub fn print_summary(
    format: LogFormat,
    headline: &str,
    job: &Job,
    summary: &crate::report::summary::Summary,
    outputs: &[PathBuf],
) -> Result<()> {
    if format == LogFormat::Json {
        println!("{}", serde_json::to_string(summary)?);
        return Ok(());
    }
    println!("{headline}");
    for path in outputs {
        println!("  wrote {}", path.display());
    }
    for path in [
        job.output.dir.join("summary.json"),
        job.output.dir.join("report.html"),
        job.output.metrics_path(),
    ] {
        println!("  wrote {}", path.display());
    }
    Ok(())
}
