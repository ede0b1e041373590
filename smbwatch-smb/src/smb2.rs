//! SMB2/3 messages (MS-SMB2 2.2): the 64-byte header, compound chains, and
//! the bodies of the commands the session follows. Offsets inside a body
//! are from the start of the SMB2 header, as the specification defines them.

use crate::wire::{utf16, Bytes, ParseError};

/// Size of the SMB2 header (MS-SMB2 2.2.1).
pub const HEADER_LEN: usize = 64;
/// Longest compound chain followed; the rest is reported unseen.
pub const MAX_COMPOUND: usize = 32;

/// The SMB2 protocol id, 0xFE 'S' 'M' 'B'.
pub const PROTOCOL_ID: [u8; 4] = [0xFE, b'S', b'M', b'B'];
/// The SMB3 transform header's protocol id (MS-SMB2 2.2.41): an encrypted
/// message follows.
pub const TRANSFORM_ID: [u8; 4] = [0xFD, b'S', b'M', b'B'];
/// The SMB3 compression transform header's id (MS-SMB2 2.2.42).
pub const COMPRESSION_ID: [u8; 4] = [0xFC, b'S', b'M', b'B'];

/// An NTSTATUS value (MS-ERREF 2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NtStatus(pub u32);

impl NtStatus {
    /// STATUS_SUCCESS.
    pub const SUCCESS: Self = Self(0);
    /// STATUS_PENDING: an interim answer, the real one follows.
    pub const PENDING: Self = Self(0x0000_0103);
    /// STATUS_MORE_PROCESSING_REQUIRED: a session setup round trip.
    pub const MORE_PROCESSING_REQUIRED: Self = Self(0xC000_0016);
    /// STATUS_BUFFER_OVERFLOW: a read or pipe answer with more to come; its
    /// data is valid.
    pub const BUFFER_OVERFLOW: Self = Self(0x8000_0005);

    /// Whether the severity bits say error (0b11).
    pub fn is_error(self) -> bool {
        self.0 >> 30 == 3
    }
}

impl std::fmt::Display for NtStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            0 => "STATUS_SUCCESS",
            0xC000_0022 => "STATUS_ACCESS_DENIED",
            0xC000_006D => "STATUS_LOGON_FAILURE",
            0xC000_00CC => "STATUS_BAD_NETWORK_NAME",
            0xC000_0034 => "STATUS_OBJECT_NAME_NOT_FOUND",
            0xC000_0035 => "STATUS_OBJECT_NAME_COLLISION",
            0xC000_0016 => "STATUS_MORE_PROCESSING_REQUIRED",
            0xC000_0072 => "STATUS_ACCOUNT_DISABLED",
            _ => return write!(f, "{:#010x}", self.0),
        };
        f.write_str(name)
    }
}

/// SMB2 commands (MS-SMB2 2.2.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Command {
    Negotiate,
    SessionSetup,
    Logoff,
    TreeConnect,
    TreeDisconnect,
    Create,
    Close,
    Flush,
    Read,
    Write,
    Lock,
    Ioctl,
    Cancel,
    Echo,
    QueryDirectory,
    ChangeNotify,
    QueryInfo,
    SetInfo,
    OplockBreak,
    /// A value the specification does not define.
    Other(u16),
}

impl From<u16> for Command {
    fn from(v: u16) -> Self {
        use Command::*;
        match v {
            0 => Negotiate,
            1 => SessionSetup,
            2 => Logoff,
            3 => TreeConnect,
            4 => TreeDisconnect,
            5 => Create,
            6 => Close,
            7 => Flush,
            8 => Read,
            9 => Write,
            10 => Lock,
            11 => Ioctl,
            12 => Cancel,
            13 => Echo,
            14 => QueryDirectory,
            15 => ChangeNotify,
            16 => QueryInfo,
            17 => SetInfo,
            18 => OplockBreak,
            v => Other(v),
        }
    }
}

/// The fields of an SMB2 header the session uses (MS-SMB2 2.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The command.
    pub command: Command,
    /// Status (responses).
    pub status: NtStatus,
    /// SMB2_FLAGS_SERVER_TO_REDIR.
    pub response: bool,
    /// SMB2_FLAGS_ASYNC_COMMAND (no TreeId then).
    pub is_async: bool,
    /// SMB2_FLAGS_RELATED_OPERATIONS: a compound member using the previous
    /// member's handles.
    pub related: bool,
    /// Offset of the next compound member from this header, 0 at the end.
    pub next_command: u32,
    /// Matches a response to its request.
    pub message_id: u64,
    /// The tree (sync messages only).
    pub tree_id: Option<u32>,
    /// The session.
    pub session_id: u64,
}

impl Header {
    /// Parses the header at the start of `b`.
    pub fn parse(b: &[u8]) -> Result<Self, ParseError> {
        let r = Bytes(b);
        let id = r.slice("SMB2 ProtocolId", 0, 4)?;
        if id != PROTOCOL_ID {
            return Err(ParseError::BadValue {
                what: "SMB2 ProtocolId",
                value: u64::from(u32::from_le_bytes([id[0], id[1], id[2], id[3]])),
            });
        }
        let size = r.u16("SMB2 StructureSize", 4)?;
        if usize::from(size) != HEADER_LEN {
            return Err(ParseError::BadValue {
                what: "SMB2 header StructureSize",
                value: u64::from(size),
            });
        }
        let flags = r.u32("SMB2 Flags", 16)?;
        let is_async = flags & 0x2 != 0;
        r.slice("SMB2 header", 0, HEADER_LEN)?;
        Ok(Self {
            command: Command::from(r.u16("SMB2 Command", 12)?),
            status: NtStatus(r.u32("SMB2 Status", 8)?),
            response: flags & 0x1 != 0,
            is_async,
            related: flags & 0x4 != 0,
            next_command: r.u32("SMB2 NextCommand", 20)?,
            message_id: r.u64("SMB2 MessageId", 24)?,
            tree_id: if is_async {
                None
            } else {
                Some(r.u32("SMB2 TreeId", 36)?)
            },
            session_id: r.u64("SMB2 SessionId", 40)?,
        })
    }
}

/// One compound member: its header and its bytes (from its header on).
pub type Member<'a> = (Header, &'a [u8]);

/// Splits a message into its compound members (MS-SMB2 3.2.4.1.4): each
/// slice starts at an SMB2 header and ends where the next begins. At most
/// [`MAX_COMPOUND`]; the second value says whether more were cut off.
pub fn compound(msg: &[u8]) -> (Vec<Result<Member<'_>, ParseError>>, bool) {
    let mut out = Vec::new();
    let mut at = 0usize;
    loop {
        if out.len() == MAX_COMPOUND {
            return (out, true);
        }
        let rest = &msg[at..];
        let h = match Header::parse(rest) {
            Ok(h) => h,
            Err(e) => {
                out.push(Err(e));
                return (out, false);
            }
        };
        let next = h.next_command as usize;
        // NextCommand must move forward by at least a header and stay
        // 8-byte aligned (MS-SMB2 2.2.1.2); anything else ends the chain.
        if next == 0 {
            out.push(Ok((h, rest)));
            return (out, false);
        }
        if next < HEADER_LEN || !next.is_multiple_of(8) {
            out.push(Ok((h, rest)));
            out.push(Err(ParseError::BadValue {
                what: "SMB2 NextCommand",
                value: next as u64,
            }));
            return (out, false);
        }
        if next >= rest.len() {
            // The next member lies beyond what was kept.
            out.push(Ok((h, rest)));
            out.push(Err(ParseError::Truncated {
                what: "SMB2 compound member",
                at: at + next,
                need: HEADER_LEN,
                have: msg.len(),
            }));
            return (out, false);
        }
        out.push(Ok((h, &rest[..next])));
        at += next;
    }
}

/// A UTF-16 string given by an offset from the header and a length.
fn string_at(
    r: &Bytes<'_>,
    what: &'static str,
    off: usize,
    len: usize,
) -> Result<String, ParseError> {
    if len == 0 {
        return Ok(String::new());
    }
    Ok(utf16(r.slice(what, off, len)?))
}

/// NEGOTIATE response (MS-SMB2 2.2.4): the dialect the server chose.
pub fn negotiate_response(m: &[u8]) -> Result<u16, ParseError> {
    Bytes(m).u16("NEGOTIATE DialectRevision", HEADER_LEN + 4)
}

/// SESSION_SETUP request (MS-SMB2 2.2.5): the security buffer.
pub fn session_setup_request(m: &[u8]) -> Result<&[u8], ParseError> {
    let r = Bytes(m);
    let off = r.u16("SESSION_SETUP SecurityBufferOffset", HEADER_LEN + 12)?;
    let len = r.u16("SESSION_SETUP SecurityBufferLength", HEADER_LEN + 14)?;
    r.slice("SESSION_SETUP security buffer", off.into(), len.into())
}

/// SESSION_SETUP response (MS-SMB2 2.2.6): SessionFlags and the security
/// buffer.
pub fn session_setup_response(m: &[u8]) -> Result<(u16, &[u8]), ParseError> {
    let r = Bytes(m);
    let flags = r.u16("SESSION_SETUP SessionFlags", HEADER_LEN + 2)?;
    let off = r.u16("SESSION_SETUP SecurityBufferOffset", HEADER_LEN + 4)?;
    let len = r.u16("SESSION_SETUP SecurityBufferLength", HEADER_LEN + 6)?;
    Ok((
        flags,
        r.slice("SESSION_SETUP security buffer", off.into(), len.into())?,
    ))
}

/// SMB2_SESSION_FLAG_IS_GUEST.
pub const SESSION_FLAG_IS_GUEST: u16 = 0x1;
/// SMB2_SESSION_FLAG_IS_NULL (anonymous).
pub const SESSION_FLAG_IS_NULL: u16 = 0x2;

/// TREE_CONNECT request (MS-SMB2 2.2.9): the `\\server\share` path.
pub fn tree_connect_request(m: &[u8]) -> Result<String, ParseError> {
    let r = Bytes(m);
    let off = r.u16("TREE_CONNECT PathOffset", HEADER_LEN + 4)?;
    let len = r.u16("TREE_CONNECT PathLength", HEADER_LEN + 6)?;
    string_at(&r, "TREE_CONNECT path", off.into(), len.into())
}

/// Share types (MS-SMB2 2.2.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShareType {
    /// A disk share.
    Disk,
    /// A named pipe share (IPC$).
    Pipe,
    /// A printer share.
    Print,
    /// A value the specification does not define.
    Other(u8),
}

/// TREE_CONNECT response (MS-SMB2 2.2.10): the share type.
pub fn tree_connect_response(m: &[u8]) -> Result<ShareType, ParseError> {
    Ok(
        match Bytes(m).u8("TREE_CONNECT ShareType", HEADER_LEN + 2)? {
            1 => ShareType::Disk,
            2 => ShareType::Pipe,
            3 => ShareType::Print,
            v => ShareType::Other(v),
        },
    )
}

/// A CREATE request's fields (MS-SMB2 2.2.13).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateRequest {
    /// The file or pipe name, relative to the share.
    pub name: String,
    /// DesiredAccess mask.
    pub access: u32,
    /// CreateDisposition (0 supersede, 1 open, 2 create, 3 open-if,
    /// 4 overwrite, 5 overwrite-if).
    pub disposition: u32,
}

/// Parses a CREATE request.
pub fn create_request(m: &[u8]) -> Result<CreateRequest, ParseError> {
    let r = Bytes(m);
    let access = r.u32("CREATE DesiredAccess", HEADER_LEN + 24)?;
    let disposition = r.u32("CREATE CreateDisposition", HEADER_LEN + 36)?;
    let off = r.u16("CREATE NameOffset", HEADER_LEN + 44)?;
    let len = r.u16("CREATE NameLength", HEADER_LEN + 46)?;
    Ok(CreateRequest {
        name: string_at(&r, "CREATE name", off.into(), len.into())?,
        access,
        disposition,
    })
}

/// An SMB2 FileId (persistent and volatile halves).
pub type FileId = [u8; 16];

/// CREATE response (MS-SMB2 2.2.14): the FileId.
pub fn create_response(m: &[u8]) -> Result<FileId, ParseError> {
    Bytes(m).b16("CREATE FileId", HEADER_LEN + 64)
}

/// CLOSE request (MS-SMB2 2.2.15): the FileId.
pub fn close_request(m: &[u8]) -> Result<FileId, ParseError> {
    Bytes(m).b16("CLOSE FileId", HEADER_LEN + 8)
}

/// A WRITE request's fields (MS-SMB2 2.2.21).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRequest<'a> {
    /// The file written.
    pub file: FileId,
    /// Offset in the file.
    pub offset: u64,
    /// Bytes written (as declared).
    pub len: u32,
    /// The data bytes that were seen (a prefix of `len` when cut).
    pub data: &'a [u8],
}

/// Parses a WRITE request; the data is what was seen of it.
pub fn write_request(m: &[u8]) -> Result<WriteRequest<'_>, ParseError> {
    let r = Bytes(m);
    let data_off = usize::from(r.u16("WRITE DataOffset", HEADER_LEN + 2)?);
    let len = r.u32("WRITE Length", HEADER_LEN + 4)?;
    Ok(WriteRequest {
        offset: r.u64("WRITE Offset", HEADER_LEN + 8)?,
        file: r.b16("WRITE FileId", HEADER_LEN + 16)?,
        len,
        data: seen(m, data_off, len),
    })
}

/// The bytes of `[off, off+len)` that lie inside `m`.
fn seen(m: &[u8], off: usize, len: u32) -> &[u8] {
    let end = off.saturating_add(len as usize).min(m.len());
    m.get(off..end).unwrap_or(&[])
}

/// READ request (MS-SMB2 2.2.19): the FileId.
pub fn read_request(m: &[u8]) -> Result<FileId, ParseError> {
    Bytes(m).b16("READ FileId", HEADER_LEN + 16)
}

/// READ response (MS-SMB2 2.2.20): the data seen.
pub fn read_response(m: &[u8]) -> Result<&[u8], ParseError> {
    let r = Bytes(m);
    let off = r.u8("READ DataOffset", HEADER_LEN + 2)?;
    let len = r.u32("READ DataLength", HEADER_LEN + 4)?;
    Ok(seen(m, off.into(), len))
}

/// FSCTL_PIPE_TRANSCEIVE (MS-FSCC 2.3.49): a write-then-read on a pipe.
pub const FSCTL_PIPE_TRANSCEIVE: u32 = 0x0011_C017;

/// IOCTL request (MS-SMB2 2.2.31): control code, FileId, input seen.
pub fn ioctl_request(m: &[u8]) -> Result<(u32, FileId, &[u8]), ParseError> {
    ioctl(m, ["IOCTL InputOffset", "IOCTL InputCount"], 24)
}

/// IOCTL response (MS-SMB2 2.2.32): control code, FileId, output seen.
pub fn ioctl_response(m: &[u8]) -> Result<(u32, FileId, &[u8]), ParseError> {
    ioctl(m, ["IOCTL OutputOffset", "IOCTL OutputCount"], 32)
}

/// Both IOCTL messages: CtlCode at 4, FileId at 8, then the buffer's
/// offset and count at `at` (input in requests, output in responses).
fn ioctl<'a>(
    m: &'a [u8],
    what: [&'static str; 2],
    at: usize,
) -> Result<(u32, FileId, &'a [u8]), ParseError> {
    let r = Bytes(m);
    let code = r.u32("IOCTL CtlCode", HEADER_LEN + 4)?;
    let file = r.b16("IOCTL FileId", HEADER_LEN + 8)?;
    let off = r.u32(what[0], HEADER_LEN + at)?;
    let len = r.u32(what[1], HEADER_LEN + at + 4)?;
    Ok((code, file, seen(m, off as usize, len)))
}

/// SET_INFO `InfoType` of file information (MS-SMB2 2.2.39).
const INFO_FILE: u8 = 1;
/// `FileRenameInformation` (MS-FSCC 2.4.42).
const FILE_RENAME_INFORMATION: u8 = 10;

/// A SET_INFO request that renames a file (MS-SMB2 2.2.39 carrying
/// MS-FSCC 2.4.42.2 FILE_RENAME_INFORMATION_TYPE_2): the file and its new
/// name, relative to the share. `None` for any other SET_INFO.
pub fn set_info_rename(m: &[u8]) -> Result<Option<(FileId, String)>, ParseError> {
    let r = Bytes(m);
    let info_type = r.u8("SET_INFO InfoType", HEADER_LEN + 2)?;
    let class = r.u8("SET_INFO FileInfoClass", HEADER_LEN + 3)?;
    if info_type != INFO_FILE || class != FILE_RENAME_INFORMATION {
        return Ok(None);
    }
    let len = r.u32("SET_INFO BufferLength", HEADER_LEN + 4)?;
    let off = usize::from(r.u16("SET_INFO BufferOffset", HEADER_LEN + 8)?);
    let file = r.b16("SET_INFO FileId", HEADER_LEN + 16)?;
    // ReplaceIfExists(1), Reserved(7), RootDirectory(8), FileNameLength(4),
    // then the name.
    let name_len = r.u32("RENAME FileNameLength", off + 16)?;
    if u64::from(name_len) + 20 > u64::from(len) {
        return Err(ParseError::BadValue {
            what: "RENAME FileNameLength (past the SET_INFO buffer)",
            value: u64::from(name_len),
        });
    }
    let name = string_at(&r, "RENAME FileName", off + 20, name_len as usize)?;
    Ok(Some((file, name)))
}

/// SMB3 TRANSFORM_HEADER (MS-SMB2 2.2.41): the session whose key encrypts
/// the message.
pub fn transform_session(m: &[u8]) -> Result<u64, ParseError> {
    Bytes(m).u64("TRANSFORM SessionId", 44)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_header_is_an_error_not_a_panic() {
        assert!(Header::parse(&PROTOCOL_ID).is_err());
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(&PROTOCOL_ID);
        h[4] = 64;
        assert!(Header::parse(&h).is_ok());
        h[4] = 65;
        assert!(Header::parse(&h).is_err());
    }

    #[test]
    fn compound_chains_are_capped_and_cannot_loop() {
        // 1,000 members of 64 bytes each, each pointing at the next.
        let mut m = Vec::new();
        for i in 0..1000 {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&PROTOCOL_ID);
            h[4] = 64;
            if i < 999 {
                h[20] = 64;
            }
            m.extend(h);
        }
        let (members, more) = compound(&m);
        assert_eq!(members.len(), MAX_COMPOUND);
        assert!(more);
        // A member pointing at itself (NextCommand 0 handled as end; a
        // NextCommand below 64 is refused).
        let mut h = vec![0u8; 128];
        h[..4].copy_from_slice(&PROTOCOL_ID);
        h[4] = 64;
        h[20] = 8;
        let (members, more) = compound(&h);
        assert_eq!(members.len(), 2);
        assert!(members[1].is_err());
        assert!(!more);
    }

    #[test]
    fn lengths_past_the_message_are_errors() {
        let mut m = vec![0u8; 64 + 56];
        m[..4].copy_from_slice(&PROTOCOL_ID);
        m[4] = 64;
        // CREATE name at 120, length 0xFFFF: past the end.
        m[64 + 44] = 120;
        m[64 + 46] = 0xFF;
        m[64 + 47] = 0xFF;
        assert!(matches!(
            create_request(&m),
            Err(ParseError::Truncated { .. })
        ));
        // WRITE with a 4 GiB length: the data seen is what is there.
        let mut w = vec![0u8; 64 + 48 + 10];
        w[64 + 2] = 112;
        w[64 + 4..64 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        let wr = write_request(&w).unwrap();
        assert_eq!(wr.data.len(), 10);
        assert_eq!(wr.len, u32::MAX);
    }
}
