//! Reading what the daemon wrote to its JSON alert file.

use std::path::Path;

use serde_json::Value;

/// Every alert line in `path` (none if it does not exist yet). A line that
/// is not JSON, or not ECS as [`check_ecs`] holds it, fails the test: the
/// sink must only write whole, conforming documents.
pub fn read(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v = serde_json::from_str(l).expect("JSON alert line");
            check_ecs(&v);
            v
        })
        .collect()
}

/// Fails unless `doc` conforms to the ECS field table
/// (`smbwatch::alert::ecs::fields`): every field defined, typed right,
/// lists where ECS wants lists, allowed values only.
pub fn check_ecs(doc: &Value) {
    let errors = smbwatch::alert::ecs::fields::validate(doc);
    assert!(errors.is_empty(), "not ECS: {errors:#?}\n{doc:#}");
}

/// An alert's kind (`rule.id`), or "".
pub fn rule_id(v: &Value) -> &str {
    v["rule"]["id"].as_str().unwrap_or("")
}

/// Polls `path` until `pred` holds for its alerts or `timeout` passes;
/// returns the alerts last read.
pub fn wait(
    path: &Path,
    timeout: std::time::Duration,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let a = read(path);
        if pred(&a) || std::time::Instant::now() > deadline {
            return a;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
