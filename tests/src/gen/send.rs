//! Transmitting a plan: the XDP_TX program's live frames, or the AF_PACKET
//! socket they fall back to, paced, and what a send did.

use std::{
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
    str::FromStr,
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use smbwatch::dataplane::{test_programs::TestPrograms, testrun};
use smbwatch_common::{FLOOR_PROGRAM_NAME, TX_PROGRAM_NAME};

use super::{attach_xdp, enter_netns, ifindex, in_netns, thread_cpu, Plan};

/// How fast to send.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// As fast as the kernel takes the calls.
    Max,
    /// About this many packets per second (sleeps between calls).
    Pps(u64),
}

/// What a send did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sent {
    /// Packets handed to the kernel.
    pub packets: u64,
    /// Calls made.
    pub calls: u64,
    /// Wall time of the sending loop.
    pub elapsed: Duration,
    /// CPU time of the sending thread (on this kernel it includes the
    /// receive softirq, which runs on the sender's CPU when its bottom
    /// halves are re-enabled).
    pub cpu: Duration,
    /// How the frames were put on the wire.
    pub method: Method,
    /// AF_PACKET sends the veth refused for a moment (ENOBUFS: the peer's
    /// queue was full) and that were sent again; 0 with live frames.
    pub retried: u64,
}

impl Sent {
    /// Packets per second.
    pub fn pps(&self) -> f64 {
        self.packets as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Environment variable that forces the generator's [`Method`]: `live` or
/// `af_packet` (unset: live frames, falling back to AF_PACKET when the
/// kernel refuses them).
pub const METHOD_ENV: &str = "SMBWATCH_GEN_METHOD";

/// How the generator puts frames on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    /// `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES` of an XDP_TX
    /// program (the receiver needs an XDP program attached).
    #[default]
    LiveFrames,
    /// An AF_PACKET raw socket, `sendmmsg` batches (the ordinary transmit path).
    PacketSocket,
}

impl Method {
    /// The name [`METHOD_ENV`] takes.
    pub fn name(self) -> &'static str {
        match self {
            Method::LiveFrames => "live",
            Method::PacketSocket => "af_packet",
        }
    }

    /// What it is, for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Method::LiveFrames => "live XDP_TX test runs (BPF_F_TEST_XDP_LIVE_FRAMES)",
            Method::PacketSocket => "AF_PACKET raw socket (sendmmsg)",
        }
    }

    /// The method [`METHOD_ENV`] forces, if any; an unknown value is an error
    /// naming the variable.
    pub fn forced() -> Result<Option<Self>> {
        match std::env::var(METHOD_ENV) {
            Err(std::env::VarError::NotPresent) => Ok(None),
            Ok(v) if v.is_empty() => Ok(None),
            Ok(v) => v
                .parse()
                .map(Some)
                .map_err(|e| anyhow::anyhow!("{METHOD_ENV}: {e}")),
            Err(e) => bail!("{METHOD_ENV}: {e}"),
        }
    }
}

impl FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [Method::LiveFrames, Method::PacketSocket]
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("{s:?} is not a generator method; methods: live, af_packet"))
    }
}

/// The XDP_TX program, loaded and ready to transmit plans.
pub struct Generator {
    programs: TestPrograms,
    tx: RawFd,
    floor: RawFd,
    anchor: Option<OwnedFd>,
    /// `batch_size` of the live test runs (frames per kernel batch, ≤ 256),
    /// and messages per `sendmmsg` with AF_PACKET.
    pub batch: u32,
    /// Decided by [`METHOD_ENV`] or by the first send (live frames unless the
    /// kernel refuses them).
    method: OnceLock<Method>,
}

impl Generator {
    /// Loads the helper programs from the test-only object.
    pub fn new() -> Result<Self> {
        let mut programs = TestPrograms::load()
            .context("loading the test XDP object (is it built with its eBPF programs?)")?;
        let tx = programs.fd(TX_PROGRAM_NAME)?.as_raw_fd();
        let floor = programs.fd(FLOOR_PROGRAM_NAME)?.as_raw_fd();
        let method = OnceLock::new();
        if let Some(m) = Method::forced()? {
            let _ = method.set(m);
        }
        Ok(Self {
            programs,
            tx,
            floor,
            anchor: None,
            batch: 64,
            method,
        })
    }

    /// Makes every later send use `method` (what [`METHOD_ENV`] does for a
    /// whole process; a test sets it on its own generator).
    pub fn set_method(&mut self, method: Method) {
        self.method = OnceLock::from(method);
    }

    /// The method sends use: forced by [`METHOD_ENV`] or found by a send so
    /// far; `None` before the first send decided it.
    pub fn method(&self) -> Option<Method> {
        self.method.get().copied()
    }

    /// Attaches the XDP_TX program to a spare interface (down, receiving
    /// nothing) and keeps it there while the generator lives.
    ///
    /// Why: a test run with repeat > 1 registers its program with the
    /// kernel's XDP dispatcher for the duration of the call, and that
    /// update waits for an RCU grace period (about 30 ms here) unless the
    /// program is already registered, which attaching it does. Without the
    /// anchor every burst costs those 30 ms of idle wall time.
    pub fn anchor(&mut self, netns: &str, iface: &str) -> Result<()> {
        let tx = self.tx;
        let link = in_netns(netns, || {
            // SAFETY: `self.programs` keeps the program loaded.
            attach_xdp(unsafe { BorrowedFd::borrow_raw(tx) }, ifindex(iface)?)
        })?;
        self.anchor = Some(link);
        Ok(())
    }

    /// The empty XDP program, for attaching to a receiver as a baseline.
    pub fn floor(&self) -> BorrowedFd<'_> {
        let _ = &self.programs;
        // SAFETY: `self.programs` keeps the program loaded while self lives.
        unsafe { BorrowedFd::borrow_raw(self.floor) }
    }

    fn tx(&self) -> BorrowedFd<'_> {
        // SAFETY: as above.
        unsafe { BorrowedFd::borrow_raw(self.tx) }
    }

    /// Sends `plan` out of `iface` in the namespace at `netns` (a path such
    /// as `/var/run/netns/NAME`), from a thread that enters it. The first
    /// send tries live frames unless a method is forced; if the kernel
    /// refuses them (EPERM, EOPNOTSUPP) it says so on stderr and this send
    /// and every later one use an AF_PACKET socket.
    pub fn send(&self, netns: &str, iface: &str, plan: &Plan, pace: Pace) -> Result<Sent> {
        std::thread::scope(|s| {
            s.spawn(|| -> Result<Sent> {
                enter_netns(netns)?;
                let index = ifindex(iface)?;
                let cpu0 = thread_cpu();
                let start = Instant::now();
                let mut sent = Sent::default();
                let mut calls = plan.iter().peekable();
                if self.method().is_none() {
                    // Probe with the plan's first call: it is sent either way.
                    if let Some(&(frame, repeat)) = calls.peek() {
                        match testrun::run_live(self.tx(), frame, repeat, index, self.batch) {
                            Ok(_) => {
                                let _ = self.method.set(Method::LiveFrames);
                                sent.packets += u64::from(repeat);
                                sent.calls += 1;
                                calls.next();
                            }
                            Err(e)
                                if matches!(
                                    e.raw_os_error(),
                                    Some(libc::EPERM | libc::EOPNOTSUPP)
                                ) =>
                            {
                                eprintln!(
                                    "generator: the kernel refuses live frames ({e}); falling back to {}",
                                    Method::PacketSocket.describe()
                                );
                                let _ = self.method.set(Method::PacketSocket);
                            }
                            Err(e) => {
                                return Err(e).with_context(|| {
                                    format!("live test run on {iface} (ifindex {index})")
                                })
                            }
                        }
                    }
                }
                sent.method = self.method().unwrap_or_default();
                let socket = match sent.method {
                    Method::PacketSocket => Some(PacketSocket::open(index)?),
                    Method::LiveFrames => None,
                };
                for (frame, repeat) in calls {
                    if let Pace::Pps(pps) = pace {
                        let due = Duration::from_secs_f64(sent.packets as f64 / pps as f64);
                        if let Some(wait) = due.checked_sub(start.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                    match &socket {
                        Some(sock) => {
                            sent.retried += sock
                                .send(frame, repeat, self.batch)
                                .with_context(|| format!("AF_PACKET send on {iface}"))?;
                        }
                        None => {
                            testrun::run_live(self.tx(), frame, repeat, index, self.batch)
                                .with_context(|| {
                                    format!("live test run on {iface} (ifindex {index})")
                                })?;
                        }
                    }
                    sent.packets += u64::from(repeat);
                    sent.calls += 1;
                }
                sent.elapsed = start.elapsed();
                sent.cpu = thread_cpu() - cpu0;
                Ok(sent)
            })
            .join()
            .expect("generator thread panicked")
        })
    }
}

/// An AF_PACKET raw socket bound to one interface of the calling thread's
/// network namespace: frames go out whole, Ethernet header included, through
/// the interface's ordinary transmit path (no qdisc: `PACKET_QDISC_BYPASS`).
/// Sends only; protocol 0 receives nothing.
pub struct PacketSocket {
    fd: OwnedFd,
    addr: libc::sockaddr_ll,
}

impl PacketSocket {
    /// Opens a socket sending out of interface `ifindex`.
    pub fn open(ifindex: u32) -> Result<Self> {
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
        }
        // SAFETY: fd was just opened and is ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        const PACKET_QDISC_BYPASS: libc::c_int = 20;
        let one: libc::c_int = 1;
        // SAFETY: an int option of the size given. Failing only costs the qdisc.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_QDISC_BYPASS,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        Ok(Self { fd, addr })
    }

    /// Sends `frame` `repeat` times, up to `batch` per `sendmmsg`. When the
    /// interface refuses a frame for a moment (ENOBUFS, EAGAIN: the veth
    /// peer's queue is full) it waits briefly and sends that frame again;
    /// returns how many such retries there were.
    pub fn send(&self, frame: &[u8], repeat: u32, batch: u32) -> Result<u64> {
        let batch = batch.clamp(1, 1024) as usize;
        let mut iov = libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        };
        let iov_ptr: *mut libc::iovec = &mut iov;
        let msgs: Vec<libc::mmsghdr> = (0..batch.min(repeat as usize))
            .map(|_| {
                // SAFETY: mmsghdr is plain data; zero is a valid start.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = (&self.addr as *const libc::sockaddr_ll) as *mut libc::c_void;
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                m.msg_hdr.msg_iov = iov_ptr;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut msgs = msgs;
        let mut left = repeat as usize;
        let mut retried = 0u64;
        // A veth whose peer never drains would make this spin: give up
        // after a second of consecutive refusals.
        let mut refused_in_a_row = 0u32;
        while left > 0 {
            let n = left.min(msgs.len());
            // SAFETY: n initialised headers pointing at `iov`, `frame` and
            // `self.addr`, all alive for the call.
            let rc = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::ENOBUFS | libc::EAGAIN) if refused_in_a_row < 20_000 => {
                        retried += 1;
                        refused_in_a_row += 1;
                        std::thread::sleep(Duration::from_micros(50));
                        continue;
                    }
                    _ => return Err(e).context("sendmmsg on an AF_PACKET socket"),
                }
            }
            refused_in_a_row = 0;
            left -= rc as usize;
        }
        Ok(retried)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn method_names_round_trip() {
        for m in [Method::LiveFrames, Method::PacketSocket] {
            assert_eq!(m.name().parse::<Method>(), Ok(m));
        }
        assert!("sendmmsg"
            .parse::<Method>()
            .unwrap_err()
            .contains("live, af_packet"));
    }
}
