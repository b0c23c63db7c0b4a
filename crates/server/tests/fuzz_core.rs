//! The core fuzz harness on stable, as part of the normal test suite: every saved corpus input
//! of the `core` fuzz target, then seeded random inputs. A failure names the input; the same
//! bytes reproduce it under `cargo fuzz run core <file>`.

#[path = "fuzz_core/harness.rs"]
mod harness;

use std::path::PathBuf;

/// Seeded inputs per run: enough to touch every action many times, small enough to keep the
/// test in a few seconds on a debug build.
const SEEDED_INPUTS: u64 = 3000;
const SEEDED_INPUT_BYTES: usize = 384;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/core")
}

fn run_named(name: &str, data: &[u8]) {
    if let Err(panic) = std::panic::catch_unwind(|| harness::run(data)) {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!("core fuzz input {name} failed: {msg}");
    }
}

#[test]
fn saved_corpus_keeps_every_invariant() {
    let dir = corpus_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    // The corpus is committed; an empty one would make this test pass vacuously.
    assert!(files.len() > 10, "corpus at {} is missing", dir.display());
    // Past findings too: they must keep passing (a known one is tolerated, see the harness).
    let findings = dir.join("../../findings");
    files.extend(
        std::fs::read_dir(&findings)
            .unwrap_or_else(|e| panic!("{}: {e}", findings.display()))
            .map(|e| e.expect("findings entry").path()),
    );
    files.sort();
    for f in files {
        let data = std::fs::read(&f).expect("corpus file");
        run_named(&f.display().to_string(), &data);
    }
}

#[test]
fn seeded_random_inputs_keep_every_invariant() {
    for seed in 0..SEEDED_INPUTS {
        let data = harness::seeded_input(seed, SEEDED_INPUT_BYTES);
        run_named(&format!("seed {seed}"), &data);
    }
}

/// Runs one input file, e.g. a finding:
/// `FUZZ_INPUT=fuzz/findings/event-after-close-on-expiry \
///  cargo test -p corral-server --test fuzz_core one_input -- --ignored`
#[test]
#[ignore = "needs FUZZ_INPUT"]
fn one_input() {
    let path = std::env::var("FUZZ_INPUT").expect("FUZZ_INPUT names an input file");
    harness::run(&std::fs::read(&path).expect("input file"));
}
