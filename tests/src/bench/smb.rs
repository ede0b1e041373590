//! The SMB parser's throughput (`smbwatch-smb`): TCP payload segments per
//! second on one core, through a fresh `Session` per conversation.

use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use serde_json::json;
use smbwatch_smb::{build, Direction, Segment, Session};

use super::{fmt_num, median, Effort, Section, Table};

/// Replays `conv` (framed messages) cut into segments of at most `size`
/// bytes, a new session each time, for at least `min_time`; segments/s.
fn rate(conv: &[(Direction, Vec<u8>)], size: usize, min_time: Duration) -> f64 {
    let at = SystemTime::UNIX_EPOCH;
    let start = Instant::now();
    let (mut segments, mut observed) = (0u64, 0usize);
    while start.elapsed() < min_time {
        for _ in 0..100 {
            let mut s = Session::new();
            let mut seq = [1u32, 1u32];
            for (d, bytes) in conv {
                let i = usize::from(*d == Direction::ToClient);
                for chunk in bytes.chunks(size) {
                    observed += s.segment(*d, Segment::whole(seq[i], chunk), at).len();
                    seq[i] = seq[i].wrapping_add(chunk.len() as u32);
                    segments += 1;
                }
            }
            observed += s.finish(at).len();
        }
    }
    std::hint::black_box(observed);
    segments as f64 / start.elapsed().as_secs_f64()
}

/// Runs the SMB parser benchmark.
pub fn run(effort: &Effort) -> Result<Section> {
    let conv = build::psexec();
    let min_time = Duration::from_millis(if effort.quick { 300 } else { 1000 });
    let mut table = Table::new(&["measure", "result", "unit", "rounds min–max"]);
    let mut data = serde_json::Map::new();
    for (name, key, size) in [
        (
            "SMB parser: psexec conversation, one segment per message",
            "whole",
            usize::MAX,
        ),
        (
            "SMB parser: the same in 100-byte segments",
            "split_100",
            100,
        ),
    ] {
        let rates: Vec<f64> = (0..effort.rounds)
            .map(|_| rate(&conv, size, min_time))
            .collect();
        let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = rates.iter().copied().fold(0.0, f64::max);
        table.row(vec![
            name.into(),
            fmt_num(median(&rates)),
            "segments/s/core".into(),
            format!("{}–{}", fmt_num(lo), fmt_num(hi)),
        ]);
        data.insert(key.into(), json!(rates));
    }
    Ok(Section {
        title: "SMB parser".into(),
        method: format!(
            "`smbwatch_smb::build::psexec()` ({} messages: negotiate, NTLMSSP logon, ADMIN$ write, \\svcctl bind and three calls) \
replayed through a fresh `Session` per conversation on one thread, whole or cut into 100-byte segments; segments over wall time, \
median of interleaved rounds.\n",
            conv.len()
        ),
        table,
        data: serde_json::Value::Object(data),
        goals: Vec::new(),
    })
}
