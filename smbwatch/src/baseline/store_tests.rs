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

/// A database with the office week, and its bytes.
fn office_db(name: &str) -> (std::path::PathBuf, Vec<u8>) {
    let path = temp_db(name);
    let mut b = baseline();
    office_week(&mut b);
    let store = store::Store::open(&path).unwrap();
    store.write(&b.take_batch()).unwrap();
    drop(store);
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

/// Issue 18: a baseline file with 5 flipped bytes stopped `run` from
/// starting. Now the file is moved aside, named, and a new one started;
/// what is not damage (another process's lock) is still refused.
#[test]
fn a_damaged_file_is_moved_aside_and_a_new_baseline_started() {
    let (path, clean) = office_db("damaged");
    let now = chrono::DateTime::from_timestamp(1_796_000_000, 0).unwrap();
    let mut seed = 12345u64;
    let mut set_aside = 0;
    for round in 0..10 {
        let mut bytes = clean.clone();
        // Five bytes of the header and first pages, where they matter.
        for _ in 0..5 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            bytes[(seed >> 33) as usize % 512] ^= 0xff;
        }
        std::fs::write(&path, &bytes).unwrap();
        let (store, snap, aside) = store::Store::open_or_set_aside(&path, now)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        drop(store);
        let Some(aside) = aside else {
            // The flips missed everything that is read: still a baseline.
            assert!(!snap.clients.is_empty(), "round {round}");
            continue;
        };
        set_aside += 1;
        assert!(
            snap.clients.is_empty() && snap.edges.is_empty(),
            "round {round}"
        );
        // Kept for inspection (redb may have tried to repair it first).
        assert!(std::fs::metadata(&aside.moved_to).unwrap().len() > 0);
        let name = aside.moved_to.file_name().unwrap().to_string_lossy();
        assert!(
            name.starts_with("baseline.redb.damaged-20261130T005320Z"),
            "{name}"
        );
        // The new file is a good, empty database.
        assert!(store::Store::open(&path)
            .unwrap()
            .load()
            .unwrap()
            .clients
            .is_empty());
        std::fs::remove_file(&aside.moved_to).unwrap();
    }
    assert!(
        set_aside >= 5,
        "only {set_aside} of 10 damaged files were noticed"
    );

    // Garbage: moved aside too; twice in one second gets a second name.
    for n in ["", "-2"] {
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let (_, _, aside) = store::Store::open_or_set_aside(&path, now).unwrap();
        let aside = aside.expect("garbage is damage");
        assert!(aside.reason.contains("cannot open"), "{}", aside.reason);
        assert!(aside
            .moved_to
            .to_string_lossy()
            .ends_with(&format!("T005320Z{n}")));
    }

    // Held by another process (here: this one): refused, not moved.
    let held = store::Store::open(&path).unwrap();
    let err = store::Store::open_or_set_aside(&path, now).err().unwrap();
    assert!(!err.is_damage(), "{err}");
    drop(held);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// A small tmpfs mounted on a directory of its own, unmounted and removed
/// on drop (also when the test fails).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(name: &str, size: &str) -> Option<Self> {
        let dir =
            std::env::temp_dir().join(format!("smbwatch-tmpfs-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::fs::remove_dir(&dir);
            crate::test_support::skip("cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Issue 18: a full disk stopped the writer until restart. Now the batch
/// is retried (counted) and written once space returns; the learner's
/// changes wait in memory meanwhile.
#[test]
fn writes_resume_when_the_disk_has_space_again() {
    use std::sync::atomic::Ordering;
    use std::time::Instant;
    let Some(fs) = Tmpfs::mount("full", "16m") else {
        return;
    };
    let path = fs.0.join("baseline.redb");
    let store = store::Store::open(&path).unwrap();
    let backoff = writer::Backoff {
        first: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    let w = writer::Writer::spawn_with(store, backoff, |_| {}).unwrap();
    let counters = w.counters();
    // Fill the disk.
    let filler = fs.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    // A batch of 20,000 edges needs room the disk no longer has.
    let mut b = bench::fresh(BaselineConfig::default());
    bench::feed(
        &mut b,
        &bench::office_events(20_000, 2_500, 1_793_577_600, 10),
    );
    let want = b.snapshot();
    w.try_send(b.take_batch()).map_err(|_| "queue").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while counters.failures.load(Ordering::Relaxed) < 3 {
        assert!(Instant::now() < deadline, "no failure seen on a full disk");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(counters.failing.load(Ordering::Relaxed));
    assert_eq!(counters.batches.load(Ordering::Relaxed), 0);
    assert!(!w.stopped(), "the writer waits for space instead of ending");
    // Space returns: the same batch is written.
    std::fs::remove_file(&filler).unwrap();
    while counters.batches.load(Ordering::Relaxed) < 1 {
        assert!(Instant::now() < deadline, "writes did not resume");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!counters.failing.load(Ordering::Relaxed));
    let report = w.finish().unwrap();
    assert!(report.failures >= 3, "{report:?}");
    let mut got = store::Store::open(&path).unwrap().load().unwrap();
    got.clients.sort_by_key(|(k, _)| *k);
    got.edges.sort_by_key(|(k, _)| *k);
    let mut want = want;
    want.meta.batches = got.meta.batches;
    want.clients.sort_by_key(|(k, _)| *k);
    want.edges.sort_by_key(|(k, _)| *k);
    assert_eq!(got.edges.len(), want.edges.len());
    assert_eq!(got, want);
}
