//! `ha-admin`: operator commands.
//!
//! `cargo run --bin ha-admin -- --help`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ha_core::ingest::DeviceKeys;
use ha_core::store::Store;
use ha_core::store::postgres::{PostgresConfig, PostgresStore};

/// Operator commands for an ha-pipeline deployment.
#[derive(Debug, Parser)]
#[command(name = "ha-admin", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the database schema migrations (safe to run from several places at once).
    Migrate {
        /// PostgreSQL or CockroachDB URL.
        #[arg(long, env = "HA_POSTGRES_URL")]
        postgres_url: String,
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
        /// PostgreSQL or CockroachDB URL.
        #[arg(long, env = "HA_POSTGRES_URL")]
        postgres_url: String,
        /// Most ranges to print.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("ha-admin: {message}");
            ExitCode::from(code)
        }
    }
}

fn store(url: &str) -> Result<PostgresStore, (u8, String)> {
    PostgresStore::new(PostgresConfig {
        url: url.to_owned(),
        pool_size: 1,
        ..PostgresConfig::default()
    })
    .map_err(|e| (64, e.to_string()))
}

async fn run(args: Args) -> Result<(), (u8, String)> {
    match args.command {
        Command::Migrate { postgres_url } => {
            let applied = store(&postgres_url)?
                .migrate()
                .await
                .map_err(|e| (1, e.to_string()))?;
            if applied.is_empty() {
                println!("schema is up to date");
            } else {
                println!("applied migrations {applied:?}");
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
            postgres_url,
            limit,
        } => {
            let store = store(&postgres_url)?;
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
    }
    Ok(())
}
