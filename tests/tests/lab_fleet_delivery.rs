//! The fleet's delivery promise against a real nats-server: nothing lost,
//! nothing counted twice, nothing forged. The aggregator under test is the
//! real binary; the gateways' messages are published by the gateway's own
//! outbox and publish task (`smbwatch::fleet`), or forged by hand where a
//! test plays an attacker.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use async_nats::jetstream::message::PublishMessage;
use integration_tests::{
    alerts,
    daemon::Daemon,
    fleet::{
        consumer_state, metric, publish_events, scan_events, synthetic_event, with_js, NatsServer,
        BROKER_LOCAL,
    },
    http,
    netns::{unique_tag, NetNs},
    require_root,
    rsyslog::temp_dir,
    skip,
};
use serde_json::Value;
use smbwatch::fleet::{
    outbox::{Outbox, Tap},
    wire::Batch,
    PublishConfig,
};

const ATTACKER: &str = "203.0.113.10";
/// 203.0.113.10's partition of 16 (smbwatch::fleet::partition).
const ATTACKER_PARTITION: u16 = 11;

fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn targets(range: std::ops::RangeInclusive<u8>) -> Vec<IpAddr> {
    range.map(|h| IpAddr::from([198, 51, 100, h])).collect()
}

fn fanouts(path: &Path, src: &str) -> Vec<Value> {
    alerts::read(path)
        .into_iter()
        .filter(|a| alerts::rule_id(a) == "smb_scan_fanout" && a["source"]["ip"] == src)
        .collect()
}

fn scrape(ns: &NetNs, addr: SocketAddr) -> String {
    http::get(ns, addr, "/metrics").expect("scrape").1
}

/// A namespace with a broker in it, or `None` (skipped) without nats-server.
fn broker_ns(tag: &str) -> Option<NetNs> {
    require_root();
    if !have("nats-server") {
        skip("nats-server not installed (cargo xtask setup installs it)");
        return None;
    }
    Some(NetNs::new(&format!("smbw-{}-{tag}", unique_tag())).expect("namespace"))
}

#[test]
fn an_aggregator_killed_with_messages_in_flight_counts_the_scan_whole() {
    let Some(ns) = broker_ns("inflight") else {
        return;
    };
    let _nats = NatsServer::start(&ns).expect("nats-server");
    let cfg = PublishConfig::default();
    let src: IpAddr = ATTACKER.parse().unwrap();
    assert_eq!(smbwatch::fleet::partition(src, 16), ATTACKER_PARTITION);
    // The first 15 destinations, seen by gateway 1, before the aggregator.
    with_js(&ns, BROKER_LOCAL, &cfg, "gw1", |js| async move {
        publish_events(js, &scan_events(src, &targets(2..=16))).await
    })
    .expect("gateway 1 published");

    let dir = temp_dir("fleet-inflight");
    let ja = dir.join("aggregate.json");
    let args = [
        "--nats",
        BROKER_LOCAL,
        "--json",
        ja.to_str().unwrap(),
        "--window",
        "60s",
        "--fanout-threshold",
        "30",
        "--name",
        "agg",
    ];
    let consumer = format!("agg-p{ATTACKER_PARTITION}");
    let state = || {
        with_js(&ns, BROKER_LOCAL, &cfg, "probe", |js| {
            let consumer = consumer.clone();
            async move { consumer_state(&js, &consumer).await }
        })
        .expect("consumer state")
    };
    let agg = Daemon::aggregate(&ns, &args).expect("aggregator");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = state();
        if s.0 == 0 && s.1 == 0 && s.2 > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the first 15 processed: {s:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Stopped, it still has pull requests open: the broker delivers the
    // next 15 into its socket, where they are in flight when it dies.
    agg.signal(libc::SIGSTOP);
    with_js(&ns, BROKER_LOCAL, &cfg, "gw2", |js| async move {
        publish_events(js, &scan_events(src, &targets(17..=31))).await
    })
    .expect("gateway 2 published");
    let deadline = Instant::now() + Duration::from_secs(10);
    while state().1 == 0 {
        assert!(
            Instant::now() < deadline,
            "messages delivered to the stopped aggregator: {:?}",
            state()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    agg.kill();
    assert!(fanouts(&ja, ATTACKER).is_empty());

    // Restarted, it must read those messages again at once (well before
    // the broker's 60 s acknowledgement wait would redeliver them).
    let restarted = Instant::now();
    let agg = Daemon::aggregate(&ns, &args).expect("aggregator restarted");
    alerts::wait(&ja, Duration::from_secs(15), |_| {
        !fanouts(&ja, ATTACKER).is_empty()
    });
    let fan = fanouts(&ja, ATTACKER);
    assert_eq!(fan.len(), 1, "one alert: {fan:#?}\n{}", agg.stderr());
    assert_eq!(
        fan[0]["smbwatch"]["distinct_destinations"], 30,
        "the scan counted whole: {:#}",
        fan[0]
    );
    assert!(restarted.elapsed() < Duration::from_secs(20));
    let mut observers: Vec<&str> = fan[0]["observer"]["name"]
        .as_array()
        .expect("observer.name")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    observers.sort_unstable();
    assert_eq!(observers, ["gw1", "gw2"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(fanouts(&ja, ATTACKER).len(), 1, "no second alert");
    assert_eq!(agg.stop().unwrap(), 0);
}

/// A message on `subject` with message id `id`, carrying `events`.
fn raw_message(events: &[smbwatch::event::GatewayEvent], id: &str) -> PublishMessage {
    let mut b = Batch::default();
    for ev in events {
        b.push_gateway(ev);
    }
    PublishMessage::build()
        .payload(b.into_bytes().into())
        .message_id(id)
}

/// The broker's accounts: each gateway may publish only its own subjects
/// (and look up or create the stream), the aggregator may only read.
/// The same text as docs/fleet.md's example, with the lab's passwords.
fn accounts_conf() -> String {
    let gateway = |id: &str| {
        format!(
            r#"{{ user: {id}, password: "pw-{id}", permissions: {{
                publish: {{ allow: ["smbwatch.events.{id}.>",
                                    "$JS.API.STREAM.INFO.SMBWATCH",
                                    "$JS.API.STREAM.CREATE.SMBWATCH"] }},
                subscribe: {{ allow: ["_INBOX_smbwatch_{id}.>"] }} }} }}"#
        )
    };
    format!(
        r#"accounts: {{
  FLEET: {{
    jetstream: enabled
    users: [
      {},
      {},
      {{ user: agg, password: "pw-agg", permissions: {{
          publish: {{ allow: ["$JS.API.STREAM.INFO.SMBWATCH",
                              "$JS.API.CONSUMER.*.SMBWATCH.>",
                              "$JS.API.CONSUMER.DURABLE.CREATE.SMBWATCH.>",
                              "$JS.API.CONSUMER.MSG.NEXT.SMBWATCH.>",
                              "$JS.ACK.SMBWATCH.>"] }},
          subscribe: {{ allow: ["_INBOX_smbwatch_aggregate.>"] }} }} }}
    ]
  }}
}}
"#,
        gateway("gw1"),
        gateway("gw2")
    )
}

#[test]
fn gateways_publish_only_as_themselves_and_forged_ids_are_refused() {
    let Some(ns) = broker_ns("auth") else {
        return;
    };
    let dir = NatsServer::new_dir().unwrap();
    let conf = dir.join("accounts.conf");
    std::fs::write(&conf, accounts_conf()).unwrap();
    let _nats =
        NatsServer::start_in(&ns, dir, &["-c", conf.to_str().unwrap()]).expect("nats-server");
    let files = temp_dir("fleet-accounts");
    let creds = |user: &str| {
        let pw = files.join(format!("{user}.pw"));
        std::fs::write(&pw, format!("pw-{user}\n")).unwrap();
        PublishConfig {
            user: Some(user.into()),
            password_file: Some(pw),
            ..Default::default()
        }
    };
    let (gw1, gw2, agg_creds) = (creds("gw1"), creds("gw2"), creds("agg"));
    let src: IpAddr = ATTACKER.parse().unwrap();
    let other: IpAddr = "203.0.113.14".parse().unwrap();

    // Gateway 1, with its own credentials, creates the stream and publishes.
    with_js(&ns, BROKER_LOCAL, &gw1, "gw1", |js| async move {
        publish_events(js, &scan_events(src, &targets(2..=21))).await
    })
    .expect("gateway 1 publishes as itself");
    let stored = || {
        with_js(&ns, BROKER_LOCAL, &gw1, "gw1", |js| async move {
            Ok(js.stream().await?.get_info().await?.state.messages)
        })
        .expect("stream info")
    };
    let before = stored();
    assert!(before > 0);

    // Gateway 2's credentials cannot publish on gateway 1's subjects; the
    // aggregator's cannot publish at all.
    for (who, cfg) in [("gw2", &gw2), ("aggregate", &agg_creds)] {
        let refused = with_js(&ns, BROKER_LOCAL, cfg, who, |js| async move {
            let subject = smbwatch::fleet::subject("gw1", ATTACKER_PARTITION);
            let ack = js
                .js
                .send_publish(
                    subject,
                    raw_message(&scan_events(other, &targets(2..=21)), "gw1.x.1.y"),
                )
                .await?;
            Ok(tokio::time::timeout(Duration::from_secs(3), ack).await)
        })
        .expect("client connected");
        assert!(
            !matches!(refused, Ok(Ok(_))),
            "{who}'s credentials published as gw1: {refused:?}"
        );
    }
    assert_eq!(stored(), before, "nothing stored as gw1 by others");

    // Gateway 2 on its own subject, but with gateway 1's name in the
    // message id: stored by the broker, refused by the aggregator.
    with_js(&ns, BROKER_LOCAL, &gw2, "gw2", |js| async move {
        let subject = smbwatch::fleet::subject("gw2", ATTACKER_PARTITION);
        js.js
            .send_publish(
                subject,
                raw_message(
                    &scan_events(other, &targets(2..=21)),
                    "gw1.0000000000000001.7.0",
                ),
            )
            .await?
            .await?;
        Ok(())
    })
    .expect("gateway 2 publishes on its own subject");

    let adir = temp_dir("fleet-accounts-agg");
    let ja = adir.join("aggregate.json");
    let cfg_file = adir.join("smbwatch.toml");
    std::fs::write(
        &cfg_file,
        format!(
            "[publish]\nuser = \"agg\"\npassword_file = \"{}\"\n",
            agg_creds.password_file.as_ref().unwrap().display()
        ),
    )
    .unwrap();
    let metrics: SocketAddr = "127.0.0.1:9464".parse().unwrap();
    let agg = Daemon::aggregate(
        &ns,
        &[
            "--nats",
            BROKER_LOCAL,
            "--config",
            cfg_file.to_str().unwrap(),
            "--json",
            ja.to_str().unwrap(),
            "--fanout-threshold",
            "20",
            "--metrics",
            &metrics.to_string(),
        ],
    )
    .expect("the aggregator reads with read-only credentials");
    alerts::wait(&ja, Duration::from_secs(10), |_| {
        !fanouts(&ja, ATTACKER).is_empty()
    });
    assert_eq!(fanouts(&ja, ATTACKER).len(), 1, "{}", agg.stderr());
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = r#"smbwatch_fleet_aggregate_refused_total{reason="gateway_mismatch"}"#;
    while metric(&scrape(&ns, metrics), refused) != Some(1.0) {
        assert!(Instant::now() < deadline, "{}", scrape(&ns, metrics));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        fanouts(&ja, "203.0.113.14").is_empty(),
        "the forged message was not processed"
    );
    assert!(agg.stderr().contains("does not name the subject's gateway"));
    assert_eq!(agg.stop().unwrap(), 0);
}

/// Events each gateway of the SIGSTOP test publishes at most (about 20 k
/// messages, 0.6 GiB of stream).
const PER_GATEWAY: usize = 6_000_000;

#[test]
fn a_stopped_aggregator_processes_every_stored_event_exactly_once() {
    let Some(ns) = broker_ns("stop") else {
        return;
    };
    let _nats = NatsServer::start(&ns).expect("nats-server");
    let cfg = PublishConfig {
        stream_max_bytes: 2 << 30,
        ..Default::default()
    };
    // The stream exists before the aggregator starts.
    with_js(&ns, BROKER_LOCAL, &cfg, "gw1", |js| async move {
        js.stream().await?;
        Ok(())
    })
    .unwrap();
    let dir = temp_dir("fleet-stop");
    let ja = dir.join("aggregate.json");
    let metrics: SocketAddr = "127.0.0.1:9465".parse().unwrap();
    let agg = Daemon::aggregate(
        &ns,
        &[
            "--nats",
            BROKER_LOCAL,
            "--json",
            ja.to_str().unwrap(),
            "--metrics",
            &metrics.to_string(),
        ],
    )
    .expect("aggregator");

    // Two gateways publish as fast as their publish tasks go.
    let stop = Arc::new(AtomicBool::new(false));
    let gateway = |id: &'static str| {
        let (ns_path, stop, cfg) = (ns.path(), stop.clone(), cfg.clone());
        std::thread::spawn(move || -> Result<u64> {
            integration_tests::gen::enter_netns(&ns_path)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let js = smbwatch::fleet::transport::JetStream::connect(
                    BROKER_LOCAL,
                    &cfg,
                    id,
                    id,
                    false,
                )
                .await?;
                let outbox = Arc::new(Outbox::new(64 << 20));
                let mut tap = Tap::new(outbox.clone(), 16);
                let (tx, rx) = tokio::sync::watch::channel(false);
                let task = tokio::spawn(smbwatch::fleet::publisher::run(
                    outbox.clone(),
                    js,
                    Default::default(),
                    rx,
                ));
                let t0 = chrono::Utc::now();
                let mut i = 0;
                // Bounded, so the stream (2 GiB) holds everything however
                // fast this machine publishes: an overflowing stream
                // discards old messages, which is the broker's limit, not
                // the aggregator's (checked below: nothing discarded).
                while !stop.load(Ordering::Relaxed) && i < PER_GATEWAY {
                    // Keep the outbox a few MiB full: the publisher's rate,
                    // never a drop.
                    if outbox.stats().bytes > 8 << 20 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    for _ in 0..4096 {
                        tap.gateway(&synthetic_event(i, t0));
                        i += 1;
                    }
                    tap.flush();
                    tokio::task::yield_now().await;
                }
                let _ = tx.send(true);
                let s = task.await?;
                anyhow::ensure!(s.dropped == 0 && s.queued == 0, "{s:?}");
                Ok(s.delivered)
            })
        })
    };
    let gws = [gateway("gw1"), gateway("gw2")];
    std::thread::sleep(Duration::from_secs(2));
    agg.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(30));
    agg.signal(libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let published: u64 = gws
        .into_iter()
        .map(|g| g.join().expect("gateway thread").expect("gateway"))
        .sum();
    assert!(published > 100_000, "only {published} events published");

    let events = r#"smbwatch_fleet_aggregate_events_total{kind="gateway"}"#;
    // Until all are processed, or nothing was for 30 s (a debug build on
    // a loaded 2-core machine reads some 40k events/s: minutes).
    let mut progress = (0.0, Instant::now());
    loop {
        let text = scrape(&ns, metrics);
        let done = metric(&text, events).unwrap_or(0.0);
        if done >= published as f64 || progress.1.elapsed() > Duration::from_secs(30) {
            break;
        }
        if done > progress.0 {
            progress = (done, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Anything counted twice would show now.
    std::thread::sleep(Duration::from_secs(2));
    let text = scrape(&ns, metrics);
    let stored = with_js(&ns, BROKER_LOCAL, &cfg, "probe", |js| async move {
        Ok(js.stream().await?.get_info().await?.state.messages)
    })
    .unwrap();
    let processed = metric(
        &text,
        r#"smbwatch_fleet_aggregate_messages_total{phase="live"}"#,
    );
    eprintln!(
        "published {published} events in {stored} messages; aggregator:\n{}",
        text.lines()
            .filter(|l| l.starts_with("smbwatch_fleet"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        metric(&text, events),
        Some(published as f64),
        "every stored event processed exactly once"
    );
    assert_eq!(processed, Some(stored as f64), "every stored message once");
    assert_eq!(
        metric(&text, "smbwatch_fleet_aggregate_discarded_unread_total"),
        Some(0.0),
        "the stream kept every message"
    );
    assert_eq!(metric(&text, "smbwatch_fleet_aggregate_backlog"), Some(0.0));
    assert_eq!(agg.stop().unwrap(), 0);
}
