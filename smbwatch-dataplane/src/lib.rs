//! smbwatch's kernel side seen from user space: loading and attaching the
//! XDP program, its pinned maps, `BPF_PROG_TEST_RUN`, and replaying
//! captures through the program.
//!
//! - [`dataplane`] loads and attaches the program, reads its ring buffer,
//!   maps and counters.
//! - [`replay`] feeds a capture's packets through the program (test runs)
//!   and its events to a sink (the detection pipeline, a printer).
//! - [`packet`] builds frames (replay's synthetic packets, the tests).
//!
//! This crate imports `smbwatch-core` and `smbwatch-common`, nothing of the
//! application.
pub mod dataplane;
pub mod packet;
pub mod replay;
