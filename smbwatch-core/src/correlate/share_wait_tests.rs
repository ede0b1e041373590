//! A share access or file drop the host logged before the wire reported
//! it: the host's alert waits for the wire's, which goes out carrying
//! both; without the wire it goes out alone at its deadline.

use super::remote_exec_tests::{ip, t};
use super::Correlator;
use crate::alert::{Alert, AlertKind, Severity, SmbEvidence};
use crate::hostlog::{Account, HostEvent, HostRecord, ShareAccess, ShareLog, TimeSource};

const CLIENT: &str = "192.0.2.5";
const SERVER: &str = "198.51.100.6";

/// A correlator (host_wait 10 s) that has seen SMB samples.
fn correlator() -> Correlator {
    let mut c = super::remote_exec_tests::correlator();
    c.saw_wire();
    c
}

/// A 5140 (`log: Share`) or 5145 of `C$` from the client.
fn c_share(at: i64, log: ShareLog) -> HostEvent {
    HostEvent {
        ts: t(at),
        time_source: TimeSource::Utc,
        host: Some("SRV6".into()),
        channel: Some("Security".into()),
        record_id: None,
        record: HostRecord::ShareAccess(ShareAccess {
            log,
            src_ip: Some(ip(CLIENT)),
            src_port: Some(50504),
            share_name: Some("\\\\*\\C$".into()),
            relative_target: None,
            access_mask: Some(1),
            logon_id: Some(7),
            account: Account {
                domain: Some("EXAMPLE".into()),
                name: Some("alice".into()),
                sid: Some("S-1-5-21-1-2-3-1104".into()),
            },
        }),
    }
}

/// The host rules' `admin_share_access` of `ev`.
fn host_alert(ev: &HostEvent) -> Alert {
    let mut a = Alert::new(
        ev.ts,
        AlertKind::AdminShareAccess,
        Severity::High,
        "EXAMPLE\\alice accessed C$".into(),
    );
    a.source_ip = Some(ip(CLIENT));
    a.share = Some("C$".into());
    a.event_code = Some(ev.event_id());
    a
}

/// The wire's `smb_admin_share` of the same tree connect.
fn wire(at: i64) -> Alert {
    let mut a = Alert::new(
        t(at),
        AlertKind::SmbAdminShare,
        Severity::High,
        format!("{CLIENT} connected to \\\\SRV6\\C$ on {SERVER} [SMB on the wire]"),
    );
    a.source_ip = Some(ip(CLIENT));
    a.destination_ip = Some(ip(SERVER));
    a.share = Some("C$".into());
    a.smb = Some(SmbEvidence {
        tree: Some("\\\\SRV6\\C$".into()),
        workstation: Some("WS5".into()),
        ..SmbEvidence::default()
    });
    a
}

#[test]
fn a_disk_share_logged_first_waits_for_the_wire() {
    let mut c = correlator();
    let ev = c_share(0, ShareLog::Share);
    c.on_host_event(&ev);
    assert!(c.host_share_alert(&ev, host_alert(&ev)).is_empty());
    // The act's 5145, logged at the same connect, waits too.
    let ev2 = c_share(0, ShareLog::Object);
    c.on_host_event(&ev2);
    assert!(c.host_share_alert(&ev2, host_alert(&ev2)).is_empty());
    assert_eq!(c.wire_waiting(), 2);
    let out = c.on_wire_alert(wire(1), true);
    assert_eq!(out.len(), 1, "{out:#?}");
    let a = &out[0];
    assert_eq!(a.kind, AlertKind::SmbAdminShare);
    assert_eq!(a.event_code, Some(5140));
    let smb = a.smb.as_ref().unwrap();
    assert_eq!(
        smb.workstation.as_deref(),
        Some("WS5"),
        "the wire's fields stay"
    );
    assert_eq!(smb.host_events, [5140, 5145], "both records, one alert");
    assert_eq!(c.wire_waiting(), 0);
    assert!(c.release_all_wire().is_empty());
    let s = c.stats();
    assert_eq!((s.joined, s.joined_late), (1, 1));
}

#[test]
fn without_the_wire_the_host_alert_goes_out_at_its_deadline() {
    let mut c = correlator();
    let ev = c_share(0, ShareLog::Share);
    c.on_host_event(&ev);
    assert!(c.host_share_alert(&ev, host_alert(&ev)).is_empty());
    assert!(c.release_wire(t(9)).is_empty());
    let out = c.release_wire(t(10));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].kind, AlertKind::AdminShareAccess);
    // A wire report of the act after that raises nothing more.
    assert!(c.on_wire_alert(wire(11), true).is_empty());
    assert_eq!(c.stats().joined_late, 1);
}
