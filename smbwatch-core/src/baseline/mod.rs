//! The learned SMB baseline: who uses SMB with whom, and when.
//!
//! [`Baseline`] learns the SMB graph from confirmed handshakes (the
//! client's ACK after the server's SYN-ACK: an SMB session that really
//! happened; a SYN-ACK alone also answers spoofed SYNs): per client its
//! first sighting, its hours of the week and its servers; per server its
//! clients; per edge (client, server) first and last sighting, count and
//! days seen. After the learning period it scores every answered pair and
//! raises `smb_new_client`, `smb_new_edge` and `smb_off_hours`.
//!
//! Pure: no I/O and no clock; time comes from the events, so replay and
//! tests are exact. Persistence is the application's (`smbwatch::baseline::
//! store`, redb), written in batches ([`Baseline::take_batch`]) off the
//! caller's thread.
//! See `docs/detection.md` ("Baseline") for the rules and their reasons.

#[cfg(any(test, feature = "bench"))]
pub mod bench;
mod config;
#[cfg(any(test, feature = "bench"))]
pub mod eval;
mod finding;
mod hosts;
mod index;
mod learn;
pub mod message;
mod rate;
mod record;
mod score;
#[cfg(any(test, feature = "bench"))]
pub mod sim;
mod tables;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_hosts;
#[cfg(any(test, feature = "bench"))]
pub mod week;

use std::net::{IpAddr, Ipv6Addr};

use serde::Serialize;
use smbwatch_common::addr::{from_mapped, to_mapped};

pub use config::{BaselineConfig, MAX_ENTRIES};
pub use hosts::{is_host_key, is_name_key, mac_key, name_key};
pub use learn::Baseline;
pub use record::{Batch, Client, Edge, Meta, Snapshot, WEEK_HOURS};

/// An address as the tables key it: IPv6, IPv4 mapped (`::ffff:a.b.c.d`).
pub fn addr_key(ip: IpAddr) -> u128 {
    u128::from(to_mapped(ip))
}

/// The address of a table key (IPv4-mapped keys as IPv4).
pub fn key_addr(k: u128) -> IpAddr {
    from_mapped(Ipv6Addr::from(k))
}

/// What a host is to the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Accepts SMB from at least `server_min_clients` clients, or listed in
    /// `baseline.servers`.
    Server,
    /// Anything else.
    Workstation,
    /// Listed in `baseline.scanners`: never alerted on as a client.
    Scanner,
    /// Listed in `baseline.backup`: never alerted on as a client.
    Backup,
}

impl Role {
    /// Lower-case name, as in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Workstation => "workstation",
            Self::Scanner => "scanner",
            Self::Backup => "backup host",
        }
    }
}

/// Counters of the baseline's work and state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BaselineStats {
    /// Gateway events seen.
    pub events: u64,
    /// Sessions learned (the client's ACK after the SYN-ACK, or a known
    /// edge active again).
    pub learned: u64,
    /// SYN-ACKs seen: counted, never learned (they answer spoofed SYNs
    /// too). Far more of them than `learned` means answers nobody
    /// completed: spoofed SYNs or an aborted scan.
    pub syn_acks: u64,
    /// New clients not learned: their prefix was past `new_client_rate`.
    pub new_clients_limited: u64,
    /// Clients held now.
    pub clients: usize,
    /// Edges held now.
    pub edges: usize,
    /// Clients evicted (least recently seen) at `max_clients`, ever.
    pub evicted_clients: u64,
    /// Edges evicted (least recently seen) at `max_edges`, ever.
    pub evicted_edges: u64,
    /// Alerts raised.
    pub alerts: u64,
    /// Alerts held back by the hold-down.
    pub suppressed: u64,
    /// Anomalies of allowlisted, scanner or backup sources (not alerted).
    pub exempt: u64,
    /// Logons that named a host at an address.
    pub logons: u64,
    /// MACs found to be routers' (too many addresses in a day), ever in
    /// this run: their frames name no host.
    pub router_macs: u64,
}
