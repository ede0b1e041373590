//! The SMB monitor's tests on the shared captures (and the Covenant
//! capture with its Windows logs), through `Pipeline::smb_sample`; time
//! comes from the samples. Hand-built sessions: `session_tests`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

use super::session_tests::pipeline;
use super::*;
use crate::alert::{AlertKind, Severity};
use crate::pipeline::{Pipeline, PipelineConfig};

const PCAP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/pcap");
const ETERNALBLUE: &str = "eternalblue-success-unpatched-win7.pcap";
const COVENANT: &str = "otrf_covenant_copy_smb_CreateRequest_2020-09-22145302.cap";
const SMBEXEC: &str = "otrf_empire_smbexec_dcerpc_smb_svcctl_WORKSTATION5_2020-09-20025716.cap";
const PETER: &str = "suricata-verify_smb2-peter.pcap";

fn skip(what: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{what} (CI=true: a missing test input fails the run instead of skipping)");
    }
    eprintln!("SKIP: {what}");
}

fn utc(t: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(t)
}

/// The sample of one captured port-445 segment; `None` for other ports
/// and bare ACKs.
fn sample(t: &smbwatch_smb::capture::TcpSegment) -> Option<SmbSample<'_>> {
    let (client, server, direction) = if t.dport == 445 {
        ((t.src, t.sport), (t.dst, t.dport), Direction::ToServer)
    } else if t.sport == 445 {
        ((t.dst, t.dport), (t.src, t.sport), Direction::ToClient)
    } else {
        return None;
    };
    if t.payload.is_empty() && !t.ends() {
        return None;
    }
    Some(SmbSample {
        ts: utc(t.at),
        client: SocketAddr::from(client),
        server: SocketAddr::from(server),
        direction,
        seq: t.seq,
        wire_len: t.payload.len() as u32,
        data: &t.payload,
        src_mac: Some(MacAddr(t.src_mac)),
        vlan: t.vlan,
        fin_or_rst: t.ends(),
    })
}

/// Everything one capture's port-445 segments give through the pipeline,
/// the idle connections expired after the capture's end.
fn replay(name: &str, settings: SmbSettings) -> Option<(SmbOutputs, Pipeline)> {
    let path = PathBuf::from(PCAP_DIR).join(name);
    if !path.exists() {
        skip(&format!("{} not found", path.display()));
        return None;
    }
    let mut p = pipeline(settings);
    let mut all = SmbOutputs::default();
    let mut last = SystemTime::UNIX_EPOCH;
    for t in smbwatch_smb::capture::read(&path).expect("read capture") {
        last = t.at;
        let Some(smp) = sample(&t) else { continue };
        let out = p.smb_sample(&smp);
        all.events.extend(out.events);
        all.alerts.extend(out.alerts);
    }
    let end = utc(last + Duration::from_secs(3600));
    let out = p.smb_expire(end);
    all.events.extend(out.events);
    all.alerts.extend(out.alerts);
    Some((all, p))
}

pub(super) fn kinds(out: &SmbOutputs) -> Vec<AlertKind> {
    out.alerts.iter().map(|a| a.kind).collect()
}

/// The kinds raised, sorted by rule id.
pub(super) fn sorted_kinds(out: &SmbOutputs) -> Vec<AlertKind> {
    let mut k = kinds(out);
    k.sort_by_key(|k| k.code());
    k
}

/// Empire's smbexec: IPC$, the svcctl pipe, CreateServiceW and
/// StartServiceW; one `smb_remote_service` for the act, with the NTLMSSP
/// user, and an `smb_admin_share` for the pipe.
#[test]
fn smbexec_capture_raises_remote_service_once() {
    let Some((out, p)) = replay(SMBEXEC, SmbSettings::default()) else {
        return;
    };
    let svc: Vec<_> = out
        .alerts
        .iter()
        .filter(|a| a.kind == AlertKind::SmbRemoteService)
        .collect();
    assert_eq!(svc.len(), 1, "{:#?}", out.alerts);
    let a = svc[0];
    assert_eq!(a.severity, Severity::Critical);
    assert_eq!(a.user.as_deref(), Some("theshire\\pgustavo"), "{a:#?}");
    let smb = a.smb.as_ref().unwrap();
    assert_eq!(smb.interface.as_deref(), Some("svcctl"));
    assert_eq!(smb.pipe.as_deref(), Some("svcctl"));
    assert_eq!(smb.operations, ["RCreateServiceW"]);
    assert_eq!(a.share.as_deref(), Some("IPC$"));
    assert_eq!(a.destination_port, Some(445));
    assert!(a.techniques.contains(&"T1569.002"));
    assert!(kinds(&out).contains(&AlertKind::SmbAdminShare));
    // The later StartServiceW is the same act: counted, not raised.
    let c = p.smb().counters();
    assert!(c.duplicates >= 1, "{c:?}");
    assert!(!kinds(&out).contains(&AlertKind::SmbFileDrop));
    // One event per observation, each with its connection.
    assert_eq!(out.events.len() as u64, c.observations.iter().sum::<u64>());
    let call = out
        .events
        .iter()
        .find(|e| e.action() == "rpc_call")
        .expect("an rpc_call line");
    assert_eq!(call.server.port(), 445);
    assert_eq!(call.pipe.as_deref(), Some("svcctl"));
    assert_eq!(
        call.account.as_ref().map(|a| a.user.as_str()),
        Some("pgustavo")
    );
    assert_eq!(c.flows, 0, "every connection finished: {c:?}");
}

/// Covenant's copy: `C$` and `ProgramData\GruntHTTP.exe` written through
/// it: `smb_admin_share` and one `smb_file_drop` (CREATE and WRITE are one
/// act). The logon is Kerberos: no NTLMSSP user.
#[test]
fn covenant_capture_raises_admin_share_and_file_drop() {
    let Some((out, _)) = replay(COVENANT, SmbSettings::default()) else {
        return;
    };
    let drops: Vec<_> = out
        .alerts
        .iter()
        .filter(|a| a.kind == AlertKind::SmbFileDrop)
        .collect();
    assert_eq!(drops.len(), 1, "{:#?}", out.alerts);
    let smb = drops[0].smb.as_ref().unwrap();
    assert_eq!(smb.file.as_deref(), Some("ProgramData\\GruntHTTP.exe"));
    assert_eq!(drops[0].share.as_deref(), Some("C$"));
    assert!(drops[0].techniques.contains(&"T1570"));
    let shares: Vec<_> = out
        .alerts
        .iter()
        .filter(|a| a.kind == AlertKind::SmbAdminShare)
        .collect();
    assert_eq!(shares.len(), 1, "{:#?}", out.alerts);
    assert_eq!(shares[0].share.as_deref(), Some("C$"));
}

/// EternalBlue: an SMB1 client connecting IPC$ over SMB1: `smb_v1`, once.
#[test]
fn eternalblue_capture_raises_smb_v1() {
    let Some((out, _)) = replay(ETERNALBLUE, SmbSettings::default()) else {
        return;
    };
    let v1: Vec<_> = out
        .alerts
        .iter()
        .filter(|a| a.kind == AlertKind::SmbV1)
        .collect();
    assert!(!v1.is_empty(), "{:#?}", out.alerts);
    // One per (client, server) within the dedup window.
    let mut pairs: Vec<_> = v1.iter().map(|a| (a.source_ip, a.destination_ip)).collect();
    pairs.dedup();
    assert_eq!(pairs.len(), v1.len(), "{v1:#?}");
    assert_eq!(v1[0].severity, Severity::Low);
    assert!(!v1[0].smb.as_ref().unwrap().dialects.is_empty());
}

/// EternalBlue's whole wire: the exploit and the implant's pings are one
/// act, the implant's answer (the server compromised) another; both
/// critical, with the sign that raised them.
#[test]
fn eternalblue_capture_raises_the_exploit_and_the_implant() {
    let Some((out, _)) = replay(ETERNALBLUE, SmbSettings::default()) else {
        return;
    };
    let signs: Vec<_> = out
        .alerts
        .iter()
        .filter(|a| a.kind == AlertKind::SmbExploit)
        .map(|a| {
            assert_eq!(a.severity, Severity::Critical);
            assert!(a.techniques.contains(&"T1210"));
            a.smb.as_ref().unwrap().exploit.unwrap()
        })
        .collect();
    assert_eq!(
        signs,
        ["doublepulsar_command", "doublepulsar_answer"],
        "{:#?}",
        out.alerts
    );
}

/// Suricata's smb2-peter: plain file traffic on a normal share: no alert.
#[test]
fn plain_share_traffic_raises_nothing() {
    let Some((out, _)) = replay(PETER, SmbSettings::default()) else {
        return;
    };
    assert!(!out.events.is_empty());
    assert!(out.alerts.is_empty(), "{:#?}", out.alerts);
}

/// Covenant's copy on the wire and in its Windows logs (5140/5145 on C$,
/// Sysmon 11 of GruntHTTP.exe), merged by time through one pipeline, the
/// logs as written and as a forwarder delivers them (5 s late): the share
/// access is one alert and the drop one alert either way; when the wire
/// saw the act first, that alert carries the host's evidence too (event
/// code, host name, SID).
#[test]
fn covenant_wire_and_host_logs_are_one_alert_per_act() {
    use crate::hostlog::{parse_file, tests::data_file, Format};
    let path = PathBuf::from(PCAP_DIR).join(COVENANT);
    let Some(log) = data_file(crate::hostlog::tests::COVENANT) else {
        return;
    };
    if !path.exists() {
        skip(&format!("{} not found", path.display()));
        return;
    }
    let segments = smbwatch_smb::capture::read(&path).unwrap();
    for delay in [0, 5] {
        let (mut host, _) = parse_file(&log, Format::Auto).unwrap();
        host.sort_by_key(|e| e.ts);
        let mut host = host
            .into_iter()
            .map(|e| (e.ts + chrono::TimeDelta::seconds(delay), e))
            .peekable();
        let mut p = Pipeline::new(PipelineConfig {
            smb: SmbSettings {
                host_wait: Duration::from_secs(30),
                ..SmbSettings::default()
            },
            ..PipelineConfig::default()
        });
        let mut alerts = Vec::new();
        let mut last = SystemTime::UNIX_EPOCH;
        for t in &segments {
            let ts = utc(t.at);
            last = t.at;
            while let Some((_, ev)) = host.next_if(|(at, _)| *at <= ts) {
                alerts.extend(p.host_event(&ev));
            }
            let Some(smp) = sample(t) else { continue };
            let out = p.smb_sample(&smp);
            alerts.extend(out.alerts);
        }
        for (at, ev) in host {
            alerts.extend(p.advance(at));
            alerts.extend(p.host_event(&ev));
        }
        let end = utc(last + Duration::from_secs(3600));
        alerts.extend(p.advance(end));
        alerts.extend(p.smb_expire(end).alerts);
        let share: Vec<_> = alerts
            .iter()
            .filter(|a| {
                matches!(
                    a.kind,
                    AlertKind::SmbAdminShare | AlertKind::AdminShareAccess
                ) && a.share.as_deref() == Some("C$")
            })
            .collect();
        assert_eq!(share.len(), 1, "delay {delay}: {alerts:#?}");
        let drops: Vec<_> = alerts
            .iter()
            .filter(|a| matches!(a.kind, AlertKind::SmbFileDrop | AlertKind::RemoteFileDrop))
            .collect();
        assert_eq!(drops.len(), 1, "delay {delay}: {alerts:#?}");
        let stats = p.correlator().stats();
        // Delay 0: the logs are dated before the packets, so the host
        // alerts come first and wait for the wire's; 5 s: the wire's
        // wait for the host's. Either way the wire's alert carries both.
        for a in share.iter().chain(&drops) {
            assert!(
                matches!(a.kind, AlertKind::SmbAdminShare | AlertKind::SmbFileDrop),
                "{a:#?}"
            );
            let smb = a.smb.as_ref().expect("wire evidence");
            assert!(!smb.host_events.is_empty(), "{a:#?}");
            assert!(a.event_code.is_some() && a.host.is_some(), "{a:#?}");
            assert!(a
                .user_id
                .as_deref()
                .is_some_and(|s| s.starts_with("S-1-5-21-")));
        }
        assert!(stats.joined >= 2, "{stats:?}");
    }
}
