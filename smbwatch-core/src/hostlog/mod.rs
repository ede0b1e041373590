//! Windows host logs: parsers into one normalised [`HostEvent`] (a header
//! and a typed [`HostRecord`] per kind of event) and host rules (the file follower, line inputs and the TCP listener are the
//! application's).
//!
//! Supported events: Sysmon 1 (process creation), 3 (network connection),
//! 11 (file create); Security 4624 (logon), 4688 (process creation),
//! 5140/5145 (share access), 5156 (WFP connection allowed), 4697 (service
//! installed), 4698 (task created); System 7045 (service installed). Any
//! other event is skipped and counted.
//!
//! Supported formats ([`Format`]): binary EVTX, Windows event XML (wevtutil,
//! Windows Event Forwarding), Winlogbeat/ECS JSON, NXLog JSON, evtx_dump JSON,
//! and flat `Key: Value` records. Every format is mapped onto the same field
//! table (`fields`), so one piece of code decides what each Windows field
//! means; the format modules only find the fields. Which time field wins in
//! each format is documented in `docs/hostlogs.md` and in [`TimeSource`].
//!
//! All parsing is pure (bytes in, events out); file reading is confined to
//! [`parse_file`] here, and to the application's daemon inputs
//! (`daemon::inputs`: the file follower, stdin, the TCP listener).
//!
//! Hostile input is bounded: parsing is linear in the input, every string
//! of a [`HostEvent`] is capped ([`HostEvent::MAX_BYTES`]), line inputs
//! hold at most `max_line` bytes of a line, and times outside 1970–2200
//! are refused.

#[cfg(any(test, feature = "bench"))]
pub mod bench;
mod event;
mod evtx;
mod fields;
mod flat;
mod json;
mod kv;
mod line_format;
mod record;
pub mod rules;
mod text;
mod time;
mod windows_event;
mod xml;

pub use event::{
    Account, ConnectionLog, Direction, FileCreation, HostEvent, HostEventKind, HostRecord, Logon,
    NetworkConnection, Process, ProcessCreation, ProcessLog, ServiceInstall, ServiceLog,
    ShareAccess, ShareLog, TaskCreation, TimeSource, WindowsEvent, MAX_COMMAND_LINE_BYTES,
    MAX_GUID_BYTES, MAX_NAME_BYTES, MAX_PATH_BYTES, MAX_SID_BYTES,
};
pub use line_format::{LineFormat, LineOutcome};
pub use record::{
    HostLogError, Outcome, ParseSummary, RecordError, RecordLocation, RecordProblem,
    MAX_KEPT_ERRORS,
};

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::Serialize;

/// Input format of a log file or line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Detect from the content: EVTX by its magic; text per record (see
    /// [`parse_bytes`]).
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

/// EVTX file magic.
pub const EVTX_MAGIC: &[u8; 8] = b"ElfFile\0";

/// Guess the format of a whole input from its first bytes: EVTX magic, XML
/// (`<`), evtx_dump block output (`Record 1`), JSON object per line (flavour
/// from the first object's keys: `winlog` → Winlogbeat, `Event` → evtx_dump,
/// else NXLog), otherwise `Key: Value`. [`parse_bytes`] with
/// [`Format::Auto`] does not rely on this guess for text: it tells the
/// format per record (see the `text` module).
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
        Format::Auto if bytes.starts_with(EVTX_MAGIC) => Format::Evtx,
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
    summary.format = Some(text::parse(name, &text, format, &mut summary, out));
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
    let res = match LineFormat::of(t) {
        LineFormat::Empty => return Ok(None),
        LineFormat::Json => json::parse_record(t, None),
        LineFormat::Xml => xml::parse_single(t),
        LineFormat::Other => Err(RecordProblem::Json(
            "expected a JSON object or an XML <Event> element".into(),
        )),
    };
    match res {
        Ok(Outcome::Event { event, .. }) => Ok(Some(*event)),
        Ok(Outcome::Skipped(_)) => Ok(None),
        Err(problem) => Err(RecordError {
            input: input.to_string(),
            location: RecordLocation::Line(line_no),
            problem,
        }),
    }
}

/// Cut `s` to at most `max` bytes (`max` ≥ 3): the longest prefix that
/// ends on a char boundary and leaves room for `…`. Spare capacity is
/// dropped either way (an owned value from an unescaped JSON string or
/// XML text may have more than its length). True when cut.
pub(crate) fn cap_string(s: &mut String, max: usize) -> bool {
    const MARK: char = '…';
    if s.len() <= max {
        s.shrink_to_fit();
        return false;
    }
    let mut end = max - MARK.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + MARK.len_utf8());
    out.push_str(&s[..end]);
    out.push(MARK);
    *s = out;
    true
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

/// Shorten a library's error message for a [`RecordProblem`]: some quote
/// the offending value whole (serde_json's `invalid type: string "…"`,
/// quick-xml's unknown entities), and a thousand kept errors of a crafted
/// input must not hold a thousand megabyte-long lines. Keeps the head and
/// the tail (where serde_json puts `at line 1 column 532`).
pub(crate) fn clip_message(e: impl fmt::Display) -> String {
    const HEAD: usize = 160;
    const TAIL: usize = 60;
    let s = e.to_string();
    if s.len() <= HEAD + TAIL {
        return s;
    }
    let mut head = HEAD;
    while !s.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = s.len() - TAIL;
    while !s.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}…{}", &s[..head], &s[tail..])
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
mod hostile_tests;
#[cfg(test)]
mod service_tests;
#[cfg(test)]
pub(crate) mod tests;
