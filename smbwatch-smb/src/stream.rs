//! One direction of a TCP connection, reassembled from payload segments and
//! cut into NetBIOS session messages (RFC 1002 4.3; "direct TCP" SMB over
//! port 445 uses the same 4-byte header with a 24-bit length, MS-SMB2 2.1).
//!
//! What it could not see is said, not guessed: bytes missing between two
//! segments (a gap), bytes a sample cut off (a segment longer on the wire
//! than what was copied), and the end of the sample in the middle of a
//! message are reported as [`StreamEvent::Unseen`], and a message with
//! missing bytes is marked [`Cut::Unseen`]. Because the NetBIOS length says
//! where the next message starts, the framing survives a hole inside a
//! message; a hole over a header loses it, and the stream resynchronises on
//! the next `length + 0xFE/0xFF/0xFD "SMB"` it sees (reported with the
//! bytes it skipped).
//!
//! Bounded: at most [`MAX_PENDING_SEGMENTS`] out-of-order segments
//! ([`MAX_PENDING_BYTES`] bytes) wait for a hole to fill; beyond that the
//! hole is declared a gap. Of each message only the first
//! [`MAX_MESSAGE_PREFIX`] bytes are kept (headers, names, RPC headers all
//! sit there); the rest is counted and skipped.

/// Bytes of each NetBIOS message kept for parsing.
pub const MAX_MESSAGE_PREFIX: usize = 16 * 1024;
/// Out-of-order segments held while waiting for the hole before them.
pub const MAX_PENDING_SEGMENTS: usize = 8;
/// Bytes of out-of-order segments held.
pub const MAX_PENDING_BYTES: usize = 16 * 1024;

/// One TCP payload segment as captured.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    /// TCP sequence number of the first payload byte.
    pub seq: u32,
    /// The payload bytes that were captured (possibly a prefix).
    pub data: &'a [u8],
    /// The payload length on the wire (`>= data.len()`; more when the
    /// sample copied only the first bytes).
    pub wire_len: u32,
}

impl<'a> Segment<'a> {
    /// A segment captured whole.
    pub fn whole(seq: u32, data: &'a [u8]) -> Self {
        Self {
            seq,
            data,
            wire_len: u32::try_from(data.len()).unwrap_or(u32::MAX),
        }
    }
}

/// How much of a message was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Every byte.
    Complete,
    /// Every byte was on the wire in order, but only the first
    /// [`MAX_MESSAGE_PREFIX`] were kept.
    Prefix,
    /// Some bytes of it were not seen (gap, sample cut, end of sample).
    Unseen,
}

/// A NetBIOS session message (type 0x00): its first bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The bytes kept: the message from its start, up to the first hole or
    /// [`MAX_MESSAGE_PREFIX`].
    pub bytes: Vec<u8>,
    /// The length the NetBIOS header declared.
    pub declared: u32,
    /// How much of it was seen.
    pub cut: Cut,
}

/// Why stream bytes were not seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hole {
    /// Sequence space between two captured segments.
    Gap,
    /// A captured segment was shorter than on the wire (the sample's
    /// per-segment limit).
    SampleCut,
    /// The sample (or capture) ended inside a message.
    SampleEnd,
    /// Bytes skipped while looking for the next message header after the
    /// framing was lost.
    Resync,
}

/// What the stream yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// A session message (complete or not, see [`Message::cut`]).
    Message(Message),
    /// Bytes that were not seen (or not understood as framing).
    Unseen {
        /// Why.
        hole: Hole,
        /// How many bytes (for [`Hole::SampleEnd`], how many the open
        /// message still lacked).
        bytes: u64,
    },
}

/// Counters of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamCounters {
    /// Segments fed.
    pub segments: u64,
    /// Segments entirely before the next expected byte (retransmissions).
    pub retransmitted: u64,
    /// Segments that arrived ahead of a hole and were held.
    pub reordered: u64,
    /// Holes declared because the out-of-order hold was full or the sample
    /// ended.
    pub gaps: u64,
    /// Session messages completed or cut.
    pub messages: u64,
    /// NetBIOS messages of other types (session request, keepalive…).
    pub control: u64,
    /// Message bytes past [`MAX_MESSAGE_PREFIX`], skipped.
    pub skipped_bytes: u64,
}

#[derive(Debug)]
enum Framing {
    Header { buf: [u8; 4], n: usize },
    Body(Body),
    Lost { tail: Vec<u8> },
}

#[derive(Debug)]
struct Body {
    declared: u32,
    remaining: u32,
    /// `None` for non-session messages (their bodies are not kept).
    buf: Option<Vec<u8>>,
    cut: Cut,
}

/// One direction of a connection.
#[derive(Debug)]
pub struct Stream {
    next: Option<u32>,
    pending: Vec<(u32, Vec<u8>, u32)>,
    pending_bytes: usize,
    framing: Framing,
    counters: StreamCounters,
}

impl Default for Stream {
    fn default() -> Self {
        Self::new()
    }
}

/// `a - b` in sequence space (RFC 793 modular comparison).
fn seq_diff(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b) as i32)
}

impl Stream {
    /// A stream whose first segment defines where it starts.
    pub fn new() -> Self {
        Self {
            next: None,
            pending: Vec::new(),
            pending_bytes: 0,
            framing: Framing::Header { buf: [0; 4], n: 0 },
            counters: StreamCounters::default(),
        }
    }

    /// A stream whose first payload byte has sequence number `seq` (the
    /// SYN's sequence number plus one): a first segment after it is a gap.
    pub fn starting_at(seq: u32) -> Self {
        Self {
            next: Some(seq),
            ..Self::new()
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> StreamCounters {
        self.counters
    }

    /// Heap bytes held (held-back segments, the message being read), for
    /// a caller that bounds many streams in bytes.
    pub fn heap_bytes(&self) -> usize {
        let held: usize = self.pending.iter().map(|(_, b, _)| b.capacity()).sum();
        let framing = match &self.framing {
            Framing::Header { .. } => 0,
            Framing::Body(b) => b.buf.as_ref().map_or(0, Vec::capacity),
            Framing::Lost { tail } => tail.capacity(),
        };
        held + self.pending.capacity() * std::mem::size_of::<(u32, Vec<u8>, u32)>() + framing
    }

    /// Feeds one segment; what it completes is pushed to `out`.
    pub fn push(&mut self, seg: Segment<'_>, out: &mut Vec<StreamEvent>) {
        self.counters.segments += 1;
        let data = &seg.data[..seg.data.len().min(seg.wire_len as usize)];
        let wire_len = seg.wire_len;
        let next = *self.next.get_or_insert(seg.seq);
        let ahead = seq_diff(seg.seq, next);
        if ahead > 0 {
            self.hold(seg.seq, data, wire_len, out);
            return;
        }
        // Drop what was already seen (retransmission, overlap).
        let behind = ahead.unsigned_abs();
        if behind >= u64::from(wire_len) {
            if wire_len > 0 {
                self.counters.retransmitted += 1;
            }
            return;
        }
        let behind = behind as usize; // < wire_len <= u32::MAX
        let data = data.get(behind..).unwrap_or(&[]);
        self.consume(data, wire_len - behind as u32, out);
        self.drain_pending(out);
    }

    /// Declares the end of what will be seen: held segments after holes are
    /// consumed (the holes reported), and an open message is cut.
    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        while !self.pending.is_empty() {
            self.skip_to_first_pending(out);
            self.drain_pending(out);
        }
        match std::mem::replace(&mut self.framing, Framing::Header { buf: [0; 4], n: 0 }) {
            Framing::Header { n, .. } if n > 0 => out.push(StreamEvent::Unseen {
                hole: Hole::SampleEnd,
                bytes: (4 - n) as u64,
            }),
            Framing::Body(body) => {
                out.push(StreamEvent::Unseen {
                    hole: Hole::SampleEnd,
                    bytes: u64::from(body.remaining),
                });
                self.emit(
                    Body {
                        cut: Cut::Unseen,
                        ..body
                    },
                    out,
                );
            }
            _ => {}
        }
    }

    fn hold(&mut self, seq: u32, data: &[u8], wire_len: u32, out: &mut Vec<StreamEvent>) {
        self.counters.reordered += 1;
        let pos = self
            .pending
            .iter()
            .position(|(s, _, _)| seq_diff(*s, seq) > 0)
            .unwrap_or(self.pending.len());
        self.pending_bytes += data.len();
        self.pending.insert(pos, (seq, data.to_vec(), wire_len));
        while self.pending.len() > MAX_PENDING_SEGMENTS || self.pending_bytes > MAX_PENDING_BYTES {
            self.skip_to_first_pending(out);
            self.drain_pending(out);
        }
    }

    /// Declares the hole before the first held segment.
    fn skip_to_first_pending(&mut self, out: &mut Vec<StreamEvent>) {
        let (Some(next), Some(&(seq, _, _))) = (self.next, self.pending.first()) else {
            return;
        };
        let hole = seq_diff(seq, next);
        if hole > 0 {
            self.counters.gaps += 1;
            self.unseen(hole as u64, Hole::Gap, out);
            self.next = Some(seq);
        }
    }

    fn drain_pending(&mut self, out: &mut Vec<StreamEvent>) {
        while let Some(next) = self.next {
            let Some((seq, _, _)) = self.pending.first() else {
                return;
            };
            if seq_diff(*seq, next) > 0 {
                return;
            }
            let (seq, data, wire_len) = self.pending.remove(0);
            self.pending_bytes -= data.len();
            let behind = seq_diff(next, seq).unsigned_abs();
            if behind >= u64::from(wire_len) {
                continue;
            }
            let d = data.get(behind as usize..).unwrap_or(&[]);
            self.consume(d, wire_len - behind as u32, out);
        }
    }

    /// In-order bytes: `data` seen, then `wire_len - data.len()` not seen.
    fn consume(&mut self, data: &[u8], wire_len: u32, out: &mut Vec<StreamEvent>) {
        if let Some(n) = self.next.as_mut() {
            *n = n.wrapping_add(wire_len);
        }
        self.frame(data, out);
        let cut = u64::from(wire_len).saturating_sub(data.len() as u64);
        if cut > 0 {
            self.unseen(cut, Hole::SampleCut, out);
        }
    }

    /// Runs the framing over bytes that were not seen.
    fn unseen(&mut self, mut bytes: u64, hole: Hole, out: &mut Vec<StreamEvent>) {
        out.push(StreamEvent::Unseen { hole, bytes });
        while bytes > 0 {
            match &mut self.framing {
                Framing::Body(body) => {
                    body.cut = Cut::Unseen;
                    let n = bytes.min(u64::from(body.remaining)) as u32;
                    body.remaining -= n;
                    bytes -= u64::from(n);
                    if body.remaining == 0 {
                        self.end_body(out);
                    }
                }
                Framing::Header { .. } | Framing::Lost { .. } => {
                    // A header fell into the hole: where the next message
                    // starts is not known any more.
                    self.framing = Framing::Lost { tail: Vec::new() };
                    return;
                }
            }
        }
    }

    fn end_body(&mut self, out: &mut Vec<StreamEvent>) {
        if let Framing::Body(body) =
            std::mem::replace(&mut self.framing, Framing::Header { buf: [0; 4], n: 0 })
        {
            self.emit(body, out);
        }
    }

    fn emit(&mut self, body: Body, out: &mut Vec<StreamEvent>) {
        if let Some(bytes) = body.buf {
            self.counters.messages += 1;
            out.push(StreamEvent::Message(Message {
                bytes,
                declared: body.declared,
                cut: body.cut,
            }));
        }
    }

    /// Runs the framing over seen bytes.
    fn frame(&mut self, mut data: &[u8], out: &mut Vec<StreamEvent>) {
        while !data.is_empty() {
            match &mut self.framing {
                Framing::Header { buf, n } => {
                    let take = (4 - *n).min(data.len());
                    buf[*n..*n + take].copy_from_slice(&data[..take]);
                    *n += take;
                    data = &data[take..];
                    if *n == 4 {
                        let h = *buf;
                        self.start_body(h, out);
                    }
                }
                Framing::Body(body) => {
                    let take = (body.remaining as usize).min(data.len());
                    // After a hole the bytes no longer continue the kept
                    // prefix: they are passed over, not appended.
                    if let Some(buf) = body.buf.as_mut().filter(|_| body.cut != Cut::Unseen) {
                        let room = MAX_MESSAGE_PREFIX.saturating_sub(buf.len());
                        let keep = room.min(take);
                        buf.extend_from_slice(&data[..keep]);
                        if keep < take {
                            if body.cut == Cut::Complete {
                                body.cut = Cut::Prefix;
                            }
                            self.counters.skipped_bytes += (take - keep) as u64;
                        }
                    }
                    body.remaining -= take as u32;
                    data = &data[take..];
                    if body.remaining == 0 {
                        self.end_body(out);
                    }
                }
                Framing::Lost { tail } => {
                    let old = tail.len();
                    tail.extend_from_slice(&data[..data.len().min(64 * 1024)]);
                    let consumed = tail.len() - old;
                    data = &data[consumed..];
                    match find_header(tail) {
                        Some(at) => {
                            let rest = tail.split_off(at);
                            out.push(StreamEvent::Unseen {
                                hole: Hole::Resync,
                                bytes: at as u64,
                            });
                            self.framing = Framing::Header { buf: [0; 4], n: 0 };
                            // `rest` holds at most 64 KiB + 7 bytes, fed once.
                            self.frame(&rest, out);
                        }
                        None => {
                            // Keep the last 7 bytes: a header may straddle.
                            let keep_from = tail.len().saturating_sub(7);
                            if keep_from > 0 {
                                out.push(StreamEvent::Unseen {
                                    hole: Hole::Resync,
                                    bytes: keep_from as u64,
                                });
                                tail.drain(..keep_from);
                            }
                        }
                    }
                }
            }
        }
    }

    fn start_body(&mut self, h: [u8; 4], out: &mut Vec<StreamEvent>) {
        let (declared, keep) = match h[0] {
            // Session message; direct TCP allows a 24-bit length.
            0x00 => (u32::from_be_bytes([0, h[1], h[2], h[3]]), true),
            // Session request/response/retarget/keepalive: 17-bit length.
            0x81..=0x85 => (
                u32::from(h[1] & 1) << 16 | u32::from(u16::from_be_bytes([h[2], h[3]])),
                false,
            ),
            _ => {
                self.framing = Framing::Lost { tail: Vec::new() };
                self.frame(&h, out);
                return;
            }
        };
        if !keep {
            self.counters.control += 1;
        }
        let body = Body {
            declared,
            remaining: declared,
            buf: keep.then(|| Vec::with_capacity((declared as usize).min(4096))),
            cut: Cut::Complete,
        };
        if declared == 0 {
            self.framing = Framing::Header { buf: [0; 4], n: 0 };
            self.emit(body, out);
        } else {
            self.framing = Framing::Body(body);
        }
    }
}

/// Where a NetBIOS session header followed by an SMB protocol id starts.
fn find_header(b: &[u8]) -> Option<usize> {
    b.windows(8).position(|w| {
        w[0] == 0
            && matches!(w[4], 0xFD..=0xFF)
            && &w[5..8] == b"SMB"
            && u32::from_be_bytes([0, w[1], w[2], w[3]]) >= 32
    })
}

#[cfg(test)]
mod tests;
