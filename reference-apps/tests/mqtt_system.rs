//! MQTT with an independent client: `mosquitto_pub` (Debian
//! `mosquitto-clients`, installed by scripts/servers.sh) over TLS with the
//! test CA and a device token, against the real `ingest-api` on real
//! RabbitMQ, with the analyzer storing into real PostgreSQL.
//!
//! - QoS 1 publishes are acknowledged and stored once; a device that
//!   reconnects to the *other* replica and resends what it may not have
//!   seen acknowledged (the session guarantee of docs/mqtt.md) ends with
//!   every reading stored once, none doubled.
//! - The bad-input table through the same client (and raw TLS garbage):
//!   each refused as documented, counted, and ingest stays ready.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ha_core::conformance::{server_url, unique_name};
use ha_core::ingest::token_for;
use ha_core::wire::Timestamp;
use ha_test_support::mosquitto;
use ha_test_support::{Proc, create_database, wait_until, wait_until_async};
use reference_apps::demo_tls::DemoTls;

const KEY: &str = "mqtt-system-key-0123456789abcdef0123456789";

struct Setup {
    dir: PathBuf,
    ca: PathBuf,
    amqp: String,
    prefix: String,
    cert: PathBuf,
    key: PathBuf,
    device_key: PathBuf,
    tls: Arc<rustls::ClientConfig>,
}

fn setup(amqp: String, name: &str) -> Setup {
    let dir = std::env::temp_dir().join(unique_name(name));
    std::fs::create_dir_all(&dir).unwrap();
    eprintln!("logs in {}", dir.display());
    let tls = DemoTls::generate().unwrap();
    let write = |name: &str, content: &str| {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p
    };
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(tls.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Setup {
        ca: write("ca.pem", &tls.ca_pem),
        cert: write("cert.pem", &tls.cert_pem),
        key: write("key.pem", &tls.key_pem),
        device_key: write("device.key", KEY),
        prefix: format!("{}.readings", unique_name("mqtt")),
        amqp,
        tls: Arc::new(client),
        dir,
    }
}

/// An ingest-api replica with TLS on HTTP and MQTT; returns it and its
/// MQTT address (from its log).
fn ingest(s: &Setup, name: &str) -> (Proc, SocketAddr) {
    let p = |p: &Path| p.to_str().unwrap().to_owned();
    let args = [
        "--listen".to_owned(),
        "127.0.0.1:0".into(),
        "--mqtt-listen".into(),
        "127.0.0.1:0".into(),
        "--amqp-url".into(),
        s.amqp.clone(),
        "--partitions".into(),
        "4".into(),
        "--queue-prefix".into(),
        s.prefix.clone(),
        "--device-key-file".into(),
        p(&s.device_key),
        "--tls-cert".into(),
        p(&s.cert),
        "--tls-key".into(),
        p(&s.key),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proc = Proc::start_logged(&s.dir, name, env!("CARGO_BIN_EXE_ingest-api"), &args);
    let log = proc.log.clone().unwrap();
    let mut mqtt = None;
    wait_until(
        "the MQTT address in the log",
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            mqtt = text
                .split("MQTT listening on ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|a| a.parse().ok());
            mqtt.is_some()
        },
    );
    (proc, mqtt.unwrap())
}

/// `GET path` over TLS; status and body.
fn get(s: &Setup, addr: SocketAddr, path: &str) -> (u16, String) {
    let mut tls = tls_to(s, addr);
    let req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (status, body.unwrap_or_default())
}

fn tls_to(s: &Setup, addr: SocketAddr) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(s.tls.clone(), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

fn metric(s: &Setup, addr: SocketAddr, name: &str, label: &str) -> f64 {
    let (_, text) = get(s, addr, "/metrics");
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn reading(device: &str, seq: u64) -> String {
    format!(
        r#"{{"readings":[{{"device_id":"{device}","seq":{seq},"ts":"{}","metrics":{{"temp":{seq}.5}}}}]}}"#,
        Timestamp::now()
    )
}

/// `mosquitto_pub` over TLS as `device` (its token unless `password`),
/// each of `lines` a message (`-l`); returns success and its output.
fn mosquitto_pub(
    s: &Setup,
    port: u16,
    device: &str,
    version: &str,
    extra: &[&str],
    lines: &[String],
) -> (bool, String) {
    let token = token_for(KEY.as_bytes(), device);
    let mut args = vec![
        "-h",
        "localhost",
        "-p",
        &port.to_string(),
        "--cafile",
        s.ca.to_str().unwrap(),
        "-u",
        device,
        "-P",
        &token,
        "-V",
        version,
        "-q",
        "1",
        "-d",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    if !extra.contains(&"-t") {
        args.extend(["-t".to_owned(), format!("readings/{device}")]);
    }
    if !extra.contains(&"-m") && !extra.contains(&"-f") {
        args.push("-l".into());
    }
    // mosquitto_pub reconnects and resends after the server closed the
    // connection (a 3.1.1 refusal), for ever: it is stopped after 5 s.
    mosquitto::run_pub(&args, lines, Duration::from_secs(5))
}

async fn stored(url: &str, device: &str) -> (i64, i64) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT seq) FROM readings WHERE device_id = $1",
            &[&device],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_readings_are_acknowledged_and_stored_once_across_replicas() {
    let (Some(amqp), Some(pg)) = (
        server_url("HA_TEST_AMQP_URL"),
        server_url("HA_TEST_POSTGRES_URL"),
    ) else {
        return;
    };
    if !mosquitto::installed(&["mosquitto_pub"]) {
        return;
    }
    let s = setup(amqp, "ha-mqtt-sys-");
    let db = create_database(&pg, "mqtt").await;
    let migrate = Command::new(env!("CARGO_BIN_EXE_ha-admin"))
        .args(["migrate", "--postgres-url", &db])
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let (a, a_mqtt) = ingest(&s, "ingest-a");
    let (b, b_mqtt) = ingest(&s, "ingest-b");
    let _analyzer = Proc::start_logged(
        &s.dir,
        "analyzer",
        env!("CARGO_BIN_EXE_analyzer"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--amqp-url",
            &s.amqp,
            "--postgres-url",
            &db,
            "--partitions",
            "4",
            "--queue-prefix",
            &s.prefix,
            "--member-id",
            "an",
        ],
    );
    let dev = "mq-dev-1";
    // 20 readings over MQTT 5 to replica A: all acknowledged.
    let first: Vec<String> = (0..20).map(|seq| reading(dev, seq)).collect();
    let (ok, out) = mosquitto_pub(&s, a_mqtt.port(), dev, "mqttv5", &["-i", "fw-1"], &first);
    assert!(ok, "{out}");
    assert_eq!(out.matches("received PUBACK").count(), 20, "{out}");
    // The device reconnects to replica B (3.1.1 this time) and resends the
    // last 5 it may not have seen acknowledged, then 10 new ones.
    let resent: Vec<String> = (15..30).map(|seq| reading(dev, seq)).collect();
    let (ok, out) = mosquitto_pub(&s, b_mqtt.port(), dev, "mqttv311", &["-i", "fw-1"], &resent);
    assert!(ok, "{out}");
    assert_eq!(out.matches("received PUBACK").count(), 15, "{out}");
    // And once more the very first reading, to replica A.
    let (ok, out) = mosquitto_pub(&s, a_mqtt.port(), dev, "mqttv5", &[], &first[..1]);
    assert!(ok, "{out}");
    wait_until_async(
        "30 distinct readings stored",
        Duration::from_secs(60),
        || async { stored(&db, dev).await.1 >= 30 },
    )
    .await;
    // Nothing lost, nothing doubled: 36 acknowledged publishes, 30 rows.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stored(&db, dev).await, (30, 30));
    let acked = |p: &Proc, m| metric(&s, p.addr, "ha_ingest_mqtt_publishes_total", m);
    assert_eq!(acked(&a, r#"outcome="acked""#), 21.0);
    assert_eq!(acked(&b, r#"outcome="acked""#), 15.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_bad_input_table_is_refused_counted_and_ingest_stays_ready() {
    let Some(amqp) = server_url("HA_TEST_AMQP_URL") else {
        return;
    };
    if !mosquitto::installed(&["mosquitto_pub"]) {
        return;
    }
    let s = setup(amqp, "ha-mqtt-bad-");
    let (ingest, mqtt) = ingest(&s, "ingest");
    wait_until("ingest ready", Duration::from_secs(30), || {
        get(&s, ingest.addr, "/readyz").0 == 200
    });
    let port = mqtt.port();
    let dev = "mq-dev-2";
    let one = [reading(dev, 1)];

    // Wrong password: CONNACK 0x86 (5.0) / 4 (3.1.1).
    for version in ["mqttv5", "mqttv311"] {
        let (ok, out) = mosquitto_pub(&s, port, dev, version, &["-P", "00"], &one);
        assert!(!ok, "{version}: {out}");
        assert!(
            out.to_lowercase().contains("bad user name or password"),
            "{version}: {out}"
        );
    }
    // Another device's topic: PUBACK 0x87 (5.0); 3.1.1: closed, no PUBACK.
    let (_, out) = mosquitto_pub(&s, port, dev, "mqttv5", &["-t", "readings/mq-dev-3"], &one);
    assert!(
        out.contains("received PUBACK") && out.contains("135"),
        "{out}"
    );
    let (ok, out) = mosquitto_pub(
        &s,
        port,
        dev,
        "mqttv311",
        &["-t", "readings/mq-dev-3"],
        &one,
    );
    assert!(!ok && !out.contains("received PUBACK"), "{out}");
    // Malformed JSON: PUBACK 0x99.
    let (_, out) = mosquitto_pub(&s, port, dev, "mqttv5", &["-m", "{not json"], &[]);
    assert!(
        out.contains("received PUBACK") && out.contains("153"),
        "{out}"
    );
    // QoS 2: refused (a 5.0 client learns maximum QoS 1 from the CONNACK;
    // a 3.1.1 one is disconnected).
    let (ok, out) = mosquitto_pub(&s, port, dev, "mqttv311", &["-q", "2"], &one);
    assert!(!ok && !out.contains("received PUBREC"), "{out}");
    // Oversized: 2 MiB payload; closed from its fixed header.
    let big = s.dir.join("big.json");
    std::fs::write(&big, vec![b' '; 2 << 20]).unwrap();
    let (ok, out) = mosquitto_pub(
        &s,
        port,
        dev,
        "mqttv311",
        &["-f", big.to_str().unwrap()],
        &[],
    );
    assert!(!ok && !out.contains("received PUBACK"), "{out}");
    // Garbage over TLS: closed without an answer.
    let mut tls = tls_to(&s, mqtt);
    tls.write_all(b"\x00\x02\xde\xadGET / HTTP/1.1\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    assert!(answer.is_empty(), "{answer:?}");

    // Healthy, nothing accepted, every refusal counted.
    assert_eq!(get(&s, ingest.addr, "/healthz").0, 200);
    // Ready as before (a fresh broker check may take a moment).
    wait_until("ingest still ready", Duration::from_secs(10), || {
        get(&s, ingest.addr, "/readyz").0 == 200
    });
    let m = |name, label| metric(&s, ingest.addr, name, label);
    assert_eq!(m("ha_ingest_readings_accepted_total", ""), 0.0);
    let counted = [
        (
            "ha_ingest_mqtt_connects_total",
            r#"result="bad_credentials""#,
            2.0,
        ),
        (
            "ha_ingest_mqtt_publishes_total",
            r#"outcome="not_authorized""#,
            2.0,
        ),
        (
            "ha_ingest_mqtt_publishes_total",
            r#"outcome="payload_format_invalid""#,
            1.0,
        ),
        (
            "ha_ingest_mqtt_publishes_total",
            r#"outcome="qos_not_supported""#,
            1.0,
        ),
        (
            "ha_ingest_mqtt_connections_closed_total",
            r#"reason="packet_too_large""#,
            1.0,
        ),
        (
            "ha_ingest_mqtt_connects_total",
            r#"result="malformed""#,
            1.0,
        ),
    ];
    // At least: a 3.1.1 mosquitto_pub resends after each close until stopped.
    for (name, label, want) in counted {
        let got = m(name, label);
        assert!(got >= want, "{name}{{{label}}}: {got} < {want}");
    }
}
