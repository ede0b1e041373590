//! `tcp://ADDR:PORT` listen addresses (`hostlog.listen`, `--listen`).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A TCP listen address, written `tcp://ADDR:PORT` (IPv6 in brackets);
/// parsed once, where the configuration or the command line is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenAddr(pub SocketAddr);

/// Why a listen address was refused.
#[derive(Debug, thiserror::Error)]
#[error("{input:?}: {problem}")]
pub struct ListenAddrError {
    /// The text as given.
    pub input: String,
    /// What is wrong.
    pub problem: &'static str,
}

impl FromStr for ListenAddr {
    type Err = ListenAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |problem| ListenAddrError {
            input: s.to_owned(),
            problem,
        };
        let rest = s
            .strip_prefix("tcp://")
            .ok_or_else(|| err("expected tcp://ADDR:PORT"))?;
        rest.parse()
            .map(Self)
            .map_err(|_| err("expected tcp://ADDR:PORT with an IP address (IPv6 in brackets)"))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tcp://{}", self.0)
    }
}

impl Serialize for ListenAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
