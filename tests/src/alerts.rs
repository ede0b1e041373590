//! Reading what the daemon wrote to its JSON alert file.

use std::path::Path;

use serde_json::Value;

/// Every alert line in `path` (none if it does not exist yet). A line that
/// is not JSON fails the test: the sink must only write whole documents.
pub fn read(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON alert line"))
        .collect()
}

/// An alert's kind (`event.code`), or "".
pub fn code(v: &Value) -> &str {
    v["event"]["code"].as_str().unwrap_or("")
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
