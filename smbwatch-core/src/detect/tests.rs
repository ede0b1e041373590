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
fn spoofed_flood_stays_bounded_and_the_real_scanner_is_caught() {
    let cfg = one_scale();
    let cap = cfg.max_sources;
    let mut det = Detector::new(cfg);
    let mut fanout = Vec::new();
    let mut scanner_probes = 0u32;
    for i in 0..1_000_000u32 {
        // 1 µs apart: the whole flood takes one second.
        let t = DateTime::from_timestamp_nanos((T0_MS * 1_000_000) + i64::from(i) * 1000);
        let spoofed = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        let mut e = syn(spoofed, host(i % 50), 0);
        e.ts = t;
        det.observe(&e);
        if i % 1000 == 999 {
            let mut e = syn(scanner(), host(1000 + scanner_probes), 0);
            e.ts = t;
            scanner_probes += 1;
            fanout.extend(
                det.observe(&e)
                    .into_iter()
                    .filter(|a| a.kind == AlertKind::SmbScanFanout),
            );
        }
        if i % 100_000 == 0 {
            assert!(det.stats().tracked_sources <= cap);
        }
    }
    let stats = det.stats();
    assert_eq!(stats.tracked_sources, cap);
    // The slabs never grew past the caps: that is the memory bound.
    assert_eq!(det.table.sources.len(), cap);
    assert!(det.table.pairs.len() <= det.config().max_pairs);
    assert!(stats.memory_bytes <= det.config().memory_bound());
    assert_eq!(stats.source_evictions, 1_000_000 + 1 - cap as u64);
    assert!(stats.cap_hits >= stats.source_evictions);
    let notice = det.take_cap_notice().expect("cap reported");
    assert_eq!((notice.cap, notice.limit), (Cap::Sources, cap));
    assert_eq!(det.take_cap_notice(), None, "reported once");
    // The scanner stayed active, so it was never the least recent source.
    let counts: Vec<_> = fanout
        .iter()
        .map(|a| a.scan.as_ref().unwrap().distinct_destinations)
        .collect();
    assert_eq!(
        counts,
        [20, 40, 80, 160, 320, 640],
        "first crossing, then each doubling"
    );
    assert!(fanout.iter().all(|a| a.source_ip == Some(scanner())));
}

/// A spoofed source: one of 2^24 addresses in 10.0.0.0/8.
fn spoofed(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i & 0x00ff_ffff)))
}

/// Event time in nanoseconds after T0.
fn at_ns(ns: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(T0_MS * 1_000_000 + ns)
}

#[test]
fn slow_scanner_inside_a_one_shot_spoofed_flood_is_caught() {
    // A scanner probing a host every 3 s (21 probes, each refused 10 ms
    // later) inside a SYN flood of 35,000 new spoofed sources per second,
    // each sending one SYN. The table holds 50,000 sources: 2.1 million
    // flood sources overflow it 42 times, and probation (one destination)
    // turns over every 1.4 s, before the scanner's next probe. Its first
    // probe is remembered by the recent filter, so its second comes back
    // in the 2–3 class, which one-shot sources never evict.
    let cap = 50_000;
    let cfg = DetectConfig {
        max_sources: cap,
        ..one_scale()
    };
    let mut det = Detector::new(cfg);
    let flood_per_sec: i64 = 35_000;
    let gap_ns = 1_000_000_000 / flood_per_sec;
    let mut alerts = Vec::new();
    let mut flood = 0u32;
    for probe in 0..21u32 {
        let t = i64::from(probe) * 3_000_000_000;
        let mut e = syn(scanner(), host(probe), 0);
        e.ts = at_ns(t);
        alerts.extend(det.observe(&e));
        // The flood fills the 3 s until the next probe; the RST comes 10 ms in.
        let mut ns = t + gap_ns;
        let mut refused = false;
        while ns < t + 3_000_000_000 {
            if !refused && ns >= t + 10_000_000 {
                let mut e = refuse(scanner(), host(probe), 0);
                e.ts = at_ns(t + 10_000_000);
                alerts.extend(det.observe(&e));
                refused = true;
            }
            let mut e = syn(spoofed(flood), host(1000 + flood % 50), 0);
            e.ts = at_ns(ns);
            alerts.extend(det.observe(&e));
            flood += 1;
            ns += gap_ns;
        }
    }
    assert!(flood as usize >= 10 * cap, "{flood} flood sources");
    let stats = det.stats();
    assert!(stats.tracked_sources <= cap);
    assert!(stats.memory_bytes <= det.config().memory_bound());
    assert_eq!(det.table.sources.len(), cap, "the slab stopped at the cap");
    assert!(alerts.iter().all(|a| a.source_ip == Some(scanner())));
    let fanout = of_kind_a(&alerts, AlertKind::SmbScanFanout);
    assert_eq!(fanout.len(), 1, "{alerts:#?}");
    let scan = fanout[0].scan.as_ref().unwrap();
    // Probes 2 to 21 are in the record (the first was flushed from probation).
    assert_eq!(scan.distinct_destinations, 20);
    assert_eq!(fanout[0].ts, at(60 * SEC));
    let trw = of_kind_a(&alerts, AlertKind::SmbScanTrw);
    assert_eq!(trw.len(), 1, "{alerts:#?}");
    // Four refusals in the record: probes 2 to 5, the 5th refused at 12.01 s.
    assert_eq!(trw[0].ts, at(12 * SEC + 10));
    // The scanner, and a few flood sources by fingerprint collisions (about
    // 16 in 4 million).
    assert!((1..=20).contains(&stats.recalled_sources), "{stats:?}");
    // Every eviction hit a one-destination source.
    assert_eq!(
        stats.source_evictions_by_class[0], stats.source_evictions,
        "{stats:?}"
    );
    assert_eq!(stats.source_evictions, u64::from(flood) + 2 - cap as u64);
}

#[test]
fn two_destination_spoofed_sources_cannot_flush_a_20_destination_scanner() {
    // The scanner reaches 20 hosts; then 100,000 spoofed sources each SYN
    // two hosts (20 times the 5,000-source table); then the scanner goes
    // on to 40 hosts within its window. Its record survived: the second
    // alert is the doubling from 20 to 40 with every host in the evidence.
    let cap = 5_000;
    let cfg = DetectConfig {
        max_sources: cap,
        ..one_scale()
    };
    let mut det = Detector::new(cfg);
    let mut alerts = Vec::new();
    for i in 0..20 {
        alerts.extend(det.observe(&syn(scanner(), host(i), i64::from(i))));
    }
    let spoofs = 100_000u32;
    for i in 0..spoofs {
        // 1 to 31 s, two SYNs 100 µs apart per source.
        let ns = SEC * 1_000_000 + i64::from(i) * 300_000;
        for (k, d) in [(0, 2000 + i % 40), (1, 2040 + i % 40)] {
            let mut e = syn(spoofed(i), host(d), 0);
            e.ts = at_ns(ns + k * 100_000);
            alerts.extend(det.observe(&e));
        }
    }
    for i in 20..40 {
        alerts.extend(det.observe(&syn(scanner(), host(i), 31 * SEC + i64::from(i))));
    }
    let stats = det.stats();
    assert!(stats.tracked_sources <= cap);
    let fanout = of_kind_a(&alerts, AlertKind::SmbScanFanout);
    let counts: Vec<_> = fanout
        .iter()
        .map(|a| {
            (
                a.source_ip,
                a.severity,
                a.scan.as_ref().unwrap().distinct_destinations,
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            (Some(scanner()), Severity::High, 20),
            (Some(scanner()), Severity::Critical, 40)
        ]
    );
    assert!(
        fanout[1].message.contains("from 20"),
        "{}",
        fanout[1].message
    );
    // The flood evicted itself: two-destination sources (class 2–3) and a
    // few caught between their two SYNs; never the scanner's class.
    assert_eq!(
        stats.source_evictions,
        u64::from(spoofs) + 1 - cap as u64,
        "{stats:?}"
    );
    assert!(stats.source_evictions_by_class[1] > 0);
    assert_eq!(stats.source_evictions_by_class[2..], [0; CLASSES - 2]);
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
fn probation_keeps_room_for_newcomers() {
    // 16 sources with two destinations fill a 16-source table; probation's
    // reserve is 2. Newcomers first evict from the 2–3 class until
    // probation holds more than its reserve, then evict each other.
    let cfg = DetectConfig {
        max_sources: 16,
        ..one_scale()
    };
    let mut det = Detector::new(cfg);
    for s in 0..16u32 {
        let src = IpAddr::V4(Ipv4Addr::from(0xc000_0200 + s));
        det.observe(&syn(src, host(0), i64::from(s)));
        det.observe(&syn(src, host(1), i64::from(s)));
    }
    for n in 0..6 {
        det.observe(&syn(spoofed(n), host(2), 100 + i64::from(n)));
    }
    let stats = det.stats();
    assert_eq!(stats.source_evictions_by_class[..2], [3, 3], "{stats:?}");
    // The oldest newcomers went; the newest three are tracked.
    for n in 0..3 {
        assert_eq!(det.table.source(&addr_key(spoofed(n))), None, "{n}");
    }
    for n in 3..6 {
        assert!(det.table.source(&addr_key(spoofed(n))).is_some(), "{n}");
    }
}

fn of_kind_a(alerts: &[Alert], kind: AlertKind) -> Vec<&Alert> {
    alerts.iter().filter(|a| a.kind == kind).collect()
}

#[test]
fn memory_is_bounded_by_the_caps() {
    // Both caps full: 1,000 sources with 4 destinations each.
    let cfg = DetectConfig {
        max_sources: 1000,
        max_pairs: 4000,
        evasion_destinations: 0,
        ..one_scale()
    };
    // The figures in docs/detection.md and docs/sizing.md: the address
    // table alone, with the evasion rule's, and with the prefix table's too
    // (the default).
    let mb = |c: DetectConfig| c.memory_bound() / 1_000_000;
    let no_evasion = DetectConfig {
        evasion_destinations: 0,
        ..one_scale()
    };
    assert_eq!(
        (mb(no_evasion), mb(one_scale()), mb(DetectConfig::default())),
        (44, 46, 57)
    );
    let bound = cfg.memory_bound();
    // 239 bytes per source (record 192, free list 4, index 10.7, recent
    // filter 32) and 79 per pair (record 64, free list 4, index 10.7).
    assert_eq!(
        bound,
        1000 * 192 + 1000 * 4 + 167 * 64 + 1000 * 32 + 4000 * 68 + 667 * 64
    );
    let mut det = Detector::new(cfg);
    for s in 0..2000u32 {
        let src = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + s));
        for d in 0..4 {
            det.observe(&syn(src, host(d), i64::from(s)));
        }
    }
    let stats = det.stats();
    assert_eq!((stats.tracked_sources, stats.tracked_pairs), (1000, 4000));
    // Full: the bound, less the free lists' share (they only hold slots
    // freed and not yet reused).
    assert!(stats.memory_bytes <= bound);
    assert!(
        stats.memory_bytes >= bound - 5000 * 4,
        "{}",
        stats.memory_bytes
    );
}

#[test]
fn global_pair_cap_evicts_least_recent_sources() {
    let cfg = DetectConfig {
        max_pairs: 100,
        max_destinations_per_source: 50,
        ..one_scale()
    };
    let mut det = Detector::new(cfg);
    let mut t = 0;
    for s in 0..10u32 {
        let src = IpAddr::V4(Ipv4Addr::from(0xc000_0200 + s));
        for d in 0..15 {
            det.observe(&syn(src, host(d), t));
            t += 1;
        }
    }
    let stats = det.stats();
    // Each time the 100 pairs are full the least recent source goes:
    // the last six sources remain, 90 pairs.
    assert_eq!((stats.tracked_sources, stats.tracked_pairs), (6, 90));
    assert_eq!(stats.source_evictions, 4);
    assert_eq!(det.take_cap_notice().map(|n| n.cap), Some(Cap::Pairs));
}

#[test]
fn per_source_destination_cap_saturates_the_count() {
    let cfg = DetectConfig {
        max_destinations_per_source: 64,
        ..one_scale()
    };
    let mut det = Detector::new(cfg);
    let events: Vec<_> = (0..1000)
        .map(|i| syn(scanner(), host(i), i64::from(i)))
        .collect();
    let alerts = run(&mut det, &events);
    let counts: Vec<_> = alerts
        .iter()
        .map(|(_, a)| a.scan.as_ref().unwrap().distinct_destinations)
        .collect();
    assert_eq!(counts, [20, 40], "the count stops at 64, so no alert at 80");
    assert_eq!(det.stats().tracked_pairs, 64);
    assert_eq!(det.stats().destination_evictions, 1000 - 64);
    let notice = det.take_cap_notice().unwrap();
    assert_eq!(
        (notice.cap, notice.limit, notice.source),
        (Cap::DestinationsPerSource, 64, scanner())
    );
    assert_eq!(det.take_cap_notice(), None);
}

/// A sweep of `n` hosts starting at `first`, every SYN answered.
fn answered_sweep(first: u32, n: u32, start: i64, step: i64) -> Vec<GatewayEvent> {
    (0..n)
        .flat_map(|i| {
            let t = start + i64::from(i) * step;
            [
                syn(scanner(), host(first + i), t),
                accept(scanner(), host(first + i), t + 1),
            ]
        })
        .collect()
}

#[test]
fn suppression_holds_down_and_escalates_on_doubling() {
    let mut det = Detector::new(one_scale());
    // 200 hosts in 20 s: alerts at 20, 40 (doubled), 80, 160.
    let alerts = run(&mut det, &answered_sweep(0, 200, 0, 100));
    let counts: Vec<_> = alerts
        .iter()
        .map(|(_, a)| a.scan.as_ref().unwrap().distinct_destinations)
        .collect();
    assert_eq!(counts, [20, 40, 80, 160]);
    let severities: Vec<_> = alerts.iter().map(|(_, a)| a.severity).collect();
    assert_eq!(
        severities,
        [
            Severity::High,
            Severity::Critical,
            Severity::Critical,
            Severity::Critical
        ]
    );
    assert!(alerts[1]
        .1
        .message
        .contains("doubled since the last alert, from 20"));
    let last_alert = alerts[3].1.ts;

    // Five minutes later another sweep of 25 (the first left the window
    // long ago): a new sweep, a new alert at its 20th host.
    let alerts = run(&mut det, &answered_sweep(1000, 25, 5 * MIN, 100));
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].1.severity, Severity::High);
    assert_eq!(alerts[0].1.ts, at(5 * MIN + 19 * 100));
    assert!(
        alerts[0].1.ts < last_alert + chrono::Duration::minutes(10),
        "within the old hold-down"
    );

    // A sweep that goes on at 20 hosts a minute for 10 minutes stays above
    // half the threshold: one alert, not one per minute or per hold-down.
    let alerts = run(&mut det, &answered_sweep(3000, 200, 10 * MIN, 3 * SEC));
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    // Pauses that let the count fall below half the threshold make each
    // burst a new sweep.
    let mut bursts = Vec::new();
    for b in 0..3 {
        bursts.extend(answered_sweep(
            5000 + b * 100,
            20,
            30 * MIN + i64::from(b) * 2 * MIN,
            100,
        ));
    }
    assert_eq!(run(&mut det, &bursts).len(), 3);
}

#[test]
fn another_kind_is_not_suppressed() {
    let mut det = Detector::new(one_scale());
    // A sweep nobody answers: fan-out at the 20th SYN, TRW when the 4th
    // probe times out; a second TRW crossing within the hold-down is held.
    let events: Vec<_> = (0..20)
        .map(|i| syn(scanner(), host(i), i64::from(i)))
        .collect();
    let mut alerts: Vec<_> = run(&mut det, &events).into_iter().map(|(_, a)| a).collect();
    alerts.extend(det.advance(at(10 * SEC)));
    let kinds: Vec<_> = alerts.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [AlertKind::SmbScanFanout, AlertKind::SmbScanTrw]);
    assert_eq!(alerts[1].ts, at(3 + 3 * SEC), "the 4th SYN's deadline");
    // 20 failures: the walk crossed 5 times (every 4), 4 of them held back.
    assert_eq!(det.stats().suppressed, 4);
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

/// Throughput on synthetic workloads; prints, asserts nothing about time.
/// `cargo test --release -p smbwatch --lib detect::tests::throughput -- --ignored --nocapture`
#[test]
#[ignore = "measurement: run in release with --ignored --nocapture"]
fn throughput() {
    fn event(kind: GatewayEventKind, src: u32, dst: u32, ns: i64) -> GatewayEvent {
        GatewayEvent {
            ts: DateTime::from_timestamp_nanos(T0_MS * 1_000_000 + ns),
            kind,
            src: IpAddr::V4(Ipv4Addr::from(src)),
            dst: IpAddr::V4(Ipv4Addr::from(dst)),
            sport: (src ^ dst) as u16,
            dport: 445,
            ifindex: 1,
            vlan: None,
            fragmented: false,
            after_accept: false,
            kernel_fanout: None,
            activity: None,
            src_mac: None,
        }
    }
    fn measure(name: &str, events: &[GatewayEvent]) {
        // Best of three runs: the machine is shared.
        let mut best = f64::MAX;
        for _ in 0..3 {
            let mut det = Detector::new(one_scale());
            let start = std::time::Instant::now();
            let alerts: usize = events.iter().map(|e| det.observe(e).len()).sum();
            best = best.min(start.elapsed().as_secs_f64());
            assert!(
                det.stats().tracked_sources <= det.config().max_sources,
                "{alerts}"
            );
        }
        let n = events.len() as f64;
        println!(
            "{name}: {:.0} ns/event, {:.2} M events/s",
            best * 1e9 / n,
            n / best / 1e6
        );
    }
    let n = 2_000_000u32;
    let mut x: u32 = 12345;
    let clients: Vec<_> = (0..n / 2)
        .flat_map(|i| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let c = (x >> 8) % 20_000;
            let (src, dst) = (0x0a00_0000 + c, 0xc633_6400 + (c + (x & 1) * 7) % 500);
            let t = i64::from(i) * 1000;
            [
                event(GatewayEventKind::NewPair, src, dst, t),
                event(GatewayEventKind::Accepted, src, dst, t + 500),
            ]
        })
        .collect();
    measure("20k clients, two servers each, answered", &clients);
    let flood: Vec<_> = (0..n)
        .map(|i| {
            event(
                GatewayEventKind::NewPair,
                0x0b00_0000 + i,
                0xc633_6401,
                i64::from(i) * 1000,
            )
        })
        .collect();
    measure("spoofed flood, new source per event", &flood);
    let scanners: Vec<_> = (0..n / 2)
        .flat_map(|i| {
            let (src, dst) = (0x0c00_0000 + i % 1000, 0x2000_0000 + i / 1000);
            let t = i64::from(i) * 1000;
            [
                event(GatewayEventKind::NewPair, src, dst, t),
                event(GatewayEventKind::Refused, src, dst, t + 100),
            ]
        })
        .collect();
    measure("1000 scanners, refused", &scanners);
}

/// Per-event cost under source churn (a spoofed flood at 35,000 new sources
/// per second) next to a bare bounded hash map of the same keys.
/// `cargo test --release -p smbwatch --lib detect::tests::churn_cost -- --ignored --nocapture`
#[test]
#[ignore = "measurement: run in release with --ignored --nocapture"]
fn churn_cost() {
    // SMBWATCH_CHURN=EVENTS,ROUNDS for a shorter run (e.g. under callgrind).
    let (n, rounds) = std::env::var("SMBWATCH_CHURN")
        .ok()
        .and_then(|v| {
            let (n, r) = v.split_once(',')?;
            Some((n.parse().ok()?, r.parse().ok()?))
        })
        .unwrap_or((2_000_000, 3));
    let events = bench::churn_events(n, 35_000);
    for (name, cfg) in [
        ("default", DetectConfig::default()),
        ("one scale, no prefixes", one_scale()),
    ] {
        let c = bench::measure(&cfg, &events, rounds);
        println!(
        "churn ({name}): detector {:.0} ns/event ({:.0} with prefetch {} ahead), bounded HashMap {:.0} ns/event, ratio {:.2} ({:.2}) ({} evictions, {} alerts)",
        c.detector_ns,
        c.detector_lookahead_ns,
        bench::LOOKAHEAD,
        c.baseline_ns,
        c.detector_ns / c.baseline_ns,
        c.detector_lookahead_ns / c.baseline_ns,
        c.source_evictions,
        c.alerts
    );
    }
}

/// Under a flood the kernel sheds a scanner's first probe; its later ones
/// come as a tracked source's (`kernel_fanout`): the destination the
/// detector never heard of still counts, so 20 hosts alert at the 20th.
#[test]
fn a_shed_first_probe_counts_through_the_kernels_hint() {
    let mut det = Detector::new(one_scale());
    let s = scanner();
    // Probe 1 (host 0) was shed: the detector sees hosts 1..20.
    let events: Vec<GatewayEvent> = (1..20u32)
        .map(|i| GatewayEvent {
            kernel_fanout: Some(i as u16 + 1),
            activity: None,
            src_mac: None,
            fragmented: i % 2 == 0,
            ..syn(s, host(i), i64::from(i) * 3 * SEC)
        })
        .collect();
    let alerts = run(&mut det, &events);
    let fanout = of_kind(&alerts, AlertKind::SmbScanFanout);
    assert_eq!(fanout.len(), 1, "{alerts:#?}");
    let (at, a) = fanout[0];
    assert_eq!(*at, 18, "at the 19th event seen, the 20th host");
    let scan = a.scan.as_ref().unwrap();
    assert_eq!(scan.distinct_destinations, 20);
    assert_eq!(
        scan.destinations.len(),
        19,
        "the unseen one cannot be listed"
    );
    assert_eq!(scan.fragmented_syns, 9);
    assert!(a.message.contains("as IP fragments"), "{}", a.message);
    assert_eq!(det.stats().unseen_destinations, 1);

    // Without the hint (nothing shed) the same 19 hosts stay below 20.
    let mut det = Detector::new(one_scale());
    let plain: Vec<GatewayEvent> = (1..20u32)
        .map(|i| syn(s, host(i), i64::from(i) * 3 * SEC))
        .collect();
    assert!(of_kind(&run(&mut det, &plain), AlertKind::SmbScanFanout).is_empty());
}
