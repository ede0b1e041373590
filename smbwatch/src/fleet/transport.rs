//! The broker, behind a trait so another one (Kafka) can follow, and the
//! NATS JetStream implementation.

use std::{future::Future, time::Duration};

use async_nats::{
    jetstream::{self, message::PublishMessage, stream},
    ConnectOptions,
};

use super::{outbox::Item, PublishConfig, SUBJECT_PREFIX};

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
}

/// Where a gateway's events go.
pub trait Transport: Send + Sync + 'static {
    /// Publishes `batch` (in order) and reports, per item, whether the
    /// broker acknowledged it. Items may be sent again after a failure
    /// with the same id; the broker must deduplicate them.
    fn publish(
        &self,
        batch: &[Item],
    ) -> impl Future<Output = Vec<Result<(), TransportError>>> + Send;
}

/// A connected JetStream context and the stream's settings.
#[derive(Clone)]
pub struct JetStream {
    /// The JetStream context.
    pub js: jetstream::Context,
    cfg: PublishConfig,
    /// Message-id prefix: `<gateway>.<boot>` (the boot id makes ids of a
    /// restarted gateway new).
    id_prefix: String,
    gateway: String,
    /// Whether the stream is known to exist (publishing looks it up, or
    /// creates it, first: the broker may have been down at start).
    stream_ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How long a publish waits for its acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

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
        let mut opts = ConnectOptions::new()
            .name(client_name)
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5));
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
        // A per-process boot id from the kernel's random numbers; the clock
        // and pid if getrandom(2) failed (it does not once the pool is up).
        let boot = getrandom::u64().unwrap_or_else(|_| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            t ^ u64::from(std::process::id()).rotate_left(32)
        });
        Ok(Self {
            js: jetstream::new(client),
            cfg: cfg.clone(),
            id_prefix: format!("{gateway}.{boot:016x}"),
            gateway: gateway.into(),
            stream_ready: Default::default(),
        })
    }

    /// The stream, created (file storage, deduplication window, size
    /// limit) when missing.
    pub async fn stream(&self) -> Result<stream::Stream, TransportError> {
        self.js
            .get_or_create_stream(stream::Config {
                name: self.cfg.stream.clone(),
                subjects: vec![format!("{SUBJECT_PREFIX}.>")],
                storage: stream::StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                max_bytes: i64::try_from(self.cfg.stream_max_bytes).unwrap_or(i64::MAX),
                discard: stream::DiscardPolicy::Old,
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
            })
    }
}

impl Transport for JetStream {
    async fn publish(&self, batch: &[Item]) -> Vec<Result<(), TransportError>> {
        use std::sync::atomic::Ordering;
        if !self.stream_ready.load(Ordering::Relaxed) {
            match self.stream().await {
                Ok(_) => self.stream_ready.store(true, Ordering::Relaxed),
                Err(e) => {
                    let msg = e.to_string();
                    return batch
                        .iter()
                        .map(|_| Err(TransportError::Publish(msg.clone())))
                        .collect();
                }
            }
        }
        // Send the whole batch, then collect acknowledgements: one round
        // trip per batch, not per event.
        let mut pending = Vec::with_capacity(batch.len());
        for item in batch {
            let publish = PublishMessage::build()
                .payload(item.payload.clone())
                .message_id(format!("{}.{}", self.id_prefix, item.seq));
            let subject = super::subject(&self.gateway, item.partition);
            pending.push(self.js.send_publish(subject, publish).await);
        }
        let mut out = Vec::with_capacity(batch.len());
        for p in pending {
            out.push(match p {
                Err(e) => Err(TransportError::Publish(e.to_string())),
                Ok(ack) => match tokio::time::timeout(ACK_TIMEOUT, ack).await {
                    Ok(Ok(_)) => Ok(()),
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
