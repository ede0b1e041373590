//! Sockets and framing: connecting to a target, sending one message with
//! the transport's framing, noticing a collector that went away.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UdpSocket, UnixDatagram, UnixStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject as _};
use tokio_rustls::rustls::pki_types::CertificateDer;

use super::target::{HostPort, Target, TlsSettings};
use super::SyslogError;

/// A target ready to connect to: a TLS target carries its loaded client.
pub(super) type Endpoint = Target<TlsClient>;

/// A write that makes no progress for this long marks the connection dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// RFC 6587 §3.4.1 octet counting: `MSG-LEN SP SYSLOG-MSG`.
pub fn octet_counted(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 8);
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg);
    out
}

/// The TLS client of a `tls://` target: the CA bundle loaded into a rustls
/// configuration, and the name the certificate must carry.
pub(super) struct TlsClient {
    connector: tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
}

impl TlsClient {
    /// Reads the CA file; the error names it.
    pub(super) fn load(settings: TlsSettings) -> Result<Self, SyslogError> {
        let ca = settings.ca.as_path();
        let file = std::fs::File::open(ca).map_err(|source| SyslogError::TlsCaRead {
            path: ca.to_owned(),
            source,
        })?;
        let mut roots = rustls::RootCertStore::empty();
        let mut n = 0;
        for cert in CertificateDer::pem_reader_iter(file) {
            let cert = cert.map_err(|e| match e {
                pem::Error::Io(source) => SyslogError::TlsCaRead {
                    path: ca.to_owned(),
                    source,
                },
                e => SyslogError::TlsCa {
                    path: ca.to_owned(),
                    problem: e.to_string(),
                },
            })?;
            roots.add(cert).map_err(|e| SyslogError::TlsCa {
                path: ca.to_owned(),
                problem: format!("unusable certificate: {e}"),
            })?;
            n += 1;
        }
        if n == 0 {
            return Err(SyslogError::TlsCa {
                path: ca.to_owned(),
                problem: "no PEM certificate found".into(),
            });
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name: settings.server_name,
        })
    }
}

/// An open connection to the collector.
pub(super) enum Conn {
    UnixDgram(UnixDatagram),
    UnixStream(UnixStream),
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// What a non-blocking `MSG_PEEK` on the socket says.
#[derive(Debug, PartialEq, Eq)]
enum Peek {
    /// Nothing to read: the connection is open.
    Open,
    /// End of stream or an error: the peer is gone.
    Closed,
    /// Bytes are waiting (for TLS, records rustls has yet to process).
    Data,
}

/// Asks the kernel directly rather than tokio's readiness cache, which is
/// only refreshed when the runtime polls its I/O driver and can be stale
/// when the task was woken by a new alert.
fn peek(fd: RawFd) -> Peek {
    let mut b = 0u8;
    // SAFETY: `fd` is an open socket owned by the caller; the buffer is one
    // valid byte; MSG_PEEK leaves the data in place.
    let n = unsafe {
        libc::recv(
            fd,
            std::ptr::addr_of_mut!(b).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => Peek::Closed,
        n if n > 0 => Peek::Data,
        _ => match io::Error::last_os_error().kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Peek::Open,
            _ => Peek::Closed,
        },
    }
}

/// True if the peer has closed (or reset) the stream, judged by reading
/// through the stream (so TLS records such as close_notify are processed).
/// Syslog collectors never send application data, so readable means EOF or
/// error.
fn peer_closed<S: AsyncRead + Unpin>(s: &mut S) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut buf = [0u8; 512];
    loop {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut *s).poll_read(&mut cx, &mut rb) {
            Poll::Pending => return false,
            Poll::Ready(Ok(())) if rb.filled().is_empty() => return true,
            Poll::Ready(Ok(())) => continue,
            Poll::Ready(Err(_)) => return true,
        }
    }
}

/// Resolves when the peer closes the stream (reads and discards anything
/// else).
async fn wait_closed<S: AsyncRead + Unpin>(s: &mut S) {
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

impl Conn {
    /// Opens a connection (TLS handshake included).
    pub(super) async fn connect(target: &Endpoint) -> io::Result<Self> {
        match target {
            Target::Unix(path) => {
                let d = UnixDatagram::unbound()?;
                match d.connect(path) {
                    Ok(()) => Ok(Self::UnixDgram(d)),
                    // A SOCK_STREAM listener (syslog-ng's unix-stream, some
                    // journald setups) refuses datagram peers.
                    Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
                        Ok(Self::UnixStream(UnixStream::connect(path).await?))
                    }
                    Err(e) => Err(e),
                }
            }
            Target::Udp(hp) => {
                let addr = resolve(hp).await?[0];
                let bind: SocketAddr = if addr.is_ipv4() {
                    "0.0.0.0:0".parse().expect("literal")
                } else {
                    "[::]:0".parse().expect("literal")
                };
                let s = UdpSocket::bind(bind).await?;
                s.connect(addr).await?;
                Ok(Self::Udp(s))
            }
            Target::Tcp(hp) => Ok(Self::Tcp(tcp_connect(hp).await?)),
            Target::Tls(hp, tls) => {
                let tcp = tcp_connect(hp).await?;
                let s = tls.connector.connect(tls.name.clone(), tcp).await?;
                Ok(Self::Tls(Box::new(s)))
            }
        }
    }

    /// Sends one message with the transport's framing.
    pub(super) async fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        match self {
            Self::UnixDgram(s) => s.send(msg).await.map(drop),
            Self::Udp(s) => s.send(msg).await.map(drop),
            Self::UnixStream(s) => {
                // NUL-terminated, as glibc's syslog(3) does on stream sockets.
                let mut framed = msg.to_vec();
                framed.push(0);
                write_all_flush(s, &framed).await
            }
            Self::Tcp(s) => write_all_flush(s, &octet_counted(msg)).await,
            Self::Tls(s) => write_all_flush(s.as_mut(), &octet_counted(msg)).await,
        }
    }

    /// Checked before each write: a collector that went away while we were
    /// idle must be noticed now, or the next message would vanish into the
    /// dead socket's send buffer and only the write after it would fail.
    pub(super) async fn lost(&mut self) -> bool {
        let fd = match self {
            Self::UnixDgram(_) | Self::Udp(_) => return false,
            Self::UnixStream(s) => s.as_raw_fd(),
            Self::Tcp(s) => s.as_raw_fd(),
            Self::Tls(s) => s.get_ref().0.as_raw_fd(),
        };
        match peek(fd) {
            Peek::Open => false,
            Peek::Closed => true,
            Peek::Data => {
                // Let the I/O driver record the readiness, then read through
                // the stream: TLS session tickets are harmless, a
                // close_notify or EOF means closed.
                tokio::task::yield_now().await;
                match self {
                    Self::UnixDgram(_) | Self::Udp(_) => false,
                    Self::UnixStream(s) => peer_closed(s),
                    Self::Tcp(s) => peer_closed(s),
                    Self::Tls(s) => peer_closed(s.as_mut()),
                }
            }
        }
    }

    /// Resolves when a stream peer closes; never for datagram sockets.
    pub(super) async fn wait_closed(&mut self) {
        match self {
            Self::UnixDgram(_) | Self::Udp(_) => std::future::pending().await,
            Self::UnixStream(s) => wait_closed(s).await,
            Self::Tcp(s) => wait_closed(s).await,
            Self::Tls(s) => wait_closed(s.as_mut()).await,
        }
    }

    /// Orderly close: TLS close_notify, TCP FIN after the data.
    pub(super) async fn close(self) {
        match self {
            Self::UnixDgram(_) | Self::Udp(_) => {}
            Self::UnixStream(mut s) => drop(s.shutdown().await),
            Self::Tcp(mut s) => drop(s.shutdown().await),
            Self::Tls(mut s) => drop(s.shutdown().await),
        }
    }
}

async fn write_all_flush<S: AsyncWrite + Unpin>(s: &mut S, buf: &[u8]) -> io::Result<()> {
    let io = async {
        s.write_all(buf).await?;
        s.flush().await
    };
    tokio::time::timeout(WRITE_TIMEOUT, io)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")))
}

async fn resolve(hp: &HostPort) -> io::Result<Vec<SocketAddr>> {
    let host = hp.host.as_str();
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, hp.port)).await?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} has no address"),
        ));
    }
    Ok(addrs)
}

async fn tcp_connect(hp: &HostPort) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in resolve(hp).await? {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                // Alerts are single small writes; do not wait to coalesce.
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("resolve returns at least one address"))
}

/// A transport error that rejects this message whatever the connection
/// (retrying would loop forever): drop the message instead.
pub(super) fn is_message_error(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EMSGSIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octet_counting_counts_bytes() {
        assert_eq!(
            octet_counted(b"<13>1 - - - - - - hi"),
            b"20 <13>1 - - - - - - hi"
        );
        assert_eq!(octet_counted("ü".as_bytes()), "2 ü".as_bytes());
        assert_eq!(octet_counted(b""), b"0 ");
    }
}
