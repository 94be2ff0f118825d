//! `riskbatch report`: writes the result files and the summary from the
//! checkpoint store at any moment; an unfinished run's files are marked partial.

use anyhow::Result;

use crate::cli::{JobArgs, LogFormat};
use crate::clock::now_ms;
use crate::exit::{Exit, usage};
use crate::input;
use crate::report::summary::RunState;
use crate::report::{Ending, Invocation, write_reports};
use crate::results::write_results;
use crate::state::lock::{Locked, try_lock};
use crate::state::store::Store;

pub fn execute(args: JobArgs, format: LogFormat) -> Result<Exit> {
    let started_at = now_ms();
    let (job, input) = super::load(&args)?;
    let fingerprint = input::fingerprint(&input.path)?;
    let run_id = crate::state::store::run_id(&job.name, &fingerprint);
    let missing = || {
        usage(format!(
            "no run of job {} for {} yet; `riskbatch run` starts it",
            job.name,
            input.path.display()
        ))
    };
    let mut store = Store::open_existing(&job.state_dir)?.ok_or_else(missing)?;
    let run = store.find_run(&run_id)?.ok_or_else(missing)?;
    // Calls a killed invocation finished but did not commit are in its
    // journal; a running invocation owns its journal, so only without one.
    if let Locked::Acquired(_lock) = try_lock(&job.state_dir)? {
        crate::state::journal::replay(&mut store, &job.state_dir, run.id)?;
    }
    let partial = run.completed_at.is_none();
    let (outputs, clusters) = write_results(&job, &input, &mut store, &run, partial)?;
    let state = if partial {
        RunState::Paused
    } else {
        RunState::Complete
    };
    let invocation = Invocation {
        started_at,
        rows_decided: 0,
        calls_sent: 0,
    };
    let ending = Ending {
        state,
        pause_reason: None,
        error: None,
        partial,
        clusters,
        outputs: outputs.clone(),
    };
    let summary = write_reports(&job, &store, run.id, ending, &invocation)?;
    let headline = format!(
        "{}: {} report, {}/{} rows done{}",
        summary.run_id,
        if partial { "partial" } else { "complete" },
        summary.rows.done,
        summary.rows.total,
        summary
            .input
            .lines
            .map_or(String::new(), |l| format!(" ({l} physical lines read)"))
    );
    super::print_summary(format, &headline, &job, &summary, &outputs)?;
    Ok(Exit::Complete)
}
