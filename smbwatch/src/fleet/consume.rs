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
    consumer::{
        pull::{self, MessagesErrorKind},
        AckPolicy, Consumer, DeliverPolicy, Info as ConsumerInfo,
    },
    context::ConsumerInfoErrorKind,
    stream::{ConsumerError, ConsumerErrorKind, Stream as JsStream},
    ErrorCode,
};
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use super::{stats::AggregateCounters, SUBJECT_PREFIX};

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
/// a failed consumer leader is noticed after two missing heartbeats (1 s)
/// and made again on the same consumer (the client alone would wait for
/// the request's expiry). Nobody says that a request went nowhere: every
/// server takes JetStream requests, and only the consumer's leader
/// answers. So a failover costs the election and at most this second.
const PULL_HEARTBEAT: Duration = Duration::from_millis(500);
/// Other pull errors in a row after which the pull is made again.
const PULL_ERRORS: u32 = 5;
/// Missed heartbeats in a row of a pull found alive after which it is
/// made again anyway (its deliveries may have gone to an earlier pull's
/// inbox: the consumer then looks busy for ever).
const PULL_ALIVE_CHECKS: u32 = 3;
/// How long a pull request waits on the server.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
/// Messages between the pullers and the processing loop (each at most
/// the broker's `max_payload`; gateways send at most 32 KiB).
pub(super) const QUEUE: usize = 128;

/// The two durable consumers partition `p` of aggregator `name` alternates
/// between (`<name>-p<N>`, `<name>-p<N>-b`). A consumer is replaced (to
/// start again right after the last processed message) by creating the
/// other one first and deleting the old one after, so some consumer holds
/// the position at every moment: an aggregator dying in between finds both
/// and goes on from the further one.
pub(super) fn consumer_names(name: &str, p: u16) -> [String; 2] {
    let base = format!("{name}-p{}", super::partition_token(p));
    let other = format!("{base}-b");
    [base, other]
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
    /// The JetStream context (consumers found at start are handled
    /// through it).
    pub(super) js: jetstream::Context,
    pub(super) name: String,
    pub(super) counters: Arc<AggregateCounters>,
    /// The stream's first sequence, refreshed every second.
    pub(super) first_seq: AtomicU64,
}

/// How long one JetStream API request (consumer info, create, delete)
/// waits here. During an election nobody answers and the request is lost;
/// the next one, made at once, reaches the new leader soon after it. A
/// request that did arrive is safe to make again: a delete of a consumer
/// already gone, or a create with the same settings, is accepted.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// First and longest wait between attempts (requests and pulls): a
/// failover costs about the election, not a long backoff.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_millis(500);

/// A capped exponential backoff ([`RETRY_MIN`] to [`RETRY_MAX`]).
pub(super) struct Backoff(Duration);

impl Backoff {
    pub(super) fn new() -> Self {
        Self(RETRY_MIN)
    }

    pub(super) async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(RETRY_MAX);
    }
}

/// Runs the request `op` until it succeeds, each attempt bounded by
/// [`REQUEST_TIMEOUT`], with a [`Backoff`] between attempts; the first
/// failure and every tenth are logged. An aggregator has nothing to do
/// without its consumers, so it keeps trying (a broker that refuses the
/// request for good says so in the log).
pub(super) async fn retry<T, E, F, Fut>(what: &str, mut op: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::new();
    let mut failures = 0u32;
    loop {
        let error = match tokio::time::timeout(REQUEST_TIMEOUT, op()).await {
            Ok(Ok(v)) => return v,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {REQUEST_TIMEOUT:?}"),
        };
        failures += 1;
        if failures == 1 || failures.is_multiple_of(10) {
            tracing::warn!(failures, %error, "{what}: trying again");
        }
        backoff.wait().await;
    }
}

/// A partition's consumer as the aggregator finds it at start.
pub(super) struct Found {
    /// Everything up to this stream sequence was processed: the further
    /// acknowledgement floor of the partition's two consumers (0: none).
    pub(super) floor: u64,
    live: Option<Live>,
}

/// The consumer that holds a partition's position.
struct Live {
    /// Which of [`consumer_names`].
    slot: usize,
    consumer: Consumer<pull::Config>,
    /// Its last delivery's consumer sequence when it can be read on as it
    /// is (everything it delivered was acknowledged, so processed);
    /// `None` when it must be replaced.
    clean_at: Option<u64>,
}

/// Finds where partition `p` stands: its consumers' acknowledgement
/// floors, and whether the one that holds the position can be read on
/// as it is (no request to the JetStream meta leader, no new consumer: an
/// aggregator starting during an election waits only for the consumer's
/// own leader).
pub(super) async fn find(shared: &Shared, p: u16) -> Found {
    let mut live: Option<(usize, ConsumerInfo)> = None;
    for (slot, name) in consumer_names(&shared.name, p).into_iter().enumerate() {
        let info = retry(&format!("reading consumer {name}"), || async {
            match shared.stream.consumer_info(&name).await {
                Ok(i) => Ok(Some(i)),
                Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await;
        if let Some(info) = info {
            if live
                .as_ref()
                .is_none_or(|(_, l)| info.ack_floor.stream_sequence > l.ack_floor.stream_sequence)
            {
                live = Some((slot, info));
            }
        }
    }
    let Some((slot, info)) = live else {
        return Found {
            floor: 0,
            live: None,
        };
    };
    let floor = info.ack_floor.stream_sequence;
    let clean = info.num_ack_pending == 0
        && info.config.filter_subject == filter(p)
        && info.config.ack_policy == AckPolicy::All;
    let clean_at = clean.then_some(info.delivered.consumer_sequence);
    let config = pull::Config {
        durable_name: info.config.durable_name.clone(),
        filter_subject: info.config.filter_subject.clone(),
        ack_policy: info.config.ack_policy,
        ..Default::default()
    };
    Found {
        floor,
        live: Some(Live {
            slot,
            consumer: Consumer::new(config, info, shared.js.clone()),
            clean_at,
        }),
    }
}

/// Pulls partition `p` into the processing loop, in order, and makes sure
/// nothing is skipped: the consumer starts right after the last processed
/// message, and when a delivery went missing on its way (the consumer's
/// delivery sequence jumps: a connection cut as a slow consumer), it
/// waits until everything handed over is processed and replaces the
/// consumer by one starting right after the last processed message.
///
/// A pull that fails (missed heartbeats and nothing more to come from it,
/// [`pull_alive`]: the consumer's leader died, or the connection; no
/// responders) is made again on the same consumer, at once or after a
/// [`Backoff`]: the consumer keeps its place, and its new leader answers
/// as soon as it is elected. Only a consumer that is gone (deleted) is
/// replaced.
pub(super) async fn pull(
    shared: Arc<Shared>,
    p: u16,
    found: Found,
    prog: Arc<Progress>,
    tx: mpsc::Sender<Delivery>,
) {
    let names = consumer_names(&shared.name, p);
    // The consumer read and its last delivery's consumer sequence; None:
    // replace it (or create the first).
    let (mut slot, mut current) = match found.live {
        None => (None, None),
        Some(l) => (Some(l.slot), l.clean_at.map(|c| (l.consumer, c))),
    };
    let mut last_sseq = found.floor;
    let mut cleanup: Option<tokio::task::JoinHandle<()>> = None;
    let mut sent = 0u64;
    let mut logged = 0u64;
    let mut backoff = Backoff::new();
    loop {
        let (consumer, mut last_cseq) = match current.take() {
            Some(c) => c,
            None => {
                // Start after the last processed message, once everything
                // handed over is processed (or skipped).
                while prog.handled.load(Relaxed) < sent {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let start = prog.processed.load(Relaxed) + 1;
                let into = slot.map_or(0, |s| 1 - s);
                // An earlier replaced consumer still being deleted is the
                // one about to be created again: its deletion stops here.
                if let Some(c) = cleanup.take() {
                    c.abort();
                }
                let c = replace(&shared, &names, into, slot.is_some(), p, start).await;
                if let Some(old) = slot {
                    let (stream, old) = (shared.stream.clone(), names[old].clone());
                    cleanup = Some(tokio::spawn(async move {
                        retry(&format!("deleting the replaced consumer {old}"), || {
                            delete(&stream, &old)
                        })
                        .await;
                    }));
                }
                slot = Some(into);
                last_sseq = start - 1;
                (c, 0)
            }
        };
        // No pull while the connection is down: the client queues what is
        // published then and sends it all after reconnecting, so every pull
        // made during an outage would reach the broker at once, the earlier
        // ones with inboxes nobody reads any more: their deliveries are held
        // until the ack wait (60 s) and the live pull gets nothing.
        let client = shared.js.client();
        while client.connection_state() != async_nats::connection::State::Connected {
            tokio::time::sleep(RETRY_MIN).await;
        }
        let mut messages = match consumer
            .stream()
            .max_messages_per_batch(PULL_BATCH)
            .max_bytes_per_batch(PULL_BYTES)
            .heartbeat(PULL_HEARTBEAT)
            .expires(PULL_EXPIRES)
            .messages()
            .await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(partition = p, error = %e, "pulling messages");
                current = Some((consumer, last_cseq));
                backoff.wait().await;
                continue;
            }
        };
        let mut replace_it = false;
        // A pull found dead has waited already: pull again at once.
        let mut at_once = false;
        // Missed heartbeats of a pull found alive, and other errors, in a
        // row.
        let (mut alive, mut errors) = (0u32, 0u32);
        loop {
            let msg = match messages.next().await {
                None => break,
                Some(Err(e)) => match e.kind() {
                    MessagesErrorKind::ConsumerDeleted => {
                        tracing::warn!(
                            partition = p,
                            "the consumer was deleted: creating it again"
                        );
                        replace_it = true;
                        break;
                    }
                    MessagesErrorKind::MissingHeartbeat => {
                        // A busy broker misses heartbeats too, while its
                        // request still delivers: pulling again then would
                        // lose what it sends (a gap, and a new consumer).
                        if alive < PULL_ALIVE_CHECKS && pull_alive(&consumer, last_cseq).await {
                            alive += 1;
                            continue;
                        }
                        // Its leader died (or the connection): pull again,
                        // the consumer keeps its place.
                        tracing::debug!(partition = p, error = %e, "pulling messages: pulling again");
                        at_once = true;
                        break;
                    }
                    MessagesErrorKind::NoResponders => {
                        tracing::debug!(partition = p, error = %e, "pulling messages: pulling again");
                        break;
                    }
                    _ => {
                        errors += 1;
                        tracing::debug!(partition = p, error = %e, "pulling messages");
                        if errors >= PULL_ERRORS {
                            break;
                        }
                        continue;
                    }
                },
                Some(Ok(m)) => m,
            };
            (alive, errors) = (0, 0);
            backoff = Backoff::new();
            let Ok(info) = msg.info() else { continue };
            let (cseq, sseq, pending) =
                (info.consumer_sequence, info.stream_sequence, info.pending);
            if cseq > last_cseq + 1 {
                let lost = cseq - last_cseq - 1;
                let total = shared.counters.gaps.fetch_add(lost, Relaxed) + lost;
                shared.counters.rewinds.fetch_add(1, Relaxed);
                tracing::warn!(
                    partition = p,
                    lost,
                    total,
                    "deliveries lost between the broker and this aggregator: \
                     reading again from the last processed message"
                );
                replace_it = true;
                break;
            }
            // A delivery sequence that goes back is the consumer's new
            // leader delivering again what its old one delivered last (its
            // record of them was not replicated): from there on deliveries
            // must follow each other again; what was processed is skipped.
            last_cseq = cseq;
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
            last_sseq = last_sseq.max(sseq);
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
        if !replace_it {
            current = Some((consumer, last_cseq));
            if !at_once {
                backoff.wait().await;
            }
        }
    }
}

/// Creates consumer `names[into]` of partition `p`, delivering from stream
/// sequence `start` on, and returns it; `clear`: a consumer may be left
/// under that name (a replacement whose old consumer could not be
/// deleted) and is deleted first. It holds no position of its own: the
/// consumer being replaced holds it until the new one exists, and is
/// deleted after (by the caller): messages it delivered that were never
/// processed would otherwise come again only after its acknowledgement
/// wait, and a later cumulative acknowledgement could cover them. A create
/// without an answer is made again as it was (the server takes it as the
/// same consumer).
async fn replace(
    shared: &Shared,
    names: &[String; 2],
    into: usize,
    mut clear: bool,
    p: u16,
    start: u64,
) -> Consumer<pull::Config> {
    let name = &names[into];
    let config = pull::Config {
        durable_name: Some(name.clone()),
        filter_subject: filter(p),
        ack_policy: AckPolicy::All,
        ack_wait: ACK_WAIT,
        max_ack_pending: MAX_ACK_PENDING,
        deliver_policy: DeliverPolicy::ByStartSequence {
            start_sequence: start,
        },
        ..Default::default()
    };
    let mut backoff = Backoff::new();
    let mut failures = 0u32;
    let consumer = loop {
        let attempt = async {
            if clear {
                delete(&shared.stream, name).await?;
            }
            shared.stream.create_consumer(config.clone()).await
        };
        let error = match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
            Ok(Ok(c)) => break c,
            Ok(Err(e)) => {
                // Refused (a consumer under this name with other
                // settings): clear the name first next time.
                if matches!(e.kind(), ConsumerErrorKind::JetStream(_)) {
                    clear = true;
                }
                e.to_string()
            }
            Err(_) => format!("no answer within {REQUEST_TIMEOUT:?}"),
        };
        failures += 1;
        if failures == 1 || failures.is_multiple_of(10) {
            tracing::warn!(partition = p, failures, %error, "creating consumer {name}: trying again");
        }
        backoff.wait().await;
    };
    let first = shared.first_seq.load(Relaxed);
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
    consumer
}

/// Deletes consumer `name`; one already gone is no error.
async fn delete(stream: &JsStream, name: &str) -> Result<(), ConsumerError> {
    match stream.delete_consumer(name).await {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(e.kind(), ConsumerErrorKind::JetStream(ref j)
                if j.error_code() == ErrorCode::CONSUMER_NOT_FOUND) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Whether a pull that missed its heartbeats may still deliver: the
/// consumer answers, and has delivered past `last_cseq` (on their way) or
/// holds a waiting request (this pull's). During a failover the consumer
/// does not answer; after it, its new leader holds no request.
async fn pull_alive(consumer: &Consumer<pull::Config>, last_cseq: u64) -> bool {
    match tokio::time::timeout(REQUEST_TIMEOUT, consumer.get_info()).await {
        Ok(Ok(info)) => info.delivered.consumer_sequence > last_cseq || info.num_waiting > 0,
        _ => false,
    }
}

/// Keeps [`Shared::first_seq`] current (every second), off the processing
/// loop: with the stream's leader gone, the request waits for its timeout.
pub(super) async fn watch_first_seq(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if let Ok(Ok(info)) = tokio::time::timeout(REQUEST_TIMEOUT, shared.stream.get_info()).await
        {
            shared.first_seq.store(info.state.first_sequence, Relaxed);
        }
    }
}
