//! smbwatch: catch SMB lateral movement from a Linux router.
//!
//! - [`dataplane`] loads and attaches the XDP program, reads its ring buffer and maps.
//! - [`detect`] turns gateway events into scan alerts (pure, time from the events).
//! - [`hostlog`] parses Windows host logs into one normalised event type.
//! - [`correlate`] joins gateway pairs to host events.
//! - [`baseline`] learns the SMB graph and scores against it (pure; its store is redb).
//! - [`alert`] is the alert schema and its sinks (JSON lines, syslog).
//! - [`fleet`] publishes events to NATS JetStream and aggregates many gateways.
//! - [`community_id`] and `timed` are shared helpers with no dependency on the above.
pub mod alert;
pub mod baseline;
pub mod community_id;
pub mod config;
pub mod correlate;
pub mod daemon;
pub mod dataplane;
pub mod detect;
pub mod event;
pub mod fleet;
pub mod hostlog;
pub mod logging;
pub mod metrics;
pub mod packet;
pub mod pipeline;
pub mod replay;
#[cfg(test)]
mod test_support;
pub(crate) mod timed;
pub mod top;
