//! Every SMB capture in `../shared/data/pcap`, run through the parser and
//! checked against what Wireshark's dissector (`tshark`) reports for the
//! same file: the same dialects, shares, files and pipes opened, files written, users,
//! RPC interfaces bound and (interface, opnum) calls, as sets.
//!
//! The captures are not part of the repository: absent, the test says so
//! and passes, except under CI=true where it fails (as tests/replay.rs).

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use smbwatch_smb::{capture, Direction, Observation, Segment, Session};

const PCAP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/pcap");

/// The SMB captures (the shared directory also holds a plain port scan).
const CAPTURES: &[&str] = &[
    "eternalblue-success-unpatched-win7.pcap",
    "otrf_covenant_copy_smb_CreateRequest_2020-09-22145302.cap",
    "otrf_empire_smbexec_dcerpc_smb_svcctl_WORKSTATION5_2020-09-20025716.cap",
    "suricata-verify_smb2-peter.pcap",
];

fn skip(what: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{what} (CI=true: a missing test input fails the run instead of skipping)");
    }
    eprintln!("SKIP: {what}");
}

/// What one file shows, as sets.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    smb1: bool,
    dialects: BTreeSet<u16>,
    shares: BTreeSet<String>,
    created: BTreeSet<String>,
    written: BTreeSet<String>,
    users: BTreeSet<String>,
    binds: BTreeSet<String>,
    calls: BTreeSet<(String, u16)>,
}

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

/// Runs tshark with a display filter; one Vec of fields per packet.
fn tshark(path: &Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    // Two passes: the FileId-to-name link on a WRITE is a generated field.
    cmd.args(["-n", "-2"])
        .arg("-r")
        .arg(path)
        .args(["-Y", &format!("tcp.port == 445 && ({filter})")])
        .args(["-T", "fields", "-E", "separator=\t", "-E", "aggregator=,"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    assert!(
        out.status.success(),
        "tshark failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

fn split(field: &str) -> impl Iterator<Item = String> + '_ {
    field
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// tshark prints an empty NTLMSSP string as "NULL".
fn user(s: &str) -> String {
    if s == "NULL" {
        String::new()
    } else {
        s.to_owned()
    }
}

fn oracle(path: &Path) -> Seen {
    let mut seen = Seen {
        smb1: !tshark(
            path,
            "smb.cmd == 0x72 && smb.flags.response == 0",
            &["frame.number"],
        )
        .is_empty(),
        ..Seen::default()
    };
    for r in tshark(
        path,
        "smb2.cmd == 0 && smb2.flags.response == 1 && smb2.nt_status == 0",
        &["smb2.dialect"],
    ) {
        let d = r[0].trim_start_matches("0x");
        seen.dialects
            .insert(u16::from_str_radix(d, 16).expect("dialect"));
    }
    for r in tshark(
        path,
        "(smb2.cmd == 3 && smb2.flags.response == 0) || (smb.cmd == 0x75 && smb.flags.response == 0)",
        &["smb2.tree", "smb.path"],
    ) {
        seen.shares.extend(r.iter().flat_map(|f| split(f)));
    }
    // tshark names a WRITE's file only in a field without a name, so the
    // FileId is joined here: request (stream, MessageId) -> name, response
    // (stream, MessageId) -> FileId.
    let mut asked: HashMap<(String, String), String> = HashMap::new();
    let mut names: HashMap<(String, String), String> = HashMap::new();
    for r in tshark(
        path,
        "smb2.cmd == 5",
        &[
            "tcp.stream",
            "smb2.msg_id",
            "smb2.flags.response",
            "smb2.filename",
            "smb2.fid",
        ],
    ) {
        let [stream, id, resp, name, fid] = &r[..] else {
            panic!("tshark fields: {r:?}");
        };
        if resp == "0" || resp == "False" {
            seen.created.insert(name.clone());
            asked.insert((stream.clone(), id.clone()), name.clone());
        } else if let Some(n) = asked.get(&(stream.clone(), id.clone())) {
            names.insert((stream.clone(), fid.clone()), n.clone());
        }
    }
    for r in tshark(
        path,
        "smb2.cmd == 9 && smb2.flags.response == 0 && !dcerpc",
        &["tcp.stream", "smb2.fid"],
    ) {
        if let Some(n) = names.get(&(r[0].clone(), r[1].clone())) {
            seen.written.insert(n.clone());
        }
    }
    for r in tshark(path, "ntlmssp.messagetype == 3", &["ntlmssp.auth.username"]) {
        seen.users.insert(user(&r[0]));
    }
    // Calls carry a context id; its interface is the one the same TCP
    // stream's latest BIND gave that id.
    let mut ctx: HashMap<(String, String), String> = HashMap::new();
    for r in tshark(
        path,
        "dcerpc.pkt_type == 11 || dcerpc.pkt_type == 14 || dcerpc.pkt_type == 0",
        &[
            "tcp.stream",
            "dcerpc.pkt_type",
            "dcerpc.cn_ctx_id",
            "dcerpc.cn_bind_to_uuid",
            "dcerpc.opnum",
        ],
    ) {
        let [stream, ptype, ids, uuids, opnums] = &r[..] else {
            panic!("tshark fields: {r:?}");
        };
        if ptype == "0" {
            for (id, op) in split(ids).zip(split(opnums)) {
                if let Some(u) = ctx.get(&(stream.clone(), id)) {
                    seen.calls.insert((u.clone(), op.parse().expect("opnum")));
                }
            }
        } else {
            for (id, u) in split(ids).zip(split(uuids)) {
                seen.binds.insert(u.clone());
                ctx.insert((stream.clone(), id), u);
            }
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

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}
