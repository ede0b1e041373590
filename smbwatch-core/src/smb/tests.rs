//! The SMB monitor's tests: the shared captures and hand-built sessions
//! (`smbwatch_smb::build`), through `Pipeline::smb_sample`; time comes
//! from the samples.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use smbwatch_smb::build;

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

fn kinds(out: &SmbOutputs) -> Vec<AlertKind> {
    out.alerts.iter().map(|a| a.kind).collect()
}

/// The kinds raised, sorted by rule id.
fn sorted_kinds(out: &SmbOutputs) -> Vec<AlertKind> {
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

/// Suricata's smb2-peter: plain file traffic on a normal share: no alert.
#[test]
fn plain_share_traffic_raises_nothing() {
    let Some((out, _)) = replay(PETER, SmbSettings::default()) else {
        return;
    };
    assert!(!out.events.is_empty());
    assert!(out.alerts.is_empty(), "{:#?}", out.alerts);
}

// --- hand-built sessions ---

const CLIENT: &str = "192.0.2.5:49152";
const SERVER: &str = "198.51.100.10:445";

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

/// Feeds whole framed messages of one connection, keeping sequence
/// numbers.
struct Conn {
    client: SocketAddr,
    server: SocketAddr,
    seq: [u32; 2],
    ts: DateTime<Utc>,
}

impl Conn {
    fn new(client: &str, server: &str) -> Self {
        Self {
            client: client.parse().unwrap(),
            server: server.parse().unwrap(),
            seq: [1000, 900_000],
            ts: t0(),
        }
    }

    fn send(&mut self, p: &mut Pipeline, dir: Direction, bytes: &[u8], out: &mut SmbOutputs) {
        let i = usize::from(dir == Direction::ToClient);
        let o = p.smb_sample(&SmbSample {
            ts: self.ts,
            client: self.client,
            server: self.server,
            direction: dir,
            seq: self.seq[i],
            wire_len: bytes.len() as u32,
            data: bytes,
            src_mac: None,
            vlan: None,
            fin_or_rst: false,
        });
        self.seq[i] = self.seq[i].wrapping_add(bytes.len() as u32);
        self.ts += chrono::TimeDelta::milliseconds(10);
        out.events.extend(o.events);
        out.alerts.extend(o.alerts);
    }
}

/// A pipeline without host inputs: SMB alerts go out at once.
impl Conn {
    /// The whole hand-built PsExec session.
    fn psexec(&mut self, p: &mut Pipeline, out: &mut SmbOutputs) {
        for (d, m) in build::psexec() {
            self.send(p, d, &m, out);
        }
    }

    /// Negotiate, logon, `IPC$` and a pipe (psexec's messages), then a
    /// BIND of `uuid` on it.
    fn bind(&mut self, p: &mut Pipeline, uuid: &str, out: &mut SmbOutputs) {
        let msgs = build::psexec();
        for (d, m) in msgs[..4].iter().chain(&msgs[10..14]) {
            self.send(p, *d, m, out);
        }
        let bind = build::write(8, 1, build::FID, 0, &build::rpc_bind(0, uuid));
        self.send(p, Direction::ToServer, &build::nb(&bind), out);
    }

    /// An RPC request `opnum` on the bound pipe, as message `id`.
    fn call(&mut self, p: &mut Pipeline, id: u64, opnum: u16, out: &mut SmbOutputs) {
        let req = build::write(id, 1, build::FID, 0, &build::rpc_request(0, opnum, 3, 8));
        self.send(p, Direction::ToServer, &build::nb(&req), out);
    }
}

fn pipeline(settings: SmbSettings) -> Pipeline {
    Pipeline::new(PipelineConfig {
        smb: settings,
        ..PipelineConfig::default()
    })
    .without_host_inputs()
}

/// The hand-built PsExec flow: ADMIN$, PSEXESVC.exe written, svcctl
/// CreateService/StartService: admin share (ADMIN$ and the pipe), the
/// drop, the service; sent twice (a retransmitting or repeating client on
/// a second connection) it raises nothing more.
#[test]
fn psexec_raises_each_act_once() {
    let mut p = pipeline(SmbSettings::default());
    let mut out = SmbOutputs::default();
    for port in ["192.0.2.5:49152", "192.0.2.5:49153"] {
        Conn::new(port, SERVER).psexec(&mut p, &mut out);
    }
    assert_eq!(
        sorted_kinds(&out),
        [
            AlertKind::SmbAdminShare,
            AlertKind::SmbAdminShare,
            AlertKind::SmbFileDrop,
            AlertKind::SmbRemoteService
        ],
        "{:#?}",
        out.alerts
    );
    for a in &out.alerts {
        assert_eq!(a.user.as_deref(), Some("CORP\\admin"), "{a:#?}");
        let smb = a.smb.as_ref().unwrap();
        assert_eq!(smb.workstation.as_deref(), Some("ATTACKER"));
        assert_eq!(smb.domain.as_deref(), Some("CORP"));
        assert_eq!(a.source_ip, Some("192.0.2.5".parse::<IpAddr>().unwrap()));
    }
    assert!(p.smb().counters().duplicates >= 4);
}

/// A copy of an executable to a normal share (not administrative) and a
/// document to ADMIN$: no drop alert (only the ADMIN$ connect).
#[test]
fn plain_copies_raise_no_drop() {
    let mut p = pipeline(SmbSettings::default());
    let mut out = SmbOutputs::default();
    let mut c = Conn::new(CLIENT, SERVER);
    let msgs = build::psexec();
    for (d, m) in &msgs[..4] {
        c.send(&mut p, *d, m, &mut out);
    }
    let nb = build::nb;
    c.send(
        &mut p,
        Direction::ToServer,
        &nb(&build::tree_connect(2, "\\\\198.51.100.10\\public")),
        &mut out,
    );
    c.send(
        &mut p,
        Direction::ToClient,
        &nb(&build::tree_connect_resp(2, 5, 0, 1)),
        &mut out,
    );
    c.send(
        &mut p,
        Direction::ToServer,
        &nb(&build::create(3, 5, "tools\\setup.exe", 0x0012_0196, 5)),
        &mut out,
    );
    c.send(
        &mut p,
        Direction::ToClient,
        &nb(&build::create_resp(3, 5, 0, build::FID2)),
        &mut out,
    );
    c.send(
        &mut p,
        Direction::ToServer,
        &nb(&build::write(4, 5, build::FID2, 0, b"MZ\x90\x00")),
        &mut out,
    );
    assert!(out.alerts.is_empty(), "{:#?}", out.alerts);
    assert!(out
        .events
        .iter()
        .any(|e| e.action() == "smb_write"
            && e.share.as_deref() == Some("\\\\198.51.100.10\\public")));
}

/// A connection table at its byte bound evicts its oldest connections,
/// finishing them (their pending requests come out as events), and counts
/// them; it never holds more than the bound.
#[test]
fn the_flow_table_stays_within_its_bytes() {
    let settings = SmbSettings {
        max_bytes: SmbSettings::MIN_BYTES,
        ..SmbSettings::default()
    };
    let mut p = pipeline(settings);
    let mut out = SmbOutputs::default();
    let msgs = build::psexec();
    for i in 0..400u16 {
        // Distinct servers: distinct acts.
        let server = format!("[2001:db8::{:x}]:445", i + 1);
        let mut c = Conn::new(&format!("192.0.2.7:{}", 10_000 + i), &server);
        // A tree connect left unanswered: state the session must keep.
        for (d, m) in &msgs[..5] {
            c.send(&mut p, *d, m, &mut out);
        }
        let c = p.smb().counters();
        assert!(c.bytes <= SmbSettings::MIN_BYTES as u64, "{c:?}");
    }
    let c = p.smb().counters();
    assert!(c.evicted > 0, "{c:?}");
    assert_eq!(c.flows_opened, 400);
    assert_eq!(c.flows + c.evicted, 400, "{c:?}");
    // Evicted connections said what they had pending.
    let unanswered = out
        .events
        .iter()
        .filter(|e| matches!(e.observation, Observation::TreeConnect { status: None, .. }))
        .count() as u64;
    assert_eq!(unanswered, c.evicted);
    // Each evicted connection's ADMIN$ connect (answer unseen) is an act;
    // one source gets at most its cap.
    let cap = u64::from(SmbSettings::default().max_alerts_per_source);
    assert_eq!(out.alerts.len() as u64, c.evicted.min(cap));
    assert_eq!(c.over_source_cap, c.evicted.saturating_sub(cap));
}

/// Hostile peers: 1,000 compound requests in one message, a truncated
/// NTLMSSP token, lengths past the sample: no panic, bounded output.
#[test]
fn hostile_peers_stay_bounded() {
    let mut p = pipeline(SmbSettings::default());
    let mut out = SmbOutputs::default();
    let mut c = Conn::new(CLIENT, SERVER);
    // 1,000 compound CREATEs of an executable in one message.
    let one = build::create(3, 5, "x.exe", 0x0012_0196, 5);
    let mut compound = Vec::new();
    for i in 0..1000 {
        let mut m = one.clone();
        if i < 999 {
            let next = m.len() as u32;
            m[20..24].copy_from_slice(&next.to_le_bytes());
        }
        compound.extend(m);
    }
    c.send(&mut p, Direction::ToServer, &build::nb(&compound), &mut out);
    // A truncated NTLMSSP AUTHENTICATE.
    let auth = smbwatch_smb::ntlmssp::build_authenticate("admin", "CORP", "ATTACKER", 24);
    let setup = build::session_setup(1, &auth[..auth.len() / 2]);
    c.send(&mut p, Direction::ToServer, &build::nb(&setup), &mut out);
    // A NetBIOS length far past what the sample holds.
    let c2 = Conn::new("192.0.2.6:50000", SERVER);
    let o = p.smb_sample(&SmbSample {
        ts: t0(),
        client: c2.client,
        server: c2.server,
        direction: Direction::ToServer,
        seq: c2.seq[0],
        wire_len: 1400,
        data: &[0, 0xFF, 0xFF, 0xFF, 0xFE, b'S', b'M', b'B'],
        src_mac: None,
        vlan: None,
        fin_or_rst: true,
    });
    out.events.extend(o.events);
    // Bounded: the parser caps compound members (32) and the bytes kept
    // of a message (16 KiB).
    assert!(out.events.len() < 100, "{}", out.events.len());
    assert!(out.alerts.is_empty(), "no tree: {:#?}", out.alerts);
    assert!(p.smb().counters().bytes <= SmbSettings::default().max_bytes as u64);
}

/// Enumeration: `enum_burst` samr calls from one source within the window
/// raise one `smb_enum`; fewer raise none.
#[test]
fn an_enumeration_burst_raises_once() {
    let mut p = pipeline(SmbSettings {
        enum_burst: 5,
        ..SmbSettings::default()
    });
    let mut out = SmbOutputs::default();
    let mut c = Conn::new(CLIENT, SERVER);
    c.bind(&mut p, SAMR, &mut out);
    // SamrEnumerateUsersInDomain (13).
    for i in 0..4 {
        c.call(&mut p, 20 + i, 13, &mut out);
    }
    assert!(!kinds(&out).contains(&AlertKind::SmbEnum));
    for i in 0..10 {
        c.call(&mut p, 30 + i, 13, &mut out);
    }
    let e: Vec<_> = out
        .alerts
        .iter()
        .filter(|a| a.kind == AlertKind::SmbEnum)
        .collect();
    assert_eq!(e.len(), 1, "{:#?}", out.alerts);
    let smb = e[0].smb.as_ref().unwrap();
    assert_eq!(smb.calls, Some(5));
    assert_eq!(smb.operations, ["SamrEnumerateUsersInDomain"]);
}

/// MS-SAMR 1.9.
const SAMR: &str = "12345778-1234-abcd-ef00-0123456789ac";

/// DRSGetNCChanges: from a configured DC nothing, from another host
/// `smb_dcsync`.
#[test]
fn dcsync_from_a_non_dc_only() {
    let dc: IpAddr = "192.0.2.5".parse().unwrap();
    for (dcs, expect) in [(vec![dc.into()], false), (vec![], true)] {
        let mut p = pipeline(SmbSettings {
            domain_controllers: dcs,
            ..SmbSettings::default()
        });
        let mut out = SmbOutputs::default();
        let mut c = Conn::new(CLIENT, SERVER);
        c.bind(&mut p, DRSUAPI, &mut out);
        c.call(&mut p, 9, 3, &mut out);
        assert_eq!(
            kinds(&out).contains(&AlertKind::SmbDcsync),
            expect,
            "{:#?}",
            out.alerts
        );
    }
}

/// MS-DRSR 1.9.
const DRSUAPI: &str = "e3514235-4b06-11d1-ab04-00c04fc2dcd2";

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
        if delay == 0 {
            // The logs are dated before the packets: the host alerts went
            // out first and the wire's reports of the same acts are not
            // raised again.
            assert!(stats.joined_late >= 2, "{stats:?}");
            continue;
        }
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

/// The wire's acts after a scan alert of their source are chains that
/// name what the wire showed (the share, the file, the pipe and calls).
#[test]
fn wire_acts_after_a_scan_complete_chains() {
    use crate::alert::ScanEvidence;
    use crate::correlate::{CorrelateConfig, Correlator};
    let mut scan = Alert::new(
        t0(),
        AlertKind::SmbScanFanout,
        Severity::High,
        "scan".into(),
    );
    scan.source_ip = Some("192.0.2.5".parse().unwrap());
    scan.scan = Some(ScanEvidence {
        first_seen: t0() - chrono::TimeDelta::seconds(30),
        last_seen: t0(),
        ..ScanEvidence::default()
    });
    let mut c = Correlator::new(CorrelateConfig::default());
    assert!(c.on_scan_alert(&scan).is_empty());
    let mut m = SmbMonitor::new(SmbSettings::default());
    let mut out = Vec::new();
    let mut conn = Conn::new(CLIENT, SERVER);
    for (d, bytes) in build::psexec() {
        let i = usize::from(d == Direction::ToClient);
        m.observe(
            &SmbSample {
                ts: conn.ts,
                client: conn.client,
                server: conn.server,
                direction: d,
                seq: conn.seq[i],
                wire_len: bytes.len() as u32,
                data: &bytes,
                src_mac: None,
                vlan: None,
                fin_or_rst: false,
            },
            &mut out,
        );
        conn.seq[i] = conn.seq[i].wrapping_add(bytes.len() as u32);
        conn.ts += chrono::TimeDelta::seconds(1);
    }
    let mut raised = Vec::new();
    for o in out {
        if let SmbOutput::Alert(a) = o {
            raised.extend(c.on_wire_alert(*a, false));
        }
    }
    let chains: Vec<_> = raised
        .iter()
        .filter(|a| a.kind == AlertKind::LateralMovementChain)
        .collect();
    // The ADMIN$ connect, then the write (a step of its own).
    assert_eq!(chains.len(), 2, "{raised:#?}");
    assert!(
        chains[0].message.contains("ADMIN$"),
        "{}",
        chains[0].message
    );
    assert!(chains[0].message.contains("SMB on the wire"));
    assert!(
        chains[1].message.contains("PSEXESVC.exe"),
        "{}",
        chains[1].message
    );
    assert!(chains
        .iter()
        .all(|a| a.smb.is_some() && a.event_code.is_none()));
    // Every wire alert went out too (no host inputs: no waiting).
    assert_eq!(raised.len() - chains.len(), 4);
}

/// With host inputs, a wire alert of an act Windows also logs waits for
/// `host_wait`, then goes out alone when no record came.
#[test]
fn a_wire_alert_waits_for_its_host_record_then_goes_alone() {
    let mut p = Pipeline::new(PipelineConfig::default());
    let mut out = SmbOutputs::default();
    let mut c = Conn::new(CLIENT, SERVER);
    for (d, m) in &build::psexec()[..6] {
        c.send(&mut p, *d, m, &mut out);
    }
    assert!(out.alerts.is_empty(), "{:#?}", out.alerts);
    assert_eq!(p.correlator().wire_waiting(), 1);
    let later = p.advance(c.ts + chrono::TimeDelta::seconds(11));
    assert_eq!(later.len(), 1, "{later:#?}");
    assert_eq!(later[0].kind, AlertKind::SmbAdminShare);
    assert_eq!(p.correlator().wire_waiting(), 0);
}

/// The per-source cap counts per kind: acts of one kind past it do not
/// hide another kind's first act.
#[test]
fn the_source_cap_is_per_kind() {
    let mut p = pipeline(SmbSettings {
        max_alerts_per_source: 1,
        ..SmbSettings::default()
    });
    let mut out = SmbOutputs::default();
    Conn::new(CLIENT, SERVER).psexec(&mut p, &mut out);
    // ADMIN$ raised; the svcctl pipe (same kind) capped; drop and service
    // raised.
    assert_eq!(
        sorted_kinds(&out),
        [
            AlertKind::SmbAdminShare,
            AlertKind::SmbFileDrop,
            AlertKind::SmbRemoteService
        ]
    );
    assert_eq!(p.smb().counters().over_source_cap, 1);
}

/// An executable opened on ADMIN$ with GENERIC_WRITE (no WriteData bit)
/// is a drop too, before any WRITE is seen (the sample may end first).
#[test]
fn a_generic_write_create_is_a_drop() {
    let mut p = pipeline(SmbSettings::default());
    let mut out = SmbOutputs::default();
    let mut c = Conn::new(CLIENT, SERVER);
    for (d, m) in &build::psexec()[..6] {
        c.send(&mut p, *d, m, &mut out);
    }
    let nb = build::nb;
    let create = build::create(3, 5, "svc.exe", 0x4000_0000, 2);
    c.send(&mut p, Direction::ToServer, &nb(&create), &mut out);
    let answer = build::create_resp(3, 5, 0, build::FID2);
    c.send(&mut p, Direction::ToClient, &nb(&answer), &mut out);
    assert!(
        kinds(&out).contains(&AlertKind::SmbFileDrop),
        "{:#?}",
        out.alerts
    );
}

/// Mutated psexec conversations (flipped bytes, odd cuts, sample cuts,
/// connections ending anywhere) through one monitor at its smallest table:
/// no panic, the table within its bytes, and every connection accounted
/// for (held, closed, expired or evicted).
#[test]
fn mutated_conversations_keep_the_monitor_bounded() {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut rnd = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n.max(1) as u64) as usize
    };
    let settings = SmbSettings {
        max_bytes: SmbSettings::MIN_BYTES,
        ..SmbSettings::default()
    };
    let mut m = SmbMonitor::new(settings.clone());
    let conv = build::psexec();
    let mut out = Vec::new();
    let mut ts = t0();
    for n in 0..500u16 {
        let client = SocketAddr::new("192.0.2.9".parse().unwrap(), 1024 + n);
        let server: SocketAddr = SERVER.parse().unwrap();
        let mut seq = [0u32, 0u32];
        for (k, (d, bytes)) in conv.iter().enumerate() {
            let mut b = bytes.clone();
            for _ in 0..rnd(4) {
                let i = rnd(b.len());
                b[i] = rnd(256) as u8;
            }
            let i = usize::from(*d == Direction::ToClient);
            let mut at = 0;
            while at < b.len() {
                let len = 1 + rnd(b.len() - at);
                let data = &b[at..at + len];
                let kept = if rnd(10) == 0 { &data[..len / 2] } else { data };
                let last = k + 1 == conv.len() && at + len == b.len();
                m.observe(
                    &SmbSample {
                        ts,
                        client,
                        server,
                        direction: *d,
                        seq: seq[i],
                        wire_len: len as u32,
                        data: kept,
                        src_mac: None,
                        vlan: None,
                        fin_or_rst: last && rnd(2) == 0,
                    },
                    &mut out,
                );
                seq[i] = seq[i].wrapping_add(len as u32);
                at += len;
                ts += chrono::TimeDelta::milliseconds(1);
                assert!(m.counters().bytes <= settings.max_bytes as u64);
            }
        }
    }
    m.expire(ts + chrono::TimeDelta::hours(1), &mut out);
    let c = m.counters();
    assert_eq!(c.flows, 0, "{c:?}");
    assert_eq!(c.bytes, 0, "{c:?}");
    assert_eq!(
        c.flows_opened,
        c.flows_closed + c.flows_expired + c.evicted,
        "{c:?}"
    );
    let events = out
        .iter()
        .filter(|o| matches!(o, SmbOutput::Event(_)))
        .count() as u64;
    assert_eq!(events, c.observations.iter().sum::<u64>());
}

/// Replay: at the end of the capture the feed finishes the connections
/// still open and lets out the alerts still waiting for host records
/// (the pipeline expects host events, none came): nothing is lost, and
/// the last event lines reach the callback.
#[test]
fn replay_finish_flushes_connections_and_waiting_alerts() {
    use crate::pipeline::ReplayFeed;
    let mut alerts = Vec::new();
    let mut on_alert = |a: &Alert| alerts.push(a.kind);
    let mut lines = 0usize;
    let mut on_line = |_: &SmbEvent| lines += 1;
    let mut feed = ReplayFeed::new(
        Pipeline::new(PipelineConfig::default()),
        Vec::new(),
        &mut on_alert,
    )
    .with_smb_events(&mut on_line);
    let mut c = Conn::new(CLIENT, SERVER);
    let mut returned = 0;
    // PsExec without its last message: the ADMIN$ connect waits for a
    // host record; the session ends without FIN.
    for (d, bytes) in &build::psexec()[..13] {
        let i = usize::from(*d == Direction::ToClient);
        returned += feed
            .smb_sample(&SmbSample {
                ts: c.ts,
                client: c.client,
                server: c.server,
                direction: *d,
                seq: c.seq[i],
                wire_len: bytes.len() as u32,
                data: bytes,
                src_mac: None,
                vlan: None,
                fin_or_rst: false,
            })
            .len();
        c.seq[i] = c.seq[i].wrapping_add(bytes.len() as u32);
        c.ts += chrono::TimeDelta::milliseconds(10);
    }
    let p = feed.finish();
    // The svcctl CREATE's answer never came: reported at the flush.
    assert!(
        lines > returned,
        "{lines} lines, {returned} before the flush"
    );
    assert_eq!(p.smb().counters().flows, 0);
    assert_eq!(p.correlator().wire_waiting(), 0);
    drop(p);
    assert!(alerts.contains(&AlertKind::SmbAdminShare), "{alerts:?}");
    assert!(alerts.contains(&AlertKind::SmbFileDrop), "{alerts:?}");
}
