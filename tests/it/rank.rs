//! Scene "rank" (wechat-api.md §4): the same job, chunks, resume and dedupe,
//! against the simulator's `/wxa/getuserriskrank`.

use std::collections::HashMap;

use crate::harness::*;

fn job(sim: &Sim, extra: &str) -> String {
    format!(
        r#"name = "rank"
scene = "rank"
[input]
path = "../data/p.csv"
[input.columns]
openid = "openid"
clientip = "ip"
phonenum = "phone"
email = "email"
[output]
dir = "../out"
[api]
base_url = "{}"
{extra}
[throttle]
rate = 5000
concurrency = 8
chunk_size = 100
"#,
        sim.url
    )
}

/// Rows of results.csv by openid: (risk_status, risk_level, risk_label, risk_request_id).
fn results(ws: &Workspace) -> HashMap<String, (String, String, String, String)> {
    let (header, rows) = read_csv(&ws.path("out/results.csv"));
    let c = columns(&header);
    rows.iter()
        .map(|r| {
            (
                r[c["openid"]].clone(),
                (
                    r[c["risk_status"]].clone(),
                    r[c["risk_level"]].clone(),
                    r[c["risk_label"]].clone(),
                    r[c["risk_request_id"]].clone(),
                ),
            )
        })
        .collect()
}

fn participants(ws: &Workspace, rows: usize, special: &[&str]) {
    let mut csv = String::from("openid,ip,phone,email\n");
    for openid in special {
        csv.push_str(&format!("{openid},10.0.0.1,,\n"));
    }
    for i in 0..rows {
        csv.push_str(&format!(
            "oRank{i:05},10.1.{}.{},1380000{i:04},u{i}@example.com\n",
            i / 250,
            i % 250
        ));
    }
    ws.write("data/p.csv", csv);
}

#[test]
fn ranks_0_to_4_are_levels_and_a_row_without_client_ip_is_invalid_with_no_call() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    participants(&ws, 600, &[]);
    let mut csv = std::fs::read_to_string(ws.path("data/p.csv")).unwrap();
    csv.push_str("oNoIp,,13800000000,\noRank00001,10.1.0.1,13800000001,u1@example.com\n");
    ws.write("data/p.csv", csv);
    ws.write("jobs/rank.toml", job(&sim, ""));
    let output = ws.run(&["run", "jobs/rank.toml", "--progress", "never"]);
    assert_exit(&output, 0);
    let rows = results(&ws);
    assert_eq!(rows["oNoIp"].0, "invalid_input");
    let stats = sim.stats();
    let per_openid = stats.per_openid.clone().unwrap();
    assert!(
        !per_openid.contains_key("oNoIp"),
        "no call for a row without client_ip"
    );
    assert_eq!(
        per_openid["oRank00001"], 1,
        "identical requests are sent once"
    );
    assert_eq!(
        stats.by_api.get("getuserriskrank"),
        Some(&600),
        "the duplicate row is not sent"
    );
    let mut labels = std::collections::BTreeSet::new();
    for i in 0..600 {
        let (status, level, label, request_id) = &rows[&format!("oRank{i:05}")];
        assert_eq!(status, "ok");
        let level: u8 = level.parse().unwrap();
        assert!(level <= 4);
        labels.insert(label.clone());
        assert!(
            request_id.parse::<u64>().is_ok(),
            "unoin_id as request id: {request_id}"
        );
    }
    assert_eq!(labels.len(), 5, "{labels:?}");
    assert!(labels.contains("very_high"));
    let summary = summary(&ws.path("out/summary.json"));
    assert!(
        summary["risk_levels"]["4"].as_u64().unwrap() > 0,
        "{summary}"
    );
}

#[test]
fn rank_errcodes_give_their_status_pause_or_failure() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    participants(&ws, 50, &["errcode43104_other_appid"]);
    ws.write("jobs/rank.toml", job(&sim, ""));
    assert_exit(
        &ws.run(&["run", "jobs/rank.toml", "--progress", "never"]),
        0,
    );
    assert_eq!(results(&ws)["errcode43104_other_appid"].0, "invalid_openid");

    // 9410009: the test quota is used up; the run pauses and resumes later.
    let ws = Workspace::new();
    participants(&ws, 50, &["errcode9410009_quota"]);
    ws.write("jobs/rank.toml", job(&sim, ""));
    let output = ws.run(&["run", "jobs/rank.toml", "--progress", "never"]);
    assert_exit(&output, 75);
    assert_eq!(
        summary(&ws.path("out/summary.json"))["pause_reason"],
        "test_quota"
    );

    // 40129: the scene is wrong for the appid; the message names rank_scene.
    let ws = Workspace::new();
    participants(&ws, 50, &["errcode40129_scene"]);
    ws.write("jobs/rank.toml", job(&sim, "rank_scene = \"registration\""));
    let output = ws.run(&["run", "jobs/rank.toml", "--progress", "never"]);
    assert_exit(&output, 1);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("rank_scene"),
        "{}",
        show(&output)
    );
    assert_eq!(summary(&ws.path("out/summary.json"))["state"], "failed");
}

#[test]
fn a_rank_run_resumes_chunk_by_chunk_and_sends_nothing_twice() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    participants(&ws, 450, &[]);
    ws.write("jobs/rank.toml", job(&sim, ""));
    assert_exit(
        &ws.run(&[
            "run",
            "jobs/rank.toml",
            "--progress",
            "never",
            "--max-chunks",
            "2",
        ]),
        75,
    );
    assert_eq!(summary(&ws.path("out/summary.json"))["rows"]["done"], 200);
    assert_exit(
        &ws.run(&["run", "jobs/rank.toml", "--progress", "never"]),
        0,
    );
    let stats = sim.stats();
    assert_eq!(stats.max_sends_per_request, 1);
    assert_eq!(stats.distinct_requests, 450);
    assert_exit(
        &ws.run(&["run", "jobs/rank.toml", "--progress", "never"]),
        0,
    );
    assert_eq!(
        sim.stats().risk_requests,
        stats.risk_requests,
        "a complete run calls nothing"
    );
}

#[test]
fn scene_rank_needs_a_client_ip_column_and_a_known_rank_scene() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    participants(&ws, 5, &[]);
    ws.write(
        "jobs/rank.toml",
        job(&sim, "").replace("clientip = \"ip\"\n", ""),
    );
    let output = ws.run(&["check", "jobs/rank.toml"]);
    assert_exit(&output, 2);
    assert!(String::from_utf8_lossy(&output.stderr).contains("input.columns.clientip"));
    ws.write("jobs/rank.toml", job(&sim, "rank_scene = \"shop\""));
    let output = ws.run(&["check", "jobs/rank.toml"]);
    assert_exit(&output, 2);
    assert!(String::from_utf8_lossy(&output.stderr).contains("api.rank_scene"));
}
