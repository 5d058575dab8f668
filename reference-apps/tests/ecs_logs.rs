//! `--log-format ecs`: the real ingest-api, analyzer and alerts-api
//! binaries (against RabbitMQ and PostgreSQL from `scripts/test`) write
//! only lines that are valid against the ECS 8.11 field definitions of the
//! fields they use (names and types, vendored in
//! `tests/data/ecs-fields.tsv` with their source), and the request id in
//! ingest's and alerts' `x-request-id` response header is the
//! `http.request.id` of that request's log line.
//!
//! `scripts/test -p reference-apps --test ecs_logs`

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ha_core::conformance::{server_url, unique_name};
use ha_core::wire::Timestamp;
use serde_json::{Map, Value};

const FIELDS: &str = include_str!("data/ecs-fields.tsv");
/// ECS sets `ignore_above: 1024` on keyword fields: longer values are not indexed.
const KEYWORD_MAX: usize = 1024;

/// ECS field name -> type, from the vendored table.
fn ecs_types() -> HashMap<&'static str, &'static str> {
    FIELDS
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_once('\t').expect("field<TAB>type"))
        .collect()
}

/// `s` is `YYYY-MM-DDTHH:MM:SS[.f+]Z` with fields in range (ECS `date`
/// as the services write it: UTC, ISO 8601).
fn is_utc_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return false;
    }
    if b[16] != b':' || b[b.len() - 1] != b'Z' {
        return false;
    }
    let frac_ok = b.len() == 20
        || (b[19] == b'.' && b.len() > 21 && b[20..b.len() - 1].iter().all(u8::is_ascii_digit));
    matches!(
        (
            digits(0..4),
            digits(5..7),
            digits(8..10),
            digits(11..13),
            digits(14..16),
            digits(17..19)
        ),
        (
            Some(_),
            Some(1..=12),
            Some(1..=31),
            Some(0..=23),
            Some(0..=59),
            Some(0..=60)
        )
    ) && frac_ok
}

/// Why `line` is not an ECS document of the fields we use, if it is not.
fn ecs_problems(line: &str, types: &HashMap<&str, &str>) -> Vec<String> {
    let doc: Map<String, Value> = match serde_json::from_str(line) {
        Ok(Value::Object(m)) => m,
        _ => return vec!["not a JSON object".into()],
    };
    let mut problems = Vec::new();
    for required in [
        "@timestamp",
        "log.level",
        "message",
        "ecs.version",
        "service.name",
        "service.version",
        "event.dataset",
    ] {
        if !doc.contains_key(required) {
            problems.push(format!("{required} missing"));
        }
    }
    for (key, value) in &doc {
        let ty = match key.strip_prefix("labels.") {
            Some(name) if !name.is_empty() && !name.contains('.') => "keyword",
            Some(_) => {
                problems.push(format!("{key}: labels must not nest"));
                continue;
            }
            None => match types.get(key.as_str()) {
                Some(t) => t,
                None => {
                    problems.push(format!("{key}: not an ECS field we know"));
                    continue;
                }
            },
        };
        let ok = match ty {
            "keyword" => value.as_str().is_some_and(|s| s.len() <= KEYWORD_MAX),
            "wildcard" | "match_only_text" => value.is_string(),
            "long" => value.is_i64() || value.is_u64(),
            "date" => value.as_str().is_some_and(is_utc_date),
            other => {
                problems.push(format!("{key}: type {other} cannot be written"));
                continue;
            }
        };
        if !ok {
            problems.push(format!("{key}: {value} is not a valid {ty}"));
        }
    }
    if doc.get("ecs.version").and_then(Value::as_str) != Some("8.11.0") {
        problems.push("ecs.version is not the vendored table's 8.11.0".into());
    }
    problems
}

#[test]
fn the_validator_rejects_what_ecs_does_not_allow() {
    let types = ecs_types();
    let good = r#"{"@timestamp":"2026-11-27T04:05:06.789Z","log.level":"info","message":"m","ecs.version":"8.11.0","service.name":"s","service.version":"1","event.dataset":"s.log","process.pid":3,"labels.x":"y"}"#;
    assert_eq!(ecs_problems(good, &types), Vec::<String>::new());
    for (bad, why) in [
        (
            good.replace("\"process.pid\":3", "\"process.pid\":\"3\""),
            "process.pid",
        ),
        (good.replace("2026-11-27T04", "2026-13-27T04"), "@timestamp"),
        (good.replace("04:05:06.789Z", "04:05:06.789"), "@timestamp"),
        (good.replace("\"labels.x\"", "\"labels.x.y\""), "labels.x.y"),
        (
            good.replace("\"labels.x\":\"y\"", "\"labels.x\":1"),
            "labels.x",
        ),
        (good.replace("\"message\":\"m\",", ""), "message missing"),
        (good.replace("\"log.level\"", "\"level\""), "level"),
        (good.replace("8.11.0", "1.0"), "ecs.version"),
        ("listening on 127.0.0.1:1".to_owned(), "JSON"),
    ] {
        let problems = ecs_problems(&bad, &types);
        assert!(
            problems.iter().any(|p| p.contains(why)),
            "{bad}: {problems:?}"
        );
    }
}

/// A running binary whose stderr lines are collected; killed when dropped.
struct Proc {
    name: &'static str,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn start(name: &'static str, bin: &str, args: &[&str]) -> Proc {
        let mut child = Command::new(bin)
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--log-format", "ecs"])
            .env("HA_LOG", "info,ha_core::http::request_id=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(line);
            }
        });
        Proc { name, child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// The first log document for which `pick` returns something.
    fn wait_for<T>(&self, what: &str, pick: impl Fn(&Map<String, Value>) -> Option<T>) -> T {
        let started = Instant::now();
        loop {
            for line in self.lines() {
                if let Ok(Value::Object(doc)) = serde_json::from_str(&line)
                    && let Some(found) = pick(&doc)
                {
                    return found;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{} never logged {what}; its lines:\n{}",
                self.name,
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The address from the `listening on` record (`labels.local`).
    fn addr(&self) -> SocketAddr {
        self.wait_for("its address", |d| {
            let msg = d.get("message")?.as_str()?;
            msg.contains("listening on")
                .then(|| d.get("labels.local")?.as_str()?.parse().ok())?
        })
    }

    /// The document with `http.request.id` `id`.
    fn request_line(&self, id: &str) -> Map<String, Value> {
        self.wait_for(&format!("http.request.id {id}"), |d| {
            (d.get("http.request.id")?.as_str()? == id).then(|| d.clone())
        })
    }
}

/// One HTTP/1.1 request (`line` is method and path, `id` an
/// `x-request-id` to send); returns status and the `x-request-id` header.
fn request(addr: SocketAddr, line: &str, id: Option<&str>, body: &str) -> (u16, Option<String>) {
    let id = id
        .map(|i| format!("X-Request-Id: {i}\r\n"))
        .unwrap_or_default();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "{line} HTTP/1.1\r\nHost: test\r\n{id}Connection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let (top, _) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = top
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let id = top.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("x-request-id")
            .then(|| v.trim().to_owned())
    });
    (status, id)
}

async fn create_database(url: &str) -> String {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(conn);
    let db = unique_name("ecs");
    client
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .expect("create database");
    let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
    format!("{base}/{db}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_writes_valid_ecs_lines_with_the_request_id_of_the_response() {
    let (Some(amqp), Some(pg)) = (
        server_url("HA_TEST_AMQP_URL"),
        server_url("HA_TEST_POSTGRES_URL"),
    ) else {
        return;
    };
    let db = create_database(&pg).await;
    let migrate = Command::new(env!("CARGO_BIN_EXE_ha-admin"))
        .args(["migrate", "--postgres-url", &db])
        .output()
        .expect("ha-admin migrate");
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let prefix = format!("{}.readings", unique_name("ecs"));
    let queue = [
        "--amqp-url",
        &amqp,
        "--partitions",
        "2",
        "--queue-prefix",
        &prefix,
    ];

    let ingest = Proc::start(
        "ingest-api",
        env!("CARGO_BIN_EXE_ingest-api"),
        &[&queue[..], &["--insecure-no-auth"]].concat(),
    );
    let analyzer = Proc::start(
        "analyzer",
        env!("CARGO_BIN_EXE_analyzer"),
        &[&queue[..], &["--postgres-url", &db, "--member-id", "ecs-a"]].concat(),
    );
    let alerts = Proc::start(
        "alerts-api",
        env!("CARGO_BIN_EXE_alerts-api"),
        &["--postgres-url", &db, "--insecure-no-auth"],
    );
    let (ingest_addr, analyzer_addr, alerts_addr) = (ingest.addr(), analyzer.addr(), alerts.addr());

    // A client's own id is kept and echoed; the request's line carries it.
    let body = format!(
        r#"{{"readings":[{{"device_id":"dev-1","seq":1,"ts":"{}","metrics":{{"hr":70}}}}]}}"#,
        Timestamp::now()
    );
    let mine = unique_name("ecs-req-");
    let (status, echoed) = request(ingest_addr, "POST /v1/readings", Some(&mine), &body);
    assert_eq!(status, 202);
    assert_eq!(echoed.as_deref(), Some(mine.as_str()));
    let line = ingest.request_line(&mine);
    assert_eq!(line["url.path"], "/v1/readings");
    assert_eq!(line["http.request.method"], "POST");
    assert_eq!(line["http.response.status_code"], 202);
    assert_eq!(line["log.level"], "debug");

    // Without one (or with a hostile one) the id is generated, and still
    // the same in header and log.
    for sent in [None, Some("x".repeat(65)), Some("a\"b".to_owned())] {
        let (status, echoed) = request(ingest_addr, "POST /v1/readings", sent.as_deref(), "{}");
        assert_eq!(status, 400, "{sent:?}");
        let id = echoed.expect("ingest echoes a request id");
        assert_eq!(id.len(), 32, "{id}");
        let line = ingest.request_line(&id);
        assert_eq!(line["http.response.status_code"], 400);
        // A refused request is logged at info, so it can be found by default.
        assert_eq!(line["log.level"], "info");
    }
    let (status, echoed) = request(alerts_addr, "GET /healthz", None, "");
    assert_eq!(status, 200);
    let id = echoed.expect("alerts echoes a request id");
    assert_eq!(alerts.request_line(&id)["url.path"], "/healthz");
    assert_eq!(request(analyzer_addr, "GET /healthz", None, "").0, 200);
    // The analyzer logs the partitions it takes.
    analyzer.wait_for("a second line", |_| {
        (analyzer.lines().len() >= 2).then_some(())
    });

    let types = ecs_types();
    for p in [&ingest, &analyzer, &alerts] {
        let lines = p.lines();
        assert!(lines.len() >= 2, "{}: {lines:?}", p.name);
        for line in &lines {
            let problems = ecs_problems(line, &types);
            assert!(problems.is_empty(), "{}: {line}\n{problems:?}", p.name);
            let doc: Value = serde_json::from_str(line).expect("checked");
            assert_eq!(doc["service.name"], p.name);
            assert_eq!(doc["event.dataset"], format!("{}.log", p.name));
            assert_eq!(doc["service.version"], env!("CARGO_PKG_VERSION"));
        }
        eprintln!("{}: {} ECS lines valid", p.name, lines.len());
    }
}
