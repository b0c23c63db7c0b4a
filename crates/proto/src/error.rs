//! ZooKeeper's error codes (KeeperException.Code), one variant each.

/// An error a ZooKeeper server reports in a reply header, or a client reports locally.
/// `code()` is the wire value; the Display text is ZooKeeper's own message for the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ZkError {
    #[error("SystemError")]
    SystemError,
    #[error("RuntimeInconsistency")]
    RuntimeInconsistency,
    #[error("DataInconsistency")]
    DataInconsistency,
    #[error("ConnectionLoss")]
    ConnectionLoss,
    #[error("MarshallingError")]
    MarshallingError,
    #[error("Unimplemented")]
    Unimplemented,
    #[error("OperationTimeout")]
    OperationTimeout,
    #[error("BadArguments")]
    BadArguments,
    #[error("UnknownSession")]
    UnknownSession,
    #[error("NewConfigNoQuorum")]
    NewConfigNoQuorum,
    #[error("ReconfigInProgress")]
    ReconfigInProgress,
    #[error("APIError")]
    ApiError,
    #[error("NoNode")]
    NoNode,
    #[error("NoAuth")]
    NoAuth,
    #[error("BadVersion")]
    BadVersion,
    #[error("NoChildrenForEphemerals")]
    NoChildrenForEphemerals,
    #[error("NodeExists")]
    NodeExists,
    #[error("Directory not empty")]
    NotEmpty,
    #[error("Session expired")]
    SessionExpired,
    #[error("Invalid callback")]
    InvalidCallback,
    #[error("InvalidACL")]
    InvalidAcl,
    #[error("AuthFailed")]
    AuthFailed,
    #[error("Session moved")]
    SessionMoved,
    #[error("Not a read-only call")]
    NotReadOnly,
    #[error("Ephemeral node on local session")]
    EphemeralOnLocalSession,
    #[error("No such watcher")]
    NoWatcher,
    #[error("Request timeout")]
    RequestTimeout,
    #[error("Reconfig is disabled")]
    ReconfigDisabled,
    #[error("Session closed because client failed to authenticate")]
    SessionClosedRequireSaslAuth,
    #[error("Quota has exceeded")]
    QuotaExceeded,
    #[error("Operation was throttled")]
    ThrottledOp,
    /// A code this crate does not know; kept so nothing is lost in translation.
    #[error("unknown error code {0}")]
    Other(i32),
}

impl ZkError {
    pub fn code(self) -> i32 {
        use ZkError::*;
        match self {
            SystemError => -1,
            RuntimeInconsistency => -2,
            DataInconsistency => -3,
            ConnectionLoss => -4,
            MarshallingError => -5,
            Unimplemented => -6,
            OperationTimeout => -7,
            BadArguments => -8,
            UnknownSession => -12,
            NewConfigNoQuorum => -13,
            ReconfigInProgress => -14,
            ApiError => -100,
            NoNode => -101,
            NoAuth => -102,
            BadVersion => -103,
            NoChildrenForEphemerals => -108,
            NodeExists => -110,
            NotEmpty => -111,
            SessionExpired => -112,
            InvalidCallback => -113,
            InvalidAcl => -114,
            AuthFailed => -115,
            SessionMoved => -118,
            NotReadOnly => -119,
            EphemeralOnLocalSession => -120,
            NoWatcher => -121,
            RequestTimeout => -122,
            ReconfigDisabled => -123,
            SessionClosedRequireSaslAuth => -124,
            QuotaExceeded => -125,
            ThrottledOp => -127,
            Other(c) => c,
        }
    }

    /// The error for a non-zero wire code; `None` for 0 (OK).
    pub fn from_code(code: i32) -> Option<ZkError> {
        use ZkError::*;
        Some(match code {
            0 => return None,
            -1 => SystemError,
            -2 => RuntimeInconsistency,
            -3 => DataInconsistency,
            -4 => ConnectionLoss,
            -5 => MarshallingError,
            -6 => Unimplemented,
            -7 => OperationTimeout,
            -8 => BadArguments,
            -12 => UnknownSession,
            -13 => NewConfigNoQuorum,
            -14 => ReconfigInProgress,
            -100 => ApiError,
            -101 => NoNode,
            -102 => NoAuth,
            -103 => BadVersion,
            -108 => NoChildrenForEphemerals,
            -110 => NodeExists,
            -111 => NotEmpty,
            -112 => SessionExpired,
            -113 => InvalidCallback,
            -114 => InvalidAcl,
            -115 => AuthFailed,
            -118 => SessionMoved,
            -119 => NotReadOnly,
            -120 => EphemeralOnLocalSession,
            -121 => NoWatcher,
            -122 => RequestTimeout,
            -123 => ReconfigDisabled,
            -124 => SessionClosedRequireSaslAuth,
            -125 => QuotaExceeded,
            -127 => ThrottledOp,
            c => Other(c),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in [
            -1, -2, -3, -4, -5, -6, -7, -8, -12, -13, -14, -100, -101, -102, -103,
        ] {
            assert_eq!(ZkError::from_code(code).unwrap().code(), code);
        }
        for code in [
            -108, -110, -111, -112, -113, -114, -115, -118, -119, -120, -121, -122,
        ] {
            assert_eq!(ZkError::from_code(code).unwrap().code(), code);
        }
        for code in [-123, -124, -125, -127, -999] {
            assert_eq!(ZkError::from_code(code).unwrap().code(), code);
        }
        assert_eq!(ZkError::from_code(0), None);
        assert_eq!(ZkError::from_code(-101), Some(ZkError::NoNode));
    }
}
