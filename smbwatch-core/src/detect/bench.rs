//! Per-event cost of the detector under source churn, for benchmarks
//! (`cargo xtask bench`, user-space section) and the `#[ignore]`d
//! `detect::tests::cost::churn_cost` report test.
//!
//! [`churn_events`] is a spoofed SYN flood: every event a new source, at a
//! fixed rate, so the source table is full and evicts on every event.
//! [`measure`] feeds it through [`Detector::observe`] (also with
//! [`Detector::prefetch`] a few events ahead) and, in the same run,
//! through a bare bounded hash map of the same keys (insert the new source,
//! remove the one `max_sources` events older): the floor for keeping any
//! per-source state under churn on this machine. Times are the measuring
//! thread's CPU time (the caller's clock, e.g. [`thread_cpu`]): on a shared
//! machine wall time also counts the waits for a core.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use chrono::DateTime;
use serde::Serialize;

use super::{addr_key, DetectConfig, Detector};
use crate::event::{GatewayEvent, GatewayEventKind};

/// One measurement (best of the rounds for each side).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ChurnCost {
    /// Events per round.
    pub events: usize,
    /// `Detector::observe`, nanoseconds per event.
    pub detector_ns: f64,
    /// The same with [`Detector::prefetch`] called [`LOOKAHEAD`] events
    /// ahead, as a caller holding a batch of events can.
    pub detector_lookahead_ns: f64,
    /// Bounded `HashMap` insert + remove of the same sources, ns per event.
    pub baseline_ns: f64,
    /// Alerts raised in one detector round.
    pub alerts: usize,
    /// Sources evicted in one detector round.
    pub source_evictions: u64,
}

/// How far ahead [`measure`] calls [`Detector::prefetch`].
pub const LOOKAHEAD: usize = 4;

/// `n` new-pair events, each from a new source (10.0.0.0 onwards), to 50
/// destinations in turn, `per_sec` per second.
pub fn churn_events(n: u32, per_sec: u32) -> Vec<GatewayEvent> {
    let t0 = DateTime::from_timestamp(1_800_000_000, 0).expect("valid time");
    let step = 1_000_000_000 / i64::from(per_sec.max(1));
    (0..n)
        .map(|i| GatewayEvent {
            ifindex: 1,
            ..GatewayEvent::new(
                t0 + chrono::Duration::nanoseconds(i64::from(i) * step),
                GatewayEventKind::NewPair,
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
                IpAddr::V4(Ipv4Addr::from(0xc633_6400 + i % 50)),
                40000 + (i % 20000) as u16,
                445,
            )
        })
        .collect()
}

/// CPU time of the calling thread so far (the scheduler's runtime of the
/// thread, `/proc/thread-self/schedstat`, in ns). Benchmark use only.
pub fn thread_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("/proc/thread-self/schedstat (Linux with schedstat)");
    let ns = s
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("schedstat's first field: runtime in ns");
    Duration::from_nanos(ns)
}

/// Feed `events` through a fresh detector with `cfg` and through the
/// baseline map, `rounds` times interleaved; the best round of each, timed
/// by `clock` (the thread's CPU time, e.g. [`thread_cpu`]).
pub fn measure(
    cfg: &DetectConfig,
    events: &[GatewayEvent],
    rounds: usize,
    clock: fn() -> Duration,
) -> ChurnCost {
    let n = events.len().max(1) as f64;
    let (mut det_best, mut ahead_best, mut base_best) = (f64::MAX, f64::MAX, f64::MAX);
    let (mut alerts, mut evictions) = (0, 0);
    for _ in 0..rounds.max(1) {
        let mut det = Detector::new(cfg.clone());
        let start = clock();
        let mut a = 0;
        for ev in events {
            a += det.observe(ev).len();
        }
        det_best = det_best.min((clock() - start).as_secs_f64());
        alerts = a;
        evictions = det.stats().source_evictions;
        drop(det);

        let mut det = Detector::new(cfg.clone());
        let start = clock();
        for (i, ev) in events.iter().enumerate() {
            if let Some(next) = events.get(i + LOOKAHEAD) {
                det.prefetch(next);
            }
            std::hint::black_box(det.observe(ev));
        }
        ahead_best = ahead_best.min((clock() - start).as_secs_f64());
        drop(det);

        let cap = cfg.max_sources.max(1);
        let mut map: HashMap<[u8; 16], u32, ahash::RandomState> =
            HashMap::with_capacity_and_hasher(cap, ahash::RandomState::new());
        let mut order = VecDeque::with_capacity(cap);
        let start = clock();
        for (i, ev) in events.iter().enumerate() {
            let key = addr_key(ev.src.to_canonical());
            if map.insert(key, i as u32).is_none() {
                if order.len() == cap {
                    if let Some(old) = order.pop_front() {
                        map.remove(&old);
                    }
                }
                order.push_back(key);
            }
        }
        base_best = base_best.min((clock() - start).as_secs_f64());
        std::hint::black_box(&map);
    }
    ChurnCost {
        events: events.len(),
        detector_ns: det_best * 1e9 / n,
        detector_lookahead_ns: ahead_best * 1e9 / n,
        baseline_ns: base_best * 1e9 / n,
        alerts,
        source_evictions: evictions,
    }
}
