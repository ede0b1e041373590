//! The alert schema of `smbwatch-core` (re-exported whole) with its
//! outputs: the ECS document, JSON lines, syslog, and the sinks.

pub use smbwatch_core::alert::*;

pub mod ecs;
pub mod json;
pub mod sensor;
pub mod sink;
pub mod syslog;
