//! Failures below WeChat's answers (HTTP errors, dropped connections,
//! malformed bodies, timeouts) and the access token: the token endpoint's
//! errors, a rotation under 64 calls in flight, one token shared by jobs.

use super::*;

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
