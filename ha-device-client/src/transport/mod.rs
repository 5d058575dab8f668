//! HTTP/1.1 over rustls (or plain TCP when asked), on one kept-alive
//! connection of the client's own, or on a connection lent by a
//! [`ConnectionPool`] for one exchange.
//!
//! The client speaks exactly one exchange: `POST <path>` with a JSON body
//! and `Content-Length`, answered by a status, a few headers and a small
//! body (fixed length, chunked, or up to EOF). That is a few hundred lines
//! over [`httparse`], which is why this crate does not pull `hyper`:
//! hyper's client needs its connection future driven by a spawned task (or
//! `hyper-util`'s pool, which spawns), plus `http`, `http-body` and tower
//! layers, for features a device never uses.

mod conn;
mod connector;
mod endpoint;
#[cfg(feature = "mqtt")]
mod mqtt;
mod options;
mod pool;
mod response;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::time::timeout;

pub(crate) use endpoint::Endpoint;
pub use endpoint::READINGS_PATH;
pub use options::ConnectOptions;
pub use pool::{ConnectionPool, PoolConfig};
pub(crate) use response::Response;

use conn::{Conn, close, post_on};
use connector::Connector;

use crate::config::ClientConfig;
use crate::error::Error;
use crate::event::Event;

/// One client's way to the ingest API: its credentials, and either its
/// own kept-alive connection or a pool to borrow one from.
/// What a window of bodies came to: an answer for each of the first
/// `answers.len()` bodies, in order; `written` of them went on the wire.
#[derive(Debug, Default)]
pub(crate) struct Window {
    pub(crate) written: usize,
    pub(crate) answers: Vec<Result<Response, Error>>,
}

pub(crate) struct Transport {
    connector: Arc<Connector>,
    source: Source,
    authorization: String,
    request_timeout: Duration,
}

enum Source {
    /// The client's own connection, kept alive between flushes.
    Own(Option<Conn>),
    /// A connection borrowed for each exchange.
    Pool(ConnectionPool),
    /// The client's own MQTT session (`mqtts://`).
    #[cfg(feature = "mqtt")]
    Mqtt(Box<mqtt::MqttLink>),
}

impl Transport {
    pub(crate) fn new(config: &ClientConfig) -> Result<Self, Error> {
        config.validate()?;
        let (connector, source) = match &config.pool {
            Some(pool) => (pool.connector().clone(), Source::Pool(pool.clone())),
            None => {
                let endpoint = Endpoint::parse(&config.url)?;
                let mqtt = endpoint.mqtt;
                let connector = Arc::new(Connector::new(endpoint, &config.connection)?);
                let source = if mqtt {
                    mqtt_source(config, &connector)?
                } else {
                    Source::Own(None)
                };
                (connector, source)
            }
        };
        let credentials = format!("{}:{}", config.device_id, config.token);
        Ok(Transport {
            connector,
            source,
            authorization: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            ),
            request_timeout: config.request_timeout,
        })
    }

    /// Whether the client holds a connection of its own (never with a
    /// pool: it holds one only during an exchange).
    pub(crate) fn is_connected(&self) -> bool {
        match &self.source {
            Source::Own(conn) => conn.is_some(),
            Source::Pool(_) => false,
            #[cfg(feature = "mqtt")]
            Source::Mqtt(link) => link.is_connected(),
        }
    }

    /// Closes the client's own connection, if any.
    pub(crate) fn disconnect(&mut self, reason: &str, events: &mut (dyn FnMut(Event) + Send)) {
        match &mut self.source {
            Source::Own(slot) => close(slot, reason, events),
            Source::Pool(_) => {}
            #[cfg(feature = "mqtt")]
            Source::Mqtt(link) => link.close(reason, events),
        }
    }

    /// Posts `body`, connecting first if need be (borrowing a connection
    /// from the pool first, waiting at most the request timeout for one).
    /// A kept-alive connection that turns out to be closed is replaced
    /// once at once; every other failure closes the connection and is
    /// returned.
    pub(crate) async fn post(
        &mut self,
        body: &[u8],
        events: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Response, Error> {
        #[cfg(feature = "mqtt")]
        if let Source::Mqtt(link) = &mut self.source {
            return link.publish(body, events).await;
        }
        let request = self.request(body);
        let limit = self.request_timeout;
        match &mut self.source {
            Source::Own(slot) => post_on(&self.connector, slot, &request, limit, events).await,
            Source::Pool(pool) => {
                let mut lease = timeout(limit, pool.lend())
                    .await
                    .map_err(|_| Error::Timeout {
                        phase: "waiting for a pooled connection",
                        after: limit,
                    })?;
                // The lease hands a healthy connection back when dropped.
                post_on(&self.connector, lease.slot(), &request, limit, events).await
            }
            #[cfg(feature = "mqtt")]
            Source::Mqtt(link) => link.publish(body, events).await,
        }
    }

    /// How many batches [`post_window`](Self::post_window) may take: more
    /// than 1 only over MQTT with `with_mqtt_max_in_flight`.
    pub(crate) fn window(&self) -> usize {
        match &self.source {
            #[cfg(feature = "mqtt")]
            Source::Mqtt(link) => link.window(),
            _ => 1,
        }
    }

    /// Sends `bodies` (at most [`window`](Self::window) of them) without
    /// waiting for one answer before sending the next; the answers, in
    /// order, up to the first that is not a success or did not come.
    pub(crate) async fn post_window(
        &mut self,
        bodies: &[Vec<u8>],
        events: &mut (dyn FnMut(Event) + Send),
    ) -> Window {
        #[cfg(feature = "mqtt")]
        if let Source::Mqtt(link) = &mut self.source
            && bodies.len() > 1
        {
            return link.publish_window(bodies, events).await;
        }
        let Some(body) = bodies.first() else {
            return Window::default();
        };
        Window {
            written: 1,
            answers: vec![self.post(body, events).await],
        }
    }

    fn request(&self, body: &[u8]) -> Vec<u8> {
        let endpoint = &self.connector.endpoint;
        let mut request = Vec::with_capacity(256 + body.len());
        request.extend_from_slice(
            format!(
                "POST {} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nAccept: application/json\r\nUser-Agent: ha-device-client/{}\r\nContent-Length: {}\r\n\r\n",
                endpoint.path,
                endpoint.authority,
                self.authorization,
                env!("CARGO_PKG_VERSION"),
                body.len()
            )
            .as_bytes(),
        );
        request.extend_from_slice(body);
        request
    }
}

#[cfg(feature = "mqtt")]
fn mqtt_source(config: &ClientConfig, connector: &Arc<Connector>) -> Result<Source, Error> {
    let link = mqtt::MqttLink::new(
        connector.clone(),
        &config.device_id,
        &config.token,
        config.mqtt_keep_alive,
        config.request_timeout,
        config.mqtt_max_in_flight,
    )?;
    Ok(Source::Mqtt(Box::new(link)))
}

#[cfg(not(feature = "mqtt"))]
fn mqtt_source(config: &ClientConfig, _: &Arc<Connector>) -> Result<Source, Error> {
    Err(Error::Config(format!(
        "{}: this build of ha-device-client has no MQTT (cargo feature `mqtt`)",
        config.url
    )))
}
