//! Resume you can bet a campaign on: kill -9 at random moments, an input
//! changed in place, and `--deadline`.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::*;

const JOB: &str = r#"name = "resume"
[input]
path = "../data/p.csv"
[input.columns]
openid = "openid"
phonenum = "phone"
clientip = "client_ip"
deviceid = "device_id"
[output]
dir = "../out"
[throttle]
chunk_size = 100
rate = 2000
concurrency = 8
max_retries = 8
"#;

fn job(sim: &Sim) -> String {
    format!("{JOB}[api]\nbase_url = \"{}\"\n", sim.url)
}

/// Starts the job in the background, its output discarded.
fn spawn_run(ws: &Workspace) -> std::process::Child {
    ws.command(&["run", "jobs/resume.toml", "--progress", "never"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Columns that legitimately differ between two runs of the same input.
const VARYING: [&str; 2] = ["risk_checked_at", "risk_request_id"];

/// results.csv without the columns that differ from run to run.
fn comparable_rows(ws: &Workspace) -> (Vec<String>, Vec<Vec<String>>) {
    let (header, rows) = read_csv(&ws.path("out/results.csv"));
    let keep: Vec<usize> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| !VARYING.contains(&h.as_str()))
        .map(|(i, _)| i)
        .collect();
    let pick = |row: &Vec<String>| keep.iter().map(|&i| row[i].clone()).collect::<Vec<_>>();
    (pick(&header), rows.iter().map(pick).collect())
}

#[test]
fn kill_9_at_random_moments_then_finish_equals_a_clean_run() {
    const ROWS: u64 = 2500;
    const CONCURRENCY: u64 = 8;
    let seed = fastrand::u64(..);
    eprintln!("torture seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let sim_args = ["--latency", "10ms", "--latency-spread", "20ms"];

    // The reference: one uninterrupted run.
    let clean_sim = Sim::start(&sim_args);
    let clean = Workspace::new();
    clean.participants("data/p.csv", ROWS, 44);
    clean.write("jobs/resume.toml", job(&clean_sim));
    assert_exit(
        &clean.run(&["run", "jobs/resume.toml", "--progress", "never"]),
        0,
    );

    let sim = Sim::start(&sim_args);
    let ws = Workspace::new();
    ws.participants("data/p.csv", ROWS, 44);
    ws.write("jobs/resume.toml", job(&sim));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut kills = 0u64;
    while kills < 6 {
        let sent_before = sim.stats().risk_requests;
        let mut child = spawn_run(&ws);
        // Kill only once it is sending, at a random moment after that.
        while sim.stats().risk_requests == sent_before {
            assert!(Instant::now() < deadline, "the run never started sending");
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.u64(0..400)));
        if child.try_wait().unwrap().is_some() {
            panic!("the run finished before kill {}: use more rows", kills + 1);
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        assert!(
            !ws.path("out/results.csv").exists() && !ws.path("out/results.parquet").exists(),
            "outputs appear only when complete"
        );
    }
    let finish = ws.run(&["run", "jobs/resume.toml", "--progress", "never"]);
    assert_exit(&finish, 0);

    let (header, rows) = comparable_rows(&ws);
    let (clean_header, clean_rows) = comparable_rows(&clean);
    assert_eq!(header, clean_header);
    assert_eq!(rows.len(), clean_rows.len(), "no row lost or duplicated");
    let attempts = header.iter().position(|h| h == "risk_attempts").unwrap();
    for (i, (row, expected)) in rows.iter().zip(&clean_rows).enumerate() {
        let strip = |r: &Vec<String>| {
            let mut r = r.clone();
            r.remove(attempts);
            r
        };
        assert_eq!(strip(row), strip(expected), "row {}", i + 1);
    }
    // The Parquet file holds the same rows.
    let (_, batches) = read_parquet(&ws.path("out/results.parquet"));
    assert_eq!(
        batches.iter().map(|b| b.num_rows()).sum::<usize>(),
        ROWS as usize
    );

    let stats = sim.stats();
    let resent = stats.risk_requests - stats.distinct_requests;
    eprintln!(
        "torture: {kills} kills, {} requests for {} distinct: {resent} re-sent ({:.1} per kill, bound {})",
        stats.risk_requests,
        stats.distinct_requests,
        resent as f64 / kills as f64,
        CONCURRENCY * kills
    );
    assert!(
        resent <= CONCURRENCY * kills,
        "re-sent {resent} requests over {kills} kills; at most {CONCURRENCY} in flight each"
    );
    let summary = summary(&ws.path("out/summary.json"));
    assert_eq!(summary["state"], "complete");
    assert_eq!(summary["rows"]["done"], ROWS);
}

#[test]
fn an_input_changed_in_place_starts_a_new_run() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    let input = ws.participants("data/p.csv", 500, 9);
    ws.write("jobs/resume.toml", job(&sim));
    let first = ws.run(&[
        "run",
        "jobs/resume.toml",
        "--max-chunks",
        "1",
        "--progress",
        "never",
    ]);
    assert_exit(&first, 75);
    let first_run = summary(&ws.path("out/summary.json"))["run_id"]
        .as_str()
        .unwrap()
        .to_string();

    // The export is regenerated at the same path: the first 100 rows (the
    // chunk already done) now hold other participants.
    let text = std::fs::read_to_string(&input).unwrap();
    let changed: String = text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            if (1..=100).contains(&i) {
                format!("changed{i}{line}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    std::fs::write(&input, changed).unwrap();

    let second = ws.run(&["run", "jobs/resume.toml", "--progress", "never"]);
    assert_exit(&second, 0);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("new run")
            && stderr.contains("is unfinished")
            && stderr.contains(&first_run),
        "the new run says the earlier one is unfinished: {}",
        show(&second)
    );
    let done = summary(&ws.path("out/summary.json"));
    assert_ne!(done["run_id"], first_run.as_str());
    assert_eq!(done["rows"]["done"], 500);

    let (header, rows) = read_csv(&ws.path("out/results.csv"));
    let at = columns(&header);
    let per_openid = sim.stats().per_openid.unwrap();
    let mut sources: HashMap<String, u32> = HashMap::new();
    for (i, row) in rows.iter().enumerate().take(100) {
        let openid = &row[at["openid"]];
        if openid.is_empty() {
            continue;
        }
        assert!(openid.starts_with("changed"), "row {}: {row:?}", i + 1);
        assert_eq!(row[at["risk_status"]], "ok");
        *sources.entry(row[at["risk_source"]].clone()).or_default() += 1;
        assert!(
            per_openid.contains_key(openid.as_str()) || row[at["risk_source"]] == "duplicate",
            "row {} was answered from the old checkpoint: {row:?}",
            i + 1
        );
    }
    assert!(sources.get("api").copied().unwrap_or(0) > 90, "{sources:?}");
    // Rows 101-500 are unchanged; only repeats of a participant the first run
    // checked (the generator plants 1 % duplicates) may come from the cache.
    let first_chunk: std::collections::HashSet<&str> = text
        .lines()
        .skip(1)
        .take(100)
        .filter_map(|line| line.split(',').next())
        .collect();
    for row in &rows[100..] {
        if row[at["risk_source"]] == "cache" {
            assert!(first_chunk.contains(row[at["openid"]].as_str()), "{row:?}");
        }
    }

    let status = ws.run(&["status", "jobs/resume.toml"]);
    assert_exit(&status, 0);
}

#[test]
fn deadline_stops_dispatching_and_repeated_invocations_finish() {
    let sim = Sim::start(&["--latency", "20ms"]);
    let ws = Workspace::new();
    ws.participants("data/p.csv", 600, 10);
    ws.write(
        "jobs/resume.toml",
        job(&sim).replace("rate = 2000", "rate = 200"),
    );
    let mut invocations = 0;
    loop {
        invocations += 1;
        assert!(invocations <= 10, "the job never finished");
        let started = Instant::now();
        let output = ws.run(&[
            "run",
            "jobs/resume.toml",
            "--deadline",
            "1s",
            "--progress",
            "never",
            "--log-format",
            "json",
        ]);
        let took = started.elapsed();
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            let parsed: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
            assert!(
                parsed["level"].is_string() && parsed["message"].is_string(),
                "{line}"
            );
        }
        match output.status.code() {
            Some(0) => break,
            Some(75) => {
                let paused = summary(&ws.path("out/summary.json"));
                assert_eq!(paused["pause_reason"], "deadline", "{}", show(&output));
                assert!(took < Duration::from_secs(5), "took {took:?}");
            }
            _ => panic!("{}", show(&output)),
        }
    }
    assert!(
        invocations >= 3,
        "600 rows at 200/s need several 1 s invocations"
    );
    let stats = sim.stats();
    assert_eq!(stats.max_sends_per_request, 1, "{stats:?}");
    assert_eq!(summary(&ws.path("out/summary.json"))["rows"]["done"], 600);
}

#[test]
fn a_second_signal_exits_at_once_and_the_run_still_resumes() {
    let sim = Sim::start(&["--latency", "3s"]);
    let ws = Workspace::new();
    ws.participants("data/p.csv", 40, 12);
    ws.write("jobs/resume.toml", job(&sim));
    let mut child = spawn_run(&ws);
    let started = Instant::now();
    while sim.stats().risk_requests < 8 {
        assert!(started.elapsed() < Duration::from_secs(20), "never sent");
        std::thread::sleep(Duration::from_millis(10));
    }
    let signal = |name: &str| {
        let sent = std::process::Command::new("kill")
            .args([name, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    signal("-INT");
    std::thread::sleep(Duration::from_millis(200));
    let interrupted = Instant::now();
    signal("-INT");
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(75));
    assert!(
        interrupted.elapsed() < Duration::from_secs(2),
        "the second signal did not wait for the 3 s calls in flight"
    );
    assert_exit(
        &ws.run(&["run", "jobs/resume.toml", "--progress", "never"]),
        0,
    );
    let done = summary(&ws.path("out/summary.json"));
    assert_eq!(done["rows"]["done"], 40);
}

/// Files under `dir` whose names satisfy `wanted`, at any depth.
fn find_files(dir: &std::path::Path, wanted: &dyn Fn(&str) -> bool) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(find_files(&path, wanted));
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(wanted)
        {
            found.push(path);
        }
    }
    found
}

#[test]
fn report_after_kill_9_includes_the_calls_only_in_the_journal() {
    const FAILED_OR_PENDING: [i64; 2] = [6, 7];
    let sim = Sim::start(&["--latency", "10ms", "--latency-spread", "20ms"]);
    let ws = Workspace::new();
    ws.participants("data/p.csv", 2500, 45);
    ws.write("jobs/resume.toml", job(&sim));
    let mut child = spawn_run(&ws);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sim.stats().risk_requests < 300 {
        assert!(Instant::now() < deadline, "the run never got going");
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // What the store has committed, and what only the journal knows.
    let root = ws.path("");
    let db = find_files(&root, &|n| n == "checkpoint.sqlite");
    assert_eq!(db.len(), 1, "{db:?}");
    let conn = rusqlite::Connection::open(&db[0]).unwrap();
    let mut decided: std::collections::HashSet<u64> = conn
        .prepare("SELECT row, status FROM rows")
        .unwrap()
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .filter(|(_, status)| !FAILED_OR_PENDING.contains(status))
        .map(|(row, _)| row as u64)
        .collect();
    drop(conn);
    let committed = decided.len();
    let journals = find_files(&root, &|n| {
        n.starts_with("journal-") && n.ends_with(".jsonl")
    });
    assert!(!journals.is_empty(), "a killed run leaves its journal");
    for path in &journals {
        let text = std::fs::read_to_string(path).unwrap();
        for line in text.lines() {
            let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else {
                continue; // torn by the kill
            };
            if !FAILED_OR_PENDING.contains(&record["status"].as_i64().unwrap()) {
                decided.insert(record["row"].as_u64().unwrap());
            }
        }
    }
    eprintln!(
        "after kill -9: {committed} rows committed, {} more only in the journal",
        decided.len() - committed
    );

    let report = ws.run(&["report", "jobs/resume.toml"]);
    assert_exit(&report, 0);
    let summary = summary(&ws.path("out/summary.json"));
    assert_eq!(summary["partial"], true);
    assert_eq!(summary["rows"]["done"], decided.len() as u64);
    assert!(
        find_files(&root, &|n| n.starts_with("journal-")).is_empty(),
        "the journal is replayed into the store and removed"
    );

    // The run then finishes, re-sending at most what was in flight.
    assert_exit(
        &ws.run(&["run", "jobs/resume.toml", "--progress", "never"]),
        0,
    );
    let stats = sim.stats();
    assert!(
        stats.risk_requests - stats.distinct_requests <= 8,
        "re-sent {} requests after one kill at concurrency 8",
        stats.risk_requests - stats.distinct_requests
    );
}
