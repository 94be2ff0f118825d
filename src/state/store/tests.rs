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
    assert_eq!(store.done_count(run.id).unwrap(), 6);
    assert_eq!(store.done_count(other.id).unwrap(), 1);
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
    put_answered(&mut store, run.id, 1, &[1; 16], 1);
    store.commit().unwrap();
    store.delete_run(run.id).unwrap();
    assert!(store.find_run("job-abc").unwrap().is_none());
    assert!(store.answer(&[1; 16]).unwrap().is_none());
}

/// Row `row` of `run` answered at `level`, and its answer indexed under
/// `key`, as the runner records a finished call.
fn put_answered(store: &mut Store, run: i64, row: u64, key: &RequestKey, level: u8) {
    store
        .put_row(run, &outcome(row, RowStatus::Ok, Some(level)))
        .unwrap();
    store.put_answer(key, run, row).unwrap();
}

/// Keys spread over the whole key space, as request digests are.
fn spread_key(n: u64) -> RequestKey {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    key[8..].copy_from_slice(&n.to_be_bytes());
    key
}

fn count(store: &Store, table: &str) -> i64 {
    store
        .conn
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// A store with one run whose rows `0..rows` have answers under `spread_key`.
fn store_with_answers(dir: &Path, rows: u64) -> (Store, RunRecord) {
    let mut store = Store::open(dir).unwrap();
    let run = store.create_run("job-a", "a", "/in.csv", 1000, 1).unwrap();
    for row in 0..rows {
        put_answered(&mut store, run.id, row, &spread_key(row), 1);
    }
    (store, run)
}

#[test]
fn fresh_answers_move_into_the_index_a_slice_per_commit_and_stay_found() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, run) = store_with_answers(dir.path(), 3000);
    store.commit().unwrap();
    let in_index_after_one = count(&store, "answers");
    assert!(
        (1..3000 / 4).contains(&in_index_after_one),
        "one slice moved: {in_index_after_one}"
    );
    // Each later commit moves one more slice, while new answers keep coming.
    for row in 3000..3000 + answers::SLICES as u64 {
        put_answered(&mut store, run.id, row, &spread_key(row), 2);
        store.commit().unwrap();
        for probe in [0, 1499, 2999, row] {
            let found = store.answer(&spread_key(probe)).unwrap().unwrap();
            assert_eq!(found.answer.request_id, Some(format!("r{probe}")));
        }
    }
    assert!(
        count(&store, "answers") >= 3000,
        "the first batch moved in full"
    );
    assert!(count(&store, "answers_fresh") <= answers::SLICES as i64);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_found(&store, (0..3000 + answers::SLICES as u64).step_by(7));
}

/// The entries of an index table, in order.
fn entries(store: &Store, table: &str) -> Vec<(Vec<u8>, i64, i64, i64)> {
    let generation = if table == "answers" { "0" } else { "gen" };
    let columns = format!("key, run, row, {generation}");
    let mut stmt = store
        .conn
        .prepare(&format!(
            "SELECT {columns} FROM {table} ORDER BY 1, 2, 3, 4"
        ))
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[test]
fn a_slice_moved_in_steps_between_writes_ends_as_one_moved_at_the_commit() {
    let (at_commit, stepped) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut a, run) = store_with_answers(at_commit.path(), 3000);
    let (mut b, _) = store_with_answers(stepped.path(), 3000);
    a.commit().unwrap();
    b.commit().unwrap();
    let mut last: HashMap<RequestKey, u64> = (0..3000).map(|row| (spread_key(row), row)).collect();
    for batch in 0..2 * answers::SLICES as u64 {
        // New keys, and keys of the first rows and of the batch before
        // answered again: a later row wins.
        let rows = (0..40).map(|n| 3000 + batch * 40 + n);
        for (n, row) in rows.enumerate() {
            let key = spread_key(match n % 4 {
                0 => row % 3000,
                1 => row - 40,
                _ => row,
            });
            last.insert(key, row);
            put_answered(&mut a, run.id, row, &key, 2);
            put_answered(&mut b, run.id, row, &key, 2);
            if n % 3 == 0 {
                b.step_answers_move().unwrap();
                assert_eq!(
                    b.answer(&key).unwrap().unwrap().answer.request_id,
                    Some(format!("r{row}"))
                );
            }
        }
        a.commit().unwrap();
        b.commit().unwrap();
        for table in answers::INDEX_TABLES {
            assert!(
                entries(&a, table) == entries(&b, table),
                "{table} after batch {batch}"
            );
        }
    }
    assert!(count(&b, "answers") > 3000);
    for (key, row) in last {
        let found = b.answer(&key).unwrap().unwrap();
        assert_eq!(found.answer.request_id, Some(format!("r{row}")));
    }
}

#[test]
fn a_row_or_a_step_the_store_refuses_is_an_error_naming_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, run) = store_with_answers(dir.path(), 3000);
    store.commit().unwrap();
    put_answered(&mut store, run.id, 3000, &spread_key(3000), 1);
    store.conn.pragma_update(None, "query_only", true).unwrap();
    let path = format!("checkpoint store {}", store.path().display());
    let named = |err: anyhow::Error| {
        let message = format!("{err:#}");
        assert!(
            message.contains(&path) && message.contains("readonly"),
            "{message}"
        );
    };
    named(store.step_answers_move().unwrap_err());
    named(
        store
            .put_row(run.id, &outcome(3001, RowStatus::Ok, Some(1)))
            .unwrap_err(),
    );
}

/// Asserts that the answer of each of `rows` (keyed by `spread_key`) is found.
fn assert_found(store: &Store, rows: impl Iterator<Item = u64>) {
    for row in rows {
        assert!(
            store.answer(&spread_key(row)).unwrap().is_some(),
            "row {row}"
        );
    }
}

#[test]
fn runs_of_one_commit_each_still_move_every_slice_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let run = Store::open(dir.path())
        .unwrap()
        .create_run("job-a", "a", "/in.csv", 1000, 1)
        .unwrap();
    // As from cron: a process, a commit, an exit.
    for process in 0..3 * answers::SLICES as u64 {
        let mut store = Store::open(dir.path()).unwrap();
        for row in process * 100..process * 100 + 100 {
            put_answered(&mut store, run.id, row, &spread_key(row), 1);
        }
        store.commit().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let (oldest, newest): (i64, i64) = store
        .conn
        .query_row("SELECT MIN(gen), MAX(gen) FROM answers_fresh", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(newest, 3 * answers::SLICES as i64);
    assert!(
        newest - oldest < answers::SLICES as i64,
        "generations {oldest}..={newest} left"
    );
    assert_found(&store, (0..3 * answers::SLICES as u64 * 100).step_by(37));
}

#[test]
fn a_newer_answer_in_the_fresh_table_wins_over_the_index_and_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let old = store.create_run("job-a", "a", "/in.csv", 1000, 1).unwrap();
    let new = store.create_run("job-b", "b", "/in.csv", 1000, 1).unwrap();
    let key = [0u8; 16];
    put_answered(&mut store, old.id, 1, &key, 1);
    // Slice 0 (the key's) moves at the first commit.
    store.commit().unwrap();
    assert_eq!(count(&store, "answers"), 1);
    put_answered(&mut store, new.id, 9, &key, 3);
    store.commit().unwrap();
    assert_eq!(count(&store, "answers_fresh"), 1, "slice 1 moved, not 0");
    assert_eq!(store.answer(&key).unwrap().unwrap().run, new.id);
    for row in 10..10 + answers::SLICES as u64 {
        store.put_answer(&spread_key(row), new.id, row).unwrap();
        store.commit().unwrap();
    }
    let (run, row): (i64, i64) = store
        .conn
        .query_row(
            "SELECT run, row FROM answers WHERE key = ?1",
            [&key[..]],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((run, row), (new.id, 9));
}

#[test]
fn delete_and_prune_reach_answers_still_in_the_fresh_table() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, run) = store_with_answers(dir.path(), 200);
    store.set_completed(run.id, 5).unwrap();
    store.commit().unwrap();
    assert!(count(&store, "answers_fresh") > 0);
    // Every row was checked at 1000 + row: rows below 1100 are pruned.
    let pruned = store.prune_answers(1100).unwrap();
    assert_eq!(pruned, 100);
    assert!(store.answer(&spread_key(5)).unwrap().is_none());
    assert!(store.answer(&spread_key(150)).unwrap().is_some());
    store.delete_run(run.id).unwrap();
    assert_eq!(count(&store, "answers") + count(&store, "answers_fresh"), 0);
}

#[test]
fn a_store_from_before_generations_keeps_its_answers_the_newer_winning() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, run) = store_with_answers(dir.path(), 50);
    store.commit().unwrap();
    // What an earlier version left: answers in `answers` and in a recent
    // table keyed by the request alone, where a newer answer to key 7 sits.
    store
        .conn
        .execute_batch(&format!(
            "INSERT OR REPLACE INTO answers SELECT key, run, row FROM answers_fresh;
             DELETE FROM answers_fresh;
             CREATE TABLE answers_recent (key BLOB PRIMARY KEY, run INTEGER NOT NULL, row INTEGER NOT NULL) WITHOUT ROWID;
             INSERT INTO answers_recent VALUES (x'{}', {}, 60);",
            hex(&spread_key(7)),
            run.id
        ))
        .unwrap();
    store
        .put_row(run.id, &outcome(60, RowStatus::Ok, Some(2)))
        .unwrap();
    store.commit().unwrap();
    drop(store);
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(count(&store, "answers"), 50);
    let tables: i64 = store
        .conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'answers_recent'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0);
    for row in 0..50 {
        let found = store.answer(&spread_key(row)).unwrap().unwrap();
        let expected = if row == 7 { 60 } else { row };
        assert_eq!(found.answer.request_id, Some(format!("r{expected}")));
    }
    put_answered(&mut store, run.id, 50, &spread_key(50), 2);
    store.commit().unwrap();
    assert!(store.answer(&spread_key(50)).unwrap().is_some());
}

fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    /// Any sequence of answers (keys reused, commits, steps of a move and
    /// restarts anywhere) is found as the last answer given for each key, before and after
    /// reopening.
    #[test]
    fn the_index_always_gives_the_last_answer_of_each_key(
        keys in proptest::collection::vec(proptest::prelude::any::<RequestKey>(), 1..12),
        steps in proptest::collection::vec((0usize..12, 0u8..8), 1..120),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let run = store.create_run("job-a", "a", "/in.csv", 1000, 1).unwrap();
        let mut last = HashMap::new();
        for (row, (pick, then)) in steps.into_iter().enumerate() {
            let (row, key) = (row as u64, keys[pick % keys.len()]);
            put_answered(&mut store, run.id, row, &key, 1);
            last.insert(key, row);
            match then {
                0..=3 => store.commit().unwrap(),
                4 => {
                    store.commit().unwrap();
                    store = Store::open(dir.path()).unwrap();
                }
                5 => store.step_answers_move().unwrap(),
                _ => {}
            }
            let found = store.answer(&key).unwrap().unwrap();
            proptest::prop_assert_eq!(found.answer.request_id, Some(format!("r{row}")));
        }
        store.commit().unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        for (key, row) in last {
            let found = store.answer(&key).unwrap().unwrap();
            proptest::prop_assert_eq!(found.answer.request_id, Some(format!("r{row}")));
        }
    }
}

#[test]
fn odd_entries_in_the_fresh_table_neither_fail_commits_nor_hide_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, run) = store_with_answers(dir.path(), 20);
    store.commit().unwrap();
    // A damaged or hand-edited store: a key of the wrong length, and an
    // answer whose row is gone.
    let gone = hex(&spread_key(100));
    store
        .conn
        .execute_batch(&format!(
            "INSERT INTO answers_fresh VALUES (1, x'0102', {id}, 1);
             INSERT INTO answers_fresh VALUES (1, x'{gone}', {id}, 999);",
            id = run.id
        ))
        .unwrap();
    drop(store);
    let mut store = Store::open(dir.path()).unwrap();
    assert!(store.answer(&spread_key(100)).unwrap().is_none());
    for row in 20..20 + answers::SLICES as u64 {
        put_answered(&mut store, run.id, row, &spread_key(row), 1);
        store.commit().unwrap();
    }
    let odd_left: i64 = store
        .conn
        .query_row(
            &format!("SELECT count(*) FROM answers_fresh WHERE key IN (x'0102', x'{gone}')"),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(odd_left, 0, "their slices moved like any other");
    assert!(store.answer(&spread_key(100)).unwrap().is_none());
    for row in 0..20 + answers::SLICES as u64 {
        let found = store.answer(&spread_key(row)).unwrap().unwrap();
        assert_eq!(found.answer.request_id, Some(format!("r{row}")));
    }
}

#[test]
fn generations_spread_far_apart_are_folded_into_the_index_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, run) = store_with_answers(dir.path(), 20);
    store.commit().unwrap();
    // A hand-edited store: key 3 answered again (row 40) in a generation a
    // billion numbers after the others, which lookups would walk through.
    store
        .put_row(run.id, &outcome(40, RowStatus::Ok, Some(2)))
        .unwrap();
    store.commit().unwrap();
    store
        .conn
        .execute_batch(&format!(
            "INSERT INTO answers_fresh VALUES (1000000000, x'{}', {}, 40);",
            hex(&spread_key(3)),
            run.id
        ))
        .unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(count(&store, "answers_fresh"), 0);
    assert_eq!(count(&store, "answers"), 20);
    let found = store.answer(&spread_key(3)).unwrap().unwrap();
    assert_eq!(
        found.answer.request_id,
        Some("r40".into()),
        "the newer answer"
    );
    assert_found(&store, 0..20);
}
