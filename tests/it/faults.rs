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

// ---- outer errcode ----

#[test]
fn errcode_0_reads_the_inner_code() {
    let case = Case::with(&[], &[]);
    assert_exit(&case.run(), 0);
    let rows = case.rows();
    assert_other_rows_ok(&rows, &[]);
    for row in rows.values() {
        assert_eq!((row.errcode.as_str(), row.code.as_str()), ("0", "0"));
        assert_eq!(row.attempts, 1);
    }
    assert_eq!(case.stats().risk_requests, 10);
}

#[test]
fn errcode_minus_1_busy_is_retried_with_backoff() {
    retried_until_retries_run_out("errcode-1_busy", "-1", "");
    survives_at_a_rate(
        &["--busy-rate", "0.2"],
        "busy",
        "rate = 1000\nconcurrency = 4",
    );
}

fn token_rejected(errcode: &str) {
    let case = Case::new(
        &[
            "--latency",
            "20ms",
            "--expire-tokens-after",
            "12",
            "--expired-token-errcode",
            errcode,
        ],
        &openids(40, &[]),
        &Case::retries("rate = 1000\nconcurrency = 4"),
    );
    assert_exit(&case.run(), 0);
    let rows = case.rows();
    assert_other_rows_ok(&rows, &[]);
    let stats = case.stats();
    assert_eq!(
        stats.token_fetches.get("stable_token"),
        Some(&2),
        "one fetch at the start and exactly one refresh: {stats:?}"
    );
    assert_eq!(stats.token_fetches.get("stable_token_forced"), None);
    let rejected = stats.errcodes.get(errcode).copied().unwrap_or(0);
    assert!(
        (1..=4).contains(&rejected),
        "only requests in flight are rejected: {stats:?}"
    );
    assert_eq!(stats.risk_requests, 40 + rejected);
    assert_attempts_explain_requests(&rows, &stats);
}

#[test]
fn errcode_40001_gets_a_valid_token_and_retries() {
    token_rejected("40001");
}

#[test]
fn errcode_40014_gets_a_valid_token_and_retries() {
    token_rejected("40014");
}

#[test]
fn errcode_42001_gets_a_valid_token_and_retries() {
    token_rejected("42001");
}

#[test]
fn errcode_45009_pauses_until_the_quota_resets() {
    let case = Case::new(
        &["--daily-quota", "12"],
        &openids(20, &[]),
        &Case::retries("rate = 1000\nconcurrency = 4"),
    );
    assert_exit(&case.run(), 75);
    let summary = case.summary();
    assert_eq!(summary["state"], "paused");
    assert_eq!(summary["pause_reason"], "daily_quota");
    let rows = case.rows();
    let ok = rows.values().filter(|r| r.status == "ok").count();
    assert_eq!(ok, 12, "exactly the quota was answered");
    assert_unanswered_rows_wait(&rows, &summary, 8);
    let stats = case.stats();
    let refused = stats.errcodes["45009"];
    assert!(
        (1..=4).contains(&refused),
        "dispatching stops at once: {stats:?}"
    );

    // Still the same day: one more refusal at most per request in flight.
    assert_exit(&case.run(), 75);
    let again = case.stats().errcodes["45009"] - refused;
    assert!((1..=4).contains(&again), "{again}");

    case.sim_post("/_sim/new_day");
    assert_exit(&case.run(), 0);
    let rows = case.rows();
    assert_other_rows_ok(&rows, &[]);
    let stats = case.stats();
    assert_eq!(stats.errcodes["0"], 20);
    assert_eq!(stats.risk_requests, 20 + stats.errcodes["45009"]);
    assert_attempts_explain_requests(&rows, &stats);
}

#[test]
fn errcode_45011_backs_off_and_lowers_the_rate() {
    let case = Case::new(
        &["--rate-limit", "40"],
        &openids(120, &[]),
        "rate = 200\nconcurrency = 8\nmax_retries = 8",
    );
    let output = case.run();
    assert_exit(&output, 0);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("45011") && stderr.contains("sending at 100/s"),
        "the log says the rate was lowered: {}",
        show(&output)
    );
    let rows = case.rows();
    assert_other_rows_ok(&rows, &[]);
    let stats = case.stats();
    let limited = stats.errcodes["45011"];
    assert!(limited > 0);
    assert_eq!(stats.risk_requests, 120 + limited);
    assert_attempts_explain_requests(&rows, &stats);
}

#[test]
fn errcode_61010_is_openid_expired() {
    row_verdict("errcode61010_gone", "openid_expired", "61010", "");
}

#[test]
fn errcode_40003_is_invalid_openid() {
    row_verdict("errcode40003_bad", "invalid_openid", "40003", "");
}

#[test]
fn errcode_47001_is_param_error() {
    row_verdict("errcode47001_x", "param_error", "47001", "");
}

#[test]
fn errcode_44002_is_param_error() {
    row_verdict("errcode44002_x", "param_error", "44002", "");
}

#[test]
fn errcode_48001_fails_the_run() {
    fails_the_run("errcode48001_x", &["48001", "not authorised"]);
}

#[test]
fn errcode_9301001_is_param_error() {
    row_verdict("errcode9301001_x", "param_error", "9301001", "");
}

#[test]
fn errcode_9301003_is_retried() {
    retried_until_retries_run_out("errcode9301003_x", "9301003", "");
}

#[test]
fn errcode_9301002_is_retried() {
    retried_until_retries_run_out("errcode9301002_x", "9301002", "");
}

#[test]
fn an_undocumented_errcode_fails_the_row_and_keeps_its_message() {
    let openid = "errcode12345_x";
    let case = Case::with(&[], &[openid]);
    assert_exit(&case.run(), 75);
    assert_eq!(case.summary()["pause_reason"], "failed_rows");
    let rows = case.rows();
    let row = &rows[openid];
    assert_eq!(
        (row.status.as_str(), row.errcode.as_str()),
        ("failed", "12345")
    );
    assert!(row.message.contains("errcode 12345"), "{row:?}");
    assert_eq!(row.attempts, 1, "not retried within the invocation");
    assert_other_rows_ok(&rows, &[openid]);
    // Retried on the next invocation.
    assert_exit(&case.run(), 75);
    assert_eq!(case.rows()[openid].attempts, 2);
    assert_eq!(sent(&case.stats(), openid), 2);
}

// ---- inner code ----

#[test]
fn code_0_is_ok_with_the_level() {
    let case = Case::with(&[], &["code0_fine"]);
    assert_exit(&case.run(), 0);
    let rows = case.rows();
    assert_other_rows_ok(&rows, &[]);
    assert_eq!(rows["code0_fine"].code, "0");
}

#[test]
fn code_1_is_param_error() {
    row_verdict("code1_x", "param_error", "0", "1");
}

#[test]
fn code_2_is_invalid_openid() {
    row_verdict("code2_x", "invalid_openid", "0", "2");
}

#[test]
fn code_11_is_invalid_openid() {
    row_verdict("code11_x", "invalid_openid", "0", "11");
}

#[test]
fn code_3_fails_the_run() {
    fails_the_run("code3_x", &["code 3", "not authorised"]);
}

#[test]
fn codes_4_to_8_and_10_are_retried() {
    for code in ["4", "5", "6", "7", "8", "10"] {
        retried_until_retries_run_out(&format!("code{code}_x"), "0", code);
    }
    survives_at_a_rate(
        &["--inner-error-rate", "0.2"],
        "inner_error",
        "rate = 1000\nconcurrency = 4",
    );
}

#[test]
fn code_9_fails_the_run() {
    fails_the_run("code9_x", &["code 9", "serviceid"]);
}

#[test]
fn code_12_is_not_logged_in() {
    row_verdict("code12_x", "not_logged_in", "0", "12");
}

#[test]
fn code_13_pauses_until_a_top_up() {
    let case = Case::new(
        &["--balance", "12"],
        &openids(30, &[]),
        &Case::retries("rate = 1000\nconcurrency = 4"),
    );
    assert_exit(&case.run(), 75);
    let summary = case.summary();
    assert_eq!(summary["state"], "paused");
    assert_eq!(summary["pause_reason"], "insufficient_balance");
    let rows = case.rows();
    assert_eq!(rows.values().filter(|r| r.status == "ok").count(), 12);
    assert_unanswered_rows_wait(&rows, &summary, 18);
    let refused = case.stats().inner_codes["13"];
    assert!((1..=4).contains(&refused), "{refused}");

    case.sim_post("/_sim/top_up?calls=100");
    assert_exit(&case.run(), 0);
    let rows = case.rows();
    assert_other_rows_ok(&rows, &[]);
    assert_attempts_explain_requests(&rows, &case.stats());
}

// ---- transport ----

#[test]
fn http_5xx_is_retried() {
    survives_at_a_rate(
        &["--http-error-rate", "0.2"],
        "http_error",
        "rate = 1000\nconcurrency = 4",
    );
}

#[test]
fn dropped_connections_are_retried() {
    survives_at_a_rate(
        &["--drop-rate", "0.2"],
        "drop",
        "rate = 1000\nconcurrency = 4",
    );
}

#[test]
fn malformed_bodies_are_retried() {
    survives_at_a_rate(
        &["--malformed-rate", "0.2"],
        "malformed",
        "rate = 1000\nconcurrency = 4",
    );
}

#[test]
fn answers_slower_than_the_timeout_are_retried() {
    survives_at_a_rate(
        &["--slow-rate", "0.2", "--slow-delay", "3s"],
        "slow",
        "rate = 1000\nconcurrency = 8\ntimeout = \"500ms\"",
    );
}

#[test]
fn token_endpoint_credential_errors_fail_the_run_and_say_what_to_fix() {
    let case = Case::with(&["--secret", "the-real-secret"], &[]);
    let output = case.run();
    assert_exit(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("40125") && stderr.contains("secret_env"),
        "{}",
        show(&output)
    );
    assert!(
        !stderr.contains("test-secret"),
        "the secret is never printed"
    );
    assert_eq!(case.stats().risk_requests, 0);
    assert_eq!(case.summary()["state"], "failed");
}

// ---- one token for everything that uses the appid ----

#[test]
fn sixty_four_requests_in_flight_when_the_token_rotates_cause_one_refresh() {
    let case = Case::new(
        &["--latency", "50ms", "--expire-tokens-after", "300"],
        &openids(1000, &[]),
        "rate = 5000\nconcurrency = 64\nmax_retries = 3",
    );
    assert_exit(&case.run(), 0);
    let stats = case.stats();
    assert_eq!(
        stats.token_fetches.get("stable_token"),
        Some(&2),
        "one fetch at the start, one refresh: {stats:?}"
    );
    assert_eq!(stats.token_fetches.get("stable_token_forced"), None);
    assert_eq!(stats.token_fetches.get("token"), None);
    let rejected = stats.errcodes["42001"];
    assert!(
        (32..=64).contains(&rejected),
        "the requests in flight were rejected together: {stats:?}"
    );
    let rows = case.rows();
    assert_other_rows_ok(&rows, &[]);
    assert_attempts_explain_requests(&rows, &stats);
}

/// All the files a run leaves behind, and its output, must not hold `secret`.
#[track_caller]
fn assert_nowhere(ws: &Workspace, outputs: &[&Output], secret: &str) {
    for output in outputs {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!text.contains(secret), "{secret} printed: {text}");
    }
    for name in ["out/results.csv", "out/summary.json"] {
        let text = std::fs::read_to_string(ws.path(name)).unwrap();
        assert!(!text.contains(secret), "{secret} in {name}");
    }
    let parquet = std::fs::read(ws.path("out/results.parquet")).unwrap();
    assert!(
        !parquet
            .windows(secret.len())
            .any(|w| w == secret.as_bytes())
    );
}

#[test]
fn consecutive_and_parallel_jobs_share_one_cached_token() {
    for (token, endpoint) in [("stable", "stable_token"), ("client_credential", "token")] {
        let case = Case::with(&["--latency", "5ms", "--faults", "0.05"], &[]);
        let job = std::fs::read_to_string(case.ws.path("jobs/faults.toml"))
            .unwrap()
            .replace("[api]\n", &format!("[api]\ntoken = \"{token}\"\n"))
            .replace("max_retries = 2", "max_retries = 8");
        case.ws.write("jobs/faults.toml", &job);
        // An output folder belongs to one job.
        case.ws.write(
            "jobs/other.toml",
            job.replace("name = \"faults\"", "name = \"other\"")
                .replace("dir = \"../out\"", "dir = \"../out-other\""),
        );
        let first = case.run();
        assert_exit(&first, 0);
        // A second job of the same appid, running alongside the next cron tick of the first.
        let other = case
            .ws
            .command(&["run", "jobs/other.toml", "--progress", "never"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let again = case
            .ws
            .run(&["run", "jobs/faults.toml", "--progress", "never", "--fresh"]);
        let other = other.wait_with_output().unwrap();
        assert_exit(&other, 0);
        assert_exit(&again, 0);
        let stats = case.stats();
        assert_eq!(
            stats.token_fetches.get(endpoint),
            Some(&1),
            "{token}: one token for three processes: {stats:?}"
        );
        assert!(
            !stats.errcodes.contains_key("40001"),
            "no process invalidated another's token: {stats:?}"
        );

        let tokens = case.ws.path("user-cache/tokens");
        let files: Vec<_> = std::fs::read_dir(&tokens)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", files[0].display());
            let mode = std::fs::metadata(&tokens).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{}", tokens.display());
        }
        let cached: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
        let access_token = cached["access_token"].as_str().unwrap();
        assert!(access_token.len() > 20);
        assert_nowhere(&case.ws, &[&first, &other, &again], access_token);
        assert_nowhere(&case.ws, &[&first, &other, &again], "test-secret");
    }
}

#[test]
fn force_refresh_only_when_the_same_stable_token_is_rejected_twice() {
    // This openid is always answered 40001: the first rejection gets the same
    // token back from stable_token and tries it again; the second forces a refresh.
    let openid = "errcode40001_x";
    let case = Case::with(&[], &[openid]);
    assert_exit(&case.run(), 75);
    let stats = case.stats();
    assert_eq!(
        stats.token_fetches.get("stable_token_forced"),
        Some(&1),
        "{:?}",
        stats.token_fetches
    );
    let rows = case.rows();
    assert_eq!(rows[openid].status, "failed");
    assert_other_rows_ok(&rows, &[openid]);
}
