//! The dashboard of `grace serve` (`GET /` on the admin listener),
//! black-box.
//!
//! Over plain HTTP: the page and its files are served without the admin
//! token and hold no data, `GET /events` streams the status under the
//! token, a stream whose reader goes away stops counting, and nothing of
//! the dashboard is reachable through the public listener.
//!
//! In a real browser: headless Chromium, driven over WebDriver by
//! `chromedriver`, opens the page while a client sends traffic through
//! grace; the test breaks `grace demo-upstream` through its fault endpoint
//! and waits for the page to show the service's breaker open and stale
//! answers counted, flips a kill switch on the page and checks grace's
//! `/status`, and, with an admin token, checks the page asks for it and
//! switches only with it. Without `chromium` and `chromedriver` on `PATH`
//! those tests say why and pass, unless `GRACE_REQUIRE_BROWSER=1` (as in
//! `.ci/run`), when they fail.
//!
//! `GRACE_DASHBOARD_SCREENSHOT=docs/dashboard.png` makes
//! `the_page_shows_a_breaker_opening_and_switches_a_feature_off` keep
//! traffic running longer and save the page as a PNG there (how the
//! README's picture is made).

mod support;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use support::gateway::{GATEWAY_TIMEOUT, Gateway, demo_config};
use support::upstream::{DemoUpstream, http_agent};

const TOKEN: &str = "s3cret-token";
/// The service the demo's `GET /products/{id}` routes go to.
const SERVICE: &str = "product";
/// Set to `1`, a machine without the browser fails the browser tests.
const REQUIRE_BROWSER: &str = "GRACE_REQUIRE_BROWSER";
/// Where to save a screenshot of the page, when set.
const SCREENSHOT: &str = "GRACE_DASHBOARD_SCREENSHOT";
/// The browser's window: wide enough for the page's two columns.
const WINDOW: (u32, u32) = (1280, 1240);

fn token_gateway(upstream: &DemoUpstream) -> Gateway {
    Gateway::builder()
        .config(&demo_config(&upstream.url(""), ""))
        .args(["--admin-token", TOKEN])
        .spawn()
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

// ---------------------------------------------------------------------------
// Over plain HTTP

#[test]
fn the_page_and_its_files_are_served_without_the_token_and_hold_no_data() {
    let upstream = DemoUpstream::spawn();
    let gateway = token_gateway(&upstream);
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/dashboard.css", "text/css; charset=utf-8"),
        ("/dashboard.js", "text/javascript; charset=utf-8"),
    ] {
        let reply = gateway.admin_get(path);
        assert_eq!(reply.status, 200, "GET {path}: {reply:?}");
        assert_eq!(reply.header("content-type"), Some(content_type));
        let policy = reply.header("content-security-policy").unwrap_or("");
        assert!(
            policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"),
            "GET {path}: {policy:?}"
        );
        for secret in [TOKEN, SERVICE, "recommendations", "\"mode\":"] {
            assert!(!reply.body.contains(secret), "GET {path} holds {secret:?}");
        }
    }
    let page = gateway.admin_get("/").body;
    assert!(page.contains(r#"src="/dashboard.js""#), "{page}");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "{page}"
    );
    let events = gateway.admin_send("GET", "/events", "", &[]);
    assert_eq!(events.status, 401, "{events:?}");
    assert_eq!(events.header("www-authenticate"), Some("Bearer"));
}

#[test]
fn events_stream_the_status_once_a_second_and_a_closed_stream_stops_counting() {
    let upstream = DemoUpstream::spawn();
    let gateway = token_gateway(&upstream);
    let auth = [("authorization", bearer())];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut reader = EventReader::open(gateway.admin_addr(), Some(&bearer()));
    assert_eq!(reader.status, 200);
    assert_eq!(
        reader.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let first = reader.next_event();
    let second = reader.next_event();
    let services = first["services"].as_array().expect("services");
    assert!(
        services.iter().any(|service| service["name"] == SERVICE),
        "{first}"
    );
    assert!(
        second["uptime_ms"].as_u64() > first["uptime_ms"].as_u64(),
        "{first} then {second}"
    );
    assert_eq!(second["event_streams"], 1, "{second}");
    let mut other = EventReader::open(gateway.admin_addr(), Some(&bearer()));
    assert_eq!(other.next_event()["event_streams"], 2);
    drop(reader);
    drop(other);
    // The tab is closed: the streams' tasks end on their own.
    gateway.wait_until("the event streams to end", || {
        let status = gateway.status_with(&auth);
        (status["event_streams"] == 0).then_some(status)
    });
    let refused = EventReader::open(gateway.admin_addr(), Some("Bearer wrong"));
    assert_eq!(refused.status, 401);
}

#[test]
fn the_dashboard_is_never_served_on_the_public_listener() {
    let upstream = DemoUpstream::spawn();
    let gateway = Gateway::with_config(&demo_config(&upstream.url(""), ""));
    for path in ["/", "/events", "/dashboard.js", "/dashboard.css"] {
        assert_eq!(gateway.get(path).status, 404, "GET {path}");
    }
    assert_eq!(gateway.status()["event_streams"], 0);
}

/// A `GET /events` read by hand, a line at a time.
struct EventReader {
    status: u16,
    headers: Vec<(String, String)>,
    lines: BufReader<TcpStream>,
}

impl EventReader {
    fn open(admin: SocketAddr, authorization: Option<&str>) -> EventReader {
        let mut stream = TcpStream::connect(admin).expect("connect");
        stream
            .set_read_timeout(Some(GATEWAY_TIMEOUT))
            .expect("read timeout");
        let authorization = authorization
            .map(|value| format!("Authorization: {value}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "GET /events HTTP/1.1\r\nHost: grace\r\nAccept: text/event-stream\r\n{authorization}\r\n"
        )
        .expect("send the request");
        let mut lines = BufReader::new(stream);
        let mut line = String::new();
        lines.read_line(&mut line).expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok());
        let mut headers = Vec::new();
        loop {
            line.clear();
            lines.read_line(&mut line).expect("header line");
            let Some((name, value)) = line.trim_end().split_once(':') else {
                break;
            };
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        EventReader {
            status: status.unwrap_or_else(|| panic!("bad status line {line:?}")),
            headers,
            lines,
        }
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    }

    /// The next event's data, as JSON (the body is chunked: the chunk
    /// sizes are lines of their own, skipped here).
    fn next_event(&mut self) -> Value {
        let mut line = String::new();
        loop {
            line.clear();
            let read = self.lines.read_line(&mut line).expect("an event");
            assert!(read > 0, "the stream ended");
            if let Some(data) = line.trim_end().strip_prefix("data: ") {
                return serde_json::from_str(data).expect("an event's data is JSON");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// In a browser

#[test]
fn the_page_shows_a_breaker_opening_and_switches_a_feature_off() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let screenshot = std::env::var_os(SCREENSHOT).map(PathBuf::from);
    let upstream = DemoUpstream::spawn();
    let gateway = Gateway::with_config(&demo_config(&upstream.url(""), ""));
    let traffic = Traffic::start(&gateway);
    browser.goto(&gateway.admin_url("/"));
    browser.wait_for("the page to show the product breaker closed", || {
        browser.eval(&card_state(SERVICE)) == json!("closed")
            && outcome_total(&browser, "fresh") > 0
    });
    if screenshot.is_some() {
        // Some healthy traffic on the chart before the outage.
        thread::sleep(Duration::from_secs(20));
    }
    upstream.set_faults(json!({ "mode": "error" }));
    browser.wait_for("the page to show the product breaker open", || {
        browser.eval(&card_state(SERVICE)) == json!("open")
    });
    browser.wait_for("the page to count stale answers", || {
        outcome_total(&browser, "stale") > 0
    });
    let reason = browser.eval(&format!(
        "return document.querySelector('{} .transitions li .reason').textContent",
        card(SERVICE)
    ));
    assert!(
        reason.as_str().is_some_and(|text| !text.is_empty()),
        "the last transition shows no reason: {reason}"
    );
    assert_eq!(gateway.service_status(SERVICE)["state"], "open");
    assert_eq!(gateway.status()["event_streams"], 1, "the page's stream");

    if screenshot.is_some() {
        // Stale answers on the chart for a while.
        thread::sleep(Duration::from_secs(15));
    }

    browser.click(&feature_switch("reviews"));
    let status = gateway.wait_for_status("the page's kill switch", |status| {
        status["killed_features"] == json!(["reviews"])
    });
    assert_eq!(status["mode"], "normal");
    browser.wait_for("the page to show reviews killed", || {
        browser.eval("return document.querySelector('li[data-feature=\"reviews\"]').dataset.killed")
            == json!("true")
    });
    if let Some(path) = &screenshot {
        browser.save_screenshot(path);
    }
    browser.click("#mode-buttons button[data-mode=\"degraded\"]");
    gateway.wait_for_status("the page's mode", |status| status["mode"] == "degraded");

    drop(traffic);
    drop(browser);
    gateway.wait_for_status("the closed page's stream to end", |status| {
        status["event_streams"] == 0
    });
}

#[test]
fn with_a_token_the_page_asks_for_it_and_switches_only_with_it() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let upstream = DemoUpstream::spawn();
    let gateway = token_gateway(&upstream);
    let authorization = bearer();
    let auth = [("authorization", authorization.as_str())];
    let token_hint = "return document.getElementById('token-form').hidden ? null \
                      : document.getElementById('token-hint').textContent";

    browser.goto(&gateway.admin_url("/"));
    browser.wait_for("the page to ask for the token", || {
        browser
            .eval(token_hint)
            .as_str()
            .is_some_and(|hint| hint.contains("asks"))
    });
    let cards = "return document.querySelectorAll('#services article').length";
    assert_eq!(browser.eval(cards), 0, "data shown without the token");

    browser.type_into("#token-input", "not-the-token");
    browser.click("#token-form button[type=submit]");
    browser.wait_for("the page to say the token was refused", || {
        browser
            .eval(token_hint)
            .as_str()
            .is_some_and(|hint| hint.contains("refused"))
    });
    assert_eq!(browser.eval(cards), 0, "data shown with a wrong token");
    let status = gateway.status_with(&auth);
    assert_eq!(status["event_streams"], 0, "{status}");
    assert_eq!(status["killed_features"], json!([]));

    browser.type_into("#token-input", TOKEN);
    browser.click("#token-form button[type=submit]");
    browser.wait_for("the page to show the features", || {
        browser.eval(&format!(
            "return document.querySelector('{}') !== null",
            feature_switch("search")
        )) == json!(true)
    });
    browser.click(&feature_switch("search"));
    gateway.wait_until("the page's kill switch, with the token", || {
        let status = gateway.status_with(&auth);
        (status["killed_features"] == json!(["search"])).then_some(status)
    });
    assert_eq!(
        browser.eval("return sessionStorage.getItem('grace.adminToken')"),
        TOKEN
    );
    assert_eq!(
        browser.eval("return localStorage.length"),
        0,
        "kept beyond the tab"
    );
}

fn card(service: &str) -> String {
    format!("article.service[data-service=\"{service}\"]")
}

/// A script giving the breaker state the page shows for `service`.
fn card_state(service: &str) -> String {
    format!(
        "const card = document.querySelector('{}'); return card ? card.dataset.state : null",
        card(service)
    )
}

fn feature_switch(feature: &str) -> String {
    format!("input.switch[data-feature=\"{feature}\"]")
}

/// The total the page shows for `outcome`.
fn outcome_total(browser: &Browser, outcome: &str) -> u64 {
    let text = browser.eval(&format!(
        "const cell = document.querySelector('tr[data-outcome=\"{outcome}\"] .total'); \
         return cell ? cell.textContent : ''"
    ));
    text.as_str()
        .unwrap_or("")
        .replace(',', "")
        .parse()
        .unwrap_or(0)
}

/// Clients reading (and now and then writing) through grace until dropped.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Traffic {
    fn start(gateway: &Gateway) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let public = gateway.url("");
        let thread = thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                let agent = http_agent();
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    for path in [
                        format!("/products/{}", round % 5),
                        format!("/products/{}/reviews", round % 3),
                        format!("/users/{}", round % 4),
                        format!("/recommendations/{}", round % 4),
                    ] {
                        let _ = agent.get(&format!("{public}{path}")).call();
                    }
                    if round.is_multiple_of(10) {
                        let _ = agent
                            .post(&format!("{public}/orders"))
                            .content_type("application/json")
                            .send(r#"{"item":1}"#);
                    }
                    thread::sleep(Duration::from_millis(40));
                }
            }
        });
        Traffic {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Headless Chromium, driven through a `chromedriver` of its own.
struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
}

impl Browser {
    /// The browser, or `None` (after saying why) when `chromium` or
    /// `chromedriver` is missing and [`REQUIRE_BROWSER`] is not `1`.
    fn start() -> Option<Browser> {
        let (Some(chromium), Some(chromedriver)) =
            (find_program("chromium"), find_program("chromedriver"))
        else {
            let why = "chromium and chromedriver are needed on PATH for the browser tests \
                       (Debian: apt-get install chromium chromium-driver)";
            if std::env::var(REQUIRE_BROWSER).as_deref() == Ok("1") {
                panic!("{why}; {REQUIRE_BROWSER}=1");
            }
            eprintln!("skipped: {why}");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("start {}: {err}", chromedriver.display()));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let mut browser = Browser {
            runtime,
            client: None,
            driver,
        };
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                ],
            }
        });
        let capabilities = match capabilities {
            Value::Object(map) => map,
            _ => unreachable!("an object"),
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + GATEWAY_TIMEOUT;
        let client = loop {
            let connected = browser.runtime.block_on(
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(capabilities.clone())
                    .connect(&url),
            );
            match connected {
                Ok(client) => break client,
                // chromedriver is not listening yet.
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
                Err(err) => panic!("no WebDriver session from chromedriver: {err}"),
            }
        };
        browser.client = Some(client);
        Some(browser)
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }

    fn goto(&self, url: &str) {
        self.runtime
            .block_on(self.client().goto(url))
            .unwrap_or_else(|err| panic!("open {url}: {err}"));
    }

    /// Runs `script` (a function body) in the page; what it returns.
    fn eval(&self, script: &str) -> Value {
        self.runtime
            .block_on(self.client().execute(script, Vec::new()))
            .unwrap_or_else(|err| panic!("run {script:?}: {err}"))
    }

    fn click(&self, css: &str) {
        self.runtime
            .block_on(async { self.client().find(Locator::Css(css)).await?.click().await })
            .unwrap_or_else(|err| panic!("click {css}: {err}"));
    }

    fn type_into(&self, css: &str, text: &str) {
        self.runtime
            .block_on(async {
                let field = self.client().find(Locator::Css(css)).await?;
                field.clear().await?;
                field.send_keys(text).await
            })
            .unwrap_or_else(|err| panic!("type into {css}: {err}"));
    }

    /// Polls `check` until it holds; fails the test with the page's text
    /// after [`GATEWAY_TIMEOUT`].
    fn wait_for(&self, what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + GATEWAY_TIMEOUT;
        while !check() {
            if Instant::now() >= deadline {
                let text = self.eval("return document.body.innerText");
                panic!("waited {GATEWAY_TIMEOUT:?} for {what}; the page shows:\n{text}");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Saves the whole page (the window grown to fit it) as a PNG.
    fn save_screenshot(&self, path: &std::path::Path) {
        let below = self.eval("return document.documentElement.scrollHeight - window.innerHeight");
        let below = below.as_u64().unwrap_or(0) as u32;
        let png = self
            .runtime
            .block_on(async {
                if below > 0 {
                    self.client()
                        .set_window_size(WINDOW.0, WINDOW.1 + below)
                        .await?;
                }
                self.client().screenshot().await
            })
            .expect("a screenshot");
        std::fs::write(path, png).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
        eprintln!("saved the page to {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `name`'s path on `PATH`, if it is there.
fn find_program(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}
