//! The tables' upkeep: eviction of the least recently seen records at the
//! caps, the batches of changed records for the store, and whole views
//! (snapshot, servers, a client's listed servers).

use super::learn::Baseline;
use super::record::{Batch, Client, Snapshot};

impl Baseline {
    pub(super) fn evict_clients_if_full(&mut self) {
        if self.clients.len() > self.cfg.max_clients {
            self.evict_clients(self.cfg.max_clients);
        }
    }

    pub(super) fn evict_edges_if_full(&mut self) {
        if self.edges.len() > self.cfg.max_edges {
            self.evict_edges(self.cfg.max_edges);
        }
    }

    /// Evicts the least recently seen clients down to `keep`: a sixteenth
    /// at a time, so the scan is paid once per many inserts.
    pub(super) fn evict_clients(&mut self, keep: usize) {
        let n = self.clients.len().saturating_sub(keep);
        if n == 0 {
            return;
        }
        let mut ages: Vec<(i64, u128)> = self
            .clients
            .iter()
            .map(|(k, c)| (c.rec.last_seen, *k))
            .collect();
        ages.select_nth_unstable(n - 1);
        for &(_, k) in &ages[..n] {
            if let Some(c) = self.clients.remove(&k) {
                if c.rec.established && c.rec.flags & Client::ROUTER == 0 {
                    self.idx.established = self.idx.established.saturating_sub(1);
                    self.idx.add_office(&c.rec, -1);
                }
                if self.idx.addr_host.get(&c.rec.addr) == Some(&k) {
                    self.idx.addr_host.remove(&c.rec.addr);
                }
            }
            self.idx.by_client.remove(&k);
            self.deleted_clients.push(k);
        }
        self.meta.evicted_clients += n as u64;
    }

    /// Evicts the least recently seen edges down to `keep`.
    pub(super) fn evict_edges(&mut self, keep: usize) {
        let n = self.edges.len().saturating_sub(keep);
        if n == 0 {
            return;
        }
        let mut ages: Vec<(i64, (u128, u128))> = self
            .edges
            .iter()
            .map(|(k, e)| (e.rec.last_seen, *k))
            .collect();
        ages.select_nth_unstable(n - 1);
        for &(_, k) in &ages[..n] {
            let established = self.edges.remove(&k).is_some_and(|e| e.rec.established);
            self.deleted_edges.push(k);
            if let Some(c) = self.server_clients.get_mut(&k.1) {
                *c -= 1;
                if *c == 0 {
                    self.server_clients.remove(&k.1);
                    self.idx.servers.remove(&k.1);
                }
            }
            if established {
                if let Some(v) = self.idx.by_client.get_mut(&k.0) {
                    v.retain(|s| *s != k.1);
                }
            }
            if let Some(c) = self.clients.get_mut(&k.0) {
                c.rec.servers = c.rec.servers.saturating_sub(1);
                if established {
                    c.rec.usual_servers = c.rec.usual_servers.saturating_sub(1);
                }
                if let Some(slot) = c.rec.listed.iter_mut().find(|s| **s == k.1) {
                    *slot = 0;
                }
                if !c.dirty {
                    c.dirty = true;
                    self.dirty_clients.push(k.0);
                }
            }
        }
        self.meta.evicted_edges += n as u64;
    }

    /// Changes since the last batch, for the database. The batch counter
    /// in its meta counts it.
    pub fn take_batch(&mut self) -> Batch {
        self.meta.batches += 1;
        let clients = self
            .dirty_clients
            .drain(..)
            .filter_map(|k| {
                let s = self.clients.get_mut(&k)?;
                s.dirty = false;
                Some((k, s.rec))
            })
            .collect();
        let edges = self
            .dirty_edges
            .drain(..)
            .filter_map(|k| {
                let s = self.edges.get_mut(&k)?;
                s.dirty = false;
                Some((k, s.rec))
            })
            .collect();
        Batch {
            meta: self.meta,
            clients,
            edges,
            deleted_clients: std::mem::take(&mut self.deleted_clients),
            deleted_edges: std::mem::take(&mut self.deleted_edges),
        }
    }

    /// A batch the writer could not take: its records go back into the
    /// next one (their current values are written then).
    pub fn restore(&mut self, b: Batch) {
        self.meta.batches -= 1;
        for (k, _) in b.clients {
            if let Some(s) = self.clients.get_mut(&k).filter(|s| !s.dirty) {
                s.dirty = true;
                self.dirty_clients.push(k);
            }
        }
        for (k, _) in b.edges {
            if let Some(s) = self.edges.get_mut(&k).filter(|s| !s.dirty) {
                s.dirty = true;
                self.dirty_edges.push(k);
            }
        }
        // Deletions first in the next batch too: a re-added key is then
        // written after its deletion.
        let mut dc = b.deleted_clients;
        dc.append(&mut self.deleted_clients);
        self.deleted_clients = dc;
        let mut de = b.deleted_edges;
        de.append(&mut self.deleted_edges);
        self.deleted_edges = de;
    }

    /// Changes waiting for the next batch.
    pub fn pending(&self) -> usize {
        self.dirty_clients.len()
            + self.dirty_edges.len()
            + self.deleted_clients.len()
            + self.deleted_edges.len()
    }

    /// Everything, for an export.
    pub fn snapshot(&self) -> Snapshot {
        let mut clients: Vec<_> = self.clients.iter().map(|(k, c)| (*k, c.rec)).collect();
        let mut edges: Vec<_> = self.edges.iter().map(|(k, e)| (*k, e.rec)).collect();
        clients.sort_by_key(|(k, _)| *k);
        edges.sort_by_key(|(k, _)| *k);
        Snapshot {
            meta: self.meta,
            clients,
            edges,
        }
    }

    /// Servers by clients (most first), as the baseline sees them now.
    pub fn servers(&self) -> Vec<(u128, u32)> {
        let min = self.cfg.server_min_clients;
        let mut v: Vec<(u128, u32)> = self
            .server_clients
            .iter()
            .filter(|(_, n)| **n >= min)
            .map(|(k, n)| (*k, *n))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// The servers listed for a client (established edges), at most
    /// [`super::record::LISTED_SERVERS`].
    pub(super) fn listed(&self, client: u128) -> Vec<u128> {
        self.clients
            .get(&client)
            .map(|c| c.rec.listed.iter().copied().filter(|s| *s != 0).collect())
            .unwrap_or_default()
    }
}
