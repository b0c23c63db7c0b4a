//! The lossy and slow nemeses in short: three members in network namespaces, clients writing,
//! then 30% packet loss (or `LEADER_DELAY_MS` of delay each way) on every link of the leader.
//! The fault really acts (packets dropped, peer bytes relayed through the delaying proxies),
//! the ensemble keeps acknowledging writes, healing removes it, and every acknowledged write
//! ends up on every member. Then a link slower than the heartbeat interval: reported, and
//! carried once tickTime is raised. Need root, `ip netns` and iptables, else print why and
//! pass vacuously. About 25–45 s each.

use std::time::Duration;

use corral_chaos::ensemble::{find_corral_binary, Ensemble, Server};
use corral_chaos::loss;
use corral_chaos::nemesis::{self, Action, LEADER_DELAY_MS};
use corral_chaos::net::Network;
use corral_chaos::proxy::DelayProxies;
use rand::rngs::StdRng;
use rand::SeedableRng;

mod common;
use common::Writers;

const PATIENCE: Duration = Duration::from_secs(30);
const HOLD: Duration = Duration::from_secs(8);
const TEST_LIMIT: Duration = Duration::from_secs(120);
const ROOT: &str = "/lossy";

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

/// Three members in network namespaces (`corral_settings` added to each zoo.cfg) whose peer
/// connections all go through delay proxies: as the runner does, proxies first, then every
/// member restarted so that it connects through them.
async fn ensemble_behind_proxies(root: &std::path::Path, corral_settings: &str) -> Ensemble {
    let binary =
        find_corral_binary().expect("build the corral binary first: cargo build -p corral");
    let net = Network::create(&[1, 2, 3]).unwrap();
    let mut ens = Ensemble::start_configured(
        root,
        3,
        Server::Corral(binary),
        Some(net),
        false,
        corral_settings,
    )
    .unwrap();
    ens.proxies = Some(DelayProxies::start(&ens).await.unwrap());
    for id in ens.ids() {
        ens.kill9(id);
        ens.restart(id).unwrap();
    }
    ens
}

/// Two writers under `/lossy`, with sessions that outlast a slow election.
async fn start_writers(ens: &Ensemble) -> Writers {
    Writers::start(ens, ROOT, 2, Duration::from_secs(15), PATIENCE).await
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
        let before = writers.acked_count();
        tokio::time::sleep(HOLD).await;
        let during = writers.acked_count() - before;
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
        writers.stop_and_check(&mut ens, PATIENCE).await;
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
    let root = tempfile::tempdir().unwrap();
    let mut ens = ensemble_behind_proxies(root.path(), "").await;

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
        let before = writers.acked_count();
        tokio::time::sleep(HOLD).await;
        let during = writers.acked_count() - before;
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
        writers.stop_and_check(&mut ens, PATIENCE).await;
    })
    .await
    .unwrap_or_else(|_| panic!("test did not finish within {TEST_LIMIT:?}"));
    ens.stop_all();
}

/// One-way delay above the default heartbeat interval's reach: a 300 ms round trip against
/// the 166 ms (tickTime 2000 / 12) that openraft 0.9 gives every AppendEntries.
const SLOW_LINK_MS: u64 = 150;
/// Part of the warning a member logs when its Raft calls are answered after they timed out.
const LATE_WARNING: &str = "answered Raft calls after they had timed out";

fn delay_links_of(ens: &Ensemble, leader: u64, delay_ms: u64) {
    let proxies = ens.proxies.as_ref().expect("proxies");
    for other in ens.ids() {
        if other != leader {
            proxies.set_delay(leader, other, delay_ms);
        }
    }
}

/// The member whose log warns of late answers, and the line.
fn late_answers_warning(ens: &Ensemble) -> Option<(u64, String)> {
    ens.ids().into_iter().find_map(|id| {
        let log = std::fs::read_to_string(ens.member(id).log_path()).ok()?;
        let line = log.lines().find(|l| l.contains(LATE_WARNING))?;
        Some((id, line.to_string()))
    })
}

/// The Prometheus endpoint on its default port, 7000 (each member in its own namespace).
const METRICS_SETTINGS: &str =
    "metricsProvider.className=org.apache.zookeeper.metrics.prometheus.PrometheusMetricsProvider\n";

/// `GET /metrics` from a member's Prometheus endpoint.
async fn metrics_of(ens: &Ensemble, id: u64) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = format!("{}:7000", ens.member(id).ip);
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .unwrap_or_else(|e| panic!("metrics endpoint of member {id} at {addr}: {e}"));
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: corral\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

/// A leader whose links are slower than the heartbeat interval commits nothing (openraft 0.9
/// bounds every AppendEntries by it) without any election to show for it. The member says so
/// in its log, and the remedy its warning names — a longer tickTime — carries the same link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_slower_than_the_heartbeat_is_reported_and_a_longer_tick_time_carries_it() {
    if let Some(reason) = loss::unavailable_reason() {
        println!("SKIPPED: {reason}");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut ens = ensemble_behind_proxies(root.path(), METRICS_SETTINGS).await;

    tokio::time::timeout(TEST_LIMIT, async {
        // Default tickTime: the round trip is over the bound; the late answers are reported.
        let leader = ens.wait_stable(PATIENCE).await.unwrap();
        let early = late_answers_warning(&ens);
        assert_eq!(early, None, "warned before any delay");
        delay_links_of(&ens, leader, SLOW_LINK_MS);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let (warner, warning) = loop {
            if let Some(found) = late_answers_warning(&ens) {
                break found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no member reported late Raft answers with {SLOW_LINK_MS} ms each way"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        println!("member {warner}: {warning}");
        // The same count is served as a metric, per member called.
        let metrics = metrics_of(&ens, warner).await;
        let late: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("corral_peer_late_answers_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(
            late > 0.0,
            "no late answers in the metrics of member {warner}:\n{metrics}"
        );
        ens.proxies.as_ref().unwrap().clear();

        // tickTime 6000: heartbeats (and the AppendEntries bound) every 500 ms.
        for id in ens.ids() {
            let cfg = ens.member(id).dir.join("zoo.cfg");
            let mut text = std::fs::read_to_string(&cfg).unwrap();
            text.push_str("tickTime=6000\n");
            std::fs::write(&cfg, text).unwrap();
            ens.kill9(id);
            ens.restart(id).unwrap();
        }
        let leader = ens.wait_stable(PATIENCE).await.unwrap();
        let writers = start_writers(&ens).await;
        delay_links_of(&ens, leader, SLOW_LINK_MS);
        let before = writers.acked_count();
        tokio::time::sleep(HOLD).await;
        let during = writers.acked_count() - before;
        println!("{during} writes acknowledged with {SLOW_LINK_MS} ms each way and tickTime=6000");
        assert!(
            during > 0,
            "no write acknowledged over the slow links with tickTime=6000"
        );
        ens.proxies.as_ref().unwrap().clear();
        writers.stop_and_check(&mut ens, PATIENCE).await;
    })
    .await
    .unwrap_or_else(|_| panic!("test did not finish within {TEST_LIMIT:?}"));
    ens.stop_all();
}
