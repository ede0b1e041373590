//! A broker failing over under load: the stream's leader in a 3-node
//! cluster killed mid-sweep, or while the aggregator creates its consumers,
//! and nothing lost or processed twice.

use super::*;

/// The stream's leader (a node name) as `url` reports it.
fn stream_leader(ns: &integration_tests::netns::NetNs, url: &str) -> Option<String> {
    let cfg = smbwatch::fleet::PublishConfig::default();
    let name = cfg.stream.clone();
    with_js(ns, url, &cfg, "probe", |js| async move {
        let info = js.js.get_stream(&name).await?.get_info().await?;
        Ok(info.cluster.and_then(|c| c.leader))
    })
    .ok()
    .flatten()
}

/// The leader (a node name) of each of `consumers`, once every one has a
/// leader (within 30 s).
fn consumer_leaders(
    ns: &integration_tests::netns::NetNs,
    url: &str,
    consumers: &[String],
) -> Vec<String> {
    let cfg = smbwatch::fleet::PublishConfig::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (name, consumers) = (cfg.stream.clone(), consumers.to_vec());
        let r = with_js(ns, url, &cfg, "probe", |js| async move {
            let stream = js.js.get_stream(&name).await?;
            let mut leaders = Vec::new();
            for c in &consumers {
                let info = stream.consumer_info(c).await?;
                leaders.push(
                    info.cluster
                        .and_then(|c| c.leader)
                        .ok_or_else(|| anyhow::anyhow!("{c} has no leader"))?,
                );
            }
            Ok(leaders)
        });
        match r {
            Ok(l) => return l,
            Err(e) if Instant::now() > deadline => {
                panic!("the aggregator's consumers have no leaders: {e:#}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn a_stream_leader_killed_mid_sweep_loses_and_duplicates_nothing() {
    stream_leader_killed(false);
}

/// The same failure while the aggregator is (re)starting and creating its
/// consumers (the meta leader's work): what it creates waits for the meta
/// leader's election, and a new consumer whose first leader would have
/// been the dead node for its own. The alert must follow the last of
/// those as closely.
#[test]
fn a_stream_leader_killed_while_the_aggregator_starts_loses_nothing() {
    stream_leader_killed(true);
}

/// A 3-node cluster, two gateways and an aggregator; the stream's leader
/// is SIGKILLed in the middle of a 30-host sweep split across the
/// gateways (`at_startup`: just as the aggregator starts creating its
/// consumers, the first 10 hosts swept before). One alert over all 30,
/// within 3 s of the elections it waits for; each event processed once.
fn stream_leader_killed(at_startup: bool) {
    require_root();
    if !have("nats-server") {
        return skip("nats-server not installed (cargo xtask setup installs it)");
    }
    let lab = FleetLab::new(&octets(2..=16), &octets(17..=31)).expect("fleet lab");
    let _smbd1 = Smbd::start(&lab.srv1, &lab.behind_gw1).expect("smbd behind gw1");
    let _smbd2 = Smbd::start(&lab.srv2, &lab.behind_gw2).expect("smbd behind gw2");
    let mut cluster = NatsCluster::start(&lab.broker, 3).expect("3-node cluster");
    let local = cluster.urls("127.0.0.1");
    // The stream, with 3 replicas (the default on a cluster), once the
    // cluster's JetStream has its meta leader.
    let cfg = smbwatch::fleet::PublishConfig::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let replicas = loop {
        let r = with_js(&lab.broker, &local, &cfg, "setup", |js| async move {
            let s = js.stream().await?;
            Ok(s.get_info().await?.config.num_replicas)
        });
        match r {
            Ok(n) => break n,
            Err(e) if Instant::now() > deadline => panic!("no stream on the cluster: {e:#}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    assert_eq!(replicas, 3);

    let dir = temp_dir("fleet-cluster");
    let (j1, j2, ja) = (
        dir.join("gw1.json"),
        dir.join("gw2.json"),
        dir.join("aggregate.json"),
    );
    let extra = ["--window", "60s", "--metrics"];
    let mut gw1 = gateway(&lab.gw1, &j1, &cluster.urls("192.0.2.1"), "gw1", &extra);
    let mut gw2 = gateway(&lab.gw2, &j2, &cluster.urls("192.0.2.5"), "gw2", &extra);
    // Running gateways: they found the stream.
    gw1.wait_stderr("publishing to the stream", Duration::from_secs(30))
        .expect("gateway 1 found the stream");
    gw2.wait_stderr("publishing to the stream", Duration::from_secs(30))
        .expect("gateway 2 found the stream");
    let metrics: SocketAddr = "127.0.0.1:9466".parse().unwrap();
    let aggregate = || {
        Daemon::aggregate(
            &lab.broker,
            &[
                "--nats",
                &local,
                "--json",
                ja.to_str().unwrap(),
                "--window",
                "60s",
                "--fanout-threshold",
                "30",
                "--metrics",
                &metrics.to_string(),
            ],
        )
        .expect("aggregator")
    };
    // 203.0.113.10's partition (smbwatch::fleet::partition) and the
    // address-less one every aggregator reads.
    let consumers: Vec<String> = ["11", "all"]
        .iter()
        .map(|p| format!("smbwatch-aggregate-p{p}"))
        .collect();
    let started = chrono::Utc::now();
    let (agg, consumer_leader) = if at_startup {
        assert_eq!(lab.sweep(&addrs(2..=11)).unwrap(), 10);
        let mut agg = aggregate();
        agg.wait_stderr("aggregating", Duration::from_secs(30))
            .expect("the aggregator found its position");
        (agg, None)
    } else {
        // A running aggregator: its consumers have leaders.
        let agg = aggregate();
        let leader = consumer_leaders(&lab.broker, &local, &consumers)[0].clone();
        assert_eq!(lab.sweep(&addrs(2..=11)).unwrap(), 10);
        (agg, Some(leader))
    };
    let leader = stream_leader(&lab.broker, &local).expect("a stream leader");
    let killed = chrono::Utc::now();
    let meta = cluster.meta_leader(killed);
    cluster.node(&leader).expect("the leader node").kill();
    assert_eq!(lab.sweep(&addrs(12..=31)).unwrap(), 20);
    let swept = chrono::Utc::now();
    alerts::wait(&ja, Duration::from_secs(30), |_| !fanouts(&ja).is_empty());
    let alerted = chrono::Utc::now();
    let fan = fanouts(&ja);
    assert_eq!(fan.len(), 1, "one alert: {fan:#?}\n{}", agg.stderr());
    assert_eq!(
        fan[0]["smbwatch"]["distinct_destinations"], 30,
        "nothing lost across the failover: {:#}",
        fan[0]
    );
    // The election this alert waits for: the stream's new leader (to
    // store what the gateways publish) and the new leader, if it needed
    // one, of the attacker's partition's consumer (to deliver it); at
    // start also the meta leader, if it died (to create the consumers).
    // A running fleet's events do not pass the meta leader.
    let logs = || cluster.nodes.iter().map(|n| n.log()).collect::<String>();
    let stream_elected = cluster
        .elected(&Leader::Stream(cfg.stream.clone()), killed)
        .unwrap_or_else(|| panic!("no new stream leader logged after {killed}: {}", logs()));
    let consumer_elected = cluster.elected(
        &Leader::Consumer(cfg.stream.clone(), consumers[0].clone()),
        killed,
    );
    if consumer_leader.as_ref() == Some(&leader) {
        assert!(
            consumer_elected.is_some(),
            "no new leader of {} logged: {}",
            consumers[0],
            logs()
        );
    }
    let meta_elected = (meta.as_deref() == Some(leader.as_str()))
        .then(|| cluster.elected(&Leader::Meta, killed))
        .flatten();
    let elected = [consumer_elected, meta_elected.filter(|_| at_startup)]
        .into_iter()
        .flatten()
        .fold(stream_elected, chrono::DateTime::max);
    let since = alerted - elected.max(swept);
    eprintln!(
        "FAILOVER{} leader {leader} killed at {killed} (meta leader {meta:?}, {} led by {consumer_leader:?}); \
         stream leader elected at {stream_elected}, consumer leader at {consumer_elected:?}, \
         meta leader at {meta_elected:?}; sweep done at {swept}; alert seen at {alerted}: \
         {} ms after the last of the election and the sweep",
        if at_startup { " at startup" } else { "" },
        consumers[0],
        since.num_milliseconds()
    );
    // Alerts resume about when the cluster can serve them again: pulls and
    // publishes are made again on the same stream and consumer, within
    // 500 ms, not after a request timeout or a new consumer's election.
    assert!(
        since <= chrono::TimeDelta::seconds(3),
        "the alert came {since} after the election and the sweep\n{}",
        agg.stderr()
    );
    // Event time, whatever the delay: the alert is dated by an event of
    // the sweep, not by when the aggregator got to read it.
    let stamped = chrono::DateTime::parse_from_rfc3339(fan[0]["@timestamp"].as_str().unwrap())
        .expect("@timestamp")
        .to_utc();
    assert!(
        started <= stamped && stamped <= swept,
        "@timestamp {stamped} is the sweep's, between {started} and {swept}"
    );
    let survivors: String = (1..=3)
        .filter(|i| format!("n{i}") != leader)
        .map(|i| format!("nats://127.0.0.1:{}", 4221 + i))
        .collect::<Vec<_>>()
        .join(",");

    // Nothing twice: the aggregator processed exactly the events the
    // gateways had acknowledged, and the stream's messages once each.
    std::thread::sleep(Duration::from_secs(2));
    let acked: f64 = [(&lab.gw1, "gw1"), (&lab.gw2, "gw2")]
        .iter()
        .map(|(ns, id)| {
            let text = http::get(ns, "127.0.0.1:9445".parse().unwrap(), "/metrics")
                .expect("gateway metrics")
                .1;
            assert_eq!(
                metric(
                    &text,
                    r#"smbwatch_fleet_publish_duplicates_total{kind="suspicious"}"#
                ),
                Some(0.0),
                "{id}"
            );
            metric(
                &text,
                r#"smbwatch_fleet_publish_events_total{outcome="acknowledged"}"#,
            )
            .expect("acknowledged events")
        })
        .sum();
    let text = http::get(&lab.broker, metrics, "/metrics").unwrap().1;
    assert_eq!(
        metric(
            &text,
            r#"smbwatch_fleet_aggregate_events_total{kind="gateway"}"#
        ),
        Some(acked),
        "{text}"
    );
    let name = cfg.stream.clone();
    let stored = with_js(&lab.broker, &survivors, &cfg, "probe", |js| async move {
        Ok(js
            .js
            .get_stream(&name)
            .await?
            .get_info()
            .await?
            .state
            .messages)
    })
    .unwrap();
    assert_eq!(
        metric(
            &text,
            r#"smbwatch_fleet_aggregate_messages_total{phase="live"}"#
        ),
        Some(stored as f64)
    );
    assert_eq!(agg.stop().unwrap(), 0);
    assert_eq!(gw1.stop().unwrap(), 0);
    assert_eq!(gw2.stop().unwrap(), 0);
}
