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
//! and binary EVTX are read whole with [`crate::hostlog::parse_file`] instead.
//!
//! The file is streamed through a bounded [`LineReader`] (at most
//! `max_line` bytes of a line are held) and each poll returns at most a
//! batch ([`BATCH_LINES`], [`BATCH_BYTES`]), so following a large existing
//! file from its start never holds it whole.

use std::fs::{self, File};
use std::future::Future;
use std::io::{self, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::lines::{AtEnd, Line, LineReader};
use crate::hostlog::{parse_line_at, HostEvent, RecordError};

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
    /// Complete lines returned (as text or as bad records).
    pub lines: u64,
    /// Lines longer than the limit, skipped (returned as bad records).
    pub oversized: u64,
    /// Times a new file was opened at the path (rotation).
    pub rotations: u64,
    /// Times the file shrank and was re-read from the start.
    pub truncations: u64,
}

/// One line of a followed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Followed {
    /// A line of text (without its newline) and its 1-based number in the
    /// current file.
    Line {
        /// Line number (from 1 again after a rotation or truncation).
        no: u64,
        /// The line.
        text: String,
    },
    /// A line that is no text: longer than the limit, or not UTF-8.
    Bad(RecordError),
}

/// Most lines one [`Follower::poll`] returns, and the line bytes after
/// which it stops: a large existing file is read in batches (the rest on
/// the next polls, at once), never whole.
pub const BATCH_LINES: usize = 1024;
/// See [`BATCH_LINES`].
pub const BATCH_BYTES: usize = 1 << 20;

struct Open {
    reader: BufReader<File>,
    dev: u64,
    ino: u64,
}

/// See the module documentation.
pub struct Follower {
    path: PathBuf,
    name: String,
    open: Option<Open>,
    lines: LineReader,
    /// The last poll stopped at the batch limit: more is ready now.
    backlog: bool,
    stats: FollowStats,
}

impl Follower {
    /// Start following `path`. With `from_start` the existing content is
    /// returned by the first polls; otherwise only what is appended later.
    /// A missing file is not an error: it is opened when it appears. Lines
    /// longer than `max_line` bytes are skipped and reported.
    pub fn new(
        path: impl AsRef<Path>,
        from_start: bool,
        max_line: usize,
    ) -> Result<Self, FollowError> {
        let path = path.as_ref().to_path_buf();
        let mut f = Self {
            name: path.display().to_string(),
            path,
            open: None,
            lines: LineReader::new(max_line),
            backlog: false,
            stats: FollowStats::default(),
        };
        if let Some(mut o) = f.try_open()? {
            if !from_start {
                o.reader
                    .seek(SeekFrom::End(0))
                    .map_err(|e| f.io("seek", e))?;
            }
            f.open = Some(o);
        }
        Ok(f)
    }

    /// Counters so far.
    pub fn stats(&self) -> FollowStats {
        self.stats
    }

    /// True when the last [`Follower::poll`] stopped at the batch limit:
    /// poll again without waiting.
    pub fn has_backlog(&self) -> bool {
        self.backlog
    }

    fn io(&self, op: &'static str, source: io::Error) -> FollowError {
        FollowError::Io {
            op,
            path: self.name.clone(),
            source,
        }
    }

    fn try_open(&self) -> Result<Option<Open>, FollowError> {
        match File::open(&self.path) {
            Ok(file) => {
                let m = file.metadata().map_err(|e| self.io("stat", e))?;
                Ok(Some(Open {
                    reader: BufReader::with_capacity(64 * 1024, file),
                    dev: m.dev(),
                    ino: m.ino(),
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("open", e)),
        }
    }

    /// Complete lines written since the last poll, at most a batch
    /// ([`BATCH_LINES`], [`BATCH_BYTES`]); see [`Follower::has_backlog`].
    pub fn poll(&mut self) -> Result<Vec<Followed>, FollowError> {
        let mut out = Vec::new();
        // 1. Drain the open file (after a rotation: the old file's tail).
        if !self.drain(&mut out)? {
            return Ok(self.done(out));
        }
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
        let change = match (&mut self.open, &current) {
            (_, None) => Change::None,
            (Some(o), Some(m)) if o.dev == m.dev() && o.ino == m.ino() => {
                let pos = o.reader.stream_position();
                match pos {
                    Ok(pos) if m.len() < pos => Change::Shrank,
                    Ok(_) => Change::None,
                    Err(e) => return Err(self.io("seek", e)),
                }
            }
            (_, Some(_)) => Change::Replaced,
        };
        match change {
            Change::None => {}
            Change::Shrank => {
                warn!(path = %self.name, "followed file shrank: reading it again from the start");
                self.stats.truncations += 1;
                if let Some(o) = self.open.as_mut() {
                    if let Err(e) = o.reader.seek(SeekFrom::Start(0)) {
                        return Err(self.io("seek", e));
                    }
                }
                self.lines.reset();
                self.drain(&mut out)?;
            }
            Change::Replaced => {
                if self.open.is_some() {
                    info!(path = %self.name, "followed file rotated: reading the new file");
                    self.stats.rotations += 1;
                    // The old file's last line needs no newline: its writer moved on.
                    if let Some(l) = self.lines.finish() {
                        out.push(followed(&self.name, &l));
                    }
                }
                self.lines.reset();
                self.open = self.try_open()?;
                self.drain(&mut out)?;
            }
        }
        Ok(self.done(out))
    }

    fn done(&mut self, out: Vec<Followed>) -> Vec<Followed> {
        self.stats.lines += out.len() as u64;
        out
    }

    /// Read lines into `out` up to the batch limit. True when the file was
    /// read to its (current) end; `backlog` is set otherwise.
    fn drain(&mut self, out: &mut Vec<Followed>) -> Result<bool, FollowError> {
        self.backlog = false;
        let Some(o) = self.open.as_mut() else {
            return Ok(true);
        };
        let mut bytes = 0;
        while out.len() < BATCH_LINES && bytes < BATCH_BYTES {
            let line = match self.lines.read(&mut o.reader, AtEnd::Wait) {
                Ok(Some(l)) => l,
                Ok(None) => return Ok(true),
                Err(e) => {
                    return Err(FollowError::Io {
                        op: "read",
                        path: self.name.clone(),
                        source: e,
                    })
                }
            };
            if let Line::TooLong { .. } = line {
                self.stats.oversized += 1;
            }
            let f = followed(&self.name, &line);
            if let Followed::Line { text, .. } = &f {
                bytes += text.len();
            }
            out.push(f);
        }
        self.backlog = true;
        Ok(false)
    }
}

fn followed(name: &str, line: &Line<'_>) -> Followed {
    match line.text(name) {
        Ok(t) => Followed::Line {
            no: line.no(),
            text: t.to_string(),
        },
        Err(e) => Followed::Bad(e),
    }
}

/// Follow `path`, polling every `interval` (at once while a backlog is
/// being read), parsing each line with [`crate::hostlog::parse_line_at`] and
/// sending events on `tx`, until `shutdown` completes or the receiver is
/// dropped. Bad lines are logged and counted.
pub async fn follow(
    mut follower: Follower,
    interval: Duration,
    tx: mpsc::Sender<HostEvent>,
    shutdown: impl Future<Output = ()>,
) -> Result<FollowStats, FollowError> {
    tokio::pin!(shutdown);
    let name = follower.name.clone();
    loop {
        for line in follower.poll()? {
            let parsed = match &line {
                Followed::Line { no, text } => parse_line_at(&name, *no, text),
                Followed::Bad(e) => Err(e.clone()),
            };
            match parsed {
                Ok(Some(ev)) => {
                    if tx.send(ev).await.is_err() {
                        return Ok(follower.stats);
                    }
                }
                Ok(None) => {}
                Err(e) => warn!("host log: bad record: {e}"),
            }
        }
        let wait = if follower.has_backlog() {
            Duration::ZERO
        } else {
            interval
        };
        tokio::select! {
            () = &mut shutdown => {
                debug!(path = %name, "follow stopped");
                return Ok(follower.stats);
            }
            () = tokio::time::sleep(wait) => {}
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

    /// One poll as text: lines as they are, bad lines as `bad line N: …`.
    fn poll(f: &mut Follower) -> Vec<String> {
        f.poll()
            .unwrap()
            .into_iter()
            .map(|l| match l {
                Followed::Line { text, .. } => text,
                Followed::Bad(e) => format!("bad {}: {}", e.location, e.problem),
            })
            .collect()
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
        assert_eq!(poll(&mut f), ["a1", "a2"]);
        assert!(poll(&mut f).is_empty());

        // A line is returned only once complete.
        append(&log, "a3 part");
        assert!(poll(&mut f).is_empty());
        append(&log, "ial\r\n");
        assert_eq!(poll(&mut f), ["a3 partial"]);

        // Rename rotation; the writer still appends to the old file once,
        // then a new file appears at the path.
        let old = dir.0.join("events.jsonl.1");
        fs::rename(&log, &old).unwrap();
        append(&old, "a4 late\na5 no newline");
        assert_eq!(
            poll(&mut f),
            ["a4 late"],
            "path missing: keep reading the old file"
        );
        append(&log, "b1\n");
        assert_eq!(poll(&mut f), ["a5 no newline", "b1"]);
        assert_eq!(f.stats().rotations, 1);

        // copytruncate: same inode, shorter. (As with tail -F, a file that
        // regrows to its old size between two polls cannot be told apart
        // from one that only grew: poll often.)
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&log)
            .unwrap();
        assert!(poll(&mut f).is_empty());
        append(&log, "c1\n");
        assert_eq!(poll(&mut f), ["c1"]);
        assert_eq!(f.stats().truncations, 1);

        // Oversized lines are skipped, the next one is kept.
        append(&log, &format!("{}\nc2\n", "x".repeat(2000)));
        assert_eq!(
            poll(&mut f),
            [
                "bad line 2: line longer than 1024 bytes (hostlog.max_line): skipped",
                "c2"
            ]
        );
        assert_eq!(f.stats().oversized, 1);
    }

    #[test]
    fn a_large_existing_file_is_read_in_bounded_batches() {
        // Following an existing file from its start used to return all of
        // it from the first poll (a 470 MB file: 520 MB peak).
        let dir = TempDir::new();
        let log = dir.0.join("big.jsonl");
        let n = 50_000;
        fs::write(&log, format!("{}\n", "y".repeat(99)).repeat(n)).unwrap();
        let mut f = Follower::new(&log, true, 4096).unwrap();
        let (mut total, mut polls, mut last_no) = (0, 0, 0);
        loop {
            let batch = f.poll().unwrap();
            assert!(batch.len() <= BATCH_LINES, "{}", batch.len());
            assert!(f.lines.capacity() <= 4096, "{}", f.lines.capacity());
            total += batch.len();
            polls += 1;
            if let Some(Followed::Line { no, .. }) = batch.last() {
                last_no = *no;
            }
            if !f.has_backlog() {
                break;
            }
        }
        assert_eq!(total, n);
        assert_eq!(last_no, n as u64, "line numbers run on across batches");
        assert!(polls > n / BATCH_LINES, "{polls} polls");
        append(&log, "tail\n");
        assert_eq!(poll(&mut f), ["tail"]);
    }

    #[test]
    fn starts_at_end_or_waits_for_the_file() {
        let dir = TempDir::new();
        let log = dir.0.join("late.jsonl");
        let mut f = Follower::new(&log, false, 1024).unwrap();
        assert!(poll(&mut f).is_empty());
        append(&log, "x1\n");
        assert_eq!(
            poll(&mut f),
            ["x1"],
            "a file created later is read from its start"
        );

        let log2 = dir.0.join("existing.jsonl");
        append(&log2, "old\n");
        let mut g = Follower::new(&log2, false, 1024).unwrap();
        append(&log2, "new\n");
        assert_eq!(poll(&mut g), ["new"]);
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
        assert_eq!(
            rx.recv().await.unwrap().as_connection().unwrap().dst_port,
            Some(445)
        );
        assert_eq!(
            rx.recv().await.unwrap().process().unwrap().image_name,
            Some("python.exe".to_string())
        );
        stop_tx.send(()).unwrap();
        let stats = task.await.unwrap().unwrap();
        assert_eq!(stats.lines, 3);
    }
}
