//! Calls through contexts never bound or refused, and SET_INFO renames.

use super::*;

/// A BIND_NAK (atexec against a server without a task scheduler that
/// still opens the pipe) refuses every context of its BIND: a call
/// through one says so.
#[test]
fn a_nak_refuses_the_binding() {
    let mut p = Peer::new();
    p.c(tree_connect(1, "\\\\x\\IPC$"));
    p.s(tree_connect_resp(1, 1, 0, 2));
    p.c(create(2, 1, "atsvc", 1, 1));
    p.s(create_resp(2, 1, 0, FID));
    p.c(write(
        3,
        1,
        FID,
        0,
        &rpc_bind(0, "86d35949-83c9-4044-b424-db363231fd0c"),
    ));
    p.c(read(4, 1, FID));
    // BIND_NAK: header, reject reason 4, no protocols.
    let mut nak = vec![5, 0, 13, 3, 0x10, 0, 0, 0, 24, 0, 0, 0, 1, 0, 0, 0];
    nak.extend([4, 0, 0, 0, 0, 0, 0, 0]);
    p.s(read_resp(4, 1, &nak));
    p.c(write(5, 1, FID, 0, &rpc_request(0, 1, 3, 8)));
    assert_eq!(
        p.seen.last(),
        Some(&Observation::RpcCall {
            interface: None,
            unbound: Some(crate::Unbound::Refused),
            opnum: 1,
            operation: None
        })
    );
}

/// A REQUEST on a pipe whose BIND was not seen (a hole in the stream)
/// names no interface, even on a pipe called `svcctl`, and says why.
#[test]
fn a_call_without_its_bind_says_why() {
    let mut p = Peer::new();
    p.c(tree_connect(1, "\\\\x\\IPC$"));
    p.s(tree_connect_resp(1, 1, 0, 2));
    p.c(create(2, 1, "svcctl", 1, 1));
    p.s(create_resp(2, 1, 0, FID));
    p.c(write(3, 1, FID, 0, &rpc_request(0, 12, 3, 8)));
    assert_eq!(
        p.seen.last(),
        Some(&Observation::RpcCall {
            interface: None,
            unbound: Some(crate::Unbound::NotSeen),
            opnum: 12,
            operation: None
        })
    );
    // Bound again (accepted), the same context names its interface.
    p.c(write(4, 1, FID, 0, &rpc_bind(0, SVCCTL)));
    p.c(read(5, 1, FID));
    p.s(read_resp(5, 1, &rpc_bind_ack(true)));
    p.c(write(6, 1, FID, 0, &rpc_request(0, 12, 3, 8)));
    assert!(matches!(
        p.seen.last(),
        Some(Observation::RpcCall {
            unbound: None,
            operation: Some("RCreateServiceW"),
            ..
        })
    ));
}

/// An executable written under a harmless name and renamed (SET_INFO
/// FileRenameInformation): the rename names both, and later messages on
/// the handle name the final file.
#[test]
fn a_rename_names_the_final_file() {
    let mut p = Peer::new();
    p.c(tree_connect(1, "\\\\x\\ADMIN$"));
    p.s(tree_connect_resp(1, 1, 0, 1));
    p.c(create(2, 1, "x.tmp", 0x2, 2));
    p.s(create_resp(2, 1, 0, FID));
    p.c(write(3, 1, FID, 0, b"MZ"));
    p.c(set_info_rename(4, 1, FID, "Temp\\x.exe"));
    p.c(close(5, 1, FID));
    let n = p.seen.len();
    assert_eq!(
        p.seen[n - 2..],
        [
            Observation::Rename {
                name: Some("x.tmp".into()),
                to: "Temp\\x.exe".into(),
            },
            Observation::Close {
                name: Some("Temp\\x.exe".into())
            },
        ]
    );
}

/// A rename whose name length runs past its buffer, or past what was
/// seen, is said to be malformed, not guessed.
#[test]
fn a_hostile_rename_is_malformed() {
    for cut in [false, true] {
        let mut p = Peer::new();
        p.c(tree_connect(1, "\\\\x\\C$"));
        p.s(tree_connect_resp(1, 1, 0, 1));
        p.c(create(2, 1, "x.tmp", 0x2, 2));
        p.s(create_resp(2, 1, 0, FID));
        let mut m = set_info_rename(3, 1, FID, "x.exe");
        if cut {
            // The name's last bytes are not in the message.
            m.truncate(m.len() - 4);
        } else {
            m[96 + 16..96 + 20].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes());
        }
        p.c(m);
        assert!(
            !p.seen
                .iter()
                .any(|o| matches!(o, Observation::Rename { .. })),
            "{:?}",
            p.seen
        );
        assert!(
            matches!(
                p.seen.last(),
                Some(Observation::Unseen {
                    what: Unseen::Malformed(_)
                })
            ),
            "{:?}",
            p.seen
        );
    }
}
