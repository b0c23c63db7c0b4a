//! The records of `zookeeper.jute` that travel between clients and servers, plus the txn
//! records a server logs. Field order is the wire order.

use crate::record;
use bytes::Bytes;

/// A jute `buffer` that may be null.
pub type Data = Option<Bytes>;

record! {
    /// An ACL identity: `scheme:id`, e.g. `world:anyone`, `digest:user:base64(sha1)`.
    pub struct Id { pub scheme: String, pub id: String }
}

record! {
    pub struct Acl { pub perms: i32, pub id: Id }
}

record! {
    /// Node metadata as clients see it.
    pub struct Stat {
        pub czxid: i64,
        pub mzxid: i64,
        pub ctime: i64,
        pub mtime: i64,
        pub version: i32,
        pub cversion: i32,
        pub aversion: i32,
        pub ephemeral_owner: i64,
        pub data_length: i32,
        pub num_children: i32,
        pub pzxid: i64,
    }
}

record! {
    pub struct ClientInfo { pub auth_scheme: String, pub user: String }
}

record! {
    /// The first packet of a connection (no request header). Clients since 3.3 append a
    /// `readOnly` byte; older ones do not, so it is decoded by hand in [`crate::request`].
    pub struct ConnectRequest {
        pub protocol_version: i32,
        pub last_zxid_seen: i64,
        pub timeout_ms: i32,
        pub session_id: i64,
        pub passwd: Data,
    }
}

record! {
    pub struct ConnectResponse {
        pub protocol_version: i32,
        pub timeout_ms: i32,
        pub session_id: i64,
        pub passwd: Data,
        pub read_only: bool,
    }
}

record! {
    pub struct SetWatches {
        pub relative_zxid: i64,
        pub data_watches: Vec<String>,
        pub exist_watches: Vec<String>,
        pub child_watches: Vec<String>,
    }
}

record! {
    pub struct SetWatches2 {
        pub relative_zxid: i64,
        pub data_watches: Vec<String>,
        pub exist_watches: Vec<String>,
        pub child_watches: Vec<String>,
        pub persistent_watches: Vec<String>,
        pub persistent_recursive_watches: Vec<String>,
    }
}

record! {
    pub struct RequestHeader { pub xid: i32, pub op: i32 }
}

record! {
    pub struct MultiHeader { pub op: i32, pub done: bool, pub err: i32 }
}

record! {
    pub struct AuthPacket { pub auth_type: i32, pub scheme: String, pub auth: Data }
}

record! {
    pub struct ReplyHeader { pub xid: i32, pub zxid: i64, pub err: i32 }
}

record! {
    pub struct PathWatch { pub path: String, pub watch: bool }
}

/// getData, exists, getChildren and getChildren2 requests share one layout.
pub type GetDataRequest = PathWatch;
pub type ExistsRequest = PathWatch;
pub type GetChildrenRequest = PathWatch;
pub type GetChildren2Request = PathWatch;

record! {
    /// Requests that carry only a path: getACL, sync, getAllChildrenNumber, getEphemerals.
    pub struct PathRequest { pub path: String }
}

record! {
    pub struct SetDataRequest { pub path: String, pub data: Data, pub version: i32 }
}

record! {
    pub struct CreateRequest { pub path: String, pub data: Data, pub acl: Vec<Acl>, pub flags: i32 }
}

record! {
    pub struct CreateTtlRequest {
        pub path: String,
        pub data: Data,
        pub acl: Vec<Acl>,
        pub flags: i32,
        pub ttl_ms: i64,
    }
}

record! {
    pub struct DeleteRequest { pub path: String, pub version: i32 }
}

record! {
    pub struct CheckVersionRequest { pub path: String, pub version: i32 }
}

record! {
    pub struct SetAclRequest { pub path: String, pub acl: Vec<Acl>, pub version: i32 }
}

record! {
    pub struct AddWatchRequest { pub path: String, pub mode: i32 }
}

record! {
    /// checkWatches and removeWatches share this layout; `watcher_type` is a [`crate::WatcherType`].
    pub struct WatchesRequest { pub path: String, pub watcher_type: i32 }
}

record! {
    pub struct ReconfigRequest {
        pub joining_servers: String,
        pub leaving_servers: String,
        pub new_members: String,
        pub cur_config_id: i64,
    }
}

record! {
    pub struct WatcherEvent { pub event_type: i32, pub state: i32, pub path: String }
}

record! {
    pub struct ErrorResponse { pub err: i32 }
}

record! {
    pub struct StatResponse { pub stat: Stat }
}

/// setData, setACL and exists replies are a bare Stat.
pub type SetDataResponse = StatResponse;
pub type SetAclResponse = StatResponse;
pub type ExistsResponse = StatResponse;

record! {
    /// create and sync replies carry only a path.
    pub struct PathResponse { pub path: String }
}

record! {
    pub struct Create2Response { pub path: String, pub stat: Stat }
}

record! {
    pub struct GetDataResponse { pub data: Data, pub stat: Stat }
}

record! {
    pub struct GetChildrenResponse { pub children: Vec<String> }
}

record! {
    pub struct GetChildren2Response { pub children: Vec<String>, pub stat: Stat }
}

record! {
    pub struct GetAllChildrenNumberResponse { pub total_number: i32 }
}

record! {
    pub struct GetAclResponse { pub acl: Vec<Acl>, pub stat: Stat }
}

record! {
    pub struct GetEphemeralsResponse { pub ephemerals: Vec<String> }
}

record! {
    pub struct WhoAmIResponse { pub client_info: Vec<ClientInfo> }
}

// ---- transaction records (what a server logs; never sent to clients) ----

record! {
    pub struct TxnHeader {
        pub client_id: i64,
        pub cxid: i32,
        pub zxid: i64,
        pub time_ms: i64,
        pub txn_type: i32,
    }
}

record! {
    pub struct CreateTxn {
        pub path: String,
        pub data: Data,
        pub acl: Vec<Acl>,
        pub ephemeral: bool,
        pub parent_cversion: i32,
    }
}

record! {
    pub struct CreateTtlTxn {
        pub path: String,
        pub data: Data,
        pub acl: Vec<Acl>,
        pub parent_cversion: i32,
        pub ttl_ms: i64,
    }
}

record! {
    pub struct CreateContainerTxn {
        pub path: String,
        pub data: Data,
        pub acl: Vec<Acl>,
        pub parent_cversion: i32,
    }
}

record! {
    pub struct DeleteTxn { pub path: String }
}

record! {
    pub struct SetDataTxn { pub path: String, pub data: Data, pub version: i32 }
}

record! {
    pub struct CheckVersionTxn { pub path: String, pub version: i32 }
}

record! {
    pub struct SetAclTxn { pub path: String, pub acl: Vec<Acl>, pub version: i32 }
}

record! {
    pub struct CreateSessionTxn { pub timeout_ms: i32 }
}

record! {
    pub struct CloseSessionTxn { pub paths_to_delete: Vec<String> }
}

record! {
    pub struct ErrorTxn { pub err: i32 }
}

record! {
    pub struct Txn { pub txn_type: i32, pub data: Data }
}

record! {
    pub struct MultiTxn { pub txns: Vec<Txn> }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jute::Jute;

    fn sample_stat() -> Stat {
        Stat {
            czxid: 1,
            mzxid: 2,
            ctime: 3,
            mtime: 4,
            version: 5,
            cversion: 6,
            aversion: 7,
            ephemeral_owner: 8,
            data_length: 9,
            num_children: 10,
            pzxid: 11,
        }
    }

    #[test]
    fn stat_is_68_bytes_in_field_order() {
        let enc = sample_stat().encode();
        assert_eq!(enc.len(), 68);
        assert_eq!(&enc[0..8], &1i64.to_be_bytes());
        assert_eq!(&enc[60..68], &11i64.to_be_bytes());
        assert_eq!(Stat::decode(&enc).unwrap(), sample_stat());
    }

    #[test]
    fn create_request_round_trips() {
        let req = CreateRequest {
            path: "/a/b".into(),
            data: Some(Bytes::from_static(b"hello")),
            acl: vec![Acl {
                perms: 31,
                id: Id {
                    scheme: "world".into(),
                    id: "anyone".into(),
                },
            }],
            flags: 3,
        };
        assert_eq!(CreateRequest::decode(&req.encode()).unwrap(), req);
    }

    #[test]
    fn truncated_create_request_is_an_error() {
        let enc = CreateRequest {
            path: "/a".into(),
            data: None,
            acl: vec![],
            flags: 0,
        }
        .encode();
        for cut in 0..enc.len() {
            assert!(CreateRequest::decode(&enc[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn multi_txn_round_trips() {
        let t = MultiTxn {
            txns: vec![Txn {
                txn_type: 2,
                data: Some(Bytes::from(DeleteTxn { path: "/x".into() }.encode())),
            }],
        };
        assert_eq!(MultiTxn::decode(&t.encode()).unwrap(), t);
    }
}
