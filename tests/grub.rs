//! `boot = "grub"` without a guest: what GRUB fetches over TFTP, fetched by
//! a real TFTP client (curl) from the real `pxed`: the fixed
//! `grub/grub.cfg`, each machine's own config (checked by GRUB's own parser,
//! `grub-script-check`, with hostile rule values), the shim served under
//! its name from a `[server.files]` file, a one-shot override's callback in
//! the config, the boot events; and `pxed check` and config errors for
//! GRUB rules. The boot through real firmware is in tests/e2e/grub.rs.

mod common;

use std::process::Command;
use std::time::Duration;

use common::api::{tokens_file, Api, TOKEN};
use common::{ConfigDir, Pxed};

const MAC: &str = "52:54:00:00:00:20";
const ARM_MAC: &str = "52:54:00:00:00:21";

/// A rule whose name and arguments GRUB would read as commands and
/// variables if they were written unquoted.
const RULES: &str = r#"
[defaults]
kernel = "debian/vmlinuz"
initrd = "debian/initrd.gz"

[[rule]]
name = "sb'; reboot; echo '$x"
match = { mac = "52:54:00:00:00:20" }
boot = "grub"
args = "ip=dhcp pxed.x=$prefix;reboot a'b {x}"
console = { port = "ttyS1", baud = 57600 }

[[rule]]
name = "arm"
match = { mac = "52:54:00:00:00:21" }
boot = "grub"
args = "console=ttyAMA0"

[[rule]]
name = "install"
match = { mac = "02:00:00:00:00:00" }
boot = "grub"
args = "install"
"#;

struct Server {
    dir: ConfigDir,
    pxed: Pxed,
    port: String,
}

fn server() -> Server {
    let dir = ConfigDir::new("", RULES);
    std::fs::write(dir.path().join("shim.signed"), b"a signed shim").unwrap();
    let body = format!(
        "http_listen = \"127.0.0.1:0\"\ntftp_listen = \"127.0.0.1:0\"\n\
         public_url = \"http://pxed.test:8080\"\n{}\n\
         files = {{ \"shimx64.efi\" = \"shim.signed\" }}",
        tokens_file(&dir)
    );
    dir.write_config(&body, RULES);
    let pxed = Pxed::start(&dir.config(), None);
    let port = pxed.addr("tftp").port().to_string();
    Server { dir, pxed, port }
}

/// `name` fetched with curl's TFTP client (`None`: the server sent an
/// error). Not tftp-hpa: it reads a name with `:` as `host:file`.
fn get(s: &Server, name: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sS", "--fail"])
        .arg(format!(
            "tftp://127.0.0.1:{}/{}",
            s.port,
            name.trim_start_matches('/')
        ))
        .output()
        .expect("curl");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// GRUB's own parser accepts `text` (skipped without grub-common).
fn grub_parses(text: &str) {
    if !common::have_tool("grub-script-check", "grub-common") {
        return;
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let out = Command::new("grub-script-check")
        .arg(file.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "GRUB cannot parse:\n{text}\n{out:?}");
}

#[test]
fn grub_configs_and_the_shim_over_tftp() {
    if !common::have_tool("curl", "curl") {
        return;
    }
    let s = server();
    let fixed = get(&s, "/grub/grub.cfg").expect("grub/grub.cfg");
    assert!(
        fixed.contains("configfile \"$prefix/pxed/$net_default_mac/$grub_cpu.cfg\""),
        "{fixed}"
    );
    grub_parses(&fixed);

    let cfg = get(&s, &format!("/grub/pxed/{MAC}/x86_64.cfg")).expect("per-machine grub.cfg");
    grub_parses(&cfg);
    let lines: Vec<&str> = cfg.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "serial --unit=1 --speed=57600",
            "terminal_input serial console",
            "terminal_output serial"
        ],
        "{cfg}"
    );
    // Every hostile value stays one quoted word.
    for expected in [
        "menuentry 'Boot ''sb'\\''; reboot; echo '\\''$x' --id linux {",
        "  linux /debian/vmlinuz ip=dhcp 'pxed.x=$prefix;reboot' 'a'\\''b' '{x}' console=ttyS1,57600n8",
        "  initrd /debian/initrd.gz",
        "menuentry 'Boot from local disk' --id local {",
    ] {
        assert!(lines.contains(&expected), "no {expected:?} in:\n{cfg}");
    }

    // ARM64: the firmware's UART through EFI; the rule's own console= kept.
    let arm = get(&s, &format!("/grub/pxed/{ARM_MAC}/arm64.cfg")).expect("arm64 grub.cfg");
    grub_parses(&arm);
    assert!(arm.starts_with("serial --speed=115200 efi0\nterminal_input serial_efi0 console\nterminal_output serial_efi0\n"), "{arm}");
    assert!(
        arm.contains("  linux /debian/vmlinuz console=ttyAMA0\n"),
        "{arm}"
    );

    // A machine no rule matches: a config that says so and restarts it.
    let none = get(&s, "/grub/pxed/52-54-00-99-99-99/x86_64.cfg").expect("no-rule grub.cfg");
    grub_parses(&none);
    assert!(
        none.contains("no rule matches this machine") && none.contains("reboot"),
        "{none}"
    );
    assert_eq!(get(&s, "/grub/pxed/not-a-mac/x86_64.cfg"), None);
    assert_eq!(get(&s, &format!("/grub/pxed/{MAC}/sparc.cfg")), None);

    // The shim under the name the firmware is handed, from [server.files].
    assert_eq!(get(&s, "shimx64.efi").as_deref(), Some("a signed shim"));

    // The boot events say which step each transfer was.
    std::thread::sleep(Duration::from_millis(500));
    let events = Command::new(common::pxed_bin())
        .args(["events", "--json", "--mac", MAC, "--config"])
        .arg(s.dir.config())
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(
        events.contains("\"stage\":\"menu\"") && events.contains("\"detail\":\"grub.cfg\""),
        "{events}"
    );
    assert!(
        events.contains(&format!("machine grub.cfg: grub/pxed/{MAC}/x86_64.cfg")),
        "{events}"
    );
}

/// A one-shot override through the API: the machine's GRUB config boots the
/// override's rule, with this boot's callback URL on the kernel line.
#[test]
fn a_one_shot_override_reaches_grub_with_its_callback() {
    if !common::have_tool("curl", "curl") {
        return;
    }
    let s = server();
    let api = Api::new(s.pxed.addr("admin"), Some(TOKEN));
    let set = api.call(
        "PUT",
        &format!("/api/v1/machines/{MAC}/override"),
        Some(r#"{"rule":"install","once":true}"#),
    );
    assert_eq!(set.status, 200, "{set:?}");
    let cfg = get(&s, &format!("/grub/pxed/{MAC}/x86_64.cfg")).expect("grub.cfg");
    grub_parses(&cfg);
    // The callback is on `public_url` (else the TFTP address and HTTP port).
    let callback = "pxed.callback=http://pxed.test:8080/callback/52-54-00-00-00-20/";
    assert!(cfg.contains("menuentry 'Boot 'install --id linux"), "{cfg}");
    assert!(
        cfg.contains(&format!(
            "  linux /debian/vmlinuz install console=ttyS0,115200n8 {callback}"
        )),
        "{cfg}"
    );
    let rendered = api.ok(&format!(
        "/api/v1/render?mac={MAC}&arch=efi-x64&format=grub"
    ));
    assert_eq!(rendered["rule"], "install", "{rendered}");
}

fn check(dir: &ConfigDir) -> (bool, String) {
    common::pxed_check(&dir.config())
}

#[test]
fn check_names_what_a_grub_rule_cannot_be_served() {
    let rule = "[[rule]]\nname = \"sb\"\nkernel = \"k\"\nboot = \"grub\"\n";
    // Line 4 is the `files` line.
    let dir = ConfigDir::new("files = { \"shimx64.efi\" = \"/nonexistent/shim\" }", rule);
    dir.asset("k", b"kernel");
    let (ok, out) = check(&dir);
    assert!(ok, "missing files are warnings:\n{out}");
    let config = dir.config().display().to_string();
    for expected in [
        format!(
            "warning: {config}:4:27: shimx64.efi cannot be served: not found in /nonexistent/shim"
        ),
        "rule \"sb\" boots GRUB, and its efi-x64 machines are handed shimx64.efi".to_string(),
        // No ARM64 rule: a note.
        "note: shimaa64.efi cannot be served".to_string(),
    ] {
        assert!(out.contains(&expected), "expected {expected:?} in:\n{out}");
    }
    // An ARM64 GRUB rule makes the ARM64 chain a warning.
    let arm = format!("{rule}match = {{ arch = \"efi-arm64\" }}\n");
    let dir = ConfigDir::new("", &arm);
    dir.asset("k", b"kernel");
    let (_, out) = check(&dir);
    assert!(
        out.contains("warning: shimaa64.efi cannot be served"),
        "{out}"
    );
    // No GRUB rule: nothing about the chain unless the config names a file.
    let dir = ConfigDir::new("", "[[rule]]\nname = \"a\"\nkernel = \"k\"\n");
    let (_, out) = check(&dir);
    assert!(!out.contains("shim"), "{out}");
}

#[test]
fn grub_rule_errors_are_placed() {
    let dir = ConfigDir::new(
        "files = { \"../x\" = \"y\" }",
        "[[rule]]\nname = \"sb\"\nboot = \"grub\"\nkernel = \"http://example/k\"\n",
    );
    let (ok, out) = check(&dir);
    assert!(!ok, "{out}");
    let config = dir.config().display().to_string();
    assert!(
        out.contains(&format!("{config}:4:20: [server.files] \"../x\"")),
        "{out}"
    );
    assert!(out.contains(&format!("{config}:9:10: \"http://example/k\": boot = \"grub\" fetches the kernel and initrd over TFTP")), "{out}");
    // A template directory from before GRUB rules existed.
    let dir = ConfigDir::new(
        "",
        "[[rule]]\nname = \"sb\"\nboot = \"grub\"\nkernel = \"k\"\n",
    );
    std::fs::remove_file(dir.path().join("boot-templates/menu.grub")).unwrap();
    let (ok, out) = check(&dir);
    assert!(!ok, "{out}");
    let config = dir.config().display().to_string();
    assert!(
        out.contains(&format!(
            "{config}:8:8: boot = \"grub\" needs the template \"menu.grub\""
        )),
        "{out}"
    );
}
