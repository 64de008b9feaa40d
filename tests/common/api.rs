//! A client of pxed's JSON API for tests: real HTTP over a socket (ureq),
//! any method, the status and the JSON it answered.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::ConfigDir;

/// The token tests give the client `alice` (and `bob` another).
pub const TOKEN: &str = "alice-0123456789abcdef0123456789";
pub const BOB_TOKEN: &str = "bob-fedcba9876543210fedcba98765";

/// Writes `tokens` (the API's token file) into the config directory and
/// returns the `[server]` line naming it.
pub fn tokens_file(dir: &ConfigDir) -> String {
    let path: PathBuf = dir.path().join("tokens");
    std::fs::write(
        &path,
        format!("# test clients\nalice:{TOKEN}\nbob:{BOB_TOKEN}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    "api_tokens = \"tokens\"".to_string()
}

pub struct Api {
    pub admin: SocketAddr,
    pub token: Option<String>,
    agent: ureq::Agent,
}

/// One answer: status and body (JSON when it parses, else a string).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub json: serde_json::Value,
    pub headers: Vec<(String, String)>,
}

impl Api {
    pub fn new(admin: SocketAddr, token: Option<&str>) -> Api {
        // A connection per request: pxed closes a connection whose request
        // body it refused unread (401, 405, 415, a bad MAC), and a pooled
        // one would then fail the next request.
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_idle_connections(0)
            .build()
            .into();
        Api {
            admin,
            token: token.map(str::to_string),
            agent,
        }
    }

    /// `method path` with an optional JSON body (sent as application/json).
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        let headers: &[(&str, &str)] = if body.is_some() {
            &[("Content-Type", "application/json")]
        } else {
            &[]
        };
        self.raw(method, path, headers, body.map(|b| b.as_bytes().to_vec()))
    }

    pub fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Answer {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.admin));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body.unwrap_or_default()).unwrap();
        let mut resp = self.agent.run(req).expect("API request");
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Answer {
            status,
            json,
            headers,
        }
    }

    pub fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None)
    }

    /// GET that must succeed: its JSON.
    pub fn ok(&self, path: &str) -> serde_json::Value {
        let a = self.get(path);
        assert_eq!(a.status, 200, "GET {path}: {a:?}");
        a.json
    }
}
