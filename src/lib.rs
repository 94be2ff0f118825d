//! riskbatch: checks the participants of a marketing campaign for fraud in bulk
//! with WeChat's risk API — throttled, in checkpointed chunks that survive
//! crashes — and writes risk-annotated Parquet/CSV files and a summary.
//!
//! The pipeline, one module per stage: [`job`] (the job file) → [`input`]
//! (chunks of rows) → [`runner`] (decides rows, paces calls, records outcomes
//! in the [`store`]) via [`wechat`] (requests, answers, tokens) → [`results`]
//! (result files via [`output`]) and [`report`] (summary.json, report.html,
//! metrics.prom, clusters). [`sim`] stands in
//! for WeChat; [`generator`] makes participant lists.

pub mod cli;
pub mod clock;
mod cmd;
pub mod duration;
pub mod estimate;
pub mod exit;
pub mod generator;
mod heap;
pub mod input;
pub mod job;
pub mod outcome;
pub mod output;
pub mod pacer;
pub mod progress;
pub mod receive;
pub mod redact;
pub mod report;
pub mod results;
pub mod runner;
pub mod sim;
pub mod state;
pub mod wechat;
mod worker;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, LogFormat};
use crate::exit::{Exit, exit_for};

/// Runs the command line `args` and returns the process exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                Exit::Usage.into()
            } else {
                Exit::Complete.into()
            };
        }
    };
    heap::fix_mmap_threshold();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Run(args) => cmd::run::execute(args, cli.log_format),
        Command::Check(args) => cmd::check::execute(args),
        Command::Status(args) => cmd::status::execute(args),
        Command::Report(args) => cmd::report::execute(args, cli.log_format),
        Command::Sim(args) => cmd::sim::execute(*args),
        Command::Gen(args) => cmd::generate::execute(args),
        Command::Receive(args) => receive::execute(args),
    };
    match result {
        Ok(exit) => exit.into(),
        Err(err) => {
            let exit = exit_for(&err);
            tracing::error!(
                exit_code = exit as u8,
                "{}",
                redact::redact(&exit::describe(&err))
            );
            exit.into()
        }
    }
}

fn init_logging(format: LogFormat) {
    let level = match std::env::var("RISKBATCH_LOG")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        _ => tracing::Level::INFO,
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
