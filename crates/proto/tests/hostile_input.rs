//! Mutation testing of the decoders: valid frames, damaged in every way a small deterministic
//! generator can think of, must decode or fail with an error — never panic, never allocate
//! beyond the input. (The same property the cargo-fuzz target in `fuzz/` explores without end.)

use bytes::Bytes;
use corral_proto::records::*;
use corral_proto::request::decode_connect;
use corral_proto::{Jute, OpCode, Request, Response, Writer};

/// xorshift64*: deterministic, so a failure names a reproducible case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn samples() -> Vec<(i32, Vec<u8>)> {
    let acl = vec![Acl {
        perms: 31,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }];
    let create = CreateRequest {
        path: "/a/b".into(),
        data: Some(Bytes::from_static(b"payload")),
        acl: acl.clone(),
        flags: 2,
    };
    let reqs = vec![
        Request::Create {
            op: OpCode::Create2,
            req: create.clone(),
        },
        Request::SetData(SetDataRequest {
            path: "/a".into(),
            data: None,
            version: 3,
        }),
        Request::SetAcl(SetAclRequest {
            path: "/a".into(),
            acl,
            version: -1,
        }),
        Request::Multi(vec![
            Request::Create {
                op: OpCode::Create,
                req: create,
            },
            Request::Delete(DeleteRequest {
                path: "/x".into(),
                version: -1,
            }),
        ]),
        Request::SetWatches2(SetWatches2 {
            relative_zxid: 9,
            data_watches: vec!["/d".into(), "/e".into()],
            exist_watches: vec![],
            child_watches: vec!["/c".into()],
            persistent_watches: vec![],
            persistent_recursive_watches: vec!["/".into()],
        }),
        Request::Auth(AuthPacket {
            auth_type: 0,
            scheme: "digest".into(),
            auth: Some(Bytes::from_static(b"u:p")),
        }),
    ];
    reqs.into_iter()
        .map(|r| {
            let mut w = Writer::new();
            r.write(&mut w);
            (r.op().code(), w.into_inner())
        })
        .collect()
}

#[test]
fn damaged_requests_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (op, good) in samples() {
        assert!(Request::decode(op, &good).is_ok());
        for _ in 0..5_000 {
            let mut bad = good.clone();
            match rng.below(4) {
                0 => {
                    let i = rng.below(bad.len());
                    bad[i] = rng.next() as u8;
                }
                1 => bad.truncate(rng.below(bad.len())),
                2 => {
                    // Plant a huge or negative length somewhere.
                    let i = rng.below(bad.len().saturating_sub(3).max(1));
                    let v = [i32::MAX, i32::MIN, -2, 0x7fff_fff0][rng.below(4)];
                    for (k, b) in v.to_be_bytes().iter().enumerate() {
                        if let Some(slot) = bad.get_mut(i + k) {
                            *slot = *b;
                        }
                    }
                }
                _ => {
                    let extra = rng.below(16);
                    bad.extend((0..extra).map(|_| rng.next() as u8));
                }
            }
            let any_op = if rng.below(8) == 0 {
                rng.next() as i32 % 120
            } else {
                op
            };
            let _ = Request::decode(any_op, &bad);
            let _ = decode_connect(&bad);
            if let Ok(op) = OpCode::try_from(any_op) {
                let _ = Response::decode(op, &bad);
            }
            let _ = TxnHeader::decode(&bad);
            let _ = MultiTxn::decode(&bad);
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(42);
    for _ in 0..20_000 {
        let len = rng.below(64);
        let buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let op = [1, 2, 4, 5, 7, 12, 14, 22, 101, 105, 106][rng.below(11)];
        let _ = Request::decode(op, &buf);
        let _ = decode_connect(&buf);
        let _ = corral_proto::frame::check(&buf, 1 << 20);
    }
}
