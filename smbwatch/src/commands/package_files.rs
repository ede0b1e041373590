//! `smbwatch package-files DIR` (hidden): what the Debian package ships
//! besides the binary, generated from the definitions so they cannot drift:
//! smbwatch(8) and one page per subcommand from the command line (clap),
//! smbwatch.toml(5) and the conffile from the documented configuration.

use std::path::Path;

use anyhow::{Context as _, Result};

/// Writes `smbwatch.8`, `smbwatch-<sub>.8`, `smbwatch.toml.5` and
/// `smbwatch.toml` (the conffile) into `dir`.
pub fn write(cli: clap::Command, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let put = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    // No `help` subcommand in the pages: clap would list an unshipped
    // smbwatch-help(8).
    let cli = cli
        .version(env!("CARGO_PKG_VERSION"))
        .disable_help_subcommand(true);
    for (shell, file) in [
        (clap_complete::Shell::Bash, "smbwatch.bash"),
        (clap_complete::Shell::Zsh, "_smbwatch"),
        (clap_complete::Shell::Fish, "smbwatch.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cli.clone(), "smbwatch", &mut buf);
        put(file, &buf)?;
    }
    let mut pages = vec![("smbwatch.8".to_owned(), cli.clone())];
    sub_pages(&cli, "smbwatch", &mut pages);
    for (file, cmd) in pages {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd)
            .section("8")
            .manual("System Administration")
            .render(&mut buf)?;
        if file == "smbwatch.8" || file == "smbwatch-run.8" {
            buf.extend_from_slice(OPERATION_SECTIONS.as_bytes());
        }
        put(&file, &buf)?;
    }
    let version = env!("CARGO_PKG_VERSION");
    put(
        "smbwatch.toml.5",
        smbwatch::config::docs::man5(version).as_bytes(),
    )?;
    put(
        "smbwatch.toml",
        smbwatch::config::docs::conffile().as_bytes(),
    )?;
    println!("{}", dir.display());
    Ok(())
}

/// One page per visible subcommand at every level (`smbwatch-baseline-learn`),
/// since a page lists its subcommands' pages; none for `help`.
fn sub_pages(cmd: &clap::Command, prefix: &str, pages: &mut Vec<(String, clap::Command)>) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("{prefix}-{}", sub.get_name());
        let page = sub
            .clone()
            .name(name.clone())
            .version(env!("CARGO_PKG_VERSION"))
            .disable_help_subcommand(true);
        sub_pages(&page, &name, pages);
        pages.push((format!("{name}.8"), page));
    }
}

/// FILES, SIGNALS, EXIT STATUS, ENVIRONMENT and EXAMPLES of smbwatch(8)
/// and smbwatch-run(8) (roff), after what clap renders.
const OPERATION_SECTIONS: &str = r#".SH FILES
.TP
\fI/etc/smbwatch/smbwatch.toml\fR
The configuration (see \fBsmbwatch.toml\fR(5)); \fBsmbwatch check\-config\fR checks it.
.TP
\fI/sys/fs/bpf/smbwatch\fR
The pinned maps \fBsmbwatch status\fR reads (the service sees it at \fI/run/smbwatch/bpf\fR).
.TP
\fI/run/smbwatch/pin\-*.lock\fR
One lock per pin directory, named by its device and inode: a second daemon on the same directory is refused.
.TP
\fI/var/log/smbwatch/\fR
Alert files (\fB[alert] json\fR); rotated by \fI/etc/logrotate.d/smbwatch\fR.
.TP
\fI/var/lib/smbwatch/\fR
State (the learned baseline).
.TP
\fI/lib/systemd/system/smbwatch.service\fR
The unit.
.SH SIGNALS
.TP
\fBSIGHUP\fR
Reopen the alert files (after rotation), then re\-read the configuration file; a file that does not load or validate changes nothing and is logged at error. \fBsystemctl reload smbwatch\fR checks the file first and fails on a bad one.
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Drain the ring buffer a last time, deliver queued alerts, detach every XDP program, remove the pins, exit 0.
.SH ENVIRONMENT
.TP
\fBSMBWATCH_LOG\fR
Log filter (tracing EnvFilter syntax), e.g. \fBdebug\fR or \fBinfo,smbwatch::daemon=debug\fR. Default: \fBinfo,async_nats=warn,evtx=error\fR. Kernel counters are logged at debug.
.TP
\fBJOURNAL_STREAM\fR
Set by systemd; when it names stderr, log lines go to the journal natively (priorities, \fBSMBWATCH_*\fR fields, no second timestamp).
.SH EXIT STATUS
.TP
\fB0\fR
Success (for \fBrun\fR: stopped by SIGTERM or SIGINT, detached cleanly).
.TP
\fB1\fR
An error, printed on stderr as \fBsmbwatch: error: \fR followed by what failed and why (a bad configuration names the key and the line).
.TP
\fB2\fR
A command line clap refused (unknown option, bad value).
.SH EXAMPLES
.TP
Watch two interfaces, alerts to the journal:
\fBsmbwatch run \-\-iface eth0 \-\-iface eth1\fR
.TP
Alerts as ECS JSON lines and to syslog:
\fBsmbwatch run \-i eth0 \-i eth1 \-\-json /var/log/smbwatch/alerts.json \-\-syslog unix:///dev/log\fR
.TP
As the service:
\fBsmbwatch check\-config /etc/smbwatch/smbwatch.toml && systemctl enable \-\-now smbwatch\fR
.TP
What the kernel sees now:
\fBsmbwatch status \-\-top 10\fR
.TP
A capture through the same XDP program and detection:
\fBsmbwatch replay \-\-pcap capture.pcap\fR
.TP
Alerts of the service in the journal:
\fBjournalctl \-u smbwatch \-p warning SMBWATCH_RULE=smb_scan_fanout\fR
"#;
