//! Measurements, `#[ignore]`d: throughput on synthetic workloads and the
//! per-event cost under source churn (they print, they assert no time).

use super::*;

/// Throughput on synthetic workloads; prints, asserts nothing about time.
/// `cargo test --release -p smbwatch-core --lib detect::tests::cost::throughput -- --ignored --nocapture`
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
/// `cargo test --release -p smbwatch-core --lib detect::tests::cost::churn_cost -- --ignored --nocapture`
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
    // The default and what each part of it costs: the longer scales, the
    // prefix aggregation, both off.
    let three_scales = DetectConfig {
        prefix: one_scale().prefix,
        ..DetectConfig::default()
    };
    let prefixes_one_scale = DetectConfig {
        fanout_scales: Vec::new(),
        ..DetectConfig::default()
    };
    for (name, cfg) in [
        ("default", DetectConfig::default()),
        ("three scales, no prefixes", three_scales),
        ("one scale, prefixes", prefixes_one_scale),
        ("one scale, no prefixes", one_scale()),
    ] {
        // SMBWATCH_CHURN_ONLY=NAME: that configuration alone (for a profiler).
        if std::env::var("SMBWATCH_CHURN_ONLY").is_ok_and(|only| only != name) {
            continue;
        }
        let c = bench::measure(&cfg, &events, rounds, bench::thread_cpu);
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
