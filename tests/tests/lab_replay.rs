//! A capture taken live in the lab replays to the alerts the live daemon
//! raised: tcpdump in the gateway namespace records what crosses it while
//! nmap sweeps, then `smbwatch replay` runs the capture (Linux cooked v2,
//! from `-i any`) through the same program and detection.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use integration_tests::{
    daemon::{smbwatch_bin, Daemon},
    netns::{Lab, ATTACKER_V4, GW_ATTACKER_IF, GW_SERVERS_IF},
    require_root,
    rsyslog::temp_dir,
    samba::Smbd,
};
use serde_json::Value;

fn summary(alerts: &[Value]) -> Vec<(String, String, Value, Value)> {
    let mut v: Vec<_> = alerts
        .iter()
        .map(|a| {
            (
                a["event"]["code"].as_str().unwrap().to_owned(),
                a["source"]["ip"].as_str().unwrap_or("").to_owned(),
                a["smbwatch"]["distinct_destinations"].clone(),
                a["smbwatch"]["destinations"].clone(),
            )
        })
        .collect();
    v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    v
}

#[test]
fn live_capture_replays_to_the_same_alerts() {
    require_root();
    let dir = temp_dir("lab-replay");
    let lab = Lab::new(30).expect("lab");
    lab.wait_reachable(lab.server_v4[0]).unwrap();
    let _smbd = Smbd::start(&lab.servers, &lab.server_v4[..3]).expect("smbd");
    let pcap = dir.join("sweep.pcap");
    let json = dir.join("live.json");
    // Inbound packets on every gateway interface: what XDP sees.
    let mut tcpdump = lab
        .gateway
        .command("tcpdump")
        .args(["-i", "any", "-Q", "in", "-U", "-n", "-w"])
        .arg(&pcap)
        .arg("tcp port 445")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump");
    std::thread::sleep(Duration::from_secs(1));
    let daemon = Daemon::start(
        &lab.gateway,
        &[
            "--iface",
            GW_ATTACKER_IF,
            "--iface",
            GW_SERVERS_IF,
            "--json",
            json.to_str().unwrap(),
        ],
    )
    .expect("daemon");
    lab.attacker
        .exec("nmap", &["-n", "-Pn", "-sS", "-p445", "198.51.100.2-31"])
        .expect("nmap");
    // Past the TRW response timeout, so live and replay both settle.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(daemon.stop().unwrap(), 0);
    unsafe { libc::kill(tcpdump.id() as i32, libc::SIGINT) };
    tcpdump.wait().unwrap();

    let live: Vec<Value> = std::fs::read_to_string(&json)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        live.iter()
            .any(|a| a["event"]["code"] == "smb_scan_fanout" && a["source"]["ip"] == ATTACKER_V4),
        "the live daemon caught the sweep: {live:#?}"
    );

    let out = Command::new(smbwatch_bin())
        .args(["replay", "--pcap"])
        .arg(&pcap)
        .output()
        .expect("smbwatch replay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        summary(&replayed),
        summary(&live),
        "replay raises what the live daemon raised"
    );

    // And replaying twice gives byte-identical output.
    let again = Command::new(smbwatch_bin())
        .args(["replay", "--pcap"])
        .arg(&pcap)
        .output()
        .unwrap();
    assert_eq!(again.stdout, out.stdout);
    let _ = std::fs::remove_dir_all(&dir);
}
