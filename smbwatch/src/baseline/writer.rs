//! Writes baseline batches on a thread of its own, so the thread that
//! learns (the daemon's drain thread) never waits for the disk.
//!
//! The queue is bounded ([`QUEUE`] batches). [`Writer::try_send`] never
//! blocks: when the queue is full the batch comes back and the caller folds
//! it into the next one ([`super::Baseline::restore`]), so a slow disk
//! delays persistence instead of losing it or stalling detection.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
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
}

impl Writer {
    /// Starts the thread; `on_commit` is called there after every commit.
    pub fn spawn(
        store: Store,
        mut on_commit: impl FnMut(&Commit) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Box<Batch>>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("smbwatch-baseline".into())
            .spawn(move || {
                let mut report = WriterReport::default();
                for b in rx {
                    let start = Instant::now();
                    store.write(&b)?;
                    let took = start.elapsed();
                    report.batches += 1;
                    report.records += b.len() as u64;
                    report.busy += took;
                    on_commit(&Commit {
                        batch: b.meta.batches,
                        records: b.len(),
                        learned: b.meta.learned,
                        took,
                    });
                }
                Ok(report)
            })?;
        Ok(Self { tx, thread })
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
    /// the store error that stopped it.
    pub fn finish(self) -> Result<WriterReport, StoreError> {
        drop(self.tx);
        self.thread.join().unwrap_or_else(|_| {
            Ok(WriterReport::default()) // a panic was already printed
        })
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
        if let Some(b) = b {
            if b.pending() > 0 {
                // The writer may have stopped: its error is returned below.
                let _ = self.writer.send(b.take_batch());
            }
        }
        self.writer.finish()
    }
}
