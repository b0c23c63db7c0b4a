//! The web console in a real browser: headless Chromium over the DevTools protocol clicks
//! through the tree, follows a subtree, and sees the event of another client's write; and
//! makes edits through the page as a digest identity, including one an ACL refuses.
//! Screenshots go to the test's temporary directory (`CORRAL_CONSOLE_SCREENSHOTS` names a
//! directory to keep them in instead).
//!
//! Skips, saying so, when no Chromium is installed; `scripts/test` installs it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corral_client::{acl, perms, Client, CreateMode, CreateOptions};
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

        // Chart geometry: the hour ends at the newest sample (server time, whatever the
        // browser's clock says); a sample older than the hour is not drawn.
        let hour_ms = 3_600_000i64;
        let t1 = 1_000_000_000i64;
        let points = tab
            .evaluate(
                &format!(
                    "JSON.stringify(chartPoints([5, 1, 2], [{}, {}, {t1}], 300, 80, 12).pts)",
                    t1 - 2 * hour_ms,
                    t1 - hour_ms / 2
                ),
                false,
            )
            .unwrap()
            .value;
        assert_eq!(
            points,
            Some(serde_json::json!(r#"["150.0,40.0","300.0,12.0"]"#))
        );

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

/// Fills the edit form and presses one of its buttons; returns the result line once the
/// request has been answered.
fn submit_edit(tab: &Tab, path: &str, data: &str, button: &str) -> String {
    let fill = format!(
        "document.getElementById('edit-path').value = {path:?};\
         document.getElementById('edit-data').value = {data:?};\
         document.getElementById('edit-result').textContent = '';"
    );
    tab.evaluate(&fill, false).expect("fill the edit form");
    tab.wait_for_element(button)
        .unwrap()
        .click()
        .expect("press the button");
    wait_js(
        tab,
        "document.getElementById('edit-result').textContent !== ''",
    );
    text_of(tab, "#edit-result")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_edits_go_through_a_digest_identity_and_show_acl_refusals() {
    let Some(chrome) = chromium() else {
        eprintln!("SKIPPED: chromium is not installed (scripts/test installs it); the console's edit test did not run");
        return;
    };
    let server = TestServer::start_with(ServerConfig {
        admin: AdminConfig {
            enabled: true,
            console_edits: true,
            ..AdminConfig::default()
        },
        ..TestServer::default_config()
    })
    .await;
    let admin = server.admin_addr().expect("the AdminServer is enabled");
    let client = Client::connect(&server.connect_string()).await.unwrap();
    // Only `owner` may write here; the console's user is someone else.
    client
        .create(
            "/locked",
            b"original",
            CreateOptions::new(CreateMode::Persistent).acl(vec![
                acl::digest(perms::ALL, "owner", "owner-secret"),
                acl::read_unsafe()[0].clone(),
            ]),
        )
        .await
        .unwrap();

    let url = format!("http://{admin}/");
    let browser = tokio::task::spawn_blocking(move || {
        let browser = Browser::new(
            LaunchOptions::default_builder()
                .path(Some(chrome))
                .sandbox(false)
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
        // The form is only offered when the server allows edits.
        wait_js(&tab, "!document.getElementById('edit').hidden");
        tab.evaluate(
            "document.getElementById('edit-user').value = 'editor';\
             document.getElementById('edit-password').value = 'editor-secret';",
            false,
        )
        .unwrap();
        let created = submit_edit(&tab, "/from-console", "first", "#edit-create");
        assert!(created.starts_with("200"), "create: {created}");
        (browser, tab)
    })
    .await
    .unwrap();
    let (data, _) = client.get_data("/from-console").await.unwrap();
    assert_eq!(data, b"first");

    let browser = tokio::task::spawn_blocking(move || {
        let (browser, tab) = browser;
        let set = submit_edit(&tab, "/from-console", "second", "#edit-set");
        assert!(set.starts_with("200"), "set: {set}");
        (browser, tab)
    })
    .await
    .unwrap();
    let (data, stat) = client.get_data("/from-console").await.unwrap();
    assert_eq!((data.as_slice(), stat.version), (&b"second"[..], 1));

    let browser = tokio::task::spawn_blocking(move || {
        let (browser, tab) = browser;
        let deleted = submit_edit(&tab, "/from-console", "", "#edit-delete");
        assert!(deleted.starts_with("200"), "delete: {deleted}");
        // The ACL of /locked does not let `editor` write: the page shows the refusal.
        let refused = submit_edit(&tab, "/locked", "changed", "#edit-set");
        assert!(
            refused.starts_with("403") && refused.contains("NoAuth"),
            "refusal shown: {refused}"
        );
        let class = tab
            .evaluate("document.getElementById('edit-result').className", false)
            .unwrap()
            .value;
        assert_eq!(class, Some(serde_json::json!("error")));
        drop(tab);
        drop(browser);
    })
    .await;
    assert_eq!(client.exists("/from-console").await.unwrap(), None);
    let (data, _) = client.get_data("/locked").await.unwrap();
    assert_eq!(data, b"original", "the refused edit changed nothing");
    client.close().await;
    server.stop().await.expect("the server stops cleanly");
    browser.unwrap();
}
