//! Configuration as a hostile or careless operator meets it: secrets in
//! variables never show in `--help`, and settings that would break a
//! promise exit 64 with a hint (no servers needed: each binary refuses
//! before connecting anywhere).

use std::process::{Command, Output};

const SECRET: &str = "S3cretPassw0rd";

fn run(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the binary runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn help_never_prints_secrets_from_the_environment() {
    let amqp = format!("amqp://ingest:{SECRET}@rabbit:5672/%2f");
    let pg = format!("postgres://analyzer:{SECRET}@db:5432/ha");
    let env = [
        ("HA_AMQP_URL", amqp.as_str()),
        ("HA_POSTGRES_URL", pg.as_str()),
    ];
    let cases: [(&str, &[&str]); 6] = [
        (env!("CARGO_BIN_EXE_ingest-api"), &["--help"]),
        (env!("CARGO_BIN_EXE_analyzer"), &["--help"]),
        (env!("CARGO_BIN_EXE_alerts-api"), &["--help"]),
        (env!("CARGO_BIN_EXE_ha-admin"), &["migrate", "--help"]),
        (env!("CARGO_BIN_EXE_ha-admin"), &["dlq", "list", "--help"]),
        (env!("CARGO_BIN_EXE_data-generator"), &["--help"]),
    ];
    for (bin, args) in cases {
        let out = run(bin, args, &env);
        let all = text(&out);
        assert!(out.status.success(), "{bin} {args:?}: {all}");
        assert!(
            !all.contains(SECRET),
            "{bin} {args:?} printed a secret:\n{all}"
        );
        assert!(
            all.contains("[env: HA_"),
            "{bin} {args:?}: variables are still named"
        );
    }
}

#[test]
fn a_short_device_key_file_exits_64_with_a_rotation_hint() {
    let dir = std::env::temp_dir().join(format!("ha-short-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("device.key");
    std::fs::write(&key, "test-key\n").unwrap();
    let out = run(
        env!("CARGO_BIN_EXE_ingest-api"),
        &[
            "--amqp-url",
            "amqp://127.0.0.1:9/%2f",
            "--device-key-file",
            key.to_str().unwrap(),
        ],
        &[],
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(64), "{all}");
    assert!(all.contains("rotate"), "{all}");
    assert!(
        !all.contains("test-key"),
        "the key itself is never printed: {all}"
    );
}

#[test]
fn a_retention_shorter_than_the_max_reading_age_exits_64() {
    let out = run(
        env!("CARGO_BIN_EXE_analyzer"),
        &[
            "--amqp-url",
            "amqp://127.0.0.1:9/%2f",
            "--postgres-url",
            "postgres://127.0.0.1:9/ha",
            "--retention",
            "7d",
        ],
        &[],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(64), "{all}");
    assert!(all.contains("--max-reading-age (30d)"), "{all}");
}
