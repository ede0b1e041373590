//! What scoring found: the facts of an event it scores, the finding an
//! alert message is made of, and a source's incident within its hold-down.

use super::Role;
use crate::alert::{AlertKind, Severity};

/// What scoring needs of an event besides the event.
pub(super) struct Score {
    pub client: u128,
    pub server: u128,
    pub t: i64,
    pub hour: u32,
    pub dst_clients_before: u32,
    pub client_days: u32,
    pub edge_days: u32,
}

/// What an event found, for the alert messages.
pub(super) struct Finding {
    pub kind: AlertKind,
    pub t: i64,
    pub client: u128,
    pub server: u128,
    pub src_role: Role,
    pub dst_role: Role,
    pub hour: u32,
    /// Days the client (new client) or the edge (new edge) has been seen.
    pub days: u32,
    /// Its severity.
    pub severity: Severity,
    /// The same event is also outside the client's hours (a new edge at
    /// 03:00: one alert says both).
    pub also_off_hours: bool,
    /// Findings of this source held down since its previous alert, and
    /// the first servers they named.
    pub held: (u32, Vec<u128>),
}

/// One source's alerts within a hold-down: one alert, then only a worse
/// finding alerts again; the others are counted and listed in the next.
#[derive(Clone, Debug)]
pub(super) struct Incident {
    pub last_alert: i64,
    pub worst: Severity,
    pub held: u32,
    pub servers: Vec<u128>,
}
