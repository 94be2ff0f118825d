//! `riskbatch receive` over real HTTP: signatures, safe mode encrypted by an
//! independent implementation (Python's `cryptography`), refusals that store
//! nothing, replays stored once, and SIGTERM under load.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use crate::harness::*;

const TOKEN: &str = "push-token-for-tests";
const AES_KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
const APPID: &str = "wxtest";

struct Receiver {
    child: Child,
    url: String,
}

impl Receiver {
    fn start(ws: &Workspace) -> Receiver {
        ws.write(
            "jobs/r.toml",
            "name = \"r\"\n[input]\npath = \"../data/p.csv\"\n[push]\ntoken_env = \"PUSH_TOKEN\"\naes_key_env = \"PUSH_AES_KEY\"\n",
        );
        let mut child = ws
            .command(&["receive", "jobs/r.toml", "--listen", "127.0.0.1:0"])
            .env("PUSH_TOKEN", TOKEN)
            .env("PUSH_AES_KEY", AES_KEY)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .expect(&line)
            .to_string();
        Receiver { child, url }
    }

    fn stop(mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now() -> String {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs())
    .to_string()
}

/// sha1 of the sorted parts, as Python's hashlib computes it.
fn python_sha1(python: &std::path::Path, parts: &[&str]) -> String {
    let output = std::process::Command::new(python)
        .args(["-c", "import hashlib,sys; print(hashlib.sha1(''.join(sorted(sys.argv[1:])).encode()).hexdigest())"])
        .args(parts)
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// WeChat's safe-mode envelope of `message`, made with Python's `cryptography`.
fn python_encrypt(python: &std::path::Path, message: &str, appid: &str) -> String {
    let script = r#"
import base64, os, struct, sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
key = base64.b64decode(sys.argv[1] + "=")
msg, appid = sys.argv[2].encode(), sys.argv[3].encode()
plain = os.urandom(16) + struct.pack(">I", len(msg)) + msg + appid
pad = 32 - len(plain) % 32
plain += bytes([pad]) * pad
enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
print(base64.b64encode(enc.update(plain) + enc.finalize()).decode())
"#;
    let output = std::process::Command::new(python)
        .args(["-c", script, AES_KEY, message, appid])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", show(&output));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn verdict_json(global_no: &str, openid: &str) -> String {
    format!(
        r#"{{"ToUserName":"gh_x","FromUserName":"o","CreateTime":{},"MsgType":"event","Event":"risk_feedback","querykey":"{openid}","global_no":"{global_no}","risklevel":1,"riskmsg":"punished","risktags":""}}"#,
        now()
    )
}

fn stored(ws: &Workspace) -> Vec<(String, String, i64)> {
    let db = rusqlite::Connection::open(ws.path("jobs/.riskbatch/r/checkpoint.sqlite")).unwrap();
    let mut stmt = db
        .prepare("SELECT global_no, querykey, risklevel FROM verdicts ORDER BY global_no")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn plain_post(rx: &Receiver, body: &str) -> (u16, String) {
    let (ts, nonce) = (now(), "8121");
    let sig = riskbatch::receive::crypto::signature(&[TOKEN, &ts, nonce]);
    http_exchange(
        "POST",
        &format!(
            "{}/push?signature={sig}&timestamp={ts}&nonce={nonce}",
            rx.url
        ),
        Some(body),
    )
}

#[test]
fn verification_plain_json_and_xml_are_answered_and_stored_once() {
    let Some(python) = python() else { return };
    let ws = Workspace::new();
    let rx = Receiver::start(&ws);
    let (ts, nonce) = (now(), "1514711492");
    let sig = python_sha1(&python, &[TOKEN, &ts, nonce]);
    let url = format!(
        "{}/?signature={sig}&timestamp={ts}&nonce={nonce}&echostr=hello123",
        rx.url
    );
    assert_eq!(
        http_exchange("GET", &url, None),
        (200, "hello123".to_string())
    );
    let wrong = url.replace(&sig, &"0".repeat(40));
    assert_eq!(http_exchange("GET", &wrong, None).0, 403);

    assert_eq!(
        plain_post(&rx, &verdict_json("1001", "oA")),
        (200, "success".into())
    );
    let xml = format!(
        "<xml><ToUserName><![CDATA[gh_x]]></ToUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <querykey><![CDATA[oB]]></querykey><global_no>1002</global_no><risklevel>2</risklevel>\
         <riskmsg><![CDATA[punished]]></riskmsg><risktags><![CDATA[]]></risktags></xml>",
        now()
    );
    assert_eq!(plain_post(&rx, &xml), (200, "success".into()));
    // WeChat retries a push it got no answer to: the same verdict, stored once.
    assert_eq!(plain_post(&rx, &verdict_json("1001", "oA")).1, "success");
    // A message that is not a verdict is answered and ignored.
    assert_eq!(
        plain_post(&rx, r#"{"MsgType":"text","Content":"hi"}"#).1,
        "success"
    );
    assert_eq!(
        stored(&ws),
        vec![
            ("1001".into(), "oA".into(), 1),
            ("1002".into(), "oB".into(), 2)
        ]
    );
    assert!(rx.stop().success());
}

#[test]
fn safe_mode_messages_encrypted_elsewhere_are_decrypted_and_bad_ones_refused_with_nothing_stored() {
    let Some(python) = python() else { return };
    let ws = Workspace::new();
    let rx = Receiver::start(&ws);
    let post = |encrypted: &str, sig: Option<&str>, ts: &str| {
        let nonce = "461056294";
        let sig = sig.map_or_else(
            || python_sha1(&python, &[TOKEN, ts, nonce, encrypted]),
            str::to_string,
        );
        let body = format!(r#"{{"ToUserName":"gh_x","Encrypt":"{encrypted}"}}"#);
        http_exchange(
            "POST",
            &format!(
                "{}/wechat/push?encrypt_type=aes&msg_signature={sig}&timestamp={ts}&nonce={nonce}",
                rx.url
            ),
            Some(&body),
        )
    };
    let sealed = python_encrypt(&python, &verdict_json("2001", "oSafe"), APPID);
    assert_eq!(post(&sealed, None, &now()), (200, "success".into()));

    let refusals = [
        (
            "wrong signature",
            post(&sealed, Some(&"a".repeat(40)), &now()).0,
            403,
        ),
        (
            "another appid",
            post(
                &python_encrypt(&python, &verdict_json("2002", "oX"), "wxother"),
                None,
                &now(),
            )
            .0,
            403,
        ),
        ("stale timestamp", post(&sealed, None, "1411525903").0, 403),
        (
            "not a verdict's shape",
            post(&python_encrypt(&python, "{not json", APPID), None, &now()).0,
            400,
        ),
        ("not base64", post("!!!!", None, &now()).0, 400),
    ];
    for (what, status, expected) in refusals {
        assert_eq!(status, expected, "{what}");
    }
    let big = "x".repeat(70 * 1024);
    assert_eq!(
        plain_post(&rx, &format!(r#"{{"pad":"{big}"}}"#)).0,
        413,
        "oversized"
    );
    assert_eq!(plain_post(&rx, "<xml><a>1</b>").0, 400, "malformed XML");
    let (status, _) = http_exchange(
        "POST",
        &format!("{}/?timestamp={}&nonce=1", rx.url, now()),
        Some("{}"),
    );
    assert_eq!(status, 403, "no signature");
    assert_eq!(stored(&ws), vec![("2001".into(), "oSafe".into(), 1)]);
    assert!(rx.stop().success(), "no panic, a clean stop");
}

#[test]
fn sigterm_under_load_loses_no_verdict_already_answered_success() {
    let ws = Workspace::new();
    let rx = Receiver::start(&ws);
    let url = rx.url.clone();
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut senders = Vec::new();
    for worker in 0..4 {
        let (url, answered) = (url.clone(), answered.clone());
        senders.push(std::thread::spawn(move || {
            for i in 0..100_000 {
                let id = format!("{worker}-{i:06}");
                let (ts, nonce) = (now(), "1");
                let sig = riskbatch::receive::crypto::signature(&[TOKEN, &ts, nonce]);
                let target = format!("{url}/?signature={sig}&timestamp={ts}&nonce={nonce}");
                let body = verdict_json(&id, &format!("o{id}"));
                match std::panic::catch_unwind(|| http_exchange("POST", &target, Some(&body))) {
                    Ok((200, text)) if text == "success" => answered.lock().unwrap().push(id),
                    _ => return,
                }
            }
        }));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(rx.stop().success());
    for sender in senders {
        let _ = sender.join();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() > 100, "only {} answered", answered.len());
    let stored: std::collections::HashSet<String> = stored(&ws).into_iter().map(|v| v.0).collect();
    let lost: Vec<&String> = answered.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} answered `success` but not stored: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

#[test]
fn pushed_verdicts_are_merged_into_the_outputs_by_openid_and_counted() {
    let ws = Workspace::new();
    ws.write("data/p.csv", "openid\noA\noB\noC\noA\n");
    let rx = Receiver::start(&ws);
    assert_exit(&ws.run(&["run", "jobs/r.toml", "--progress", "never"]), 0);
    let (header, rows) = read_csv(&ws.path("jobs/out/r/results.csv"));
    let c = columns(&header);
    assert!(
        rows.iter().all(|r| r[c["feedback_risklevel"]].is_empty()),
        "no verdict yet"
    );
    // Two verdicts for oA (the later one counts) and one for an openid not in the list.
    for (global_no, openid) in [("1", "oA"), ("2", "oZ")] {
        assert_eq!(
            plain_post(&rx, &verdict_json(global_no, openid)).1,
            "success"
        );
    }
    let later = verdict_json("3", "oA").replace(r#""risklevel":1"#, r#""risklevel":3"#);
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(plain_post(&rx, &later).1, "success");
    assert_exit(&ws.run(&["report", "jobs/r.toml"]), 0);
    let (header, rows) = read_csv(&ws.path("jobs/out/r/results.csv"));
    let c = columns(&header);
    let by_row: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r[c["openid"]].as_str(),
                r[c["feedback_risklevel"]].as_str(),
                r[c["feedback_message"]].as_str(),
            )
        })
        .collect();
    assert_eq!(
        by_row,
        [
            ("oA", "3", "punished"),
            ("oB", "", ""),
            ("oC", "", ""),
            ("oA", "3", "punished")
        ]
    );
    assert!(rows[0][c["feedback_at"]].ends_with('Z'));
    let summary = summary(&ws.path("jobs/out/r/summary.json"));
    assert_eq!(summary["feedback"]["verdicts"], 3);
    assert_eq!(summary["feedback"]["matched_rows"], 2);
    let page = std::fs::read_to_string(ws.path("jobs/out/r/report.html")).unwrap();
    assert!(
        page.contains("<b>3</b><span>verdicts pushed by WeChat"),
        "report.html counts them"
    );
    let metrics = std::fs::read_to_string(ws.path("jobs/out/r/metrics.prom")).unwrap();
    assert!(
        metrics.contains("riskbatch_feedback_verdicts{job=\"r\"} 3"),
        "{metrics}"
    );
    let (_, batches) = read_parquet(&ws.path("jobs/out/r/results.parquet"));
    assert!(batches[0].schema().field_with_name("feedback_at").is_ok());
    assert!(rx.stop().success());
}

#[test]
fn the_simulator_pushes_in_every_mode_and_format_and_each_verdict_is_stored_once() {
    let ws = Workspace::new();
    let rx = Receiver::start(&ws);
    let mut expected = 0;
    for mode in ["plain", "compatible", "safe"] {
        for format in ["json", "xml"] {
            let output = ws
                .command(&[
                    "sim",
                    "--push-to",
                    &format!("{}/wechat/push", rx.url),
                    "--push-count",
                    "20",
                    "--push-rate",
                    "500",
                    "--push-mode",
                    mode,
                    "--push-format",
                    format,
                    "--push-appid",
                    APPID,
                    "--push-openid-prefix",
                    &format!("o{mode}{format}"),
                ])
                .env("WECHAT_PUSH_TOKEN", TOKEN)
                .env("WECHAT_PUSH_AES_KEY", AES_KEY)
                .output()
                .unwrap();
            assert_exit(&output, 0);
            let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(report["success"], 20, "{mode} {format}: {report}");
            expected += 20;
        }
    }
    assert_eq!(stored(&ws).len(), expected);
    // Safe mode sealed for another appid: every push refused, nothing stored.
    let output = ws
        .command(&[
            "sim",
            "--push-to",
            &rx.url,
            "--push-count",
            "5",
            "--push-appid",
            "wxother",
        ])
        .env("WECHAT_PUSH_TOKEN", TOKEN)
        .env("WECHAT_PUSH_AES_KEY", AES_KEY)
        .output()
        .unwrap();
    assert_exit(&output, 1);
    assert_eq!(stored(&ws).len(), expected);
    assert!(rx.stop().success());
}
