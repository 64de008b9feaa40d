//! The admin listener: status page, rule preview and `/metrics`, over real
//! sockets; and the same pages in headless Chromium, with screenshots.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{ConfigDir, Pxed};

const SERVER: &str =
    "http_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ntftp_listen = \"\"";
const RULES: &str = r#"
[defaults]
kernel = "debian/vmlinuz"
[[rule]]
name = "default"
[[rule]]
name = "nec"
match = { product = "Express5800/*" }
args = "pxed.rule=nec"
[[rule]]
name = "menu"
match = { mac = "52:54:00:00:00:10" }
boot = "pxelinux"
"#;

fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{path}: {out}");
    out.split_once("\r\n\r\n").unwrap().1.to_string()
}

fn start() -> (ConfigDir, Pxed) {
    let dir = ConfigDir::new(SERVER, RULES);
    let pxed = Pxed::start(&dir.config(), None);
    (dir, pxed)
}

#[test]
fn metrics_parse_and_count_what_happened() {
    let (dir, pxed) = start();
    let (http, admin) = (pxed.http(), pxed.addr("admin"));
    get(http, "/ipxe?product=Express5800%2Fx&mac=52:54:00:00:00:01");
    get(http, "/ipxe?mac=52:54:00:00:00:02");
    std::fs::write(dir.path().join("boot-templates/linux.ipxe"), "{{#if}}").unwrap();
    pxed.wait_log("reload rejected", Duration::from_secs(5));

    let text = get(admin, "/metrics");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    assert_eq!(
        value("pxed_requests_total", Some(("endpoint", "ipxe"))),
        2.0,
        "{text}"
    );
    assert_eq!(
        value("pxed_reloads_total", Some(("result", "rejected"))),
        1.0,
        "{text}"
    );
    assert_eq!(value("pxed_config_rules", None), 3.0, "{text}");
    assert!(
        text.contains("pxed_render_duration_seconds_bucket"),
        "{text}"
    );
    assert_eq!(
        value("pxed_config_last_reload_successful", None),
        0.0,
        "{text}"
    );
}

/// The exposition as Prometheus and a browser take it, and every name by the
/// Prometheus naming conventions: `_total` only and always on counters, base
/// units, no mixed meanings under one name, `pxed_build_info`, `process_*`.
#[test]
fn metrics_follow_the_prometheus_conventions() {
    let (_dir, pxed) = start();
    let (http, admin) = (pxed.http(), pxed.addr("admin"));
    get(http, "/ipxe?product=Express5800%2Fx&mac=52:54:00:00:00:01");
    let raw = |accept: &str| {
        let mut s = TcpStream::connect(admin).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\n{accept}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        (head.to_ascii_lowercase(), body.to_string())
    };
    // A browser (no OpenMetrics in Accept) gets text it shows, not a download.
    let (head, text) = raw("Accept: text/html,*/*;q=0.8\r\n");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let (head, om) = raw("Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n");
    assert!(
        head.contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    text_format_0_0_4(&text);

    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text format");
    let name_ok = |n: &str| {
        (n.starts_with("pxed_") || n.starts_with("process_"))
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    // OpenMetrics: a TYPE names the family, the samples add suffixes.
    let mut types = std::collections::HashMap::new();
    for line in om.lines().filter(|l| l.starts_with("# TYPE ")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (name, kind) = (f[2], f[3]);
        assert!(name_ok(name), "{line}");
        assert!(
            !name.ends_with("_total"),
            "a TYPE names the family, not the sample: {line}"
        );
        for banned in ["in_progress", "_age_seconds", "_ms", "_milliseconds"] {
            assert!(!name.contains(banned), "{line}");
        }
        types.insert(name.to_string(), kind.to_string());
    }
    for sample in &scrape.samples {
        let m = sample.metric.as_str();
        assert!(name_ok(m), "{m}");
        let family = types
            .keys()
            .filter(|f| {
                m == f.as_str()
                    || m.strip_prefix(f.as_str())
                        .is_some_and(|r| r.starts_with('_'))
            })
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("{m} has no TYPE"));
        match types[family].as_str() {
            "counter" => assert_eq!(m, format!("{family}_total"), "counter sample"),
            "gauge" => assert_eq!(m, family, "gauge sample"),
            // prometheus-parse folds the buckets into one sample.
            "histogram" => assert!(
                ["", "_sum", "_count"]
                    .iter()
                    .any(|s| m == format!("{family}{s}")),
                "{m}"
            ),
            other => panic!("{m}: unexpected type {other}"),
        }
        // A `state` label splits a whole into parts that add up: never the whole itself.
        if let Some(state) = sample.labels.get("state") {
            assert!(
                !["size", "total", "all"].contains(&state),
                "{m} state={state}"
            );
        }
    }
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    let build = scrape
        .samples
        .iter()
        .find(|s| s.metric == "pxed_build_info")
        .expect("pxed_build_info");
    assert_eq!(build.labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(value("pxed_build_info"), 1.0);
    assert_eq!(value("pxed_config_last_reload_successful"), 1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let loaded = value("pxed_config_last_reload_success_timestamp_seconds");
    assert!(loaded <= now && loaded > now - 600.0, "{loaded} vs {now}");
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_cpu_seconds_total") > 0.0);
    assert!(value("process_open_fds") > 3.0);
    let started = value("process_start_time_seconds");
    assert!(started <= now && started > now - 600.0, "{started}");
    // This scrape's own connection is open.
    assert!(
        text.contains("pxed_http_connections{listener=\"admin\"} 1"),
        "{text}"
    );
    assert!(text.contains("pxed_tftp_transfers 0") || !types.contains_key("pxed_tftp_transfers"));
}

/// Prometheus text format 0.0.4 as its own parsers read it (expfmt,
/// `promtool check metrics`): every sample's name is the name of a `# TYPE`
/// line before it, or for a histogram that name plus `_bucket`, `_sum` or
/// `_count`; so a counter's TYPE names `x_total`. Else the samples are
/// untyped and without help. No OpenMetrics-only `# EOF` or `# UNIT`.
fn text_format_0_0_4(text: &str) {
    let mut types: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for line in text.lines() {
        assert!(line != "# EOF" && !line.starts_with("# UNIT"), "{line}");
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(types.insert(name, kind).is_none(), "second TYPE: {line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{line}");
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap();
        let typed = types.contains_key(name)
            || ["_bucket", "_sum", "_count"].iter().any(|s| {
                name.strip_suffix(s)
                    .is_some_and(|f| matches!(types.get(f), Some(&"histogram" | &"summary")))
            });
        assert!(
            typed,
            "{name} has no TYPE line of its own name before it:\n{text}"
        );
    }
}

#[test]
fn status_and_preview_pages() {
    let (dir, pxed) = start();
    let admin = pxed.addr("admin");
    let status = get(admin, "/");
    for want in [
        "machines.toml",
        "linux.ipxe",
        "nec",
        "product &quot;Express5800/*&quot;",
        "any machine",
        "None since",
    ] {
        assert!(status.contains(want), "{want} missing:\n{status}");
    }
    std::fs::write(dir.path().join("boot-templates/linux.ipxe"), "{{#if}}").unwrap();
    pxed.wait_log("reload rejected", Duration::from_secs(5));
    let status = get(admin, "/");
    assert!(
        status.contains("linux.ipxe:1:") && status.contains("kept serving"),
        "{status}"
    );

    let preview = get(
        admin,
        "/preview?product=Express5800%2F%3Cscript%3E&mac=52:54:00:00:00:01",
    );
    assert!(
        preview.contains("matched rule &quot;nec&quot;"),
        "{preview}"
    );
    assert!(preview.contains("pxed.rule=nec"), "{preview}");
    assert!(
        !preview.contains("<script>"),
        "client values are escaped in HTML: {preview}"
    );
    let menu = get(admin, "/preview?mac=52:54:00:00:00:10");
    assert!(
        menu.contains("pxelinux menu") && menu.contains("UI menu.c32") && !menu.contains("SERIAL"),
        "{menu}"
    );
}

/// The preview shows the base URL a machine would be told, never the
/// unspecified listen address pxed binds to.
#[test]
fn preview_shows_the_address_machines_are_told() {
    let preview_of = |server: &str| {
        let dir = ConfigDir::new(server, RULES);
        let pxed = Pxed::start(&dir.config(), None);
        get(pxed.addr("admin"), "/preview?mac=52:54:00:00:00:01")
    };
    let admin = "admin_listen = \"127.0.0.1:0\"\ntftp_listen = \"\"";

    let wildcard = preview_of(&format!("http_listen = \"0.0.0.0:0\"\n{admin}"));
    assert!(!wildcard.contains("0.0.0.0"), "{wildcard}");
    assert!(
        wildcard.contains("http://&lt;pxed-address&gt;:0/") && wildcard.contains("public_url"),
        "a placeholder and a note saying how to show the real address: {wildcard}"
    );

    let public = preview_of(&format!(
        "http_listen = \"0.0.0.0:0\"\npublic_url = \"http://boot.example:8080/pxe\"\n{admin}"
    ));
    assert!(
        public.contains("http://boot.example:8080/pxe/") && !public.contains("pxed-address"),
        "{public}"
    );

    let concrete = preview_of(SERVER);
    assert!(
        concrete.contains("http://127.0.0.1:0/") && !concrete.contains("pxed-address"),
        "{concrete}"
    );
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|c| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {c}"))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
}

/// Headless Chromium, with the flags that keep it off the (closed) network.
fn browse(browser: &PathBuf, profile: &std::path::Path, args: &[&str], url: &str) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
        ])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pages_in_a_real_browser() {
    if !common::have_tool("chromium", "admin pages in headless Chromium") {
        return;
    }
    let browser = chromium().unwrap();
    let (dir, pxed) = start();
    let admin = pxed.addr("admin");
    // One machine's boot over HTTP, so the machines page and its timeline
    // have something to show: its script, then its kernel from the same address.
    dir.asset("debian/vmlinuz", b"kernel");
    get(
        pxed.http(),
        "/ipxe?product=Express5800%2Fi120Ra-e1&mac=52:54:00:12:34:56",
    );
    get(pxed.http(), "/assets/debian/vmlinuz");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !get(admin, "/machines/52:54:00:12:34:56").contains("debian/vmlinuz") {
        assert!(
            std::time::Instant::now() < deadline,
            "events never recorded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("admin-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let pages = [
        (
            "status",
            "/".to_string(),
            vec!["pxed status", "Rules, in the order they are tried", "nec"],
        ),
        (
            "preview",
            "/preview?product=Express5800%2Fi120Ra-e1&mac=52:54:00:12:34:56".to_string(),
            vec!["matched rule \"nec\"", "kernel http://", "pxed.rule=nec"],
        ),
        (
            "machines",
            "/machines".to_string(),
            vec![
                "Every machine seen (1)",
                "52:54:00:12:34:56",
                "Express5800/i120Ra-e1",
                "nec",
            ],
        ),
        (
            "timeline",
            "/machines/52:54:00:12:34:56".to_string(),
            vec![
                "Boot steps, oldest first",
                "iPXE script",
                "debian/vmlinuz: 200 6 bytes",
                "Rule <b>nec</b>",
            ],
        ),
    ];
    for (name, path, wants) in pages {
        let url = format!("http://{admin}{path}");
        let dom = browse(&browser, profile.path(), &["--dump-dom"], &url);
        for want in wants {
            assert!(
                dom.contains(&want.replace('"', "&quot;")) || dom.contains(want),
                "{name}: {want} missing:\n{dom}"
            );
        }
        for width in [1280, 400] {
            let shot = shots.join(format!("{name}-{width}.png"));
            browse(
                &browser,
                profile.path(),
                &[
                    &format!("--screenshot={}", shot.display()),
                    &format!("--window-size={width},900"),
                ],
                &url,
            );
            let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
            assert!(size > 1000, "no screenshot at {}", shot.display());
        }
    }
    println!("screenshots in {}", shots.display());
}

/// The machine page's actions in a real browser: log in with an API token,
/// click "reinstall once", and see the override on the page, in the API and
/// in the script the machine is served. A POST without the page's CSRF
/// token, or without the session, changes nothing.
#[test]
fn reinstall_once_from_the_machine_page_in_chromium() {
    let Some(browser) = common::webdriver::Browser::start("machine page actions in Chromium")
    else {
        return;
    };
    let rules = format!("{RULES}\n[[rule]]\nname = \"install\"\nmatch = {{ mac = \"02:00:00:00:00:00\" }}\nargs = \"pxed.rule=install\"\n");
    let dir = ConfigDir::new(SERVER, &rules);
    dir.write_config(
        &format!("{SERVER}\n{}", common::api::tokens_file(&dir)),
        &rules,
    );
    let pxed = Pxed::start(&dir.config(), None);
    let admin = pxed.addr("admin");
    let mac = "52:54:00:12:34:56";
    let script = || {
        get(
            pxed.http(),
            &format!("/ipxe?product=Express5800%2Fi120Ra-e1&mac={mac}"),
        )
    };
    assert!(script().contains("pxed.rule=nec"));
    let api = common::api::Api::new(admin, Some(common::api::TOKEN));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while api.get(&format!("/api/v1/machines/{mac}")).status != 200 {
        assert!(std::time::Instant::now() < deadline, "never recorded");
        std::thread::sleep(Duration::from_millis(50));
    }

    let page = format!("http://{admin}/machines/{mac}");
    browser.goto(&page);
    assert!(browser.text("#override").starts_with("None"));
    browser.click("a[href='/login']");
    browser.type_into("input[name=token]", common::api::TOKEN);
    browser.click("#login");
    browser.wait_text("h1", "machines");
    assert!(browser.url().ends_with("/machines"), "{}", browser.url());
    browser.goto(&page);
    browser.click("#reinstall-rule option[value=install]");
    browser.click("#reinstall");
    let shown = browser.wait_text("#override", "rule");
    assert!(
        shown.starts_with("rule \"install\" once (set by web:alice"),
        "{shown}"
    );
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("admin-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    browser.screenshot(&shots.join("machine-reinstall.png"));
    let m = api.ok(&format!("/api/v1/machines/{mac}"));
    assert_eq!(
        (
            m["override"]["rule"].as_str(),
            m["override"]["set_by"].as_str()
        ),
        (Some("install"), Some("web:alice"))
    );
    assert!(
        script().contains("pxed.rule=install"),
        "the machine is served the change"
    );

    // Forged forms: the session's cookie without its CSRF token, and a form
    // with no session at all. Both refused; the override stays.
    let session = browser.cookie("pxed_session").expect("the session cookie");
    let form = "action=clear&csrf=0123456789abcdef0123456789abcdef";
    for cookie in [format!("Cookie: pxed_session={session}\r\n"), String::new()] {
        let request = format!(
            "POST /machines/{mac}/override HTTP/1.1\r\nHost: {admin}\r\n{cookie}\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        );
        let (head, _) = common::http::raw(admin, &request);
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    }
    assert_eq!(
        api.ok(&format!("/api/v1/machines/{mac}"))["override"]["rule"],
        "install"
    );

    // Clear from the page too.
    browser.goto(&page);
    browser.click("#clear");
    assert!(browser.wait_text("#override", "None").starts_with("None"));
    assert!(script().contains("pxed.rule=nec"));
}
