//! A real browser the test drives: headless Chromium through chromedriver's
//! W3C WebDriver protocol (JSON over HTTP; the five commands the tests use,
//! sent with ureq, instead of an async WebDriver crate and its runtime).
//! chromedriver is started on a free loopback port and stopped by its PID.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// W3C's name for an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; `None` (after
    /// printing `skipped: …`) when either is missing.
    pub fn start(what: &str) -> Option<Browser> {
        if !super::have_tool("chromedriver", what) || !super::have_tool("chromium", what) {
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while agent.get(format!("{base}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            agent,
            _profile: profile,
        };
        let args = json!([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
            format!("--user-data-dir={}", b._profile.path().display()),
        ]);
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
        }}});
        let created = b.send("POST", "/session", Some(caps));
        b.session = created["sessionId"]
            .as_str()
            .expect("a session")
            .to_string();
        Some(b)
    }

    fn send(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        match self.try_send(method, path, body) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    /// A command; its value, or the error WebDriver answered.
    fn try_send(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Content-Type", "application/json")
            .body(body.map(|b| b.to_string()).unwrap_or_default())
            .unwrap();
        let mut resp = self.agent.run(req).expect("webdriver request");
        let status = resp.status();
        let answer: Value =
            serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
        if !status.is_success() {
            return Err(format!("{method} {path}: {status} {answer}"));
        }
        Ok(answer["value"].clone())
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.send(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    fn find(&self, css: &str) -> String {
        let e = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        e.get(ELEMENT)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {e}"))
            .to_string()
    }

    pub fn click(&self, css: &str) {
        let id = self.find(css);
        self.cmd("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// The element's text as the user sees it.
    pub fn text(&self, css: &str) -> String {
        let id = self.find(css);
        self.cmd("GET", &format!("/element/{id}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The element's text once it starts with `prefix` (a click that submits
    /// a form can return before the next page is there); the last text seen
    /// after 10 s otherwise.
    pub fn wait_text(&self, css: &str, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let session = format!("/session/{}", self.session);
            let e = self.try_send(
                "POST",
                &format!("{session}/elements"),
                Some(json!({"using": "css selector", "value": css})),
            );
            // Mid-navigation the element may go stale: try again.
            let text = e
                .ok()
                .as_ref()
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|el| el.get(ELEMENT))
                .and_then(Value::as_str)
                .and_then(|id| {
                    self.try_send("GET", &format!("{session}/element/{id}/text"), None)
                        .ok()
                })
                .and_then(|t| t.as_str().map(str::to_string))
                .unwrap_or_default();
            if text.starts_with(prefix) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The value of a cookie the browser holds (HttpOnly ones too).
    pub fn cookie(&self, name: &str) -> Option<String> {
        let c = self.cmd("GET", &format!("/cookie/{name}"), None);
        c["value"].as_str().map(str::to_string)
    }

    /// A PNG of the window, written to `path`.
    pub fn screenshot(&self, path: &std::path::Path) {
        let b64 = self.cmd("GET", "/screenshot", None);
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .agent
                .delete(format!("{}/session/{}", self.base, self.session))
                .call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
