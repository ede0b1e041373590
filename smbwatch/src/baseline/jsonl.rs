//! Export and import as JSON lines: one `meta` line, then one line per
//! client and per edge. Times are Unix seconds, addresses text.
//!
//! ```text
//! {"type":"meta","schema":1,"started":1700000000,"last":1700600000,"learned":5120,...}
//! {"type":"client","addr":"192.0.2.21","first_seen":1700000000,...,"listed":["192.0.2.10"]}
//! {"type":"edge","client":"192.0.2.21","server":"192.0.2.10","first_seen":1700000000,...}
//! ```

use std::io::{BufRead, Write};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::store::SCHEMA_VERSION;
use super::{addr_key, key_addr};
use super::{Client, Edge, Meta, Snapshot};

/// One line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    /// Whole-baseline facts.
    Meta {
        /// The schema the export was written with.
        schema: u64,
        /// The facts.
        #[serde(flatten)]
        meta: Meta,
    },
    /// One client.
    Client {
        /// Its address.
        addr: IpAddr,
        /// Its record.
        #[serde(flatten)]
        client: Client,
    },
    /// One edge.
    Edge {
        /// The client.
        client: IpAddr,
        /// The server.
        server: IpAddr,
        /// Its record.
        #[serde(flatten)]
        edge: Edge,
    },
}

/// A line of an import that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Reading failed.
    #[error("{name}: reading failed: {source}")]
    Io {
        /// The input's name.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a baseline record.
    #[error("{name}:{line}: {message}")]
    Bad {
        /// The input's name.
        name: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Writes `snap` as JSON lines.
pub fn export(snap: &Snapshot, out: &mut dyn Write) -> std::io::Result<()> {
    let mut line = |l: &Line| -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, l)?;
        out.write_all(b"\n")
    };
    line(&Line::Meta {
        schema: SCHEMA_VERSION,
        meta: snap.meta,
    })?;
    for (k, c) in &snap.clients {
        line(&Line::Client {
            addr: key_addr(*k),
            client: *c,
        })?;
    }
    for ((c, s), e) in &snap.edges {
        line(&Line::Edge {
            client: key_addr(*c),
            server: key_addr(*s),
            edge: *e,
        })?;
    }
    Ok(())
}

/// Reads JSON lines written by [`export`] (blank lines are skipped).
pub fn import(input: impl BufRead, name: &str) -> Result<Snapshot, ImportError> {
    let mut snap = Snapshot::default();
    let bad = |line: usize, message: String| ImportError::Bad {
        name: name.to_owned(),
        line,
        message,
    };
    for (i, text) in input.lines().enumerate() {
        let text = text.map_err(|source| ImportError::Io {
            name: name.to_owned(),
            source,
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(&text).map_err(|e| bad(i + 1, e.to_string()))?;
        match l {
            Line::Meta { schema, meta } => {
                if schema > SCHEMA_VERSION {
                    return Err(bad(
                        i + 1,
                        format!("exported with baseline schema {schema}, newer than this smbwatch reads ({SCHEMA_VERSION})"),
                    ));
                }
                snap.meta = meta;
            }
            Line::Client { addr, client } => snap.clients.push((addr_key(addr), client)),
            Line::Edge {
                client,
                server,
                edge,
            } => snap
                .edges
                .push(((addr_key(client), addr_key(server)), edge)),
        }
    }
    Ok(snap)
}
