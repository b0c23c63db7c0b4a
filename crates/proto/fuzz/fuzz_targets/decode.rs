//! Every decoder of the wire format, fed arbitrary bytes: must never panic.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run decode` from `crates/proto` (see README there).
#![no_main]

use corral_proto::records::{MultiTxn, TxnHeader};
use corral_proto::request::decode_connect;
use corral_proto::{frame, Jute, OpCode, Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&op, body)) = data.split_first() else {
        return;
    };
    // The first byte picks the opcode so every request layout gets explored.
    let op = match OpCode::ALL.get(op as usize % (OpCode::ALL.len() + 1)) {
        Some(op) => op.code(),
        None => i32::from(op),
    };
    if let Ok(req) = Request::decode(op, body) {
        // What decodes must re-encode to something that decodes to the same request.
        let mut w = corral_proto::Writer::new();
        req.write(&mut w);
        assert_eq!(Request::decode(op, &w.into_inner()).ok(), Some(req));
    }
    if let Ok(code) = OpCode::try_from(op) {
        let _ = Response::decode(code, body);
    }
    let _ = decode_connect(body);
    let _ = frame::check(body, 1 << 20);
    let _ = TxnHeader::decode(body);
    let _ = MultiTxn::decode(body);
});
