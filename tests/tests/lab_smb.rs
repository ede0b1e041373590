//! SMB on the wire in the namespace lab: real Samba clients through the
//! gateway where smbwatch has XDP attached; the kernel samples the
//! connections' payload and the daemon's pipeline says what they did.
//!
//! Covered: `smbclient` to a share (a plain file copy: no SMB alert) and to
//! `IPC$`, `rpcclient` enumeration (srvsvc NetShareEnum, samr
//! EnumDomainUsers), and impacket from PyPI (installed by `cargo xtask
//! setup`): its `smbclient.py` putting an .exe on `C$`, its library
//! writing `.tmp` to `C$` and renaming it to `.exe`, `psexec.py`,
//! `smbexec.py` and `atexec.py`, against a Samba exporting `ADMIN$`/`C$`.
//! Samba creates no services and has no task scheduler: psexec and smbexec
//! fail after their CreateServiceW (asserted: `smb_remote_service`); atexec
//! is answered by a responder behind Samba's `np/atsvc` socket that faults
//! its SchRpcRegisterTask (asserted: `smb_remote_task`). What is asserted
//! is what crossed the wire. Last, the
//! Samba offers SMB 3 encryption and impacket's `put` is encrypted: its
//! logon names the user, then `smb_encrypted`, and no share, file or alert.

use std::{path::Path, time::Duration};

use integration_tests::{
    daemon::{json_lines, Daemon},
    netns::Lab,
    require_root,
    samba::Smbd,
    Scratch,
};
use serde_json::Value;

fn action(v: &Value) -> &str {
    v["event"]["action"].as_str().unwrap_or("")
}

/// `v` is `want` or a list holding it (`rpc.operation` is a list).
fn is(v: &Value, want: &str) -> bool {
    v == want || v.as_array().is_some_and(|a| a.iter().any(|x| x == want))
}

fn smb_lines(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|l| l["event"]["dataset"] == "smbwatch.smb")
        .collect()
}

#[test]
fn samba_clients_are_seen_on_the_wire() {
    require_root();
    let lab = Lab::new(1).expect("lab");
    let server = lab.server_v4[0];
    lab.wait_reachable(server).unwrap();
    let smbd = Smbd::start_admin(&lab.servers, &[server], USER, PASSWORD).expect("smbd");
    let dir = Scratch::new("lab-smb");
    let json = dir.0.join("alerts.json");
    // rpcclient runs every call on one connection: sample all of it.
    let conf = dir.0.join("smbwatch.toml");
    std::fs::write(
        &conf,
        "[dataplane.sampling]\nsegments = 255\nbytes = 4096\n",
    )
    .unwrap();
    let daemon = Daemon::on_gateway(
        &lab,
        &json,
        &["--events", "--config", conf.to_str().unwrap()],
    )
    .expect("smbwatch on the gateway");

    // A plain file copy from a normal share. Anonymous (`-U %`): root, the
    // Unix name smbclient would log on with, has a password here.
    let public = format!("//{server}/public");
    let out = lab
        .attacker
        .exec(
            "smbclient",
            &[&public, "-U", "%", "-N", "-c", "get hello.txt /dev/stdout"],
        )
        .expect("smbclient");
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from the lab"));
    let tree = |l: &[Value], share: &str| {
        smb_lines(l).iter().any(|e| {
            action(e) == "smb_tree_connect"
                && e["smb"]["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(share))
        })
    };
    let lines = daemon.lines_when(Duration::from_secs(10), |l| {
        tree(l, "\\public") && smb_lines(l).iter().any(|e| action(e) == "smb_create")
    });
    assert!(tree(&lines, "\\public"), "{:#?}", smb_lines(&lines));
    let copy = smb_lines(&lines);
    assert!(
        copy.iter().any(|e| action(e) == "smb_create"),
        "the file's create is seen: {copy:#?}"
    );

    // IPC$ alone, then rpcclient's enumerations over named pipes.
    let ipc = format!("//{server}/IPC$");
    lab.attacker
        .exec("smbclient", &[&ipc, "-U", "%", "-N", "-c", "exit"])
        .expect("smbclient IPC$");
    let target = server.to_string();
    lab.attacker
        .exec(
            "rpcclient",
            &["-U", "%", "-N", &target, "-c", "netshareenum;enumdomusers"],
        )
        .expect("rpcclient");
    // A call on `iface` whose operation name contains `op` ("": any; Samba's
    // rpcclient netshareenum is srvsvc opnum 36, NetrShareEnumSticky).
    let rpc = |l: &[Value], iface: &str, op: &str| {
        smb_lines(l).iter().any(|e| {
            action(e) == "rpc_call"
                && e["rpc"]["interface"]["name"] == iface
                && e["rpc"]["operation"].to_string().contains(op)
        })
    };
    let lines = daemon.lines_when(Duration::from_secs(10), |l| {
        tree(l, "\\IPC$") && rpc(l, "srvsvc", "") && rpc(l, "samr", "EnumerateUsers")
    });
    let smb = smb_lines(&lines);
    assert!(tree(&lines, "\\IPC$"), "{smb:#?}");
    assert!(rpc(&lines, "srvsvc", ""), "srvsvc: {smb:#?}");
    assert!(rpc(&lines, "samr", "EnumerateUsers"), "samr: {smb:#?}");
    assert!(
        smb.iter()
            .all(|e| e["destination"]["ip"] == target.as_str()),
        "every line names the server"
    );
    let impacket = lateral_movement(&lab, &daemon, &smbd, &target, &dir.0);
    let hidden = impacket.then(|| encrypted_put(&lab, &daemon, &smbd, &target, &dir.0));
    assert_eq!(daemon.stop().unwrap(), 0);

    let alerts = json_lines(&std::fs::read(&json).unwrap_or_default());
    if let Some(hidden) = hidden {
        check_lateral_alerts(&alerts, &target, &hidden);
    }

    // The plain copy from `public` raised no SMB alert.
    let smb_alerts: Vec<&Value> = alerts
        .iter()
        .filter(|a| {
            a["rule"]["id"]
                .as_str()
                .is_some_and(|r| r.starts_with("smb_") && !r.starts_with("smb_scan"))
        })
        .collect();
    assert!(
        smb_alerts.iter().all(|a| !a.to_string().contains("public")),
        "a plain copy from a normal share raises no SMB alert: {smb_alerts:#?}"
    );
}

/// The account impacket logs on with (Samba maps it to root).
const USER: &str = "labadmin";
const PASSWORD: &str = "Lab-Passw0rd";

/// Where `cargo xtask setup` installs impacket (xtask/src/setup.rs,
/// `IMPACKET_VENV`).
const IMPACKET_VENV: &str = "/var/cache/smbwatch-test/impacket-0.13";

/// Seconds an impacket client may run: against Samba they fail fast, a
/// hanging one is killed so it cannot hang the test.
const CLIENT_TIMEOUT: &str = "40";

/// Runs impacket's `script` with `args` on the attacker under a timeout;
/// returns its combined output (for failure messages).
fn impacket(lab: &Lab, script: &str, args: &[&str]) -> String {
    // Not `exec`: a client failing against Samba is expected.
    let out = lab
        .attacker
        .command("timeout")
        .args(["-s", "KILL", CLIENT_TIMEOUT])
        .arg(format!("{IMPACKET_VENV}/bin/{script}"))
        .args(args)
        .output()
        .expect(script);
    format!(
        "{script} ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// impacket's `smbclient.py` putting a (fake) executable `name` on `C$` as
/// `creds`; returns its output.
fn put_on_c(lab: &Lab, scratch: &Path, creds: &str, name: &str) -> String {
    let exe = scratch.join(name);
    std::fs::write(&exe, b"MZ not really a program\n").unwrap();
    let cmds = scratch.join("impacket-smbclient.txt");
    std::fs::write(&cmds, format!("use C$\nput {}\nexit\n", exe.display())).unwrap();
    impacket(
        lab,
        "smbclient.py",
        &["-inputfile", cmds.to_str().unwrap(), creds],
    )
}

/// impacket's own library (`SMBConnection`, what its scripts use; its
/// `smbclient.py` has no rename): `NAME.tmp` written to `C$`, then renamed
/// to `NAME.exe` with SMB2 SET_INFO FileRenameInformation.
const RENAME_PY: &str = r#"
import io, sys
from impacket.smbconnection import SMBConnection
host, user, password, name = sys.argv[1:5]
c = SMBConnection(host, host)
c.login(user, password)
c.putFile('C$', name + '.tmp', io.BytesIO(b'MZ not really a program').read)
c.rename('C$', name + '.tmp', name + '.exe')
c.logoff()
"#;

/// Runs [`RENAME_PY`] for `name`; returns its output.
fn rename_on_c(lab: &Lab, scratch: &Path, server: &str, name: &str) -> String {
    let script = scratch.join("impacket-rename.py");
    std::fs::write(&script, RENAME_PY).unwrap();
    let out = lab
        .attacker
        .command("timeout")
        .args(["-s", "KILL", CLIENT_TIMEOUT])
        .arg(format!("{IMPACKET_VENV}/bin/python3"))
        .arg(&script)
        .args([server, USER, PASSWORD, name])
        .output()
        .expect("python3");
    format!(
        "impacket rename ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// impacket's clients against the lab's Samba, each waited for on the
/// wire (its event lines) before the next starts. Returns false when
/// impacket is not installed (skipped; a failure under CI=true).
fn lateral_movement(lab: &Lab, daemon: &Daemon, smbd: &Smbd, server: &str, scratch: &Path) -> bool {
    if !Path::new(IMPACKET_VENV).join("bin/psexec.py").exists() {
        integration_tests::skip(&format!(
            "impacket not installed in {IMPACKET_VENV} (cargo xtask setup installs it)"
        ));
        return false;
    }
    let creds = format!("{USER}:{PASSWORD}@{server}");
    let wait = |what: &str, out: &str, pred: &dyn Fn(&[Value]) -> bool| {
        let lines = daemon.lines_when(Duration::from_secs(15), pred);
        assert!(
            pred(&lines),
            "{what} not seen on the wire; {out}\n{:#?}",
            smb_lines(&lines)
        );
    };
    let call = |l: &[Value], iface: &str, op: &str| {
        smb_lines(l).iter().any(|e| {
            action(e) == "rpc_call"
                && is(&e["rpc"]["interface"]["name"], iface)
                && is(&e["rpc"]["operation"], op)
        })
    };

    // smbclient.py: an executable put on C$.
    let out = put_on_c(lab, scratch, &creds, "lab-tool.exe");
    wait("smbclient.py's write of lab-tool.exe", &out, &|l| {
        smb_lines(l)
            .iter()
            .any(|e| action(e) == "smb_write" && e["file"]["name"] == "lab-tool.exe")
    });

    // An executable dropped as .tmp and renamed to .exe on C$.
    let out = rename_on_c(lab, scratch, server, "lab-renamed");
    wait(
        "the rename of lab-renamed.tmp to lab-renamed.exe",
        &out,
        &|l| {
            smb_lines(l).iter().any(|e| {
                action(e) == "smb_rename"
                    && e["file"]["name"] == "lab-renamed.exe"
                    && e["smb"]["renamed_from"]
                        .as_str()
                        .is_some_and(|f| f.ends_with("lab-renamed.tmp"))
            })
        },
    );

    // psexec.py: finds a writable share, uploads its service binary,
    // then svcctl OpenSCManagerW and CreateServiceW (Samba refuses it).
    let out = impacket(
        lab,
        "psexec.py",
        &["-remote-binary-name", "psexec-lab.exe", &creds, "whoami"],
    );
    wait("psexec.py's upload and CreateServiceW", &out, &|l| {
        smb_lines(l)
            .iter()
            .any(|e| action(e) == "smb_write" && e["file"]["name"] == "psexec-lab.exe")
            && call(l, "svcctl", "RCreateServiceW")
    });

    // smbexec.py: svcctl straight away, CreateServiceW with the command
    // line; Samba refuses it, so it never reaches C$ for its output. Its
    // alerts are psexec's acts again (same client, server, pipe and
    // interface within the dedup window): duplicates, not new alerts, so
    // its call is asserted on the event lines.
    let before = daemon
        .lines_when(Duration::ZERO, |_| true)
        .iter()
        .filter(|e| call(std::slice::from_ref(e), "svcctl", "RCreateServiceW"))
        .count();
    let out = impacket(lab, "smbexec.py", &["-service-name", "smbexec-lab", &creds]);
    wait("smbexec.py's CreateServiceW", &out, &|l| {
        l.iter()
            .filter(|e| call(std::slice::from_ref(e), "svcctl", "RCreateServiceW"))
            .count()
            > before
    });

    // atexec.py: ITaskSchedulerService over \pipe\atsvc, bound with NTLMSSP
    // at PKT_PRIVACY. Samba has no task scheduler; a responder behind its
    // np/atsvc socket accepts the BIND and faults every call, so atexec's
    // SchRpcRegisterTask crosses the wire (its stub sealed, its header in
    // clear) and is refused ("rpc_s_access_denied").
    let _atsvc = smbd
        .serve_pipe(&format!("{IMPACKET_VENV}/bin/python3"), "atsvc")
        .expect("the atsvc responder");
    let out = impacket(lab, "atexec.py", &[&creds, "whoami"]);
    wait("atexec.py's SchRpcRegisterTask", &out, &|l| {
        call(l, "ITaskSchedulerService", "SchRpcRegisterTask")
    });
    true
}

/// impacket encrypts every session whose server offers SMB 3 encryption:
/// a `put` of an executable to `C$` then shows its logon (the user) and
/// `smb_encrypted`, and neither the share nor the file (nothing guessed
/// from ciphertext). Returns the file's name (`check_lateral_alerts`: no
/// alert names it).
fn encrypted_put(lab: &Lab, daemon: &Daemon, smbd: &Smbd, server: &str, scratch: &Path) -> String {
    smbd.offer_encryption().expect("smbd reload");
    let creds = format!("{USER}:{PASSWORD}@{server}");
    let encrypted = |l: &[Value]| {
        smb_lines(l)
            .iter()
            .filter(|e| action(e) == "smb_encrypted")
            .count()
    };
    // smbd reloads its configuration asynchronously: a connection made
    // before the reload is still in clear text, so try again, each time
    // with another file name.
    for attempt in 0..5 {
        let before = encrypted(&daemon.lines_when(Duration::ZERO, |_| true));
        let name = format!("hidden-{attempt}.exe");
        let out = put_on_c(lab, scratch, &creds, &name);
        let lines = daemon.lines_when(Duration::from_secs(3), |l| encrypted(l) > before);
        if encrypted(&lines) == before {
            eprintln!("attempt {attempt}: not encrypted yet; {out}");
            continue;
        }
        let smb = smb_lines(&lines);
        // The encrypted connection's logon names the user.
        assert!(
            smb.iter()
                .filter(|e| action(e) == "smb_encrypted")
                .all(|e| is(&e["user"]["name"], USER)),
            "{smb:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
        let lines = daemon.lines_when(Duration::ZERO, |_| true);
        assert!(
            !lines.iter().any(|e| e.to_string().contains(&name)),
            "nothing of an encrypted session's file is seen: {:#?}",
            smb_lines(&lines)
        );
        return name;
    }
    panic!("no impacket session was encrypted after smbd offered encryption");
}

/// The alerts impacket's traffic must have raised, with the NTLMSSP user
/// and the share.
fn check_lateral_alerts(alerts: &[Value], server: &str, hidden: &str) {
    let of = |kind: &str| -> Vec<&Value> {
        alerts
            .iter()
            .filter(|a| is(&a["rule"]["id"], kind))
            .collect()
    };
    let all = || format!("{alerts:#?}");
    for a in of("smb_admin_share")
        .iter()
        .chain(&of("smb_file_drop"))
        .chain(&of("smb_remote_service"))
        .chain(&of("smb_remote_task"))
    {
        assert!(is(&a["user"]["name"], USER), "{a:#}");
        assert!(is(&a["destination"]["ip"], server), "{a:#}");
    }
    // smbclient.py on C$, psexec.py on ADMIN$, psexec's and smbexec's
    // \svcctl on IPC$.
    for (share, pipe) in [("C$", None), ("ADMIN$", None), ("IPC$", Some("svcctl"))] {
        assert!(
            of("smb_admin_share")
                .iter()
                .any(|a| is(&a["smbwatch"]["share"], share)
                    && pipe.is_none_or(|p| is(&a["smb"]["named_pipe"], p))),
            "smb_admin_share on {share} {pipe:?}: {}",
            all()
        );
    }
    for (file, share) in [
        ("lab-tool.exe", "C$"),
        ("lab-renamed.exe", "C$"),
        ("psexec-lab.exe", "ADMIN$"),
    ] {
        assert!(
            of("smb_file_drop")
                .iter()
                .any(|a| is(&a["file"]["name"], file) && is(&a["smbwatch"]["share"], share)),
            "smb_file_drop of {file} on {share}: {}",
            all()
        );
    }
    assert!(
        of("smb_remote_service").iter().any(|a| {
            is(&a["rpc"]["interface"]["name"], "svcctl")
                && is(&a["rpc"]["operation"], "RCreateServiceW")
        }),
        "smb_remote_service: {}",
        all()
    );
    assert!(
        !alerts.iter().any(|a| a.to_string().contains(hidden)),
        "the encrypted put raised nothing: {}",
        all()
    );
    // atexec's task registration, with the SMB session's user.
    let tasks = of("smb_remote_task");
    assert_eq!(tasks.len(), 1, "{}", all());
    assert!(is(
        &tasks[0]["rpc"]["interface"]["name"],
        "ITaskSchedulerService"
    ));
    assert!(is(&tasks[0]["rpc"]["operation"], "SchRpcRegisterTask"));
    assert!(
        is(&tasks[0]["smb"]["named_pipe"], "atsvc"),
        "{:#}",
        tasks[0]
    );
}
