//! A network-namespace lab: namespaces joined by veth pairs, cleaned up on
//! drop (also when a test panics), with names unique per run so a crashed
//! run never blocks the next one.
//!
//! Layout of [`Lab::new`] (documentation addresses only):
//!
//! ```text
//!  attacker  a0 ─── g0  gateway  g1 ─── s0  servers
//!  203.0.113.10/24      .1   198.51.100.1    198.51.100.{2..}/24
//!  2001:db8:a::10/64    ::1  2001:db8:b::1   2001:db8:b::{2..}/64
//! ```
//! The gateway forwards; traffic between attacker and servers crosses it.

use std::{
    ffi::OsStr,
    net::IpAddr,
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{bail, Context as _, Result};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique short tag for names: pid and a per-process counter.
pub fn unique_tag() -> String {
    format!(
        "{}{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command, failing with its stderr when it fails.
pub fn run<I, S>(program: &str, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {program} (is it installed? `cargo xtask setup`)"))?;
    if !out.status.success() {
        bail!(
            "{program} {:?} failed: {}",
            args,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// One network namespace, deleted on drop (with every interface in it).
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `name` with loopback up.
    pub fn new(name: &str) -> Result<Self> {
        run("ip", ["netns", "add", name])?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the namespace file, for `nsenter --net=`.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        let mut a = vec!["-n", &self.name];
        a.extend_from_slice(args);
        run("ip", a)
    }

    /// A command that will run inside the namespace. `nsenter --net` keeps
    /// the mount namespace, so /sys/fs/bpf stays the host's bpffs (unlike
    /// `ip netns exec`, which remounts /sys).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path()))
            .arg("--")
            .arg(program);
        c
    }

    /// Runs `program ARGS` inside the namespace and waits for it.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        let mut full = vec![
            format!("--net={}", self.path()),
            "--".into(),
            program.into(),
        ];
        full.extend(args.iter().map(|s| s.to_string()));
        run("nsenter", full)
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")])?;
        Ok(())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth ends, and with them the peers.
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Creates a veth pair with one end in each namespace, both up.
pub fn veth(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) -> Result<()> {
    run(
        "ip",
        [
            "link",
            "add",
            a_if,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            b.name(),
        ],
    )?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// The three-namespace router lab.
#[derive(Debug)]
pub struct Lab {
    /// Where scanners and clients run.
    pub attacker: NetNs,
    /// The router smbwatch watches (interfaces `g0` and `g1`).
    pub gateway: NetNs,
    /// Holds every server address.
    pub servers: NetNs,
    /// Server IPv4 addresses (198.51.100.2 onwards).
    pub server_v4: Vec<IpAddr>,
    /// Server IPv6 addresses (2001:db8:b::2 onwards).
    pub server_v6: Vec<IpAddr>,
}

/// A client host on its own gateway interface.
#[derive(Debug)]
pub struct Client {
    /// Its namespace.
    pub ns: NetNs,
    /// Its address.
    pub addr: IpAddr,
    /// The gateway interface facing it.
    pub gw_if: String,
}

/// The attacker's IPv4 address.
pub const ATTACKER_V4: &str = "203.0.113.10";
/// The attacker's IPv6 address.
pub const ATTACKER_V6: &str = "2001:db8:a::10";
/// Gateway interface facing the attacker.
pub const GW_ATTACKER_IF: &str = "g0";
/// Gateway interface facing the servers.
pub const GW_SERVERS_IF: &str = "g1";

impl Lab {
    /// Builds the lab with `servers` server addresses per family.
    pub fn new(servers: usize) -> Result<Self> {
        assert!((1..=250).contains(&servers), "1 to 250 servers");
        let tag = unique_tag();
        let attacker = NetNs::new(&format!("smbw-{tag}-att"))?;
        let gateway = NetNs::new(&format!("smbw-{tag}-gw"))?;
        let servers_ns = NetNs::new(&format!("smbw-{tag}-srv"))?;
        veth(&attacker, "a0", &gateway, GW_ATTACKER_IF)?;
        veth(&gateway, GW_SERVERS_IF, &servers_ns, "s0")?;
        // IPv6 DAD would delay addresses by a second or two; not needed here.
        for ns in [&attacker, &gateway, &servers_ns] {
            ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        }
        gateway.sysctl("net.ipv4.ip_forward", "1")?;
        gateway.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        attacker.ip(&["addr", "add", "203.0.113.10/24", "dev", "a0"])?;
        attacker.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:a::10/64",
            "dev",
            "a0",
            "nodad",
        ])?;
        attacker.ip(&["route", "add", "default", "via", "203.0.113.1"])?;
        attacker.ip(&["-6", "route", "add", "default", "via", "2001:db8:a::1"])?;
        gateway.ip(&["addr", "add", "203.0.113.1/24", "dev", GW_ATTACKER_IF])?;
        gateway.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:a::1/64",
            "dev",
            GW_ATTACKER_IF,
            "nodad",
        ])?;
        gateway.ip(&["addr", "add", "198.51.100.1/24", "dev", GW_SERVERS_IF])?;
        gateway.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:b::1/64",
            "dev",
            GW_SERVERS_IF,
            "nodad",
        ])?;
        let mut server_v4 = Vec::new();
        let mut server_v6 = Vec::new();
        for i in 0..servers {
            let v4 = format!("198.51.100.{}", i + 2);
            let v6 = format!("2001:db8:b::{:x}", i + 2);
            servers_ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "s0"])?;
            servers_ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                "s0",
                "nodad",
            ])?;
            server_v4.push(v4.parse()?);
            server_v6.push(v6.parse()?);
        }
        servers_ns.ip(&["route", "add", "default", "via", "198.51.100.1"])?;
        servers_ns.ip(&["-6", "route", "add", "default", "via", "2001:db8:b::1"])?;
        Ok(Self {
            attacker,
            gateway,
            servers: servers_ns,
            server_v4,
            server_v6,
        })
    }

    /// Adds `k` client namespaces, each on its own gateway interface
    /// (`gc0`, `gc1`, ...) in 192.0.2.0/24 (a /30 each), routed via the gateway.
    pub fn add_clients(&self, k: usize) -> Result<Vec<Client>> {
        assert!(k <= 60, "at most 60 clients fit 192.0.2.0/24 in /30s");
        let tag = unique_tag();
        let mut out = Vec::new();
        for i in 0..k {
            let ns = NetNs::new(&format!("smbw-{tag}-c{i}"))?;
            let gw_if = format!("gc{i}");
            veth(&ns, "c0", &self.gateway, &gw_if)?;
            let base = 4 * i as u8;
            let gw_addr = format!("192.0.2.{}", base + 1);
            let addr = format!("192.0.2.{}", base + 2);
            self.gateway
                .ip(&["addr", "add", &format!("{gw_addr}/30"), "dev", &gw_if])?;
            ns.ip(&["addr", "add", &format!("{addr}/30"), "dev", "c0"])?;
            ns.ip(&["route", "add", "default", "via", &gw_addr])?;
            out.push(Client {
                ns,
                addr: addr.parse()?,
                gw_if,
            });
        }
        Ok(out)
    }

    /// `nmap -n -Pn -sS -p445 EXTRA 198.51.100.2-31` from the attacker: a SYN
    /// sweep of 30 server addresses (as many as the lab has, or more).
    /// Returns how many hosts nmap reports a port state for.
    pub fn sweep_30(&self, extra: &[&str]) -> Result<usize> {
        let mut args = vec!["-n", "-Pn", "-sS", "-p445"];
        args.extend_from_slice(extra);
        args.push("198.51.100.2-31");
        let out = self.attacker.exec("nmap", &args)?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .matches("445/tcp")
            .count())
    }

    /// Waits until the attacker reaches `addr` through the gateway.
    pub fn wait_reachable(&self, addr: IpAddr) -> Result<()> {
        for _ in 0..50 {
            if self
                .attacker
                .exec("ping", &["-c", "1", "-W", "1", &addr.to_string()])
                .is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        bail!("{addr} not reachable from the attacker namespace")
    }
}

/// Sends raw Ethernet frames out of `iface` in `ns` (AF_PACKET), as a host
/// on that link could: how the lab forges packets nmap and hping3 cannot.
pub fn send_frames(ns: &NetNs, iface: &str, frames: &[Vec<u8>]) -> Result<()> {
    crate::gen::in_netns(&ns.path(), || {
        let sock = crate::gen::PacketSocket::open(crate::gen::ifindex(iface)?)?;
        for f in frames {
            sock.send(f, 1, 1)?;
        }
        Ok(())
    })
}
