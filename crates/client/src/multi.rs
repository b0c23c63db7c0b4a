//! Transactions (multi) and batched reads (multiRead).

use bytes::Bytes;
use corral_proto::records::{CheckVersionRequest, DeleteRequest, PathWatch, SetDataRequest, Stat};
use corral_proto::{OpCode, OpResult, Request, Response, ZkError};

use crate::client::Client;
use crate::error::Error;
use crate::types::CreateOptions;

/// The result of one operation of a committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnResult {
    Create { path: String, stat: Stat },
    Delete,
    SetData(Stat),
    Check,
}

/// A transaction under construction. Argument errors are kept and reported by `commit`, so
/// the builder chains.
#[must_use = "a transaction does nothing until committed"]
pub struct Transaction {
    client: Client,
    ops: Vec<Request>,
    error: Option<Error>,
}

impl Transaction {
    pub(crate) fn new(client: Client) -> Self {
        Transaction {
            client,
            ops: Vec::new(),
            error: None,
        }
    }

    fn push(mut self, op: Result<Request, Error>) -> Self {
        match op {
            Ok(op) => self.ops.push(op),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    pub fn create(self, path: &str, data: &[u8], options: impl Into<CreateOptions>) -> Self {
        let op = self.client.build_create(path, Some(data), &options.into());
        self.push(op)
    }

    pub fn delete(self, path: &str, version: Option<i32>) -> Self {
        let op = self.client.server_path(path, false).map(|path| {
            Request::Delete(DeleteRequest {
                path,
                version: version.unwrap_or(-1),
            })
        });
        self.push(op)
    }

    pub fn set_data(self, path: &str, data: &[u8], version: Option<i32>) -> Self {
        let op = self.client.server_path(path, false).map(|path| {
            Request::SetData(SetDataRequest {
                path,
                data: Some(Bytes::copy_from_slice(data)),
                version: version.unwrap_or(-1),
            })
        });
        self.push(op)
    }

    /// Fails the transaction unless the node's version is `version`.
    pub fn check(self, path: &str, version: i32) -> Self {
        let op = self
            .client
            .server_path(path, false)
            .map(|path| Request::Check(CheckVersionRequest { path, version }));
        self.push(op)
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Applies every operation or none. On failure the error is [`Error::MultiFailed`] naming
    /// the first operation that failed.
    pub async fn commit(self) -> Result<Vec<TxnResult>, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let raw = self.client.request_raw(Request::Multi(self.ops)).await?;
        let results = match Response::decode(OpCode::Multi, &raw.body) {
            Ok(Response::Multi(r)) => r,
            _ if raw.err != 0 => return Err(Error::from_code(raw.err)),
            _ => return Err(Error::Protocol("undecodable multi reply".into())),
        };
        if let Some((index, code)) = first_failure(&results) {
            return Err(Error::MultiFailed { index, code });
        }
        if raw.err != 0 {
            return Err(Error::from_code(raw.err));
        }
        results
            .into_iter()
            .map(|r| match r {
                OpResult::Create(p) => Ok(TxnResult::Create {
                    path: self.client.client_path(&p),
                    stat: Stat::default(),
                }),
                OpResult::Create2(c) => Ok(TxnResult::Create {
                    path: self.client.client_path(&c.path),
                    stat: c.stat,
                }),
                OpResult::Delete => Ok(TxnResult::Delete),
                OpResult::SetData(s) => Ok(TxnResult::SetData(s)),
                OpResult::Check => Ok(TxnResult::Check),
                other => Err(Error::Protocol(format!(
                    "unexpected multi result {other:?}"
                ))),
            })
            .collect()
    }
}

/// The failing operation of an aborted multi: ops before it report 0, ops after it
/// RuntimeInconsistency.
fn first_failure(results: &[OpResult]) -> Option<(usize, ZkError)> {
    let errors = || {
        results.iter().enumerate().filter_map(|(i, r)| match r {
            OpResult::Error(e) if *e != 0 => Some((i, *e)),
            _ => None,
        })
    };
    let pick = errors()
        .find(|(_, e)| *e != ZkError::RuntimeInconsistency.code())
        .or_else(|| errors().next())?;
    Some((
        pick.0,
        ZkError::from_code(pick.1).unwrap_or(ZkError::SystemError),
    ))
}

/// One read of a [`Client::multi_read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOp {
    GetData(String),
    GetChildren(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadResult {
    Data { data: Vec<u8>, stat: Stat },
    Children(Vec<String>),
}

pub(crate) async fn multi_read(
    client: &Client,
    ops: &[ReadOp],
) -> Result<Vec<Result<ReadResult, Error>>, Error> {
    let mut reqs = Vec::with_capacity(ops.len());
    for op in ops {
        reqs.push(match op {
            ReadOp::GetData(p) => Request::GetData(PathWatch {
                path: client.server_path(p, false)?,
                watch: false,
            }),
            ReadOp::GetChildren(p) => Request::GetChildren(PathWatch {
                path: client.server_path(p, false)?,
                watch: false,
            }),
        });
    }
    let results = match client.request(Request::MultiRead(reqs), None).await? {
        Response::Multi(r) => r,
        r => return Err(Error::Protocol(format!("unexpected reply {r:?}"))),
    };
    Ok(results
        .into_iter()
        .map(|r| match r {
            OpResult::GetData(d) => Ok(ReadResult::Data {
                data: d.data.map(|b| b.to_vec()).unwrap_or_default(),
                stat: d.stat,
            }),
            OpResult::GetChildren(c) => Ok(ReadResult::Children(c)),
            OpResult::Error(e) => Err(Error::from_code(e)),
            other => Err(Error::Protocol(format!("unexpected read result {other:?}"))),
        })
        .collect())
}
