//! Znode paths: ZooKeeper's validity rules (`PathUtils.validatePath`) and the small path
//! arithmetic server and client share.

/// Why a path is not a valid znode path.
pub fn invalid_reason(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("path length must be > 0");
    }
    if !path.starts_with('/') {
        return Some("path must start with / character");
    }
    if path.len() == 1 {
        return None;
    }
    if path.ends_with('/') {
        return Some("path must not end with / character");
    }
    for component in path[1..].split('/') {
        match component {
            "" => return Some("empty node name specified"),
            "." | ".." => return Some("relative paths not allowed"),
            _ => {}
        }
    }
    // Surrogates (U+D800..U+DFFF) cannot occur in a Rust string; the rest of ZooKeeper's
    // forbidden range starts at the private use area.
    for c in path.chars() {
        let bad = c == '\u{0}'
            || ('\u{1}'..='\u{1f}').contains(&c)
            || ('\u{7f}'..='\u{9f}').contains(&c)
            || ('\u{e000}'..='\u{f8ff}').contains(&c)
            || ('\u{fff0}'..='\u{ffff}').contains(&c);
        if bad {
            return Some("invalid character");
        }
    }
    None
}

pub fn is_valid(path: &str) -> bool {
    invalid_reason(path).is_none()
}

/// Splits `/a/b/c` into (`/a/b`, `c`); the parent of a top-level node is `/`.
/// `None` for paths without a slash.
pub fn split(path: &str) -> Option<(&str, &str)> {
    let i = path.rfind('/')?;
    let parent = if i == 0 { "/" } else { &path[..i] };
    Some((parent, &path[i + 1..]))
}

/// The parent of `path` (`/` for top-level nodes), or `None` for `/` itself.
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    split(path).map(|(p, _)| p)
}

/// `path` and each of its ancestors up to `/`, nearest first.
pub fn self_and_ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(path);
    std::iter::from_fn(move || {
        let cur = next?;
        next = parent(cur);
        Some(cur)
    })
}

/// Joins a parent and a child name.
pub fn join(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_follows_zookeeper_rules() {
        for ok in ["/", "/a", "/a/b", "/a-b.c_d", "/zookeeper/quota", "/日本"] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "", "a", "/a/", "//a", "/a//b", "/a/./b", "/a/..", "/a\u{0}b", "/a\u{1}",
        ] {
            assert!(!is_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn split_and_parents() {
        assert_eq!(split("/a"), Some(("/", "a")));
        assert_eq!(split("/a/b/c"), Some(("/a/b", "c")));
        assert_eq!(parent("/"), None);
        assert_eq!(
            self_and_ancestors("/a/b").collect::<Vec<_>>(),
            vec!["/a/b", "/a", "/"]
        );
        assert_eq!(join("/", "x"), "/x");
        assert_eq!(join("/a", "x"), "/a/x");
    }
}
