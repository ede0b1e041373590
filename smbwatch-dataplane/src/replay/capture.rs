//! Reading captures (pcap and pcapng) and turning their records into
//! Ethernet frames the XDP program can parse. Pure: no kernel, no clock.
//!
//! pcap-file 2.0 does the container parsing, with three exceptions handled
//! here, each for a reason:
//! - pcap records are read raw and validated here: pcap-file rejects records
//!   whose original length exceeds the snap length, which every capture taken
//!   with `tcpdump -s N` has.
//! - pcapng packet bodies (EPB, obsolete PB, SPB) are decoded here: pcap-file
//!   ignores `if_tsresol` (it takes EPB ticks as nanoseconds, while the
//!   default unit is microseconds) and misreads the obsolete PB timestamp on
//!   little-endian files; decoding the fixed fields ourselves also lets one
//!   bad block be counted and skipped instead of ending the replay.
//! - the link type is masked to its low 16 bits (the upper bits of the pcap
//!   header's field carry FCS information, not the type).
//!
//! This file reads records; `frame` turns them into Ethernet frames and
//! `pcapng` decodes the pcapng blocks read here.

mod frame;
mod pcapng;

use std::{
    borrow::Cow,
    io::{ErrorKind, Read},
    time::Duration,
};

use pcap_file::{
    pcap::{PcapHeader, PcapReader},
    pcapng::PcapNgReader,
    Endianness, PcapError, TsResolution,
};

pub use frame::{ethernet_frame, linktype, Skip, ETH_HLEN};
use pcapng::{interface, Fields, Interface, EPB, IDB, PB, SHB, SPB};

/// Which container the capture uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureFormat {
    /// Classic libpcap format.
    Pcap,
    /// pcapng.
    PcapNg,
}

impl std::fmt::Display for CaptureFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Pcap => "pcap",
            Self::PcapNg => "pcapng",
        })
    }
}

/// One packet record of a capture.
#[derive(Debug)]
pub struct Record<'a> {
    /// 1-based number of the record (pcapng: counting packet blocks only).
    pub number: u64,
    /// Byte offset of the record (or block) in the file.
    pub offset: u64,
    /// Capture time since the Unix epoch; `None` for pcapng simple packet
    /// blocks, which carry none.
    pub ts: Option<Duration>,
    /// Link type of the record's interface.
    pub link: u32,
    /// The record's interface: the pcapng interface id (0 in classic pcap,
    /// which has one).
    pub interface: u32,
    /// Length of the packet on the wire (may exceed `data.len()`).
    pub orig_len: u32,
    /// The captured bytes, link header included.
    pub data: &'a [u8],
}

/// A problem reading the capture.
#[derive(Debug)]
pub enum ReadProblem {
    /// The file ends inside a record: what a capture cut short looks like.
    /// Reading stops here.
    Truncated {
        /// Offset of the incomplete record.
        offset: u64,
        /// Bytes left in the file from there.
        remaining: u64,
    },
    /// A record whose framing cannot be trusted; reading stops here (pcap has
    /// no way to find the next record).
    Corrupt {
        /// Offset of the record.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// One pcapng packet block is malformed; it was skipped and reading goes on.
    BadBlock {
        /// Offset of the block.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// A packet names an interface the section never described; skipped.
    UnknownInterface {
        /// Offset of the block.
        offset: u64,
        /// The interface id.
        interface: u32,
    },
    /// Reading the file failed.
    Io(std::io::Error),
}

/// The reader after the 12 bytes read to tell the formats apart were put back.
type Src<R> = std::io::Chain<std::io::Cursor<[u8; 12]>, R>;

enum Inner<R: Read> {
    Pcap {
        reader: PcapReader<R>,
        header: PcapHeader,
    },
    PcapNg {
        reader: PcapNgReader<R>,
        endianness: Endianness,
        interfaces: Vec<Interface>,
    },
}

/// A capture opened for reading, pcap or pcapng, told apart by the magic number.
pub struct CaptureReader<R: Read> {
    inner: Inner<Src<R>>,
    /// pcapng packet bytes, copied out of the read buffer (see `next_record`).
    scratch: Vec<u8>,
    /// Total size, when known, to tell a truncated last record from a
    /// corrupt length in the middle.
    len: Option<u64>,
    /// Bytes consumed so far (header and whole records).
    offset: u64,
    number: u64,
    done: bool,
}

/// Records longer than this are corrupt, whatever the header's snap length
/// says (libpcap's own limit for its largest link types).
const MAX_RECORD: u32 = 256 * 1024;

/// Why a capture could not be opened.
#[derive(Debug)]
pub enum OpenProblem {
    /// Neither pcap nor pcapng magic.
    NotACapture {
        /// The first four bytes, as read in file order.
        magic: [u8; 4],
    },
    /// The file header is there but invalid or cut short.
    BadHeader(String),
    /// Reading the file failed.
    Io(std::io::Error),
}

impl<R: Read> CaptureReader<R> {
    /// Opens a capture whose total size is `len` (if known). Reads the first
    /// four bytes to choose the format.
    pub fn new(mut reader: R, len: Option<u64>) -> Result<Self, OpenProblem> {
        // 12 bytes: the pcap magic, or a pcapng section header's type,
        // length and byte-order magic. Both headers are longer.
        let mut head = [0u8; 12];
        reader.read_exact(&mut head).map_err(|e| {
            if e.kind() == ErrorKind::UnexpectedEof {
                OpenProblem::BadHeader("the file is shorter than any capture header".into())
            } else {
                OpenProblem::Io(e)
            }
        })?;
        let magic: [u8; 4] = head[..4].try_into().expect("4 bytes");
        let chained = std::io::Cursor::new(head).chain(reader);
        let (inner, offset) = match u32::from_be_bytes(magic) {
            SHB => {
                let reader = PcapNgReader::new(chained).map_err(header_problem)?;
                let endianness = reader.section().endianness;
                let len_bytes: [u8; 4] = head[4..8].try_into().expect("4 bytes");
                let shb_len = match endianness {
                    Endianness::Big => u32::from_be_bytes(len_bytes),
                    Endianness::Little => u32::from_le_bytes(len_bytes),
                };
                let inner = Inner::PcapNg {
                    reader,
                    endianness,
                    interfaces: Vec::new(),
                };
                (inner, u64::from(shb_len))
            }
            0xa1b2_c3d4 | 0xa1b2_3c4d | 0xd4c3_b2a1 | 0x4d3c_b2a1 => {
                let reader = PcapReader::new(chained).map_err(header_problem)?;
                let header = reader.header();
                (Inner::Pcap { reader, header }, 24)
            }
            _ => return Err(OpenProblem::NotACapture { magic }),
        };
        Ok(Self {
            inner,
            scratch: Vec::new(),
            len,
            offset,
            number: 0,
            done: false,
        })
    }

    /// The `if_name` of each pcapng interface described so far (by
    /// interface id; `None` where the capture gave none). Empty for pcap.
    pub fn interface_names(&self) -> Vec<Option<&str>> {
        match &self.inner {
            Inner::PcapNg { interfaces, .. } => {
                interfaces.iter().map(|i| i.name.as_deref()).collect()
            }
            Inner::Pcap { .. } => Vec::new(),
        }
    }

    /// Which container format.
    pub fn format(&self) -> CaptureFormat {
        match self.inner {
            Inner::Pcap { .. } => CaptureFormat::Pcap,
            Inner::PcapNg { .. } => CaptureFormat::PcapNg,
        }
    }

    /// The link type of a classic pcap (pcapng names one per interface).
    pub fn pcap_link(&self) -> Option<u32> {
        match &self.inner {
            Inner::Pcap { header, .. } => Some(u32::from(header.datalink) & 0xffff),
            Inner::PcapNg { .. } => None,
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next packet record, a problem, or `None` at the end. After
    /// `Truncated`, `Corrupt` or `Io` the reader returns `None`.
    pub fn next_record(&mut self) -> Option<Result<Record<'_>, ReadProblem>> {
        if self.done {
            return None;
        }
        let len = self.len;
        let offset = &mut self.offset;
        let number = &mut self.number;
        let done = &mut self.done;
        let scratch = &mut self.scratch;
        let eof_problem = |offset: u64| {
            match len {
            Some(len) if len.saturating_sub(offset) > u64::from(MAX_RECORD) + 16 => {
                ReadProblem::Corrupt {
                    offset,
                    detail: format!(
                        "the record's length runs past the end of a {len}-byte file; the record header is damaged"
                    ),
                }
            }
            _ => ReadProblem::Truncated {
                offset,
                remaining: len.map_or(0, |l| l.saturating_sub(offset)),
            },
        }
        };
        match &mut self.inner {
            Inner::Pcap { reader, header } => {
                let raw = match reader.next_raw_packet()? {
                    Ok(raw) => raw,
                    Err(e) => {
                        *done = true;
                        return Some(Err(read_problem(e, *offset, eof_problem)));
                    }
                };
                let at = *offset;
                *offset += 16 + u64::from(raw.incl_len);
                if raw.incl_len > MAX_RECORD.max(header.snaplen) {
                    *done = true;
                    return Some(Err(ReadProblem::Corrupt {
                        offset: at,
                        detail: format!(
                            "captured length {} exceeds the snap length {}",
                            raw.incl_len, header.snaplen
                        ),
                    }));
                }
                let nanos = match header.ts_resolution {
                    TsResolution::MicroSecond => u64::from(raw.ts_frac) * 1000,
                    TsResolution::NanoSecond => u64::from(raw.ts_frac),
                };
                // A fraction of a second or more in the fraction field is
                // carried into the seconds rather than rejected.
                let ts = Duration::from_secs(u64::from(raw.ts_sec)) + Duration::from_nanos(nanos);
                *number += 1;
                let data: &[u8] = match raw.data {
                    Cow::Borrowed(d) => d,
                    Cow::Owned(_) => unreachable!("raw pcap packets borrow the read buffer"),
                };
                Some(Ok(Record {
                    number: *number,
                    offset: at,
                    ts: Some(ts),
                    link: u32::from(header.datalink) & 0xffff,
                    interface: 0,
                    orig_len: raw.orig_len,
                    data,
                }))
            }
            Inner::PcapNg {
                reader,
                endianness,
                interfaces,
            } => {
                // The packet is copied to `scratch`: returning a borrow of the
                // read buffer from inside this loop is beyond the borrow checker.
                let (number, offset, ts, link, interface, orig_len) = loop {
                    let raw = match reader.next_raw_block()? {
                        Ok(raw) => raw,
                        Err(e) => {
                            *done = true;
                            return Some(Err(read_problem(e, *offset, eof_problem)));
                        }
                    };
                    let at = *offset;
                    *offset += u64::from(raw.initial_len);
                    let body: &[u8] = match raw.body {
                        Cow::Borrowed(b) => b,
                        Cow::Owned(_) => unreachable!("raw blocks borrow the read buffer"),
                    };
                    match raw.type_ {
                        SHB => {
                            // pcap-file validated the byte-order magic already.
                            *endianness = if body.starts_with(&[0x1a, 0x2b, 0x3c, 0x4d]) {
                                Endianness::Big
                            } else {
                                Endianness::Little
                            };
                            interfaces.clear();
                        }
                        IDB => {
                            let b = Fields::new(body, *endianness);
                            match interface(&b) {
                                Some(iface) => interfaces.push(iface),
                                None => {
                                    // Packets of later interfaces would be
                                    // misattributed: stop rather than guess.
                                    *done = true;
                                    return Some(Err(ReadProblem::Corrupt {
                                    offset: at,
                                    detail: "interface description block shorter than its fixed fields".into(),
                                }));
                                }
                            }
                        }
                        EPB | PB => {
                            let b = Fields::new(body, *endianness);
                            let iface_id = if raw.type_ == EPB {
                                b.u32(0)
                            } else {
                                b.u16(0).map(u32::from)
                            };
                            let (Some(iface_id), Some(hi), Some(lo), Some(cap), Some(orig)) =
                                (iface_id, b.u32(4), b.u32(8), b.u32(12), b.u32(16))
                            else {
                                return Some(Err(ReadProblem::BadBlock {
                                    offset: at,
                                    detail: "packet block shorter than its fixed fields".into(),
                                }));
                            };
                            let Some(data) = body.get(20..20 + cap as usize) else {
                                return Some(Err(ReadProblem::BadBlock {
                                    offset: at,
                                    detail: format!(
                                        "packet block: captured length {cap} exceeds the block"
                                    ),
                                }));
                            };
                            let Some(iface) = interfaces.get(iface_id as usize) else {
                                return Some(Err(ReadProblem::UnknownInterface {
                                    offset: at,
                                    interface: iface_id,
                                }));
                            };
                            *number += 1;
                            let ticks = (u64::from(hi) << 32) | u64::from(lo);
                            scratch.clear();
                            scratch.extend_from_slice(data);
                            break (
                                *number,
                                at,
                                iface.timestamp(ticks),
                                iface.link,
                                iface_id,
                                orig,
                            );
                        }
                        SPB => {
                            let Some(orig) = Fields::new(body, *endianness).u32(0) else {
                                return Some(Err(ReadProblem::BadBlock {
                                    offset: at,
                                    detail: "simple packet block without its length field".into(),
                                }));
                            };
                            let Some(iface) = interfaces.first() else {
                                return Some(Err(ReadProblem::UnknownInterface {
                                    offset: at,
                                    interface: 0,
                                }));
                            };
                            // The body is padded to 4 bytes: the packet is the
                            // original length, or all of the body if it was cut
                            // to the snap length.
                            let avail = &body[4..];
                            let data = &avail[..avail.len().min(orig as usize)];
                            *number += 1;
                            scratch.clear();
                            scratch.extend_from_slice(data);
                            break (*number, at, None, iface.link, 0, orig);
                        }
                        // Name resolution, statistics, journal, custom: not packets.
                        _ => {}
                    }
                };
                Some(Ok(Record {
                    number,
                    offset,
                    ts,
                    link,
                    interface,
                    orig_len,
                    data: &scratch[..],
                }))
            }
        }
    }
}

fn header_problem(e: PcapError) -> OpenProblem {
    match e {
        PcapError::IoError(e) if e.kind() == ErrorKind::UnexpectedEof => {
            OpenProblem::BadHeader("the file ends inside its header".into())
        }
        PcapError::IoError(e) => OpenProblem::Io(e),
        other => OpenProblem::BadHeader(other.to_string()),
    }
}

/// A reader error as a [`ReadProblem`] at `offset`; an early end of file is
/// what `eof` makes of it (a truncated last record).
fn read_problem(e: PcapError, offset: u64, eof: impl FnOnce(u64) -> ReadProblem) -> ReadProblem {
    match e {
        PcapError::IoError(e) if e.kind() == ErrorKind::UnexpectedEof => eof(offset),
        PcapError::IoError(e) => ReadProblem::Io(e),
        other => ReadProblem::Corrupt {
            offset,
            detail: other.to_string(),
        },
    }
}
