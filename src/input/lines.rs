//! The line accounting that proves no row of a CSV file is lost: physical
//! lines are counted under the parser, and its quoting is followed byte by
//! byte, so that a quote that never closes (which the csv crate reads as one
//! field running to the end of the file) is found and named by its line.

use std::io::{self, Read};

/// Where the CSV grammar is, as csv-core sees it with riskbatch's settings
/// (comma, `"` quotes doubled to escape, no escape character, no comments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
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

/// The bytes the grammar tells apart; every other byte is [`Byte::Text`].
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Byte {
    Text,
    Quote,
    Comma,
    LineFeed,
    CarriageReturn,
}

const BYTE_CLASS: [Byte; 256] = {
    let mut class = [Byte::Text; 256];
    class[b'"' as usize] = Byte::Quote;
    class[b',' as usize] = Byte::Comma;
    class[b'\n' as usize] = Byte::LineFeed;
    class[b'\r' as usize] = Byte::CarriageReturn;
    class
};

/// The state after a byte of each class, by state.
const NEXT: [[Quoting; 5]; 4] = {
    use Quoting::*;
    [
        // Text, Quote, Comma, LineFeed, CarriageReturn
        [Unquoted, Quoted, FieldStart, FieldStart, FieldStart], // FieldStart
        [Unquoted, Unquoted, FieldStart, FieldStart, FieldStart], // Unquoted
        [Quoted, AfterQuote, Quoted, Quoted, Quoted],           // Quoted
        [Unquoted, Quoted, FieldStart, FieldStart, FieldStart], // AfterQuote
    ]
};

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

    /// Every byte of the input passes here three times (run, output pass,
    /// cluster members): a byte-by-byte match took 2 % of a run's CPU.
    fn scan(&mut self, bytes: &[u8]) {
        let Some(&last) = bytes.last() else { return };
        if self.state != Quoting::Quoted && !bytes.contains(&b'"') {
            // No quote: only the line breaks count, and the field state
            // follows from the last byte. Most exports look like this, and
            // these searches and counts run many bytes at a time.
            let line_feeds = bytes.iter().filter(|&&b| b == b'\n').count();
            // A `\r` ends a line of its own unless a `\n` follows it.
            let lone_crs = usize::from(self.previous == Some(b'\r') && bytes[0] != b'\n')
                + bytes
                    .iter()
                    .zip(&bytes[1..])
                    .filter(|&(&a, &b)| a == b'\r' && b != b'\n')
                    .count();
            self.breaks += (line_feeds + lone_crs) as u64;
            self.state = match last {
                b',' | b'\n' | b'\r' => Quoting::FieldStart,
                _ => Quoting::Unquoted,
            };
            self.previous = Some(last);
            return;
        }
        // Kept in locals: written through `self`, they went to memory for
        // every byte.
        let (mut breaks, mut state, mut quote_line) = (self.breaks, self.state, self.quote_line);
        let mut after_cr = self.previous == Some(b'\r');
        for &b in bytes {
            let class = BYTE_CLASS[usize::from(b)];
            // A `\r\n` ends one line; a lone `\r` ends one too.
            breaks += u64::from(class == Byte::LineFeed || after_cr);
            if state == Quoting::FieldStart && class == Byte::Quote {
                // `breaks` already counts a `\r` that ended the previous line.
                quote_line = breaks + 1;
            }
            state = NEXT[state as usize][class as usize];
            after_cr = class == Byte::CarriageReturn;
        }
        (self.breaks, self.state, self.quote_line) = (breaks, state, quote_line);
        self.previous = Some(last);
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

    /// The grammar written out as a match, byte by byte: what the scan must agree with.
    fn count_by_match(text: &[u8]) -> LineCount {
        let (mut breaks, mut previous, mut state, mut quote_line) =
            (0, None, Quoting::FieldStart, 0);
        for &b in text {
            match b {
                b'\n' => breaks += 1,
                _ if previous == Some(b'\r') => breaks += 1,
                _ => {}
            }
            state = match (state, b) {
                (Quoting::FieldStart, b'"') => {
                    quote_line = breaks + 1;
                    Quoting::Quoted
                }
                (Quoting::Quoted, b'"') => Quoting::AfterQuote,
                (Quoting::Quoted, _) => Quoting::Quoted,
                (Quoting::AfterQuote, b'"') => Quoting::Quoted,
                (_, b',' | b'\n' | b'\r') => Quoting::FieldStart,
                (_, _) => Quoting::Unquoted,
            };
            previous = Some(b);
        }
        let unfinished = matches!(previous, Some(b) if b != b'\n' && b != b'\r');
        LineCount {
            lines: breaks + u64::from(unfinished) + u64::from(previous == Some(b'\r')),
            open_quote_line: (state == Quoting::Quoted).then_some(quote_line),
        }
    }

    proptest::proptest! {
        #[test]
        fn the_scan_follows_the_grammar_across_any_reads(
            symbols in proptest::collection::vec(0usize..5, 0..64),
            plain in (0usize..64, 0usize..64),
            splits in (0usize..64, 0usize..64),
        ) {
            // Bytes in `plain` hold no quote, as most exports.
            let plain = plain.0.min(plain.1)..plain.0.max(plain.1);
            let text: Vec<u8> = symbols
                .iter()
                .enumerate()
                .map(|(i, &s)| if plain.contains(&i) { b"a,\n\ra"[s] } else { b"a\",\n\r"[s] })
                .collect();
            let (a, b) = (splits.0.min(text.len()), splits.1.min(text.len()));
            let (a, b) = (a.min(b), a.max(b));
            let mut scanner = LineScanner::new(&text[..]);
            scanner.scan(&text[..a]);
            scanner.scan(&text[a..b]);
            scanner.scan(&text[b..]);
            proptest::prop_assert_eq!(scanner.count(), count_by_match(&text));
        }
    }
}
