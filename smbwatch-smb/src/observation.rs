//! What a session yields: typed observations, each with the caller's time
//! and the direction of the message that revealed it.

use std::time::SystemTime;

use crate::{
    dcerpc::Interface,
    smb2::{Command, NtStatus, ShareType},
    stream::Hole,
    wire::ParseError,
};

/// Which way a segment travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server (towards port 445).
    ToServer,
    /// Server to client.
    ToClient,
}

/// An SMB2 dialect revision (MS-SMB2 2.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dialect(pub u16);

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0x0202 => f.write_str("2.0.2"),
            0x0210 => f.write_str("2.1"),
            0x0300 => f.write_str("3.0"),
            0x0302 => f.write_str("3.0.2"),
            0x0311 => f.write_str("3.1.1"),
            0x02FF => f.write_str("2.???"),
            v => write!(f, "{v:#06x}"),
        }
    }
}

/// A table or list whose cap was hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Limit {
    /// Requests waiting for a response.
    PendingRequests,
    /// Trees (share connections).
    Trees,
    /// Open files and pipes.
    Files,
    /// RPC contexts on a pipe.
    PipeContexts,
    /// Members of one compound message.
    Compound,
    /// DCE/RPC PDUs in one pipe transfer, or context items in one BIND.
    RpcItems,
}

impl Limit {
    /// How many limits there are.
    pub const COUNT: usize = 6;
}

/// What could not be seen or understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unseen {
    /// Stream bytes not seen (gap, sample cut, sample end, resync).
    Stream {
        /// Why.
        hole: Hole,
        /// How many bytes.
        bytes: u64,
    },
    /// A message or field that did not parse (often one cut by a hole).
    Malformed(ParseError),
    /// A session message that is no SMB (another protocol on the port).
    NotSmb {
        /// Its declared length.
        len: u32,
    },
    /// An SMB3 compressed message (its content is not decompressed).
    Compressed,
    /// A response whose request was not seen.
    NoRequest {
        /// The command.
        command: Command,
    },
    /// A pipe transfer whose remaining RPC bytes were not seen.
    RpcCut {
        /// Bytes not seen.
        bytes: u64,
    },
    /// Pipe bytes on a handle whose CREATE answer was not seen (opened
    /// before what was seen): its RPC bindings are unknown.
    NoPipe {
        /// Bytes of the transfer.
        bytes: u64,
    },
    /// A cap was hit (said once per table and session; counted always).
    Limit(Limit),
}

/// Why an RPC call's interface is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unbound {
    /// No BIND of its context was seen on the pipe: it fell in a hole of
    /// the stream, or before what was seen.
    NotSeen,
    /// The server refused the context's BIND (BIND_ACK result or
    /// BIND_NAK): the call names nothing the server accepted.
    Refused,
    /// The context was bound while the pipe's table was full
    /// ([`crate::session::MAX_PIPE_CONTEXTS`]).
    Capped,
}

impl Unbound {
    /// The snake_case name event lines carry (`rpc.unbound`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::NotSeen => "bind_not_seen",
            Self::Refused => "bind_refused",
            Self::Capped => "contexts_full",
        }
    }
}

/// A sign, on an SMB1 connection, of MS17-010's exploits (EternalBlue and
/// its kin) or of the DoublePulsar implant they install. Each is a message
/// no legitimate client or server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExploitSign {
    /// A TRANS2_SESSION_SETUP request. The subcommand is reserved and
    /// unimplemented in every Windows server; DoublePulsar's ping, run and
    /// kill commands use it.
    DoublePulsarCommand,
    /// A TRANS2 reply whose multiplex id is a TRANS2_SESSION_SETUP
    /// request's plus 16: the implant answered, the server is compromised
    /// (an uninfected server answers with the request's own id).
    DoublePulsarAnswer,
    /// An NT_TRANSACT request with no function (0) announcing more than
    /// 65,535 bytes of data: EternalBlue's oversized FEA list, which a
    /// TRANSACTION2 could not have carried.
    EternalBlue,
}

impl ExploitSign {
    /// The snake_case name event lines carry (`smb.exploit`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::DoublePulsarCommand => "doublepulsar_command",
            Self::DoublePulsarAnswer => "doublepulsar_answer",
            Self::EternalBlue => "eternalblue",
        }
    }
}

/// A typed observation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// An SMB1 NEGOTIATE: the client speaks SMB1 and offers these dialects
    /// (a modern client also offers "SMB 2.???" to upgrade; the server's
    /// [`Observation::Negotiate`] then follows).
    Smb1 {
        /// Dialect strings offered.
        dialects: Vec<String>,
    },
    /// A sign of an MS17-010 exploit or its implant (SMB1).
    Exploit {
        /// Which.
        sign: ExploitSign,
    },
    /// The SMB2/3 dialect the server chose.
    Negotiate {
        /// The dialect.
        dialect: Dialect,
    },
    /// An NTLMSSP authentication (the AUTHENTICATE message and the session
    /// setup's answer).
    Auth {
        /// UserName.
        user: String,
        /// DomainName.
        domain: String,
        /// Workstation.
        workstation: String,
        /// Anonymous (null session).
        anonymous: bool,
        /// The server let the client in as guest.
        guest: bool,
        /// The session setup's status, `None` if its answer was not seen.
        status: Option<NtStatus>,
    },
    /// A tree connect (SMB2, or SMB1 TREE_CONNECT_ANDX whose answer is not
    /// followed).
    TreeConnect {
        /// `\\server\share`.
        path: String,
        /// The share type, when the answer succeeded.
        share_type: Option<ShareType>,
        /// The answer's status, `None` if not seen.
        status: Option<NtStatus>,
    },
    /// A CREATE of a file or named pipe.
    Create {
        /// The name relative to the share.
        name: String,
        /// Opened on a pipe share (IPC$).
        pipe: bool,
        /// DesiredAccess.
        access: u32,
        /// CreateDisposition.
        disposition: u32,
        /// The answer's status, `None` if not seen.
        status: Option<NtStatus>,
    },
    /// A WRITE to a file (pipe writes are read as RPC instead).
    Write {
        /// The file's name, `None` if it was opened before what was seen.
        name: Option<String>,
        /// Offset in the file.
        offset: u64,
        /// Bytes written.
        len: u32,
    },
    /// A SET_INFO renaming a file (FileRenameInformation).
    Rename {
        /// The file's name before, `None` if it was opened before what
        /// was seen.
        name: Option<String>,
        /// Its new name, relative to the share.
        to: String,
    },
    /// A CLOSE.
    Close {
        /// The file's name, `None` if it was opened before what was seen.
        name: Option<String>,
    },
    /// A DCE/RPC BIND (or ALTER_CONTEXT) on a named pipe.
    RpcBind {
        /// The interface.
        interface: Interface,
    },
    /// A DCE/RPC REQUEST on a named pipe.
    RpcCall {
        /// The interface, `None` if its BIND was not seen.
        interface: Option<Interface>,
        /// Why `interface` is `None` (never guessed from the pipe's name).
        unbound: Option<Unbound>,
        /// The operation number.
        opnum: u16,
        /// The operation's name when known.
        operation: Option<&'static str>,
    },
    /// SMB3 encryption: nothing more is seen of this session's messages.
    Encrypted {
        /// The SMB session id whose key encrypts them.
        session_id: u64,
    },
    /// Something was not seen or not understood.
    Unseen {
        /// What.
        what: Unseen,
    },
}

/// An observation with its time and direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The time the caller gave for the segment that completed it.
    pub at: SystemTime,
    /// The direction of that segment.
    pub direction: Direction,
    /// What was seen.
    pub observation: Observation,
    /// The share (`\\server\share`) of the tree the message was on, when
    /// its TREE_CONNECT was seen: set on CREATE, WRITE, CLOSE and the RPC
    /// observations (the share a file was written to, `IPC$` of a pipe).
    pub share: Option<String>,
    /// The named pipe of an RPC observation (`svcctl`), as opened.
    pub pipe: Option<String>,
}
