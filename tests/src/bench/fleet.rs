//! The fleet (NATS JetStream): a gateway's cost per published event beside
//! its cost per event without publishing, and the aggregator's rate over a
//! pre-filled stream, against a real nats-server in a lab namespace.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde_json::json;
use smbwatch::{
    config::Config,
    event::GatewayEvent,
    fleet::{
        outbox::{Outbox, Tap},
        transport::JetStream,
        PublishConfig,
    },
    pipeline::Pipeline,
};

use super::{median, procs::process_cpu, Effort, Goal, Section, Table};
use crate::{
    daemon::Daemon,
    fleet::{in_netns, synthetic_event, NatsServer, BROKER_LOCAL},
    netns::{unique_tag, NetNs},
};

/// The aggregator's goal (issue: ≥ 500,000 events/s on this machine).
const AGGREGATE_GOAL: f64 = 500_000.0;

/// CPU time of the calling thread, seconds.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// `n` gateway events as a churning fleet sends them
/// ([`crate::fleet::synthetic_event`]).
fn events(n: usize) -> Vec<GatewayEvent> {
    let t0 = chrono::Utc::now();
    (0..n).map(|i| synthetic_event(i, t0)).collect()
}

/// Per-event CPU of the detection pipeline (what a gateway's drain thread
/// does per event without publishing), ns.
fn detect_ns(evs: &[GatewayEvent]) -> f64 {
    let mut p = Pipeline::new(Config::default().pipeline()).without_host_inputs();
    let c0 = thread_cpu();
    for ev in evs {
        std::hint::black_box(p.gateway_event(ev));
    }
    (thread_cpu() - c0) * 1e9 / evs.len() as f64
}

/// Per-event CPU the drain thread adds to publish (encode, hand over in
/// batches of 256), ns; leaves the events in `outbox`.
fn tap_ns(evs: &[GatewayEvent], outbox: &Arc<Outbox>) -> f64 {
    let mut tap = Tap::new(outbox.clone(), 16);
    let c0 = thread_cpu();
    for chunk in evs.chunks(256) {
        for ev in chunk {
            tap.gateway(ev);
        }
        tap.flush();
    }
    (thread_cpu() - c0) * 1e9 / evs.len() as f64
}

/// A JetStream connection to the lab's broker, from a thread inside its
/// namespace ([`in_netns`]).
async fn connect() -> Result<(JetStream, PublishConfig)> {
    let cfg = PublishConfig::default();
    let js = JetStream::connect(BROKER_LOCAL, &cfg, "bench", "smbwatch bench", false).await?;
    Ok((js, cfg))
}

/// What one round measured.
struct Round {
    detect_ns: f64,
    tap_ns: f64,
    publish_ns: f64,
    publish_rate: f64,
    aggregate_rate: f64,
    aggregate_ns: f64,
    /// Two aggregators splitting the partitions, together.
    split_rate: f64,
}

/// Publishes `evs` through the real outbox and publish task; returns the
/// tap's and the publish task's CPU per event (ns) and the delivery rate.
fn publish(ns: &NetNs, evs: &[GatewayEvent]) -> Result<(f64, f64, f64)> {
    in_netns(ns, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let (js, _) = connect().await?;
            js.stream().await?;
            let outbox = Arc::new(Outbox::new(4 << 30));
            let tap = tap_ns(evs, &outbox);
            let (tx, rx) = tokio::sync::watch::channel(false);
            let c0 = thread_cpu();
            let t0 = Instant::now();
            let task = tokio::spawn(smbwatch::fleet::publisher::run(
                outbox.clone(),
                js,
                Default::default(),
                rx,
            ));
            while outbox.stats().delivered < evs.len() as u64 {
                if t0.elapsed() > Duration::from_secs(300) {
                    bail!("publishing {} events took over 5 minutes", evs.len());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let wall = t0.elapsed().as_secs_f64();
            let cpu = thread_cpu() - c0;
            let _ = tx.send(true);
            let _ = task.await;
            let n = evs.len() as f64;
            Ok((tap, cpu * 1e9 / n, n / wall))
        })
    })
}

/// Starts `split` aggregators (1: one owning all 16 partitions; 2: 0-7 and
/// 8-15) with fresh durable consumers over the whole stream (`total`
/// events) and measures them from the moment they read until every
/// partition's consumer has nothing pending or unacknowledged: events per
/// second, and their process CPU per event. Fails if the aggregators
/// processed any other number of events than `total` (a skip, or an event
/// counted twice), read from their metrics.
fn aggregate(ns: &NetNs, round: usize, total: u64, split: u16) -> Result<(f64, f64)> {
    let per = 16 / split;
    let specs: Vec<(String, String, String, Vec<u16>)> = (0..split)
        .map(|i| {
            let parts: Vec<u16> = (i * per..(i + 1) * per).collect();
            (
                format!("bench-{round}-{split}-{i}"),
                format!("{}-{}", i * per, (i + 1) * per - 1),
                format!("127.0.0.1:{}", 9470 + i),
                parts,
            )
        })
        .collect();
    let aggs = specs
        .iter()
        .map(|(name, parts, metrics, _)| {
            Daemon::aggregate(
                ns,
                &[
                    "--nats",
                    BROKER_LOCAL,
                    "--name",
                    name,
                    "--partitions",
                    parts,
                    "--metrics",
                    metrics,
                ],
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let cpu = || aggs.iter().map(|a| process_cpu(a.pid())).sum::<f64>();
    let (c0, t0) = (cpu(), Instant::now());
    // One connection for the polling, so polling costs the broker little.
    let wall = in_netns(ns, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let (js, cfg) = connect().await?;
            let stream = js.js.get_stream(&cfg.stream).await?;
            loop {
                let mut left = 0;
                for (name, _, _, parts) in &specs {
                    for p in parts {
                        // Not there yet: the aggregator is creating it.
                        left += match stream.consumer_info(format!("{name}-p{p}")).await {
                            Ok(info) => info.num_pending + info.num_ack_pending as u64,
                            Err(_) => 1,
                        };
                    }
                }
                if left == 0 {
                    return Ok(t0.elapsed());
                }
                if t0.elapsed() > Duration::from_secs(600) {
                    bail!("the aggregators did not finish {total} events in 10 minutes");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    })?;
    let cpu_ns = (cpu() - c0) * 1e9 / total as f64;
    // What they processed, once the last acknowledged messages are counted.
    std::thread::sleep(Duration::from_millis(500));
    let mut processed = 0.0;
    for (_, _, metrics, _) in &specs {
        let text = crate::http::get(ns, metrics.parse()?, "/metrics")?.1;
        processed += crate::fleet::metric(
            &text,
            r#"smbwatch_fleet_aggregate_events_total{kind="gateway"}"#,
        )
        .unwrap_or(0.0);
    }
    for a in aggs {
        a.stop()?;
    }
    if processed != total as f64 {
        bail!("{split} aggregator(s) processed {processed} events of {total} stored");
    }
    Ok((total as f64 / wall.as_secs_f64(), cpu_ns))
}

/// The fleet section.
pub fn run(effort: &Effort) -> Result<Section> {
    let n = if effort.quick { 200_000 } else { 1_000_000 };
    let ns = NetNs::new(&format!("smbwbench-{}-nats", unique_tag()))?;
    let _nats = NatsServer::start(&ns)?;
    let evs = events(n);
    let mut rounds = Vec::new();
    for r in 0..effort.rounds {
        let detect = detect_ns(&evs);
        let (tap, publish_ns, publish_rate) = publish(&ns, &evs)?;
        let total = (n * (r + 1)) as u64;
        let (aggregate_rate, aggregate_ns) = aggregate(&ns, r, total, 1)?;
        let (split_rate, _) = aggregate(&ns, r, total, 2)?;
        rounds.push(Round {
            detect_ns: detect,
            tap_ns: tap,
            publish_ns,
            publish_rate,
            aggregate_rate,
            aggregate_ns,
            split_rate,
        });
    }
    let med = |f: fn(&Round) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    let (detect, tap, pubns) = (
        med(|r| r.detect_ns),
        med(|r| r.tap_ns),
        med(|r| r.publish_ns),
    );
    let agg_rate = med(|r| r.aggregate_rate);
    let mut table = Table::new(&["measure", "median", "vs. detection alone"]);
    table.row(vec![
        "gateway: detection per event (no publishing; baseline)".into(),
        format!("{detect:.0} ns"),
        "1.00×".into(),
    ]);
    table.row(vec![
        "gateway: drain thread's publishing cost per event (encode, hand over)".into(),
        format!("{tap:.0} ns"),
        format!("{:.2}×", tap / detect),
    ]);
    table.row(vec![
        "gateway: publish task CPU per event (batched messages, acknowledged)".into(),
        format!("{pubns:.0} ns"),
        format!("{:.2}×", pubns / detect),
    ]);
    table.row(vec![
        "gateway: publish rate to the broker".into(),
        format!("{:.0} events/s", med(|r| r.publish_rate)),
        String::new(),
    ]);
    table.row(vec![
        "aggregator: events/s over a pre-filled stream".into(),
        format!("{agg_rate:.0} events/s"),
        String::new(),
    ]);
    table.row(vec![
        "two aggregators (partitions 0-7 and 8-15) together, every event once".into(),
        format!("{:.0} events/s", med(|r| r.split_rate)),
        String::new(),
    ]);
    table.row(vec![
        "aggregator: CPU per event (process)".into(),
        format!("{:.0} ns", med(|r| r.aggregate_ns)),
        format!("{:.2}×", med(|r| r.aggregate_ns) / detect),
    ]);
    let data = json!(rounds
        .iter()
        .map(|r| json!({
            "detect_ns": r.detect_ns,
            "tap_ns": r.tap_ns,
            "publish_ns": r.publish_ns,
            "publish_rate": r.publish_rate,
            "aggregate_rate": r.aggregate_rate,
            "aggregate_ns": r.aggregate_ns,
            "split_rate": r.split_rate,
        }))
        .collect::<Vec<_>>());
    Ok(Section {
        title: "Fleet: publishing to NATS JetStream, and the aggregator".into(),
        method: format!(
            "A real nats-server (JetStream, file storage) in a lab namespace. Per round: {n} \
             synthetic gateway events (half the sources new, a tenth answers) through the \
             pipeline alone (thread CPU per event: the baseline), through the drain thread's \
             tap (thread CPU), and through the real outbox and publish task until every event \
             is acknowledged (CPU of the runtime's thread); then `smbwatch aggregate` with a \
             fresh durable consumer reads the whole stream (all rounds' events so far): rate \
             and process CPU from the moment it reads until its consumers have nothing \
             pending or unacknowledged (polled every 10 ms); then two aggregators owning \
             partitions 0-7 and 8-15 read it the same way. Each run fails unless the \
             aggregators' metrics show every stored event processed exactly once. \
             Medians over {} rounds.",
            effort.rounds
        ),
        table,
        data,
        goals: vec![Goal::at_least(
            "aggregator events per second",
            agg_rate,
            AGGREGATE_GOAL,
            "events/s",
            "one aggregator owning all 16 partitions, one core",
        )],
    })
}
