//! tcpdump as a baseline counter in the end-to-end benchmark.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::e2e::PCAP_FILTER;
use crate::{gen::RX_IF, netns::NetNs};

/// tcpdump in the receiving namespace, stopped with SIGINT for its
/// statistics; with `wc -l` reading its output in the lines variant.
pub struct Tcpdump {
    child: Child,
    wc: Option<Child>,
    stderr: Arc<Mutex<String>>,
    wc_out: Option<Arc<Mutex<String>>>,
}

fn collect(r: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let out = Arc::new(Mutex::new(String::new()));
    let o = out.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            let mut s = o.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    out
}

/// SIGINT (if asked) and reap `pid`; its CPU seconds.
fn reap(pid: u32, interrupt: bool) -> (i32, f64) {
    // SAFETY: signalling and reaping our own child.
    let (status, usage) = unsafe {
        if interrupt {
            libc::kill(pid as i32, libc::SIGINT);
        }
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::wait4(pid as i32, &mut status, 0, &mut usage);
        (status, usage)
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (status, tv(usage.ru_utime) + tv(usage.ru_stime))
}

impl Tcpdump {
    /// `lines`: print one line per packet into `wc -l` (a script's way of
    /// counting); otherwise `-w /dev/null` (the cheapest way).
    pub fn start(ns: &NetNs, lines: bool) -> Result<Self> {
        let mut cmd = ns.command("tcpdump");
        if lines {
            cmd.args(["-i", RX_IF, "-n", "-l", PCAP_FILTER]);
        } else {
            cmd.args(["-i", RX_IF, "-n", "-w", "/dev/null", PCAP_FILTER]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(if lines { Stdio::piped() } else { Stdio::null() })
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning tcpdump")?;
        let stderr = collect(child.stderr.take().expect("piped"));
        let (wc, wc_out) = if lines {
            let mut wc = std::process::Command::new("wc")
                .arg("-l")
                .stdin(Stdio::from(child.stdout.take().expect("piped")))
                .stdout(Stdio::piped())
                .spawn()
                .context("spawning wc")?;
            let out = collect(wc.stdout.take().expect("piped"));
            (Some(wc), Some(out))
        } else {
            (None, None)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stderr.lock().unwrap().contains("listening on") {
            if Instant::now() > deadline {
                bail!("tcpdump did not start: {}", stderr.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            child,
            wc,
            stderr,
            wc_out,
        })
    }

    /// SIGINT, then (counted, dropped by kernel, CPU seconds of tcpdump and
    /// wc). Counted is tcpdump's "captured" count, or the lines `wc` counted.
    pub fn stop(self) -> Result<(u64, u64, f64)> {
        let (status, mut cpu) = reap(self.child.id(), true);
        if let Some(wc) = &self.wc {
            cpu += reap(wc.id(), false).1;
        }
        // The reader threads see EOF once the processes are gone.
        std::thread::sleep(Duration::from_millis(100));
        let text = self.stderr.lock().unwrap().clone();
        let num = |what: &str| -> Option<u64> {
            text.lines()
                .find(|l| l.contains(what))
                .and_then(|l| l.split_whitespace().next()?.parse().ok())
        };
        let counted = match &self.wc_out {
            Some(out) => out.lock().unwrap().trim().parse().ok(),
            None => num("packets captured"),
        };
        let (Some(counted), Some(dropped)) = (counted, num("packets dropped by kernel")) else {
            bail!("tcpdump (status {status}) printed no statistics: {text}");
        };
        // Reaped above; keep Child's drop from trying again.
        std::mem::forget(self.child);
        std::mem::forget(self.wc);
        Ok((counted, dropped, cpu))
    }
}
