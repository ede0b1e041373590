//! Tests of the syslog formatter.
use std::net::IpAddr;

use chrono::TimeZone;

use super::*;
use crate::alert::syslog::DEFAULT_SD_ID;
use crate::alert::{Alert, AlertKind, ProcessInfo, ScanEvidence, Severity};

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
        fragmented_syns: 0,
        accepted: 1,
        refused: 2,
        window_secs: 60,
        first_seen: ts(1, 0),
        last_seen: ts(7, 250),
        ..Default::default()
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
        max_message: 65_536,
    }
}

/// The structured data of [`scan_alert`] (its `event.id` hashes it).
fn sd(a: &Alert) -> String {
    format!(
        "[smbwatch@32473 kind=\"smb_scan_fanout\" id=\"{}\" severity=\"high\" \
         src=\"192.0.2.10\" dport=\"445\" distinct_destinations=\"3\" syns=\"4\" \
         accepted=\"1\" refused=\"2\" window_secs=\"60\" \
         community_id=\"1:LQU9qZlK+B5F3KDmev6m5PMibrg=\" techniques=\"T1046,T1210\" \
         ifindex=\"3\" vlan=\"100\"]",
        crate::alert::ecs::event_id(a)
    )
}

#[test]
fn rfc5424_exact() {
    let a = scan_alert("192.0.2.10 reached 3 hosts on 445 in 60 s");
    // local4 (20) * 8 + error (3) = 163.
    assert_eq!(
        formatter(SyslogFormat::Rfc5424).format(&crate::alert::ecs::test_doc(&a)),
        format!(
            "<163>1 2024-05-01T12:00:07.250Z gw1 smbwatch 4242 smb_scan_fanout {} \
             192.0.2.10 reached 3 hosts on 445 in 60 s",
            sd(&a)
        )
    );
}

#[test]
fn rfc3164_exact() {
    let a = scan_alert("192.0.2.10 reached 3 hosts on 445 in 60 s");
    assert_eq!(
        formatter(SyslogFormat::Rfc3164).format(&crate::alert::ecs::test_doc(&a)),
        format!(
            "<163>May  1 12:00:07 gw1 smbwatch[4242]: smb_scan_fanout: \
             192.0.2.10 reached 3 hosts on 445 in 60 s {}",
            sd(&a)
        )
    );
}

#[test]
fn rfc3164_on_a_local_socket_has_no_hostname() {
    let f = Formatter {
        local_socket: true,
        ..formatter(SyslogFormat::Rfc3164)
    };
    let m = f.format(&crate::alert::ecs::test_doc(&scan_alert("x")));
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
    a.user = Some("CORP\\a]l\"i\\ce".into());
    a.share = Some(r"\\WS01\ADMIN$".into());
    let f = formatter(SyslogFormat::Rfc5424);
    let sd = f.structured_data(&crate::alert::ecs::test_doc(&a));
    assert_eq!(
        sd,
        format!(
            "[smbwatch@32473 kind=\"suspicious_smb_client\" id=\"{}\" severity=\"critical\" \
             techniques=\"T1210\" process=\"evil\\\"\\].exe\" pid=\"7\" \
             user=\"a\\]l\\\"i\\\\ce\" domain=\"CORP\" \
             share=\"\\\\\\\\WS01\\\\ADMIN$\"]",
            crate::alert::ecs::event_id(&a)
        )
    );
    let msg = f.format(&crate::alert::ecs::test_doc(&a));
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
    a.user = Some("alice@corp.example".into());
    a.user_id = Some("S-1-5-21-1".into());
    a.event_code = Some(5140);
    a.host = Some("WS01".into());
    a.share = Some("ADMIN$".into());
    let sensor = crate::alert::sensor::Sensor::named(Some("gw1")).with_interface(3, "eth1");
    let doc = Document::new(&a, &sensor, ts(9, 0));
    assert_eq!(
        formatter(SyslogFormat::Rfc5424).structured_data(&doc),
        format!(
            "[smbwatch@32473 kind=\"smb_scan_fanout\" id=\"{}\" severity=\"high\" \
             src=\"192.0.2.10\" dst=\"2001:db8::7\" dport=\"445\" distinct_destinations=\"3\" \
             syns=\"4\" accepted=\"1\" refused=\"2\" window_secs=\"60\" \
             community_id=\"1:LQU9qZlK+B5F3KDmev6m5PMibrg=\" techniques=\"T1046,T1210\" \
             event_code=\"5140\" process=\"psexec.exe\" pid=\"4242\" user=\"alice\" \
             domain=\"CORP.EXAMPLE\" user_id=\"S-1-5-21-1\" host=\"ws01\" share=\"ADMIN$\" \
             ifindex=\"3\" iface=\"eth1\" vlan=\"100\"]",
            crate::alert::ecs::event_id(&a)
        )
    );
}

/// A time RFC 5424 cannot carry is clamped in TIMESTAMP (and in the
/// 3164 time) and the original is kept in `original_ts`.
#[test]
fn out_of_range_times_give_a_valid_timestamp() {
    for (ts, want) in crate::alert::ecs::time::tests::out_of_range_times() {
        let mut a = scan_alert("m");
        a.ts = ts;
        let m = formatter(SyslogFormat::Rfc5424).format(&crate::alert::ecs::test_doc(&a));
        let stamp = m.split(' ').nth(1).unwrap();
        assert_eq!(stamp, want, "{m}");
        crate::alert::ecs::time::tests::assert_valid_time(stamp);
        let original = ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        assert!(m.contains(&format!(" original_ts=\"{original}\"]")), "{m}");
        let m = formatter(SyslogFormat::Rfc3164).format(&crate::alert::ecs::test_doc(&a));
        assert!(!m.contains(":60 "), "{m}");
    }
    // In range: no original_ts.
    let m = formatter(SyslogFormat::Rfc5424).format(&crate::alert::ecs::test_doc(&scan_alert("m")));
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
        let m = f.format(&crate::alert::ecs::test_doc(&a));
        assert!(!m.contains(c), "{:?} survived: {m:?}", c);
        assert!(m.ends_with(&format!(" a{want}b")), "{c:?}: {m:?}");
        assert!(m.contains(&format!(" user=\"u{want}v\"")), "{c:?}: {m:?}");
        let m = formatter(SyslogFormat::Rfc3164).format(&crate::alert::ecs::test_doc(&a));
        assert!(!m.contains(c), "{:?} survived in 3164: {m:?}", c);
    }
    // Ordinary non-ASCII text is kept.
    assert_eq!(clean_text("Jürgen → ünïcödé ✓"), "Jürgen → ünïcödé ✓");
}

/// Parses the SD element starting at `s` (`[ID name="v" ...]`);
/// returns its parameters (unescaped) and the rest of `s`, or panics.
fn parse_sd(s: &str) -> (Vec<(String, String)>, &str) {
    let s = s.strip_prefix('[').expect("[");
    let id_end = s.find([' ', ']']).expect("SD-ID end");
    assert_eq!(&s[..id_end], DEFAULT_SD_ID);
    let mut rest = &s[id_end..];
    let mut params = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix(']') {
            return (params, after);
        }
        let r = rest.strip_prefix(' ').expect("space before a param");
        let (name, r) = r.split_once("=\"").expect("name=\"");
        assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()));
        let mut value = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            match chars.next().expect("unterminated value") {
                (_, '\\') => {
                    let c = chars.next().expect("escaped char").1;
                    assert!(matches!(c, '"' | '\\' | ']'), "bad escape {c:?}");
                    value.push(c);
                }
                (_, ']') => panic!("unescaped ] in a value"),
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        params.push((name.to_owned(), value));
        rest = &r[end + 1..];
    }
}

fn huge_alert(c: char) -> Alert {
    let mut a = scan_alert(&format!("scan {}", c.to_string().repeat(200_000)));
    a.user = Some(format!("CORP\\u{}", "\"]\\".repeat(50_000)));
    a.host = Some(c.to_string().repeat(300_000));
    a.share = Some("s".repeat(40_000));
    a.process = Some(ProcessInfo {
        name: Some(c.to_string().repeat(9_999)),
        pid: Some(1),
        executable: None,
    });
    a
}

/// Whatever the fields, the message fits `max_message`, is cut on
/// character boundaries, and stays parseable: header, a closed SD
/// element with the short fields whole, then MSG.
#[test]
fn long_messages_are_shortened_and_stay_well_formed() {
    for max in [480, 2048, 8192, 65_536] {
        for c in ['x', 'ü', '€', '😀'] {
            let f = Formatter {
                max_message: max,
                ..formatter(SyslogFormat::Rfc5424)
            };
            let m = f.message(&crate::alert::ecs::test_doc(&huge_alert(c)));
            assert!(m.truncated);
            assert!(m.text.len() <= max, "{max} {c}: {}", m.text.len());
            let head = "<163>1 2024-05-01T12:00:07.250Z gw1 smbwatch 4242 smb_scan_fanout ";
            let sd_msg = m.text.strip_prefix(head).expect(&m.text);
            let (params, msg) = parse_sd(sd_msg);
            assert!(msg.starts_with(" scan "), "{max} {c}: {msg:?}");
            assert!(msg.ends_with('…'), "{max} {c}");
            let p: std::collections::BTreeMap<_, _> = params.into_iter().collect();
            if max >= 2048 {
                // The short fields are whole; the long ones cut, marked.
                assert_eq!(p["kind"], "smb_scan_fanout");
                assert_eq!(p["src"], "192.0.2.10");
                assert_eq!(p["techniques"], "T1046,T1210");
                assert_eq!(p["vlan"], "100");
                assert!(p["user"].starts_with("u\"]\\"), "{}", p["user"]);
                assert!(p["user"].ends_with('…'));
                assert!(p["host"].ends_with('…'));
                // MSG keeps at least MSG_KEEP bytes.
                assert!(msg.len() >= MSG_KEEP - 4, "{max} {c}: {}", msg.len());
            }
            let f = Formatter {
                max_message: max,
                ..formatter(SyslogFormat::Rfc3164)
            };
            let m = f.message(&crate::alert::ecs::test_doc(&huge_alert(c)));
            assert!(m.text.len() <= max, "3164 {max} {c}: {}", m.text.len());
            let sd_at = m.text.rfind(" [smbwatch@32473").expect(&m.text);
            let (_, after) = parse_sd(&m.text[sd_at + 1..]);
            assert_eq!(after, "", "3164 {max} {c}");
        }
    }
}

#[test]
fn the_longest_header_still_fits_the_smallest_max_message() {
    let f = Formatter {
        hostname: "h".repeat(300),
        app_name: "a".repeat(60),
        procid: u32::MAX,
        max_message: crate::alert::syslog::config::MIN_MESSAGE,
        ..formatter(SyslogFormat::Rfc5424)
    };
    let mut a = huge_alert('x');
    a.destination_ip = Some(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"));
    a.source_ip = a.destination_ip;
    let m = f.message(&crate::alert::ecs::test_doc(&a));
    assert!(m.text.len() <= 480, "{}", m.text.len());
    let at = m.text.find(" [").unwrap();
    let (_, msg) = parse_sd(&m.text[at + 1..]);
    assert!(msg.starts_with(' '), "{msg:?}");
}

#[test]
fn short_messages_are_untouched() {
    let f = Formatter {
        max_message: 480,
        ..formatter(SyslogFormat::Rfc5424)
    };
    let a = scan_alert("192.0.2.10 reached 3 hosts on 445 in 60 s");
    let m = f.message(&crate::alert::ecs::test_doc(&a));
    assert!(!m.truncated);
    assert_eq!(
        m.text,
        formatter(SyslogFormat::Rfc5424).format(&crate::alert::ecs::test_doc(&a))
    );
    assert!(m.text.len() <= 480);
}

#[test]
fn shorten_cuts_on_a_char_boundary() {
    for (s, max, want) in [
        ("abcdef", 6, "abcdef"),
        ("abcdef", 5, "ab…"),
        ("ü😀ü", 7, "ü…"),
        ("😀😀", 6, "…"),
        ("😀😀", 2, ""),
        ("abc", 0, ""),
    ] {
        let mut x = s.to_owned();
        shorten(&mut x, max);
        assert_eq!(x, want, "{s} {max}");
        assert!(x.len() <= max);
    }
}

fn escape_sd_value(s: &str) -> String {
    let mut out = String::new();
    escape_into(&mut out, &clean_text(s));
    out
}

#[test]
fn sd_value_escaping() {
    assert_eq!(escape_sd_value(r#"a"b\c]d"#), r#"a\"b\\c\]d"#);
    assert_eq!(escape_sd_value("x\r\ny\0"), "x  y ");
    assert_eq!(escape_sd_value("Jürgen [x]"), "Jürgen [x\\]");
}

/// An SMB alert's wire evidence is in the structured data too.
#[test]
fn smb_alerts_carry_their_wire_fields() {
    let ts = ts(9, 0);
    let mut a = Alert::new(
        ts,
        AlertKind::SmbRemoteService,
        Severity::Critical,
        "m".into(),
    );
    a.share = Some("IPC$".into());
    a.smb = Some(crate::alert::SmbEvidence {
        tree: Some(r"\\srv\IPC$".into()),
        pipe: Some("svcctl".into()),
        interface: Some("svcctl".into()),
        operations: vec!["RCreateServiceW".into(), "RStartServiceW".into()],
        workstation: Some("ATTACKER".into()),
        ..Default::default()
    });
    let sensor = crate::alert::sensor::Sensor::named(Some("gw1"));
    let doc = Document::new(&a, &sensor, ts);
    let sd = formatter(SyslogFormat::Rfc5424).structured_data(&doc);
    for want in [
        "workstation=\"ATTACKER\"",
        "pipe=\"svcctl\"",
        "rpc=\"svcctl\"",
        "operation=\"RCreateServiceW,RStartServiceW\"",
        "share=\"IPC$\"",
    ] {
        assert!(sd.contains(want), "{want} in {sd}");
    }
}
