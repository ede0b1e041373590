//! NTLMSSP messages (MS-NLMP 2.2.1) inside an SMB session setup's security
//! buffer. The buffer is usually SPNEGO (RFC 4178) around the NTLMSSP
//! token; rather than decode the ASN.1, the token is found by its
//! signature `NTLMSSP\0`, which the GSS-API framing carries verbatim. A
//! Kerberos session setup has no such token and yields nothing.

use crate::wire::{latin1, utf16, Bytes, ParseError};

const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";
/// NTLMSSP_NEGOTIATE_UNICODE (MS-NLMP 2.2.2.5): strings are UTF-16LE.
const NEGOTIATE_UNICODE: u32 = 0x1;
/// NTLMSSP_NEGOTIATE_ANONYMOUS.
const NEGOTIATE_ANONYMOUS: u32 = 0x800;

/// An NTLMSSP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ntlmssp {
    /// NEGOTIATE_MESSAGE (type 1).
    Negotiate,
    /// CHALLENGE_MESSAGE (type 2): the server's target name.
    Challenge {
        /// TargetName (the server's domain or name).
        target: String,
    },
    /// AUTHENTICATE_MESSAGE (type 3).
    Authenticate(Authenticate),
}

/// The fields of an AUTHENTICATE_MESSAGE (MS-NLMP 2.2.1.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticate {
    /// UserName.
    pub user: String,
    /// DomainName.
    pub domain: String,
    /// Workstation.
    pub workstation: String,
    /// An anonymous logon (MS-NLMP 3.2.5.1.2: empty user and empty NT
    /// response, or the ANONYMOUS flag).
    pub anonymous: bool,
}

/// Finds and parses the NTLMSSP token in a security buffer; `Ok(None)`
/// when there is none (Kerberos, or an empty buffer).
pub fn parse(sec: &[u8]) -> Result<Option<Ntlmssp>, ParseError> {
    let Some(at) = sec.windows(8).position(|w| w == SIGNATURE) else {
        return Ok(None);
    };
    let m = Bytes(&sec[at..]);
    Ok(Some(match m.u32("NTLMSSP MessageType", 8)? {
        1 => Ntlmssp::Negotiate,
        2 => {
            let flags = m.u32("NTLMSSP NegotiateFlags", 20)?;
            Ntlmssp::Challenge {
                target: field(&m, "NTLMSSP TargetName", 12, flags)?,
            }
        }
        3 => {
            let flags = m.u32("NTLMSSP NegotiateFlags", 60)?;
            let (nt_len, _) = fields(&m, "NTLMSSP NtChallengeResponse", 20)?;
            let user = field(&m, "NTLMSSP UserName", 36, flags)?;
            Ntlmssp::Authenticate(Authenticate {
                domain: field(&m, "NTLMSSP DomainName", 28, flags)?,
                workstation: field(&m, "NTLMSSP Workstation", 44, flags)?,
                anonymous: flags & NEGOTIATE_ANONYMOUS != 0 || (user.is_empty() && nt_len == 0),
                user,
            })
        }
        t => {
            return Err(ParseError::BadValue {
                what: "NTLMSSP MessageType",
                value: u64::from(t),
            })
        }
    }))
}

/// A (Len, MaxLen, Offset) field descriptor at `at`: length and offset.
fn fields(m: &Bytes<'_>, what: &'static str, at: usize) -> Result<(usize, usize), ParseError> {
    Ok((usize::from(m.u16(what, at)?), m.u32(what, at + 4)? as usize))
}

fn field(m: &Bytes<'_>, what: &'static str, at: usize, flags: u32) -> Result<String, ParseError> {
    let (len, off) = fields(m, what, at)?;
    if len == 0 {
        return Ok(String::new());
    }
    let b = m.slice(what, off, len)?;
    Ok(if flags & NEGOTIATE_UNICODE != 0 {
        utf16(b)
    } else {
        latin1(b)
    })
}

/// Builds an AUTHENTICATE_MESSAGE (for tests and the fuzz corpus).
pub fn build_authenticate(user: &str, domain: &str, workstation: &str, nt_len: usize) -> Vec<u8> {
    let enc = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(u16::to_le_bytes).collect() };
    let (u, d, w) = (enc(user), enc(domain), enc(workstation));
    let nt = vec![0x55u8; nt_len];
    let mut m = SIGNATURE.to_vec();
    m.extend(3u32.to_le_bytes());
    let mut payload = Vec::new();
    let base = 72u32;
    let mut desc = |b: &[u8], m: &mut Vec<u8>| {
        let off = base + payload.len() as u32;
        m.extend((b.len() as u16).to_le_bytes());
        m.extend((b.len() as u16).to_le_bytes());
        m.extend(off.to_le_bytes());
        payload.extend_from_slice(b);
    };
    desc(&[], &mut m); // LM
    desc(&nt, &mut m);
    desc(&d, &mut m);
    desc(&u, &mut m);
    desc(&w, &mut m);
    desc(&[], &mut m); // session key
    m.extend(NEGOTIATE_UNICODE.to_le_bytes());
    m.resize(72, 0); // version + MIC
    m.extend(payload);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticate_inside_spnego() {
        let mut sec = vec![0xa1, 0x82, 0x01, 0x00, 0x30, 0x82]; // GSS framing
        sec.extend(build_authenticate(
            "pgustavo",
            "theshire",
            "WORKSTATION5",
            24,
        ));
        let Some(Ntlmssp::Authenticate(a)) = parse(&sec).unwrap() else {
            panic!("no authenticate");
        };
        assert_eq!(
            (
                a.user.as_str(),
                a.domain.as_str(),
                a.workstation.as_str(),
                a.anonymous
            ),
            ("pgustavo", "theshire", "WORKSTATION5", false)
        );
    }

    #[test]
    fn anonymous_is_recognised() {
        let m = build_authenticate("", "", "", 0);
        let Some(Ntlmssp::Authenticate(a)) = parse(&m).unwrap() else {
            panic!("no authenticate");
        };
        assert!(a.anonymous);
    }

    #[test]
    fn truncated_and_hostile_tokens_are_errors() {
        let m = build_authenticate("administrator", "CORP", "WS1", 24);
        for cut in 0..m.len() {
            // Never a panic; a cut before the signature is "no token".
            let _ = parse(&m[..cut]);
        }
        assert!(parse(&m[..60]).is_err());
        let mut bad = m.clone();
        // UserName offset far past the end.
        bad[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(parse(&bad), Err(ParseError::Truncated { .. })));
        assert_eq!(parse(b"no token here").unwrap(), None);
    }
}
