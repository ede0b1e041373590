//! Replay's errors: what stops a replay, naming the capture and where in it.

use std::path::PathBuf;

use super::capture;
use crate::dataplane::DataplaneError;

/// Errors of replay. Everything read before an error was replayed and its
/// events delivered.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The capture cannot be opened or read.
    #[error("{path}: {op} failed")]
    Io {
        /// What was done.
        op: &'static str,
        /// The capture.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Not a capture at all.
    #[error("{path}: not a pcap or pcapng capture (it starts with bytes {magic:02x?})")]
    NotACapture {
        /// The file.
        path: PathBuf,
        /// Its first four bytes.
        magic: [u8; 4],
    },
    /// The capture's file header is invalid.
    #[error("{path}: invalid capture header: {detail}")]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A classic pcap of a link type replay cannot frame.
    #[error("{path}: {link} captures are not supported; replay reads Ethernet, Linux cooked (SLL, SLL2), raw IP and loopback captures", link = capture::linktype::name(*link))]
    LinkType {
        /// The file.
        path: PathBuf,
        /// The LINKTYPE_ value.
        link: u32,
    },
    /// A record's framing is damaged; nothing after it can be found.
    #[error("{path}: record {record} at byte {offset}: {detail}; replay stopped there (the {record_before} records before it were replayed)", record_before = record - 1)]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based number of the damaged record.
        record: u64,
        /// Its byte offset.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// Loading the program or reading its maps failed.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// The empty program that finds the longest frame a test run takes
    /// could not be loaded.
    #[error(
        "loading the empty XDP program that measures the kernel's test-run frame limit failed"
    )]
    Probe(#[source] std::io::Error),
    /// The kernel refused to run the program on a frame.
    #[error("{path}: record {record}: BPF_PROG_TEST_RUN of a {len}-byte frame failed")]
    TestRun {
        /// The file.
        path: PathBuf,
        /// 1-based record number.
        record: u64,
        /// Frame length.
        len: usize,
        /// The kernel's error.
        #[source]
        source: std::io::Error,
    },
}
