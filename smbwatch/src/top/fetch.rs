//! One `GET /top` over plain HTTP/1.1 with timeouts and a size bound.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use crate::metrics::top::TopDoc;

/// Connect, read and write timeout of one poll.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest response read (a document is a few KiB).
const MAX_RESPONSE: u64 = 1 << 20;

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The daemon could not be reached or stopped answering.
    #[error("{addr}: {source} (is `smbwatch run --metrics` running there?)")]
    Io {
        /// The address polled.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It answered something other than a `/top` document.
    #[error("{addr}: {problem}")]
    Response {
        /// The address polled.
        addr: SocketAddr,
        /// What was wrong.
        problem: String,
    },
}

/// Polls `addr` once.
pub fn fetch_top(addr: SocketAddr) -> Result<TopDoc, FetchError> {
    let io = |source| FetchError::Io { addr, source };
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(io)?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    write!(
        s,
        "GET /top HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut raw = Vec::new();
    s.take(MAX_RESPONSE).read_to_end(&mut raw).map_err(io)?;
    parse_response(&raw).map_err(|problem| FetchError::Response { addr, problem })
}

/// The document in an HTTP response, or what is wrong with it.
pub(crate) fn parse_response(raw: &[u8]) -> Result<TopDoc, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("incomplete HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(format!("answered {status:?}, not 200"));
    }
    serde_json::from_slice(&raw[split + 4..]).map_err(|e| format!("not a /top document: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"tracked_sources\":3,\"sources\":[],\"alerts\":[],\"counters\":{\"packets\":7}}";
        let doc = parse_response(ok).unwrap();
        assert_eq!(doc.tracked_sources, 3);
        assert_eq!(doc.counters["packets"], 7);
        let e = parse_response(b"HTTP/1.1 404 Not Found\r\n\r\nnot found").unwrap_err();
        assert!(e.contains("404"), "{e}");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n{").is_err());
        assert!(parse_response(b"HTTP/1.1 200").is_err());
    }
}
