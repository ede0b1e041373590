//! Alerts as syslog messages (no framing): RFC 5424 and RFC 3164. Pure:
//! the time comes from the alert, the rest from its fields and the
//! configuration.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::config::{Facility, SyslogConfig, SyslogFormat};
use super::target::Target;
use crate::alert::ecs::{Document, Scan};
use crate::alert::Alert;

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
/// backslash.
pub fn escape_sd_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in clean_text(s).chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The host name of this machine (`gethostname(2)`), `None` if unavailable.
pub fn system_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most
    // that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty()).then_some(name)
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
            format: cfg.format,
            facility: cfg.facility,
            hostname,
            app_name: cfg.app_name.clone(),
            procid: std::process::id(),
            sd_id: cfg.sd_id.clone(),
            local_socket: target.is_local(),
        }
    }

    /// PRI: facility × 8 + severity (RFC 5424 §6.2.1).
    pub fn pri(&self, alert: &Alert) -> u8 {
        self.facility.code() * 8 + alert.severity.syslog()
    }

    /// The message in the configured format.
    pub fn format(&self, alert: &Alert) -> String {
        match self.format {
            SyslogFormat::Rfc5424 => self.rfc5424(alert),
            SyslogFormat::Rfc3164 => self.rfc3164(alert),
        }
    }

    /// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG`.
    pub fn rfc5424(&self, alert: &Alert) -> String {
        let doc = Document::new(alert);
        format!(
            "<{}>1 {} {} {} {} {} {} {}",
            self.pri(alert),
            doc.timestamp,
            header_field(&self.hostname, 255),
            header_field(&self.app_name, 48),
            self.procid,
            header_field(alert.kind.code(), 32),
            self.sd_element(&doc),
            clean_text(&alert.message),
        )
    }

    /// `<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: KIND: MSG [SD]` (no `HOST ` on a
    /// local socket). The time is UTC (3164 has no zone); the structured
    /// data, which 3164 lacks, follows the message so the fields are still
    /// there for a parser.
    pub fn rfc3164(&self, alert: &Alert) -> String {
        let doc = Document::new(alert);
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
            "<{}>{} {host}{}[{}]: {}: {} {}",
            self.pri(alert),
            rfc3164_time(doc.timestamp.time()),
            if tag.is_empty() { "smbwatch" } else { &tag },
            self.procid,
            alert.kind.code(),
            clean_text(&alert.message),
            self.sd_element(&doc),
        )
    }

    /// One SD-ELEMENT `[SD-ID name="value" ...]` with the alert's fields
    /// (see [`SD_PARAMS`]).
    pub fn structured_data(&self, alert: &Alert) -> String {
        self.sd_element(&Document::new(alert))
    }

    fn sd_element(&self, doc: &Document<'_>) -> String {
        let mut sd = format!("[{}", self.sd_id);
        for (name, value) in SD_PARAMS {
            if let Some(v) = value(doc) {
                let _ = write!(sd, " {name}=\"{}\"", escape_sd_value(&v));
            }
        }
        sd.push(']');
        sd
    }
}

/// How a structured-data parameter gets its value from the ECS document.
type SdValue = fn(&Document<'_>) -> Option<String>;

/// The structured-data parameters in output order: the SD-PARAM name and
/// the document field it carries (absent fields are left out). The
/// document is the one place that maps alert fields; one line here puts
/// one of them into syslog.
const SD_PARAMS: &[(&str, SdValue)] = &[
    ("kind", |d| Some(d.event.code.into())),
    ("severity", |d| Some(d.event.severity.name().into())),
    ("src", |d| d.source.ip.map(|ip| ip.to_string())),
    ("dst", |d| d.destination.ip.map(|ip| ip.to_string())),
    ("dport", |d| d.destination.port.map(|p| p.to_string())),
    ("distinct_destinations", |d| {
        scan(d, |s| s.distinct_destinations.to_string())
    }),
    ("syns", |d| scan(d, |s| s.syns.to_string())),
    ("accepted", |d| scan(d, |s| s.accepted.to_string())),
    ("refused", |d| scan(d, |s| s.refused.to_string())),
    ("window_secs", |d| scan(d, |s| s.window_secs.to_string())),
    ("community_id", |d| {
        d.network.community_id.map(str::to_owned)
    }),
    ("techniques", |d| {
        (!d.threat.technique.id.is_empty()).then(|| d.threat.technique.id.join(","))
    }),
    ("process", |d| d.process.name.map(str::to_owned)),
    ("pid", |d| d.process.pid.map(|p| p.to_string())),
    ("user", |d| d.user.name.map(str::to_owned)),
    ("host", |d| d.host.name.map(str::to_owned)),
    ("share", |d| d.smbwatch.share.map(str::to_owned)),
    ("ifindex", |d| {
        d.observer.ingress.interface.id.map(|i| i.0.to_string())
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
pub(super) mod tests {
    use std::net::IpAddr;

    use chrono::TimeZone;

    use super::*;
    use crate::alert::syslog::DEFAULT_SD_ID;
    use crate::alert::{AlertKind, ProcessInfo, ScanEvidence, Severity};

    pub(in crate::alert::syslog) fn ts(s: u32, ms: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, s).unwrap() + chrono::Duration::milliseconds(ms)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    pub(in crate::alert::syslog) fn scan_alert(msg: &str) -> Alert {
        let mut a = Alert::new(
            ts(7, 250),
            AlertKind::SmbScanFanout,
            Severity::High,
            msg.into(),
        );
        a.techniques = vec!["T1046", "T1210"];
        a.source_ip = Some(ip("192.0.2.10"));
        a.destination_port = Some(445);
        a.community_id = Some("1:LQU9qZlK+B5F3KDmev6m5PMibrg=".into());
        a.ifindex = Some(3);
        a.vlan = Some(100);
        a.scan = Some(ScanEvidence {
            distinct_destinations: 3,
            destinations: vec![ip("198.51.100.1")],
            syns: 4,
            accepted: 1,
            refused: 2,
            window_secs: 60,
            first_seen: ts(1, 0),
            last_seen: ts(7, 250),
        });
        a
    }

    fn formatter(format: SyslogFormat) -> Formatter {
        Formatter {
            format,
            facility: Facility::Local4,
            hostname: "gw1".into(),
            app_name: "smbwatch".into(),
            procid: 4242,
            sd_id: DEFAULT_SD_ID.into(),
            local_socket: false,
        }
    }

    const SD: &str = "[smbwatch@32473 kind=\"smb_scan_fanout\" severity=\"high\" \
        src=\"192.0.2.10\" dport=\"445\" distinct_destinations=\"3\" syns=\"4\" \
        accepted=\"1\" refused=\"2\" window_secs=\"60\" \
        community_id=\"1:LQU9qZlK+B5F3KDmev6m5PMibrg=\" techniques=\"T1046,T1210\" \
        ifindex=\"3\" vlan=\"100\"]";

    #[test]
    fn rfc5424_exact() {
        let a = scan_alert("192.0.2.10 reached 3 hosts on 445 in 60 s");
        // local4 (20) * 8 + error (3) = 163.
        assert_eq!(
            formatter(SyslogFormat::Rfc5424).format(&a),
            format!(
                "<163>1 2024-05-01T12:00:07.250Z gw1 smbwatch 4242 smb_scan_fanout {SD} \
                 192.0.2.10 reached 3 hosts on 445 in 60 s"
            )
        );
    }

    #[test]
    fn rfc3164_exact() {
        let a = scan_alert("192.0.2.10 reached 3 hosts on 445 in 60 s");
        assert_eq!(
            formatter(SyslogFormat::Rfc3164).format(&a),
            format!(
                "<163>May  1 12:00:07 gw1 smbwatch[4242]: smb_scan_fanout: \
                 192.0.2.10 reached 3 hosts on 445 in 60 s {SD}"
            )
        );
    }

    #[test]
    fn rfc3164_on_a_local_socket_has_no_hostname() {
        let f = Formatter {
            local_socket: true,
            ..formatter(SyslogFormat::Rfc3164)
        };
        let m = f.format(&scan_alert("x"));
        assert!(
            m.starts_with("<163>May  1 12:00:07 smbwatch[4242]: smb_scan_fanout: x ["),
            "{m}"
        );
        let cfg = SyslogConfig::for_target("unix:///dev/log");
        let f = Formatter::from_config(&cfg, &cfg.validate().unwrap());
        assert!(f.local_socket);
        let cfg = SyslogConfig::for_target("udp://127.0.0.1");
        let f = Formatter::from_config(&cfg, &cfg.validate().unwrap());
        assert!(!f.local_socket);
    }

    #[test]
    fn host_fields_are_escaped_and_cleaned() {
        let mut a = Alert::new(
            ts(0, 0),
            AlertKind::SuspiciousSmbClient,
            Severity::Critical,
            "line one\nline two".into(),
        );
        a.process = Some(ProcessInfo {
            name: Some("evil\"].exe".into()),
            pid: Some(7),
            executable: None,
        });
        a.user = Some(r"CORP\alice".into());
        a.share = Some(r"\\WS01\ADMIN$".into());
        let f = formatter(SyslogFormat::Rfc5424);
        let sd = f.structured_data(&a);
        assert_eq!(
            sd,
            "[smbwatch@32473 kind=\"suspicious_smb_client\" severity=\"critical\" \
             process=\"evil\\\"\\].exe\" pid=\"7\" user=\"CORP\\\\alice\" \
             share=\"\\\\\\\\WS01\\\\ADMIN$\"]"
        );
        let msg = f.format(&a);
        assert!(msg.ends_with(" line one line two"), "{msg}");
        assert!(!msg.contains('\n'));
        // local4 * 8 + critical (2).
        assert!(msg.starts_with("<162>1 "));
    }

    /// Every field at once, in the documented order.
    #[test]
    fn structured_data_with_every_field_exact() {
        let mut a = scan_alert("m");
        a.destination_ip = Some(ip("2001:db8::7"));
        a.process = Some(ProcessInfo {
            name: Some("psexec.exe".into()),
            pid: Some(4242),
            executable: Some(r"C:\psexec.exe".into()),
        });
        a.user = Some(r"CORP\alice".into());
        a.host = Some("WS01".into());
        a.share = Some("ADMIN$".into());
        assert_eq!(
            formatter(SyslogFormat::Rfc5424).structured_data(&a),
            "[smbwatch@32473 kind=\"smb_scan_fanout\" severity=\"high\" src=\"192.0.2.10\" \
             dst=\"2001:db8::7\" dport=\"445\" distinct_destinations=\"3\" syns=\"4\" \
             accepted=\"1\" refused=\"2\" window_secs=\"60\" \
             community_id=\"1:LQU9qZlK+B5F3KDmev6m5PMibrg=\" techniques=\"T1046,T1210\" \
             process=\"psexec.exe\" pid=\"4242\" user=\"CORP\\\\alice\" host=\"WS01\" \
             share=\"ADMIN$\" ifindex=\"3\" vlan=\"100\"]"
        );
    }

    /// A time RFC 5424 cannot carry is clamped in TIMESTAMP (and in the
    /// 3164 time) and the original is kept in `original_ts`.
    #[test]
    fn out_of_range_times_give_a_valid_timestamp() {
        for (ts, want) in crate::alert::ecs::tests::out_of_range_times() {
            let mut a = scan_alert("m");
            a.ts = ts;
            let m = formatter(SyslogFormat::Rfc5424).format(&a);
            let stamp = m.split(' ').nth(1).unwrap();
            assert_eq!(stamp, want, "{m}");
            crate::alert::ecs::tests::assert_valid_time(stamp);
            let original = ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            assert!(m.contains(&format!(" original_ts=\"{original}\"]")), "{m}");
            let m = formatter(SyslogFormat::Rfc3164).format(&a);
            assert!(!m.contains(":60 "), "{m}");
        }
        // In range: no original_ts.
        let m = formatter(SyslogFormat::Rfc5424).format(&scan_alert("m"));
        assert!(!m.contains("original_ts"), "{m}");
    }

    /// Every character that could break a line or reorder text, in MSG and
    /// in an SD value, each on its own.
    #[test]
    fn line_breaks_and_bidi_controls_are_neutralised() {
        let spaced = [
            '\n', '\r', '\0', '\t', '\u{1b}', '\u{7f}', '\u{85}', '\u{9b}', '\u{2028}', '\u{2029}',
        ];
        let replaced = [
            '\u{200E}', '\u{200F}', '\u{061C}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}',
            '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
        ];
        let f = formatter(SyslogFormat::Rfc5424);
        for (c, want) in spaced
            .iter()
            .map(|&c| (c, ' '))
            .chain(replaced.iter().map(|&c| (c, '\u{FFFD}')))
        {
            let mut a = scan_alert(&format!("a{c}b"));
            a.user = Some(format!("u{c}v"));
            let m = f.format(&a);
            assert!(!m.contains(c), "{:?} survived: {m:?}", c);
            assert!(m.ends_with(&format!(" a{want}b")), "{c:?}: {m:?}");
            assert!(m.contains(&format!(" user=\"u{want}v\"")), "{c:?}: {m:?}");
            let m = formatter(SyslogFormat::Rfc3164).format(&a);
            assert!(!m.contains(c), "{:?} survived in 3164: {m:?}", c);
        }
        // Ordinary non-ASCII text is kept.
        assert_eq!(clean_text("Jürgen → ünïcödé ✓"), "Jürgen → ünïcödé ✓");
    }

    #[test]
    fn sd_value_escaping() {
        assert_eq!(escape_sd_value(r#"a"b\c]d"#), r#"a\"b\\c\]d"#);
        assert_eq!(escape_sd_value("x\r\ny\0"), "x  y ");
        assert_eq!(escape_sd_value("Jürgen [x]"), "Jürgen [x\\]");
    }
}
