//! `pxed machines` and `pxed machine <mac> …`: a client of a running
//! daemon's JSON API (docs/api.md). Where the API is: `--api`, else
//! `PXED_API`, else the config's `admin_listen`. The token: `PXED_API_TOKEN`,
//! else `--token-file`, else the config's `api_tokens` file (the client
//! `--client` names, or its first); never a command-line argument, which
//! every user of the host could read in the process list.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::Outcome;

#[derive(Args)]
pub struct ApiArgs {
    /// The rules file, for admin_listen and api_tokens.
    #[arg(long, default_value = super::DEFAULT_CONFIG, global = true, value_hint = clap::ValueHint::FilePath)]
    config: PathBuf,
    /// The admin listener's URL (default: the config's admin_listen).
    #[arg(long, env = "PXED_API", global = true)]
    api: Option<String>,
    /// A file holding the token (`token` or `name:token` lines); default:
    /// the config's api_tokens file. `PXED_API_TOKEN` beats both.
    #[arg(long, value_hint = clap::ValueHint::FilePath, global = true)]
    token_file: Option<PathBuf>,
    /// Which client of the token file to be (default: its first).
    #[arg(long, global = true)]
    client: Option<String>,
    /// Print the API's JSON instead of text for people.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
pub enum Action {
    /// Boot RULE once: until its installer calls back (then the rules decide again).
    Reinstall { rule: String },
    /// Boot RULE until `clear`.
    Boot { rule: String },
    /// Boot the local disk until `clear`.
    Local,
    /// Clear the override: the rules of machines.toml decide again.
    Clear,
    /// Replace the machine's labels: KEY=VALUE… (none: remove them all).
    Label { labels: Vec<String> },
}

/// A connection to the API: base URL and token.
struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// The first token of a token file, or `client`'s.
fn token_from_file(path: &Path, client: Option<&str>) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    for line in lines {
        let (name, token) = line.split_once(':').unwrap_or(("", line));
        if client.map_or(true, |c| c == name.trim()) {
            return Ok(token.trim().to_string());
        }
    }
    match client {
        Some(c) => anyhow::bail!("{}: no client {c:?}", path.display()),
        None => anyhow::bail!("{}: no token", path.display()),
    }
}

impl Client {
    fn new(args: &ApiArgs) -> anyhow::Result<Client> {
        let config = match (&args.api, std::env::var("PXED_API_TOKEN").ok()) {
            (Some(_), Some(_)) => None,
            _ => Some(super::load(&args.config)?),
        };
        let base = match (&args.api, &config) {
            (Some(url), _) => url.trim_end_matches('/').to_string(),
            (None, Some(c)) => {
                let mut addr = c.server.admin_listen.with_context(|| {
                    format!(
                        "{}: admin_listen = \"\": no API to talk to",
                        c.path.display()
                    )
                })?;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{addr}")
            }
            (None, None) => anyhow::bail!("no API address: pass --api"),
        };
        let token = match (std::env::var("PXED_API_TOKEN"), &args.token_file, &config) {
            (Ok(t), _, _) => t,
            (Err(_), Some(file), _) => token_from_file(file, args.client.as_deref())?,
            (Err(_), None, Some(c)) => match &c.server.api_tokens {
                Some(tokens) => token_from_file(&tokens.path, args.client.as_deref())?,
                None => anyhow::bail!(
                    "{}: no api_tokens: the daemon has no API (docs/api.md)",
                    c.path.display()
                ),
            },
            (Err(_), None, None) => anyhow::bail!("no token: set PXED_API_TOKEN or --token-file"),
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build()
            .into();
        Ok(Client { base, token, agent })
    }

    /// One request; the JSON answer, or the API's error message.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .body(body.map(|b| b.to_string()).unwrap_or_default())?;
        let mut resp = self
            .agent
            .run(req)
            .with_context(|| format!("cannot reach the pxed API at {}", self.base))?;
        let status = resp.status();
        let text = resp.body_mut().read_to_string()?;
        let json: Value = serde_json::from_str(&text)
            .with_context(|| format!("{url}: not a JSON answer ({status})"))?;
        if !status.is_success() {
            let why = json["error"].as_str().unwrap_or("no message");
            anyhow::bail!("{method} {path}: {status}: {why}");
        }
        Ok(json)
    }
}

/// `pxed machines`: every machine the daemon knows.
pub fn list(args: &ApiArgs) -> anyhow::Result<Outcome> {
    let machines = Client::new(args)?.call("GET", "/api/v1/machines", None)?;
    if args.json {
        println!("{machines:#}");
        return Ok(Outcome::Ok);
    }
    println!(
        "{:17}  {:20}  {:16}  {:28}  PRODUCT",
        "MAC", "LAST SEEN", "RULE", "OVERRIDE"
    );
    for m in machines.as_array().into_iter().flatten() {
        println!(
            "{:17}  {:20}  {:16}  {:28}  {}",
            text(&m["mac"]),
            text(&m["last_seen"]),
            text(&m["rule"]),
            override_text(&m["override"]),
            text(&m["product"]),
        );
    }
    Ok(Outcome::Ok)
}

/// `pxed machine <mac> [action]`.
pub fn machine(mac: &str, action: Option<&Action>, args: &ApiArgs) -> anyhow::Result<Outcome> {
    // Any notation machines.toml accepts, parsed here as the API would: a
    // typo is refused as what it is, not sent on as another path.
    let mac: pxed::core::identity::Mac = mac.parse()?;
    let client = Client::new(args)?;
    let path = format!("/api/v1/machines/{mac}");
    let once = |rule: &str, once| serde_json::json!({ "rule": rule, "once": once });
    let m = match action {
        None => client.call("GET", &path, None)?,
        Some(Action::Reinstall { rule }) => {
            client.call("PUT", &format!("{path}/override"), Some(once(rule, true)))?
        }
        Some(Action::Boot { rule }) => {
            client.call("PUT", &format!("{path}/override"), Some(once(rule, false)))?
        }
        Some(Action::Local) => client.call(
            "PUT",
            &format!("{path}/override"),
            Some(serde_json::json!({ "boot": "local" })),
        )?,
        Some(Action::Clear) => client.call("DELETE", &format!("{path}/override"), None)?,
        Some(Action::Label { labels }) => {
            let mut map = serde_json::Map::new();
            for l in labels {
                let (k, v) = l
                    .split_once('=')
                    .with_context(|| format!("label {l:?}: expected KEY=VALUE"))?;
                map.insert(k.to_string(), Value::String(v.to_string()));
            }
            client.call("PUT", &format!("{path}/labels"), Some(Value::Object(map)))?
        }
    };
    if args.json {
        println!("{m:#}");
    } else {
        show(&m);
    }
    Ok(Outcome::Ok)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `rule "install" once (by ops)`, `local disk (by ops)`, `-`.
fn override_text(o: &Value) -> String {
    if o.is_null() {
        return "-".into();
    }
    let what = match (o["boot"].as_str(), o["once"].as_bool()) {
        (Some("local"), _) => "local disk".to_string(),
        (_, Some(true)) => format!("{} once", text(&o["rule"])),
        _ => format!("{} until cleared", text(&o["rule"])),
    };
    format!("{what} (by {})", text(&o["set_by"]))
}

fn show(m: &Value) {
    let labels: Vec<String> = m["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", text(v)))
        .collect();
    for (name, value) in [
        ("mac", text(&m["mac"])),
        ("override", override_text(&m["override"])),
        (
            "labels",
            if labels.is_empty() {
                "-".into()
            } else {
                labels.join(" ")
            },
        ),
        ("last seen", text(&m["last_seen"])),
        ("first seen", text(&m["first_seen"])),
        (
            "last step",
            format!("{} {}", text(&m["last_step"]), text(&m["last_outcome"])),
        ),
        ("rule", text(&m["rule"])),
        ("ip", text(&m["ip"])),
        ("arch", text(&m["arch"])),
        ("product", text(&m["product"])),
        ("serial", text(&m["serial"])),
        ("manufacturer", text(&m["manufacturer"])),
        ("uuid", text(&m["uuid"])),
    ] {
        println!("{name:13} {value}");
    }
}
