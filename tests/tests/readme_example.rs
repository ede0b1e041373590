//! The README's alert example is what the code emits: same keys, same
//! types, same values where the example is not elided ("..." marks an
//! elision; the time varies), and it conforms to the ECS field table. Its
//! minimal configuration is one the daemon accepts.

use std::net::IpAddr;

use chrono::DateTime;
use serde_json::Value;
use smbwatch::{
    alert::{ecs::Document, json::to_ecs, sensor::Sensor, AlertKind},
    config::Config,
    detect::{DetectConfig, Detector},
    event::{GatewayEvent, GatewayEventKind},
};

/// The first ```LANG block after `marker` in README.md.
fn readme_block(marker: &str, lang: &str) -> &'static str {
    let readme = include_str!("../../README.md");
    let after = &readme[readme.find(marker).expect("marker in README")..];
    let fence = format!("```{lang}\n");
    let start = after.find(&fence).expect("fenced block") + fence.len();
    let end = start + after[start..].find("```").expect("block end");
    &after[start..end]
}

/// The first ```json block after `marker` in README.md.
fn readme_json(marker: &str) -> Value {
    serde_json::from_str(readme_block(marker, "json").trim()).expect("README example is JSON")
}

/// Checks `example` against `real`; returns the mismatches.
fn compare(path: &str, example: &Value, real: &Value, out: &mut Vec<String>) {
    match (example, real) {
        (Value::Object(e), Value::Object(r)) => {
            for (k, ev) in e {
                match r.get(k) {
                    Some(rv) => compare(&format!("{path}.{k}"), ev, rv, out),
                    None => out.push(format!("{path}.{k}: in the README, not emitted")),
                }
            }
        }
        (Value::Array(e), Value::Array(r)) => {
            for (i, ev) in e.iter().enumerate() {
                if ev.as_str().is_some_and(|s| s == "...") {
                    return; // the rest is elided
                }
                match r.get(i) {
                    Some(rv) => compare(&format!("{path}[{i}]"), ev, rv, out),
                    None => out.push(format!("{path}[{i}]: in the README, not emitted")),
                }
            }
        }
        (Value::String(e), Value::String(r)) if path == ".@timestamp" => {
            if DateTime::parse_from_rfc3339(r).is_err() || DateTime::parse_from_rfc3339(e).is_err()
            {
                out.push(format!("{path}: {e} / {r} not RFC 3339"));
            }
        }
        (Value::String(e), Value::String(r)) if e.ends_with("...") => {
            if !r.starts_with(e.trim_end_matches("...")) {
                out.push(format!("{path}: README {e:?}, emitted {r:?}"));
            }
        }
        (Value::Number(_), Value::Number(_)) if path.starts_with(".smbwatch.") => {}
        (e, r) if e == r => {}
        (e, r) => out.push(format!("{path}: README {e}, emitted {r}")),
    }
}

#[test]
fn readme_fanout_alert_matches_the_code() {
    let example = readme_json("A fan-out alert as JSON");
    let t0 = DateTime::parse_from_rfc3339("2026-11-28T00:31:00Z")
        .unwrap()
        .to_utc();
    let src: IpAddr = "203.0.113.10".parse().unwrap();
    let mut det = Detector::new(DetectConfig::default());
    let mut alerts = Vec::new();
    for i in 0..20u32 {
        let dst: IpAddr = format!("198.51.100.{}", 2 + i).parse().unwrap();
        let ev = |kind, ms: i64| GatewayEvent {
            ts: t0 + chrono::Duration::milliseconds(ms),
            kind,
            src,
            dst,
            sport: 40000 + i as u16,
            dport: 445,
            ifindex: 2,
            vlan: None,
            fragmented: false,
            after_accept: false,
            kernel_fanout: None,
            activity: None,
            src_mac: None,
        };
        alerts.extend(det.observe(&ev(GatewayEventKind::NewPair, i64::from(i) * 100)));
        let answer = if i < 3 {
            GatewayEventKind::Accepted
        } else {
            GatewayEventKind::Refused
        };
        alerts.extend(det.observe(&ev(answer, i64::from(i) * 100 + 1)));
    }
    let fanout = alerts
        .iter()
        .find(|a| a.kind == AlertKind::SmbScanFanout)
        .expect("a fan-out alert");
    // As the daemon on gateway `gw1` watching `eth1` (ifindex 2) writes it,
    // two seconds after the capture time.
    let sensor = Sensor::named(Some("gw1")).with_interface(2, "eth1");
    let created = t0 + chrono::Duration::seconds(2);
    let real = to_ecs(&Document::new(fanout, &sensor, created));
    integration_tests::alerts::check_ecs(&real);
    let mut out = Vec::new();
    compare("", &example, &real, &mut out);
    assert!(
        out.is_empty(),
        "README example and code disagree:\n{}\nemitted: {real}",
        out.join("\n")
    );
}

#[test]
fn readme_minimal_config_is_valid() {
    let text = readme_block("## Minimal configuration", "toml");
    let cfg = Config::from_str_named(text, "README.md").expect("README's minimal config");
    assert_eq!(cfg.dataplane.interfaces, ["eth1", "eth2"]);
    assert_eq!(
        cfg.alert.json,
        Some(smbwatch::alert::json::JsonTarget::File(
            "/var/log/smbwatch/alerts.json".into()
        ))
    );
    assert!(
        cfg.metrics.enabled,
        "`smbwatch top` needs the metrics endpoint"
    );
}
