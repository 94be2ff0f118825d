//! `riskbatch run`: the whole job — resume or start the run for this input,
//! call the API for every row not yet decided, write the outputs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::cli::{LogFormat, RunArgs};
use crate::clock::now_ms;
use crate::exit::{Exit, usage};
use crate::input::InputFile;
use crate::job::{BaseUrl, Job, TokenSource};
use crate::outcome::PauseReason;
use crate::output::owner::{owning_job, results_are_own};
use crate::pacer::Pacer;
use crate::report::clusters::Found;
use crate::report::summary::RunState;
use crate::report::{Ending, Invocation, write_reports};
use crate::results::{stored_clusters, write_results};
use crate::runner::{Bounds, CallSide, Lists, RunEnd, Runner};
use crate::state::State;
use crate::state::store::{RunRecord, Store};
use crate::state::token_cache::TokenCache;
use crate::wechat::client::RiskClient;
use crate::wechat::token::{Credentials, TokenProvider};
use crate::wechat::transport::Transport;

/// Credentials the embedded simulator accepts when none are set.
const SIM_APPID: &str = "wxsim000000000000";
const SIM_SECRET: &str = "sim-secret";

pub fn execute(args: RunArgs, log_format: LogFormat) -> Result<Exit> {
    let started_at = now_ms();
    let started = Instant::now();
    let (job, input) = load(&args)?;
    let lists = Lists::load(&job)?;
    let credentials = credentials(&job)?;
    crate::state::check_folder(&job, true)?;
    check_output_folder(&job)?;
    let State {
        _lock,
        mut store,
        run,
    } = match State::open(&job, &input, args.fresh)? {
        Some(state) => state,
        None => return Ok(Exit::Paused),
    };
    let mut invocation = Invocation {
        started_at,
        rows_decided: 0,
        calls_sent: 0,
    };
    // From here on every exit writes summary.json, failures included.
    let result = if run.completed_at.is_some() {
        already_complete(&job, &input, &mut store, &run, &invocation, log_format)
    } else {
        let session = Session {
            job: &job,
            input: &input,
            run: &run,
            lists: &lists,
            started,
            log_format,
        };
        session.invoke(&args, credentials, &mut store, &mut invocation)
    };
    result.inspect_err(|err| write_failure(&job, &store, &run, err, &invocation))
}

/// The job file with the command line's overrides, and its input.
fn load(args: &RunArgs) -> Result<(Job, InputFile)> {
    let (mut job, input) = super::load(&args.job)?;
    if let Some(dir) = &args.output {
        job.output.dir =
            crate::job::normalize(&std::path::absolute(dir).unwrap_or_else(|_| dir.clone()));
    }
    if let Some(url) = &args.base_url {
        job.api.base_url = match url.as_str() {
            "sim" => BaseUrl::Sim,
            u if u.starts_with("http://") || u.starts_with("https://") => {
                BaseUrl::Url(u.trim_end_matches('/').into())
            }
            other => {
                return Err(usage(format!(
                    "--base-url {other}: use \"sim\" or an http(s) URL"
                )));
            }
        };
    }
    Ok((job, input))
}

/// An output folder belongs to one job: refuse one that holds another job's files.
pub fn check_output_folder(job: &Job) -> Result<()> {
    match owning_job(&job.output.dir) {
        Some(other) if other != job.name => Err(usage(format!(
            "the output folder {} holds the outputs of job \"{other}\" (its summary.json and \
             results.parquet say so), and job \"{}\" would overwrite them; give this job its own \
             [output] dir in {} (or pass --output), or remove those files if job \"{other}\" is gone",
            job.output.dir.display(),
            job.name,
            job.file.display()
        ))),
        _ => Ok(()),
    }
}

/// The result files the job asks for, by name.
fn wanted_results(job: &Job) -> Vec<&'static str> {
    [
        ("results.parquet", job.output.parquet),
        ("results.csv", job.output.csv),
    ]
    .into_iter()
    .filter(|(_, wanted)| *wanted)
    .map(|(name, _)| name)
    .collect()
}

/// A complete run run again: no call; its result files are written again
/// unless those present are its own.
fn already_complete(
    job: &Job,
    input: &InputFile,
    store: &mut Store,
    run: &RunRecord,
    invocation: &Invocation,
    log_format: LogFormat,
) -> Result<Exit> {
    let own = results_are_own(&job.output.dir, &run.run_id, &wanted_results(job));
    let (outputs, clusters) = if own {
        (Vec::new(), stored_clusters(store, run.id)?)
    } else {
        tracing::info!(
            "the result files in {} are not this run's; writing them again from the checkpoint",
            job.output.dir.display()
        );
        write_results(job, input, store, run, false)?
    };
    let summary = write_reports(
        job,
        store,
        run.id,
        Ending {
            state: RunState::Complete,
            pause_reason: None,
            error: None,
            partial: false,
            clusters,
            outputs: outputs.clone(),
        },
        invocation,
    )?;
    tracing::info!(
        run_id = %run.run_id,
        "run {} is already complete: no call made",
        run.run_id
    );
    print_outcome(log_format, job, &summary, &outputs)?;
    Ok(Exit::Complete)
}

/// summary.json of a failed exit, as far as it can still be written.
fn write_failure(
    job: &Job,
    store: &Store,
    run: &RunRecord,
    err: &anyhow::Error,
    invocation: &Invocation,
) {
    let ending = Ending {
        state: RunState::Failed,
        pause_reason: None,
        error: Some(crate::redact::redact(&crate::exit::describe(err))),
        partial: false,
        clusters: Found::default(),
        outputs: Vec::new(),
    };
    if let Err(also) = write_reports(job, store, run.id, ending, invocation) {
        tracing::error!("summary.json could not be written either: {also:#}");
    }
}

/// One invocation of an unfinished run.
struct Session<'a> {
    job: &'a Job,
    input: &'a InputFile,
    run: &'a RunRecord,
    lists: &'a Lists,
    started: Instant,
    log_format: LogFormat,
}

impl Session<'_> {
    fn invoke(
        &self,
        args: &RunArgs,
        credentials: Option<Credentials>,
        store: &mut Store,
        invocation: &mut Invocation,
    ) -> Result<Exit> {
        let (job, run) = (self.job, self.run);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("riskbatch-io")
            .build()
            .context("starting the async runtime")?;
        let interrupted = Arc::new(AtomicBool::new(false));
        runtime.spawn(watch_signals(interrupted.clone()));
        let (calls, _sim) = call_side(job, run, &runtime, credentials)?;
        let bounds = Bounds {
            max_chunks: args.max_chunks,
            deadline: args.deadline.map(|d| self.started + d),
        };
        tracing::info!(
            run_id = %run.run_id,
            rows = run.rows_total.unwrap_or(0),
            rate = job.throttle.rate,
            concurrency = job.throttle.concurrency,
            "running {} on {}",
            run.run_id,
            self.input.path.display()
        );
        record_pace(job, store, run)?;
        let calling = Instant::now();
        let report = Runner::new(
            job,
            self.input,
            store,
            run,
            self.lists,
            &calls,
            bounds,
            interrupted,
        )
        .run(args.progress);
        // Only for the report's actual time: never worth failing the run for.
        if let Err(err) = store.add_calling_time(run.id, calling.elapsed().as_millis() as u64) {
            tracing::warn!("could not record the time spent calling: {err:#}");
        }
        let report = report?;
        invocation.rows_decided = report.rows_decided;
        invocation.calls_sent = report.calls_sent;
        let exit = self.finish(store, &report.end, invocation);
        drop(runtime);
        exit
    }

    /// Writes the outputs of the invocation's end and says what happened.
    fn finish(&self, store: &mut Store, end: &RunEnd, invocation: &Invocation) -> Result<Exit> {
        let (job, run) = (self.job, self.run);
        let (exit, state, reason, error) = match end {
            RunEnd::Complete => (Exit::Complete, RunState::Complete, None, None),
            RunEnd::Paused(reason) => (Exit::Paused, RunState::Paused, Some(*reason), None),
            RunEnd::Failed(message) => {
                (Exit::Failed, RunState::Failed, None, Some(message.clone()))
            }
        };
        let (outputs, clusters) = if state == RunState::Complete {
            store.set_completed(run.id, now_ms())?;
            store.commit()?;
            tracing::info!("every row has its outcome; writing the result files");
            let writing = Instant::now();
            let written = write_results(job, self.input, store, run, false)?;
            tracing::info!(
                "wrote the result files in {:.1}s",
                writing.elapsed().as_secs_f64()
            );
            written
        } else {
            (Vec::new(), Found::default())
        };
        let ending = Ending {
            state,
            pause_reason: reason,
            error,
            partial: false,
            clusters,
            outputs: outputs.clone(),
        };
        let summary = write_reports(job, store, run.id, ending, invocation)?;
        print_outcome(self.log_format, job, &summary, &outputs)?;
        match (end, reason) {
            (RunEnd::Failed(message), _) => {
                tracing::error!("the run failed: {message}");
            }
            (_, Some(reason)) => {
                tracing::warn!(
                    pause_reason = reason.as_str(),
                    "paused ({}): run the same command again to continue",
                    pause_explanation(reason)
                );
            }
            _ => {}
        }
        Ok(exit)
    }
}

/// Keeps the pace the run's first invocation estimated with, so that the
/// report can set the estimate against the actual time.
fn record_pace(job: &Job, store: &mut Store, run: &RunRecord) -> Result<()> {
    let pace = crate::estimate::pace::Pace::for_job(job, Some(store.measured_pace()?));
    store.set_pace(run.id, &serde_json::to_string(&pace)?)
}

/// The risk client and what it needs: the embedded simulator when asked
/// for (kept alive by the second value), tokens, pacing.
fn call_side(
    job: &Job,
    run: &RunRecord,
    runtime: &tokio::runtime::Runtime,
    credentials: Option<Credentials>,
) -> Result<(CallSide, Option<crate::sim::SimHandle>)> {
    let (base_url, sim) = match &job.api.base_url {
        BaseUrl::Url(url) => (url.clone(), None),
        BaseUrl::Sim => {
            let sim = runtime.block_on(crate::sim::start(job.sim.clone(), "127.0.0.1:0"))?;
            tracing::info!("using the embedded simulator at {}", sim.base_url());
            (sim.base_url(), Some(sim))
        }
    };
    let http = Arc::new(Transport::new(&base_url, job.throttle.timeout)?);
    let cache = token_cache(job, credentials.as_ref(), &base_url)?;
    let credentials_appid = credentials.as_ref().map(|c| c.appid.clone());
    let mut tokens =
        TokenProvider::new(http.clone(), &base_url, job.api.token.clone(), credentials);
    if let Some(cache) = cache {
        tokens = tokens.with_cache(cache);
    }
    let client = RiskClient::new(
        http,
        &base_url,
        job.api.path,
        job.scene,
        Arc::new(tokens),
        Arc::new(Pacer::new(job.throttle.rate)),
        job.throttle.max_retries,
        run.fingerprint.chars().take(8).collect(),
    )?;
    let client = Arc::new(match job.scene {
        crate::wechat::Scene::Rank(_) => client.with_appid(rank_appid(job, credentials_appid)?),
        _ => client,
    });
    let calls = CallSide {
        runtime: runtime.handle().clone(),
        client,
    };
    Ok((calls, sim))
}

fn pause_explanation(reason: PauseReason) -> &'static str {
    match reason {
        PauseReason::MaxChunks => "--max-chunks reached",
        PauseReason::Deadline => "--deadline reached",
        PauseReason::DailyQuota => "WeChat's daily quota is used up (45009); resume tomorrow",
        PauseReason::InsufficientBalance => {
            "the risk service balance is used up (code 13); resume after a top-up"
        }
        PauseReason::Interrupted => "interrupted by a signal",
        PauseReason::TestQuota => {
            "the rank API's test quota is used up (9410009); resume when it is renewed"
        }
        PauseReason::FailedRows => "some rows ran out of retries; they are tried again next time",
    }
}

fn print_outcome(
    format: LogFormat,
    job: &Job,
    summary: &crate::report::summary::Summary,
    outputs: &[std::path::PathBuf],
) -> Result<()> {
    let levels = &summary.risk_levels;
    let level = |k: &str| levels.get(k).copied().unwrap_or(0);
    let headline = format!(
        "{}: {} — {}/{} rows done, {} calls sent; risk none {} / low {} / medium {} / high {}",
        summary.run_id,
        summary.state.as_str(),
        summary.rows.done,
        summary.rows.total,
        summary.calls.sent,
        level("0"),
        level("1"),
        level("2"),
        level("3"),
    );
    super::print_summary(format, &headline, job, summary, outputs)
}

/// Where the token is shared with other processes: not for the embedded
/// simulator (its tokens die with the process) nor for a token command (it is
/// the shared source itself).
fn token_cache(
    job: &Job,
    credentials: Option<&Credentials>,
    base_url: &str,
) -> Result<Option<TokenCache>> {
    let located = crate::state::token_cache::token_dir();
    let dir = located.as_ref().ok().map(|(dir, _)| dir.as_path());
    crate::state::token_cache::remove_old_tokens(&job.shared_state_dir, dir)?;
    let endpoint = match (&job.api.base_url, &job.api.token) {
        (BaseUrl::Sim, _) | (_, TokenSource::Command(_)) => return Ok(None),
        (_, TokenSource::Stable) => "stable_token",
        (_, TokenSource::ClientCredential) => "token",
    };
    let Some(credentials) = credentials else {
        return Ok(None);
    };
    let (dir, setting) = located?;
    crate::state::token_cache::open_token_dir(&dir, setting)?;
    Ok(Some(TokenCache::new(
        &dir,
        &credentials.appid,
        endpoint,
        base_url,
    )))
}

/// The appid the rank API's body names: the credentials', or with a token
/// command the appid variable alone.
fn rank_appid(job: &Job, credentials_appid: Option<String>) -> Result<String> {
    credentials_appid
        .or_else(|| std::env::var(&job.api.appid_env).ok())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            usage(format!(
                "scene = \"rank\" sends the appid in every request: set {} (named by [api] appid_env in {})",
                job.api.appid_env,
                job.file.display()
            ))
        })
}

/// The appid and secret from the environment; the simulator accepts stand-ins.
fn credentials(job: &Job) -> Result<Option<Credentials>> {
    let appid = std::env::var(&job.api.appid_env)
        .ok()
        .filter(|v| !v.is_empty());
    let secret = std::env::var(&job.api.secret_env)
        .ok()
        .filter(|v| !v.is_empty());
    match (appid, secret, &job.api.base_url, &job.api.token) {
        (Some(appid), Some(secret), _, _) => Ok(Some(Credentials { appid, secret })),
        (_, _, _, TokenSource::Command(_)) => Ok(None),
        (appid, secret, BaseUrl::Sim, _) => Ok(Some(Credentials {
            appid: appid.unwrap_or_else(|| SIM_APPID.into()),
            secret: secret.unwrap_or_else(|| SIM_SECRET.into()),
        })),
        (appid, _, BaseUrl::Url(_), _) => {
            let missing = if appid.is_none() {
                &job.api.appid_env
            } else {
                &job.api.secret_env
            };
            Err(usage(format!(
                "{}: the environment variable {missing} is not set; export the WeChat appid and secret \
                 (named by api.appid_env and api.secret_env) before running",
                job.file.display()
            )))
        }
    }
}

/// First SIGINT/SIGTERM: stop dispatching and checkpoint. Second: leave at once
/// (still resumable: every committed row is kept).
async fn watch_signals(interrupted: Arc<AtomicBool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if interrupted.swap(true, Ordering::SeqCst) {
                eprintln!("riskbatch: second signal, exiting now; run again to resume");
                std::process::exit(Exit::Paused as i32);
            }
            eprintln!("riskbatch: stopping after the calls in flight (signal again to exit now)");
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        interrupted.store(true, Ordering::SeqCst);
    }
}
