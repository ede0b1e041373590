//! Where syslog messages go: the target URL, parsed once.
//!
//! [`Target`] is generic over what a TLS target carries so that one enum
//! serves every stage: `Target<()>` is the URL alone, [`Target`] (the
//! default, from [`SyslogConfig::validate`](super::SyslogConfig::validate))
//! adds the CA file and the checked server name, and the connection task's
//! target carries the loaded TLS client. No stage re-parses a string or
//! looks up an optional TLS setup.

use std::path::PathBuf;

use tokio_rustls::rustls::pki_types::ServerName;

use smbwatch_core::settings::Invalid;

use super::SyslogError;

/// A host name or address and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What a `tls://` target needs besides its address: the CA bundle that
/// signs the collector's certificate and the name checked against it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file of the CA(s) (`tls_ca`).
    pub ca: PathBuf,
    /// Name checked against the certificate (`tls_server_name` or the URL
    /// host).
    pub server_name: ServerName<'static>,
}

impl TlsSettings {
    /// Checks the server name (a DNS name or an IP address).
    pub fn new(ca: PathBuf, server_name: &str) -> Result<Self, Invalid> {
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| Invalid::new("syslog.tls_server_name", format!("{server_name:?}: {e}")))?;
        Ok(Self { ca, server_name })
    }
}

/// Where syslog messages go. `Tls` is what a TLS target carries: `()` for
/// the URL alone, [`TlsSettings`] once configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target<Tls = TlsSettings> {
    /// A local socket, datagram (as `/dev/log`) or stream.
    Unix(PathBuf),
    /// UDP, one message per datagram (RFC 5426).
    Udp(HostPort),
    /// TCP with octet-counting framing (RFC 6587).
    Tcp(HostPort),
    /// TLS with octet-counting framing (RFC 5425).
    Tls(HostPort, Tls),
}

impl Target<()> {
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
        let addr = HostPort {
            host: host.to_owned(),
            port,
        };
        Ok(match scheme.as_str() {
            "udp" => Self::Udp(addr),
            "tcp" => Self::Tcp(addr),
            _ => Self::Tls(addr, ()),
        })
    }
}

impl<T> Target<T> {
    /// The same target with what its TLS variant carries replaced by `f`'s
    /// result (other variants are unchanged).
    pub fn map_tls<U, E>(
        self,
        f: impl FnOnce(&HostPort, T) -> Result<U, E>,
    ) -> Result<Target<U>, E> {
        Ok(match self {
            Self::Unix(p) => Target::Unix(p),
            Self::Udp(a) => Target::Udp(a),
            Self::Tcp(a) => Target::Tcp(a),
            Self::Tls(a, t) => {
                let u = f(&a, t)?;
                Target::Tls(a, u)
            }
        })
    }

    /// True for the local syslog socket.
    pub fn is_local(&self) -> bool {
        matches!(self, Self::Unix(_))
    }
}

/// Written as in the configuration (`syslog.target`), ports filled in.
impl serde::Serialize for Target<()> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Read from the configuration (`syslog.target`): parsed once, here; the
/// error names the URL and the problem.
impl<'de> serde::Deserialize<'de> for Target<()> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let url = <String as serde::Deserialize>::deserialize(d)?;
        Self::parse(&url).map_err(|e| match e {
            SyslogError::Target { url, problem } => {
                serde::de::Error::custom(format!("{url:?}: {problem}"))
            }
            other => serde::de::Error::custom(other),
        })
    }
}

impl std::str::FromStr for Target<()> {
    type Err = SyslogError;

    fn from_str(url: &str) -> Result<Self, SyslogError> {
        Self::parse(url)
    }
}

impl<T> std::fmt::Display for Target<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix://{}", p.display()),
            Self::Udp(a) => write!(f, "udp://{a}"),
            Self::Tcp(a) => write!(f, "tcp://{a}"),
            Self::Tls(a, _) => write!(f, "tls://{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(host: &str, port: u16) -> HostPort {
        HostPort {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn target_urls() {
        assert_eq!(
            Target::parse("unix:///dev/log").unwrap(),
            Target::Unix("/dev/log".into())
        );
        assert_eq!(
            Target::parse("udp://192.0.2.1:5514").unwrap(),
            Target::Udp(hp("192.0.2.1", 5514))
        );
        assert_eq!(
            Target::parse("TCP://logs.example.net").unwrap(),
            Target::Tcp(hp("logs.example.net", 514))
        );
        assert_eq!(
            Target::parse("tls://[2001:db8::1]").unwrap(),
            Target::Tls(hp("2001:db8::1", 6514), ())
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
    fn tls_target_carries_its_settings() {
        let t = Target::parse("tls://logs.example.net")
            .unwrap()
            .map_tls(|a, ()| TlsSettings::new("/ca.pem".into(), &a.host))
            .unwrap();
        let Target::Tls(addr, tls) = &t else {
            panic!("{t:?}")
        };
        assert_eq!(addr, &hp("logs.example.net", 6514));
        assert_eq!(tls.ca, PathBuf::from("/ca.pem"));
        assert_eq!(tls.server_name.to_str(), "logs.example.net");
        assert!(!t.is_local());
        assert!(Target::parse("unix:///dev/log").unwrap().is_local());
        let e = TlsSettings::new("/ca.pem".into(), "not a name!").unwrap_err();
        assert!(e.to_string().contains("syslog.tls_server_name"), "{e}");
    }
}
