//! `cargo xtask gen`: synthetic SMB traffic into a lab veth, counted by the
//! real smbwatch daemon (or received by the empty XDP program).
//!
//! ```text
//! cargo xtask gen -- --sources 1000 --destinations 50 --mix syn=8,synack,rst,background=4,ipv6,vlan --count 1000000
//! ```

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, ValueEnum};
use integration_tests::{
    daemon::Daemon,
    gen::{self, Expected, GenLab, Generator, Mix, Pace, Plan, Spec, RX_IF, TX_IF},
    require_root,
};
use smbwatch::dataplane::PinnedMaps;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Receiver {
    /// The real smbwatch daemon attached to the receiving veth.
    Smbwatch,
    /// smbwatch's XDP program alone, loaded by this process (no daemon, no
    /// event consumer): the kernel's share of the cost.
    Xdp,
    /// The empty XDP program (a baseline; nothing is counted but the interface's packets).
    Floor,
}

#[derive(Parser)]
#[command(
    name = "gen",
    about = "Synthetic SMB traffic with BPF_PROG_TEST_RUN live frames (XDP_TX) into a veth in a lab namespace pair",
    after_help = "Kinds for --mix: syn (IPv4 SYN to 445), synack and rst (answers from 445 to the syn stream's pairs), \
background (IPv4 TCP to 443), ipv6 (IPv6 SYN to 445), vlan (802.1Q VLAN 100 IPv4 SYN to 445). \
Weights: syn=8,background=2. Where the kernel refuses live frames (EPERM) an AF_PACKET socket sends instead \
(SMBWATCH_GEN_METHOD=af_packet forces it, =live forbids the fallback). Sources are 10.0.0.0/8, destinations 198.18.0.0/15, IPv6 2001:db8::/32; \
nothing leaves the lab's namespaces."
)]
struct Args {
    /// Distinct sources per stream.
    #[arg(long, default_value_t = 100)]
    sources: u32,
    /// Distinct destinations per stream.
    #[arg(long, default_value_t = 10)]
    destinations: u32,
    /// Traffic kinds and weights.
    #[arg(long, default_value = "syn")]
    mix: Mix,
    /// Packets to send.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Packets per call: each distinct frame is sent this many times in a row.
    /// In a lab the XDP_TX program is kept attached to a spare veth so bursts
    /// are cheap; with --netns each burst also waits for the kernel's XDP
    /// dispatcher update (about 30 ms) unless that program is attached there.
    #[arg(long, default_value_t = 1)]
    burst: u32,
    /// Packets per second (default: as fast as possible).
    #[arg(long)]
    pps: Option<u64>,
    /// Frames per kernel batch of the live test run (1-256).
    #[arg(long, default_value_t = 64)]
    batch: u32,
    /// What receives the frames in the lab.
    #[arg(long, value_enum, default_value_t = Receiver::Smbwatch)]
    receiver: Receiver,
    /// Send from this existing network namespace (a path such as
    /// /var/run/netns/NAME) instead of building a lab; needs --iface. The
    /// peer must have an XDP program attached.
    #[arg(long, requires = "iface")]
    netns: Option<String>,
    /// Interface to send from with --netns.
    #[arg(long, requires = "netns")]
    iface: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    require_root();
    if !(1..=256).contains(&args.batch) {
        bail!("--batch must be 1 to 256");
    }
    let spec = Spec {
        sources: args.sources,
        first_source: 0,
        destinations: args.destinations,
        mix: args.mix.clone(),
        count: args.count,
        burst: args.burst,
    };
    let plan = Plan::build(&spec)?;
    let pace = args.pps.map_or(Pace::Max, Pace::Pps);
    let mut generator = Generator::new()?;
    generator.batch = args.batch;
    eprintln!(
        "plan: {} packets in {} calls ({})",
        plan.expected.packets,
        plan.calls(),
        plan.per_kind
            .iter()
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect::<Vec<_>>()
            .join(", ")
    );

    if let (Some(ns), Some(iface)) = (&args.netns, &args.iface) {
        let sent = generator.send(ns, iface, &plan, pace)?;
        report_sent(&sent);
        print_expected(&plan.expected, None);
        return Ok(());
    }

    let lab = GenLab::new()?;
    generator.anchor(&lab.gen.path(), gen::ANCHOR_IF)?;
    match args.receiver {
        Receiver::Smbwatch => {
            set_smbwatch_bin();
            let daemon = Daemon::start(&lab.rx, &["--iface", RX_IF, "--stats-interval", "1s"])?;
            let sent = generator.send(&lab.gen.path(), TX_IF, &plan, pace)?;
            report_sent(&sent);
            let maps = PinnedMaps::open(&daemon.pin_dir)?;
            let counted = settle(|| Ok(Expected::from_stats(&maps.stats()?)), sent.packets)?;
            print_expected(&plan.expected, Some(&counted));
            let (_, dropped) = lab.rx_counters()?;
            if dropped > 0 {
                eprintln!("{RX_IF} dropped {dropped} packets");
            }
            drop(maps);
            daemon.stop()?;
        }
        Receiver::Xdp => {
            let dp = smbwatch::dataplane::Dataplane::load(&Default::default())?;
            let fd = dp.program_fd()?;
            let _link =
                gen::in_netns(&lab.rx.path(), || gen::attach_xdp(fd, gen::ifindex(RX_IF)?))?;
            let sent = generator.send(&lab.gen.path(), TX_IF, &plan, pace)?;
            report_sent(&sent);
            let counted = settle(|| Ok(Expected::from_stats(&dp.stats()?)), sent.packets)?;
            print_expected(&plan.expected, Some(&counted));
        }
        Receiver::Floor => {
            let rx_path = lab.rx.path();
            let _link = gen::in_netns(&rx_path, || {
                gen::attach_xdp(generator.floor(), gen::ifindex(RX_IF)?)
            })?;
            let sent = generator.send(&lab.gen.path(), TX_IF, &plan, pace)?;
            report_sent(&sent);
            let (received, dropped) = lab.rx_counters()?;
            println!("{RX_IF} received {received} packets, dropped {dropped}");
        }
    }
    Ok(())
}

/// The daemon binary next to this one (target/<profile>/smbwatch).
fn set_smbwatch_bin() {
    if std::env::var_os("SMBWATCH_BIN").is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    let bin: PathBuf = exe.with_file_name("smbwatch");
    // SAFETY: single-threaded at this point.
    unsafe { std::env::set_var("SMBWATCH_BIN", &bin) };
}

/// Polls `read` until its packet count reaches `target` or stops moving for a second.
fn settle(read: impl Fn() -> Result<Expected>, target: u64) -> Result<Expected> {
    let mut last = read()?;
    let mut still = 0;
    while last.packets < target && still < 10 {
        std::thread::sleep(Duration::from_millis(100));
        let now = read().context("reading the daemon's counters")?;
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    Ok(last)
}

fn report_sent(s: &gen::Sent) {
    println!(
        "sent {} packets in {} calls with {}, {:.3} s, {:.0} pps; sender CPU {:.3} s",
        s.packets,
        s.calls,
        s.method.describe(),
        s.elapsed.as_secs_f64(),
        s.pps(),
        s.cpu.as_secs_f64()
    );
}

fn print_expected(e: &Expected, counted: Option<&Expected>) {
    let rows = |x: &Expected| {
        [
            ("packets", x.packets),
            ("ipv4", x.ipv4),
            ("ipv6", x.ipv6),
            ("vlan", x.vlan),
            ("monitored_syns", x.monitored_syns),
            ("new_pairs", x.new_pairs),
            ("responses", x.responses),
        ]
    };
    println!("{:<16} {:>12} {:>12}", "counter", "expected", "counted");
    for (i, (name, v)) in rows(e).into_iter().enumerate() {
        let c = counted.map_or("-".to_owned(), |c| rows(c)[i].1.to_string());
        let mark = match counted {
            Some(c) if rows(c)[i].1 != v => "  MISMATCH",
            _ => "",
        };
        println!("{name:<16} {v:>12} {c:>12}{mark}");
    }
}
