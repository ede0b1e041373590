//! A real Prometheus server (Debian package `prometheus`) in a lab
//! namespace, scraping one target every second, with its own data
//! directory; killed and removed on drop.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::{http, netns::NetNs, rsyslog::temp_dir};

const BIN: &str = "/usr/bin/prometheus";

/// The Prometheus binary, or `None` (a skip; a failure under `CI=true`).
pub fn prometheus() -> Option<PathBuf> {
    let p = Path::new(BIN);
    if p.exists() {
        return Some(p.to_owned());
    }
    crate::skip("prometheus not installed (apt-get install -y prometheus): metrics not tested against a real server");
    None
}

/// A running Prometheus.
pub struct Prometheus<'a> {
    child: Child,
    dir: PathBuf,
    ns: &'a NetNs,
    /// Its web address (inside `ns`).
    pub addr: SocketAddr,
}

impl<'a> Prometheus<'a> {
    /// Starts `bin` in `ns` listening on `addr`, scraping `target`'s
    /// `/metrics` every second; waits until it is ready.
    pub fn start(bin: &Path, ns: &'a NetNs, addr: SocketAddr, target: SocketAddr) -> Result<Self> {
        let dir = temp_dir("prometheus");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: smbwatch\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = ns
            .command(bin.to_str().context("utf-8 path")?)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning prometheus")?;
        let mut p = Self {
            child,
            dir,
            ns,
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http::get(ns, addr, "/-/ready") {
                return Ok(p);
            }
            if let Some(status) = p.child.try_wait()? {
                bail!("prometheus exited ({status}): {}", p.log());
            }
            if Instant::now() > deadline {
                bail!("prometheus not ready within 30 s: {}", p.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query through the HTTP API: the result vector.
    pub fn query(&self, q: &str) -> Result<Vec<Value>> {
        let (status, body) = http::get(
            self.ns,
            self.addr,
            &format!("/api/v1/query?query={}", http::encode(q)),
        )?;
        let v: Value = serde_json::from_str(&body)
            .with_context(|| format!("query {q:?}: HTTP {status}: {body}"))?;
        if v["status"] != "success" {
            bail!("query {q:?} failed: {body}");
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The value of the first series `q` returns, if any.
    pub fn value(&self, q: &str) -> Result<Option<f64>> {
        Ok(self
            .query(q)?
            .first()
            .and_then(|s| s["value"][1].as_str().and_then(|v| v.parse().ok())))
    }

    /// Waits until `q` has a value `>= min`; returns the last value seen.
    pub fn wait_at_least(&self, q: &str, min: f64, timeout: Duration) -> Result<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.value(q)?;
            if v.is_some_and(|v| v >= min) || Instant::now() > deadline {
                return Ok(v.unwrap_or(f64::NAN));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
