//! The gateway's publish task: outbox → broker, in order, retried with the
//! same message ids until acknowledged.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use super::{
    outbox::{Outbox, OutboxStats},
    transport::Transport,
};

/// Messages (batches of events) sent per round trip.
const BATCH: usize = 128;
/// First and longest wait between attempts while the broker is down.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a stopping gateway keeps trying to deliver what it holds.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs until `shutdown` turns true, then tries for [`STOP_GRACE`] to
/// deliver what is left. Returns the outbox's final counters.
pub async fn run<T: Transport>(
    outbox: Arc<Outbox>,
    transport: T,
    mut shutdown: watch::Receiver<bool>,
) -> OutboxStats {
    let mut backoff = BACKOFF_MIN;
    let mut outage: Option<(std::time::Instant, String)> = None;
    let mut stop_at: Option<tokio::time::Instant> = None;
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
            tokio::select! {
                _ = outbox.ready() => {}
                _ = shutdown.changed() => {}
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
    use crate::fleet::{outbox::Item, transport::TransportError};

    /// A broker that is down for its first `down` calls and then stores
    /// everything, as JetStream does with message ids: a resent id is not
    /// stored twice.
    struct Flaky {
        down: Mutex<usize>,
        stored: Mutex<Vec<u64>>,
    }

    impl Transport for Arc<Flaky> {
        async fn publish(&self, batch: &[Item]) -> Vec<Result<(), TransportError>> {
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
            for i in batch {
                if !stored.contains(&i.seq) {
                    stored.push(i.seq);
                }
            }
            batch.iter().map(|_| Ok(())).collect()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_loses_nothing_and_keeps_order() {
        let outbox = Arc::new(Outbox::new(1 << 20));
        let broker = Arc::new(Flaky {
            down: Mutex::new(3),
            stored: Mutex::new(Vec::new()),
        });
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(run(outbox.clone(), broker.clone(), rx));
        outbox.push((0..1000).map(|i| ((i % 16) as u16, Bytes::from_static(b"ev"), 1)));
        tokio::time::sleep(Duration::from_secs(10)).await;
        tx.send(true).unwrap();
        let stats = task.await.unwrap();
        assert_eq!(stats.delivered, 1000);
        assert_eq!((stats.queued, stats.bytes, stats.dropped), (0, 0, 0));
        let stored = broker.stored.lock().unwrap().clone();
        assert_eq!(stored, (0..1000).collect::<Vec<u64>>());
    }
}
