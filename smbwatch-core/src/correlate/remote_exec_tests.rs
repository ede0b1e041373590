//! A service install or task seen on the wire and logged by the target:
//! one alert per act whichever side reports it first, or alone; time from
//! the events.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::{CorrelateConfig, Correlator};
use crate::alert::{Alert, AlertKind, Severity, SmbEvidence};
use crate::hostlog::{
    Account, HostEvent, HostRecord, ServiceInstall, ServiceLog, ShareAccess, ShareLog,
    TaskCreation, TimeSource,
};

const CLIENT: &str = "192.0.2.5";
const OTHER: &str = "192.0.2.9";
const SERVER: &str = "198.51.100.6";
const HOST: &str = "SRV6.example.org";
const SID: &str = "S-1-5-21-1-2-3-1104";
const SESSION: u64 = 0x2074186;

pub(super) fn t(s: i64) -> DateTime<Utc> {
    "2024-05-01T12:00:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::seconds(s)
}

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(super) fn correlator() -> Correlator {
    let mut c = Correlator::new(CorrelateConfig::default()).with_host_wait(Duration::from_secs(10));
    c.advance(t(0));
    c
}

fn alice() -> Account {
    Account {
        domain: Some("EXAMPLE".into()),
        name: Some("alice".into()),
        sid: Some(SID.into()),
    }
}

fn host_event(at: i64, record: HostRecord) -> HostEvent {
    HostEvent {
        ts: t(at),
        time_source: TimeSource::Utc,
        host: Some(HOST.into()),
        channel: Some("Security".into()),
        record_id: None,
        record,
    }
}

/// 5140 `IPC$` from `src` in `session`.
fn ipc(at: i64, src: &str, session: u64) -> HostEvent {
    host_event(
        at,
        HostRecord::ShareAccess(ShareAccess {
            log: ShareLog::Share,
            src_ip: Some(ip(src)),
            src_port: Some(50504),
            share_name: Some("IPC$".into()),
            relative_target: None,
            access_mask: Some(1),
            logon_id: Some(session),
            account: alice(),
        }),
    )
}

/// 4697 of PSEXESVC by `session`.
fn s4697(at: i64, session: u64) -> HostEvent {
    host_event(
        at,
        HostRecord::ServiceInstall(ServiceInstall {
            log: ServiceLog::Security,
            service_name: Some("PSEXESVC".into()),
            command: Some("%SystemRoot%\\PSEXESVC.exe".into()),
            logon_id: Some(session),
            account: alice(),
        }),
    )
}

/// 7045 of PSEXESVC, naming its creator by SID only.
fn s7045(at: i64) -> HostEvent {
    let mut ev = host_event(
        at,
        HostRecord::ServiceInstall(ServiceInstall {
            log: ServiceLog::System,
            service_name: Some("PSEXESVC".into()),
            command: Some("%SystemRoot%\\PSEXESVC.exe".into()),
            logon_id: None,
            account: Account {
                sid: Some(SID.into()),
                ..Account::default()
            },
        }),
    );
    ev.channel = Some("System".into());
    ev
}

fn t4698(at: i64, session: u64) -> HostEvent {
    host_event(
        at,
        HostRecord::TaskCreation(TaskCreation {
            task_name: Some("\\ZtUVbHak".into()),
            command: Some("cmd.exe /C whoami".into()),
            logon_id: Some(session),
            account: alice(),
        }),
    )
}

/// The SMB rules' alert of a svcctl or task call from `src`.
fn wire(kind: AlertKind, at: i64, src: &str) -> Alert {
    let mut a = Alert::new(
        t(at),
        kind,
        Severity::Critical,
        format!("{src} called an RPC on {SERVER} [SMB on the wire]"),
    );
    a.source_ip = Some(ip(src));
    a.source_port = Some(50504);
    a.destination_ip = Some(ip(SERVER));
    a.destination_port = Some(445);
    a.user = Some("EXAMPLE\\alice".into());
    a.smb = Some(SmbEvidence {
        pipe: Some("svcctl".into()),
        operations: vec!["RCreateServiceW".into()],
        ..SmbEvidence::default()
    });
    a
}

/// The usual order (host logs are forwarded late): the wire alert waits,
/// the 4697 of the client's session completes it, the 7045 of the same
/// install adds nothing.
#[test]
fn wire_first_then_the_host_log_is_one_alert() {
    let mut c = correlator();
    assert!(c.on_host_event(&ipc(0, CLIENT, SESSION)).is_empty());
    assert!(c
        .on_wire_alert(wire(AlertKind::SmbRemoteService, 1, CLIENT), true)
        .is_empty());
    let out = c.on_host_event(&s4697(2, SESSION));
    assert_eq!(out.len(), 1, "{out:#?}");
    let a = &out[0];
    assert_eq!(a.kind, AlertKind::SmbRemoteService);
    assert_eq!(a.ts, t(1), "the wire's time");
    assert_eq!(a.event_code, Some(4697));
    assert_eq!(a.host.as_deref(), Some(HOST));
    assert_eq!(a.user_id.as_deref(), Some(SID));
    assert_eq!(a.destination_ip, Some(ip(SERVER)));
    let smb = a.smb.as_ref().unwrap();
    assert_eq!(smb.operations, ["RCreateServiceW"]);
    assert_eq!(smb.host_events, [4697]);
    assert!(
        a.message.ends_with(
            "; SRV6.example.org logged it too: service PSEXESVC running \
             %SystemRoot%\\PSEXESVC.exe [event 4697]"
        ),
        "{}",
        a.message
    );
    assert!(c.on_host_event(&s7045(2)).is_empty());
    assert!(c.release_wire(t(60)).is_empty());
    let s = c.stats();
    assert_eq!((s.joined, s.joined_late, s.remote_exec), (1, 1, 0));
}

/// Host first (a host clock ahead, replay merging by time): the host's
/// alert waits for the wire's, which goes out carrying the host's evidence.
#[test]
fn host_first_then_the_wire_is_one_alert() {
    let mut c = correlator();
    c.saw_wire();
    c.on_host_event(&ipc(0, CLIENT, SESSION));
    assert!(c.on_host_event(&s4697(1, SESSION)).is_empty());
    assert!(c.on_host_event(&s7045(1)).is_empty());
    assert_eq!(c.wire_waiting(), 1);
    let out = c.on_wire_alert(wire(AlertKind::SmbRemoteService, 2, CLIENT), true);
    assert_eq!(out.len(), 1, "{out:#?}");
    let a = &out[0];
    assert_eq!(a.ts, t(2));
    assert_eq!(a.event_code, Some(4697));
    assert_eq!(a.source_port, Some(50504), "the wire's fields stay");
    // The 7045 of the same install, which arrived while the 4697 waited.
    assert_eq!(a.smb.as_ref().unwrap().host_events, [4697, 7045]);
    assert_eq!(c.wire_waiting(), 0);
    assert!(c.release_all_wire().is_empty());
}

/// Without the wire (no sensor on the path, encryption): the host record
/// alone raises the act, once, naming the client of its session.
#[test]
fn the_host_log_alone_raises_the_act_once() {
    // No SMB samples at all: out at once.
    let mut c = correlator();
    c.on_host_event(&ipc(0, CLIENT, SESSION));
    let out = c.on_host_event(&s4697(1, SESSION));
    assert_eq!(out.len(), 1, "{out:#?}");
    let a = &out[0];
    assert_eq!(a.kind, AlertKind::SmbRemoteService);
    assert_eq!(a.source_ip, Some(ip(CLIENT)));
    assert_eq!(a.destination_ip, None, "the host names itself by name");
    assert_eq!(a.host.as_deref(), Some(HOST));
    assert_eq!(a.user.as_deref(), Some("EXAMPLE\\alice"));
    assert_eq!(a.event_code, Some(4697));
    assert_eq!(
        a.message,
        "EXAMPLE\\alice from 192.0.2.5 installed service PSEXESVC running \
         %SystemRoot%\\PSEXESVC.exe on SRV6.example.org [Security 4697]"
    );
    assert!(c.on_host_event(&s7045(1)).is_empty(), "the same install");

    // SMB samples arrive: it waits `host_wait` (by the reference clock)
    // for the wire, then goes alone.
    let mut c = correlator();
    c.saw_wire();
    c.on_host_event(&ipc(0, CLIENT, SESSION));
    assert!(c.on_host_event(&s4697(1, SESSION)).is_empty());
    assert!(c.release_wire(t(9)).is_empty());
    let out = c.release_wire(t(10));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].event_code, Some(4697));
    assert_eq!(c.stats().remote_exec, 1);
    // The wire's report of the act arriving later raises nothing more.
    assert!(c
        .on_wire_alert(wire(AlertKind::SmbRemoteService, 11, CLIENT), true)
        .is_empty());
    assert_eq!(c.stats().joined_late, 1);
}

/// The wire alone: the alert goes out at its deadline without host fields.
#[test]
fn the_wire_alone_raises_the_act() {
    let mut c = correlator();
    assert!(c
        .on_wire_alert(wire(AlertKind::SmbRemoteService, 1, CLIENT), true)
        .is_empty());
    let out = c.release_wire(t(11));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].event_code, None);
    assert!(out[0].smb.as_ref().unwrap().host_events.is_empty());
}

/// A record whose client cannot be told raises nothing and joins nothing:
/// a session no share access or logon names (a local install), or a 7045
/// whose account used the host from two addresses.
#[test]
fn an_unknown_client_is_not_guessed() {
    let mut c = correlator();
    assert!(c.on_host_event(&s4697(1, 0x999)).is_empty());
    c.on_host_event(&ipc(2, CLIENT, SESSION));
    c.on_host_event(&ipc(3, OTHER, SESSION + 1));
    assert!(c.on_host_event(&s7045(4)).is_empty());
    assert_eq!(c.stats().local_exec, 2);
    assert_eq!(c.wire_waiting(), 0);
    // The session still tells a 4697 apart.
    assert_eq!(c.on_host_event(&s4697(5, SESSION + 1)).len(), 1);
}

/// Two clients: the wire's act of one and the host's record of the other
/// are two acts, each raised once.
#[test]
fn acts_of_different_clients_stay_apart() {
    let mut c = correlator();
    c.saw_wire();
    c.on_host_event(&ipc(0, OTHER, SESSION));
    assert!(c
        .on_wire_alert(wire(AlertKind::SmbRemoteService, 1, CLIENT), true)
        .is_empty());
    assert!(c.on_host_event(&s4697(2, SESSION)).is_empty());
    let out = c.release_wire(t(20));
    assert_eq!(out.len(), 2, "{out:#?}");
    let mut sources: Vec<_> = out.iter().map(|a| a.source_ip.unwrap()).collect();
    sources.sort();
    assert_eq!(sources, [ip(CLIENT), ip(OTHER)]);
    assert_eq!(c.stats().joined, 0);
}

/// atexec's act: SchRpcRegisterTask on the wire, 4698 in the log.
#[test]
fn a_task_on_the_wire_and_in_the_log_is_one_alert() {
    let mut c = correlator();
    c.on_host_event(&ipc(0, CLIENT, SESSION));
    assert!(c
        .on_wire_alert(wire(AlertKind::SmbRemoteTask, 1, CLIENT), true)
        .is_empty());
    // A service install of the same client is another act.
    let svc = c.on_host_event(&s4697(2, SESSION));
    assert_eq!(svc.len(), 1);
    assert_eq!(svc[0].kind, AlertKind::SmbRemoteService);
    assert_eq!(svc[0].event_code, Some(4697));
    let out = c.on_host_event(&t4698(2, SESSION));
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].kind, AlertKind::SmbRemoteTask);
    assert_eq!(out[0].event_code, Some(4698));
    assert!(
        out[0]
            .message
            .ends_with("logged it too: task \\ZtUVbHak running cmd.exe /C whoami [event 4698]"),
        "{}",
        out[0].message
    );
    assert!(c.release_all_wire().is_empty());
}
