//! Path validation (ZooKeeper's rules, checked before anything is sent) and chroot handling.

use crate::error::Error;

fn bad(path: &str, why: &str) -> Error {
    Error::BadArguments(format!("invalid path {path:?}: {why}"))
}

/// Checks a node path the way ZooKeeper servers do. `sequential` allows a trailing `/`, since
/// the server appends the sequence number.
pub fn validate_path(path: &str, sequential: bool) -> Result<(), Error> {
    let checked = if sequential && path.len() > 1 && path.ends_with('/') {
        &path[..path.len() - 1]
    } else {
        path
    };
    match corral_proto::path::invalid_reason(checked) {
        None => Ok(()),
        Some(why) => Err(bad(path, why)),
    }
}

/// A chroot prefix (validated, without a trailing slash); `None` means the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chroot(Option<String>);

impl Chroot {
    pub fn new(root: Option<&str>) -> Result<Chroot, Error> {
        match root {
            None | Some("") | Some("/") => Ok(Chroot(None)),
            Some(r) => {
                validate_path(r, false)?;
                Ok(Chroot(Some(r.to_string())))
            }
        }
    }

    pub fn as_str(&self) -> &str {
        self.0.as_deref().unwrap_or("/")
    }

    /// The server-side path of a client path (already validated).
    pub fn apply(&self, path: &str) -> String {
        match &self.0 {
            None => path.to_string(),
            Some(root) if path == "/" => root.clone(),
            Some(root) => format!("{root}{path}"),
        }
    }

    /// The client-side path of a server path; paths outside the chroot are returned unchanged.
    pub fn strip(&self, path: &str) -> String {
        match &self.0 {
            None => path.to_string(),
            Some(root) => match path.strip_prefix(root.as_str()) {
                Some("") => "/".to_string(),
                Some(rest) if rest.starts_with('/') => rest.to_string(),
                _ => path.to_string(),
            },
        }
    }
}

/// The parent of a path ("/" for top-level nodes and for "/" itself).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

pub use corral_proto::path::join;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zookeeper_path_rules() {
        for ok in ["/", "/a", "/a/b", "/a.b/c..d", "/zookeeper"] {
            assert!(validate_path(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "", "a", "/a/", "//", "/a//b", "/a/./b", "/a/..", "/a\u{0}b", "/a\u{1}",
        ] {
            assert!(validate_path(bad, false).is_err(), "{bad:?}");
        }
        assert!(validate_path("/q/", true).is_ok());
        assert!(validate_path("/q//", true).is_err());
    }

    #[test]
    fn chroot_applies_and_strips() {
        let c = Chroot::new(Some("/app")).unwrap();
        assert_eq!(c.apply("/"), "/app");
        assert_eq!(c.apply("/x/y"), "/app/x/y");
        assert_eq!(c.strip("/app"), "/");
        assert_eq!(c.strip("/app/x"), "/x");
        assert_eq!(c.strip("/apple"), "/apple");
        let none = Chroot::new(Some("/")).unwrap();
        assert_eq!(none.apply("/x"), "/x");
        assert!(Chroot::new(Some("app")).is_err());
    }

    #[test]
    fn parents_and_joins() {
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }
}
