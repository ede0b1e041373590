//! The program's clock seen from user space: its timestamps turned into UTC.
//!
//! The program stamps events, budgets and windows with `bpf_jiffies64() ×
//! tick` (`Settings::tick_ns`): the JIT inlines jiffies, so a reading is a
//! load and a multiply where a clock helper cost a call. Jiffies do not
//! start at boot (`INITIAL_JIFFIES`, minus five minutes of ticks wrapped to
//! 32 bits), so their offset from CLOCK_MONOTONIC is measured: a tiny XDP
//! program run with `BPF_PROG_TEST_RUN` reads CLOCK_MONOTONIC, jiffies and
//! CLOCK_MONOTONIC again; readings taken until jiffies change pin down the
//! instant of a tick to within one test run (a few µs). The kernel advances
//! jiffies from CLOCK_MONOTONIC (`tick_do_update_jiffies64`), so the offset
//! holds while NTP slews; the daemon re-calibrates every minute all the
//! same, and re-reads CLOCK_REALTIME − CLOCK_MONOTONIC every second (NTP
//! steps the wall clock).
//!
//! Resolution: a timestamp is the start of the tick the packet fell in, at
//! most one tick (1 ms at HZ=1000, 4 ms at HZ=250, 10 ms at HZ=100) before
//! it, as the coarse clock it replaces was. Detection windows are seconds
//! to hours, and host logs are stamped to the second or millisecond.

use std::{
    io,
    os::fd::{AsFd as _, OwnedFd},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};

use super::{testrun, ProgramClock};

/// The kernel's tick (one jiffy) in ns: the resolution of the coarse
/// clocks, which is `TICK_NSEC` (1e9 / CONFIG_HZ, rounded), the period at
/// which the kernel advances jiffies.
pub(crate) fn tick_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    let ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    if rc != 0 || ns == 0 {
        // CLOCK_MONOTONIC_COARSE exists on every kernel with BPF; HZ=250
        // is the common default should it ever fail.
        return 4_000_000;
    }
    ns
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer; these clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Why the program's clock could not be calibrated.
#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    /// The probe program was refused (no CAP_BPF, or no BPF at all).
    #[error("loading the clock probe (a 13-instruction XDP program) failed")]
    Load(#[source] io::Error),
    /// `BPF_PROG_TEST_RUN` of the probe failed.
    #[error("running the clock probe with BPF_PROG_TEST_RUN failed")]
    Run(#[source] io::Error),
    /// No reading could be used.
    #[error("clock calibration: none of {total} readings was usable (the kernel's clocks went backwards, a reading took longer than {max_bracket_ns} ns, or jiffies read 0)")]
    NoReadings {
        /// Readings taken.
        total: usize,
        /// The longest a usable reading may take.
        max_bracket_ns: u64,
    },
    /// The readings do not agree on one offset.
    #[error("clock calibration: the readings disagree (at most {agree} of {usable} usable ones fit one offset for a tick of {tick_ns} ns): jiffies jumped or the tick is not what CLOCK_MONOTONIC_COARSE's resolution says")]
    Inconsistent {
        /// The largest group of readings that fit one offset.
        agree: usize,
        /// Usable readings.
        usable: usize,
        /// The tick assumed.
        tick_ns: u64,
    },
}

/// One reading of the kernel's clocks by the probe: CLOCK_MONOTONIC, then
/// jiffies, then CLOCK_MONOTONIC again, within one program run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockReading {
    /// CLOCK_MONOTONIC (ns) before jiffies were read.
    pub mono_before_ns: u64,
    /// `jiffies_64`.
    pub jiffies: u64,
    /// CLOCK_MONOTONIC (ns) after.
    pub mono_after_ns: u64,
}

/// What a calibration found: `CLOCK_MONOTONIC = jiffies × tick + offset`
/// at the start of each tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Calibration {
    /// The offset (ns), the middle of what the readings allow.
    pub offset_ns: i128,
    /// How far the true offset may lie from it, either way (ns).
    pub error_ns: u64,
    /// Readings that agreed on it.
    pub used: usize,
    /// Readings set aside: unusable, or outside the agreeing majority.
    pub rejected: usize,
}

impl Calibration {
    /// Finds the offset the readings agree on. Each reading says the
    /// offset lies in `(before − (j+1)·tick, after − j·tick]`: jiffies read
    /// `j` at an instant between `before` and `after`, and the tick `j`
    /// began at most one tick earlier. Readings on both sides of a tick
    /// narrow that to the gap between them. The answer is the intersection
    /// of the largest group of readings that agree, which must be a
    /// majority of the usable ones: one bad reading (a clock that went
    /// back, a run stretched by an interrupt, a jiffies value from another
    /// time) is set aside, not averaged in.
    pub fn from_readings(readings: &[ClockReading], tick_ns: u64) -> Result<Self, ClockError> {
        let max_bracket_ns = max_bracket_ns(tick_ns);
        let tick = i128::from(tick_ns.max(1));
        let intervals: Vec<(i128, i128)> = readings
            .iter()
            .filter(|r| {
                r.jiffies != 0
                    && r.mono_before_ns <= r.mono_after_ns
                    && r.mono_after_ns - r.mono_before_ns <= max_bracket_ns
            })
            .map(|r| {
                let j = i128::from(r.jiffies);
                (
                    i128::from(r.mono_before_ns) - (j + 1) * tick,
                    i128::from(r.mono_after_ns) - j * tick,
                )
            })
            .collect();
        if intervals.is_empty() {
            return Err(ClockError::NoReadings {
                total: readings.len(),
                max_bracket_ns,
            });
        }
        // Sweep: ends before starts at one coordinate (an interval is open
        // at its low end), and the deepest point is where most agree.
        let mut edges: Vec<(i128, i32)> = intervals
            .iter()
            .flat_map(|&(lo, hi)| [(lo, 1), (hi, -1)])
            .collect();
        edges.sort_unstable();
        let (mut depth, mut best, mut at) = (0i32, 0i32, 0i128);
        for (i, &(x, d)) in edges.iter().enumerate() {
            depth += d;
            if d > 0 && depth > best {
                best = depth;
                // Just inside the region that starts here.
                at = edges
                    .get(i + 1)
                    .map_or(x + 1, |&(next, _)| x + (next - x + 1) / 2);
            }
        }
        let agree: Vec<&(i128, i128)> = intervals
            .iter()
            .filter(|&&(lo, hi)| lo < at && at <= hi)
            .collect();
        if agree.len() * 2 <= intervals.len() {
            return Err(ClockError::Inconsistent {
                agree: agree.len(),
                usable: intervals.len(),
                tick_ns,
            });
        }
        let lo = agree.iter().map(|i| i.0).max().unwrap_or(at);
        let hi = agree.iter().map(|i| i.1).min().unwrap_or(at);
        Ok(Self {
            offset_ns: lo + (hi - lo) / 2,
            error_ns: ((hi - lo + 1) / 2).clamp(0, i128::from(u64::MAX)) as u64,
            used: agree.len(),
            rejected: readings.len() - agree.len(),
        })
    }
}

/// The longest a usable reading may take: three helper calls take well
/// under a µs; one stretched past this was interrupted in the middle.
fn max_bracket_ns(tick_ns: u64) -> u64 {
    (tick_ns / 16).clamp(20_000, 1_000_000)
}

/// The probe: an XDP program, loaded without an object, that writes
/// CLOCK_MONOTONIC, jiffies and CLOCK_MONOTONIC into the first 24 bytes of
/// its frame.
struct ClockProbe(OwnedFd);

/// The probe's frame: an Ethernet header's worth at least (the kernel's
/// minimum for a test run) and room for the three words.
const PROBE_FRAME: usize = 64;

impl ClockProbe {
    fn load() -> Result<Self, ClockError> {
        const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
            let o = off.to_le_bytes();
            let i = imm.to_le_bytes();
            u64::from_le_bytes([code, dst | (src << 4), o[0], o[1], i[0], i[1], i[2], i[3]])
        }
        const LDXW: u8 = 0x61; // r_dst = *(u32 *)(r_src + off)
        const STXDW: u8 = 0x7b; // *(u64 *)(r_dst + off) = r_src
        const MOV64X: u8 = 0xbf;
        const MOV64K: u8 = 0xb7;
        const ADD64K: u8 = 0x07;
        const JGTX: u8 = 0x2d;
        const CALL: u8 = 0x85;
        const EXIT: u8 = 0x95;
        const KTIME_GET_NS: i32 = 5;
        const JIFFIES64: i32 = 118;
        let insns = [
            insn(LDXW, 6, 1, 0, 0),   // r6 = ctx->data
            insn(LDXW, 7, 1, 4, 0),   // r7 = ctx->data_end
            insn(MOV64X, 2, 6, 0, 0), // r2 = r6
            insn(ADD64K, 2, 0, 0, 24),
            insn(JGTX, 2, 7, 6, 0), // if r6 + 24 > data_end: to the exit
            insn(CALL, 0, 0, 0, KTIME_GET_NS),
            insn(STXDW, 6, 0, 0, 0),
            insn(CALL, 0, 0, 0, JIFFIES64),
            insn(STXDW, 6, 0, 8, 0),
            insn(CALL, 0, 0, 0, KTIME_GET_NS),
            insn(STXDW, 6, 0, 16, 0),
            insn(MOV64K, 0, 0, 0, 2), // XDP_PASS
            insn(EXIT, 0, 0, 0, 0),
        ];
        testrun::load_xdp(&insns, b"smbwatch_clock")
            .map(Self)
            .map_err(ClockError::Load)
    }

    fn read(&self) -> Result<ClockReading, ClockError> {
        let frame = [0u8; PROBE_FRAME];
        let mut out = [0u8; PROBE_FRAME];
        testrun::run_out(self.0.as_fd(), &frame, &mut out).map_err(ClockError::Run)?;
        let word =
            |i: usize| u64::from_ne_bytes(out[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        Ok(ClockReading {
            mono_before_ns: word(0),
            jiffies: word(1),
            mono_after_ns: word(2),
        })
    }

    /// Readings until jiffies have changed twice (two tick instants seen),
    /// for at most three ticks: a few ms of one core, once a minute. Not
    /// `precise`: three readings (to within a tick, for display).
    fn readings(&self, tick_ns: u64, precise: bool) -> Result<Vec<ClockReading>, ClockError> {
        let max_readings = if precise { 100_000 } else { 3 };
        let deadline = Instant::now() + Duration::from_nanos(3 * tick_ns + 1_000_000);
        let mut out = Vec::with_capacity(if precise { 1024 } else { 3 });
        let mut changes = 0;
        while changes < 2 && out.len() < max_readings && Instant::now() < deadline {
            let r = self.read()?;
            if out
                .last()
                .is_some_and(|p: &ClockReading| p.jiffies != r.jiffies)
            {
                changes += 1;
            }
            out.push(r);
        }
        Ok(out)
    }
}

/// Turns the program's timestamps ([`Event::ts_ns`](smbwatch_common::Event),
/// the source table's times) into UTC.
pub struct KernelClock {
    /// ns per jiffy; 0 when the program reads CLOCK_MONOTONIC_COARSE.
    tick_ns: u64,
    /// CLOCK_MONOTONIC − the program's clock (the calibrated offset; 0 for
    /// the coarse helper, which is CLOCK_MONOTONIC already).
    to_mono_ns: i128,
    /// CLOCK_REALTIME − CLOCK_MONOTONIC.
    mono_to_real_ns: i128,
    /// The probe, kept loaded for re-calibration (jiffies only).
    probe: Option<ClockProbe>,
    calibration: Option<Calibration>,
    /// Calibrate to within a test run (else within a tick).
    precise: bool,
}

impl KernelClock {
    /// The clock of a program loaded with `clock`; for jiffies this loads
    /// the probe and calibrates (a few ms). Needs CAP_BPF, as loading does.
    pub fn for_program(clock: ProgramClock) -> Result<Self, ClockError> {
        Self::build(clock, true)
    }

    /// The clock of the program a running daemon loaded, calibrated to
    /// within a tick in three probe runs: `smbwatch status` and `/top` show
    /// its pinned tables' times to the second.
    pub fn live() -> Result<Self, ClockError> {
        Self::build(ProgramClock::Jiffies, false)
    }

    fn build(clock: ProgramClock, precise: bool) -> Result<Self, ClockError> {
        let mut c = Self {
            tick_ns: 0,
            to_mono_ns: 0,
            mono_to_real_ns: 0,
            probe: None,
            calibration: None,
            precise,
        };
        if clock == ProgramClock::Jiffies {
            c.tick_ns = tick_ns();
            c.probe = Some(ClockProbe::load()?);
            c.recalibrate()?;
        }
        c.resync();
        Ok(c)
    }

    /// Re-reads CLOCK_REALTIME − CLOCK_MONOTONIC (cheap; NTP steps the
    /// wall clock): the narrowest of a few samples.
    pub fn resync(&mut self) {
        let mut best = (i128::MAX, 0i128);
        for _ in 0..3 {
            let m0 = now_ns(libc::CLOCK_MONOTONIC);
            let r = now_ns(libc::CLOCK_REALTIME);
            let m1 = now_ns(libc::CLOCK_MONOTONIC);
            if m1 - m0 < best.0 {
                best = (m1 - m0, r - (m0 + (m1 - m0) / 2));
            }
        }
        self.mono_to_real_ns = best.1;
    }

    /// Measures jiffies' offset from CLOCK_MONOTONIC again. On an error
    /// the previous calibration stays in force.
    pub fn recalibrate(&mut self) -> Result<Calibration, ClockError> {
        let Some(probe) = &self.probe else {
            // The coarse helper's clock is CLOCK_MONOTONIC: nothing to measure.
            return Ok(Calibration {
                offset_ns: 0,
                error_ns: 0,
                used: 0,
                rejected: 0,
            });
        };
        let readings = probe.readings(self.tick_ns, self.precise)?;
        self.apply(&readings)
    }

    /// Takes the offset `readings` agree on; on an error keeps the one in force.
    fn apply(&mut self, readings: &[ClockReading]) -> Result<Calibration, ClockError> {
        let cal = Calibration::from_readings(readings, self.tick_ns)?;
        if let Some(prev) = self.calibration {
            let moved = cal.offset_ns - prev.offset_ns;
            if moved.unsigned_abs() > u128::from(self.tick_ns) {
                tracing::info!(
                    moved_ns = moved as i64,
                    "kernel clock: jiffies moved against CLOCK_MONOTONIC by more than a tick since the last calibration"
                );
            }
        }
        self.to_mono_ns = cal.offset_ns;
        self.calibration = Some(cal);
        Ok(cal)
    }

    /// The calibration in force (`None` for the coarse helper's clock).
    pub fn calibration(&self) -> Option<Calibration> {
        self.calibration
    }

    /// ns per jiffy (0: the program reads the coarse helper).
    pub fn tick_ns(&self) -> u64 {
        self.tick_ns
    }

    /// The UTC time of one of the program's timestamps.
    pub fn to_utc(&self, ts_ns: u64) -> DateTime<Utc> {
        let ns = i128::from(ts_ns) + self.to_mono_ns + self.mono_to_real_ns;
        DateTime::from_timestamp_nanos(ns.clamp(0, i128::from(i64::MAX)) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: u64 = 4_000_000;
    /// CLOCK_MONOTONIC − jiffies × tick in the made-up kernel below: jiffies
    /// start near 2^32 (INITIAL_JIFFIES) while the monotonic clock starts
    /// at 0, so the offset is large and negative.
    const OFFSET: i128 = -17_178_669_184_000_000 + 1_234_567;

    /// A reading taken at CLOCK_MONOTONIC `t`, taking `took` ns.
    fn at(t: u64, took: u64) -> ClockReading {
        let j = ((i128::from(t) - OFFSET) / i128::from(TICK)) as u64;
        ClockReading {
            mono_before_ns: t - took / 2,
            jiffies: j,
            mono_after_ns: t + took / 2,
        }
    }

    /// Readings every 3 µs over `span` ns from monotonic time `from`.
    fn sweep(from: u64, span: u64) -> Vec<ClockReading> {
        (0..span / 3_000)
            .map(|i| at(from + i * 3_000, 400))
            .collect()
    }

    #[test]
    fn readings_across_a_tick_pin_the_offset_to_the_gap_between_them() {
        let cal = Calibration::from_readings(&sweep(50_000_000_000, 9_000_000), TICK).unwrap();
        assert!(
            (cal.offset_ns - OFFSET).abs() <= 3_000,
            "{cal:?} vs {OFFSET}"
        );
        assert!(cal.error_ns <= 3_000, "{cal:?}");
        assert_eq!(cal.rejected, 0);
        // Readings within one tick only bound it by the tick.
        let one = Calibration::from_readings(&[at(50_000_000_000, 400)], TICK).unwrap();
        assert!(
            (one.offset_ns - OFFSET).abs() <= i128::from(TICK),
            "{one:?}"
        );
        assert!(one.error_ns <= TICK / 2 + 400, "{one:?}");
    }

    #[test]
    fn a_bad_reading_is_set_aside_not_averaged_in() {
        let good = sweep(50_000_000_000, 9_000_000);
        let clean = Calibration::from_readings(&good, TICK).unwrap();
        let bad = [
            // jiffies from a minute earlier (a stale or corrupt value)
            ClockReading {
                jiffies: good[100].jiffies - 15_000,
                ..good[100]
            },
            // the monotonic clock went backwards within the run
            ClockReading {
                mono_before_ns: good[200].mono_after_ns + 10,
                ..good[200]
            },
            // interrupted: the run took 5 ms
            ClockReading {
                mono_after_ns: good[300].mono_before_ns + 5_000_000,
                ..good[300]
            },
            // jiffies 0
            ClockReading {
                jiffies: 0,
                ..good[400]
            },
        ];
        for b in bad {
            let mut readings = good.clone();
            readings.insert(1500, b);
            let cal = Calibration::from_readings(&readings, TICK).unwrap();
            assert_eq!(cal.offset_ns, clean.offset_ns, "{b:?}");
            assert_eq!(cal.rejected, 1, "{b:?}");
        }
    }

    #[test]
    fn readings_that_disagree_or_none_usable_are_an_error() {
        // Half the readings a second off: no majority agrees on one offset.
        let mut readings = sweep(50_000_000_000, 1_200_000);
        let n = readings.len();
        assert_eq!(n % 2, 0);
        for r in &mut readings[..n / 2] {
            r.jiffies += 250;
        }
        let err = Calibration::from_readings(&readings, TICK).unwrap_err();
        assert!(matches!(err, ClockError::Inconsistent { .. }), "{err}");
        assert!(err.to_string().contains("disagree"), "{err}");
        let err = Calibration::from_readings(&[], TICK).unwrap_err();
        assert!(
            matches!(err, ClockError::NoReadings { total: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_failed_recalibration_keeps_the_offset_in_force() {
        let mut clock = KernelClock {
            tick_ns: TICK,
            to_mono_ns: 0,
            mono_to_real_ns: 0,
            probe: None,
            calibration: None,
            precise: true,
        };
        let good = sweep(50_000_000_000, 9_000_000);
        let cal = clock.apply(&good).unwrap();
        let utc = clock.to_utc(good[0].jiffies * TICK);
        // A minute later every reading is garbage (jiffies 0, or runs that
        // took 5 ms): an error, and the clock converts as before.
        let mut bad = sweep(110_000_000_000, 9_000_000);
        for (i, r) in bad.iter_mut().enumerate() {
            if i % 2 == 0 {
                r.jiffies = 0;
            } else {
                r.mono_after_ns = r.mono_before_ns + 5_000_000;
            }
        }
        assert!(clock.apply(&bad).is_err());
        assert_eq!(clock.calibration(), Some(cal));
        assert_eq!(clock.to_utc(good[0].jiffies * TICK), utc);
    }

    #[test]
    fn timestamps_become_utc_through_both_offsets() {
        let clock = KernelClock {
            tick_ns: TICK,
            to_mono_ns: OFFSET,
            mono_to_real_ns: 1_700_000_000_000_000_000,
            probe: None,
            calibration: None,
            precise: true,
        };
        let j = 4_294_000_000u64;
        let mono = i128::from(j * TICK) + OFFSET;
        let utc = clock.to_utc(j * TICK);
        assert_eq!(
            i128::from(utc.timestamp_nanos_opt().unwrap()),
            mono + 1_700_000_000_000_000_000
        );
    }
}
