//! The lossy and slow nemeses in short: three members in network namespaces, clients writing,
//! then 30% packet loss (or 200 ms of delay each way) on every link of the leader. The fault
//! really acts (packets dropped, peer bytes relayed through the delaying proxies), the
//! ensemble keeps acknowledging writes, healing removes it, and every acknowledged write ends
//! up on every member. Need root, `ip netns` and iptables, else print why and pass vacuously.
//! About 25 s each.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_chaos::ensemble::{find_corral_binary, Ensemble};
use corral_chaos::loss;
use corral_chaos::nemesis::{self, Action, LEADER_DELAY_MS};
use corral_chaos::net::Network;
use corral_chaos::proxy::DelayProxies;
use corral_client::{Client, CreateMode, Error};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::watch;

const PATIENCE: Duration = Duration::from_secs(30);
const HOLD: Duration = Duration::from_secs(8);
const TEST_LIMIT: Duration = Duration::from_secs(120);
const OP_TIMEOUT: Duration = Duration::from_secs(5);
const ROOT: &str = "/lossy";

/// Creates `/lossy/w<n>-<i>` until stopped; records what the ensemble acknowledged.
async fn writer(
    connect: String,
    n: usize,
    acked: Arc<Mutex<Vec<String>>>,
    stop: watch::Receiver<bool>,
) {
    let mut i = 0u64;
    let mut client: Option<Client> = None;
    while !*stop.borrow() {
        let c = match &client {
            Some(c) => c.clone(),
            None => match Client::builder(&connect)
                .session_timeout(Duration::from_secs(15))
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
        let path = format!("{ROOT}/w{n}-{i}");
        i += 1;
        match tokio::time::timeout(OP_TIMEOUT, c.create(&path, b"x", CreateMode::Persistent)).await
        {
            Ok(Ok(_)) => acked.lock().unwrap().push(path),
            Ok(Err(Error::SessionExpired | Error::AuthFailed | Error::Closed)) => client = None,
            Ok(Err(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn drop_rules(net: &Network, id: u64) -> usize {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.namespace(id),
            "iptables",
            "-w",
            "-S",
            "OUTPUT",
        ])
        .output()
        .expect("run iptables");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("DROP"))
        .count()
}

type Acked = Arc<Mutex<Vec<String>>>;

struct Writers {
    acked: Acked,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Creates the test's root znode and starts two writers.
async fn start_writers(ens: &Ensemble) -> Writers {
    let setup = Client::builder(&ens.connect_string())
        .connect_timeout(PATIENCE)
        .connect()
        .await
        .unwrap();
    setup
        .create(ROOT, b"", CreateMode::Persistent)
        .await
        .unwrap();
    setup.close().await;
    let acked: Acked = Arc::new(Mutex::new(Vec::new()));
    let (stop, stop_rx) = watch::channel(false);
    let tasks = (0..2)
        .map(|n| {
            tokio::spawn(writer(
                ens.connect_string(),
                n,
                acked.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    Writers { acked, stop, tasks }
}

fn acked_count(w: &Writers) -> usize {
    w.acked.lock().unwrap().len()
}

/// Stops the writers once the ensemble is stable, then waits until every member holds every
/// acknowledged write (read from that member alone, after a sync).
async fn stop_and_check(ens: &mut Ensemble, w: Writers) {
    ens.wait_stable(PATIENCE).await.unwrap();
    let _ = w.stop.send(true);
    for t in w.tasks {
        let _ = tokio::time::timeout(OP_TIMEOUT * 2, t).await;
    }
    ens.check_alive().unwrap();
    let want: BTreeSet<String> = w.acked.lock().unwrap().iter().cloned().collect();
    for id in ens.ids() {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let read = async {
                let c = Client::builder(&ens.member(id).client_addr())
                    .connect_timeout(Duration::from_secs(5))
                    .connect()
                    .await?;
                c.sync(ROOT).await?;
                let (kids, _) = c.children(ROOT).await?;
                c.close().await;
                Ok::<_, Error>(kids)
            };
            let missing = match tokio::time::timeout(OP_TIMEOUT * 2, read).await {
                Ok(Ok(kids)) => {
                    let have: BTreeSet<String> =
                        kids.into_iter().map(|k| format!("{ROOT}/{k}")).collect();
                    want.difference(&have).count()
                }
                _ => want.len(),
            };
            if missing == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "member {id} lacks {missing} acknowledged writes"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    println!("{} acknowledged writes on every member", want.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_loss_on_the_leaders_links_loses_no_acknowledged_write() {
    if let Some(reason) = loss::unavailable_reason() {
        println!("SKIPPED: {reason}");
        return;
    }
    let binary =
        find_corral_binary().expect("build the corral binary first: cargo build -p corral");
    let root = tempfile::tempdir().unwrap();
    let net = Network::create(&[1, 2, 3]).unwrap();
    let mut ens = Ensemble::start(root.path(), 3, binary, Some(net)).unwrap();

    tokio::time::timeout(TEST_LIMIT, async {
        ens.wait_stable(PATIENCE).await.unwrap();
        let writers = start_writers(&ens).await;
        let mut rng = StdRng::seed_from_u64(1);
        let applied = nemesis::apply(&mut ens, Action::LossyLeader, &mut rng)
            .await
            .unwrap();
        println!("nemesis: {}", applied.description);
        let net = ens.network.as_ref().unwrap();
        // The leader drops to each of the two others, and each of them to the leader.
        let rules: usize = ens.ids().iter().map(|&id| drop_rules(net, id)).sum();
        assert_eq!(rules, 4, "{}", applied.description);
        let before = acked_count(&writers);
        tokio::time::sleep(HOLD).await;
        let during = acked_count(&writers) - before;
        let dropped: u64 = ens
            .ids()
            .iter()
            .map(|&id| loss::dropped_packets(net, id).unwrap())
            .sum();
        println!("{dropped} packets dropped, {during} writes acknowledged meanwhile");
        assert!(dropped > 0, "no packet was dropped");
        assert!(during > 0, "no write acknowledged under 30% loss");

        nemesis::heal(&mut ens, &applied).unwrap();
        let net = ens.network.as_ref().unwrap();
        for id in ens.ids() {
            assert_eq!(
                drop_rules(net, id),
                0,
                "member {id} still drops after healing"
            );
        }
        stop_and_check(&mut ens, writers).await;
    })
    .await
    .unwrap_or_else(|_| panic!("test did not finish within {TEST_LIMIT:?}"));
    ens.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_leader_links_lose_no_acknowledged_write() {
    if let Some(reason) = loss::unavailable_reason() {
        println!("SKIPPED: {reason}");
        return;
    }
    let binary =
        find_corral_binary().expect("build the corral binary first: cargo build -p corral");
    let root = tempfile::tempdir().unwrap();
    let net = Network::create(&[1, 2, 3]).unwrap();
    let mut ens = Ensemble::start(root.path(), 3, binary, Some(net)).unwrap();
    // As the runner does: proxies first, then restart the members so that every peer
    // connection is made through them.
    ens.proxies = Some(DelayProxies::start(&ens).await.unwrap());
    for id in ens.ids() {
        ens.kill9(id);
        ens.restart(id).unwrap();
    }

    tokio::time::timeout(TEST_LIMIT, async {
        ens.wait_stable(PATIENCE).await.unwrap();
        let writers = start_writers(&ens).await;
        let relayed_before = ens.proxies.as_ref().unwrap().relayed_bytes();
        assert!(relayed_before > 0, "the peer traffic bypasses the proxies");

        let mut rng = StdRng::seed_from_u64(1);
        let applied = nemesis::apply(&mut ens, Action::SlowLeader, &mut rng)
            .await
            .unwrap();
        println!("nemesis: {}", applied.description);
        let proxies = ens.proxies.as_ref().unwrap();
        let delayed_links = ens
            .ids()
            .iter()
            .flat_map(|&a| ens.ids().into_iter().map(move |b| (a, b)))
            .filter(|&(a, b)| proxies.delay_ms(a, b) == LEADER_DELAY_MS)
            .count();
        // Both directions between the leader and each of the two others.
        assert_eq!(delayed_links, 4, "{}", applied.description);
        let before = acked_count(&writers);
        tokio::time::sleep(HOLD).await;
        let during = acked_count(&writers) - before;
        println!("{during} writes acknowledged with the leader's links delayed");
        assert!(during > 0, "no write acknowledged with delayed links");
        assert!(ens.proxies.as_ref().unwrap().relayed_bytes() > relayed_before);

        nemesis::heal(&mut ens, &applied).unwrap();
        let proxies = ens.proxies.as_ref().unwrap();
        for a in ens.ids() {
            for b in ens.ids() {
                assert_eq!(proxies.delay_ms(a, b), 0, "{a} -> {b} still delayed");
            }
        }
        stop_and_check(&mut ens, writers).await;
    })
    .await
    .unwrap_or_else(|_| panic!("test did not finish within {TEST_LIMIT:?}"));
    ens.stop_all();
}
