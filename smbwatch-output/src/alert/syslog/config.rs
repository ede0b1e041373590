//! The `[syslog]` configuration section and its checks (no I/O).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use smbwatch_core::settings::Invalid;

use super::target::{Target, TlsSettings};

/// Default SD-ID: RFC 5612's example private enterprise number (32473).
pub const DEFAULT_SD_ID: &str = "smbwatch@32473";
/// Default queue bound (messages).
pub const DEFAULT_QUEUE: usize = 10_000;
/// Default queue bound in bytes (16 MiB): 10,000 alerts of typical size
/// (300 to 1,500 bytes) fit; oversized ones cannot take more.
pub const DEFAULT_QUEUE_BYTES: usize = 16 << 20;
/// Default longest message over UDP and the local socket: rsyslog's default
/// `maxMessageSize` (8 KiB), so a default receiver keeps it whole.
pub const DATAGRAM_MAX_MESSAGE: usize = 8 << 10;
/// Default longest message over TCP and TLS (64 KiB).
pub const STREAM_MAX_MESSAGE: usize = 64 << 10;
/// Smallest `max_message`: RFC 5424 §6.1 has every receiver accept 480
/// octets, and the longest header (255-byte HOSTNAME, 48-byte APP-NAME...)
/// plus an empty SD element fits in it.
pub const MIN_MESSAGE: usize = 480;
/// Largest `max_message` over UDP: one IPv4 datagram's payload.
pub const UDP_MAX_MESSAGE: usize = 65_507;
/// Largest `max_message` otherwise (1 MiB).
pub const MAX_MESSAGE: usize = 1 << 20;
/// Bytes a queued message costs beside its text (its `Vec` in the queue).
pub const QUEUE_ENTRY_OVERHEAD: usize = std::mem::size_of::<Vec<u8>>();

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
    /// `tls://HOST:PORT` (ports default to 514, 514, 6514); parsed where
    /// it is read.
    pub target: Target<()>,
    /// `rfc5424` or `rfc3164`; absent: see [`SyslogConfig::message_format`].
    pub format: Option<SyslogFormat>,
    /// APP-NAME (RFC 5424) or TAG (RFC 3164).
    pub app_name: String,
    /// HOSTNAME field; the system host name when absent.
    pub hostname: Option<String>,
    /// Facility; severity comes from the alert.
    pub facility: Facility,
    /// Messages held while the collector is unreachable; past this the
    /// oldest is dropped.
    pub queue: usize,
    /// Bytes held while the collector is unreachable (message text plus
    /// [`QUEUE_ENTRY_OVERHEAD`] each); past this the oldest are dropped.
    pub queue_bytes: usize,
    /// Longest message in bytes (without framing); longer ones are
    /// shortened. Absent: [`DATAGRAM_MAX_MESSAGE`] for `udp://` and
    /// `unix://`, [`STREAM_MAX_MESSAGE`] for `tcp://` and `tls://`.
    pub max_message: Option<usize>,
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
            target: Target::Unix("/dev/log".into()),
            format: None,
            app_name: "smbwatch".into(),
            hostname: None,
            facility: Facility::Local4,
            queue: DEFAULT_QUEUE,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            max_message: None,
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
    pub fn for_target(target: Target<()>) -> Self {
        Self {
            target,
            ..Self::default()
        }
    }

    /// The format messages are sent in: `format`, else RFC 3164 for a
    /// `unix://` socket (journald and rsyslog's imuxsock, which own
    /// `/dev/log`, parse 3164 only: the tag becomes `SYSLOG_IDENTIFIER`)
    /// and RFC 5424 for a collector over the network.
    pub fn message_format(&self) -> SyslogFormat {
        self.format.unwrap_or(if self.target.is_local() {
            SyslogFormat::Rfc3164
        } else {
            SyslogFormat::Rfc5424
        })
    }

    /// The longest message for `target`: `max_message`, or the transport's
    /// default.
    pub fn max_message_for<T>(&self, target: &Target<T>) -> usize {
        self.max_message.unwrap_or(match target {
            Target::Unix(_) | Target::Udp(_) => DATAGRAM_MAX_MESSAGE,
            Target::Tcp(_) | Target::Tls(..) => STREAM_MAX_MESSAGE,
        })
    }

    /// Checks every key without touching the network and returns the
    /// parsed target (for `tls://`, with its CA file and server name); the
    /// error names the key (`syslog.KEY`) and the problem.
    pub fn validate(&self) -> Result<Target, Invalid> {
        let url = self.target.clone();
        let bad = |key: &str, problem: String| Err(Invalid::new(format!("syslog.{key}"), problem));
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
        if let Some(n) = self.max_message {
            let most = if matches!(url, Target::Udp(_)) {
                UDP_MAX_MESSAGE
            } else {
                MAX_MESSAGE
            };
            if !(MIN_MESSAGE..=most).contains(&n) {
                return bad(
                    "max_message",
                    format!("{n}: must be {MIN_MESSAGE} to {most} bytes for {url}"),
                );
            }
        }
        let largest = self.max_message_for(&url) + QUEUE_ENTRY_OVERHEAD;
        if self.queue_bytes < largest {
            return bad(
                "queue_bytes",
                format!(
                    "{}: must hold at least one message of max_message {} bytes ({largest})",
                    self.queue_bytes,
                    self.max_message_for(&url)
                ),
            );
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
        url.map_tls(|addr, ()| {
            let Some(ca) = &self.tls_ca else {
                return Err(Invalid::new(
                    "syslog.tls_ca",
                    format!(
                        "{} needs a CA file (tls_ca = \"/path/ca.pem\"): no system trust store is used",
                        self.target
                    ),
                ));
            };
            let name = self.tls_server_name.as_deref().unwrap_or(&addr.host);
            TlsSettings::new(ca.clone(), name)
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Unset, the format follows the target: RFC 3164 on the local socket
    /// (journald gets SYSLOG_IDENTIFIER from it), RFC 5424 on the network;
    /// a format given is kept everywhere.
    #[test]
    fn format_defaults_to_3164_on_the_local_socket() {
        let f = |t: &str| SyslogConfig::for_target(t.parse().unwrap()).message_format();
        assert_eq!(f("unix:///dev/log"), SyslogFormat::Rfc3164);
        for t in ["udp://192.0.2.1", "tcp://192.0.2.1:1514", "tls://192.0.2.1"] {
            assert_eq!(f(t), SyslogFormat::Rfc5424, "{t}");
        }
        let c: SyslogConfig =
            toml::from_str("target = \"unix:///dev/log\"\nformat = \"rfc5424\"").unwrap();
        assert_eq!(c.message_format(), SyslogFormat::Rfc5424);
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
        assert_eq!(c.format, Some(SyslogFormat::Rfc3164));
        assert_eq!(c.queue, DEFAULT_QUEUE);
        assert_eq!(c.queue_bytes, 16 * 1024 * 1024);
        assert_eq!(c.max_message, None);
        let target = c.validate().unwrap();
        assert_eq!(c.max_message_for(&target), 65_536);
        let udp = SyslogConfig::for_target("udp://192.0.2.1".parse().unwrap());
        assert_eq!(udp.max_message_for(&udp.validate().unwrap()), 8192);
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
            SyslogConfig::for_target("tls://192.0.2.1".parse().unwrap()),
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
        for (target, n, problem) in [
            ("udp://192.0.2.1", 479, "480 to 65507"),
            ("udp://192.0.2.1", 65_508, "480 to 65507"),
            ("tcp://192.0.2.1", 2 << 20, "480 to 1048576"),
        ] {
            let c = SyslogConfig {
                max_message: Some(n),
                ..SyslogConfig::for_target(target.parse().unwrap())
            };
            check(c, "max_message", problem);
        }
        let c = SyslogConfig {
            queue_bytes: 4096,
            ..SyslogConfig::for_target("tcp://192.0.2.1".parse().unwrap())
        };
        check(
            c,
            "queue_bytes",
            "at least one message of max_message 65536",
        );
        let c = SyslogConfig {
            queue_bytes: 4096,
            max_message: Some(2048),
            ..SyslogConfig::for_target("tcp://192.0.2.1".parse().unwrap())
        };
        assert!(c.validate().is_ok());
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
}
