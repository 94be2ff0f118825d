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
