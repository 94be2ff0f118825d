//! report.html, metrics.prom and the CSV encodings, read back as their users would.

use crate::harness::*;

const JOB: &str = r#"name = "rep"
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

/// The job, with `output` lines added to its [output] section.
fn job(sim: &Sim, output: &str) -> String {
    format!(
        "{}[api]\nbase_url = \"{}\"\nprice_per_call = 0.5\n",
        JOB.replace("dir = \"../out\"\n", &format!("dir = \"../out\"\n{output}")),
        sim.url
    )
}

/// `name{labels} value` lines of a Prometheus text file, with the HELP/TYPE checked.
fn samples(text: &str) -> Vec<(String, f64)> {
    let mut typed = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split(' ').next().unwrap().to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let name = series.split('{').next().unwrap();
            assert!(typed.contains(name), "{name} has no # TYPE line");
            assert!(series.contains("job=\"rep\""), "{series}");
            out.push((series.to_string(), value.parse().unwrap()));
        }
    }
    out
}

fn value(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .unwrap_or_else(|| panic!("no {series}"))
        .1
}

#[test]
fn report_and_metrics_carry_the_summarys_figures_at_complete_paused_and_failed_exits() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.participants("data/p.csv", 3000, 11);
    ws.write("jobs/rep.toml", job(&sim, ""));
    for (args, code, state) in [
        (&["--max-chunks", "1"][..], 75, "paused"),
        (&[][..], 0, "complete"),
    ] {
        let mut all = vec!["run", "jobs/rep.toml", "--progress", "never"];
        all.extend_from_slice(args);
        assert_exit(&ws.run(&all), code);
        let summary = summary(&ws.path("out/summary.json"));
        let metrics = samples(&std::fs::read_to_string(ws.path("out/metrics.prom")).unwrap());
        assert_eq!(
            value(
                &metrics,
                &format!("riskbatch_run_state{{job=\"rep\",state=\"{state}\"}}")
            ),
            1.0
        );
        assert_eq!(
            value(&metrics, "riskbatch_calls_sent{job=\"rep\"}"),
            summary["calls"]["sent"].as_f64().unwrap()
        );
        let rows: f64 = metrics
            .iter()
            .filter(|(s, _)| s.starts_with("riskbatch_rows{"))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(rows, 3000.0, "rows by status add up to the total");
        for level in 0..4 {
            assert_eq!(
                value(
                    &metrics,
                    &format!("riskbatch_risk_level_rows{{job=\"rep\",level=\"{level}\"}}")
                ),
                summary["risk_levels"][level.to_string()].as_f64().unwrap()
            );
        }
        let page = std::fs::read_to_string(ws.path("out/report.html")).unwrap();
        let start = page.find("id=\"riskbatch-summary\">").unwrap() + 23;
        let end = page[start..].find("</script>").unwrap() + start;
        let embedded: serde_json::Value =
            serde_json::from_str(&page[start..end].replace("<\\/", "</")).unwrap();
        assert_eq!(embedded["rows"], summary["rows"]);
        assert_eq!(embedded["calls"], summary["calls"]);
        assert!(page.contains(&format!("class=\"state {state}\"")));
        for fetched in ["src=", "href=", "url(", "@import"] {
            assert!(
                !page.contains(fetched),
                "report.html references `{fetched}`"
            );
        }
    }
    let metrics = samples(&std::fs::read_to_string(ws.path("out/metrics.prom")).unwrap());
    let completed = value(
        &metrics,
        "riskbatch_last_complete_timestamp_seconds{job=\"rep\"}",
    );
    // A later paused invocation of another input keeps the last complete time.
    ws.participants("data/p2.csv", 3000, 12);
    assert_exit(
        &ws.run(&[
            "run",
            "jobs/rep.toml",
            "--input",
            "data/p2.csv",
            "--max-chunks",
            "1",
            "--progress",
            "never",
        ]),
        75,
    );
    let metrics = samples(&std::fs::read_to_string(ws.path("out/metrics.prom")).unwrap());
    assert_eq!(
        value(
            &metrics,
            "riskbatch_last_complete_timestamp_seconds{job=\"rep\"}"
        ),
        completed
    );
}

#[test]
fn csv_in_gbk_and_utf8_bom_reads_back_with_chinese_intact_and_an_unencodable_character_is_named() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.write(
        "data/p.csv",
        "openid,device_id,城市\noA,d1,北京\noB,d2,上海\n",
    );
    for (encoding, decode) in [
        ("gbk", encoding_rs::GBK),
        ("utf-8-bom", encoding_rs::UTF_8),
        ("gb18030", encoding_rs::GB18030),
    ] {
        ws.write(
            "jobs/rep.toml",
            job(&sim, &format!("csv_encoding = \"{encoding}\"\n")),
        );
        let _ = std::fs::remove_file(ws.path("out/results.csv"));
        assert_exit(&ws.run(&["run", "jobs/rep.toml", "--progress", "never"]), 0);
        let bytes = std::fs::read(ws.path("out/results.csv")).unwrap();
        assert_eq!(bytes.starts_with(b"\xEF\xBB\xBF"), encoding == "utf-8-bom");
        let (text, _, bad) = decode.decode(&bytes);
        assert!(!bad, "{encoding}");
        assert!(text.contains("城市") && text.contains(",北京,") && text.contains(",上海,"));
    }
    // A character GBK cannot hold: the row and column are named, Parquet is still written.
    ws.write(
        "data/p.csv",
        "openid,device_id,名字\noA,d1,张三\noB,d2,😀\n",
    );
    ws.write("jobs/rep.toml", job(&sim, "csv_encoding = \"gbk\"\n"));
    let output = ws.run(&["run", "jobs/rep.toml", "--progress", "never"]);
    assert_exit(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("row 2") && stderr.contains("\"名字\"") && stderr.contains("gb18030"),
        "{}",
        show(&output)
    );
    assert_eq!(
        read_parquet(&ws.path("out/results.parquet")).1[0].num_rows(),
        2
    );
    assert!(!ws.path("out/results.csv").exists());
}

/// The samples of a metrics file as Python's `prometheus_client` parser reads them.
fn parsed_by_prometheus_client(
    python: &std::path::Path,
    path: &std::path::Path,
) -> Vec<(String, serde_json::Value, f64)> {
    let script = "import json,sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        out=[]\n\
        for family in text_string_to_metric_families(open(sys.argv[1]).read()):\n\
        \x20   assert family.documentation, family.name\n\
        \x20   for s in family.samples:\n\
        \x20       out.append([s.name, s.labels, s.value])\n\
        print(json.dumps(out))\n";
    let output = std::process::Command::new(python)
        .args(["-c", script])
        .arg(path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", show(&output));
    serde_json::from_slice::<Vec<(String, serde_json::Value, f64)>>(&output.stdout).unwrap()
}

#[test]
fn a_failed_run_leaves_a_report_and_metrics_that_a_real_prometheus_parser_reads() {
    let Some(python) = python() else { return };
    let sim = Sim::start(&["--secret", "the-real-secret"]);
    let ws = Workspace::new();
    ws.participants("data/p.csv", 1500, 13);
    ws.write("jobs/rep.toml", job(&sim, ""));
    let output = ws.run(&["run", "jobs/rep.toml", "--progress", "never"]);
    assert_exit(&output, 1);
    let failed = summary(&ws.path("out/summary.json"));
    assert_eq!(failed["state"], "failed");
    let page = std::fs::read_to_string(ws.path("out/report.html")).unwrap();
    assert!(
        page.contains("class=\"state failed\""),
        "report.html shows the failure"
    );
    assert!(
        page.contains("40125") || page.contains("secret"),
        "report.html says why"
    );
    let samples = parsed_by_prometheus_client(&python, &ws.path("out/metrics.prom"));
    let find = |name: &str, label: Option<(&str, &str)>| {
        samples
            .iter()
            .find(|(n, labels, _)| {
                n == name && labels["job"] == "rep" && label.is_none_or(|(k, v)| labels[k] == v)
            })
            .unwrap_or_else(|| panic!("no {name} {label:?} in {samples:?}"))
            .2
    };
    assert_eq!(find("riskbatch_run_state", Some(("state", "failed"))), 1.0);
    assert_eq!(
        find("riskbatch_run_state", Some(("state", "complete"))),
        0.0
    );
    assert_eq!(find("riskbatch_calls_sent", None), 0.0);
    // Rows by status add up to the total: a row whose last attempt failed
    // is counted as failed, not also as pending.
    let pending = failed["rows"]["pending"].as_f64().unwrap()
        - failed["statuses"]["failed"].as_f64().unwrap_or(0.0);
    assert!(pending > 1400.0, "{failed}");
    assert_eq!(find("riskbatch_rows", Some(("status", "pending"))), pending);
    assert!(find("riskbatch_last_exit_timestamp_seconds", None) > 1.7e9);
    // A complete run: every figure the parser reads equals summary.json's.
    let sim = Sim::start(&[]);
    ws.write("jobs/rep.toml", job(&sim, ""));
    assert_exit(&ws.run(&["run", "jobs/rep.toml", "--progress", "never"]), 0);
    let summary = summary(&ws.path("out/summary.json"));
    let samples = parsed_by_prometheus_client(&python, &ws.path("out/metrics.prom"));
    let find = |name: &str, label: Option<(&str, &str)>| {
        samples
            .iter()
            .find(|(n, labels, _)| n == name && label.is_none_or(|(k, v)| labels[k] == v))
            .unwrap_or_else(|| panic!("no {name} {label:?}"))
            .2
    };
    assert_eq!(
        find("riskbatch_run_state", Some(("state", "complete"))),
        1.0
    );
    assert_eq!(
        find("riskbatch_calls_sent", None),
        summary["calls"]["sent"].as_f64().unwrap()
    );
    assert_eq!(
        find("riskbatch_cache_hits", None),
        summary["calls"]["cache_hits"].as_f64().unwrap()
    );
    for (status, n) in summary["statuses"].as_object().unwrap() {
        assert_eq!(
            find("riskbatch_rows", Some(("status", status))),
            n.as_f64().unwrap()
        );
    }
    assert_eq!(
        find("riskbatch_rows_per_second", None),
        summary["rows_per_second"].as_f64().unwrap()
    );
    // Completed during this exit, seconds before it.
    let since = find("riskbatch_last_exit_timestamp_seconds", None)
        - find("riskbatch_last_complete_timestamp_seconds", None);
    assert!((0.0..60.0).contains(&since), "{since}");
}

#[test]
fn clusters_open_to_their_rows_with_masked_values_masked_and_a_count_of_the_rest() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    let mut csv = String::from("openid,device_id,phone\n");
    for i in 0..40 {
        csv.push_str(&format!("oRing{i:02},dev-farm-1,13800000000\n"));
    }
    for i in 0..60 {
        csv.push_str(&format!("oSolo{i:02},dev-{i},139{i:08}\n"));
    }
    ws.write("data/p.csv", csv);
    ws.write(
        "jobs/rep.toml",
        job(&sim, "mask = [\"phone\"]\n").replace(
            "deviceid = \"device_id\"\n",
            "deviceid = \"device_id\"\nphonenum = \"phone\"\n",
        ),
    );
    assert_exit(&ws.run(&["run", "jobs/rep.toml", "--progress", "never"]), 0);
    let page = std::fs::read_to_string(ws.path("out/report.html")).unwrap();
    assert!(!page.contains("13800000000"), "a masked phone stays masked");
    let device = page
        .split("<details class=\"cluster\"")
        .find(|c| c.contains("dev-farm-1"))
        .expect("the device cluster");
    let device = &device[..device.find("</details>").unwrap()];
    assert!(device.contains("40 rows"), "{device}");
    assert_eq!(device.matches("<code>oRing").count(), 25, "{device}");
    assert!(
        device.contains("<td class=\"n\">1</td><td><code>oRing00</code>"),
        "{device}"
    );
    assert!(device.contains("15 more rows"), "{device}");
    // Each listed row shows the level its row has in the results.
    let (header, rows) = read_csv(&ws.path("out/results.csv"));
    let level = columns(&header)["risk_level"];
    let listed: Vec<_> = device.split("<tr><td class=\"n\">").skip(1).collect();
    assert_eq!(listed.len(), 25, "{device}");
    for entry in listed {
        let row: usize = entry[..entry.find('<').unwrap()].parse().unwrap();
        let shown = entry.split("<td>").nth(2).unwrap();
        let expected = &rows[row - 1][level];
        assert!(
            shown.starts_with(&format!("{expected} ")),
            "row {row}: {shown} vs {expected}"
        );
    }
    let phone = page
        .split("<details class=\"cluster\"")
        .find(|c| c.contains(">phonenum<"))
        .expect("the phone cluster, by its masked value");
    assert!(phone.contains("40 rows"));
    // The report of a complete run rebuilt later lists the same rows.
    assert_exit(&ws.run(&["report", "jobs/rep.toml"]), 0);
    let again = std::fs::read_to_string(ws.path("out/report.html")).unwrap();
    assert_eq!(
        again.matches("<code>oRing").count(),
        page.matches("<code>oRing").count()
    );
}

#[test]
fn with_log_format_json_stdout_is_one_json_object() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.participants("data/p.csv", 1200, 14);
    ws.write("jobs/rep.toml", job(&sim, ""));
    for (args, code) in [
        (
            &[
                "run",
                "jobs/rep.toml",
                "--progress",
                "never",
                "--max-chunks",
                "1",
            ][..],
            75,
        ),
        (&["run", "jobs/rep.toml", "--progress", "never"][..], 0),
        (&["report", "jobs/rep.toml"][..], 0),
    ] {
        let mut all = vec!["--log-format", "json"];
        all.splice(0..0, args.iter().copied());
        let output = ws.run(&all);
        assert_exit(&output, code);
        let stdout = String::from_utf8(output.stdout.clone()).unwrap();
        assert_eq!(stdout.lines().count(), 1, "{}", show(&output));
        let printed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(printed, summary(&ws.path("out/summary.json")));
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|_| panic!("stderr line is not JSON: {line}"));
        }
    }
}

/// Headless Chromium with the flags this machine's closed network needs.
fn chromium(profile: &std::path::Path, args: &[&str]) -> std::process::Output {
    let chromium = external_tool(&["/usr/bin/chromium".into()], "Chromium").unwrap();
    std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_demo_report_renders_in_headless_chromium_with_no_console_message() {
    if external_tool(&["/usr/bin/chromium".into()], "Chromium").is_none() {
        return;
    }
    let ws = Workspace::new();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    ws.write(
        "jobs/demo.toml",
        std::fs::read(repo.join("jobs/demo.toml")).unwrap(),
    );
    ws.write(
        "sample-data/participants.csv",
        std::fs::read(repo.join("sample-data/participants.csv")).unwrap(),
    );
    assert_exit(
        &ws.run(&["run", "jobs/demo.toml", "--progress", "never"]),
        0,
    );
    let summary = summary(&ws.path("out/demo/summary.json"));
    let url = format!("file://{}", ws.path("out/demo/report.html").display());
    let dom = chromium(&ws.path("profile"), &["--dump-dom", &url]);
    assert!(dom.status.success(), "{}", show(&dom));
    let html = String::from_utf8_lossy(&dom.stdout);
    for chart in ["levels", "statuses", "throughput"] {
        assert!(
            html.contains(&format!("<svg class=\"chart\" id=\"{chart}\"")),
            "the rendered page has no {chart} chart"
        );
    }
    assert!(html.contains("<rect class=\"bar\""), "the charts have bars");
    let calls = summary["calls"]["sent"].as_u64().unwrap();
    let grouped = format!("{},{:03}", calls / 1000, calls % 1000);
    assert!(
        html.contains(&format!("<b>{grouped}</b>")),
        "calls sent {grouped} shown"
    );
    assert!(
        html.contains("<details class=\"cluster\" open"),
        "a cluster is open"
    );
    let stderr = String::from_utf8_lossy(&dom.stderr);
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    // The screenshot the README shows is this one.
    let png = repo.join("target/report-demo.png");
    let shot = chromium(
        &ws.path("profile"),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,1500",
            &url,
        ],
    );
    assert!(shot.status.success(), "{}", show(&shot));
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "{} bytes",
        bytes.len()
    );
}
