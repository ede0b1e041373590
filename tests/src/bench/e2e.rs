//! End to end through a veth: the generator pushes SYNs to 445 into a
//! receiving namespace where one of four things counts them:
//!
//! - **baseline**: the empty XDP program (veth needs one to take XDP
//!   frames) and nothing else: the cost every configuration pays;
//! - **smbwatch**: the real daemon, attached to the receiving veth;
//! - **nftables**: the empty XDP program plus an nftables per-source set
//!   counting the same SYNs in prerouting;
//! - **tcpdump**: the empty XDP program plus `tcpdump -w /dev/null` with the
//!   same BPF filter (libpcap on AF_PACKET, TPACKET_V3 ring).
//!
//! CPU is counted where it is spent: the generator thread (the receive
//! softirq runs on the sender's CPU when the test run re-enables bottom
//! halves, and this kernel has no IRQ time accounting, so it lands in the
//! thread's CPU time), the tool's process (daemon, tcpdump), and the
//! ksoftirqd threads (softirq work deferred under load). A tool's cost per
//! packet is its configuration's total minus the baseline's in the same
//! round, over the packets sent; the generator's own cost cancels out.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};
use std::os::fd::{AsRawFd as _, BorrowedFd};

use smbwatch::dataplane::{Dataplane, LoadOptions, PinnedMaps};
use smbwatch_common::stat;

use super::{
    fmt_num, median,
    procs::{ksoftirqd_cpu, pid_with_arg, process_cpu},
    tcpdump::Tcpdump,
    Effort, Goal, Section, Table,
};
use crate::{
    daemon::Daemon,
    gen::{self, GenLab, Generator, Pace, Plan, Spec, ANCHOR_IF, RX_IF, TX_IF},
    netns::NetNs,
};

/// The BPF filter tcpdump and the nftables rule both implement.
pub const PCAP_FILTER: &str = "tcp dst port 445 and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn";

const NFT_RULESET: &str = "table inet smbwbench {
  set src {
    type ipv4_addr
    flags dynamic
    size 1000000
  }
  chain pre {
    type filter hook prerouting priority -300; policy accept;
    tcp dport 445 tcp flags & (syn | ack) == syn counter update @src { ip saddr counter }
  }
}
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Baseline,
    Smbwatch,
    SmbwatchUnbudgeted,
    SmbwatchXdp,
    Nftables,
    Tcpdump,
    TcpdumpLines,
}

impl Tool {
    const ALL: [Tool; 7] = [
        Tool::Baseline,
        Tool::Smbwatch,
        Tool::SmbwatchUnbudgeted,
        Tool::SmbwatchXdp,
        Tool::Nftables,
        Tool::Tcpdump,
        Tool::TcpdumpLines,
    ];

    fn name(self) -> &'static str {
        match self {
            Tool::Baseline => "baseline (empty XDP)",
            Tool::Smbwatch => "smbwatch (daemon, JSON alerts)",
            Tool::SmbwatchUnbudgeted => "smbwatch (daemon, JSON alerts, no event budget)",
            Tool::SmbwatchXdp => "smbwatch XDP program alone",
            Tool::Nftables => "nftables per-source set",
            Tool::Tcpdump => "tcpdump -w /dev/null (AF_PACKET)",
            Tool::TcpdumpLines => "tcpdump -l | wc -l (AF_PACKET)",
        }
    }
}

/// One configuration's run.
#[derive(Clone, Debug, Default)]
struct Run {
    sent: u64,
    counted: Option<u64>,
    tool_dropped: Option<u64>,
    veth_dropped: u64,
    elapsed: f64,
    gen_cpu: f64,
    tool_cpu: f64,
    softirqd_cpu: f64,
}

impl Run {
    fn total_cpu(&self) -> f64 {
        self.gen_cpu + self.tool_cpu + self.softirqd_cpu
    }

    fn json(&self) -> Value {
        json!({
            "sent": self.sent,
            "counted": self.counted,
            "tool_dropped": self.tool_dropped,
            "veth_dropped": self.veth_dropped,
            "elapsed_s": self.elapsed,
            "generator_cpu_s": self.gen_cpu,
            "tool_cpu_s": self.tool_cpu,
            "ksoftirqd_cpu_s": self.softirqd_cpu,
        })
    }
}

/// The nftables rule counter of the benchmark chain.
fn nft_counter(ns: &NetNs) -> Result<u64> {
    let out = ns.exec("nft", &["-j", "list", "chain", "inet", "smbwbench", "pre"])?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    fn find(v: &Value) -> Option<u64> {
        match v {
            Value::Object(m) => m
                .get("counter")
                .and_then(|c| c.get("packets"))
                .and_then(Value::as_u64)
                .or_else(|| m.values().find_map(find)),
            Value::Array(a) => a.iter().find_map(find),
            _ => None,
        }
    }
    find(&v).context("no counter in the nftables chain")
}

fn run_one(lab: &GenLab, generator: &Generator, tool: Tool, plan: &Plan) -> Result<Run> {
    let rx_path = lab.rx.path();
    let mut link = None;
    let mut daemon = None;
    let mut tcpdump = None;
    let mut own_dp = None;
    match tool {
        // The production configuration: an alert sink, no event lines.
        Tool::Smbwatch | Tool::SmbwatchUnbudgeted => {
            let alerts =
                std::env::temp_dir().join(format!("smbwbench-{}-alerts.json", std::process::id()));
            let budget = if tool == Tool::Smbwatch {
                "100000"
            } else {
                "0"
            };
            daemon = Some(Daemon::start(
                &lab.rx,
                &[
                    "--iface",
                    RX_IF,
                    "--stats-interval",
                    "1h",
                    "--json",
                    alerts.to_str().expect("utf-8"),
                    "--events-per-cpu",
                    budget,
                ],
            )?);
        }
        Tool::SmbwatchXdp => {
            let dp = Dataplane::load(&LoadOptions {
                events_per_cpu: 0,
                ..LoadOptions::default()
            })?;
            let fd = dp.program_fd()?.as_raw_fd();
            link = Some(gen::in_netns(&rx_path, || {
                // SAFETY: `dp` keeps the program loaded until after the link is dropped.
                gen::attach_xdp(unsafe { BorrowedFd::borrow_raw(fd) }, gen::ifindex(RX_IF)?)
            })?);
            own_dp = Some(dp);
        }
        _ => {
            link = Some(gen::in_netns(&rx_path, || {
                gen::attach_xdp(generator.floor(), gen::ifindex(RX_IF)?)
            })?);
        }
    }
    if tool == Tool::Nftables {
        let file = std::env::temp_dir().join(format!("smbwbench-{}.nft", std::process::id()));
        std::fs::write(&file, NFT_RULESET)?;
        let r = lab.rx.exec("nft", &["-f", file.to_str().expect("utf-8")]);
        let _ = std::fs::remove_file(&file);
        r.context("loading the nftables ruleset")?;
    }
    let lines = tool == Tool::TcpdumpLines;
    if matches!(tool, Tool::Tcpdump | Tool::TcpdumpLines) {
        tcpdump = Some(Tcpdump::start(&lab.rx, lines)?);
    }
    let maps = match &daemon {
        Some(d) => Some(PinnedMaps::open(&d.pin_dir)?),
        None => None,
    };
    let daemon_pid = daemon
        .as_ref()
        .and_then(|d| pid_with_arg(d.pin_dir.to_str().expect("utf-8")));
    let syns = |m: &PinnedMaps| -> Result<u64> { Ok(m.stats()?.get(stat::MONITORED_SYNS)) };

    let (_, dropped0) = lab.rx_counters()?;
    let soft0 = ksoftirqd_cpu();
    let tool0 = daemon_pid.map_or(0.0, process_cpu);
    let own_syns = |dp: &Dataplane| -> Result<u64> { Ok(dp.stats()?.get(stat::MONITORED_SYNS)) };
    let syns0 = maps.as_ref().map(syns).transpose()?;
    let sent = generator.send(&lab.gen.path(), TX_IF, plan, Pace::Max)?;
    // Let the receiver finish: the daemon drains its ring buffer, tcpdump
    // its socket ring.
    let mut counted = None;
    if let (Some(m), Some(s0)) = (&maps, syns0) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n = syns(m)? - s0;
            counted = Some(n);
            if n >= sent.packets || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Events still queued for user space.
        std::thread::sleep(Duration::from_millis(300));
    } else {
        // tcpdump: libpcap hands over a TPACKET_V3 block when it is full or
        // after its 1 s timeout; wait for the last one.
        let wait = if tcpdump.is_some() { 1300 } else { 300 };
        std::thread::sleep(Duration::from_millis(wait));
    }
    if let Some(dp) = &own_dp {
        counted = Some(own_syns(dp)?);
    }
    let mut run = Run {
        sent: sent.packets,
        counted,
        elapsed: sent.elapsed.as_secs_f64(),
        gen_cpu: sent.cpu.as_secs_f64(),
        ..Default::default()
    };
    run.softirqd_cpu = ksoftirqd_cpu() - soft0;
    if let Some(pid) = daemon_pid {
        run.tool_cpu = process_cpu(pid) - tool0;
    }
    if tool == Tool::Nftables {
        run.counted = Some(nft_counter(&lab.rx)?);
        lab.rx
            .exec("nft", &["delete", "table", "inet", "smbwbench"])?;
    }
    if let Some(t) = tcpdump {
        let (captured, dropped, cpu) = t.stop()?;
        run.counted = Some(captured);
        run.tool_dropped = Some(dropped);
        run.tool_cpu = cpu;
    }
    let (_, dropped1) = lab.rx_counters()?;
    run.veth_dropped = dropped1 - dropped0;
    drop(maps);
    if let Some(d) = daemon {
        d.stop()?;
    }
    drop(link);
    drop(own_dp);
    Ok(run)
}

struct Profile {
    name: &'static str,
    spec: Spec,
}

/// Runs the end-to-end comparison.
pub fn run(effort: &Effort) -> Result<Section> {
    for tool in ["nft", "tcpdump"] {
        if crate::netns::run("which", [tool]).is_err() {
            bail!("{tool} is not installed (cargo xtask setup installs it)");
        }
    }
    let profiles = [
        Profile {
            name: "top rate: SYN bursts (1,000 sources × 16 destinations, 256 SYNs per pair)",
            spec: Spec {
                sources: 1000,
                first_source: 0,
                destinations: 16,
                mix: "syn".parse().expect("mix"),
                count: effort.e2e_packets,
                burst: 256,
            },
        },
        Profile {
            name: "churn: every SYN a new source (spoofed sources × 1 destination)",
            spec: Spec {
                sources: if effort.quick { 50_000 } else { 200_000 },
                first_source: 0,
                destinations: 1,
                mix: "syn".parse().expect("mix"),
                count: if effort.quick { 50_000 } else { 200_000 },
                burst: 1,
            },
        },
        Profile {
            name: "new pairs: every SYN a new pair (1,000 sources × 200 destinations)",
            spec: Spec {
                sources: 1000,
                first_source: 0,
                destinations: 200,
                mix: "syn".parse().expect("mix"),
                count: if effort.quick { 50_000 } else { 200_000 },
                burst: 1,
            },
        },
    ];
    let plans: Vec<Plan> = profiles
        .iter()
        .map(|p| Plan::build(&p.spec))
        .collect::<Result<_>>()?;
    let lab = GenLab::new()?;
    let mut generator = Generator::new()?;
    generator.anchor(&lab.gen.path(), ANCHOR_IF)?;

    // results[profile][tool] = runs over rounds
    let mut results: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); Tool::ALL.len()]; profiles.len()];
    for round in 0..effort.rounds {
        for (pi, plan) in plans.iter().enumerate() {
            for (ti, tool) in Tool::ALL.into_iter().enumerate() {
                eprintln!(
                    "e2e: round {}/{}, {}, {}",
                    round + 1,
                    effort.rounds,
                    profiles[pi].name.split(':').next().unwrap_or(""),
                    tool.name()
                );
                let r = run_one(&lab, &generator, tool, plan)
                    .with_context(|| format!("end-to-end run with {}", tool.name()))?;
                results[pi][ti].push(r);
            }
        }
    }

    let mut table = Table::new(&[
        "traffic",
        "counter",
        "sent",
        "counted",
        "lost",
        "rate (Mpps)",
        "CPU ns/packet (total)",
        "tool CPU ns/packet (over baseline)",
        "× smbwatch",
    ]);
    let mut data = Vec::new();
    let mut goals = Vec::new();
    for (pi, p) in profiles.iter().enumerate() {
        let base = &results[pi][0];
        // Tool cost per packet, per round, over the same round's baseline.
        let cost = |ti: usize| -> Vec<f64> {
            results[pi][ti]
                .iter()
                .zip(base)
                .map(|(r, b)| (r.total_cpu() - b.total_cpu()) / r.sent as f64 * 1e9)
                .collect()
        };
        let smb_cost = median(&cost(1));
        for (ti, tool) in Tool::ALL.into_iter().enumerate() {
            let runs = &results[pi][ti];
            let sent: u64 = runs.iter().map(|r| r.sent).sum();
            let counted: Option<u64> = runs.iter().map(|r| r.counted).sum();
            // Not counted, for whatever reason (veth drop, tool drop, missed);
            // for the baseline, what the veth dropped.
            let lost: u64 = runs
                .iter()
                .map(|r| {
                    r.counted
                        .map_or(r.veth_dropped, |c| r.sent.saturating_sub(c))
                })
                .sum();
            let rate = median(
                &runs
                    .iter()
                    .map(|r| r.sent as f64 / r.elapsed / 1e6)
                    .collect::<Vec<_>>(),
            );
            let total = median(
                &runs
                    .iter()
                    .map(|r| r.total_cpu() / r.sent as f64 * 1e9)
                    .collect::<Vec<_>>(),
            );
            let c = if ti == 0 { f64::NAN } else { median(&cost(ti)) };
            table.row(vec![
                if ti == 0 {
                    p.name.to_owned()
                } else {
                    String::new()
                },
                tool.name().to_owned(),
                fmt_num(sent as f64),
                counted.map_or("—".into(), |c| fmt_num(c as f64)),
                fmt_num(lost as f64),
                format!("{rate:.2}"),
                fmt_num(total),
                if ti == 0 { "—".into() } else { fmt_num(c) },
                if ti <= 1 {
                    "—".into()
                } else {
                    format!("{:.1}", c / smb_cost)
                },
            ]);
            data.push(json!({
                "profile": p.name,
                "tool": tool.name(),
                "tool_cost_ns_per_packet": if ti == 0 { Value::Null } else { json!(c) },
                "runs": runs.iter().map(Run::json).collect::<Vec<_>>(),
            }));
        }
        if pi == 0 {
            let smb = &results[0][1];
            let all_counted = smb.iter().all(|r| r.counted == Some(r.sent));
            let rate = median(
                &smb.iter()
                    .map(|r| r.sent as f64 / r.elapsed)
                    .collect::<Vec<_>>(),
            );
            goals.push(Goal {
                name: "counted equals sent at the generator's top rate (smbwatch)".into(),
                target: "counted = sent".into(),
                measured: format!(
                    "{} of {} rounds exact at {} Mpps",
                    smb.iter().filter(|r| r.counted == Some(r.sent)).count(),
                    smb.len(),
                    format_args!("{:.2}", rate / 1e6)
                ),
                met: Some(all_counted),
                note: format!(
                    "sustained monitored-SYN rate {} SYN/s, bounded by the one generator CPU that also runs the receive path",
                    fmt_num(rate)
                ),
            });
            let xdp_only = median(&cost(3));
            let nft = median(&cost(4));
            let pcap = median(&cost(5));
            let pcap_lines = median(&cost(6));
            let events_per_syn =
                plans[0].expected.new_pairs as f64 / plans[0].expected.packets as f64;
            let daemon_share = format!(
                "smbwatch {} ns per SYN over the baseline, of which the XDP program alone {} ns; the rest, about {} µs per ring-buffer event \
(one per {:.0} SYNs here), is the daemon draining and handling events (it is woken only when 256 KiB are unread, else drains every 20 ms); \
the XDP program alone is {:.1}× below tcpdump -w /dev/null and {:.1}× below nftables",
                fmt_num(smb_cost),
                fmt_num(xdp_only),
                fmt_num((smb_cost - xdp_only) / events_per_syn / 1000.0),
                1.0 / events_per_syn,
                pcap / xdp_only,
                nft / xdp_only,
            );
            goals.push(Goal::at_least(
                "CPU per SMB SYN: AF_PACKET (tcpdump -w /dev/null) ÷ smbwatch",
                pcap / smb_cost,
                5.0,
                "×",
                &format!(
                    "tcpdump -w /dev/null {} ns, tcpdump -l | wc -l {} ns ({:.1}× smbwatch); {daemon_share}",
                    fmt_num(pcap),
                    fmt_num(pcap_lines),
                    pcap_lines / smb_cost
                ),
            ));
            goals.push(Goal::at_least(
                "CPU per SMB SYN: nftables set ÷ smbwatch",
                nft / smb_cost,
                1.0,
                "×",
                &format!("nftables {} ns per SYN over the baseline", fmt_num(nft)),
            ));
        }
        if pi == 1 {
            // Churn: every frame a new source (a spoofed flood).
            let unbudgeted = median(&cost(2));
            let xdp_only = median(&cost(3));
            let nft = median(&cost(4));
            goals.push(Goal::at_most(
                "every frame a new source: smbwatch CPU per packet (kernel + daemon)",
                smb_cost,
                400.0,
                "ns",
                &format!(
                    "with the default event budget; without a budget (every new pair an event) {} ns, the XDP program alone {} ns, \
so the daemon costs about {} ns per event",
                    fmt_num(unbudgeted),
                    fmt_num(xdp_only),
                    fmt_num(unbudgeted - xdp_only)
                ),
            ));
            goals.push(Goal::at_least(
                "every frame a new source: nftables set ÷ smbwatch",
                nft / smb_cost,
                2.5,
                "×",
                &format!("nftables {} ns per packet over the baseline", fmt_num(nft)),
            ));
        }
    }
    let method = format!(
        "The generator ({}) sends each profile into a veth whose far end, in its own namespace, runs one counter at a time; \
configurations interleave within each of {} rounds; medians. *lost* = sent − counted (veth or tool drops included). \
*CPU ns/packet (total)* = generator thread (which also runs the receive softirq) + tool process + ksoftirqd, over packets sent; \
*tool CPU* subtracts the baseline (empty XDP program, no counter) of the same round. \
In the new-pairs profile the generator makes one call per frame (about 7 µs each), so differences below about 100 ns per packet are noise there; it shows the per-event cost. \
nftables: `{}` in prerouting with a dynamic per-source set; tcpdump: `tcpdump -w /dev/null '{}'` with its default buffer.\n",
        generator.method().unwrap_or_default().describe(),
        effort.rounds,
        "tcp dport 445 tcp flags & (syn | ack) == syn counter update @src { ip saddr counter }",
        PCAP_FILTER
    );
    Ok(Section {
        title: "End to end through veth".into(),
        method,
        table,
        data: json!({ "results": data }),
        goals,
    })
}
