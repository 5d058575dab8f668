//! A minimal HTTP/1.1 keep-alive client connection (plain or rustls) for
//! the load driver: one request at a time, `Content-Length` responses
//! only. The device client does more (retries, buffering); a load driver
//! must do less, so that what it measures is the server.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where requests go.
#[derive(Clone)]
pub struct Endpoint {
    /// Server address.
    pub addr: SocketAddr,
    /// TLS settings; `None` speaks plain HTTP.
    pub tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl Endpoint {
    /// Parses `https://host:port` or `http://host:port` (host an IP
    /// address: this driver talks to loopback); `ca_pem` is trusted for HTTPS.
    /// `mqtts://` and `mqtt://` are the same with MQTT on top.
    pub fn parse(url: &str, ca_pem: Option<&[u8]>) -> Result<Endpoint, String> {
        let (tls, rest) = if let Some(r) = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("mqtts://"))
        {
            (true, r)
        } else if let Some(r) = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("mqtt://"))
        {
            (false, r)
        } else {
            return Err(format!(
                "`{url}`: expected http://, https://, mqtt:// or mqtts://"
            ));
        };
        let hostport = rest.split('/').next().unwrap_or(rest);
        let addr: SocketAddr = hostport
            .parse()
            .map_err(|e| format!("`{hostport}`: expected IP:port ({e})"))?;
        let tls = if tls {
            let mut roots = rustls::RootCertStore::empty();
            let ca = ca_pem.ok_or("an https URL needs a CA certificate")?;
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| format!("CA certificate: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("CA certificate: {e}"))?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = ServerName::IpAddress(addr.ip().into());
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Endpoint { addr, tls })
    }

    /// Opens a connection, from `local` when given.
    pub async fn connect(&self, local: Option<std::net::IpAddr>) -> std::io::Result<Connection> {
        Ok(Connection {
            io: self.connect_stream(local).await?,
            buf: Vec::with_capacity(1024),
        })
    }

    /// Opens a TCP (TLS when configured) stream, from `local` when given:
    /// what any protocol on top (HTTP/1.1, MQTT) starts from.
    pub async fn connect_stream(
        &self,
        local: Option<std::net::IpAddr>,
    ) -> std::io::Result<Box<dyn Io>> {
        let tcp = match local {
            Some(ip) => {
                let socket = if self.addr.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(self.addr).await?
            }
            None => TcpStream::connect(self.addr).await?,
        };
        tcp.set_nodelay(true)?;
        let io: Box<dyn Io> = match &self.tls {
            Some((connector, name)) => Box::new(connector.connect(name.clone(), tcp).await?),
            None => Box::new(tcp),
        };
        Ok(io)
    }
}

/// A byte stream, TLS or plain.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One keep-alive connection.
pub struct Connection {
    io: Box<dyn Io>,
    buf: Vec<u8>,
}

impl Connection {
    /// Sends one request (`head` ends with the blank line) and reads the
    /// response; returns its status and body.
    pub async fn exchange(&mut self, head: &[u8], body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let mut out = Vec::with_capacity(head.len() + body.len());
        out.extend_from_slice(head);
        out.extend_from_slice(body);
        self.io.write_all(&out).await?;
        self.io.flush().await?;
        loop {
            if let Some((status, head_len, body_len)) = parse_head(&self.buf)? {
                while self.buf.len() < head_len + body_len {
                    self.read_more().await?;
                }
                let body = self.buf[head_len..head_len + body_len].to_vec();
                self.buf.drain(..head_len + body_len);
                return Ok((status, body));
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.io.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// `(status, header length, body length)` once the head is complete.
fn parse_head(buf: &[u8]) -> std::io::Result<Option<(u16, usize, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    match response.parse(buf) {
        Ok(httparse::Status::Complete(head_len)) => {
            let status = response.code.unwrap_or(0);
            let mut body_len = 0;
            for h in response.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    body_len = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                        .ok_or_else(|| invalid("bad content-length".into()))?;
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(invalid("chunked responses are not supported".into()));
                }
            }
            Ok(Some((status, head_len, body_len)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(invalid(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_once_complete() {
        assert_eq!(
            parse_head(b"HTTP/1.1 202 Accepted\r\ncontent-len").unwrap(),
            None
        );
        let full = b"HTTP/1.1 202 Accepted\r\ncontent-length: 14\r\n\r\n{\"accepted\":1}";
        assert_eq!(parse_head(full).unwrap(), Some((202, full.len() - 14, 14)));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
    }

    #[test]
    fn urls_need_ip_and_scheme() {
        assert!(Endpoint::parse("ftp://127.0.0.1:1", None).is_err());
        assert!(Endpoint::parse("https://127.0.0.1:1", None).is_err());
        assert!(
            Endpoint::parse("http://127.0.0.1:8080/x", None)
                .unwrap()
                .tls
                .is_none()
        );
    }
}
