//! `/v1/stream`: exactly-once delivery, filters, client cap, keep-alive, drain.

use super::*;

#[tokio::test]
async fn stream_sends_each_new_anomaly_once_even_with_an_old_timestamp() {
    let store = seeded().await;
    let service = AlertsService::new(Arc::new(store.clone()), config());
    let app = service.router();
    let resp = call(&app, "/v1/stream", Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    assert_eq!(resp.headers()["x-accel-buffering"], "no");
    let mut body = resp.into_body();
    let mut buf = String::new();
    read_until(&mut body, &mut buf, "event: ready").await;
    assert!(
        !buf.contains("event: anomaly"),
        "seeded ones are not re-sent"
    );

    // A new one older than everything seen (a late device flush) and a
    // new one newer than everything.
    store
        .write(&[], &[anomaly("dev-3", 1, "pulse", -3600)])
        .await
        .unwrap();
    read_until(&mut body, &mut buf, "\"device_id\":\"dev-3\"").await;
    store
        .write(&[], &[anomaly("dev-4", 1, "spo2", 9999)])
        .await
        .unwrap();
    read_until(&mut body, &mut buf, "\"device_id\":\"dev-4\"").await;
    // Many polls later, still exactly once each.
    tokio::time::sleep(Duration::from_millis(200)).await;
    store
        .write(&[], &[anomaly("dev-5", 1, "pulse", 5)])
        .await
        .unwrap();
    read_until(&mut body, &mut buf, "\"device_id\":\"dev-5\"").await;
    assert_eq!(buf.matches("event: anomaly").count(), 3, "{buf}");
    assert_eq!(buf.matches("\"device_id\":\"dev-3\"").count(), 1);
    assert!(buf.contains(&format!("id: {},1,dev-4,spo2", ts(9999).unix_micros())));

    let metrics = text(call(&app, "/metrics", None).await).await;
    assert!(metrics.contains("ha_alerts_stream_clients 1"), "{metrics}");
    assert!(
        metrics.contains("ha_alerts_stream_events_total 3"),
        "{metrics}"
    );

    // Draining ends the stream, so a graceful shutdown is not held up.
    service.drain();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
    })
    .await;
    assert!(end.is_ok(), "stream did not end on drain");
    let resp = call(&app, "/readyz", None).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (status, body) = get(&app, "/v1/stream").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "draining");
}

#[tokio::test]
async fn stream_filters_by_device_and_caps_clients() {
    let store = seeded().await;
    let app = app(
        store.clone(),
        AlertsConfig {
            max_stream_clients: 1,
            ..config()
        },
    );
    let auth = format!("Bearer {TOKEN}");
    let resp = call(&app, "/v1/stream?device=dev-2", Some(&auth)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut buf = String::new();
    read_until(&mut body, &mut buf, "event: ready").await;

    let (status, err) = get(&app, "/v1/stream").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err["error"], "too_many_streams");

    store
        .write(
            &[],
            &[
                anomaly("dev-1", 99, "pulse", 500),
                anomaly("dev-2", 99, "pulse", 500),
            ],
        )
        .await
        .unwrap();
    read_until(&mut body, &mut buf, "\"seq\":99").await;
    assert!(!buf.contains("\"device_id\":\"dev-1\""), "{buf}");

    // The slot is free again once the client hangs up.
    drop(body);
    let resp = call(&app, "/v1/stream", Some(&auth)).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_idle_stream_sends_keep_alive_comments() {
    let app = app(
        seeded().await,
        AlertsConfig {
            stream_keep_alive: Duration::from_millis(50),
            ..config()
        },
    );
    let resp = call(&app, "/v1/stream", Some(&format!("Bearer {TOKEN}"))).await;
    let mut body = resp.into_body();
    let mut buf = String::new();
    read_until(&mut body, &mut buf, "event: ready").await;
    read_until(&mut body, &mut buf, ": keep-alive\n").await;
}
