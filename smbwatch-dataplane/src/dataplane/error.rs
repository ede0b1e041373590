use std::path::PathBuf;

/// Errors of the data plane: loading, attaching, pinning, reading maps.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// Built with AYA_BUILD_SKIP=1: there is no program to load.
    #[error("this smbwatch binary was built without its XDP program (AYA_BUILD_SKIP=1); rebuild without it")]
    EmptyObject,
    /// Port list unusable.
    #[error("monitored ports {ports:?}: give 1 to 4 ports, each 1-65535")]
    Ports {
        /// The ports given.
        ports: Vec<u16>,
    },
    /// `[dataplane] activity_epoch` out of range.
    #[error("activity epoch {}: give 1 min to 24 h", humantime::format_duration(*epoch))]
    ActivityEpoch {
        /// The epoch given.
        epoch: std::time::Duration,
    },
    /// `[dataplane.sampling]` value out of range.
    #[error("{0}")]
    Sampling(#[from] smbwatch_core::settings::Invalid),
    /// The program's clock could not be calibrated.
    #[error(transparent)]
    Clock(#[from] super::ClockError),
    /// The kernel refused the object (verifier, map creation, permissions).
    #[error("loading the XDP program into the kernel failed")]
    Load {
        /// The loader's error.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// The object lacks the program (a build mix-up).
    #[error("the embedded object has no XDP program named `{name}`")]
    MissingProgram {
        /// The program's name.
        name: String,
    },
    /// The object lacks a map (a build mix-up).
    #[error("the embedded object has no map named `{name}`")]
    MissingMap {
        /// The map name.
        name: &'static str,
    },
    /// A program operation failed.
    #[error("XDP program: {op} failed")]
    Program {
        /// What was done.
        op: &'static str,
        /// Why it failed.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map operation failed.
    #[error("map {name}: {op} failed")]
    Map {
        /// What was done.
        op: &'static str,
        /// Which map.
        name: &'static str,
        /// Why it failed.
        #[source]
        source: aya::maps::MapError,
    },
    /// No such interface in this network namespace.
    #[error("interface {iface}: no such interface in this network namespace")]
    UnknownInterface {
        /// The name given.
        iface: String,
    },
    /// The interface exists but is administratively down.
    #[error("interface {iface} is down; bring it up first (ip link set dev {iface} up)")]
    InterfaceDown {
        /// The name given.
        iface: String,
    },
    /// Someone else's XDP program is attached.
    #[error("interface {iface} already has an XDP program attached ({existing}); smbwatch will not replace it unless run with --force")]
    AlreadyAttached {
        /// The interface.
        iface: String,
        /// What is attached, as `ip link` describes it.
        existing: String,
    },
    /// Attaching failed in the requested mode.
    #[error("attaching to {iface} in {mode} mode failed")]
    Attach {
        /// The interface.
        iface: String,
        /// The mode tried.
        mode: &'static str,
        /// Why it failed.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A file-system or syscall step failed.
    #[error("{op} {path}")]
    Io {
        /// What was done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Pinning failed.
    #[error("pinning {name} at {path} failed")]
    Pin {
        /// What was pinned.
        name: String,
        /// Where.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: aya::pin::PinError,
    },
    /// The pin directory is not on a BPF file system and mounting one failed.
    #[error("{path} is not on a BPF file system (bpffs) and mounting one there failed: {reason}. Mount it with `mount -t bpf bpf /sys/fs/bpf`, or run under `nsenter --net=...` rather than `ip netns exec` (which remounts /sys)")]
    NotBpffs {
        /// The directory.
        path: PathBuf,
        /// Why mounting failed.
        reason: String,
    },
    /// Another daemon owns the pin directory.
    #[error("another smbwatch (pid {pid}) is running with pin directory {dir}; give this one its own --pin-dir")]
    PinDirInUse {
        /// The directory.
        dir: PathBuf,
        /// The owner's pid, as its lock file says.
        pid: String,
    },
    /// `status` may not look into the pin directory (a non-root user: the
    /// bpffs is mode 0700 root, as systemd mounts it).
    #[error("cannot look for pins in {dir}: {source}; the BPF file system is root's alone (systemd mounts /sys/fs/bpf mode 0700), so run this as root (e.g. sudo smbwatch status)")]
    PinsUnreadable {
        /// The directory.
        dir: PathBuf,
        /// Why (EACCES, as a rule).
        #[source]
        source: std::io::Error,
    },
    /// `status` found no pins.
    #[error("no running smbwatch found: nothing pinned under {dir} (is the daemon running, with this --pin-dir?)")]
    NotRunning {
        /// The directory.
        dir: PathBuf,
    },
    /// Missing privileges.
    #[error("smbwatch needs {missing} to load and attach XDP programs; run it as root or grant these capabilities (systemd: AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_NET_ADMIN; by hand: setpriv --inh-caps=+bpf,+perfmon,+net_admin --ambient-caps=+bpf,+perfmon,+net_admin)")]
    Privileges {
        /// The missing capabilities, comma-separated.
        missing: String,
    },
    /// An external command failed (`ip`).
    #[error("running `{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its stderr or the spawn error.
        detail: String,
    },
}
