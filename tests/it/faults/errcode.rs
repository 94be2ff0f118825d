//! The outer errcode of wechat-api.md §3's first table.

use super::*;

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
