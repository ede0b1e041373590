//! The ring buffer: a fresh program's buffer filled by test runs and
//! drained (alone, into the detector, into JSON lines), and a spoofed
//! flood with a scanner inside drained into the detector while it is made.

use std::{
    os::fd::{AsRawFd as _, BorrowedFd},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use smbwatch::{
    alert::AlertKind,
    dataplane::{drain, testrun, to_gateway_event, Dataplane, KernelClock, LoadOptions},
    detect::{DetectConfig, Detector},
    event::GatewayEvent,
    packet::Segment,
};
use smbwatch_common::stat;

use super::super::{fmt_num, Effort};
use super::ip;
use crate::gen::{self, dst_v4, src_v4};

/// Fills a fresh program's ring buffer with `n` new-pair events (distinct
/// sources), without reading it. No event budget: every pair is an event.
fn filled(n: u32, round: u32) -> Result<Dataplane> {
    let dp = Dataplane::load(&LoadOptions {
        events_per_cpu: 0,
        ..LoadOptions::default()
    })?;
    let fd = dp.program_fd()?.as_raw_fd();
    // SAFETY: `dp` keeps the program loaded.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    for i in 0..n {
        let f = Segment::syn(src_v4(round * n + i), ip("198.51.100.7"), 40000, 445).frame();
        testrun::run(fd, &f, 1)?;
    }
    Ok(dp)
}

/// Events per CPU second of the draining thread through drain + decode
/// (+ `extra` per event): on a shared machine wall time also counts the
/// waits for a core.
pub(super) fn drain_rate(
    n: u32,
    round: u32,
    mut extra: impl FnMut(&GatewayEvent),
) -> Result<(f64, u64)> {
    let mut dp = filled(n, round)?;
    let full = dp.stats()?.get(stat::RINGBUF_FULL);
    let mut ring = dp.take_events()?;
    let clock = KernelClock::live()?;
    let start = gen::thread_cpu();
    let mut got = 0u64;
    drain(&mut ring, |raw, kind| {
        let ev = to_gateway_event(raw, kind, clock.to_utc(raw.ts_ns));
        extra(&ev);
        got += 1;
    });
    let secs = (gen::thread_cpu() - start).as_secs_f64();
    if got != u64::from(n) {
        bail!("drained {got} events of {n} (ring buffer full {full} times)");
    }
    Ok((got as f64 / secs, got))
}

pub(super) struct Flood {
    pub(super) flood_sources: u32,
    pub(super) scanner_targets: u32,
    pub(super) lost: u64,
    pub(super) consumed: u64,
    pub(super) seconds: f64,
    pub(super) scanner_detected: bool,
    pub(super) alerts: usize,
}

impl Flood {
    pub(super) fn json(&self) -> Value {
        json!({
            "flood_sources": self.flood_sources,
            "scanner_targets": self.scanner_targets,
            "ringbuf_full": self.lost,
            "events_consumed": self.consumed,
            "seconds": self.seconds,
            "scanner_detected": self.scanner_detected,
            "alerts": self.alerts,
        })
    }
}

pub(super) fn flood(effort: &Effort) -> Result<Flood> {
    let flood_sources: u32 = if effort.quick { 200_000 } else { 1_000_000 };
    let scanner_targets = 200u32;
    let scanner = ip("203.0.113.66");
    let mut dp = Dataplane::load(&LoadOptions::default())?;
    let mut ring = dp.take_events()?;
    let fd = dp.program_fd()?.as_raw_fd();
    eprintln!("user: flood of {} sources", fmt_num(flood_sources as f64));
    let every = flood_sources / scanner_targets;
    let done = AtomicBool::new(false);
    let start = Instant::now();
    let clock = KernelClock::live()?;
    let (consumed, detected, alerts) = std::thread::scope(|s| -> Result<(u64, bool, usize)> {
        let consumer = s.spawn(|| {
            let mut det = Detector::new(DetectConfig::default());
            let mut consumed = 0u64;
            let mut detected = false;
            let mut alerts = 0usize;
            loop {
                let finished = done.load(Ordering::Acquire);
                let read = drain(&mut ring, |ev, kind| {
                    consumed += 1;
                    for a in det.observe(&to_gateway_event(ev, kind, clock.to_utc(ev.ts_ns))) {
                        alerts += 1;
                        if a.kind == AlertKind::SmbScanFanout && a.source_ip == Some(scanner) {
                            detected = true;
                        }
                    }
                });
                let any = read.records > 0;
                if finished && !any {
                    break;
                }
                if !any {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            (consumed, detected, alerts)
        });
        // SAFETY: `dp` keeps the program loaded for the whole scope.
        let prog = unsafe { BorrowedFd::borrow_raw(fd) };
        let mut j = 0;
        for i in 0..flood_sources {
            let f = Segment::syn(gen::src_v4(i), ip("198.51.100.7"), 40000, 445).frame();
            testrun::run(prog, &f, 1)?;
            if i % every == 0 && j < scanner_targets {
                let f = Segment::syn(scanner, dst_v4(j), 40000, 445).frame();
                testrun::run(prog, &f, 1)?;
                j += 1;
            }
        }
        done.store(true, Ordering::Release);
        Ok(consumer.join().expect("consumer thread"))
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let lost = dp.stats()?.get(stat::RINGBUF_FULL);
    Ok(Flood {
        flood_sources,
        scanner_targets,
        lost,
        consumed,
        seconds,
        scanner_detected: detected,
        alerts,
    })
}
