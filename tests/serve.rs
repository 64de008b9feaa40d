//! `pxed serve` start-up: a port it cannot bind is one clear line naming the
//! port and the remedy, and the process exits non-zero; with a JSON log that
//! line is JSON too.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::ConfigDir;

fn serve_error(dir: &ConfigDir, user: Option<&str>) -> String {
    let mut cmd = match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(common::pxed_bin());
            c
        }
        None => Command::new(common::pxed_bin()),
    };
    let out = cmd
        .args(["serve", "--config"])
        .arg(dir.config())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("pxed: ")).collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{stderr}");
    errors[0].to_string()
}

#[test]
fn port_in_use_is_one_clear_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = ConfigDir::new(
        &format!("http_listen = \"127.0.0.1:{port}\"\ntftp_listen = \"\""),
        "[[rule]]\nname = \"d\"\nkernel = \"k\"\n",
    );
    let line = serve_error(&dir, None);
    assert!(
        line.contains(&format!("127.0.0.1:{port}")) && line.contains("http_listen"),
        "{line}"
    );
    assert!(
        line.contains("in use") || line.contains("another process"),
        "{line}"
    );
}

/// `--log-format json` (and `PXED_LOG_FORMAT=json`): a start that fails
/// still writes only JSON lines, the last one the error, at level ERROR.
#[test]
fn a_failed_start_is_logged_as_json() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let in_use = ConfigDir::new(
        &format!("http_listen = \"127.0.0.1:{port}\"\ntftp_listen = \"\""),
        "[[rule]]\nname = \"d\"\nkernel = \"k\"\n",
    );
    let broken = ConfigDir::new("", "[[rule]\nname = \"d\"\n");
    let missing = in_use.config().with_file_name("no-such.toml");
    let cases = [
        (in_use.config(), true, "already in use"),
        (broken.config(), false, "unclosed array table"),
        (missing, true, "no such file"),
    ];
    for (config, by_flag, reason) in cases {
        let mut cmd = Command::new(common::pxed_bin());
        cmd.arg("serve");
        if by_flag {
            cmd.args(["--log-format", "json"]);
        } else {
            cmd.env("PXED_LOG_FORMAT", "json");
        }
        let out = cmd.arg("--config").arg(&config).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", config.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<serde_json::Value> = stderr
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let last = lines.last().unwrap_or_else(|| panic!("no log line"));
        assert_eq!(last["level"], "ERROR", "{last}");
        let message = last["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{reason:?} not in {last}");
    }
}

#[test]
fn privileged_port_without_root_names_the_remedy() {
    if !common::privileged("binding port 80 as an unprivileged user")
        || !common::have_tool("runuser", "privileged port test")
    {
        return;
    }
    let dir = ConfigDir::new(
        "http_listen = \"127.0.0.1:80\"\ntftp_listen = \"\"",
        "[[rule]]\nname = \"d\"\nkernel = \"k\"\n",
    );
    // The unprivileged user must be able to read the config.
    for p in [dir.path().to_path_buf(), dir.path().join("boot-templates")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let line = serve_error(&dir, Some("nobody"));
    assert!(line.contains("127.0.0.1:80"), "{line}");
    assert!(
        line.contains("cap_net_bind_service") && line.contains("root"),
        "{line}"
    );
}

/// The admin pages have no authentication: off loopback, a warning nobody
/// misses; on loopback (the default), none.
#[test]
fn admin_listener_off_loopback_is_warned_about() {
    let rules = "[[rule]]\nname = \"d\"\nkernel = \"k\"\n";
    let dir = ConfigDir::new(
        "http_listen = \"127.0.0.1:0\"\ntftp_listen = \"\"\nadmin_listen = \"0.0.0.0:0\"",
        rules,
    );
    let pxed = common::Pxed::start(&dir.config(), None);
    let log = pxed.wait_log("ADMIN LISTENER EXPOSED", std::time::Duration::from_secs(5));
    assert!(log.contains("no authentication"), "{log}");
    let dir = ConfigDir::new("http_listen = \"127.0.0.1:0\"\ntftp_listen = \"\"", rules);
    let pxed = common::Pxed::start(&dir.config(), None);
    let log = pxed.wait_log("pxed started", std::time::Duration::from_secs(5));
    assert!(!log.contains("EXPOSED"), "{log}");
    assert!(
        log.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{log}"
    );
}

/// `Type=notify`: pxed tells systemd READY=1 on `$NOTIFY_SOCKET` once every
/// listener is bound (HTTP accepts by then), and STOPPING=1 on SIGTERM.
#[test]
fn readiness_is_notified_after_the_listeners_are_bound() {
    let dir = ConfigDir::new(
        "http_listen = \"127.0.0.1:0\"\ntftp_listen = \"127.0.0.1:0\"",
        "[[rule]]\nname = \"d\"\nkernel = \"k\"\n",
    );
    let sock_dir = tempfile::tempdir().unwrap();
    let path = sock_dir.path().join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut cmd = Command::new(common::pxed_bin());
    cmd.args(["serve", "--config"])
        .arg(dir.config())
        .env("NOTIFY_SOCKET", &path);
    let pxed = common::Pxed::spawn(cmd);
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("no notification");
    assert_eq!(&buf[..n], b"READY=1\n");
    pxed.wait_log("pxed started", std::time::Duration::from_secs(5));
    std::net::TcpStream::connect(pxed.http()).expect("ready but not accepting");
    pxed.signal("TERM");
    let n = sock.recv(&mut buf).expect("no STOPPING");
    assert_eq!(&buf[..n], b"STOPPING=1\n");
}
