//! `smb_remote_task` on hand-built sessions (`smbwatch_smb::build`): the
//! lab's Samba refuses atexec's pipe and no shared capture has a task
//! registration, so these are the rule's only tests. The rule (see
//! [`super::rules`]) raises on atsvc NetrJobAdd and ITaskSchedulerService
//! SchRpcRegisterTask and SchRpcRun, one alert per (client, server,
//! interface) act; reading or enumerating tasks raises nothing.

use std::net::IpAddr;

use super::session_tests::{pipeline, Conn, CLIENT, SERVER};
use super::tests::sorted_kinds;
use super::*;
use crate::alert::{Alert, AlertKind, Severity};

/// MS-TSCH 1.9: ITaskSchedulerService (what impacket's atexec binds).
const TSCH: &str = "86d35949-83c9-4044-b424-db363231fd0c";
/// MS-TSCH 1.9: the legacy ATSvc interface (`at.exe`, NetrJobAdd).
const ATSVC: &str = "1ff70682-0a51-30e8-076d-740be8cee98b";

/// The `smb_remote_task` alerts raised.
fn tasks(out: &SmbOutputs) -> Vec<&Alert> {
    out.alerts
        .iter()
        .filter(|a| a.kind == AlertKind::SmbRemoteTask)
        .collect()
}

/// One session binding `uuid` on `\atsvc` and calling `opnums` in turn.
fn session(uuid: &str, opnums: &[u16]) -> SmbOutputs {
    let mut p = pipeline(SmbSettings::default());
    let mut out = SmbOutputs::default();
    let mut c = Conn::new(CLIENT, SERVER);
    c.bind_on(&mut p, "atsvc", uuid, &mut out);
    for (id, op) in (20..).zip(opnums) {
        c.call(&mut p, id, *op, &mut out);
    }
    out
}

/// Checks the one task alert: who, where, the pipe, the interface and
/// the operation that raised it.
fn assert_task(a: &Alert, interface: &str, operation: &str) {
    assert_eq!(a.severity, Severity::Critical, "{a:#?}");
    assert_eq!(a.user.as_deref(), Some("CORP\\admin"), "{a:#?}");
    assert_eq!(a.source_ip, Some("192.0.2.5".parse::<IpAddr>().unwrap()));
    assert_eq!(
        a.destination_ip,
        Some("198.51.100.10".parse::<IpAddr>().unwrap())
    );
    assert_eq!(a.destination_port, Some(445));
    let smb = a.smb.as_ref().unwrap();
    assert_eq!(smb.pipe.as_deref(), Some("atsvc"), "{smb:#?}");
    assert_eq!(smb.tree.as_deref(), Some("\\\\192.0.2.10\\IPC$"));
    assert_eq!(smb.interface.as_deref(), Some(interface));
    assert_eq!(smb.operations, [operation]);
    assert!(
        a.message.contains(interface) && a.message.contains(operation),
        "{}",
        a.message
    );
}

/// impacket's atexec over `\atsvc`: SchRpcRegisterTask, SchRpcRun,
/// SchRpcGetLastRunInfo, SchRpcDelete. One task act (the registration;
/// the run is the same act), plus the sensitive pipe's `smb_admin_share`.
#[test]
fn atexec_register_task_raises_one_remote_task() {
    let out = session(TSCH, &[1, 12, 16, 16, 13]);
    assert_eq!(
        sorted_kinds(&out),
        [AlertKind::SmbAdminShare, AlertKind::SmbRemoteTask],
        "{:#?}",
        out.alerts
    );
    let t = tasks(&out);
    assert_eq!(t.len(), 1, "{t:#?}");
    assert_task(t[0], "ITaskSchedulerService", "SchRpcRegisterTask");
}

/// The legacy ATSvc NetrJobAdd (`at \\host 12:00 cmd`): one task act.
#[test]
fn atsvc_netr_job_add_raises_one_remote_task() {
    let out = session(ATSVC, &[0, 0]);
    let t = tasks(&out);
    assert_eq!(t.len(), 1, "{:#?}", out.alerts);
    assert_task(t[0], "atsvc", "NetrJobAdd");
}

/// SchRpcRun alone runs an existing task remotely (execution without a
/// registration on the wire): the rule documents it as a task act.
#[test]
fn sch_rpc_run_alone_raises_one_remote_task() {
    let out = session(TSCH, &[12]);
    let t = tasks(&out);
    assert_eq!(t.len(), 1, "{:#?}", out.alerts);
    assert_task(t[0], "ITaskSchedulerService", "SchRpcRun");
}

/// Reading and enumerating tasks (SchRpcHighestVersion, SchRpcEnumFolders,
/// SchRpcEnumTasks, SchRpcRetrieveTask, SchRpcGetLastRunInfo; ATSvc
/// NetrJobEnum, NetrJobGetInfo) change nothing: no task alert, only the
/// pipe's.
#[test]
fn task_enumeration_raises_no_remote_task() {
    for (uuid, opnums) in [(TSCH, &[0u16, 6, 7, 2, 16][..]), (ATSVC, &[2, 3])] {
        let out = session(uuid, opnums);
        assert_eq!(
            sorted_kinds(&out),
            [AlertKind::SmbAdminShare],
            "{uuid}: {:#?}",
            out.alerts
        );
        assert!(out.events.iter().any(|e| matches!(
            e.observation,
            Observation::RpcCall {
                operation: Some(_),
                ..
            }
        )));
    }
}
