//! `pxed machines` and `pxed machine <mac> …` against a running daemon:
//! the CLI finds the API and its token through the config, changes a
//! machine, and the change is what the daemon serves.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::api::{tokens_file, Api, TOKEN};
use common::{ConfigDir, Pxed};

const SERVER: &str = "http_listen = \"127.0.0.1:0\"\ntftp_listen = \"\"";
const RULES: &str = r#"
[defaults]
kernel = "debian/vmlinuz"
[[rule]]
name = "default"
args = "pxed.rule=default"
[[rule]]
name = "install"
match = { mac = "52:54:00:00:00:99" }
args = "pxed.rule=install"
"#;
const MAC: &str = "52:54:00:12:34:56";

/// Runs `pxed ARGS --config <dir>` against the daemon at `api` (the test's
/// admin port is chosen by the kernel, so the config cannot name it); the
/// token comes from the config's api_tokens file unless `env` sets one.
fn pxed_cli(dir: &ConfigDir, api: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(common::pxed_bin());
    cmd.args(args).arg("--config").arg(dir.config());
    cmd.env("PXED_API", api).env_remove("PXED_API_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn cli_round_trip() {
    let dir = ConfigDir::new(SERVER, RULES);
    let server = format!("{SERVER}\n{}", tokens_file(&dir));
    dir.write_config(&server, RULES);
    let pxed = Pxed::start(&dir.config(), None);
    let script = || common::http::get(pxed.http(), &format!("/ipxe?mac={MAC}&product=Box")).1;
    assert!(script().contains("pxed.rule=default"));
    let api = Api::new(pxed.addr("admin"), Some(TOKEN));
    let url = format!("http://{}", pxed.addr("admin"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while api.get(&format!("/api/v1/machines/{MAC}")).status != 200 {
        assert!(Instant::now() < deadline, "never recorded");
        std::thread::sleep(Duration::from_millis(50));
    }

    let set = stdout(&pxed_cli(
        &dir,
        &url,
        &["machine", "52-54-00-12-34-56", "reinstall", "install"],
        &[],
    ));
    assert!(
        set.contains("override      install once (by alice)"),
        "{set}"
    );
    assert!(set.contains("product       Box"), "{set}");
    assert!(
        script().contains("pxed.rule=install"),
        "the daemon serves the change"
    );

    let list = stdout(&pxed_cli(&dir, &url, &["machines"], &[]));
    let row = list
        .lines()
        .find(|l| l.starts_with(MAC))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        row.contains("install once (by alice)") && row.ends_with("Box"),
        "{row}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&pxed_cli(&dir, &url, &["machines", "--json"], &[]))).unwrap();
    assert_eq!(json[0]["override"]["rule"], "install");

    // Another client from the token file; a label; local; clear.
    let local = stdout(&pxed_cli(
        &dir,
        &url,
        &["machine", MAC, "local", "--client", "bob"],
        &[],
    ));
    assert!(local.contains("local disk (by bob)"), "{local}");
    assert!(script().contains("sanboot"));
    let labelled = stdout(&pxed_cli(
        &dir,
        &url,
        &["machine", MAC, "label", "rack=r1", "--json"],
        &[],
    ));
    let labelled: serde_json::Value = serde_json::from_str(&labelled).unwrap();
    assert_eq!(labelled["labels"]["rack"], "r1");
    let cleared = stdout(&pxed_cli(&dir, &url, &["machine", MAC, "clear"], &[]));
    assert!(cleared.contains("override      -"), "{cleared}");
    assert!(script().contains("pxed.rule=default"));

    // Refusals come back as the API's message, exit status 1.
    let bad = pxed_cli(&dir, &url, &["machine", MAC, "reinstall", "nope"], &[]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("422") && err.contains("no rule named \"nope\""),
        "{err}"
    );
    // Any notation machines.toml accepts names the same machine; anything
    // else is refused as not a MAC, before the API is asked.
    for notation in [
        "52-54-00-12-34-56",
        "01-52-54-00-12-34-56",
        "5254.0012.3456",
    ] {
        let shown = stdout(&pxed_cli(&dir, &url, &["machine", notation], &[]));
        assert!(shown.contains(MAC), "{notation}: {shown}");
    }
    for typo in ["zz", "52:54:00:12:34", "52%3A54%3A00%3A12%3A34%3A56"] {
        let bad = pxed_cli(&dir, &url, &["machine", typo], &[]);
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(
            !bad.status.success() && err.contains("not a MAC address"),
            "{typo}: {err}"
        );
    }
    let wrong = pxed_cli(
        &dir,
        &url,
        &["machines"],
        &[("PXED_API_TOKEN", "wrong-wrong-wrong-wrong")],
    );
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success() && err.contains("401"), "{err}");
    let by_env = pxed_cli(
        &dir,
        &url,
        &["machines", "--json"],
        &[("PXED_API_TOKEN", TOKEN)],
    );
    assert!(stdout(&by_env).contains(MAC));
}
