//! Participant lists: CSV (UTF-8, GBK/GB18030, gzip) and Parquet, read as a
//! stream of fixed-size chunks so that memory does not grow with the input.
//!
//! A chunk carries the input columns as an Arrow batch (kept for the outputs,
//! in their original types) and the rows that could not be read cleanly.

mod csv;
pub mod lines;
mod parquet;

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use sha2::{Digest, Sha256};

use crate::exit::usage;
use crate::job::{Encoding, Job};
use crate::output::RESULT_COLUMNS;
use crate::wechat::{RISK_OBJECT_FIELDS, RiskRequest};

/// The formats riskbatch reads, from the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv { gzip: bool },
    Parquet,
}

impl Format {
    pub fn of(path: &Path) -> Result<Format> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if name.ends_with(".csv") || name.ends_with(".txt") || name.ends_with(".tsv") {
            Ok(Format::Csv { gzip: false })
        } else if name.ends_with(".csv.gz") {
            Ok(Format::Csv { gzip: true })
        } else if name.ends_with(".parquet") || name.ends_with(".pq") {
            Ok(Format::Parquet)
        } else {
            Err(usage(format!(
                "input {}: unknown format; the file name must end in .csv, .csv.gz or .parquet",
                path.display()
            )))
        }
    }
}

/// A bad row inside a chunk: its index in the chunk and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    pub index: usize,
    pub reason: String,
}

/// `chunk_size` consecutive rows of the input.
#[derive(Debug, Clone)]
pub struct InputChunk {
    /// 0 for the first chunk.
    pub index: u64,
    /// `risk_source_row` of the first row in the chunk (1-based).
    pub first_row: u64,
    pub batch: RecordBatch,
    pub bad_rows: Vec<BadRow>,
}

impl InputChunk {
    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.num_rows() == 0
    }
}

pub type ChunkIter = Box<dyn Iterator<Item = Result<InputChunk>> + Send>;

/// Chunks parsed on a thread of their own, at most two ahead of their
/// reader, so that parsing runs beside what is done with the chunks.
/// Dropped, it stops the thread and waits for it.
pub struct ReadAhead {
    chunks: Option<std::sync::mpsc::Receiver<Result<InputChunk>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ReadAhead {
    /// Reads `chunks` on a thread, leaving out those `skip` names by index.
    pub fn start(chunks: ChunkIter, skip: impl Fn(u64) -> bool + Send + 'static) -> Result<Self> {
        let (sender, received) = std::sync::mpsc::sync_channel(2);
        let thread = std::thread::Builder::new()
            .name("riskbatch-reader".into())
            .spawn(move || {
                for chunk in chunks {
                    if matches!(&chunk, Ok(c) if skip(c.index)) {
                        continue;
                    }
                    if sender.send(chunk).is_err() {
                        return;
                    }
                }
            })
            .context("starting the input reader")?;
        Ok(ReadAhead {
            chunks: Some(received),
            thread: Some(thread),
        })
    }
}

impl Iterator for ReadAhead {
    type Item = Result<InputChunk>;

    fn next(&mut self) -> Option<Result<InputChunk>> {
        self.chunks.as_ref()?.recv().ok()
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Closing the channel first makes the thread's next send fail.
        self.chunks = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How much an input holds, read once through before a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputCount {
    /// Data rows (the header not counted).
    pub rows: u64,
    /// Physical lines, the header included; none for Parquet.
    pub lines: Option<u64>,
}

/// An input file, checked to have the columns the job maps.
#[derive(Debug, Clone)]
pub struct InputFile {
    pub path: PathBuf,
    pub format: Format,
    pub schema: SchemaRef,
    encoding: Encoding,
    /// Column index for each API field, in [`RequestColumns`] order.
    columns: RequestColumns,
}

/// Where each part of a request is in the batch.
#[derive(Debug, Clone, Default)]
struct RequestColumns {
    openid: usize,
    fields: [Option<usize>; 6],
    user_access_token: Option<usize>,
    email: Option<usize>,
    /// Scene "rank": a row without a client_ip is invalid.
    needs_client_ip: bool,
}

impl RequestColumns {
    /// Every column whose values are sent to WeChat.
    fn api_columns(&self) -> Vec<usize> {
        std::iter::once(self.openid)
            .chain(self.fields.iter().flatten().copied())
            .chain(self.user_access_token)
            .chain(self.email)
            .collect()
    }
}

impl InputFile {
    /// Opens the input and checks its header against the job: every mapped and
    /// masked column must exist, and none may clash with an output column.
    pub fn open(job: &Job, path: &Path) -> Result<InputFile> {
        let format = Format::of(path)?;
        if !path.is_file() {
            return Err(usage(format!(
                "input {} does not exist or is not a file (set [input] path in {} or pass --input)",
                path.display(),
                job.file.display()
            )));
        }
        let (schema, encoding) = match format {
            Format::Csv { gzip } => csv::schema(path, gzip, job.input.encoding)?,
            Format::Parquet => (parquet::schema(path)?, job.input.encoding),
        };
        let index_of = |field: &str, column: &str| -> Result<usize> {
            schema.index_of(column).map_err(|_| {
                usage(format!(
                    "input {}: no column \"{column}\" (mapped to {field} in [input.columns] of {}); the columns are: {}",
                    path.display(),
                    job.file.display(),
                    schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
                ))
            })
        };
        let mut columns = RequestColumns {
            openid: index_of("openid", job.column("openid").unwrap_or("openid"))?,
            ..RequestColumns::default()
        };
        for (slot, field) in columns.fields.iter_mut().zip(RISK_OBJECT_FIELDS) {
            if let Some(column) = job.column(field) {
                *slot = Some(index_of(field, column)?);
            }
        }
        if let Some(column) = job.column("user_access_token") {
            columns.user_access_token = Some(index_of("user_access_token", column)?);
        }
        if let Some(column) = job.column("email") {
            columns.email = Some(index_of("email", column)?);
        }
        columns.needs_client_ip = matches!(job.scene, crate::wechat::Scene::Rank(_));
        for column in &job.output.mask {
            index_of("output.mask", column)?;
        }
        for field in schema.fields() {
            if RESULT_COLUMNS.contains(&field.name().as_str()) {
                return Err(usage(format!(
                    "input {}: it already has a column \"{}\", which riskbatch adds to its outputs \
                     (is this a riskbatch output file?); rename or drop that column",
                    path.display(),
                    field.name()
                )));
            }
        }
        Ok(InputFile {
            path: path.to_path_buf(),
            format,
            schema,
            encoding,
            columns,
        })
    }

    /// The input's chunks from the start, each of exactly `chunk_size` rows but the last.
    pub fn chunks(&self, chunk_size: usize) -> Result<ChunkIter> {
        match self.format {
            Format::Csv { gzip } => csv::chunks(
                &self.path,
                gzip,
                self.encoding,
                self.schema.clone(),
                self.columns.api_columns(),
                chunk_size,
            ),
            Format::Parquet => parquet::chunks(&self.path, chunk_size),
        }
    }

    /// [`InputFile::chunks`] parsed ahead on a thread, without the chunks
    /// `skip` names.
    pub fn chunks_ahead(
        &self,
        chunk_size: usize,
        skip: impl Fn(u64) -> bool + Send + 'static,
    ) -> Result<ReadAhead> {
        ReadAhead::start(self.chunks(chunk_size)?, skip)
    }

    /// The rows and lines of the whole input; an error (exit 2) when the file
    /// cannot be used as a whole: cut short, damaged, or a quote never closed.
    pub fn count(&self) -> Result<InputCount> {
        match self.format {
            Format::Csv { gzip } => csv::count(&self.path, gzip),
            Format::Parquet => parquet::count(&self.path),
        }
    }

    /// The request of every row in the chunk, or why the row cannot be sent.
    pub fn requests(&self, chunk: &InputChunk) -> Vec<Result<RiskRequest, String>> {
        let text = |index: usize| -> ArrayRef {
            let column = chunk.batch.column(index);
            match column.data_type() {
                DataType::Utf8 => column.clone(),
                _ => arrow_cast::cast(column, &DataType::Utf8)
                    .unwrap_or_else(|_| Arc::new(arrow_array::StringArray::new_null(column.len()))),
            }
        };
        let openids = text(self.columns.openid);
        let fields: Vec<Option<ArrayRef>> =
            self.columns.fields.iter().map(|c| c.map(text)).collect();
        let tokens = self.columns.user_access_token.map(text);
        let emails = self.columns.email.map(text);
        let client_ip = RISK_OBJECT_FIELDS
            .iter()
            .position(|f| *f == "clientip")
            .unwrap_or_default();
        let value = |array: &ArrayRef, row: usize| -> Option<String> {
            let strings = array.as_string::<i32>();
            if strings.is_null(row) {
                return None;
            }
            let v = strings.value(row).trim();
            (!v.is_empty()).then(|| v.to_string())
        };
        let mut bad = chunk.bad_rows.iter().peekable();
        (0..chunk.len())
            .map(|row| {
                if let Some(b) = bad.next_if(|b| b.index == row) {
                    return Err(b.reason.clone());
                }
                let openid =
                    value(&openids, row).ok_or_else(|| "the openid is empty".to_string())?;
                let mut request = RiskRequest {
                    openid,
                    ..RiskRequest::default()
                };
                for (slot, array) in request.fields.iter_mut().zip(&fields) {
                    *slot = array.as_ref().and_then(|a| value(a, row));
                }
                request.email = emails.as_ref().and_then(|e| value(e, row));
                if self.columns.needs_client_ip && request.fields[client_ip].is_none() {
                    return Err("the client_ip is empty (scene \"rank\" needs one)".into());
                }
                if let Some(tokens) = &tokens {
                    request.user_access_token = value(tokens, row);
                    if request.user_access_token.is_none() {
                        return Err(
                            "the user_access_token is empty (source = \"app\" needs one)".into(),
                        );
                    }
                }
                Ok(request)
            })
            .collect()
    }
}

/// A fingerprint of the input's bytes: a new export gets a new run, an
/// unchanged file resumes its run.
pub fn fingerprint(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("reading input {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .with_context(|| format!("reading input {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    let digest = hasher.finalize();
    Ok(digest[..10].iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads an allow/deny list: one openid per line; blank lines and `#` comments ignored.
pub fn read_list(path: &Path, key: &str, job: &Job) -> Result<HashSet<String>> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        usage(format!(
            "{}: `{key}`: cannot read {}: {err}",
            job.file.display(),
            path.display()
        ))
    })?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}
