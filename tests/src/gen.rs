//! Synthetic SMB traffic into a veth inside lab namespaces.
//!
//! Frames are built with [`smbwatch::packet::Segment`] and pushed with the
//! kernel's xdp-trafficgen method: `BPF_PROG_TEST_RUN` with
//! `BPF_F_TEST_XDP_LIVE_FRAMES` runs an XDP program that returns `XDP_TX`
//! "as if received" on one end of a veth pair, so every run really
//! transmits the frame into the other end. Each call sends one frame
//! `repeat` times (a burst); a plan is a list of such calls.
//!
//! Some kernels and sandboxes refuse live frames (EPERM: the capability
//! bounding set lacks CAP_SYS_RESOURCE). The generator then falls back to an
//! AF_PACKET socket of its own (`sendmmsg`, [`PacketSocket`]), which puts
//! the same frames on the same veth through the ordinary transmit path, and
//! says so: every [`Sent`] names the [`Method`] that sent it. Setting
//! [`METHOD_ENV`] forces a method, so the fallback is exercised on machines
//! that allow live frames too.
//!
//! The receiving end must have an XDP program attached (veth only takes XDP
//! frames then): smbwatch's, or the empty program for baselines
//! ([`attach_xdp`]).
//!
//! Addresses: sources 10.0.0.0/8, destinations 198.18.0.0/15 (RFC 2544
//! benchmarking), IPv6 in 2001:db8::/32. The frames exist only inside the
//! lab's namespaces: the generator's namespace has nothing but its veth, and
//! the receiver has no route anywhere.
//!
//! One job a file: `plan` (what to send), `send` (transmitting it), `lab`
//! (the namespaces, interfaces and attachments it runs in).

mod lab;
mod plan;
mod send;

pub use lab::{
    attach_xdp, enter_netns, ifindex, in_netns, thread_cpu, GenLab, ANCHOR_IF, RX_IF, TX_IF,
};
pub use plan::{dst_v4, dst_v6, src_v4, src_v6, src_vlan, Expected, Kind, Mix, Plan, Spec};
pub use send::{Generator, Method, Pace, PacketSocket, Sent, METHOD_ENV};

/// The monitored port the generator targets.
pub const SMB_PORT: u16 = 445;
/// VLAN id of tagged frames.
pub const VLAN_ID: u16 = 100;
/// MAC address every generated frame is sent to (see
/// [`smbwatch::packet::Segment::frame`]); the receiving veth takes it, so
/// the stack sees the frames as its own.
pub const RX_MAC: &str = "02:00:00:00:00:02";
