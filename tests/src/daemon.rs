//! The real `smbwatch` binary, run in a lab namespace.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::netns::{unique_tag, Lab, NetNs, GW_ATTACKER_IF, GW_SERVERS_IF};

/// The smbwatch binary built next to the test executable
/// (`cargo xtask test` builds it first), or `$SMBWATCH_BIN`.
pub fn smbwatch_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SMBWATCH_BIN") {
        return p.into();
    }
    // Test binaries live in target/<profile>/deps, lab drivers in target/<profile>.
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("target/<profile>");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("target/<profile>")
    } else {
        dir
    };
    let bin = dir.join("smbwatch");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build -p smbwatch` first (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// Runs `smbwatch ARGS` (a one-shot subcommand: `baseline learn`, `replay`
/// ...) to completion; fails the test, with its stderr, unless it succeeds.
pub fn run_cli(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(smbwatch_bin())
        .args(args)
        .env("SMBWATCH_LOG", "warn")
        .output()
        .expect("running smbwatch");
    assert!(
        out.status.success(),
        "smbwatch {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every line of `out` as JSON (fails the test on a line that is not).
pub fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// A running `smbwatch run`; stdout lines are collected as JSON.
pub struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    /// Stdout lines that were not JSON (checked in the test's thread).
    bad: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    /// This daemon's own pin directory.
    pub pin_dir: PathBuf,
}

impl Daemon {
    /// Starts `smbwatch run ARGS --pin-dir <unique>` in `ns` and waits until it has attached.
    pub fn start(ns: &NetNs, args: &[&str]) -> Result<Self> {
        let mut d = Self::spawn(ns, &[], args, &[])?;
        d.wait_stderr("pinned maps", Duration::from_secs(30))?;
        Ok(d)
    }

    /// A fresh pin directory path for one daemon.
    pub fn unique_pin_dir() -> PathBuf {
        PathBuf::from(format!("/sys/fs/bpf/smbwatch-test-{}", unique_tag()))
    }

    /// Spawns `WRAP... smbwatch run ARGS --pin-dir <unique>` in `ns` with
    /// `env` added (e.g. `setpriv ... --` as `wrap`, to drop privileges),
    /// without waiting for anything.
    pub fn spawn(ns: &NetNs, wrap: &[&str], args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        Self::spawn_pinned(ns, wrap, args, env, Self::unique_pin_dir())
    }

    /// [`Daemon::spawn`] with a given pin directory.
    pub fn spawn_pinned(
        ns: &NetNs,
        wrap: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
        pin_dir: PathBuf,
    ) -> Result<Self> {
        let pin = pin_dir.to_str().context("non-UTF-8 pin path")?.to_owned();
        let mut full = vec!["run"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--pin-dir", &pin]);
        Self::spawn_command(ns, wrap, &full, env, pin_dir)
    }

    /// Starts `smbwatch aggregate ARGS` in `ns` and waits until it reads.
    pub fn aggregate(ns: &NetNs, args: &[&str]) -> Result<Self> {
        let mut full = vec!["aggregate"];
        full.extend_from_slice(args);
        let mut d = Self::spawn_command(ns, &[], &full, &[], PathBuf::new())?;
        d.wait_stderr("aggregating", Duration::from_secs(30))?;
        Ok(d)
    }

    /// Spawns `WRAP... smbwatch ARGS` in `ns` (ARGS starting with the
    /// subcommand), collecting stdout lines as JSON and stderr.
    fn spawn_command(
        ns: &NetNs,
        wrap: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
        pin_dir: PathBuf,
    ) -> Result<Self> {
        let bin = smbwatch_bin();
        let bin = bin.to_str().expect("utf-8 path");
        let mut cmd = match wrap.split_first() {
            Some((first, rest)) => {
                let mut c = ns.command(first);
                c.args(rest).arg(bin);
                c
            }
            None => ns.command(bin),
        };
        let mut child = cmd
            .args(args)
            // The NATS client logs every reconnect attempt at info.
            .env("SMBWATCH_LOG", "info,async_nats=warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning smbwatch")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let bad = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("piped");
        let l = lines.clone();
        let b = bad.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                match serde_json::from_str(&line) {
                    Ok(v) => l.lock().unwrap().push(v),
                    Err(e) => b.lock().unwrap().push(format!("{e}: {line}")),
                }
            }
        });
        let err = child.stderr.take().expect("piped");
        let e = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[smbwatch] {line}");
                let mut s = e.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Ok(Self {
            child,
            lines,
            bad,
            stderr,
            pin_dir,
        })
    }

    /// The daemon's pid (nsenter and setpriv exec it in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` (e.g. `libc::SIGHUP`) to the daemon.
    pub fn signal(&self, sig: i32) {
        // The child is nsenter, which execs smbwatch (and setpriv execs
        // too): the pid is smbwatch's.
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits until the daemon exits (at most `timeout`); its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                // The reader thread gets the last lines when the pipe closes.
                std::thread::sleep(Duration::from_millis(300));
                return Ok(status.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                bail!(
                    "smbwatch still running after {timeout:?}: {}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `smbwatch run` on the lab's gateway, on both of its interfaces, with
    /// alerts to the JSON file `json`, then `extra` arguments.
    pub fn on_gateway(lab: &Lab, json: &std::path::Path, extra: &[&str]) -> Result<Self> {
        let json = json.to_str().context("non-UTF-8 alert path")?;
        let mut args = vec![
            "--iface",
            GW_ATTACKER_IF,
            "--iface",
            GW_SERVERS_IF,
            "--json",
            json,
        ];
        args.extend_from_slice(extra);
        Self::start(&lab.gateway, &args)
    }

    /// Waits until stderr contains `needle`.
    pub fn wait_stderr(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr.lock().unwrap().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "smbwatch exited ({status}): {}",
                    self.stderr.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "smbwatch did not log {needle:?} in {timeout:?}: {}",
            self.stderr.lock().unwrap()
        )
    }

    /// Everything stderr said so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the collected lines (or the timeout passes), then returns them.
    pub fn lines_when(&self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines.lock().unwrap().clone();
            if pred(&lines) || Instant::now() > deadline {
                let bad = self.bad.lock().unwrap();
                assert!(bad.is_empty(), "smbwatch printed non-JSON lines: {bad:#?}");
                // Event lines and alerts alike are ECS.
                lines.iter().for_each(crate::alerts::check_ecs);
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Like [`Daemon::stop`], and returns everything it wrote on stderr.
    pub fn stop_with_stderr(self) -> Result<(i32, String)> {
        let stderr = self.stderr.clone();
        let code = self.stop()?;
        // The reader thread gets the last lines when the pipe closes.
        std::thread::sleep(Duration::from_millis(300));
        let s = stderr.lock().unwrap().clone();
        Ok((code, s))
    }

    /// Kills the process with SIGKILL (a crash: nothing is flushed).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits; returns the exit code.
    pub fn stop(mut self) -> Result<i32> {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                bail!("smbwatch did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !self.pin_dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.pin_dir);
        }
    }
}
