//! Reading one HTTP/1.1 answer: head via `httparse`, then a body framed
//! by `Content-Length`, chunked, or up to EOF.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::Error;

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: Vec<u8>,
}

/// Why an exchange failed, and whether it failed before the server sent a
/// single byte (a kept-alive connection the server had already closed).
pub(crate) struct Failure {
    pub(crate) error: Error,
    pub(crate) stale: bool,
}

/// Longest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Longest response body accepted (answers are small JSON objects).
const MAX_BODY: usize = 64 * 1024;

/// Reads one answer, skipping interim (1xx) ones.
pub(crate) async fn read_response<S: AsyncRead + Unpin>(
    s: &mut S,
) -> Result<(Response, bool), Failure> {
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
