//! The line accounting that proves no row of a CSV file is lost: physical
//! lines are counted under the parser, and its quoting is followed byte by
//! byte, so that a quote that never closes (which the csv crate reads as one
//! field running to the end of the file) is found and named by its line.

use std::io::{self, Read};

/// Where the CSV grammar is, as csv-core sees it with riskbatch's settings
/// (comma, `"` quotes doubled to escape, no escape character, no comments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    /// At the start of a field (or of a record).
    FieldStart,
    /// In a field that did not start with a quote: a quote here is text.
    Unquoted,
    /// In a quoted field: delimiters and line breaks are text.
    Quoted,
    /// Just after a quote inside a quoted field: it closed the field, unless
    /// another quote follows (an escaped quote).
    AfterQuote,
}

/// Line counts of the bytes read so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCount {
    /// Physical lines (a last line without a line break counts).
    pub lines: u64,
    /// The line where a quoted field opened that has not closed yet.
    pub open_quote_line: Option<u64>,
}

/// A reader that counts the lines and follows the quoting of what passes through it.
pub struct LineScanner<R> {
    inner: R,
    breaks: u64,
    previous: Option<u8>,
    state: Quoting,
    quote_line: u64,
}

impl<R: Read> LineScanner<R> {
    pub fn new(inner: R) -> LineScanner<R> {
        LineScanner {
            inner,
            breaks: 0,
            previous: None,
            state: Quoting::FieldStart,
            quote_line: 0,
        }
    }

    /// The counts of everything read so far: final once the reader is at its end.
    pub fn count(&self) -> LineCount {
        let unfinished = matches!(self.previous, Some(b) if b != b'\n' && b != b'\r');
        // A lone `\r` ends a line too, as it ends a record for the parser.
        let lone_cr = self.previous == Some(b'\r');
        LineCount {
            lines: self.breaks + u64::from(unfinished) + u64::from(lone_cr),
            open_quote_line: (self.state == Quoting::Quoted).then_some(self.quote_line),
        }
    }

    fn scan(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'\n' => self.breaks += 1,
                _ if self.previous == Some(b'\r') => self.breaks += 1,
                _ => {}
            }
            self.state = match (self.state, b) {
                (Quoting::FieldStart, b'"') => {
                    // `breaks` already counts a `\r` that ended the previous line.
                    self.quote_line = self.breaks + 1;
                    Quoting::Quoted
                }
                (Quoting::FieldStart | Quoting::Unquoted | Quoting::AfterQuote, b',') => {
                    Quoting::FieldStart
                }
                (Quoting::FieldStart | Quoting::Unquoted | Quoting::AfterQuote, b'\n' | b'\r') => {
                    Quoting::FieldStart
                }
                (Quoting::FieldStart | Quoting::Unquoted, _) => Quoting::Unquoted,
                (Quoting::Quoted, b'"') => Quoting::AfterQuote,
                (Quoting::Quoted, _) => Quoting::Quoted,
                (Quoting::AfterQuote, b'"') => Quoting::Quoted,
                (Quoting::AfterQuote, _) => Quoting::Unquoted,
            };
            self.previous = Some(b);
        }
    }
}

impl<R: Read> Read for LineScanner<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.scan(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(text: &[u8]) -> LineCount {
        let mut scanner = LineScanner::new(text);
        io::copy(&mut scanner, &mut io::sink()).unwrap();
        scanner.count()
    }

    #[test]
    fn counts_physical_lines_with_any_ending() {
        let cases: [(&[u8], u64); 8] = [
            (b"", 0),
            (b"a", 1),
            (b"a\n", 1),
            (b"a\nb", 2),
            (b"a\r\nb\r\n", 2),
            (b"a\rb\r", 2),
            (b"a\n\n\nb\n", 4),
            (b"h\n\"x\ny\"\n", 3),
        ];
        for (text, lines) in cases {
            assert_eq!(
                count(text).lines,
                lines,
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn finds_a_quote_that_never_closes_and_its_line() {
        assert_eq!(count(b"h\na,\"b\nc\n").open_quote_line, Some(2));
        assert_eq!(count(b"h\r\na\r\n\"b\r\nc").open_quote_line, Some(3));
        // Closed, escaped, or text inside an unquoted field: all fine.
        for text in [
            &b"h\n\"a\nb\",c\n"[..],
            b"h\n\"a\"\"b\"\n",
            b"h\nab\"c\n",
            b"h\n\"a\"b\"\n",
            b"\"\"\n",
        ] {
            assert_eq!(count(text).open_quote_line, None, "{text:?}");
        }
    }

    #[test]
    fn agrees_with_the_csv_parser_on_where_fields_end() {
        // `"a"b"` is: quoted a, then text `b"` — the field is closed.
        let text = b"x,y\n\"a\"b\",2\n";
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(&text[..]);
        let records: Vec<csv::ByteRecord> = reader.byte_records().map(Result::unwrap).collect();
        assert_eq!(records[1].len(), 2);
        assert_eq!(count(text).open_quote_line, None);
    }
}
