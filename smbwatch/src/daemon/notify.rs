//! The systemd notification protocol (sd_notify(3)), for `Type=notify`
//! units: READY=1 once attached, RELOADING=1 and READY=1 around a reload,
//! STOPPING=1 at shutdown, WATCHDOG=1 keep-alives when the unit sets
//! `WatchdogSec=`. A datagram per state to the unix socket named by
//! `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
//! Without the variable (not run by systemd) every call does nothing.

use std::{
    io,
    os::{linux::net::SocketAddrExt as _, unix::net::SocketAddr, unix::net::UnixDatagram},
    time::Duration,
};

/// A connection to the service manager, if there is one.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` (the
    /// watchdog applies when the pid is absent or ours).
    pub fn from_env() -> io::Result<Self> {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        Self::new(
            socket.as_deref().map(|s| s.to_string_lossy()).as_deref(),
            usec.as_deref(),
            pid.as_deref(),
            std::process::id(),
        )
    }

    fn new(
        socket: Option<&str>,
        usec: Option<&str>,
        pid: Option<&str>,
        me: u32,
    ) -> io::Result<Self> {
        let target = match socket.filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => {
                let addr = match s.strip_prefix('@') {
                    Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
                    None => SocketAddr::from_pathname(s)?,
                };
                Some((UnixDatagram::unbound()?, addr))
            }
        };
        let ours = pid.is_none_or(|p| p.trim().parse() == Ok(me));
        let watchdog = usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && ours && target.is_some())
            .map(Duration::from_micros);
        Ok(Self { target, watchdog })
    }

    /// How often to send WATCHDOG=1: half the manager's timeout, as
    /// sd_watchdog_enabled(3) advises; `None` without a watchdog.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    /// Sends one notification (`KEY=VALUE` lines).
    pub fn send(&self, state: &str) -> io::Result<()> {
        match &self.target {
            Some((sock, addr)) => sock.send_to_addr(state.as_bytes(), addr).map(drop),
            None => Ok(()),
        }
    }

    /// Sends, logging a failure instead of returning it: the manager going
    /// away must not stop detection.
    pub fn notify(&self, state: &str) {
        if let Err(e) = self.send(state) {
            tracing::warn!(error = %e, state, "sd_notify failed");
        }
    }

    /// READY=1 with a status line.
    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={status}"));
    }

    /// RELOADING=1 with the CLOCK_MONOTONIC time systemd wants with it.
    pub fn reloading(&self) {
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    /// STOPPING=1.
    pub fn stopping(&self) {
        self.notify("STOPPING=1");
    }

    /// WATCHDOG=1.
    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }
}

/// CLOCK_MONOTONIC in microseconds.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    /// The datagrams arrive on a real socket, as systemd would read them.
    #[test]
    fn states_reach_the_socket() {
        let dir = std::env::temp_dir().join(format!("smbwatch-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::new(path.to_str(), Some("20000000"), None, 1).unwrap();
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(10)));
        n.ready("attached to g0");
        assert_eq!(recv(&sock), "READY=1\nSTATUS=attached to g0");
        let before = monotonic_usec();
        n.reloading();
        let msg = recv(&sock);
        let usec: u64 = msg
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .unwrap_or_else(|| panic!("{msg:?}"))
            .parse()
            .unwrap();
        assert!(usec >= before && usec <= monotonic_usec());
        n.watchdog();
        assert_eq!(recv(&sock), "WATCHDOG=1");
        n.stopping();
        assert_eq!(recv(&sock), "STOPPING=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn abstract_socket_and_absent_manager() {
        let name = format!("smbwatch-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::new(Some(&format!("@{name}")), None, None, 1).unwrap();
        assert_eq!(n.watchdog_interval(), None);
        n.send("READY=1").unwrap();
        assert_eq!(recv(&sock), "READY=1");
        let none = Notifier::new(None, Some("1000"), None, 1).unwrap();
        assert_eq!(none.watchdog_interval(), None, "no socket, no watchdog");
        none.send("READY=1").unwrap();
    }

    /// WATCHDOG_PID names another process (a forked helper's variables
    /// leaked to us): no keep-alives.
    #[test]
    fn watchdog_for_another_pid_is_not_ours() {
        let n = Notifier::new(Some("/nonexistent"), Some("1000"), Some("42"), 7).unwrap();
        assert_eq!(n.watchdog_interval(), None);
        let n = Notifier::new(Some("/nonexistent"), Some("1000"), Some("7"), 7).unwrap();
        assert_eq!(n.watchdog_interval(), Some(Duration::from_micros(500)));
    }
}
