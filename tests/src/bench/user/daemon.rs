//! The real daemon's resident memory while sources accumulate, through
//! the real data path (generator → veth → XDP → ring buffer → daemon).

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};
use smbwatch::dataplane::PinnedMaps;
use smbwatch_common::stat;

use super::super::{fmt_num, Effort, Table};
use crate::{
    gen::{GenLab, Generator, Pace, Plan, Spec, ANCHOR_IF, RX_IF, TX_IF},
    netns::unique_tag,
};

/// Resident memory of a process, bytes.
fn rss(pid: u32) -> u64 {
    super::super::procs::status_bytes(pid, "VmRSS")
}

/// The real daemon with stdout discarded (a million event lines would only
/// measure the reader), so its RSS can be read while sources accumulate.
struct QuietDaemon {
    child: std::process::Child,
    pin_dir: PathBuf,
}

impl QuietDaemon {
    fn start(ns: &crate::netns::NetNs, max_sources: u32, max_pairs: u32) -> Result<Self> {
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/smbwatch-bench-{}", unique_tag()));
        let bin = std::env::var_os("SMBWATCH_BIN").context("SMBWATCH_BIN not set")?;
        let mut child = ns
            .command(bin.to_str().context("utf-8 path")?)
            .args(["run", "--iface", RX_IF, "--stats-interval", "1h"])
            .args(["--max-sources", &max_sources.to_string()])
            .args(["--max-pairs", &max_pairs.to_string()])
            .arg("--pin-dir")
            .arg(&pin_dir)
            .env("SMBWATCH_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning smbwatch")?;
        let err = child.stderr.take().expect("piped");
        let log = Arc::new(Mutex::new(String::new()));
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                l.lock().unwrap().push_str(&line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while !log.lock().unwrap().contains("pinned maps") {
            if Instant::now() > deadline || child.try_wait()?.is_some() {
                bail!("smbwatch did not start: {}", log.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self { child, pin_dir })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for QuietDaemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// Daemon RSS at 0, 100,000 and all sources, as rows of `table` and
/// `data["daemon_rss"]`; the generator's method (or why it could not send).
pub(super) fn measure(
    effort: &Effort,
    table: &mut Table,
    data: &mut serde_json::Map<String, Value>,
) -> &'static str {
    // Daemon RSS while sources accumulate, through the real data path. A
    // machine whose generator cannot send (see tests/src/gen.rs) leaves
    // this row unmeasured, with the reason, instead of losing the section.
    let mut generator_method = "none: it could not send";
    let measured = (|| -> Result<Vec<Value>> {
        let lab = GenLab::new()?;
        let mut generator = Generator::new()?;
        generator.anchor(&lab.gen.path(), ANCHOR_IF)?;
        let total: u32 = if effort.quick { 200_000 } else { 1_000_000 };
        let daemon = QuietDaemon::start(&lab.rx, 1 << 20, 1 << 21)?;
        let maps = PinnedMaps::open(&daemon.pin_dir)?;
        std::thread::sleep(Duration::from_millis(300));
        let rss0 = rss(daemon.pid());
        let mut rss_points = vec![json!({"sources": 0, "rss_bytes": rss0})];
        let mut sent_so_far = 0u32;
        for target in [100_000u32, total] {
            eprintln!(
                "user: daemon RSS, sending sources up to {}",
                fmt_num(target as f64)
            );
            let plan = Plan::build(&Spec {
                sources: total,
                first_source: sent_so_far,
                destinations: 1,
                mix: "syn".parse().expect("mix"),
                count: u64::from(target - sent_so_far),
                burst: 1,
            })?;
            generator_method = generator
                .send(&lab.gen.path(), TX_IF, &plan, Pace::Max)?
                .method
                .describe();
            sent_so_far = target;
            let deadline = Instant::now() + Duration::from_secs(20);
            while maps.stats()?.get(stat::NEW_PAIRS) < u64::from(target)
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            std::thread::sleep(Duration::from_millis(500));
            let r = rss(daemon.pid());
            let tracked = maps.sources()?.len();
            table.row(vec![
                format!(
                    "smbwatch daemon RSS after {} sources",
                    fmt_num(target as f64)
                ),
                fmt_num(r as f64 / 1048576.0),
                "MiB".into(),
                format!(
                    "{} kernel-tracked; +{} bytes per source over the idle daemon",
                    fmt_num(tracked as f64),
                    fmt_num((r.saturating_sub(rss0)) as f64 / target as f64)
                ),
            ]);
            rss_points.push(json!({"sources": target, "rss_bytes": r, "kernel_tracked": tracked}));
        }
        drop(maps);
        drop(daemon);
        drop(lab);
        Ok(rss_points)
    })();
    match measured {
        Ok(points) => {
            data.insert("daemon_rss".into(), json!(points));
        }
        Err(e) => {
            eprintln!("user: daemon RSS not measured: {e:#}");
            table.row(vec![
                "smbwatch daemon RSS".into(),
                "not measured".into(),
                String::new(),
                format!("{e:#}"),
            ]);
            data.insert("daemon_rss".into(), json!({"error": format!("{e:#}")}));
        }
    }
    generator_method
}
