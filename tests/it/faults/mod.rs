//! One test per row of both tables in wechat-api.md §3 (and the transport
//! failures below them): the binary against `riskbatch sim` with that fault
//! switched on, checking row statuses, exit code, pause reason and the
//! requests the simulator saw.
//!
//! An openid `errcode<N>_…` / `code<N>_…` makes the simulator answer outer
//! errcode N / inner code N for that openid on every request.

use std::collections::HashMap;
use std::process::Output;

use riskbatch::sim::SimStats;
use serde_json::Value;

use crate::harness::*;

const MAX_RETRIES: u32 = 2;

/// One row of `results.csv`.
#[derive(Debug, Clone)]
struct Row {
    status: String,
    level: String,
    errcode: String,
    code: String,
    message: String,
    attempts: u32,
}

/// A workspace whose job sends `openids` to a simulator started with `sim_args`.
struct Case {
    sim: Sim,
    ws: Workspace,
    rows: usize,
}

impl Case {
    fn new(sim_args: &[&str], openids: &[String], throttle: &str) -> Case {
        let sim = Sim::start(sim_args);
        let ws = Workspace::new();
        let mut csv = String::from("openid,device_id\n");
        for (i, openid) in openids.iter().enumerate() {
            csv.push_str(&format!("{openid},dev{i}\n"));
        }
        ws.write("data/p.csv", csv);
        ws.write(
            "jobs/faults.toml",
            format!(
                r#"name = "faults"
[input]
path = "../data/p.csv"
[input.columns]
openid = "openid"
deviceid = "device_id"
[output]
dir = "../out"
[api]
base_url = "{}"
[throttle]
{throttle}
"#,
                sim.url
            ),
        );
        Case {
            sim,
            ws,
            rows: openids.len(),
        }
    }

    /// `throttle` settings with `max_retries` set to `MAX_RETRIES`.
    fn retries(throttle: &str) -> String {
        format!("{throttle}\nmax_retries = {MAX_RETRIES}")
    }

    /// `normal` ordinary openids with `special` ones among them.
    fn with(sim_args: &[&str], special: &[&str]) -> Case {
        Case::new(
            sim_args,
            &openids(10, special),
            &Case::retries("rate = 1000\nconcurrency = 4\ntimeout = \"2s\""),
        )
    }

    fn run(&self) -> Output {
        self.ws
            .run(&["run", "jobs/faults.toml", "--progress", "never"])
    }

    /// The rows as the checkpoint holds them (`report` writes partial runs too).
    fn rows(&self) -> HashMap<String, Row> {
        assert_exit(&self.ws.run(&["report", "jobs/faults.toml"]), 0);
        let (header, rows) = read_csv(&self.ws.path("out/results.csv"));
        let at = columns(&header);
        let rows: HashMap<String, Row> = rows
            .into_iter()
            .map(|r| {
                let cell = |name: &str| r[at[name]].clone();
                (
                    cell("openid"),
                    Row {
                        status: cell("risk_status"),
                        level: cell("risk_level"),
                        errcode: cell("risk_errcode"),
                        code: cell("risk_code"),
                        message: cell("risk_message"),
                        attempts: cell("risk_attempts").parse().unwrap(),
                    },
                )
            })
            .collect();
        assert_eq!(rows.len(), self.rows, "a row is missing from the output");
        rows
    }

    fn summary(&self) -> Value {
        summary(&self.ws.path("out/summary.json"))
    }

    fn stats(&self) -> SimStats {
        self.sim.stats()
    }

    fn sim_post(&self, path: &str) {
        http("POST", &format!("{}{path}", self.sim.url), Some(""));
    }
}

fn openids(normal: usize, special: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = (0..normal).map(|i| format!("o{i:04}")).collect();
    for (i, s) in special.iter().enumerate() {
        all.insert((i * 3 + 1).min(all.len()), s.to_string());
    }
    all
}

/// After a pause, the rows without an answer wait for the next invocation:
/// never sent, or refused by the pause answer itself — `pending` either way,
/// with null risk columns (SPEC §4: the pause is no verdict on the row).
#[track_caller]
fn assert_unanswered_rows_wait(rows: &HashMap<String, Row>, summary: &Value, count: u64) {
    assert_eq!(summary["rows"]["pending"], count, "{summary}");
    let mut refused = 0;
    for row in rows.values().filter(|r| r.status != "ok") {
        assert_eq!(row.status, "pending", "{row:?}");
        assert_eq!(
            (row.errcode.as_str(), row.code.as_str()),
            ("", ""),
            "{row:?}"
        );
        refused += usize::from(row.attempts > 0);
    }
    assert!(refused >= 1, "the row refused by the pause is pending too");
}

fn sent(stats: &SimStats, openid: &str) -> u32 {
    stats
        .per_openid
        .as_ref()
        .and_then(|m| m.get(openid).copied())
        .unwrap_or(0)
}

#[track_caller]
fn assert_other_rows_ok(rows: &HashMap<String, Row>, except: &[&str]) {
    for (openid, row) in rows {
        if !except.contains(&openid.as_str()) {
            assert_eq!(row.status, "ok", "{openid}: {row:?}");
            assert!(!row.level.is_empty(), "{openid}: {row:?}");
        }
    }
}

/// Every request the simulator received is accounted for by some row's attempts.
#[track_caller]
fn assert_attempts_explain_requests(rows: &HashMap<String, Row>, stats: &SimStats) {
    let attempts: u64 = rows.values().map(|r| u64::from(r.attempts)).sum();
    assert_eq!(attempts, stats.risk_requests, "{stats:?}");
}

/// A row verdict: the row ends with `status` after one request; the run completes.
fn row_verdict(openid: &str, status: &str, errcode: &str, code: &str) {
    let case = Case::with(&[], &[openid]);
    assert_exit(&case.run(), 0);
    let rows = case.rows();
    let row = &rows[openid];
    assert_eq!(
        (row.status.as_str(), row.errcode.as_str(), row.code.as_str()),
        (status, errcode, code),
        "{row:?}"
    );
    assert!(row.level.is_empty(), "{row:?}");
    assert!(
        row.message.contains("for this openid"),
        "the answer's message is kept: {row:?}"
    );
    assert_eq!(row.attempts, 1, "a row verdict is not retried: {row:?}");
    let stats = case.stats();
    assert_eq!(sent(&stats, openid), 1);
    assert_other_rows_ok(&rows, &[openid]);
    assert_attempts_explain_requests(&rows, &stats);
    assert_eq!(case.summary()["state"], "complete");
    assert_eq!(case.summary()["statuses"][status], 1);
}

/// A transient answer on every attempt: retried `MAX_RETRIES` times, then
/// `failed`; the run pauses with `failed_rows` and the next invocation tries again.
fn retried_until_retries_run_out(openid: &str, errcode: &str, code: &str) {
    let case = Case::with(&[], &[openid]);
    let output = case.run();
    assert_exit(&output, 75);
    let summary = case.summary();
    assert_eq!(summary["state"], "paused");
    assert_eq!(summary["pause_reason"], "failed_rows");
    let rows = case.rows();
    let row = &rows[openid];
    assert_eq!(
        (row.status.as_str(), row.errcode.as_str(), row.code.as_str()),
        ("failed", errcode, code),
        "{row:?}"
    );
    assert_eq!(row.attempts, MAX_RETRIES + 1, "{row:?}");
    assert_eq!(sent(&case.stats(), openid), MAX_RETRIES + 1);
    assert_other_rows_ok(&rows, &[openid]);
    assert_attempts_explain_requests(&rows, &case.stats());

    // The next invocation tries the failed row again, and only it.
    let before = case.stats().risk_requests;
    assert_exit(&case.run(), 75);
    let stats = case.stats();
    assert_eq!(stats.risk_requests - before, u64::from(MAX_RETRIES + 1));
    assert_eq!(case.rows()[openid].attempts, 2 * (MAX_RETRIES + 1));
}

/// Enough retries that a fault at rate 0.2 ends a row in `failed` with
/// probability 0.2^9 ≈ 5e-7.
const GENEROUS_RETRIES: u32 = 8;

/// A transient fault at a rate: every row still ends `ok`, and the extra
/// requests are exactly the faulted ones.
fn survives_at_a_rate(sim_args: &[&str], fault: &str, throttle: &str) {
    let throttle = format!("{throttle}\nmax_retries = {GENEROUS_RETRIES}");
    let case = Case::new(sim_args, &openids(40, &[]), &throttle);
    let output = case.run();
    assert_exit(&output, 0);
    let rows = case.rows();
    assert_other_rows_ok(&rows, &[]);
    let stats = case.stats();
    let faults = stats.faults.get(fault).copied().unwrap_or(0);
    assert!(faults > 0, "no {fault} fault was injected: {stats:?}");
    assert_eq!(stats.risk_requests, 40 + faults, "{stats:?}");
    assert_attempts_explain_requests(&rows, &stats);
    assert!(
        stats.max_sends_per_request <= GENEROUS_RETRIES + 1,
        "{stats:?}"
    );
    let summary = case.summary();
    assert_eq!(summary["calls"]["sent"], stats.risk_requests);
    assert_eq!(summary["calls"]["retries"], faults);
}

fn fails_the_run(openid: &str, says: &[&str]) {
    let case = Case::with(&[], &[openid]);
    let output = case.run();
    assert_exit(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    for words in says {
        assert!(
            stderr.contains(words),
            "{words:?} missing: {}",
            show(&output)
        );
    }
    let summary = case.summary();
    assert_eq!(summary["state"], "failed");
    for words in says {
        assert!(
            summary["error"].as_str().unwrap_or("").contains(words),
            "{summary}"
        );
    }
    assert_eq!(sent(&case.stats(), openid), 1, "not retried");
    let rows = case.rows();
    assert_attempts_explain_requests(&rows, &case.stats());
}

mod code;
mod errcode;
mod transport;
