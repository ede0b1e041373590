//! smbwatch's pure logic: what the gateway and the Windows hosts report, and
//! what is made of it. No I/O but reading a named file whole
//! ([`hostlog::parse_file`]); time comes from the events.
//!
//! - [`event`] is a gateway event as user space sees it.
//! - [`alert`] is the alert schema every detector produces.
//! - [`detect`] turns gateway events into scan alerts.
//! - [`hostlog`] parses Windows host logs into one normalised event type,
//!   and its rules raise host alerts.
//! - [`correlate`] joins gateway pairs to host events.
//! - [`baseline`] learns the SMB graph and scores against it.
//! - [`smb`] follows SMB connections on the wire (sampled payload, parsed
//!   by `smbwatch-smb`) into event lines and alerts.
//! - [`pipeline`] wires them into one detection path (daemon, replay, fleet).
//! - [`community_id`] and [`timed`] are shared helpers with no dependency on
//!   the above; [`settings`] is the one shape of a configuration problem.
//!
//! This crate imports no other smbwatch crate but `smbwatch-common` and the
//! pure parser `smbwatch-smb`; the outputs, the data plane and the
//! application import it.
pub mod alert;
pub mod baseline;
pub mod community_id;
pub mod correlate;
pub mod detect;
pub mod event;
pub mod hostlog;
pub mod pipeline;
pub mod settings;
pub mod smb;
#[doc(hidden)]
pub mod test_support;
pub mod timed;
