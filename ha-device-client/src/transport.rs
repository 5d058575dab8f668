//! HTTP/1.1 over rustls (or plain TCP when asked), on one kept-alive
//! connection.
//!
//! The client speaks exactly one exchange: `POST <path>` with a JSON body
//! and `Content-Length`, answered by a status, a few headers and a small
//! body (fixed length, chunked, or up to EOF). That is a few hundred lines
//! over [`httparse`], which is why this crate does not pull `hyper`:
//! hyper's client needs its connection future driven by a spawned task (or
//! `hyper-util`'s pool, which spawns), plus `http`, `http-body` and tower
//! layers, for features a device never uses.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, lookup_host};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::{ClientConfig, Endpoint};
use crate::error::Error;
use crate::event::Event;

/// Longest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Longest response body accepted (answers are small JSON objects).
const MAX_BODY: usize = 64 * 1024;

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: Vec<u8>,
}

/// One connection at a time to the ingest API.
pub(crate) struct Transport {
    endpoint: Endpoint,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    authorization: String,
    local_addr: Option<std::net::IpAddr>,
    connect_timeout: Duration,
    request_timeout: Duration,
    conn: Option<Conn>,
}

struct Conn {
    stream: Stream,
    /// Set while an exchange runs: if the caller drops the future halfway,
    /// the connection holds half a request and must not be reused.
    busy: bool,
}

/// Why an exchange failed, and whether it failed before the server sent a
/// single byte (a kept-alive connection the server had already closed).
struct Failure {
    error: Error,
    stale: bool,
}

impl Transport {
    pub(crate) fn new(config: &ClientConfig) -> Result<Self, Error> {
        config.validate()?;
        let endpoint = Endpoint::parse(&config.url)?;
        let tls = if endpoint.tls {
            let name = ServerName::try_from(endpoint.host.clone())
                .map_err(|e| Error::Config(format!("TLS server name `{}`: {e}", endpoint.host)))?;
            Some((TlsConnector::from(Arc::new(tls_config(config)?)), name))
        } else {
            None
        };
        let credentials = format!("{}:{}", config.device_id, config.token);
        Ok(Transport {
            endpoint,
            tls,
            authorization: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            ),
            local_addr: config.local_addr,
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            conn: None,
        })
    }

    /// Whether a connection is open.
    pub(crate) fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Closes the connection, if any.
    pub(crate) fn disconnect(&mut self, reason: &str, events: &mut dyn FnMut(Event)) {
        if self.conn.take().is_some() {
            events(Event::Disconnected {
                reason: reason.to_owned(),
            });
        }
    }

    /// Posts `body`, connecting first if need be. A kept-alive connection
    /// that turns out to be closed is replaced once at once; every other
    /// failure closes the connection and is returned.
    pub(crate) async fn post(
        &mut self,
        body: &[u8],
        events: &mut dyn FnMut(Event),
    ) -> Result<Response, Error> {
        if self.conn.as_ref().is_some_and(|c| c.busy) {
            self.disconnect("an earlier request was abandoned", events);
        }
        let reused = self.conn.is_some();
        if !reused {
            self.connect(events).await?;
        }
        match self.exchange(body).await {
            Ok(r) => {
                if r.1 {
                    self.disconnect("the server closed the connection", events);
                }
                Ok(r.0)
            }
            Err(f) if reused && f.stale => {
                tracing::debug!(error = %f.error, "Kept-alive connection was closed; reconnecting.");
                self.disconnect(&f.error.to_string(), events);
                self.connect(events).await?;
                self.finish(body, events).await
            }
            Err(f) => {
                self.disconnect(&f.error.to_string(), events);
                Err(f.error)
            }
        }
    }

    async fn finish(
        &mut self,
        body: &[u8],
        events: &mut dyn FnMut(Event),
    ) -> Result<Response, Error> {
        match self.exchange(body).await {
            Ok((r, close)) => {
                if close {
                    self.disconnect("the server closed the connection", events);
                }
                Ok(r)
            }
            Err(f) => {
                self.disconnect(&f.error.to_string(), events);
                Err(f.error)
            }
        }
    }

    async fn connect(&mut self, events: &mut dyn FnMut(Event)) -> Result<(), Error> {
        let addr = format!("{}:{}", self.endpoint.host, self.endpoint.port);
        let attempt = async {
            let (tcp, peer) = self.connect_tcp(&addr).await?;
            let stream = match &self.tls {
                Some((connector, name)) => {
                    let tls = connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|source| Error::Tls {
                            addr: addr.clone(),
                            source,
                        })?;
                    Stream::Tls(Box::new(tls))
                }
                None => Stream::Plain(tcp),
            };
            Ok::<_, Error>((stream, peer))
        };
        let (stream, peer) =
            timeout(self.connect_timeout, attempt)
                .await
                .map_err(|_| Error::Timeout {
                    phase: "connect",
                    after: self.connect_timeout,
                })??;
        self.conn = Some(Conn {
            stream,
            busy: false,
        });
        events(Event::Connected { peer });
        Ok(())
    }

    async fn connect_tcp(&self, addr: &str) -> Result<(TcpStream, SocketAddr), Error> {
        let connect_err = |source| Error::Connect {
            addr: addr.to_owned(),
            source,
        };
        let peers = lookup_host((self.endpoint.host.as_str(), self.endpoint.port))
            .await
            .map_err(connect_err)?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
        for peer in peers {
            let socket = if peer.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            };
            let result = async {
                let socket = socket?;
                if let Some(local) = self.local_addr {
                    if local.is_ipv4() != peer.is_ipv4() {
                        return Err(io::Error::new(
                            io::ErrorKind::AddrNotAvailable,
                            "local address family differs",
                        ));
                    }
                    socket.bind(SocketAddr::new(local, 0))?;
                }
                let tcp = socket.connect(peer).await?;
                tcp.set_nodelay(true)?;
                Ok(tcp)
            }
            .await;
            match result {
                Ok(tcp) => return Ok((tcp, peer)),
                Err(e) => last = e,
            }
        }
        Err(connect_err(last))
    }

    /// One request and its answer, within the request timeout. Returns the
    /// answer and whether the connection must be closed after it.
    async fn exchange(&mut self, body: &[u8]) -> Result<(Response, bool), Failure> {
        let mut request = Vec::with_capacity(256 + body.len());
        request.extend_from_slice(
            format!(
                "POST {} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nAccept: application/json\r\nUser-Agent: ha-device-client/{}\r\nContent-Length: {}\r\n\r\n",
                self.endpoint.path,
                self.endpoint.authority,
                self.authorization,
                env!("CARGO_PKG_VERSION"),
                body.len()
            )
            .as_bytes(),
        );
        request.extend_from_slice(body);
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure {
                error: Error::Io(io::Error::new(io::ErrorKind::NotConnected, "not connected")),
                stale: false,
            });
        };
        conn.busy = true;
        let stream = &mut conn.stream;
        let exchange = async {
            if let Err(e) = stream.write_all(&request).await.and(stream.flush().await) {
                return Err(Failure {
                    error: Error::Io(e),
                    stale: true,
                });
            }
            read_response(stream).await
        };
        let result = match timeout(self.request_timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(Failure {
                error: Error::Timeout {
                    phase: "request",
                    after: self.request_timeout,
                },
                stale: false,
            }),
        };
        conn.busy = false;
        result
    }
}

fn tls_config(config: &ClientConfig) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for pem in &config.ca {
        let bytes = pem.load()?;
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(&bytes) {
            let cert = cert.map_err(|e| Error::TlsConfig(format!("CA bundle: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| Error::TlsConfig(format!("CA certificate: {e}")))?;
            n += 1;
        }
        if n == 0 {
            return Err(Error::TlsConfig("CA bundle holds no certificate".into()));
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::TlsConfig(e.to_string()))?
    .with_root_certificates(roots);
    let mut tls = match &config.client_cert {
        Some((chain, key)) => {
            let chain = chain.load()?;
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain)
                .collect::<Result<_, _>>()
                .map_err(|e| Error::TlsConfig(format!("client certificate: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(&key.load()?)
                .map_err(|e| Error::TlsConfig(format!("client key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::TlsConfig(format!("client certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// Reads one answer, skipping interim (1xx) ones.
async fn read_response<S: AsyncRead + Unpin>(s: &mut S) -> Result<(Response, bool), Failure> {
    let mut r = Reader {
        stream: s,
        buf: Vec::with_capacity(1024),
        pos: 0,
        got_any: false,
    };
    loop {
        let head = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&r.buf[r.pos..]) {
                Ok(httparse::Status::Complete(n)) => break Head::from(&resp, n),
                Ok(httparse::Status::Partial) if r.buf.len() - r.pos < MAX_HEAD => r.fill().await?,
                Ok(httparse::Status::Partial) => return Err(protocol("response head too long")),
                Err(e) => return Err(protocol(&format!("response head: {e}"))),
            }
        };
        r.pos += head.len;
        if (100..200).contains(&head.status) {
            continue;
        }
        let body = if head.chunked {
            r.chunked_body().await?
        } else if let Some(n) = head.content_length {
            if n > MAX_BODY {
                return Err(protocol("response body too large"));
            }
            r.exact(n).await?
        } else if head.status == 204 || head.status == 304 {
            Vec::new()
        } else {
            r.read_to_eof().await?
        };
        // Bytes past the answer mean we lost track of the framing.
        let close = head.close || !head.framed() || r.pos != r.buf.len();
        return Ok((
            Response {
                status: head.status,
                retry_after: head.retry_after,
                body,
            },
            close,
        ));
    }
}

fn protocol(why: &str) -> Failure {
    Failure {
        error: Error::Protocol(why.to_owned()),
        stale: false,
    }
}

struct Head {
    len: usize,
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
    retry_after: Option<Duration>,
}

impl Head {
    fn from(resp: &httparse::Response<'_, '_>, len: usize) -> Head {
        let mut head = Head {
            len,
            status: resp.code.unwrap_or(0),
            content_length: None,
            chunked: false,
            close: resp.version == Some(0),
            retry_after: None,
        };
        for h in resp.headers.iter() {
            let value = std::str::from_utf8(h.value).unwrap_or("").trim();
            if h.name.eq_ignore_ascii_case("content-length") {
                head.content_length = value.parse().ok();
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                head.chunked = value.to_ascii_lowercase().ends_with("chunked");
            } else if h.name.eq_ignore_ascii_case("connection") {
                let v = value.to_ascii_lowercase();
                if v.split(',').any(|t| t.trim() == "close") {
                    head.close = true;
                }
            } else if h.name.eq_ignore_ascii_case("retry-after") {
                // Delta-seconds only; an HTTP-date is ignored (the linear
                // delay still applies).
                head.retry_after = value.parse::<u64>().ok().map(Duration::from_secs);
            }
        }
        head
    }

    fn framed(&self) -> bool {
        self.chunked || self.content_length.is_some() || self.status == 204 || self.status == 304
    }
}

struct Reader<'a, S> {
    stream: &'a mut S,
    buf: Vec<u8>,
    pos: usize,
    got_any: bool,
}

impl<S: AsyncRead + Unpin> Reader<'_, S> {
    /// Reads more bytes; EOF is an error here (the answer is incomplete).
    async fn fill(&mut self) -> Result<(), Failure> {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk).await {
            Ok(0) => Err(Failure {
                error: Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the answer was complete",
                )),
                stale: !self.got_any,
            }),
            Ok(n) => {
                self.got_any = true;
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(Failure {
                stale: !self.got_any
                    && matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                    ),
                error: Error::Io(e),
            }),
        }
    }

    async fn exact(&mut self, n: usize) -> Result<Vec<u8>, Failure> {
        while self.buf.len() - self.pos < n {
            self.fill().await?;
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(out)
    }

    async fn line(&mut self) -> Result<Vec<u8>, Failure> {
        loop {
            if let Some(i) = self.buf[self.pos..].windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[self.pos..self.pos + i].to_vec();
                self.pos += i + 2;
                return Ok(line);
            }
            if self.buf.len() - self.pos > MAX_HEAD {
                return Err(protocol("chunk line too long"));
            }
            self.fill().await?;
        }
    }

    async fn chunked_body(&mut self) -> Result<Vec<u8>, Failure> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = std::str::from_utf8(&line)
                .ok()
                .and_then(|l| {
                    usize::from_str_radix(l.split(';').next().unwrap_or("").trim(), 16).ok()
                })
                .ok_or_else(|| protocol("bad chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line().await?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                return Err(protocol("response body too large"));
            }
            body.extend_from_slice(&self.exact(size).await?);
            if !self.line().await?.is_empty() {
                return Err(protocol("chunk not followed by CRLF"));
            }
        }
    }

    async fn read_to_eof(&mut self) -> Result<Vec<u8>, Failure> {
        loop {
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) if self.buf.len() - self.pos + n <= MAX_BODY => {
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                Ok(_) => return Err(protocol("response body too large")),
                Err(e) => {
                    return Err(Failure {
                        error: Error::Io(e),
                        stale: false,
                    });
                }
            }
        }
        let out = self.buf[self.pos..].to_vec();
        self.pos = self.buf.len();
        Ok(out)
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> Result<(Response, bool), Failure> {
        let mut s = bytes;
        read_response(&mut s).await
    }

    #[tokio::test]
    async fn reads_fixed_chunked_and_interim_answers() {
        let (r, close) =
            parse(b"HTTP/1.1 202 Accepted\r\nContent-Length: 14\r\n\r\n{\"accepted\":3}")
                .await
                .ok()
                .unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), close),
            (202, &b"{\"accepted\":3}"[..], false)
        );
        let (r, close) = parse(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Service Unavailable\r\nretry-after: 7\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4;x=y\r\n{\"er\r\n3\r\nr\":\r\n0\r\n\r\n",
        )
        .await
        .ok()
        .unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(r.body, b"{\"err\":");
        assert!(close);
        let (r, close) = parse(b"HTTP/1.0 200 OK\r\n\r\nhello").await.ok().unwrap();
        assert_eq!((r.body.as_slice(), close), (&b"hello"[..], true));
    }

    #[tokio::test]
    async fn eof_before_any_byte_is_stale_and_garbage_is_protocol() {
        let f = parse(b"").await.err().unwrap();
        assert!(f.stale);
        let f = parse(b"HTTP/1.1 200 OK\r\nContent-Le").await.err().unwrap();
        assert!(!f.stale);
        let f = parse(b"SMTP hello\r\n\r\n").await.err().unwrap();
        assert!(matches!(f.error, Error::Protocol(_)));
        let f = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
            .await
            .err()
            .unwrap();
        assert!(matches!(f.error, Error::Io(_)));
    }
}
