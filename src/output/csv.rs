//! `results.csv`: in `[output] csv_encoding` (UTF-8 by default, whatever the
//! input encoding), nulls as empty cells, timestamps in ISO 8601 UTC with
//! milliseconds.
//!
//! GBK and GB18030 cells are encoded before the csv writer sees them: their
//! trailing bytes are never below 0x40, so no encoded byte is a comma, quote
//! or line break and the writer's quoting stays right.

use std::fs::File;
use std::io::BufWriter;

use std::io::Write as _;

use anyhow::{Result, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use arrow_array::{Array, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Schema};

use crate::clock::push_iso_ms;
use crate::job::CsvEncoding;

pub struct CsvResults {
    writer: csv::Writer<BufWriter<File>>,
    /// None for UTF-8.
    encoding: Option<&'static encoding_rs::Encoding>,
    names: Vec<String>,
    encoded: Vec<u8>,
}

impl CsvResults {
    pub fn new(file: File, schema: &Schema, encoding: CsvEncoding) -> Result<CsvResults> {
        let mut out = BufWriter::with_capacity(1 << 18, file);
        if encoding == CsvEncoding::Utf8Bom {
            out.write_all(b"\xEF\xBB\xBF")?;
        }
        let mut results = CsvResults {
            writer: csv::WriterBuilder::new().from_writer(out),
            encoding: match encoding {
                CsvEncoding::Utf8 | CsvEncoding::Utf8Bom => None,
                CsvEncoding::Gbk => Some(encoding_rs::GBK),
                CsvEncoding::Gb18030 => Some(encoding_rs::GB18030),
            },
            names: schema.fields().iter().map(|f| f.name().clone()).collect(),
            encoded: Vec::new(),
        };
        for i in 0..results.names.len() {
            let name = results.names[i].clone();
            results.text(&name, "the header", i)?;
        }
        results.writer.write_record(None::<&[u8]>)?;
        Ok(results)
    }

    /// Writes one text cell in the file's encoding; `row` names it in an error.
    fn text(&mut self, value: &str, row: &str, column: usize) -> Result<()> {
        let Some(encoding) = self.encoding.filter(|_| !value.is_ascii()) else {
            self.writer.write_field(value)?;
            return Ok(());
        };
        let (bytes, _, unmappable) = encoding.encode(value);
        if unmappable {
            let character = value
                .chars()
                .find(|c| encoding.encode(c.encode_utf8(&mut [0; 4])).2)
                .unwrap_or('?');
            bail!(
                "results.csv: {row}, column \"{}\", holds '{character}' (U+{:04X}), which {} \
                 cannot hold; set [output] csv_encoding = \"gb18030\" (all of Unicode, and what \
                 Chinese Excel opens) or \"utf-8-bom\"",
                self.names[column],
                u32::from(character),
                encoding.name()
            );
        }
        self.encoded.clear();
        self.encoded.extend_from_slice(&bytes);
        self.writer.write_field(&self.encoded)?;
        Ok(())
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let options = FormatOptions::new().with_null("");
        let mut cells: Vec<Cell<'_>> = Vec::with_capacity(batch.num_columns());
        for column in batch.columns() {
            cells.push(match column.data_type() {
                DataType::Utf8 => Cell::Text(column.as_string::<i32>()),
                DataType::Timestamp(_, _)
                    if column
                        .as_primitive_opt::<TimestampMillisecondType>()
                        .is_some() =>
                {
                    Cell::Millis(column.as_primitive::<TimestampMillisecondType>())
                }
                _ => Cell::Other(ArrayFormatter::try_new(column.as_ref(), &options)?),
            });
        }
        let source_rows = batch
            .column_by_name("risk_source_row")
            .and_then(|c| c.as_primitive_opt::<arrow_array::types::Int64Type>());
        let mut line = String::new();
        for row in 0..batch.num_rows() {
            for (column, cell) in cells.iter().enumerate() {
                match cell {
                    Cell::Text(array) if array.is_null(row) => self.writer.write_field("")?,
                    Cell::Text(array) if self.encoding.is_none() => {
                        self.writer.write_field(array.value(row))?
                    }
                    Cell::Text(array) => {
                        let at = source_rows.map_or(row as i64 + 1, |r| r.value(row));
                        self.text(array.value(row), &format!("row {at}"), column)?
                    }
                    Cell::Millis(array) if array.is_null(row) => self.writer.write_field("")?,
                    Cell::Millis(array) => {
                        line.clear();
                        push_iso_ms(&mut line, array.value(row));
                        self.writer.write_field(&line)?;
                    }
                    Cell::Other(formatter) => {
                        line.clear();
                        use std::fmt::Write;
                        write!(line, "{}", formatter.value(row))?;
                        self.writer.write_field(&line)?;
                    }
                }
            }
            self.writer.write_record(None::<&[u8]>)?;
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        self.writer.flush()?;
        Ok(())
    }
}

enum Cell<'a> {
    Text(&'a arrow_array::StringArray),
    Millis(&'a arrow_array::PrimitiveArray<TimestampMillisecondType>),
    Other(ArrayFormatter<'a>),
}
