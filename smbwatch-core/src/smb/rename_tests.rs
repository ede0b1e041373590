//! `smb_file_drop` for an executable written under a harmless name and
//! renamed (SMB2 SET_INFO FileRenameInformation) on an administrative
//! share: the alert names the final name.

use smbwatch_smb::build::{self, nb};

use super::session_tests::{pipeline, Conn, CLIENT, SERVER};
use super::*;
use crate::alert::AlertKind;

/// The psexec session's logon, then `x.tmp` written to `share` and
/// renamed to `to`.
fn drop_and_rename(share: &str, to: &str) -> SmbOutputs {
    let mut p = pipeline(SmbSettings::default());
    let mut out = SmbOutputs::default();
    let mut c = Conn::new(CLIENT, SERVER);
    for (d, m) in &build::psexec()[..4] {
        c.send(&mut p, *d, m, &mut out);
    }
    let path = format!("\\\\198.51.100.10\\{share}");
    let msgs = [
        (Direction::ToServer, build::tree_connect(2, &path)),
        (Direction::ToClient, build::tree_connect_resp(2, 5, 0, 1)),
        (Direction::ToServer, build::create(3, 5, "x.tmp", 0x2, 2)),
        (
            Direction::ToClient,
            build::create_resp(3, 5, 0, build::FID2),
        ),
        (
            Direction::ToServer,
            build::write(4, 5, build::FID2, 0, b"MZ"),
        ),
        (
            Direction::ToServer,
            build::set_info_rename(5, 5, build::FID2, to),
        ),
    ];
    for (d, m) in msgs {
        c.send(&mut p, d, &nb(&m), &mut out);
    }
    out
}

#[test]
fn an_executable_renamed_on_an_admin_share_is_a_drop() {
    let out = drop_and_rename("C$", "Windows\\Temp\\x.exe");
    let drops: Vec<_> = out
        .alerts
        .iter()
        .filter(|a| a.kind == AlertKind::SmbFileDrop)
        .collect();
    assert_eq!(drops.len(), 1, "{:#?}", out.alerts);
    let a = drops[0];
    assert_eq!(
        a.smb.as_ref().unwrap().file.as_deref(),
        Some("Windows\\Temp\\x.exe")
    );
    assert_eq!(a.share.as_deref(), Some("C$"));
    assert!(
        a.message.contains(
            "renamed x.tmp to \\\\198.51.100.10\\C$\\Windows\\Temp\\x.exe (an executable)"
        ),
        "{}",
        a.message
    );
    let line = out
        .events
        .iter()
        .find(|e| e.action() == "smb_rename")
        .expect("an smb_rename line");
    assert_eq!(
        line.observation,
        Observation::Rename {
            name: Some("x.tmp".into()),
            to: "Windows\\Temp\\x.exe".into()
        }
    );
}

#[test]
fn other_renames_raise_no_drop() {
    for (share, to) in [("C$", "x.txt"), ("public", "x.exe")] {
        let out = drop_and_rename(share, to);
        assert!(
            out.alerts.iter().all(|a| a.kind != AlertKind::SmbFileDrop),
            "{share} {to}: {:#?}",
            out.alerts
        );
        assert!(out.events.iter().any(|e| e.action() == "smb_rename"));
    }
}
