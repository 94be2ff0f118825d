//! Parquet input, re-cut into chunks of exactly `chunk_size` rows by position
//! (the reader's own batches stop at row-group ends).

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use arrow_array::RecordBatch;
use arrow_array::RecordBatchReader;
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use super::{ChunkIter, InputChunk};
use crate::exit::usage;

fn builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).with_context(|| format!("reading input {}", path.display()))?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|err| {
        usage(format!(
            "input {} is not a readable Parquet file: {err}",
            path.display()
        ))
    })
}

pub fn schema(path: &Path) -> Result<SchemaRef> {
    Ok(builder(path)?.schema().clone())
}

pub fn count_rows(path: &Path) -> Result<u64> {
    Ok(builder(path)?.metadata().file_metadata().num_rows().max(0) as u64)
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
            match self.reader.next() {
                Some(Ok(batch)) => {
                    self.pending_rows += batch.num_rows();
                    self.pending.push(batch);
                }
                Some(Err(err)) => {
                    self.done = true;
                    return Some(Err(anyhow::Error::new(err).context(format!(
                        "reading input {} near row {}",
                        self.path.display(),
                        self.next_row
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
