//! Shared test harness: start the real `pxed` binary on a config written for
//! the test, wait for its listeners, read its log, stop it by PID; and create
//! network namespaces that are removed when the test ends.
#![allow(dead_code)]

pub mod api;
pub mod dhcp;
pub mod dhcp6;
pub mod http;
pub mod lab;
pub mod pg;
pub mod screen;
pub mod tftp;
pub mod webdriver;
pub mod wire;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn pxed_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pxed"))
}

/// A temporary config directory: `machines.toml`, `assets/`, and a copy of the
/// shipped `boot-templates/` that a test may edit.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    /// `server` is the `[server]` body (listen addresses); `rest` the rules.
    pub fn new(server: &str, rest: &str) -> ConfigDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("assets")).unwrap();
        let templates = dir.path().join("boot-templates");
        std::fs::create_dir(&templates).unwrap();
        for entry in std::fs::read_dir(repo().join("boot-templates")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), templates.join(entry.file_name())).unwrap();
        }
        let c = ConfigDir { dir };
        c.write_config(server, rest);
        c
    }

    pub fn write_config(&self, server: &str, rest: &str) {
        // No search paths unless the test sets them: only the test's files.
        let search = if server.contains("search_paths") {
            ""
        } else {
            "search_paths = []\n"
        };
        // Tests run in parallel: the admin listener's fixed default port would clash.
        let admin = if server.contains("admin_listen") {
            ""
        } else {
            "admin_listen = \"127.0.0.1:0\"\n"
        };
        let text = format!("[server]\n{search}{admin}{server}\n\n{rest}\n");
        // bench/fuzz-seeds.sh collects every config the tests write as seeds
        // for the `config` fuzz target.
        if let Some(dir) = std::env::var_os("PXED_SAVE_CONFIGS") {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&text, &mut hasher);
            let name = format!("test-{:016x}.toml", std::hash::Hasher::finish(&hasher));
            let _ = std::fs::write(Path::new(&dir).join(name), &text);
        }
        std::fs::write(self.config(), text).unwrap();
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("machines.toml")
    }

    pub fn asset(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join("assets").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

/// Appended to a daemon's log when it closes its stderr (it exited).
const EXITED: &str = "<exited>\n";

/// A background process whose stderr is collected into a log that tests can
/// wait on. Stopped (by its own PID) when dropped.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
    name: String,
}

impl Daemon {
    pub fn spawn(mut cmd: Command, name: &str) -> Daemon {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let echo = std::env::var_os("PXED_TEST_ECHO")
            .is_some()
            .then(|| name.to_string());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(name) = &echo {
                    eprintln!("[{name}] {line}");
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
            sink.lock().unwrap().push_str(EXITED);
        });
        Daemon {
            child,
            log,
            name: name.to_string(),
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`; panics with the log if the
    /// process exits or the time runs out first.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            if log.ends_with(EXITED) || Instant::now() > deadline {
                panic!(
                    "{} did not log {needle:?} within {timeout:?}; log:\n{log}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `pxed serve`.
pub struct Pxed {
    daemon: Daemon,
}

impl Pxed {
    /// Starts `pxed serve --config <config>`, optionally inside a network
    /// namespace, and waits until it logs that it is listening.
    pub fn start(config: &Path, netns: Option<&str>) -> Pxed {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(pxed_bin());
                c
            }
            None => Command::new(pxed_bin()),
        };
        cmd.arg("serve").arg("--config").arg(config);
        Pxed::spawn(cmd)
    }

    /// Starts `cmd` (a `pxed serve …` the test built: another working
    /// directory, user or environment) and waits until it listens.
    pub fn spawn(mut cmd: Command) -> Pxed {
        cmd.env(
            "PXED_LOG",
            std::env::var("PXED_LOG").unwrap_or_else(|_| {
                "debug,handlebars=info,hyper=info,notify=info,tokio_postgres=warn,deadpool=error".into()
            }),
        );
        let p = Pxed {
            daemon: Daemon::spawn(cmd, "pxed"),
        };
        p.wait_log("http listening", Duration::from_secs(20));
        p
    }

    pub fn log(&self) -> String {
        self.daemon.log()
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        self.daemon.wait_log(needle, timeout)
    }

    /// The address a listener logged as `<what> listening addr=<addr>` (or,
    /// with `--log-format json`, `"addr":"<addr>"`).
    pub fn addr(&self, what: &str) -> SocketAddr {
        let log = self.wait_log(&format!("{what} listening"), Duration::from_secs(10));
        let line = log
            .lines()
            .find(|l| l.contains(&format!("{what} listening")))
            .unwrap();
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
            return json["addr"].as_str().unwrap().parse().unwrap();
        }
        let addr = line
            .split("addr=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        addr.parse().unwrap()
    }

    pub fn http(&self) -> SocketAddr {
        self.addr("http")
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn is_running(&mut self) -> bool {
        self.daemon.is_running()
    }
}

/// `pxed check --config <config>`: whether it passed, and what it printed
/// (stdout, then stderr).
pub fn pxed_check(config: &Path) -> (bool, String) {
    let out = Command::new(pxed_bin())
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Whether privileged tests (root, network namespaces, QEMU) can run here. When
/// they cannot, the test prints `skipped: <reason>` and returns early, unless
/// `PXED_REQUIRE_PRIVILEGED=1` (set by CI), which turns the skip into a failure.
pub fn privileged(what: &str) -> bool {
    let reason = if !is_root() {
        Some("not running as root".to_string())
    } else if !Command::new("ip")
        .args(["netns", "list"])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
    {
        Some("`ip netns` is not available".to_string())
    } else {
        None
    };
    match reason {
        None => true,
        Some(r) => skip(what, &r),
    }
}

/// Prints `skipped: <what>: <reason>` and returns false, or panics when
/// `PXED_REQUIRE_PRIVILEGED=1` (CI), where every skip is a failure.
pub fn skip(what: &str, reason: &str) -> bool {
    if std::env::var("PXED_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{what}: cannot run ({reason}) and PXED_REQUIRE_PRIVILEGED=1");
    }
    println!("skipped: {what}: {reason}");
    false
}

/// Whether `program` is on PATH; with PXED_REQUIRE_PRIVILEGED=1 a missing tool fails.
pub fn have_tool(program: &str, what: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    found || skip(what, &format!("`{program}` is not installed"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

/// A network namespace named after the test, deleted when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = format!("pxed-{prefix}-{}", std::process::id());
        // A namespace left over from a killed run with the same PID.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        sh(&format!("ip netns add {name}"));
        sh(&format!("ip -n {name} link set lo up"));
        Netns { name }
    }

    /// Runs `f` on a thread that has entered the namespace (`setns`), e.g. to
    /// send hand-built packets from a host in the lab.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(move || {
                let ns = std::fs::File::open(&path).expect("open netns");
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("thread in the namespace")
        })
    }

    /// Runs a shell command inside the namespace; panics if it fails.
    pub fn sh(&self, cmd: &str) -> String {
        sh(&format!(
            "ip netns exec {} sh -c '{}'",
            self.name,
            cmd.replace('\'', r"'\''")
        ))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces joined by a veth pair: `srv` holds `vs` with `server_cidr`
/// (where pxed runs), `cli` holds `vc`, up and without an address. Broadcasts
/// from one side are real broadcasts on the other.
pub struct NetnsPair {
    pub srv: Netns,
    pub cli: Netns,
}

impl NetnsPair {
    pub fn new(tag: &str, server_cidr: &str) -> NetnsPair {
        let srv = Netns::new(&format!("{tag}s"));
        let cli = Netns::new(&format!("{tag}c"));
        sh(&format!(
            "ip -n {s} link add vs type veth peer name vc netns {c} && \
             ip -n {s} addr add {server_cidr} dev vs && ip -n {s} link set vs up && \
             ip -n {c} link set vc up",
            s = srv.name,
            c = cli.name
        ));
        NetnsPair { srv, cli }
    }

    /// Runs `f` on a thread inside the client namespace (threads it starts
    /// are in that namespace too).
    pub fn client<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.cli.run(f)
    }
}

/// A `/proc/<pid>/status` field in KiB, e.g. `VmHWM` (peak resident set).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The value of the sample `name{labels…}` in a Prometheus text exposition
/// (0 when absent: a counter that never moved is not printed).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Raises this process's soft open-files limit to at least `n` (up to the hard
/// limit): a test that holds thousands of sockets needs more than the common
/// default of 1,024.
pub fn raise_open_files_limit(n: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < n {
        setrlimit(Resource::RLIMIT_NOFILE, n.min(hard), hard).unwrap();
    }
}

/// Runs a shell command; panics with its output if it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `pxed <args>` to completion; its standard output, or a panic with
/// its standard error if it failed.
pub fn pxed_ok(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(pxed_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "pxed {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
