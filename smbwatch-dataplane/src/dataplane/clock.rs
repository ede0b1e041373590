use chrono::{DateTime, Utc};

/// Converts the kernel's event timestamps (CLOCK_MONOTONIC, read at tick
/// resolution by `bpf_ktime_get_coarse_ns`) to UTC.
///
/// The offset between the two clocks moves when NTP steps the wall clock, so
/// the daemon calls [`MonotonicClock::resync`] periodically.
#[derive(Clone, Copy, Debug)]
pub struct MonotonicClock {
    offset_ns: i128,
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

impl MonotonicClock {
    /// Measures the current offset.
    pub fn new() -> Self {
        let mut c = Self { offset_ns: 0 };
        c.resync();
        c
    }

    /// Re-measures the offset (the narrowest of a few samples).
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
        self.offset_ns = best.1;
    }

    /// The UTC time of a monotonic timestamp.
    pub fn to_utc(&self, mono_ns: u64) -> DateTime<Utc> {
        let ns = mono_ns as i128 + self.offset_ns;
        DateTime::from_timestamp_nanos(ns as i64)
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}
