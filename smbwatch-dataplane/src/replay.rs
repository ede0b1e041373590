//! Replay: every packet of a capture through the real XDP program.
//!
//! A capture (pcap or pcapng) is read record by record; each record becomes
//! an Ethernet frame (see [`capture::ethernet_frame`]), runs once through the
//! loaded program with `BPF_PROG_TEST_RUN`, and the ring buffer is drained
//! right after, so every event belongs to the packet that caused it. Events
//! are stamped with the capture's timestamp (the kernel's clock says when the
//! replay ran, not when the packet was seen) and handed to a [`ReplaySink`]
//! in capture order: the same capture always gives the same events.
//!
//! Timestamps that go backwards (merged captures, clock steps) are clamped to
//! the latest time seen, so the detector's time never runs backwards; they
//! are counted. See `docs/replay.md`.
//!
//! This file runs the replay; [`capture`] reads and frames the records,
//! `clock` stamps them, `summary` counts what was done and `error` says
//! what stopped it.

pub mod capture;
mod clock;
mod error;
mod summary;

use std::{
    collections::BTreeMap,
    fs::File,
    io::IsTerminal as _,
    path::{Path, PathBuf},
};

use aya::maps::{MapData, RingBuf};
use chrono::{DateTime, Utc};
use smbwatch_common::ReplayMeta;

use crate::dataplane::{
    drain, drain_samples, testrun, to_gateway_event, to_smb_sample, Dataplane, LoadOptions, Stats,
};
use capture::{CaptureReader, OpenProblem, ReadProblem, Skip};
use smbwatch_core::event::{GatewayEvent, GatewayEventKind};
use smbwatch_core::{pipeline::ReplayFeed, smb::SmbSample};

pub use clock::CaptureClock;
pub use error::ReplayError;
use summary::Destinations;
pub use summary::{EventCounts, ReplaySummary, SourceSummary};

/// Where replayed events go.
///
/// Closures `FnMut(&GatewayEvent)` are sinks too.
pub trait ReplaySink {
    /// One event, stamped with its packet's capture time, in capture order.
    fn event(&mut self, ev: &GatewayEvent);

    /// Capture time has reached `now`: called before the first packet of
    /// every new second of capture time (once, however long the gap) and once
    /// after the last packet. This is where a detector's clock advances
    /// (`Detector::advance`), as the daemon's timer does live.
    fn advance(&mut self, _now: DateTime<Utc>) {}

    /// One sampled SMB segment (kernel sampling), stamped with its
    /// packet's capture time, in capture order.
    fn smb_sample(&mut self, _sample: &SmbSample<'_>) {}

    /// The capture ended at `end`: SMB connections still open are finished
    /// (cut messages parsed as far as they go, unanswered requests said).
    fn smb_finish(&mut self, _end: DateTime<Utc>) {}

    /// Alerts raised so far, for the summary (`None`: not counted here).
    fn alerts(&self) -> Option<u64> {
        None
    }
}

impl<F: FnMut(&GatewayEvent)> ReplaySink for F {
    fn event(&mut self, ev: &GatewayEvent) {
        self(ev)
    }
}

/// The detection pipeline with the capture's host events.
impl ReplaySink for ReplayFeed<'_> {
    fn event(&mut self, ev: &GatewayEvent) {
        ReplayFeed::event(self, ev)
    }

    fn advance(&mut self, now: DateTime<Utc>) {
        ReplayFeed::advance(self, now);
        ReplayFeed::smb_expire(self, now);
    }

    fn smb_sample(&mut self, sample: &SmbSample<'_>) {
        ReplayFeed::smb_sample(self, sample);
    }

    // No smb_finish: ReplayFeed::finish flushes every SMB connection (and
    // the alerts held for host records) after the run.

    fn alerts(&self) -> Option<u64> {
        Some(self.alert_count())
    }
}

/// When to draw a progress bar on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Progress {
    /// When stderr is a terminal.
    #[default]
    Auto,
    /// Never.
    Never,
}

/// How to replay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Monitored ports and table sizes of the program replayed through (as
    /// for `run`; tables larger than the capture needs cost nothing).
    pub load: LoadOptions,
    /// Progress bar.
    pub progress: Progress,
}

/// Largest frame tried when probing the kernel's test-run limit.
const PROBE_MAX: usize = 65_535;

/// The longest frame `BPF_PROG_TEST_RUN` accepts for an XDP program here
/// (PAGE_SIZE minus XDP headroom and skb_shared_info on most kernels),
/// found by bisection on the empty program so the real one's counters stay clean.
fn probe_max_frame() -> Result<usize, ReplayError> {
    let pass = testrun::PassProgram::load().map_err(ReplayError::Probe)?;
    let fd = pass.fd();
    let buf = vec![0u8; PROBE_MAX];
    let ok = |n: usize| testrun::run(fd, &buf[..n], 1).is_ok();
    if ok(PROBE_MAX) {
        return Ok(PROBE_MAX);
    }
    let (mut lo, mut hi) = (capture::ETH_HLEN, PROBE_MAX);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if ok(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// Keeps the calling thread on one CPU while it lives, then restores its
/// affinity. The kernel's LRU maps keep per-CPU free lists; staying on one
/// CPU makes evictions in a capture larger than the tables repeat exactly.
struct PinnedCpu {
    old: Option<libc::cpu_set_t>,
}

impl PinnedCpu {
    fn here() -> Self {
        // SAFETY: plain libc calls on a zeroed cpu_set_t for this thread (pid 0).
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old) != 0 {
                return Self { old: None };
            }
            let cpu = libc::sched_getcpu();
            if cpu < 0 {
                return Self { old: None };
            }
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut one);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one) != 0 {
                return Self { old: None };
            }
            Self { old: Some(old) }
        }
    }
}

impl Drop for PinnedCpu {
    fn drop(&mut self) {
        if let Some(old) = &self.old {
            // SAFETY: restoring the mask read in `here`.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), old) };
        }
    }
}

/// A capture opened for replay, with its own freshly loaded XDP program.
pub struct Replay {
    path: PathBuf,
    reader: CaptureReader<File>,
    file_len: u64,
    dp: Dataplane,
    ring: RingBuf<MapData>,
    samples: RingBuf<MapData>,
    max_frame: usize,
    progress: Progress,
}

impl Replay {
    /// Opens `path` and loads the XDP program with `opts.load` (fresh maps:
    /// nothing from a running daemon or an earlier replay).
    pub fn open(path: &Path, opts: &ReplayOptions) -> Result<Self, ReplayError> {
        let io = |op: &'static str| {
            let path = path.to_owned();
            move |source| ReplayError::Io { op, path, source }
        };
        let file = File::open(path).map_err(io("opening"))?;
        let file_len = file.metadata().map_err(io("reading metadata of"))?.len();
        let reader = CaptureReader::new(file, Some(file_len)).map_err(|p| match p {
            OpenProblem::NotACapture { magic } => ReplayError::NotACapture {
                path: path.to_owned(),
                magic,
            },
            OpenProblem::BadHeader(detail) => ReplayError::Header {
                path: path.to_owned(),
                detail,
            },
            OpenProblem::Io(source) => ReplayError::Io {
                op: "reading",
                path: path.to_owned(),
                source,
            },
        })?;
        if let Some(link) = reader.pcap_link() {
            if !capture::linktype::supported(link) {
                return Err(ReplayError::LinkType {
                    path: path.to_owned(),
                    link,
                });
            }
        }
        crate::dataplane::privilege::require()?;
        // Replay reads the ring buffer after every packet and must see
        // every event: no budget. The ingress comes from the capture.
        let load = LoadOptions {
            events_per_cpu: 0,
            replay: true,
            ..opts.load.clone()
        };
        let mut dp = Dataplane::load(&load)?;
        let max_frame = probe_max_frame()?;
        let ring = dp.take_events()?;
        let samples = dp.take_samples()?;
        Ok(Self {
            path: path.to_owned(),
            reader,
            file_len,
            dp,
            ring,
            samples,
            max_frame,
            progress: opts.progress,
        })
    }

    /// The loaded program (for reading its maps after [`Replay::run_into`]).
    pub fn dataplane(&self) -> &Dataplane {
        &self.dp
    }

    /// Replays the whole capture into `sink` and returns the summary.
    pub fn run(mut self, sink: &mut dyn ReplaySink) -> Result<ReplaySummary, ReplayError> {
        self.run_into(sink)
    }

    /// Like [`Replay::run`], keeping the program loaded so its maps can be
    /// read afterwards ([`Replay::dataplane`]). Run it once.
    pub fn run_into(&mut self, sink: &mut dyn ReplaySink) -> Result<ReplaySummary, ReplayError> {
        let bar = self.progress_bar();
        let _pinned = PinnedCpu::here();
        let mut s = ReplaySummary {
            path: self.path.clone(),
            format: self.reader.format(),
            link_types: BTreeMap::new(),
            records: 0,
            replayed: 0,
            skipped_short: 0,
            skipped_link: 0,
            skipped_not_ip: 0,
            bad_blocks: 0,
            cut_frames: 0,
            max_frame: self.max_frame,
            backwards_timestamps: 0,
            missing_timestamps: 0,
            truncated: None,
            first_ts: None,
            last_ts: None,
            events: EventCounts::default(),
            bad_events: 0,
            smb_samples: 0,
            bad_samples: 0,
            kernel: Stats::default(),
            sources: 0,
            top_sources: Vec::new(),
            alerts: None,
        };
        let mut clock = CaptureClock::default();
        let mut destinations = Destinations::default();
        let mut next_tick: Option<DateTime<Utc>> = None;
        let mut warned_links = std::collections::BTreeSet::new();
        let fd = self.dp.program_fd()?;
        let path = &self.path;
        while let Some(item) = self.reader.next_record() {
            let rec = match item {
                Ok(rec) => rec,
                Err(ReadProblem::Truncated { offset, remaining }) => {
                    let msg = format!(
                        "the capture ends inside its last record (byte {offset}, {remaining} bytes of it present): it was cut short; everything before it was replayed"
                    );
                    tracing::warn!(path = %path.display(), "{msg}");
                    s.truncated = Some(msg);
                    break;
                }
                Err(ReadProblem::Corrupt { offset, detail }) => {
                    return Err(ReplayError::Corrupt {
                        path: path.clone(),
                        record: s.records + 1,
                        offset,
                        detail,
                    })
                }
                Err(ReadProblem::BadBlock { offset, detail }) => {
                    s.bad_blocks += 1;
                    tracing::warn!(path = %path.display(), offset, "skipping a malformed pcapng block: {detail}");
                    continue;
                }
                Err(ReadProblem::UnknownInterface { offset, interface }) => {
                    s.bad_blocks += 1;
                    tracing::warn!(path = %path.display(), offset, interface, "skipping a packet of an interface the capture never described");
                    continue;
                }
                Err(ReadProblem::Io(source)) => {
                    return Err(ReplayError::Io {
                        op: "reading",
                        path: path.clone(),
                        source,
                    })
                }
            };
            s.records += 1;
            *s.link_types
                .entry(capture::linktype::name(rec.link))
                .or_default() += 1;
            let ts = clock.stamp(rec.ts);
            s.first_ts.get_or_insert(ts);
            if next_tick.is_none_or(|t| ts >= t) {
                sink.advance(ts);
                next_tick = Some(ts + chrono::Duration::seconds(1));
            }
            let frame = match capture::ethernet_frame(rec.link, rec.data) {
                Ok(f) => f,
                Err(Skip::TooShort) => {
                    s.skipped_short += 1;
                    continue;
                }
                Err(Skip::NotIp) => {
                    s.skipped_not_ip += 1;
                    continue;
                }
                Err(Skip::UnsupportedLink(l)) => {
                    s.skipped_link += 1;
                    if warned_links.insert(l) {
                        tracing::warn!(path = %path.display(), "skipping packets of an interface with {}: not supported", capture::linktype::name(l));
                    }
                    continue;
                }
            };
            let frame = if frame.len() > self.max_frame {
                s.cut_frames += 1;
                &frame[..self.max_frame]
            } else {
                &frame[..]
            };
            // The capture's interface id stands in for the ingress, so the
            // answer rules of a multi-interface gateway apply in replay too;
            // its clock drives the activity epochs.
            let meta = ReplayMeta {
                ingress: rec.interface + 1,
                _pad: 0,
                ts_ns: ts.timestamp_nanos_opt().map_or(0, |n| n.max(0) as u64),
            };
            testrun::run_with_meta(fd, frame, &meta).map_err(|source| ReplayError::TestRun {
                path: path.clone(),
                record: rec.number,
                len: frame.len(),
                source,
            })?;
            s.replayed += 1;
            let drained = drain(&mut self.ring, |raw, kind| {
                let ev = to_gateway_event(raw, kind, ts);
                match ev.kind {
                    GatewayEventKind::NewPair => {
                        s.events.new_pairs += 1;
                        destinations.count(ev.src);
                    }
                    GatewayEventKind::Active => s.events.active += 1,
                    GatewayEventKind::Accepted => s.events.accepted += 1,
                    GatewayEventKind::Confirmed => s.events.confirmed += 1,
                    GatewayEventKind::Refused => s.events.refused += 1,
                    GatewayEventKind::Unparsed => s.events.unparsed += 1,
                }
                sink.event(&ev);
            });
            s.bad_events += drained.malformed;
            let drained = drain_samples(&mut self.samples, 0, |k| {
                if let Some(smb) = to_smb_sample(k, ts) {
                    s.smb_samples += 1;
                    sink.smb_sample(&smb);
                }
            });
            s.bad_samples += drained.malformed;
            if s.records.is_multiple_of(4096) {
                bar.set_position(self.reader.offset().min(self.file_len));
            }
        }
        bar.finish_and_clear();
        s.backwards_timestamps = clock.backwards;
        s.missing_timestamps = clock.missing;
        s.last_ts = clock.latest();
        if let Some(end) = s.last_ts {
            sink.advance(end);
            sink.smb_finish(end);
        }
        if s.backwards_timestamps > 0 {
            tracing::warn!(path = %path.display(), count = s.backwards_timestamps, "timestamps went backwards; those packets were taken at the latest time seen");
        }
        s.kernel = self.dp.stats()?;
        s.sources = destinations.by_source.len();
        s.top_sources = destinations.top(10);
        s.alerts = sink.alerts();
        Ok(s)
    }

    fn progress_bar(&self) -> indicatif::ProgressBar {
        if self.progress == Progress::Never || !std::io::stderr().is_terminal() {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(self.file_len),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "replay {bar:40} {bytes}/{total_bytes} ({eta} left)",
        ) {
            bar.set_style(style);
        }
        bar
    }
}

/// Opens `path`, replays it into `sink`, returns the summary: the whole of
/// `smbwatch replay` apart from detection and output.
pub fn replay(
    path: &Path,
    opts: &ReplayOptions,
    sink: &mut dyn ReplaySink,
) -> Result<ReplaySummary, ReplayError> {
    Replay::open(path, opts)?.run(sink)
}

#[cfg(test)]
mod tests;
