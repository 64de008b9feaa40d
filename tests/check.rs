//! `pxed check` rejects every kind of broken config with file, line, column and
//! a reason, and accepts the shipped one.

mod common;

use std::process::Command;

use common::ConfigDir;

fn check(dir: &ConfigDir) -> (bool, String) {
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
