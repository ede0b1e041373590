//! A detached tmux session on a server of its own (a unique socket), for
//! driving terminal programs: type keys, read the screen. The server is
//! killed on drop.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use crate::netns::{run, unique_tag};

/// tmux is installed; otherwise a skip (a failure under `CI=true`).
pub fn available() -> bool {
    let ok = Path::new("/usr/bin/tmux").exists();
    if !ok {
        crate::skip(
            "tmux not installed (apt-get install -y tmux): the terminal view was not tested",
        );
    }
    ok
}

/// One session running one command.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` (a shell command line) in a detached `cols`×`rows`
    /// session.
    pub fn start(command: &str, cols: u16, rows: u16) -> Result<Self> {
        let t = Self {
            socket: format!("smbw-{}", unique_tag()),
        };
        t.tmux(&[
            "new-session",
            "-d",
            "-s",
            "main",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            command,
        ])?;
        Ok(t)
    }

    fn tmux(&self, args: &[&str]) -> Result<String> {
        let mut a = vec!["-L", self.socket.as_str()];
        a.extend_from_slice(args);
        Ok(String::from_utf8_lossy(&run("tmux", a)?.stdout).into_owned())
    }

    /// The visible screen as text.
    pub fn screen(&self) -> Result<String> {
        self.tmux(&["capture-pane", "-p", "-t", "main"])
    }

    /// Waits until the screen shows every one of `needles`; returns it.
    pub fn wait_screen(&self, needles: &[&str], timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.screen()?;
            if needles.iter().all(|n| s.contains(n)) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("screen did not show {needles:?} within {timeout:?}:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Types `keys` (tmux key names, e.g. `q`, `Enter`).
    pub fn send_keys(&self, keys: &str) -> Result<()> {
        self.tmux(&["send-keys", "-t", "main", keys]).map(drop)
    }

    /// Whether the session still exists (it ends when its command exits).
    pub fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["-L", &self.socket, "has-session", "-t", "main"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
