//! smbwatch's syslog sink against a real rsyslogd on loopback.
//!
//! Each test starts its own rsyslogd (`-n -f CONF -i PIDFILE`) with a
//! generated configuration in a temporary directory, on ports probed free,
//! and has it write every message it parsed as one JSON line (its view of
//! APP-NAME, MSGID, STRUCTURED-DATA, MSG, and the raw message). Checked over
//! UDP, TCP, TLS (gtls, anonymous client, a CA and server certificate made
//! at test time) and the local socket; an outage over TCP (rsyslogd killed,
//! alerts raised, rsyslogd started again on the same port) must lose
//! nothing. rsyslogd is always killed, also when a test fails (Drop guard).
//! Tests skip with a message when rsyslogd (or its gtls driver) is absent:
//! `apt-get install -y rsyslog rsyslog-gnutls`.

use integration_tests::certs::make_certs;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::net::IpAddr;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::Value;
use smbwatch::alert::syslog::{SyslogConfig, SyslogFormat, SyslogSink};
use smbwatch::alert::{ecs::Document, sensor::Sensor, Alert, AlertKind, ScanEvidence, Severity};

use integration_tests::rsyslog::{
    free_tcp_port, free_udp_port, gtls_available, rsyslogd, temp_dir, Input, Rsyslog, APP,
    TRICKY_USER,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Queues the alert's ECS document (as the daemon's sinks build it).
fn send(sink: &SyslogSink, a: &Alert) {
    sink.send(&Document::new(a, &Sensor::default(), Utc::now()));
}

/// `TRICKY_USER` (`CORP\adm "ops]`) as the document splits it: the short
/// name goes in `user`, the domain in `domain`. The backslash SD-PARAM
/// escaping must handle is in [`TRICKY_SHARE`].
const TRICKY_NAME: &str = r#"adm "ops]"#;
/// A share name with backslashes.
const TRICKY_SHARE: &str = r"\\*\ADMIN$";

fn alert(message: &str) -> Alert {
    let ts = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 7).unwrap();
    let mut a = Alert::new(ts, AlertKind::SmbScanFanout, Severity::High, message.into());
    a.source_ip = Some(ip("192.0.2.10"));
    a.destination_port = Some(445);
    a.community_id = Some("1:LQU9qZlK+B5F3KDmev6m5PMibrg=".into());
    a.user = Some(TRICKY_USER.into());
    a.share = Some(TRICKY_SHARE.into());
    a.scan = Some(ScanEvidence {
        distinct_destinations: 25,
        destinations: vec![ip("198.51.100.1")],
        syns: 30,
        fragmented_syns: 0,
        accepted: 2,
        refused: 28,
        window_secs: 60,
        first_seen: ts,
        last_seen: ts,
        ..Default::default()
    });
    a
}

fn config(target: String) -> SyslogConfig {
    SyslogConfig {
        hostname: Some("gw-test".into()),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        shutdown_timeout: Duration::from_secs(10),
        ..SyslogConfig::for_target(target.parse().unwrap())
    }
}

/// Parses one RFC 5424 SD-ELEMENT (`[id k="v" ...]`), undoing the escapes;
/// an independent reader of what smbwatch wrote and rsyslogd kept.
fn parse_sd(sd: &str) -> (String, BTreeMap<String, String>) {
    let inner = sd
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or_else(|| panic!("not one SD element: {sd}"));
    let (id, mut rest) = inner.split_once(' ').unwrap_or((inner, ""));
    let mut params = BTreeMap::new();
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").expect("name=\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("unterminated value") {
                (_, '\\') => value.push(chars.next().expect("escape").1),
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        params.insert(name.to_owned(), value);
        rest = after[end + 1..].trim_start();
    }
    (id.to_owned(), params)
}

/// rsyslogd parsed the message as RFC 5424 and every field survived.
fn check_rfc5424(line: &Value, message: &str) {
    assert_eq!(line["app"], APP, "{line:#}");
    assert_eq!(line["host"], "gw-test", "{line:#}");
    assert_eq!(line["msgid"], "smb_scan_fanout", "{line:#}");
    assert_eq!(line["procid"], std::process::id().to_string(), "{line:#}");
    // local4 (20) * 8 + error (3): severity high.
    assert_eq!(line["pri"], "163", "{line:#}");
    assert_eq!(line["msg"], message, "{line:#}");
    let (id, p) = parse_sd(line["sd"].as_str().unwrap());
    assert_eq!(id, "smbwatch@32473");
    assert_eq!(p["kind"], "smb_scan_fanout");
    assert_eq!(p["severity"], "high");
    assert_eq!(p["src"], "192.0.2.10");
    assert_eq!(p["dport"], "445");
    assert_eq!(p["distinct_destinations"], "25");
    assert_eq!(p["community_id"], "1:LQU9qZlK+B5F3KDmev6m5PMibrg=");
    assert_eq!(p["techniques"], "T1046,T1210");
    assert_eq!(p["user"], TRICKY_NAME);
    assert_eq!(p["domain"], "CORP");
    assert_eq!(p["share"], TRICKY_SHARE);
}

/// Sends one alert through a fresh sink and checks what rsyslogd received.
async fn one_alert_roundtrip(rs: &Rsyslog, cfg: SyslogConfig, message: &str) -> Value {
    let sink = SyslogSink::start(&cfg).unwrap();
    send(&sink, &alert(message));
    let got = rs.wait_alerts(1, Duration::from_secs(10)).await;
    let stats = sink.shutdown().await;
    assert_eq!((stats.sent, stats.queued, stats.dropped), (1, 0, 0));
    assert_eq!(got.len(), 1, "{got:#?}");
    got.into_iter().next().unwrap()
}

#[tokio::test]
async fn udp_rfc5424() {
    let Some(bin) = rsyslogd() else { return };
    let port = free_udp_port();
    let rs = Rsyslog::start(&bin, &temp_dir("udp"), &Input::Udp(port));
    let line = one_alert_roundtrip(
        &rs,
        config(format!("udp://127.0.0.1:{port}")),
        "scan over udp",
    )
    .await;
    check_rfc5424(&line, "scan over udp");
}

#[tokio::test]
async fn udp_rfc3164() {
    let Some(bin) = rsyslogd() else { return };
    let port = free_udp_port();
    let rs = Rsyslog::start(&bin, &temp_dir("udp3164"), &Input::Udp(port));
    let mut cfg = config(format!("udp://127.0.0.1:{port}"));
    cfg.format = Some(SyslogFormat::Rfc3164);
    let line = one_alert_roundtrip(&rs, cfg, "scan in bsd format").await;
    assert_eq!(line["host"], "gw-test", "{line:#}");
    assert_eq!(
        line["tag"],
        format!("smbwatch[{}]:", std::process::id()),
        "{line:#}"
    );
    assert_eq!(line["pri"], "163", "{line:#}");
    let msg = line["msg"].as_str().unwrap().trim_start();
    let rest = msg
        .strip_prefix("smb_scan_fanout: scan in bsd format ")
        .expect(msg);
    let (id, p) = parse_sd(rest);
    assert_eq!(id, "smbwatch@32473");
    assert_eq!(p["src"], "192.0.2.10");
    assert_eq!(p["user"], TRICKY_NAME);
    assert_eq!(p["domain"], "CORP");
    assert_eq!(p["share"], TRICKY_SHARE);
}

#[tokio::test]
async fn tcp_octet_counted() {
    let Some(bin) = rsyslogd() else { return };
    let port = free_tcp_port();
    let rs = Rsyslog::start(&bin, &temp_dir("tcp"), &Input::Tcp(port));
    let line = one_alert_roundtrip(
        &rs,
        config(format!("tcp://127.0.0.1:{port}")),
        "scan over tcp",
    )
    .await;
    check_rfc5424(&line, "scan over tcp");
}

/// An alert with megabytes of host-log text, line separators and bidi
/// controls: the message is cut to the transport's default `max_message`
/// (8 KiB UDP, 64 KiB TCP) and rsyslogd still parses header and structured
/// data, with nothing that could split or reorder a line.
async fn huge_alert_roundtrip(rs: &Rsyslog, target: String, max: usize) {
    let sink = SyslogSink::start(&config(target)).unwrap();
    let mut a = alert(&format!(
        "huge\u{2028}alert \u{202E}{}",
        "m".repeat(1 << 20)
    ));
    a.host = Some(format!("WS\u{2029}01{}", "h".repeat(1 << 20)));
    send(&sink, &a);
    let got = rs.wait_alerts(1, Duration::from_secs(10)).await;
    let stats = sink.shutdown().await;
    assert_eq!((stats.sent, stats.truncated, stats.dropped), (1, 1, 0));
    let line = &got[0];
    let raw = line["raw"].as_str().unwrap();
    assert!(raw.len() <= max, "{} > {max}", raw.len());
    assert!(
        raw.len() > max - 64,
        "{} much shorter than {max}",
        raw.len()
    );
    let msg = line["msg"].as_str().unwrap();
    assert!(msg.starts_with("huge alert \u{FFFD}mmm"), "{msg:.40}");
    assert!(msg.ends_with("m…"), "{}", &msg[msg.len() - 10..]);
    let (id, p) = parse_sd(line["sd"].as_str().unwrap());
    assert_eq!(id, "smbwatch@32473");
    assert_eq!(p["src"], "192.0.2.10");
    assert_eq!(p["user"], TRICKY_NAME);
    assert_eq!(p["domain"], "CORP");
    assert_eq!(p["share"], TRICKY_SHARE);
    // host.name is lower-cased.
    assert!(p["host"].starts_with("ws 01hhh"), "{:.20}", p["host"]);
    assert!(p["host"].ends_with("h…"));
    for c in ['\n', '\u{2028}', '\u{2029}', '\u{202E}'] {
        assert!(!raw.contains(c), "{c:?} in {raw:.80}");
    }
}

#[tokio::test]
async fn udp_huge_alert_is_cut_to_8k_and_parsed() {
    let Some(bin) = rsyslogd() else { return };
    let port = free_udp_port();
    let rs = Rsyslog::start(&bin, &temp_dir("udp-huge"), &Input::Udp(port));
    huge_alert_roundtrip(&rs, format!("udp://127.0.0.1:{port}"), 8192).await;
}

#[tokio::test]
async fn tcp_huge_alert_is_cut_to_64k_and_parsed() {
    let Some(bin) = rsyslogd() else { return };
    let port = free_tcp_port();
    let rs = Rsyslog::start(&bin, &temp_dir("tcp-huge"), &Input::Tcp(port));
    huge_alert_roundtrip(&rs, format!("tcp://127.0.0.1:{port}"), 65_536).await;
}

#[tokio::test]
async fn tls_octet_counted() {
    let Some(bin) = rsyslogd() else { return };
    if !gtls_available() {
        return;
    }
    let dir = temp_dir("tls");
    let (ca, cert, key) = make_certs(&dir);
    let port = free_tcp_port();
    let rs = Rsyslog::start(
        &bin,
        &dir,
        &Input::Tls {
            port,
            ca: ca.clone(),
            cert,
            key,
        },
    );
    let mut cfg = config(format!("tls://127.0.0.1:{port}"));
    cfg.tls_ca = Some(ca);
    let line = one_alert_roundtrip(&rs, cfg, "scan over tls").await;
    check_rfc5424(&line, "scan over tls");
}

#[tokio::test]
async fn tls_with_an_untrusted_ca_delivers_nothing() {
    let Some(bin) = rsyslogd() else { return };
    if !gtls_available() {
        return;
    }
    let dir = temp_dir("tls-untrusted");
    let (_, cert, key) = make_certs(&dir);
    // The sink trusts a different CA than the one that signed the server.
    let other = temp_dir("tls-other-ca");
    let (other_ca, _, _) = make_certs(&other);
    let port = free_tcp_port();
    let rs = Rsyslog::start(
        &bin,
        &dir,
        &Input::Tls {
            port,
            ca: dir.join("ca.pem"),
            cert,
            key,
        },
    );
    let mut cfg = config(format!("tls://127.0.0.1:{port}"));
    cfg.tls_ca = Some(other_ca);
    let sink = SyslogSink::start(&cfg).unwrap();
    send(&sink, &alert("must not be delivered"));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let stats = sink.shutdown_within(Duration::from_millis(200)).await;
    assert_eq!((stats.sent, stats.queued), (0, 1), "{stats:?}");
    assert!(stats.connect_failures >= 2, "{stats:?}");
    assert!(rs.alerts().is_empty());
    fs::remove_dir_all(other).unwrap();
}

#[tokio::test]
async fn local_socket_both_formats() {
    let Some(bin) = rsyslogd() else { return };
    // rsyslog's imuxsock with its default parser takes the local 3164
    // format (no HOSTNAME, like glibc's syslog(3)).
    let dir = temp_dir("unix3164");
    let path = dir.join("log.sock");
    let rs = Rsyslog::start(
        &bin,
        &dir,
        &Input::Unix {
            path: path.clone(),
            special_parser: true,
        },
    );
    let cfg = config(format!("unix://{}", path.display()));
    // Left unset: a unix:// target gets RFC 3164, what imuxsock parses.
    assert_eq!(cfg.format, None);
    assert_eq!(cfg.message_format(), SyslogFormat::Rfc3164);
    let line = one_alert_roundtrip(&rs, cfg, "scan to the local socket").await;
    assert_eq!(
        line["tag"],
        format!("smbwatch[{}]:", std::process::id()),
        "{line:#}"
    );
    assert!(
        line["msg"]
            .as_str()
            .unwrap()
            .contains("smb_scan_fanout: scan to the local socket [smbwatch@32473 "),
        "{line:#}"
    );
    drop(rs);
    // With useSpecialParser="off" parseHostname="on" it takes RFC 5424.
    let dir = temp_dir("unix5424");
    let path = dir.join("log.sock");
    let rs = Rsyslog::start(
        &bin,
        &dir,
        &Input::Unix {
            path: path.clone(),
            special_parser: false,
        },
    );
    let cfg = SyslogConfig {
        format: Some(SyslogFormat::Rfc5424),
        ..config(format!("unix://{}", path.display()))
    };
    let line = one_alert_roundtrip(&rs, cfg, "scan to the local socket").await;
    check_rfc5424(&line, "scan to the local socket");
}

/// Collector up, one alert delivered; collector stopped with `signal`; N
/// alerts raised; collector started again on the same port: all N arrive,
/// once each, in order.
async fn outage(rs: &mut Rsyslog, cfg: SyslogConfig, signal: i32) {
    const N: usize = 50;
    let sink = SyslogSink::start(&cfg).unwrap();
    send(&sink, &alert("before the outage"));
    rs.wait_alerts(1, Duration::from_secs(10)).await;

    rs.stop(signal);
    for i in 0..N {
        send(&sink, &alert(&format!("during the outage {i}")));
    }
    // Let the sink notice and fail to reconnect a few times.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let down = sink.stats();
    assert_eq!(down.sent, 1, "{down:?}");
    assert_eq!(down.queued, N as u64, "{down:?}");
    assert!(down.connect_failures >= 1, "{down:?}");

    rs.spawn();
    let got = rs.wait_alerts(1 + N, Duration::from_secs(15)).await;
    let stats = sink.shutdown().await;
    let mut count: HashMap<&str, usize> = HashMap::new();
    for l in &got {
        check_rfc5424(l, l["msg"].as_str().unwrap());
        *count.entry(l["msg"].as_str().unwrap()).or_default() += 1;
    }
    assert_eq!(count.len(), 1 + N, "distinct messages: {count:#?}");
    assert!(count.values().all(|&c| c == 1), "duplicates: {count:#?}");
    for i in 0..N {
        assert!(
            count.contains_key(format!("during the outage {i}").as_str()),
            "{i} lost"
        );
    }
    // In order, too: the queue is FIFO and one connection carries it.
    let order: Vec<&str> = got.iter().map(|l| l["msg"].as_str().unwrap()).collect();
    let want: Vec<String> = std::iter::once("before the outage".to_owned())
        .chain((0..N).map(|i| format!("during the outage {i}")))
        .collect();
    assert_eq!(order, want);
    assert_eq!(
        (stats.sent, stats.queued, stats.dropped),
        (1 + N as u64, 0, 0)
    );
    assert_eq!(stats.reconnects, 1, "{stats:?}");
}

#[tokio::test]
async fn tcp_outage_sigkill_loses_nothing() {
    let Some(bin) = rsyslogd() else { return };
    let port = free_tcp_port();
    let mut rs = Rsyslog::start(&bin, &temp_dir("outage-tcp"), &Input::Tcp(port));
    let cfg = config(format!("tcp://127.0.0.1:{port}"));
    outage(&mut rs, cfg, libc::SIGKILL).await;
}

#[tokio::test]
async fn tls_outage_sigterm_loses_nothing() {
    let Some(bin) = rsyslogd() else { return };
    if !gtls_available() {
        return;
    }
    let dir = temp_dir("outage-tls");
    let (ca, cert, key) = make_certs(&dir);
    let port = free_tcp_port();
    let input = Input::Tls {
        port,
        ca: ca.clone(),
        cert,
        key,
    };
    let mut rs = Rsyslog::start(&bin, &dir, &input);
    let mut cfg = config(format!("tls://127.0.0.1:{port}"));
    cfg.tls_ca = Some(ca);
    // A graceful stop: rsyslogd may end the TLS session (close_notify).
    outage(&mut rs, cfg, libc::SIGTERM).await;
}

#[tokio::test]
async fn collector_down_at_startup_is_retried() {
    let Some(bin) = rsyslogd() else { return };
    let port = free_tcp_port();
    let sink = SyslogSink::start(&config(format!("tcp://127.0.0.1:{port}"))).unwrap();
    send(&sink, &alert("raised before the collector was up"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sink.stats().connect_failures >= 1);
    let rs = Rsyslog::start(&bin, &temp_dir("startup"), &Input::Tcp(port));
    let got = rs.wait_alerts(1, Duration::from_secs(10)).await;
    check_rfc5424(&got[0], "raised before the collector was up");
    let stats = sink.shutdown().await;
    assert_eq!((stats.sent, stats.queued, stats.dropped), (1, 0, 0));
}
