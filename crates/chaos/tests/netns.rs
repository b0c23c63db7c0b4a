//! The partition plumbing: namespaces, veths and the bridge exist while a `Network` lives,
//! blackhole routes come and go, and everything is gone after drop — also after a panic.

use std::process::Command;

use corral_chaos::net::Network;

fn ip_out(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn network_is_built_cut_healed_and_removed() {
    if let Some(reason) = Network::unavailable_reason() {
        println!("SKIPPED: {reason}");
        return;
    }
    let mut net = Network::create(&[1, 2, 3]).expect("create namespaces");
    let prefix = net.prefix().to_string();
    assert!(ip_out(&["netns", "list"]).contains(&format!("{prefix}-m2")));
    assert!(ip_out(&["link", "show"]).contains(&format!("{prefix}br")));

    net.cut_between(&[1], &[2, 3]).unwrap();
    let routes = ip_out(&["-n", &net.namespace(1), "route", "show"]);
    assert!(
        routes.contains(&format!("blackhole {}", net.member_ip(2))),
        "{routes}"
    );
    assert_eq!(net.cuts().len(), 4);
    net.heal().unwrap();
    let routes = ip_out(&["-n", &net.namespace(1), "route", "show"]);
    assert!(!routes.contains("blackhole"), "{routes}");

    // Dropped during a panic, the guard still removes everything.
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _net = net;
        panic!("planted");
    }));
    assert!(unwound.is_err());
    assert!(!ip_out(&["netns", "list"]).contains(&prefix));
    assert!(!ip_out(&["link", "show"]).contains(&prefix));
}
