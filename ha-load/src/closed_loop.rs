//! The closed-loop driver: `wrk` (Debian's package), a fixed number of
//! connections each sending its next request as soon as the previous one
//! was answered, one reading per request from a thousand devices with their
//! own tokens. It is run against our ingest and against the naive
//! composition in the same run, beside the open-loop stepped driver of
//! [`driver`](crate::driver): the two disagree (a closed loop measures the
//! service at whatever latency it settles at), and the report quotes the
//! smaller advantage.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use ha_core::ingest::DeviceKeys;
use serde::{Deserialize, Serialize};

/// How `wrk` is run.
#[derive(Clone, Debug)]
pub struct WrkConfig {
    /// `-t`: driver threads.
    pub threads: usize,
    /// `-c`: connections, shared by the threads.
    pub connections: usize,
    /// Device ids (with their tokens) the requests rotate through; a
    /// multiple of `threads` so that each device belongs to one thread and
    /// its `seq` only grows.
    pub devices: usize,
    /// `-d`.
    pub duration: Duration,
}

impl Default for WrkConfig {
    fn default() -> Self {
        WrkConfig {
            threads: 2,
            connections: 64,
            devices: 1_000,
            duration: Duration::from_secs(20),
        }
    }
}

/// What one `wrk` run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClosedLoop {
    /// `wrk -t… -c…`, as run.
    pub driver: String,
    /// Answered requests per second (any status).
    pub requests_per_sec: f64,
    /// Answered requests.
    pub requests: u64,
    /// Answers that were not 2xx/3xx.
    pub non_2xx: u64,
    /// Connect, read, write errors and timeouts.
    pub socket_errors: u64,
    /// Latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

impl ClosedLoop {
    /// Successful (2xx) requests per second: what the comparison uses.
    pub fn ok_per_sec(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        let ok = self.requests.saturating_sub(self.non_2xx) as f64;
        self.requests_per_sec * ok / self.requests as f64
    }
}

/// The Lua script: device `i` of `devices` (`<prefix><i:05>`) belongs to
/// thread `i % threads`; each thread cycles through its devices, `seq`
/// growing by one per round.
pub fn script(keys: &DeviceKeys, prefix: &str, config: &WrkConfig) -> String {
    let mut lua = String::from("local devices = {\n");
    for i in 0..config.devices {
        let id = format!("{prefix}{i:05}");
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{}", keys.token(&id)));
        lua.push_str(&format!("  {{\"{id}\", \"Basic {basic}\"}},\n"));
    }
    lua.push_str(&format!(
        r#"}}
local threads = {threads}
local count = 0
function setup(thread)
  thread:set("tid", count)
  count = count + 1
end
function init(args)
  per_thread = math.floor(#devices / threads)
  k = 0
end
function request()
  local slot = k % per_thread
  local seq = math.floor(k / per_thread) + 1
  k = k + 1
  local d = devices[tid + slot * threads + 1]
  local ts = os.date("!%Y-%m-%dT%H:%M:%SZ")
  local body = '{{"readings":[{{"device_id":"' .. d[1] .. '","seq":' .. seq ..
    ',"ts":"' .. ts .. '","metrics":{{"pulse":72.5}}}}]}}'
  return wrk.format("POST", "/v1/readings",
    {{["Authorization"] = d[2], ["Content-Type"] = "application/json"}}, body)
end
"#,
        threads = config.threads
    ));
    lua
}

/// Runs `wrk` against `url` (`https://host:port`) with the script written
/// to `work_dir`.
pub async fn run(
    url: &str,
    keys: &DeviceKeys,
    prefix: &str,
    config: &WrkConfig,
    work_dir: &Path,
) -> Result<ClosedLoop, String> {
    let path = work_dir.join(format!("{prefix}wrk.lua"));
    std::fs::write(&path, script(keys, prefix, config))
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    let args = vec![
        format!("-t{}", config.threads),
        format!("-c{}", config.connections),
        format!("-d{}s", config.duration.as_secs().max(1)),
        "--latency".into(),
        "-s".into(),
        path.display().to_string(),
        format!("{url}/v1/readings"),
    ];
    let output =
        tokio::task::spawn_blocking(move || std::process::Command::new("wrk").args(&args).output())
            .await
            .map_err(|e| format!("wrk task: {e}"))?
            .map_err(|e| format!("running wrk (apt-get install wrk): {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "wrk exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let mut measured = parse(&text)?;
    measured.driver = format!(
        "wrk -t{} -c{}, {} devices, {} s",
        config.threads,
        config.connections,
        config.devices,
        config.duration.as_secs()
    );
    Ok(measured)
}

/// Reads `wrk --latency`'s report.
pub fn parse(text: &str) -> Result<ClosedLoop, String> {
    let mut r = ClosedLoop::default();
    let mut seen_rate = false;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => {
                r.requests_per_sec = v.parse().map_err(|_| format!("bad rate line {line:?}"))?;
                seen_rate = true;
            }
            [n, "requests", "in", ..] => {
                r.requests = n.parse().map_err(|_| format!("bad total line {line:?}"))?;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                r.non_2xx = n.parse().map_err(|_| format!("bad line {line:?}"))?;
            }
            ["Socket", "errors:", rest @ ..] => {
                r.socket_errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            ["50%", v] => r.p50_ms = millis(v)?,
            ["99%", v] => r.p99_ms = millis(v)?,
            _ => {}
        }
    }
    if !seen_rate {
        return Err(format!("no Requests/sec in wrk's output:\n{text}"));
    }
    Ok(r)
}

/// `812.00us`, `1.23ms`, `2.00s` → milliseconds.
fn millis(v: &str) -> Result<f64, String> {
    let (number, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1_000.0)
    } else {
        return Err(format!("latency {v:?} has no unit"));
    };
    number
        .parse::<f64>()
        .map(|x| x * scale)
        .map_err(|_| format!("latency {v:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "Running 20s test @ https://127.0.0.1:8443/v1/readings
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.71ms    1.02ms  30.11ms   80.12%
    Req/Sec    11.80k   712.33    13.20k    70.00%
  Latency Distribution
     50%    2.55ms
     75%    3.10ms
     90%    3.90ms
     99%  812.00us
  469817 requests in 20.00s, 44.80MB read
  Socket errors: connect 0, read 2, write 1, timeout 0
  Non-2xx or 3xx responses: 17
Requests/sec:  23490.85
Transfer/sec:      2.24MB
";

    #[test]
    fn reads_wrks_report() {
        let r = parse(OUTPUT).unwrap();
        assert_eq!(r.requests, 469_817);
        assert_eq!(r.non_2xx, 17);
        assert_eq!(r.socket_errors, 3);
        assert!((r.requests_per_sec - 23_490.85).abs() < 1e-9);
        assert!((r.p50_ms - 2.55).abs() < 1e-9);
        assert!((r.p99_ms - 0.812).abs() < 1e-9);
        assert!(r.ok_per_sec() < r.requests_per_sec);
        assert!(parse("wrk: connection refused").is_err());
        assert_eq!(millis("2.00s"), Ok(2_000.0));
    }

    #[test]
    fn every_device_belongs_to_one_thread_and_carries_its_token() {
        let keys = DeviceKeys::from_keys(vec![vec![7u8; 32]]).unwrap();
        let config = WrkConfig {
            devices: 4,
            ..WrkConfig::default()
        };
        let lua = script(&keys, "c-", &config);
        assert_eq!(lua.matches("{\"c-000").count(), 4);
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("c-00003:{}", keys.token("c-00003")));
        assert!(lua.contains(&basic));
        assert!(lua.contains("local threads = 2"));
    }
}
