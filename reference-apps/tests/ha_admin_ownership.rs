//! `ha-admin ownership` against a real PostgreSQL (from `scripts/test`):
//! a clean ownership record passes; a commit recorded after its epoch was
//! superseded (what a zombie owner without fencing would leave) exits 2.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use ha_core::conformance::{reading, server_url};
use ha_core::store::Store;
use ha_core::store::postgres::{PostgresConfig, PostgresStore};
use ha_test_support::{create_database, run_to_end};

fn ownership(db: &str) -> (Option<i32>, String, String) {
    run_to_end(
        env!("CARGO_BIN_EXE_ha-admin"),
        &["ownership", "--postgres-url", db],
        &[],
    )
}

#[tokio::test]
async fn ownership_passes_a_fenced_history_and_fails_an_overlap() {
    let Some(url) = server_url("HA_TEST_POSTGRES_URL") else {
        return;
    };
    let db = create_database(&url, "own").await;
    let store = PostgresStore::new(PostgresConfig {
        url: db.clone(),
        ..PostgresConfig::default()
    })
    .expect("store");
    store.migrate().await.expect("migrate");
    let a = store
        .claim_partition("analyzers", 0, "a")
        .await
        .expect("claim");
    let batch = [reading("own-1", 1, 10, &[("v", 1.0)])];
    store.write_fenced(&a, &batch, &[]).await.expect("write");
    let b = store
        .claim_partition("analyzers", 0, "b")
        .await
        .expect("claim");
    let later = [reading("own-1", 2, 11, &[("v", 1.0)])];
    store.write_fenced(&b, &later, &[]).await.expect("write");
    assert!(
        store
            .write_fenced(&a, &later, &[])
            .await
            .unwrap_err()
            .is_fenced()
    );

    let (code, out, err) = ownership(&db);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("2 epochs, no overlap"), "{out}");
    assert!(out.contains("\n0 1 a "), "{out}");

    // Forge what an unfenced zombie would leave: a commit of epoch 1 after
    // epoch 2 took over.
    let (client, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
        .execute(
            "UPDATE partition_epochs SET last_commit_at = now() + INTERVAL '1 second' WHERE epoch = 1",
            &[],
        )
        .await
        .expect("forge");
    let (code, out, err) = ownership(&db);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(out.contains("CommitAfterSuperseded"), "{out}");
    assert!(out.contains("WindowsInterleave"), "{out}");
    assert!(err.contains("ownership overlaps"), "{err}");
}
