//! Least-privilege roles: a writer for the analyzer, a read-only reader for
//! the alerts API. Created (without a password: the operator or the
//! database's certificate authentication supplies the credentials) and
//! granted on the store's tables by an owner, after migrating.

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::classify::classify;
use super::config::valid_identifier;
use crate::store::StoreError;

/// The tables each role may touch. `schema_migrations` is read by
/// [`check_schema`](super::PostgresStore::check_schema).
const WRITER_GRANTS: &[&str] = &[
    "SELECT, INSERT, DELETE ON TABLE readings",
    "SELECT, INSERT ON TABLE anomalies",
    "SELECT, INSERT, UPDATE, DELETE ON TABLE group_members",
    "SELECT, INSERT, UPDATE ON TABLE partition_owners, partition_epochs",
    "SELECT ON TABLE schema_migrations",
];
const READER_GRANTS: &[&str] = &["SELECT ON TABLE readings, anomalies, schema_migrations"];

/// The writer and read-only role names to grant; lowercase identifiers.
#[derive(Clone, Default)]
pub struct Roles {
    /// The analyzer's role: writes readings and anomalies, leases, retention.
    pub writer: Option<String>,
    /// The alerts API's role: reads only.
    pub reader: Option<String>,
    /// Set as the writer's password (each run) when given; leave `None`
    /// where something else manages it (CloudNativePG's managed roles).
    pub writer_password: Option<String>,
    /// Set as the reader's password (each run) when given.
    pub reader_password: Option<String>,
}

impl std::fmt::Debug for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Roles")
            .field("writer", &self.writer)
            .field("reader", &self.reader)
            .field(
                "writer_password",
                &self.writer_password.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "reader_password",
                &self.reader_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Creates the roles if missing and grants them on the migrated tables of
/// `schema` (or the current one).
pub(super) async fn grant(
    client: &Client,
    schema: Option<&str>,
    roles: &Roles,
) -> Result<(), StoreError> {
    let each = [
        (&roles.writer, &roles.writer_password, WRITER_GRANTS),
        (&roles.reader, &roles.reader_password, READER_GRANTS),
    ];
    for (role, password, grants) in each {
        let Some(role) = role else { continue };
        if !valid_identifier(role) {
            return Err(StoreError::InvalidQuery(format!(
                "role `{role}` must be 1-63 characters of [a-z0-9_], not starting with a digit"
            )));
        }
        create_role(client, role).await?;
        let mut sql = String::new();
        if let Some(password) = password {
            // Utility statements take no parameters: a quoted literal.
            let quoted = password.replace('\'', "''");
            sql.push_str(&format!(
                "ALTER ROLE \"{role}\" WITH LOGIN PASSWORD '{quoted}';\n"
            ));
        }
        if let Some(schema) = schema {
            sql.push_str(&format!(
                "GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\";\n"
            ));
        }
        for g in grants {
            sql.push_str(&format!("GRANT {g} TO \"{role}\";\n"));
        }
        client.batch_execute(&sql).await.map_err(classify)?;
    }
    Ok(())
}

/// `CREATE ROLE ... LOGIN` unless it exists; PostgreSQL has no
/// `IF NOT EXISTS` for roles, so a concurrent creator's win is accepted.
async fn create_role(client: &Client, role: &str) -> Result<(), StoreError> {
    let exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .map_err(classify)?
        .is_some();
    if exists {
        return Ok(());
    }
    match client
        .batch_execute(&format!("CREATE ROLE \"{role}\" LOGIN"))
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_OBJECT) => Ok(()),
        Err(e) => Err(classify(e)),
    }
}
