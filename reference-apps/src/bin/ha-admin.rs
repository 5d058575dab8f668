//! `ha-admin`: operator commands.
//!
//! `cargo run --bin ha-admin -- --help`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args as ClapArgs, Parser, Subcommand};
use ha_core::ingest::DeviceKeys;
use ha_core::store::Store;
use ha_core::store::postgres::{PostgresConfig, PostgresStore, Roles};
use reference_apps::admin::dlq::{self, DlqConfig};

/// Operator commands for an ha-pipeline deployment.
#[derive(Debug, Parser)]
#[command(name = "ha-admin", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the database schema migrations (safe to run from several places at once),
    /// then create and grant the least-privilege roles that are named.
    Migrate {
        #[command(flatten)]
        db: DbArgs,
        /// The analyzer's role: reads and writes readings, anomalies and leases.
        #[arg(long, env = "HA_WRITER_ROLE")]
        writer_role: Option<String>,
        /// The alerts API's role: reads only.
        #[arg(long, env = "HA_READER_ROLE")]
        reader_role: Option<String>,
        /// File holding the writer role's password, set on every run (omit
        /// where the database operator manages it, e.g. CloudNativePG).
        #[arg(long, env = "HA_WRITER_PASSWORD_FILE", requires = "writer_role")]
        writer_password_file: Option<PathBuf>,
        /// File holding the reader role's password, set on every run.
        #[arg(long, env = "HA_READER_PASSWORD_FILE", requires = "reader_role")]
        reader_password_file: Option<PathBuf>,
    },
    /// Print a device's token: hex(HMAC-SHA256(key, device_id)).
    Token {
        /// The device id.
        device_id: String,
        /// The device key file (the first key signs).
        #[arg(long, env = "HA_DEVICE_KEY_FILE")]
        device_key_file: PathBuf,
    },
    /// Print a device's missing seq ranges and when it was last seen.
    Gaps {
        /// The device id.
        device_id: String,
        #[command(flatten)]
        db: DbArgs,
        /// Most ranges to print.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Print the analyzers' partition ownership epochs and check them: exit
    /// 2 when two owners committed for one partition at once (an epoch
    /// committed after it was superseded, epochs claimed out of order, or
    /// interleaved commit windows).
    Ownership {
        #[command(flatten)]
        db: DbArgs,
        /// The analyzers' membership group.
        #[arg(long, default_value = "analyzers")]
        group: String,
    },
    /// Inspect or re-publish dead-lettered messages.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Debug, ClapArgs)]
struct DbArgs {
    /// PostgreSQL or CockroachDB URL.
    #[arg(long, env = "HA_POSTGRES_URL")]
    postgres_url: String,
    /// PEM CA of the database's certificate (`sslmode=verify-full` in the URL).
    #[arg(long, env = "HA_POSTGRES_CA_FILE")]
    postgres_ca_file: Option<PathBuf>,
    /// PEM client certificate, where the database authenticates by
    /// certificate (CockroachDB's `root`).
    #[arg(
        long,
        env = "HA_POSTGRES_CLIENT_CERT_FILE",
        requires = "postgres_client_key_file"
    )]
    postgres_client_cert_file: Option<PathBuf>,
    /// PEM private key of `--postgres-client-cert-file`.
    #[arg(
        long,
        env = "HA_POSTGRES_CLIENT_KEY_FILE",
        requires = "postgres_client_cert_file"
    )]
    postgres_client_key_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Print one line per dead-lettered message (original queue, reason and
    /// count from x-death, readings, first device/seq, bytes); removes nothing.
    List {
        #[command(flatten)]
        dlq: DlqArgs,
    },
    /// Re-publish each valid message to its device's partition (confirmed),
    /// then remove it from the DLQ; malformed ones stay and are reported.
    Replay {
        #[command(flatten)]
        dlq: DlqArgs,
        /// Print what would be replayed; change nothing.
        #[arg(long, env = "HA_DRY_RUN")]
        dry_run: bool,
    },
}

#[derive(Debug, ClapArgs)]
struct DlqArgs {
    /// RabbitMQ URL; repeat (or comma-separate in the variable) for the
    /// nodes of a cluster, tried in order.
    #[arg(
        long = "amqp-url",
        env = "HA_AMQP_URL",
        value_delimiter = ',',
        required = true
    )]
    amqp_urls: Vec<String>,
    /// PEM CA of the brokers' certificates, for `amqps://` URLs.
    #[arg(long, env = "HA_AMQP_CA_FILE")]
    amqp_ca_file: Option<PathBuf>,
    /// The dead-letter queue (bound to the `ha.dlx` exchange).
    #[arg(long, env = "HA_DLQ", default_value = "ha.dead")]
    dlq: String,
    /// Number of partition queues; the same as on ingest and the analyzers.
    #[arg(long, env = "HA_PARTITIONS", default_value_t = 8)]
    partitions: u32,
    /// Partition `p` is the queue `<prefix>.<p>`.
    #[arg(long, env = "HA_QUEUE_PREFIX", default_value = "ha.readings")]
    queue_prefix: String,
    /// Look at no more than this many messages (default: all that are in
    /// the DLQ when the command starts).
    #[arg(long, env = "HA_LIMIT")]
    limit: Option<u64>,
}

impl DlqArgs {
    fn config(self) -> DlqConfig {
        DlqConfig {
            urls: self.amqp_urls,
            ca_file: self.amqp_ca_file,
            dlq: self.dlq,
            partitions: self.partitions,
            queue_prefix: self.queue_prefix,
            limit: self.limit,
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(reference_apps::service::parse_args()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("ha-admin: {message}");
            ExitCode::from(code)
        }
    }
}

fn store(db: DbArgs) -> Result<PostgresStore, (u8, String)> {
    PostgresStore::new(PostgresConfig {
        url: db.postgres_url,
        ca_file: db.postgres_ca_file,
        client_cert_file: db.postgres_client_cert_file,
        client_key_file: db.postgres_client_key_file,
        pool_size: 1,
        ..PostgresConfig::default()
    })
    .map_err(|e| (64, e.to_string()))
}

async fn run(args: Args) -> Result<(), (u8, String)> {
    match args.command {
        Command::Migrate {
            db,
            writer_role,
            reader_role,
            writer_password_file,
            reader_password_file,
        } => {
            let password = |f: Option<PathBuf>| {
                f.map(|f| reference_apps::service::read_secret(&f))
                    .transpose()
                    .map_err(|e| (64, e.to_string()))
            };
            let (writer_password, reader_password) = (
                password(writer_password_file)?,
                password(reader_password_file)?,
            );
            let store = store(db)?;
            let applied = store.migrate().await.map_err(|e| (1, e.to_string()))?;
            if applied.is_empty() {
                println!("schema is up to date");
            } else {
                println!("applied migrations {applied:?}");
            }
            if writer_role.is_some() || reader_role.is_some() {
                let roles = Roles {
                    writer: writer_role,
                    reader: reader_role,
                    writer_password,
                    reader_password,
                };
                store.grant_roles(&roles).await.map_err(|e| {
                    let code = if e.is_invalid_query() { 64 } else { 1 };
                    (code, e.to_string())
                })?;
                println!(
                    "granted roles: writer {:?}, reader {:?}",
                    roles.writer, roles.reader
                );
            }
        }
        Command::Token {
            device_id,
            device_key_file,
        } => {
            if !ha_core::wire::is_valid_device_id(&device_id) {
                return Err((
                    64,
                    format!(
                        "`{device_id}` is not a valid device id ([A-Za-z0-9._:-], 1-64 characters)"
                    ),
                ));
            }
            let keys =
                DeviceKeys::from_files(&[device_key_file]).map_err(|e| (64, e.to_string()))?;
            println!("{}", keys.token(&device_id));
        }
        Command::Gaps {
            device_id,
            db,
            limit,
        } => {
            let store = store(db)?;
            match store
                .device_status(&device_id)
                .await
                .map_err(|e| (1, e.to_string()))?
            {
                None => println!("{device_id}: no readings"),
                Some(s) => {
                    println!(
                        "{device_id}: last seen {}, last seq {}",
                        s.last_seen, s.last_seq
                    );
                    let gaps = store
                        .seq_gaps(&device_id, 0, s.last_seq, limit)
                        .await
                        .map_err(|e| (1, e.to_string()))?;
                    if gaps.is_empty() {
                        println!("no gaps");
                    }
                    for g in gaps {
                        println!(
                            "missing {}..={} ({} readings)",
                            g.from,
                            g.to,
                            g.to - g.from + 1
                        );
                    }
                }
            }
        }
        Command::Ownership { db, group } => {
            let store = store(db)?;
            let epochs = store
                .partition_epochs(&group)
                .await
                .map_err(|e| (1, e.to_string()))?;
            let at = |t: Option<ha_core::wire::Timestamp>| t.map_or("-".into(), |t| t.to_string());
            println!(
                "partition epoch owner claimed_at superseded_at first_commit_at last_commit_at batches"
            );
            for r in &epochs {
                println!(
                    "{} {} {} {} {} {} {} {}",
                    r.partition,
                    r.epoch,
                    r.owner,
                    r.claimed_at,
                    at(r.superseded_at),
                    at(r.first_commit_at),
                    at(r.last_commit_at),
                    r.batches
                );
            }
            let overlaps = ha_core::store::find_overlaps(&epochs);
            for o in &overlaps {
                println!("overlap: {o:?}");
            }
            if !overlaps.is_empty() {
                return Err((2, format!("{} ownership overlaps", overlaps.len())));
            }
            println!("{} epochs, no overlap", epochs.len());
        }
        Command::Dlq { command } => {
            let mut out = std::io::stdout().lock();
            let result = match command {
                DlqCommand::List { dlq } => dlq::list(&dlq.config(), &mut out).await,
                DlqCommand::Replay { dlq, dry_run } => {
                    dlq::replay(&dlq.config(), dry_run, &mut out).await
                }
            };
            result.map_err(|e| (e.exit_code(), e.to_string()))?;
        }
    }
    Ok(())
}
