//! The inner code of wechat-api.md §3's second table.

use super::*;

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
