//! The command line (SPEC §1). Nothing downstream sees these types: each
//! command turns them into a `Job` and plain options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::progress::ProgressMode;
use crate::sim::SimConfig;

#[derive(Debug, Parser)]
#[command(
    name = "riskbatch",
    version,
    about = "Checks campaign participants for fraud in bulk with WeChat's risk API: throttled, checkpointed, resumable.",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the job: call the API for every row not yet done, write the outputs.
    Run(RunArgs),
    /// Validate the job and its input, estimate calls, time and cost; no API call.
    Check(CheckArgs),
    /// Show the progress of the run for this input, from the checkpoint store.
    Status(JobArgs),
    /// Write the outputs and summary from the checkpoint store (partial if unfinished).
    Report(JobArgs),
    /// Serve the WeChat simulator.
    Sim(Box<SimArgs>),
    /// Receive WeChat's pushed verdicts (message push) into the job's state.
    Receive(ReceiveArgs),
    /// Write synthetic participants with planted fraud rings.
    Gen(GenArgs),
}

#[derive(Debug, Args)]
pub struct JobArgs {
    /// The job file (TOML).
    pub job: PathBuf,

    /// Use this input file instead of the job's [input] path.
    #[arg(long)]
    pub input: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub job: JobArgs,

    /// Print the estimate as one JSON object (keys in SPEC section 1).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub job: JobArgs,

    /// Write the outputs here instead of the job's [output] dir.
    #[arg(long)]
    pub output: Option<PathBuf>,

    /// Call this WeChat base URL (or "sim") instead of the job's [api] base_url.
    #[arg(long)]
    pub base_url: Option<String>,

    /// Stop after starting this many chunks (exit 75; run again to go on).
    #[arg(long)]
    pub max_chunks: Option<u64>,

    /// Stop dispatching after this long, e.g. 4m (exit 75; run again to go on).
    #[arg(long, value_parser = crate::duration::arg)]
    pub deadline: Option<std::time::Duration>,

    /// Discard this run's checkpoint and start over.
    #[arg(long)]
    pub fresh: bool,

    /// Progress display on stderr.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,

    #[command(flatten)]
    pub config: SimConfig,

    #[command(flatten)]
    pub push: PushArgs,
}

/// Pushing verdicts to a `riskbatch receive` URL instead of serving.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Push feedback verdicts to this URL (a `riskbatch receive`), print a JSON report, exit.
    #[arg(long)]
    pub push_to: Option<String>,

    /// Verdicts to push.
    #[arg(long, default_value_t = 100)]
    pub push_count: u64,

    /// Pushes per second.
    #[arg(long, default_value_t = 100)]
    pub push_rate: u32,

    /// Pushes in flight at most.
    #[arg(long, default_value_t = 16)]
    pub push_concurrency: usize,

    #[arg(long, value_enum, default_value = "safe")]
    pub push_mode: crate::sim::push::PushMode,

    #[arg(long, value_enum, default_value = "xml")]
    pub push_format: crate::sim::push::PushFormat,

    /// The variable holding the push Token.
    #[arg(long, default_value = "WECHAT_PUSH_TOKEN")]
    pub push_token_env: String,

    /// The variable holding the EncodingAESKey (compatible and safe mode).
    #[arg(long, default_value = "WECHAT_PUSH_AES_KEY")]
    pub push_aes_key_env: String,

    /// The appid sealed into safe-mode messages.
    #[arg(long, default_value = "wxsim000000000000")]
    pub push_appid: String,

    /// Verdicts are about openids PREFIX000000, PREFIX000001, …
    #[arg(long, default_value = "oPush")]
    pub push_openid_prefix: String,
}

#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// The job file (TOML) with a [push] section.
    pub job: PathBuf,

    /// Address to listen on (behind a TLS reverse proxy for WeChat).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
}

#[derive(Debug, Args)]
pub struct GenArgs {
    /// Number of participants.
    #[arg(long)]
    pub rows: u64,

    /// Output file: .csv or .parquet.
    #[arg(long)]
    pub out: PathBuf,

    /// Seed: the same seed writes the same file.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}
