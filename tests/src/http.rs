//! Plain HTTP/1.1 GETs from inside a lab namespace (the daemon's metrics
//! endpoint and Prometheus listen on the gateway's loopback).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::netns::NetNs;

/// `GET target` from `addr` inside `ns`; returns the status and the body.
pub fn get(ns: &NetNs, addr: SocketAddr, target: &str) -> Result<(u16, String)> {
    let path = ns.path();
    let target = target.to_owned();
    // setns moves only the calling thread: do it on a thread of our own.
    std::thread::spawn(move || -> Result<(u16, String)> {
        crate::gen::enter_netns(&path)?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            bail!("incomplete response from {addr}: {text:?}");
        };
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("no status in {head:?}"))?;
        // Prometheus answers chunked; its JSON bodies are small, one chunk
        // or a few: strip the size lines.
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Ok((status, body))
    })
    .join()
    .expect("http thread")
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Writes `lines` (each with a newline) to TCP `addr` inside `ns`, then
/// closes: a forwarder's connection to the host-log listener.
pub fn send_lines(ns: &NetNs, addr: SocketAddr, lines: &[String]) -> Result<()> {
    let path = ns.path();
    let text = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    std::thread::spawn(move || -> Result<()> {
        crate::gen::enter_netns(&path)?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(text.as_bytes())?;
        s.shutdown(std::net::Shutdown::Write)?;
        // Wait for the listener to close its end: everything was read.
        let _ = s.read_to_end(&mut Vec::new());
        Ok(())
    })
    .join()
    .expect("sender thread")
}

/// Percent-encodes a query-string value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
