//! What parsing reports: where a record sits, what is wrong with a bad
//! one, errors that stop a whole input, and the per-input summary.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::{Format, HostEvent};

/// Where in an input a record sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordLocation {
    /// 1-based line number (text inputs; for a multi-line record, the line
    /// it starts on: an XML record's `<Event`, an evtx_dump `Record N`).
    Line(u64),
    /// EVTX event record id.
    EvtxRecord(u64),
    /// EVTX chunk number (0-based) whose records could not be read at all.
    EvtxChunk(u64),
}

impl fmt::Display for RecordLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Line(n) => write!(f, "line {n}"),
            Self::EvtxRecord(n) => write!(f, "event record id {n}"),
            Self::EvtxChunk(n) => write!(f, "chunk {n}"),
        }
    }
}

/// What is wrong with one record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordProblem {
    /// The record is not valid JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// The record is not valid XML.
    #[error("invalid XML: {0}")]
    Xml(String),
    /// The EVTX library could not decode the record or chunk.
    #[error("invalid EVTX data: {0}")]
    Evtx(String),
    /// A `Key: Value` line without a colon.
    #[error("line {line} is not `Key: Value`: {text:?}")]
    NotKeyValue {
        /// 1-based line number in the input.
        line: u64,
        /// The line (truncated).
        text: String,
    },
    /// An EVTX file that ends early (copied while written, cut in transfer).
    #[error(
        "EVTX file truncated: {size} bytes where its chunks need {expected}; \
         any records past the cut are lost"
    )]
    TruncatedFile {
        /// The file's size.
        size: u64,
        /// The size its header and last chunk call for.
        expected: u64,
    },
    /// A line input's line is not UTF-8.
    #[error("invalid UTF-8 at byte {offset} of the line")]
    InvalidUtf8 {
        /// Length of the valid prefix.
        offset: usize,
    },
    /// A line input's line is longer than the limit; it was skipped.
    #[error("line longer than {max_line} bytes (hostlog.max_line): skipped")]
    LineTooLong {
        /// The limit.
        max_line: usize,
    },
    /// A field every record needs is absent.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A time outside the accepted range (`TIME_RANGE` in `hostlog::time`:
    /// 1970-01-01 to 2200-12-31, UTC).
    #[error("{field} {value:?} is outside the accepted range 1970-01-01T00:00:00Z..=2200-12-31T23:59:59Z")]
    TimeOutOfRange {
        /// Field name.
        field: &'static str,
        /// The value as written (truncated).
        value: String,
    },
    /// A field has a value that cannot be what it claims.
    #[error("invalid {field}: {value:?}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// The value (truncated).
        value: String,
    },
}

/// One bad record: which input, where, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{input}: {location}: {problem}")]
pub struct RecordError {
    /// File path, peer address, or `<line>` for [`parse_line`].
    pub input: String,
    /// Where in the input.
    pub location: RecordLocation,
    /// What is wrong.
    pub problem: RecordProblem,
}

/// Errors that stop a whole input (the file cannot be read at all).
#[derive(Debug, thiserror::Error)]
pub enum HostLogError {
    /// Reading the file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The EVTX file header is unusable.
    #[error("{path}: not a readable EVTX file: {message}")]
    EvtxHeader {
        /// The file.
        path: String,
        /// The library's message.
        message: String,
    },
    /// The format override cannot apply to this input.
    #[error("{path}: format {format} does not apply: {message}")]
    FormatMismatch {
        /// The file.
        path: String,
        /// The requested format.
        format: Format,
        /// Why.
        message: String,
    },
}

/// Bad records kept verbatim in a [`ParseSummary`]; beyond this only counted.
pub const MAX_KEPT_ERRORS: usize = 1000;

/// Counts of one parse run. `parsed + skipped + bad == total`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ParseSummary {
    /// The input's name (path, peer).
    pub input: String,
    /// Format used (after detection).
    pub format: Option<Format>,
    /// Records seen.
    pub total: u64,
    /// Records that became a [`HostEvent`].
    pub parsed: u64,
    /// Well-formed records of event ids (or channels) smbwatch does not use.
    pub skipped: u64,
    /// Records that could not be parsed.
    pub bad: u64,
    /// Parsed records with a field cut to its cap ([`MAX_PATH_BYTES`] etc.).
    pub truncated: u64,
    /// Skipped records by event id.
    pub skipped_by_id: BTreeMap<u32, u64>,
    /// The first [`MAX_KEPT_ERRORS`] bad records.
    #[serde(serialize_with = "ser_errors")]
    pub errors: Vec<RecordError>,
}

fn ser_errors<S: serde::Serializer>(errs: &[RecordError], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(errs.iter().map(|e| e.to_string()))
}

impl ParseSummary {
    pub(super) fn new(input: &str, format: Format) -> Self {
        Self {
            input: input.to_string(),
            format: Some(format),
            ..Self::default()
        }
    }

    /// Account for one record's outcome; parsed events go to `out`.
    pub fn record(&mut self, outcome: Result<Outcome, RecordError>, out: &mut Vec<HostEvent>) {
        self.total += 1;
        match outcome {
            Ok(Outcome::Event { event, truncated }) => {
                self.parsed += 1;
                self.truncated += u64::from(truncated);
                out.push(*event);
            }
            Ok(Outcome::Skipped(id)) => {
                self.skipped += 1;
                *self.skipped_by_id.entry(id).or_default() += 1;
            }
            Err(e) => self.bad(e),
        }
    }

    /// Account for one bad record.
    pub fn bad(&mut self, e: RecordError) {
        self.bad += 1;
        if self.errors.len() < MAX_KEPT_ERRORS {
            self.errors.push(e);
        }
    }

    /// Account for `n` records lost to one error (an EVTX chunk that stopped
    /// early): counted in `total` and `bad`, listed once.
    pub fn bad_many(&mut self, e: RecordError, n: u64) {
        self.total += n;
        self.bad += n;
        if self.errors.len() < MAX_KEPT_ERRORS {
            self.errors.push(e);
        }
    }

    /// Add another summary's counts (for totals over several inputs).
    pub fn merge(&mut self, other: &ParseSummary) {
        self.total += other.total;
        self.parsed += other.parsed;
        self.skipped += other.skipped;
        self.bad += other.bad;
        self.truncated += other.truncated;
        for (id, n) in &other.skipped_by_id {
            *self.skipped_by_id.entry(*id).or_default() += n;
        }
        let room = MAX_KEPT_ERRORS.saturating_sub(self.errors.len());
        self.errors.extend(other.errors.iter().take(room).cloned());
    }
}

/// The outcome of one well-formed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A supported event.
    Event {
        /// The event, its strings capped.
        event: Box<HostEvent>,
        /// True when a string field was cut to its cap.
        truncated: bool,
    },
    /// A well-formed record of an event id smbwatch does not use.
    Skipped(u32),
}
