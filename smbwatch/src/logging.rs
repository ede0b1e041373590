//! Where smbwatch's own log lines go.
//!
//! Under systemd, stderr is a stream to journald and `$JOURNAL_STREAM`
//! names it (`DEV:INODE`). Then lines are sent natively to the journal:
//! each with its `PRIORITY` (ERROR is 3, WARN 4, INFO 5, DEBUG 6),
//! `SYSLOG_IDENTIFIER=smbwatch`, every event field as `SMBWATCH_<NAME>`
//! (`SMBWATCH_RULE`, `SMBWATCH_SEVERITY`, ...), and no timestamp of ours
//! (journald stamps each entry). Elsewhere lines go to stderr as text.
//! `SMBWATCH_LOG` filters either way (tracing-subscriber's `EnvFilter`
//! syntax, e.g. `debug` or `info,smbwatch::daemon=debug`).

use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::{layer::SubscriberExt as _, util::SubscriberInitExt as _, EnvFilter};

/// The filter when `SMBWATCH_LOG` is unset: info, but the NATS client
/// logs every reconnect attempt at info, and the `evtx` crate warns on
/// every file opened (that `num_threads` has no effect: we parse on one
/// thread on purpose), which `journalctl -p warning` shows beside alerts.
/// smbwatch reports bad EVTX records itself.
const DEFAULT_FILTER: &str = "info,async_nats=warn,evtx=error";

/// Prefix of smbwatch's journal fields (`rule` becomes `SMBWATCH_RULE`).
pub const JOURNAL_FIELD_PREFIX: &str = "SMBWATCH";

static JOURNAL: AtomicBool = AtomicBool::new(false);

/// Whether log lines go natively to the journal (set by [`init`]).
pub fn to_journal() -> bool {
    JOURNAL.load(Ordering::Relaxed)
}

/// Whether `$JOURNAL_STREAM` (`DEV:INODE`, decimal) names the file open on
/// `fd`: systemd connected it to journald. A stale variable (inherited by a
/// child whose stderr was redirected) does not match.
pub fn is_journal_stream(journal_stream: Option<&str>, fd: std::os::fd::RawFd) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: zeroed stat is valid; fstat fills it or fails.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on any fd number is safe; an invalid one fails.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    st.st_dev as u64 == dev && st.st_ino as u64 == ino
}

/// Sets the global subscriber: the journal when stderr is the journal's
/// stream and its socket answers, else text on stderr (no timestamp when
/// stderr is the journal anyway, colours only on a terminal).
pub fn init() {
    let filter = || {
        EnvFilter::try_from_env("SMBWATCH_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
    };
    let stream = std::env::var("JOURNAL_STREAM").ok();
    let journal_stream = is_journal_stream(stream.as_deref(), libc::STDERR_FILENO);
    if journal_stream {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer
                    .with_field_prefix(Some(JOURNAL_FIELD_PREFIX.into()))
                    .with_syslog_identifier("smbwatch".into());
                tracing_subscriber::registry()
                    .with(filter())
                    .with(layer)
                    .init();
                JOURNAL.store(true, Ordering::Relaxed);
                return;
            }
            Err(e) => eprintln!(
                "smbwatch: warning: stderr is the journal but its socket is not reachable ({e}): logging as text"
            ),
        }
    }
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter());
    if journal_stream {
        fmt.without_time().init();
    } else {
        fmt.init();
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    /// The variable matches only the file it names, and a malformed one
    /// matches nothing.
    #[test]
    fn journal_stream_names_one_file() {
        let path = std::env::temp_dir().join(format!("smbwatch-js-{}", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        let m = f.metadata().unwrap();
        let fd = f.as_raw_fd();
        let right = format!("{}:{}", m.dev(), m.ino());
        assert!(is_journal_stream(Some(&right), fd));
        let other = format!("{}:{}", m.dev(), m.ino() + 1);
        assert!(!is_journal_stream(Some(&other), fd));
        for bad in ["", "12", "a:b", ":", "1:2:3"] {
            assert!(!is_journal_stream(Some(bad), fd), "{bad:?}");
        }
        assert!(!is_journal_stream(None, fd));
        assert!(!is_journal_stream(Some(&right), -1));
        drop(f);
        std::fs::remove_file(&path).unwrap();
    }
}
