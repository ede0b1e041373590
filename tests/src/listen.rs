//! Plain TCP listeners on port 445 inside a lab namespace: real Linux TCP
//! answering SYNs with SYN-ACKs (the kernel completes handshakes without
//! `accept`), for sweeps whose probes must be answered without an smbd per
//! address.

use std::net::{IpAddr, SocketAddr, TcpListener};

use anyhow::{Context as _, Result};

use crate::{gen::in_netns, netns::NetNs};

/// Listening sockets; closed on drop.
pub struct Listeners(pub Vec<TcpListener>);

/// Listens on port 445 of each of `addrs` (already configured in `ns`).
pub fn listen_445(ns: &NetNs, addrs: &[IpAddr]) -> Result<Listeners> {
    in_netns(&ns.path(), || {
        addrs
            .iter()
            .map(|&a| {
                // A socket keeps the namespace it was created in.
                TcpListener::bind(SocketAddr::new(a, 445))
                    .with_context(|| format!("listening on {a}:445 in {}", ns.name()))
            })
            .collect::<Result<Vec<_>>>()
            .map(Listeners)
    })
}
