//! `[publish]`: the broker, the stream and the credentials, shared by
//! gateways (`run --publish`) and aggregators (`aggregate`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use smbwatch_core::settings::{invalid, Invalid};

/// `[publish]`: where a gateway publishes its events, and where an
/// aggregator reads them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublishConfig {
    /// Broker, `nats://HOST:PORT` or `tls://HOST:PORT` (several separated by
    /// commas for a cluster); no publishing when absent.
    pub url: Option<BrokerUrls>,
    /// This gateway's id in subjects and in alerts' `observer.name`
    /// (letters, digits, `-`, `_`); default: the host name.
    pub gateway_id: Option<GatewayId>,
    /// JetStream stream name (created with file storage when missing).
    pub stream: String,
    /// Partitions (subjects per gateway); every gateway and aggregator of a
    /// fleet must use the same number.
    pub partitions: u16,
    /// Most bytes of events the gateway holds while the broker is slow or
    /// down; past it new events are dropped, counted and logged.
    pub buffer_bytes: usize,
    /// The stream's size limit when this process creates it (oldest
    /// messages are discarded past it).
    pub stream_max_bytes: u64,
    /// The stream's replicas (1 to 5): a gateway creates the stream with
    /// them and refuses an existing stream with fewer. Default: 3 when the
    /// server is part of a cluster, 1 otherwise.
    pub replicas: Option<usize>,
    /// User name (with `password_file`).
    pub user: Option<String>,
    /// File holding the password (first line), kept out of the config.
    pub password_file: Option<PathBuf>,
    /// File holding an NKey seed (`SU...`).
    pub nkey_seed_file: Option<PathBuf>,
    /// CA certificates (PEM) to verify the broker with; setting it requires TLS.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for brokers that verify clients.
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub tls_key: Option<PathBuf>,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            url: None,
            gateway_id: None,
            stream: "SMBWATCH".into(),
            partitions: 16,
            buffer_bytes: 64 << 20,
            stream_max_bytes: 1 << 30,
            replicas: None,
            user: None,
            password_file: None,
            nkey_seed_file: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl PublishConfig {
    /// The first problem with these settings, naming its key.
    pub fn validate(&self) -> Result<(), Invalid> {
        if super::check_gateway_id(&self.stream).is_err() {
            return invalid(
                "publish.stream",
                format!(
                    "{:?}: a stream name is letters, digits, '-' and '_'",
                    self.stream
                ),
            );
        }
        if !(1..=1024).contains(&self.partitions) {
            return invalid("publish.partitions", "1 to 1024");
        }
        if !(64 << 10..=4 << 30).contains(&self.buffer_bytes) {
            return invalid("publish.buffer_bytes", "64 KiB to 4 GiB");
        }
        if self.stream_max_bytes < 1 << 20 {
            return invalid("publish.stream_max_bytes", "at least 1 MiB");
        }
        if self.replicas.is_some_and(|r| !(1..=5).contains(&r)) {
            return invalid("publish.replicas", "1 to 5 (JetStream's limit)");
        }
        if self.user.is_some() != self.password_file.is_some() {
            return invalid("publish.user", "user and password_file go together");
        }
        if self.user.is_some() && self.nkey_seed_file.is_some() {
            return invalid(
                "publish.nkey_seed_file",
                "either user/password_file or nkey_seed_file, not both",
            );
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return invalid("publish.tls_cert", "tls_cert and tls_key go together");
        }
        Ok(())
    }

    /// Whether TLS is required: a `tls://` URL or any TLS file.
    pub fn tls_required(&self) -> bool {
        self.url.as_ref().is_some_and(BrokerUrls::uses_tls)
            || self.tls_ca.is_some()
            || self.tls_cert.is_some()
    }
}

/// The broker's URL, or a cluster's URLs comma-separated, each
/// `nats://HOST:PORT` or `tls://HOST:PORT`; checked where it is read (the
/// file, `--publish`, `--nats`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerUrls(String);

impl BrokerUrls {
    /// The URLs as given (what the NATS client takes).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a URL asks for TLS.
    pub fn uses_tls(&self) -> bool {
        self.0.contains("tls://")
    }
}

impl std::str::FromStr for BrokerUrls {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        for u in s.split(',').map(str::trim) {
            let rest = u
                .strip_prefix("nats://")
                .or_else(|| u.strip_prefix("tls://"));
            match rest {
                Some(r) if !r.is_empty() && !r.contains('/') => {}
                _ => {
                    return Err(format!(
                        "{u:?}: expected nats://HOST:PORT or tls://HOST:PORT"
                    ))
                }
            }
        }
        Ok(Self(s.to_owned()))
    }
}

/// A gateway's id: one NATS subject token of letters, digits, `-` and `_`,
/// at most 64 bytes ([`super::check_gateway_id`]); checked where read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GatewayId(String);

impl GatewayId {
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for GatewayId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        super::check_gateway_id(s).map(|()| Self(s.to_owned()))
    }
}

/// Display, serde as the text, parsing through `FromStr`.
macro_rules! text_setting {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}
text_setting!(BrokerUrls);
text_setting!(GatewayId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        assert_eq!(PublishConfig::default().validate(), Ok(()));
        let with = |f: fn(&mut PublishConfig)| {
            let mut c = PublishConfig::default();
            f(&mut c);
            // The key at fault, "" when valid.
            c.validate().err().map_or(String::new(), |e| e.key)
        };
        assert_eq!(
            with(|c| c.url = Some("nats://192.0.2.1:4222".parse().unwrap())),
            ""
        );
        // Refused where they are read, naming the value.
        let e = "http://192.0.2.1".parse::<BrokerUrls>().unwrap_err();
        assert!(e.contains("expected nats://HOST:PORT"), "{e}");
        assert!("nats://a:1, tls://b:2"
            .parse::<BrokerUrls>()
            .unwrap()
            .uses_tls());
        assert!("a.b".parse::<GatewayId>().unwrap_err().contains("'.'"));
        let text = "[publish]\ngateway_id = \"a b\"\n";
        let e = crate::config::Config::from_str_named(text, "t.toml").unwrap_err();
        assert!(e.to_string().starts_with("t.toml:2:"), "{e}");
        assert!(e.to_string().contains("publish.gateway_id"), "{e}");
        assert_eq!(with(|c| c.partitions = 0), "publish.partitions");
        assert_eq!(with(|c| c.buffer_bytes = 10), "publish.buffer_bytes");
        assert_eq!(with(|c| c.user = Some("u".into())), "publish.user");
        assert_eq!(with(|c| c.replicas = Some(3)), "");
        assert_eq!(with(|c| c.replicas = Some(7)), "publish.replicas");
        assert_eq!(with(|c| c.tls_key = Some("k".into())), "publish.tls_cert");
    }

    #[test]
    fn tls_is_required_by_scheme_or_files() {
        let mut c = PublishConfig {
            url: Some("nats://192.0.2.1:4222".parse().unwrap()),
            ..Default::default()
        };
        assert!(!c.tls_required());
        c.tls_ca = Some("/etc/ssl/ca.pem".into());
        assert!(c.tls_required());
    }
}
