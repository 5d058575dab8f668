//! A binary under test as a child process: started, known ready once it
//! logs `listening on <addr>`, signalled, killed when dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

/// How long a binary may take to report its address.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running binary; SIGCONT then SIGKILL when dropped (a stopped process
/// cannot die of SIGKILL until resumed).
pub struct Proc {
    /// The name it was started under (log file, messages).
    pub name: String,
    /// The child process.
    pub child: Child,
    /// Where it listens, from its `listening on <addr>` line.
    pub addr: SocketAddr,
    /// Its stderr, when written to a file.
    pub log: Option<PathBuf>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `bin` with `args` (and `HA_LOG=info`), echoes its stderr into
    /// the test's output and returns once it logged `listening on <addr>`.
    pub fn start(name: &str, bin: &str, args: &[&str]) -> Proc {
        Self::spawn(name, bin, args, None)
    }

    /// Like [`Proc::start`], but copies its stderr to `<dir>/<name>.log`.
    pub fn start_logged(dir: &Path, name: &str, bin: &str, args: &[&str]) -> Proc {
        Self::spawn(name, bin, args, Some(dir.join(format!("{name}.log"))))
    }

    fn spawn(name: &str, bin: &str, args: &[&str], log: Option<PathBuf>) -> Proc {
        let mut child = Command::new(bin)
            .args(args)
            .env("HA_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({bin}): {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let (log_path, label) = (log.clone(), name.to_owned());
        std::thread::spawn(move || {
            let mut file = log_path.map(|p| {
                std::fs::File::create(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            });
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                match &mut file {
                    Some(f) => {
                        let _ = writeln!(f, "{line}");
                    }
                    None => eprintln!("  {label} | {line}"),
                }
                if !sent && let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_owned());
                    sent = true;
                }
            }
        });
        let see = log
            .as_ref()
            .map_or(String::new(), |p| format!("; see {}", p.display()));
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(a) => a,
            Err(RecvTimeoutError::Disconnected) => {
                let status = child.wait().ok();
                panic!("{name} exited ({status:?}) before reporting its address{see}")
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!("{name} did not report its address within {START_TIMEOUT:?}{see}")
            }
        };
        Proc {
            name: name.to_owned(),
            child,
            addr: addr
                .parse()
                .unwrap_or_else(|e| panic!("{name} reported {addr:?}: {e}")),
            log,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends signal `sig` (a name: `KILL`, `STOP`, `TERM`, ...) through
    /// `kill(1)`; whether it was delivered.
    pub fn signal(&self, sig: &str) -> bool {
        Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then its exit status; panics when it has not exited within
    /// `limit`.
    pub fn terminate(mut self, limit: Duration) -> ExitStatus {
        assert!(self.signal("TERM"), "SIGTERM to {}", self.name);
        self.wait_exit(limit)
            .unwrap_or_else(|| panic!("{} did not exit within {limit:?} of SIGTERM", self.name))
    }

    /// SIGKILL and reap it (a crash, for restart tests).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `GET path` on its address: status (0: no answer) and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        crate::http::request(self.addr, "GET", path, &[], "")
    }

    /// The sum of the samples of metric `name` on its `/metrics`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        crate::http::metric(self.addr, name)
    }
}

/// Runs `bin` with `args` (and `env`) to its end; returns the exit code,
/// stdout and stderr.
pub fn run_to_end(bin: &str, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("run {bin}: {e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
