//! `riskbatch status`: the progress of the run for this input, from the
//! checkpoint store, and whether a process is running it now.

use anyhow::Result;

use crate::cli::JobArgs;
use crate::clock::iso_ms;
use crate::exit::Exit;
use crate::input;
use crate::outcome::RowStatus;
use crate::state::store::Store;

pub fn execute(args: JobArgs) -> Result<Exit> {
    let (job, input) = super::load(&args)?;
    crate::state::check_folder(&job, false)?;
    let fingerprint = input::fingerprint(&input.path)?;
    let run_id = crate::state::store::run_id(&job.name, &fingerprint);
    let running = crate::state::lock::holder(&job.state_dir)?;
    let store = Store::open_existing(&job.state_dir)?;
    let run = match &store {
        Some(store) => store.find_run(&run_id)?,
        None => None,
    };
    println!("job        {} ({})", job.name, job.file.display());
    println!("input      {}", input.path.display());
    match running {
        Some(pid) => println!(
            "running    yes, {}",
            pid.map_or("by another process".to_string(), |p| format!("process {p}"))
        ),
        None => println!("running    no"),
    }
    let (Some(store), Some(run)) = (store, run) else {
        println!("run        none yet for this input ({run_id}); `riskbatch run` starts it");
        return Ok(Exit::Complete);
    };
    let counts = store.counts(run.id)?;
    let total = run.rows_total.unwrap_or(0);
    let failed = counts
        .statuses
        .get(&RowStatus::Failed)
        .copied()
        .unwrap_or(0);
    let chunks_total = total.div_ceil(u64::from(run.chunk_size));
    println!(
        "run        {} ({})",
        run.run_id,
        if run.completed_at.is_some() {
            "complete"
        } else {
            "unfinished"
        }
    );
    println!(
        "rows       {} done, {} pending ({failed} of them failed, retried next run), {total} in all",
        counts.done,
        total.saturating_sub(counts.done)
    );
    if let Some(lines) = run.lines_total {
        println!("lines      {lines} physical lines read (header included)");
    }
    println!(
        "chunks     {}/{chunks_total} done",
        store.chunks_done_count(run.id)?
    );
    println!(
        "risk       none {} / low {} / medium {} / high {}{}",
        counts.levels[0],
        counts.levels[1],
        counts.levels[2],
        counts.levels[3],
        if counts.levels[4] > 0 {
            format!(" / very high {}", counts.levels[4])
        } else {
            String::new()
        }
    );
    let statuses: Vec<String> = counts
        .statuses
        .iter()
        .map(|(s, n)| format!("{} {n}", s.as_str()))
        .collect();
    println!("statuses   {}", statuses.join(", "));
    println!(
        "calls      {} sent, {} retries",
        run.calls_sent, run.retries
    );
    println!(
        "activity   started {}, last {}",
        iso_ms(run.created_at),
        iso_ms(run.last_activity)
    );
    for other in store.unfinished_runs_except(&run.run_id)? {
        println!(
            "other      unfinished run {} on {}",
            other.run_id, other.input_path
        );
    }
    Ok(Exit::Complete)
}
