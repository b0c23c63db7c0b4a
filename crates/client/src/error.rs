//! The client's error type: every ZooKeeper error code, plus what only a client can observe.

use corral_proto::ZkError;

/// Why an operation failed.
///
/// Codes a server reports arrive as [`Error::Zk`]; the few codes that describe the client's own
/// situation (lost connection, expired session, rejected auth, bad arguments) have their own
/// variants whether the server or the client noticed them, so a caller matches one place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A ZooKeeper error code reported by the server (NoNode, NodeExists, BadVersion, ...).
    #[error(transparent)]
    Zk(ZkError),
    /// The connection broke before the reply arrived; the request may or may not have been
    /// applied. The session lives on and the client is reconnecting.
    #[error("connection lost")]
    ConnectionLoss,
    /// The session expired: ephemerals are gone and this client is finished.
    #[error("session expired")]
    SessionExpired,
    /// No server could be reached (or did not answer) in time.
    #[error("timed out")]
    Timeout,
    /// A path or argument was rejected before anything was sent.
    #[error("bad arguments: {0}")]
    BadArguments(String),
    /// The server rejected an authentication; this client is finished.
    #[error("authentication failed")]
    AuthFailed,
    /// The client was closed (explicitly or because every handle was dropped).
    #[error("client closed")]
    Closed,
    /// One operation of a transaction failed, so none was applied.
    #[error("transaction operation {index} failed: {code}")]
    MultiFailed { index: usize, code: ZkError },
    /// The server sent something this client cannot decode.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl Error {
    /// The error for a non-zero code in a reply header.
    pub fn from_code(code: i32) -> Error {
        match ZkError::from_code(code) {
            None => Error::Protocol("error code 0 treated as an error".into()),
            Some(ZkError::ConnectionLoss) => Error::ConnectionLoss,
            Some(ZkError::SessionExpired) => Error::SessionExpired,
            Some(ZkError::AuthFailed) => Error::AuthFailed,
            Some(ZkError::BadArguments) => Error::BadArguments("rejected by the server".into()),
            Some(e) => Error::Zk(e),
        }
    }

    /// The ZooKeeper code this error corresponds to, as the Java client would report it.
    pub fn code(&self) -> ZkError {
        match self {
            Error::Zk(e) => *e,
            Error::ConnectionLoss => ZkError::ConnectionLoss,
            Error::SessionExpired => ZkError::SessionExpired,
            Error::Timeout => ZkError::OperationTimeout,
            Error::BadArguments(_) => ZkError::BadArguments,
            Error::AuthFailed => ZkError::AuthFailed,
            Error::Closed => ZkError::SessionExpired,
            Error::MultiFailed { code, .. } => *code,
            Error::Protocol(_) => ZkError::MarshallingError,
        }
    }

    /// Whether retrying the same call later can succeed (the session is still alive).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::ConnectionLoss | Error::Timeout | Error::Zk(ZkError::OperationTimeout)
        )
    }

    /// Whether the session is over, so no later call on this client can succeed.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::SessionExpired | Error::AuthFailed | Error::Closed
        )
    }
}

impl From<ZkError> for Error {
    fn from(e: ZkError) -> Self {
        Error::from_code(e.code())
    }
}

impl From<corral_proto::DecodeError> for Error {
    fn from(e: corral_proto::DecodeError) -> Self {
        Error::Protocol(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_side_codes_get_their_own_variants() {
        assert_eq!(Error::from_code(-4), Error::ConnectionLoss);
        assert_eq!(Error::from_code(-112), Error::SessionExpired);
        assert_eq!(Error::from_code(-101), Error::Zk(ZkError::NoNode));
        assert_eq!(Error::from(ZkError::AuthFailed), Error::AuthFailed);
        assert_eq!(Error::from_code(-110).code(), ZkError::NodeExists);
        assert!(Error::ConnectionLoss.is_retryable());
        assert!(Error::SessionExpired.is_fatal());
    }
}
