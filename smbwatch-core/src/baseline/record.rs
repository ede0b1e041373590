//! What the baseline holds per client and per edge, and its byte encoding
//! in the database (fixed little-endian layouts with a length check: no
//! serde on the write path, which runs once per dirty record per batch).

use serde::{Deserialize, Serialize};

/// Hours in a week: the bits of [`Client::week_hours`] (Monday 00h UTC = 0).
pub const WEEK_HOURS: usize = 168;

/// Servers remembered per client for messages ("usual servers: …").
pub const LISTED_SERVERS: usize = 4;

/// One SMB client.
///
/// `repr(C)`, in this order: what every learned session reads or writes
/// (latest times, counts, the week's and the day's hours, whether it is
/// normal) comes first, so that with the table's key and dirty flag it
/// fits the first 112 bytes of the learner's 256-byte entry (two cache
/// lines where entries start on a line or 16 bytes past one); the per-hour day
/// counts (read at a client's first session in an hour), the identity and
/// the listed servers follow. Exports write the fields in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(C)]
pub struct Client {
    /// Latest answered SMB connection (Unix seconds).
    pub last_seen: i64,
    /// Answered connections reported.
    pub events: u64,
    /// The latest of the days seen (days since 1970-01-01).
    pub last_day: i64,
    /// Hours of the week ever active (bit = hour of week, Monday 00h UTC = 0).
    pub week_hours: [u64; 3],
    /// Distinct UTC days seen.
    pub days: u32,
    /// Hours of the latest day seen (bit = hour of day, UTC).
    pub day_hours: u32,
    /// Hours of day that are normal for the client: active during
    /// learning, or on `recurrence_days` days since.
    pub usual_hours: u32,
    /// Hours of day that are normal on weekends (Saturday, Sunday UTC);
    /// `usual_hours` and `hour_days` are the weekdays'.
    #[serde(default)]
    pub weekend_hours: u32,
    /// Established edges from this client (what "usual servers" counts:
    /// not the edges an anomaly just created).
    #[serde(default)]
    pub usual_servers: u32,
    /// Seen during learning, or on `recurrence_days` days since.
    pub established: bool,
    /// [`Client::ROUTER`]: a MAC seen with too many addresses in a day (a
    /// router's, not a host's): never used as a host's identity again.
    #[serde(default)]
    pub flags: u8,
    /// Edges from this client held now.
    pub servers: u32,
    /// Per hour of day, distinct days active at that hour (saturating).
    pub hour_days: [u8; 24],
    /// Per hour of day, distinct weekend days active at that hour.
    #[serde(default)]
    pub weekend_hour_days: [u8; 24],
    /// First answered SMB connection (Unix seconds).
    pub first_seen: i64,
    /// When a logon last bound a name host to `addr` (Unix seconds; 0: never).
    #[serde(default)]
    pub bound: i64,
    /// Latest address of a host known by MAC or name (address key; 0 for
    /// a client known by its address, whose key is the address).
    #[serde(default, with = "key", rename = "last_addr")]
    pub addr: u128,
    /// Up to [`LISTED_SERVERS`] established servers (address keys, 0 = none;
    /// addresses in exports).
    #[serde(with = "listed")]
    pub listed: [u128; LISTED_SERVERS],
}

impl Client {
    /// Bytes of a schema-1 record (before hosts, weekend hours and usual
    /// servers): still decoded, the new fields empty.
    pub const ENCODED_V1: usize = 8 * 3 + 4 + 8 + 4 + 24 + 24 + 4 + 1 + 4 + 16 * LISTED_SERVERS;
    /// Bytes of [`Client::encode`].
    pub const ENCODED: usize = Self::ENCODED_V1 + 16 + 8 + 4 + 24 + 4 + 1;
    /// `flags`: the key is a router's MAC, not a host.
    pub const ROUTER: u8 = 1;

    /// A client first seen at `t`.
    pub fn new(t: i64) -> Self {
        Self {
            first_seen: t,
            last_seen: t,
            events: 0,
            days: 0,
            last_day: i64::MIN,
            day_hours: 0,
            week_hours: [0; 3],
            hour_days: [0; 24],
            usual_hours: 0,
            established: false,
            servers: 0,
            listed: [0; LISTED_SERVERS],
            addr: 0,
            bound: 0,
            weekend_hours: 0,
            weekend_hour_days: [0; 24],
            usual_servers: 0,
            flags: 0,
        }
    }

    /// The database encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::ENCODED);
        b.extend(self.first_seen.to_le_bytes());
        b.extend(self.last_seen.to_le_bytes());
        b.extend(self.events.to_le_bytes());
        b.extend(self.days.to_le_bytes());
        b.extend(self.last_day.to_le_bytes());
        b.extend(self.day_hours.to_le_bytes());
        for w in self.week_hours {
            b.extend(w.to_le_bytes());
        }
        b.extend(self.hour_days);
        b.extend(self.usual_hours.to_le_bytes());
        b.push(u8::from(self.established));
        b.extend(self.servers.to_le_bytes());
        for s in self.listed {
            b.extend(s.to_le_bytes());
        }
        b.extend(self.addr.to_le_bytes());
        b.extend(self.bound.to_le_bytes());
        b.extend(self.weekend_hours.to_le_bytes());
        b.extend(self.weekend_hour_days);
        b.extend(self.usual_servers.to_le_bytes());
        b.push(self.flags);
        b
    }

    /// Decodes [`Client::encode`], or a schema-1 record (the new fields
    /// empty; usual servers counted from the listed ones); `None` when the
    /// length is neither.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != Self::ENCODED && b.len() != Self::ENCODED_V1 {
            return None;
        }
        let mut r = Reader(b);
        let mut c = Self {
            first_seen: r.i64(),
            last_seen: r.i64(),
            events: r.u64(),
            days: r.u32(),
            last_day: r.i64(),
            day_hours: r.u32(),
            week_hours: [r.u64(), r.u64(), r.u64()],
            hour_days: r.take::<24>(),
            usual_hours: r.u32(),
            established: r.take::<1>()[0] != 0,
            servers: r.u32(),
            listed: std::array::from_fn(|_| r.u128()),
            ..Self::new(0)
        };
        if b.len() == Self::ENCODED_V1 {
            c.usual_servers = c.listed.iter().filter(|s| **s != 0).count() as u32;
            return Some(c);
        }
        c.addr = r.u128();
        c.bound = r.i64();
        c.weekend_hours = r.u32();
        c.weekend_hour_days = r.take::<24>();
        c.usual_servers = r.u32();
        c.flags = r.take::<1>()[0];
        Some(c)
    }
}

/// One (client, server) edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    /// First answered connection (Unix seconds).
    pub first_seen: i64,
    /// Latest one.
    pub last_seen: i64,
    /// Answered connections reported.
    pub count: u64,
    /// Distinct UTC days seen.
    pub days: u32,
    /// The latest of those days.
    pub last_day: i64,
    /// Seen during learning, or on `recurrence_days` days since.
    pub established: bool,
}

impl Edge {
    /// Bytes of [`Edge::encode`].
    pub const ENCODED: usize = 8 * 3 + 4 + 8 + 1;

    /// An edge first seen at `t`.
    pub fn new(t: i64) -> Self {
        Self {
            first_seen: t,
            last_seen: t,
            count: 0,
            days: 0,
            last_day: i64::MIN,
            established: false,
        }
    }

    /// The database encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::ENCODED);
        b.extend(self.first_seen.to_le_bytes());
        b.extend(self.last_seen.to_le_bytes());
        b.extend(self.count.to_le_bytes());
        b.extend(self.days.to_le_bytes());
        b.extend(self.last_day.to_le_bytes());
        b.push(u8::from(self.established));
        b
    }

    /// Decodes [`Edge::encode`]; `None` when the length is wrong.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != Self::ENCODED {
            return None;
        }
        let mut r = Reader(b);
        Some(Self {
            first_seen: r.i64(),
            last_seen: r.i64(),
            count: r.u64(),
            days: r.u32(),
            last_day: r.i64(),
            established: r.take::<1>()[0] != 0,
        })
    }
}

/// Reads fixed-size fields; callers check the total length first.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().unwrap_or([0; N])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.take())
    }
    fn u128(&mut self) -> u128 {
        u128::from_le_bytes(self.take())
    }
}

/// Whole-baseline facts kept beside the tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// First event ever learned (Unix seconds): learning runs from here
    /// for `learn_for`.
    pub started: Option<i64>,
    /// Latest event learned.
    pub last: Option<i64>,
    /// Answered pairs learned, ever.
    pub learned: u64,
    /// Clients evicted at `max_clients`, ever.
    pub evicted_clients: u64,
    /// Edges evicted at `max_edges`, ever.
    pub evicted_edges: u64,
    /// Batches committed to the database, ever.
    pub batches: u64,
}

/// Changes since the previous batch: written in one transaction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// The whole-baseline facts after these changes (`batches` counts this one).
    pub meta: Meta,
    /// Clients added or changed.
    pub clients: Vec<(u128, Client)>,
    /// Edges added or changed.
    pub edges: Vec<((u128, u128), Edge)>,
    /// Clients evicted (deleted before the upserts are applied).
    pub deleted_clients: Vec<u128>,
    /// Edges evicted.
    pub deleted_edges: Vec<(u128, u128)>,
}

impl Batch {
    /// Records written or deleted.
    pub fn len(&self) -> usize {
        self.clients.len()
            + self.edges.len()
            + self.deleted_clients.len()
            + self.deleted_edges.len()
    }

    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A whole baseline, as loaded from the database or an export.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Whole-baseline facts.
    pub meta: Meta,
    /// Every client.
    pub clients: Vec<(u128, Client)>,
    /// Every edge.
    pub edges: Vec<((u128, u128), Edge)>,
}

/// An address key as an address (`null` for 0).
mod key {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use smbwatch_common::addr::{from_mapped, to_mapped};
    use std::net::{IpAddr, Ipv6Addr};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        (*v != 0)
            .then(|| from_mapped(Ipv6Addr::from(*v)))
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        Ok(Option::<IpAddr>::deserialize(d)?.map_or(0, |a| u128::from(to_mapped(a))))
    }
}

/// `Client::listed` as addresses (empty slots left out).
mod listed {
    use super::LISTED_SERVERS;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use smbwatch_common::addr::{from_mapped, to_mapped};
    use std::net::{IpAddr, Ipv6Addr};

    pub fn serialize<S: Serializer>(v: &[u128; LISTED_SERVERS], s: S) -> Result<S::Ok, S::Error> {
        let addrs: Vec<IpAddr> = v
            .iter()
            .filter(|k| **k != 0)
            .map(|k| from_mapped(Ipv6Addr::from(*k)))
            .collect();
        addrs.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<[u128; LISTED_SERVERS], D::Error> {
        let addrs = Vec::<IpAddr>::deserialize(d)?;
        if addrs.len() > LISTED_SERVERS {
            return Err(serde::de::Error::custom(format!(
                "listed: at most {LISTED_SERVERS} servers"
            )));
        }
        let mut out = [0u128; LISTED_SERVERS];
        for (slot, a) in out.iter_mut().zip(addrs) {
            *slot = u128::from(to_mapped(a));
        }
        Ok(out)
    }
}
