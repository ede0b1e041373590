//! Test support (feature `capture`): the TCP segments of a pcap file, for
//! the tests that replay the shared captures through the parser and
//! through the core's SMB monitor. One reader for both; not used by the
//! daemon (replay reads captures in `smbwatch-dataplane`).

use std::{net::IpAddr, path::Path, time::SystemTime};

use pcap_file::pcap::PcapReader;

/// One TCP segment of a capture (Ethernet, one optional VLAN tag, IPv4 or
/// IPv6).
#[derive(Clone, Debug)]
pub struct TcpSegment {
    /// The capture's timestamp.
    pub at: SystemTime,
    /// Ethernet source address.
    pub src_mac: [u8; 6],
    /// The VLAN id, when tagged.
    pub vlan: Option<u16>,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Sequence number of the payload's first byte.
    pub seq: u32,
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10).
    pub flags: u8,
    /// The payload as captured.
    pub payload: Vec<u8>,
}

impl TcpSegment {
    /// FIN or RST: the connection ends.
    pub fn ends(&self) -> bool {
        self.flags & 0x05 != 0
    }
}

/// Ethernet (optionally one VLAN tag) / IPv4 or IPv6 / TCP; `None` for
/// anything else.
pub fn tcp(frame: &[u8], at: SystemTime) -> Option<TcpSegment> {
    let mut et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let mut at_l3 = 14;
    let mut vlan = None;
    if et == 0x8100 {
        vlan = Some(u16::from_be_bytes([*frame.get(14)?, *frame.get(15)?]) & 0x0FFF);
        et = u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]);
        at_l3 = 18;
    }
    let ip = frame.get(at_l3..)?;
    let (src, dst, l4): (IpAddr, IpAddr, &[u8]) = match et {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0x0F) * 4;
            let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
            // Captured on a sender with segmentation offload, the total
            // length may be 0: then the frame's end is the packet's end.
            let total = if total < ihl { ip.len() } else { total };
            if *ip.get(9)? != 6 {
                return None;
            }
            let a: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let b: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (a.into(), b.into(), ip.get(ihl..total)?)
        }
        0x86DD => {
            let plen = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
            if *ip.get(6)? != 6 {
                return None;
            }
            let a: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let b: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (a.into(), b.into(), ip.get(40..40 + plen)?)
        }
        _ => return None,
    };
    let off = usize::from(l4.get(12)? >> 4) * 4;
    Some(TcpSegment {
        at,
        src_mac: frame.get(6..12)?.try_into().ok()?,
        vlan,
        src,
        dst,
        sport: u16::from_be_bytes([*l4.first()?, *l4.get(1)?]),
        dport: u16::from_be_bytes([*l4.get(2)?, *l4.get(3)?]),
        seq: u32::from_be_bytes(l4.get(4..8)?.try_into().ok()?),
        flags: *l4.get(13)?,
        payload: l4.get(off..)?.to_vec(),
    })
}

/// Every TCP segment of a pcap file, in capture order.
pub fn read(path: &Path) -> Result<Vec<TcpSegment>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = PcapReader::new(file).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.map_err(|e| format!("{}: {e}", path.display()))?;
        let at = SystemTime::UNIX_EPOCH + pkt.timestamp;
        out.extend(tcp(&pkt.data, at));
    }
    Ok(out)
}
