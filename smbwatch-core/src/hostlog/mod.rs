//! Windows host logs: parsers into one normalised [`HostEvent`] and host
//! rules (the file follower, line inputs and the TCP listener are the
//! application's).
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
//! [`parse_file`] here, and to the application's daemon inputs
//! (`daemon::inputs`: the file follower, stdin, the TCP listener).
//!
//! Hostile input is bounded: parsing is linear in the input, every string
//! of a [`HostEvent`] is capped ([`HostEvent::MAX_BYTES`]), line inputs
//! hold at most `max_line` bytes of a line, and times outside 1970–2200
//! are refused.

#[cfg(any(test, feature = "bench"))]
pub mod bench;
mod evtx;
mod fields;
mod json;
mod kv;
mod line_format;
mod record;
pub mod rules;
mod text;
mod time;
mod xml;

pub use line_format::{LineFormat, LineOutcome};
pub use record::{
    HostLogError, Outcome, ParseSummary, RecordError, RecordLocation, RecordProblem,
    MAX_KEPT_ERRORS,
};

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a host event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The logging host initiated the connection.
    Outbound,
    /// The logging host accepted the connection.
    Inbound,
}

/// Where [`HostEvent::ts`] came from, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The user's SID (`SubjectUserSid` / `TargetUserSid`, whichever
    /// account `user` names).
    pub user_sid: Option<String>,
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
    /// Sysmon `ProcessGuid` (Sysmon 1, 3, 11): names one process across
    /// pid reuse, and is all NXLog keeps of Sysmon's process identity.
    pub process_guid: Option<String>,
    /// Sysmon 1 `ParentProcessGuid`.
    pub parent_process_guid: Option<String>,
    /// Parent process id (Sysmon 1 `ParentProcessId`, 4688 `ProcessId`).
    pub parent_pid: Option<u32>,
    /// Requested access (5140/5145 `AccessMask`, or the rights named in
    /// `AccessList`), e.g. `0x2` for WriteData.
    pub access_mask: Option<u32>,
}

/// Longest host, channel, user, share and image file name kept (bytes).
pub const MAX_NAME_BYTES: usize = 256;
/// Longest SID kept (bytes): `S-1-` and 15 sub-authorities of 10 digits,
/// the most a SID can have.
pub const MAX_SID_BYTES: usize = 184;
/// Longest image, parent image, file and share-relative path kept (bytes).
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest command line kept (bytes).
pub const MAX_COMMAND_LINE_BYTES: usize = 4096;
/// Longest Sysmon process GUID kept (bytes; a real one is 38).
pub const MAX_GUID_BYTES: usize = 64;

// Documented (docs/operations.md, docs/hostlogs.md) as 10,208 bytes: fail to compile if
// the event grows past the 10 KiB the docs promise.
const _: () = assert!(HostEvent::MAX_BYTES <= 10 * 1024);

impl HostEvent {
    /// Most heap bytes the strings of one parsed event hold: 5 names, a
    /// SID, 4 paths, a command line and 2 GUIDs at their caps (9,784). With
    /// the struct itself ([`HostEvent::MAX_BYTES`]) this bounds what one
    /// event costs a table downstream.
    pub const MAX_HEAP_BYTES: usize = 5 * MAX_NAME_BYTES
        + MAX_SID_BYTES
        + 4 * MAX_PATH_BYTES
        + MAX_COMMAND_LINE_BYTES
        + 2 * MAX_GUID_BYTES;

    /// Most bytes one parsed event occupies, inline and on the heap
    /// (under 10 KiB).
    pub const MAX_BYTES: usize = std::mem::size_of::<HostEvent>() + Self::MAX_HEAP_BYTES;

    /// Heap bytes held by this event's strings (their capacities).
    pub fn heap_bytes(&self) -> usize {
        self.strings().map(|s| s.capacity()).sum()
    }

    /// Every string field with its cap.
    fn strings_mut(&mut self) -> [(&mut Option<String>, usize); 13] {
        [
            (&mut self.host, MAX_NAME_BYTES),
            (&mut self.channel, MAX_NAME_BYTES),
            (&mut self.image, MAX_PATH_BYTES),
            (&mut self.image_name, MAX_NAME_BYTES),
            (&mut self.user, MAX_NAME_BYTES),
            (&mut self.user_sid, MAX_SID_BYTES),
            (&mut self.share_name, MAX_NAME_BYTES),
            (&mut self.relative_target, MAX_PATH_BYTES),
            (&mut self.target_filename, MAX_PATH_BYTES),
            (&mut self.parent_image, MAX_PATH_BYTES),
            (&mut self.command_line, MAX_COMMAND_LINE_BYTES),
            (&mut self.process_guid, MAX_GUID_BYTES),
            (&mut self.parent_process_guid, MAX_GUID_BYTES),
        ]
    }

    fn strings(&self) -> impl Iterator<Item = &String> {
        [
            &self.host,
            &self.channel,
            &self.image,
            &self.image_name,
            &self.user,
            &self.user_sid,
            &self.share_name,
            &self.relative_target,
            &self.target_filename,
            &self.parent_image,
            &self.command_line,
            &self.process_guid,
            &self.parent_process_guid,
        ]
        .into_iter()
        .flatten()
    }

    /// Cut every string field to its cap (on a char boundary, ending in
    /// `…`) and drop spare capacity. True when a field was cut.
    pub fn cap_fields(&mut self) -> bool {
        let mut cut = false;
        for (field, max) in self.strings_mut() {
            if let Some(s) = field {
                cut |= cap_string(s, max);
            }
        }
        cut
    }

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
fn cap_string(s: &mut String, max: usize) -> bool {
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
pub(crate) mod tests;
