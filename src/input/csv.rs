//! CSV input: any of UTF-8 (with or without BOM), GBK and GB18030, optionally gzipped.
//!
//! Chinese Excel exports are often GBK. `auto` looks at the first megabyte:
//! invalid UTF-8 there means GB18030 (a superset of GBK) for the whole file;
//! otherwise UTF-8, with a GB18030 fallback for a field that is not UTF-8
//! (a mostly-ASCII file whose first non-ASCII bytes come late), said in a
//! warning. Bytes that are text in neither make the row `invalid_input`:
//! no replacement character is ever sent.
//!
//! Every physical line is accounted for ([`super::lines`]): a quote that never
//! closes is an error of the whole file, and a line break inside a field that
//! goes to WeChat makes the row `invalid_input`.

use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::lines::LineScanner;
use super::{BadRow, ChunkIter, InputChunk, InputCount};
use crate::exit::usage;
use crate::job::Encoding;

const SNIFF_BYTES: usize = 1 << 20;

/// How field bytes become text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decoder {
    /// Strict UTF-8: other bytes make the row `invalid_input`.
    Utf8,
    /// UTF-8, falling back to GB18030 field by field.
    Utf8OrGb18030,
    Gb18030,
}

/// A field's text, and whether the `auto` guess had to fall back to GB18030 for it.
type Decoded = (String, bool);

impl Decoder {
    fn decode(self, bytes: &[u8]) -> Result<Decoded, ()> {
        match (self, std::str::from_utf8(bytes)) {
            (Decoder::Utf8 | Decoder::Utf8OrGb18030, Ok(text)) => Ok((text.to_string(), false)),
            (Decoder::Utf8, Err(_)) => Err(()),
            (decoder, _) => encoding_rs::GB18030
                .decode_without_bom_handling_and_without_replacement(bytes)
                .map(|text| (text.into_owned(), decoder == Decoder::Utf8OrGb18030))
                .ok_or(()),
        }
    }

    /// Why a field's bytes were refused, for the row's message.
    fn refusal(self, column: &str) -> String {
        match self {
            Decoder::Utf8 => format!(
                "column \"{column}\" is not valid UTF-8 text (set [input] encoding = \"gbk\" if the file is GBK)"
            ),
            Decoder::Utf8OrGb18030 => format!(
                "column \"{column}\" is neither UTF-8 nor GBK/GB18030 text (damaged bytes; set [input] encoding to the file's encoding)"
            ),
            Decoder::Gb18030 => format!(
                "column \"{column}\" is not valid GBK/GB18030 text (set [input] encoding = \"utf-8\" if the file is UTF-8)"
            ),
        }
    }
}

/// Opens the byte stream with any BOM removed and picks the decoder.
fn open(path: &Path, gzip: bool, encoding: Encoding) -> Result<(Box<dyn Read + Send>, Decoder)> {
    let file = File::open(path).with_context(|| format!("reading input {}", path.display()))?;
    let mut raw: Box<dyn Read + Send> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            1 << 16,
            file,
        )))
    } else {
        Box::new(file)
    };
    let mut prefix = Vec::with_capacity(SNIFF_BYTES);
    (&mut raw)
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut prefix)
        .map_err(|err| {
            usage(format!(
                "input {} cannot be read within its first MiB ({err}); nothing was sent — \
                 repair or export the file again{}",
                path.display(),
                if gzip {
                    " (a .csv.gz cut short ends like this)"
                } else {
                    ""
                }
            ))
        })?;
    let bom = prefix.starts_with(&[0xEF, 0xBB, 0xBF]);
    let decoder = match encoding {
        _ if bom => Decoder::Utf8,
        Encoding::Utf8 => Decoder::Utf8,
        Encoding::Gbk | Encoding::Gb18030 => Decoder::Gb18030,
        Encoding::Auto => match std::str::from_utf8(&prefix) {
            Ok(_) => Decoder::Utf8OrGb18030,
            // A multi-byte character cut at the sniff boundary is still UTF-8.
            Err(e) if e.error_len().is_none() => Decoder::Utf8OrGb18030,
            Err(_) => Decoder::Gb18030,
        },
    };
    if bom {
        prefix.drain(..3);
    }
    let stream = Cursor::new(prefix).chain(raw);
    Ok((Box::new(BufReader::with_capacity(1 << 18, stream)), decoder))
}

type Reader = csv::Reader<LineScanner<Box<dyn Read + Send>>>;

fn csv_reader(stream: Box<dyn Read + Send>) -> Reader {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(1 << 16)
        .from_reader(LineScanner::new(stream))
}

fn read_header(reader: &mut Reader, decoder: Decoder, path: &Path) -> Result<SchemaRef> {
    let mut record = csv::ByteRecord::new();
    let has_header = reader
        .read_byte_record(&mut record)
        .with_context(|| format!("reading the header of {}", path.display()))?;
    if !has_header {
        return Err(usage(format!(
            "input {} is empty: line 1 holds no header row",
            path.display()
        )));
    }
    let mut names: Vec<String> = Vec::with_capacity(record.len());
    for (i, bytes) in record.iter().enumerate() {
        let (name, _) = decoder.decode(bytes).map_err(|_| {
            usage(format!(
                "input {}: line 1 (the header), column {}, is not text in the file's encoding; set [input] encoding (utf-8, gbk or gb18030)",
                path.display(),
                i + 1
            ))
        })?;
        let name = name.trim().to_string();
        let name = if name.is_empty() {
            format!("column_{}", i + 1)
        } else {
            name
        };
        if names.contains(&name) {
            return Err(usage(format!(
                "input {}: line 1 (the header) names the column \"{name}\" twice; column names must be unique",
                path.display()
            )));
        }
        names.push(name);
    }
    Ok(Arc::new(Schema::new(
        names
            .into_iter()
            .map(|n| Field::new(n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    )))
}

/// The header as an all-text schema, and the encoding actually in use.
pub fn schema(path: &Path, gzip: bool, encoding: Encoding) -> Result<(SchemaRef, Encoding)> {
    let (stream, decoder) = open(path, gzip, encoding)?;
    let mut reader = csv_reader(stream);
    let schema = read_header(&mut reader, decoder, path)?;
    Ok((schema, encoding))
}

/// Counts the records after the header and the physical lines, without
/// decoding: the whole file is read once before any call, so that a file that
/// cannot be used as a whole is refused before anything is paid.
pub fn count(path: &Path, gzip: bool) -> Result<InputCount> {
    let (stream, _) = open(path, gzip, Encoding::Utf8)?;
    let mut reader = csv_reader(stream);
    let mut record = csv::ByteRecord::new();
    let mut records = 0u64;
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => records += 1,
            Ok(false) => break,
            Err(err) => {
                let line = reader.get_ref().count().lines.max(1);
                return Err(usage(format!(
                    "input {} cannot be read past data row {records} (about line {line}): {}; \
                     nothing was sent — repair or export the file again{}",
                    path.display(),
                    crate::redact::error_chain("read error", &err),
                    if gzip {
                        " (a .csv.gz cut short ends like this)"
                    } else {
                        ""
                    }
                )));
            }
        }
    }
    let counted = reader.get_ref().count();
    if let Some(line) = counted.open_quote_line {
        return Err(usage(format!(
            "input {}: line {line} opens a quoted field (\") that is never closed, so every line \
             after it would be read as part of one field; nothing was sent — fix the quote in line \
             {line} (a quote inside a field must be doubled: \"\")",
            path.display()
        )));
    }
    Ok(InputCount {
        rows: records.saturating_sub(1),
        lines: Some(counted.lines),
    })
}

/// The rows after the header, `chunk_size` at a time.
///
/// `api_columns` are the columns sent to WeChat: a line break in one of them
/// makes the row `invalid_input`.
pub fn chunks(
    path: &Path,
    gzip: bool,
    encoding: Encoding,
    schema: SchemaRef,
    api_columns: Vec<usize>,
    chunk_size: usize,
) -> Result<ChunkIter> {
    let (stream, decoder) = open(path, gzip, encoding)?;
    let mut reader = csv_reader(stream);
    read_header(&mut reader, decoder, path)?;
    Ok(Box::new(CsvChunks {
        reader,
        decoder,
        fallback_reported: false,
        schema,
        api_columns,
        chunk_size,
        next_index: 0,
        next_row: 1,
        path: path.to_path_buf(),
        record: csv::ByteRecord::new(),
        done: false,
    }))
}

struct CsvChunks {
    reader: Reader,
    decoder: Decoder,
    /// Whether the warning that `auto` guessed wrong was given.
    fallback_reported: bool,
    schema: SchemaRef,
    api_columns: Vec<usize>,
    chunk_size: usize,
    next_index: u64,
    next_row: u64,
    path: std::path::PathBuf,
    record: csv::ByteRecord,
    done: bool,
}

impl CsvChunks {
    fn read_chunk(&mut self) -> Result<Option<InputChunk>> {
        let width = self.schema.fields().len();
        let mut builders: Vec<StringBuilder> = (0..width)
            .map(|_| StringBuilder::with_capacity(self.chunk_size, self.chunk_size * 16))
            .collect();
        let mut bad_rows = Vec::new();
        let mut rows = 0;
        while rows < self.chunk_size {
            let row = self.next_row + rows as u64;
            let more = self
                .reader
                .read_byte_record(&mut self.record)
                .with_context(|| format!("reading input {} at row {row}", self.path.display()))?;
            if !more {
                self.done = true;
                break;
            }
            let mut reason = self.line_break_in_api_field();
            if self.record.len() != width {
                reason.get_or_insert_with(|| {
                    format!(
                        "the row has {} fields, the header has {width}",
                        self.record.len()
                    )
                });
            }
            for (i, builder) in builders.iter_mut().enumerate() {
                match self.record.get(i) {
                    None | Some(b"") => builder.append_null(),
                    Some(bytes) => match self.decoder.decode(bytes) {
                        Ok((text, fallback)) => {
                            if fallback {
                                self.report_fallback(row, i);
                            }
                            builder.append_value(text)
                        }
                        Err(()) => {
                            reason.get_or_insert_with(|| {
                                self.decoder.refusal(self.schema.field(i).name())
                            });
                            builder.append_null();
                        }
                    },
                }
            }
            if let Some(reason) = reason {
                bad_rows.push(BadRow {
                    index: rows,
                    reason,
                });
            }
            rows += 1;
        }
        if rows == 0 {
            return Ok(None);
        }
        let columns: Vec<ArrayRef> = builders
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        let chunk = InputChunk {
            index: self.next_index,
            first_row: self.next_row,
            batch,
            bad_rows,
        };
        self.next_index += 1;
        self.next_row += rows as u64;
        Ok(Some(chunk))
    }
}

impl CsvChunks {
    /// Why the record cannot be sent, if a field that goes to WeChat holds a
    /// line break: a quote left open earlier swallows the lines after it.
    fn line_break_in_api_field(&self) -> Option<String> {
        let column = self.api_columns.iter().copied().find(|&i| {
            self.record
                .get(i)
                .is_some_and(|f| f.contains(&b'\n') || f.contains(&b'\r'))
        })?;
        let first = self.record.position().map_or(0, csv::Position::line);
        let breaks: usize = self
            .record
            .iter()
            .map(|f| f.iter().filter(|&&b| b == b'\n').count())
            .sum();
        Some(format!(
            "column \"{}\" holds a line break: the row spans lines {first}–{} (a quoted field \
             running over lines; check the quotes in line {first}); a field sent to WeChat never does",
            self.schema.field(column).name(),
            first + breaks as u64
        ))
    }

    fn report_fallback(&mut self, row: u64, column: usize) {
        if !std::mem::replace(&mut self.fallback_reported, true) {
            tracing::warn!(
                "input {}: row {row}, column \"{}\" is not UTF-8 although the file's first MiB is; \
                 such fields are read as GBK/GB18030 — set [input] encoding = \"gbk\" or \"utf-8\" \
                 to say which the file is",
                self.path.display(),
                self.schema.field(column).name()
            );
        }
    }
}

impl Iterator for CsvChunks {
    type Item = Result<InputChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.read_chunk() {
            Ok(chunk) => chunk.map(Ok),
            Err(err) => {
                self.done = true;
                Some(Err(err))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use std::io::Write;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn read_all(path: &Path, gzip: bool, encoding: Encoding, chunk: usize) -> Vec<InputChunk> {
        let (schema, encoding) = schema(path, gzip, encoding).unwrap();
        chunks(path, gzip, encoding, schema, vec![0], chunk)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn cell(chunk: &InputChunk, column: usize, row: usize) -> Option<String> {
        let array = chunk.batch.column(column).as_string::<i32>();
        (!arrow_array::Array::is_null(array, row)).then(|| array.value(row).to_string())
    }

    #[test]
    fn reads_utf8_with_bom_in_chunks_and_numbers_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "p.csv",
            "\u{feff}openid,name\no1,张三\no2,\no3,李四\n".as_bytes(),
        );
        let chunks = read_all(&path, false, Encoding::Auto, 2);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].batch.schema().field(0).name(), "openid");
        assert_eq!((chunks[0].first_row, chunks[1].first_row), (1, 3));
        assert_eq!(cell(&chunks[0], 1, 0).as_deref(), Some("张三"));
        assert_eq!(cell(&chunks[0], 1, 1), None);
        assert_eq!(cell(&chunks[1], 1, 0).as_deref(), Some("李四"));
    }

    #[test]
    fn detects_gbk_and_decodes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, _, _) = encoding_rs::GBK.encode("openid,城市\no1,北京\n");
        let path = write(dir.path(), "g.csv", &bytes);
        let chunks = read_all(&path, false, Encoding::Auto, 10);
        assert_eq!(chunks[0].batch.schema().field(1).name(), "城市");
        assert_eq!(cell(&chunks[0], 1, 0).as_deref(), Some("北京"));
        // The same file read as strict UTF-8 marks the row instead of crashing.
        let (schema_err, _) = (schema(&path, false, Encoding::Utf8).unwrap_err(), ());
        assert!(format!("{schema_err:#}").contains("encoding"));
    }

    #[test]
    fn late_gbk_in_a_mostly_ascii_file_falls_back_per_field() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = b"openid,city\n".to_vec();
        let (city, _, _) = encoding_rs::GBK.encode("上海");
        text.extend_from_slice(b"o1,");
        text.extend_from_slice(&city);
        text.push(b'\n');
        let path = write(dir.path(), "late.csv", &text);
        let chunks = read_all(&path, false, Encoding::Auto, 10);
        assert_eq!(cell(&chunks[0], 1, 0).as_deref(), Some("上海"));
    }

    #[test]
    fn ragged_rows_become_bad_rows_not_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "r.csv", b"openid,a,b\no1,1,2\no2,1\no3,1,2,3\n");
        let chunks = read_all(&path, false, Encoding::Auto, 10);
        let bad: Vec<usize> = chunks[0].bad_rows.iter().map(|b| b.index).collect();
        assert_eq!(bad, vec![1, 2]);
        assert!(chunks[0].bad_rows[0].reason.contains("2 fields"));
        assert_eq!(chunks[0].len(), 3);
    }

    #[test]
    fn reads_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.csv.gz");
        let mut gz = flate2::write::GzEncoder::new(
            File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        gz.write_all(b"openid\no1\no2\n").unwrap();
        gz.finish().unwrap();
        let chunks = read_all(&path, true, Encoding::Auto, 10);
        assert_eq!(chunks[0].len(), 2);
    }

    #[test]
    fn duplicate_and_empty_headers() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "d.csv", b"openid,a,a\n");
        assert!(
            format!("{:#}", schema(&path, false, Encoding::Auto).unwrap_err()).contains("twice")
        );
        let path = write(dir.path(), "e.csv", b"");
        assert!(
            format!("{:#}", schema(&path, false, Encoding::Auto).unwrap_err()).contains("empty")
        );
    }

    /// Physical lines as a person counts them: `\n`, `\r\n` or a lone `\r`
    /// ends one, and a last line without an ending counts.
    fn lines_of(bytes: &[u8]) -> u64 {
        let text = String::from_utf8_lossy(bytes)
            .replace("\r\n", "\n")
            .replace('\r', "\n");
        text.lines().count() as u64
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 15_000,
            failure_persistence: None,
            ..Default::default()
        })]

        /// Random bytes, quotes, line endings and encodings through the whole
        /// CSV input path: either an error of the whole file that names a
        /// line, or every physical line and every record accounted for.
        #[test]
        fn every_line_is_accounted_for_or_the_file_is_refused_naming_a_line(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    &b"a"[..], b"o1", b",", b",", b"\"", b"\"\"", b"\n", b"\r\n", b"\r",
                    b"\xff", b"\xe4\xb8\xad", b"\xd6\xd0", b"\xef\xbb\xbf", b" ",
                ]),
                0..120,
            ),
            header in proptest::sample::select(vec![&b"openid,x\n"[..], b"openid\r\n", b""]),
            encoding in proptest::sample::select(vec![
                Encoding::Auto, Encoding::Utf8, Encoding::Gbk, Encoding::Gb18030,
            ]),
            gzip in proptest::bool::ANY,
        ) {
            let mut bytes = header.to_vec();
            for piece in &pieces {
                bytes.extend_from_slice(piece);
            }
            let dir = tempfile::tempdir().unwrap();
            let path = if gzip {
                let path = dir.path().join("f.csv.gz");
                let mut gz = flate2::write::GzEncoder::new(
                    File::create(&path).unwrap(),
                    flate2::Compression::fast(),
                );
                gz.write_all(&bytes).unwrap();
                gz.finish().unwrap();
                path
            } else {
                write(dir.path(), "f.csv", &bytes)
            };
            let refused = |err: anyhow::Error| {
                let message = format!("{err:#}");
                proptest::prop_assert!(message.contains("line"), "{}", message);
                proptest::prop_assert_eq!(crate::exit::exit_for(&err), crate::exit::Exit::Usage);
                Ok(())
            };
            let schema = match schema(&path, gzip, encoding) {
                Ok((schema, _)) => schema,
                Err(err) => return refused(err),
            };
            let counted = match count(&path, gzip) {
                Ok(counted) => counted,
                Err(err) => return refused(err),
            };
            let body = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF][..]).unwrap_or(&bytes);
            proptest::prop_assert_eq!(counted.lines, Some(lines_of(body)));
            let width = schema.fields().len();
            let mut rows = 0u64;
            for chunk in chunks(&path, gzip, encoding, schema, (0..width).collect(), 7).unwrap() {
                let chunk = chunk.unwrap();
                proptest::prop_assert_eq!(chunk.first_row, rows + 1);
                for bad in &chunk.bad_rows {
                    proptest::prop_assert!(!bad.reason.is_empty());
                }
                // Every field of a good row is sent, so none may hold a line break.
                for column in chunk.batch.columns() {
                    let text = column.as_string::<i32>();
                    for (row, value) in text.iter().enumerate() {
                        let refused = chunk.bad_rows.iter().any(|b| b.index == row);
                        let broken = value.is_some_and(|v| v.contains(['\n', '\r']) || v.contains('\u{fffd}'));
                        proptest::prop_assert!(refused || !broken, "{:?}", value);
                    }
                }
                rows += chunk.len() as u64;
            }
            proptest::prop_assert_eq!(rows, counted.rows);
        }
    }
}
