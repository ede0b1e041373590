//! The broker, behind a trait so another one (Kafka) can follow, and the
//! NATS JetStream implementation.

use std::{
    future::Future,
    hash::BuildHasher as _,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use async_nats::{
    jetstream::{self, message::PublishMessage, stream},
    ConnectOptions, Event,
};

use super::{outbox::Item, stats::BrokerCounters, PublishConfig, SUBJECT_PREFIX};

/// Errors talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A credential or certificate file could not be read.
    #[error("reading {path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Connecting (or the broker refused the credentials).
    #[error("connecting to {url}: {message}")]
    Connect {
        /// The broker.
        url: String,
        /// The client's error.
        message: String,
    },
    /// Creating or looking up the stream or a consumer.
    #[error("{op}: {message}")]
    JetStream {
        /// What was done.
        op: String,
        /// The client's error.
        message: String,
    },
    /// A publish was not acknowledged.
    #[error("publish not acknowledged: {0}")]
    Publish(String),
    /// The stream exists with weaker settings than configured.
    #[error("stream {stream}: {problem}")]
    WeakStream {
        /// The stream.
        stream: String,
        /// What is weaker.
        problem: String,
    },
}

/// What the broker said about one stored message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// The broker already held a message with this id (deduplicated).
    pub duplicate: bool,
}

/// Where a gateway's events go.
pub trait Transport: Send + Sync + 'static {
    /// Publishes `batch` (in order) and reports, per item, whether the
    /// broker acknowledged it (and whether as a duplicate). Items may be
    /// sent again after a failure with the same id; the broker must
    /// deduplicate them.
    fn publish(
        &self,
        batch: &[Item],
    ) -> impl Future<Output = Vec<Result<Stored, TransportError>>> + Send;

    /// Gets ready to publish (finds or creates the stream), so the first
    /// events do not wait for it: the publish task calls it while it has
    /// nothing to send until it succeeds.
    fn prepare(&self) -> impl Future<Output = Result<(), TransportError>> + Send {
        std::future::ready(Ok(()))
    }
}

/// A connected JetStream context and the stream's settings.
#[derive(Clone)]
pub struct JetStream {
    /// The JetStream context.
    pub js: jetstream::Context,
    client: async_nats::Client,
    cfg: PublishConfig,
    ids: MessageIds,
    gateway: String,
    /// The broker connection's counters.
    pub broker: Arc<BrokerCounters>,
    /// Whether the stream is known to exist (publishing looks it up, or
    /// creates it, first: the broker may have been down at start).
    stream_ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How long a publish waits for its acknowledgement: a stream leader that
/// died does not answer, and the resend (same id) should go to the new one
/// soon after the election (a few seconds).
const ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a JetStream API request (stream lookup, consumer create) waits
/// for its answer: during an election nobody answers, and the retry after
/// it should not wait out a long timeout.
const API_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest wait between reconnect attempts: a failover to another node of
/// a cluster costs about the election, not a long backoff.
const RECONNECT_MAX: Duration = Duration::from_millis(500);

/// How long JetStream remembers message ids for deduplication.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);

impl JetStream {
    /// Connects to `url` with the credentials and TLS settings of `cfg`.
    /// With `background`, a first connection that fails is retried in the
    /// background (a gateway starts, and detects locally, with the broker
    /// down); without, it is an error now (an aggregator has nothing to do
    /// without the broker, and wrong credentials should say so at once).
    pub async fn connect(
        url: &str,
        cfg: &PublishConfig,
        gateway: &str,
        client_name: &str,
        background: bool,
    ) -> Result<Self, TransportError> {
        let broker = Arc::new(BrokerCounters::default());
        let counters = broker.clone();
        let mut opts = ConnectOptions::new()
            .name(client_name)
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .reconnect_delay_callback(|attempts| {
                (Duration::from_millis(50) * attempts.min(10) as u32).min(RECONNECT_MAX)
            })
            // Replies (acknowledgements, pulled messages) come to an inbox
            // of this member's own, so broker permissions can keep one
            // member from reading another's (docs/fleet.md).
            .custom_inbox_prefix(inbox_prefix(gateway))
            // Pull requests are bounded in bytes (the aggregator), so a
            // subscription never holds more than a few batches; the
            // client's default (65,536 messages) would be 2 GiB of them.
            .subscription_capacity(4096)
            .event_callback(move |ev| {
                let c = counters.clone();
                async move {
                    match ev {
                        Event::Connected => {
                            c.connects.fetch_add(1, Relaxed);
                        }
                        Event::Disconnected => {
                            c.disconnects.fetch_add(1, Relaxed);
                        }
                        Event::SlowConsumer(sid) => {
                            c.client_slow_consumer.fetch_add(1, Relaxed);
                            tracing::warn!(
                                subscription = sid,
                                "NATS client dropped messages: subscription buffer full"
                            );
                        }
                        _ => {}
                    }
                }
            });
        if background {
            opts = opts.retry_on_initial_connect();
        }
        if let (Some(user), Some(file)) = (&cfg.user, &cfg.password_file) {
            let pass = read_secret(file)?;
            opts = opts.user_and_password(user.clone(), pass);
        }
        if let Some(file) = &cfg.nkey_seed_file {
            opts = opts.nkey(read_secret(file)?);
        }
        if cfg.tls_required() {
            opts = opts.require_tls(true);
        }
        if let Some(ca) = &cfg.tls_ca {
            check_readable(ca)?;
            opts = opts.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) {
            check_readable(cert)?;
            check_readable(key)?;
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        let addrs: Vec<async_nats::ServerAddr> = url
            .split(',')
            .map(|u| u.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|e: std::io::Error| TransportError::Connect {
                url: url.into(),
                message: e.to_string(),
            })?;
        let client = opts.connect(addrs).await.map_err(|e| {
            let mut message = e.to_string();
            if message.contains("certificate") && cfg.tls_ca.is_none() {
                message.push_str(
                    " (the broker uses TLS: set [publish] tls_ca to the CA that signed its certificate)",
                );
            }
            TransportError::Connect {
                url: url.into(),
                message,
            }
        })?;
        let mut js = jetstream::new(client.clone());
        // JetStream requests (stream lookups, consumers) that a failed
        // leader never answers are retried soon, not after the client's 5 s.
        js.set_timeout(API_TIMEOUT);
        Ok(Self {
            js,
            client,
            cfg: cfg.clone(),
            ids: MessageIds::new(gateway),
            gateway: gateway.into(),
            broker,
            stream_ready: Default::default(),
        })
    }

    /// The message id of outbox sequence `seq` ([`MessageIds`]).
    pub fn message_id(&self, seq: u64) -> String {
        self.ids.id(seq)
    }

    /// The replicas the stream must have: `[publish] replicas`, or 3 when
    /// the server is part of a cluster and 1 otherwise.
    pub fn replicas(&self) -> usize {
        self.cfg.replicas.unwrap_or_else(|| {
            if self.client.server_info().cluster.is_some() {
                3
            } else {
                1
            }
        })
    }

    /// The stream, created (file storage, deduplication window, size
    /// limit, [`JetStream::replicas`]) when missing. An existing stream
    /// with fewer replicas, a shorter deduplication window or memory
    /// storage is an error ([`TransportError::WeakStream`]): a gateway never
    /// settles for a weaker stream than configured.
    pub async fn stream(&self) -> Result<stream::Stream, TransportError> {
        let (stream, weak) = self.stream_checked().await?;
        match weak {
            None => Ok(stream),
            Some(problem) => Err(TransportError::WeakStream {
                stream: self.cfg.stream.clone(),
                problem,
            }),
        }
    }

    /// [`JetStream::stream`], returning how an existing stream is weaker
    /// than configured ([`weakness`]) instead of failing.
    pub async fn stream_checked(&self) -> Result<(stream::Stream, Option<String>), TransportError> {
        let replicas = self.replicas();
        let stream = self
            .js
            .get_or_create_stream(stream::Config {
                name: self.cfg.stream.clone(),
                subjects: vec![format!("{SUBJECT_PREFIX}.>")],
                storage: stream::StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                max_bytes: i64::try_from(self.cfg.stream_max_bytes).unwrap_or(i64::MAX),
                discard: stream::DiscardPolicy::Old,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                let mut message = e.to_string();
                if message.contains("insufficient storage") {
                    message.push_str(
                        " (the broker reserves [publish] stream_max_bytes: lower it, \
                         or give the broker more JetStream storage)",
                    );
                }
                TransportError::JetStream {
                    op: format!("creating or finding stream {}", self.cfg.stream),
                    message,
                }
            })?;
        let info = stream
            .get_info()
            .await
            .map_err(|e| TransportError::JetStream {
                op: format!("reading stream {}", self.cfg.stream),
                message: e.to_string(),
            })?;
        Ok((stream, weakness(&info.config, replicas)))
    }
}

/// A gateway's message ids: `<gateway>.<boot>.<sequence>.<tag>`, the boot
/// id random per process (ids of a restarted gateway are new), the tag a
/// keyed hash (SipHash) of the sequence under a secret random key of this
/// process that is never sent. A stream member that reads ids cannot
/// compute the next ones, so it cannot publish them first and have the
/// real messages dropped as duplicates. A resend has the same id.
#[derive(Clone)]
pub struct MessageIds {
    prefix: String,
    key: std::hash::RandomState,
}

impl MessageIds {
    /// Fresh ids (a new boot id and key) for `gateway`.
    pub fn new(gateway: &str) -> Self {
        // A per-process boot id from the kernel's random numbers; the clock
        // and pid if getrandom(2) failed (it does not once the pool is up).
        let boot = getrandom::u64().unwrap_or_else(|_| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            t ^ u64::from(std::process::id()).rotate_left(32)
        });
        Self {
            prefix: format!("{gateway}.{boot:016x}"),
            key: std::hash::RandomState::new(),
        }
    }

    /// The id of sequence `seq`.
    pub fn id(&self, seq: u64) -> String {
        format!("{}.{seq}.{:016x}", self.prefix, self.key.hash_one(seq))
    }
}

/// The inbox prefix of a member: `_INBOX_smbwatch_<gateway>` (an
/// aggregator's `<gateway>` is `aggregate`).
pub fn inbox_prefix(gateway: &str) -> String {
    format!("_INBOX_smbwatch_{gateway}")
}

/// How an existing stream's settings fall short of what the fleet needs:
/// fewer replicas than `replicas`, memory storage (lost with the broker),
/// a deduplication window shorter than a gateway's resends need, or
/// subjects that miss the fleet's.
pub fn weakness(c: &stream::Config, replicas: usize) -> Option<String> {
    if c.num_replicas.max(1) < replicas {
        return Some(format!(
            "{} replica(s), [publish] replicas wants {replicas} (raise it: nats stream edit {} --replicas {replicas})",
            c.num_replicas.max(1),
            c.name
        ));
    }
    if c.storage != stream::StorageType::File {
        return Some("memory storage (events are lost when the broker restarts)".into());
    }
    if c.duplicate_window < Duration::from_secs(60) {
        return Some(format!(
            "deduplication window {:?}, under a minute (resends after an outage would be stored twice)",
            c.duplicate_window
        ));
    }
    let all = format!("{SUBJECT_PREFIX}.>");
    if !c.subjects.contains(&all) {
        return Some(format!("subjects {:?} do not include {all}", c.subjects));
    }
    None
}

impl Transport for JetStream {
    async fn prepare(&self) -> Result<(), TransportError> {
        if !self.stream_ready.load(Relaxed) {
            self.stream().await?;
            self.stream_ready.store(true, Relaxed);
            tracing::info!(
                stream = %self.cfg.stream,
                replicas = self.replicas(),
                "publishing to the stream"
            );
        }
        Ok(())
    }

    async fn publish(&self, batch: &[Item]) -> Vec<Result<Stored, TransportError>> {
        if let Err(e) = self.prepare().await {
            let msg = e.to_string();
            return batch
                .iter()
                .map(|_| Err(TransportError::Publish(msg.clone())))
                .collect();
        }
        // Send the whole batch, then collect acknowledgements: one round
        // trip per batch, not per event.
        let mut pending = Vec::with_capacity(batch.len());
        for item in batch {
            let publish = PublishMessage::build()
                .payload(item.payload.clone())
                .message_id(self.message_id(item.seq));
            let subject = super::subject(&self.gateway, item.partition);
            pending.push(self.js.send_publish(subject, publish).await);
        }
        let mut out = Vec::with_capacity(batch.len());
        for p in pending {
            out.push(match p {
                Err(e) => Err(TransportError::Publish(e.to_string())),
                Ok(ack) => match tokio::time::timeout(ACK_TIMEOUT, ack).await {
                    Ok(Ok(ack)) => Ok(Stored {
                        duplicate: ack.duplicate,
                    }),
                    Ok(Err(e)) => Err(TransportError::Publish(e.to_string())),
                    Err(_) => Err(TransportError::Publish(format!(
                        "no acknowledgement within {ACK_TIMEOUT:?}"
                    ))),
                },
            });
        }
        out
    }
}

fn read_secret(path: &std::path::Path) -> Result<String, TransportError> {
    let text = std::fs::read_to_string(path).map_err(|source| TransportError::File {
        path: path.into(),
        source,
    })?;
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

fn check_readable(path: &std::path::Path) -> Result<(), TransportError> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|source| TransportError::File {
            path: path.into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_stable_per_boot_and_unpredictable_across() {
        let a = MessageIds::new("gw1");
        assert_eq!(a.id(7), a.id(7), "a resend keeps its id");
        let id = a.id(7);
        let parts: Vec<&str> = id.split('.').collect();
        assert_eq!((parts.len(), parts[0], parts[2]), (4, "gw1", "7"));
        // The tag is not the sequence's function alone: another boot (key)
        // gives another one, and neighbours share no visible pattern.
        let b = MessageIds::new("gw1");
        assert_ne!(a.id(7).split('.').nth(3), b.id(7).split('.').nth(3));
        assert_ne!(a.id(7).split('.').nth(1), b.id(7).split('.').nth(1));
        let tags: std::collections::HashSet<String> = (0..1000)
            .map(|s| a.id(s).rsplit('.').next().unwrap().to_string())
            .collect();
        assert_eq!(tags.len(), 1000);
    }

    #[test]
    fn weaker_streams_are_named() {
        let good = stream::Config {
            name: "SMBWATCH".into(),
            subjects: vec![format!("{SUBJECT_PREFIX}.>")],
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            num_replicas: 3,
            ..Default::default()
        };
        assert_eq!(weakness(&good, 3), None);
        assert_eq!(weakness(&good, 1), None);
        let one = stream::Config {
            num_replicas: 1,
            ..good.clone()
        };
        assert!(weakness(&one, 3).unwrap().contains("1 replica"));
        let mem = stream::Config {
            storage: stream::StorageType::Memory,
            ..good.clone()
        };
        assert!(weakness(&mem, 3).unwrap().contains("memory"));
        let short = stream::Config {
            duplicate_window: Duration::from_secs(5),
            ..good
        };
        assert!(weakness(&short, 3).unwrap().contains("deduplication"));
    }
}
