//! SMB payload sampling, shared by the kernel sampler and its decoder.
//!
//! For monitored ports the XDP program copies the TCP payload of the first
//! segments of each connection, in both directions, into a ring buffer of
//! its own ([`SAMPLES_MAP`]): a [`SampleHeader`] followed by the captured
//! bytes. A direct-mapped flow table ([`SAMPLE_FLOWS_MAP`]) says which
//! connections are still sampled. See docs/smb.md ("Kernel sampling").

use crate::AddrKey;

/// The record header: one TCP segment of a sampled connection, then
/// [`SampleHeader::cap_len`] bytes of its payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleHeader {
    /// When the segment was seen: `bpf_ktime_get_ns`, or in replay the
    /// capture time (ns since the Unix epoch).
    pub ts_ns: u64,
    /// The client (the port that is not monitored).
    pub client: AddrKey,
    /// The server (the monitored port).
    pub server: AddrKey,
    /// The segment's sequence number.
    pub seq: u32,
    /// Its acknowledgement number (a SYN-ACK's is the client's ISN + 1).
    pub ack: u32,
    /// Payload bytes on the wire (from the IP header).
    pub wire_len: u32,
    /// Ingress interface (replay: the capture's interface id).
    pub ifindex: u32,
    /// Client port.
    pub client_port: u16,
    /// Server (monitored) port.
    pub server_port: u16,
    /// Payload bytes that follow the header (at most the configured
    /// sample size, at most `wire_len`).
    pub cap_len: u16,
    /// Outer VLAN id, valid with [`SAMPLE_FLAG_VLAN`].
    pub vlan: u16,
    /// [`SAMPLE_TO_SERVER`] or [`SAMPLE_TO_CLIENT`].
    pub direction: u8,
    /// `SAMPLE_FLAG_*` bits.
    pub flags: u8,
    /// The frame's source MAC address.
    pub src_mac: [u8; 6],
}

/// [`SampleHeader::direction`]: client to server.
pub const SAMPLE_TO_SERVER: u8 = 0;
/// [`SampleHeader::direction`]: server to client.
pub const SAMPLE_TO_CLIENT: u8 = 1;
/// [`SampleHeader::flags`]: the frame carried a VLAN tag.
pub const SAMPLE_FLAG_VLAN: u8 = 1;
/// [`SampleHeader::flags`]: FIN set.
pub const SAMPLE_FLAG_FIN: u8 = 2;
/// [`SampleHeader::flags`]: RST set.
pub const SAMPLE_FLAG_RST: u8 = 4;
/// [`SampleHeader::flags`]: SYN set. The kernel sends no such record: the
/// server's SYN-ACK claims its flow and nothing more (user space starts
/// each direction at its first payload); a decoder skips one.
pub const SAMPLE_FLAG_SYN: u8 = 8;

/// A record as reserved in the ring: the header and room for `N` bytes.
/// The kernel reserves one of a few sizes ([`SAMPLE_CLASSES`]) because the
/// verifier only accepts constant reservation sizes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SampleRecord<const N: usize> {
    /// The header.
    pub head: SampleHeader,
    /// The payload (the first `head.cap_len` bytes are valid).
    pub data: [u8; N],
}

/// Payload room of the record sizes the kernel reserves, smallest first
/// (the header-only record, for SYN-ACK/FIN/RST without payload, is
/// `SampleRecord<0>`).
pub const SAMPLE_CLASSES: [usize; 3] = [256, 1024, 4096];
/// The largest sample of one segment: bytes past it are not copied.
pub const SAMPLE_MAX_BYTES: usize = 4096;
/// Most segments sampled per direction of one connection.
pub const SAMPLE_MAX_SEGMENTS: u32 = 255;

/// One slot of the sampling flow table: which connection holds it and how
/// many segments of each direction were sampled. 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleFlow {
    /// Keyed hash of (client, server, client port, server port), never 0;
    /// 0 = empty. Claimed with compare-and-swap.
    pub tag: u64,
    /// Time of the latest sampled segment, in units of 2^20 ns (about 1 ms).
    pub last: u32,
    /// Segments sampled per direction ([`SAMPLE_TO_SERVER`], [`SAMPLE_TO_CLIENT`]).
    pub segs: [u8; 2],
    /// [`SAMPLE_FLOW_DONE`] once a FIN or RST was sampled; the
    /// [`SAMPLE_FLOW_FULL`] bits of the directions past their cap.
    pub state: u8,
    /// Explicit padding.
    pub _pad: u8,
}

/// [`SampleFlow::state`]: the connection closed; nothing more is sampled.
pub const SAMPLE_FLOW_DONE: u8 = 1;
/// [`SampleFlow::state`], shifted left by the direction
/// ([`SAMPLE_TO_SERVER`], [`SAMPLE_TO_CLIENT`]): that direction reached
/// its segment cap. Lets the parser's call site skip a segment past its
/// sample with one bit test, without the cap setting.
pub const SAMPLE_FLOW_FULL: u8 = 2;
/// A slot idle this long (in [`SampleFlow::last`] units: 2^14 × 2^20 ns,
/// about 17 s) may be taken by another connection's data segment.
pub const SAMPLE_STALE_UNITS: u32 = 1 << 14;

/// Per-CPU byte budget of the sample ring ([`SAMPLE_BUDGET_MAP`]); credit
/// in ns, a record costing `bytes × ns_per_kib / 1024`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleBudget {
    /// Credit, ns.
    pub credit_ns: u64,
    /// Coarse time of the latest refill.
    pub last_ns: u64,
}

/// Slots of the per-source rate limiter of new sampled connections (8 bytes each).
pub const SAMPLE_SOURCE_SLOTS: u32 = 4096;
/// The per-source limit counts new sampled connections per window of 2^30 ns (about 1 s).
pub const SAMPLE_SOURCE_WINDOW_SHIFT: u32 = 30;

/// Default segments sampled per direction of a connection.
pub const DEFAULT_SAMPLE_SEGMENTS: u32 = 12;
/// Default bytes sampled of each segment.
pub const DEFAULT_SAMPLE_BYTES: u32 = 1024;
/// Default flow-table slots (×16 B = 1 MiB).
pub const DEFAULT_SAMPLE_FLOWS: u32 = 1 << 16;
/// Default sample ring size (a power of two, a multiple of the page size).
pub const DEFAULT_SAMPLE_RING_BYTES: u32 = 4 << 20;
/// Default sample bytes per CPU per second (ring bytes, headers included).
pub const DEFAULT_SAMPLE_BYTES_PER_CPU: u64 = 4 << 20;
/// Default new sampled connections per source per window (about 1 s).
pub const DEFAULT_SAMPLE_SOURCE_FLOWS: u32 = 32;

/// Name of the sample ring buffer.
pub const SAMPLES_MAP: &str = "SAMPLES";
/// Name of the sampling flow table (array of [`SampleFlow`]).
pub const SAMPLE_FLOWS_MAP: &str = "SAMPLE_FLOWS";
/// Name of the per-CPU sample budget (array of one [`SampleBudget`]).
pub const SAMPLE_BUDGET_MAP: &str = "SAMPLE_BUDGET";
/// Name of the per-source rate limiter (array of [`SAMPLE_SOURCE_SLOTS`] words).
pub const SAMPLE_SOURCES_MAP: &str = "SAMPLE_SOURCES";

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts() {
        assert_eq!(size_of::<SampleHeader>(), 72);
        assert_eq!(size_of::<SampleFlow>(), 16);
        assert_eq!(size_of::<SampleBudget>(), 16);
        assert_eq!(size_of::<SampleRecord<256>>(), 72 + 256);
        assert_eq!(size_of::<SampleRecord<0>>(), 72);
        assert!(SAMPLE_CLASSES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(SAMPLE_CLASSES[SAMPLE_CLASSES.len() - 1], SAMPLE_MAX_BYTES);
    }
}
