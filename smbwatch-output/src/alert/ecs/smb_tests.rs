//! Tests of the SMB event lines.

use super::*;
use crate::alert::ecs::fields::validate;
use crate::alert::ecs::serializes_to_nothing;
use smbwatch_core::smb::{Dialect, Interface, Limit};

fn event(observation: Observation) -> SmbEvent {
    SmbEvent {
        ts: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        client: "192.0.2.5:49152".parse().unwrap(),
        server: "198.51.100.10:445".parse().unwrap(),
        direction: smbwatch_core::smb::Direction::ToServer,
        client_mac: Some(smbwatch_core::event::MacAddr([2, 0, 0, 0, 0, 1])),
        vlan: Some(10),
        account: Some(Account {
            user: "admin".into(),
            domain: "corp".into(),
            workstation: "ATTACKER".into(),
            anonymous: false,
            guest: false,
        }),
        share: Some("\\\\srv\\ADMIN$".into()),
        pipe: None,
        observation,
    }
}

fn all() -> Vec<Observation> {
    let svcctl = Interface::from_uuid(smbwatch_smb::dcerpc::Uuid::from_str_const(
        smbwatch_smb::build::SVCCTL,
    ));
    vec![
        Observation::Smb1 {
            dialects: vec!["NT LM 0.12".into()],
        },
        Observation::Negotiate {
            dialect: Dialect(0x0311),
        },
        Observation::Auth {
            user: "admin".into(),
            domain: "corp".into(),
            workstation: "ATTACKER".into(),
            anonymous: false,
            guest: true,
            status: Some(NtStatus::SUCCESS),
        },
        Observation::TreeConnect {
            path: "\\\\srv\\ADMIN$".into(),
            share_type: Some(ShareType::Disk),
            status: Some(NtStatus(0xC000_0022)),
        },
        Observation::Create {
            name: "PSEXESVC.exe".into(),
            pipe: false,
            access: 0x0012_0196,
            disposition: 5,
            status: None,
        },
        Observation::Write {
            name: Some("PSEXESVC.exe".into()),
            offset: 0,
            len: 4,
        },
        Observation::Close { name: None },
        Observation::RpcBind { interface: svcctl },
        Observation::RpcCall {
            interface: Some(svcctl),
            unbound: None,
            opnum: 12,
            operation: Some("RCreateServiceW"),
        },
        Observation::Encrypted { session_id: 7 },
        Observation::Unseen {
            what: Unseen::Stream {
                hole: Hole::SampleCut,
                bytes: 300,
            },
        },
        Observation::Unseen {
            what: Unseen::Limit(Limit::Compound),
        },
        Observation::Rename {
            name: Some("x.tmp".into()),
            to: "x.exe".into(),
        },
        Observation::RpcCall {
            interface: None,
            unbound: Some(smbwatch_core::smb::Unbound::NotSeen),
            opnum: 12,
            operation: None,
        },
    ]
}

/// Every observation kind gives a line that conforms to the field
/// table, with its action, and the fields an analyst pivots on.
#[test]
fn smb_lines_are_ecs() {
    for o in all() {
        let ev = event(o);
        let line = SmbLine::new(&ev);
        let j = line.to_json();
        let errors = validate(&j);
        assert!(errors.is_empty(), "{:?}: {errors:#?}", ev.observation);
        assert_eq!(j["event"]["action"], ev.action());
        assert_eq!(j["event"]["dataset"], SMB_DATASET);
        assert_eq!(j["network"]["protocol"], "smb");
        assert_eq!(j["source"]["domain"], "ATTACKER");
        assert_eq!(j["source"]["mac"], "02-00-00-00-00-01");
        assert_eq!(j["user"]["name"], "admin");
        assert_eq!(j["user"]["domain"], "CORP");
        assert_eq!(j["smbwatch"]["share"], "ADMIN$");
        for (what, empty) in [
            ("file", line.file.is_empty()),
            ("smb", line.smb.is_empty()),
            ("rpc", line.rpc.is_empty()),
            ("user", line.user.is_empty()),
        ] {
            let v = &j[what];
            assert_eq!(empty, v.is_null() || serializes_to_nothing(v), "{what}");
        }
    }
    let j = |o| SmbLine::new(&event(o)).to_json();
    let [_, _, auth, tree, create, _, _, _, call, ..] = &all()[..] else {
        unreachable!()
    };
    let t = j(tree.clone());
    assert_eq!(t["event"]["outcome"], "failure");
    assert_eq!(t["smb"]["status"], "0xc0000022");
    assert_eq!(t["smb"]["path"], "\\\\srv\\ADMIN$");
    assert_eq!(j(auth.clone())["smb"]["logon"], serde_json::Value::Null);
    let c = j(create.clone());
    assert_eq!(c["file"]["path"], "\\\\srv\\ADMIN$\\PSEXESVC.exe");
    assert_eq!(c["file"]["name"], "PSEXESVC.exe");
    assert_eq!(c["event"]["type"], serde_json::json!(["creation"]));
    let r = j(call.clone());
    assert_eq!(r["rpc"]["interface"]["name"], "svcctl");
    assert_eq!(r["rpc"]["opnum"], 12);
    assert_eq!(
        r["rpc"]["operation"],
        serde_json::json!(["RCreateServiceW"])
    );
    assert_eq!(r["rpc"]["unbound"], serde_json::Value::Null);
    // A call whose BIND was not seen: what is known, and why no interface.
    let u = j(all().last().unwrap().clone());
    assert_eq!(u["event"]["action"], "rpc_call");
    assert_eq!(u["rpc"]["opnum"], 12);
    assert_eq!(u["rpc"]["unbound"], "bind_not_seen");
    assert_eq!(u["rpc"]["interface"], serde_json::Value::Null);
    // A rename: the file is the new name, the old one beside it.
    let n = all().len();
    let m = j(all()[n - 2].clone());
    assert_eq!(m["event"]["action"], "smb_rename");
    assert_eq!(m["file"]["path"], "\\\\srv\\ADMIN$\\x.exe");
    assert_eq!(m["smb"]["renamed_from"], "\\\\srv\\ADMIN$\\x.tmp");
}
