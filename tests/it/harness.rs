//! A small harness: a workspace folder with job files and inputs, the real
//! binary, and a `riskbatch sim` child process on a random loopback port.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use riskbatch::sim::SimStats;

pub const BIN: &str = env!("CARGO_BIN_EXE_riskbatch");

/// `riskbatch sim` running as a child process; killed when dropped.
pub struct Sim {
    child: Child,
    pub url: String,
}

impl Sim {
    #[track_caller]
    pub fn start(args: &[&str]) -> Sim {
        let mut child = Command::new(BIN)
            .arg("sim")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting riskbatch sim");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("unexpected first line from sim: {line:?}"))
            .to_string();
        Sim { child, url }
    }

    pub fn stats(&self) -> SimStats {
        let body = http("GET", &format!("{}/_sim/stats?openids=1", self.url), None);
        serde_json::from_str(&body).expect("stats JSON")
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 request to a loopback URL; returns the body.
pub fn http(method: &str, url: &str, body: Option<&str>) -> String {
    http_exchange(method, url, body).1
}

/// A minimal HTTP/1.1 request to a loopback URL; returns the status and the body.
pub fn http_exchange(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap();
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or(("", ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// A temporary folder holding jobs, inputs, state and outputs.
pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        Workspace {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Synthetic participants, written in-process.
    pub fn participants(&self, rel: &str, rows: u64, seed: u64) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        riskbatch::generator::generate(rows, &path, seed).unwrap();
        path
    }

    /// Runs the binary in the workspace with WeChat credentials for the simulator.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("RISKBATCH_STATE_DIR")
            // The user's token cache, inside the workspace but outside its
            // job, state and output folders.
            .env(
                "RISKBATCH_TOKEN_DIR",
                self.dir.path().join("user-cache/tokens"),
            )
            .env_remove("XDG_CACHE_HOME")
            .env("HOME", self.dir.path().join("home"))
            .env("WECHAT_APPID", "wxtest")
            .env("WECHAT_SECRET", "test-secret")
            .env("RISKBATCH_LOG", "info");
        command
    }
}

/// Exit code, stdout and stderr of a finished command, for assertion messages.
pub fn show(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[track_caller]
pub fn assert_exit(output: &Output, code: i32) {
    assert_eq!(output.status.code(), Some(code), "{}", show(output));
}

pub fn read_parquet(path: &Path) -> (arrow_schema::SchemaRef, Vec<RecordBatch>) {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let schema = arrow_array::RecordBatchReader::schema(&reader);
    (schema, reader.map(Result::unwrap).collect())
}

/// A CSV file as a header and rows of cells.
pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .unwrap();
    let header = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    let rows = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect();
    (header, rows)
}

pub fn summary(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Column name → position.
pub fn columns(header: &[String]) -> HashMap<String, usize> {
    header
        .iter()
        .enumerate()
        .map(|(i, h)| (h.clone(), i))
        .collect()
}

/// A program the test drives from outside (Chromium, the Python venv that
/// `.ci/run` makes under target/). Missing: the test is skipped with a line
/// saying so, except when `RISKBATCH_REQUIRE_TOOLS` is set, as `.ci/run`
/// does, where it fails.
pub fn external_tool(candidates: &[PathBuf], what: &str) -> Option<PathBuf> {
    if let Some(found) = candidates.iter().find(|p| p.exists()) {
        return Some(found.clone());
    }
    if std::env::var_os("RISKBATCH_REQUIRE_TOOLS").is_some() {
        panic!("{what} is required (RISKBATCH_REQUIRE_TOOLS) but none of {candidates:?} exists");
    }
    eprintln!("skipped: {what} not found at {candidates:?}; .ci/run installs it");
    None
}

/// The Python of the venv `.ci/run` makes (prometheus_client, pyarrow, duckdb, cryptography).
pub fn python() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python");
    external_tool(&[venv], "the test venv's Python")
}

/// Every file under `root` (recursively) whose bytes contain `needle`.
pub fn files_containing(root: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if std::fs::read(&path)
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                found.push(path);
            }
        }
    }
    found
}
