//! JSON host logs: NXLog (flat), Winlogbeat/ECS (nested `winlog.*`), and
//! evtx_dump (`Event.System`, `Event.EventData`).
//!
//! The three flavours share one streaming serde visitor that writes the
//! fields smbwatch needs straight into the field table and skips everything
//! else (`Message` alone is often 80% of an NXLog record) without building a
//! `serde_json::Value`: that is what keeps JSON parsing well above 200k
//! events/s. The flavour of each record is told by its keys (`winlog` →
//! Winlogbeat, `Event` → evtx_dump, else NXLog) unless the caller forces it.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::fields::{Flavour, Raw, Val};
use super::{
    clip_message, Format, HostEvent, Outcome, ParseSummary, RecordError, RecordLocation,
    RecordProblem,
};

/// Flavour of a JSON record from its first line (for [`super::detect_format`]).
pub(super) fn detect_flavour(first_line: &[u8]) -> Format {
    #[derive(Default)]
    struct Keys {
        winlog: bool,
        event: bool,
    }
    struct KeysVisitor;
    impl<'de> Visitor<'de> for KeysVisitor {
        type Value = Keys;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
            let mut k = Keys::default();
            while let Some(key) = map.next_key::<Key<'de>>()? {
                match key.0.as_ref() {
                    "winlog" => k.winlog = true,
                    "Event" => k.event = true,
                    _ => {}
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(k)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(first_line);
    match de.deserialize_map(KeysVisitor) {
        Ok(k) if k.winlog => Format::Winlogbeat,
        Ok(k) if k.event => Format::EvtxDump,
        // Not one line of JSON: pretty-printed output, which only evtx_dump
        // writes among the supported tools (its `Record N` header aside).
        Err(_) => Format::EvtxDump,
        Ok(_) => Format::Nxlog,
    }
}

/// One JSON object per line, up to the first line for which `until` is
/// true (the end of a run of JSON lines in a mixed input); returns the
/// bytes read. `first_line` is the line number of `text`'s first line in
/// the input. `format` forces a flavour (`Auto`: each record's own keys
/// tell).
pub(super) fn parse_lines(
    name: &str,
    text: &str,
    first_line: u64,
    format: Format,
    until: impl Fn(&str) -> bool,
    summary: &mut ParseSummary,
    out: &mut Vec<HostEvent>,
) -> usize {
    let forced = match format {
        Format::Winlogbeat => Some(Flavour::Winlogbeat),
        Format::Nxlog => Some(Flavour::Nxlog),
        Format::EvtxDump => Some(Flavour::Windows),
        _ => None,
    };
    let mut pos = 0;
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        if until(raw) {
            break;
        }
        pos += raw.len();
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let outcome = parse_record(line, forced).map_err(|problem| RecordError {
            input: name.to_string(),
            location: RecordLocation::Line(first_line + i as u64),
            problem,
        });
        summary.record(outcome, out);
    }
    pos
}

/// True for an evtx_dump `-o json` header line, `Record <n>`.
pub(super) fn is_dump_header(line: &str) -> bool {
    line.trim_end()
        .strip_prefix("Record ")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// evtx_dump output: `-o jsonl` (one object per line) or `-o json`
/// (`Record N` then a pretty-printed object).
pub(super) fn parse_evtx_dump(
    name: &str,
    text: &str,
    summary: &mut ParseSummary,
    out: &mut Vec<HostEvent>,
) {
    if !text.trim_start().starts_with("Record ") {
        parse_lines(name, text, 1, Format::EvtxDump, |_| false, summary, out);
        return;
    }
    let mut pos = 0;
    let mut line_no = 1;
    while pos < text.len() {
        let rest = &text[pos..];
        let used = if is_dump_header(first_line(rest)) {
            dump_block(name, rest, line_no, summary, out)
        } else {
            let line = first_line(rest);
            if is_object_line(line) {
                // A `-o jsonl` line among the blocks.
                let outcome =
                    parse_record(line, Some(Flavour::Windows)).map_err(|problem| RecordError {
                        input: name.to_string(),
                        location: RecordLocation::Line(line_no),
                        problem,
                    });
                summary.record(outcome, out);
            } else if !line.trim().is_empty() {
                let e = RecordError {
                    input: name.to_string(),
                    location: RecordLocation::Line(line_no),
                    problem: RecordProblem::Json("text outside a `Record N` block".into()),
                };
                summary.record(Err(e), out);
            }
            line.len()
        };
        line_no += newlines(&rest[..used]);
        pos += used;
    }
}

/// The first line of `text`, with its newline.
pub(super) fn first_line(text: &str) -> &str {
    text.find('\n').map_or(text, |i| &text[..=i])
}

/// Newlines in `text`.
pub(super) fn newlines(text: &str) -> u64 {
    text.bytes().filter(|&b| b == b'\n').count() as u64
}

/// One `Record N` block at the start of `text` (header on line `hdr`): the
/// header line, then one JSON value, however it is laid out. Returns the
/// bytes it spans (through the end of the value's last line). A body that
/// is not JSON is one bad record spanning up to the next header.
pub(super) fn dump_block(
    name: &str,
    text: &str,
    hdr: u64,
    summary: &mut ParseSummary,
    out: &mut Vec<HostEvent>,
) -> usize {
    let header = first_line(text).len();
    let body = &text[header..];
    let err = |problem| RecordError {
        input: name.to_string(),
        location: RecordLocation::Line(hdr),
        problem,
    };
    let mut values = serde_json::Deserializer::from_str(body).into_iter::<IgnoredAny>();
    match values.next() {
        Some(Ok(_)) => {
            let end = values.byte_offset();
            let after = first_line(&body[end..]);
            let outcome = if after.trim().is_empty() {
                parse_record(&body[..end], Some(Flavour::Windows))
            } else {
                Err(RecordProblem::Json(format!(
                    "text after the record: {:?}",
                    super::clip(after.trim())
                )))
            };
            summary.record(outcome.map_err(err), out);
            header + end + after.len()
        }
        other => {
            let problem = match other {
                Some(Err(e)) => RecordProblem::Json(clip_message(e)),
                _ => RecordProblem::Json("`Record N` header without a record".into()),
            };
            summary.record(Err(err(problem)), out);
            // Resynchronise at the next header, or at a line that is a
            // whole JSON object (no line of a pretty-printed body is).
            let mut used = header;
            while used < text.len() {
                let line = first_line(&text[used..]);
                if is_dump_header(line) || is_object_line(line) {
                    break;
                }
                used += line.len();
            }
            used
        }
    }
}

/// True when `line` is one whole JSON object (and nothing else).
pub(super) fn is_object_line(line: &str) -> bool {
    if !line.trim_start().starts_with('{') {
        return false;
    }
    let mut d = serde_json::Deserializer::from_str(line);
    de::Deserialize::deserialize(&mut d)
        .map(|IgnoredAny| ())
        .and_then(|()| d.end())
        .is_ok()
}

/// Parse one JSON record. `forced` overrides the flavour told by the keys.
pub(super) fn parse_record(text: &str, forced: Option<Flavour>) -> Result<Outcome, RecordProblem> {
    let mut raw = Raw::new(Flavour::Nxlog);
    let mut de = serde_json::Deserializer::from_str(text);
    let seen = de
        .deserialize_map(ObjVisitor {
            raw: &mut raw,
            ctx: Ctx::Top,
        })
        .and_then(|seen| de.end().map(|()| seen))
        .map_err(|e| RecordProblem::Json(clip_message(e)))?;
    raw.flavour = forced.unwrap_or(if seen.winlog {
        Flavour::Winlogbeat
    } else if seen.event {
        Flavour::Windows
    } else {
        Flavour::Nxlog
    });
    raw.finish()
}

/// Where in the record the visitor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctx {
    /// Top level: NXLog keys, or the roots of the nested flavours.
    Top,
    /// evtx_dump `Event`.
    Event,
    /// evtx_dump `Event.System`.
    System,
    /// `System.Provider` (attributes).
    Provider,
    /// `System.TimeCreated` (attributes).
    TimeCreated,
    /// `EventData` / `winlog.event_data`.
    EventData,
    /// Winlogbeat `winlog`.
    Winlog,
    /// ECS `user` (the event's subject; Winlogbeat's `winlog.user` is skipped).
    EcsUser,
    /// ECS `event`.
    EcsEvent,
    /// ECS `host`.
    EcsHost,
    /// ECS `process`.
    EcsProcess,
    /// ECS `process.parent`.
    EcsParent,
    /// ECS `source`.
    EcsSource,
    /// ECS `destination`.
    EcsDestination,
    /// ECS `network`.
    EcsNetwork,
}

/// What the visitor saw (to tell the flavour).
#[derive(Default)]
struct Seen {
    winlog: bool,
    event: bool,
}

/// A map key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A scalar value; objects contribute their `#text` (evtx renders
/// `<EventID Qualifiers="0">4624</EventID>` as `{"#attributes":…,"#text":4624}`);
/// arrays and other objects are skipped (`None`).
struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Option<Val<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Option<Val<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Val::Str(Cow::Borrowed(v))))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Val::Str(Cow::Owned(v.to_string()))))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(Val::Str(Cow::Owned(v))))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(Val::U64(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(Val::I64(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(Val::F64(v)))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(Val::Bool(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut text = None;
        while let Some(k) = map.next_key::<Key<'de>>()? {
            if k.0 == "#text" {
                text = map.next_value_seed(ScalarSeed)?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(text)
    }
}

/// Visits an object in context `ctx`, writing fields into `raw`.
struct ObjVisitor<'r, 'de> {
    raw: &'r mut Raw<'de>,
    ctx: Ctx,
}

/// A nested value visited as an object if it is one (anything else skipped).
struct NestSeed<'r, 'de> {
    raw: &'r mut Raw<'de>,
    ctx: Ctx,
}

impl<'de> DeserializeSeed<'de> for NestSeed<'_, 'de> {
    type Value = Seen;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Seen, D::Error> {
        d.deserialize_any(ObjVisitor {
            raw: self.raw,
            ctx: self.ctx,
        })
    }
}

/// What to do with one key in a context.
enum Action {
    Nest(Ctx),
    Scalar,
    Skip,
}

fn action(ctx: Ctx, key: &str) -> Action {
    use Action::*;
    match (ctx, key) {
        (Ctx::Top, "Event") => Nest(Ctx::Event),
        (Ctx::Top, "winlog") => Nest(Ctx::Winlog),
        (Ctx::Top, "event") => Nest(Ctx::EcsEvent),
        (Ctx::Top, "host") => Nest(Ctx::EcsHost),
        (Ctx::Top, "process") => Nest(Ctx::EcsProcess),
        (Ctx::Top, "source") => Nest(Ctx::EcsSource),
        (Ctx::Top, "destination") => Nest(Ctx::EcsDestination),
        (Ctx::Top, "user") => Nest(Ctx::EcsUser),
        (Ctx::Top, "network") => Nest(Ctx::EcsNetwork),
        // NXLog's rendered text: large and never needed.
        (Ctx::Top, "Message" | "message") => Skip,
        (Ctx::Event, "System") => Nest(Ctx::System),
        (Ctx::Event, "EventData") => Nest(Ctx::EventData),
        (Ctx::System, "Provider" | "Provider_attributes") => Nest(Ctx::Provider),
        (Ctx::System, "TimeCreated" | "TimeCreated_attributes") => Nest(Ctx::TimeCreated),
        (Ctx::Provider | Ctx::TimeCreated, "#attributes") => Nest(ctx),
        (Ctx::Winlog, "event_data") => Nest(Ctx::EventData),
        // The account the *logging* service runs as (SYSTEM for Sysmon),
        // not the event's subject: the record's own `user` and event data
        // name that.
        (Ctx::Winlog, "user") => Skip,
        (Ctx::EcsProcess, "parent") => Nest(Ctx::EcsParent),
        (Ctx::Winlog | Ctx::EcsProcess | Ctx::EventData | Ctx::System, "#attributes") => Skip,
        (
            Ctx::Top
            | Ctx::System
            | Ctx::Provider
            | Ctx::TimeCreated
            | Ctx::EventData
            | Ctx::Winlog
            | Ctx::EcsUser
            | Ctx::EcsEvent
            | Ctx::EcsHost
            | Ctx::EcsProcess
            | Ctx::EcsParent
            | Ctx::EcsSource
            | Ctx::EcsDestination
            | Ctx::EcsNetwork,
            _,
        ) => Scalar,
        (Ctx::Event, _) => Skip,
    }
}

impl<'de> ObjVisitor<'_, 'de> {
    fn scalar(&mut self, key: &str, v: Val<'de>) {
        let raw = &mut *self.raw;
        match self.ctx {
            Ctx::Top => raw.set_flat(key, v),
            Ctx::System => {
                raw.set_system(key, v);
            }
            Ctx::Provider if key == "Name" => {
                raw.set_system("Provider", v);
            }
            Ctx::TimeCreated if key == "SystemTime" => {
                raw.set_system("SystemTime", v);
            }
            Ctx::EventData => raw.set_data(key, v),
            Ctx::Winlog => {
                match key {
                    "channel" => raw.set_system("Channel", v),
                    "computer_name" => raw.set_system("Computer", v),
                    "event_id" => raw.set_system("EventID", v),
                    "record_id" => raw.set_system("EventRecordID", v),
                    "provider_name" => raw.set_system("Provider", v),
                    // `System/TimeCreated/@SystemTime` as Winlogbeat names it.
                    "time_created" => raw.set_system("SystemTime", v),
                    _ => false,
                };
            }
            Ctx::EcsUser => match key {
                "name" => raw.ecs.user_name = Some(v),
                "domain" => raw.ecs.user_domain = Some(v),
                _ => {}
            },
            Ctx::EcsEvent if key == "code" => raw.ecs.event_code = Some(v),
            Ctx::EcsHost => match key {
                "name" => raw.ecs.host_name = Some(v),
                "hostname" if raw.ecs.host_name.is_none() => raw.ecs.host_name = Some(v),
                _ => {}
            },
            Ctx::EcsProcess => match key {
                "pid" => raw.ecs.pid = Some(v),
                "executable" => raw.ecs.executable = Some(v),
                "command_line" => raw.ecs.command_line = Some(v),
                _ => {}
            },
            Ctx::EcsParent if key == "executable" => raw.ecs.parent_executable = Some(v),
            Ctx::EcsSource => match key {
                "ip" => raw.ecs.src_ip = Some(v),
                "port" => raw.ecs.src_port = Some(v),
                _ => {}
            },
            Ctx::EcsDestination => match key {
                "ip" => raw.ecs.dst_ip = Some(v),
                "port" => raw.ecs.dst_port = Some(v),
                _ => {}
            },
            Ctx::EcsNetwork => match key {
                "direction" => raw.ecs.direction = Some(v),
                "transport" => raw.ecs.transport = Some(v),
                "iana_number" => raw.ecs.iana_number = Some(v),
                _ => {}
            },
            _ => {}
        }
    }
}

impl<'de> Visitor<'de> for ObjVisitor<'_, 'de> {
    type Value = Seen;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Seen, A::Error> {
        let mut seen = Seen::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let key = key.0;
            match action(self.ctx, &key) {
                Action::Skip => {
                    map.next_value::<IgnoredAny>()?;
                }
                Action::Nest(ctx) => {
                    if self.ctx == Ctx::Top {
                        seen.winlog |= ctx == Ctx::Winlog;
                        seen.event |= ctx == Ctx::Event;
                    }
                    map.next_value_seed(NestSeed { raw: self.raw, ctx })?;
                }
                Action::Scalar => {
                    if self.ctx == Ctx::Top && key == "@timestamp" {
                        if let Some(v) = map.next_value_seed(ScalarSeed)? {
                            self.raw.set_at_timestamp(v);
                        }
                        continue;
                    }
                    if let Some(v) = map.next_value_seed(ScalarSeed)? {
                        self.scalar(&key, v);
                    }
                }
            }
        }
        Ok(seen)
    }

    // A nested key whose value is not an object (NXLog's `"host": "wec…"`,
    // evtx's empty `"EventData": null`): nothing to read.
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Seen, E> {
        Ok(Seen::default())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Seen, E> {
        Ok(Seen::default())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Seen, E> {
        Ok(Seen::default())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Seen, E> {
        Ok(Seen::default())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Seen, E> {
        Ok(Seen::default())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Seen, E> {
        Ok(Seen::default())
    }
    fn visit_none<E: de::Error>(self) -> Result<Seen, E> {
        Ok(Seen::default())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Seen, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Seen::default())
    }
}
