//! Reading the daemon's and replay's gateway event lines (`--events`): ECS
//! documents with `event.kind: event` and `event.action` `new_pair`,
//! `accepted` or `refused`; the client is `source`, the server
//! `destination`.

use serde_json::Value;

/// A gateway event line's `event.action`; "" for any other line (alerts).
pub fn action(v: &Value) -> &str {
    if v["event"]["kind"] == "event" {
        v["event"]["action"].as_str().unwrap_or("")
    } else {
        ""
    }
}

/// True for a `new_pair` line.
pub fn is_new_pair(v: &Value) -> bool {
    action(v) == "new_pair"
}

/// True for an answer line (`accepted` or `refused`).
pub fn is_answer(v: &Value) -> bool {
    matches!(action(v), "accepted" | "refused")
}
