use std::net::IpAddr;

use chrono::{Duration, TimeZone as _, Utc};
use smbwatch_common::stat;

use super::counters::ListenerStats;
use super::{expose::Scrape, *};
use crate::{
    alert::syslog::SyslogStats,
    alert::{AlertKind, ScanEvidence, Severity},
    dataplane::Stats,
};

fn scan_alert(kind: AlertKind, latency_ms: i64) -> Alert {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).unwrap();
    let mut a = Alert::new(
        t0 + Duration::milliseconds(latency_ms),
        kind,
        Severity::High,
        "scan from 203.0.113.10".into(),
    );
    a.source_ip = Some("203.0.113.10".parse().unwrap());
    a.scan = Some(ScanEvidence {
        first_seen: t0,
        destinations: vec!["198.51.100.2".parse().unwrap()],
        ..ScanEvidence::default()
    });
    a
}

/// A scrape with every optional part present and distinct non-zero values.
fn full_scrape() -> Scrape {
    let mut kernel = Stats::default();
    for (i, v) in kernel.0.iter_mut().enumerate() {
        *v = 100 + i as u64;
    }
    let mut alerts = AlertLog::default();
    alerts.record(&scan_alert(AlertKind::SmbScanFanout, 800));
    alerts.record(&scan_alert(AlertKind::SmbScanTrw, 4_000));
    alerts.record(&scan_alert(AlertKind::SmbScanFanout, 900_000));
    let mut drain = DrainSnapshot::default();
    drain.report.records = 42;
    drain.detect.suppressed = 3;
    Scrape {
        kernel: Some(kernel),
        drain,
        alerts,
        syslog: Some(SyslogStats {
            sent: 2,
            queued: 1,
            ..SyslogStats::default()
        }),
        listener: Some(ListenerStats {
            accepted: 5,
            refused: 1,
            by_format: [[7, 0, 0], [0, 1, 0], [0, 0, 2]],
            ..ListenerStats::default()
        }),
        reload: Some((3, 1, 1_796_000_000, false)),
        started: Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap(),
        fleet: None,
    }
}

fn value(samples: &[prometheus_parse::Sample], metric: &str, label: Option<(&str, &str)>) -> f64 {
    let s = samples
        .iter()
        .find(|s| s.metric == metric && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("{metric} {label:?} missing"));
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{metric}: {other:?}"),
    }
}

/// The exposition parses as the Prometheus text format, has the values
/// it was given, and no label value anywhere is an address.
#[test]
fn exposition_parses_and_has_no_address_labels() {
    let text = full_scrape().encode();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let s = &parsed.samples;
    assert!(s.len() > 60, "{} samples:\n{text}", s.len());
    for sample in s {
        assert!(sample.metric.starts_with("smbwatch_"), "{}", sample.metric);
        for (k, v) in sample.labels.iter() {
            assert!(
                v.parse::<IpAddr>().is_err(),
                "address as a label value: {k}={v}"
            );
            assert!(
                !v.contains("203.0.113") && !v.contains("198.51.100"),
                "{k}={v}"
            );
        }
    }
    assert_eq!(value(s, "smbwatch_kernel_packets_total", None), 100.0);
    assert_eq!(
        value(s, "smbwatch_kernel_new_pairs_total", None),
        100.0 + f64::from(stat::NEW_PAIRS)
    );
    assert_eq!(
        value(s, "smbwatch_kernel_malformed_total", Some(("kind", "tcp"))),
        100.0 + f64::from(stat::MALFORMED_TCP)
    );
    assert_eq!(
        value(
            s,
            "smbwatch_alerts_total",
            Some(("code", "smb_scan_fanout"))
        ),
        2.0
    );
    assert_eq!(
        value(
            s,
            "smbwatch_alerts_total",
            Some(("code", "admin_share_access"))
        ),
        0.0
    );
    assert_eq!(value(s, "smbwatch_events_consumed_total", None), 42.0);
    assert_eq!(
        value(s, "smbwatch_reload_total", Some(("result", "failed"))),
        1.0
    );
    assert_eq!(value(s, "smbwatch_reload_last_success", None), 0.0);
    assert_eq!(value(s, "smbwatch_alerts_suppressed_total", None), 3.0);
    assert_eq!(
        value(
            s,
            "smbwatch_listener_connections_total",
            Some(("outcome", "refused"))
        ),
        1.0
    );
    assert_eq!(value(s, "smbwatch_syslog_queue_messages", None), 1.0);
    let host = |format: &str, outcome: &str| {
        s.iter()
            .find(|x| {
                x.metric == "smbwatch_host_events_total"
                    && x.labels.get("format") == Some(format)
                    && x.labels.get("outcome") == Some(outcome)
            })
            .map(|x| match x.value {
                prometheus_parse::Value::Counter(v) => v,
                ref v => panic!("{v:?}"),
            })
    };
    assert_eq!(host("json", "forwarded"), Some(7.0));
    assert_eq!(host("xml", "skipped"), Some(1.0));
    assert_eq!(host("other", "bad"), Some(2.0));
    assert_eq!(host("xml", "bad"), Some(0.0));
    assert_eq!(
        value(
            s,
            "smbwatch_build_info",
            Some(("version", env!("CARGO_PKG_VERSION")))
        ),
        1.0
    );
    let hist = s
        .iter()
        .find_map(|x| match &x.value {
            prometheus_parse::Value::Histogram(h)
                if x.metric == "smbwatch_detection_latency_seconds" =>
            {
                Some(h.clone())
            }
            _ => None,
        })
        .expect("latency histogram");
    let le = |b: f64| hist.iter().find(|c| c.less_than == b).unwrap().count;
    assert_eq!(le(1.0), 1.0, "0.8 s");
    assert_eq!(le(5.0), 2.0, "0.8 s and 4 s");
    assert_eq!(le(600.0), 2.0, "900 s is past the last bucket");
    assert_eq!(le(f64::INFINITY), 3.0);
}

/// Every kernel counter is exported, exactly once.
#[test]
fn every_kernel_counter_is_exported_once() {
    let mut kernel = Stats::default();
    for (i, v) in kernel.0.iter_mut().enumerate() {
        // Distinct values that no other metric in this scrape has.
        *v = 1_000_000 + i as u64;
    }
    let scrape = Scrape {
        kernel: Some(kernel),
        ..full_scrape()
    };
    let text = scrape.encode();
    for (i, name) in stat::NAMES.iter().enumerate() {
        let needle = format!(" {}\n", 1_000_000 + i);
        assert_eq!(
            text.matches(&needle).count(),
            1,
            "kernel counter {name}:\n{text}"
        );
    }
}

/// Without the kernel, syslog or listener, their metrics are left out
/// rather than reported as zero.
#[test]
fn absent_parts_are_left_out() {
    let text = Scrape {
        kernel: None,
        syslog: None,
        listener: None,
        ..full_scrape()
    }
    .encode();
    assert!(!text.contains("smbwatch_kernel_"), "{text}");
    assert!(!text.contains("smbwatch_syslog_"), "{text}");
    assert!(!text.contains("smbwatch_listener_"), "{text}");
    assert!(text.contains("smbwatch_events_consumed_total 42"), "{text}");
}

/// The recent-alert list is bounded, newest last, messages capped.
#[test]
fn recent_alerts_are_bounded() {
    let mut log = AlertLog::default();
    for i in 0..(RECENT_ALERTS as i64 + 5) {
        let mut a = scan_alert(AlertKind::SmbScanFanout, i);
        a.message = "x".repeat(1000);
        log.record(&a);
    }
    assert_eq!(log.recent.len(), RECENT_ALERTS);
    assert_eq!(
        log.by_kind[kind_slot(AlertKind::SmbScanFanout)],
        RECENT_ALERTS as u64 + 5
    );
    assert!(log.recent.iter().all(|r| r.message.len() <= MAX_MESSAGE));
    assert!(log.recent.back().unwrap().ts > log.recent.front().unwrap().ts);
}

/// The drain thread's publication never waits for a reader.
#[test]
fn publishing_skips_while_a_reader_holds_the_lock() {
    let m = Metrics::new("/nonexistent".into());
    let mut s = DrainSnapshot::default();
    s.report.records = 1;
    m.publish_drain(s);
    let guard = m.drain.lock().unwrap();
    s.report.records = 2;
    m.publish_drain(s);
    drop(guard);
    assert_eq!(m.drain().report.records, 1, "skipped, not blocked");
    m.publish_drain(s);
    assert_eq!(m.drain().report.records, 2);
}

/// docs/operations.md lists the kernel's counters exactly as the counter
/// table generates them (same rows, same order, one contiguous block).
#[test]
fn operations_doc_lists_the_kernel_counters_of_the_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let in_doc: String = doc
        .lines()
        .filter(|l| l.starts_with("| `kernel_"))
        .map(|l| format!("{l}\n"))
        .collect();
    let generated = super::expose::kernel_docs_rows();
    assert_eq!(
        in_doc, generated,
        "docs/operations.md's kernel counter rows differ from smbwatch_common::counters::FAMILIES; \
         replace them with:\n{generated}"
    );
    assert!(
        doc.contains(&generated),
        "the kernel rows are not one block"
    );
}
