//! Builders of SMB2, NTLMSSP and DCE/RPC messages (layouts from MS-SMB2 2.2,
//! C706 12.6 and MS-NLMP 2.2.1.3), for tests, benchmarks and fuzz seeds.

use crate::{
    dcerpc::Uuid,
    ntlmssp::build_authenticate,
    smb2::{self, PROTOCOL_ID},
    Direction::{self, ToClient, ToServer},
};

/// svcctl's interface UUID (MS-SCMR 1.9).
pub const SVCCTL: &str = "367abb81-9844-35f1-ad32-98f038001003";
/// A FileId.
pub const FID: [u8; 16] = [7; 16];
/// Another FileId.
pub const FID2: [u8; 16] = [9; 16];

/// An SMB2 header; `response` sets SERVER_TO_REDIR.
pub fn hdr(cmd: u16, id: u64, response: bool, status: u32, tree: u32) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(&PROTOCOL_ID);
    h[4] = 64;
    h[8..12].copy_from_slice(&status.to_le_bytes());
    h[12..14].copy_from_slice(&cmd.to_le_bytes());
    h[16..20].copy_from_slice(&u32::from(response).to_le_bytes());
    h[24..32].copy_from_slice(&id.to_le_bytes());
    h[36..40].copy_from_slice(&tree.to_le_bytes());
    h[40..48].copy_from_slice(&0x1122u64.to_le_bytes());
    h
}

/// Writes a little-endian u16 at `at`.
pub fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
/// Writes a little-endian u32 at `at`.
pub fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// UTF-16LE bytes of `s`.
pub fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// Header + fixed body of `fixed` bytes + variable part.
pub fn msg(h: Vec<u8>, fixed: usize, set: impl FnOnce(&mut [u8]), var: &[u8]) -> Vec<u8> {
    let mut m = h;
    m.resize(64 + fixed, 0);
    set(&mut m[64..]);
    m.extend_from_slice(var);
    m
}

/// NEGOTIATE response choosing `dialect`.
pub fn negotiate_resp(id: u64, dialect: u16) -> Vec<u8> {
    msg(hdr(0, id, true, 0, 0), 64, |b| put16(b, 4, dialect), &[])
}

/// SESSION_SETUP request carrying security buffer `sec`.
pub fn session_setup(id: u64, sec: &[u8]) -> Vec<u8> {
    msg(
        hdr(1, id, false, 0, 0),
        24,
        |b| {
            put16(b, 12, 88);
            put16(b, 14, sec.len() as u16);
        },
        sec,
    )
}

/// SESSION_SETUP response with `status` and SessionFlags `flags`.
pub fn session_setup_resp(id: u64, status: u32, flags: u16) -> Vec<u8> {
    msg(hdr(1, id, true, status, 0), 8, |b| put16(b, 2, flags), &[])
}

/// TREE_CONNECT request for `path`.
pub fn tree_connect(id: u64, path: &str) -> Vec<u8> {
    let p = utf16(path);
    msg(
        hdr(3, id, false, 0, 0),
        8,
        |b| {
            put16(b, 4, 72);
            put16(b, 6, p.len() as u16);
        },
        &p,
    )
}

/// TREE_CONNECT response giving `tree` of `share_type`.
pub fn tree_connect_resp(id: u64, tree: u32, status: u32, share_type: u8) -> Vec<u8> {
    msg(
        hdr(3, id, true, status, tree),
        16,
        |b| b[2] = share_type,
        &[],
    )
}

/// CREATE request.
pub fn create(id: u64, tree: u32, name: &str, access: u32, disposition: u32) -> Vec<u8> {
    let n = utf16(name);
    msg(
        hdr(5, id, false, 0, tree),
        56,
        |b| {
            put32(b, 24, access);
            put32(b, 36, disposition);
            put16(b, 44, 120);
            put16(b, 46, n.len() as u16);
        },
        &n,
    )
}

/// CREATE response giving `fid`.
pub fn create_resp(id: u64, tree: u32, status: u32, fid: [u8; 16]) -> Vec<u8> {
    msg(
        hdr(5, id, true, status, tree),
        88,
        |b| b[64..80].copy_from_slice(&fid),
        &[],
    )
}

/// WRITE request of `data` at `offset`.
pub fn write(id: u64, tree: u32, fid: [u8; 16], offset: u64, data: &[u8]) -> Vec<u8> {
    msg(
        hdr(9, id, false, 0, tree),
        48,
        |b| {
            put16(b, 2, 112);
            put32(b, 4, data.len() as u32);
            b[8..16].copy_from_slice(&offset.to_le_bytes());
            b[16..32].copy_from_slice(&fid);
        },
        data,
    )
}

/// SET_INFO request renaming `fid` to `to` (FileRenameInformation).
pub fn set_info_rename(id: u64, tree: u32, fid: [u8; 16], to: &str) -> Vec<u8> {
    let n = utf16(to);
    // FILE_RENAME_INFORMATION_TYPE_2: ReplaceIfExists, Reserved(7),
    // RootDirectory(8), FileNameLength(4), FileName.
    let mut buf = vec![0u8; 20];
    buf[16..20].copy_from_slice(&(n.len() as u32).to_le_bytes());
    buf.extend(&n);
    msg(
        hdr(17, id, false, 0, tree),
        32,
        |b| {
            put16(b, 0, 33);
            b[2] = 1; // SMB2_0_INFO_FILE
            b[3] = 10; // FileRenameInformation
            put32(b, 4, buf.len() as u32);
            put16(b, 8, 96);
            b[16..32].copy_from_slice(&fid);
        },
        &buf,
    )
}

/// READ request.
pub fn read(id: u64, tree: u32, fid: [u8; 16]) -> Vec<u8> {
    msg(
        hdr(8, id, false, 0, tree),
        49,
        |b| b[16..32].copy_from_slice(&fid),
        &[],
    )
}

/// READ response carrying `data`.
pub fn read_resp(id: u64, tree: u32, data: &[u8]) -> Vec<u8> {
    msg(
        hdr(8, id, true, 0, tree),
        16,
        |b| {
            b[2] = 80;
            put32(b, 4, data.len() as u32);
        },
        data,
    )
}

/// IOCTL FSCTL_PIPE_TRANSCEIVE request carrying `input`.
pub fn ioctl(id: u64, tree: u32, fid: [u8; 16], input: &[u8]) -> Vec<u8> {
    msg(
        hdr(11, id, false, 0, tree),
        56,
        |b| {
            put32(b, 4, smb2::FSCTL_PIPE_TRANSCEIVE);
            b[8..24].copy_from_slice(&fid);
            put32(b, 24, 120);
            put32(b, 28, input.len() as u32);
        },
        input,
    )
}

/// CLOSE request.
pub fn close(id: u64, tree: u32, fid: [u8; 16]) -> Vec<u8> {
    msg(
        hdr(6, id, false, 0, tree),
        24,
        |b| b[8..24].copy_from_slice(&fid),
        &[],
    )
}

/// DCE/RPC BIND of one context `ctx` to the interface `uuid`.
pub fn rpc_bind(ctx: u16, uuid: &str) -> Vec<u8> {
    let mut p = vec![5, 0, 11, 3, 0x10, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
    p.extend([0xb8, 0x10, 0xb8, 0x10, 0, 0, 0, 0]); // max xmit/recv, assoc
    p.extend([1, 0, 0, 0]); // one context
    p.extend(ctx.to_le_bytes());
    p.extend([1, 0]);
    p.extend(Uuid::from_str_const(uuid).0);
    p.extend([2, 0, 0, 0]); // version
    p.extend([
        0x04, 0x5d, 0x88, 0x8a, 0xeb, 0x1c, 0xc9, 0x11, 0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10, 0x48,
        0x60,
    ]);
    p.extend([2, 0, 0, 0]);
    let n = p.len() as u16;
    put16(&mut p, 8, n);
    p
}

/// DCE/RPC BIND_ACK with one result.
pub fn rpc_bind_ack(accepted: bool) -> Vec<u8> {
    let mut p = vec![5, 0, 12, 3, 0x10, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
    p.extend([0xb8, 0x10, 0xb8, 0x10, 0, 0, 0, 0]);
    p.extend([4, 0]);
    p.extend(b"135\0");
    p.extend([0, 0]); // pad to 4
    p.extend([1, 0, 0, 0]);
    p.extend(if accepted {
        [0u8, 0, 0, 0]
    } else {
        [2, 0, 1, 0]
    });
    p.extend([0u8; 20]);
    let n = p.len() as u16;
    put16(&mut p, 8, n);
    p
}

/// DCE/RPC REQUEST (`flags`: PFC bits) with a `stub`-byte stub.
pub fn rpc_request(ctx: u16, opnum: u16, flags: u8, stub: usize) -> Vec<u8> {
    let mut p = vec![5, 0, 0, flags, 0x10, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0];
    p.extend((stub as u32).to_le_bytes());
    p.extend(ctx.to_le_bytes());
    p.extend(opnum.to_le_bytes());
    p.resize(24 + stub, 0xAB);
    let n = p.len() as u16;
    put16(&mut p, 8, n);
    p
}

/// SMB1 NEGOTIATE request offering `dialects` (each `\x02name\0`).
pub fn smb1_negotiate(dialects: &[u8]) -> Vec<u8> {
    let mut m = vec![0xFF, b'S', b'M', b'B', 0x72];
    m.resize(32, 0);
    m.push(0);
    m.extend((dialects.len() as u16).to_le_bytes());
    m.extend(dialects);
    m
}

/// An SMB1 header for `command` with multiplex id `mid`, then `words`
/// (parameter words) and `data` (the bytes block).
pub fn smb1_message(command: u8, reply: bool, mid: u16, words: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = vec![0xFF, b'S', b'M', b'B', command];
    m.resize(32, 0);
    if reply {
        m[9] = 0x80; // SMB_FLAGS_REPLY
    }
    m[30..32].copy_from_slice(&mid.to_le_bytes());
    m.push((words.len() / 2) as u8);
    m.extend_from_slice(words);
    m.extend((data.len() as u16).to_le_bytes());
    m.extend_from_slice(data);
    m
}

/// A TRANSACTION2 request with one setup word, `subcommand`.
pub fn smb1_trans2(subcommand: u16, mid: u16) -> Vec<u8> {
    let mut w = vec![0u8; 28];
    w[26] = 1; // SetupCount
    w.extend(subcommand.to_le_bytes());
    smb1_message(0x32, false, mid, &w, &[0; 13])
}

/// A TRANSACTION2 error reply (no words, no bytes) with `mid`.
pub fn smb1_trans2_reply(mid: u16) -> Vec<u8> {
    smb1_message(0x32, true, mid, &[], &[])
}

/// An NT_TRANSACT request for `function` announcing `total_data` bytes.
pub fn smb1_nt_transact(function: u16, total_data: u32) -> Vec<u8> {
    let mut w = vec![0u8; 38];
    w[0] = 1; // MaxSetupCount
    w[7..11].copy_from_slice(&total_data.to_le_bytes());
    w[35] = 1; // SetupCount
    w[36..38].copy_from_slice(&function.to_le_bytes());
    w.extend([0, 0]); // Setup[0]
    smb1_message(0xA0, false, 65, &w, &[0; 30])
}

/// A NetBIOS session message around `m`.
pub fn nb(m: &[u8]) -> Vec<u8> {
    let mut v = (m.len() as u32).to_be_bytes().to_vec();
    v[0] = 0;
    v.extend_from_slice(m);
    v
}

/// psexec's wire, framed, in order: log on, drop a binary on ADMIN$, open
/// \\svcctl, bind, and call OpenSCManagerW, CreateServiceW (by IOCTL) and
/// StartServiceW.
pub fn psexec() -> Vec<(Direction, Vec<u8>)> {
    let c = |m: Vec<u8>| (ToServer, nb(&m));
    let s = |m: Vec<u8>| (ToClient, nb(&m));
    vec![
        c(hdr(0, 0, false, 0, 0)),
        s(negotiate_resp(0, 0x0311)),
        c(session_setup(
            1,
            &build_authenticate("admin", "CORP", "ATTACKER", 24),
        )),
        s(session_setup_resp(1, 0, 0)),
        c(tree_connect(2, "\\\\192.0.2.10\\ADMIN$")),
        s(tree_connect_resp(2, 5, 0, 1)),
        c(create(3, 5, "PSEXESVC.exe", 0x0012_0196, 5)),
        s(create_resp(3, 5, 0, FID2)),
        c(write(4, 5, FID2, 0, b"MZ\x90\x00")),
        c(close(5, 5, FID2)),
        c(tree_connect(6, "\\\\192.0.2.10\\IPC$")),
        s(tree_connect_resp(6, 1, 0, 2)),
        c(create(7, 1, "svcctl", 0x0012_019F, 1)),
        s(create_resp(7, 1, 0, FID)),
        c(write(8, 1, FID, 0, &rpc_bind(0, SVCCTL))),
        c(read(9, 1, FID)),
        s(read_resp(9, 1, &rpc_bind_ack(true))),
        c(write(10, 1, FID, 0, &rpc_request(0, 15, 3, 40))),
        c(ioctl(11, 1, FID, &rpc_request(0, 12, 3, 100))),
        c(write(12, 1, FID, 0, &rpc_request(0, 19, 3, 8))),
    ]
}
