//! Who and where the process runs: host name, user and ids, read from
//! `/proc` and `/etc/passwd` (no libc).

use std::path::Path;

/// The process's host and user, as shown on `GET /`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The host name; in Kubernetes, the pod name.
    pub hostname: String,
    /// The effective user id.
    pub uid: Option<u32>,
    /// The effective group id.
    pub gid: Option<u32>,
    /// The user name of `uid` in `/etc/passwd`; `None` when the image has
    /// no entry for it (common with `runAsUser` in Kubernetes).
    pub user: Option<String>,
}

impl Identity {
    /// Reads the identity of this process. Missing files give `None`
    /// fields, never an error: the page is informational.
    pub fn current() -> Identity {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let uid = effective_id(&status, "Uid:");
        let gid = effective_id(&status, "Gid:");
        let user = uid.and_then(|uid| {
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            user_name(&passwd, uid)
        });
        Identity {
            hostname: hostname(Path::new("/proc/sys/kernel/hostname")),
            uid,
            gid,
            user,
        }
    }

    /// `alice (uid 1000, gid 1000)`, with `?` for what is unknown.
    pub fn describe_user(&self) -> String {
        let id = |v: Option<u32>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
        format!(
            "{} (uid {}, gid {})",
            self.user.as_deref().unwrap_or("(no passwd entry)"),
            id(self.uid),
            id(self.gid)
        )
    }
}

/// The effective id from a `/proc/<pid>/status` line such as
/// `Uid:\t1000\t1001\t1000\t1000` (real, effective, saved, filesystem).
pub fn effective_id(status: &str, key: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse().ok())
}

/// The name of `uid` in the text of `/etc/passwd`
/// (`name:password:uid:gid:gecos:home:shell`).
pub fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id: u32 = fields.nth(1)?.parse().ok()?;
            (id == uid && !name.is_empty()).then(|| name.to_owned())
        })
}

/// The kernel's host name, else `$HOSTNAME`, else `unknown`.
fn hostname(kernel: &Path) -> String {
    std::fs::read_to_string(kernel)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\thello\nUmask:\t0022\nState:\tS (sleeping)\n\
                          Uid:\t1000\t10001\t10001\t10001\nGid:\t2000\t20001\t20001\t20001\n";

    #[test]
    fn reads_the_effective_ids() {
        assert_eq!(effective_id(STATUS, "Uid:"), Some(10001));
        assert_eq!(effective_id(STATUS, "Gid:"), Some(20001));
        assert_eq!(effective_id("Name:\tx\n", "Uid:"), None);
        assert_eq!(effective_id("Uid:\tx\ty\n", "Uid:"), None);
    }

    #[test]
    fn finds_the_user_name() {
        let passwd = "# comment\nroot:x:0:0:root:/root:/bin/bash\n\
                      broken-line\napp:x:10001:10001::/home/app:/bin/sh\n";
        assert_eq!(user_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(user_name(passwd, 10001).as_deref(), Some("app"));
        assert_eq!(user_name(passwd, 4242), None);
        assert_eq!(user_name("", 0), None);
    }

    #[test]
    fn describes_unknown_users() {
        let id = Identity {
            hostname: "h".into(),
            uid: Some(10001),
            gid: None,
            user: None,
        };
        assert_eq!(id.describe_user(), "(no passwd entry) (uid 10001, gid ?)");
    }

    #[test]
    fn the_current_identity_is_readable_here() {
        let id = Identity::current();
        assert!(!id.hostname.is_empty());
        assert!(id.uid.is_some(), "{id:?}");
    }
}
