//! The fsync ceiling's first factor: how many `fdatasync`s per second the
//! file system under PostgreSQL's data directory takes (`pg_test_fsync`,
//! Debian's postgresql package), and what file system that is.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::log;
use crate::results::FsyncProbe;

/// `pg_test_fsync` of the newest PostgreSQL under /usr/lib/postgresql.
fn pg_test_fsync() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let tool = e.path().join("bin/pg_test_fsync");
            tool.exists().then_some((v, tool))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

/// `stat -f -c %T`: the file system type of `dir` (`ext2/ext3` covers ext4).
fn fs_type(dir: &Path) -> String {
    Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// The `fdatasync` figure of `pg_test_fsync`'s first section (one 8 kB
/// write per sync, what a commit's WAL flush is), ops/s.
pub fn parse_fdatasync(line: &str) -> Option<f64> {
    let mut words = line.split_whitespace();
    if words.next()? != "fdatasync" {
        return None;
    }
    let value = words.next()?.parse().ok()?;
    (words.next()? == "ops/sec").then_some(value)
}

/// Runs `pg_test_fsync -s secs` on the file system of `data_dir` until its
/// `fdatasync` line (the rest of its tests are not needed), then stops it.
pub(super) async fn probe(data_dir: &Path, secs: u64) -> Result<FsyncProbe, String> {
    let tool = pg_test_fsync().ok_or("pg_test_fsync not found under /usr/lib/postgresql")?;
    // Beside the data directory, on the same file system, not inside it.
    let dir = data_dir
        .parent()
        .filter(|p| same_device(p, data_dir))
        .unwrap_or(data_dir)
        .to_path_buf();
    let file = dir.join(format!("ha-load-fsync-{}.tmp", std::process::id()));
    log(format!(
        "fsync ceiling: pg_test_fsync -s {secs} on {} ({})…",
        dir.display(),
        fs_type(data_dir)
    ));
    let args: Vec<String> = vec![
        "-s".into(),
        secs.to_string(),
        "-f".into(),
        file.display().to_string(),
    ];
    let t = tool.clone();
    let found = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(&t)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("running {}: {e}", t.display()))?;
        let mut figure = None;
        if let Some(out) = child.stdout.take() {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(v) = parse_fdatasync(&line) {
                    figure = Some(v);
                    break;
                }
            }
        }
        // SIGTERM: it removes its test file on the way out.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        figure.ok_or_else(|| "pg_test_fsync printed no fdatasync figure".to_owned())
    });
    let result = tokio::time::timeout(Duration::from_secs(secs * 20 + 30), found).await;
    let _ = std::fs::remove_file(&file);
    let fdatasync_per_s = result
        .map_err(|_| "pg_test_fsync took too long".to_owned())?
        .map_err(|e| format!("pg_test_fsync task: {e}"))??;
    Ok(FsyncProbe {
        data_directory: data_dir.display().to_string(),
        fs_type: fs_type(data_dir),
        fdatasync_per_s,
        tool: format!("{} -s {secs}", tool.display()),
    })
}

fn same_device(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fdatasync_line_only() {
        assert_eq!(
            parse_fdatasync(
                "        fdatasync                          4815.172 ops/sec     208 usecs/op"
            ),
            Some(4815.172)
        );
        assert_eq!(
            parse_fdatasync(
                "        open_datasync                      4345.509 ops/sec     230 usecs/op"
            ),
            None
        );
        assert_eq!(parse_fdatasync("        fdatasync   n/a"), None);
        assert_eq!(parse_fdatasync(""), None);
    }
}
