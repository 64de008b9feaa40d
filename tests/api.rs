//! The JSON API on the admin listener, over real sockets against the real
//! binary: authentication, every endpoint, bad input that changes nothing,
//! writes in `pxed events`, the one-shot override's callback, and
//! docs/openapi.yaml checked against the routes and the answers.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::api::{tokens_file, Api, BOB_TOKEN, TOKEN};
use common::{ConfigDir, Pxed};
use serde_json::{json, Value};

const SERVER: &str = "http_listen = \"127.0.0.1:0\"\ntftp_listen = \"\"";
const RULES: &str = r#"
[defaults]
kernel = "debian/vmlinuz"
[[rule]]
name = "default"
args = "pxed.rule=default"
[[rule]]
name = "nec"
match = { product = "Express5800/*" }
args = "pxed.rule=nec"
[[rule]]
name = "install"
match = { mac = "52:54:00:00:00:99" }
args = "pxed.rule=install"
"#;

const MAC: &str = "52:54:00:12:34:56";

fn start() -> (ConfigDir, Pxed, Api) {
    let dir = ConfigDir::new(SERVER, RULES);
    let server = format!("{SERVER}\n{}", tokens_file(&dir));
    dir.write_config(&server, RULES);
    let pxed = Pxed::start(&dir.config(), None);
    let api = Api::new(pxed.addr("admin"), Some(TOKEN));
    (dir, pxed, api)
}

/// The script `/ipxe` renders for the NEC machine now.
fn script(pxed: &Pxed) -> String {
    let (_, body) = common::http::get(
        pxed.http(),
        &format!("/ipxe?product=Express5800%2Fi120Ra-e1&mac={MAC}"),
    );
    body
}

/// Waits until the boot-event record has seen [`MAC`] (events are written
/// in batches a tenth of a second apart).
fn wait_seen(api: &Api) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while api.get(&format!("/api/v1/machines/{MAC}")).status != 200 {
        assert!(Instant::now() < deadline, "{MAC} never recorded");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `pxed events [--mac MAC]` output, once it holds `want` (events are
/// written in batches a tenth of a second apart).
fn events_until(dir: &ConfigDir, mac: Option<&str>, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut cmd = Command::new(common::pxed_bin());
        cmd.args(["events", "--config"]).arg(dir.config());
        if let Some(mac) = mac {
            cmd.args(["--mac", mac]);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains(want) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn without_api_tokens_the_api_is_not_there() {
    let dir = ConfigDir::new(SERVER, RULES);
    let pxed = Pxed::start(&dir.config(), None);
    let api = Api::new(pxed.addr("admin"), Some(TOKEN));
    for (method, path, body) in [
        ("GET", "/api/v1/machines", None),
        (
            "PUT",
            "/api/v1/machines/52:54:00:12:34:56/override",
            Some(r#"{"boot":"local"}"#),
        ),
        ("POST", "/api/v1/reload", None),
    ] {
        let a = api.call(method, path, body);
        assert_eq!(a.status, 404, "{method} {path}: {a:?}");
        assert!(
            a.json["error"].as_str().unwrap().contains("api_tokens"),
            "{a:?}"
        );
    }
    assert!(!script(&pxed).contains("local disk"), "nothing changed");
}

#[test]
fn authentication_missing_wrong_and_right_token() {
    let (_dir, pxed, api) = start();
    let admin = pxed.addr("admin");
    let missing = Api::new(admin, None).get("/api/v1/machines");
    assert_eq!(missing.status, 401, "{missing:?}");
    assert!(missing
        .headers
        .iter()
        .any(|(k, v)| k == "www-authenticate" && v == "Bearer"));
    assert!(missing.json["error"].is_string());
    let wrong = Api::new(admin, Some("alice-0123456789abcdef012345678X")).get("/api/v1/machines");
    assert_eq!(wrong.status, 401, "{wrong:?}");
    let basic = Api::new(admin, None).raw(
        "GET",
        "/api/v1/machines",
        &[("Authorization", "Basic YWxpY2U6eA==")],
        None,
    );
    assert_eq!(basic.status, 401, "a Basic header is no bearer token");
    // The wrong token cannot write either.
    let write = Api::new(admin, Some("nope-nope-nope-nope")).call(
        "PUT",
        &format!("/api/v1/machines/{MAC}/override"),
        Some(r#"{"boot":"local"}"#),
    );
    assert_eq!(write.status, 401);
    assert!(!script(&pxed).contains("local disk"));
    assert_eq!(api.get("/api/v1/machines").status, 200);
    assert_eq!(
        Api::new(admin, Some(BOB_TOKEN))
            .get("/api/v1/machines")
            .status,
        200
    );
    let unknown = api.get("/api/v1/nothing");
    assert_eq!(
        (unknown.status, unknown.json["error"].is_string()),
        (404, true)
    );
}

#[test]
fn overrides_labels_and_the_installer_callback() {
    let (dir, pxed, api) = start();
    assert!(script(&pxed).contains("pxed.rule=nec"));
    wait_seen(&api);
    // Seen: in the inventory, under any notation of its MAC.
    let machines = api.ok("/api/v1/machines");
    let m = &machines[0];
    assert_eq!(
        (m["mac"].as_str(), m["product"].as_str()),
        (Some(MAC), Some("Express5800/i120Ra-e1"))
    );
    assert!(m["last_seen"].is_string() && m["override"].is_null(), "{m}");
    let same = api.ok("/api/v1/machines/52-54-00-12-34-56");
    assert_eq!(same["mac"], MAC);

    // Reinstall once: the install rule, with a callback on the kernel line.
    let set = api.call(
        "PUT",
        "/api/v1/machines/525400123456/override",
        Some(r#"{"rule":"install","once":true}"#),
    );
    assert_eq!(set.status, 200, "{set:?}");
    assert_eq!(set.json["override"]["rule"], "install");
    assert_eq!(set.json["override"]["set_by"], "alice");
    let text = script(&pxed);
    assert!(text.contains("pxed.rule=install"), "{text}");
    let callback = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pxed.callback="))
        .unwrap_or_else(|| panic!("no callback URL: {text}"))
        .to_string();
    let explained = api.ok(&format!(
        "/api/v1/explain?mac={MAC}&product=Express5800%2Fx"
    ));
    assert_eq!(
        (explained["rule"].as_str(), explained["chosen_by"].as_str()),
        (Some("install"), Some("override"))
    );
    let rendered = api.ok(&format!("/api/v1/render?mac={MAC}"));
    assert!(rendered["text"]
        .as_str()
        .unwrap()
        .contains("pxed.rule=install"));
    let cli = Command::new(common::pxed_bin())
        .args(["explain", "--config"])
        .arg(dir.config())
        .args(["--mac", MAC])
        .output()
        .unwrap();
    let cli = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.starts_with("override: rule \"install\" once"), "{cli}");

    // A guessed token changes nothing; the minted one consumes the override.
    let path = callback
        .split_once("127.0.0.1")
        .unwrap()
        .1
        .split_once('/')
        .unwrap()
        .1;
    let forged =
        format!("/{}", path.rsplit_once('/').unwrap().0) + "/0123456789abcdef0123456789abcdef";
    let (head, _) = common::http::get(pxed.http(), &forged);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(
        script(&pxed).contains("pxed.rule=install"),
        "still overridden"
    );
    let (head, body) = common::http::get(pxed.http(), &format!("/{path}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}{body}");
    assert!(
        script(&pxed).contains("pxed.rule=nec"),
        "the rules decide again"
    );
    let (head, _) = common::http::get(pxed.http(), &format!("/{path}"));
    assert!(head.starts_with("HTTP/1.1 404"), "a token works once");
    assert!(api.ok(&format!("/api/v1/machines/{MAC}"))["override"].is_null());

    // Local disk until cleared; labels.
    let local = api.call(
        "PUT",
        &format!("/api/v1/machines/{MAC}/override"),
        Some(r#"{"boot":"local"}"#),
    );
    assert_eq!(local.json["override"]["boot"], "local");
    assert!(script(&pxed).contains("sanboot"), "local-boot script");
    let labels = api.call(
        "PUT",
        &format!("/api/v1/machines/{MAC}/labels"),
        Some(r#"{"rack":"r12","owner":"team a"}"#),
    );
    assert_eq!(
        labels.json["labels"],
        json!({"rack": "r12", "owner": "team a"})
    );
    let cleared = api.call("DELETE", &format!("/api/v1/machines/{MAC}/override"), None);
    assert_eq!(
        (cleared.status, cleared.json["override"].is_null()),
        (200, true)
    );
    assert!(script(&pxed).contains("pxed.rule=nec"));
    // A machine never seen can be given an override before its first boot.
    let early = api.call(
        "PUT",
        "/api/v1/machines/52:54:00:00:00:42/override",
        Some(r#"{"rule":"nec","once":false}"#),
    );
    assert_eq!(
        (early.status, early.json["last_seen"].is_null()),
        (200, true),
        "{early:?}"
    );

    // Every write is a boot event naming the client.
    let events = events_until(&dir, Some(MAC), "override cleared (by alice)");
    for want in [
        "api        ok         override set: rule \"install\" once (by alice)",
        "callback   ok         installer called back: override rule \"install\" once consumed",
        "callback   refused",
        "override set: local disk (by alice)",
        "labels set: [owner=team a, rack=r12] (by alice)",
        "override cleared (by alice)",
    ] {
        assert!(events.contains(want), "{want:?} missing:\n{events}");
    }
}

/// A classic pxelinux machine fetches its config over TFTP: a one-shot
/// override reaches it with this boot's callback URL on the kernel line,
/// pointing at the address it reached TFTP at and the HTTP port, and the
/// callback ends the override as over HTTP.
#[test]
fn a_one_shot_override_reaches_pxelinux_over_tftp_with_its_callback() {
    if !common::have_tool("curl", "pxelinux config over TFTP") {
        return;
    }
    let dir = ConfigDir::new(SERVER, RULES);
    // A fixed HTTP port, as in production: the URL is built from it.
    let http_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!(
        "http_listen = \"127.0.0.1:{http_port}\"\ntftp_listen = \"127.0.0.1:0\"\n{}",
        tokens_file(&dir)
    );
    dir.write_config(&server, RULES);
    let pxed = Pxed::start(&dir.config(), None);
    let api = Api::new(pxed.addr("admin"), Some(TOKEN));
    let tftp = pxed.addr("tftp");
    let config = || {
        common::sh(&format!(
            "curl -sS --fail tftp://{tftp}/pxelinux.cfg/01-52-54-00-12-34-56"
        ))
    };
    let set = api.call(
        "PUT",
        &format!("/api/v1/machines/{MAC}/override"),
        Some(r#"{"rule":"install","once":true}"#),
    );
    assert_eq!(set.status, 200, "{set:?}");
    let menu = config();
    assert!(menu.contains("pxed.rule=install"), "{menu}");
    let prefix = format!(
        "pxed.callback=http://{}/callback/52-54-00-12-34-56/",
        pxed.http()
    );
    let callback = menu
        .split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {prefix}<token> in:\n{menu}"));
    assert_eq!(callback.len(), 32, "{callback}");
    let path = format!("/callback/52-54-00-12-34-56/{callback}");
    let (head, body) = common::http::get(pxed.http(), &path);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}{body}");
    let after = config();
    assert!(
        after.contains("pxed.rule=default") && !after.contains("pxed.callback="),
        "the rules decide again:\n{after}"
    );
}

#[test]
fn bad_input_gets_4xx_and_changes_nothing() {
    let (dir, pxed, api) = start();
    let before = api.call(
        "PUT",
        &format!("/api/v1/machines/{MAC}/override"),
        Some(r#"{"rule":"nec","once":false}"#),
    );
    assert_eq!(before.status, 200);
    let path = format!("/api/v1/machines/{MAC}/override");
    let big = format!(r#"{{"rule":"{}","once":true}}"#, "x".repeat(20_000));
    let cases: Vec<(&str, String, Option<String>, u16)> = vec![
        (
            "PUT",
            "/api/v1/machines/52:54:00:zz/override".into(),
            Some(r#"{"boot":"local"}"#.into()),
            400,
        ),
        (
            "PUT",
            path.clone(),
            Some(r#"{"rule":"nope","once":true}"#.into()),
            422,
        ),
        (
            "PUT",
            path.clone(),
            Some(r#"{"rule":"install"}"#.into()),
            400,
        ),
        (
            "PUT",
            path.clone(),
            Some(r#"{"rule":"install","once":true,"boot":"local"}"#.into()),
            400,
        ),
        ("PUT", path.clone(), Some(r#"{"boot":"disk"}"#.into()), 400),
        (
            "PUT",
            path.clone(),
            Some(r#"{"rule":"install","once":true,"extra":1}"#.into()),
            400,
        ),
        (
            "PUT",
            path.clone(),
            Some(r#"{"rule":"install","once":"yes"}"#.into()),
            400,
        ),
        ("PUT", path.clone(), Some("{not json".into()), 400),
        ("PUT", path.clone(), Some(String::new()), 400),
        ("PUT", path.clone(), Some(big), 413),
        (
            "PUT",
            format!("/api/v1/machines/{MAC}/labels"),
            Some(r#"{"bad key":"x"}"#.into()),
            400,
        ),
        (
            "PUT",
            format!("/api/v1/machines/{MAC}/labels"),
            Some(r#"{"k":"line\nbreak"}"#.into()),
            400,
        ),
        (
            "PUT",
            format!("/api/v1/machines/{MAC}/labels"),
            Some(r#"{"k":1}"#.into()),
            400,
        ),
        ("DELETE", "/api/v1/machines/nope/override".into(), None, 400),
        ("POST", path.clone(), None, 405),
        ("GET", "/api/v1/explain?mac=zz".into(), None, 400),
        (
            "GET",
            format!("/api/v1/render?mac={MAC}&format=yaboot"),
            None,
            400,
        ),
    ];
    for (method, path, body, want) in cases {
        let a = api.call(method, &path, body.as_deref());
        assert_eq!(a.status, want, "{method} {path} {body:?}: {a:?}");
        assert!(
            a.json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{a:?}"
        );
    }
    let text_body = api.raw(
        "PUT",
        &path,
        &[("Content-Type", "text/plain")],
        Some(br#"{"boot":"local"}"#.to_vec()),
    );
    assert_eq!(text_body.status, 415, "{text_body:?}");
    let not_json = api.raw(
        "PUT",
        &path,
        &[("Content-Type", "application/jsonl")],
        Some(br#"{"boot":"local"}"#.to_vec()),
    );
    assert_eq!(not_json.status, 415, "{not_json:?}");
    let after = api.ok(&format!("/api/v1/machines/{MAC}"));
    assert_eq!(
        after["override"], before.json["override"],
        "nothing changed"
    );
    assert_eq!(after["labels"], json!({}));
    assert!(script(&pxed).contains("pxed.rule=nec"));
    // Only the one good write was recorded.
    let events = events_until(&dir, Some(MAC), "override set");
    assert_eq!(events.matches(" api ").count(), 1, "{events}");
    // Media types are case-insensitive, with parameters (RFC 9110 §8.3.1).
    let upper = api.raw(
        "PUT",
        &path,
        &[("Content-Type", "APPLICATION/JSON; charset=UTF-8")],
        Some(br#"{"boot":"local"}"#.to_vec()),
    );
    assert_eq!(upper.status, 200, "{upper:?}");
}

#[test]
fn reload_through_the_api() {
    let (dir, pxed, api) = start();
    let ok = api.call("POST", "/api/v1/reload", None);
    assert_eq!(
        (ok.status, ok.json["rules"].as_u64()),
        (200, Some(3)),
        "{ok:?}"
    );
    std::fs::write(dir.path().join("boot-templates/linux.ipxe"), "{{#if}}").unwrap();
    // The file watcher may reload first: either way the API refuses it.
    let refused = api.call("POST", "/api/v1/reload", None);
    assert_eq!(refused.status, 422, "{refused:?}");
    assert!(
        refused.json["error"]
            .as_str()
            .unwrap()
            .contains("linux.ipxe:1:"),
        "{refused:?}"
    );
    assert!(
        script(&pxed).contains("pxed.rule=nec"),
        "the last good config serves"
    );
    // `pxed events` reads the config too: mend it first.
    std::fs::copy(
        common::repo().join("boot-templates/linux.ipxe"),
        dir.path().join("boot-templates/linux.ipxe"),
    )
    .unwrap();
    let events = events_until(&dir, None, "config reload rejected (by alice)");
    assert!(events.contains("config reloaded (by alice)"), "{events}");
    assert!(
        events.contains("config reload rejected (by alice)"),
        "{events}"
    );
}

// ------------------------------------------------------------- OpenAPI ----

fn openapi() -> Value {
    let text = std::fs::read_to_string(common::repo().join("docs/openapi.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).expect("docs/openapi.yaml is YAML")
}

/// Follows a `$ref` within the document.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("local $ref");
            resolve(
                doc,
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {r}")),
            )
        }
        None => v,
    }
}

/// Checks `value` against the part of JSON Schema the document uses
/// (type, with "null" in a list; enum; required; properties;
/// additionalProperties; items; oneOf; $ref). Hand-written: a full JSON
/// Schema crate would be the largest dependency of the test build for six
/// keywords. Returns what does not match.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let schema = resolve(doc, schema);
    let mut bad = Vec::new();
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let fits = options
            .iter()
            .filter(|o| check(doc, o, value, at).is_empty())
            .count();
        if fits != 1 {
            bad.push(format!("{at}: {value} fits {fits} of oneOf"));
        }
        return bad;
    }
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if let Some(t) = schema.get("type") {
        let allowed: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let fits = allowed.contains(&kind) || (kind == "integer" && allowed.contains(&"number"));
        if !fits {
            bad.push(format!("{at}: {kind} is not {allowed:?}"));
            return bad;
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(value) {
            bad.push(format!("{at}: {value} is not one of {e:?}"));
        }
    }
    if let Value::Object(o) = value {
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !o.contains_key(r.as_str().unwrap()) {
                bad.push(format!("{at}: {r} is missing"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, v) in o {
            match (
                props.and_then(|p| p.get(k)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => bad.extend(check(doc, s, v, &format!("{at}.{k}"))),
                (None, Some(Value::Bool(false))) => {
                    bad.push(format!("{at}.{k} is not in the schema"))
                }
                (None, Some(extra)) => bad.extend(check(doc, extra, v, &format!("{at}.{k}"))),
                (None, None) => bad.push(format!("{at}.{k} is undocumented")),
            }
        }
    }
    if let (Value::Array(items), Some(s)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            bad.extend(check(doc, s, item, &format!("{at}[{i}]")));
        }
    }
    bad
}

/// The document's operations are exactly the server's routes, and every
/// operation, called with the document's examples, answers one of its
/// documented statuses with a body that fits the documented schema.
#[test]
fn the_openapi_document_matches_the_server() {
    let doc = openapi();
    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in paths {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    let mut routed: Vec<(String, String)> = pxed::http::admin::API_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    routed.sort();
    assert_eq!(
        documented, routed,
        "docs/openapi.yaml and the routes differ"
    );

    let (_dir, pxed, api) = start();
    script(&pxed);
    wait_seen(&api);
    let mac_example = doc["components"]["parameters"]["mac"]["example"]
        .as_str()
        .unwrap();
    let mut checked = 0;
    for (method, path) in &documented {
        let op = &paths[path][method.to_lowercase()];
        let mut query: Vec<String> = Vec::new();
        for p in op
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some("query"), Some(ex)) = (p["in"].as_str(), p["example"].as_str()) {
                query.push(format!(
                    "{}={}",
                    p["name"].as_str().unwrap(),
                    ex.replace('/', "%2F")
                ));
            }
        }
        let mut url = path.replace("{mac}", mac_example);
        if !query.is_empty() {
            url = format!("{url}?{}", query.join("&"));
        }
        let body = op
            .pointer("/requestBody/content/application~1json/example")
            .map(|e| e.to_string());
        let a = api.call(method, &url, body.as_deref());
        let response = op["responses"]
            .get(a.status.to_string())
            .unwrap_or_else(|| {
                panic!(
                    "{method} {url}: status {} is not documented: {a:?}",
                    a.status
                )
            });
        let response = resolve(&doc, response);
        let schema = &response["content"]["application/json"]["schema"];
        let bad = check(&doc, schema, &a.json, &format!("{method} {path}"));
        assert!(bad.is_empty(), "{bad:#?}\n{a:?}");
        assert!(
            a.status < 300,
            "{method} {url} with the document's examples: {a:?}"
        );
        checked += 1;
    }
    assert_eq!(checked, routed.len());
    // Errors fit the Error schema too.
    let unauthorized = Api::new(pxed.addr("admin"), None).get("/api/v1/machines");
    let schema = &doc["components"]["schemas"]["Error"];
    assert!(check(&doc, schema, &unauthorized.json, "401").is_empty());
}
