//! Host logs through the running daemon: a Windows event forwarded over TCP
//! (one NXLog JSON record per line, as forwarders send) to the listener of
//! the daemon on the lab gateway, about a real SMB connection that crossed
//! it. The alert names the process and carries the gateway's interface:
//! the host event was joined to the live pair. An oversized line is refused
//! with a log line and the daemon keeps serving.

use std::{net::IpAddr, time::Duration};

use integration_tests::{
    alerts,
    daemon::Daemon,
    events, http,
    netns::{Lab, NetNs, ATTACKER_V4, GW_ATTACKER_IF, GW_SERVERS_IF},
    require_root,
    rsyslog::{free_tcp_port, temp_dir},
    samba::Smbd,
};

/// A Sysmon 3 record as NXLog forwards it (fields as in the OTRF datasets).
fn sysmon3(image: &str, src: &str, sport: u16, dst: IpAddr, utc: &str) -> String {
    serde_json::json!({
        "EventID": 3,
        "Channel": "Microsoft-Windows-Sysmon/Operational",
        "Hostname": "WS5.example.test",
        "SourceName": "Microsoft-Windows-Sysmon",
        "ProcessId": "4242",
        "Image": image,
        "User": "EXAMPLE\\alice",
        "Protocol": "tcp",
        "Initiated": "true",
        "SourceIp": src,
        "SourcePort": sport.to_string(),
        "DestinationIp": dst.to_string(),
        "DestinationPort": "445",
        "UtcTime": utc,
    })
    .to_string()
}

/// Sends lines to 127.0.0.1:`port` from inside `ns`.
fn forward(ns: &NetNs, port: u16, lines: &[String]) {
    http::send_lines(ns, ([127, 0, 0, 1], port).into(), lines).expect("forward over TCP");
}

#[test]
fn forwarded_event_is_joined_to_the_live_pair() {
    require_root();
    let lab = Lab::new(1).expect("lab");
    let server = lab.server_v4[0];
    lab.wait_reachable(server).unwrap();
    let _smbd = Smbd::start(&lab.servers, &[server]).expect("smbd");
    let dir = temp_dir("lab-hostlog");
    let json = dir.join("alerts.json");
    let config = dir.join("smbwatch.toml");
    std::fs::write(&config, "[hostlog]\nmax_line = 2048\n").unwrap();
    let port = free_tcp_port();
    let listen = format!("tcp://127.0.0.1:{port}");
    let mut daemon = Daemon::start(
        &lab.gateway,
        &[
            "--iface",
            GW_ATTACKER_IF,
            "--iface",
            GW_SERVERS_IF,
            "--config",
            config.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
            "--host-log-listen",
            &listen,
            "--events",
        ],
    )
    .expect("daemon");
    daemon
        .wait_stderr(
            "listening for forwarded host events",
            Duration::from_secs(10),
        )
        .unwrap();

    // A real SMB session crosses the gateway...
    let unc = format!("//{server}/public");
    lab.attacker
        .exec("smbclient", &[&unc, "-N", "-c", "ls"])
        .expect("smbclient");
    let lines = daemon.lines_when(Duration::from_secs(5), |l| {
        l.iter().any(events::is_new_pair)
    });
    let pair = lines
        .iter()
        .find(|v| events::is_new_pair(v))
        .expect("pair seen")
        .clone();
    let sport = pair["source"]["port"].as_u64().unwrap() as u16;
    let utc = chrono::DateTime::parse_from_rfc3339(pair["@timestamp"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc)
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string();

    // ...an oversized line is refused, then the host's record of it arrives.
    let oversized = format!("{{\"EventID\":3,\"pad\":\"{}\"}}", "x".repeat(4096));
    let record = sysmon3(r"C:\Tools\python.exe", ATTACKER_V4, sport, server, &utc);
    forward(&lab.gateway, port, &[oversized, record]);

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let found = loop {
        let a = alerts::read(&json);
        if let Some(x) = a
            .iter()
            .find(|a| a["rule"]["id"] == "suspicious_smb_client")
        {
            break x.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no alert; stderr:\n{}",
            daemon.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(found["process"]["name"], "python.exe");
    assert_eq!(found["process"]["pid"], 4242);
    assert_eq!(found["source"]["ip"], ATTACKER_V4);
    assert_eq!(found["destination"]["ip"], server.to_string());
    assert!(
        found["observer"]["ingress"]["interface"]["id"].is_string(),
        "joined to the gateway pair (interface known): {found:#}"
    );
    // The daemon named the interface (resolved once at start-up), and the
    // host log's code is the event's code.
    assert!(
        found["observer"]["ingress"]["interface"]["name"].is_string(),
        "{found:#}"
    );
    assert_eq!(found["event"]["code"], "3", "{found:#}");
    let err = daemon.stderr();
    assert!(
        err.contains("2048"),
        "the oversized line is refused with its limit named:\n{err}"
    );
    assert_eq!(daemon.stop().unwrap(), 0, "the daemon kept running");
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM right after start: the host events of a `--host-log` file are
/// all processed before the daemon exits, not dropped with the runtime.
#[test]
fn sigterm_processes_host_events_already_accepted() {
    require_root();
    let lab = Lab::new(1).expect("lab");
    let dir = temp_dir("lab-hostlog-stop");
    let log = dir.join("sysmon.jsonl");
    let server = lab.server_v4[0];
    let lines: Vec<String> = (0..5000u32)
        .map(|i| {
            let utc = format!("2026-11-30 10:{:02}:{:02}.000", (i / 60) % 60, i % 60);
            sysmon3(
                "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
                "192.0.2.10",
                40000 + (i % 20000) as u16,
                server,
                &utc,
            )
        })
        .collect();
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let json = dir.join("alerts.json");
    let daemon =
        Daemon::on_gateway(&lab, &json, &["--host-log", log.to_str().unwrap()]).expect("daemon");
    let (code, stderr) = daemon.stop_with_stderr().unwrap();
    assert_eq!(code, 0);
    let line = stderr
        .lines()
        .find(|l| l.contains("drain finished"))
        .unwrap_or_else(|| panic!("no drain report: {stderr}"));
    assert!(
        line.contains("host_events=5000"),
        "every accepted host event was processed: {line}"
    );
}
