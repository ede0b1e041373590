//! The message queue between `send` and the connection task: FIFO, bounded
//! in messages and in bytes, dropping the oldest to make room.

use std::collections::VecDeque;

use super::config::QUEUE_ENTRY_OVERHEAD;

/// What one push had to drop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Messages dropped (the oldest, or the new one if it alone is past
    /// the byte bound).
    pub messages: u64,
    /// Their accounted bytes.
    pub bytes: u64,
}

/// A FIFO of formatted messages holding at most `max_messages` and at most
/// `max_bytes` accounted bytes (each message's allocation plus
/// [`QUEUE_ENTRY_OVERHEAD`]).
#[derive(Debug)]
pub struct MessageQueue {
    items: VecDeque<Vec<u8>>,
    max_messages: usize,
    max_bytes: usize,
    bytes: usize,
}

/// What a message costs in the queue.
fn cost(msg: &Vec<u8>) -> usize {
    msg.capacity() + QUEUE_ENTRY_OVERHEAD
}

impl MessageQueue {
    /// An empty queue (bounds of at least 1).
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        Self {
            items: VecDeque::new(),
            max_messages: max_messages.max(1),
            max_bytes: max_bytes.max(1),
            bytes: 0,
        }
    }

    /// Appends `msg`, first dropping the oldest messages until it fits both
    /// bounds. A message larger than the byte bound by itself is dropped
    /// instead (configuration validation makes that impossible).
    pub fn push(&mut self, mut msg: Vec<u8>) -> Dropped {
        // Account what is really held, not what formatting over-allocated.
        msg.shrink_to_fit();
        let c = cost(&msg);
        let mut dropped = Dropped::default();
        if c > self.max_bytes {
            dropped.messages = 1;
            dropped.bytes = c as u64;
            return dropped;
        }
        while self.items.len() >= self.max_messages || self.bytes + c > self.max_bytes {
            let Some(old) = self.pop() else { break };
            dropped.messages += 1;
            dropped.bytes += cost(&old) as u64;
        }
        self.bytes += c;
        self.items.push_back(msg);
        dropped
    }

    /// Takes the oldest message.
    pub fn pop(&mut self) -> Option<Vec<u8>> {
        let m = self.items.pop_front()?;
        self.bytes -= cost(&m);
        Some(m)
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Accounted bytes held (never more than the byte bound).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: usize, tag: u8) -> Vec<u8> {
        vec![tag; n]
    }

    #[test]
    fn drops_oldest_past_the_message_bound() {
        let mut q = MessageQueue::new(3, 1 << 20);
        for i in 1..=3 {
            assert_eq!(q.push(msg(1, i)), Dropped::default());
        }
        let d = q.push(msg(1, 4));
        assert_eq!(d.messages, 1);
        assert_eq!(q.push(msg(1, 5)).messages, 1);
        assert_eq!(q.len(), 3);
        let order: Vec<u8> = std::iter::from_fn(|| q.pop()).map(|m| m[0]).collect();
        assert_eq!(order, [3, 4, 5]);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn drops_oldest_past_the_byte_bound() {
        let each = 1000 + QUEUE_ENTRY_OVERHEAD;
        let mut q = MessageQueue::new(1000, 3 * each + 10);
        for i in 0..3 {
            assert_eq!(q.push(msg(1000, i)).messages, 0);
        }
        assert_eq!(q.bytes(), 3 * each);
        // A message twice the size pushes out the two oldest.
        let d = q.push(msg(2000, 9));
        assert_eq!(
            d,
            Dropped {
                messages: 2,
                bytes: 2 * each as u64
            }
        );
        assert_eq!(q.len(), 2);
        assert_eq!(q.bytes(), each + 2000 + QUEUE_ENTRY_OVERHEAD);
        assert!(q.bytes() <= 3 * each + 10);
        assert_eq!(q.pop().unwrap()[0], 2);
        assert_eq!(q.pop().unwrap()[0], 9);
        // Larger than the whole bound: the new message goes, the queue stays.
        q.push(msg(10, 1));
        let d = q.push(msg(4 * each, 7));
        assert_eq!(d.messages, 1);
        assert_eq!((q.len(), q.pop().unwrap()[0]), (1, 1));
    }

    #[test]
    fn accounts_the_allocation_not_the_length() {
        let mut q = MessageQueue::new(10, 1 << 20);
        let mut m = Vec::with_capacity(100_000);
        m.extend_from_slice(b"short");
        q.push(m);
        assert!(q.bytes() < 1000, "{}", q.bytes());
    }
}
