//! Per-machine installer configs over real sockets: a rule names cloud-init,
//! kickstart, preseed and Ignition templates; its script points the kernel
//! at them; each is rendered with the machine's variables; Ignition is JSON
//! even when a machine reports quotes; a one-shot override's callback is in
//! them; `pxed check` renders them all and refuses a broken one.

mod common;

use std::time::{Duration, Instant};

use common::api::{tokens_file, Api, TOKEN};
use common::http::get;
use common::{ConfigDir, Pxed};

const SERVER: &str = "http_listen = \"127.0.0.1:0\"\ntftp_listen = \"\"";
const RULES: &str = r#"
[defaults]
kernel = "debian/vmlinuz"
[[rule]]
name = "default"
[[rule]]
name = "install"
match = { product = "Installer*" }
args = "pxed.rule=install"
configs = { user-data = "cloud-init-user-data.yaml", meta-data = "cloud-init-meta-data.yaml", kickstart = "kickstart.cfg", preseed = "preseed.cfg", ignition = "product.json" }
"#;
/// Ignition that carries the (client-controlled) product: only safe through `{{json}}`.
const PRODUCT_JSON: &str =
    "{ \"ignition\": { \"version\": \"3.4.0\" }, \"x-product\": {{json machine.product}} }\n";
const MAC: &str = "52:54:00:12:34:56";

fn start() -> (ConfigDir, Pxed) {
    let dir = ConfigDir::new(SERVER, RULES);
    dir.asset("debian/vmlinuz", b"kernel");
    std::fs::write(dir.path().join("boot-templates/product.json"), PRODUCT_JSON).unwrap();
    dir.write_config(&format!("{SERVER}\n{}", tokens_file(&dir)), RULES);
    let pxed = Pxed::start(&dir.config(), None);
    (dir, pxed)
}

fn check(dir: &ConfigDir) -> (bool, String) {
    common::pxed_check(&dir.config())
}

#[test]
fn configs_are_rendered_per_machine_and_pointed_at() {
    let (dir, pxed) = start();
    let http = pxed.http();
    // The product holds a quote and a backslash: JSON must stay JSON.
    let script = get(
        http,
        &format!("/ipxe?product=Installer%20%22X%5C&mac={MAC}"),
    )
    .1;
    let base = format!("http://{http}/config/52-54-00-12-34-56/install/");
    for arg in [
        format!("ds=nocloud;s={base}"),
        format!("inst.ks={base}kickstart"),
        format!("url={base}preseed"),
        format!("ignition.config.url={base}ignition"),
    ] {
        assert!(
            script.split_whitespace().any(|w| w == arg),
            "{arg} missing:\n{script}"
        );
    }
    // The inventory (what the script request reported) must be written first.
    let api = Api::new(pxed.addr("admin"), Some(TOKEN));
    let deadline = Instant::now() + Duration::from_secs(5);
    while api.get(&format!("/api/v1/machines/{MAC}")).status != 200 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let fetch = |name: &str| {
        let (head, body) = get(http, &format!("/config/52-54-00-12-34-56/install/{name}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{name}: {head}{body}");
        (head, body)
    };
    let (_, user_data) = fetch("user-data");
    assert!(
        user_data.starts_with("#cloud-config") && user_data.contains("hostname: pxed-525400123456"),
        "{user_data}"
    );
    assert!(
        !user_data.contains("phone_home"),
        "no override: no callback"
    );
    assert!(fetch("meta-data")
        .1
        .contains("instance-id: pxed-525400123456"));
    assert!(fetch("kickstart")
        .1
        .starts_with("# Kickstart rendered by pxed for 52:54:00:12:34:56"));
    assert!(fetch("preseed")
        .1
        .contains("netcfg/get_hostname string pxed-525400123456"));
    let (head, ignition) = fetch("ignition");
    assert!(head.contains("content-type: application/json"), "{head}");
    let json: serde_json::Value = serde_json::from_str(&ignition).expect("Ignition is JSON");
    assert_eq!(
        json["x-product"], "Installer _X_",
        "sanitised, then quoted: {ignition}"
    );
    for missing in ["vendor-data", "nonsense"] {
        let (head, _) = get(
            http,
            &format!("/config/52-54-00-12-34-56/install/{missing}"),
        );
        assert!(head.starts_with("HTTP/1.1 404"), "{missing}: {head}");
    }
    let (head, _) = get(http, "/config/52-54-00-12-34-56/nope/user-data");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // A one-shot override: the configs carry this boot's callback URL.
    let set = api.call(
        "PUT",
        &format!("/api/v1/machines/{MAC}/override"),
        Some(r#"{"rule":"install","once":true}"#),
    );
    assert_eq!(set.status, 200, "{set:?}");
    let script = get(http, &format!("/ipxe?mac={MAC}")).1;
    let callback = script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pxed.callback="))
        .unwrap_or_else(|| panic!("{script}"))
        .to_string();
    assert!(fetch("user-data").1.contains(&format!("url: {callback}")));
    assert!(fetch("kickstart")
        .1
        .contains(&format!("curl -fsS -X POST {callback}")));
    assert!(
        check(&dir).0,
        "the config with all of them passes pxed check"
    );
}

#[test]
fn check_renders_every_config_and_refuses_a_broken_one() {
    let (dir, _pxed) = start();
    let broken = "{ \"x\": {{machine.product}} }\n";
    std::fs::write(dir.path().join("boot-templates/product.json"), broken).unwrap();
    let (ok, err) = check(&dir);
    assert!(
        !ok && err.contains("product.json:1:") && err.contains("not JSON"),
        "{err}"
    );
    std::fs::write(dir.path().join("boot-templates/product.json"), PRODUCT_JSON).unwrap();
    for (bad, want) in [
        (
            "configs = { autoinstall = \"kickstart.cfg\" }",
            "configs: unknown config \"autoinstall\"",
        ),
        (
            "configs = { kickstart = \"none.cfg\" }",
            "configs: no template \"none.cfg\"",
        ),
    ] {
        dir.write_config(SERVER, &format!("{RULES}\n[[rule]]\nname = \"x\"\nmatch = {{ mac = \"02:00:00:00:00:01\" }}\n{bad}\n"));
        let (ok, err) = check(&dir);
        assert!(
            !ok && err.contains("machines.toml:") && err.contains(want),
            "{bad}: {err}"
        );
    }
}
