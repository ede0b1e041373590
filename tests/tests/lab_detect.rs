//! Detection end to end in the namespace lab: real nmap and smbclient
//! traffic, the real daemon on the gateway, alerts checked where operators
//! read them: a real rsyslogd and the JSON file.

use std::{path::PathBuf, time::Duration};

use integration_tests::{
    alerts,
    daemon::Daemon,
    events,
    netns::{Lab, ATTACKER_V4, GW_ATTACKER_IF, GW_SERVERS_IF},
    require_root,
    rsyslog::{rsyslogd, temp_dir, Input, Rsyslog},
    samba::Smbd,
};
use serde_json::Value;

/// A collector on a unix socket: reachable from the gateway namespace
/// (unix sockets live in the file system), no traffic on host interfaces.
fn collector() -> Option<(Rsyslog, PathBuf, PathBuf)> {
    let bin = rsyslogd()?;
    let dir = temp_dir("lab");
    let sock = dir.join("log.sock");
    let rs = Rsyslog::start(
        &bin,
        &dir,
        &Input::Unix {
            path: sock.clone(),
            special_parser: false,
        },
    );
    Some((rs, sock, dir))
}

#[tokio::test(flavor = "multi_thread")]
async fn nmap_sweep_of_30_hosts_raises_one_fanout_alert() {
    require_root();
    let Some((rs, sock, dir)) = collector() else {
        return;
    };
    let lab = Lab::new(30).expect("lab");
    lab.wait_reachable(lab.server_v4[0]).unwrap();
    let _smbd = Smbd::start(&lab.servers, &lab.server_v4[..3]).expect("smbd");
    let json = dir.join("alerts.json");
    let syslog = format!("unix://{}", sock.display());
    // The collector parses RFC 5424, which a unix:// target must ask for.
    let daemon = Daemon::on_gateway(
        &lab,
        &json,
        &["--syslog", &syslog, "--syslog-format", "rfc5424"],
    )
    .expect("daemon");
    let first_probe = chrono::Utc::now();
    assert_eq!(lab.sweep_30(&[]).expect("nmap"), 30, "nmap probed 30 hosts");
    rs.wait_alerts(1, Duration::from_secs(10)).await;
    // Give stragglers (a second, wrong alert) time to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let alerts = alerts::read(&json);
    let fanout: Vec<_> = alerts
        .iter()
        .filter(|a| alerts::rule_id(a) == "smb_scan_fanout")
        .collect();
    assert_eq!(fanout.len(), 1, "exactly one fan-out alert: {alerts:#?}");
    let a = fanout[0];
    assert_eq!(a["source"]["ip"], ATTACKER_V4);
    assert_eq!(a["destination"]["port"], 445);
    assert_eq!(
        a["smbwatch"]["distinct_destinations"], 20,
        "fires at the 20th destination"
    );
    let t: Vec<_> = a["threat"]["technique"]["id"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert!(t.contains(&&Value::from("T1046")));
    assert!(a["network"]["community_id"]
        .as_str()
        .unwrap()
        .starts_with("1:"));
    let alert_ts = chrono::DateTime::parse_from_rfc3339(a["@timestamp"].as_str().unwrap()).unwrap();
    eprintln!(
        "detection delay, first probe sent to alert time: {} ms",
        (alert_ts.with_timezone(&chrono::Utc) - first_probe).num_milliseconds()
    );

    let syslogged = rs.alerts();
    let fanout_sys: Vec<_> = syslogged
        .iter()
        .filter(|l| l["msgid"] == "smb_scan_fanout")
        .collect();
    assert_eq!(
        fanout_sys.len(),
        1,
        "exactly one fan-out alert in rsyslog: {syslogged:#?}"
    );
    let sd = fanout_sys[0]["sd"].as_str().unwrap();
    assert!(
        sd.contains(&format!("src=\"{ATTACKER_V4}\"")),
        "structured data names the source: {sd}"
    );
    assert_eq!(daemon.stop().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn five_smbclient_clients_of_one_server_raise_nothing() {
    require_root();
    let Some((rs, sock, dir)) = collector() else {
        return;
    };
    let lab = Lab::new(1).expect("lab");
    let clients = lab.add_clients(5).expect("clients");
    let server = lab.server_v4[0];
    let _smbd = Smbd::start(&lab.servers, &[server]).expect("smbd");
    let json = dir.join("alerts.json");
    let syslog = format!("unix://{}", sock.display());
    let mut args = vec![
        "--iface".to_string(),
        GW_ATTACKER_IF.into(),
        "--iface".into(),
        GW_SERVERS_IF.into(),
        "--json".into(),
        json.to_str().unwrap().into(),
        "--syslog".into(),
        syslog,
        "--events".into(),
    ];
    for c in &clients {
        args.push("--iface".into());
        args.push(c.gw_if.clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(&lab.gateway, &args).expect("daemon");
    let unc = format!("//{server}/public");
    for c in &clients {
        let out =
            c.ns.exec(
                "smbclient",
                &[&unc, "-N", "-c", "get hello.txt /dev/stdout"],
            )
            .expect("smbclient");
        assert!(String::from_utf8_lossy(&out.stdout).contains("hello from the lab"));
    }
    // Every client's pair was seen, so silence below is detection, not blindness.
    let lines = daemon.lines_when(Duration::from_secs(5), |l| {
        l.iter().filter(|v| events::is_new_pair(v)).count() >= 5
    });
    let pairs: Vec<_> = lines.iter().filter(|v| events::is_new_pair(v)).collect();
    assert_eq!(pairs.len(), 5, "{lines:#?}");
    // TRW needs response timeouts to pass before it could fire.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        alerts::read(&json).is_empty(),
        "no alerts: {:#?}",
        alerts::read(&json)
    );
    assert!(
        rs.alerts().is_empty(),
        "nothing in rsyslog: {:#?}",
        rs.alerts()
    );
    assert_eq!(daemon.stop().unwrap(), 0);
}

/// `--json - --events`: alerts and event lines share stdout from two
/// threads, and every line must stay whole (a sweep's event lines outgrow
/// any write buffer; an alert once landed inside an event line).
#[test]
fn alerts_and_events_on_one_stdout_stay_whole_lines() {
    require_root();
    let lab = Lab::new(30).expect("lab");
    lab.wait_reachable(lab.server_v4[0]).unwrap();
    let daemon = Daemon::start(
        &lab.gateway,
        &[
            "--iface",
            GW_ATTACKER_IF,
            "--iface",
            GW_SERVERS_IF,
            "--json",
            "-",
            "--events",
        ],
    )
    .expect("daemon");
    assert_eq!(lab.sweep_30(&[]).expect("nmap"), 30, "nmap probed 30 hosts");
    // lines_when fails on any line that is not a whole JSON document.
    let lines = daemon.lines_when(Duration::from_secs(10), |l| {
        l.iter().filter(|v| events::is_new_pair(v)).count() >= 30
            && l.iter().any(|v| alerts::rule_id(v) == "smb_scan_fanout")
    });
    assert!(
        lines.iter().filter(|v| events::is_new_pair(v)).count() >= 30,
        "{} lines",
        lines.len()
    );
    assert!(lines
        .iter()
        .any(|v| alerts::rule_id(v) == "smb_scan_fanout"));
    assert_eq!(daemon.stop().unwrap(), 0);
}
