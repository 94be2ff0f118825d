//! `riskbatch check`: validates the job and the input and says what a run
//! would do — rows, bad rows, duplicates, cache hits, calls, time and cost —
//! with no request to WeChat.

use std::time::Duration;

use anyhow::Result;

use crate::cli::CheckArgs;
use crate::duration::human;
use crate::estimate::pace::Pace;
use crate::estimate::{Estimate, plan};
use crate::exit::Exit;
use crate::input::{self, InputCount, InputFile};
use crate::job::Job;
use crate::runner::Lists;
use crate::state::store::{RunRecord, Store, run_id};

pub fn execute(args: CheckArgs) -> Result<Exit> {
    let (job, input) = super::load(&args.job)?;
    let lists = Lists::load(&job)?;
    crate::state::check_folder(&job, false)?;
    crate::cmd::run::check_output_folder(&job)?;
    let count = input.count()?;
    let store = Store::open_existing(&job.state_dir)?;
    let fingerprint = input::fingerprint(&input.path)?;
    let run = match &store {
        Some(store) => store.find_run(&run_id(&job.name, &fingerprint))?,
        None => None,
    };
    let plan = plan(&job, &input, &lists, store.as_ref(), run.as_ref())?;
    let measured = store.as_ref().map(Store::measured_pace).transpose()?;
    let pace = Pace::for_job(&job, measured);
    let estimate = Estimate::new(plan, pace, &job);
    if args.json {
        println!("{}", serde_json::to_string(&estimate)?);
    } else {
        print_estimate(&job, &input, &fingerprint, run.as_ref(), &count, &estimate);
    }
    Ok(Exit::Complete)
}

fn print_estimate(
    job: &Job,
    input: &InputFile,
    fingerprint: &str,
    run: Option<&RunRecord>,
    count: &InputCount,
    estimate: &Estimate,
) {
    let plan = &estimate.plan;
    println!("job       {} ({})", job.name, job.file.display());
    println!(
        "input     {} ({} columns, fingerprint {fingerprint})",
        input.path.display(),
        input.schema.fields().len()
    );
    match run {
        Some(run) if run.completed_at.is_some() => println!(
            "run       {} is complete: running it again makes no call",
            run.run_id
        ),
        Some(run) => println!(
            "run       {} in progress: {}/{} rows done",
            run.run_id, plan.done, plan.rows
        ),
        None => println!("run       new ({}-{fingerprint})", job.name),
    }
    match count.lines {
        Some(lines) => println!(
            "lines     {lines} physical lines read (header included), making {} rows{}",
            count.rows,
            if lines > count.rows + 1 {
                " (the other lines are quoted line breaks or blank lines)"
            } else {
                ""
            }
        ),
        None => println!("lines     none (Parquet): {} rows", count.rows),
    }
    println!(
        "rows      {}: {} valid, {} invalid, {} done",
        plan.rows,
        plan.rows - plan.invalid_rows,
        plan.invalid_rows,
        plan.done
    );
    println!(
        "requests  {} duplicate rows, {} on allow/deny lists, {} answered by the cache",
        plan.duplicates, plan.listed, plan.cached
    );
    println!(
        "calls     {} still to send: {} {}",
        plan.calls,
        human(Duration::from_secs_f64(estimate.time.seconds.min(1e9))),
        estimate.pace.describe(&estimate.time, job)
    );
    match estimate.cost {
        Some(cost) => println!(
            "cost      {cost:.2} ({} calls × {})",
            plan.calls,
            job.api.price_per_call.unwrap_or(0.0)
        ),
        None => println!("cost      unknown: set [api] price_per_call to see it"),
    }
    for example in &plan.bad_examples {
        println!("invalid   {example}");
    }
    if plan.invalid_rows > plan.bad_examples.len() as u64 {
        println!(
            "invalid   ... and {} more",
            plan.invalid_rows - plan.bad_examples.len() as u64
        );
    }
}
