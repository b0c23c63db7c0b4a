//! Transactions: the unit of change that is logged, replicated and replayed.
//!
//! A logged record is a jute `TxnHeader` followed by the body record of its type, the same
//! layout ZooKeeper's txn log uses. Every write request, including session creation and close,
//! becomes exactly one record; a failed write is an `Error` txn (it still consumes a zxid, as in
//! ZooKeeper).

use bytes::Bytes;
use corral_proto::records::*;
use corral_proto::{DecodeError, Jute, OpCode, Reader, Writer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Txn {
    /// `op` is Create or Create2 (they differ only in the reply).
    Create {
        op: OpCode,
        txn: CreateTxn,
    },
    CreateContainer(CreateContainerTxn),
    CreateTtl(CreateTtlTxn),
    /// `op` is Delete or DeleteContainer.
    Delete {
        op: OpCode,
        txn: DeleteTxn,
    },
    SetData(SetDataTxn),
    SetAcl(SetAclTxn),
    Check(CheckVersionTxn),
    Multi(Vec<Txn>),
    CreateSession(CreateSessionTxn),
    CloseSession(CloseSessionTxn),
    /// A membership change: the new text of `/zookeeper/config` (ZooKeeper logs reconfig as
    /// a setData of that node under the reconfig type).
    Reconfig(SetDataTxn),
    Error(i32),
}

impl Txn {
    pub fn type_code(&self) -> i32 {
        match self {
            Txn::Create { op, .. } | Txn::Delete { op, .. } => op.code(),
            Txn::CreateContainer(_) => OpCode::CreateContainer.code(),
            Txn::CreateTtl(_) => OpCode::CreateTtl.code(),
            Txn::SetData(_) => OpCode::SetData.code(),
            Txn::SetAcl(_) => OpCode::SetAcl.code(),
            Txn::Check(_) => OpCode::Check.code(),
            Txn::Multi(_) => OpCode::Multi.code(),
            Txn::CreateSession(_) => OpCode::CreateSession.code(),
            Txn::CloseSession(_) => OpCode::CloseSession.code(),
            Txn::Reconfig(_) => OpCode::Reconfig.code(),
            Txn::Error(_) => OpCode::Error.code(),
        }
    }

    pub fn write_body(&self, w: &mut Writer) {
        match self {
            Txn::Create { txn, .. } => txn.write(w),
            Txn::CreateContainer(t) => t.write(w),
            Txn::CreateTtl(t) => t.write(w),
            Txn::Delete { txn, .. } => txn.write(w),
            Txn::SetData(t) | Txn::Reconfig(t) => t.write(w),
            Txn::SetAcl(t) => t.write(w),
            Txn::Check(t) => t.write(w),
            Txn::Multi(txns) => {
                let wrapped: Vec<corral_proto::records::Txn> = txns
                    .iter()
                    .map(|t| {
                        let mut inner = Writer::new();
                        t.write_body(&mut inner);
                        corral_proto::records::Txn {
                            txn_type: t.type_code(),
                            data: Some(Bytes::from(inner.into_inner())),
                        }
                    })
                    .collect();
                MultiTxn { txns: wrapped }.write(w)
            }
            Txn::CreateSession(t) => t.write(w),
            Txn::CloseSession(t) => t.write(w),
            Txn::Error(e) => ErrorTxn { err: *e }.write(w),
        }
    }

    pub fn read_body(type_code: i32, r: &mut Reader<'_>) -> Result<Txn, DecodeError> {
        let op = OpCode::try_from(type_code)?;
        Ok(match op {
            OpCode::Create | OpCode::Create2 => Txn::Create {
                op,
                txn: CreateTxn::read(r)?,
            },
            OpCode::CreateContainer => Txn::CreateContainer(CreateContainerTxn::read(r)?),
            OpCode::CreateTtl => Txn::CreateTtl(CreateTtlTxn::read(r)?),
            OpCode::Delete | OpCode::DeleteContainer => Txn::Delete {
                op,
                txn: DeleteTxn::read(r)?,
            },
            OpCode::SetData => Txn::SetData(SetDataTxn::read(r)?),
            OpCode::Reconfig => Txn::Reconfig(SetDataTxn::read(r)?),
            OpCode::SetAcl => Txn::SetAcl(SetAclTxn::read(r)?),
            OpCode::Check => Txn::Check(CheckVersionTxn::read(r)?),
            OpCode::Multi => {
                let m = MultiTxn::read(r)?;
                let mut txns = Vec::with_capacity(m.txns.len());
                for t in m.txns {
                    // A multi never holds a multi (prepare never builds one); refusing it
                    // here also keeps decoding from recursing once per nesting level.
                    if t.txn_type == OpCode::Multi.code() {
                        return Err(DecodeError::UnknownValue {
                            what: "txn type inside a multi",
                            value: t.txn_type,
                        });
                    }
                    let data = t.data.unwrap_or_default();
                    let mut inner = Reader::new(&data);
                    txns.push(Txn::read_body(t.txn_type, &mut inner)?);
                }
                Txn::Multi(txns)
            }
            OpCode::CreateSession => Txn::CreateSession(CreateSessionTxn::read(r)?),
            OpCode::CloseSession => Txn::CloseSession(CloseSessionTxn::read(r)?),
            OpCode::Error => Txn::Error(ErrorTxn::read(r)?.err),
            other => {
                return Err(DecodeError::UnknownValue {
                    what: "txn type",
                    value: other.code(),
                })
            }
        })
    }
}

/// A txn with its header, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnRecord {
    pub header: TxnHeader,
    pub txn: Txn,
}

impl TxnRecord {
    pub fn encode(&self) -> Vec<u8> {
        encode_record(&self.header, &self.txn)
    }

    pub fn decode(buf: &[u8]) -> Result<TxnRecord, DecodeError> {
        let mut r = Reader::new(buf);
        let header = TxnHeader::read(&mut r)?;
        let txn = Txn::read_body(header.txn_type, &mut r)?;
        r.finish()?;
        Ok(TxnRecord { header, txn })
    }
}

/// Encodes `header` (its type taken from `txn`) followed by `txn`, as [`TxnRecord::encode`]
/// does, without owning either.
pub fn encode_record(header: &TxnHeader, txn: &Txn) -> Vec<u8> {
    let mut w = Writer::with_capacity(64);
    let header = TxnHeader {
        txn_type: txn.type_code(),
        ..header.clone()
    };
    header.write(&mut w);
    txn.write_body(&mut w);
    w.into_inner()
}

/// Encodes a txn for the log if its record fits one log record
/// ([`corral_storage::MAX_PAYLOAD_BYTES`]); `None` otherwise.
///
/// Every txn is sized here before it is applied: a record the log refuses would fail the log,
/// and the rebuilt server would meet the same txn again. closeSession records stay small because
/// they list no paths (apply derives them from the ephemeral index); any other write that would
/// not fit (possible when `jute.maxbuffer` is raised above the record limit) fails instead.
pub fn encode_if_loggable(header: &TxnHeader, txn: &Txn) -> Option<Vec<u8>> {
    let record = encode_record(header, txn);
    (record.len() <= corral_storage::MAX_PAYLOAD_BYTES).then_some(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let rec = TxnRecord {
            header: TxnHeader {
                client_id: 5,
                cxid: 3,
                zxid: 99,
                time_ms: 1234,
                txn_type: 0,
            },
            txn: Txn::Multi(vec![
                Txn::Create {
                    op: OpCode::Create2,
                    txn: CreateTxn {
                        path: "/a".into(),
                        data: None,
                        acl: crate::core::acl::open_acl(),
                        ephemeral: true,
                        parent_cversion: 4,
                    },
                },
                Txn::Error(-101),
                Txn::Delete {
                    op: OpCode::Delete,
                    txn: DeleteTxn { path: "/b".into() },
                },
            ]),
        };
        let enc = rec.encode();
        let back = TxnRecord::decode(&enc).unwrap();
        assert_eq!(back.txn, rec.txn);
        assert_eq!(back.header.txn_type, OpCode::Multi.code());
    }

    #[test]
    fn a_multi_inside_a_multi_is_refused() {
        let nested = Txn::Multi(vec![Txn::Multi(vec![Txn::Error(-1)])]);
        let mut w = Writer::new();
        nested.write_body(&mut w);
        let body = w.into_inner();
        assert!(Txn::read_body(OpCode::Multi.code(), &mut Reader::new(&body)).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(TxnRecord::decode(&[1, 2, 3]).is_err());
        let mut bad = TxnRecord {
            header: TxnHeader::default(),
            txn: Txn::Error(-1),
        }
        .encode();
        bad[31] = 77; // txn type 77 is not a txn
        assert!(TxnRecord::decode(&bad).is_err());
    }
}
