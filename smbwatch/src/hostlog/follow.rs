//! Follow a growing log file across rotation (`tail -F` semantics).
//!
//! [`Follower::poll`] returns the complete lines written since the last
//! poll. It keeps the open file, so after a rename-style rotation the rest
//! of the old file is read first; then, when the path names a different
//! file (device/inode changed), the new file is read from its start. A file
//! that shrank (copytruncate) is read again from the start; as with
//! `tail -F`, a file truncated and refilled past the old size between two
//! polls looks like growth, so poll often (every 250 ms is cheap).
//! A missing path (between rename and re-create) is waited for.
//!
//! Lines are JSON objects or XML `<Event>`s, one per line, as forwarders
//! and `tee`-style collectors write them; multi-line `Key: Value` records
//! and binary EVTX are read whole with [`super::parse_file`] instead.

use std::fs::{self, File};
use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{parse_line_at, HostEvent};

/// Follow errors.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// An I/O operation on the followed file failed.
    #[error("follow {path}: {op}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Counters of a follower.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FollowStats {
    /// Complete lines returned.
    pub lines: u64,
    /// Lines longer than the limit, skipped.
    pub oversized: u64,
    /// Times a new file was opened at the path (rotation).
    pub rotations: u64,
    /// Times the file shrank and was re-read from the start.
    pub truncations: u64,
}

struct Open {
    file: File,
    dev: u64,
    ino: u64,
    pos: u64,
}

/// See the module documentation.
pub struct Follower {
    path: PathBuf,
    open: Option<Open>,
    partial: Vec<u8>,
    discarding: bool,
    max_line: usize,
    stats: FollowStats,
}

impl Follower {
    /// Start following `path`. With `from_start` the existing content is
    /// returned by the first poll; otherwise only what is appended later.
    /// A missing file is not an error: it is opened when it appears.
    pub fn new(
        path: impl AsRef<Path>,
        from_start: bool,
        max_line: usize,
    ) -> Result<Self, FollowError> {
        let mut f = Self {
            path: path.as_ref().to_path_buf(),
            open: None,
            partial: Vec::new(),
            discarding: false,
            max_line: max_line.max(1),
            stats: FollowStats::default(),
        };
        if let Some(mut o) = f.try_open()? {
            if !from_start {
                o.pos = o.file.seek(SeekFrom::End(0)).map_err(|e| f.io("seek", e))?;
            }
            f.open = Some(o);
        }
        Ok(f)
    }

    /// Counters so far.
    pub fn stats(&self) -> FollowStats {
        self.stats
    }

    fn io(&self, op: &'static str, source: io::Error) -> FollowError {
        FollowError::Io {
            op,
            path: self.path.display().to_string(),
            source,
        }
    }

    fn try_open(&self) -> Result<Option<Open>, FollowError> {
        match File::open(&self.path) {
            Ok(file) => {
                let m = file.metadata().map_err(|e| self.io("stat", e))?;
                Ok(Some(Open {
                    file,
                    dev: m.dev(),
                    ino: m.ino(),
                    pos: 0,
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("open", e)),
        }
    }

    /// Complete lines (without newline) written since the last poll.
    pub fn poll(&mut self) -> Result<Vec<String>, FollowError> {
        let mut lines = Vec::new();
        // 1. Drain the open file (after a rotation: the old file's tail).
        self.drain(&mut lines)?;
        // 2. Did the path change under us?
        let current = match fs::metadata(&self.path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.io("stat", e)),
        };
        enum Change {
            None,
            Shrank,
            Replaced,
        }
        let change = match (&self.open, &current) {
            (_, None) => Change::None,
            (Some(o), Some(m)) if o.dev == m.dev() && o.ino == m.ino() => {
                if m.len() < o.pos {
                    Change::Shrank
                } else {
                    Change::None
                }
            }
            (_, Some(_)) => Change::Replaced,
        };
        match change {
            Change::None => {}
            Change::Shrank => {
                warn!(path = %self.path.display(), "followed file shrank: reading it again from the start");
                self.stats.truncations += 1;
                if let Some(o) = self.open.as_mut() {
                    o.pos = 0;
                    if let Err(e) = o.file.seek(SeekFrom::Start(0)) {
                        return Err(self.io("seek", e));
                    }
                }
                self.partial.clear();
                self.discarding = false;
                self.drain(&mut lines)?;
            }
            Change::Replaced => {
                if self.open.is_some() {
                    info!(path = %self.path.display(), "followed file rotated: reading the new file");
                    self.stats.rotations += 1;
                    // The old file's last line needs no newline: its writer moved on.
                    self.flush_partial(&mut lines);
                }
                self.open = self.try_open()?;
                self.drain(&mut lines)?;
            }
        }
        self.stats.lines += lines.len() as u64;
        Ok(lines)
    }

    fn drain(&mut self, lines: &mut Vec<String>) -> Result<(), FollowError> {
        let Some(mut o) = self.open.take() else {
            return Ok(());
        };
        let r = self.drain_from(&mut o, lines);
        self.open = Some(o);
        r
    }

    fn drain_from(&mut self, o: &mut Open, lines: &mut Vec<String>) -> Result<(), FollowError> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = match o.file.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io("read", e)),
            };
            o.pos += n as u64;
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let (chunk, complete, used) = match rest.iter().position(|&b| b == b'\n') {
                    Some(i) => (&rest[..i], true, i + 1),
                    None => (rest, false, rest.len()),
                };
                if !self.discarding {
                    if self.partial.len() + chunk.len() > self.max_line {
                        self.discarding = true;
                        self.partial.clear();
                        self.stats.oversized += 1;
                        warn!(
                            path = %self.path.display(),
                            max_line = self.max_line,
                            "followed file: line longer than {} bytes (hostlog.max_line): skipped",
                            self.max_line
                        );
                    } else {
                        self.partial.extend_from_slice(chunk);
                    }
                }
                if complete {
                    if self.discarding {
                        self.discarding = false;
                    } else {
                        self.flush_partial(lines);
                    }
                }
                rest = &rest[used..];
            }
        }
    }

    fn flush_partial(&mut self, lines: &mut Vec<String>) {
        if !self.partial.is_empty() {
            let mut s = String::from_utf8_lossy(&self.partial).into_owned();
            if s.ends_with('\r') {
                s.pop();
            }
            lines.push(s);
        }
        self.partial.clear();
        self.discarding = false;
    }
}

/// Follow `path`, polling every `interval`, parsing each line with
/// [`super::parse_line_at`] and sending events on `tx`, until `shutdown`
/// completes or the receiver is dropped. Bad lines are logged and counted.
pub async fn follow(
    mut follower: Follower,
    interval: Duration,
    tx: mpsc::Sender<HostEvent>,
    shutdown: impl Future<Output = ()>,
) -> Result<FollowStats, FollowError> {
    tokio::pin!(shutdown);
    let name = follower.path.display().to_string();
    let mut line_no = 0u64;
    let mut rotations = 0;
    loop {
        let lines = follower.poll()?;
        if follower.stats.rotations + follower.stats.truncations != rotations {
            rotations = follower.stats.rotations + follower.stats.truncations;
            line_no = 0;
        }
        for line in lines {
            line_no += 1;
            match parse_line_at(&name, line_no, &line) {
                Ok(Some(ev)) => {
                    if tx.send(ev).await.is_err() {
                        return Ok(follower.stats);
                    }
                }
                Ok(None) => {}
                Err(e) => warn!("host log: bad record: {e}"),
            }
        }
        tokio::select! {
            () = &mut shutdown => {
                debug!(path = %name, "follow stopped");
                return Ok(follower.stats);
            }
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "smbwatch-follow-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn append(path: &Path, s: &str) {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
    }

    #[test]
    fn follows_growth_rotation_and_truncation() {
        let dir = TempDir::new();
        let log = dir.0.join("events.jsonl");
        append(&log, "a1\na2\n");
        let mut f = Follower::new(&log, true, 1024).unwrap();
        assert_eq!(f.poll().unwrap(), ["a1", "a2"]);
        assert!(f.poll().unwrap().is_empty());

        // A line is returned only once complete.
        append(&log, "a3 part");
        assert!(f.poll().unwrap().is_empty());
        append(&log, "ial\r\n");
        assert_eq!(f.poll().unwrap(), ["a3 partial"]);

        // Rename rotation; the writer still appends to the old file once,
        // then a new file appears at the path.
        let old = dir.0.join("events.jsonl.1");
        fs::rename(&log, &old).unwrap();
        append(&old, "a4 late\na5 no newline");
        assert_eq!(
            f.poll().unwrap(),
            ["a4 late"],
            "path missing: keep reading the old file"
        );
        append(&log, "b1\n");
        assert_eq!(f.poll().unwrap(), ["a5 no newline", "b1"]);
        assert_eq!(f.stats().rotations, 1);

        // copytruncate: same inode, shorter. (As with tail -F, a file that
        // regrows to its old size between two polls cannot be told apart
        // from one that only grew: poll often.)
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&log)
            .unwrap();
        assert!(f.poll().unwrap().is_empty());
        append(&log, "c1\n");
        assert_eq!(f.poll().unwrap(), ["c1"]);
        assert_eq!(f.stats().truncations, 1);

        // Oversized lines are skipped, the next one is kept.
        append(&log, &format!("{}\nc2\n", "x".repeat(2000)));
        assert_eq!(f.poll().unwrap(), ["c2"]);
        assert_eq!(f.stats().oversized, 1);
    }

    #[test]
    fn starts_at_end_or_waits_for_the_file() {
        let dir = TempDir::new();
        let log = dir.0.join("late.jsonl");
        let mut f = Follower::new(&log, false, 1024).unwrap();
        assert!(f.poll().unwrap().is_empty());
        append(&log, "x1\n");
        assert_eq!(
            f.poll().unwrap(),
            ["x1"],
            "a file created later is read from its start"
        );

        let log2 = dir.0.join("existing.jsonl");
        append(&log2, "old\n");
        let mut g = Follower::new(&log2, false, 1024).unwrap();
        append(&log2, "new\n");
        assert_eq!(g.poll().unwrap(), ["new"]);
    }

    #[tokio::test]
    async fn follow_parses_and_sends() {
        let dir = TempDir::new();
        let log = dir.0.join("sysmon.jsonl");
        let ev = r#"{"EventID":3,"Channel":"Microsoft-Windows-Sysmon/Operational","UtcTime":"2020-09-20 06:57:48.481","Image":"C:\\x\\python.exe","SourceIp":"192.0.2.5","DestinationIp":"192.0.2.6","DestinationPort":"445"}"#;
        append(&log, &format!("{ev}\nnot an event\n{ev}\n"));
        let (tx, mut rx) = mpsc::channel(4);
        let f = Follower::new(&log, true, 4096).unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(follow(f, Duration::from_millis(10), tx, async {
            let _ = stop_rx.await;
        }));
        assert_eq!(rx.recv().await.unwrap().dst_port, Some(445));
        assert_eq!(
            rx.recv().await.unwrap().image_name.as_deref(),
            Some("python.exe")
        );
        stop_tx.send(()).unwrap();
        let stats = task.await.unwrap().unwrap();
        assert_eq!(stats.lines, 3);
    }
}
