//! Whole runs checked row by row against what the simulator must have answered.

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int8Type, Int32Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use riskbatch::sim::risk::level;

use crate::harness::*;

#[derive(Clone, Copy, Debug)]
struct Case {
    parquet: bool,
    account: bool,
    tcb: bool,
}

fn job(case: Case, sim: &Sim) -> String {
    format!(
        r#"name = "e2e"
scene = "{scene}"
[input]
path = "../data/participants.{ext}"
[input.columns]
openid = "openid"
phonenum = "phone"
certid = "cert_id"
clientip = "client_ip"
deviceid = "device_id"
wifibssid = "wifi_bssid"
mchcode = "mch_code"
[output]
dir = "../out"
[api]
base_url = "{url}"
path = "{path}"
[throttle]
chunk_size = 1000
rate = 5000
concurrency = 16
"#,
        scene = if case.account { "account" } else { "marketing" },
        ext = if case.parquet { "parquet" } else { "csv" },
        url = sim.url,
        path = if case.tcb {
            "/tcb/servicemarket"
        } else {
            "/wxa/servicemarket"
        },
    )
}

const FIELDS: [(&str, &str); 6] = [
    ("phone", "phonenum"),
    ("cert_id", "certid"),
    ("client_ip", "clientip"),
    ("device_id", "deviceid"),
    ("wifi_bssid", "wifibssid"),
    ("mch_code", "mchcode"),
];

fn text(batch: &RecordBatch, name: &str, row: usize) -> Option<String> {
    let column = batch.column_by_name(name).unwrap().as_string::<i32>();
    (!column.is_null(row)).then(|| column.value(row).to_string())
}

fn run_case(case: Case) {
    const ROWS: u64 = 2500;
    let sim = Sim::start(&[]);
    let ws = Workspace::new();
    let input = ws.participants(
        if case.parquet {
            "data/participants.parquet"
        } else {
            "data/participants.csv"
        },
        ROWS,
        // A seed whose list has empty openids as well as repeated participants.
        4,
    );
    ws.write("jobs/e2e.toml", job(case, &sim));
    let output = ws.run(&["run", "jobs/e2e.toml", "--progress", "never"]);
    assert_exit(&output, 0);
    let stats = sim.stats();
    let api = if case.account {
        "weopensecuseracctrisklevel"
    } else {
        "weopensecriskservice"
    };
    let path = if case.tcb {
        "/tcb/servicemarket"
    } else {
        "/wxa/servicemarket"
    };

    // Types, exactly as SPEC §4 says, after the input columns in their order and types.
    let (schema, batches) = read_parquet(&ws.path("out/results.parquet"));
    let (input_schema, input_batches) = if case.parquet {
        read_parquet(&input)
    } else {
        let (header, _) = read_csv(&input);
        let fields: Vec<arrow_schema::Field> = header
            .iter()
            .map(|h| arrow_schema::Field::new(h, DataType::Utf8, true))
            .collect();
        (
            std::sync::Arc::new(arrow_schema::Schema::new(fields)),
            Vec::new(),
        )
    };
    let n_in = input_schema.fields().len();
    for (i, field) in input_schema.fields().iter().enumerate() {
        assert_eq!(schema.field(i).name(), field.name());
        assert_eq!(schema.field(i).data_type(), field.data_type());
    }
    let expected_types = [
        ("risk_level", DataType::Int8),
        ("risk_label", DataType::Utf8),
        ("risk_status", DataType::Utf8),
        ("risk_source", DataType::Utf8),
        ("risk_errcode", DataType::Int32),
        ("risk_code", DataType::Int32),
        ("risk_message", DataType::Utf8),
        ("risk_request_id", DataType::Utf8),
        (
            "risk_checked_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        ),
        ("risk_attempts", DataType::Int32),
        ("risk_source_row", DataType::Int64),
        ("feedback_risklevel", DataType::Int8),
        ("feedback_message", DataType::Utf8),
        ("feedback_tags", DataType::Utf8),
        (
            "feedback_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        ),
    ];
    assert_eq!(schema.fields().len(), n_in + expected_types.len());
    for (i, (name, data_type)) in expected_types.iter().enumerate() {
        assert_eq!(schema.field(n_in + i).name(), name);
        assert_eq!(schema.field(n_in + i).data_type(), data_type, "{name}");
    }

    // Row by row.
    let input_rows: Vec<RecordBatch> = input_batches;
    let mut input_cells = Vec::new();
    if case.parquet {
        for batch in &input_rows {
            for row in 0..batch.num_rows() {
                input_cells.push(
                    input_schema
                        .fields()
                        .iter()
                        .map(|f| text(batch, f.name(), row))
                        .collect::<Vec<_>>(),
                );
            }
        }
    } else {
        let (_, rows) = read_csv(&input);
        for row in rows {
            input_cells.push(
                row.into_iter()
                    .map(|c| (!c.is_empty()).then_some(c))
                    .collect(),
            );
        }
    }
    assert_eq!(input_cells.len() as u64, ROWS);
    let names: Vec<String> = input_schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut seen: HashMap<Vec<Option<String>>, i8> = HashMap::new();
    let mut levels = [0u64; 4];
    let (mut api_rows, mut duplicate_rows, mut invalid_rows) = (0u64, 0u64, 0u64);
    let mut per_openid: HashMap<String, u32> = HashMap::new();
    let mut position = 0usize;
    for batch in &batches {
        let level_col = batch
            .column_by_name("risk_level")
            .unwrap()
            .as_primitive::<Int8Type>();
        let attempts = batch
            .column_by_name("risk_attempts")
            .unwrap()
            .as_primitive::<Int32Type>();
        let source_row = batch
            .column_by_name("risk_source_row")
            .unwrap()
            .as_primitive::<Int64Type>();
        let errcode = batch
            .column_by_name("risk_errcode")
            .unwrap()
            .as_primitive::<Int32Type>();
        let checked = batch
            .column_by_name("risk_checked_at")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        for row in 0..batch.num_rows() {
            let cells = &input_cells[position];
            position += 1;
            assert_eq!(source_row.value(row), position as i64, "rows out of order");
            for (i, name) in names.iter().enumerate() {
                assert_eq!(
                    text(batch, name, row),
                    cells[i],
                    "row {position} column {name}"
                );
            }
            let status = text(batch, "risk_status", row).unwrap();
            let openid = cells[names.iter().position(|n| n == "openid").unwrap()].clone();
            let Some(openid) = openid else {
                assert_eq!(status, "invalid_input", "row {position}");
                assert!(level_col.is_null(row) && text(batch, "risk_source", row).is_none());
                assert_eq!(attempts.value(row), 0);
                assert!(text(batch, "risk_message", row).unwrap().contains("openid"));
                invalid_rows += 1;
                continue;
            };
            let fields: Vec<(&str, &str)> = FIELDS
                .iter()
                .filter_map(|(column, field)| {
                    let i = names.iter().position(|n| n == column)?;
                    cells[i].as_deref().map(|v| (*field, v))
                })
                .collect();
            let expected = level(api, &openid, &fields) as i8;
            assert_eq!(status, "ok", "row {position}");
            assert_eq!(
                level_col.value(row),
                expected,
                "row {position}: level differs from the simulator's"
            );
            assert_eq!(
                text(batch, "risk_label", row).unwrap(),
                ["none", "low", "medium", "high"][expected as usize]
            );
            assert_eq!(errcode.value(row), 0);
            assert!(!checked.is_null(row));
            assert!(
                text(batch, "risk_request_id", row)
                    .unwrap()
                    .starts_with("sim-")
            );
            levels[expected as usize] += 1;
            let source = text(batch, "risk_source", row).unwrap();
            match seen.insert(cells.clone(), expected) {
                None => {
                    assert_eq!(source, "api", "row {position}: first occurrence");
                    assert_eq!(attempts.value(row), 1);
                    api_rows += 1;
                    *per_openid.entry(openid.clone()).or_default() += 1;
                }
                Some(first) => {
                    assert_eq!(source, "duplicate", "row {position}: repeated request");
                    assert_eq!(first, expected);
                    assert_eq!(attempts.value(row), 0);
                    duplicate_rows += 1;
                }
            }
        }
    }
    assert_eq!(position as u64, ROWS);
    assert!(
        duplicate_rows > 0 && invalid_rows > 0,
        "the input should exercise duplicates and invalid rows"
    );

    // The simulator saw each distinct request exactly once, on the right path and api.
    assert_eq!(stats.risk_requests, api_rows, "{stats:?}");
    assert_eq!(stats.distinct_requests, api_rows);
    assert_eq!(stats.max_sends_per_request, 1);
    assert_eq!(stats.by_path.get(path).copied(), Some(api_rows));
    assert_eq!(stats.by_api.get(api).copied(), Some(api_rows));
    assert_eq!(stats.per_openid.unwrap(), per_openid.into_iter().collect());
    assert_eq!(stats.token_fetches.get("stable_token").copied(), Some(1));

    // The summary agrees with the files.
    let summary = summary(&ws.path("out/summary.json"));
    assert_eq!(summary["state"], "complete");
    assert_eq!(summary["rows"]["total"], ROWS);
    assert_eq!(summary["rows"]["done"], ROWS);
    assert_eq!(summary["rows"]["pending"], 0);
    assert_eq!(summary["calls"]["sent"], api_rows);
    assert_eq!(summary["calls"]["retries"], 0);
    assert_eq!(summary["calls"]["duplicates"], duplicate_rows);
    for (l, n) in levels.iter().enumerate() {
        assert_eq!(summary["risk_levels"][l.to_string()], *n, "level {l}");
    }
    assert_eq!(summary["statuses"]["ok"], ROWS - invalid_rows);
    assert_eq!(summary["statuses"]["invalid_input"], invalid_rows);
    assert_eq!(summary["chunks"]["total"], 3);
    assert_eq!(summary["chunks"]["done"], 3);

    // The CSV holds the same rows, timestamps in ISO 8601 UTC with milliseconds.
    let (header, csv_rows) = read_csv(&ws.path("out/results.csv"));
    let cols = columns(&header);
    assert_eq!(csv_rows.len() as u64, ROWS);
    let mut row = 0;
    for batch in &batches {
        let level_col = batch
            .column_by_name("risk_level")
            .unwrap()
            .as_primitive::<Int8Type>();
        for r in 0..batch.num_rows() {
            let csv = &csv_rows[row];
            let level_text = if level_col.is_null(r) {
                String::new()
            } else {
                level_col.value(r).to_string()
            };
            assert_eq!(csv[cols["risk_level"]], level_text);
            assert_eq!(
                Some(csv[cols["risk_status"]].clone()),
                text(batch, "risk_status", r)
            );
            let at = &csv[cols["risk_checked_at"]];
            assert!(
                at.len() == 24 && at.ends_with('Z') && at.as_bytes()[19] == b'.',
                "{at}"
            );
            row += 1;
        }
    }

    // Running the completed run again makes no call at all and exits 0.
    let again = ws.run(&["run", "jobs/e2e.toml", "--progress", "never"]);
    assert_exit(&again, 0);
    let after = sim.stats();
    assert_eq!(after.risk_requests, stats.risk_requests);
    assert_eq!(after.token_fetches, stats.token_fetches);
}

#[test]
fn csv_marketing_wxa() {
    run_case(Case {
        parquet: false,
        account: false,
        tcb: false,
    });
}

#[test]
fn csv_account_tcb() {
    run_case(Case {
        parquet: false,
        account: true,
        tcb: true,
    });
}

#[test]
fn parquet_marketing_tcb() {
    run_case(Case {
        parquet: true,
        account: false,
        tcb: true,
    });
}

#[test]
fn parquet_account_wxa() {
    run_case(Case {
        parquet: true,
        account: true,
        tcb: false,
    });
}
