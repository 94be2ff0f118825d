//! `results.csv`: UTF-8 whatever the input encoding, nulls as empty cells,
//! timestamps in ISO 8601 UTC with milliseconds.

use std::fs::File;
use std::io::BufWriter;

use anyhow::Result;
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use arrow_array::{Array, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Schema};

use crate::clock::iso_ms;

pub struct CsvResults {
    writer: csv::Writer<BufWriter<File>>,
}

impl CsvResults {
    pub fn new(file: File, schema: &Schema) -> Result<CsvResults> {
        let mut writer =
            csv::WriterBuilder::new().from_writer(BufWriter::with_capacity(1 << 18, file));
        writer.write_record(schema.fields().iter().map(|f| f.name().as_str()))?;
        Ok(CsvResults { writer })
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
        let mut line = String::new();
        for row in 0..batch.num_rows() {
            for cell in &cells {
                match cell {
                    Cell::Text(array) if array.is_null(row) => self.writer.write_field("")?,
                    Cell::Text(array) => self.writer.write_field(array.value(row))?,
                    Cell::Millis(array) if array.is_null(row) => self.writer.write_field("")?,
                    Cell::Millis(array) => self.writer.write_field(iso_ms(array.value(row)))?,
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
