//! Configuration tests: defaults, the example file, and errors that name
//! the key and the line. Durations' tests are in `duration_keys`, each
//! section's value checks in `values`.

mod duration_keys;
mod values;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_str_named(text, "test.toml")
}

/// The error's (line, key, message); panics if the text was accepted.
fn error(text: &str) -> (usize, Option<String>, String) {
    match parse(text) {
        Err(ConfigError::Invalid {
            file,
            line,
            key,
            message,
            ..
        }) => {
            assert_eq!(file, "test.toml");
            (line, key, message)
        }
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

#[test]
fn defaults_are_valid() {
    Config::default().validate().unwrap();
    assert_eq!(parse("").unwrap(), Config::default());
    let d = Config::default().detect;
    assert_eq!(
        (d.fanout_threshold, d.window, d.response_timeout),
        (20, Duration::from_secs(60), Duration::from_secs(3))
    );
    assert_eq!(
        (d.trw_theta0, d.trw_theta1, d.trw_pd, d.trw_pf),
        (0.8, 0.2, 0.99, 0.01)
    );
    assert_eq!(d.hold_down, Duration::from_secs(600));
}

#[test]
fn example_file_documents_the_defaults() {
    let text = include_str!("../../../docs/smbwatch.toml");
    let cfg = Config::from_str_named(text, "docs/smbwatch.toml").unwrap();
    assert_eq!(cfg, Config::default());
}

#[test]
fn example_file_names_every_key() {
    // Every key of every section appears in the example, set or commented.
    let text = include_str!("../../../docs/smbwatch.toml");
    let full = toml::Value::try_from(Config::default()).unwrap();
    for (section, table) in full.as_table().unwrap() {
        assert!(
            text.contains(&format!("[{section}]")),
            "[{section}] missing"
        );
        for key in table.as_table().unwrap().keys() {
            if (section.as_str(), key.as_str()) == ("detect", "subnet") {
                assert!(
                    text.contains("# [[detect.subnet]]"),
                    "detect.subnet example missing"
                );
                continue;
            }
            // A nested table (e.g. [hostlog.rules]): its header and its keys.
            if let Some(sub) = table[key].as_table() {
                assert!(
                    text.contains(&format!("[{section}.{key}]")),
                    "[{section}.{key}] missing"
                );
                for k in sub.keys() {
                    assert!(
                        text.contains(&format!("\n{k} = ")),
                        "{section}.{key}.{k} missing"
                    );
                }
                continue;
            }
            assert!(
                text.contains(&format!("\n{key} = ")),
                "{section}.{key} missing"
            );
        }
    }
    for key in [
        "json",
        "hostname",
        "tls_ca",
        "tls_server_name",
        "listen",
        "tls_cert",
        "tls_key",
        "tls_client_ca",
        "cidr",
        "window",
    ] {
        assert!(
            text.contains(&format!("# {key} = ")),
            "optional key {key} not shown"
        );
    }
}

#[test]
fn unknown_key_names_key_and_line() {
    let (line, key, message) = error("[detect]\nfanout_threshold = 30\nfanout_treshold = 40\n");
    assert_eq!(line, 3);
    assert_eq!(key.as_deref(), Some("detect.fanout_treshold"));
    assert!(
        message.contains("unknown field `fanout_treshold`"),
        "{message}"
    );

    let (line, key, _) = error("# comment\n[detec]\nwindow = \"1m\"\n");
    assert_eq!((line, key.as_deref()), (2, Some("detec")));

    let (line, key, _) = error("[detect]\n\n[[detect.subnet]]\ncidr = \"10.0.0.0/8\"\nfanout_threshold = 5\nthreshold = 5\n");
    assert_eq!(
        (line, key.as_deref()),
        (6, Some("detect.subnet[0].threshold"))
    );
}

#[test]
fn error_display_names_file_line_and_key() {
    let err = parse("[detect]\nwindow = \"0s\"\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "test.toml:2:1: detect.window: must be greater than 0"
    );
}

#[test]
fn a_duration_without_unit_shows_the_form() {
    let err = parse("[detect]\nwindow = \"2\"\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "test.toml:2:10: detect.window: invalid value: string \"2\", expected a duration with a unit, e.g. \"90s\", \"15m\", \"2h\", \"1500ms\""
    );
}

#[test]
fn syntax_errors_have_a_line() {
    let (line, key, _) = error("[detect]\nwindow = \"1m\"\nfanout_threshold = \n");
    assert_eq!(line, 3);
    assert_eq!(key, None, "an unparsable document has no keys to name");
}

#[test]
fn validate_after_overrides_names_the_key() {
    let mut cfg = Config::default();
    cfg.detect.window = Duration::ZERO;
    let err = cfg.validate().unwrap_err();
    assert_eq!(err.to_string(), "detect.window: must be greater than 0");
}

#[test]
fn load_reads_the_file_and_names_it() {
    let dir = std::env::temp_dir().join(format!("smbwatch-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("smbwatch.toml");
    std::fs::write(&path, "[detect]\nfanout_threshold = 25\nbogus = true\n").unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "{}:3:1: detect.bogus: unknown field",
            path.display()
        )),
        "{err}"
    );
    std::fs::write(&path, "[detect]\nfanout_threshold = 25\n").unwrap();
    assert_eq!(Config::load(&path).unwrap().detect.fanout_threshold, 25);
    let missing = dir.join("missing.toml");
    let err = Config::load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("missing.toml"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn messages_read_well() {
    for text in [
        "[detect]\nfanout_treshold = 40\n",
        "[detect]\nallow = [\"10.0.0.0/33\"]\n",
        "[detect]\nwindow = \"-5s\"\n",
        "[dataplane]\nports = [70000]\n",
        "[syslog]\ntarget = \"smtp://x\"\n",
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.starts_with("test.toml:2:"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
}
