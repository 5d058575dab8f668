//! The JSON routes, auth, probes, metrics, OpenAPI and UI files.

use super::*;

#[tokio::test]
async fn every_v1_route_requires_the_operator_token() {
    let app = app(seeded().await, config());
    let routes = [
        "/v1/anomalies",
        "/v1/devices/dev-1/readings",
        "/v1/devices/dev-1/health",
        "/v1/stream",
    ];
    let basic = "Basic b3BlcmF0b3I6b3BlcmF0b3ItdG9rZW4tZm9yLXRlc3Rz";
    let wrong = format!("Bearer {TOKEN}x");
    for route in routes {
        for auth in [None, Some(wrong.as_str()), Some("Bearer "), Some(basic)] {
            let resp = call(&app, route, auth).await;
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{route} {auth:?}");
            assert!(resp.headers().contains_key(header::WWW_AUTHENTICATE));
            let body: Value = serde_json::from_str(&text(resp).await).unwrap();
            assert_eq!(body["error"], "unauthorized");
        }
        let resp = call(&app, route, Some(&format!("bearer {TOKEN}"))).await;
        assert_eq!(resp.status(), StatusCode::OK, "{route}");
    }
    // The token is never taken from the URL, not even on the stream.
    let resp = call(&app, &format!("/v1/stream?access_token={TOKEN}"), None).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn probes_metrics_openapi_and_ui_are_open() {
    let app = app(seeded().await, config());
    for (path, want) in [
        ("/healthz", "ok"),
        ("/readyz", "ready"),
        ("/openapi.json", "/v1/anomalies"),
        ("/", "<html"),
        ("/ui/app.js", "sessionStorage"),
        ("/ui/app.css", "{"),
    ] {
        let resp = call(&app, path, None).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(text(resp).await.contains(want), "{path}");
    }
    let resp = call(&app, "/", None).await;
    let csp = resp.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    let doc: Value =
        serde_json::from_str(&text(call(&app, "/openapi.json", None).await).await).unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/v1/stream"]["get"].is_object());

    get(&app, "/v1/anomalies").await;
    let metrics = text(call(&app, "/metrics", None).await).await;
    assert!(
        metrics.contains(r#"ha_alerts_requests_total{route="/v1/anomalies",status="200"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("ha_alerts_request_duration_seconds_bucket"));
    assert!(metrics.contains("ha_alerts_stream_clients 0"));
}

#[tokio::test]
async fn without_a_token_configured_no_auth_is_needed() {
    let app = app(
        seeded().await,
        AlertsConfig {
            api_token: None,
            ..config()
        },
    );
    let resp = call(&app, "/v1/anomalies", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn anomalies_are_newest_first_and_filtered() {
    let app = app(seeded().await, config());
    let (status, body) = get(&app, "/v1/anomalies").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        keys(&body["items"]),
        [
            "dev-1/17/pulse",
            "dev-1/7/spo2",
            "dev-1/7/pulse",
            "dev-1/3/pulse",
            "dev-2/2/pulse"
        ]
    );
    assert_eq!(body["next_cursor"], Value::Null);
    let a = &body["items"][0];
    assert_eq!(a["ts"], "2026-11-26T12:02:50Z");
    assert_eq!(a["value"], 180.0);
    assert_eq!(a["anomaly_score"], 0.999);
    assert_eq!(a["detector"], "zscore");

    let cases = [
        ("device=dev-2", vec!["dev-2/2/pulse"]),
        ("metric=spo2", vec!["dev-1/7/spo2"]),
        (
            "device=dev-1&metric=pulse&limit=2",
            vec!["dev-1/17/pulse", "dev-1/7/pulse"],
        ),
        (
            "from=2026-11-26T12:00:30Z&to=2026-11-26T12:01:10Z",
            vec!["dev-1/3/pulse"],
        ),
        (
            "from=2026-11-26T12:01:10%2B00:00",
            vec!["dev-1/17/pulse", "dev-1/7/spo2", "dev-1/7/pulse"],
        ),
        ("device=nobody", vec![]),
        (
            "device=&metric=",
            vec![
                "dev-1/17/pulse",
                "dev-1/7/spo2",
                "dev-1/7/pulse",
                "dev-1/3/pulse",
                "dev-2/2/pulse",
            ],
        ),
    ];
    for (query, want) in cases {
        let (status, body) = get(&app, &format!("/v1/anomalies?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}");
        assert_eq!(keys(&body["items"]), want, "{query}");
    }
}

#[tokio::test]
async fn following_next_cursor_visits_every_anomaly_once() {
    let store = MemoryStore::new();
    // 250 anomalies over 6 devices, many sharing a timestamp.
    let all: Vec<Anomaly> = (0..250u64)
        .map(|i| anomaly(&format!("dev-{}", i % 6), i, "pulse", (i / 4) as i64))
        .collect();
    store.write(&[], &all).await.unwrap();
    let app = app(store, config());
    let mut seen = Vec::new();
    let mut uri = "/v1/anomalies?limit=7".to_owned();
    let mut pages = 0;
    loop {
        let (status, body) = get(&app, &uri).await;
        assert_eq!(status, StatusCode::OK);
        seen.extend(keys(&body["items"]));
        pages += 1;
        match body["next_cursor"].as_str() {
            Some(c) => {
                let c = c
                    .replace('%', "%25")
                    .replace(',', "%2C")
                    .replace(':', "%3A");
                uri = format!("/v1/anomalies?limit=7&cursor={c}");
            }
            None => break,
        }
        assert!(pages < 100, "pagination does not end");
    }
    assert_eq!(pages, 250usize.div_ceil(7));
    assert_eq!(seen.len(), 250);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 250);
    // Newest first: the seq order follows ts here.
    assert!(seen[0].ends_with("/249/pulse"));
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_parameter() {
    let app = app(seeded().await, config());
    let cases = [
        ("/v1/anomalies?from=yesterday", "from"),
        ("/v1/anomalies?to=2026-11-26T12:00:00", "to"),
        ("/v1/anomalies?from=2026-11-26T12:00:00%2B01:00", "from"),
        (
            "/v1/anomalies?from=2026-11-26T13:00:00Z&to=2026-11-26T12:00:00Z",
            "from",
        ),
        ("/v1/anomalies?limit=0", "limit"),
        ("/v1/anomalies?limit=1001", "limit"),
        ("/v1/anomalies?limit=-1", "limit"),
        ("/v1/anomalies?limit=ten", "limit"),
        ("/v1/anomalies?cursor=garbage", "cursor"),
        ("/v1/anomalies?cursor=1,2,dev", "cursor"),
        ("/v1/anomalies?devcie=dev-1", "devcie"),
        ("/v1/anomalies?device=a&device=b", "device"),
        ("/v1/devices/dev-1/readings?limit=10001", "limit"),
        (
            "/v1/devices/dev-1/readings?from=2026-13-01T00:00:00Z",
            "from",
        ),
        ("/v1/devices/dev-1/readings?cursor=x", "cursor"),
        ("/v1/devices/bad%20id/readings", "id"),
        ("/v1/devices/bad%20id/health", "id"),
        ("/v1/stream?limit=5", "limit"),
    ];
    for (uri, field) in cases {
        let (status, body) = get(&app, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["error"], "invalid_parameter", "{uri}");
        assert_eq!(body["field"], field, "{uri}");
        assert!(!body["message"].as_str().unwrap().is_empty());
    }
    // Still healthy after all that.
    assert_eq!(get(&app, "/v1/anomalies").await.0, StatusCode::OK);
}

#[tokio::test]
async fn readings_of_a_device_in_a_range() {
    let app = app(seeded().await, config());
    let range = "from=2026-11-26T12:00:00Z&to=2026-11-26T12:01:00Z";
    let (status, body) = get(
        &app,
        &format!("/v1/devices/dev-1/readings?{range}&metric=pulse"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 6, "seqs 0..=5");
    assert_eq!(items[0]["seq"], 0);
    assert_eq!(items[0]["ts"], "2026-11-26T12:00:00Z");
    assert_eq!(items[5]["value"], 75.0);
    assert!(items.iter().all(|v| v["metric"] == "pulse"));
    assert_eq!(body["truncated"], false);
    assert_eq!(body["from"], "2026-11-26T12:00:00Z");

    let (_, body) = get(&app, &format!("/v1/devices/dev-1/readings?{range}&limit=4")).await;
    assert_eq!(body["items"].as_array().unwrap().len(), 4);
    assert_eq!(body["truncated"], true);

    // Default range: the last hour up to now; the seed is in the past.
    let (status, body) = get(&app, "/v1/devices/dev-1/readings").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"], Value::Array(vec![]));
    let (status, body) = get(&app, &format!("/v1/devices/nobody/readings?{range}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"], Value::Array(vec![]));
}

#[tokio::test]
async fn device_health_reports_gaps_and_404_for_unknown_devices() {
    let app = app(seeded().await, config());
    let (status, body) = get(&app, "/v1/devices/dev-1/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["device_id"], "dev-1");
    assert_eq!(body["last_seq"], 19);
    assert_eq!(body["last_seen"], "2026-11-26T12:03:10Z");
    assert_eq!(
        body["seq_gaps"],
        serde_json::json!([{"from": 10, "to": 14}])
    );
    assert_eq!(body["gap_search"]["to_seq"], 19);
    assert_eq!(body["gap_search"]["truncated"], false);

    let (status, body) = get(&app, "/v1/devices/dev-2/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["seq_gaps"], serde_json::json!([]));

    let (status, body) = get(&app, "/v1/devices/nobody/health").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "unknown_device");
}

#[tokio::test]
async fn unknown_routes_are_json_404() {
    let app = app(seeded().await, config());
    let (status, body) = get(&app, "/v1/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
}
