//! Text inputs: which parser reads which part.
//!
//! With an explicit format the whole text goes to that format's parser.
//! With [`Format::Auto`] the format is told per record, not once from the
//! first byte: the text is cut into segments of one format each, by the
//! first character of their lines, and each segment goes to its parser
//! with its line numbers. A garbage or XML line before a hundred JSON lines
//! is then one bad record, not a file read as the wrong format.
//!
//! | a line that starts with | begins a segment of | which runs through |
//! |---|---|---|
//! | `{` | JSON objects, one per line (flavour by each record's keys) | the last consecutive `{` (or blank) line |
//! | `<` | Windows event XML | the last line before a non-blank line that does not start with `<` outside an `<Event>`, or a complete JSON object line |
//! | `Record <n>` | one evtx_dump `-o json` block | the end of the JSON value after the header |
//! | anything else | `Key: Value` records | the last line before a line of one of the kinds above |
//!
//! Cutting is linear and costs no extra pass over JSON and `Key: Value`
//! runs: their parsers read lines until one of another kind (plus one JSON
//! check of a `{` line met inside an unterminated XML event).

use super::json::{self, first_line, newlines};
use super::xml::SpanScanner;
use super::{kv, xml, Format, HostEvent, ParseSummary};

/// Parse a text input (BOM already stripped) as `format`; `Auto` tells it
/// per segment. Returns the format to report: the given one, or for `Auto`
/// the format of the first segment that yielded a record (else of the
/// first segment).
pub(super) fn parse(
    name: &str,
    text: &str,
    format: Format,
    summary: &mut ParseSummary,
    out: &mut Vec<HostEvent>,
) -> Format {
    match format {
        Format::Auto => return parse_auto(name, text, summary, out),
        Format::Xml => xml::parse_document(name, text, 1, summary, out),
        Format::Winlogbeat | Format::Nxlog => {
            json::parse_lines(name, text, 1, format, |_| false, summary, out);
        }
        Format::EvtxDump => json::parse_evtx_dump(name, text, summary, out),
        Format::KeyValue => {
            kv::parse_records(name, text, 1, |_| false, summary, out);
        }
        Format::Evtx => unreachable!("binary, not text"),
    }
    format
}

/// What a non-blank line starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Json,
    Xml,
    DumpBlock,
    KeyValue,
}

fn kind(line: &str) -> Option<Kind> {
    let t = line.trim_start();
    Some(match t.as_bytes().first()? {
        b'{' => Kind::Json,
        b'<' => Kind::Xml,
        _ if json::is_dump_header(t) => Kind::DumpBlock,
        _ if t.trim_end().is_empty() => return None,
        _ => Kind::KeyValue,
    })
}

fn parse_auto(
    name: &str,
    text: &str,
    summary: &mut ParseSummary,
    out: &mut Vec<HostEvent>,
) -> Format {
    let mut reported: Option<Format> = None;
    let mut first: Option<Format> = None;
    let (mut pos, mut line_no) = (0, 1);
    while pos < text.len() {
        let rest = &text[pos..];
        let line = first_line(rest);
        let Some(k) = kind(line) else {
            pos += line.len();
            line_no += 1;
            continue;
        };
        let good_before = summary.parsed + summary.skipped;
        let (used, format) = match k {
            Kind::Json => {
                let until = |l: &str| kind(l).is_some_and(|k| k != Kind::Json);
                let n = json::parse_lines(name, rest, line_no, Format::Auto, until, summary, out);
                (n, json::detect_flavour(line.trim().as_bytes()))
            }
            Kind::Xml => {
                let n = xml_segment(rest);
                xml::parse_document(name, &rest[..n], line_no, summary, out);
                (n, Format::Xml)
            }
            Kind::DumpBlock => (
                json::dump_block(name, rest, line_no, summary, out),
                Format::EvtxDump,
            ),
            Kind::KeyValue => {
                let until = |l: &str| kind(l).is_some_and(|k| k != Kind::KeyValue);
                let n = kv::parse_records(name, rest, line_no, until, summary, out);
                (n, Format::KeyValue)
            }
        };
        // Every parser reads at least the line that chose it.
        debug_assert!(used >= line.len());
        let used = used.max(line.len());
        first.get_or_insert(format);
        if reported.is_none() && summary.parsed + summary.skipped > good_before {
            reported = Some(format);
        }
        line_no += newlines(&rest[..used]);
        pos += used;
    }
    reported.or(first).unwrap_or(Format::KeyValue)
}

/// Bytes of the XML segment at the start of `text`: through the last line
/// before a non-blank line that does not start with `<` while no `<Event>`
/// is open, or before a line that is a complete JSON object (inside an
/// unterminated event: a cut XML line followed by JSON lines).
fn xml_segment(text: &str) -> usize {
    let mut scan = SpanScanner::default();
    let mut n = 0;
    while n < text.len() {
        let line = first_line(&text[n..]);
        if n > 0 {
            let ends = match (kind(line), scan.open.is_some()) {
                (None | Some(Kind::Xml), false) => false,
                (Some(_), false) => true,
                (Some(Kind::Json), true) => json::is_object_line(line),
                (_, true) => false,
            };
            if ends {
                break;
            }
        }
        scan.feed(line.as_bytes(), n, |_| {});
        n += line.len();
    }
    n
}
