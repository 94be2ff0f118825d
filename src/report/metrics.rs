//! `metrics.prom`: the summary's figures in Prometheus text format, for
//! node_exporter's textfile collector (SPEC §4). Written atomically, so the
//! collector never reads half a file.

use std::fmt::Write;

use super::Facts;
use super::summary::RunState;

/// Every status a row can have, so that each series exists at every exit.
const STATUSES: [&str; 8] = [
    "ok",
    "invalid_input",
    "invalid_openid",
    "openid_expired",
    "not_logged_in",
    "param_error",
    "failed",
    "pending",
];

/// Prometheus label values escape `\`, `"` and line breaks.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Metrics {
    text: String,
    job: String,
}

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let mut all = format!("job=\"{}\"", self.job);
        for (key, val) in labels {
            let _ = write!(all, ",{key}=\"{}\"", label(val));
        }
        let _ = writeln!(self.text, "{name}{{{all}}} {value}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

pub fn render(facts: &Facts) -> String {
    let s = &facts.summary;
    let mut m = Metrics {
        text: String::new(),
        job: label(&s.job),
    };
    m.family(
        "riskbatch_rows",
        "gauge",
        "Rows of the current run by risk_status; pending rows have no outcome yet.",
    );
    let failed = s.statuses.get("failed").copied().unwrap_or(0);
    for status in STATUSES {
        let n = match status {
            "pending" => s.rows.pending.saturating_sub(failed),
            other => s.statuses.get(other).copied().unwrap_or(0),
        };
        m.sample("riskbatch_rows", &[("status", status)], n as f64);
    }
    m.family(
        "riskbatch_risk_level_rows",
        "gauge",
        "Rows of the current run by risk level (0 none to 3 high).",
    );
    for (level, n) in &s.risk_levels {
        m.sample("riskbatch_risk_level_rows", &[("level", level)], *n as f64);
    }
    m.family(
        "riskbatch_errcode_rows",
        "gauge",
        "Rows by the non-zero WeChat errcode of their final attempt.",
    );
    for (errcode, n) in &s.errcodes {
        m.sample("riskbatch_errcode_rows", &[("errcode", errcode)], *n as f64);
    }
    let calls = &s.calls;
    let singles = [
        (
            "riskbatch_rows_total",
            "Rows in the input of the current run.",
            s.rows.total,
        ),
        (
            "riskbatch_calls_sent",
            "Requests sent to the risk endpoint in this run, retries included.",
            calls.sent,
        ),
        (
            "riskbatch_calls_retries",
            "Requests beyond the first for a row.",
            calls.retries,
        ),
        (
            "riskbatch_cache_hits",
            "Rows answered from the cross-run cache.",
            calls.cache_hits,
        ),
        (
            "riskbatch_feedback_verdicts",
            "Distinct verdicts WeChat pushed for the job (riskbatch receive).",
            s.feedback.verdicts,
        ),
        (
            "riskbatch_duplicates",
            "Rows answered by an identical request of the same run.",
            calls.duplicates,
        ),
        (
            "riskbatch_listed",
            "Rows decided by the allow or deny list.",
            calls.listed,
        ),
    ];
    for (name, help, value) in singles {
        m.single(name, "gauge", help, value as f64);
    }
    if let Some(lines) = s.input.lines {
        m.single(
            "riskbatch_input_lines",
            "gauge",
            "Physical lines read from the CSV input, the header included.",
            lines as f64,
        );
    }
    m.family(
        "riskbatch_run_state",
        "gauge",
        "1 for the state this invocation ended in, 0 for the others.",
    );
    for state in [RunState::Complete, RunState::Paused, RunState::Failed] {
        let value = f64::from(u8::from(s.state == state));
        m.sample("riskbatch_run_state", &[("state", state.as_str())], value);
    }
    let seconds = |ms: i64| ms as f64 / 1000.0;
    m.single(
        "riskbatch_last_exit_timestamp_seconds",
        "gauge",
        "When the last invocation ended (Unix time).",
        seconds(crate::clock::now_ms()),
    );
    if let Some(at) = facts.last_complete_at {
        m.single(
            "riskbatch_last_complete_timestamp_seconds",
            "gauge",
            "When a run of this job last completed (Unix time), kept across paused invocations.",
            seconds(at),
        );
    }
    m.single(
        "riskbatch_run_elapsed_seconds",
        "gauge",
        "How long the last invocation took.",
        s.elapsed_seconds,
    );
    m.single(
        "riskbatch_rows_per_second",
        "gauge",
        "Rows decided per second by the last invocation.",
        s.rows_per_second,
    );
    if let Some(price) = facts.price_per_call {
        m.single(
            "riskbatch_cost",
            "gauge",
            "calls_sent times [api] price_per_call.",
            price * calls.sent as f64,
        );
    }
    m.text
}
