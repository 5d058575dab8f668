//! The MQTT accept loop and its part of the ingest lifecycle: connections
//! capped and counted, TLS handshakes bounded, and on shutdown the same
//! hand-over as HTTP (keep accepting, refusing new sessions, for the
//! deregistration delay; answer what is in flight; then DISCONNECT 0x8B).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use super::session;
use super::{Ctx, MqttListener, MqttMetrics, Phase};
use crate::http::ServeConfig;
use crate::ingest::State;

/// Connections over the cap being answered at once; past it they are
/// closed without an answer (refusing must stay cheaper than serving).
const REFUSING_AT_ONCE: usize = 64;

/// Serves MQTT on `mqtt` until `phase` leaves [`Phase::Running`], then
/// hands over and drains (bounded by [`ServeConfig::drain`]). Resolves when
/// every connection has ended.
pub(crate) async fn serve(
    state: Arc<State>,
    metrics: MqttMetrics,
    mqtt: MqttListener,
    mut phase: watch::Receiver<Phase>,
    config: ServeConfig,
) {
    let MqttListener {
        listener,
        tls,
        config: mqtt_config,
    } = mqtt;
    let ctx = Arc::new(Ctx {
        large_packets: Arc::new(Semaphore::new(state.config.max_in_flight.max(1))),
        state,
        config: mqtt_config,
        serve: config.clone(),
        metrics,
        sessions: super::sessions::Sessions::default(),
    });
    let acceptor = tls.map(TlsAcceptor::from);
    let max = config.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let refusing = Arc::new(Semaphore::new(REFUSING_AT_ONCE));
    let (to_conns, conns_phase) = watch::channel(Phase::Running);
    let accept = |stream: TcpStream| {
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            ctx.metrics.refused.inc();
            if let Ok(permit) = refusing.clone().try_acquire_owned() {
                let (acceptor, ctx) = (acceptor.clone(), ctx.clone());
                tokio::spawn(async move {
                    let bound = ctx.serve.handshake_timeout;
                    let _ = tokio::time::timeout(bound, refuse(stream, acceptor, ctx)).await;
                    drop(permit);
                });
            }
            return;
        };
        let (acceptor, ctx, phase) = (acceptor.clone(), ctx.clone(), conns_phase.clone());
        tokio::spawn(async move {
            ctx.metrics.open.inc();
            let ended = connection(stream, acceptor, ctx.clone(), phase).await;
            ctx.metrics.closed(ended);
            ctx.metrics.open.dec();
            drop(slot);
        });
    };
    // Serving, until the lifecycle says otherwise (or is gone).
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => accept(stream),
                Err(e) => {
                    tracing::warn!(error = %e, "MQTT accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow() != Phase::Running {
                    break;
                }
            }
        }
    }
    // Hand-over: sessions in progress answer what is in flight and end
    // with 0x8B; new CONNECTs get 0x88 while balancers move away.
    to_conns.send_replace(Phase::Draining);
    let until = tokio::time::Instant::now() + config.deregister_delay;
    loop {
        tokio::select! {
            accepted = listener.accept() => if let Ok((stream, _)) = accepted {
                accept(stream);
            },
            () = tokio::time::sleep_until(until) => break,
        }
    }
    drop(listener);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(config.drain, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(drain = ?config.drain, "MQTT drain timed out; closing the remaining connections.");
        to_conns.send_replace(Phase::Closing);
        let _ = tokio::time::timeout(Duration::from_secs(2), slots.acquire_many(all)).await;
    }
}

/// One connection: the TLS handshake (bounded), then the session.
async fn connection(
    stream: TcpStream,
    acceptor: Option<TlsAcceptor>,
    ctx: Arc<Ctx>,
    phase: watch::Receiver<Phase>,
) -> session::Ended {
    match acceptor {
        Some(acceptor) => {
            match tokio::time::timeout(ctx.serve.handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => session::run(tls, ctx, phase).await,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "MQTT TLS handshake failed.");
                    "tls_error"
                }
                Err(_) => "handshake_timeout",
            }
        }
        None => session::run(stream, ctx, phase).await,
    }
}

async fn refuse(stream: TcpStream, acceptor: Option<TlsAcceptor>, ctx: Arc<Ctx>) {
    match acceptor {
        Some(acceptor) => {
            if let Ok(tls) = acceptor.accept(stream).await {
                session::refuse(tls, ctx).await;
            }
        }
        None => session::refuse(stream, ctx).await,
    }
}
