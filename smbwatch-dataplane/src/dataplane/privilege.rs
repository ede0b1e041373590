//! Capability checks, so a missing privilege is named before the kernel says EPERM.

use super::DataplaneError;

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn effective() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Names of the capabilities this process lacks for loading and attaching
/// XDP (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN; and CAP_NET_ADMIN).
pub fn missing_capabilities() -> Vec<&'static str> {
    missing_from(effective())
}

fn missing_from(caps: u64) -> Vec<&'static str> {
    let has = |c: u32| caps & (1u64 << c) != 0;
    let mut missing = Vec::new();
    if !has(CAP_SYS_ADMIN) {
        if !has(CAP_BPF) {
            missing.push("CAP_BPF");
        }
        if !has(CAP_PERFMON) {
            missing.push("CAP_PERFMON");
        }
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    missing
}

/// Fails with the missing capabilities named; then raises the locked-memory
/// limit where it still matters.
pub fn require() -> Result<(), DataplaneError> {
    let missing = missing_capabilities();
    if !missing.is_empty() {
        return Err(DataplaneError::Privileges {
            missing: missing.join(", "),
        });
    }
    raise_memlock();
    Ok(())
}

/// Kernels before 5.11 charge BPF maps to `RLIMIT_MEMLOCK` (often 64 KiB
/// or 8 MiB); later ones charge the memory cgroup and ignore it. Raising
/// the soft limit to the hard one needs no capability; beyond the hard
/// limit needs CAP_SYS_RESOURCE, which the unit does not grant (systemd's
/// `LimitMEMLOCK=` sets both), so a failure is only noted.
fn raise_memlock() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit buffer.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: valid rlimit; raising soft up to hard is always allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
            tracing::debug!("could not raise RLIMIT_MEMLOCK to its hard limit");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_missing() {
        assert_eq!(
            missing_from(0),
            vec!["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]
        );
        assert_eq!(missing_from(1 << CAP_SYS_ADMIN), vec!["CAP_NET_ADMIN"]);
        let full = (1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_NET_ADMIN);
        assert!(missing_from(full).is_empty());
    }
}
