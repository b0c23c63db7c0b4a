//! Access control: authentication ids, ACL validation ("fixup") and permission checks, with
//! the `world`, `auth`, `digest`, `ip` and `super` schemes as ZooKeeper has them.

use std::net::IpAddr;

use base64::Engine;
use corral_proto::records::{Acl, Id};
use corral_proto::ZkError;
use sha1::{Digest, Sha1};

/// `user:base64(sha1("user:password"))`, the id a digest ACL names. As in ZooKeeper, the
/// user is the text before the first colon and the hash covers the whole text, so a text
/// without a colon is a user with an empty password (`blah` gives `blah:<hash of "blah">`).
pub fn digest_id(user_password: &str) -> String {
    let user = user_password
        .split_once(':')
        .map_or(user_password, |(user, _)| user);
    let hash = Sha1::digest(user_password.as_bytes());
    format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

pub fn world_anyone() -> Id {
    Id {
        scheme: "world".into(),
        id: "anyone".into(),
    }
}

/// The ACL `world:anyone` with all permissions.
pub fn open_acl() -> Vec<Acl> {
    vec![Acl {
        perms: corral_proto::perms::ALL,
        id: world_anyone(),
    }]
}

/// The ACL `world:anyone` with READ only (used for `/zookeeper/config`).
pub fn read_acl() -> Vec<Acl> {
    vec![Acl {
        perms: corral_proto::perms::READ,
        id: world_anyone(),
    }]
}

/// Handles `addauth scheme auth`: the ids it grants, or AuthFailed.
pub fn authenticate(
    scheme: &str,
    auth: &[u8],
    peer_ip: IpAddr,
    super_digest: Option<&str>,
) -> Result<Vec<Id>, ZkError> {
    match scheme {
        "digest" => {
            // ZooKeeper decodes the bytes leniently (bad UTF-8 becomes U+FFFD) and accepts
            // any text: digest authentication itself never fails.
            let text = String::from_utf8_lossy(auth);
            let digest = digest_id(&text);
            let mut ids = Vec::new();
            if super_digest == Some(digest.as_str()) {
                ids.push(Id {
                    scheme: "super".into(),
                    id: String::new(),
                });
            }
            ids.push(Id {
                scheme: "digest".into(),
                id: digest,
            });
            Ok(ids)
        }
        "ip" => Ok(vec![Id {
            scheme: "ip".into(),
            id: peer_ip.to_string(),
        }]),
        _ => Err(ZkError::AuthFailed),
    }
}

/// Validates ACLs given to create/setACL and expands `auth` ids to the caller's identities.
pub fn fixup(acls: &[Acl], auth: &[Id]) -> Result<Vec<Acl>, ZkError> {
    let mut unique: Vec<&Acl> = Vec::new();
    for a in acls {
        if !unique.contains(&a) {
            unique.push(a);
        }
    }
    if unique.is_empty() {
        return Err(ZkError::InvalidAcl);
    }
    let mut out = Vec::new();
    for a in unique {
        match a.id.scheme.as_str() {
            "world" if a.id.id == "anyone" => out.push(a.clone()),
            "auth" => {
                // Only identities proven by a password count; `ip` is implicit, not "authenticated".
                let mut any = false;
                for id in auth.iter().filter(|id| id.scheme == "digest") {
                    any = true;
                    out.push(Acl {
                        perms: a.perms,
                        id: id.clone(),
                    });
                }
                if !any {
                    return Err(ZkError::InvalidAcl);
                }
            }
            "digest" if a.id.id.split(':').count() == 2 => out.push(a.clone()),
            "ip" if parse_ip_pattern(&a.id.id).is_some() => out.push(a.clone()),
            _ => return Err(ZkError::InvalidAcl),
        }
    }
    Ok(out)
}

/// Whether the identities `auth` hold `perm` on a node with ACL `acl`.
pub fn check(acl: &[Acl], perm: i32, auth: &[Id]) -> Result<(), ZkError> {
    if acl.is_empty() || auth.iter().any(|id| id.scheme == "super") {
        return Ok(());
    }
    for a in acl.iter().filter(|a| a.perms & perm != 0) {
        if a.id.scheme == "world" && a.id.id == "anyone" {
            return Ok(());
        }
        for id in auth.iter().filter(|id| id.scheme == a.id.scheme) {
            let matched = match a.id.scheme.as_str() {
                "digest" => id.id == a.id.id,
                "ip" => ip_matches(&id.id, &a.id.id),
                _ => false,
            };
            if matched {
                return Ok(());
            }
        }
    }
    Err(ZkError::NoAuth)
}

/// Parses `addr` or `addr/bits`.
fn parse_ip_pattern(pattern: &str) -> Option<(IpAddr, u32)> {
    let (addr, bits) = match pattern.split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u32>().ok()?)),
        None => (pattern, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some((ip, bits))
}

fn ip_matches(client: &str, pattern: &str) -> bool {
    let (Ok(client), Some((net, bits))) = (client.parse::<IpAddr>(), parse_ip_pattern(pattern))
    else {
        return false;
    };
    match (client, net) {
        (IpAddr::V4(c), IpAddr::V4(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(c) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(c), IpAddr::V6(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(c) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The `user` part an identity shows in `whoami`.
pub fn user_of(id: &Id) -> String {
    match id.scheme.as_str() {
        "digest" => id.id.split(':').next().unwrap_or_default().to_string(),
        _ => id.id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_proto::perms;

    fn acl(perms: i32, scheme: &str, id: &str) -> Acl {
        Acl {
            perms,
            id: Id {
                scheme: scheme.into(),
                id: id.into(),
            },
        }
    }

    #[test]
    fn digest_matches_zookeeper_generate_digest() {
        // Known value: zkCli's `addauth digest user:password` authenticates as this id.
        assert_eq!(
            digest_id("user:password"),
            "user:tpUq/4Pn5A64fVZyQ0gOJ8ZWqkY="
        );
    }

    #[test]
    fn digest_auth_without_a_colon_is_a_user_with_an_empty_password() {
        // ZooKeeper hashes the whole text and names the user by what precedes the first
        // colon (all of it here): `addauth digest blah` succeeds.
        let ids = authenticate("digest", b"blah", IpAddr::from([127, 0, 0, 1]), None).unwrap();
        assert_eq!(
            ids,
            vec![Id {
                scheme: "digest".into(),
                id: "blah:W/H9kn37hnlJai5s8Ay+UMHIcUU=".into(),
            }]
        );
    }

    #[test]
    fn auth_scheme_expands_to_digest_identities_only() {
        let ip = Id {
            scheme: "ip".into(),
            id: "127.0.0.1".into(),
        };
        assert_eq!(
            fixup(&[acl(31, "auth", "")], std::slice::from_ref(&ip)),
            Err(ZkError::InvalidAcl)
        );
        let d = Id {
            scheme: "digest".into(),
            id: digest_id("u:p"),
        };
        let fixed = fixup(&[acl(31, "auth", "")], &[ip, d.clone()]).unwrap();
        assert_eq!(fixed, vec![Acl { perms: 31, id: d }]);
    }

    #[test]
    fn invalid_acls_are_rejected() {
        assert_eq!(fixup(&[], &[]), Err(ZkError::InvalidAcl));
        assert_eq!(
            fixup(&[acl(31, "world", "x")], &[]),
            Err(ZkError::InvalidAcl)
        );
        assert_eq!(
            fixup(&[acl(31, "digest", "nocolon")], &[]),
            Err(ZkError::InvalidAcl)
        );
        assert_eq!(
            fixup(&[acl(31, "ip", "300.1.1.1")], &[]),
            Err(ZkError::InvalidAcl)
        );
        assert_eq!(
            fixup(&[acl(31, "foo", "bar")], &[]),
            Err(ZkError::InvalidAcl)
        );
        assert!(fixup(&[acl(31, "ip", "10.0.0.0/8")], &[]).is_ok());
    }

    #[test]
    fn permission_checks() {
        let me = vec![Id {
            scheme: "ip".into(),
            id: "10.1.2.3".into(),
        }];
        assert!(check(&[acl(perms::READ, "ip", "10.0.0.0/8")], perms::READ, &me).is_ok());
        assert_eq!(
            check(&[acl(perms::READ, "ip", "10.0.0.0/8")], perms::WRITE, &me),
            Err(ZkError::NoAuth)
        );
        assert_eq!(
            check(&[acl(perms::ALL, "ip", "11.0.0.0/8")], perms::READ, &me),
            Err(ZkError::NoAuth)
        );
        let sup = vec![Id {
            scheme: "super".into(),
            id: String::new(),
        }];
        assert!(check(&[acl(0, "ip", "11.0.0.0/8")], perms::ADMIN, &sup).is_ok());
    }
}
