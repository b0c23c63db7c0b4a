//! Real third-party clients against a three-member Corral ensemble: kazoo and go-zookeeper
//! suites (tests/compat/kazoo_ensemble.py, tests/compat/go_ensemble/main.go) and Apache
//! Curator's (tests/compat/curator/CuratorSuite.java) that steer the ensemble through the
//! harness (kill the leader, kill or restart a member) while they run; and go-zookeeper's own
//! cluster tests, whose harness starts and kills the members itself, against Corral and
//! against Apache ZooKeeper.
//! The tools come from Debian packages that `scripts/test` installs; a missing tool fails the
//! test with a message saying so.

mod ensemble_support;
mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ensemble_support::{run_steering_suite, ApacheEnsemble, Ensemble};
use support::{
    build_go_suite, repo_root, require_file, require_kazoo, require_program, run_suite, Server,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kazoo_against_an_ensemble() {
    let python = require_kazoo();
    let mut ens = Ensemble::start(3, 0).await;
    let hosts = ens.connect_string();
    run_steering_suite(
        &mut ens,
        "kazoo ensemble",
        tokio::process::Command::new(python)
            .current_dir(repo_root())
            .arg("tests/compat/kazoo_ensemble.py")
            .arg(hosts),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_zookeeper_against_an_ensemble() {
    let (_build_dir, binary) = build_go_suite("tests/compat/go_ensemble/main.go");
    let mut ens = Ensemble::start(3, 0).await;
    let hosts = ens.connect_string();
    run_steering_suite(
        &mut ens,
        "go-zookeeper ensemble",
        tokio::process::Command::new(&binary)
            .current_dir(repo_root())
            .arg(hosts),
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// Apache Curator (tests/compat/curator/CuratorSuite.java)

/// Curator's jars (Debian libcurator-*-java) and the ZooKeeper client under them; their
/// manifests name the rest (guava, slf4j, zookeeper-jute).
const CURATOR_CLASSPATH: &[&str] = &[
    "/usr/share/java/curator-recipes.jar",
    "/usr/share/java/curator-framework.jar",
    "/usr/share/java/curator-client.jar",
    "/usr/share/java/zookeeper.jar",
];

/// Small heap and quick start-up for a client JVM on a shared machine.
const CLIENT_JVM_FLAGS: &[&str] = &["-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"];

/// Compiles the Curator suite into a temp dir; returns it (removed on drop) and the `java`
/// command that runs the suite, its arguments still to add.
fn build_curator_suite() -> (tempfile::TempDir, std::ffi::OsString) {
    require_program("javac", "a JDK (Debian package openjdk-17-jdk-headless)");
    for jar in CURATOR_CLASSPATH {
        require_file(
            Path::new(jar),
            "Curator and the ZooKeeper client (Debian libcurator-*-java, libzookeeper-java)",
        );
    }
    let out = tempfile::Builder::new()
        .prefix("corral-curator-")
        .tempdir()
        .expect("temp dir");
    let classpath = CURATOR_CLASSPATH.join(":");
    let javac = Command::new("javac")
        .current_dir(repo_root())
        .args(["-J-Xmx256m", "-cp", &classpath, "-d"])
        .arg(out.path())
        .arg("tests/compat/curator/CuratorSuite.java")
        .output()
        .expect("run javac");
    assert!(
        javac.status.success(),
        "javac of CuratorSuite.java failed:\n{}",
        String::from_utf8_lossy(&javac.stderr)
    );
    let mut run_classpath = out.path().as_os_str().to_owned();
    run_classpath.push(":");
    run_classpath.push(&classpath);
    (out, run_classpath)
}

/// Curator's connection states and recipes across a member's death and the quorum's loss,
/// and EnsembleTracker reading /zookeeper/config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curator_against_an_ensemble() {
    let (_classes, classpath) = build_curator_suite();
    let mut ens = Ensemble::start(3, 0).await;
    let hosts = ens.connect_string();
    run_steering_suite(
        &mut ens,
        "Curator ensemble",
        tokio::process::Command::new("java")
            .current_dir(repo_root())
            .args(CLIENT_JVM_FLAGS)
            .arg("-cp")
            .arg(&classpath)
            .arg("CuratorSuite")
            .arg(hosts)
            .arg("ensemble"),
    )
    .await;
}

/// The same Curator suite against Apache ZooKeeper: the reference for what it expects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curator_against_an_apache_ensemble() {
    let (_classes, classpath) = build_curator_suite();
    let mut zk = ApacheEnsemble::start(3).await;
    let hosts = (1..=3).map(|id| zk.addr(id)).collect::<Vec<_>>().join(",");
    run_steering_suite(
        &mut zk,
        "Curator Apache ensemble",
        tokio::process::Command::new("java")
            .current_dir(repo_root())
            .args(CLIENT_JVM_FLAGS)
            .arg("-cp")
            .arg(&classpath)
            .arg("CuratorSuite")
            .arg(hosts)
            .arg("ensemble"),
    )
    .await;
}

/// The part of the Curator suite that needs one server, against a standalone server
/// (`CORRAL_COMPAT_TARGET` selects Corral or Apache ZooKeeper, as in compat.rs).
#[test]
fn curator_against_a_standalone_server() {
    let (_classes, classpath) = build_curator_suite();
    let server = Server::start_target();
    run_suite(
        "Curator standalone",
        Command::new("java")
            .args(CLIENT_JVM_FLAGS)
            .arg("-cp")
            .arg(&classpath)
            .arg("CuratorSuite")
            .arg(server.addr())
            .arg("standalone"),
    );
}

// ---------------------------------------------------------------------------------------
// go-zookeeper's own cluster tests (zk/cluster_test.go), run by its own harness

/// The cluster tests of go-zookeeper's own suite that pass against Apache ZooKeeper 3.8.
/// TestWaitForClose and TestBadSession start a one-member "cluster" (one `server.1` line).
const GO_CLUSTER_TESTS: &[&str] = &[
    "TestBasicCluster",
    "TestClientClusterFailover",
    "TestNoQuorum",
    "TestWaitForClose",
    "TestBadSession",
];

/// Those of [`GO_CLUSTER_TESTS`] where Corral does not behave as ZooKeeper yet, and how. They
/// run against Corral as well and their outcome is printed, but only the run against Apache
/// ZooKeeper requires them to pass. Remove an entry once Corral passes it.
const GO_CLUSTER_TESTS_CORRAL_DIVERGES: &[(&str, &str)] = &[(
    "TestBasicCluster",
    "sometimes fails: a node created through member 1 is read at once through member 2 \
         and is not there yet; ZooKeeper's leader sends the commit to every follower as soon \
         as a quorum acknowledged it, a Corral follower applies it later",
)];

/// Where the Debian package installs the client's sources, tests included.
const GO_ZK_SOURCES: &str = "/usr/share/gocode/src/github.com/samuel/go-zookeeper";

/// Hang guard for one run of the Go cluster tests (each starts and stops its own servers).
const GO_CLUSTER_LIMIT: Duration = Duration::from_secs(240);

/// Which server go-zookeeper's harness starts when it runs `java -jar JAR server CFG`.
enum GoClusterServer {
    Corral,
    /// The Debian package's ZooKeeper through `scripts/apache-zk --quorum`, on the real JVM.
    Apache,
}

/// Writes the `java` that go-zookeeper's harness (zk/server_java.go) runs as
/// `java -jar JAR server CFG`; it execs the server in place (same pid), so the harness's
/// SIGKILL in `Server.Stop` reaches the server itself.
fn write_java_shim(bin_dir: &Path, server: &GoClusterServer) {
    let run = match server {
        GoClusterServer::Corral => format!(
            "RUST_LOG=warn exec '{}' server --config \"$4\"",
            env!("CARGO_BIN_EXE_corral")
        ),
        // scripts/apache-zk runs `java` itself: the real one, so this shim leaves PATH. The
        // AdminServer is off because every member would bind the same default port 8080.
        GoClusterServer::Apache => format!(
            "PATH='{}' ZK_JAVA_OPTS='-Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
             -Dzookeeper.admin.enableServer=false' exec bash '{}' --quorum \"$4\"",
            std::env::var("PATH").unwrap_or_default(),
            repo_root().join("scripts/apache-zk").display()
        ),
    };
    let script = format!(
        "#!/bin/sh\n\
         # go-zookeeper's test harness runs `java -jar JAR server CFG`.\n\
         if [ \"$#\" -ne 4 ] || [ \"$1\" != -jar ] || [ \"$3\" != server ]; then\n\
         \x20 echo \"java shim: unexpected arguments: $*\" >&2\n\
         \x20 exit 2\n\
         fi\n\
         {run}\n"
    );
    let path = bin_dir.join("java");
    fs::write(&path, script).expect("write the java shim");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod the java shim");
}

/// The one change made to the copied package, outside its tests and their harness: the
/// harness waits for its servers with `FLWSrvr` (zk/flw.go), whose pattern is ZooKeeper 3.4's
/// `srvr` text (`built on 06/29/2018 ...`, integer average latency). ZooKeeper 3.5 and later
/// print `built on 2024-12-29 17:54 UTC`, `Latency min/avg/max: 0/0.0/0` and a version that may
/// hold `$`, so against Apache ZooKeeper 3.8 as much as against Corral every
/// `StartTestCluster` fails with "unable to verify health of servers". Each replacement must
/// apply exactly once, so a different package version fails here, not somewhere obscure.
fn adapt_srvr_parser(flw_go: &Path) {
    const REPLACEMENTS: &[(&str, &str)] = &[
        (
            r"^Zookeeper version: ([A-Za-z0-9\.\-]+), built on (\d\d/\d\d/\d\d\d\d ",
            r"^Zookeeper version: ([^,]+), built on (\d\d\d\d-\d\d-\d\d ",
        ),
        (
            r"^Latency min/avg/max: (\d+)/(\d+)/(\d+)",
            r"^Latency min/avg/max: (\d+)/([\d.]+)/(\d+)",
        ),
        (r#""01/02/2006 15:04 MST""#, r#""2006-01-02 15:04 MST""#),
    ];
    let mut text = fs::read_to_string(flw_go).expect("read zk/flw.go");
    for (old, new) in REPLACEMENTS {
        assert_eq!(
            text.matches(old).count(),
            1,
            "zk/flw.go of this go-zookeeper version does not hold {old:?} exactly once"
        );
        text = text.replace(old, new);
    }
    fs::write(flw_go, text).expect("write zk/flw.go");
}

/// Copies the package into a fresh GOPATH, compiles its tests, runs [`GO_CLUSTER_TESTS`] with
/// `java` standing for `server`, and fails unless every one of them passed.
fn run_go_cluster_tests(server: GoClusterServer) {
    require_program("go", "the Go toolchain (Debian package golang-go)");
    require_file(
        Path::new(GO_ZK_SOURCES)
            .join("zk/cluster_test.go")
            .as_path(),
        "go-zookeeper's tests (Debian package golang-github-samuel-go-zookeeper-dev)",
    );
    let work = tempfile::Builder::new()
        .prefix("corral-go-cluster-")
        .tempdir()
        .expect("temp dir");
    let gopath = work.path().join("gopath");
    let package_dir = gopath.join("src/github.com/samuel/go-zookeeper");
    fs::create_dir_all(package_dir.parent().unwrap()).unwrap();
    let copy = Command::new("cp")
        .arg("-r")
        .arg(GO_ZK_SOURCES)
        .arg(&package_dir)
        .status()
        .expect("run cp");
    assert!(copy.success(), "copying {GO_ZK_SOURCES} failed");
    adapt_srvr_parser(&package_dir.join("zk/flw.go"));

    // The harness looks for ZooKeeper's fat jar under ZOOKEEPER_PATH; the shim never opens it.
    let zk_path = work.path().join("zookeeper");
    let fatjar_dir = zk_path.join("contrib/fatjar");
    fs::create_dir_all(&fatjar_dir).unwrap();
    fs::write(fatjar_dir.join("zookeeper-0-fatjar.jar"), "").unwrap();
    let bin_dir = work.path().join("bin");
    fs::create_dir_all(&bin_dir).unwrap();
    write_java_shim(&bin_dir, &server);
    // The servers' temp directories (the harness's ioutil.TempDir) stay inside `work`.
    let tmp_dir = work.path().join("tmp");
    fs::create_dir_all(&tmp_dir).unwrap();

    let test_binary = work.path().join("zk.test");
    let go_cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-build-cache");
    let build = Command::new("go")
        .current_dir(package_dir.join("zk"))
        .args(["test", "-c", "-o"])
        .arg(&test_binary)
        .arg(".")
        .env("GO111MODULE", "off")
        .env("GOPATH", &gopath)
        .env("GOCACHE", &go_cache)
        .output()
        .expect("run go test -c");
    assert!(
        build.status.success(),
        "compiling go-zookeeper's tests failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );

    let output_path = work.path().join("go-test.log");
    let output = fs::File::create(&output_path).expect("log file");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new(&test_binary)
        .current_dir(package_dir.join("zk"))
        .arg("-test.v")
        .arg(format!("-test.run=^({})$", GO_CLUSTER_TESTS.join("|")))
        .arg(format!("-test.timeout={}s", GO_CLUSTER_LIMIT.as_secs()))
        .env("PATH", path)
        .env("ZOOKEEPER_PATH", &zk_path)
        .env("TMPDIR", &tmp_dir)
        .stdin(Stdio::null())
        .stdout(output.try_clone().unwrap())
        .stderr(output)
        // Its own process group: the servers the tests start are killed with it, whatever
        // state a failing test leaves them in.
        .process_group(0)
        .spawn()
        .expect("run go-zookeeper's tests");
    let group = child.id() as libc::pid_t;
    // A little past the Go binary's own -test.timeout, which reports which test hung.
    let deadline = Instant::now() + GO_CLUSTER_LIMIT + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the Go tests") {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // SAFETY: kill(2) on the process group this test created; nothing else is in it.
    unsafe { libc::killpg(group, libc::SIGKILL) };
    let _ = child.wait();
    let log = fs::read_to_string(&output_path).unwrap_or_default();
    println!("--- go-zookeeper cluster tests\n{log}");
    let Some(status) = status else {
        panic!("go-zookeeper's cluster tests did not finish within {GO_CLUSTER_LIMIT:?}:\n{log}");
    };
    let passed = |name: &str| log.contains(&format!("--- PASS: {name} "));
    let excused: &[(&str, &str)] = match server {
        GoClusterServer::Corral => GO_CLUSTER_TESTS_CORRAL_DIVERGES,
        GoClusterServer::Apache => &[],
    };
    for (name, why) in excused {
        let outcome = if passed(name) { "passed" } else { "failed" };
        println!("known divergence, not required: {name} {outcome} ({why})");
    }
    let missing: Vec<&&str> = GO_CLUSTER_TESTS
        .iter()
        .filter(|name| !passed(name) && !excused.iter().any(|(n, _)| n == *name))
        .collect();
    assert!(
        missing.is_empty(),
        "go-zookeeper's cluster tests failed ({status}; not passed: {missing:?}):\n{log}"
    );
}

/// go-zookeeper's own cluster tests (test files and harness unmodified; see
/// [`adapt_srvr_parser`]) with Corral members where they expect ZooKeeper: the harness writes
/// each member's zoo.cfg (`clientPort`, bare `server.N` lines) and myid, starts and SIGKILLs
/// members itself. [`GO_CLUSTER_TESTS_CORRAL_DIVERGES`] lists what does not pass yet.
#[test]
fn go_zookeeper_cluster_tests_against_corral() {
    run_go_cluster_tests(GoClusterServer::Corral);
}

/// The same tests against Apache ZooKeeper: the reference they were written for.
#[test]
fn go_zookeeper_cluster_tests_against_apache_zookeeper() {
    run_go_cluster_tests(GoClusterServer::Apache);
}
