//! `BPF_PROG_TEST_RUN` for XDP programs.
//!
//! aya 0.14 has no public test-run call, so this issues bpf(2) with the
//! `bpf_attr.test` layout of `linux/bpf.h`. Used by the kernel tests, replay,
//! the benchmarks and the traffic generator (live frames).

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd},
};

use smbwatch_common::ReplayMeta;

const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// `BPF_F_TEST_XDP_LIVE_FRAMES`: frames really go where the program sends them.
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// `bpf_attr.test` (linux/bpf.h), padded with zeros the kernel checks.
#[repr(C)]
#[derive(Default)]
struct TestAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// `struct xdp_md` as the test-run context.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// The outcome of one test run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (an `xdp_action`).
    pub retval: u32,
    /// Mean nanoseconds per run, as the kernel measured it.
    pub duration_ns: u32,
}

fn bpf_test_run(attr: &mut TestAttr) -> io::Result<()> {
    // SAFETY: attr is a valid, fully initialised bpf_attr prefix of the size given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            attr as *mut TestAttr,
            std::mem::size_of::<TestAttr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// One `BPF_PROG_TEST_RUN` of `prog` on `data`, with an optional context.
fn test_run(
    prog: BorrowedFd<'_>,
    data: &[u8],
    repeat: u32,
    ctx: Option<&mut XdpMd>,
    flags: u32,
    batch_size: u32,
) -> io::Result<TestRun> {
    let (ctx_size_in, ctx_in) = match ctx {
        Some(c) => (std::mem::size_of::<XdpMd>() as u32, c as *mut XdpMd as u64),
        None => (0, 0),
    };
    let mut attr = TestAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: data.len() as u32,
        data_in: data.as_ptr() as u64,
        repeat,
        ctx_size_in,
        ctx_in,
        flags,
        batch_size,
        ..Default::default()
    };
    bpf_test_run(&mut attr)?;
    Ok(TestRun {
        retval: attr.retval,
        duration_ns: attr.duration,
    })
}

/// Runs `prog` on `frame` `repeat` times (0 counts as 1). The kernel rejects
/// frames shorter than an Ethernet header (EINVAL).
pub fn run(prog: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> io::Result<TestRun> {
    test_run(prog, frame, repeat, None, 0, 0)
}

/// Runs `prog` once on `frame` with `ingress` as XDP metadata in front of
/// it (and time 0): how a test tells the program (loaded with
/// [`super::LoadOptions::replay`]) which interface a packet came in on.
pub fn run_with_ingress(prog: BorrowedFd<'_>, frame: &[u8], ingress: u32) -> io::Result<TestRun> {
    run_with_meta(
        prog,
        frame,
        &ReplayMeta {
            ingress,
            ..Default::default()
        },
    )
}

/// Runs `prog` once on `frame` with `meta` as XDP metadata in front of it:
/// how replay tells the program (loaded with [`super::LoadOptions::replay`])
/// which capture interface a packet came in on, and when.
pub fn run_with_meta(prog: BorrowedFd<'_>, frame: &[u8], meta: &ReplayMeta) -> io::Result<TestRun> {
    let mut buf = Vec::with_capacity(frame.len() + std::mem::size_of::<ReplayMeta>());
    buf.extend_from_slice(&meta.ingress.to_ne_bytes());
    buf.extend_from_slice(&meta._pad.to_ne_bytes());
    buf.extend_from_slice(&meta.ts_ns.to_ne_bytes());
    let data = buf.len() as u32;
    buf.extend_from_slice(frame);
    // The kernel takes ctx.data bytes of the input as metadata (a multiple
    // of 4, at most 32).
    let mut ctx = XdpMd {
        data,
        data_end: buf.len() as u32,
        ..Default::default()
    };
    test_run(prog, &buf, 1, Some(&mut ctx), 0, 0)
}

/// Runs `prog` with live frames: `frame` is injected `repeat` times as if
/// received on `ifindex`, and whatever the program returns (XDP_TX,
/// XDP_REDIRECT) really happens. The generator uses an XDP_TX program on one
/// end of a veth pair to push frames into the other end.
pub fn run_live(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    repeat: u32,
    ifindex: u32,
    batch_size: u32,
) -> io::Result<TestRun> {
    let mut ctx = XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex: ifindex,
        ..Default::default()
    };
    test_run(
        prog,
        frame,
        repeat,
        Some(&mut ctx),
        BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size,
    )
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_XDP: u32 = 6;

/// The `bpf_attr` prefix of `BPF_PROG_LOAD` (linux/bpf.h) up to
/// `prog_name`, padded with zeros the kernel checks.
#[repr(C)]
#[derive(Default)]
struct LoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    _rest: [u64; 8],
}

/// An XDP program that returns `XDP_PASS` and touches nothing (two
/// instructions: `r0 = 2; exit`), loaded without any object: what replay
/// measures the kernel's longest test-run frame with, so that the real
/// program's counters stay clean. The benchmarks' floor and the traffic
/// generator's `XDP_TX` program live in the test-only object instead
/// ([`super::test_programs`]); the shipped object carries neither.
pub struct PassProgram(OwnedFd);

impl PassProgram {
    /// Loads it.
    pub fn load() -> io::Result<Self> {
        // mov64 r0, XDP_PASS (2); exit.
        let insns: [u64; 2] = [
            u64::from_le_bytes([0xb7, 0, 0, 0, 2, 0, 0, 0]),
            u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
        ];
        load_xdp(&insns, b"smbwatch_pass").map(Self)
    }

    /// The program, for [`run`].
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Loads an XDP program of raw instructions (no object, no maps) named
/// `name` (at most 15 bytes).
pub(crate) fn load_xdp(insns: &[u64], name: &[u8]) -> io::Result<OwnedFd> {
    let license = b"GPL\0";
    let mut prog_name = [0u8; 16];
    prog_name[..name.len().min(15)].copy_from_slice(&name[..name.len().min(15)]);
    let attr = LoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        ..Default::default()
    };
    // SAFETY: attr is a valid, fully initialised bpf_attr prefix of the
    // size given; the pointers in it outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const LoadAttr,
            std::mem::size_of::<LoadAttr>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a successful BPF_PROG_LOAD returns a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Runs `prog` once on `frame` and copies the frame as the program left it
/// into `out` (its length): how a program hands back more than its u32
/// return value.
pub(crate) fn run_out(prog: BorrowedFd<'_>, frame: &[u8], out: &mut [u8]) -> io::Result<()> {
    let mut attr = TestAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_size_out: out.len() as u32,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    bpf_test_run(&mut attr)
}

#[cfg(test)]
mod tests {
    #[test]
    fn attr_layout_matches_linux_bpf_h() {
        // bpf_attr.test is 76 bytes up to batch_size; we pad to 80.
        assert_eq!(std::mem::size_of::<super::TestAttr>(), 80);
        assert_eq!(std::mem::size_of::<super::XdpMd>(), 24);
        // bpf_attr up to prog_name is 64 bytes; the zeros after it cover
        // the fields this load leaves unset.
        assert_eq!(std::mem::offset_of!(super::LoadAttr, prog_name), 48);
    }
}
