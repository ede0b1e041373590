//! pcapng blocks decoded here rather than by pcap-file (see the parent
//! module for why): fixed fields in the section's byte order, interface
//! descriptions and their timestamp units.

use std::time::Duration;

use pcap_file::Endianness;

/// What a pcapng interface description says about its packets.
#[derive(Clone, Debug)]
pub(super) struct Interface {
    pub(super) link: u32,
    /// `if_name` (`eth0`), when the capture recorded it.
    pub(super) name: Option<String>,
    /// Timestamp ticks per second (`if_tsresol`; default 10^6).
    ticks_per_sec: u64,
    /// `if_tsoffset`, seconds added to every timestamp (signed).
    offset_secs: i64,
}

impl Interface {
    pub(super) fn timestamp(&self, ticks: u64) -> Option<Duration> {
        let secs = ticks / self.ticks_per_sec;
        let frac = u128::from(ticks % self.ticks_per_sec);
        let nanos = (frac * 1_000_000_000 / u128::from(self.ticks_per_sec)) as u32;
        let secs = i64::try_from(secs).ok()?.checked_add(self.offset_secs)?;
        Some(Duration::new(u64::try_from(secs).ok()?, nanos))
    }
}

/// `if_tsresol`: high bit clear means 10^-n, set means 2^-n. Resolutions
/// finer than a tick per nanosecond's range of u64 are capped.
fn ticks_per_sec(tsresol: u8) -> u64 {
    let exp = u32::from(tsresol & 0x7f);
    if tsresol & 0x80 == 0 {
        10u64.checked_pow(exp).unwrap_or(u64::MAX)
    } else {
        2u64.checked_pow(exp).unwrap_or(u64::MAX)
    }
}

/// pcapng block types.
pub(super) const SHB: u32 = 0x0a0d_0d0a;
pub(super) const IDB: u32 = 1;
pub(super) const PB: u32 = 2;
pub(super) const SPB: u32 = 3;
pub(super) const EPB: u32 = 6;

/// Fixed-position fields of a pcapng block body, in the section's byte order.
pub(super) struct Fields<'a> {
    body: &'a [u8],
    big: bool,
}

impl<'a> Fields<'a> {
    pub(super) fn new(body: &'a [u8], endianness: Endianness) -> Self {
        Self {
            body,
            big: endianness == Endianness::Big,
        }
    }

    pub(super) fn u16(&self, i: usize) -> Option<u16> {
        let s: [u8; 2] = self.body.get(i..i + 2)?.try_into().ok()?;
        Some(if self.big {
            u16::from_be_bytes(s)
        } else {
            u16::from_le_bytes(s)
        })
    }

    pub(super) fn u32(&self, i: usize) -> Option<u32> {
        let s: [u8; 4] = self.body.get(i..i + 4)?.try_into().ok()?;
        Some(if self.big {
            u32::from_be_bytes(s)
        } else {
            u32::from_le_bytes(s)
        })
    }

    fn u64(&self, i: usize) -> Option<u64> {
        let s: [u8; 8] = self.body.get(i..i + 8)?.try_into().ok()?;
        Some(if self.big {
            u64::from_be_bytes(s)
        } else {
            u64::from_le_bytes(s)
        })
    }
}

/// An interface description: link type, reserved, snap length, then options
/// (code, length, value padded to 4 bytes). Only `if_name` (2, for
/// `observer.ingress.interface.name`), `if_tsresol` (9) and `if_tsoffset`
/// (14) matter here.
pub(super) fn interface(b: &Fields<'_>) -> Option<Interface> {
    let mut iface = Interface {
        link: u32::from(b.u16(0)?),
        name: None,
        ticks_per_sec: 1_000_000,
        offset_secs: 0,
    };
    b.u32(4)?;
    let mut pos = 8;
    while let (Some(code), Some(len)) = (b.u16(pos), b.u16(pos + 2)) {
        let value = pos + 4;
        match (code, len) {
            (0, _) => break,
            (2, n) => {
                iface.name = b
                    .body
                    .get(value..value + usize::from(n))
                    .map(|v| String::from_utf8_lossy(v).trim_end_matches('\0').to_owned())
                    .filter(|s| !s.is_empty() && s.len() <= MAX_IF_NAME);
            }
            (9, 1) => {
                if let Some(&r) = b.body.get(value) {
                    iface.ticks_per_sec = ticks_per_sec(r).max(1);
                }
            }
            (14, 8) => {
                if let Some(o) = b.u64(value) {
                    iface.offset_secs = o as i64;
                }
            }
            _ => {}
        }
        pos = value + usize::from(len).div_ceil(4) * 4;
    }
    Some(iface)
}

/// Longest `if_name` kept (bytes); longer ones are ignored.
const MAX_IF_NAME: usize = 64;
