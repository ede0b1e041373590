//! Many routers, one detector: two gateways, each with its own daemon and
//! XDP program, publish to a real nats-server (JetStream); `smbwatch
//! aggregate` detects what neither gateway can see alone. The broker
//! failover tests are in `lab_fleet/failover.rs`.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use integration_tests::{
    alerts,
    daemon::Daemon,
    fleet::{
        metric, with_js, FleetLab, Leader, NatsCluster, NatsServer, BROKER_FOR_GW1, BROKER_FOR_GW2,
        BROKER_LOCAL,
    },
    http,
    netns::{NetNs, ATTACKER_V4},
    require_root,
    rsyslog::temp_dir,
    samba::Smbd,
    skip,
};
use serde_json::Value;

// The failover tests (one test binary: the lab's helpers are shared).
#[path = "lab_fleet/failover.rs"]
mod failover;

fn fanouts(path: &Path) -> Vec<Value> {
    alerts::read(path)
        .into_iter()
        .filter(|a| alerts::rule_id(a) == "smb_scan_fanout" && a["source"]["ip"] == ATTACKER_V4)
        .collect()
}

fn octets(range: std::ops::RangeInclusive<u8>) -> Vec<u8> {
    range.collect()
}

fn addrs(range: std::ops::RangeInclusive<u8>) -> Vec<IpAddr> {
    range.map(|h| IpAddr::from([198, 51, 100, h])).collect()
}

/// A gateway daemon attached to both of `ns`'s lab interfaces, writing
/// its alerts to `json` and publishing to `url` as `id`; `extra` flags
/// appended.
fn gateway(ns: &NetNs, json: &Path, url: &str, id: &str, extra: &[&str]) -> Daemon {
    let json = json.to_str().unwrap();
    let mut args = vec![
        "--iface",
        "g0",
        "--iface",
        "g1",
        "--json",
        json,
        "--publish",
        url,
        "--gateway-id",
        id,
    ];
    args.extend_from_slice(extra);
    Daemon::start(ns, &args).expect("gateway daemon")
}

fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_sweep_split_across_two_gateways_is_one_alert_at_the_aggregator() {
    require_root();
    if !have("nats-server") {
        return skip("nats-server not installed (cargo xtask setup installs it)");
    }
    // Phase 1: .2-.16 behind gw1 and .17-.31 behind gw2 (15 each). Phase 2,
    // after the aggregator's restart: .32-.46 and .47-.61. Phase 3, with
    // the broker down: .62-.81, all behind gw1.
    let mut gw1_hosts = octets(2..=16);
    gw1_hosts.extend(octets(32..=46));
    gw1_hosts.extend(octets(62..=81));
    let mut gw2_hosts = octets(17..=31);
    gw2_hosts.extend(octets(47..=61));
    let lab = FleetLab::new(&gw1_hosts, &gw2_hosts).expect("fleet lab");
    let _smbd1 = Smbd::start(&lab.srv1, &lab.behind_gw1).expect("smbd behind gw1");
    let _smbd2 = Smbd::start(&lab.srv2, &lab.behind_gw2).expect("smbd behind gw2");
    let mut nats = NatsServer::start(&lab.broker).expect("nats-server");

    let dir = temp_dir("fleet");
    let (j1, j2, ja) = (
        dir.join("gw1.json"),
        dir.join("gw2.json"),
        dir.join("aggregate.json"),
    );
    let window = ["--window", "30s"];
    let mut gw1 = gateway(&lab.gw1, &j1, BROKER_FOR_GW1, "gw1", &window);
    let gw2 = gateway(&lab.gw2, &j2, BROKER_FOR_GW2, "gw2", &window);
    // Threshold 30 at the aggregator: its alert needs every event of the
    // 30-host sweep, including those published around the broker's crash.
    let agg_args = [
        "--nats",
        BROKER_LOCAL,
        "--json",
        ja.to_str().unwrap(),
        // Long enough that phase 2 still falls in it (see there).
        "--window",
        "2m",
        "--fanout-threshold",
        "30",
        "--name",
        "agg",
    ];
    let agg = Daemon::aggregate(&lab.broker, &agg_args).expect("aggregator");

    // Phase 1, with nats-server killed (SIGKILL) and restarted mid-sweep.
    assert_eq!(
        lab.sweep(&addrs(2..=11)).unwrap(),
        10,
        "nmap reached 10 hosts"
    );
    nats.kill();
    assert_eq!(lab.sweep(&addrs(12..=21)).unwrap(), 10);
    // Long enough for unacknowledged publishes to time out and be kept
    // for a resend (5 s), short of the 30 s window.
    std::thread::sleep(Duration::from_secs(7));
    nats.restart().expect("nats-server restarted");
    assert_eq!(lab.sweep(&addrs(22..=31)).unwrap(), 10);
    let phase1_end = Instant::now();
    gw1.wait_stderr("event broker unreachable", Duration::from_secs(5))
        .expect("gateway 1 went through the outage");

    let got = alerts::wait(&ja, Duration::from_secs(30), |_| !fanouts(&ja).is_empty());
    let fan = fanouts(&ja);
    assert_eq!(
        fan.len(),
        1,
        "one fan-out alert at the aggregator: {got:#?}"
    );
    assert_eq!(
        fan[0]["smbwatch"]["distinct_destinations"], 30,
        "no event lost across the broker's crash: {:#}",
        fan[0]
    );
    let mut observers: Vec<&str> = fan[0]["observer"]["name"]
        .as_array()
        .expect("observer.name lists the gateways")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    observers.sort_unstable();
    assert_eq!(observers, ["gw1", "gw2"]);
    for (name, json) in [("gw1", &j1), ("gw2", &j2)] {
        assert!(
            alerts::read(json)
                .iter()
                .all(|a| a["source"]["ip"] != ATTACKER_V4),
            "{name} saw 15 hosts and must not alert alone: {:#?}",
            alerts::read(json)
        );
    }

    // Phase 2: the aggregator crashes (SIGKILL) and restarts; at once the
    // scanner sweeps 30 new hosts, inside the aggregator's 2 min window. A
    // restarted aggregator that rebuilt its state counts 60 hosts and
    // raises the doubling (60 = twice the threshold) over all of them; one
    // that forgot phase 1 would count 30 and raise a first alert over 30.
    // (A sweep after the window has passed is a new sweep and alerts
    // again: that is the detector's rule, not a lost state.)
    agg.kill();
    let agg = Daemon::aggregate(&lab.broker, &agg_args).expect("aggregator restarted");
    assert!(
        phase1_end.elapsed() < Duration::from_secs(90),
        "phase 2 must start inside the aggregator's window"
    );
    assert_eq!(lab.sweep(&addrs(32..=61)).unwrap(), 30);
    alerts::wait(&ja, Duration::from_secs(30), |_| fanouts(&ja).len() >= 2);
    std::thread::sleep(Duration::from_secs(2));
    let fan = fanouts(&ja);
    assert_eq!(
        fan.len(),
        2,
        "one more alert after the restart, the doubling: {fan:#?}"
    );
    assert_eq!(
        fan[1]["smbwatch"]["distinct_destinations"], 60,
        "the restarted aggregator counts phase 1's hosts too: {:#}",
        fan[1]
    );
    assert!(
        agg.stderr().contains("state rebuilt"),
        "the restarted aggregator rebuilt its state: {}",
        agg.stderr()
    );

    // Phase 3: the broker is down; gateway 1 still detects on its own.
    // Gateway 1's window (30 s) passes first, so this sweep is a new one to
    // it whatever phases 1 and 2 raised there.
    std::thread::sleep(Duration::from_secs(31));
    let before = fanouts(&j1).len();
    nats.kill();
    assert_eq!(lab.sweep(&addrs(62..=81)).unwrap(), 20);
    alerts::wait(&j1, Duration::from_secs(10), |_| {
        fanouts(&j1).len() > before
    });
    assert!(
        fanouts(&j1).len() > before,
        "gateway 1 alerts locally with the broker down"
    );
    assert_eq!(agg.stop().unwrap(), 0);
    assert_eq!(gw1.stop().unwrap(), 0);
    assert_eq!(gw2.stop().unwrap(), 0);
}

#[test]
fn two_aggregators_share_the_partitions_with_source_affinity() {
    require_root();
    if !have("nats-server") {
        return skip("nats-server not installed (cargo xtask setup installs it)");
    }
    // 203.0.113.10 hashes to partition 11 of 16 and 203.0.113.14 to 7
    // (smbwatch::fleet::partition, fixed for every version).
    let other: IpAddr = "203.0.113.14".parse().unwrap();
    let attacker: IpAddr = ATTACKER_V4.parse().unwrap();
    assert_eq!(smbwatch::fleet::partition(attacker, 16), 11);
    assert_eq!(smbwatch::fleet::partition(other, 16), 7);
    let lab = FleetLab::new(&octets(2..=21), &[22]).expect("fleet lab");
    lab.add_attacker_address(other).unwrap();
    let _smbd = Smbd::start(&lab.srv1, &lab.behind_gw1).expect("smbd");
    let _nats = NatsServer::start(&lab.broker).expect("nats-server");
    let dir = temp_dir("fleet-parts");
    let (jg, ja, jb) = (dir.join("gw1.json"), dir.join("a.json"), dir.join("b.json"));
    let gw1 = gateway(&lab.gw1, &jg, BROKER_FOR_GW1, "gw1", &[]);
    let aggregator = |name, parts, json: &Path| {
        Daemon::aggregate(
            &lab.broker,
            &[
                "--nats",
                BROKER_LOCAL,
                "--partitions",
                parts,
                "--name",
                name,
                "--json",
                json.to_str().unwrap(),
            ],
        )
        .expect("aggregator")
    };
    let a = aggregator("agg-a", "0-7", &ja);
    let b = aggregator("agg-b", "8-15", &jb);
    let targets = addrs(2..=21);
    assert_eq!(lab.sweep_from(None, &targets).unwrap(), 20);
    assert_eq!(lab.sweep_from(Some(other), &targets).unwrap(), 20);
    let sources = |json: &Path| -> Vec<String> {
        alerts::read(json)
            .iter()
            .filter(|a| alerts::rule_id(a) == "smb_scan_fanout")
            .filter_map(|a| a["source"]["ip"].as_str().map(String::from))
            .collect()
    };
    alerts::wait(&ja, Duration::from_secs(20), |_| !sources(&ja).is_empty());
    alerts::wait(&jb, Duration::from_secs(20), |_| !sources(&jb).is_empty());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        sources(&ja),
        ["203.0.113.14"],
        "aggregator A owns partition 7"
    );
    assert_eq!(
        sources(&jb),
        [ATTACKER_V4],
        "aggregator B owns partition 11"
    );
    assert_eq!(a.stop().unwrap(), 0);
    assert_eq!(b.stop().unwrap(), 0);
    assert_eq!(gw1.stop().unwrap(), 0);
}

#[test]
fn the_broker_takes_tls_and_a_password_and_refuses_a_wrong_one() {
    require_root();
    if !have("nats-server") {
        return skip("nats-server not installed (cargo xtask setup installs it)");
    }
    let lab = FleetLab::new(&octets(2..=21), &[22]).expect("fleet lab");
    let dir = NatsServer::new_dir().unwrap();
    let (ca, cert, key) = integration_tests::certs::make_certs(&dir);
    let _nats = NatsServer::start_in(
        &lab.broker,
        dir,
        &[
            "--user",
            "fleet",
            "--pass",
            "s3cret-for-the-lab",
            "--tls",
            "--tlscert",
            cert.to_str().unwrap(),
            "--tlskey",
            key.to_str().unwrap(),
        ],
    )
    .expect("nats-server with TLS and a password");
    let conf = temp_dir("fleet-auth");
    let config = |password: &str| {
        let pw = conf.join(format!("pw-{password}"));
        std::fs::write(&pw, format!("{password}\n")).unwrap();
        let file = conf.join(format!("smbwatch-{password}.toml"));
        std::fs::write(
            &file,
            format!(
                "[publish]\nuser = \"fleet\"\npassword_file = \"{}\"\ntls_ca = \"{}\"\n",
                pw.display(),
                ca.display()
            ),
        )
        .unwrap();
        file
    };
    let url = "tls://127.0.0.1:4222";
    let good = config("s3cret-for-the-lab");
    let agg = Daemon::aggregate(
        &lab.broker,
        &["--nats", url, "--config", good.to_str().unwrap()],
    )
    .expect("the right password over TLS");
    assert_eq!(agg.stop().unwrap(), 0);
    let bad = config("wrong");
    let refused = Daemon::aggregate(
        &lab.broker,
        &["--nats", url, "--config", bad.to_str().unwrap()],
    );
    let err = format!("{:#}", refused.err().expect("a wrong password is refused"));
    assert!(
        err.to_lowercase().contains("authorization"),
        "the error names the refusal: {err}"
    );
    // Without the CA, the broker's certificate is refused, and the error
    // says which setting is missing.
    let plain = Daemon::aggregate(&lab.broker, &["--nats", "nats://127.0.0.1:4222"]);
    let err = format!("{:#}", plain.err().expect("an unknown CA is refused"));
    assert!(err.contains("tls_ca"), "{err}");
}

/// The aggregator reloads as the daemon does (one runtime): SIGHUP
/// re-reads `--config`, applies a threshold, reports a startup-only key it
/// did not apply, refuses a bad file naming file:line and key, and counts
/// each outcome on its /metrics. Only a broker is needed.
#[test]
fn the_aggregator_reloads_on_sighup_and_counts_it() {
    require_root();
    if !have("nats-server") {
        return skip("nats-server not installed (cargo xtask setup installs it)");
    }
    let ns = integration_tests::netns::NetNs::new(&format!(
        "smbw-{}-reload",
        integration_tests::netns::unique_tag()
    ))
    .expect("namespace");
    let _nats = NatsServer::start(&ns).expect("nats-server");
    let dir = temp_dir("fleet-reload");
    let config = dir.join("smbwatch.toml");
    std::fs::write(&config, "[detect]\nfanout_threshold = 30\n").unwrap();
    let metrics: SocketAddr = "127.0.0.1:9467".parse().unwrap();
    let mut agg = Daemon::aggregate(
        &ns,
        &[
            "--nats",
            BROKER_LOCAL,
            "--config",
            config.to_str().unwrap(),
            "--metrics",
            &metrics.to_string(),
        ],
    )
    .expect("aggregator");
    let reloads = |result: &str| {
        let text = http::get(&ns, metrics, "/metrics").unwrap().1;
        metric(
            &text,
            &format!(r#"smbwatch_reload_total{{result="{result}"}}"#),
        )
    };
    assert_eq!((reloads("ok"), reloads("failed")), (Some(0.0), Some(0.0)));

    std::fs::write(
        &config,
        "[detect]\nfanout_threshold = 12\n[publish]\nstream = \"other\"\n",
    )
    .unwrap();
    agg.signal(libc::SIGHUP);
    agg.wait_stderr("configuration reloaded", Duration::from_secs(10))
        .expect("reloaded");
    let err = agg.stderr();
    assert!(
        err.contains("detect.fanout_threshold")
            && err.contains("publish.stream changed but needs a restart"),
        "{err}"
    );
    assert_eq!(reloads("ok"), Some(1.0));

    std::fs::write(
        &config,
        "[detect]\nfanout_threshold = 12\nwindow = \"0s\"\n",
    )
    .unwrap();
    agg.signal(libc::SIGHUP);
    agg.wait_stderr("reload failed", Duration::from_secs(10))
        .expect("refused");
    let line = format!("{}:3:1: detect.window", config.display());
    assert!(
        agg.stderr().contains(&line),
        "names {line}: {}",
        agg.stderr()
    );
    assert_eq!(reloads("failed"), Some(1.0));
    assert_eq!(agg.stop().unwrap(), 0);
}
