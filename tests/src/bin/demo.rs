//! `cargo xtask demo`: smbwatch on a namespace router, watching a real nmap
//! sweep and a real SMB session, then everything torn down.

use std::{net::IpAddr, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result};
use integration_tests::{
    daemon::{smbwatch_bin, Daemon},
    netns::{Lab, ATTACKER_V4, GW_ATTACKER_IF, GW_SERVERS_IF},
    require_root,
    samba::Smbd,
};
use serde_json::Value;

const SERVERS: usize = 24;
const LISTENING: usize = 4;

fn main() -> ExitCode {
    match demo() {
        Ok(()) => {
            println!("==> done: the lab is removed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn step(s: &str) {
    println!("\n==> {s}");
}

fn demo() -> Result<()> {
    require_root();
    step(&format!(
        "building the lab: attacker ({ATTACKER_V4}) -- gateway ({GW_ATTACKER_IF}, {GW_SERVERS_IF}) -- {SERVERS} server addresses in 198.51.100.0/24"
    ));
    let lab = Lab::new(SERVERS)?;
    lab.wait_reachable(lab.server_v4[0])?;
    let listening: Vec<IpAddr> = lab.server_v4[..LISTENING].to_vec();
    let _smbd = Smbd::start(&lab.servers, &listening)?;
    println!(
        "    smbd (Samba) serves \\\\{}\\public and three more addresses; the other {} refuse 445",
        listening[0],
        SERVERS - LISTENING
    );

    step(&format!(
        "starting smbwatch on the gateway: {} run --iface {GW_ATTACKER_IF} --iface {GW_SERVERS_IF} --stats-interval 2s --json - --events",
        smbwatch_bin().display()
    ));
    // Alerts (ECS JSON) and events on stdout; a router would add --syslog.
    let daemon = Daemon::start(
        &lab.gateway,
        &[
            "--iface",
            GW_ATTACKER_IF,
            "--iface",
            GW_SERVERS_IF,
            "--stats-interval",
            "2s",
            "--json",
            "-",
            "--events",
        ],
    )?;

    step("a normal SMB session: smbclient //198.51.100.2/public -c 'get hello.txt'");
    let unc = format!("//{}/public", listening[0]);
    let out = lab
        .attacker
        .exec(
            "smbclient",
            &[&unc, "-N", "-c", "get hello.txt /dev/stdout"],
        )
        .context("smbclient")?;
    print!("    {}", String::from_utf8_lossy(&out.stdout));

    step(&format!(
        "an nmap SYN sweep of 445 over {SERVERS} addresses: nmap -n -Pn -sS -p445 198.51.100.2-{}",
        SERVERS + 1
    ));
    let range = format!("198.51.100.2-{}", SERVERS + 1);
    let out = lab
        .attacker
        .exec("nmap", &["-n", "-Pn", "-sS", "-p445", &range])?;
    let report = String::from_utf8_lossy(&out.stdout);
    println!(
        "    nmap: {} open, {} closed",
        report.matches("445/tcp open").count(),
        report.matches("445/tcp closed").count()
    );

    let lines = daemon.lines_when(Duration::from_secs(5), |l| {
        l.iter()
            .filter(|v| integration_tests::events::is_answer(v))
            .count()
            >= SERVERS
            && l.iter().any(|v| v["event"]["kind"] == "alert")
    });
    step("what smbwatch printed (first lines of its JSON event stream)");
    for l in lines.iter().take(6) {
        println!("    {l}");
    }
    println!("    ... {} lines in all", lines.len());

    step("smbwatch status (read from the pinned maps of the running daemon)");
    let status = lab.gateway.exec(
        smbwatch_bin().to_str().expect("utf-8"),
        &[
            "status",
            "--pin-dir",
            daemon.pin_dir.to_str().expect("utf-8"),
            "--top",
            "5",
        ],
    )?;
    for l in String::from_utf8_lossy(&status.stdout).lines() {
        println!("    {l}");
    }

    step("summary");
    summarize(&lines);
    let code = daemon.stop()?;
    println!("\n==> smbwatch stopped (exit {code}); tearing the lab down");
    Ok(())
}

fn summarize(lines: &[Value]) {
    let count = |t: &str, k: Option<&str>| {
        lines
            .iter()
            .filter(|l| {
                let a = integration_tests::events::action(l);
                match (t, k) {
                    ("new_pair", _) => a == "new_pair",
                    (_, Some(k)) => a == k,
                    _ => integration_tests::events::is_answer(l),
                }
            })
            .count()
    };
    println!(
        "    new (source, destination) pairs on 445: {}",
        count("new_pair", None)
    );
    println!(
        "    answers: {} accepted (SYN-ACK), {} refused (RST)",
        count("response", Some("accepted")),
        count("response", Some("refused"))
    );
    let alerts: Vec<_> = lines
        .iter()
        .filter(|l| l["event"]["kind"] == "alert")
        .collect();
    if alerts.is_empty() {
        println!("    alerts: none");
    }
    for a in alerts {
        println!(
            "    ALERT {} from {}: {}",
            a["rule"]["id"].as_str().unwrap_or("?"),
            a["source"]["ip"].as_str().unwrap_or("?"),
            a["message"].as_str().unwrap_or("")
        );
    }
}
