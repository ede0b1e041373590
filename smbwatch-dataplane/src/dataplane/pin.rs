//! Interfaces and bpffs pins.

use std::{
    ffi::CString,
    fs::{self, File},
    io::Write as _,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
};

use aya::Ebpf;
use smbwatch_common::{PAIRS_MAP, PROGRAM_NAME, SOURCES_MAP, STATS_MAP};

use super::DataplaneError;

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> DataplaneError {
    let path = path.into();
    move |source| DataplaneError::Io { op, path, source }
}

/// The index of `iface` in this network namespace; fails if it is unknown or down.
pub(crate) fn interface_index(iface: &str) -> Result<u32, DataplaneError> {
    let unknown = || DataplaneError::UnknownInterface {
        iface: iface.to_owned(),
    };
    let name = CString::new(iface).map_err(|_| unknown())?;
    if iface.len() >= libc::IFNAMSIZ {
        return Err(unknown());
    }
    // SAFETY: NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(unknown());
    }
    // SIOCGIFFLAGS on a socket asks this network namespace; /sys/class/net
    // may belong to another one under `nsenter --net`.
    // SAFETY: plain socket(2).
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io_err("socket for", iface)(std::io::Error::last_os_error()));
    }
    // SAFETY: ifreq is plain data; the name fits (checked above).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *d = *s as libc::c_char;
    }
    // SAFETY: valid socket and ifreq.
    let rc = unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) };
    let err = std::io::Error::last_os_error();
    // SAFETY: we own sock.
    unsafe { libc::close(sock) };
    if rc < 0 {
        return Err(io_err("reading flags of interface", iface)(err));
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    let flags = unsafe { req.ifr_ifru.ifru_flags } as i32;
    if flags & libc::IFF_UP == 0 {
        return Err(DataplaneError::InterfaceDown {
            iface: iface.to_owned(),
        });
    }
    Ok(index)
}

fn ip(args: &[&str]) -> Result<String, DataplaneError> {
    let command = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| DataplaneError::Command {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(DataplaneError::Command {
            command,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What XDP program is attached to `iface`, as "prog id N, mode M", if any.
pub(crate) fn attached_xdp(iface: &str) -> Result<Option<String>, DataplaneError> {
    let json = ip(&["-d", "-j", "link", "show", "dev", iface])?;
    let v: serde_json::Value =
        serde_json::from_str(&json).map_err(|e| DataplaneError::Command {
            command: format!("ip -d -j link show dev {iface}"),
            detail: format!("unexpected output: {e}"),
        })?;
    let Some(xdp) = v.get(0).and_then(|l| l.get("xdp")) else {
        return Ok(None);
    };
    let mode = xdp.get("mode").and_then(|m| m.as_u64()).unwrap_or(0);
    let id = xdp
        .pointer("/prog/id")
        .or_else(|| xdp.pointer("/attached/0/prog/id"))
        .and_then(|i| i.as_u64());
    let name = xdp
        .pointer("/prog/name")
        .or_else(|| xdp.pointer("/attached/0/prog/name"))
        .and_then(|n| n.as_str())
        .unwrap_or("?");
    let mode = match mode {
        1 => "native",
        2 => "skb",
        3 => "offload",
        _ => "multi",
    };
    Ok(Some(match id {
        Some(id) => format!("program {name} id {id}, {mode} mode"),
        None => format!("{mode} mode"),
    }))
}

/// Detaches whatever XDP program is attached to `iface` (for `--force`).
/// A program attached through a bpf_link (like smbwatch's own) cannot be
/// removed this way; the kernel then keeps refusing and the error says so.
pub(crate) fn detach_foreign(iface: &str) -> Result<(), DataplaneError> {
    for kind in ["xdpgeneric", "xdpdrv"] {
        // One of the two applies; the other is a no-op or an error we ignore
        // as long as the final check passes.
        let _ = ip(&["link", "set", "dev", iface, kind, "off"]);
    }
    match attached_xdp(iface)? {
        None => Ok(()),
        Some(existing) => Err(DataplaneError::Command {
            command: format!("ip link set dev {iface} xdp off"),
            detail: format!(
                "{existing} is still attached (held by a bpf_link of another process?)"
            ),
        }),
    }
}

/// Makes sure `dir`'s parent is on a bpffs, mounting one at
/// `/sys/fs/bpf` when that is where it should be and nothing is mounted.
pub fn ensure_bpffs(dir: &Path) -> Result<(), DataplaneError> {
    let root = dir
        .ancestors()
        .find(|p| p.exists() && !p.as_os_str().is_empty())
        .unwrap_or(Path::new("/"));
    if is_bpffs(root) {
        return Ok(());
    }
    let mount_point = Path::new("/sys/fs/bpf");
    if !dir.starts_with(mount_point) {
        return Err(DataplaneError::NotBpffs {
            path: dir.to_owned(),
            reason: "it is not under /sys/fs/bpf, so smbwatch does not mount anything for it"
                .into(),
        });
    }
    let target = CString::new("/sys/fs/bpf").expect("no NUL");
    let fstype = CString::new("bpf").expect("no NUL");
    // SAFETY: valid C strings; mount(2) with no data.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(DataplaneError::NotBpffs {
            path: dir.to_owned(),
            reason: std::io::Error::last_os_error().to_string(),
        });
    }
    tracing::info!("mounted a BPF file system at /sys/fs/bpf");
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: zeroed statfs is valid; statfs fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and buffer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// The pins of one running daemon. An advisory lock file in `/run/smbwatch`
/// tells a live owner from the leftovers of a crashed one; dropping the
/// value removes the pins.
pub struct PinDir {
    dir: PathBuf,
    pinned: Vec<PathBuf>,
    _lock: File,
    lock_path: PathBuf,
}

/// The file name of the pinned XDP program.
pub const PROGRAM_PIN: &str = "prog";

/// Every name smbwatch pins under `--pin-dir`: the maps `smbwatch status`
/// reads and the program. The one list for pinning and for removing a dead
/// daemon's leftovers; nothing else in the directory is ever touched.
pub const PINNED_NAMES: &[&str] = &[SOURCES_MAP, PAIRS_MAP, STATS_MAP, PROGRAM_PIN];

impl PinDir {
    pub(crate) fn create(dir: &Path, ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        ensure_bpffs(dir)?;
        // Created before locking: the lock is keyed by what the directory
        // is (device and inode), so the same directory reached through a
        // bind mount or a symbolic link is one directory.
        fs::create_dir_all(dir).map_err(io_err("creating pin directory", dir))?;
        let (lock, lock_path) = lock(dir)?;
        // We hold the lock, so our names here belong to a dead daemon.
        let old_layout = plain_array_tables(dir);
        if !old_layout.is_empty() {
            tracing::info!(
                dir = %dir.display(),
                tables = ?old_layout,
                "pins of an earlier smbwatch found: these tables were plain arrays and are now arrays of arrays; their pins are removed and the tables created anew"
            );
        }
        let stale = remove_own_pins(dir);
        if !stale.is_empty() {
            tracing::warn!(dir = %dir.display(), ?stale, "removed stale pins left by an earlier smbwatch");
        }
        let mut me = Self {
            dir: dir.to_owned(),
            pinned: Vec::new(),
            _lock: lock,
            lock_path,
        };
        for &name in PINNED_NAMES {
            let path = dir.join(name);
            let pinned = if name == PROGRAM_PIN {
                super::program_named(ebpf, PROGRAM_NAME)?.pin(&path)
            } else {
                let map = ebpf.map(name).ok_or(DataplaneError::MissingMap { name })?;
                map.pin(&path)
            };
            pinned.map_err(|source| DataplaneError::Pin {
                name: name.to_owned(),
                path: path.clone(),
                source,
            })?;
            me.pinned.push(path);
        }
        Ok(me)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        for p in &self.pinned {
            let _ = fs::remove_file(p);
        }
        let _ = fs::remove_dir(&self.dir);
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// Which of the pinned tables in `dir` have the layout of versions before
/// 2026-12-06 (a plain array where an array of arrays is now pinned).
fn plain_array_tables(dir: &Path) -> Vec<&'static str> {
    [SOURCES_MAP]
        .into_iter()
        .filter(|name| {
            aya::maps::MapData::from_pin(dir.join(name))
                .and_then(aya::maps::Map::from_map_data)
                .is_ok_and(|m| matches!(m, aya::maps::Map::Array(_)))
        })
        .collect()
}

/// Removes smbwatch's own pins ([`PINNED_NAMES`]) from `dir`; other tools'
/// files there stay. Returns the names removed.
pub(crate) fn remove_own_pins(dir: &Path) -> Vec<&'static str> {
    PINNED_NAMES
        .iter()
        .copied()
        .filter(|name| fs::remove_file(dir.join(name)).is_ok())
        .collect()
}

/// Where lock files go: systemd's `RuntimeDirectory=` (`$RUNTIME_DIRECTORY`,
/// writable by the service user) when set, else `/run/smbwatch`.
fn lock_dir() -> PathBuf {
    std::env::var_os("RUNTIME_DIRECTORY")
        .and_then(|v| {
            // Several directories are separated by ':'; the first is ours.
            let first = v.to_string_lossy().split(':').next()?.to_owned();
            (!first.is_empty()).then(|| PathBuf::from(first))
        })
        .unwrap_or_else(|| PathBuf::from("/run/smbwatch"))
}

/// The lock file's name for the existing directory `dir`: its device and
/// inode, never its path (`/sys/fs/bpf/smbwatch` and the service's bind
/// mount of it at `/run/smbwatch/bpf` are one directory and one lock).
fn lock_name(dir: &Path) -> Result<String, DataplaneError> {
    use std::os::unix::fs::MetadataExt as _;
    let m = fs::metadata(dir).map_err(io_err("reading pin directory", dir))?;
    Ok(format!("pin-{:x}-{}.lock", m.dev(), m.ino()))
}

fn lock(dir: &Path) -> Result<(File, PathBuf), DataplaneError> {
    let run = &lock_dir();
    fs::create_dir_all(run).map_err(io_err("creating", run))?;
    let path = run.join(lock_name(dir)?);
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_err("opening lock file", &path))?;
    // SAFETY: valid fd.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let pid = fs::read_to_string(&path)
            .unwrap_or_default()
            .trim()
            .to_owned();
        return Err(DataplaneError::PinDirInUse {
            dir: dir.to_owned(),
            pid,
        });
    }
    file.set_len(0)
        .map_err(io_err("truncating lock file", &path))?;
    writeln!(file, "{}", std::process::id()).map_err(io_err("writing lock file", &path))?;
    Ok((file, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two daemons reaching one directory by two paths (a symbolic link
    /// here; a bind mount in the service) take the same lock; another
    /// directory takes another.
    #[test]
    fn lock_follows_the_directory_not_its_path() {
        let base = std::env::temp_dir().join(format!("smbwatch-lock-id-{}", std::process::id()));
        let (real, other) = (base.join("real"), base.join("other"));
        fs::create_dir_all(&real).unwrap();
        fs::create_dir_all(&other).unwrap();
        let alias = base.join("alias");
        std::os::unix::fs::symlink(&real, &alias).unwrap();
        assert_eq!(lock_name(&real).unwrap(), lock_name(&alias).unwrap());
        assert_eq!(
            lock_name(&real).unwrap(),
            lock_name(&base.join("other/../real")).unwrap()
        );
        assert_ne!(lock_name(&real).unwrap(), lock_name(&other).unwrap());
        let err = lock_name(&base.join("absent")).unwrap_err().to_string();
        assert!(err.contains("absent"), "{err}");
        fs::remove_dir_all(&base).unwrap();
    }

    /// Taking over a dead daemon's directory used to delete every file in
    /// it, other tools' pins included.
    #[test]
    fn stale_cleanup_removes_only_our_names() {
        let dir = std::env::temp_dir().join(format!("smbwatch-pin-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        for name in PINNED_NAMES {
            fs::write(dir.join(name), b"").unwrap();
        }
        let foreign = ["cilium_calls", "SOURCES.bak", "prog2"];
        for name in foreign {
            fs::write(dir.join(name), b"").unwrap();
        }
        let removed = remove_own_pins(&dir);
        assert_eq!(removed, PINNED_NAMES);
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["SOURCES.bak", "cilium_calls", "prog2"]);
        assert!(remove_own_pins(&dir).is_empty(), "nothing of ours left");
        fs::remove_dir_all(&dir).unwrap();
        assert!(remove_own_pins(&dir).is_empty(), "absent directory");
    }
}
