//! Alerts as syslog messages (no framing): RFC 5424 and RFC 3164. Pure:
//! everything comes from the alert's ECS document (the same one the JSON
//! line is) and the configuration.

use chrono::{DateTime, Utc};

use super::config::{Facility, SyslogConfig, SyslogFormat};
use super::target::Target;
use crate::alert::ecs::{Document, Scan};
use crate::alert::sensor::system_hostname;

/// A header field made safe: non-printable characters become `_`, empty
/// becomes the NILVALUE `-`, long values are cut at `max`.
fn header_field(s: &str, max: usize) -> String {
    let v: String = s
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max)
        .collect();
    if v.is_empty() {
        "-".into()
    } else {
        v
    }
}

/// Host-log fields are attacker-influenced: no field may start a new log
/// line or make a viewer show text in another order than it was written.
/// Line breaks and every other C0/C1 control (and DEL) become spaces, as do
/// the Unicode line and paragraph separators (U+2028, U+2029); the
/// invisible bidirectional controls (U+200E, U+200F, U+061C, U+202A-U+202E,
/// U+2066-U+2069: "Trojan Source" reordering, `exe.txt` shown for `txt.exe`)
/// become U+FFFD, so the reader sees that something was there.
fn clean_text(s: &str) -> String {
    s.chars().map(clean_char).collect()
}

fn clean_char(c: char) -> char {
    match c {
        '\u{2028}' | '\u{2029}' => ' ',
        c if c.is_control() => ' ',
        '\u{200E}'
        | '\u{200F}'
        | '\u{061C}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}' => char::REPLACEMENT_CHARACTER,
        c => c,
    }
}

/// RFC 5424 §6.3.3: inside PARAM-VALUE, `"`, `\` and `]` are escaped with a
/// backslash (`cleaned` went through [`clean_text`]).
fn escape_into(out: &mut String, cleaned: &str) {
    for c in cleaned.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Formats alerts as syslog messages (no framing). Pure: the time comes
/// from the alert, the rest from the fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Formatter {
    /// RFC 5424 or 3164.
    pub format: SyslogFormat,
    /// Facility of every message.
    pub facility: Facility,
    /// HOSTNAME.
    pub hostname: String,
    /// APP-NAME / TAG.
    pub app_name: String,
    /// PROCID (our pid).
    pub procid: u32,
    /// SD-ID of the structured data element.
    pub sd_id: String,
    /// Messages go to the local syslog socket: RFC 3164 messages then omit
    /// HOSTNAME, as glibc's syslog(3) does, because the local daemon
    /// (rsyslog's imuxsock, journald) expects none there and adds its own.
    pub local_socket: bool,
    /// Longest message in bytes (see [`Formatter::message`]).
    pub max_message: usize,
}

impl Formatter {
    /// The formatter for a configuration and its validated target: system
    /// host name and this process's id unless configured.
    pub fn from_config<T>(cfg: &SyslogConfig, target: &Target<T>) -> Self {
        let hostname = cfg
            .hostname
            .clone()
            .or_else(system_hostname)
            .unwrap_or_default();
        Self {
            format: cfg.message_format(),
            facility: cfg.facility,
            hostname,
            app_name: cfg.app_name.clone(),
            procid: std::process::id(),
            sd_id: cfg.sd_id.clone(),
            local_socket: target.is_local(),
            max_message: cfg.max_message_for(target),
        }
    }

    /// PRI: facility × 8 + severity (RFC 5424 §6.2.1).
    pub fn pri(&self, doc: &Document<'_>) -> u8 {
        self.facility.code() * 8 + doc.event.severity.syslog()
    }

    /// The message in the configured format, at most `max_message` bytes.
    pub fn format(&self, doc: &Document<'_>) -> String {
        self.message(doc).text
    }

    /// The message, and whether it had to be shortened to fit
    /// `max_message`.
    ///
    /// RFC 5424: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG`,
    /// MSGID the `rule.id`.
    /// RFC 3164: `<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: KIND: MSG [SD]` (no
    /// `HOST ` on a local socket); the time is UTC (3164 has no zone); the
    /// structured data, which 3164 lacks, follows the message so the fields
    /// are still there for a parser.
    ///
    /// A message longer than `max_message` is shortened so that it stays
    /// well-formed: MSG first (down to [`MSG_KEEP`] bytes), then the longest
    /// SD values, halving each (down to [`VALUE_KEEP`] bytes), then SD
    /// parameters from the last, then the rest of MSG. Every cut is on a
    /// character boundary and ends with `…`.
    pub fn message(&self, doc: &Document<'_>) -> Message {
        let head = match self.format {
            SyslogFormat::Rfc5424 => format!(
                "<{}>1 {} {} {} {} {} ",
                self.pri(doc),
                doc.timestamp,
                header_field(&self.hostname, 255),
                header_field(&self.app_name, 48),
                self.procid,
                header_field(doc.rule.id, 32),
            ),
            SyslogFormat::Rfc3164 => {
                let tag: String = self
                    .app_name
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
                    .take(32)
                    .collect();
                let host = if self.local_socket {
                    String::new()
                } else {
                    header_field(&self.hostname, 255) + " "
                };
                format!(
                    "<{}>{} {host}{}[{}]: {}: ",
                    self.pri(doc),
                    rfc3164_time(doc.timestamp.time()),
                    if tag.is_empty() { "smbwatch" } else { &tag },
                    self.procid,
                    doc.rule.id,
                )
            }
        };
        let mut params = sd_params(doc, self.max_message);
        let mut msg = clip(doc.message.to_owned(), self.max_message);
        let truncated = self.fit(head.len(), &mut params, &mut msg);
        let sd = self.sd_element(&params);
        let mut text = match self.format {
            SyslogFormat::Rfc5424 => format!("{head}{sd} {msg}"),
            SyslogFormat::Rfc3164 => format!("{head}{msg} {sd}"),
        };
        // Only a header longer than `max_message` gets here (validation
        // keeps `max_message` at 480 or more, past the longest header).
        if text.len() > self.max_message {
            shorten(&mut text, self.max_message);
        }
        Message { text, truncated }
    }

    /// Shortens `params` and `msg` until a message with a `head`-byte
    /// header fits `max_message`; true if anything was cut.
    fn fit(&self, head: usize, params: &mut Vec<(&'static str, String)>, msg: &mut String) -> bool {
        // Each parameter's length in the element, kept up to date as values
        // shrink, so that fitting costs about twice the text once.
        let mut lens: Vec<usize> = params.iter().map(param_len).collect();
        let sd = |lens: &[usize]| self.sd_id.len() + 2 + lens.iter().sum::<usize>();
        let fits = |lens: &[usize], msg: usize| head + sd(lens) + 1 + msg <= self.max_message;
        if fits(&lens, msg.len()) {
            return false;
        }
        let keep = msg.len().min(MSG_KEEP);
        while !fits(&lens, keep) {
            let longest = (0..params.len())
                .filter(|&i| params[i].1.len() > VALUE_KEEP)
                .max_by_key(|&i| params[i].1.len());
            let Some(i) = longest else { break };
            let v = &mut params[i].1;
            let half = (v.len() / 2).max(VALUE_KEEP);
            shorten(v, half);
            lens[i] = param_len(&params[i]);
        }
        while !fits(&lens, keep) && params.pop().is_some() {
            lens.pop();
        }
        let room = self.max_message.saturating_sub(head + sd(&lens) + 1);
        if msg.len() > room {
            shorten(msg, room);
        }
        true
    }

    /// One SD-ELEMENT `[SD-ID name="value" ...]` with the alert's fields
    /// (see [`SD_PARAMS`]), whatever its length.
    pub fn structured_data(&self, doc: &Document<'_>) -> String {
        self.sd_element(&sd_params(doc, usize::MAX))
    }

    fn sd_element(&self, params: &[(&str, String)]) -> String {
        let mut sd = format!("[{}", self.sd_id);
        for (name, value) in params {
            sd.push(' ');
            sd.push_str(name);
            sd.push_str("=\"");
            escape_into(&mut sd, value);
            sd.push('"');
        }
        sd.push(']');
        sd
    }
}

/// A formatted syslog message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The message (no framing).
    pub text: String,
    /// It was shortened to fit `max_message`.
    pub truncated: bool,
}

/// MSG keeps at least this many bytes before SD values are shortened.
pub const MSG_KEEP: usize = 256;
/// An SD value is not shortened below this many bytes.
pub const VALUE_KEEP: usize = 16;

/// Cuts `s` to at most `max` bytes on a character boundary, ending with `…`
/// when there is room for it.
fn shorten(s: &mut String, max: usize) {
    const MARK: char = '…';
    if s.len() <= max {
        return;
    }
    let room = max.saturating_sub(MARK.len_utf8());
    let mut end = if max >= MARK.len_utf8() { room } else { max };
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    if max >= MARK.len_utf8() {
        s.push(MARK);
    }
}

/// The alert's structured-data parameters, cleaned, in output order; none
/// longer than `max` bytes (nothing longer could fit in a message).
fn sd_params(doc: &Document<'_>, max: usize) -> Vec<(&'static str, String)> {
    SD_PARAMS
        .iter()
        .filter_map(|(name, value)| value(doc).map(|v| (*name, clip(v, max))))
        .collect()
}

/// `s` cleaned, cut to `max` bytes first: cleaning never lengthens text,
/// and host-log fields can be megabytes long.
fn clip(mut s: String, max: usize) -> String {
    shorten(&mut s, max);
    clean_text(&s)
}

/// Length of ` name="escaped value"`.
fn param_len((name, value): &(&str, String)) -> usize {
    let escapes = value
        .bytes()
        .filter(|b| matches!(b, b'"' | b'\\' | b']'))
        .count();
    name.len() + value.len() + escapes + 4
}

/// How a structured-data parameter gets its value from the ECS document.
type SdValue = fn(&Document<'_>) -> Option<String>;

/// The structured-data parameters in output order: the SD-PARAM name and
/// the document field it carries (absent fields are left out). The
/// document is the one place that maps alert fields; one line here puts
/// one of them into syslog.
const SD_PARAMS: &[(&str, SdValue)] = &[
    ("kind", |d| Some(d.rule.id.into())),
    ("id", |d| Some(d.event.id.clone())),
    ("severity", |d| Some(d.event.severity.name().into())),
    ("src", |d| d.source.ip.map(|ip| ip.to_string())),
    ("dst", |d| d.destination.ip.map(|ip| ip.to_string())),
    ("dport", |d| d.destination.port.map(|p| p.to_string())),
    ("distinct_destinations", |d| {
        scan(d, |s| s.distinct_destinations.to_string())
    }),
    ("syns", |d| scan(d, |s| s.syns.to_string())),
    ("fragmented_syns", |d| {
        d.smbwatch
            .scan
            .as_ref()
            .filter(|s| s.fragmented_syns > 0)
            .map(|s| s.fragmented_syns.to_string())
    }),
    ("accepted", |d| scan(d, |s| s.accepted.to_string())),
    ("refused", |d| scan(d, |s| s.refused.to_string())),
    ("window_secs", |d| scan(d, |s| s.window_secs.to_string())),
    ("community_id", |d| {
        d.network.community_id.map(str::to_owned)
    }),
    ("techniques", |d| {
        let t = &d.threat.technique;
        let ids: Vec<_> = t
            .refs
            .id
            .iter()
            .chain(&t.subtechnique.id)
            .copied()
            .collect();
        (!ids.is_empty()).then(|| ids.join(","))
    }),
    ("event_code", |d| d.event.code.map(|c| c.0.to_string())),
    ("process", |d| d.process.name.map(str::to_owned)),
    ("pid", |d| d.process.pid.map(|p| p.to_string())),
    ("user", |d| d.user.name.map(str::to_owned)),
    ("domain", |d| d.user.domain.clone()),
    ("user_id", |d| d.user.id.map(str::to_owned)),
    ("host", |d| d.host.name.clone()),
    ("share", |d| d.smbwatch.share.map(str::to_owned)),
    ("workstation", |d| d.source.domain.clone()),
    ("file", |d| d.file.path.clone()),
    ("pipe", |d| d.smb.named_pipe.clone()),
    ("rpc", |d| d.rpc.interface.name.clone()),
    ("operation", |d| {
        (!d.rpc.operation.is_empty()).then(|| d.rpc.operation.join(","))
    }),
    ("ifindex", |d| {
        d.observer.ingress.interface.id.map(|i| i.0.to_string())
    }),
    ("iface", |d| {
        d.observer.ingress.interface.name.map(str::to_owned)
    }),
    ("vlan", |d| {
        d.observer.ingress.vlan.id.map(|v| v.0.to_string())
    }),
    ("original_ts", |d| d.smbwatch.original_timestamp.clone()),
];

fn scan(d: &Document<'_>, f: impl Fn(&Scan) -> String) -> Option<String> {
    d.smbwatch.scan.as_ref().map(f)
}

/// `Mmm dd hh:mm:ss` with a space-padded day (RFC 3164 §4.1.2).
fn rfc3164_time(ts: DateTime<Utc>) -> String {
    ts.format("%b %e %H:%M:%S").to_string()
}

#[cfg(test)]
#[path = "format_tests.rs"]
pub(super) mod tests;
