//! The gateway's outbox: events on their way to the broker, bounded in
//! bytes.
//!
//! The drain thread appends a batch per turn under a short lock and never
//! waits; the publish task takes batches, and releases their bytes only
//! when the broker acknowledged them, so the bound covers what is in flight
//! too. Past the bound new events are dropped and counted: when the broker
//! is down for long, the oldest events (already past) are the ones worth
//! delivering in order, and the gateway keeps detecting locally either way.

use std::{
    collections::VecDeque,
    sync::{Mutex, MutexGuard},
};

use bytes::Bytes;

use super::wire::{Batch, BATCH_BYTES};

/// Per-message overhead counted against the bound (the queue entry).
const OVERHEAD: usize = std::mem::size_of::<Item>();

/// One message: a batch of encoded events of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// Sequence number, unique for this process: with the gateway id and
    /// the process's boot id it is the message id JetStream deduplicates on.
    pub seq: u64,
    /// Partition (of the client address).
    pub partition: u16,
    /// The encoded batch ([`super::wire::Batch`]).
    pub payload: Bytes,
    /// Events in it.
    pub events: u32,
    /// Sent before without an acknowledgement: the broker may hold it
    /// already, so a "duplicate" answer is expected.
    pub resent: bool,
}

impl Item {
    fn cost(&self) -> usize {
        OVERHEAD + self.payload.len()
    }
}

/// What the outbox has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Events accepted.
    pub accepted: u64,
    /// Events dropped because the outbox was full.
    pub dropped: u64,
    /// Events the broker acknowledged.
    pub delivered: u64,
    /// Messages the broker acknowledged.
    pub messages: u64,
    /// Bytes held now (queued and in flight).
    pub bytes: usize,
    /// Messages queued now (not in flight).
    pub queued: usize,
}

#[derive(Debug)]
struct Inner {
    queue: VecDeque<Item>,
    bytes: usize,
    next_seq: u64,
    stats: OutboxStats,
}

/// The bounded outbox.
#[derive(Debug)]
pub struct Outbox {
    inner: Mutex<Inner>,
    cap: usize,
    ready: tokio::sync::Notify,
}

impl Outbox {
    /// An outbox holding at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                bytes: 0,
                next_seq: 0,
                stats: OutboxStats::default(),
            }),
            cap,
            ready: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind; go on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `(partition, message, events)` in order, dropping those past
    /// the bound. Never waits for the publisher beyond the lock. Returns
    /// how many events were dropped.
    pub fn push(&self, batch: impl IntoIterator<Item = (u16, Bytes, u32)>) -> u64 {
        let mut dropped = 0;
        let mut any = false;
        let mut g = self.lock();
        for (partition, payload, events) in batch {
            let item = Item {
                seq: g.next_seq,
                partition,
                payload,
                events,
                resent: false,
            };
            let cost = item.cost();
            if g.bytes + cost > self.cap {
                dropped += u64::from(events);
                continue;
            }
            g.next_seq += 1;
            g.stats.accepted += u64::from(events);
            g.bytes += cost;
            g.queue.push_back(item);
            any = true;
        }
        g.stats.dropped += dropped;
        drop(g);
        if any {
            self.ready.notify_one();
        }
        dropped
    }

    /// Takes up to `max` items from the front; their bytes stay counted
    /// until [`Outbox::delivered`] or [`Outbox::requeue`].
    pub fn take(&self, max: usize) -> Vec<Item> {
        let mut g = self.lock();
        let n = max.min(g.queue.len());
        g.queue.drain(..n).collect()
    }

    /// The broker acknowledged these: release their bytes.
    pub fn delivered(&self, items: &[Item]) {
        let cost: usize = items.iter().map(Item::cost).sum();
        let events: u64 = items.iter().map(|i| u64::from(i.events)).sum();
        let mut g = self.lock();
        g.bytes -= cost.min(g.bytes);
        g.stats.delivered += events;
        g.stats.messages += items.len() as u64;
    }

    /// Puts items the broker did not acknowledge back at the front, in
    /// their order, to be sent again with the same message ids.
    pub fn requeue(&self, items: Vec<Item>) {
        let mut g = self.lock();
        for mut item in items.into_iter().rev() {
            item.resent = true;
            g.queue.push_front(item);
        }
    }

    /// Waits until something is queued (returns at once if something is).
    pub async fn ready(&self) {
        if !self.lock().queue.is_empty() {
            return;
        }
        self.ready.notified().await;
    }

    /// Counters and the current fill.
    pub fn stats(&self) -> OutboxStats {
        let g = self.lock();
        OutboxStats {
            bytes: g.bytes,
            queued: g.queue.len(),
            ..g.stats
        }
    }
}

/// The drain thread's side of the outbox: encodes events into one batch
/// per partition and hands the batches over once per drain turn (one lock
/// per turn, not per event).
pub struct Tap {
    outbox: std::sync::Arc<Outbox>,
    partitions: u16,
    open: std::collections::HashMap<u16, Batch>,
    full: Vec<(u16, Bytes, u32)>,
    /// Events dropped because the outbox was full, not yet reported.
    pub dropped: u64,
}

impl Tap {
    /// A tap into `outbox` for a fleet of `partitions` partitions.
    pub fn new(outbox: std::sync::Arc<Outbox>, partitions: u16) -> Self {
        Self {
            outbox,
            partitions,
            open: std::collections::HashMap::new(),
            full: Vec::new(),
            dropped: 0,
        }
    }

    fn batch(&mut self, partition: u16) -> &mut Batch {
        self.open.entry(partition).or_default()
    }

    /// Closes `partition`'s batch once it is big enough.
    fn close_if_full(&mut self, partition: u16) {
        if self
            .open
            .get(&partition)
            .is_some_and(|b| b.len() >= BATCH_BYTES)
        {
            if let Some(b) = self.open.remove(&partition) {
                let n = b.records();
                self.full.push((partition, b.into_bytes().into(), n));
            }
        }
    }

    /// Queues a gateway event (sent at the next [`Tap::flush`]).
    pub fn gateway(&mut self, ev: &crate::event::GatewayEvent) {
        let p = super::partition(ev.src, self.partitions);
        self.batch(p).push_gateway(ev);
        self.close_if_full(p);
    }

    /// Queues a host event, in the partition of its source address (the
    /// client for what a server logged, the host itself for its own
    /// outbound connections: the address a gateway pair has as its
    /// source). Events without an address (process and file creations)
    /// go to every aggregator ([`super::ALL`]).
    pub fn host(&mut self, ev: &crate::hostlog::HostEvent) {
        let p = ev
            .src_ip()
            .map_or(super::ALL, |ip| super::partition(ip, self.partitions));
        self.batch(p).push_host(ev);
        self.close_if_full(p);
    }

    /// Hands every batch to the outbox.
    pub fn flush(&mut self) {
        for (p, b) in self.open.drain() {
            if !b.is_empty() {
                let n = b.records();
                self.full.push((p, b.into_bytes().into(), n));
            }
        }
        if !self.full.is_empty() {
            self.dropped += self.outbox.push(self.full.drain(..));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    #[test]
    fn bounded_in_bytes_including_in_flight() {
        let per = OVERHEAD + 56;
        let ob = Outbox::new(3 * per);
        assert_eq!(ob.push((0..5).map(|i| (i, payload(56), 1))), 2);
        let s = ob.stats();
        assert_eq!(
            (s.accepted, s.dropped, s.queued, s.bytes),
            (3, 2, 3, 3 * per)
        );
        // In flight still counts: nothing fits until the broker acks.
        let sent = ob.take(2);
        assert_eq!(ob.push([(9, payload(56), 1)]), 1);
        ob.delivered(&sent);
        assert_eq!(ob.push([(9, payload(56), 1)]), 0);
        let s = ob.stats();
        assert_eq!((s.delivered, s.dropped, s.queued), (2, 3, 2));
    }

    #[test]
    fn failed_items_go_back_in_order_with_their_ids() {
        let ob = Outbox::new(1 << 20);
        ob.push((0..4).map(|i| (i, payload(8), 1)));
        let first = ob.take(3);
        assert_eq!(first.iter().map(|i| i.seq).collect::<Vec<_>>(), [0, 1, 2]);
        ob.requeue(first.clone());
        let again = ob.take(10);
        assert_eq!(
            again.iter().map(|i| i.seq).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert!(again[..3]
            .iter()
            .zip(&first)
            .all(|(a, f)| a.seq == f.seq && a.payload == f.payload && a.resent && !f.resent));
        assert!(!again[3].resent);
    }
}
