//! XDP programs for the benchmarks and the traffic generator, built into
//! an object of their own (`smbwatch-test`) so the shipped object carries
//! only the monitor. They touch no map.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// An empty program: the per-packet floor the benchmarks compare with.
#[xdp]
pub fn smbwatch_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Bounces every frame back out of its interface. The traffic generator
/// runs it with BPF_F_TEST_XDP_LIVE_FRAMES on one end of a veth pair to push
/// frames into the other end; it is never attached.
#[xdp]
pub fn smbwatch_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
