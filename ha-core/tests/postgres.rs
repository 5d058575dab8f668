//! The store conformance suite against a real PostgreSQL, plus migrations
//! run by several replicas at once.
#![cfg(feature = "postgres")]

use std::sync::Arc;

use ha_core::conformance::{server_url, unique_name};
use ha_core::store::postgres::{
    LATEST_VERSION, PostgresConfig, PostgresConfigError, PostgresStore,
};
use ha_core::store::{Store, StoreError};

fn config(url: String, schema: String) -> PostgresConfig {
    PostgresConfig {
        url,
        schema: Some(schema),
        pool_size: 3,
        ..PostgresConfig::default()
    }
}

/// A migrated store in a schema of its own, so tests never see each other.
async fn fixture() -> Option<Arc<dyn Store>> {
    let url = server_url("HA_TEST_POSTGRES_URL")?;
    let store = PostgresStore::new(config(url, unique_name("t"))).expect("valid config");
    store.migrate().await.expect("migrate");
    Some(Arc::new(store))
}

ha_core::store_conformance!(fixture);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_apply_each_version_once() {
    let Some(url) = server_url("HA_TEST_POSTGRES_URL") else {
        return;
    };
    let schema = unique_name("m");
    let unmigrated = PostgresStore::new(config(url.clone(), schema.clone())).unwrap();
    assert!(matches!(
        unmigrated.check_schema().await,
        Err(StoreError::Schema(_))
    ));
    let replicas: Vec<_> = (0..6)
        .map(|_| {
            let store = PostgresStore::new(config(url.clone(), schema.clone())).unwrap();
            tokio::spawn(async move { store.migrate().await })
        })
        .collect();
    let mut applied = Vec::new();
    for r in replicas {
        applied.extend(r.await.unwrap().expect("every replica's migrate succeeds"));
    }
    applied.sort_unstable();
    let expected: Vec<i64> = (1..=LATEST_VERSION).collect();
    assert_eq!(
        applied, expected,
        "each version applied by exactly one replica"
    );
    unmigrated.check_schema().await.expect("schema is current");
    // Running again applies nothing.
    assert!(unmigrated.migrate().await.unwrap().is_empty());
}

#[tokio::test]
async fn unreachable_database_is_a_transient_error() {
    // A port nothing listens on (reserved, never bound by the test script).
    let store = PostgresStore::new(PostgresConfig {
        url: "postgres://postgres@127.0.0.1:1/postgres".into(),
        attempts: 2,
        ..PostgresConfig::default()
    })
    .unwrap();
    let err = store.device_status("d").await.unwrap_err();
    assert!(err.is_transient(), "{err}");
}

#[test]
fn bad_schema_names_are_refused() {
    for bad in ["", "Upper", "1abc", "semi;colon", "quo\"te"] {
        let cfg = PostgresConfig {
            schema: Some(bad.into()),
            ..PostgresConfig::default()
        };
        assert!(
            matches!(
                PostgresStore::new(cfg),
                Err(StoreError::Config(PostgresConfigError::Schema(_)))
            ),
            "{bad}"
        );
    }
}

/// The TLS URL (`sslmode=verify-full`) and the CA that signed the server.
fn tls_target() -> Option<(String, std::path::PathBuf)> {
    let url = server_url("HA_TEST_POSTGRES_TLS_URL")?;
    let ca = server_url("HA_TEST_TLS_CA")?;
    Some((url, ca.into()))
}

/// As [`fixture`], connected with TLS verifying the server's certificate.
async fn tls_fixture() -> Option<Arc<dyn Store>> {
    let (url, ca) = tls_target()?;
    let store = PostgresStore::new(PostgresConfig {
        ca_file: Some(ca),
        ..config(url, unique_name("s"))
    })
    .expect("valid config");
    store.migrate().await.expect("migrate over TLS");
    Some(Arc::new(store))
}

/// The whole store conformance suite again, over `sslmode=verify-full`.
mod over_tls {
    ha_core::store_conformance!(super::tls_fixture);
}

#[tokio::test]
async fn tls_connections_are_encrypted() {
    let (Some((tls_url, ca)), Some(plain)) = (tls_target(), server_url("HA_TEST_POSTGRES_URL"))
    else {
        return;
    };
    let app = unique_name("tlsprobe");
    let store = PostgresStore::new(PostgresConfig {
        ca_file: Some(ca),
        pool_size: 1,
        ..config(
            format!("{tls_url}&application_name={app}"),
            unique_name("e"),
        )
    })
    .unwrap();
    store.migrate().await.unwrap();
    store.device_status("d").await.unwrap();
    let (client, conn) = tokio_postgres::connect(&plain, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_ssl s \
             JOIN pg_stat_activity a ON a.pid = s.pid WHERE a.application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    let (all, encrypted): (i64, i64) = (row.get(0), row.get(1));
    assert!(all >= 1, "the store's connection is listed");
    assert_eq!(encrypted, all, "every connection of the store uses TLS");
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    let (Some((url, _)), Some(wrong)) = (tls_target(), server_url("HA_TEST_TLS_WRONG_CA")) else {
        return;
    };
    for mode in ["verify-full", "verify-ca", "require"] {
        let store = PostgresStore::new(PostgresConfig {
            ca_file: Some(wrong.clone().into()),
            attempts: 3,
            ..config(url.replace("verify-full", mode), unique_name("w"))
        })
        .unwrap();
        let err = store.device_status("d").await.unwrap_err();
        assert!(err.is_denied(), "{mode}: {err}");
        assert!(
            !err.is_transient(),
            "{mode}: a wrong CA is not retried: {err}"
        );
    }
}

#[test]
fn verify_modes_need_a_ca_file() {
    let err = PostgresStore::new(PostgresConfig {
        url: "postgres://u@127.0.0.1:1/db?sslmode=verify-full".into(),
        ..PostgresConfig::default()
    })
    .err()
    .unwrap();
    assert!(matches!(
        err,
        StoreError::Config(PostgresConfigError::CaFileNeeded(_))
    ));
    let err = PostgresStore::new(PostgresConfig {
        url: "postgres://u@127.0.0.1:1/db?sslmode=verify-full".into(),
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..PostgresConfig::default()
    })
    .err()
    .unwrap();
    assert!(matches!(
        err,
        StoreError::Config(PostgresConfigError::CaFile { .. })
    ));
    assert!(std::error::Error::source(&err).is_some());
}

/// The same server as `url` with another user (the test server trusts
/// local connections, so privileges alone decide).
#[cfg(feature = "server")]
fn as_user(url: &str, user: &str) -> String {
    url.replacen("postgres@", &format!("{user}@"), 1)
}

#[cfg(feature = "server")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_api_works_with_the_read_only_role_which_cannot_write() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use ha_core::alerts::{AlertsConfig, AlertsService};
    use ha_core::conformance::reading;
    use ha_core::store::Anomaly;
    use ha_core::store::postgres::Roles;
    use tower::ServiceExt;

    let Some(url) = server_url("HA_TEST_POSTGRES_URL") else {
        return;
    };
    let schema = unique_name("r");
    let owner = PostgresStore::new(config(url.clone(), schema.clone())).unwrap();
    owner.migrate().await.unwrap();
    let roles = Roles {
        writer: Some(format!("{schema}_w")),
        reader: Some(format!("{schema}_ro")),
        // Set, though the test server trusts local connections: the
        // statement that sets it must work.
        writer_password: Some("it's-a-test".into()),
        reader_password: None,
    };
    owner.grant_roles(&roles).await.unwrap();
    // Granting again changes nothing and does not fail.
    owner.grant_roles(&roles).await.unwrap();
    let login = |role: &Option<String>| {
        PostgresStore::new(config(
            as_user(&url, role.as_deref().unwrap()),
            schema.clone(),
        ))
        .unwrap()
    };
    let (writer, reader) = (login(&roles.writer), login(&roles.reader));

    // The analyzer's role writes, renews leases and deletes old readings.
    let r = reading("dev-1", 1, 1_795_694_400, &[("pulse", 180.0)]);
    let a = Anomaly {
        device_id: "dev-1".into(),
        seq: 1,
        metric: "pulse".into(),
        ts: r.ts,
        value: 180.0,
        score: 9.0,
        anomaly_score: 0.99,
        detector: "zscore".into(),
    };
    let out = writer.write(std::slice::from_ref(&r), &[a]).await.unwrap();
    assert_eq!((out.inserted, out.anomalies_inserted), (1, 1));
    writer
        .heartbeat("g", "m", std::time::Duration::from_secs(5))
        .await
        .unwrap();
    writer
        .delete_readings_before(ha_core::wire::Timestamp::from_unix_micros(0), 10)
        .await
        .unwrap();

    // The alerts API serves from the read-only role.
    reader.check_schema().await.unwrap();
    let token = "read-only-test-token";
    let app = AlertsService::new(
        Arc::new(login(&roles.reader)),
        AlertsConfig {
            api_token: Some(token.into()),
            ..AlertsConfig::default()
        },
    )
    .router();
    for uri in ["/v1/anomalies", "/v1/devices/dev-1/health", "/readyz"] {
        let resp = app
            .clone()
            .oneshot(
                Request::get(uri)
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{uri}");
    }
    let page = reader.anomalies(&Default::default()).await.unwrap();
    assert_eq!(page.items.len(), 1);

    // Every kind of write fails with the read-only role, and changes nothing.
    let mut r2 = r.clone();
    r2.seq = 2;
    let err = reader.write(&[r2], &[]).await.unwrap_err();
    assert!(err.is_denied() && !err.is_transient(), "{err}");
    let err = reader
        .heartbeat("g", "ro", std::time::Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(err.is_denied(), "{err}");
    let err = reader
        .delete_readings_before(ha_core::wire::Timestamp::from_unix_micros(i64::MAX / 2), 10)
        .await
        .unwrap_err();
    assert!(err.is_denied(), "{err}");
    assert_eq!(
        owner
            .device_status("dev-1")
            .await
            .unwrap()
            .unwrap()
            .last_seq,
        1
    );
}
