//! Fan-out over several time scales, new sweeps in later epochs, prefix
//! aggregation and the evasion rule, on scripted events (time from the
//! events). Shapes are generated from a few seeds, not tuned to one case.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, Utc};

use super::*;
use crate::alert::AlertKind;
use crate::event::{GatewayEvent, GatewayEventKind, PairActivity};

const T0_MS: i64 = 1_790_000_000_000;
const SEC: i64 = 1000;
const MIN: i64 = 60 * SEC;

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(T0_MS + ms).unwrap()
}

/// xorshift: the shapes' jitter, reproducible per seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Target host `i` (198.51.100.0 onwards; only numbers, nothing is sent).
fn host(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(198, 51, 100, 0)) + i,
    ))
}

fn ev(kind: GatewayEventKind, src: IpAddr, dst: IpAddr, ms: i64) -> GatewayEvent {
    GatewayEvent {
        ifindex: 3,
        ..GatewayEvent::new(at(ms), kind, src, dst, 40_000, 445)
    }
}

fn syn(src: IpAddr, dst: IpAddr, ms: i64) -> GatewayEvent {
    ev(GatewayEventKind::NewPair, src, dst, ms)
}

/// The pair used again in a later activity epoch (the kernel's report).
fn active(src: IpAddr, dst: IpAddr, ms: i64) -> GatewayEvent {
    GatewayEvent {
        activity: Some(PairActivity {
            syns: 1,
            accepted: true,
            ..PairActivity::default()
        }),
        ..ev(GatewayEventKind::Active, src, dst, ms)
    }
}

/// Feed events in time order (stable for equal times); the alerts.
fn run(det: &mut Detector, mut events: Vec<GatewayEvent>) -> Vec<Alert> {
    events.sort_by_key(|e| e.ts);
    let mut out = Vec::new();
    for e in &events {
        out.extend(det.observe(e));
    }
    out.extend(det.advance(events.last().map_or(at(0), |e| e.ts) + chrono::Duration::seconds(10)));
    out
}

/// The scales of `src`'s own fan-out alerts, in order (doublings left out).
fn fanout_scales(alerts: &[Alert], src: IpAddr) -> Vec<String> {
    alerts
        .iter()
        .filter(|a| a.kind == AlertKind::SmbScanFanout && a.source_ip == Some(src))
        .filter(|a| a.scan.as_ref().unwrap().prefix.is_none() && !doubled(a))
        .map(|a| a.scan.as_ref().unwrap().scale.clone().unwrap())
        .collect()
}

fn doubled(a: &Alert) -> bool {
    a.message.contains("doubled")
}

fn prefix_alerts(alerts: &[Alert]) -> Vec<&Alert> {
    alerts
        .iter()
        .filter(|a| a.scan.as_ref().is_some_and(|s| s.prefix.is_some()))
        .collect()
}

/// A sweep of `n` hosts from `first`, every `step` ms from `start`, each
/// answered (SYN-ACK) 2 ms later; `kind` for the SYNs.
fn sweep(
    src: IpAddr,
    first: u32,
    n: u32,
    start: i64,
    step: i64,
    kind: GatewayEventKind,
) -> Vec<GatewayEvent> {
    (0..n)
        .flat_map(|i| {
            let t = start + i64::from(i) * step;
            let mut s = ev(kind, src, host(first + i), t);
            if kind == GatewayEventKind::Active {
                s = active(src, host(first + i), t);
            }
            [
                s,
                ev(GatewayEventKind::Accepted, src, host(first + i), t + 2),
            ]
        })
        .collect()
}

/// The same sweep twice, 2 min apart (a 1-minute epoch: the kernel
/// reports the second as `active`): two fan-out alerts on the 1-minute
/// scale, whatever the sweep's size and pace; a sweep continuing for 10
/// minutes at the same pace alerts once per scale at most, not once per
/// minute.
#[test]
fn second_sweep_in_a_later_epoch_alerts_again() {
    let src: IpAddr = "192.0.2.66".parse().unwrap();
    for (n, step) in [(30u32, 500i64), (25, 2000), (60, 100), (256, 50)] {
        let mut det = Detector::new(DetectConfig::default());
        let first = sweep(src, 0, n, 0, step, GatewayEventKind::NewPair);
        let end = i64::from(n) * step;
        let second = sweep(src, 0, n, end + 2 * MIN, step, GatewayEventKind::Active);
        let mut events = first;
        events.extend(second);
        let alerts = run(&mut det, events);
        let scales = fanout_scales(&alerts, src);
        let one_minute = scales.iter().filter(|s| *s == "1m").count();
        assert_eq!(one_minute, 2, "{n} hosts every {step} ms: {scales:?}");
        assert!(
            alerts.iter().all(|a| a.kind == AlertKind::SmbScanFanout),
            "{alerts:#?}"
        );
        // The second alert comes with the second sweep.
        let second = alerts
            .iter()
            .filter(|a| !doubled(a) && a.scan.as_ref().unwrap().scale.as_deref() == Some("1m"))
            .nth(1)
            .unwrap();
        assert!(second.ts >= at(end + 2 * MIN), "{second:#?}");
    }
    // Continuing: 20 new hosts a minute for 7.5 minutes, and the same
    // hosts again at that pace: one alert per scale, none repeated.
    for again in [false, true] {
        let mut events = sweep(src, 0, 150, 0, 3 * SEC, GatewayEventKind::NewPair);
        if again {
            events.extend(sweep(
                src,
                0,
                150,
                450 * SEC,
                3 * SEC,
                GatewayEventKind::Active,
            ));
        }
        let mut det = Detector::new(DetectConfig::default());
        let alerts = run(&mut det, events);
        assert_eq!(fanout_scales(&alerts, src), ["1m", "10m"], "{alerts:#?}");
        assert!(alerts.iter().all(|a| !doubled(a)));
    }
}

/// One new answered host every 4 s (200 hosts): never 20 in a minute, but
/// 100 within 10 minutes. With jittered pace (3.5-4.5 s) and three seeds.
#[test]
fn slow_answered_sweep_raises_the_10_minute_scale() {
    for seed in [1u64, 7, 99] {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
        let src: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10 + seed as u8));
        let mut t = 0;
        let mut events = Vec::new();
        for i in 0..200 {
            events.push(syn(src, host(i), t));
            events.push(ev(GatewayEventKind::Accepted, src, host(i), t + 3));
            t += 3500 + rng.below(1001) as i64;
        }
        let mut det = Detector::new(DetectConfig::default());
        let alerts = run(&mut det, events);
        let scales = fanout_scales(&alerts, src);
        assert_eq!(
            scales.first().map(String::as_str),
            Some("10m"),
            "seed {seed}: {scales:?}"
        );
        let a = alerts
            .iter()
            .find(|a| a.kind == AlertKind::SmbScanFanout)
            .unwrap();
        let scan = a.scan.as_ref().unwrap();
        assert_eq!((scan.distinct_destinations, scan.window_secs), (100, 600));
        assert!(
            a.message
                .contains("within 10m (fan-out scale 10m: 100 hosts)"),
            "{}",
            a.message
        );
        assert!(!scales.contains(&"1m".to_owned()));
        assert!(
            !alerts.iter().any(|a| a.kind == AlertKind::SmbScanTrw),
            "all answered"
        );
    }
}

/// 19 hosts per 60 s for an hour (1,140 hosts): the 1-minute scale never
/// fires; the 10-minute one does first, and the hour's 300 raises the
/// 1-hour scale as an escalation. Evenly spread and in bursts.
#[test]
fn nineteen_a_minute_for_an_hour_raises_the_hour_scale() {
    let src: IpAddr = "203.0.113.7".parse().unwrap();
    for burst in [false, true] {
        let mut events = Vec::new();
        for m in 0..60u32 {
            for k in 0..19u32 {
                let offset = if burst {
                    i64::from(k) * 100
                } else {
                    i64::from(k) * 60 * SEC / 19
                };
                events.push(syn(src, host(m * 19 + k), i64::from(m) * MIN + offset));
            }
        }
        let mut det = Detector::new(DetectConfig::default());
        let alerts = run(&mut det, events);
        let scales = fanout_scales(&alerts, src);
        assert!(!scales.contains(&"1m".to_owned()), "{scales:?}");
        assert!(
            scales.contains(&"1h".to_owned()),
            "burst {burst}: {scales:?}"
        );
        let hour = alerts
            .iter()
            .find(|a| a.scan.as_ref().unwrap().scale.as_deref() == Some("1h"))
            .unwrap();
        assert_eq!(hour.scan.as_ref().unwrap().distinct_destinations, 300);
        assert!(
            hour.message.contains("fan-out scale 1h: 300 hosts"),
            "{}",
            hour.message
        );
    }
}

/// Each scale counts exactly: 99 distinct hosts in 10 minutes do not
/// alert, the 100th does (thresholds and windows from a subnet rule too).
#[test]
fn scales_count_exactly_at_the_threshold() {
    let src: IpAddr = "192.0.2.50".parse().unwrap();
    for (n, alert) in [(99u32, false), (100, true)] {
        let mut det = Detector::new(DetectConfig::default());
        // 99 or 100 hosts spread over 9 min 50 s, a few revisited.
        let mut events: Vec<_> = (0..n)
            .map(|i| syn(src, host(i), i64::from(i) * (590 * SEC) / i64::from(n)))
            .collect();
        events.push(syn(src, host(3), 595 * SEC));
        let alerts = run(&mut det, events);
        assert_eq!(!fanout_scales(&alerts, src).is_empty(), alert, "{n}");
    }
    let cfg = DetectConfig {
        subnet: vec![SubnetOverride {
            cidr: "192.0.2.0/24".parse().unwrap(),
            fanout_threshold: 50,
            window: None,
            fanout_scales: Some(vec![FanoutScale {
                window: std::time::Duration::from_secs(120),
                threshold: 60,
            }]),
        }],
        ..DetectConfig::default()
    };
    let mut det = Detector::new(cfg);
    let alerts = run(
        &mut det,
        sweep(src, 0, 70, 0, SEC, GatewayEventKind::NewPair),
    );
    assert_eq!(fanout_scales(&alerts, src), ["1m", "2m"]);
}

fn v4_member(net: [u8; 3], i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(net[0], net[1], net[2], (i % 254 + 1) as u8))
}

/// 25 sources of one /24 sweeping together (each probing a few hosts,
/// none near a threshold alone): one prefix fan-out alert naming the /24,
/// its 25 members and the most active ones; no alert for any address.
#[test]
fn sources_of_one_24_sweeping_together_raise_one_prefix_alert() {
    for seed in [3u64, 11, 42] {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ seed);
        let members = 25u32;
        let mut events = Vec::new();
        let mut next_host = 0;
        for m in 0..members {
            let src = v4_member([203, 0, 113], m * 7 + seed as u32);
            // Two or three probes: short of TRW's four failures alone.
            for _ in 0..(2 + rng.below(2)) {
                let t = rng.below(50_000) as i64;
                events.push(syn(src, host(next_host), t));
                events.push(ev(GatewayEventKind::Refused, src, host(next_host), t + 1));
                next_host += 1;
            }
        }
        let mut det = Detector::new(DetectConfig::default());
        let alerts = run(&mut det, events);
        let pre = prefix_alerts(&alerts);
        let fan: Vec<_> = pre
            .iter()
            .filter(|a| a.kind == AlertKind::SmbScanFanout && !doubled(a))
            .collect();
        assert_eq!(fan.len(), 1, "seed {seed}: {alerts:#?}");
        for a in &pre {
            let p = a.scan.as_ref().unwrap().prefix.as_ref().unwrap();
            assert_eq!(p.prefix.to_string(), "203.0.113.0/24");
        }
        let p = fan[0].scan.as_ref().unwrap().prefix.as_ref().unwrap();
        assert_eq!(p.prefix.to_string(), "203.0.113.0/24");
        assert!(p.members >= 2 && p.members <= members, "{}", p.members);
        assert!(!p.top_members.is_empty() && p.top_members.len() <= prefix::TOP_MEMBERS);
        assert!(
            fan[0].message.starts_with("203.0.113.0/24 ("),
            "{}",
            fan[0].message
        );
        assert_eq!(fan[0].source_ip, Some(p.top_members[0]));
        assert!(
            alerts
                .iter()
                .all(|a| a.scan.as_ref().unwrap().prefix.is_some()),
            "no address alone crosses: {alerts:#?}"
        );
        let st = det.stats();
        assert_eq!(st.prefix_alerts as usize, prefix_alerts(&alerts).len());
    }
}

/// 250 refused probes from 250 addresses of one /64 (each address one
/// probe to its own host): TRW per prefix, one alert naming the /64 (one
/// address doing the same raises its own alerts; see below).
#[test]
fn refused_probes_from_many_addresses_of_one_64_raise_one_prefix_alert() {
    for (seed, spread_ms) in [(5u64, 10i64), (8, 400), (13, 2000)] {
        let mut rng = Rng(0xdead_beef ^ seed);
        let mut events = Vec::new();
        for i in 0..250u32 {
            let src = IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0,
                0x64,
                rng.below(65536) as u16,
                rng.below(65536) as u16,
                0,
                i as u16 + 1,
            ));
            let t = i64::from(i) * spread_ms;
            events.push(syn(src, host(i), t));
            events.push(ev(GatewayEventKind::Refused, src, host(i), t + 1));
        }
        let mut det = Detector::new(DetectConfig::default());
        let alerts = run(&mut det, events);
        let pre = prefix_alerts(&alerts);
        let trw: Vec<_> = pre
            .iter()
            .filter(|a| a.kind == AlertKind::SmbScanTrw)
            .collect();
        assert_eq!(trw.len(), 1, "spread {spread_ms}: {alerts:#?}");
        let p = trw[0].scan.as_ref().unwrap().prefix.as_ref().unwrap();
        assert_eq!(p.prefix.to_string(), "2001:db8:0:64::/64");
        assert!(p.members >= 4, "{}", p.members);
        // The fan-out of the prefix (250 hosts) alerts too, once per scale.
        let fan: Vec<_> = pre
            .iter()
            .filter(|a| a.kind == AlertKind::SmbScanFanout && !doubled(a))
            .collect();
        assert!(!fan.is_empty() && fan.len() <= MAX_SCALES, "{fan:#?}");
        for a in &pre {
            let p = a.scan.as_ref().unwrap().prefix.as_ref().unwrap();
            assert_eq!(p.prefix.to_string(), "2001:db8:0:64::/64");
        }
        assert!(
            alerts
                .iter()
                .all(|a| a.scan.as_ref().unwrap().prefix.is_some()),
            "one probe per address alerts no address"
        );
    }
}

/// A single address crossing on its own raises its own alert (and its
/// prefix, with one member, none).
#[test]
fn a_single_address_still_raises_its_own_alert() {
    for (src, refused) in [
        ("203.0.113.9", false),
        ("2001:db8::77", true),
        ("192.0.2.200", true),
    ] {
        let src: IpAddr = src.parse().unwrap();
        let events: Vec<_> = (0..40u32)
            .flat_map(|i| {
                let t = i64::from(i) * 200;
                let answer = if refused {
                    GatewayEventKind::Refused
                } else {
                    GatewayEventKind::Accepted
                };
                [syn(src, host(i), t), ev(answer, src, host(i), t + 1)]
            })
            .collect();
        let mut det = Detector::new(DetectConfig::default());
        let alerts = run(&mut det, events);
        assert_eq!(
            fanout_scales(&alerts, src).first().map(String::as_str),
            Some("1m")
        );
        assert!(prefix_alerts(&alerts).is_empty(), "{alerts:#?}");
        assert_eq!(
            alerts.iter().any(|a| a.kind == AlertKind::SmbScanTrw),
            refused
        );
    }
}

/// Prefix aggregation can be turned off, and a prefix allowlisted; the
/// addresses are still judged one by one.
#[test]
fn prefix_allowlist_and_off() {
    let events: Vec<_> = (0..30u32)
        .map(|i| syn(v4_member([192, 0, 2], i), host(i), i64::from(i) * 100))
        .collect();
    let base = DetectConfig::default();
    for cfg in [
        DetectConfig {
            prefix: PrefixConfig {
                ipv4: 0,
                ..PrefixConfig::default()
            },
            ..base.clone()
        },
        DetectConfig {
            prefix: PrefixConfig {
                allow: vec!["192.0.2.0/24".parse().unwrap()],
                ..PrefixConfig::default()
            },
            ..base.clone()
        },
    ] {
        assert!(run(&mut Detector::new(cfg), events.clone()).is_empty());
    }
    // Unanswered: the prefix's fan-out, and TRW once the probes time out.
    let alerts = run(&mut Detector::new(base), events);
    let kinds: Vec<_> = prefix_alerts(&alerts).iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [AlertKind::SmbScanFanout, AlertKind::SmbScanTrw]);
    assert_eq!(alerts.len(), 2);
}

/// A spoofed flood spread over many prefixes (one SYN per address, each
/// /24 touched a few times) neither alerts nor evicts a prefix that
/// really sweeps: the flood's prefixes sit in probation.
#[test]
fn spoofed_flood_over_many_prefixes_keeps_the_scanning_prefix() {
    let cfg = DetectConfig {
        prefix: PrefixConfig {
            max_prefixes: 1000,
            max_pairs: 4000,
            ..PrefixConfig::default()
        },
        ..DetectConfig::default()
    };
    let mut det = Detector::new(cfg);
    let mut alerts = Vec::new();
    let mut rng = Rng(77);
    // 40 members of 192.0.2.0/24 probe one host each, 2 s apart, among
    // 200,000 spoofed sources over 10.0.0.0/8 (50 prefixes' worth of
    // table per probe).
    let mut spoofed = 0u32;
    for m in 0..40u32 {
        for _ in 0..5000 {
            let a = 0x0a00_0000 | rng.below(1 << 24) as u32;
            let t = i64::from(m) * 2 * SEC + i64::from(spoofed % 5000) / 3;
            alerts.extend(det.observe(&syn(
                IpAddr::V4(Ipv4Addr::from(a)),
                host(1000 + spoofed % 7),
                t,
            )));
            spoofed += 1;
        }
        let t = i64::from(m) * 2 * SEC + 1900;
        let src = v4_member([192, 0, 2], m);
        alerts.extend(det.observe(&syn(src, host(m), t)));
    }
    let pre = prefix_alerts(&alerts);
    let fan = pre
        .iter()
        .filter(|a| a.kind == AlertKind::SmbScanFanout)
        .count();
    assert_eq!(fan, 1, "{pre:#?}");
    for a in &pre {
        let p = a.scan.as_ref().unwrap().prefix.as_ref().unwrap();
        assert_eq!(p.prefix.to_string(), "192.0.2.0/24");
    }
    let st = det.stats();
    assert!(st.prefix_evictions > 100_000, "{st:?}");
    assert!(st.tracked_prefixes <= 1000);
}

fn unparsed(src: IpAddr, dst: IpAddr, ms: i64) -> GatewayEvent {
    GatewayEvent {
        sport: 0,
        dport: 0,
        ..ev(GatewayEventKind::Unparsed, src, dst, ms)
    }
}

/// Unparsed packets from one source to 3 hosts within the window raise
/// `smb_evasion_attempt` once; to 2 hosts, or spread past the window, or
/// from many sources one host each, nothing.
#[test]
fn evasion_attempt() {
    for (hosts, gap, alert) in [
        (3u32, 10 * SEC, true),
        (30, SEC, true),
        (2, 10 * SEC, false),
        (3, 6 * MIN, false),
    ] {
        for src in ["2001:db8:e::1", "192.0.2.99"] {
            let src: IpAddr = src.parse().unwrap();
            let events: Vec<_> = (0..hosts)
                .map(|i| unparsed(src, host(i), i64::from(i) * gap))
                .collect();
            let mut det = Detector::new(DetectConfig::default());
            let alerts = run(&mut det, events);
            let ev: Vec<_> = alerts
                .iter()
                .filter(|a| a.kind == AlertKind::SmbEvasionAttempt)
                .collect();
            assert_eq!(
                ev.len(),
                usize::from(alert),
                "{hosts} hosts {gap} ms apart: {alerts:#?}"
            );
            assert_eq!(alerts.len(), ev.len(), "nothing else");
            if alert {
                let a = ev[0];
                assert_eq!(a.source_ip, Some(src));
                assert_eq!(a.scan.as_ref().unwrap().distinct_destinations, 3);
                assert!(a.message.contains("could not parse"), "{}", a.message);
                assert_eq!(det.stats().evasion_alerts, 1);
            }
            assert_eq!(det.stats().unparsed, u64::from(hosts));
        }
    }
    let spoofed: Vec<_> = (0..500u32)
        .map(|i| {
            unparsed(
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
                host(i % 3),
                i64::from(i),
            )
        })
        .collect();
    assert!(run(&mut Detector::new(DetectConfig::default()), spoofed).is_empty());
    let off = DetectConfig {
        evasion_destinations: 0,
        ..DetectConfig::default()
    };
    let src: IpAddr = "192.0.2.99".parse().unwrap();
    let events: Vec<_> = (0..10u32)
        .map(|i| unparsed(src, host(i), i64::from(i)))
        .collect();
    assert!(run(&mut Detector::new(off), events).is_empty());
}

/// The memory bound covers the prefix and evasion tables, and holds.
#[test]
fn memory_bound_covers_every_table() {
    let cfg = DetectConfig {
        max_sources: 500,
        max_pairs: 2000,
        prefix: PrefixConfig {
            max_prefixes: 300,
            max_pairs: 1000,
            ..PrefixConfig::default()
        },
        ..DetectConfig::default()
    };
    let bound = cfg.memory_bound();
    let mut det = Detector::new(cfg.clone());
    let mut rng = Rng(5);
    for i in 0..50_000u32 {
        let src = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | rng.below(1 << 20) as u32));
        let dst = host(rng.below(400) as u32);
        let kind = if i % 5 == 0 {
            GatewayEventKind::Unparsed
        } else {
            GatewayEventKind::NewPair
        };
        det.observe(&ev(kind, src, dst, i64::from(i)));
        assert!(
            det.stats().memory_bytes <= bound,
            "{} > {bound}",
            det.stats().memory_bytes
        );
    }
    let off = DetectConfig {
        prefix: PrefixConfig {
            ipv4: 0,
            ipv6: 0,
            ..cfg.prefix.clone()
        },
        evasion_destinations: 0,
        ..cfg
    };
    assert!(off.memory_bound() < bound);
}
