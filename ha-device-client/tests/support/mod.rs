//! A scripted fake ingest API over real HTTPS (rustls + hyper's server,
//! rcgen certificates) on 127.0.0.1, for the client's failure tests.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ha_core::wire::{IngestBody, Metric, Reading, Timestamp};
use ha_device_client::{ClientConfig, Event, RetryPolicy};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// What the fake server does with one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 202 `{"accepted": n}`: the readings are durable.
    Accept,
    /// An error status with a JSON error body, and `Retry-After` if given.
    Status {
        status: u16,
        code: &'static str,
        index: Option<usize>,
        retry_after: Option<u64>,
    },
    /// Close the connection without answering.
    Drop,
    /// Answer nothing for this long, then close.
    Stall(Duration),
}

impl Reply {
    pub fn status(status: u16, code: &'static str) -> Reply {
        Reply::Status {
            status,
            code,
            index: None,
            retry_after: None,
        }
    }
}

type Script = Box<dyn FnMut(usize, &[Reading]) -> Reply + Send>;

/// What the server saw.
#[derive(Default)]
pub struct Seen {
    /// `seq`s of each request, in arrival order.
    pub requests: Vec<Vec<u64>>,
    /// `seq`s answered with 202, in order.
    pub accepted: Vec<u64>,
    /// `seq`s that arrived again after a 202 had covered them.
    pub resent_after_ack: Vec<u64>,
    /// TLS connections accepted.
    pub connections: usize,
    /// TLS connections open now, and the most open at once.
    pub open_connections: usize,
    pub max_open_connections: usize,
    /// `(device_id, seq)` answered with 202, in order.
    pub accepted_readings: Vec<(String, u64)>,
    /// Requests whose readings belong to another device than the
    /// Basic-auth user.
    pub auth_mismatches: usize,
    /// `Authorization` header values.
    pub auth: Vec<String>,
    /// Body size of each request, in bytes.
    pub body_sizes: Vec<usize>,
}

pub struct FakeServer {
    pub addr: SocketAddr,
    pub ca_pem: Vec<u8>,
    /// A client certificate chain and key (PEM) signed by the CA.
    pub client_cert: (Vec<u8>, Vec<u8>),
    seen: Arc<Mutex<Seen>>,
    script: Arc<Mutex<Script>>,
}

impl FakeServer {
    /// Starts a server whose answer to the `n`th request (0-based) with
    /// `readings` is `script(n, readings)`.
    pub async fn start(
        script: impl FnMut(usize, &[Reading]) -> Reply + Send + 'static,
    ) -> FakeServer {
        Self::start_with(false, script).await
    }

    /// Like `start`; with `mtls`, the server demands a client certificate
    /// signed by its CA.
    pub async fn start_with(
        mtls: bool,
        script: impl FnMut(usize, &[Reading]) -> Reply + Send + 'static,
    ) -> FakeServer {
        let (ca_pem, client_cert, acceptor) = tls(mtls);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let script: Arc<Mutex<Script>> = Arc::new(Mutex::new(Box::new(script)));
        let (s, sc) = (seen.clone(), script.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, seen, script) = (acceptor.clone(), s.clone(), sc.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    {
                        let mut s = seen.lock().unwrap();
                        s.connections += 1;
                        s.open_connections += 1;
                        s.max_open_connections = s.max_open_connections.max(s.open_connections);
                    }
                    let counted = seen.clone();
                    let service = service_fn(move |req| handle(req, seen.clone(), script.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                    counted.lock().unwrap().open_connections -= 1;
                });
            }
        });
        FakeServer {
            addr,
            ca_pem,
            client_cert,
            seen,
            script,
        }
    }

    /// Replaces the script.
    pub fn set_script(&self, script: impl FnMut(usize, &[Reading]) -> Reply + Send + 'static) {
        *self.script.lock().unwrap() = Box::new(script);
    }

    pub fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap())
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// A client config for this server with a fast retry policy
    /// (10 ms step, 50 ms cap, 10 retries) and events collected in `events`.
    pub fn config(&self, events: &Events) -> ClientConfig {
        let events = events.clone();
        ClientConfig::new(self.url(), "dev-1", "c0ffee")
            .with_ca_pem(self.ca_pem.clone())
            .with_retry_policy(fast_policy())
            .with_request_timeout(Duration::from_millis(500))
            .with_pacing(Duration::from_millis(1))
            .with_event_callback(move |e| events.0.lock().unwrap().push(e.clone()))
    }
}

pub fn fast_policy() -> RetryPolicy {
    RetryPolicy::linear(Duration::from_millis(10), Duration::from_millis(50), 10).unwrap()
}

/// Events collected by a callback.
#[derive(Clone, Default)]
pub struct Events(pub Arc<Mutex<Vec<Event>>>);

impl Events {
    pub fn all(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }

    pub fn retries(&self) -> Vec<(u32, Duration)> {
        self.all()
            .iter()
            .filter_map(|e| match e {
                Event::Retry { attempt, delay, .. } => Some((*attempt, *delay)),
                _ => None,
            })
            .collect()
    }
}

pub fn reading(seq: u64) -> Reading {
    reading_of("dev-1", seq)
}

pub fn reading_of(device: &str, seq: u64) -> Reading {
    Reading {
        device_id: device.into(),
        seq,
        ts: Timestamp::now().saturating_sub(Duration::from_secs(60)),
        metrics: vec![Metric::new("pulse", 60.0 + (seq % 40) as f64)],
    }
}

async fn handle(
    req: Request<Incoming>,
    seen: Arc<Mutex<Seen>>,
    script: Arc<Mutex<Script>>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(req.uri().path(), "/v1/readings");
    assert_eq!(req.headers()["content-type"], "application/json");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let readings = match IngestBody::parse(&body, Timestamp::now()) {
        Ok(b) => b.readings,
        Err(e) => {
            return Ok(json(
                400,
                &format!(r#"{{"error":"malformed","message":"{e}"}}"#),
                None,
            ));
        }
    };
    let seqs: Vec<u64> = readings.iter().map(|r| r.seq).collect();
    let user = basic_user(&auth);
    let reply = {
        let mut seen = seen.lock().unwrap();
        if readings
            .iter()
            .any(|r| Some(r.device_id.as_str()) != user.as_deref())
        {
            seen.auth_mismatches += 1;
        }
        let n = seen.requests.len();
        seen.requests.push(seqs.clone());
        seen.auth.push(auth);
        seen.body_sizes.push(body.len());
        let again: Vec<u64> = seqs
            .iter()
            .copied()
            .filter(|s| seen.accepted.contains(s))
            .collect();
        seen.resent_after_ack.extend(again);
        drop(seen);
        (script.lock().unwrap())(n, &readings)
    };
    match reply {
        Reply::Accept => {
            let mut s = seen.lock().unwrap();
            s.accepted.extend(&seqs);
            s.accepted_readings
                .extend(readings.iter().map(|r| (r.device_id.clone(), r.seq)));
            drop(s);
            Ok(json(
                202,
                &format!(r#"{{"accepted":{}}}"#, seqs.len()),
                None,
            ))
        }
        Reply::Status {
            status,
            code,
            index,
            retry_after,
        } => {
            let index = index.map_or(String::new(), |i| format!(r#","index":{i},"field":"ts""#));
            let body = format!(r#"{{"error":"{code}","message":"scripted {status}"{index}}}"#);
            Ok(json(status, &body, retry_after))
        }
        Reply::Drop => Err(std::io::Error::other("scripted drop")),
        Reply::Stall(d) => {
            tokio::time::sleep(d).await;
            Err(std::io::Error::other("scripted stall"))
        }
    }
}

/// The user of a `Basic` authorization header.
fn basic_user(header: &str) -> Option<String> {
    use base64::Engine as _;
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split_once(':')?.0.to_owned())
}

fn json(status: u16, body: &str, retry_after: Option<u64>) -> Response<Full<Bytes>> {
    let mut r = Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json");
    if let Some(s) = retry_after {
        r = r.header("retry-after", s.to_string());
    }
    r.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
}

/// A CA, a server certificate for `localhost` and 127.0.0.1 and a client
/// certificate, both signed by it: returns the CA's PEM, the client's chain
/// and key PEM, and an acceptor presenting the server's certificate (and
/// demanding the client's with `mtls`).
fn tls(mtls: bool) -> (Vec<u8>, (Vec<u8>, Vec<u8>), TlsAcceptor) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client = rcgen::CertificateParams::new(vec!["dev-1".to_string()])
        .unwrap()
        .signed_by(&client_key, &ca, &ca_key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if mtls {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    (
        ca.pem().into_bytes(),
        (
            client.pem().into_bytes(),
            client_key.serialize_pem().into_bytes(),
        ),
        TlsAcceptor::from(Arc::new(config)),
    )
}
