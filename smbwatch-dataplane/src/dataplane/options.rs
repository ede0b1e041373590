//! What to load: the load options (ports, table sizes, event budget,
//! answer check, activity epoch, sampling), checked and turned into the
//! program's read-only `Settings`.

use serde::Serialize;
use smbwatch_common::{
    outer_arrays, Settings, ANSWERS_ANY_INGRESS, ANSWERS_OTHER_INGRESS, DEFAULT_EVENTS_PER_CPU,
    DEFAULT_PAIR_BUCKETS, DEFAULT_SETTINGS, DEFAULT_SOURCE_SLOTS, MAX_PORTS, PAIR_WAYS,
    SOURCE_INNER_LINES,
};

use super::{clock::tick_ns, DataplaneError, SampleOptions};

/// Shortest activity epoch `[dataplane] activity_epoch` accepts.
pub const MIN_ACTIVITY_EPOCH: std::time::Duration = std::time::Duration::from_secs(60);
/// Longest activity epoch.
pub const MAX_ACTIVITY_EPOCH: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Default activity epoch: a pair in use is reported again at most hourly.
pub const DEFAULT_ACTIVITY_EPOCH: std::time::Duration = std::time::Duration::from_secs(3600);

/// What to load: the monitored ports, the table sizes, the event budget
/// and how answers are checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Monitored TCP ports (1 to [`MAX_PORTS`] of them).
    pub ports: Vec<u16>,
    /// Slots of the per-source sketch table (rounded up to whole inner
    /// arrays of [`SOURCE_INNER_LINES`] × 2 slots).
    pub max_sources: u32,
    /// Pairs the pair cache holds (rounded up to a power of two, at least 4).
    pub max_pairs: u32,
    /// New-pair events per CPU per second before events are shed (the
    /// sketches keep counting); the same again for tracked multi-destination
    /// sources. 0: no budget.
    pub events_per_cpu: u64,
    /// Which answers count ([`AnswerSetting::resolve`] turns the
    /// configuration's `auto` into one for the interfaces attached).
    pub answers: AnswerCheck,
    /// The fan-out window; the kernel's destination bitmaps rotate at half of it.
    pub fanout_window: std::time::Duration,
    /// Replay: the ingress comes from XDP metadata (the capture's interface id).
    pub replay: bool,
    /// The hash key; `None` (always, in production) draws a fresh secret at
    /// load. Tests pin it so that slot collisions, and so the sketches'
    /// estimates, are the same on every run.
    pub hash_key: Option<u64>,
    /// Activity epoch: a known pair's first SYN in a later epoch than its
    /// latest report is reported again ([`MIN_ACTIVITY_EPOCH`] to
    /// [`MAX_ACTIVITY_EPOCH`]). In replay the capture's clock drives it.
    pub activity_epoch: std::time::Duration,
    /// Test only: accept an `activity_epoch` below [`MIN_ACTIVITY_EPOCH`]
    /// (down to one kernel tick), so that kernel tests can cross epochs of
    /// the live clock between `BPF_PROG_TEST_RUN` calls. Never set in
    /// production: the configuration cannot reach it.
    pub allow_short_epoch: bool,
    /// SMB payload sampling ([`SampleOptions`]).
    pub sampling: SampleOptions,
    /// Which clock the program reads. Always [`ProgramClock::Jiffies`] but
    /// in the benchmark, which compares it with the helper in one run.
    pub clock: ProgramClock,
}

/// The program's clock ([`Settings::tick_ns`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ProgramClock {
    /// Jiffies × the tick: inlined by the JIT, converted to UTC by a
    /// calibrated [`KernelClock`](super::KernelClock).
    #[default]
    Jiffies,
    /// The `bpf_ktime_get_coarse_ns` helper (CLOCK_MONOTONIC_COARSE): a
    /// helper call per reading. Benchmark only; the configuration cannot
    /// select it.
    CoarseHelper,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            ports: vec![445],
            max_sources: DEFAULT_SOURCE_SLOTS,
            max_pairs: DEFAULT_PAIR_BUCKETS * PAIR_WAYS as u32,
            events_per_cpu: DEFAULT_EVENTS_PER_CPU,
            answers: AnswerCheck::Any,
            fanout_window: std::time::Duration::from_secs(60),
            replay: false,
            hash_key: None,
            activity_epoch: DEFAULT_ACTIVITY_EPOCH,
            allow_short_epoch: false,
            sampling: SampleOptions::default(),
            clock: ProgramClock::Jiffies,
        }
    }
}

/// Which SYN-ACKs and RSTs count as a server's answer, as configured:
/// `auto` depends on the interfaces attached, and is resolved into an
/// [`AnswerCheck`] before it reaches the loader.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize, Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum AnswerSetting {
    /// `other-ingress` when attached to two or more interfaces, else `any`.
    #[default]
    Auto,
    /// Only answers from another interface or VLAN than their SYN (one
    /// from the client's side is forged).
    OtherIngress,
    /// Answers from any ingress (one interface, a SPAN port).
    Any,
}

impl AnswerSetting {
    /// `auto` resolved for a deployment watching `ingresses` interfaces.
    pub fn resolve(self, ingresses: usize) -> AnswerCheck {
        match self {
            Self::Auto if ingresses >= 2 => AnswerCheck::OtherIngress,
            Self::Auto | Self::Any => AnswerCheck::Any,
            Self::OtherIngress => AnswerCheck::OtherIngress,
        }
    }
}

/// Which SYN-ACKs and RSTs the program counts as a server's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AnswerCheck {
    /// Only answers that arrive on another interface or VLAN than their SYN:
    /// a router sees a server's answer come in on the server's side, so one
    /// from the client's side is forged.
    OtherIngress,
    /// Answers from any ingress: one interface, a SPAN port, a capture of
    /// one link (and replay and test runs: never call a real answer forged).
    #[default]
    Any,
}

impl LoadOptions {
    /// The program's read-only settings, with a fresh secret hash key.
    pub(super) fn settings(&self) -> Settings {
        let mut ports = [0u16; MAX_PORTS];
        ports[..self.ports.len()].copy_from_slice(&self.ports);
        let half = (self.fanout_window.as_nanos() / 2).clamp(1_000_000, u64::MAX as u128) as u64;
        // The repeat horizon is one to two generations; a generation of an
        // eighth of the window (a power of two of ns) keeps a source that
        // probes a few times per window recognised.
        let gen_shift = (half / 4).max(1).ilog2().clamp(20, 40);
        // 0 events per second means no budget (cost 0).
        let cost = 1_000_000_000u64
            .checked_div(self.events_per_cpu)
            .map_or(0, |c| c.max(1));
        let buckets = pair_buckets(self.max_pairs);
        let mut s = Settings {
            ports,
            hash_key: self.hash_key.unwrap_or_else(random_u64),
            pair_mask: buckets - 1,
            source_outer: outer_arrays(self.max_sources.div_ceil(2), SOURCE_INNER_LINES),
            answers: match self.answers {
                AnswerCheck::OtherIngress => ANSWERS_OTHER_INGRESS,
                AnswerCheck::Any => ANSWERS_ANY_INGRESS,
            },
            event_cost_ns: cost,
            // A tenth of a second of events may come at once.
            burst_ns: DEFAULT_SETTINGS.burst_ns,
            half_window_ns: half,
            seen_gen_shift: gen_shift,
            replay: u32::from(self.replay),
            epoch_ticks: self.epoch_ticks(),
            tick_ns: match self.clock {
                ProgramClock::Jiffies => tick_ns(),
                ProgramClock::CoarseHelper => 0,
            },
            ..DEFAULT_SETTINGS
        };
        self.sampling.apply(&mut s, self.replay);
        s
    }

    /// The epoch in the program's ticks: capture ns in replay, else jiffies.
    fn epoch_ticks(&self) -> u64 {
        let ns = self.activity_epoch.as_nanos().min(u128::from(u64::MAX)) as u64;
        if self.replay {
            ns.max(1)
        } else {
            (ns / tick_ns()).max(1)
        }
    }

    /// Checks what the configuration cannot already have checked.
    pub(super) fn check(&self) -> Result<(), DataplaneError> {
        if self.ports.is_empty() || self.ports.len() > MAX_PORTS || self.ports.contains(&0) {
            return Err(DataplaneError::Ports {
                ports: self.ports.clone(),
            });
        }
        let e = self.activity_epoch;
        if e > MAX_ACTIVITY_EPOCH || (e < MIN_ACTIVITY_EPOCH && !self.allow_short_epoch) {
            return Err(DataplaneError::ActivityEpoch { epoch: e });
        }
        Ok(self.sampling.validate()?)
    }
}

/// Buckets for `max_pairs` pairs: a power of two, at least one.
fn pair_buckets(max_pairs: u32) -> u32 {
    (max_pairs.div_ceil(PAIR_WAYS as u32))
        .max(1)
        .next_power_of_two()
}

/// A random number from the kernel: the secret key for the program's
/// hashes (so an attacker cannot aim sources or pairs at one slot).
fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: b is a valid 8-byte buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 8 {
        // getrandom(2) does not fail for 8 bytes once the pool is
        // initialised; fall back to the clock rather than refuse to start.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return t ^ u64::from(std::process::id()).rotate_left(32);
    }
    u64::from_ne_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_table_sizes_up_and_key_the_hash() {
        let opts = LoadOptions {
            max_pairs: 1000,
            max_sources: 3000,
            ..Default::default()
        };
        let a = opts.settings();
        assert_eq!(
            a.pair_mask + 1,
            256,
            "1000 pairs / 4 ways -> 250 -> 256 buckets"
        );
        assert_eq!(
            a.source_outer, 8,
            "3000 slots -> 1500 lines of two -> 8 x 198"
        );
        let default = LoadOptions::default().settings();
        assert_eq!(
            default.source_outer, 331,
            "2^17 slots -> 2^16 lines -> 331 x 198"
        );
        assert_eq!(default.seen_outer, 1058, "2^21 lines -> 1058 x 1984");
        let one = LoadOptions {
            max_pairs: 4,
            max_sources: 0,
            ..Default::default()
        };
        assert_eq!(
            (one.settings().pair_mask, one.settings().source_outer),
            (0, 1)
        );
        assert_eq!(a.event_cost_ns, 10_000, "100k events/s per CPU");
        assert_eq!(a.half_window_ns, 30_000_000_000);
        assert_ne!(a.hash_key, opts.settings().hash_key, "a fresh key per load");
        let unlimited = LoadOptions {
            events_per_cpu: 0,
            ..Default::default()
        };
        assert_eq!(unlimited.settings().event_cost_ns, 0);
    }

    #[test]
    fn activity_epoch_is_bounded_and_in_ticks() {
        let at = |secs: u64| LoadOptions {
            activity_epoch: std::time::Duration::from_secs(secs),
            ..Default::default()
        };
        assert!(at(60).check().is_ok());
        assert!(at(86_400).check().is_ok());
        let err = at(59).check().unwrap_err().to_string();
        assert!(
            err.contains("activity epoch") && err.contains("59s"),
            "{err}"
        );
        assert!(at(86_401).check().is_err());
        let short = LoadOptions {
            allow_short_epoch: true,
            ..at(0)
        };
        assert!(short.check().is_ok(), "tests may go below a minute");
        assert_eq!(short.epoch_ticks(), 1, "never zero ticks");
        // Jiffies: an hour is 3600 × HZ ticks.
        let hz = 1_000_000_000 / tick_ns();
        assert!([100, 250, 300, 1000].contains(&hz), "HZ={hz}");
        assert_eq!(at(3600).settings().epoch_ticks, 3600 * hz);
        // The program's clock: jiffies × the tick, or 0 for the helper.
        assert_eq!(at(3600).settings().tick_ns, tick_ns());
        let helper = LoadOptions {
            clock: ProgramClock::CoarseHelper,
            ..at(3600)
        };
        assert_eq!(helper.settings().tick_ns, 0);
        // Replay: capture nanoseconds.
        let replay = LoadOptions {
            replay: true,
            ..at(3600)
        };
        assert_eq!(replay.settings().epoch_ticks, 3_600_000_000_000);
    }

    #[test]
    fn answer_check_auto_depends_on_interfaces() {
        assert_eq!(AnswerSetting::Auto.resolve(1), AnswerCheck::Any);
        assert_eq!(AnswerSetting::Auto.resolve(2), AnswerCheck::OtherIngress);
        assert_eq!(AnswerSetting::Any.resolve(3), AnswerCheck::Any);
        assert_eq!(
            AnswerSetting::OtherIngress.resolve(1),
            AnswerCheck::OtherIngress
        );
    }
}
