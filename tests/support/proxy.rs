//! A TCP proxy that can be made to stall, for a stuck API server.
#![allow(dead_code)]

use std::time::Duration;

/// A TCP proxy on loopback in front of `upstream` that can be made to stall: it then keeps
/// every connection open but forwards nothing, as a stuck connection or an API server
/// under throttling would. Stops when dropped.
pub struct StallingProxy {
    /// `127.0.0.1:PORT` to connect to.
    pub addr: std::net::SocketAddr,
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl StallingProxy {
    /// Starts forwarding to `upstream`.
    pub async fn start(upstream: std::net::SocketAddr) -> Self {
        use std::sync::{Arc, atomic::AtomicBool};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy binds");
        let addr = listener.local_addr().expect("proxy addr");
        let stalled = Arc::new(AtomicBool::new(false));
        let flag = stalled.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pump(cr, sw, flag.clone()));
                    pump(sr, cw, flag).await;
                });
            }
        });
        Self {
            addr,
            stalled,
            task,
        }
    }

    /// From now on nothing is forwarded.
    pub fn stall(&self) {
        self.stalled
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Stalled: hold the bytes (and the connection) forever.
        while stalled.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A proxy that speaks plain HTTP to the operator and TLS to the API server, so that it
/// can see which request a connection carries and stall the LeenConnection watch alone
/// (every watch request for LeenConnections, the ones after it too), while every other
/// call goes through: a watch stuck behind a load balancer, with a working API server.
pub struct WatchStallingProxy {
    /// `127.0.0.1:PORT`: use `http://` to it.
    pub addr: std::net::SocketAddr,
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    after_headers: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl WatchStallingProxy {
    /// Starts forwarding to the API server's TLS port `upstream`.
    pub async fn start(upstream: std::net::SocketAddr) -> Self {
        use std::sync::{Arc, atomic::AtomicBool};
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy binds");
        let addr = listener.local_addr().expect("proxy addr");
        let stalled = Arc::new(AtomicBool::new(false));
        let after_headers = Arc::new(AtomicBool::new(false));
        let (flag, headers_flag) = (stalled.clone(), after_headers.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (flag, connector) = (flag.clone(), connector.clone());
                let headers_flag = headers_flag.clone();
                tokio::spawn(async move {
                    let Ok(tcp) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let name = rustls::pki_types::ServerName::try_from("localhost")
                        .expect("name")
                        .to_owned();
                    let Ok(server) = connector.connect(name, tcp).await else {
                        return;
                    };
                    // Whether the last request sent on this connection watches
                    // LeenConnections (HTTP/1.1: one request at a time per connection).
                    let watching = Arc::new(AtomicBool::new(false));
                    // Whether the answer to the last request has started (its headers).
                    let answered = Arc::new(AtomicBool::new(false));
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = tokio::io::split(server);
                    tokio::spawn(requests(cr, sw, watching.clone(), answered.clone()));
                    let stall = Stall {
                        stalled: flag,
                        after_headers: headers_flag,
                        watching,
                        answered,
                    };
                    answers(sr, cw, stall).await;
                });
            }
        });
        Self {
            addr,
            stalled,
            after_headers,
            task,
        }
    }

    /// From now on, LeenConnection watches get their response headers (a 200) and then
    /// nothing: an L7 proxy that answers and forwards no events.
    pub fn stall_watches_after_headers(&self) {
        self.after_headers
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.stall_watches();
    }

    /// From now on, answers on LeenConnection watches are held (the connection stays open).
    pub fn stall_watches(&self) {
        self.stalled
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Everything held goes through again.
    pub fn resume(&self) {
        self.stalled
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.after_headers
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for WatchStallingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn requests(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    watching: std::sync::Arc<std::sync::atomic::AtomicBool>,
    answered: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        if let Some(line) = text.lines().find(|l| {
            l.starts_with("GET ")
                || l.starts_with("POST ")
                || l.starts_with("PATCH ")
                || l.starts_with("PUT ")
                || l.starts_with("DELETE ")
        }) {
            let watch = line.contains("leenconnections") && line.contains("watch=");
            watching.store(watch, std::sync::atomic::Ordering::SeqCst);
            answered.store(false, std::sync::atomic::Ordering::SeqCst);
        }
        if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
            return;
        }
    }
}

/// When a connection's answers are held.
struct Stall {
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    after_headers: std::sync::Arc<std::sync::atomic::AtomicBool>,
    watching: std::sync::Arc<std::sync::atomic::AtomicBool>,
    answered: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Stall {
    /// Whether the next chunk of the answer is held.
    fn holds(&self, chunk: &[u8]) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        if !(self.stalled.load(SeqCst) && self.watching.load(SeqCst)) {
            return false;
        }
        // The headers (the chunk that starts the answer) pass in after-headers mode.
        !(self.after_headers.load(SeqCst)
            && !self.answered.load(SeqCst)
            && chunk.starts_with(b"HTTP/1.1 "))
    }
}

async fn answers(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stall: Stall,
) {
    use std::sync::atomic::Ordering::SeqCst;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut chunk = &buf[..n];
        if stall.holds(chunk) {
            while stall.holds(chunk) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else if stall.after_headers.load(SeqCst)
            && stall.watching.load(SeqCst)
            && stall.stalled.load(SeqCst)
            && !stall.answered.load(SeqCst)
        {
            // Only the headers go through: the rest of this chunk (events) is held.
            let end = chunk
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(chunk.len(), |i| i + 4);
            if to.write_all(&chunk[..end]).await.is_err() {
                return;
            }
            stall.answered.store(true, SeqCst);
            chunk = &chunk[end..];
            while !chunk.is_empty() && stall.holds(chunk) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        stall.answered.store(true, SeqCst);
        if to.write_all(chunk).await.is_err() {
            return;
        }
    }
}

/// Accepts the API server's self-signed certificate (the test's own server on loopback).
#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A forward proxy for https, as in a corporate network: it answers `CONNECT host:port`
/// for the one target it knows by tunnelling to `upstream`, refuses any other target with
/// 502, and records every request line it gets. Stops when dropped.
pub struct ConnectProxy {
    /// `http://127.0.0.1:PORT`, the value for HTTPS_PROXY.
    pub url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ConnectProxy {
    /// Tunnels `CONNECT target` to `upstream`.
    pub async fn start(target: &str, upstream: std::net::SocketAddr) -> Self {
        use std::sync::{Arc, Mutex};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy binds");
        let url = format!("http://{}", listener.local_addr().expect("proxy addr"));
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let (record, target) = (seen.clone(), target.to_string());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (record, target) = (record.clone(), target.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                        match client.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    let line = text.lines().next().unwrap_or_default().to_string();
                    record.lock().expect("lock").push(line.clone());
                    if line != format!("CONNECT {target} HTTP/1.1") {
                        let _ = client
                            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                            .await;
                        return;
                    }
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    if client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .is_ok()
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        ConnectProxy { url, seen, task }
    }

    /// The request lines received so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
