//! The SMB monitor's tests with hand-built sessions
//! (`smbwatch_smb::build`): each rule, one alert per act, the bounds, the
//! per-kind cap, hostile and mutated peers, chains, waiting for host
//! records and the end-of-input flush. Time comes from the samples.

use std::net::{IpAddr, SocketAddr};

use chrono::{DateTime, Utc};
use smbwatch_smb::build;

use super::tests::{kinds, sorted_kinds};
use super::*;
use crate::alert::{AlertKind, Severity};
use crate::pipeline::{Pipeline, PipelineConfig};

pub(super) const CLIENT: &str = "192.0.2.5:49152";
pub(super) const SERVER: &str = "198.51.100.10:445";

pub(super) fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

/// Feeds whole framed messages of one connection, keeping sequence
/// numbers.
pub(super) struct Conn {
    client: SocketAddr,
    server: SocketAddr,
    seq: [u32; 2],
    ts: DateTime<Utc>,
}

impl Conn {
    pub(super) fn new(client: &str, server: &str) -> Self {
        Self {
            client: client.parse().unwrap(),
            server: server.parse().unwrap(),
            seq: [1000, 900_000],
            ts: t0(),
        }
    }

    pub(super) fn send(
        &mut self,
        p: &mut Pipeline,
        dir: Direction,
        bytes: &[u8],
        out: &mut SmbOutputs,
    ) {
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
        self.bind_on(p, "svcctl", uuid, out);
    }

    /// [`Conn::bind`] on the pipe `pipe` instead of psexec's `svcctl`.
    pub(super) fn bind_on(
        &mut self,
        p: &mut Pipeline,
        pipe: &str,
        uuid: &str,
        out: &mut SmbOutputs,
    ) {
        let msgs = build::psexec();
        for (d, m) in &msgs[..4] {
            self.send(p, *d, m, out);
        }
        let nb = build::nb;
        let (ipc, ipc_resp) = (&msgs[10], &msgs[11]);
        self.send(p, ipc.0, &ipc.1, out);
        self.send(p, ipc_resp.0, &ipc_resp.1, out);
        let open = build::create(7, 1, pipe, 0x0012_019F, 1);
        self.send(p, Direction::ToServer, &nb(&open), out);
        let opened = build::create_resp(7, 1, 0, build::FID);
        self.send(p, Direction::ToClient, &nb(&opened), out);
        let bind = build::write(8, 1, build::FID, 0, &build::rpc_bind(0, uuid));
        self.send(p, Direction::ToServer, &build::nb(&bind), out);
    }

    /// An RPC request `opnum` on the bound pipe, as message `id`.
    pub(super) fn call(&mut self, p: &mut Pipeline, id: u64, opnum: u16, out: &mut SmbOutputs) {
        let req = build::write(id, 1, build::FID, 0, &build::rpc_request(0, opnum, 3, 8));
        self.send(p, Direction::ToServer, &build::nb(&req), out);
    }
}

/// A pipeline without host inputs: SMB alerts go out at once.
pub(super) fn pipeline(settings: SmbSettings) -> Pipeline {
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
