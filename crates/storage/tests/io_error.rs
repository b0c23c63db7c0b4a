//! A write error in the middle of the log (here: the file size limit, RLIMIT_FSIZE, which
//! fails writes with EFBIG much like a full disk fails them with ENOSPC). The error is
//! reported for the affected batch, the log stays consistent, and writing resumes once the
//! limit is lifted ("space returns").
//!
//! The limit is process-wide, so the scenario runs in a child process (this test binary
//! re-executed with a filter) to keep it away from the other tests.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use corral_storage::{GroupCommitLog, LogOptions, StorageError};

const CHILD_ENV: &str = "CORRAL_STORAGE_IO_ERROR_CHILD";

#[test]
fn write_error_is_reported_and_log_stays_consistent() {
    for prealloc in ["0", "4096"] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "io_error_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, prealloc)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "prealloc {prealloc}: child failed:\n{text}"
        );
        assert!(text.contains("1 passed"), "child test did not run:\n{text}");
    }
}

fn set_file_size_limit(bytes: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls with a valid pointer to a local.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim), 0);
        lim.rlim_cur = bytes.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

#[test]
fn io_error_child() {
    let Ok(prealloc) = std::env::var(CHILD_ENV) else {
        return; // only meaningful inside the child process
    };
    // SAFETY: ignoring SIGXFSZ makes oversize writes fail with EFBIG instead of killing us.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let d = dirs();
    let opts = LogOptions {
        prealloc_bytes: prealloc.parse().unwrap(),
        ..small_opts()
    };
    let mut w = writer(&d, opts.clone());
    append_range(&mut w, 1, 4);

    // Synchronous writer: a two-record batch whose second record does not fit.
    set_file_size_limit(64 * 1024);
    w.append(5, &payload(5)).unwrap();
    w.append(6, &[0xee; 100 * 1024]).unwrap();
    assert!(matches!(w.commit(), Err(StorageError::Io { .. })));
    assert_eq!((w.last_zxid(), w.next_zxid()), (4, 5), "batch rolled back");
    append_range(&mut w, 5, 5);

    // Group commit on the same log.
    let results = Arc::new(Mutex::new(Vec::new()));
    let sink = results.clone();
    let log =
        GroupCommitLog::start(w, opts, Box::new(move |r| sink.lock().unwrap().push(r))).unwrap();
    log.submit(6, vec![0xee; 100 * 1024]).unwrap();
    log.barrier().unwrap();
    let err = results.lock().unwrap().pop().unwrap().unwrap_err();
    assert!(matches!(err, StorageError::Io { .. }), "{err}");
    assert_eq!(
        log.last_durable_zxid(),
        5,
        "the failed batch is not durable"
    );

    // Queued behind the failure with a stale zxid: rejected, not written.
    log.submit(7, payload(7)).unwrap();
    log.barrier().unwrap();
    let err = results.lock().unwrap().pop().unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::OutOfSequence {
                expected: 6,
                got: 7
            }
        ),
        "{err}"
    );

    // Small records still fit: the log continues right after zxid 5.
    log.submit(6, payload(6)).unwrap();
    log.barrier().unwrap();
    assert_eq!(results.lock().unwrap().pop().unwrap().unwrap(), 6);

    // "Space returns": the big record now succeeds.
    set_file_size_limit(u64::MAX);
    log.submit(7, vec![0xee; 100 * 1024]).unwrap();
    log.submit(8, payload(8)).unwrap();
    log.barrier().unwrap();
    assert_eq!(results.lock().unwrap().pop().unwrap().unwrap(), 8);
    log.shutdown();

    let rec = recover_ok(&d);
    assert!(rec.truncated_tail.is_none());
    assert_eq!(zxids(&rec), (1..=8).collect::<Vec<_>>());
    assert_eq!(rec.txns[6].1, vec![0xee; 100 * 1024]);
    assert_eq!(rec.txns[5].1, payload(6));
    corral_storage::verify(&d.data, &d.log).unwrap();
}
