//! The server core driven by arbitrary client actions, with every invariant checked after every
//! step and the txn log replayed at the end. Run: `scripts/fuzz core [seconds]`.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The same harness the stable test `tests/fuzz_core.rs` runs over the saved corpus.
#[path = "../../tests/fuzz_core/harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::run(data));
