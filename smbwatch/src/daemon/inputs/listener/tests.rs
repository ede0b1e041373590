//! Listener tests over real TCP sockets on 127.0.0.1.

use std::io::Write;
use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

const EV: &str = r#"{"EventID":3,"Channel":"Microsoft-Windows-Sysmon/Operational","UtcTime":"2020-09-20 06:57:48.481","Image":"C:\\x\\python.exe","Initiated":"true","SourceIp":"192.0.2.5","SourcePort":"50504","DestinationIp":"192.0.2.6","DestinationPort":"445"}"#;

// current_thread: spawned connection tasks run on this thread and see
// the test's log subscriber.
#[tokio::test(flavor = "current_thread")]
async fn oversized_lines_and_excess_connections_are_refused_and_logged() {
    let logs = Captured::default();
    let sub = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(sub);

    let cfg = ListenerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        max_line: 1024,
        max_connections: 1,
        ..ListenerConfig::default()
    };
    let listener = Listener::bind(cfg).await.unwrap();
    let addr = listener.local_addr();
    let (tx, mut rx) = mpsc::channel(16);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(listener.run(tx, async {
        let _ = stop_rx.await;
    }));

    let mut a = TcpStream::connect(addr).await.unwrap();
    let long = format!("{{\"EventID\":3,\"pad\":\"{}\"}}\n", "x".repeat(5000));
    let xml = r#"<Event><System><EventID>5140</EventID><TimeCreated SystemTime="2020-09-20T06:57:47Z"/><Channel>Security</Channel></System><EventData><Data Name="ShareName">\\*\C$</Data><Data Name="IpAddress">192.0.2.5</Data></EventData></Event>"#;
    let payload = format!("{EV}\r\n{long}not json at all\n{xml}\n{{\"EventID\":4634,\"Channel\":\"Security\",\"EventTime\":\"2020-01-01 00:00:00\"}}\n{EV}");
    a.write_all(payload.as_bytes()).await.unwrap();
    let first = rx.recv().await.unwrap();
    assert_eq!(
        first.process().unwrap().image_name.as_deref(),
        Some("python.exe")
    );
    let second = rx.recv().await.unwrap();
    assert_eq!(
        second.as_share_access().unwrap().share_name.as_deref(),
        Some("C$")
    );

    // `a` holds the only slot: a second connection is closed at once.
    let mut b = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        b.read(&mut buf).await.unwrap(),
        0,
        "refused connection is closed"
    );

    // The first connection still works; its last line ends at EOF.
    a.shutdown().await.unwrap();
    drop(a);
    let third = rx.recv().await.unwrap();
    assert_eq!(third.event_id(), 3);

    // The listener kept running: a new connection is served once `a` is gone.
    let mut c = loop {
        // The slot frees when `a`'s task ends; until then `c` may be refused.
        let mut c = TcpStream::connect(addr).await.unwrap();
        let _ = c.write_all(format!("{EV}\n").as_bytes()).await;
        if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
            assert_eq!(ev.event_id(), 3);
            break c;
        }
    };
    let _ = c.shutdown().await;

    stop_tx.send(()).unwrap();
    let stats = server.await.unwrap();
    assert_eq!(stats.oversized, 1);
    assert!(stats.refused >= 1);
    assert_eq!(stats.bad, 1);
    assert_eq!(stats.skipped, 1);
    assert_eq!(stats.events, 4);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("is longer than 1024 bytes (hostlog.max_line): skipped"),
        "{text}"
    );
    assert!(
        text.contains("refusing connection from 127.0.0.1:"),
        "{text}"
    );
    assert!(
        text.contains("1 connections already open (hostlog.max_connections)"),
        "{text}"
    );
    assert!(text.contains("bad record: 127.0.0.1:"), "{text}");
    assert!(text.contains("line 3: invalid JSON"), "{text}");
}

#[tokio::test]
async fn bind_errors_are_clear() {
    let first = Listener::bind(ListenerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ListenerConfig::default()
    })
    .await
    .unwrap();
    let taken = ListenerConfig {
        listen: first.local_addr(),
        ..ListenerConfig::default()
    };
    let err = Listener::bind(taken).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("host-log listener: cannot listen on 127.0.0.1:"),
        "{err}"
    );
    let zero = ListenerConfig {
        max_connections: 0,
        ..ListenerConfig::default()
    };
    assert!(matches!(
        Listener::bind(zero).await,
        Err(ListenerError::Config(_))
    ));
}

#[test]
fn config_from_hostlog_section() {
    let mut h = crate::config::HostlogConfig::default();
    assert_eq!(ListenerConfig::from_hostlog(&h), None);
    h.listen = Some("tcp://127.0.0.1:5514".parse().unwrap());
    let c = ListenerConfig::from_hostlog(&h).unwrap();
    assert_eq!(c, ListenerConfig::default());
    assert_eq!(
        (c.max_connections_per_peer, c.line_timeout, c.idle_timeout),
        (8, Duration::from_secs(30), Duration::from_secs(600))
    );
}

fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let logs = Captured::default();
    let sub = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    (logs.clone(), tracing::subscriber::set_default(sub))
}

/// A client connected from `local` (any 127.0.0.0/8 address).
async fn connect_from(local: &str, to: SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{local}:0").parse().unwrap()).unwrap();
    sock.connect(to).await.unwrap()
}

/// A slowloris: one byte of a line that never ends every 50 ms. Returns
/// how long the listener kept it open.
async fn slow_peer(mut s: TcpStream) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 16];
    loop {
        if s.write_all(b"{").await.is_err() {
            return start.elapsed();
        }
        let read = tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never closed");
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Slow peers used to hold every slot for ever: 64 connections sending
/// a byte a second kept a real forwarder out.
#[tokio::test(flavor = "current_thread")]
async fn slow_peers_are_closed_and_limited_per_address() {
    let (logs, _guard) = capture_logs();
    let line_timeout = Duration::from_millis(400);
    let cfg = ListenerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        max_connections: 16,
        max_connections_per_peer: 8,
        line_timeout,
        idle_timeout: Duration::from_secs(5),
        ..ListenerConfig::default()
    };
    let listener = Listener::bind(cfg).await.unwrap();
    let addr = listener.local_addr();
    let counters = Arc::clone(&listener.counters);
    let (tx, mut rx) = mpsc::channel(16);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(listener.run(tx, async {
        let _ = stop_rx.await;
    }));

    // Eight slow peers from one address: its share of the slots.
    let mut slow = Vec::new();
    for _ in 0..8 {
        let s = connect_from("127.0.0.1", addr).await;
        slow.push(tokio::spawn(slow_peer(s)));
    }
    wait_for("8 accepted", || {
        counters.accepted.load(Ordering::Relaxed) == 8
    })
    .await;

    // The ninth (and tenth...) from that address is closed at once.
    for _ in 0..5 {
        let mut ninth = connect_from("127.0.0.1", addr).await;
        let mut buf = [0u8; 4];
        let n = tokio::time::timeout(Duration::from_secs(2), ninth.read(&mut buf))
            .await
            .expect("refused at once");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }

    // A real forwarder from another address gets in while they are connected.
    let mut fwd = connect_from("127.0.0.2", addr).await;
    fwd.write_all(format!("{EV}\n").as_bytes()).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("the forwarder's event arrives")
        .unwrap();
    assert_eq!(
        ev.process().unwrap().image_name.as_deref(),
        Some("python.exe")
    );
    assert!(
        slow.iter().all(|t| !t.is_finished()),
        "slow peers still connected"
    );

    // The slow peers are closed by line_timeout, not before.
    for t in slow {
        let open = t.await.unwrap();
        assert!(open >= line_timeout, "{open:?}");
        assert!(open < line_timeout * 5, "{open:?}");
    }
    // The forwarder, sending whole lines, stays.
    fwd.write_all(format!("{EV}\n").as_bytes()).await.unwrap();
    assert!(rx.recv().await.is_some());

    stop_tx.send(()).unwrap();
    let stats = server.await.unwrap();
    assert_eq!((stats.accepted, stats.refused, stats.timed_out), (9, 5, 8));
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains(
            "8 connections from 127.0.0.1 already open (hostlog.max_connections_per_peer)"
        ),
        "{text}"
    );
    assert!(
        text.contains("a line took longer than 400ms (hostlog.line_timeout)"),
        "{text}"
    );
    // Rate-limited: one line each for 5 refusals and 8 timeouts.
    assert_eq!(
        text.matches("refusing connection from").count(),
        1,
        "{text}"
    );
    assert_eq!(text.matches("closing connection from").count(), 1, "{text}");
}

#[tokio::test(flavor = "current_thread")]
async fn idle_connections_are_closed_busy_ones_are_not() {
    let (logs, _guard) = capture_logs();
    let idle_timeout = Duration::from_millis(500);
    let cfg = ListenerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        line_timeout: Duration::from_millis(200),
        idle_timeout,
        ..ListenerConfig::default()
    };
    let listener = Listener::bind(cfg).await.unwrap();
    let addr = listener.local_addr();
    let (tx, mut rx) = mpsc::channel(64);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(listener.run(tx, async {
        let _ = stop_rx.await;
    }));
    let start = Instant::now();
    let mut quiet = TcpStream::connect(addr).await.unwrap();
    quiet.write_all(format!("{EV}\n").as_bytes()).await.unwrap();
    let mut busy = TcpStream::connect(addr).await.unwrap();
    for _ in 0..8 {
        busy.write_all(format!("{EV}\n").as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // 1.2 s: the busy one is still served.
    busy.write_all(format!("{EV}\n").as_bytes()).await.unwrap();
    for _ in 0..10 {
        rx.recv().await.unwrap();
    }
    let mut buf = [0u8; 4];
    let closed = tokio::time::timeout(Duration::from_secs(5), quiet.read(&mut buf))
        .await
        .expect("the quiet connection is closed");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert!(start.elapsed() >= idle_timeout);
    stop_tx.send(()).unwrap();
    let stats = server.await.unwrap();
    assert_eq!((stats.events, stats.timed_out), (10, 1));
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("no complete line for 500ms (hostlog.idle_timeout)"),
        "{text}"
    );
}

#[test]
fn rate_limit_counts_what_it_does_not_log() {
    let t0 = Instant::now();
    let mut r = RateLimit::default();
    assert_eq!(r.note(t0), Some(0));
    assert_eq!(r.note(t0 + Duration::from_secs(1)), None);
    assert_eq!(r.note(t0 + Duration::from_secs(2)), None);
    assert_eq!(r.flush(t0 + Duration::from_secs(5)), None, "too soon");
    assert_eq!(r.flush(t0 + REPORT_INTERVAL), Some(2));
    assert_eq!(r.flush(t0 + REPORT_INTERVAL * 3), None, "nothing left");
    assert_eq!(r.note(t0 + REPORT_INTERVAL * 3), Some(0));
}

/// The per-peer cap counts an IPv6 /64 as one peer (a host picks any
/// address in its /64), an IPv4 address as itself, and an IPv4-mapped
/// address as its IPv4 address.
#[test]
fn per_peer_cap_counts_ipv6_by_64() {
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let counts = Arc::new(PeerCounts::default());
    let mut held = Vec::new();
    for i in 1..=4 {
        let a = ip(&format!("2001:db8:1:2::{i:x}"));
        held.push(counts.acquire(a, 4).expect("room in the /64"));
    }
    assert_eq!(
        counts.acquire(ip("2001:db8:1:2:ffff::9"), 4).err(),
        Some(4),
        "a fifth address of the same /64 is over the cap"
    );
    // The next /64 and IPv4 peers have their own counts.
    assert!(counts.acquire(ip("2001:db8:1:3::1"), 4).is_ok());
    assert!(counts.acquire(ip("192.0.2.7"), 4).is_ok());
    assert_eq!(peer_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    assert_eq!(peer_key(ip("192.0.2.8")), ip("192.0.2.8"));
    assert_eq!(peer_label(ip("2001:db8:1:2::5")), "2001:db8:1:2::/64");
    // Closing one connection gives the /64 its slot back.
    held.pop();
    assert!(counts.acquire(ip("2001:db8:1:2::77"), 4).is_ok());
}
