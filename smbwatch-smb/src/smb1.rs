//! SMB1 (MS-CIFS 2.2.3.1 header; MS-SMB): enough to say SMB1 is in use,
//! which dialects a client offers, which share it connects to, and the
//! transaction fields MS17-010's exploits and implant betray themselves by.

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
/// SMB_COM_TRANSACTION2.
pub const COM_TRANSACTION2: u8 = 0x32;
/// SMB_COM_NT_TRANSACT.
pub const COM_NT_TRANSACT: u8 = 0xA0;
/// TRANS2_SESSION_SETUP: reserved, "not implemented" by every Windows
/// server (MS-CIFS 2.2.6.16); DoublePulsar's ping, run and kill commands.
pub const TRANS2_SESSION_SETUP: u16 = 0x000E;
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
    /// TRANSACTION2 request (MS-CIFS 2.2.4.46.1): its subcommand
    /// (Setup[0]) and the request's multiplex id.
    Trans2 {
        /// Setup[0], the TRANS2 subcommand.
        subcommand: u16,
        /// The header's MID.
        mid: u16,
    },
    /// TRANSACTION2 reply: its multiplex id (DoublePulsar answers with
    /// the request's plus 16).
    Trans2Reply {
        /// The header's MID.
        mid: u16,
    },
    /// NT_TRANSACT request (MS-CIFS 2.2.4.62.1): its function and the
    /// total data the transaction announces.
    NtTransact {
        /// The NT_TRANSACT subcommand (1 to 8 are defined; 0 is none).
        function: u16,
        /// TotalDataCount.
        total_data: u32,
    },
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
    let mid = r.u16("SMB1 MID", 30)?;
    let words = usize::from(r.u8("SMB1 WordCount", HEADER_LEN)?);
    // Parameter words start after WordCount.
    let w = HEADER_LEN + 1;
    // A reply carrying an error may have no words or bytes at all.
    if command == COM_TRANSACTION2 && reply {
        return Ok(Smb1::Trans2Reply { mid });
    }
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
        // Setup[0] follows 14 words of counts and offsets and
        // SetupCount, Reserved3 (2.2.4.46.1): byte 28 of the words.
        (COM_TRANSACTION2, false) if words >= 15 => Smb1::Trans2 {
            subcommand: r.u16("TRANS2 Setup[0]", w + 28)?,
            mid,
        },
        // MaxSetupCount, Reserved1[2], then TotalParameterCount and
        // TotalDataCount (4 bytes each); Function after eight such
        // counts and SetupCount (2.2.4.62.1).
        (COM_NT_TRANSACT, false) if words >= 19 => Smb1::NtTransact {
            function: r.u16("NT_TRANSACT Function", w + 36)?,
            total_data: r.u32("NT_TRANSACT TotalDataCount", w + 7)?,
        },
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

    /// Words of a TRANSACTION2 request with one setup word.
    fn trans2_words(subcommand: u16) -> Vec<u8> {
        let mut w = vec![0u8; 28];
        w[26] = 1; // SetupCount
        w.extend(subcommand.to_le_bytes());
        w
    }

    #[test]
    fn trans2_request_and_reply_carry_subcommand_and_mid() {
        let mut m = msg(
            COM_TRANSACTION2,
            0,
            &trans2_words(TRANS2_SESSION_SETUP),
            &[0; 13],
        );
        m[30..32].copy_from_slice(&66u16.to_le_bytes());
        assert_eq!(
            parse(&m).unwrap(),
            Smb1::Trans2 {
                subcommand: TRANS2_SESSION_SETUP,
                mid: 66
            }
        );
        // The error reply: no words, no bytes (WordCount and ByteCount 0).
        let mut reply = msg(COM_TRANSACTION2, 0, &[], &[]);
        reply[9] = FLAGS_REPLY;
        reply[30..32].copy_from_slice(&82u16.to_le_bytes());
        assert_eq!(parse(&reply).unwrap(), Smb1::Trans2Reply { mid: 82 });
        for cut in 0..m.len() {
            let _ = parse(&m[..cut]);
        }
    }

    #[test]
    fn nt_transact_function_and_total_data() {
        // EternalBlue's: function 0, 66,512 bytes announced.
        let mut words = vec![0u8; 38];
        words[0] = 1; // MaxSetupCount
        words[7..11].copy_from_slice(&66_512u32.to_le_bytes());
        words[35] = 1; // SetupCount
        words.extend([0, 0]); // Setup[0]
        let m = msg(COM_NT_TRANSACT, 0, &words, &[0; 8]);
        assert_eq!(
            parse(&m).unwrap(),
            Smb1::NtTransact {
                function: 0,
                total_data: 66_512
            }
        );
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
