//! The namespace lab: real nmap, smbd and smbclient traffic through a
//! gateway namespace where the real smbwatch binary has XDP attached.

use std::{net::IpAddr, time::Duration};

use integration_tests::{
    daemon::Daemon,
    netns::{Lab, ATTACKER_V4, ATTACKER_V6, GW_ATTACKER_IF, GW_SERVERS_IF},
    require_root,
    samba::Smbd,
};
use serde_json::Value;

fn of_type<'a>(lines: &'a [Value], t: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["type"] == t).collect()
}

fn gateway_daemon(lab: &Lab) -> Daemon {
    Daemon::start(
        &lab.gateway,
        &[
            "--iface",
            GW_ATTACKER_IF,
            "--iface",
            GW_SERVERS_IF,
            "--stats-interval",
            "1s",
        ],
    )
    .expect("start smbwatch in the gateway namespace")
}

/// nmap -sS -p445 against `targets`: smbd listens on the first `listening`,
/// the rest refuse. Exactly one new_pair and one response per target.
fn nmap_sweep(v6: bool) {
    require_root();
    const N: usize = 8;
    const LISTENING: usize = 3;
    let lab = Lab::new(N).expect("lab");
    let targets: Vec<IpAddr> = if v6 {
        lab.server_v6.clone()
    } else {
        lab.server_v4.clone()
    };
    lab.wait_reachable(targets[0]).unwrap();
    let _smbd = Smbd::start(&lab.servers, &targets[..LISTENING]).expect("smbd");
    let daemon = gateway_daemon(&lab);

    let mut args = vec!["-n", "-Pn", "-sS", "-p445", "--max-retries", "2"];
    if v6 {
        args.push("-6");
    }
    let t: Vec<String> = targets.iter().map(|a| a.to_string()).collect();
    args.extend(t.iter().map(String::as_str));
    let out = lab.attacker.exec("nmap", &args).expect("nmap");
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        report.matches("445/tcp open").count(),
        LISTENING,
        "nmap saw: {report}"
    );

    let lines = daemon.lines_when(Duration::from_secs(5), |l| {
        of_type(l, "response").len() >= N
    });
    let pairs = of_type(&lines, "new_pair");
    let responses = of_type(&lines, "response");
    let attacker = if v6 { ATTACKER_V6 } else { ATTACKER_V4 };
    assert_eq!(pairs.len(), N, "one new_pair per target: {lines:#?}");
    assert_eq!(responses.len(), N, "one response per target: {lines:#?}");
    for p in &pairs {
        assert_eq!(p["src"], attacker);
        assert_eq!(p["dport"], 445);
        assert!(p["vlan"].is_null());
        assert!(p["ts"].as_str().unwrap().ends_with('Z'));
    }
    for (i, target) in targets.iter().enumerate() {
        let r: Vec<_> = responses
            .iter()
            .filter(|r| r["server"] == target.to_string())
            .collect();
        assert_eq!(r.len(), 1, "one response from {target}");
        assert_eq!(r[0]["client"], attacker);
        let want = if i < LISTENING { "accepted" } else { "refused" };
        assert_eq!(r[0]["kind"], want, "answer of {target}");
    }
    let pin_dir = daemon.pin_dir.clone();
    assert_eq!(daemon.stop().unwrap(), 0, "SIGTERM exits 0");
    assert!(!pin_dir.exists(), "pins removed on exit");
    let links = lab
        .gateway
        .ip(&["-d", "link", "show", GW_ATTACKER_IF])
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains("prog/xdp"),
        "XDP detached on exit"
    );
}

#[test]
fn nmap_sweep_ipv4() {
    nmap_sweep(false);
}

#[test]
fn nmap_sweep_ipv6() {
    nmap_sweep(true);
}

fn smbclient_session(v6: bool) {
    require_root();
    let lab = Lab::new(2).expect("lab");
    let server = if v6 {
        lab.server_v6[0]
    } else {
        lab.server_v4[0]
    };
    lab.wait_reachable(server).unwrap();
    let _smbd = Smbd::start(&lab.servers, &[server]).expect("smbd");
    let daemon = gateway_daemon(&lab);
    let unc = match server {
        IpAddr::V4(a) => format!("//{a}/public"),
        IpAddr::V6(a) => format!("//{a}/public"),
    };
    let out = lab
        .attacker
        .exec(
            "smbclient",
            &[&unc, "-N", "-c", "get hello.txt /dev/stdout"],
        )
        .expect("smbclient");
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from the lab"));
    let lines = daemon.lines_when(Duration::from_secs(5), |l| {
        !of_type(l, "response").is_empty()
    });
    let pairs = of_type(&lines, "new_pair");
    let responses = of_type(&lines, "response");
    assert_eq!(pairs.len(), 1, "{lines:#?}");
    assert_eq!(pairs[0]["dst"], server.to_string());
    assert_eq!(responses.len(), 1, "{lines:#?}");
    assert_eq!(responses[0]["kind"], "accepted");
    assert_eq!(daemon.stop().unwrap(), 0);
}

#[test]
fn smbclient_session_ipv4() {
    smbclient_session(false);
}

#[test]
fn smbclient_session_ipv6() {
    smbclient_session(true);
}
