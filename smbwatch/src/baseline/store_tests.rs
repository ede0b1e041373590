//! The store and the JSON-lines round trip, with the learner's scripted
//! office week (`smbwatch_core::baseline::week`).

use std::time::Duration;

use smbwatch_core::baseline::bench;
use smbwatch_core::baseline::week::*;

use super::*;
use crate::alert::AlertKind;

fn temp_db(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("smbwatch-baseline-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("baseline.redb")
}

#[test]
fn store_round_trip_and_json_lines() {
    let path = temp_db("roundtrip");
    let mut b = baseline();
    office_week(&mut b);
    let store = store::Store::open(&path).unwrap();
    store.write(&b.take_batch()).unwrap();
    drop(store);
    let snap = store::Store::open(&path).unwrap().load().unwrap();
    let mut want = b.snapshot();
    want.meta.batches = 1;
    let mut got = snap.clone();
    got.clients.sort_by_key(|(k, _)| *k);
    got.edges.sort_by_key(|(k, _)| *k);
    assert_eq!(got, want);
    // A loaded baseline scores like the one that learned.
    let mut again = baseline().from_snapshot(snap);
    let a = again.observe(&acc(at(7, 3, 0), WS[0], WS[1]));
    assert_eq!(kinds(&a), [AlertKind::SmbNewEdge]);
    assert!(
        a[0].message.contains("outside its usual hours"),
        "{}",
        a[0].message
    );
    // Export and import give back the same baseline.
    let mut out = Vec::new();
    jsonl::export(&want, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("{\"type\":\"meta\",\"schema\":2,"),
        "{text}"
    );
    assert!(
        text.contains("\"listed\":[\"192.0.2.10\",\"192.0.2.11\"]"),
        "{text}"
    );
    let back = jsonl::import(text.as_bytes(), "x.jsonl").unwrap();
    assert_eq!(back, want);
    let err = jsonl::import(
        "{\"type\":\"client\",\"addr\":\"nope\"}\n".as_bytes(),
        "bad.jsonl",
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("bad.jsonl:1: "), "{err}");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// A schema-1 file (client records without hosts, weekend hours and
/// usual servers) is read, scores alike, and is marked schema 2; an old
/// export without the new fields imports.
#[test]
fn schema_one_files_and_exports_are_upgraded() {
    let path = temp_db("v1");
    let mut b = baseline();
    office_week(&mut b);
    let mut batch = b.take_batch();
    let store = store::Store::open(&path).unwrap();
    store.set_schema_for_test(1).unwrap();
    // Write the clients as schema 1 did: the first ENCODED_V1 bytes.
    let clients = std::mem::take(&mut batch.clients);
    store.write(&batch).unwrap();
    store
        .write_raw_clients_for_test(
            clients
                .iter()
                .map(|(k, c)| (*k, c.encode()[..Client::ENCODED_V1].to_vec())),
        )
        .unwrap();
    drop(store);
    let store = store::Store::open(&path).unwrap();
    let snap = store.load().unwrap();
    assert_eq!(snap.clients.len(), 4);
    let c = snap
        .clients
        .iter()
        .find(|(k, _)| *k == addr_key(ip(WS[0])))
        .unwrap()
        .1;
    assert_eq!((c.usual_servers, c.weekend_hours, c.addr), (2, 0, 0));
    assert_eq!(c.usual_hours, (1 << 8) | (1 << 13));
    let mut again = baseline().from_snapshot(snap);
    let a = again.observe(&acc(at(7, 3, 0), WS[0], WS[1]));
    assert_eq!(kinds(&a), [AlertKind::SmbNewEdge]);
    drop(store);
    // Now schema 2: an older smbwatch refuses it by name, not silently.
    assert_eq!(
        store::Store::open(&path)
            .unwrap()
            .schema_for_test()
            .unwrap(),
        2
    );
    // An export of schema 1 (no new client fields) imports.
    let old = format!(
        "{{\"type\":\"meta\",\"schema\":1,\"started\":1,\"last\":2,\"learned\":1,\"evicted_clients\":0,\"evicted_edges\":0,\"batches\":1}}\n{}\n",
        serde_json::to_string(&serde_json::json!({"type": "client", "addr": WS[0], "first_seen": 1, "last_seen": 2, "events": 1, "days": 1, "last_day": 0, "day_hours": 0, "week_hours": [0, 0, 0], "hour_days": vec![0; 24], "usual_hours": 0, "established": true, "servers": 0, "listed": []})).unwrap()
    );
    let back = jsonl::import(old.as_bytes(), "old.jsonl");
    assert!(back.is_ok(), "{back:?}");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn damaged_or_newer_files_are_refused_by_name() {
    let path = temp_db("bad");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = store::Store::open(&path)
        .err()
        .expect("garbage refused")
        .to_string();
    assert!(
        err.contains(&path.display().to_string()) && err.contains("move the file away"),
        "{err}"
    );
    std::fs::remove_file(&path).unwrap();
    store::Store::open(&path)
        .unwrap()
        .set_schema_for_test(99)
        .unwrap();
    let err = store::Store::open(&path)
        .err()
        .expect("newer refused")
        .to_string();
    assert!(
        err.contains(&path.display().to_string()) && err.contains("schema version 99"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// The daemon's path: batches queued from the learning thread, written by
/// the writer thread, the last one at finish; a reload equals the learner.
#[test]
fn writer_thread_persists_every_batch() {
    use std::time::Instant;
    let path = temp_db("writer");
    let store = store::Store::open(&path).unwrap();
    let commits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = commits.clone();
    let w = writer::Writer::spawn(store, move |_| {
        seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    })
    .unwrap();
    let mut p = writer::Persist::new(w, Duration::from_secs(1));
    let mut b = baseline();
    let t0 = Instant::now();
    p.tick(&mut b, t0 + Duration::from_secs(5)); // nothing pending: no batch
    office_week(&mut b);
    p.tick(&mut b, t0 + Duration::from_secs(5));
    assert_eq!(b.pending(), 0, "taken");
    b.observe(&acc(at(7, 8, 0), WS[0], FS1));
    p.tick(&mut b, t0 + Duration::from_secs(5)); // not due yet
    assert_eq!(b.pending(), 2);
    let report = p.finish(Some(&mut b)).unwrap();
    assert_eq!(report.batches, 2);
    assert_eq!(commits.load(std::sync::atomic::Ordering::Relaxed), 2);
    let mut got = store::Store::open(&path).unwrap().load().unwrap();
    got.clients.sort_by_key(|(k, _)| *k);
    got.edges.sort_by_key(|(k, _)| *k);
    assert_eq!(got, b.snapshot());
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// Database size per 100,000 edges, as written and compacted, printed.
#[test]
#[ignore]
fn database_size() {
    let path = temp_db("size");
    let mut s = store::Store::open(&path).unwrap();
    let mut b = bench::fresh(BaselineConfig::default());
    let ev = bench::office_events(100_000, 12_500, 1_793_577_600, 10);
    for chunk in ev.chunks(10_000) {
        bench::feed(&mut b, chunk);
        s.write(&b.take_batch()).unwrap();
    }
    let written = std::fs::metadata(&path).unwrap().len();
    s.compact().unwrap();
    let compacted = std::fs::metadata(&path).unwrap().len();
    eprintln!(
        "{} edges: {written} bytes written, {compacted} compacted",
        b.stats().edges
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
