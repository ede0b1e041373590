//! Correlation on real data: the OTRF Empire smbexec and Covenant copy
//! captures replayed through the real XDP program, joined with the same
//! intrusions' Windows logs, and the PsExec EVTX through the binary. The
//! logs' clocks differ from the captures'; the skew setting absorbs it (the
//! data is not edited).

use std::path::{Path, PathBuf};

use integration_tests::{daemon::smbwatch_bin, require_root};
use serde_json::Value;
use smbwatch::{
    alert::{Alert, AlertKind},
    config::Config,
    event::{GatewayEvent, GatewayEventKind},
    hostlog::{self, Format},
    pipeline::{Pipeline, ReplayFeed},
    replay::{replay, ReplayOptions},
};

fn data() -> Option<PathBuf> {
    let d = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data"));
    if d.is_dir() {
        Some(d.to_owned())
    } else {
        integration_tests::skip(&format!(
            "{} absent (public captures and logs; see its README)",
            d.display()
        ));
        None
    }
}

/// Replays the capture with the log; returns alerts, events and the pipeline.
fn run(cfg: &Config, pcap: &Path, log: &Path) -> (Vec<Alert>, Vec<GatewayEvent>, Pipeline) {
    let (host, summary) = hostlog::parse_file(log, Format::Auto).expect("parse log");
    assert_eq!(summary.bad, 0);
    let mut alerts = Vec::new();
    let mut on_alert = |a: &Alert| alerts.push(a.clone());
    let mut events = Vec::new();
    let mut keep = |ev: &GatewayEvent| events.push(ev.clone());
    let mut feed =
        ReplayFeed::new(Pipeline::new(cfg.pipeline()), host, &mut on_alert).with_events(&mut keep);
    replay(pcap, &ReplayOptions::default(), &mut feed).expect("replay");
    let pipeline = feed.finish();
    (alerts, events, pipeline)
}

#[test]
fn empire_pair_is_attributed_to_powershell() {
    require_root();
    let Some(d) = data() else { return };
    let pcap =
        d.join("pcap/otrf_empire_smbexec_dcerpc_smb_svcctl_WORKSTATION5_2020-09-20025716.cap");
    let log = d.join("logs/otrf_empire_smbexec_dcerpc_smb_svcctl_2020-09-20025716_smbsubset.jsonl");
    let cfg = Config::default();
    let (alerts, events, pipeline) = run(&cfg, &pcap, &log);

    let pairs: Vec<_> = events
        .iter()
        .filter(|e| e.kind == GatewayEventKind::NewPair)
        .collect();
    assert_eq!(pairs.len(), 1, "one SMB pair in the capture");
    let p = pairs[0];
    assert_eq!(
        (
            p.src.to_string().as_str(),
            p.dst.to_string().as_str(),
            p.dport
        ),
        ("172.18.39.5", "172.18.39.6", 445)
    );

    let a = pipeline
        .correlator()
        .attribution(p.src, p.dst, p.sport, p.dport)
        .expect("the gateway pair is attributed to a host process");
    assert_eq!(a.process.name.as_deref(), Some("powershell.exe"));
    // The clocks really differ, within the default 5 s skew.
    let skew = (a.host_ts - a.pair_ts).num_milliseconds().abs();
    assert!(
        skew > 0 && skew <= 5_000,
        "host/capture clock difference {skew} ms"
    );

    let client: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::SuspiciousSmbClient)
        .collect();
    assert_eq!(client.len(), 1, "{alerts:#?}");
    assert_eq!(
        client[0].process.as_ref().unwrap().name.as_deref(),
        Some("powershell.exe")
    );

    // With a skew tighter than the clock difference, nothing is attributed:
    // the match really rests on the skew setting.
    let mut tight = Config::default();
    tight.correlate.clock_skew = std::time::Duration::from_millis(skew as u64 / 2);
    let (_, _, p2) = run(&tight, &pcap, &log);
    assert!(p2
        .correlator()
        .attribution(p.src, p.dst, p.sport, p.dport)
        .is_none());
}

#[test]
fn covenant_copy_to_c_share_is_a_remote_file_drop() {
    require_root();
    let Some(d) = data() else { return };
    let pcap = d.join("pcap/otrf_covenant_copy_smb_CreateRequest_2020-09-22145302.cap");
    let log = d.join("logs/otrf_covenant_copy_smb_CreateRequest_2020-09-22145302.json");
    let (alerts, _, pipeline) = run(&Config::default(), &pcap, &log);
    let drops: Vec<_> = alerts
        .iter()
        .filter(|a| matches!(a.kind, AlertKind::RemoteFileDrop | AlertKind::SmbFileDrop))
        .collect();
    // Two 5145 writes and the kernel's Sysmon 11 of one copy, and the
    // wire's CREATE: one alert. The host's 5145 is dated before the
    // packets; it waited for the wire's alert, which carries both.
    assert_eq!(drops.len(), 1, "{alerts:#?}");
    let a = drops[0];
    assert_eq!(a.kind, AlertKind::SmbFileDrop, "{a:#?}");
    assert!(
        a.message
            .contains(r"\\WORKSTATION6\C$\ProgramData\GruntHTTP.exe"),
        "{}",
        a.message
    );
    assert!(
        a.message.ends_with("logged it too [event 5145]"),
        "{}",
        a.message
    );
    assert_eq!(a.event_code, Some(5145));
    assert_eq!(a.source_ip, Some("172.18.39.5".parse().unwrap()));
    assert_eq!(a.host.as_deref(), Some("WORKSTATION6.theshire.local"));
    // Two SMB connections are no scan, so no chain.
    assert!(alerts.iter().all(|a| !matches!(
        a.kind,
        AlertKind::SmbScanFanout | AlertKind::SmbScanTrw | AlertKind::LateralMovementChain
    )));
    assert_eq!(pipeline.correlator().stats().file_drops, 1);
}

/// `smbwatch hostlog scan` on the PsExec EVTX: the binary's real EVTX path
/// raises `remote_file_drop` for PSEXESVC.exe written through ADMIN$.
#[test]
fn psexec_evtx_through_the_binary_raises_remote_file_drop() {
    let Some(d) = data() else { return };
    let log =
        d.join("logs/evtx2mitre_ID4688-4697-5140-5145_PSexec_remote_execution_admin_share.evtx");
    let out = std::process::Command::new(smbwatch_bin())
        .args(["hostlog", "scan"])
        .arg(&log)
        .output()
        .expect("run smbwatch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an ECS JSON line"))
        .collect();
    let drops: Vec<&Value> = lines
        .iter()
        .filter(|v| v["rule"]["id"] == "remote_file_drop")
        .collect();
    // PSEXESVC.exe and cmd.exe, each written through ADMIN$ (two 5145s each).
    assert_eq!(drops.len(), 2, "{lines:#?}");
    let v = drops[0];
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains(r"\\*\ADMIN$\PSEXESVC.exe"), "{msg}");
    assert_eq!(v["source"]["ip"], "10.23.42.22");
    assert_eq!(v["user"]["name"], "admmig");
    assert_eq!(v["user"]["domain"], "OFFSEC");
    assert_eq!(v["event"]["code"], "5145");
    assert_eq!(v["event"]["severity"], 99, "an executable: critical");
    assert_eq!(v["threat"]["technique"]["id"][1], "T1570");
}

/// The same PsExec EVTX: its 4697 (PSEXESVC installed) names the logon
/// session of the 5140/5145 records, so the host log alone raises one
/// `smb_remote_service` naming the client and the service.
#[test]
fn psexec_evtx_service_install_is_one_remote_service() {
    let Some(d) = data() else { return };
    let log =
        d.join("logs/evtx2mitre_ID4688-4697-5140-5145_PSexec_remote_execution_admin_share.evtx");
    let out = std::process::Command::new(smbwatch_bin())
        .args(["hostlog", "scan"])
        .arg(&log)
        .output()
        .expect("run smbwatch");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an ECS JSON line"))
        .collect();
    let svc: Vec<&Value> = lines
        .iter()
        .filter(|v| v["rule"]["id"] == "smb_remote_service")
        .collect();
    assert_eq!(svc.len(), 1, "{lines:#?}");
    let v = svc[0];
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("installed service PSEXESVC"), "{msg}");
    assert_eq!(v["source"]["ip"], "10.23.42.22");
    assert_eq!(v["user"]["name"], "admmig");
    assert_eq!(v["event"]["code"], "4697");
    assert_eq!(v["host"]["name"], "srvdefender01.offsec.lan");
}

/// Empire's smbexec seen twice: on the wire (svcctl RCreateServiceW from
/// 172.18.39.5) and in WORKSTATION6's logs (4697 and 7045 of the same
/// service, by the session of the IPC$ 5140/5145 from 172.18.39.5). One
/// `smb_remote_service` carries both evidences; without the log the wire
/// alone raises it.
#[test]
fn empire_service_install_on_the_wire_and_in_the_log_is_one_alert() {
    require_root();
    let Some(d) = data() else { return };
    let pcap =
        d.join("pcap/otrf_empire_smbexec_dcerpc_smb_svcctl_WORKSTATION5_2020-09-20025716.cap");
    let log = d.join("logs/otrf_empire_smbexec_dcerpc_smb_svcctl_2020-09-20025716_smbsubset.jsonl");
    let (alerts, _, pipeline) = run(&Config::default(), &pcap, &log);
    let svc: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::SmbRemoteService)
        .collect();
    assert_eq!(svc.len(), 1, "{alerts:#?}");
    let a = svc[0];
    let smb = a.smb.as_ref().expect("wire evidence");
    assert!(
        smb.operations.iter().any(|o| o == "RCreateServiceW"),
        "{smb:?}"
    );
    // The 7045 of the same install arrived while the 4697's alert waited
    // for the wire's (the host's clock is ahead): both ride on it.
    assert_eq!(smb.host_events, vec![4697, 7045], "{a:#?}");
    assert_eq!(a.event_code, Some(4697));
    assert_eq!(a.source_ip, Some("172.18.39.5".parse().unwrap()));
    assert_eq!(a.destination_ip, Some("172.18.39.6".parse().unwrap()));
    assert_eq!(a.host.as_deref(), Some("WORKSTATION6.theshire.local"));
    assert!(a.message.contains("PGUJLOAKFQFVOMHGFQPX"), "{}", a.message);
    let stats = pipeline.correlator().stats();
    // The 4697's alert joined the wire's; the 7045 is the same act.
    assert!(stats.joined >= 1 && stats.joined_late >= 1, "{stats:?}");
    assert_eq!(stats.remote_exec, 0, "{stats:?}");
    // The IPC$ tree connect for the svcctl pipe is one act too: the wire's
    // smb_admin_share carrying the 5140/5145, no separate host alert.
    let ipc: Vec<_> = alerts
        .iter()
        .filter(|a| {
            matches!(
                a.kind,
                AlertKind::SmbAdminShare | AlertKind::AdminShareAccess
            ) && a
                .share
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("IPC$"))
        })
        .collect();
    assert_eq!(ipc.len(), 1, "{ipc:#?}");
    assert_eq!(ipc[0].kind, AlertKind::SmbAdminShare, "{:#?}", ipc[0]);
    assert!(
        ipc[0]
            .smb
            .as_ref()
            .is_some_and(|s| !s.host_events.is_empty()),
        "{:#?}",
        ipc[0]
    );

    // The wire alone: the same act, raised once, without host fields.
    let empty = std::env::temp_dir().join(format!("smbwatch-empty-{}.jsonl", std::process::id()));
    std::fs::write(&empty, "").unwrap();
    let (wire_only, _, _) = run(&Config::default(), &pcap, &empty);
    let _ = std::fs::remove_file(&empty);
    let svc: Vec<_> = wire_only
        .iter()
        .filter(|a| a.kind == AlertKind::SmbRemoteService)
        .collect();
    assert_eq!(svc.len(), 1, "{wire_only:#?}");
    assert_eq!(svc[0].event_code, None);
}
