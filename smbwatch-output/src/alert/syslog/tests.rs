//! The sink end to end over loopback sockets: framing, shutdown, outages,
//! reconnects.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::net::{TcpListener, UdpSocket, UnixDatagram, UnixListener};

use super::format::tests::scan_alert;
use super::*;

#[test]
fn tls_ca_errors_name_the_file() {
    let mut c = SyslogConfig::for_target("tls://127.0.0.1:6514".parse().unwrap());
    c.tls_ca = Some("/nonexistent/ca.pem".into());
    let e = SyslogSink::start(&c).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    let dir = temp_dir("ca");
    let path = dir.join("empty.pem");
    std::fs::write(&path, "not a certificate\n").unwrap();
    c.tls_ca = Some(path.clone());
    let e = SyslogSink::start(&c).unwrap_err().to_string();
    assert!(e.contains("no PEM certificate"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "smbwatch-syslog-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fast(target: String) -> SyslogConfig {
    SyslogConfig {
        hostname: Some("gw1".into()),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        // These tests are about transports: one format for every target.
        format: Some(super::SyslogFormat::Rfc5424),
        ..SyslogConfig::for_target(target.parse().unwrap())
    }
}

/// Reads one octet-counted frame.
async fn read_frame<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Option<String> {
    let mut len = Vec::new();
    if r.read_until(b' ', &mut len).await.ok()? == 0 {
        return None;
    }
    let n: usize = std::str::from_utf8(&len[..len.len() - 1])
        .ok()?
        .parse()
        .ok()?;
    let mut buf = vec![0; n];
    r.read_exact(&mut buf).await.ok()?;
    String::from_utf8(buf).ok()
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("timed out")
}

#[tokio::test]
async fn udp_datagram_is_the_message() {
    let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = rx.local_addr().unwrap().port();
    let sink = SyslogSink::start(&fast(format!("udp://127.0.0.1:{port}"))).unwrap();
    let a = scan_alert("hello over udp");
    sink.send(&crate::alert::ecs::test_doc(&a));
    let mut buf = [0u8; 4096];
    let n = within(rx.recv(&mut buf)).await.unwrap();
    assert_eq!(
        std::str::from_utf8(&buf[..n]).unwrap(),
        sink.formatter().format(&crate::alert::ecs::test_doc(&a))
    );
    assert!(sink
        .formatter()
        .format(&crate::alert::ecs::test_doc(&a))
        .contains(" gw1 smbwatch "));
    let stats = sink.shutdown().await;
    assert_eq!((stats.sent, stats.queued, stats.dropped), (1, 0, 0));
}

#[tokio::test]
async fn tcp_frames_are_octet_counted_and_shutdown_flushes() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let sink = SyslogSink::start(&fast(format!("tcp://127.0.0.1:{port}"))).unwrap();
    for i in 0..100 {
        sink.send(&crate::alert::ecs::test_doc(&scan_alert(&format!(
            "alert {i}"
        ))));
    }
    let stats = sink.shutdown_within(Duration::from_secs(10)).await;
    assert_eq!((stats.sent, stats.queued), (100, 0));
    let (s, _) = within(l.accept()).await.unwrap();
    let mut r = tokio::io::BufReader::new(s);
    for i in 0..100 {
        let m = within(read_frame(&mut r)).await.unwrap();
        assert!(m.ends_with(&format!(" alert {i}")), "{m}");
    }
    // The sink closed the connection after the last frame.
    assert_eq!(within(read_frame(&mut r)).await, None);
}

#[tokio::test]
async fn down_collector_keeps_the_newest_up_to_the_bound() {
    // A port with nothing listening: bind, note it, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = fast(format!("tcp://127.0.0.1:{port}"));
    cfg.queue = 3;
    let sink = SyslogSink::start(&cfg).unwrap();
    for i in 1..=5 {
        sink.send(&crate::alert::ecs::test_doc(&scan_alert(&format!(
            "alert {i}"
        ))));
    }
    // Let the task try (and fail) a few times.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = sink.stats();
    assert_eq!((stats.sent, stats.queued, stats.dropped), (0, 3, 2));
    assert!(stats.connect_failures >= 2, "{stats:?}");
    // The collector comes up: exactly the three newest arrive, in order.
    let l = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (s, _) = within(l.accept()).await.unwrap();
    let mut r = tokio::io::BufReader::new(s);
    for i in 3..=5 {
        let m = within(read_frame(&mut r)).await.unwrap();
        assert!(m.ends_with(&format!(" alert {i}")), "{m}");
    }
    let stats = sink.shutdown().await;
    assert_eq!((stats.sent, stats.queued, stats.dropped), (3, 0, 2));
}

/// The outage that held 3,000 alerts in 917 MB: huge host-log fields and a
/// collector that is down. Each message is cut to `max_message`, the queue
/// holds at most `queue_bytes`, and what did not fit is counted.
#[tokio::test]
async fn down_collector_with_huge_alerts_stays_within_the_byte_bound() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = fast(format!("tcp://127.0.0.1:{port}"));
    cfg.max_message = Some(4096);
    cfg.queue_bytes = 64 << 10;
    let sink = SyslogSink::start(&cfg).unwrap();
    const N: u64 = 200;
    for i in 0..N {
        let mut a = scan_alert(&format!("alert {i} {}", "m".repeat(300_000)));
        a.user = Some("ü".repeat(150_000));
        a.host = Some("h".repeat(300_000));
        sink.send(&crate::alert::ecs::test_doc(&a));
        let s = sink.stats();
        assert!(s.queued_bytes <= 64 << 10, "{s:?}");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let s = sink.stats();
    assert_eq!(s.sent, 0, "{s:?}");
    assert_eq!(s.truncated, N, "{s:?}");
    assert!(s.dropped > 0, "{s:?}");
    assert_eq!(s.queued + s.dropped, N, "{s:?}");
    assert!(s.queued_bytes <= 64 << 10, "{s:?}");
    // 64 KiB holds about 16 messages of 4 KiB: the newest.
    assert!((10..=16).contains(&s.queued), "{s:?}");
    let held = sink.shared.queued_messages();
    assert_eq!(held.len() as u64, s.queued);
    for m in &held {
        assert!(m.len() <= 4096, "{}", m.len());
        let m = std::str::from_utf8(m).unwrap();
        assert!(
            m.contains("[smbwatch@32473 kind=\"smb_scan_fanout\""),
            "{m}"
        );
    }
    // The newest survived.
    let last = std::str::from_utf8(held.last().unwrap()).unwrap();
    assert!(last.contains(&format!("] alert {} m", N - 1)), "{last}");
    drop(sink);
}

#[tokio::test]
async fn tcp_peer_close_loses_nothing() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let sink = SyslogSink::start(&fast(format!("tcp://127.0.0.1:{port}"))).unwrap();
    sink.send(&crate::alert::ecs::test_doc(&scan_alert("before")));
    let (s, _) = within(l.accept()).await.unwrap();
    let mut r = tokio::io::BufReader::new(s);
    assert!(within(read_frame(&mut r))
        .await
        .unwrap()
        .ends_with(" before"));
    // The collector closes the connection; alerts raised afterwards go
    // over a new one.
    drop(r);
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..10 {
        sink.send(&crate::alert::ecs::test_doc(&scan_alert(&format!(
            "after {i}"
        ))));
    }
    let (s, _) = within(l.accept()).await.unwrap();
    let mut r = tokio::io::BufReader::new(s);
    for i in 0..10 {
        let m = within(read_frame(&mut r)).await.unwrap();
        assert!(m.ends_with(&format!(" after {i}")), "{m}");
    }
    let stats = sink.shutdown().await;
    assert_eq!((stats.sent, stats.dropped, stats.reconnects), (11, 0, 1));
}

#[tokio::test]
async fn unix_datagram_and_stream_fallback() {
    let dir = temp_dir("unix");
    // Datagram socket, as /dev/log.
    let dpath = dir.join("dgram.sock");
    let rx = UnixDatagram::bind(&dpath).unwrap();
    let sink = SyslogSink::start(&fast(format!("unix://{}", dpath.display()))).unwrap();
    sink.send(&crate::alert::ecs::test_doc(&scan_alert(
        "over a datagram socket",
    )));
    let mut buf = [0u8; 4096];
    let n = within(rx.recv(&mut buf)).await.unwrap();
    assert!(std::str::from_utf8(&buf[..n])
        .unwrap()
        .ends_with(" over a datagram socket"));
    sink.shutdown().await;
    // Stream socket: messages are NUL-terminated.
    let spath = dir.join("stream.sock");
    let l = UnixListener::bind(&spath).unwrap();
    let sink = SyslogSink::start(&fast(format!("unix://{}", spath.display()))).unwrap();
    sink.send(&crate::alert::ecs::test_doc(&scan_alert("one")));
    sink.send(&crate::alert::ecs::test_doc(&scan_alert("two")));
    let (s, _) = within(l.accept()).await.unwrap();
    let mut r = tokio::io::BufReader::new(s);
    for want in [" one\0", " two\0"] {
        let mut m = Vec::new();
        within(r.read_until(0, &mut m)).await.unwrap();
        assert!(String::from_utf8(m).unwrap().ends_with(want));
    }
    assert_eq!(sink.shutdown().await.sent, 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_collector_that_hangs_up_at_once_is_not_hammered() {
    // Like rsyslog past its MaxSessions: accept, then close at once.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let accepts = Arc::new(AtomicU64::new(0));
    let counter = accepts.clone();
    let server = tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            counter.fetch_add(1, Ordering::Relaxed);
            drop(s);
        }
    });
    let sink = SyslogSink::start(&fast(format!("tcp://127.0.0.1:{port}"))).unwrap();
    for i in 0..3 {
        sink.send(&crate::alert::ecs::test_doc(&scan_alert(&format!(
            "alert {i}"
        ))));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = accepts.load(Ordering::Relaxed);
    // 10 ms doubling to 50 ms allows about a dozen attempts in 500 ms.
    assert!(n <= 30, "{n} connections in 500 ms");
    drop(sink);
    server.abort();
}

#[tokio::test]
async fn drop_stops_the_task() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let sink = SyslogSink::start(&fast(format!("tcp://127.0.0.1:{port}"))).unwrap();
    let shared = sink.shared.clone();
    sink.send(&crate::alert::ecs::test_doc(&scan_alert("abandoned")));
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(sink);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let tries = shared.connect_failures.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(shared.connect_failures.load(Ordering::Relaxed), tries);
    // Only this test's handle is left: the task released its clone.
    assert_eq!(Arc::strong_count(&shared), 1);
}

#[test]
fn start_outside_a_runtime_is_an_error() {
    let e = SyslogSink::start(&fast("udp://127.0.0.1:514".into())).unwrap_err();
    assert!(matches!(e, SyslogError::NoRuntime), "{e}");
}
