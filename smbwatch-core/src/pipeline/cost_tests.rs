//! Per-event cost of [`Pipeline::gateway_event`] under source churn with
//! host-log inputs (the correlator keeps every new pair), beside the
//! detector alone on the same events; `#[ignore]`d, prints, asserts no time.

use super::*;
use crate::detect::bench::{churn_events, thread_cpu};

/// `cargo test --release -p smbwatch-core --lib pipeline::cost_tests -- --ignored --nocapture`
/// (`SMBWATCH_CHURN=EVENTS,ROUNDS` for a shorter run, e.g. under perf;
/// `SMBWATCH_CHURN_ONLY=pipeline|detector|correlator` for one side).
#[test]
#[ignore = "measurement: run in release with --ignored --nocapture"]
fn pipeline_churn_cost() {
    let (n, rounds) = std::env::var("SMBWATCH_CHURN")
        .ok()
        .and_then(|v| {
            let (n, r) = v.split_once(',')?;
            Some((n.parse().ok()?, r.parse().ok()?))
        })
        .unwrap_or((1_000_000, 3));
    let only = std::env::var("SMBWATCH_CHURN_ONLY").ok();
    let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let events = churn_events(n, 35_000);
    let per = |start: std::time::Duration| {
        (thread_cpu() - start).as_secs_f64() * 1e9 / events.len() as f64
    };
    let (mut pipe, mut ahead, mut det, mut cor) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    let mut stats = None;
    for _ in 0..rounds {
        if run("pipeline") {
            let mut p = Pipeline::new(PipelineConfig::default());
            let start = thread_cpu();
            for ev in &events {
                std::hint::black_box(p.gateway_event(ev));
            }
            pipe = pipe.min(per(start));
            stats = Some(p.correlator().stats());
            // The daemon's batch path: the hint a few events ahead.
            let mut p = Pipeline::new(PipelineConfig::default());
            let start = thread_cpu();
            for (i, ev) in events.iter().enumerate() {
                if let Some(next) = events.get(i + crate::detect::bench::LOOKAHEAD) {
                    p.prefetch(next);
                }
                std::hint::black_box(p.gateway_event(ev));
            }
            ahead = ahead.min(per(start));
        }
        if run("detector") {
            let mut d = Detector::new(DetectConfig::default());
            let start = thread_cpu();
            for ev in &events {
                std::hint::black_box(d.observe(ev));
            }
            det = det.min(per(start));
        }
        if run("correlator") {
            let mut c = Correlator::new(CorrelateConfig::default());
            let start = thread_cpu();
            for ev in &events {
                std::hint::black_box(c.on_gateway_event(ev));
            }
            cor = cor.min(per(start));
        }
    }
    println!(
        "churn, {} events, best of {rounds}: pipeline {pipe:.0} ns/event ({ahead:.0} with prefetch), detector {det:.0}, correlator {cor:.0}; correlator {stats:?}",
        events.len()
    );
}
