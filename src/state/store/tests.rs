use super::*;
use crate::outcome::Answer;

fn outcome(row: u64, status: RowStatus, level: Option<u8>) -> RowOutcome {
    RowOutcome {
        row,
        answer: Answer {
            status,
            level,
            errcode: Some(0),
            code: Some(0),
            message: Some("ok".into()),
            request_id: Some(format!("r{row}")),
            checked_at: 1000 + row as i64,
        },
        source: Some(RiskSource::Api),
        attempts: 1,
    }
}

#[test]
fn rows_answers_and_chunks_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let run = {
        let mut store = Store::open(dir.path()).unwrap();
        let run = store.create_run("job-abc", "abc", "/in.csv", 2, 1).unwrap();
        store
            .put_row(run.id, &outcome(1, RowStatus::Ok, Some(3)))
            .unwrap();
        store
            .put_row(run.id, &outcome(2, RowStatus::OpenidExpired, None))
            .unwrap();
        store.put_answer(&[7; 16], run.id, 1).unwrap();
        store.mark_chunk_done(run.id, 0, 5).unwrap();
        store
            .add_calls(
                run.id,
                CallTally {
                    sent: 3,
                    retries: 1,
                    ..CallTally::default()
                },
                5,
            )
            .unwrap();
        store.commit().unwrap();
        // Written but never committed: must not be there after a crash.
        store
            .put_row(run.id, &outcome(3, RowStatus::Ok, Some(0)))
            .unwrap();
        run
    };
    let store = Store::open(dir.path()).unwrap();
    let found = store.find_run("job-abc").unwrap().unwrap();
    assert_eq!((found.calls_sent, found.retries), (3, 1));
    let rows = store.rows_between(run.id, 1, 10).unwrap();
    assert_eq!(
        rows,
        vec![
            outcome(1, RowStatus::Ok, Some(3)),
            outcome(2, RowStatus::OpenidExpired, None)
        ]
    );
    assert_eq!(store.done_chunks(run.id).unwrap(), HashSet::from([0]));
    let answer = store.answer(&[7; 16]).unwrap().unwrap();
    assert_eq!((answer.run, answer.answer.level), (run.id, Some(3)));
    assert!(store.answer(&[8; 16]).unwrap().is_none());
    let counts = store.counts(run.id).unwrap();
    assert_eq!(counts.done, 2);
    assert_eq!(counts.levels, [0, 0, 0, 1, 0]);
    assert_eq!(counts.statuses[&RowStatus::OpenidExpired], 1);
}

#[test]
fn counts_group_every_row_of_the_run_and_only_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let run = store.create_run("job-a", "a", "/in.csv", 2, 1).unwrap();
    let other = store.create_run("job-b", "b", "/in.csv", 2, 1).unwrap();
    for row in 1..=5 {
        store
            .put_row(run.id, &outcome(row, RowStatus::Ok, Some(3)))
            .unwrap();
    }
    let mut duplicate = outcome(6, RowStatus::Ok, Some(0));
    duplicate.source = Some(RiskSource::Duplicate);
    store.put_row(run.id, &duplicate).unwrap();
    let mut failed = outcome(7, RowStatus::Failed, None);
    failed.answer.errcode = Some(-1);
    failed.source = None;
    store.put_row(run.id, &failed).unwrap();
    store
        .put_row(other.id, &outcome(1, RowStatus::Ok, Some(1)))
        .unwrap();
    store.commit().unwrap();

    let counts = store.counts(run.id).unwrap();
    assert_eq!(counts.done, 6, "the failed row is not final");
    assert_eq!(counts.levels, [1, 0, 0, 5, 0]);
    assert_eq!(counts.statuses[&RowStatus::Ok], 6);
    assert_eq!(counts.statuses[&RowStatus::Failed], 1);
    assert_eq!(counts.sources[&RiskSource::Api], 5);
    assert_eq!(counts.sources[&RiskSource::Duplicate], 1);
    assert_eq!(counts.errcodes, BTreeMap::from([(-1, 1)]));
    assert_eq!(counts.last_checked_at, Some(1007));
}

#[test]
fn reuse_is_duplicate_in_the_run_and_cache_only_for_fresh_ok_answers() {
    let day = Duration::from_secs(86400);
    let stored = |run, status| StoredAnswer {
        run,
        answer: Answer::local(status, Some(1), None, 1_000),
    };
    let ok = stored(1, RowStatus::Ok);
    assert_eq!(ok.reuse(Some(1), 5_000, day), Some(RiskSource::Duplicate));
    assert_eq!(ok.reuse(Some(2), 5_000, day), Some(RiskSource::Cache));
    assert_eq!(ok.reuse(None, 5_000, day), Some(RiskSource::Cache));
    assert_eq!(ok.reuse(Some(2), 1_000 + 86_400_001, day), None, "too old");
    assert_eq!(
        ok.reuse(Some(2), 1_000, Duration::ZERO),
        None,
        "cache disabled"
    );
    let expired = stored(1, RowStatus::OpenidExpired);
    assert_eq!(
        expired.reuse(Some(1), 5_000, day),
        Some(RiskSource::Duplicate)
    );
    assert_eq!(
        expired.reuse(Some(2), 5_000, day),
        None,
        "verdicts are not cached"
    );
}

#[test]
fn delete_run_forgets_everything_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let run = store.create_run("job-abc", "abc", "/in.csv", 2, 1).unwrap();
    store
        .put_row(run.id, &outcome(1, RowStatus::Ok, Some(1)))
        .unwrap();
    store.put_answer(&[1; 16], run.id, 1).unwrap();
    store.commit().unwrap();
    store.delete_run(run.id).unwrap();
    assert!(store.find_run("job-abc").unwrap().is_none());
    assert!(store.answer(&[1; 16]).unwrap().is_none());
}
