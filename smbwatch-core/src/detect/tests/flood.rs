//! Spoofed floods: the table stays bounded, one-shot sources evict each
//! other and never a scanner, and a scanner inside the flood is caught.

use super::*;

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
