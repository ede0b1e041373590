//! The fleet (NATS JetStream): a gateway's cost per published event beside
//! its cost per event without publishing, and the aggregator's rate over a
//! pre-filled stream, against a real nats-server in a lab namespace.

use std::{
    fs::File,
    net::{IpAddr, Ipv6Addr},
    os::fd::AsRawFd,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::json;
use smbwatch::{
    config::Config,
    event::{GatewayEvent, GatewayEventKind},
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
    fleet::{NatsServer, BROKER_LOCAL},
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

/// Runs `f` on a thread that has entered `ns`'s network namespace, so
/// its sockets (the NATS client's) live there.
fn in_netns<T: Send>(ns: &NetNs, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let file = File::open(ns.path()).with_context(|| format!("opening {}", ns.path()))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns(2) on a namespace file this thread opened; it
            // affects this thread only.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns: {}", std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("benchmark thread panicked"))?
    })
}

/// `n` gateway events as a churning fleet sends them: mostly new pairs from
/// sources seen once or twice, some answers, every tenth source a scanner.
fn events(n: usize) -> Vec<GatewayEvent> {
    let t0 = chrono::Utc::now();
    (0..n)
        .map(|i| {
            let src_n = (i / 2) as u64;
            let src = IpAddr::V6(Ipv6Addr::from(
                (0x2001_0db8_000a_u128 << 80) | u128::from(src_n),
            ));
            let dst = IpAddr::V6(Ipv6Addr::from(
                (0x2001_0db8_000b_u128 << 80) | (i as u128 % 4096),
            ));
            let kind = if i % 10 == 9 {
                GatewayEventKind::Refused
            } else {
                GatewayEventKind::NewPair
            };
            GatewayEvent::new(
                t0 + chrono::TimeDelta::microseconds(i as i64),
                kind,
                src,
                dst,
                40000 + (i % 20000) as u16,
                445,
            )
        })
        .collect()
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
            let task = tokio::spawn(smbwatch::fleet::publisher::run(outbox.clone(), js, rx));
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

/// Starts an aggregator with a fresh durable consumer over the whole
/// stream (`total` events) and measures it from the moment it reads (its
/// consumers exist) until every partition's consumer has nothing pending
/// or unacknowledged: events per second, and its process CPU per event.
fn aggregate(ns: &NetNs, round: usize, total: u64) -> Result<(f64, f64)> {
    let name = format!("bench-{round}");
    let agg = Daemon::aggregate(ns, &["--nats", BROKER_LOCAL, "--name", &name])?;
    let pid = agg.pid();
    let (c0, t0) = (process_cpu(pid), Instant::now());
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
                for p in 0..16 {
                    let info = stream.consumer_info(format!("{name}-p{p}")).await?;
                    left += info.num_pending + info.num_ack_pending as u64;
                }
                if left == 0 {
                    return Ok(t0.elapsed());
                }
                if t0.elapsed() > Duration::from_secs(600) {
                    bail!("the aggregator did not finish {total} events in 10 minutes");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    })?;
    let cpu_ns = (process_cpu(pid) - c0) * 1e9 / total as f64;
    agg.stop()?;
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
        let (aggregate_rate, aggregate_ns) = aggregate(&ns, r, (n * (r + 1)) as u64)?;
        rounds.push(Round {
            detect_ns: detect,
            tap_ns: tap,
            publish_ns,
            publish_rate,
            aggregate_rate,
            aggregate_ns,
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
             pending or unacknowledged (polled every 10 ms). \
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
