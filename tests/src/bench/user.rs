//! User space: how fast events are consumed, detected and parsed, how much
//! memory a tracked source takes, and a spoofed-source flood with a real
//! scanner inside it.

use std::{
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Result;
use chrono::DateTime;
use serde_json::{json, Value};
use smbwatch::{
    config::Config,
    dataplane::{Dataplane, LoadOptions},
    detect::{bench as detect_bench, DetectConfig, Detector},
    event::{GatewayEvent, GatewayEventKind},
    hostlog::{self, Format},
    pipeline::Pipeline,
};
use smbwatch_common::{PAIRS_MAP, SOURCES_MAP};

use super::{fmt_num, median, Effort, Goal, Section, Table};
use crate::gen::{dst_v4, src_v4, thread_cpu};
use ring::{drain_rate, flood};

const LOGS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/logs");

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

/// Synthetic gateway events: `sources` clients each opening pairs to
/// `per_source` servers 1 ms apart, every other pair answered (accepted or
/// refused), in time order.
pub fn synthetic_events(sources: u32, per_source: u32) -> Vec<GatewayEvent> {
    let t0 = DateTime::from_timestamp(1_800_000_000, 0).expect("valid time");
    let mut out = Vec::with_capacity((sources * per_source * 3 / 2) as usize);
    let mut t = 0i64;
    for j in 0..per_source {
        for i in 0..sources {
            t += 1;
            let ts = t0 + chrono::Duration::microseconds(t * 10);
            let base = GatewayEvent {
                ts,
                kind: GatewayEventKind::NewPair,
                src: src_v4(i),
                dst: dst_v4(j),
                sport: 40000,
                dport: 445,
                ifindex: 1,
                vlan: None,
                fragmented: false,
                after_accept: false,
                kernel_fanout: None,
                activity: None,
                src_mac: None,
            };
            out.push(base.clone());
            if (i + j) % 2 == 0 {
                out.push(GatewayEvent {
                    kind: if j % 4 == 0 {
                        GatewayEventKind::Accepted
                    } else {
                        GatewayEventKind::Refused
                    },
                    ..base
                });
            }
        }
    }
    out
}

/// Runs the user-space benchmarks.
pub fn run(effort: &Effort) -> Result<Section> {
    let mut table = Table::new(&["measure", "result", "unit", "rounds min–max"]);
    let mut data = serde_json::Map::new();
    let mut goals = Vec::new();
    let rounds = effort.rounds;
    let n: u32 = if effort.quick { 50_000 } else { 120_000 };
    let row = |table: &mut Table, name: &str, v: &[f64], unit: &str| {
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        table.row(vec![
            name.to_owned(),
            fmt_num(median(v)),
            unit.to_owned(),
            format!("{}–{}", fmt_num(lo), fmt_num(hi)),
        ]);
    };

    // Ring buffer: drain + decode, then with the detector, then with the
    // whole pipeline as the daemon runs it with host-log inputs (detector
    // and correlator), then with JSON lines.
    let (mut plain, mut detected, mut json_lines) = (Vec::new(), Vec::new(), Vec::new());
    let mut piped = Vec::new();
    for r in 0..rounds as u32 {
        eprintln!("user: ring buffer round {}/{rounds}", r + 1);
        plain.push(drain_rate(n, 4 * r, |_| {})?.0);
        let mut det = Detector::new(DetectConfig::default());
        detected.push(
            drain_rate(n, 4 * r + 1, |ev| {
                let _ = det.observe(ev);
            })?
            .0,
        );
        // `Pipeline::new` expects host events (the daemon's
        // `without_host_inputs` is what skips the correlator).
        let mut pipeline = Pipeline::new(Config::default().pipeline());
        piped.push(
            drain_rate(n, 4 * r + 3, |ev| {
                let _ = pipeline.gateway_event(ev);
            })?
            .0,
        );
        let mut sink = Vec::with_capacity(n as usize * 200);
        json_lines.push(
            drain_rate(n, 4 * r + 2, |ev| {
                use smbwatch::alert::ecs::gateway::ToEventLine as _;
                use std::io::Write as _;
                let _ = writeln!(sink, "{}", ev.to_json());
            })?
            .0,
        );
    }
    row(
        &mut table,
        "ring buffer: drain + decode",
        &plain,
        "events/s",
    );
    row(
        &mut table,
        "ring buffer: drain + decode + detector",
        &detected,
        "events/s",
    );
    row(
        &mut table,
        "ring buffer: drain + decode + Pipeline::gateway_event (host-log inputs: detector + correlator)",
        &piped,
        "events/s",
    );
    row(
        &mut table,
        "ring buffer: drain + decode + JSON line",
        &json_lines,
        "events/s",
    );
    goals.push(Goal::at_least(
        "events consumed per second on one core",
        median(&detected),
        1_000_000.0,
        "events/s",
        &format!(
            "drain + decode + detector (new source per event, the worst case); drain + decode alone {} events/s",
            fmt_num(median(&plain))
        ),
    ));
    goals.push(Goal::at_least(
        "events consumed per second on one core with host-log inputs",
        median(&piped),
        1_000_000.0,
        "events/s",
        "drain + decode + Pipeline::gateway_event with the correlator keeping every new pair for attribution (new source per event, the worst case)",
    ));
    data.insert(
        "ring_buffer".into(),
        json!({"events_per_round": n, "drain_decode": plain, "with_detector": detected, "with_pipeline": piped, "with_json_line": json_lines}),
    );

    // Detector alone on synthetic events.
    let events = synthetic_events(if effort.quick { 2_000 } else { 5_000 }, 100);
    let mut det_rates = Vec::new();
    let mut alerts = 0;
    for r in 0..rounds {
        eprintln!("user: detector round {}/{rounds}", r + 1);
        let mut det = Detector::new(DetectConfig::default());
        let start = Instant::now();
        let mut a = 0;
        for ev in &events {
            a += det.observe(ev).len();
        }
        det_rates.push(events.len() as f64 / start.elapsed().as_secs_f64());
        alerts = a;
    }
    row(
        &mut table,
        &format!(
            "detector: {} synthetic events ({} alerts)",
            fmt_num(events.len() as f64),
            alerts
        ),
        &det_rates,
        "events/s",
    );
    data.insert(
        "detector".into(),
        json!({"events": events.len(), "alerts": alerts, "events_per_second": det_rates}),
    );

    // Detector under source churn (a spoofed flood: every event a new
    // source, the table full and evicting), next to a bare bounded HashMap
    // of the same keys measured in the same round: the floor for keeping
    // any per-source state under churn on this machine.
    let churn = detect_bench::churn_events(if effort.quick { 500_000 } else { 2_000_000 }, 35_000);
    let (mut churn_ns, mut ahead_ns, mut floor_ns) = (Vec::new(), Vec::new(), Vec::new());
    let (mut pipeline_ns, mut pipeline_ahead_ns, mut single_ns) =
        (Vec::new(), Vec::new(), Vec::new());
    // One scale, no prefix aggregation, no evasion rule: what the
    // per-address table alone costs, beside the default's extra detectors.
    let single = DetectConfig {
        fanout_scales: Vec::new(),
        prefix: smbwatch::detect::PrefixConfig {
            ipv4: 0,
            ipv6: 0,
            ..Default::default()
        },
        evasion_destinations: 0,
        ..DetectConfig::default()
    };
    for r in 0..rounds {
        eprintln!("user: detector under churn round {}/{rounds}", r + 1);
        let c = detect_bench::measure(&DetectConfig::default(), &churn, 1, thread_cpu);
        single_ns.push(detect_bench::measure(&single, &churn, 1, thread_cpu).detector_ns);
        churn_ns.push(c.detector_ns);
        ahead_ns.push(c.detector_lookahead_ns);
        floor_ns.push(c.baseline_ns);
        // The daemon's path for a gateway event: detector + correlator.
        let mut pipeline = Pipeline::new(Config::default().pipeline());
        let start = thread_cpu();
        for ev in &churn {
            std::hint::black_box(pipeline.gateway_event(ev));
        }
        pipeline_ns.push((thread_cpu() - start).as_secs_f64() * 1e9 / churn.len() as f64);
        // The drain thread's way: the hint a few events ahead.
        let mut pipeline = Pipeline::new(Config::default().pipeline());
        let start = thread_cpu();
        for (i, ev) in churn.iter().enumerate() {
            if let Some(next) = churn.get(i + detect_bench::LOOKAHEAD) {
                pipeline.prefetch(next);
            }
            std::hint::black_box(pipeline.gateway_event(ev));
        }
        pipeline_ahead_ns.push((thread_cpu() - start).as_secs_f64() * 1e9 / churn.len() as f64);
    }
    row(
        &mut table,
        &format!(
            "detector under churn: {} events, each a new source (35,000/s)",
            fmt_num(churn.len() as f64)
        ),
        &churn_ns,
        "ns/event",
    );
    row(
        &mut table,
        &format!(
            "  same, with Detector::prefetch {} events ahead (batch caller)",
            detect_bench::LOOKAHEAD
        ),
        &ahead_ns,
        "ns/event",
    );
    row(
        &mut table,
        "  same, one fan-out scale and no prefix aggregation (the address table alone)",
        &single_ns,
        "ns/event",
    );
    row(
        &mut table,
        "  same sources into a bounded HashMap (insert + remove, the floor)",
        &floor_ns,
        "ns/event",
    );
    row(
        &mut table,
        "  same events through Pipeline::gateway_event (detector + correlator)",
        &pipeline_ns,
        "ns/event",
    );
    row(
        &mut table,
        &format!(
            "  same, with Pipeline::prefetch {} events ahead (the drain thread)",
            detect_bench::LOOKAHEAD
        ),
        &pipeline_ahead_ns,
        "ns/event",
    );
    let bound = DetectConfig::default().memory_bound();
    table.row(vec![
        "detector memory bound at the default caps".into(),
        fmt_num(bound as f64 / 1048576.0),
        "MiB".into(),
        format!(
            "{} sources, {} pairs",
            fmt_num(DetectConfig::default().max_sources as f64),
            fmt_num(DetectConfig::default().max_pairs as f64)
        ),
    ]);
    goals.push(Goal::at_most(
        "detector cost per event under source churn",
        median(&churn_ns),
        300.0,
        "ns/event",
        &format!(
            "Detector::observe alone, default caps, one eviction per event; {} ns/event with Detector::prefetch {} events ahead; a bounded HashMap of the same keys {} ns/event in the same rounds ({:.2}×, {:.2}× with prefetch)",
            fmt_num(median(&ahead_ns)),
            detect_bench::LOOKAHEAD,
            fmt_num(median(&floor_ns)),
            median(&churn_ns) / median(&floor_ns),
            median(&ahead_ns) / median(&floor_ns)
        ),
    ));
    data.insert(
        "detector_churn".into(),
        json!({"events": churn.len(), "detector_ns": churn_ns, "single_scale_no_prefix_ns": single_ns, "detector_prefetch_ahead_ns": ahead_ns, "hashmap_floor_ns": floor_ns, "pipeline_ns": pipeline_ns, "pipeline_prefetch_ahead_ns": pipeline_ahead_ns, "memory_bound_bytes": bound}),
    );

    // Host-log parsing per format.
    let mut parse = serde_json::Map::new();
    let min_time = Duration::from_millis(if effort.quick { 300 } else { 1000 });
    for format in [
        Format::Winlogbeat,
        Format::Nxlog,
        Format::Xml,
        Format::EvtxDump,
        Format::KeyValue,
    ] {
        let Some(input) = hostlog::bench::synthetic_input(format, 4096) else {
            continue;
        };
        let mut rates = Vec::new();
        for _ in 0..rounds {
            rates.push(hostlog::bench::measure(format, &input, min_time)?.records_per_sec);
        }
        row(
            &mut table,
            &format!("host-log parse: {} (synthetic mix)", format.name()),
            &rates,
            "records/s",
        );
        parse.insert(format.name().into(), json!(rates));
    }
    let evtx = Path::new(LOGS_DIR)
        .join("evtx2mitre_ID4688-4697-5140-5145_PSexec_remote_execution_admin_share.evtx");
    if evtx.exists() {
        let bytes = std::fs::read(&evtx)?;
        let mut rates = Vec::new();
        for _ in 0..rounds {
            rates.push(hostlog::bench::measure(Format::Evtx, &bytes, min_time)?.records_per_sec);
        }
        row(
            &mut table,
            "host-log parse: evtx (real file, ../shared/data/logs)",
            &rates,
            "records/s",
        );
        parse.insert("evtx".into(), json!(rates));
    } else {
        eprintln!(
            "user: {} absent; EVTX parse rate not measured",
            evtx.display()
        );
    }
    data.insert("hostlog_parse".into(), Value::Object(parse));

    // Kernel map memory per tracked source, by capacity (LRU maps are preallocated).
    let mut mem = Vec::new();
    for cap in [100_000u32, 1_000_000] {
        let dp = Dataplane::load(&LoadOptions {
            max_sources: cap,
            max_pairs: cap,
            ..Default::default()
        })?;
        let m = dp.map_memory()?;
        let sources = *m.get(SOURCES_MAP).unwrap_or(&0);
        let pairs = *m.get(PAIRS_MAP).unwrap_or(&0);
        table.row(vec![
            format!(
                "kernel maps at {} sources and {} pairs",
                fmt_num(cap as f64),
                fmt_num(cap as f64)
            ),
            format!(
                "{} + {}",
                fmt_num(sources as f64 / cap as f64),
                fmt_num(pairs as f64 / cap as f64)
            ),
            "bytes per source + per pair".into(),
            format!(
                "{:.1} MiB in all",
                m.values().sum::<u64>() as f64 / 1048576.0
            ),
        ]);
        mem.push(json!({"capacity": cap, "maps": m}));
    }
    data.insert("kernel_maps".into(), json!(mem));

    let generator_method = daemon::measure(effort, &mut table, &mut data);

    // Spoofed flood with a scanner inside, through the same components as
    // the daemon: the program, its ring buffer, the detector.
    let flood = flood(effort)?;
    table.row(vec![
        format!(
            "spoofed flood: {} distinct sources + 1 scanner to {} hosts",
            fmt_num(flood.flood_sources as f64),
            flood.scanner_targets
        ),
        fmt_num(flood.lost as f64),
        "events lost (ringbuf_full)".into(),
        format!(
            "scanner {}; {} events consumed at {} events/s",
            if flood.scanner_detected {
                "detected"
            } else {
                "NOT detected"
            },
            fmt_num(flood.consumed as f64),
            fmt_num(flood.consumed as f64 / flood.seconds)
        ),
    ]);
    goals.push(Goal {
        name: "scanner detected inside a 1,000,000-source spoofed flood".into(),
        target: "detected; losses counted".into(),
        measured: format!(
            "{}, {} events lost",
            if flood.scanner_detected {
                "detected"
            } else {
                "not detected"
            },
            fmt_num(flood.lost as f64)
        ),
        met: Some(flood.scanner_detected),
        note: format!(
            "{} flood sources{}; the detector tracks at most {} sources (evicting the lowest fan-out class first), the kernel {}",
            fmt_num(flood.flood_sources as f64),
            if effort.quick { " (--quick)" } else { "" },
            fmt_num(DetectConfig::default().max_sources as f64),
            fmt_num(f64::from(smbwatch_common::DEFAULT_SOURCE_SLOTS))
        ),
    });
    data.insert("flood".into(), flood.json());

    let method = format!("Ring buffer: a fresh program's ring buffer filled by test runs of distinct new pairs, then drained on one thread \
(decode, UTC stamp; then also the detector, the pipeline with host-log inputs, or a JSON line); events per CPU second of the draining thread (before 2026-12-06: over wall time, which on a loaded machine also counts the waits for a core). Detector: `Detector::observe` on synthetic \
events (new pairs 10 µs apart, every other answered), default configuration; under churn, every event a new source at 35,000/s \
(the table full, one eviction per event), each round also timing a bare bounded `HashMap` of the same sources, in CPU time of the \
measuring thread (wall time on a shared machine also counts the waits for a core). Host logs: `hostlog::bench::measure` on a 4,096-record \
synthetic mix per text format and on the real EVTX file. Kernel maps: `memlock` of each map (arrays, allocated whole at load, so \
this is the cost at capacity). Daemon RSS: the real daemon (stdout discarded) while the generator ({}) sends one SYN from each new \
source (the kernel holds per-source state; the daemon's memory grows only with what user space tracks). Flood: one thread runs \
the program on {} distinct spoofed sources with a scanner's SYNs to {} hosts mixed in, as fast as test runs go, while a second \
drains the ring buffer into the detector (the daemon's path, in one process).\n",
        generator_method,
        fmt_num(flood.flood_sources as f64),
        flood.scanner_targets
    );
    Ok(Section {
        title: "User space".into(),
        method,
        table,
        data: Value::Object(data),
        goals,
    })
}

mod daemon;
mod ring;
