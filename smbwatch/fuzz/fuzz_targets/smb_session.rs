//! Fuzz the SMB session parser: any sequence of segments in both directions
//! (with gaps, retransmissions, reordering and sample cuts) must give
//! observations, never a panic, and keep its tables within their caps.
//!
//! Input format, repeated: a control byte, a little-endian u16 length (mod
//! 2048), then that many payload bytes. Control bit 0: direction; bits 1-2:
//! 0 in order, 1 jump ahead (a gap or a held segment), 2 jump back (a
//! retransmission), 3 in order; bit 7: the wire length is longer than the
//! bytes given (a sample cut). Each payload is also handed, as one SMB2
//! message, to the SET_INFO rename parser.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use smbwatch_smb::{Direction, Segment, Session};

fuzz_target!(|data: &[u8]| {
    let mut s = Session::new();
    let mut seq = [1000u32, 900_000u32];
    let mut rest = data;
    let mut t = SystemTime::UNIX_EPOCH;
    while rest.len() >= 3 {
        let c = rest[0];
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]])) % 2048;
        rest = &rest[3..];
        let (chunk, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        let d = usize::from(c & 1);
        let dir = if d == 0 {
            Direction::ToServer
        } else {
            Direction::ToClient
        };
        match (c >> 1) & 3 {
            1 => seq[d] = seq[d].wrapping_add(u32::from(c) << 4),
            2 => seq[d] = seq[d].wrapping_sub(u32::from(c)),
            _ => {}
        }
        let wire = chunk.len() as u32 + if c & 0x80 != 0 { u32::from(c) } else { 0 };
        t += Duration::from_millis(1);
        let seen = s.segment(
            dir,
            Segment {
                seq: seq[d],
                data: chunk,
                wire_len: wire,
            },
            t,
        );
        // Output is bounded by the input: this segment plus the held ones
        // it releases (at most 16 KiB), at most one observation per byte.
        assert!(
            seen.len() <= 64 + chunk.len() + 16 * 1024,
            "{} observations",
            seen.len()
        );
        seq[d] = seq[d].wrapping_add(wire);
        // The SET_INFO rename parser directly too: a session reaches it
        // only through a framed SET_INFO, the raw chunk covers its
        // lengths and offsets on any bytes.
        let _ = smbwatch_smb::smb2::set_info_rename(chunk);
    }
    let _ = s.finish(t);
});
