//! What a scanner trying to hide does, against the real daemon on the lab
//! gateway: fragmented SYN sweeps, answers forged from its own side of the
//! gateway, and a slow sweep inside a spoofed-source SYN flood.

use std::{path::PathBuf, time::Duration};

use integration_tests::{
    alerts,
    daemon::Daemon,
    events,
    netns::{send_frames, Lab, ATTACKER_V4},
    require_root,
    rsyslog::temp_dir,
};
use serde_json::Value;
use smbwatch::packet::{tcp_flags, Segment};

fn from_attacker<'a>(alerts: &'a [Value], kind: &str) -> Vec<&'a Value> {
    alerts
        .iter()
        .filter(|a| alerts::rule_id(a) == kind && a["source"]["ip"] == ATTACKER_V4)
        .collect()
}

fn fragmented_sweep_alerts(nmap_flag: &str) {
    require_root();
    let lab = Lab::new(30).expect("lab");
    lab.wait_reachable(lab.server_v4[0]).unwrap();
    let dir = temp_dir("frag");
    let json = dir.join("alerts.json");
    let daemon = Daemon::on_gateway(&lab, &json, &["--events"]).expect("daemon");
    assert_eq!(
        lab.sweep_30(&[nmap_flag]).expect("nmap"),
        30,
        "nmap probed 30 hosts"
    );
    let alerts = alerts::wait(&json, Duration::from_secs(10), |a| {
        !from_attacker(a, "smb_scan_fanout").is_empty()
    });
    assert_eq!(
        from_attacker(&alerts, "smb_scan_fanout").len(),
        1,
        "one fan-out alert for the fragmented sweep ({nmap_flag}): {alerts:#?}"
    );
    let lines = daemon.lines_when(Duration::from_secs(2), |_| false);
    let pairs: Vec<_> = lines.iter().filter(|v| events::is_new_pair(v)).collect();
    assert!(pairs.len() >= 30, "{} pairs", pairs.len());
    assert!(
        pairs.iter().all(|p| p["smbwatch"]["fragmented"] == true),
        "every probe was a first fragment: {pairs:#?}"
    );
    assert_eq!(daemon.stop().unwrap(), 0);
}

#[test]
fn nmap_f_sweep_of_30_hosts_raises_a_fanout_alert() {
    fragmented_sweep_alerts("-f");
}

#[test]
fn nmap_ff_sweep_of_30_hosts_raises_a_fanout_alert() {
    fragmented_sweep_alerts("-ff");
}

#[test]
fn synacks_forged_from_the_scanners_side_do_not_stop_trw() {
    require_root();
    let lab = Lab::new(30).expect("lab");
    lab.wait_reachable(lab.server_v4[0]).unwrap();
    // The targets never answer (filtered): every probe is a TRW failure
    // unless a forged SYN-ACK is believed.
    for cmd in [
        "add table inet smbw",
        "add chain inet smbw in { type filter hook input priority 0 ; }",
        "add rule inet smbw in tcp dport 445 drop",
    ] {
        let args: Vec<&str> = cmd.split(' ').collect();
        lab.servers.exec("nft", &args).expect("nft");
    }
    let dir = temp_dir("forged");

    // The rule this test is about: answers must come from the server's side.
    let json = dir.join("alerts.json");
    let daemon = Daemon::on_gateway(&lab, &json, &["--events", "--fanout-threshold", "1000"])
        .expect("daemon");
    sweep_and_forge(&lab);
    let alerts = alerts::wait(&json, Duration::from_secs(15), |a| {
        !from_attacker(a, "smb_scan_trw").is_empty()
    });
    assert!(
        !from_attacker(&alerts, "smb_scan_trw").is_empty(),
        "TRW alert despite forged answers: {alerts:#?}"
    );
    let lines = daemon.lines_when(Duration::from_secs(1), |_| false);
    let accepted = lines
        .iter()
        .filter(|v| events::action(v) == "accepted")
        .count();
    assert_eq!(accepted, 0, "no forged answer believed: {lines:#?}");
    let status = std::process::Command::new(integration_tests::daemon::smbwatch_bin())
        .args(["status", "--json", "--pin-dir"])
        .arg(&daemon.pin_dir)
        .output()
        .expect("smbwatch status");
    let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    let ignored = status["stats"]["answers_same_ingress"].as_u64().unwrap();
    assert!(ignored >= 25, "forged answers counted: {ignored}");
    assert_eq!(daemon.stop().unwrap(), 0);

    // Without it (`--answers any`, as before the rule), the same forgeries
    // are believed: the check above can fail.
    let json = dir.join("alerts-any.json");
    let daemon = Daemon::on_gateway(
        &lab,
        &json,
        &["--events", "--fanout-threshold", "1000", "--answers", "any"],
    )
    .expect("daemon");
    sweep_and_forge(&lab);
    let lines = daemon.lines_when(Duration::from_secs(5), |l| {
        l.iter().filter(|v| events::action(v) == "accepted").count() >= 25
    });
    let accepted = lines
        .iter()
        .filter(|v| events::action(v) == "accepted")
        .count();
    assert!(
        accepted >= 25,
        "with answers=any the forgeries are believed: {accepted}"
    );
    assert_eq!(daemon.stop().unwrap(), 0);
}

/// A filtered sweep of the 30 targets, then right after it (within the
/// 3 s response timeout) a SYN-ACK "from" every target, injected on the
/// scanner's own link.
fn sweep_and_forge(lab: &Lab) {
    lab.sweep_30(&["--max-retries", "0", "--max-rtt-timeout", "300ms"])
        .expect("nmap");
    let forged: Vec<Vec<u8>> = lab
        .server_v4
        .iter()
        .map(|&t| {
            Segment::new(
                t,
                ATTACKER_V4.parse().unwrap(),
                445,
                40000,
                tcp_flags::SYN | tcp_flags::ACK,
            )
            .frame()
        })
        .collect();
    send_frames(&lab.attacker, "a0", &forged).expect("inject");
}

#[test]
fn a_slow_sweep_inside_a_spoofed_flood_alerts_and_degradation_is_reported() {
    require_root();
    let lab = Lab::new(30).expect("lab");
    lab.wait_reachable(lab.server_v4[0]).unwrap();
    let dir = temp_dir("flood");
    let json: PathBuf = dir.join("alerts.json");
    // A small budget so hping3's rate on this machine exceeds it for sure.
    let daemon = Daemon::on_gateway(
        &lab,
        &json,
        &["--events-per-cpu", "3000", "--stats-interval", "2s"],
    )
    .expect("daemon");
    let mut flood = lab
        .attacker
        .command("hping3")
        .args([
            "--flood",
            "--rand-source",
            "-S",
            "-p",
            "445",
            "198.51.100.31",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("hping3");
    std::thread::sleep(Duration::from_secs(2));
    // 23 hosts, one at a time with a second between them (nmap's own
    // --scan-delay is per host, so one nmap run would probe them all at
    // once): alone this alerts; inside the flood its events must survive the
    // budget and its state the churn. nmap keeps its retries: the flood fills
    // the attacker's own transmit queue, and a probe lost there never reaches
    // the gateway at all.
    let mut answered = 0;
    for host in 2..=24 {
        let target = format!("198.51.100.{host}");
        let out = lab
            .attacker
            .exec("nmap", &["-n", "-Pn", "-sS", "-p445", &target])
            .expect("nmap");
        answered += String::from_utf8_lossy(&out.stdout)
            .matches("445/tcp closed")
            .count();
        std::thread::sleep(Duration::from_secs(1));
    }
    let _ = flood.kill();
    let _ = flood.wait();
    assert!(answered >= 20, "nmap saw {answered} of 23 probes refused");
    let alerts = alerts::wait(&json, Duration::from_secs(10), |a| {
        !from_attacker(a, "smb_scan_fanout").is_empty()
    });
    assert_eq!(
        from_attacker(&alerts, "smb_scan_fanout").len(),
        1,
        "the slow scanner is alerted inside the flood: {alerts:#?}"
    );
    let degraded: Vec<_> = alerts
        .iter()
        .filter(|a| alerts::rule_id(a) == "smbwatch_degraded")
        .collect();
    assert!(
        !degraded.is_empty(),
        "degradation notice raised: {alerts:#?}"
    );
    // The flood stopped: after five quiet seconds the notice clears.
    let alerts = alerts::wait(&json, Duration::from_secs(15), |a| {
        a.iter()
            .filter(|a| alerts::rule_id(a) == "smbwatch_degraded")
            .count()
            >= 2
    });
    let notices: Vec<&str> = alerts
        .iter()
        .filter(|a| alerts::rule_id(a) == "smbwatch_degraded")
        .map(|a| a["message"].as_str().unwrap_or(""))
        .collect();
    assert!(
        notices.iter().any(|m| m.contains("recovered")),
        "degradation cleared: {notices:#?}"
    );
    assert_eq!(daemon.stop().unwrap(), 0);
}
