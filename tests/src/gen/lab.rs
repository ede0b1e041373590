//! The generator's lab: two namespaces joined by a veth, entering a
//! namespace from one thread, interface indexes, and attaching an XDP
//! program there as a BPF link.

use std::{
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use super::RX_MAC;
use crate::netns::{run, unique_tag, veth, NetNs};

/// Moves the calling thread into the network namespace at `path`
/// (`/var/run/netns/NAME`). Only this thread moves.
pub fn enter_netns(path: &str) -> Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns(2) on an open namespace file; affects this thread only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setns {path}"));
    }
    Ok(())
}

/// The index of `iface` in the calling thread's network namespace.
pub fn ifindex(iface: &str) -> Result<u32> {
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if i == 0 {
        bail!("no interface {iface} in this network namespace");
    }
    Ok(i)
}

/// Attaches `prog` (an XDP program fd) to interface `ifindex` of the calling
/// thread's network namespace in driver mode, as a BPF link: it stays
/// attached until the returned fd is closed.
pub fn attach_xdp(prog: BorrowedFd<'_>, ifindex: u32) -> Result<OwnedFd> {
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_XDP: u32 = 37;
    const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
    #[repr(C)]
    struct LinkCreate {
        prog_fd: u32,
        target_ifindex: u32,
        attach_type: u32,
        flags: u32,
        _rest: [u64; 4],
    }
    let mut attr = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: XDP_FLAGS_DRV_MODE,
        _rest: [0; 4],
    };
    // SAFETY: a zero-padded bpf_attr prefix of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            &mut attr as *mut LinkCreate,
            std::mem::size_of::<LinkCreate>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context(format!(
            "attaching XDP to ifindex {ifindex} (BPF_LINK_CREATE)"
        ));
    }
    // SAFETY: the kernel returned a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// CPU time the calling thread has used.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer; the clock always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Two namespaces joined by a veth: the generator transmits from `gen`'s
/// `gt0` into `rx`'s `gr0`. IPv6 is off in both, so nothing but generated
/// frames crosses the link; `gr0` has the MAC the frames are addressed to.
pub struct GenLab {
    /// Where the generator runs.
    pub gen: NetNs,
    /// Where the frames arrive.
    pub rx: NetNs,
}

/// Generator-side interface.
pub const TX_IF: &str = "gt0";
/// Receiving interface.
pub const RX_IF: &str = "gr0";
/// Spare interface in the generator namespace that keeps the XDP_TX program attached.
pub const ANCHOR_IF: &str = "gx0";

impl GenLab {
    /// Creates the pair.
    pub fn new() -> Result<Self> {
        let tag = unique_tag();
        let gen = NetNs::new(&format!("smbw-{tag}-gen"))?;
        let rx = NetNs::new(&format!("smbw-{tag}-rx"))?;
        for ns in [&gen, &rx] {
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        veth(&gen, TX_IF, &rx, RX_IF)?;
        rx.ip(&["link", "set", RX_IF, "address", RX_MAC])?;
        // A spare veth pair, left down, to hold the XDP_TX program attached
        // (see `Generator::anchor`).
        gen.ip(&[
            "link", "add", ANCHOR_IF, "type", "veth", "peer", "name", "gx1",
        ])?;
        Ok(Self { gen, rx })
    }

    /// `gr0`'s received and dropped packet counters (kernel interface
    /// statistics), to explain a gap between sent and counted.
    pub fn rx_counters(&self) -> Result<(u64, u64)> {
        let out = run(
            "ip",
            [
                "-n",
                self.rx.name(),
                "-s",
                "-j",
                "link",
                "show",
                "dev",
                RX_IF,
            ],
        )?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let rx = &v[0]["stats64"]["rx"];
        Ok((
            rx["packets"].as_u64().unwrap_or(0),
            rx["dropped"].as_u64().unwrap_or(0),
        ))
    }
}

/// Runs `f` on a thread inside the namespace at `netns`.
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(netns)?;
            f()
        })
        .join()
        .expect("namespace thread panicked")
    })
}
