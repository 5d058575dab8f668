//! The image's binaries as podman containers (host network, read-only
//! root, uid 65532, no capabilities, no privilege gain, CPU and memory
//! limits), their limits read back from their cgroups, and the resource
//! limits of the Kubernetes manifests they mirror.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Where scripts/containers says the image and its containers are.
pub struct Setup {
    /// The image deploy/build-image built.
    pub image: String,
    /// Label value every container of this run carries (the script
    /// removes them by it, whatever happens here).
    pub run_label: String,
}

/// `None` outside scripts/containers (SKIPPED), a failure in CI.
pub fn setup() -> Option<Setup> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (get("HA_CONTAINER_IMAGE"), get("HA_CONTAINER_RUN")) {
        (Some(image), Some(run_label)) => Some(Setup { image, run_label }),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "the container drills need the image and servers of scripts/containers; run scripts/containers"
            );
            eprintln!("SKIPPED: run the container drills with scripts/containers");
            None
        }
    }
}

/// CPU and memory limits of one container.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Cores (`cpu: "2"` = 2.0, `500m` = 0.5).
    pub cpus: f64,
    pub memory_bytes: u64,
}

impl Limits {
    /// `cpu=2 memory=512Mi`.
    pub fn describe(&self) -> String {
        format!("cpu={} memory={}Mi", self.cpus, self.memory_bytes >> 20)
    }
}

/// The `limits:` of the first container of a Kubernetes manifest under
/// `deploy/k8s/` (e.g. `base/ingest-api.yaml`).
pub fn manifest_limits(manifest: &str) -> Limits {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/k8s")
        .join(manifest);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    parse_limits(&text).unwrap_or_else(|| panic!("no cpu/memory limits in {}", path.display()))
}

/// The cpu and memory under the first `limits:` that follows a
/// `resources:` line (comment lines skipped).
fn parse_limits(text: &str) -> Option<Limits> {
    let mut lines = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .skip_while(|l| l.trim() != "resources:")
        .skip_while(|l| l.trim() != "limits:");
    let indent = |l: &str| l.len() - l.trim_start().len();
    let limits_indent = indent(lines.next()?);
    let (mut cpus, mut memory) = (None, None);
    for line in lines.take_while(|l| indent(l) > limits_indent) {
        let (key, value) = line.trim().split_once(':')?;
        let value = value.trim().trim_matches('"');
        match key {
            "cpu" => cpus = Some(parse_cpu(value)?),
            "memory" => memory = Some(parse_memory(value)?),
            _ => {}
        }
    }
    Some(Limits {
        cpus: cpus?,
        memory_bytes: memory?,
    })
}

fn parse_cpu(v: &str) -> Option<f64> {
    match v.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok().map(|m| m / 1000.0),
        None => v.parse().ok(),
    }
}

fn parse_memory(v: &str) -> Option<u64> {
    let (n, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "Ki" => n << 10,
        "Mi" => n << 20,
        "Gi" => n << 30,
        _ => return None,
    })
}

/// Runs `podman ARGS`; panics with its stderr when it fails.
pub fn podman(args: &[&str]) -> String {
    let out = podman_output(args);
    assert!(
        out.status.success(),
        "podman {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn podman_output(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run podman (apt-get install podman runc): {e}"))
}

/// What to run: one binary of the image.
pub struct Spec<'a> {
    pub name: String,
    pub binary: &'a str,
    pub args: Vec<String>,
    pub env: Vec<(&'a str, String)>,
    /// `(host path, container path, read-only)`.
    pub mounts: Vec<(PathBuf, &'a str, bool)>,
    pub limits: Limits,
    /// Seconds `podman stop` waits before SIGKILL (the manifest's
    /// terminationGracePeriodSeconds).
    pub grace_secs: u64,
    /// Where its logs are saved when it is removed.
    pub log_dir: PathBuf,
}

/// A running (or exited) container; removed on drop, its logs saved.
pub struct Container {
    pub name: String,
    /// The name without `ha-ct-<run>-`.
    pub short: String,
    pub limits: Limits,
    log_dir: PathBuf,
}

impl Drop for Container {
    fn drop(&mut self) {
        let logs = podman_output(&["logs", &self.name]);
        let mut text = logs.stdout;
        text.extend_from_slice(&logs.stderr);
        let _ = std::fs::write(self.log_dir.join(format!("{}.log", self.name)), text);
        let _ = podman_output(&["rm", "-f", "-t", "0", &self.name]);
    }
}

impl Container {
    /// `podman run -d` with the hardening every container here gets.
    pub fn run(setup: &Setup, spec: Spec<'_>) -> Container {
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            &spec.name,
            "--label",
            &format!("ha.containers.run={}", setup.run_label),
            "--network",
            "host",
            "--read-only",
            "--user",
            "65532:65532",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--cpus",
            &spec.limits.cpus.to_string(),
            "--memory",
            &format!("{}b", spec.limits.memory_bytes),
            // No swap beyond the limit: the limit is the memory.
            "--memory-swap",
            &format!("{}b", spec.limits.memory_bytes),
            "--stop-timeout",
            &spec.grace_secs.to_string(),
            "--entrypoint",
            &format!("/usr/local/bin/{}", spec.binary),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (k, v) in &spec.env {
            args.push("--env".into());
            args.push(format!("{k}={v}"));
        }
        for (host, inside, ro) in &spec.mounts {
            args.push("--volume".into());
            args.push(format!(
                "{}:{inside}{}",
                host.display(),
                if *ro { ":ro" } else { "" }
            ));
        }
        args.push(setup.image.clone());
        args.extend(spec.args.iter().cloned());
        // conmon (the container's monitor, started here) writes its `oom`
        // marker into its working directory on this setup: keep it out of
        // the source tree.
        let out = Command::new("podman")
            .args(&args)
            .current_dir(&spec.log_dir)
            .output()
            .unwrap_or_else(|e| panic!("run podman (apt-get install podman runc): {e}"));
        assert!(
            out.status.success(),
            "podman run {}: {}",
            spec.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let prefix = format!("ha-ct-{}-", setup.run_label);
        Container {
            short: spec
                .name
                .strip_prefix(&prefix)
                .unwrap_or(&spec.name)
                .to_owned(),
            name: spec.name,
            limits: spec.limits,
            log_dir: spec.log_dir,
        }
    }

    /// `podman inspect --format FORMAT`.
    pub fn inspect(&self, format: &str) -> String {
        podman(&["inspect", "--format", format, &self.name])
    }

    /// The host's path of this container's cgroup directory of
    /// `controller` (cgroup v1: `/sys/fs/cgroup/<controller>/<path>`).
    pub fn cgroup_dir(&self, controller: &str) -> PathBuf {
        let pid = self.inspect("{{.State.Pid}}");
        let table = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap_or_else(|e| panic!("{}: cgroups of pid {pid}: {e}", self.name));
        let path = table
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
                ctrls.split(',').any(|c| c == controller).then_some(path)
            })
            .next()
            .unwrap_or_else(|| {
                panic!(
                    "{}: no {controller} cgroup (a cgroup v1 hierarchy is expected): {table}",
                    self.name
                )
            });
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(path.trim_start_matches('/'))
    }

    /// A cgroup file of this container.
    pub fn cgroup_read(&self, controller: &str, file: &str) -> String {
        let path = self.cgroup_dir(controller).join(file);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: read {}: {e}", self.name, path.display()))
            .trim()
            .to_owned()
    }

    /// Reads the CPU quota and memory limit back from the container's
    /// cgroups; panics unless they are the ones asked for (a limit the
    /// kernel does not enforce is no limit).
    pub fn check_limits(&self) -> String {
        let quota: i64 = self
            .cgroup_read("cpu", "cpu.cfs_quota_us")
            .parse()
            .expect("cpu.cfs_quota_us");
        let period: i64 = self
            .cgroup_read("cpu", "cpu.cfs_period_us")
            .parse()
            .expect("cpu.cfs_period_us");
        let memory: u64 = self
            .cgroup_read("memory", "memory.limit_in_bytes")
            .parse()
            .expect("memory.limit_in_bytes");
        let cpus = quota as f64 / period as f64;
        assert!(
            quota > 0 && (cpus - self.limits.cpus).abs() < 0.001,
            "{}: CPU limit not enforced: cgroup cpu.cfs_quota_us={quota} cpu.cfs_period_us={period}, asked for {} cores",
            self.name,
            self.limits.cpus
        );
        assert_eq!(
            memory, self.limits.memory_bytes,
            "{}: memory limit not enforced: cgroup memory.limit_in_bytes={memory}, asked for {}",
            self.name, self.limits.memory_bytes
        );
        format!("{}:{cpus}cpu/{}Mi", self.short, memory >> 20)
    }

    /// `podman kill --signal SIG`.
    pub fn kill(&self, sig: &str) {
        podman(&["kill", "--signal", sig, &self.name]);
    }

    /// `podman stop` (SIGTERM to PID 1, SIGKILL after the grace period):
    /// `(exit code, how long it took)`.
    pub fn stop(&self) -> (i32, Duration) {
        let t0 = Instant::now();
        podman(&["stop", &self.name]);
        let took = t0.elapsed();
        (self.exit_code(), took)
    }

    /// `podman start` again (same container, same limits).
    pub fn start(&self) {
        let out = Command::new("podman")
            .args(["start", &self.name])
            .current_dir(&self.log_dir)
            .output()
            .unwrap_or_else(|e| panic!("run podman: {e}"));
        assert!(
            out.status.success(),
            "podman start {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits (at most `limit`) until it exited; its exit code.
    pub fn wait_exit(&self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        while self.inspect("{{.State.Running}}") == "true" {
            assert!(
                Instant::now() < deadline,
                "{} still running after {limit:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.exit_code()
    }

    pub fn exit_code(&self) -> i32 {
        self.inspect("{{.State.ExitCode}}")
            .parse()
            .unwrap_or_else(|e| panic!("{}: exit code: {e}", self.name))
    }

    /// Its logs so far (stdout and stderr).
    pub fn logs(&self) -> String {
        let out = podman_output(&["logs", &self.name]);
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        text
    }
}

/// Waits until `GET path` on `addr` answers 200 (at most `limit`).
pub fn wait_http_ok(what: &str, addr: SocketAddr, path: &str, limit: Duration) {
    ha_test_support::wait_until(&format!("{what} {path} on {addr}"), limit, || {
        ha_test_support::request(addr, "GET", path, &[], "").0 == 200
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_limits_of_a_manifest() {
        let yaml = "spec:\n  resources:\n    requests:\n      cpu: 100m\n      memory: 64Mi\n    limits:\n      cpu: \"2\"\n      # a comment\n      memory: 1Gi\n  other: x\n";
        assert_eq!(
            parse_limits(yaml),
            Some(Limits {
                cpus: 2.0,
                memory_bytes: 1 << 30
            })
        );
        assert_eq!(parse_cpu("500m"), Some(0.5));
        assert_eq!(parse_memory("128Mi"), Some(128 << 20));
        assert_eq!(parse_memory("12GB"), None);
        assert_eq!(parse_limits("resources:\n  requests:\n    cpu: 1\n"), None);
    }
}
