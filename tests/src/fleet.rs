//! A two-router lab for the fleet: one attacker reaching two server
//! segments through two gateways, and a broker namespace running a real
//! nats-server with JetStream that both gateways reach.
//!
//! ```text
//!                 a0 ── g0 [gw1] g1 ── s0 [srv1: FleetLab::behind_gw1]
//! [attacker] ────┤               m0 ── b1 ┐
//!                 a1 ── g0 [gw2] g1 ── s0 [srv2: FleetLab::behind_gw2]
//!                                m0 ── b2 ┴ [broker: nats-server, aggregators]
//! ```
//!
//! The attacker has one address (203.0.113.10) on both links and a host
//! route per server, so a sweep crosses both routers from one source.

use std::{
    future::Future,
    net::{IpAddr, Ipv6Addr},
    path::PathBuf,
    process::{Child, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use smbwatch::{
    event::{GatewayEvent, GatewayEventKind},
    fleet::{
        outbox::{Outbox, OutboxStats, Tap},
        transport::JetStream,
        PublishConfig,
    },
};

use crate::netns::{unique_tag, veth, NetNs};

/// The broker's address as gateway 1 reaches it.
pub const BROKER_FOR_GW1: &str = "nats://192.0.2.1:4222";
/// The broker's address as gateway 2 reaches it.
pub const BROKER_FOR_GW2: &str = "nats://192.0.2.5:4222";
/// The broker's address inside its own namespace (for aggregators).
pub const BROKER_LOCAL: &str = "nats://127.0.0.1:4222";

/// The lab.
pub struct FleetLab {
    /// The scanner's namespace (203.0.113.10 on `a0` and `a1`).
    pub attacker: NetNs,
    /// Router 1 (`g0` attacker side, `g1` servers, `m0` broker).
    pub gw1: NetNs,
    /// Router 2 (same interface names).
    pub gw2: NetNs,
    /// Servers behind router 1.
    pub srv1: NetNs,
    /// Servers behind router 2.
    pub srv2: NetNs,
    /// nats-server and aggregators.
    pub broker: NetNs,
    /// Addresses behind router 1.
    pub behind_gw1: Vec<IpAddr>,
    /// Addresses behind router 2.
    pub behind_gw2: Vec<IpAddr>,
}

impl FleetLab {
    /// Builds the lab; `gw1_hosts` and `gw2_hosts` are the last octets of
    /// 198.51.100.x placed behind each router.
    pub fn new(gw1_hosts: &[u8], gw2_hosts: &[u8]) -> Result<Self> {
        let tag = unique_tag();
        let ns = |role: &str| NetNs::new(&format!("smbw-{tag}-{role}"));
        let lab = Self {
            attacker: ns("att")?,
            gw1: ns("gw1")?,
            gw2: ns("gw2")?,
            srv1: ns("s1")?,
            srv2: ns("s2")?,
            broker: ns("nats")?,
            behind_gw1: gw1_hosts
                .iter()
                .map(|h| IpAddr::from([198, 51, 100, *h]))
                .collect(),
            behind_gw2: gw2_hosts
                .iter()
                .map(|h| IpAddr::from([198, 51, 100, *h]))
                .collect(),
        };
        let a = &lab.attacker;
        for (n, (gw, srv, hosts, gw_att, broker_if, broker_net)) in [
            (
                &lab.gw1,
                &lab.srv1,
                &lab.behind_gw1,
                "203.0.113.1",
                "b1",
                0u8,
            ),
            (
                &lab.gw2,
                &lab.srv2,
                &lab.behind_gw2,
                "203.0.113.2",
                "b2",
                4u8,
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let a_if = format!("a{n}");
            veth(a, &a_if, gw, "g0")?;
            veth(gw, "g1", srv, "s0")?;
            veth(gw, "m0", &lab.broker, broker_if)?;
            gw.sysctl("net.ipv4.ip_forward", "1")?;
            gw.ip(&["addr", "add", &format!("{gw_att}/24"), "dev", "g0"])?;
            gw.ip(&["addr", "add", "198.51.100.1/24", "dev", "g1"])?;
            let b = format!("192.0.2.{}", broker_net + 1);
            let g = format!("192.0.2.{}", broker_net + 2);
            lab.broker
                .ip(&["addr", "add", &format!("{b}/30"), "dev", broker_if])?;
            gw.ip(&["addr", "add", &format!("{g}/30"), "dev", "m0"])?;
            // The same address on both attacker links; a /32 on the second
            // so the connected /24 route stays on the first.
            let prefix = if n == 0 { "24" } else { "32" };
            a.ip(&[
                "addr",
                "add",
                &format!("203.0.113.10/{prefix}"),
                "dev",
                &a_if,
            ])?;
            for h in hosts {
                srv.ip(&["addr", "add", &format!("{h}/24"), "dev", "s0"])?;
                a.ip(&[
                    "route",
                    "add",
                    &format!("{h}/32"),
                    "via",
                    gw_att,
                    "dev",
                    &a_if,
                    "onlink",
                    "src",
                    "203.0.113.10",
                ])?;
            }
            srv.ip(&["route", "add", "default", "via", "198.51.100.1"])?;
        }
        Ok(lab)
    }

    /// `nmap -n -Pn -sS -p445` from the attacker to `targets`; returns how
    /// many nmap reports as open.
    pub fn sweep(&self, targets: &[IpAddr]) -> Result<usize> {
        self.sweep_from(None, targets)
    }

    /// Gives the attacker another address (on `a0`, towards gateway 1).
    pub fn add_attacker_address(&self, addr: IpAddr) -> Result<()> {
        self.attacker
            .ip(&["addr", "add", &format!("{addr}/32"), "dev", "a0"])?;
        Ok(())
    }

    /// Like [`FleetLab::sweep`], from `src` (an address added with
    /// [`FleetLab::add_attacker_address`]; targets behind gateway 1).
    pub fn sweep_from(&self, src: Option<IpAddr>, targets: &[IpAddr]) -> Result<usize> {
        let list: Vec<String> = targets.iter().map(ToString::to_string).collect();
        let src = src.map(|s| s.to_string());
        let mut args = vec!["-n", "-Pn", "-sS", "-p445"];
        if let Some(s) = &src {
            args.extend_from_slice(&["-S", s, "-e", "a0"]);
        }
        args.extend(list.iter().map(String::as_str));
        let out = self.attacker.exec("nmap", &args)?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .matches("445/tcp open")
            .count())
    }
}

/// A real nats-server with JetStream, its store in a directory that
/// survives [`NatsServer::kill`] so [`NatsServer::restart`] finds it.
pub struct NatsServer {
    child: Option<Child>,
    ns_path: String,
    dir: PathBuf,
    extra: Vec<String>,
}

impl NatsServer {
    /// Starts nats-server in `ns` on port 4222 (all addresses) with
    /// JetStream storing under a fresh directory.
    pub fn start(ns: &NetNs) -> Result<Self> {
        Self::start_with(ns, &[])
    }

    /// [`NatsServer::start`] with more nats-server options (e.g. `--user`,
    /// `--tls`); the server's directory ([`NatsServer::dir`]) exists before
    /// it starts, for files those options name.
    pub fn start_with(ns: &NetNs, extra: &[&str]) -> Result<Self> {
        let dir = Self::new_dir()?;
        Self::start_in(ns, dir, extra)
    }

    /// A fresh directory for a server (to put its certificates in first).
    pub fn new_dir() -> Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!("smbwatch-nats-{}", unique_tag()));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Starts a server in `dir` (removed on drop).
    pub fn start_in(ns: &NetNs, dir: PathBuf, extra: &[&str]) -> Result<Self> {
        let mut me = Self {
            child: None,
            ns_path: ns.path(),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        me.restart()?;
        Ok(me)
    }

    /// Everything the server logged so far (all its starts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default()
    }

    /// Kills the server (SIGKILL: a crash, not a clean stop).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same store and waits until it is ready.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let log = self.dir.join("nats.log");
        // Each start appends to the log: wait for one more ready line.
        let ready_lines = |p: &PathBuf| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .matches("Server is ready")
                .count()
        };
        let before = ready_lines(&log);
        let child = std::process::Command::new("nsenter")
            .arg(format!("--net={}", self.ns_path))
            .args(["--", "nats-server", "-js", "-a", "0.0.0.0", "-p", "4222"])
            .arg("-sd")
            .arg(self.dir.join("store"))
            .arg("-l")
            .arg(&log)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server (install it: cargo xtask setup)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if ready_lines(&log) > before {
                return Ok(());
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                bail!("nats-server exited ({status}): {text}");
            }
            if Instant::now() > deadline {
                bail!("nats-server not ready within 20 s: {text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `f` on a thread that has entered `ns`'s network namespace, so its
/// sockets (a NATS client's) live there.
pub fn in_netns<T: Send>(ns: &NetNs, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let path = ns.path();
    std::thread::scope(|s| {
        s.spawn(|| {
            crate::gen::enter_netns(&path)?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in {path} panicked"))?
    })
}

/// Runs `f` with a JetStream connection to `url` as member `gateway` (with
/// `cfg`'s credentials), from inside `ns`, on a runtime of its own.
pub fn with_js<T, F, Fut>(
    ns: &NetNs,
    url: &str,
    cfg: &PublishConfig,
    gateway: &str,
    f: F,
) -> Result<T>
where
    T: Send,
    F: FnOnce(JetStream) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    in_netns(ns, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let js =
                JetStream::connect(url, cfg, gateway, &format!("test {gateway}"), false).await?;
            f(js).await
        })
    })
}

/// Event `i` of a churning fleet, dated `t0` + `i` µs: mostly new pairs
/// from sources seen once or twice, every tenth a refusal.
pub fn synthetic_event(i: usize, t0: chrono::DateTime<chrono::Utc>) -> GatewayEvent {
    let src = IpAddr::V6(Ipv6Addr::from(
        (0x2001_0db8_000a_u128 << 80) | (i / 2) as u128,
    ));
    let dst = IpAddr::V6(Ipv6Addr::from(
        (0x2001_0db8_000b_u128 << 80) | (i as u128 % 4096),
    ));
    let kind = if i % 10 == 9 {
        GatewayEventKind::Refused
    } else {
        GatewayEventKind::NewPair
    };
    GatewayEvent::new(
        t0 + chrono::TimeDelta::microseconds(i as i64),
        kind,
        src,
        dst,
        40000 + (i % 20000) as u16,
        445,
    )
}

/// New pairs from `src` to each of `targets` on port 445, dated now.
pub fn scan_events(src: IpAddr, targets: &[IpAddr]) -> Vec<GatewayEvent> {
    let now = chrono::Utc::now();
    targets
        .iter()
        .enumerate()
        .map(|(i, &dst)| {
            GatewayEvent::new(
                now + chrono::TimeDelta::milliseconds(i as i64),
                GatewayEventKind::NewPair,
                src,
                dst,
                50000 + i as u16,
                445,
            )
        })
        .collect()
}

/// Publishes `events` through a gateway's own outbox and publish task
/// (what `run --publish` does) and returns once all are acknowledged.
pub async fn publish_events(js: JetStream, events: &[GatewayEvent]) -> Result<OutboxStats> {
    let outbox = Arc::new(Outbox::new(1 << 30));
    let mut tap = Tap::new(outbox.clone(), PublishConfig::default().partitions);
    for ev in events {
        tap.gateway(ev);
    }
    tap.flush();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(smbwatch::fleet::publisher::run(
        outbox.clone(),
        js,
        Default::default(),
        rx,
    ));
    let t0 = Instant::now();
    while outbox.stats().delivered < events.len() as u64 {
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("{} events not acknowledged within 60 s", events.len());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = tx.send(true);
    Ok(task.await?)
}

/// A consumer's state: messages pending (not yet delivered), delivered
/// and not acknowledged, and its acknowledgement floor (stream sequence).
pub async fn consumer_state(js: &JetStream, name: &str) -> Result<(u64, u64, u64)> {
    let stream = js.js.get_stream(&PublishConfig::default().stream).await?;
    let info = stream.consumer_info(name).await?;
    Ok((
        info.num_pending,
        info.num_ack_pending as u64,
        info.ack_floor.stream_sequence,
    ))
}

/// The value of the unlabelled or labelled series `series` (e.g.
/// `smbwatch_fleet_aggregate_events_total{kind="gateway"}`) in a
/// Prometheus exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// A cluster of nats-servers (JetStream, clustered) in one namespace:
/// node `i` (name `n<i+1>`) serves clients on port 4222 + i and its peers
/// on 6222 + i.
pub struct NatsCluster {
    /// The nodes, `n1` first.
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` nodes in `ns`.
    pub fn start(ns: &NetNs, n: usize) -> Result<Self> {
        let routes: Vec<String> = (0..n)
            .map(|i| format!("nats://127.0.0.1:{}", 6222 + i))
            .collect();
        let routes = routes.join(",");
        // All nodes must be up together: a node waits for its peers.
        let mut nodes = Vec::new();
        for i in 0..n {
            let dir = NatsServer::new_dir()?;
            let (port, name, cluster) = (
                (4222 + i).to_string(),
                format!("n{}", i + 1),
                format!("nats://127.0.0.1:{}", 6222 + i),
            );
            nodes.push(NatsServer::start_in(
                ns,
                dir,
                &[
                    "-p",
                    &port,
                    "-n",
                    &name,
                    "--cluster_name",
                    "smbwatch-lab",
                    "--cluster",
                    &cluster,
                    "--routes",
                    &routes,
                ],
            )?);
        }
        Ok(Self { nodes })
    }

    /// Client URLs of every node at `host`.
    pub fn urls(&self, host: &str) -> String {
        (0..self.nodes.len())
            .map(|i| format!("nats://{host}:{}", 4222 + i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// When a node first logged, after `after`, that `what` has a new
    /// leader (nats-server logs local time; the lab's is UTC). Only the new
    /// leader logs it, so after a node's death this is the election.
    pub fn elected(
        &self,
        what: &Leader,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.logged(&what.log_line())
            .into_iter()
            .map(|(t, _)| t)
            .filter(|&t| t > after)
            .min()
    }

    /// The node (`n1`...) that last logged, before `before`, that it is
    /// the JetStream meta leader.
    pub fn meta_leader(&self, before: chrono::DateTime<chrono::Utc>) -> Option<String> {
        self.logged("Self is new JetStream cluster metadata leader")
            .into_iter()
            .filter(|&(t, _)| t < before)
            .max()
            .map(|(_, i)| format!("n{}", i + 1))
    }

    /// Every line of every node's log containing `needle`: its time and
    /// the node's index.
    fn logged(&self, needle: &str) -> Vec<(chrono::DateTime<chrono::Utc>, usize)> {
        self.nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| {
                n.log()
                    .lines()
                    .filter(|l| l.contains(needle))
                    .filter_map(|l| {
                        // "[pid] 2026/12/06 08:52:43.519545 [INF] ..."
                        let ts = l.split_once("] ")?.1.get(..26)?;
                        let t = chrono::NaiveDateTime::parse_from_str(ts, "%Y/%m/%d %H:%M:%S%.f")
                            .ok()?;
                        Some((t.and_utc(), i))
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The node named `name` (`n1`...).
    pub fn node(&mut self, name: &str) -> Option<&mut NatsServer> {
        let i: usize = name.strip_prefix('n')?.parse().ok()?;
        self.nodes.get_mut(i.checked_sub(1)?)
    }
}

/// A JetStream raft group whose leader a failover must replace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leader {
    /// The meta leader (stream and consumer creation and deletion).
    Meta,
    /// A stream's leader (stores what is published).
    Stream(String),
    /// A consumer's leader (stream, consumer): answers its pulls.
    Consumer(String, String),
}

impl Leader {
    /// What the new leader logs once elected.
    fn log_line(&self) -> String {
        match self {
            Self::Meta => "Self is new JetStream cluster metadata leader".into(),
            Self::Stream(s) => format!("JetStream cluster new stream leader for '$G > {s}'"),
            Self::Consumer(s, c) => {
                format!("JetStream cluster new consumer leader for '$G > {s} > {c}'")
            }
        }
    }
}
