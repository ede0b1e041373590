//! Bounded line reading for line inputs (stdin, followed files).
//!
//! [`LineReader`] holds at most `max_line` bytes of the line being read,
//! whatever the stream holds: a longer line is reported once, as soon as it
//! passes the limit, and the rest of it is skipped up to its newline. Lines
//! are bytes; [`Line::text`] turns one into text or into a bad record
//! naming the input and line (over-long, invalid UTF-8), so one bad line
//! never ends the input. The same reader serves blocking ([`LineReader::read`])
//! and async ([`LineReader::read_async`]) streams.

use std::io::{self, BufRead};

use serde::Serialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::hostlog::{parse_line_at, HostEvent, RecordError, RecordLocation, RecordProblem};

/// One line from a [`LineReader`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A complete line, without its `\n` (or `\r\n`).
    Bytes {
        /// 1-based line number.
        no: u64,
        /// The line.
        bytes: &'a [u8],
    },
    /// A line longer than the limit; its bytes are skipped.
    TooLong {
        /// 1-based line number.
        no: u64,
        /// The limit it passed.
        max_line: usize,
    },
}

impl<'a> Line<'a> {
    /// Its 1-based line number.
    pub fn no(&self) -> u64 {
        match self {
            Line::Bytes { no, .. } | Line::TooLong { no, .. } => *no,
        }
    }

    /// The line as text, or the bad record it is (`input` names the input).
    pub fn text(&self, input: &str) -> Result<&'a str, RecordError> {
        let problem = match *self {
            Line::Bytes { bytes, .. } => match std::str::from_utf8(bytes) {
                Ok(s) => return Ok(s),
                Err(e) => RecordProblem::InvalidUtf8 {
                    offset: e.valid_up_to(),
                },
            },
            Line::TooLong { max_line, .. } => RecordProblem::LineTooLong { max_line },
        };
        Err(RecordError {
            input: input.to_string(),
            location: RecordLocation::Line(self.no()),
            problem,
        })
    }
}

/// What the end of the bytes available means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtEnd {
    /// More may come later (a followed file): a line without its newline
    /// yet is kept for the next call.
    Wait,
    /// The stream is over (stdin closed): such a line is the last line.
    Finish,
}

/// What one step of feeding bytes produced.
enum Step {
    More,
    Line,
    TooLong(u64),
}

/// See the module documentation.
#[derive(Debug)]
pub struct LineReader {
    buf: Vec<u8>,
    max_line: usize,
    /// Lines finished so far; the one being read is `done + 1`.
    done: u64,
    /// Skipping the rest of an over-long line.
    skipping: bool,
    /// `buf` holds a line already returned: clear it before reading on.
    returned: bool,
}

impl LineReader {
    /// A reader for lines of at most `max_line` bytes (newline excluded).
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_line: max_line.max(1),
            done: 0,
            skipping: false,
            returned: false,
        }
    }

    /// Bytes held for the line being read: never more than `max_line`.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Forget the line being read and number lines from 1 again (a new or
    /// truncated file).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.done = 0;
        self.skipping = false;
        self.returned = false;
    }

    /// The next line from a blocking reader, or `None` at the end of the
    /// bytes available (`at_end` says what to do with a line that has no
    /// newline there).
    pub fn read<R: BufRead + ?Sized>(
        &mut self,
        r: &mut R,
        at_end: AtEnd,
    ) -> io::Result<Option<Line<'_>>> {
        self.begin();
        loop {
            let avail = match r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                return Ok(self.end(at_end));
            }
            let (used, step) = self.push(avail);
            r.consume(used);
            if !matches!(step, Step::More) {
                return Ok(Some(self.emit(step)));
            }
        }
    }

    /// [`LineReader::read`] for an async reader.
    pub async fn read_async<R: AsyncBufRead + Unpin + ?Sized>(
        &mut self,
        r: &mut R,
        at_end: AtEnd,
    ) -> io::Result<Option<Line<'_>>> {
        self.begin();
        loop {
            let avail = r.fill_buf().await?;
            if avail.is_empty() {
                return Ok(self.end(at_end));
            }
            let (used, step) = self.push(avail);
            r.consume(used);
            if !matches!(step, Step::More) {
                return Ok(Some(self.emit(step)));
            }
        }
    }

    /// At the end of a stream that will not grow (stdin closed, a file
    /// rotated away): its last line if it had no newline.
    pub fn finish(&mut self) -> Option<Line<'_>> {
        self.begin();
        let skipping = std::mem::take(&mut self.skipping);
        if self.buf.is_empty() && !skipping {
            return None;
        }
        self.done += 1;
        if skipping {
            // Already reported when it passed the limit.
            return None;
        }
        self.returned = true;
        Some(self.line())
    }

    fn end(&mut self, at_end: AtEnd) -> Option<Line<'_>> {
        match at_end {
            AtEnd::Wait => None,
            AtEnd::Finish => self.finish(),
        }
    }

    fn begin(&mut self) {
        if std::mem::take(&mut self.returned) {
            self.buf.clear();
        }
    }

    /// The line a step other than `More` finished.
    fn emit(&mut self, step: Step) -> Line<'_> {
        match step {
            Step::More | Step::Line => {
                self.returned = true;
                self.line()
            }
            Step::TooLong(no) => Line::TooLong {
                no,
                max_line: self.max_line,
            },
        }
    }

    fn line(&self) -> Line<'_> {
        let bytes = self.buf.strip_suffix(b"\r").unwrap_or(&self.buf);
        Line::Bytes {
            no: self.done,
            bytes,
        }
    }

    /// Take bytes from `avail` up to and including the first newline.
    fn push(&mut self, avail: &[u8]) -> (usize, Step) {
        let (chunk, complete) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (&avail[..i], true),
            None => (avail, false),
        };
        let used = chunk.len() + usize::from(complete);
        if self.skipping {
            if complete {
                self.skipping = false;
                self.done += 1;
            }
            return (used, Step::More);
        }
        let need = self.buf.len() + chunk.len();
        if need > self.max_line {
            let no = self.done + 1;
            self.buf.clear();
            if complete {
                self.done += 1;
            } else {
                self.skipping = true;
            }
            return (used, Step::TooLong(no));
        }
        if need > self.buf.capacity() {
            // Grow as usual, but never past the limit.
            let target = (self.buf.capacity() * 2).clamp(need, self.max_line);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(chunk);
        if complete {
            self.done += 1;
            (used, Step::Line)
        } else {
            (used, Step::More)
        }
    }
}

/// Counts of one line stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StreamStats {
    /// Lines read (including bad and over-long ones).
    pub lines: u64,
    /// Events sent.
    pub events: u64,
    /// Well-formed records of unused event ids.
    pub skipped: u64,
    /// Bad records (unparsable, invalid UTF-8, over-long).
    pub bad: u64,
    /// Lines longer than the limit (also counted in `bad`).
    pub oversized: u64,
}

/// Bad records logged at `warn` per stream; the rest at `debug` (counted).
const WARN_BAD: u64 = 10;

/// Read one JSON object or XML `<Event>` per line from `reader` (stdin)
/// until it ends or `tx` is closed, sending each event on `tx`. Lines are
/// bounded by `max_line`; a bad line is logged (naming `input` and its line
/// number) and counted, and reading goes on. Only an I/O error ends it early.
pub async fn forward<R: AsyncRead + Unpin>(
    input: &str,
    reader: R,
    max_line: usize,
    tx: &mpsc::Sender<HostEvent>,
) -> io::Result<StreamStats> {
    let mut r = BufReader::with_capacity(64 * 1024, reader);
    let mut lines = LineReader::new(max_line);
    let mut stats = StreamStats::default();
    loop {
        let Some(line) = lines.read_async(&mut r, AtEnd::Finish).await? else {
            return Ok(stats);
        };
        stats.lines += 1;
        let parsed = line
            .text(input)
            .and_then(|t| parse_line_at(input, line.no(), t));
        match parsed {
            Ok(Some(ev)) => {
                if tx.send(ev).await.is_err() {
                    return Ok(stats);
                }
                stats.events += 1;
            }
            Ok(None) => stats.skipped += 1,
            Err(e) => {
                stats.bad += 1;
                stats.oversized += u64::from(matches!(line, Line::TooLong { .. }));
                if stats.bad <= WARN_BAD {
                    warn!("host log: bad record: {e}");
                } else {
                    debug!("host log: bad record: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], max: usize) -> Vec<String> {
        let mut r = LineReader::new(max);
        let mut src = input;
        let mut out = Vec::new();
        while let Some(l) = r.read(&mut src, AtEnd::Finish).unwrap() {
            out.push(format!("{l:?}"));
        }
        out
    }

    #[test]
    fn splits_bounds_and_numbers_lines() {
        let got = all(b"ab\r\n\nxxxxxxxxxx\ncd\nyyyyyyyyyyyy", 5);
        assert_eq!(
            got,
            [
                r#"Bytes { no: 1, bytes: [97, 98] }"#,
                r#"Bytes { no: 2, bytes: [] }"#,
                r#"TooLong { no: 3, max_line: 5 }"#,
                r#"Bytes { no: 4, bytes: [99, 100] }"#,
                r#"TooLong { no: 5, max_line: 5 }"#,
            ]
        );
        assert_eq!(
            all(b"last", 5),
            [r#"Bytes { no: 1, bytes: [108, 97, 115, 116] }"#]
        );
    }

    #[test]
    fn an_over_long_line_is_reported_before_it_ends_and_never_buffered() {
        // A reader that hands out 4 KiB at a time of an endless line.
        struct Endless(usize);
        impl io::Read for Endless {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                let n = b.len().min(self.0);
                b[..n].fill(b'x');
                self.0 -= n;
                Ok(n)
            }
        }
        let mut src = io::BufReader::with_capacity(4096, Endless(10 << 20));
        let mut r = LineReader::new(64 * 1024);
        let first = r.read(&mut src, AtEnd::Wait).unwrap();
        assert_eq!(
            first,
            Some(Line::TooLong {
                no: 1,
                max_line: 64 * 1024
            })
        );
        assert!(r.capacity() <= 64 * 1024);
        assert_eq!(r.read(&mut src, AtEnd::Wait).unwrap(), None);
        assert!(r.capacity() <= 64 * 1024, "{}", r.capacity());
    }

    /// What the `read_lines` fuzz target checks, over deterministic
    /// pseudo-random inputs rich in newlines.
    #[test]
    fn bounds_and_numbering_hold_for_arbitrary_bytes() {
        const MAX_LINE: usize = 64;
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in (0..4000).step_by(37) {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if x.is_multiple_of(23) {
                        b'\n'
                    } else {
                        x as u8
                    }
                })
                .collect();
            let mut reader = LineReader::new(MAX_LINE);
            let mut src = io::BufReader::with_capacity(7, data.as_slice());
            let mut expect = 1;
            while let Some(line) = reader.read(&mut src, AtEnd::Finish).unwrap() {
                assert_eq!(line.no(), expect);
                expect += 1;
                if let Line::Bytes { bytes, .. } = line {
                    assert!(bytes.len() <= MAX_LINE);
                    assert!(!bytes.contains(&b'\n'));
                }
                let _ = line.text("fuzz");
                assert!(reader.capacity() <= MAX_LINE);
            }
            let newlines = data.iter().filter(|&&b| b == b'\n').count() as u64;
            let last = u64::from(data.last().is_some_and(|&b| b != b'\n'));
            assert_eq!(expect - 1, newlines + last, "every line counted");
        }
    }

    #[test]
    fn text_names_bad_lines() {
        let l = Line::Bytes {
            no: 7,
            bytes: b"{\"a\":\"\xff\"}",
        };
        assert_eq!(
            l.text("stdin").unwrap_err().to_string(),
            "stdin: line 7: invalid UTF-8 at byte 6 of the line"
        );
        let l = Line::TooLong {
            no: 8,
            max_line: 1024,
        };
        assert_eq!(
            l.text("stdin").unwrap_err().to_string(),
            "stdin: line 8: line longer than 1024 bytes (hostlog.max_line): skipped"
        );
    }

    #[tokio::test]
    async fn stdin_keeps_reading_past_bad_and_over_long_lines() {
        let ev = r#"{"EventID":3,"Channel":"Microsoft-Windows-Sysmon/Operational","UtcTime":"2020-09-20 06:57:48.481","Image":"C:\\x\\python.exe","SourceIp":"192.0.2.5","DestinationIp":"192.0.2.6","DestinationPort":"445"}"#;
        let mut input = Vec::new();
        input.extend_from_slice(ev.as_bytes());
        input.extend_from_slice(b"\n{\"EventID\":\"\xff\xfe\"}\n");
        input.extend_from_slice(&vec![b'{'; 300 * 1024]);
        input.extend_from_slice(b"\nnot a record\n");
        input.extend_from_slice(ev.replace("445", "139").as_bytes());
        let (tx, mut rx) = mpsc::channel(8);
        let stats = forward("stdin", input.as_slice(), 64 * 1024, &tx)
            .await
            .unwrap();
        drop(tx);
        assert_eq!(
            rx.recv().await.unwrap().as_connection().unwrap().dst_port,
            Some(445)
        );
        assert_eq!(
            rx.recv().await.unwrap().as_connection().unwrap().dst_port,
            Some(139)
        );
        assert!(rx.recv().await.is_none());
        assert_eq!(
            stats,
            StreamStats {
                lines: 5,
                events: 2,
                skipped: 0,
                bad: 3,
                oversized: 1
            }
        );
    }
}
