//! The gateway's publish task: outbox → broker, in order, retried with the
//! same message ids until acknowledged.

use std::{
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use tokio::sync::watch;

use super::{
    outbox::{Outbox, OutboxStats},
    stats::PublishCounters,
    transport::Transport,
};

/// Messages (batches of events) sent per round trip.
const BATCH: usize = 128;
/// First and longest wait between attempts while the broker is down. The
/// cap is short: after a cluster's leader fails, the next attempt should
/// follow the election (a few seconds), not a long backoff.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// How long a stopping gateway keeps trying to deliver what it holds.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs until `shutdown` turns true, then tries for [`STOP_GRACE`] to
/// deliver what is left. Returns the outbox's final counters.
pub async fn run<T: Transport>(
    outbox: Arc<Outbox>,
    transport: T,
    counters: Arc<PublishCounters>,
    mut shutdown: watch::Receiver<bool>,
) -> OutboxStats {
    let mut suspicious_logged = 0u64;
    let mut backoff = BACKOFF_MIN;
    let mut outage: Option<(std::time::Instant, String)> = None;
    let mut stop_at: Option<tokio::time::Instant> = None;
    let mut prepared = false;
    loop {
        if stop_at.is_none() && *shutdown.borrow() {
            stop_at = Some(tokio::time::Instant::now() + STOP_GRACE);
        }
        if stop_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
            break;
        }
        let batch = outbox.take(BATCH);
        if batch.is_empty() {
            if stop_at.is_some() {
                break;
            }
            // Idle: find the stream now (a failover in the middle of the
            // first events then costs the election, not the election and
            // a lookup); a failure waits for the backoff or for events.
            let wait = if prepared {
                None
            } else if transport.prepare().await.is_ok() {
                prepared = true;
                None
            } else {
                let w = backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                Some(w)
            };
            tokio::select! {
                _ = outbox.ready() => {}
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {}
            }
            continue;
        }
        // A publish waits for acknowledgements (seconds while the broker
        // is away); a stop must not wait longer than its grace for it.
        let results = {
            let publish = transport.publish(&batch);
            tokio::pin!(publish);
            loop {
                let deadline = stop_at.unwrap_or_else(tokio::time::Instant::now);
                tokio::select! {
                    r = &mut publish => break Some(r),
                    r = shutdown.changed(), if stop_at.is_none() => {
                        if r.is_err() || *shutdown.borrow() {
                            stop_at = Some(tokio::time::Instant::now() + STOP_GRACE);
                        }
                    }
                    _ = tokio::time::sleep_until(deadline), if stop_at.is_some() => break None,
                }
            }
        };
        let Some(results) = results else {
            outbox.requeue(batch);
            break;
        };
        let resent = batch.iter().filter(|i| i.resent).count() as u64;
        counters.sent.fetch_add(batch.len() as u64, Relaxed);
        counters.resent.fetch_add(resent, Relaxed);
        for (item, r) in batch.iter().zip(&results) {
            match r {
                Ok(s) if s.duplicate && item.resent => {
                    counters.duplicates.fetch_add(1, Relaxed);
                }
                Ok(s) if s.duplicate => {
                    // An id this process never sent before is already in
                    // the stream: someone published it first, and the
                    // broker dropped our message as its duplicate.
                    let n = counters.suspicious_duplicates.fetch_add(1, Relaxed) + 1;
                    if suspicious_logged < 10 || n.is_multiple_of(1000) {
                        suspicious_logged += 1;
                        tracing::warn!(
                            seq = item.seq,
                            partition = item.partition,
                            events = item.events,
                            total = n,
                            "suspicious: the broker already held a message id this gateway \
                             never sent; its events were dropped as a duplicate"
                        );
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    counters.failed.fetch_add(1, Relaxed);
                }
            }
        }
        // Items up to the first failure are delivered; from it on, all go
        // back (in order: later ones may have been stored too, and their
        // resend is deduplicated by id).
        let first_err = results.iter().position(Result::is_err);
        let (ok, failed): (Vec<_>, Vec<_>) = match first_err {
            None => (batch, Vec::new()),
            Some(i) => {
                let mut batch = batch;
                let failed = batch.split_off(i);
                (batch, failed)
            }
        };
        outbox.delivered(&ok);
        counters.acknowledged.fetch_add(ok.len() as u64, Relaxed);
        if failed.is_empty() {
            if let Some((since, _)) = outage.take() {
                let s = outbox.stats();
                tracing::info!(
                    down_for = ?since.elapsed(),
                    dropped = s.dropped,
                    "event broker reachable again; buffered events are being delivered"
                );
            }
            backoff = BACKOFF_MIN;
            continue;
        }
        let error = results
            .into_iter()
            .find_map(Result::err)
            .map_or_else(String::new, |e| e.to_string());
        outbox.requeue(failed);
        if outage.is_none() {
            let s = outbox.stats();
            tracing::warn!(
                %error,
                buffered_bytes = s.bytes,
                "event broker unreachable: buffering events (detection goes on locally)"
            );
            outage = Some((std::time::Instant::now(), error));
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    let s = outbox.stats();
    if s.queued > 0 {
        tracing::warn!(
            undelivered = s.queued,
            "stopping with events not delivered to the broker"
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;

    use super::*;
    use crate::fleet::{
        outbox::Item,
        transport::{Stored, TransportError},
    };

    /// A broker that is down for its first `down` calls and then stores
    /// everything, as JetStream does with message ids: a resent id is not
    /// stored twice.
    struct Flaky {
        down: Mutex<usize>,
        stored: Mutex<Vec<u64>>,
        /// Ids below this one were stored by someone else first.
        forged: Mutex<u64>,
    }

    impl Transport for Arc<Flaky> {
        async fn publish(&self, batch: &[Item]) -> Vec<Result<Stored, TransportError>> {
            let mut down = self.down.lock().unwrap();
            if *down > 0 {
                *down -= 1;
                // Half the batch reached the broker before it went away.
                let mut stored = self.stored.lock().unwrap();
                for i in &batch[..batch.len() / 2] {
                    if !stored.contains(&i.seq) {
                        stored.push(i.seq);
                    }
                }
                return batch
                    .iter()
                    .map(|_| Err(TransportError::Publish("down".into())))
                    .collect();
            }
            let mut stored = self.stored.lock().unwrap();
            batch
                .iter()
                .map(|i| {
                    // Ids below 10 were "published first by someone else".
                    let duplicate = stored.contains(&i.seq) || i.seq < *self.forged.lock().unwrap();
                    if !duplicate {
                        stored.push(i.seq);
                    }
                    Ok(Stored { duplicate })
                })
                .collect()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_loses_nothing_and_keeps_order() {
        let outbox = Arc::new(Outbox::new(1 << 20));
        let broker = Arc::new(Flaky {
            down: Mutex::new(3),
            stored: Mutex::new(Vec::new()),
            forged: Mutex::new(0),
        });
        let (tx, rx) = watch::channel(false);
        let counters = Arc::new(PublishCounters::default());
        let task = tokio::spawn(run(outbox.clone(), broker.clone(), counters.clone(), rx));
        outbox.push((0..1000).map(|i| ((i % 16) as u16, Bytes::from_static(b"ev"), 1)));
        tokio::time::sleep(Duration::from_secs(10)).await;
        tx.send(true).unwrap();
        let stats = task.await.unwrap();
        assert_eq!(stats.delivered, 1000);
        assert_eq!((stats.queued, stats.bytes, stats.dropped), (0, 0, 0));
        let stored = broker.stored.lock().unwrap().clone();
        assert_eq!(stored, (0..1000).collect::<Vec<u64>>());
        // The half batches stored during the outage came back as
        // duplicates of resends: expected, not suspicious.
        assert_eq!(counters.duplicates.load(Relaxed), 64);
        assert_eq!(counters.suspicious_duplicates.load(Relaxed), 0);
        assert_eq!(counters.acknowledged.load(Relaxed), 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_duplicate_for_an_id_never_sent_is_suspicious() {
        let outbox = Arc::new(Outbox::new(1 << 20));
        let broker = Arc::new(Flaky {
            down: Mutex::new(0),
            stored: Mutex::new(Vec::new()),
            forged: Mutex::new(10),
        });
        let (tx, rx) = watch::channel(false);
        let counters = Arc::new(PublishCounters::default());
        let task = tokio::spawn(run(outbox.clone(), broker.clone(), counters.clone(), rx));
        outbox.push((0..100).map(|i| ((i % 16) as u16, Bytes::from_static(b"ev"), 1)));
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(counters.suspicious_duplicates.load(Relaxed), 10);
        assert_eq!(counters.duplicates.load(Relaxed), 0);
    }
}
