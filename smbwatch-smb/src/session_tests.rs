//! Session tests with hand-built messages (layouts from MS-SMB2 2.2, C706
//! 12.6 and MS-NLMP 2.2), including hostile peers.

use std::time::{Duration, SystemTime};

use crate::{
    build::*,
    dcerpc::Uuid,
    ntlmssp::build_authenticate,
    session::{MAX_FILES, MAX_PENDING_REQUESTS},
    smb2::{self, NtStatus, ShareType},
    stream::Segment,
    Direction::{self, ToClient, ToServer},
    Limit, Observation, Session, Unseen,
};

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// Feeds whole messages, one segment each, keeping sequence numbers.
struct Peer {
    s: Session,
    seq: [u32; 2],
    seen: Vec<Observation>,
    /// Every framed message sent, for replays.
    log: Vec<(Direction, Vec<u8>)>,
}

impl Peer {
    fn new() -> Self {
        Self {
            s: Session::new(),
            seq: [100, 70_000],
            seen: Vec::new(),
            log: Vec::new(),
        }
    }

    fn send(&mut self, dir: Direction, m: &[u8]) {
        self.send_framed(dir, nb(m));
    }

    fn send_framed(&mut self, dir: Direction, bytes: Vec<u8>) {
        let i = usize::from(dir == ToClient);
        let out = self
            .s
            .segment(dir, Segment::whole(self.seq[i], &bytes), t0());
        self.seq[i] = self.seq[i].wrapping_add(bytes.len() as u32);
        self.seen.extend(out.into_iter().map(|s| s.observation));
        self.log.push((dir, bytes));
    }

    fn c(&mut self, m: Vec<u8>) {
        self.send(ToServer, &m);
    }

    fn s(&mut self, m: Vec<u8>) {
        self.send(ToClient, &m);
    }

    fn finish(&mut self) {
        self.seen
            .extend(self.s.finish(t0()).into_iter().map(|s| s.observation));
    }

    fn unseen(&self) -> Vec<&Unseen> {
        self.seen
            .iter()
            .filter_map(|o| match o {
                Observation::Unseen { what } => Some(what),
                _ => None,
            })
            .collect()
    }
}

fn psexec(p: &mut Peer) {
    for (d, m) in crate::build::psexec() {
        p.send_framed(d, m);
    }
}

#[test]
fn a_psexec_session_is_seen_whole() {
    let mut p = Peer::new();
    psexec(&mut p);
    p.finish();
    let svcctl = crate::Interface::from_uuid(Uuid::from_str_const(SVCCTL));
    let call = |opnum, op| Observation::RpcCall {
        interface: Some(svcctl),
        unbound: None,
        opnum,
        operation: Some(op),
    };
    let expected = vec![
        Observation::Negotiate {
            dialect: crate::Dialect(0x0311),
        },
        Observation::Auth {
            user: "admin".into(),
            domain: "CORP".into(),
            workstation: "ATTACKER".into(),
            anonymous: false,
            guest: false,
            status: Some(NtStatus::SUCCESS),
        },
        Observation::TreeConnect {
            path: "\\\\192.0.2.10\\ADMIN$".into(),
            share_type: Some(ShareType::Disk),
            status: Some(NtStatus::SUCCESS),
        },
        Observation::Create {
            name: "PSEXESVC.exe".into(),
            pipe: false,
            access: 0x0012_0196,
            disposition: 5,
            status: Some(NtStatus::SUCCESS),
        },
        Observation::Write {
            name: Some("PSEXESVC.exe".into()),
            offset: 0,
            len: 4,
        },
        Observation::Close {
            name: Some("PSEXESVC.exe".into()),
        },
        Observation::TreeConnect {
            path: "\\\\192.0.2.10\\IPC$".into(),
            share_type: Some(ShareType::Pipe),
            status: Some(NtStatus::SUCCESS),
        },
        Observation::Create {
            name: "svcctl".into(),
            pipe: true,
            access: 0x0012_019F,
            disposition: 1,
            status: Some(NtStatus::SUCCESS),
        },
        Observation::RpcBind { interface: svcctl },
        call(15, "ROpenSCManagerW"),
        call(12, "RCreateServiceW"),
        call(19, "RStartServiceW"),
    ];
    assert_eq!(p.seen, expected);
}

#[test]
fn the_same_bytes_split_anywhere_give_the_same_observations() {
    let mut whole = Peer::new();
    psexec(&mut whole);
    whole.finish();
    for size in [1usize, 3, 7, 61, 1000] {
        // The same conversation, each message cut into `size`-byte
        // segments; directions interleave message by message.
        let mut cut = Peer::new();
        for (d, bytes) in &whole.log {
            let i = usize::from(*d == ToClient);
            for c in bytes.chunks(size) {
                let out = cut.s.segment(*d, Segment::whole(cut.seq[i], c), t0());
                cut.seq[i] = cut.seq[i].wrapping_add(c.len() as u32);
                cut.seen.extend(out.into_iter().map(|s| s.observation));
            }
        }
        cut.finish();
        assert_eq!(cut.seen, whole.seen, "segments of {size}");
    }
}

#[test]
fn compound_create_write_close_uses_the_chain() {
    // CREATE + related WRITE + related CLOSE in one message, as Windows
    // sends small file copies.
    let mut c = create(20, 5, "evil.dll", 0x0013_019F, 2);
    let mut w = write(21, 5, [0xFF; 16], 0, b"MZ");
    let cl = close(22, 5, [0xFF; 16]);
    for m in [&mut c, &mut w] {
        let pad = (8 - m.len() % 8) % 8;
        m.resize(m.len() + pad, 0);
    }
    put32(&mut c, 20, 0); // patched below
    let c_len = c.len() as u32;
    put32(&mut c, 20, c_len);
    let w_len = w.len() as u32;
    put32(&mut w, 20, w_len);
    put32(&mut w, 16, 4); // RELATED
    let mut cl = cl;
    put32(&mut cl, 16, 4);
    let mut m = c;
    m.extend(w);
    m.extend(cl);
    let mut p = Peer::new();
    p.c(tree_connect(2, "\\\\192.0.2.10\\C$"));
    p.s(tree_connect_resp(2, 5, 0, 1));
    p.c(m);
    p.s(create_resp(20, 5, 0, FID2));
    let writes: Vec<_> = p
        .seen
        .iter()
        .filter(|o| {
            matches!(
                o,
                Observation::Write { .. } | Observation::Close { .. } | Observation::Create { .. }
            )
        })
        .collect();
    assert_eq!(
        writes,
        vec![
            &Observation::Write {
                name: Some("evil.dll".into()),
                offset: 0,
                len: 2
            },
            &Observation::Close {
                name: Some("evil.dll".into())
            },
            &Observation::Create {
                name: "evil.dll".into(),
                pipe: false,
                access: 0x0013_019F,
                disposition: 2,
                status: Some(NtStatus::SUCCESS)
            },
        ]
    );
}

#[test]
fn anonymous_guest_and_failed_logons() {
    let mut p = Peer::new();
    p.c(session_setup(1, &build_authenticate("", "", "", 0)));
    p.s(session_setup_resp(1, 0, smb2::SESSION_FLAG_IS_NULL));
    p.c(session_setup(2, &build_authenticate("bob", "WG", "PC", 24)));
    p.s(session_setup_resp(2, 0, smb2::SESSION_FLAG_IS_GUEST));
    p.c(session_setup(3, &build_authenticate("eve", "WG", "PC", 24)));
    p.s(session_setup_resp(3, 0xC000_006D, 0));
    let auths: Vec<_> = p
        .seen
        .iter()
        .filter_map(|o| match o {
            Observation::Auth {
                user,
                anonymous,
                guest,
                status,
                ..
            } => Some((user.as_str(), *anonymous, *guest, status.map(|s| s.0))),
            _ => None,
        })
        .collect();
    assert_eq!(
        auths,
        vec![
            ("", true, false, Some(0)),
            ("bob", false, true, Some(0)),
            ("eve", false, false, Some(0xC000_006D)),
        ]
    );
}

#[test]
fn unanswered_requests_are_reported_with_unknown_status() {
    let mut p = Peer::new();
    p.c(tree_connect(2, "\\\\192.0.2.10\\C$"));
    p.finish();
    assert_eq!(
        p.seen,
        vec![Observation::TreeConnect {
            path: "\\\\192.0.2.10\\C$".into(),
            share_type: None,
            status: None
        }]
    );
}

#[test]
fn encrypted_messages_are_reported_not_parsed() {
    let mut t = vec![0xFD, b'S', b'M', b'B'];
    t.resize(52, 0);
    t[44..52].copy_from_slice(&0x4455u64.to_le_bytes());
    // The ciphertext happens to contain an SMB2 header: it must not be read.
    t.extend(tree_connect(2, "\\\\x\\ADMIN$"));
    let mut p = Peer::new();
    p.c(t.clone());
    p.c(t);
    assert_eq!(p.seen, vec![Observation::Encrypted { session_id: 0x4455 }]);
    assert_eq!(p.s.counters().encrypted, 2);
}

#[test]
fn smb1_negotiate_is_seen() {
    let m = smb1_negotiate(b"\x02NT LM 0.12\0\x02SMB 2.002\0");
    let mut p = Peer::new();
    p.c(m);
    assert_eq!(
        p.seen,
        vec![Observation::Smb1 {
            dialects: vec!["NT LM 0.12".into(), "SMB 2.002".into()]
        }]
    );
}

#[test]
fn the_smb1_upgrade_answer_names_the_dialect() {
    // A client offers SMB1 dialects and "SMB 2.???"; the server answers
    // with an SMB2 NEGOTIATE response (wildcard 0x02FF) that has no SMB2
    // request.
    let m = smb1_negotiate(b"\x02NT LM 0.12\0\x02SMB 2.???\0");
    let mut p = Peer::new();
    p.c(m);
    p.s(negotiate_resp(0, 0x02FF));
    assert_eq!(
        p.seen[1],
        Observation::Negotiate {
            dialect: crate::Dialect(0x02FF)
        }
    );
    assert_eq!(p.seen.len(), 2);
}

#[test]
fn a_thousand_compound_members_cost_a_bounded_walk() {
    let mut m = Vec::new();
    for i in 0..1000u64 {
        let mut h = tree_connect(i, "\\\\x\\y");
        h.resize(h.len().div_ceil(8) * 8, 0);
        if i < 999 {
            let l = h.len() as u32;
            put32(&mut h, 20, l);
        }
        m.extend(h);
    }
    let mut p = Peer::new();
    p.c(m);
    assert_eq!(p.s.counters().limits[Limit::Compound as usize], 1);
    assert_eq!(p.s.counters().messages, smb2::MAX_COMPOUND as u64);
    assert!(p.unseen().contains(&&Unseen::Limit(Limit::Compound)));
}

#[test]
fn tables_are_capped_and_caps_counted() {
    let mut p = Peer::new();
    for i in 0..(MAX_PENDING_REQUESTS as u64 + 50) {
        p.c(tree_connect(i, "\\\\x\\y"));
    }
    assert_eq!(p.s.counters().limits[Limit::PendingRequests as usize], 50);
    // Said once, counted each time.
    assert_eq!(p.unseen().len(), 1);
    let mut p = Peer::new();
    for i in 0..(MAX_FILES as u64 + 10) {
        p.c(create(i, 0, "f", 1, 1));
        let mut fid = [0u8; 16];
        fid[..8].copy_from_slice(&i.to_le_bytes());
        p.s(create_resp(i, 0, 0, fid));
    }
    assert_eq!(p.s.counters().limits[Limit::Files as usize], 10);
}

#[test]
fn hostile_lengths_are_said_not_followed() {
    let mut p = Peer::new();
    // Truncated NTLMSSP: the AUTHENTICATE cut in its field descriptors.
    let auth = build_authenticate("admin", "CORP", "WS", 24);
    p.c(session_setup(1, &auth[..40]));
    // A CREATE whose name lies past the message.
    let mut c = create(2, 0, "x", 1, 1);
    put16(&mut c, 64 + 46, 0xFFFF);
    p.c(c);
    // An RPC PDU claiming 65,535 bytes inside a 60-byte pipe write: the
    // rest is skipped in later writes, not parsed as new PDUs.
    p.c(tree_connect(3, "\\\\x\\IPC$"));
    p.s(tree_connect_resp(3, 1, 0, 2));
    p.c(create(4, 1, "lsarpc", 1, 1));
    p.s(create_resp(4, 1, 0, FID));
    let mut big = rpc_request(0, 3, 3, 36);
    put16(&mut big, 8, 0xFFFF);
    p.c(write(5, 1, FID, 0, &big));
    p.c(write(6, 1, FID, 60, &rpc_request(0, 3, 3, 36)));
    let malformed = p
        .unseen()
        .iter()
        .filter(|u| matches!(u, Unseen::Malformed(_)))
        .count();
    assert_eq!(malformed, 2);
    let calls = p
        .seen
        .iter()
        .filter(|o| matches!(o, Observation::RpcCall { .. }))
        .count();
    assert_eq!(calls, 1, "the second write continues the first PDU");
    // A 1 MiB write of which the sample copied 100 bytes.
    let w = write(7, 1, FID2, 0, &vec![0u8; 1 << 20]);
    let framed = nb(&w);
    let out = p.s.segment(
        ToServer,
        Segment {
            seq: p.seq[0],
            data: &framed[..100],
            wire_len: framed.len() as u32,
        },
        t0(),
    );
    let obs: Vec<_> = out.into_iter().map(|s| s.observation).collect();
    assert!(obs.iter().any(|o| matches!(
        o,
        Observation::Unseen {
            what: Unseen::Stream {
                hole: crate::Hole::SampleCut,
                ..
            }
        }
    )));
    assert!(obs
        .iter()
        .any(|o| matches!(o, Observation::Write { len: 1_048_576, .. })));
}

#[test]
fn every_prefix_of_a_session_is_safe() {
    let mut bytes = Vec::new();
    for m in [
        session_setup(1, &build_authenticate("admin", "CORP", "WS", 24)),
        tree_connect(2, "\\\\x\\IPC$"),
        create(3, 1, "svcctl", 1, 1),
        write(4, 1, FID, 0, &rpc_bind(0, SVCCTL)),
    ] {
        bytes.extend(nb(&m));
    }
    for cut in 0..bytes.len() {
        let mut s = Session::new();
        let _ = s.segment(ToServer, Segment::whole(0, &bytes[..cut]), t0());
        let _ = s.finish(t0());
    }
}

#[test]
fn reordered_first_segments_are_put_back_when_the_start_is_known() {
    let conv = crate::build::psexec();
    let (_, first) = &conv[0];
    let (_, second) = &conv[2];
    let mut bytes = first.clone();
    bytes.extend(second);
    let cut = first.len() + 10;
    let mut s = Session::starting_at(1000, 5000);
    // The later segment arrives first.
    let mut seen = s.segment(
        ToServer,
        Segment::whole(1000 + cut as u32, &bytes[cut..]),
        t0(),
    );
    assert!(seen.is_empty());
    seen.extend(s.segment(ToServer, Segment::whole(1000, &bytes[..cut]), t0()));
    seen.extend(s.finish(t0()));
    assert!(seen
        .iter()
        .any(|o| matches!(&o.observation, Observation::Auth { user, status: None, .. } if user == "admin")));
    assert_eq!(s.stream_counters()[0].reordered, 1);
}

#[test]
fn mutated_conversations_never_panic() {
    // A deterministic mutation run over psexec's wire (CI does not fuzz):
    // flipped bytes, often in length and offset fields, odd segment cuts,
    // gaps and sample cuts.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let conv = crate::build::psexec();
    for _ in 0..2000 {
        let mut s = Session::new();
        let mut seq = [0u32, 0u32];
        for (d, bytes) in &conv {
            let mut b = bytes.clone();
            for _ in 0..rnd(4) {
                let i = rnd(b.len());
                b[i] = match rnd(3) {
                    0 => 0xFF,
                    1 => 0,
                    _ => rnd(256) as u8,
                };
            }
            let i = usize::from(*d == ToClient);
            let mut at = 0;
            while at < b.len() {
                let n = 1 + rnd(b.len() - at);
                let data = &b[at..at + n];
                let (data, wire) = match rnd(20) {
                    0 => (&data[..data.len() / 2], n as u32),
                    1 => {
                        seq[i] = seq[i].wrapping_add(rnd(64) as u32);
                        (data, n as u32)
                    }
                    _ => (data, n as u32),
                };
                let _ = s.segment(
                    *d,
                    Segment {
                        seq: seq[i],
                        data,
                        wire_len: wire,
                    },
                    t0(),
                );
                seq[i] = seq[i].wrapping_add(wire);
                at += n;
            }
        }
        let _ = s.finish(t0());
    }
}

#[test]
fn pipe_transfers_on_unknown_handles_are_said() {
    // An IOCTL on a pipe opened before the sample began.
    let mut p = Peer::new();
    p.c(ioctl(1, 1, FID, &rpc_request(0, 12, 3, 10)));
    assert_eq!(p.unseen(), vec![&Unseen::NoPipe { bytes: 34 }]);
}

#[test]
fn a_transfer_of_many_pdus_is_capped_and_counted() {
    let mut p = Peer::new();
    p.c(tree_connect(1, "\\\\x\\IPC$"));
    p.s(tree_connect_resp(1, 1, 0, 2));
    p.c(create(2, 1, "srvsvc", 1, 1));
    p.s(create_resp(2, 1, 0, FID));
    let mut data = rpc_bind(0, "4b324fc8-1670-01d3-1278-5a47bf6ee188");
    for _ in 0..100 {
        data.extend(rpc_request(0, 15, 3, 0));
    }
    p.c(write(3, 1, FID, 0, &data));
    let calls = p
        .seen
        .iter()
        .filter(|o| {
            matches!(
                o,
                Observation::RpcCall {
                    operation: Some("NetrShareEnum"),
                    ..
                }
            )
        })
        .count();
    assert_eq!(calls, crate::session::MAX_PDUS_PER_TRANSFER - 1);
    assert_eq!(p.s.counters().limits[Limit::RpcItems as usize], 1);
}

#[test]
fn a_rejected_binding_names_no_calls() {
    let mut p = Peer::new();
    p.c(tree_connect(1, "\\\\x\\IPC$"));
    p.s(tree_connect_resp(1, 1, 0, 2));
    p.c(create(2, 1, "svcctl", 1, 1));
    p.s(create_resp(2, 1, 0, FID));
    p.c(write(3, 1, FID, 0, &rpc_bind(0, SVCCTL)));
    p.c(read(4, 1, FID));
    p.s(read_resp(4, 1, &rpc_bind_ack(false)));
    p.c(write(5, 1, FID, 0, &rpc_request(0, 12, 3, 8)));
    assert_eq!(
        p.seen.last(),
        Some(&Observation::RpcCall {
            interface: None,
            unbound: Some(crate::Unbound::Refused),
            opnum: 12,
            operation: None
        })
    );
}

/// Each observation names the share its message was on, and RPC ones the
/// pipe: what tells a write to `ADMIN$` from one to a user's share.
#[test]
fn observations_name_their_share_and_pipe() {
    let mut s = Session::new();
    let mut seq = [100u32, 70_000];
    let mut seen = Vec::new();
    for (d, bytes) in crate::build::psexec() {
        let i = usize::from(d == ToClient);
        seen.extend(s.segment(d, Segment::whole(seq[i], &bytes), t0()));
        seq[i] = seq[i].wrapping_add(bytes.len() as u32);
    }
    let ctx = |pred: &dyn Fn(&Observation) -> bool| {
        let o = seen.iter().find(|o| pred(&o.observation)).expect("seen");
        (o.share.as_deref(), o.pipe.as_deref())
    };
    let admin = Some("\\\\192.0.2.10\\ADMIN$");
    let ipc = Some("\\\\192.0.2.10\\IPC$");
    assert_eq!(
        ctx(&|o| matches!(o, Observation::Create { pipe: false, .. })),
        (admin, None)
    );
    assert_eq!(
        ctx(&|o| matches!(o, Observation::Write { .. })),
        (admin, None)
    );
    assert_eq!(
        ctx(&|o| matches!(o, Observation::Create { pipe: true, .. })),
        (ipc, None)
    );
    assert_eq!(
        ctx(&|o| matches!(o, Observation::RpcCall { opnum: 12, .. })),
        (ipc, Some("svcctl"))
    );
    assert_eq!(
        ctx(&|o| matches!(o, Observation::TreeConnect { .. })),
        (None, None)
    );
}

mod rpc_and_rename;
mod smb1_exploit;
