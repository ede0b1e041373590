//! The pair cache's layout: a bucket of ways, each a keyed tag with its
//! activity epoch, where the pair came in, and what was last reported.

use crate::AddrKey;

/// Key of a pair: client and server of a monitored-port connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PairKey {
    /// The host that sent the SYN.
    pub src: AddrKey,
    /// The host it was sent to.
    pub dst: AddrKey,
}

/// One way of a pair-cache bucket ([`PairBucket`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairSlot {
    /// The pair's tag in the high 48 bits (a keyed hash of (source,
    /// destination) with bit 16 set, so a used way is never 0) and, in the
    /// low 16 bits, the activity epoch in which the pair was last reported
    /// (see [`slot_word`]). 0 = empty. Claimed with compare-and-swap, both
    /// for a new pair and for a known pair's first SYN in a new epoch, so
    /// exactly one CPU reports either.
    pub word: u64,
    /// Where the epoch's first SYN came in: the ingress (interface index, or
    /// the replay interface id) xor its outer VLAN shifted by 20 bits
    /// ([`origin`]): exact while interface indices stay below 2^20.
    pub origin: u32,
    /// SYNs of the pair since its latest contact report (saturating).
    pub syns: u16,
    /// A [`PairState`] as a byte: the outcome last reported.
    pub state: u8,
    /// `PAIR_FLAG_*` bits.
    pub flags: u8,
}

/// Bits of [`PairSlot::word`] that hold the epoch.
pub const EPOCH_MASK: u64 = 0xffff;

/// A pair's tag from its 64-bit keyed hash: the high 48 bits, bit 16 set.
#[inline(always)]
pub const fn pair_tag(hash: u64) -> u64 {
    (hash & !EPOCH_MASK) | (1 << 16)
}

/// The slot word for `tag` reported in `epoch` (its low 16 bits are kept:
/// a pair idle for exactly a multiple of 65,536 epochs, 45 days at one
/// minute, is taken as still in its epoch once).
#[inline(always)]
pub const fn slot_word(tag: u64, epoch: u64) -> u64 {
    tag | (epoch & EPOCH_MASK)
}

/// [`PairSlot::origin`] of an ingress and outer VLAN.
#[inline(always)]
pub const fn origin(ingress: u32, vlan: u16) -> u32 {
    ingress ^ ((vlan as u32) << 20)
}

/// A bucket of the direct-mapped, 4-way set-associative pair cache
/// ([`PAIRS_MAP`](crate::PAIRS_MAP)): 64 bytes, one cache line, one map lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairBucket {
    /// The four ways.
    pub ways: [PairSlot; PAIR_WAYS],
}

/// Ways per pair bucket.
pub const PAIR_WAYS: usize = 4;

/// What the pair cache has reported of a pair in its epoch
/// ([`PairSlot::state`] holds it as a byte: map memory is never read as an enum).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairState {
    /// SYN seen in this epoch, no answer reported yet.
    Syn = 1,
    /// The server answered SYN-ACK; the client has not confirmed it.
    Accepted = 2,
    /// SYN-ACK and then the client's ACK: the handshake is complete
    /// (reported as [`EventKind::Confirmed`](crate::EventKind::Confirmed)).
    Confirmed = 3,
    /// The server refused (RST), possibly after a SYN-ACK.
    Refused = 4,
}

impl PairState {
    /// The state a slot's byte holds; `None` for an empty or corrupt way.
    #[inline(always)]
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Syn),
            2 => Some(Self::Accepted),
            3 => Some(Self::Confirmed),
            4 => Some(Self::Refused),
            _ => None,
        }
    }
}

/// [`PairSlot::flags`]: the pair's latest contact report was shed (over
/// budget), so its answers are not reported either; its next epoch reports
/// it as a new pair.
pub const PAIR_FLAG_SHED: u8 = 1;
/// [`PairSlot::flags`]: a SYN-ACK was seen since the latest contact report.
pub const PAIR_FLAG_SEEN_ACCEPTED: u8 = 2;
/// [`PairSlot::flags`]: the client's ACK after a SYN-ACK was seen since the
/// latest contact report.
pub const PAIR_FLAG_SEEN_CONFIRMED: u8 = 4;
/// [`PairSlot::flags`]: a refusing RST was seen since the latest contact report.
pub const PAIR_FLAG_SEEN_REFUSED: u8 = 8;
/// The `PAIR_FLAG_SEEN_*` bits.
pub const PAIR_FLAGS_SEEN: u8 =
    PAIR_FLAG_SEEN_ACCEPTED | PAIR_FLAG_SEEN_CONFIRMED | PAIR_FLAG_SEEN_REFUSED;
/// `PAIR_FLAG_SEEN_*` bits shifted left by this are the `EVENT_FLAG_SEEN_*` bits.
pub const SEEN_FLAGS_SHIFT: u32 = 3;
