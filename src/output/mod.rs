//! The result files of SPEC §4: every input row, in input order, with its input
//! columns (masked ones hashed) followed by the `risk_*` columns.
//!
//! They are written chunk by chunk from the input and the checkpoint store, so
//! the same code serves a completed run and `riskbatch report` at any moment,
//! and memory does not grow with the input. Files appear under their final
//! names only when complete (temporary name, fsync, rename).

mod atomic;
mod csv;
pub mod owner;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::builder::{
    Int8Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use sha2::{Digest, Sha256};

/// Rows per Parquet row group. The writer keeps each group's metadata
/// (about 12 KB) until the file closes, so the number of groups is what
/// grows with the list: at 32k rows, 3.7 MB on 10,000,000 rows.
const ROW_GROUP_ROWS: usize = 64 * 1024;

pub use atomic::{AtomicFile, sync_folder, write_atomically};

use crate::outcome::{RowOutcome, label};
use crate::worker::Worker;

/// The columns riskbatch appends, in order.
pub const RESULT_COLUMNS: [&str; 15] = [
    "risk_level",
    "risk_label",
    "risk_status",
    "risk_source",
    "risk_errcode",
    "risk_code",
    "risk_message",
    "risk_request_id",
    "risk_checked_at",
    "risk_attempts",
    "risk_source_row",
    "feedback_risklevel",
    "feedback_message",
    "feedback_tags",
    "feedback_at",
];

/// The latest verdict pushed for a row's openid (`riskbatch receive`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    pub risklevel: i64,
    pub message: Option<String>,
    pub tags: Option<String>,
    /// When it was received, Unix milliseconds.
    pub at: i64,
}

fn result_fields() -> Vec<Field> {
    vec![
        Field::new("risk_level", DataType::Int8, true),
        Field::new("risk_label", DataType::Utf8, true),
        Field::new("risk_status", DataType::Utf8, false),
        Field::new("risk_source", DataType::Utf8, true),
        Field::new("risk_errcode", DataType::Int32, true),
        Field::new("risk_code", DataType::Int32, true),
        Field::new("risk_message", DataType::Utf8, true),
        Field::new("risk_request_id", DataType::Utf8, true),
        // Null only for rows still pending in a partial report.
        Field::new(
            "risk_checked_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("risk_attempts", DataType::Int32, false),
        Field::new("risk_source_row", DataType::Int64, false),
        Field::new("feedback_risklevel", DataType::Int8, true),
        Field::new("feedback_message", DataType::Utf8, true),
        Field::new("feedback_tags", DataType::Utf8, true),
        Field::new(
            "feedback_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
    ]
}

/// The `feedback_*` columns: null where no verdict came.
fn feedback_columns(feedback: &[Option<&Feedback>]) -> Vec<ArrayRef> {
    let n = feedback.len();
    let mut level = Int8Builder::with_capacity(n);
    let mut message = StringBuilder::with_capacity(n, 0);
    let mut tags = StringBuilder::with_capacity(n, 0);
    let mut at = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    for f in feedback {
        level.append_option(f.map(|f| i8::try_from(f.risklevel).unwrap_or(i8::MAX)));
        message.append_option(f.and_then(|f| f.message.as_deref()));
        tags.append_option(f.and_then(|f| f.tags.as_deref()));
        at.append_option(f.map(|f| f.at));
    }
    vec![
        Arc::new(level.finish()),
        Arc::new(message.finish()),
        Arc::new(tags.finish()),
        Arc::new(at.finish()),
    ]
}

/// The `risk_*` columns for a chunk's outcomes.
fn result_columns(outcomes: &[RowOutcome]) -> Vec<ArrayRef> {
    let n = outcomes.len();
    let mut level = Int8Builder::with_capacity(n);
    let mut label_b = StringBuilder::with_capacity(n, n * 6);
    let mut status = StringBuilder::with_capacity(n, n * 4);
    let mut source = StringBuilder::with_capacity(n, n * 4);
    let mut errcode = Int32Builder::with_capacity(n);
    let mut code = Int32Builder::with_capacity(n);
    let mut message = StringBuilder::with_capacity(n, n * 8);
    let mut request_id = StringBuilder::with_capacity(n, n * 32);
    let mut checked_at = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut attempts = Int32Builder::with_capacity(n);
    let mut source_row = Int64Builder::with_capacity(n);
    for o in outcomes {
        let a = &o.answer;
        level.append_option(a.level.map(|l| l as i8));
        label_b.append_option(a.level.map(label));
        status.append_value(a.status.as_str());
        source.append_option(o.source.map(|s| s.as_str()));
        errcode.append_option(a.errcode);
        code.append_option(a.code);
        message.append_option(a.message.as_deref());
        request_id.append_option(a.request_id.as_deref());
        checked_at.append_option((a.checked_at > 0).then_some(a.checked_at));
        attempts.append_value(i32::try_from(o.attempts).unwrap_or(i32::MAX));
        source_row.append_value(i64::try_from(o.row).unwrap_or(i64::MAX));
    }
    vec![
        Arc::new(level.finish()),
        Arc::new(label_b.finish()),
        Arc::new(status.finish()),
        Arc::new(source.finish()),
        Arc::new(errcode.finish()),
        Arc::new(code.finish()),
        Arc::new(message.finish()),
        Arc::new(request_id.finish()),
        Arc::new(checked_at.finish()),
        Arc::new(attempts.finish()),
        Arc::new(source_row.finish()),
    ]
}

/// Replaces values by a salted SHA-256 (hex), keeping nulls.
pub struct Masker {
    salt: Vec<u8>,
}

impl Masker {
    pub fn new(salt: Vec<u8>) -> Masker {
        Masker { salt }
    }

    pub fn mask(&self, value: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(&self.salt);
        hasher.update(value.as_bytes());
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn mask_array(&self, array: &ArrayRef) -> Result<ArrayRef> {
        let text = match array.data_type() {
            DataType::Utf8 => array.clone(),
            _ => arrow_cast::cast(array, &DataType::Utf8)?,
        };
        let text = text.as_string::<i32>();
        let masked: StringArray = text.iter().map(|v| v.map(|v| self.mask(v))).collect();
        Ok(Arc::new(masked))
    }
}

/// Where the result files go and which input columns are masked.
pub struct OutputPlan<'a> {
    pub dir: &'a Path,
    pub parquet: bool,
    pub csv: bool,
    /// Input column indexes to mask.
    pub mask: Vec<usize>,
    pub masker: Option<&'a Masker>,
    /// Input columns of near-unique values (the participant's identifiers),
    /// written without a dictionary.
    pub unique_columns: Vec<String>,
    pub csv_encoding: crate::job::CsvEncoding,
    /// Written into the Parquet metadata, with the run the file comes from.
    pub partial: bool,
    pub owner: &'a OutputOwner,
}

/// The run an output folder's files come from (SPEC §4).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutputOwner {
    pub job: String,
    pub run_id: String,
    pub fingerprint: String,
}

/// Writes the result files chunk by chunk.
pub struct ResultWriter<'a> {
    plan: OutputPlan<'a>,
    schema: SchemaRef,
    parquet: Option<(ParquetThread, AtomicFile)>,
    csv: Option<(csv::CsvResults, AtomicFile)>,
    csv_failed: Option<anyhow::Error>,
}

/// Encodes and compresses the Parquet file on a thread of its own, beside
/// the CSV file and the reading of input and store: that was two fifths of
/// the output pass, which otherwise runs on one core.
type ParquetThread = Worker<RecordBatch, ()>;

fn start_parquet(mut writer: ArrowWriter<File>) -> Result<ParquetThread> {
    // Two batches in the queue keep both threads busy without buffering the input.
    ParquetThread::start("parquet", 2, move |batches| {
        for batch in batches {
            let flushed = writer.flushed_row_groups().len();
            writer.write(&batch)?;
            if writer.flushed_row_groups().len() > flushed {
                // A row group was just written out: its pages are free.
                crate::heap::release_free_pages();
            }
        }
        writer.close()?;
        Ok(())
    })
}

impl<'a> ResultWriter<'a> {
    pub fn create(plan: OutputPlan<'a>, input_schema: &Schema) -> Result<ResultWriter<'a>> {
        std::fs::create_dir_all(plan.dir)
            .with_context(|| format!("creating the output folder {}", plan.dir.display()))?;
        let mut fields: Vec<Field> = input_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if plan.mask.contains(&i) {
                    Field::new(f.name(), DataType::Utf8, true)
                } else {
                    f.as_ref().clone()
                }
            })
            .collect();
        fields.extend(result_fields());
        let schema = Arc::new(Schema::new(fields));
        let parquet = if plan.parquet {
            let target = AtomicFile::create(&plan.dir.join("results.parquet"))?;
            let mut props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
                .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                // Statistics per row group, not per page: the page index is
                // kept in memory until the file is closed, so the writer's
                // memory grew with the input (writing 10,000,000 rows peaked
                // 17 MB higher with it).
                .set_statistics_enabled(EnabledStatistics::Chunk)
                // The offset index (where each page starts) is also kept until
                // the file closes, for readers that seek rows by number; BI
                // tools and DuckDB read whole row groups.
                .set_offset_index_disabled(true)
                .set_key_value_metadata(Some(vec![
                    KeyValue::new("riskbatch.job".into(), plan.owner.job.clone()),
                    KeyValue::new("riskbatch.run_id".into(), plan.owner.run_id.clone()),
                    KeyValue::new(
                        "riskbatch.fingerprint".into(),
                        plan.owner.fingerprint.clone(),
                    ),
                    KeyValue::new("riskbatch.partial".into(), plan.partial.to_string()),
                ]));
            // A dictionary of openids or device ids only grows until the
            // writer gives up on it: a third of the output pass, for a
            // larger file. Writing 200,000 generated rows measured 0.99–1.20 s
            // and 14.8 MB without, 1.20–1.50 s and 15.7 MB with.
            for column in &plan.unique_columns {
                props = props.set_column_dictionary_enabled(column.as_str().into(), false);
            }
            let props = props.build();
            let writer = ArrowWriter::try_new(target.file()?, schema.clone(), Some(props))?;
            Some((start_parquet(writer)?, target))
        } else {
            None
        };
        let csv = if plan.csv {
            let target = AtomicFile::create(&plan.dir.join("results.csv"))?;
            let writer = csv::CsvResults::new(target.file()?, &schema, plan.csv_encoding)?;
            Some((writer, target))
        } else {
            None
        };
        Ok(ResultWriter {
            plan,
            schema,
            parquet,
            csv,
            csv_failed: None,
        })
    }

    /// Appends a chunk: its input batch and one outcome per row, in order.
    /// Returns the chunk as written, masked columns hashed.
    pub fn write(
        &mut self,
        input: &RecordBatch,
        outcomes: &[RowOutcome],
        feedback: &[Option<&Feedback>],
    ) -> Result<RecordBatch> {
        debug_assert_eq!(input.num_rows(), outcomes.len());
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (i, column) in input.columns().iter().enumerate() {
            match (self.plan.mask.contains(&i), self.plan.masker) {
                (true, Some(masker)) => columns.push(masker.mask_array(column)?),
                _ => columns.push(column.clone()),
            }
        }
        columns.extend(result_columns(outcomes));
        columns.extend(feedback_columns(feedback));
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        if let Some((writer, _)) = &mut self.parquet {
            writer.give(batch.clone());
        }
        if let Some((writer, _)) = &mut self.csv
            && let Err(err) = writer.write(&batch)
        {
            // The other files are still written; `finish` reports this.
            self.csv = None;
            let path = self.plan.dir.join("results.csv");
            self.csv_failed = Some(err.context(format!("writing {}", path.display())));
        }
        Ok(batch)
    }

    /// Completes the files and moves them to their final names.
    pub fn finish(self) -> Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        if let Some((writer, target)) = self.parquet {
            let path = self.plan.dir.join("results.parquet");
            writer.finish().with_context(|| writing(&path))?;
            written.push(target.commit().with_context(|| writing(&path))?);
        }
        if let Some((writer, target)) = self.csv {
            let path = self.plan.dir.join("results.csv");
            writer.finish().with_context(|| writing(&path))?;
            written.push(target.commit().with_context(|| writing(&path))?);
        }
        match self.csv_failed {
            Some(err) => {
                // An earlier run's file must not stand in for this run's.
                let _ = std::fs::remove_file(self.plan.dir.join("results.csv"));
                Err(err.context(format!(
                    "{} written, results.csv not",
                    written
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
            None => Ok(written),
        }
    }
}

/// The context of a failed result-file write, with what to do.
fn writing(path: &Path) -> String {
    format!(
        "writing {} (is the disk full? every outcome is kept in the checkpoint: make room, \
         then run again or `riskbatch report` to write the files)",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_is_salted_and_stable() {
        let a = Masker::new(b"salt-a".to_vec());
        let b = Masker::new(b"salt-b".to_vec());
        assert_eq!(a.mask("13800000000"), a.mask("13800000000"));
        assert_ne!(a.mask("13800000000"), b.mask("13800000000"));
        assert_eq!(a.mask("x").len(), 64);
    }

    #[test]
    fn identifier_columns_are_written_without_a_dictionary() {
        use crate::outcome::{Answer, RowStatus};
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let dir = tempfile::tempdir().unwrap();
        let schema = Schema::new(vec![
            Field::new("openid", DataType::Utf8, true),
            Field::new("campaign", DataType::Utf8, true),
        ]);
        let rows = 1000;
        let batch = RecordBatch::try_new(
            Arc::new(schema.clone()),
            vec![
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("o{i}")),
                )),
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("c{}", i % 3)),
                )),
            ],
        )
        .unwrap();
        let outcomes: Vec<RowOutcome> = (0..rows as u64)
            .map(|row| RowOutcome {
                row: row + 1,
                answer: Answer::local(RowStatus::Ok, Some(1), None, 0),
                source: None,
                attempts: 1,
            })
            .collect();
        let owner = OutputOwner {
            job: "j".into(),
            run_id: "r".into(),
            fingerprint: "f".into(),
        };
        let mut writer = ResultWriter::create(
            OutputPlan {
                dir: dir.path(),
                parquet: true,
                csv: false,
                mask: Vec::new(),
                masker: None,
                unique_columns: vec!["openid".into()],
                csv_encoding: crate::job::CsvEncoding::Utf8,
                partial: false,
                owner: &owner,
            },
            &schema,
        )
        .unwrap();
        writer
            .write(&batch, &outcomes, &vec![None; outcomes.len()])
            .unwrap();
        writer.finish().unwrap();

        let file = File::open(dir.path().join("results.parquet")).unwrap();
        let reader = SerializedFileReader::new(file).unwrap();
        let group = reader.metadata().row_group(0);
        let dictionary = |name: &str| {
            group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == name)
                .unwrap()
                .dictionary_page_offset()
                .is_some()
        };
        assert!(!dictionary("openid"));
        assert!(dictionary("campaign"));
        assert!(dictionary("risk_status"));
    }

    #[test]
    fn result_fields_match_the_column_list() {
        let names: Vec<String> = result_fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, RESULT_COLUMNS);
    }
}
