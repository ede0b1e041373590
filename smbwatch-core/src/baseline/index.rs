//! What scoring derives from the tables (servers per client, servers'
//! first clients, the office's hours, addresses' hosts) and the day's
//! identity state. Rebuilt on load (`Baseline::reindex`), so a baseline
//! saved and loaded scores like one that never stopped.

use std::collections::HashMap;

use ahash::RandomState;

use super::record::Client;
use super::Snapshot;
use crate::event::MacAddr;

/// A server as the new-server rule sees it.
#[derive(Clone, Copy, Debug)]
pub(super) struct ServerInfo {
    /// Its first client (Unix seconds).
    pub first: i64,
    /// When `smb_new_server` introduced it (its edges then learn without
    /// alerts for `learn_for`).
    pub intro: Option<i64>,
}

/// What scoring derives from the tables, and the day's identity state.
#[derive(Default)]
pub(super) struct Index {
    /// Address (key) to the host (MAC or name key) last seen there.
    pub addr_host: HashMap<u128, u128, RandomState>,
    /// Established servers per client.
    pub by_client: HashMap<u128, Vec<u128>, RandomState>,
    /// Servers' first client and introduction.
    pub servers: HashMap<u128, ServerInfo, RandomState>,
    /// Established clients usually active per hour (weekdays, weekends).
    pub office: [[u32; 24]; 2],
    /// Established clients held.
    pub established: u32,
    /// Per MAC, today's distinct source addresses (the router test).
    pub mac_day: HashMap<MacAddr, (i64, Vec<u128>), RandomState>,
    /// Per client, the one destination without history it may reach today
    /// without an alert (a new server's first clients).
    pub unknown_today: HashMap<u128, (i64, u128), RandomState>,
}

impl Index {
    /// Adds an established client's usual hours to the office counts.
    pub fn add_office(&mut self, c: &Client, sign: i32) {
        for (w, mask) in [(0, c.usual_hours), (1, c.weekend_hours)] {
            for h in 0..24 {
                if mask & (1 << h) != 0 {
                    let n = &mut self.office[w][h];
                    *n = n.saturating_add_signed(sign);
                }
            }
        }
    }
}

/// The end of learning a snapshot implies.
pub(super) fn learn_end(snap: &Snapshot, learn_for: std::time::Duration) -> i64 {
    snap.meta
        .started
        .map_or(i64::MAX, |s| s.saturating_add(learn_for.as_secs() as i64))
}
