//! Windows event XML, as `wevtutil qe ... /f:xml`, Windows Event Forwarding
//! and Event Viewer exports write it: `<Event xmlns=…><System>…</System>
//! <EventData><Data Name="…">…</Data></EventData></Event>`, one or many,
//! bare, concatenated, one per line or inside an `<Events>` wrapper.
//!
//! The document is first cut into `<Event>…</Event>` spans (events do not
//! nest), and each span is parsed on its own with quick-xml: a malformed
//! event costs only itself, and parsing resumes at the next `<Event`.

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::fields::{Flavour, Raw, Val};
use super::{
    clip_message, HostEvent, Outcome, ParseSummary, RecordError, RecordLocation, RecordProblem,
};

/// Byte spans of `<Event …>…</Event>` elements, or of a trailing
/// unterminated `<Event` (which then fails to parse and is reported).
///
/// One pass over the `<` of the document: an `<Event` start opens a span
/// (closing any open one there, so a self-closing or broken start gets an
/// error of its own), `</Event>` closes the open span, an end tag with none
/// open is ignored. Linear in the input whatever it holds: a line of
/// repeated `<Event>` starts used to search the rest of the line for
/// `</Event>` once per start.
fn event_spans(doc: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut scan = SpanScanner::default();
    scan.feed(doc.as_bytes(), 0, |s| spans.push(s));
    if let Some(start) = scan.open {
        spans.push((start, doc.len()));
    }
    spans
}

/// The state of the `<Event>` cutter between pieces of a document.
#[derive(Default)]
pub(super) struct SpanScanner {
    /// Start of the span being read, if one is open.
    pub open: Option<usize>,
}

impl SpanScanner {
    /// Scan `b` (which starts at byte `base` of the document), calling
    /// `span` for every span closed in it.
    pub fn feed(&mut self, b: &[u8], base: usize, mut span: impl FnMut((usize, usize))) {
        const END: &[u8] = b"</Event>";
        let mut at = 0;
        while let Some(p) = b[at..].iter().position(|&c| c == b'<').map(|p| p + at) {
            at = p + 1;
            let rest = &b[p..];
            if is_event_start(rest) {
                if let Some(start) = self.open.replace(base + p) {
                    span((start, base + p));
                }
                at = p + 6;
            } else if rest.starts_with(END) {
                if let Some(start) = self.open.take() {
                    span((start, base + p + END.len()));
                }
                at = p + END.len();
            }
        }
    }
}

/// `<Event` followed by whitespace, `>` or `/` (not `<Events>`, `<EventData>`, `<EventID>`).
fn is_event_start(b: &[u8]) -> bool {
    b.starts_with(b"<Event") && matches!(b.get(6), Some(b' ' | b'>' | b'\t' | b'\r' | b'\n' | b'/'))
}

/// A whole document: every `<Event>` in it. Records are named by the line
/// their `<Event` starts on; `first_line` is the line number of `doc`'s
/// first line in the input.
pub(super) fn parse_document(
    name: &str,
    doc: &str,
    first_line: u64,
    summary: &mut ParseSummary,
    out: &mut Vec<HostEvent>,
) {
    let spans = event_spans(doc);
    let err = |line, problem| RecordError {
        input: name.to_string(),
        location: RecordLocation::Line(line),
        problem,
    };
    if spans.is_empty() && !doc.trim().is_empty() {
        let problem = RecordProblem::Xml("no <Event> element found".into());
        summary.record(Err(err(first_line, problem)), out);
        return;
    }
    // Line numbers counted incrementally: spans come in document order.
    let (mut line, mut counted) = (first_line, 0);
    for (s, e) in spans {
        line += super::json::newlines(&doc[counted..s]);
        counted = s;
        let outcome = parse_event(&doc[s..e]).map_err(|p| err(line, p));
        summary.record(outcome, out);
    }
}

/// Exactly one `<Event>` (a forwarded line).
pub(super) fn parse_single(text: &str) -> Result<Outcome, RecordProblem> {
    let spans = event_spans(text);
    match spans.as_slice() {
        [(s, e)] if text[..*s].trim().is_empty() && text[*e..].trim().is_empty() => {
            parse_event(&text[*s..*e])
        }
        [] => Err(RecordProblem::Xml("no <Event> element found".into())),
        _ => Err(RecordProblem::Xml(
            "expected exactly one <Event> element on the line".into(),
        )),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    None,
    System,
    EventData,
}

/// Which field the text being read belongs to.
enum Pending {
    System(&'static str),
    Data(String),
}

fn xml_err(e: impl std::fmt::Display) -> RecordProblem {
    RecordProblem::Xml(clip_message(e))
}

/// An attribute's value. Owned: quick-xml ties attribute borrows to the
/// start tag, not to the input; the few attributes read per event are short.
///
/// quick-xml's duplicate check compares each attribute with every earlier
/// one (quadratic in a crafted element's attribute count); it is off, and
/// the first attribute of a name wins.
fn attr(e: &BytesStart<'_>, name: &str) -> Result<Option<String>, RecordProblem> {
    let mut attrs = e.attributes();
    attrs.with_checks(false);
    for a in attrs {
        let a = a.map_err(xml_err)?;
        if a.key.local_name().as_ref() == name.as_bytes() {
            return Ok(Some(a.unescape_value().map_err(xml_err)?.into_owned()));
        }
    }
    Ok(None)
}

/// One `<Event>…</Event>` span.
fn parse_event(xml: &str) -> Result<Outcome, RecordProblem> {
    let mut raw = Raw::new(Flavour::Windows);
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut section = Section::None;
    let mut pending: Option<(Pending, Option<Cow<'_, str>>)> = None;
    let mut depth = 0usize;
    let mut closed = false;
    loop {
        match reader.read_event().map_err(xml_err)? {
            Event::Start(e) => {
                depth += 1;
                let local = e.local_name();
                match (section, local.as_ref()) {
                    (_, b"System") if depth == 2 => section = Section::System,
                    (_, b"EventData") if depth == 2 => section = Section::EventData,
                    (Section::System, b"Provider") => system_attrs(&mut raw, &e)?,
                    (Section::System, b"TimeCreated") => system_attrs(&mut raw, &e)?,
                    (Section::System, b"EventID") => {
                        pending = Some((Pending::System("EventID"), None))
                    }
                    (Section::System, b"Channel") => {
                        pending = Some((Pending::System("Channel"), None))
                    }
                    (Section::System, b"Computer") => {
                        pending = Some((Pending::System("Computer"), None))
                    }
                    (Section::System, b"EventRecordID") => {
                        pending = Some((Pending::System("EventRecordID"), None))
                    }
                    (Section::EventData, b"Data") => {
                        if let Some(n) = attr(&e, "Name")? {
                            pending = Some((Pending::Data(n), None));
                        }
                    }
                    _ => {}
                }
            }
            Event::Empty(e) => {
                if section == Section::System {
                    system_attrs(&mut raw, &e)?;
                }
            }
            Event::Text(t) => {
                if let Some((_, acc)) = pending.as_mut() {
                    append(acc, t.unescape().map_err(xml_err)?);
                }
            }
            Event::CData(c) => {
                if let Some((_, acc)) = pending.as_mut() {
                    let s = std::str::from_utf8(c.into_inner().as_ref())
                        .map(str::to_string)
                        .map_err(xml_err)?;
                    append(acc, Cow::Owned(s));
                }
            }
            Event::End(e) => {
                if let Some((field, acc)) = pending.take() {
                    let v = Val::Str(acc.unwrap_or(Cow::Borrowed("")));
                    match field {
                        Pending::System(n) => {
                            raw.set_system(n, v);
                        }
                        Pending::Data(n) => raw.set_data(&n, v),
                    }
                }
                if depth == 2 && matches!(e.local_name().as_ref(), b"System" | b"EventData") {
                    section = Section::None;
                }
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    closed = true;
                    break;
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
    if !closed {
        return Err(RecordProblem::Xml("unterminated <Event> element".into()));
    }
    raw.finish()
}

fn append<'a>(acc: &mut Option<Cow<'a, str>>, piece: Cow<'a, str>) {
    match acc {
        None => *acc = Some(piece),
        Some(prev) => prev.to_mut().push_str(&piece),
    }
}

fn system_attrs(raw: &mut Raw<'_>, e: &BytesStart<'_>) -> Result<(), RecordProblem> {
    match e.local_name().as_ref() {
        b"Provider" => {
            if let Some(n) = attr(e, "Name")? {
                raw.set_system("Provider", Val::Str(Cow::Owned(n)));
            }
        }
        b"TimeCreated" => {
            if let Some(t) = attr(e, "SystemTime")? {
                raw.set_system("SystemTime", Val::Str(Cow::Owned(t)));
            }
        }
        // The account that logged the event: what a 7045 names its
        // creator by.
        b"Security" => {
            if let Some(u) = attr(e, "UserID")? {
                raw.set_system("UserID", Val::Str(Cow::Owned(u)));
            }
        }
        _ => {}
    }
    Ok(())
}
