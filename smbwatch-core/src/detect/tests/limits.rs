//! Caps in bytes, entries and destinations per source, and the hold-down
//! that suppresses and escalates.

use super::*;

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
