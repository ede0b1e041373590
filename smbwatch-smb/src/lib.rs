//! SMB on the wire: a pure parser of what an SMB connection reveals about
//! a lateral move, from the TCP payload segments of both directions.
//!
//! Feed a [`Session`] the segments of one connection with
//! [`Session::segment`] (direction, sequence number, the bytes captured and
//! their length on the wire, the time) and it returns typed
//! [`Observation`]s: the SMB1 or SMB2/3 dialect, the NTLMSSP user, the share
//! connected, files and pipes opened, file writes, DCE/RPC binds and calls
//! with interface and operation names, SMB3 encryption, and every hole in
//! what it saw ([`Observation::Unseen`]). No I/O, no `unsafe`; every length
//! is checked; every table is capped (see `docs/smb.md`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod build;
#[cfg(feature = "capture")]
pub mod capture;
pub mod dcerpc;
pub mod ntlmssp;
pub mod observation;
pub mod session;
pub mod smb1;
pub mod smb2;
pub mod stream;
pub mod wire;

pub use dcerpc::Interface;
pub use observation::{Dialect, Direction, ExploitSign, Limit, Observation, Seen, Unbound, Unseen};
pub use session::{Session, SessionCounters};
pub use smb2::{NtStatus, ShareType};
pub use stream::{Hole, Segment};
pub use wire::ParseError;

#[cfg(test)]
mod session_tests;
