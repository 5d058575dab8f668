//! CPU time and resident memory of the pipeline's processes, read from
//! `/proc` (Linux). A component is a process and its descendants
//! (PostgreSQL serves each connection from a child process).

use std::collections::HashMap;
use std::time::Duration;

/// `/proc/<pid>/stat` counts CPU time in clock ticks of 1/100 s on every
/// Linux architecture we run on (`USER_HZ`).
const TICKS_PER_SECOND: f64 = 100.0;

/// A process to watch, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    /// What the report calls it (`ingest-api`, `rabbitmq`, ...).
    pub name: String,
    /// Its main process.
    pub pid: u32,
    /// Count its descendants' CPU too (not for a process whose children
    /// are other components, like the harness itself).
    pub tree: bool,
}

impl std::str::FromStr for Component {
    type Err = String;
    /// `name=pid`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, pid) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected NAME=PID"))?;
        let pid = pid
            .trim()
            .parse()
            .map_err(|e| format!("`{s}`: bad pid ({e})"))?;
        Ok(Component {
            name: name.trim().to_owned(),
            pid,
            tree: true,
        })
    }
}

/// One reading of a component.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// User + system CPU time of the process tree.
    pub cpu: Duration,
    /// Resident set of the main process, bytes.
    pub rss: u64,
}

/// `(pid, ppid, utime + stime ticks)` from the text of `/proc/<pid>/stat`.
pub fn parse_stat(text: &str) -> Option<(u32, u32, u64)> {
    let pid = text.split_whitespace().next()?.parse().ok()?;
    // The command name is in parentheses and may hold spaces.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((pid, ppid, utime + stime))
}

/// `VmRSS` in bytes from the text of `/proc/<pid>/status`.
pub fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Every process: pid → (ppid, CPU ticks).
fn all_processes() -> HashMap<u32, (u32, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && let Some((_, ppid, ticks)) = parse_stat(&text)
        {
            out.insert(pid, (ppid, ticks));
        }
    }
    out
}

/// Every process's parent: pid → ppid.
pub fn parents() -> HashMap<u32, u32> {
    all_processes()
        .into_iter()
        .map(|(pid, (ppid, _))| (pid, ppid))
        .collect()
}

/// CPU ticks of `root` and all its descendants in `procs`.
pub fn tree_ticks(procs: &HashMap<u32, (u32, u64)>, root: u32) -> u64 {
    let mut total = 0;
    let mut stack = vec![root];
    let mut seen = std::collections::HashSet::new();
    while let Some(pid) = stack.pop() {
        if !seen.insert(pid) {
            continue;
        }
        if let Some((_, ticks)) = procs.get(&pid) {
            total += ticks;
        }
        stack.extend(
            procs
                .iter()
                .filter(|(_, (ppid, _))| *ppid == pid)
                .map(|(child, _)| *child),
        );
    }
    total
}

/// Resident set of one process, bytes (0 when it is gone).
pub fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| parse_rss(&s))
        .unwrap_or(0)
}

/// Reads every component at once.
pub fn sample(components: &[Component]) -> Vec<Usage> {
    let procs = all_processes();
    components
        .iter()
        .map(|c| Usage {
            cpu: Duration::from_secs_f64(
                if c.tree {
                    tree_ticks(&procs, c.pid)
                } else {
                    procs.get(&c.pid).map_or(0, |(_, t)| *t)
                } as f64
                    / TICKS_PER_SECOND,
            ),
            rss: rss(c.pid),
        })
        .collect()
}

/// Open file descriptors of a process (its sockets included).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_spaces_in_the_name_parse() {
        let line =
            "4242 (beam.smp x) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 30 0 1 2 3";
        assert_eq!(parse_stat(line), Some((4242, 17, 281)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn rss_is_in_bytes() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\n";
        assert_eq!(parse_rss(status), Some(1234 * 1024));
    }

    #[test]
    fn a_tree_sums_its_descendants_only() {
        let procs: HashMap<u32, (u32, u64)> = [
            (1, (0, 5)),
            (10, (1, 100)),
            (11, (10, 7)),
            (12, (10, 3)),
            (20, (1, 50)),
        ]
        .into_iter()
        .collect();
        assert_eq!(tree_ticks(&procs, 10), 110);
        assert_eq!(tree_ticks(&procs, 99), 0);
    }

    #[test]
    fn this_process_is_visible() {
        let me = std::process::id();
        assert!(rss(me) > 0);
        assert!(open_fds(me) > 0);
        let s = sample(&[Component {
            name: "me".into(),
            pid: me,
            tree: false,
        }]);
        assert!(s[0].rss > 0);
    }
}
