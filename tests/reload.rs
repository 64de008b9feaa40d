//! Reloading while machines boot: a broken edit is rejected and the old rules
//! keep serving every request; a good edit takes effect within a second, on
//! SIGHUP and on a rename-style save.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ConfigDir, Pxed};

const SERVER: &str = "http_listen = \"127.0.0.1:0\"\ntftp_listen = \"\"";

fn rules(arg: &str) -> String {
    format!("[[rule]]\nname = \"default\"\nkernel = \"k\"\nargs = \"{arg}\"\n")
}

fn script(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(
        b"GET /ipxe?mac=52:54:00:00:00:01 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// Polls until the served script contains `want`; returns how long it took.
fn wait_for(addr: SocketAddr, want: &str) -> Duration {
    let start = Instant::now();
    while !script(addr).contains(want) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{want:?} never served"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

/// Atomically replaces `path`, as editors do: write a temporary file, rename it.
fn save_by_rename(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("swp-new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn broken_template_is_rejected_and_every_request_is_still_served() {
    let dir = ConfigDir::new(SERVER, &rules("gen=1"));
    let pxed = Pxed::start(&dir.config(), None);
    let addr = pxed.http();
    assert!(script(addr).contains("gen=1"));

    // Hammer the render endpoint while the broken edit lands.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let client = {
        let (stop, served) = (stop.clone(), served.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let body = script(addr);
                assert!(body.contains("gen=1") && body.contains("\nboot"), "{body}");
                served.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    save_by_rename(
        &dir.path().join("boot-templates/linux.ipxe"),
        "#!ipxe\nkernel {{boot.kernel_url}\n",
    );
    pxed.wait_log("reload rejected", Duration::from_secs(5));
    pxed.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    client.join().expect("a request failed during the reload");
    assert!(served.load(Ordering::Relaxed) > 10);
    let log = pxed.log();
    assert!(
        log.contains("linux.ipxe:2:"),
        "the rejection names file and line:\n{log}"
    );
    assert!(script(addr).contains("gen=1"));
    // Fixing the template is picked up.
    std::fs::copy(
        common::repo().join("boot-templates/linux.ipxe"),
        dir.path().join("boot-templates/linux.ipxe"),
    )
    .unwrap();
    dir.write_config(SERVER, &rules("gen=2"));
    wait_for(addr, "gen=2");
}

#[test]
fn broken_toml_keeps_the_last_good_config() {
    let dir = ConfigDir::new(SERVER, &rules("gen=1"));
    let pxed = Pxed::start(&dir.config(), None);
    let addr = pxed.http();
    std::fs::write(dir.config(), "[server\nbroken").unwrap();
    pxed.wait_log("reload rejected", Duration::from_secs(5));
    assert!(script(addr).contains("gen=1"));
}

#[test]
fn sighup_applies_an_edit_within_a_second() {
    let dir = ConfigDir::new(SERVER, &rules("gen=1"));
    let pxed = Pxed::start(&dir.config(), None);
    let addr = pxed.http();
    // Write without a rename and signal at once: SIGHUP alone must do it.
    std::fs::write(
        dir.config(),
        format!("[server]\nsearch_paths = []\n{SERVER}\n{}", rules("gen=2")),
    )
    .unwrap();
    pxed.signal("HUP");
    let took = wait_for(addr, "gen=2");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn rename_style_save_applies_within_a_second() {
    let dir = ConfigDir::new(SERVER, &rules("gen=1"));
    let pxed = Pxed::start(&dir.config(), None);
    let addr = pxed.http();
    save_by_rename(
        &dir.config(),
        &format!("[server]\nsearch_paths = []\n{SERVER}\n{}", rules("gen=3")),
    );
    let took = wait_for(addr, "gen=3");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // A template saved the same way.
    let template = std::fs::read_to_string(dir.path().join("boot-templates/linux.ipxe")).unwrap();
    save_by_rename(
        &dir.path().join("boot-templates/linux.ipxe"),
        &template.replace("boot || goto failed", "echo edited\nboot || goto failed"),
    );
    let took = wait_for(addr, "echo edited");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

/// The lease and event database lives beside machines.toml by default; its
/// writes are not edits and must not reload the config (they once did, on
/// every commit).
#[test]
fn database_writes_beside_the_config_do_not_reload_it() {
    let dir = ConfigDir::new(SERVER, &rules("gen=1"));
    let pxed = Pxed::start(&dir.config(), None);
    let addr = pxed.http();
    for _ in 0..3 {
        script(addr);
        // Past the event writer's gathering time: one commit each.
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(
        dir.path().join("pxed-events.sqlite").exists(),
        "events were not recorded beside the config"
    );
    let log = pxed.log();
    assert!(!log.contains("config reloaded"), "{log}");
}

/// `--config machines.toml` from the config's own directory (the README's
/// form): saves of the rules and of a template are picked up. They were not:
/// the watcher reports absolute paths, compared with `.` and `boot-templates`.
#[test]
fn relative_config_path_reloads_on_save() {
    let dir = ConfigDir::new(SERVER, &rules("gen=1"));
    let mut cmd = std::process::Command::new(common::pxed_bin());
    cmd.current_dir(dir.path())
        .args(["serve", "--config", "machines.toml"]);
    let pxed = Pxed::spawn(cmd);
    let addr = pxed.http();
    assert!(script(addr).contains("gen=1"));
    save_by_rename(
        &dir.config(),
        &format!("[server]\nsearch_paths = []\n{SERVER}\n{}", rules("gen=2")),
    );
    wait_for(addr, "gen=2");
    let template = dir.path().join("boot-templates/linux.ipxe");
    let text = std::fs::read_to_string(&template).unwrap();
    std::fs::write(
        &template,
        text.replace("boot || goto failed", "echo relative\nboot || goto failed"),
    )
    .unwrap();
    wait_for(addr, "echo relative");
    assert!(
        pxed.log().contains("trigger=\"file change\""),
        "{}",
        pxed.log()
    );
}
