//! Processes the drills start, signal and kill, and haproxy in front of the
//! ingest replicas.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use ha_test_support::Proc;
pub use ha_test_support::http::metric_where;

/// A signal ready to be sent with no process start in between: a shell
/// already waiting on its input runs its built-in `kill` as soon as
/// [`Trigger::fire`] writes a line (a `kill` command would first cost a
/// fork and an exec, a few milliseconds in which the work in flight that
/// was sampled may finish).
pub trait PrepareSignal {
    /// Signal `sig` for this process, ready to fire.
    fn prepare_signal(&self, sig: &str) -> Trigger;
}

impl PrepareSignal for Proc {
    fn prepare_signal(&self, sig: &str) -> Trigger {
        Trigger::new(sig, self.pid())
    }
}

/// A prepared signal (see [`PrepareSignal`]).
pub struct Trigger(Child);

impl Trigger {
    /// Signal `sig` for process `pid`, ready to fire.
    pub fn new(sig: &str, pid: u32) -> Trigger {
        let child = Command::new("sh")
            .args(["-c", &format!("read _ && kill -{sig} {pid}")])
            .stdin(Stdio::piped())
            .spawn()
            .expect("start sh");
        Trigger(child)
    }

    /// Sends the signal; true when it was delivered.
    pub fn fire(mut self) -> bool {
        let sent = self
            .0
            .stdin
            .take()
            .is_some_and(|mut input| input.write_all(b"go\n").is_ok());
        sent && self.0.wait().is_ok_and(|s| s.success())
    }
}

/// Threads querying an HTTP API in a loop (one request per connection),
/// counting what was answered, refused at connect, or failed after the
/// request was sent.
pub struct ApiClients {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub in_flight: std::sync::Arc<std::sync::atomic::AtomicU64>,
    threads: Vec<std::thread::JoinHandle<(u64, u64, u64)>>,
}

impl ApiClients {
    /// `n` threads sending `GET path` with a bearer token to `addr`.
    pub fn start(addr: SocketAddr, path: &str, token: &str, n: usize) -> ApiClients {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let in_flight = std::sync::Arc::new(AtomicU64::new(0));
        let threads = (0..n)
            .map(|_| {
                let (stop, in_flight) = (stop.clone(), in_flight.clone());
                let request = format!(
                    "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
                );
                std::thread::spawn(move || {
                    let (mut ok, mut refused, mut failed) = (0, 0, 0);
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                        else {
                            refused += 1;
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        };
                        in_flight.fetch_add(1, Ordering::SeqCst);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                        let mut raw = Vec::new();
                        let answered = s.write_all(request.as_bytes()).is_ok()
                            && s.read_to_end(&mut raw).is_ok()
                            && raw.starts_with(b"HTTP/1.1 200");
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        if answered {
                            ok += 1;
                        } else if raw.is_empty() {
                            // Closed or reset before any byte of an answer:
                            // the request was never processed (a connection
                            // still in the listen backlog when the listener
                            // closed); the same as refused, safe to retry.
                            refused += 1;
                        } else {
                            failed += 1;
                        }
                    }
                    (ok, refused, failed)
                })
            })
            .collect();
        ApiClients {
            stop,
            in_flight,
            threads,
        }
    }

    /// Stops the threads; `(answered 200, refused or closed before any
    /// answer, answered otherwise or cut mid-answer)`.
    pub fn finish(self) -> (u64, u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.threads
            .into_iter()
            .filter_map(|t| t.join().ok())
            .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
    }
}

/// A free port on 127.0.0.1 (bound, read, released).
pub fn free_addr() -> SocketAddr {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    // Below the kernel's ephemeral range: a port from `bind(:0)` is one the
    // kernel may give the next outgoing connection (the fleet opens
    // hundreds) before the service binds it, which failed a drill with
    // "Address already in use". Ports below the range are never taken by
    // connects; the ones handed out here are remembered so two services of
    // one drill never get the same.
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let from = low.saturating_sub(12_000).max(1_024);
    let span = low.saturating_sub(from).max(1);
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1_000 {
        // A cheap spread over the span (pid, time and a counter mixed).
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
        let mix =
            (u64::from(std::process::id()) << 32 ^ nanos ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let port = from + (mix >> 33) as u16 % span;
        if handed.contains(&port) {
            continue;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            let addr = l.local_addr().expect("bound address");
            handed.push(port);
            return addr;
        }
    }
    panic!(
        "no free port below the ephemeral range ({from}..{})",
        from + span
    );
}

/// A plain HTTP/1.1 request; returns status and body (status 0: no answer).
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    ha_test_support::request(addr, method, path, &[], "")
}

/// haproxy in front of the ingest replicas, as the seed's Kubernetes
/// Service was: TLS at the balancer, active health checks on `/readyz`
/// every 100 ms, two failed ones (no answer within 300 ms, or not 200)
/// take a replica out, two passed ones bring it back (one failed check of
/// 200 ms, as first tried, took both replicas out whenever the 2-core
/// machine stalled for a moment); a request that met a dead, hung or
/// draining replica is sent again to another one (safe: readings are
/// idempotent on `(device_id, seq)`).
pub struct Haproxy {
    child: Child,
    pub addr: SocketAddr,
    /// The MQTT frontend (TCP passthrough: TLS ends at ingest), when the
    /// replicas listen for MQTT.
    pub mqtt_addr: Option<SocketAddr>,
    socket: PathBuf,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Haproxy {
    /// Starts haproxy on a free port with `servers` (name, address) in
    /// its backend; `pem` is the certificate chain and key of its TLS
    /// listener. Without `resend`, a request that met a dead or hung
    /// replica is not re-sent: the device sees the error and retries.
    /// With a TCP frontend for MQTT when `mqtt` lists `(name, MQTT address, HTTP address)` per replica: connections
    /// pass through to the replicas' MQTT listeners (TLS ends there), a
    /// replica is in while its HTTP `/readyz` passes, as for HTTP. TCP mode
    /// cannot re-send: a device whose session died reconnects and resends.
    pub fn start(
        dir: &Path,
        servers: &[(&str, SocketAddr)],
        pem: &str,
        resend: bool,
        mqtt: &[(&str, SocketAddr, SocketAddr)],
    ) -> Haproxy {
        let addr = free_addr();
        let socket = dir.join("haproxy.sock");
        let pem_path = dir.join("haproxy.pem");
        std::fs::write(&pem_path, pem).expect("write haproxy.pem");
        let mut config = format!(
            "global
    maxconn 4096
    stats socket {socket} mode 600 level admin
defaults
    mode http
    timeout connect 100ms
    timeout client 30s
    timeout server 1s
    timeout check 300ms
    retries 2
    option redispatch
    retry-on {retry_on}
frontend devices
    bind {addr} ssl crt {pem}
    default_backend ingest
backend ingest
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 100ms fall 2 rise 2
",
            socket = socket.display(),
            pem = pem_path.display(),
            retry_on = if resend {
                "conn-failure empty-response response-timeout 502 503 504"
            } else {
                "conn-failure"
            },
        );
        for (name, server) in servers {
            config.push_str(&format!("    server {name} {server} check\n"));
        }
        let mqtt_addr = (!mqtt.is_empty()).then(free_addr);
        if let Some(front) = mqtt_addr {
            config.push_str(&format!(
                "frontend mqtt
    mode tcp
    timeout client 10m
    bind {front}
    default_backend ingest-mqtt
backend ingest-mqtt
    mode tcp
    timeout server 10m
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 100ms fall 2 rise 2
"
            ));
            for (name, server, http) in mqtt {
                config.push_str(&format!(
                    "    server {name} {server} check addr {} port {}\n",
                    http.ip(),
                    http.port()
                ));
            }
        }
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, config).expect("write haproxy.cfg");
        let log = std::fs::File::create(dir.join("haproxy.log")).expect("haproxy log");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start haproxy (apt-get install haproxy): {e}"));
        let lb = Haproxy {
            child,
            addr,
            mqtt_addr,
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() || lb.stats().is_empty() {
            assert!(
                Instant::now() < deadline,
                "haproxy did not start; see {}",
                dir.join("haproxy.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        lb
    }

    fn command(&self, cmd: &str) -> String {
        let Ok(mut s) = UnixStream::connect(&self.socket) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = writeln!(s, "{cmd}");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// `(server, status, total sessions)` of the backend's servers.
    pub fn stats(&self) -> Vec<(String, String, u64)> {
        let out = self.command("show stat");
        let mut lines = out.lines();
        let Some(header) = lines.next() else {
            return Vec::new();
        };
        let cols: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
        let col = |name: &str| cols.iter().position(|c| *c == name);
        let (Some(px), Some(sv), Some(st), Some(stot)) =
            (col("pxname"), col("svname"), col("status"), col("stot"))
        else {
            return Vec::new();
        };
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| {
                f.len() > stot && f[px] == "ingest" && f[sv] != "BACKEND" && f[sv] != "FRONTEND"
            })
            .map(|f| {
                (
                    f[sv].to_owned(),
                    f[st].to_owned(),
                    f[stot].parse().unwrap_or(0),
                )
            })
            .collect()
    }

    /// The backend's totals: `(requests re-sent, requests re-dispatched to
    /// another server, 5xx answers sent to devices)`.
    pub fn resends(&self) -> (u64, u64, u64) {
        let out = self.command("show stat");
        let mut lines = out.lines();
        let Some(header) = lines.next() else {
            return (0, 0, 0);
        };
        let cols: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
        let col = |name: &str| cols.iter().position(|c| *c == name);
        let (Some(px), Some(sv), Some(wretr), Some(wredis), Some(h5xx)) = (
            col("pxname"),
            col("svname"),
            col("wretr"),
            col("wredis"),
            col("hrsp_5xx"),
        ) else {
            return (0, 0, 0);
        };
        let num = |f: &[&str], i: usize| f.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.get(px) == Some(&"ingest") && f.get(sv) == Some(&"BACKEND"))
            .map_or((0, 0, 0), |f| {
                (num(&f, wretr), num(&f, wredis), num(&f, h5xx))
            })
    }

    /// Waits until exactly the servers `up` are UP.
    pub fn wait_up(&self, up: &[&str], limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let stats = self.stats();
            let now_up: Vec<&str> = stats
                .iter()
                .filter(|(_, st, _)| st.starts_with("UP"))
                .map(|(n, _, _)| n.as_str())
                .collect();
            if now_up.len() == up.len() && up.iter().all(|u| now_up.contains(u)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "haproxy servers: {stats:?}, expected up: {up:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Polls `sample` until it shows work in flight (> 0) and returns it: the
/// fault is injected right after (within a few milliseconds).
pub async fn when_in_flight(what: &str, sample: impl Fn() -> Option<f64>) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(n) = sample()
            && n > 0.0
        {
            return n as u64;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never showed work in flight"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
