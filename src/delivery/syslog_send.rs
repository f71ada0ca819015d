//! Sends syslog messages ([`super::syslog`]) to a receiver over TLS
//! (RFC 5425: the server's certificate checked against a CA file and the
//! server's name, rustls with the ring provider) or plain TCP (RFC 6587),
//! framed by octet counting.
//!
//! A batch is written whole and flushed; a receiver does not acknowledge
//! syslog messages, so a batch that returned `Ok` was handed to the
//! connection, no more. On any error the connection is finished: drop it
//! and connect again (delivery is at least once, so the batch is sent
//! again).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, RootCertStore};
use tokio_rustls::TlsConnector;

use super::syslog::frame;

/// How to reach the receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// TLS: the server's certificate must chain to a certificate in
    /// `ca_file` (PEM) and name `server_name` (a DNS name or an IP
    /// address).
    Tls {
        /// The CA certificates to trust, PEM.
        ca_file: PathBuf,
        /// The name the server's certificate must carry.
        server_name: String,
    },
    /// Plain TCP: for a receiver on the same host, or tests of framing.
    Tcp,
}

/// A syslog receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogTarget {
    /// `host:port`.
    pub addr: String,
    /// TLS or plain TCP.
    pub transport: Transport,
    /// The longest a connect (with its handshake) or a batch's write may
    /// take. Default 10 s.
    pub timeout: Duration,
}

impl SyslogTarget {
    /// A TLS target, with the default timeout.
    pub fn tls(addr: &str, ca_file: &Path, server_name: &str) -> Self {
        SyslogTarget {
            addr: addr.to_string(),
            transport: Transport::Tls {
                ca_file: ca_file.to_path_buf(),
                server_name: server_name.to_string(),
            },
            timeout: Duration::from_secs(10),
        }
    }

    /// A plain TCP target, with the default timeout.
    pub fn tcp(addr: &str) -> Self {
        SyslogTarget {
            addr: addr.to_string(),
            transport: Transport::Tcp,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why messages could not be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The CA file cannot be read or holds something that is not a PEM
    /// certificate.
    #[error("reading CA certificates from {path}: {source}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: rustls::pki_types::pem::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("{path} holds no usable CA certificate")]
    NoCaCertificate {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the client configuration (its crypto provider
    /// offers no protocol version it accepts).
    #[error("TLS client configuration: {0}")]
    Tls(rustls::Error),
    /// The server name is neither a DNS name nor an IP address.
    #[error("{0:?} is not a valid TLS server name")]
    BadServerName(String),
    /// The TCP connection failed.
    #[error("connecting to syslog receiver {addr}: {source}")]
    Connect {
        /// The receiver.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS handshake failed: most often the receiver's certificate is
    /// not signed by the CA or does not carry the server name.
    #[error("TLS handshake with syslog receiver {addr}: {source}")]
    Handshake {
        /// The receiver.
        addr: String,
        /// Why (a `rustls::Error` inside for certificate problems).
        source: std::io::Error,
    },
    /// Writing to the connection failed.
    #[error("sending to syslog receiver {addr}: {source}")]
    Write {
        /// The receiver.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A connect or a write took longer than the target's timeout.
    #[error("syslog receiver {addr}: {what} timed out after {after:?}")]
    Timeout {
        /// The receiver.
        addr: String,
        /// `connect` or `send`.
        what: &'static str,
        /// The timeout.
        after: Duration,
    },
}

impl SendError {
    /// Whether the receiver's certificate was refused.
    pub fn is_certificate_error(&self) -> bool {
        match self {
            SendError::Handshake { source, .. } => source
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>())
                .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_))),
            _ => false,
        }
    }
}

/// An open connection to a syslog receiver.
pub struct SyslogSender {
    stream: Box<dyn AsyncWrite + Unpin + Send>,
    addr: String,
    timeout: Duration,
    frames: Vec<u8>,
}

impl std::fmt::Debug for SyslogSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogSender")
            .field("addr", &self.addr)
            .finish()
    }
}

impl SyslogSender {
    /// Connects (and for TLS, completes the handshake, which checks the
    /// receiver's certificate).
    pub async fn connect(target: &SyslogTarget) -> Result<Self, SendError> {
        let addr = target.addr.clone();
        // The configuration first: a bad CA file is an error before any
        // connection is made.
        let tls = match &target.transport {
            Transport::Tls {
                ca_file,
                server_name,
            } => Some((
                client_config(ca_file)?,
                ServerName::try_from(server_name.clone())
                    .map_err(|_| SendError::BadServerName(server_name.clone()))?,
            )),
            Transport::Tcp => None,
        };
        let timed_out = || SendError::Timeout {
            addr: addr.clone(),
            what: "connect",
            after: target.timeout,
        };
        let connect = async {
            let tcp = TcpStream::connect(&addr)
                .await
                .map_err(|source| SendError::Connect {
                    addr: addr.clone(),
                    source,
                })?;
            // Frames are written a batch at a time: no need to wait for
            // acknowledgements before sending the next small segment.
            let _ = tcp.set_nodelay(true);
            let stream: Box<dyn AsyncWrite + Unpin + Send> = match tls {
                None => Box::new(tcp),
                Some((config, name)) => Box::new(
                    TlsConnector::from(config)
                        .connect(name, tcp)
                        .await
                        .map_err(|source| SendError::Handshake {
                            addr: addr.clone(),
                            source,
                        })?,
                ),
            };
            Ok(stream)
        };
        let stream = tokio::time::timeout(target.timeout, connect)
            .await
            .map_err(|_| timed_out())??;
        Ok(SyslogSender {
            stream,
            addr,
            timeout: target.timeout,
            frames: Vec::new(),
        })
    }

    /// Sends a batch of messages (unframed, as [`super::syslog::message`]
    /// builds them), in order, and flushes.
    pub async fn send(&mut self, messages: &[Vec<u8>]) -> Result<(), SendError> {
        self.frames.clear();
        for m in messages {
            frame(m, &mut self.frames);
        }
        let write = async {
            self.stream.write_all(&self.frames).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(SendError::Write {
                addr: self.addr.clone(),
                source,
            }),
            Err(_) => Err(SendError::Timeout {
                addr: self.addr.clone(),
                what: "send",
                after: self.timeout,
            }),
        }
    }

    /// Closes the connection (for TLS, with a close_notify first).
    pub async fn close(mut self) -> Result<(), SendError> {
        let addr = self.addr.clone();
        match tokio::time::timeout(self.timeout, self.stream.shutdown()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(SendError::Write { addr, source }),
            Err(_) => Err(SendError::Timeout {
                addr,
                what: "close",
                after: self.timeout,
            }),
        }
    }
}

/// A rustls client configuration trusting only the certificates in
/// `ca_file`.
fn client_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, SendError> {
    let ca_err = |source| SendError::CaFile {
        path: ca_file.to_path_buf(),
        source,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(ca_err)? {
        // A certificate rustls cannot use is skipped; none at all is an
        // error below.
        let _ = roots.add(cert.map_err(ca_err)?);
    }
    if roots.is_empty() {
        return Err(SendError::NoCaCertificate {
            path: ca_file.to_path_buf(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(SendError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn plain_tcp_frames_each_message() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let reader = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut all = Vec::new();
            s.read_to_end(&mut all).await.unwrap();
            all
        });
        let mut sender = SyslogSender::connect(&SyslogTarget::tcp(&addr))
            .await
            .unwrap();
        sender
            .send(&[b"<14>1 a".to_vec(), "é x".as_bytes().to_vec()])
            .await
            .unwrap();
        sender.send(&[b"".to_vec()]).await.unwrap();
        sender.close().await.unwrap();
        assert_eq!(reader.await.unwrap(), "7 <14>1 a4 é x0 ".as_bytes());
    }

    #[tokio::test]
    async fn a_receiver_that_stops_reading_times_the_send_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // Accepts, then never reads: the socket buffers fill and the write
        // waits until the timeout.
        let holder = tokio::spawn(async move { listener.accept().await.unwrap() });
        let mut target = SyslogTarget::tcp(&addr);
        target.timeout = Duration::from_millis(300);
        let mut sender = SyslogSender::connect(&target).await.unwrap();
        let big = vec![b'x'; 64 << 20];
        let e = sender.send(&[big]).await.unwrap_err();
        assert!(matches!(e, SendError::Timeout { what: "send", .. }), "{e}");
        drop(holder);
    }

    #[tokio::test]
    async fn a_bad_ca_file_or_name_is_refused_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        // Port 9 on loopback: never reached, the configuration fails first.
        let e = SyslogSender::connect(&SyslogTarget::tls("127.0.0.1:9", &empty, "localhost"))
            .await
            .unwrap_err();
        assert!(matches!(e, SendError::NoCaCertificate { .. }), "{e}");
        let missing = dir.path().join("missing.pem");
        let e = SyslogSender::connect(&SyslogTarget::tls("127.0.0.1:9", &missing, "localhost"))
            .await
            .unwrap_err();
        assert!(matches!(e, SendError::CaFile { .. }), "{e}");
    }
}
