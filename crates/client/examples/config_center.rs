//! A configuration centre: an operator publishes an application's configuration in
//! `/config/app`; every running instance of the application holds it decoded into a typed
//! struct and sees each update (content that does not parse is rejected and the last good
//! configuration stays in force).
//!
//! ```text
//! cargo run -p corral-client --example config_center [-- HOST:PORT]
//! ```

// tests/examples.rs compiles every example into one crate, loading this once per example.
#[allow(clippy::duplicate_mod)]
mod common;

use corral_client::recipes::{ConfigValue, ConfigWatcher};
use corral_client::{Client, CreateMode, Error, ZkError};
use futures::StreamExt;
use tokio::sync::mpsc;

/// The application's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppConfig {
    pub db_url: String,
    pub max_conns: u32,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            db_url: "sqlite::memory:".into(),
            max_conns: 1,
        }
    }
}

/// `key=value` lines; both keys required.
fn decode(bytes: &[u8]) -> Result<AppConfig, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    let (mut db_url, mut max_conns) = (None, None);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once('=') {
            Some(("db_url", v)) => db_url = Some(v.to_string()),
            Some(("max_conns", v)) => {
                max_conns = Some(v.parse().map_err(|e| format!("max_conns {v:?}: {e}"))?)
            }
            _ => return Err(format!("unexpected line {line:?}")),
        }
    }
    Ok(AppConfig {
        db_url: db_url.ok_or("db_url missing")?,
        max_conns: max_conns.ok_or("max_conns missing")?,
    })
}

/// What one application instance saw: (node version, configuration in force, rejection).
pub type Seen = Vec<(Option<i32>, AppConfig, Option<String>)>;

const PATH: &str = "/config/app";

/// One running instance of the application.
struct App {
    session: Client,
    watcher: ConfigWatcher<AppConfig>,
    /// The updates its printer saw, in order.
    updates: mpsc::UnboundedReceiver<ConfigValue<AppConfig>>,
    printer: tokio::task::JoinHandle<()>,
    seen: Seen,
}

/// Waits until every instance has seen an update satisfying `f`.
async fn all_see(
    apps: &mut [App],
    f: impl Fn(&ConfigValue<AppConfig>) -> bool,
) -> Result<(), Error> {
    for app in apps.iter_mut() {
        loop {
            let v = app.updates.recv().await.ok_or(Error::Closed)?;
            let hit = f(&v);
            app.seen
                .push((v.version, (*v.value).clone(), v.error.clone()));
            if hit {
                break;
            }
        }
    }
    Ok(())
}

pub async fn run(connect_string: &str) -> Result<Vec<Seen>, Error> {
    let admin = Client::connect(connect_string).await?;
    admin.create_all("/config").await?;
    match admin.delete(PATH, None).await {
        Ok(()) | Err(Error::Zk(ZkError::NoNode)) => {}
        Err(e) => return Err(e),
    }

    // Two running instances of the application, each with its own session.
    let mut apps = Vec::new();
    for i in 1..=2 {
        let name = format!("app-{i}");
        let session = Client::connect(connect_string).await?;
        let watcher = ConfigWatcher::start(&session, PATH, AppConfig::default(), decode).await?;
        let (tx, rx) = mpsc::unbounded_channel::<ConfigValue<AppConfig>>();
        let mut updates = Box::pin(watcher.updates());
        let printer_name = name.clone();
        let printer = tokio::spawn(async move {
            while let Some(v) = updates.next().await {
                match (&v.error, v.version) {
                    (Some(e), _) => println!(
                        "{printer_name}: rejected new config ({e}), keeping {:?}",
                        v.value
                    ),
                    (None, None) => println!(
                        "{printer_name}: no config published, using default {:?}",
                        v.value
                    ),
                    (None, Some(n)) => {
                        println!("{printer_name}: config version {n}: {:?}", v.value)
                    }
                }
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        apps.push(App {
            session,
            watcher,
            updates: rx,
            printer,
            seen: Seen::new(),
        });
    }

    all_see(&mut apps, |v| v.version.is_none()).await?;

    println!("admin: publishing version 0");
    admin
        .create(
            PATH,
            b"db_url=postgres://db1/app\nmax_conns=10",
            CreateMode::Persistent,
        )
        .await?;
    all_see(&mut apps, |v| v.version == Some(0)).await?;

    println!("admin: raising max_conns");
    admin
        .set_data(PATH, b"db_url=postgres://db1/app\nmax_conns=50", None)
        .await?;
    all_see(&mut apps, |v| v.version == Some(1)).await?;

    println!("admin: publishing a typo");
    admin
        .set_data(PATH, b"db_url=postgres://db1/app\nmax_conns=lots", None)
        .await?;
    all_see(&mut apps, |v| v.error.is_some()).await?;

    println!("admin: fixing it and moving to another database");
    admin
        .set_data(PATH, b"db_url=postgres://db2/app\nmax_conns=50", None)
        .await?;
    all_see(&mut apps, |v| v.version == Some(3) && v.error.is_none()).await?;

    println!("admin: withdrawing the config");
    admin.delete(PATH, None).await?;
    all_see(&mut apps, |v| v.version.is_none()).await?;

    let mut result = Vec::new();
    for app in apps {
        // The current value is there without waiting, whenever the application needs it.
        assert_eq!(*app.watcher.current(), AppConfig::default());
        app.printer.abort();
        drop(app.watcher);
        app.session.close().await;
        result.push(app.seen);
    }
    admin.close().await;
    Ok(result)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (connect_string, _server) = common::server_from_args().await;
    let seen = run(&connect_string).await?;
    println!("each instance saw {} configurations; done", seen[0].len());
    Ok(())
}
