//! Hosts, roles, new servers, management sources and incidents, with
//! scripted events (the office week of `week.rs` plus MACs and logons).

use std::time::Duration;

use super::week::*;
use super::*;
use crate::alert::{AlertKind, Severity};
use crate::event::{GatewayEvent, MacAddr};

fn mac(i: u8) -> MacAddr {
    MacAddr([0x3c, 0x52, 0x82, 0, 0, i])
}

/// A confirmed session carrying the client's MAC.
fn acc_mac(ts: chrono::DateTime<chrono::Utc>, src: &str, dst: &str, m: MacAddr) -> GatewayEvent {
    let mut e = acc(ts, src, dst);
    e.src_mac = Some(m);
    e
}

/// The office week with each workstation's own MAC (the router is their
/// first hop).
fn office_week_by_mac(b: &mut Baseline) {
    for day in 0..5 {
        for (i, ws) in WS.iter().enumerate() {
            for (hour, fs) in [(8, FS1), (13, FS2)] {
                let a = b.observe(&acc_mac(at(day, hour, i as i64), ws, fs, mac(i as u8)));
                assert!(a.is_empty(), "{a:?}");
            }
        }
    }
}

#[test]
fn a_host_on_a_new_address_is_not_new_and_a_reused_address_inherits_nothing() {
    let mut b = baseline();
    office_week_by_mac(&mut b);
    assert_eq!(b.stats().clients, 4, "hosts, keyed by MAC");
    // WS[0]'s host moves to a new address (DHCP): silent, same host.
    let moved = "192.0.2.99";
    assert!(b
        .observe(&acc_mac(at(7, 8, 0), moved, FS1, mac(0)))
        .is_empty());
    assert_eq!(b.client(ip(moved)).unwrap().days, 6);
    // Another host takes WS[0]'s old address: a new client, with no edges.
    let a = b.observe(&acc_mac(at(7, 9, 0), WS[0], FS1, mac(9)));
    assert_eq!(kinds(&a), [AlertKind::SmbNewClient]);
    assert!(
        a[0].message.contains("host by MAC 3c:52:82:00:00:09"),
        "{}",
        a[0].message
    );
    // Daily reload keeps who is where.
    let b =
        Baseline::new(six_days(), Vec::new(), Duration::from_secs(600)).from_snapshot(b.snapshot());
    assert_eq!(b.client(ip(moved)).unwrap().days, 6);
}

#[test]
fn a_mac_with_many_addresses_is_a_router_and_names_no_host() {
    let mut b = baseline();
    let router = mac(0xfe);
    // Five clients behind another router: the same MAC on every frame.
    for i in 0..5 {
        b.observe(&acc_mac(
            at(0, 8, i),
            &format!("198.51.100.{}", i + 1),
            FS1,
            router,
        ));
    }
    assert_eq!(b.stats().router_macs, 1);
    // From then on its frames are keyed by address.
    b.observe(&acc_mac(at(0, 9, 0), "198.51.100.9", FS1, router));
    assert!(b.client(ip("198.51.100.9")).is_some());
    assert_eq!(b.client(ip("198.51.100.9")).unwrap().events, 1);
    // The flag survives a reload.
    let mut b =
        Baseline::new(six_days(), Vec::new(), Duration::from_secs(600)).from_snapshot(b.snapshot());
    b.observe(&acc_mac(at(1, 9, 0), "198.51.100.10", FS1, router));
    assert_eq!(b.client(ip("198.51.100.10")).unwrap().events, 1);
    assert_eq!(b.stats().router_macs, 0, "not flagged again");
}

#[test]
fn logons_name_hosts_for_name_ttl() {
    let mut b = baseline();
    for day in 0..5 {
        for (i, ws) in WS.iter().enumerate() {
            b.observe_logon(at(day, 7, 59).timestamp(), ip(ws), &format!("ws{i}"));
            for (hour, fs) in [(8, FS1), (13, FS2)] {
                b.observe(&acc(at(day, hour, i as i64), ws, fs));
            }
        }
    }
    assert_eq!(b.stats().clients, 4);
    // WS0 logs on from a new address: the same host.
    b.observe_logon(at(7, 7, 59).timestamp(), ip("192.0.2.99"), "WS0");
    assert!(b.observe(&acc(at(7, 8, 0), "192.0.2.99", FS1)).is_empty());
    // A host without logs on WS1's address a day later: the binding
    // expired, it is a new client.
    let a = b.observe(&acc(at(8, 9, 0), WS[1], FS1));
    assert_eq!(kinds(&a), [AlertKind::SmbNewClient]);
}

#[test]
fn a_new_server_is_one_low_alert_then_its_edges_learn() {
    let mut b = baseline();
    office_week_by_mac(&mut b);
    let mut more: Vec<(String, MacAddr)> = (0..6)
        .map(|i| (format!("192.0.2.{}", 40 + i), mac(40 + i as u8)))
        .collect();
    for day in 0..5 {
        for (i, (a, m)) in more.iter().enumerate() {
            b.observe(&acc_mac(at(day, 9, i as i64), a, FS1, *m));
        }
    }
    more.extend(
        WS.iter()
            .enumerate()
            .map(|(i, w)| (w.to_string(), mac(i as u8))),
    );
    let fs3 = "192.0.2.12";
    let mut alerts = Vec::new();
    for (i, (a, m)) in more.iter().enumerate() {
        alerts.extend(b.observe(&acc_mac(at(8, 9, i as i64), a, fs3, *m)));
    }
    assert_eq!(kinds(&alerts), [AlertKind::SmbNewServer], "{alerts:#?}");
    assert_eq!(alerts[0].severity, Severity::Low);
    assert!(
        alerts[0]
            .message
            .starts_with("new SMB server 192.0.2.12: 5 clients since"),
        "{}",
        alerts[0].message
    );
    // A workstation reaching a known workstation still alerts (high).
    let a = b.observe(&acc_mac(at(8, 10, 0), WS[0], WS[1], mac(0)));
    assert_eq!(kinds(&a), [AlertKind::SmbNewEdge]);
    assert_eq!(a[0].severity, Severity::High);
}

/// A management source pushing to workstations at midday: new targets of
/// that kind in its schedule are normal; at 03:10 it alerts; a server it
/// never reached (another kind) alerts.
#[test]
fn management_sources_keep_their_schedule_and_kind_of_target() {
    let cfg = BaselineConfig {
        manager_min_targets: 3,
        shared_server_percent: 0,
        ..six_days()
    };
    let mut b = Baseline::new(cfg, Vec::new(), Duration::from_secs(600));
    office_week_by_mac(&mut b);
    let sccm = "192.0.2.20";
    let sm = mac(20);
    for day in 0..5 {
        let ws = WS[day % 4];
        b.observe(&acc_mac(at(day as i64, 12, 0), sccm, ws, sm));
        b.observe(&acc_mac(at(day as i64, 12, 1), sccm, WS[(day + 1) % 4], sm));
    }
    assert_eq!(b.client(ip(sccm)).unwrap().usual_servers, 4);
    // A workstation that moved (a new address it never reached): silent.
    assert!(b
        .observe(&acc_mac(at(7, 8, 0), "192.0.2.77", FS1, mac(3)))
        .is_empty());
    assert!(b
        .observe(&acc_mac(at(7, 12, 30), sccm, "192.0.2.77", sm))
        .is_empty());
    // Outside its schedule: off hours (no office fallback for it).
    let a = b.observe(&acc_mac(at(8, 3, 10), sccm, WS[0], sm));
    assert_eq!(kinds(&a), [AlertKind::SmbOffHours]);
    // A file server: a kind of target it never reached.
    let a = b.observe(&acc_mac(at(9, 12, 10), sccm, FS1, sm));
    assert_eq!(kinds(&a), [AlertKind::SmbNewEdge]);
}

/// One alert per source per hold-down: a workstation reaching the others
/// raises one; the next (after the hold-down) lists what was held.
#[test]
fn one_alert_per_source_per_hold_down() {
    let mut b = baseline();
    office_week_by_mac(&mut b);
    let mut alerts = Vec::new();
    for (k, ws) in WS[1..].iter().enumerate() {
        alerts.extend(b.observe(&acc_mac(at(7, 14, k as i64), WS[0], ws, mac(0))));
    }
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(b.stats().suppressed, 2);
    let m = &alerts[0].message;
    assert!(m.ends_with(&format!("usual servers: {FS1}, {FS2}")), "{m}");
    // A host without history: its one tolerated first contact today (a
    // new server's first client); a second such host alerts.
    assert!(b
        .observe(&acc_mac(at(7, 14, 29), WS[0], "192.0.2.30", mac(0)))
        .is_empty());
    let a = b.observe(&acc_mac(at(7, 14, 30), WS[0], "192.0.2.31", mac(0)));
    assert_eq!(a.len(), 1);
    assert!(
        a[0].message.contains(&format!(
            "2 more findings of this source held down since its previous alert (servers: {}, {})",
            WS[2], WS[3]
        )),
        "{}",
        a[0].message
    );
}

/// A known edge used far outside the host's hours alerts; weekend hours
/// are learned apart from weekdays.
#[test]
fn hours_from_activity_weekdays_and_weekends_apart() {
    let mut b = baseline();
    office_week_by_mac(&mut b);
    // Saturday 10:00 is learned for WS[0] (still learning on day 5).
    b.observe(&acc_mac(at(5, 10, 0), WS[0], FS1, mac(0)));
    let c = b.client(ip(WS[0])).unwrap();
    assert_eq!(c.weekend_hours, 1 << 10);
    assert_eq!(c.usual_hours, (1 << 8) | (1 << 13));
    // Its own file server at 03:30 on a weekday: off hours.
    let a = b.observe(&acc_mac(at(8, 3, 30), WS[1], FS1, mac(1)));
    assert_eq!(kinds(&a), [AlertKind::SmbOffHours]);
    // Next Saturday 10:00: normal for WS[0]; WS[2] never works weekends,
    // and four clients are too few for an office profile.
    assert!(b
        .observe(&acc_mac(at(12, 10, 5), WS[0], FS1, mac(0)))
        .is_empty());
    let a = b.observe(&acc_mac(at(12, 10, 6), WS[2], FS1, mac(2)));
    assert_eq!(kinds(&a), [AlertKind::SmbOffHours]);
}

/// The pipeline names hosts from their own outbound connections (a
/// Winlogbeat 5156 from WORKSTATION5 at 172.18.39.5): the baseline keys
/// that address's sessions by the name.
#[test]
fn the_pipeline_names_hosts_from_their_outbound_connections() {
    use crate::pipeline::{Pipeline, PipelineConfig};
    let line = r#"{"@timestamp":"2026-11-02T07:57:46.123Z","event":{"code":"5156","kind":"event","provider":"Microsoft-Windows-Security-Auditing","action":"connection-allowed"},"winlog":{"channel":"Security","computer_name":"WORKSTATION5.theshire.local","event_id":"5156","provider_name":"Microsoft-Windows-Security-Auditing","record_id":493214,"event_data":{"ProcessID":"4","Application":"System","Direction":"%%14593","SourceAddress":"172.18.39.5","SourcePort":"50504","DestAddress":"172.18.39.6","DestPort":"445","Protocol":"6"}},"host":{"name":"workstation5"}}"#;
    let ev = crate::hostlog::parse_line(line).unwrap().unwrap();
    let mut p = Pipeline::new(PipelineConfig::default()).with_baseline(baseline());
    p.host_event(&ev);
    p.gateway_event(&acc(at(0, 7, 58), "172.18.39.5", "172.18.39.6"));
    let b = p.baseline_mut().unwrap();
    assert_eq!(b.stats().logons, 1);
    let host = ev.host.as_deref().unwrap();
    let c = b.client(ip("172.18.39.5")).unwrap();
    assert_eq!(c.events, 1);
    assert!(b.clients().any(|(k, _)| *k == name_key(host)));
}
