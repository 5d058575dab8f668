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
