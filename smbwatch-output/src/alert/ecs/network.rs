//! Where: `source.*`, `destination.*`, `network.*` (with the direction
//! from the perimeter's point of view) and `observer.*`.

use std::net::IpAddr;

use serde::Serialize;

use super::{empty, Empty, Keyword};
#[cfg(doc)]
use crate::alert::sensor::{OBSERVER_TYPE, PRODUCT};

/// `source.*` or `destination.*`.
#[derive(Debug, Default, Serialize)]
pub struct Endpoint {
    /// Address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// Port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `source.domain`: the client's computer name from its NTLMSSP logon
    /// (SMB alerts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// `network.direction`, from the perimeter's point of view (ECS values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Both ends are internal (not globally reachable).
    Internal,
    /// Both ends are globally reachable.
    External,
    /// From a global address to an internal one.
    Inbound,
    /// From an internal address to a global one.
    Outbound,
}

impl Direction {
    /// The direction of a flow: "internal" is an address the IANA
    /// special-purpose registries mark not globally reachable (private,
    /// shared 100.64/10, loopback, link-local, documentation, ULA).
    pub fn of(src: IpAddr, dst: IpAddr) -> Self {
        match (is_internal(src), is_internal(dst)) {
            (true, true) => Self::Internal,
            (false, false) => Self::External,
            (false, true) => Self::Inbound,
            (true, false) => Self::Outbound,
        }
    }
}

fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_documentation()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            a.is_loopback()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || a.to_ipv4_mapped().is_some_and(|v4| is_internal(v4.into()))
        }
    }
}

/// `network.*`.
#[derive(Debug, Default, Serialize)]
pub struct Network<'a> {
    /// `tcp`: smbwatch watches TCP ports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<&'static str>,
    /// `ipv4` or `ipv6`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// `smb` on SMB alerts (seen on the wire).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'static str>,
    /// See [`Direction`]; only when both ends are known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Community ID of the flow in `source`/`destination` (scans: the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<&'a str>,
}

/// `observer.*`: the machine smbwatch runs on.
#[derive(Debug, Serialize)]
pub struct Observer<'a> {
    /// [`OBSERVER_TYPE`].
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// [`PRODUCT`].
    pub vendor: &'static str,
    /// [`PRODUCT`].
    pub product: &'static str,
    /// smbwatch's version.
    pub version: &'static str,
    /// The sensor's host name, lower-cased.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<&'a str>,
    /// `observer.name`: the gateways that saw the source (set by the fleet
    /// aggregator; one router's own alerts leave it out).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub name: Vec<String>,
    /// `observer.ingress.*`.
    #[serde(skip_serializing_if = "empty")]
    pub ingress: Ingress<'a>,
}

/// `observer.ingress.*`.
#[derive(Debug, Default, Serialize)]
pub struct Ingress<'a> {
    /// `observer.ingress.interface.*`.
    #[serde(skip_serializing_if = "empty")]
    pub interface: Interface<'a>,
    /// `observer.ingress.vlan.*`.
    #[serde(skip_serializing_if = "empty")]
    pub vlan: Id<u16>,
}

/// `observer.ingress.interface.*`.
#[derive(Debug, Default, Serialize)]
pub struct Interface<'a> {
    /// Interface index, as a keyword.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Keyword<u32>>,
    /// Interface name, when the sensor knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
}

/// An object with a keyword `id`.
#[derive(Debug, Serialize)]
pub struct Id<T: std::fmt::Display> {
    /// The id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Keyword<T>>,
}

impl<T: std::fmt::Display> Default for Id<T> {
    fn default() -> Self {
        Self { id: None }
    }
}

impl Empty for Endpoint {
    fn is_empty(&self) -> bool {
        self.ip.is_none() && self.port.is_none() && self.domain.is_none()
    }
}

impl Empty for Network<'_> {
    fn is_empty(&self) -> bool {
        self.transport.is_none()
            && self.kind.is_none()
            && self.protocol.is_none()
            && self.direction.is_none()
            && self.community_id.is_none()
    }
}

impl Empty for Ingress<'_> {
    fn is_empty(&self) -> bool {
        self.interface.is_empty() && self.vlan.is_empty()
    }
}

impl Empty for Interface<'_> {
    fn is_empty(&self) -> bool {
        self.id.is_none() && self.name.is_none()
    }
}

impl<T: std::fmt::Display> Empty for Id<T> {
    fn is_empty(&self) -> bool {
        self.id.is_none()
    }
}
