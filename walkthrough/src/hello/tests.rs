//! The hello routes through `Router::oneshot`, no socket.

use super::*;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

struct Fixture {
    dir: PathBuf,
    app: Router,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = std::env::temp_dir().join(ha_core::conformance::unique_name("hello-test-"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = HelloConfig {
            log_file: dir.join("hello.log"),
        };
        let identity = Identity {
            hostname: "pod-<1>".into(),
            uid: Some(10001),
            gid: Some(10001),
            user: Some("app".into()),
        };
        Fixture {
            app: router(config, identity),
            dir,
        }
    }

    async fn get(&self, uri: &str) -> (StatusCode, String) {
        let response = self
            .app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn json(&self, uri: &str) -> (StatusCode, serde_json::Value) {
        let (status, body) = self.get(uri).await;
        (
            status,
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{uri}: {e}: {body}")),
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("hello.log")).unwrap_or_default()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn index_shows_version_host_and_user_escaped() {
    let f = Fixture::new();
    let (status, page) = f.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(env!("CARGO_PKG_VERSION")), "{page}");
    assert!(page.contains("pod-&lt;1&gt;"), "{page}");
    assert!(page.contains("app (uid 10001, gid 10001)"), "{page}");
    assert_eq!(f.get("/healthz").await, (StatusCode::OK, "ok\n".into()));
}

#[tokio::test]
async fn greets_valid_names_and_logs_each_request() {
    let f = Fixture::new();
    let (status, body) = f.json("/hello/world").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["message"], "Hello, world!");
    assert_eq!(body["hostname"], "pod-<1>");
    let (status, body) = f.json("/hello/J%C3%BCrgen%20M").await;
    assert_eq!(
        (status, &body["message"]),
        (StatusCode::OK, &"Hello, Jürgen M!".into())
    );
    let longest = "é".repeat(64);
    assert_eq!(f.get(&format!("/hello/{longest}")).await.0, StatusCode::OK);
    let log = f.log();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    // Driven without a socket: no client address.
    assert!(
        lines[0].contains(
            " pod-<1> hello client=- method=GET path=/hello/world status=200 latency_ms="
        ),
        "{log}"
    );
    assert!(lines[0].ends_with(" name=\"world\""), "{log}");
    assert!(
        lines[1].contains("path=/hello/J%C3%BCrgen%20M status=200"),
        "{log}"
    );
    assert!(lines[1].contains("name=\"Jürgen M\""), "{log}");
    // Other routes are not greetings: not logged.
    f.get("/").await;
    f.get("/logs").await;
    assert_eq!(f.log().lines().count(), 3);
}

#[tokio::test]
async fn refuses_bad_names_with_json_400() {
    let f = Fixture::new();
    let too_long = "a".repeat(65);
    for uri in [
        "/hello/",
        "/hello",
        &format!("/hello/{too_long}"),
        "/hello/a%0Ab",
        "/hello/%00",
        "/hello/%FF",
    ] {
        let (status, body) = f.json(uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["error"], "invalid_name", "{uri}: {body}");
    }
    // Every request is recorded, the refused names themselves are not.
    let log = f.log();
    assert_eq!(log.lines().count(), 6, "{log}");
    assert!(log.lines().all(|l| l.contains(" status=400 ")), "{log}");
    // The route, not the refused path, is logged.
    assert!(
        log.lines()
            .all(|l| l.contains(" path=/hello/{name} ") || l.contains(" path=/hello")),
        "{log}"
    );
    assert!(!log.contains(&too_long), "{log}");
    assert!(!log.contains("%0A") && !log.contains("%FF"), "{log}");
    assert_eq!(check_name(&"x".repeat(64)), None);
    assert!(check_name("tab\there").is_some());
}

#[tokio::test]
async fn logs_returns_the_tail_and_an_empty_list_without_a_file() {
    let f = Fixture::new();
    let (status, body) = f.json("/logs").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["lines"], serde_json::json!([]));
    assert!(body["file"].as_str().unwrap().ends_with("hello.log"));

    for i in 0..120 {
        assert_eq!(f.get(&format!("/hello/n{i}")).await.0, StatusCode::OK);
    }
    let (_, body) = f.json("/logs").await;
    let lines = body["lines"].as_array().unwrap();
    assert_eq!(lines.len(), DEFAULT_LOG_LINES);
    assert!(
        lines[0].as_str().unwrap().contains("name=\"n20\""),
        "{body}"
    );
    assert!(
        lines[99].as_str().unwrap().contains("name=\"n119\""),
        "{body}"
    );

    let (_, body) = f.json("/logs?lines=2").await;
    let lines = body["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert!(lines[1].as_str().unwrap().contains("name=\"n119\""));
    let (_, body) = f.json("/logs?lines=10000").await;
    assert_eq!(body["lines"].as_array().unwrap().len(), 120);

    for bad in ["0", "-1", "x", "10001", "1.5"] {
        let (status, body) = f.json(&format!("/logs?lines={bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["field"], "lines");
    }
}

#[tokio::test]
async fn a_missing_log_directory_does_not_fail_the_greeting() {
    let f = Fixture::new();
    let app = router(
        HelloConfig {
            log_file: f.dir.join("no-such-dir/hello.log"),
        },
        Identity::current(),
    );
    let response = app
        .oneshot(Request::get("/hello/x").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
