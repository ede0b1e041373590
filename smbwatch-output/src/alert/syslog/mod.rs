//! Alerts to syslog: RFC 5424 with structured data (RFC 3164 on request),
//! over a unix socket, UDP, TCP (RFC 6587 octet counting) or TLS (RFC 5425).
//!
//! [`SyslogSink::send`] formats the alert and queues it; one tokio task owns
//! the connection and drains the queue. A collector that is down loses
//! nothing up to the queue bound: the task reconnects with exponential
//! backoff, and past the bound the oldest message is dropped, counted and
//! reported. A TCP or TLS message whose write fails is kept and re-sent on
//! the next connection.
//!
//! One job per module: [`config`] (the `[syslog]` section and its checks),
//! [`target`] (the destination, parsed once), [`format`] (alert to message,
//! pure), [`transport`] (sockets and framing), [`sink`] (queue and the
//! connection task).
//!
//! Choices (documented in `docs/syslog.md`):
//! - TIMESTAMP is the alert's time (event time), so replayed alerts keep it;
//! - MSG carries no BOM: it is `MSG-ANY` (RFC 5424 §6.4), which keeps
//!   receivers' `%msg%` clean; the text is UTF-8 all the same;
//! - control characters in MSG and in SD values become spaces: host-log
//!   fields are attacker-influenced and must not forge log lines;
//! - default facility `local4`: a local facility keeps alerts out of the
//!   OS's `auth.log` and lets the collector route them by facility or
//!   app-name;
//! - default SD-ID `smbwatch@32473`: 32473 is the example private enterprise
//!   number of RFC 5612; set `sd_id` to your own enterprise number.

mod config;
mod format;
mod queue;
mod sink;
mod target;
mod transport;

#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;

pub use super::sensor::system_hostname;
pub use config::{
    Facility, SyslogConfig, SyslogFormat, DATAGRAM_MAX_MESSAGE, DEFAULT_QUEUE, DEFAULT_QUEUE_BYTES,
    DEFAULT_SD_ID, STREAM_MAX_MESSAGE,
};
pub use format::{Formatter, Message};
pub use sink::{SyslogSink, SyslogStats};
pub use target::{HostPort, Target, TlsSettings};
pub use transport::octet_counted;

/// Errors of the syslog sink. Connection failures are not errors: they are
/// logged and retried.
#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    /// The target URL is malformed.
    #[error("invalid syslog target {url:?}: {problem}")]
    Target {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A configuration key has a bad value (`syslog.KEY`).
    #[error("invalid {0}")]
    Config(#[from] smbwatch_core::settings::Invalid),
    /// The CA file cannot be read.
    #[error("cannot read syslog.tls_ca {path}: {source}")]
    TlsCaRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The CA file has no usable certificate.
    #[error("syslog.tls_ca {path}: {problem}")]
    TlsCa {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The TLS client could not be set up.
    #[error("syslog TLS setup: {0}")]
    Tls(#[from] tokio_rustls::rustls::Error),
    /// `start` was called outside a tokio runtime.
    #[error("the syslog sink needs a tokio runtime")]
    NoRuntime,
}
