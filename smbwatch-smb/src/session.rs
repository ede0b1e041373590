//! One SMB connection, both directions: the stream reassemblers, the
//! requests waiting for their responses, and the tables that name what a
//! later message refers to (a TreeId's share, a FileId's file or pipe, a
//! pipe's RPC bindings). Every table is capped; a cap hit is counted and
//! reported once per table as [`Unseen::Limit`].

use std::{collections::HashMap, time::SystemTime};

use crate::{
    dcerpc::Interface,
    ntlmssp::{self, Authenticate, Ntlmssp},
    observation::{Dialect, Direction, Limit, Observation, Seen, Unseen},
    smb1,
    smb2::{self, Command, FileId, Header, NtStatus, ShareType},
    stream::{Message, Segment, Stream, StreamEvent},
};

mod rpc;
mod set_info;
mod smb1_messages;

/// Requests waiting for a response.
pub const MAX_PENDING_REQUESTS: usize = 128;
/// Trees (share connections) remembered.
pub const MAX_TREES: usize = 64;
/// Open files and pipes remembered.
pub const MAX_FILES: usize = 256;
/// RPC presentation contexts remembered per pipe.
pub const MAX_PIPE_CONTEXTS: usize = 16;
/// DCE/RPC PDUs read from one pipe write or read.
pub const MAX_PDUS_PER_TRANSFER: usize = 32;
/// TRANS2_SESSION_SETUP requests remembered for their answers.
pub const MAX_TRANS2_PROBES: usize = 8;

/// Counters of a session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCounters {
    /// SMB messages parsed (compound members counted one by one).
    pub messages: u64,
    /// Messages that were SMB3-encrypted.
    pub encrypted: u64,
    /// Messages or fields that could not be parsed.
    pub malformed: u64,
    /// Times each cap was hit, in [`Limit`] order.
    pub limits: [u64; Limit::COUNT],
}

#[derive(Debug)]
enum Pending {
    SessionSetup(Option<Authenticate>),
    TreeConnect(String),
    /// The request, whether on a pipe share, and the tree's share path.
    Create(smb2::CreateRequest, bool, Option<String>),
    Read(FileId),
    Ioctl(FileId),
}

#[derive(Debug)]
struct Tree {
    pipe: bool,
    /// `\\server\share`, when its TREE_CONNECT request was seen.
    path: Option<String>,
}

#[derive(Debug, Default)]
struct File {
    name: String,
    pipe: bool,
    /// (context id, interface) bound on this pipe.
    contexts: Vec<(u16, Interface)>,
    /// Context ids of the last BIND, in order, for its BIND_ACK.
    last_bind: Vec<u16>,
    /// Contexts bound but not usable, and why (at most
    /// [`MAX_PIPE_CONTEXTS`]): what a call through one says.
    lost: Vec<(u16, crate::observation::Unbound)>,
    /// Bytes of a PDU still to come in later writes / reads.
    skip_to_server: u32,
    skip_to_client: u32,
}

/// One SMB connection.
#[derive(Debug, Default)]
pub struct Session {
    to_server: Stream,
    to_client: Stream,
    pending: HashMap<u64, Pending>,
    trees: HashMap<u32, Tree>,
    files: HashMap<FileId, File>,
    encrypted_sessions: Vec<u64>,
    /// Multiplex ids of TRANS2_SESSION_SETUP requests not yet answered
    /// (the oldest dropped past [`MAX_TRANS2_PROBES`]).
    trans2_probes: Vec<u16>,
    counters: SessionCounters,
    limits_said: [bool; Limit::COUNT],
}

/// Where one parse step writes.
struct Out<'a> {
    at: SystemTime,
    direction: Direction,
    seen: &'a mut Vec<Seen>,
    /// The share of the message being parsed, when known.
    share: Option<String>,
    /// The pipe of the RPC transfer being parsed.
    pipe: Option<String>,
}

impl<'a> Out<'a> {
    fn new(at: SystemTime, direction: Direction, seen: &'a mut Vec<Seen>) -> Self {
        Self {
            at,
            direction,
            seen,
            share: None,
            pipe: None,
        }
    }

    fn push(&mut self, observation: Observation) {
        self.seen.push(Seen {
            at: self.at,
            direction: self.direction,
            observation,
            share: self.share.clone(),
            pipe: self.pipe.clone(),
        });
    }
}

const ALL_FF: FileId = [0xFF; 16];

impl Session {
    /// A session whose streams start at their first segments.
    pub fn new() -> Self {
        Self::default()
    }

    /// A session whose first payload bytes have these sequence numbers
    /// (each side's SYN sequence number plus one), so a lost first segment
    /// is a gap and not a silent start further on.
    pub fn starting_at(to_server: u32, to_client: u32) -> Self {
        Self {
            to_server: Stream::starting_at(to_server),
            to_client: Stream::starting_at(to_client),
            ..Self::default()
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> SessionCounters {
        self.counters
    }

    /// Heap bytes held by the session (streams and tables), an estimate
    /// from capacities: what a caller keeping many sessions bounds. At
    /// most a few hundred KiB whatever the peers send (see the caps).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        // A hash map slot: key, value and a control byte.
        let pending: usize = self
            .pending
            .values()
            .map(|p| match p {
                Pending::SessionSetup(Some(a)) => {
                    a.user.capacity() + a.domain.capacity() + a.workstation.capacity()
                }
                Pending::TreeConnect(path) => path.capacity(),
                Pending::Create(c, _, share) => {
                    c.name.capacity() + share.as_ref().map_or(0, String::capacity)
                }
                _ => 0,
            })
            .sum::<usize>()
            + self.pending.capacity() * (size_of::<(u64, Pending)>() + 1);
        let trees: usize = self
            .trees
            .values()
            .map(|t| t.path.as_ref().map_or(0, String::capacity))
            .sum::<usize>()
            + self.trees.capacity() * (size_of::<(u32, Tree)>() + 1);
        let files: usize = self
            .files
            .values()
            .map(|f| {
                f.name.capacity()
                    + f.contexts.capacity() * size_of::<(u16, Interface)>()
                    + f.last_bind.capacity() * 2
                    + f.lost.capacity() * size_of::<(u16, crate::observation::Unbound)>()
            })
            .sum::<usize>()
            + self.files.capacity() * (size_of::<(FileId, File)>() + 1);
        self.to_server.heap_bytes()
            + self.to_client.heap_bytes()
            + pending
            + trees
            + files
            + self.encrypted_sessions.capacity() * 8
    }

    /// The streams' counters (to server, to client).
    pub fn stream_counters(&self) -> [crate::stream::StreamCounters; 2] {
        [self.to_server.counters(), self.to_client.counters()]
    }

    /// Feeds one TCP payload segment seen at `at`; returns what it revealed.
    pub fn segment(&mut self, direction: Direction, seg: Segment<'_>, at: SystemTime) -> Vec<Seen> {
        let mut events = Vec::new();
        match direction {
            Direction::ToServer => self.to_server.push(seg, &mut events),
            Direction::ToClient => self.to_client.push(seg, &mut events),
        }
        self.handle(direction, events, at)
    }

    /// Declares that nothing more will be seen (the sample or capture
    /// ended): cut messages are parsed as far as they go, and requests
    /// without a response are reported with an unknown status.
    pub fn finish(&mut self, at: SystemTime) -> Vec<Seen> {
        let mut seen = Vec::new();
        for direction in [Direction::ToServer, Direction::ToClient] {
            let mut events = Vec::new();
            match direction {
                Direction::ToServer => self.to_server.finish(&mut events),
                Direction::ToClient => self.to_client.finish(&mut events),
            }
            seen.extend(self.handle(direction, events, at));
        }
        let mut out = Out::new(at, Direction::ToServer, &mut seen);
        let mut pending: Vec<_> = self.pending.drain().collect();
        pending.sort_by_key(|(id, _)| *id);
        for (_, p) in pending {
            match p {
                Pending::SessionSetup(Some(a)) => out.push(auth(a, 0, None)),
                Pending::TreeConnect(path) => out.push(Observation::TreeConnect {
                    path,
                    share_type: None,
                    status: None,
                }),
                Pending::Create(c, pipe, share) => {
                    out.share = share;
                    out.push(Observation::Create {
                        name: c.name,
                        pipe,
                        access: c.access,
                        disposition: c.disposition,
                        status: None,
                    });
                    out.share = None;
                }
                _ => {}
            }
        }
        seen
    }

    fn handle(
        &mut self,
        direction: Direction,
        events: Vec<StreamEvent>,
        at: SystemTime,
    ) -> Vec<Seen> {
        let mut seen = Vec::new();
        let mut out = Out::new(at, direction, &mut seen);
        for ev in events {
            match ev {
                StreamEvent::Unseen { hole, bytes } => out.push(Observation::Unseen {
                    what: Unseen::Stream { hole, bytes },
                }),
                StreamEvent::Message(m) => self.message(&m, &mut out),
            }
        }
        seen
    }

    fn message(&mut self, m: &Message, out: &mut Out<'_>) {
        let b = &m.bytes;
        match b.get(..4) {
            Some(id) if id == smb2::PROTOCOL_ID => self.smb2(b, out),
            Some(id) if id == smb2::TRANSFORM_ID => {
                self.counters.encrypted += 1;
                match smb2::transform_session(b) {
                    Ok(sid) if !self.encrypted_sessions.contains(&sid) => {
                        if self.encrypted_sessions.len() < MAX_TREES {
                            self.encrypted_sessions.push(sid);
                        }
                        out.push(Observation::Encrypted { session_id: sid });
                    }
                    Ok(_) => {}
                    Err(e) => self.malformed(e, out),
                }
            }
            Some(id) if id == smb2::COMPRESSION_ID => out.push(Observation::Unseen {
                what: Unseen::Compressed,
            }),
            Some(id) if id == smb1::PROTOCOL_ID => self.smb1(b, out),
            _ => out.push(Observation::Unseen {
                what: Unseen::NotSmb { len: m.declared },
            }),
        }
    }

    fn malformed(&mut self, e: crate::wire::ParseError, out: &mut Out<'_>) {
        self.counters.malformed += 1;
        out.push(Observation::Unseen {
            what: Unseen::Malformed(e),
        });
    }

    /// Counts a cap hit; says it the first time per table.
    fn limit(&mut self, l: Limit, out: &mut Out<'_>) {
        self.counters.limits[l as usize] += 1;
        if !std::mem::replace(&mut self.limits_said[l as usize], true) {
            out.push(Observation::Unseen {
                what: Unseen::Limit(l),
            });
        }
    }

    fn smb2(&mut self, msg: &[u8], out: &mut Out<'_>) {
        let (members, more) = smb2::compound(msg);
        // The previous member's file and tree, for related operations.
        let mut chain_file: Option<(FileId, Option<(String, bool)>)> = None;
        let mut chain_tree: Option<u32> = None;
        for member in members {
            let (h, m) = match member {
                Ok(x) => x,
                Err(e) => {
                    self.malformed(e, out);
                    continue;
                }
            };
            self.counters.messages += 1;
            let tree = match (h.related, h.tree_id) {
                (true, Some(0xFFFF_FFFF)) | (true, None) => chain_tree,
                (_, t) => t,
            };
            chain_tree = tree;
            out.share = tree
                .and_then(|t| self.trees.get(&t))
                .and_then(|t| t.path.clone());
            let r = if h.response {
                self.response(&h, m, out)
            } else {
                self.request(&h, m, tree, &mut chain_file, out)
            };
            if let Err(e) = r {
                self.malformed(e, out);
            }
            out.share = None;
        }
        if more {
            self.limit(Limit::Compound, out);
        }
    }

    fn remember(&mut self, id: u64, p: Pending, out: &mut Out<'_>) {
        if self.pending.len() >= MAX_PENDING_REQUESTS && !self.pending.contains_key(&id) {
            self.limit(Limit::PendingRequests, out);
            return;
        }
        self.pending.insert(id, p);
    }

    /// The file a request names; a related request's all-ones FileId means
    /// the previous member's.
    fn file_name(
        &self,
        h: &Header,
        id: FileId,
        chain: &Option<(FileId, Option<(String, bool)>)>,
    ) -> Option<(String, bool)> {
        if h.related && id == ALL_FF {
            return chain.as_ref().and_then(|(_, n)| n.clone());
        }
        self.files.get(&id).map(|f| (f.name.clone(), f.pipe))
    }

    fn request(
        &mut self,
        h: &Header,
        m: &[u8],
        tree: Option<u32>,
        chain: &mut Option<(FileId, Option<(String, bool)>)>,
        out: &mut Out<'_>,
    ) -> Result<(), crate::wire::ParseError> {
        match h.command {
            Command::SessionSetup => {
                let sec = smb2::session_setup_request(m)?;
                let a = match ntlmssp::parse(sec)? {
                    Some(Ntlmssp::Authenticate(a)) => Some(a),
                    _ => None,
                };
                self.remember(h.message_id, Pending::SessionSetup(a), out);
            }
            Command::TreeConnect => {
                let path = smb2::tree_connect_request(m)?;
                self.remember(h.message_id, Pending::TreeConnect(path), out);
            }
            Command::Create => {
                let c = smb2::create_request(m)?;
                let pipe = tree
                    .and_then(|t| self.trees.get(&t))
                    .is_some_and(|t| t.pipe);
                *chain = Some((ALL_FF, Some((c.name.clone(), pipe))));
                let share = out.share.clone();
                self.remember(h.message_id, Pending::Create(c, pipe, share), out);
            }
            Command::Write => {
                let w = smb2::write_request(m)?;
                let name = self.file_name(h, w.file, chain);
                let fid = if h.related && w.file == ALL_FF {
                    chain.as_ref().map_or(w.file, |(f, _)| *f)
                } else {
                    w.file
                };
                match name {
                    Some((_, true)) => self.rpc(fid, w.data, w.len, Direction::ToServer, out),
                    other => out.push(Observation::Write {
                        name: other.map(|(n, _)| n),
                        offset: w.offset,
                        len: w.len,
                    }),
                }
            }
            Command::Read => {
                let f = smb2::read_request(m)?;
                self.remember(h.message_id, Pending::Read(f), out);
            }
            Command::Ioctl => {
                let (code, f, input) = smb2::ioctl_request(m)?;
                if code == smb2::FSCTL_PIPE_TRANSCEIVE {
                    self.rpc(f, input, len32(input), Direction::ToServer, out);
                    self.remember(h.message_id, Pending::Ioctl(f), out);
                }
            }
            Command::Close => {
                let f = smb2::close_request(m)?;
                let name = self.file_name(h, f, chain);
                if !(h.related && f == ALL_FF) {
                    self.files.remove(&f);
                }
                out.push(Observation::Close {
                    name: name.map(|(n, _)| n),
                });
            }
            Command::SetInfo => self.set_info(h, m, chain, out)?,
            Command::TreeDisconnect => {
                if let Some(t) = tree {
                    self.trees.remove(&t);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn response(
        &mut self,
        h: &Header,
        m: &[u8],
        out: &mut Out<'_>,
    ) -> Result<(), crate::wire::ParseError> {
        if h.status == NtStatus::PENDING && h.is_async {
            // An interim answer: the final one follows.
            return Ok(());
        }
        let ok = h.status == NtStatus::SUCCESS;
        if h.command == Command::Negotiate {
            // The answer names the dialect by itself; it also answers an
            // SMB1 NEGOTIATE (the upgrade to SMB2), which has no SMB2 request.
            if ok {
                out.push(Observation::Negotiate {
                    dialect: Dialect(smb2::negotiate_response(m)?),
                });
            }
            return Ok(());
        }
        let Some(p) = self.pending.remove(&h.message_id) else {
            if h.command == Command::TreeConnect && ok {
                // The path was not seen, but the tree's kind still tells
                // later CREATEs whether they open pipes.
                let st = smb2::tree_connect_response(m)?;
                self.add_tree(h.tree_id, st, None, out);
            }
            if matches!(
                h.command,
                Command::SessionSetup | Command::TreeConnect | Command::Create
            ) {
                out.push(Observation::Unseen {
                    what: Unseen::NoRequest { command: h.command },
                });
            }
            return Ok(());
        };
        match p {
            Pending::SessionSetup(a) => {
                if h.status == NtStatus::MORE_PROCESSING_REQUIRED {
                    return Ok(());
                }
                let flags = if ok {
                    smb2::session_setup_response(m)?.0
                } else {
                    0
                };
                if let Some(a) = a {
                    out.push(auth(a, flags, Some(h.status)));
                }
            }
            Pending::TreeConnect(path) => {
                let share_type = if ok {
                    Some(smb2::tree_connect_response(m)?)
                } else {
                    None
                };
                if let Some(st) = share_type {
                    self.add_tree(h.tree_id, st, Some(path.clone()), out);
                }
                out.push(Observation::TreeConnect {
                    path,
                    share_type,
                    status: Some(h.status),
                });
            }
            Pending::Create(c, pipe, share) => {
                // An async answer names no tree: the request's share.
                out.share = share;
                if ok {
                    let fid = smb2::create_response(m)?;
                    if self.files.len() >= MAX_FILES && !self.files.contains_key(&fid) {
                        self.limit(Limit::Files, out);
                    } else {
                        self.files.insert(
                            fid,
                            File {
                                name: c.name.clone(),
                                pipe,
                                ..File::default()
                            },
                        );
                    }
                }
                out.push(Observation::Create {
                    name: c.name,
                    pipe,
                    access: c.access,
                    disposition: c.disposition,
                    status: Some(h.status),
                });
            }
            Pending::Read(f)
                if (ok || h.status == NtStatus::BUFFER_OVERFLOW)
                    && self.files.get(&f).is_some_and(|f| f.pipe) =>
            {
                let data = smb2::read_response(m)?;
                self.rpc(f, data, len32(data), Direction::ToClient, out);
            }
            Pending::Ioctl(f) if ok || h.status == NtStatus::BUFFER_OVERFLOW => {
                let (_, _, data) = smb2::ioctl_response(m)?;
                let len = len32(data);
                self.rpc(f, data, len, Direction::ToClient, out);
            }
            _ => {}
        }
        Ok(())
    }

    fn add_tree(
        &mut self,
        tree: Option<u32>,
        st: ShareType,
        path: Option<String>,
        out: &mut Out<'_>,
    ) {
        let Some(t) = tree else { return };
        if self.trees.len() >= MAX_TREES && !self.trees.contains_key(&t) {
            self.limit(Limit::Trees, out);
        } else {
            let pipe = st == ShareType::Pipe;
            self.trees.insert(t, Tree { pipe, path });
        }
    }
}

/// A slice's length as a u32 (messages are kept to 16 KiB).
fn len32(b: &[u8]) -> u32 {
    u32::try_from(b.len()).unwrap_or(u32::MAX)
}

fn auth(a: Authenticate, flags: u16, status: Option<NtStatus>) -> Observation {
    Observation::Auth {
        anonymous: a.anonymous || flags & smb2::SESSION_FLAG_IS_NULL != 0,
        guest: flags & smb2::SESSION_FLAG_IS_GUEST != 0,
        user: a.user,
        domain: a.domain,
        workstation: a.workstation,
        status,
    }
}
