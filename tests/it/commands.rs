//! Job-file and input errors, `check`, `status`, `report` and the embedded simulator.

use crate::harness::*;

const JOB: &str = r#"name = "cmd"
[input]
path = "../data/p.csv"
[input.columns]
openid = "openid"
deviceid = "device_id"
[output]
dir = "../out"
[throttle]
rate = 5000
concurrency = 8
"#;

fn with_sim(job: &str, sim: &Sim) -> String {
    format!("{job}[api]\nbase_url = \"{}\"\n", sim.url)
}

#[test]
fn job_file_errors_exit_2_and_name_the_key_before_any_call() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.participants("data/p.csv", 50, 1);
    let cases = [
        (
            format!("{}secret = \"s3cr3t\"\n", with_sim(JOB, &sim)),
            "api.secret",
        ),
        (
            with_sim(JOB, &sim).replace("rate = 5000", "rate = 5000\nburst = 3"),
            "burst",
        ),
        (
            with_sim(JOB, &sim).replace("deviceid = \"device_id\"", "deviceid = \"imei\""),
            "\"imei\"",
        ),
        (
            with_sim(JOB, &sim).replace("../data/p.csv", "../data/missing.csv"),
            "missing.csv",
        ),
        (
            with_sim(JOB, &sim).replace("rate = 5000", "rate = -1"),
            "throttle.rate",
        ),
    ];
    for (job, expected) in cases {
        ws.write("jobs/bad.toml", &job);
        let output = ws.run(&["run", "jobs/bad.toml", "--progress", "never"]);
        assert_exit(&output, 2);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(expected),
            "`{expected}` not named:\n{}",
            show(&output)
        );
        assert!(
            !stderr.contains("s3cr3t"),
            "the secret was printed:\n{stderr}"
        );
    }
    assert_eq!(sim.stats().risk_requests, 0);
    assert!(sim.stats().token_fetches.is_empty());
}

#[test]
fn missing_credentials_for_a_real_url_exit_2_without_a_call() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.participants("data/p.csv", 20, 1);
    ws.write("jobs/cmd.toml", with_sim(JOB, &sim));
    let output = ws
        .command(&["run", "jobs/cmd.toml"])
        .env_remove("WECHAT_SECRET")
        .output()
        .unwrap();
    assert_exit(&output, 2);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("WECHAT_SECRET"),
        "{}",
        show(&output)
    );
    assert!(sim.stats().token_fetches.is_empty());
}

#[test]
fn bad_rows_become_invalid_input_with_their_row_number() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.write(
        "data/p.csv",
        "openid,device_id,city\noA,d1,x\n,d2,y\noC,d3\noD,d4,z,extra\noE,d5,w\n",
    );
    ws.write("jobs/cmd.toml", with_sim(JOB, &sim));
    let output = ws.run(&["run", "jobs/cmd.toml", "--progress", "never"]);
    assert_exit(&output, 0);
    let (header, rows) = read_csv(&ws.path("out/results.csv"));
    let cols = columns(&header);
    let statuses: Vec<&str> = rows
        .iter()
        .map(|r| r[cols["risk_status"]].as_str())
        .collect();
    assert_eq!(
        statuses,
        [
            "ok",
            "invalid_input",
            "invalid_input",
            "invalid_input",
            "ok"
        ]
    );
    assert!(rows[1][cols["risk_message"]].contains("openid is empty"));
    assert!(rows[2][cols["risk_message"]].contains("2 fields"));
    assert!(rows[3][cols["risk_message"]].contains("4 fields"));
    assert_eq!(rows[3][cols["risk_source_row"]], "4");
    assert_eq!(sim.stats().risk_requests, 2);
}

#[test]
fn gbk_input_comes_out_as_utf8() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    let (gbk, _, _) = encoding_rs::GBK.encode("openid,device_id,城市\noA,d1,北京\noB,d2,上海\n");
    ws.write("data/p.csv", &gbk);
    ws.write("jobs/cmd.toml", with_sim(JOB, &sim));
    assert_exit(&ws.run(&["run", "jobs/cmd.toml", "--progress", "never"]), 0);
    let text = std::fs::read_to_string(ws.path("out/results.csv")).unwrap();
    assert!(
        text.starts_with("openid,device_id,城市,risk_level"),
        "{text}"
    );
    assert!(text.contains(",北京,") && text.contains(",上海,"));
}

#[test]
fn check_counts_and_estimates_without_calling() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.write("data/p.csv", "openid,device_id\noA,d1\noA,d1\n,d2\noB,d3\n");
    ws.write("lists/allow.txt", "oB\n");
    ws.write(
        "jobs/cmd.toml",
        format!(
            "{}[lists]\nallow = \"../lists/allow.txt\"\n",
            with_sim(JOB, &sim)
        ),
    );
    let output = ws.run(&["check", "jobs/cmd.toml"]);
    assert_exit(&output, 0);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("rows      4: 3 valid, 1 invalid, 0 done"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 duplicate rows, 1 on allow/deny lists, 0 answered by the cache"),
        "{stdout}"
    );
    assert!(stdout.contains("row 3: the openid is empty"), "{stdout}");
    assert!(stdout.contains("calls     1 still to send"), "{stdout}");
    assert!(stdout.contains("at the rate of 5000/s"), "{stdout}");
    assert!(stdout.contains("set [api] price_per_call"), "{stdout}");
    assert_eq!(sim.stats().risk_requests, 0);
    assert!(sim.stats().token_fetches.is_empty());
    assert!(
        !ws.path("jobs/.riskbatch/cmd/checkpoint.sqlite").exists(),
        "check must not create state"
    );
}

#[test]
fn lists_decide_rows_without_a_call() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.write("data/p.csv", "openid,device_id\noA,d1\noB,d2\noC,d3\n");
    ws.write("lists/allow.txt", "# staff\noA\n");
    ws.write("lists/deny.txt", "oB\n");
    ws.write(
        "jobs/cmd.toml",
        format!(
            "{}[lists]\nallow = \"../lists/allow.txt\"\ndeny = \"../lists/deny.txt\"\n",
            with_sim(JOB, &sim)
        ),
    );
    assert_exit(&ws.run(&["run", "jobs/cmd.toml", "--progress", "never"]), 0);
    let (header, rows) = read_csv(&ws.path("out/results.csv"));
    let cols = columns(&header);
    assert_eq!(rows[0][cols["risk_source"]], "allowlist");
    assert_eq!(rows[0][cols["risk_level"]], "0");
    assert_eq!(rows[1][cols["risk_source"]], "denylist");
    assert_eq!(rows[1][cols["risk_level"]], "3");
    assert_eq!(rows[2][cols["risk_source"]], "api");
    assert_eq!(
        sim.stats().per_openid.unwrap().keys().collect::<Vec<_>>(),
        ["oC"]
    );
    assert_eq!(summary(&ws.path("out/summary.json"))["calls"]["listed"], 2);
}

#[test]
fn cache_answers_an_identical_request_in_a_new_run() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.write("data/p.csv", "openid,device_id\noA,d1\noB,d2\n");
    ws.write("jobs/cmd.toml", with_sim(JOB, &sim));
    assert_exit(&ws.run(&["run", "jobs/cmd.toml", "--progress", "never"]), 0);
    // Tomorrow's export: one participant again, one new.
    ws.write("data/p2.csv", "openid,device_id\noA,d1\noC,d3\n");
    assert_exit(
        &ws.run(&[
            "run",
            "jobs/cmd.toml",
            "--input",
            "data/p2.csv",
            "--progress",
            "never",
        ]),
        0,
    );
    let (header, rows) = read_csv(&ws.path("out/results.csv"));
    let cols = columns(&header);
    assert_eq!(rows[0][cols["risk_source"]], "cache");
    assert_eq!(rows[0][cols["risk_attempts"]], "0");
    assert_eq!(rows[1][cols["risk_source"]], "api");
    assert_eq!(sim.stats().risk_requests, 3);
}

#[test]
fn max_chunks_then_status_report_and_resume() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.participants("data/p.csv", 450, 3);
    ws.write(
        "jobs/cmd.toml",
        with_sim(JOB, &sim).replace("rate = 5000", "rate = 5000\nchunk_size = 100"),
    );
    let first = ws.run(&[
        "run",
        "jobs/cmd.toml",
        "--max-chunks",
        "2",
        "--progress",
        "never",
    ]);
    assert_exit(&first, 75);
    let paused = summary(&ws.path("out/summary.json"));
    assert_eq!(paused["state"], "paused");
    assert_eq!(paused["pause_reason"], "max_chunks");
    assert_eq!(paused["rows"]["done"], 200);
    assert_eq!(paused["chunks"]["done"], 2);
    assert!(
        !ws.path("out/results.parquet").exists(),
        "results appear only when complete"
    );

    let status = ws.run(&["status", "jobs/cmd.toml"]);
    assert_exit(&status, 0);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("200 done, 250 pending")
            && text.contains("2/5 done")
            && text.contains("running    no"),
        "{text}"
    );

    let report = ws.run(&["report", "jobs/cmd.toml"]);
    assert_exit(&report, 0);
    let (header, rows) = read_csv(&ws.path("out/results.csv"));
    assert_eq!(rows.len(), 450);
    assert_eq!(rows[449][columns(&header)["risk_status"]], "pending");
    assert_eq!(summary(&ws.path("out/summary.json"))["partial"], true);

    let sent_before = sim.stats().risk_requests;
    assert_exit(&ws.run(&["run", "jobs/cmd.toml", "--progress", "never"]), 0);
    let stats = sim.stats();
    assert_eq!(
        stats.max_sends_per_request, 1,
        "resume sent a request again"
    );
    let done = summary(&ws.path("out/summary.json"));
    assert_eq!(done["state"], "complete");
    assert_eq!(done["calls"]["sent"], stats.risk_requests);
    assert!(stats.risk_requests > sent_before);
}

#[test]
fn embedded_simulator_runs_the_demo_shape_without_credentials() {
    let ws = Workspace::new();
    ws.participants("data/p.csv", 300, 5);
    ws.write("jobs/cmd.toml", format!("{JOB}[sim]\nlatency = \"1ms\"\n"));
    let output = ws
        .command(&["run", "jobs/cmd.toml", "--progress", "never"])
        .env_remove("WECHAT_APPID")
        .env_remove("WECHAT_SECRET")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("results.parquet") && stdout.contains("summary.json"),
        "{stdout}"
    );
    assert_eq!(summary(&ws.path("out/summary.json"))["rows"]["done"], 300);
}

#[test]
fn masked_columns_are_hashed_in_every_output() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.write(
        "data/p.csv",
        "openid,device_id,phone\noA,d1,13800000000\noB,d1,13900000000\noC,d1,\n",
    );
    ws.write(
        "jobs/cmd.toml",
        with_sim(JOB, &sim).replace("[output]\n", "[output]\nmask = [\"phone\"]\n"),
    );
    assert_exit(&ws.run(&["run", "jobs/cmd.toml", "--progress", "never"]), 0);
    let text = std::fs::read_to_string(ws.path("out/results.csv")).unwrap();
    assert!(
        !text.contains("13800000000") && !text.contains("13900000000"),
        "{text}"
    );
    let (header, rows) = read_csv(&ws.path("out/results.csv"));
    let phone = columns(&header)["phone"];
    assert_eq!(rows[0][phone].len(), 64);
    assert_eq!(rows[2][phone], "", "an empty cell stays empty");
    let summary = summary(&ws.path("out/summary.json"));
    assert_eq!(summary["clusters"][0]["field"], "deviceid");
    assert_eq!(summary["clusters"][0]["rows"], 3);
}

#[test]
fn a_second_process_exits_75_at_once_and_sigterm_pauses_the_first() {
    let sim = Sim::start(&["--latency", "150ms"]);
    let ws = Workspace::new();
    ws.participants("data/p.csv", 80, 8);
    ws.write(
        "jobs/cmd.toml",
        with_sim(JOB, &sim).replace("concurrency = 8", "concurrency = 2"),
    );
    let mut first = ws
        .command(&["run", "jobs/cmd.toml", "--progress", "never"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first process has sent something: it holds the lock by then.
    let started = std::time::Instant::now();
    while sim.stats().risk_requests == 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the first run never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = ws.run(&["run", "jobs/cmd.toml", "--progress", "never"]);
    assert_exit(&second, 75);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("already running") && stderr.contains(&first.id().to_string()),
        "{}",
        show(&second)
    );
    let status = ws.run(&["status", "jobs/cmd.toml"]);
    assert!(
        String::from_utf8_lossy(&status.stdout)
            .contains(&format!("running    yes, process {}", first.id()))
    );

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let code = first.wait().unwrap().code();
    assert_eq!(code, Some(75));
    let paused = summary(&ws.path("out/summary.json"));
    assert_eq!(paused["state"], "paused");
    assert_eq!(paused["pause_reason"], "interrupted");
    let done_before = paused["rows"]["done"].as_u64().unwrap();
    assert!(done_before < 80, "the run finished before the signal");

    assert_exit(&ws.run(&["run", "jobs/cmd.toml", "--progress", "never"]), 0);
    let stats = sim.stats();
    assert!(stats.max_sends_per_request <= 2, "{stats:?}");
    let resent = stats.risk_requests - stats.distinct_requests;
    assert!(
        resent <= 2,
        "re-sent {resent} requests after SIGTERM; at most the 2 in flight may be"
    );
}

/// A forwarding HTTP proxy on loopback: the one request of each connection
/// is sent on to its absolute URL and the answer (which closes the
/// connection) copied back. Returns its URL and the request lines it forwarded.
fn forwarding_proxy() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(client.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                    return;
                }
                let request_line = request_line.trim_end().to_string();
                let mut headers = Vec::new();
                let mut length = 0usize;
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    if header == "\r\n" {
                        break;
                    }
                    let lower = header.to_ascii_lowercase();
                    if let Some(value) = lower.strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap();
                    }
                    if !lower.starts_with("connection:") && !lower.starts_with("proxy-") {
                        headers.push(header);
                    }
                }
                let mut body = vec![0u8; length];
                reader.read_exact(&mut body).unwrap();
                log.lock().unwrap().push(request_line.clone());
                let mut parts = request_line.splitn(3, ' ');
                let (method, target) = (parts.next().unwrap(), parts.next().unwrap());
                let rest = target
                    .strip_prefix("http://")
                    .expect("absolute-form target");
                let (host, path) = rest.split_once('/').unwrap();
                let mut upstream = std::net::TcpStream::connect(host).unwrap();
                write!(upstream, "{method} /{path} HTTP/1.1\r\n").unwrap();
                for header in &headers {
                    upstream.write_all(header.as_bytes()).unwrap();
                }
                upstream.write_all(b"Connection: close\r\n\r\n").unwrap();
                upstream.write_all(&body).unwrap();
                let mut answer = Vec::new();
                upstream.read_to_end(&mut answer).unwrap();
                let _ = client.write_all(&answer);
            });
        }
    });
    (url, seen)
}

#[test]
fn a_proxy_named_in_the_environment_carries_token_and_risk_requests() {
    let sim = Sim::start(&[]);
    let (proxy, seen) = forwarding_proxy();
    let ws = Workspace::new();
    ws.write("data/p.csv", "openid,device_id\noA,d1\noB,d2\noC,d3\n");
    ws.write("jobs/cmd.toml", with_sim(JOB, &sim));
    let output = ws
        .command(&["run", "jobs/cmd.toml", "--progress", "never"])
        .env("HTTP_PROXY", &proxy)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let stats = sim.stats();
    assert_eq!(stats.risk_requests, 3);
    let lines = seen.lock().unwrap().clone();
    let risk: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with(&format!("POST {}/wxa/servicemarket?access_token=", sim.url)))
        .collect();
    assert_eq!(risk.len(), 3, "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("/cgi-bin/stable_token")),
        "the token request went through the proxy too: {lines:?}"
    );

    // NO_PROXY excludes the simulator's host: straight there, not through the proxy.
    let output = ws
        .command(&["run", "jobs/cmd.toml", "--fresh", "--progress", "never"])
        .env("HTTP_PROXY", &proxy)
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    assert_eq!(sim.stats().risk_requests, 6);
    assert_eq!(seen.lock().unwrap().len(), lines.len());
}

fn check_json(ws: &Workspace) -> serde_json::Value {
    let output = ws.run(&["check", "jobs/cmd.toml", "--json"]);
    assert_exit(&output, 0);
    assert_eq!(output.stdout.iter().filter(|b| **b == b'\n').count(), 1);
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn check_json_counts_exactly_the_requests_not_yet_answered_with_time_and_cost() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.participants("data/p.csv", 5000, 21);
    ws.write(
        "jobs/cmd.toml",
        format!("{}price_per_call = 0.25\n", with_sim(JOB, &sim))
            .replace("rate = 5000", "rate = 400"),
    );
    let before = check_json(&ws);
    for key in [
        "rows",
        "invalid_rows",
        "listed",
        "duplicates",
        "cached",
        "done",
        "calls",
        "seconds",
        "cost",
    ] {
        assert!(before.get(key).is_some(), "no {key} in {before}");
    }
    let calls = before["calls"].as_u64().unwrap();
    let rows = before["rows"].as_u64().unwrap();
    assert_eq!(rows, 5000);
    assert_eq!(before["done"], 0);
    assert_eq!(
        calls,
        rows - before["invalid_rows"].as_u64().unwrap() - before["duplicates"].as_u64().unwrap()
    );
    assert_eq!(before["cost"].as_f64().unwrap(), calls as f64 * 0.25);
    // No latency is known for a real URL before a first invocation: the rate alone.
    assert_eq!(before["pace"]["source"], "unknown");
    assert!(
        (before["seconds"].as_f64().unwrap() - calls as f64 / 400.0).abs() < 0.1,
        "{before}"
    );
    assert_eq!(sim.stats().risk_requests, 0);
    assert!(sim.stats().token_fetches.is_empty());

    assert_exit(
        &ws.run(&[
            "run",
            "jobs/cmd.toml",
            "--progress",
            "never",
            "--max-chunks",
            "2",
        ]),
        75,
    );
    let paused = summary(&ws.path("out/summary.json"));
    let stats = sim.stats();
    let after = check_json(&ws);
    assert_eq!(
        sim.stats().risk_requests,
        stats.risk_requests,
        "check sent nothing"
    );
    assert_eq!(
        sim.stats().token_fetches,
        stats.token_fetches,
        "not even a token"
    );
    // Exactly the distinct requests the finished rows needed, not a share.
    assert_eq!(
        after["calls"].as_u64().unwrap(),
        calls - stats.distinct_requests
    );
    assert_eq!(after["done"], paused["rows"]["done"]);
    assert_eq!(after["done"], 2000);
    assert!(
        after["pace"]["source"]["measured"]["requests"]
            .as_u64()
            .unwrap()
            >= 1900,
        "{after}"
    );

    assert_exit(&ws.run(&["run", "jobs/cmd.toml", "--progress", "never"]), 0);
    let complete = check_json(&ws);
    assert_eq!(complete["calls"], 0);
    assert_eq!(complete["done"], 5000);
    assert_eq!(complete["cost"].as_f64().unwrap(), 0.0);
    let text = String::from_utf8(ws.run(&["check", "jobs/cmd.toml"]).stdout).unwrap();
    assert!(
        text.contains("is complete: running it again makes no call"),
        "{text}"
    );
}

#[test]
fn check_counts_the_cache_of_an_earlier_run_and_the_simulator_pace() {
    let ws = Workspace::new();
    let mut today = String::from("openid,device_id\n");
    for i in 0..1500 {
        today.push_str(&format!("oPerson{i:05},dev-{}\n", i % 700));
    }
    ws.write("data/p.csv", &today);
    // The embedded simulator: the pace comes from the [sim] settings, and a
    // concurrency of 4 with 50 ms answers (80/s) is below the rate of 400/s.
    ws.write(
        "jobs/cmd.toml",
        format!(
            "{}[sim]\nlatency = \"50ms\"\n",
            JOB.replace("rate = 5000", "rate = 400")
                .replace("concurrency = 8", "concurrency = 4")
        ),
    );
    let fresh = check_json(&ws);
    assert_eq!(fresh["pace"]["source"], "simulator");
    assert_eq!(fresh["time"]["bound"], "concurrency");
    let calls = fresh["calls"].as_f64().unwrap();
    assert!(
        (fresh["seconds"].as_f64().unwrap() - calls / 80.0).abs() < 0.2,
        "{fresh}"
    );
    let text = String::from_utf8(ws.run(&["check", "jobs/cmd.toml"]).stdout).unwrap();
    assert!(
        text.contains("bound by concurrency 4 ÷ 50 ms per request = 80/s"),
        "{text}"
    );
    ws.write(
        "jobs/cmd.toml",
        format!("{}[sim]\nlatency = \"0ms\"\n", JOB),
    );
    assert_exit(&ws.run(&["run", "jobs/cmd.toml", "--progress", "never"]), 0);
    // Tomorrow's export holds the same participants plus new ones: the
    // answers of today's run are reused within the cache's ttl.
    ws.write("data/p2.csv", format!("{today}oNewParticipant1,dev-new\n"));
    let output = ws.run(&["check", "jobs/cmd.toml", "--json", "--input", "data/p2.csv"]);
    assert_exit(&output, 0);
    let tomorrow: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(tomorrow["done"], 0);
    assert_eq!(tomorrow["cached"].as_f64().unwrap(), calls);
    assert_eq!(tomorrow["calls"], 1);
}
