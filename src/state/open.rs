//! Opening a job's state for a run: the lock, the checkpoint store, the run
//! of this input (resumed, or new), and the calls an interrupted invocation
//! left in its outcome journal.

use anyhow::{Context, Result};

use crate::clock::now_ms;
use crate::exit::usage;
use crate::input::{self, InputFile};
use crate::job::Job;
use crate::output::owner::previous_summary;
use crate::state::lock::{JobLock, Locked, try_lock};
use crate::state::store::{RunRecord, Store};

/// A job's state, held for one invocation of `run`.
pub struct State {
    /// Held until dropped: no other process runs the job meanwhile.
    pub _lock: JobLock,
    pub store: Store,
    pub run: RunRecord,
}

impl State {
    /// Takes the lock, opens the store and the run of `input` (discarding it
    /// first with `fresh`), and replays the journal of an interrupted
    /// invocation. None when another process runs the job (cron overlap):
    /// nothing is done then, and the log says so.
    pub fn open(job: &Job, input: &InputFile, fresh: bool) -> Result<Option<State>> {
        let lock = match try_lock(&job.state_dir)? {
            Locked::Acquired(lock) => lock,
            Locked::Busy(pid) => {
                let who = pid.map_or("another process".to_string(), |p| format!("process {p}"));
                tracing::warn!(
                    "job {} is already running in {who} (lock {}); nothing done, exiting 75",
                    job.name,
                    job.state_dir.join("lock").display()
                );
                return Ok(None);
            }
        };
        let mut store = open_store(job, fresh)?;
        let run = open_run(job, input, &mut store, fresh)?;
        if !job.output.mask.is_empty() {
            super::mask_salt(&job.state_dir)?;
        }
        let recovered = super::journal::replay(&mut store, &job.state_dir, run.id)?;
        if recovered > 0 {
            tracing::info!(
                "recovered {recovered} finished calls from the outcome journal of an interrupted invocation"
            );
        }
        Ok(Some(State {
            _lock: lock,
            store,
            run,
        }))
    }
}

/// Opens the job's checkpoint store. A store that cannot be read stops the
/// run (exit 2) with what to do; `--fresh` moves it aside and starts a new one.
fn open_store(job: &Job, fresh: bool) -> Result<Store> {
    match Store::open(&job.state_dir) {
        Ok(store) => Ok(store),
        Err(err) if fresh => {
            let path = job.state_dir.join("checkpoint.sqlite");
            let stamp = now_ms();
            let aside = job
                .state_dir
                .join(format!("checkpoint.sqlite.unreadable-{stamp}"));
            tracing::warn!(
                "--fresh: the checkpoint {} cannot be read ({err:#}); moved aside to {} and starting over",
                path.display(),
                aside.display()
            );
            std::fs::rename(&path, &aside)
                .with_context(|| format!("moving {} aside", path.display()))?;
            for suffix in ["-wal", "-shm"] {
                let _ =
                    std::fs::remove_file(job.state_dir.join(format!("checkpoint.sqlite{suffix}")));
            }
            // The outcome journals belong to the store moved aside.
            for entry in std::fs::read_dir(&job.state_dir)?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("journal-") && name.ends_with(".jsonl") {
                    let _ = std::fs::rename(
                        entry.path(),
                        job.state_dir.join(format!("{name}.unreadable-{stamp}")),
                    );
                }
            }
            Store::open(&job.state_dir)
        }
        Err(err) => Err(usage(format!(
            "{err:#}; nothing was sent. Restore the checkpoint from a backup to resume where the \
             run stopped, or run again with --fresh to move it aside and start over (rows already \
             paid for would be paid again)"
        ))),
    }
}

/// Finds the run of this input, or starts one; `fresh` discards it first.
fn open_run(job: &Job, input: &InputFile, store: &mut Store, fresh: bool) -> Result<RunRecord> {
    let fingerprint = input::fingerprint(&input.path)?;
    let run_id = super::store::run_id(&job.name, &fingerprint);
    let mut found = store.find_run(&run_id)?;
    if fresh && let Some(run) = found.take() {
        tracing::info!("--fresh: discarding the checkpoint of run {}", run.run_id);
        super::journal::discard(&job.state_dir, run.id)?;
        store.delete_run(run.id)?;
    }
    if let Some(run) = found {
        if run.chunk_size != job.throttle.chunk_size {
            tracing::warn!(
                "run {} was started with chunk_size {}; keeping it (use --fresh to start over with {})",
                run.run_id,
                run.chunk_size,
                job.throttle.chunk_size
            );
        }
        if run.completed_at.is_none() {
            tracing::info!("resuming run {}", run.run_id);
        }
        return Ok(run);
    }
    if !fresh {
        refuse_lost_checkpoint(job, store, &run_id)?;
    }
    for other in store.unfinished_runs_except(&run_id)? {
        tracing::warn!(
            "an earlier run of job {} on another input is unfinished: {} ({}); it is kept and resumes if that input is run again",
            job.name,
            other.run_id,
            other.input_path
        );
    }
    let count = input.count()?;
    let mut run = store.create_run(
        &run_id,
        &fingerprint,
        &input.path.display().to_string(),
        job.throttle.chunk_size,
        now_ms(),
    )?;
    // Journals left by a checkpoint that is gone cannot be this run's.
    super::journal::discard(&job.state_dir, run.id)?;
    store.set_input_count(run.id, count.rows, count.lines)?;
    if !job.cache_ttl.is_zero() {
        store.prune_answers(now_ms() - job.cache_ttl.as_millis() as i64)?;
    }
    store.commit()?;
    run.rows_total = Some(count.rows);
    run.lines_total = count.lines;
    tracing::info!(
        "new run {} for {} ({} rows{})",
        run.run_id,
        input.path.display(),
        count.rows,
        count
            .lines
            .map_or(String::new(), |l| format!(", {l} lines"))
    );
    Ok(run)
}

/// A run the checkpoint does not know, although the job's summary.json says
/// it had begun: the checkpoint was deleted, moved or replaced. Starting
/// again would pay for every call again, so only `--fresh` does.
fn refuse_lost_checkpoint(job: &Job, store: &Store, run_id: &str) -> Result<()> {
    let Some(previous) = previous_summary(&job.output.dir) else {
        return Ok(());
    };
    let (done, total) = previous.rows.as_ref().map_or((0, 0), |r| (r.done, r.total));
    let paid = previous.calls.as_ref().map_or(0, |c| c.sent);
    if previous.job != job.name || previous.run_id != run_id || (done == 0 && paid == 0) {
        return Ok(());
    }
    Err(usage(format!(
        "the checkpoint {} has no record of run {run_id}, but {} says it had begun ({}: \
         {done} of {total} rows done, {paid} calls paid). The checkpoint was deleted, moved or \
         replaced (is [state] dir or RISKBATCH_STATE_DIR the same as before?). Starting again \
         would pay for up to {paid} calls again: restore the checkpoint from a backup to resume, \
         or run again with --fresh to start the run over",
        store.path().display(),
        job.output.dir.join("summary.json").display(),
        if previous.state.is_empty() {
            "unknown state"
        } else {
            previous.state.as_str()
        }
    )))
}
