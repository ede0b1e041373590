//! Detector tests on scripted event sequences; time comes from the events.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::alert::{AlertKind, Severity};
use crate::event::{GatewayEvent, GatewayEventKind};

/// Base time of every script (2026-09-21T...Z), in milliseconds.
const T0_MS: i64 = 1_790_000_000_000;

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(T0_MS + ms).unwrap()
}

const SEC: i64 = 1000;
const MIN: i64 = 60 * SEC;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The i-th target host, 198.51.100.0 onwards (beyond .255 the addresses
/// leave the documentation range; nothing is sent, they are only numbers).
fn host(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(198, 51, 100, 0)) + i,
    ))
}

fn ev(kind: GatewayEventKind, src: IpAddr, dst: IpAddr, ms: i64) -> GatewayEvent {
    GatewayEvent {
        ts: at(ms),
        kind,
        src,
        dst,
        // A distinct client port per destination, as a scanner would use.
        sport: 40000
            + (u32::from_be_bytes(match dst {
                IpAddr::V4(v4) => v4.octets(),
                IpAddr::V6(v6) => v6.octets()[12..].try_into().unwrap(),
            }) % 20000) as u16,
        dport: 445,
        ifindex: 3,
        vlan: Some(10),
        fragmented: false,
        after_accept: false,
        kernel_fanout: None,
        activity: None,
        src_mac: None,
    }
}

fn syn(src: IpAddr, dst: IpAddr, ms: i64) -> GatewayEvent {
    ev(GatewayEventKind::NewPair, src, dst, ms)
}

fn accept(src: IpAddr, dst: IpAddr, ms: i64) -> GatewayEvent {
    ev(GatewayEventKind::Accepted, src, dst, ms)
}

fn refuse(src: IpAddr, dst: IpAddr, ms: i64) -> GatewayEvent {
    ev(GatewayEventKind::Refused, src, dst, ms)
}

/// Feed events in order; the alerts with the index of the event that raised them.
fn run(det: &mut Detector, events: &[GatewayEvent]) -> Vec<(usize, Alert)> {
    events
        .iter()
        .enumerate()
        .flat_map(|(i, e)| det.observe(e).into_iter().map(move |a| (i, a)))
        .collect()
}

fn of_kind(alerts: &[(usize, Alert)], kind: AlertKind) -> Vec<&(usize, Alert)> {
    alerts.iter().filter(|(_, a)| a.kind == kind).collect()
}

/// The single 60 s scale and no prefix aggregation: the per-address engine
/// alone, as these tests were written for (the longer scales, prefixes and
/// the evasion rule: `sweep_tests.rs`).
fn one_scale() -> DetectConfig {
    DetectConfig {
        fanout_scales: Vec::new(),
        prefix: PrefixConfig {
            ipv4: 0,
            ipv6: 0,
            ..PrefixConfig::default()
        },
        ..DetectConfig::default()
    }
}

fn scanner() -> IpAddr {
    ip("192.0.2.66")
}

#[test]
fn fast_sweep_alerts_at_exactly_the_20th_destination() {
    let mut det = Detector::new(one_scale());
    let events: Vec<_> = (0..30)
        .map(|i| syn(scanner(), host(i), i64::from(i) * 10))
        .collect();
    let alerts = run(&mut det, &events);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let (i, a) = &alerts[0];
    assert_eq!(*i, 19, "the 20th distinct destination raises it");
    assert_eq!(a.kind, AlertKind::SmbScanFanout);
    assert_eq!(a.severity, Severity::High);
    assert_eq!(a.ts, at(190));
    assert_eq!(a.source_ip, Some(scanner()));
    // The first flow's destination and ports go with its community ID.
    assert_eq!(a.destination_ip, Some(host(0)));
    assert_eq!(a.source_port, Some(events[0].sport));
    assert_eq!(a.destination_port, Some(445));
    assert_eq!(a.techniques, ["T1046", "T1210"]);
    assert_eq!((a.ifindex, a.vlan), (Some(3), Some(10)));
    let first = &events[0];
    assert_eq!(
        a.community_id.as_deref(),
        Some(community_id_v1(scanner(), host(0), first.sport, 445, 6, 0).as_str())
    );
    let scan = a.scan.as_ref().unwrap();
    assert_eq!(scan.distinct_destinations, 20);
    assert_eq!(scan.destinations, (0..20).map(host).collect::<Vec<_>>());
    assert_eq!((scan.syns, scan.accepted, scan.refused), (20, 0, 0));
    assert_eq!(scan.window_secs, 60);
    assert_eq!((scan.first_seen, scan.last_seen), (at(0), at(190)));
    assert_eq!(
        a.message,
        "192.0.2.66 connected to 20 distinct hosts on port 445 within 1m (threshold 20)"
    );
    assert_eq!(scan.scale.as_deref(), Some("1m"));
    let stats = det.stats();
    assert_eq!(
        (stats.alerts, stats.tracked_sources, stats.tracked_pairs),
        (1, 1, 30)
    );
    assert_eq!(stats.pending_pairs, 30);
}

#[test]
fn evidence_list_is_capped() {
    let cfg = DetectConfig {
        max_destinations_listed: 5,
        ..one_scale()
    };
    let mut det = Detector::new(cfg);
    let events: Vec<_> = (0..20)
        .map(|i| syn(scanner(), host(i), i64::from(i)))
        .collect();
    let alerts = run(&mut det, &events);
    let scan = alerts[0].1.scan.as_ref().unwrap();
    assert_eq!(scan.distinct_destinations, 20);
    assert_eq!(scan.destinations, (0..5).map(host).collect::<Vec<_>>());
}

/// 25 probes, one every 2 minutes over 48 minutes, each refused.
fn slow_sweep() -> Vec<GatewayEvent> {
    (0..25)
        .flat_map(|i| {
            let t = i64::from(i) * 2 * MIN;
            [
                syn(scanner(), host(i), t),
                refuse(scanner(), host(i), t + 10),
            ]
        })
        .collect()
}

#[test]
fn slow_sweep_inside_a_long_window_alerts() {
    let cfg = DetectConfig {
        window: Duration::from_secs(3600),
        ..one_scale()
    };
    let mut det = Detector::new(cfg);
    let alerts = run(&mut det, &slow_sweep());
    let fanout = of_kind(&alerts, AlertKind::SmbScanFanout);
    assert_eq!(fanout.len(), 1, "{alerts:#?}");
    assert_eq!(fanout[0].0, 38, "SYN to the 20th host");
    assert_eq!(fanout[0].1.ts, at(38 * MIN));
    let scan = fanout[0].1.scan.as_ref().unwrap();
    assert_eq!(
        (scan.distinct_destinations, scan.refused, scan.window_secs),
        (20, 19, 3600)
    );
    assert_eq!(scan.first_seen, at(0));
}

#[test]
fn slow_sweep_outside_a_short_window_is_left_to_trw() {
    let mut det = Detector::new(one_scale());
    let alerts = run(&mut det, &slow_sweep());
    assert!(
        of_kind(&alerts, AlertKind::SmbScanFanout).is_empty(),
        "{alerts:#?}"
    );
    // The random walk has no window: four refusals in a row make a scanner,
    // and again after each 10-minute hold-down.
    let trw = of_kind(&alerts, AlertKind::SmbScanTrw);
    let times: Vec<_> = trw.iter().map(|(_, a)| a.ts).collect();
    assert_eq!(
        times,
        [at(6 * MIN + 10), at(22 * MIN + 10), at(38 * MIN + 10)],
        "4th refusal, then the first 4-refusal run ending after each hold-down"
    );
    let scan = trw[0].1.scan.as_ref().unwrap();
    assert_eq!(
        scan.distinct_destinations, 1,
        "only the last probe is in the 60 s window"
    );
}

#[test]
fn retransmitted_syns_count_once() {
    let mut det = Detector::new(one_scale());
    let mut events = Vec::new();
    for i in 0..19 {
        for r in 0..3 {
            events.push(syn(scanner(), host(i), i64::from(i) * 100 + r * 30));
        }
    }
    assert!(run(&mut det, &events).is_empty());
    assert_eq!(det.stats().tracked_pairs, 19);
    let alerts = det.observe(&syn(scanner(), host(19), 2000));
    assert_eq!(alerts.len(), 1);
    let scan = alerts[0].scan.as_ref().unwrap();
    assert_eq!((scan.distinct_destinations, scan.syns), (20, 19 * 3 + 1));
}

#[test]
fn repeated_destination_stays_in_the_window_from_its_latest_syn() {
    // host(0) at 0 s and again at 50 s: at 100 s it is still within 60 s.
    let mut det = Detector::new(one_scale());
    let mut events = vec![
        syn(scanner(), host(0), 0),
        syn(scanner(), host(0), 50 * SEC),
    ];
    events.extend((1..19).map(|i| syn(scanner(), host(i), 80 * SEC + i64::from(i))));
    assert!(run(&mut det, &events).is_empty());
    // (The unanswered probes also fail TRW here; only fan-out matters.)
    let alerts = det.observe(&syn(scanner(), host(19), 100 * SEC));
    let fanout: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::SmbScanFanout)
        .collect();
    assert_eq!(fanout.len(), 1);
    assert_eq!(fanout[0].scan.as_ref().unwrap().distinct_destinations, 20);
}

#[test]
fn file_server_with_200_clients_is_quiet() {
    let mut det = Detector::new(one_scale());
    let server = ip("203.0.113.5");
    let mut events = Vec::new();
    // Each client connects three times over 20 minutes; every SYN is answered.
    for round in 0..3 {
        for c in 0..200u32 {
            let client = IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 0, 2, 0)) + c));
            let t = i64::from(round) * 10 * MIN + i64::from(c) * 100;
            events.push(syn(client, server, t));
            events.push(accept(client, server, t + 2));
        }
    }
    let alerts = run(&mut det, &events);
    assert!(alerts.is_empty(), "{alerts:#?}");
    assert_eq!(det.stats().tracked_sources, 200);
    assert_eq!(det.stats().pending_pairs, 0);
}

#[test]
fn allowlisted_backup_server_is_ignored() {
    let cfg = DetectConfig {
        allow: vec![
            "192.0.2.10/32".parse().unwrap(),
            "2001:db8:b::/48".parse().unwrap(),
        ],
        ..one_scale()
    };
    let mut det = Detector::new(cfg);
    let backup = ip("192.0.2.10");
    let backup6 = ip("2001:db8:b::10");
    let other = ip("192.0.2.11");
    let mut events = Vec::new();
    for i in 0..300 {
        let t = i64::from(i) * 10;
        events.push(syn(backup, host(i), t));
        events.push(refuse(backup, host(i), t + 1));
        events.push(syn(backup6, ip(&format!("2001:db8:1::{i:x}")), t));
    }
    assert!(run(&mut det, &events).is_empty());
    assert_eq!(det.stats().allowlisted, 900);
    assert_eq!(det.stats().tracked_sources, 0);
    // The same behaviour from a neighbour that is not allowlisted.
    let events: Vec<_> = (0..20)
        .map(|i| syn(other, host(i), 5000 + i64::from(i)))
        .collect();
    let alerts = run(&mut det, &events);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].1.source_ip, Some(other));
}

#[test]
fn partly_successful_scanner_still_fires_trw() {
    // One probe in five accepted (the 1st, 6th, ...), the rest refused; the
    // fan-out threshold is out of reach so only the random walk can fire.
    let cfg = DetectConfig {
        fanout_threshold: 1000,
        ..one_scale()
    };
    let mut det = Detector::new(cfg);
    let mut events = Vec::new();
    for i in 0..10 {
        let t = i64::from(i) * 50;
        events.push(syn(scanner(), host(i), t));
        events.push(if i % 5 == 0 {
            accept(scanner(), host(i), t + 5)
        } else {
            refuse(scanner(), host(i), t + 5)
        });
    }
    let alerts = run(&mut det, &events);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    // S F F F F S F F: the walk is at 4.16 after the first five, 2.77 after
    // the second success, and crosses ln 99 = 4.60 at the 8th outcome.
    let (i, a) = &alerts[0];
    assert_eq!(*i, 15, "answer to the 8th probe");
    assert_eq!(a.kind, AlertKind::SmbScanTrw);
    assert_eq!(a.severity, Severity::Medium);
    assert_eq!(a.ts, at(7 * 50 + 5));
    let scan = a.scan.as_ref().unwrap();
    assert_eq!(
        (scan.distinct_destinations, scan.accepted, scan.refused),
        (8, 2, 6)
    );
    assert!(a.message.contains("6 failed, 2 accepted"), "{}", a.message);
}

#[test]
fn unanswered_probes_fail_at_the_response_timeout() {
    let mut det = Detector::new(one_scale());
    for i in 0..4 {
        assert!(det
            .observe(&syn(scanner(), host(i), i64::from(i) * 10))
            .is_empty());
    }
    // 3 s after the 4th SYN is still "within" the timeout.
    assert!(det.advance(at(30 + 3 * SEC)).is_empty());
    assert_eq!(det.stats().pending_pairs, 1);
    let alerts = det.advance(at(30 + 3 * SEC + 1));
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].kind, AlertKind::SmbScanTrw);
    assert_eq!(
        alerts[0].ts,
        at(30 + 3 * SEC),
        "decided at the deadline, not when noticed"
    );
    assert_eq!(alerts[0].scan.as_ref().unwrap().refused, 4);
}

#[test]
fn answers_at_the_timeout_count_late_ones_do_not() {
    let mut det = Detector::new(one_scale());
    det.observe(&syn(scanner(), host(1), 0));
    det.observe(&syn(scanner(), host(2), 0));
    det.observe(&accept(scanner(), host(1), 3 * SEC));
    det.observe(&accept(scanner(), host(2), 3 * SEC + 1));
    let s = &det.table.sources[det.table.source(&addr_key(scanner())).unwrap() as usize];
    assert_eq!((s.accepted, s.refused), (1, 1));
}

#[test]
fn refused_after_accepted_becomes_a_failure() {
    // Three refused probes, then one answered by SYN-ACK and then RST
    // (no client ACK between): the pair failed after all, so the walk
    // holds four failures and the scanner is found at the RST.
    let mut det = Detector::new(one_scale());
    let mut alerts = Vec::new();
    for i in 0..3 {
        let t = i64::from(i) * 100;
        alerts.extend(det.observe(&syn(scanner(), host(i), t)));
        alerts.extend(det.observe(&refuse(scanner(), host(i), t + 5)));
    }
    alerts.extend(det.observe(&syn(scanner(), host(3), 300)));
    alerts.extend(det.observe(&accept(scanner(), host(3), 305)));
    assert!(alerts.is_empty(), "F F F S: not yet");
    let alerts = det.observe(&refuse(scanner(), host(3), 306));
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(
        (alerts[0].kind, alerts[0].ts),
        (AlertKind::SmbScanTrw, at(306))
    );
    let scan = alerts[0].scan.as_ref().unwrap();
    assert_eq!((scan.accepted, scan.refused), (0, 4));
    assert_eq!(det.stats().accepted_then_refused, 1);
    // Further answers for the pair change nothing.
    assert!(det.observe(&refuse(scanner(), host(3), 307)).is_empty());
    assert!(det.observe(&accept(scanner(), host(3), 308)).is_empty());
    assert_eq!(det.stats().accepted_then_refused, 1);
    let s = &det.table.sources[det.table.source(&addr_key(scanner())).unwrap() as usize];
    assert_eq!(
        (s.accepted, s.refused, s.llr),
        (0, 4, 0.0),
        "walk restarted"
    );
}

#[test]
fn refused_after_accepted_corrects_the_walk_without_alerting() {
    // A client whose contacts succeed: S S S, then the third's RST. The
    // walk goes from three successes to two successes and a failure.
    let cfg = one_scale();
    let trw = trw::Trw::new(cfg.trw_theta0, cfg.trw_theta1, cfg.trw_pd, cfg.trw_pf);
    let mut det = Detector::new(cfg);
    let client = ip("192.0.2.7");
    for i in 0..3 {
        let t = i64::from(i) * 100;
        det.observe(&syn(client, host(i), t));
        det.observe(&accept(client, host(i), t + 5));
    }
    assert!(det.observe(&refuse(client, host(2), 206)).is_empty());
    let s = &det.table.sources[det.table.source(&addr_key(client)).unwrap() as usize];
    assert_eq!((s.accepted, s.refused), (2, 1));
    assert!(
        (s.llr - (2.0 * trw.success + trw.failure)).abs() < 1e-9,
        "{}",
        s.llr
    );
}

#[test]
fn class_follows_destinations_in_the_window() {
    let mut det = Detector::new(one_scale());
    let class = |det: &Detector| {
        det.table
            .class(det.table.source(&addr_key(scanner())).unwrap())
    };
    for i in 0..8 {
        det.observe(&syn(scanner(), host(i), i64::from(i)));
        det.observe(&accept(scanner(), host(i), i64::from(i) + 1));
    }
    assert_eq!(class(&det), 3, "8 destinations: the 8–15 class");
    // A minute later the eight have left the window: back to probation.
    det.observe(&syn(scanner(), host(100), MIN + 10));
    assert_eq!(class(&det), 0);
    det.observe(&syn(scanner(), host(101), MIN + 20));
    assert_eq!(class(&det), 1, "promoted on its second destination");
}

#[test]
fn most_specific_subnet_override_wins() {
    let cfg = DetectConfig {
        subnet: vec![
            SubnetOverride {
                cidr: "192.0.2.0/24".parse().unwrap(),
                fanout_threshold: 50,
                window: None,
                fanout_scales: None,
            },
            SubnetOverride {
                cidr: "192.0.2.128/25".parse().unwrap(),
                fanout_threshold: 5,
                window: None,
                fanout_scales: None,
            },
            SubnetOverride {
                cidr: "203.0.113.0/24".parse().unwrap(),
                fanout_threshold: 10,
                window: Some(Duration::from_secs(24 * 3600)),
                fanout_scales: None,
            },
        ],
        ..one_scale()
    };
    let first_alert_at = |src: &str, step: i64| {
        let mut det = Detector::new(cfg.clone());
        let src = ip(src);
        (0..100u32)
            .find(|&i| {
                let alerts = det.observe(&syn(src, host(i), i64::from(i) * step));
                alerts.iter().any(|a| a.kind == AlertKind::SmbScanFanout)
            })
            .map(|i| i + 1)
    };
    assert_eq!(first_alert_at("192.0.2.200", 10), Some(5), "/25 beats /24");
    assert_eq!(first_alert_at("192.0.2.20", 10), Some(50), "/24");
    assert_eq!(first_alert_at("198.51.100.9", 10), Some(20), "no override");
    // One host an hour: only the 24-hour window catches it.
    assert_eq!(first_alert_at("203.0.113.7", 60 * MIN), Some(10));
    assert_eq!(first_alert_at("198.51.100.9", 60 * MIN), None);
}

#[test]
fn ipv6_sources_and_mapped_addresses() {
    let mut det = Detector::new(one_scale());
    let src = ip("2001:db8::66");
    let events: Vec<_> = (0..20)
        .map(|i| {
            syn(
                src,
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i)),
                i64::from(i),
            )
        })
        .collect();
    let alerts = run(&mut det, &events);
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0].1;
    assert_eq!(a.source_ip, Some(src));
    let first = ip("2001:db8:1::");
    assert_eq!(a.scan.as_ref().unwrap().destinations[0], first);
    assert_eq!(
        a.community_id.as_deref(),
        Some(community_id_v1(src, first, events[0].sport, 445, 6, 0).as_str())
    );

    // An IPv4-mapped source is the same source as its IPv4 form.
    let mut det = Detector::new(one_scale());
    let mapped = ip("::ffff:192.0.2.66");
    let events: Vec<_> = (0..20)
        .map(|i| {
            syn(
                if i % 2 == 0 { mapped } else { scanner() },
                host(i),
                i64::from(i),
            )
        })
        .collect();
    let alerts = run(&mut det, &events);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].1.source_ip, Some(scanner()));
    assert_eq!(det.stats().tracked_sources, 1);
}

#[test]
fn idle_sources_are_forgotten() {
    let mut det = Detector::new(one_scale());
    det.observe(&syn(scanner(), host(1), 0));
    det.observe(&accept(scanner(), host(1), 1));
    det.observe(&syn(ip("192.0.2.7"), host(1), 5 * MIN));
    det.observe(&accept(ip("192.0.2.7"), host(1), 5 * MIN + 1));
    // Kept for max(window, hold_down) = 10 minutes after the last event.
    det.advance(at(10 * MIN));
    assert_eq!(det.stats().tracked_sources, 2);
    det.advance(at(10 * MIN + 1));
    assert_eq!(det.stats().tracked_sources, 1);
    det.advance(at(16 * MIN));
    let stats = det.stats();
    assert_eq!(
        (
            stats.tracked_sources,
            stats.tracked_pairs,
            stats.idle_expired
        ),
        (0, 0, 2)
    );
}

#[test]
fn out_of_order_events_take_the_latest_time() {
    let mut det = Detector::new(one_scale());
    let mut events: Vec<_> = (0..20)
        .map(|i| syn(scanner(), host(i), 1000 + i64::from(i)))
        .collect();
    // The 20th arrives stamped earlier (another CPU's ring buffer).
    events[19].ts = at(500);
    let alerts = run(&mut det, &events);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].1.ts, at(1018));
}

#[test]
fn responses_for_unknown_pairs_are_counted_and_ignored() {
    let mut det = Detector::new(one_scale());
    assert!(det.observe(&refuse(scanner(), host(1), 0)).is_empty());
    det.observe(&syn(scanner(), host(1), 0));
    det.observe(&refuse(scanner(), host(2), 1));
    let stats = det.stats();
    assert_eq!((stats.unmatched_responses, stats.tracked_sources), (2, 1));
}

/// The key is the 16-byte mapped form, built as one value.
#[test]
fn address_keys_are_the_mapped_form() {
    for a in [
        "192.0.2.66",
        "0.0.0.0",
        "255.255.255.255",
        "2001:db8::1",
        "::ffff:192.0.2.1",
        "::1",
    ] {
        let ip = ip(a);
        assert_eq!(
            addr_key(ip),
            smbwatch_common::addr::to_mapped(ip).octets(),
            "{a}"
        );
        assert_eq!(
            key_addr(&addr_key(ip.to_canonical())),
            ip.to_canonical(),
            "{a}"
        );
    }
}

mod cost;
mod flood;
mod limits;
