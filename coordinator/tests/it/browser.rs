//! The dashboard in a real browser: Debian's headless Chromium driven over
//! WebDriver (chromedriver) against a real coordinator running a small
//! study. Skipped, with the reason printed, where Chromium or chromedriver
//! is not installed (`scripts/test` installs both).
//!
//! Screenshots of every page go to `$CARGO_TARGET_TMPDIR/dashboard-shots/`.
//!
//! The WebDriver calls are the handful of W3C endpoints this test needs,
//! over reqwest: a client library would bring its own HTTP and TLS stack
//! for five requests.

use crate::{Server, loss, study};
use hpo_coordinator::http::{DashboardAuth, HttpConfig};
use hpo_proto::{StudyId, TrialId};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process and one browser session; both end on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Browser {
    async fn start() -> Option<Browser> {
        let chromium = std::env::var("HPO_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
        let driver = std::env::var("HPO_CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.into());
        for p in [&chromium, &driver] {
            if !std::path::Path::new(p).exists() {
                println!(
                    "skipping the browser test: {p} is missing (apt-get install chromium chromium-driver)"
                );
                return None;
            }
        }
        let port = free_port();
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-quic",
                    "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let mut b = Browser {
            driver: child,
            base,
            session: String::new(),
            http,
            _profile: profile,
        };
        let v = b.call("POST", "/session", caps).await;
        b.session = v["sessionId"]
            .as_str()
            .or_else(|| v["value"]["sessionId"].as_str())
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        Some(b)
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let r = req.send().await.unwrap();
        let v: Value = r.json().await.unwrap();
        if let Some(e) = v["value"]["error"].as_str() {
            panic!("webdriver {method} {path}: {e}: {}", v["value"]["message"]);
        }
        v
    }

    async fn goto(&self, url: &str) {
        self.call(
            "POST",
            &format!("/session/{}/url", self.session),
            json!({"url": url}),
        )
        .await;
    }

    /// Runs `script` (a function body; `arguments` as given) in the page.
    async fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &format!("/session/{}/execute/sync", self.session),
            json!({"script": script, "args": args}),
        )
        .await["value"]
            .clone()
    }

    /// Waits until `script` returns something truthy; returns it.
    async fn wait_for(&self, what: &str, script: &str, args: Value) -> Value {
        let start = Instant::now();
        loop {
            let v = self.js(script, args.clone()).await;
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let body = self
                    .js(
                        "return document.body ? document.body.innerText.slice(0, 2000) : ''",
                        json!([]),
                    )
                    .await;
                panic!("timed out waiting for {what}; page text: {body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn ready(&self, page: &str) {
        self.wait_for(
            page,
            "return document.body && document.body.dataset.ready === '1'",
            json!([]),
        )
        .await;
    }

    async fn screenshot(&self, dir: &PathBuf, name: &str) {
        use base64::Engine;
        let v = self
            .call(
                "GET",
                &format!("/session/{}/screenshot", self.session),
                Value::Null,
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v["value"].as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn click(&self, selector: &str) {
        let found = self
            .js(
                "const e = document.querySelector(arguments[0]); if (!e) return false; e.scrollIntoView(); e.click(); return true;",
                json!([selector]),
            )
            .await;
        assert_eq!(found, Value::Bool(true), "no element {selector}");
    }

    async fn points(&self, selector: &str) -> u64 {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? Number(e.dataset.points || 0) : -1;",
            json!([selector]),
        )
        .await
        .as_i64()
        .unwrap_or(-1)
        .max(0) as u64
    }
}

/// 12 trials: 10 completed with three reports each, one running (two
/// reports so far), and the study still running.
async fn study_for_the_browser(server: &Server) -> (StudyId, TrialId) {
    let client = server.client().await;
    let id = client
        .submit(
            &study(
                "random",
                30,
                4,
                "",
                r#"x = { type = "float", low = 0.001, high = 1.0, log = true }
y = { type = "int", low = 0, high = 9 }
act = ["relu", "tanh", "gelu"]"#,
            ),
            "browser.toml",
        )
        .await
        .unwrap();
    let w = server.worker("browser-worker").await;
    for _ in 0..10 {
        let a = w.acquire("cpu:0").await.unwrap().unwrap();
        crate::run_trial(&w, &a).await;
    }
    let a = w.acquire("cuda:0").await.unwrap().unwrap();
    w.report(a.trial, a.attempt, 1, &loss(0.9)).await.unwrap();
    w.report(a.trial, a.attempt, 2, &loss(0.7)).await.unwrap();
    (id, a.trial)
}

/// The table's first page sorted by value, as the API gives it.
async fn by_value(base: &str, id: StudyId, desc: bool) -> Vec<u64> {
    let resp: Value = reqwest::get(format!(
        "{base}/api/studies/{id}/trials?sort=value&order={}&per_page=10",
        if desc { "desc" } else { "asc" }
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    resp["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["number"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_updates_live_and_refuses_actions_without_the_token() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let server = Server::with_dashboard(HttpConfig {
        token: Some("browser-token".into()),
        auth: DashboardAuth::Actions,
    })
    .await;
    let base = server.http.clone().unwrap();
    let (id, running) = study_for_the_browser(&server).await;
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-shots");

    // The studies page lists the study.
    browser.goto(&format!("{base}/#/")).await;
    browser.ready("the studies page").await;
    browser
        .wait_for(
            "the study's row",
            "return document.querySelector('#studies [data-study=\"' + arguments[0] + '\"]') !== null",
            json!([id.0]),
        )
        .await;
    browser.screenshot(&shots, "studies").await;

    // Every plot on the study page draws with data.
    browser.goto(&format!("{base}/#/study/{id}")).await;
    browser.ready("the study page").await;
    for plot in [
        "#plot-history",
        "#plot-curves",
        "#plot-parallel",
        "#plot-importance",
        "#plot-slices",
    ] {
        browser
            .wait_for(
                plot,
                "const e = document.querySelector(arguments[0]); return e && Number(e.dataset.points || 0) > 0;",
                json!([plot]),
            )
            .await;
    }
    let before = browser.points("#plot-curves").await;
    browser.screenshot(&shots, "study").await;

    // A new report appears without a reload.
    let w = server.worker("browser-worker").await;
    w.report(running, 1, 3, &loss(0.5)).await.unwrap();
    browser
        .wait_for(
            "the live report in the learning curves",
            "const e = document.querySelector('#plot-curves'); return Number(e.dataset.points || 0) > arguments[0];",
            json!([before]),
        )
        .await;

    // Pagination: 10 rows a page, 11 trials: two pages.
    browser
        .js(
            "const s = document.querySelector('#per-page'); s.value = '10'; s.dispatchEvent(new Event('change', {bubbles: true})); return true;",
            json!([]),
        )
        .await;
    browser
        .wait_for(
            "page 1 of 2",
            "const e = document.querySelector('#page-info'); return e && /page 1 of 2/i.test(e.textContent);",
            json!([]),
        )
        .await;
    // Sorting on the server: by value, descending after a second click.
    browser.click("#trials th[data-sort=\"value\"]").await;
    let rows_js = "return JSON.stringify([...document.querySelectorAll('#trials tr[data-trial]')].map(r => Number(r.dataset.trial)))";
    let want_asc = serde_json::to_string(&by_value(&base, id, false).await).unwrap();
    let want_desc = serde_json::to_string(&by_value(&base, id, true).await).unwrap();
    let first = browser
        .wait_for(
            "rows sorted by value",
            &format!("const s = (() => {{ {rows_js} }})(); return (s === arguments[0] || s === arguments[1]) ? s : '';"),
            json!([want_asc, want_desc]),
        )
        .await;
    browser.click("#trials th[data-sort=\"value\"]").await;
    let other = if first.as_str() == Some(want_asc.as_str()) {
        &want_desc
    } else {
        &want_asc
    };
    browser
        .wait_for(
            "rows sorted the other way",
            &format!("const s = (() => {{ {rows_js} }})(); return s === arguments[0];"),
            json!([other]),
        )
        .await;

    browser.click("#page-next").await;
    browser
        .wait_for(
            "page 2 of 2 with one row",
            "const e = document.querySelector('#page-info'); return e && /page 2 of 2/i.test(e.textContent) && document.querySelectorAll('#trials tr[data-trial]').length === 1;",
            json!([]),
        )
        .await;
    browser.screenshot(&shots, "study-table").await;

    // Cancel without the token is refused, and the study keeps running.
    browser
        .js("localStorage.removeItem('hpo-token'); window.confirm = () => true; window.prompt = () => null; return true;", json!([]))
        .await;
    browser.click("#cancel-study").await;
    browser
        .wait_for(
            "the refusal",
            "const e = document.querySelector('#error'); return e && e.offsetParent !== null && e.textContent.trim().length > 0 ? e.textContent : '';",
            json!([]),
        )
        .await;
    let client = server.client().await;
    assert_eq!(
        client.study(id).await.unwrap().state,
        hpo_proto::StudyState::Running
    );
    browser.screenshot(&shots, "cancel-refused").await;

    // The trial and workers pages draw.
    browser
        .goto(&format!("{base}/#/study/{id}/trial/{}", running.number))
        .await;
    browser.ready("the trial page").await;
    browser
        .wait_for(
            "the trial's metrics",
            "const e = document.querySelector('#trial-metrics'); return e && Number(e.dataset.points || 0) > 0;",
            json!([]),
        )
        .await;
    // Its log appears, then grows live from the trial's `log` events.
    let w = server.worker("browser-worker").await;
    w.append_log(running, 1, 0, "epoch 1: loss 0.9\n")
        .await
        .unwrap();
    browser
        .wait_for(
            "the trial's log",
            "const e = document.querySelector('#trial-log'); return e && !e.closest('[hidden]') && e.textContent === 'epoch 1: loss 0.9\\n';",
            json!([]),
        )
        .await;
    w.append_log(running, 1, 18, "epoch 2: loss 0.7\n")
        .await
        .unwrap();
    browser
        .wait_for(
            "the log's new line",
            "const e = document.querySelector('#trial-log'); return e && e.textContent === 'epoch 1: loss 0.9\\nepoch 2: loss 0.7\\n';",
            json!([]),
        )
        .await;
    browser.screenshot(&shots, "trial").await;
    browser
        .js(
            "document.querySelector('#trial-log-card').scrollIntoView(); return true;",
            json!([]),
        )
        .await;
    browser.screenshot(&shots, "trial-log").await;
    browser.goto(&format!("{base}/#/workers")).await;
    browser.ready("the workers page").await;
    browser
        .wait_for(
            "the worker's row",
            "const t = document.querySelector('#workers'); return t && t.textContent.includes('browser-worker');",
            json!([]),
        )
        .await;
    browser.screenshot(&shots, "workers").await;
    println!("screenshots in {}", shots.display());
    drop(browser);
    server.stop().await;
}
