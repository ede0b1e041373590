//! SMB1 (MS-CIFS 2.2.3.1 header; MS-SMB): enough to say SMB1 is in use,
//! which dialects a client offers, and which share it connects to.

use crate::wire::{latin1, utf16, Bytes, ParseError};

/// The SMB1 protocol id, 0xFF 'S' 'M' 'B'.
pub const PROTOCOL_ID: [u8; 4] = [0xFF, b'S', b'M', b'B'];
/// SMB1 header length (MS-CIFS 2.2.3.1).
pub const HEADER_LEN: usize = 32;
/// Most dialect strings kept from one NEGOTIATE.
pub const MAX_DIALECTS: usize = 32;

/// SMB_COM_NEGOTIATE.
pub const COM_NEGOTIATE: u8 = 0x72;
/// SMB_COM_TREE_CONNECT_ANDX.
pub const COM_TREE_CONNECT_ANDX: u8 = 0x75;
/// SMB_FLAGS_REPLY.
const FLAGS_REPLY: u8 = 0x80;
/// SMB_FLAGS2_UNICODE.
const FLAGS2_UNICODE: u16 = 0x8000;

/// An SMB1 message the session reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Smb1 {
    /// NEGOTIATE request (MS-CIFS 2.2.4.52.1): the dialect strings.
    Negotiate(Vec<String>),
    /// TREE_CONNECT_ANDX request (MS-CIFS 2.2.4.55.1): the path.
    TreeConnect(String),
    /// Another command (or a reply).
    Other {
        /// The command code.
        command: u8,
        /// SMB_FLAGS_REPLY.
        reply: bool,
    },
}

/// Parses an SMB1 message.
pub fn parse(m: &[u8]) -> Result<Smb1, ParseError> {
    let r = Bytes(m);
    r.slice("SMB1 header", 0, HEADER_LEN)?;
    let command = r.u8("SMB1 Command", 4)?;
    let reply = r.u8("SMB1 Flags", 9)? & FLAGS_REPLY != 0;
    let flags2 = r.u16("SMB1 Flags2", 10)?;
    let words = usize::from(r.u8("SMB1 WordCount", HEADER_LEN)?);
    let bc_at = HEADER_LEN + 1 + 2 * words;
    let byte_count = usize::from(r.u16("SMB1 ByteCount", bc_at)?);
    let data_at = bc_at + 2;
    // The bytes that were seen of the data block.
    let data = m
        .get(data_at..data_at.saturating_add(byte_count).min(m.len()))
        .unwrap_or(&[]);
    Ok(match (command, reply) {
        (COM_NEGOTIATE, false) => {
            // Each dialect is 0x02 then a NUL-terminated OEM string.
            let mut dialects = Vec::new();
            for part in data.split(|&b| b == 0).filter(|p| p.first() == Some(&2)) {
                if dialects.len() == MAX_DIALECTS {
                    break;
                }
                dialects.push(latin1(&part[1..]));
            }
            Smb1::Negotiate(dialects)
        }
        (COM_TREE_CONNECT_ANDX, false) => {
            let pw_len = usize::from(r.u16("TREE_CONNECT_ANDX PasswordLength", HEADER_LEN + 7)?);
            let mut at = data_at + pw_len;
            let path = if flags2 & FLAGS2_UNICODE != 0 {
                // Unicode strings are aligned to 2 bytes from the header.
                at += at % 2;
                let rest = m.get(at..).unwrap_or(&[]);
                let end = rest
                    .chunks_exact(2)
                    .position(|c| c == [0, 0])
                    .unwrap_or(rest.len() / 2);
                utf16(&rest[..end * 2])
            } else {
                let rest = m.get(at..).unwrap_or(&[]);
                latin1(rest.split(|&b| b == 0).next().unwrap_or(&[]))
            };
            if at > m.len() {
                return Err(ParseError::Truncated {
                    what: "TREE_CONNECT_ANDX path",
                    at,
                    need: 2,
                    have: m.len(),
                });
            }
            Smb1::TreeConnect(path)
        }
        _ => Smb1::Other { command, reply },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(command: u8, flags2: u16, words: &[u8], data: &[u8]) -> Vec<u8> {
        let mut m = PROTOCOL_ID.to_vec();
        m.push(command);
        m.resize(HEADER_LEN, 0);
        m[10..12].copy_from_slice(&flags2.to_le_bytes());
        m.push((words.len() / 2) as u8);
        m.extend_from_slice(words);
        m.extend((data.len() as u16).to_le_bytes());
        m.extend_from_slice(data);
        m
    }

    #[test]
    fn negotiate_dialects() {
        let m = msg(
            COM_NEGOTIATE,
            0,
            &[],
            b"\x02PC NETWORK PROGRAM 1.0\0\x02NT LM 0.12\0",
        );
        assert_eq!(
            parse(&m).unwrap(),
            Smb1::Negotiate(vec!["PC NETWORK PROGRAM 1.0".into(), "NT LM 0.12".into()])
        );
        // Cut anywhere: an error or a shorter list, never a panic.
        for cut in 0..m.len() {
            let _ = parse(&m[..cut]);
        }
    }

    #[test]
    fn tree_connect_unicode_path() {
        let path: Vec<u8> = "\\\\192.0.2.1\\IPC$"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let mut data = vec![0u8]; // 1-byte password
        data.extend(&path);
        data.extend([0, 0]);
        data.extend(b"?????\0");
        let words = [0xFF, 0, 0, 0, 0, 0, 1, 0];
        let m = msg(COM_TREE_CONNECT_ANDX, FLAGS2_UNICODE, &words, &data);
        assert_eq!(
            parse(&m).unwrap(),
            Smb1::TreeConnect("\\\\192.0.2.1\\IPC$".into())
        );
    }
}
