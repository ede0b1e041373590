//! What Wireshark's dissector (`tshark`) reports for a capture's SMB, as
//! sets: the oracle of the parser's capture test and of the replay test of
//! the kernel's samples (`tests/tests/replay_smb.rs` includes this file).
#![allow(dead_code)]

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    process::Command,
};

/// Fails under CI=true (a missing input must not pass there), else says
/// what was skipped.
pub fn skip(what: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{what} (CI=true: a missing test input fails the run instead of skipping)");
    }
    eprintln!("SKIP: {what}");
}

/// What one file shows, as sets.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub smb1: bool,
    pub dialects: BTreeSet<u16>,
    pub shares: BTreeSet<String>,
    pub created: BTreeSet<String>,
    pub written: BTreeSet<String>,
    pub users: BTreeSet<String>,
    pub binds: BTreeSet<String>,
    pub calls: BTreeSet<(String, u16)>,
    /// MS17-010 signs (`ExploitSign::name`).
    pub exploits: BTreeSet<String>,
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

/// What tshark reports for the capture at `path`.
pub fn oracle(path: &Path) -> Seen {
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
    seen.exploits = exploits(path);
    seen
}

/// MS17-010's signs: EternalBlue's NT_TRANSACT (no function, more data
/// than 64 KiB), DoublePulsar's TRANS2_SESSION_SETUP and its implant's
/// answer (the request's multiplex id plus 16, in the same TCP stream).
fn exploits(path: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let nt =
        "smb.cmd == 0xa0 && smb.flags.response == 0 && smb.nt.function == 0 && smb.tdc > 65535";
    if !tshark(path, nt, &["frame.number"]).is_empty() {
        out.insert("eternalblue".to_owned());
    }
    let mut probes: Vec<(String, u16)> = Vec::new();
    let fields = [
        "tcp.stream",
        "smb.flags.response",
        "smb.mid",
        "smb.trans2.cmd",
    ];
    for r in tshark(path, "smb.cmd == 0x32", &fields) {
        let [stream, resp, mid, sub] = &r[..] else {
            panic!("tshark fields: {r:?}");
        };
        let mid: u16 = mid.parse().expect("mid");
        if resp == "0" || resp == "False" {
            if sub == "0x000e" {
                out.insert("doublepulsar_command".to_owned());
                probes.push((stream.clone(), mid));
            }
        } else if probes.contains(&(stream.clone(), mid.wrapping_sub(16))) {
            out.insert("doublepulsar_answer".to_owned());
        }
    }
    out
}

/// The tool's path on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}
