//! What the fault tests share: clients that keep creating znodes under one root while a fault
//! acts, recording what the ensemble acknowledged, and the final check that every member holds
//! every acknowledged znode.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_chaos::ensemble::Ensemble;
use corral_client::{Client, CreateMode, Error};
use tokio::sync::watch;

/// Per create; a write that takes longer is an unknown outcome (not acknowledged).
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// Writers creating `<root>/w<n>-<i>`, one create at a time each, until stopped.
pub struct Writers {
    root: &'static str,
    acked: Arc<Mutex<Vec<String>>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    /// Creates `root` and starts `count` writers whose sessions time out after
    /// `session_timeout`; returns after they have run for a second.
    pub async fn start(
        ens: &Ensemble,
        root: &'static str,
        count: usize,
        session_timeout: Duration,
        patience: Duration,
    ) -> Writers {
        let setup = Client::builder(&ens.connect_string())
            .connect_timeout(patience)
            .connect()
            .await
            .unwrap();
        setup
            .create(root, b"", CreateMode::Persistent)
            .await
            .unwrap();
        setup.close().await;
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (stop, stop_rx) = watch::channel(false);
        let tasks = (0..count)
            .map(|n| {
                tokio::spawn(writer(
                    ens.connect_string(),
                    root,
                    n,
                    session_timeout,
                    acked.clone(),
                    stop_rx.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        Writers {
            root,
            acked,
            stop,
            tasks,
        }
    }

    /// How many creates the ensemble has acknowledged so far.
    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops the writers once the ensemble is stable, then waits until every member holds
    /// every acknowledged znode (read from that member alone, after a sync); panics naming
    /// what a member lacks after `patience`. Returns how many writes were acknowledged.
    pub async fn stop_and_check(self, ens: &mut Ensemble, patience: Duration) -> usize {
        ens.wait_stable(patience).await.unwrap();
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(OP_TIMEOUT * 2, t).await;
        }
        ens.check_alive().unwrap();
        let want: BTreeSet<String> = self.acked.lock().unwrap().iter().cloned().collect();
        for id in ens.ids() {
            let missing = missing_on(ens, id, self.root, &want, patience).await;
            assert!(
                missing.is_empty(),
                "member {id} lacks {} acknowledged writes, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            );
        }
        println!("{} acknowledged writes on every member", want.len());
        want.len()
    }
}

async fn writer(
    connect: String,
    root: &'static str,
    n: usize,
    session_timeout: Duration,
    acked: Arc<Mutex<Vec<String>>>,
    stop: watch::Receiver<bool>,
) {
    let mut i = 0u64;
    let mut client: Option<Client> = None;
    while !*stop.borrow() {
        let c = match &client {
            Some(c) => c.clone(),
            None => match Client::builder(&connect)
                .session_timeout(session_timeout)
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
            {
                Ok(c) => {
                    client = Some(c.clone());
                    c
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let path = format!("{root}/w{n}-{i}");
        i += 1;
        match tokio::time::timeout(OP_TIMEOUT, c.create(&path, b"x", CreateMode::Persistent)).await
        {
            Ok(Ok(_)) => acked.lock().unwrap().push(path),
            Ok(Err(Error::SessionExpired | Error::AuthFailed | Error::Closed)) => client = None,
            // Unknown outcome or refused: either way not acknowledged; a fresh path next.
            Ok(Err(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Reads `root`'s children from member `id` alone (after a sync) until it holds every path in
/// `want` or `patience` runs out; returns what is missing.
async fn missing_on(
    ens: &Ensemble,
    id: u64,
    root: &str,
    want: &BTreeSet<String>,
    patience: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + patience;
    let mut missing: Vec<String> = want.iter().cloned().collect();
    while Instant::now() < deadline {
        let read = async {
            let c = Client::builder(&ens.member(id).client_addr())
                .session_timeout(Duration::from_secs(10))
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await?;
            c.sync(root).await?;
            let (kids, _) = c.children(root).await?;
            c.close().await;
            Ok::<_, Error>(kids)
        };
        if let Ok(Ok(kids)) = tokio::time::timeout(OP_TIMEOUT * 2, read).await {
            let have: BTreeSet<String> = kids.into_iter().map(|k| format!("{root}/{k}")).collect();
            missing = want.difference(&have).cloned().collect();
            if missing.is_empty() {
                return missing;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    missing
}
