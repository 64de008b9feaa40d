//! The Debian package, installed: its files unpacked into a throwaway root,
//! pxed started from there the way the systemd unit starts it (an
//! unprivileged user holding only the unit's ambient capabilities, the
//! unit's `$STATE_DIRECTORY`, the config read-only under /etc/pxed), and a
//! machine booting against it: the lease and the boot events land in the
//! state directory, nothing beside the config. The package's postinst runs
//! for real (it creates the unit's system user `_pxed` on this machine), so
//! that the API token file, group `_pxed` mode 640 as docs/api.md says, is
//! read by the service; its postrm purge runs against the throwaway root.
//!
//! The package is `$PXED_DEB`, else the newest `target/debian/pxed_*.deb`
//! (`contrib/deb.sh` builds it; `.ci/run` does before the tests).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::dhcp::{dora, mac, new_lab, socket, SERVER};
use common::Pxed;

fn package() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PXED_DEB") {
        return Some(PathBuf::from(p));
    }
    let dir = common::repo().join("target/debian");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    debs.pop()
}

/// `rest` of the packaged machines.toml, as an operator would edit it: DHCP
/// on for the lab's subnet, HTTP and TFTP on the lab's address.
fn operator_edit(config: &Path) {
    let shipped = std::fs::read_to_string(config).unwrap();
    let edited = shipped
        .replace("http_listen = \"0.0.0.0:8080\"", "http_listen = \"10.77.0.1:8080\"")
        .replace("tftp_listen = \"0.0.0.0:69\"", "tftp_listen = \"10.77.0.1:69\"")
        .replace(
            "[dhcp]\nmode = \"off\"",
            "[dhcp]\nmode = \"full\"\n[[dhcp.subnet]]\nnetwork = \"10.77.0.0/24\"\npool = \"10.77.0.100-10.77.0.199\"\nrouter = \"10.77.0.1\"",
        );
    assert!(
        edited.contains("mode = \"full\""),
        "the shipped [dhcp] section changed:\n{shipped}"
    );
    std::fs::write(config, edited).unwrap();
}

#[test]
fn installed_package_runs_unprivileged_and_writes_only_its_state_directory() {
    let what = "the installed package";
    if !common::privileged(what)
        || !common::have_tool("setpriv", what)
        || !common::have_tool("dpkg-deb", what)
    {
        return;
    }
    let Some(deb) = package() else {
        common::skip(what, "no package: run contrib/deb.sh or set PXED_DEB");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    common::sh(&format!(
        "dpkg-deb -x {} {}",
        deb.display(),
        root.path().display()
    ));
    let bin = root.path().join("usr/bin/pxed");
    let etc = root.path().join("etc/pxed");
    let config = etc.join("machines.toml");
    operator_edit(&config);
    // The package's postinst, run for real: it creates the unit's user.
    let control = root.path().join("DEBIAN");
    common::sh(&format!(
        "dpkg-deb -e {} {} && sh {}/postinst configure",
        deb.display(),
        control.display(),
        control.display()
    ));
    let user = unit_setting(root.path(), "User");
    assert_eq!(unit_setting(root.path(), "Group"), user);
    // The API token file as docs/api.md says: root's, readable by the
    // service's group only.
    let tokens = etc.join("api-tokens");
    common::sh(&format!(
        "install -m 640 -g {user} /dev/null {0} && echo ops:{TOKEN} > {0}",
        tokens.display()
    ));
    let edited = std::fs::read_to_string(&config).unwrap().replacen(
        "[server]\n",
        "[server]\napi_tokens = \"api-tokens\"\n",
        1,
    );
    std::fs::write(&config, edited).unwrap();
    // StateDirectory=pxed: a directory the service's user owns.
    let state = root.path().join("var/lib/pxed");
    std::fs::create_dir_all(&state).unwrap();
    common::sh(&format!("chown {user}:{user} {}", state.display()));

    let lab = new_lab("pkg");
    let unit_like = |args: &[&str]| {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &lab.srv.name,
            "setpriv",
            &format!("--reuid={user}"),
            &format!("--regid={user}"),
            "--clear-groups",
        ])
        .args(["--inh-caps=+net_bind_service,+net_raw,+net_broadcast"])
        .args(["--ambient-caps=+net_bind_service,+net_raw,+net_broadcast"])
        .arg(&bin)
        .args(args)
        .arg("--config")
        .arg(&config)
        .env("STATE_DIRECTORY", &state);
        cmd
    };
    // ExecStartPre.
    let check = unit_like(&["check"]).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let pxed = Pxed::spawn(unit_like(&["serve"]));
    pxed.wait_log("dhcp listening", Duration::from_secs(10));
    pxed.wait_log("pxed started", Duration::from_secs(10));

    let m = mac(0x70);
    let (_, ack) = lab.client(|| dora(&socket(68), m, vec![]));
    let ip = ack.yiaddr();
    lab.cli.sh(&format!("ip addr add {ip}/24 dev vc"));
    lab.cli.sh(&format!(
        "curl -sf -o /dev/null 'http://{SERVER}:8080/ipxe?product=Express5800%2Fi120Ra-e1&mac=52:54:00:77:00:70'"
    ));

    // The databases are in the state directory, owned by the service's user.
    let db = state.join("pxed-leases.sqlite");
    let deadline = Instant::now() + Duration::from_secs(5);
    let events = loop {
        let out = unit_like(&["events", "--json", "--mac", "52:54:00:77:00:70"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("\"stage\":\"script\"") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        events.contains("\"stage\":\"dhcp\"") && events.contains("\"stage\":\"script\""),
        "{events}"
    );
    assert!(events.contains("nec-express5800"), "{events}");
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let leased: i64 = conn
        .query_row(
            "SELECT count(*) FROM leases WHERE ip = ?1",
            [u32::from(ip)],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(leased, 1, "no lease for {ip} in {}", db.display());
    let owner = common::sh(&format!("stat -c %U {}", db.display()));
    assert_eq!(owner.trim(), user);
    // The API answers: the service read the token file.
    let machines = lab.srv.sh(&format!(
        "curl -sf -H 'Authorization: Bearer {TOKEN}' http://127.0.0.1:9180/api/v1/machines"
    ));
    assert!(machines.contains("52:54:00:77:00:70"), "{machines}");
    let beside_config: Vec<String> = std::fs::read_dir(&etc)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("sqlite"))
        .collect();
    assert!(
        beside_config.is_empty(),
        "written beside the config: {beside_config:?}"
    );
    assert!(
        pxed.log().contains("example = true"),
        "the shipped example is not announced:\n{}",
        pxed.log()
    );
    drop(pxed);
    // Purge removes the state the unit wrote (here under the throwaway root).
    common::sh(&format!(
        "DPKG_ROOT={} sh {}/postrm purge",
        root.path().display(),
        control.display()
    ));
    assert!(!state.exists(), "{} survived the purge", state.display());
}

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// `KEY=` of the packaged unit's [Service] section, as systemd reads it.
fn unit_setting(root: &Path, key: &str) -> String {
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/pxed.service")).unwrap();
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .trim()
        .to_string()
}
