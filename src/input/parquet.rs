//! Parquet input, re-cut into chunks of exactly `chunk_size` rows by position
//! (the reader's own batches stop at row-group ends).

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use arrow_array::RecordBatch;
use arrow_array::RecordBatchReader;
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use super::{ChunkIter, InputChunk, InputCount};
use crate::exit::usage;

fn builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).with_context(|| format!("reading input {}", path.display()))?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|err| {
        usage(match not_parquet(path) {
            Some(what) => format!(
                "input {} is not a Parquet file: {what}; rename it after its format \
                 (.csv or .csv.gz) or export it again as Parquet",
                path.display()
            ),
            None => format!(
                "input {} is a damaged Parquet file ({err}); nothing was sent — export it again",
                path.display()
            ),
        })
    })
}

/// What the file is instead, when it lacks Parquet's `PAR1` marks at both ends.
fn not_parquet(path: &Path) -> Option<String> {
    let mut head = Vec::with_capacity(4096);
    std::io::Read::read_to_end(
        &mut std::io::Read::take(File::open(path).ok()?, 4096),
        &mut head,
    )
    .ok()?;
    if head.starts_with(b"PAR1") {
        return None;
    }
    let head = &head[..];
    Some(if head.starts_with(&[0x1f, 0x8b]) {
        "it is gzip-compressed (a .csv.gz?)".to_string()
    } else if !head.contains(&0) && head.iter().any(|&b| b == b',' || b == b'\n') {
        "it reads as text, like a CSV file".to_string()
    } else {
        "it does not start with the Parquet mark PAR1".to_string()
    })
}

pub fn schema(path: &Path) -> Result<SchemaRef> {
    Ok(builder(path)?.schema().clone())
}

/// The rows, from the footer: a Parquet file has no lines.
pub fn count(path: &Path) -> Result<InputCount> {
    let rows = builder(path)?.metadata().file_metadata().num_rows().max(0) as u64;
    Ok(InputCount { rows, lines: None })
}

pub fn chunks(path: &Path, chunk_size: usize) -> Result<ChunkIter> {
    let reader = builder(path)?
        .with_batch_size(chunk_size)
        .build()
        .with_context(|| format!("reading input {}", path.display()))?;
    Ok(Box::new(ParquetChunks {
        schema: reader.schema(),
        reader,
        pending: Vec::new(),
        pending_rows: 0,
        chunk_size,
        next_index: 0,
        next_row: 1,
        path: path.to_path_buf(),
        done: false,
    }))
}

struct ParquetChunks {
    reader: ParquetRecordBatchReader,
    schema: SchemaRef,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    chunk_size: usize,
    next_index: u64,
    next_row: u64,
    path: std::path::PathBuf,
    done: bool,
}

impl Iterator for ParquetChunks {
    type Item = Result<InputChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done && self.pending_rows < self.chunk_size {
            // The decoders can panic on damaged pages (a shift overflow, an
            // index out of bounds): that is damage in the file, not a bug here.
            let next =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.reader.next()))
                    .unwrap_or_else(|_| {
                        Some(Err(arrow_schema::ArrowError::ParquetError(
                            "the Parquet decoder failed on damaged data".into(),
                        )))
                    });
            match next {
                Some(Ok(batch)) => {
                    self.pending_rows += batch.num_rows();
                    self.pending.push(batch);
                }
                Some(Err(err)) => {
                    self.done = true;
                    return Some(Err(anyhow::Error::new(err).context(format!(
                        "input {} is damaged near row {} (the rows before it are kept; \
                         export the file again, or run the repaired file as a new run)",
                        self.path.display(),
                        self.next_row + self.pending_rows as u64
                    ))));
                }
                None => self.done = true,
            }
        }
        if self.pending_rows == 0 {
            return None;
        }
        let all = match arrow_select::concat::concat_batches(&self.schema, &self.pending) {
            Ok(all) => all,
            Err(err) => return Some(Err(err.into())),
        };
        let take = self.chunk_size.min(all.num_rows());
        let batch = all.slice(0, take);
        let rest = all.num_rows() - take;
        self.pending = if rest > 0 {
            vec![all.slice(take, rest)]
        } else {
            Vec::new()
        };
        self.pending_rows = rest;
        let chunk = InputChunk {
            index: self.next_index,
            first_row: self.next_row,
            batch,
            bad_rows: Vec::new(),
        };
        self.next_index += 1;
        self.next_row += take as u64;
        Some(Ok(chunk))
    }
}
