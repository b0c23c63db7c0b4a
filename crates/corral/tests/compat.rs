//! Real-client compatibility tests: each test starts its own server (corral by default, Apache
//! ZooKeeper with `CORRAL_COMPAT_TARGET=zk`) and runs one suite from tests/compat against it.
//! The tools come from Debian packages that `scripts/test` installs; a missing tool fails the
//! test with a message saying so.

mod support;

use std::path::Path;
use std::process::Command;

use support::{
    build_go_suite, exclusive, require_file, require_kazoo, require_program, run_suite, Server,
    Target,
};

#[test]
fn kazoo_suite() {
    let _serial = exclusive();
    let python = require_kazoo();
    let server = Server::start_target();
    run_suite(
        "kazoo",
        Command::new(python)
            .arg("tests/compat/kazoo_suite.py")
            .arg(server.addr()),
    );
}

#[test]
fn go_zookeeper_suite() {
    let _serial = exclusive();
    let (_build_dir, binary) = build_go_suite("tests/compat/go/main.go");
    let server = Server::start_target();
    run_suite("go-zookeeper", Command::new(&binary).arg(server.addr()));
}

#[test]
fn cli_mt_suite() {
    let _serial = exclusive();
    let python = require_kazoo();
    require_file(
        Path::new("/usr/lib/zookeeper/bin/cli_mt"),
        "the ZooKeeper C client shell (Debian package zookeeper-bin)",
    );
    require_program("stdbuf", "coreutils");
    let server = Server::start_target();
    run_suite(
        "cli_mt",
        Command::new(python)
            .arg("tests/compat/cli_mt.py")
            .arg(server.addr()),
    );
}

#[test]
fn zkcli_suite() {
    let _serial = exclusive();
    let python = require_kazoo();
    require_program("java", "a Java runtime (Debian package zookeeper)");
    require_file(
        Path::new("/usr/share/java/zookeeper.jar"),
        "zkCli's classes (Debian package zookeeper)",
    );
    let server = Server::start_target();
    run_suite(
        "zkCli",
        Command::new(python)
            .arg("tests/compat/zkcli.py")
            .arg(server.addr()),
    );
}

#[test]
fn differential_against_apache_zookeeper() {
    let _serial = exclusive();
    let python = require_kazoo();
    let reference = Server::start(Target::ApacheZk);
    let candidate = Server::start_target();
    run_suite(
        "differential",
        Command::new(python)
            .arg("tests/compat/differential.py")
            .arg(reference.addr())
            .arg(candidate.addr()),
    );
}
