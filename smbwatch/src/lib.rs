//! smbwatch: catch SMB lateral movement from a Linux router.
//!
//! The application: the daemon ([`daemon`]), the fleet ([`fleet`]), the
//! metrics endpoint ([`metrics`]), `smbwatch top` ([`top`]), the
//! configuration file ([`config`]) and the baseline's store. It builds on
//! three crates whose manifests are the walls between the layers (see
//! docs/architecture.md):
//!
//! - `smbwatch-core`, pure logic: [`event`], [`alert`]'s schema, [`detect`],
//!   [`hostlog`] parsers and rules, [`correlate`], the [`baseline`] learner,
//!   [`pipeline`], [`community_id`];
//! - `smbwatch-output`: [`alert`]'s ECS document, JSON lines and syslog;
//! - `smbwatch-dataplane`: [`dataplane`] (the aya loader and pins),
//!   [`replay`] and [`packet`].
//!
//! Their modules are re-exported here under the paths they always had.
pub use smbwatch_core::{community_id, correlate, detect, event, hostlog, pipeline, timed};
pub use smbwatch_dataplane::{dataplane, packet};
pub use smbwatch_output::alert;

pub mod config;
pub mod daemon;
pub mod fleet;
pub mod logging;
pub mod metrics;
pub mod runtime;
pub mod top;

/// The learned SMB baseline: the learner (`smbwatch-core`) with its redb
/// store, the store's writer thread, JSON-lines export and the
/// `smbwatch baseline` commands.
pub mod baseline {
    pub use smbwatch_core::baseline::*;

    pub mod cli;
    pub mod jsonl;
    pub mod store;
    pub mod writer;

    #[cfg(test)]
    mod store_tests;
}

/// Replay (`smbwatch-dataplane`) with the sensor a replay's alerts name.
pub mod replay {
    pub use smbwatch_dataplane::replay::*;

    pub mod sensor;
}

#[cfg(test)]
use smbwatch_core::test_support;
