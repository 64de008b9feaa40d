//! The command line as an operator meets it: exit codes of `explain` and
//! `render`, `events --json --since --follow` against a database the real
//! daemon wrote, and the generated man pages and shell completions.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ConfigDir, Pxed};

const RULES: &str =
    "[[rule]]\nname = \"nec\"\nkernel = \"k\"\nmatch = { product = \"Express5800/*\" }\n";

fn pxed(args: &[&str], dir: &ConfigDir) -> (i32, String, String) {
    let out = Command::new(common::pxed_bin())
        .args(args)
        .arg("--config")
        .arg(dir.config())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn explain_exits_1_when_no_rule_matches() {
    let dir = ConfigDir::new("", RULES);
    dir.asset("k", b"kernel");
    let (code, out, _) = pxed(
        &[
            "explain",
            "--mac",
            "52:54:00:00:00:01",
            "--product",
            "Express5800/R120h",
        ],
        &dir,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("nec"), "{out}");
    let (code, out, _) = pxed(
        &[
            "explain",
            "--mac",
            "52:54:00:00:00:01",
            "--product",
            "PowerEdge R640",
        ],
        &dir,
    );
    assert_eq!(code, 1, "no rule matches, yet exit 0:\n{out}");
}

#[test]
fn render_requires_a_mac() {
    let dir = ConfigDir::new("", RULES);
    let (code, out, err) = pxed(&["render", "--product", "Express5800/R120h"], &dir);
    assert_eq!(code, 2, "{out}");
    assert!(out.is_empty(), "rendered without a MAC:\n{out}");
    assert!(err.contains("--mac"), "{err}");
}

/// The response to a GET, which must be a 200.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.0 200"), "{body}");
    body
}

/// `pxed events --json` lines, once at least `n` are recorded.
fn events_json(dir: &ConfigDir, extra: &[&str], n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut args = vec!["events", "--json"];
        args.extend_from_slice(extra);
        let (code, out, err) = pxed(&args, dir);
        if code == 0 && out.lines().count() >= n || Instant::now() > deadline {
            assert_eq!(code, 0, "{err}");
            return out
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `pxed events --json --follow` running, and its output lines.
fn follow_json(
    dir: &ConfigDir,
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let mut follow = Command::new(common::pxed_bin())
        .args(["events", "--json", "--follow", "--config"])
        .arg(dir.config())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    (follow, lines)
}

#[test]
fn events_as_json_since_and_followed() {
    let dir = ConfigDir::new("http_listen = \"127.0.0.1:0\"\ntftp_listen = \"\"", RULES);
    let daemon = Pxed::start(&dir.config(), None);
    let addr = daemon.http();
    get(
        addr,
        "/ipxe?product=Express5800%2FR120h&mac=52:54:00:00:00:01",
    );
    let all = events_json(&dir, &[], 1);
    assert_eq!(all.len(), 1, "{all:?}");
    let e = &all[0];
    assert_eq!(e["mac"], "52:54:00:00:00:01");
    assert_eq!(e["stage"], "script");
    assert_eq!(e["rule"], "nec");
    assert_eq!(e["product"], "Express5800/R120h");
    assert!(
        humantime::parse_rfc3339(e["at"].as_str().unwrap()).is_ok(),
        "{e}"
    );
    assert_eq!(events_json(&dir, &["--since", "1h"], 1).len(), 1);
    assert!(events_json(&dir, &["--since", "2999-01-01T00:00:00Z"], 0).is_empty());

    // --follow prints what is recorded after it started, as it comes.
    let (mut follow, mut lines) = follow_json(&dir);
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("52:54:00:00:00:01"), "{first}");
    get(
        addr,
        "/ipxe?product=Express5800%2FR120h&mac=52:54:00:00:00:02",
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(lines.next());
    });
    let next = rx.recv_timeout(Duration::from_secs(5));
    let _ = follow.kill();
    let _ = follow.wait();
    let next = next
        .expect("--follow printed nothing new")
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&next).unwrap();
    assert_eq!(v["mac"], "52:54:00:00:00:02", "{next}");
}

/// On PostgreSQL several servers insert events at once, and a row's id is
/// drawn before its transaction commits: `--follow` must print a row that
/// appears after a higher id was already printed. Here one psql session
/// holds an insert open while another commits a later one.
#[test]
fn events_follow_on_postgres_prints_rows_committed_out_of_id_order() {
    let what = "events --follow on PostgreSQL";
    if !common::pg::available(what) {
        return;
    }
    let pg = common::pg::Postgres::start();
    let dir = ConfigDir::new(
        "http_listen = \"127.0.0.1:0\"\ntftp_listen = \"\"",
        &format!("{}{RULES}", pg.section("pxed")),
    );
    // The schema, as the daemon would create it at start.
    let (code, _, err) = pxed(&["events"], &dir);
    assert_eq!(code, 0, "{err}");
    let insert = |mac: &str| {
        format!("INSERT INTO events (at, last_at, mac, stage, outcome, detail) VALUES (1, 1, '{mac}', 'script', 'ok', 'test');")
    };
    let (mut follow, mut lines) = follow_json(&dir);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Some(Ok(line)) = lines.next() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if tx
                .send(v["mac"].as_str().unwrap_or("").to_string())
                .is_err()
            {
                break;
            }
        }
    });
    // Give --follow time to take its starting point.
    std::thread::sleep(Duration::from_millis(700));
    let mut held = pg.session("pxed");
    let mut held_in = held.stdin.take().unwrap();
    let mut held_out = BufReader::new(held.stdout.take().unwrap()).lines();
    writeln!(
        held_in,
        "BEGIN;\n{}\nSELECT 'drawn';",
        insert("52:54:00:00:0a:01")
    )
    .unwrap();
    assert_eq!(held_out.next().unwrap().unwrap(), "drawn");
    pg.psql("pxed", &insert("52:54:00:00:0a:02"));
    let seen = rx.recv_timeout(Duration::from_secs(5));
    writeln!(held_in, "COMMIT;\nSELECT 'committed';").unwrap();
    assert_eq!(held_out.next().unwrap().unwrap(), "committed");
    let late = rx.recv_timeout(Duration::from_secs(5));
    drop(held_in);
    let _ = held.wait();
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(
        seen.as_deref(),
        Ok("52:54:00:00:0a:02"),
        "the later id, committed first"
    );
    assert_eq!(
        late.as_deref(),
        Ok("52:54:00:00:0a:01"),
        "the earlier id, committed after it was passed"
    );
    assert!(
        rx.recv_timeout(Duration::from_millis(600)).is_err(),
        "nothing printed twice"
    );
}

/// A lease file as pxed left it before boot events moved to a file of
/// their own (issue 21): the event and machine-state tables of the release
/// before beside the leases, one machine seen, with a local-disk override.
fn old_lease_file(path: &std::path::Path) {
    let db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch(
        "CREATE TABLE leases (ip INTEGER PRIMARY KEY, client BLOB NOT NULL, mac TEXT NOT NULL,
                              expires INTEGER NOT NULL, state INTEGER NOT NULL);
         CREATE TABLE events (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, last_at INTEGER NOT NULL,
                              count INTEGER NOT NULL DEFAULT 1, mac TEXT, ip TEXT, stage TEXT NOT NULL,
                              outcome TEXT NOT NULL, rule TEXT, arch TEXT, product TEXT, detail TEXT NOT NULL,
                              server TEXT);
         CREATE TABLE machines (mac TEXT PRIMARY KEY, first_at INTEGER NOT NULL, last_at INTEGER NOT NULL,
                                stage TEXT NOT NULL, outcome TEXT NOT NULL, ip TEXT, rule TEXT, arch TEXT,
                                product TEXT, serial TEXT, manufacturer TEXT, uuid TEXT);
         CREATE TABLE machine_state (mac TEXT PRIMARY KEY, labels TEXT NOT NULL DEFAULT '{}',
                                     override_kind TEXT, override_rule TEXT, override_by TEXT,
                                     override_at INTEGER, boots INTEGER NOT NULL DEFAULT 0,
                                     tokens TEXT NOT NULL DEFAULT '');
         INSERT INTO events (at, last_at, mac, stage, outcome, rule, detail)
             VALUES (1764000000000, 1764000000000, '52:54:00:00:00:09', 'script', 'ok', 'nec', 'iPXE script');
         INSERT INTO machines (mac, first_at, last_at, stage, outcome, rule)
             VALUES ('52:54:00:00:00:09', 1764000000000, 1764000000000, 'script', 'ok', 'nec');
         INSERT INTO machine_state (mac, override_kind, override_by, override_at)
             VALUES ('52:54:00:00:00:09', 'local', 'ops', 1764000000000);",
    )
    .unwrap();
}

#[test]
fn an_upgrade_keeps_the_events_and_overrides_recorded_in_the_lease_file() {
    let dir = ConfigDir::new("http_listen = \"127.0.0.1:0\"\ntftp_listen = \"\"", RULES);
    let leases = dir.path().join("pxed-leases.sqlite");
    old_lease_file(&leases);
    // Before the daemon restarts, the commands read the old file.
    let before = events_json(&dir, &["--mac", "52:54:00:00:00:09"], 1);
    assert_eq!(before.len(), 1, "{before:?}");
    let daemon = Pxed::start(&dir.config(), None);
    daemon.wait_log("moved out of the lease database", Duration::from_secs(5));
    assert!(dir.path().join("pxed-events.sqlite").exists());
    let old = rusqlite::Connection::open(&leases).unwrap();
    let left: i64 = old
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('events', 'machines', 'machine_state')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0, "tables left in the lease file");
    // The override moved with it: the machine boots its local disk.
    let script = get(
        daemon.http(),
        "/ipxe?product=Express5800%2FR120h&mac=52:54:00:00:00:09",
    );
    assert!(script.contains("sanboot"), "{script}");
    // And the old event is still in its history, now beside the new one.
    let after = events_json(&dir, &["--mac", "52:54:00:00:00:09"], 2);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        after
            .iter()
            .any(|e| e["at"].as_str().unwrap().starts_with("2025-11-24")),
        "{after:?}"
    );
}

#[test]
fn man_pages_and_completions_are_generated() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(common::pxed_bin())
        .args(["generate", "--out"])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success());
    let man = std::fs::read_to_string(out.path().join("man/pxed.1")).unwrap();
    assert!(man.contains(".TH pxed 1"), "{man}");
    let serve = std::fs::read_to_string(out.path().join("man/pxed-serve.1")).unwrap();
    assert!(serve.contains("log\\-format"), "{serve}");
    let bash = std::fs::read_to_string(out.path().join("completions/pxed.bash")).unwrap();
    assert!(
        bash.contains("--log-format") && bash.contains("explain"),
        "{bash}"
    );
    for f in ["completions/_pxed", "completions/pxed.fish"] {
        assert!(out.path().join(f).exists(), "{f}");
    }
    // man(1) can format it (groff), when installed.
    if Command::new("sh")
        .args(["-c", "command -v groff"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let rendered = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww"])
            .arg(out.path().join("man/pxed.1"))
            .output()
            .unwrap();
        assert!(rendered.status.success());
        assert!(String::from_utf8_lossy(&rendered.stdout).contains("explain"));
    }
}
