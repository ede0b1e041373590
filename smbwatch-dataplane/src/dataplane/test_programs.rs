//! The test-only eBPF object (`smbwatch-test`): the empty program the
//! benchmarks measure their floor with and the `XDP_TX` program the traffic
//! generator pushes frames with. Built beside the monitor's object and
//! embedded only with the `test-programs` feature, so the shipped object
//! and binary carry neither.

use std::os::fd::{AsFd as _, BorrowedFd};

use aya::{Ebpf, EbpfLoader};

use super::{program_named, DataplaneError};

/// The compiled test object, embedded at build time.
pub static TEST_EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/smbwatch-test"));

/// The test object's programs, loaded on demand.
pub struct TestPrograms {
    ebpf: Ebpf,
}

impl TestPrograms {
    /// Loads the object (its programs are loaded by [`TestPrograms::fd`]).
    pub fn load() -> Result<Self, DataplaneError> {
        if TEST_EBPF_OBJECT.is_empty() {
            return Err(DataplaneError::EmptyObject);
        }
        let ebpf =
            EbpfLoader::new()
                .load(TEST_EBPF_OBJECT)
                .map_err(|source| DataplaneError::Load {
                    source: Box::new(source),
                })?;
        Ok(Self { ebpf })
    }

    /// The program `name` ([`smbwatch_common::FLOOR_PROGRAM_NAME`],
    /// [`smbwatch_common::TX_PROGRAM_NAME`]), loaded into the kernel on
    /// first use.
    pub fn fd(&mut self, name: &'static str) -> Result<BorrowedFd<'_>, DataplaneError> {
        let prog = program_named(&mut self.ebpf, name)?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|source| DataplaneError::Program { op: "load", source })?;
        }
        let fd = prog
            .fd()
            .map_err(|source| DataplaneError::Program { op: "fd", source })?;
        Ok(fd.as_fd())
    }
}
