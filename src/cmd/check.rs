//! `riskbatch check`: validates the job and the input and says what a run
//! would do — rows, distinct requests, bad rows, calls and time — with no
//! request to WeChat.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Result;

use crate::cli::JobArgs;
use crate::duration::human;
use crate::exit::Exit;
use crate::input;
use crate::outcome::RiskSource;
use crate::runner::Lists;
use crate::store::{Store, run_id};

const SHOW_BAD_ROWS: usize = 5;

pub fn execute(args: JobArgs) -> Result<Exit> {
    let (job, input) = super::load(&args)?;
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
    let done_rows = match (&store, &run) {
        (Some(store), Some(run)) => store.counts(run.id)?.done,
        _ => 0,
    };

    let mut rows = 0u64;
    let mut bad = 0u64;
    let mut bad_examples = Vec::new();
    let mut listed = 0u64;
    let mut cached = 0u64;
    let mut keys = HashSet::new();
    let now = crate::clock::now_ms();
    for chunk in input.chunks(job.throttle.chunk_size as usize)? {
        let chunk = chunk?;
        for (i, request) in input.requests(&chunk).into_iter().enumerate() {
            rows += 1;
            match request {
                Err(reason) => {
                    bad += 1;
                    if bad_examples.len() < SHOW_BAD_ROWS {
                        bad_examples.push(format!("row {}: {reason}", chunk.first_row + i as u64));
                    }
                }
                Ok(request) if lists.contains(&request.openid) => listed += 1,
                Ok(request) => {
                    let key = request.key(job.scene);
                    if keys.insert(key)
                        && let Some(store) = &store
                        && let Some(stored) = store.answer(&key)?
                        && stored.reuse(run.as_ref().map(|r| r.id), now, job.cache_ttl)
                            == Some(RiskSource::Cache)
                    {
                        cached += 1;
                    }
                }
            }
        }
    }
    let distinct = keys.len() as u64;
    let duplicates = rows - bad - listed - distinct;
    let to_call = distinct.saturating_sub(cached);
    let remaining_share = if rows > 0 {
        (rows - done_rows.min(rows)) as f64 / rows as f64
    } else {
        0.0
    };
    let calls_left = (to_call as f64 * remaining_share).ceil() as u64;
    let seconds = calls_left as f64 / f64::from(job.throttle.rate);

    println!("job       {} ({})", job.name, job.file.display());
    println!(
        "input     {} ({} columns, fingerprint {fingerprint})",
        input.path.display(),
        input.schema.fields().len()
    );
    match &run {
        Some(run) if run.completed_at.is_some() => println!(
            "run       {} is complete: running it again makes no call",
            run.run_id
        ),
        Some(run) => println!(
            "run       {} in progress: {done_rows}/{rows} rows done",
            run.run_id
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
    println!("rows      {rows}: {} valid, {bad} invalid", rows - bad);
    println!(
        "requests  {distinct} distinct; {duplicates} duplicate rows, {listed} on allow/deny lists, {cached} in the cache"
    );
    println!(
        "calls     about {calls_left} at {}/s with concurrency {}: {} (more if WeChat asks for retries)",
        job.throttle.rate,
        job.throttle.concurrency,
        human(Duration::from_secs_f64(seconds))
    );
    for example in &bad_examples {
        println!("invalid   {example}");
    }
    if bad > bad_examples.len() as u64 {
        println!("invalid   ... and {} more", bad - bad_examples.len() as u64);
    }
    Ok(Exit::Complete)
}
