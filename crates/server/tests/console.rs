//! The web console in a real browser: headless Chromium over the DevTools protocol clicks
//! through the tree, follows a subtree, and sees the event of another client's write.
//! Screenshots go to the test's temporary directory (`CORRAL_CONSOLE_SCREENSHOTS` names a
//! directory to keep them in instead).
//!
//! Skips, saying so, when no Chromium is installed; `scripts/test` installs it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corral_client::{Client, CreateMode};
use corral_server::config::{AdminConfig, ServerConfig};
use corral_server::testing::TestServer;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};

/// Upper bound on any single wait, so a broken console fails the test instead of hanging it.
/// Not a timing assertion: healthy runs finish far below it.
const GUARD: Duration = Duration::from_secs(30);

fn chromium() -> Option<PathBuf> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Polls a JavaScript expression until it is true.
fn wait_js(tab: &Tab, expr: &str) {
    let deadline = Instant::now() + GUARD;
    loop {
        let ok = tab
            .evaluate(expr, false)
            .ok()
            .and_then(|r| r.value)
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for `{expr}`");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn text_of(tab: &Tab, selector: &str) -> String {
    tab.wait_for_element(selector)
        .and_then(|e| e.get_inner_text())
        .unwrap_or_else(|e| panic!("read {selector}: {e}"))
}

fn screenshot(tab: &Tab, dir: &Path, name: &str) {
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("capture a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG image");
    std::fs::write(dir.join(name), png).expect("save the screenshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_browses_the_tree_and_shows_live_events() {
    let Some(chrome) = chromium() else {
        eprintln!("SKIPPED: chromium is not installed (scripts/test installs it); the console's browser test did not run");
        return;
    };
    let server = TestServer::start_with(ServerConfig {
        admin: AdminConfig {
            enabled: true,
            ..AdminConfig::default()
        },
        ..TestServer::default_config()
    })
    .await;
    let admin = server.admin_addr().expect("the AdminServer is enabled");
    let client = Client::connect(&server.connect_string()).await.unwrap();
    client
        .create("/app", b"", CreateMode::Persistent)
        .await
        .unwrap();
    client
        .create("/app/config", br#"{"replicas":3}"#, CreateMode::Persistent)
        .await
        .unwrap();

    let temp = tempfile::tempdir().unwrap();
    let shots = std::env::var_os("CORRAL_CONSOLE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&shots).unwrap();

    let url = format!("http://{admin}/");
    let browser_shots = shots.clone();
    // The DevTools client is blocking; it runs on its own thread while this runtime serves.
    let browser = tokio::task::spawn_blocking(move || {
        let browser = Browser::new(
            LaunchOptions::default_builder()
                .path(Some(chrome))
                .sandbox(false)
                .window_size(Some((1400, 900)))
                .idle_browser_timeout(GUARD * 4)
                .build()
                .expect("launch options"),
        )
        .expect("launch chromium");
        let tab = browser.new_tab().expect("a tab");
        tab.set_default_timeout(GUARD);
        tab.navigate_to(&url)
            .unwrap()
            .wait_until_navigated()
            .unwrap();

        // Click through the tree: / → app → config.
        tab.wait_for_element("li.node[data-path='/app'] > .name")
            .unwrap()
            .click()
            .unwrap();
        tab.wait_for_element("li.node[data-path='/app/config'] > .name")
            .unwrap()
            .click()
            .unwrap();
        wait_js(
            &tab,
            "document.getElementById('node-data').textContent.includes('replicas')",
        );
        assert_eq!(text_of(&tab, "#node-path"), "/app/config");
        // The JSON view pretty-prints the data.
        tab.wait_for_element("input[name=view][value=json]")
            .unwrap()
            .click()
            .unwrap();
        wait_js(
            &tab,
            "document.getElementById('node-data').textContent.includes('\"replicas\": 3')",
        );
        let stat = text_of(&tab, "#node-stat");
        assert!(stat.contains("dataLength"), "stat shown: {stat}");
        let acl = text_of(&tab, "#node-acl");
        assert!(acl.contains("world:anyone"), "acl shown: {acl}");
        screenshot(&tab, &browser_shots, "tree.png");

        // Follow /app.
        tab.evaluate(
            "document.getElementById('events-path').value = '/app'",
            false,
        )
        .unwrap();
        tab.wait_for_element("#events-follow")
            .unwrap()
            .click()
            .unwrap();
        wait_js(
            &tab,
            "document.getElementById('events-state').textContent.startsWith('following')",
        );
        (browser, tab)
    })
    .await
    .unwrap();

    // Another client writes under the followed subtree.
    client
        .create("/app/new-node", b"x", CreateMode::Persistent)
        .await
        .unwrap();
    client.set_data("/app/config", b"{}", None).await.unwrap();

    let browser = tokio::task::spawn_blocking(move || {
        let (browser, tab) = browser;
        wait_js(
            &tab,
            "[...document.querySelectorAll('#events li')].some(l => l.textContent.includes('NodeCreated /app/new-node'))",
        );
        wait_js(
            &tab,
            "[...document.querySelectorAll('#events li')].some(l => l.textContent.includes('NodeDataChanged /app/config'))",
        );
        // The session list shows the console's own session with its recursive watch.
        wait_js(
            &tab,
            "document.getElementById('sessions').textContent.includes('/app')",
        );
        wait_js(
            &tab,
            "document.getElementById('members').textContent.includes('standalone')",
        );
        screenshot(&tab, &shots, "events.png");
        // Dropping the browser ends the Chromium process.
        drop(tab);
        drop(browser);
    })
    .await;
    client.close().await;
    server.stop().await.expect("the server stops cleanly");
    browser.unwrap();
}
