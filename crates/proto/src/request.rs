//! Client requests: decoding a frame body into a typed [`Request`] and encoding one.
//!
//! A request frame is a [`RequestHeader`] (xid, opcode) followed by the opcode's record. The
//! first frame of a connection is different: a bare [`ConnectRequest`], see [`decode_connect`].

use crate::consts::OpCode;
use crate::jute::{DecodeError, Jute, Reader, Writer};
use crate::records::*;

/// A decoded client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// create, create2 and createContainer share a layout; the opcode tells them apart.
    Create {
        op: OpCode,
        req: CreateRequest,
    },
    CreateTtl(CreateTtlRequest),
    Delete(DeleteRequest),
    DeleteContainer(PathRequest),
    Exists(PathWatch),
    GetData(PathWatch),
    SetData(SetDataRequest),
    GetAcl(PathRequest),
    SetAcl(SetAclRequest),
    GetChildren(PathWatch),
    GetChildren2(PathWatch),
    Sync(PathRequest),
    Ping,
    Check(CheckVersionRequest),
    Multi(Vec<Request>),
    MultiRead(Vec<Request>),
    Reconfig(ReconfigRequest),
    CheckWatches(WatchesRequest),
    RemoveWatches(WatchesRequest),
    Auth(AuthPacket),
    SetWatches(SetWatches),
    SetWatches2(SetWatches2),
    GetEphemerals(PathRequest),
    GetAllChildrenNumber(PathRequest),
    AddWatch(AddWatchRequest),
    WhoAmI,
    CloseSession,
}

/// Why a request frame could not be turned into a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The opcode is not one this server implements: answer ZUNIMPLEMENTED, keep the connection.
    #[error("unknown opcode {0}")]
    UnknownOpcode(i32),
    /// The bytes do not form the record the opcode announces: close the connection.
    #[error("malformed request: {0}")]
    Malformed(#[from] DecodeError),
    #[error("invalid op {0} inside a multi")]
    BadMultiOp(i32),
}

impl Request {
    pub fn op(&self) -> OpCode {
        use Request::*;
        match self {
            Create { op, .. } => *op,
            CreateTtl(_) => OpCode::CreateTtl,
            Delete(_) => OpCode::Delete,
            DeleteContainer(_) => OpCode::DeleteContainer,
            Exists(_) => OpCode::Exists,
            GetData(_) => OpCode::GetData,
            SetData(_) => OpCode::SetData,
            GetAcl(_) => OpCode::GetAcl,
            SetAcl(_) => OpCode::SetAcl,
            GetChildren(_) => OpCode::GetChildren,
            GetChildren2(_) => OpCode::GetChildren2,
            Sync(_) => OpCode::Sync,
            Ping => OpCode::Ping,
            Check(_) => OpCode::Check,
            Multi(_) => OpCode::Multi,
            MultiRead(_) => OpCode::MultiRead,
            Reconfig(_) => OpCode::Reconfig,
            CheckWatches(_) => OpCode::CheckWatches,
            RemoveWatches(_) => OpCode::RemoveWatches,
            Auth(_) => OpCode::Auth,
            SetWatches(_) => OpCode::SetWatches,
            SetWatches2(_) => OpCode::SetWatches2,
            GetEphemerals(_) => OpCode::GetEphemerals,
            GetAllChildrenNumber(_) => OpCode::GetAllChildrenNumber,
            AddWatch(_) => OpCode::AddWatch,
            WhoAmI => OpCode::WhoAmI,
            CloseSession => OpCode::CloseSession,
        }
    }

    /// The path a request names, if it names one.
    pub fn path(&self) -> Option<&str> {
        use Request::*;
        Some(match self {
            Create { req, .. } => &req.path,
            CreateTtl(r) => &r.path,
            Delete(r) => &r.path,
            DeleteContainer(r)
            | GetAcl(r)
            | Sync(r)
            | GetEphemerals(r)
            | GetAllChildrenNumber(r) => &r.path,
            Exists(r) | GetData(r) | GetChildren(r) | GetChildren2(r) => &r.path,
            SetData(r) => &r.path,
            SetAcl(r) => &r.path,
            Check(r) => &r.path,
            CheckWatches(r) | RemoveWatches(r) => &r.path,
            AddWatch(r) => &r.path,
            _ => return None,
        })
    }

    /// Whether the request changes state (goes through the txn log).
    pub fn is_write(&self) -> bool {
        use Request::*;
        matches!(
            self,
            Create { .. }
                | CreateTtl(_)
                | Delete(_)
                | DeleteContainer(_)
                | SetData(_)
                | SetAcl(_)
                | Check(_)
                | Multi(_)
                | CloseSession
                | Reconfig(_)
        )
    }

    /// Decodes the body that follows a request header with opcode `op`.
    pub fn decode(op: i32, body: &[u8]) -> Result<Request, RequestError> {
        let mut r = Reader::new(body);
        Self::read(op, &mut r)
    }

    fn read(op: i32, r: &mut Reader<'_>) -> Result<Request, RequestError> {
        let op = OpCode::try_from(op).map_err(|_| RequestError::UnknownOpcode(op))?;
        use Request as R;
        Ok(match op {
            OpCode::Create | OpCode::Create2 | OpCode::CreateContainer => R::Create {
                op,
                req: CreateRequest::read(r)?,
            },
            OpCode::CreateTtl => R::CreateTtl(CreateTtlRequest::read(r)?),
            OpCode::Delete => R::Delete(DeleteRequest::read(r)?),
            OpCode::DeleteContainer => R::DeleteContainer(PathRequest::read(r)?),
            OpCode::Exists => R::Exists(PathWatch::read(r)?),
            OpCode::GetData => R::GetData(PathWatch::read(r)?),
            OpCode::SetData => R::SetData(SetDataRequest::read(r)?),
            OpCode::GetAcl => R::GetAcl(PathRequest::read(r)?),
            OpCode::SetAcl => R::SetAcl(SetAclRequest::read(r)?),
            OpCode::GetChildren => R::GetChildren(PathWatch::read(r)?),
            OpCode::GetChildren2 => R::GetChildren2(PathWatch::read(r)?),
            OpCode::Sync => R::Sync(PathRequest::read(r)?),
            OpCode::Ping => R::Ping,
            OpCode::Check => R::Check(CheckVersionRequest::read(r)?),
            OpCode::Multi => R::Multi(read_multi(r, false)?),
            OpCode::MultiRead => R::MultiRead(read_multi(r, true)?),
            OpCode::Reconfig => R::Reconfig(ReconfigRequest::read(r)?),
            OpCode::CheckWatches => R::CheckWatches(WatchesRequest::read(r)?),
            OpCode::RemoveWatches => R::RemoveWatches(WatchesRequest::read(r)?),
            OpCode::Auth => R::Auth(AuthPacket::read(r)?),
            OpCode::SetWatches => R::SetWatches(SetWatches::read(r)?),
            OpCode::SetWatches2 => R::SetWatches2(SetWatches2::read(r)?),
            OpCode::GetEphemerals => R::GetEphemerals(PathRequest::read(r)?),
            OpCode::GetAllChildrenNumber => R::GetAllChildrenNumber(PathRequest::read(r)?),
            OpCode::AddWatch => R::AddWatch(AddWatchRequest::read(r)?),
            OpCode::WhoAmI => R::WhoAmI,
            OpCode::CloseSession => R::CloseSession,
            OpCode::Notification | OpCode::Sasl | OpCode::CreateSession | OpCode::Error => {
                return Err(RequestError::UnknownOpcode(op.code()))
            }
        })
    }

    /// Encodes the request body (without header or frame length).
    pub fn write(&self, w: &mut Writer) {
        use Request::*;
        match self {
            Create { req, .. } => req.write(w),
            CreateTtl(r) => r.write(w),
            Delete(r) => r.write(w),
            DeleteContainer(r)
            | GetAcl(r)
            | Sync(r)
            | GetEphemerals(r)
            | GetAllChildrenNumber(r) => r.write(w),
            Exists(r) | GetData(r) | GetChildren(r) | GetChildren2(r) => r.write(w),
            SetData(r) => r.write(w),
            SetAcl(r) => r.write(w),
            Check(r) => r.write(w),
            Multi(ops) | MultiRead(ops) => {
                for op in ops {
                    MultiHeader {
                        op: op.op().code(),
                        done: false,
                        err: -1,
                    }
                    .write(w);
                    op.write(w);
                }
                MultiHeader {
                    op: -1,
                    done: true,
                    err: -1,
                }
                .write(w);
            }
            Reconfig(r) => r.write(w),
            CheckWatches(r) | RemoveWatches(r) => r.write(w),
            Auth(r) => r.write(w),
            SetWatches(r) => r.write(w),
            SetWatches2(r) => r.write(w),
            AddWatch(r) => r.write(w),
            Ping | WhoAmI | CloseSession => {}
        }
    }
}

fn read_multi(r: &mut Reader<'_>, read_only: bool) -> Result<Vec<Request>, RequestError> {
    let mut ops = Vec::new();
    loop {
        let h = MultiHeader::read(r)?;
        if h.done {
            return Ok(ops);
        }
        let allowed = if read_only {
            matches!(h.op, 4 | 8)
        } else {
            matches!(h.op, 1 | 2 | 5 | 13 | 15 | 19 | 21)
        };
        if !allowed {
            return Err(RequestError::BadMultiOp(h.op));
        }
        ops.push(Request::read(h.op, r)?);
    }
}

/// A decoded first packet of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub req: ConnectRequest,
    /// Whether the client can use a read-only server; `None` if the client (pre-3.3) did not
    /// send the trailing flag.
    pub read_only: Option<bool>,
    /// Corral extension features the client asked for (bits of `consts::ext`); 0 for every
    /// client that did not append the extension block.
    pub ext_features: i32,
}

/// Decodes a connect frame body, with or without the trailing readOnly byte and Corral's
/// extension block. Other trailing bytes are ignored, as ZooKeeper ignores them.
pub fn decode_connect(body: &[u8]) -> Result<Connect, DecodeError> {
    let mut r = Reader::new(body);
    let req = ConnectRequest::read(&mut r)?;
    let read_only = if r.remaining() > 0 {
        Some(r.read_bool()?)
    } else {
        None
    };
    let mut ext_features = 0;
    if r.remaining() >= 8 && r.read_i32()? == crate::consts::ext::CONNECT_MAGIC {
        ext_features = r.read_i32()?;
    }
    Ok(Connect {
        req,
        read_only,
        ext_features,
    })
}

/// Encodes a connect frame body with the readOnly byte.
pub fn encode_connect(c: &ConnectRequest, read_only: bool, w: &mut Writer) {
    c.write(w);
    w.write_bool(read_only);
}

/// Encodes a connect frame body with the readOnly byte and Corral's extension block asking for
/// `features` (bits of `consts::ext`).
pub fn encode_connect_ext(c: &ConnectRequest, read_only: bool, features: i32, w: &mut Writer) {
    encode_connect(c, read_only, w);
    w.write_i32(crate::consts::ext::CONNECT_MAGIC);
    w.write_i32(features);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn round_trip(req: Request) {
        let mut w = Writer::new();
        req.write(&mut w);
        let back = Request::decode(req.op().code(), &w.into_inner()).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn every_request_kind_round_trips() {
        let create = CreateRequest {
            path: "/a".into(),
            data: Some(Bytes::from_static(b"x")),
            acl: vec![],
            flags: 0,
        };
        round_trip(Request::Create {
            op: OpCode::Create2,
            req: create.clone(),
        });
        round_trip(Request::Delete(DeleteRequest {
            path: "/a".into(),
            version: -1,
        }));
        round_trip(Request::GetData(PathWatch {
            path: "/a".into(),
            watch: true,
        }));
        round_trip(Request::Multi(vec![
            Request::Create {
                op: OpCode::Create,
                req: create,
            },
            Request::Check(CheckVersionRequest {
                path: "/a".into(),
                version: 0,
            }),
        ]));
        round_trip(Request::MultiRead(vec![Request::GetChildren(PathWatch {
            path: "/".into(),
            watch: false,
        })]));
        round_trip(Request::SetWatches2(SetWatches2 {
            relative_zxid: 7,
            data_watches: vec!["/d".into()],
            exist_watches: vec![],
            child_watches: vec!["/c".into()],
            persistent_watches: vec![],
            persistent_recursive_watches: vec!["/r".into()],
        }));
        round_trip(Request::Ping);
        round_trip(Request::WhoAmI);
    }

    #[test]
    fn unknown_opcode_is_reported_as_such() {
        assert_eq!(
            Request::decode(999, &[]),
            Err(RequestError::UnknownOpcode(999))
        );
    }

    #[test]
    fn read_op_inside_multi_is_rejected() {
        let mut w = Writer::new();
        MultiHeader {
            op: 4,
            done: false,
            err: -1,
        }
        .write(&mut w);
        PathWatch {
            path: "/a".into(),
            watch: false,
        }
        .write(&mut w);
        assert_eq!(
            Request::decode(OpCode::Multi.code(), &w.into_inner()),
            Err(RequestError::BadMultiOp(4))
        );
    }

    #[test]
    fn truncated_request_is_malformed() {
        let mut w = Writer::new();
        SetDataRequest {
            path: "/a".into(),
            data: None,
            version: 1,
        }
        .write(&mut w);
        let body = w.into_inner();
        assert!(matches!(
            Request::decode(OpCode::SetData.code(), &body[..body.len() - 1]),
            Err(RequestError::Malformed(_))
        ));
    }

    #[test]
    fn connect_with_and_without_read_only_flag() {
        let req = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 5,
            timeout_ms: 30000,
            session_id: 0,
            passwd: Some(Bytes::from(vec![0u8; 16])),
        };
        let plain = req.encode();
        assert_eq!(decode_connect(&plain).unwrap().read_only, None);
        let mut w = Writer::new();
        encode_connect(&req, true, &mut w);
        let c = decode_connect(&w.into_inner()).unwrap();
        assert_eq!(c.read_only, Some(true));
        assert_eq!(c.req, req);
        assert_eq!(c.ext_features, 0);
    }

    #[test]
    fn connect_extension_block_is_read_and_other_trailing_bytes_are_ignored() {
        use crate::consts::ext;
        let req = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms: 30000,
            session_id: 0,
            passwd: Some(Bytes::from(vec![0u8; 16])),
        };
        let mut w = Writer::new();
        encode_connect_ext(&req, false, ext::FEATURE_REPLAY_GAPS, &mut w);
        let c = decode_connect(&w.into_inner()).unwrap();
        assert_eq!(c.read_only, Some(false));
        assert_eq!(c.ext_features, ext::FEATURE_REPLAY_GAPS);

        // Eight bytes that are not the marker: ignored, no features.
        let mut w = Writer::new();
        encode_connect(&req, false, &mut w);
        w.write_i32(7);
        w.write_i32(ext::FEATURE_REPLAY_GAPS);
        let c = decode_connect(&w.into_inner()).unwrap();
        assert_eq!(c.ext_features, 0);
        assert_eq!(c.req, req);
    }
}
