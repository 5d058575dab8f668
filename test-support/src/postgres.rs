//! A fresh database per test, so tests never see each other's rows.

/// Creates a database with a unique name `<prefix>...` on the server of
/// `url`; returns its URL.
pub async fn create_database(url: &str, prefix: &str) -> String {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to PostgreSQL at {url}: {e}"));
    tokio::spawn(conn);
    let db = ha_core::conformance::unique_name(prefix);
    client
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap_or_else(|e| panic!("create database {db}: {e}"));
    let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
    format!("{base}/{db}")
}
