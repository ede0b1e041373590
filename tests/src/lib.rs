//! Helpers for the kernel and lab tests.

pub mod bench;
pub mod daemon;
pub mod gen;
pub mod netns;
pub mod rsyslog;
pub mod samba;

/// Kernel and lab tests need root; say so plainly instead of failing on EPERM.
pub fn require_root() {
    // SAFETY: geteuid never fails.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test loads XDP programs and creates network namespaces: run it as root (cargo xtask test does)");
    }
}
