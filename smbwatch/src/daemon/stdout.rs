//! `--events`: gateway and SMB event lines printed on stdout.

use std::io::Write as _;

use crate::{alert::ecs::gateway::ToEventLine as _, event::GatewayEvent};

/// Prints each event as one JSON line on stdout.
///
/// Lines are gathered whole and written with one `write_all` under the
/// stdout lock: alerts (`--json -`) go to the same stdout from another
/// thread, and a buffer flushed mid-line would let an alert land inside an
/// event line.
pub struct StdoutEvents {
    buf: Vec<u8>,
    broken: bool,
}

/// Bytes of whole lines gathered before they are written even within a
/// drain turn (bounds the buffer under a burst).
const STDOUT_BATCH: usize = 64 * 1024;

impl StdoutEvents {
    /// A sink on the process's stdout.
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(STDOUT_BATCH),
            broken: false,
        }
    }

    /// Writes the gathered lines; after a failed write, printing stops for
    /// good.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if !self.broken {
            let mut out = std::io::stdout().lock();
            if out.write_all(&self.buf).and_then(|()| out.flush()).is_err() {
                self.broken = true;
                tracing::warn!("stdout closed; no longer printing events (detection goes on)");
            }
        }
        self.buf.clear();
    }

    /// Gathers one event line.
    pub fn event(&mut self, ev: &GatewayEvent) {
        if self.broken {
            return;
        }
        // Writing into a Vec cannot fail.
        let _ = writeln!(self.buf, "{}", ev.to_json());
        if self.buf.len() >= STDOUT_BATCH {
            self.flush();
        }
    }

    /// Gathers one SMB event line (what a sampled connection showed).
    pub fn smb_event(&mut self, ev: &smbwatch_core::smb::SmbEvent) {
        if self.broken {
            return;
        }
        let line = crate::alert::ecs::smb::SmbLine::new(ev).to_json();
        let _ = writeln!(self.buf, "{line}");
        if self.buf.len() >= STDOUT_BATCH {
            self.flush();
        }
    }
}

impl Default for StdoutEvents {
    fn default() -> Self {
        Self::new()
    }
}
