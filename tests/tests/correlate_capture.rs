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
        .filter(|a| a.kind == AlertKind::RemoteFileDrop)
        .collect();
    // Two 5145 writes and the kernel's Sysmon 11 of one copy: one alert.
    assert_eq!(drops.len(), 1, "{alerts:#?}");
    let a = drops[0];
    assert!(
        a.message.contains(r"\\*\C$\ProgramData\GruntHTTP.exe"),
        "{}",
        a.message
    );
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
