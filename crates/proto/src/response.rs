//! Server replies: a [`ReplyHeader`] followed, on success, by the record of the request's
//! opcode. Clients decode the body knowing which request the xid belongs to.

use crate::consts::OpCode;
use crate::jute::{DecodeError, Jute, Reader, Writer};
use crate::records::*;

/// The body of a successful reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// delete, check, setAuth, setWatches, ping, removeWatches, checkWatches, addWatch, close.
    Empty,
    /// create and sync.
    Path(String),
    Create2(Create2Response),
    /// exists, setData, setACL.
    Stat(Stat),
    GetData(GetDataResponse),
    GetChildren(GetChildrenResponse),
    GetChildren2(GetChildren2Response),
    GetAcl(GetAclResponse),
    AllChildrenNumber(i32),
    Ephemerals(Vec<String>),
    WhoAmI(Vec<ClientInfo>),
    Multi(Vec<OpResult>),
    /// A bare error code record (ZooKeeper answers addWatch with `ErrorResponse(0)`).
    ErrorCode(i32),
}

/// One result inside a multi or multiRead reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    Create(String),
    Create2(Create2Response),
    Delete,
    SetData(Stat),
    Check,
    GetData(GetDataResponse),
    GetChildren(Vec<String>),
    Error(i32),
}

impl OpResult {
    fn op(&self) -> i32 {
        match self {
            OpResult::Create(_) => OpCode::Create.code(),
            OpResult::Create2(_) => OpCode::Create2.code(),
            OpResult::Delete => OpCode::Delete.code(),
            OpResult::SetData(_) => OpCode::SetData.code(),
            OpResult::Check => OpCode::Check.code(),
            OpResult::GetData(_) => OpCode::GetData.code(),
            OpResult::GetChildren(_) => OpCode::GetChildren.code(),
            OpResult::Error(_) => OpCode::Error.code(),
        }
    }
}

impl Response {
    pub fn write(&self, w: &mut Writer) {
        match self {
            Response::Empty => {}
            Response::Path(p) => w.write_string(p),
            Response::Create2(r) => r.write(w),
            Response::Stat(s) => s.write(w),
            Response::GetData(r) => r.write(w),
            Response::GetChildren(r) => r.write(w),
            Response::GetChildren2(r) => r.write(w),
            Response::GetAcl(r) => r.write(w),
            Response::AllChildrenNumber(n) => w.write_i32(*n),
            Response::Ephemerals(v) => w.write_vec(v),
            Response::WhoAmI(v) => w.write_vec(v),
            Response::ErrorCode(e) => w.write_i32(*e),
            Response::Multi(results) => {
                for res in results {
                    let err = match res {
                        OpResult::Error(e) => *e,
                        _ => 0,
                    };
                    MultiHeader {
                        op: res.op(),
                        done: false,
                        err,
                    }
                    .write(w);
                    match res {
                        OpResult::Create(p) => w.write_string(p),
                        OpResult::Create2(r) => r.write(w),
                        OpResult::Delete | OpResult::Check => {}
                        OpResult::SetData(s) => s.write(w),
                        OpResult::GetData(r) => r.write(w),
                        OpResult::GetChildren(c) => w.write_vec(c),
                        OpResult::Error(e) => w.write_i32(*e),
                    }
                }
                MultiHeader {
                    op: -1,
                    done: true,
                    err: -1,
                }
                .write(w);
            }
        }
    }

    /// Decodes the body of a successful reply to a request with opcode `op`.
    pub fn decode(op: OpCode, body: &[u8]) -> Result<Response, DecodeError> {
        let mut r = Reader::new(body);
        let resp = match op {
            OpCode::Create | OpCode::Sync => Response::Path(r.read_string()?),
            OpCode::Create2 | OpCode::CreateContainer | OpCode::CreateTtl => {
                Response::Create2(Create2Response::read(&mut r)?)
            }
            OpCode::Exists | OpCode::SetData | OpCode::SetAcl => {
                Response::Stat(Stat::read(&mut r)?)
            }
            // Reconfig answers the new /zookeeper/config, as getData would.
            OpCode::GetData | OpCode::Reconfig => Response::GetData(GetDataResponse::read(&mut r)?),
            OpCode::GetChildren => Response::GetChildren(GetChildrenResponse::read(&mut r)?),
            OpCode::GetChildren2 => Response::GetChildren2(GetChildren2Response::read(&mut r)?),
            OpCode::GetAcl => Response::GetAcl(GetAclResponse::read(&mut r)?),
            OpCode::GetAllChildrenNumber => Response::AllChildrenNumber(r.read_i32()?),
            OpCode::GetEphemerals => Response::Ephemerals(r.read_vec()?),
            OpCode::WhoAmI => Response::WhoAmI(r.read_vec()?),
            OpCode::Multi | OpCode::MultiRead => Response::Multi(read_results(&mut r)?),
            OpCode::AddWatch if r.remaining() >= 4 => Response::ErrorCode(r.read_i32()?),
            _ => Response::Empty,
        };
        Ok(resp)
    }
}

fn read_results(r: &mut Reader<'_>) -> Result<Vec<OpResult>, DecodeError> {
    let mut out = Vec::new();
    loop {
        let h = MultiHeader::read(r)?;
        if h.done {
            return Ok(out);
        }
        let op = OpCode::try_from(h.op)?;
        out.push(match op {
            OpCode::Create => OpResult::Create(r.read_string()?),
            OpCode::Create2 | OpCode::CreateContainer | OpCode::CreateTtl => {
                OpResult::Create2(Create2Response::read(r)?)
            }
            OpCode::Delete => OpResult::Delete,
            OpCode::Check => OpResult::Check,
            OpCode::SetData => OpResult::SetData(Stat::read(r)?),
            OpCode::GetData => OpResult::GetData(GetDataResponse::read(r)?),
            OpCode::GetChildren => OpResult::GetChildren(r.read_vec()?),
            OpCode::Error => OpResult::Error(r.read_i32()?),
            other => {
                return Err(DecodeError::UnknownValue {
                    what: "multi result op",
                    value: other.code(),
                })
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_response_layout_matches_zookeeper() {
        let resp = Response::Multi(vec![OpResult::Delete, OpResult::Error(-101)]);
        let mut w = Writer::new();
        resp.write(&mut w);
        let bytes = w.into_inner();
        // delete: header(2,false,0); error: header(-1,false,-101) + err(-101); end(-1,true,-1)
        let mut expect = Writer::new();
        for (op, done, err) in [(2, false, 0), (-1, false, -101)] {
            MultiHeader { op, done, err }.write(&mut expect);
            if op == -1 {
                expect.write_i32(-101);
            }
        }
        MultiHeader {
            op: -1,
            done: true,
            err: -1,
        }
        .write(&mut expect);
        assert_eq!(bytes, expect.into_inner());
        assert_eq!(Response::decode(OpCode::Multi, &bytes).unwrap(), resp);
    }

    #[test]
    fn get_data_response_round_trips() {
        let resp = Response::GetData(GetDataResponse {
            data: None,
            stat: Stat::default(),
        });
        let mut w = Writer::new();
        resp.write(&mut w);
        assert_eq!(
            Response::decode(OpCode::GetData, &w.into_inner()).unwrap(),
            resp
        );
    }
}
