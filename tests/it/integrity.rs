//! Never silently wrong: every input line accounted for, outputs that belong
//! to their run, damaged state refused out loud, a summary at every exit.

use std::process::Output;

use serde_json::Value;

use crate::harness::*;

const JOB: &str = r#"name = "acct"
[input]
path = "../data/p.csv"
[input.columns]
openid = "openid"
deviceid = "device_id"
clientip = "client_ip"
[output]
dir = "../out"
[throttle]
rate = 5000
concurrency = 8
max_retries = 1
"#;

fn job_with(sim: &Sim, extra: &str) -> String {
    format!("{JOB}{extra}[api]\nbase_url = \"{}\"\n", sim.url)
}

fn run(ws: &Workspace, args: &[&str]) -> Output {
    let mut all = vec!["run", "jobs/acct.toml", "--progress", "never"];
    all.extend_from_slice(args);
    ws.run(&all)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn assert_says(output: &Output, words: &[&str]) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        stderr(output)
    );
    for word in words {
        assert!(text.contains(word), "`{word}` not said:\n{}", show(output));
    }
}

/// 30 data rows (lines 2–31), each `o<n>,d<n>,10.0.0.<n>,note <n>`.
fn rows_text(edit: impl Fn(usize, String) -> String) -> String {
    let mut text = String::from("openid,device_id,client_ip,note\n");
    for n in 1..=30 {
        text.push_str(&edit(n + 1, format!("o{n},d{n},10.0.0.{n},note {n}")));
        text.push('\n');
    }
    text
}

fn summary_of(ws: &Workspace) -> Value {
    summary(&ws.path("out/summary.json"))
}

#[track_caller]
fn assert_calls_match_the_server(ws: &Workspace, sim: &Sim) {
    assert_eq!(
        summary_of(ws)["calls"]["sent"].as_u64().unwrap(),
        sim.stats().risk_requests,
        "calls.sent must equal what the server received"
    );
}

#[test]
fn a_quote_that_never_closes_is_refused_before_any_call_naming_its_line() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.write("jobs/acct.toml", job_with(&sim, ""));
    // A stray quote in line 11, in a middle column and in the last column.
    for edit in [
        |line: usize, row: String| {
            if line == 11 {
                row.replace(",d10,", ",\"d10,")
            } else {
                row
            }
        },
        |line: usize, row: String| {
            if line == 11 {
                row.replace("note 10", "\"note 10")
            } else {
                row
            }
        },
    ] {
        ws.write("data/p.csv", rows_text(edit));
        let output = run(&ws, &[]);
        assert_exit(&output, 2);
        assert_says(&output, &["line 11", "never closed", "p.csv"]);
        let checked = ws.run(&["check", "jobs/acct.toml"]);
        assert_exit(&checked, 2);
        assert_says(&checked, &["line 11", "never closed"]);
    }
    assert_eq!(sim.stats().risk_requests, 0);
    assert!(sim.stats().token_fetches.is_empty());
}

#[test]
fn a_line_break_in_a_field_sent_to_wechat_makes_the_row_invalid_and_every_line_is_counted() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.write("jobs/acct.toml", job_with(&sim, ""));
    // Line 11 opens a quote in client_ip that line 20 closes: one row of
    // lines 11–20. Line 25's note legitimately holds a line break.
    let text = rows_text(|line, row| match line {
        11 => row.replace(",10.0.0.10,", ",\"10.0.0.10,"),
        20 => row.replace("note 19", "note 19\""),
        25 => row.replace("note 24", "\"note\n24\""),
        _ => row,
    });
    ws.write("data/p.csv", &text);
    let output = run(&ws, &[]);
    assert_exit(&output, 0);
    let (header, rows) = read_csv(&ws.path("out/results.csv"));
    let cols = columns(&header);
    // 32 physical lines: the header, 30 rows, and the note's extra line.
    let summary = summary_of(&ws);
    assert_eq!(summary["input"]["lines"], 32, "{summary:#}");
    assert_eq!(summary["input"]["rows"], 21);
    assert_eq!(rows.len(), 21);
    let merged = &rows[9];
    assert_eq!(merged[cols["openid"]], "o10");
    assert_eq!(merged[cols["risk_status"]], "invalid_input");
    let message = &merged[cols["risk_message"]];
    assert!(
        message.contains("client_ip") && message.contains("lines 11–20"),
        "{message}"
    );
    let noted = rows.iter().find(|r| r[cols["openid"]] == "o24").unwrap();
    assert_eq!(noted[cols["risk_status"]], "ok");
    let stats = sim.stats();
    assert_eq!(stats.risk_requests, 20, "the merged row is never sent");
    assert!(!stats.per_openid.unwrap().contains_key("o10"));
    assert_calls_match_the_server(&ws, &sim);
    let checked = ws.run(&["check", "jobs/acct.toml"]);
    assert_says(&checked, &["32 physical lines", "21 rows"]);
}

#[test]
fn bytes_that_are_not_text_make_the_row_invalid_never_a_replacement_sent() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.write("jobs/acct.toml", job_with(&sim, ""));
    // More than the first MiB of ASCII, so that `auto` guesses UTF-8.
    let mut bytes = b"openid,device_id,client_ip,note\n".to_vec();
    let padding = "x".repeat(100);
    for n in 0..12_000 {
        bytes.extend_from_slice(format!("o{n},d{n},10.0.0.{},{padding}\n", n % 250).as_bytes());
    }
    assert!(bytes.len() > 1 << 20);
    bytes.extend_from_slice(b"o\xff\xfebad1,dX,10.0.0.1,x\n");
    bytes.extend_from_slice(b"olast,dY,10.0.0.2,");
    // GBK in a column not sent: read as GBK, and the wrong guess is said.
    bytes.extend_from_slice(&encoding_rs::GBK.encode("上海").0);
    bytes.push(b'\n');
    ws.write("data/p.csv", &bytes);
    let output = run(&ws, &[]);
    assert_exit(&output, 0);
    assert_says(
        &output,
        &["row 12002", "\"note\" is not UTF-8", "[input] encoding"],
    );
    let (header, rows) = read_csv(&ws.path("out/results.csv"));
    let cols = columns(&header);
    let bad = &rows[12_000];
    assert_eq!(bad[cols["risk_status"]], "invalid_input");
    assert_eq!(bad[cols["risk_source_row"]], "12001");
    assert!(
        bad[cols["risk_message"]].contains("\"openid\""),
        "{}",
        bad[cols["risk_message"]]
    );
    assert!(!bad[cols["openid"]].contains('\u{fffd}'));
    assert_eq!(rows[12_001][cols["risk_status"]], "ok");
    assert_eq!(rows[12_001][cols["note"]], "上海");
    let sent = sim.stats().per_openid.unwrap();
    assert!(
        sent.keys().all(|o| o.is_ascii()),
        "a replaced openid was sent"
    );
    assert_eq!(sim.stats().risk_requests, 12_001);
}

#[test]
fn permanent_http_answers_are_row_verdicts_and_forbidden_fails_the_run() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.write("jobs/acct.toml", job_with(&sim, ""));
    let big = "d".repeat(10 << 20);
    let text = format!(
        "openid,device_id,client_ip,note\noA,d1,10.0.0.1,x\noBig,{big},10.0.0.2,x\nhttp404_x,d3,10.0.0.3,x\nhttp400_y,d4,10.0.0.4,x\noE,d5,10.0.0.5,x\n"
    );
    ws.write("data/p.csv", &text);
    let output = run(&ws, &[]);
    assert_exit(&output, 0);
    let (header, rows) = read_csv(&ws.path("out/results.csv"));
    let cols = columns(&header);
    let status: Vec<&str> = rows
        .iter()
        .map(|r| r[cols["risk_status"]].as_str())
        .collect();
    assert_eq!(
        status,
        ["ok", "invalid_input", "param_error", "param_error", "ok"]
    );
    assert!(rows[1][cols["risk_message"]].contains("413"));
    assert!(rows[2][cols["risk_message"]].contains("404"));
    assert_eq!(rows[1][cols["risk_attempts"]], "1", "no retry of a 413");
    assert_eq!(sim.stats().risk_requests, 5);
    assert_calls_match_the_server(&ws, &sim);

    // A 403 for the appid: the run fails, with a message and a summary.
    ws.write(
        "data/p.csv",
        "openid,device_id,client_ip,note\nhttp403_a,d1,10.0.0.1,x\n",
    );
    let output = run(&ws, &[]);
    assert_exit(&output, 1);
    assert_says(&output, &["HTTP 403", "permissions"]);
    assert_eq!(summary_of(&ws)["state"], "failed");
    assert!(
        summary_of(&ws)["error"]
            .as_str()
            .unwrap()
            .contains("HTTP 403")
    );
}

#[test]
fn outputs_always_belong_to_their_run_and_an_output_folder_to_one_job() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.write("jobs/acct.toml", job_with(&sim, ""));
    ws.participants("data/p.csv", 200, 1);
    ws.participants("data/other.csv", 500, 2);
    assert_exit(&run(&ws, &[]), 0);
    assert_exit(&run(&ws, &["--input", "data/other.csv"]), 0);
    let sent = sim.stats().risk_requests;
    let again = run(&ws, &[]);
    assert_exit(&again, 0);
    assert_says(&again, &["wrote", "results.csv"]);
    assert_eq!(
        sim.stats().risk_requests,
        sent,
        "no call for a complete run"
    );
    let summary = summary_of(&ws);
    assert_eq!(summary["input"]["rows"], 200);
    assert_eq!(read_csv(&ws.path("out/results.csv")).1.len(), 200);
    let (_, batches) = read_parquet(&ws.path("out/results.parquet"));
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 200);
    let metadata = parquet_metadata(&ws.path("out/results.parquet"));
    assert_eq!(metadata["riskbatch.run_id"], summary["run_id"]);
    assert_eq!(metadata["riskbatch.job"], "acct");
    assert_eq!(
        metadata["riskbatch.fingerprint"],
        summary["input"]["fingerprint"]
    );
    assert_eq!(summary["results_of"]["run_id"], summary["run_id"]);
    // Run again once more: its own files are left alone and nothing says "wrote results".
    let own = run(&ws, &[]);
    assert!(!String::from_utf8_lossy(&own.stdout).contains("results.csv"));

    // Another job pointed at the same output folder is refused before any call.
    ws.write(
        "jobs/other.toml",
        job_with(&sim, "").replace("name = \"acct\"", "name = \"intruder\""),
    );
    let intruder = ws.run(&["run", "jobs/other.toml", "--progress", "never"]);
    assert_exit(&intruder, 2);
    assert_says(&intruder, &["\"acct\"", "[output] dir", "other.toml"]);
    assert_eq!(sim.stats().risk_requests, sent);
    assert_eq!(summary_of(&ws)["job"], "acct");
}

fn parquet_metadata(path: &std::path::Path) -> std::collections::HashMap<String, String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect()
}

#[test]
fn a_missing_or_damaged_checkpoint_is_refused_with_what_it_would_cost() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.participants("data/p.csv", 3000, 3);
    ws.write(
        "jobs/acct.toml",
        job_with(&sim, "").replace("rate = 5000", "rate = 5000\nchunk_size = 1000"),
    );
    assert_exit(&run(&ws, &["--max-chunks", "1"]), 75);
    let paid = sim.stats().risk_requests;
    let done = summary_of(&ws)["rows"]["done"].as_u64().unwrap();
    assert!(paid > 0 && done == 1000);
    let state = ws.path("jobs/.riskbatch/acct");
    for file in [
        "checkpoint.sqlite",
        "checkpoint.sqlite-wal",
        "checkpoint.sqlite-shm",
    ] {
        let _ = std::fs::remove_file(state.join(file));
    }
    let output = run(&ws, &[]);
    assert_exit(&output, 2);
    assert_says(
        &output,
        &[
            "checkpoint.sqlite",
            &format!("{done} of 3000 rows done"),
            &format!("{paid} calls paid"),
            "--fresh",
        ],
    );
    assert_eq!(sim.stats().risk_requests, paid, "nothing paid again");

    // A damaged checkpoint: named, with the remedy, for run, check and status.
    std::fs::write(state.join("checkpoint.sqlite"), vec![0x5a; 8192]).unwrap();
    for command in ["run", "check", "status"] {
        let output = ws.run(&[command, "jobs/acct.toml"]);
        assert_exit(&output, 2);
        assert_says(&output, &["checkpoint.sqlite", "--fresh"]);
    }
    assert_eq!(sim.stats().risk_requests, paid);
    let fresh = run(&ws, &["--fresh"]);
    assert_exit(&fresh, 0);
    assert_says(&fresh, &["moved aside"]);
}

#[test]
fn a_damaged_masking_salt_is_an_error_naming_the_file() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.participants("data/p.csv", 50, 4);
    ws.write(
        "jobs/acct.toml",
        job_with(&sim, "").replace("dir = \"../out\"", "dir = \"../out\"\nmask = [\"phone\"]"),
    );
    assert_exit(&run(&ws, &[]), 0);
    let salt = ws.path("jobs/.riskbatch/acct/mask.salt");
    for damaged in [&b""[..], b"0123"] {
        std::fs::write(&salt, damaged).unwrap();
        let _ = std::fs::remove_file(ws.path("out/results.csv"));
        let output = run(&ws, &[]);
        assert_exit(&output, 2);
        assert_says(&output, &["mask.salt", "restore it from a backup"]);
        assert!(!ws.path("out/results.csv").exists());
    }
}

#[test]
fn a_state_folder_that_cannot_be_used_exits_2_naming_the_setting() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.participants("data/p.csv", 20, 5);
    ws.write("jobs/acct.toml", job_with(&sim, ""));
    // A file where the state folder should be.
    ws.write("jobs/.riskbatch", "not a folder");
    for command in ["run", "check", "status"] {
        let output = ws.run(&[command, "jobs/acct.toml"]);
        assert_exit(&output, 2);
        assert_says(
            &output,
            &[".riskbatch", "[state] dir", "RISKBATCH_STATE_DIR"],
        );
    }
    let output = ws
        .command(&["run", "jobs/acct.toml"])
        .env("RISKBATCH_STATE_DIR", ws.path("jobs/.riskbatch/below"))
        .output()
        .unwrap();
    assert_exit(&output, 2);
    assert_says(&output, &["RISKBATCH_STATE_DIR (set in the environment"]);
    assert_eq!(sim.stats().risk_requests, 0);
}

#[test]
fn damaged_gzip_and_misnamed_files_exit_2_before_any_call() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    let csv = ws.participants("data/p.csv", 20_000, 6);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &std::fs::read(&csv).unwrap()).unwrap();
    let gz = gz.finish().unwrap();
    ws.write("data/cut.csv.gz", &gz[..gz.len() / 2]);
    std::fs::copy(&csv, ws.path("data/p.parquet")).unwrap();
    ws.write("jobs/acct.toml", job_with(&sim, ""));
    let cut = run(&ws, &["--input", "data/cut.csv.gz"]);
    assert_exit(&cut, 2);
    assert_says(&cut, &["cut.csv.gz", "data row", "nothing was sent"]);
    let misnamed = run(&ws, &["--input", "data/p.parquet"]);
    assert_exit(&misnamed, 2);
    assert_says(
        &misnamed,
        &["p.parquet", "not a Parquet file", "like a CSV file"],
    );
    assert_eq!(sim.stats().risk_requests, 0);
}

#[test]
fn a_parquet_input_damaged_mid_file_fails_with_the_row_and_a_summary_keeping_what_was_done() {
    use arrow_array::{ArrayRef, RecordBatch, StringArray};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;
    let sim = Sim::start(&["--latency", "2ms"]);
    let ws = Workspace::new();
    let path = ws.path("data/p.parquet");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let openids: Vec<String> = (0..20_000).map(|n| format!("oParquetRow{n:08}")).collect();
    let devices: Vec<String> = (0..20_000).map(|n| format!("device-{n}")).collect();
    let ips: Vec<String> = (0..20_000)
        .map(|n| format!("10.1.{}.{}", n / 250, n % 250))
        .collect();
    let batch = RecordBatch::try_from_iter([
        (
            "openid",
            std::sync::Arc::new(StringArray::from(openids)) as ArrayRef,
        ),
        (
            "device_id",
            std::sync::Arc::new(StringArray::from(devices)) as ArrayRef,
        ),
        (
            "client_ip",
            std::sync::Arc::new(StringArray::from(ips)) as ArrayRef,
        ),
    ])
    .unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(2000))
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let mut writer = ArrowWriter::try_new(
        std::fs::File::create(&path).unwrap(),
        batch.schema(),
        Some(props),
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() * 3 / 4;
    for b in &mut bytes[middle..middle + 2000] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    ws.write(
        "jobs/acct.toml",
        job_with(&sim, "").replace("../data/p.csv", "../data/p.parquet"),
    );
    let output = run(&ws, &[]);
    assert_exit(&output, 1);
    assert_says(&output, &["p.parquet", "damaged near row"]);
    let summary = summary_of(&ws);
    assert_eq!(summary["state"], "failed", "{summary:#}");
    let error = summary["error"].as_str().unwrap();
    assert!(error.contains("damaged near row"), "{error}");
    let done = summary["rows"]["done"].as_u64().unwrap();
    assert!((2000..20_000).contains(&done), "{summary:#}");
    assert_calls_match_the_server(&ws, &sim);
    // The next invocation keeps what was done: no row is paid twice.
    let again = run(&ws, &[]);
    assert_exit(&again, 1);
    assert_eq!(sim.stats().max_sends_per_request, 1);
    assert_calls_match_the_server(&ws, &sim);
}

/// A small tmpfs mounted for the test, unmounted when dropped; None where
/// this process may not mount (not root), and then the test says so.
struct Tmpfs {
    path: std::path::PathBuf,
}

impl Tmpfs {
    fn mount(path: std::path::PathBuf, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(&path).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .is_ok_and(|o| o.status.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs at {} here", path.display());
        }
        mounted.then_some(Tmpfs { path })
    }

    fn grow(&self, size: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[test]
fn a_full_output_disk_fails_with_the_file_named_and_a_summary_then_recovers_without_calls() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.participants("data/p.csv", 5000, 7);
    ws.write("jobs/acct.toml", job_with(&sim, ""));
    let Some(disk) = Tmpfs::mount(ws.path("out"), "256k") else {
        return;
    };
    let output = run(&ws, &[]);
    assert_exit(&output, 1);
    assert_says(&output, &["results.", "disk full", "run again"]);
    let summary = summary_of(&ws);
    assert_eq!(summary["state"], "failed");
    assert!(summary["error"].as_str().unwrap().contains("results."));
    assert_eq!(summary["rows"]["done"], 5000);
    let paid = sim.stats().risk_requests;
    disk.grow("64m");
    let output = run(&ws, &[]);
    assert_exit(&output, 0);
    assert_says(&output, &["wrote", "results.parquet"]);
    assert_eq!(read_csv(&ws.path("out/results.csv")).1.len(), 5000);
    assert_eq!(sim.stats().risk_requests, paid, "no call paid again");
    assert_calls_match_the_server(&ws, &sim);
}

#[test]
fn calls_sent_stay_true_after_a_full_state_disk() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.participants("data/p.csv", 20_000, 8);
    ws.write("jobs/acct.toml", job_with(&sim, ""));
    let state = ws.path("state");
    let Some(disk) = Tmpfs::mount(state.clone(), "1m") else {
        return;
    };
    let in_state = |args: &[&str]| {
        let mut all = vec!["run", "jobs/acct.toml", "--progress", "never"];
        all.extend_from_slice(args);
        ws.command(&all)
            .env("RISKBATCH_STATE_DIR", &state)
            .output()
            .unwrap()
    };
    let full = in_state(&[]);
    assert_exit(&full, 1);
    assert_says(&full, &["state"]);
    let summary = summary_of(&ws);
    assert_eq!(summary["state"], "failed", "{summary:#}");
    assert!(
        summary["calls"]["sent"].as_u64().unwrap() <= sim.stats().risk_requests,
        "{summary:#}"
    );
    disk.grow("256m");
    let output = in_state(&[]);
    assert_exit(&output, 0);
    let summary = summary_of(&ws);
    let sent = summary["calls"]["sent"].as_u64().unwrap();
    let received = sim.stats().risk_requests;
    // At most the calls in flight when the disk filled were lost, and paid again.
    assert!(
        sent <= received && received - sent <= 16,
        "calls.sent {sent}, server {received}"
    );
    assert_eq!(summary["rows"]["done"], 20_000);
}

#[test]
fn a_failing_token_command_is_named_by_its_program_never_its_arguments() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.participants("data/p.csv", 10, 9);
    let job = job_with(&sim, "").replace(
        "[api]\n",
        "[api]\ntoken = { command = \"echo leaked-pass-42 >&2; exit 4 # --password leaked-pass-42\" }\n",
    );
    ws.write("jobs/acct.toml", job);
    let output = run(&ws, &[]);
    assert_exit(&output, 1);
    assert_says(&output, &["api.token command (`echo`)", "exit status: 4"]);
    let everything = format!(
        "{}{}{}",
        String::from_utf8_lossy(&output.stdout),
        stderr(&output),
        std::fs::read_to_string(ws.path("out/summary.json")).unwrap()
    );
    assert!(!everything.contains("leaked-pass-42"), "{everything}");
    assert_eq!(sim.stats().risk_requests, 0);
}

#[test]
fn a_partial_report_shows_rows_without_a_final_outcome_as_pending() {
    let sim = Sim::start(&["--daily-quota", "5"]);
    let ws = Workspace::new();
    ws.participants("data/p.csv", 20, 10);
    ws.write(
        "jobs/acct.toml",
        job_with(&sim, "").replace("concurrency = 8", "concurrency = 1"),
    );
    assert_exit(&run(&ws, &[]), 75);
    assert_eq!(summary_of(&ws)["pause_reason"], "daily_quota");
    assert_exit(&ws.run(&["report", "jobs/acct.toml"]), 0);
    let (header, rows) = read_csv(&ws.path("out/results.csv"));
    let cols = columns(&header);
    let pending: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| r[cols["risk_status"]] != "ok")
        .collect();
    assert_eq!(pending.len(), 15);
    for row in pending {
        assert_eq!(row[cols["risk_status"]], "pending", "{row:?}");
        for column in ["risk_level", "risk_label", "risk_errcode", "risk_message"] {
            assert_eq!(row[cols[column]], "", "{column} of a pending row");
        }
    }
}

#[test]
fn the_state_folder_ignores_itself_and_is_private() {
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    ws.participants("jobs/data/p.csv", 20, 13);
    ws.write(
        "jobs/acct.toml",
        job_with(&sim, "").replace("../data/p.csv", "data/p.csv"),
    );
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(ws.path("jobs"))
            .output()
    };
    let Ok(init) = git(&["init", "-q"]) else {
        eprintln!("skipped: no git here");
        return;
    };
    assert!(init.status.success());
    assert_exit(&run(&ws, &[]), 0);
    let status = git(&["status", "--porcelain", "--untracked-files=all"]).unwrap();
    let listed = String::from_utf8_lossy(&status.stdout);
    assert!(!listed.contains(".riskbatch"), "{listed}");
    assert!(listed.contains("acct.toml"), "{listed}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| std::fs::metadata(ws.path(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("jobs/.riskbatch"), 0o700);
        assert_eq!(mode("jobs/.riskbatch/acct"), 0o700);
        assert_eq!(mode("jobs/.riskbatch/acct/checkpoint.sqlite"), 0o600);
    }
}
