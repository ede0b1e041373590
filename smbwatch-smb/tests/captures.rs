//! Every SMB capture in `../shared/data/pcap`, run through the parser and
//! checked against what Wireshark's dissector (`tshark`) reports for the
//! same file: the same dialects, shares, files and pipes opened, files written, users,
//! RPC interfaces bound and (interface, opnum) calls, as sets.
//!
//! The captures are not part of the repository: absent, the test says so
//! and passes, except under CI=true where it fails (as tests/replay.rs).

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use smbwatch_smb::{capture, Direction, Observation, Segment, Session};

/// The tshark oracle, shared with the replay test of the kernel's samples
/// (tests/tests/replay_smb.rs).
mod tshark;
use tshark::{oracle, skip, which, Seen};

const PCAP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/pcap");

/// The SMB captures (the shared directory also holds a plain port scan).
const CAPTURES: &[&str] = &[
    "eternalblue-success-unpatched-win7.pcap",
    "otrf_covenant_copy_smb_CreateRequest_2020-09-22145302.cap",
    "otrf_empire_smbexec_dcerpc_smb_svcctl_WORKSTATION5_2020-09-20025716.cap",
    "suricata-verify_smb2-peter.pcap",
];

/// A TCP/445 flow: (client address+port, server address+port).
type FlowKey = (IpAddr, u16, IpAddr, u16);

fn parse(path: &Path) -> Seen {
    let mut sessions: HashMap<FlowKey, Session> = HashMap::new();
    let mut all = Vec::new();
    let mut last = SystemTime::UNIX_EPOCH;
    for t in capture::read(path).expect("read capture") {
        let at = t.at;
        last = at;
        let (key, dir) = if t.dport == 445 {
            ((t.src, t.sport, t.dst, t.dport), Direction::ToServer)
        } else if t.sport == 445 {
            ((t.dst, t.dport, t.src, t.sport), Direction::ToClient)
        } else {
            continue;
        };
        if t.payload.is_empty() {
            continue;
        }
        let s = sessions.entry(key).or_default();
        all.extend(s.segment(dir, Segment::whole(t.seq, &t.payload), at));
    }
    for s in sessions.values_mut() {
        all.extend(s.finish(last + Duration::from_secs(1)));
    }
    let mut seen = Seen::default();
    for o in all {
        match o.observation {
            Observation::Smb1 { .. } => seen.smb1 = true,
            Observation::Exploit { sign } => {
                seen.exploits.insert(sign.name().to_owned());
            }
            Observation::Negotiate { dialect } => {
                seen.dialects.insert(dialect.0);
            }
            Observation::TreeConnect { path, .. } => {
                seen.shares.insert(path);
            }
            Observation::Create { name, .. } => {
                seen.created.insert(name);
            }
            Observation::Write { name: Some(n), .. } => {
                seen.written.insert(n);
            }
            Observation::Auth { user, .. } => {
                seen.users.insert(user);
            }
            Observation::RpcBind { interface } => {
                seen.binds.insert(interface.uuid.to_string());
            }
            Observation::RpcCall {
                interface: Some(i),
                opnum,
                ..
            } => {
                seen.calls.insert((i.uuid.to_string(), opnum));
            }
            _ => {}
        }
    }
    seen
}

#[test]
fn captures_match_wiresharks_dissector() {
    if which("tshark").is_none() {
        skip("tshark not installed (cargo xtask setup installs it)");
        return;
    }
    let mut checked = 0;
    for name in CAPTURES {
        let path = PathBuf::from(PCAP_DIR).join(name);
        if !path.exists() {
            skip(&format!(
                "{} not found (the shared test captures are not part of the repository)",
                path.display()
            ));
            continue;
        }
        let ours = parse(&path);
        let theirs = oracle(&path);
        eprintln!("{name}: {ours:#?}");
        assert_eq!(
            ours, theirs,
            "{name}: parser (left) and tshark (right) differ"
        );
        checked += 1;
    }
    eprintln!("{checked} captures checked against tshark");
}

/// What each capture must show, independent of tshark: the facts of the
/// attacks they record.
#[test]
fn captures_show_the_lateral_moves() {
    let get = |name: &str| {
        let p = PathBuf::from(PCAP_DIR).join(name);
        if p.exists() {
            Some(parse(&p))
        } else {
            skip(&format!("{} not found", p.display()));
            None
        }
    };
    if let Some(s) = get(CAPTURES[2]) {
        assert!(s.users.contains("pgustavo"));
        assert!(s.shares.contains("\\\\WORKSTATION6.theshire.local\\IPC$"));
        assert!(s.created.contains("svcctl"));
        let svcctl = "367abb81-9844-35f1-ad32-98f038001003".to_owned();
        for op in [15, 12, 19, 2] {
            assert!(s.calls.contains(&(svcctl.clone(), op)), "svcctl opnum {op}");
        }
    }
    if let Some(s) = get(CAPTURES[1]) {
        assert!(s.shares.contains("\\\\WORKSTATION6\\C$"));
        assert!(s.written.contains("ProgramData\\GruntHTTP.exe"));
    }
    if let Some(s) = get(CAPTURES[0]) {
        assert!(s.smb1);
        assert!(s.shares.contains("\\\\192.168.198.203\\IPC$"));
    }
}
