//! The `/ui` dashboard in a real headless browser: Debian's chromium driven
//! through chromedriver (WebDriver, `fantoccini`). With two model versions
//! registered, the page loads with no console error and no failed request,
//! every chart has more than one point for both versions, the at-risk list
//! names users by their string ids (the data has UUID user ids), and
//! "Retrain" with the token starts a job whose status shows up. Screenshots are saved
//! under the test's target tmp dir (the path is printed).
//!
//! `CHURN_TEST_CHROMIUM` / `CHURN_TEST_CHROMEDRIVER` override the Debian
//! paths; a missing browser fails the test (scripts/test.sh installs it).

#[path = "common/harness.rs"]
mod helpers;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use helpers::{Seed, TOKEN, spawn_app};
use serde_json::{Value, json};

/// chromedriver, killed (by the PID we started) when the test ends.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn path_var(name: &str, default: &str) -> PathBuf {
    let p = PathBuf::from(std::env::var(name).unwrap_or_else(|_| default.to_string()));
    assert!(
        p.exists(),
        "{} not found: install chromium and chromium-driver (scripts/test.sh does) or set {name}",
        p.display()
    );
    p
}

async fn start_driver() -> Driver {
    let bin = path_var("CHURN_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let url = format!("http://127.0.0.1:{port}");
    let driver = Driver { child, url };
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{}/status", driver.url)).send().await
            && r.status().is_success()
        {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not answer on {}", driver.url);
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let chromium = path_var("CHURN_TEST_CHROMIUM", "/usr/bin/chromium");
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            // The flags SERVICES.md names: without the background-networking
            // ones chromium keeps calling hosts this machine cannot reach.
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,2300",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
        "goog:loggingPrefs": {"browser": "ALL"},
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

/// The browser console since the last call (chromedriver's log endpoint).
async fn console(driver: &Driver, client: &Client) -> Vec<Value> {
    let session = client.session_id().await.unwrap().unwrap();
    let r: Value = reqwest::Client::new()
        .post(format!("{}/session/{session}/se/log", driver.url))
        .json(&json!({"type": "browser"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["value"]
        .as_array()
        .unwrap_or_else(|| panic!("no browser log: {r}"))
        .clone()
}

/// The console's errors since the last call (warnings are allowed).
async fn console_errors(driver: &Driver, client: &Client) -> Vec<Value> {
    console(driver, client)
        .await
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect()
}

async fn eval(client: &Client, script: &str) -> Value {
    client.execute(script, vec![]).await.unwrap()
}

async fn wait_until(client: &Client, script: &str, what: &str) {
    for _ in 0..600 {
        if eval(client, script).await == Value::Bool(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = eval(
        client,
        "return document.getElementById('status').textContent",
    )
    .await;
    panic!("timed out waiting for {what} (status: {status})");
}

async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, png).unwrap();
    eprintln!("dashboard screenshot: {}", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_loads_cleanly_draws_two_versions_and_retrains() {
    let app = spawn_app(Seed::TrainedWithNames).await;
    // A second version through the admin API, so the server swaps it in.
    let job: Value = app.admin_post("/admin/retrain").await.json().await.unwrap();
    let done = app.wait_job(job["id"].as_u64().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    for _ in 0..300 {
        if app.admin_get("/admin/monitoring").await.status() == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let client = browser(&driver, profile.path()).await;

    client
        .goto(&app.url(&format!("/ui#token={TOKEN}")))
        .await
        .unwrap();
    wait_until(
        &client,
        "return document.getElementById('status').textContent.startsWith('production v')",
        "the dashboard to load",
    )
    .await;
    wait_until(
        &client,
        "return document.querySelectorAll('#at-risk tbody tr').length > 0 \
         && document.querySelectorAll('#drift tbody tr').length > 0 \
         && document.querySelectorAll('#jobs tbody tr').length > 0",
        "the tables",
    )
    .await;
    screenshot(&client, "dashboard.png").await;

    // The at-risk list shows the users' own ids (UUIDs), as the API does.
    let shown = eval(
        &client,
        "return [...document.querySelectorAll('#at-risk tbody tr')].map(r => r.children[0].textContent)",
    )
    .await;
    let api: Value = app
        .admin_get("/admin/at-risk?limit=20&top_k=3")
        .await
        .json()
        .await
        .unwrap();
    let api_ids: Vec<Value> = api
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["user_id"].clone())
        .collect();
    assert_eq!(shown.as_array().unwrap(), &api_ids, "{shown}");
    assert!(
        api_ids
            .iter()
            .all(|id| id.as_str().is_some_and(|s| s.len() == 36)),
        "{api_ids:?}"
    );

    // The token left the address bar; the data is there.
    let url = client.current_url().await.unwrap();
    assert!(!url.as_str().contains("token"), "{url}");
    let versions = eval(
        &client,
        "return document.querySelectorAll('#models tbody tr').length",
    )
    .await;
    assert_eq!(versions, json!(2));

    // Every chart: more than one point for each of the two versions.
    let charts = eval(&client, "return window.churnCharts").await;
    for id in ["chart-roc", "chart-pr", "chart-calibration", "chart-lift"] {
        let c = &charts[id];
        let points = c["points"]
            .as_array()
            .unwrap_or_else(|| panic!("{id}: {charts}"));
        let series = c["series"].as_array().unwrap();
        let versions: Vec<usize> = series
            .iter()
            .zip(points)
            .filter(|(s, _)| s.as_str().is_some_and(|s| s.starts_with('v')))
            .map(|(_, p)| p.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(versions.len(), 2, "{id}: {c}");
        assert!(versions.iter().all(|n| *n > 1), "{id}: {c}");
        let canvas = eval(
            &client,
            &format!("return document.querySelectorAll('#{id} canvas').length"),
        )
        .await;
        assert_eq!(canvas, json!(1), "{id} is drawn");
    }
    let bars = eval(
        &client,
        "return document.querySelectorAll('#importance .bar').length",
    )
    .await;
    assert!(bars.as_u64().unwrap() > 1, "{bars}");

    // No failed request: every resource and the page answered 200.
    let statuses = eval(
        &client,
        "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))\
         .map(e => [e.name, e.responseStatus])",
    )
    .await;
    let statuses = statuses.as_array().unwrap();
    assert!(
        statuses.len() >= 8,
        "page, 4 assets, admin calls: {statuses:?}"
    );
    for s in statuses {
        assert_eq!(s[1], json!(200), "failed request: {s}");
    }
    // No console error (warnings are allowed; chromium's own notices too).
    let errors = console_errors(&driver, &client).await;
    assert!(errors.is_empty(), "console errors: {errors:?}");

    // Retrain with the token: a job starts and its status appears.
    let before = eval(&client, "return Math.max(0, ...[...document.querySelectorAll('#jobs tbody tr')].map(r => +r.dataset.job))").await;
    client
        .find(Locator::Id("retrain"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let newer = format!(
        "return [...document.querySelectorAll('#jobs tbody tr')].some(r => +r.dataset.job > {before} \
         && r.children[1].textContent === 'retrain')"
    );
    wait_until(&client, &newer, "the retrain job in the table").await;
    let said = eval(
        &client,
        "return document.getElementById('action-result').textContent",
    )
    .await;
    assert!(said.as_str().unwrap().contains("job"), "{said}");
    let finished = format!(
        "return [...document.querySelectorAll('#jobs tbody tr')].some(r => +r.dataset.job > {before} \
         && r.dataset.status === 'succeeded')"
    );
    wait_until(&client, &finished, "the retrain job to succeed").await;
    wait_until(
        &client,
        "return document.querySelectorAll('#models tbody tr').length === 3",
        "the third version",
    )
    .await;
    screenshot(&client, "dashboard-after-retrain.png").await;
    let errors = console_errors(&driver, &client).await;
    assert!(errors.is_empty(), "console errors: {errors:?}");

    client.close().await.unwrap();
    app.stop().await;
}
