//! SMB payload samples seen from user space: the loader's sampling options,
//! the decoder of the sample ring's records, and its drain.
//!
//! The kernel side is `smbwatch-ebpf/src/sample.rs`; the record layout is
//! `smbwatch_common::sample`. A record that does not decode is counted,
//! never trusted and never a panic.

use std::net::{IpAddr, SocketAddr};

use aya::maps::{MapData, RingBuf};
use smbwatch_common::{
    sample::{
        SampleHeader, DEFAULT_SAMPLE_BYTES, DEFAULT_SAMPLE_BYTES_PER_CPU, DEFAULT_SAMPLE_FLOWS,
        DEFAULT_SAMPLE_RING_BYTES, DEFAULT_SAMPLE_SEGMENTS, DEFAULT_SAMPLE_SOURCE_FLOWS,
        SAMPLE_CLASSES, SAMPLE_FLAG_FIN, SAMPLE_FLAG_RST, SAMPLE_FLAG_SYN, SAMPLE_FLAG_VLAN,
        SAMPLE_MAX_BYTES, SAMPLE_MAX_SEGMENTS, SAMPLE_TO_CLIENT, SAMPLE_TO_SERVER,
    },
    Settings,
};

use chrono::{DateTime, Utc};
use smbwatch_core::{
    event::MacAddr,
    settings::{invalid, Invalid},
    smb::{Direction, SmbSample},
};

use super::addr_to_ip;

/// How much of each monitored-port connection the kernel samples, and the
/// bounds on what sampling may cost.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SampleOptions {
    /// Segments sampled per direction of a connection (0 turns sampling
    /// off; at most [`SAMPLE_MAX_SEGMENTS`]).
    pub segments: u32,
    /// Bytes sampled of each segment (1 to [`SAMPLE_MAX_BYTES`]).
    pub bytes: u32,
    /// Slots of the flow table (rounded up to a power of two; 16 bytes each).
    pub flows: u32,
    /// Sample ring bytes per CPU per second, headers included; 0: no budget.
    pub bytes_per_cpu: u64,
    /// New sampled connections per source per second (about); 0: no limit.
    /// At most 255.
    pub source_flows: u32,
    /// Size of the sample ring buffer (a power of two, at least a page).
    pub ring_bytes: u32,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            segments: DEFAULT_SAMPLE_SEGMENTS,
            bytes: DEFAULT_SAMPLE_BYTES,
            flows: DEFAULT_SAMPLE_FLOWS,
            bytes_per_cpu: DEFAULT_SAMPLE_BYTES_PER_CPU,
            source_flows: DEFAULT_SAMPLE_SOURCE_FLOWS,
            ring_bytes: DEFAULT_SAMPLE_RING_BYTES,
        }
    }
}

impl SampleOptions {
    /// Checks the ranges the kernel relies on; the error names the key
    /// (`dataplane.sampling.bytes`).
    pub fn validate(&self) -> Result<(), Invalid> {
        let bad = |what: &str, value: u64, allowed: &str| {
            invalid(
                format!("dataplane.sampling.{what}"),
                format!("{value}: give {allowed}"),
            )
        };
        if self.segments > SAMPLE_MAX_SEGMENTS {
            return bad("segments", self.segments.into(), "0 (off) to 255");
        }
        if self.bytes == 0 || self.bytes as usize > SAMPLE_MAX_BYTES {
            return bad("bytes", self.bytes.into(), "1 to 4096");
        }
        if self.source_flows > 255 {
            return bad(
                "source_flows",
                self.source_flows.into(),
                "0 (no limit) to 255",
            );
        }
        if !self.ring_bytes.is_power_of_two() || self.ring_bytes < 4096 {
            return bad(
                "ring_bytes",
                self.ring_bytes.into(),
                "a power of two, at least 4096",
            );
        }
        if self.flows == 0 || self.flows > 1 << 24 {
            return bad("flows", self.flows.into(), "1 to 16,777,216");
        }
        Ok(())
    }

    /// Flow-table slots: a power of two.
    pub fn flow_slots(&self) -> u32 {
        self.flows.max(1).next_power_of_two()
    }

    /// Writes the sampling fields of `s`. Replay (`replay`) samples without
    /// a budget or a per-source rate: it drains after every packet and must
    /// see everything, as for events.
    pub(crate) fn apply(&self, s: &mut Settings, replay: bool) {
        s.sample_segments = self.segments;
        s.sample_bytes = self.bytes;
        s.sample_flow_mask = self.flow_slots() - 1;
        s.sample_source_flows = if replay { 0 } else { self.source_flows };
        s.sample_ns_per_kib = if replay {
            0
        } else {
            (1_000_000_000u64 * 1024)
                .checked_div(self.bytes_per_cpu)
                .map_or(0, |c| c.max(1))
        };
        // A quarter of a second of samples may come at once.
        s.sample_burst_ns = 250_000_000;
    }
}

/// Which way a sampled segment went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleDirection {
    /// Client to server (towards the monitored port).
    ToServer,
    /// Server to client.
    ToClient,
}

/// One decoded sample record: a TCP segment of a sampled connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSample<'a> {
    /// Kernel time (`bpf_ktime_get_ns`), or in replay capture time (ns
    /// since the Unix epoch).
    pub ts_ns: u64,
    /// The client's address and port.
    pub client: SocketAddr,
    /// The server's address and (monitored) port.
    pub server: SocketAddr,
    /// Which way the segment went.
    pub direction: SampleDirection,
    /// The segment's sequence number.
    pub seq: u32,
    /// Its acknowledgement number.
    pub ack: u32,
    /// Payload bytes on the wire (`data` may hold fewer).
    pub wire_len: u32,
    /// The captured payload: the first bytes of the segment's.
    pub data: &'a [u8],
    /// Ingress interface (replay: the capture's interface id).
    pub ifindex: u32,
    /// The frame's source MAC.
    pub src_mac: [u8; 6],
    /// Outer VLAN id, when tagged.
    pub vlan: Option<u16>,
    /// A SYN-ACK record ([`SAMPLE_FLAG_SYN`]; the kernel sends none).
    pub syn: bool,
    /// FIN or RST set: the connection is closing.
    pub fin_or_rst: bool,
}

/// Why a sample record was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SampleDecodeError {
    /// Shorter than the header.
    #[error("sample record of {len} bytes, shorter than its {need}-byte header")]
    Short {
        /// The record's length.
        len: usize,
        /// The header's.
        need: usize,
    },
    /// A direction byte that is neither value.
    #[error("sample record with direction {0}")]
    Direction(u8),
    /// More captured bytes claimed than the record holds or the wire had.
    #[error("sample record claims {cap} captured bytes; it holds {room}, the wire had {wire}")]
    Length {
        /// The claimed captured length.
        cap: usize,
        /// Bytes the record holds after the header.
        room: usize,
        /// The wire length.
        wire: u32,
    },
}

/// Decodes one sample record.
pub fn decode_sample(bytes: &[u8]) -> Result<KernelSample<'_>, SampleDecodeError> {
    let need = std::mem::size_of::<SampleHeader>();
    if bytes.len() < need {
        return Err(SampleDecodeError::Short {
            len: bytes.len(),
            need,
        });
    }
    // SAFETY: SampleHeader is repr(C) plain integers and the length was
    // checked; the ring only guarantees 8-byte alignment: read unaligned.
    let h = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<SampleHeader>()) };
    let direction = match h.direction {
        SAMPLE_TO_SERVER => SampleDirection::ToServer,
        SAMPLE_TO_CLIENT => SampleDirection::ToClient,
        other => return Err(SampleDecodeError::Direction(other)),
    };
    let cap = usize::from(h.cap_len);
    let room = bytes.len() - need;
    if cap > room || cap as u64 > u64::from(h.wire_len) || cap > SAMPLE_MAX_BYTES {
        return Err(SampleDecodeError::Length {
            cap,
            room,
            wire: h.wire_len,
        });
    }
    let ip = |k| -> IpAddr { addr_to_ip(k) };
    Ok(KernelSample {
        ts_ns: h.ts_ns,
        client: SocketAddr::new(ip(&h.client), h.client_port),
        server: SocketAddr::new(ip(&h.server), h.server_port),
        direction,
        seq: h.seq,
        ack: h.ack,
        wire_len: h.wire_len,
        data: &bytes[need..need + cap],
        ifindex: h.ifindex,
        src_mac: h.src_mac,
        vlan: (h.flags & SAMPLE_FLAG_VLAN != 0).then_some(h.vlan),
        syn: h.flags & SAMPLE_FLAG_SYN != 0,
        fin_or_rst: h.flags & (SAMPLE_FLAG_FIN | SAMPLE_FLAG_RST) != 0,
    })
}

/// The core's [`SmbSample`] of a kernel sample, stamped `ts` (the daemon's
/// clock conversion, or replay's capture time). `None` for the SYN-ACK
/// record: it carries no payload, and the parser starts each direction at
/// its first payload segment.
pub fn to_smb_sample<'a>(k: &KernelSample<'a>, ts: DateTime<Utc>) -> Option<SmbSample<'a>> {
    if k.syn {
        return None;
    }
    Some(SmbSample {
        ts,
        client: k.client,
        server: k.server,
        direction: match k.direction {
            SampleDirection::ToServer => Direction::ToServer,
            SampleDirection::ToClient => Direction::ToClient,
        },
        seq: k.seq,
        wire_len: k.wire_len,
        data: k.data,
        src_mac: (k.src_mac != [0; 6]).then_some(MacAddr(k.src_mac)),
        vlan: k.vlan,
        fin_or_rst: k.fin_or_rst,
    })
}

/// The largest record the kernel writes (header and the largest class).
pub const MAX_SAMPLE_RECORD: usize =
    std::mem::size_of::<SampleHeader>() + SAMPLE_CLASSES[SAMPLE_CLASSES.len() - 1];

/// What one [`drain_samples`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SamplesDrained {
    /// Records read.
    pub records: u64,
    /// Records that did not decode (skipped, counted).
    pub malformed: u64,
}

/// Reads up to `max` records of the sample ring (0: all), in order, handing
/// each decoded sample to `f`: the one reader for the daemon, replay and
/// the tests.
pub fn drain_samples(
    rb: &mut RingBuf<MapData>,
    max: u64,
    mut f: impl FnMut(&KernelSample<'_>),
) -> SamplesDrained {
    let mut n = SamplesDrained::default();
    while max == 0 || n.records < max {
        let Some(item) = rb.next() else { break };
        n.records += 1;
        match decode_sample(&item) {
            Ok(s) => f(&s),
            Err(e) => {
                n.malformed += 1;
                tracing::debug!(error = %e, "sample record skipped");
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use smbwatch_common::AddrKey;

    fn record(h: &SampleHeader, data: &[u8]) -> Vec<u8> {
        // SAFETY: SampleHeader is plain data.
        let head = unsafe {
            std::slice::from_raw_parts(
                (h as *const SampleHeader).cast::<u8>(),
                std::mem::size_of::<SampleHeader>(),
            )
        };
        let mut v = head.to_vec();
        v.extend_from_slice(data);
        v
    }

    fn header() -> SampleHeader {
        SampleHeader {
            ts_ns: 7,
            client: AddrKey::from_v4([192, 0, 2, 1]),
            server: AddrKey::from_v4([198, 51, 100, 2]),
            seq: 1000,
            ack: 2000,
            wire_len: 5,
            ifindex: 3,
            client_port: 40000,
            server_port: 445,
            cap_len: 3,
            vlan: 12,
            direction: SAMPLE_TO_CLIENT,
            flags: SAMPLE_FLAG_VLAN | SAMPLE_FLAG_FIN,
            src_mac: [2, 0, 0, 0, 0, 1],
        }
    }

    #[test]
    fn decodes_a_record_and_its_bytes() {
        let bytes = record(&header(), &[1, 2, 3, 0, 0, 0]);
        let s = decode_sample(&bytes).unwrap();
        assert_eq!(s.client, "192.0.2.1:40000".parse().unwrap());
        assert_eq!(s.server, "198.51.100.2:445".parse().unwrap());
        assert_eq!(s.direction, SampleDirection::ToClient);
        assert_eq!((s.seq, s.ack, s.wire_len), (1000, 2000, 5));
        assert_eq!(s.data, &[1, 2, 3]);
        assert_eq!(s.vlan, Some(12));
        assert!(s.fin_or_rst && !s.syn);
    }

    #[test]
    fn samples_become_the_cores_and_the_synack_does_not() {
        let bytes = record(&header(), &[1, 2, 3]);
        let k = decode_sample(&bytes).unwrap();
        let ts = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let s = to_smb_sample(&k, ts).unwrap();
        assert_eq!(s.direction, Direction::ToClient);
        assert_eq!((s.seq, s.wire_len, s.data), (1000, 5, &[1u8, 2, 3][..]));
        assert_eq!(s.src_mac, Some(MacAddr([2, 0, 0, 0, 0, 1])));
        assert!(s.fin_or_rst);
        let mut h = header();
        h.flags = SAMPLE_FLAG_SYN;
        h.cap_len = 0;
        let bytes = record(&h, &[]);
        assert!(to_smb_sample(&decode_sample(&bytes).unwrap(), ts).is_none());
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        assert!(matches!(
            decode_sample(&[0u8; 10]),
            Err(SampleDecodeError::Short { len: 10, .. })
        ));
        let mut h = header();
        h.direction = 9;
        assert_eq!(
            decode_sample(&record(&h, &[0; 8])),
            Err(SampleDecodeError::Direction(9))
        );
        let mut h = header();
        h.cap_len = 100; // more than the record holds
        assert!(matches!(
            decode_sample(&record(&h, &[0; 8])),
            Err(SampleDecodeError::Length { cap: 100, .. })
        ));
        let mut h = header();
        h.cap_len = 6; // more than the wire had
        assert!(decode_sample(&record(&h, &[0; 8])).is_err());
        // Every prefix and every single-byte corruption: no panic.
        let good = record(&header(), &[1, 2, 3]);
        for n in 0..good.len() {
            let _ = decode_sample(&good[..n]);
            let mut bad = good.clone();
            bad[n] ^= 0xff;
            let _ = decode_sample(&bad);
        }
    }

    #[test]
    fn options_are_checked_and_replay_is_unbounded() {
        assert!(SampleOptions::default().validate().is_ok());
        for bad in [
            SampleOptions {
                segments: 256,
                ..Default::default()
            },
            SampleOptions {
                bytes: 0,
                ..Default::default()
            },
            SampleOptions {
                bytes: 4097,
                ..Default::default()
            },
            SampleOptions {
                ring_bytes: 5000,
                ..Default::default()
            },
            SampleOptions {
                source_flows: 300,
                ..Default::default()
            },
        ] {
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains("sampling"), "{e}");
        }
        let mut s = Settings::default();
        SampleOptions::default().apply(&mut s, false);
        assert_eq!(s.sample_ns_per_kib, 1_000_000_000 * 1024 / (4 << 20));
        assert_eq!(s.sample_source_flows, 32);
        SampleOptions::default().apply(&mut s, true);
        assert_eq!((s.sample_ns_per_kib, s.sample_source_flows), (0, 0));
        let flows = SampleOptions {
            flows: 1000,
            ..Default::default()
        };
        assert_eq!(flows.flow_slots(), 1024);
    }
}
