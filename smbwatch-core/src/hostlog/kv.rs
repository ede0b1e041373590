//! Flat `Key: Value` records, as analysts paste them and as the seed
//! write-up shows them: one field per line, records separated by blank lines
//! or `---`. Keys are the Windows field names (`EventID`, `TimeCreated` or
//! `UtcTime`, `Channel`, `Hostname`/`Computer`, then event data names).
//! `#` starts a comment line; values may be wrapped in matching quotes.

use super::fields::{Flavour, Raw, Val};
use super::{clip, HostEvent, ParseSummary, RecordError, RecordLocation, RecordProblem};

/// Every record of a `Key: Value` document, up to the first line for
/// which `until` is true (the end of a run in a mixed input); returns the
/// bytes read. `first_line_no` is the line number of `text`'s first line
/// in the input.
pub(super) fn parse_records(
    name: &str,
    text: &str,
    first_line_no: u64,
    until: impl Fn(&str) -> bool,
    summary: &mut ParseSummary,
    out: &mut Vec<HostEvent>,
) -> usize {
    let mut first_line: Option<u64> = None;
    let mut raw = Raw::new(Flavour::Windows);
    let mut problem: Option<RecordProblem> = None;
    let flush = |first: &mut Option<u64>,
                 raw: &mut Raw<'_>,
                 problem: &mut Option<RecordProblem>,
                 summary: &mut ParseSummary,
                 out: &mut Vec<HostEvent>| {
        let Some(line) = first.take() else { return };
        let fields = std::mem::replace(raw, Raw::new(Flavour::Windows));
        let result = match problem.take() {
            Some(p) => Err(p),
            None => fields.finish(),
        };
        summary.record(
            result.map_err(|problem| RecordError {
                input: name.to_string(),
                location: RecordLocation::Line(line),
                problem,
            }),
            out,
        );
    };
    let mut pos = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if until(line) {
            break;
        }
        pos += line.len();
        let n = first_line_no + i as u64;
        let t = line.trim();
        if t.is_empty() || t == "---" {
            flush(&mut first_line, &mut raw, &mut problem, summary, out);
            continue;
        }
        if t.starts_with('#') {
            continue;
        }
        first_line.get_or_insert(n);
        if problem.is_some() {
            continue;
        }
        match t.split_once(':') {
            Some((k, v)) if !k.trim().is_empty() && !k.trim().contains(char::is_whitespace) => {
                raw.set_flat(k.trim(), Val::str(unquote(v.trim())));
            }
            _ => {
                problem = Some(RecordProblem::NotKeyValue {
                    line: n,
                    text: clip(t),
                })
            }
        }
    }
    flush(&mut first_line, &mut raw, &mut problem, summary, out);
    pos
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    v
}
