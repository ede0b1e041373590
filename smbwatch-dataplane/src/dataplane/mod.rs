//! The kernel side, seen from user space: load and attach the XDP program,
//! pin its maps, decode ring-buffer events, read counters.
//!
//! Nothing here interprets events; that is `smbwatch_core::detect`'s job.
//! One job a file: `options` (what to load), `loader` (the loaded program:
//! attach, pin, maps), `events` (ring-buffer records), `stats` (counters
//! and sources, live or pinned), `tables` (the arrays of arrays), [`sample`] (SMB payload samples).

mod clock;
mod error;
mod events;
mod loader;
mod options;
mod pin;
pub mod privilege;
pub mod sample;
mod stats;
mod tables;
#[cfg(feature = "test-programs")]
pub mod test_programs;
pub mod testrun;

pub use clock::{Calibration, ClockError, ClockReading, KernelClock};
pub use error::DataplaneError;
pub use events::{addr_to_ip, decode_event, drain, ip_to_addr, to_gateway_event, Drained};
pub(crate) use loader::program_named;
pub use loader::{AttachMode, AttachedMode, Dataplane, EBPF_OBJECT};
pub use options::{
    AnswerCheck, AnswerSetting, LoadOptions, ProgramClock, DEFAULT_ACTIVITY_EPOCH,
    MAX_ACTIVITY_EPOCH, MIN_ACTIVITY_EPOCH,
};
pub use pin::{ensure_bpffs, PinDir};
pub use sample::{
    decode_sample, drain_samples, to_smb_sample, KernelSample, SampleDirection, SampleOptions,
    SamplesDrained,
};
pub(crate) use stats::{read_sources, read_stats};
pub use stats::{PinnedMaps, Stats};

/// A map error naming the operation and the map.
pub(crate) fn map_err(
    op: &'static str,
    name: &'static str,
    source: aya::maps::MapError,
) -> DataplaneError {
    DataplaneError::Map { op, name, source }
}
