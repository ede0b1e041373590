//! Host-rule tests: the seed's samples, real OTRF and EVTX logs, dedup.

use super::*;
use crate::hostlog::tests::{data_file, COVENANT, EMPIRE, PSEXEC};
use crate::hostlog::{parse_bytes, parse_file, parse_line, Format, TimeSource};
use chrono::{DateTime, Utc};

fn ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn conn(log: ConnectionLog, pid: Option<u32>, image: &str, dst: &str) -> HostEvent {
    HostEvent {
        ts: ts("2025-06-08T05:30:23Z"),
        time_source: TimeSource::Utc,
        host: Some("TARGET-SRV".into()),
        channel: Some("Security".into()),
        record_id: None,
        record: HostRecord::NetworkConnection(NetworkConnection {
            log,
            src_ip: Some("10.45.45.103".parse().unwrap()),
            src_port: Some(50146),
            dst_ip: Some(dst.parse().unwrap()),
            dst_port: Some(445),
            protocol: Some(6),
            direction: Some(Direction::Outbound),
            process: Process {
                pid,
                image: Some(image.into()),
                image_name: Some(crate::hostlog::image_file_name(image).into()),
                guid: None,
            },
            account: Default::default(),
        }),
    }
}

/// The connection of an event `conn` built, to change a field.
fn net(ev: &mut HostEvent) -> &mut NetworkConnection {
    match &mut ev.record {
        HostRecord::NetworkConnection(c) => c,
        other => panic!("not a connection: {other:?}"),
    }
}

#[test]
fn seed_sample_dns_exe_alerts() {
    let ev = conn(
        ConnectionLog::Wfp,
        Some(1752),
        "\\device\\harddiskvolume1\\windows\\system32\\dns.exe",
        "10.45.45.104",
    );
    let a = suspicious_smb_client(&ev, &HostRulesConfig::default()).unwrap();
    assert_eq!(a.kind, AlertKind::SuspiciousSmbClient);
    assert_eq!(a.techniques, vec!["T1210"]);
    let p = a.process.as_ref().unwrap();
    assert_eq!((p.name.as_deref(), p.pid), (Some("dns.exe"), Some(1752)));
    assert_eq!(a.destination_ip, Some("10.45.45.104".parse().unwrap()));
    assert_eq!(a.destination_port, Some(445));
    assert_eq!(a.host.as_deref(), Some("TARGET-SRV"));
    assert!(a
        .community_id
        .as_deref()
        .is_some_and(|c| c.starts_with("1:")));
    assert_eq!(
        a.message,
        "dns.exe (pid 1752) on TARGET-SRV opened an SMB connection to 10.45.45.104:445; \
         the normal SMB client is System (pid 4) [Security 5156]"
    );
}

/// The literal Sigma reading ANDs its filter fields; the intent excludes either.
#[test]
fn sigma_literal_versus_intent() {
    // System (pid 4) to a remote host: the everyday kernel SMB client.
    let system = conn(ConnectionLog::Wfp, Some(4), "System", "10.45.45.104");
    assert!(
        sigma_literal_reading(&system),
        "literal reading alerts on every kernel SMB connection"
    );
    assert!(!smb_client_intent(&system));
    // A tool to loopback (a local relay/tunnel test): excluded by intent too.
    let local = conn(
        ConnectionLog::Wfp,
        Some(1752),
        "C:\\tools\\python.exe",
        "127.0.0.1",
    );
    assert!(sigma_literal_reading(&local));
    assert!(!smb_client_intent(&local));
    let local6 = conn(
        ConnectionLog::Wfp,
        Some(1752),
        "C:\\tools\\python.exe",
        "::1",
    );
    assert!(!smb_client_intent(&local6));
    // Both readings drop System to loopback, and both keep dns.exe to a remote host.
    let both = conn(ConnectionLog::Wfp, Some(4), "System", "127.0.0.1");
    assert!(!sigma_literal_reading(&both) && !smb_client_intent(&both));
    let dns = conn(ConnectionLog::Wfp, Some(1752), "dns.exe", "10.45.45.104");
    assert!(sigma_literal_reading(&dns) && smb_client_intent(&dns));
}

#[test]
fn inbound_other_ports_and_allowlist() {
    let mut ev = conn(
        ConnectionLog::Sysmon,
        Some(1752),
        "C:\\x\\python.exe",
        "10.0.0.2",
    );
    net(&mut ev).direction = Some(Direction::Inbound);
    assert!(suspicious_smb_client(&ev, &HostRulesConfig::default()).is_none());
    net(&mut ev).direction = None;
    assert!(suspicious_smb_client(&ev, &HostRulesConfig::default()).is_some());
    net(&mut ev).dst_port = Some(139);
    assert!(suspicious_smb_client(&ev, &HostRulesConfig::default()).is_none());
    net(&mut ev).dst_port = Some(445);
    let cfg = HostRulesConfig {
        allow_images: vec!["PYTHON.EXE".into()],
        ..HostRulesConfig::default()
    };
    assert!(suspicious_smb_client(&ev, &cfg).is_none());
    // No pid in the record: the image `System` identifies the kernel client.
    let mut sys = conn(ConnectionLog::Sysmon, None, "System", "10.0.0.2");
    assert!(suspicious_smb_client(&sys, &HostRulesConfig::default()).is_none());
    net(&mut sys).process.image = Some("C:\\x\\evil.exe".into());
    net(&mut sys).process.image_name = Some("evil.exe".into());
    assert!(suspicious_smb_client(&sys, &HostRulesConfig::default()).is_some());
}

#[test]
fn share_severity_by_share_and_account() {
    let kv = "EventID: 5140\nTimeCreated: 2025-06-08T05:31:00Z\nShareName: \\\\*\\C$\nIpAddress: 10.0.0.9\n\
              SubjectUserName: bob\nSubjectDomainName: CORP\nSubjectUserSid: S-1-5-21-7-1104\n\n\
              EventID: 5140\nTimeCreated: 2025-06-08T05:31:00Z\nShareName: \\\\*\\ADMIN$\nIpAddress: 10.0.0.9\n\
              SubjectUserName: WS1$\nSubjectDomainName: CORP\n\n\
              EventID: 5140\nTimeCreated: 2025-06-08T05:31:00Z\nShareName: \\\\*\\IPC$\nIpAddress: 10.0.0.9\n\n\
              EventID: 5140\nTimeCreated: 2025-06-08T05:31:00Z\nShareName: \\\\*\\SYSVOL\nIpAddress: 10.0.0.9\n";
    let (evs, _) = parse_bytes("s", kv.as_bytes(), Format::KeyValue).unwrap();
    let sev: Vec<_> = evs
        .iter()
        .map(|e| admin_share_access(e).map(|a| a.severity))
        .collect();
    assert_eq!(
        sev,
        vec![
            Some(Severity::High),
            Some(Severity::Medium),
            Some(Severity::Low),
            None
        ]
    );
    let a = admin_share_access(&evs[0]).unwrap();
    assert_eq!(a.techniques, vec!["T1021.002"]);
    assert_eq!(a.user.as_deref(), Some("CORP\\bob"));
    assert_eq!(a.user_id.as_deref(), Some("S-1-5-21-7-1104"));
    assert_eq!(a.event_code, Some(5140));
    assert_eq!(a.source_ip, Some("10.0.0.9".parse().unwrap()));
    assert_eq!(
        a.message,
        "CORP\\bob from 10.0.0.9 accessed administrative share \\\\*\\C$ [Security 5140]"
    );
}

#[test]
fn one_connection_logged_twice_is_one_alert() {
    let mut rules = HostRules::new(HostRulesConfig::default());
    let wfp = conn(
        ConnectionLog::Wfp,
        Some(8948),
        "\\device\\harddiskvolume2\\powershell.exe",
        "172.18.39.6",
    );
    let mut sysmon = conn(
        ConnectionLog::Sysmon,
        None,
        "C:\\Windows\\powershell.exe",
        "172.18.39.6",
    );
    sysmon.ts = wfp.ts + chrono::Duration::milliseconds(2481);
    assert!(rules.check(&sysmon).is_some());
    assert!(rules.check(&wfp).is_none(), "either order");
    // A new source port is a new connection.
    let mut again = wfp.clone();
    net(&mut again).src_port = Some(50505);
    assert!(rules.check(&again).is_some());
    // Same tuple, both pids known and different: not the same record.
    let mut fresh = HostRules::new(HostRulesConfig::default());
    assert!(fresh.check(&wfp).is_some());
    let mut other = wfp.clone();
    net(&mut other).process.pid = Some(1);
    assert!(fresh.check(&other).is_some());
    assert!(
        fresh.check(&sysmon).is_none(),
        "no pid: a duplicate of either"
    );
    // Same tuple much later: port reuse, a new connection.
    let mut later = wfp.clone();
    later.ts += chrono::Duration::seconds(60);
    assert!(rules.check(&later).is_some());
    assert_eq!(rules.stats().duplicate_connections, 1);
    assert_eq!(rules.stats().alerts, 3);
}

#[test]
fn dedup_state_is_bounded() {
    let cfg = HostRulesConfig {
        max_dedup_entries: 8,
        ..HostRulesConfig::default()
    };
    let mut rules = HostRules::new(cfg);
    for port in 1000..1100u16 {
        let mut ev = conn(ConnectionLog::Wfp, Some(9), "x.exe", "10.0.0.2");
        net(&mut ev).src_port = Some(port);
        assert!(rules.check(&ev).is_some());
    }
    assert!(rules.conns.len() <= 8);
    assert_eq!(rules.stats().evicted, 92);
}

#[test]
fn real_empire_log_powershell_not_system() {
    let Some(p) = data_file(EMPIRE) else { return };
    let (evs, _) = parse_file(&p, Format::Auto).unwrap();
    let mut rules = HostRules::new(HostRulesConfig::default());
    let alerts = rules.check_all(&evs);
    let smb: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::SuspiciousSmbClient)
        .collect();
    assert_eq!(smb.len(), 1, "{smb:#?}");
    let a = smb[0];
    let p = a.process.as_ref().unwrap();
    assert_eq!(p.name.as_deref(), Some("powershell.exe"));
    assert_eq!(a.destination_ip, Some("172.18.39.6".parse().unwrap()));
    assert_eq!(a.destination_port, Some(445));
    assert_eq!(a.source_ip, Some("172.18.39.5".parse().unwrap()));
    assert_eq!(
        rules.stats().duplicate_connections,
        1,
        "5156 and Sysmon 3 are one connection"
    );
    // System's records of the same connection are never reported.
    let system: Vec<_> = evs
        .iter()
        .filter(|e| {
            e.process()
                .is_some_and(|p| p.image.as_deref() == Some("System"))
        })
        .collect();
    assert!(!system.is_empty());
    assert!(system
        .iter()
        .all(|e| suspicious_smb_client(e, &HostRulesConfig::default()).is_none()));
    assert!(alerts
        .iter()
        .all(|a| a.process.as_ref().and_then(|p| p.name.as_deref()) != Some("System")));
    // Target side: IPC$ by pgustavo from the attacker.
    assert!(alerts.iter().any(|a| a.kind == AlertKind::AdminShareAccess
        && a.share.as_deref() == Some("IPC$")
        && a.source_ip == Some("172.18.39.5".parse().unwrap())));
}

#[test]
fn real_covenant_log_c_share() {
    let Some(p) = data_file(COVENANT) else { return };
    let (evs, _) = parse_file(&p, Format::Auto).unwrap();
    let alerts = HostRules::new(HostRulesConfig::default()).check_all(&evs);
    let c: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::AdminShareAccess && a.share.as_deref() == Some("C$"))
        .collect();
    assert_eq!(c.len(), 1, "5140 and 5145 on C$ in one session: one alert");
    assert_eq!(c[0].severity, Severity::High);
    assert_eq!(c[0].user.as_deref(), Some("THESHIRE\\pgustavo"));
    // The SID of the logged account, from the real EVTX.
    assert!(
        c[0].user_id
            .as_deref()
            .is_some_and(|s| s.starts_with("S-1-5-21-")),
        "{:?}",
        c[0].user_id
    );
    assert_eq!(c[0].source_ip, Some("172.18.39.5".parse().unwrap()));
    // Its SMB connections are all System's.
    assert!(!alerts
        .iter()
        .any(|a| a.kind == AlertKind::SuspiciousSmbClient));
}

#[test]
fn real_psexec_evtx_admin_share() {
    let Some(p) = data_file(PSEXEC) else { return };
    let (evs, _) = parse_file(&p, Format::Auto).unwrap();
    let alerts = HostRules::new(HostRulesConfig::default()).check_all(&evs);
    let admin: Vec<_> = alerts
        .iter()
        .filter(|a| a.share.as_deref() == Some("ADMIN$"))
        .collect();
    assert_eq!(admin.len(), 1);
    assert_eq!(admin[0].source_ip, Some("10.23.42.22".parse().unwrap()));
    assert_eq!(admin[0].user.as_deref(), Some("OFFSEC\\admmig"));
    assert_eq!(admin[0].host.as_deref(), Some("srvdefender01.offsec.lan"));
}

#[test]
fn parse_line_then_rule() {
    let line = r#"{"EventID":3,"Channel":"Microsoft-Windows-Sysmon/Operational","UtcTime":"2020-09-20 06:57:48.481","Image":"C:\\Python39\\python.exe","Initiated":"True","SourceIp":"10.1.1.1","SourcePort":"5000","DestinationIp":"10.1.1.2","DestinationPort":"445"}"#;
    let ev = parse_line(line).unwrap().unwrap();
    assert!(suspicious_smb_client(&ev, &HostRulesConfig::default()).is_some());
}

/// One record dated 2100 used to become "now": every dedup entry was
/// pruned on arrival and Sysmon 3 + 5156 of one connection alerted twice.
#[test]
fn a_record_from_the_future_does_not_break_dedup() {
    let wfp = conn(
        ConnectionLog::Wfp,
        Some(8948),
        "powershell.exe",
        "172.18.39.6",
    );
    let mut sysmon = conn(
        ConnectionLog::Sysmon,
        None,
        "C:\\x\\powershell.exe",
        "172.18.39.6",
    );
    sysmon.ts = wfp.ts + chrono::Duration::milliseconds(2481);
    let mut future = conn(ConnectionLog::Wfp, Some(1), "evil.exe", "172.18.39.7");
    future.ts = ts("2100-01-01T00:00:00Z");

    // With a reference clock: rejected, counted, explained.
    let mut rules = HostRules::new(HostRulesConfig::default());
    rules.advance(wfp.ts);
    assert!(rules.check(&wfp).is_some());
    assert!(rules.check(&future).is_none());
    let (why, n) = rules.take_rejected().unwrap();
    assert_eq!((n, rules.stats().rejected_ahead), (1, 1));
    assert!(why.to_string().contains("hostlog.max_ahead"), "{why}");
    assert!(rules.check(&sysmon).is_none(), "still one alert");

    // Before any reference: judged, but it moves no clock.
    let mut rules = HostRules::new(HostRulesConfig::default());
    assert!(rules.check(&wfp).is_some());
    assert!(rules.check(&future).is_some());
    assert!(rules.check(&sysmon).is_none(), "still one alert");
    assert_eq!(rules.stats().duplicate_connections, 1);
}

#[test]
fn dedup_state_is_bounded_in_bytes() {
    const BUDGET: usize = 1 << 20;
    let cfg = HostRulesConfig {
        max_dedup_bytes: BUDGET,
        ..HostRulesConfig::default()
    };
    let mut rules = HostRules::new(cfg);
    let pad = "x".repeat(60_000);
    for port in 0..100u16 {
        let mut ev = conn(
            ConnectionLog::Wfp,
            Some(9),
            &format!("C:\\{pad}.exe"),
            "10.0.0.2",
        );
        ev.host = Some(pad.clone());
        net(&mut ev).src_port = Some(port);
        assert!(rules.check(&ev).is_some());
        assert!(rules.stats().bytes as usize <= BUDGET, "after {port}");
    }
    // About 120 KB each: eight fit.
    assert!(
        rules.conns.len() >= 6 && rules.conns.len() <= 9,
        "{}",
        rules.conns.len()
    );
    assert_eq!(rules.stats().evicted, 100 - rules.conns.len() as u64);
    // The newest is remembered: its second record is a duplicate.
    let mut again = conn(
        ConnectionLog::Sysmon,
        None,
        &format!("C:\\{pad}.exe"),
        "10.0.0.2",
    );
    again.host = Some(pad.clone());
    net(&mut again).src_port = Some(99);
    assert!(rules.check(&again).is_none());
}
