//! What the package ships from the documented configuration file
//! (`docs/smbwatch.toml`, which a test keeps equal to the defaults): the
//! conffile `/etc/smbwatch/smbwatch.toml` with every key commented out,
//! and the manual page smbwatch.toml(5). One source, two renderings.

/// `docs/smbwatch.toml`: every key at its default, with its explanation.
pub const DOCUMENTED: &str = include_str!("../../../docs/smbwatch.toml");

/// Whether `line` sets a key (`name = value`), not a comment or a table.
fn key_of(line: &str) -> Option<(&str, &str)> {
    let (k, v) = line.split_once(" = ")?;
    let ok = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    ok.then_some((k, v))
}

/// The conffile: the documented file with every key commented out (a
/// commented key keeps its default, so upgrades that change a default
/// reach users who never set it), and a header saying what to set.
pub fn conffile() -> String {
    let mut out = String::from(
        "# /etc/smbwatch/smbwatch.toml: the configuration of the smbwatch service.\n\
         #\n\
         # Every key below is commented out at its default. To start, set the\n\
         # interfaces to watch in [dataplane] and a sink in [alert] (without one,\n\
         # alerts go to the journal at priority warning), then:\n\
         #   smbwatch check-config /etc/smbwatch/smbwatch.toml\n\
         #   systemctl enable --now smbwatch      # or: systemctl reload smbwatch\n\
         # See smbwatch.toml(5).\n\
         #\n",
    );
    for line in DOCUMENTED.lines() {
        if key_of(line).is_some() {
            out.push_str("# ");
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Escapes text for roff: backslashes, and a leading `.` or `'` that
/// would read as a request.
fn roff(text: &str) -> String {
    let t = text.replace('\\', "\\e");
    if t.starts_with(['.', '\'']) {
        format!("\\&{t}")
    } else {
        t
    }
}

/// smbwatch.toml(5), rendered from the documented file: its opening
/// comment is the description, each `[section]` a subsection, and each
/// key (set, or commented out as an optional one) an entry with its
/// default and the comment above it.
pub fn man5(version: &str) -> String {
    let mut out = format!(
        ".TH SMBWATCH.TOML 5 \"\" \"smbwatch {v}\" \"File Formats\"\n\
         .SH NAME\n\
         smbwatch.toml \\- configuration file of smbwatch(8)\n\
         .SH SYNOPSIS\n\
         /etc/smbwatch/smbwatch.toml\n\
         .SH DESCRIPTION\n",
        v = roff(version)
    );
    let mut comment: Vec<String> = Vec::new();
    let mut in_header = true;
    let flush = |out: &mut String, comment: &mut Vec<String>| {
        for c in comment.drain(..) {
            if c.is_empty() {
                out.push_str(".PP\n");
            } else if c.starts_with("  ") {
                // Indented example lines keep their layout.
                out.push_str(&format!(".nf\n{}\n.fi\n", roff(c.trim())));
            } else {
                out.push_str(&roff(&c));
                out.push('\n');
            }
        }
    };
    for line in DOCUMENTED.lines() {
        let t = line.trim_end();
        if let Some(c) = t.strip_prefix('#') {
            let c = c.strip_prefix(' ').unwrap_or(c);
            if let Some((k, v)) = key_of(c) {
                out.push_str(&format!(
                    ".TP\n\\fB{}\\fR (optional; e.g. {})\n",
                    roff(k),
                    roff(v)
                ));
                flush(&mut out, &mut comment);
            } else {
                comment.push(c.to_owned());
            }
        } else if t.is_empty() {
            if in_header {
                flush(&mut out, &mut comment);
                in_header = false;
                out.push_str(".SH KEYS\n");
            } else {
                comment.push(String::new());
            }
        } else if t.starts_with('[') {
            flush(&mut out, &mut comment);
            out.push_str(&format!(".SS {}\n", roff(t)));
        } else if let Some((k, v)) = key_of(t) {
            out.push_str(&format!(".TP\n\\fB{}\\fR = {}\n", roff(k), roff(v)));
            flush(&mut out, &mut comment);
        }
    }
    flush(&mut out, &mut comment);
    out.push_str(
        ".SH RELOADING\n\
         SIGHUP (systemctl reload smbwatch) re-reads the file and validates it whole. \
         Thresholds, windows, allowlists, per-subnet rules, the host rules, alert sinks \
         and the host-log listener change at once, without detaching XDP or losing \
         detector state. A file with an error changes nothing; the error names the file, \
         line and key. These need a restart (a reload logs that they changed and keeps \
         the running values):\n",
    );
    for (key, why) in super::reload::RESTART_KEYS {
        out.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", roff(key), roff(why)));
    }
    out.push_str(".SH SEE ALSO\nsmbwatch(8), smbwatch-run(8)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// Every key is commented out, and the file still parses to the defaults.
    #[test]
    fn conffile_comments_every_key_and_means_the_defaults() {
        let text = conffile();
        let cfg = Config::from_str_named(&text, "conffile").unwrap();
        assert_eq!(cfg, Config::default());
        let set: Vec<&str> = DOCUMENTED.lines().filter(|l| key_of(l).is_some()).collect();
        assert!(set.len() > 50, "{} keys", set.len());
        for l in set {
            assert!(text.contains(&format!("\n# {l}\n")), "{l}");
        }
        assert!(text.lines().all(|l| key_of(l).is_none()));
    }

    /// Every key of the documented file has an entry in the man page.
    #[test]
    fn man_page_lists_every_key_and_section() {
        let man = man5("1.2.3");
        assert!(man.starts_with(".TH SMBWATCH.TOML 5"));
        for l in DOCUMENTED.lines() {
            if let Some((k, _)) = key_of(l) {
                assert!(man.contains(&format!("\\fB{k}\\fR = ")), "{k}");
            }
            if l.starts_with('[') {
                assert!(man.contains(&format!(".SS {l}\n")), "{l}");
            }
        }
        assert!(man.contains("\\fBjson\\fR (optional"), "commented keys too");
        assert!(!man
            .lines()
            .any(|l| l.starts_with('.') && l.len() > 1 && l.as_bytes()[1] == b' '));
    }
}
