//! Windows host logs: parsers into one normalised [`HostEvent`], host rules,
//! and the file follower (the TCP listener is a daemon input).
//!
//! Supported events: Sysmon 1 (process creation), 3 (network connection),
//! 11 (file create); Security 4624 (logon), 4688 (process creation),
//! 5140/5145 (share access), 5156 (WFP connection allowed). Any other event is
//! skipped and counted.
//!
//! Supported formats ([`Format`]): binary EVTX, Windows event XML (wevtutil,
//! Windows Event Forwarding), Winlogbeat/ECS JSON, NXLog JSON, evtx_dump JSON,
//! and flat `Key: Value` records. Every format is mapped onto the same field
//! table (`fields`), so one piece of code decides what each Windows field
//! means; the format modules only find the fields. Which time field wins in
//! each format is documented in `docs/hostlogs.md` and in [`TimeSource`].
//!
//! All parsing is pure (bytes in, events out); file reading is confined to
//! [`parse_file`] and [`follow`].

pub mod bench;
mod evtx;
mod fields;
pub mod follow;
mod json;
mod kv;
pub mod rules;
mod time;
mod xml;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// What a host event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostEventKind {
    /// Sysmon 3, Security 5156.
    NetworkConnection,
    /// Sysmon 1, Security 4688.
    ProcessCreation,
    /// Sysmon 11.
    FileCreate,
    /// Security 4624.
    Logon,
    /// Security 5140, 5145.
    ShareAccess,
}

/// Direction of a network connection as seen by the logging host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The logging host initiated the connection.
    Outbound,
    /// The logging host accepted the connection.
    Inbound,
}

/// Where [`HostEvent::ts`] came from, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSource {
    /// A field that is UTC by definition or carries its zone: Sysmon
    /// `UtcTime`, `System/TimeCreated/@SystemTime`, Winlogbeat `@timestamp`,
    /// or any time with `Z`/`±hh:mm`.
    Utc,
    /// NXLog `EventTime` (host local time without zone) converted with the
    /// host's UTC offset inferred from the record's `@timestamp` (rounded to
    /// 15 minutes, so valid while forwarding takes less than 7.5 minutes).
    LocalInferred,
    /// The collector's receive time (`@timestamp` of an NXLog/Logstash
    /// record): late by the forwarding delay.
    Collector,
    /// A time without zone and nothing to infer the zone from: taken as UTC.
    AssumedUtc,
}

/// One normalised Windows host event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostEvent {
    /// Event time in UTC (see [`TimeSource`] for which field it came from).
    pub ts: DateTime<Utc>,
    /// Which field `ts` came from.
    pub time_source: TimeSource,
    /// Computer name as logged (`Computer`, `Hostname`, `winlog.computer_name`).
    pub host: Option<String>,
    /// Event log channel as logged (`Security`, `Microsoft-Windows-Sysmon/Operational`).
    pub channel: Option<String>,
    /// Windows event id.
    pub event_id: u32,
    /// What the event reports.
    pub kind: HostEventKind,
    /// Event record id, when the format carries it.
    pub record_id: Option<u64>,
    /// Source address (for 4624/5140/5145: the remote client, `IpAddress`).
    pub src_ip: Option<IpAddr>,
    /// Source port.
    pub src_port: Option<u16>,
    /// Destination address.
    pub dst_ip: Option<IpAddr>,
    /// Destination port.
    pub dst_port: Option<u16>,
    /// IP protocol number (6 TCP, 17 UDP).
    pub protocol: Option<u8>,
    /// Connection direction (5156 `Direction`, Sysmon `Initiated`).
    pub direction: Option<Direction>,
    /// Process id (for 4688 and Sysmon 1: the new process).
    pub pid: Option<u32>,
    /// Image path as logged (may be an NT device path or `System`).
    pub image: Option<String>,
    /// File name of `image`, e.g. `powershell.exe`.
    pub image_name: Option<String>,
    /// User as `DOMAIN\name` (or `name` without a domain).
    pub user: Option<String>,
    /// Logon type (4624).
    pub logon_type: Option<u32>,
    /// Share name without the `\\*\` prefix, e.g. `C$`.
    pub share_name: Option<String>,
    /// Path relative to the share (5145 `RelativeTargetName`).
    pub relative_target: Option<String>,
    /// File created (Sysmon 11 `TargetFilename`).
    pub target_filename: Option<String>,
    /// Parent image (Sysmon 1 `ParentImage`, 4688 `ParentProcessName`).
    pub parent_image: Option<String>,
    /// Command line (Sysmon 1, 4688).
    pub command_line: Option<String>,
}

impl HostEvent {
    /// True when `user` names a machine account (ends in `$`).
    pub fn is_machine_account(&self) -> bool {
        self.user.as_deref().is_some_and(|u| u.ends_with('$'))
    }

    /// The process as [`crate::alert::ProcessInfo`].
    pub fn process_info(&self) -> crate::alert::ProcessInfo {
        crate::alert::ProcessInfo {
            name: self.image_name.clone(),
            pid: self.pid,
            executable: self.image.clone(),
        }
    }
}

/// Input format of a log file or line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Detect from the content (see [`detect_format`]).
    Auto,
    /// Binary `.evtx` (magic `ElfFile\0`).
    Evtx,
    /// Windows event XML (`<Event ...>`), one or many events, any wrapping.
    Xml,
    /// Winlogbeat / Elastic Agent ECS JSON, one object per line.
    Winlogbeat,
    /// NXLog `im_msvistalog` + `to_json()`, one object per line.
    Nxlog,
    /// `evtx_dump -o jsonl` (one object per line) or `-o json` (`Record N` blocks).
    EvtxDump,
    /// Flat `Key: Value` records separated by blank lines or `---`.
    KeyValue,
}

impl Format {
    /// Name used on the command line and in summaries.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Evtx => "evtx",
            Self::Xml => "xml",
            Self::Winlogbeat => "winlogbeat",
            Self::Nxlog => "nxlog",
            Self::EvtxDump => "evtx-dump",
            Self::KeyValue => "kv",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "auto" => Self::Auto,
            "evtx" => Self::Evtx,
            "xml" => Self::Xml,
            "winlogbeat" | "ecs" => Self::Winlogbeat,
            "nxlog" => Self::Nxlog,
            "evtx-dump" | "evtx_dump" | "evtxdump" => Self::EvtxDump,
            "kv" | "keyvalue" | "key-value" => Self::KeyValue,
            _ => return Err(UnknownFormat(s.to_string())),
        })
    }
}

/// A format name that [`Format::from_str`] does not know.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown host log format {0:?} (expected auto, evtx, xml, winlogbeat, nxlog, evtx-dump or kv)"
)]
pub struct UnknownFormat(pub String);

/// Where in an input a record sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordLocation {
    /// 1-based line number (line formats; for multi-line records, the first line).
    Line(u64),
    /// 1-based record ordinal (XML events, evtx_dump blocks).
    Record(u64),
    /// EVTX event record id.
    EvtxRecord(u64),
    /// EVTX chunk number (0-based) whose records could not be read at all.
    EvtxChunk(u64),
}

impl fmt::Display for RecordLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Line(n) => write!(f, "line {n}"),
            Self::Record(n) => write!(f, "record {n}"),
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
    /// A field every record needs is absent.
    #[error("missing {0}")]
    Missing(&'static str),
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
    fn new(input: &str, format: Format) -> Self {
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
            Ok(Outcome::Event(ev)) => {
                self.parsed += 1;
                out.push(*ev);
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
    Event(Box<HostEvent>),
    /// A well-formed record of an event id smbwatch does not use.
    Skipped(u32),
}

/// EVTX file magic.
pub const EVTX_MAGIC: &[u8; 8] = b"ElfFile\0";

/// Detect the format of a whole input from its first bytes: EVTX magic, XML
/// (`<`), evtx_dump block output (`Record 1`), JSON object per line (flavour
/// from the first object's keys: `winlog` → Winlogbeat, `Event` → evtx_dump,
/// else NXLog), otherwise `Key: Value`.
pub fn detect_format(bytes: &[u8]) -> Format {
    if bytes.starts_with(EVTX_MAGIC) {
        return Format::Evtx;
    }
    let text = strip_bom(bytes);
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    let rest = &text[start..];
    match rest.first() {
        Some(b'<') => Format::Xml,
        Some(b'{') => {
            let end = memchr_nl(rest).unwrap_or(rest.len());
            json::detect_flavour(&rest[..end])
        }
        _ if rest.starts_with(b"Record ") => Format::EvtxDump,
        _ => Format::KeyValue,
    }
}

fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(b)
}

fn memchr_nl(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// Parse a whole file. Unreadable files are an error; bad records are counted
/// and listed in the summary while parsing goes on.
pub fn parse_file(
    path: impl AsRef<Path>,
    format: Format,
) -> Result<(Vec<HostEvent>, ParseSummary), HostLogError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| HostLogError::Io {
        op: "read",
        path: path.display().to_string(),
        source,
    })?;
    parse_bytes(&path.display().to_string(), &bytes, format)
}

/// Parse an in-memory input; `name` names it in errors.
pub fn parse_bytes(
    name: &str,
    bytes: &[u8],
    format: Format,
) -> Result<(Vec<HostEvent>, ParseSummary), HostLogError> {
    let mut out = Vec::new();
    let summary = parse_bytes_into(name, bytes, format, &mut out)?;
    Ok((out, summary))
}

/// Like [`parse_bytes`] but appends to `out` (reuses its allocation; the
/// throughput measurement uses this).
pub fn parse_bytes_into(
    name: &str,
    bytes: &[u8],
    format: Format,
    out: &mut Vec<HostEvent>,
) -> Result<ParseSummary, HostLogError> {
    let format = match format {
        Format::Auto => detect_format(bytes),
        f => f,
    };
    let mut summary = ParseSummary::new(name, format);
    if format == Format::Evtx {
        evtx::parse(name, bytes, &mut summary, out)?;
        return Ok(summary);
    }
    if bytes.starts_with(EVTX_MAGIC) {
        return Err(HostLogError::FormatMismatch {
            path: name.to_string(),
            format,
            message: "the input is binary EVTX".into(),
        });
    }
    // Text formats: invalid UTF-8 is replaced rather than refused, so one
    // bad byte costs at most the record it sits in (which then fails its
    // field checks or parses with U+FFFD in a string).
    let text = String::from_utf8_lossy(strip_bom(bytes));
    match format {
        Format::Xml => xml::parse_document(name, &text, &mut summary, out),
        Format::Winlogbeat | Format::Nxlog => {
            json::parse_lines(name, &text, format, &mut summary, out)
        }
        Format::EvtxDump => json::parse_evtx_dump(name, &text, &mut summary, out),
        Format::KeyValue => kv::parse_records(name, &text, &mut summary, out),
        Format::Auto | Format::Evtx => unreachable!("resolved above"),
    }
    Ok(summary)
}

/// Parse one line as a forwarder sends it: a JSON object (Winlogbeat, NXLog
/// or evtx_dump flavour, told apart by its keys) or one XML `<Event>`.
/// `Ok(None)` is a well-formed record of an unused event id; blank lines are
/// `Ok(None)` too.
pub fn parse_line(line: &str) -> Result<Option<HostEvent>, RecordError> {
    parse_line_at("<line>", 1, line)
}

/// [`parse_line`] with the input name and line number used in errors.
pub fn parse_line_at(
    input: &str,
    line_no: u64,
    line: &str,
) -> Result<Option<HostEvent>, RecordError> {
    let t = line.trim_start_matches('\u{feff}').trim();
    let res = match t.as_bytes().first() {
        None => return Ok(None),
        Some(b'{') => json::parse_record(t, None),
        Some(b'<') => xml::parse_single(t),
        Some(_) => Err(RecordProblem::Json(
            "expected a JSON object or an XML <Event> element".into(),
        )),
    };
    match res {
        Ok(Outcome::Event(ev)) => Ok(Some(*ev)),
        Ok(Outcome::Skipped(_)) => Ok(None),
        Err(problem) => Err(RecordError {
            input: input.to_string(),
            location: RecordLocation::Line(line_no),
            problem,
        }),
    }
}

/// Truncate a value for an error message (on a char boundary).
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 120;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// File name of a Windows path: the part after the last `\` or `/`
/// (`\device\harddiskvolume2\windows\system32\dns.exe` → `dns.exe`,
/// `System` → `System`).
pub fn image_file_name(path: &str) -> &str {
    path.rsplit(['\\', '/']).next().unwrap_or(path)
}

/// Share name without its `\\server\` prefix (`\\*\C$` → `C$`).
pub fn bare_share_name(share: &str) -> &str {
    if let Some(rest) = share.strip_prefix("\\\\") {
        rest.split_once('\\').map_or(rest, |(_, name)| name)
    } else {
        share
    }
}

#[cfg(test)]
pub(crate) mod tests;
