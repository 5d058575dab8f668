//! Eclipse Mosquitto in tests (Debian `mosquitto`, `mosquitto-clients`;
//! `scripts/test` installs them): the broker as a child process with a TLS
//! listener on a free 127.0.0.1 port, and `mosquitto_pub` as an MQTT
//! client not written here.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use ha_test_support::mosquitto::{self, Broker};
//!
//! if !mosquitto::installed(&["mosquitto", "mosquitto_pub"]) {
//!     return; // skipped, loudly; under `CI` the check fails instead
//! }
//! let broker = Broker::start(&[("dev-1", "c0ffee")]);
//! let mut args = broker.client_args(Some(("dev-1", "c0ffee")));
//! args.extend(["-t", "readings/dev-1", "-l"].map(String::from));
//! let (ok, out) = mosquitto::run_pub(&args, &["{}".into()], Duration::from_secs(5));
//! assert!(ok, "{out}");
//! ```

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a started broker may take to listen, or a client to finish
/// when it is expected to (a hang bound on a busy machine).
pub const LIMIT: Duration = Duration::from_secs(30);

/// Whether every one of `tools` is installed. When one is missing: panics
/// if `CI` is set (a missing tool in CI is a failure, never a skip),
/// otherwise prints that the test is skipped and returns `false`.
pub fn installed(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| !on_path(t) && !Path::new(&format!("/usr/sbin/{t}")).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{missing:?} not installed but CI is set: run the tests through scripts/test \
         (it installs mosquitto and mosquitto-clients)"
    );
    eprintln!("SKIPPED: {missing:?} not installed (apt-get install mosquitto mosquitto-clients)");
    false
}

/// `name`'s path: Debian puts the broker in /usr/sbin, often not on a
/// user's PATH.
pub fn binary(name: &str) -> String {
    let sbin = format!("/usr/sbin/{name}");
    if Path::new(&sbin).exists() {
        sbin
    } else {
        name.to_owned()
    }
}

fn on_path(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts `mosquitto_pub` with `args`, writes `lines` to its stdin (one
/// message each with `-l`) and closes it; stdout and stderr are piped.
pub fn spawn_pub(args: &[String], lines: &[String]) -> Child {
    let mut child = Command::new("mosquitto_pub")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start mosquitto_pub: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        for line in lines {
            // A client that already exited is the test's to notice.
            let _ = writeln!(stdin, "{line}");
        }
    }
    child
}

/// What `child` wrote to stdout and stderr (all of it once it exited).
pub fn output(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(out) = child.stdout.as_mut() {
        let _ = out.read_to_string(&mut text);
    }
    if let Some(err) = child.stderr.as_mut() {
        let _ = err.read_to_string(&mut text);
    }
    text
}

/// Waits up to `limit` for `child` to exit on its own: its success and
/// output. Panics (after killing it) if it does not.
pub async fn finish(mut child: Child, limit: Duration) -> (bool, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.success(), output(&mut child));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mosquitto_pub did not finish: {}", output(&mut child));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `mosquitto_pub` with `args` and `lines` to its end, stopping it
/// (SIGTERM) after `stop_after`: a 3.1.1 client reconnects and resends a
/// refused message for ever. Its success and output.
pub fn run_pub(args: &[String], lines: &[String], stop_after: Duration) -> (bool, String) {
    let child = spawn_pub(args, lines);
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if rx.recv_timeout(stop_after).is_err() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = tx.send(());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A `mosquitto` broker with a TLS listener for `localhost` (a fresh test
/// CA), in a directory of its own; killed and removed when dropped.
pub struct Broker {
    /// Its configuration, certificates and `mosquitto.log`.
    pub dir: PathBuf,
    /// Its port on 127.0.0.1 (kept across [`Broker::run`]).
    pub port: u16,
    child: Option<Child>,
}

impl Broker {
    /// Starts a broker; with `users`, only they (user name, password) may
    /// connect, otherwise anyone may.
    pub fn start(users: &[(&str, &str)]) -> Broker {
        let dir = std::env::temp_dir().join(format!(
            "ha-mosquitto-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, cert, key) = certificates();
        std::fs::write(dir.join("ca.pem"), ca).unwrap();
        std::fs::write(dir.join("server.pem"), cert).unwrap();
        std::fs::write(dir.join("server.key"), key).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.display();
        let mut conf = format!(
            "user root\nper_listener_settings false\npersistence false\nlistener {port} 127.0.0.1\n\
             cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n"
        );
        if users.is_empty() {
            conf.push_str("allow_anonymous true\n");
        } else {
            let file = dir.join("passwords");
            for (i, (user, pass)) in users.iter().enumerate() {
                let mut cmd = Command::new(binary("mosquitto_passwd"));
                if i == 0 {
                    cmd.arg("-c");
                }
                let ok = cmd
                    .arg("-b")
                    .arg(&file)
                    .args([user, pass])
                    .status()
                    .unwrap();
                assert!(ok.success(), "mosquitto_passwd {user}");
            }
            conf.push_str(&format!(
                "allow_anonymous false\npassword_file {d}/passwords\n"
            ));
        }
        std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
        let mut broker = Broker {
            dir,
            port,
            child: None,
        };
        broker.run();
        broker
    }

    /// (Re)starts the broker process on its port; returns once it accepts
    /// connections.
    pub fn run(&mut self) {
        let log = std::fs::File::create(self.dir.join("mosquitto.log")).unwrap();
        let child = Command::new(binary("mosquitto"))
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start mosquitto: {e}"));
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < LIMIT,
                "mosquitto did not listen: {}",
                std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no goodbye to anyone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The CA that signed the broker's certificate (PEM file).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `mqtts://localhost:<port>`.
    pub fn url(&self) -> String {
        format!("mqtts://localhost:{}", self.port)
    }

    /// The arguments of `mosquitto_pub`/`mosquitto_sub` to reach this
    /// broker over TLS with MQTT 5 and QoS 1, as `login` if given.
    pub fn client_args(&self, login: Option<(&str, &str)>) -> Vec<String> {
        let mut a = vec![
            "-h".into(),
            "localhost".into(),
            "-p".into(),
            self.port.to_string(),
            "--cafile".into(),
            self.ca().display().to_string(),
            "-V".into(),
            "mqttv5".into(),
            "-q".into(),
            "1".into(),
        ];
        if let Some((user, pass)) = login {
            a.extend(["-u", user, "-P", pass].map(String::from));
        }
        a
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA, and a certificate for `localhost` signed by it (PEM: CA, cert, key).
fn certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // Distinct names: OpenSSL (mosquitto's clients) takes a leaf named like
    // its issuer for self-signed.
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ha-pipeline test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}
