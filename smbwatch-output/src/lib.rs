//! smbwatch's alert outputs: the ECS document, JSON lines and syslog, and
//! the set of sinks the daemon and the aggregator write to.
//!
//! This crate imports `smbwatch-core` (the alert schema and events) and
//! nothing above it.
pub mod alert;
