//! `smb_coercion` and `smb_registry_dump` on hand-built sessions
//! (`smbwatch_smb::build`): the calls PetitPotam, DFSCoerce, ShadowCoerce
//! and the printer bug make a server authenticate with, and the hive save
//! secretsdump asks for; the same interfaces' harmless calls raise
//! nothing.

use std::net::IpAddr;

use super::session_tests::{pipeline, Conn, CLIENT, SERVER};
use super::*;
use crate::alert::{Alert, AlertKind, Severity};

/// MS-EFSR through `\lsarpc`, and through `\efsrpc`.
const EFSR_LSARPC: &str = "c681d488-d850-11d0-8c52-00c04fd90f7e";
const EFSR: &str = "df1941c5-fe89-4e79-bf10-463657acf44d";
/// MS-DFSNM.
const NETDFS: &str = "4fc742e0-4a10-11cf-8273-00aa004ae673";
/// MS-FSRVP.
const FSRVP: &str = "a8e0653c-2744-4389-a61d-7373df8b2292";
/// MS-EVEN.
const EVENTLOG: &str = "82273fdc-e32a-18c3-3f78-827929dc23ea";
/// MS-RPRN.
const SPOOLSS: &str = "12345678-1234-abcd-ef00-0123456789ab";
/// MS-RRP.
const WINREG: &str = "338cd001-2244-31f1-aaaa-900038001003";

/// The alerts of `kind` from one session binding `uuid` on `pipe` and
/// calling `opnums` in turn.
fn session(
    settings: SmbSettings,
    pipe: &str,
    uuid: &str,
    opnums: &[u16],
    kind: AlertKind,
) -> Vec<Alert> {
    let mut p = pipeline(settings);
    let mut out = SmbOutputs::default();
    let mut c = Conn::new(CLIENT, SERVER);
    c.bind_on(&mut p, pipe, uuid, &mut out);
    for (id, op) in (20..).zip(opnums) {
        c.call(&mut p, id, *op, &mut out);
    }
    out.alerts.into_iter().filter(|a| a.kind == kind).collect()
}

#[test]
fn each_coercion_family_raises_once_per_session() {
    for (pipe, uuid, ops, tool) in [
        ("lsarpc", EFSR_LSARPC, &[0u16, 4, 0][..], "PetitPotam"),
        ("efsrpc", EFSR, &[5, 15][..], "PetitPotam"),
        ("netdfs", NETDFS, &[12, 13][..], "DFSCoerce"),
        ("FssagentRpc", FSRVP, &[8, 9][..], "ShadowCoerce"),
        ("eventlog", EVENTLOG, &[9][..], "MS-EVEN"),
    ] {
        let alerts = session(
            SmbSettings::default(),
            pipe,
            uuid,
            ops,
            AlertKind::SmbCoercion,
        );
        assert_eq!(alerts.len(), 1, "{pipe}: {alerts:#?}");
        let a = &alerts[0];
        assert_eq!(a.severity, Severity::High);
        assert!(a.techniques.contains(&"T1187"));
        assert!(a.message.contains(tool), "{}", a.message);
        let smb = a.smb.as_ref().unwrap();
        assert_eq!(smb.pipe.as_deref(), Some(pipe));
        assert_eq!(smb.operations.len(), 1);
    }
}

/// Every print client asks its print server for change notifications:
/// only a domain controller asked is the printer bug.
#[test]
fn the_printer_bug_counts_against_a_domain_controller_only() {
    let server: IpAddr = SERVER.parse::<std::net::SocketAddr>().unwrap().ip();
    for (dcs, expect) in [(vec![], 0), (vec![server.into()], 1)] {
        let settings = SmbSettings {
            domain_controllers: dcs,
            ..SmbSettings::default()
        };
        let alerts = session(
            settings,
            "spoolss",
            SPOOLSS,
            &[1, 65],
            AlertKind::SmbCoercion,
        );
        assert_eq!(alerts.len(), expect, "{alerts:#?}");
    }
}

#[test]
fn a_remote_hive_save_is_a_registry_dump() {
    // OpenLocalMachine, BaseRegOpenKey, BaseRegSaveKey: secretsdump's SAM.
    let alerts = session(
        SmbSettings::default(),
        "winreg",
        WINREG,
        &[2, 15, 20],
        AlertKind::SmbRegistryDump,
    );
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].severity, Severity::Critical);
    assert!(alerts[0].techniques.contains(&"T1003.002"));
    assert_eq!(
        alerts[0].smb.as_ref().unwrap().operations,
        ["BaseRegSaveKey"]
    );
    // Reading values (a management console) saves nothing.
    let reads = session(
        SmbSettings::default(),
        "winreg",
        WINREG,
        &[2, 15, 17, 9],
        AlertKind::SmbRegistryDump,
    );
    assert!(reads.is_empty(), "{reads:#?}");
}
