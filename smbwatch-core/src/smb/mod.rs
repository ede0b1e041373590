//! SMB on the wire: the sampled TCP payload of SMB connections, parsed by
//! `smbwatch-smb`, turned into event lines and alerts.
//!
//! The kernel (or replay) hands each sampled segment to
//! [`SmbMonitor::observe`] as an [`SmbSample`]; the monitor keeps one
//! parser [`smbwatch_smb::Session`] per connection in a table bounded in
//! bytes ([`SmbSettings::max_bytes`]), and yields an [`SmbEvent`] per
//! observation (`--events`) and the [`Alert`]s its rules raise
//! ([`rules`]). Pure: time comes from the samples and from
//! [`SmbMonitor::expire`]. The pipeline's entry is
//! [`crate::pipeline::Pipeline::smb_sample`]. See `docs/smb.md`.

mod config;
mod monitor;
pub mod rules;

use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use config::{pipe_name, share_name, SmbSettings};
pub use monitor::SmbMonitor;
pub use smbwatch_smb::{
    Dialect, Direction, ExploitSign, Hole, Interface, Limit, NtStatus, Observation, ShareType,
    Unbound, Unseen,
};

use crate::alert::Alert;
use crate::event::MacAddr;

/// One TCP payload segment of a monitored connection, as the kernel
/// sampled it (or replay read it).
#[derive(Clone, Copy, Debug)]
pub struct SmbSample<'a> {
    /// When the segment was seen.
    pub ts: DateTime<Utc>,
    /// The client: the side that is not the monitored port.
    pub client: SocketAddr,
    /// The server (the monitored port).
    pub server: SocketAddr,
    /// Which way the segment travels.
    pub direction: Direction,
    /// TCP sequence number of `data[0]`.
    pub seq: u32,
    /// Payload length on the wire; `data` may be shorter (the sample's
    /// cut), the rest is a hole the parser knows about.
    pub wire_len: u32,
    /// The sampled payload bytes.
    pub data: &'a [u8],
    /// Ethernet source address of the frame.
    pub src_mac: Option<MacAddr>,
    /// Outer VLAN id, if tagged.
    pub vlan: Option<u16>,
    /// FIN or RST: the connection ends here (its session is finished and
    /// dropped after this segment).
    pub fin_or_rst: bool,
}

/// The NTLMSSP logon of a connection (MS-NLMP AUTHENTICATE).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Account {
    /// UserName (empty for an anonymous logon).
    pub user: String,
    /// DomainName.
    pub domain: String,
    /// Workstation: the client's computer name.
    pub workstation: String,
    /// A null session.
    pub anonymous: bool,
    /// The server let the client in as guest.
    pub guest: bool,
}

impl Account {
    /// `DOMAIN\user` (bare `user` without a domain), as host logs write
    /// accounts; `None` for an anonymous logon.
    pub fn qualified(&self) -> Option<String> {
        if self.anonymous || self.user.is_empty() {
            return None;
        }
        Some(if self.domain.is_empty() {
            self.user.clone()
        } else {
            format!("{}\\{}", self.domain, self.user)
        })
    }
}

/// One observation of one connection: an `--events` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmbEvent {
    /// The time of the segment that completed the observation.
    pub ts: DateTime<Utc>,
    /// The client.
    pub client: SocketAddr,
    /// The server.
    pub server: SocketAddr,
    /// The direction of the message that revealed it.
    pub direction: Direction,
    /// The client's Ethernet address, from its last sampled frame.
    pub client_mac: Option<MacAddr>,
    /// Outer VLAN id.
    pub vlan: Option<u16>,
    /// The connection's NTLMSSP logon so far (on `smb_logon`, this one).
    pub account: Option<Account>,
    /// `\\server\share` of the message's tree, when known.
    pub share: Option<String>,
    /// The named pipe of an RPC observation.
    pub pipe: Option<String>,
    /// What was seen.
    pub observation: Observation,
}

impl SmbEvent {
    /// `event.action` of the line.
    pub fn action(&self) -> &'static str {
        action(&self.observation)
    }
}

/// `event.action` of each observation kind, in [`SmbCounters::observations`]
/// order.
pub const ACTIONS: [&str; 13] = [
    "smb1_negotiate",
    "smb_negotiate",
    "smb_logon",
    "smb_tree_connect",
    "smb_create",
    "smb_write",
    "smb_close",
    "smb_rename",
    "rpc_bind",
    "rpc_call",
    "smb_encrypted",
    "smb_unseen",
    "smb1_exploit",
];

/// The index of an observation's kind in [`ACTIONS`].
pub fn kind_index(o: &Observation) -> usize {
    match o {
        Observation::Smb1 { .. } => 0,
        Observation::Negotiate { .. } => 1,
        Observation::Auth { .. } => 2,
        Observation::TreeConnect { .. } => 3,
        Observation::Create { .. } => 4,
        Observation::Write { .. } => 5,
        Observation::Close { .. } => 6,
        Observation::Rename { .. } => 7,
        Observation::RpcBind { .. } => 8,
        Observation::RpcCall { .. } => 9,
        Observation::Encrypted { .. } => 10,
        Observation::Unseen { .. } => 11,
        Observation::Exploit { .. } => 12,
    }
}

/// `event.action` of an observation (`smb_tree_connect`, `rpc_call`…).
pub fn action(o: &Observation) -> &'static str {
    ACTIONS[kind_index(o)]
}

/// What the monitor yields, in order.
// Events are the common variant: boxing them would allocate once more per
// observation; the rare alert is boxed instead.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum SmbOutput {
    /// One observation (an `--events` line).
    Event(SmbEvent),
    /// An alert of the SMB rules (boxed: an alert is several times the
    /// size of an event).
    Alert(Box<Alert>),
}

/// The monitor's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SmbCounters {
    /// Samples fed.
    pub samples: u64,
    /// Payload bytes fed (as sampled).
    pub sample_bytes: u64,
    /// Samples dropped because `[smb] enabled = false`.
    pub disabled: u64,
    /// Connections held now.
    pub flows: u64,
    /// Connections opened (first sample).
    pub flows_opened: u64,
    /// Connections ended by FIN/RST.
    pub flows_closed: u64,
    /// Connections dropped after `idle_timeout`, or finished at the end
    /// of input (`Pipeline::smb_flush`).
    pub flows_expired: u64,
    /// Connections finished early to keep the table within `max_bytes`.
    pub evicted: u64,
    /// Accounted bytes held now (at most `max_bytes`).
    pub bytes: u64,
    /// Observations by kind, in [`ACTIONS`] order.
    pub observations: [u64; ACTIONS.len()],
    /// Alerts raised.
    pub alerts: u64,
    /// Alerts not raised: the same act already alerted within
    /// `dedup_window`.
    pub duplicates: u64,
    /// Alerts not raised: the source's `max_alerts_per_source` reached.
    pub over_source_cap: u64,
    /// Rule state entries evicted by their caps.
    pub rule_evicted: u64,
}

/// Alerts and event lines of one sample (or one expiry), in the shape of
/// [`crate::pipeline::Pipeline::gateway_event`]'s alerts plus the events
/// the caller prints with `--events`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SmbOutputs {
    /// One per observation, in order.
    pub events: Vec<SmbEvent>,
    /// Alerts raised (SMB rules, and chains they complete).
    pub alerts: Vec<Alert>,
}

impl SmbOutputs {
    /// Splits the monitor's output.
    pub fn from_outputs(out: Vec<SmbOutput>) -> Self {
        let mut s = Self::default();
        for o in out {
            match o {
                SmbOutput::Event(e) => s.events.push(e),
                SmbOutput::Alert(a) => s.alerts.push(*a),
            }
        }
        s
    }
}

#[cfg(test)]
mod coercion_tests;
#[cfg(test)]
mod rename_tests;
#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod task_tests;
#[cfg(test)]
mod tests;
