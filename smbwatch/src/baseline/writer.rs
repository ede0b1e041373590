//! Writes baseline batches on a thread of its own, so the thread that
//! learns (the daemon's drain thread) never waits for the disk.
//!
//! The queue is bounded ([`QUEUE`] batches). [`Writer::try_send`] never
//! blocks: when the queue is full the batch comes back and the caller folds
//! it into the next one ([`super::Baseline::restore`]), so a slow disk
//! delays persistence instead of losing it or stalling detection.
//!
//! A failed write (a full disk, an I/O error) does not stop the thread: it
//! reopens the database (redb asks for that after an I/O error) and
//! retries the same batch with a backoff ([`Backoff`]) until it commits,
//! counting the failures; meanwhile new batches fold into the learner's
//! pending changes, so nothing learned is dropped and writing resumes when
//! space returns. Only at shutdown does a failing batch end the thread
//! (its error is [`Writer::finish`]'s).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::store::{Store, StoreError};
use super::Batch;

/// Batches queued for the writer thread.
pub const QUEUE: usize = 2;

/// One committed batch, for progress reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Commit {
    /// The batch's number (`Meta::batches`).
    pub batch: u64,
    /// Records written or deleted.
    pub records: usize,
    /// Answered pairs learned, ever, as of this batch.
    pub learned: u64,
    /// How long the transaction took.
    pub took: Duration,
}

/// What the writer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterReport {
    /// Batches committed.
    pub batches: u64,
    /// Records written or deleted.
    pub records: u64,
    /// Time spent in transactions.
    pub busy: Duration,
    /// Write attempts that failed (each retried).
    pub failures: u64,
}

/// How long the writer waits between attempts at a batch that failed:
/// `first`, doubling up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

/// The writer's counters, readable while it runs.
#[derive(Debug, Default)]
pub struct WriterCounters {
    /// Write attempts that failed.
    pub failures: AtomicU64,
    /// Batches committed.
    pub batches: AtomicU64,
    /// True while a batch is failing.
    pub failing: AtomicBool,
}

/// Why a batch was not queued.
#[derive(Debug)]
pub enum SendError {
    /// The queue is full; the batch is handed back.
    Full(Box<Batch>),
    /// The writer stopped (after a store error, returned by [`Writer::finish`]).
    Stopped(Box<Batch>),
}

/// The writer thread and its queue.
pub struct Writer {
    tx: SyncSender<Box<Batch>>,
    thread: JoinHandle<Result<WriterReport, StoreError>>,
    stop: Arc<AtomicBool>,
    counters: Arc<WriterCounters>,
}

impl Writer {
    /// Starts the thread; `on_commit` is called there after every commit.
    /// Failed writes are retried with the default [`Backoff`].
    pub fn spawn(
        store: Store,
        on_commit: impl FnMut(&Commit) + Send + 'static,
    ) -> std::io::Result<Self> {
        Self::spawn_with(store, Backoff::default(), on_commit)
    }

    /// [`Writer::spawn`] with a chosen backoff (tests use short ones).
    pub fn spawn_with(
        store: Store,
        backoff: Backoff,
        mut on_commit: impl FnMut(&Commit) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Box<Batch>>(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(WriterCounters::default());
        let (stop_t, counters_t) = (stop.clone(), counters.clone());
        let thread = std::thread::Builder::new()
            .name("smbwatch-baseline".into())
            .spawn(move || {
                let path = store.path().to_owned();
                let mut store = Some(store);
                let mut report = WriterReport::default();
                for b in rx {
                    let start = Instant::now();
                    write_until_done(&path, &mut store, &b, backoff, &stop_t, &counters_t)?;
                    let took = start.elapsed();
                    report.batches += 1;
                    report.records += b.len() as u64;
                    report.busy += took;
                    counters_t.batches.fetch_add(1, Ordering::Relaxed);
                    on_commit(&Commit {
                        batch: b.meta.batches,
                        records: b.len(),
                        learned: b.meta.learned,
                        took,
                    });
                }
                report.failures = counters_t.failures.load(Ordering::Relaxed);
                Ok(report)
            })?;
        Ok(Self {
            tx,
            thread,
            stop,
            counters,
        })
    }

    /// The counters, shared with the thread.
    pub fn counters(&self) -> Arc<WriterCounters> {
        self.counters.clone()
    }

    /// Queues a batch without waiting.
    pub fn try_send(&self, b: Batch) -> Result<(), SendError> {
        self.tx.try_send(Box::new(b)).map_err(|e| match e {
            TrySendError::Full(b) => SendError::Full(b),
            TrySendError::Disconnected(b) => SendError::Stopped(b),
        })
    }

    /// Queues a batch, waiting for room (for callers that may wait: `baseline
    /// learn`, the final batch at shutdown). Hands it back if the writer stopped.
    pub fn send(&self, b: Batch) -> Result<(), Box<Batch>> {
        self.tx.send(Box::new(b)).map_err(|e| e.0)
    }

    /// Whether the thread ended (a store error).
    pub fn stopped(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the queued batches to be written; the thread's report or
    /// the store error that stopped it (a batch still failing now is
    /// tried once more, not retried for ever).
    pub fn finish(self) -> Result<WriterReport, StoreError> {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.tx);
        self.thread.join().unwrap_or_else(|_| {
            Ok(WriterReport::default()) // a panic was already printed
        })
    }
}

/// Writes `b`, reopening the database and retrying with `backoff` after a
/// failure, until it commits or `stop` is set (then the error is returned).
fn write_until_done(
    path: &Path,
    store: &mut Option<Store>,
    b: &Batch,
    backoff: Backoff,
    stop: &AtomicBool,
    counters: &WriterCounters,
) -> Result<(), StoreError> {
    let mut wait = backoff.first;
    loop {
        let attempt = match store {
            Some(s) => s.write(b),
            None => Store::open(path).and_then(|s| store.insert(s).write(b)),
        };
        let e = match attempt {
            Ok(()) => {
                if counters.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        path = %path.display(),
                        failures = counters.failures.load(Ordering::Relaxed),
                        "baseline writes resumed"
                    );
                }
                return Ok(());
            }
            Err(e) => e,
        };
        let n = counters.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if !counters.failing.swap(true, Ordering::Relaxed) {
            tracing::error!(
                failures = n,
                "{e}; retrying (every {} at most) while learning goes on in memory",
                humantime::format_duration(backoff.max)
            );
        }
        // redb wants a reopen after an I/O error: the next attempt opens
        // the file afresh.
        *store = None;
        if stop.load(Ordering::Relaxed) {
            return Err(e);
        }
        let until = Instant::now() + wait;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50).min(wait));
        }
        wait = (wait * 2).min(backoff.max);
    }
}

/// The daemon's side of persistence: every `interval` a batch is taken on
/// the learning thread and queued without waiting; at the end the last
/// batch is written and the writer joined.
pub struct Persist {
    writer: Writer,
    interval: Duration,
    next: Instant,
    /// Batches folded back because the queue was full.
    pub deferred: u64,
    warned: bool,
}

impl Persist {
    /// Persistence through `writer`, a batch every `interval`.
    pub fn new(writer: Writer, interval: Duration) -> Self {
        Self {
            writer,
            interval,
            next: Instant::now() + interval,
            deferred: 0,
            warned: false,
        }
    }

    /// Call on the learning thread now and then (the daemon's housekeeping
    /// tick): queues a batch when one is due. Never blocks.
    pub fn tick(&mut self, b: &mut super::Baseline, now: Instant) {
        if now < self.next || b.pending() == 0 {
            return;
        }
        self.next = now + self.interval;
        match self.writer.try_send(b.take_batch()) {
            Ok(()) => {}
            Err(SendError::Full(batch)) => {
                self.deferred += 1;
                b.restore(*batch);
            }
            Err(SendError::Stopped(batch)) => {
                b.restore(*batch);
                if !self.warned {
                    self.warned = true;
                    tracing::error!(
                        "the baseline writer stopped (see its error at shutdown); learning goes on in memory only"
                    );
                }
            }
        }
    }

    /// Writes what is left and waits for the writer.
    pub fn finish(self, b: Option<&mut super::Baseline>) -> Result<WriterReport, StoreError> {
        // First: a writer retrying a failing batch must give up, or the
        // blocking send below would wait for it for ever.
        self.writer.stop.store(true, Ordering::Relaxed);
        if let Some(b) = b {
            if b.pending() > 0 {
                // The writer may have stopped: its error is returned below.
                let _ = self.writer.send(b.take_batch());
            }
        }
        self.writer.finish()
    }
}
