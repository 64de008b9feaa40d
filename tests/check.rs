//! `pxed check` rejects every kind of broken config with file, line, column and
//! a reason, and accepts the shipped one.

mod common;

use std::process::Command;

use common::ConfigDir;

fn check(dir: &ConfigDir) -> (bool, String) {
    // The rules' kernel `k` is in assets/ unless the test says otherwise.
    if !dir.path().join("assets/k").exists() {
        dir.asset("k", b"kernel");
    }
    common::pxed_check(&dir.config())
}

const OK_RULE: &str = "[[rule]]\nname = \"default\"\nkernel = \"k\"\n";

/// Asserts that check fails, naming `file:line:col` and the reason.
fn rejects(dir: &ConfigDir, file: &str, line_col: &str, reason: &str) {
    let (ok, out) = check(dir);
    assert!(!ok, "check accepted a broken config:\n{out}");
    let place = format!("{}:{line_col}", dir.path().join(file).display());
    assert!(out.contains(&place), "expected {place} in:\n{out}");
    assert!(out.contains(reason), "expected {reason:?} in:\n{out}");
}

#[test]
fn the_shipped_config_passes() {
    let out = Command::new(common::pxed_bin())
        .args(["check", "--config"])
        .arg(common::repo().join("machines.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn broken_toml() {
    let dir = ConfigDir::new("", "[[rule]]\nname = \"a\"\nkernel = \"k\n");
    // Rules start at line 6: [server], search_paths, admin_listen, the (empty)
    // server body and a blank line come first.
    rejects(&dir, "machines.toml", "8:", "");
}

#[test]
fn unknown_key() {
    let dir = ConfigDir::new("", "[[rule]]\nname = \"a\"\nkernal = \"k\"\n");
    rejects(&dir, "machines.toml", "8:1", "unknown field `kernal`");
    let dir = ConfigDir::new(
        "",
        "[[rule]]\nname = \"a\"\nkernel = \"k\"\nmatch = { prodcut = \"x\" }\n",
    );
    rejects(&dir, "machines.toml", "9:", "unknown field `prodcut`");
}

#[test]
fn bad_values_are_placed() {
    let dir = ConfigDir::new(
        "",
        "[[rule]]\nname = \"a\"\nkernel = \"k\"\nmatch = { mac = [\"52:54:00:zz:00:01\"] }\n",
    );
    rejects(&dir, "machines.toml", "9:17", "not a MAC address");
    let dir = ConfigDir::new(
        "",
        "[[rule]]\nname = \"a\"\nkernel = \"k\"\nmatch = { arch = \"efi-z80\" }\n",
    );
    rejects(&dir, "machines.toml", "9:18", "unknown arch");
    let dir = ConfigDir::new("http_listen = \"nowhere\"", OK_RULE);
    rejects(&dir, "machines.toml", "4:15", "not an address:port");
    let dir = ConfigDir::new("", "[[rule]]\nname = \"a\"\n");
    rejects(&dir, "machines.toml", "7:8", "needs a `kernel`");
}

#[test]
fn template_syntax_error() {
    let dir = ConfigDir::new("", OK_RULE);
    std::fs::write(
        dir.path().join("boot-templates/linux.ipxe"),
        "#!ipxe\nkernel {{boot.kernel_url}\nboot\n",
    )
    .unwrap();
    rejects(&dir, "boot-templates/linux.ipxe", "2:", "");
}

#[test]
fn undefined_template_variable() {
    let dir = ConfigDir::new("", OK_RULE);
    std::fs::write(
        dir.path().join("boot-templates/linux.ipxe"),
        "#!ipxe\n\nkernel {{boot.kernal_url}}\nboot\n",
    )
    .unwrap();
    rejects(
        &dir,
        "boot-templates/linux.ipxe",
        "3:8",
        "undefined variable `boot.kernal_url`",
    );
    // A rule naming a template that does not exist.
    let dir = ConfigDir::new(
        "",
        "[[rule]]\nname = \"a\"\nkernel = \"k\"\ntemplate = \"nope.ipxe\"\n",
    );
    rejects(&dir, "machines.toml", "9:12", "no template \"nope.ipxe\"");
}

#[test]
fn ambiguous_rules() {
    let rules = "[[rule]]\nname = \"a\"\nkernel = \"k\"\nmatch = { product = \"Express*\" }\n\n[[rule]]\nname = \"b\"\nkernel = \"k\"\nmatch = { product = \"*5800*\" }\n";
    let dir = ConfigDir::new("", rules);
    rejects(&dir, "machines.toml", "12:8", "rule \"b\" and rule \"a\"");
    // Disjoint patterns, or a priority, settle it.
    let dir = ConfigDir::new("", &rules.replace("*5800*", "PowerEdge*"));
    assert!(check(&dir).0);
    let dir = ConfigDir::new(
        "",
        &rules.replace("name = \"b\"", "name = \"b\"\npriority = 1"),
    );
    assert!(check(&dir).0, "{}", check(&dir).1);
    // Two catch-alls.
    let dir = ConfigDir::new(
        "",
        &format!("{OK_RULE}\n[[rule]]\nname = \"other\"\nkernel = \"k\"\n"),
    );
    rejects(&dir, "machines.toml", "11:8", "can match the same machine");
}

#[test]
fn every_error_is_reported_at_once() {
    let dir = ConfigDir::new(
        "",
        "[[rule]]\nname = \"a\"\nkernel = \"k\"\nmatch = { mac = \"bad\" }\n\n[[rule]]\nname = \"b\"\nkernel = \"k\"\nmatch = { uuid = \"bad\" }\n",
    );
    let (ok, out) = check(&dir);
    assert!(!ok);
    assert!(
        out.contains("not a MAC address") && out.contains("not a UUID"),
        "{out}"
    );
}

#[test]
fn ipv6_ra_section_is_validated() {
    // Enabled with no interface anywhere (neither its own nor [dhcp]'s).
    let dir = ConfigDir::new("", &format!("{OK_RULE}[ipv6_ra]\nenabled = true\n"));
    rejects(
        &dir,
        "machines.toml",
        "10:11",
        "[ipv6_ra] enabled = true needs `interfaces`",
    );
    let dir = ConfigDir::new(
        "",
        &format!("{OK_RULE}[ipv6_ra]\nenabled = true\ninterfaces = [\"br0\"]\ninterval = 2\n"),
    );
    rejects(
        &dir,
        "machines.toml",
        "12:12",
        "interval = 2: 0 (answer solicitations only) or 4-1800",
    );
    let dir = ConfigDir::new(
        "",
        &format!("{OK_RULE}[ipv6_ra]\ninterfaces = [\"br 0\"]\n"),
    );
    rejects(&dir, "machines.toml", "10:14", "interface \"br 0\"");
    let dir = ConfigDir::new("", &format!("{OK_RULE}[ipv6_ra]\nenable = true\n"));
    rejects(&dir, "machines.toml", "10:1", "unknown field `enable`");
    // [dhcp] interfaces are the default; off needs nothing.
    let dir = ConfigDir::new(
        "",
        &format!("{OK_RULE}[dhcp]\nmode = \"proxy\"\ninterfaces = [\"pxed-no-such0\"]\n[ipv6_ra]\nenabled = true\n"),
    );
    let (ok, out) = check(&dir);
    assert!(ok, "{out}");
    // The interface does not exist here: a warning, not an error (check may
    // run on another machine than serve).
    assert!(
        out.contains("warning: [ipv6_ra] interfaces: no interface \"pxed-no-such0\""),
        "{out}"
    );
    let dir = ConfigDir::new("", &format!("{OK_RULE}[ipv6_ra]\nenabled = false\n"));
    let (ok, out) = check(&dir);
    assert!(ok && !out.contains("IPv6"), "{out}");
}

#[test]
fn dhcp_limits_out_of_range() {
    // Line 6 is `[dhcp]`; the limit keys follow.
    let dir = ConfigDir::new(
        "",
        &format!("[dhcp]\nrate_table_size = 3\nmax_leases_per_mac = 0\n\n{OK_RULE}"),
    );
    rejects(
        &dir,
        "machines.toml",
        "7:19",
        "rate_table_size = 3: use 16 to 16777216",
    );
    rejects(
        &dir,
        "machines.toml",
        "8:22",
        "max_leases_per_mac = 0: use 1 to 1024",
    );
    // In range, and 0 for the rates (off): accepted.
    let dir = ConfigDir::new(
        "",
        &format!(
            "[dhcp]\nrate_per_mac = 0\nrate_per_circuit = 0\nrate_per_relay = 5000\nrate_table_size = 1024\nmax_offers = 10\nmax_leases_per_mac = 2\nmax_leases_per_circuit = 0\n\n{OK_RULE}"
        ),
    );
    let (ok, out) = check(&dir);
    assert!(ok, "{out}");
}

#[test]
fn unservable_loaders_are_named() {
    // Line 6 is `[dhcp]`.
    let rules = format!(
        "[dhcp]\nefi_loader = \"missing.efi\"\nbios_loader = \"undionly.kpxe\"\narm64_loader = \"escape.efi\"\n\n{OK_RULE}loader = \"nope.kpxe\"\n"
    );
    let dir = ConfigDir::new("", &rules);
    dir.asset("undionly.kpxe", b"loader");
    // A symlink planted in assets_dir cannot lead out of it, even for a loader.
    std::os::unix::fs::symlink("/etc/hostname", dir.path().join("assets/escape.efi")).unwrap();
    let (ok, out) = check(&dir);
    assert!(ok, "a missing loader is a warning, not an error:\n{out}");
    let config = dir.config().display().to_string();
    let assets = dir.path().join("assets").display().to_string();
    for expected in [
        format!("warning: {config}:7:14: [dhcp] efi_loader = \"missing.efi\" cannot be served: not found in {assets}"),
        format!("warning: {config}:9:16: [dhcp] arm64_loader = \"escape.efi\" cannot be served: refused: symlink leads outside the asset root"),
        format!("warning: {config}:14:10: rule \"default\" loader = \"nope.kpxe\" cannot be served: not found in {assets}"),
    ] {
        assert!(out.contains(&expected), "expected {expected:?} in:\n{out}");
    }
    assert!(
        !out.contains("undionly.kpxe"),
        "a served loader is fine:\n{out}"
    );
    // DHCP off: pxed's own defaults are not handed out by pxed, so not checked.
    assert!(!out.contains("arm32_loader"), "{out}");

    // pxed's DHCP on, nothing configured: the defaults it hands out are
    // checked; the ARM ones Debian does not package are a note.
    let dir = ConfigDir::new("", &format!("{OK_RULE}[dhcp]\nmode = \"proxy\"\n"));
    let (ok, out) = check(&dir);
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "warning: [dhcp] efi_loader (pxed's default) = \"snponly.efi\" cannot be served"
        ),
        "{out}"
    );
    assert!(
        out.contains("warning: [dhcp] bios_loader (pxed's default)"),
        "{out}"
    );
    assert!(
        out.contains("note: [dhcp] arm64_loader (pxed's default)"),
        "{out}"
    );
}

/// The shipped defaults with Debian's `ipxe` package in the search path: every
/// x86 loader is servable, `ipxe.efi` (a symlink into /boot) included.
#[test]
fn debian_loaders_are_servable() {
    if !std::path::Path::new("/usr/lib/ipxe/snponly.efi").exists() {
        eprintln!("skipped: Debian's ipxe package is not installed");
        return;
    }
    let dir = ConfigDir::new(
        "search_paths = [\"/usr/lib/ipxe\"]",
        &format!("{OK_RULE}[dhcp]\nmode = \"proxy\"\n\n[[rule]]\nname = \"full-ipxe\"\nkernel = \"k\"\nmatch = {{ mac = \"52:54:00:00:00:01\" }}\nloader = \"ipxe.efi\"\n"),
    );
    let (ok, out) = check(&dir);
    assert!(ok, "{out}");
    for loader in ["snponly.efi", "undionly.kpxe", "ipxe.efi"] {
        assert!(
            !out.contains(&format!("\"{loader}\"")),
            "{loader} flagged:\n{out}"
        );
    }
}

/// Line 6 is the first line of `rest` (ConfigDir writes `[server]`, the
/// search paths, the admin listener, the server body and a blank line first).
fn config_with(server: &str, rest: &str) -> ConfigDir {
    ConfigDir::new(server, rest)
}

#[test]
fn a_missing_assets_dir_fails() {
    let dir = config_with("assets_dir = \"nowhere\"", OK_RULE);
    rejects(&dir, "machines.toml", "4:14", "assets_dir");
    let (_, out) = check(&dir);
    assert!(out.contains("nowhere does not exist"), "{out}");
    // The default `assets` directory, gone: the file itself is named.
    let dir = config_with("", OK_RULE);
    dir.asset("k", b"kernel");
    std::fs::remove_dir_all(dir.path().join("assets")).unwrap();
    let out = Command::new(common::pxed_bin())
        .args(["check", "--config"])
        .arg(dir.config())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "{}:1:1: assets_dir (the default)",
            dir.config().display()
        )),
        "{text}"
    );
}

#[test]
fn a_rule_whose_kernel_or_initrd_is_missing_fails() {
    let rules = "[[rule]]\nname = \"a\"\nkernel = \"k\"\ninitrd = \"debian/initrd.gz\"\n\n\
                 [[rule]]\nname = \"b\"\nmatch = { product = \"X*\" }\nkernel = \"gone/vmlinuz\"\n";
    let dir = config_with("", rules);
    rejects(
        &dir,
        "machines.toml",
        "9:10",
        "initrd = \"debian/initrd.gz\" (rule \"a\") cannot be served",
    );
    rejects(
        &dir,
        "machines.toml",
        "14:10",
        "kernel = \"gone/vmlinuz\" (rule \"b\") cannot be served",
    );
    // Found in a search path: fine. A URL: not pxed's to check.
    dir.asset("debian/initrd.gz", b"initrd");
    let dir2 = config_with(
        "",
        &rules.replace("gone/vmlinuz", "http://mirror.invalid/vmlinuz"),
    );
    dir2.asset("debian/initrd.gz", b"initrd");
    let (ok, out) = check(&dir2);
    assert!(ok, "{out}");
    // A [defaults] kernel is one place, reported once for all its rules.
    let defaults = "[defaults]\nkernel = \"missing\"\n\n[[rule]]\nname = \"a\"\n\n[[rule]]\nname = \"b\"\nmatch = { product = \"X*\" }\n";
    let dir = config_with("", defaults);
    rejects(&dir, "machines.toml", "7:10", "kernel = \"missing\"");
    assert_eq!(check(&dir).1.matches("kernel = \"missing\"").count(), 1);
}

#[test]
fn a_kernel_outside_the_asset_roots_is_refused() {
    let dir = config_with(
        "",
        "[[rule]]\nname = \"a\"\nkernel = \"../../etc/passwd\"\n",
    );
    rejects(
        &dir,
        "machines.toml",
        "8:10",
        "kernel = \"../../etc/passwd\": refused path: `..` in path",
    );
    // The running server refuses it on reload too: it is a config error.
    let err = pxed::config::load(&dir.config()).unwrap_err().to_string();
    assert!(err.contains("`..` in path"), "{err}");
}

#[test]
fn an_unwritable_database_location_fails() {
    // A directory that does not exist.
    let dir = config_with(
        "",
        &format!("{OK_RULE}\n[dhcp]\nlease_db = \"no/such/dir/leases.sqlite\"\n"),
    );
    rejects(&dir, "machines.toml", "11:12", "[dhcp] lease_db");
    let (_, out) = check(&dir);
    assert!(out.contains("does not exist"), "{out}");
    // A separate event database under a file.
    let dir = config_with(
        "",
        &format!("{OK_RULE}\n[events]\ndb = \"assets/k/events.sqlite\"\n"),
    );
    rejects(&dir, "machines.toml", "11:6", "[events] db");
    assert!(check(&dir).1.contains("is not a directory"));
    // The default beside machines.toml, in a directory the checking user
    // cannot write (the documented install: /etc/pxed under
    // ProtectSystem=strict, checked as the service's user).
    if !common::privileged("unwritable database as an unprivileged user")
        || !common::have_tool("runuser", "unwritable database")
    {
        return;
    }
    let dir = config_with("", OK_RULE);
    dir.asset("k", b"kernel");
    use std::os::unix::fs::PermissionsExt;
    for p in [
        dir.path().to_path_buf(),
        dir.path().join("boot-templates"),
        dir.path().join("assets"),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let as_nobody = |state: Option<&str>| {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "nobody", "--"])
            .arg(common::pxed_bin())
            .args(["check", "--config"])
            .arg(dir.config());
        if let Some(s) = state {
            cmd.env("STATE_DIRECTORY", s);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out) = as_nobody(None);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("{}:1:1: [dhcp] lease_db", dir.config().display()))
            && out.contains("cannot write in"),
        "{out}"
    );
    // Under systemd's StateDirectory= the databases go there instead.
    let state = tempfile::tempdir().unwrap();
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (ok, out) = as_nobody(Some(state.path().to_str().unwrap()));
    assert!(ok, "{out}");
}

#[test]
fn every_filesystem_error_is_reported_at_once() {
    let dir = config_with(
        "assets_dir = \"nowhere\"",
        "[[rule]]\nname = \"a\"\nkernel = \"vmlinuz\"\ninitrd = \"initrd.gz\"\n\n[dhcp]\nlease_db = \"gone/l.sqlite\"\n",
    );
    let (ok, out) = check(&dir);
    assert!(!ok);
    for want in [
        "assets_dir",
        "kernel = \"vmlinuz\"",
        "initrd = \"initrd.gz\"",
        "[dhcp] lease_db",
        "4 errors",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
}

/// The shipped config names a kernel nobody ships: `example = true` makes
/// that a warning naming the key to delete; any other config fails.
#[test]
fn the_shipped_example_warns_about_its_missing_kernel() {
    let shipped = std::fs::read_to_string(common::repo().join("machines.toml")).unwrap();
    assert!(shipped.contains("\nexample = true\n"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("machines.toml"), &shipped).unwrap();
    std::fs::create_dir(dir.path().join("assets")).unwrap();
    let templates = dir.path().join("boot-templates");
    std::fs::create_dir(&templates).unwrap();
    for e in std::fs::read_dir(common::repo().join("boot-templates")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), templates.join(e.file_name())).unwrap();
    }
    let run = || {
        let out = Command::new(common::pxed_bin())
            .args(["check", "--config"])
            .arg(dir.path().join("machines.toml"))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out) = run();
    assert!(ok, "{out}");
    assert!(
        out.contains("warning:")
            && out.contains("debian/vmlinuz")
            && out.contains("example = true"),
        "{out}"
    );
    std::fs::write(
        dir.path().join("machines.toml"),
        shipped.replace("\nexample = true\n", "\n"),
    )
    .unwrap();
    let (ok, out) = run();
    assert!(
        !ok && out.contains("error:") && out.contains("debian/vmlinuz"),
        "{out}"
    );
}

#[test]
fn every_type_and_key_error_at_once_in_words() {
    let dir = config_with(
        "http_listen = 8080",
        "[[rule]]\nname = \"a\"\nkernel = \"k\"\npriority = \"high\"\nkernal = \"x\"\nmenu_timeout = -1\nmatch = { prodcut = \"x\" }\n",
    );
    rejects(&dir, "machines.toml", "4:15", "expected a string");
    rejects(
        &dir,
        "machines.toml",
        "9:12",
        "the string \"high\", expected a whole number",
    );
    rejects(&dir, "machines.toml", "10:1", "unknown field `kernal`");
    rejects(
        &dir,
        "machines.toml",
        "11:16",
        "expected a whole number, 0 or more",
    );
    rejects(&dir, "machines.toml", "12:11", "unknown field `prodcut`");
    let (_, out) = check(&dir);
    assert!(out.contains("5 errors"), "{out}");
    for jargon in ["i32", "u32", "i64", "struct ", "sequence"] {
        assert!(!out.contains(jargon), "{jargon:?} in:\n{out}");
    }
    // The lines stay in file order.
    let lines: Vec<usize> = out
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{out}");
}

#[test]
fn template_errors_without_parser_internals_or_bogus_lines() {
    let dir = config_with("", OK_RULE);
    std::fs::write(
        dir.path().join("boot-templates/linux.ipxe"),
        "#!ipxe\nkernel {{boot.kernel_url}\nboot\n",
    )
    .unwrap();
    let (ok, out) = check(&dir);
    assert!(!ok);
    assert!(
        out.contains("not closed") && !out.contains("expected trailing"),
        "{out}"
    );
    // A rule naming a template that does not exist: one error, at the key.
    let dir = config_with(
        "",
        "[[rule]]\nname = \"a\"\nkernel = \"k\"\ntemplate = \"nope.ipxe\"\n",
    );
    let (ok, out) = check(&dir);
    assert!(!ok);
    assert_eq!(out.matches("nope.ipxe").count(), 1, "{out}");
    assert!(!out.contains("nope.ipxe:1:1"), "{out}");
}

#[test]
fn a_missing_config_names_the_flag() {
    let empty = tempfile::tempdir().unwrap();
    for args in [
        &["check"][..],
        &["serve"],
        &["explain", "--mac", "52:54:00:00:00:01"],
    ] {
        let out = Command::new(common::pxed_bin())
            .args(args)
            .current_dir(empty.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains("machines.toml: no such file") && err.contains("--config"),
            "{err}"
        );
    }
}
