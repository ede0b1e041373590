//! The aggregator's side of JetStream: one puller task per partition that
//! hands messages, in order, to the processing loop and makes sure nothing
//! is skipped (see `aggregate`'s module documentation).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, DeliverPolicy},
    stream::{ConsumerErrorKind, Stream as JsStream},
    ErrorCode,
};
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use super::{
    aggregate::js_err, stats::AggregateCounters, transport::TransportError, SUBJECT_PREFIX,
};

/// How long the server waits for an acknowledgement before redelivering
/// (what it redelivers and was processed is skipped by stream sequence).
const ACK_WAIT: Duration = Duration::from_secs(60);
/// Messages delivered and not yet acknowledged, per consumer.
const MAX_ACK_PENDING: i64 = 50_000;
/// Messages fetched per pull request.
const PULL_BATCH: usize = 1000;
/// Bytes fetched per pull request. The client asks for more at half of
/// it, so a partition has at most about 1.5 of these on their way, and
/// 17 partitions about 25 MiB: within what nats-server buffers for one
/// client (64 MiB `max_pending`) however long the aggregator is stopped.
const PULL_BYTES: usize = 1 << 20;
/// Heartbeats of a pull request: a request lost with a connection or with
/// a failed consumer leader is noticed after two missing heartbeats and
/// made again, so a failover costs about the election.
const PULL_HEARTBEAT: Duration = Duration::from_secs(1);
/// Errors in a row (missing heartbeats and the like) after which a
/// partition's consumer is started again.
const PULL_ERRORS: u32 = 5;
/// How long a pull request waits on the server.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
/// Messages between the pullers and the processing loop (each at most
/// the broker's `max_payload`; gateways send at most 32 KiB).
pub(super) const QUEUE: usize = 128;

/// The consumer of partition `p` for aggregator `name`.
pub(super) fn consumer_name(name: &str, p: u16) -> String {
    format!("{name}-p{}", super::partition_token(p))
}

pub(super) fn filter(p: u16) -> String {
    format!("{SUBJECT_PREFIX}.*.{}", super::partition_token(p))
}

/// One message handed from a partition's puller to the processing loop.
pub(super) struct Delivery {
    pub(super) p: u16,
    pub(super) msg: jetstream::Message,
    pub(super) stream_seq: u64,
}

/// A partition's progress, shared by its puller and the processing loop.
#[derive(Default)]
pub(super) struct Progress {
    /// Stream sequence of the last message processed.
    pub(super) processed: AtomicU64,
    /// Deliveries the processing loop has taken (processed or skipped).
    pub(super) handled: AtomicU64,
    /// The consumer's pending count at the last delivery (backlog).
    pub(super) pending: AtomicU64,
}

/// What every puller shares.
pub(super) struct Shared {
    pub(super) stream: JsStream,
    pub(super) name: String,
    pub(super) counters: Arc<AggregateCounters>,
    /// The stream's first sequence, refreshed every second.
    pub(super) first_seq: AtomicU64,
}

/// Pulls partition `p` into the processing loop, in order, and makes sure
/// nothing is skipped: the consumer starts right after the last processed
/// message, and when a delivery went missing on its way (the consumer's
/// delivery sequence jumps: a connection cut as a slow consumer, a
/// reconnect), it waits until everything handed over is processed and
/// starts again right after the last processed message.
pub(super) async fn pull(
    shared: Arc<Shared>,
    p: u16,
    prog: Arc<Progress>,
    tx: mpsc::Sender<Delivery>,
) {
    let name = consumer_name(&shared.name, p);
    let mut sent = 0u64;
    let mut logged = 0u64;
    loop {
        // Start after the last processed message, once everything handed
        // over is processed (or skipped).
        while prog.handled.load(Relaxed) < sent {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let start = prog.processed.load(Relaxed) + 1;
        let mut messages = match consume_from(&shared, &name, p, start).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "starting the consumer again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let (mut last_cseq, mut last_sseq) = (0u64, start - 1);
        let mut errors = 0;
        loop {
            let msg = match messages.next().await {
                None => break,
                Some(Err(e)) => {
                    // Missing heartbeats (a failover, a reconnect) are
                    // handled by the client; errors that go on (the
                    // consumer deleted under us) start it again.
                    errors += 1;
                    tracing::debug!(partition = p, error = %e, "pulling messages");
                    if errors >= PULL_ERRORS {
                        tracing::warn!(partition = p, error = %e, "pulling failed repeatedly: starting the consumer again");
                        break;
                    }
                    continue;
                }
                Some(Ok(m)) => m,
            };
            errors = 0;
            let Ok(info) = msg.info() else { continue };
            let (cseq, sseq, pending) =
                (info.consumer_sequence, info.stream_sequence, info.pending);
            if cseq != last_cseq + 1 {
                let lost = cseq.saturating_sub(last_cseq + 1).max(1);
                let total = shared.counters.gaps.fetch_add(lost, Relaxed) + lost;
                shared.counters.rewinds.fetch_add(1, Relaxed);
                tracing::warn!(
                    partition = p,
                    lost,
                    total,
                    "deliveries lost between the broker and this aggregator: \
                     reading again from the last processed message"
                );
                break;
            }
            // Messages of this partition the stream discarded before they
            // were read: the stream moved past them (its limits), and the
            // consumer with it.
            let first = shared.first_seq.load(Relaxed);
            if sseq > last_sseq + 1 && first > last_sseq + 1 && prog.pending.load(Relaxed) > 0 {
                let gone = first.min(sseq) - last_sseq - 1;
                let total = shared.counters.discarded_unread.fetch_add(gone, Relaxed) + gone;
                if logged < 10 || total.is_multiple_of(1000) {
                    logged += 1;
                    tracing::warn!(
                        partition = p,
                        from = last_sseq + 1,
                        to = first.min(sseq) - 1,
                        "the stream discarded messages before this aggregator read them \
                         (its limits; some may be other partitions')"
                    );
                }
            }
            last_cseq = cseq;
            last_sseq = sseq;
            prog.pending.store(pending, Relaxed);
            sent += 1;
            if tx
                .send(Delivery {
                    p,
                    msg,
                    stream_seq: sseq,
                })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// The messages of partition `p` from stream sequence `start` on, through
/// this aggregator's durable consumer, created afresh at `start` (an old
/// one may have delivered messages that were never processed: they would
/// come again only after its ack wait, and a later cumulative
/// acknowledgement would cover them).
async fn consume_from(
    shared: &Shared,
    name: &str,
    p: u16,
    start: u64,
) -> Result<pull::Stream, TransportError> {
    match shared.stream.delete_consumer(name).await {
        Ok(_) => {}
        Err(e)
            if matches!(e.kind(), ConsumerErrorKind::JetStream(ref j)
                if j.error_code() == ErrorCode::CONSUMER_NOT_FOUND) => {}
        Err(e) => return Err(js_err(format!("replacing consumer {name}"), e)),
    }
    let consumer: jetstream::consumer::Consumer<pull::Config> = shared
        .stream
        .create_consumer(pull::Config {
            durable_name: Some(name.into()),
            filter_subject: filter(p),
            ack_policy: AckPolicy::All,
            ack_wait: ACK_WAIT,
            max_ack_pending: MAX_ACK_PENDING,
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| js_err(format!("creating consumer {name}"), e))?;
    if let Ok(info) = shared.stream.get_info().await {
        let first = info.state.first_sequence;
        shared.first_seq.store(first, Relaxed);
        if first > start && start > 1 {
            let gone = first - start;
            shared.counters.discarded_unread.fetch_add(gone, Relaxed);
            tracing::warn!(
                partition = p,
                from = start,
                to = first - 1,
                "the stream discarded messages before this aggregator read them \
                 (its limits; some may be other partitions')"
            );
        }
    }
    consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .max_bytes_per_batch(PULL_BYTES)
        .heartbeat(PULL_HEARTBEAT)
        .expires(PULL_EXPIRES)
        .messages()
        .await
        .map_err(|e| js_err(format!("pulling partition {p}"), e))
}
