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

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, BufReader};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UdpSocket, UnixDatagram, UnixStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;

use super::{Alert, Severity};

/// Default SD-ID: RFC 5612's example private enterprise number (32473).
pub const DEFAULT_SD_ID: &str = "smbwatch@32473";
/// Default queue bound (messages).
pub const DEFAULT_QUEUE: usize = 10_000;
/// Give up a connection attempt after this long (a black-holed TCP connect
/// would otherwise take minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A write that makes no progress for this long marks the connection dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection that lasted this long counts as healthy even if it carried
/// nothing: losing it reconnects at once rather than after a backoff.
const HEALTHY_CONNECTION: Duration = Duration::from_secs(10);
/// At most one "queue full" warning per this interval.
const DROP_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Message format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogFormat {
    /// RFC 5424 with structured data.
    #[default]
    Rfc5424,
    /// RFC 3164 (BSD syslog), for old collectors; the fields go into MSG.
    Rfc3164,
}

impl FromStr for SyslogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "rfc5424" | "5424" => Ok(Self::Rfc5424),
            "rfc3164" | "3164" | "bsd" => Ok(Self::Rfc3164),
            _ => Err(format!(
                "unknown syslog format {s:?} (expected rfc5424 or rfc3164)"
            )),
        }
    }
}

/// Syslog facility (RFC 5424 §6.2.1), named as in syslog.conf.
#[allow(missing_docs)] // the names are the documentation
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Facility {
    Kern,
    User,
    Mail,
    Daemon,
    Auth,
    Syslog,
    Lpr,
    News,
    Uucp,
    Cron,
    Authpriv,
    Ftp,
    Ntp,
    Audit,
    Alert,
    Clock,
    Local0,
    Local1,
    Local2,
    Local3,
    #[default]
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    const ALL: [Facility; 24] = [
        Self::Kern,
        Self::User,
        Self::Mail,
        Self::Daemon,
        Self::Auth,
        Self::Syslog,
        Self::Lpr,
        Self::News,
        Self::Uucp,
        Self::Cron,
        Self::Authpriv,
        Self::Ftp,
        Self::Ntp,
        Self::Audit,
        Self::Alert,
        Self::Clock,
        Self::Local0,
        Self::Local1,
        Self::Local2,
        Self::Local3,
        Self::Local4,
        Self::Local5,
        Self::Local6,
        Self::Local7,
    ];

    /// Numeric code (0–23).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Name as in syslog.conf (`local4`).
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 24] = [
            "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
            "authpriv", "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2",
            "local3", "local4", "local5", "local6", "local7",
        ];
        NAMES[self as usize]
    }
}

impl FromStr for Facility {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let l = s.to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|f| f.name() == l)
            .ok_or_else(|| {
                format!("unknown syslog facility {s:?} (expected e.g. local4, daemon, auth)")
            })
    }
}

/// The `[syslog]` section of the configuration. Every key has a default.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyslogConfig {
    /// `unix:///dev/log`, `udp://HOST:PORT`, `tcp://HOST:PORT` or
    /// `tls://HOST:PORT` (ports default to 514, 514, 6514).
    pub target: String,
    /// `rfc5424` (default) or `rfc3164`.
    pub format: SyslogFormat,
    /// APP-NAME (RFC 5424) or TAG (RFC 3164).
    pub app_name: String,
    /// HOSTNAME field; the system host name when absent.
    pub hostname: Option<String>,
    /// Facility; severity comes from the alert.
    pub facility: Facility,
    /// Messages held while the collector is unreachable; past this the
    /// oldest is dropped.
    pub queue: usize,
    /// PEM file of the CA(s) that sign the collector's certificate; required
    /// for `tls://` (no system roots are used).
    pub tls_ca: Option<PathBuf>,
    /// Name checked against the collector's certificate; the URL host when
    /// absent.
    pub tls_server_name: Option<String>,
    /// SD-ID of the structured data element (`name@PEN`).
    pub sd_id: String,
    /// First reconnect delay; doubles per failure.
    #[serde(with = "humantime_serde")]
    pub backoff_min: Duration,
    /// Reconnect delay cap.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// How long shutdown waits to flush the queue.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        Self {
            target: "unix:///dev/log".into(),
            format: SyslogFormat::Rfc5424,
            app_name: "smbwatch".into(),
            hostname: None,
            facility: Facility::Local4,
            queue: DEFAULT_QUEUE,
            tls_ca: None,
            tls_server_name: None,
            sd_id: DEFAULT_SD_ID.into(),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

impl SyslogConfig {
    /// A default configuration for `target` (e.g. from `--syslog URL`).
    pub fn for_target(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            ..Self::default()
        }
    }

    /// Checks every key without touching the network; the error names the
    /// key (or the URL) and the problem.
    pub fn validate(&self) -> Result<Target, SyslogError> {
        let target = Target::parse(&self.target)?;
        let bad = |key: &'static str, problem: String| Err(SyslogError::Config { key, problem });
        if let Err(p) = check_sd_name(&self.sd_id, true) {
            return bad("sd_id", format!("{:?}: {p}", self.sd_id));
        }
        if let Err(p) = check_header_field(&self.app_name, 48) {
            return bad("app_name", format!("{:?}: {p}", self.app_name));
        }
        if let Some(h) = &self.hostname {
            if let Err(p) = check_header_field(h, 255) {
                return bad("hostname", format!("{h:?}: {p}"));
            }
        }
        if self.queue == 0 {
            return bad("queue", "must be at least 1".into());
        }
        if self.backoff_min.is_zero() {
            return bad("backoff_min", "must be greater than 0".into());
        }
        if self.backoff_max < self.backoff_min {
            return bad(
                "backoff_max",
                format!(
                    "{} is less than backoff_min {}",
                    humantime::format_duration(self.backoff_max),
                    humantime::format_duration(self.backoff_min)
                ),
            );
        }
        if matches!(target, Target::Tls { .. }) && self.tls_ca.is_none() {
            return bad(
                "tls_ca",
                format!(
                    "{} needs a CA file (tls_ca = \"/path/ca.pem\"): no system trust store is used",
                    self.target
                ),
            );
        }
        Ok(target)
    }
}

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
    /// A configuration key has a bad value.
    #[error("invalid syslog.{key}: {problem}")]
    Config {
        /// The key in the `[syslog]` section.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
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
    Tls(#[from] rustls::Error),
    /// `start` was called outside a tokio runtime.
    #[error("the syslog sink needs a tokio runtime")]
    NoRuntime,
}

/// Where syslog messages go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A local socket, datagram (as `/dev/log`) or stream.
    Unix(PathBuf),
    /// UDP, one message per datagram (RFC 5426).
    Udp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// TCP with octet-counting framing (RFC 6587).
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// TLS with octet-counting framing (RFC 5425).
    Tls {
        /// Host name or address (also the certificate name by default).
        host: String,
        /// Port.
        port: u16,
    },
}

impl Target {
    /// Parses `unix:///PATH`, `udp://HOST[:PORT]`, `tcp://HOST[:PORT]`,
    /// `tls://HOST[:PORT]`; IPv6 hosts go in brackets (`udp://[2001:db8::1]:514`).
    pub fn parse(url: &str) -> Result<Self, SyslogError> {
        let err = |problem: &str| SyslogError::Target {
            url: url.to_owned(),
            problem: problem.to_owned(),
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            err("expected SCHEME://..., e.g. udp://127.0.0.1:514 or unix:///dev/log")
        })?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "unix" {
            if !rest.starts_with('/') {
                return Err(err("unix socket path must be absolute (unix:///dev/log)"));
            }
            return Ok(Self::Unix(PathBuf::from(rest)));
        }
        let default_port = match scheme.as_str() {
            "udp" | "tcp" => 514,
            "tls" => 6514,
            _ => return Err(err("unknown scheme (expected unix, udp, tcp or tls)")),
        };
        if rest.contains(['/', '?', '#', '@']) {
            return Err(err("expected only HOST[:PORT] after the scheme"));
        }
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (h, after) = inner
                .split_once(']')
                .ok_or_else(|| err("missing ']' after the IPv6 address"))?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(err("not an IPv6 address inside [...]"));
            }
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| err("expected :PORT after ']'"))?,
                ),
            };
            (h, port)
        } else {
            match rest.matches(':').count() {
                0 => (rest, None),
                1 => {
                    let (h, p) = rest.split_once(':').expect("one colon");
                    (h, Some(p))
                }
                _ => {
                    return Err(err(
                        "IPv6 addresses must be in brackets: udp://[2001:db8::1]:514",
                    ))
                }
            }
        };
        if host.is_empty() {
            return Err(err("missing host"));
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(err(&format!("bad port {p:?} (expected 1-65535)"))),
            },
        };
        let host = host.to_owned();
        Ok(match scheme.as_str() {
            "udp" => Self::Udp { host, port },
            "tcp" => Self::Tcp { host, port },
            _ => Self::Tls { host, port },
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hp = |f: &mut std::fmt::Formatter<'_>, s: &str, h: &str, p: u16| {
            if h.contains(':') {
                write!(f, "{s}://[{h}]:{p}")
            } else {
                write!(f, "{s}://{h}:{p}")
            }
        };
        match self {
            Self::Unix(p) => write!(f, "unix://{}", p.display()),
            Self::Udp { host, port } => hp(f, "udp", host, *port),
            Self::Tcp { host, port } => hp(f, "tcp", host, *port),
            Self::Tls { host, port } => hp(f, "tls", host, *port),
        }
    }
}

/// RFC 5424 SD-NAME: 1–32 printable US-ASCII except `=`, space, `]`, `"`.
/// An SD-ID may carry `@` once, followed by a private enterprise number.
fn check_sd_name(s: &str, is_id: bool) -> Result<(), String> {
    let (name, pen) = match s.split_once('@') {
        Some((n, p)) if is_id => (n, Some(p)),
        _ => (s, None),
    };
    if name.is_empty() || s.len() > 32 {
        return Err("must be 1 to 32 characters".into());
    }
    if let Some(c) = s
        .chars()
        .find(|&c| !c.is_ascii_graphic() || matches!(c, '=' | ']' | '"') || (c == '@' && !is_id))
    {
        return Err(format!("character {c:?} is not allowed"));
    }
    match pen {
        None if is_id => Err(
            "needs @ENTERPRISE-NUMBER (IANA-registered names are reserved), e.g. smbwatch@32473"
                .into(),
        ),
        Some(p)
            if p.is_empty()
                || !p
                    .split('.')
                    .all(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
                || p.contains('@') =>
        {
            Err("the part after @ must be an enterprise number (digits, dots)".into())
        }
        _ => Ok(()),
    }
}

/// RFC 5424 header fields: 1–`max` printable US-ASCII characters.
fn check_header_field(s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() || s.len() > max {
        return Err(format!("must be 1 to {max} characters"));
    }
    match s.chars().find(|c| !c.is_ascii_graphic()) {
        Some(c) => Err(format!(
            "character {c:?} is not allowed (printable ASCII, no spaces)"
        )),
        None => Ok(()),
    }
}

/// A header field made safe: non-printable characters become `_`, empty
/// becomes the NILVALUE `-`, long values are cut at `max`.
fn header_field(s: &str, max: usize) -> String {
    let v: String = s
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max)
        .collect();
    if v.is_empty() {
        "-".into()
    } else {
        v
    }
}

/// Control characters become spaces so that no field can start a new log
/// line or hide text.
fn clean_text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// RFC 5424 §6.3.3: inside PARAM-VALUE, `"`, `\` and `]` are escaped with a
/// backslash.
pub fn escape_sd_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in clean_text(s).chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// RFC 6587 §3.4.1 octet counting: `MSG-LEN SP SYSLOG-MSG`.
pub fn octet_counted(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 8);
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg);
    out
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

/// The host name of this machine (`gethostname(2)`), `None` if unavailable.
pub fn system_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most
    // that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}

/// Formats alerts as syslog messages (no framing). Pure: the time comes
/// from the alert, the rest from the fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Formatter {
    /// RFC 5424 or 3164.
    pub format: SyslogFormat,
    /// Facility of every message.
    pub facility: Facility,
    /// HOSTNAME.
    pub hostname: String,
    /// APP-NAME / TAG.
    pub app_name: String,
    /// PROCID (our pid).
    pub procid: u32,
    /// SD-ID of the structured data element.
    pub sd_id: String,
    /// Messages go to the local syslog socket: RFC 3164 messages then omit
    /// HOSTNAME, as glibc's syslog(3) does, because the local daemon
    /// (rsyslog's imuxsock, journald) expects none there and adds its own.
    pub local_socket: bool,
}

impl Formatter {
    /// The formatter for a (validated) configuration: system host name and
    /// this process's id unless configured.
    pub fn from_config(cfg: &SyslogConfig) -> Self {
        let hostname = cfg
            .hostname
            .clone()
            .or_else(system_hostname)
            .unwrap_or_default();
        Self {
            format: cfg.format,
            facility: cfg.facility,
            hostname,
            app_name: cfg.app_name.clone(),
            procid: std::process::id(),
            sd_id: cfg.sd_id.clone(),
            local_socket: cfg.target.to_ascii_lowercase().starts_with("unix:"),
        }
    }

    /// PRI: facility × 8 + severity (RFC 5424 §6.2.1).
    pub fn pri(&self, alert: &Alert) -> u8 {
        self.facility.code() * 8 + alert.severity.syslog()
    }

    /// The message in the configured format.
    pub fn format(&self, alert: &Alert) -> String {
        match self.format {
            SyslogFormat::Rfc5424 => self.rfc5424(alert),
            SyslogFormat::Rfc3164 => self.rfc3164(alert),
        }
    }

    /// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG`.
    pub fn rfc5424(&self, alert: &Alert) -> String {
        format!(
            "<{}>1 {} {} {} {} {} {} {}",
            self.pri(alert),
            alert
                .ts
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            header_field(&self.hostname, 255),
            header_field(&self.app_name, 48),
            self.procid,
            header_field(alert.kind.code(), 32),
            self.structured_data(alert),
            clean_text(&alert.message),
        )
    }

    /// `<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: KIND: MSG [SD]` (no `HOST ` on a
    /// local socket). The time is UTC (3164 has no zone); the structured
    /// data, which 3164 lacks, follows the message so the fields are still
    /// there for a parser.
    pub fn rfc3164(&self, alert: &Alert) -> String {
        let tag: String = self
            .app_name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
            .take(32)
            .collect();
        let host = if self.local_socket {
            String::new()
        } else {
            header_field(&self.hostname, 255) + " "
        };
        format!(
            "<{}>{} {host}{}[{}]: {}: {} {}",
            self.pri(alert),
            rfc3164_time(alert.ts),
            if tag.is_empty() { "smbwatch" } else { &tag },
            self.procid,
            alert.kind.code(),
            clean_text(&alert.message),
            self.structured_data(alert),
        )
    }

    /// One SD-ELEMENT `[SD-ID name="value" ...]` with the alert's fields.
    pub fn structured_data(&self, alert: &Alert) -> String {
        let mut sd = format!("[{}", self.sd_id);
        let mut param = |name: &str, value: &str| {
            let _ = write!(sd, " {name}=\"{}\"", escape_sd_value(value));
        };
        param("kind", alert.kind.code());
        param("severity", severity_name(alert.severity));
        if let Some(ip) = alert.source_ip {
            param("src", &ip.to_string());
        }
        if let Some(ip) = alert.destination_ip {
            param("dst", &ip.to_string());
        }
        if let Some(p) = alert.destination_port {
            param("dport", &p.to_string());
        }
        if let Some(ev) = &alert.scan {
            param(
                "distinct_destinations",
                &ev.distinct_destinations.to_string(),
            );
            param("syns", &ev.syns.to_string());
            param("accepted", &ev.accepted.to_string());
            param("refused", &ev.refused.to_string());
            param("window_secs", &ev.window_secs.to_string());
        }
        if let Some(c) = &alert.community_id {
            param("community_id", c);
        }
        if !alert.techniques.is_empty() {
            param("techniques", &alert.techniques.join(","));
        }
        if let Some(p) = &alert.process {
            if let Some(n) = &p.name {
                param("process", n);
            }
            if let Some(pid) = p.pid {
                param("pid", &pid.to_string());
            }
        }
        if let Some(u) = &alert.user {
            param("user", u);
        }
        if let Some(h) = &alert.host {
            param("host", h);
        }
        if let Some(s) = &alert.share {
            param("share", s);
        }
        if let Some(i) = alert.ifindex {
            param("ifindex", &i.to_string());
        }
        if let Some(v) = alert.vlan {
            param("vlan", &v.to_string());
        }
        sd.push(']');
        sd
    }
}

/// `Mmm dd hh:mm:ss` with a space-padded day (RFC 3164 §4.1.2).
fn rfc3164_time(ts: DateTime<Utc>) -> String {
    ts.format("%b %e %H:%M:%S").to_string()
}

/// A FIFO that holds at most `cap` items and drops the oldest to make room.
#[derive(Debug)]
pub struct BoundedQueue<T> {
    items: VecDeque<T>,
    cap: usize,
}

impl<T> BoundedQueue<T> {
    /// An empty queue of capacity `cap` (at least 1).
    pub fn new(cap: usize) -> Self {
        Self {
            items: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Appends `item`; returns the oldest item if it had to be dropped.
    pub fn push(&mut self, item: T) -> Option<T> {
        let dropped = if self.items.len() >= self.cap {
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(item);
        dropped
    }

    /// Takes the oldest item.
    pub fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    /// Items held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Exponential reconnect delay: `min`, doubling per failure, capped at `max`.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next attempt; doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Back to `min` after a successful connection.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Counters of a syslog sink.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyslogStats {
    /// Messages written to the collector.
    pub sent: u64,
    /// Messages waiting (queue plus the one being sent).
    pub queued: u64,
    /// Messages dropped: oldest past the queue bound, or rejected by the
    /// transport as too large.
    pub dropped: u64,
    /// Connections established after the first one.
    pub reconnects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
}

struct Shared {
    queue: Mutex<BoundedQueue<Vec<u8>>>,
    /// The message the task has taken off the queue and not yet sent.
    in_flight: AtomicBool,
    notify: Notify,
    closing: AtomicBool,
    sent: AtomicU64,
    dropped: AtomicU64,
    reconnects: AtomicU64,
    connect_failures: AtomicU64,
    last_drop_warning: Mutex<Option<Instant>>,
}

impl Shared {
    fn lock_queue(&self) -> std::sync::MutexGuard<'_, BoundedQueue<Vec<u8>>> {
        // A panic while holding the lock cannot leave the deque inconsistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stats(&self) -> SyslogStats {
        SyslogStats {
            sent: self.sent.load(Ordering::Relaxed),
            queued: self.lock_queue().len() as u64
                + u64::from(self.in_flight.load(Ordering::Relaxed)),
            dropped: self.dropped.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
        }
    }
}

/// Alerts to a syslog collector through a bounded queue and a connection task.
pub struct SyslogSink {
    shared: Arc<Shared>,
    formatter: Formatter,
    target: Target,
    queue_cap: usize,
    shutdown_timeout: Duration,
    /// `None` once shut down.
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SyslogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogSink")
            .field("target", &self.target.to_string())
            .field("stats", &self.shared.stats())
            .finish()
    }
}

impl SyslogSink {
    /// Validates the configuration, loads the TLS CA if needed and starts
    /// the connection task (inside the current tokio runtime). An
    /// unreachable collector is not an error: it is logged and retried.
    pub fn start(cfg: &SyslogConfig) -> Result<Self, SyslogError> {
        let target = cfg.validate()?;
        let tls = match &target {
            Target::Tls { host, .. } => {
                let ca = cfg.tls_ca.as_deref().expect("validate requires tls_ca");
                let name = cfg.tls_server_name.as_deref().unwrap_or(host);
                Some(tls_setup(ca, name)?)
            }
            _ => None,
        };
        let rt = tokio::runtime::Handle::try_current().map_err(|_| SyslogError::NoRuntime)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(BoundedQueue::new(cfg.queue)),
            in_flight: AtomicBool::new(false),
            notify: Notify::new(),
            closing: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            last_drop_warning: Mutex::new(None),
        });
        let task = rt.spawn(run(
            shared.clone(),
            target.clone(),
            tls,
            Backoff::new(cfg.backoff_min, cfg.backoff_max),
            cfg.queue,
        ));
        Ok(Self {
            shared,
            formatter: Formatter::from_config(cfg),
            target,
            queue_cap: cfg.queue,
            shutdown_timeout: cfg.shutdown_timeout,
            task: Some(task),
        })
    }

    /// The target, as a URL.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The formatter in use.
    pub fn formatter(&self) -> &Formatter {
        &self.formatter
    }

    /// Formats the alert and queues it; never waits for the network.
    pub fn send(&self, alert: &Alert) {
        self.send_message(self.formatter.format(alert).into_bytes());
    }

    /// Queues an already formatted message (no framing).
    pub fn send_message(&self, msg: Vec<u8>) {
        let dropped = self.shared.lock_queue().push(msg).is_some();
        self.shared.notify.notify_one();
        if dropped {
            let total = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let mut last = self
                .shared
                .last_drop_warning
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|t| t.elapsed() >= DROP_WARN_INTERVAL) {
                *last = Some(Instant::now());
                tracing::warn!(
                    "syslog queue for {} full ({} messages): dropped the oldest, {total} dropped so far",
                    self.target,
                    self.queue_cap
                );
            }
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> SyslogStats {
        self.shared.stats()
    }

    /// Flushes the queue, waiting at most the configured `shutdown_timeout`.
    pub async fn shutdown(self) -> SyslogStats {
        let t = self.shutdown_timeout;
        self.shutdown_within(t).await
    }

    /// Flushes the queue, waiting at most `deadline`; what is still queued
    /// then is reported and abandoned. Returns the final counters.
    pub async fn shutdown_within(mut self, deadline: Duration) -> SyslogStats {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.notify.notify_one();
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(deadline, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
        let stats = self.shared.stats();
        if stats.queued > 0 {
            tracing::warn!(
                "shutdown: {} alert(s) for {} not delivered within {}",
                stats.queued,
                self.target,
                humantime::format_duration(deadline)
            );
        }
        stats
    }
}

impl Drop for SyslogSink {
    /// Dropping without [`shutdown`](SyslogSink::shutdown) abandons the
    /// queue: the task is stopped rather than left retrying forever.
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let queued = self.shared.stats().queued;
            if queued > 0 {
                tracing::warn!(
                    "syslog sink for {} dropped without shutdown: {queued} alert(s) abandoned",
                    self.target
                );
            }
        }
    }
}

fn tls_setup(ca: &Path, server_name: &str) -> Result<TlsSetup, SyslogError> {
    let file = std::fs::File::open(ca).map_err(|source| SyslogError::TlsCaRead {
        path: ca.to_owned(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for cert in rustls_pemfile::certs(&mut BufReader::new(file)) {
        let cert = cert.map_err(|source| SyslogError::TlsCaRead {
            path: ca.to_owned(),
            source,
        })?;
        roots.add(cert).map_err(|e| SyslogError::TlsCa {
            path: ca.to_owned(),
            problem: format!("unusable certificate: {e}"),
        })?;
        n += 1;
    }
    if n == 0 {
        return Err(SyslogError::TlsCa {
            path: ca.to_owned(),
            problem: "no PEM certificate found".into(),
        });
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).map_err(|e| {
        SyslogError::Config {
            key: "tls_server_name",
            problem: format!("{server_name:?}: {e}"),
        }
    })?;
    Ok(TlsSetup {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        name,
    })
}

struct TlsSetup {
    connector: tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
}

/// An open connection to the collector.
enum Conn {
    UnixDgram(UnixDatagram),
    UnixStream(UnixStream),
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// What a non-blocking `MSG_PEEK` on the socket says.
#[derive(Debug, PartialEq, Eq)]
enum Peek {
    /// Nothing to read: the connection is open.
    Open,
    /// End of stream or an error: the peer is gone.
    Closed,
    /// Bytes are waiting (for TLS, records rustls has yet to process).
    Data,
}

/// Asks the kernel directly rather than tokio's readiness cache, which is
/// only refreshed when the runtime polls its I/O driver and can be stale
/// when the task was woken by a new alert.
fn peek(fd: RawFd) -> Peek {
    let mut b = 0u8;
    // SAFETY: `fd` is an open socket owned by the caller; the buffer is one
    // valid byte; MSG_PEEK leaves the data in place.
    let n = unsafe {
        libc::recv(
            fd,
            std::ptr::addr_of_mut!(b).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => Peek::Closed,
        n if n > 0 => Peek::Data,
        _ => match io::Error::last_os_error().kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Peek::Open,
            _ => Peek::Closed,
        },
    }
}

/// True if the peer has closed (or reset) the stream, judged by reading
/// through the stream (so TLS records such as close_notify are processed).
/// Syslog collectors never send application data, so readable means EOF or
/// error.
fn peer_closed<S: AsyncRead + Unpin>(s: &mut S) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut buf = [0u8; 512];
    loop {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut *s).poll_read(&mut cx, &mut rb) {
            Poll::Pending => return false,
            Poll::Ready(Ok(())) if rb.filled().is_empty() => return true,
            Poll::Ready(Ok(())) => continue,
            Poll::Ready(Err(_)) => return true,
        }
    }
}

/// Resolves when the peer closes the stream (reads and discards anything
/// else).
async fn wait_closed<S: AsyncRead + Unpin>(s: &mut S) {
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

impl Conn {
    async fn connect(target: &Target, tls: Option<&TlsSetup>) -> io::Result<Self> {
        match target {
            Target::Unix(path) => {
                let d = UnixDatagram::unbound()?;
                match d.connect(path) {
                    Ok(()) => Ok(Self::UnixDgram(d)),
                    // A SOCK_STREAM listener (syslog-ng's unix-stream, some
                    // journald setups) refuses datagram peers.
                    Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
                        Ok(Self::UnixStream(UnixStream::connect(path).await?))
                    }
                    Err(e) => Err(e),
                }
            }
            Target::Udp { host, port } => {
                let addr = resolve(host, *port).await?[0];
                let bind: SocketAddr = if addr.is_ipv4() {
                    "0.0.0.0:0".parse().expect("literal")
                } else {
                    "[::]:0".parse().expect("literal")
                };
                let s = UdpSocket::bind(bind).await?;
                s.connect(addr).await?;
                Ok(Self::Udp(s))
            }
            Target::Tcp { host, port } => Ok(Self::Tcp(tcp_connect(host, *port).await?)),
            Target::Tls { host, port } => {
                let tcp = tcp_connect(host, *port).await?;
                let tls = tls.expect("TLS set up for tls:// targets");
                let s = tls.connector.connect(tls.name.clone(), tcp).await?;
                Ok(Self::Tls(Box::new(s)))
            }
        }
    }

    /// Sends one message with the transport's framing.
    async fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        match self {
            Self::UnixDgram(s) => s.send(msg).await.map(drop),
            Self::Udp(s) => s.send(msg).await.map(drop),
            Self::UnixStream(s) => {
                // NUL-terminated, as glibc's syslog(3) does on stream sockets.
                let mut framed = msg.to_vec();
                framed.push(0);
                write_all_flush(s, &framed).await
            }
            Self::Tcp(s) => write_all_flush(s, &octet_counted(msg)).await,
            Self::Tls(s) => write_all_flush(s.as_mut(), &octet_counted(msg)).await,
        }
    }

    /// Checked before each write: a collector that went away while we were
    /// idle must be noticed now, or the next message would vanish into the
    /// dead socket's send buffer and only the write after it would fail.
    async fn lost(&mut self) -> bool {
        let fd = match self {
            Self::UnixDgram(_) | Self::Udp(_) => return false,
            Self::UnixStream(s) => s.as_raw_fd(),
            Self::Tcp(s) => s.as_raw_fd(),
            Self::Tls(s) => s.get_ref().0.as_raw_fd(),
        };
        match peek(fd) {
            Peek::Open => false,
            Peek::Closed => true,
            Peek::Data => {
                // Let the I/O driver record the readiness, then read through
                // the stream: TLS session tickets are harmless, a
                // close_notify or EOF means closed.
                tokio::task::yield_now().await;
                match self {
                    Self::UnixDgram(_) | Self::Udp(_) => false,
                    Self::UnixStream(s) => peer_closed(s),
                    Self::Tcp(s) => peer_closed(s),
                    Self::Tls(s) => peer_closed(s.as_mut()),
                }
            }
        }
    }

    async fn wait_closed(&mut self) {
        match self {
            Self::UnixDgram(_) | Self::Udp(_) => std::future::pending().await,
            Self::UnixStream(s) => wait_closed(s).await,
            Self::Tcp(s) => wait_closed(s).await,
            Self::Tls(s) => wait_closed(s.as_mut()).await,
        }
    }

    /// Orderly close: TLS close_notify, TCP FIN after the data.
    async fn close(self) {
        match self {
            Self::UnixDgram(_) | Self::Udp(_) => {}
            Self::UnixStream(mut s) => drop(s.shutdown().await),
            Self::Tcp(mut s) => drop(s.shutdown().await),
            Self::Tls(mut s) => drop(s.shutdown().await),
        }
    }
}

async fn write_all_flush<S: AsyncWrite + Unpin>(s: &mut S, buf: &[u8]) -> io::Result<()> {
    let io = async {
        s.write_all(buf).await?;
        s.flush().await
    };
    tokio::time::timeout(WRITE_TIMEOUT, io)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")))
}

async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} has no address"),
        ));
    }
    Ok(addrs)
}

async fn tcp_connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in resolve(host, port).await? {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                // Alerts are single small writes; do not wait to coalesce.
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("resolve returns at least one address"))
}

/// A transport error that rejects this message whatever the connection
/// (retrying would loop forever): drop the message instead.
fn is_message_error(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EMSGSIZE)
}

/// The connection task: connects (with backoff), drains the queue, keeps a
/// failed message for the next connection, exits on shutdown once the
/// queue is empty.
async fn run(
    shared: Arc<Shared>,
    target: Target,
    tls: Option<TlsSetup>,
    mut backoff: Backoff,
    queue_cap: usize,
) {
    let mut conn: Option<Conn> = None;
    let mut connected_once = false;
    let mut failures_in_row = 0u64;
    let mut pending: Option<Vec<u8>> = None;
    // The current connection: when it opened, whether it delivered anything.
    let mut opened = Instant::now();
    let mut delivered = false;
    // The last connection died young without delivering (a collector that
    // accepts and hangs up, e.g. past its session limit): keep backing off
    // instead of reconnecting at once, forever.
    let mut flapping = false;
    // Set where a connection is found dead.
    let mut lost = false;
    loop {
        if std::mem::take(&mut lost) {
            conn = None;
            flapping = !delivered && opened.elapsed() < HEALTHY_CONNECTION;
            if flapping {
                sleep_unless_done(&shared, &pending, backoff.next_delay()).await;
            }
        }
        let closing = shared.closing.load(Ordering::SeqCst);
        let idle = pending.is_none() && shared.lock_queue().is_empty();
        if closing && idle {
            if let Some(c) = conn.take() {
                c.close().await;
            }
            return;
        }
        let Some(c) = conn.as_mut() else {
            let attempt =
                tokio::time::timeout(CONNECT_TIMEOUT, Conn::connect(&target, tls.as_ref()))
                    .await
                    .unwrap_or_else(|_| {
                        Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
                    });
            match attempt {
                Ok(c) => {
                    if connected_once {
                        shared.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    if failures_in_row > 0 {
                        tracing::info!("syslog: connected to {target} after {failures_in_row} failed attempt(s)");
                    } else {
                        tracing::debug!("syslog: connected to {target}");
                    }
                    connected_once = true;
                    failures_in_row = 0;
                    if !flapping {
                        backoff.reset();
                    }
                    opened = Instant::now();
                    delivered = false;
                    conn = Some(c);
                }
                Err(e) => {
                    shared.connect_failures.fetch_add(1, Ordering::Relaxed);
                    failures_in_row += 1;
                    let delay = backoff.next_delay();
                    if failures_in_row == 1 {
                        tracing::warn!("syslog: cannot reach {target}: {e}; retrying with backoff, alerts are queued (up to {queue_cap})");
                    } else {
                        tracing::debug!("syslog: attempt {failures_in_row} to reach {target} failed: {e}; next in {delay:?}");
                    }
                    sleep_unless_done(&shared, &pending, delay).await;
                }
            }
            continue;
        };
        if pending.is_none() {
            pending = shared.lock_queue().pop();
            shared.in_flight.store(pending.is_some(), Ordering::Relaxed);
        }
        let Some(msg) = pending.as_deref() else {
            // Idle: wait for work, and notice a collector that goes away
            // meanwhile so the next alert finds a fresh connection.
            tokio::select! {
                () = shared.notify.notified() => {}
                () = c.wait_closed() => {
                    tracing::warn!("syslog: {target} closed the connection; reconnecting");
                    lost = true;
                }
            }
            continue;
        };
        if c.lost().await {
            tracing::warn!("syslog: {target} closed the connection; reconnecting");
            lost = true;
            continue;
        }
        match c.send(msg).await {
            Ok(()) => {
                shared.sent.fetch_add(1, Ordering::Relaxed);
                pending = None;
                shared.in_flight.store(false, Ordering::Relaxed);
                if !delivered {
                    delivered = true;
                    flapping = false;
                    backoff.reset();
                }
            }
            Err(e) if is_message_error(&e) => {
                tracing::error!(
                    "syslog: {target} rejected a {}-byte message: {e}; dropped",
                    msg.len()
                );
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                pending = None;
                shared.in_flight.store(false, Ordering::Relaxed);
            }
            Err(e) => {
                // Keep `pending`: it is re-sent on the next connection.
                tracing::warn!("syslog: write to {target} failed: {e}; reconnecting");
                lost = true;
            }
        }
    }
}

/// Sleeps `delay`, but returns early when shutdown is requested and there
/// is nothing left to send.
async fn sleep_unless_done(shared: &Shared, pending: &Option<Vec<u8>>, delay: Duration) {
    let until = tokio::time::Instant::now() + delay;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(until) => return,
            () = shared.notify.notified() => {
                if shared.closing.load(Ordering::SeqCst)
                    && pending.is_none()
                    && shared.lock_queue().is_empty()
                {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use chrono::TimeZone;
    use tokio::io::AsyncBufReadExt;
    use tokio::net::{TcpListener, UnixListener};

    use super::*;
    use crate::alert::{AlertKind, ProcessInfo, ScanEvidence};

    fn ts(s: u32, ms: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, s).unwrap() + chrono::Duration::milliseconds(ms)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn scan_alert(msg: &str) -> Alert {
        let mut a = Alert::new(
            ts(7, 250),
            AlertKind::SmbScanFanout,
            Severity::High,
            msg.into(),
        );
        a.techniques = vec!["T1046", "T1210"];
        a.source_ip = Some(ip("192.0.2.10"));
        a.destination_port = Some(445);
        a.community_id = Some("1:LQU9qZlK+B5F3KDmev6m5PMibrg=".into());
        a.ifindex = Some(3);
        a.vlan = Some(100);
        a.scan = Some(ScanEvidence {
            distinct_destinations: 3,
            destinations: vec![ip("198.51.100.1")],
            syns: 4,
            accepted: 1,
            refused: 2,
            window_secs: 60,
            first_seen: ts(1, 0),
            last_seen: ts(7, 250),
        });
        a
    }

    fn formatter(format: SyslogFormat) -> Formatter {
        Formatter {
            format,
            facility: Facility::Local4,
            hostname: "gw1".into(),
            app_name: "smbwatch".into(),
            procid: 4242,
            sd_id: DEFAULT_SD_ID.into(),
            local_socket: false,
        }
    }

    const SD: &str = "[smbwatch@32473 kind=\"smb_scan_fanout\" severity=\"high\" \
        src=\"192.0.2.10\" dport=\"445\" distinct_destinations=\"3\" syns=\"4\" \
        accepted=\"1\" refused=\"2\" window_secs=\"60\" \
        community_id=\"1:LQU9qZlK+B5F3KDmev6m5PMibrg=\" techniques=\"T1046,T1210\" \
        ifindex=\"3\" vlan=\"100\"]";

    #[test]
    fn rfc5424_exact() {
        let a = scan_alert("192.0.2.10 reached 3 hosts on 445 in 60 s");
        // local4 (20) * 8 + error (3) = 163.
        assert_eq!(
            formatter(SyslogFormat::Rfc5424).format(&a),
            format!(
                "<163>1 2024-05-01T12:00:07.250Z gw1 smbwatch 4242 smb_scan_fanout {SD} \
                 192.0.2.10 reached 3 hosts on 445 in 60 s"
            )
        );
    }

    #[test]
    fn rfc3164_exact() {
        let a = scan_alert("192.0.2.10 reached 3 hosts on 445 in 60 s");
        assert_eq!(
            formatter(SyslogFormat::Rfc3164).format(&a),
            format!(
                "<163>May  1 12:00:07 gw1 smbwatch[4242]: smb_scan_fanout: \
                 192.0.2.10 reached 3 hosts on 445 in 60 s {SD}"
            )
        );
    }

    #[test]
    fn rfc3164_on_a_local_socket_has_no_hostname() {
        let f = Formatter {
            local_socket: true,
            ..formatter(SyslogFormat::Rfc3164)
        };
        let m = f.format(&scan_alert("x"));
        assert!(
            m.starts_with("<163>May  1 12:00:07 smbwatch[4242]: smb_scan_fanout: x ["),
            "{m}"
        );
        let f = Formatter::from_config(&SyslogConfig::for_target("unix:///dev/log"));
        assert!(f.local_socket);
        let f = Formatter::from_config(&SyslogConfig::for_target("udp://127.0.0.1"));
        assert!(!f.local_socket);
    }

    #[test]
    fn host_fields_are_escaped_and_cleaned() {
        let mut a = Alert::new(
            ts(0, 0),
            AlertKind::SuspiciousSmbClient,
            Severity::Critical,
            "line one\nline two".into(),
        );
        a.process = Some(ProcessInfo {
            name: Some("evil\"].exe".into()),
            pid: Some(7),
            executable: None,
        });
        a.user = Some(r"CORP\alice".into());
        a.share = Some(r"\\WS01\ADMIN$".into());
        let f = formatter(SyslogFormat::Rfc5424);
        let sd = f.structured_data(&a);
        assert_eq!(
            sd,
            "[smbwatch@32473 kind=\"suspicious_smb_client\" severity=\"critical\" \
             process=\"evil\\\"\\].exe\" pid=\"7\" user=\"CORP\\\\alice\" \
             share=\"\\\\\\\\WS01\\\\ADMIN$\"]"
        );
        let msg = f.format(&a);
        assert!(msg.ends_with(" line one line two"), "{msg}");
        assert!(!msg.contains('\n'));
        // local4 * 8 + critical (2).
        assert!(msg.starts_with("<162>1 "));
    }

    #[test]
    fn sd_value_escaping() {
        assert_eq!(escape_sd_value(r#"a"b\c]d"#), r#"a\"b\\c\]d"#);
        assert_eq!(escape_sd_value("x\r\ny\0"), "x  y ");
        assert_eq!(escape_sd_value("Jürgen [x]"), "Jürgen [x\\]");
    }

    #[test]
    fn octet_counting_counts_bytes() {
        assert_eq!(
            octet_counted(b"<13>1 - - - - - - hi"),
            b"20 <13>1 - - - - - - hi"
        );
        assert_eq!(octet_counted("ü".as_bytes()), "2 ü".as_bytes());
        assert_eq!(octet_counted(b""), b"0 ");
    }

    #[test]
    fn target_urls() {
        assert_eq!(
            Target::parse("unix:///dev/log").unwrap(),
            Target::Unix("/dev/log".into())
        );
        assert_eq!(
            Target::parse("udp://192.0.2.1:5514").unwrap(),
            Target::Udp {
                host: "192.0.2.1".into(),
                port: 5514
            }
        );
        assert_eq!(
            Target::parse("TCP://logs.example.net").unwrap(),
            Target::Tcp {
                host: "logs.example.net".into(),
                port: 514
            }
        );
        assert_eq!(
            Target::parse("tls://[2001:db8::1]").unwrap(),
            Target::Tls {
                host: "2001:db8::1".into(),
                port: 6514
            }
        );
        assert_eq!(
            Target::parse("udp://[2001:db8::1]:514")
                .unwrap()
                .to_string(),
            "udp://[2001:db8::1]:514"
        );
    }

    #[test]
    fn bad_target_urls_name_the_url_and_problem() {
        for (url, problem) in [
            ("192.0.2.1:514", "expected SCHEME://"),
            ("http://192.0.2.1", "unknown scheme"),
            ("udp://", "missing host"),
            ("udp://:514", "missing host"),
            ("tcp://192.0.2.1:0", "bad port"),
            ("tcp://192.0.2.1:70000", "bad port"),
            ("tcp://192.0.2.1:x", "bad port"),
            ("udp://2001:db8::1:514", "brackets"),
            ("udp://[2001:db8::1", "missing ']'"),
            ("udp://[foo]:514", "not an IPv6"),
            ("tcp://192.0.2.1:514/path", "only HOST[:PORT]"),
            ("unix://dev/log", "absolute"),
        ] {
            let e = Target::parse(url).unwrap_err().to_string();
            assert!(e.contains(&format!("{url:?}")), "{url}: {e}");
            assert!(e.contains(problem), "{url}: {e}");
        }
    }

    #[test]
    fn config_from_toml_with_defaults() {
        let c: SyslogConfig = toml::from_str(
            r#"target = "tcp://192.0.2.1:1514"
               facility = "daemon"
               format = "rfc3164"
               backoff_max = "5s""#,
        )
        .unwrap();
        assert_eq!(c.facility, Facility::Daemon);
        assert_eq!(c.format, SyslogFormat::Rfc3164);
        assert_eq!(c.queue, DEFAULT_QUEUE);
        assert_eq!(c.sd_id, DEFAULT_SD_ID);
        assert_eq!(c.backoff_min, Duration::from_millis(100));
        assert_eq!(c.backoff_max, Duration::from_secs(5));
        assert!(c.validate().is_ok());
        let e = toml::from_str::<SyslogConfig>("tagret = \"udp://x\"").unwrap_err();
        assert!(e.to_string().contains("tagret"), "{e}");
        assert_eq!("LOCAL7".parse::<Facility>().unwrap().code(), 23);
        assert!("local9".parse::<Facility>().is_err());
    }

    #[test]
    fn config_errors_name_the_key() {
        let check = |c: SyslogConfig, key: &str, problem: &str| {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(&format!("syslog.{key}")), "{e}");
            assert!(e.contains(problem), "{e}");
        };
        check(
            SyslogConfig::for_target("tls://192.0.2.1"),
            "tls_ca",
            "needs a CA file",
        );
        for (id, problem) in [
            ("smbwatch", "@ENTERPRISE-NUMBER"),
            ("smb watch@1", "not allowed"),
            ("smb=watch@1", "not allowed"),
            ("smbwatch@", "enterprise number"),
            ("smbwatch@12a", "enterprise number"),
            ("a-very-long-sd-id-that-is-too-long@32473", "1 to 32"),
        ] {
            let c = SyslogConfig {
                sd_id: id.into(),
                ..SyslogConfig::default()
            };
            check(c, "sd_id", problem);
        }
        let c = SyslogConfig {
            app_name: "smb watch".into(),
            ..SyslogConfig::default()
        };
        check(c, "app_name", "not allowed");
        let c = SyslogConfig {
            queue: 0,
            ..SyslogConfig::default()
        };
        check(c, "queue", "at least 1");
        let c = SyslogConfig {
            backoff_min: Duration::from_secs(2),
            backoff_max: Duration::from_secs(1),
            ..SyslogConfig::default()
        };
        check(c, "backoff_max", "less than backoff_min");
        assert!(SyslogConfig {
            sd_id: "x@1.2.3".into(),
            ..SyslogConfig::default()
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn tls_ca_errors_name_the_file() {
        let mut c = SyslogConfig::for_target("tls://127.0.0.1:6514");
        c.tls_ca = Some("/nonexistent/ca.pem".into());
        let e = SyslogSink::start(&c).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let dir = temp_dir("ca");
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        c.tls_ca = Some(path.clone());
        let e = SyslogSink::start(&c).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn queue_drops_oldest() {
        let mut q = BoundedQueue::new(3);
        assert_eq!(q.push(1), None);
        assert_eq!(q.push(2), None);
        assert_eq!(q.push(3), None);
        assert_eq!(q.push(4), Some(1));
        assert_eq!(q.push(5), Some(2));
        assert_eq!(q.len(), 3);
        assert_eq!(
            (q.pop(), q.pop(), q.pop(), q.pop()),
            (Some(3), Some(4), Some(5), None)
        );
        assert!(q.is_empty());
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let ms: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    fn temp_dir(tag: &str) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let d = std::env::temp_dir().join(format!(
            "smbwatch-syslog-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn fast(target: String) -> SyslogConfig {
        SyslogConfig {
            hostname: Some("gw1".into()),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            ..SyslogConfig::for_target(target)
        }
    }

    /// Reads one octet-counted frame.
    async fn read_frame<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Option<String> {
        let mut len = Vec::new();
        if r.read_until(b' ', &mut len).await.ok()? == 0 {
            return None;
        }
        let n: usize = std::str::from_utf8(&len[..len.len() - 1])
            .ok()?
            .parse()
            .ok()?;
        let mut buf = vec![0; n];
        r.read_exact(&mut buf).await.ok()?;
        String::from_utf8(buf).ok()
    }

    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("timed out")
    }

    #[tokio::test]
    async fn udp_datagram_is_the_message() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = rx.local_addr().unwrap().port();
        let sink = SyslogSink::start(&fast(format!("udp://127.0.0.1:{port}"))).unwrap();
        let a = scan_alert("hello over udp");
        sink.send(&a);
        let mut buf = [0u8; 4096];
        let n = within(rx.recv(&mut buf)).await.unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            sink.formatter().format(&a)
        );
        assert!(sink.formatter().format(&a).contains(" gw1 smbwatch "));
        let stats = sink.shutdown().await;
        assert_eq!((stats.sent, stats.queued, stats.dropped), (1, 0, 0));
    }

    #[tokio::test]
    async fn tcp_frames_are_octet_counted_and_shutdown_flushes() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let sink = SyslogSink::start(&fast(format!("tcp://127.0.0.1:{port}"))).unwrap();
        for i in 0..100 {
            sink.send(&scan_alert(&format!("alert {i}")));
        }
        let stats = sink.shutdown_within(Duration::from_secs(10)).await;
        assert_eq!((stats.sent, stats.queued), (100, 0));
        let (s, _) = within(l.accept()).await.unwrap();
        let mut r = tokio::io::BufReader::new(s);
        for i in 0..100 {
            let m = within(read_frame(&mut r)).await.unwrap();
            assert!(m.ends_with(&format!(" alert {i}")), "{m}");
        }
        // The sink closed the connection after the last frame.
        assert_eq!(within(read_frame(&mut r)).await, None);
    }

    #[tokio::test]
    async fn down_collector_keeps_the_newest_up_to_the_bound() {
        // A port with nothing listening: bind, note it, close.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut cfg = fast(format!("tcp://127.0.0.1:{port}"));
        cfg.queue = 3;
        let sink = SyslogSink::start(&cfg).unwrap();
        for i in 1..=5 {
            sink.send(&scan_alert(&format!("alert {i}")));
        }
        // Let the task try (and fail) a few times.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stats = sink.stats();
        assert_eq!((stats.sent, stats.queued, stats.dropped), (0, 3, 2));
        assert!(stats.connect_failures >= 2, "{stats:?}");
        // The collector comes up: exactly the three newest arrive, in order.
        let l = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let (s, _) = within(l.accept()).await.unwrap();
        let mut r = tokio::io::BufReader::new(s);
        for i in 3..=5 {
            let m = within(read_frame(&mut r)).await.unwrap();
            assert!(m.ends_with(&format!(" alert {i}")), "{m}");
        }
        let stats = sink.shutdown().await;
        assert_eq!((stats.sent, stats.queued, stats.dropped), (3, 0, 2));
    }

    #[tokio::test]
    async fn tcp_peer_close_loses_nothing() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let sink = SyslogSink::start(&fast(format!("tcp://127.0.0.1:{port}"))).unwrap();
        sink.send(&scan_alert("before"));
        let (s, _) = within(l.accept()).await.unwrap();
        let mut r = tokio::io::BufReader::new(s);
        assert!(within(read_frame(&mut r))
            .await
            .unwrap()
            .ends_with(" before"));
        // The collector closes the connection; alerts raised afterwards go
        // over a new one.
        drop(r);
        tokio::time::sleep(Duration::from_millis(50)).await;
        for i in 0..10 {
            sink.send(&scan_alert(&format!("after {i}")));
        }
        let (s, _) = within(l.accept()).await.unwrap();
        let mut r = tokio::io::BufReader::new(s);
        for i in 0..10 {
            let m = within(read_frame(&mut r)).await.unwrap();
            assert!(m.ends_with(&format!(" after {i}")), "{m}");
        }
        let stats = sink.shutdown().await;
        assert_eq!((stats.sent, stats.dropped, stats.reconnects), (11, 0, 1));
    }

    #[tokio::test]
    async fn unix_datagram_and_stream_fallback() {
        let dir = temp_dir("unix");
        // Datagram socket, as /dev/log.
        let dpath = dir.join("dgram.sock");
        let rx = UnixDatagram::bind(&dpath).unwrap();
        let sink = SyslogSink::start(&fast(format!("unix://{}", dpath.display()))).unwrap();
        sink.send(&scan_alert("over a datagram socket"));
        let mut buf = [0u8; 4096];
        let n = within(rx.recv(&mut buf)).await.unwrap();
        assert!(std::str::from_utf8(&buf[..n])
            .unwrap()
            .ends_with(" over a datagram socket"));
        sink.shutdown().await;
        // Stream socket: messages are NUL-terminated.
        let spath = dir.join("stream.sock");
        let l = UnixListener::bind(&spath).unwrap();
        let sink = SyslogSink::start(&fast(format!("unix://{}", spath.display()))).unwrap();
        sink.send(&scan_alert("one"));
        sink.send(&scan_alert("two"));
        let (s, _) = within(l.accept()).await.unwrap();
        let mut r = tokio::io::BufReader::new(s);
        for want in [" one\0", " two\0"] {
            let mut m = Vec::new();
            within(r.read_until(0, &mut m)).await.unwrap();
            assert!(String::from_utf8(m).unwrap().ends_with(want));
        }
        assert_eq!(sink.shutdown().await.sent, 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_collector_that_hangs_up_at_once_is_not_hammered() {
        // Like rsyslog past its MaxSessions: accept, then close at once.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let accepts = Arc::new(AtomicU64::new(0));
        let counter = accepts.clone();
        let server = tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                counter.fetch_add(1, Ordering::Relaxed);
                drop(s);
            }
        });
        let sink = SyslogSink::start(&fast(format!("tcp://127.0.0.1:{port}"))).unwrap();
        for i in 0..3 {
            sink.send(&scan_alert(&format!("alert {i}")));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n = accepts.load(Ordering::Relaxed);
        // 10 ms doubling to 50 ms allows about a dozen attempts in 500 ms.
        assert!(n <= 30, "{n} connections in 500 ms");
        drop(sink);
        server.abort();
    }

    #[tokio::test]
    async fn drop_stops_the_task() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let sink = SyslogSink::start(&fast(format!("tcp://127.0.0.1:{port}"))).unwrap();
        let shared = sink.shared.clone();
        sink.send(&scan_alert("abandoned"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(sink);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let tries = shared.connect_failures.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(shared.connect_failures.load(Ordering::Relaxed), tries);
        // Only this test's handle is left: the task released its clone.
        assert_eq!(Arc::strong_count(&shared), 1);
    }

    #[test]
    fn start_outside_a_runtime_is_an_error() {
        let e = SyslogSink::start(&fast("udp://127.0.0.1:514".into())).unwrap_err();
        assert!(matches!(e, SyslogError::NoRuntime), "{e}");
    }
}
