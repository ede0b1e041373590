//! TLS with client certificates for the host-log listener: a forwarder that
//! is not on loopback proves who it is with a certificate signed by the
//! configured CA, and its events cannot be read or changed on the way.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// The PEM files of a TLS listener (`[hostlog] tls_cert`, `tls_key`,
/// `tls_client_ca`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The listener's certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// CA certificates that sign the forwarders' client certificates.
    pub client_ca: PathBuf,
}

/// Why the TLS listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("host-log listener TLS: cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS or PEM error.
        #[source]
        source: std::io::Error,
    },
    /// A file was read but cannot be used.
    #[error("host-log listener TLS: {}: {problem}", path.display())]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Read {
        path: path.to_owned(),
        source,
    }
}

fn unusable(path: &Path, problem: impl ToString) -> TlsError {
    TlsError::Unusable {
        path: path.to_owned(),
        problem: problem.to_string(),
    }
}

/// A PEM problem: reading the file, or its contents.
fn pem_err(path: &Path) -> impl FnOnce(pem::Error) -> TlsError + '_ {
    move |e| match e {
        pem::Error::Io(source) => read_err(path)(source),
        e => unusable(path, e),
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file = File::open(path).map_err(read_err(path))?;
    let certs = CertificateDer::pem_reader_iter(file)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err(path))?;
    if certs.is_empty() {
        return Err(unusable(path, "no PEM certificate found"));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let file = File::open(path).map_err(read_err(path))?;
    PrivateKeyDer::from_pem_reader(file).map_err(|e| match e {
        pem::Error::NoItemsFound => unusable(path, "no PEM private key found"),
        e => pem_err(path)(e),
    })
}

/// The server configuration: TLS 1.2 or 1.3, a client certificate
/// required and verified against `client_ca`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs(&files.client_ca)? {
        roots
            .add(ca)
            .map_err(|e| unusable(&files.client_ca, format!("unusable certificate: {e}")))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| unusable(&files.client_ca, e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| unusable(&files.cert, e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&files.cert)?, key(&files.key)?)
        .map_err(|e| unusable(&files.cert, format!("certificate and key do not fit: {e}")))?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{mpsc, oneshot};

    use super::*;
    use crate::daemon::inputs::listener::{Listener, ListenerConfig};

    /// A CA, a listener certificate for 127.0.0.1 and a client
    /// certificate, made with the openssl command; `None` (with a message)
    /// when it is not installed.
    fn make_pki(dir: &Path) -> Option<()> {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .ok()?;
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(())
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let Some(()) = openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=test forwarders CA",
                ],
            ]
            .concat(),
        ) else {
            crate::test_support::skip("no openssl command to make test certificates");
            return None;
        };
        for (name, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
            let (key, csr, pem, extf) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            openssl(
                &[
                    &["req"][..],
                    &ec,
                    &[
                        "-keyout",
                        &key,
                        "-out",
                        &csr,
                        "-subj",
                        &format!("/CN={name}"),
                    ],
                ]
                .concat(),
            )?;
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &extf,
            ])?;
        }
        Some(())
    }

    const EV: &str = r#"{"EventID":3,"Channel":"Microsoft-Windows-Sysmon/Operational","UtcTime":"2020-09-20 06:57:48.481","Image":"C:\\x\\python.exe","Initiated":"true","SourceIp":"192.0.2.5","SourcePort":"50504","DestinationIp":"192.0.2.6","DestinationPort":"445"}"#;

    #[tokio::test(flavor = "current_thread")]
    async fn forwarders_need_a_client_certificate_signed_by_the_ca() {
        let dir = std::env::temp_dir().join(format!("smbwatch-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        if make_pki(&dir).is_none() {
            return;
        }
        let files = TlsFiles {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            client_ca: dir.join("ca.pem"),
        };
        let listener = Listener::bind(ListenerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            line_timeout: Duration::from_secs(2),
            tls: Some(files.clone()),
            ..ListenerConfig::default()
        })
        .await
        .unwrap();
        let addr = listener.local_addr();
        let (tx, mut rx) = mpsc::channel(8);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(listener.run(tx, async {
            let _ = stop_rx.await;
        }));

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(certs(&files.client_ca).unwrap()[0].clone())
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();

        // Without a client certificate: refused, nothing read.
        let anonymous =
            tokio_rustls::TlsConnector::from(Arc::new(builder.clone().with_no_client_auth()));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        if let Ok(mut s) = anonymous.connect(name.clone(), tcp).await {
            // TLS 1.3: the client learns of the refusal only on its first read.
            let _ = s.write_all(format!("{EV}\n").as_bytes()).await;
            let mut buf = [0u8; 16];
            let read = s.read(&mut buf).await;
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        }

        // With one: its events arrive.
        let client = builder
            .with_client_auth_cert(
                certs(&dir.join("client.pem")).unwrap(),
                key(&dir.join("client.key")).unwrap(),
            )
            .unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut s = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .unwrap();
        s.write_all(format!("{EV}\n").as_bytes()).await.unwrap();
        s.flush().await.unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("the event arrives over TLS")
            .unwrap();
        assert_eq!(
            ev.process().unwrap().image_name.as_deref(),
            Some("python.exe")
        );

        stop_tx.send(()).unwrap();
        let stats = server.await.unwrap();
        // One refused handshake; the only event is the authenticated one.
        assert_eq!((stats.tls_failed, stats.events), (1, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unusable_files_are_named() {
        let missing = TlsFiles {
            cert: "/nonexistent/listener.pem".into(),
            key: "/nonexistent/listener.key".into(),
            client_ca: "/nonexistent/ca.pem".into(),
        };
        let err = server_config(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with("host-log listener TLS: cannot read /nonexistent/ca.pem:"),
            "{err}"
        );
        let empty = std::env::temp_dir().join(format!("smbwatch-tls-empty-{}", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = server_config(&TlsFiles {
            client_ca: empty.clone(),
            ..missing
        })
        .unwrap_err()
        .to_string();
        assert!(err.ends_with(": no PEM certificate found"), "{err}");
        std::fs::remove_file(&empty).unwrap();
    }
}
